/*
 * mime.c - raw RFC 5322 / MIME bytes to a kf_email_msg with GMime 3.
 *
 * Headers are decoded here (RFC 2047 with our own charset mapping: gb2312
 * and GBK read as GB18030, Big5 as Big5-HKSCS, unknown charsets falling back
 * to UTF-8 / GB18030 / Windows-1252 so no text is lost).  Bodies: the first
 * text/plain and text/html (HTML sanitized), every other leaf an attachment
 * (inline images keep their Content-ID), message/rfc822 forwards appended as
 * text, DSN reports recognised.  Limits on size, parts and nesting.
 */
#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gmime/gmime.h>

#include "kefu/email.h"
#include "kefu/utf8.h"

static pthread_once_t gmime_once = PTHREAD_ONCE_INIT;
static int gmime_ready;

static void
gmime_setup(void)
{
    g_mime_init();
    gmime_ready = 1;
}

void
kf_email_lib_init(void)
{
    pthread_once(&gmime_once, gmime_setup);
}

void
kf_email_lib_shutdown(void)
{
    if (gmime_ready) {
        g_mime_shutdown();
        gmime_ready = 0;
    }
}

/* ---- charsets ---- */

static const char *
charset_alias(const char *cs)
{
    static const struct {
        const char *from, *to;
    } map[] = {
        {"gb2312", "GB18030"},      {"gbk", "GB18030"},         {"x-gbk", "GB18030"},
        {"cp936", "GB18030"},       {"euc-cn", "GB18030"},      {"gb_2312-80", "GB18030"},
        {"x-euc-cn", "GB18030"},    {"csgb2312", "GB18030"},    {"chinese", "GB18030"},
        {"big5", "BIG5-HKSCS"},     {"x-big5", "BIG5-HKSCS"},   {"cn-big5", "BIG5-HKSCS"},
        {"big5-hkscs", "BIG5-HKSCS"}, {"us-ascii", "WINDOWS-1252"},
        {"iso-8859-1", "WINDOWS-1252"}, {"latin1", "WINDOWS-1252"}, {"ascii", "WINDOWS-1252"},
        {"ks_c_5601-1987", "CP949"}, {"euc-kr", "CP949"},        {"shift_jis", "CP932"},
        {"x-sjis", "CP932"},        {"sjis", "CP932"},          {"utf8", "UTF-8"},
    };
    for (size_t i = 0; i < KF_ARRAY_LEN(map); i++)
        if (strcasecmp(cs, map[i].from) == 0)
            return map[i].to;
    return cs;
}

/* Convert with iconv; invalid bytes become U+FFFD.  -1 when the charset is unknown. */
static int
convert(kf_str *out, const char *charset, const char *data, size_t len)
{
    iconv_t cd = iconv_open("UTF-8", charset);
    if (cd == (iconv_t) -1)
        return -1;
    char buf[4096];
    char *in = (char *) data;
    size_t left = len;
    while (left > 0) {
        char *o = buf;
        size_t ol = sizeof(buf);
        size_t r = iconv(cd, &in, &left, &o, &ol);
        kf_str_append(out, buf, (size_t) (o - buf));
        if (r == (size_t) -1) {
            if (errno == E2BIG)
                continue;
            /* EILSEQ or EINVAL (truncated): skip one byte. */
            kf_str_append(out, "\xEF\xBF\xBD", 3);
            in++;
            left--;
            iconv(cd, NULL, NULL, NULL, NULL);
        }
    }
    char *o = buf;
    size_t ol = sizeof(buf);
    iconv(cd, NULL, NULL, &o, &ol); /* flush shift state (ISO-2022-JP) */
    kf_str_append(out, buf, (size_t) (o - buf));
    iconv_close(cd);
    return 0;
}

/*
 * Drop NULs and control characters other than tab/newline/CR, and replace
 * any sequence that is not valid UTF-8 (an iconv converter may emit code
 * points above U+10FFFF) with U+FFFD: the result is always valid UTF-8.
 */
