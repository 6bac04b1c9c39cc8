/*
 * auth.c - who is calling: API tokens (Bearer) and agent sessions (cookie
 * + CSRF header), roles, queue scope.
 *
 * Tokens and session ids are 256-bit random values; only their SHA-256 is
 * stored, and lookups go by that hash (a unique key), so no secret is ever
 * compared byte by byte in a way that leaks timing.  The CSRF token is
 * compared in constant time.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>

#include <sodium.h>

#include "kefu/auth.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/http.h"
#include "kefu/log.h"
#include "kefu/pool.h"

#define SESSION_COOKIE "kefu_session"

int
kf_role_parse(const char *s)
{
    if (s == NULL)
        return KF_ROLE_NONE;
    if (!strcmp(s, "agent"))
        return KF_ROLE_AGENT;
    if (!strcmp(s, "supervisor"))
        return KF_ROLE_SUPERVISOR;
    if (!strcmp(s, "admin"))
        return KF_ROLE_ADMIN;
    return KF_ROLE_NONE;
}

const char *
kf_role_name(int role)
{
    switch (role) {
    case KF_ROLE_AGENT: return "agent";
    case KF_ROLE_SUPERVISOR: return "supervisor";
    case KF_ROLE_ADMIN: return "admin";
    default: return "none";
    }
}

int
kf_auth_hash_password(const char *password, char *hash, size_t hashsz)
{
    if (hashsz < crypto_pwhash_STRBYTES)
        return KF_EINVAL;
    if (crypto_pwhash_str_alg(hash, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return KF_ERR;
    return KF_OK;
}

void
kf_auth_token_hash(const char *token, size_t len, char hash_hex[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *) token, len);
    sodium_bin2hex(hash_hex, 65, h, sizeof(h));
}

void
kf_auth_new_token(char token[44], char hash_hex[65])
{
    unsigned char r[32];
    randombytes_buf(r, sizeof(r));
    sodium_bin2base64(token, 44, r, sizeof(r), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(r, sizeof(r));
    kf_auth_token_hash(token, strlen(token), hash_hex);
}

void
kf_auth_new_csrf(char csrf[44])
{
    unsigned char r[32];
    randombytes_buf(r, sizeof(r));
    sodium_bin2base64(csrf, 44, r, sizeof(r), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(r, sizeof(r));
}

static char dummy_hash[crypto_pwhash_STRBYTES];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;

/* A hash of a random password with the same parameters as real ones. */
static void
dummy_init(void)
{
    char pw[33];
    kf_auth_random_password(pw, sizeof(pw));
    if (kf_auth_hash_password(pw, dummy_hash, sizeof(dummy_hash)) != KF_OK)
        kf_panic("cannot hash the dummy password (out of memory?)");
    sodium_memzero(pw, sizeof(pw));
}

int
kf_auth_verify_password(const char *hash, const char *password)
{
    /* First call of the process pays for the dummy hash, whichever branch it takes. */
    pthread_once(&dummy_once, dummy_init);
    int real = hash != NULL && strncmp(hash, crypto_pwhash_argon2id_STRPREFIX,
                                       strlen(crypto_pwhash_argon2id_STRPREFIX)) == 0 &&
               strlen(hash) < crypto_pwhash_STRBYTES;
    if (!real) {
        volatile int burn = crypto_pwhash_str_verify(dummy_hash, password, strlen(password));
        (void) burn;
        return 0;
    }
    return crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
}

void
kf_auth_random_password(char *out, size_t n)
{
    static const char alphabet[] = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
    if (n == 0)
        return;
    for (size_t i = 0; i + 1 < n; i++)
        out[i] = alphabet[randombytes_uniform(sizeof(alphabet) - 1)];
    out[n - 1] = '\0';
}

int
kf_login_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64 || !isalnum((unsigned char) s[0]))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char) s[i];
        if (!(isalnum(ch) || ch == '.' || ch == '_' || ch == '@' || ch == '-') || ch >= 0x80)
            return 0;
    }
    return 1;
}

