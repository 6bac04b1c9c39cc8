/*
 * kefu/db.h - MariaDB access: one connection per thread, prepared statements
 * cached by name, transactions retried on deadlock.
 *
 * Every SQL text is a fixed string prepared once per connection and named
 * ("ticket.lock"); values are bound, never concatenated.  The connection is
 * reconnected explicitly (never MYSQL_OPT_RECONNECT) when the server went
 * away, and every cached statement is re-prepared.
 *
 * Threads:   a kf_db belongs to exactly one thread (a worker or a job thread).
 * Ownership: strings read from rows are copied into the caller's kf_pool;
 *            no pointer into a client library buffer escapes db.c.
 * Errors:    KF_OK; KF_ERETRY (1213 deadlock / 1205 lock wait / 1180 / 4031-ish
 *            Galera conflict: kf_tx_run() retries the whole body); KF_EDB
 *            (logged at WARN with the statement's name, reason in *error_r).
 */
#ifndef KEFU_DB_H
#define KEFU_DB_H

#include <stdint.h>
#include <jansson.h>
#include "kefu/pool.h"
#include "kefu/types.h"

kf_db *kf_db_create(const kf_config *cfg);
void kf_db_destroy(kf_db **db);
/** Connect if not connected; KF_EDB with the reason when the server is unreachable. */
int kf_db_connect(kf_db *db, const char **error_r);
int kf_db_connected(const kf_db *db);
/** Drop the connection (next use reconnects). */
void kf_db_disconnect(kf_db *db);
/** The configuration the connection was created with (limits for domain code). */
const kf_config *kf_db_config(const kf_db *db);
/** Run one statement without parameters or results (DDL, SET, locks). */
int kf_db_exec_sql(kf_db *db, const char *sql, size_t len, const char **error_r);
/** Last reason text copied out of the client library (per connection). */
const char *kf_db_last_error(const kf_db *db);
unsigned kf_db_last_errno(const kf_db *db);

/*
 * Prepared statements.  kf_db_stmt() returns the cached statement called
 * name (preparing sql the first time on this connection) with its
 * parameters cleared.  Parameters are bound by 0-based index; strings are
 * copied, so the caller's buffers may go away before kf_stmt_exec().
 */
int kf_db_stmt(kf_db *db, const char *name, const char *sql, kf_stmt **st_r,
               const char **error_r);
void kf_stmt_bind_null(kf_stmt *st, unsigned i);
void kf_stmt_bind_i64(kf_stmt *st, unsigned i, int64_t v);
void kf_stmt_bind_u64(kf_stmt *st, unsigned i, uint64_t v);
void kf_stmt_bind_double(kf_stmt *st, unsigned i, double v);
void kf_stmt_bind_str(kf_stmt *st, unsigned i, const char *s, size_t len);
void kf_stmt_bind_cstr(kf_stmt *st, unsigned i, const char *s); /* NULL binds NULL */
/** Execute; result rows (if any) are then read with kf_stmt_fetch(). */
int kf_stmt_exec(kf_stmt *st, const char **error_r);
/** 1 = a row is ready, 0 = no more rows, <0 = error. */
int kf_stmt_fetch(kf_stmt *st, const char **error_r);
/** Column accessors for the current row; NULL columns read as 0 / NULL. */
int kf_stmt_col_null(kf_stmt *st, unsigned i);
int64_t kf_stmt_col_i64(kf_stmt *st, unsigned i);
uint64_t kf_stmt_col_u64(kf_stmt *st, unsigned i);
double kf_stmt_col_double(kf_stmt *st, unsigned i);
/** Copy of the column into pool (NUL-terminated, length in *len_r if not NULL). */
char *kf_stmt_col_str(kf_stmt *st, unsigned i, kf_pool *pool, size_t *len_r);
uint64_t kf_stmt_affected(kf_stmt *st);
uint64_t kf_stmt_insert_id(kf_stmt *st);
/** Free the result set early (otherwise done by the next kf_db_stmt()). */
void kf_stmt_done(kf_stmt *st);
/**
 * The first column (an id) of the first row that statement name (sql, with
 * one string parameter, key) finds; *id_r = 0 when none.  KF_OK or the
 * statement's error.
 */
int kf_db_id_by(kf_db *db, const char *name, const char *sql, const char *key, uint64_t *id_r,
                const char **error_r);
/** Makes the JSON of the current row of st (strings copied into pool). */
typedef json_t *kf_row_json_fn(kf_stmt *st, kf_pool *pool);
/**
 * The row statement name (sql with one "?" for id) finds, as row() makes
 * it: KF_OK with *r, KF_ENOTFOUND (*r NULL), or the statement's error.
 */
int kf_db_row_json(kf_db *db, kf_pool *pool, const char *name, const char *sql, uint64_t id,
                   kf_row_json_fn *row, json_t **r, const char **error_r);

/*
 * Transactions.  kf_tx_run() runs fn between BEGIN and COMMIT, rolling back
 * on any error.  On KF_ERETRY (from fn or from COMMIT) it waits a jittered
 * backoff and runs fn again, up to db_tx_retries times, so fn must have no
 * side effects outside the database and assign every output on each run.
 * A lost connection before COMMIT is reconnected and retried too.
 */
typedef int kf_tx_fn(kf_db *db, void *arg, const char **error_r);
int kf_tx_run(kf_db *db, kf_tx_fn *fn, void *arg, const char **error_r);

/** Map a MariaDB error number to a kf_status (tests and db.c). */
int kf_db_classify_errno(unsigned err);

/*
 * Fault simulation for tests: after skipping `skip` statements, the next n
 * statements executed on any connection of this process fail with MariaDB
 * error errnum.  n = 0 clears.
 */
void kf_db_fault_inject(unsigned errnum, unsigned skip, unsigned n);

/** mysql_library_init(); call once in main() before threads start. */
void kf_db_library_init(void);
void kf_db_library_end(void);

#endif /* KEFU_DB_H */
