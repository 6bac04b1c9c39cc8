/*
 * admin_cli.c - `kefud admin ...`: operator commands on the same database
 * and configuration as the server.  Exit codes: 0 done, 1 failed (database,
 * not found), 2 usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "kefu/admin.h"
#include "kefu/auth.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/pool.h"

static int
usage(FILE *out)
{
    fprintf(out, "usage: kefud admin COMMAND [options]\n\n"
                 "  create-token --role agent|supervisor|admin --name NAME [--agent LOGIN]\n"
                 "                 prints the new API token once; only its hash is stored\n");
    return out == stdout ? 0 : 2;
}

static const char *
opt(int argc, char **argv, const char *name)
{
    for (int i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return NULL;
}

struct token_tx {
    const char *name, *role, *agent_login, *hash, *prefix;
    uint64_t id;
    int agent_missing;
};

static int
create_token_tx(kf_db *db, void *arg, const char **error_r)
{
    struct token_tx *t = arg;
    kf_stmt *st;
    int rc;
    uint64_t agent_id = 0;

    t->agent_missing = 0;
    if (t->agent_login != NULL) {
        if ((rc = kf_db_stmt(db, "admin.agent_by_login", "SELECT id FROM agent WHERE login = ?",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_cstr(st, 0, t->agent_login);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        rc = kf_stmt_fetch(st, error_r);
        if (rc == 1)
            agent_id = kf_stmt_col_u64(st, 0);
        kf_stmt_done(st);
        if (rc < 0)
            return rc;
        if (agent_id == 0) {
            t->agent_missing = 1;
            *error_r = "no such agent";
            return KF_ENOTFOUND;
        }
    }
    if ((rc = kf_db_stmt(db, "admin.token_create",
                         "INSERT INTO api_token (name, token_hash, prefix, role, agent_id) "
                         "VALUES (?, ?, ?, ?, ?)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->name);
    kf_stmt_bind_cstr(st, 1, t->hash);
    kf_stmt_bind_cstr(st, 2, t->prefix);
    kf_stmt_bind_cstr(st, 3, t->role);
    if (agent_id)
        kf_stmt_bind_u64(st, 4, agent_id);
    else
        kf_stmt_bind_null(st, 4);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    t->id = kf_stmt_insert_id(st);
    return KF_OK;
}

static int
cmd_create_token(const kf_config *cfg, int argc, char **argv)
{
    struct token_tx t = {.name = opt(argc, argv, "--name"), .role = opt(argc, argv, "--role"),
                         .agent_login = opt(argc, argv, "--agent")};
    char token[44], hash[65], prefix[9];
    const char *error = NULL;

    if (t.name == NULL || t.role == NULL || kf_role_parse(t.role) == KF_ROLE_NONE ||
        strlen(t.name) == 0 || strlen(t.name) > 100) {
        fprintf(stderr, "kefud admin create-token: need --role agent|supervisor|admin and "
                        "--name NAME (1..100 characters)\n");
        return 2;
    }
    kf_auth_new_token(token, hash);
    snprintf(prefix, sizeof(prefix), "%.8s", token);
    t.hash = hash;
    t.prefix = prefix;
    kf_db *db = kf_db_create(cfg);
    int rc = kf_tx_run(db, create_token_tx, &t, &error);
    kf_db_destroy(&db);
    if (rc != KF_OK) {
        fprintf(stderr, "kefud admin create-token: %s\n",
                t.agent_missing ? "no agent with that login" : (error ? error : "failed"));
        return 1;
    }
    printf("%s\n", token);
    fprintf(stderr, "token id=%llu name=%s role=%s: shown once, store it now\n",
            (unsigned long long) t.id, t.name, t.role);
    sodium_memzero(token, sizeof(token));
    return 0;
}

int
kf_admin_main(const kf_config *cfg, int argc, char **argv)
{
    if (argc < 1)
        return usage(stderr);
    if (!strcmp(argv[0], "help") || !strcmp(argv[0], "--help"))
        return usage(stdout);
    if (!strcmp(argv[0], "create-token"))
        return cmd_create_token(cfg, argc - 1, argv + 1);
    fprintf(stderr, "kefud admin: unknown command \"%s\"\n", argv[0]);
    return usage(stderr);
}
