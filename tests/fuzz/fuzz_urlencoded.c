/*
 * fuzz_urlencoded.c - the web form's decoders of untrusted input: the
 * urlencoded parser and the multipart path of kf_form_parse() (which adds
 * the field/file split, UTF-8 checks and limits on top of
 * server/multipart.c), plus the form-token check and Accept-Language
 * negotiation.
 *
 * Input: the first line is a Content-Type (empty: urlencoded), the rest the
 * body.  Seeds in corpus/fuzz_urlencoded/.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kefu/pool.h"
#include "kefu/webform.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const kf_form_limits lim = {
        .max_fields = 16, .max_files = 4, .max_name = 64, .max_value = 2048, .max_total = 65536};
    static const unsigned char key[KF_FORM_KEY_LEN] = {1, 2, 3};
    kf_pool *pool = kf_pool_create(4096);
    const char *nl = memchr(data, '\n', size), *error = NULL;
    size_t ct_len = nl ? (size_t)(nl - (const char *)data) : 0;
    char *ct = ct_len ? kf_pool_strndup(pool, (const char *)data, ct_len) : NULL;
    const char *body = nl ? nl + 1 : (const char *)data;
    size_t body_len = size - (size_t)(body - (const char *)data);
    /* The body as the HTTP layer hands it over: a NUL-terminated copy. */
    char *copy = kf_pool_strndup(pool, body, body_len);
    kf_form f;

    if (ct != NULL && memchr(ct, '\0', ct_len) != NULL)
        ct = NULL;
    if (kf_form_parse(pool, ct ? ct : "application/x-www-form-urlencoded", copy, body_len, &lim, &f,
                      &error) == KF_OK) {
        for (size_t i = 0; i < f.n_fields; i++) {
            if (strlen(f.fields[i].value) != f.fields[i].value_len)
                __builtin_trap(); /* values are NUL-free */
            (void)kf_form_get(&f, f.fields[i].name, NULL);
        }
        for (size_t i = 0; i < f.n_files; i++)
            if (f.files[i].len > body_len)
                __builtin_trap();
        const char *tok = kf_form_get(&f, "form_token", NULL);
        (void)kf_form_token_check(key, "new", "", tok, 1000, 3600, pool, NULL, NULL);
        (void)kf_webform_lang_negotiate(kf_form_get(&f, "lang", NULL));
    }
    (void)kf_webform_lang_negotiate(copy);
    kf_pool_destroy(&pool);
    return 0;
}
