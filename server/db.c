/*
 * db.c - MariaDB Connector/C behind kf_db: one blocking connection per
 * thread, named prepared statements, kf_tx_run() with deadlock retry.
 *
 * This is the only file that touches MYSQL, MYSQL_STMT and MYSQL_BIND.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mysql.h>
#include <errmsg.h>
#include <mysqld_error.h>
#include <sodium.h>

#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/log.h"
#include "kefu/pool.h"

enum ptype { P_NULL, P_I64, P_U64, P_DOUBLE, P_STR };

struct param {
    enum ptype type;
    long long i;
    double d;
    char *s;
    unsigned long len;
};

struct col {
    char *buf;
    unsigned long cap, len;
    my_bool is_null, error;
};

struct kf_stmt {
    kf_db *db;
    kf_stmt *next;
    char *name;
    char *sql;
    MYSQL_STMT *st;
    unsigned n_params, n_cols;
    struct param *params;
    MYSQL_BIND *pbind;
    struct col *cols;
    MYSQL_BIND *rbind;
    int has_result;
    uint64_t affected, insert_id;
};

struct kf_db {
    const kf_config *cfg;
    MYSQL *my;
    int connected;
    int in_commit;
    kf_stmt *stmts;
    unsigned errnum;
    char err[512];
};

static atomic_uint fault_errnum, fault_skip, fault_n;

void
kf_db_fault_inject(unsigned errnum, unsigned skip, unsigned n)
{
    atomic_store(&fault_n, 0);
    atomic_store(&fault_errnum, errnum);
    atomic_store(&fault_skip, skip);
    atomic_store(&fault_n, n);
}

/* Returns the injected error number for this statement, or 0. */
static unsigned
fault_take(void)
{
    unsigned n = atomic_load(&fault_n);
    if (n == 0)
        return 0;
    unsigned k = atomic_load(&fault_skip);
    while (k > 0) {
        if (atomic_compare_exchange_weak(&fault_skip, &k, k - 1))
            return 0;
    }
    while (n > 0) {
        if (atomic_compare_exchange_weak(&fault_n, &n, n - 1))
            return atomic_load(&fault_errnum);
    }
    return 0;
}

void
kf_db_library_init(void)
{
    if (mysql_library_init(0, NULL, NULL) != 0)
        kf_fatal("module=db msg=\"mysql_library_init failed\"");
}

void
kf_db_library_end(void)
{
    mysql_library_end();
}

int
kf_db_classify_errno(unsigned e)
{
    switch (e) {
    case 0:
        return KF_OK;
    case ER_LOCK_DEADLOCK:      /* 1213 */
    case ER_LOCK_WAIT_TIMEOUT:  /* 1205 */
    case 1180:                  /* ER_ERROR_DURING_COMMIT (Galera certification) */
    case 1047:                  /* ER_UNKNOWN_COM_ERROR: WSREP not ready */
        return KF_ERETRY;
    case ER_DUP_ENTRY:          /* 1062 */
    case ER_DUP_ENTRY_WITH_KEY_NAME:
    case ER_ROW_IS_REFERENCED_2:
    case ER_NO_REFERENCED_ROW_2:
        return KF_ECONFLICT;
    default:
        return KF_EDB;
    }
}

/* Errors after which the connection is unusable. */
static int
is_conn_lost(unsigned e)
{
    return e == CR_SERVER_GONE_ERROR || e == CR_SERVER_LOST || e == CR_CONNECTION_ERROR ||
           e == CR_CONN_HOST_ERROR || e == CR_SERVER_LOST_EXTENDED || e == 1927 /* killed */ ||
           e == ER_SERVER_SHUTDOWN || e == 4031 /* idle disconnect */ || e == CR_COMMANDS_OUT_OF_SYNC;
}

kf_db *
kf_db_create(const kf_config *cfg)
{
    kf_db *db = kf_xcalloc(1, sizeof(*db));
    db->cfg = cfg;
    return db;
}

static void
stmt_free_result(kf_stmt *s)
{
    if (s->has_result && s->st != NULL) {
        mysql_stmt_free_result(s->st);
        s->has_result = 0;
    }
}

static void
stmt_reset_params(kf_stmt *s)
{
    for (unsigned i = 0; i < s->n_params; i++) {
        free(s->params[i].s);
        memset(&s->params[i], 0, sizeof(s->params[i]));
    }
}

