/*
 * kefu/ticket.h - tickets and their messages: rows, JSON, state changes,
 * attachments, and the list query (filters, keyset cursor, index-friendly
 * SQL).
 *
 * Everything that writes runs inside the caller's transaction (kf_tx_run)
 * and never commits; events are the caller's business except where a
 * function says otherwise.  Ids are never 0, so 0 stands for SQL NULL in
 * every uint64_t field here.
 *
 * Threads:   worker and job threads, with the caller's kf_db.  The pure
 *            helpers (query parsing, cursors, times, UTF-8) are thread-safe
 *            and touch no database; they are fuzzed (tests/fuzz/fuzz_cursor.c).
 * Ownership: strings in returned rows are copied into the kf_pool passed in;
 *            json_t results are new references owned by the caller.
 * Errors:    KF_OK; KF_ENOTFOUND (no such ticket); KF_EINVAL (the reason in
 *            *error_r, "field: detail"); KF_ERETRY / KF_EDB / KF_ECONFLICT
 *            from db.c.
 */
#ifndef KEFU_TICKET_H
#define KEFU_TICKET_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "kefu/pool.h"
#include "kefu/types.h"

#define KF_TICKET_SUBJECT_MAX 255 /* bytes */
#define KF_TICKET_TAG_MAX 64      /* bytes per tag */
#define KF_TICKET_TAGS_MAX 32     /* tags per ticket */
#define KF_LIST_LIMIT_DEFAULT 50
#define KF_LIST_LIMIT_MAX 200
#define KF_ATTACHMENT_CHUNK (256 * 1024)

/* NULL-terminated enum values, in the schema's order. */
extern const char *const kf_ticket_statuses[];   /* new open pending solved closed */
extern const char *const kf_ticket_priorities[]; /* low normal high urgent */
extern const char *const kf_ticket_channels[];          /* email web wechat api phone */

/** Index of s in a NULL-terminated list, or -1. */
int kf_ticket_enum_index(const char *const *list, const char *s);

typedef struct kf_ticket {
    uint64_t id, customer_id, queue_id, assignee_id, merged_into_id, follow_up_of_id;
    const char *subject, *status, *priority, *channel, *channel_account;
    const char *tags; /* JSON array text */
    /* ISO-8601 UTC ("2026-11-30T04:15:00.123456Z") or NULL */
    const char *created_at, *updated_at, *first_response_at, *solved_at, *closed_at;
    unsigned version;
    /* the customer, joined by kf_ticket_get() (NULL after kf_ticket_lock()) */
    const char *customer_name, *customer_email;
} kf_ticket;

/** One ticket with its customer's name and e-mail; KF_ENOTFOUND when there is none. */
int kf_ticket_get(kf_db *db, kf_pool *pool, uint64_t id, kf_ticket *tk, const char **error_r);
/** The ticket row locked FOR UPDATE (no customer columns). */
int kf_ticket_lock(kf_db *db, kf_pool *pool, uint64_t id, kf_ticket *tk, const char **error_r);
/** The API's ticket object (new reference). */
json_t *kf_ticket_json(const kf_ticket *tk);
/** "KF-000123" into buf. */
void kf_ticket_number(uint64_t id, char *buf, size_t bufsz);

typedef struct kf_ticket_new {
    const char *subject, *priority, *channel, *channel_account; /* priority NULL = normal */
    uint64_t customer_id, queue_id, follow_up_of_id;
} kf_ticket_new;

/** Insert a ticket in status "new". */
int kf_ticket_insert(kf_db *db, const kf_ticket_new *t, uint64_t *id_r, const char **error_r);
/**
 * Insert a ticket in status "new", routed in the same statement: a queue_id
 * must name an existing queue (KF_EINVAL "queue_id: no such queue", nothing
 * inserted); 0 takes the default queue of (channel, channel_account) from
 * channel_account, or none.
 */
int kf_ticket_create(kf_db *db, const kf_ticket_new *t, uint64_t *id_r, const char **error_r);
/** version + 1, updated_at = now. */
int kf_ticket_touch(kf_db *db, uint64_t id, const char **error_r);
/**
 * Change the status (and touch): solved sets solved_at, closed sets
 * closed_at, leaving solved/closed clears them; first_response is left alone.
 */