static char *
finish(kf_pool *pool, kf_str *s, size_t *len_r, int header)
{
    char *r = kf_pool_alloc(pool, s->len * 3 + 1);
    size_t j = 0;
    for (size_t i = 0; i < s->len;) {
        unsigned char c = (unsigned char) s->ptr[i];
        unsigned cp;
        if (c < 0x80) {
            i++;
            if (c == 0 || (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f)
                continue;
            if (header && (c == '\n' || c == '\r' || c == '\t'))
                c = ' ';
            r[j++] = (char) c;
            continue;
        }
        size_t n = kf_utf8_seq((const unsigned char *) s->ptr + i, s->len - i, &cp);
        if (n == 0) {
            memcpy(r + j, "\xEF\xBF\xBD", 3);
            j += 3;
            i++;
            continue;
        }
        memcpy(r + j, s->ptr + i, n);
        j += n;
        i += n;
    }
    r[j] = '\0';
    if (len_r)
        *len_r = j;
    kf_str_free(s);
    return r;
}

static void
to_utf8_str(kf_str *out, const char *charset, const char *data, size_t len)
{
    if (len == 0)
        return;
    if (charset != NULL && *charset) {
        char cs[64];
        snprintf(cs, sizeof(cs), "%s", charset);
        char *star = strchr(cs, '*'); /* RFC 2231 language suffix */
        if (star)
            *star = '\0';
        const char *name = charset_alias(cs);
        if (strcasecmp(name, "utf-8") == 0 && !kf_utf8_valid(data, len)) {
            /* Mislabelled: GB18030 is the usual truth in our mail. */
            charset = NULL;
        } else if (convert(out, name, data, len) == 0) {
            return;
        }
    }
    /* No or unknown charset: UTF-8 when valid, else GB18030, which decodes any byte string. */
    if (kf_utf8_valid(data, len)) {
        kf_str_append(out, data, len);
        return;
    }
    kf_str tmp = KF_STR_INIT;
    if (convert(&tmp, "GB18030", data, len) == 0) {
        int bad = tmp.ptr && strstr(tmp.ptr, "\xEF\xBF\xBD") != NULL;
        if (!bad) {
            kf_str_append(out, tmp.ptr, tmp.len);
            kf_str_free(&tmp);
            return;
        }
    }
    kf_str_free(&tmp);
    if (convert(out, "WINDOWS-1252", data, len) != 0)
        for (size_t i = 0; i < len; i++)
            kf_str_append(out, (unsigned char) data[i] < 0x80 ? data + i : "?", 1);
}

char *
kf_email_to_utf8(kf_pool *pool, const char *charset, const char *data, size_t len, size_t *len_r)
{
    kf_str s = KF_STR_INIT;
    to_utf8_str(&s, charset, data, len);
    return finish(pool, &s, len_r, 0);
}

/* ---- RFC 2047 ---- */

static int
b64val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

static int
hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static void
decode_word(kf_str *bytes, char enc, const char *t, size_t n)
{
    if (enc == 'B' || enc == 'b') {
        unsigned acc = 0;
        int bits = 0;
        for (size_t i = 0; i < n; i++) {
            int v = b64val((unsigned char) t[i]);
            if (v < 0)
                continue; /* padding and garbage are skipped: recover what we can */
            acc = (acc << 6) | (unsigned) v;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                char c = (char) ((acc >> bits) & 0xff);
                kf_str_append(bytes, &c, 1);
            }
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            char c = t[i];
            if (c == '_')
                c = ' ';
            else if (c == '=' && i + 2 < n && hexval((unsigned char) t[i + 1]) >= 0 &&
                     hexval((unsigned char) t[i + 2]) >= 0) {
                c = (char) (hexval((unsigned char) t[i + 1]) * 16 + hexval((unsigned char) t[i + 2]));
                i += 2;
            }
            kf_str_append(bytes, &c, 1);
        }
    }
}

