/*
 * server.c - wires kefud together: listening socket, router, worker pool,
 * I/O loops and the job scheduler; and the graceful stop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/thread.h>

#include "http_internal.h"
#include "kefu/auth.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/job.h"
#include "kefu/log.h"
#include "kefu/metrics.h"
#include "kefu/pool.h"
#include "kefu/server.h"
#include "kefu/email.h"
#include "kefu/wechat.h"

struct kf_server {
    const kf_config *cfg;
    kf_router *router;
    kf_workers *workers;
    kf_loop **loops;
    unsigned n_loops;
    kf_scheduler *sched;
    int listen_fd;
    char addr[96];
    atomic_long inflight;
    kf_job jobs[2];
};

const kf_route *const kf_all_route_tables[] = {
    kf_health_routes, kf_debug_routes,    kf_auth_routes,  kf_ticket_routes,  kf_customer_routes,
    kf_admin_routes,  kf_attachment_routes, kf_event_routes, kf_openapi_routes, kf_outbox_routes,
    kf_wechat_routes, kf_webform_routes, kf_portal_routes, kf_email_routes,
    NULL,
};

static atomic_int server_stopping;
static const void *server_migrations;

int
kf_server_stopping(void)
{
    return atomic_load(&server_stopping);
}

const void *
kf_server_migrations(void)
{
    return server_migrations;
}

const kf_config *
kf_server_config(const kf_server *srv)
{
    return srv->cfg;
}

const kf_router *
kf_server_router(const kf_server *srv)
{
    return srv->router;
}

kf_workers *
kf_server_workers(const kf_server *srv)
{
    return srv->workers;
}

void
kf_server_inflight(kf_server *srv, int delta)
{
    atomic_fetch_add(&srv->inflight, delta);
    kf_metrics_inflight_add(delta);
}

const char *
kf_server_addr(const kf_server *srv)
{
    return srv->addr;
}

kf_scheduler *
kf_server_scheduler(kf_server *srv)
{
    return srv->sched;
}

/* Bind host:port; with port 0 the kernel picks, and *bound gets the result. */
static int
listen_on(const char *hostport, int reuseport, char *bound, size_t boundsz, char *err,
          size_t errsz)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    size_t hl = (size_t) (colon - hostport);
    struct addrinfo hints, *res = NULL;
    int fd = -1, one = 1, e;

    if (hl >= sizeof(host))
        hl = sizeof(host) - 1;
    memcpy(host, hostport, hl);
    host[hl] = '\0';
    if (host[0] == '[') { /* [::1] */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((e = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res)) != 0) {
        snprintf(err, errsz, "listen %s: %s", hostport, gai_strerror(e));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0)
        goto fail;
    freeaddrinfo(res);

    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char h[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    getsockname(fd, (struct sockaddr *) &ss, &sl);
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *) &ss;
        inet_ntop(AF_INET, &in->sin_addr, h, sizeof(h));
        port = ntohs(in->sin_port);
        snprintf(bound, boundsz, "%s:%u", h, port);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, h, sizeof(h));
        port = ntohs(in6->sin6_port);
        snprintf(bound, boundsz, "[%s]:%u", h, port);
    }
    return fd;
fail:
    snprintf(err, errsz, "listen %s: %s", hostport, strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return -1;
}

/* ---- built-in jobs ---- */

