/*
 * kf_ingest() against the real MariaDB: a new ticket with its customer,
 * events and receipt; idempotency (sequential and 8 threads at once);
 * identity convergence when 8 threads create the same new customer;
 * WeChat UnionID linking; the threading hook; reopen on solved and
 * follow-up on closed; auto-submitted mail; routing by channel account;
 * the acknowledgement outbox row; attachments in 256 KiB chunks with their
 * SHA-256; limits and bad input (KF_EINVAL, nothing written); a deadlock
 * in the middle is retried without a second ticket.  Last, EXPLAIN of
 * every list query shape over 20,000 seeded tickets: no full scan.
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
#include <cmocka.h>

#include <sodium.h>

#include "kefu/config.h"
#include "kefu/customer.h"
#include "kefu/db.h"
#include "kefu/ingest.h"
#include "kefu/log.h"
#include "kefu/migrate.h"
#include "kefu/pool.h"
#include "kefu/ticket.h"

static kf_config cfg;
static char dbname[64];
static kf_db *db; /* the main thread's connection */

static void
admin_sql(const char *sql)
{
    kf_config admin;
    char err[256];
    const char *error = NULL;
    const char *root = getenv("KEFU_TEST_DB_ROOT_USER") ? getenv("KEFU_TEST_DB_ROOT_USER") : "root";
    kf_config_defaults(&admin);
    kf_config_set(&admin, "db_socket", getenv("KEFU_TEST_DB_SOCKET"), err, sizeof(err));
    kf_config_set(&admin, "db_user", root, err, sizeof(err));
    kf_config_set(&admin, "db_name", "mysql", err, sizeof(err));
    kf_db *a = kf_db_create(&admin);
    if (kf_db_exec_sql(a, sql, strlen(sql), &error) != KF_OK) {
        fprintf(stderr, "admin SQL failed: %s: %s\n", sql, error);
        exit(1);
    }
    kf_db_destroy(&a);
    kf_config_deinit(&admin);
}

static void
sql(const char *text)
{
    const char *error = NULL;
    if (kf_db_exec_sql(db, text, strlen(text), &error) != KF_OK)
        fail_msg("SQL failed: %s: %s", text, error);
}

/* The single integer a query returns (the text is also the statement's name). */
static int64_t
scalar(const char *text)
{
    const char *error = NULL;
    kf_stmt *st;
    if (kf_db_stmt(db, text, text, &st, &error) != KF_OK || kf_stmt_exec(st, &error) != KF_OK ||
        kf_stmt_fetch(st, &error) != 1)
        fail_msg("query failed: %s: %s", text, error ? error : "no row");
    int64_t v = kf_stmt_col_i64(st, 0);
    kf_stmt_done(st);
    return v;
}

static int64_t
scalar_id(const char *text, uint64_t id)
{
    const char *error = NULL;
    kf_stmt *st;
    if (kf_db_stmt(db, text, text, &st, &error) != KF_OK)
        fail_msg("prepare failed: %s: %s", text, error);
    kf_stmt_bind_u64(st, 0, id);
    if (kf_stmt_exec(st, &error) != KF_OK || kf_stmt_fetch(st, &error) != 1)
        fail_msg("query failed: %s: %s", text, error ? error : "no row");
    int64_t v = kf_stmt_col_i64(st, 0);
    kf_stmt_done(st);
    return v;
}

static char *
string_id(kf_pool *pool, const char *text, uint64_t id)
{
    const char *error = NULL;
    kf_stmt *st;
    if (kf_db_stmt(db, text, text, &st, &error) != KF_OK)
        fail_msg("prepare failed: %s: %s", text, error);
    kf_stmt_bind_u64(st, 0, id);
    if (kf_stmt_exec(st, &error) != KF_OK || kf_stmt_fetch(st, &error) != 1)
        fail_msg("query failed: %s: %s", text, error ? error : "no row");
    char *v = kf_stmt_col_str(st, 0, pool, NULL);
    kf_stmt_done(st);
    return v;
}

