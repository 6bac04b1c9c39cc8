/*
 * lmtp.c - the LMTP listener (RFC 2033) so an MTA delivers straight in.
 *
 * One listener thread with its own event_base and its own kf_db (for RCPT
 * lookups) parses the protocol; never an HTTP I/O loop.  LHLO announces
 * PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES and SIZE; MAIL checks SIZE=
 * (552); RCPT maps the address to a mailbox (550 unknown, 451 when the
 * database is unreachable).  At the end of DATA the message and its
 * recipients become a job on a bounded queue served by lmtp_workers ingest
 * threads, each with its own kf_db; every recipient gets its own
 * transaction and its own reply once it committed (250), or 451 so the MTA
 * keeps the message and retries (451 4.3.2 at once when the queue is full:
 * at most QUEUE_PER_WORKER jobs wait per worker).
 *
 * Threads and ownership: a session and its bufferevent belong to the
 * listener thread alone.  A job is the listener's until it is queued, the
 * worker's until it is on the done list, then the listener's again; the
 * worker reads only the job (message, mailbox names) and writes only its
 * results, never the session.  The queue and the done list are under
 * L.mtx; the worker wakes the listener with event_active() on L.done_ev.
 *
 * Ordering: while a session's job is in flight the session does not read
 * (nor answer already buffered pipelined commands); the replies are written
 * in recipient order when the job is back, then reading resumes.  Commands
 * are thus answered strictly in order, so a pipelining client just works.
 * A client that goes away meanwhile leaves a dead session (no bufferevent)
 * that is freed when its job comes back; the job still commits, which is
 * harmless since ingest is idempotent by Message-ID.
 *
 * Idle sessions are cut after lmtp_timeout; at most lmtp_max_sessions at
 * once (421 to the rest).  kf_email_lmtp_stop() stops accepting, says 421 to
 * idle sessions, lets jobs in flight finish and answer (up to
 * shutdown_timeout), then joins the workers: jobs still queued then are not
 * ingested (no reply reached the MTA, which retries).
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
#define QUEUE_PER_WORKER 8 /* jobs waiting per ingest worker before 451 4.3.2 */

enum state { S_GREETED, S_LHLO, S_MAIL, S_DATA, S_CLOSING };

struct job;

/* Listener thread only. */
struct session {
    struct bufferevent *bev;  /* NULL once dead */
    enum state st;
    kf_pool *pool;            /* per transaction; handed to the job at DATA */
    char *rcpt_mailbox[MAX_RCPT];
    unsigned n_rcpt;
    kf_str data;
    int oversize;
    struct job *job;          /* in flight: reading is off until it is back */
    int dead;                 /* the client went away while job was in flight */
    struct session *next, *prev;
};

/* One message after DATA: the worker reads pool/mailbox/data and writes rc/res. */
struct job {
    struct job *next;
    struct session *s;        /* never dereferenced off the listener thread */
    kf_pool *pool;            /* the transaction's pool: mailbox names live here */
    kf_str data;
    unsigned n_rcpt;
    char *mailbox[MAX_RCPT];
    int rc[MAX_RCPT];
    kf_email_result res[MAX_RCPT];
};

