/*
 * imap_parse.c - the message literals in what an IMAP server answered to
 * UID FETCH ... BODY.PEEK[] (the poller keeps the server's lines through
 * libcurl's debug callback).  Pure functions: the text comes from a server,
 * so every length is checked against the bytes that are there, never
 * trusted (a literal of {18446744073709551615} is refused, not added to).
 */
#include <stdlib.h>
#include <string.h>

#include "email_internal.h"

/* The decimal length of "{len}" at p; 0 with *end_r = p when there is none. */
static int
literal_len(const char *p, const char *end, size_t *n_r, const char **end_r)
{
    size_t n = 0;
    const char *q = p;
    *end_r = p;
    if (q >= end || *q < '0' || *q > '9')
        return 0;
    while (q < end && *q >= '0' && *q <= '9') {
        if (n > ((size_t) -1 - 9) / 10)
            return 0; /* absurd: no message is that long */
        n = n * 10 + (size_t) (*q - '0');
        q++;
    }
    *n_r = n;
    *end_r = q;
    return 1;
}

/* A bounded strstr: needle in [p, end). */
static const char *
find(const char *p, const char *end, const char *needle)
{
    size_t nl = strlen(needle);
    for (; p != NULL && (size_t) (end - p) >= nl; p++) {
        p = memchr(p, needle[0], (size_t) (end - p) - nl + 1);
        if (p == NULL)
            return NULL;
        if (memcmp(p, needle, nl) == 0)
            return p;
    }
    return NULL;
}

const char *
kf_imap_literal(const char *t, size_t tlen, size_t *len_r)
{
    const char *end = t + tlen, *e;
    size_t n;
    const char *p = find(t, end, "BODY[] {");
    if (p == NULL || !literal_len(p + 8, end, &n, &e))
        return NULL;
    if ((size_t) (end - e) < 3 || e[0] != '}' || e[1] != '\r' || e[2] != '\n')
        return NULL;
    const char *data = e + 3;
    if (n >= (size_t) (end - data) || data[n] != ')')
        return NULL;
    *len_r = n;
    return data;
}

void
kf_imap_literals(const char *t, size_t tlen, const uint64_t *uids, unsigned k, const char **raws,
                 size_t *lens)
{
    const char *p = t, *end = t + tlen;
    while (p < end) {
        const char *f = find(p, end, " FETCH (");
        if (f == NULL)
            return;
        const char *nl = find(f, end, "\r\n");
        const char *b = find(f, end, "BODY[] {");
        const char *e;
        size_t n;
        if (b == NULL || nl == NULL || b > nl || !literal_len(b + 8, end, &n, &e))
            return;
        if (e != nl - 1 || *e != '}')
            return;
        const char *data = nl + 2;
        if (n >= (size_t) (end - data)) /* the literal and the byte after it */
            return;
        /* UID before BODY[] on the line, or right after the literal */
        uint64_t uid = 0;
        const char *u = find(f, b, "UID ");
        const char *after = data + n;
        if (u != NULL)
            uid = strtoull(u + 4, NULL, 10);
        else if ((size_t) (end - after) > 5 && memcmp(after, " UID ", 5) == 0)
            uid = strtoull(after + 5, NULL, 10);
        if (*after != ')' && *after != ' ')
            return;
        for (unsigned j = 0; j < k; j++)
            if (uids[j] == uid && raws[j] == NULL) {
                raws[j] = data;
                lens[j] = n;
            }
        p = after;
    }
}