static int
group_setup(void **state)
{
    char err[512], q[256];
    unsigned char r[4];
    unsigned applied = 0;
    kf_migration_set migrations;
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
    snprintf(dbname, sizeof(dbname), "kefu_ci_%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
    snprintf(q, sizeof(q), "CREATE DATABASE %s CHARACTER SET utf8mb4", dbname);
    admin_sql(q);

    kf_config_defaults(&cfg);
    kf_config_set(&cfg, "db_socket", getenv("KEFU_TEST_DB_SOCKET"), err, sizeof(err));
    kf_config_set(&cfg, "db_user",
                  getenv("KEFU_TEST_DB_ROOT_USER") ? getenv("KEFU_TEST_DB_ROOT_USER") : "root", err,
                  sizeof(err));
    kf_config_set(&cfg, "db_name", dbname, err, sizeof(err));
    kf_config_set(&cfg, "db_tx_retries", "10", err, sizeof(err));
    kf_config_set(&cfg, "attachment_max_bytes", "1048576", err, sizeof(err));
    kf_config_set(&cfg, "attachment_max_count", "3", err, sizeof(err));
    kf_config_set(&cfg, "sql_dir", KEFU_SOURCE_DIR "/sql", err, sizeof(err));
    if (kf_migrations_load(cfg.sql_dir, &migrations, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "FAIL: %s\n", err);
        return -1;
    }
    db = kf_db_create(&cfg);
    if (kf_migrate(db, &migrations, &applied, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "FAIL: migrate: %s\n", err);
        return -1;
    }
    kf_migrations_free(&migrations);
    return 0;
}

static int
group_teardown(void **state)
{
    char q[128];
    (void) state;
    kf_db_destroy(&db);
    snprintf(q, sizeof(q), "DROP DATABASE IF EXISTS %s", dbname);
    admin_sql(q);
    kf_config_deinit(&cfg);
    kf_db_library_end();
    return 0;
}

static kf_inbound
mail(const char *from, const char *external_id, const char *subject, const char *text)
{
    kf_inbound in;
    memset(&in, 0, sizeof(in));
    in.channel = "email";
    in.channel_account = "support@kefu.example";
    in.external_id = external_id;
    in.identity_kind = "email";
    in.identity_value = from;
    in.customer_name = "Mail Sender";
    in.subject = subject;
    in.text = text;
    in.text_len = strlen(text);
    return in;
}

static int64_t
count_table(const char *table)
{
    char q[128];
    snprintf(q, sizeof(q), "SELECT COUNT(*) FROM %s", table);
    return scalar(q);
}

/* ---- basics ---- */

static void
test_new_ticket(void **state)
{
    (void) state;
    const char *error = NULL;
    kf_ingest_result res;
    kf_pool *pool = kf_pool_create(1024);
    kf_inbound in = mail("New.Person@Example.org", "<m1@example.org>", "  Printer\r\non fire ",
                         "It is burning.");

    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_OK);
    assert_true(res.ticket_id > 0 && res.message_id > 0 && res.customer_id > 0);
    assert_int_equal(res.created_ticket, 1);
    assert_int_equal(res.duplicate, 0);
    assert_string_equal(string_id(pool, "SELECT subject FROM ticket WHERE id = ?", res.ticket_id),
                        "Printer  on fire");
    assert_string_equal(string_id(pool, "SELECT status FROM ticket WHERE id = ?", res.ticket_id),
                        "new");
    assert_string_equal(string_id(pool, "SELECT primary_email FROM customer WHERE id = ?",
                                  res.customer_id),
                        "new.person@example.org");
    assert_int_equal(scalar_id("SELECT COUNT(*) FROM customer_identity WHERE customer_id = ? AND "
                               "kind = 'email' AND value = 'new.person@example.org'",
                               res.customer_id),
                     1);
    assert_int_equal(scalar_id("SELECT COUNT(*) FROM event WHERE ticket_id = ? AND kind IN "
                               "('ticket.created', 'message.received')",
                               res.ticket_id),
                     2);
    assert_int_equal(scalar_id("SELECT COUNT(*) FROM inbound_receipt WHERE ticket_id = ?",
                               res.ticket_id),
                     1);
    /* No acknowledgement unless asked. */
    assert_int_equal(scalar_id("SELECT COUNT(*) FROM outbox WHERE ticket_id = ?", res.ticket_id),
                     0);
    kf_pool_destroy(&pool);
}

static void
test_duplicate_changes_nothing(void **state)
{
    (void) state;
    const char *error = NULL;
    kf_ingest_result a, b;
    kf_inbound in = mail("dup@example.org", "<dup@example.org>", "Dup", "once");

    assert_int_equal(kf_ingest(db, &in, &a, &error), KF_OK);
    int64_t tickets = count_table("ticket"), messages = count_table("message"),
            events = count_table("event"), customers = count_table("customer");
    in.text = "twice, different text";
    in.text_len = strlen(in.text);
    assert_int_equal(kf_ingest(db, &in, &b, &error), KF_OK);
    assert_int_equal(b.duplicate, 1);
    assert_true(b.ticket_id == a.ticket_id && b.message_id == a.message_id &&
                b.customer_id == a.customer_id);
    assert_int_equal(b.created_ticket, 1);
    assert_true(count_table("ticket") == tickets && count_table("message") == messages &&
                count_table("event") == events && count_table("customer") == customers);
    /* The same external id on another account is another message. */
    in.channel_account = "sales@kefu.example";
    assert_int_equal(kf_ingest(db, &in, &b, &error), KF_OK);
    assert_int_equal(b.duplicate, 0);
    assert_true(b.ticket_id != a.ticket_id);
}

/* ---- concurrency ---- */

struct racer {
    pthread_barrier_t *barrier;
    kf_inbound in;
    kf_ingest_result res;
    int rc;
    char ext[64];
    const char *error;
};

static void *
race(void *arg)
{
    struct racer *r = arg;
    kf_db *mine = kf_db_create(&cfg);
    const char *error = NULL;
    kf_db_connect(mine, &error);
    pthread_barrier_wait(r->barrier);
    r->rc = kf_ingest(mine, &r->in, &r->res, &error);
    r->error = r->rc == KF_OK ? NULL : "failed";
    if (r->rc != KF_OK)
        fprintf(stderr, "racer: %d %s\n", r->rc, error ? error : "");
    kf_db_destroy(&mine);
    return NULL;
}

