/*
 * wechat_admin.c - WeChat accounts for admins: the API under
 * /api/v1/wechat/accounts and `kefud admin wechat-account ...`, both
 * through one validate-and-save path.
 *
 * An account's token and EncodingAESKey are written, never read back (the
 * API says only whether they are set); its AppSecret is not here at all but
 * in secrets_file, named by secret_ref.  The default queue is kept in
 * channel_account, where ingest routing reads it.  Changing the AppID,
 * the secret or the API base forgets the cached access token.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "kefu/admin.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/event.h"
#include "kefu/http.h"
#include "kefu/pool.h"
#include "wechat_internal.h"

#define TEXT_MAX 2000
#define MENU_MAX 100
#define WINDOW_MAX 31536000

/* ---- the account as stored ---- */

struct acct {
    const char *key, *kind, *name, *app_id, *token, *aes_key, *prev_aes_key, *secret_ref, *mode,
        *api_base, *auto_reply, *welcome, *menu;
    uint64_t agent_id, queue_id;  /* 0 = none */
    long long window;             /* -1 = default */
    int enabled;
    const char *created_at, *updated_at;
};

static int
all_chars(const char *s, const char *extra, size_t min, size_t max)
{
    size_t n = strlen(s);
    if (n < min || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char) s[i]) && (extra == NULL || strchr(extra, s[i]) == NULL))
            return 0;
    return 1;
}

static int
v_name(const char *s)
{
    for (const unsigned char *p = (const unsigned char *) s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return 0;
    return strlen(s) <= 200;
}

static int
v_app_id(const char *s)
{
    return all_chars(s, "_-", 1, 64);
}

static int
v_token(const char *s)
{
    return all_chars(s, NULL, 3, 32);
}

static int
v_aes(const char *s)
{
    return all_chars(s, NULL, 43, 43);
}

static int
v_secret_ref(const char *s)
{
    return all_chars(s, "_.-", 1, 100);
}

static int
v_kind(const char *s)
{
    return !strcmp(s, "official") || !strcmp(s, "wecom");
}

static int
v_mode(const char *s)
{
    return !strcmp(s, "plain") || !strcmp(s, "compat") || !strcmp(s, "safe");
}

static int
v_text(const char *s)
{
    return strlen(s) <= TEXT_MAX;
}

static int
v_url(const char *s)
{
    size_t n = strlen(s);
    if (n > 255 || (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0))
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char) s[i] <= 0x20 || s[i] == 0x7f || s[i] == '?' || s[i] == '#')
            return 0;
    return n > (s[4] == 's' ? 8u : 7u); /* a host after the scheme */
}

/* The string fields a request may set: name, where, rule, whether null is allowed. */
static const struct sfield {
    const char *name;
    size_t off;
    int (*ok)(const char *);
    const char *rule;
    int nullable;
} sfields[] = {
    {"kind", offsetof(struct acct, kind), v_kind, "must be official or wecom", 0},
    {"name", offsetof(struct acct, name), v_name, "at most 200 bytes, no control characters", 0},
    {"app_id", offsetof(struct acct, app_id), v_app_id, "1..64 of [A-Za-z0-9_-]", 0},
    {"token", offsetof(struct acct, token), v_token, "3..32 letters and digits", 0},
    {"encoding_aes_key", offsetof(struct acct, aes_key), v_aes, "exactly 43 letters and digits", 1},
    {"previous_aes_key", offsetof(struct acct, prev_aes_key), v_aes,
     "exactly 43 letters and digits", 1},
    {"secret_ref", offsetof(struct acct, secret_ref), v_secret_ref,
     "1..100 of [A-Za-z0-9_.-]: a name in secrets_file", 1},
    {"mode", offsetof(struct acct, mode), v_mode, "must be plain, compat or safe", 0},
    {"api_base", offsetof(struct acct, api_base), v_url,
     "an http(s) URL without query, at most 255 bytes", 1},
    {"auto_reply", offsetof(struct acct, auto_reply), v_text, "at most 2000 bytes", 1},
    {"welcome_message", offsetof(struct acct, welcome), v_text, "at most 2000 bytes", 1},
};

#define FIELD(a, f) (*(const char **) ((char *) (a) + (f)->off))

