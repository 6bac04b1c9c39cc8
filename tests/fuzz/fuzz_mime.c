/*
 * libFuzzer: raw bytes through the email parser to a kf_email_msg (GMime,
 * RFC 2047 decoding, charsets, the sanitizer on any HTML part, quoted-history
 * folding), checking what ingest relies on: every string is UTF-8 without
 * NUL, the fold offset lies inside the text, attachments have names.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/email.h"
#include "kefu/pool.h"
#include "kefu/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(const char *s)
{
    if (s != NULL && !kf_utf8_valid(s, strlen(s)))
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const kf_email_limits lim = {.max_size = 1 << 20, .max_parts = 64, .max_depth = 12,
                                        .allow_remote_images = 0};
    kf_pool *pool = kf_pool_create(4096);
    kf_email_msg m;
    const char *error = NULL;

    if (kf_email_parse(pool, (const char *) data, size, &lim, &m, &error) == KF_OK) {
        check(m.subject);
        check(m.from_addr);
        check(m.from_name);
        check(m.html);
        check(m.message_id);
        check(m.in_reply_to);
        for (unsigned i = 0; i < m.n_refs; i++)
            check(m.refs[i]);
        check(m.bounce_ref);
        check(m.bounce_reason);
        if (!kf_utf8_valid(m.text, m.text_len) || m.text_fold > m.text_len)
            abort();
        for (size_t i = 0; i < m.n_attachments; i++) {
            if (m.attachments[i].filename == NULL || m.attachments[i].filename[0] == '\0')
                abort();
            check(m.attachments[i].filename);
            check(m.attachments[i].content_id);
            check(m.attachments[i].content_type);
        }
    } else if (error == NULL) {
        abort();
    }
    kf_pool_destroy(&pool);
    return 0;
}
