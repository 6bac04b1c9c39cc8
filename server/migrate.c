/*
 * migrate.c - numbered SQL migrations applied once, in order, under GET_LOCK.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "kefu/db.h"
#include "kefu/log.h"
#include "kefu/migrate.h"
#include "kefu/pool.h"

#define LOCK_NAME "kefu.migrate"
#define LOCK_WAIT_S 120

static void
seterr(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

static int
cmp_version(const void *a, const void *b)
{
    const kf_migration *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

static int
read_file(const char *path, char **data_r, size_t *len_r)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    kf_str s = KF_STR_INIT;
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        kf_str_append(&s, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        kf_str_free(&s);
        return -1;
    }
    if (s.ptr == NULL)
        kf_str_append(&s, "", 0);
    *data_r = s.ptr;
    *len_r = s.len;
    return 0;
}

int
kf_migrations_load(const char *dir, kf_migration_set *set, char *err, size_t errsz)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    size_t cap = 0;

    memset(set, 0, sizeof(*set));
    if (d == NULL) {
        seterr(err, errsz, "sql_dir %s: %s", dir, strerror(errno));
        return KF_EINVAL;
    }
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        size_t len = strlen(n);
        if (len < 10 || strcmp(n + len - 4, ".sql") != 0)
            continue;
        if (!isdigit((unsigned char) n[0]) || !isdigit((unsigned char) n[1]) ||
            !isdigit((unsigned char) n[2]) || !isdigit((unsigned char) n[3]) || n[4] != '_')
            continue;
        if (set->n == cap) {
            cap = cap ? cap * 2 : 16;
            set->items = kf_xrealloc(set->items, cap * sizeof(*set->items));
        }
        kf_migration *m = &set->items[set->n];
        memset(m, 0, sizeof(*m));
        m->version = (unsigned) strtoul(n, NULL, 10);
        m->name = kf_xstrndup(n, len - 4);
        size_t pl = strlen(dir) + 1 + len + 1;
        m->path = kf_xmalloc(pl);
        snprintf(m->path, pl, "%s/%s", dir, n);
        set->n++;
        if (read_file(m->path, &m->sql, &m->sql_len) != 0) {
            seterr(err, errsz, "%s: cannot read: %s", m->path, strerror(errno));
            closedir(d);
            return KF_EINVAL;
        }
        unsigned char h[crypto_hash_sha256_BYTES];
        crypto_hash_sha256(h, (const unsigned char *) m->sql, m->sql_len);
        sodium_bin2hex(m->checksum, sizeof(m->checksum), h, sizeof(h));
    }
    closedir(d);
    if (set->n == 0) {
        seterr(err, errsz, "sql_dir %s: no NNNN_name.sql migrations found", dir);
        return KF_EINVAL;
    }
    qsort(set->items, set->n, sizeof(*set->items), cmp_version);
    for (size_t i = 1; i < set->n; i++)
        if (set->items[i].version == set->items[i - 1].version) {
            seterr(err, errsz, "migrations %s and %s share version %u", set->items[i - 1].name,
                   set->items[i].name, set->items[i].version);
            return KF_EINVAL;
        }
    return KF_OK;
}

void
kf_migrations_free(kf_migration_set *set)
{
    for (size_t i = 0; i < set->n; i++) {
        free(set->items[i].name);
        free(set->items[i].path);
        free(set->items[i].sql);
    }
    free(set->items);
    memset(set, 0, sizeof(*set));
}

int
kf_sql_split(const char *sql, size_t len, int (*fn)(const char *stmt, size_t len, void *arg),
             void *arg)
{
    size_t start = 0, i = 0;
    char quote = 0;

    while (i < len) {
        char ch = sql[i];
        if (quote) {
            if (ch == '\\' && quote != '`' && i + 1 < len) {
                i += 2;
                continue;
            }
            if (ch == quote) {
                if (i + 1 < len && sql[i + 1] == quote) { /* doubled quote */
                    i += 2;
                    continue;
                }
                quote = 0;
            }
            i++;
            continue;
        }
        if (ch == '\'' || ch == '"' || ch == '`') {
            quote = ch;
            i++;
        } else if (ch == '-' && i + 1 < len && sql[i + 1] == '-') {
            while (i < len && sql[i] != '\n')
                i++;
        } else if (ch == '#') {
            while (i < len && sql[i] != '\n')
                i++;
        } else if (ch == '/' && i + 1 < len && sql[i + 1] == '*') {
            i += 2;
            while (i + 1 < len && !(sql[i] == '*' && sql[i + 1] == '/'))
                i++;
            i = i + 2 <= len ? i + 2 : len;
        } else if (ch == ';') {
            size_t s = start;
            while (s < i && isspace((unsigned char) sql[s]))
                s++;
            if (s < i) {
                int r = fn(sql + s, i - s, arg);
                if (r != 0)
                    return r;
            }
            start = ++i;
        } else {
            i++;
        }
    }
    /* Trailing statement without ';' (only if it is not just comments/space). */
    size_t s = start;
    while (s < len && isspace((unsigned char) sql[s]))
        s++;
    if (s < len) {
        /* Skip if what remains is only comments. */
        size_t j = s;
        int only_comments = 1;
        while (j < len) {
            if (isspace((unsigned char) sql[j])) {
                j++;
            } else if (sql[j] == '-' && j + 1 < len && sql[j + 1] == '-') {
                while (j < len && sql[j] != '\n')
                    j++;
            } else if (sql[j] == '#') {
                while (j < len && sql[j] != '\n')
                    j++;
            } else if (sql[j] == '/' && j + 1 < len && sql[j + 1] == '*') {
                j += 2;
                while (j + 1 < len && !(sql[j] == '*' && sql[j + 1] == '/'))
                    j++;
                j = j + 2 <= len ? j + 2 : len;
            } else {
                only_comments = 0;
                break;
            }
        }
        if (!only_comments)
            return fn(sql + s, len - s, arg);
    }
    return 0;
}

