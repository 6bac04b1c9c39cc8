/*
 * router.c - the route table: method + path pattern with {params}.
 *
 * Patterns are split into segments once; matching walks the request path
 * segment by segment.  A literal segment beats a {param} segment, so
 * "/tickets/search" and "/tickets/{id}" can coexist in either order.
 */
#include <string.h>
#include <strings.h>

#include "kefu/http.h"
#include "kefu/log.h"
#include "kefu/pool.h"

#define MAX_SEGS 16

struct rroute {
    kf_route r;
    unsigned nseg;
    char *seg[MAX_SEGS];
    int is_param[MAX_SEGS];
};

struct kf_router {
    struct rroute *routes;
    unsigned n, cap;
};

kf_router *
kf_router_create(void)
{
    return kf_xcalloc(1, sizeof(kf_router));
}

void
kf_router_destroy(kf_router **pr)
{
    kf_router *r = *pr;
    if (r == NULL)
        return;
    for (unsigned i = 0; i < r->n; i++)
        for (unsigned j = 0; j < r->routes[i].nseg; j++)
            free(r->routes[i].seg[j]);
    free(r->routes);
    free(r);
    *pr = NULL;
}

static void
split_pattern(struct rroute *rr)
{
    const char *p = rr->r.pattern;
    if (p[0] != '/')
        kf_panic("route pattern %s must start with /", p);
    p++;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t) (slash - p) : strlen(p);
        if (rr->nseg == MAX_SEGS)
            kf_panic("route pattern %s has too many segments", rr->r.pattern);
        if (len >= 2 && p[0] == '{' && p[len - 1] == '}') {
            rr->is_param[rr->nseg] = 1;
            rr->seg[rr->nseg] = kf_xstrndup(p + 1, len - 2);
        } else {
            rr->seg[rr->nseg] = kf_xstrndup(p, len);
        }
        rr->nseg++;
        p += len;
        if (*p == '/')
            p++;
    }
}

unsigned
kf_router_add(kf_router *r, const kf_route *routes, int include_debug)
{
    unsigned first = r->n;
    for (const kf_route *rt = routes; rt->pattern != NULL; rt++) {
        if ((rt->flags & KF_ROUTE_DEBUG) && !include_debug)
            continue;
        if (r->n == r->cap) {
            r->cap = r->cap ? r->cap * 2 : 32;
            r->routes = kf_xrealloc(r->routes, r->cap * sizeof(*r->routes));
        }
        struct rroute *rr = &r->routes[r->n++];
        memset(rr, 0, sizeof(*rr));
        rr->r = *rt;
        if (rr->r.name == NULL)
            rr->r.name = rr->r.pattern;
        split_pattern(rr);
    }
    return first;
}

unsigned
kf_router_count(const kf_router *r)
{
    return r->n;
}

const kf_route *
kf_router_get(const kf_router *r, unsigned i)
{
    return i < r->n ? &r->routes[i].r : NULL;
}

size_t
kf_router_max_body(const kf_router *r)
{
    size_t m = 0;
    for (unsigned i = 0; i < r->n; i++)
        if (r->routes[i].r.max_body > m)
            m = r->routes[i].r.max_body;
    return m;
}

/* Split the request path; returns the number of segments or -1 if too many. */
static int
split_path(const char *path, const char **seg, size_t *len)
{
    int n = 0;
    const char *p = path;
    if (*p != '/')
        return -1;
    p++;
    if (*p == '\0')
        return 0;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t l = slash ? (size_t) (slash - p) : strlen(p);
        if (n == MAX_SEGS)
            return -1;
        seg[n] = p;
        len[n] = l;
        n++;
        if (slash == NULL)
            break;
        p = slash + 1;
    }
    return n;
}

/* Score: 0 = no match; otherwise higher for more literal segments. */
static unsigned
match_route(const struct rroute *rr, int n, const char **seg, const size_t *len)
{
    unsigned score = 1;
    if ((int) rr->nseg != n)
        return 0;
    for (int i = 0; i < n; i++) {
        if (rr->is_param[i]) {
            if (len[i] == 0)
                return 0;
        } else {
            if (strlen(rr->seg[i]) != len[i] || memcmp(rr->seg[i], seg[i], len[i]) != 0)
                return 0;
            score += 1u << (MAX_SEGS - i);
        }
    }
    return score;
}

int
kf_router_match(const kf_router *r, unsigned method, const char *path, kf_pool *pool,
                unsigned *index_r, kf_kv *params, unsigned *n_params_r, unsigned *allow_r)
{
    const char *seg[MAX_SEGS];
    size_t len[MAX_SEGS];
    int n = split_path(path, seg, len);
    unsigned best = 0, best_i = 0, allow = 0;
    unsigned want = method == KF_HEAD ? (KF_HEAD | KF_GET) : method;

    *n_params_r = 0;
    *allow_r = 0;
    if (n < 0)
        return KF_MATCH_NOT_FOUND;
    for (unsigned i = 0; i < r->n; i++) {
        unsigned score = match_route(&r->routes[i], n, seg, len);
        if (score == 0)
            continue;
        allow |= r->routes[i].r.methods;
        if ((r->routes[i].r.methods & want) && score > best) {
            best = score;
            best_i = i;
        }
    }
    if (best == 0) {
        if (allow == 0)
            return KF_MATCH_NOT_FOUND;
        if (allow & KF_GET)
            allow |= KF_HEAD;
        *allow_r = allow;
        return KF_MATCH_BAD_METHOD;
    }
    const struct rroute *rr = &r->routes[best_i];
    unsigned np = 0;
    for (int i = 0; i < n && np < KF_MAX_PARAMS; i++) {
        if (!rr->is_param[i])
            continue;
        params[np].key = rr->seg[i];
        params[np].value = kf_url_decode(pool, seg[i], len[i], 0);
        if (params[np].value == NULL)
            return KF_MATCH_NOT_FOUND;
        np++;
    }
    *n_params_r = np;
    *index_r = best_i;
    return KF_MATCH_OK;
}

static const struct {
    unsigned bit;
    const char *name;
} method_names[] = {
    {KF_GET, "GET"},       {KF_HEAD, "HEAD"},       {KF_POST, "POST"},
    {KF_PUT, "PUT"},       {KF_PATCH, "PATCH"},     {KF_DELETE, "DELETE"},
    {KF_OPTIONS, "OPTIONS"},
};

void
kf_methods_str(unsigned methods, char *buf, size_t bufsz)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < KF_ARRAY_LEN(method_names); i++) {
        if (!(methods & method_names[i].bit))
            continue;
        size_t need = strlen(method_names[i].name) + (o ? 2 : 0);
        if (o + need + 1 > bufsz)
            break;
        if (o) {
            memcpy(buf + o, ", ", 2);
            o += 2;
        }
        memcpy(buf + o, method_names[i].name, strlen(method_names[i].name));
        o += strlen(method_names[i].name);
        buf[o] = '\0';
    }
}

unsigned
kf_method_parse(const char *name)
{
    for (size_t i = 0; i < KF_ARRAY_LEN(method_names); i++)
        if (strcmp(name, method_names[i].name) == 0)
            return method_names[i].bit;
    return 0;
}