static void
run_racers(struct racer *r, int n)
{
    pthread_t th[16];
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned) n);
    for (int i = 0; i < n; i++) {
        r[i].barrier = &barrier;
        pthread_create(&th[i], NULL, race, &r[i]);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);
}

static void
test_concurrent_identical(void **state)
{
    (void) state;
    for (int round = 0; round < 5; round++) {
        struct racer r[8];
        char ext[64], from[64];
        memset(r, 0, sizeof(r));
        snprintf(ext, sizeof(ext), "<race-%d@example.org>", round);
        snprintf(from, sizeof(from), "racer%d@example.org", round);
        int64_t tickets = count_table("ticket"), customers = count_table("customer");
        for (int i = 0; i < 8; i++)
            r[i].in = mail(from, ext, "Race", "same message eight times");
        run_racers(r, 8);
        int created = 0;
        for (int i = 0; i < 8; i++) {
            assert_int_equal(r[i].rc, KF_OK);
            assert_true(r[i].res.ticket_id == r[0].res.ticket_id);
            assert_true(r[i].res.message_id == r[0].res.message_id);
            created += !r[i].res.duplicate;
        }
        assert_int_equal(created, 1);
        assert_int_equal(count_table("ticket"), tickets + 1);
        assert_int_equal(count_table("customer"), customers + 1);
    }
}

static void
test_concurrent_same_new_customer(void **state)
{
    (void) state;
    for (int round = 0; round < 3; round++) {
        struct racer r[8];
        char from[64];
        memset(r, 0, sizeof(r));
        snprintf(from, sizeof(from), "crowd%d@example.org", round);
        int64_t tickets = count_table("ticket"), customers = count_table("customer");
        for (int i = 0; i < 8; i++) {
            snprintf(r[i].ext, sizeof(r[i].ext), "<crowd-%d-%d@example.org>", round, i);
            r[i].in = mail(from, r[i].ext, "Crowd", "eight messages, one person");
        }
        run_racers(r, 8);
        for (int i = 0; i < 8; i++) {
            assert_int_equal(r[i].rc, KF_OK);
            assert_int_equal(r[i].res.duplicate, 0);
            assert_true(r[i].res.customer_id == r[0].res.customer_id);
        }
        assert_int_equal(count_table("ticket"), tickets + 8);
        assert_int_equal(count_table("customer"), customers + 1);
    }
}

/* A deadlock injected in the middle: retried, still exactly one ticket. */
static void
test_deadlock_midway_is_retried(void **state)
{
    (void) state;
    const char *error = NULL;
    kf_ingest_result res;
    kf_inbound in = mail("deadlock@example.org", "<deadlock@example.org>", "DL", "retry me");
    int64_t tickets = count_table("ticket");

    kf_db_fault_inject(1213, 6, 1); /* past the receipt and the customer, before the end */
    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_OK);
    kf_db_fault_inject(0, 0, 0);
    assert_int_equal(res.duplicate, 0);
    assert_int_equal(count_table("ticket"), tickets + 1);
    assert_int_equal(scalar_id("SELECT COUNT(*) FROM message WHERE ticket_id = ?", res.ticket_id),
                     1);
}

/* ---- identities ---- */

static void
test_unionid_links_accounts(void **state)
{
    (void) state;
    const char *error = NULL;
    kf_ingest_result a, b;
    kf_inbound in;
    memset(&in, 0, sizeof(in));
    in.channel = "wechat";
    in.channel_account = "gh_service";
    in.external_id = "msg-1";
    in.identity_kind = "wechat_openid";
    in.identity_value = "oOPENID_A";
    in.unionid = "uUNION_1";
    in.text = "你好";
    in.text_len = strlen(in.text);
    assert_int_equal(kf_ingest(db, &in, &a, &error), KF_OK);
    /* The same person through another official account: another openid, same UnionID. */
    in.channel_account = "gh_shop";
    in.external_id = "msg-2";
    in.identity_value = "oOPENID_B";
    assert_int_equal(kf_ingest(db, &in, &b, &error), KF_OK);
    assert_true(a.customer_id == b.customer_id);
    assert_int_equal(scalar_id("SELECT COUNT(*) FROM customer_identity WHERE customer_id = ?",
                               a.customer_id),
                     3);
    /* No subject: the first line of the text stands in. */
    kf_pool *pool = kf_pool_create(256);
    assert_string_equal(string_id(pool, "SELECT subject FROM ticket WHERE id = ?", a.ticket_id),
                        "你好");
    kf_pool_destroy(&pool);
}

/* ---- threading ---- */

static int
hook(kf_db *hdb, const kf_inbound *in, uint64_t customer_id, uint64_t *ticket_id_r,
     const char **error_r)
{
    (void) hdb;
    (void) customer_id;
    uint64_t *want = in->thread_arg;
    if (*want == UINT64_MAX) {
        *error_r = "hook failed";
        return KF_EDB;
    }
    *ticket_id_r = *want;
    return KF_OK;
}

