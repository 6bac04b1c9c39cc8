/*
 * kefu/pool.h - memory: aborting allocators, per-request pools, growable strings.
 *
 * Allocation never fails: kf_xmalloc() and friends log one line and abort().
 * A kf_pool owns everything allocated from it and any resources attached
 * with kf_pool_cleanup_add(); kf_pool_destroy() frees them all at once.
 *
 * Threads:   a pool is used by one thread at a time.
 */
#ifndef KEFU_POOL_H
#define KEFU_POOL_H

#include <stdarg.h>
#include <stddef.h>
#include "kefu/types.h"

void *kf_xmalloc(size_t n);
void *kf_xcalloc(size_t n, size_t size);
void *kf_xrealloc(void *p, size_t n);
char *kf_xstrdup(const char *s);
char *kf_xstrndup(const char *s, size_t n);

kf_pool *kf_pool_create(size_t block_size);
void kf_pool_destroy(kf_pool **pool);
/** Zeroed, 16-byte aligned memory owned by the pool. */
void *kf_pool_alloc(kf_pool *pool, size_t n);
char *kf_pool_strdup(kf_pool *pool, const char *s);
/** Copy len bytes and NUL-terminate (the data may contain NUL bytes). */
char *kf_pool_strndup(kf_pool *pool, const char *s, size_t len);
char *kf_pool_printf(kf_pool *pool, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Run fn(arg) when the pool is destroyed (last added runs first). */
void kf_pool_cleanup_add(kf_pool *pool, void (*fn)(void *), void *arg);
/** Bytes handed out so far (tests, metrics). */
size_t kf_pool_used(const kf_pool *pool);

/* A growable byte string; always NUL-terminated when ptr != NULL. */
typedef struct kf_str {
    char *ptr;
    size_t len, cap;
} kf_str;
#define KF_STR_INIT {NULL, 0, 0}

void kf_str_append(kf_str *s, const char *data, size_t len);
void kf_str_puts(kf_str *s, const char *cstr);
void kf_str_printf(kf_str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kf_str_vprintf(kf_str *s, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void kf_str_reset(kf_str *s);
void kf_str_free(kf_str *s);

/** Constant-time comparison of two byte strings (length leaks, content does not). */
int kf_memeq_ct(const void *a, size_t alen, const void *b, size_t blen);

#endif /* KEFU_POOL_H */
