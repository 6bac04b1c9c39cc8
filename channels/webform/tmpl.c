/*
 * tmpl.c - a logic-less template renderer (a Mustache subset) for the web
 * form and portal pages, and language negotiation (kefu/webform.h).
 *
 * Every value is HTML-escaped; there is deliberately no triple-brace or
 * {{&name}} form, so no customer text can reach a page unescaped.  Strings
 * a person reads come from the language catalogue ({{t.key}}); templates
 * hold markup only.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "kefu/pool.h"
#include "kefu/webform.h"

#define MAX_STACK 32
#define MAX_NEST 16
#define MAX_PARTIAL 8
#define MAX_NAME 128

void
kf_html_escape(kf_str *out, const char *s, size_t len)
{
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        const char *rep;
        switch (s[i]) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        default:
            continue;
        }
        if (i > start)
            kf_str_append(out, s + start, i - start);
        kf_str_puts(out, rep);
        start = i + 1;
    }
    if (len > start)
        kf_str_append(out, s + start, len - start);
    if (out->ptr == NULL)
        kf_str_append(out, "", 0);
}

struct rctx {
    kf_str *out;
    const json_t *stack[MAX_STACK];
    size_t depth;
    const json_t *cat;
    kf_tmpl_partial_fn *partial_fn;
    void *partial_arg;
    int nest, partials;
    const char **error_r;
};

/* The value of a (dotted) name: the first segment is searched from the top of the stack down. */
static const json_t *
lookup(const struct rctx *r, const char *name, size_t n)
{
    const json_t *v = NULL;
    const char *dot;
    size_t seg;

    if (n == 1 && name[0] == '.')
        return r->depth ? r->stack[r->depth - 1] : NULL;
    dot = memchr(name, '.', n);
    seg = dot ? (size_t)(dot - name) : n;
    for (size_t i = r->depth; i-- > 0;) {
        if (json_is_object(r->stack[i]) && (v = json_object_getn(r->stack[i], name, seg)) != NULL)
            break;
    }
    while (v != NULL && dot != NULL) {
        const char *p = dot + 1;
        n -= (size_t)(p - name);
        name = p;
        dot = memchr(name, '.', n);
        seg = dot ? (size_t)(dot - name) : n;
        v = json_is_object(v) ? json_object_getn(v, name, seg) : NULL;
    }
    return v;
}

static int
truthy(const json_t *v)
{
    if (v == NULL || json_is_null(v) || json_is_false(v))
        return 0;
    if (json_is_string(v))
        return json_string_length(v) > 0;
    if (json_is_array(v))
        return json_array_size(v) > 0;
    if (json_is_integer(v))
        return json_integer_value(v) != 0;
    return 1;
}

static void
emit_value(struct rctx *r, const json_t *v)
{
    char num[48];
    if (json_is_string(v)) {
        kf_html_escape(r->out, json_string_value(v), json_string_length(v));
    } else if (json_is_integer(v)) {
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
        kf_str_puts(r->out, num);
    } else if (json_is_real(v)) {
        snprintf(num, sizeof(num), "%g", json_real_value(v));
        kf_str_puts(r->out, num);
    }
}

/* A catalogue string, escaped, with {name} placeholders filled from the context. */
static void
emit_text(struct rctx *r, const char *key, size_t key_len)
{
    const json_t *s = r->cat ? json_object_getn(r->cat, key, key_len) : NULL;
    const char *p, *end;

    if (!json_is_string(s)) {
        kf_html_escape(r->out, key, key_len); /* visible, so a missing key is noticed */
        return;
    }
    p = json_string_value(s);
    end = p + json_string_length(s);
    while (p < end) {
        const char *open = memchr(p, '{', (size_t)(end - p));
        const char *close = open ? memchr(open, '}', (size_t)(end - open)) : NULL;
        size_t nl = close ? (size_t)(close - open - 1) : 0;
        int ok = close != NULL && nl > 0 && nl <= MAX_NAME;
        for (size_t i = 0; ok && i < nl; i++) {
            char ch = open[1 + i];
            ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '_' || ch == '.';
        }
        if (!ok) {
            size_t upto = open ? (size_t)(open - p) + 1 : (size_t)(end - p);
            kf_html_escape(r->out, p, upto);
            p += upto;
            continue;
        }
        kf_html_escape(r->out, p, (size_t)(open - p));
        const json_t *v = lookup(r, open + 1, nl);
        if (v != NULL)
            emit_value(r, v);
        p = close + 1;
    }
}

