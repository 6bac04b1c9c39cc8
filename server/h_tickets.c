/*
 * h_tickets.c - the ticket API: create (through kf_ingest, channel "api"),
 * read, list, update with optimistic concurrency, replies, internal notes,
 * customer messages on an existing ticket, and merges.
 *
 * Visibility: an agent sees the tickets of the queues they are a member of;
 * supervisors and admins see every ticket.  A ticket the caller may not see
 * answers 404, never 403, so its existence does not leak.
 *
 * Who may do what (beyond the route's class):
 *   - moving a ticket to another queue (or out of every queue): supervisor+;
 *   - assignee: an agent may take an unassigned ticket or give up their own
 *     (assignee = themselves or null); anything else is supervisor+;
 *   - merging: anyone who can see both tickets (the merge is reversible by
 *     reading the events, and hiding it from agents would only make them
 *     ask a supervisor to click the same button).
 *
 * Every change writes an event (kf_event_add) in the same transaction and
 * bumps the ticket's version by exactly one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/auth.h"
#include "kefu/config.h"
#include "kefu/customer.h"
#include "kefu/db.h"
#include "kefu/event.h"
#include "kefu/http.h"
#include "kefu/ingest.h"
#include "kefu/channel.h"
#include "kefu/outbox.h"
#include "kefu/pool.h"
#include "kefu/server.h"
#include "kefu/ticket.h"

#define TEXT_MAX 1000000 /* bytes of message text through the API */
#define BODY_MAX (1024 * 1024)
#define PATCH_MAX (64 * 1024)
#define SMALL_MAX 4096

/* ---- shared helpers ---- */

/* A refusal decided inside a transaction, replied after the rollback. */
struct refusal {
    int status;
    const char *code, *field, *detail;
};

static int
refuse(struct refusal *f, int status, const char *code, const char *field, const char *detail)
{
    f->status = status;
    f->code = code;
    f->field = field;
    f->detail = detail;
    return KF_EINVAL; /* makes kf_tx_run roll back; the handler looks at f first */
}

static int
reply_refusal(kf_call *c, kf_reply *out, const struct refusal *f)
{
    json_t *errors = NULL;
    if (f->field != NULL)
        kf_problem_add_error(&errors, f->field, f->detail);
    return kf_reply_problem(out, c, f->status, f->code, f->detail, errors);
}

/* Map a status from the transaction to a reply ("field: detail" errors become errors[]). */
static int
reply_status(kf_call *c, kf_reply *out, int rc, const char *error)
{
    switch (rc) {
    case KF_ENOTFOUND:
        return kf_reply_problem(out, c, 404, "not-found", "No such ticket.", NULL);
    case KF_EINVAL: {
        json_t *errors = NULL;
        const char *colon = error ? strstr(error, ": ") : NULL;
        if (colon != NULL)
            kf_problem_add_error(&errors, kf_pool_strndup(c->pool, error, (size_t) (colon - error)),
                                 colon + 2);
        else
            kf_problem_add_error(&errors, "body", error ? error : "invalid");
        return kf_reply_invalid(out, c, errors);
    }
    case KF_ECONFLICT:
        return kf_reply_problem(out, c, 409, "conflict", error, NULL);
    case KF_EBUSY:
        kf_reply_header(out, c, "Retry-After", "1");
        return kf_reply_problem(out, c, 503, "overloaded", "Busy; retry shortly.", NULL);
    default:
        return kf_reply_internal(out, c, error);
    }
}

static int
path_id(kf_call *c, kf_reply *out, uint64_t *id_r)
{
    if (kf_call_param_u64(c, "id", id_r) != KF_OK || *id_r == 0 || *id_r > (uint64_t) INT64_MAX) {
        json_t *errors = NULL;
        kf_problem_add_error(&errors, "id", "must be a positive integer");
        kf_reply_problem(out, c, 422, "invalid-parameter", "Bad path parameter.", errors);
        return 0;
    }
    return 1;
}

/* The configured API body limit, which may be lower than the route's. */
static int
body_too_large(kf_call *c, kf_reply *out)
{
    if (c->cfg != NULL && c->body_len > c->cfg->api_max_body) {
        char *detail = kf_pool_printf(c->pool, "The body is %zu bytes; the limit is %u.",
                                      c->body_len, c->cfg->api_max_body);
        kf_reply_problem(out, c, 413, "payload-too-large", detail, NULL);
        return 1;
    }
    return 0;
}

/* Parse the JSON object body and check for unknown fields; 0 = a reply was made. */
static json_t *
body_object(kf_call *c, kf_reply *out, const char *const *allowed, json_t **errors)
{
    json_t *root = NULL;
    if (body_too_large(c, out))
        return NULL;
    if (kf_call_json_object(c, &root) != KF_OK) {
        if (out != &c->reply)
            *out = c->reply;
        return NULL;
    }
    kf_json_unknown_fields(root, allowed, errors);
    return root;
}

static int
visible(kf_call *c, const kf_ticket *tk)
{
    return kf_auth_queue_allowed(c, tk->queue_id, tk->queue_id != 0);
}

static void
actor_of(const kf_call *c, int *kind_r, uint64_t *id_r)
{
    *kind_r = c->principal.agent_id ? KF_ACTOR_AGENT : KF_ACTOR_SYSTEM;
    *id_r = c->principal.agent_id;
}

static int
add_event(kf_call *c, uint64_t ticket_id, const char *kind, json_t *data, const char **error_r)
{
    int ak;
    uint64_t aid;
    actor_of(c, &ak, &aid);
    if (data != NULL && c->principal.via_token && c->principal.agent_id == 0)
        json_object_set_new(data, "token_id", json_integer((json_int_t) c->principal.token_id));
    int rc = kf_event_add(c->db, ticket_id, kind, ak, aid, data, NULL, error_r);
    json_decref(data);
    return rc;
}

/* Reply with the ticket as it is now (after the commit), ETag = version. */
static int
reply_ticket(kf_call *c, kf_reply *out, int status, uint64_t id, json_t *extra)
{
    kf_ticket tk;
    const char *error = NULL;
    int rc = kf_ticket_get(c->db, c->pool, id, &tk, &error);
    if (rc != KF_OK) {
        json_decref(extra);
        return reply_status(c, out, rc, error);
    }
    json_t *o = kf_ticket_json(&tk);
    if (extra != NULL) {
        json_object_update(o, extra);
        json_decref(extra);
    }
    kf_reply_header(out, c, "ETag", kf_pool_printf(c->pool, "\"%u\"", tk.version));
    return kf_reply_json(out, c, status, o);
}

/* A nullable id field: *set_r = 1 when present (null -> 0). */
static int
get_nullable_id(json_t *obj, const char *key, int *set_r, uint64_t *v_r, json_t **errors)
{
    json_t *v = json_object_get(obj, key);
    *set_r = 0;
    if (v == NULL)
        return 0;
    if (json_is_null(v)) {
        *set_r = 1;
        *v_r = 0;
        return 1;
    }
    if (kf_json_get_u64(obj, key, 0, v_r, errors)) {
        *set_r = 1;
        return 1;
    }
    return 0;
}

