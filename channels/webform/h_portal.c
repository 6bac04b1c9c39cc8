/*
 * h_portal.c - the customer portal.
 *
 * Two ways in, one set of pages:
 *   /support/t/{token}          a per-ticket access link (mailed with the
 *                               acknowledgement, shown after submitting);
 *                               its token is the authority;
 *   /support/requests/{id}      a ticket of the customer signed in to
 *                               "My requests" (cookie kefu_portal, made by a
 *                               sign-in link mailed to them: usable once,
 *                               for 15 minutes).
 * Each shows the status, the public conversation (internal notes never
 * leave the database for these pages), attachments as downloads, a reply
 * box with attachments and "this is solved".
 *
 * A link that is unknown, expired, used or revoked, and a ticket that is
 * not the signed-in customer's, all get the same 404 page: same bytes, no
 * hint which it was.  Every form carries a form token (form_token.c) bound
 * to the link or session it acts with.
 *
 * Agents (API): POST /api/v1/tickets/{id}/portal-links makes a new link,
 * DELETE revokes every link of the ticket.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/attachment.h"
#include "kefu/auth.h"
#include "kefu/config.h"
#include "kefu/customer.h"
#include "kefu/db.h"
#include "kefu/event.h"
#include "kefu/http.h"
#include "kefu/ingest.h"
#include "kefu/log.h"
#include "kefu/outbox.h"
#include "kefu/pool.h"
#include "kefu/server.h"
#include "kefu/ticket.h"
#include "webform_internal.h"

#define REPLY_CHARS 20000

/* ---- who may see which ticket ---- */

struct access {
    uint64_t ticket_id, customer_id;
    const char *binding; /* the link's token or the session's: form tokens are bound to it */
    const char *base;    /* "/support/t/<token>" or "/support/requests/<id>" */
    int session;
    kf_ticket tk;
};

/* The signed-in customer (canonical), from the session cookie. */
static int
session_get(kf_call *c, uint64_t *customer_r, const char **token_r, const char **error_r)
{
    const char *tok = wf_cookie(c, WF_SESSION_COOKIE);
    uint64_t cust = 0;
    int rc;

    *customer_r = 0;
    if (token_r != NULL)
        *token_r = tok;
    if (tok == NULL)
        return KF_ENOTFOUND;
    if ((rc = wf_portal_token_find(c->db, "session", tok, WF_SESSION_IDLE, WF_SESSION_MAX, &cust,
                                   NULL, error_r)) != KF_OK)
        return rc;
    return kf_customer_canonical(c->db, cust, customer_r, error_r);
}

static int
access_get(kf_call *c, struct access *a, const char **error_r)
{
    const char *tok = kf_call_param(c, "token");
    int rc;

    memset(a, 0, sizeof(*a));
    if (tok != NULL) {
        if ((rc = wf_portal_token_find(c->db, "ticket", tok, c->cfg->portal_token_idle, 0,
                                       &a->customer_id, &a->ticket_id, error_r)) != KF_OK)
            return rc;
        a->binding = tok;
        a->base = kf_pool_printf(c->pool, "/support/t/%s", tok);
    } else {
        if (kf_call_param_u64(c, "id", &a->ticket_id) != KF_OK || a->ticket_id == 0)
            return KF_ENOTFOUND;
        if ((rc = session_get(c, &a->customer_id, &a->binding, error_r)) != KF_OK)
            return rc;
        a->session = 1;
        a->base =
            kf_pool_printf(c->pool, "/support/requests/%llu", (unsigned long long)a->ticket_id);
    }
    if ((rc = kf_ticket_get(c->db, c->pool, a->ticket_id, &a->tk, error_r)) != KF_OK)
        return rc;
    if (a->session && a->tk.customer_id != a->customer_id)
        return KF_ENOTFOUND;
    /* A merged ticket goes on in the one it was merged into, when that is the same customer's. */
    for (int hop = 0; hop < 8 && a->tk.merged_into_id != 0; hop++) {
        kf_ticket into;
        if ((rc = kf_ticket_get(c->db, c->pool, a->tk.merged_into_id, &into, error_r)) != KF_OK)
            return rc == KF_ENOTFOUND ? KF_OK : rc;
        if (into.customer_id != a->tk.customer_id)
            break;
        a->tk = into;
        a->ticket_id = into.id;
    }
    return KF_OK;
}

/* Resolve access or answer: 1 = go on; 0 = *out holds the (404 or 500) answer. */
static int
access_or_answer(kf_call *c, kf_reply *out, struct access *a, const char *lang)
{
    const char *error = NULL;
    int rc = access_get(c, a, &error);
    if (rc == KF_OK)
        return 1;
    if (rc == KF_ENOTFOUND)
        wf_not_found(c, out, lang);
    else
        kf_reply_internal(out, c, error);
    return 0;
}

static int
status_open(const char *status)
{
    return strcmp(status, "new") == 0 || strcmp(status, "open") == 0 ||
           strcmp(status, "pending") == 0;
}

/* ---- the ticket page ---- */

