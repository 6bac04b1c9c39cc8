/*
 * h_attachments.c - files on tickets over HTTP: upload (multipart/form-data)
 * and download.
 *
 * Limits: each file at most attachment_max_bytes, at most
 * attachment_max_count files per upload (413 problem+json, nothing stored).
 * The route accepts bodies up to UPLOAD_MAX_BODY, but evhttp refuses any
 * body over http_max_body (10 MiB by default) before a handler runs, with
 * its own plain 413: raise http_max_body to accept larger uploads.
 *
 * An agent uploads to and downloads from tickets of their queues only; any
 * other ticket (or attachment of one) is 404, as if it did not exist.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kefu/attachment.h"
#include "kefu/auth.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/event.h"
#include "kefu/http.h"
#include "kefu/multipart.h"
#include "kefu/pool.h"
#include "kefu/server.h"
#include "kefu/ticket.h"

#define UPLOAD_MAX_BODY ((size_t) 64 * 1024 * 1024)
#define UPLOAD_MAX_FIELDS 8         /* parts that are not files */
#define UPLOAD_HEADER_MAX 8192      /* one part's header block */

#define ATTACHMENT_COLS                                                                            \
    "SELECT a.id, a.ticket_id, a.message_id, a.filename, a.content_type, a.size, a.sha256, "       \
    " DATE_FORMAT(a.created_at, '%Y-%m-%dT%H:%i:%s.%fZ'), t.queue_id "                           \
    "FROM attachment a JOIN ticket t ON t.id = a.ticket_id "

