/*
 * kefu/admin.h - `kefud admin ...`: what an operator scripts.
 *
 * Threads:   main thread only.
 */
#ifndef KEFU_ADMIN_H
#define KEFU_ADMIN_H

#include "kefu/types.h"

/* argv[0] is the subcommand ("create-agent", ...).  Returns the exit code 0/1/2. */
int kf_admin_main(const kf_config *cfg, int argc, char **argv);

/*
 * A connected database for `kefud admin <cmd>` (the channels' subcommands
 * too), or NULL after telling stderr why.
 */
kf_db *kf_admin_db(const kf_config *cfg, const char *cmd);

#endif /* KEFU_ADMIN_H */