static int
ticket_page(kf_call *c, kf_reply *out, int status, const struct access *a, const char *lang,
            int explicit_lang, const char *flash_key, const char *reply_error,
            const char *reply_text)
{
    const kf_ticket *tk = &a->tk;
    const char *error = NULL;
    json_t *msgs = NULL, *list, *m;
    char number[32], key[48];
    size_t i;
    wf_page pg;

    if (kf_ticket_messages_json(c->db, c->pool, tk->id, 0, &msgs, &error) != KF_OK)
        return kf_reply_internal(out, c, error);
    list = json_array();
    json_array_foreach(msgs, i, m)
    {
        json_t *author = json_object_get(m, "author"), *files = json_array(), *f;
        const char *akind = json_string_value(json_object_get(author, "kind"));
        const char *aname = json_string_value(json_object_get(author, "name"));
        const char *created = json_string_value(json_object_get(m, "created_at"));
        int mine = akind != NULL && strcmp(akind, "customer") == 0;
        size_t k;
        json_array_foreach(json_object_get(m, "attachments"), k, f)
        {
            json_int_t aid = json_integer_value(json_object_get(f, "id"));
            json_array_append_new(
                files,
                json_pack(
                    "{s:s?, s:s, s:s}", "filename",
                    json_string_value(json_object_get(f, "filename")), "size",
                    wf_size_text(c->pool, (uint64_t)json_integer_value(json_object_get(f, "size"))),
                    "href",
                    kf_pool_printf(c->pool, "%s/attachments/%lld", a->base, (long long)aid)));
        }
        json_array_append_new(
            list, json_pack("{s:I, s:b, s:b, s:s, s:s, s:s?, s:o}", "id",
                            json_integer_value(json_object_get(m, "id")), "mine", mine,
                            "has_attachments", json_array_size(files) > 0, "author",
                            mine ? wf_tr(lang, "portal.you")
                                 : (aname && *aname ? aname : wf_tr(lang, "portal.support")),
                            "time", wf_time_display(c->pool, created), "text",
                            json_string_value(json_object_get(m, "text")), "attachments", files));
    }
    json_decref(msgs);

    kf_ticket_number(tk->id, number, sizeof(number));
    snprintf(key, sizeof(key), "status.%s", tk->status);
    wf_page_init(&pg, c, lang, explicit_lang, a->base);
    json_object_set_new(pg.ctx, "ticket",
                        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "number", number, "subject",
                                  tk->subject, "status", tk->status, "status_label",
                                  wf_tr(lang, key), "created",
                                  wf_time_display(c->pool, tk->created_at), "updated",
                                  wf_time_display(c->pool, tk->updated_at)));
    json_object_set_new(pg.ctx, "messages", list);
    json_object_set_new(pg.ctx, "base", json_string(a->base));
    json_object_set_new(pg.ctx, "session", json_boolean(a->session));
    json_object_set_new(pg.ctx, "can_reply", json_boolean(strcmp(tk->status, "closed") != 0));
    json_object_set_new(pg.ctx, "can_solve", json_boolean(status_open(tk->status)));
    json_object_set_new(pg.ctx, "closed", json_boolean(strcmp(tk->status, "closed") == 0));
    json_object_set_new(
        pg.ctx, "reply_token",
        json_string(wf_form_token(
            c, kf_pool_printf(c->pool, "reply:%llu", (unsigned long long)tk->id), a->binding)));
    json_object_set_new(
        pg.ctx, "solve_token",
        json_string(wf_form_token(
            c, kf_pool_printf(c->pool, "solve:%llu", (unsigned long long)tk->id), a->binding)));
    json_object_set_new(pg.ctx, "max_files", json_integer(c->cfg->attachment_max_count));
    json_object_set_new(pg.ctx, "max_bytes", json_integer(c->cfg->attachment_max_bytes));
    json_object_set_new(pg.ctx, "max_size",
                        json_string(wf_size_text(c->pool, c->cfg->attachment_max_bytes)));
    json_object_set_new(pg.ctx, "max_text", json_integer(REPLY_CHARS));
    json_object_set_new(pg.ctx, "attachments_allowed",
                        json_boolean(c->cfg->attachment_max_count > 0));
    if (flash_key != NULL)
        json_object_set_new(pg.ctx, "flash", json_string(wf_tr(lang, flash_key)));
    if (reply_error != NULL)
        json_object_set_new(pg.ctx, "reply_error", json_string(reply_error));
    if (reply_text != NULL)
        json_object_set_new(pg.ctx, "reply_text", json_string(reply_text));
    return wf_page_reply(&pg, out, status, "ticket", "portal.title");
}

/* GET /support/t/{token}, GET /support/requests/{id} */
static int
h_ticket(kf_call *c, kf_reply *out)
{
    const char *error = NULL, *lang, *flash = NULL;
    int explicit_lang;
    struct access a;

    if (wf_ready(c, &error) != KF_OK)
        return kf_reply_internal(out, c, error);
    lang = wf_lang(c, NULL, &explicit_lang);
    if (!access_or_answer(c, out, &a, lang))
        return 0;
    if (kf_call_query(c, "sent") != NULL)
        flash = "portal.flash_sent";
    else if (kf_call_query(c, "solved") != NULL)
        flash = "portal.flash_solved";
    return ticket_page(c, out, 200, &a, lang, explicit_lang, flash, NULL, NULL);
}

