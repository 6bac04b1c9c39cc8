/*
 * kefu/utf8.h - UTF-8 validation, the one copy every parser uses.
 *
 * Valid means shortest form, no surrogates, nothing above U+10FFFF.
 * Threads:   any; pure functions.
 */
#ifndef KEFU_UTF8_H
#define KEFU_UTF8_H

#include <stddef.h>

/** Length (1..4) of the valid sequence at p (at most left bytes), or 0; *cp_r gets the code point. */
size_t kf_utf8_seq(const unsigned char *p, size_t left, unsigned *cp_r);
/** 1 when s[0..len) is valid UTF-8 with no NUL byte. */
int kf_utf8_valid(const char *s, size_t len);

#endif /* KEFU_UTF8_H */
