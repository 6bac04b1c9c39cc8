/*
 * portal.c - the secrets behind the customer portal (sql/0006_webform.sql):
 * per-ticket access links and "My requests" sessions in portal_token, both
 * stored as the SHA-256 of a 256-bit random token.
 *
 * A token is found by its hash through a unique index, so a lookup costs
 * the same whether or not it exists and compares no secret byte by byte.
 * Expiry is by inactivity: every use moves last_used_at (at most once a
 * minute, to keep reads cheap).
 */
#include <string.h>

#include "kefu/auth.h"
#include "kefu/db.h"
#include "webform_internal.h"

void
wf_secret_new(wf_secret *s)
{
    kf_auth_new_token(s->token, s->hash);
}

int
wf_token_shape_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n != 43)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return 0;
    }
    return 1;
}

int
wf_portal_token_add(kf_db *db, const char *kind, const char *hash, uint64_t customer_id,
                    uint64_t ticket_id, const char **error_r)
{
    kf_stmt *st;
    int rc;

    if ((rc = kf_db_stmt(db, "portal.token_add",
                         "INSERT INTO portal_token (token_hash, kind, customer_id, ticket_id) "
                         "VALUES (?, ?, ?, ?)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, hash);
    kf_stmt_bind_cstr(st, 1, kind);
    kf_stmt_bind_u64(st, 2, customer_id);
    if (ticket_id != 0)
        kf_stmt_bind_u64(st, 3, ticket_id);
    else
        kf_stmt_bind_null(st, 3);
    return kf_stmt_exec(st, error_r);
}

int
wf_portal_token_find(kf_db *db, const char *kind, const char *token, unsigned idle,
                     unsigned max_age, uint64_t *customer_id_r, uint64_t *ticket_id_r,
                     const char **error_r)
{
    char hash[65];
    kf_stmt *st;
    uint64_t id;
    int rc, touch;

    *customer_id_r = 0;
    if (ticket_id_r != NULL)
        *ticket_id_r = 0;
    if (!wf_token_shape_ok(token))
        return KF_ENOTFOUND;
    kf_auth_token_hash(token, strlen(token), hash);
    if ((rc = kf_db_stmt(db, "portal.token_find",
                         "SELECT id, customer_id, ticket_id, "
                         "last_used_at < NOW(6) - INTERVAL 60 SECOND FROM portal_token "
                         "WHERE token_hash = ? AND kind = ? AND revoked_at IS NULL "
                         "AND last_used_at > NOW(6) - INTERVAL ? SECOND "
                         "AND (? = 0 OR created_at > NOW(6) - INTERVAL ? SECOND)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, hash);
    kf_stmt_bind_cstr(st, 1, kind);
    kf_stmt_bind_u64(st, 2, idle);
    kf_stmt_bind_u64(st, 3, max_age);
    kf_stmt_bind_u64(st, 4, max_age);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK || (rc = kf_stmt_fetch(st, error_r)) < 0)
        return rc;
    if (rc == 0)
        return KF_ENOTFOUND;
    id = kf_stmt_col_u64(st, 0);
    *customer_id_r = kf_stmt_col_u64(st, 1);
    if (ticket_id_r != NULL)
        *ticket_id_r = kf_stmt_col_u64(st, 2);
    touch = kf_stmt_col_i64(st, 3) != 0;
    kf_stmt_done(st);
    if (!touch)
        return KF_OK;
    if ((rc = kf_db_stmt(db, "portal.token_touch",
                         "UPDATE portal_token SET last_used_at = NOW(6) WHERE id = ?", &st,
                         error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, id);
    return kf_stmt_exec(st, error_r);
}

int
wf_portal_token_revoke(kf_db *db, const char *token, const char **error_r)
{
    char hash[65];
    kf_stmt *st;
    int rc;

    if (!wf_token_shape_ok(token))
        return KF_OK;
    kf_auth_token_hash(token, strlen(token), hash);
    if ((rc = kf_db_stmt(db, "portal.token_revoke",
                         "UPDATE portal_token SET revoked_at = NOW(6) "
                         "WHERE token_hash = ? AND revoked_at IS NULL",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, hash);
    return kf_stmt_exec(st, error_r);
}