/* Parse "=?cs?e?text?=" at p; returns its length or 0. */
static size_t
encoded_word(const char *p, const char *end, const char **cs, size_t *csl, char *enc,
             const char **txt, size_t *txtl)
{
    if (end - p < 8 || p[0] != '=' || p[1] != '?')
        return 0;
    const char *q = p + 2;
    const char *c = q;
    while (q < end && *q != '?' && *q != ' ' && *q != '\t' && q - c < 64)
        q++;
    if (q >= end || *q != '?' || q == c)
        return 0;
    *cs = c;
    *csl = (size_t) (q - c);
    q++;
    if (q + 2 >= end || (*q != 'B' && *q != 'b' && *q != 'Q' && *q != 'q') || q[1] != '?')
        return 0;
    *enc = *q;
    q += 2;
    const char *t = q;
    while (q + 1 < end && !(q[0] == '?' && q[1] == '='))
        q++;
    if (q + 1 >= end)
        return 0;
    *txt = t;
    *txtl = (size_t) (q - t);
    return (size_t) (q + 2 - p);
}

char *
kf_email_decode_header(kf_pool *pool, const char *raw)
{
    kf_str out = KF_STR_INIT, pending = KF_STR_INIT;
    char pend_cs[64] = "";
    const char *p = raw, *end = raw + strlen(raw);
    const char *plain = p;
    int last_was_word = 0;

    while (p < end) {
        const char *cs, *txt;
        size_t csl, txtl;
        char enc;
        size_t n = encoded_word(p, end, &cs, &csl, &enc, &txt, &txtl);
        if (n == 0) {
            p++;
            continue;
        }
        /* The text before this word: whitespace only between two words is dropped. */
        int ws_only = 1;
        for (const char *s = plain; s < p; s++)
            if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
                ws_only = 0;
        char csbuf[64];
        snprintf(csbuf, sizeof(csbuf), "%.*s", (int) (csl < 63 ? csl : 63), cs);
        if (!(last_was_word && ws_only) || strcasecmp(csbuf, pend_cs) != 0) {
            /* flush pending bytes in their charset */
            if (pending.len)
                to_utf8_str(&out, pend_cs, pending.ptr, pending.len);
            kf_str_reset(&pending);
            if (!(last_was_word && ws_only))
                to_utf8_str(&out, NULL, plain, (size_t) (p - plain));
        }
        snprintf(pend_cs, sizeof(pend_cs), "%s", csbuf);
        decode_word(&pending, enc, txt, txtl);
        p += n;
        plain = p;
        last_was_word = 1;
    }
    if (pending.len)
        to_utf8_str(&out, pend_cs, pending.ptr, pending.len);
    to_utf8_str(&out, NULL, plain, (size_t) (end - plain));
    kf_str_free(&pending);
    char *r = finish(pool, &out, NULL, 1);
    /* collapse runs of spaces and trim */
    char *w = r;
    int sp = 1;
    for (char *s = r; *s; s++) {
        if (*s == ' ') {
            if (!sp)
                *w++ = ' ';
            sp = 1;
        } else {
            *w++ = *s;
            sp = 0;
        }
    }
    while (w > r && w[-1] == ' ')
        w--;
    *w = '\0';
    return r;
}

/* ---- the walk ---- */

struct walk {
    kf_pool *pool;
    const kf_email_limits *lim;
    kf_email_msg *m;
    kf_str text;
    char *html_raw;
    size_t html_len;
    kf_inbound_attachment *att;
    size_t n_att, cap_att;
    unsigned parts;
    int too_many;
    int have_text;
};

static const char *
raw_header(GMimeObject *obj, const char *name)
{
    GMimeHeaderList *hl = g_mime_object_get_header_list(obj);
    GMimeHeader *h = hl ? g_mime_header_list_get_header(hl, name) : NULL;
    return h ? g_mime_header_get_raw_value(h) : NULL;
}

