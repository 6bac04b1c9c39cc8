/* RFC 9457 problem details, replies, query strings and URL decoding. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>

#include "kefu/http.h"
#include "kefu/log.h"
#include "kefu/pool.h"

static kf_call *
new_call(kf_pool *pool, const char *path, const char *query)
{
    kf_call *c = kf_pool_alloc(pool, sizeof(*c));
    c->pool = pool;
    c->path = path;
    c->query = query;
    c->request_id = "req-1";
    return c;
}

static void
test_problem_shape(void **state)
{
    (void) state;
    json_t *errors = NULL;
    kf_problem_add_error(&errors, "email", "must be an address");
    kf_problem_add_error(&errors, "subject", "is required");
    char *text = kf_problem_json(422, "validation", "Two fields are wrong.", "/api/v1/x", "r1",
                                 errors);
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "type")), "/problems/validation");
    assert_string_equal(json_string_value(json_object_get(o, "title")), "Unprocessable Content");
    assert_int_equal(json_integer_value(json_object_get(o, "status")), 422);
    assert_string_equal(json_string_value(json_object_get(o, "detail")), "Two fields are wrong.");
    assert_string_equal(json_string_value(json_object_get(o, "instance")), "/api/v1/x");
    assert_string_equal(json_string_value(json_object_get(o, "request_id")), "r1");
    json_t *e = json_object_get(o, "errors");
    assert_int_equal(json_array_size(e), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(e, 1), "field")),
                        "subject");
    json_decref(o);
    free(text);
}

static void
test_problem_reply(void **state)
{
    (void) state;
    kf_pool *pool = kf_pool_create(1024);
    kf_call *c = new_call(pool, "/x", NULL);
    kf_reply_problem(&c->reply, c, 404, "not-found", NULL, NULL);
    assert_int_equal(c->reply.status, 404);
    assert_string_equal(c->reply.content_type, "application/problem+json");
    assert_non_null(strstr(c->reply.body, "\"detail\":\"Not Found\""));
    /* A path that is not UTF-8 is left out, not sent broken. */
    kf_call *c2 = new_call(pool, "/\xff\xfe", NULL);
    kf_reply_problem(&c2->reply, c2, 400, "bad", "x", NULL);
    assert_null(strstr(c2->reply.body, "instance"));
    kf_pool_destroy(&pool);
}

static void
test_internal_is_logged_once(void **state)
{
    (void) state;
    char path[] = "/tmp/kefu-log-XXXXXX";
    int fd = mkstemp(path);
    kf_log_set_fd(fd);
    kf_pool *pool = kf_pool_create(1024);
    kf_call *c = new_call(pool, "/x", NULL);
    kf_reply_internal(&c->reply, c, "db exploded\nsecond line");
    kf_log_set_fd(-1);
    assert_int_equal(c->reply.status, 500);
    assert_null(strstr(c->reply.body, "exploded")); /* the reason is not leaked to the client */
    char buf[1024] = "";
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "level=err"));
    assert_non_null(strstr(buf, "req=req-1"));
    assert_non_null(strstr(buf, "db exploded?second line"));
    assert_ptr_equal(strchr(buf, '\n'), buf + n - 1); /* exactly one line */
    close(fd);
    unlink(path);
    kf_pool_destroy(&pool);
}

static void
test_json_reply_and_headers(void **state)
{
    (void) state;
    kf_pool *pool = kf_pool_create(1024);
    kf_call *c = new_call(pool, "/x", NULL);
    kf_reply_json(&c->reply, c, 201, json_pack("{s:i}", "id", 7));
    kf_reply_header(&c->reply, c, "Location", "/x/7");
    assert_int_equal(c->reply.status, 201);
    assert_string_equal(c->reply.body, "{\"id\":7}");
    assert_int_equal(c->reply.n_headers, 1);
    assert_string_equal(c->reply.headers[0].value, "/x/7");
    kf_pool_destroy(&pool);
}

static void
test_query(void **state)
{
    (void) state;
    kf_pool *pool = kf_pool_create(1024);
    kf_call *c = new_call(pool, "/x", "q=hello+world&ms=150&empty&x=%E5%AE%A2%E6%9C%8D&bad=%zz&ms=9");
    assert_string_equal(kf_call_query(c, "q"), "hello world");
    assert_string_equal(kf_call_query(c, "ms"), "150"); /* first wins */
    assert_string_equal(kf_call_query(c, "empty"), "");
    assert_string_equal(kf_call_query(c, "x"), "客服");
    assert_null(kf_call_query(c, "bad"));
    assert_null(kf_call_query(c, "missing"));
    kf_call *c2 = new_call(pool, "/x", NULL);
    assert_null(kf_call_query(c2, "q"));
    kf_pool_destroy(&pool);
}

static void
test_params_u64(void **state)
{
    (void) state;
    kf_pool *pool = kf_pool_create(1024);
    kf_call *c = new_call(pool, "/x", NULL);
    uint64_t v = 0;
    c->params[0] = (kf_kv){"id", "18446744073709551"};
    c->params[1] = (kf_kv){"bad", "12a"};
    c->params[2] = (kf_kv){"big", "99999999999999999999"};
    c->n_params = 3;
    assert_int_equal(kf_call_param_u64(c, "id", &v), KF_OK);
    assert_true(v == 18446744073709551ULL);
    assert_int_equal(kf_call_param_u64(c, "bad", &v), KF_EINVAL);
    assert_int_equal(kf_call_param_u64(c, "big", &v), KF_EINVAL);
    assert_int_equal(kf_call_param_u64(c, "none", &v), KF_EINVAL);
    kf_pool_destroy(&pool);
}

static void
test_reasons(void **state)
{
    (void) state;
    assert_string_equal(kf_http_reason(413), "Content Too Large");
    assert_string_equal(kf_http_reason(503), "Service Unavailable");
    assert_string_equal(kf_http_reason(299), "Unknown");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_problem_shape),    cmocka_unit_test(test_problem_reply),
        cmocka_unit_test(test_internal_is_logged_once), cmocka_unit_test(test_json_reply_and_headers),
        cmocka_unit_test(test_query),            cmocka_unit_test(test_params_u64),
        cmocka_unit_test(test_reasons),
    };
    return cmocka_run_group_tests_name("problem", tests, NULL, NULL);
}
