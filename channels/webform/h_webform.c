/*
 * h_webform.c - the public web form: the page at /support/new (a plain HTML
 * POST with a redirect, improved by form.js when scripts run), the JSON
 * endpoint /api/v1/public/requests for sites with their own form (JSON,
 * urlencoded or multipart), the form token and knowledge-base hooks of
 * /api/v1/public/..., and the static files of the form and the portal.
 *
 * A submission, whatever its encoding, goes through submit():
 *   1. the form token (CSRF; forged or missing -> 403, expired -> 403 with a
 *      fresh form), 2. the honeypot field, 3. the minimum fill time, 4. the
 *   files (count and size -> 413), 5. the fields (-> 422), 6. the rate
 *   limits per client address and per e-mail address (-> 429), and only then
 *   7. one transaction: kf_ingest (channel "web", identity by e-mail, so the
 *   customer is the one their mail already made), a portal link, and the
 *   acknowledgement for the e-mail channel in the outbox, carrying the link.
 * A submission refused at any step before 7 writes nothing but, from step
 * 6 on, its rate-limit count.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "kefu/attachment.h"
#include "kefu/config.h"
#include "kefu/customer.h"
#include "kefu/db.h"
#include "kefu/http.h"
#include "kefu/ingest.h"
#include "kefu/log.h"
#include "kefu/outbox.h"
#include "kefu/pool.h"
#include "kefu/server.h"
#include "kefu/ticket.h"
#include "webform_internal.h"

#define NAME_CHARS 100
#define SUBJECT_CHARS 80
#define TEXT_CHARS 20000
#define FORM_FIELDS 16
#define JSON_BODY_MAX ((size_t)48 * 1024 * 1024)

/* ---- the submission ---- */

enum outcome {
    SUB_OK,
    SUB_BAD_TOKEN, /* 403 */
    SUB_EXPIRED,   /* 403, the form again */
    SUB_SPAM,      /* honeypot filled */
    SUB_TOO_FAST,  /* under webform_min_fill */
    SUB_TOO_LARGE, /* 413 */
    SUB_INVALID,   /* 422 */
    SUB_RATE,      /* 429 */
    SUB_ERROR,     /* 500 */
};

#define MAX_ERRORS 8

struct sub {
    kf_call *c;
    const char *lang;
    int html; /* the page form (external id from the token's nonce) */
    /* fields */
    const char *name, *email, *subject, *category, *description, *token, *website;
    const char *email_lc; /* as stored in customer_identity */
    kf_inbound_attachment *files;
    size_t n_files;
    const char *idempotency_key;
    /* derived */
    const wf_category *cat;
    const char *nonce;
    struct {
        const char *field, *key;
    } errors[MAX_ERRORS];
    size_t n_errors;
    unsigned retry_after;
    const char *error; /* SUB_ERROR */
    /* the transaction */
    wf_secret secret;
    const char *portal_url;
    kf_ingest_result res;
};

static void
sub_error(struct sub *s, const char *field, const char *key)
{
    if (s->n_errors < MAX_ERRORS) {
        s->errors[s->n_errors].field = field;
        s->errors[s->n_errors].key = key;
        s->n_errors++;
    }
}

static size_t
utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* Trimmed copy with control characters (newlines too) turned into spaces. */
static const char *
one_line(kf_pool *pool, const char *s)
{
    char *out, *b;
    size_t n;
    if (s == NULL)
        return NULL;
    out = kf_pool_strdup(pool, s);
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    b = out;
    while (*b == ' ')
        b++;
    n = strlen(b);
    while (n > 0 && b[n - 1] == ' ')
        b[--n] = '\0';
    return b;
}

/* Trailing and leading blank lines and spaces go; what is left must not be empty. */
static const char *
trim_text(kf_pool *pool, const char *s)
{
    size_t n;
    if (s == NULL)
        return NULL;
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    return kf_pool_strndup(pool, s, n);
}

/* A catalogue message with its {max} / {max_files} / {max_size} filled in. */
static const char *
error_text(kf_call *c, const char *lang, const char *field, const char *key)
{
    const char *t = wf_tr(lang, key), *p;
    const char *max = NULL;
    kf_str s = KF_STR_INIT;

    if (strcmp(key, "err.too_long") == 0)
        max = kf_pool_printf(c->pool, "%u",
                             strcmp(field, "name") == 0      ? NAME_CHARS
                             : strcmp(field, "subject") == 0 ? SUBJECT_CHARS
                                                             : TEXT_CHARS);
    else if (strcmp(key, "err.files_count") == 0)
        max = kf_pool_printf(c->pool, "%u", c->cfg->attachment_max_count);
    else if (strcmp(key, "err.file_size") == 0)
        max = wf_size_text(c->pool, c->cfg->attachment_max_bytes);
    if (max == NULL || (p = strstr(t, "{max}")) == NULL)
        return t;
    kf_str_append(&s, t, (size_t)(p - t));
    kf_str_puts(&s, max);
    kf_str_puts(&s, p + 5);
    const char *r = kf_pool_strndup(c->pool, s.ptr, s.len);
    kf_str_free(&s);
    return r;
}