static char *
part_bytes(kf_pool *pool, GMimePart *part, size_t *len_r)
{
    GMimeDataWrapper *w = g_mime_part_get_content(part);
    *len_r = 0;
    if (w == NULL)
        return kf_pool_strdup(pool, "");
    GMimeStream *ms = g_mime_stream_mem_new();
    g_mime_data_wrapper_write_to_stream(w, ms);
    GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(ms));
    char *r = kf_pool_strndup(pool, (const char *) ba->data, ba->len);
    *len_r = ba->len;
    g_object_unref(ms);
    return r;
}

static char *
clean_filename(kf_pool *pool, const char *name, unsigned n)
{
    char *f;
    if (name == NULL || *name == '\0')
        return kf_pool_printf(pool, "attachment-%u", n);
    f = kf_email_decode_header(pool, name);
    for (char *s = f; *s; s++)
        if (*s == '/' || *s == '\\' || *s == '"')
            *s = '_';
    size_t l = strlen(f);
    if (l > 200) { /* cut on a character boundary */
        l = 200;
        while (l > 0 && ((unsigned char) f[l] & 0xC0) == 0x80)
            l--;
        f[l] = '\0';
    }
    return *f ? f : kf_pool_printf(pool, "attachment-%u", n);
}

static void
add_attachment(struct walk *w, const char *filename, const char *ctype, const char *cid,
               const char *data, size_t len)
{
    if (w->n_att == w->cap_att) {
        size_t nc = w->cap_att ? w->cap_att * 2 : 8;
        kf_inbound_attachment *na = kf_pool_alloc(w->pool, nc * sizeof(*na));
        if (w->n_att)
            memcpy(na, w->att, w->n_att * sizeof(*na));
        w->att = na;
        w->cap_att = nc;
    }
    w->att[w->n_att++] = (kf_inbound_attachment){
        .filename = filename, .content_type = ctype, .content_id = cid,
        .data = (const unsigned char *) data, .len = len};
}

static const char *
strip_angle(kf_pool *pool, const char *id)
{
    if (id == NULL)
        return NULL;
    while (*id == ' ' || *id == '<')
        id++;
    size_t n = strcspn(id, "> \t\r\n");
    if (n == 0)
        return NULL;
    if (n > 250)
        n = 250;
    /* ids are compared byte for byte: make them UTF-8 the same way every time */
    size_t len;
    char *r = kf_email_to_utf8(pool, NULL, id, n, &len);
    if (len > 250) {
        len = 250;
        while (len > 0 && ((unsigned char) r[len] & 0xC0) == 0x80)
            len--;
        r[len] = '\0';
    }
    return *r ? r : NULL;
}

/* "Message-ID: <x>" in a block of header text (DSN original headers). */
static const char *
find_message_id(kf_pool *pool, const char *t, size_t len)
{
    for (size_t i = 0; i + 11 < len; i++) {
        if ((i == 0 || t[i - 1] == '\n') && strncasecmp(t + i, "message-id:", 11) == 0) {
            const char *p = t + i + 11;
            while (p < t + len && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
                p++;
            char buf[260];
            size_t n = 0;
            while (p < t + len && *p != '\r' && *p != '\n' && n < sizeof(buf) - 1)
                buf[n++] = *p++;
            buf[n] = '\0';
            return strip_angle(pool, buf);
        }
    }
    return NULL;
}

static const char *
dsn_field(kf_pool *pool, const char *t, size_t len, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i + nl < len; i++) {
        if ((i == 0 || t[i - 1] == '\n') && strncasecmp(t + i, name, nl) == 0) {
            const char *p = t + i + nl;
            while (p < t + len && (*p == ' ' || *p == '\t'))
                p++;
            size_t n = 0;
            while (p + n < t + len && p[n] != '\r' && p[n] != '\n' && n < 500)
                n++;
            return kf_email_to_utf8(pool, NULL, p, n, NULL);
        }
    }
    return NULL;
}

static void walk_object(struct walk *w, GMimeObject *obj, unsigned depth, int in_alt, int in_report);

