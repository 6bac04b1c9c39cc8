/*
 * kefu/webform.h - the web form channel and the customer portal
 * (channels/webform/): the pure pieces that handlers, unit tests and the
 * fuzz target share.
 *
 *   - a strict application/x-www-form-urlencoded parser, and one entry
 *     point that decodes a form body in either browser encoding
 *     (urlencoded or multipart/form-data, server/multipart.c) into fields
 *     and files;
 *   - form tokens: the CSRF token of every form, an HMAC-SHA-256 over the
 *     form's purpose, what it is bound to and the time it was issued (the
 *     issue time doubles as the start of the minimum fill time);
 *   - a small logic-less template renderer (a Mustache subset) in which
 *     every value is HTML-escaped and every visible string comes from a
 *     language catalogue;
 *   - language negotiation between the catalogues we have.
 *
 * Threads:   any; no global state.
 * Ownership: results live in the kf_pool passed in; the body passed to the
 *            parsers must outlive their results (file data points into it).
 * Errors:    KF_OK; KF_EINVAL with a reason in *error_r (static text or
 *            pool memory).
 */
#ifndef KEFU_WEBFORM_H
#define KEFU_WEBFORM_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "kefu/pool.h"
#include "kefu/types.h"

/* ---- form bodies ---- */

typedef struct kf_form_field {
    const char *name;  /* decoded, valid UTF-8, NUL-free */
    const char *value; /* decoded, valid UTF-8, NUL-free */
    size_t value_len;
} kf_form_field;

typedef struct kf_form_file {
    const char *field;         /* the form field's name */
    const char *filename;      /* as sent (UTF-8), NOT cleaned: see kf_attachment_filename_clean */
    const unsigned char *data; /* borrowed from the body */
    size_t len;
} kf_form_file;

typedef struct kf_form_limits {
    size_t max_fields; /* text fields */
    size_t max_files;  /* file parts (multipart only); more is too_large */
    size_t max_name;   /* bytes of a field name */
    size_t max_value;  /* bytes of a decoded field value */
    size_t max_total;  /* the whole body */
} kf_form_limits;

typedef struct kf_form {
    kf_form_field *fields;
    size_t n_fields;
    kf_form_file *files;
    size_t n_files;
    int too_large;   /* with KF_EINVAL: a limit (not the syntax) stopped it */
    int unsupported; /* with KF_EINVAL: the content type is not a form encoding */
} kf_form;

/*
 * application/x-www-form-urlencoded (WHATWG): name=value pairs separated by
 * '&', '+' is a space, %XX escapes.  Strict: a bad escape, a NUL byte,
 * invalid UTF-8 after decoding, an empty name or a limit exceeded is an
 * error.  Empty sequences ("a=1&&b=2") are skipped as the standard says;
 * a pair without '=' has the empty value.
 */
int kf_urlencoded_parse(kf_pool *pool, const char *body, size_t len, const kf_form_limits *lim,
                        kf_form *form, const char **error_r);

/*
 * A browser form body by its Content-Type: urlencoded or multipart/form-data
 * (parts with a filename are files; an empty file input, filename "" and no
 * bytes, is dropped; text parts must be UTF-8).  Any other type: KF_EINVAL
 * with form->unsupported set.
 */
int kf_form_parse(kf_pool *pool, const char *content_type, const char *body, size_t len,
                  const kf_form_limits *lim, kf_form *form, const char **error_r);

/** First value of the field called name, or NULL; *count_r (may be NULL) = how many. */
const char *kf_form_get(const kf_form *form, const char *name, size_t *count_r);

/* ---- form tokens (CSRF) ---- */

#define KF_FORM_KEY_LEN 32
#define KF_FORM_TOKEN_MAX 96

/*
 * A token "<issued>.<nonce>.<mac>": issued is the Unix time in decimal,
 * nonce 12 random bytes and mac the HMAC-SHA-256 (key) of
 * "kefu-form-v1|purpose|binding|issued|nonce", both base64url.  purpose
 * names the form ("new", "reply:<ticket>", "signin" ...); binding is the
 * secret the form's authority rests on (the portal token or the portal
 * session) or "" for anonymous forms.  out holds KF_FORM_TOKEN_MAX bytes.
 */
void kf_form_token_make(const unsigned char key[KF_FORM_KEY_LEN], const char *purpose,
                        const char *binding, int64_t now, char *out);

enum kf_form_token_check {
    KF_FORM_TOKEN_OK = 0,
    KF_FORM_TOKEN_BAD,     /* missing, malformed, forged, other form or binding */
    KF_FORM_TOKEN_EXPIRED, /* older than max_age (or issued in the future) */
};

/*
 * Check a token (constant-time MAC comparison).  On KF_FORM_TOKEN_OK
 * *issued_r (may be NULL) gets the issue time and *nonce_r (may be NULL,
 * pool copy) the nonce, a per-render identifier used to deduplicate a form
 * posted twice.
 */
int kf_form_token_check(const unsigned char key[KF_FORM_KEY_LEN], const char *purpose,
                        const char *binding, const char *token, int64_t now, int64_t max_age,
                        kf_pool *pool, int64_t *issued_r, const char **nonce_r);

/* ---- templates ---- */

/* Find a partial by name ({{>name}}); NULL when there is none. */
typedef const char *kf_tmpl_partial_fn(void *arg, const char *name, size_t *len_r);

/*
 * Render tmpl (a Mustache subset) with ctx (a JSON object) into out:
 *   {{name}} {{a.b}} {{.}}    a value, HTML-escaped (strings, numbers);
 *   {{t.key}}                 the catalogue's string for "key", HTML-escaped,
 *                             with {name} placeholders in it replaced by
 *                             escaped context values;
 *   {{#name}}..{{/name}}      a section: once per array element (pushed as
 *                             context), once for an object (pushed) or any
 *                             other truthy value; skipped for a missing
 *                             name, null, false, 0, "" and [];
 *   {{^name}}..{{/name}}      the inverse;
 *   {{>name}}                 a partial from partial_fn;
 *   {{! comment }}.
 * There is no unescaped output.  Unknown names render as nothing; a
 * missing catalogue key renders as the key (and is a test failure, not a
 * crash).  KF_EINVAL for a malformed template (unclosed tag or section,
 * nesting deeper than 16).
 */
int kf_tmpl_render(kf_str *out, const char *tmpl, size_t len, const json_t *ctx,
                   const json_t *catalogue, kf_tmpl_partial_fn *partial_fn, void *partial_arg,
                   const char **error_r);

/** Append s (len bytes) to out with & < > " ' as character references. */
void kf_html_escape(kf_str *out, const char *s, size_t len);

/* ---- languages ---- */

/* The languages we have catalogues for, the default first (NULL-terminated). */
extern const char *const kf_webform_langs[];

/** "en" / "zh-CN" for a tag we support ("zh", "zh-Hans-CN", "EN-us" ...), else NULL. */
const char *kf_webform_lang_match(const char *tag, size_t len);
/** The best supported language of an Accept-Language header (NULL: the default). */
const char *kf_webform_lang_negotiate(const char *accept_language);

#endif /* KEFU_WEBFORM_H */
