/*
 * kefu/auth.h - who is calling: agent sessions (cookie + CSRF), API tokens
 * (Bearer), roles, queue scope, login throttling.
 *
 * Roles are ordered: agent < supervisor < admin.  An agent sees tickets of
 * the queues they are a member of; supervisors and admins see all queues.
 *
 * Threads:   worker threads (everything here may use the database).
 * Errors:    the usual kf_status codes.
 */
#ifndef KEFU_AUTH_H
#define KEFU_AUTH_H

#include <stdint.h>
#include "kefu/types.h"
#include "kefu/http.h"

enum kf_role { KF_ROLE_NONE = 0, KF_ROLE_AGENT = 1, KF_ROLE_SUPERVISOR = 2, KF_ROLE_ADMIN = 3 };

/** "agent" / "supervisor" / "admin" -> enum kf_role; KF_ROLE_NONE when unknown. */
int kf_role_parse(const char *s);
const char *kf_role_name(int role);

/*
 * The server's authentication hook (installed as kf_authenticate at
 * start-up): resolves the session cookie or Bearer token into
 * c->principal, checks the route's auth class and, for cookie sessions on
 * state-changing methods, the X-CSRF-Token header.  On refusal fills
 * c->reply with 401/403 problem+json and returns KF_ERR.
 */
int kf_auth_authenticate(kf_call *c);

/** 1 when the principal may see/act on tickets of queue_id (NULL queue: supervisors+). */
int kf_auth_queue_allowed(kf_call *c, uint64_t queue_id, int has_queue);
/** The same rule with the membership already known (member: the agent is in the queue). */
int kf_auth_queue_allowed_known(const kf_call *c, int has_queue, int member);

/*
 * Bearer tokens from the worker's cache (server/auth.c).  On the routes
 * whose handler opts in (GET /api/v1/tickets/{id}, POST /api/v1/tickets),
 * a token seen before by this worker is not looked up again: c->principal
 * comes from the cache (the id, role and agent a token's hash leads to never
 * change) and is *unconfirmed* until the handler has checked, in one of its
 * own statements, that the token is still valid (not revoked, not expired,
 * its agent active).  Such a handler must confirm before it replies or
 * writes anything, on every path:
 *
 *   - fold KF_AUTH_TOKEN_VALID_SQL (one ? = kf_auth_unconfirmed_token(c))
 *     into a statement and pass its value to kf_auth_confirmed(); or
 *   - call kf_auth_confirm(), which runs that check on its own.
 *
 * Both return KF_OK (confirmed, or nothing to confirm) or KF_ERR with out
 * replaced by the 401 (or 500) the lookup itself would have given, so a
 * revoked token is refused at once, exactly as without the cache.
 */
#define KF_AUTH_TOKEN_VALID_SQL                                                                    \
    "(SELECT COUNT(*) FROM api_token tk LEFT JOIN agent ta ON ta.id = tk.agent_id "               \
    "WHERE tk.id = ? AND tk.revoked_at IS NULL "                                                  \
    "AND (tk.expires_at IS NULL OR tk.expires_at > NOW(6)) "                                      \
    "AND (tk.agent_id IS NULL OR ta.active = 1))"
/*
 * The same check as joins, for a statement that reads one row anyway:
 * KF_AUTH_TOKEN_JOIN_SQL (one ? = the token id; aliases tk and ta) among
 * its FROM clause's joins, KF_AUTH_TOKEN_JOINED_VALID in its columns.
 */
#define KF_AUTH_TOKEN_JOIN_SQL                                                                     \
    "LEFT JOIN api_token tk ON tk.id = ? AND tk.revoked_at IS NULL "                              \
    "AND (tk.expires_at IS NULL OR tk.expires_at > NOW(6)) "                                      \
    "LEFT JOIN agent ta ON ta.id = tk.agent_id "
