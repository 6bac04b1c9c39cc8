/*
 * kefu/event.h - the append-only event log: audit trail and live feed.
 *
 * Every change to a ticket writes one row, in the same transaction as the
 * change.  Readers tail by id (GET /api/v1/events?after=, SSE).
 *
 * Threads:   worker and job threads, inside the caller's transaction.
 */
#ifndef KEFU_EVENT_H
#define KEFU_EVENT_H

#include <stdint.h>
#include <jansson.h>
#include "kefu/types.h"

enum kf_actor { KF_ACTOR_SYSTEM = 0, KF_ACTOR_AGENT, KF_ACTOR_CUSTOMER };

/*
 * Append an event.  ticket_id 0 = not about one ticket.  data (may be NULL)
 * is borrowed, not stolen.  *id_r (may be NULL) gets the new id.
 */
int kf_event_add(kf_db *db, uint64_t ticket_id, const char *kind, int actor_kind,
                 uint64_t actor_id, const json_t *data, uint64_t *id_r, const char **error_r);

#endif /* KEFU_EVENT_H */