static int render(struct rctx *r, const char *t, size_t len);

static int
fail(struct rctx *r, const char *why)
{
    *r->error_r = why;
    return KF_EINVAL;
}

/* One tag at t (just after "{{"): its sigil, trimmed name and where it ends. */
struct tag {
    char sigil; /* 0 for a variable */
    const char *name;
    size_t name_len;
    const char *after; /* first byte after "}}" */
};

static int
parse_tag(const char *t, const char *end, struct tag *tg)
{
    const char *close = NULL;
    for (const char *p = t; p + 1 < end; p++)
        if (p[0] == '}' && p[1] == '}') {
            close = p;
            break;
        }
    if (close == NULL)
        return -1;
    const char *a = t, *b = close;
    tg->sigil = 0;
    if (a < b && strchr("#^/>!", *a) != NULL)
        tg->sigil = *a++;
    while (a < b && *a == ' ')
        a++;
    while (b > a && b[-1] == ' ')
        b--;
    tg->name = a;
    tg->name_len = (size_t)(b - a);
    tg->after = close + 2;
    if (tg->sigil != '!' && (tg->name_len == 0 || tg->name_len > MAX_NAME))
        return -1;
    return 0;
}

/* The matching {{/name}} of a section whose body starts at t; *body_end_r and *after_r. */
static int
section_end(const char *t, const char *end, const struct tag *open, const char **body_end_r,
            const char **after_r)
{
    int depth = 1;
    const char *p = t;
    while (p < end) {
        const char *o = NULL;
        for (const char *q = p; q + 1 < end; q++)
            if (q[0] == '{' && q[1] == '{') {
                o = q;
                break;
            }
        if (o == NULL)
            return -1;
        struct tag tg;
        if (parse_tag(o + 2, end, &tg) != 0)
            return -1;
        if (tg.name_len == open->name_len && memcmp(tg.name, open->name, tg.name_len) == 0) {
            if (tg.sigil == '#' || tg.sigil == '^')
                depth++;
            else if (tg.sigil == '/' && --depth == 0) {
                *body_end_r = o;
                *after_r = tg.after;
                return 0;
            }
        }
        p = tg.after;
    }
    return -1;
}

static int
push_render(struct rctx *r, const json_t *v, const char *t, size_t len)
{
    int rc;
    if (r->depth == MAX_STACK)
        return fail(r, "template context too deep");
    r->stack[r->depth++] = v;
    rc = render(r, t, len);
    r->depth--;
    return rc;
}

static int
section(struct rctx *r, const struct tag *tg, const char *body, size_t body_len)
{
    const json_t *v = lookup(r, tg->name, tg->name_len);
    int rc = KF_OK;

    if (tg->sigil == '^')
        return truthy(v) ? KF_OK : render(r, body, body_len);
    if (!truthy(v))
        return KF_OK;
    if (json_is_array(v)) {
        size_t i;
        const json_t *el;
        json_array_foreach(v, i, el)
        {
            if ((rc = push_render(r, el, body, body_len)) != KF_OK)
                return rc;
        }
        return KF_OK;
    }
    if (json_is_object(v))
        return push_render(r, v, body, body_len);
    return render(r, body, body_len);
}

