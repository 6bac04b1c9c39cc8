/*
 * ingest.c - the one way in (include/kefu/ingest.h).
 *
 * Idempotency: the receipt (channel, account, external id) is inserted
 * first, before anything else is written.  Its unique key serialises
 * concurrent identical submissions: the others wait on the first one's
 * row lock and, once it commits, fail with a duplicate key; they then read
 * the winner's receipt (READ COMMITTED sees it) and return its result with
 * duplicate = 1, having written nothing.  A deadlock among the waiters
 * (possible when the winner rolls back) is KF_ERETRY: kf_tx_run() runs the
 * body again, which then finds the receipt.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/config.h"
#include "kefu/customer.h"
#include "kefu/db.h"
#include "kefu/event.h"
#include "kefu/ingest.h"
#include "kefu/outbox.h"
#include "kefu/pool.h"
#include "kefu/ticket.h"

#define TEXT_MAX (16u * 1024 * 1024 - 1) /* MEDIUMTEXT */

/* "field: detail" for *error_r; valid until this thread's next ingest. */
static _Thread_local char errbuf[320];

static int
invalid(const char **error_r, const char *field, const char *detail)
{
    snprintf(errbuf, sizeof(errbuf), "%s: %s", field, detail);
    *error_r = errbuf;
    return KF_EINVAL;
}

static int
text_ok(const char *s, size_t len)
{
    return s == NULL || kf_ticket_utf8_ok(s, len);
}

