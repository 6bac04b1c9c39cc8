/*
 * loop.c - the I/O threads: each runs an event_base with its own evhttp on
 * the shared listening socket, turns requests into kf_calls, hands them to
 * the workers and sends the replies that come back.  Nothing here blocks.
 *
 * Streams (routes marked KF_ROUTE_STREAM, i.e. Server-Sent Events): the
 * handler authenticates and authorizes on a worker like any other; when it
 * answers 200 with a prepared stream, the loop starts a chunked reply
 * instead of a complete one and keeps the request.  The loop's SSE hub
 * (server/sse.c, a thread with its own MariaDB connection) tails the event
 * log and wakes the loop when a stream has text; the loop writes it while
 * the client keeps up (less than half of sse_max_buffer unsent), sends
 * heartbeat comments, cuts off a client that takes nothing for two
 * heartbeats in a row, notices a hang-up at once (close callback), and
 * ends every stream as soon as the server starts to stop.  A stream counts
 * as in flight until it ends.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sodium.h>

#include "http_internal.h"
#include "kefu/config.h"
#include "kefu/log.h"
#include "kefu/metrics.h"
#include "kefu/pool.h"
#include "kefu/server.h"
#include "sse.h"

/* A live chunked reply (I/O thread only). */
struct stream {
    kf_loop *loop;
    struct stream *prev, *next;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    kf_sse_sub *sub;
    unsigned route_index;
    double started;
    size_t sent;
    size_t stalled_len;      /* unsent output at the last heartbeat, when over the mark */
    unsigned stalled_beats;  /* heartbeats in a row the client took nothing */
    char request_id[65];
    char who[96];
    char peer[64];
};

/* Why a stream ends; decides what happens to the request and the connection. */
enum stream_end { STREAM_FINISH, STREAM_CUT, STREAM_GONE };

struct kf_loop {
    kf_server *srv;
    unsigned id;
    const kf_config *cfg;
    const kf_router *router;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct event *done_ev, *stop_accept_ev, *exit_ev;
    pthread_mutex_t done_mtx;
    kf_call *done;
    pthread_t thread;
    int running;
    /* streams */
    struct stream *streams;
    unsigned n_streams;
    kf_sse_hub *hub;
    struct event *sse_ev, *heartbeat_ev;
    struct evbuffer *scratch;
};

double
kf_now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static unsigned
method_bit(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return KF_GET;
    case EVHTTP_REQ_POST: return KF_POST;
    case EVHTTP_REQ_PUT: return KF_PUT;
    case EVHTTP_REQ_PATCH: return KF_PATCH;
    case EVHTTP_REQ_DELETE: return KF_DELETE;
    case EVHTTP_REQ_HEAD: return KF_HEAD;
    case EVHTTP_REQ_OPTIONS: return KF_OPTIONS;
    default: return 0;
    }
}

static const char *
method_name(unsigned m)
{
    switch (m) {
    case KF_GET: return "GET";
    case KF_POST: return "POST";
    case KF_PUT: return "PUT";
    case KF_PATCH: return "PATCH";
    case KF_DELETE: return "DELETE";
    case KF_HEAD: return "HEAD";
    case KF_OPTIONS: return "OPTIONS";
    default: return "?";
    }
}

