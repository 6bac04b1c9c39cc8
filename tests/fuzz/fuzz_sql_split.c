/* libFuzzer: the migration SQL splitter (quotes, comments, escapes). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kefu/migrate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct acc {
    const char *base;
    size_t size;
};

static int
check(const char *stmt, size_t len, void *arg)
{
    struct acc *a = arg;
    /* Every statement lies inside the input. */
    if (stmt < a->base || stmt + len > a->base + a->size)
        __builtin_trap();
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct acc a = {(const char *) data, size};
    if (size > 256 * 1024)
        return 0;
    kf_sql_split((const char *) data, size, check, &a);
    return 0;
}
