/*
 * html_sanitize.c - allow-list HTML sanitizer over the gumbo HTML5 parser.
 *
 * The document is parsed the way a browser would, then re-serialised from
 * the tree keeping only allowed elements and attributes: no script, style,
 * iframe, object, form controls, SVG or MathML (with their content); no on*
 * handlers or style attributes; URLs only http(s), mailto, tel (links) and
 * cid: or, when configured, http(s) (images).  The walk is iterative so a
 * deeply nested document cannot exhaust the stack.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gumbo.h>

#include "kefu/email.h"

#define MAX_HTML (2u * 1024 * 1024)
#define MAX_TAGS 20000

enum { DROP_ALL, UNWRAP, KEEP };

static int
element_policy(GumboTag tag)
{
    switch (tag) {
    case GUMBO_TAG_A: case GUMBO_TAG_B: case GUMBO_TAG_I: case GUMBO_TAG_U: case GUMBO_TAG_EM:
    case GUMBO_TAG_STRONG: case GUMBO_TAG_P: case GUMBO_TAG_BR: case GUMBO_TAG_DIV:
    case GUMBO_TAG_SPAN: case GUMBO_TAG_UL: case GUMBO_TAG_OL: case GUMBO_TAG_LI:
    case GUMBO_TAG_BLOCKQUOTE: case GUMBO_TAG_PRE: case GUMBO_TAG_CODE: case GUMBO_TAG_H1:
    case GUMBO_TAG_H2: case GUMBO_TAG_H3: case GUMBO_TAG_H4: case GUMBO_TAG_H5: case GUMBO_TAG_H6:
    case GUMBO_TAG_TABLE: case GUMBO_TAG_THEAD: case GUMBO_TAG_TBODY: case GUMBO_TAG_TFOOT:
    case GUMBO_TAG_TR: case GUMBO_TAG_TD: case GUMBO_TAG_TH: case GUMBO_TAG_IMG: case GUMBO_TAG_HR:
    case GUMBO_TAG_FONT: case GUMBO_TAG_SMALL: case GUMBO_TAG_SUB: case GUMBO_TAG_SUP:
    case GUMBO_TAG_S: case GUMBO_TAG_STRIKE: case GUMBO_TAG_DL: case GUMBO_TAG_DT:
    case GUMBO_TAG_DD: case GUMBO_TAG_CENTER: case GUMBO_TAG_CAPTION: case GUMBO_TAG_COL:
    case GUMBO_TAG_COLGROUP: case GUMBO_TAG_ABBR: case GUMBO_TAG_CITE: case GUMBO_TAG_Q:
        return KEEP;
    case GUMBO_TAG_SCRIPT: case GUMBO_TAG_STYLE: case GUMBO_TAG_IFRAME: case GUMBO_TAG_OBJECT:
    case GUMBO_TAG_EMBED: case GUMBO_TAG_APPLET: case GUMBO_TAG_FRAME: case GUMBO_TAG_FRAMESET:
    case GUMBO_TAG_NOSCRIPT: case GUMBO_TAG_TEMPLATE: case GUMBO_TAG_HEAD: case GUMBO_TAG_TITLE:
    case GUMBO_TAG_LINK: case GUMBO_TAG_META: case GUMBO_TAG_BASE: case GUMBO_TAG_SVG:
    case GUMBO_TAG_MATH: case GUMBO_TAG_INPUT: case GUMBO_TAG_BUTTON: case GUMBO_TAG_SELECT:
    case GUMBO_TAG_TEXTAREA: case GUMBO_TAG_OPTION: case GUMBO_TAG_AUDIO: case GUMBO_TAG_VIDEO:
    case GUMBO_TAG_SOURCE: case GUMBO_TAG_TRACK: case GUMBO_TAG_CANVAS: case GUMBO_TAG_PARAM:
    case GUMBO_TAG_XMP: case GUMBO_TAG_PLAINTEXT: case GUMBO_TAG_NOEMBED: case GUMBO_TAG_NOFRAMES:
        return DROP_ALL;
    default:
        return UNWRAP;
    }
}

static int
is_void(GumboTag tag)
{
    return tag == GUMBO_TAG_BR || tag == GUMBO_TAG_HR || tag == GUMBO_TAG_IMG ||
           tag == GUMBO_TAG_COL;
}

static void
escape(kf_str *out, const char *s, size_t n, int attr)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = attr ? "&quot;" : NULL; break;
        case '\'': rep = attr ? "&#39;" : NULL; break;
        case '\0': rep = ""; break;
        default: break;
        }
        if (rep) {
            kf_str_append(out, s + start, i - start);
            kf_str_puts(out, rep);
            start = i + 1;
        }
    }
    kf_str_append(out, s + start, n - start);
}

/* Scheme of a URL as a browser sees it (control characters and spaces ignored). */
static int
url_ok(const char *v, int image, int allow_remote)
{
    char scheme[16];
    size_t n = 0;
    for (const char *p = v; *p && n < sizeof(scheme) - 1; p++) {
        unsigned char c = (unsigned char) *p;
        if (c <= 0x20 || c == 0x7f)
            continue;
        if (c == ':')
            break;
        if (c == '/' || c == '?' || c == '#')
            return image ? 0 : 1; /* relative: harmless for links; images must be cid/remote */
        scheme[n++] = (char) tolower(c);
    }
    scheme[n] = '\0';
    if (strchr(v, ':') == NULL)
        return image ? 0 : 1;
    if (image)
        return strcmp(scheme, "cid") == 0 ||
               (allow_remote && (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0));
    return strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0 ||
           strcmp(scheme, "mailto") == 0 || strcmp(scheme, "tel") == 0;
}

