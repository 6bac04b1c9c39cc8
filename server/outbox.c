/*
 * outbox.c - the transactional outbox: rows added inside the caller's
 * transaction (kf_outbox_add), and the sender job that delivers them.
 *
 * The sender works like Postfix's queue manager, in three steps so the
 * database never waits on the network:
 *
 *   claim   (short transaction) rows whose lease ran out (an instance died
 *           while sending) become due again; then due rows are taken with
 *           FOR UPDATE SKIP LOCKED and marked sending, leased to this
 *           instance for outbox_lease seconds, attempts + 1.  A row whose
 *           channel has no adapter stays queued with last_error and a later
 *           next_attempt_at, its attempts untouched.
 *   deliver (no transaction) the channel adapter's deliver(), with a
 *           deadline that ends well inside the lease.
 *   settle  (short transaction, only while the lease is still ours) sent;
 *           or queued again at now + backoff; or dead (rejected, or out of
 *           attempts) with an outbox.dead event on the ticket.
 *
 * A crash at any point loses nothing: a claimed row is either settled or
 * its lease runs out and the next claim makes it due again (the attempt it
 * was on still counts, so a row that keeps killing its sender is
 * dead-lettered in the end).  A row is delivered twice only if the peer
 * accepted it and the instance died before settling.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "kefu/channel.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/event.h"
#include "kefu/job.h"
#include "kefu/log.h"
#include "kefu/outbox.h"
#include "kefu/pool.h"
#include "kefu/server.h"

#define DELIVER_MAX_S 30.0  /* longest a single deliver() may take */
#define LEASE_MARGIN_S 2.0  /* settle at least this long before the lease ends */
#define RECLAIM_MAX 100     /* expired leases taken back per tick */
#define ERROR_MAX 1000      /* last_error / peer_reply column size */