static void
walk_message(struct walk *w, GMimeMessage *msg, unsigned depth, int in_report)
{
    GMimeObject *body = g_mime_message_get_mime_part(msg);
    if (in_report) {
        const char *id = g_mime_message_get_message_id(msg);
        if (id && w->m->bounce_ref == NULL)
            w->m->bounce_ref = strip_angle(w->pool, id);
        return;
    }
    const char *from = raw_header(GMIME_OBJECT(msg), "From");
    const char *subj = raw_header(GMIME_OBJECT(msg), "Subject");
    const char *date = raw_header(GMIME_OBJECT(msg), "Date");
    kf_str_printf(&w->text, "%s---------- Forwarded message ----------\nFrom: %s\nDate: %s\nSubject: %s\n\n",
                  w->text.len ? "\n\n" : "", from ? kf_email_decode_header(w->pool, from) : "",
                  date ? kf_email_decode_header(w->pool, date) : "",
                  subj ? kf_email_decode_header(w->pool, subj) : "");
    if (body == NULL)
        return;
    /* The forward's own text goes into ours; its html does not replace ours. */
    int had_text = w->have_text;
    w->have_text = 0;
    walk_object(w, body, depth + 1, 0, 0);
    w->have_text = had_text || w->have_text;
}

static void
walk_object(struct walk *w, GMimeObject *obj, unsigned depth, int in_alt, int in_report)
{
    if (++w->parts > w->lim->max_parts || depth > w->lim->max_depth) {
        w->too_many = 1;
        return;
    }
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    if (GMIME_IS_MULTIPART(obj)) {
        GMimeMultipart *mp = GMIME_MULTIPART(obj);
        int alt = ct && g_mime_content_type_is_type(ct, "multipart", "alternative");
        int report = ct && g_mime_content_type_is_type(ct, "multipart", "report");
        if (report) {
            const char *rt = g_mime_content_type_get_parameter(ct, "report-type");
            if (rt && strcasecmp(rt, "delivery-status") == 0)
                w->m->is_bounce = 1;
        }
        int n = g_mime_multipart_get_count(mp);
        for (int i = 0; i < n && !w->too_many; i++)
            walk_object(w, g_mime_multipart_get_part(mp, i), depth + 1, alt,
                        report && i > 0 ? 1 : 0);
        return;
    }
    if (GMIME_IS_MESSAGE_PART(obj)) {
        GMimeMessage *inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
        if (inner)
            walk_message(w, inner, depth + 1, in_report || w->m->is_bounce);
        return;
    }
    if (!GMIME_IS_PART(obj))
        return;
    GMimePart *part = GMIME_PART(obj);
    const char *type = ct ? g_mime_content_type_get_media_type(ct) : "text";
    const char *sub = ct ? g_mime_content_type_get_media_subtype(ct) : "plain";
    const char *charset = ct ? g_mime_content_type_get_parameter(ct, "charset") : NULL;
    GMimeContentDisposition *disp = g_mime_object_get_content_disposition(obj);
    int is_attachment = disp && g_mime_content_disposition_is_attachment(disp);
    const char *fname = g_mime_part_get_filename(part);
    size_t len;
    char *data = part_bytes(w->pool, part, &len);

    if (w->m->is_bounce && (strcasecmp(type, "message") == 0 || strcasecmp(type, "text") == 0) &&
        (strcasecmp(sub, "delivery-status") == 0 || strcasecmp(sub, "rfc822-headers") == 0)) {
        if (strcasecmp(sub, "delivery-status") == 0) {
            const char *diag = dsn_field(w->pool, data, len, "Diagnostic-Code:");
            const char *status = dsn_field(w->pool, data, len, "Status:");
            const char *rcpt = dsn_field(w->pool, data, len, "Final-Recipient:");
            w->m->bounce_reason = kf_pool_printf(w->pool, "%s%s%s%s%s", status ? status : "",
                                                 diag ? " " : "", diag ? diag : "",
                                                 rcpt ? " to " : "", rcpt ? rcpt : "");
        } else if (w->m->bounce_ref == NULL) {
            w->m->bounce_ref = find_message_id(w->pool, data, len);
        }
        return;
    }
    if (!is_attachment && fname == NULL && strcasecmp(type, "text") == 0 &&
        (strcasecmp(sub, "plain") == 0 || strcasecmp(sub, "html") == 0)) {
        if (strcasecmp(sub, "plain") == 0) {
            if (in_alt && w->have_text)
                return;
            if (w->have_text && w->text.len)
                kf_str_puts(&w->text, "\n\n");
            to_utf8_str(&w->text, charset, data, len);
            w->have_text = 1;
        } else if (w->html_raw == NULL) {
            w->html_raw = kf_email_to_utf8(w->pool, charset, data, len, &w->html_len);
        }
        return;
    }
    const char *cid = g_mime_object_get_content_id(obj);
    char *ctype = kf_pool_printf(w->pool, "%s/%s", type, sub);
    int odd = 0;
    for (char *s = ctype; *s; s++) {
        *s = (char) tolower((unsigned char) *s);
        if ((unsigned char) *s <= 0x20 || (unsigned char) *s >= 0x7f || *s == '"' || *s == '\\')
            odd = 1;
    }
    if (odd || strlen(ctype) > 120)
        ctype = kf_pool_strdup(w->pool, "application/octet-stream");
    add_attachment(w, clean_filename(w->pool, fname, (unsigned) w->n_att + 1), ctype,
                   cid ? strip_angle(w->pool, cid) : NULL, data, len);
}