static int
render(struct rctx *r, const char *t, size_t len)
{
    const char *p = t, *end = t + len;
    int rc = KF_OK;

    if (++r->nest > MAX_NEST) {
        r->nest--;
        return fail(r, "template sections nested too deeply");
    }
    while (p < end) {
        const char *o = NULL;
        for (const char *q = p; q + 1 < end; q++)
            if (q[0] == '{' && q[1] == '{') {
                o = q;
                break;
            }
        if (o == NULL) {
            kf_str_append(r->out, p, (size_t)(end - p));
            break;
        }
        kf_str_append(r->out, p, (size_t)(o - p));
        struct tag tg;
        if (parse_tag(o + 2, end, &tg) != 0) {
            rc = fail(r, "malformed template tag");
            break;
        }
        p = tg.after;
        switch (tg.sigil) {
        case '!':
            break;
        case '/':
            rc = fail(r, "template section closed that was not open");
            break;
        case '#':
        case '^': {
            const char *body_end, *after;
            if (section_end(p, end, &tg, &body_end, &after) != 0) {
                rc = fail(r, "unclosed template section");
                break;
            }
            rc = section(r, &tg, p, (size_t)(body_end - p));
            p = after;
            break;
        }
        case '>': {
            char name[MAX_NAME + 1];
            size_t plen = 0;
            const char *pt;
            memcpy(name, tg.name, tg.name_len);
            name[tg.name_len] = '\0';
            if (r->partial_fn == NULL ||
                (pt = r->partial_fn(r->partial_arg, name, &plen)) == NULL) {
                rc = fail(r, "unknown template partial");
                break;
            }
            if (r->partials >= MAX_PARTIAL) {
                rc = fail(r, "template partials nested too deeply");
                break;
            }
            r->partials++;
            rc = render(r, pt, plen);
            r->partials--;
            break;
        }
        default:
            if (tg.name_len > 2 && tg.name[0] == 't' && tg.name[1] == '.') {
                emit_text(r, tg.name + 2, tg.name_len - 2);
            } else {
                const json_t *v = lookup(r, tg.name, tg.name_len);
                if (v != NULL)
                    emit_value(r, v);
            }
            break;
        }
        if (rc != KF_OK)
            break;
    }
    r->nest--;
    return rc;
}

int
kf_tmpl_render(kf_str *out, const char *tmpl, size_t len, const json_t *ctx,
               const json_t *catalogue, kf_tmpl_partial_fn *partial_fn, void *partial_arg,
               const char **error_r)
{
    struct rctx r = {
        .out = out,
        .cat = catalogue,
        .partial_fn = partial_fn,
        .partial_arg = partial_arg,
        .error_r = error_r,
    };
    if (ctx != NULL)
        r.stack[r.depth++] = ctx;
    kf_str_append(out, "", 0);
    return render(&r, tmpl, len);
}

/* ---- languages ---- */

const char *const kf_webform_langs[] = {"en", "zh-CN", NULL};

const char *
kf_webform_lang_match(const char *tag, size_t len)
{
    if (len >= 2 && strncasecmp(tag, "en", 2) == 0 && (len == 2 || tag[2] == '-' || tag[2] == '_'))
        return "en";
    if (len >= 2 && strncasecmp(tag, "zh", 2) == 0 &&
        (len == 2 || tag[2] == '-' || tag[2] == '_')) {
        /* Traditional-script and Taiwan/Hong Kong tags have no catalogue of their own yet;
         * Simplified Chinese is closer for them than English. */
        return "zh-CN";
    }
    return NULL;
}

/*
 * Accept-Language: "zh-CN,zh;q=0.9,en;q=0.8".  The supported tag with the
 * highest q wins; on a tie the earlier one.  q=0 means "not this one".
 */
const char *
kf_webform_lang_negotiate(const char *h)
{
    const char *best = NULL;
    int best_q = 0;

    if (h == NULL)
        return NULL;
    while (*h) {
        const char *comma = strchr(h, ',');
        const char *item_end = comma ? comma : h + strlen(h);
        const char *semi = memchr(h, ';', (size_t)(item_end - h));
        const char *tag = h, *tag_end = semi ? semi : item_end;
        int q = 1000;

        while (tag < tag_end && (*tag == ' ' || *tag == '\t'))
            tag++;
        while (tag_end > tag && (tag_end[-1] == ' ' || tag_end[-1] == '\t'))
            tag_end--;
        if (semi != NULL) {
            const char *qp = semi + 1;
            while (qp < item_end && (*qp == ' ' || *qp == '\t'))
                qp++;
            if (item_end - qp >= 2 && (qp[0] == 'q' || qp[0] == 'Q') && qp[1] == '=') {
                qp += 2;
                q = 0;
                if (qp < item_end && *qp == '1') {
                    q = 1000;
                } else if (qp < item_end && *qp == '0') {
                    int scale = 100;
                    qp++;
                    if (qp < item_end && *qp == '.')
                        for (qp++; qp < item_end && *qp >= '0' && *qp <= '9' && scale > 0;
                             qp++, scale /= 10)
                            q += (*qp - '0') * scale;
                }
            }
        }
        const char *lang = kf_webform_lang_match(tag, (size_t)(tag_end - tag));
        if (lang != NULL && q > best_q) {
            best = lang;
            best_q = q;
        }
        if (comma == NULL)
            break;
        h = comma + 1;
    }
    return best;
}
