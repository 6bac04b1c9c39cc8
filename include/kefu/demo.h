/*
 * kefu/demo.h - the quickstart's demo data, loaded once.
 *
 * Threads:   main thread (kefud demo).
 */
#ifndef KEFU_DEMO_H
#define KEFU_DEMO_H

#include <stdio.h>
#include "kefu/types.h"

/*
 * Load two queues, an agent, a supervisor and an admin (random passwords,
 * argon2id), a few customers and tickets, in one transaction.  Prints
 * `login=... role=... password=...` lines to out when it created them;
 * *created_r = 0 when demo data was already there (nothing changes).
 */
int kf_demo_load(kf_db *db, FILE *out, int *created_r, const char **error_r);

/** argon2id hash of password into hash (crypto_pwhash_STRBYTES). */
int kf_password_hash(char *hash, size_t hashsz, const char *password);

#endif /* KEFU_DEMO_H */