/* ---- POST /api/v1/tickets ---- */

struct create_tx {
    kf_inbound in;
    json_t *tags; /* normalised, or NULL */
    kf_ingest_result res;
};

static int
create_tx(kf_db *db, void *arg, const char **error_r)
{
    struct create_tx *t = arg;
    int rc;

    if ((rc = kf_ingest_tx(db, &t->in, &t->res, error_r)) != KF_OK)
        return rc;
    if (!t->res.duplicate && t->res.created_ticket && t->tags && json_array_size(t->tags) > 0)
        return kf_ticket_set_tags(db, t->res.ticket_id, t->tags, error_r);
    return KF_OK;
}

static void
tags_cleanup(void *arg)
{
    json_decref(arg);
}

/* Parse and validate the body (pure: no database); 0 = a reply was made. */
static int
parse_create(kf_call *c, kf_reply *out, struct create_tx *t)
{
    static const char *const allowed[] = {"subject",  "text", "customer",    "priority",
                                          "queue_id", "tags", "external_id", "send_ack", NULL};
    static const char *const cust_allowed[] = {"email", "id", "name", "locale", NULL};
    json_t *errors = NULL, *root, *cust, *v;
    const char *s;
    uint64_t u;
    int b;

    memset(t, 0, sizeof(*t));
    if ((root = body_object(c, out, allowed, &errors)) == NULL)
        return 0;
    kf_json_get_str(root, "subject", 1, KF_TICKET_SUBJECT_MAX, &t->in.subject, &errors);
    if (kf_json_get_str(root, "text", 1, TEXT_MAX, &t->in.text, &errors))
        t->in.text_len = strlen(t->in.text);
    kf_json_get_enum(root, "priority", 0, kf_ticket_priorities, &t->in.priority, &errors);
    if (kf_json_get_u64(root, "queue_id", 0, &u, &errors))
        t->in.queue_id = u;
    if (kf_json_get_str(root, "external_id", 0, 255, &s, &errors)) {
        if (*s == '\0')
            kf_problem_add_error(&errors, "external_id", "must not be empty");
        t->in.external_id = s;
    }
    if (kf_json_get_bool(root, "send_ack", 0, &b, &errors))
        t->in.send_ack = b;
    if ((v = json_object_get(root, "tags")) != NULL && !json_is_null(v)) {
        if ((t->tags = kf_ticket_tags_check(v, "tags", &errors)) != NULL)
            kf_pool_cleanup_add(c->pool, tags_cleanup, t->tags);
    }
    cust = json_object_get(root, "customer");
    if (cust == NULL || json_is_null(cust)) {
        kf_problem_add_error(&errors, "customer", "is required");
    } else if (!json_is_object(cust)) {
        kf_problem_add_error(&errors, "customer", "must be an object with email or id");
    } else {
        /* Validate the nested object, then name its fields customer.<key>. */
        json_t *sub = NULL;
        const char *email = NULL, *detail = NULL;
        kf_json_unknown_fields(cust, cust_allowed, &sub);
        int has_email = kf_json_get_str(cust, "email", 0, 254, &email, &sub);
        int has_id = kf_json_get_u64(cust, "id", 0, &t->in.customer_id, &sub);
        kf_json_get_str(cust, "name", 0, 200, &t->in.customer_name, &sub);
        kf_json_get_str(cust, "locale", 0, 16, &t->in.customer_locale, &sub);
        if (has_email && !kf_customer_identity_ok("email", email, &detail))
            kf_problem_add_error(&sub, "email", detail);
        if (has_email && has_id)
            kf_problem_add_error(&sub, "id", "give either email or id, not both");
        else if (!has_email && !has_id && json_object_get(cust, "email") == NULL &&
                 json_object_get(cust, "id") == NULL)
            kf_problem_add_error(&sub, "email", "customer needs an email or an id");
        if (t->in.customer_locale != NULL &&
            (*t->in.customer_locale == '\0' ||
             strspn(t->in.customer_locale, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                          "0123456789-_") != strlen(t->in.customer_locale)))
            kf_problem_add_error(&sub, "locale", "must be a language tag such as zh-CN");
        size_t i;
        json_t *e;
        json_array_foreach(sub, i, e)
        {
            const char *f = json_string_value(json_object_get(e, "field"));
            kf_problem_add_error(&errors, kf_pool_printf(c->pool, "customer.%s", f ? f : "?"),
                                 json_string_value(json_object_get(e, "detail")));
        }
        json_decref(sub);
        if (has_email) {
            t->in.identity_kind = "email";
            t->in.identity_value = email;
        }
    }
    if (errors != NULL) {
        kf_reply_invalid(out, c, errors);
        return 0;
    }
    return 1;
}

static int
h_ticket_create(kf_call *c, kf_reply *out)
{
    struct create_tx t;
    json_t *errors = NULL;
    const char *error = NULL;
    int rc;

    /* 1. Parse and validate.  A Bearer token from the worker's cache is
     * confirmed before any reply (kefu/auth.h), so a revoked one still gets
     * its 401 first. */
    if (!parse_create(c, out, &t)) {
        kf_auth_confirm(c, out);
        return 0;
    }

    /* 2. An agent files tickets into their own queues only (the token is
     * confirmed here, in the membership statement when there is one). */
    int allowed = 1;
    if (t.in.queue_id != 0) {
        if (kf_auth_queue_check(c, out, t.in.queue_id, 1, &allowed) != KF_OK)
            return 0;
    } else if (kf_auth_confirm(c, out) != KF_OK) {
        return 0;
    }
    if (!allowed) {
        kf_problem_add_error(&errors, "queue_id", "not one of your queues (or no such queue)");
        return kf_reply_invalid(out, c, errors);
    }
    t.in.channel = "api";
    t.in.channel_account = "";
    t.in.actor_agent_id = c->principal.agent_id;

    /* 3. One transaction: ingest + tags. */
    rc = kf_tx_run(c->db, create_tx, &t, &error);
    if (rc != KF_OK) {
        if (rc == KF_EINVAL && error != NULL && strncmp(error, "customer_id:", 12) == 0)
            error = kf_pool_printf(c->pool, "customer.id:%s", error + 12);
        else if (rc == KF_EINVAL && error != NULL && strncmp(error, "identity_value:", 15) == 0)
            error = kf_pool_printf(c->pool, "customer.email:%s", error + 15);
        return reply_status(c, out, rc, error);
    }

    /* 4. The ticket; a repeat of a known external_id answers 200 with the first result. */
    if (t.res.duplicate) {
        kf_ticket tk;
        if ((rc = kf_ticket_get(c->db, c->pool, t.res.ticket_id, &tk, &error)) != KF_OK)
            return reply_status(c, out, rc, error);
        if (!visible(c, &tk))
            return kf_reply_problem(out, c, 409, "conflict",
                                    "external_id was used before, for a ticket you cannot see.",
                                    NULL);
    }
    kf_reply_header(out, c, "Location",
                    kf_pool_printf(c->pool, "/api/v1/tickets/%llu",
                                   (unsigned long long) t.res.ticket_id));
    if (t.res.duplicate)
        kf_reply_header(out, c, "Idempotent-Replayed", "true");
    return reply_ticket(c, out, t.res.duplicate ? 200 : 201, t.res.ticket_id,
                        json_pack("{s:I, s:b}", "message_id", (json_int_t) t.res.message_id,
                                  "duplicate", t.res.duplicate));
}