/* ---- headers of the top message ---- */

/* Every mailbox address of a Cc header, lower-cased, at most KF_EMAIL_MAX_CC. */
static void
cc_list(kf_pool *pool, GMimeParserOptions *opts, const char *raw, kf_email_msg *m)
{
    m->n_cc = 0;
    if (raw == NULL)
        return;
    InternetAddressList *l = internet_address_list_parse(opts, raw);
    if (l == NULL)
        return;
    for (int i = 0; i < internet_address_list_length(l) && m->n_cc < KF_EMAIL_MAX_CC; i++) {
        InternetAddress *a = internet_address_list_get_address(l, i);
        if (!INTERNET_ADDRESS_IS_MAILBOX(a))
            continue;
        const char *ad = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a));
        if (ad == NULL || strchr(ad, '@') == NULL || strlen(ad) > 254)
            continue;
        char *lc = kf_email_decode_header(pool, ad);
        for (char *c = lc; *c; c++)
            *c = (char) tolower((unsigned char) *c);
        m->cc[m->n_cc++] = lc;
    }
    g_object_unref(l);
}

static void
address(kf_pool *pool, GMimeParserOptions *opts, const char *raw, const char **addr_r,
        const char **name_r)
{
    *addr_r = NULL;
    if (name_r)
        *name_r = NULL;
    if (raw == NULL)
        return;
    InternetAddressList *l = internet_address_list_parse(opts, raw);
    if (l == NULL)
        return;
    for (int i = 0; i < internet_address_list_length(l); i++) {
        InternetAddress *a = internet_address_list_get_address(l, i);
        if (!INTERNET_ADDRESS_IS_MAILBOX(a))
            continue;
        const char *ad = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a));
        if (ad == NULL || strchr(ad, '@') == NULL || strlen(ad) > 254)
            continue;
        char *lc = kf_email_decode_header(pool, ad);
        for (char *s = lc; *s; s++)
            *s = (char) tolower((unsigned char) *s);
        *addr_r = lc;
        if (name_r) {
            /* The display name from the raw text, decoded with our charset rules. */
            const char *lt = strchr(raw, '<');
            if (lt && lt > raw) {
                char *nm = kf_pool_strndup(pool, raw, (size_t) (lt - raw));
                char *d = kf_email_decode_header(pool, nm);
                size_t n = strlen(d);
                if (n >= 2 && d[0] == '"' && d[n - 1] == '"') {
                    d[n - 1] = '\0';
                    d++;
                }
                char *o = d;
                for (char *s = d; *s; s++)
                    if (!(*s == '\\' && s[1]))
                        *o++ = *s;
                *o = '\0';
                if (*d && strlen(d) <= 200)
                    *name_r = d;
            }
        }
        break;
    }
    g_object_unref(l);
}

