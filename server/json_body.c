/*
 * json_body.c - strict JSON request bodies and field validation that
 * names every bad field (RFC 9457 errors[]).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "kefu/http.h"
#include "kefu/pool.h"
#include "kefu/utf8.h"

static void
decref_cleanup(void *arg)
{
    json_decref(arg);
}

int
kf_call_json_object(kf_call *c, json_t **root_r)
{
    json_error_t je;
    const char *ct = kf_call_header(c, "Content-Type");

    *root_r = NULL;
    if (ct != NULL && strncasecmp(ct, "application/json", 16) != 0) {
        kf_reply_problem(&c->reply, c, 415, "unsupported-media-type",
                         "Send the request body as application/json.", NULL);
        return KF_EINVAL;
    }
    if (c->body_len == 0) {
        kf_reply_problem(&c->reply, c, 400, "bad-json", "A JSON object body is required.", NULL);
        return KF_EINVAL;
    }
    if (!kf_utf8_valid(c->body, c->body_len)) {
        kf_reply_problem(&c->reply, c, 400, "bad-json", "The body is not valid UTF-8.", NULL);
        return KF_EINVAL;
    }
    json_t *root = json_loadb(c->body, c->body_len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        char *detail = kf_pool_printf(c->pool, "Malformed JSON at line %d, column %d: %s.",
                                      je.line, je.column, je.text);
        kf_reply_problem(&c->reply, c, 400, "bad-json", detail, NULL);
        return KF_EINVAL;
    }
    kf_pool_cleanup_add(c->pool, decref_cleanup, root);
    if (!json_is_object(root)) {
        kf_reply_problem(&c->reply, c, 400, "bad-json", "The body must be a JSON object.", NULL);
        return KF_EINVAL;
    }
    *root_r = root;
    return KF_OK;
}

void
kf_json_unknown_fields(json_t *obj, const char *const *allowed, json_t **errors)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, key) == 0;
        if (!ok)
            kf_problem_add_error(errors, key, "unknown field");
    }
}

int
kf_json_get_str(json_t *obj, const char *key, int required, size_t max_len, const char **out,
                json_t **errors)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v)) {
        if (required)
            kf_problem_add_error(errors, key, "is required");
        return 0;
    }
    if (!json_is_string(v)) {
        kf_problem_add_error(errors, key, "must be a string");
        return 0;
    }
    size_t len = json_string_length(v);
    const char *s = json_string_value(v);
    if (memchr(s, '\0', len) != NULL) {
        kf_problem_add_error(errors, key, "must not contain NUL characters");
        return 0;
    }
    if (len > max_len) {
        char msg[96];
        snprintf(msg, sizeof(msg), "is longer than %zu bytes", max_len);
        kf_problem_add_error(errors, key, msg);
        return 0;
    }
    if (required && len == 0) {
        kf_problem_add_error(errors, key, "must not be empty");
        return 0;
    }
    *out = s;
    return 1;
}

int
kf_json_get_u64(json_t *obj, const char *key, int required, uint64_t *out, json_t **errors)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v)) {
        if (required)
            kf_problem_add_error(errors, key, "is required");
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0) {
        kf_problem_add_error(errors, key, "must be a positive integer");
        return 0;
    }
    *out = (uint64_t) json_integer_value(v);
    return 1;
}

int
kf_json_get_ids(json_t *obj, const char *key, size_t max, kf_pool *pool, uint64_t **ids_r,
                size_t *n_r, json_t **errors)
{
    json_t *v = json_object_get(obj, key), *e;
    size_t i, n;
    *ids_r = NULL;
    *n_r = 0;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_array(v)) {
        kf_problem_add_error(errors, key, "must be an array of ids");
        return 0;
    }
    if ((n = json_array_size(v)) > max) {
        kf_problem_add_error(errors, key,
                             kf_pool_printf(pool, "at most %zu ids", max));
        return 0;
    }
    uint64_t *ids = kf_pool_alloc(pool, (n ? n : 1) * sizeof(*ids));
    json_array_foreach(v, i, e) {
        char field[64];
        snprintf(field, sizeof(field), "%s[%zu]", key, i);
        if (!json_is_integer(e) || json_integer_value(e) <= 0) {
            kf_problem_add_error(errors, field, "must be a positive integer");
            return 0;
        }
        ids[i] = (uint64_t) json_integer_value(e);
        for (size_t j = 0; j < i; j++)
            if (ids[j] == ids[i]) {
                kf_problem_add_error(errors, field, "appears twice");
                return 0;
            }
    }
    *ids_r = ids;
    *n_r = n;
    return 1;
}

int
kf_json_get_bool(json_t *obj, const char *key, int required, int *out, json_t **errors)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v)) {
        if (required)
            kf_problem_add_error(errors, key, "is required");
        return 0;
    }
    if (!json_is_boolean(v)) {
        kf_problem_add_error(errors, key, "must be true or false");
        return 0;
    }
    *out = json_is_true(v);
    return 1;
}

int
kf_json_get_enum(json_t *obj, const char *key, int required, const char *const *choices,
                 const char **out, json_t **errors)
{
    const char *s;
    if (!kf_json_get_str(obj, key, required, 64, &s, errors))
        return 0;
    for (const char *const *c = choices; *c; c++)
        if (strcmp(*c, s) == 0) {
            *out = *c;
            return 1;
        }
    char msg[256] = "must be one of:";
    for (const char *const *c = choices; *c; c++) {
        strncat(msg, " ", sizeof(msg) - strlen(msg) - 1);
        strncat(msg, *c, sizeof(msg) - strlen(msg) - 1);
    }
    kf_problem_add_error(errors, key, msg);
    return 0;
}

int
kf_reply_invalid(kf_reply *out, kf_call *c, json_t *errors)
{
    return kf_reply_problem(out, c, 422, "validation",
                            "One or more fields are invalid; see errors.", errors);
}