/* ---- GET /api/v1/tickets/{id} ---- */

/*
 * One statement: the ticket, the caller's membership of its queue, the
 * messages with their attachments, and - for a Bearer token from the
 * worker's cache - whether the token is still valid (kefu/auth.h); the
 * checks then run in the order they always did: token (401), then
 * visibility (404).
 */
static int
h_ticket_get(kf_call *c, kf_reply *out)
{
    kf_ticket_view v;
    uint64_t id;
    const char *error = NULL;
    int rc;

    if (!path_id(c, out, &id)) {
        kf_auth_confirm(c, out);
        return 0;
    }
    kf_ticket_read_opts o = {
        .id = id,
        .include_internal = 1, /* every caller of this route is staff: notes included */
        .member_agent_id = c->principal.role == KF_ROLE_AGENT ? c->principal.agent_id : 0,
        .token_id = kf_auth_unconfirmed_token(c),
    };
    if ((rc = kf_ticket_read(c->db, c->pool, &o, &v, &error)) != KF_OK) {
        /* Nothing was learnt about the token: check it on its own first. */
        if (kf_auth_confirm(c, out) != KF_OK)
            return 0;
        return reply_status(c, out, rc, error);
    }
    if (kf_auth_confirmed(c, out, v.token_valid) != KF_OK) {
        json_decref(v.messages);
        return 0;
    }
    if (!kf_auth_queue_allowed_known(c, v.ticket.queue_id != 0, v.member)) {
        json_decref(v.messages);
        return reply_status(c, out, KF_ENOTFOUND, NULL);
    }
    json_t *t = kf_ticket_json(&v.ticket);
    json_object_set_new(t, "messages", v.messages);
    kf_reply_header(out, c, "ETag", kf_pool_printf(c->pool, "\"%u\"", v.ticket.version));
    return kf_reply_json(out, c, 200, t);
}

/* ---- GET /api/v1/tickets ---- */

static int
h_ticket_list(kf_call *c, kf_reply *out)
{
    kf_ticket_query q;
    json_t *errors = NULL, *items;
    const char *error = NULL, *next = NULL;
    int rc;

    if (kf_ticket_query_parse(c->pool, c->query, &q, &errors) != KF_OK)
        return kf_reply_problem(out, c, 422, "invalid-parameter", "Bad query parameter.", errors);
    if (q.assignee == KF_ASSIGNEE_ME) {
        if (c->principal.agent_id == 0) {
            kf_problem_add_error(&errors, "assignee_id", "\"me\" needs a caller who is an agent");
            return kf_reply_problem(out, c, 422, "invalid-parameter", "Bad query parameter.",
                                    errors);
        }
        q.assignee = KF_ASSIGNEE_ID;
        q.assignee_id = c->principal.agent_id;
    }
    if (c->principal.role < KF_ROLE_SUPERVISOR) {
        if (c->principal.agent_id == 0) /* an agent-role token bound to nobody sees nothing */
            return kf_reply_json(out, c, 200, json_pack("{s:[], s:n}", "items", "next"));
        q.scope_agent_id = c->principal.agent_id;
    }
    if ((rc = kf_ticket_list(c->db, c->pool, &q, &items, &next, &error)) != KF_OK)
        return reply_status(c, out, rc, error);
    json_t *o = json_object();
    json_object_set_new(o, "items", items);
    json_object_set_new(o, "next", next ? json_string(next) : json_null());
    return kf_reply_json(out, c, 200, o);
}

/* ---- PATCH /api/v1/tickets/{id} ---- */

struct update_tx {
    kf_call *c;
    uint64_t id;
    unsigned version;
    const char *status, *priority;
    int set_queue, set_assignee;
    uint64_t queue_id, assignee_id;
    json_t *tags;
    struct refusal f;
    int changed;
};

