/* Router matching: literals beat params, 404 vs 405 with Allow, HEAD, decoding. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "kefu/http.h"
#include "kefu/pool.h"

static int
h_dummy(kf_call *c, kf_reply *out)
{
    (void) c;
    (void) out;
    return 0;
}

static const kf_route routes[] = {
    {KF_GET, "/healthz", KF_AUTH_PUBLIC, 0, h_dummy, 0, NULL},
    {KF_GET | KF_POST, "/api/v1/tickets", KF_AUTH_AGENT, 65536, h_dummy, 0, NULL},
    {KF_GET | KF_PATCH, "/api/v1/tickets/{id}", KF_AUTH_AGENT, 65536, h_dummy, 0, NULL},
    {KF_GET, "/api/v1/tickets/search", KF_AUTH_AGENT, 0, h_dummy, 0, NULL},
    {KF_POST, "/api/v1/tickets/{id}/messages/{mid}", KF_AUTH_AGENT, 1024, h_dummy, 0, NULL},
    {KF_GET, "/debug/x", KF_AUTH_PUBLIC, 0, h_dummy, KF_ROUTE_DEBUG, NULL},
    {0, NULL, 0, 0, NULL, 0, NULL},
};

struct fx {
    kf_router *r;
    kf_pool *pool;
};

static int
setup(void **state)
{
    struct fx *f = kf_xcalloc(1, sizeof(*f));
    f->r = kf_router_create();
    kf_router_add(f->r, routes, 0);
    f->pool = kf_pool_create(1024);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    kf_router_destroy(&f->r);
    kf_pool_destroy(&f->pool);
    free(f);
    return 0;
}

static int
match(struct fx *f, unsigned method, const char *path, unsigned *idx, kf_kv *params, unsigned *np,
      unsigned *allow)
{
    return kf_router_match(f->r, method, path, f->pool, idx, params, np, allow);
}

static void
test_literal_and_params(void **state)
{
    struct fx *f = *state;
    unsigned idx, np, allow;
    kf_kv p[KF_MAX_PARAMS];

    assert_int_equal(match(f, KF_GET, "/healthz", &idx, p, &np, &allow), KF_MATCH_OK);
    assert_string_equal(kf_router_get(f->r, idx)->pattern, "/healthz");
    assert_int_equal(np, 0);

    assert_int_equal(match(f, KF_PATCH, "/api/v1/tickets/42", &idx, p, &np, &allow), KF_MATCH_OK);
    assert_string_equal(kf_router_get(f->r, idx)->pattern, "/api/v1/tickets/{id}");
    assert_int_equal(np, 1);
    assert_string_equal(p[0].key, "id");
    assert_string_equal(p[0].value, "42");

    /* The literal "search" wins over {id} although {id} is listed first. */
    assert_int_equal(match(f, KF_GET, "/api/v1/tickets/search", &idx, p, &np, &allow),
                     KF_MATCH_OK);
    assert_string_equal(kf_router_get(f->r, idx)->pattern, "/api/v1/tickets/search");

    assert_int_equal(match(f, KF_POST, "/api/v1/tickets/7/messages/9", &idx, p, &np, &allow),
                     KF_MATCH_OK);
    assert_int_equal(np, 2);
    assert_string_equal(p[1].key, "mid");
    assert_string_equal(p[1].value, "9");
}

static void
test_not_found_and_bad_method(void **state)
{
    struct fx *f = *state;
    unsigned idx, np, allow;
    kf_kv p[KF_MAX_PARAMS];
    char buf[64];

    assert_int_equal(match(f, KF_GET, "/nope", &idx, p, &np, &allow), KF_MATCH_NOT_FOUND);
    assert_int_equal(match(f, KF_GET, "/healthz/", &idx, p, &np, &allow), KF_MATCH_NOT_FOUND);
    assert_int_equal(match(f, KF_GET, "/api/v1/tickets//messages/1", &idx, p, &np, &allow),
                     KF_MATCH_NOT_FOUND);
    assert_int_equal(match(f, KF_GET, "", &idx, p, &np, &allow), KF_MATCH_NOT_FOUND);

    assert_int_equal(match(f, KF_DELETE, "/api/v1/tickets/5", &idx, p, &np, &allow),
                     KF_MATCH_BAD_METHOD);
    kf_methods_str(allow, buf, sizeof(buf));
    assert_string_equal(buf, "GET, HEAD, PATCH");

    assert_int_equal(match(f, KF_POST, "/healthz", &idx, p, &np, &allow), KF_MATCH_BAD_METHOD);
    kf_methods_str(allow, buf, sizeof(buf));
    assert_string_equal(buf, "GET, HEAD");
}

static void
test_head_matches_get(void **state)
{
    struct fx *f = *state;
    unsigned idx, np, allow;
    kf_kv p[KF_MAX_PARAMS];
    assert_int_equal(match(f, KF_HEAD, "/healthz", &idx, p, &np, &allow), KF_MATCH_OK);
}

static void
test_debug_routes_excluded(void **state)
{
    struct fx *f = *state;
    unsigned idx, np, allow;
    kf_kv p[KF_MAX_PARAMS];
    assert_int_equal(match(f, KF_GET, "/debug/x", &idx, p, &np, &allow), KF_MATCH_NOT_FOUND);
    kf_router *r = kf_router_create();
    kf_router_add(r, routes, 1);
    assert_int_equal(kf_router_count(r), 6);
    assert_int_equal(kf_router_match(r, KF_GET, "/debug/x", f->pool, &idx, p, &np, &allow),
                     KF_MATCH_OK);
    assert_int_equal(kf_router_max_body(r), 65536);
    kf_router_destroy(&r);
}

static void
test_param_decoding(void **state)
{
    struct fx *f = *state;
    unsigned idx, np, allow;
    kf_kv p[KF_MAX_PARAMS];

    assert_int_equal(match(f, KF_GET, "/api/v1/tickets/KF%2D000123", &idx, p, &np, &allow),
                     KF_MATCH_OK);
    assert_string_equal(p[0].value, "KF-000123");
    /* A NUL byte or a broken escape never reaches a handler. */
    assert_int_equal(match(f, KF_GET, "/api/v1/tickets/a%00b", &idx, p, &np, &allow),
                     KF_MATCH_NOT_FOUND);
    assert_int_equal(match(f, KF_GET, "/api/v1/tickets/a%4", &idx, p, &np, &allow),
                     KF_MATCH_NOT_FOUND);
    assert_int_equal(match(f, KF_GET, "/api/v1/tickets/%zz", &idx, p, &np, &allow),
                     KF_MATCH_NOT_FOUND);
}

static void
test_method_parse(void **state)
{
    (void) state;
    assert_int_equal(kf_method_parse("GET"), KF_GET);
    assert_int_equal(kf_method_parse("PATCH"), KF_PATCH);
    assert_int_equal(kf_method_parse("get"), 0);
    assert_int_equal(kf_method_parse("TRACE"), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_literal_and_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found_and_bad_method, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_matches_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_debug_routes_excluded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_param_decoding, setup, teardown),
        cmocka_unit_test(test_method_parse),
    };
    return cmocka_run_group_tests_name("router", tests, NULL, NULL);
}
