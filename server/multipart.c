/*
 * multipart.c - a strict multipart/form-data parser (see kefu/multipart.h).
 *
 * One pass over the body held in memory: the first delimiter, then for
 * each part its header lines (bounded), then its content up to the next
 * CRLF--boundary (memmem), then either the close delimiter or the next
 * part.  Nothing is copied but names, filenames and content types.
 */
#include <string.h>
#include <strings.h>

#include "kefu/multipart.h"
#include "kefu/utf8.h"
#include "kefu/pool.h"

#define MAX_BOUNDARY 70

/* ---- character classes ---- */

static int
is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int
is_bchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("'()+_,-./:=? ", c) != NULL);
}

/* RFC 5987 attr-char */
static int
is_attr_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$&+-.^_`|~", c) != NULL);
}

static int
hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Valid UTF-8 (shortest forms, no surrogates) without NUL bytes. */
static int
utf8_ok(const unsigned char *p, size_t len)
{
    return kf_utf8_valid((const char *) p, len);
}

/* ---- header values: type *( ";" param ) ---- */

typedef struct param {
    const char *name;  /* lower-cased */
    const char *value; /* unquoted */
    size_t value_len;
} param;

#define MAX_PARAMS 16

typedef struct hvalue {
    const char *type; /* lower-cased */
    param params[MAX_PARAMS];
    size_t n;
} hvalue;

static const char *
skip_ows(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/*
 * Parse "type; a=b; c="d"" (len bytes, no CR/LF inside).  Quoted strings
 * unescape \" and \\ only: other backslashes stay (old browsers sent
 * Windows paths unescaped).  Duplicate parameter names are refused.
 */
static int
parse_hvalue(kf_pool *pool, const char *s, size_t len, hvalue *hv, const char **error_r)
{
    const char *p = s, *end = s + len, *t;

    memset(hv, 0, sizeof(*hv));
    p = skip_ows(p, end);
    for (t = p; p < end && (is_tchar((unsigned char) *p) || *p == '/'); p++)
        ;
    if (p == t) {
        *error_r = "a header value has no type";
        return KF_EINVAL;
    }
    char *type = kf_pool_strndup(pool, t, (size_t) (p - t));
    for (char *q = type; *q; q++)
        if (*q >= 'A' && *q <= 'Z')
            *q = (char) (*q - 'A' + 'a');
    hv->type = type;
    for (;;) {
        p = skip_ows(p, end);
        if (p == end)
            return KF_OK;
        if (*p != ';') {
            *error_r = "a header value has text where ';' belongs";
            return KF_EINVAL;
        }
        p = skip_ows(p + 1, end);
        if (p == end)
            return KF_OK; /* a trailing ';' */
        for (t = p; p < end && is_tchar((unsigned char) *p); p++)
            ;
        if (p == t || p == end || *p != '=') {
            *error_r = "a header parameter is not name=value";
            return KF_EINVAL;
        }
        if (hv->n == MAX_PARAMS) {
            *error_r = "too many header parameters";
            return KF_EINVAL;
        }
        param *pm = &hv->params[hv->n];
        char *name = kf_pool_strndup(pool, t, (size_t) (p - t));
        for (char *q = name; *q; q++)
            if (*q >= 'A' && *q <= 'Z')
                *q = (char) (*q - 'A' + 'a');
        for (size_t i = 0; i < hv->n; i++)
            if (strcmp(hv->params[i].name, name) == 0) {
                *error_r = "a header parameter appears twice";
                return KF_EINVAL;
            }
        pm->name = name;
        p++;
        if (p < end && *p == '"') {
            char *v = kf_pool_alloc(pool, (size_t) (end - p) + 1);
            size_t n = 0;
            p++;
            for (;;) {
                if (p == end) {
                    *error_r = "a quoted header parameter is not closed";
                    return KF_EINVAL;
                }
                unsigned char c = (unsigned char) *p;
                if (c == '"') {
                    p++;
                    break;
                }
                if ((c < 0x20 && c != '\t') || c == 0x7f) {
                    *error_r = "a control character in a quoted header parameter";
                    return KF_EINVAL;
                }
                if (c == '\\' && p + 1 < end && (p[1] == '"' || p[1] == '\\')) {
                    v[n++] = p[1];
                    p += 2;
                    continue;
                }
                v[n++] = (char) c;
                p++;
            }
            v[n] = '\0';
            pm->value = v;
            pm->value_len = n;
        } else {
            for (t = p; p < end && is_tchar((unsigned char) *p); p++)
                ;
            if (p == t) {
                *error_r = "a header parameter has no value";
                return KF_EINVAL;
            }
            pm->value = kf_pool_strndup(pool, t, (size_t) (p - t));
            pm->value_len = (size_t) (p - t);
        }
        hv->n++;
    }
}

static const param *
hv_param(const hvalue *hv, const char *name)
{
    for (size_t i = 0; i < hv->n; i++)
        if (strcmp(hv->params[i].name, name) == 0)
            return &hv->params[i];
    return NULL;
}

int
kf_multipart_boundary(kf_pool *pool, const char *content_type, const char **boundary_r,
                      const char **error_r)
{
    hvalue hv;
    int rc;

    if (content_type == NULL) {
        *error_r = "no Content-Type";
        return KF_EINVAL;
    }
    if ((rc = parse_hvalue(pool, content_type, strlen(content_type), &hv, error_r)) != KF_OK)
        return rc;
    if (strcmp(hv.type, "multipart/form-data") != 0) {
        *error_r = "the Content-Type is not multipart/form-data";
        return KF_EINVAL;
    }
    const param *b = hv_param(&hv, "boundary");
    if (b == NULL || b->value_len == 0 || b->value_len > MAX_BOUNDARY ||
        b->value[b->value_len - 1] == ' ') {
        *error_r = "the multipart boundary is missing or longer than 70 characters";
        return KF_EINVAL;
    }
    for (size_t i = 0; i < b->value_len; i++)
        if (!is_bchar((unsigned char) b->value[i])) {
            *error_r = "the multipart boundary has a character RFC 2046 does not allow";
            return KF_EINVAL;
        }
    *boundary_r = b->value;
    return KF_OK;
}

/* filename*=charset'lang'%xx..., decoded to UTF-8 in the pool; NULL when malformed. */
static const char *
ext_value(kf_pool *pool, const char *v, size_t len)
{
    const char *q1 = memchr(v, '\'', len), *q2;
    int latin1;
    if (q1 == NULL || (q2 = memchr(q1 + 1, '\'', len - (size_t) (q1 + 1 - v))) == NULL)
        return NULL;
    size_t cl = (size_t) (q1 - v);
    if (cl == 5 && strncasecmp(v, "UTF-8", 5) == 0)
        latin1 = 0;
    else if (cl == 10 && strncasecmp(v, "ISO-8859-1", 10) == 0)
        latin1 = 1;
    else
        return NULL;
    const char *p = q2 + 1, *end = v + len;
    unsigned char *out = kf_pool_alloc(pool, 2 * (size_t) (end - p) + 1);
    size_t n = 0;
    while (p < end) {
        unsigned c = (unsigned char) *p;
        if (c == '%') {
            int hi, lo;
            if (end - p < 3 || (hi = hexval((unsigned char) p[1])) < 0 ||
                (lo = hexval((unsigned char) p[2])) < 0)
                return NULL;
            c = (unsigned) (hi * 16 + lo);
            p += 3;
        } else if (is_attr_char((unsigned char) c)) {
            p++;
        } else {
            return NULL;
        }
        if (c == 0)
            return NULL;
        if (latin1 && c >= 0x80) {
            out[n++] = (unsigned char) (0xC0 | (c >> 6));
            out[n++] = (unsigned char) (0x80 | (c & 0x3F));
        } else {
            out[n++] = (unsigned char) c;
        }
    }
    out[n] = '\0';
    if (!latin1 && !utf8_ok(out, n))
        return NULL;
    return (const char *) out;
}

/* One part's header block [p, end): every line "Name: value", no folding. */
static int
parse_part_headers(kf_pool *pool, const char *p, const char *end, kf_mp_part *part,
                   const char **error_r)
{
    int have_cd = 0, have_ct = 0;
    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t) (end - p));
        const char *colon, *v, *vend;
        if (eol == NULL || eol + 1 >= end || eol[1] != '\n') {
            *error_r = "a part header line does not end in CRLF";
            return KF_EINVAL;
        }
        if (*p == ' ' || *p == '\t') {
            *error_r = "folded part header lines are not accepted";
            return KF_EINVAL;
        }
        for (const char *q = p; q < eol; q++)
            if (*q == '\n' || *q == '\0') {
                *error_r = "a bare LF or NUL in the part headers";
                return KF_EINVAL;
            }
        colon = memchr(p, ':', (size_t) (eol - p));
        if (colon == NULL || colon == p) {
            *error_r = "a part header line has no name";
            return KF_EINVAL;
        }
        for (const char *q = p; q < colon; q++)
            if (!is_tchar((unsigned char) *q)) {
                *error_r = "a part header name has a character that is not allowed";
                return KF_EINVAL;
            }
        size_t nl = (size_t) (colon - p);
        v = skip_ows(colon + 1, eol);
        vend = eol;
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;

        if (nl == 19 && strncasecmp(p, "Content-Disposition", 19) == 0) {
            hvalue hv;
            int rc;
            if (have_cd++) {
                *error_r = "two Content-Disposition headers in one part";
                return KF_EINVAL;
            }
            if ((rc = parse_hvalue(pool, v, (size_t) (vend - v), &hv, error_r)) != KF_OK)
                return rc;
            if (strcmp(hv.type, "form-data") != 0) {
                *error_r = "a part's Content-Disposition is not form-data";
                return KF_EINVAL;
            }
            const param *name = hv_param(&hv, "name"), *fn = hv_param(&hv, "filename"),
                        *fnx = hv_param(&hv, "filename*");
            if (name == NULL || !utf8_ok((const unsigned char *) name->value, name->value_len)) {
                *error_r = "a part has no name (or it is not UTF-8)";
                return KF_EINVAL;
            }
            part->name = name->value;
            if (fnx != NULL) {
                if ((part->filename = ext_value(pool, fnx->value, fnx->value_len)) == NULL) {
                    *error_r = "a part's filename* is not charset'lang'%-encoded UTF-8";
                    return KF_EINVAL;
                }
            } else if (fn != NULL) {
                if (!utf8_ok((const unsigned char *) fn->value, fn->value_len)) {
                    *error_r = "a part's filename is not UTF-8";
                    return KF_EINVAL;
                }
                part->filename = fn->value;
            }
        } else if (nl == 12 && strncasecmp(p, "Content-Type", 12) == 0) {
            if (have_ct++) {
                *error_r = "two Content-Type headers in one part";
                return KF_EINVAL;
            }
            part->content_type = kf_pool_strndup(pool, v, (size_t) (vend - v));
        } else if (nl == 25 && strncasecmp(p, "Content-Transfer-Encoding", 25) == 0) {
            size_t vl = (size_t) (vend - v);
            int ok = (vl == 6 && strncasecmp(v, "binary", 6) == 0) ||
                     (vl == 4 && strncasecmp(v, "8bit", 4) == 0) ||
                     (vl == 4 && strncasecmp(v, "7bit", 4) == 0);
            if (!ok) {
                *error_r = "a part uses a Content-Transfer-Encoding other than binary";
                return KF_EINVAL;
            }
        }
        p = eol + 2;
    }
    if (!have_cd) {
        *error_r = "a part has no Content-Disposition";
        return KF_EINVAL;
    }
    return KF_OK;
}

int
kf_multipart_parse(kf_pool *pool, const char *content_type, const char *body, size_t len,
                   const kf_mp_limits *lim, kf_multipart *mp, const char **error_r)
{
    const char *boundary, *end = body + len, *p;
    size_t blen, cap = 4;
    char *delim; /* "\r\n--" boundary */
    int rc;

    memset(mp, 0, sizeof(*mp));
    if ((rc = kf_multipart_boundary(pool, content_type, &boundary, error_r)) != KF_OK)
        return rc;
    if (len > lim->max_total) {
        mp->too_large = 1;
        *error_r = "the multipart body is too large";
        return KF_EINVAL;
    }
    blen = strlen(boundary);
    delim = kf_pool_printf(pool, "\r\n--%s", boundary);
    mp->parts = kf_pool_alloc(pool, cap * sizeof(*mp->parts));

    /* The body starts with the first delimiter (no preamble). */
    if (len < 2 + blen || memcmp(body, delim + 2, 2 + blen) != 0) {
        *error_r = "the body does not start with the multipart boundary";
        return KF_EINVAL;
    }
    p = body + 2 + blen;
    for (;;) {
        /* After a delimiter: "--" closes; else optional padding, then CRLF. */
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') {
            if (mp->n_parts == 0) {
                *error_r = "the multipart body has no parts";
                return KF_EINVAL;
            }
            return KF_OK; /* anything after the close delimiter is epilogue */
        }
        p = skip_ows(p, end);
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') {
            *error_r = end - p < 2 ? "the multipart body ends without its closing boundary"
                                   : "a part contains the boundary, or text follows a boundary";
            return KF_EINVAL;
        }
        p += 2;
        if (mp->n_parts == lim->max_parts) {
            mp->too_large = 1;
            *error_r = "too many parts in the multipart body";
            return KF_EINVAL;
        }

        /* Headers: up to the first empty line, within the header limit. */
        size_t window = (size_t) (end - p);
        if (window > lim->max_header_bytes + 2)
            window = lim->max_header_bytes + 2;
        const char *hend;
        if (window >= 2 && p[0] == '\r' && p[1] == '\n') {
            hend = p; /* no header lines at all */
        } else {
            hend = memmem(p, window, "\r\n\r\n", 4);
            if (hend == NULL) {
                if ((size_t) (end - p) > lim->max_header_bytes) {
                    mp->too_large = 1;
                    *error_r = "a part's headers are too large";
                } else {
                    *error_r = "a part's headers do not end (no empty line)";
                }
                return KF_EINVAL;
            }
            hend += 2; /* keep the last line's CRLF in the block */
        }
        if (mp->n_parts == cap) {
            kf_mp_part *bigger = kf_pool_alloc(pool, 2 * cap * sizeof(*bigger));
            memcpy(bigger, mp->parts, cap * sizeof(*bigger));
            mp->parts = bigger;
            cap *= 2;
        }
        kf_mp_part *part = &mp->parts[mp->n_parts];
        memset(part, 0, sizeof(*part));
        if ((rc = parse_part_headers(pool, p, hend, part, error_r)) != KF_OK)
            return rc;
        p = hend + 2;

        /* Content: up to the next CRLF--boundary. */
        const char *next = memmem(p, (size_t) (end - p), delim, 4 + blen);
        if (next == NULL) {
            *error_r = "the multipart body ends inside a part (no closing boundary)";
            return KF_EINVAL;
        }
        part->data = p;
        part->len = (size_t) (next - p);
        mp->n_parts++;
        p = next + 4 + blen;
    }
}