/* 1. Validate: everything that can be checked without the database. */
static int
validate(const kf_config *cfg, const kf_inbound *in, const char **error_r)
{
    const char *detail = NULL;

    if (kf_ticket_enum_index(kf_ticket_channels, in->channel) < 0)
        return invalid(error_r, "channel", "must be one of: email web wechat api phone");
    if (in->channel_account != NULL &&
        (strlen(in->channel_account) > 100 ||
         !kf_ticket_utf8_ok(in->channel_account, strlen(in->channel_account))))
        return invalid(error_r, "channel_account", "must be at most 100 bytes of UTF-8");
    if (in->external_id != NULL &&
        (in->external_id[0] == '\0' || strlen(in->external_id) > 255 ||
         !kf_ticket_utf8_ok(in->external_id, strlen(in->external_id))))
        return invalid(error_r, "external_id", "must be 1..255 bytes of UTF-8");
    if (in->customer_id == 0 || in->identity_kind != NULL) {
        if (in->identity_kind == NULL || in->identity_value == NULL)
            return invalid(error_r, "identity", "a sender identity or a customer_id is required");
        if (strcmp(in->identity_kind, "wechat_unionid") == 0)
            return invalid(error_r, "identity_kind", "a UnionID goes in unionid");
        if (!kf_customer_identity_ok(in->identity_kind, in->identity_value, &detail))
            return invalid(error_r,
                           kf_ticket_enum_index(kf_customer_identity_kinds, in->identity_kind) < 0
                               ? "identity_kind"
                               : "identity_value",
                           detail);
    }
    if (in->unionid != NULL && !kf_customer_identity_ok("wechat_unionid", in->unionid, &detail))
        return invalid(error_r, "unionid", detail);
    if (in->customer_name != NULL && !text_ok(in->customer_name, strlen(in->customer_name)))
        return invalid(error_r, "customer_name", "must be UTF-8");
    if (in->customer_locale != NULL) {
        size_t n = strlen(in->customer_locale);
        if (n == 0 || n > 16 || strspn(in->customer_locale,
                                       "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                       "0123456789-_") != n)
            return invalid(error_r, "customer_locale", "must be a language tag such as zh-CN");
    }
    if (in->subject != NULL && !text_ok(in->subject, strlen(in->subject)))
        return invalid(error_r, "subject", "must be UTF-8");
    if (in->text_len > TEXT_MAX || (in->text == NULL && in->text_len > 0))
        return invalid(error_r, "text", "must be at most 16 MiB");
    if (!text_ok(in->text, in->text_len))
        return invalid(error_r, "text", "must be UTF-8 without NUL characters");
    if (in->html != NULL && (strlen(in->html) > TEXT_MAX || !text_ok(in->html, strlen(in->html))))
        return invalid(error_r, "html", "must be at most 16 MiB of UTF-8");
    if (in->priority != NULL && kf_ticket_enum_index(kf_ticket_priorities, in->priority) < 0)
        return invalid(error_r, "priority", "must be one of: low normal high urgent");
    if (in->n_attachments > 0 && in->attachments == NULL)
        return invalid(error_r, "attachments", "missing");
    if (in->n_attachments > cfg->attachment_max_count) {
        snprintf(errbuf, sizeof(errbuf), "attachments: at most %u per message",
                 cfg->attachment_max_count);
        *error_r = errbuf;
        return KF_EINVAL;
    }
    for (size_t i = 0; i < in->n_attachments; i++) {
        const kf_inbound_attachment *a = &in->attachments[i];
        if (a->len > cfg->attachment_max_bytes) {
            snprintf(errbuf, sizeof(errbuf), "attachments: attachment %zu is %zu bytes; the limit "
                     "is %u", i, a->len, cfg->attachment_max_bytes);
            *error_r = errbuf;
            return KF_EINVAL;
        }
        if (a->data == NULL && a->len > 0)
            return invalid(error_r, "attachments", "data missing");
        if (a->filename == NULL || a->filename[0] == '\0' || strlen(a->filename) > 255 ||
            !kf_ticket_utf8_ok(a->filename, strlen(a->filename)))
            return invalid(error_r, "attachments", "filename must be 1..255 bytes of UTF-8");
        if (a->content_type != NULL &&
            (strlen(a->content_type) > 127 ||
             !kf_ticket_utf8_ok(a->content_type, strlen(a->content_type))))
            return invalid(error_r, "attachments", "content_type must be at most 127 bytes");
        if (a->content_id != NULL && (strlen(a->content_id) > 255 ||
                                      !kf_ticket_utf8_ok(a->content_id, strlen(a->content_id))))
            return invalid(error_r, "attachments", "content_id must be at most 255 bytes");
    }
    return KF_OK;
}

/* ---- receipts ---- */

static int
receipt_find(kf_db *db, const kf_inbound *in, const char *account, kf_ingest_result *res,
             const char **error_r)
{
    kf_stmt *st;
    int rc;

    if ((rc = kf_db_stmt(db, "ingest.receipt_find",
                         "SELECT ticket_id, message_id, customer_id, created_ticket "
                         "FROM inbound_receipt "
                         "WHERE channel = ? AND channel_account = ? AND external_id = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, in->channel);
    kf_stmt_bind_cstr(st, 1, account);
    kf_stmt_bind_cstr(st, 2, in->external_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_stmt_fetch(st, error_r)) < 0)
        return rc;
    if (rc == 0)
        return KF_ENOTFOUND;
    memset(res, 0, sizeof(*res));
    res->ticket_id = kf_stmt_col_u64(st, 0);
    res->message_id = kf_stmt_col_u64(st, 1);
    res->customer_id = kf_stmt_col_u64(st, 2);
    res->created_ticket = (int) kf_stmt_col_i64(st, 3);
    res->duplicate = 1;
    kf_stmt_done(st);
    if (res->ticket_id == 0) {
        /* Only committed receipts are visible and those are always filled in. */
        *error_r = "inbound receipt without a ticket";
        return KF_ERETRY;
    }
    return KF_OK;
}

static int
receipt_claim(kf_db *db, const kf_inbound *in, const char *account, uint64_t *id_r,
              const char **error_r)
{
    kf_stmt *st;
    int rc;

    if ((rc = kf_db_stmt(db, "ingest.receipt_claim",
                         "INSERT INTO inbound_receipt (channel, channel_account, external_id, "
                         "ticket_id, message_id, customer_id) VALUES (?, ?, ?, 0, 0, 0)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, in->channel);
    kf_stmt_bind_cstr(st, 1, account);
    kf_stmt_bind_cstr(st, 2, in->external_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    *id_r = kf_stmt_insert_id(st);
    return KF_OK;
}

static int
receipt_fill(kf_db *db, uint64_t id, const kf_ingest_result *res, const char **error_r)
{
    kf_stmt *st;
    int rc;

    if ((rc = kf_db_stmt(db, "ingest.receipt_fill",
                         "UPDATE inbound_receipt SET ticket_id = ?, message_id = ?, "
                         "customer_id = ?, created_ticket = ? WHERE id = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, res->ticket_id);
    kf_stmt_bind_u64(st, 1, res->message_id);
    kf_stmt_bind_u64(st, 2, res->customer_id);
    kf_stmt_bind_i64(st, 3, res->created_ticket);
    kf_stmt_bind_u64(st, 4, id);
    return kf_stmt_exec(st, error_r);
}

/* A one-line subject of at most 255 bytes: controls become spaces, ends trimmed. */
static const char *
subject_clean(kf_pool *pool, const char *s, size_t max)
{
    size_t len = strlen(s);
    char *out = kf_pool_strndup(pool, s, len);
    for (char *p = out; *p; p++)
        if ((unsigned char) *p < 0x20 || *p == 0x7f)
            *p = ' ';
    char *b = out;
    while (*b == ' ')
        b++;
    len = strlen(b);
    while (len > 0 && b[len - 1] == ' ')
        len--;
    len = kf_ticket_utf8_prefix(b, len, max);
    b[len] = '\0';
    return b;
}

static const char *
new_subject(kf_pool *pool, const kf_inbound *in, const kf_ticket *old)
{
    const char *s;
    if (in->subject != NULL && *(s = subject_clean(pool, in->subject, KF_TICKET_SUBJECT_MAX)))
        return s;
    if (old != NULL && old->subject != NULL && *old->subject)
        return old->subject;
    if (in->text != NULL && in->text_len > 0) {
        /* The first non-empty line of the text, shortened. */
        const char *t = in->text, *end = in->text + in->text_len;
        while (t < end) {
            const char *nl = memchr(t, '\n', (size_t) (end - t));
            size_t n = nl ? (size_t) (nl - t) : (size_t) (end - t);
            s = subject_clean(pool, kf_pool_strndup(pool, t, n), 80);
            if (*s)
                return s;
            t += n + 1;
        }
    }
    return "(no subject)";
}

/* ---- the transaction body ---- */

struct ingest_ctx {
    kf_db *db;
    kf_pool *pool;
    const kf_inbound *in;
    const char *account;
    kf_ingest_result *res;
    int actor_kind;
    uint64_t actor_id;
};

static int
event(struct ingest_ctx *x, uint64_t ticket_id, const char *kind, json_t *data,
      const char **error_r)
{
    int rc = kf_event_add(x->db, ticket_id, kind, x->actor_kind, x->actor_id, data, NULL, error_r);
    json_decref(data);
    return rc;
}

/*
 * Two events of the same ticket and actor in one statement, as kf_event_add()
 * would write them one after the other (their ids keep that order).  Steals
 * both data references.
 */
static int
event_pair(struct ingest_ctx *x, uint64_t ticket_id, const char *kind1, json_t *data1,
           const char *kind2, json_t *data2, const char **error_r)
{
    static const char *const actors[] = {"system", "agent", "customer"};
    const char *actor = actors[x->actor_kind >= 0 && x->actor_kind <= 2 ? x->actor_kind : 0];
    char *json1 = data1 ? json_dumps(data1, JSON_COMPACT) : NULL;
    char *json2 = data2 ? json_dumps(data2, JSON_COMPACT) : NULL;
    kf_stmt *st;
    int rc;

    json_decref(data1);
    json_decref(data2);
    if ((rc = kf_db_stmt(x->db, "ingest.event_pair",
                         "INSERT INTO event (ticket_id, kind, actor_kind, actor_id, data) "
                         "VALUES (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)",
                         &st, error_r)) == KF_OK) {
        const char *kinds[2] = {kind1, kind2}, *datas[2] = {json1, json2};
        for (unsigned i = 0; i < 2; i++) {
            kf_stmt_bind_u64(st, i * 5, ticket_id);
            kf_stmt_bind_cstr(st, i * 5 + 1, kinds[i]);
            kf_stmt_bind_cstr(st, i * 5 + 2, actor);
            if (x->actor_id)
                kf_stmt_bind_u64(st, i * 5 + 3, x->actor_id);
            else
                kf_stmt_bind_null(st, i * 5 + 3);
            kf_stmt_bind_cstr(st, i * 5 + 4, datas[i] ? datas[i] : "{}");
        }
        rc = kf_stmt_exec(st, error_r);
    }
    free(json1);
    free(json2);
    return rc;
}

/* Find the ticket to append to (locked), following merges; *found_r 0 = none. */
static int
find_ticket(struct ingest_ctx *x, kf_ticket *tk, int *found_r, const char **error_r)
{
    const kf_inbound *in = x->in;
    uint64_t id = in->ticket_id;
    int rc;

    *found_r = 0;
    if (id == 0 && in->thread_fn != NULL &&
        (rc = in->thread_fn(x->db, in, x->res->customer_id, &id, error_r)) != KF_OK)
        return rc;
    for (int hop = 0; id != 0 && hop < 16; hop++) {
        rc = kf_ticket_lock(x->db, x->pool, id, tk, error_r);
        if (rc == KF_ENOTFOUND) {
            if (in->ticket_id != 0) {
                *error_r = "ticket_id: no such ticket";
                return KF_ENOTFOUND;
            }
            return KF_OK; /* the hook pointed nowhere: a new ticket */
        }
        if (rc != KF_OK)
            return rc;
        if (tk->merged_into_id == 0) {
            *found_r = 1;
            return KF_OK;
        }
        id = tk->merged_into_id;
    }
    return KF_OK;
}

/* Insert the ticket, routed in the same statement (the given queue, which
 * must exist, or the channel account's default queue). */
static int
create_ticket(struct ingest_ctx *x, const kf_ticket *old, uint64_t *id_r, const char **error_r)
{
    const kf_inbound *in = x->in;
    kf_ticket_new t = {
        .subject = new_subject(x->pool, in, old),
        .priority = in->priority,
        .channel = in->channel,
        .channel_account = x->account,
        .customer_id = x->res->customer_id,
        .queue_id = in->queue_id,
        .follow_up_of_id = old ? old->id : 0,
    };
    return kf_ticket_create(x->db, &t, id_r, error_r);
}

static int
ack(struct ingest_ctx *x, const char *subject, const char **error_r)
{
    const kf_inbound *in = x->in;
    const char *target = in->identity_value;
    char key[48], number[32];
    kf_customer cu;
    int rc;

    if (target == NULL) {
        if ((rc = kf_customer_get(x->db, x->pool, x->res->customer_id, 0, &cu, error_r)) != KF_OK)
            return rc;
        target = cu.primary_email;
    }
    if (target == NULL)
        return KF_OK; /* nowhere to send it */
    snprintf(key, sizeof(key), "ack:%llu", (unsigned long long) x->res->message_id);
    kf_ticket_number(x->res->ticket_id, number, sizeof(number));
    json_t *payload = json_pack("{s:s, s:I, s:s, s:s?, s:I, s:I, s:s?}", "template", "ack",
                                "ticket_id", (json_int_t) x->res->ticket_id, "number", number,
                                "subject", subject, "message_id",
                                (json_int_t) x->res->message_id, "customer_id",
                                (json_int_t) x->res->customer_id, "locale", in->customer_locale);
    kf_outbox_new row = {
        .kind = "ack",
        .channel = in->channel,
        .channel_account = x->account,
        .target = target,
        .payload = payload,
        .dedupe_key = key,
        .ticket_id = x->res->ticket_id,
        .message_id = x->res->message_id,
    };
    rc = kf_outbox_add(x->db, &row, NULL, error_r);
    json_decref(payload);
    return rc;
}

static int
ingest_body(struct ingest_ctx *x, const char **error_r)
{
    const kf_inbound *in = x->in;
    kf_ingest_result *res = x->res;
    uint64_t receipt_id = 0;
    kf_ticket tk, *old = NULL;
    const char *subject = NULL, *was = NULL;
    int rc, found, customer_created = 0;

    /* 2. Dedupe: a known external id returns the first result, writing nothing. */
    if (in->external_id != NULL) {
        if ((rc = receipt_find(x->db, in, x->account, res, error_r)) != KF_ENOTFOUND)
            return rc;
        rc = receipt_claim(x->db, in, x->account, &receipt_id, error_r);
        if (rc == KF_ECONFLICT) {
            /* Lost the race: the winner committed while we waited for its lock. */
            rc = receipt_find(x->db, in, x->account, res, error_r);
            return rc == KF_ENOTFOUND ? KF_ERETRY : rc;
        }
        if (rc != KF_OK)
            return rc;
    }

    /* 3. The customer: given, or identified (created) through the identity. */
    if (in->customer_id != 0) {
        rc = kf_customer_canonical(x->db, in->customer_id, &res->customer_id, error_r);
        if (rc == KF_ENOTFOUND)
            return invalid(error_r, "customer_id", "no such customer");
        if (rc != KF_OK)
            return rc;
    } else {
        kf_customer_who who = {in->identity_kind, in->identity_value, in->unionid,
                               in->customer_name, in->customer_locale};
        if ((rc = kf_customer_resolve(x->db, &who, &res->customer_id, &customer_created,
                                      error_r)) != KF_OK)
            return rc;
    }
    if (in->actor_agent_id != 0) {
        x->actor_kind = KF_ACTOR_AGENT;
        x->actor_id = in->actor_agent_id;
    } else {
        x->actor_kind = KF_ACTOR_CUSTOMER;
        x->actor_id = res->customer_id;
    }

    /* 4. Threading: explicit ticket, the channel's hook, or a new ticket.
     * Auto-submitted mail (out-of-office, bounces) is recorded where it
     * belongs but never reopens a ticket or starts a follow-up. */
    if ((rc = find_ticket(x, &tk, &found, error_r)) != KF_OK)
        return rc;
    if (found && strcmp(tk.status, "closed") == 0 && !in->auto_submitted) {
        old = &tk;
        found = 0;
    }
    if (found) {
        res->ticket_id = tk.id;
        subject = tk.subject;
        if (!in->auto_submitted &&
            (strcmp(tk.status, "solved") == 0 || strcmp(tk.status, "pending") == 0)) {
            was = tk.status;
            rc = kf_ticket_set_status(x->db, tk.id, "open", error_r);
            res->reopened = strcmp(was, "solved") == 0;
        } else {
            rc = kf_ticket_touch(x->db, tk.id, error_r);
        }
        if (rc != KF_OK)
            return rc;
    } else {
        if ((rc = create_ticket(x, old, &res->ticket_id, error_r)) != KF_OK)
            return rc;
        res->created_ticket = 1;
        res->follow_up_of = old ? old->id : 0;
        subject = new_subject(x->pool, in, old);
    }

    /* 5. The message and its attachments. */
    kf_message_new m = {
        .ticket_id = res->ticket_id,
        .direction = "in",
        .kind = "public",
        .author_kind = "customer",
        .author_customer_id = res->customer_id,
        .channel = in->channel,
        .channel_account = x->account,
        .external_id = in->external_id,
        .text = in->text ? in->text : "",
        .text_len = in->text ? in->text_len : 0,
        .quote_at = in->text ? in->quote_at : 0,
        .html = in->html,
    };
    if ((rc = kf_ticket_add_message(x->db, &m, &res->message_id, error_r)) != KF_OK)
        return rc;
    for (size_t i = 0; i < in->n_attachments; i++) {
        const kf_inbound_attachment *a = &in->attachments[i];
        if ((rc = kf_ticket_add_attachment(x->db, res->ticket_id, res->message_id, a->filename,
                                           a->content_type, a->content_id, a->data, a->len, NULL,
                                           error_r)) != KF_OK)
            return rc;
    }

    /* 6. Events, in the order things happened: what happened to the ticket
     * (if anything), then the message; one statement for both. */
    const char *kind1 = NULL;
    json_t *d1 = NULL;
    if (res->created_ticket) {
        char number[32];
        kf_ticket_number(res->ticket_id, number, sizeof(number));
        kind1 = "ticket.created";
        d1 = json_pack("{s:s, s:s, s:s, s:s, s:I, s:b, s:I}", "number", number, "subject",
                       subject, "channel", in->channel, "channel_account", x->account,
                       "customer_id", (json_int_t) res->customer_id, "customer_created",
                       customer_created, "message_id", (json_int_t) res->message_id);
        if (d1 && res->follow_up_of)
            json_object_set_new(d1, "follow_up_of_id",
                                json_integer((json_int_t) res->follow_up_of));
    } else if (res->reopened) {
        kind1 = "ticket.reopened";
        d1 = json_pack("{s:s, s:s, s:I}", "from", "solved", "to", "open", "message_id",
                       (json_int_t) res->message_id);
    } else if (was != NULL) {
        kind1 = "ticket.updated";
        d1 = json_pack("{s:{s:{s:s, s:s}}}", "changes", "status", "from", was, "to", "open");
    }
    json_t *d = json_pack("{s:I, s:s, s:s, s:I, s:b}", "message_id", (json_int_t) res->message_id,
                          "channel", in->channel, "direction", "in", "attachments",
                          (json_int_t) in->n_attachments, "auto_submitted", in->auto_submitted);
    if (d && in->external_id)
        json_object_set_new(d, "external_id", json_string(in->external_id));
    if (kind1 != NULL)
        rc = event_pair(x, res->ticket_id, kind1, d1, "message.received", d, error_r);
    else
        rc = event(x, res->ticket_id, "message.received", d, error_r);
    if (rc != KF_OK)
        return rc;

    /* 7. Outbox: the acknowledgement, never to an automatic message. */
    if (in->send_ack && !in->auto_submitted && (rc = ack(x, subject, error_r)) != KF_OK)
        return rc;

    /* 8. Complete the receipt so a repeat finds this result. */
    if (receipt_id != 0 && (rc = receipt_fill(x->db, receipt_id, res, error_r)) != KF_OK)
        return rc;
    return KF_OK;
}

int
kf_ingest_tx(kf_db *db, const kf_inbound *in, kf_ingest_result *res, const char **error_r)
{
    struct ingest_ctx x = {
        .db = db,
        .in = in,
        .account = in->channel_account ? in->channel_account : "",
        .res = res,
    };
    int rc;

    memset(res, 0, sizeof(*res));
    if ((rc = validate(kf_db_config(db), in, error_r)) != KF_OK)
        return rc;
    x.pool = kf_pool_create(4096);
    rc = ingest_body(&x, error_r);
    kf_pool_destroy(&x.pool);
    if (rc != KF_OK)
        memset(res, 0, sizeof(*res));
    return rc;
}

struct ingest_arg {
    const kf_inbound *in;
    kf_ingest_result *res;
};

static int
ingest_tx(kf_db *db, void *arg, const char **error_r)
{
    struct ingest_arg *a = arg;
    return kf_ingest_tx(db, a->in, a->res, error_r);
}

int
kf_ingest(kf_db *db, const kf_inbound *in, kf_ingest_result *res, const char **error_r)
{
    struct ingest_arg a = {in, res};
    int rc;

    memset(res, 0, sizeof(*res));
    /* Validate once up front: bad input never opens a transaction. */
    if ((rc = validate(kf_db_config(db), in, error_r)) != KF_OK)
        return rc;
    return kf_tx_run(db, ingest_tx, &a, error_r);
}