/*
 * RFC 3834 and the common vendor headers.  List-Id counts only when
 * configured (list_id_is_bulk): a support address that is itself a list
 * (a Google Group, say) puts List-Id on every customer's mail.
 */
static void
auto_detect(kf_email_msg *m, GMimeObject *o, int list_id_is_bulk)
{
    const char *v;
    if ((v = raw_header(o, "Auto-Submitted")) != NULL) {
        while (*v == ' ' || *v == '\t')
            v++;
        if (strncasecmp(v, "no", 2) != 0 || isalnum((unsigned char) v[2]) || v[2] == '-') {
            m->auto_submitted = 1;
            m->auto_reason = "auto-submitted";
            return;
        }
    }
    if ((v = raw_header(o, "Precedence")) != NULL &&
        (strcasestr(v, "bulk") || strcasestr(v, "junk") || strcasestr(v, "list") ||
         strcasestr(v, "auto_reply"))) {
        m->auto_submitted = 1;
        m->auto_reason = "precedence";
        return;
    }
    static const char *const hdrs[] = {"X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress",
                                       "List-Id", "List-Unsubscribe", "X-Autogenerated",
                                       "X-AutoReply-From", "X-Mail-Autoreply"};
    for (size_t i = 0; i < KF_ARRAY_LEN(hdrs); i++)
        if (raw_header(o, hdrs[i]) != NULL && (list_id_is_bulk || strcmp(hdrs[i], "List-Id") != 0)) {
            m->auto_submitted = 1;
            m->auto_reason = hdrs[i];
            return;
        }
    if (m->from_addr && (strncmp(m->from_addr, "mailer-daemon@", 14) == 0 ||
                         strncmp(m->from_addr, "postmaster@", 11) == 0 ||
                         strncmp(m->from_addr, "noreply@", 8) == 0 ||
                         strncmp(m->from_addr, "no-reply@", 9) == 0)) {
        m->auto_submitted = 1;
        m->auto_reason = "sender";
    }
}

static void
references(kf_pool *pool, GMimeParserOptions *opts, kf_email_msg *m, GMimeObject *o)
{
    const char *irt = raw_header(o, "In-Reply-To");
    const char *refs = raw_header(o, "References");
    if (irt) {
        GMimeReferences *r = g_mime_references_parse(opts, irt);
        if (r && g_mime_references_length(r) > 0)
            m->in_reply_to = strip_angle(pool, g_mime_references_get_message_id(r, 0));
        if (r)
            g_mime_references_free(r);
    }
    if (refs) {
        GMimeReferences *r = g_mime_references_parse(opts, refs);
        if (r) {
            int n = g_mime_references_length(r);
            int from = n > KF_EMAIL_MAX_REFS ? n - KF_EMAIL_MAX_REFS : 0;
            for (int i = from; i < n; i++) {
                const char *id = strip_angle(pool, g_mime_references_get_message_id(r, i));
                if (id)
                    m->refs[m->n_refs++] = id;
            }
            g_mime_references_free(r);
        }
    }
}

/* A cheap bound on the nesting GMime's recursive parser will meet. */
static int
too_nested(const char *raw, size_t len, unsigned max)
{
    unsigned n = 0;
    for (size_t i = 0; i + 10 <= len; i++)
        if ((raw[i] == 'm' || raw[i] == 'M') && (strncasecmp(raw + i, "multipart/", 10) == 0 ||
                                                  strncasecmp(raw + i, "message/", 8) == 0))
            if (++n > max)
                return 1;
    return 0;
}

