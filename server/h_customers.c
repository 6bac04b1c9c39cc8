/*
 * h_customers.c - the customer API: profile with identities and every
 * ticket across channels, search, update, identities, merge.
 *
 * Customers are not scoped by queue: every agent may look a customer up
 * and edit the profile.  The tickets listed under a customer are only the
 * ones the caller may see.  Merging two customers is supervisor+ (it moves
 * tickets between people and cannot be undone by the API).
 *
 * Customer events have no ticket (ticket_id NULL); a merge also writes one
 * ticket.customer_changed event on each ticket that moved.
 */
#include <stdio.h>
#include <string.h>

#include "kefu/auth.h"
#include "kefu/config.h"
#include "kefu/customer.h"
#include "kefu/db.h"
#include "kefu/event.h"
#include "kefu/http.h"
#include "kefu/pool.h"
#include "kefu/server.h"
#include "kefu/ticket.h"

#define CUSTOMER_PATCH_MAX (128 * 1024)
#define CUSTOMER_SMALL_MAX 4096
#define TICKETS_SHOWN 500 /* tickets under a customer; more are paged through /tickets */

static int
path_customer_id(kf_call *c, kf_reply *out, uint64_t *id_r)
{
    if (kf_call_param_u64(c, "id", id_r) != KF_OK || *id_r == 0 || *id_r > (uint64_t) INT64_MAX) {
        json_t *errors = NULL;
        kf_problem_add_error(&errors, "id", "must be a positive integer");
        kf_reply_problem(out, c, 422, "invalid-parameter", "Bad path parameter.", errors);
        return 0;
    }
    return 1;
}

static int
reply_customer_status(kf_call *c, kf_reply *out, int rc, const char *error)
{
    json_t *errors = NULL;
    const char *colon = error ? strstr(error, ": ") : NULL;

    switch (rc) {
    case KF_ENOTFOUND:
        return kf_reply_problem(out, c, 404, "not-found", "No such customer.", NULL);
    case KF_EINVAL:
        if (colon != NULL)
            kf_problem_add_error(&errors, kf_pool_strndup(c->pool, error, (size_t) (colon - error)),
                                 colon + 2);
        else
            kf_problem_add_error(&errors, "body", error ? error : "invalid");
        return kf_reply_invalid(out, c, errors);
    case KF_ECONFLICT:
        if (colon != NULL)
            kf_problem_add_error(&errors, kf_pool_strndup(c->pool, error, (size_t) (colon - error)),
                                 colon + 2);
        return kf_reply_problem(out, c, 409, "conflict", colon ? colon + 2 : error, errors);
    default:
        return kf_reply_internal(out, c, error);
    }
}

static json_t *
customer_body(kf_call *c, kf_reply *out, const char *const *allowed, json_t **errors)
{
    json_t *root = NULL;
    if (c->cfg != NULL && c->body_len > c->cfg->api_max_body) {
        kf_reply_problem(out, c, 413, "payload-too-large",
                         kf_pool_printf(c->pool, "The body is %zu bytes; the limit is %u.",
                                        c->body_len, c->cfg->api_max_body),
                         NULL);
        return NULL;
    }
    if (kf_call_json_object(c, &root) != KF_OK) {
        if (out != &c->reply)
            *out = c->reply;
        return NULL;
    }
    kf_json_unknown_fields(root, allowed, errors);
    return root;
}

static int
customer_event(kf_call *c, const char *kind, json_t *data, const char **error_r)
{
    if (c->principal.via_token && c->principal.agent_id == 0)
        json_object_set_new(data, "token_id", json_integer((json_int_t) c->principal.token_id));
    int rc = kf_event_add(c->db, 0, kind, c->principal.agent_id ? KF_ACTOR_AGENT : KF_ACTOR_SYSTEM,
                          c->principal.agent_id, data, NULL, error_r);
    json_decref(data);
    return rc;
}