/* GET /support/t/{token}/submitted - the confirmation after the form. */
static int
h_submitted(kf_call *c, kf_reply *out)
{
    const char *error = NULL, *lang, *embed = kf_call_query(c, "embed");
    char number[32];
    int explicit_lang;
    struct access a;
    wf_page pg;

    if (wf_ready(c, &error) != KF_OK)
        return kf_reply_internal(out, c, error);
    lang = wf_lang(c, NULL, &explicit_lang);
    if (!access_or_answer(c, out, &a, lang))
        return 0;
    kf_ticket_number(a.ticket_id, number, sizeof(number));
    wf_page_init(&pg, c, lang, explicit_lang, kf_pool_printf(c->pool, "%s/submitted", a.base));
    pg.frame_ancestors = c->cfg->webform_frame_ancestors; /* shown inside the embed too */
    json_object_set_new(pg.ctx, "number", json_string(number));
    json_object_set_new(pg.ctx, "subject", json_string(a.tk.subject));
    json_object_set_new(pg.ctx, "portal", json_string(a.base));
    json_object_set_new(pg.ctx, "embed", json_boolean(embed != NULL && !strcmp(embed, "1")));
    return wf_page_reply(&pg, out, 200, "submitted", "submitted.title");
}

/* ---- reply and solve ---- */

static kf_form_limits
reply_limits(const kf_config *cfg)
{
    kf_form_limits lim = {
        .max_fields = 8,
        .max_files = (size_t)cfg->attachment_max_count + 8,
        .max_name = 64,
        .max_value = 4 * REPLY_CHARS + 1024,
        .max_total = WF_UPLOAD_MAX_BODY,
    };
    return lim;
}

static size_t
utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* Parse a portal form and check its token; 1 = go on, 0 = *out holds the answer. */
static int
portal_form(kf_call *c, kf_reply *out, const struct access *a, const char *purpose,
            const char *lang, kf_form *f, const char **nonce_r)
{
    kf_form_limits lim = reply_limits(c->cfg);
    const char *error = NULL, *origin;
    int rc = kf_form_parse(c->pool, kf_call_header(c, "Content-Type"), c->body, c->body_len, &lim,
                           f, &error);
    if (rc != KF_OK) {
        if (f->too_large)
            wf_message_page(c, out, 413, lang, "toolarge.title", "toolarge.text");
        else
            wf_message_page(c, out, f->unsupported ? 415 : 400, lang, "badrequest.title",
                            "badrequest.text");
        return 0;
    }
    if (!wf_origin_allowed(c, &origin) ||
        kf_form_token_check(wf_key(), purpose, a->binding, kf_form_get(f, "form_token", NULL),
                            wf_now(), WF_TOKEN_MAX_AGE, c->pool, NULL,
                            nonce_r) != KF_FORM_TOKEN_OK) {
        wf_message_page(c, out, 403, lang, "forbidden.title", "forbidden.text");
        return 0;
    }
    return 1;
}

/* POST .../reply - the customer writes on their ticket (text and files). */
static int
h_reply(kf_call *c, kf_reply *out)
{
    const kf_config *cfg = c->cfg;
    const char *error = NULL, *lang, *nonce = NULL, *text;
    kf_ingest_result res;
    struct access a;
    kf_form f;
    int rc;

    if (wf_ready(c, &error) != KF_OK)
        return kf_reply_internal(out, c, error);
    lang = wf_lang(c, NULL, NULL);
    if (!access_or_answer(c, out, &a, lang))
        return 0;
    const char *purpose = kf_pool_printf(c->pool, "reply:%llu", (unsigned long long)a.ticket_id);
    if (!portal_form(c, out, &a, purpose, lang, &f, &nonce))
        return 0;
    lang = wf_lang(c, kf_form_get(&f, "lang", NULL), NULL);
    text = kf_form_get(&f, "text", NULL);
    while (text != NULL && (*text == ' ' || *text == '\n' || *text == '\r' || *text == '\t'))
        text++;

    if (strcmp(a.tk.status, "closed") == 0)
        return wf_message_page(c, out, 409, lang, "closed.title", "closed.text");
    if (f.n_files > cfg->attachment_max_count)
        return ticket_page(c, out, 413, &a, lang, 0, NULL, wf_tr(lang, "err.files_count_plain"),
                           text);
    for (size_t i = 0; i < f.n_files; i++)
        if (f.files[i].len > cfg->attachment_max_bytes)
            return ticket_page(c, out, 413, &a, lang, 0, NULL, wf_tr(lang, "err.file_size_plain"),
                               text);
    if ((text == NULL || *text == '\0') && f.n_files == 0)
        return ticket_page(c, out, 422, &a, lang, 0, NULL, wf_tr(lang, "err.reply_empty"), NULL);
    if (text != NULL && utf8_chars(text) > REPLY_CHARS)
        return ticket_page(c, out, 422, &a, lang, 0, NULL, wf_tr(lang, "err.reply_long"), text);

    kf_inbound_attachment *files =
        kf_pool_alloc(c->pool, (f.n_files ? f.n_files : 1) * sizeof(*files));
    for (size_t i = 0; i < f.n_files; i++) {
        files[i].filename = kf_attachment_filename_clean(c->pool, f.files[i].filename);
        files[i].content_type = kf_attachment_sniff(f.files[i].data, f.files[i].len);
        files[i].data = f.files[i].data;
        files[i].len = f.files[i].len;
    }
    kf_inbound in = {
        .channel = "web",
        .channel_account = "",
        .external_id = kf_pool_printf(c->pool, "form:%s", nonce),
        .customer_id = a.tk.customer_id,
        .ticket_id = a.ticket_id,
        .text = text ? text : "",
        .text_len = text ? strlen(text) : 0,
        .attachments = files,
        .n_attachments = f.n_files,
    };
    if ((rc = kf_ingest(c->db, &in, &res, &error)) != KF_OK) {
        if (rc == KF_ENOTFOUND)
            return wf_not_found(c, out, lang);
        if (rc == KF_EINVAL)
            return ticket_page(c, out, 422, &a, lang, 0, NULL, wf_tr(lang, "err.invalid"), text);
        return kf_reply_internal(out, c, error);
    }
    return wf_redirect(
        c, out,
        kf_pool_printf(c->pool, "%s?sent=1#m%llu", a.base, (unsigned long long)res.message_id));
}