/* An incoming X-Request-Id is kept when it is short and plain; else we make one. */
static const char *
request_id(kf_pool *pool, const char *given)
{
    if (given != NULL) {
        size_t n = strlen(given);
        int ok = n > 0 && n <= 64;
        for (size_t i = 0; ok && i < n; i++) {
            char ch = given[i];
            ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                 (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.';
        }
        if (ok)
            return kf_pool_strdup(pool, given);
    }
    /* A random 32-bit prefix per I/O thread and a counter: unique across
     * threads and restarts in practice, and no getrandom(2) per request.
     * Request ids identify log lines; they are not secrets. */
    static _Thread_local uint32_t prefix;
    static _Thread_local uint32_t counter;
    if (prefix == 0)
        prefix = randombytes_random() | 1u;
    return kf_pool_printf(pool, "%08x%08x", prefix, ++counter);
}

void
kf_call_destroy(kf_call **pc)
{
    kf_call *c = *pc;
    if (c == NULL)
        return;
    kf_pool *pool = c->pool;
    kf_pool_destroy(&pool); /* the call itself lives in its pool */
    *pc = NULL;
}

/* Send c->reply on req (I/O thread only), log it, count it, destroy c. */
static void
reply_send(kf_loop *loop, kf_call *c)
{
    struct evhttp_request *req = c->_req;
    kf_reply *r = &c->reply;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    struct evbuffer *buf = evbuffer_new();

    if (r->status == 0)
        kf_reply_internal(r, c, "no reply");
    evhttp_add_header(h, "Content-Type", r->content_type ? r->content_type : "text/plain");
    evhttp_add_header(h, "X-Request-Id", c->request_id);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Cache-Control", "no-store");
    for (unsigned i = 0; i < r->n_headers; i++)
        evhttp_add_header(h, r->headers[i].key, r->headers[i].value);
    if (r->body_len)
        evbuffer_add(buf, r->body, r->body_len);
    evhttp_send_reply(req, r->status, kf_http_reason(r->status), buf);
    evbuffer_free(buf);

    double dur = kf_now_mono() - c->started;
    kf_metrics_http(c->route ? c->route_index : kf_router_count(loop->router), r->status, dur);
    if (loop->cfg->access_log && kf_log_level >= KF_LOG_INFO) {
        char path[256];
        kf_printable(path, sizeof(path), c->path, strlen(c->path));
        kf_log(KF_LOG_INFO, "http",
               "req=%s method=%s path=\"%s\" route=\"%s\" status=%d dur_ms=%.2f peer=%s",
               c->request_id, method_name(c->method), path, c->route ? c->route->name : "-",
               r->status, dur * 1000.0, c->peer);
    }
    kf_call_destroy(&c);
    kf_server_inflight(loop->srv, -1);
}

static void
reply_now(kf_loop *loop, kf_call *c, int status, const char *code, const char *detail);

/* ---- streams (Server-Sent Events) ---- */

static void
stream_end(struct stream *s, enum stream_end how, const char *why)
{
    kf_loop *loop = s->loop;
    double dur = kf_now_mono() - s->started;

    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        loop->streams = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    loop->n_streams--;
    kf_sse_unsubscribe(loop->hub, &s->sub);
    kf_sse_slot_release();

    switch (how) {
    case STREAM_FINISH:
        /* The final chunk goes out, then evhttp closes (Connection: close). */
        evhttp_connection_set_closecb(s->evcon, NULL, NULL);
        evhttp_send_reply_end(s->req);
        break;
    case STREAM_CUT: {
        /* Drop what the client did not read, here and in the kernel (an
         * abortive close: RST, no orphaned socket holding the send queue);
         * frees the request with the connection. */
        struct linger lg = {1, 0};
        evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(s->evcon));
        if (fd >= 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        evhttp_connection_set_closecb(s->evcon, NULL, NULL);
        evhttp_connection_free(s->evcon);
        break;
    }
    case STREAM_GONE:
        /* From the close callback.  A request evhttp detached from its dead
         * connection is ours to free; an attached one evhttp frees itself. */
        if (evhttp_request_get_connection(s->req) == NULL)
            evhttp_request_free(s->req);
        break;
    }
    kf_metrics_http(s->route_index, 200, dur);
    kf_log(KF_LOG_INFO, "http",
           "req=%s event=stream-end reason=%s who=\"%s\" sent=%zu dur_ms=%.0f peer=%s streams=%u",
           s->request_id, why, s->who, s->sent, dur * 1000.0, s->peer, loop->n_streams);
    free(s);
    kf_server_inflight(loop->srv, -1);
}

static void
on_stream_closed(struct evhttp_connection *evcon, void *arg)
{
    struct stream *s = arg;
    (void) evcon;
    stream_end(s, STREAM_GONE, "client-gone");
}

static size_t
stream_unsent(const struct stream *s)
{
    return evbuffer_get_length(bufferevent_get_output(evhttp_connection_get_bufferevent(s->evcon)));
}

/* evhttp wrote out everything queued on a stream's connection: there may be room for more. */
static void
on_stream_drained(struct evhttp_connection *evcon, void *arg)
{
    struct stream *s = arg;
    (void) evcon;
    event_active(s->loop->sse_ev, EV_READ, 0); /* pull outside evhttp's callback */
}

/* Send text as one chunk.  Returns 0 when the stream was cut off instead
 * (a single message larger than sse_max_buffer). */
static int
stream_write(struct stream *s, const char *text, size_t len)
{
    kf_loop *loop = s->loop;

    evbuffer_add(loop->scratch, text, len);
    evhttp_send_reply_chunk_with_cb(s->req, loop->scratch, on_stream_drained, s);
    evbuffer_drain(loop->scratch, evbuffer_get_length(loop->scratch));
    s->sent += len;
    if (stream_unsent(s) > loop->cfg->sse_max_buffer) {
        stream_end(s, STREAM_CUT, "slow-client");
        return 0;
    }
    return 1;
}

/*
 * Move what the hub has for this stream onto the connection, while the
 * connection has less than half of sse_max_buffer unsent.  Otherwise the
 * text waits in the hub, which stops adding at its own cap: the stream
 * falls behind and is caught up from the database once the client reads
 * again.  Memory per stream stays bounded either way.
 */
static void
stream_pull(struct stream *s)
{
    kf_str text = KF_STR_INIT;
    if (stream_unsent(s) >= s->loop->cfg->sse_max_buffer / 2)
        return;
    if (kf_sse_take(s->loop->hub, s->sub, &text) > 0)
        stream_write(s, text.ptr, text.len);
    kf_str_free(&text);
}

/* Hub thread: some stream of this loop has text waiting. */
static void
on_sse_wake(void *arg)
{
    kf_loop *loop = arg;
    event_active(loop->sse_ev, EV_READ, 0);
}

static void
on_sse_ready(evutil_socket_t fd, short what, void *arg)
{
    kf_loop *loop = arg;
    struct stream *s, *next;
    (void) fd;
    (void) what;
    for (s = loop->streams; s != NULL; s = next) {
        next = s->next;
        stream_pull(s);
    }
}

/*
 * Every sse_heartbeat seconds: a comment on idle streams (keeps proxies
 * from timing out), a pull on the others, and the slow-client check: a
 * client that took nothing of more than half of sse_max_buffer over two
 * heartbeats in a row is cut off.
 */
static void
on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    static const char ping[] = ": ping\n\n";
    kf_loop *loop = arg;
    struct stream *s, *next;
    (void) fd;
    (void) what;
    for (s = loop->streams; s != NULL; s = next) {
        size_t unsent = stream_unsent(s);
        next = s->next;
        if (unsent >= loop->cfg->sse_max_buffer / 2) {
            s->stalled_beats = s->stalled_len != 0 && unsent >= s->stalled_len
                                   ? s->stalled_beats + 1 : 1;
            s->stalled_len = unsent;
            if (s->stalled_beats >= 2)
                stream_end(s, STREAM_CUT, "slow-client");
            continue;
        }
        s->stalled_beats = 0;
        s->stalled_len = 0;
        if (unsent == 0 && stream_write(s, ping, sizeof(ping) - 1) == 0)
            continue;
        stream_pull(s);
    }
}

