/*
 * utf8.c - UTF-8 validation (kefu/utf8.h).
 */
#include "kefu/utf8.h"

size_t
kf_utf8_seq(const unsigned char *p, size_t left, unsigned *cp_r)
{
    unsigned char c;
    size_t n;
    unsigned cp;

    if (left == 0)
        return 0;
    c = p[0];
    if (c < 0x80) {
        *cp_r = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        n = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n > left)
        return 0;
    for (size_t k = 1; k < n; k++) {
        if ((p[k] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[k] & 0x3F);
    }
    /* Overlong forms, surrogates and code points past U+10FFFF are invalid. */
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
        return 0;
    *cp_r = cp;
    return n;
}

int
kf_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *) s;
    unsigned cp;
    for (size_t i = 0; i < len;) {
        size_t n = kf_utf8_seq(p + i, len - i, &cp);
        if (n == 0 || cp == 0)
            return 0;
        i += n;
    }
    return 1;
}
