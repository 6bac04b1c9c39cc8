/*
 * jobs.c - the scheduler: job threads, each with its own MariaDB
 * connection, run the jobs on their periods (Redis serverCron), and lease
 * rows let only one instance run a singleton job.
 *
 * Any free thread runs any job that is due and not running (the most
 * overdue first), so a tick that blocks on a slow peer holds one thread,
 * never the jobs behind it; a job never runs twice at once.  next[] and
 * running[] are under s->mtx.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "http_internal.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/job.h"
#include "kefu/log.h"
#include "kefu/metrics.h"
#include "kefu/pool.h"

#define MAX_SCHED_JOBS 64

struct jthread {
    kf_scheduler *s;
    unsigned index;
    pthread_t thread;
    kf_db *db;
};

struct kf_scheduler {
    const kf_config *cfg;
    kf_job *jobs[MAX_SCHED_JOBS];
    double next[MAX_SCHED_JOBS]; /* monotonic time each job is due */
    int running[MAX_SCHED_JOBS];
    unsigned n_jobs;
    struct jthread *threads;
    unsigned n_threads, started;
    pthread_mutex_t mtx;
    pthread_cond_t cond;
    atomic_int stopping;
};

static char instance_id[96];
static pthread_once_t instance_once = PTHREAD_ONCE_INIT;

static void
make_instance_id(void)
{
    char host[64] = "host";
    unsigned char r[4];
    char hex[9];
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    randombytes_buf(r, sizeof(r));
    sodium_bin2hex(hex, sizeof(hex), r, sizeof(r));
    snprintf(instance_id, sizeof(instance_id), "%.60s:%d:%s", host, (int) getpid(), hex);
}

const char *
kf_instance_id(void)
{
    pthread_once(&instance_once, make_instance_id);
    return instance_id;
}

/* Scheduler of the job being run, so kf_job_stopping() can answer. */
static _Thread_local kf_scheduler *current_sched;

int
kf_job_stopping(const kf_job *job)
{
    (void) job;
    return current_sched != NULL && atomic_load(&current_sched->stopping);
}

kf_scheduler *
kf_scheduler_create(const kf_config *cfg)
{
    kf_scheduler *s = kf_xcalloc(1, sizeof(*s));
    s->cfg = cfg;
    s->n_threads = cfg->job_threads;
    pthread_mutex_init(&s->mtx, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    return s;
}

void
kf_scheduler_add(kf_scheduler *s, kf_job *job)
{
    if (s->n_jobs == MAX_SCHED_JOBS)
        kf_panic("too many jobs");
    job->_metrics_slot = kf_metrics_job_register(job->name);
    s->jobs[s->n_jobs++] = job;
}

static double
mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void *
job_thread_main(void *arg)
{
    struct jthread *t = arg;
    kf_scheduler *s = t->s;

    current_sched = s;
    pthread_mutex_lock(&s->mtx);
    while (!atomic_load(&s->stopping)) {
        /* The most overdue job nobody runs, or how long until one is due. */
        double now = mono(), wake = now + 1.0;
        int pick = -1;
        for (unsigned j = 0; j < s->n_jobs; j++) {
            if (s->running[j])
                continue;
            if (s->next[j] <= now && (pick < 0 || s->next[j] < s->next[pick]))
                pick = (int) j;
            if (s->next[j] < wake)
                wake = s->next[j];
        }
        if (pick < 0) {
            struct timespec ts;
            ts.tv_sec = (time_t) wake;
            ts.tv_nsec = (long) ((wake - (double) ts.tv_sec) * 1e9);
            pthread_cond_timedwait(&s->cond, &s->mtx, &ts);
            continue;
        }
        kf_job *job = s->jobs[pick];
        s->running[pick] = 1;
        pthread_mutex_unlock(&s->mtx);

        const char *error = NULL;
        int rc = job->tick(job, t->db, &error);
        kf_metrics_job(job->_metrics_slot, rc != KF_OK);
        if (rc != KF_OK)
            kf_log(KF_LOG_WARN, "jobs", "job=%s event=tick-failed rc=%d reason=\"%s\"",
                   job->name, rc, error ? error : "-");

        pthread_mutex_lock(&s->mtx);
        s->running[pick] = 0;
        s->next[pick] = mono() + job->period_ms / 1000.0;
    }
    pthread_mutex_unlock(&s->mtx);
    return NULL;
}

int
kf_scheduler_start(kf_scheduler *s)
{
    /* Spread first runs a little so instances started together don't align. */
    for (unsigned j = 0; j < s->n_jobs; j++)
        s->next[j] = mono() + (double) randombytes_uniform(250) / 1000.0;
    s->threads = kf_xcalloc(s->n_threads, sizeof(*s->threads));
    for (unsigned i = 0; i < s->n_threads; i++) {
        struct jthread *t = &s->threads[i];
        t->s = s;
        t->index = i;
        t->db = kf_db_create(s->cfg);
        if (pthread_create(&t->thread, NULL, job_thread_main, t) != 0)
            return KF_ERR;
        s->started++;
    }
    return KF_OK;
}

void
kf_scheduler_stop(kf_scheduler *s, unsigned deadline_ms)
{
    (void) deadline_ms; /* ticks are short and poll kf_job_stopping() */
    pthread_mutex_lock(&s->mtx);
    atomic_store(&s->stopping, 1);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mtx);
    for (unsigned i = 0; i < s->started; i++)
        pthread_join(s->threads[i].thread, NULL);
    /* Hand this instance's leases back, so another instance takes over its
     * mailboxes and token refreshes now instead of when they expire. */
    if (s->started > 0 && s->threads[0].db != NULL) {
        kf_stmt *st;
        const char *error = NULL;
        if (kf_db_stmt(s->threads[0].db, "job.lease_release",
                       "DELETE FROM job_lease WHERE owner = ?", &st, &error) == KF_OK) {
            kf_stmt_bind_cstr(st, 0, kf_instance_id());
            if (kf_stmt_exec(st, &error) != KF_OK)
                kf_log(KF_LOG_WARN, "jobs", "event=lease-release-failed reason=\"%s\"",
                       error ? error : "-");
        }
    }
    s->started = 0;
}

