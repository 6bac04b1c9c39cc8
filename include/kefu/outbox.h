/*
 * kefu/outbox.h - the transactional outbox.
 *
 * Rows are written in the same transaction as the change that caused them
 * and delivered later by the outbox job (server/outbox.c) through the
 * channel adapter's deliver().  dedupe_key is unique: adding the same key
 * twice is a no-op (KF_OK, *id_r = the existing row's id).
 *
 * Threads:   worker and job threads, with the caller's kf_db.
 */
#ifndef KEFU_OUTBOX_H
#define KEFU_OUTBOX_H

#include <stdint.h>
#include <jansson.h>
#include "kefu/types.h"

typedef struct kf_outbox_new {
    const char *kind;            /* "reply", "ack", "notification", "survey" ... */
    const char *channel;         /* "email", "wechat", "web" ... */
    const char *channel_account; /* may be NULL */
    const char *target;          /* address, openid ... */
    const json_t *payload;       /* borrowed */
    const char *dedupe_key;      /* unique; e.g. "reply:<message_id>" */
    uint64_t ticket_id, message_id; /* 0 = none */
    unsigned max_attempts;       /* 0 = default (8) */
} kf_outbox_new;

int kf_outbox_add(kf_db *db, const kf_outbox_new *row, uint64_t *id_r, const char **error_r);

#endif /* KEFU_OUTBOX_H */
