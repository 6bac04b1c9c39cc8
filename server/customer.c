/*
 * customer.c - customer rows, identities (identify-or-create that converges
 * under concurrency), updates, merges and search.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "kefu/customer.h"
#include "kefu/db.h"
#include "kefu/event.h"
#include "kefu/http.h"
#include "kefu/pool.h"
#include "kefu/ticket.h"

#define TIME_SQL(col) "DATE_FORMAT(" col ", '%Y-%m-%dT%H:%i:%s.%fZ')"
#define CUSTOMER_COLS                                                                            \
    "c.id, c.merged_into_id, c.name, c.primary_email, c.phone, c.locale, c.tier, c.tags, "       \
    "c.notes, " TIME_SQL("c.created_at") ", " TIME_SQL("c.updated_at")

const char *const kf_customer_identity_kinds[] = {"email", "wechat_openid", "wechat_unionid",
                                                  "phone", "web",           NULL};

static void
row_read(kf_stmt *st, kf_pool *pool, kf_customer *cu)
{
    memset(cu, 0, sizeof(*cu));
    cu->id = kf_stmt_col_u64(st, 0);
    cu->merged_into_id = kf_stmt_col_u64(st, 1);
    cu->name = kf_stmt_col_str(st, 2, pool, NULL);
    cu->primary_email = kf_stmt_col_str(st, 3, pool, NULL);
    cu->phone = kf_stmt_col_str(st, 4, pool, NULL);
    cu->locale = kf_stmt_col_str(st, 5, pool, NULL);
    cu->tier = kf_stmt_col_str(st, 6, pool, NULL);
    cu->tags = kf_stmt_col_str(st, 7, pool, NULL);
    cu->notes = kf_stmt_col_str(st, 8, pool, NULL);
    cu->created_at = kf_stmt_col_str(st, 9, pool, NULL);
    cu->updated_at = kf_stmt_col_str(st, 10, pool, NULL);
}

int
kf_customer_get(kf_db *db, kf_pool *pool, uint64_t id, int for_update, kf_customer *cu,
                const char **error_r)
{
    kf_stmt *st;
    int rc;

    if (for_update)
        rc = kf_db_stmt(db, "customer.lock",
                        "SELECT " CUSTOMER_COLS " FROM customer c WHERE c.id = ? FOR UPDATE", &st,
                        error_r);
    else
        rc = kf_db_stmt(db, "customer.get",
                        "SELECT " CUSTOMER_COLS " FROM customer c WHERE c.id = ?", &st, error_r);
    if (rc != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_stmt_fetch(st, error_r)) < 0)
        return rc;
    if (rc == 0) {
        *error_r = "no such customer";
        return KF_ENOTFOUND;
    }
    row_read(st, pool, cu);
    kf_stmt_done(st);
    return KF_OK;
}

static json_t *
str_or_null(const char *s)
{
    json_t *v = s ? json_string(s) : NULL;
    return v ? v : json_null();
}

static json_t *
json_array_or_empty(const char *text)
{
    json_t *v = text ? json_loads(text, 0, NULL) : NULL;
    if (!json_is_array(v)) {
        json_decref(v);
        v = json_array();
    }
    return v;
}

json_t *
kf_customer_json(const kf_customer *cu)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t) cu->id));
    json_object_set_new(o, "name", str_or_null(cu->name));
    json_object_set_new(o, "primary_email", str_or_null(cu->primary_email));
    json_object_set_new(o, "phone", str_or_null(cu->phone));
    json_object_set_new(o, "locale", str_or_null(cu->locale));
    json_object_set_new(o, "tier", str_or_null(cu->tier));
    json_object_set_new(o, "tags", json_array_or_empty(cu->tags));
    json_object_set_new(o, "notes", str_or_null(cu->notes));
    json_object_set_new(o, "created_at", str_or_null(cu->created_at));
    json_object_set_new(o, "updated_at", str_or_null(cu->updated_at));
    json_object_set_new(o, "merged_into_id",
                        cu->merged_into_id ? json_integer((json_int_t) cu->merged_into_id)
                                           : json_null());
    return o;
}

int
kf_customer_identities_json(kf_db *db, kf_pool *pool, uint64_t id, json_t **out_r,
                            const char **error_r)
{
    kf_stmt *st;
    int rc;
    json_t *list;

    *out_r = NULL;
    if ((rc = kf_db_stmt(
             db, "customer.identities",
             "SELECT id, kind, value, " TIME_SQL("created_at") " FROM customer_identity "
                                                               "WHERE customer_id = ? ORDER BY id",
             &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    list = json_array();
    while ((rc = kf_stmt_fetch(st, error_r)) == 1) {
        json_t *o = json_object();
        json_object_set_new(o, "id", json_integer((json_int_t) kf_stmt_col_u64(st, 0)));
        json_object_set_new(o, "kind", str_or_null(kf_stmt_col_str(st, 1, pool, NULL)));
        json_object_set_new(o, "value", str_or_null(kf_stmt_col_str(st, 2, pool, NULL)));
        json_object_set_new(o, "created_at", str_or_null(kf_stmt_col_str(st, 3, pool, NULL)));
        json_array_append_new(list, o);
    }
    if (rc < 0) {
        json_decref(list);
        return rc;
    }
    *out_r = list;
    return KF_OK;
}

int
kf_customer_canonical(kf_db *db, uint64_t id, uint64_t *id_r, const char **error_r)
{
    kf_stmt *st;
    int rc;

    /* Merges are flattened (see kf_customer_merge), so this is at most two hops;
     * the bound only protects against a hand-edited cycle. */
    for (int hop = 0; hop < 8; hop++) {
        if ((rc = kf_db_stmt(db, "customer.merged_into",
                             "SELECT merged_into_id FROM customer WHERE id = ?", &st,
                             error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, id);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        if ((rc = kf_stmt_fetch(st, error_r)) < 0)
            return rc;
        if (rc == 0) {
            *error_r = "customer_id: no such customer";
            return KF_ENOTFOUND;
        }
        uint64_t next = kf_stmt_col_u64(st, 0);
        kf_stmt_done(st);
        if (next == 0) {
            *id_r = id;
            return KF_OK;
        }
        id = next;
    }
    *error_r = "customer_id: merge chain too long";
    return KF_EDB;
}

/* ---- validation ---- */

int
kf_customer_email_ok(const char *s)
{
    size_t len = strlen(s);
    const char *at = strchr(s, '@');
    if (len < 3 || len > KF_CUSTOMER_EMAIL_MAX || at == NULL || at == s || at[1] == '\0' ||
        strchr(at + 1, '@') != NULL)
        return 0;
    for (const unsigned char *p = (const unsigned char *) s; *p; p++)
        if (*p <= 0x20 || *p == 0x7f || *p == '<' || *p == '>' || *p == ',' || *p == ';')
            return 0;
    return kf_ticket_utf8_ok(s, len);
}

int
kf_customer_identity_ok(const char *kind, const char *value, const char **detail_r)
{
    size_t len = value ? strlen(value) : 0;
    int k = kf_ticket_enum_index(kf_customer_identity_kinds, kind);

    if (k < 0) {
        *detail_r = "must be one of: email wechat_openid wechat_unionid phone web";
        return 0;
    }
    if (len == 0 || len > KF_IDENTITY_VALUE_MAX || !kf_ticket_utf8_ok(value, len)) {
        *detail_r = "must be 1..254 bytes of UTF-8";
        return 0;
    }
    if (strcmp(kind, "email") == 0) {
        if (!kf_customer_email_ok(value)) {
            *detail_r = "must be an e-mail address";
            return 0;
        }
    } else if (strcmp(kind, "phone") == 0) {
        int nd = 0;
        for (const char *p = value; *p; p++) {
            if (*p >= '0' && *p <= '9')
                nd++;
            else if (!strchr("+-(). ", *p) || (*p == '+' && p != value))
                nd = -1000;
        }
        if (nd < 3 || len > KF_CUSTOMER_PHONE_MAX) {
            *detail_r = "must be a phone number: digits, spaces, + - ( ) . and at most 40 bytes";
            return 0;
        }
    } else if (strncmp(kind, "wechat_", 7) == 0) {
        for (const char *p = value; *p; p++)
            if (!isalnum((unsigned char) *p) && *p != '_' && *p != '-') {
                *detail_r = "must be [A-Za-z0-9_-]";
                return 0;
            }
        if (len > 128) {
            *detail_r = "must be at most 128 bytes";
            return 0;
        }
    } else {
        for (const unsigned char *p = (const unsigned char *) value; *p; p++)
            if (*p <= 0x20 || *p == 0x7f) {
                *detail_r = "must not contain spaces or control characters";
                return 0;
            }
    }
    return 1;
}

/* E-mail identities are stored lower-cased (the collation compares case-insensitively anyway). */
static const char *
identity_value(char *buf, size_t bufsz, const char *kind, const char *value)
{
    if (strcmp(kind, "email") != 0)
        return value;
    snprintf(buf, bufsz, "%s", value);
    for (char *p = buf; *p; p++)
        *p = (char) tolower((unsigned char) *p);
    return buf;
}

/* ---- identities ---- */

int
kf_customer_find(kf_db *db, const char *kind, const char *value, uint64_t *id_r,
                 const char **error_r)
{
    kf_stmt *st;
    int rc;
    char buf[KF_IDENTITY_VALUE_MAX + 1];

    if ((rc = kf_db_stmt(db, "customer.find",
                         "SELECT customer_id FROM customer_identity WHERE kind = ? AND value = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, kind);
    kf_stmt_bind_cstr(st, 1, identity_value(buf, sizeof(buf), kind, value));
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_stmt_fetch(st, error_r)) < 0)
        return rc;
    if (rc == 0) {
        *error_r = "no customer has this identity";
        return KF_ENOTFOUND;
    }
    *id_r = kf_stmt_col_u64(st, 0);
    kf_stmt_done(st);
    return KF_OK;
}

int
kf_customer_link(kf_db *db, uint64_t customer_id, const char *kind, const char *value,
                 int *created_r, uint64_t *owner_r, const char **error_r)
{
    kf_stmt *st;
    int rc;
    char buf[KF_IDENTITY_VALUE_MAX + 1];
    uint64_t owner = 0;

    *created_r = 0;
    *owner_r = 0;
    if ((rc =
             kf_db_stmt(db, "customer.link",
                        "INSERT INTO customer_identity (customer_id, kind, value) VALUES (?, ?, ?)",
                        &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, customer_id);
    kf_stmt_bind_cstr(st, 1, kind);
    kf_stmt_bind_cstr(st, 2, identity_value(buf, sizeof(buf), kind, value));
    rc = kf_stmt_exec(st, error_r);
    if (rc == KF_OK) {
        *created_r = 1;
        *owner_r = customer_id;
        return KF_OK;
    }
    if (rc != KF_ECONFLICT)
        return rc;
    /* Duplicate key: the row is committed by now (the insert waited for its
     * owner), and READ COMMITTED lets this read see it. */
    if ((rc = kf_customer_find(db, kind, value, &owner, error_r)) == KF_ENOTFOUND) {
        *error_r = "identity vanished after a duplicate-key error";
        return KF_ERETRY;
    }
    if (rc != KF_OK)
        return rc;
    *owner_r = owner;
    if (owner == customer_id)
        return KF_OK;
    *error_r = "value: this identity belongs to another customer";
    return KF_ECONFLICT;
}

static int
customer_insert(kf_db *db, const kf_customer_who *who, uint64_t *id_r, const char **error_r)
{
    kf_stmt *st;
    int rc;
    char buf[KF_IDENTITY_VALUE_MAX + 1];
    const char *email = strcmp(who->kind, "email") == 0
                            ? identity_value(buf, sizeof(buf), who->kind, who->value)
                            : NULL;
    const char *phone = strcmp(who->kind, "phone") == 0 ? who->value : NULL;
    char name[KF_CUSTOMER_NAME_MAX + 1];

    name[0] = '\0';
    if (who->name != NULL) {
        size_t n = kf_ticket_utf8_prefix(who->name, strlen(who->name), KF_CUSTOMER_NAME_MAX);
        memcpy(name, who->name, n);
        name[n] = '\0';
    }
    if ((rc = kf_db_stmt(db, "customer.insert",
                         "INSERT INTO customer (name, primary_email, phone, locale) "
                         "VALUES (?, ?, ?, COALESCE(?, 'en'))",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, name);
    kf_stmt_bind_cstr(st, 1, email);
    kf_stmt_bind_cstr(st, 2, phone);
    kf_stmt_bind_cstr(st, 3, who->locale);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    *id_r = kf_stmt_insert_id(st);
    return KF_OK;
}

int
kf_customer_resolve(kf_db *db, const kf_customer_who *who, uint64_t *id_r, int *created_r,
                    const char **error_r)
{
    uint64_t id = 0, owner = 0;
    int rc, linked;

    *created_r = 0;
    /* 1. Known identity. */
    rc = kf_customer_find(db, who->kind, who->value, &id, error_r);
    if (rc != KF_OK && rc != KF_ENOTFOUND)
        return rc;
    if (rc == KF_ENOTFOUND && who->unionid != NULL) {
        /* 2. Same person through another WeChat account: the UnionID knows them. */
        rc = kf_customer_find(db, "wechat_unionid", who->unionid, &id, error_r);
        if (rc != KF_OK && rc != KF_ENOTFOUND)
            return rc;
        if (rc == KF_OK) {
            rc = kf_customer_link(db, id, who->kind, who->value, &linked, &owner, error_r);
            if (rc == KF_ECONFLICT) /* linked to someone else meanwhile: theirs wins */
                id = owner, rc = KF_OK;
            if (rc != KF_OK)
                return rc;
        }
    }
    if (rc == KF_ENOTFOUND) {
        /* 3. New customer.  If another transaction creates the same identity
         * at the same time, our identity insert waits for it and then fails
         * with a duplicate key: drop our row and take theirs. */
        uint64_t mine;
        if ((rc = customer_insert(db, who, &mine, error_r)) != KF_OK)
            return rc;
        rc = kf_customer_link(db, mine, who->kind, who->value, &linked, &owner, error_r);
        if (rc == KF_ECONFLICT) {
            kf_stmt *st;
            if ((rc = kf_db_stmt(db, "customer.drop_new", "DELETE FROM customer WHERE id = ?",
                                 &st, error_r)) != KF_OK)
                return rc;
            kf_stmt_bind_u64(st, 0, mine);
            if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
                return rc;
            id = owner;
        } else if (rc != KF_OK) {
            return rc;
        } else {
            id = mine;
            *created_r = 1;
        }
    }
    /* 4. Remember the UnionID (first owner keeps it). */
    if (who->unionid != NULL) {
        rc = kf_customer_link(db, id, "wechat_unionid", who->unionid, &linked, &owner, error_r);
        if (rc != KF_OK && rc != KF_ECONFLICT)
            return rc;
    }
    *id_r = id;
    return KF_OK;
}

/* ---- update ---- */

int
kf_customer_update(kf_db *db, uint64_t id, const kf_customer_patch *p, const char **error_r)
{
    kf_stmt *st;
    int rc;
    char *tags = p->set_tags && p->tags ? json_dumps(p->tags, JSON_COMPACT) : NULL;

    if ((rc = kf_db_stmt(db, "customer.update",
                         "UPDATE customer SET name = IF(? = 1, ?, name), "
                         "primary_email = IF(? = 1, ?, primary_email), "
                         "phone = IF(? = 1, ?, phone), locale = IF(? = 1, ?, locale), "
                         "tier = IF(? = 1, ?, tier), tags = IF(? = 1, ?, tags), "
                         "notes = IF(? = 1, ?, notes), updated_at = NOW(6) WHERE id = ?",
                         &st, error_r)) != KF_OK) {
        free(tags);
        return rc;
    }
    kf_stmt_bind_i64(st, 0, p->set_name);
    kf_stmt_bind_cstr(st, 1, p->name ? p->name : "");
    kf_stmt_bind_i64(st, 2, p->set_email);
    kf_stmt_bind_cstr(st, 3, p->primary_email);
    kf_stmt_bind_i64(st, 4, p->set_phone);
    kf_stmt_bind_cstr(st, 5, p->phone);
    kf_stmt_bind_i64(st, 6, p->set_locale);
    kf_stmt_bind_cstr(st, 7, p->locale ? p->locale : "en");
    kf_stmt_bind_i64(st, 8, p->set_tier);
    kf_stmt_bind_cstr(st, 9, p->tier ? p->tier : "standard");
    kf_stmt_bind_i64(st, 10, p->set_tags && tags != NULL);
    kf_stmt_bind_cstr(st, 11, tags ? tags : "[]");
    kf_stmt_bind_i64(st, 12, p->set_notes);
    kf_stmt_bind_cstr(st, 13, p->notes ? p->notes : "");
    kf_stmt_bind_u64(st, 14, id);
    free(tags);
    return kf_stmt_exec(st, error_r);
}

/* ---- merge ---- */

static int
exec_2id(kf_db *db, const char *name, const char *sql, uint64_t a, uint64_t b, uint64_t *n_r,
         const char **error_r)
{
    kf_stmt *st;
    int rc;
    if ((rc = kf_db_stmt(db, name, sql, &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, a);
    kf_stmt_bind_u64(st, 1, b);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if (n_r != NULL)
        *n_r = kf_stmt_affected(st);
    return KF_OK;
}

static int
empty(const char *s)
{
    return s == NULL || *s == '\0';
}

int
kf_customer_merge(kf_db *db, kf_pool *pool, uint64_t into, uint64_t from, int actor_kind,
                  uint64_t actor_id, kf_customer_merge_result *res, const char **error_r)
{
    static const char *const actors[] = {"system", "agent", "customer"};
    kf_customer a, b, *dst, *src;
    kf_stmt *st;
    int rc;

    memset(res, 0, sizeof(*res));
    if (into == from) {
        *error_r = "from_id: a customer cannot be merged into itself";
        return KF_EINVAL;
    }
    /* 1. Lock both rows, lower id first (two merges of the same pair cannot deadlock). */
    if ((rc = kf_customer_get(db, pool, into < from ? into : from, 1, &a, error_r)) != KF_OK ||
        (rc = kf_customer_get(db, pool, into < from ? from : into, 1, &b, error_r)) != KF_OK)
        return rc;
    dst = into < from ? &a : &b;
    src = into < from ? &b : &a;
    if (dst->merged_into_id || src->merged_into_id) {
        *error_r = dst->merged_into_id ? "id: this customer was merged into another one"
                                       : "from_id: that customer was merged already";
        return KF_ECONFLICT;
    }

    /* 2. Identities, tickets (an event on each), authored messages, older merges. */
    if ((rc = exec_2id(db, "customer.merge_identities",
                       "UPDATE customer_identity SET customer_id = ? WHERE customer_id = ?", into,
                       from, &res->identities, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_db_stmt(db, "customer.merge_ticket_events",
                         "INSERT INTO event (ticket_id, kind, actor_kind, actor_id, data) "
                         "SELECT id, 'ticket.customer_changed', ?, ?, "
                         "JSON_OBJECT('from_customer_id', ?, 'to_customer_id', ?) "
                         "FROM ticket WHERE customer_id = ? ORDER BY id",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, actors[actor_kind >= 0 && actor_kind <= 2 ? actor_kind : 0]);
    if (actor_id)
        kf_stmt_bind_u64(st, 1, actor_id);
    else
        kf_stmt_bind_null(st, 1);
    kf_stmt_bind_u64(st, 2, from);
    kf_stmt_bind_u64(st, 3, into);
    kf_stmt_bind_u64(st, 4, from);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = exec_2id(db, "customer.merge_tickets",
                       "UPDATE ticket SET customer_id = ?, version = version + 1, "
                       "updated_at = NOW(6) WHERE customer_id = ?",
                       into, from, &res->tickets, error_r)) != KF_OK)
        return rc;
    if ((rc = exec_2id(db, "customer.merge_messages",
                       "UPDATE message SET author_customer_id = ? WHERE author_customer_id = ?",
                       into, from, &res->messages, error_r)) != KF_OK)
        return rc;
    if ((rc = exec_2id(db, "customer.merge_flatten",
                       "UPDATE customer SET merged_into_id = ? WHERE merged_into_id = ?", into,
                       from, NULL, error_r)) != KF_OK)
        return rc;

    /* 3. The survivor keeps its own values and takes what it lacks. */
    json_t *tags = json_array_or_empty(dst->tags), *more = json_array_or_empty(src->tags), *t;
    size_t i;
    json_array_foreach(more, i, t)
    {
        int dup = 0;
        for (size_t k = 0; k < json_array_size(tags) && !dup; k++)
            dup = json_equal(json_array_get(tags, k), t);
        if (!dup)
            json_array_append(tags, t);
    }
    json_decref(more);
    const char *notes = dst->notes;
    if (!empty(src->notes))
        notes = empty(dst->notes) ? src->notes
                                  : kf_pool_printf(pool, "%s\n\n%s", dst->notes, src->notes);
    kf_customer_patch p = {
        .set_name = empty(dst->name) && !empty(src->name),
        .name = src->name,
        .set_email = dst->primary_email == NULL && src->primary_email != NULL,
        .primary_email = src->primary_email,
        .set_phone = dst->phone == NULL && src->phone != NULL,
        .phone = src->phone,
        .set_tags = 1,
        .tags = tags,
        .set_notes = 1,
        .notes = notes,
    };
    /* TEXT holds 65535 bytes: keep the survivor's notes whole, cut the appended part. */
    if (strlen(notes) > KF_CUSTOMER_NOTES_MAX) {
        size_t n = kf_ticket_utf8_prefix(notes, strlen(notes), KF_CUSTOMER_NOTES_MAX);
        p.notes = kf_pool_strndup(pool, notes, n);
    }
    rc = kf_customer_update(db, into, &p, error_r);
    json_decref(tags);
    if (rc != KF_OK)
        return rc;

    /* 4. The merged row stays, pointing at the survivor. */
    return exec_2id(db, "customer.merge_mark",
                    "UPDATE customer SET merged_into_id = ?, updated_at = NOW(6) WHERE id = ?",
                    into, from, NULL, error_r);
}

/* ---- search ---- */

char *
kf_customer_cursor_encode(kf_pool *pool, uint64_t id)
{
    char raw[32];
    int n = snprintf(raw, sizeof(raw), "c1:%" PRIu64, id);
    size_t cap = sodium_base64_ENCODED_LEN((size_t) n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = kf_pool_alloc(pool, cap);
    sodium_bin2base64(out, cap, (const unsigned char *) raw, (size_t) n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

int
kf_customer_cursor_decode(const char *s, uint64_t *id_r)
{
    unsigned char raw[40];
    size_t rawlen = 0, len = strlen(s);
    const char *end = NULL;
    uint64_t v = 0;

    if (len == 0 || len > 48)
        return KF_EINVAL;
    if (sodium_base642bin(raw, sizeof(raw) - 1, s, len, NULL, &rawlen, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        end != s + len)
        return KF_EINVAL;
    if (rawlen < 4 || rawlen > 22 || memcmp(raw, "c1:", 3) != 0 || (rawlen > 4 && raw[3] == '0'))
        return KF_EINVAL;
    for (size_t i = 3; i < rawlen; i++) {
        if (raw[i] < '0' || raw[i] > '9')
            return KF_EINVAL;
        if (v > (uint64_t) (INT64_MAX - 9) / 10)
            return KF_EINVAL;
        v = v * 10 + (uint64_t) (raw[i] - '0');
    }
    if (v == 0)
        return KF_EINVAL;
    *id_r = v;
    return KF_OK;
}

int
kf_customer_query_parse(kf_pool *pool, const char *query, kf_customer_query *cq,
                        json_t **errors)
{
    int bad = 0, seen_q = 0, seen_limit = 0, seen_after = 0;

    memset(cq, 0, sizeof(*cq));
    cq->limit = KF_LIST_LIMIT_DEFAULT;
    for (const char *p = query ? query : ""; *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t) (amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t kl = eq ? (size_t) (eq - p) : len;
        const char *next = amp ? amp + 1 : p + len;

        if (len == 0) {
            p = next;
            continue;
        }
        char *key = kf_url_decode(pool, p, kl, 1);
        char *val = kf_url_decode(pool, eq ? eq + 1 : "", eq ? len - kl - 1 : 0, 1);
        p = next;
        int *seen = NULL;
        if (key != NULL && strcmp(key, "q") == 0)
            seen = &seen_q;
        else if (key != NULL && strcmp(key, "limit") == 0)
            seen = &seen_limit;
        else if (key != NULL && strcmp(key, "after") == 0)
            seen = &seen_after;
        if (seen == NULL) {
            kf_problem_add_error(errors,
                                 key && kf_ticket_utf8_ok(key, strlen(key)) ? key : "query",
                                 "unknown query parameter");
            bad = 1;
            continue;
        }
        if (val == NULL || !kf_ticket_utf8_ok(val, strlen(val))) {
            kf_problem_add_error(errors, key, "bad percent-encoding or not UTF-8");
            bad = 1;
            continue;
        }
        if (*seen) {
            kf_problem_add_error(errors, key, "given more than once");
            bad = 1;
            continue;
        }
        *seen = 1;
        if (seen == &seen_q) {
            size_t ql = strlen(val);
            if (ql > KF_IDENTITY_VALUE_MAX) {
                kf_problem_add_error(errors, "q", "is longer than 254 bytes");
                bad = 1;
            } else if (ql > 0) {
                cq->q = val;
            }
        } else if (seen == &seen_limit) {
            char *end = NULL;
            unsigned long v = 0;
            if (val[0] >= '1' && val[0] <= '9' && strlen(val) <= 3)
                v = strtoul(val, &end, 10);
            if (v < 1 || v > KF_LIST_LIMIT_MAX || end == NULL || *end != '\0') {
                kf_problem_add_error(errors, "limit", "must be an integer 1..200");
                bad = 1;
            } else {
                cq->limit = (unsigned) v;
            }
        } else if (kf_customer_cursor_decode(val, &cq->after_id) != KF_OK) {
            kf_problem_add_error(errors, "after", "is not a cursor this server handed out");
            bad = 1;
        }
    }
    return bad ? KF_EINVAL : KF_OK;
}

#define CUSTOMER_LIST_SQL                                                                        \
    "SELECT " CUSTOMER_COLS " FROM customer c WHERE c.id > ? AND c.merged_into_id IS NULL "       \
    "ORDER BY c.id LIMIT ?"
#define CUSTOMER_SEARCH_SQL                                                                      \
    "SELECT STRAIGHT_JOIN " CUSTOMER_COLS " FROM ("                                                \
    "SELECT id FROM customer WHERE name LIKE ? AND id > ? "                                        \
    "UNION SELECT id FROM customer WHERE primary_email = ? AND id > ? "                            \
    "UNION SELECT customer_id FROM customer_identity WHERE value = ? AND customer_id > ?) m "      \
    "JOIN customer c ON c.id = m.id WHERE c.merged_into_id IS NULL ORDER BY c.id LIMIT ?"

int
kf_customer_search_prepare(kf_db *db, const kf_customer_query *cq, int explain, kf_stmt **st_r,
                           const char **error_r)
{
    kf_stmt *st;
    int rc;

    if (cq->q == NULL) {
        if ((rc = kf_db_stmt(db, explain ? "customer.list:x" : "customer.list",
                             explain ? "EXPLAIN " CUSTOMER_LIST_SQL : CUSTOMER_LIST_SQL, &st,
                             error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, cq->after_id);
        kf_stmt_bind_u64(st, 1, (uint64_t) cq->limit + 1);
        *st_r = st;
        return KF_OK;
    }
    /* Each branch is an index lookup (name prefix, e-mail, identity value of
     * any kind); the union is small and ordered by id for the cursor. */
    if ((rc = kf_db_stmt(db, explain ? "customer.search:x" : "customer.search",
                         explain ? "EXPLAIN " CUSTOMER_SEARCH_SQL : CUSTOMER_SEARCH_SQL, &st,
                         error_r)) != KF_OK)
        return rc;
    kf_str like = KF_STR_INIT;
    for (const char *p = cq->q; *p; p++) {
        if (*p == '%' || *p == '_' || *p == '\\')
            kf_str_append(&like, "\\", 1);
        kf_str_append(&like, p, 1);
    }
    kf_str_append(&like, "%", 1);
    kf_stmt_bind_cstr(st, 0, like.ptr);
    kf_str_free(&like);
    kf_stmt_bind_u64(st, 1, cq->after_id);
    kf_stmt_bind_cstr(st, 2, cq->q);
    kf_stmt_bind_u64(st, 3, cq->after_id);
    kf_stmt_bind_cstr(st, 4, cq->q);
    kf_stmt_bind_u64(st, 5, cq->after_id);
    kf_stmt_bind_u64(st, 6, (uint64_t) cq->limit + 1);
    *st_r = st;
    return KF_OK;
}

int
kf_customer_search(kf_db *db, kf_pool *pool, const kf_customer_query *cq, json_t **items_r,
                   const char **next_r, const char **error_r)
{
    kf_stmt *st;
    int rc;
    unsigned n = 0;
    kf_customer cu;

    *items_r = NULL;
    *next_r = NULL;
    if ((rc = kf_customer_search_prepare(db, cq, 0, &st, error_r)) != KF_OK ||
        (rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    json_t *items = json_array();
    while ((rc = kf_stmt_fetch(st, error_r)) == 1) {
        row_read(st, pool, &cu);
        if (++n > cq->limit) {
            kf_stmt_done(st);
            rc = 0;
            break;
        }
        json_array_append_new(items, kf_customer_json(&cu));
    }
    if (rc < 0) {
        json_decref(items);
        return rc;
    }
    if (n > cq->limit) {
        /* The cursor is the last id on this page. */
        json_t *last = json_array_get(items, json_array_size(items) - 1);
        *next_r = kf_customer_cursor_encode(
            pool, (uint64_t) json_integer_value(json_object_get(last, "id")));
    }
    *items_r = items;
    return KF_OK;
}