int kf_ticket_set_status(kf_db *db, uint64_t id, const char *status, const char **error_r);
/** Set priority / queue (0 = none) / assignee (0 = none), each followed by a touch by the caller.
 */
int kf_ticket_set_priority(kf_db *db, uint64_t id, const char *priority, const char **error_r);
int kf_ticket_set_queue(kf_db *db, uint64_t id, uint64_t queue_id, const char **error_r);
int kf_ticket_set_assignee(kf_db *db, uint64_t id, uint64_t agent_id, const char **error_r);
/** Replace the tags (a JSON array of valid tags) in ticket.tags and ticket_tag. */
int kf_ticket_set_tags(kf_db *db, uint64_t id, const json_t *tags, const char **error_r);
/** first_response_at = now unless already set. */
int kf_ticket_first_response(kf_db *db, uint64_t id, const char **error_r);

/*
 * Validate a "tags" value (JSON array of 0..KF_TICKET_TAGS_MAX distinct
 * strings of 1..KF_TICKET_TAG_MAX bytes without spaces, commas or control
 * characters).  Returns a new normalised (ASCII-lowercased) array, or NULL
 * with the problem added to *errors under field.
 */
json_t *kf_ticket_tags_check(const json_t *v, const char *field, json_t **errors);

/* ---- messages and attachments ---- */

typedef struct kf_message_new {
    uint64_t ticket_id;
    const char *direction;   /* "in" | "out" */
    const char *kind;        /* "public" | "internal" */
    const char *author_kind; /* "agent" | "customer" | "system" */
    uint64_t author_agent_id, author_customer_id;
    const char *channel, *channel_account, *external_id; /* external_id may be NULL */
    const char *text;
    size_t text_len;
    size_t quote_at;  /* bytes of text before its quoted history; 0 = none */
    const char *html; /* sanitized, may be NULL */
} kf_message_new;

int kf_ticket_add_message(kf_db *db, const kf_message_new *m, uint64_t *id_r,
                          const char **error_r);

/** Store one attachment: metadata row plus 256 KiB chunks; sha256 computed here. */
int kf_ticket_add_attachment(kf_db *db, uint64_t ticket_id, uint64_t message_id,
                             const char *filename, const char *content_type,
                             const char *content_id, const unsigned char *data, size_t len,
                             uint64_t *id_r, const char **error_r);

/** SHA-256 of data as 64 lower-case hex digits plus NUL. */
void kf_ticket_sha256_hex(const unsigned char *data, size_t len, char hex[65]);

/**
 * The ticket's messages, oldest first, each with its attachments' metadata
 * (new reference in *messages_r).  include_internal 0 leaves notes out.
 */
int kf_ticket_messages_json(kf_db *db, kf_pool *pool, uint64_t ticket_id, int include_internal,
                            json_t **messages_r, const char **error_r);

/*
 * The whole ticket in one statement (GET /api/v1/tickets/{id}): the row with
 * its customer, the messages as kf_ticket_messages_json() gives them, and
 * two answers for the caller's checks: whether member_agent_id is a member
 * of the ticket's queue, and whether the API token token_id is still valid
 * (KF_AUTH_TOKEN_VALID_SQL, kefu/auth.h).  0 for either id answers 0.
 * KF_ENOTFOUND when there is no such ticket (then nothing is known about
 * the token).
 */
typedef struct kf_ticket_read_opts {
    uint64_t id;
    int include_internal;
    uint64_t member_agent_id, token_id;
} kf_ticket_read_opts;
typedef struct kf_ticket_view {
    kf_ticket ticket;
    json_t *messages; /* new reference, owned by the caller */
    int member, token_valid;
} kf_ticket_view;
int kf_ticket_read(kf_db *db, kf_pool *pool, const kf_ticket_read_opts *o, kf_ticket_view *v,
                   const char **error_r);

/* ---- merge ---- */

