/*
 * ticket.c - ticket and message rows: read, JSON, state changes inside the
 * caller's transaction, attachments in chunks, merges, and the list query
 * whose SQL text depends only on which filters are set (every shape uses
 * an index; tests/integration_c/test_ingest.c checks with EXPLAIN).
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "kefu/auth.h"
#include "kefu/db.h"
#include "kefu/http.h"
#include "kefu/pool.h"
#include "kefu/ticket.h"
#include "kefu/utf8.h"

#define TIME_SQL(col) "DATE_FORMAT(" col ", '%Y-%m-%dT%H:%i:%s.%fZ')"

/* Columns read by row_read(), in order. */
#define TICKET_COLS                                                                              \
    "t.id, t.customer_id, t.queue_id, t.assignee_id, t.merged_into_id, t.follow_up_of_id, "      \
    "t.subject, t.status, t.priority, t.channel, t.channel_account, t.tags, " TIME_SQL(          \
        "t.created_at") ", " TIME_SQL("t.updated_at") ", " TIME_SQL("t.first_response_at") ", " \
        TIME_SQL("t.solved_at") ", " TIME_SQL("t.closed_at") ", t.version"
#define TICKET_NCOLS 18

const char *const kf_ticket_statuses[] = {"new", "open", "pending", "solved", "closed", NULL};
const char *const kf_ticket_priorities[] = {"low", "normal", "high", "urgent", NULL};
const char *const kf_ticket_channels[] = {"email", "web", "wechat", "api", "phone", NULL};

int
kf_ticket_enum_index(const char *const *list, const char *s)
{
    if (s == NULL)
        return -1;
    for (int i = 0; list[i] != NULL; i++)
        if (strcmp(list[i], s) == 0)
            return i;
    return -1;
}

void
kf_ticket_number(uint64_t id, char *buf, size_t bufsz)
{
    snprintf(buf, bufsz, "KF-%06" PRIu64, id);
}

/* ---- rows ---- */

static void
row_read(kf_stmt *st, kf_pool *pool, kf_ticket *tk, int with_customer)
{
    memset(tk, 0, sizeof(*tk));
    tk->id = kf_stmt_col_u64(st, 0);
    tk->customer_id = kf_stmt_col_u64(st, 1);
    tk->queue_id = kf_stmt_col_u64(st, 2);
    tk->assignee_id = kf_stmt_col_u64(st, 3);
    tk->merged_into_id = kf_stmt_col_u64(st, 4);
    tk->follow_up_of_id = kf_stmt_col_u64(st, 5);
    tk->subject = kf_stmt_col_str(st, 6, pool, NULL);
    tk->status = kf_stmt_col_str(st, 7, pool, NULL);
    tk->priority = kf_stmt_col_str(st, 8, pool, NULL);
    tk->channel = kf_stmt_col_str(st, 9, pool, NULL);
    tk->channel_account = kf_stmt_col_str(st, 10, pool, NULL);
    tk->tags = kf_stmt_col_str(st, 11, pool, NULL);
    tk->created_at = kf_stmt_col_str(st, 12, pool, NULL);
    tk->updated_at = kf_stmt_col_str(st, 13, pool, NULL);
    tk->first_response_at = kf_stmt_col_str(st, 14, pool, NULL);
    tk->solved_at = kf_stmt_col_str(st, 15, pool, NULL);
    tk->closed_at = kf_stmt_col_str(st, 16, pool, NULL);
    tk->version = (unsigned) kf_stmt_col_u64(st, 17);
    if (with_customer) {
        tk->customer_name = kf_stmt_col_str(st, TICKET_NCOLS, pool, NULL);
        tk->customer_email = kf_stmt_col_str(st, TICKET_NCOLS + 1, pool, NULL);
    }
}

