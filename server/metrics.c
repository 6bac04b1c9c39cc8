/*
 * metrics.c - Prometheus text exposition from lock-free counters.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/metrics.h"
#include "kefu/pool.h"

#define N_STATUS 500 /* 100..599 */
#define MAX_JOBS 64

const double kf_metrics_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                     0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0};
const unsigned kf_metrics_n_buckets = KF_ARRAY_LEN(kf_metrics_buckets);

struct route_m {
    const char *name;
    atomic_ulong status[N_STATUS];
    atomic_ulong bucket[KF_ARRAY_LEN(kf_metrics_buckets) + 1]; /* last = +Inf */
    atomic_ulong sum_us;
    atomic_ulong count;
};

static struct route_m *routes;
static unsigned *slot_of;  /* route index -> counter slot (routes sharing a name share one) */
static unsigned n_routes; /* routes[n_routes] is "unmatched" */
static atomic_long inflight, queue_depth, workers_busy, workers_total;
static struct {
    const char *name;
    atomic_ulong runs, failures;
} jobs[MAX_JOBS];
static atomic_uint n_jobs;

void
kf_metrics_init(const char *const *names, unsigned n)
{
    free(routes);
    free(slot_of);
    routes = kf_xcalloc(n + 1, sizeof(*routes));
    slot_of = kf_xcalloc(n + 1, sizeof(*slot_of));
    n_routes = n;
    for (unsigned i = 0; i < n; i++) {
        routes[i].name = names[i];
        slot_of[i] = i;
        /* One series per route name: GET and POST of one pattern are one route. */
        for (unsigned j = 0; j < i; j++)
            if (strcmp(names[j], names[i]) == 0) {
                slot_of[i] = slot_of[j];
                break;
            }
    }
    routes[n].name = "unmatched";
    slot_of[n] = n;
}

void
kf_metrics_shutdown(void)
{
    free(routes);
    free(slot_of);
    routes = NULL;
    slot_of = NULL;
    n_routes = 0;
}

void
kf_metrics_http(unsigned ri, int status, double seconds)
{
    if (routes == NULL)
        return;
    if (ri > n_routes)
        ri = n_routes;
    struct route_m *r = &routes[slot_of[ri]];
    if (status >= 100 && status < 600)
        atomic_fetch_add(&r->status[status - 100], 1);
    unsigned b = 0;
    while (b < kf_metrics_n_buckets && seconds > kf_metrics_buckets[b])
        b++;
    atomic_fetch_add(&r->bucket[b], 1);
    atomic_fetch_add(&r->sum_us, (unsigned long) (seconds * 1e6));
    atomic_fetch_add(&r->count, 1);
}

void
kf_metrics_inflight_add(int delta)
{
    atomic_fetch_add(&inflight, delta);
}

void
kf_metrics_queue_depth_set(long depth)
{
    atomic_store(&queue_depth, depth);
}

void
kf_metrics_workers(long busy_delta, long total)
{
    atomic_fetch_add(&workers_busy, busy_delta);
    if (total >= 0)
        atomic_store(&workers_total, total);
}

unsigned
kf_metrics_job_register(const char *name)
{
    unsigned n = atomic_load(&n_jobs);
    for (unsigned i = 0; i < n; i++)
        if (strcmp(jobs[i].name, name) == 0)
            return i;
    if (n == MAX_JOBS)
        return MAX_JOBS - 1;
    jobs[n].name = name;
    atomic_store(&n_jobs, n + 1);
    return n;
}

void
kf_metrics_job(unsigned slot, int failed)
{
    if (slot >= MAX_JOBS)
        return;
    atomic_fetch_add(&jobs[slot].runs, 1);
    if (failed)
        atomic_fetch_add(&jobs[slot].failures, 1);
}

/* Label values are our own route patterns; escape \ " and newline anyway. */
static void
label(kf_str *out, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\' || *p == '"')
            kf_str_append(out, "\\", 1);
        if (*p == '\n') {
            kf_str_puts(out, "\\n");
            continue;
        }
        kf_str_append(out, p, 1);
    }
}

