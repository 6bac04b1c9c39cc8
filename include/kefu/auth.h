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

/** Hash a password with argon2id (libsodium); hash must hold crypto_pwhash_STRBYTES. */
int kf_auth_hash_password(const char *password, char *hash, size_t hashsz);
/** New random token (base64url of 32 random bytes) and its SHA-256 hex. */
void kf_auth_new_token(char token[44], char hash_hex[65]);
/** SHA-256 hex of a presented token. */
void kf_auth_token_hash(const char *token, size_t len, char hash_hex[65]);

#endif /* KEFU_AUTH_H */