static void
test_threading_hook(void **state)
{
    (void) state;
    const char *error = NULL;
    kf_ingest_result first, res;
    kf_inbound in = mail("thread@example.org", "<t1@example.org>", "Thread", "first");
    uint64_t want = 0;

    assert_int_equal(kf_ingest(db, &in, &first, &error), KF_OK);
    in.thread_fn = hook;
    in.thread_arg = &want;
    in.external_id = "<t2@example.org>";
    want = first.ticket_id;
    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_OK);
    assert_true(res.ticket_id == first.ticket_id);
    assert_int_equal(res.created_ticket, 0);
    assert_int_equal(scalar_id("SELECT version FROM ticket WHERE id = ?", first.ticket_id), 2);
    /* A hook pointing at a ticket that does not exist: a new ticket. */
    in.external_id = "<t3@example.org>";
    want = 987654321;
    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_OK);
    assert_int_equal(res.created_ticket, 1);
    /* A failing hook fails the ingest, and nothing is written. */
    int64_t messages = count_table("message"), receipts = count_table("inbound_receipt");
    in.external_id = "<t4@example.org>";
    want = UINT64_MAX;
    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_EDB);
    assert_string_equal(error, "hook failed");
    assert_int_equal(count_table("message"), messages);
    assert_int_equal(count_table("inbound_receipt"), receipts);
    /* An explicit ticket_id that does not exist is an error, not a new ticket. */
    in.thread_fn = NULL;
    in.ticket_id = 987654321;
    in.external_id = "<t5@example.org>";
    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_ENOTFOUND);
    assert_int_equal(count_table("message"), messages);
}

static void
test_reopen_and_follow_up(void **state)
{
    (void) state;
    const char *error = NULL;
    kf_ingest_result first, res;
    kf_inbound in = mail("reopen@example.org", "<r1@example.org>", "Reopen", "first");
    kf_pool *pool = kf_pool_create(256);

    assert_int_equal(kf_ingest(db, &in, &first, &error), KF_OK);
    uint64_t t = first.ticket_id;
    assert_int_equal(kf_ticket_set_status(db, t, "solved", &error), KF_OK);

    /* Solved + a customer message: reopened. */
    in.ticket_id = t;
    in.external_id = "<r2@example.org>";
    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_OK);
    assert_true(res.ticket_id == t);
    assert_int_equal(res.reopened, 1);
    assert_string_equal(string_id(pool, "SELECT status FROM ticket WHERE id = ?", t), "open");
    assert_int_equal(scalar_id("SELECT solved_at IS NULL FROM ticket WHERE id = ?", t), 1);
    assert_int_equal(
        scalar_id("SELECT COUNT(*) FROM event WHERE ticket_id = ? AND kind = 'ticket.reopened'", t),
        1);

    /* Closed + an auto-reply: recorded on the closed ticket, no follow-up. */
    assert_int_equal(kf_ticket_set_status(db, t, "closed", &error), KF_OK);
    in.external_id = "<r3@example.org>";
    in.auto_submitted = 1;
    in.send_ack = 1;
    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_OK);
    assert_true(res.ticket_id == t);
    assert_int_equal(res.created_ticket, 0);
    assert_string_equal(string_id(pool, "SELECT status FROM ticket WHERE id = ?", t), "closed");
    assert_int_equal(scalar_id("SELECT COUNT(*) FROM outbox WHERE ticket_id = ?", t), 0);

    /* Closed + a real message: a follow-up ticket linked to the closed one. */
    in.external_id = "<r4@example.org>";
    in.auto_submitted = 0;
    in.send_ack = 0;
    in.subject = NULL;
    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_OK);
    assert_true(res.ticket_id != t);
    assert_int_equal(res.created_ticket, 1);
    assert_true(res.follow_up_of == t);
    assert_int_equal(scalar_id("SELECT follow_up_of_id FROM ticket WHERE id = ?", res.ticket_id),
                     (int64_t) t);
    assert_string_equal(string_id(pool, "SELECT subject FROM ticket WHERE id = ?", res.ticket_id),
                        "Reopen");
    kf_pool_destroy(&pool);
}

/* ---- routing and acknowledgement ---- */