/* End every stream of this loop (the server is stopping). */
static void
streams_finish(kf_loop *loop, const char *why)
{
    while (loop->streams != NULL)
        stream_end(loop->streams, STREAM_FINISH, why);
}

/*
 * A stream route's handler said yes: turn the call into a chunked reply
 * that stays open, subscribe it to the loop's hub, free the call.  The
 * request stays in flight until stream_end().
 */
static void
stream_start(kf_loop *loop, kf_call *c)
{
    const kf_config *cfg = loop->cfg;
    const kf_sse_spec *spec = c->_stream;
    struct evhttp_request *req = c->_req;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    struct timeval wtv = {(time_t) cfg->http_timeout, 0};
    struct bufferevent *bev;
    struct stream *s;

    if (kf_server_stopping() || evcon == NULL) {
        kf_reply_header(&c->reply, c, "Retry-After", "1");
        reply_now(loop, c, 503, "shutting-down", "The server is shutting down; retry.");
        return;
    }
    if (!kf_sse_slot_take(cfg->sse_max_clients)) {
        char *detail = kf_pool_printf(c->pool, "This server already serves %u event streams; "
                                      "retry later.", cfg->sse_max_clients);
        kf_reply_header(&c->reply, c, "Retry-After", "5");
        reply_now(loop, c, 503, "too-many-streams", detail);
        return;
    }
    evhttp_add_header(h, "Content-Type", "text/event-stream; charset=utf-8");
    evhttp_add_header(h, "X-Request-Id", c->request_id);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Accel-Buffering", "no"); /* nginx: pass events through at once */
    evhttp_add_header(h, "Connection", "close");
    for (unsigned i = 0; i < c->reply.n_headers; i++)
        evhttp_add_header(h, c->reply.headers[i].key, c->reply.headers[i].value);
    evhttp_send_reply_start(req, 200, "OK");

    s = kf_xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->req = req;
    s->evcon = evcon;
    s->route_index = c->route_index;
    s->started = c->started;
    snprintf(s->request_id, sizeof(s->request_id), "%s", c->request_id);
    snprintf(s->who, sizeof(s->who), "%s", spec->who ? spec->who : "-");
    snprintf(s->peer, sizeof(s->peer), "%s", c->peer);

    /* No read timeout (the client sends nothing more), but keep reading a
     * little so a hang-up is noticed at once; a client that stops reading
     * still meets the write timeout. */
    evhttp_connection_set_closecb(evcon, on_stream_closed, s);
    bev = evhttp_connection_get_bufferevent(evcon);
    bufferevent_set_timeouts(bev, NULL, &wtv);
    bufferevent_setwatermark(bev, EV_READ, 0, 4096);
    bufferevent_enable(bev, EV_READ);

    if (loop->hub == NULL)
        loop->hub = kf_sse_hub_create(cfg, on_sse_wake, loop);
    s->sub = kf_sse_subscribe(loop->hub, spec);
    s->next = loop->streams;
    if (loop->streams != NULL)
        loop->streams->prev = s;
    loop->streams = s;
    loop->n_streams++;
    kf_log(KF_LOG_INFO, "http",
           "req=%s event=stream-start route=\"%s\" who=\"%s\" after=%llu peer=%s streams=%u",
           c->request_id, c->route->name ? c->route->name : c->route->pattern, s->who,
           (unsigned long long) spec->after, c->peer, loop->n_streams);
    stream_write(s, c->reply.body, c->reply.body_len);
    kf_call_destroy(&c);
}

