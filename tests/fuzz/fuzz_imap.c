/*
 * libFuzzer: what an IMAP server may answer to UID FETCH ... BODY.PEEK[]
 * through the poller's literal parser (channels/email/imap_parse.c).
 * Invariant: every literal it returns lies inside the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "../../channels/email/email_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *t = (const char *) data, *end = t + size;
    uint64_t uids[8] = {1, 2, 3, 4, 5, 7, 10, 4294967295u};
    const char *raws[8] = {0};
    size_t lens[8] = {0}, n = 0;

    const char *one = kf_imap_literal(t, size, &n);
    if (one != NULL && (one < t || n > (size_t) (end - one)))
        abort();
    kf_imap_literals(t, size, uids, 8, raws, lens);
    for (unsigned i = 0; i < 8; i++)
        if (raws[i] != NULL && (raws[i] < t || lens[i] > (size_t) (end - raws[i])))
            abort();
    return 0;
}