static json_t *
acct_json(const struct acct *a)
{
    json_t *menu = json_loads(a->menu ? a->menu : "{}", 0, NULL);
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:o, s:s, s:s?, s:s?, s:b, s:b, s:b, s:o, s:o, s:s?, s:s?, s:o, "
        "s:b, s:s?, s:s?}",
        "account", a->key, "kind", a->kind, "name", a->name ? a->name : "", "app_id", a->app_id,
        "agent_id", a->agent_id ? json_integer((json_int_t) a->agent_id) : json_null(), "mode",
        a->mode, "api_base", a->api_base, "secret_ref", a->secret_ref, "token_set",
        a->token != NULL && *a->token, "encoding_aes_key_set", a->aes_key != NULL,
        "previous_aes_key_set", a->prev_aes_key != NULL, "default_queue_id",
        a->queue_id ? json_integer((json_int_t) a->queue_id) : json_null(), "timestamp_window",
        a->window >= 0 ? json_integer(a->window) : json_null(), "auto_reply", a->auto_reply,
        "welcome_message", a->welcome, "menu_replies", menu ? menu : json_object(), "enabled",
        a->enabled, "created_at", a->created_at, "updated_at",
        a->updated_at);
}

#define ACCT_COLS                                                                                  \
    "SELECT w.account_key, w.kind, w.name, w.app_id, COALESCE(w.agent_id, 0), w.token, "          \
    " w.encoding_aes_key, w.previous_aes_key, w.secret_ref, w.mode, w.api_base, "                 \
    " COALESCE(w.timestamp_window, -1), w.auto_reply, w.welcome_message, w.menu_replies, "        \
    " w.enabled, COALESCE(c.default_queue_id, 0), "                                              \
    " DATE_FORMAT(w.created_at, '%Y-%m-%dT%H:%i:%s.%fZ'), "                                      \
    " DATE_FORMAT(w.updated_at, '%Y-%m-%dT%H:%i:%s.%fZ') "                                       \
    "FROM wechat_account w LEFT JOIN channel_account c "                                          \
    " ON c.channel = 'wechat' AND c.account = w.account_key "

static void
acct_row(kf_stmt *st, kf_pool *pool, struct acct *a)
{
    memset(a, 0, sizeof(*a));
    a->key = kf_stmt_col_str(st, 0, pool, NULL);
    a->kind = kf_stmt_col_str(st, 1, pool, NULL);
    a->name = kf_stmt_col_str(st, 2, pool, NULL);
    a->app_id = kf_stmt_col_str(st, 3, pool, NULL);
    a->agent_id = kf_stmt_col_u64(st, 4);
    a->token = kf_stmt_col_str(st, 5, pool, NULL);
    a->aes_key = kf_stmt_col_str(st, 6, pool, NULL);
    a->prev_aes_key = kf_stmt_col_str(st, 7, pool, NULL);
    a->secret_ref = kf_stmt_col_str(st, 8, pool, NULL);
    a->mode = kf_stmt_col_str(st, 9, pool, NULL);
    a->api_base = kf_stmt_col_str(st, 10, pool, NULL);
    a->window = kf_stmt_col_i64(st, 11);
    a->auto_reply = kf_stmt_col_str(st, 12, pool, NULL);
    a->welcome = kf_stmt_col_str(st, 13, pool, NULL);
    a->menu = kf_stmt_col_str(st, 14, pool, NULL);
    a->enabled = kf_stmt_col_i64(st, 15) != 0;
    a->queue_id = kf_stmt_col_u64(st, 16);
    a->created_at = kf_stmt_col_str(st, 17, pool, NULL);
    a->updated_at = kf_stmt_col_str(st, 18, pool, NULL);
}

static int
acct_load(kf_db *db, kf_pool *pool, const char *key, int for_update, struct acct *a,
          const char **error_r)
{
    kf_stmt *st;
    int rc = for_update ? kf_db_stmt(db, "wechat.admin_lock",
                                     ACCT_COLS "WHERE w.account_key = ? FOR UPDATE", &st, error_r)
                 : kf_db_stmt(db, "wechat.admin_get", ACCT_COLS "WHERE w.account_key = ?", &st,
                              error_r);
    if (rc != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, key);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK || (rc = kf_stmt_fetch(st, error_r)) < 0)
        return rc;
    if (rc == 0)
        return KF_ENOTFOUND;
    acct_row(st, pool, a);
    kf_stmt_done(st);
    return KF_OK;
}

/* ---- validate and save ---- */

struct save_tx {
    kf_pool *pool;
    const char *key;
    json_t *in;         /* the request object */
    int create;         /* 1 create, 0 update, 2 create or update */
    int actor_kind;
    uint64_t actor_id;
    /* out */
    json_t *errors;
    int created;
    struct acct a;
};

