/*
 * pool.c - aborting allocators, region pools with cleanups, growable strings.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kefu/pool.h"

static _Noreturn void
oom(size_t n)
{
    char msg[96];
    int k = snprintf(msg, sizeof(msg), "level=err module=pool msg=\"out of memory\" bytes=%zu\n", n);
    ssize_t w = write(2, msg, (size_t) k);
    (void) w;
    abort();
}

void *
kf_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *
kf_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        oom(n * size);
    return p;
}

void *
kf_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *
kf_xstrdup(const char *s)
{
    return kf_xstrndup(s, strlen(s));
}

char *
kf_xstrndup(const char *s, size_t n)
{
    char *p = kf_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* ---- pools ---- */

struct block {
    struct block *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

struct cleanup {
    struct cleanup *next;
    void (*fn)(void *);
    void *arg;
};

struct kf_pool {
    struct block *head;
    struct cleanup *cleanups;
    size_t block_size, total;
};

kf_pool *
kf_pool_create(size_t block_size)
{
    kf_pool *p = kf_xcalloc(1, sizeof(*p));
    p->block_size = block_size < 256 ? 256 : block_size;
    return p;
}

void
kf_pool_destroy(kf_pool **pool)
{
    kf_pool *p = *pool;
    if (p == NULL)
        return;
    for (struct cleanup *c = p->cleanups; c != NULL; c = c->next)
        c->fn(c->arg);
    for (struct block *b = p->head, *next; b != NULL; b = next) {
        next = b->next;
        free(b);
    }
    free(p);
    *pool = NULL;
}

void *
kf_pool_alloc(kf_pool *p, size_t n)
{
    size_t need = (n + 15) & ~(size_t) 15;
    struct block *b = p->head;

    if (need < n)
        oom(n);
    if (b == NULL || b->size - b->used < need) {
        size_t size = need > p->block_size ? need : p->block_size;
        struct block *nb = kf_xmalloc(sizeof(*nb) + size);
        nb->size = size;
        nb->used = 0;
        if (b != NULL && need > p->block_size) {
            /* A big one-off allocation: keep the current block in front. */
            nb->next = b->next;
            b->next = nb;
        } else {
            nb->next = b;
            p->head = nb;
        }
        b = nb;
    }
    void *r = b->data + b->used;
    b->used += need;
    p->total += n;
    memset(r, 0, n);
    return r;
}

char *
kf_pool_strndup(kf_pool *p, const char *s, size_t len)
{
    char *r = kf_pool_alloc(p, len + 1);
    if (len)
        memcpy(r, s, len);
    r[len] = '\0';
    return r;
}

char *
kf_pool_strdup(kf_pool *p, const char *s)
{
    return s == NULL ? NULL : kf_pool_strndup(p, s, strlen(s));
}

char *
kf_pool_printf(kf_pool *p, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *r = kf_pool_alloc(p, (size_t) n + 1);
    vsnprintf(r, (size_t) n + 1, fmt, ap2);
    va_end(ap2);
    return r;
}

void
kf_pool_cleanup_add(kf_pool *p, void (*fn)(void *), void *arg)
{
    struct cleanup *c = kf_pool_alloc(p, sizeof(*c));
    c->fn = fn;
    c->arg = arg;
    c->next = p->cleanups;
    p->cleanups = c;
}

size_t
kf_pool_used(const kf_pool *p)
{
    return p->total;
}

/* ---- strings ---- */

static void
str_reserve(kf_str *s, size_t extra)
{
    if (s->len + extra + 1 <= s->cap)
        return;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < s->len + extra + 1)
        cap *= 2;
    s->ptr = kf_xrealloc(s->ptr, cap);
    s->cap = cap;
}

void
kf_str_append(kf_str *s, const char *data, size_t len)
{
    str_reserve(s, len);
    if (len)
        memcpy(s->ptr + s->len, data, len);
    s->len += len;
    s->ptr[s->len] = '\0';
}

void
kf_str_puts(kf_str *s, const char *cstr)
{
    kf_str_append(s, cstr, strlen(cstr));
}

void
kf_str_vprintf(kf_str *s, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n <= 0) {
        str_reserve(s, 0);
        return;
    }
    str_reserve(s, (size_t) n);
    vsnprintf(s->ptr + s->len, (size_t) n + 1, fmt, ap);
    s->len += (size_t) n;
}

void
kf_str_printf(kf_str *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kf_str_vprintf(s, fmt, ap);
    va_end(ap);
}

void
kf_str_reset(kf_str *s)
{
    s->len = 0;
    if (s->ptr)
        s->ptr[0] = '\0';
}

void
kf_str_free(kf_str *s)
{
    free(s->ptr);
    s->ptr = NULL;
    s->len = s->cap = 0;
}

int
kf_memeq_ct(const void *a, size_t alen, const void *b, size_t blen)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char d = 0;
    if (alen != blen)
        return 0;
    for (size_t i = 0; i < alen; i++)
        d |= (unsigned char) (x[i] ^ y[i]);
    return d == 0;
}
