/*
 * lmtp.c - the LMTP listener (RFC 2033) so an MTA delivers straight in.
 *
 * One thread with its own event_base and its own kf_db; never an HTTP I/O
 * loop.  LHLO announces PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES and SIZE;
 * MAIL checks SIZE= (552); RCPT maps the address to a mailbox (550 unknown,
 * 451 when the database is unreachable); after DATA every recipient gets its
 * own reply once its transaction committed (250), or 451 so the MTA keeps
 * the message and retries.  Commands are answered strictly in order, so a
 * pipelining client just works.  Idle sessions are cut after lmtp_timeout;
 * at most lmtp_max_sessions at once (421 to the rest).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/email.h"
#include "kefu/log.h"
#include "kefu/pool.h"
#include "email_internal.h"

#define MAX_RCPT 100
#define MAX_LINE 4096

enum state { S_GREETED, S_LHLO, S_MAIL, S_DATA, S_CLOSING };

struct session {
    struct bufferevent *bev;
    enum state st;
    kf_pool *pool;            /* per transaction */
    char *rcpt_mailbox[MAX_RCPT];
    unsigned n_rcpt;
    kf_str data;
    int oversize;
    struct session *next, *prev;
};

static struct {
    const kf_config *cfg;
    struct event_base *base;
    struct evconnlistener *lis;
    pthread_t thread;
    int running;
    kf_db *db;
    unsigned sessions;
    struct session *all;
    char addr[96];
} L;

static void
reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
reply(struct session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    struct evbuffer *out = bufferevent_get_output(s->bev);
    evbuffer_add_vprintf(out, fmt, ap);
    evbuffer_add(out, "\r\n", 2);
    va_end(ap);
}

static void
reset_tx(struct session *s)
{
    if (s->pool)
        kf_pool_destroy(&s->pool);
    s->pool = kf_pool_create(1024);
    s->n_rcpt = 0;
    kf_str_free(&s->data);
    s->oversize = 0;
}

static void
session_free(struct session *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        L.all = s->next;
    if (s->next)
        s->next->prev = s->prev;
    bufferevent_free(s->bev);
    if (s->pool)
        kf_pool_destroy(&s->pool);
    kf_str_free(&s->data);
    free(s);
    L.sessions--;
}

/* Extract <addr> after "FROM:" / "TO:"; NULL when malformed. */
static char *
path_arg(kf_pool *pool, const char *p, const char **rest_r)
{
    while (*p == ' ')
        p++;
    if (*p != '<')
        return NULL;
    const char *e = strchr(p, '>');
    if (e == NULL || e - p > 300)
        return NULL;
    *rest_r = e + 1;
    char *a = kf_pool_strndup(pool, p + 1, (size_t) (e - p - 1));
    for (char *c = a; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char) (*c - 'A' + 'a');
    return a;
}

static void
finish_data(struct session *s)
{
    if (s->oversize) {
        for (unsigned i = 0; i < s->n_rcpt; i++)
            reply(s, "552 5.3.4 Message too big (limit %u bytes)", L.cfg->lmtp_max_size);
        reset_tx(s);
        s->st = S_LHLO;
        return;
    }
    for (unsigned i = 0; i < s->n_rcpt; i++) {
        kf_email_result r;
        const char *err = NULL;
        int rc = kf_email_ingest_raw(L.db, s->rcpt_mailbox[i], s->data.ptr ? s->data.ptr : "",
                                     s->data.len, "lmtp", &r, &err);
        if (rc == KF_OK)
            reply(s, "250 2.0.0 <%s> %s ticket %" PRIu64, s->rcpt_mailbox[i],
                  r.quarantined ? "quarantined" : r.duplicate ? "duplicate" : "delivered",
                  r.ticket_id);
        else if (rc == KF_ENOTFOUND)
            reply(s, "550 5.1.1 <%s> mailbox gone", s->rcpt_mailbox[i]);
        else
            reply(s, "451 4.3.0 <%s> temporary failure, try again later", s->rcpt_mailbox[i]);
    }
    reset_tx(s);
    s->st = S_LHLO;
}

