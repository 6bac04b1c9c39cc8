/*
 * form.c - form bodies as browsers send them: a strict
 * application/x-www-form-urlencoded parser, and multipart/form-data through
 * server/multipart.c, both into one kf_form of text fields and files
 * (kefu/webform.h).  Pure: no I/O, no global state; fuzzed by
 * tests/fuzz/fuzz_urlencoded.c.
 */
#include <string.h>
#include <strings.h>

#include "kefu/http.h"
#include "kefu/multipart.h"
#include "kefu/pool.h"
#include "kefu/ticket.h"
#include "kefu/webform.h"

static kf_form_field *
field_slot(kf_pool *pool, kf_form *f, size_t cap)
{
    if (f->fields == NULL)
        f->fields = kf_pool_alloc(pool, (cap ? cap : 1) * sizeof(*f->fields));
    return &f->fields[f->n_fields++];
}

int
kf_urlencoded_parse(kf_pool *pool, const char *body, size_t len, const kf_form_limits *lim,
                    kf_form *form, const char **error_r)
{
    const char *p = body, *end = body + len;

    memset(form, 0, sizeof(*form));
    if (len > lim->max_total) {
        form->too_large = 1;
        *error_r = "the form is too large";
        return KF_EINVAL;
    }
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *name_end = eq ? eq : stop;
        size_t name_len = (size_t)(name_end - p);
        size_t value_len = eq ? (size_t)(stop - eq - 1) : 0;

        if (stop == p) { /* an empty sequence: skipped */
            p = stop + 1;
            continue;
        }
        if (form->n_fields == lim->max_fields) {
            form->too_large = 1;
            *error_r = "too many form fields";
            return KF_EINVAL;
        }
        if (name_len == 0) {
            *error_r = "a form field without a name";
            return KF_EINVAL;
        }
        /* Encoded lengths bound decoded ones from above (3 bytes per %XX). */
        if (name_len > 3 * lim->max_name || value_len > 3 * lim->max_value) {
            form->too_large = 1;
            *error_r = "a form field is too long";
            return KF_EINVAL;
        }
        char *name = kf_url_decode(pool, p, name_len, 1);
        char *value = eq ? kf_url_decode(pool, eq + 1, value_len, 1) : kf_pool_strdup(pool, "");
        if (name == NULL || value == NULL) {
            *error_r = "a bad %-escape or a NUL byte in the form";
            return KF_EINVAL;
        }
        size_t nl = strlen(name), vl = strlen(value);
        if (nl > lim->max_name || vl > lim->max_value) {
            form->too_large = 1;
            *error_r = "a form field is too long";
            return KF_EINVAL;
        }
        if (!kf_ticket_utf8_ok(name, nl) || !kf_ticket_utf8_ok(value, vl)) {
            *error_r = "the form is not valid UTF-8";
            return KF_EINVAL;
        }
        kf_form_field *f = field_slot(pool, form, lim->max_fields);
        f->name = name;
        f->value = value;
        f->value_len = vl;
        p = amp ? amp + 1 : end;
    }
    return KF_OK;
}

static int
multipart_parse(kf_pool *pool, const char *content_type, const char *body, size_t len,
                const kf_form_limits *lim, kf_form *form, const char **error_r)
{
    kf_mp_limits mpl = {.max_parts = lim->max_fields + lim->max_files + 1,
                        .max_header_bytes = 8192,
                        .max_total = lim->max_total};
    kf_multipart mp;

    if (kf_multipart_parse(pool, content_type, body, len, &mpl, &mp, error_r) != KF_OK) {
        form->too_large = mp.too_large;
        return KF_EINVAL;
    }
    for (size_t i = 0; i < mp.n_parts; i++) {
        const kf_mp_part *p = &mp.parts[i];
        size_t nl = strlen(p->name);
        if (nl == 0 || nl > lim->max_name) {
            *error_r = nl == 0 ? "a form field without a name" : "a form field name is too long";
            form->too_large = nl != 0;
            return KF_EINVAL;
        }
        if (p->filename != NULL) {
            if (p->filename[0] == '\0' && p->len == 0)
                continue; /* a file input left empty */
            if (form->n_files == lim->max_files) {
                form->too_large = 1;
                *error_r = "too many files";
                return KF_EINVAL;
            }
            if (form->files == NULL)
                form->files = kf_pool_alloc(pool, (lim->max_files ? lim->max_files : 1) *
                                                      sizeof(*form->files));
            kf_form_file *f = &form->files[form->n_files++];
            f->field = p->name;
            f->filename = p->filename;
            f->data = (const unsigned char *)p->data;
            f->len = p->len;
            continue;
        }
        if (form->n_fields == lim->max_fields) {
            form->too_large = 1;
            *error_r = "too many form fields";
            return KF_EINVAL;
        }
        if (p->len > lim->max_value) {
            form->too_large = 1;
            *error_r = "a form field is too long";
            return KF_EINVAL;
        }
        if (!kf_ticket_utf8_ok(p->data, p->len)) {
            *error_r = "a form field is not valid UTF-8 (or has a NUL byte)";
            return KF_EINVAL;
        }
        kf_form_field *f = field_slot(pool, form, lim->max_fields);
        f->name = p->name;
        f->value = kf_pool_strndup(pool, p->data, p->len);
        f->value_len = p->len;
    }
    return KF_OK;
}

/* Media type of a Content-Type value, compared case-insensitively up to ';'. */
static int
media_type_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    if (strncasecmp(ct, type, n) != 0)
        return 0;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

int
kf_form_parse(kf_pool *pool, const char *content_type, const char *body, size_t len,
              const kf_form_limits *lim, kf_form *form, const char **error_r)
{
    memset(form, 0, sizeof(*form));
    if (content_type != NULL && media_type_is(content_type, "application/x-www-form-urlencoded"))
        return kf_urlencoded_parse(pool, body, len, lim, form, error_r);
    if (content_type != NULL && media_type_is(content_type, "multipart/form-data"))
        return multipart_parse(pool, content_type, body, len, lim, form, error_r);
    form->unsupported = 1;
    *error_r = "expected application/x-www-form-urlencoded or multipart/form-data";
    return KF_EINVAL;
}

const char *
kf_form_get(const kf_form *form, const char *name, size_t *count_r)
{
    const char *first = NULL;
    size_t n = 0;
    for (size_t i = 0; i < form->n_fields; i++)
        if (strcmp(form->fields[i].name, name) == 0) {
            if (first == NULL)
                first = form->fields[i].value;
            n++;
        }
    if (count_r != NULL)
        *count_r = n;
    return first;
}