/* Ticket exists and the caller may see it: KF_OK, KF_ENOTFOUND (also when hidden). */
static int
ticket_visible(kf_call *c, uint64_t ticket_id, const char **error_r)
{
    kf_stmt *st;
    int rc;
    if ((rc = kf_db_stmt(c->db, "attachment.ticket", "SELECT queue_id FROM ticket WHERE id = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, ticket_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_stmt_fetch(st, error_r)) != 1)
        return rc < 0 ? rc : KF_ENOTFOUND;
    int has_queue = !kf_stmt_col_null(st, 0);
    uint64_t queue_id = kf_stmt_col_u64(st, 0);
    kf_stmt_done(st);
    return kf_auth_queue_allowed(c, queue_id, has_queue) ? KF_OK : KF_ENOTFOUND;
}

static json_t *
attachment_json(kf_stmt *st, kf_pool *pool)
{
    uint64_t id = kf_stmt_col_u64(st, 0);
    return json_pack("{s:I, s:I, s:o, s:s?, s:s?, s:I, s:s?, s:s?, s:s}", "id", (json_int_t) id,
                     "ticket_id", (json_int_t) kf_stmt_col_u64(st, 1), "message_id",
                     kf_stmt_col_null(st, 2) ? json_null()
                                             : json_integer((json_int_t) kf_stmt_col_u64(st, 2)),
                     "filename", kf_stmt_col_str(st, 3, pool, NULL), "content_type",
                     kf_stmt_col_str(st, 4, pool, NULL), "size",
                     (json_int_t) kf_stmt_col_u64(st, 5), "sha256",
                     kf_stmt_col_str(st, 6, pool, NULL), "created_at",
                     kf_stmt_col_str(st, 7, pool, NULL), "url",
                     kf_pool_printf(pool, "/api/v1/attachments/%llu", (unsigned long long) id));
}

/* One file of an upload, checked and ready to store. */
typedef struct upload_file {
    const char *filename, *content_type;
    const unsigned char *data;
    size_t len;
    uint64_t id; /* out */
} upload_file;

struct upload_tx {
    uint64_t ticket_id, message_id, agent_id;
    upload_file *files;
    size_t n;
};

static int
upload_tx(kf_db *db, void *arg, const char **error_r)
{
    struct upload_tx *t = arg;
    kf_stmt *st;
    int rc;

    /* Lock the ticket row: uploads serialize with other changes to it. */
    if ((rc = kf_db_stmt(db, "attachment.lock_ticket",
                         "SELECT id FROM ticket WHERE id = ? FOR UPDATE", &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, t->ticket_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_stmt_fetch(st, error_r)) != 1)
        return rc < 0 ? rc : KF_ENOTFOUND;
    kf_stmt_done(st);
    if (t->message_id) {
        if ((rc = kf_db_stmt(db, "attachment.message",
                             "SELECT 1 FROM message WHERE id = ? AND ticket_id = ?", &st,
                             error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, t->message_id);
        kf_stmt_bind_u64(st, 1, t->ticket_id);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        if ((rc = kf_stmt_fetch(st, error_r)) != 1) {
            *error_r = "message";
            return rc < 0 ? rc : KF_EINVAL;
        }
        kf_stmt_done(st);
    }
    for (size_t i = 0; i < t->n; i++) {
        upload_file *f = &t->files[i];
        if ((rc = kf_ticket_add_attachment(db, t->ticket_id, t->message_id, f->filename,
                                           f->content_type, NULL, f->data, f->len, &f->id,
                                           error_r)) != KF_OK)
            return rc;
        json_t *data = json_pack("{s:I, s:s, s:s, s:I}", "attachment_id", (json_int_t) f->id,
                                 "filename", f->filename, "content_type", f->content_type, "size",
                                 (json_int_t) f->len);
        rc = kf_event_add(db, t->ticket_id, "attachment.added",
                          t->agent_id ? KF_ACTOR_AGENT : KF_ACTOR_SYSTEM, t->agent_id, data, NULL,
                          error_r);
        json_decref(data);
        if (rc != KF_OK)
            return rc;
    }
    return KF_OK;
}

static int
too_large(kf_reply *out, kf_call *c, const char *detail)
{
    return kf_reply_problem(out, c, 413, "payload-too-large", detail, NULL);
}

/*
 * POST /api/v1/tickets/{id}/attachments - multipart/form-data; every part
 * with a filename is a file; an optional field "message_id" ties them to a
 * message of the ticket.  201 {"items": [attachment, ...]}.
 */
static int
h_attachment_upload(kf_call *c, kf_reply *out)
{
    const kf_config *cfg = c->cfg;
    kf_mp_limits lim = {.max_parts = (size_t) cfg->attachment_max_count + UPLOAD_MAX_FIELDS,
                        .max_header_bytes = UPLOAD_HEADER_MAX,
                        .max_total = UPLOAD_MAX_BODY};
    struct upload_tx t = {.agent_id = c->principal.agent_id};
    const char *error = NULL, *ctype = kf_call_header(c, "Content-Type"), *boundary;
    json_t *errors = NULL;
    kf_multipart mp;
    kf_stmt *st;
    int rc;

    if (kf_call_param_u64(c, "id", &t.ticket_id) != KF_OK)
        return kf_reply_problem(out, c, 404, "not-found", "No such ticket.", NULL);
    if ((rc = ticket_visible(c, t.ticket_id, &error)) == KF_ENOTFOUND)
        return kf_reply_problem(out, c, 404, "not-found", "No such ticket.", NULL);
    if (rc != KF_OK)
        return kf_reply_internal(out, c, error);
    if (kf_multipart_boundary(c->pool, ctype, &boundary, &error) != KF_OK) {
        if (ctype != NULL && strncasecmp(ctype, "multipart/form-data", 19) == 0)
            return kf_reply_problem(out, c, 400, "bad-multipart",
                                    kf_pool_printf(c->pool, "Bad multipart Content-Type: %s.",
                                                   error),
                                    NULL);
        return kf_reply_problem(out, c, 415, "unsupported-media-type",
                                "Upload files as multipart/form-data.", NULL);
    }
    if (kf_multipart_parse(c->pool, ctype, c->body, c->body_len, &lim, &mp, &error) != KF_OK) {
        if (mp.too_large)
            return too_large(out, c, kf_pool_printf(c->pool, "The upload is too large: %s.",
                                                    error));
        return kf_reply_problem(out, c, 400, "bad-multipart",
                                kf_pool_printf(c->pool, "The multipart body is malformed: %s.",
                                               error),
                                NULL);
    }

    /* Sort the parts: files, and the one field we know. */
    t.files = kf_pool_alloc(c->pool, (mp.n_parts ? mp.n_parts : 1) * sizeof(*t.files));
    for (size_t i = 0; i < mp.n_parts; i++) {
        const kf_mp_part *p = &mp.parts[i];
        if (p->filename != NULL) {
            if (t.n == cfg->attachment_max_count) {
                return too_large(out, c, kf_pool_printf(c->pool, "At most %u files per upload.",
                                                        cfg->attachment_max_count));
            }
            if (p->len > cfg->attachment_max_bytes)
                return too_large(out, c, kf_pool_printf(c->pool, "\"%s\" is %zu bytes; a file "
                                                        "may have at most %u.",
                                                        kf_attachment_filename_clean(c->pool,
                                                                                     p->filename),
                                                        p->len, cfg->attachment_max_bytes));
            upload_file *f = &t.files[t.n++];
            f->data = (const unsigned char *) p->data;
            f->len = p->len;
            f->filename = kf_attachment_filename_clean(c->pool, p->filename);
            f->content_type = kf_attachment_sniff(f->data, f->len);
        } else if (strcmp(p->name, "message_id") == 0) {
            char *v = kf_pool_strndup(c->pool, p->data, p->len);
            char *end = NULL;
            unsigned long long id = strtoull(v, &end, 10);
            if (p->len == 0 || p->len > 19 || *end != '\0' || v[0] < '0' || v[0] > '9' || id == 0)
                kf_problem_add_error(&errors, "message_id", "a message id of this ticket");
            t.message_id = id;
        } else {
            kf_problem_add_error(&errors, p->name, "unknown field (files need a filename)");
        }
    }
    if (t.n == 0)
        kf_problem_add_error(&errors, "file", "at least one file part (with a filename)");
    if (errors != NULL)
        return kf_reply_invalid(out, c, errors);

    switch ((rc = kf_tx_run(c->db, upload_tx, &t, &error))) {
    case KF_OK:
        break;
    case KF_ENOTFOUND:
        return kf_reply_problem(out, c, 404, "not-found", "No such ticket.", NULL);
    case KF_EINVAL:
        kf_problem_add_error(&errors, "message_id", "not a message of this ticket");
        return kf_reply_invalid(out, c, errors);
    default:
        return kf_reply_internal(out, c, error);
    }

    json_t *items = json_array();
    if ((rc = kf_db_stmt(c->db, "attachment.get", ATTACHMENT_COLS "WHERE a.id = ?", &st,
                         &error)) != KF_OK) {
        json_decref(items);
        return kf_reply_internal(out, c, error);
    }
    for (size_t i = 0; i < t.n; i++) {
        kf_stmt_bind_u64(st, 0, t.files[i].id);
        if ((rc = kf_stmt_exec(st, &error)) != KF_OK || (rc = kf_stmt_fetch(st, &error)) != 1) {
            json_decref(items);
            return kf_reply_internal(out, c, error ? error : "attachment vanished");
        }
        json_array_append_new(items, attachment_json(st, c->pool));
        kf_stmt_done(st);
    }
    return kf_reply_json(out, c, 201, json_pack("{s:o}", "items", items));
}

/* GET /api/v1/attachments/{id} - the bytes, as a download. */
static int
h_attachment_download(kf_call *c, kf_reply *out)
{
    const char *error = NULL;
    uint64_t id, size;
    kf_stmt *st;
    int rc;

    if (kf_call_param_u64(c, "id", &id) != KF_OK)
        return kf_reply_problem(out, c, 404, "not-found", "No such attachment.", NULL);
    if ((rc = kf_db_stmt(c->db, "attachment.get", ATTACHMENT_COLS "WHERE a.id = ?", &st,
                         &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_stmt_bind_u64(st, 0, id);
    if ((rc = kf_stmt_exec(st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    if ((rc = kf_stmt_fetch(st, &error)) != 1) {
        if (rc < 0)
            return kf_reply_internal(out, c, error);
        return kf_reply_problem(out, c, 404, "not-found", "No such attachment.", NULL);
    }
    const char *filename = kf_stmt_col_str(st, 3, c->pool, NULL);
    const char *ctype = kf_stmt_col_str(st, 4, c->pool, NULL);
    const char *sha = kf_stmt_col_str(st, 6, c->pool, NULL);
    int has_queue = !kf_stmt_col_null(st, 8);
    uint64_t queue_id = kf_stmt_col_u64(st, 8);
    size = kf_stmt_col_u64(st, 5);
    kf_stmt_done(st);
    if (!kf_auth_queue_allowed(c, queue_id, has_queue))
        return kf_reply_problem(out, c, 404, "not-found", "No such attachment.", NULL);
    if (size > (uint64_t) SIZE_MAX / 2)
        return kf_reply_internal(out, c, "attachment size out of range");

    char *buf = kf_pool_alloc(c->pool, (size_t) size + 1);
    size_t got = 0;
    if ((rc = kf_db_stmt(c->db, "attachment.chunks",
                         "SELECT data FROM attachment_chunk WHERE attachment_id = ? ORDER BY seq",
                         &st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_stmt_bind_u64(st, 0, id);
    if ((rc = kf_stmt_exec(st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_pool *tmp = kf_pool_create(KF_ATTACHMENT_CHUNK + 1024);
    while ((rc = kf_stmt_fetch(st, &error)) == 1) {
        size_t n = 0;
        const char *chunk = kf_stmt_col_str(st, 0, tmp, &n);
        if (got + n > size) {
            rc = -1;
            error = "attachment chunks are longer than its size";
            break;
        }
        memcpy(buf + got, chunk, n);
        got += n;
        kf_pool_destroy(&tmp);
        tmp = kf_pool_create(KF_ATTACHMENT_CHUNK + 1024);
    }
    kf_pool_destroy(&tmp);
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
    kf_reply_header(out, c, "ETag", kf_pool_printf(c->pool, "\"%s\"", sha ? sha : ""));
    return 0;
}

const kf_route kf_attachment_routes[] = {
    {KF_POST, "/api/v1/tickets/{id}/attachments", KF_AUTH_AGENT, UPLOAD_MAX_BODY,
     h_attachment_upload, 0, NULL},
    {KF_GET, "/api/v1/attachments/{id}", KF_AUTH_AGENT, 0, h_attachment_download, 0, NULL},
    {0, NULL, 0, 0, NULL, 0, NULL},
};