static void
test_routing_and_ack(void **state)
{
    (void) state;
    const char *error = NULL;
    kf_ingest_result res;
    kf_pool *pool = kf_pool_create(256);

    sql("INSERT INTO queue (name, slug) VALUES ('Routed', 'routed'), ('Explicit', 'explicit')");
    int64_t routed = scalar("SELECT id FROM queue WHERE slug = 'routed'");
    int64_t explicit_q = scalar("SELECT id FROM queue WHERE slug = 'explicit'");
    sql("INSERT INTO channel_account (channel, account, default_queue_id) "
        "SELECT 'email', 'routed@kefu.example', id FROM queue WHERE slug = 'routed'");

    kf_inbound in = mail("route@example.org", "<route1@example.org>", "Route", "where to?");
    in.channel_account = "routed@kefu.example";
    in.send_ack = 1;
    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_OK);
    assert_int_equal(scalar_id("SELECT queue_id FROM ticket WHERE id = ?", res.ticket_id), routed);
    char key[64];
    snprintf(key, sizeof(key), "ack:%llu", (unsigned long long) res.message_id);
    assert_string_equal(string_id(pool, "SELECT dedupe_key FROM outbox WHERE ticket_id = ?",
                                  res.ticket_id),
                        key);
    assert_string_equal(string_id(pool, "SELECT target FROM outbox WHERE ticket_id = ?",
                                  res.ticket_id),
                        "route@example.org");

    /* An explicit queue wins; an unknown one is bad input and nothing is written. */
    in.external_id = "<route2@example.org>";
    in.queue_id = (uint64_t) explicit_q;
    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_OK);
    assert_int_equal(scalar_id("SELECT queue_id FROM ticket WHERE id = ?", res.ticket_id),
                     explicit_q);
    int64_t tickets = count_table("ticket"), receipts = count_table("inbound_receipt");
    in.external_id = "<route3@example.org>";
    in.queue_id = 99999999;
    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_EINVAL);
    assert_string_equal(error, "queue_id: no such queue");
    assert_int_equal(count_table("ticket"), tickets);
    assert_int_equal(count_table("inbound_receipt"), receipts);
    /* No default queue for the account: no queue. */
    in.channel_account = "nowhere@kefu.example";
    in.queue_id = 0;
    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_OK);
    assert_int_equal(scalar_id("SELECT queue_id IS NULL FROM ticket WHERE id = ?", res.ticket_id),
                     1);
    kf_pool_destroy(&pool);
}

/* ---- attachments ---- */

static void
test_attachments(void **state)
{
    (void) state;
    const char *error = NULL;
    kf_ingest_result res;
    kf_pool *pool = kf_pool_create(4096);
    size_t big_len = 600 * 1024 + 17;
    unsigned char *big = kf_pool_alloc(pool, big_len);
    char want[65];

    for (size_t i = 0; i < big_len; i++)
        big[i] = (unsigned char) (i * 31 + (i >> 9)); /* includes NUL bytes */
    kf_inbound_attachment att[2] = {
        {"report.bin", "application/octet-stream", NULL, big, big_len},
        {"empty.txt", "text/plain", "<cid1>", (const unsigned char *) "", 0},
    };
    kf_inbound in = mail("files@example.org", "<files@example.org>", "Files", "see attached");
    in.attachments = att;
    in.n_attachments = 2;
    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_OK);

    uint64_t a1 = (uint64_t) scalar_id(
        "SELECT MIN(id) FROM attachment WHERE message_id = ?", res.message_id);
    assert_int_equal(scalar_id("SELECT size FROM attachment WHERE id = ?", a1), (int64_t) big_len);
    assert_int_equal(scalar_id("SELECT COUNT(*) FROM attachment_chunk WHERE attachment_id = ?", a1),
                     3);
    assert_int_equal(scalar_id("SELECT LENGTH(data) FROM attachment_chunk WHERE attachment_id = ? "
                               "AND seq = 0",
                               a1),
                     256 * 1024);
    /* The chunks, in order, are the file; the stored SHA-256 is the file's. */
    kf_stmt *st;
    assert_int_equal(kf_db_stmt(db, "t.chunks",
                                "SELECT data FROM attachment_chunk WHERE attachment_id = ? "
                                "ORDER BY seq",
                                &st, &error),
                     KF_OK);
    kf_stmt_bind_u64(st, 0, a1);
    assert_int_equal(kf_stmt_exec(st, &error), KF_OK);
    unsigned char *got = kf_pool_alloc(pool, big_len);
    size_t off = 0, len;
    while (kf_stmt_fetch(st, &error) == 1) {
        char *d = kf_stmt_col_str(st, 0, pool, &len);
        assert_true(off + len <= big_len);
        memcpy(got + off, d, len);
        off += len;
    }
    assert_int_equal(off, big_len);
    assert_memory_equal(got, big, big_len);
    kf_ticket_sha256_hex(big, big_len, want);
    assert_string_equal(string_id(pool, "SELECT sha256 FROM attachment WHERE id = ?", a1), want);

    /* The empty file: one empty chunk, the SHA-256 of nothing, its content id. */
    uint64_t a2 = (uint64_t) scalar_id("SELECT MAX(id) FROM attachment WHERE message_id = ?",
                                       res.message_id);
    assert_int_equal(scalar_id("SELECT COUNT(*) FROM attachment_chunk WHERE attachment_id = ?", a2),
                     1);
    assert_string_equal(string_id(pool, "SELECT sha256 FROM attachment WHERE id = ?", a2),
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_string_equal(string_id(pool, "SELECT content_id FROM attachment WHERE id = ?", a2),
                        "<cid1>");

    /* The ticket JSON lists them under the message. */
    json_t *messages = NULL;
    assert_int_equal(kf_ticket_messages_json(db, pool, res.ticket_id, 1, &messages, &error), KF_OK);
    json_t *atts = json_object_get(json_array_get(messages, 0), "attachments");
    assert_int_equal(json_array_size(atts), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(atts, 0), "sha256")),
                        want);
    json_decref(messages);

    /* Limits (1 MiB, 3 per message in this test's configuration): nothing written. */
    int64_t tickets = count_table("ticket"), attachments = count_table("attachment");
    size_t huge_len = 1048577;
    unsigned char *huge = kf_pool_alloc(pool, huge_len);
    kf_inbound_attachment too_big = {"huge.bin", NULL, NULL, huge, huge_len};
    in.external_id = "<files2@example.org>";
    in.attachments = &too_big;
    in.n_attachments = 1;
    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_EINVAL);
    assert_non_null(strstr(error, "attachments:"));
    kf_inbound_attachment four[4] = {{"a", NULL, NULL, big, 1},
                                     {"b", NULL, NULL, big, 1},
                                     {"c", NULL, NULL, big, 1},
                                     {"d", NULL, NULL, big, 1}};
    in.attachments = four;
    in.n_attachments = 4;
    assert_int_equal(kf_ingest(db, &in, &res, &error), KF_EINVAL);
    assert_string_equal(error, "attachments: at most 3 per message");
    assert_int_equal(count_table("ticket"), tickets);
    assert_int_equal(count_table("attachment"), attachments);
    kf_pool_destroy(&pool);
}

