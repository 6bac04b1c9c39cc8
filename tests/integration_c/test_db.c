/*
 * The database layer against the real MariaDB that deploy/test.sh started:
 * prepared statements and long/binary columns, kf_tx_run() retrying on an
 * injected and on a real deadlock, rollback on error, reconnect after the
 * connection is killed, migrations applied once, and job leases.
 *
 * Needs KEFU_TEST_DB_SOCKET (and KEFU_TEST_DB_ROOT_USER, default root);
 * fails, never skips, when they are missing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <sodium.h>

#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/job.h"
#include "kefu/log.h"
#include "kefu/migrate.h"
#include "kefu/pool.h"

static kf_config cfg;
static char dbname[64];
static kf_migration_set migrations;

static void
admin_sql(const char *sql)
{
    kf_config admin;
    char err[256];
    const char *error = NULL;
    kf_config_defaults(&admin);
    kf_config_set(&admin, "db_socket", getenv("KEFU_TEST_DB_SOCKET"), err, sizeof(err));
    kf_config_set(&admin, "db_user", getenv("KEFU_TEST_DB_ROOT_USER") ? getenv("KEFU_TEST_DB_ROOT_USER") : "root", err, sizeof(err));
    kf_config_set(&admin, "db_name", "mysql", err, sizeof(err));
    kf_db *db = kf_db_create(&admin);
    if (kf_db_exec_sql(db, sql, strlen(sql), &error) != KF_OK) {
        fprintf(stderr, "admin SQL failed: %s: %s\n", sql, error);
        exit(1);
    }
    kf_db_destroy(&db);
    kf_config_deinit(&admin);
}

static int
group_setup(void **state)
{
    char err[512], sql[256];
    unsigned char r[4];
    (void) state;
    if (getenv("KEFU_TEST_DB_SOCKET") == NULL) {
        fprintf(stderr, "FAIL: KEFU_TEST_DB_SOCKET is not set: run through deploy/test.sh, which "
                        "starts the private MariaDB these tests need\n");
        return -1;
    }
    if (sodium_init() < 0)
        return -1;
    kf_db_library_init();
    randombytes_buf(r, sizeof(r));
    snprintf(dbname, sizeof(dbname), "kefu_ct_%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s CHARACTER SET utf8mb4", dbname);
    admin_sql(sql);

    kf_config_defaults(&cfg);
    kf_config_set(&cfg, "db_socket", getenv("KEFU_TEST_DB_SOCKET"), err, sizeof(err));
    kf_config_set(&cfg, "db_user", getenv("KEFU_TEST_DB_ROOT_USER") ? getenv("KEFU_TEST_DB_ROOT_USER") : "root", err, sizeof(err));
    kf_config_set(&cfg, "db_name", dbname, err, sizeof(err));
    kf_config_set(&cfg, "db_tx_retries", "5", err, sizeof(err));
    kf_config_set(&cfg, "sql_dir", KEFU_SOURCE_DIR "/sql", err, sizeof(err));
    if (kf_migrations_load(cfg.sql_dir, &migrations, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "FAIL: %s\n", err);
        return -1;
    }
    return 0;
}

static int
group_teardown(void **state)
{
    char sql[128];
    (void) state;
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", dbname);
    admin_sql(sql);
    kf_migrations_free(&migrations);
    kf_config_deinit(&cfg);
    kf_db_library_end();
    return 0;
}

static void
test_migrate_once(void **state)
{
    (void) state;
    char err[512];
    unsigned applied = 99;
    const char *error = NULL;
    kf_db *db = kf_db_create(&cfg);
    assert_int_equal(kf_migrate(db, &migrations, &applied, err, sizeof(err)), KF_OK);
    assert_int_equal(applied, migrations.n);
    assert_int_equal(kf_migrate(db, &migrations, &applied, err, sizeof(err)), KF_OK);
    assert_int_equal(applied, 0);
    assert_int_equal(kf_migrate_status(db, &migrations, &error), KF_OK);
    /* A migration the database has never seen makes the schema "pending". */
    kf_migration_set more = migrations;
    kf_migration extra[32];
    assert_true(migrations.n < 31);
    memcpy(extra, migrations.items, migrations.n * sizeof(extra[0]));
    extra[migrations.n] = extra[migrations.n - 1];
    extra[migrations.n].version = 9999;
    more.items = extra;
    more.n = migrations.n + 1;
    assert_int_equal(kf_migrate_status(db, &more, &error), KF_ECONFLICT);
    assert_string_equal(error, "migrations pending");
    kf_db_destroy(&db);
}

