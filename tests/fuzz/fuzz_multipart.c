/*
 * libFuzzer: multipart/form-data bodies through the strict parser, and each
 * part's filename and bytes through the attachment helpers (filename
 * cleaning, Content-Disposition, type sniffing).
 *
 * Input: either a whole body sent with "multipart/form-data; boundary=XyZ",
 * or, when it starts with "multipart/", a Content-Type line, "\n", then the
 * body.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/attachment.h"
#include "kefu/multipart.h"
#include "kefu/pool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const kf_mp_limits lim = {.max_parts = 16, .max_header_bytes = 1024,
                                     .max_total = 1 << 20};
    const char *ctype = "multipart/form-data; boundary=XyZ";
    const char *body = (const char *) data;
    size_t len = size;
    kf_pool *pool = kf_pool_create(4096);
    kf_multipart mp;
    const char *error = NULL;

    if (size > 10 && memcmp(data, "multipart/", 10) == 0) {
        const uint8_t *nl = memchr(data, '\n', size);
        if (nl == NULL) {
            kf_pool_destroy(&pool);
            return 0;
        }
        ctype = kf_pool_strndup(pool, (const char *) data, (size_t) (nl - data));
        body = (const char *) nl + 1;
        len = size - (size_t) (nl + 1 - data);
    }
    /* A copy of exactly len bytes, so ASan sees any read past the end. */
    char *copy = kf_xmalloc(len ? len : 1);
    memcpy(copy, body, len);
    if (kf_multipart_parse(pool, ctype, copy, len, &lim, &mp, &error) == KF_OK) {
        for (size_t i = 0; i < mp.n_parts; i++) {
            const kf_mp_part *p = &mp.parts[i];
            if (p->data < copy || p->data + p->len > copy + len)
                __builtin_trap(); /* a slice outside the body */
            kf_attachment_sniff((const unsigned char *) p->data, p->len);
            if (p->filename != NULL) {
                char *clean = kf_attachment_filename_clean(pool, p->filename);
                kf_attachment_disposition(pool, clean);
            }
        }
    }
    free(copy);
    kf_pool_destroy(&pool);
    return 0;
}