/* ---- bad input ---- */

static void
test_bad_input(void **state)
{
    (void) state;
    const char *error = NULL;
    kf_ingest_result res;
    int64_t tickets = count_table("ticket"), customers = count_table("customer"),
            receipts = count_table("inbound_receipt");
    struct {
        const char *name, *want_field;
        kf_inbound in;
    } cases[12];
    size_t n = 0;
    kf_inbound base = mail("bad@example.org", "<bad@example.org>", "Bad", "input");

#define CASE(field)                                                                              \
    cases[n].name = field;                                                                       \
    cases[n].want_field = field;                                                                 \
    cases[n].in = base;
    CASE("channel");
    cases[n++].in.channel = "fax";
    CASE("channel");
    cases[n++].in.channel = NULL;
    CASE("identity");
    cases[n++].in.identity_value = NULL;
    CASE("identity_kind");
    cases[n++].in.identity_kind = "pigeon";
    CASE("identity_value");
    cases[n++].in.identity_value = "not an address";
    CASE("text");
    cases[n].in.text = "bad \xC3\x28 utf-8";
    cases[n++].in.text_len = strlen("bad \xC3\x28 utf-8");
    CASE("text");
    cases[n].in.text = "nul\0inside";
    cases[n++].in.text_len = 10;
    CASE("subject");
    cases[n++].in.subject = "\xED\xA0\x80 surrogate";
    CASE("external_id");
    cases[n++].in.external_id = "";
    CASE("priority");
    cases[n++].in.priority = "whenever";
    CASE("customer_locale");
    cases[n++].in.customer_locale = "en US; drop";
    CASE("unionid");
    cases[n++].in.unionid = "bad union id!";
#undef CASE
    for (size_t i = 0; i < n; i++) {
        error = NULL;
        int rc = kf_ingest(db, &cases[i].in, &res, &error);
        if (rc != KF_EINVAL || error == NULL ||
            strncmp(error, cases[i].want_field, strlen(cases[i].want_field)) != 0 ||
            error[strlen(cases[i].want_field)] != ':')
            fail_msg("case %zu (%s): got %d \"%s\"", i, cases[i].name, rc, error ? error : "");
        assert_true(res.ticket_id == 0);
    }
    assert_int_equal(count_table("ticket"), tickets);
    assert_int_equal(count_table("customer"), customers);
    assert_int_equal(count_table("inbound_receipt"), receipts);
}

/* ---- pure helpers ---- */

static void
test_cursor_and_time(void **state)
{
    (void) state;
    kf_pool *pool = kf_pool_create(1024);
    int64_t usec, u2;
    uint64_t id;
    char buf[32];

    assert_int_equal(kf_ticket_time_parse("2026-11-30T04:15:00.123456Z", &usec), KF_OK);
    kf_ticket_time_sql(usec, buf);
    assert_string_equal(buf, "2026-11-30 04:15:00.123456");
    assert_int_equal(kf_ticket_time_parse(buf, &u2), KF_OK);
    assert_true(u2 == usec);
    assert_int_equal(kf_ticket_time_parse("2024-02-29", &usec), KF_OK);
    assert_int_equal(kf_ticket_time_parse("2023-02-29", &usec), KF_EINVAL);
    assert_int_equal(kf_ticket_time_parse("2026-11-30T24:00:00Z", &usec), KF_EINVAL);
    assert_int_equal(kf_ticket_time_parse("2026-11-30T04:15:00.1234567Z", &usec), KF_EINVAL);
    assert_int_equal(kf_ticket_time_parse("2026-11-30T04:15:00+08:00", &usec), KF_EINVAL);
    assert_int_equal(kf_ticket_time_parse("1969-12-31", &usec), KF_EINVAL);

    char *cur = kf_ticket_cursor_encode(pool, 1764476100123456, 42);
    assert_int_equal(kf_ticket_cursor_decode(cur, &usec, &id), KF_OK);
    assert_true(usec == 1764476100123456 && id == 42);
    assert_int_equal(kf_ticket_cursor_decode("", &usec, &id), KF_EINVAL);
    assert_int_equal(kf_ticket_cursor_decode("dDE6MTow", &usec, &id), KF_EINVAL); /* t1:1:0 */
    assert_int_equal(kf_ticket_cursor_decode("not a cursor", &usec, &id), KF_EINVAL);
    cur = kf_customer_cursor_encode(pool, 7);
    assert_int_equal(kf_customer_cursor_decode(cur, &id), KF_OK);
    assert_true(id == 7);
    assert_int_equal(kf_customer_cursor_decode("YzE6MDc", &id), KF_EINVAL); /* c1:07 */

    kf_ticket_query q;
    json_t *errors = NULL;
    assert_int_equal(kf_ticket_query_parse(pool, "status=open,pending&status=new&limit=10&"
                                                  "assignee_id=none&tag=VIP&updated_since="
                                                  "2026-01-01T00%3A00%3A00Z",
                                           &q, &errors),
                     KF_OK);
    assert_int_equal(q.statuses, 7);
    assert_int_equal(q.limit, 10);
    assert_int_equal(q.assignee, KF_ASSIGNEE_NONE);
    assert_string_equal(q.tag, "vip");
    assert_int_equal(q.has_since, 1);
    assert_int_equal(kf_ticket_query_parse(pool, "queue_id=-1&limit=0&status=bogus&frob=1&"
                                                  "queue_id=2&after=zzz",
                                           &q, &errors),
                     KF_EINVAL);
    assert_int_equal(json_array_size(errors), 6);
    json_decref(errors);
    kf_pool_destroy(&pool);
}