static void
test_stmt_roundtrip(void **state)
{
    (void) state;
    const char *error = NULL;
    kf_db *db = kf_db_create(&cfg);
    kf_stmt *st;
    kf_pool *pool = kf_pool_create(4096);
    size_t len;

    assert_int_equal(kf_db_exec_sql(db, "CREATE TABLE t_rt (id BIGINT UNSIGNED AUTO_INCREMENT "
                                        "PRIMARY KEY, s MEDIUMTEXT, b BLOB, n BIGINT, d DOUBLE)",
                                    strlen("CREATE TABLE t_rt (id BIGINT UNSIGNED AUTO_INCREMENT "
                                           "PRIMARY KEY, s MEDIUMTEXT, b BLOB, n BIGINT, d DOUBLE)"),
                                    &error),
                     KF_OK);
    char *big = kf_pool_alloc(pool, 200001);
    for (int i = 0; i < 200000; i++)
        big[i] = (char) ('a' + i % 26);
    const char bin[] = {'x', '\0', 'y', '\0'};

    assert_int_equal(kf_db_stmt(db, "t.ins", "INSERT INTO t_rt (s, b, n, d) VALUES (?, ?, ?, ?)",
                                &st, &error),
                     KF_OK);
    kf_stmt_bind_str(st, 0, big, 200000);
    kf_stmt_bind_str(st, 1, bin, sizeof(bin));
    kf_stmt_bind_i64(st, 2, -9000000000LL);
    kf_stmt_bind_double(st, 3, 2.5);
    assert_int_equal(kf_stmt_exec(st, &error), KF_OK);
    uint64_t id1 = kf_stmt_insert_id(st);
    assert_true(id1 > 0);
    /* Same name, cached statement; NULLs and UTF-8. */
    assert_int_equal(kf_db_stmt(db, "t.ins", "INSERT INTO t_rt (s, b, n, d) VALUES (?, ?, ?, ?)",
                                &st, &error),
                     KF_OK);
    kf_stmt_bind_cstr(st, 0, "客服 ✓");
    kf_stmt_bind_null(st, 1);
    kf_stmt_bind_null(st, 2);
    kf_stmt_bind_u64(st, 3, 7);
    assert_int_equal(kf_stmt_exec(st, &error), KF_OK);

    assert_int_equal(kf_db_stmt(db, "t.sel", "SELECT id, s, b, n, d FROM t_rt ORDER BY id", &st,
                                &error),
                     KF_OK);
    assert_int_equal(kf_stmt_exec(st, &error), KF_OK);
    assert_int_equal(kf_stmt_fetch(st, &error), 1);
    assert_true(kf_stmt_col_u64(st, 0) == id1);
    char *s = kf_stmt_col_str(st, 1, pool, &len);
    assert_int_equal(len, 200000);
    assert_memory_equal(s, big, 200000);
    char *b = kf_stmt_col_str(st, 2, pool, &len);
    assert_int_equal(len, 4);
    assert_memory_equal(b, bin, 4);
    assert_true(kf_stmt_col_i64(st, 3) == -9000000000LL);
    assert_true(kf_stmt_col_double(st, 4) == 2.5);
    assert_int_equal(kf_stmt_fetch(st, &error), 1);
    assert_string_equal(kf_stmt_col_str(st, 1, pool, NULL), "客服 ✓");
    assert_true(kf_stmt_col_null(st, 2));
    assert_null(kf_stmt_col_str(st, 2, pool, NULL));
    assert_true(kf_stmt_col_null(st, 3));
    assert_int_equal(kf_stmt_fetch(st, &error), 0);

    /* Values are bound, never spliced: a quote is just data. */
    assert_int_equal(kf_db_stmt(db, "t.find", "SELECT COUNT(*) FROM t_rt WHERE s = ?", &st, &error),
                     KF_OK);
    kf_stmt_bind_cstr(st, 0, "' OR '1'='1");
    assert_int_equal(kf_stmt_exec(st, &error), KF_OK);
    assert_int_equal(kf_stmt_fetch(st, &error), 1);
    assert_int_equal(kf_stmt_col_i64(st, 0), 0);
    kf_stmt_done(st);
    kf_pool_destroy(&pool);
    kf_db_destroy(&db);
}

