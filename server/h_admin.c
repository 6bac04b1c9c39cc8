/*
 * h_admin.c - configuration through the API: agents (and their presence),
 * queues and their members, API tokens.
 *
 * Writes are admin-only; supervisors may read agents and queues; any agent
 * sets their own presence.  Every change writes an audit event (ticket_id
 * NULL, kinds agent.*, queue.*, token.*) in the same transaction.
 * Passwords are hashed before the transaction starts (argon2id is slow on
 * purpose); an API token is shown once, in the reply that creates it.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "kefu/auth.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/event.h"
#include "kefu/http.h"
#include "kefu/log.h"
#include "kefu/pool.h"
#include "kefu/server.h"

#define ADMIN_MAX_BODY 65536
#define LIST_DEFAULT 50
#define LIST_MAX 200
#define MAX_SKILLS 50
#define MAX_IDS 1000
#define TOKEN_MAX_LIFETIME (10ull * 366 * 86400) /* seconds */

static const char *const role_names[] = {"agent", "supervisor", "admin", NULL};
static const char *const presence_names[] = {"online", "away", "offline", NULL};

/* ---- small helpers ---- */

/* Path parameter name as a positive id, or a 422 naming it. */
static int
path_id(kf_call *c, kf_reply *out, const char *name, uint64_t *id_r)
{
    if (kf_call_param_u64(c, name, id_r) == KF_OK && *id_r > 0 && *id_r <= INT64_MAX)
        return 1;
    json_t *errors = NULL;
    kf_problem_add_error(&errors, name, "must be a positive integer");
    kf_reply_invalid(out, c, errors);
    return 0;
}

/* Decimal 1..INT64_MAX without sign, spaces or leading zeros. */
static int
parse_id(const char *s, uint64_t *v_r)
{
    uint64_t v = 0;
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 19 || s[0] == '0')
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char) s[i]))
            return 0;
        v = v * 10 + (uint64_t) (s[i] - '0');
    }
    if (v > INT64_MAX)
        return 0;
    *v_r = v;
    return 1;
}

/* ?limit=&after= (the cursor is opaque to clients; here it is the last id). */
static int
list_params(kf_call *c, kf_reply *out, unsigned *limit_r, uint64_t *after_r)
{
    const char *limit = kf_call_query(c, "limit"), *after = kf_call_query(c, "after");
    json_t *errors = NULL;
    uint64_t v;

    *limit_r = LIST_DEFAULT;
    *after_r = 0;
    if (limit != NULL) {
        if (parse_id(limit, &v) && v <= LIST_MAX)
            *limit_r = (unsigned) v;
        else
            kf_problem_add_error(&errors, "limit", "must be an integer 1..200");
    }
    if (after != NULL && after[0] != '\0') {
        if (parse_id(after, &v))
            *after_r = v;
        else
            kf_problem_add_error(&errors, "after", "is not a cursor this list returned");
    }
    if (errors != NULL) {
        kf_reply_problem(out, c, 422, "invalid-parameter", "Bad query parameter.", errors);
        return 0;
    }
    return 1;
}

/* A list reply: items plus the cursor after the last one when there may be more. */
static int
reply_list(kf_reply *out, kf_call *c, json_t *items, unsigned limit, uint64_t last_id)
{
    json_t *next = json_null();
    if (json_array_size(items) > limit) {
        json_array_remove(items, limit);
        next = json_sprintf("%llu", (unsigned long long) last_id);
    }
    return kf_reply_json(out, c, 200, json_pack("{s:o, s:o}", "items", items, "next", next));
}

typedef kf_row_json_fn row_json_fn;

/*
 * Run st (parameters bound, its last LIMIT being limit + 1, its first
 * column the row id) and reply one keyset page of rows made by row.
 */
static int
reply_page(kf_reply *out, kf_call *c, kf_stmt *st, unsigned limit, row_json_fn *row)
{
    const char *error = NULL;
    uint64_t last = 0;
    unsigned n = 0;
    int rc;

    if ((rc = kf_stmt_exec(st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    json_t *items = json_array();
    while ((rc = kf_stmt_fetch(st, &error)) == 1) {
        if (n++ < limit)
            last = kf_stmt_col_u64(st, 0);
        json_array_append_new(items, row(st, c->pool));
    }
    kf_stmt_done(st);
    if (rc < 0) {
        json_decref(items);
        return kf_reply_internal(out, c, error);
    }
    return reply_list(out, c, items, limit, last);
}

/* An unsigned integer field 0..max (kf_json_get_u64 insists on > 0). */
static int
get_uint(json_t *obj, const char *key, uint64_t max, uint64_t *out, json_t **errors)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t) json_integer_value(v) > max) {
        char msg[64];
        snprintf(msg, sizeof(msg), "must be an integer 0..%llu", (unsigned long long) max);
        kf_problem_add_error(errors, key, msg);
        return 0;
    }
    *out = (uint64_t) json_integer_value(v);
    return 1;
}

/* skills: up to 50 distinct strings of 1..64 bytes; *text_r gets compact JSON (pool). */
static int
get_skills(kf_call *c, json_t *obj, const char **text_r, json_t **errors)
{
    json_t *v = json_object_get(obj, "skills"), *s;
    size_t i;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_array(v) || json_array_size(v) > MAX_SKILLS) {
        kf_problem_add_error(errors, "skills", "must be an array of at most 50 strings");
        return 0;
    }
    json_array_foreach(v, i, s)
    {
        size_t len = json_is_string(s) ? json_string_length(s) : 0;
        if (len == 0 || len > 64 || memchr(json_string_value(s), '\0', len) != NULL) {
            kf_problem_add_error(errors, "skills", "every skill must be a string of 1..64 bytes");
            return 0;
        }
        for (size_t k = 0; k < i; k++)
            if (json_equal(json_array_get(v, k), s)) {
                kf_problem_add_error(errors, "skills", "must not repeat a skill");
                return 0;
            }
    }
    char *text = json_dumps(v, JSON_COMPACT);
    *text_r = kf_pool_strdup(c->pool, text);
    free(text);
    return 1;
}

/* An array of distinct positive ids (at most MAX_IDS). */
static int
get_ids(kf_call *c, json_t *obj, const char *key, int required, uint64_t **ids_r, size_t *n_r,
        json_t **errors)
{
    json_t *v = json_object_get(obj, key), *e;
    size_t i;
    if (v == NULL || json_is_null(v)) {
        if (required)
            kf_problem_add_error(errors, key, "is required");
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) > MAX_IDS) {
        kf_problem_add_error(errors, key, "must be an array of at most 1000 ids");
        return 0;
    }
    uint64_t *ids = kf_pool_alloc(c->pool, (json_array_size(v) + 1) * sizeof(*ids));
    json_array_foreach(v, i, e)
    {
        if (!json_is_integer(e) || json_integer_value(e) <= 0) {
            kf_problem_add_error(errors, key, "every id must be a positive integer");
            return 0;
        }
        ids[i] = (uint64_t) json_integer_value(e);
        for (size_t k = 0; k < i; k++)
            if (ids[k] == ids[i]) {
                kf_problem_add_error(errors, key, "must not repeat an id");
                return 0;
            }
    }
    *ids_r = ids;
    *n_r = json_array_size(v);
    return 1;
}