/* ---- EXPLAIN: every list shape uses an index (no full scan of ticket) ---- */

static void
explain_ok(kf_stmt *st, const char *what)
{
    const char *error = NULL;
    kf_pool *pool = kf_pool_create(1024);
    char bad[128] = "";
    int rows = 0;
    if (kf_stmt_exec(st, &error) != KF_OK)
        fail_msg("EXPLAIN %s: %s", what, error);
    while (kf_stmt_fetch(st, &error) == 1) {
        const char *table = kf_stmt_col_str(st, 2, pool, NULL);
        const char *type = kf_stmt_col_str(st, 3, pool, NULL);
        const char *key = kf_stmt_col_str(st, 5, pool, NULL);
        rows++;
        print_message("EXPLAIN %-28s table=%-12s type=%-7s key=%s\n", what, table ? table : "-",
                      type ? type : "-", key ? key : "-");
        /* Derived and union-result rows are in-memory temporaries, not tables. */
        if (table != NULL && table[0] != '<' && type != NULL && strcmp(type, "ALL") == 0)
            snprintf(bad, sizeof(bad), "%s: full scan of %s", what, table);
    }
    kf_pool_destroy(&pool);
    assert_true(rows > 0);
    if (bad[0] != '\0')
        fail_msg("%s", bad);
}