/* Overlay the request onto a (validating as it goes). */
static void
overlay(struct save_tx *t, struct acct *a, json_t **changed)
{
    static const char *const allowed[] = {
        "account", "kind", "name", "app_id", "token", "encoding_aes_key", "previous_aes_key",
        "secret_ref", "mode", "api_base", "auto_reply", "welcome_message", "agent_id",
        "default_queue_id", "timestamp_window", "menu_replies", "enabled", NULL};
    json_t *in = t->in, *v;

    kf_json_unknown_fields(in, allowed, &t->errors);
    for (size_t i = 0; i < KF_ARRAY_LEN(sfields); i++) {
        const struct sfield *f = &sfields[i];
        if ((v = json_object_get(in, f->name)) == NULL)
            continue;
        if (json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0 && f->nullable)) {
            if (!f->nullable)
                kf_problem_add_error(&t->errors, f->name, "must not be null");
            else
                FIELD(a, f) = NULL;
        } else if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
                   !f->ok(json_string_value(v))) {
            kf_problem_add_error(&t->errors, f->name, f->rule);
            continue;
        } else {
            const char *s = json_string_value(v);
            if (strcmp(f->name, "api_base") == 0) { /* no trailing slash */
                size_t n = strlen(s);
                while (n > 8 && s[n - 1] == '/')
                    n--;
                s = kf_pool_strndup(t->pool, s, n);
            }
            FIELD(a, f) = kf_pool_strdup(t->pool, s);
        }
        json_array_append_new(*changed, json_string(f->name));
    }
    if ((v = json_object_get(in, "agent_id")) != NULL) {
        if (json_is_null(v))
            a->agent_id = 0;
        else if (json_is_integer(v) && json_integer_value(v) > 0)
            a->agent_id = (uint64_t) json_integer_value(v);
        else
            kf_problem_add_error(&t->errors, "agent_id", "a positive whole number or null");
        json_array_append_new(*changed, json_string("agent_id"));
    }
    if ((v = json_object_get(in, "default_queue_id")) != NULL) {
        if (json_is_null(v))
            a->queue_id = 0;
        else if (json_is_integer(v) && json_integer_value(v) > 0)
            a->queue_id = (uint64_t) json_integer_value(v);
        else
            kf_problem_add_error(&t->errors, "default_queue_id", "a queue id or null");
        json_array_append_new(*changed, json_string("default_queue_id"));
    }
    if ((v = json_object_get(in, "timestamp_window")) != NULL) {
        if (json_is_null(v))
            a->window = -1;
        else if (json_is_integer(v) && json_integer_value(v) >= 0 &&
                 json_integer_value(v) <= WINDOW_MAX)
            a->window = json_integer_value(v);
        else
            kf_problem_add_error(&t->errors, "timestamp_window",
                                 "seconds from 0 (not checked) to 31536000, or null (default)");
        json_array_append_new(*changed, json_string("timestamp_window"));
    }
    if ((v = json_object_get(in, "enabled")) != NULL) {
        if (json_is_boolean(v))
            a->enabled = json_is_true(v);
        else
            kf_problem_add_error(&t->errors, "enabled", "must be true or false");
        json_array_append_new(*changed, json_string("enabled"));
    }
    if ((v = json_object_get(in, "menu_replies")) != NULL) {
        const char *k;
        json_t *r;
        int ok = json_is_object(v) && json_object_size(v) <= MENU_MAX;
        json_object_foreach(v, k, r) ok &= strlen(k) > 0 && strlen(k) <= 128 &&
                                           json_is_string(r) && json_string_length(r) <= TEXT_MAX;
        if (!ok) {
            kf_problem_add_error(&t->errors, "menu_replies",
                                 "an object of at most 100 {\"menu key\": \"reply text\"}");
        } else {
            char *s = json_dumps(v, JSON_COMPACT);
            a->menu = kf_pool_strdup(t->pool, s);
            free(s);
        }
        json_array_append_new(*changed, json_string("menu_replies"));
    }
}

/* Rules across fields, on the merged account. */
static void
check(struct save_tx *t, const struct acct *a, const struct acct *old)
{
    int wecom = strcmp(a->kind, "wecom") == 0;

    if (a->app_id == NULL)
        kf_problem_add_error(&t->errors, "app_id", "is required (the AppID, or the CorpID)");
    if (a->token == NULL)
        kf_problem_add_error(&t->errors, "token", "is required");
    if (old != NULL && strcmp(old->kind, a->kind) != 0)
        kf_problem_add_error(&t->errors, "kind", "cannot change; create another account");
    if (wecom && strcmp(a->mode, "safe") != 0)
        kf_problem_add_error(&t->errors, "mode", "a WeCom callback is always encrypted: safe");
    if ((wecom || strcmp(a->mode, "plain") != 0) && a->aes_key == NULL)
        kf_problem_add_error(&t->errors, "encoding_aes_key",
                             "is required for compat and safe mode and for WeCom");
}

