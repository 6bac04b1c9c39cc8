/* admin_cli.c - placeholder until `kefud admin` lands. */
#include <stdio.h>

#include "kefu/admin.h"

int
kf_admin_main(const kf_config *cfg, int argc, char **argv)
{
    (void) cfg;
    (void) argc;
    (void) argv;
    fprintf(stderr, "kefud admin: not implemented yet\n");
    return 2;
}