int
kf_email_parse(kf_pool *pool, const char *raw, size_t len, const kf_email_limits *lim,
               kf_email_msg *m, const char **error_r)
{
    static const kf_email_limits dflt = KF_EMAIL_DEFAULT_LIMITS;
    if (lim == NULL)
        lim = &dflt;
    memset(m, 0, sizeof(*m));
    if (len > lim->max_size) {
        *error_r = "message larger than the size limit";
        return KF_EINVAL;
    }
    if (len == 0) {
        *error_r = "empty message";
        return KF_EINVAL;
    }
    if (too_nested(raw, len, lim->max_parts)) {
        *error_r = "too many MIME parts";
        return KF_EINVAL;
    }
    kf_email_lib_init();

    GMimeStream *stream = g_mime_stream_mem_new_with_buffer(raw, len);
    GMimeParser *parser = g_mime_parser_new_with_stream(stream);
    g_object_unref(stream);
    GMimeParserOptions *opts = g_mime_parser_options_new();
    g_mime_parser_options_set_rfc2047_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
    g_mime_parser_options_set_address_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
    g_mime_parser_options_set_parameter_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
    GMimeMessage *msg = g_mime_parser_construct_message(parser, opts);
    g_object_unref(parser);
    if (msg == NULL) {
        g_mime_parser_options_free(opts);
        *error_r = "not a MIME message";
        return KF_EINVAL;
    }
    GMimeObject *o = GMIME_OBJECT(msg);
    const char *subj = raw_header(o, "Subject");
    m->subject = subj ? kf_email_decode_header(pool, subj) : "";
    if (strlen(m->subject) > 900) {
        char *s = (char *) m->subject;
        size_t l = 900;
        while (l > 0 && ((unsigned char) s[l] & 0xC0) == 0x80)
            l--;
        s[l] = '\0';
    }
    address(pool, opts, raw_header(o, "From"), &m->from_addr, &m->from_name);
    if (m->from_addr == NULL)
        address(pool, opts, raw_header(o, "Sender"), &m->from_addr, &m->from_name);
    if (m->from_addr == NULL)
        address(pool, opts, raw_header(o, "Return-Path"), &m->from_addr, NULL);
    address(pool, opts, raw_header(o, "To"), &m->to, NULL);
    cc_list(pool, opts, raw_header(o, "Cc"), m);
    const char *mid = g_mime_message_get_message_id(msg);
    m->message_id = mid ? strip_angle(pool, mid) : NULL;
    references(pool, opts, m, o);
    auto_detect(m, o, lim->list_id_is_bulk);

    struct walk w = {.pool = pool, .lim = lim, .m = m, .text = KF_STR_INIT};
    GMimeObject *body = g_mime_message_get_mime_part(msg);
    if (body != NULL)
        walk_object(&w, body, 0, 0, 0);
    g_object_unref(msg);
    g_mime_parser_options_free(opts);

    if (w.too_many) {
        kf_str_free(&w.text);
        *error_r = "too many MIME parts or too deeply nested";
        return KF_EINVAL;
    }
    if (m->is_bounce)
        m->auto_submitted = 1, m->auto_reason = m->auto_reason ? m->auto_reason : "bounce";
    if (w.html_raw != NULL) {
        m->html = kf_html_sanitize(pool, w.html_raw, w.html_len, lim->allow_remote_images);
        if (!w.have_text) {
            const char *t = kf_html_to_text(pool, w.html_raw, w.html_len);
            kf_str_puts(&w.text, t);
        }
    }
    /* Normalise line ends to \n. */
    size_t tl;
    char *t = finish(pool, &w.text, &tl, 0);
    size_t j = 0;
    for (size_t i = 0; i < tl; i++)
        if (t[i] != '\r')
            t[j++] = t[i];
        else if (i + 1 >= tl || t[i + 1] != '\n')
            t[j++] = '\n';
    t[j] = '\0';
    m->text = t;
    m->text_len = j;
    m->text_fold = kf_quote_fold(t, j);
    m->attachments = w.att;
    m->n_attachments = w.n_att;
    if (m->from_addr == NULL) {
        *error_r = "no sender address (From)";
        return KF_EINVAL;
    }
    return KF_OK;
}