static void
stmt_destroy(kf_stmt *s)
{
    stmt_free_result(s);
    if (s->st != NULL)
        mysql_stmt_close(s->st);
    stmt_reset_params(s);
    for (unsigned i = 0; i < s->n_cols; i++)
        free(s->cols[i].buf);
    free(s->cols);
    free(s->rbind);
    free(s->params);
    free(s->pbind);
    free(s->name);
    free(s->sql);
    free(s);
}

void
kf_db_disconnect(kf_db *db)
{
    for (kf_stmt *s = db->stmts, *next; s != NULL; s = next) {
        next = s->next;
        stmt_destroy(s);
    }
    db->stmts = NULL;
    if (db->my != NULL)
        mysql_close(db->my);
    db->my = NULL;
    db->connected = 0;
}

void
kf_db_destroy(kf_db **pdb)
{
    kf_db *db = *pdb;
    if (db == NULL)
        return;
    kf_db_disconnect(db);
    free(db);
    *pdb = NULL;
}

const kf_config *
kf_db_config(const kf_db *db)
{
    return db->cfg;
}

int
kf_db_connected(const kf_db *db)
{
    return db->connected;
}

const char *
kf_db_last_error(const kf_db *db)
{
    return db->err;
}

unsigned
kf_db_last_errno(const kf_db *db)
{
    return db->errnum;
}

/* Copy the error out of the client library (its buffer is overwritten later). */
static int
record_error(kf_db *db, unsigned errnum, const char *text, const char *what, const char **error_r)
{
    db->errnum = errnum;
    snprintf(db->err, sizeof(db->err), "%s: %u %s", what, errnum, text ? text : "");
    if (error_r != NULL)
        *error_r = db->err;
    int rc = kf_db_classify_errno(errnum);
    if (is_conn_lost(errnum)) {
        kf_log(KF_LOG_WARN, "db", "event=connection-lost stmt=%s errno=%u", what, errnum);
        kf_db_disconnect(db);
        return KF_EDB;
    }
    if (rc == KF_EDB)
        kf_log(KF_LOG_WARN, "db", "event=error stmt=%s errno=%u", what, errnum);
    return rc;
}