static int
attr_ok(GumboTag tag, const char *name)
{
    static const char *const common[] = {"dir", "lang", "align", "title", "valign", "width",
                                         "height", NULL};
    for (int i = 0; common[i]; i++)
        if (strcasecmp(name, common[i]) == 0)
            return 1;
    if (tag == GUMBO_TAG_A && strcasecmp(name, "href") == 0)
        return 1;
    if (tag == GUMBO_TAG_IMG && (strcasecmp(name, "src") == 0 || strcasecmp(name, "alt") == 0))
        return 1;
    if ((tag == GUMBO_TAG_TD || tag == GUMBO_TAG_TH) &&
        (strcasecmp(name, "colspan") == 0 || strcasecmp(name, "rowspan") == 0))
        return 1;
    if (tag == GUMBO_TAG_TABLE && (strcasecmp(name, "border") == 0 ||
                                   strcasecmp(name, "cellpadding") == 0 ||
                                   strcasecmp(name, "cellspacing") == 0))
        return 1;
    if (tag == GUMBO_TAG_FONT && (strcasecmp(name, "color") == 0 || strcasecmp(name, "size") == 0 ||
                                  strcasecmp(name, "face") == 0))
        return 1;
    return 0;
}

static void
open_tag(kf_str *out, const GumboElement *el, int allow_remote)
{
    kf_str_printf(out, "<%s", gumbo_normalized_tagname(el->tag));
    for (unsigned i = 0; i < el->attributes.length; i++) {
        const GumboAttribute *a = el->attributes.data[i];
        if (!attr_ok(el->tag, a->name))
            continue;
        int is_url = strcasecmp(a->name, "href") == 0 || strcasecmp(a->name, "src") == 0;
        if (is_url && !url_ok(a->value, el->tag == GUMBO_TAG_IMG, allow_remote))
            continue;
        kf_str_printf(out, " %s=\"", a->name);
        escape(out, a->value, strlen(a->value), 1);
        kf_str_puts(out, "\"");
    }
    if (el->tag == GUMBO_TAG_A)
        kf_str_puts(out, " rel=\"noopener noreferrer nofollow\" target=\"_blank\"");
    kf_str_puts(out, ">");
}

struct frame {
    const GumboNode *node;
    unsigned next;
    int kept;
};

