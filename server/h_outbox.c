/*
 * h_outbox.c - the outbox for supervisors and admins: list rows by status
 * (dead letters above all) and send a dead row again; plus, with
 * debug_routes=1, POST /debug/outbox so tests can queue rows for the fake
 * "debug" channel (server/outbox.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "kefu/db.h"
#include "kefu/event.h"
#include "kefu/http.h"
#include "kefu/outbox.h"
#include "kefu/pool.h"
#include "kefu/server.h"

#define OUTBOX_LIMIT_DEFAULT 50
#define OUTBOX_LIMIT_MAX 200

#define OUTBOX_COLS                                                                                \
    "SELECT id, kind, channel, channel_account, target, payload, status, attempts, "              \
    " max_attempts, DATE_FORMAT(next_attempt_at, '%Y-%m-%dT%H:%i:%s.%fZ'), last_error, "        \
    " peer_reply, ticket_id, message_id, DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%s.%fZ'), "     \
    " DATE_FORMAT(sent_at, '%Y-%m-%dT%H:%i:%s.%fZ'), lease_owner, "                             \
    " DATE_FORMAT(lease_until, '%Y-%m-%dT%H:%i:%s.%fZ'), "                                       \
    " DATE_FORMAT(next_attempt_at, '%Y-%m-%d %H:%i:%s.%f') FROM outbox "

static json_t *
nullable_u64(kf_stmt *st, unsigned i)
{
    return kf_stmt_col_null(st, i) ? json_null()
                                   : json_integer((json_int_t) kf_stmt_col_u64(st, i));
}

static json_t *
nullable_str(kf_stmt *st, unsigned i, kf_pool *pool)
{
    const char *s = kf_stmt_col_str(st, i, pool, NULL);
    return s ? json_string(s) : json_null();
}

/* The current row of an OUTBOX_COLS statement as JSON. */
static json_t *
row_json(kf_stmt *st, kf_pool *pool)
{
    const char *payload = kf_stmt_col_str(st, 5, pool, NULL);
    json_t *p = payload ? json_loads(payload, JSON_DECODE_ANY, NULL) : NULL;
    return json_pack("{s:I, s:s?, s:s?, s:s?, s:s?, s:o, s:s?, s:I, s:I, s:s?, s:o, s:o, s:o, "
                     "s:o, s:s?, s:o, s:o, s:o}",
                     "id", (json_int_t) kf_stmt_col_u64(st, 0), "kind",
                     kf_stmt_col_str(st, 1, pool, NULL), "channel",
                     kf_stmt_col_str(st, 2, pool, NULL), "channel_account",
                     kf_stmt_col_str(st, 3, pool, NULL), "target",
                     kf_stmt_col_str(st, 4, pool, NULL), "payload", p ? p : json_null(),
                     "status", kf_stmt_col_str(st, 6, pool, NULL), "attempts",
                     (json_int_t) kf_stmt_col_u64(st, 7), "max_attempts",
                     (json_int_t) kf_stmt_col_u64(st, 8), "next_attempt_at",
                     kf_stmt_col_str(st, 9, pool, NULL), "last_error", nullable_str(st, 10, pool),
                     "peer_reply", nullable_str(st, 11, pool), "ticket_id", nullable_u64(st, 12),
                     "message_id", nullable_u64(st, 13), "created_at",
                     kf_stmt_col_str(st, 14, pool, NULL), "sent_at", nullable_str(st, 15, pool),
                     "lease_owner", nullable_str(st, 16, pool), "lease_until",
                     nullable_str(st, 17, pool));
}

/* ---- cursors: base64url("<next_attempt_at>|<id>") ---- */