struct solve_tx {
    uint64_t ticket_id;
    int changed;
};

static int
solve_tx(kf_db *db, void *arg, const char **error_r)
{
    struct solve_tx *t = arg;
    kf_pool *pool = kf_pool_create(1024);
    kf_ticket tk;
    int rc;

    t->changed = 0;
    if ((rc = kf_ticket_lock(db, pool, t->ticket_id, &tk, error_r)) != KF_OK)
        goto done;
    if (!status_open(tk.status))
        goto done; /* solved or closed already: nothing to do */
    if ((rc = kf_ticket_set_status(db, tk.id, "solved", error_r)) != KF_OK)
        goto done;
    json_t *d = json_pack("{s:{s:{s:s, s:s}}, s:s}", "changes", "status", "from", tk.status, "to",
                          "solved", "via", "portal");
    rc = kf_event_add(db, tk.id, "ticket.updated", KF_ACTOR_CUSTOMER, tk.customer_id, d, NULL,
                      error_r);
    json_decref(d);
    t->changed = rc == KF_OK;
done:
    kf_pool_destroy(&pool);
    return rc;
}

/* POST .../solve - "this is solved". */
static int
h_solve(kf_call *c, kf_reply *out)
{
    const char *error = NULL, *lang;
    struct access a;
    kf_form f;

    if (wf_ready(c, &error) != KF_OK)
        return kf_reply_internal(out, c, error);
    lang = wf_lang(c, NULL, NULL);
    if (!access_or_answer(c, out, &a, lang))
        return 0;
    const char *purpose = kf_pool_printf(c->pool, "solve:%llu", (unsigned long long)a.ticket_id);
    if (!portal_form(c, out, &a, purpose, lang, &f, NULL))
        return 0;
    struct solve_tx t = {.ticket_id = a.ticket_id};
    if (kf_tx_run(c->db, solve_tx, &t, &error) != KF_OK)
        return kf_reply_internal(out, c, error);
    return wf_redirect(c, out, kf_pool_printf(c->pool, "%s?solved=1", a.base));
}