/* Required or optional string validated by ok(); message names the rule. */
static int
get_checked(json_t *obj, const char *key, int required, size_t max, int (*ok)(const char *),
            const char *rule, const char **out, json_t **errors)
{
    const char *s = NULL;
    if (!kf_json_get_str(obj, key, required, max, &s, errors))
        return 0;
    if (!ok(s)) {
        kf_problem_add_error(errors, key, rule);
        return 0;
    }
    *out = s;
    return 1;
}

static int
name_ok(const char *s)
{
    if (s[0] == '\0')
        return 0;
    for (const unsigned char *p = (const unsigned char *) s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

/* Audit event about configuration (no ticket), written in the caller's transaction. */
static int
audit(kf_db *db, const kf_call *c, const char *kind, json_t *data, const char **error_r)
{
    if (c->principal.via_token)
        json_object_set_new(data, "token_id", json_integer((json_int_t) c->principal.token_id));
    int rc = kf_event_add(db, 0, kind, c->principal.agent_id ? KF_ACTOR_AGENT : KF_ACTOR_SYSTEM,
                          c->principal.agent_id, data, NULL, error_r);
    json_decref(data);
    return rc;
}

/* Map a transaction's status to the reply. */
static int
reply_failed(kf_reply *out, kf_call *c, int rc, const char *error, const char *field)
{
    if (rc == KF_ENOTFOUND)
        return kf_reply_problem(out, c, 404, "not-found", error ? error : "No such resource.",
                                NULL);
    if (rc == KF_ECONFLICT) {
        json_t *errors = NULL;
        if (field != NULL)
            kf_problem_add_error(&errors, field, error ? error : "conflicts with existing data");
        return kf_reply_problem(out, c, 409, "conflict", error ? error : "Conflict.", errors);
    }
    if (rc == KF_EINVAL) {
        json_t *errors = NULL;
        kf_problem_add_error(&errors, field ? field : "body", error ? error : "is invalid");
        return kf_reply_invalid(out, c, errors);
    }
    return kf_reply_internal(out, c, error);
}

static int
exists(kf_db *db, const char *name, const char *sql, uint64_t id, int *found_r,
       const char **error_r)
{
    kf_stmt *st;
    int rc;
    if ((rc = kf_db_stmt(db, name, sql, &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    rc = kf_stmt_fetch(st, error_r);
    kf_stmt_done(st);
    if (rc < 0)
        return rc;
    *found_r = rc == 1;
    return KF_OK;
}

static int
agent_exists(kf_db *db, uint64_t id, int *found_r, const char **error_r)
{
    return exists(db, "admin.agent_exists", "SELECT 1 FROM agent WHERE id = ?", id, found_r,
                  error_r);
}

static int
queue_exists(kf_db *db, uint64_t id, int *found_r, const char **error_r)
{
    return exists(db, "admin.queue_exists", "SELECT 1 FROM queue WHERE id = ?", id, found_r,
                  error_r);
}

static json_t *
ids_json(const uint64_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer((json_int_t) ids[i]));
    return a;
}

/* ---- agents ---- */

/* GET /api/v1/agents?role=&active=&limit=&after= */
static int
h_agents_list(kf_call *c, kf_reply *out)
{
    const char *role = kf_call_query(c, "role"), *active = kf_call_query(c, "active");
    const char *error = NULL;
    json_t *errors = NULL;
    unsigned limit;
    uint64_t after;
    int active_v = -1;
    kf_stmt *st;
    int rc;

    if (!list_params(c, out, &limit, &after))
        return 0;
    if (role != NULL && kf_role_parse(role) == KF_ROLE_NONE)
        kf_problem_add_error(&errors, "role", "must be one of: agent supervisor admin");
    if (active != NULL) {
        if (!strcmp(active, "true") || !strcmp(active, "1"))
            active_v = 1;
        else if (!strcmp(active, "false") || !strcmp(active, "0"))
            active_v = 0;
        else
            kf_problem_add_error(&errors, "active", "must be true or false");
    }
    if (errors != NULL)
        return kf_reply_problem(out, c, 422, "invalid-parameter", "Bad query parameter.", errors);
    if ((rc = kf_db_stmt(c->db, "admin.agents_list",
                         "SELECT " KF_AGENT_COLUMNS " FROM agent a WHERE a.id > ? "
                         "AND (? IS NULL OR a.role = ?) AND (? IS NULL OR a.active = ?) "
                         "ORDER BY a.id LIMIT ?",
                         &st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_stmt_bind_u64(st, 0, after);
    kf_stmt_bind_cstr(st, 1, role);
    kf_stmt_bind_cstr(st, 2, role);
    if (active_v < 0) {
        kf_stmt_bind_null(st, 3);
        kf_stmt_bind_null(st, 4);
    } else {
        kf_stmt_bind_i64(st, 3, active_v);
        kf_stmt_bind_i64(st, 4, active_v);
    }
    kf_stmt_bind_u64(st, 5, limit + 1);
    return reply_page(out, c, st, limit, kf_agent_row_json);
}

/* GET /api/v1/agents/{id} */
static int
h_agent_get(kf_call *c, kf_reply *out)
{
    const char *error = NULL;
    json_t *agent;
    uint64_t id;
    int rc;

    if (!path_id(c, out, "id", &id))
        return 0;
    if ((rc = kf_agent_get(c->db, c->pool, id, &agent, &error)) != KF_OK)
        return reply_failed(out, c, rc, rc == KF_ENOTFOUND ? "No agent with this id." : error,
                            NULL);
    return kf_reply_json(out, c, 200, agent);
}

/* One row by id as JSON; KF_ENOTFOUND with *error_r = missing when there is none. */
static int
row_by_id(kf_db *db, kf_pool *pool, const char *name, const char *sql, uint64_t id,
          row_json_fn *row, const char *missing, json_t **r, const char **error_r)
{
    int rc = kf_db_row_json(db, pool, name, sql, id, row, r, error_r);
    if (rc == KF_ENOTFOUND)
        *error_r = missing;
    return rc;
}

/* Replace an agent's queues (inside the transaction); unknown queue -> KF_EINVAL. */
static int
set_agent_queues(kf_db *db, uint64_t agent_id, const uint64_t *ids, size_t n, kf_pool *pool,
                 const char **error_r)
{
    kf_stmt *st;
    int rc, found;
    for (size_t i = 0; i < n; i++) {
        if ((rc = queue_exists(db, ids[i], &found, error_r)) != KF_OK)
            return rc;
        if (!found) {
            *error_r = kf_pool_printf(pool, "no queue with id %llu", (unsigned long long) ids[i]);
            return KF_EINVAL;
        }
    }
    if ((rc = kf_db_stmt(db, "admin.agent_queues_clear",
                         "DELETE FROM agent_queue WHERE agent_id = ?", &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, agent_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if ((rc = kf_db_stmt(db, "admin.member_add",
                             "INSERT IGNORE INTO agent_queue (agent_id, queue_id) VALUES (?, ?)",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, agent_id);
        kf_stmt_bind_u64(st, 1, ids[i]);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
    }
    return KF_OK;
}

struct agent_tx {
    kf_call *c;
    uint64_t id;                       /* in (update) / out (create) */
    const char *login, *display_name, *email, *role, *hash, *skills;
    int has_capacity, has_active, active;
    uint64_t capacity;
    uint64_t *queue_ids;
    size_t n_queues;
    int has_queues;
    const char *field; /* out: the field a conflict or invalid value is about */
};

static int
agent_create_tx(kf_db *db, void *arg, const char **error_r)
{
    struct agent_tx *t = arg;
    kf_stmt *st;
    int rc;

    t->field = NULL;
    if ((rc = kf_db_stmt(db, "admin.agent_create",
                         "INSERT INTO agent (login, display_name, email, role, password_hash, "
                         "capacity, skills, active) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->login);
    kf_stmt_bind_cstr(st, 1, t->display_name);
    kf_stmt_bind_cstr(st, 2, t->email);
    kf_stmt_bind_cstr(st, 3, t->role);
    kf_stmt_bind_cstr(st, 4, t->hash);
    kf_stmt_bind_u64(st, 5, t->has_capacity ? t->capacity : 10);
    kf_stmt_bind_cstr(st, 6, t->skills ? t->skills : "[]");
    kf_stmt_bind_i64(st, 7, t->has_active ? t->active : 1);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK) {
        if (rc == KF_ECONFLICT) {
            t->field = "login";
            *error_r = "An agent with this login already exists.";
        }
        return rc;
    }
    t->id = kf_stmt_insert_id(st);
    if (t->has_queues && (rc = set_agent_queues(db, t->id, t->queue_ids, t->n_queues, t->c->pool,
                                                error_r)) != KF_OK) {
        if (rc == KF_EINVAL)
            t->field = "queue_ids";
        return rc;
    }
    return audit(db, t->c, "agent.created",
                 json_pack("{s:I, s:s, s:s}", "agent_id", (json_int_t) t->id, "login", t->login,
                           "role", t->role),
                 error_r);
}

static const char *const agent_create_fields[] = {
    "login", "display_name", "email", "role", "password", "capacity", "skills", "active",
    "queue_ids", NULL};

/* POST /api/v1/agents */
static int
h_agent_create(kf_call *c, kf_reply *out)
{
    json_t *body, *errors = NULL, *agent;
    const char *password = NULL, *error = NULL;
    struct agent_tx t = {.c = c, .role = "agent"};
    char hash[crypto_pwhash_STRBYTES];
    int rc;

    if (kf_call_json_object(c, &body) != KF_OK)
        return 0;
    kf_json_unknown_fields(body, agent_create_fields, &errors);
    get_checked(body, "login", 1, 64, kf_login_ok,
                "must be 1..64 of A-Z a-z 0-9 . _ @ -, starting with a letter or digit", &t.login,
                &errors);
    get_checked(body, "display_name", 1, 200, name_ok,
                "must be non-empty, without control characters", &t.display_name, &errors);
    get_checked(body, "email", 1, 254, kf_email_ok, "must be an e-mail address", &t.email, &errors);
    kf_json_get_enum(body, "role", 0, role_names, &t.role, &errors);
    get_checked(body, "password", 1, 1024, kf_password_ok, "must be 8..1024 bytes", &password,
                &errors);
    t.has_capacity = get_uint(body, "capacity", 1000, &t.capacity, &errors);
    get_skills(c, body, &t.skills, &errors);
    t.has_active = kf_json_get_bool(body, "active", 0, &t.active, &errors);
    t.has_queues = get_ids(c, body, "queue_ids", 0, &t.queue_ids, &t.n_queues, &errors);
    if (errors != NULL)
        return kf_reply_invalid(out, c, errors);

    if (kf_auth_hash_password(password, hash, sizeof(hash)) != KF_OK)
        return kf_reply_internal(out, c, "password hashing failed");
    t.hash = hash;
    rc = kf_tx_run(c->db, agent_create_tx, &t, &error);
    sodium_memzero(hash, sizeof(hash));
    if (rc != KF_OK)
        return reply_failed(out, c, rc, error, t.field);
    if ((rc = kf_agent_get(c->db, c->pool, t.id, &agent, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_reply_header(out, c, "Location",
                    kf_pool_printf(c->pool, "/api/v1/agents/%llu", (unsigned long long) t.id));
    return kf_reply_json(out, c, 201, agent);
}

static int
agent_update_tx(kf_db *db, void *arg, const char **error_r)
{
    struct agent_tx *t = arg;
    kf_stmt *st;
    int rc;

    t->field = NULL;
    if ((rc = kf_db_stmt(db, "admin.agent_lock",
                         "SELECT role, active FROM agent WHERE id = ? FOR UPDATE", &st, error_r)) !=
        KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, t->id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_stmt_fetch(st, error_r)) != 1) {
        kf_stmt_done(st);
        if (rc == 0)
            *error_r = "No agent with this id.";
        return rc < 0 ? rc : KF_ENOTFOUND;
    }
    int was_admin = strcmp(kf_stmt_col_str(st, 0, t->c->pool, NULL), "admin") == 0;
    int was_active = (int) kf_stmt_col_i64(st, 1);
    kf_stmt_done(st);

    /* Never leave the system without an active admin agent. */
    if (was_admin && was_active &&
        ((t->role != NULL && strcmp(t->role, "admin") != 0) || (t->has_active && !t->active))) {
        if ((rc = kf_db_stmt(db, "admin.other_admins",
                             "SELECT COUNT(*) FROM agent WHERE role = 'admin' AND active = 1 "
                             "AND id <> ? FOR UPDATE",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, t->id);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        rc = kf_stmt_fetch(st, error_r);
        uint64_t others = rc == 1 ? kf_stmt_col_u64(st, 0) : 0;
        kf_stmt_done(st);
        if (rc < 0)
            return rc;
        if (others == 0) {
            t->field = t->role != NULL && strcmp(t->role, "admin") != 0 ? "role" : "active";
            *error_r = "This is the last active admin; make another agent admin first.";
            return KF_ECONFLICT;
        }
    }
    if ((rc = kf_db_stmt(db, "admin.agent_update",
                         "UPDATE agent SET display_name = COALESCE(?, display_name), "
                         "email = COALESCE(?, email), role = COALESCE(?, role), "
                         "capacity = COALESCE(?, capacity), skills = COALESCE(?, skills), "
                         "active = COALESCE(?, active) WHERE id = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->display_name);
    kf_stmt_bind_cstr(st, 1, t->email);
    kf_stmt_bind_cstr(st, 2, t->role);
    if (t->has_capacity)
        kf_stmt_bind_u64(st, 3, t->capacity);
    else
        kf_stmt_bind_null(st, 3);
    kf_stmt_bind_cstr(st, 4, t->skills);
    if (t->has_active)
        kf_stmt_bind_i64(st, 5, t->active);
    else
        kf_stmt_bind_null(st, 5);
    kf_stmt_bind_u64(st, 6, t->id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if (t->has_active && !t->active && was_active &&
        (rc = kf_auth_revoke_sessions(db, t->id, NULL, error_r)) != KF_OK)
        return rc;
    if (t->has_queues && (rc = set_agent_queues(db, t->id, t->queue_ids, t->n_queues, t->c->pool,
                                                error_r)) != KF_OK) {
        if (rc == KF_EINVAL)
            t->field = "queue_ids";
        return rc;
    }
    json_t *changed = json_array();
    if (t->display_name)
        json_array_append_new(changed, json_string("display_name"));
    if (t->email)
        json_array_append_new(changed, json_string("email"));
    if (t->role)
        json_array_append_new(changed, json_string("role"));
    if (t->has_capacity)
        json_array_append_new(changed, json_string("capacity"));
    if (t->skills)
        json_array_append_new(changed, json_string("skills"));
    if (t->has_active)
        json_array_append_new(changed, json_string("active"));
    if (t->has_queues)
        json_array_append_new(changed, json_string("queue_ids"));
    if (json_array_size(changed) == 0) { /* an empty patch changes nothing */
        json_decref(changed);
        return KF_OK;
    }
    return audit(db, t->c, "agent.updated",
                 json_pack("{s:I, s:o}", "agent_id", (json_int_t) t->id, "fields", changed),
                 error_r);
}

/* PATCH /api/v1/agents/{id} */
static int
h_agent_update(kf_call *c, kf_reply *out)
{
    static const char *const fields[] = {"display_name", "email", "role", "capacity", "skills",
                                         "active", "queue_ids", NULL};
    json_t *body, *errors = NULL, *agent;
    const char *error = NULL;
    struct agent_tx t = {.c = c};
    int rc;

    if (!path_id(c, out, "id", &t.id))
        return 0;
    if (kf_call_json_object(c, &body) != KF_OK)
        return 0;
    kf_json_unknown_fields(body, fields, &errors);
    get_checked(body, "display_name", 0, 200, name_ok,
                "must be non-empty, without control characters", &t.display_name, &errors);
    get_checked(body, "email", 0, 254, kf_email_ok, "must be an e-mail address", &t.email, &errors);
    kf_json_get_enum(body, "role", 0, role_names, &t.role, &errors);
    t.has_capacity = get_uint(body, "capacity", 1000, &t.capacity, &errors);
    get_skills(c, body, &t.skills, &errors);
    t.has_active = kf_json_get_bool(body, "active", 0, &t.active, &errors);
    t.has_queues = get_ids(c, body, "queue_ids", 0, &t.queue_ids, &t.n_queues, &errors);
    if (errors != NULL)
        return kf_reply_invalid(out, c, errors);
    if ((rc = kf_tx_run(c->db, agent_update_tx, &t, &error)) != KF_OK)
        return reply_failed(out, c, rc, error, t.field);
    if ((rc = kf_agent_get(c->db, c->pool, t.id, &agent, &error)) != KF_OK)
        return reply_failed(out, c, rc, error, NULL);
    return kf_reply_json(out, c, 200, agent);
}

struct password_tx {
    const kf_call *c;
    uint64_t id;
    const char *hash;
    uint64_t revoked;
};

static int
password_tx(kf_db *db, void *arg, const char **error_r)
{
    struct password_tx *t = arg;
    kf_stmt *st;
    int rc, found;

    if ((rc = agent_exists(db, t->id, &found, error_r)) != KF_OK)
        return rc;
    if (!found) {
        *error_r = "No agent with this id.";
        return KF_ENOTFOUND;
    }
    if ((rc = kf_db_stmt(db, "admin.agent_password",
                         "UPDATE agent SET password_hash = ? WHERE id = ?", &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->hash);
    kf_stmt_bind_u64(st, 1, t->id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_auth_revoke_sessions(db, t->id, &t->revoked, error_r)) != KF_OK)
        return rc;
    return audit(db, t->c, "agent.password_set",
                 json_pack("{s:I, s:I}", "agent_id", (json_int_t) t->id, "sessions_revoked",
                           (json_int_t) t->revoked),
                 error_r);
}

/* PUT /api/v1/agents/{id}/password {password} - also ends the agent's sessions. */
static int
h_agent_password(kf_call *c, kf_reply *out)
{
    static const char *const fields[] = {"password", NULL};
    json_t *body, *errors = NULL;
    const char *password = NULL, *error = NULL;
    char hash[crypto_pwhash_STRBYTES];
    struct password_tx t = {.c = c};
    int rc;

    if (!path_id(c, out, "id", &t.id))
        return 0;
    if (kf_call_json_object(c, &body) != KF_OK)
        return 0;
    kf_json_unknown_fields(body, fields, &errors);
    get_checked(body, "password", 1, 1024, kf_password_ok, "must be 8..1024 bytes", &password,
                &errors);
    if (errors != NULL)
        return kf_reply_invalid(out, c, errors);
    if (kf_auth_hash_password(password, hash, sizeof(hash)) != KF_OK)
        return kf_reply_internal(out, c, "password hashing failed");
    t.hash = hash;
    rc = kf_tx_run(c->db, password_tx, &t, &error);
    sodium_memzero(hash, sizeof(hash));
    if (rc != KF_OK)
        return reply_failed(out, c, rc, error, NULL);
    return kf_reply_text(out, c, 204, NULL, "", 0);
}

struct revoke_tx {
    const kf_call *c;
    uint64_t id, revoked;
};

static int
revoke_sessions_tx(kf_db *db, void *arg, const char **error_r)
{
    struct revoke_tx *t = arg;
    int rc, found;
    if ((rc = agent_exists(db, t->id, &found, error_r)) != KF_OK)
        return rc;
    if (!found) {
        *error_r = "No agent with this id.";
        return KF_ENOTFOUND;
    }
    if ((rc = kf_auth_revoke_sessions(db, t->id, &t->revoked, error_r)) != KF_OK)
        return rc;
    return audit(db, t->c, "agent.sessions_revoked",
                 json_pack("{s:I, s:I}", "agent_id", (json_int_t) t->id, "sessions_revoked",
                           (json_int_t) t->revoked),
                 error_r);
}

/* DELETE /api/v1/agents/{id}/sessions - log the agent out everywhere. */
static int
h_agent_sessions_revoke(kf_call *c, kf_reply *out)
{
    const char *error = NULL;
    struct revoke_tx t = {.c = c};
    int rc;
    if (!path_id(c, out, "id", &t.id))
        return 0;
    if ((rc = kf_tx_run(c->db, revoke_sessions_tx, &t, &error)) != KF_OK)
        return reply_failed(out, c, rc, error, NULL);
    return kf_reply_json(out, c, 200, json_pack("{s:I}", "revoked", (json_int_t) t.revoked));
}

struct presence_tx {
    const kf_call *c;
    const char *presence;
};

static int
presence_tx(kf_db *db, void *arg, const char **error_r)
{
    struct presence_tx *t = arg;
    kf_stmt *st;
    int rc;
    if ((rc = kf_db_stmt(db, "admin.presence", "UPDATE agent SET presence = ? WHERE id = ?", &st,
                         error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->presence);
    kf_stmt_bind_u64(st, 1, t->c->principal.agent_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    return audit(db, t->c, "agent.presence",
                 json_pack("{s:I, s:s}", "agent_id", (json_int_t) t->c->principal.agent_id,
                           "presence", t->presence),
                 error_r);
}

/* PUT /api/v1/agents/me/presence {presence} */
static int
h_presence(kf_call *c, kf_reply *out)
{
    static const char *const fields[] = {"presence", NULL};
    json_t *body, *errors = NULL;
    const char *error = NULL;
    struct presence_tx t = {.c = c};
    int rc;

    if (c->principal.agent_id == 0)
        return kf_reply_problem(out, c, 400, "not-an-agent",
                                "This API token is not bound to an agent; it has no presence.",
                                NULL);
    if (kf_call_json_object(c, &body) != KF_OK)
        return 0;
    kf_json_unknown_fields(body, fields, &errors);
    kf_json_get_enum(body, "presence", 1, presence_names, &t.presence, &errors);
    if (errors != NULL)
        return kf_reply_invalid(out, c, errors);
    if ((rc = kf_tx_run(c->db, presence_tx, &t, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    return kf_reply_json(out, c, 200,
                         json_pack("{s:I, s:s}", "agent_id", (json_int_t) c->principal.agent_id,
                                   "presence", t.presence));
}

/* ---- queues ---- */

#define QUEUE_COLUMNS                                                                              \
    "q.id, q.name, q.slug, q.description, " KF_TIME_SQL("q.created_at") ", "                     \
    "(SELECT GROUP_CONCAT(aq.agent_id ORDER BY aq.agent_id) FROM agent_queue aq "                \
    "WHERE aq.queue_id = q.id)"

/* "1,5,9" -> [1,5,9] */
static json_t *
csv_ids(const char *s)
{
    json_t *a = json_array();
    while (s != NULL && *s) {
        char *end = NULL;
        unsigned long long v = strtoull(s, &end, 10);
        if (end == s)
            break;
        json_array_append_new(a, json_integer((json_int_t) v));
        s = *end == ',' ? end + 1 : end;
    }
    return a;
}

static json_t *
queue_row_json(kf_stmt *st, kf_pool *pool)
{
    return json_pack("{s:I, s:s, s:s, s:s, s:s?, s:o}", "id", (json_int_t) kf_stmt_col_u64(st, 0),
                     "name", kf_stmt_col_str(st, 1, pool, NULL), "slug",
                     kf_stmt_col_str(st, 2, pool, NULL), "description",
                     kf_stmt_col_str(st, 3, pool, NULL), "created_at",
                     kf_stmt_col_str(st, 4, pool, NULL), "agent_ids",
                     csv_ids(kf_stmt_col_str(st, 5, pool, NULL)));
}

static int
queue_get(kf_db *db, kf_pool *pool, uint64_t id, json_t **q_r, const char **error_r)
{
    return row_by_id(db, pool, "admin.queue_get",
                     "SELECT " QUEUE_COLUMNS " FROM queue q WHERE q.id = ?", id, queue_row_json,
                     "No queue with this id.", q_r, error_r);
}

/* GET /api/v1/queues?limit=&after= */
static int
h_queues_list(kf_call *c, kf_reply *out)
{
    const char *error = NULL;
    unsigned limit;
    uint64_t after;
    kf_stmt *st;
    int rc;

    if (!list_params(c, out, &limit, &after))
        return 0;
    if ((rc = kf_db_stmt(c->db, "admin.queues_list",
                         "SELECT " QUEUE_COLUMNS
                         " FROM queue q WHERE q.id > ? ORDER BY q.id LIMIT ?",
                         &st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_stmt_bind_u64(st, 0, after);
    kf_stmt_bind_u64(st, 1, limit + 1);
    return reply_page(out, c, st, limit, queue_row_json);
}

/* GET /api/v1/queues/{id} */
static int
h_queue_get(kf_call *c, kf_reply *out)
{
    const char *error = NULL;
    json_t *q;
    uint64_t id;
    int rc;
    if (!path_id(c, out, "id", &id))
        return 0;
    if ((rc = queue_get(c->db, c->pool, id, &q, &error)) != KF_OK)
        return reply_failed(out, c, rc, error, NULL);
    return kf_reply_json(out, c, 200, q);
}

struct queue_tx {
    const kf_call *c;
    uint64_t id;
    const char *name, *slug, *description;
    const char *field; /* out */
};

static int
queue_create_tx(kf_db *db, void *arg, const char **error_r)
{
    struct queue_tx *t = arg;
    kf_stmt *st;
    int rc;
    t->field = NULL;
    if ((rc = kf_db_stmt(db, "admin.queue_create",
                         "INSERT INTO queue (name, slug, description) VALUES (?, ?, ?)", &st,
                         error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->name);
    kf_stmt_bind_cstr(st, 1, t->slug);
    kf_stmt_bind_cstr(st, 2, t->description ? t->description : "");
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK) {
        if (rc == KF_ECONFLICT) {
            t->field = "slug";
            *error_r = "A queue with this slug already exists.";
        }
        return rc;
    }
    t->id = kf_stmt_insert_id(st);
    return audit(db, t->c, "queue.created",
                 json_pack("{s:I, s:s}", "queue_id", (json_int_t) t->id, "slug", t->slug), error_r);
}

/* POST /api/v1/queues {name, slug, description?} */
static int
h_queue_create(kf_call *c, kf_reply *out)
{
    static const char *const fields[] = {"name", "slug", "description", NULL};
    json_t *body, *errors = NULL, *q;
    const char *error = NULL;
    struct queue_tx t = {.c = c};
    int rc;

    if (kf_call_json_object(c, &body) != KF_OK)
        return 0;
    kf_json_unknown_fields(body, fields, &errors);
    get_checked(body, "name", 1, 100, name_ok, "must be non-empty, without control characters",
                &t.name, &errors);
    get_checked(body, "slug", 1, 64, kf_slug_ok, "must be 1..64 of a-z 0-9 _ -", &t.slug, &errors);
    kf_json_get_str(body, "description", 0, 500, &t.description, &errors);
    if (errors != NULL)
        return kf_reply_invalid(out, c, errors);
    if ((rc = kf_tx_run(c->db, queue_create_tx, &t, &error)) != KF_OK)
        return reply_failed(out, c, rc, error, t.field);
    if ((rc = queue_get(c->db, c->pool, t.id, &q, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_reply_header(out, c, "Location",
                    kf_pool_printf(c->pool, "/api/v1/queues/%llu", (unsigned long long) t.id));
    return kf_reply_json(out, c, 201, q);
}

static int
queue_update_tx(kf_db *db, void *arg, const char **error_r)
{
    struct queue_tx *t = arg;
    kf_stmt *st;
    int rc, found;
    t->field = NULL;
    if ((rc = queue_exists(db, t->id, &found, error_r)) != KF_OK)
        return rc;
    if (!found) {
        *error_r = "No queue with this id.";
        return KF_ENOTFOUND;
    }
    if ((rc = kf_db_stmt(db, "admin.queue_update",
                         "UPDATE queue SET name = COALESCE(?, name), slug = COALESCE(?, slug), "
                         "description = COALESCE(?, description) WHERE id = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->name);
    kf_stmt_bind_cstr(st, 1, t->slug);
    kf_stmt_bind_cstr(st, 2, t->description);
    kf_stmt_bind_u64(st, 3, t->id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK) {
        if (rc == KF_ECONFLICT) {
            t->field = "slug";
            *error_r = "A queue with this slug already exists.";
        }
        return rc;
    }
    return audit(db, t->c, "queue.updated", json_pack("{s:I}", "queue_id", (json_int_t) t->id),
                 error_r);
}

/* PATCH /api/v1/queues/{id} {name?, slug?, description?} */
static int
h_queue_update(kf_call *c, kf_reply *out)
{
    static const char *const fields[] = {"name", "slug", "description", NULL};
    json_t *body, *errors = NULL, *q;
    const char *error = NULL;
    struct queue_tx t = {.c = c};
    int rc;

    if (!path_id(c, out, "id", &t.id))
        return 0;
    if (kf_call_json_object(c, &body) != KF_OK)
        return 0;
    kf_json_unknown_fields(body, fields, &errors);
    get_checked(body, "name", 0, 100, name_ok, "must be non-empty, without control characters",
                &t.name, &errors);
    get_checked(body, "slug", 0, 64, kf_slug_ok, "must be 1..64 of a-z 0-9 _ -", &t.slug, &errors);
    kf_json_get_str(body, "description", 0, 500, &t.description, &errors);
    if (errors != NULL)
        return kf_reply_invalid(out, c, errors);
    if ((rc = kf_tx_run(c->db, queue_update_tx, &t, &error)) != KF_OK)
        return reply_failed(out, c, rc, error, t.field);
    if ((rc = queue_get(c->db, c->pool, t.id, &q, &error)) != KF_OK)
        return reply_failed(out, c, rc, error, NULL);
    return kf_reply_json(out, c, 200, q);
}

static int
queue_delete_tx(kf_db *db, void *arg, const char **error_r)
{
    struct queue_tx *t = arg;
    kf_stmt *st;
    int rc;
    if ((rc = kf_db_stmt(db, "admin.queue_delete", "DELETE FROM queue WHERE id = ?", &st,
                         error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, t->id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK) {
        if (rc == KF_ECONFLICT)
            *error_r = "The queue still has tickets; move them to another queue first.";
        return rc;
    }
    if (kf_stmt_affected(st) == 0) {
        *error_r = "No queue with this id.";
        return KF_ENOTFOUND;
    }
    return audit(db, t->c, "queue.deleted", json_pack("{s:I}", "queue_id", (json_int_t) t->id),
                 error_r);
}

/* DELETE /api/v1/queues/{id} - refused (409) while tickets are in it. */
static int
h_queue_delete(kf_call *c, kf_reply *out)
{
    const char *error = NULL;
    struct queue_tx t = {.c = c};
    int rc;
    if (!path_id(c, out, "id", &t.id))
        return 0;
    if ((rc = kf_tx_run(c->db, queue_delete_tx, &t, &error)) != KF_OK)
        return reply_failed(out, c, rc, error, NULL);
    return kf_reply_text(out, c, 204, NULL, "", 0);
}

/* GET /api/v1/queues/{id}/members - the member agents. */
static int
h_queue_members(kf_call *c, kf_reply *out)
{
    const char *error = NULL;
    uint64_t id;
    kf_stmt *st;
    int rc, found;

    if (!path_id(c, out, "id", &id))
        return 0;
    if ((rc = queue_exists(c->db, id, &found, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    if (!found)
        return reply_failed(out, c, KF_ENOTFOUND, "No queue with this id.", NULL);
    if ((rc = kf_db_stmt(c->db, "admin.queue_members",
                         "SELECT " KF_AGENT_COLUMNS " FROM agent_queue m "
                         "JOIN agent a ON a.id = m.agent_id WHERE m.queue_id = ? ORDER BY a.id",
                         &st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_stmt_bind_u64(st, 0, id);
    if ((rc = kf_stmt_exec(st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    json_t *items = json_array();
    while ((rc = kf_stmt_fetch(st, &error)) == 1)
        json_array_append_new(items, kf_agent_row_json(st, c->pool));
    kf_stmt_done(st);
    if (rc < 0) {
        json_decref(items);
        return kf_reply_internal(out, c, error);
    }
    return kf_reply_json(out, c, 200, json_pack("{s:I, s:o}", "queue_id", (json_int_t) id, "items",
                                                items));
}

struct members_tx {
    const kf_call *c;
    uint64_t queue_id, agent_id; /* agent_id: add/remove one */
    uint64_t *ids;               /* replace all */
    size_t n;
    int op;                      /* 0 replace, 1 add, -1 remove */
    const char *field;           /* out */
};

static int
members_tx(kf_db *db, void *arg, const char **error_r)
{
    struct members_tx *t = arg;
    kf_stmt *st;
    int rc, found;

    t->field = NULL;
    if ((rc = kf_db_stmt(db, "admin.queue_lock", "SELECT id FROM queue WHERE id = ? FOR UPDATE",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, t->queue_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    rc = kf_stmt_fetch(st, error_r);
    kf_stmt_done(st);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        *error_r = "No queue with this id.";
        return KF_ENOTFOUND;
    }
    if (t->op != 0) {
        if ((rc = agent_exists(db, t->agent_id, &found, error_r)) != KF_OK)
            return rc;
        if (!found) {
            *error_r = "No agent with this id.";
            return KF_ENOTFOUND;
        }
        if (t->op > 0)
            rc = kf_db_stmt(db, "admin.member_add",
                            "INSERT IGNORE INTO agent_queue (agent_id, queue_id) VALUES (?, ?)",
                            &st, error_r);
        else
            rc = kf_db_stmt(db, "admin.member_remove",
                            "DELETE FROM agent_queue WHERE agent_id = ? AND queue_id = ?", &st,
                            error_r);
        if (rc != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, t->agent_id);
        kf_stmt_bind_u64(st, 1, t->queue_id);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        return audit(db, t->c, t->op > 0 ? "queue.member_added" : "queue.member_removed",
                     json_pack("{s:I, s:I}", "queue_id", (json_int_t) t->queue_id, "agent_id",
                               (json_int_t) t->agent_id),
                     error_r);
    }
    for (size_t i = 0; i < t->n; i++) {
        if ((rc = agent_exists(db, t->ids[i], &found, error_r)) != KF_OK)
            return rc;
        if (!found) {
            t->field = "agent_ids";
            *error_r = kf_pool_printf(t->c->pool, "no agent with id %llu",
                                      (unsigned long long) t->ids[i]);
            return KF_EINVAL;
        }
    }
    if ((rc = kf_db_stmt(db, "admin.members_clear", "DELETE FROM agent_queue WHERE queue_id = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, t->queue_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    for (size_t i = 0; i < t->n; i++) {
        if ((rc = kf_db_stmt(db, "admin.member_add",
                             "INSERT IGNORE INTO agent_queue (agent_id, queue_id) VALUES (?, ?)",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, t->ids[i]);
        kf_stmt_bind_u64(st, 1, t->queue_id);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
    }
    return audit(db, t->c, "queue.members_set",
                 json_pack("{s:I, s:o}", "queue_id", (json_int_t) t->queue_id, "agent_ids",
                           ids_json(t->ids, t->n)),
                 error_r);
}

/* PUT /api/v1/queues/{id}/members {agent_ids: [...]} - replace the member list. */
static int
h_queue_members_set(kf_call *c, kf_reply *out)
{
    static const char *const fields[] = {"agent_ids", NULL};
    json_t *body, *errors = NULL, *q;
    const char *error = NULL;
    struct members_tx t = {.c = c, .op = 0};
    int rc;

    if (!path_id(c, out, "id", &t.queue_id))
        return 0;
    if (kf_call_json_object(c, &body) != KF_OK)
        return 0;
    kf_json_unknown_fields(body, fields, &errors);
    get_ids(c, body, "agent_ids", 1, &t.ids, &t.n, &errors);
    if (errors != NULL)
        return kf_reply_invalid(out, c, errors);
    if ((rc = kf_tx_run(c->db, members_tx, &t, &error)) != KF_OK)
        return reply_failed(out, c, rc, error, t.field);
    if ((rc = queue_get(c->db, c->pool, t.queue_id, &q, &error)) != KF_OK)
        return reply_failed(out, c, rc, error, NULL);
    return kf_reply_json(out, c, 200, q);
}

/* PUT|DELETE /api/v1/queues/{id}/members/{agent_id} - add or remove one member. */
static int
h_queue_member_one(kf_call *c, kf_reply *out)
{
    const char *error = NULL;
    struct members_tx t = {.c = c, .op = c->method == KF_DELETE ? -1 : 1};
    int rc;
    if (!path_id(c, out, "id", &t.queue_id) || !path_id(c, out, "agent_id", &t.agent_id))
        return 0;
    if ((rc = kf_tx_run(c->db, members_tx, &t, &error)) != KF_OK)
        return reply_failed(out, c, rc, error, NULL);
    return kf_reply_text(out, c, 204, NULL, "", 0);
}

/* ---- API tokens ---- */

#define TOKEN_COLUMNS                                                                              \
    "t.id, t.name, t.role, t.agent_id, t.prefix, t.created_by, " KF_TIME_SQL("t.created_at") ", " \
    KF_TIME_SQL("t.last_used_at") ", " KF_TIME_SQL("t.expires_at") ", "                          \
    KF_TIME_SQL("t.revoked_at") ", "                                                             \
    "CASE WHEN t.revoked_at IS NOT NULL THEN 'revoked' "                                         \
    " WHEN t.expires_at IS NOT NULL AND t.expires_at <= NOW(6) THEN 'expired' ELSE 'active' END"

static json_t *
opt_id(kf_stmt *st, unsigned i)
{
    return kf_stmt_col_null(st, i) ? json_null()
                                   : json_integer((json_int_t) kf_stmt_col_u64(st, i));
}

static json_t *
token_row_json(kf_stmt *st, kf_pool *pool)
{
    return json_pack(
        "{s:I, s:s, s:s, s:o, s:s, s:o, s:s?, s:s?, s:s?, s:s?, s:s}", "id",
        (json_int_t) kf_stmt_col_u64(st, 0), "name", kf_stmt_col_str(st, 1, pool, NULL), "role",
        kf_stmt_col_str(st, 2, pool, NULL), "agent_id", opt_id(st, 3), "prefix",
        kf_stmt_col_str(st, 4, pool, NULL), "created_by", opt_id(st, 5), "created_at",
        kf_stmt_col_str(st, 6, pool, NULL), "last_used_at", kf_stmt_col_str(st, 7, pool, NULL),
        "expires_at", kf_stmt_col_str(st, 8, pool, NULL), "revoked_at",
        kf_stmt_col_str(st, 9, pool, NULL), "status", kf_stmt_col_str(st, 10, pool, NULL));
}

static int
token_get(kf_db *db, kf_pool *pool, uint64_t id, json_t **t_r, const char **error_r)
{
    return row_by_id(db, pool, "admin.token_get",
                     "SELECT " TOKEN_COLUMNS " FROM api_token t WHERE t.id = ?", id,
                     token_row_json, "No API token with this id.", t_r, error_r);
}

/* GET /api/v1/tokens?limit=&after= - never the token itself, only its prefix. */
static int
h_tokens_list(kf_call *c, kf_reply *out)
{
    const char *error = NULL;
    unsigned limit;
    uint64_t after;
    kf_stmt *st;
    int rc;

    if (!list_params(c, out, &limit, &after))
        return 0;
    if ((rc = kf_db_stmt(c->db, "admin.tokens_list",
                         "SELECT " TOKEN_COLUMNS " FROM api_token t WHERE t.id > ? "
                         "ORDER BY t.id LIMIT ?",
                         &st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_stmt_bind_u64(st, 0, after);
    kf_stmt_bind_u64(st, 1, limit + 1);
    return reply_page(out, c, st, limit, token_row_json);
}

/* GET /api/v1/tokens/{id} */
static int
h_token_get(kf_call *c, kf_reply *out)
{
    const char *error = NULL;
    json_t *t;
    uint64_t id;
    int rc;
    if (!path_id(c, out, "id", &id))
        return 0;
    if ((rc = token_get(c->db, c->pool, id, &t, &error)) != KF_OK)
        return reply_failed(out, c, rc, error, NULL);
    return kf_reply_json(out, c, 200, t);
}

struct token_tx {
    const kf_call *c;
    const char *name, *role, *hash, *prefix;
    uint64_t agent_id, expires_in, id;
    const char *field; /* out */
};

static int
token_create_tx(kf_db *db, void *arg, const char **error_r)
{
    struct token_tx *t = arg;
    kf_stmt *st;
    int rc;

    t->field = NULL;
    if (t->agent_id) {
        /* A token acting as an agent never gets more than the agent has. */
        if ((rc = kf_db_stmt(db, "admin.token_agent", "SELECT role FROM agent WHERE id = ?", &st,
                             error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, t->agent_id);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        rc = kf_stmt_fetch(st, error_r);
        char *role = rc == 1 ? kf_stmt_col_str(st, 0, t->c->pool, NULL) : NULL;
        kf_stmt_done(st);
        if (rc < 0)
            return rc;
        t->field = "agent_id";
        if (role == NULL) {
            *error_r = "no agent with this id";
            return KF_EINVAL;
        }
        if (kf_role_parse(t->role) > kf_role_parse(role)) {
            t->field = "role";
            *error_r = "must not exceed the role of the agent the token acts as";
            return KF_EINVAL;
        }
        t->field = NULL;
    }
    if ((rc = kf_db_stmt(db, "admin.token_insert",
                         "INSERT INTO api_token (name, token_hash, prefix, role, agent_id, "
                         "created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?, "
                         "IF(? IS NULL, NULL, NOW(6) + INTERVAL ? SECOND))",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->name);
    kf_stmt_bind_cstr(st, 1, t->hash);
    kf_stmt_bind_cstr(st, 2, t->prefix);
    kf_stmt_bind_cstr(st, 3, t->role);
    if (t->agent_id)
        kf_stmt_bind_u64(st, 4, t->agent_id);
    else
        kf_stmt_bind_null(st, 4);
    if (t->c->principal.agent_id)
        kf_stmt_bind_u64(st, 5, t->c->principal.agent_id);
    else
        kf_stmt_bind_null(st, 5);
    if (t->expires_in) {
        kf_stmt_bind_u64(st, 6, t->expires_in);
        kf_stmt_bind_u64(st, 7, t->expires_in);
    } else {
        kf_stmt_bind_null(st, 6);
        kf_stmt_bind_null(st, 7);
    }
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    t->id = kf_stmt_insert_id(st);
    return audit(db, t->c, "token.created",
                 json_pack("{s:I, s:s, s:s}", "api_token_id", (json_int_t) t->id, "name", t->name,
                           "role", t->role),
                 error_r);
}

/* POST /api/v1/tokens {name, role, agent_id?, expires_in?} - the token is in this reply only. */
static int
h_token_create(kf_call *c, kf_reply *out)
{
    static const char *const fields[] = {"name", "role", "agent_id", "expires_in", NULL};
    json_t *body, *errors = NULL, *tok;
    const char *error = NULL;
    struct token_tx t = {.c = c};
    char token[44], hash[65], prefix[9];
    int rc;

    if (kf_call_json_object(c, &body) != KF_OK)
        return 0;
    kf_json_unknown_fields(body, fields, &errors);
    get_checked(body, "name", 1, 100, name_ok, "must be non-empty, without control characters",
                &t.name, &errors);
    kf_json_get_enum(body, "role", 1, role_names, &t.role, &errors);
    kf_json_get_u64(body, "agent_id", 0, &t.agent_id, &errors);
    if (get_uint(body, "expires_in", TOKEN_MAX_LIFETIME, &t.expires_in, &errors) &&
        t.expires_in == 0)
        kf_problem_add_error(&errors, "expires_in", "must be a positive number of seconds");
    if (errors != NULL)
        return kf_reply_invalid(out, c, errors);

    kf_auth_new_token(token, hash);
    snprintf(prefix, sizeof(prefix), "%.8s", token);
    t.hash = hash;
    t.prefix = prefix;
    if ((rc = kf_tx_run(c->db, token_create_tx, &t, &error)) != KF_OK) {
        sodium_memzero(token, sizeof(token));
        return reply_failed(out, c, rc, error, t.field);
    }
    if ((rc = token_get(c->db, c->pool, t.id, &tok, &error)) != KF_OK) {
        sodium_memzero(token, sizeof(token));
        return kf_reply_internal(out, c, error);
    }
    json_object_set_new(tok, "token", json_string(token));
    sodium_memzero(token, sizeof(token));
    kf_reply_header(out, c, "Location",
                    kf_pool_printf(c->pool, "/api/v1/tokens/%llu", (unsigned long long) t.id));
    return kf_reply_json(out, c, 201, tok);
}

struct token_revoke_tx {
    const kf_call *c;
    uint64_t id;
};

static int
token_revoke_tx(kf_db *db, void *arg, const char **error_r)
{
    struct token_revoke_tx *t = arg;
    kf_stmt *st;
    int rc, found;
    if ((rc = exists(db, "admin.token_exists", "SELECT 1 FROM api_token WHERE id = ?", t->id,
                     &found, error_r)) != KF_OK)
        return rc;
    if (!found) {
        *error_r = "No API token with this id.";
        return KF_ENOTFOUND;
    }
    if ((rc = kf_db_stmt(db, "admin.token_revoke",
                         "UPDATE api_token SET revoked_at = NOW(6) "
                         "WHERE id = ? AND revoked_at IS NULL",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, t->id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if (kf_stmt_affected(st) == 0)
        return KF_OK; /* revoked before: nothing changes */
    return audit(db, t->c, "token.revoked",
                 json_pack("{s:I}", "api_token_id", (json_int_t) t->id), error_r);
}

/* DELETE /api/v1/tokens/{id} - revoke (idempotent). */
static int
h_token_revoke(kf_call *c, kf_reply *out)
{
    const char *error = NULL;
    struct token_revoke_tx t = {.c = c};
    int rc;
    if (!path_id(c, out, "id", &t.id))
        return 0;
    if ((rc = kf_tx_run(c->db, token_revoke_tx, &t, &error)) != KF_OK)
        return reply_failed(out, c, rc, error, NULL);
    return kf_reply_text(out, c, 204, NULL, "", 0);
}

const kf_route kf_admin_routes[] = {
    {KF_GET, "/api/v1/agents", KF_AUTH_SUPERVISOR, 0, h_agents_list, 0, "agents.list"},
    {KF_POST, "/api/v1/agents", KF_AUTH_ADMIN, ADMIN_MAX_BODY, h_agent_create, 0, "agents.create"},
    {KF_GET, "/api/v1/agents/{id}", KF_AUTH_SUPERVISOR, 0, h_agent_get, 0, "agents.get"},
    {KF_PATCH, "/api/v1/agents/{id}", KF_AUTH_ADMIN, ADMIN_MAX_BODY, h_agent_update, 0,
     "agents.update"},
    {KF_PUT, "/api/v1/agents/{id}/password", KF_AUTH_ADMIN, ADMIN_MAX_BODY, h_agent_password, 0,
     "agents.password"},
    {KF_DELETE, "/api/v1/agents/{id}/sessions", KF_AUTH_ADMIN, 0, h_agent_sessions_revoke, 0,
     "agents.sessions_revoke"},
    {KF_PUT, "/api/v1/agents/me/presence", KF_AUTH_AGENT, ADMIN_MAX_BODY, h_presence, 0,
     "agents.presence"},
    {KF_GET, "/api/v1/queues", KF_AUTH_SUPERVISOR, 0, h_queues_list, 0, "queues.list"},
    {KF_POST, "/api/v1/queues", KF_AUTH_ADMIN, ADMIN_MAX_BODY, h_queue_create, 0, "queues.create"},
    {KF_GET, "/api/v1/queues/{id}", KF_AUTH_SUPERVISOR, 0, h_queue_get, 0, "queues.get"},
    {KF_PATCH, "/api/v1/queues/{id}", KF_AUTH_ADMIN, ADMIN_MAX_BODY, h_queue_update, 0,
     "queues.update"},
    {KF_DELETE, "/api/v1/queues/{id}", KF_AUTH_ADMIN, 0, h_queue_delete, 0, "queues.delete"},
    {KF_GET, "/api/v1/queues/{id}/members", KF_AUTH_SUPERVISOR, 0, h_queue_members, 0,
     "queues.members"},
    {KF_PUT, "/api/v1/queues/{id}/members", KF_AUTH_ADMIN, ADMIN_MAX_BODY, h_queue_members_set, 0,
     "queues.members_set"},
    {KF_PUT, "/api/v1/queues/{id}/members/{agent_id}", KF_AUTH_ADMIN, 0, h_queue_member_one, 0,
     "queues.member_add"},
    {KF_DELETE, "/api/v1/queues/{id}/members/{agent_id}", KF_AUTH_ADMIN, 0, h_queue_member_one, 0,
     "queues.member_remove"},
    {KF_GET, "/api/v1/tokens", KF_AUTH_ADMIN, 0, h_tokens_list, 0, "tokens.list"},
    {KF_POST, "/api/v1/tokens", KF_AUTH_ADMIN, ADMIN_MAX_BODY, h_token_create, 0, "tokens.create"},
    {KF_GET, "/api/v1/tokens/{id}", KF_AUTH_ADMIN, 0, h_token_get, 0, "tokens.get"},
    {KF_DELETE, "/api/v1/tokens/{id}", KF_AUTH_ADMIN, 0, h_token_revoke, 0, "tokens.revoke"},
    {0, NULL, 0, 0, NULL, 0, NULL},
};
