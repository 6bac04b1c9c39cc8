/*
 * kefu/customer.h - customers and the identities that make one person
 * reached through several channels one customer.
 *
 * customer_identity (kind, value) is unique: an e-mail address, a WeChat
 * openid/unionid, a phone number or a web visitor id belongs to exactly one
 * customer.  Identify-or-create (kf_customer_resolve) converges when two
 * transactions create the same identity at once: the loser drops the
 * customer row it made and takes the winner's.  A merge moves identities
 * and tickets to the surviving customer; the other row stays, marked with
 * merged_into_id, so old references still lead somewhere.
 *
 * Threads:   worker and job threads, with the caller's kf_db, inside the
 *            caller's transaction.  The validators and the query parser are
 *            pure (fuzzed by tests/fuzz/fuzz_cursor.c).
 * Ownership: strings in returned rows live in the kf_pool passed in; json_t
 *            results are new references.
 * Errors:    KF_OK; KF_ENOTFOUND; KF_ECONFLICT (identity owned by someone
 *            else, merged customer); KF_EINVAL ("field: detail" in *error_r);
 *            KF_ERETRY / KF_EDB from db.c.
 */
#ifndef KEFU_CUSTOMER_H
#define KEFU_CUSTOMER_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "kefu/pool.h"
#include "kefu/types.h"

#define KF_CUSTOMER_NAME_MAX 200
#define KF_CUSTOMER_EMAIL_MAX 254
#define KF_CUSTOMER_PHONE_MAX 40
#define KF_CUSTOMER_LOCALE_MAX 16
#define KF_CUSTOMER_TIER_MAX 32
#define KF_CUSTOMER_NOTES_MAX 65535
#define KF_IDENTITY_VALUE_MAX 254

/* email wechat_openid wechat_unionid phone web (NULL-terminated) */
extern const char *const kf_customer_identity_kinds[];

typedef struct kf_customer {
    uint64_t id, merged_into_id; /* 0 = not merged */
    const char *name, *primary_email, *phone, *locale, *tier, *tags, *notes;
    const char *created_at, *updated_at; /* ISO-8601 UTC */
} kf_customer;

/** One customer (merged ones too); for_update locks the row.  KF_ENOTFOUND. */
int kf_customer_get(kf_db *db, kf_pool *pool, uint64_t id, int for_update, kf_customer *cu,
                    const char **error_r);
/** The API's customer object (new reference). */
json_t *kf_customer_json(const kf_customer *cu);
/** [{id, kind, value, created_at}] of a customer (new reference in *out_r). */
int kf_customer_identities_json(kf_db *db, kf_pool *pool, uint64_t id, json_t **out_r,
                                const char **error_r);
/** Follow merged_into_id to the surviving customer; KF_ENOTFOUND when id does not exist. */
int kf_customer_canonical(kf_db *db, uint64_t id, uint64_t *id_r, const char **error_r);

/*
 * Identity validation (1 = ok): kind is one of kf_customer_identity_kinds and
 * value fits it (an address for email, digits for phone, [A-Za-z0-9_-] for
 * WeChat ids, printable without spaces for web).  *detail_r says why not.
 */
int kf_customer_identity_ok(const char *kind, const char *value, const char **detail_r);
/** local@domain, 3..254 bytes, no spaces or control characters. */
int kf_customer_email_ok(const char *s);

/** Owner of (kind, value), KF_ENOTFOUND when nobody has it. */
int kf_customer_find(kf_db *db, const char *kind, const char *value, uint64_t *id_r,
                     const char **error_r);
/**
 * Give customer_id the identity (kind, value).  KF_OK when it is now (or
 * already was) theirs, *created_r says which; KF_ECONFLICT with the owner in
 * *owner_r when it belongs to someone else.
 */
int kf_customer_link(kf_db *db, uint64_t customer_id, const char *kind, const char *value,
                     int *created_r, uint64_t *owner_r, const char **error_r);

typedef struct kf_customer_who {
    const char *kind, *value; /* the identity the message came from */
    const char *unionid;      /* WeChat UnionID, may be NULL */
    const char *name, *locale; /* for a new customer; may be NULL */
} kf_customer_who;

/*
 * Identify or create: the owner of (kind, value); else the owner of the
 * unionid (and the identity is linked to them); else a new customer with
 * both identities.  Safe against a concurrent creation of the same
 * identity.  *created_r = 1 when a customer was made.
 */
int kf_customer_resolve(kf_db *db, const kf_customer_who *who, uint64_t *id_r, int *created_r,
                        const char **error_r);

/* A partial update: set_x says whether x is given; NULL clears the nullable fields. */
typedef struct kf_customer_patch {
    int set_name, set_email, set_phone, set_locale, set_tier, set_tags, set_notes;
    const char *name, *primary_email, *phone, *locale, *tier, *notes;
    const json_t *tags;
} kf_customer_patch;

int kf_customer_update(kf_db *db, uint64_t id, const kf_customer_patch *p, const char **error_r);

typedef struct kf_customer_merge_result {
    uint64_t identities, tickets, messages;
} kf_customer_merge_result;

/*
 * Merge from into into: identities, tickets (one ticket.customer_changed
 * event each, actor as given) and authored messages move; empty fields of
 * into are filled from from, tags are united, notes appended; from is
 * marked merged_into_id = into (as are customers merged into from before).
 * Both rows must exist and be unmerged (KF_ECONFLICT otherwise).
 */
int kf_customer_merge(kf_db *db, kf_pool *pool, uint64_t into, uint64_t from, int actor_kind,
                      uint64_t actor_id, kf_customer_merge_result *res, const char **error_r);

/* ---- search ---- */

typedef struct kf_customer_query {
    const char *q;     /* name prefix, e-mail or any identity value; NULL = everyone */
    uint64_t after_id; /* keyset: id > after_id */
    unsigned limit;
} kf_customer_query;

/** Parse q, limit, after; unknown parameters are errors.  Pure. */
int kf_customer_query_parse(kf_pool *pool, const char *query, kf_customer_query *cq,
                            json_t **errors);
/** Prepare and bind the search statement (explain prefixes EXPLAIN; tests). */
int kf_customer_search_prepare(kf_db *db, const kf_customer_query *cq, int explain, kf_stmt **st_r,
                               const char **error_r);
/** The page (new JSON array of customers) and the next cursor or NULL. */
int kf_customer_search(kf_db *db, kf_pool *pool, const kf_customer_query *cq, json_t **items_r,
                       const char **next_r, const char **error_r);
/** Cursor: base64url of "c1:<id>". */
char *kf_customer_cursor_encode(kf_pool *pool, uint64_t id);
int kf_customer_cursor_decode(const char *s, uint64_t *id_r);

#endif /* KEFU_CUSTOMER_H */