void
kf_scheduler_destroy(kf_scheduler **ps)
{
    kf_scheduler *s = *ps;
    if (s == NULL)
        return;
    if (s->started)
        kf_scheduler_stop(s, 0);
    for (unsigned i = 0; s->threads && i < s->n_threads; i++)
        kf_db_destroy(&s->threads[i].db);
    free(s->threads);
    pthread_mutex_destroy(&s->mtx);
    pthread_cond_destroy(&s->cond);
    free(s);
    *ps = NULL;
}

/* ---- leases ---- */

struct lease_tx {
    const char *name;
    unsigned ttl;
    int held;
};

static int
lease_tx(kf_db *db, void *arg, const char **error_r)
{
    struct lease_tx *t = arg;
    kf_stmt *st;
    int rc;
    kf_pool *pool;

    /* Take the lease if free, expired or already ours; renew it if ours.
     * MariaDB evaluates the SET list left to right, so expires_at sees the
     * owner as just decided. */
    if ((rc = kf_db_stmt(db, "job.lease",
                         "INSERT INTO job_lease (name, owner, expires_at) "
                         "VALUES (?, ?, NOW(6) + INTERVAL ? SECOND) "
                         "ON DUPLICATE KEY UPDATE "
                         " owner = IF(owner = VALUES(owner) OR expires_at < NOW(6), "
                         "            VALUES(owner), owner),"
                         " expires_at = IF(owner = VALUES(owner), VALUES(expires_at), expires_at)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->name);
    kf_stmt_bind_cstr(st, 1, kf_instance_id());
    kf_stmt_bind_u64(st, 2, t->ttl);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_db_stmt(db, "job.lease_owner", "SELECT owner FROM job_lease WHERE name = ?", &st,
                         error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->name);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    t->held = 0;
    pool = kf_pool_create(256);
    if ((rc = kf_stmt_fetch(st, error_r)) == 1) {
        const char *owner = kf_stmt_col_str(st, 0, pool, NULL);
        t->held = owner != NULL && strcmp(owner, kf_instance_id()) == 0;
    }
    kf_pool_destroy(&pool);
    kf_stmt_done(st);
    return rc < 0 ? rc : KF_OK;
}

int
kf_job_lease(kf_db *db, const char *name, unsigned ttl_s, int *held_r, const char **error_r)
{
    struct lease_tx t = {.name = name, .ttl = ttl_s};
    int rc = kf_tx_run(db, lease_tx, &t, error_r);
    *held_r = rc == KF_OK && t.held;
    return rc;
}
