/*
 * kefu/http.h - what HTTP handlers see: the call, the reply, the route table.
 *
 * A handler runs on a worker thread (or, for routes marked KF_ROUTE_INLINE,
 * on the I/O thread) and never sees libevent types: the I/O thread copies
 * method, path, parameters, headers of interest and the body into a
 * kf_call, and sends the kf_reply back when the handler returns.
 *
 * Ownership: everything in a kf_call and its reply lives in c->pool, which
 *            is destroyed after the reply has been handed to evhttp.
 * Errors:    a handler always fills out (status + body) and returns 0; every
 *            error body is RFC 9457 application/problem+json.
 */
#ifndef KEFU_HTTP_H
#define KEFU_HTTP_H

#include <stdatomic.h>
#include <stdint.h>
#include <jansson.h>
#include "kefu/types.h"
#include "kefu/pool.h"

enum kf_method {
    KF_GET = 1 << 0,
    KF_POST = 1 << 1,
    KF_PUT = 1 << 2,
    KF_PATCH = 1 << 3,
    KF_DELETE = 1 << 4,
    KF_HEAD = 1 << 5,
    KF_OPTIONS = 1 << 6,
};

/* Who may call a route; enforced before the handler runs. */
enum kf_auth {
    KF_AUTH_PUBLIC = 0, /* anyone */
    KF_AUTH_AGENT,      /* agent, supervisor or admin session/token */
    KF_AUTH_SUPERVISOR, /* supervisor or admin */
    KF_AUTH_ADMIN,      /* admin only */
    KF_AUTH_TOKEN,      /* an API token of any role (integrations) */
};

enum kf_route_flags {
    KF_ROUTE_INLINE = 1 << 0, /* run on the I/O thread: no DB, no blocking, cheap */
    KF_ROUTE_DEBUG = 1 << 1,  /* only registered when debug_routes is on */
    KF_ROUTE_STREAM = 1 << 2, /* the handler authorizes on a worker; a 200 reply that carries
                                 a prepared stream (c->_stream) then becomes a long-lived
                                 chunked reply fed by the I/O thread (SSE, server/loop.c) */
};

typedef int kf_handler(kf_call *c, kf_reply *out);

struct kf_route {
    unsigned methods;     /* KF_GET | ... */
    const char *pattern;  /* "/api/v1/tickets/{id}"; {name} matches one segment */
    int auth;             /* enum kf_auth */
    size_t max_body;      /* bytes; 0 = no body accepted */
    kf_handler *handler;
    unsigned flags;       /* enum kf_route_flags */
    const char *name;     /* metrics label; defaults to the pattern */
};

#define KF_MAX_PARAMS 8
#define KF_MAX_HEADERS 32

typedef struct kf_kv {
    const char *key, *value;
} kf_kv;

typedef struct kf_principal {
    uint64_t agent_id;        /* 0 for an API token not bound to an agent */
    int role;                 /* enum kf_role (kefu/auth.h); 0 = anonymous */
    int via_token;            /* 1 = API token, 0 = session cookie */
    uint64_t token_id;        /* the API token's id when via_token */
    const char *session_hash; /* SHA-256 hex of the session token when via cookie */
} kf_principal;

struct kf_reply {
    int status;
    const char *content_type;
    const char *body;
    size_t body_len;
    kf_kv headers[8];
    unsigned n_headers;
};

struct kf_call {
    kf_pool *pool;
    const kf_route *route;
    unsigned route_index;
    const kf_config *cfg;
    kf_db *db;            /* the worker's connection; NULL for inline routes */
    unsigned method;      /* one enum kf_method bit */
    const char *path;     /* decoded path, no query */
    const char *query;    /* raw query string or NULL */
    const char *request_id;
    const char *peer;     /* client address */
    kf_kv params[KF_MAX_PARAMS];
    unsigned n_params;
    kf_kv headers[KF_MAX_HEADERS]; /* every request header, names as sent */
    unsigned n_headers;
    const char *body;     /* NUL-terminated copy; body_len excludes the NUL */
    size_t body_len;
    kf_principal principal;
    double started;       /* monotonic seconds when the request arrived */
    atomic_int cancelled; /* set by the I/O thread when the client went away */
    kf_reply reply;
    /* private to server/ */
    void *_req;
    kf_loop *_loop;
    kf_call *_next;
    void *_stream;        /* KF_ROUTE_STREAM: what the handler prepared (server/sse.h) */
};

/* Path parameter by name, or NULL. */
const char *kf_call_param(const kf_call *c, const char *name);
/** Plain decimal digits (1..19 of them, no sign or space) to *v_r; 1 on success, else 0. */
int kf_parse_u64(const char *s, uint64_t *v_r);
/* Unsigned decimal path parameter; KF_EINVAL when absent or not a number. */
int kf_call_param_u64(const kf_call *c, const char *name, uint64_t *v_r);
/* Header by case-insensitive name, or NULL. */
const char *kf_call_header(const kf_call *c, const char *name);
/*
 * Query-string value by name, percent-decoded into the pool, or NULL.
 * The first occurrence wins.
 */