int
kf_outbox_add(kf_db *db, const kf_outbox_new *row, uint64_t *id_r, const char **error_r)
{
    kf_stmt *st;
    int rc;
    char *json = row->payload ? json_dumps(row->payload, JSON_COMPACT) : NULL;

    /* INSERT IGNORE on the unique dedupe key: adding twice is a no-op. */
    if ((rc = kf_db_stmt(db, "outbox.add",
                         "INSERT IGNORE INTO outbox (kind, channel, channel_account, target, "
                         "payload, dedupe_key, ticket_id, message_id, max_attempts) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         &st, error_r)) != KF_OK) {
        free(json);
        return rc;
    }
    kf_stmt_bind_cstr(st, 0, row->kind);
    kf_stmt_bind_cstr(st, 1, row->channel);
    kf_stmt_bind_cstr(st, 2, row->channel_account ? row->channel_account : "");
    kf_stmt_bind_cstr(st, 3, row->target ? row->target : "");
    kf_stmt_bind_cstr(st, 4, json ? json : "{}");
    kf_stmt_bind_cstr(st, 5, row->dedupe_key);
    if (row->ticket_id)
        kf_stmt_bind_u64(st, 6, row->ticket_id);
    else
        kf_stmt_bind_null(st, 6);
    if (row->message_id)
        kf_stmt_bind_u64(st, 7, row->message_id);
    else
        kf_stmt_bind_null(st, 7);
    kf_stmt_bind_u64(st, 8, row->max_attempts ? row->max_attempts : 8);
    free(json);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if (id_r == NULL)
        return KF_OK;
    if (kf_stmt_affected(st) == 1) {
        *id_r = kf_stmt_insert_id(st);
        return KF_OK;
    }
    if ((rc = kf_db_stmt(db, "outbox.by_key", "SELECT id FROM outbox WHERE dedupe_key = ?", &st,
                         error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, row->dedupe_key);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    rc = kf_stmt_fetch(st, error_r);
    *id_r = rc == 1 ? kf_stmt_col_u64(st, 0) : 0;
    kf_stmt_done(st);
    return rc < 0 ? rc : KF_OK;
}

/* ---- backoff ---- */

static double
mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* seconds * (0.8 .. 1.2), in microseconds, at least 1 ms. */
static uint64_t
jittered_us(double seconds)
{
    double f = 0.8 + 0.4 * (double) randombytes_uniform(100001) / 100000.0;
    double us = seconds * f * 1e6;
    return us < 1000.0 ? 1000 : (uint64_t) us;
}

/* The wait after failed attempt number `attempt` (1 = the first try). */
static uint64_t
retry_delay_us(const kf_config *cfg, unsigned attempt)
{
    unsigned shift = attempt > 1 ? attempt - 1 : 0;
    double s = (double) cfg->outbox_backoff_base * (double) (1ull << (shift > 30 ? 30 : shift));
    if (s > (double) cfg->outbox_backoff_max)
        s = (double) cfg->outbox_backoff_max;
    return jittered_us(s);
}

/* Text for a VARCHAR(1000) column: printable, valid UTF-8, at most 1000 bytes. */
static char *
column_text(kf_pool *pool, const char *s, size_t len)
{
    char *buf = kf_pool_alloc(pool, ERROR_MAX + 1);
    return kf_printable(buf, ERROR_MAX + 1, s ? s : "", s ? len : 0);
}

/* ---- claim ---- */

typedef struct claimed {
    uint64_t id, ticket_id, message_id;
    const char *kind, *channel, *channel_account, *target, *payload;
    unsigned attempts, max_attempts;
    uint64_t age_s;
} claimed;

struct claim_tx {
    const kf_config *cfg;
    kf_pool *pool;
    unsigned batch;
    const char *channel; /* this lane's channel, or NULL: every channel not in `others` */
    const char *others;  /* comma-separated channels that have lanes of their own */
    claimed *rows; /* out: rows now leased to us */
    size_t n;
    unsigned reclaimed, parked;
};

/* Rows whose lease ran out (their instance died or hung): queued again, due now. */
static int
reclaim_expired(kf_db *db, struct claim_tx *t, const char **error_r)
{
    kf_stmt *st, *up;
    uint64_t expired[RECLAIM_MAX];
    size_t n_expired = 0;
    int rc;

    if ((rc = kf_db_stmt(db, "outbox.expired",
                         "SELECT id FROM outbox WHERE status = 'sending' AND lease_until < NOW(6) "
                         "LIMIT 100 FOR UPDATE SKIP LOCKED",
                         &st, error_r)) != KF_OK ||
        (rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    while ((rc = kf_stmt_fetch(st, error_r)) == 1)
        if (n_expired < RECLAIM_MAX)
            expired[n_expired++] = kf_stmt_col_u64(st, 0);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n_expired; i++) {
        /* SET runs left to right: last_error still sees the old owner. */
        if ((rc = kf_db_stmt(db, "outbox.reclaim",
                             "UPDATE outbox SET last_error = LEFT(CONCAT('the lease of ', "
                             " COALESCE(lease_owner, '?'), ' ran out before the delivery was "
                             "settled'), 1000), status = 'queued', lease_owner = NULL, "
                             " lease_until = NULL, next_attempt_at = NOW(6) "
                             "WHERE id = ? AND status = 'sending'",
                             &up, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(up, 0, expired[i]);
        if ((rc = kf_stmt_exec(up, error_r)) != KF_OK)
            return rc;
        t->reclaimed += (unsigned) kf_stmt_affected(up);
    }

    return KF_OK;
}

static int
claim_tx(kf_db *db, void *arg, const char **error_r)
{
    struct claim_tx *t = arg;
    kf_stmt *st, *up;
    claimed *due;
    size_t n_due = 0;
    int rc;

    t->n = 0;
    t->reclaimed = t->parked = 0;

    /* 1. Leases that ran out: their instance died or hung.  Due again now, for
     * their own lane; one lane (the rest) looks, not every lane. */
    if (t->channel == NULL && (rc = reclaim_expired(db, t, error_r)) != KF_OK)
        return rc;

    /* 2. This lane's due rows, oldest due first; rows other instances hold are skipped. */
#define CLAIM_COLS                                                                                 \
    "SELECT id, kind, channel, channel_account, target, payload, COALESCE(ticket_id, 0), "      \
    "COALESCE(message_id, 0), attempts, max_attempts, "                                         \
    "TIMESTAMPDIFF(SECOND, created_at, NOW(6)) FROM outbox WHERE status = 'queued' "
    if (t->channel != NULL)
        rc = kf_db_stmt(db, "outbox.claim_lane",
                        CLAIM_COLS "AND channel = ? AND next_attempt_at <= NOW(6) "
                                   "ORDER BY next_attempt_at LIMIT ? FOR UPDATE SKIP LOCKED",
                        &st, error_r);
    else
        rc = kf_db_stmt(db, "outbox.claim_rest",
                        CLAIM_COLS "AND FIND_IN_SET(channel, ?) = 0 AND next_attempt_at <= NOW(6) "
                                   "ORDER BY next_attempt_at LIMIT ? FOR UPDATE SKIP LOCKED",
                        &st, error_r);
#undef CLAIM_COLS
    if (rc != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->channel != NULL ? t->channel : t->others);
    kf_stmt_bind_u64(st, 1, t->batch);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    due = kf_pool_alloc(t->pool, t->batch * sizeof(*due));
    while ((rc = kf_stmt_fetch(st, error_r)) == 1) {
        claimed *r = &due[n_due++];
        r->id = kf_stmt_col_u64(st, 0);
        r->kind = kf_stmt_col_str(st, 1, t->pool, NULL);
        r->channel = kf_stmt_col_str(st, 2, t->pool, NULL);
        r->channel_account = kf_stmt_col_str(st, 3, t->pool, NULL);
        r->target = kf_stmt_col_str(st, 4, t->pool, NULL);
        r->payload = kf_stmt_col_str(st, 5, t->pool, NULL);
        r->ticket_id = kf_stmt_col_u64(st, 6);
        r->message_id = kf_stmt_col_u64(st, 7);
        r->attempts = (unsigned) kf_stmt_col_u64(st, 8);
        r->max_attempts = (unsigned) kf_stmt_col_u64(st, 9);
        r->age_s = kf_stmt_col_u64(st, 10);
        if (n_due == t->batch)
            break;
    }
    kf_stmt_done(st);
    if (rc < 0)
        return rc;

    /* 3. Lease the rows we can deliver; park the ones no adapter can. */
    t->rows = kf_pool_alloc(t->pool, (n_due ? n_due : 1) * sizeof(*t->rows));
    for (size_t i = 0; i < n_due; i++) {
        claimed *r = &due[i];
        if (kf_channel_find(r->channel) == NULL) {
            /* Not an attempt: wait as long as the row has waited so far
             * (so the checks thin out), between base and max. */
            double wait = (double) r->age_s;
            if (wait < t->cfg->outbox_backoff_base)
                wait = t->cfg->outbox_backoff_base;
            if (wait > t->cfg->outbox_backoff_max)
                wait = t->cfg->outbox_backoff_max;
            char *why = kf_pool_printf(t->pool, "no adapter for channel %s", r->channel);
            if ((rc = kf_db_stmt(db, "outbox.park",
                                 "UPDATE outbox SET next_attempt_at = NOW(6) + INTERVAL ? "
                                 "MICROSECOND, last_error = ? WHERE id = ?",
                                 &up, error_r)) != KF_OK)
                return rc;
            kf_stmt_bind_u64(up, 0, jittered_us(wait));
            kf_stmt_bind_cstr(up, 1, column_text(t->pool, why, strlen(why)));
            kf_stmt_bind_u64(up, 2, r->id);
            if ((rc = kf_stmt_exec(up, error_r)) != KF_OK)
                return rc;
            t->parked++;
            continue;
        }
        if ((rc = kf_db_stmt(db, "outbox.lease",
                             "UPDATE outbox SET status = 'sending', lease_owner = ?, "
                             " lease_until = NOW(6) + INTERVAL ? SECOND, attempts = attempts + 1 "
                             "WHERE id = ?",
                             &up, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_cstr(up, 0, kf_instance_id());
        kf_stmt_bind_u64(up, 1, t->cfg->outbox_lease);
        kf_stmt_bind_u64(up, 2, r->id);
        if ((rc = kf_stmt_exec(up, error_r)) != KF_OK)
            return rc;
        t->rows[t->n] = *r;
        t->rows[t->n].attempts++;
        t->n++;
    }
    return KF_OK;
}

/* ---- settle ---- */

enum settle_kind { SETTLE_SENT, SETTLE_RETRY, SETTLE_DEAD, SETTLE_RELEASE };

struct settle_tx {
    const claimed *row;
    int kind;             /* enum settle_kind */
    const char *last_error, *peer_reply;
    const char *dead_reason;
    uint64_t delay_us;
    int settled;          /* out: 1 when the row was still ours */
};

static int
settle_tx(kf_db *db, void *arg, const char **error_r)
{
    struct settle_tx *t = arg;
    const claimed *r = t->row;
    kf_stmt *st;
    int rc;

    t->settled = 0;
    switch (t->kind) {
    case SETTLE_SENT:
        rc = kf_db_stmt(db, "outbox.sent",
                        "UPDATE outbox SET status = 'sent', sent_at = NOW(6), last_error = NULL, "
                        " peer_reply = ?, lease_owner = NULL, lease_until = NULL "
                        "WHERE id = ? AND status = 'sending' AND lease_owner = ?",
                        &st, error_r);
        if (rc != KF_OK)
            return rc;
        kf_stmt_bind_cstr(st, 0, t->peer_reply);
        kf_stmt_bind_u64(st, 1, r->id);
        kf_stmt_bind_cstr(st, 2, kf_instance_id());
        break;
    case SETTLE_RETRY:
        rc = kf_db_stmt(db, "outbox.retry",
                        "UPDATE outbox SET status = 'queued', "
                        " next_attempt_at = NOW(6) + INTERVAL ? MICROSECOND, last_error = ?, "
                        " peer_reply = ?, lease_owner = NULL, lease_until = NULL "
                        "WHERE id = ? AND status = 'sending' AND lease_owner = ?",
                        &st, error_r);
        if (rc != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, t->delay_us);
        kf_stmt_bind_cstr(st, 1, t->last_error);
        kf_stmt_bind_cstr(st, 2, t->peer_reply);
        kf_stmt_bind_u64(st, 3, r->id);
        kf_stmt_bind_cstr(st, 4, kf_instance_id());
        break;
    case SETTLE_DEAD:
        rc = kf_db_stmt(db, "outbox.dead",
                        "UPDATE outbox SET status = 'dead', last_error = ?, peer_reply = ?, "
                        " lease_owner = NULL, lease_until = NULL "
                        "WHERE id = ? AND status = 'sending' AND lease_owner = ?",
                        &st, error_r);
        if (rc != KF_OK)
            return rc;
        kf_stmt_bind_cstr(st, 0, t->last_error);
        kf_stmt_bind_cstr(st, 1, t->peer_reply);
        kf_stmt_bind_u64(st, 2, r->id);
        kf_stmt_bind_cstr(st, 3, kf_instance_id());
        break;
    default: /* SETTLE_RELEASE: not tried after all; the attempt does not count */
        rc = kf_db_stmt(db, "outbox.release",
                        "UPDATE outbox SET status = 'queued', next_attempt_at = NOW(6), "
                        " attempts = IF(attempts > 0, attempts - 1, 0), lease_owner = NULL, "
                        " lease_until = NULL "
                        "WHERE id = ? AND status = 'sending' AND lease_owner = ?",
                        &st, error_r);
        if (rc != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, r->id);
        kf_stmt_bind_cstr(st, 1, kf_instance_id());
        break;
    }
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    t->settled = kf_stmt_affected(st) == 1;
    if (t->settled && t->kind == SETTLE_DEAD) {
        json_t *data = json_pack("{s:I, s:s, s:s, s:i, s:s, s:s?}", "outbox_id", (json_int_t) r->id,
                                 "kind", r->kind, "channel", r->channel, "attempts",
                                 (int) r->attempts, "reason", t->dead_reason, "last_error",
                                 t->last_error);
        rc = kf_event_add(db, r->ticket_id, "outbox.dead", KF_ACTOR_SYSTEM, 0, data, NULL,
                          error_r);
        json_decref(data);
        if (rc != KF_OK)
            return rc;
    }
    return KF_OK;
}

/* ---- the job ---- */

static void
settle(kf_db *db, const claimed *r, struct settle_tx *t, double dur)
{
    static const char *const names[] = {"sent", "retry", "dead", "released"};
    const char *error = NULL;
    t->row = r;
    int rc = kf_tx_run(db, settle_tx, t, &error);
    char shown[200];
    kf_printable(shown, sizeof(shown), t->last_error ? t->last_error : "-",
                 t->last_error ? strlen(t->last_error) : 1);
    if (rc != KF_OK) {
        /* The lease runs out and the row comes back: nothing is lost. */
        kf_log(KF_LOG_WARN, "outbox", "event=settle-failed id=%llu reason=\"%s\"",
               (unsigned long long) r->id, error ? error : "-");
    } else if (!t->settled) {
        kf_log(KF_LOG_WARN, "outbox",
               "event=lease-lost id=%llu channel=%s attempt=%u outcome=%s dur_ms=%.0f",
               (unsigned long long) r->id, r->channel, r->attempts, names[t->kind], dur * 1000);
    } else {
        kf_log(t->kind == SETTLE_DEAD ? KF_LOG_WARN : KF_LOG_INFO, "outbox",
               "event=%s id=%llu channel=%s kind=%s attempt=%u dur_ms=%.0f next_in_ms=%.0f "
               "error=\"%s\"",
               names[t->kind], (unsigned long long) r->id, r->channel, r->kind, r->attempts,
               dur * 1000, t->kind == SETTLE_RETRY ? (double) t->delay_us / 1000.0 : 0.0, shown);
    }
}

/*
 * Lanes: one outbox job per channel adapter, and one for rows of channels
 * without an adapter (parked with the reason), so a slow peer (a hung SMTP
 * relay) holds up its own channel only; with job_threads > 1 the other
 * lanes run meanwhile.
 */
#define MAX_LANES 9
struct lane {
    kf_job job;
    const kf_config *cfg;
    char name[48];    /* job name: "outbox:email"; "outbox" for the rest */
    char channel[32]; /* "" for the rest */
    const char *others;
};

static int
outbox_tick(kf_job *job, kf_db *db, const char **error_r)
{
    const struct lane *ln = job->arg;
    const kf_config *cfg = ln->cfg;
    kf_pool *pool = kf_pool_create(16 * 1024);
    struct claim_tx ct = {.cfg = cfg, .pool = pool, .batch = job->batch,
                          .channel = ln->channel[0] ? ln->channel : NULL, .others = ln->others};
    double t0 = mono();
    double lease_end = t0 + (double) cfg->outbox_lease - LEASE_MARGIN_S;
    int rc;

    if ((rc = kf_tx_run(db, claim_tx, &ct, error_r)) != KF_OK) {
        kf_pool_destroy(&pool);
        return rc;
    }
    if (ct.reclaimed)
        kf_log(KF_LOG_WARN, "outbox", "event=leases-expired rows=%u", ct.reclaimed);
    if (ct.parked)
        kf_debug("outbox", "event=parked rows=%u reason=no-adapter", ct.parked);

    for (size_t i = 0; i < ct.n; i++) {
        const claimed *r = &ct.rows[i];
        struct settle_tx st = {.kind = SETTLE_RELEASE};
        double now = mono();
        kf_channel *ch = kf_channel_find(r->channel);

        /* Stopping, or too little lease left to finish: give the row back. */
        if (kf_job_stopping(job) || lease_end - now < 1.0 || ch == NULL) {
            settle(db, r, &st, 0);
            continue;
        }
        double budget = lease_end - now < DELIVER_MAX_S ? lease_end - now : DELIVER_MAX_S;
        json_t *payload = json_loads(r->payload ? r->payload : "{}", JSON_DECODE_ANY, NULL);
        kf_outbound msg = {
            .id = r->id,
            .kind = r->kind,
            .channel = r->channel,
            .channel_account = r->channel_account,
            .target = r->target,
            .payload = payload,
            .ticket_id = r->ticket_id,
            .message_id = r->message_id,
            .attempt = r->attempts,
            .deadline = now + budget,
            .db = db,
        };
        kf_str peer = KF_STR_INIT;
        kf_deliver_status ds = ch->ops->deliver(ch, &msg, &peer);
        double dur = mono() - now;
        json_decref(payload);

        unsigned max = r->max_attempts < cfg->outbox_max_attempts ? r->max_attempts
                                                                  : cfg->outbox_max_attempts;
        const char *peer_text = peer.ptr ? column_text(pool, peer.ptr, peer.len) : NULL;
        st.peer_reply = peer_text;
        if (ds == KF_DELIVER_SENT) {
            st.kind = SETTLE_SENT;
        } else if (ds == KF_DELIVER_REJECTED) {
            st.kind = SETTLE_DEAD;
            st.dead_reason = "rejected";
            const char *e = kf_pool_printf(pool, "rejected: %s", peer_text ? peer_text : "-");
            st.last_error = column_text(pool, e, strlen(e));
        } else if (r->attempts >= (max ? max : 1)) {
            st.kind = SETTLE_DEAD;
            st.dead_reason = "max-attempts";
            const char *e = kf_pool_printf(pool, "gave up after %u attempts: %s", r->attempts,
                                           peer_text ? peer_text : "temporary failure");
            st.last_error = column_text(pool, e, strlen(e));
        } else {
            st.kind = SETTLE_RETRY;
            st.delay_us = retry_delay_us(cfg, r->attempts);
            const char *e = kf_pool_printf(pool, "temporary failure: %s",
                                           peer_text ? peer_text : "-");
            st.last_error = column_text(pool, e, strlen(e));
        }
        kf_str_free(&peer);
        settle(db, r, &st, dur);
    }
    kf_pool_destroy(&pool);
    return KF_OK;
}

/* ---- the debug channel (debug_routes=1 only) ---- */

/*
 * "debug": what deliver() does comes from the payload, so tests can drive
 * every outcome: {"mode": "ok" | "fail" | "reject" | "sleep", "ms": N}.
 * sleep waits ms (giving up at the deadline or when kefud stops), then
 * reports the row sent.
 */
static kf_deliver_status
debug_deliver(kf_channel *ch, const kf_outbound *msg, kf_str *peer_reply_r)
{
    const char *mode = json_string_value(json_object_get(msg->payload, "mode"));
    json_int_t ms = json_integer_value(json_object_get(msg->payload, "ms"));
    (void) ch;

    kf_log(KF_LOG_INFO, "outbox", "event=debug-deliver id=%llu mode=%s attempt=%u",
           (unsigned long long) msg->id, mode ? mode : "-", msg->attempt);
    if (mode == NULL || strcmp(mode, "ok") == 0) {
        kf_str_puts(peer_reply_r, "250 debug: accepted");
        return KF_DELIVER_SENT;
    }
    if (strcmp(mode, "reject") == 0) {
        kf_str_puts(peer_reply_r, "550 debug: rejected");
        return KF_DELIVER_REJECTED;
    }
    if (strcmp(mode, "sleep") == 0) {
        double until = mono() + (double) ms / 1000.0;
        while (mono() < until) {
            struct timespec slice = {0, 20 * 1000000L};
            if (mono() >= msg->deadline) {
                kf_str_puts(peer_reply_r, "debug: deadline passed");
                return KF_DELIVER_RETRY;
            }
            if (kf_job_stopping(NULL)) {
                kf_str_puts(peer_reply_r, "debug: interrupted by shutdown");
                return KF_DELIVER_RETRY;
            }
            nanosleep(&slice, NULL);
        }
        kf_str_puts(peer_reply_r, "250 debug: accepted after sleeping");
        return KF_DELIVER_SENT;
    }
    kf_str_puts(peer_reply_r, "451 debug: temporary failure");
    return KF_DELIVER_RETRY;
}

static const kf_channel_ops debug_ops = {.name = "debug", .deliver = debug_deliver};
static kf_channel debug_channel = {.ops = &debug_ops, .arg = NULL};

/* One sender per lane per process; several processes share the work through SKIP LOCKED. */
static struct lane lanes[MAX_LANES];
static char lane_list[MAX_LANES * 33];

void
kf_outbox_jobs_add(kf_scheduler *s, const kf_config *cfg)
{
    const char *names[MAX_LANES - 1];
    unsigned n;

    if (cfg->debug_routes)
        kf_channel_register(&debug_channel);
    n = kf_channel_names(names, MAX_LANES - 1);
    lane_list[0] = '\0';
    for (unsigned i = 0; i < n; i++) {
        struct lane *l = &lanes[i];
        snprintf(l->channel, sizeof(l->channel), "%s", names[i]);
        snprintf(l->name, sizeof(l->name), "outbox:%s", names[i]);
        size_t used = strlen(lane_list);
        snprintf(lane_list + used, sizeof(lane_list) - used, "%s%s", used ? "," : "", names[i]);
    }
    snprintf(lanes[n].name, sizeof(lanes[n].name), "outbox");
    lanes[n].channel[0] = '\0';
    for (unsigned i = 0; i <= n; i++) {
        struct lane *l = &lanes[i];
        l->cfg = cfg;
        l->others = lane_list;
        l->job = (kf_job){
            .name = l->name,
            .period_ms = cfg->outbox_period_ms,
            .batch = cfg->outbox_batch,
            .tick = outbox_tick,
            .arg = l,
        };
        kf_scheduler_add(s, &l->job);
    }
}