/* The full profile: customer, identities, the tickets the caller may see. */
static int
reply_customer(kf_call *c, kf_reply *out, int status, uint64_t id, json_t *extra)
{
    kf_customer cu;
    json_t *identities = NULL, *tickets = NULL;
    const char *error = NULL, *next = NULL;
    int rc;

    if ((rc = kf_customer_get(c->db, c->pool, id, 0, &cu, &error)) != KF_OK ||
        (rc = kf_customer_identities_json(c->db, c->pool, id, &identities, &error)) != KF_OK) {
        json_decref(extra);
        return reply_customer_status(c, out, rc, error);
    }
    if (c->principal.role < KF_ROLE_SUPERVISOR && c->principal.agent_id == 0) {
        tickets = json_array(); /* an agent-role token bound to nobody sees no tickets */
    } else {
        kf_ticket_query q;
        memset(&q, 0, sizeof(q));
        q.customer_id = id;
        q.limit = TICKETS_SHOWN;
        if (c->principal.role < KF_ROLE_SUPERVISOR)
            q.scope_agent_id = c->principal.agent_id;
        if ((rc = kf_ticket_list(c->db, c->pool, &q, &tickets, &next, &error)) != KF_OK) {
            json_decref(identities);
            json_decref(extra);
            return reply_customer_status(c, out, rc, error);
        }
    }
    json_t *o = kf_customer_json(&cu);
    json_object_set_new(o, "identities", identities);
    json_object_set_new(o, "tickets", tickets);
    /* More than fit: continue with GET /api/v1/tickets?customer_id=<id>&after=<tickets_next>. */
    json_object_set_new(o, "tickets_next", next ? json_string(next) : json_null());
    if (extra != NULL) {
        json_object_update(o, extra);
        json_decref(extra);
    }
    return kf_reply_json(out, c, status, o);
}

/* ---- GET /api/v1/customers/{id} ---- */

static int
h_customer_get(kf_call *c, kf_reply *out)
{
    uint64_t id;
    if (!path_customer_id(c, out, &id))
        return 0;
    return reply_customer(c, out, 200, id, NULL);
}

/* ---- GET /api/v1/customers?q= ---- */

static int
h_customer_search(kf_call *c, kf_reply *out)
{
    kf_customer_query cq;
    json_t *errors = NULL, *items;
    const char *error = NULL, *next = NULL;
    int rc;

    if (kf_customer_query_parse(c->pool, c->query, &cq, &errors) != KF_OK)
        return kf_reply_problem(out, c, 422, "invalid-parameter", "Bad query parameter.", errors);
    if ((rc = kf_customer_search(c->db, c->pool, &cq, &items, &next, &error)) != KF_OK)
        return reply_customer_status(c, out, rc, error);
    json_t *o = json_object();
    json_object_set_new(o, "items", items);
    json_object_set_new(o, "next", next ? json_string(next) : json_null());
    return kf_reply_json(out, c, 200, o);
}

/* ---- PATCH /api/v1/customers/{id} ---- */

struct customer_update_tx {
    kf_call *c;
    uint64_t id;
    kf_customer_patch p;
    json_t *fields; /* names of the fields given */
};

static int
customer_update_tx(kf_db *db, void *arg, const char **error_r)
{
    struct customer_update_tx *t = arg;
    kf_customer cu;
    int rc;

    if ((rc = kf_customer_get(db, t->c->pool, t->id, 1, &cu, error_r)) != KF_OK)
        return rc;
    if (cu.merged_into_id) {
        *error_r = kf_pool_printf(t->c->pool, "id: this customer was merged into %llu",
                                  (unsigned long long) cu.merged_into_id);
        return KF_ECONFLICT;
    }
    if (json_array_size(t->fields) == 0)
        return KF_OK;
    if ((rc = kf_customer_update(db, t->id, &t->p, error_r)) != KF_OK)
        return rc;
    return customer_event(t->c, "customer.updated",
                     json_pack("{s:I, s:O}", "customer_id", (json_int_t) t->id, "fields",
                               t->fields),
                     error_r);
}

static void
decref_cleanup(void *arg)
{
    json_decref(arg);
}

/* A nullable string field: returns 1 when present (value or null), validated. */
static int
nullable_str(json_t *root, const char *key, size_t max, const char **out, json_t **errors)
{
    json_t *v = json_object_get(root, key);
    if (v == NULL)
        return 0;
    *out = NULL;
    if (json_is_null(v))
        return 1;
    return kf_json_get_str(root, key, 0, max, out, errors);
}

