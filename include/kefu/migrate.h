/*
 * kefu/migrate.h - schema migrations from sql/NNNN_name.sql.
 *
 * Applied in order at start-up (and by `kefud migrate`) under GET_LOCK so
 * that concurrent starters apply each migration exactly once; recorded in
 * schema_migrations with the file's SHA-256.  A changed file that was
 * already applied is an error, never silently re-run.
 *
 * Threads:   main thread at start-up; kf_migrate_status() from any worker.
 */
#ifndef KEFU_MIGRATE_H
#define KEFU_MIGRATE_H

#include "kefu/types.h"

typedef struct kf_migration {
    unsigned version;
    char *name;      /* "0001_init" */
    char *path;
    char *sql;       /* file contents */
    size_t sql_len;
    char checksum[65]; /* sha256 hex */
} kf_migration;

typedef struct kf_migration_set {
    kf_migration *items;
    size_t n;
} kf_migration_set;

/** Read every NNNN_*.sql in dir, sorted by version; duplicate versions are an error. */
int kf_migrations_load(const char *dir, kf_migration_set *set, char *err, size_t errsz);
void kf_migrations_free(kf_migration_set *set);
/** Apply what is pending; *applied_r gets how many were applied now. */
int kf_migrate(kf_db *db, const kf_migration_set *set, unsigned *applied_r, char *err,
               size_t errsz);
/** KF_OK when every migration in set is applied with the same checksum. */
int kf_migrate_status(kf_db *db, const kf_migration_set *set, const char **error_r);

/*
 * Split SQL text into statements at top-level ';' (outside quotes, backticks
 * and comments).  Calls fn for each non-empty statement; stops on non-zero.
 */
int kf_sql_split(const char *sql, size_t len, int (*fn)(const char *stmt, size_t len, void *arg),
                 void *arg);

#endif /* KEFU_MIGRATE_H */