static int
save_tx(kf_db *db, void *arg, const char **error_r)
{
    struct save_tx *t = arg;
    struct acct old, a;
    json_t *changed = json_array();
    kf_stmt *st;
    int rc, exists;

    json_decref(t->errors);
    t->errors = NULL;
    t->created = 0;

    /* 1. The current row, or the defaults. */
    rc = acct_load(db, t->pool, t->key, 1, &old, error_r);
    if (rc != KF_OK && rc != KF_ENOTFOUND)
        goto out;
    exists = rc == KF_OK;
    if (exists && t->create == 1) {
        *error_r = "a WeChat account with this key exists";
        rc = KF_ECONFLICT;
        goto out;
    }
    if (!exists && t->create == 0) {
        rc = KF_ENOTFOUND;
        goto out;
    }
    if (exists) {
        a = old;
    } else {
        memset(&a, 0, sizeof(a));
        a.key = t->key;
        a.kind = "official";
        a.name = "";
        a.mode = "safe";
        a.menu = "{}";
        a.window = -1;
        a.enabled = 1;
    }

    /* 2. The request on top, then the rules across fields. */
    overlay(t, &a, &changed);
    if (t->errors == NULL)
        check(t, &a, exists ? &old : NULL);
    if (t->errors == NULL && a.queue_id != 0) {
        if ((rc = kf_db_stmt(db, "wechat.admin_queue", "SELECT id FROM queue WHERE id = ?", &st,
                             error_r)) != KF_OK)
            goto out;
        kf_stmt_bind_u64(st, 0, a.queue_id);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK || (rc = kf_stmt_fetch(st, error_r)) < 0)
            goto out;
        kf_stmt_done(st);
        if (rc == 0)
            kf_problem_add_error(&t->errors, "default_queue_id", "no such queue");
    }
    if (t->errors != NULL) {
        rc = KF_EINVAL;
        goto out;
    }

    /* 3. Write the account and its channel_account row. */
    rc = exists ? kf_db_stmt(db, "wechat.admin_update",
                             "UPDATE wechat_account SET name = ?, app_id = ?, agent_id = ?, "
                             " token = ?, encoding_aes_key = ?, previous_aes_key = ?, "
                             " secret_ref = ?, mode = ?, api_base = ?, timestamp_window = ?, "
                             " auto_reply = ?, welcome_message = ?, menu_replies = ?, "
                             " enabled = ?, kind = ? WHERE account_key = ?",
                             &st, error_r)
                : kf_db_stmt(db, "wechat.admin_insert",
                             "INSERT INTO wechat_account (name, app_id, agent_id, token, "
                             " encoding_aes_key, previous_aes_key, secret_ref, mode, api_base, "
                             " timestamp_window, auto_reply, welcome_message, menu_replies, "
                             " enabled, kind, account_key) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             &st, error_r);
    if (rc != KF_OK)
        goto out;
    kf_stmt_bind_cstr(st, 0, a.name ? a.name : "");
    kf_stmt_bind_cstr(st, 1, a.app_id);
    if (a.agent_id)
        kf_stmt_bind_u64(st, 2, a.agent_id);
    else
        kf_stmt_bind_null(st, 2);
    kf_stmt_bind_cstr(st, 3, a.token);
    kf_stmt_bind_cstr(st, 4, a.aes_key);
    kf_stmt_bind_cstr(st, 5, a.prev_aes_key);
    kf_stmt_bind_cstr(st, 6, a.secret_ref);
    kf_stmt_bind_cstr(st, 7, a.mode);
    kf_stmt_bind_cstr(st, 8, a.api_base);
    if (a.window >= 0)
        kf_stmt_bind_i64(st, 9, a.window);
    else
        kf_stmt_bind_null(st, 9);
    kf_stmt_bind_cstr(st, 10, a.auto_reply);
    kf_stmt_bind_cstr(st, 11, a.welcome);
    kf_stmt_bind_cstr(st, 12, a.menu ? a.menu : "{}");
    kf_stmt_bind_i64(st, 13, a.enabled);
    kf_stmt_bind_cstr(st, 14, a.kind);
    kf_stmt_bind_cstr(st, 15, t->key);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        goto out;
    if ((rc = kf_db_stmt(db, "wechat.admin_channel",
                         "INSERT INTO channel_account (channel, account, name, default_queue_id) "
                         "VALUES ('wechat', ?, ?, ?) ON DUPLICATE KEY UPDATE name = VALUES(name), "
                         " default_queue_id = VALUES(default_queue_id)",
                         &st, error_r)) != KF_OK)
        goto out;
    kf_stmt_bind_cstr(st, 0, t->key);
    kf_stmt_bind_cstr(st, 1, a.name ? a.name : "");
    if (a.queue_id)
        kf_stmt_bind_u64(st, 2, a.queue_id);
    else
        kf_stmt_bind_null(st, 2);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        goto out;

    /* 4. A token fetched with other credentials is no longer ours. */
    if (!exists || strcmp(old.app_id, a.app_id) != 0 ||
        (old.secret_ref == NULL) != (a.secret_ref == NULL) ||
        (old.secret_ref && a.secret_ref && strcmp(old.secret_ref, a.secret_ref) != 0) ||
        (old.api_base == NULL) != (a.api_base == NULL) ||
        (old.api_base && a.api_base && strcmp(old.api_base, a.api_base) != 0)) {
        if ((rc = kf_db_stmt(db, "wechat.admin_forget_token",
                             "DELETE FROM wechat_token WHERE account_key = ?", &st, error_r)) !=
            KF_OK)
            goto out;
        kf_stmt_bind_cstr(st, 0, t->key);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            goto out;
    }

    /* 5. Audit, then read back what is stored. */
    json_t *d = json_pack("{s:s, s:O}", "account", t->key, "fields", changed);
    rc = kf_event_add(db, 0, exists ? "wechat_account.updated" : "wechat_account.created",
                      t->actor_kind, t->actor_id, d, NULL, error_r);
    json_decref(d);
    if (rc != KF_OK)
        goto out;
    if ((rc = acct_load(db, t->pool, t->key, 0, &t->a, error_r)) != KF_OK)
        goto out;
    t->created = !exists;
out:
    json_decref(changed);
    return rc;
}