static int
command(struct session *s, char *line, size_t n)
{
    if (n > 1000) {
        reply(s, "500 5.5.2 Line too long");
        return 0;
    }
    if (strncasecmp(line, "LHLO", 4) == 0 && (line[4] == ' ' || line[4] == '\0')) {
        reset_tx(s);
        s->st = S_LHLO;
        reply(s, "250-kefu\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
                 "250 SIZE %u", L.cfg->lmtp_max_size);
    } else if (strncasecmp(line, "HELO", 4) == 0 || strncasecmp(line, "EHLO", 4) == 0) {
        reply(s, "500 5.5.1 This is LMTP: use LHLO");
    } else if (strncasecmp(line, "MAIL FROM:", 10) == 0) {
        const char *rest = "";
        if (s->st != S_LHLO) {
            reply(s, s->st == S_GREETED ? "503 5.5.1 LHLO first" : "503 5.5.1 Nested MAIL");
            return 0;
        }
        reset_tx(s);
        if (path_arg(s->pool, line + 10, &rest) == NULL) {
            reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
            return 0;
        }
        const char *sz = strcasestr(rest, "SIZE=");
        if (sz && strtoull(sz + 5, NULL, 10) > L.cfg->lmtp_max_size) {
            reply(s, "552 5.3.4 Message too big (limit %u bytes)", L.cfg->lmtp_max_size);
            return 0;
        }
        s->st = S_MAIL;
        reply(s, "250 2.1.0 OK");
    } else if (strncasecmp(line, "RCPT TO:", 8) == 0) {
        const char *rest = "", *err = NULL;
        char *name = NULL;
        if (s->st != S_MAIL) {
            reply(s, "503 5.5.1 MAIL first");
            return 0;
        }
        char *addr = path_arg(s->pool, line + 8, &rest);
        if (addr == NULL) {
            reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
            return 0;
        }
        if (s->n_rcpt >= MAX_RCPT) {
            reply(s, "452 4.5.3 Too many recipients");
            return 0;
        }
        int rc = kf_email_mailbox_for(L.db, s->pool, addr, &name, &err);
        if (rc == KF_ENOTFOUND)
            reply(s, "550 5.1.1 <%s> No such mailbox", addr);
        else if (rc != KF_OK)
            reply(s, "451 4.3.0 <%s> Temporary failure, try again later", addr);
        else {
            s->rcpt_mailbox[s->n_rcpt++] = name;
            reply(s, "250 2.1.5 <%s> OK", addr);
        }
    } else if (strcasecmp(line, "DATA") == 0) {
        if (s->st != S_MAIL || s->n_rcpt == 0) {
            reply(s, "503 5.5.1 No valid recipients");
            return 0;
        }
        s->st = S_DATA;
        reply(s, "354 End data with <CR><LF>.<CR><LF>");
    } else if (strcasecmp(line, "RSET") == 0) {
        reset_tx(s);
        if (s->st != S_GREETED)
            s->st = S_LHLO;
        reply(s, "250 2.0.0 OK");
    } else if (strncasecmp(line, "NOOP", 4) == 0) {
        reply(s, "250 2.0.0 OK");
    } else if (strncasecmp(line, "VRFY", 4) == 0) {
        reply(s, "252 2.5.2 Cannot VRFY");
    } else if (strcasecmp(line, "QUIT") == 0) {
        reply(s, "221 2.0.0 Bye");
        s->st = S_CLOSING;
        return 1;
    } else {
        reply(s, "500 5.5.2 Unknown command");
    }
    return 0;
}

static void
on_read(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        if (s->st == S_CLOSING)
            return;
        size_t n;
        char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
        if (line == NULL) {
            if (evbuffer_get_length(in) > (s->st == S_DATA ? 1u << 20 : MAX_LINE)) {
                if (s->st == S_DATA) {
                    /* an endless line inside DATA: count it, keep reading */
                    size_t len = evbuffer_get_length(in);
                    if (!s->oversize && s->data.len + len <= L.cfg->lmtp_max_size) {
                        char *tmp = kf_xmalloc(len);
                        evbuffer_remove(in, tmp, len);
                        kf_str_append(&s->data, tmp, len);
                        free(tmp);
                    } else {
                        s->oversize = 1;
                        evbuffer_drain(in, len);
                    }
                    continue;
                }
                reply(s, "500 5.5.2 Line too long");
                s->st = S_CLOSING;
            }
            return;
        }
        if (s->st == S_DATA) {
            if (n == 1 && line[0] == '.') {
                free(line);
                finish_data(s);
                continue;
            }
            const char *l = line;
            size_t ln = n;
            if (ln > 0 && l[0] == '.') { /* dot-unstuffing */
                l++;
                ln--;
            }
            if (!s->oversize && s->data.len + ln + 2 <= L.cfg->lmtp_max_size) {
                kf_str_append(&s->data, l, ln);
                kf_str_append(&s->data, "\r\n", 2);
            } else {
                s->oversize = 1;
                kf_str_free(&s->data);
            }
            free(line);
            continue;
        }
        command(s, line, n);
        free(line);
    }
}

