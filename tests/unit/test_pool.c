/* Pools, strings, printable(), constant-time compare, SQL splitting, metrics text. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kefu/log.h"
#include "kefu/metrics.h"
#include "kefu/migrate.h"
#include "kefu/pool.h"

static int cleanups_run;

static void
count_cleanup(void *arg)
{
    cleanups_run += *(int *) arg;
}

static void
test_pool_alloc_and_cleanup(void **state)
{
    (void) state;
    kf_pool *p = kf_pool_create(256);
    int one = 1, ten = 10;
    char *a = kf_pool_alloc(p, 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(a[i], 0); /* zeroed */
    assert_int_equal((uintptr_t) a % 16, 0);
    char *big = kf_pool_alloc(p, 100000); /* larger than a block */
    memset(big, 'x', 100000);
    char *b = kf_pool_alloc(p, 8);
    assert_int_equal((uintptr_t) b % 16, 0);
    assert_string_equal(kf_pool_strndup(p, "abc\0def", 7) + 4, "def");
    assert_string_equal(kf_pool_printf(p, "%s-%06d", "KF", 123), "KF-000123");
    assert_null(kf_pool_strdup(p, NULL));
    kf_pool_cleanup_add(p, count_cleanup, &one);
    kf_pool_cleanup_add(p, count_cleanup, &ten);
    assert_true(kf_pool_used(p) >= 100018);
    cleanups_run = 0;
    kf_pool_destroy(&p);
    assert_null(p);
    assert_int_equal(cleanups_run, 11);
}

static void
test_str(void **state)
{
    (void) state;
    kf_str s = KF_STR_INIT;
    kf_str_puts(&s, "hello");
    kf_str_append(&s, ", ", 2);
    for (int i = 0; i < 1000; i++)
        kf_str_printf(&s, "%d", i % 10);
    assert_int_equal(s.len, 7 + 1000);
    assert_memory_equal(s.ptr, "hello, 0123", 11);
    assert_int_equal(s.ptr[s.len], '\0');
    kf_str_reset(&s);
    assert_int_equal(s.len, 0);
    assert_string_equal(s.ptr, "");
    kf_str_free(&s);
    assert_null(s.ptr);
}

static void
test_printable(void **state)
{
    (void) state;
    char buf[32];
    assert_string_equal(kf_printable(buf, sizeof(buf), "plain text", 10), "plain text");
    assert_string_equal(kf_printable(buf, sizeof(buf), "a\nb\tc\"d\\", 8), "a?b?c?d?");
    assert_string_equal(kf_printable(buf, sizeof(buf), "客服", strlen("客服")), "客服");
    assert_string_equal(kf_printable(buf, sizeof(buf), "\xff\xc3(", 3), "??" "(");
    assert_string_equal(kf_printable(buf, sizeof(buf), "\xe5\xae", 2), "??"); /* cut sequence */
    assert_string_equal(kf_printable(buf, sizeof(buf), "a\0b", 3), "a?b");
    /* Truncation ends in "..." on a character boundary. */
    const char *long_zh = "一二三四五六七八九十一二三四五";
    kf_printable(buf, 12, long_zh, strlen(long_zh));
    assert_string_equal(buf, "一二...");
    kf_printable(buf, 8, "abcdefghijkl", 12);
    assert_string_equal(buf, "abcd...");
    assert_string_equal(kf_printable(buf, sizeof(buf), NULL, 5), "");
}

static void
test_memeq_ct(void **state)
{
    (void) state;
    assert_true(kf_memeq_ct("token", 5, "token", 5));
    assert_false(kf_memeq_ct("token", 5, "tokem", 5));
    assert_false(kf_memeq_ct("token", 5, "token!", 6));
    assert_true(kf_memeq_ct("", 0, "", 0));
}

struct split_out {
    char stmts[8][128];
    int n;
};

static int
collect(const char *stmt, size_t len, void *arg)
{
    struct split_out *o = arg;
    snprintf(o->stmts[o->n++], 128, "%.*s", (int) len, stmt);
    return 0;
}

static void
test_sql_split(void **state)
{
    (void) state;
    struct split_out o = {0};
    const char *sql = "-- header; not a statement\n"
                      "CREATE TABLE a (x VARCHAR(10) DEFAULT ';');\n"
                      "/* block; comment */ INSERT INTO a VALUES ('it''s;'), (\"q;\\\"\");\n"
                      "# hash comment;\n"
                      "SELECT `we;ird`;\n"
                      "SELECT 1 -- trailing\n";
    assert_int_equal(kf_sql_split(sql, strlen(sql), collect, &o), 0);
    assert_int_equal(o.n, 4);
    assert_string_equal(o.stmts[0], "-- header; not a statement\nCREATE TABLE a (x VARCHAR(10) DEFAULT ';')");
    assert_string_equal(o.stmts[1],
                        "/* block; comment */ INSERT INTO a VALUES ('it''s;'), (\"q;\\\"\")");
    assert_string_equal(o.stmts[2], "# hash comment;\nSELECT `we;ird`");
    assert_string_equal(o.stmts[3], "SELECT 1 -- trailing\n");

    struct split_out o2 = {0};
    const char *only_comments = "SELECT 1;\n-- bye\n/* end */\n";
    kf_sql_split(only_comments, strlen(only_comments), collect, &o2);
    assert_int_equal(o2.n, 1);
}

static void
test_metrics_render(void **state)
{
    (void) state;
    const char *names[] = {"/healthz", "/api/v1/tickets/{id}"};
    kf_metrics_init(names, 2);
    kf_metrics_http(0, 200, 0.0001);
    kf_metrics_http(0, 200, 0.003);
    kf_metrics_http(1, 404, 0.2);
    kf_metrics_http(99, 404, 20.0); /* out of range -> unmatched */
    unsigned j = kf_metrics_job_register("outbox");
    kf_metrics_job(j, 0);
    kf_metrics_job(j, 1);
    kf_str s = KF_STR_INIT;
    kf_metrics_render(&s);
    assert_non_null(strstr(s.ptr, "kefu_http_requests_total{route=\"/healthz\",status=\"200\"} 2\n"));
    assert_non_null(strstr(s.ptr, "kefu_http_requests_total{route=\"unmatched\",status=\"404\"} 1\n"));
    assert_non_null(strstr(s.ptr, "kefu_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"0.0005\"} 1\n"));
    assert_non_null(strstr(s.ptr, "kefu_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"0.005\"} 2\n"));
    assert_non_null(strstr(s.ptr, "kefu_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"10\"} 0\n"));
    assert_non_null(strstr(s.ptr, "kefu_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"+Inf\"} 1\n"));
    assert_non_null(strstr(s.ptr, "kefu_job_runs_total{job=\"outbox\"} 2\n"));
    assert_non_null(strstr(s.ptr, "kefu_job_failures_total{job=\"outbox\"} 1\n"));
    assert_non_null(strstr(s.ptr, "# TYPE kefu_worker_queue_depth gauge\n"));
    kf_str_free(&s);
    kf_metrics_shutdown();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_alloc_and_cleanup), cmocka_unit_test(test_str),
        cmocka_unit_test(test_printable),              cmocka_unit_test(test_memeq_ct),
        cmocka_unit_test(test_sql_split),              cmocka_unit_test(test_metrics_render),
    };
    return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
