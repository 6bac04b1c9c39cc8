/*
 * email_channel.c - raw message -> ticket: parse, bounces, threading,
 * auto-reply brake, quarantine; the HTTP inbound route; init/shutdown.
 *
 * kf_email_ingest_raw() runs one transaction per message: kf_ingest_tx(),
 * then the Message-ID for threading and the cid: rewrite of inline images,
 * all committed together.  A message that cannot be parsed or ingested
 * (anything but a database failure) goes to email_quarantine with the reason
 * and an event, and counts as accepted: one bad message never stalls a
 * source.  Database failures return KF_EDB/KF_ERETRY so the source keeps the
 * message and tries again (LMTP 451, HTTP 503, IMAP: not flagged).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

#include "kefu/channel.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/email.h"
#include "kefu/event.h"
#include "kefu/http.h"
#include "kefu/log.h"
#include "kefu/server.h"
#include "email_internal.h"

/* ---- lookups ---- */

int
kf_email_mailbox_for(kf_db *db, kf_pool *pool, const char *address, char **name_r,
                     const char **error_r)
{
    kf_stmt *st;
    int rc;
    if ((rc = kf_db_stmt(db, "email.mailbox_for",
                         "SELECT name FROM email_mailbox WHERE address = ? AND enabled = 1", &st,
                         error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, address);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    rc = kf_stmt_fetch(st, error_r);
    if (rc < 0)
        return KF_EDB;
    if (rc == 0)
        return KF_ENOTFOUND;
    *name_r = kf_stmt_col_str(st, 0, pool, NULL);
    kf_stmt_done(st);
    return KF_OK;
}

int
kf_email_mailbox_get(kf_db *db, kf_pool *pool, const char *name, kf_email_mailbox *mb,
                     const char **error_r)
{
    kf_stmt *st;
    int rc;
    memset(mb, 0, sizeof(*mb));
    if ((rc = kf_db_stmt(db, "email.mailbox_get",
                         "SELECT name, address, display_name, send_ack FROM email_mailbox "
                         "WHERE (name = ? OR ? IS NULL) AND enabled = 1 ORDER BY id LIMIT 1",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, name);
    kf_stmt_bind_cstr(st, 1, name);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    rc = kf_stmt_fetch(st, error_r);
    if (rc < 0)
        return KF_EDB;
    if (rc == 0)
        return KF_ENOTFOUND;
    mb->name = kf_stmt_col_str(st, 0, pool, NULL);
    mb->address = kf_stmt_col_str(st, 1, pool, NULL);
    mb->display_name = kf_stmt_col_str(st, 2, pool, NULL);
    mb->send_ack = (int) kf_stmt_col_i64(st, 3);
    kf_stmt_done(st);
    return KF_OK;
}

/* ---- threading (inside the ingest transaction) ---- */

static int
ticket_by_msgid(kf_db *db, const char *id, uint64_t *ticket_r, const char **error_r)
{
    kf_stmt *st;
    int rc;
    *ticket_r = 0;
    if (id == NULL)
        return KF_OK;
    if ((rc = kf_db_stmt(db, "email.thread_msgid",
                         "SELECT ticket_id FROM email_message_id WHERE message_id_hdr = ? "
                         "ORDER BY direction DESC LIMIT 1",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    rc = kf_stmt_fetch(st, error_r);
    if (rc < 0)
        return KF_EDB;
    if (rc == 1)
        *ticket_r = kf_stmt_col_u64(st, 0);
    kf_stmt_done(st);
    return KF_OK;
}

/* [KF-000123] in a subject: the number, or 0. */
uint64_t
kf_email_subject_ticket(const char *subject)
{
    for (const char *p = subject; p && (p = strstr(p, "[KF-")) != NULL; p += 4) {
        const char *q = p + 4;
        uint64_t v = 0;
        int digits = 0;
        while (*q >= '0' && *q <= '9' && digits < 19)
            v = v * 10 + (uint64_t) (*q++ - '0'), digits++;
        if (digits > 0 && *q == ']')
            return v;
    }
    return 0;
}

static int
email_thread(kf_db *db, const kf_inbound *in, uint64_t customer_id, uint64_t *ticket_id_r,
             const char **error_r)
{
    const kf_email_msg *m = in->thread_arg;
    int rc;
    *ticket_id_r = 0;
    /* 1. In-Reply-To, then References newest first. */
    if ((rc = ticket_by_msgid(db, m->in_reply_to, ticket_id_r, error_r)) != KF_OK || *ticket_id_r)
        return rc;
    for (unsigned i = m->n_refs; i-- > 0;)
        if ((rc = ticket_by_msgid(db, m->refs[i], ticket_id_r, error_r)) != KF_OK || *ticket_id_r)
            return rc;
    /* 2. A subject token, only from the ticket's own customer or a known CC
     *    (an address copied on the ticket's incoming mail: ticket_cc). */
    uint64_t id = kf_email_subject_ticket(m->subject);
    if (id == 0)
        return KF_OK;
    kf_stmt *st;
    if ((rc = kf_db_stmt(db, "email.thread_subject",
                         "SELECT t.customer_id = ? OR EXISTS (SELECT 1 FROM ticket_cc c "
                         " WHERE c.ticket_id = t.id AND c.address = ?) FROM ticket t WHERE t.id = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, customer_id);
    kf_stmt_bind_cstr(st, 1, m->from_addr ? m->from_addr : "");
    kf_stmt_bind_u64(st, 2, id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    rc = kf_stmt_fetch(st, error_r);
    if (rc < 0)
        return KF_EDB;
    if (rc == 1 && kf_stmt_col_i64(st, 0) == 1)
        *ticket_id_r = id;
    kf_stmt_done(st);
    return KF_OK;
}

/* Remember the Cc addresses of an incoming mail on its ticket (known CCs). */
static int
record_ccs(kf_db *db, const kf_email_msg *m, uint64_t ticket_id, const char **error_r)
{
    kf_stmt *st;
    int rc;
    for (unsigned i = 0; i < m->n_cc; i++) {
        /* our own mailboxes copied on the mail are not the customer's CCs */
        if ((rc = kf_db_stmt(db, "email.cc_add",
                             "INSERT IGNORE INTO ticket_cc (ticket_id, address) SELECT ?, ? "
                             "FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM email_mailbox "
                             "WHERE address = ?)",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, ticket_id);
        kf_stmt_bind_cstr(st, 1, m->cc[i]);
        kf_stmt_bind_cstr(st, 2, m->cc[i]);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
    }
    return KF_OK;
}

/* ---- quarantine and bounces ---- */

static int
quarantine(kf_db *db, const char *mailbox, const char *source, const char *raw, size_t len,
           const char *why, const char **error_r)
{
    kf_stmt *st;
    int rc;
    char reason[1000];
    snprintf(reason, sizeof(reason), "%s", why ? why : "unknown");
    if ((rc = kf_db_stmt(db, "email.quarantine",
                         "INSERT INTO email_quarantine (mailbox, source, error, raw) "
                         "VALUES (?, ?, ?, ?)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, mailbox);
    kf_stmt_bind_cstr(st, 1, source);
    kf_stmt_bind_cstr(st, 2, reason);
    kf_stmt_bind_str(st, 3, raw, len);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    uint64_t qid = kf_stmt_insert_id(st);
    json_t *d = json_pack("{s:s, s:s, s:s, s:I}", "mailbox", mailbox, "source", source, "error",
                          reason, "quarantine_id", (json_int_t) qid);
    rc = kf_event_add(db, 0, "email.quarantined", KF_ACTOR_SYSTEM, 0, d, NULL, error_r);
    json_decref(d);
    kf_log(KF_LOG_WARN, "email", "event=quarantined mailbox=\"%s\" source=%s id=%" PRIu64
           " reason=\"%s\"", mailbox, source, qid, reason);
    return rc;
}

struct tx_arg {
    const char *mailbox, *source, *raw;
    size_t len;
    kf_email_msg *m;
    kf_inbound *in;
    kf_email_result *res;
    const char *why; /* set: quarantine instead */
    kf_pool *pool;
};

static int
bounce_tx(kf_db *db, void *arg, const char **error_r)
{
    struct tx_arg *a = arg;
    kf_stmt *st;
    int rc;
    uint64_t outbox_id = 0, ticket_id = 0;
    a->res->bounce = 0;
    a->res->quarantined = 0;
    if (a->m->bounce_ref != NULL) {
        if ((rc = kf_db_stmt(db, "email.bounce_find",
                             "SELECT outbox_id, ticket_id FROM email_message_id "
                             "WHERE message_id_hdr = ? AND direction = 'out'",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_cstr(st, 0, a->m->bounce_ref);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        if ((rc = kf_stmt_fetch(st, error_r)) < 0)
            return KF_EDB;
        if (rc == 1) {
            outbox_id = kf_stmt_col_u64(st, 0);
            ticket_id = kf_stmt_col_u64(st, 1);
        }
        kf_stmt_done(st);
    }
    if (outbox_id == 0) {
        a->res->quarantined = 1;
        return quarantine(db, a->mailbox, a->source, a->raw, a->len,
                          "bounce for a message Kefu did not send", error_r);
    }
    const char *reason = a->m->bounce_reason && *a->m->bounce_reason ? a->m->bounce_reason
                                                                      : "bounced";
    char why[1000];
    snprintf(why, sizeof(why), "bounce: %s", reason);
    if ((rc = kf_db_stmt(db, "email.bounce_mark",
                         "UPDATE outbox SET status = 'dead', last_error = ?, peer_reply = ?, "
                         "lease_owner = NULL, lease_until = NULL WHERE id = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, why);
    kf_stmt_bind_cstr(st, 1, why + 8);
    kf_stmt_bind_u64(st, 2, outbox_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    json_t *d = json_pack("{s:I, s:s, s:s}", "outbox_id", (json_int_t) outbox_id, "reason", reason,
                          "message_id", a->m->bounce_ref);
    rc = kf_event_add(db, ticket_id, "outbox.bounced", KF_ACTOR_SYSTEM, 0, d, NULL, error_r);
    json_decref(d);
    a->res->bounce = 1;
    a->res->ticket_id = ticket_id;
    return rc;
}

/* Rewrite src="cid:x" to the attachment's download URL. */
static int
rewrite_cids(kf_db *db, kf_pool *pool, uint64_t message_id, const char *html, const char **error_r)
{
    kf_stmt *st;
    int rc;
    if (html == NULL || strstr(html, "cid:") == NULL)
        return KF_OK;
    struct {
        char *cid;
        uint64_t id;
    } map[64];
    unsigned n = 0;
    if ((rc = kf_db_stmt(db, "email.cids",
                         "SELECT id, content_id FROM attachment WHERE message_id = ? "
                         "AND content_id IS NOT NULL",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, message_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    while (n < KF_ARRAY_LEN(map) && (rc = kf_stmt_fetch(st, error_r)) == 1) {
        map[n].id = kf_stmt_col_u64(st, 0);
        map[n].cid = kf_stmt_col_str(st, 1, pool, NULL);
        n++;
    }
    kf_stmt_done(st);
    if (rc < 0)
        return KF_EDB;
    kf_str out = KF_STR_INIT;
    const char *p = html;
    const char *q;
    while ((q = strstr(p, "\"cid:")) != NULL) {
        const char *e = strchr(q + 5, '"');
        if (e == NULL)
            break;
        kf_str_append(&out, p, (size_t) (q - p) + 1);
        size_t cl = (size_t) (e - (q + 5));
        int done = 0;
        for (unsigned i = 0; i < n && !done; i++)
            if (strlen(map[i].cid) == cl && strncmp(map[i].cid, q + 5, cl) == 0) {
                kf_str_printf(&out, "/api/v1/attachments/%" PRIu64, map[i].id);
                done = 1;
            }
        if (!done)
            kf_str_append(&out, q + 1, cl + 4);
        p = e;
    }
    kf_str_puts(&out, p);
    if ((rc = kf_db_stmt(db, "email.html_update", "UPDATE message SET body_html = ? WHERE id = ?",
                         &st, error_r)) == KF_OK) {
        kf_stmt_bind_str(st, 0, out.ptr, out.len);
        kf_stmt_bind_u64(st, 1, message_id);
        rc = kf_stmt_exec(st, error_r);
    }
    kf_str_free(&out);
    return rc;
}

/* Automatic replies to one address per day, counted (and capped) in the transaction. */
static int
auto_reply_allowed(kf_db *db, const char *address, unsigned limit, int *ok_r, const char **error_r)
{
    kf_stmt *st;
    int rc;
    *ok_r = 0;
    if (limit == 0)
        return KF_OK;
    if ((rc = kf_db_stmt(db, "email.autoreply_count",
                         "INSERT INTO email_auto_reply (address, day, sent) VALUES (?, CURDATE(), 1) "
                         "ON DUPLICATE KEY UPDATE sent = sent + 1",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, address);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_db_stmt(db, "email.autoreply_get",
                         "SELECT sent FROM email_auto_reply WHERE address = ? AND day = CURDATE()",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, address);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_stmt_fetch(st, error_r)) < 0)
        return KF_EDB;
    *ok_r = rc == 1 && kf_stmt_col_u64(st, 0) <= limit;
    kf_stmt_done(st);
    return KF_OK;
}

static int
ingest_tx(kf_db *db, void *arg, const char **error_r)
{
    struct tx_arg *a = arg;
    kf_ingest_result r;
    kf_stmt *st;
    int rc, ack = a->in->send_ack;

    a->why = NULL;
    if (ack && (rc = auto_reply_allowed(db, a->m->from_addr, kf_db_config(db)->email_auto_reply_limit,
                                        &ack, error_r)) != KF_OK)
        return rc;
    a->in->send_ack = ack;
    rc = kf_ingest_tx(db, a->in, &r, error_r);
    if (rc == KF_EINVAL || rc == KF_ENOTFOUND) {
        /* Not a database problem: this message can never be ingested as it is. */
        a->why = kf_pool_strdup(a->pool, *error_r ? *error_r : "invalid");
        a->res->quarantined = 1;
        return quarantine(db, a->mailbox, a->source, a->raw, a->len, a->why, error_r);
    }
    if (rc != KF_OK)
        return rc;
    a->res->duplicate = r.duplicate;
    a->res->ticket_id = r.ticket_id;
    a->res->message_id = r.message_id;
    if (r.duplicate)
        return KF_OK;
    if ((rc = record_ccs(db, a->m, r.ticket_id, error_r)) != KF_OK)
        return rc;
    if (a->in->external_id != NULL && a->m->message_id != NULL) {
        if ((rc = kf_db_stmt(db, "email.msgid_in",
                             "INSERT IGNORE INTO email_message_id (message_id_hdr, direction, "
                             "ticket_id, message_id, quote_offset) VALUES (?, 'in', ?, ?, ?)",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_cstr(st, 0, a->m->message_id);
        kf_stmt_bind_u64(st, 1, r.ticket_id);
        kf_stmt_bind_u64(st, 2, r.message_id);
        if (a->m->text_fold < a->m->text_len)
            kf_stmt_bind_u64(st, 3, a->m->text_fold);
        else
            kf_stmt_bind_null(st, 3);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
    }
    return rewrite_cids(db, a->pool, r.message_id, a->in->html, error_r);
}

static int
quarantine_tx(kf_db *db, void *arg, const char **error_r)
{
    struct tx_arg *a = arg;
    return quarantine(db, a->mailbox, a->source, a->raw, a->len, a->why, error_r);
}

int
kf_email_ingest_raw(kf_db *db, const char *mailbox, const char *raw, size_t len,
                    const char *source, kf_email_result *res, const char **error_r)
{
    const kf_config *cfg = kf_db_config(db);
    kf_pool *pool = kf_pool_create(16384);
    kf_email_limits lim = KF_EMAIL_DEFAULT_LIMITS;
    kf_email_mailbox mb;
    kf_email_msg m;
    const char *why = NULL;
    int rc;

    memset(res, 0, sizeof(*res));
    lim.max_size = cfg->lmtp_max_size;
    lim.allow_remote_images = cfg->html_allow_remote_images;
    lim.list_id_is_bulk = cfg->email_list_id_bulk;
    if ((rc = kf_email_mailbox_get(db, pool, mailbox, &mb, error_r)) != KF_OK) {
        kf_pool_destroy(&pool);
        if (rc == KF_ENOTFOUND)
            *error_r = "no such mailbox";
        return rc;
    }
    struct tx_arg a = {.mailbox = mailbox, .source = source, .raw = raw, .len = len, .m = &m,
                       .res = res, .pool = pool};
    if (kf_email_parse(pool, raw, len, &lim, &m, &why) != KF_OK) {
        a.why = why;
        res->quarantined = 1;
        rc = kf_tx_run(db, quarantine_tx, &a, error_r);
        kf_pool_destroy(&pool);
        return rc;
    }
    if (m.is_bounce) {
        rc = kf_tx_run(db, bounce_tx, &a, error_r);
        kf_pool_destroy(&pool);
        return rc;
    }
    /* Attachments the ticket core would refuse are left out with a note, not the message. */
    kf_inbound_attachment *att = kf_pool_alloc(pool, (m.n_attachments + 1) * sizeof(*att));
    size_t n_att = 0;
    kf_str note = KF_STR_INIT;
    for (size_t i = 0; i < m.n_attachments; i++) {
        if (m.attachments[i].len > cfg->attachment_max_bytes || n_att >= cfg->attachment_max_count) {
            kf_str_printf(&note, "\n[attachment \"%s\" (%zu bytes) not kept: over the limit]",
                          m.attachments[i].filename, m.attachments[i].len);
            continue;
        }
        att[n_att++] = m.attachments[i];
    }
    const char *text = m.text;
    size_t text_len = m.text_len;
    if (note.len) {
        text = kf_pool_printf(pool, "%s%s", m.text, note.ptr);
        text_len = strlen(text);
    }
    kf_str_free(&note);
    const char *external = m.message_id;
    if (external == NULL) {
        /* No Message-ID: the content is the identity, so a redelivery is still a duplicate. */
        unsigned char h[crypto_hash_sha256_BYTES];
        crypto_hash_sha256(h, (const unsigned char *) raw, len);
        char hex[crypto_hash_sha256_BYTES * 2 + 1];
        sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
        external = kf_pool_printf(pool, "sha256:%s", hex);
    }
    kf_inbound in = {
        .channel = "email",
        .channel_account = mailbox,
        .external_id = external,
        .identity_kind = "email",
        .identity_value = m.from_addr,
        .customer_name = m.from_name,
        .subject = m.subject[0] ? m.subject : "(no subject)",
        .text = text,
        .text_len = text_len,
        .quote_at = m.text_fold < m.text_len ? m.text_fold : 0,
        .html = m.html,
        .attachments = att,
        .n_attachments = n_att,
        .thread_fn = email_thread,
        .thread_arg = &m,
        .send_ack = mb.send_ack && !m.auto_submitted,
        .auto_submitted = m.auto_submitted,
    };
    a.in = &in;
    rc = kf_tx_run(db, ingest_tx, &a, error_r);
    if (rc == KF_OK)
        kf_log(KF_LOG_INFO, "email", "event=ingested mailbox=\"%s\" source=%s ticket=%" PRIu64
               " message=%" PRIu64 " duplicate=%d auto=%d quarantined=%d", mailbox, source,
               res->ticket_id, res->message_id, res->duplicate, m.auto_submitted, res->quarantined);
    kf_pool_destroy(&pool);
    return rc;
}

/* ---- HTTP: POST /api/v1/inbound/email/{mailbox} ---- */

static int
h_inbound(kf_call *c, kf_reply *out)
{
    const char *mailbox = kf_call_param(c, "mailbox");
    const char *err = NULL;
    kf_email_result r;
    if (c->body_len == 0)
        return kf_reply_problem(out, c, 400, "empty-body", "send the raw message (message/rfc822)",
                                NULL);
    if (c->body_len > c->cfg->lmtp_max_size)
        return kf_reply_problem(out, c, 413, "payload-too-large", "message over lmtp_max_size",
                                NULL);
    int rc = kf_email_ingest_raw(c->db, mailbox, c->body, c->body_len, "http", &r, &err);
    if (rc == KF_ENOTFOUND)
        return kf_reply_problem(out, c, 404, "not-found", "no such mailbox", NULL);
    if (rc != KF_OK) {
        kf_reply_header(out, c, "Retry-After", "5");
        return kf_reply_problem(out, c, 503, "unavailable", "the message was not stored; retry",
                                NULL);
    }
    json_t *j = json_pack("{s:b, s:b, s:b}", "duplicate", r.duplicate, "bounce", r.bounce,
                          "quarantined", r.quarantined);
    if (r.ticket_id)
        json_object_set_new(j, "ticket_id", json_integer((json_int_t) r.ticket_id));
    if (r.message_id)
        json_object_set_new(j, "message_id", json_integer((json_int_t) r.message_id));
    return kf_reply_json(out, c, r.duplicate ? 200 : 202, j);
}

const kf_route kf_email_routes[] = {
    {KF_POST, "/api/v1/inbound/email/{mailbox}", KF_AUTH_TOKEN, 32u * 1024 * 1024, h_inbound, 0,
     "email.inbound"},
    {KF_GET, "/api/v1/email/mailboxes", KF_AUTH_ADMIN, 0, kf_email_h_list, 0,
     "email.mailboxes.list"},
    {KF_PUT, "/api/v1/email/mailboxes/{name}", KF_AUTH_ADMIN, 16 * 1024, kf_email_h_put, 0,
     "email.mailboxes.put"},
    {KF_DELETE, "/api/v1/email/mailboxes/{name}", KF_AUTH_ADMIN, 0, kf_email_h_delete, 0,
     "email.mailboxes.delete"},
    {KF_GET, "/api/v1/email/quarantine", KF_AUTH_ADMIN, 0, kf_email_h_quarantine, 0,
     "email.quarantine"},
    {0, NULL, 0, 0, NULL, 0, NULL},
};

/* ---- init ---- */

int
kf_email_init(kf_scheduler *s, const kf_config *cfg, char *err, size_t errsz)
{
    kf_email_lib_init();
    /* Main thread, before any job thread: curl_global_init is reference-counted. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errsz, "curl_global_init failed");
        return KF_ERR;
    }
    kf_email_smtp_register(cfg);
    kf_email_imap_add(s, cfg);
    if (cfg->lmtp_listen != NULL && cfg->lmtp_listen[0] != '\0')
        return kf_email_lmtp_start(cfg, err, errsz);
    return KF_OK;
}

void
kf_email_shutdown(void)
{
    kf_email_lmtp_stop();
}