/* Pure: path and body; 0 = a reply was made. */
static int
parse_customer_update(kf_call *c, kf_reply *out, struct customer_update_tx *t)
{
    static const char *const allowed[] = {"name", "primary_email", "phone", "locale",
                                          "tier", "tags",          "notes", NULL};
    json_t *errors = NULL, *root, *v;
    const char *detail = NULL;

    memset(t, 0, sizeof(*t));
    t->c = c;
    if (!path_customer_id(c, out, &t->id))
        return 0;
    if ((root = customer_body(c, out, allowed, &errors)) == NULL)
        return 0;
    t->fields = json_array();
    kf_pool_cleanup_add(c->pool, decref_cleanup, t->fields);
    if (json_object_get(root, "name") != NULL &&
        (t->p.set_name =
             kf_json_get_str(root, "name", 0, KF_CUSTOMER_NAME_MAX, &t->p.name, &errors)))
        json_array_append_new(t->fields, json_string("name"));
    if ((t->p.set_email = nullable_str(root, "primary_email", KF_CUSTOMER_EMAIL_MAX,
                                      &t->p.primary_email, &errors))) {
        if (t->p.primary_email != NULL && !kf_customer_email_ok(t->p.primary_email))
            kf_problem_add_error(&errors, "primary_email", "must be an e-mail address");
        json_array_append_new(t->fields, json_string("primary_email"));
    }
    if ((t->p.set_phone =
             nullable_str(root, "phone", KF_CUSTOMER_PHONE_MAX, &t->p.phone, &errors))) {
        if (t->p.phone != NULL && !kf_customer_identity_ok("phone", t->p.phone, &detail))
            kf_problem_add_error(&errors, "phone", detail);
        json_array_append_new(t->fields, json_string("phone"));
    }
    if (json_object_get(root, "locale") != NULL &&
        (t->p.set_locale = kf_json_get_str(root, "locale", 1, KF_CUSTOMER_LOCALE_MAX, &t->p.locale,
                                          &errors))) {
        if (strspn(t->p.locale,
                   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") !=
            strlen(t->p.locale))
            kf_problem_add_error(&errors, "locale", "must be a language tag such as zh-CN");
        json_array_append_new(t->fields, json_string("locale"));
    }
    if (json_object_get(root, "tier") != NULL &&
        (t->p.set_tier = kf_json_get_str(root, "tier", 1, KF_CUSTOMER_TIER_MAX, &t->p.tier,
                                        &errors))) {
        for (const unsigned char *p = (const unsigned char *) t->p.tier; *p; p++)
            if (*p < 0x20 || *p == 0x7f) {
                kf_problem_add_error(&errors, "tier", "must not contain control characters");
                break;
            }
        json_array_append_new(t->fields, json_string("tier"));
    }
    if ((v = json_object_get(root, "tags")) != NULL) {
        json_t *tags = kf_ticket_tags_check(v, "tags", &errors);
        if (tags != NULL) {
            kf_pool_cleanup_add(c->pool, decref_cleanup, tags);
            t->p.set_tags = 1;
            t->p.tags = tags;
            json_array_append_new(t->fields, json_string("tags"));
        }
    }
    if (json_object_get(root, "notes") != NULL &&
        (t->p.set_notes = kf_json_get_str(root, "notes", 0, KF_CUSTOMER_NOTES_MAX, &t->p.notes,
                                         &errors)))
        json_array_append_new(t->fields, json_string("notes"));
    if (errors != NULL) {
        kf_reply_invalid(out, c, errors);
        return 0;
    }
    return 1;
}

static int
h_customer_update(kf_call *c, kf_reply *out)
{
    struct customer_update_tx t;
    const char *error = NULL;
    int rc;

    if (!parse_customer_update(c, out, &t))
        return 0;
    if ((rc = kf_tx_run(c->db, customer_update_tx, &t, &error)) != KF_OK)
        return reply_customer_status(c, out, rc, error);
    return reply_customer(c, out, 200, t.id, NULL);
}

/* ---- POST /api/v1/customers/{id}/merge ---- */

struct customer_merge_tx {
    kf_call *c;
    uint64_t into, from;
    kf_customer_merge_result res;
};

static int
customer_merge_tx(kf_db *db, void *arg, const char **error_r)
{
    struct customer_merge_tx *t = arg;
    kf_call *c = t->c;
    int rc;

    if ((rc = kf_customer_merge(db, c->pool, t->into, t->from,
                                c->principal.agent_id ? KF_ACTOR_AGENT : KF_ACTOR_SYSTEM,
                                c->principal.agent_id, &t->res, error_r)) != KF_OK)
        return rc;
    return customer_event(c, "customer.merged",
                     json_pack("{s:I, s:I, s:I, s:I, s:I}", "into_id", (json_int_t) t->into,
                               "from_id", (json_int_t) t->from, "identities_moved",
                               (json_int_t) t->res.identities, "tickets_moved",
                               (json_int_t) t->res.tickets, "messages_moved",
                               (json_int_t) t->res.messages),
                     error_r);
}

static int
parse_customer_merge(kf_call *c, kf_reply *out, struct customer_merge_tx *t)
{
    static const char *const allowed[] = {"from_id", NULL};
    json_t *errors = NULL, *root;

    memset(t, 0, sizeof(*t));
    t->c = c;
    if (!path_customer_id(c, out, &t->into))
        return 0;
    if ((root = customer_body(c, out, allowed, &errors)) == NULL)
        return 0;
    if (kf_json_get_u64(root, "from_id", 1, &t->from, &errors) && t->from == t->into)
        kf_problem_add_error(&errors, "from_id", "a customer cannot be merged into itself");
    if (errors != NULL) {
        kf_reply_invalid(out, c, errors);
        return 0;
    }
    return 1;
}

static int
h_customer_merge(kf_call *c, kf_reply *out)
{
    struct customer_merge_tx t;
    json_t *errors = NULL;
    const char *error = NULL;
    int rc;

    if (!parse_customer_merge(c, out, &t))
        return 0;
    rc = kf_tx_run(c->db, customer_merge_tx, &t, &error);
    if (rc == KF_ENOTFOUND) {
        /* The path's customer answers 404; a missing from_id is a field error. */
        kf_customer cu;
        const char *e2 = NULL;
        if (kf_customer_get(c->db, c->pool, t.into, 0, &cu, &e2) == KF_OK) {
            kf_problem_add_error(&errors, "from_id", "no such customer");
            return kf_reply_invalid(out, c, errors);
        }
    }
    if (rc != KF_OK)
        return reply_customer_status(c, out, rc, error);
    return reply_customer(c, out, 200, t.into,
                          json_pack("{s:{s:I, s:I, s:I, s:I}}", "merged", "from_id",
                                    (json_int_t) t.from, "identities_moved",
                                    (json_int_t) t.res.identities, "tickets_moved",
                                    (json_int_t) t.res.tickets, "messages_moved",
                                    (json_int_t) t.res.messages));
}

/* ---- POST /api/v1/customers/{id}/identities ---- */

struct link_tx {
    kf_call *c;
    uint64_t id;
    const char *kind, *value;
    int created;
};

static int
link_tx(kf_db *db, void *arg, const char **error_r)
{
    struct link_tx *t = arg;
    kf_customer cu;
    uint64_t owner = 0;
    int rc;

    t->created = 0;
    if ((rc = kf_customer_get(db, t->c->pool, t->id, 1, &cu, error_r)) != KF_OK)
        return rc;
    if (cu.merged_into_id) {
        *error_r = kf_pool_printf(t->c->pool, "id: this customer was merged into %llu",
                                  (unsigned long long) cu.merged_into_id);
        return KF_ECONFLICT;
    }
    rc = kf_customer_link(db, t->id, t->kind, t->value, &t->created, &owner, error_r);
    if (rc == KF_ECONFLICT) {
        *error_r = kf_pool_printf(t->c->pool, "value: this identity belongs to customer %llu",
                                  (unsigned long long) owner);
        return rc;
    }
    if (rc != KF_OK || !t->created)
        return rc;
    return customer_event(t->c, "customer.identity_added",
                     json_pack("{s:I, s:s, s:s}", "customer_id", (json_int_t) t->id, "kind",
                               t->kind, "value", t->value),
                     error_r);
}

static int
parse_link(kf_call *c, kf_reply *out, struct link_tx *t)
{
    static const char *const allowed[] = {"kind", "value", NULL};
    json_t *errors = NULL, *root;
    const char *detail = NULL;

    memset(t, 0, sizeof(*t));
    t->c = c;
    if (!path_customer_id(c, out, &t->id))
        return 0;
    if ((root = customer_body(c, out, allowed, &errors)) == NULL)
        return 0;
    int has_kind = kf_json_get_enum(root, "kind", 1, kf_customer_identity_kinds, &t->kind, &errors);
    int has_value = kf_json_get_str(root, "value", 1, KF_IDENTITY_VALUE_MAX, &t->value, &errors);
    if (has_kind && has_value && !kf_customer_identity_ok(t->kind, t->value, &detail))
        kf_problem_add_error(&errors, "value", detail);
    if (errors != NULL) {
        kf_reply_invalid(out, c, errors);
        return 0;
    }
    return 1;
}

static int
h_customer_link(kf_call *c, kf_reply *out)
{
    struct link_tx t;
    const char *error = NULL;
    int rc;

    if (!parse_link(c, out, &t))
        return 0;
    if ((rc = kf_tx_run(c->db, link_tx, &t, &error)) != KF_OK)
        return reply_customer_status(c, out, rc, error);
    return reply_customer(c, out, t.created ? 201 : 200, t.id, NULL);
}

const kf_route kf_customer_routes[] = {
    {KF_GET, "/api/v1/customers", KF_AUTH_AGENT, 0, h_customer_search, 0, NULL},
    {KF_GET, "/api/v1/customers/{id}", KF_AUTH_AGENT, 0, h_customer_get, 0, NULL},
    {KF_PATCH, "/api/v1/customers/{id}", KF_AUTH_AGENT, CUSTOMER_PATCH_MAX, h_customer_update, 0,
     NULL},
    {KF_POST, "/api/v1/customers/{id}/merge", KF_AUTH_SUPERVISOR, CUSTOMER_SMALL_MAX,
     h_customer_merge, 0, NULL},
    {KF_POST, "/api/v1/customers/{id}/identities", KF_AUTH_AGENT, CUSTOMER_SMALL_MAX,
     h_customer_link, 0, NULL},
    {0, NULL, 0, 0, NULL, 0, NULL},
};
