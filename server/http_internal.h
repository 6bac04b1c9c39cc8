/*
 * http_internal.h - private to server/: the I/O loops, the worker pool and
 * the scheduler as the server wires them together (libevent's
 * http-internal.h pattern).  Handlers never include this.
 */
#ifndef KEFU_HTTP_INTERNAL_H
#define KEFU_HTTP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "kefu/http.h"
#include "kefu/types.h"

/* ---- workers.c ---- */
kf_workers *kf_workers_create(const kf_config *cfg, unsigned n, unsigned queue_max);
int kf_workers_start(kf_workers *w, char *err, size_t errsz);
/** KF_EBUSY when the queue is full or closing; the caller then answers 503. */
int kf_workers_submit(kf_workers *w, kf_call *c);
/**
 * Stop taking calls, let workers finish the queue, join them.  With
 * abandon set, queued calls that have not started get a 503 instead.
 */
void kf_workers_stop(kf_workers *w, int abandon);
void kf_workers_destroy(kf_workers **w);

/* ---- loop.c ---- */
kf_loop *kf_loop_create(kf_server *srv, unsigned id, int listen_fd, char *err, size_t errsz);
int kf_loop_start(kf_loop *loop);
/** Any thread: stop accepting new connections (asynchronous). */
void kf_loop_stop_accepting(kf_loop *loop);
/** Any thread: send what is done, close every connection, end the thread; joins. */
void kf_loop_exit(kf_loop *loop);
void kf_loop_destroy(kf_loop **loop);
/** Worker thread: hand a finished call back to the loop that owns its request. */
void kf_loop_post_done(kf_loop *loop, kf_call *c);

/* ---- call lifecycle ---- */
void kf_call_destroy(kf_call **c);
/** Run the route's auth check and handler on the current thread. */
void kf_call_run(kf_call *c);

/*
 * Authentication hook: fills c->principal from the session cookie or API
 * token and returns KF_OK, or fills c->reply (401/403) and returns KF_ERR.
 * Runs on a worker (it may need the database).  The default refuses every
 * route that is not KF_AUTH_PUBLIC.
 */
extern int (*kf_authenticate)(kf_call *c);
/* Run after every handler (NULL: nothing): the auth module's last word on the reply. */
extern void (*kf_after_handler)(kf_call *c);

/* ---- server.c: what loops and workers need from the server ---- */
const kf_config *kf_server_config(const kf_server *srv);
const kf_router *kf_server_router(const kf_server *srv);
kf_workers *kf_server_workers(const kf_server *srv);
void kf_server_inflight(kf_server *srv, int delta);

double kf_now_mono(void);

#endif /* KEFU_HTTP_INTERNAL_H */