static void
on_write(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    (void) bev;
    if (s->st == S_CLOSING)
        session_free(s);
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
    struct session *s = arg;
    (void) bev;
    if ((what & BEV_EVENT_TIMEOUT) && s->st != S_CLOSING) {
        reply(s, "421 4.4.2 Idle too long, closing");
        s->st = S_CLOSING;
        bufferevent_disable(s->bev, EV_READ);
        bufferevent_enable(s->bev, EV_WRITE);
        return;
    }
    session_free(s);
}

static void
on_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void) lis;
    (void) sa;
    (void) salen;
    (void) arg;
    struct session *s = kf_xcalloc(1, sizeof(*s));
    s->bev = bufferevent_socket_new(L.base, fd, BEV_OPT_CLOSE_ON_FREE);
    s->next = L.all;
    if (L.all)
        L.all->prev = s;
    L.all = s;
    L.sessions++;
    bufferevent_setcb(s->bev, on_read, on_write, on_event, s);
    struct timeval tv = {(time_t) L.cfg->lmtp_timeout, 0};
    bufferevent_set_timeouts(s->bev, &tv, &tv);
    if (L.sessions > L.cfg->lmtp_max_sessions) {
        reply(s, "421 4.3.2 Too many sessions, try again later");
        s->st = S_CLOSING;
        bufferevent_enable(s->bev, EV_WRITE);
        return;
    }
    s->st = S_GREETED;
    reset_tx(s);
    reply(s, "220 kefu LMTP ready");
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

static void *
lmtp_main(void *arg)
{
    (void) arg;
    event_base_dispatch(L.base);
    return NULL;
}

int
kf_email_lmtp_start(const kf_config *cfg, char *err, size_t errsz)
{
    char host[256];
    const char *hp = cfg->lmtp_listen;
    const char *colon = strrchr(hp, ':');
    struct addrinfo hints = {0}, *res = NULL;
    int e;

    if (colon == NULL || (size_t) (colon - hp) >= sizeof(host)) {
        snprintf(err, errsz, "lmtp_listen %s: expected host:port", hp);
        return KF_ERR;
    }
    memcpy(host, hp, (size_t) (colon - hp));
    host[colon - hp] = '\0';
    if (host[0] == '[') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((e = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res)) != 0) {
        snprintf(err, errsz, "lmtp_listen %s: %s", hp, gai_strerror(e));
        return KF_ERR;
    }
    L.cfg = cfg;
    L.base = event_base_new();
    L.lis = evconnlistener_new_bind(L.base, on_accept, NULL,
                                    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                    128, res->ai_addr, (int) res->ai_addrlen);
    freeaddrinfo(res);
    if (L.lis == NULL) {
        snprintf(err, errsz, "lmtp_listen %s: %s", hp, strerror(errno));
        event_base_free(L.base);
        L.base = NULL;
        return KF_ERR;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char h[INET6_ADDRSTRLEN] = "?";
    getsockname(evconnlistener_get_fd(L.lis), (struct sockaddr *) &ss, &sl);
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in4 = (struct sockaddr_in *) &ss;
        inet_ntop(AF_INET, &in4->sin_addr, h, sizeof(h));
        snprintf(L.addr, sizeof(L.addr), "%s:%u", h, ntohs(in4->sin_port));
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, h, sizeof(h));
        snprintf(L.addr, sizeof(L.addr), "[%s]:%u", h, ntohs(in6->sin6_port));
    }
    L.db = kf_db_create(cfg);
    if (pthread_create(&L.thread, NULL, lmtp_main, NULL) != 0) {
        snprintf(err, errsz, "cannot start the LMTP thread");
        evconnlistener_free(L.lis);
        event_base_free(L.base);
        kf_db_destroy(&L.db);
        L.base = NULL;
        return KF_ERR;
    }
    L.running = 1;
    kf_log(KF_LOG_INFO, "email", "event=lmtp-listening addr=%s max_size=%u max_sessions=%u", L.addr,
           cfg->lmtp_max_size, cfg->lmtp_max_sessions);
    return KF_OK;
}

void
kf_email_lmtp_stop(void)
{
    if (!L.running)
        return;
    L.running = 0;
    event_base_loopbreak(L.base);
    pthread_join(L.thread, NULL);
    while (L.all)
        session_free(L.all);
    evconnlistener_free(L.lis);
    event_base_free(L.base);
    L.base = NULL;
    L.lis = NULL;
    kf_db_destroy(&L.db);
    kf_log(KF_LOG_INFO, "email", "event=lmtp-stopped");
}
