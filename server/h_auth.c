/*
 * h_auth.c - agent sessions: log in, log out, who am I.
 *
 * Login checks the password with argon2id outside any transaction (it is
 * slow on purpose) and is throttled per account ("login:<login>") and per
 * client address ("ip:<peer>") in login_throttle.  Every attempt is charged
 * as a failure *before* the password is checked and refunded on success, so
 * parallel guesses cannot slip past the limit: once login_max_failures
 * attempts failed within login_window, the account or address is refused
 * with 429 for login_lockout seconds, even with the right password.  Before
 * that each failure answers after a growing delay.  An unknown login is
 * checked against a dummy hash and answers exactly like a wrong password.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "kefu/auth.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/http.h"
#include "kefu/log.h"
#include "kefu/pool.h"
#include "kefu/server.h"

#define SESSION_COOKIE "kefu_session"
#define LOGIN_MAX_BODY 4096
#define FAILURE_DELAY_MS 100   /* per failure counted so far */
#define FAILURE_DELAY_MAX_MS 1000

/* ---- throttling ---- */

struct charge_tx {
    const char *keys[2];  /* in: account and address keys */
    unsigned max, window; /* in */
    int refused;          /* out: 1 = locked (or saturated) */
    unsigned retry_after; /* out: seconds */
};

/*
 * Lock both rows, refuse when either is locked or already has max charged
 * attempts in the window, otherwise charge one attempt to each.  A window
 * that ran out or a lockout that ended starts the count again.
 */
