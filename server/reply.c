/*
 * reply.c - what handlers use to read a call and build a reply, and the
 * RFC 9457 problem+json builder.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kefu/http.h"
#include "kefu/log.h"
#include "kefu/pool.h"

const char *
kf_call_param(const kf_call *c, const char *name)
{
    for (unsigned i = 0; i < c->n_params; i++)
        if (strcmp(c->params[i].key, name) == 0)
            return c->params[i].value;
    return NULL;
}

int
kf_parse_u64(const char *s, uint64_t *v_r)
{
    uint64_t x = 0;
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 19)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char) s[i]))
            return 0;
        x = x * 10 + (uint64_t) (s[i] - '0');
    }
    *v_r = x;
    return 1;
}

int
kf_call_param_u64(const kf_call *c, const char *name, uint64_t *v_r)
{
    return kf_parse_u64(kf_call_param(c, name), v_r) ? KF_OK : KF_EINVAL;
}

const char *
kf_call_header(const kf_call *c, const char *name)
{
    for (unsigned i = 0; i < c->n_headers; i++)
        if (strcasecmp(c->headers[i].key, name) == 0)
            return c->headers[i].value;
    return NULL;
}

static int
hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

char *
kf_url_decode(kf_pool *pool, const char *s, size_t len, int form)
{
    char *out = kf_pool_alloc(pool, len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '%') {
            int hi, lo;
            if (i + 2 >= len)
                return NULL;
            hi = hexval((unsigned char) s[i + 1]);
            lo = hexval((unsigned char) s[i + 2]);
            if (hi < 0 || lo < 0)
                return NULL;
            ch = (char) (hi * 16 + lo);
            if (ch == '\0')
                return NULL;
            i += 2;
        } else if (ch == '+' && form) {
            ch = ' ';
        } else if (ch == '\0') {
            return NULL;
        }
        out[o++] = ch;
    }
    out[o] = '\0';
    return out;
}

const char *
kf_call_query(const kf_call *c, const char *name)
{
    const char *q = c->query;
    size_t nl = strlen(name);
    if (q == NULL)
        return NULL;
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t) (amp - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        size_t kl = eq ? (size_t) (eq - q) : len;
        char *key = kf_url_decode(c->pool, q, kl, 1);
        if (key != NULL && strlen(key) == nl && memcmp(key, name, nl) == 0) {
            if (eq == NULL)
                return "";
            return kf_url_decode(c->pool, eq + 1, len - kl - 1, 1);
        }
        if (amp == NULL)
            break;
        q = amp + 1;
    }
    return NULL;
}

void
kf_reply_header(kf_reply *out, kf_call *c, const char *key, const char *value)
{
    if (out->n_headers >= KF_ARRAY_LEN(out->headers))
        kf_panic("too many reply headers");
    out->headers[out->n_headers].key = kf_pool_strdup(c->pool, key);
    out->headers[out->n_headers].value = kf_pool_strdup(c->pool, value);
    out->n_headers++;
}

int
kf_reply_text(kf_reply *out, kf_call *c, int status, const char *content_type, const char *body,
              size_t len)
{
    out->status = status;
    out->content_type = content_type;
    out->body = kf_pool_strndup(c->pool, body, len);
    out->body_len = len;
    return 0;
}

int
kf_reply_json(kf_reply *out, kf_call *c, int status, json_t *root)
{
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (text == NULL)
        return kf_reply_internal(out, c, "could not encode JSON");
    kf_reply_text(out, c, status, "application/json", text, strlen(text));
    free(text);
    return 0;
}

const char *
kf_http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

void
kf_problem_add_error(json_t **errors, const char *field, const char *detail)
{
    if (*errors == NULL)
        *errors = json_array();
    json_array_append_new(*errors, json_pack("{s:s, s:s}", "field", field, "detail", detail));
}

char *
kf_problem_json(int status, const char *code, const char *detail, const char *instance,
                const char *request_id, json_t *errors)
{
    json_t *o = json_object();
    char type[128];
    snprintf(type, sizeof(type), "/problems/%s", code ? code : "about-blank");
    json_object_set_new(o, "type", json_string(type));
    json_object_set_new(o, "title", json_string(kf_http_reason(status)));
    json_object_set_new(o, "status", json_integer(status));
    json_object_set_new(o, "detail", json_string(detail ? detail : kf_http_reason(status)));
    if (instance != NULL) {
        json_t *s = json_string(instance); /* NULL when not valid UTF-8 */
        if (s)
            json_object_set_new(o, "instance", s);
    }
    if (request_id != NULL) {
        json_t *s = json_string(request_id);
        if (s)
            json_object_set_new(o, "request_id", s);
    }
    if (errors != NULL)
        json_object_set_new(o, "errors", errors);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (text == NULL)
        kf_panic("json_dumps failed");
    return text;
}

int
kf_reply_problem(kf_reply *out, kf_call *c, int status, const char *code, const char *detail,
                 json_t *errors)
{
    char *text = kf_problem_json(status, code, detail, c->path, c->request_id, errors);
    kf_reply_text(out, c, status, "application/problem+json", text, strlen(text));
    free(text);
    return 0;
}

int
kf_reply_internal(kf_reply *out, kf_call *c, const char *reason)
{
    char shown[256];
    kf_printable(shown, sizeof(shown), reason ? reason : "unknown", strlen(reason ? reason : "unknown"));
    kf_log(KF_LOG_ERR, "http", "req=%s route=%s event=internal-error reason=\"%s\"",
           c->request_id ? c->request_id : "-", c->route ? c->route->name : "-", shown);
    return kf_reply_problem(out, c, 500, "internal", "The server failed to handle the request; "
                            "it has been logged with this request_id.", NULL);
}
