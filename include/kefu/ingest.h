/*
 * kefu/ingest.h - the one way in: every channel turns what it received into
 * a kf_inbound and calls kf_ingest().
 *
 * In one transaction (retried on deadlock): dedupe on (channel, account,
 * external id) through inbound_receipt -> identify or create the customer
 * through customer_identity -> find the ticket (explicit ticket_id, or the
 * channel's threading hook) -> create the ticket or append the message (a
 * reply to a solved ticket reopens it; to a closed one starts a follow-up
 * ticket) -> routing (the channel account's default queue) -> events ->
 * outbox rows (an acknowledgement when asked).  Ingesting the same external
 * id twice returns the first result and changes nothing.
 *
 * Threads:   worker and job threads, with the caller's kf_db.
 */
#ifndef KEFU_INGEST_H
#define KEFU_INGEST_H

#include <stddef.h>
#include <stdint.h>
#include "kefu/types.h"

typedef struct kf_inbound_attachment {
    const char *filename, *content_type, *content_id;
    const unsigned char *data;
    size_t len;
} kf_inbound_attachment;

typedef struct kf_inbound kf_inbound;

/*
 * Threading hook: given the inbound message, find the ticket it continues
 * (inside the ingest transaction).  Return KF_OK with *ticket_id_r = 0 for
 * "new ticket".
 */
typedef int kf_thread_fn(kf_db *db, const kf_inbound *in, uint64_t customer_id,
                         uint64_t *ticket_id_r, const char **error_r);

struct kf_inbound {
    const char *channel;          /* "email" | "web" | "wechat" | "api" | "phone" */
    const char *channel_account;  /* mailbox, WeChat account, "" */
    const char *external_id;      /* Message-ID, MsgId, request id; NULL = not deduped */
    /* sender identity */
    const char *identity_kind;    /* "email" | "wechat_openid" | "phone" | "web" */
    const char *identity_value;
    const char *unionid;          /* WeChat UnionID, may be NULL */
    const char *customer_name;    /* may be NULL */
    const char *customer_locale;  /* may be NULL */
    uint64_t customer_id;         /* known customer (API on behalf of); 0 = by identity */
    /* content */
    const char *subject;          /* may be NULL for follow-ups */
    const char *text;
    size_t text_len;
    size_t quote_at;              /* bytes of text before its quoted history; 0 = none */
    const char *html;             /* already sanitized, may be NULL */
    const kf_inbound_attachment *attachments;
    size_t n_attachments;
    /* threading */
    uint64_t ticket_id;           /* explicit ticket (API reply); 0 = use thread_fn / new */
    kf_thread_fn *thread_fn;      /* may be NULL */
    void *thread_arg;
    /* options */
    const char *priority;         /* may be NULL = normal */
    uint64_t queue_id;            /* 0 = routing decides */
    int send_ack;                 /* queue an acknowledgement in the outbox */
    int auto_submitted;           /* auto-reply/bulk: recorded, never answered */
    uint64_t actor_agent_id;      /* an agent created it on the customer's behalf */
};

typedef struct kf_ingest_result {
    uint64_t ticket_id, message_id, customer_id;
    int created_ticket;  /* 1 when this call made a new ticket */
    int duplicate;       /* 1 when the external id was seen before (nothing changed) */
    int reopened;        /* 1 when a solved ticket was reopened */
    uint64_t follow_up_of; /* closed ticket this one follows, or 0 */
} kf_ingest_result;

int kf_ingest(kf_db *db, const kf_inbound *in, kf_ingest_result *res, const char **error_r);

/*
 * The same, inside a transaction the caller already runs with kf_tx_run()
 * (the API adds tags to the new ticket in the same transaction).  Errors:
 * KF_EINVAL with "field: detail" in *error_r (nothing written); KF_ENOTFOUND
 * for an explicit ticket_id that does not exist; KF_ERETRY (let kf_tx_run
 * run the whole body again); KF_EDB.
 */
int kf_ingest_tx(kf_db *db, const kf_inbound *in, kf_ingest_result *res, const char **error_r);

#endif /* KEFU_INGEST_H */
