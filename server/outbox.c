/*
 * outbox.c - the transactional outbox: rows added inside the caller's
 * transaction (kf_outbox_add); the sender job lands with the outbox work.
 */
#include <stdlib.h>
#include <string.h>

#include "kefu/db.h"
#include "kefu/outbox.h"
#include "kefu/server.h"

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

void
kf_outbox_jobs_add(kf_scheduler *s, const kf_config *cfg)
{
    (void) s;
    (void) cfg;
}