/* Iterative walk; text=1 produces plain text instead of HTML. */
static char *
walk(kf_pool *pool, const char *html, size_t len, int allow_remote, int text)
{
    if (len > MAX_HTML)
        len = MAX_HTML;
    /* Bound the tree gumbo builds (and frees recursively): at most MAX_TAGS tags. */
    size_t tags = 0;
    for (size_t i = 0; i < len; i++)
        if (html[i] == '<' && ++tags > MAX_TAGS) {
            len = i;
            break;
        }
    GumboOptions opt = kGumboDefaultOptions;
    opt.max_errors = 1000;
    GumboOutput *g = gumbo_parse_with_options(&opt, html, len);
    kf_str out = KF_STR_INIT;
    if (g == NULL)
        return kf_pool_strdup(pool, "");
    size_t cap = 64, n = 0;
    struct frame *st = kf_xmalloc(cap * sizeof(*st));
    st[n++] = (struct frame){g->root, 0, 0};
    while (n > 0) {
        struct frame *f = &st[n - 1];
        const GumboNode *node = f->node;
        if (node->type == GUMBO_NODE_TEXT || node->type == GUMBO_NODE_WHITESPACE ||
            node->type == GUMBO_NODE_CDATA) {
            const char *t = node->v.text.text;
            if (text) {
                for (const char *p = t; *p; p++)
                    kf_str_append(&out, (*p == '\n' || *p == '\r' || *p == '\t') ? " " : p, 1);
            } else {
                escape(&out, t, strlen(t), 0);
            }
            n--;
            continue;
        }
        if (node->type != GUMBO_NODE_ELEMENT && node->type != GUMBO_NODE_DOCUMENT &&
            node->type != GUMBO_NODE_TEMPLATE) {
            n--; /* comments */
            continue;
        }
        const GumboVector *kids = node->type == GUMBO_NODE_DOCUMENT ? &node->v.document.children
                                                                    : &node->v.element.children;
        if (f->next == 0 && node->type != GUMBO_NODE_DOCUMENT) {
            int pol = node->type == GUMBO_NODE_TEMPLATE ? DROP_ALL : element_policy(node->v.element.tag);
            if (pol == DROP_ALL) {
                n--;
                continue;
            }
            if (pol == KEEP && !text) {
                open_tag(&out, &node->v.element, allow_remote);
                f->kept = 1;
            }
            if (text && node->v.element.tag == GUMBO_TAG_BR)
                kf_str_puts(&out, "\n");
            if (text && node->v.element.tag == GUMBO_TAG_IMG) {
                for (unsigned i = 0; i < node->v.element.attributes.length; i++) {
                    const GumboAttribute *a = node->v.element.attributes.data[i];
                    if (strcasecmp(a->name, "alt") == 0 && a->value[0])
                        kf_str_printf(&out, "[%s]", a->value);
                }
            }
        }
        if (f->next < kids->length) {
            const GumboNode *child = kids->data[f->next++];
            if (n == cap) {
                cap *= 2;
                st = kf_xrealloc(st, cap * sizeof(*st));
            }
            st[n++] = (struct frame){child, 0, 0};
            continue;
        }
        /* all children done: close */
        if (node->type == GUMBO_NODE_ELEMENT) {
            GumboTag tag = node->v.element.tag;
            if (f->kept && !is_void(tag))
                kf_str_printf(&out, "</%s>", gumbo_normalized_tagname(tag));
            if (text && (tag == GUMBO_TAG_P || tag == GUMBO_TAG_DIV || tag == GUMBO_TAG_LI ||
                         tag == GUMBO_TAG_TR || tag == GUMBO_TAG_H1 || tag == GUMBO_TAG_H2 ||
                         tag == GUMBO_TAG_H3 || tag == GUMBO_TAG_H4 || tag == GUMBO_TAG_BLOCKQUOTE ||
                         tag == GUMBO_TAG_TABLE || tag == GUMBO_TAG_PRE || tag == GUMBO_TAG_HR))
                kf_str_puts(&out, "\n");
        }
        n--;
    }
    free(st);
    gumbo_destroy_output(&opt, g);
    char *r = kf_pool_strndup(pool, out.ptr ? out.ptr : "", out.len);
    kf_str_free(&out);
    if (text) {
        /* collapse spaces, at most one blank line, trim */
        char *w = r;
        int nl = 2, sp = 0;
        for (char *p = r; *p; p++) {
            if (*p == ' ') {
                sp = 1;
                continue;
            }
            if (*p == '\n') {
                if (nl < 2)
                    *w++ = '\n';
                nl++;
                sp = 0;
                continue;
            }
            if (sp && nl == 0)
                *w++ = ' ';
            sp = 0;
            nl = 0;
            *w++ = *p;
        }
        while (w > r && w[-1] == '\n')
            w--;
        *w = '\0';
    }
    return r;
}

char *
kf_html_sanitize(kf_pool *pool, const char *html, size_t len, int allow_remote_images)
{
    return walk(pool, html, len, allow_remote_images, 0);
}

char *
kf_html_to_text(kf_pool *pool, const char *html, size_t len)
{
    return walk(pool, html, len, 0, 1);
}