/* GET .../attachments/{aid} - a file of a public message of this ticket, as a download. */
static int
h_attachment(kf_call *c, kf_reply *out)
{
    const char *error = NULL, *lang;
    struct access a;
    uint64_t aid, size;
    kf_stmt *st;
    int rc;

    if (wf_ready(c, &error) != KF_OK)
        return kf_reply_internal(out, c, error);
    lang = wf_lang(c, NULL, NULL);
    if (!access_or_answer(c, out, &a, lang))
        return 0;
    if (kf_call_param_u64(c, "aid", &aid) != KF_OK)
        return wf_not_found(c, out, lang);
    if ((rc = kf_db_stmt(c->db, "portal.attachment",
                         "SELECT a.filename, a.content_type, a.size FROM attachment a "
                         "JOIN message m ON m.id = a.message_id "
                         "WHERE a.id = ? AND a.ticket_id = ? AND m.kind = 'public'",
                         &st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_stmt_bind_u64(st, 0, aid);
    kf_stmt_bind_u64(st, 1, a.ticket_id);
    if ((rc = kf_stmt_exec(st, &error)) != KF_OK || (rc = kf_stmt_fetch(st, &error)) < 0)
        return kf_reply_internal(out, c, error);
    if (rc == 0)
        return wf_not_found(c, out, lang);
    const char *filename = kf_stmt_col_str(st, 0, c->pool, NULL);
    const char *ctype = kf_stmt_col_str(st, 1, c->pool, NULL);
    size = kf_stmt_col_u64(st, 2);
    kf_stmt_done(st);
    if (size > (uint64_t)SIZE_MAX / 2)
        return kf_reply_internal(out, c, "attachment size out of range");

    char *buf = kf_pool_alloc(c->pool, (size_t)size + 1);
    size_t got = 0;
    if ((rc = kf_db_stmt(c->db, "portal.attachment_chunks",
                         "SELECT data FROM attachment_chunk WHERE attachment_id = ? ORDER BY seq",
                         &st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_stmt_bind_u64(st, 0, aid);
    if ((rc = kf_stmt_exec(st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    while ((rc = kf_stmt_fetch(st, &error)) == 1) {
        kf_pool *tmp = kf_pool_create(KF_ATTACHMENT_CHUNK + 1024);
        size_t n = 0;
        const char *chunk = kf_stmt_col_str(st, 0, tmp, &n);
        if (got + n > size) {
            kf_pool_destroy(&tmp);
            rc = -1;
            error = "attachment chunks are longer than its size";
            break;
        }
        memcpy(buf + got, chunk, n);
        got += n;
        kf_pool_destroy(&tmp);
    }
    kf_stmt_done(st);
    if (rc < 0 || got != size)
        return kf_reply_internal(out, c, error ? error : "attachment chunks are missing");

    out->status = 200;
    out->content_type = ctype ? ctype : "application/octet-stream";
    out->body = buf;
    out->body_len = got;
    kf_reply_header(out, c, "Content-Disposition",
                    kf_attachment_disposition(c->pool, filename ? filename : "attachment"));
    kf_reply_header(out, c, "Content-Security-Policy", "default-src 'none'; sandbox");
    kf_reply_header(out, c, "Referrer-Policy", "no-referrer");
    return 0;
}

/* ---- "My requests" ---- */

static int
signin_page(kf_call *c, kf_reply *out, int status, const char *lang, int explicit_lang,
            const char *mode, const char *email, const char *email_error, const char *magic)
{
    wf_page pg;
    wf_page_init(&pg, c, lang, explicit_lang,
                 magic ? kf_pool_printf(c->pool, "/support/signin/%s", magic)
                       : "/support/requests");
    json_object_set_new(pg.ctx, mode, json_true());
    if (strcmp(mode, "confirm") == 0) {
        json_object_set_new(pg.ctx, "action",
                            json_string(kf_pool_printf(c->pool, "/support/signin/%s", magic)));
        json_object_set_new(pg.ctx, "form_token", json_string(wf_form_token(c, "magic", magic)));
    } else {
        json_object_set_new(pg.ctx, "form_token", json_string(wf_form_token(c, "signin", "")));
    }
    if (email != NULL)
        json_object_set_new(pg.ctx, "email", json_string(email));
    if (email_error != NULL)
        json_object_set_new(pg.ctx, "email_error", json_string(email_error));
    return wf_page_reply(&pg, out, status, "signin", "signin.title");
}

/* GET /support/requests - every ticket of the signed-in customer, or the sign-in form. */
static int
h_requests(kf_call *c, kf_reply *out)
{
    const char *error = NULL, *lang, *session;
    uint64_t customer;
    int explicit_lang, rc;
    kf_stmt *st;
    wf_page pg;

    if (wf_ready(c, &error) != KF_OK)
        return kf_reply_internal(out, c, error);
    lang = wf_lang(c, NULL, &explicit_lang);
    rc = session_get(c, &customer, &session, &error);
    if (rc == KF_ENOTFOUND)
        return signin_page(c, out, 200, lang, explicit_lang, "ask", NULL, NULL, NULL);
    if (rc != KF_OK)
        return kf_reply_internal(out, c, error);

    if ((rc = kf_db_stmt(
             c->db, "portal.requests",
             "SELECT id, subject, status, channel, " KF_TIME_SQL("created_at") ", " KF_TIME_SQL(
                 "updated_at") " FROM ticket "
                               "WHERE customer_id = ? AND merged_into_id IS NULL "
                               "ORDER BY updated_at DESC, id DESC LIMIT 200",
             &st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_stmt_bind_u64(st, 0, customer);
    if ((rc = kf_stmt_exec(st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    json_t *list = json_array();
    while ((rc = kf_stmt_fetch(st, &error)) == 1) {
        uint64_t id = kf_stmt_col_u64(st, 0);
        char number[32], skey[48], ckey[48];
        const char *status = kf_stmt_col_str(st, 2, c->pool, NULL);
        const char *channel = kf_stmt_col_str(st, 3, c->pool, NULL);
        kf_ticket_number(id, number, sizeof(number));
        snprintf(skey, sizeof(skey), "status.%s", status ? status : "");
        snprintf(ckey, sizeof(ckey), "channel.%s", channel ? channel : "");
        json_array_append_new(
            list,
            json_pack("{s:s, s:s?, s:s?, s:s, s:s, s:s, s:s}", "number", number, "subject",
                      kf_stmt_col_str(st, 1, c->pool, NULL), "status", status, "status_label",
                      wf_tr(lang, skey), "channel_label", wf_tr(lang, ckey), "updated",
                      wf_time_display(c->pool, kf_stmt_col_str(st, 5, c->pool, NULL)), "href",
                      kf_pool_printf(c->pool, "/support/requests/%llu", (unsigned long long)id)));
    }
    if (rc < 0) {
        json_decref(list);
        return kf_reply_internal(out, c, error);
    }
    wf_page_init(&pg, c, lang, explicit_lang, "/support/requests");
    json_object_set_new(pg.ctx, "tickets", list);
    json_object_set_new(pg.ctx, "signout_token", json_string(wf_form_token(c, "signout", session)));
    return wf_page_reply(&pg, out, 200, "requests", "requests.title");
}

struct magic_tx {
    const char *email, *hash, *lang, *url, *mailbox;
    uint64_t customer_id;
};

static int
magic_tx(kf_db *db, void *arg, const char **error_r)
{
    struct magic_tx *t = arg;
    char key[64];
    kf_stmt *st;
    int rc;

    if ((rc = kf_db_stmt(db, "portal.magic_add",
                         "INSERT INTO portal_magic (token_hash, customer_id, email, expires_at) "
                         "VALUES (?, ?, ?, NOW(6) + INTERVAL ? SECOND)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->hash);
    kf_stmt_bind_u64(st, 1, t->customer_id);
    kf_stmt_bind_cstr(st, 2, t->email);
    kf_stmt_bind_u64(st, 3, WF_MAGIC_TTL);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    snprintf(key, sizeof(key), "portal-signin:%.32s", t->hash);
    json_t *payload = json_pack("{s:s, s:s, s:s, s:i, s:I}", "template", "portal-signin", "locale",
                                t->lang, "signin_url", t->url, "expires_in_minutes",
                                WF_MAGIC_TTL / 60, "customer_id", (json_int_t)t->customer_id);
    kf_outbox_new row = {
        .kind = "signin",
        .channel = "email",
        .channel_account = t->mailbox,
        .target = t->email,
        .payload = payload,
        .dedupe_key = key,
    };
    rc = kf_outbox_add(db, &row, NULL, error_r);
    json_decref(payload);
    return rc;
}

/*
 * POST /support/signin - mail a sign-in link to a known address.  The
 * answer is the same whether or not the address is known.
 */
static int
h_signin_request(kf_call *c, kf_reply *out)
{
    const kf_config *cfg = c->cfg;
    kf_form_limits lim = reply_limits(cfg);
    const char *error = NULL, *lang, *email, *website, *origin;
    unsigned retry = 0;
    uint64_t customer;
    kf_form f;
    int rc;

    if (wf_ready(c, &error) != KF_OK)
        return kf_reply_internal(out, c, error);
    lim.max_files = 0;
    rc = kf_form_parse(c->pool, kf_call_header(c, "Content-Type"), c->body, c->body_len, &lim, &f,
                       &error);
    lang = wf_lang(c, rc == KF_OK ? kf_form_get(&f, "lang", NULL) : NULL, NULL);
    if (rc != KF_OK)
        return wf_message_page(c, out, f.unsupported ? 415 : 400, lang, "badrequest.title",
                               "badrequest.text");
    if (!wf_origin_allowed(c, &origin) ||
        kf_form_token_check(wf_key(), "signin", "", kf_form_get(&f, "form_token", NULL), wf_now(),
                            WF_TOKEN_MAX_AGE, c->pool, NULL, NULL) != KF_FORM_TOKEN_OK)
        return wf_message_page(c, out, 403, lang, "forbidden.title", "forbidden.text");
    email = kf_form_get(&f, "email", NULL);
    website = kf_form_get(&f, "website", NULL);
    if (website != NULL && website[0] != '\0')
        return signin_page(c, out, 200, lang, 0, "sent", NULL, NULL, NULL);
    if (email == NULL || !kf_customer_email_ok(email))
        return signin_page(c, out, 422, lang, 0, "ask", email,
                           wf_tr(lang, email && *email ? "err.email" : "err.required"), NULL);
    char *lc = kf_pool_strdup(c->pool, email);
    for (char *p = lc; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');

    rc = wf_rate_hit(c->db, kf_pool_printf(c->pool, "signin:ip:%s", c->peer), cfg->webform_rate_ip,
                     cfg->webform_rate_window, &retry, &error);
    if (rc == KF_OK)
        rc = wf_rate_hit(c->db, kf_pool_printf(c->pool, "signin:email:%s", lc),
                         cfg->webform_rate_email, cfg->webform_rate_window, &retry, &error);
    if (rc == KF_EBUSY) {
        wf_message_page(c, out, 429, lang, "ratelimit.title", "ratelimit.text");
        kf_reply_header(out, c, "Retry-After", kf_pool_printf(c->pool, "%u", retry));
        return 0;
    }
    if (rc != KF_OK)
        return kf_reply_internal(out, c, error);
    wf_housekeeping(c->db, cfg);

    rc = kf_customer_find(c->db, "email", lc, &customer, &error);
    if (rc == KF_OK)
        rc = kf_customer_canonical(c->db, customer, &customer, &error);
    if (rc == KF_OK) {
        wf_secret sec;
        wf_secret_new(&sec);
        struct magic_tx t = {
            .email = lc,
            .hash = sec.hash,
            .lang = lang,
            .url = kf_pool_printf(c->pool, "%s/support/signin/%s", wf_base_url(c), sec.token),
            .mailbox = cfg->webform_mailbox,
            .customer_id = customer,
        };
        rc = kf_tx_run(c->db, magic_tx, &t, &error);
    }
    if (rc != KF_OK && rc != KF_ENOTFOUND)
        return kf_reply_internal(out, c, error);
    return signin_page(c, out, 200, lang, 0, "sent", NULL, NULL, NULL);
}

static int
magic_find(kf_call *c, const char *token, const char **error_r)
{
    char hash[65];
    kf_stmt *st;
    int rc;

    if (!wf_token_shape_ok(token))
        return KF_ENOTFOUND;
    kf_auth_token_hash(token, strlen(token), hash);
    if ((rc = kf_db_stmt(c->db, "portal.magic_find",
                         "SELECT 1 FROM portal_magic WHERE token_hash = ? AND used_at IS NULL "
                         "AND expires_at > NOW(6)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, hash);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK || (rc = kf_stmt_fetch(st, error_r)) < 0)
        return rc;
    kf_stmt_done(st);
    return rc == 1 ? KF_OK : KF_ENOTFOUND;
}

/* GET /support/signin/{token} - "continue": a mail scanner's GET must not use the link up. */
static int
h_signin_link(kf_call *c, kf_reply *out)
{
    const char *error = NULL, *lang, *token = kf_call_param(c, "token");
    int explicit_lang, rc;

    if (wf_ready(c, &error) != KF_OK)
        return kf_reply_internal(out, c, error);
    lang = wf_lang(c, NULL, &explicit_lang);
    if ((rc = magic_find(c, token, &error)) == KF_ENOTFOUND)
        return wf_not_found(c, out, lang);
    if (rc != KF_OK)
        return kf_reply_internal(out, c, error);
    return signin_page(c, out, 200, lang, explicit_lang, "confirm", NULL, NULL, token);
}

struct consume_tx {
    const char *hash;
    const char *session_hash;
    uint64_t customer_id;
};

static int
consume_tx(kf_db *db, void *arg, const char **error_r)
{
    struct consume_tx *t = arg;
    kf_stmt *st;
    int rc;

    t->customer_id = 0;
    if ((rc = kf_db_stmt(db, "portal.magic_use",
                         "UPDATE portal_magic SET used_at = NOW(6) WHERE token_hash = ? "
                         "AND used_at IS NULL AND expires_at > NOW(6)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->hash);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if (kf_stmt_affected(st) != 1)
        return KF_ENOTFOUND;
    if ((rc = kf_db_stmt(db, "portal.magic_customer",
                         "SELECT customer_id FROM portal_magic WHERE token_hash = ?", &st,
                         error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->hash);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK || (rc = kf_stmt_fetch(st, error_r)) < 0)
        return rc;
    if (rc == 0)
        return KF_ENOTFOUND;
    uint64_t cust = kf_stmt_col_u64(st, 0);
    kf_stmt_done(st);
    if ((rc = kf_customer_canonical(db, cust, &t->customer_id, error_r)) != KF_OK)
        return rc;
    return wf_portal_token_add(db, "session", t->session_hash, t->customer_id, 0, error_r);
}

static void
session_cookie(kf_call *c, kf_reply *out, const char *value, unsigned max_age)
{
    kf_reply_header(out, c, "Set-Cookie",
                    kf_pool_printf(c->pool,
                                   WF_SESSION_COOKIE "=%s; Path=/support; HttpOnly; "
                                                     "SameSite=Lax; Max-Age=%u%s",
                                   value, max_age, c->cfg->cookie_secure ? "; Secure" : ""));
}

/* POST /support/signin/{token} - use the link: a "My requests" session. */
static int
h_signin_use(kf_call *c, kf_reply *out)
{
    kf_form_limits lim = reply_limits(c->cfg);
    const char *error = NULL, *lang, *token = kf_call_param(c, "token"), *origin, *old;
    struct consume_tx t = {0};
    char hash[65];
    wf_secret sec;
    kf_form f;
    int rc;

    if (wf_ready(c, &error) != KF_OK)
        return kf_reply_internal(out, c, error);
    lim.max_files = 0;
    rc = kf_form_parse(c->pool, kf_call_header(c, "Content-Type"), c->body, c->body_len, &lim, &f,
                       &error);
    lang = wf_lang(c, rc == KF_OK ? kf_form_get(&f, "lang", NULL) : NULL, NULL);
    if (!wf_token_shape_ok(token))
        return wf_not_found(c, out, lang);
    if (rc != KF_OK)
        return wf_message_page(c, out, 400, lang, "badrequest.title", "badrequest.text");
    if (!wf_origin_allowed(c, &origin) ||
        kf_form_token_check(wf_key(), "magic", token, kf_form_get(&f, "form_token", NULL), wf_now(),
                            WF_TOKEN_MAX_AGE, c->pool, NULL, NULL) != KF_FORM_TOKEN_OK)
        return wf_message_page(c, out, 403, lang, "forbidden.title", "forbidden.text");
    kf_auth_token_hash(token, strlen(token), hash);
    wf_secret_new(&sec);
    t.hash = hash;
    t.session_hash = sec.hash;
    if ((rc = kf_tx_run(c->db, consume_tx, &t, &error)) == KF_ENOTFOUND)
        return wf_not_found(c, out, lang);
    if (rc != KF_OK)
        return kf_reply_internal(out, c, error);
    if ((old = wf_cookie(c, WF_SESSION_COOKIE)) != NULL)
        wf_portal_token_revoke(c->db, old, &error);
    wf_redirect(c, out, "/support/requests");
    session_cookie(c, out, sec.token, WF_SESSION_MAX);
    return 0;
}

/* POST /support/signout */
static int
h_signout(kf_call *c, kf_reply *out)
{
    kf_form_limits lim = reply_limits(c->cfg);
    const char *error = NULL, *lang, *session = wf_cookie(c, WF_SESSION_COOKIE), *origin;
    kf_form f;
    int rc;

    if (wf_ready(c, &error) != KF_OK)
        return kf_reply_internal(out, c, error);
    lim.max_files = 0;
    rc = kf_form_parse(c->pool, kf_call_header(c, "Content-Type"), c->body, c->body_len, &lim, &f,
                       &error);
    lang = wf_lang(c, rc == KF_OK ? kf_form_get(&f, "lang", NULL) : NULL, NULL);
    if (rc != KF_OK)
        return wf_message_page(c, out, 400, lang, "badrequest.title", "badrequest.text");
    if (session == NULL)
        return wf_redirect(c, out, "/support/requests");
    if (!wf_origin_allowed(c, &origin) ||
        kf_form_token_check(wf_key(), "signout", session, kf_form_get(&f, "form_token", NULL),
                            wf_now(), WF_TOKEN_MAX_AGE, c->pool, NULL, NULL) != KF_FORM_TOKEN_OK)
        return wf_message_page(c, out, 403, lang, "forbidden.title", "forbidden.text");
    if (wf_portal_token_revoke(c->db, session, &error) != KF_OK)
        return kf_reply_internal(out, c, error);
    wf_redirect(c, out, "/support/requests");
    session_cookie(c, out, "", 0);
    return 0;
}

/* ---- agents: portal links of a ticket ---- */

struct links_tx {
    uint64_t ticket_id, customer_id, agent_id;
    const char *hash; /* NULL: revoke */
    uint64_t revoked;
};

static int
links_tx(kf_db *db, void *arg, const char **error_r)
{
    struct links_tx *t = arg;
    kf_stmt *st;
    json_t *d;
    int rc;

    t->revoked = 0;
    if (t->hash != NULL) {
        if ((rc = wf_portal_token_add(db, "ticket", t->hash, t->customer_id, t->ticket_id,
                                      error_r)) != KF_OK)
            return rc;
        d = json_pack("{s:s}", "via", "api");
        rc = kf_event_add(db, t->ticket_id, "portal.link_created",
                          t->agent_id ? KF_ACTOR_AGENT : KF_ACTOR_SYSTEM, t->agent_id, d, NULL,
                          error_r);
        json_decref(d);
        return rc;
    }
    if ((rc = kf_db_stmt(db, "portal.links_revoke",
                         "UPDATE portal_token SET revoked_at = NOW(6) "
                         "WHERE ticket_id = ? AND kind = 'ticket' AND revoked_at IS NULL",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, t->ticket_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    t->revoked = kf_stmt_affected(st);
    d = json_pack("{s:I}", "count", (json_int_t)t->revoked);
    rc =
        kf_event_add(db, t->ticket_id, "portal.links_revoked",
                     t->agent_id ? KF_ACTOR_AGENT : KF_ACTOR_SYSTEM, t->agent_id, d, NULL, error_r);
    json_decref(d);
    return rc;
}

/*
 * POST /api/v1/tickets/{id}/portal-links - a new access link for the
 * ticket's customer (201 {"url"}); DELETE - revoke every link of the
 * ticket (200 {"revoked": n}).  Tickets the agent may not see are 404.
 */
static int
h_portal_links(kf_call *c, kf_reply *out)
{
    const char *error = NULL;
    struct links_tx t = {.agent_id = c->principal.agent_id};
    kf_ticket tk;
    wf_secret sec;
    int rc;

    if (kf_call_param_u64(c, "id", &t.ticket_id) != KF_OK)
        return kf_reply_problem(out, c, 404, "not-found", "No such ticket.", NULL);
    if ((rc = kf_ticket_get(c->db, c->pool, t.ticket_id, &tk, &error)) == KF_ENOTFOUND ||
        (rc == KF_OK && !kf_auth_queue_allowed(c, tk.queue_id, tk.queue_id != 0)))
        return kf_reply_problem(out, c, 404, "not-found", "No such ticket.", NULL);
    if (rc != KF_OK)
        return kf_reply_internal(out, c, error);
    t.customer_id = tk.customer_id;
    if (c->method == KF_POST) {
        wf_secret_new(&sec);
        t.hash = sec.hash;
    }
    if ((rc = kf_tx_run(c->db, links_tx, &t, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    if (c->method == KF_DELETE)
        return kf_reply_json(out, c, 200, json_pack("{s:I}", "revoked", (json_int_t)t.revoked));
    return kf_reply_json(
        out, c, 201,
        json_pack("{s:s, s:I, s:I}", "url",
                  kf_pool_printf(c->pool, "%s/support/t/%s", wf_base_url(c), sec.token),
                  "ticket_id", (json_int_t)t.ticket_id, "idle_expiry_seconds",
                  (json_int_t)c->cfg->portal_token_idle));
}

const kf_route kf_portal_routes[] = {
    {KF_GET, "/support/t/{token}", KF_AUTH_PUBLIC, 0, h_ticket, 0, NULL},
    {KF_GET, "/support/t/{token}/submitted", KF_AUTH_PUBLIC, 0, h_submitted, 0, NULL},
    {KF_POST, "/support/t/{token}/reply", KF_AUTH_PUBLIC, WF_UPLOAD_MAX_BODY, h_reply, 0, NULL},
    {KF_POST, "/support/t/{token}/solve", KF_AUTH_PUBLIC, 4096, h_solve, 0, NULL},
    {KF_GET, "/support/t/{token}/attachments/{aid}", KF_AUTH_PUBLIC, 0, h_attachment, 0, NULL},
    {KF_GET, "/support/requests", KF_AUTH_PUBLIC, 0, h_requests, 0, NULL},
    {KF_GET, "/support/requests/{id}", KF_AUTH_PUBLIC, 0, h_ticket, 0, NULL},
    {KF_POST, "/support/requests/{id}/reply", KF_AUTH_PUBLIC, WF_UPLOAD_MAX_BODY, h_reply, 0, NULL},
    {KF_POST, "/support/requests/{id}/solve", KF_AUTH_PUBLIC, 4096, h_solve, 0, NULL},
    {KF_GET, "/support/requests/{id}/attachments/{aid}", KF_AUTH_PUBLIC, 0, h_attachment, 0, NULL},
    {KF_POST, "/support/signin", KF_AUTH_PUBLIC, 8192, h_signin_request, 0, NULL},
    {KF_GET, "/support/signin/{token}", KF_AUTH_PUBLIC, 0, h_signin_link, 0, NULL},
    {KF_POST, "/support/signin/{token}", KF_AUTH_PUBLIC, 8192, h_signin_use, 0, NULL},
    {KF_POST, "/support/signout", KF_AUTH_PUBLIC, 8192, h_signout, 0, NULL},
    {KF_POST | KF_DELETE, "/api/v1/tickets/{id}/portal-links", KF_AUTH_AGENT, 0, h_portal_links, 0,
     NULL},
    {0, NULL, 0, 0, NULL, 0, NULL},
};
