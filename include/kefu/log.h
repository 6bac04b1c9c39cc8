/*
 * kefu/log.h - structured logging: one line per event.
 *
 * Lines look like `ts=2026-11-30T04:15:00.123Z level=info module=http req=9f.. msg="..."`
 * (or one JSON object per line when log_format=json).  Text that came from
 * outside goes through kf_printable() first; secrets are never logged.
 *
 * Threads:   any; a line is written with one write(2) so lines never interleave.
 */
#ifndef KEFU_LOG_H
#define KEFU_LOG_H

#include <stddef.h>
#include "kefu/types.h"

enum { KF_LOG_ERR, KF_LOG_WARN, KF_LOG_INFO, KF_LOG_DEBUG };
extern int kf_log_level;

/** Output format: 0 = key=value (default), 1 = JSON lines. */
void kf_log_set_format(int json);
/** Parse "err|warn|info|debug"; returns the level or -1. */
int kf_log_level_parse(const char *s);
/** Redirect output (tests); fd -1 restores stderr. */
void kf_log_set_fd(int fd);

/*
 * Log one event.  fmt produces space-separated key=value pairs; the caller
 * quotes values that may contain spaces with kf_printable() output.
 */
void kf_log(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define kf_debug(module, ...)                                                                      \
    do {                                                                                           \
        if (kf_log_level >= KF_LOG_DEBUG)                                                          \
            kf_log(KF_LOG_DEBUG, module, __VA_ARGS__);                                             \
    } while (0)

_Noreturn void kf_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void kf_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Copy at most len bytes of untrusted text into buf (size bufsz, always
 * NUL-terminated), replacing control characters, quotes, backslashes and
 * invalid UTF-8 with '?' and truncating with "..." when it does not fit.
 * Returns buf.  Valid multi-byte UTF-8 (e.g. Chinese) is kept.
 */
char *kf_printable(char *buf, size_t bufsz, const char *s, size_t len);

#endif /* KEFU_LOG_H */