#define KF_AUTH_TOKEN_JOINED_VALID "(tk.id IS NOT NULL AND (tk.agent_id IS NULL OR ta.active = 1))"
/** The id of c's unconfirmed cached token, or 0 when there is nothing to confirm. */
uint64_t kf_auth_unconfirmed_token(const kf_call *c);
/** Record the folded check's outcome (valid = the KF_AUTH_TOKEN_VALID_SQL value). */
int kf_auth_confirmed(kf_call *c, kf_reply *out, int valid);
/** Confirm with a statement of its own, if still unconfirmed. */
int kf_auth_confirm(kf_call *c, kf_reply *out);
/**
 * The safety net, run after every handler (installed as kf_after_handler):
 * a cached token the handler left unconfirmed - a bug - is logged and
 * confirmed now; when it is no longer valid the reply becomes the 401.
 */
void kf_auth_after_handler(kf_call *c);
/**
 * kf_auth_queue_allowed() that also confirms an unconfirmed token, in the
 * same statement when it needs one: KF_OK with *allowed_r, or KF_ERR with
 * out filled (401 / 500).
 */
int kf_auth_queue_check(kf_call *c, kf_reply *out, uint64_t queue_id, int has_queue,
                        int *allowed_r);

/** Hash a password with argon2id (libsodium); hash must hold crypto_pwhash_STRBYTES. */
int kf_auth_hash_password(const char *password, char *hash, size_t hashsz);
/** New random token (base64url of 32 random bytes) and its SHA-256 hex. */
void kf_auth_new_token(char token[44], char hash_hex[65]);
/** SHA-256 hex of a presented token. */
void kf_auth_token_hash(const char *token, size_t len, char hash_hex[65]);
/** New CSRF token: base64url of 32 random bytes (43 characters). */
void kf_auth_new_csrf(char csrf[44]);
/**
 * 1 when password matches the argon2id hash string.  A NULL, empty or
 * malformed hash is checked against a built-in dummy hash instead (and
 * fails), so an unknown login costs the same time as a wrong password.
 * Slow on purpose: never call it inside a transaction.
 */
int kf_auth_verify_password(const char *hash, const char *password);
/** Random password of n - 1 characters from an unambiguous alphabet (NUL-terminated). */
void kf_auth_random_password(char *out, size_t n);

/*
 * Validators (1 = ok).  login: 1..64 of [A-Za-z0-9._@-], starting with a
 * letter or digit; email: 3..254 bytes, local@domain, no spaces or control
 * characters; slug: 1..64 of [a-z0-9_-]; password: 8..1024 bytes.
 */
int kf_login_ok(const char *s);
int kf_email_ok(const char *s);
int kf_slug_ok(const char *s);
int kf_password_ok(const char *s);

/**
 * Value of the cookie called name in a Cookie header: a pointer into
 * header (borrowed) and its length in *len_r, or NULL when absent.
 */
const char *kf_cookie_get(const char *header, const char *name, size_t *len_r);

/** Revoke every live session of agent_id (inside the caller's transaction). */
int kf_auth_revoke_sessions(kf_db *db, uint64_t agent_id, uint64_t *n_r, const char **error_r);
/**
 * Forget sessions that ended a day ago and login_throttle rows whose window
 * and lockout are over (for a periodic maintenance job).
 */
int kf_auth_purge(kf_db *db, const kf_config *cfg, const char **error_r);

/*
 * Agents as JSON ({id, login, display_name, email, role, presence, capacity,
 * skills, active, created_at, updated_at, queue_ids}).  A statement that
 * selects KF_AGENT_COLUMNS (from `agent a`) first is mapped by
 * kf_agent_row_json() (new reference).
 */
#define KF_TIME_SQL(col) "DATE_FORMAT(" col ", '%Y-%m-%dT%H:%i:%s.%fZ')"
#define KF_AGENT_COLUMNS                                                                           \
    "a.id, a.login, a.display_name, a.email, a.role, a.presence, a.capacity, a.skills, a.active, " \
    KF_TIME_SQL("a.created_at") ", " KF_TIME_SQL("a.updated_at") ", "                            \
    "(SELECT GROUP_CONCAT(aq.queue_id ORDER BY aq.queue_id) FROM agent_queue aq "                \
    "WHERE aq.agent_id = a.id)"
#define KF_AGENT_NCOLUMNS 12
json_t *kf_agent_row_json(kf_stmt *st, kf_pool *pool);
/** One agent by id; KF_ENOTFOUND when there is none. */
int kf_agent_get(kf_db *db, kf_pool *pool, uint64_t id, json_t **agent_r, const char **error_r);

#endif /* KEFU_AUTH_H */