struct submit_tx {
    struct sub *s;
    kf_inbound in;
};

static int
submit_tx(kf_db *db, void *arg, const char **error_r)
{
    struct submit_tx *t = arg;
    struct sub *s = t->s;
    int rc;

    /* 1. The category's queue (none: routing decides). */
    if ((rc = kf_db_id_by(db, "webform.queue_by_slug", "SELECT id FROM queue WHERE slug = ?",
                          s->cat->slug, &t->in.queue_id, error_r)) != KF_OK)
        return rc;

    /* 2. The ticket, through the one ingest path. */
    if ((rc = kf_ingest_tx(db, &t->in, &s->res, error_r)) != KF_OK)
        return rc;

    /* 3. The portal link (a repeat of the same form gets a link of its own). */
    if ((rc = wf_portal_token_add(db, "ticket", s->secret.hash, s->res.customer_id,
                                  s->res.ticket_id, error_r)) != KF_OK)
        return rc;
    if (s->res.duplicate)
        return KF_OK;

    /* 4. The acknowledgement, for the e-mail channel to deliver. */
    char number[32], key[64];
    kf_ticket_number(s->res.ticket_id, number, sizeof(number));
    snprintf(key, sizeof(key), "webform-ack:%llu", (unsigned long long)s->res.message_id);
    json_t *payload = json_pack(
        "{s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:I}", "template", "webform-ack", "locale",
        s->lang, "ticket_id", (json_int_t)s->res.ticket_id, "number", number, "subject", s->subject,
        "customer_name", s->name, "category", wf_category_label(s->lang, s->cat), "portal_url",
        s->portal_url, "attachments", (json_int_t)s->n_files);
    kf_outbox_new row = {
        .kind = "ack",
        .channel = "email",
        .channel_account = s->c->cfg->webform_mailbox,
        .target = s->email_lc,
        .payload = payload,
        .dedupe_key = key,
        .ticket_id = s->res.ticket_id,
        .message_id = s->res.message_id,
    };
    rc = kf_outbox_add(db, &row, NULL, error_r);
    json_decref(payload);
    return rc;
}