static const char *
cursor_make(kf_pool *pool, const char *at, uint64_t id)
{
    char *raw = kf_pool_printf(pool, "%s|%llu", at, (unsigned long long) id);
    size_t n = strlen(raw);
    size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = kf_pool_alloc(pool, cap);
    sodium_bin2base64(out, cap, (const unsigned char *) raw, n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

/* "YYYY-MM-DD HH:MM:SS.ffffff|<id>", strictly; at_r gets the time text. */
static int
cursor_parse(kf_pool *pool, const char *cur, const char **at_r, uint64_t *id_r)
{
    static const char shape[] = "dddd-dd-dd dd:dd:dd.dddddd";
    unsigned char raw[64];
    size_t n = 0;
    uint64_t id = 0;

    if (strlen(cur) > 80 ||
        sodium_base642bin(raw, sizeof(raw) - 1, cur, strlen(cur), NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return 0;
    raw[n] = '\0';
    if (n < sizeof(shape) + 1 || n > sizeof(shape) + 19 || raw[sizeof(shape) - 1] != '|')
        return 0;
    for (size_t i = 0; i < sizeof(shape) - 1; i++)
        if (shape[i] == 'd' ? (raw[i] < '0' || raw[i] > '9') : raw[i] != (unsigned char) shape[i])
            return 0;
    for (size_t i = sizeof(shape); i < n; i++) {
        if (raw[i] < '0' || raw[i] > '9')
            return 0;
        id = id * 10 + (uint64_t) (raw[i] - '0');
    }
    *at_r = kf_pool_strndup(pool, (const char *) raw, sizeof(shape) - 1);
    *id_r = id;
    return 1;
}

/*
 * GET /api/v1/outbox?status=dead|queued|sending|sent&limit=N&after=<cursor>
 * (status defaults to dead).  Queued and sending rows come soonest-due
 * first; sent and dead rows newest first.  Keyset pagination on
 * (next_attempt_at, id), which the (status, next_attempt_at) index serves.
 */
static int
h_outbox_list(kf_call *c, kf_reply *out)
{
    static const char *const statuses[] = {"queued", "sending", "sent", "dead", NULL};
    const char *status = kf_call_query(c, "status"), *l = kf_call_query(c, "limit");
    const char *after = kf_call_query(c, "after"), *at = NULL, *error = NULL;
    uint64_t limit = OUTBOX_LIMIT_DEFAULT, after_id = 0;
    json_t *errors = NULL, *items;
    kf_stmt *st;
    int rc, asc, ok = 0;

    if (status == NULL)
        status = "dead";
    for (const char *const *s = statuses; *s != NULL; s++)
        ok |= strcmp(*s, status) == 0;
    if (!ok)
        kf_problem_add_error(&errors, "status", "one of queued, sending, sent, dead");
    if (l != NULL && (!kf_parse_u64(l, &limit) || limit < 1 || limit > OUTBOX_LIMIT_MAX))
        kf_problem_add_error(&errors, "limit", "a whole number from 1 to 200");
    if (after != NULL && !cursor_parse(c->pool, after, &at, &after_id))
        kf_problem_add_error(&errors, "after", "a cursor from a previous page's \"next\"");
    if (errors != NULL)
        return kf_reply_invalid(out, c, errors);

    asc = strcmp(status, "queued") == 0 || strcmp(status, "sending") == 0;
    if (at == NULL)
        rc = asc ? kf_db_stmt(c->db, "outbox.list_asc",
                              OUTBOX_COLS "WHERE status = ? ORDER BY next_attempt_at, id LIMIT ?",
                              &st, &error)
                 : kf_db_stmt(c->db, "outbox.list_desc",
                              OUTBOX_COLS "WHERE status = ? "
                                          "ORDER BY next_attempt_at DESC, id DESC LIMIT ?",
                              &st, &error);
    else
        rc = asc ? kf_db_stmt(c->db, "outbox.list_asc_after",
                              OUTBOX_COLS "WHERE status = ? AND (next_attempt_at > ? OR "
                                          "(next_attempt_at = ? AND id > ?)) "
                                          "ORDER BY next_attempt_at, id LIMIT ?",
                              &st, &error)
                 : kf_db_stmt(c->db, "outbox.list_desc_after",
                              OUTBOX_COLS "WHERE status = ? AND (next_attempt_at < ? OR "
                                          "(next_attempt_at = ? AND id < ?)) "
                                          "ORDER BY next_attempt_at DESC, id DESC LIMIT ?",
                              &st, &error);
    if (rc != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_stmt_bind_cstr(st, 0, status);
    if (at == NULL) {
        kf_stmt_bind_u64(st, 1, limit + 1);
    } else {
        kf_stmt_bind_cstr(st, 1, at);
        kf_stmt_bind_cstr(st, 2, at);
        kf_stmt_bind_u64(st, 3, after_id);
        kf_stmt_bind_u64(st, 4, limit + 1);
    }
    if ((rc = kf_stmt_exec(st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    items = json_array();
    const char *next = NULL, *last_at = NULL;
    uint64_t last_id = 0;
    while ((rc = kf_stmt_fetch(st, &error)) == 1) {
        if (json_array_size(items) == limit) {
            next = cursor_make(c->pool, last_at, last_id);
            break;
        }
        json_array_append_new(items, row_json(st, c->pool));
        last_id = kf_stmt_col_u64(st, 0);
        last_at = kf_stmt_col_str(st, 18, c->pool, NULL);
    }
    kf_stmt_done(st);
    if (rc < 0) {
        json_decref(items);
        return kf_reply_internal(out, c, error);
    }
    return kf_reply_json(out, c, 200, json_pack("{s:o, s:s?}", "items", items, "next", next));
}

struct requeue_tx {
    uint64_t id, agent_id;
    int was_dead;              /* out */
    const char *status;        /* out: the status found */
    kf_pool *pool;
};

static int
requeue_tx(kf_db *db, void *arg, const char **error_r)
{
    struct requeue_tx *t = arg;
    kf_stmt *st;
    uint64_t ticket_id = 0;
    int rc;

    t->was_dead = 0;
    t->status = NULL;
    if ((rc = kf_db_stmt(db, "outbox.lock", "SELECT status, COALESCE(ticket_id, 0) FROM outbox "
                                            "WHERE id = ? FOR UPDATE",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, t->id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_stmt_fetch(st, error_r)) != 1)
        return rc < 0 ? rc : KF_ENOTFOUND;
    t->status = kf_stmt_col_str(st, 0, t->pool, NULL);
    ticket_id = kf_stmt_col_u64(st, 1);
    kf_stmt_done(st);
    if (t->status == NULL || strcmp(t->status, "dead") != 0)
        return KF_ECONFLICT;
    if ((rc = kf_db_stmt(db, "outbox.requeue",
                         "UPDATE outbox SET status = 'queued', attempts = 0, "
                         " next_attempt_at = NOW(6), lease_owner = NULL, lease_until = NULL "
                         "WHERE id = ? AND status = 'dead'",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, t->id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    json_t *data = json_pack("{s:I}", "outbox_id", (json_int_t) t->id);
    rc = kf_event_add(db, ticket_id, "outbox.requeued",
                      t->agent_id ? KF_ACTOR_AGENT : KF_ACTOR_SYSTEM, t->agent_id, data, NULL,
                      error_r);
    json_decref(data);
    if (rc != KF_OK)
        return rc;
    t->was_dead = 1;
    return KF_OK;
}

/* POST /api/v1/outbox/{id}/retry - a dead row goes back in the queue, attempts reset. */
static int
h_outbox_retry(kf_call *c, kf_reply *out)
{
    struct requeue_tx t = {.agent_id = c->principal.agent_id, .pool = c->pool};
    const char *error = NULL;
    kf_stmt *st;
    int rc;

    if (kf_call_param_u64(c, "id", &t.id) != KF_OK)
        return kf_reply_problem(out, c, 404, "not-found", "No such outbox row.", NULL);
    switch ((rc = kf_tx_run(c->db, requeue_tx, &t, &error))) {
    case KF_OK:
        break;
    case KF_ENOTFOUND:
        return kf_reply_problem(out, c, 404, "not-found", "No such outbox row.", NULL);
    case KF_ECONFLICT:
        return kf_reply_problem(out, c, 409, "outbox-not-dead",
                                kf_pool_printf(c->pool, "Only a dead row can be retried; this "
                                               "one is %s.", t.status ? t.status : "?"),
                                NULL);
    default:
        return kf_reply_internal(out, c, error);
    }
    if ((rc = kf_db_stmt(c->db, "outbox.get", OUTBOX_COLS "WHERE id = ?", &st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_stmt_bind_u64(st, 0, t.id);
    if ((rc = kf_stmt_exec(st, &error)) != KF_OK || (rc = kf_stmt_fetch(st, &error)) != 1)
        return kf_reply_internal(out, c, error ? error : "outbox row vanished");
    json_t *row = row_json(st, c->pool);
    kf_stmt_done(st);
    return kf_reply_json(out, c, 200, row);
}

/* ---- debug ---- */

struct debug_add_tx {
    kf_outbox_new row;
    uint64_t id;
};

static int
debug_add_tx(kf_db *db, void *arg, const char **error_r)
{
    struct debug_add_tx *t = arg;
    return kf_outbox_add(db, &t->row, &t->id, error_r);
}

/*
 * POST /debug/outbox {"mode": "ok"|"fail"|"reject"|"sleep", "ms": N,
 * "channel": "debug", "ticket_id": N, "max_attempts": N, "dedupe_key": ".."}
 * - queue a row for the fake channel (or any channel name, to test one
 * without an adapter).  201 {"id": N}.
 */
static int
h_debug_outbox(kf_call *c, kf_reply *out)
{
    static const char *const allowed[] = {"mode", "ms", "channel", "ticket_id", "max_attempts",
                                          "dedupe_key", NULL};
    static const char *const modes[] = {"ok", "fail", "reject", "sleep", NULL};
    struct debug_add_tx t;
    const char *mode = "ok", *channel = "debug", *key = NULL, *error = NULL;
    uint64_t ms = 0, ticket_id = 0, max_attempts = 0;
    json_t *root, *errors = NULL;
    int rc;

    if (kf_call_json_object(c, &root) != KF_OK)
        return 0;
    kf_json_unknown_fields(root, allowed, &errors);
    kf_json_get_enum(root, "mode", 0, modes, &mode, &errors);
    kf_json_get_u64(root, "ms", 0, &ms, &errors);
    kf_json_get_str(root, "channel", 0, 32, &channel, &errors);
    kf_json_get_u64(root, "ticket_id", 0, &ticket_id, &errors);
    kf_json_get_u64(root, "max_attempts", 0, &max_attempts, &errors);
    kf_json_get_str(root, "dedupe_key", 0, 191, &key, &errors);
    if (ms > 60000)
        kf_problem_add_error(&errors, "ms", "at most 60000");
    if (max_attempts > 100)
        kf_problem_add_error(&errors, "max_attempts", "at most 100");
    if (errors != NULL)
        return kf_reply_invalid(out, c, errors);
    if (key == NULL) {
        unsigned char r[8];
        char hex[17];
        randombytes_buf(r, sizeof(r));
        sodium_bin2hex(hex, sizeof(hex), r, sizeof(r));
        key = kf_pool_printf(c->pool, "debug:%s", hex);
    }
    json_t *payload = json_pack("{s:s, s:I}", "mode", mode, "ms", (json_int_t) ms);
    memset(&t, 0, sizeof(t));
    t.row = (kf_outbox_new){.kind = "debug",
                            .channel = channel,
                            .target = "debug-target",
                            .payload = payload,
                            .dedupe_key = key,
                            .ticket_id = ticket_id,
                            .max_attempts = (unsigned) max_attempts};
    rc = kf_tx_run(c->db, debug_add_tx, &t, &error);
    json_decref(payload);
    if (rc != KF_OK)
        return kf_reply_internal(out, c, error);
    return kf_reply_json(out, c, 201, json_pack("{s:I}", "id", (json_int_t) t.id));
}

const kf_route kf_outbox_routes[] = {
    {KF_GET, "/api/v1/outbox", KF_AUTH_SUPERVISOR, 0, h_outbox_list, 0, NULL},
    {KF_POST, "/api/v1/outbox/{id}/retry", KF_AUTH_SUPERVISOR, 0, h_outbox_retry, 0, NULL},
    {KF_POST, "/debug/outbox", KF_AUTH_PUBLIC, 4096, h_debug_outbox, KF_ROUTE_DEBUG, NULL},
    {0, NULL, 0, 0, NULL, 0, NULL},
};
