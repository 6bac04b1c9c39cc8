/*
 * event.c - append to the event log inside the caller's transaction.
 */
#include <stdlib.h>
#include <string.h>

#include "kefu/db.h"
#include "kefu/event.h"

int
kf_event_add(kf_db *db, uint64_t ticket_id, const char *kind, int actor_kind, uint64_t actor_id,
             const json_t *data, uint64_t *id_r, const char **error_r)
{
    static const char *const actors[] = {"system", "agent", "customer"};
    kf_stmt *st;
    int rc;
    char *json = data ? json_dumps(data, JSON_COMPACT) : NULL;

    if ((rc = kf_db_stmt(db, "event.add",
                         "INSERT INTO event (ticket_id, kind, actor_kind, actor_id, data) "
                         "VALUES (?, ?, ?, ?, ?)",
                         &st, error_r)) != KF_OK) {
        free(json);
        return rc;
    }
    if (ticket_id)
        kf_stmt_bind_u64(st, 0, ticket_id);
    else
        kf_stmt_bind_null(st, 0);
    kf_stmt_bind_cstr(st, 1, kind);
    kf_stmt_bind_cstr(st, 2, actors[actor_kind >= 0 && actor_kind <= 2 ? actor_kind : 0]);
    if (actor_id)
        kf_stmt_bind_u64(st, 3, actor_id);
    else
        kf_stmt_bind_null(st, 3);
    kf_stmt_bind_cstr(st, 4, json ? json : "{}");
    free(json);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if (id_r)
        *id_r = kf_stmt_insert_id(st);
    return KF_OK;
}