struct delete_tx {
    const char *key;
    int actor_kind;
    uint64_t actor_id;
};

static int
delete_tx(kf_db *db, void *arg, const char **error_r)
{
    struct delete_tx *t = arg;
    kf_stmt *st;
    int rc;

    if ((rc = kf_db_stmt(db, "wechat.admin_delete",
                         "DELETE FROM wechat_account WHERE account_key = ?", &st, error_r)) !=
        KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->key);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if (kf_stmt_affected(st) == 0)
        return KF_ENOTFOUND;
    if ((rc = kf_db_stmt(db, "wechat.admin_forget_token",
                         "DELETE FROM wechat_token WHERE account_key = ?", &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->key);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    /* channel_account stays: tickets still name the account. */
    json_t *d = json_pack("{s:s}", "account", t->key);
    rc = kf_event_add(db, 0, "wechat_account.deleted", t->actor_kind, t->actor_id, d, NULL,
                      error_r);
    json_decref(d);
    return rc;
}

/* ---- the API ---- */

static json_t *
api_json(const struct acct *a, kf_pool *pool)
{
    json_t *j = acct_json(a);
    json_object_set_new(j, "webhook_path",
                        json_string(kf_pool_printf(pool, "/hooks/wechat/%s", a->key)));
    return j;
}

static int
actor_kind(const kf_call *c)
{
    return c->principal.agent_id ? KF_ACTOR_AGENT : KF_ACTOR_SYSTEM;
}

/* GET /api/v1/wechat/accounts - every account (secrets only as *_set flags). */
int
kf_wechat_h_list(kf_call *c, kf_reply *out)
{
    const char *error = NULL;
    json_t *items = json_array();
    kf_stmt *st;
    int rc;

    if ((rc = kf_db_stmt(c->db, "wechat.admin_list", ACCT_COLS "ORDER BY w.account_key LIMIT 1000",
                         &st, &error)) != KF_OK ||
        (rc = kf_stmt_exec(st, &error)) != KF_OK) {
        json_decref(items);
        return kf_reply_internal(out, c, error);
    }
    while ((rc = kf_stmt_fetch(st, &error)) == 1) {
        struct acct a;
        acct_row(st, c->pool, &a);
        json_array_append_new(items, api_json(&a, c->pool));
    }
    kf_stmt_done(st);
    if (rc < 0) {
        json_decref(items);
        return kf_reply_internal(out, c, error);
    }
    return kf_reply_json(out, c, 200, json_pack("{s:o}", "items", items));
}

/* GET /api/v1/wechat/accounts/{account} */
int
kf_wechat_h_get(kf_call *c, kf_reply *out)
{
    const char *key = kf_call_param(c, "account"), *error = NULL;
    struct acct a;
    int rc;

    if (!kf_wechat_key_ok(key))
        return kf_reply_problem(out, c, 404, "not-found", "No such WeChat account.", NULL);
    rc = acct_load(c->db, c->pool, key, 0, &a, &error);
    if (rc == KF_ENOTFOUND)
        return kf_reply_problem(out, c, 404, "not-found", "No such WeChat account.", NULL);
    if (rc != KF_OK)
        return kf_reply_internal(out, c, error);
    return kf_reply_json(out, c, 200, api_json(&a, c->pool));
}

static int
save(kf_call *c, kf_reply *out, const char *key, int create)
{
    struct save_tx t = {.pool = c->pool, .key = key, .create = create,
                        .actor_kind = actor_kind(c), .actor_id = c->principal.agent_id};
    const char *error = NULL;
    json_t *root;
    int rc;

    if (kf_call_json_object(c, &root) != KF_OK)
        return 0;
    t.in = root;
    rc = kf_tx_run(c->db, save_tx, &t, &error);
    switch (rc) {
    case KF_OK:
        kf_wechat_account_changed();
        break;
    case KF_EINVAL:
        return kf_reply_invalid(out, c, t.errors);
    case KF_ENOTFOUND:
        return kf_reply_problem(out, c, 404, "not-found", "No such WeChat account.", NULL);
    case KF_ECONFLICT:
        return kf_reply_problem(out, c, 409, "conflict", error, NULL);
    default:
        json_decref(t.errors);
        return kf_reply_internal(out, c, error);
    }
    json_decref(t.errors);
    return kf_reply_json(out, c, create ? 201 : 200, api_json(&t.a, c->pool));
}

/* POST /api/v1/wechat/accounts {"account": "...", ...} */
int
kf_wechat_h_create(kf_call *c, kf_reply *out)
{
    json_t *root, *errors = NULL;
    const char *key = NULL;

    if (kf_call_json_object(c, &root) != KF_OK)
        return 0;
    if (kf_json_get_str(root, "account", 1, KF_WECHAT_KEY_MAX, &key, &errors) &&
        !kf_wechat_key_ok(key))
        kf_problem_add_error(&errors, "account", "1..64 of [A-Za-z0-9_-]");
    if (errors != NULL)
        return kf_reply_invalid(out, c, errors);
    return save(c, out, key, 1);
}

/* PATCH /api/v1/wechat/accounts/{account} - only the fields given change. */
int
kf_wechat_h_update(kf_call *c, kf_reply *out)
{
    const char *key = kf_call_param(c, "account");
    json_t *root, *errors = NULL;

    if (!kf_wechat_key_ok(key))
        return kf_reply_problem(out, c, 404, "not-found", "No such WeChat account.", NULL);
    if (kf_call_json_object(c, &root) != KF_OK)
        return 0;
    json_t *k = json_object_get(root, "account");
    if (k != NULL && (!json_is_string(k) || strcmp(json_string_value(k), key) != 0)) {
        kf_problem_add_error(&errors, "account", "cannot change; create another account");
        return kf_reply_invalid(out, c, errors);
    }
    return save(c, out, key, 0);
}

/* DELETE /api/v1/wechat/accounts/{account} */
int
kf_wechat_h_delete(kf_call *c, kf_reply *out)
{
    struct delete_tx t = {.key = kf_call_param(c, "account"), .actor_kind = actor_kind(c),
                          .actor_id = c->principal.agent_id};
    const char *error = NULL;
    int rc;

    if (!kf_wechat_key_ok(t.key))
        return kf_reply_problem(out, c, 404, "not-found", "No such WeChat account.", NULL);
    rc = kf_tx_run(c->db, delete_tx, &t, &error);
    if (rc == KF_OK)
        kf_wechat_account_changed();
    if (rc == KF_ENOTFOUND)
        return kf_reply_problem(out, c, 404, "not-found", "No such WeChat account.", NULL);
    if (rc != KF_OK)
        return kf_reply_internal(out, c, error);
    return kf_reply_text(out, c, 204, NULL, "", 0);
}

/* ---- kefud admin wechat-account ---- */

#define EXIT_FAILED 1
#define EXIT_USAGE 2

static int
cli_usage(FILE *out)
{
    fprintf(out,
            "usage: kefud admin wechat-account COMMAND [options]\n\n"
            "  add  --account KEY --app-id ID --token TOKEN [options]   create (not if it exists)\n"
            "  set  --account KEY [options]                             change the fields given\n"
            "  put  --account KEY [options]                             create or change\n"
            "  show --account KEY                                       one account as JSON\n"
            "  list                                                     every account as JSON\n"
            "  delete --account KEY\n\n"
            "options: --kind official|wecom  --name NAME  --app-id APPID|CORPID  --token TOKEN\n"
            "         --aes-key KEY43  --previous-aes-key KEY43  --secret-ref NAME (in "
            "secrets_file)\n"
            "         --mode plain|compat|safe  --api-base URL  --agent-id N  --queue SLUG\n"
            "         --timestamp-window SECONDS  --welcome TEXT  --auto-reply TEXT\n"
            "         --enabled true|false\n"
            "An empty value clears an optional field.  The webhook is /hooks/wechat/KEY.\n");
    return out == stdout ? 0 : EXIT_USAGE;
}

static const struct {
    const char *opt, *field;
    char type; /* s string, u number, b boolean, q queue slug */
} cli_opts[] = {
    {"--kind", "kind", 's'},
    {"--name", "name", 's'},
    {"--app-id", "app_id", 's'},
    {"--token", "token", 's'},
    {"--aes-key", "encoding_aes_key", 's'},
    {"--previous-aes-key", "previous_aes_key", 's'},
    {"--secret-ref", "secret_ref", 's'},
    {"--mode", "mode", 's'},
    {"--api-base", "api_base", 's'},
    {"--agent-id", "agent_id", 'u'},
    {"--queue", "default_queue_id", 'q'},
    {"--timestamp-window", "timestamp_window", 'u'},
    {"--welcome", "welcome_message", 's'},
    {"--auto-reply", "auto_reply", 's'},
    {"--enabled", "enabled", 'b'},
};

/* Queue slug -> id (0 when there is none). */
static int
queue_by_slug(kf_db *db, const char *slug, uint64_t *id_r)
{
    const char *error = NULL;
    return kf_db_id_by(db, "wechat.admin_queue_slug", "SELECT id FROM queue WHERE slug = ?", slug,
                       id_r, &error) == KF_OK ? KF_OK : KF_EDB;
}

static void
print_errors(const json_t *errors)
{
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e)
        fprintf(stderr, "kefud admin wechat-account: %s: %s\n",
                json_string_value(json_object_get(e, "field")),
                json_string_value(json_object_get(e, "detail")));
}

int
kf_wechat_admin_cli(const kf_config *cfg, int argc, char **argv)
{
    const char *cmd, *key = NULL, *error = NULL;
    json_t *in;
    kf_db *db = NULL;
    kf_pool *pool;
    int rc, ex = 0;

    if (argc < 1)
        return cli_usage(stderr);
    cmd = argv[0];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help"))
        return cli_usage(stdout);
    if (strcmp(cmd, "add") && strcmp(cmd, "set") && strcmp(cmd, "put") && strcmp(cmd, "show") &&
        strcmp(cmd, "list") && strcmp(cmd, "delete")) {
        fprintf(stderr, "kefud admin wechat-account: unknown command \"%s\"\n", cmd);
        return cli_usage(stderr);
    }

    /* 1. Options into a request object, as the API would get it. */
    in = json_object();
    const char *queue_slug = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
        size_t j;
        if (i + 1 >= argc) {
            fprintf(stderr, "kefud admin wechat-account: %s needs a value\n", a);
            json_decref(in);
            return EXIT_USAGE;
        }
        val = argv[++i];
        if (!strcmp(a, "--account")) {
            key = val;
            continue;
        }
        for (j = 0; j < KF_ARRAY_LEN(cli_opts) && strcmp(cli_opts[j].opt, a) != 0; j++)
            ;
        if (j == KF_ARRAY_LEN(cli_opts) || strcmp(cmd, "show") == 0 || strcmp(cmd, "list") == 0 ||
            strcmp(cmd, "delete") == 0) {
            fprintf(stderr, "kefud admin wechat-account %s: unknown option \"%s\"\n", cmd, a);
            json_decref(in);
            return EXIT_USAGE;
        }
        json_t *v = NULL;
        if (*val == '\0') {
            v = json_null();
        } else if (cli_opts[j].type == 's') {
            v = json_string(val);
        } else if (cli_opts[j].type == 'b') {
            v = !strcmp(val, "true") || !strcmp(val, "1") ? json_true()
                : !strcmp(val, "false") || !strcmp(val, "0") ? json_false()
                                                              : NULL;
        } else if (cli_opts[j].type == 'q') {
            queue_slug = val;
            continue;
        } else {
            char *end;
            unsigned long long n = strtoull(val, &end, 10);
            v = *end == '\0' && isdigit((unsigned char) *val) ? json_integer((json_int_t) n) : NULL;
        }
        if (v == NULL) {
            fprintf(stderr, "kefud admin wechat-account: %s: invalid value\n", a);
            json_decref(in);
            return EXIT_USAGE;
        }
        json_object_set_new(in, cli_opts[j].field, v);
    }
    if (strcmp(cmd, "list") != 0 && (key == NULL || !kf_wechat_key_ok(key))) {
        fprintf(stderr, "kefud admin wechat-account %s: --account KEY is required "
                        "(1..64 of [A-Za-z0-9_-])\n", cmd);
        json_decref(in);
        return EXIT_USAGE;
    }

    /* 2. The database. */
    if ((db = kf_admin_db(cfg, "wechat-account")) == NULL) {
        json_decref(in);
        return EXIT_FAILED;
    }
    pool = kf_pool_create(4096);
    if (queue_slug != NULL) {
        uint64_t qid = 0;
        if (queue_by_slug(db, queue_slug, &qid) != KF_OK || qid == 0) {
            fprintf(stderr, "kefud admin wechat-account: no queue with slug %s\n", queue_slug);
            ex = EXIT_FAILED;
            goto done;
        }
        json_object_set_new(in, "default_queue_id", json_integer((json_int_t) qid));
    }

    if (!strcmp(cmd, "list") || !strcmp(cmd, "show")) {
        kf_stmt *st;
        json_t *items = json_array();
        rc = !strcmp(cmd, "list")
                 ? kf_db_stmt(db, "wechat.admin_list",
                              ACCT_COLS "ORDER BY w.account_key LIMIT 1000", &st, &error)
                 : kf_db_stmt(db, "wechat.admin_get", ACCT_COLS "WHERE w.account_key = ?", &st,
                              &error);
        if (rc == KF_OK && key != NULL && strcmp(cmd, "show") == 0)
            kf_stmt_bind_cstr(st, 0, key);
        if (rc == KF_OK && (rc = kf_stmt_exec(st, &error)) == KF_OK) {
            while ((rc = kf_stmt_fetch(st, &error)) == 1) {
                struct acct a;
                acct_row(st, pool, &a);
                json_array_append_new(items, api_json(&a, pool));
            }
            kf_stmt_done(st);
        }
        if (rc < 0) {
            fprintf(stderr, "kefud admin wechat-account: %s\n", error ? error : "failed");
            ex = EXIT_FAILED;
        } else if (!strcmp(cmd, "show") && json_array_size(items) == 0) {
            fprintf(stderr, "kefud admin wechat-account: no account %s\n", key);
            ex = EXIT_FAILED;
        } else {
            char *s = json_dumps(!strcmp(cmd, "show") ? json_array_get(items, 0) : items,
                                 JSON_INDENT(2));
            printf("%s\n", s);
            free(s);
        }
        json_decref(items);
        goto done;
    }
    if (!strcmp(cmd, "delete")) {
        struct delete_tx t = {.key = key};
        rc = kf_tx_run(db, delete_tx, &t, &error);
        if (rc == KF_ENOTFOUND)
            fprintf(stderr, "kefud admin wechat-account: no account %s\n", key);
        else if (rc != KF_OK)
            fprintf(stderr, "kefud admin wechat-account: %s\n", error ? error : "failed");
        else
            fprintf(stderr, "deleted WeChat account %s\n", key);
        ex = rc == KF_OK ? 0 : EXIT_FAILED;
        goto done;
    }

    /* 3. add / set / put. */
    struct save_tx t = {.pool = pool, .key = key, .in = in,
                        .create = !strcmp(cmd, "add") ? 1 : !strcmp(cmd, "set") ? 0 : 2};
    rc = kf_tx_run(db, save_tx, &t, &error);
    if (rc == KF_EINVAL) {
        print_errors(t.errors);
        ex = EXIT_USAGE;
    } else if (rc == KF_ENOTFOUND || rc == KF_ECONFLICT) {
        fprintf(stderr, "kefud admin wechat-account: %s\n",
                rc == KF_ENOTFOUND ? "no such account" : error);
        ex = EXIT_FAILED;
    } else if (rc != KF_OK) {
        fprintf(stderr, "kefud admin wechat-account: %s\n", error ? error : "failed");
        ex = EXIT_FAILED;
    } else {
        fprintf(stderr, "%s WeChat account %s (%s, %s mode); webhook /hooks/wechat/%s\n",
                t.created ? "created" : "updated", key, t.a.kind, t.a.mode, key);
    }
    json_decref(t.errors);
done:
    json_decref(in);
    kf_pool_destroy(&pool);
    kf_db_destroy(&db);
    return ex;
}
