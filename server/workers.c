/*
 * workers.c - a bounded queue of calls and worker threads that run them,
 * each worker owning one MariaDB connection (STYLE.md §4.4, option C).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_internal.h"
#include "kefu/db.h"
#include "kefu/log.h"
#include "kefu/metrics.h"
#include "kefu/pool.h"

struct kf_workers {
    const kf_config *cfg;
    pthread_mutex_t mtx;
    pthread_cond_t cond;
    kf_call **ring;
    unsigned cap, head, count;
    int closing, abandon;
    unsigned n, started;
    pthread_t *threads;
    kf_db **dbs;
};

struct worker_arg {
    kf_workers *w;
    unsigned index;
};

static int
default_authenticate(kf_call *c)
{
    if (c->route->auth == KF_AUTH_PUBLIC)
        return KF_OK;
    kf_reply_problem(&c->reply, c, 401, "unauthorized", "Authentication is required.", NULL);
    return KF_ERR;
}

int (*kf_authenticate)(kf_call *c) = default_authenticate;
void (*kf_after_handler)(kf_call *c);

void
kf_call_run(kf_call *c)
{
    if (kf_authenticate(c) != KF_OK) {
        if (c->reply.status == 0)
            kf_reply_problem(&c->reply, c, 401, "unauthorized", NULL, NULL);
        return;
    }
    c->route->handler(c, &c->reply);
    if (kf_after_handler != NULL)
        kf_after_handler(c);
    if (c->reply.status == 0)
        kf_reply_internal(&c->reply, c, "handler returned no reply");
}

kf_workers *
kf_workers_create(const kf_config *cfg, unsigned n, unsigned queue_max)
{
    kf_workers *w = kf_xcalloc(1, sizeof(*w));
    w->cfg = cfg;
    w->n = n;
    w->cap = queue_max;
    w->ring = kf_xcalloc(queue_max, sizeof(*w->ring));
    w->threads = kf_xcalloc(n, sizeof(*w->threads));
    w->dbs = kf_xcalloc(n, sizeof(*w->dbs));
    pthread_mutex_init(&w->mtx, NULL);
    pthread_cond_init(&w->cond, NULL);
    kf_metrics_workers(0, n);
    return w;
}

static void *
worker_main(void *arg)
{
    struct worker_arg *wa = arg;
    kf_workers *w = wa->w;
    kf_db *db = w->dbs[wa->index];
    free(wa);

    for (;;) {
        pthread_mutex_lock(&w->mtx);
        while (w->count == 0 && !w->closing)
            pthread_cond_wait(&w->cond, &w->mtx);
        if (w->count == 0 && w->closing) {
            pthread_mutex_unlock(&w->mtx);
            break;
        }
        kf_call *c = w->ring[w->head];
        w->head = (w->head + 1) % w->cap;
        w->count--;
        int abandon = w->abandon;
        kf_metrics_queue_depth_set(w->count);
        pthread_mutex_unlock(&w->mtx);

        if (abandon) {
            kf_reply_problem(&c->reply, c, 503, "shutting-down",
                             "The server is shutting down; retry.", NULL);
            kf_reply_header(&c->reply, c, "Retry-After", "1");
        } else {
            kf_metrics_workers(1, -1);
            c->db = db;
            kf_call_run(c);
            c->db = NULL;
            kf_metrics_workers(-1, -1);
        }
        kf_loop_post_done(c->_loop, c);
    }
    return NULL;
}

int
kf_workers_start(kf_workers *w, char *err, size_t errsz)
{
    for (unsigned i = 0; i < w->n; i++) {
        struct worker_arg *wa = kf_xmalloc(sizeof(*wa));
        wa->w = w;
        wa->index = i;
        w->dbs[i] = kf_db_create(w->cfg);
        int e = pthread_create(&w->threads[i], NULL, worker_main, wa);
        if (e != 0) {
            free(wa);
            snprintf(err, errsz, "cannot start worker thread: %s", strerror(e));
            return KF_ERR;
        }
        w->started++;
    }
    return KF_OK;
}

int
kf_workers_submit(kf_workers *w, kf_call *c)
{
    pthread_mutex_lock(&w->mtx);
    if (w->closing || w->count == w->cap) {
        pthread_mutex_unlock(&w->mtx);
        return KF_EBUSY;
    }
    w->ring[(w->head + w->count) % w->cap] = c;
    w->count++;
    kf_metrics_queue_depth_set(w->count);
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mtx);
    return KF_OK;
}

void
kf_workers_stop(kf_workers *w, int abandon)
{
    pthread_mutex_lock(&w->mtx);
    w->closing = 1;
    w->abandon = abandon;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mtx);
    for (unsigned i = 0; i < w->started; i++)
        pthread_join(w->threads[i], NULL);
    w->started = 0;
}

void
kf_workers_destroy(kf_workers **pw)
{
    kf_workers *w = *pw;
    if (w == NULL)
        return;
    if (w->started)
        kf_workers_stop(w, 1);
    for (unsigned i = 0; i < w->n; i++)
        kf_db_destroy(&w->dbs[i]);
    pthread_mutex_destroy(&w->mtx);
    pthread_cond_destroy(&w->cond);
    free(w->dbs);
    free(w->threads);
    free(w->ring);
    free(w);
    *pw = NULL;
}
