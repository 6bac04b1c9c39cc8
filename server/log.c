/*
 * log.c - one line per event, key=value or JSON, written with one write(2).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kefu/log.h"
#include "kefu/utf8.h"

int kf_log_level = KF_LOG_INFO;
static int log_json;
static int log_fd = 2;

static const char *const level_names[] = {"err", "warn", "info", "debug"};

void
kf_log_set_format(int json)
{
    log_json = json;
}

void
kf_log_set_fd(int fd)
{
    log_fd = fd < 0 ? 2 : fd;
}

int
kf_log_level_parse(const char *s)
{
    for (int i = 0; i < (int) KF_ARRAY_LEN(level_names); i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    if (strcmp(s, "error") == 0)
        return KF_LOG_ERR;
    return -1;
}

static size_t
timestamp(char *buf, size_t n)
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    k += (size_t) snprintf(buf + k, n - k, ".%03ldZ", ts.tv_nsec / 1000000);
    return k;
}

/* JSON-escape src into dst (always terminated). */
static size_t
json_escape(char *dst, size_t n, const char *src, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 7 < n; i++) {
        unsigned char ch = (unsigned char) src[i];
        if (ch == '"' || ch == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char) ch;
        } else if (ch < 0x20) {
            o += (size_t) snprintf(dst + o, n - o, "\\u%04x", ch);
        } else {
            dst[o++] = (char) ch;
        }
    }
    dst[o] = '\0';
    return o;
}

static void emit(int level, const char *module, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void
emit(int level, const char *module, const char *fmt, va_list ap)
{
    char msg[4096], line[8192], ts[40];
    int saved = errno;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    /* A message is text we formatted; newlines would break "one line per event". */
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    timestamp(ts, sizeof(ts));
    size_t n;
    if (log_json) {
        char esc[sizeof(msg) * 2];
        json_escape(esc, sizeof(esc), msg, strlen(msg));
        n = (size_t) snprintf(line, sizeof(line),
                              "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":\"%s\"}\n",
                              ts, level_names[level], module, esc);
    } else {
        n = (size_t) snprintf(line, sizeof(line), "ts=%s level=%s module=%s %s\n", ts,
                              level_names[level], module, msg);
    }
    if (n >= sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(log_fd, line, n);
    (void) w;
    errno = saved;
}

void
kf_log(int level, const char *module, const char *fmt, ...)
{
    va_list ap;
    if (level > kf_log_level)
        return;
    va_start(ap, fmt);
    emit(level, module, fmt, ap);
    va_end(ap);
}

_Noreturn void
kf_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(KF_LOG_ERR, "fatal", fmt, ap);
    va_end(ap);
    exit(2);
}

_Noreturn void
kf_panic(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(KF_LOG_ERR, "panic", fmt, ap);
    va_end(ap);
    abort();
}


char *
kf_printable(char *buf, size_t bufsz, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *) s;
    size_t o = 0, i = 0;

    if (bufsz == 0)
        return buf;
    if (s == NULL)
        len = 0;
    while (i < len) {
        unsigned cp;
        size_t k = kf_utf8_seq(p + i, len - i, &cp);
        if (k == 0 || (k == 1 && (p[i] < 0x20 || p[i] == 0x7F || p[i] == '"' || p[i] == '\\'))) {
            k = 1;
            if (o + 1 >= bufsz)
                break;
            buf[o++] = '?';
        } else {
            if (o + k >= bufsz)
                break;
            memcpy(buf + o, p + i, k);
            o += k;
        }
        i += k;
    }
    if (i < len && bufsz >= 4) {
        /* Truncated: end with "..." on a character boundary. */
        size_t end = o;
        while (o > 0 && o + 3 >= bufsz)
            o--;
        while (o > 0 && o < end && ((unsigned char) buf[o] & 0xC0) == 0x80)
            o--;
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}
