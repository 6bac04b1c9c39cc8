/*
 * kefu/job.h - background jobs on dedicated job threads.
 *
 * A job has a name and a period; the scheduler calls tick() on one of the
 * job threads with that thread's own database connection.  Work is claimed
 * in the database (FOR UPDATE SKIP LOCKED on work rows, or a lease row via
 * kf_job_lease()) so several kefud instances can share one database and
 * never do the same work twice.
 *
 * Threads:   tick() runs on a job thread; it may block (SMTP, HTTP) but should
 *            return within a few seconds and check kf_job_stopping().
 */
#ifndef KEFU_JOB_H
#define KEFU_JOB_H

#include "kefu/types.h"

struct kf_job {
    const char *name;    /* "outbox", "imap:support" ... */
    unsigned period_ms;  /* how often to look for work */
    unsigned batch;      /* claim at most this many rows per tick */
    int (*tick)(kf_job *job, kf_db *db, const char **error_r);
    void *arg;
    /* private */
    unsigned _metrics_slot;
};

kf_scheduler *kf_scheduler_create(const kf_config *cfg);
/** Register a job before kf_scheduler_start(); the job struct must outlive the scheduler. */
void kf_scheduler_add(kf_scheduler *s, kf_job *job);
int kf_scheduler_start(kf_scheduler *s);
/** Ask every job thread to stop after its current tick; wait up to deadline_ms; then
 *  release the job_lease rows this instance holds. */
void kf_scheduler_stop(kf_scheduler *s, unsigned deadline_ms);
void kf_scheduler_destroy(kf_scheduler **s);
/** True once stopping was requested (long ticks poll this). */
int kf_job_stopping(const kf_job *job);

/*
 * Take or renew the lease named name for ttl_s seconds for this instance
 * (job_lease row).  *held_r = 1 when this instance holds it afterwards.
 * Runs in its own short transaction.
 */
int kf_job_lease(kf_db *db, const char *name, unsigned ttl_s, int *held_r, const char **error_r);
/** This instance's id (host:pid:random), used as the lease owner. */
const char *kf_instance_id(void);

#endif /* KEFU_JOB_H */