static enum outcome
submit(struct sub *s)
{
    kf_call *c = s->c;
    const kf_config *cfg = c->cfg;
    int64_t issued = 0;
    const char *error = NULL;
    int rc;

    /* 1. The form token. */
    rc = kf_form_token_check(wf_key(), "new", "", s->token, wf_now(), WF_TOKEN_MAX_AGE, c->pool,
                             &issued, &s->nonce);
    if (rc == KF_FORM_TOKEN_EXPIRED)
        return SUB_EXPIRED;
    if (rc != KF_FORM_TOKEN_OK)
        return SUB_BAD_TOKEN;

    /* 2. The honeypot: a field people never see. */
    if (s->website != NULL && s->website[0] != '\0')
        return SUB_SPAM;

    /* 3. Minimum fill time. */
    if (cfg->webform_min_fill > 0 && wf_now() - issued < (int64_t)cfg->webform_min_fill)
        return SUB_TOO_FAST;

    /* 4. Files. */
    if (s->n_files > cfg->attachment_max_count) {
        sub_error(s, "attachments", "err.files_count");
        return SUB_TOO_LARGE;
    }
    for (size_t i = 0; i < s->n_files; i++)
        if (s->files[i].len > cfg->attachment_max_bytes) {
            sub_error(s, "attachments", "err.file_size");
            return SUB_TOO_LARGE;
        }

    /* 5. Fields. */
    s->name = one_line(c->pool, s->name);
    s->subject = one_line(c->pool, s->subject);
    s->email = one_line(c->pool, s->email);
    s->description = trim_text(c->pool, s->description);
    if (s->name == NULL || s->name[0] == '\0')
        sub_error(s, "name", "err.required");
    else if (utf8_chars(s->name) > NAME_CHARS)
        sub_error(s, "name", "err.too_long");
    if (s->email == NULL || s->email[0] == '\0')
        sub_error(s, "email", "err.required");
    else if (!kf_customer_email_ok(s->email))
        sub_error(s, "email", "err.email");
    if (s->subject == NULL || s->subject[0] == '\0')
        sub_error(s, "subject", "err.required");
    else if (utf8_chars(s->subject) > SUBJECT_CHARS)
        sub_error(s, "subject", "err.too_long");
    size_t n_cats;
    const wf_category *cats = wf_categories(&n_cats);
    if ((s->category == NULL || s->category[0] == '\0') && n_cats == 1 && !s->html)
        s->category = cats[0].slug; /* the API may leave out the only choice */
    if (s->category == NULL || s->category[0] == '\0')
        sub_error(s, "category", "err.category");
    else if ((s->cat = wf_category_find(s->category)) == NULL)
        sub_error(s, "category", "err.category");
    if (s->description == NULL || s->description[0] == '\0')
        sub_error(s, "description", "err.required");
    else if (utf8_chars(s->description) > TEXT_CHARS)
        sub_error(s, "description", "err.too_long");
    if (s->n_errors > 0)
        return SUB_INVALID;

    /* 6. Rate limits: per client address, per e-mail address. */
    char *email_lc = kf_pool_strdup(c->pool, s->email);
    for (char *p = email_lc; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    s->email_lc = email_lc;
    rc = wf_rate_hit(c->db, kf_pool_printf(c->pool, "new:ip:%s", c->peer), cfg->webform_rate_ip,
                     cfg->webform_rate_window, &s->retry_after, &error);
    if (rc == KF_OK)
        rc =
            wf_rate_hit(c->db, kf_pool_printf(c->pool, "new:email:%s", email_lc),
                        cfg->webform_rate_email, cfg->webform_rate_window, &s->retry_after, &error);
    if (rc == KF_EBUSY) {
        char shown[96];
        kf_log(KF_LOG_INFO, "webform", "req=%s event=rate-limited peer=%s email=\"%s\"",
               c->request_id, c->peer,
               kf_printable(shown, sizeof(shown), email_lc, strlen(email_lc)));
        return SUB_RATE;
    }
    if (rc != KF_OK) {
        s->error = error;
        return SUB_ERROR;
    }
    wf_housekeeping(c->db, cfg);

    /* 7. One transaction. */
    struct submit_tx t = {.s = s};
    wf_secret_new(&s->secret);
    s->portal_url = kf_pool_printf(c->pool, "%s/support/t/%s", wf_base_url(c), s->secret.token);
    t.in = (kf_inbound){
        .channel = "web",
        .channel_account = "",
        .external_id =
            s->html ? kf_pool_printf(c->pool, "form:%s", s->nonce)
                    : (s->idempotency_key ? kf_pool_printf(c->pool, "api:%s", s->idempotency_key)
                                          : NULL),
        .identity_kind = "email",
        .identity_value = s->email,
        .customer_name = s->name,
        .customer_locale = s->lang,
        .subject = s->subject,
        .text = s->description,
        .text_len = strlen(s->description),
        .attachments = s->files,
        .n_attachments = s->n_files,
    };
    if ((rc = kf_tx_run(c->db, submit_tx, &t, &error)) != KF_OK) {
        if (rc == KF_EINVAL && error != NULL) {
            /* ingest's own validation ("field: detail"): say which field. */
            if (strncmp(error, "identity_value", 14) == 0)
                sub_error(s, "email", "err.email");
            else if (strncmp(error, "attachments", 11) == 0)
                sub_error(s, "attachments", "err.file_size");
            else
                sub_error(s, "description", "err.invalid");
            return SUB_INVALID;
        }
        s->error = error;
        return SUB_ERROR;
    }
    return SUB_OK;
}

/* The file parts of a form as ingest attachments (cleaned names, sniffed types). */
static void
files_from_form(kf_call *c, const kf_form *f, struct sub *s)
{
    s->files = kf_pool_alloc(c->pool, (f->n_files ? f->n_files : 1) * sizeof(*s->files));
    for (size_t i = 0; i < f->n_files; i++) {
        kf_inbound_attachment *a = &s->files[s->n_files++];
        a->filename = kf_attachment_filename_clean(c->pool, f->files[i].filename);
        a->content_type = kf_attachment_sniff(f->files[i].data, f->files[i].len);
        a->data = f->files[i].data;
        a->len = f->files[i].len;
    }
}

static kf_form_limits
form_limits(const kf_config *cfg)
{
    kf_form_limits lim = {
        .max_fields = FORM_FIELDS,
        .max_files = (size_t)cfg->attachment_max_count + 8, /* more: a clear 413 below */
        .max_name = 64,
        .max_value = 4 * TEXT_CHARS + 1024,
        .max_total = WF_UPLOAD_MAX_BODY,
    };
    return lim;
}

/* ---- the page ---- */

struct form_view {
    const char *notice_key; /* a message above the form, or NULL */
    int embed;
};

static int
form_page(kf_call *c, kf_reply *out, int status, const char *lang, int explicit_lang,
          const struct sub *s, const struct form_view *v)
{
    const kf_config *cfg = c->cfg;
    wf_page pg;
    size_t n_cats;
    const wf_category *cats = wf_categories(&n_cats);
    json_t *categories = json_array(), *errors = json_object(), *list = json_array();

    wf_page_init(&pg, c, lang, explicit_lang, v->embed ? "/support/new?embed=1" : "/support/new");
    pg.frame_ancestors = cfg->webform_frame_ancestors;
    for (size_t i = 0; i < n_cats; i++)
        json_array_append_new(categories,
                              json_pack("{s:s, s:s, s:b}", "value", cats[i].slug, "label",
                                        wf_category_label(lang, &cats[i]), "selected",
                                        s && s->category && !strcmp(s->category, cats[i].slug)));
    for (size_t i = 0; s != NULL && i < s->n_errors; i++) {
        const char *msg = error_text(c, lang, s->errors[i].field, s->errors[i].key);
        if (json_object_get(errors, s->errors[i].field) != NULL)
            continue;
        json_object_set_new(errors, s->errors[i].field, json_string(msg));
        json_array_append_new(list,
                              json_pack("{s:s, s:s}", "field", s->errors[i].field, "text", msg));
    }
    json_object_set_new(pg.ctx, "form_token", json_string(wf_form_token(c, "new", "")));
    json_object_set_new(pg.ctx, "embed", json_boolean(v->embed));
    json_object_set_new(pg.ctx, "categories", categories);
    json_object_set_new(pg.ctx, "several_categories", json_boolean(n_cats > 1));
    json_object_set_new(pg.ctx, "errors", errors);
    json_object_set_new(pg.ctx, "has_errors", json_boolean(json_array_size(list) > 0));
    json_object_set_new(pg.ctx, "error_list", list);
    json_object_set_new(pg.ctx, "max_files", json_integer(cfg->attachment_max_count));
    json_object_set_new(pg.ctx, "max_bytes", json_integer(cfg->attachment_max_bytes));
    json_object_set_new(pg.ctx, "max_size",
                        json_string(wf_size_text(c->pool, cfg->attachment_max_bytes)));
    json_object_set_new(pg.ctx, "max_name", json_integer(NAME_CHARS));
    json_object_set_new(pg.ctx, "max_subject", json_integer(SUBJECT_CHARS));
    json_object_set_new(pg.ctx, "max_text", json_integer(TEXT_CHARS));
    json_object_set_new(pg.ctx, "attachments_allowed", json_boolean(cfg->attachment_max_count > 0));
    if (v->notice_key != NULL)
        json_object_set_new(pg.ctx, "notice", json_string(wf_tr(lang, v->notice_key)));
    if (s != NULL)
        json_object_set_new(pg.ctx, "values",
                            json_pack("{s:s?, s:s?, s:s?, s:s?}", "name", s->name, "email",
                                      s->email, "subject", s->subject, "description",
                                      s->description));
    return wf_page_reply(&pg, out, status, "new", "form.title");
}

static int
not_ready(kf_call *c, kf_reply *out, const char *error)
{
    return kf_reply_internal(out, c, error ? error : "web form assets not loaded");
}

/* GET /support -> the form. */
static int
h_support_root(kf_call *c, kf_reply *out)
{
    return wf_redirect(c, out, "/support/new");
}

/* GET /support/new - the empty form. */
static int
h_form_get(kf_call *c, kf_reply *out)
{
    const char *error = NULL, *embed = kf_call_query(c, "embed");
    struct form_view v = {.embed = embed != NULL && strcmp(embed, "1") == 0};
    int explicit_lang;
    const char *lang;

    if (wf_ready(c, &error) != KF_OK)
        return not_ready(c, out, error);
    lang = wf_lang(c, NULL, &explicit_lang);
    return form_page(c, out, 200, lang, explicit_lang, NULL, &v);
}

/* POST /support/new - the form, posted by a browser (scripts on or off). */
static int
h_form_post(kf_call *c, kf_reply *out)
{
    kf_form_limits lim = form_limits(c->cfg);
    const char *error = NULL, *lang, *origin;
    struct sub s;
    struct form_view v = {0};
    kf_form f;
    int rc;

    if (wf_ready(c, &error) != KF_OK)
        return not_ready(c, out, error);
    rc = kf_form_parse(c->pool, kf_call_header(c, "Content-Type"), c->body, c->body_len, &lim, &f,
                       &error);
    lang = wf_lang(c, rc == KF_OK ? kf_form_get(&f, "lang", NULL) : NULL, NULL);
    if (rc != KF_OK) {
        if (f.too_large)
            return wf_message_page(c, out, 413, lang, "toolarge.title", "toolarge.text");
        return wf_message_page(c, out, f.unsupported ? 415 : 400, lang, "badrequest.title",
                               "badrequest.text");
    }
    if (!wf_origin_allowed(c, &origin))
        return wf_message_page(c, out, 403, lang, "forbidden.title", "forbidden.text");

    memset(&s, 0, sizeof(s));
    s.c = c;
    s.lang = lang;
    s.html = 1;
    s.name = kf_form_get(&f, "name", NULL);
    s.email = kf_form_get(&f, "email", NULL);
    s.subject = kf_form_get(&f, "subject", NULL);
    s.category = kf_form_get(&f, "category", NULL);
    s.description = kf_form_get(&f, "description", NULL);
    s.token = kf_form_get(&f, "form_token", NULL);
    s.website = kf_form_get(&f, "website", NULL);
    const char *embed = kf_form_get(&f, "embed", NULL);
    v.embed = embed != NULL && strcmp(embed, "1") == 0;
    files_from_form(c, &f, &s);

    switch (submit(&s)) {
    case SUB_OK:
        break;
    case SUB_BAD_TOKEN:
        return wf_message_page(c, out, 403, lang, "forbidden.title", "forbidden.text");
    case SUB_EXPIRED:
        v.notice_key = "notice.expired";
        return form_page(c, out, 403, lang, 0, &s, &v);
    case SUB_SPAM:
        return wf_message_page(c, out, 400, lang, "rejected.title", "rejected.text");
    case SUB_TOO_FAST:
        v.notice_key = "notice.too_fast";
        return form_page(c, out, 422, lang, 0, &s, &v);
    case SUB_TOO_LARGE:
        v.notice_key = "notice.files_again";
        return form_page(c, out, 413, lang, 0, &s, &v);
    case SUB_INVALID:
        if (s.n_files > 0)
            v.notice_key = "notice.files_again";
        return form_page(c, out, 422, lang, 0, &s, &v);
    case SUB_RATE: {
        int r = wf_message_page(c, out, 429, lang, "ratelimit.title", "ratelimit.text");
        kf_reply_header(out, c, "Retry-After", kf_pool_printf(c->pool, "%u", s.retry_after));
        return r;
    }
    case SUB_ERROR:
        return kf_reply_internal(out, c, s.error);
    }
    return wf_redirect(c, out,
                       kf_pool_printf(c->pool, "/support/t/%s/submitted%s", s.secret.token,
                                      v.embed ? "?embed=1" : ""));
}

/* ---- the JSON API ---- */

static int
preflight(kf_call *c, kf_reply *out, const char *methods)
{
    const char *origin;
    if (!wf_origin_allowed(c, &origin))
        return kf_reply_problem(out, c, 403, "origin-not-allowed",
                                "This origin may not call the public API (webform_cors_origins).",
                                NULL);
    kf_reply_text(out, c, 204, "text/plain", "", 0);
    wf_cors_headers(c, out, origin);
    kf_reply_header(out, c, "Access-Control-Allow-Methods", methods);
    kf_reply_header(out, c, "Access-Control-Allow-Headers", "Content-Type, Idempotency-Key");
    kf_reply_header(out, c, "Access-Control-Max-Age", "600");
    return 0;
}

/* Common to the public API's answers: refuse foreign origins, add CORS headers. */
static int
api_origin(kf_call *c, kf_reply *out, const char **origin_r)
{
    if (!wf_origin_allowed(c, origin_r)) {
        kf_reply_problem(out, c, 403, "origin-not-allowed",
                         "This origin may not call the public API (webform_cors_origins).", NULL);
        return 0;
    }
    return 1;
}

static int
api_reply(kf_call *c, kf_reply *out, const char *origin)
{
    wf_cors_headers(c, out, origin);
    return 0;
}

/* JSON: {"attachments": [{"filename": "a.png", "content_base64": "..."}]} */
static int
json_files(kf_call *c, json_t *arr, struct sub *s, json_t **errors)
{
    size_t i, n;
    json_t *el;

    if (arr == NULL)
        return 1;
    if (!json_is_array(arr)) {
        kf_problem_add_error(errors, "attachments", "must be an array");
        return 1;
    }
    n = json_array_size(arr);
    s->files = kf_pool_alloc(c->pool, (n ? n : 1) * sizeof(*s->files));
    json_array_foreach(arr, i, el)
    {
        const char *fn = json_string_value(json_object_get(el, "filename"));
        const char *b64 = json_string_value(json_object_get(el, "content_base64"));
        size_t blen = b64 ? strlen(b64) : 0, bin_len = 0;
        if (!json_is_object(el) || fn == NULL || b64 == NULL) {
            kf_problem_add_error(errors, "attachments",
                                 "each item needs filename and content_base64 strings");
            return 1;
        }
        if (blen / 4 * 3 > (size_t)c->cfg->attachment_max_bytes + 3) {
            sub_error(s, "attachments", "err.file_size");
            return 0;
        }
        unsigned char *bin = kf_pool_alloc(c->pool, blen / 4 * 3 + 3);
        if (sodium_base642bin(bin, blen / 4 * 3 + 3, b64, blen, "\r\n", &bin_len, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0) {
            kf_problem_add_error(errors, "attachments", "content_base64 is not valid base64");
            return 1;
        }
        kf_inbound_attachment *a = &s->files[s->n_files++];
        a->filename = kf_attachment_filename_clean(c->pool, fn);
        a->content_type = kf_attachment_sniff(bin, bin_len);
        a->data = bin;
        a->len = bin_len;
    }
    return 1;
}

static int
api_parse_json(kf_call *c, kf_reply *out, struct sub *s, json_t **errors)
{
    static const char *const allowed[] = {"name",        "email",      "subject", "category",
                                          "description", "form_token", "website", "lang",
                                          "attachments", NULL};
    static const char *const strings[] = {"name",        "email",      "subject", "category",
                                          "description", "form_token", "website", "lang"};
    const char *lang = NULL;
    const char **dst[] = {&s->name,        &s->email, &s->subject, &s->category,
                          &s->description, &s->token, &s->website, &lang};
    json_t *root;

    (void)out; /* kf_call_json_object() fills c->reply, which is *out, on failure */
    if (kf_call_json_object(c, &root) != KF_OK)
        return 0;
    kf_json_unknown_fields(root, allowed, errors);
    for (size_t i = 0; i < KF_ARRAY_LEN(strings); i++)
        kf_json_get_str(root, strings[i], 0, 4 * TEXT_CHARS + 1024, dst[i], errors);
    if (lang != NULL && kf_webform_lang_match(lang, strlen(lang)) != NULL)
        s->lang = kf_webform_lang_match(lang, strlen(lang));
    return json_files(c, json_object_get(root, "attachments"), s, errors) ? 1 : 2;
}

static int
api_parse_form(kf_call *c, kf_reply *out, struct sub *s, json_t **errors)
{
    static const char *const known[] = {"name",     "email",       "subject",
                                        "category", "description", "form_token",
                                        "website",  "lang",        "embed"};
    kf_form_limits lim = form_limits(c->cfg);
    const char *error = NULL, *lang;
    kf_form f;
    int rc;

    rc = kf_form_parse(c->pool, kf_call_header(c, "Content-Type"), c->body, c->body_len, &lim, &f,
                       &error);
    if (rc != KF_OK) {
        if (f.unsupported)
            kf_reply_problem(out, c, 415, "unsupported-media-type",
                             "Send application/json, application/x-www-form-urlencoded or "
                             "multipart/form-data.",
                             NULL);
        else if (f.too_large)
            kf_reply_problem(out, c, 413, "payload-too-large",
                             kf_pool_printf(c->pool, "The form is too large: %s.", error), NULL);
        else
            kf_reply_problem(out, c, 400, "bad-form",
                             kf_pool_printf(c->pool, "The form body is malformed: %s.", error),
                             NULL);
        return 0;
    }
    for (size_t i = 0; i < f.n_fields; i++) {
        int ok = 0;
        size_t count = 0;
        for (size_t k = 0; k < KF_ARRAY_LEN(known) && !ok; k++)
            ok = strcmp(known[k], f.fields[i].name) == 0;
        if (!ok)
            kf_problem_add_error(errors, f.fields[i].name, "unknown field");
        else if (kf_form_get(&f, f.fields[i].name, &count) && count > 1 &&
                 kf_form_get(&f, f.fields[i].name, NULL) == f.fields[i].value)
            kf_problem_add_error(errors, f.fields[i].name, "given more than once");
    }
    s->name = kf_form_get(&f, "name", NULL);
    s->email = kf_form_get(&f, "email", NULL);
    s->subject = kf_form_get(&f, "subject", NULL);
    s->category = kf_form_get(&f, "category", NULL);
    s->description = kf_form_get(&f, "description", NULL);
    s->token = kf_form_get(&f, "form_token", NULL);
    s->website = kf_form_get(&f, "website", NULL);
    if ((lang = kf_form_get(&f, "lang", NULL)) != NULL &&
        kf_webform_lang_match(lang, strlen(lang)) != NULL)
        s->lang = kf_webform_lang_match(lang, strlen(lang));
    files_from_form(c, &f, s);
    return 1;
}

static int
is_json(const char *ct)
{
    if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0)
        return 0;
    return ct[16] == '\0' || ct[16] == ';' || ct[16] == ' ';
}

/*
 * POST /api/v1/public/requests - a request from another site's form:
 * JSON, urlencoded or multipart.  201 {"number", "status", "portal_url"}.
 */
static int
h_api_request(kf_call *c, kf_reply *out)
{
    const char *error = NULL, *origin = NULL, *idem = kf_call_header(c, "Idempotency-Key");
    json_t *errors = NULL;
    struct sub s;
    int rc;

    if (c->method == KF_OPTIONS)
        return preflight(c, out, "POST, OPTIONS");
    if (wf_ready(c, &error) != KF_OK)
        return not_ready(c, out, error);
    if (!api_origin(c, out, &origin))
        return 0;

    memset(&s, 0, sizeof(s));
    s.c = c;
    s.lang = wf_lang(c, NULL, NULL);
    if (idem != NULL) {
        size_t n = strlen(idem);
        if (n == 0 || n > 200 || !kf_ticket_utf8_ok(idem, n))
            kf_problem_add_error(&errors, "Idempotency-Key", "1..200 bytes of UTF-8");
        s.idempotency_key = idem;
    }
    rc = is_json(kf_call_header(c, "Content-Type")) ? api_parse_json(c, out, &s, &errors)
                                                    : api_parse_form(c, out, &s, &errors);
    if (rc == 0)
        return api_reply(c, out, origin);
    if (rc == 2) {
        json_decref(errors);
        kf_reply_problem(out, c, 413, "payload-too-large",
                         error_text(c, "en", "attachments", "err.file_size"), NULL);
        return api_reply(c, out, origin);
    }
    if (errors != NULL) {
        kf_reply_invalid(out, c, errors);
        return api_reply(c, out, origin);
    }

    switch (submit(&s)) {
    case SUB_OK:
        break;
    case SUB_BAD_TOKEN:
        kf_reply_problem(out, c, 403, "bad-form-token",
                         "form_token is missing or not valid; get one from "
                         "GET /api/v1/public/form.",
                         NULL);
        return api_reply(c, out, origin);
    case SUB_EXPIRED:
        kf_reply_problem(out, c, 403, "form-token-expired",
                         "form_token has expired; get a fresh one from GET /api/v1/public/form.",
                         NULL);
        return api_reply(c, out, origin);
    case SUB_SPAM:
    case SUB_TOO_FAST:
        kf_reply_problem(out, c, 422, "rejected", "The submission was rejected as automated.",
                         NULL);
        return api_reply(c, out, origin);
    case SUB_TOO_LARGE:
        kf_reply_problem(out, c, 413, "payload-too-large",
                         error_text(c, "en", s.errors[0].field, s.errors[0].key), NULL);
        return api_reply(c, out, origin);
    case SUB_INVALID:
        for (size_t i = 0; i < s.n_errors; i++)
            kf_problem_add_error(&errors, s.errors[i].field,
                                 error_text(c, "en", s.errors[i].field, s.errors[i].key));
        kf_reply_invalid(out, c, errors);
        return api_reply(c, out, origin);
    case SUB_RATE:
        kf_reply_problem(out, c, 429, "rate-limited",
                         "Too many requests from this address or for this e-mail address; "
                         "retry later.",
                         NULL);
        kf_reply_header(out, c, "Retry-After", kf_pool_printf(c->pool, "%u", s.retry_after));
        return api_reply(c, out, origin);
    case SUB_ERROR:
        kf_reply_internal(out, c, s.error);
        return api_reply(c, out, origin);
    }
    char number[32];
    kf_ticket_number(s.res.ticket_id, number, sizeof(number));
    kf_reply_json(out, c, s.res.duplicate ? 200 : 201,
                  json_pack("{s:s, s:s, s:s, s:b}", "number", number, "status", "new", "portal_url",
                            s.portal_url, "duplicate", s.res.duplicate));
    return api_reply(c, out, origin);
}

/* GET /api/v1/public/form - a form token, the categories and the limits. */
static int
h_api_form(kf_call *c, kf_reply *out)
{
    const char *error = NULL, *origin = NULL, *lang;
    size_t n_cats;
    const wf_category *cats;
    json_t *list;

    if (c->method == KF_OPTIONS)
        return preflight(c, out, "GET, OPTIONS");
    if (wf_ready(c, &error) != KF_OK)
        return not_ready(c, out, error);
    if (!api_origin(c, out, &origin))
        return 0;
    lang = wf_lang(c, NULL, NULL);
    cats = wf_categories(&n_cats);
    list = json_array();
    for (size_t i = 0; i < n_cats; i++)
        json_array_append_new(list, json_pack("{s:s, s:s}", "value", cats[i].slug, "label",
                                              wf_category_label(lang, &cats[i])));
    kf_reply_json(out, c, 200,
                  json_pack("{s:s, s:i, s:s, s:o, s:i, s:i, s:i, s:{s:i, s:i, s:i}}", "form_token",
                            wf_form_token(c, "new", ""), "expires_in", WF_TOKEN_MAX_AGE, "lang",
                            lang, "categories", list, "min_fill_seconds",
                            (int)c->cfg->webform_min_fill, "max_files",
                            (int)c->cfg->attachment_max_count, "max_file_bytes",
                            (int)c->cfg->attachment_max_bytes, "max_chars", "name", NAME_CHARS,
                            "subject", SUBJECT_CHARS, "description", TEXT_CHARS));
    return api_reply(c, out, origin);
}

/*
 * GET /api/v1/public/kb/suggest?q= - knowledge-base articles related to a
 * subject being typed.  The knowledge base does not exist yet: always an
 * empty list, with the shape its items will have.
 */
static int
h_api_kb_suggest(kf_call *c, kf_reply *out)
{
    const char *q = kf_call_query(c, "q"), *origin = NULL;
    json_t *errors = NULL;

    if (c->method == KF_OPTIONS)
        return preflight(c, out, "GET, OPTIONS");
    if (!api_origin(c, out, &origin))
        return 0;
    if (q != NULL && (strlen(q) > 200 || !kf_ticket_utf8_ok(q, strlen(q))))
        kf_problem_add_error(&errors, "q", "at most 200 bytes of UTF-8");
    if (errors != NULL) {
        kf_reply_invalid(out, c, errors);
        return api_reply(c, out, origin);
    }
    kf_reply_json(out, c, 200, json_pack("{s:s, s:[]}", "q", q ? q : "", "items"));
    return api_reply(c, out, origin);
}

/* ---- static files ---- */

static int
send_asset(kf_call *c, kf_reply *out, const char *name)
{
    const char *error = NULL;
    const wf_asset *a;

    if (wf_ready(c, &error) != KF_OK)
        return not_ready(c, out, error);
    if (name == NULL || (a = wf_static(name)) == NULL)
        return kf_reply_problem(out, c, 404, "not-found", "No such file.", NULL);
    out->status = 200;
    out->content_type = a->ctype;
    out->body = a->data; /* lives until exit: no copy */
    out->body_len = a->len;
    kf_reply_header(out, c, "Cross-Origin-Resource-Policy",
                    strcmp(name, "embed.js") == 0 ? "cross-origin" : "same-origin");
    return 0;
}

/* GET /support/static/{name} - the stylesheet and scripts of the pages. */
static int
h_static(kf_call *c, kf_reply *out)
{
    const char *name = kf_call_param(c, "name");
    if (name != NULL && strcmp(name, "embed.js") == 0)
        name = NULL; /* served at its own address */
    return send_asset(c, out, name);
}

/* GET /support/embed.js - renders the form inside another site (an iframe). */
static int
h_embed_js(kf_call *c, kf_reply *out)
{
    return send_asset(c, out, "embed.js");
}

const kf_route kf_webform_routes[] = {
    {KF_GET, "/support", KF_AUTH_PUBLIC, 0, h_support_root, 0, NULL},
    {KF_GET, "/support/new", KF_AUTH_PUBLIC, 0, h_form_get, 0, NULL},
    {KF_POST, "/support/new", KF_AUTH_PUBLIC, WF_UPLOAD_MAX_BODY, h_form_post, 0, NULL},
    {KF_GET, "/support/static/{name}", KF_AUTH_PUBLIC, 0, h_static, 0, NULL},
    {KF_GET, "/support/embed.js", KF_AUTH_PUBLIC, 0, h_embed_js, 0, NULL},
    {KF_GET | KF_OPTIONS, "/api/v1/public/form", KF_AUTH_PUBLIC, 0, h_api_form, 0, NULL},
    {KF_POST | KF_OPTIONS, "/api/v1/public/requests", KF_AUTH_PUBLIC, JSON_BODY_MAX, h_api_request,
     0, NULL},
    {KF_GET | KF_OPTIONS, "/api/v1/public/kb/suggest", KF_AUTH_PUBLIC, 0, h_api_kb_suggest, 0,
     NULL},
    {0, NULL, 0, 0, NULL, 0, NULL},
};