static int
fetch_one(kf_db *db, kf_pool *pool, const char *name, const char *sql, uint64_t id,
          int with_customer, kf_ticket *tk, const char **error_r)
{
    kf_stmt *st;
    int rc;

    if ((rc = kf_db_stmt(db, name, sql, &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    rc = kf_stmt_fetch(st, error_r);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        *error_r = "no such ticket";
        return KF_ENOTFOUND;
    }
    row_read(st, pool, tk, with_customer);
    kf_stmt_done(st);
    return KF_OK;
}

int
kf_ticket_get(kf_db *db, kf_pool *pool, uint64_t id, kf_ticket *tk, const char **error_r)
{
    return fetch_one(db, pool, "ticket.get",
                     "SELECT " TICKET_COLS ", c.name, c.primary_email FROM ticket t "
                     "JOIN customer c ON c.id = t.customer_id WHERE t.id = ?",
                     id, 1, tk, error_r);
}

int
kf_ticket_lock(kf_db *db, kf_pool *pool, uint64_t id, kf_ticket *tk, const char **error_r)
{
    return fetch_one(db, pool, "ticket.lock",
                     "SELECT " TICKET_COLS " FROM ticket t WHERE t.id = ? FOR UPDATE", id, 0, tk,
                     error_r);
}

static json_t *
id_or_null(uint64_t id)
{
    return id ? json_integer((json_int_t) id) : json_null();
}

static json_t *
str_or_null(const char *s)
{
    json_t *v = s ? json_string(s) : NULL;
    return v ? v : json_null();
}

json_t *
kf_ticket_json(const kf_ticket *tk)
{
    char number[32];
    json_t *o = json_object(), *tags = NULL, *cust = json_object();

    kf_ticket_number(tk->id, number, sizeof(number));
    if (tk->tags != NULL)
        tags = json_loads(tk->tags, 0, NULL);
    if (!json_is_array(tags)) {
        json_decref(tags);
        tags = json_array();
    }
    json_object_set_new(cust, "id", id_or_null(tk->customer_id));
    json_object_set_new(cust, "name", str_or_null(tk->customer_name));
    json_object_set_new(cust, "email", str_or_null(tk->customer_email));

    json_object_set_new(o, "id", json_integer((json_int_t) tk->id));
    json_object_set_new(o, "number", json_string(number));
    json_object_set_new(o, "subject", str_or_null(tk->subject));
    json_object_set_new(o, "status", str_or_null(tk->status));
    json_object_set_new(o, "priority", str_or_null(tk->priority));
    json_object_set_new(o, "channel", str_or_null(tk->channel));
    json_object_set_new(o, "channel_account", str_or_null(tk->channel_account));
    json_object_set_new(o, "customer", cust);
    json_object_set_new(o, "queue_id", id_or_null(tk->queue_id));
    json_object_set_new(o, "assignee_id", id_or_null(tk->assignee_id));
    json_object_set_new(o, "tags", tags);
    json_object_set_new(o, "created_at", str_or_null(tk->created_at));
    json_object_set_new(o, "updated_at", str_or_null(tk->updated_at));
    json_object_set_new(o, "first_response_at", str_or_null(tk->first_response_at));
    json_object_set_new(o, "solved_at", str_or_null(tk->solved_at));
    json_object_set_new(o, "closed_at", str_or_null(tk->closed_at));
    json_object_set_new(o, "version", json_integer(tk->version));
    json_object_set_new(o, "merged_into_id", id_or_null(tk->merged_into_id));
    json_object_set_new(o, "follow_up_of_id", id_or_null(tk->follow_up_of_id));
    return o;
}

/* ---- writes ---- */

static void
bind_id(kf_stmt *st, unsigned i, uint64_t id)
{
    if (id)
        kf_stmt_bind_u64(st, i, id);
    else
        kf_stmt_bind_null(st, i);
}

int
kf_ticket_insert(kf_db *db, const kf_ticket_new *t, uint64_t *id_r, const char **error_r)
{
    kf_stmt *st;
    int rc;

    if ((rc = kf_db_stmt(db, "ticket.insert",
                         "INSERT INTO ticket (subject, status, priority, channel, channel_account, "
                         "customer_id, queue_id, follow_up_of_id) "
                         "VALUES (?, 'new', ?, ?, ?, ?, ?, ?)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->subject);
    kf_stmt_bind_cstr(st, 1, t->priority ? t->priority : "normal");
    kf_stmt_bind_cstr(st, 2, t->channel);
    kf_stmt_bind_cstr(st, 3, t->channel_account ? t->channel_account : "");
    kf_stmt_bind_u64(st, 4, t->customer_id);
    bind_id(st, 5, t->queue_id);
    bind_id(st, 6, t->follow_up_of_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    *id_r = kf_stmt_insert_id(st);
    return KF_OK;
}

int
kf_ticket_create(kf_db *db, const kf_ticket_new *t, uint64_t *id_r, const char **error_r)
{
    kf_stmt *st;
    int rc;

    /* An explicit queue must exist (no row is inserted otherwise); else the
     * channel account's default queue, if it has one. */
    if (t->queue_id != 0)
        rc = kf_db_stmt(db, "ticket.create_in",
                        "INSERT INTO ticket (subject, status, priority, channel, channel_account, "
                        "customer_id, queue_id, follow_up_of_id) "
                        "SELECT ?, 'new', ?, ?, ?, ?, q.id, ? FROM queue q WHERE q.id = ?",
                        &st, error_r);
    else
        rc = kf_db_stmt(db, "ticket.create_routed",
                        "INSERT INTO ticket (subject, status, priority, channel, channel_account, "
                        "customer_id, queue_id, follow_up_of_id) "
                        "VALUES (?, 'new', ?, ?, ?, ?, (SELECT ca.default_queue_id FROM "
                        "channel_account ca WHERE ca.channel = ? AND ca.account = ?), ?)",
                        &st, error_r);
    if (rc != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->subject);
    kf_stmt_bind_cstr(st, 1, t->priority ? t->priority : "normal");
    kf_stmt_bind_cstr(st, 2, t->channel);
    kf_stmt_bind_cstr(st, 3, t->channel_account ? t->channel_account : "");
    kf_stmt_bind_u64(st, 4, t->customer_id);
    if (t->queue_id != 0) {
        bind_id(st, 5, t->follow_up_of_id);
        kf_stmt_bind_u64(st, 6, t->queue_id);
    } else {
        kf_stmt_bind_cstr(st, 5, t->channel);
        kf_stmt_bind_cstr(st, 6, t->channel_account ? t->channel_account : "");
        bind_id(st, 7, t->follow_up_of_id);
    }
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if (kf_stmt_affected(st) == 0) {
        *error_r = t->queue_id != 0 ? "queue_id: no such queue" : "ticket insert wrote no row";
        return t->queue_id != 0 ? KF_EINVAL : KF_EDB;
    }
    *id_r = kf_stmt_insert_id(st);
    return KF_OK;
}

static int
exec_id(kf_db *db, const char *name, const char *sql, uint64_t id, const char **error_r)
{
    kf_stmt *st;
    int rc;
    if ((rc = kf_db_stmt(db, name, sql, &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, id);
    return kf_stmt_exec(st, error_r);
}

int
kf_ticket_touch(kf_db *db, uint64_t id, const char **error_r)
{
    return exec_id(db, "ticket.touch",
                   "UPDATE ticket SET version = version + 1, updated_at = NOW(6) WHERE id = ?", id,
                   error_r);
}

int
kf_ticket_first_response(kf_db *db, uint64_t id, const char **error_r)
{
    return exec_id(db, "ticket.first_response",
                   "UPDATE ticket SET first_response_at = COALESCE(first_response_at, NOW(6)) "
                   "WHERE id = ?",
                   id, error_r);
}

int
kf_ticket_set_status(kf_db *db, uint64_t id, const char *status, const char **error_r)
{
    kf_stmt *st;
    int rc;

    if (kf_ticket_enum_index(kf_ticket_statuses, status) < 0) {
        *error_r = "status: unknown status";
        return KF_EINVAL;
    }
    if ((rc = kf_db_stmt(db, "ticket.set_status",
                         "UPDATE ticket SET status = ?, "
                         "solved_at = CASE ? WHEN 'solved' THEN COALESCE(solved_at, NOW(6)) "
                         "WHEN 'closed' THEN solved_at ELSE NULL END, "
                         "closed_at = CASE ? WHEN 'closed' THEN COALESCE(closed_at, NOW(6)) "
                         "ELSE NULL END, "
                         "version = version + 1, updated_at = NOW(6) WHERE id = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, status);
    kf_stmt_bind_cstr(st, 1, status);
    kf_stmt_bind_cstr(st, 2, status);
    kf_stmt_bind_u64(st, 3, id);
    return kf_stmt_exec(st, error_r);
}

int
kf_ticket_set_priority(kf_db *db, uint64_t id, const char *priority, const char **error_r)
{
    kf_stmt *st;
    int rc;
    if ((rc = kf_db_stmt(db, "ticket.set_priority", "UPDATE ticket SET priority = ? WHERE id = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, priority);
    kf_stmt_bind_u64(st, 1, id);
    return kf_stmt_exec(st, error_r);
}

int
kf_ticket_set_queue(kf_db *db, uint64_t id, uint64_t queue_id, const char **error_r)
{
    kf_stmt *st;
    int rc;
    if ((rc = kf_db_stmt(db, "ticket.set_queue", "UPDATE ticket SET queue_id = ? WHERE id = ?", &st,
                         error_r)) != KF_OK)
        return rc;
    bind_id(st, 0, queue_id);
    kf_stmt_bind_u64(st, 1, id);
    return kf_stmt_exec(st, error_r);
}

int
kf_ticket_set_assignee(kf_db *db, uint64_t id, uint64_t agent_id, const char **error_r)
{
    kf_stmt *st;
    int rc;
    if ((rc = kf_db_stmt(db, "ticket.set_assignee",
                         "UPDATE ticket SET assignee_id = ? WHERE id = ?", &st, error_r)) != KF_OK)
        return rc;
    bind_id(st, 0, agent_id);
    kf_stmt_bind_u64(st, 1, id);
    return kf_stmt_exec(st, error_r);
}

int
kf_ticket_set_tags(kf_db *db, uint64_t id, const json_t *tags, const char **error_r)
{
    kf_stmt *st;
    int rc;
    char *text = json_dumps(tags, JSON_COMPACT);
    size_t i;
    json_t *v;

    if (text == NULL) {
        *error_r = "tags: cannot encode";
        return KF_EINVAL;
    }
    if ((rc = kf_db_stmt(db, "ticket.set_tags", "UPDATE ticket SET tags = ? WHERE id = ?", &st,
                         error_r)) != KF_OK) {
        free(text);
        return rc;
    }
    kf_stmt_bind_cstr(st, 0, text);
    free(text);
    kf_stmt_bind_u64(st, 1, id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = exec_id(db, "ticket.tags_clear", "DELETE FROM ticket_tag WHERE ticket_id = ?", id,
                      error_r)) != KF_OK)
        return rc;
    json_array_foreach(tags, i, v)
    {
        if ((rc = kf_db_stmt(db, "ticket.tag_add",
                             "INSERT IGNORE INTO ticket_tag (tag, ticket_id) VALUES (?, ?)", &st,
                             error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_cstr(st, 0, json_string_value(v));
        kf_stmt_bind_u64(st, 1, id);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
    }
    return KF_OK;
}

json_t *
kf_ticket_tags_check(const json_t *v, const char *field, json_t **errors)
{
    size_t i;
    json_t *t;
    char msg[128];

    if (!json_is_array(v)) {
        kf_problem_add_error(errors, field, "must be an array of strings");
        return NULL;
    }
    if (json_array_size(v) > KF_TICKET_TAGS_MAX) {
        snprintf(msg, sizeof(msg), "at most %d tags", KF_TICKET_TAGS_MAX);
        kf_problem_add_error(errors, field, msg);
        return NULL;
    }
    json_t *out = json_array();
    json_array_foreach(v, i, t)
    {
        const char *s = json_string_value(t);
        size_t len = json_string_length(t);
        int bad = s == NULL || len == 0 || len > KF_TICKET_TAG_MAX || strlen(s) != len;
        char lower[KF_TICKET_TAG_MAX + 1];

        for (size_t k = 0; !bad && k < len; k++) {
            unsigned char ch = (unsigned char) s[k];
            if (ch <= 0x20 || ch == 0x7f || ch == ',')
                bad = 1;
            else
                lower[k] = (char) tolower(ch);
        }
        if (bad) {
            snprintf(msg, sizeof(msg),
                     "tag %zu must be a string of 1..%d bytes without spaces, commas or control "
                     "characters",
                     i, KF_TICKET_TAG_MAX);
            kf_problem_add_error(errors, field, msg);
            json_decref(out);
            return NULL;
        }
        lower[len] = '\0';
        for (size_t k = 0; k < json_array_size(out); k++)
            if (strcmp(json_string_value(json_array_get(out, k)), lower) == 0)
                bad = 1;
        if (bad) {
            snprintf(msg, sizeof(msg), "tag %zu is given twice", i);
            kf_problem_add_error(errors, field, msg);
            json_decref(out);
            return NULL;
        }
        json_array_append_new(out, json_string(lower));
    }
    return out;
}

/* ---- messages and attachments ---- */

int
kf_ticket_add_message(kf_db *db, const kf_message_new *m, uint64_t *id_r, const char **error_r)
{
    kf_stmt *st;
    int rc;

    if ((rc = kf_db_stmt(db, "ticket.message_add",
                         "INSERT INTO message (ticket_id, direction, kind, author_kind, "
                         "author_agent_id, author_customer_id, channel, channel_account, "
                         "external_id, body_text, body_html, quote_offset) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, m->ticket_id);
    kf_stmt_bind_cstr(st, 1, m->direction);
    kf_stmt_bind_cstr(st, 2, m->kind);
    kf_stmt_bind_cstr(st, 3, m->author_kind);
    bind_id(st, 4, m->author_agent_id);
    bind_id(st, 5, m->author_customer_id);
    kf_stmt_bind_cstr(st, 6, m->channel);
    kf_stmt_bind_cstr(st, 7, m->channel_account ? m->channel_account : "");
    kf_stmt_bind_cstr(st, 8, m->external_id);
    kf_stmt_bind_str(st, 9, m->text ? m->text : "", m->text ? m->text_len : 0);
    kf_stmt_bind_cstr(st, 10, m->html);
    if (m->text != NULL && m->quote_at > 0 && m->quote_at < m->text_len)
        kf_stmt_bind_u64(st, 11, m->quote_at);
    else
        kf_stmt_bind_null(st, 11);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    *id_r = kf_stmt_insert_id(st);
    return KF_OK;
}

void
kf_ticket_sha256_hex(const unsigned char *data, size_t len, char hex[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, data, len);
    sodium_bin2hex(hex, 65, h, sizeof(h));
}

int
kf_ticket_add_attachment(kf_db *db, uint64_t ticket_id, uint64_t message_id,
                         const char *filename, const char *content_type, const char *content_id,
                         const unsigned char *data, size_t len, uint64_t *id_r,
                         const char **error_r)
{
    kf_stmt *st;
    int rc;
    char hex[65];
    uint64_t id;

    kf_ticket_sha256_hex(data ? data : (const unsigned char *) "", data ? len : 0, hex);
    if ((rc = kf_db_stmt(db, "ticket.attachment_add",
                         "INSERT INTO attachment (ticket_id, message_id, filename, content_type, "
                         "size, sha256, content_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, ticket_id);
    bind_id(st, 1, message_id);
    kf_stmt_bind_cstr(st, 2, filename);
    kf_stmt_bind_cstr(st, 3, content_type ? content_type : "application/octet-stream");
    kf_stmt_bind_u64(st, 4, (uint64_t) len);
    kf_stmt_bind_cstr(st, 5, hex);
    kf_stmt_bind_cstr(st, 6, content_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    id = kf_stmt_insert_id(st);
    /* An empty file still has one (empty) chunk, so readers need no special case. */
    for (size_t off = 0, seq = 0; off < len || seq == 0; off += KF_ATTACHMENT_CHUNK, seq++) {
        size_t n = len - off < KF_ATTACHMENT_CHUNK ? len - off : KF_ATTACHMENT_CHUNK;
        if ((rc = kf_db_stmt(db, "ticket.attachment_chunk",
                             "INSERT INTO attachment_chunk (attachment_id, seq, data) "
                             "VALUES (?, ?, ?)",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, id);
        kf_stmt_bind_u64(st, 1, (uint64_t) seq);
        kf_stmt_bind_str(st, 2, data ? (const char *) data + off : "", data ? n : 0);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        if (len == 0)
            break;
    }
    if (id_r != NULL)
        *id_r = id;
    return KF_OK;
}

/*
 * Messages with their attachments' metadata in one statement: one row per
 * (message, attachment) from `message m LEFT JOIN agent a LEFT JOIN
 * attachment x`, MESSAGE_COLS then ATTACHMENT_COLS.  A message's bodies come
 * only with its first row (flagged), so a message with several attachments
 * does not send its text several times.  There is no ORDER BY: on an outer
 * join MariaDB would sort through a temporary table (with the bodies in
 * it); struct msgs puts the rows in order instead - messages by
 * (created_at, id), each one's attachments by id - as the two statements
 * this replaces did.
 */
#define FIRST_ROW_OF_MESSAGE                                                                     \
    "(x.id IS NULL OR x.id = (SELECT MIN(x1.id) FROM attachment x1 "                             \
    "WHERE x1.message_id = m.id AND x1.ticket_id = m.ticket_id))"
#define MESSAGE_COLS                                                                             \
    "m.id, m.direction, m.kind, m.author_kind, m.author_agent_id, m.author_customer_id, "        \
    "m.channel, m.channel_account, m.external_id, " FIRST_ROW_OF_MESSAGE ", "                    \
    "IF(" FIRST_ROW_OF_MESSAGE ", m.body_text, NULL), "                                          \
    "IF(" FIRST_ROW_OF_MESSAGE ", m.body_html, NULL), " TIME_SQL("m.created_at") ", "            \
    "a.display_name, m.quote_offset, "
#define MESSAGE_NCOLS 15
#define ATTACHMENT_COLS "x.id, x.filename, x.content_type, x.size, x.sha256, x.content_id"
/* The index keeps the plan a lookup per message even while the table is small. */
#define MESSAGE_JOINS                                                                            \
    "LEFT JOIN agent a ON a.id = m.author_agent_id "                                             \
    "LEFT JOIN attachment x FORCE INDEX (ix_attachment_message) "                                \
    "ON x.message_id = m.id AND x.ticket_id = m.ticket_id "

struct att {
    uint64_t id;
    json_t *obj;
};

struct msg {
    uint64_t id, author_id;
    const char *direction, *kind, *author_kind, *author_name, *channel, *channel_account;
    const char *external_id, *text, *html, *created_at;
    size_t text_len, quote_at; /* quote_at: 0 = no quoted history */
    struct att *atts;
    size_t n_atts, cap_atts;
};

struct msgs {
    struct msg *v;
    size_t n, cap;
};

static void
msgs_free(struct msgs *ms)
{
    for (size_t i = 0; i < ms->n; i++) {
        for (size_t k = 0; k < ms->v[i].n_atts; k++)
            json_decref(ms->v[i].atts[k].obj);
        free(ms->v[i].atts);
    }
    free(ms->v);
    memset(ms, 0, sizeof(*ms));
}

/* Take the current row (message columns from col on). */
static void
msgs_row(struct msgs *ms, kf_stmt *st, kf_pool *pool, unsigned col)
{
    struct msg *m = NULL;
    uint64_t mid;

    if (kf_stmt_col_null(st, col))
        return; /* the ticket has no (visible) messages */
    mid = kf_stmt_col_u64(st, col);
    /* A message's rows come together in practice; look back anyway. */
    for (size_t i = ms->n; i-- > 0;)
        if (ms->v[i].id == mid) {
            m = &ms->v[i];
            break;
        }
    if (m == NULL) {
        if (ms->n == ms->cap) {
            ms->cap = ms->cap ? ms->cap * 2 : 8;
            ms->v = kf_xrealloc(ms->v, ms->cap * sizeof(*ms->v));
        }
        m = &ms->v[ms->n++];
        memset(m, 0, sizeof(*m));
        m->id = mid;
        m->direction = kf_stmt_col_str(st, col + 1, pool, NULL);
        m->kind = kf_stmt_col_str(st, col + 2, pool, NULL);
        m->author_kind = kf_stmt_col_str(st, col + 3, pool, NULL);
        if (m->author_kind != NULL && strcmp(m->author_kind, "agent") == 0) {
            m->author_id = kf_stmt_col_u64(st, col + 4);
            m->author_name = kf_stmt_col_str(st, col + 13, pool, NULL);
        } else {
            m->author_id = kf_stmt_col_u64(st, col + 5);
        }
        m->channel = kf_stmt_col_str(st, col + 6, pool, NULL);
        m->channel_account = kf_stmt_col_str(st, col + 7, pool, NULL);
        m->external_id = kf_stmt_col_str(st, col + 8, pool, NULL);
        m->created_at = kf_stmt_col_str(st, col + 12, pool, NULL);
        m->quote_at = kf_stmt_col_null(st, col + 14) ? 0 : (size_t) kf_stmt_col_u64(st, col + 14);
    }
    if (kf_stmt_col_i64(st, col + 9) != 0) { /* the row with the bodies */
        m->text = kf_stmt_col_str(st, col + 10, pool, &m->text_len);
        m->html = kf_stmt_col_str(st, col + 11, pool, NULL);
    }
    col += MESSAGE_NCOLS;
    if (kf_stmt_col_null(st, col))
        return;
    json_t *a = json_object();
    json_object_set_new(a, "id", json_integer((json_int_t) kf_stmt_col_u64(st, col)));
    json_object_set_new(a, "filename", str_or_null(kf_stmt_col_str(st, col + 1, pool, NULL)));
    json_object_set_new(a, "content_type", str_or_null(kf_stmt_col_str(st, col + 2, pool, NULL)));
    json_object_set_new(a, "size", json_integer((json_int_t) kf_stmt_col_u64(st, col + 3)));
    json_object_set_new(a, "sha256", str_or_null(kf_stmt_col_str(st, col + 4, pool, NULL)));
    json_object_set_new(a, "content_id", str_or_null(kf_stmt_col_str(st, col + 5, pool, NULL)));
    if (m->n_atts == m->cap_atts) {
        m->cap_atts = m->cap_atts ? m->cap_atts * 2 : 4;
        m->atts = kf_xrealloc(m->atts, m->cap_atts * sizeof(*m->atts));
    }
    m->atts[m->n_atts].id = kf_stmt_col_u64(st, col);
    m->atts[m->n_atts].obj = a;
    m->n_atts++;
}

static int
msg_cmp(const void *pa, const void *pb)
{
    const struct msg *a = pa, *b = pb;
    /* created_at is fixed-width ISO-8601 (TIME_SQL): text order is time order. */
    int c = strcmp(a->created_at ? a->created_at : "", b->created_at ? b->created_at : "");
    if (c != 0)
        return c;
    return a->id < b->id ? -1 : a->id > b->id;
}

static int
att_cmp(const void *pa, const void *pb)
{
    const struct att *a = pa, *b = pb;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* The API's messages array, oldest first (new reference); empties ms. */
static json_t *
msgs_json(struct msgs *ms)
{
    json_t *list = json_array();

    if (ms->n > 1)
        qsort(ms->v, ms->n, sizeof(*ms->v), msg_cmp);
    for (size_t i = 0; i < ms->n; i++) {
        struct msg *m = &ms->v[i];
        json_t *o = json_object(), *author = json_object(), *atts = json_array();

        json_object_set_new(author, "kind", str_or_null(m->author_kind));
        json_object_set_new(author, "id", id_or_null(m->author_id));
        if (m->author_kind != NULL && strcmp(m->author_kind, "agent") == 0)
            json_object_set_new(author, "name", str_or_null(m->author_name));
        json_object_set_new(o, "id", json_integer((json_int_t) m->id));
        json_object_set_new(o, "direction", str_or_null(m->direction));
        json_object_set_new(o, "kind", str_or_null(m->kind));
        json_object_set_new(o, "author", author);
        json_object_set_new(o, "channel", str_or_null(m->channel));
        json_object_set_new(o, "channel_account", str_or_null(m->channel_account));
        json_object_set_new(o, "external_id", str_or_null(m->external_id));
        json_t *tv = m->text ? json_stringn(m->text, m->text_len) : NULL;
        json_object_set_new(o, "text", tv ? tv : json_string(""));
        /* the text before the quoted history it ends with (mail replies), to show
         * folded apart from it; null when it quotes nothing */
        json_t *nv = m->text && m->quote_at > 0 && m->quote_at < m->text_len
                         ? json_stringn(m->text, m->quote_at) : NULL;
        json_object_set_new(o, "text_new", nv ? nv : json_null());
        json_object_set_new(o, "html", str_or_null(m->html));
        json_object_set_new(o, "created_at", str_or_null(m->created_at));
        if (m->n_atts > 1)
            qsort(m->atts, m->n_atts, sizeof(*m->atts), att_cmp);
        for (size_t k = 0; k < m->n_atts; k++) {
            json_array_append_new(atts, m->atts[k].obj);
            m->atts[k].obj = NULL;
        }
        m->n_atts = 0;
        json_object_set_new(o, "attachments", atts);
        json_array_append_new(list, o);
    }
    msgs_free(ms);
    return list;
}

int
kf_ticket_messages_json(kf_db *db, kf_pool *pool, uint64_t ticket_id, int include_internal,
                        json_t **messages_r, const char **error_r)
{
    struct msgs ms = {0};
    kf_stmt *st;
    int rc;

    *messages_r = NULL;
    if ((rc = kf_db_stmt(db, "ticket.messages",
                         "SELECT " MESSAGE_COLS ATTACHMENT_COLS " FROM message m " MESSAGE_JOINS
                         "WHERE m.ticket_id = ? AND (m.kind = 'public' OR ? = 1)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, ticket_id);
    kf_stmt_bind_i64(st, 1, include_internal ? 1 : 0);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    while ((rc = kf_stmt_fetch(st, error_r)) == 1)
        msgs_row(&ms, st, pool, 0);
    if (rc < 0) {
        msgs_free(&ms);
        return rc;
    }
    *messages_r = msgs_json(&ms);
    return KF_OK;
}

int
kf_ticket_read(kf_db *db, kf_pool *pool, const kf_ticket_read_opts *o, kf_ticket_view *v,
               const char **error_r)
{
    struct msgs ms = {0};
    kf_stmt *st;
    int rc;

    memset(v, 0, sizeof(*v));
    /* Placeholders in text order: the member's agent, the token, notes, the ticket. */
    if ((rc = kf_db_stmt(db, "ticket.read",
                         "SELECT " TICKET_COLS ", c.name, c.primary_email, "
                         "aq.agent_id IS NOT NULL, " KF_AUTH_TOKEN_JOINED_VALID ", "
                         MESSAGE_COLS ATTACHMENT_COLS " FROM ticket t "
                         "JOIN customer c ON c.id = t.customer_id "
                         "LEFT JOIN agent_queue aq ON aq.agent_id = ? AND aq.queue_id = t.queue_id "
                         KF_AUTH_TOKEN_JOIN_SQL
                         "LEFT JOIN message m ON m.ticket_id = t.id "
                         "AND (m.kind = 'public' OR ? = 1) " MESSAGE_JOINS "WHERE t.id = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, o->member_agent_id);
    kf_stmt_bind_u64(st, 1, o->token_id);
    kf_stmt_bind_i64(st, 2, o->include_internal ? 1 : 0);
    kf_stmt_bind_u64(st, 3, o->id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    for (unsigned n = 0; (rc = kf_stmt_fetch(st, error_r)) == 1; n++) {
        if (n == 0) {
            row_read(st, pool, &v->ticket, 1);
            v->member = kf_stmt_col_i64(st, TICKET_NCOLS + 2) != 0;
            v->token_valid = kf_stmt_col_i64(st, TICKET_NCOLS + 3) != 0;
        }
        msgs_row(&ms, st, pool, TICKET_NCOLS + 4);
    }
    if (rc < 0 || v->ticket.id == 0) {
        msgs_free(&ms);
        memset(v, 0, sizeof(*v));
        if (rc < 0)
            return rc;
        *error_r = "no such ticket";
        return KF_ENOTFOUND;
    }
    v->messages = msgs_json(&ms);
    return KF_OK;
}

/* ---- merge ---- */

/*
 * What a merge moves from src to dst, each statement bound (dst, src): the
 * messages (their count is *moved_r), the attachments, the mail thread (the
 * Message-IDs replies thread by, and the known CCs, so a reply to the old
 * thread lands in dst instead of the closed src), then src closes.
 */
static const struct {
    const char *name, *sql;
} merge_steps[] = {
    {"ticket.merge_messages", "UPDATE message SET ticket_id = ? WHERE ticket_id = ?"},
    {"ticket.merge_attachments", "UPDATE attachment SET ticket_id = ? WHERE ticket_id = ?"},
    {"ticket.merge_msgids", "UPDATE email_message_id SET ticket_id = ? WHERE ticket_id = ?"},
    {"ticket.merge_ccs", "UPDATE IGNORE ticket_cc SET ticket_id = ? WHERE ticket_id = ?"},
    {"ticket.merge_close",
     "UPDATE ticket SET status = 'closed', merged_into_id = ?, "
     "closed_at = COALESCE(closed_at, NOW(6)), version = version + 1, "
     "updated_at = NOW(6) WHERE id = ?"},
};

int
kf_ticket_merge(kf_db *db, uint64_t src, uint64_t dst, uint64_t *moved_r, const char **error_r)
{
    kf_stmt *st;
    int rc;

    for (size_t i = 0; i < KF_ARRAY_LEN(merge_steps); i++) {
        if ((rc = kf_db_stmt(db, merge_steps[i].name, merge_steps[i].sql, &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, dst);
        kf_stmt_bind_u64(st, 1, src);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        if (i == 0)
            *moved_r = kf_stmt_affected(st);
    }
    return kf_ticket_touch(db, dst, error_r);
}

/* ---- pure helpers ---- */

int
kf_ticket_utf8_ok(const char *s, size_t len)
{
    return kf_utf8_valid(s, len);
}

size_t
kf_ticket_utf8_prefix(const char *s, size_t len, size_t max)
{
    size_t n;
    if (len <= max)
        return len;
    n = max;
    while (n > 0 && (((unsigned char) s[n]) & 0xC0) == 0x80)
        n--;
    return n;
}

/* Days since 1970-01-01 of a civil date (H. Hinnant's algorithm). */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned) (y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t) doe - 719468;
}

static void
civil_from_days(int64_t z, int *y_r, unsigned *m_r, unsigned *d_r)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned) (z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t y = (int64_t) yoe + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    const unsigned d = doy - (153 * mp + 2) / 5 + 1;
    const unsigned m = mp < 10 ? mp + 3 : mp - 9;
    *y_r = (int) (y + (m <= 2));
    *m_r = m;
    *d_r = d;
}

static int
digits(const char *s, int n, unsigned *v)
{
    unsigned x = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        x = x * 10 + (unsigned) (s[i] - '0');
    }
    *v = x;
    return 1;
}

int
kf_ticket_time_parse(const char *s, int64_t *usec_r)
{
    static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned y, mo, d, h = 0, mi = 0, se = 0, frac = 0;
    size_t len = strlen(s), i;

    if (len < 10 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d))
        return KF_EINVAL;
    i = 10;
    if (i < len) {
        if ((s[i] != 'T' && s[i] != 't' && s[i] != ' ') || len < i + 9 ||
            !digits(s + i + 1, 2, &h) || s[i + 3] != ':' || !digits(s + i + 4, 2, &mi) ||
            s[i + 6] != ':' || !digits(s + i + 7, 2, &se))
            return KF_EINVAL;
        i += 9;
        if (i < len && s[i] == '.') {
            int nd = 0;
            i++;
            while (i < len && s[i] >= '0' && s[i] <= '9') {
                if (++nd > 6)
                    return KF_EINVAL;
                frac = frac * 10 + (unsigned) (s[i] - '0');
                i++;
            }
            if (nd == 0)
                return KF_EINVAL;
            for (; nd < 6; nd++)
                frac *= 10;
        }
        if (i < len && (s[i] == 'Z' || s[i] == 'z'))
            i++;
        else if (i + 6 == len && strcmp(s + i, "+00:00") == 0)
            i += 6;
        if (i != len)
            return KF_EINVAL;
    }
    if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 59)
        return KF_EINVAL;
    unsigned dim = mdays[mo - 1] + (mo == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
    if (d > dim)
        return KF_EINVAL;
    int64_t days = days_from_civil((int64_t) y, mo, d);
    *usec_r = ((days * 86400 + (int64_t) h * 3600 + (int64_t) mi * 60 + se) * 1000000) + frac;
    return KF_OK;
}

void
kf_ticket_time_sql(int64_t usec, char buf[32])
{
    int y;
    unsigned m, d;
    uint64_t u = usec < 0 ? 0 : (uint64_t) usec, secs = u / 1000000, rem = secs % 86400;
    civil_from_days((int64_t) (secs / 86400), &y, &m, &d);
    /* The modulos only tell the compiler the widths; the values are in range already. */
    snprintf(buf, 32, "%04u-%02u-%02u %02u:%02u:%02u.%06u", (unsigned) y % 10000u, m % 100u,
             d % 100u, (unsigned) (rem / 3600), (unsigned) (rem / 60 % 60), (unsigned) (rem % 60),
             (unsigned) (u % 1000000));
}

#define USEC_MAX INT64_C(253402300799999999) /* 9999-12-31T23:59:59.999999Z */

char *
kf_ticket_cursor_encode(kf_pool *pool, int64_t usec, uint64_t id)
{
    char raw[64];
    int n = snprintf(raw, sizeof(raw), "t1:%" PRId64 ":%" PRIu64, usec, id);
    size_t cap = sodium_base64_ENCODED_LEN((size_t) n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = kf_pool_alloc(pool, cap);
    sodium_bin2base64(out, cap, (const unsigned char *) raw, (size_t) n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

/* Strict unsigned decimal: 1..19 digits, no sign, no leading zero unless "0". */
static int
parse_u64(const char *s, size_t len, uint64_t max, uint64_t *v_r)
{
    uint64_t v = 0;
    if (len == 0 || len > 19 || (len > 1 && s[0] == '0'))
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (uint64_t) (s[i] - '0');
    }
    if (v > max)
        return 0;
    *v_r = v;
    return 1;
}

int
kf_ticket_cursor_decode(const char *s, int64_t *usec_r, uint64_t *id_r)
{
    unsigned char raw[64];
    size_t rawlen = 0, len = strlen(s);
    const char *end = NULL;
    uint64_t usec, id;

    if (len == 0 || len > 80)
        return KF_EINVAL;
    if (sodium_base642bin(raw, sizeof(raw) - 1, s, len, NULL, &rawlen, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        end != s + len)
        return KF_EINVAL;
    raw[rawlen] = '\0';
    const char *p = (const char *) raw;
    if (rawlen < 7 || memcmp(p, "t1:", 3) != 0 || memchr(p, '\0', rawlen) != NULL)
        return KF_EINVAL;
    p += 3;
    const char *colon = strchr(p, ':');
    if (colon == NULL || !parse_u64(p, (size_t) (colon - p), (uint64_t) USEC_MAX, &usec) ||
        !parse_u64(colon + 1, strlen(colon + 1), (uint64_t) INT64_MAX, &id) || id == 0)
        return KF_EINVAL;
    *usec_r = (int64_t) usec;
    *id_r = id;
    return KF_OK;
}

/* ---- list query ---- */

static void
qerr(json_t **errors, const char *field, const char *detail)
{
    kf_problem_add_error(errors, field, detail);
}

static int
query_id(const char *v, uint64_t *out)
{
    return parse_u64(v, strlen(v), (uint64_t) INT64_MAX, out) && *out > 0;
}

int
kf_ticket_query_parse(kf_pool *pool, const char *query, kf_ticket_query *q, json_t **errors)
{
    static const char *const keys[] = {"queue_id", "status",        "assignee_id",
                                       "priority", "customer_id",   "tag",
                                       "limit",    "updated_since", "after",
                                       NULL};
    unsigned seen = 0;
    int bad = 0;

    memset(q, 0, sizeof(*q));
    q->limit = KF_LIST_LIMIT_DEFAULT;
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
        int k = key ? kf_ticket_enum_index(keys, key) : -1;
        if (k < 0) {
            qerr(errors, key && kf_ticket_utf8_ok(key, strlen(key)) ? key : "query",
                 "unknown query parameter");
            bad = 1;
            continue;
        }
        if (val == NULL || !kf_ticket_utf8_ok(val, strlen(val))) {
            qerr(errors, keys[k], "bad percent-encoding or not UTF-8");
            bad = 1;
            continue;
        }
        if ((seen & (1u << k)) && strcmp(keys[k], "status") != 0) {
            qerr(errors, keys[k], "given more than once");
            bad = 1;
            continue;
        }
        seen |= 1u << k;
        if (strcmp(keys[k], "queue_id") == 0) {
            if (!query_id(val, &q->queue_id)) {
                qerr(errors, "queue_id", "must be a positive integer");
                bad = 1;
            }
        } else if (strcmp(keys[k], "customer_id") == 0) {
            if (!query_id(val, &q->customer_id)) {
                qerr(errors, "customer_id", "must be a positive integer");
                bad = 1;
            }
        } else if (strcmp(keys[k], "assignee_id") == 0) {
            if (strcmp(val, "me") == 0) {
                q->assignee = KF_ASSIGNEE_ME;
            } else if (strcmp(val, "none") == 0) {
                q->assignee = KF_ASSIGNEE_NONE;
            } else if (query_id(val, &q->assignee_id)) {
                q->assignee = KF_ASSIGNEE_ID;
            } else {
                qerr(errors, "assignee_id", "must be a positive integer, \"me\" or \"none\"");
                bad = 1;
            }
        } else if (strcmp(keys[k], "status") == 0) {
            /* status=open,pending or status=open&status=pending */
            for (const char *s = val;;) {
                const char *comma = strchr(s, ',');
                size_t sl = comma ? (size_t) (comma - s) : strlen(s);
                char one[16];
                int idx = -1;
                if (sl > 0 && sl < sizeof(one)) {
                    memcpy(one, s, sl);
                    one[sl] = '\0';
                    idx = kf_ticket_enum_index(kf_ticket_statuses, one);
                }
                if (idx < 0) {
                    qerr(errors, "status",
                         "must be one of: new open pending solved closed (comma-separated)");
                    bad = 1;
                    break;
                }
                q->statuses |= 1u << idx;
                if (comma == NULL)
                    break;
                s = comma + 1;
            }
        } else if (strcmp(keys[k], "priority") == 0) {
            int idx = kf_ticket_enum_index(kf_ticket_priorities, val);
            if (idx < 0) {
                qerr(errors, "priority", "must be one of: low normal high urgent");
                bad = 1;
            } else {
                q->priority = kf_ticket_priorities[idx];
            }
        } else if (strcmp(keys[k], "tag") == 0) {
            size_t tl = strlen(val);
            if (tl == 0 || tl > KF_TICKET_TAG_MAX) {
                qerr(errors, "tag", "must be 1..64 bytes");
                bad = 1;
            } else {
                for (char *t = val; *t; t++)
                    *t = (char) tolower((unsigned char) *t);
                q->tag = val;
            }
        } else if (strcmp(keys[k], "limit") == 0) {
            uint64_t lim;
            if (!parse_u64(val, strlen(val), KF_LIST_LIMIT_MAX, &lim) || lim == 0) {
                qerr(errors, "limit", "must be an integer 1..200");
                bad = 1;
            } else {
                q->limit = (unsigned) lim;
            }
        } else if (strcmp(keys[k], "updated_since") == 0) {
            if (kf_ticket_time_parse(val, &q->since_usec) != KF_OK) {
                qerr(errors, "updated_since",
                     "must be an ISO-8601 UTC time such as 2026-11-30T04:15:00Z");
                bad = 1;
            } else {
                q->has_since = 1;
            }
        } else if (strcmp(keys[k], "after") == 0) {
            if (kf_ticket_cursor_decode(val, &q->after_usec, &q->after_id) != KF_OK) {
                qerr(errors, "after", "is not a cursor this server handed out");
                bad = 1;
            } else {
                q->has_after = 1;
            }
        }
    }
    return bad ? KF_EINVAL : KF_OK;
}

static unsigned
popcount(unsigned x)
{
    unsigned n = 0;
    for (; x; x &= x - 1)
        n++;
    return n;
}

void
kf_ticket_list_sql(const kf_ticket_query *q, int explain, kf_str *sql, char *name, size_t namesz)
{
    unsigned ns = popcount(q->statuses);
    char shape[32];
    size_t o = 0;

    kf_str_puts(sql, explain ? "EXPLAIN SELECT " : "SELECT ");
    kf_str_puts(sql, TICKET_COLS ", c.name, c.primary_email FROM ticket t ");
    if (q->tag) {
        kf_str_puts(sql, "JOIN ticket_tag tg ON tg.ticket_id = t.id AND tg.tag = ? ");
        shape[o++] = 't';
    }
    if (q->scope_agent_id) {
        kf_str_puts(sql, "JOIN agent_queue aq ON aq.queue_id = t.queue_id AND aq.agent_id = ? ");
        shape[o++] = 'a';
    }
    /* LEFT JOIN (customer_id is NOT NULL, so the rows are the same) keeps the
     * optimizer from driving the query from customer: ticket comes first. */
    kf_str_puts(sql, "LEFT JOIN customer c ON c.id = t.customer_id WHERE 1 = 1");
    if (q->queue_id) {
        kf_str_puts(sql, " AND t.queue_id = ?");
        shape[o++] = 'q';
    }
    if (ns > 0) {
        kf_str_puts(sql, " AND t.status IN (?");
        for (unsigned i = 1; i < ns; i++)
            kf_str_puts(sql, ", ?");
        kf_str_puts(sql, ")");
        shape[o++] = 's';
        shape[o++] = (char) ('0' + ns);
    }
    if (q->assignee == KF_ASSIGNEE_ID) {
        kf_str_puts(sql, " AND t.assignee_id = ?");
        shape[o++] = 'u';
    } else if (q->assignee == KF_ASSIGNEE_NONE) {
        kf_str_puts(sql, " AND t.assignee_id IS NULL");
        shape[o++] = 'n';
    }
    if (q->priority) {
        kf_str_puts(sql, " AND t.priority = ?");
        shape[o++] = 'p';
    }
    if (q->customer_id) {
        kf_str_puts(sql, " AND t.customer_id = ?");
        shape[o++] = 'c';
    }
    if (q->has_since) {
        kf_str_puts(sql, " AND t.updated_at >= ?");
        shape[o++] = 'd';
    }
    if (q->has_after) {
        /* (updated_at, id) < (a, b), spelled so the first term is a range. */
        kf_str_puts(sql, " AND t.updated_at <= ? AND (t.updated_at < ? OR t.id < ?)");
        shape[o++] = 'k';
    }
    kf_str_puts(sql, " ORDER BY t.updated_at DESC, t.id DESC LIMIT ?");
    if (explain)
        shape[o++] = 'x';
    shape[o] = '\0';
    snprintf(name, namesz, "ticket.list:%s", shape);
}

int
kf_ticket_list_prepare(kf_db *db, const kf_ticket_query *q, int explain, kf_stmt **st_r,
                       const char **error_r)
{
    kf_str sql = KF_STR_INIT;
    char name[64], t1[32], t2[32];
    kf_stmt *st;
    unsigned i = 0;
    int rc;

    kf_ticket_list_sql(q, explain, &sql, name, sizeof(name));
    rc = kf_db_stmt(db, name, sql.ptr, &st, error_r);
    kf_str_free(&sql);
    if (rc != KF_OK)
        return rc;
    /* Bind in the order kf_ticket_list_sql() wrote the placeholders. */
    if (q->tag)
        kf_stmt_bind_cstr(st, i++, q->tag);
    if (q->scope_agent_id)
        kf_stmt_bind_u64(st, i++, q->scope_agent_id);
    if (q->queue_id)
        kf_stmt_bind_u64(st, i++, q->queue_id);
    for (int s = 0; kf_ticket_statuses[s] != NULL; s++)
        if (q->statuses & (1u << s))
            kf_stmt_bind_cstr(st, i++, kf_ticket_statuses[s]);
    if (q->assignee == KF_ASSIGNEE_ID)
        kf_stmt_bind_u64(st, i++, q->assignee_id);
    if (q->priority)
        kf_stmt_bind_cstr(st, i++, q->priority);
    if (q->customer_id)
        kf_stmt_bind_u64(st, i++, q->customer_id);
    if (q->has_since) {
        kf_ticket_time_sql(q->since_usec, t1);
        kf_stmt_bind_cstr(st, i++, t1);
    }
    if (q->has_after) {
        kf_ticket_time_sql(q->after_usec, t2);
        kf_stmt_bind_cstr(st, i++, t2);
        kf_stmt_bind_cstr(st, i++, t2);
        kf_stmt_bind_u64(st, i++, q->after_id);
    }
    kf_stmt_bind_u64(st, i++, (uint64_t) q->limit + 1); /* one more: is there a next page? */
    *st_r = st;
    return KF_OK;
}

int
kf_ticket_list(kf_db *db, kf_pool *pool, const kf_ticket_query *q, json_t **items_r,
               const char **next_r, const char **error_r)
{
    kf_stmt *st;
    kf_ticket tk;
    int rc;
    unsigned n = 0;
    json_t *items = json_array();

    *items_r = NULL;
    *next_r = NULL;
    if ((rc = kf_ticket_list_prepare(db, q, 0, &st, error_r)) != KF_OK ||
        (rc = kf_stmt_exec(st, error_r)) != KF_OK) {
        json_decref(items);
        return rc;
    }
    while ((rc = kf_stmt_fetch(st, error_r)) == 1) {
        int64_t usec;
        row_read(st, pool, &tk, 1);
        if (++n > q->limit) {
            kf_stmt_done(st);
            rc = 0;
            break;
        }
        json_array_append_new(items, kf_ticket_json(&tk));
        if (n == q->limit && tk.updated_at && kf_ticket_time_parse(tk.updated_at, &usec) == KF_OK)
            *next_r = kf_ticket_cursor_encode(pool, usec, tk.id);
    }
    if (rc < 0) {
        json_decref(items);
        *next_r = NULL;
        return rc;
    }
    if (n <= q->limit)
        *next_r = NULL; /* the page was not full: nothing after it */
    *items_r = items;
    return KF_OK;
}
