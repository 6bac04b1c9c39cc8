/* Configuration: defaults, file parsing, environment, secrets from files, errors. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "kefu/config.h"

static void
test_defaults(void **state)
{
    (void) state;
    kf_config c;
    kf_config_defaults(&c);
    assert_string_equal(c.listen, "127.0.0.1:8080");
    assert_int_equal(c.io_threads, 2);
    assert_int_equal(c.db_workers, 8);
    assert_int_equal(c.http_max_body, 10485760);
    assert_int_equal(c.migrate_on_start, 1);
    assert_string_equal(c.log_format, "kv");
    kf_config_deinit(&c);
}

static void
test_file_parse(void **state)
{
    (void) state;
    kf_config c;
    char err[256];
    const char *text = "# comment\n"
                       "  listen = 0.0.0.0:9000  \n"
                       "\n"
                       "io_threads=4\n"
                       "db_name = \"kefu_prod\"\n"
                       "debug_routes = yes\n"
                       "log_format = json\n";
    kf_config_defaults(&c);
    assert_int_equal(kf_config_parse(&c, text, strlen(text), "kefud.conf", err, sizeof(err)),
                     KF_OK);
    assert_string_equal(c.listen, "0.0.0.0:9000");
    assert_int_equal(c.io_threads, 4);
    assert_string_equal(c.db_name, "kefu_prod");
    assert_int_equal(c.debug_routes, 1);
    assert_string_equal(c.log_format, "json");
    kf_config_deinit(&c);
}

struct bad {
    const char *text, *want;
};

static void
test_file_errors(void **state)
{
    (void) state;
    static const struct bad cases[] = {
        {"nope = 1\n", "kefud.conf:1: unknown key \"nope\""},
        {"\n\nio_threads = 0\n", "kefud.conf:3: io_threads: invalid value \"0\""},
        {"io_threads = 12abc\n", "io_threads: invalid value \"12abc\""},
        {"io_threads = -1\n", "io_threads: invalid value \"-1\""},
        {"listen = localhost\n", "listen: invalid value \"localhost\""},
        {"listen = 127.0.0.1:70000\n", "listen: invalid value"},
        {"log_level = loud\n", "log_level: invalid value \"loud\": expected one of"},
        {"debug_routes = maybe\n", "debug_routes: invalid value \"maybe\""},
        {"just words\n", "kefud.conf:1: expected \"key = value\""},
        {"db_name = kefu;drop\n", "db_name: invalid value"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kf_config c;
        char err[256] = "";
        kf_config_defaults(&c);
        int rc = kf_config_parse(&c, cases[i].text, strlen(cases[i].text), "kefud.conf", err,
                                 sizeof(err));
        if (rc != KF_EINVAL || strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: rc=%d err=\"%s\", want \"%s\"", i, rc, err, cases[i].want);
        kf_config_deinit(&c);
    }
}

static void
test_env_overrides_and_secret_file(void **state)
{
    (void) state;
    kf_config c;
    char err[256] = "", path[] = "/tmp/kefu-secret-XXXXXX", envfile[300];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "s3cr3t pass\n", 12), 12);
    close(fd);
    snprintf(envfile, sizeof(envfile), "KEFU_DB_PASSWORD_FILE=%s", path);
    char *env[] = {"PATH=/bin", "KEFU_DB_WORKERS=3", envfile, "KEFU_TEST_DB_SOCKET=/x",
                   "KEFU_VAR=/var", NULL};
    kf_config_defaults(&c);
    assert_int_equal(kf_config_env(&c, env, err, sizeof(err)), KF_OK);
    assert_int_equal(c.db_workers, 3);
    assert_string_equal(c.db_password, "s3cr3t pass");
    kf_config_deinit(&c);
    unlink(path);

    char *bad[] = {"KEFU_DB_PASSWORD_FILE=/nonexistent/kefu", NULL};
    kf_config_defaults(&c);
    assert_int_equal(kf_config_env(&c, bad, err, sizeof(err)), KF_EINVAL);
    assert_non_null(strstr(err, "db_password_file"));
    kf_config_deinit(&c);

    char *unknown[] = {"KEFU_LISTEM=1.2.3.4:5", NULL};
    kf_config_defaults(&c);
    assert_int_equal(kf_config_env(&c, unknown, err, sizeof(err)), KF_EINVAL);
    assert_non_null(strstr(err, "environment KEFU_LISTEM"));
    kf_config_deinit(&c);

    /* Only secret keys may come from files. */
    char *notsecret[] = {"KEFU_LISTEN_FILE=/etc/hostname", NULL};
    kf_config_defaults(&c);
    assert_int_equal(kf_config_env(&c, notsecret, err, sizeof(err)), KF_EINVAL);
    kf_config_deinit(&c);
}

static void
test_dump_masks_secrets(void **state)
{
    (void) state;
    kf_config c;
    char err[128], *buf = NULL;
    size_t len = 0;
    kf_config_defaults(&c);
    assert_int_equal(kf_config_set(&c, "db_password", "hunter2", err, sizeof(err)), KF_OK);
    FILE *f = open_memstream(&buf, &len);
    kf_config_dump(&c, f);
    fclose(f);
    assert_null(strstr(buf, "hunter2"));
    assert_non_null(strstr(buf, "db_password = (set)"));
    free(buf);
    kf_config_deinit(&c);
}

static void
test_hostport(void **state)
{
    (void) state;
    assert_true(kf_hostport_ok("127.0.0.1:8080", 0));
    assert_true(kf_hostport_ok("[::1]:80", 0));
    assert_true(kf_hostport_ok("example.com:1", 0));
    assert_true(kf_hostport_ok("127.0.0.1:0", 1));
    assert_false(kf_hostport_ok("127.0.0.1:0", 0));
    assert_false(kf_hostport_ok(":80", 0));
    assert_false(kf_hostport_ok("host:", 0));
    assert_false(kf_hostport_ok("host:-1", 0));
    assert_false(kf_hostport_ok("ho st:80", 0));
}

static void
test_help_lists_every_key(void **state)
{
    (void) state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    kf_config_help(f);
    fclose(f);
    const char *keys[] = {"listen", "io_threads", "db_workers", "job_threads", "work_queue_max",
                          "http_max_body", "db_socket", "db_password", "sql_dir", "log_format"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        assert_non_null(strstr(buf, keys[i]));
    free(buf);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_file_parse),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_env_overrides_and_secret_file),
        cmocka_unit_test(test_dump_masks_secrets),
        cmocka_unit_test(test_hostport),
        cmocka_unit_test(test_help_lists_every_key),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
