/*
 * h_events.c - the event log over HTTP: pages by id (GET /api/v1/events)
 * and the live feed as Server-Sent Events (GET /api/v1/events/stream).
 *
 * Both show a caller only what they may see: supervisors and admins every
 * event, agents the events of tickets in their queues (an event without a
 * ticket, or of a ticket without a queue, is for supervisors).  Both read
 * the log in id order through kf_event_fetch(), which never skips an id
 * that may still commit, so a reader that continues from the last id it
 * saw misses nothing, whichever kefud instance wrote the event.  A ticket
 * counts as in the queue it is in when the event is read; an agent's queue
 * memberships are read when the request (or the stream) starts, so a
 * stream picks up a membership change when the client reconnects.
 */
#include <stdlib.h>
#include <string.h>

#include "kefu/auth.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/http.h"
#include "kefu/pool.h"
#include "kefu/server.h"
#include "sse.h"

#define EVENTS_LIMIT_DEFAULT 50
#define EVENTS_LIMIT_MAX 500
#define EVENTS_SCAN_MAX 5000 /* rows one page may read past while filtering */

/* A whole decimal number (no sign, no spaces, at most 19 digits). */
/*
 * GET /api/v1/events?after=ID&limit=N - events with id > after, oldest
 * first: {"items": [...], "next": "<id>" | null, "last_id": N}.  next is set
 * while more may follow at once; last_id is where to continue polling from
 * (it moves past events the caller may not see).
 */
static int
h_events_list(kf_call *c, kf_reply *out)
{
    const char *a = kf_call_query(c, "after"), *l = kf_call_query(c, "limit");
    const char *error = NULL;
    uint64_t after = 0, limit = EVENTS_LIMIT_DEFAULT, cursor;
    json_t *errors = NULL, *items;
    kf_event_scope scope;
    size_t scanned = 0;
    int caught_up = 0, full = 0, rc;

    if (a != NULL && !kf_parse_u64(a, &after))
        kf_problem_add_error(&errors, "after", "an event id (a whole number)");
    if (l != NULL && (!kf_parse_u64(l, &limit) || limit < 1 || limit > EVENTS_LIMIT_MAX))
        kf_problem_add_error(&errors, "limit", "a whole number from 1 to 500");
    if (errors != NULL)
        return kf_reply_invalid(out, c, errors);
    if ((rc = kf_event_scope_load(c, &scope, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);

    items = json_array();
    cursor = after;
    while (!full && scanned < EVENTS_SCAN_MAX) {
        kf_event_row *rows;
        size_t n;
        int more;
        unsigned batch = scope.all ? (unsigned) limit + 1 : 200;
        if ((rc = kf_event_fetch(c->db, c->pool, cursor, 0, batch, &rows, &n, &more, &error)) !=
            KF_OK) {
            json_decref(items);
            return kf_reply_internal(out, c, error);
        }
        for (size_t i = 0; i < n; i++) {
            if (json_array_size(items) == limit) {
                full = 1;
                break;
            }
            cursor = rows[i].id;
            scanned++;
            if (kf_event_visible(&scope, &rows[i]))
                json_array_append_new(items, kf_event_json(&rows[i]));
        }
        if (!full && !more) {
            caught_up = 1;
            break;
        }
    }
    char next[24];
    snprintf(next, sizeof(next), "%llu", (unsigned long long) cursor);
    return kf_reply_json(out, c, 200,
                         json_pack("{s:o, s:s?, s:I}", "items", items, "next",
                                   caught_up ? NULL : next, "last_id", (json_int_t) cursor));
}

/*
 * GET /api/v1/events/stream - Server-Sent Events.  Starts after the
 * Last-Event-ID header (a reconnecting browser sends it), else after
 * ?after=, else at the newest event.  Here, on a worker, we only decide
 * who the caller is and what they may see; server/loop.c keeps the stream.
 */
static int
h_events_stream(kf_call *c, kf_reply *out)
{
    const char *lei = kf_call_header(c, "Last-Event-ID"), *a = kf_call_query(c, "after");
    const char *error = NULL;
    kf_sse_spec spec;
    int have = 0, rc;

    memset(&spec, 0, sizeof(spec));
    if (lei != NULL && *lei != '\0') {
        if (!kf_parse_u64(lei, &spec.after))
            return kf_reply_problem(out, c, 400, "bad-last-event-id",
                                    "Last-Event-ID must be an event id this server sent.", NULL);
        have = 1;
    } else if (a != NULL) {
        if (!kf_parse_u64(a, &spec.after)) {
            json_t *errors = NULL;
            kf_problem_add_error(&errors, "after", "an event id (a whole number)");
            return kf_reply_invalid(out, c, errors);
        }
        have = 1;
    }
    if (kf_sse_slots_used() >= c->cfg->sse_max_clients) {
        kf_reply_header(out, c, "Retry-After", "5");
        return kf_reply_problem(out, c, 503, "too-many-streams",
                                "This server serves as many event streams as it may; retry later.",
                                NULL);
    }
    if ((rc = kf_event_scope_load(c, &spec.scope, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    if (!have && (rc = kf_event_head(c->db, &spec.after, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    spec.who = kf_pool_printf(c->pool, "agent:%llu role=%s queues=%zu%s",
                              (unsigned long long) c->principal.agent_id,
                              kf_role_name(c->principal.role), spec.scope.n_queues,
                              spec.scope.all ? " all" : "");
    return kf_sse_accept(c, out, &spec);
}

const kf_route kf_event_routes[] = {
    {KF_GET, "/api/v1/events", KF_AUTH_AGENT, 0, h_events_list, 0, NULL},
    {KF_GET, "/api/v1/events/stream", KF_AUTH_AGENT, 0, h_events_stream, KF_ROUTE_STREAM, NULL},
    {0, NULL, 0, 0, NULL, 0, NULL},
};
