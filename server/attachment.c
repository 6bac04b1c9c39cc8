/*
 * attachment.c - files on tickets: type sniffing, filename cleaning and
 * the download Content-Disposition (storage: kf_ticket_add_attachment).
 */
#include <stdio.h>
#include <string.h>

#include "kefu/attachment.h"
#include "kefu/pool.h"
#include "kefu/utf8.h"

/* ---- sniffing ---- */


static int
starts(const unsigned char *d, size_t len, const char *magic, size_t n)
{
    return len >= n && memcmp(d, magic, n) == 0;
}

const char *
kf_attachment_sniff(const unsigned char *d, size_t len)
{
    if (starts(d, len, "\x89PNG\r\n\x1a\n", 8))
        return "image/png";
    if (starts(d, len, "\xff\xd8\xff", 3))
        return "image/jpeg";
    if (starts(d, len, "GIF87a", 6) || starts(d, len, "GIF89a", 6))
        return "image/gif";
    if (starts(d, len, "%PDF-", 5))
        return "application/pdf";
    if (starts(d, len, "PK\x03\x04", 4) || starts(d, len, "PK\x05\x06", 4) ||
        starts(d, len, "PK\x07\x08", 4))
        return "application/zip";
    if (len == 0)
        return "application/octet-stream";
    for (size_t i = 0; i < len;) {
        unsigned cp;
        size_t n = kf_utf8_seq(d + i, len - i, &cp);
        if (n == 0 || (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r' && cp != '\f') ||
            cp == 0x7f)
            return "application/octet-stream";
        i += n;
    }
    return "text/plain; charset=utf-8";
}

/* ---- filenames ---- */

/* Characters never kept in a filename: controls, C1 controls, bidi overrides. */
static int
bad_cp(unsigned cp)
{
    return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) ||
           (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200e ||
           cp == 0x200f || cp == 0xfeff;
}

char *
kf_attachment_filename_clean(kf_pool *pool, const char *name)
{
    const char *base = name ? name : "";
    for (const char *p = base; *p; p++)
        if (*p == '/' || *p == '\\')
            base = p + 1;
    size_t len = strlen(base);
    char *out = kf_pool_alloc(pool, len + 1);
    size_t o = 0, chars = 0;
    size_t *starts_at = kf_pool_alloc(pool, (len + 1) * sizeof(*starts_at)); /* char -> offset */

    /* 1. Valid, harmless characters only. */
    for (size_t i = 0; i < len;) {
        unsigned cp;
        size_t n = kf_utf8_seq((const unsigned char *) base + i, len - i, &cp);
        starts_at[chars++] = o;
        if (n == 0 || bad_cp(cp)) {
            out[o++] = '_';
            i += n ? n : 1;
        } else {
            memcpy(out + o, base + i, n);
            o += n;
            i += n;
        }
    }
    starts_at[chars] = o;
    out[o] = '\0';

    /* 2. No leading or trailing dots and spaces (hidden files, Windows). */
    size_t first = 0, last = chars; /* in characters */
    while (first < last && (out[starts_at[first]] == '.' || out[starts_at[first]] == ' '))
        first++;
    while (last > first && (out[starts_at[last - 1]] == '.' || out[starts_at[last - 1]] == ' '))
        last--;
    if (first == last)
        return kf_pool_strdup(pool, "attachment");

    /* 3. At most KF_ATTACHMENT_NAME_MAX characters, keeping a short extension. */
    size_t n = last - first;
    if (n <= KF_ATTACHMENT_NAME_MAX)
        return kf_pool_strndup(pool, out + starts_at[first], starts_at[last] - starts_at[first]);
    size_t dot = last; /* character index of the last '.', if the extension is short */
    for (size_t k = last; k > first && last - k < 16; k--)
        if (out[starts_at[k - 1]] == '.') {
            dot = k - 1;
            break;
        }
    size_t ext = last - dot; /* characters, 0 when there is none */
    size_t keep = KF_ATTACHMENT_NAME_MAX - ext;
    size_t headb = starts_at[first + keep] - starts_at[first];
    size_t extb = starts_at[last] - starts_at[dot];
    char *r = kf_pool_alloc(pool, headb + extb + 1);
    memcpy(r, out + starts_at[first], headb);
    memcpy(r + headb, out + starts_at[dot], extb);
    r[headb + extb] = '\0';
    return r;
}

char *
kf_attachment_disposition(kf_pool *pool, const char *filename)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(filename);
    char *ascii = kf_pool_alloc(pool, len + 1);
    char *pct = kf_pool_alloc(pool, 3 * len + 1);
    size_t a = 0, q = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) filename[i];
        int attr = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   (c != 0 && strchr("!#$&+-.^_`|~", c) != NULL);
        if (attr) {
            pct[q++] = (char) c;
        } else {
            pct[q++] = '%';
            pct[q++] = hex[c >> 4];
            pct[q++] = hex[c & 15];
        }
        /* the fallback: printable ASCII without quote and backslash; one '_' per character */
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            ascii[a++] = (char) c;
        else if (c < 0x80 || (c & 0xC0) == 0xC0)
            ascii[a++] = '_';
    }
    ascii[a] = '\0';
    pct[q] = '\0';
    return kf_pool_printf(pool, "attachment; filename=\"%s\"; filename*=UTF-8''%s", ascii, pct);
}
