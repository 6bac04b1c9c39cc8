/* libFuzzer: request paths through the router, query strings and percent-decoding. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/http.h"
#include "kefu/pool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
h_none(kf_call *c, kf_reply *out)
{
    (void) c;
    (void) out;
    return 0;
}

static const kf_route routes[] = {
    {KF_GET, "/healthz", KF_AUTH_PUBLIC, 0, h_none, 0, NULL},
    {KF_GET | KF_PATCH, "/api/v1/tickets/{id}", KF_AUTH_AGENT, 1024, h_none, 0, NULL},
    {KF_GET, "/api/v1/tickets/search", KF_AUTH_AGENT, 0, h_none, 0, NULL},
    {KF_POST, "/api/v1/tickets/{id}/messages/{mid}", KF_AUTH_AGENT, 1024, h_none, 0, NULL},
    {0, NULL, 0, 0, NULL, 0, NULL},
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static kf_router *r;
    if (r == NULL) {
        r = kf_router_create();
        kf_router_add(r, routes, 1);
    }
    if (size > 8192)
        return 0;
    kf_pool *pool = kf_pool_create(4096);
    /* Input: "<path>?<query>" */
    char *s = kf_pool_strndup(pool, (const char *) data, size);
    char *q = strchr(s, '?');
    if (q)
        *q++ = '\0';
    kf_kv params[KF_MAX_PARAMS];
    unsigned idx, np, allow;
    kf_router_match(r, KF_GET, s, pool, &idx, params, &np, &allow);
    kf_router_match(r, KF_POST, s, pool, &idx, params, &np, &allow);
    kf_call *c = kf_pool_alloc(pool, sizeof(*c));
    c->pool = pool;
    c->query = q;
    kf_call_query(c, "q");
    kf_call_query(c, "");
    kf_url_decode(pool, (const char *) data, size, 1);
    kf_pool_destroy(&pool);
    return 0;
}