/**
 * Merge ticket src into dst (both locked by the caller): messages and
 * attachments move, src is closed with merged_into_id = dst, both are
 * touched.  *moved_r gets the number of messages moved.
 */
int kf_ticket_merge(kf_db *db, uint64_t src, uint64_t dst, uint64_t *moved_r,
                    const char **error_r);

/* ---- lists ---- */

enum kf_assignee_filter {
    KF_ASSIGNEE_ANY = 0,
    KF_ASSIGNEE_ID,   /* assignee_id = q->assignee_id */
    KF_ASSIGNEE_ME,   /* resolved by the caller into KF_ASSIGNEE_ID */
    KF_ASSIGNEE_NONE, /* assignee_id IS NULL */
};

typedef struct kf_ticket_query {
    uint64_t queue_id, customer_id, assignee_id; /* 0 = no filter */
    int assignee;                                /* enum kf_assignee_filter */
    unsigned statuses;                           /* bit i = kf_ticket_statuses[i]; 0 = any */
    const char *priority;                        /* NULL = any */
    const char *tag;                             /* NULL = any */
    int has_since;
    int64_t since_usec;                          /* updated_at >= since */
    int has_after;
    int64_t after_usec;                          /* keyset: (updated_at, id) < (after) */
    uint64_t after_id;
    unsigned limit;
    uint64_t scope_agent_id; /* set by the caller: 0 = every queue, else that agent's queues */
} kf_ticket_query;

/*
 * Parse the list query string (queue_id, status (repeated or comma
 * separated), assignee_id (id | "me" | "none"), priority, customer_id, tag,
 * updated_since (ISO-8601), limit (1..200), after (cursor)).  Unknown or
 * repeated parameters and bad values are added to *errors (field = the
 * parameter's name); returns KF_OK or KF_EINVAL.  Pure: no database.
 */
int kf_ticket_query_parse(kf_pool *pool, const char *query, kf_ticket_query *q,
                          json_t **errors);

/*
 * The list statement for q: its text in *sql (appended) and a statement
 * name encoding its shape in name.  The text depends only on which filters
 * are set, never on their values.  explain prefixes EXPLAIN (tests).
 */
void kf_ticket_list_sql(const kf_ticket_query *q, int explain, kf_str *sql, char *name,
                        size_t namesz);
/** Prepare and bind the list statement (executed by the caller for EXPLAIN). */
int kf_ticket_list_prepare(kf_db *db, const kf_ticket_query *q, int explain, kf_stmt **st_r,
                           const char **error_r);
/**
 * Run the list: *items_r is a new JSON array of ticket objects, *next_r a
 * cursor for the next page or NULL.
 */
int kf_ticket_list(kf_db *db, kf_pool *pool, const kf_ticket_query *q, json_t **items_r,
                   const char **next_r, const char **error_r);

/* ---- pure helpers ---- */

/** Opaque keyset cursor: base64url of "t1:<usec>:<id>". */
char *kf_ticket_cursor_encode(kf_pool *pool, int64_t usec, uint64_t id);
/** KF_OK or KF_EINVAL; strict (no trailing garbage, id 1..2^63-1). */
int kf_ticket_cursor_decode(const char *s, int64_t *usec_r, uint64_t *id_r);
/**
 * "2026-11-30T04:15:00.123456Z" (fraction 0..6 digits, "Z" / "+00:00" /
 * nothing, ' ' allowed for 'T') or a plain date "2026-11-30" into
 * microseconds since the epoch (years 1970..9999); KF_OK or KF_EINVAL.
 */
int kf_ticket_time_parse(const char *s, int64_t *usec_r);
/** Microseconds since the epoch as "YYYY-MM-DD HH:MM:SS.ffffff" (for binding). */
void kf_ticket_time_sql(int64_t usec, char buf[32]);
/** Valid UTF-8, no NUL bytes, no overlongs or surrogates. */
int kf_ticket_utf8_ok(const char *s, size_t len);
/** Longest prefix of s (at most max bytes) that ends on a UTF-8 character boundary. */
size_t kf_ticket_utf8_prefix(const char *s, size_t len, size_t max);

#endif /* KEFU_TICKET_H */