struct apply_ctx {
    kf_db *db;
    const char *error;
    unsigned n;
};

static int
apply_one(const char *stmt, size_t len, void *arg)
{
    struct apply_ctx *a = arg;
    a->n++;
    return kf_db_exec_sql(a->db, stmt, len, &a->error) == KF_OK ? 0 : -1;
}

/* Read applied (version, checksum) pairs into a small array. */
struct applied {
    unsigned version;
    char checksum[65];
};

static int
load_applied(kf_db *db, struct applied **out, size_t *n_r, const char **error_r)
{
    kf_stmt *st;
    int rc;
    size_t n = 0, cap = 0;
    *out = NULL;
    if ((rc = kf_db_stmt(db, "migrate.applied",
                         "SELECT version, checksum FROM schema_migrations ORDER BY version", &st,
                         error_r)) != KF_OK)
        return rc;
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    while ((rc = kf_stmt_fetch(st, error_r)) == 1) {
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            *out = kf_xrealloc(*out, cap * sizeof(**out));
        }
        (*out)[n].version = (unsigned) kf_stmt_col_u64(st, 0);
        kf_pool *p = kf_pool_create(256);
        size_t l;
        char *c = kf_stmt_col_str(st, 1, p, &l);
        snprintf((*out)[n].checksum, sizeof((*out)[n].checksum), "%s", c ? c : "");
        kf_pool_destroy(&p);
        n++;
    }
    *n_r = n;
    if (rc < 0) {
        free(*out);
        *out = NULL;
    }
    return rc < 0 ? rc : KF_OK;
}

static const struct applied *
find_applied(const struct applied *a, size_t n, unsigned version)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].version == version)
            return &a[i];
    return NULL;
}

static int
check_applied(const kf_migration_set *set, const struct applied *a, size_t n, char *err,
              size_t errsz, size_t *pending_r)
{
    size_t pending = 0;
    for (size_t i = 0; i < set->n; i++) {
        const struct applied *x = find_applied(a, n, set->items[i].version);
        if (x == NULL) {
            pending++;
            continue;
        }
        if (strcmp(x->checksum, set->items[i].checksum) != 0) {
            seterr(err, errsz,
                   "migration %s: checksum mismatch: the file changed after it was applied "
                   "(database has %.12s..., file has %.12s...); add a new migration instead",
                   set->items[i].name, x->checksum, set->items[i].checksum);
            return KF_ECONFLICT;
        }
    }
    for (size_t j = 0; j < n; j++) {
        int known = 0;
        for (size_t i = 0; i < set->n && !known; i++)
            known = set->items[i].version == a[j].version;
        if (!known) {
            seterr(err, errsz,
                   "database has migration %04u that this kefud does not know: it is older than "
                   "the schema",
                   a[j].version);
            return KF_ECONFLICT;
        }
    }
    *pending_r = pending;
    return KF_OK;
}

