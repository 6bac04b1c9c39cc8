/* libFuzzer: the configuration file parser (kf_config_parse). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kefu/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kf_config cfg;
    char err[512];
    if (size > 64 * 1024) /* the loader reads at most 1 MiB; keep runs fast */
        return 0;
    kf_config_defaults(&cfg);
    if (kf_config_parse(&cfg, (const char *) data, size, "fuzz", err, sizeof(err)) == KF_OK)
        kf_config_check(&cfg, err, sizeof(err));
    kf_config_deinit(&cfg);
    return 0;
}
