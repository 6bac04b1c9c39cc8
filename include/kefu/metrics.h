/*
 * kefu/metrics.h - process-wide counters rendered in Prometheus text format.
 *
 * Threads:   any; counters are atomics, registration happens at start-up
 *            before threads run.
 */
#ifndef KEFU_METRICS_H
#define KEFU_METRICS_H

#include <stddef.h>
#include "kefu/types.h"
#include "kefu/pool.h"

/** Size the per-route tables; names[i] labels route i.  Call once at start-up. */
void kf_metrics_init(const char *const *route_names, unsigned n_routes);
void kf_metrics_shutdown(void);
/** One finished HTTP request; route_index == n_routes means "unmatched". */
void kf_metrics_http(unsigned route_index, int status, double seconds);
void kf_metrics_inflight_add(int delta);
void kf_metrics_queue_depth_set(long depth);
void kf_metrics_workers(long busy_delta, long total);
/** Register a job name; returns its slot for kf_metrics_job(). */
unsigned kf_metrics_job_register(const char *name);
void kf_metrics_job(unsigned slot, int failed);
/** Append the whole exposition to out. */
void kf_metrics_render(kf_str *out);

/** Histogram bucket upper bounds in seconds (tests). */
extern const double kf_metrics_buckets[];
extern const unsigned kf_metrics_n_buckets;

#endif /* KEFU_METRICS_H */