static int
charge_tx(kf_db *db, void *arg, const char **error_r)
{
    struct charge_tx *t = arg;
    kf_stmt *st;
    int rc;

    t->refused = 0;
    t->retry_after = 0;
    for (int i = 0; i < 2; i++) {
        /*
         * Make sure the row exists and hold its lock (a no-op update still
         * locks), so concurrent first attempts queue up here instead of
         * all passing the check below.
         */
        if ((rc = kf_db_stmt(db, "login.throttle_row",
                             "INSERT INTO login_throttle (k, failures, window_start) "
                             "VALUES (?, 0, NOW(6)) ON DUPLICATE KEY UPDATE k = k",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_cstr(st, 0, t->keys[i]);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        if ((rc = kf_db_stmt(db, "login.throttle_get",
                             "SELECT failures, "
                             " (window_start < NOW(6) - INTERVAL ? SECOND) OR "
                             " (locked_until IS NOT NULL AND locked_until <= NOW(6)), "
                             " COALESCE(locked_until > NOW(6), 0), "
                             " COALESCE(CEIL(TIMESTAMPDIFF(MICROSECOND, NOW(6), locked_until) "
                             "  / 1000000), 0) "
                             "FROM login_throttle WHERE k = ? FOR UPDATE",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, t->window);
        kf_stmt_bind_cstr(st, 1, t->keys[i]);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        if ((rc = kf_stmt_fetch(st, error_r)) < 0)
            return rc;
        if (rc == 1) {
            uint64_t failures = kf_stmt_col_u64(st, 0);
            int stale = (int) kf_stmt_col_i64(st, 1);
            int locked = (int) kf_stmt_col_i64(st, 2);
            int64_t left = kf_stmt_col_i64(st, 3);
            if (locked) {
                t->refused = 1;
                if (left < 1)
                    left = 1;
                if ((uint64_t) left > t->retry_after)
                    t->retry_after = (unsigned) left;
            } else if (!stale && failures >= t->max) {
                /* Attempts still being checked fill the allowance: come back shortly. */
                t->refused = 1;
                if (t->retry_after == 0)
                    t->retry_after = 1;
            }
        }
        kf_stmt_done(st);
    }
    if (t->refused)
        return KF_OK;
    for (int i = 0; i < 2; i++) {
        /*
         * The row exists and is ours.  Assignments only read columns not
         * yet assigned, so their evaluation order does not matter.
         */
        if ((rc = kf_db_stmt(db, "login.throttle_charge",
                             "UPDATE login_throttle SET "
                             " failures = IF(window_start < NOW(6) - INTERVAL ? SECOND OR "
                             "  locked_until IS NOT NULL, 1, failures + 1), "
                             " window_start = IF(window_start < NOW(6) - INTERVAL ? SECOND OR "
                             "  locked_until IS NOT NULL, NOW(6), window_start), "
                             " locked_until = NULL "
                             "WHERE k = ?",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, t->window);
        kf_stmt_bind_u64(st, 1, t->window);
        kf_stmt_bind_cstr(st, 2, t->keys[i]);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
    }
    return KF_OK;
}

struct fail_tx {
    const char *keys[2];
    unsigned max, lockout;
    uint64_t failures; /* out: the larger count */
};

/* The attempt was charged already: lock what reached the limit. */
static int
fail_tx(kf_db *db, void *arg, const char **error_r)
{
    struct fail_tx *t = arg;
    kf_stmt *st;
    int rc;

    t->failures = 0;
    for (int i = 0; i < 2; i++) {
        if ((rc = kf_db_stmt(db, "login.throttle_lock",
                             "UPDATE login_throttle SET locked_until = "
                             " IF(failures >= ?, NOW(6) + INTERVAL ? SECOND, NULL) WHERE k = ?",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, t->max);
        kf_stmt_bind_u64(st, 1, t->lockout);
        kf_stmt_bind_cstr(st, 2, t->keys[i]);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        if ((rc = kf_db_stmt(db, "login.throttle_count",
                             "SELECT failures FROM login_throttle WHERE k = ?", &st, error_r)) !=
            KF_OK)
            return rc;
        kf_stmt_bind_cstr(st, 0, t->keys[i]);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        if ((rc = kf_stmt_fetch(st, error_r)) < 0)
            return rc;
        if (rc == 1 && kf_stmt_col_u64(st, 0) > t->failures)
            t->failures = kf_stmt_col_u64(st, 0);
        kf_stmt_done(st);
    }
    return KF_OK;
}

/* ---- login ---- */

struct login_tx {
    const char *account_key, *ip_key;         /* in */
    uint64_t agent_id;                        /* in */
    const char *token_hash, *csrf, *ip, *ua;  /* in */
    unsigned ttl;                             /* in */
    kf_pool *pool;                            /* in */
    const char *expires_at;                   /* out */
};

/* Success: clear the account's count, refund the address's charge, open the session. */
static int
login_tx(kf_db *db, void *arg, const char **error_r)
{
    struct login_tx *t = arg;
    kf_stmt *st;
    int rc;

    if ((rc = kf_db_stmt(db, "login.throttle_reset", "DELETE FROM login_throttle WHERE k = ?", &st,
                         error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->account_key);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_db_stmt(db, "login.throttle_refund",
                         "UPDATE login_throttle SET failures = failures - 1 "
                         "WHERE k = ? AND failures > 0 AND locked_until IS NULL",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->ip_key);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_db_stmt(db, "login.session_create",
                         "INSERT INTO session (token_hash, agent_id, csrf_token, ip, user_agent, "
                         "expires_at) VALUES (?, ?, ?, ?, ?, NOW(6) + INTERVAL ? SECOND)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->token_hash);
    kf_stmt_bind_u64(st, 1, t->agent_id);
    kf_stmt_bind_cstr(st, 2, t->csrf);
    kf_stmt_bind_cstr(st, 3, t->ip);
    kf_stmt_bind_cstr(st, 4, t->ua);
    kf_stmt_bind_u64(st, 5, t->ttl);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_db_stmt(db, "login.session_expires",
                         "SELECT " KF_TIME_SQL("expires_at") " FROM session WHERE token_hash = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->token_hash);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_stmt_fetch(st, error_r)) != 1) {
        kf_stmt_done(st);
        return rc < 0 ? rc : KF_EDB;
    }
    t->expires_at = kf_stmt_col_str(st, 0, t->pool, NULL);
    kf_stmt_done(st);
    return KF_OK;
}

/* The agent a login names (NULL hash when there is none or it is inactive). */
struct agent_row {
    uint64_t id;
    char *login, *display_name, *role, *hash;
};

static int
agent_by_login(kf_call *c, const char *login, struct agent_row *a, const char **error_r)
{
    kf_stmt *st;
    int rc;

    memset(a, 0, sizeof(*a));
    if ((rc = kf_db_stmt(c->db, "login.agent",
                         "SELECT id, login, display_name, role, password_hash FROM agent "
                         "WHERE login = ? AND active = 1",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, login);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_stmt_fetch(st, error_r)) < 0)
        return rc;
    if (rc == 1) {
        a->id = kf_stmt_col_u64(st, 0);
        a->login = kf_stmt_col_str(st, 1, c->pool, NULL);
        a->display_name = kf_stmt_col_str(st, 2, c->pool, NULL);
        a->role = kf_stmt_col_str(st, 3, c->pool, NULL);
        a->hash = kf_stmt_col_str(st, 4, c->pool, NULL);
    }
    kf_stmt_done(st);
    return KF_OK;
}

/* Printable ASCII only, at most max bytes (a header may hold anything). */
static const char *
ascii_clip(kf_pool *pool, const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n > max)
        n = max;
    char *out = kf_pool_alloc(pool, n + 1);
    for (size_t i = 0; i < n; i++)
        out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    return out;
}

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t) (ms / 1000), (long) (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static const char *
session_cookie(kf_call *c, const char *value, unsigned max_age)
{
    return kf_pool_printf(c->pool, "%s=%s; Path=/; Max-Age=%u; HttpOnly; SameSite=Lax%s",
                          SESSION_COOKIE, value, max_age, c->cfg->cookie_secure ? "; Secure" : "");
}

static int
too_many(kf_call *c, kf_reply *out, unsigned retry_after)
{
    char ra[16];
    snprintf(ra, sizeof(ra), "%u", retry_after ? retry_after : 1);
    kf_reply_header(out, c, "Retry-After", ra);
    return kf_reply_problem(out, c, 429, "too-many-attempts",
                            "Too many failed logins for this account or address; try again later.",
                            NULL);
}

/* POST /api/v1/session {login, password} */
static int
h_session_create(kf_call *c, kf_reply *out)
{
    static const char *const fields[] = {"login", "password", NULL};
    json_t *body, *errors = NULL;
    const char *login = NULL, *password = NULL, *error = NULL;
    int rc;

    if (kf_call_json_object(c, &body) != KF_OK)
        return 0;
    kf_json_unknown_fields(body, fields, &errors);
    kf_json_get_str(body, "login", 1, 64, &login, &errors);
    kf_json_get_str(body, "password", 1, 1024, &password, &errors);
    if (errors != NULL)
        return kf_reply_invalid(out, c, errors);

    /* 1. Charge the attempt (or refuse: locked). */
    struct charge_tx ch = {
        .keys = {kf_pool_printf(c->pool, "login:%s", login),
                 kf_pool_printf(c->pool, "ip:%.64s", c->peer ? c->peer : "-")},
        .max = c->cfg->login_max_failures,
        .window = c->cfg->login_window,
    };
    if ((rc = kf_tx_run(c->db, charge_tx, &ch, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    if (ch.refused) {
        char who[80];
        kf_printable(who, sizeof(who), login, strlen(login));
        kf_log(KF_LOG_INFO, "auth", "req=%s event=login-refused login=\"%s\" peer=%s",
               c->request_id, who, c->peer);
        return too_many(c, out, ch.retry_after);
    }

    /* 2. The password, outside any transaction. */
    struct agent_row a;
    if ((rc = agent_by_login(c, login, &a, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    int ok = kf_auth_verify_password(a.id ? a.hash : NULL, password);
    if (a.hash != NULL)
        sodium_memzero(a.hash, strlen(a.hash));

    if (!ok) {
        struct fail_tx f = {.keys = {ch.keys[0], ch.keys[1]},
                            .max = c->cfg->login_max_failures,
                            .lockout = c->cfg->login_lockout};
        if ((rc = kf_tx_run(c->db, fail_tx, &f, &error)) != KF_OK)
            return kf_reply_internal(out, c, error);
        char who[80];
        kf_printable(who, sizeof(who), login, strlen(login));
        kf_log(KF_LOG_INFO, "auth", "req=%s event=login-failed login=\"%s\" peer=%s failures=%llu",
               c->request_id, who, c->peer, (unsigned long long) f.failures);
        uint64_t ms = f.failures * FAILURE_DELAY_MS;
        sleep_ms(ms > FAILURE_DELAY_MAX_MS ? FAILURE_DELAY_MAX_MS : (unsigned) ms);
        kf_reply_header(out, c, "WWW-Authenticate", "Bearer realm=\"kefu\"");
        return kf_reply_problem(out, c, 401, "invalid-credentials",
                                "The login or the password is wrong.", NULL);
    }

    /* 3. A session. */
    char token[44], hash[65], csrf[44];
    kf_auth_new_token(token, hash);
    kf_auth_new_csrf(csrf);
    struct login_tx t = {
        .account_key = ch.keys[0],
        .ip_key = ch.keys[1],
        .agent_id = a.id,
        .token_hash = hash,
        .csrf = csrf,
        .ip = ascii_clip(c->pool, c->peer, 64),
        .ua = ascii_clip(c->pool, kf_call_header(c, "User-Agent"), 255),
        .ttl = c->cfg->session_ttl,
        .pool = c->pool,
    };
    if ((rc = kf_tx_run(c->db, login_tx, &t, &error)) != KF_OK) {
        sodium_memzero(token, sizeof(token));
        return kf_reply_internal(out, c, error);
    }
    kf_log(KF_LOG_INFO, "auth", "req=%s event=login agent=%llu peer=%s", c->request_id,
           (unsigned long long) a.id, c->peer);
    kf_reply_header(out, c, "Set-Cookie", session_cookie(c, token, c->cfg->session_ttl));
    sodium_memzero(token, sizeof(token));
    return kf_reply_json(out, c, 201,
                         json_pack("{s:{s:I, s:s, s:s, s:s}, s:s, s:s}", "agent", "id",
                                   (json_int_t) a.id, "login", a.login, "display_name",
                                   a.display_name, "role", a.role, "csrf_token", csrf,
                                   "expires_at", t.expires_at));
}

/* DELETE /api/v1/session - log out: the session is revoked, the cookie cleared. */
static int
h_session_delete(kf_call *c, kf_reply *out)
{
    const char *error = NULL;
    kf_stmt *st;

    if (c->principal.via_token || c->principal.session_hash == NULL)
        return kf_reply_problem(out, c, 400, "not-a-session",
                                "Only a session cookie can log out; revoke API tokens with "
                                "DELETE /api/v1/tokens/{id}.",
                                NULL);
    if (kf_db_stmt(c->db, "session.revoke",
                   "UPDATE session SET revoked_at = NOW(6) "
                   "WHERE token_hash = ? AND revoked_at IS NULL",
                   &st, &error) != KF_OK ||
        (kf_stmt_bind_cstr(st, 0, c->principal.session_hash), kf_stmt_exec(st, &error)) != KF_OK)
        return kf_reply_internal(out, c, error);
    kf_log(KF_LOG_INFO, "auth", "req=%s event=logout agent=%llu", c->request_id,
           (unsigned long long) c->principal.agent_id);
    kf_reply_header(out, c, "Set-Cookie", session_cookie(c, "", 0));
    return kf_reply_text(out, c, 204, NULL, "", 0);
}

/* GET /api/v1/session/me - the caller: agent, effective role, how they authenticated. */
static int
h_session_me(kf_call *c, kf_reply *out)
{
    const char *error = NULL;
    json_t *agent = NULL;
    kf_stmt *st;
    int rc;

    if (c->principal.agent_id != 0) {
        rc = kf_agent_get(c->db, c->pool, c->principal.agent_id, &agent, &error);
        if (rc != KF_OK && rc != KF_ENOTFOUND)
            return kf_reply_internal(out, c, error);
    }
    json_t *me = json_pack("{s:o, s:s, s:s}", "agent", agent ? agent : json_null(), "role",
                           kf_role_name(c->principal.role), "auth",
                           c->principal.via_token ? "token" : "session");
    if (c->principal.via_token) {
        if ((rc = kf_db_stmt(c->db, "session.me_token",
                             "SELECT id, name, prefix, " KF_TIME_SQL("expires_at")
                             " FROM api_token WHERE id = ?",
                             &st, &error)) != KF_OK ||
            (kf_stmt_bind_u64(st, 0, c->principal.token_id), rc = kf_stmt_exec(st, &error)) !=
                KF_OK ||
            (rc = kf_stmt_fetch(st, &error)) < 0) {
            json_decref(me);
            return kf_reply_internal(out, c, error);
        }
        if (rc == 1)
            json_object_set_new(me, "token",
                                json_pack("{s:I, s:s, s:s, s:s?}", "id",
                                          (json_int_t) kf_stmt_col_u64(st, 0), "name",
                                          kf_stmt_col_str(st, 1, c->pool, NULL), "prefix",
                                          kf_stmt_col_str(st, 2, c->pool, NULL), "expires_at",
                                          kf_stmt_col_str(st, 3, c->pool, NULL)));
        kf_stmt_done(st);
    } else {
        if ((rc = kf_db_stmt(c->db, "session.me",
                             "SELECT csrf_token, " KF_TIME_SQL("expires_at") ", "
                             KF_TIME_SQL("created_at") " FROM session WHERE token_hash = ?",
                             &st, &error)) != KF_OK ||
            (kf_stmt_bind_cstr(st, 0, c->principal.session_hash),
             rc = kf_stmt_exec(st, &error)) != KF_OK ||
            (rc = kf_stmt_fetch(st, &error)) < 0) {
            json_decref(me);
            return kf_reply_internal(out, c, error);
        }
        if (rc == 1) {
            json_object_set_new(me, "csrf_token",
                                json_string(kf_stmt_col_str(st, 0, c->pool, NULL)));
            json_object_set_new(me, "expires_at",
                                json_string(kf_stmt_col_str(st, 1, c->pool, NULL)));
            json_object_set_new(me, "created_at",
                                json_string(kf_stmt_col_str(st, 2, c->pool, NULL)));
        }
        kf_stmt_done(st);
    }
    return kf_reply_json(out, c, 200, me);
}

/* GET|POST /debug/auth/token-only - tests of the token-only auth class (debug_routes only). */
static int
h_debug_token_only(kf_call *c, kf_reply *out)
{
    return kf_reply_json(out, c, 200,
                         json_pack("{s:s, s:I, s:I}", "role", kf_role_name(c->principal.role),
                                   "agent_id", (json_int_t) c->principal.agent_id, "token_id",
                                   (json_int_t) c->principal.token_id));
}

const kf_route kf_auth_routes[] = {
    {KF_POST, "/api/v1/session", KF_AUTH_PUBLIC, LOGIN_MAX_BODY, h_session_create, 0,
     "session.create"},
    {KF_DELETE, "/api/v1/session", KF_AUTH_AGENT, 0, h_session_delete, 0, "session.delete"},
    {KF_GET, "/api/v1/session/me", KF_AUTH_AGENT, 0, h_session_me, 0, "session.me"},
    {KF_GET, "/debug/auth/token-only", KF_AUTH_TOKEN, 0, h_debug_token_only, KF_ROUTE_DEBUG,
     "debug.token_only.get"},
    {KF_POST, "/debug/auth/token-only", KF_AUTH_TOKEN, 1024, h_debug_token_only, KF_ROUTE_DEBUG,
     "debug.token_only.post"},
    {0, NULL, 0, 0, NULL, 0, NULL},
};