static void
on_calls_done(evutil_socket_t fd, short what, void *arg)
{
    kf_loop *loop = arg;
    kf_call *c, *next;
    (void) fd;
    (void) what;

    pthread_mutex_lock(&loop->done_mtx);
    c = loop->done;
    loop->done = NULL;
    pthread_mutex_unlock(&loop->done_mtx);
    /* The list is LIFO; order across requests does not matter. */
    for (; c != NULL; c = next) {
        next = c->_next;
        if (c->route != NULL && (c->route->flags & KF_ROUTE_STREAM) && c->_stream != NULL &&
            c->reply.status == 200 && c->method != KF_HEAD)
            stream_start(loop, c);
        else
            reply_send(loop, c);
    }
}

void
kf_loop_post_done(kf_loop *loop, kf_call *c)
{
    pthread_mutex_lock(&loop->done_mtx);
    c->_next = loop->done;
    loop->done = c;
    pthread_mutex_unlock(&loop->done_mtx);
    event_active(loop->done_ev, EV_READ, 0); /* the only libevent call made off-loop */
}

static kf_call *
call_new(kf_loop *loop, struct evhttp_request *req)
{
    kf_pool *pool = kf_pool_create(8192);
    kf_call *c = kf_pool_alloc(pool, sizeof(*c));
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evkeyval *kv;

    c->pool = pool;
    c->cfg = loop->cfg;
    c->_req = req;
    c->_loop = loop;
    c->started = kf_now_mono();
    c->method = method_bit(evhttp_request_get_command(req));
    c->request_id = request_id(pool, evhttp_find_header(in, "X-Request-Id"));

    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    c->path = kf_pool_strdup(pool, path && *path ? path : "/");
    c->query = query ? kf_pool_strdup(pool, query) : NULL;

    for (kv = in->tqh_first; kv != NULL && c->n_headers < KF_MAX_HEADERS; kv = kv->next.tqe_next) {
        c->headers[c->n_headers].key = kf_pool_strdup(pool, kv->key);
        c->headers[c->n_headers].value = kf_pool_strdup(pool, kv->value);
        c->n_headers++;
    }

    char *host = NULL;
    ev_uint16_t port = 0;
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    if (conn != NULL)
        evhttp_connection_get_peer(conn, &host, &port);
    c->peer = kf_pool_strdup(pool, host ? host : "-");
    return c;
}