int
kf_migrate(kf_db *db, const kf_migration_set *set, unsigned *applied_r, char *err, size_t errsz)
{
    const char *error = NULL;
    int rc, locked = 0;
    kf_stmt *st;
    struct applied *applied = NULL;
    size_t n_applied = 0, pending = 0;

    *applied_r = 0;
    /* 1. Serialise concurrent starters. */
    if ((rc = kf_db_stmt(db, "migrate.lock", "SELECT GET_LOCK('" LOCK_NAME "', ?)", &st,
                         &error)) != KF_OK)
        goto db_fail;
    kf_stmt_bind_u64(st, 0, LOCK_WAIT_S);
    if ((rc = kf_stmt_exec(st, &error)) != KF_OK)
        goto db_fail;
    if ((rc = kf_stmt_fetch(st, &error)) != 1 || kf_stmt_col_i64(st, 0) != 1) {
        kf_stmt_done(st);
        seterr(err, errsz, "could not take the migration lock within %u s", LOCK_WAIT_S);
        return KF_EBUSY;
    }
    kf_stmt_done(st);
    locked = 1;

    /* 2. The bookkeeping table. */
    static const char create[] =
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INT UNSIGNED NOT NULL PRIMARY KEY,"
        " name VARCHAR(200) NOT NULL,"
        " checksum CHAR(64) NOT NULL,"
        " applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci";
    if ((rc = kf_db_exec_sql(db, create, sizeof(create) - 1, &error)) != KF_OK)
        goto db_fail;

    /* 3. What is applied, and is it what we have? */
    if ((rc = load_applied(db, &applied, &n_applied, &error)) != KF_OK)
        goto db_fail;
    if ((rc = check_applied(set, applied, n_applied, err, errsz, &pending)) != KF_OK)
        goto out;

    /* 4. Apply each pending migration, then record it. */
    for (size_t i = 0; i < set->n; i++) {
        const kf_migration *m = &set->items[i];
        if (find_applied(applied, n_applied, m->version) != NULL)
            continue;
        struct apply_ctx a = {.db = db};
        kf_log(KF_LOG_INFO, "migrate", "event=apply migration=%s", m->name);
        if ((rc = kf_db_exec_sql(db, "START TRANSACTION", 17, &error)) != KF_OK)
            goto db_fail;
        if (kf_sql_split(m->sql, m->sql_len, apply_one, &a) != 0) {
            const char *ignored;
            kf_db_exec_sql(db, "ROLLBACK", 8, &ignored);
            seterr(err, errsz, "migration %s, statement %u: %s", m->name, a.n,
                   a.error ? a.error : "failed");
            rc = KF_EDB;
            goto out;
        }
        if ((rc = kf_db_stmt(db, "migrate.record",
                             "INSERT INTO schema_migrations (version, name, checksum) "
                             "VALUES (?, ?, ?)",
                             &st, &error)) != KF_OK)
            goto db_fail;
        kf_stmt_bind_u64(st, 0, m->version);
        kf_stmt_bind_cstr(st, 1, m->name);
        kf_stmt_bind_cstr(st, 2, m->checksum);
        if ((rc = kf_stmt_exec(st, &error)) != KF_OK)
            goto db_fail;
        if ((rc = kf_db_exec_sql(db, "COMMIT", 6, &error)) != KF_OK)
            goto db_fail;
        (*applied_r)++;
    }
    rc = KF_OK;
    goto out;

db_fail:
    seterr(err, errsz, "migrations: %s", error ? error : "database error");
    if (rc == KF_OK)
        rc = KF_EDB;
out:
    free(applied);
    if (locked && kf_db_connected(db)) {
        const char *ignored;
        kf_db_exec_sql(db, "DO RELEASE_LOCK('" LOCK_NAME "')", sizeof("DO RELEASE_LOCK('" LOCK_NAME "')") - 1, &ignored);
    }
    return rc;
}

int
kf_migrate_status(kf_db *db, const kf_migration_set *set, const char **error_r)
{
    struct applied *applied = NULL;
    size_t n = 0, pending = 0;
    char err[300];
    int rc = load_applied(db, &applied, &n, error_r);
    if (rc != KF_OK) {
        free(applied);
        return rc;
    }
    rc = check_applied(set, applied, n, err, sizeof(err), &pending);
    free(applied);
    if (rc != KF_OK) {
        *error_r = "schema does not match this kefud's migrations";
        return KF_ECONFLICT;
    }
    if (pending > 0) {
        *error_r = "migrations pending";
        return KF_ECONFLICT;
    }
    return KF_OK;
}
