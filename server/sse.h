/*
 * sse.h - the live event feed, private to server/: reading the event log in
 * id order (with a guard against ids committed out of order), what a caller
 * may see of it, and the hub that tails it for Server-Sent Event streams.
 *
 * The event log is tailed by id, so any number of kefud instances on one
 * database see every event.  Auto-increment ids are handed out at INSERT
 * and become visible at COMMIT, so id 11 can be visible while id 10 is not
 * yet: a reader that jumped to 11 would never see 10.  kf_event_fetch()
 * therefore stops before a hole in the ids until the row after the hole is
 * KF_EVENT_GAP_GRACE_US old; after that the hole is taken as permanent (a
 * rolled-back insert).  On a single server a hole is rare and costs its
 * readers at most that grace period; with auto_increment_increment > 1
 * (Galera) every step is a hole and the feed runs that much behind.
 *
 * Threads:   kf_event_* run on workers and on hub threads with their own
 *            kf_db; a hub is driven by one I/O loop (subscribe, take,
 *            unsubscribe) and runs one thread of its own with its own
 *            MariaDB connection (started with the first subscriber).
 * Ownership: rows and their strings live in the pool passed in; a hub owns
 *            its subscribers until kf_sse_unsubscribe().
 */
#ifndef KEFU_SSE_H
#define KEFU_SSE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "kefu/http.h"
#include "kefu/pool.h"
#include "kefu/types.h"

#define KF_EVENT_GAP_GRACE_US 2000000 /* a hole in the ids older than this is permanent */
#define KF_SSE_POLL_MS 250            /* how often a hub looks for new events */
#define KF_SSE_BATCH 500              /* events read per query */

/* What a caller may see: everything (supervisor, admin) or the tickets of some queues. */
typedef struct kf_event_scope {
    int all;
    const uint64_t *queues; /* sorted ascending */
    size_t n_queues;
} kf_event_scope;

/* One event as read from the log (strings in the caller's pool). */
typedef struct kf_event_row {
    uint64_t id, ticket_id, queue_id, actor_id;
    int has_ticket, has_queue, has_actor;
    const char *kind, *actor_kind, *data, *created_at;
} kf_event_row;

/** The caller's scope: role and, for agents, their queues (worker thread, c->db). */
int kf_event_scope_load(kf_call *c, kf_event_scope *scope, const char **error_r);
/** 1 when an event row is visible in scope. */
int kf_event_visible(const kf_event_scope *scope, const kf_event_row *row);
/** Highest event id so far (0 when the log is empty). */
int kf_event_head(kf_db *db, uint64_t *id_r, const char **error_r);
/*
 * Up to max events with id > after in id order.  With upto == 0 the read
 * stops before a hole in the ids that is younger than the grace period;
 * with upto != 0 only ids <= upto are read and holes are not checked (the
 * range was vetted before).  *more_r = 1 when max rows came back.
 */
int kf_event_fetch(kf_db *db, kf_pool *pool, uint64_t after, uint64_t upto, unsigned max,
                   kf_event_row **rows_r, size_t *n_r, int *more_r, const char **error_r);
/** The API representation of an event (new reference). */
json_t *kf_event_json(const kf_event_row *row);

/* ---- streams ---- */

/* What GET /api/v1/events/stream prepared on the worker for the I/O loop. */
typedef struct kf_sse_spec {
    uint64_t after;        /* deliver events with id > after */
    kf_event_scope scope;  /* queues live in the call's pool; the hub copies them */
    const char *who;       /* "agent:12 role=agent", for logs */
} kf_sse_spec;

/*
 * Handler side: copy spec into the call and answer 200 text/event-stream
 * with an opening comment; the loop then turns the reply into a stream.
 */
int kf_sse_accept(kf_call *c, kf_reply *out, const kf_sse_spec *spec);

/* Streams per process (sse_max_clients).  take: 1 when a slot was free. */
int kf_sse_slot_take(unsigned max);
void kf_sse_slot_release(void);
unsigned kf_sse_slots_used(void);

typedef struct kf_sse_hub kf_sse_hub;
typedef struct kf_sse_sub kf_sse_sub;

/** wake(arg) is called from the hub thread when some subscriber has text to take. */
kf_sse_hub *kf_sse_hub_create(const kf_config *cfg, void (*wake)(void *), void *arg);
/** Stop and join the hub thread, free every subscriber left. */
void kf_sse_hub_destroy(kf_sse_hub **hub);
/** A new subscriber from spec (copied); starts the hub thread on first use. */
kf_sse_sub *kf_sse_subscribe(kf_sse_hub *hub, const kf_sse_spec *spec);
void kf_sse_unsubscribe(kf_sse_hub *hub, kf_sse_sub **sub);
/**
 * Move the subscriber's pending SSE text into *out (which must be empty;
 * the caller frees it).  Returns the number of bytes moved.
 */
size_t kf_sse_take(kf_sse_hub *hub, kf_sse_sub *sub, kf_str *out);

#endif /* KEFU_SSE_H */