/* The would-be assignee: exists, active, and (for plain agents) a member of the queue. */
static int
check_assignee(kf_db *db, uint64_t agent_id, uint64_t queue_id, struct refusal *f,
               const char **error_r)
{
    kf_stmt *st;
    int rc;
    if ((rc =
             kf_db_stmt(db, "ticket.assignee_check",
                        "SELECT a.role, a.active, EXISTS (SELECT 1 FROM agent_queue aq "
                        "WHERE aq.agent_id = a.id AND aq.queue_id = ?) FROM agent a WHERE a.id = ?",
                        &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, queue_id);
    kf_stmt_bind_u64(st, 1, agent_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK || (rc = kf_stmt_fetch(st, error_r)) < 0)
        return rc;
    if (rc == 0)
        return refuse(f, 422, "validation", "assignee_id", "no such agent");
    kf_pool *tmp = kf_pool_create(256);
    int is_agent = strcmp(kf_stmt_col_str(st, 0, tmp, NULL), "agent") == 0;
    kf_pool_destroy(&tmp);
    int active = (int) kf_stmt_col_i64(st, 1), member = (int) kf_stmt_col_i64(st, 2);
    kf_stmt_done(st);
    if (!active)
        return refuse(f, 422, "validation", "assignee_id", "that agent is deactivated");
    if (is_agent && queue_id != 0 && !member)
        return refuse(f, 422, "validation", "assignee_id",
                      "that agent is not a member of the ticket's queue");
    return KF_OK;
}

static int
update_tx(kf_db *db, void *arg, const char **error_r)
{
    struct update_tx *t = arg;
    kf_call *c = t->c;
    kf_ticket tk;
    json_t *changes = json_object();
    int rc;

    memset(&t->f, 0, sizeof(t->f));
    t->changed = 0;
    /* 1. Lock; look. */
    if ((rc = kf_ticket_lock(db, c->pool, t->id, &tk, error_r)) != KF_OK)
        goto done;
    if (!visible(c, &tk)) {
        rc = KF_ENOTFOUND;
        goto done;
    }
    if (tk.version != t->version) {
        rc = refuse(&t->f, 409, "version-conflict", NULL,
                    kf_pool_printf(c->pool, "The ticket is at version %u; you sent %u. Reload it "
                                   "and apply your change again.",
                                   tk.version, t->version));
        goto done;
    }
    if (tk.merged_into_id) {
        rc = refuse(&t->f, 409, "conflict", NULL,
                    kf_pool_printf(c->pool, "This ticket was merged into %llu.",
                                   (unsigned long long) tk.merged_into_id));
        goto done;
    }

    /* 2. Each change, checked against the current state and the caller's role. */
    int status_changed = t->status && strcmp(t->status, tk.status) != 0;
    if (status_changed) {
        if (strcmp(tk.status, "closed") == 0) {
            rc = refuse(&t->f, 409, "ticket-closed", "status",
                        "A closed ticket cannot change status; the customer's next message "
                        "starts a follow-up ticket.");
            goto done;
        }
        if (strcmp(t->status, "new") == 0) {
            rc = refuse(&t->f, 422, "validation", "status", "a ticket cannot go back to new");
            goto done;
        }
        json_object_set_new(changes, "status",
                            json_pack("{s:s, s:s}", "from", tk.status, "to", t->status));
    }
    if (t->priority && strcmp(t->priority, tk.priority) != 0) {
        if ((rc = kf_ticket_set_priority(db, tk.id, t->priority, error_r)) != KF_OK)
            goto done;
        json_object_set_new(changes, "priority",
                            json_pack("{s:s, s:s}", "from", tk.priority, "to", t->priority));
    }
    uint64_t queue = tk.queue_id;
    if (t->set_queue && t->queue_id != tk.queue_id) {
        if (c->principal.role < KF_ROLE_SUPERVISOR) {
            rc = refuse(&t->f, 403, "forbidden", "queue_id",
                        "moving a ticket to another queue needs the supervisor role");
            goto done;
        }
        if (t->queue_id != 0) {
            kf_stmt *st;
            if ((rc = kf_db_stmt(db, "ticket.queue_exists", "SELECT id FROM queue WHERE id = ?",
                                 &st, error_r)) != KF_OK)
                goto done;
            kf_stmt_bind_u64(st, 0, t->queue_id);
            if ((rc = kf_stmt_exec(st, error_r)) != KF_OK || (rc = kf_stmt_fetch(st, error_r)) < 0)
                goto done;
            kf_stmt_done(st);
            if (rc == 0) {
                rc = refuse(&t->f, 422, "validation", "queue_id", "no such queue");
                goto done;
            }
        }
        if ((rc = kf_ticket_set_queue(db, tk.id, t->queue_id, error_r)) != KF_OK)
            goto done;
        queue = t->queue_id;
        json_object_set_new(changes, "queue_id",
                            json_pack("{s:o, s:o}", "from",
                                      tk.queue_id ? json_integer((json_int_t) tk.queue_id)
                                                  : json_null(),
                                      "to",
                                      t->queue_id ? json_integer((json_int_t) t->queue_id)
                                                  : json_null()));
    }
    if (t->set_assignee && t->assignee_id != tk.assignee_id) {
        uint64_t me = c->principal.agent_id;
        if (c->principal.role < KF_ROLE_SUPERVISOR &&
            !(me != 0 && (t->assignee_id == me || t->assignee_id == 0) &&
              (tk.assignee_id == 0 || tk.assignee_id == me))) {
            rc = refuse(&t->f, 403, "forbidden", "assignee_id",
                        "agents may take an unassigned ticket or give up their own; "
                        "reassigning needs the supervisor role");
            goto done;
        }
        if (t->assignee_id != 0 &&
            (rc = check_assignee(db, t->assignee_id, queue, &t->f, error_r)) != KF_OK)
            goto done;
        if ((rc = kf_ticket_set_assignee(db, tk.id, t->assignee_id, error_r)) != KF_OK)
            goto done;
        json_object_set_new(changes, "assignee_id",
                            json_pack("{s:o, s:o}", "from",
                                      tk.assignee_id ? json_integer((json_int_t) tk.assignee_id)
                                                     : json_null(),
                                      "to",
                                      t->assignee_id ? json_integer((json_int_t) t->assignee_id)
                                                     : json_null()));
    }
    if (t->tags != NULL) {
        json_t *cur = tk.tags ? json_loads(tk.tags, 0, NULL) : NULL;
        if (!json_equal(cur, t->tags)) {
            if ((rc = kf_ticket_set_tags(db, tk.id, t->tags, error_r)) != KF_OK) {
                json_decref(cur);
                goto done;
            }
            json_object_set_new(changes, "tags",
                                json_pack("{s:o, s:O}", "from", cur ? cur : json_array(), "to",
                                          t->tags));
            cur = NULL;
        }
        json_decref(cur);
    }

    /* 3. One version step for the whole change, and its event. */
    if (json_object_size(changes) == 0) {
        rc = KF_OK;
        goto done;
    }
    t->changed = 1;
    rc = status_changed ? kf_ticket_set_status(db, tk.id, t->status, error_r)
                        : kf_ticket_touch(db, tk.id, error_r);
    if (rc != KF_OK)
        goto done;
    rc = add_event(c, tk.id, "ticket.updated", json_pack("{s:O}", "changes", changes), error_r);
done:
    json_decref(changes);
    return rc;
}

/* If-Match: "7", W/"7" or 7.  Returns 1 and the version, 0 when absent, -1 when malformed. */
static int
if_match(kf_call *c, unsigned *v_r)
{
    const char *h = kf_call_header(c, "If-Match");
    char digits[16];
    size_t n = 0;
    if (h == NULL)
        return 0;
    while (*h == ' ')
        h++;
    if (strncmp(h, "W/", 2) == 0)
        h += 2;
    int quoted = *h == '"';
    if (quoted)
        h++;
    while (*h >= '0' && *h <= '9' && n < sizeof(digits) - 1)
        digits[n++] = *h++;
    digits[n] = '\0';
    if (quoted && *h++ != '"')
        return -1;
    while (*h == ' ')
        h++;
    if (n == 0 || n > 9 || *h != '\0')
        return -1;
    *v_r = (unsigned) strtoul(digits, NULL, 10);
    return 1;
}

/* Pure: path, If-Match and body; 0 = a reply was made. */
static int
parse_update(kf_call *c, kf_reply *out, struct update_tx *t)
{
    static const char *const allowed[] = {"status", "priority", "queue_id", "assignee_id",
                                          "tags",   "version",  NULL};
    json_t *errors = NULL, *root, *v;
    uint64_t body_version = 0;
    unsigned hv = 0;
    int hm, has_bv;

    memset(t, 0, sizeof(*t));
    t->c = c;
    if (!path_id(c, out, &t->id))
        return 0;
    if ((hm = if_match(c, &hv)) < 0) {
        kf_problem_add_error(&errors, "If-Match", "must be the ticket's ETag, e.g. \"7\"");
        kf_reply_problem(out, c, 400, "bad-precondition", "Malformed If-Match header.", errors);
        return 0;
    }
    if ((root = body_object(c, out, allowed, &errors)) == NULL)
        return 0;
    kf_json_get_enum(root, "status", 0, kf_ticket_statuses, &t->status, &errors);
    kf_json_get_enum(root, "priority", 0, kf_ticket_priorities, &t->priority, &errors);
    get_nullable_id(root, "queue_id", &t->set_queue, &t->queue_id, &errors);
    get_nullable_id(root, "assignee_id", &t->set_assignee, &t->assignee_id, &errors);
    has_bv = kf_json_get_u64(root, "version", 0, &body_version, &errors);
    if (has_bv && body_version > 0xFFFFFFFFu) {
        kf_problem_add_error(&errors, "version", "is not a version this server handed out");
        has_bv = 0;
    }
    if ((v = json_object_get(root, "tags")) != NULL) {
        if ((t->tags = kf_ticket_tags_check(v, "tags", &errors)) != NULL)
            kf_pool_cleanup_add(c->pool, tags_cleanup, t->tags);
    }
    if (hm == 1 && has_bv && hv != body_version)
        kf_problem_add_error(&errors, "version", "disagrees with the If-Match header");
    if (errors != NULL) {
        kf_reply_invalid(out, c, errors);
        return 0;
    }
    if (hm == 0 && !has_bv) {
        kf_reply_problem(out, c, 428, "precondition-required",
                         "Send If-Match: \"<version>\" (the ETag you read) or \"version\" in the "
                         "body.",
                         NULL);
        return 0;
    }
    t->version = hm == 1 ? hv : (unsigned) body_version;
    return 1;
}

static int
h_ticket_update(kf_call *c, kf_reply *out)
{
    struct update_tx t;
    const char *error = NULL;
    int rc;

    if (!parse_update(c, out, &t))
        return 0;
    rc = kf_tx_run(c->db, update_tx, &t, &error);
    if (t.f.status != 0)
        return reply_refusal(c, out, &t.f);
    if (rc != KF_OK)
        return reply_status(c, out, rc, error);
    return reply_ticket(c, out, 200, t.id, NULL);
}

/* ---- POST /api/v1/tickets/{id}/replies and /notes ---- */

struct answer_tx {
    kf_call *c;
    uint64_t id;
    int internal;
    const char *text, *status;
    uint64_t *att_ids; /* attachment_ids: files uploaded to the ticket, sent with the answer */
    size_t n_att;
    json_t *cc;        /* "cc" as given (borrowed from the body), or NULL: the ticket's known CCs */
    uint64_t message_id, outbox_id;
    struct refusal f;
};

/*
 * Where a reply on this ticket's channel goes.  E-mail-like channels (email,
 * web, api): the customer's primary address, else their oldest e-mail
 * identity.  WeChat and phone: the newest identity of that kind.  The
 * channel adapter may still address the reply from the thread itself.
 */
static int
reply_target(kf_db *db, kf_pool *pool, const kf_ticket *tk, const char **target_r,
             const char **error_r)
{
    static const char *const kinds[][2] = {{"wechat", "wechat_openid"}, {"phone", "phone"}};
    const char *kind = NULL;
    kf_stmt *st;
    int rc;

    *target_r = NULL;
    for (size_t i = 0; i < KF_ARRAY_LEN(kinds); i++)
        if (strcmp(kinds[i][0], tk->channel) == 0)
            kind = kinds[i][1];
    if (kind == NULL)
        rc = kf_db_stmt(db, "ticket.reply_target_email",
                        "SELECT primary_email FROM customer WHERE id = ? AND primary_email IS NOT "
                        "NULL UNION ALL (SELECT value FROM customer_identity WHERE customer_id = ? "
                        "AND kind = 'email' ORDER BY id LIMIT 1)",
                        &st, error_r);
    else
        rc = kf_db_stmt(db, "ticket.reply_target",
                        "SELECT value FROM customer_identity WHERE customer_id = ? AND kind = ? "
                        "ORDER BY id DESC LIMIT 1",
                        &st, error_r);
    if (rc != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, tk->customer_id);
    if (kind == NULL)
        kf_stmt_bind_u64(st, 1, tk->customer_id);
    else
        kf_stmt_bind_cstr(st, 1, kind);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK || (rc = kf_stmt_fetch(st, error_r)) < 0)
        return rc;
    if (rc == 1)
        *target_r = kf_stmt_col_str(st, 0, pool, NULL);
    kf_stmt_done(st);
    return KF_OK;
}

/*
 * Tie the answer's attachment_ids to its message: each must be a file
 * uploaded to this ticket and not yet part of a message; together within
 * reply_attachments_max_bytes.  *list_r: [{id, filename, content_type,
 * size}] for the outbox payload (NULL when there are none).
 */
static int
attach_to_answer(kf_db *db, struct answer_tx *t, uint64_t ticket_id, json_t **list_r,
                 const char **error_r)
{
    kf_call *c = t->c;
    kf_stmt *sel, *up;
    uint64_t total = 0;
    int rc;

    *list_r = NULL;
    if (t->n_att == 0)
        return KF_OK;
    if ((rc = kf_db_stmt(db, "ticket.answer_attachment",
                         "SELECT filename, content_type, size FROM attachment WHERE id = ? AND "
                         "ticket_id = ? AND message_id IS NULL FOR UPDATE",
                         &sel, error_r)) != KF_OK ||
        (rc = kf_db_stmt(db, "ticket.answer_attach",
                         "UPDATE attachment SET message_id = ? WHERE id = ?", &up, error_r)) !=
            KF_OK)
        return rc;
    json_t *list = json_array();
    for (size_t i = 0; i < t->n_att; i++) {
        kf_stmt_bind_u64(sel, 0, t->att_ids[i]);
        kf_stmt_bind_u64(sel, 1, ticket_id);
        if ((rc = kf_stmt_exec(sel, error_r)) != KF_OK || (rc = kf_stmt_fetch(sel, error_r)) < 0)
            goto fail;
        if (rc == 0) {
            json_decref(list);
            return refuse(&t->f, 422, "validation",
                          kf_pool_printf(c->pool, "attachment_ids[%zu]", i),
                          "not a file of this ticket waiting to be sent: upload it with POST "
                          "/api/v1/tickets/{id}/attachments (without message_id) first");
        }
        char *name = kf_stmt_col_str(sel, 0, c->pool, NULL);
        char *type = kf_stmt_col_str(sel, 1, c->pool, NULL);
        uint64_t size = kf_stmt_col_u64(sel, 2);
        kf_stmt_done(sel);
        total += size;
        json_array_append_new(list, json_pack("{s:I, s:s, s:s, s:I}", "id",
                                              (json_int_t) t->att_ids[i], "filename", name,
                                              "content_type", type, "size", (json_int_t) size));
        kf_stmt_bind_u64(up, 0, t->message_id);
        kf_stmt_bind_u64(up, 1, t->att_ids[i]);
        if ((rc = kf_stmt_exec(up, error_r)) != KF_OK)
            goto fail;
    }
    if (total > c->cfg->reply_attachments_max_bytes) {
        json_decref(list);
        return refuse(&t->f, 413, "payload-too-large", "attachment_ids",
                      kf_pool_printf(c->pool, "The attachments come to %llu bytes; one answer "
                                     "may carry at most %u.", (unsigned long long) total,
                                     c->cfg->reply_attachments_max_bytes));
    }
    *list_r = list;
    return KF_OK;
fail:
    json_decref(list);
    return rc;
}

/*
 * The channel a public answer leaves by: the ticket's own, except that
 * tickets from the web form and the API are answered by e-mail, from the
 * mailbox of the ticket's queue (an enabled mailbox whose channel account
 * routes to it), else webform_mailbox, else the first mailbox.
 */
static int
answer_channel(kf_db *db, kf_call *c, const kf_ticket *tk, const char **channel_r,
               const char **account_r, const char **error_r)
{
    kf_stmt *st;
    int rc;

    *channel_r = tk->channel;
    *account_r = tk->channel_account;
    if (strcmp(tk->channel, "web") != 0 && strcmp(tk->channel, "api") != 0)
        return KF_OK;
    *channel_r = "email";
    *account_r = c->cfg->webform_mailbox[0] ? c->cfg->webform_mailbox : NULL;
    if (tk->queue_id == 0)
        return KF_OK;
    if ((rc = kf_db_stmt(db, "ticket.answer_mailbox",
                         "SELECT ca.account FROM channel_account ca JOIN email_mailbox m ON "
                         "m.name = ca.account AND m.enabled = 1 WHERE ca.channel = 'email' AND "
                         "ca.default_queue_id = ? ORDER BY ca.id LIMIT 1",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, tk->queue_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK || (rc = kf_stmt_fetch(st, error_r)) < 0)
        return rc;
    if (rc == 1)
        *account_r = kf_stmt_col_str(st, 0, c->pool, NULL);
    kf_stmt_done(st);
    return KF_OK;
}

#define ANSWER_CC_MAX 16

/*
 * The Cc of a reply by mail: the addresses the agent gave (they become
 * known CCs of the ticket), else the ticket's known CCs; never the customer
 * (who is To) nor one of our own mailboxes (that would mail ourselves).
 * *cc_r: a JSON array, or NULL when there is nobody.
 */
static int
answer_cc(kf_db *db, struct answer_tx *t, uint64_t ticket_id, const char *to, json_t **cc_r,
          const char **error_r)
{
    kf_stmt *st;
    json_t *cc = json_array(), *v;
    size_t i;
    int rc;

    *cc_r = NULL;
    /* 1. The candidates: as given, else the ticket's known CCs. */
    if (t->cc != NULL) {
        json_array_foreach(t->cc, i, v) json_array_append(cc, v);
    } else {
        if ((rc = kf_db_stmt(db, "ticket.cc_known",
                             "SELECT address FROM ticket_cc WHERE ticket_id = ? "
                             "ORDER BY created_at, address LIMIT 16",
                             &st, error_r)) != KF_OK)
            goto out;
        kf_stmt_bind_u64(st, 0, ticket_id);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            goto out;
        while ((rc = kf_stmt_fetch(st, error_r)) == 1)
            json_array_append_new(cc, json_string(kf_stmt_col_str(st, 0, t->c->pool, NULL)));
        kf_stmt_done(st);
        if (rc < 0)
            goto out;
    }
    /* 2. Less the customer and our own mailboxes (one statement: the few there are). */
    if ((rc = kf_db_stmt(db, "ticket.cc_own", "SELECT address FROM email_mailbox", &st,
                         error_r)) != KF_OK ||
        (rc = kf_stmt_exec(st, error_r)) != KF_OK)
        goto out;
    while ((rc = kf_stmt_fetch(st, error_r)) == 1) {
        const char *own = kf_stmt_col_str(st, 0, t->c->pool, NULL);
        for (i = json_array_size(cc); i-- > 0;)
            if (strcasecmp(json_string_value(json_array_get(cc, i)), own) == 0)
                json_array_remove(cc, i);
    }
    kf_stmt_done(st);
    if (rc < 0)
        goto out;
    for (i = json_array_size(cc); to != NULL && i-- > 0;)
        if (strcasecmp(json_string_value(json_array_get(cc, i)), to) == 0)
            json_array_remove(cc, i);
    /* 3. Addresses the agent copied become known CCs (their mail threads). */
    if (t->cc != NULL && json_array_size(cc) > 0) {
        if ((rc = kf_db_stmt(db, "ticket.cc_add",
                             "INSERT IGNORE INTO ticket_cc (ticket_id, address) VALUES (?, ?)",
                             &st, error_r)) != KF_OK)
            goto out;
        json_array_foreach(cc, i, v) {
            kf_stmt_bind_u64(st, 0, ticket_id);
            kf_stmt_bind_cstr(st, 1, json_string_value(v));
            if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
                goto out;
        }
    }
    rc = KF_OK;
    if (json_array_size(cc) > 0) {
        *cc_r = cc;
        cc = NULL;
    }
out:
    json_decref(cc);
    return rc;
}

static int
answer_tx(kf_db *db, void *arg, const char **error_r)
{
    struct answer_tx *t = arg;
    kf_call *c = t->c;
    kf_ticket tk;
    int rc;

    memset(&t->f, 0, sizeof(t->f));
    t->message_id = t->outbox_id = 0;
    if ((rc = kf_ticket_lock(db, c->pool, t->id, &tk, error_r)) != KF_OK)
        return rc;
    if (!visible(c, &tk))
        return KF_ENOTFOUND;
    if (tk.merged_into_id)
        return refuse(&t->f, 409, "conflict", NULL,
                      kf_pool_printf(c->pool, "This ticket was merged into %llu; write there.",
                                     (unsigned long long) tk.merged_into_id));
    if (!t->internal && strcmp(tk.status, "closed") == 0)
        return refuse(&t->f, 409, "ticket-closed", NULL,
                      "A closed ticket takes no replies; the customer's next message starts a "
                      "follow-up ticket.");

    /* 1. The message. */
    kf_message_new m = {
        .ticket_id = tk.id,
        .direction = "out",
        .kind = t->internal ? "internal" : "public",
        .author_kind = c->principal.agent_id ? "agent" : "system",
        .author_agent_id = c->principal.agent_id,
        .channel = tk.channel,
        .channel_account = tk.channel_account,
        .text = t->text,
        .text_len = strlen(t->text),
    };
    if ((rc = kf_ticket_add_message(db, &m, &t->message_id, error_r)) != KF_OK)
        return rc;
    json_t *files;
    if ((rc = attach_to_answer(db, t, tk.id, &files, error_r)) != KF_OK)
        return rc;

    /* 2. A public reply goes out through the outbox (answer_channel()). */
    if (!t->internal) {
        const char *target, *channel, *account;
        char key[48], number[32];
        if ((rc = reply_target(db, c->pool, &tk, &target, error_r)) != KF_OK ||
            (rc = answer_channel(db, c, &tk, &channel, &account, error_r)) != KF_OK) {
            json_decref(files);
            return rc;
        }
        if (files != NULL) {
            /* The channel says which files it can carry; never drop them silently. */
            kf_channel *ch = kf_channel_find(channel);
            const char *why = NULL;
            if (ch == NULL || ch->ops->files_ok == NULL)
                why = kf_pool_printf(c->pool, "Answers on the %s channel carry text only; keep "
                                     "the files in an internal note instead.", channel);
            else if ((rc = ch->ops->files_ok(ch, db, c->pool, account, files, &why, error_r)) !=
                     KF_OK) {
                json_decref(files);
                return rc;
            }
            if (why != NULL) {
                json_decref(files);
                return refuse(&t->f, 422, "validation", "attachment_ids", why);
            }
        }
        json_t *cc = NULL;
        if (strcmp(channel, "email") == 0) {
            if ((rc = answer_cc(db, t, tk.id, target, &cc, error_r)) != KF_OK) {
                json_decref(files);
                return rc;
            }
        } else if (t->cc != NULL) {
            json_decref(files);
            return refuse(&t->f, 422, "validation", "cc",
                          kf_pool_printf(c->pool, "Answers on the %s channel have no Cc.",
                                         channel));
        }
        snprintf(key, sizeof(key), "reply:%llu", (unsigned long long) t->message_id);
        kf_ticket_number(tk.id, number, sizeof(number));
        json_t *payload = json_pack("{s:s, s:I, s:s, s:s, s:I, s:s}", "template", "reply",
                                    "ticket_id", (json_int_t) tk.id, "number", number, "subject",
                                    tk.subject, "message_id", (json_int_t) t->message_id, "text",
                                    t->text);
        if (files != NULL)
            json_object_set_new(payload, "attachments", files);
        if (cc != NULL)
            json_object_set_new(payload, "cc", cc);
        kf_outbox_new row = {
            .kind = "reply",
            .channel = channel,
            .channel_account = account,
            .target = target ? target : "",
            .payload = payload,
            .dedupe_key = key,
            .ticket_id = tk.id,
            .message_id = t->message_id,
        };
        rc = kf_outbox_add(db, &row, &t->outbox_id, error_r);
        json_decref(payload);
        if (rc != KF_OK)
            return rc;
        if ((rc = kf_ticket_first_response(db, tk.id, error_r)) != KF_OK)
            return rc;
    } else {
        json_decref(files);
    }

    /* 3. Status: as asked, else a first answer opens a new ticket. */
    const char *status = t->status;
    if (status == NULL && !t->internal && strcmp(tk.status, "new") == 0)
        status = "open";
    if (status != NULL && strcmp(status, tk.status) != 0) {
        if (strcmp(tk.status, "closed") == 0)
            return refuse(&t->f, 409, "ticket-closed", "status", "a closed ticket stays closed");
        if (strcmp(status, "new") == 0)
            return refuse(&t->f, 422, "validation", "status", "a ticket cannot go back to new");
        rc = kf_ticket_set_status(db, tk.id, status, error_r);
    } else {
        status = NULL;
        rc = kf_ticket_touch(db, tk.id, error_r);
    }
    if (rc != KF_OK)
        return rc;

    /* 4. Events. */
    json_t *d = json_pack("{s:I}", "message_id", (json_int_t) t->message_id);
    if (t->outbox_id)
        json_object_set_new(d, "outbox_id", json_integer((json_int_t) t->outbox_id));
    if ((rc = add_event(c, tk.id, t->internal ? "note.added" : "message.replied", d, error_r)) !=
        KF_OK)
        return rc;
    if (status != NULL)
        rc = add_event(c, tk.id, "ticket.updated",
                       json_pack("{s:{s:{s:s, s:s}}}", "changes", "status", "from", tk.status,
                                 "to", status),
                       error_r);
    return rc;
}

static int
parse_answer(kf_call *c, kf_reply *out, int internal, struct answer_tx *t)
{
    static const char *const reply_allowed[] = {"text", "status", "attachment_ids", "cc", NULL};
    static const char *const note_allowed[] = {"text", "attachment_ids", NULL};
    json_t *errors = NULL, *root;

    memset(t, 0, sizeof(*t));
    t->c = c;
    t->internal = internal;
    if (!path_id(c, out, &t->id))
        return 0;
    if ((root = body_object(c, out, internal ? note_allowed : reply_allowed, &errors)) == NULL)
        return 0;
    kf_json_get_str(root, "text", 1, TEXT_MAX, &t->text, &errors);
    if (!internal)
        kf_json_get_enum(root, "status", 0, kf_ticket_statuses, &t->status, &errors);
    kf_json_get_ids(root, "attachment_ids", c->cfg->attachment_max_count, c->pool, &t->att_ids,
                    &t->n_att, &errors);
    if (!internal && (t->cc = json_object_get(root, "cc")) != NULL) {
        size_t i;
        json_t *v;
        if (!json_is_array(t->cc) || json_array_size(t->cc) > ANSWER_CC_MAX)
            kf_problem_add_error(&errors, "cc", "an array of at most 16 e-mail addresses");
        else
            json_array_foreach(t->cc, i, v) {
                if (!json_is_string(v) || !kf_email_ok(json_string_value(v)))
                    kf_problem_add_error(&errors, kf_pool_printf(c->pool, "cc[%zu]", i),
                                         "an e-mail address");
            }
    }
    if (errors != NULL) {
        kf_reply_invalid(out, c, errors);
        return 0;
    }
    return 1;
}

static int
answer(kf_call *c, kf_reply *out, int internal)
{
    struct answer_tx t;
    const char *error = NULL;
    int rc;

    if (!parse_answer(c, out, internal, &t))
        return 0;
    rc = kf_tx_run(c->db, answer_tx, &t, &error);
    if (t.f.status != 0)
        return reply_refusal(c, out, &t.f);
    if (rc != KF_OK)
        return reply_status(c, out, rc, error);
    json_t *extra = json_pack("{s:I}", "message_id", (json_int_t) t.message_id);
    if (t.outbox_id)
        json_object_set_new(extra, "outbox_id", json_integer((json_int_t) t.outbox_id));
    return reply_ticket(c, out, 201, t.id, extra);
}

static int
h_ticket_reply(kf_call *c, kf_reply *out)
{
    return answer(c, out, 0);
}

static int
h_ticket_note(kf_call *c, kf_reply *out)
{
    return answer(c, out, 1);
}

/* ---- POST /api/v1/tickets/{id}/messages: the customer writes again ---- */

static int
inbound_tx(kf_db *db, void *arg, const char **error_r)
{
    struct create_tx *t = arg;
    return kf_ingest_tx(db, &t->in, &t->res, error_r);
}

static int
parse_inbound(kf_call *c, kf_reply *out, struct create_tx *t, uint64_t *id_r)
{
    static const char *const allowed[] = {"text", "external_id", NULL};
    json_t *errors = NULL, *root;
    const char *s;

    memset(t, 0, sizeof(*t));
    if (!path_id(c, out, id_r))
        return 0;
    if ((root = body_object(c, out, allowed, &errors)) == NULL)
        return 0;
    if (kf_json_get_str(root, "text", 1, TEXT_MAX, &t->in.text, &errors))
        t->in.text_len = strlen(t->in.text);
    if (kf_json_get_str(root, "external_id", 0, 255, &s, &errors)) {
        if (*s == '\0')
            kf_problem_add_error(&errors, "external_id", "must not be empty");
        t->in.external_id = s;
    }
    if (errors != NULL) {
        kf_reply_invalid(out, c, errors);
        return 0;
    }
    return 1;
}

static int
h_ticket_inbound(kf_call *c, kf_reply *out)
{
    struct create_tx t;
    const char *error = NULL;
    kf_ticket tk;
    uint64_t id;
    int rc;

    if (!parse_inbound(c, out, &t, &id))
        return 0;
    if ((rc = kf_ticket_get(c->db, c->pool, id, &tk, &error)) != KF_OK)
        return reply_status(c, out, rc, error);
    if (!visible(c, &tk))
        return reply_status(c, out, KF_ENOTFOUND, NULL);

    /* On behalf of the ticket's customer, through the one ingest path:
     * solved reopens, closed starts a follow-up. */
    t.in.channel = "api";
    t.in.channel_account = "";
    t.in.customer_id = tk.customer_id;
    t.in.ticket_id = id;
    t.in.actor_agent_id = c->principal.agent_id;
    if ((rc = kf_tx_run(c->db, inbound_tx, &t, &error)) != KF_OK)
        return reply_status(c, out, rc, error);
    return reply_ticket(c, out, t.res.duplicate ? 200 : 201, t.res.ticket_id,
                        json_pack("{s:I, s:b, s:b, s:b, s:o}", "message_id",
                                  (json_int_t) t.res.message_id, "created_ticket",
                                  t.res.created_ticket, "reopened", t.res.reopened, "duplicate",
                                  t.res.duplicate, "follow_up_of",
                                  t.res.follow_up_of ? json_integer((json_int_t) t.res.follow_up_of)
                                                     : json_null()));
}

/* ---- POST /api/v1/tickets/{id}/merge ---- */

struct merge_tx {
    kf_call *c;
    uint64_t src, dst, moved;
    struct refusal f;
};

static int
merge_tx(kf_db *db, void *arg, const char **error_r)
{
    struct merge_tx *t = arg;
    kf_call *c = t->c;
    kf_ticket a, b, *src, *dst;
    int rc;

    memset(&t->f, 0, sizeof(t->f));
    t->moved = 0;
    /* Lock the lower id first: two merges of the same pair cannot deadlock. */
    if ((rc = kf_ticket_lock(db, c->pool, t->src < t->dst ? t->src : t->dst, &a, error_r)) !=
            KF_OK ||
        (rc = kf_ticket_lock(db, c->pool, t->src < t->dst ? t->dst : t->src, &b, error_r)) != KF_OK)
        return rc;
    src = t->src < t->dst ? &a : &b;
    dst = t->src < t->dst ? &b : &a;
    if (!visible(c, src))
        return KF_ENOTFOUND;
    if (!visible(c, dst))
        return refuse(&t->f, 422, "validation", "into_id", "no such ticket");
    if (src->merged_into_id)
        return refuse(&t->f, 409, "conflict", NULL,
                      kf_pool_printf(c->pool, "This ticket was merged into %llu already.",
                                     (unsigned long long) src->merged_into_id));
    if (dst->merged_into_id)
        return refuse(&t->f, 409, "conflict", "into_id",
                      kf_pool_printf(c->pool, "that ticket was merged into %llu; merge into it",
                                     (unsigned long long) dst->merged_into_id));
    if (strcmp(dst->status, "closed") == 0)
        return refuse(&t->f, 409, "ticket-closed", "into_id", "cannot merge into a closed ticket");
    if ((rc = kf_ticket_merge(db, src->id, dst->id, &t->moved, error_r)) != KF_OK)
        return rc;
    if ((rc = add_event(c, src->id, "ticket.merged",
                        json_pack("{s:I, s:I}", "into_id", (json_int_t) dst->id, "messages_moved",
                                  (json_int_t) t->moved),
                        error_r)) != KF_OK)
        return rc;
    return add_event(c, dst->id, "ticket.merged_in",
                     json_pack("{s:I, s:I}", "from_id", (json_int_t) src->id, "messages_moved",
                               (json_int_t) t->moved),
                     error_r);
}

static int
parse_merge(kf_call *c, kf_reply *out, struct merge_tx *t)
{
    static const char *const allowed[] = {"into_id", NULL};
    json_t *errors = NULL, *root;

    memset(t, 0, sizeof(*t));
    t->c = c;
    if (!path_id(c, out, &t->src))
        return 0;
    if ((root = body_object(c, out, allowed, &errors)) == NULL)
        return 0;
    if (kf_json_get_u64(root, "into_id", 1, &t->dst, &errors) && t->dst == t->src)
        kf_problem_add_error(&errors, "into_id", "a ticket cannot be merged into itself");
    if (errors != NULL) {
        kf_reply_invalid(out, c, errors);
        return 0;
    }
    return 1;
}

static int
h_ticket_merge(kf_call *c, kf_reply *out)
{
    struct merge_tx t;
    json_t *errors = NULL;
    const char *error = NULL;
    int rc;

    if (!parse_merge(c, out, &t))
        return 0;
    rc = kf_tx_run(c->db, merge_tx, &t, &error);
    if (t.f.status != 0)
        return reply_refusal(c, out, &t.f);
    if (rc == KF_ENOTFOUND && error != NULL && t.dst && strcmp(error, "no such ticket") == 0) {
        /* Which one is missing?  The source answers 404, the target is a field error. */
        kf_ticket tk;
        const char *e2 = NULL;
        if (kf_ticket_get(c->db, c->pool, t.src, &tk, &e2) == KF_OK && visible(c, &tk)) {
            kf_problem_add_error(&errors, "into_id", "no such ticket");
            return kf_reply_invalid(out, c, errors);
        }
    }
    if (rc != KF_OK)
        return reply_status(c, out, rc, error);
    return reply_ticket(c, out, 200, t.dst,
                        json_pack("{s:I, s:I}", "merged_from_id", (json_int_t) t.src,
                                  "messages_moved", (json_int_t) t.moved));
}

const kf_route kf_ticket_routes[] = {
    {KF_POST, "/api/v1/tickets", KF_AUTH_AGENT, BODY_MAX, h_ticket_create, 0, NULL},
    {KF_GET, "/api/v1/tickets", KF_AUTH_AGENT, 0, h_ticket_list, 0, NULL},
    {KF_GET, "/api/v1/tickets/{id}", KF_AUTH_AGENT, 0, h_ticket_get, 0, NULL},
    {KF_PATCH, "/api/v1/tickets/{id}", KF_AUTH_AGENT, PATCH_MAX, h_ticket_update, 0, NULL},
    {KF_POST, "/api/v1/tickets/{id}/replies", KF_AUTH_AGENT, BODY_MAX, h_ticket_reply, 0, NULL},
    {KF_POST, "/api/v1/tickets/{id}/notes", KF_AUTH_AGENT, BODY_MAX, h_ticket_note, 0, NULL},
    {KF_POST, "/api/v1/tickets/{id}/messages", KF_AUTH_AGENT, BODY_MAX, h_ticket_inbound, 0, NULL},
    {KF_POST, "/api/v1/tickets/{id}/merge", KF_AUTH_AGENT, SMALL_MAX, h_ticket_merge, 0, NULL},
    {0, NULL, 0, 0, NULL, 0, NULL},
};
