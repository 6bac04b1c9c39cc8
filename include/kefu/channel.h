/*
 * kefu/channel.h - channel adapters behind one interface (STYLE.md §3.9).
 *
 * Inbound, every adapter ends in kf_ingest().  Outbound, the outbox job
 * calls the adapter's deliver() for each claimed row, outside any
 * transaction.  Adapters register themselves at start-up with
 * kf_channel_register(); an outbox row whose channel has no adapter stays
 * queued with a clear last_error.
 */
#ifndef KEFU_CHANNEL_H
#define KEFU_CHANNEL_H

#include <stdint.h>
#include <jansson.h>
#include "kefu/pool.h"
#include "kefu/types.h"

typedef enum kf_deliver_status {
    KF_DELIVER_SENT,     /* peer accepted it: mark the row sent                 */
    KF_DELIVER_RETRY,    /* transient (timeout, 4xx SMTP, HTTP 429/5xx): backoff */
    KF_DELIVER_REJECTED, /* permanent: dead-letter now                           */
} kf_deliver_status;

/* One claimed outbox row, as deliver() sees it (strings borrowed). */
typedef struct kf_outbound {
    uint64_t id;
    const char *kind, *channel, *channel_account, *target;
    const json_t *payload;
    uint64_t ticket_id, message_id;
    unsigned attempt;   /* 1 for the first try */
    double deadline;    /* monotonic seconds; give up by then */
    /* The job thread's connection, for adapters whose credentials are shared
     * through the database (WeChat's access token): short statements or
     * short kf_tx_run() transactions only, never one held across the network. */
    kf_db *db;
} kf_outbound;

typedef struct kf_channel kf_channel;

typedef struct kf_channel_ops {
    const char *name; /* "email", "wechat", "web" ... matches outbox.channel */
    /* Job thread; may block but must honour msg->deadline; no transaction of its
     * own may stay open while it waits on the network (see kf_outbound.db). */
    kf_deliver_status (*deliver)(kf_channel *ch, const kf_outbound *msg, kf_str *peer_reply_r);
    /*
     * Optional; NULL: answers on this channel carry text only.  Worker
     * thread, inside the answer's transaction (short statements on db only):
     * may an answer from account carry files ([{id, filename, content_type,
     * size}])?  KF_OK with *why_r NULL when it may, or with *why_r the reason
     * for the agent (static or in pool: the answer is refused with 422 and
     * nothing is written); another code (with *error_r) on a database error,
     * which fails the transaction like any other.
     */
    int (*files_ok)(kf_channel *ch, kf_db *db, kf_pool *pool, const char *account,
                    const json_t *files, const char **why_r, const char **error_r);
} kf_channel_ops;

struct kf_channel {
    const kf_channel_ops *ops;
    void *arg;
};

/** Register an adapter (start-up, before the scheduler starts). */
void kf_channel_register(kf_channel *ch);
/** The adapter for a channel name, or NULL. */
kf_channel *kf_channel_find(const char *name);
/** The registered adapters' names (at most max, in registration order); how many. */
unsigned kf_channel_names(const char **names, unsigned max);
/** Forget every registration (tests, shutdown). */
void kf_channel_reset(void);

#endif /* KEFU_CHANNEL_H */