struct count_tx {
    int runs;
    const char *value;
    int fail_with;
};

static int
insert_tx(kf_db *db, void *arg, const char **error_r)
{
    struct count_tx *t = arg;
    kf_stmt *st;
    int rc;
    t->runs++;
    if ((rc = kf_db_stmt(db, "t.kv", "INSERT INTO kefu_meta (k, v) VALUES (?, 'x')", &st,
                         error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->value);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if (t->fail_with) {
        *error_r = "body failed on purpose";
        return t->fail_with;
    }
    return KF_OK;
}

static long
count_key(kf_db *db, const char *k)
{
    kf_stmt *st;
    const char *error = NULL;
    assert_int_equal(kf_db_stmt(db, "t.count", "SELECT COUNT(*) FROM kefu_meta WHERE k = ?", &st,
                                &error),
                     KF_OK);
    kf_stmt_bind_cstr(st, 0, k);
    assert_int_equal(kf_stmt_exec(st, &error), KF_OK);
    assert_int_equal(kf_stmt_fetch(st, &error), 1);
    long n = (long) kf_stmt_col_i64(st, 0);
    kf_stmt_done(st);
    return n;
}

static void
test_tx_retry_on_injected_deadlock(void **state)
{
    (void) state;
    const char *error = NULL;
    kf_db *db = kf_db_create(&cfg);
    assert_int_equal(kf_db_connect(db, &error), KF_OK);

    /* START TRANSACTION runs first (skipped), then the body's INSERT fails with 1213:
     * rolled back, backed off, run again, committed once. */
    struct count_tx t = {.value = "retry-ok"};
    kf_db_fault_inject(1213, 1, 1);
    assert_int_equal(kf_tx_run(db, insert_tx, &t, &error), KF_OK);
    assert_int_equal(t.runs, 2);
    assert_int_equal(count_key(db, "retry-ok"), 1);

    /* A lock wait timeout (1205) is retried the same way. */
    struct count_tx t1 = {.value = "retry-1205"};
    kf_db_fault_inject(1205, 1, 1);
    assert_int_equal(kf_tx_run(db, insert_tx, &t1, &error), KF_OK);
    assert_int_equal(t1.runs, 2);
    assert_int_equal(count_key(db, "retry-1205"), 1);

    /* More deadlocks than retries: KF_ERETRY and nothing written. */
    struct count_tx t2 = {.value = "retry-exhausted"};
    kf_db_fault_inject(1213, 0, 100);
    assert_int_equal(kf_tx_run(db, insert_tx, &t2, &error), KF_ERETRY);
    kf_db_fault_inject(0, 0, 0);
    assert_int_equal(count_key(db, "retry-exhausted"), 0);

    /* A body error rolls back what it wrote and is not retried. */
    struct count_tx t3 = {.value = "rolled-back", .fail_with = KF_ECONFLICT};
    assert_int_equal(kf_tx_run(db, insert_tx, &t3, &error), KF_ECONFLICT);
    assert_int_equal(t3.runs, 1);
    assert_string_equal(error, "body failed on purpose");
    assert_int_equal(count_key(db, "rolled-back"), 0);

    /* A duplicate key is a conflict, not a retry. */
    struct count_tx t4 = {.value = "retry-ok"};
    assert_int_equal(kf_tx_run(db, insert_tx, &t4, &error), KF_ECONFLICT);
    assert_int_equal(t4.runs, 1);
    kf_db_destroy(&db);
}

/* Two threads lock two rows in opposite orders: InnoDB kills one with 1213. */
struct dl_arg {
    int first, second;
    int runs;
    int rc;
    pthread_barrier_t *barrier;
};

static int
deadlock_tx(kf_db *db, void *arg, const char **error_r)
{
    struct dl_arg *a = arg;
    kf_stmt *st;
    int rc;
    a->runs++;
    if ((rc = kf_db_stmt(db, "t.lock", "UPDATE t_dl SET n = n + 1 WHERE id = ?", &st, error_r)) !=
        KF_OK)
        return rc;
    kf_stmt_bind_i64(st, 0, a->first);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if (a->runs == 1) {
        pthread_barrier_wait(a->barrier); /* both hold their first row */
        usleep(100 * 1000);
    }
    if ((rc = kf_db_stmt(db, "t.lock", "UPDATE t_dl SET n = n + 1 WHERE id = ?", &st, error_r)) !=
        KF_OK)
        return rc;
    kf_stmt_bind_i64(st, 0, a->second);
    return kf_stmt_exec(st, error_r);
}

static void *
dl_thread(void *arg)
{
    struct dl_arg *a = arg;
    const char *error = NULL;
    kf_db *db = kf_db_create(&cfg);
    a->rc = kf_tx_run(db, deadlock_tx, a, &error);
    kf_db_destroy(&db);
    return NULL;
}

static void
test_tx_retry_on_real_deadlock(void **state)
{
    (void) state;
    const char *error = NULL;
    kf_db *db = kf_db_create(&cfg);
    const char *ddl = "CREATE TABLE t_dl (id INT PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB";
    assert_int_equal(kf_db_exec_sql(db, ddl, strlen(ddl), &error), KF_OK);
    const char *ins = "INSERT INTO t_dl VALUES (1, 0), (2, 0)";
    assert_int_equal(kf_db_exec_sql(db, ins, strlen(ins), &error), KF_OK);

    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    struct dl_arg a = {.first = 1, .second = 2, .barrier = &barrier};
    struct dl_arg b = {.first = 2, .second = 1, .barrier = &barrier};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, dl_thread, &a);
    pthread_create(&tb, NULL, dl_thread, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&barrier);

    assert_int_equal(a.rc, KF_OK);
    assert_int_equal(b.rc, KF_OK);
    assert_true(a.runs + b.runs >= 3); /* one of them was a deadlock victim and ran again */
    kf_stmt *st;
    assert_int_equal(kf_db_stmt(db, "t.sum", "SELECT SUM(n) FROM t_dl", &st, &error), KF_OK);
    assert_int_equal(kf_stmt_exec(st, &error), KF_OK);
    assert_int_equal(kf_stmt_fetch(st, &error), 1);
    assert_int_equal(kf_stmt_col_i64(st, 0), 4); /* each committed exactly once */
    kf_stmt_done(st);
    kf_db_destroy(&db);
}

static void
test_reconnect_after_kill(void **state)
{
    (void) state;
    const char *error = NULL;
    kf_db *db = kf_db_create(&cfg);
    kf_stmt *st;
    assert_int_equal(kf_db_stmt(db, "t.id", "SELECT CONNECTION_ID()", &st, &error), KF_OK);
    assert_int_equal(kf_stmt_exec(st, &error), KF_OK);
    assert_int_equal(kf_stmt_fetch(st, &error), 1);
    long long id = kf_stmt_col_i64(st, 0);
    kf_stmt_done(st);

    char sql[64];
    snprintf(sql, sizeof(sql), "KILL %lld", id);
    admin_sql(sql);

    /* The next statement finds the connection gone and says so... */
    assert_int_equal(kf_db_stmt(db, "t.id", "SELECT CONNECTION_ID()", &st, &error), KF_OK);
    assert_int_not_equal(kf_stmt_exec(st, &error), KF_OK);
    assert_false(kf_db_connected(db));
    /* ...and the one after reconnects and re-prepares on its own. */
    assert_int_equal(kf_db_stmt(db, "t.id", "SELECT CONNECTION_ID()", &st, &error), KF_OK);
    assert_int_equal(kf_stmt_exec(st, &error), KF_OK);
    assert_int_equal(kf_stmt_fetch(st, &error), 1);
    assert_true(kf_stmt_col_i64(st, 0) != id);
    kf_stmt_done(st);

    /* A transaction whose connection died before COMMIT is run again. */
    assert_int_equal(kf_db_stmt(db, "t.id", "SELECT CONNECTION_ID()", &st, &error), KF_OK);
    assert_int_equal(kf_stmt_exec(st, &error), KF_OK);
    assert_int_equal(kf_stmt_fetch(st, &error), 1);
    id = kf_stmt_col_i64(st, 0);
    kf_stmt_done(st);
    snprintf(sql, sizeof(sql), "KILL %lld", id);
    admin_sql(sql);
    struct count_tx t = {.value = "after-kill"};
    assert_int_equal(kf_tx_run(db, insert_tx, &t, &error), KF_OK);
    assert_int_equal(count_key(db, "after-kill"), 1);
    kf_db_destroy(&db);
}

static void
test_job_lease(void **state)
{
    (void) state;
    const char *error = NULL;
    int held = 0;
    kf_db *db = kf_db_create(&cfg);
    kf_stmt *st;

    assert_int_equal(kf_job_lease(db, "t-lease", 60, &held, &error), KF_OK);
    assert_true(held);
    assert_int_equal(kf_job_lease(db, "t-lease", 60, &held, &error), KF_OK); /* renew */
    assert_true(held);
    /* Another instance holds it: we don't. */
    assert_int_equal(kf_db_stmt(db, "t.steal",
                                "UPDATE job_lease SET owner = 'other:1:x', expires_at = NOW(6) + "
                                "INTERVAL ? SECOND WHERE name = 't-lease'",
                                &st, &error),
                     KF_OK);
    kf_stmt_bind_i64(st, 0, 60);
    assert_int_equal(kf_stmt_exec(st, &error), KF_OK);
    assert_int_equal(kf_job_lease(db, "t-lease", 60, &held, &error), KF_OK);
    assert_false(held);
    /* Its lease expired: we take it over. */
    assert_int_equal(kf_db_stmt(db, "t.steal",
                                "UPDATE job_lease SET owner = 'other:1:x', expires_at = NOW(6) + "
                                "INTERVAL ? SECOND WHERE name = 't-lease'",
                                &st, &error),
                     KF_OK);
    kf_stmt_bind_i64(st, 0, -5);
    assert_int_equal(kf_stmt_exec(st, &error), KF_OK);
    assert_int_equal(kf_job_lease(db, "t-lease", 60, &held, &error), KF_OK);
    assert_true(held);
    kf_db_destroy(&db);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrate_once),
        cmocka_unit_test(test_stmt_roundtrip),
        cmocka_unit_test(test_tx_retry_on_injected_deadlock),
        cmocka_unit_test(test_tx_retry_on_real_deadlock),
        cmocka_unit_test(test_reconnect_after_kill),
        cmocka_unit_test(test_job_lease),
    };
    return cmocka_run_group_tests_name("db", tests, group_setup, group_teardown);
}
