/*
 * h_health.c - liveness, readiness, metrics, and the debug routes tests use.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kefu/db.h"
#include "kefu/http.h"
#include "kefu/metrics.h"
#include "kefu/migrate.h"
#include "kefu/pool.h"
#include "kefu/server.h"

/* GET /healthz - the process is alive and its loop answers; no database. */
static int
h_healthz(kf_call *c, kf_reply *out)
{
    static const char body[] = "{\"status\":\"ok\"}";
    return kf_reply_text(out, c, 200, "application/json", body, sizeof(body) - 1);
}

/* GET /metrics - Prometheus text, rendered on the I/O thread from atomics. */
static int
h_metrics(kf_call *c, kf_reply *out)
{
    kf_str s = KF_STR_INIT;
    kf_metrics_render(&s);
    kf_reply_text(out, c, 200, "text/plain; version=0.0.4; charset=utf-8", s.ptr, s.len);
    kf_str_free(&s);
    return 0;
}

/*
 * GET /readyz - this instance can serve: the database answers, every
 * migration this kefud knows is applied, and it is not shutting down.
 * A stale connection (the server restarted) is retried once at once.
 */
static int
h_readyz(kf_call *c, kf_reply *out)
{
    const kf_migration_set *set = kf_server_migrations();
    const char *error = NULL;
    int rc;

    if (kf_server_stopping())
        return kf_reply_problem(out, c, 503, "not-ready", "The server is shutting down.", NULL);
    for (int attempt = 0; attempt < 2; attempt++) {
        error = NULL;
        rc = set ? kf_migrate_status(c->db, set, &error) : KF_ERR;
        if (rc == KF_OK || kf_db_connected(c->db))
            break;
    }
    if (rc != KF_OK) {
        char *detail = kf_pool_printf(c->pool, "Not ready: %s.",
                                      rc == KF_ECONFLICT ? error : "the database is unreachable");
        kf_reply_header(out, c, "Retry-After", "5");
        return kf_reply_problem(out, c, 503, "not-ready", detail, NULL);
    }
    return kf_reply_json(out, c, 200, json_pack("{s:s, s:I}", "status", "ready", "migrations",
                                                (json_int_t) set->n));
}

/* GET / - there is no console yet: send people to the support form. */
static int
h_root(kf_call *c, kf_reply *out)
{
    static const char body[] = "See /support/new\n";
    kf_reply_header(out, c, "Location", "/support/new");
    return kf_reply_text(out, c, 302, "text/plain; charset=utf-8", body, sizeof(body) - 1);
}

const kf_route kf_health_routes[] = {
    {KF_GET, "/", KF_AUTH_PUBLIC, 0, h_root, KF_ROUTE_INLINE, NULL},
    {KF_GET, "/healthz", KF_AUTH_PUBLIC, 0, h_healthz, KF_ROUTE_INLINE, NULL},
    {KF_GET, "/readyz", KF_AUTH_PUBLIC, 0, h_readyz, 0, NULL},
    {KF_GET, "/metrics", KF_AUTH_PUBLIC, 0, h_metrics, KF_ROUTE_INLINE, NULL},
    {0, NULL, 0, 0, NULL, 0, NULL},
};

/* GET /debug/sleep?ms=N - a slow database call (shutdown tests). */
static int
h_debug_sleep(kf_call *c, kf_reply *out)
{
    const char *ms = kf_call_query(c, "ms");
    char *end = NULL;
    long v = ms ? strtol(ms, &end, 10) : -1;
    const char *error = NULL;
    kf_stmt *st;

    if (ms == NULL || *end != '\0' || v < 0 || v > 60000) {
        json_t *errors = NULL;
        kf_problem_add_error(&errors, "ms", "a whole number of milliseconds 0..60000");
        return kf_reply_problem(out, c, 422, "invalid-parameter", "Bad query parameter.", errors);
    }
    if (kf_db_stmt(c->db, "debug.sleep", "SELECT SLEEP(?)", &st, &error) != KF_OK ||
        (kf_stmt_bind_double(st, 0, (double) v / 1000.0), kf_stmt_exec(st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_stmt_done(st);
    return kf_reply_json(out, c, 200, json_pack("{s:I}", "slept_ms", (json_int_t) v));
}

/* POST /debug/echo - body limit tests. */
static int
h_debug_echo(kf_call *c, kf_reply *out)
{
    return kf_reply_json(out, c, 200, json_pack("{s:I}", "bytes", (json_int_t) c->body_len));
}

const kf_route kf_debug_routes[] = {
    {KF_GET, "/debug/sleep", KF_AUTH_PUBLIC, 0, h_debug_sleep, KF_ROUTE_DEBUG, NULL},
    {KF_POST, "/debug/echo", KF_AUTH_PUBLIC, 1024, h_debug_echo, KF_ROUTE_DEBUG | KF_ROUTE_INLINE,
     NULL},
    {0, NULL, 0, 0, NULL, 0, NULL},
};