/* Every instance says it is alive; `kefu_instance` shows who runs. */
static int
heartbeat_tick(kf_job *job, kf_db *db, const char **error_r)
{
    kf_stmt *st;
    int rc;
    char host[64] = "";
    (void) job;
    gethostname(host, sizeof(host) - 1);
    if ((rc = kf_db_stmt(db, "instance.heartbeat",
                         "INSERT INTO kefu_instance (id, host, pid, version, started_at, "
                         "last_seen_at) VALUES (?, ?, ?, ?, NOW(6), NOW(6)) "
                         "ON DUPLICATE KEY UPDATE last_seen_at = NOW(6)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, kf_instance_id());
    kf_stmt_bind_cstr(st, 1, host);
    kf_stmt_bind_u64(st, 2, (uint64_t) getpid());
    kf_stmt_bind_cstr(st, 3, KEFU_VERSION);
    return kf_stmt_exec(st, error_r);
}

/* One instance at a time (lease) forgets instances not seen for a day. */
/*
 * Rows nobody needs any more, at most 1000 per table per run (short
 * statements, short locks); the parameter is a number of seconds.
 */
static const struct purge {
    const char *name, *sql;
} purges[] = {
    {"purge.instances", "DELETE FROM kefu_instance WHERE last_seen_at < NOW(6) - INTERVAL ? "
                        "SECOND LIMIT 1000"},
    /* portal links idle past portal_token_idle (or revoked a day ago): they no longer open */
    {"purge.portal_tokens", "DELETE FROM portal_token WHERE last_used_at < NOW(6) - INTERVAL ? "
                            "SECOND OR revoked_at < NOW(6) - INTERVAL 1 DAY LIMIT 1000"},
    /* one-time sign-in links a day past their expiry */
    {"purge.portal_magic", "DELETE FROM portal_magic WHERE expires_at < NOW(6) - INTERVAL ? "
                           "SECOND LIMIT 1000"},
    /* rate-limit windows long over */
    {"purge.webform_rate", "DELETE FROM webform_rate WHERE window_start < NOW(6) - INTERVAL ? "
                           "SECOND LIMIT 1000"},
    /* the e-mail loop brake counts per day: yesterday's is the last one read */
    {"purge.auto_reply", "DELETE FROM email_auto_reply WHERE day < CURRENT_DATE - INTERVAL ? "
                         "SECOND LIMIT 1000"},
};

static int
maintenance_tick(kf_job *job, kf_db *db, const char **error_r)
{
    const kf_config *cfg = job->arg;
    int held = 0, rc;
    kf_stmt *st;
    if ((rc = kf_job_lease(db, "maintenance", 120, &held, error_r)) != KF_OK || !held)
        return rc;
    /* Ended sessions and stale login-throttle rows. */
    if ((rc = kf_auth_purge(db, cfg, error_r)) != KF_OK)
        return rc;
    const uint64_t after_s[KF_ARRAY_LEN(purges)] = {
        86400, cfg->portal_token_idle, 86400, 2 * (uint64_t) cfg->webform_rate_window, 2 * 86400,
    };
    for (size_t i = 0; i < KF_ARRAY_LEN(purges); i++) {
        if ((rc = kf_db_stmt(db, purges[i].name, purges[i].sql, &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, after_s[i]);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        if (kf_stmt_affected(st) > 0)
            kf_log(KF_LOG_INFO, "maintenance", "event=purged what=%s rows=%" PRIu64,
                   purges[i].name + 6, kf_stmt_affected(st));
    }
    return KF_OK;
}

static pthread_once_t evthread_once = PTHREAD_ONCE_INIT;

static void
evthread_setup(void)
{
    /* Must run before any event_base exists: event_active() is called off-loop. */
    if (evthread_use_pthreads() != 0)
        kf_fatal("module=server msg=\"evthread_use_pthreads failed\"");
}

kf_server *
kf_server_create(const kf_config *cfg, const void *migrations, char *err, size_t errsz)
{
    pthread_once(&evthread_once, evthread_setup);
    kf_server *srv = kf_xcalloc(1, sizeof(*srv));
    srv->cfg = cfg;
    srv->listen_fd = -1;
    server_migrations = migrations;
    atomic_store(&server_stopping, 0);

    srv->router = kf_router_create();
    for (const kf_route *const *t = kf_all_route_tables; *t != NULL; t++)
        kf_router_add(srv->router, *t, cfg->debug_routes);
    kf_authenticate = kf_auth_authenticate;
    kf_after_handler = kf_auth_after_handler;

    unsigned n = kf_router_count(srv->router);
    const char **names = kf_xcalloc(n + 1, sizeof(*names));
    for (unsigned i = 0; i < n; i++)
        names[i] = kf_router_get(srv->router, i)->name;
    kf_metrics_init(names, n);
    free(names);

    srv->listen_fd = listen_on(cfg->listen, cfg->reuseport, srv->addr, sizeof(srv->addr), err, errsz);
    if (srv->listen_fd < 0) {
        kf_server_destroy(&srv);
        return NULL;
    }
    srv->workers = kf_workers_create(cfg, cfg->db_workers, cfg->work_queue_max);
    srv->sched = kf_scheduler_create(cfg);
    srv->jobs[0] = (kf_job){.name = "instance-heartbeat", .period_ms = 10000, .tick = heartbeat_tick};
    srv->jobs[1] = (kf_job){.name = "maintenance", .period_ms = 60000, .tick = maintenance_tick,
                            .arg = (void *) cfg};
    kf_scheduler_add(srv->sched, &srv->jobs[0]);
    kf_scheduler_add(srv->sched, &srv->jobs[1]);
    kf_wechat_init(srv->sched, cfg); /* the "wechat" adapter, token and media jobs */
    if (kf_email_init(srv->sched, cfg, err, errsz) != KF_OK) { /* "email" adapter, LMTP */
        kf_server_destroy(&srv);
        return NULL;
    }
    kf_outbox_jobs_add(srv->sched, cfg); /* a lane per adapter registered above */

    srv->n_loops = cfg->io_threads;
    srv->loops = kf_xcalloc(srv->n_loops, sizeof(*srv->loops));
    for (unsigned i = 0; i < srv->n_loops; i++) {
        int fd;
        if (cfg->reuseport && i > 0) {
            char again[96];
            fd = listen_on(srv->addr, 1, again, sizeof(again), err, errsz);
        } else {
            fd = dup(srv->listen_fd);
        }
        if (fd < 0 || (srv->loops[i] = kf_loop_create(srv, i, fd, err, errsz)) == NULL) {
            if (fd < 0 && err[0] == '\0')
                snprintf(err, errsz, "dup: %s", strerror(errno));
            kf_server_destroy(&srv);
            return NULL;
        }
    }
    return srv;
}

int
kf_server_start(kf_server *srv, char *err, size_t errsz)
{
    if (kf_workers_start(srv->workers, err, errsz) != KF_OK)
        return KF_ERR;
    if (kf_scheduler_start(srv->sched) != KF_OK) {
        snprintf(err, errsz, "cannot start job threads");
        return KF_ERR;
    }
    for (unsigned i = 0; i < srv->n_loops; i++)
        if (kf_loop_start(srv->loops[i]) != KF_OK) {
            snprintf(err, errsz, "cannot start I/O thread");
            return KF_ERR;
        }
    /* The loops hold their own dups; the original is no longer needed. */
    close(srv->listen_fd);
    srv->listen_fd = -1;
    return KF_OK;
}

void
kf_server_stop(kf_server *srv)
{
    double deadline = kf_now_mono() + srv->cfg->shutdown_timeout;
    struct timespec tick = {0, 20 * 1000000L};

    /* 1. Stop accepting; /readyz now answers 503 so balancers drain us. */
    atomic_store(&server_stopping, 1);
    kf_email_shutdown(); /* LMTP: sessions end; an unfinished DATA is the MTA's to retry */
    for (unsigned i = 0; i < srv->n_loops; i++)
        kf_loop_stop_accepting(srv->loops[i]);
    kf_log(KF_LOG_INFO, "server", "event=stopping inflight=%ld timeout_s=%u",
           atomic_load(&srv->inflight), srv->cfg->shutdown_timeout);

    /* 2. Let in-flight requests finish, up to the deadline. */
    while (atomic_load(&srv->inflight) > 0 && kf_now_mono() < deadline)
        nanosleep(&tick, NULL);
    long left = atomic_load(&srv->inflight);
    if (left > 0)
        kf_log(KF_LOG_WARN, "server", "event=shutdown-deadline inflight=%ld", left);

    /* 3. Jobs finish their current tick; workers drain (or refuse) the queue. */
    kf_scheduler_stop(srv->sched, 0);
    kf_workers_stop(srv->workers, left > 0);

    /* 4. Send what the workers finished, close connections, end the loops. */
    for (unsigned i = 0; i < srv->n_loops; i++)
        kf_loop_exit(srv->loops[i]);
}

void
kf_server_destroy(kf_server **psrv)
{
    kf_server *srv = *psrv;
    if (srv == NULL)
        return;
    for (unsigned i = 0; srv->loops && i < srv->n_loops; i++)
        kf_loop_destroy(&srv->loops[i]);
    free(srv->loops);
    kf_workers_destroy(&srv->workers);
    kf_email_shutdown();
    kf_scheduler_destroy(&srv->sched);
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    kf_router_destroy(&srv->router);
    kf_metrics_shutdown();
    free(srv);
    *psrv = NULL;
}