void
kf_metrics_render(kf_str *out)
{
    kf_str_puts(out, "# HELP kefu_http_requests_total HTTP requests by route and status.\n"
                     "# TYPE kefu_http_requests_total counter\n");
    for (unsigned i = 0; routes && i <= n_routes; i++)
        for (int s = 0; s < N_STATUS && slot_of[i] == i; s++) {
            unsigned long v = atomic_load(&routes[i].status[s]);
            if (v == 0)
                continue;
            kf_str_puts(out, "kefu_http_requests_total{route=\"");
            label(out, routes[i].name);
            kf_str_printf(out, "\",status=\"%d\"} %lu\n", s + 100, v);
        }
    kf_str_puts(out, "# HELP kefu_http_request_duration_seconds Time from request to reply.\n"
                     "# TYPE kefu_http_request_duration_seconds histogram\n");
    for (unsigned i = 0; routes && i <= n_routes; i++) {
        unsigned long count = atomic_load(&routes[i].count), cum = 0;
        if (count == 0 || slot_of[i] != i)
            continue;
        for (unsigned b = 0; b <= kf_metrics_n_buckets; b++) {
            cum += atomic_load(&routes[i].bucket[b]);
            kf_str_puts(out, "kefu_http_request_duration_seconds_bucket{route=\"");
            label(out, routes[i].name);
            if (b < kf_metrics_n_buckets)
                kf_str_printf(out, "\",le=\"%g\"} %lu\n", kf_metrics_buckets[b], cum);
            else
                kf_str_printf(out, "\",le=\"+Inf\"} %lu\n", cum);
        }
        kf_str_puts(out, "kefu_http_request_duration_seconds_sum{route=\"");
        label(out, routes[i].name);
        kf_str_printf(out, "\"} %.6f\n", (double) atomic_load(&routes[i].sum_us) / 1e6);
        kf_str_puts(out, "kefu_http_request_duration_seconds_count{route=\"");
        label(out, routes[i].name);
        kf_str_printf(out, "\"} %lu\n", count);
    }
    kf_str_printf(out,
                  "# HELP kefu_http_inflight Requests received and not yet answered.\n"
                  "# TYPE kefu_http_inflight gauge\nkefu_http_inflight %ld\n"
                  "# HELP kefu_worker_queue_depth Calls waiting for a worker.\n"
                  "# TYPE kefu_worker_queue_depth gauge\nkefu_worker_queue_depth %ld\n"
                  "# HELP kefu_db_workers_busy Workers (each one DB connection) running a call.\n"
                  "# TYPE kefu_db_workers_busy gauge\nkefu_db_workers_busy %ld\n"
                  "# HELP kefu_db_workers_total Workers (DB connections) in the pool.\n"
                  "# TYPE kefu_db_workers_total gauge\nkefu_db_workers_total %ld\n",
                  atomic_load(&inflight), atomic_load(&queue_depth), atomic_load(&workers_busy),
                  atomic_load(&workers_total));
    unsigned nj = atomic_load(&n_jobs);
    kf_str_puts(out, "# HELP kefu_job_runs_total Background job ticks.\n"
                     "# TYPE kefu_job_runs_total counter\n");
    for (unsigned i = 0; i < nj; i++) {
        kf_str_puts(out, "kefu_job_runs_total{job=\"");
        label(out, jobs[i].name);
        kf_str_printf(out, "\"} %lu\n", atomic_load(&jobs[i].runs));
    }
    kf_str_puts(out, "# HELP kefu_job_failures_total Background job ticks that failed.\n"
                     "# TYPE kefu_job_failures_total counter\n");
    for (unsigned i = 0; i < nj; i++) {
        kf_str_puts(out, "kefu_job_failures_total{job=\"");
        label(out, jobs[i].name);
        kf_str_printf(out, "\"} %lu\n", atomic_load(&jobs[i].failures));
    }
}
