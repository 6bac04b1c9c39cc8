/*
 * email_admin.c - mailboxes through the admin API, and the quarantine list.
 *
 *   GET    /api/v1/email/mailboxes          every mailbox
 *   PUT    /api/v1/email/mailboxes/{name}   create or replace one (and its queue
 *                                           in channel_account), with an event
 *   DELETE /api/v1/email/mailboxes/{name}
 *   GET    /api/v1/email/quarantine         the latest quarantined messages
 *
 * (listed in kf_email_routes, email_channel.c)
 *
 * Passwords never pass through here: imap_secret_ref names one in
 * secrets_file.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "kefu/admin.h"
#include "kefu/db.h"
#include "kefu/email.h"
#include "kefu/event.h"
#include "kefu/http.h"
#include "kefu/server.h"
#include "email_internal.h"

static int
name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 100)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr("._-", s[i])))
            return 0;
    return 1;
}

static int
address_ok(const char *s)
{
    const char *at = strchr(s, '@');
    if (at == NULL || at == s || at[1] == '\0' || strchr(at + 1, '@') || strlen(s) > 254)
        return 0;
    for (const char *p = s; *p; p++)
        if ((unsigned char) *p <= 0x20 || strchr("<>()[],;:\\\"", *p) || (*p >= 'A' && *p <= 'Z'))
            return 0;
    return 1;
}

static json_t *
nullable(const char *s)
{
    return s ? json_string(s) : json_null();
}

int
kf_email_h_list(kf_call *c, kf_reply *out)
{
    kf_stmt *st;
    const char *err = NULL;
    int rc;
    if ((rc = kf_db_stmt(c->db, "email.admin_list",
                         "SELECT m.name, m.address, m.display_name, m.send_ack, m.imap_url, "
                         "m.imap_user, m.imap_secret_ref, m.imap_done_folder, m.poll_interval, "
                         "m.imap_last_uid, m.imap_error, m.enabled, a.default_queue_id "
                         "FROM email_mailbox m LEFT JOIN channel_account a ON a.channel = 'email' "
                         "AND a.account = m.name ORDER BY m.name LIMIT 1000",
                         &st, &err)) != KF_OK ||
        (rc = kf_stmt_exec(st, &err)) != KF_OK)
        return kf_reply_internal(out, c, err);
    json_t *items = json_array();
    while ((rc = kf_stmt_fetch(st, &err)) == 1) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:b, s:o, s:o, s:o, s:o, s:I, s:I, s:o, s:b}",
                              "name", kf_stmt_col_str(st, 0, c->pool, NULL),
                              "address", kf_stmt_col_str(st, 1, c->pool, NULL),
                              "display_name", kf_stmt_col_str(st, 2, c->pool, NULL),
                              "send_ack", (int) kf_stmt_col_i64(st, 3),
                              "imap_url", nullable(kf_stmt_col_str(st, 4, c->pool, NULL)),
                              "imap_user", nullable(kf_stmt_col_str(st, 5, c->pool, NULL)),
                              "imap_secret_ref", nullable(kf_stmt_col_str(st, 6, c->pool, NULL)),
                              "imap_done_folder", nullable(kf_stmt_col_str(st, 7, c->pool, NULL)),
                              "poll_interval", (json_int_t) kf_stmt_col_u64(st, 8),
                              "imap_last_uid", (json_int_t) kf_stmt_col_u64(st, 9),
                              "imap_error", nullable(kf_stmt_col_str(st, 10, c->pool, NULL)),
                              "enabled", (int) kf_stmt_col_i64(st, 11));
        json_object_set_new(o, "queue_id", kf_stmt_col_null(st, 12)
                                               ? json_null()
                                               : json_integer((json_int_t) kf_stmt_col_u64(st, 12)));
        json_array_append_new(items, o);
    }
    if (rc < 0) {
        json_decref(items);
        return kf_reply_internal(out, c, err);
    }
    return kf_reply_json(out, c, 200, json_pack("{s:o}", "items", items));
}

struct put_tx {
    const char *name, *address, *display_name, *imap_url, *imap_user, *secret_ref, *done;
    uint64_t queue_id, poll_interval, agent_id;
    int send_ack, enabled, created, has_queue;
};

static int
put_tx(kf_db *db, void *arg, const char **error_r)
{
    struct put_tx *t = arg;
    kf_stmt *st;
    int rc;
    if (t->has_queue) {
        if ((rc = kf_db_stmt(db, "email.admin_queue", "SELECT id FROM queue WHERE id = ?", &st,
                             error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, t->queue_id);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        rc = kf_stmt_fetch(st, error_r);
        kf_stmt_done(st);
        if (rc < 0)
            return KF_EDB;
        if (rc == 0) {
            *error_r = "queue_id: no such queue";
            return KF_EINVAL;
        }
    }
    /* ON DUPLICATE KEY would update whichever row holds the address: refuse that first. */
    if ((rc = kf_db_stmt(db, "email.admin_addr",
                         "SELECT name FROM email_mailbox WHERE address = ? AND name <> ? FOR UPDATE",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->address);
    kf_stmt_bind_cstr(st, 1, t->name);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    rc = kf_stmt_fetch(st, error_r);
    kf_stmt_done(st);
    if (rc < 0)
        return KF_EDB;
    if (rc == 1) {
        *error_r = "address: another mailbox has this address";
        return KF_ECONFLICT;
    }
    if ((rc = kf_db_stmt(db, "email.admin_put",
                         "INSERT INTO email_mailbox (name, address, display_name, send_ack, imap_url, "
                         "imap_user, imap_secret_ref, imap_done_folder, poll_interval, enabled) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE "
                         "address = VALUES(address), display_name = VALUES(display_name), "
                         "send_ack = VALUES(send_ack), imap_url = VALUES(imap_url), "
                         "imap_user = VALUES(imap_user), imap_secret_ref = VALUES(imap_secret_ref), "
                         "imap_done_folder = VALUES(imap_done_folder), "
                         "poll_interval = VALUES(poll_interval), enabled = VALUES(enabled)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->name);
    kf_stmt_bind_cstr(st, 1, t->address);
    kf_stmt_bind_cstr(st, 2, t->display_name ? t->display_name : "");
    kf_stmt_bind_i64(st, 3, t->send_ack);
    kf_stmt_bind_cstr(st, 4, t->imap_url);
    kf_stmt_bind_cstr(st, 5, t->imap_user);
    kf_stmt_bind_cstr(st, 6, t->secret_ref);
    kf_stmt_bind_cstr(st, 7, t->done);
    kf_stmt_bind_u64(st, 8, t->poll_interval);
    kf_stmt_bind_i64(st, 9, t->enabled);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    t->created = kf_stmt_affected(st) == 1;
    if ((rc = kf_db_stmt(db, "email.admin_account",
                         "INSERT INTO channel_account (channel, account, name, default_queue_id) "
                         "VALUES ('email', ?, ?, ?) ON DUPLICATE KEY UPDATE name = VALUES(name), "
                         "default_queue_id = VALUES(default_queue_id)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->name);
    kf_stmt_bind_cstr(st, 1, t->address);
    if (t->has_queue)
        kf_stmt_bind_u64(st, 2, t->queue_id);
    else
        kf_stmt_bind_null(st, 2);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    json_t *d = json_pack("{s:s, s:s}", "mailbox", t->name, "address", t->address);
    rc = kf_event_add(db, 0, t->created ? "email.mailbox.created" : "email.mailbox.updated",
                      t->agent_id ? KF_ACTOR_AGENT : KF_ACTOR_SYSTEM, t->agent_id, d, NULL, error_r);
    json_decref(d);
    return rc;
}

int
kf_email_h_put(kf_call *c, kf_reply *out)
{
    static const char *const allowed[] = {"address", "display_name", "queue_id", "send_ack",
                                          "imap_url", "imap_user", "imap_secret_ref",
                                          "imap_done_folder", "poll_interval", "enabled", NULL};
    struct put_tx t = {.name = kf_call_param(c, "name"), .poll_interval = 60, .enabled = 1,
                       .agent_id = c->principal.agent_id};
    json_t *root, *errors = NULL;
    const char *err = NULL;

    if (!name_ok(t.name))
        return kf_reply_problem(out, c, 404, "not-found", "Mailbox names are 1..100 of [A-Za-z0-9._-].",
                                NULL);
    if (kf_call_json_object(c, &root) != KF_OK)
        return 0;
    kf_json_unknown_fields(root, allowed, &errors);
    if (kf_json_get_str(root, "address", 1, 254, &t.address, &errors) && !address_ok(t.address))
        kf_problem_add_error(&errors, "address", "a lower-case mail address");
    kf_json_get_str(root, "display_name", 0, 200, &t.display_name, &errors);
    t.has_queue = kf_json_get_u64(root, "queue_id", 0, &t.queue_id, &errors);
    kf_json_get_bool(root, "send_ack", 0, &t.send_ack, &errors);
    kf_json_get_bool(root, "enabled", 0, &t.enabled, &errors);
    if (kf_json_get_str(root, "imap_url", 0, 500, &t.imap_url, &errors) &&
        strncasecmp(t.imap_url, "imap://", 7) != 0 && strncasecmp(t.imap_url, "imaps://", 8) != 0)
        kf_problem_add_error(&errors, "imap_url", "imap://host[:port]/Folder or imaps://...");
    kf_json_get_str(root, "imap_user", 0, 254, &t.imap_user, &errors);
    if (kf_json_get_str(root, "imap_secret_ref", 0, 100, &t.secret_ref, &errors) &&
        !name_ok(t.secret_ref))
        kf_problem_add_error(&errors, "imap_secret_ref", "a name in secrets_file: [A-Za-z0-9._-]");
    kf_json_get_str(root, "imap_done_folder", 0, 200, &t.done, &errors);
    if (kf_json_get_u64(root, "poll_interval", 0, &t.poll_interval, &errors) &&
        (t.poll_interval < 1 || t.poll_interval > 86400))
        kf_problem_add_error(&errors, "poll_interval", "1..86400 seconds");
    if (t.imap_url && (!t.imap_user || !t.secret_ref))
        kf_problem_add_error(&errors, "imap_url", "needs imap_user and imap_secret_ref");
    if (errors != NULL)
        return kf_reply_invalid(out, c, errors);
    int rc = kf_tx_run(c->db, put_tx, &t, &err);
    if (rc == KF_EINVAL) {
        kf_problem_add_error(&errors, "queue_id", "no such queue");
        return kf_reply_invalid(out, c, errors);
    }
    if (rc == KF_ECONFLICT)
        return kf_reply_problem(out, c, 409, "conflict", err, NULL);
    if (rc != KF_OK)
        return kf_reply_internal(out, c, err);
    return kf_reply_json(out, c, t.created ? 201 : 200,
                         json_pack("{s:s, s:s, s:b}", "name", t.name, "address", t.address,
                                   "created", t.created));
}

struct del_tx {
    const char *name;
    uint64_t agent_id;
};

static int
del_tx(kf_db *db, void *arg, const char **error_r)
{
    struct del_tx *t = arg;
    kf_stmt *st;
    int rc;
    if ((rc = kf_db_stmt(db, "email.admin_delete", "DELETE FROM email_mailbox WHERE name = ?", &st,
                         error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->name);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if (kf_stmt_affected(st) == 0)
        return KF_ENOTFOUND;
    json_t *d = json_pack("{s:s}", "mailbox", t->name);
    rc = kf_event_add(db, 0, "email.mailbox.deleted", t->agent_id ? KF_ACTOR_AGENT : KF_ACTOR_SYSTEM,
                      t->agent_id, d, NULL, error_r);
    json_decref(d);
    return rc;
}

int
kf_email_h_delete(kf_call *c, kf_reply *out)
{
    struct del_tx t = {kf_call_param(c, "name"), c->principal.agent_id};
    const char *err = NULL;
    if (!name_ok(t.name))
        return kf_reply_problem(out, c, 404, "not-found", "No such mailbox.", NULL);
    int rc = kf_tx_run(c->db, del_tx, &t, &err);
    if (rc == KF_ENOTFOUND)
        return kf_reply_problem(out, c, 404, "not-found", "No such mailbox.", NULL);
    if (rc != KF_OK)
        return kf_reply_internal(out, c, err);
    return kf_reply_text(out, c, 204, NULL, "", 0);
}

int
kf_email_h_quarantine(kf_call *c, kf_reply *out)
{
    kf_stmt *st;
    const char *err = NULL;
    int rc;
    if ((rc = kf_db_stmt(c->db, "email.admin_quarantine",
                         "SELECT id, mailbox, source, error, LENGTH(raw), "
                         "DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%s.%fZ') FROM email_quarantine "
                         "ORDER BY id DESC LIMIT 100",
                         &st, &err)) != KF_OK ||
        (rc = kf_stmt_exec(st, &err)) != KF_OK)
        return kf_reply_internal(out, c, err);
    json_t *items = json_array();
    while ((rc = kf_stmt_fetch(st, &err)) == 1)
        json_array_append_new(items, json_pack("{s:I, s:s, s:s, s:s, s:I, s:s}", "id",
                                               (json_int_t) kf_stmt_col_u64(st, 0), "mailbox",
                                               kf_stmt_col_str(st, 1, c->pool, NULL), "source",
                                               kf_stmt_col_str(st, 2, c->pool, NULL), "error",
                                               kf_stmt_col_str(st, 3, c->pool, NULL), "size",
                                               (json_int_t) kf_stmt_col_u64(st, 4), "created_at",
                                               kf_stmt_col_str(st, 5, c->pool, NULL)));
    if (rc < 0) {
        json_decref(items);
        return kf_reply_internal(out, c, err);
    }
    return kf_reply_json(out, c, 200, json_pack("{s:o}", "items", items));
}

/* ---- kefud admin mailbox ... ---- */

static const char *
cli_opt(int argc, char **argv, const char *name)
{
    for (int i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return NULL;
}

static int
cli_flag(int argc, char **argv, const char *name)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return 1;
    return 0;
}

static int
cli_usage(void)
{
    fprintf(stderr,
            "usage: kefud admin mailbox put --name NAME --address ADDR [--display-name TEXT]\n"
            "                               [--queue SLUG] [--ack] [--imap-url URL --imap-user U\n"
            "                               --imap-secret-ref KEY] [--imap-done-folder F]\n"
            "                               [--poll-interval S] [--disabled]\n"
            "       kefud admin mailbox list\n"
            "       kefud admin mailbox delete --name NAME\n");
    return 2;
}

/* Queue id by slug (0 when there is none). */
static int
queue_by_slug(kf_db *db, const char *slug, uint64_t *id_r, const char **error_r)
{
    return kf_db_id_by(db, "email.cli_queue", "SELECT id FROM queue WHERE slug = ?", slug, id_r,
                       error_r);
}

static int
cli_put(const kf_config *cfg, int argc, char **argv)
{
    struct put_tx t = {.name = cli_opt(argc, argv, "--name"),
                       .address = cli_opt(argc, argv, "--address"),
                       .display_name = cli_opt(argc, argv, "--display-name"),
                       .imap_url = cli_opt(argc, argv, "--imap-url"),
                       .imap_user = cli_opt(argc, argv, "--imap-user"),
                       .secret_ref = cli_opt(argc, argv, "--imap-secret-ref"),
                       .done = cli_opt(argc, argv, "--imap-done-folder"),
                       .poll_interval = 60,
                       .send_ack = cli_flag(argc, argv, "--ack"),
                       .enabled = !cli_flag(argc, argv, "--disabled")};
    const char *queue = cli_opt(argc, argv, "--queue"), *poll = cli_opt(argc, argv, "--poll-interval");
    const char *error = NULL;
    int rc;

    if (!name_ok(t.name) || !address_ok(t.address)) {
        fprintf(stderr, "kefud admin mailbox put: --name [A-Za-z0-9._-]{1,100} and a valid "
                        "--address are required\n");
        return cli_usage();
    }
    if (poll != NULL && (!kf_parse_u64(poll, &t.poll_interval) || t.poll_interval < 5 ||
                         t.poll_interval > 86400)) {
        fprintf(stderr, "kefud admin mailbox put: --poll-interval is 5..86400 seconds\n");
        return 2;
    }
    kf_db *db = kf_admin_db(cfg, "mailbox put");
    if (db == NULL)
        return 1;
    if (queue != NULL) {
        if ((rc = queue_by_slug(db, queue, &t.queue_id, &error)) != KF_OK || t.queue_id == 0) {
            fprintf(stderr, "kefud admin mailbox put: %s\n",
                    rc != KF_OK ? (error ? error : "database error") : "no queue with that slug");
            kf_db_destroy(&db);
            return 1;
        }
        t.has_queue = 1;
    }
    rc = kf_tx_run(db, put_tx, &t, &error);
    kf_db_destroy(&db);
    if (rc != KF_OK) {
        fprintf(stderr, "kefud admin mailbox put: %s\n", error ? error : "failed");
        return 1;
    }
    printf("mailbox %s <%s> %s\n", t.name, t.address, t.created ? "created" : "updated");
    return 0;
}

static int
cli_list(const kf_config *cfg)
{
    kf_db *db = kf_admin_db(cfg, "mailbox list");
    if (db == NULL)
        return 1;
    kf_pool *pool = kf_pool_create(4096);
    kf_stmt *st;
    const char *error = NULL;
    int rc;

    if ((rc = kf_db_stmt(db, "email.cli_list",
                         "SELECT m.name, m.address, COALESCE(q.slug, '-'), m.send_ack, "
                         " COALESCE(m.imap_url, '-'), m.enabled FROM email_mailbox m "
                         "LEFT JOIN channel_account ca ON ca.channel = 'email' AND ca.account = m.name "
                         "LEFT JOIN queue q ON q.id = ca.default_queue_id ORDER BY m.name",
                         &st, &error)) == KF_OK &&
        (rc = kf_stmt_exec(st, &error)) == KF_OK) {
        while ((rc = kf_stmt_fetch(st, &error)) == 1)
            printf("%s\t%s\tqueue=%s\tack=%d\timap=%s\tenabled=%d\n",
                   kf_stmt_col_str(st, 0, pool, NULL), kf_stmt_col_str(st, 1, pool, NULL),
                   kf_stmt_col_str(st, 2, pool, NULL), (int) kf_stmt_col_i64(st, 3),
                   kf_stmt_col_str(st, 4, pool, NULL), (int) kf_stmt_col_i64(st, 5));
        rc = rc < 0 ? rc : KF_OK;
    }
    kf_pool_destroy(&pool);
    kf_db_destroy(&db);
    if (rc != KF_OK) {
        fprintf(stderr, "kefud admin mailbox list: %s\n", error ? error : "failed");
        return 1;
    }
    return 0;
}

static int
cli_delete(const kf_config *cfg, int argc, char **argv)
{
    struct del_tx t = {cli_opt(argc, argv, "--name"), 0};
    const char *error = NULL;
    if (!name_ok(t.name))
        return cli_usage();
    kf_db *db = kf_admin_db(cfg, "mailbox delete");
    if (db == NULL)
        return 1;
    int rc = kf_tx_run(db, del_tx, &t, &error);
    kf_db_destroy(&db);
    if (rc == KF_ENOTFOUND) {
        fprintf(stderr, "kefud admin mailbox delete: no mailbox %s\n", t.name);
        return 1;
    }
    if (rc != KF_OK) {
        fprintf(stderr, "kefud admin mailbox delete: %s\n", error ? error : "failed");
        return 1;
    }
    printf("mailbox %s deleted\n", t.name);
    return 0;
}

int
kf_email_admin_cli(const kf_config *cfg, int argc, char **argv)
{
    if (argc < 1)
        return cli_usage();
    if (!strcmp(argv[0], "put"))
        return cli_put(cfg, argc - 1, argv + 1);
    if (!strcmp(argv[0], "list"))
        return cli_list(cfg);
    if (!strcmp(argv[0], "delete"))
        return cli_delete(cfg, argc - 1, argv + 1);
    return cli_usage();
}