static void
reply_now(kf_loop *loop, kf_call *c, int status, const char *code, const char *detail)
{
    kf_reply_problem(&c->reply, c, status, code, detail, NULL);
    reply_send(loop, c);
}

/* Every name=value pair of c->query percent-decodes. */
static int
query_ok(kf_call *c)
{
    for (const char *q = c->query; *q;) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t) (amp - q) : strlen(q);
        if (kf_url_decode(c->pool, q, len, 1) == NULL)
            return 0;
        if (amp == NULL)
            break;
        q = amp + 1;
    }
    return 1;
}

static void
on_http_request(struct evhttp_request *req, void *arg)
{
    kf_loop *loop = arg;
    kf_call *c = call_new(loop, req);
    unsigned index = 0, allow = 0;

    kf_server_inflight(loop->srv, 1);

    /* 1. Route. */
    int m = c->method == 0 ? KF_MATCH_NOT_FOUND
                           : kf_router_match(loop->router, c->method, c->path, c->pool, &index,
                                             c->params, &c->n_params, &allow);
    if (c->method == 0) {
        reply_now(loop, c, 501, "method-not-implemented", "This HTTP method is not supported.");
        return;
    }
    if (m == KF_MATCH_NOT_FOUND) {
        reply_now(loop, c, 404, "not-found", "No resource at this path.");
        return;
    }
    if (m == KF_MATCH_BAD_METHOD) {
        char methods[96];
        kf_methods_str(allow, methods, sizeof(methods));
        kf_reply_header(&c->reply, c, "Allow", methods);
        char *detail = kf_pool_printf(c->pool, "%s is not allowed here; allowed: %s.",
                                      method_name(c->method), methods);
        reply_now(loop, c, 405, "method-not-allowed", detail);
        return;
    }
    c->route = kf_router_get(loop->router, index);
    c->route_index = index;

    /* 2. A query string every handler can trust: each name and value decodes
     * (no broken %-escapes, no NUL), so a NULL from kf_call_query() means
     * "absent", never "malformed". */
    if (c->query != NULL && !query_ok(c)) {
        reply_now(loop, c, 400, "bad-query",
                  "The query string has a malformed percent-encoding or a NUL byte.");
        return;
    }

    /* 2b. Body, within the route's own limit. */
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    size_t blen = evbuffer_get_length(body);
    if (blen > c->route->max_body) {
        char *detail = kf_pool_printf(c->pool, "The body is %zu bytes; this resource accepts at "
                                      "most %zu.", blen, c->route->max_body);
        reply_now(loop, c, 413, "payload-too-large", detail);
        return;
    }
    char *b = kf_pool_alloc(c->pool, blen + 1);
    if (blen)
        evbuffer_copyout(body, b, blen);
    c->body = b;
    c->body_len = blen;

    /* 3. Run here (cheap, no I/O) or on a worker. */
    if (c->route->flags & KF_ROUTE_INLINE) {
        kf_call_run(c);
        reply_send(loop, c);
        return;
    }
    if (kf_workers_submit(kf_server_workers(loop->srv), c) != KF_OK) {
        kf_reply_header(&c->reply, c, "Retry-After", "1");
        reply_now(loop, c, 503, "overloaded", "Too many requests are waiting; retry shortly.");
    }
}

static void
on_stop_accepting(evutil_socket_t fd, short what, void *arg)
{
    kf_loop *loop = arg;
    (void) fd;
    (void) what;
    if (loop->bound != NULL) {
        evhttp_del_accept_socket(loop->http, loop->bound); /* closes our dup of the socket */
        loop->bound = NULL;
    }
    /* Streams never finish by themselves: end them so the drain can. */
    streams_finish(loop, "shutdown");
}

static void
on_exit_loop(evutil_socket_t fd, short what, void *arg)
{
    kf_loop *loop = arg;
    on_stop_accepting(fd, what, arg);
    on_calls_done(fd, what, arg);
    event_base_loopbreak(loop->base);
}