int
kf_db_connect(kf_db *db, const char **error_r)
{
    const kf_config *cfg = db->cfg;
    unsigned ct = cfg->db_connect_timeout, rw = cfg->db_rw_timeout;
    const char *init =
        "SET time_zone='+00:00', SESSION tx_isolation='READ-COMMITTED', SESSION "
        "sql_mode='STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ZERO_DATE,NO_ZERO_IN_DATE,"
        "NO_ENGINE_SUBSTITUTION'";

    if (db->connected)
        return KF_OK;
    kf_db_disconnect(db);
    db->my = mysql_init(NULL);
    if (db->my == NULL)
        kf_panic("mysql_init failed");
    mysql_optionsv(db->my, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
    mysql_optionsv(db->my, MYSQL_OPT_READ_TIMEOUT, &rw);
    mysql_optionsv(db->my, MYSQL_OPT_WRITE_TIMEOUT, &rw);
    mysql_optionsv(db->my, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_optionsv(db->my, MYSQL_INIT_COMMAND, init);
    const char *socket = cfg->db_socket[0] ? cfg->db_socket : NULL;
    const char *host = socket ? "localhost" : cfg->db_host;
    if (mysql_real_connect(db->my, host, cfg->db_user, cfg->db_password, cfg->db_name,
                           socket ? 0 : cfg->db_port, socket, 0) == NULL) {
        unsigned e = mysql_errno(db->my);
        db->errnum = e;
        snprintf(db->err, sizeof(db->err), "connect: %u %s", e, mysql_error(db->my));
        if (error_r != NULL)
            *error_r = db->err;
        mysql_close(db->my);
        db->my = NULL;
        return KF_EDB;
    }
    db->connected = 1;
    return KF_OK;
}

int
kf_db_exec_sql(kf_db *db, const char *sql, size_t len, const char **error_r)
{
    int rc;
    unsigned fe;
    if ((rc = kf_db_connect(db, error_r)) != KF_OK)
        return rc;
    if ((fe = fault_take()) != 0)
        return record_error(db, fe, "injected fault", "sql", error_r);
    if (mysql_real_query(db->my, sql, (unsigned long) len) != 0)
        return record_error(db, mysql_errno(db->my), mysql_error(db->my), "sql", error_r);
    /* Discard any result set (e.g. SELECT GET_LOCK()). */
    do {
        MYSQL_RES *res = mysql_store_result(db->my);
        if (res != NULL)
            mysql_free_result(res);
    } while (mysql_next_result(db->my) == 0);
    if (mysql_errno(db->my) != 0)
        return record_error(db, mysql_errno(db->my), mysql_error(db->my), "sql", error_r);
    return KF_OK;
}

static int
stmt_prepare(kf_stmt *s, const char **error_r)
{
    kf_db *db = s->db;
    s->st = mysql_stmt_init(db->my);
    if (s->st == NULL)
        kf_panic("mysql_stmt_init failed");
    if (mysql_stmt_prepare(s->st, s->sql, (unsigned long) strlen(s->sql)) != 0) {
        unsigned e = mysql_stmt_errno(s->st);
        char text[300];
        snprintf(text, sizeof(text), "%s", mysql_stmt_error(s->st));
        return record_error(db, e, text, s->name, error_r);
    }
    s->n_params = (unsigned) mysql_stmt_param_count(s->st);
    s->params = kf_xcalloc(s->n_params ? s->n_params : 1, sizeof(*s->params));
    s->pbind = kf_xcalloc(s->n_params ? s->n_params : 1, sizeof(*s->pbind));
    MYSQL_RES *meta = mysql_stmt_result_metadata(s->st);
    s->n_cols = meta ? mysql_num_fields(meta) : 0;
    if (meta)
        mysql_free_result(meta);
    s->cols = kf_xcalloc(s->n_cols ? s->n_cols : 1, sizeof(*s->cols));
    s->rbind = kf_xcalloc(s->n_cols ? s->n_cols : 1, sizeof(*s->rbind));
    for (unsigned i = 0; i < s->n_cols; i++) {
        s->cols[i].cap = 64;
        s->cols[i].buf = kf_xmalloc(s->cols[i].cap);
    }
    return KF_OK;
}

int
kf_db_stmt(kf_db *db, const char *name, const char *sql, kf_stmt **st_r, const char **error_r)
{
    int rc;
    kf_stmt *s;

    if ((rc = kf_db_connect(db, error_r)) != KF_OK)
        return rc;
    for (s = db->stmts; s != NULL; s = s->next)
        if (strcmp(s->name, name) == 0)
            break;
    if (s == NULL) {
        s = kf_xcalloc(1, sizeof(*s));
        s->db = db;
        s->name = kf_xstrdup(name);
        s->sql = kf_xstrdup(sql);
        if ((rc = stmt_prepare(s, error_r)) != KF_OK) {
            stmt_destroy(s);
            return rc;
        }
        s->next = db->stmts;
        db->stmts = s;
    } else if (strcmp(s->sql, sql) != 0) {
        kf_panic("statement %s prepared with two different texts", name);
    }
    stmt_free_result(s);
    stmt_reset_params(s);
    *st_r = s;
    return KF_OK;
}

static struct param *
param_at(kf_stmt *s, unsigned i)
{
    if (i >= s->n_params)
        kf_panic("statement %s: parameter %u of %u", s->name, i, s->n_params);
    free(s->params[i].s);
    memset(&s->params[i], 0, sizeof(s->params[i]));
    return &s->params[i];
}

void
kf_stmt_bind_null(kf_stmt *s, unsigned i)
{
    param_at(s, i)->type = P_NULL;
}

void
kf_stmt_bind_i64(kf_stmt *s, unsigned i, int64_t v)
{
    struct param *p = param_at(s, i);
    p->type = P_I64;
    p->i = v;
}

void
kf_stmt_bind_u64(kf_stmt *s, unsigned i, uint64_t v)
{
    struct param *p = param_at(s, i);
    p->type = P_U64;
    p->i = (long long) v;
}

void
kf_stmt_bind_double(kf_stmt *s, unsigned i, double v)
{
    struct param *p = param_at(s, i);
    p->type = P_DOUBLE;
    p->d = v;
}

void
kf_stmt_bind_str(kf_stmt *s, unsigned i, const char *str, size_t len)
{
    struct param *p = param_at(s, i);
    p->type = P_STR;
    p->s = kf_xstrndup(str ? str : "", str ? len : 0);
    p->len = (unsigned long) (str ? len : 0);
}

void
kf_stmt_bind_cstr(kf_stmt *s, unsigned i, const char *str)
{
    if (str == NULL)
        kf_stmt_bind_null(s, i);
    else
        kf_stmt_bind_str(s, i, str, strlen(str));
}

static my_bool true_flag = 1;

static int
stmt_error(kf_stmt *s, const char **error_r)
{
    char text[300];
    unsigned e = mysql_stmt_errno(s->st);
    snprintf(text, sizeof(text), "%s", mysql_stmt_error(s->st));
    return record_error(s->db, e, text, s->name, error_r);
}

int
kf_stmt_exec(kf_stmt *s, const char **error_r)
{
    unsigned fe;

    if (!s->db->connected)
        return record_error(s->db, CR_SERVER_LOST, "connection lost", s->name, error_r);
    if ((fe = fault_take()) != 0) {
        int rc = record_error(s->db, fe, "injected fault", s->name, error_r);
        return rc;
    }
    for (unsigned i = 0; i < s->n_params; i++) {
        struct param *p = &s->params[i];
        MYSQL_BIND *b = &s->pbind[i];
        memset(b, 0, sizeof(*b));
        switch (p->type) {
        case P_NULL:
            b->buffer_type = MYSQL_TYPE_NULL;
            b->is_null = &true_flag;
            break;
        case P_I64:
        case P_U64:
            b->buffer_type = MYSQL_TYPE_LONGLONG;
            b->buffer = &p->i;
            b->is_unsigned = p->type == P_U64;
            break;
        case P_DOUBLE:
            b->buffer_type = MYSQL_TYPE_DOUBLE;
            b->buffer = &p->d;
            break;
        case P_STR:
            b->buffer_type = MYSQL_TYPE_STRING;
            b->buffer = p->s;
            b->buffer_length = p->len;
            b->length = &p->len;
            break;
        }
    }
    if (s->n_params && mysql_stmt_bind_param(s->st, s->pbind) != 0)
        return stmt_error(s, error_r);
    if (mysql_stmt_execute(s->st) != 0)
        return stmt_error(s, error_r);
    s->affected = (uint64_t) mysql_stmt_affected_rows(s->st);
    s->insert_id = (uint64_t) mysql_stmt_insert_id(s->st);
    if (s->n_cols > 0) {
        if (mysql_stmt_store_result(s->st) != 0)
            return stmt_error(s, error_r);
        s->has_result = 1;
        for (unsigned i = 0; i < s->n_cols; i++) {
            MYSQL_BIND *b = &s->rbind[i];
            memset(b, 0, sizeof(*b));
            b->buffer_type = MYSQL_TYPE_STRING;
            b->buffer = s->cols[i].buf;
            b->buffer_length = s->cols[i].cap;
            b->length = &s->cols[i].len;
            b->is_null = &s->cols[i].is_null;
            b->error = &s->cols[i].error;
        }
        if (mysql_stmt_bind_result(s->st, s->rbind) != 0)
            return stmt_error(s, error_r);
    }
    return KF_OK;
}

int
kf_stmt_fetch(kf_stmt *s, const char **error_r)
{
    if (!s->has_result)
        return 0;
    int r = mysql_stmt_fetch(s->st);
    if (r == MYSQL_NO_DATA) {
        stmt_free_result(s);
        return 0;
    }
    if (r == 1)
        return stmt_error(s, error_r);
    if (r == MYSQL_DATA_TRUNCATED) {
        int rebind = 0;
        for (unsigned i = 0; i < s->n_cols; i++) {
            struct col *c = &s->cols[i];
            if (c->is_null || c->len < c->cap)
                continue;
            c->cap = c->len + 1;
            c->buf = kf_xrealloc(c->buf, c->cap);
            MYSQL_BIND b;
            memset(&b, 0, sizeof(b));
            b.buffer_type = MYSQL_TYPE_STRING;
            b.buffer = c->buf;
            b.buffer_length = c->cap;
            if (mysql_stmt_fetch_column(s->st, &b, i, 0) != 0)
                return stmt_error(s, error_r);
            s->rbind[i].buffer = c->buf;
            s->rbind[i].buffer_length = c->cap;
            rebind = 1;
        }
        if (rebind && mysql_stmt_bind_result(s->st, s->rbind) != 0)
            return stmt_error(s, error_r);
    }
    return 1;
}

int
kf_stmt_col_null(kf_stmt *s, unsigned i)
{
    return i >= s->n_cols || s->cols[i].is_null;
}

static const char *
col_text(kf_stmt *s, unsigned i, char *tmp, size_t tmpsz)
{
    if (kf_stmt_col_null(s, i))
        return NULL;
    size_t n = s->cols[i].len < tmpsz - 1 ? s->cols[i].len : tmpsz - 1;
    memcpy(tmp, s->cols[i].buf, n);
    tmp[n] = '\0';
    return tmp;
}

int64_t
kf_stmt_col_i64(kf_stmt *s, unsigned i)
{
    char tmp[64];
    const char *t = col_text(s, i, tmp, sizeof(tmp));
    return t ? strtoll(t, NULL, 10) : 0;
}

uint64_t
kf_stmt_col_u64(kf_stmt *s, unsigned i)
{
    char tmp[64];
    const char *t = col_text(s, i, tmp, sizeof(tmp));
    return t ? strtoull(t, NULL, 10) : 0;
}

double
kf_stmt_col_double(kf_stmt *s, unsigned i)
{
    char tmp[64];
    const char *t = col_text(s, i, tmp, sizeof(tmp));
    return t ? strtod(t, NULL) : 0.0;
}

char *
kf_stmt_col_str(kf_stmt *s, unsigned i, kf_pool *pool, size_t *len_r)
{
    if (kf_stmt_col_null(s, i)) {
        if (len_r)
            *len_r = 0;
        return NULL;
    }
    size_t n = s->cols[i].len;
    if (len_r)
        *len_r = n;
    return kf_pool_strndup(pool, s->cols[i].buf, n);
}

uint64_t
kf_stmt_affected(kf_stmt *s)
{
    return s->affected;
}

uint64_t
kf_stmt_insert_id(kf_stmt *s)
{
    return s->insert_id;
}

void
kf_stmt_done(kf_stmt *s)
{
    stmt_free_result(s);
}

int
kf_db_id_by(kf_db *db, const char *name, const char *sql, const char *key, uint64_t *id_r,
            const char **error_r)
{
    kf_stmt *st;
    int rc;
    *id_r = 0;
    if ((rc = kf_db_stmt(db, name, sql, &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, key);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_stmt_fetch(st, error_r)) == 1)
        *id_r = kf_stmt_col_u64(st, 0);
    kf_stmt_done(st);
    return rc < 0 ? rc : KF_OK;
}

int
kf_db_row_json(kf_db *db, kf_pool *pool, const char *name, const char *sql, uint64_t id,
               kf_row_json_fn *row, json_t **r, const char **error_r)
{
    kf_stmt *st;
    int rc;
    *r = NULL;
    if ((rc = kf_db_stmt(db, name, sql, &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_stmt_fetch(st, error_r)) == 1)
        *r = row(st, pool);
    kf_stmt_done(st);
    if (rc < 0)
        return rc;
    return rc == 1 ? KF_OK : KF_ENOTFOUND;
}

/* ---- transactions ---- */

static void
backoff(unsigned attempt)
{
    /* 5 ms, 10 ms, 20 ms ... capped at 320 ms, each with +-50% jitter. */
    unsigned base = 5u << (attempt < 6 ? attempt : 6);
    unsigned ms = base / 2 + randombytes_uniform(base + 1);
    struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int
kf_tx_run(kf_db *db, kf_tx_fn *fn, void *arg, const char **error_r)
{
    unsigned max = db->cfg->db_tx_retries;
    const char *error = NULL;
    int rc = KF_EDB;

    for (unsigned attempt = 0; attempt <= max; attempt++) {
        if (attempt > 0)
            backoff(attempt - 1);
        error = NULL;
        if ((rc = kf_db_connect(db, &error)) != KF_OK)
            break; /* server unreachable: retrying at once would not help */
        if ((rc = kf_db_exec_sql(db, "START TRANSACTION", 17, &error)) != KF_OK) {
            if ((rc == KF_ERETRY || !db->connected) && attempt < max)
                continue; /* stale connection or conflict: reconnect/back off, start over */
            break;
        }
        rc = fn(db, arg, &error);
        if (rc == KF_OK) {
            db->in_commit = 1;
            rc = kf_db_exec_sql(db, "COMMIT", 6, &error);
            db->in_commit = 0;
            if (rc == KF_OK)
                break;
            if (!db->connected) {
                /* The commit's outcome is unknown: never run the body twice blind. */
                error = "connection lost during COMMIT (outcome unknown)";
                rc = KF_EDB;
                break;
            }
        }
        if (db->connected) {
            const char *ignored = NULL;
            kf_db_exec_sql(db, "ROLLBACK", 8, &ignored);
        }
        if (rc == KF_ERETRY) {
            kf_log(KF_LOG_INFO, "db", "event=tx-retry attempt=%u errno=%u", attempt + 1,
                   db->errnum);
            continue;
        }
        if (rc == KF_EDB && !db->connected && attempt < max) {
            /* Lost before COMMIT: the server rolled back; safe to run again. */
            continue;
        }
        break;
    }
    if (error_r != NULL)
        *error_r = error;
    return rc;
}