const char *kf_call_query(const kf_call *c, const char *name);

/* Replies.  These fill out and return 0 so a handler can `return kf_reply_...`. */
int kf_reply_json(kf_reply *out, kf_call *c, int status, json_t *root); /* steals root */
int kf_reply_text(kf_reply *out, kf_call *c, int status, const char *content_type,
                  const char *body, size_t len); /* body copied into the pool */
void kf_reply_header(kf_reply *out, kf_call *c, const char *key, const char *value);

/*
 * RFC 9457 problem details.  code is a short slug ("not-found") that forms
 * the type URI "/problems/<code>"; detail may be NULL.  errors (may be
 * NULL) is a JSON array of {"field": ..., "detail": ...} and is stolen.
 */
int kf_reply_problem(kf_reply *out, kf_call *c, int status, const char *code, const char *detail,
                     json_t *errors);
/** 500, logs the reason once at ERR with the request id. */
int kf_reply_internal(kf_reply *out, kf_call *c, const char *reason);
/** Build the problem JSON text (heap string, caller frees). */
char *kf_problem_json(int status, const char *code, const char *detail, const char *instance,
                      const char *request_id, json_t *errors);
/** Standard reason phrase for a status ("Not Found"). */
const char *kf_http_reason(int status);
/** Append {"field":..,"detail":..} to *errors, creating the array. */
void kf_problem_add_error(json_t **errors, const char *field, const char *detail);

/* Router: a table of routes, matched by segments. */
kf_router *kf_router_create(void);
void kf_router_destroy(kf_router **r);
/** Add routes up to the terminating {0}; returns the first index added. */
unsigned kf_router_add(kf_router *r, const kf_route *routes, int include_debug);
unsigned kf_router_count(const kf_router *r);
const kf_route *kf_router_get(const kf_router *r, unsigned index);
/** Largest max_body of any route (the evhttp-wide cap). */
size_t kf_router_max_body(const kf_router *r);

enum kf_match { KF_MATCH_OK, KF_MATCH_NOT_FOUND, KF_MATCH_BAD_METHOD };
/*
 * Match method + path.  On KF_MATCH_OK fills *index_r and params (values
 * point into pool copies).  On KF_MATCH_BAD_METHOD *allow_r gets the
 * methods the path does accept (for the Allow header).  HEAD matches GET.
 */
int kf_router_match(const kf_router *r, unsigned method, const char *path, kf_pool *pool,
                    unsigned *index_r, kf_kv *params, unsigned *n_params_r, unsigned *allow_r);
/** "GET, HEAD, POST" for a method mask, into buf. */
void kf_methods_str(unsigned methods, char *buf, size_t bufsz);
/** Method name to bit; 0 when unknown. */
unsigned kf_method_parse(const char *name);

/*
 * JSON request bodies.  kf_call_json_object() parses c->body (duplicate
 * keys rejected, must be an object, must be valid UTF-8) and keeps the root
 * alive until the pool is destroyed.  On failure it fills c->reply with a
 * 400 problem+json naming the position and returns KF_EINVAL.
 */
int kf_call_json_object(kf_call *c, json_t **root_r);
/*
 * Field validation, collecting every problem into *errors (for a 422 with
 * errors[]): unknown keys; typed getters that check presence, type and
 * length.  Getters return 1 when the field is present and valid, 0
 * otherwise (absent optional fields are not errors).  Strings are borrowed
 * from the root.
 */
void kf_json_unknown_fields(json_t *obj, const char *const *allowed, json_t **errors);
int kf_json_get_str(json_t *obj, const char *key, int required, size_t max_len, const char **out,
                    json_t **errors);
int kf_json_get_u64(json_t *obj, const char *key, int required, uint64_t *out, json_t **errors);
int kf_json_get_bool(json_t *obj, const char *key, int required, int *out, json_t **errors);
/* An array of at most max distinct positive integer ids; *ids_r in pool (NULL, 0 when absent). */
int kf_json_get_ids(json_t *obj, const char *key, size_t max, kf_pool *pool, uint64_t **ids_r,
                    size_t *n_r, json_t **errors);
/** A string field that must be one of choices (NULL-terminated). */
int kf_json_get_enum(json_t *obj, const char *key, int required, const char *const *choices,
                     const char **out, json_t **errors);
/** 422 "validation" problem with errors[] (stolen); returns 0. */
int kf_reply_invalid(kf_reply *out, kf_call *c, json_t *errors);

/** Percent-decode (and '+' to space when form) into pool; NULL on bad escapes or NUL bytes. */
char *kf_url_decode(kf_pool *pool, const char *s, size_t len, int form);

#endif /* KEFU_HTTP_H */