static void
test_list_queries_use_indexes(void **state)
{
    (void) state;
    const char *error = NULL;
    kf_stmt *st;

    /* 1. Seed: 3 queues, an agent in one, 2,000 customers, 20,000 tickets. */
    sql("INSERT INTO queue (name, slug) VALUES ('Seed 1', 'seed-1'), ('Seed 2', 'seed-2'), "
        "('Seed 3', 'seed-3')");
    sql("INSERT INTO agent (login, display_name, email, password_hash) "
        "VALUES ('seed-agent', 'Seed', 'seed@kefu.example', '')");
    sql("INSERT INTO agent_queue (agent_id, queue_id) SELECT a.id, q.id FROM agent a, queue q "
        "WHERE a.login = 'seed-agent' AND q.slug = 'seed-1'");
    sql("INSERT INTO customer (name, primary_email) SELECT CONCAT('Seed ', seq), "
        "CONCAT('seed', seq, '@example.com') FROM seq_1_to_2000");
    sql("INSERT INTO ticket (subject, status, priority, channel, customer_id, queue_id, "
        "assignee_id, created_at, updated_at) "
        "SELECT CONCAT('Seeded ', s.seq), ELT(1 + s.seq % 5, 'new', 'open', 'pending', 'solved', "
        "'closed'), ELT(1 + s.seq % 4, 'low', 'normal', 'high', 'urgent'), 'email', c.id, "
        "q.id, IF(s.seq % 3 = 0, NULL, a.id), NOW(6) - INTERVAL s.seq MINUTE, "
        "NOW(6) - INTERVAL s.seq SECOND "
        "FROM seq_1_to_20000 s "
        "JOIN (SELECT id, ROW_NUMBER() OVER (ORDER BY id) rn FROM customer "
        "      WHERE name LIKE 'Seed %') c ON c.rn = 1 + s.seq % 2000 "
        "JOIN (SELECT id, ROW_NUMBER() OVER (ORDER BY id) rn FROM queue "
        "      WHERE slug LIKE 'seed-%') q ON q.rn = 1 + s.seq % 3 "
        "JOIN agent a ON a.login = 'seed-agent'");
    sql("INSERT INTO ticket_tag (tag, ticket_id) SELECT IF(id % 2, 'vip', 'billing'), id "
        "FROM ticket WHERE subject LIKE 'Seeded %' AND id % 10 < 2");
    sql("INSERT INTO customer_identity (customer_id, kind, value) SELECT id, 'email', "
        "primary_email FROM customer WHERE name LIKE 'Seed %'");
    sql("ANALYZE TABLE ticket, ticket_tag, customer, customer_identity, agent_queue, queue");

    uint64_t q1 = (uint64_t) scalar("SELECT id FROM queue WHERE slug = 'seed-1'");
    uint64_t agent = (uint64_t) scalar("SELECT id FROM agent WHERE login = 'seed-agent'");
    uint64_t cust = (uint64_t) scalar("SELECT MIN(id) FROM customer WHERE name LIKE 'Seed %'");
    int64_t since;
    kf_ticket_time_parse("2026-01-01T00:00:00Z", &since);

    /* 2. Each shape the API builds. */
    struct {
        const char *what;
        kf_ticket_query q;
    } shapes[] = {
        {"everything", {.limit = 50}},
        {"queue open", {.queue_id = q1, .statuses = 1u << 1, .limit = 50}},
        {"queue open+pending after",
         {.queue_id = q1,
          .statuses = (1u << 1) | (1u << 2),
          .has_after = 1,
          .after_usec = since,
          .after_id = 1000,
          .limit = 50}},
        {"agent scope", {.scope_agent_id = agent, .limit = 50}},
        {"agent scope open", {.scope_agent_id = agent, .statuses = 1u << 1, .limit = 50}},
        {"assignee open",
         {.assignee = KF_ASSIGNEE_ID, .assignee_id = agent, .statuses = 1u << 1, .limit = 50}},
        {"unassigned", {.assignee = KF_ASSIGNEE_NONE, .limit = 50}},
        {"status", {.statuses = 1u << 0, .limit = 50}},
        {"priority", {.priority = "urgent", .limit = 50}},
        {"customer", {.customer_id = cust, .limit = 50}},
        {"tag", {.tag = "vip", .limit = 50}},
        {"updated since", {.has_since = 1, .since_usec = since, .limit = 50}},
        {"everything after", {.has_after = 1, .after_usec = since, .after_id = 5, .limit = 50}},
    };
    for (size_t i = 0; i < KF_ARRAY_LEN(shapes); i++) {
        assert_int_equal(kf_ticket_list_prepare(db, &shapes[i].q, 1, &st, &error), KF_OK);
        explain_ok(st, shapes[i].what);
    }
    kf_customer_query cq = {.q = NULL, .after_id = 0, .limit = 50};
    assert_int_equal(kf_customer_search_prepare(db, &cq, 1, &st, &error), KF_OK);
    explain_ok(st, "customers");
    cq.q = "Seed 1234";
    assert_int_equal(kf_customer_search_prepare(db, &cq, 1, &st, &error), KF_OK);
    explain_ok(st, "customer search");
    cq.q = "seed7@example.com";
    assert_int_equal(kf_customer_search_prepare(db, &cq, 1, &st, &error), KF_OK);
    explain_ok(st, "customer search email");

    /* 3. And the list itself pages through a queue without gaps or repeats. */
    kf_pool *pool = kf_pool_create(16384);
    kf_ticket_query q = {.queue_id = q1, .statuses = 1u << 1, .limit = 200};
    int64_t want = scalar_id("SELECT COUNT(*) FROM ticket WHERE queue_id = ? AND status = 'open'",
                             q1);
    int64_t seen = 0, last_id = INT64_MAX;
    const char *last_updated = NULL;
    for (;;) {
        json_t *items;
        const char *next;
        assert_int_equal(kf_ticket_list(db, pool, &q, &items, &next, &error), KF_OK);
        size_t k;
        json_t *it;
        json_array_foreach(items, k, it)
        {
            const char *upd = json_string_value(json_object_get(it, "updated_at"));
            int64_t tid = json_integer_value(json_object_get(it, "id"));
            if (last_updated != NULL) {
                int c = strcmp(upd, last_updated);
                assert_true(c < 0 || (c == 0 && tid < last_id));
            }
            last_updated = kf_pool_strdup(pool, upd);
            last_id = tid;
            seen++;
        }
        json_decref(items);
        if (next == NULL)
            break;
        assert_int_equal(kf_ticket_cursor_decode(next, &q.after_usec, &q.after_id), KF_OK);
        q.has_after = 1;
    }
    assert_int_equal(seen, want);
    kf_pool_destroy(&pool);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_ticket),
        cmocka_unit_test(test_duplicate_changes_nothing),
        cmocka_unit_test(test_concurrent_identical),
        cmocka_unit_test(test_concurrent_same_new_customer),
        cmocka_unit_test(test_deadlock_midway_is_retried),
        cmocka_unit_test(test_unionid_links_accounts),
        cmocka_unit_test(test_threading_hook),
        cmocka_unit_test(test_reopen_and_follow_up),
        cmocka_unit_test(test_routing_and_ack),
        cmocka_unit_test(test_attachments),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_cursor_and_time),
        cmocka_unit_test(test_list_queries_use_indexes),
    };
    return cmocka_run_group_tests_name("ingest", tests, group_setup, group_teardown);
}