kf_loop *
kf_loop_create(kf_server *srv, unsigned id, int listen_fd, char *err, size_t errsz)
{
    kf_loop *loop = kf_xcalloc(1, sizeof(*loop));
    const kf_config *cfg = kf_server_config(srv);

    loop->srv = srv;
    loop->id = id;
    loop->cfg = cfg;
    loop->router = kf_server_router(srv);
    pthread_mutex_init(&loop->done_mtx, NULL);
    loop->base = event_base_new();
    loop->http = loop->base ? evhttp_new(loop->base) : NULL;
    if (loop->http == NULL) {
        snprintf(err, errsz, "cannot create event loop");
        kf_loop_destroy(&loop);
        return NULL;
    }
    /* evhttp refuses bodies over http_max_body itself (an HTML 413: libevent
     * 2.1 has no error callback); below that the route's own limit answers
     * with problem+json. */
    evhttp_set_max_body_size(loop->http, (ev_ssize_t) cfg->http_max_body);
    evhttp_set_max_headers_size(loop->http, cfg->http_max_headers);
    evhttp_set_timeout(loop->http, (int) cfg->http_timeout);
    evhttp_set_allowed_methods(loop->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                               EVHTTP_REQ_PATCH | EVHTTP_REQ_DELETE |
                                               EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS);
    evhttp_set_gencb(loop->http, on_http_request, loop);
    /* Replies go out at once: without TCP_NODELAY a reply larger than one
     * bufferevent write (16 KiB) waits for the client's delayed ACK, ~40 ms
     * on a keep-alive connection.  Linux copies the option from the listening
     * socket to every socket accept() returns. */
    int one = 1;
    setsockopt(listen_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    loop->bound = evhttp_accept_socket_with_handle(loop->http, listen_fd);
    if (loop->bound == NULL) {
        snprintf(err, errsz, "cannot accept on the listening socket: %s", strerror(errno));
        close(listen_fd);
        kf_loop_destroy(&loop);
        return NULL;
    }
    loop->done_ev = event_new(loop->base, -1, 0, on_calls_done, loop);
    loop->stop_accept_ev = event_new(loop->base, -1, 0, on_stop_accepting, loop);
    loop->exit_ev = event_new(loop->base, -1, 0, on_exit_loop, loop);
    loop->sse_ev = event_new(loop->base, -1, 0, on_sse_ready, loop);
    loop->heartbeat_ev = event_new(loop->base, -1, EV_PERSIST, on_heartbeat, loop);
    loop->scratch = evbuffer_new();
    struct timeval hb = {(time_t) cfg->sse_heartbeat, 0};
    event_add(loop->heartbeat_ev, &hb);
    return loop;
}

static void *
loop_main(void *arg)
{
    kf_loop *loop = arg;
    /* Keep the loop running even with no events pending. */
    event_base_loop(loop->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

int
kf_loop_start(kf_loop *loop)
{
    if (pthread_create(&loop->thread, NULL, loop_main, loop) != 0)
        return KF_ERR;
    loop->running = 1;
    return KF_OK;
}

void
kf_loop_stop_accepting(kf_loop *loop)
{
    event_active(loop->stop_accept_ev, EV_READ, 0);
}

void
kf_loop_exit(kf_loop *loop)
{
    if (!loop->running)
        return;
    event_active(loop->exit_ev, EV_READ, 0);
    pthread_join(loop->thread, NULL);
    loop->running = 0;
}

void
kf_loop_destroy(kf_loop **pl)
{
    kf_loop *loop = *pl;
    if (loop == NULL)
        return;
    kf_loop_exit(loop);
    if (loop->http)
        evhttp_free(loop->http); /* closes connections; pending requests are freed */
    kf_sse_hub_destroy(&loop->hub); /* after evhttp_free: closing a stream unsubscribes */
    if (loop->sse_ev)
        event_free(loop->sse_ev);
    if (loop->heartbeat_ev)
        event_free(loop->heartbeat_ev);
    if (loop->scratch)
        evbuffer_free(loop->scratch);
    if (loop->done_ev)
        event_free(loop->done_ev);
    if (loop->stop_accept_ev)
        event_free(loop->stop_accept_ev);
    if (loop->exit_ev)
        event_free(loop->exit_ev);
    if (loop->base)
        event_base_free(loop->base);
    pthread_mutex_destroy(&loop->done_mtx);
    free(loop);
    *pl = NULL;
}