static struct {
    const kf_config *cfg;
    struct event_base *base;
    struct evconnlistener *lis;
    pthread_t thread;
    int running;              /* main thread: started and not yet stopped */
    kf_db *db;                /* the listener's: RCPT lookups */
    /* listener thread only */
    unsigned sessions;
    struct session *all;
    unsigned inflight;        /* jobs submitted and not yet answered */
    int stopping;
    struct event *done_ev, *stop_ev, *deadline_ev;
    /* the ingest pool; ring, count, head, closing, abandon and done under mtx */
    pthread_mutex_t mtx;
    pthread_cond_t cond;
    struct job **ring;
    unsigned cap, head, count;
    int closing, abandon;
    int refusing;             /* listener: the queue was full at the last submit (log once) */
    struct job *done, **done_tail;
    unsigned n_workers, started;
    pthread_t *workers;
    kf_db **dbs;
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
job_free(struct job *j)
{
    if (j->pool)
        kf_pool_destroy(&j->pool);
    kf_str_free(&j->data);
    free(j);
}

/* Listener thread (or kf_email_lmtp_stop() once it is gone). */
static void
session_free(struct session *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        L.all = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (s->bev)
        bufferevent_free(s->bev);
    if (s->pool)
        kf_pool_destroy(&s->pool);
    kf_str_free(&s->data);
    free(s);
    L.sessions--;
    if (L.stopping && L.sessions == 0)
        event_base_loopbreak(L.base);
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

/* Queue the message for the workers; 451 4.3.2 to every recipient when the queue is full. */
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
    struct job *j = kf_xcalloc(1, sizeof(*j));
    j->s = s;
    j->pool = s->pool;
    s->pool = NULL;
    j->data = s->data;
    s->data = (kf_str) KF_STR_INIT;
    j->n_rcpt = s->n_rcpt;
    memcpy(j->mailbox, s->rcpt_mailbox, s->n_rcpt * sizeof(j->mailbox[0]));

    pthread_mutex_lock(&L.mtx);
    int full = L.closing || L.count == L.cap;
    if (!full) {
        L.ring[(L.head + L.count) % L.cap] = j;
        L.count++;
        pthread_cond_signal(&L.cond);
    }
    pthread_mutex_unlock(&L.mtx);

    if (full && !L.refusing)
        kf_log(KF_LOG_WARN, "email", "event=lmtp-queue-full queue=%u workers=%u", L.cap,
               L.n_workers);
    L.refusing = full;
    if (full) {
        for (unsigned i = 0; i < j->n_rcpt; i++)
            reply(s, "451 4.3.2 <%s> busy, try again later", j->mailbox[i]);
        job_free(j);
    } else {
        s->job = j;
        L.inflight++;
        bufferevent_disable(s->bev, EV_READ);
    }
    reset_tx(s);
    s->st = S_LHLO;
}

/* Worker thread: every recipient in its own transaction, as a serial loop would. */
static void
job_run(struct job *j, kf_db *db, int abandon)
{
    for (unsigned i = 0; i < j->n_rcpt; i++) {
        const char *err = NULL;
        if (abandon) {
            j->rc[i] = KF_ERR;
            continue;
        }
        j->rc[i] = kf_email_ingest_raw(db, j->mailbox[i], j->data.ptr ? j->data.ptr : "",
                                       j->data.len, "lmtp", &j->res[i], &err);
    }
}

static void *
worker_main(void *arg)
{
    kf_db *db = arg;
    for (;;) {
        pthread_mutex_lock(&L.mtx);
        while (L.count == 0 && !L.closing)
            pthread_cond_wait(&L.cond, &L.mtx);
        if (L.count == 0) {
            pthread_mutex_unlock(&L.mtx);
            break;
        }
        struct job *j = L.ring[L.head];
        L.head = (L.head + 1) % L.cap;
        L.count--;
        int abandon = L.abandon;
        pthread_mutex_unlock(&L.mtx);

        job_run(j, db, abandon);

        pthread_mutex_lock(&L.mtx);
        j->next = NULL;
        *L.done_tail = j;
        L.done_tail = &j->next;
        pthread_mutex_unlock(&L.mtx);
        event_active(L.done_ev, EV_READ, 0); /* the only libevent call made off-loop */
    }
    return NULL;
}

static void on_read(struct bufferevent *bev, void *arg);

/* The replies of one finished job: one per recipient, in recipient order. */
static void
answer(struct session *s, struct job *j)
{
    for (unsigned i = 0; i < j->n_rcpt; i++) {
        int rc = j->rc[i];
        const kf_email_result *r = &j->res[i];
        if (rc == KF_OK)
            reply(s, "250 2.0.0 <%s> %s ticket %" PRIu64, j->mailbox[i],
                  r->quarantined ? "quarantined" : r->duplicate ? "duplicate" : "delivered",
                  r->ticket_id);
        else if (rc == KF_ENOTFOUND)
            reply(s, "550 5.1.1 <%s> mailbox gone", j->mailbox[i]);
        else
            reply(s, "451 4.3.0 <%s> temporary failure, try again later", j->mailbox[i]);
    }
}

static void
close_with(struct session *s, const char *text)
{
    reply(s, "%s", text);
    s->st = S_CLOSING;
    bufferevent_disable(s->bev, EV_READ);
    bufferevent_enable(s->bev, EV_WRITE);
}

/* Listener thread: take the finished jobs and answer their sessions. */
static void
on_done(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    (void) arg;
    pthread_mutex_lock(&L.mtx);
    struct job *j = L.done, *next;
    L.done = NULL;
    L.done_tail = &L.done;
    pthread_mutex_unlock(&L.mtx);

    for (; j != NULL; j = next) {
        struct session *s = j->s;
        next = j->next;
        s->job = NULL;
        L.inflight--;
        if (s->dead) {
            job_free(j);
            session_free(s);
            continue;
        }
        answer(s, j);
        job_free(j);
        if (L.stopping) {
            close_with(s, "421 4.3.2 Service shutting down");
            continue;
        }
        bufferevent_enable(s->bev, EV_READ);
        on_read(s->bev, s); /* pipelined commands already buffered */
    }
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
        if (s->st == S_CLOSING || s->job != NULL)
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
    if (s->job != NULL) {
        /* Gone (or stuck) with a job in flight: close now, free when the job is back. */
        kf_log(KF_LOG_INFO, "email", "event=lmtp-client-gone inflight=1 reason=%s",
               (what & BEV_EVENT_TIMEOUT) ? "timeout" : (what & BEV_EVENT_EOF) ? "eof" : "error");
        bufferevent_free(s->bev);
        s->bev = NULL;
        s->dead = 1;
        return;
    }
    if ((what & BEV_EVENT_TIMEOUT) && s->st != S_CLOSING) {
        close_with(s, "421 4.4.2 Idle too long, closing");
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
        close_with(s, "421 4.3.2 Too many sessions, try again later");
        return;
    }
    s->st = S_GREETED;
    reset_tx(s);
    reply(s, "220 kefu LMTP ready");
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

/* Listener thread: kf_email_lmtp_stop() asked to stop. */
static void
on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    (void) arg;
    L.stopping = 1;
    evconnlistener_disable(L.lis);
    for (struct session *s = L.all, *next; s != NULL; s = next) {
        next = s->next;
        if (s->job == NULL && s->st != S_CLOSING)
            close_with(s, "421 4.3.2 Service shutting down");
    }
    kf_debug("email", "event=lmtp-draining sessions=%u inflight=%u", L.sessions, L.inflight);
    if (L.sessions == 0) {
        event_base_loopbreak(L.base);
        return;
    }
    struct timeval tv = {(time_t) L.cfg->shutdown_timeout, 0};
    event_add(L.deadline_ev, &tv);
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    (void) arg;
    kf_log(KF_LOG_WARN, "email", "event=lmtp-shutdown-deadline sessions=%u inflight=%u",
           L.sessions, L.inflight);
    event_base_loopbreak(L.base);
}

static void *
lmtp_main(void *arg)
{
    (void) arg;
    event_base_dispatch(L.base);
    return NULL;
}

/* Main thread, after the listener thread is gone: end the workers, free everything. */
static void
pool_end(void)
{
    pthread_mutex_lock(&L.mtx);
    L.closing = 1;
    L.abandon = 1; /* still queued: not ingested; the MTA had no reply and retries */
    pthread_cond_broadcast(&L.cond);
    pthread_mutex_unlock(&L.mtx);
    for (unsigned i = 0; i < L.started; i++)
        pthread_join(L.workers[i], NULL);
    L.started = 0;
    for (struct job *j = L.done, *next; j != NULL; j = next) {
        next = j->next;
        j->s->job = NULL;
        job_free(j);
    }
    L.done = NULL;
    L.done_tail = &L.done;
    for (unsigned i = 0; i < L.n_workers; i++)
        kf_db_destroy(&L.dbs[i]);
    free(L.dbs);
    free(L.workers);
    free(L.ring);
    L.dbs = NULL;
    L.workers = NULL;
    L.ring = NULL;
    pthread_mutex_destroy(&L.mtx);
    pthread_cond_destroy(&L.cond);
}

static void
base_free(void)
{
    if (L.done_ev)
        event_free(L.done_ev);
    if (L.stop_ev)
        event_free(L.stop_ev);
    if (L.deadline_ev)
        event_free(L.deadline_ev);
    L.done_ev = L.stop_ev = L.deadline_ev = NULL;
    if (L.lis)
        evconnlistener_free(L.lis);
    L.lis = NULL;
    event_base_free(L.base);
    L.base = NULL;
}

int
kf_email_lmtp_start(const kf_config *cfg, char *err, size_t errsz)
{
    char host[256];
    const char *hp = cfg->lmtp_listen;
    const char *colon = strrchr(hp, ':');
    struct addrinfo hints = {0}, *res = NULL;
    int e;

    /* 1. Listen. */
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
    memset(&L, 0, sizeof(L));
    L.cfg = cfg;
    L.base = event_base_new();
    L.lis = evconnlistener_new_bind(L.base, on_accept, NULL,
                                    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                    128, res->ai_addr, (int) res->ai_addrlen);
    freeaddrinfo(res);
    if (L.lis == NULL) {
        snprintf(err, errsz, "lmtp_listen %s: %s", hp, strerror(errno));
        base_free();
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
    /* event_active() from workers needs evthread_use_pthreads() before event_base_new(). */
    L.done_ev = event_new(L.base, -1, 0, on_done, NULL);
    L.stop_ev = event_new(L.base, -1, 0, on_stop, NULL);
    L.deadline_ev = evtimer_new(L.base, on_deadline, NULL);
    L.db = kf_db_create(cfg);

    /* 2. The ingest workers, each with its own connection. */
    pthread_mutex_init(&L.mtx, NULL);
    pthread_cond_init(&L.cond, NULL);
    L.done_tail = &L.done;
    L.n_workers = cfg->lmtp_workers ? cfg->lmtp_workers : 1;
    L.cap = L.n_workers * QUEUE_PER_WORKER;
    L.ring = kf_xcalloc(L.cap, sizeof(*L.ring));
    L.workers = kf_xcalloc(L.n_workers, sizeof(*L.workers));
    L.dbs = kf_xcalloc(L.n_workers, sizeof(*L.dbs));
    for (unsigned i = 0; i < L.n_workers; i++) {
        L.dbs[i] = kf_db_create(cfg);
        if ((e = pthread_create(&L.workers[i], NULL, worker_main, L.dbs[i])) != 0) {
            snprintf(err, errsz, "cannot start an LMTP worker: %s", strerror(e));
            pool_end();
            base_free();
            kf_db_destroy(&L.db);
            return KF_ERR;
        }
        L.started++;
    }

    /* 3. The listener thread. */
    if (pthread_create(&L.thread, NULL, lmtp_main, NULL) != 0) {
        snprintf(err, errsz, "cannot start the LMTP thread");
        pool_end();
        base_free();
        kf_db_destroy(&L.db);
        return KF_ERR;
    }
    L.running = 1;
    kf_log(KF_LOG_INFO, "email",
           "event=lmtp-listening addr=%s max_size=%u max_sessions=%u workers=%u queue=%u", L.addr,
           cfg->lmtp_max_size, cfg->lmtp_max_sessions, L.n_workers, L.cap);
    return KF_OK;
}

void
kf_email_lmtp_stop(void)
{
    if (!L.running)
        return;
    L.running = 0;
    /* 1. The listener stops accepting and drains (bounded by shutdown_timeout). */
    event_active(L.stop_ev, EV_READ, 0);
    pthread_join(L.thread, NULL);
    /* 2. Workers finish their current message; the queue's rest is dropped. */
    pool_end();
    /* 3. The listener thread is gone: its sessions and base are ours now. */
    while (L.all)
        session_free(L.all);
    base_free();
    kf_db_destroy(&L.db);
    kf_log(KF_LOG_INFO, "email", "event=lmtp-stopped");
}