int
kf_email_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    const char *at = s ? strrchr(s, '@') : NULL;
    if (n < 3 || n > 254 || at == NULL || at == s || at[1] == '\0' || strchr(s, '@') != at)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char) s[i];
        if (ch <= 0x20 || ch == 0x7f || ch == '<' || ch == '>' || ch == ',' || ch == ';' ||
            ch == '"' || ch == '\\')
            return 0;
    }
    return at[1] != '.' && s[n - 1] != '.';
}

int
kf_slug_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
            return 0;
    }
    return 1;
}

int
kf_password_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n >= 8 && n <= 1024;
}

int
kf_auth_revoke_sessions(kf_db *db, uint64_t agent_id, uint64_t *n_r, const char **error_r)
{
    kf_stmt *st;
    int rc;
    if ((rc = kf_db_stmt(db, "auth.revoke_agent",
                         "UPDATE session SET revoked_at = NOW(6) "
                         "WHERE agent_id = ? AND revoked_at IS NULL AND expires_at > NOW(6)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, agent_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if (n_r != NULL)
        *n_r = kf_stmt_affected(st);
    return KF_OK;
}

int
kf_auth_purge(kf_db *db, const kf_config *cfg, const char **error_r)
{
    kf_stmt *st;
    int rc;
    if ((rc =
             kf_db_stmt(db, "auth.purge_sessions",
                        "DELETE FROM session WHERE expires_at < NOW(6) - INTERVAL 1 DAY LIMIT 1000",
                        &st, error_r)) != KF_OK ||
        (rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_db_stmt(
             db, "auth.purge_throttle",
             "DELETE FROM login_throttle WHERE window_start < NOW(6) - INTERVAL ? SECOND "
             "AND (locked_until IS NULL OR locked_until < NOW(6)) LIMIT 1000",
             &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, cfg->login_window);
    return kf_stmt_exec(st, error_r);
}

/* Minimum role for a route's auth class. */
static int
required_role(int auth)
{
    switch (auth) {
    case KF_AUTH_AGENT: return KF_ROLE_AGENT;
    case KF_AUTH_SUPERVISOR: return KF_ROLE_SUPERVISOR;
    case KF_AUTH_ADMIN: return KF_ROLE_ADMIN;
    case KF_AUTH_TOKEN: return KF_ROLE_AGENT;
    default: return KF_ROLE_NONE;
    }
}

static int
refuse(kf_call *c, int status, const char *code, const char *detail)
{
    if (status == 401)
        kf_reply_header(&c->reply, c, "WWW-Authenticate", "Bearer realm=\"kefu\"");
    kf_reply_problem(&c->reply, c, status, code, detail, NULL);
    return KF_ERR;
}

const char *
kf_cookie_get(const char *header, const char *name, size_t *len_r)
{
    const char *h = header;
    size_t nl = strlen(name);
    while (h != NULL && *h) {
        while (*h == ' ' || *h == '\t' || *h == ';')
            h++;
        const char *semi = strchr(h, ';');
        size_t len = semi ? (size_t) (semi - h) : strlen(h);
        if (len > nl && h[nl] == '=' && strncmp(h, name, nl) == 0) {
            const char *v = h + nl + 1;
            size_t vl = len - nl - 1;
            while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') { /* RFC 6265 quoted value */
                v++;
                vl -= 2;
            }
            *len_r = vl;
            return v;
        }
        h = semi;
    }
    return NULL;
}

/* Value of cookie name in the request's Cookie header, copied into the pool, or NULL. */
static const char *
cookie_value(kf_call *c, const char *name)
{
    size_t len = 0;
    const char *v = kf_cookie_get(kf_call_header(c, "Cookie"), name, &len);
    return v ? kf_pool_strndup(c->pool, v, len) : NULL;
}

/*
 * Per-thread memory of recent last_used_at / last_seen_at writes: a small
 * direct-mapped table keyed by id.  Forgetting is harmless (one extra
 * UPDATE that matches nothing); the SQL keeps its own once-a-minute guard.
 */
#define TOUCH_SLOTS 64
static _Thread_local struct {
    uint64_t key;
    time_t at;
} touched[TOUCH_SLOTS];

static int
touch_due(uint64_t key)
{
    time_t now = time(NULL);
    unsigned slot = (unsigned) ((key * 0x9E3779B97F4A7C15ull) >> 58) % TOUCH_SLOTS;
    if (touched[slot].key == key && now - touched[slot].at < 30)
        return 0;
    touched[slot].key = key;
    touched[slot].at = now;
    return 1;
}

/*
 * Per-worker-thread cache of Bearer-token lookups.
 *
 * What a token's hash leads to - the row's id, its role and the agent it is
 * bound to - never changes: api_token rows are only ever revoked, expire, or
 * go away with their agent.  A worker therefore remembers its last lookups,
 * keyed by the token's SHA-256 (binary), which is compared in full and in
 * constant time: a wrong token never matches an entry and is looked up in the
 * database as before.  Failed lookups are not cached.
 *
 * What can change - revoked_at, expires_at, the bound agent's active flag -
 * is still checked on every request, so revocation takes effect at once,
 * exactly as without the cache.  The cache is only used on routes whose
 * handler does that check inside its own first statement
 * (KF_AUTH_TOKEN_VALID_SQL, then kf_auth_confirmed(); or kf_auth_confirm()),
 * which saves the lookup's round trip: see folds_token_check().  Every other
 * route looks the token up here, as it always did.  An entry lives at most
 * TOKEN_TTL seconds (hygiene only: the mapping cannot go stale).
 */
#define TOKEN_SLOTS 64
#define TOKEN_TTL 60
static _Thread_local struct token_entry {
    unsigned char hash[crypto_hash_sha256_BYTES];
    uint64_t token_id, agent_id;
    int role;
    time_t until; /* 0 = empty */
} token_cache[TOKEN_SLOTS];

/* The principal of this call came from the cache and is not confirmed valid yet. */
static _Thread_local struct {
    const kf_call *c;
    uint64_t token_id;
    unsigned char hash[crypto_hash_sha256_BYTES];
} unconfirmed;

static struct token_entry *
token_slot(const unsigned char h[crypto_hash_sha256_BYTES])
{
    return &token_cache[((unsigned) h[0] | (unsigned) h[1] << 8) % TOKEN_SLOTS];
}

static time_t
mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

/* Routes whose handler checks a cached token itself (server/h_tickets.c). */
static int
folds_token_check(const kf_route *r)
{
    return r != NULL && r->auth != KF_AUTH_PUBLIC && r->pattern != NULL &&
           ((r->methods == KF_GET && strcmp(r->pattern, "/api/v1/tickets/{id}") == 0) ||
            (r->methods == KF_POST && strcmp(r->pattern, "/api/v1/tickets") == 0));
}

static void
token_used(kf_call *c, uint64_t token_id)
{
    kf_stmt *st;
    const char *error = NULL;
    /* last_used_at, at most once a minute per token to keep writes down;
     * this thread remembers when it last wrote it, so most requests skip
     * even the round trip. */
    if (touch_due(token_id) &&
        kf_db_stmt(c->db, "auth.token_used",
                   "UPDATE api_token SET last_used_at = NOW(6) WHERE id = ? AND "
                   "(last_used_at IS NULL OR last_used_at < NOW(6) - INTERVAL 60 SECOND)",
                   &st, &error) == KF_OK) {
        kf_stmt_bind_u64(st, 0, token_id);
        kf_stmt_exec(st, &error);
    }
}

/* From the cache: 1 = c->principal is set (unconfirmed), 0 = not cached. */
static int
token_cached(kf_call *c, const unsigned char h[crypto_hash_sha256_BYTES])
{
    struct token_entry *e = token_slot(h);
    if (e->until == 0 || sodium_memcmp(e->hash, h, sizeof(e->hash)) != 0)
        return 0;
    if (mono_now() >= e->until) {
        sodium_memzero(e, sizeof(*e));
        return 0;
    }
    c->principal.token_id = e->token_id;
    c->principal.agent_id = e->agent_id;
    c->principal.role = e->role;
    unconfirmed.c = c;
    unconfirmed.token_id = e->token_id;
    memcpy(unconfirmed.hash, h, sizeof(unconfirmed.hash));
    return 1;
}

static void
token_remember(const unsigned char h[crypto_hash_sha256_BYTES], const kf_principal *p)
{
    struct token_entry *e = token_slot(h);
    memcpy(e->hash, h, sizeof(e->hash));
    e->token_id = p->token_id;
    e->agent_id = p->agent_id;
    e->role = p->role;
    e->until = mono_now() + TOKEN_TTL;
}

static void
token_forget(const unsigned char h[crypto_hash_sha256_BYTES])
{
    struct token_entry *e = token_slot(h);
    if (sodium_memcmp(e->hash, h, sizeof(e->hash)) == 0)
        sodium_memzero(e, sizeof(*e));
}

uint64_t
kf_auth_unconfirmed_token(const kf_call *c)
{
    return unconfirmed.c == c && c != NULL ? unconfirmed.token_id : 0;
}

int
kf_auth_confirmed(kf_call *c, kf_reply *out, int valid)
{
    uint64_t token_id = kf_auth_unconfirmed_token(c);
    if (token_id == 0)
        return KF_OK;
    unconfirmed.c = NULL;
    unconfirmed.token_id = 0;
    if (valid) {
        token_used(c, token_id);
        return KF_OK;
    }
    /* Revoked, expired or the agent deactivated since it was cached. */
    token_forget(unconfirmed.hash);
    memset(&c->principal, 0, sizeof(c->principal));
    memset(out, 0, sizeof(*out));
    kf_reply_header(out, c, "WWW-Authenticate", "Bearer realm=\"kefu\"");
    kf_reply_problem(out, c, 401, "unauthorized", "The API token is invalid, expired or revoked.",
                     NULL);
    return KF_ERR;
}

int
kf_auth_confirm(kf_call *c, kf_reply *out)
{
    uint64_t token_id = kf_auth_unconfirmed_token(c);
    kf_stmt *st;
    const char *error = NULL;
    int rc;

    if (token_id == 0)
        return KF_OK;
    if ((rc = kf_db_stmt(c->db, "auth.token_valid", "SELECT " KF_AUTH_TOKEN_VALID_SQL, &st,
                         &error)) == KF_OK) {
        kf_stmt_bind_u64(st, 0, token_id);
        if ((rc = kf_stmt_exec(st, &error)) == KF_OK && (rc = kf_stmt_fetch(st, &error)) == 1) {
            int valid = kf_stmt_col_i64(st, 0) != 0;
            kf_stmt_done(st);
            return kf_auth_confirmed(c, out, valid);
        }
    }
    unconfirmed.c = NULL;
    unconfirmed.token_id = 0;
    memset(&c->principal, 0, sizeof(c->principal));
    memset(out, 0, sizeof(*out));
    kf_reply_internal(out, c, "token lookup failed");
    return KF_ERR;
}

void
kf_auth_after_handler(kf_call *c)
{
    if (kf_auth_unconfirmed_token(c) == 0)
        return;
    kf_log(KF_LOG_ERR, "auth", "req=%s event=token-unconfirmed route=\"%s\" "
           "msg=\"the handler replied without confirming a cached token\"",
           c->request_id ? c->request_id : "-", c->route && c->route->pattern ? c->route->pattern
                                                                                : "-");
    kf_auth_confirm(c, &c->reply);
}

static int
token_lookup(kf_call *c, const char *token)
{
    char hash[65];
    unsigned char h[crypto_hash_sha256_BYTES];
    kf_stmt *st;
    const char *error = NULL;
    int rc;

    crypto_hash_sha256(h, (const unsigned char *) token, strlen(token));
    if (folds_token_check(c->route) && token_cached(c, h))
        return KF_OK; /* confirmed by the handler */
    sodium_bin2hex(hash, sizeof(hash), h, sizeof(h));
    if ((rc = kf_db_stmt(c->db, "auth.token",
                         "SELECT t.id, t.role, COALESCE(t.agent_id, 0), "
                         " (t.agent_id IS NULL OR a.active = 1) "
                         "FROM api_token t LEFT JOIN agent a ON a.id = t.agent_id "
                         "WHERE t.token_hash = ? AND t.revoked_at IS NULL "
                         " AND (t.expires_at IS NULL OR t.expires_at > NOW(6))",
                         &st, &error)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, hash);
    if ((rc = kf_stmt_exec(st, &error)) != KF_OK)
        return rc;
    rc = kf_stmt_fetch(st, &error);
    if (rc != 1) {
        kf_stmt_done(st);
        return rc < 0 ? rc : KF_ENOTFOUND;
    }
    uint64_t token_id = kf_stmt_col_u64(st, 0);
    char *role = kf_stmt_col_str(st, 1, c->pool, NULL);
    c->principal.agent_id = kf_stmt_col_u64(st, 2);
    int active = (int) kf_stmt_col_i64(st, 3);
    kf_stmt_done(st);
    if (!active)
        return KF_ENOTFOUND;
    c->principal.role = kf_role_parse(role);
    c->principal.token_id = token_id;
    if (c->principal.role != KF_ROLE_NONE)
        token_remember(h, &c->principal);
    token_used(c, token_id);
    return KF_OK;
}

/* A session: valid, not revoked, not expired, not idle too long.  Touches last_seen_at. */
static int
session_lookup(kf_call *c, const char *token, const char **csrf_r)
{
    char hash[65];
    kf_stmt *st;
    const char *error = NULL;
    int rc;

    kf_auth_token_hash(token, strlen(token), hash);
    if ((rc = kf_db_stmt(c->db, "auth.session",
                         "SELECT s.agent_id, a.role, s.csrf_token FROM session s "
                         "JOIN agent a ON a.id = s.agent_id "
                         "WHERE s.token_hash = ? AND s.revoked_at IS NULL AND a.active = 1 "
                         " AND s.expires_at > NOW(6) "
                         " AND s.last_seen_at > NOW(6) - INTERVAL ? SECOND",
                         &st, &error)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, hash);
    kf_stmt_bind_u64(st, 1, c->cfg->session_idle);
    if ((rc = kf_stmt_exec(st, &error)) != KF_OK)
        return rc;
    rc = kf_stmt_fetch(st, &error);
    if (rc != 1) {
        kf_stmt_done(st);
        return rc < 0 ? rc : KF_ENOTFOUND;
    }
    c->principal.agent_id = kf_stmt_col_u64(st, 0);
    c->principal.role = kf_role_parse(kf_stmt_col_str(st, 1, c->pool, NULL));
    *csrf_r = kf_stmt_col_str(st, 2, c->pool, NULL);
    kf_stmt_done(st);
    c->principal.session_hash = kf_pool_strdup(c->pool, hash);
    if (touch_due(strtoull(hash + 48, NULL, 16) | 1ull << 63) &&
        kf_db_stmt(c->db, "auth.session_seen",
                   "UPDATE session SET last_seen_at = NOW(6) WHERE token_hash = ? AND "
                   "last_seen_at < NOW(6) - INTERVAL 30 SECOND",
                   &st, &error) == KF_OK) {
        kf_stmt_bind_cstr(st, 0, hash);
        kf_stmt_exec(st, &error);
    }
    return KF_OK;
}

static int
token_shape_ok(const char *t)
{
    size_t n = strlen(t);
    if (n < 16 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = t[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return 0;
    }
    return 1;
}

int
kf_auth_authenticate(kf_call *c)
{
    const char *authz = kf_call_header(c, "Authorization");
    const char *cookie = NULL;
    int need = required_role(c->route->auth);
    int rc;

    memset(&c->principal, 0, sizeof(c->principal));
    unconfirmed.c = NULL;
    unconfirmed.token_id = 0;
    if (c->db == NULL) { /* an inline route: no database on the I/O thread */
        if (c->route->auth == KF_AUTH_PUBLIC)
            return KF_OK;
        return kf_reply_internal(&c->reply, c, "inline route needs authentication"), KF_ERR;
    }
    /* 1. Credentials: a Bearer token wins over a cookie. */
    if (authz != NULL && strncasecmp(authz, "Bearer ", 7) == 0) {
        const char *tok = authz + 7;
        while (*tok == ' ')
            tok++;
        rc = token_shape_ok(tok) ? token_lookup(c, tok) : KF_ENOTFOUND;
        if (rc != KF_OK && c->route->auth == KF_AUTH_PUBLIC) {
            memset(&c->principal, 0, sizeof(c->principal)); /* public: go on as anonymous */
            return KF_OK;
        }
        if (rc == KF_ENOTFOUND)
            return refuse(c, 401, "unauthorized", "The API token is invalid, expired or revoked.");
        if (rc != KF_OK)
            return kf_reply_internal(&c->reply, c, "token lookup failed"), KF_ERR;
        c->principal.via_token = 1;
    } else if ((cookie = cookie_value(c, SESSION_COOKIE)) != NULL && token_shape_ok(cookie)) {
        /* Read on token-only routes too, so a logged-in agent gets 403 there, not 401. */
        const char *csrf = NULL;
        rc = session_lookup(c, cookie, &csrf);
        if (rc != KF_OK && c->route->auth == KF_AUTH_PUBLIC) {
            memset(&c->principal, 0, sizeof(c->principal));
            return KF_OK;
        }
        if (rc == KF_ENOTFOUND)
            return refuse(c, 401, "unauthorized", "The session has ended; log in again.");
        if (rc != KF_OK)
            return kf_reply_internal(&c->reply, c, "session lookup failed"), KF_ERR;
        /* 2. CSRF: every state-changing cookie request echoes the token. */
        if (c->method & (KF_POST | KF_PUT | KF_PATCH | KF_DELETE)) {
            const char *sent = kf_call_header(c, "X-CSRF-Token");
            if (sent == NULL || csrf == NULL ||
                !kf_memeq_ct(sent, strlen(sent), csrf, strlen(csrf))) {
                memset(&c->principal, 0, sizeof(c->principal));
                if (c->route->auth == KF_AUTH_PUBLIC)
                    return KF_OK; /* e.g. logging in again: go on as anonymous */
                return refuse(c, 403, "csrf", "Missing or wrong X-CSRF-Token header.");
            }
        }
    }
    /* 3. Role. */
    if (need == KF_ROLE_NONE)
        return KF_OK;
    if (c->principal.role == KF_ROLE_NONE)
        return refuse(c, 401, "unauthorized", "Authentication is required.");
    /* A token from the cache is confirmed before any refusal, so a revoked
     * one still answers 401 rather than 403. */
    if (((c->route->auth == KF_AUTH_TOKEN && !c->principal.via_token) ||
         c->principal.role < need) &&
        kf_auth_confirm(c, &c->reply) != KF_OK)
        return KF_ERR;
    if (c->route->auth == KF_AUTH_TOKEN && !c->principal.via_token)
        return refuse(c, 403, "forbidden", "This resource takes an API token.");
    if (c->principal.role < need) {
        char *detail = kf_pool_printf(c->pool, "This needs the %s role; you are %s.",
                                      kf_role_name(need), kf_role_name(c->principal.role));
        return refuse(c, 403, "forbidden", detail);
    }
    return KF_OK;
}

int
kf_auth_queue_allowed_known(const kf_call *c, int has_queue, int member)
{
    if (c->principal.role >= KF_ROLE_SUPERVISOR)
        return 1;
    if (c->principal.role != KF_ROLE_AGENT || !has_queue || c->principal.agent_id == 0)
        return 0;
    return member;
}

int
kf_auth_queue_allowed(kf_call *c, uint64_t queue_id, int has_queue)
{
    kf_stmt *st;
    const char *error = NULL;
    if (c->principal.role >= KF_ROLE_SUPERVISOR || c->principal.role != KF_ROLE_AGENT ||
        !has_queue || c->principal.agent_id == 0)
        return kf_auth_queue_allowed_known(c, has_queue, 0);
    if (kf_db_stmt(c->db, "auth.queue_member",
                   "SELECT 1 FROM agent_queue WHERE agent_id = ? AND queue_id = ?", &st,
                   &error) != KF_OK)
        return 0;
    kf_stmt_bind_u64(st, 0, c->principal.agent_id);
    kf_stmt_bind_u64(st, 1, queue_id);
    if (kf_stmt_exec(st, &error) != KF_OK)
        return 0;
    int ok = kf_stmt_fetch(st, &error) == 1;
    kf_stmt_done(st);
    return ok;
}

int
kf_auth_queue_check(kf_call *c, kf_reply *out, uint64_t queue_id, int has_queue, int *allowed_r)
{
    uint64_t token_id = kf_auth_unconfirmed_token(c);
    kf_stmt *st;
    const char *error = NULL;

    *allowed_r = 0;
    if (c->principal.role != KF_ROLE_AGENT || !has_queue || c->principal.agent_id == 0) {
        /* No membership to look up: supervisors+ may, anyone else may not. */
        if (kf_auth_confirm(c, out) != KF_OK)
            return KF_ERR;
        *allowed_r = kf_auth_queue_allowed_known(c, has_queue, 0);
        return KF_OK;
    }
    if (token_id == 0) {
        *allowed_r = kf_auth_queue_allowed(c, queue_id, has_queue);
        return KF_OK;
    }
    /* The membership and the cached token's validity in one statement. */
    if (kf_db_stmt(c->db, "auth.queue_member_token",
                   "SELECT EXISTS (SELECT 1 FROM agent_queue WHERE agent_id = ? AND queue_id = ?), "
                   KF_AUTH_TOKEN_VALID_SQL,
                   &st, &error) != KF_OK)
        return kf_auth_confirm(c, out); /* 500 (or 401) and KF_ERR, or go on refused */
    kf_stmt_bind_u64(st, 0, c->principal.agent_id);
    kf_stmt_bind_u64(st, 1, queue_id);
    kf_stmt_bind_u64(st, 2, token_id);
    if (kf_stmt_exec(st, &error) != KF_OK || kf_stmt_fetch(st, &error) != 1) {
        kf_stmt_done(st);
        return kf_auth_confirm(c, out);
    }
    int member = kf_stmt_col_i64(st, 0) != 0;
    int valid = kf_stmt_col_i64(st, 1) != 0;
    kf_stmt_done(st);
    if (kf_auth_confirmed(c, out, valid) != KF_OK)
        return KF_ERR;
    *allowed_r = member;
    return KF_OK;
}

/* "1,5,9" (GROUP_CONCAT) -> [1,5,9] */
static json_t *
id_list_json(const char *s)
{
    json_t *a = json_array();
    while (s != NULL && *s) {
        char *end = NULL;
        unsigned long long v = strtoull(s, &end, 10);
        if (end == s)
            break;
        json_array_append_new(a, json_integer((json_int_t) v));
        s = *end == ',' ? end + 1 : end;
    }
    return a;
}

json_t *
kf_agent_row_json(kf_stmt *st, kf_pool *pool)
{
    char *skills_text = kf_stmt_col_str(st, 7, pool, NULL);
    json_t *skills = skills_text ? json_loads(skills_text, 0, NULL) : NULL;
    if (!json_is_array(skills)) {
        json_decref(skills);
        skills = json_array();
    }
    return json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:I, s:o, s:b, s:s?, s:s?, s:o}",
                     "id", (json_int_t) kf_stmt_col_u64(st, 0),
                     "login", kf_stmt_col_str(st, 1, pool, NULL),
                     "display_name", kf_stmt_col_str(st, 2, pool, NULL),
                     "email", kf_stmt_col_str(st, 3, pool, NULL),
                     "role", kf_stmt_col_str(st, 4, pool, NULL),
                     "presence", kf_stmt_col_str(st, 5, pool, NULL),
                     "capacity", (json_int_t) kf_stmt_col_u64(st, 6),
                     "skills", skills,
                     "active", (int) kf_stmt_col_i64(st, 8),
                     "created_at", kf_stmt_col_str(st, 9, pool, NULL),
                     "updated_at", kf_stmt_col_str(st, 10, pool, NULL),
                     "queue_ids", id_list_json(kf_stmt_col_str(st, 11, pool, NULL)));
}

int
kf_agent_get(kf_db *db, kf_pool *pool, uint64_t id, json_t **agent_r, const char **error_r)
{
    return kf_db_row_json(db, pool, "agent.get",
                          "SELECT " KF_AGENT_COLUMNS " FROM agent a WHERE a.id = ?", id,
                          kf_agent_row_json, agent_r, error_r);
}
