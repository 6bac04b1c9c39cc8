/*
 * admin_cli.c - `kefud admin ...`: operator commands on the same database
 * and configuration as the server.
 *
 * Exit codes: 0 done; 1 failed (database unreachable or refused, no such
 * agent or token, a duplicate); 2 usage error or invalid input (bad
 * options, a password too short, a configuration file that is not valid).
 * Secrets (a generated password, a new token) go to stdout and nothing
 * else does; messages go to stderr.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "kefu/admin.h"
#include "kefu/auth.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/pool.h"
#include "kefu/wechat.h"
#include "kefu/email.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define IMPORT_MAX_BYTES (64u << 20)
#define GENERATED_PASSWORD_LEN 20

static int
usage(FILE *out)
{
    fprintf(
        out,
        "usage: kefud admin COMMAND [options]\n\n"
        "  create-agent --login LOGIN --name NAME --email EMAIL [--role agent|supervisor|admin]\n"
        "               [--password PASSWORD]\n"
        "                 the password comes from --password, else from the first line of\n"
        "                 stdin when it is not a terminal; when there is none (a terminal,\n"
        "                 or </dev/null), one is generated and printed on stdout\n"
        "  set-password --login LOGIN [--password PASSWORD]\n"
        "                 same password sources; ends the agent's sessions\n"
        "  create-token --role agent|supervisor|admin --name NAME [--agent LOGIN]\n"
        "                 prints the new API token once; only its hash is stored\n"
        "  list-tokens [--json]\n"
        "                 every API token (never the token itself, only its prefix)\n"
        "  revoke-token --id ID\n"
        "  export-config [--output FILE]\n"
        "                 queues, agents (without password hashes) and channel accounts as\n"
        "                 JSON, to stdout or FILE\n"
        "  import-config [--file FILE]\n"
        "                 the same JSON from FILE (default stdin); upserts queues by slug,\n"
        "                 agents by login (new agents cannot log in until set-password)\n"
        "                 and channel accounts by (channel, account), in one transaction\n"
        "  mailbox put|list|delete ...\n"
        "                 email mailboxes: address, queue, acknowledgements, IMAP polling\n"
        "  wechat-account add|set|put|show|list|delete ...\n"
        "                 WeChat Official Accounts and WeCom apps (kefud admin wechat-account "
        "help)\n\n"
        "exit codes: 0 done, 1 failed (database, not found, duplicate), 2 usage or invalid "
        "input\n");
    return out == stdout ? 0 : EXIT_USAGE;
}

/* ---- option parsing ---- */

struct opt {
    const char *name; /* "--login" */
    int has_value;
    const char *value; /* out; "" for a flag that is present */
};

/* Fill opts from argv; unknown options, missing values and repeats are usage errors. */
static int
parse_opts(const char *cmd, int argc, char **argv, struct opt *opts)
{
    for (int i = 0; i < argc; i++) {
        struct opt *o = NULL;
        const char *a = argv[i], *eq = strchr(a, '=');
        size_t nl = eq ? (size_t) (eq - a) : strlen(a);
        for (struct opt *p = opts; p->name; p++)
            if (strlen(p->name) == nl && strncmp(p->name, a, nl) == 0)
                o = p;
        if (o == NULL) {
            fprintf(stderr, "kefud admin %s: unknown option \"%s\" (try kefud admin help)\n", cmd,
                    a);
            return 0;
        }
        if (o->value != NULL) {
            fprintf(stderr, "kefud admin %s: %s given twice\n", cmd, o->name);
            return 0;
        }
        if (!o->has_value) {
            if (eq) {
                fprintf(stderr, "kefud admin %s: %s takes no value\n", cmd, o->name);
                return 0;
            }
            o->value = "";
        } else if (eq) {
            o->value = eq + 1;
        } else if (i + 1 < argc) {
            o->value = argv[++i];
        } else {
            fprintf(stderr, "kefud admin %s: %s needs a value\n", cmd, o->name);
            return 0;
        }
    }
    return 1;
}

kf_db *
kf_admin_db(const kf_config *cfg, const char *cmd)
{
    const char *error = NULL;
    kf_db *db = kf_db_create(cfg);
    if (kf_db_connect(db, &error) != KF_OK) {
        fprintf(stderr, "kefud admin %s: cannot connect to the database: %s\n", cmd,
                error ? error : "unknown error");
        kf_db_destroy(&db);
        return NULL;
    }
    return db;
}

/*
 * The password: --password, else the first line of stdin when it is not a
 * terminal, else generated (*generated_r = 1).  Returns 0 on a usage error.
 */
static int
get_password(const char *cmd, const char *given, char *buf, size_t bufsz, int *generated_r)
{
    *generated_r = 0;
    if (given != NULL) {
        if (strlen(given) >= bufsz) {
            fprintf(stderr, "kefud admin %s: the password is too long\n", cmd);
            return 0;
        }
        strcpy(buf, given);
    } else if (!isatty(STDIN_FILENO) && fgets(buf, (int) bufsz, stdin) != NULL) {
        size_t n = strlen(buf);
        if (n == bufsz - 1 && buf[n - 1] != '\n') {
            fprintf(stderr, "kefud admin %s: the password on stdin is too long\n", cmd);
            return 0;
        }
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
            buf[--n] = '\0';
    } else {
        buf[0] = '\0';
    }
    if (buf[0] == '\0') {
        kf_auth_random_password(buf, GENERATED_PASSWORD_LEN + 1);
        *generated_r = 1;
    }
    if (!kf_password_ok(buf)) {
        fprintf(stderr, "kefud admin %s: the password must be 8..1024 bytes\n", cmd);
        return 0;
    }
    return 1;
}

static int
agent_id_by_login(kf_db *db, const char *login, uint64_t *id_r, const char **error_r)
{
    return kf_db_id_by(db, "admin.agent_by_login", "SELECT id FROM agent WHERE login = ?", login,
                       id_r, error_r);
}

/* ---- create-agent ---- */

struct agent_tx {
    const char *login, *name, *email, *role, *hash;
    uint64_t id;
};

static int
create_agent_tx(kf_db *db, void *arg, const char **error_r)
{
    struct agent_tx *t = arg;
    kf_stmt *st;
    int rc;
    if ((rc = kf_db_stmt(db, "admin.agent_insert",
                         "INSERT INTO agent (login, display_name, email, role, password_hash) "
                         "VALUES (?, ?, ?, ?, ?)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->login);
    kf_stmt_bind_cstr(st, 1, t->name);
    kf_stmt_bind_cstr(st, 2, t->email);
    kf_stmt_bind_cstr(st, 3, t->role);
    kf_stmt_bind_cstr(st, 4, t->hash);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    t->id = kf_stmt_insert_id(st);
    return KF_OK;
}

static int
cmd_create_agent(const kf_config *cfg, int argc, char **argv)
{
    struct opt o[] = {{"--login", 1, NULL}, {"--name", 1, NULL},     {"--email", 1, NULL},
                      {"--role", 1, NULL},  {"--password", 1, NULL}, {NULL, 0, NULL}};
    char password[1026], hash[crypto_pwhash_STRBYTES];
    const char *error = NULL;
    int generated, rc;

    if (!parse_opts("create-agent", argc, argv, o))
        return EXIT_USAGE;
    struct agent_tx t = {.login = o[0].value, .name = o[1].value, .email = o[2].value,
                         .role = o[3].value ? o[3].value : "agent"};
    if (t.login == NULL || t.name == NULL || t.email == NULL) {
        fprintf(stderr, "kefud admin create-agent: need --login, --name and --email\n");
        return EXIT_USAGE;
    }
    if (!kf_login_ok(t.login)) {
        fprintf(stderr, "kefud admin create-agent: --login must be 1..64 of A-Z a-z 0-9 . _ @ -, "
                        "starting with a letter or digit\n");
        return EXIT_USAGE;
    }
    if (t.name[0] == '\0' || strlen(t.name) > 200) {
        fprintf(stderr, "kefud admin create-agent: --name must be 1..200 bytes\n");
        return EXIT_USAGE;
    }
    if (!kf_email_ok(t.email)) {
        fprintf(stderr, "kefud admin create-agent: --email is not an e-mail address\n");
        return EXIT_USAGE;
    }
    if (kf_role_parse(t.role) == KF_ROLE_NONE) {
        fprintf(stderr, "kefud admin create-agent: --role must be agent, supervisor or admin\n");
        return EXIT_USAGE;
    }
    if (!get_password("create-agent", o[4].value, password, sizeof(password), &generated))
        return EXIT_USAGE;
    if (kf_auth_hash_password(password, hash, sizeof(hash)) != KF_OK) {
        fprintf(stderr, "kefud admin create-agent: password hashing failed (out of memory?)\n");
        sodium_memzero(password, sizeof(password));
        return EXIT_FAILED;
    }
    t.hash = hash;
    kf_db *db = kf_admin_db(cfg, "create-agent");
    if (db == NULL) {
        sodium_memzero(password, sizeof(password));
        return EXIT_FAILED;
    }
    rc = kf_tx_run(db, create_agent_tx, &t, &error);
    kf_db_destroy(&db);
    sodium_memzero(hash, sizeof(hash));
    if (rc != KF_OK) {
        sodium_memzero(password, sizeof(password));
        if (rc == KF_ECONFLICT)
            fprintf(stderr, "kefud admin create-agent: an agent with login \"%s\" already exists\n",
                    t.login);
        else
            fprintf(stderr, "kefud admin create-agent: %s\n", error ? error : "failed");
        return EXIT_FAILED;
    }
    if (generated)
        printf("%s\n", password);
    sodium_memzero(password, sizeof(password));
    fprintf(stderr, "agent id=%llu login=%s role=%s created%s\n", (unsigned long long) t.id,
            t.login, t.role, generated ? "; the generated password is on stdout" : "");
    return 0;
}

/* ---- set-password ---- */

struct password_tx {
    const char *login, *hash;
    uint64_t id, revoked;
};

static int
set_password_tx(kf_db *db, void *arg, const char **error_r)
{
    struct password_tx *t = arg;
    kf_stmt *st;
    int rc;
    if ((rc = agent_id_by_login(db, t->login, &t->id, error_r)) != KF_OK)
        return rc;
    if (t->id == 0)
        return KF_ENOTFOUND;
    if ((rc = kf_db_stmt(db, "admin.agent_password",
                         "UPDATE agent SET password_hash = ? WHERE id = ?", &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->hash);
    kf_stmt_bind_u64(st, 1, t->id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    return kf_auth_revoke_sessions(db, t->id, &t->revoked, error_r);
}

static int
cmd_set_password(const kf_config *cfg, int argc, char **argv)
{
    struct opt o[] = {{"--login", 1, NULL}, {"--password", 1, NULL}, {NULL, 0, NULL}};
    char password[1026], hash[crypto_pwhash_STRBYTES];
    const char *error = NULL;
    int generated, rc;

    if (!parse_opts("set-password", argc, argv, o))
        return EXIT_USAGE;
    if (o[0].value == NULL || o[0].value[0] == '\0') {
        fprintf(stderr, "kefud admin set-password: need --login LOGIN\n");
        return EXIT_USAGE;
    }
    if (!get_password("set-password", o[1].value, password, sizeof(password), &generated))
        return EXIT_USAGE;
    if (kf_auth_hash_password(password, hash, sizeof(hash)) != KF_OK) {
        fprintf(stderr, "kefud admin set-password: password hashing failed (out of memory?)\n");
        sodium_memzero(password, sizeof(password));
        return EXIT_FAILED;
    }
    struct password_tx t = {.login = o[0].value, .hash = hash};
    kf_db *db = kf_admin_db(cfg, "set-password");
    if (db == NULL) {
        sodium_memzero(password, sizeof(password));
        return EXIT_FAILED;
    }
    rc = kf_tx_run(db, set_password_tx, &t, &error);
    kf_db_destroy(&db);
    sodium_memzero(hash, sizeof(hash));
    if (rc != KF_OK) {
        sodium_memzero(password, sizeof(password));
        if (rc == KF_ENOTFOUND)
            fprintf(stderr, "kefud admin set-password: no agent with login \"%s\"\n", t.login);
        else
            fprintf(stderr, "kefud admin set-password: %s\n", error ? error : "failed");
        return EXIT_FAILED;
    }
    if (generated)
        printf("%s\n", password);
    sodium_memzero(password, sizeof(password));
    fprintf(stderr, "password of %s set; %llu session(s) ended%s\n", t.login,
            (unsigned long long) t.revoked,
            generated ? "; the generated password is on stdout" : "");
    return 0;
}

/* ---- create-token ---- */

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
        if ((rc = agent_id_by_login(db, t->agent_login, &agent_id, error_r)) != KF_OK)
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
    struct opt o[] = {{"--role", 1, NULL}, {"--name", 1, NULL}, {"--agent", 1, NULL},
                      {NULL, 0, NULL}};
    char token[44], hash[65], prefix[9];
    const char *error = NULL;

    if (!parse_opts("create-token", argc, argv, o))
        return EXIT_USAGE;
    struct token_tx t = {.role = o[0].value, .name = o[1].value, .agent_login = o[2].value};
    if (t.name == NULL || t.role == NULL || kf_role_parse(t.role) == KF_ROLE_NONE ||
        strlen(t.name) == 0 || strlen(t.name) > 100) {
        fprintf(stderr, "kefud admin create-token: need --role agent|supervisor|admin and "
                        "--name NAME (1..100 characters)\n");
        return EXIT_USAGE;
    }
    kf_auth_new_token(token, hash);
    snprintf(prefix, sizeof(prefix), "%.8s", token);
    t.hash = hash;
    t.prefix = prefix;
    kf_db *db = kf_admin_db(cfg, "create-token");
    if (db == NULL)
        return EXIT_FAILED;
    int rc = kf_tx_run(db, create_token_tx, &t, &error);
    kf_db_destroy(&db);
    if (rc != KF_OK) {
        sodium_memzero(token, sizeof(token));
        fprintf(stderr, "kefud admin create-token: %s\n",
                t.agent_missing ? "no agent with that login" : (error ? error : "failed"));
        return EXIT_FAILED;
    }
    printf("%s\n", token);
    fprintf(stderr, "token id=%llu name=%s role=%s: shown once, store it now\n",
            (unsigned long long) t.id, t.name, t.role);
    sodium_memzero(token, sizeof(token));
    return 0;
}

/* ---- list-tokens, revoke-token ---- */

static int
cmd_list_tokens(const kf_config *cfg, int argc, char **argv)
{
    struct opt o[] = {{"--json", 0, NULL}, {NULL, 0, NULL}};
    const char *error = NULL;
    kf_stmt *st;
    int rc;

    if (!parse_opts("list-tokens", argc, argv, o))
        return EXIT_USAGE;
    kf_db *db = kf_admin_db(cfg, "list-tokens");
    if (db == NULL)
        return EXIT_FAILED;
    kf_pool *pool = kf_pool_create(8192);
    json_t *items = json_array();
    if ((rc = kf_db_stmt(db, "admin.tokens_all",
                         "SELECT t.id, t.name, t.role, COALESCE(a.login, ''), t.prefix, "
                         KF_TIME_SQL("t.created_at") ", " KF_TIME_SQL("t.last_used_at") ", "
                         KF_TIME_SQL("t.expires_at") ", "
                         "CASE WHEN t.revoked_at IS NOT NULL THEN 'revoked' "
                         " WHEN t.expires_at IS NOT NULL AND t.expires_at <= NOW(6) THEN 'expired' "
                         " ELSE 'active' END "
                         "FROM api_token t LEFT JOIN agent a ON a.id = t.agent_id ORDER BY t.id",
                         &st, &error)) == KF_OK &&
        (rc = kf_stmt_exec(st, &error)) == KF_OK) {
        while ((rc = kf_stmt_fetch(st, &error)) == 1) {
            const char *agent = kf_stmt_col_str(st, 3, pool, NULL);
            json_array_append_new(
                items, json_pack("{s:I, s:s, s:s, s:s?, s:s, s:s, s:s?, s:s?, s:s}", "id",
                                 (json_int_t) kf_stmt_col_u64(st, 0), "name",
                                 kf_stmt_col_str(st, 1, pool, NULL), "role",
                                 kf_stmt_col_str(st, 2, pool, NULL), "agent",
                                 agent && *agent ? agent : NULL, "prefix",
                                 kf_stmt_col_str(st, 4, pool, NULL), "created_at",
                                 kf_stmt_col_str(st, 5, pool, NULL), "last_used_at",
                                 kf_stmt_col_str(st, 6, pool, NULL), "expires_at",
                                 kf_stmt_col_str(st, 7, pool, NULL), "status",
                                 kf_stmt_col_str(st, 8, pool, NULL)));
        }
        kf_stmt_done(st);
        rc = rc < 0 ? rc : KF_OK;
    }
    kf_db_destroy(&db);
    if (rc == KF_OK) {
        if (o[0].value != NULL) {
            json_dumpf(items, stdout, JSON_INDENT(2));
            printf("\n");
        } else {
            size_t i;
            json_t *it;
            printf("ID\tNAME\tROLE\tAGENT\tPREFIX\tSTATUS\tCREATED\tLAST_USED\n");
            json_array_foreach(items, i, it)
            {
                const char *agent = json_string_value(json_object_get(it, "agent"));
                const char *used = json_string_value(json_object_get(it, "last_used_at"));
                printf("%lld\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
                       (long long) json_integer_value(json_object_get(it, "id")),
                       json_string_value(json_object_get(it, "name")),
                       json_string_value(json_object_get(it, "role")), agent ? agent : "-",
                       json_string_value(json_object_get(it, "prefix")),
                       json_string_value(json_object_get(it, "status")),
                       json_string_value(json_object_get(it, "created_at")), used ? used : "-");
            }
        }
    } else {
        fprintf(stderr, "kefud admin list-tokens: %s\n", error ? error : "failed");
    }
    json_decref(items);
    kf_pool_destroy(&pool);
    return rc == KF_OK ? 0 : EXIT_FAILED;
}

struct revoke_tx {
    uint64_t id;
    int already;
};

static int
revoke_token_tx(kf_db *db, void *arg, const char **error_r)
{
    struct revoke_tx *t = arg;
    kf_stmt *st;
    int rc;
    if ((rc = kf_db_stmt(db, "admin.token_state",
                         "SELECT revoked_at IS NOT NULL FROM api_token WHERE id = ? FOR UPDATE",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, t->id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    rc = kf_stmt_fetch(st, error_r);
    t->already = rc == 1 && kf_stmt_col_i64(st, 0) != 0;
    kf_stmt_done(st);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return KF_ENOTFOUND;
    if (t->already)
        return KF_OK;
    if ((rc = kf_db_stmt(db, "admin.token_revoke",
                         "UPDATE api_token SET revoked_at = NOW(6) "
                         "WHERE id = ? AND revoked_at IS NULL",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, t->id);
    return kf_stmt_exec(st, error_r);
}

static int
cmd_revoke_token(const kf_config *cfg, int argc, char **argv)
{
    struct opt o[] = {{"--id", 1, NULL}, {NULL, 0, NULL}};
    struct revoke_tx t = {0};
    const char *error = NULL;
    char *end = NULL;

    if (!parse_opts("revoke-token", argc, argv, o))
        return EXIT_USAGE;
    if (o[0].value != NULL && o[0].value[0] >= '1' && o[0].value[0] <= '9') {
        errno = 0;
        t.id = strtoull(o[0].value, &end, 10);
    }
    if (t.id == 0 || *end != '\0' || errno != 0 || t.id > INT64_MAX) {
        fprintf(stderr, "kefud admin revoke-token: need --id N (a token id from list-tokens)\n");
        return EXIT_USAGE;
    }
    kf_db *db = kf_admin_db(cfg, "revoke-token");
    if (db == NULL)
        return EXIT_FAILED;
    int rc = kf_tx_run(db, revoke_token_tx, &t, &error);
    kf_db_destroy(&db);
    if (rc == KF_ENOTFOUND) {
        fprintf(stderr, "kefud admin revoke-token: no API token with id %llu\n",
                (unsigned long long) t.id);
        return EXIT_FAILED;
    }
    if (rc != KF_OK) {
        fprintf(stderr, "kefud admin revoke-token: %s\n", error ? error : "failed");
        return EXIT_FAILED;
    }
    fprintf(stderr, "token id=%llu %s\n", (unsigned long long) t.id,
            t.already ? "was already revoked" : "revoked");
    return 0;
}

/* ---- export-config ---- */

#define CONFIG_FORMAT "kefu-config"
#define CONFIG_VERSION 1

struct export_tx {
    kf_pool *pool;
    json_t *root; /* out */
};

static json_t *
parse_json_col(kf_stmt *st, unsigned i, kf_pool *pool, int want_array)
{
    char *text = kf_stmt_col_str(st, i, pool, NULL);
    json_t *v = text ? json_loads(text, 0, NULL) : NULL;
    if (v == NULL || (want_array ? !json_is_array(v) : !json_is_object(v))) {
        json_decref(v);
        v = want_array ? json_array() : json_object();
    }
    return v;
}

static int
export_tx(kf_db *db, void *arg, const char **error_r)
{
    struct export_tx *t = arg;
    json_t *queues = json_array(), *agents = json_array(), *accounts = json_array();
    kf_stmt *st;
    int rc;

    json_decref(t->root); /* a retried run starts over */
    t->root = json_pack("{s:s, s:i, s:o, s:o, s:o}", "format", CONFIG_FORMAT, "version",
                        CONFIG_VERSION, "queues", queues, "agents", agents, "channel_accounts",
                        accounts);
    if ((rc = kf_db_stmt(db, "admin.export_queues",
                         "SELECT slug, name, description FROM queue ORDER BY slug", &st,
                         error_r)) != KF_OK ||
        (rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    while ((rc = kf_stmt_fetch(st, error_r)) == 1)
        json_array_append_new(queues, json_pack("{s:s, s:s, s:s}", "slug",
                                                kf_stmt_col_str(st, 0, t->pool, NULL), "name",
                                                kf_stmt_col_str(st, 1, t->pool, NULL),
                                                "description",
                                                kf_stmt_col_str(st, 2, t->pool, NULL)));
    kf_stmt_done(st);
    if (rc < 0)
        return rc;

    if ((rc = kf_db_stmt(
             db, "admin.export_agents",
             "SELECT a.login, a.display_name, a.email, a.role, a.capacity, a.skills, "
             "a.active, (SELECT JSON_ARRAYAGG(q.slug ORDER BY q.slug) FROM agent_queue aq "
             "JOIN queue q ON q.id = aq.queue_id WHERE aq.agent_id = a.id) "
             "FROM agent a ORDER BY a.login",
             &st, error_r)) != KF_OK ||
        (rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    while ((rc = kf_stmt_fetch(st, error_r)) == 1)
        json_array_append_new(
            agents, json_pack("{s:s, s:s, s:s, s:s, s:I, s:o, s:b, s:o}", "login",
                              kf_stmt_col_str(st, 0, t->pool, NULL), "display_name",
                              kf_stmt_col_str(st, 1, t->pool, NULL), "email",
                              kf_stmt_col_str(st, 2, t->pool, NULL), "role",
                              kf_stmt_col_str(st, 3, t->pool, NULL), "capacity",
                              (json_int_t) kf_stmt_col_u64(st, 4), "skills",
                              parse_json_col(st, 5, t->pool, 1), "active",
                              (int) kf_stmt_col_i64(st, 6), "queues",
                              parse_json_col(st, 7, t->pool, 1)));
    kf_stmt_done(st);
    if (rc < 0)
        return rc;

    if ((rc = kf_db_stmt(db, "admin.export_accounts",
                         "SELECT c.channel, c.account, c.name, q.slug, c.settings "
                         "FROM channel_account c LEFT JOIN queue q ON q.id = c.default_queue_id "
                         "ORDER BY c.channel, c.account",
                         &st, error_r)) != KF_OK ||
        (rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    while ((rc = kf_stmt_fetch(st, error_r)) == 1)
        json_array_append_new(
            accounts, json_pack("{s:s, s:s, s:s, s:s?, s:o}", "channel",
                                kf_stmt_col_str(st, 0, t->pool, NULL), "account",
                                kf_stmt_col_str(st, 1, t->pool, NULL), "name",
                                kf_stmt_col_str(st, 2, t->pool, NULL), "default_queue",
                                kf_stmt_col_str(st, 3, t->pool, NULL), "settings",
                                parse_json_col(st, 4, t->pool, 0)));
    kf_stmt_done(st);
    return rc < 0 ? rc : KF_OK;
}

static int
cmd_export_config(const kf_config *cfg, int argc, char **argv)
{
    struct opt o[] = {{"--output", 1, NULL}, {NULL, 0, NULL}};
    const char *error = NULL;

    if (!parse_opts("export-config", argc, argv, o))
        return EXIT_USAGE;
    kf_db *db = kf_admin_db(cfg, "export-config");
    if (db == NULL)
        return EXIT_FAILED;
    struct export_tx t = {.pool = kf_pool_create(16384)};
    int rc = kf_tx_run(db, export_tx, &t, &error);
    kf_db_destroy(&db);
    if (rc != KF_OK) {
        fprintf(stderr, "kefud admin export-config: %s\n", error ? error : "failed");
        json_decref(t.root);
        kf_pool_destroy(&t.pool);
        return EXIT_FAILED;
    }
    int ok;
    if (o[0].value != NULL) {
        ok = json_dump_file(t.root, o[0].value, JSON_INDENT(2) | JSON_SORT_KEYS) == 0;
        if (!ok)
            fprintf(stderr, "kefud admin export-config: cannot write %s: %s\n", o[0].value,
                    strerror(errno));
    } else {
        ok = json_dumpf(t.root, stdout, JSON_INDENT(2) | JSON_SORT_KEYS) == 0;
        printf("\n");
        ok = ok && fflush(stdout) == 0;
    }
    fprintf(stderr, "exported %zu queue(s), %zu agent(s), %zu channel account(s)\n",
            json_array_size(json_object_get(t.root, "queues")),
            json_array_size(json_object_get(t.root, "agents")),
            json_array_size(json_object_get(t.root, "channel_accounts")));
    json_decref(t.root);
    kf_pool_destroy(&t.pool);
    return ok ? 0 : EXIT_FAILED;
}

/* ---- import-config ---- */

/* Validation messages name the place: "agents[2].email: must be an e-mail address". */
struct check {
    int errors;
};

static void
bad(struct check *k, const char *where, size_t i, const char *field, const char *msg)
{
    if (k->errors++ < 20)
        fprintf(stderr, "kefud admin import-config: %s[%zu].%s: %s\n", where, i, field, msg);
}

static const char *
str_field(struct check *k, json_t *o, const char *where, size_t i, const char *field, int required,
          size_t max)
{
    json_t *v = json_object_get(o, field);
    if (v == NULL || json_is_null(v)) {
        if (required)
            bad(k, where, i, field, "is required");
        return NULL;
    }
    if (!json_is_string(v) || json_string_length(v) > max ||
        memchr(json_string_value(v), '\0', json_string_length(v)) != NULL ||
        (required && json_string_length(v) == 0)) {
        char msg[64];
        snprintf(msg, sizeof(msg), "must be a string of %s..%zu bytes", required ? "1" : "0", max);
        bad(k, where, i, field, msg);
        return NULL;
    }
    return json_string_value(v);
}

static void
unknown_keys(struct check *k, json_t *o, const char *where, size_t i, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, key) == 0;
        if (!ok)
            bad(k, where, i, key, "unknown field");
    }
}

static int
strings_array(json_t *v, size_t max_items, size_t max_len)
{
    size_t i;
    json_t *e;
    if (!json_is_array(v) || json_array_size(v) > max_items)
        return 0;
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e) || json_string_length(e) == 0 || json_string_length(e) > max_len)
            return 0;
    }
    return 1;
}

static int
validate_config(json_t *root)
{
    static const char *const top[] = {"format", "version", "queues", "agents", "channel_accounts",
                                      NULL};
    static const char *const qf[] = {"slug", "name", "description", NULL};
    static const char *const af[] = {"login", "display_name", "email", "role", "capacity",
                                     "skills", "active", "queues", NULL};
    static const char *const cf[] = {"channel", "account", "name", "default_queue", "settings",
                                     NULL};
    static const char *const channels[] = {"email", "web", "wechat", "api", "phone", NULL};
    struct check k = {0};
    const char *key;
    json_t *v, *e;
    size_t i;

    if (!json_is_object(root)) {
        fprintf(stderr, "kefud admin import-config: the configuration must be a JSON object\n");
        return 0;
    }
    json_object_foreach(root, key, v)
    {
        int ok = 0;
        for (const char *const *a = top; *a && !ok; a++)
            ok = strcmp(*a, key) == 0;
        if (!ok && k.errors++ < 20)
            fprintf(stderr, "kefud admin import-config: %s: unknown field\n", key);
    }
    v = json_object_get(root, "format");
    if (v != NULL && !(json_is_string(v) && strcmp(json_string_value(v), CONFIG_FORMAT) == 0) &&
        k.errors++ < 20)
        fprintf(stderr, "kefud admin import-config: format: must be \"%s\"\n", CONFIG_FORMAT);
    v = json_object_get(root, "version");
    if (v != NULL && !(json_is_integer(v) && json_integer_value(v) == CONFIG_VERSION) &&
        k.errors++ < 20)
        fprintf(stderr, "kefud admin import-config: version: must be %d\n", CONFIG_VERSION);
    for (const char *const *sec = top + 2; *sec; sec++) {
        v = json_object_get(root, *sec);
        if (v != NULL && !json_is_array(v) && k.errors++ < 20)
            fprintf(stderr, "kefud admin import-config: %s: must be an array\n", *sec);
    }
    if (k.errors)
        return 0;

    json_array_foreach(json_object_get(root, "queues"), i, e)
    {
        if (!json_is_object(e)) {
            bad(&k, "queues", i, "", "must be an object");
            continue;
        }
        unknown_keys(&k, e, "queues", i, qf);
        const char *slug = str_field(&k, e, "queues", i, "slug", 1, 64);
        if (slug && !kf_slug_ok(slug))
            bad(&k, "queues", i, "slug", "must be 1..64 of a-z 0-9 _ -");
        str_field(&k, e, "queues", i, "name", 1, 100);
        str_field(&k, e, "queues", i, "description", 0, 500);
    }
    json_array_foreach(json_object_get(root, "agents"), i, e)
    {
        if (!json_is_object(e)) {
            bad(&k, "agents", i, "", "must be an object");
            continue;
        }
        unknown_keys(&k, e, "agents", i, af);
        const char *login = str_field(&k, e, "agents", i, "login", 1, 64);
        if (login && !kf_login_ok(login))
            bad(&k, "agents", i, "login", "must be 1..64 of A-Z a-z 0-9 . _ @ -");
        str_field(&k, e, "agents", i, "display_name", 1, 200);
        const char *email = str_field(&k, e, "agents", i, "email", 1, 254);
        if (email && !kf_email_ok(email))
            bad(&k, "agents", i, "email", "must be an e-mail address");
        const char *role = str_field(&k, e, "agents", i, "role", 0, 16);
        if (role && kf_role_parse(role) == KF_ROLE_NONE)
            bad(&k, "agents", i, "role", "must be agent, supervisor or admin");
        json_t *f = json_object_get(e, "capacity");
        if (f && !(json_is_integer(f) && json_integer_value(f) >= 0 &&
                   json_integer_value(f) <= 1000))
            bad(&k, "agents", i, "capacity", "must be an integer 0..1000");
        f = json_object_get(e, "skills");
        if (f && !strings_array(f, 50, 64))
            bad(&k, "agents", i, "skills", "must be an array of at most 50 strings of 1..64 bytes");
        f = json_object_get(e, "active");
        if (f && !json_is_boolean(f))
            bad(&k, "agents", i, "active", "must be true or false");
        f = json_object_get(e, "queues");
        if (f && !strings_array(f, 1000, 64))
            bad(&k, "agents", i, "queues", "must be an array of queue slugs");
    }
    json_array_foreach(json_object_get(root, "channel_accounts"), i, e)
    {
        if (!json_is_object(e)) {
            bad(&k, "channel_accounts", i, "", "must be an object");
            continue;
        }
        unknown_keys(&k, e, "channel_accounts", i, cf);
        const char *ch = str_field(&k, e, "channel_accounts", i, "channel", 1, 16);
        int known = 0;
        for (const char *const *c = channels; ch && *c; c++)
            known |= strcmp(*c, ch) == 0;
        if (ch && !known)
            bad(&k, "channel_accounts", i, "channel", "must be email, web, wechat, api or phone");
        str_field(&k, e, "channel_accounts", i, "account", 1, 100);
        str_field(&k, e, "channel_accounts", i, "name", 0, 200);
        const char *dq = str_field(&k, e, "channel_accounts", i, "default_queue", 0, 64);
        if (dq && !kf_slug_ok(dq))
            bad(&k, "channel_accounts", i, "default_queue", "must be a queue slug or null");
        json_t *f = json_object_get(e, "settings");
        if (f && !json_is_object(f))
            bad(&k, "channel_accounts", i, "settings", "must be an object");
    }
    if (k.errors > 20)
        fprintf(stderr, "kefud admin import-config: ... %d problems in all\n", k.errors);
    return k.errors == 0;
}

struct import_tx {
    json_t *root;
    kf_pool *pool;
    unsigned queues_new, queues_updated, agents_new, agents_updated, accounts_new,
        accounts_updated;
    json_t *new_logins; /* out: agents created (they have no password yet) */
    const char *problem; /* out: a data problem (exit 1 with this message) */
};

static int
queue_id_by_slug(kf_db *db, const char *slug, uint64_t *id_r, const char **error_r)
{
    return kf_db_id_by(db, "admin.queue_by_slug", "SELECT id FROM queue WHERE slug = ?", slug,
                       id_r, error_r);
}

static void
count(uint64_t affected, unsigned *new_r, unsigned *updated_r)
{
    if (affected == 1)
        (*new_r)++;
    else if (affected == 2)
        (*updated_r)++;
}

static int
import_tx(kf_db *db, void *arg, const char **error_r)
{
    struct import_tx *t = arg;
    kf_stmt *st;
    json_t *e;
    size_t i;
    int rc;

    t->queues_new = t->queues_updated = t->agents_new = t->agents_updated = 0;
    t->accounts_new = t->accounts_updated = 0;
    t->problem = NULL;
    json_array_clear(t->new_logins);

    json_array_foreach(json_object_get(t->root, "queues"), i, e)
    {
        const char *desc = json_string_value(json_object_get(e, "description"));
        if ((rc = kf_db_stmt(db, "admin.import_queue",
                             "INSERT INTO queue (slug, name, description) VALUES (?, ?, ?) "
                             "ON DUPLICATE KEY UPDATE name = VALUE(name), "
                             "description = VALUE(description)",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_cstr(st, 0, json_string_value(json_object_get(e, "slug")));
        kf_stmt_bind_cstr(st, 1, json_string_value(json_object_get(e, "name")));
        kf_stmt_bind_cstr(st, 2, desc ? desc : "");
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        count(kf_stmt_affected(st), &t->queues_new, &t->queues_updated);
    }

    json_array_foreach(json_object_get(t->root, "agents"), i, e)
    {
        const char *login = json_string_value(json_object_get(e, "login"));
        const char *role = json_string_value(json_object_get(e, "role"));
        json_t *cap = json_object_get(e, "capacity"), *skills = json_object_get(e, "skills");
        json_t *active = json_object_get(e, "active"), *queues = json_object_get(e, "queues");
        char *skills_text = skills ? json_dumps(skills, JSON_COMPACT) : NULL;
        /* Existing agents keep their password; new ones get none (set-password). */
        if ((rc = kf_db_stmt(db, "admin.import_agent",
                             "INSERT INTO agent (login, display_name, email, role, password_hash, "
                             "capacity, skills, active) VALUES (?, ?, ?, COALESCE(?, 'agent'), '', "
                             "COALESCE(?, 10), COALESCE(?, '[]'), COALESCE(?, 1)) "
                             "ON DUPLICATE KEY UPDATE display_name = VALUE(display_name), "
                             "email = VALUE(email), role = COALESCE(?, role), "
                             "capacity = COALESCE(?, capacity), skills = COALESCE(?, skills), "
                             "active = COALESCE(?, active)",
                             &st, error_r)) != KF_OK) {
            free(skills_text);
            return rc;
        }
        kf_stmt_bind_cstr(st, 0, login);
        kf_stmt_bind_cstr(st, 1, json_string_value(json_object_get(e, "display_name")));
        kf_stmt_bind_cstr(st, 2, json_string_value(json_object_get(e, "email")));
        for (unsigned off = 3; off <= 7; off += 4) {
            kf_stmt_bind_cstr(st, off, role);
            if (cap)
                kf_stmt_bind_u64(st, off + 1, (uint64_t) json_integer_value(cap));
            else
                kf_stmt_bind_null(st, off + 1);
            kf_stmt_bind_cstr(st, off + 2, skills_text);
            if (active)
                kf_stmt_bind_i64(st, off + 3, json_is_true(active));
            else
                kf_stmt_bind_null(st, off + 3);
        }
        free(skills_text);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        uint64_t affected = kf_stmt_affected(st);
        count(affected, &t->agents_new, &t->agents_updated);
        if (affected == 1)
            json_array_append_new(t->new_logins, json_string(login));
        if (active && !json_is_true(active) && affected != 1) {
            uint64_t id;
            if ((rc = agent_id_by_login(db, login, &id, error_r)) != KF_OK ||
                (rc = kf_auth_revoke_sessions(db, id, NULL, error_r)) != KF_OK)
                return rc;
        }
        if (queues == NULL)
            continue;
        uint64_t agent_id;
        size_t k;
        json_t *slug;
        if ((rc = agent_id_by_login(db, login, &agent_id, error_r)) != KF_OK)
            return rc;
        if ((rc = kf_db_stmt(db, "admin.agent_queues_clear",
                             "DELETE FROM agent_queue WHERE agent_id = ?", &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, agent_id);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        json_array_foreach(queues, k, slug)
        {
            uint64_t qid;
            if ((rc = queue_id_by_slug(db, json_string_value(slug), &qid, error_r)) != KF_OK)
                return rc;
            if (qid == 0) {
                t->problem =
                    kf_pool_printf(t->pool, "agents[%zu].queues: no queue with slug \"%s\"", i,
                                   json_string_value(slug));
                *error_r = t->problem;
                return KF_EINVAL;
            }
            if ((rc =
                     kf_db_stmt(db, "admin.member_add",
                                "INSERT IGNORE INTO agent_queue (agent_id, queue_id) VALUES (?, ?)",
                                &st, error_r)) != KF_OK)
                return rc;
            kf_stmt_bind_u64(st, 0, agent_id);
            kf_stmt_bind_u64(st, 1, qid);
            if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
                return rc;
        }
    }

    json_array_foreach(json_object_get(t->root, "channel_accounts"), i, e)
    {
        const char *dq = json_string_value(json_object_get(e, "default_queue"));
        const char *name = json_string_value(json_object_get(e, "name"));
        json_t *settings = json_object_get(e, "settings");
        uint64_t qid = 0;
        if (dq != NULL) {
            if ((rc = queue_id_by_slug(db, dq, &qid, error_r)) != KF_OK)
                return rc;
            if (qid == 0) {
                t->problem = kf_pool_printf(t->pool,
                                            "channel_accounts[%zu].default_queue: no queue with "
                                            "slug \"%s\"",
                                            i, dq);
                *error_r = t->problem;
                return KF_EINVAL;
            }
        }
        char *settings_text = settings ? json_dumps(settings, JSON_COMPACT) : NULL;
        if ((rc = kf_db_stmt(
                 db, "admin.import_account",
                 "INSERT INTO channel_account (channel, account, name, default_queue_id, "
                 "settings) VALUES (?, ?, ?, ?, COALESCE(?, '{}')) "
                 "ON DUPLICATE KEY UPDATE name = VALUE(name), "
                 "default_queue_id = VALUE(default_queue_id), "
                 "settings = COALESCE(?, settings)",
                 &st, error_r)) != KF_OK) {
            free(settings_text);
            return rc;
        }
        kf_stmt_bind_cstr(st, 0, json_string_value(json_object_get(e, "channel")));
        kf_stmt_bind_cstr(st, 1, json_string_value(json_object_get(e, "account")));
        kf_stmt_bind_cstr(st, 2, name ? name : "");
        if (qid)
            kf_stmt_bind_u64(st, 3, qid);
        else
            kf_stmt_bind_null(st, 3);
        kf_stmt_bind_cstr(st, 4, settings_text);
        kf_stmt_bind_cstr(st, 5, settings_text);
        free(settings_text);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        count(kf_stmt_affected(st), &t->accounts_new, &t->accounts_updated);
    }
    return KF_OK;
}

static int
cmd_import_config(const kf_config *cfg, int argc, char **argv)
{
    struct opt o[] = {{"--file", 1, NULL}, {NULL, 0, NULL}};
    const char *error = NULL;
    json_error_t je;

    if (!parse_opts("import-config", argc, argv, o))
        return EXIT_USAGE;
    const char *path = o[0].value && strcmp(o[0].value, "-") != 0 ? o[0].value : NULL;
    FILE *in = path ? fopen(path, "rb") : stdin;
    if (in == NULL) {
        fprintf(stderr, "kefud admin import-config: cannot open %s: %s\n", path, strerror(errno));
        return EXIT_USAGE;
    }
    kf_str text = KF_STR_INIT;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0 && text.len <= IMPORT_MAX_BYTES)
        kf_str_append(&text, buf, n);
    int read_error = ferror(in);
    if (path)
        fclose(in);
    if (read_error || text.len > IMPORT_MAX_BYTES || text.len == 0) {
        fprintf(stderr, "kefud admin import-config: %s\n",
                read_error ? "read error"
                : text.len ? "the file is larger than 64 MiB"
                           : "no configuration given (empty input)");
        kf_str_free(&text);
        return EXIT_USAGE;
    }
    json_t *root = json_loadb(text.ptr, text.len, JSON_REJECT_DUPLICATES, &je);
    kf_str_free(&text);
    if (root == NULL) {
        fprintf(stderr, "kefud admin import-config: not valid JSON at line %d, column %d: %s\n",
                je.line, je.column, je.text);
        return EXIT_USAGE;
    }
    if (!validate_config(root)) {
        json_decref(root);
        fprintf(stderr, "kefud admin import-config: nothing imported\n");
        return EXIT_USAGE;
    }
    kf_db *db = kf_admin_db(cfg, "import-config");
    if (db == NULL) {
        json_decref(root);
        return EXIT_FAILED;
    }
    struct import_tx t = {.root = root, .pool = kf_pool_create(4096), .new_logins = json_array()};
    int rc = kf_tx_run(db, import_tx, &t, &error);
    kf_db_destroy(&db);
    if (rc != KF_OK) {
        fprintf(stderr, "kefud admin import-config: %s; nothing imported\n",
                t.problem ? t.problem : error ? error : "failed");
    } else {
        fprintf(stderr,
                "imported: queues %u new, %u updated; agents %u new, %u updated; channel accounts "
                "%u new, %u updated\n",
                t.queues_new, t.queues_updated, t.agents_new, t.agents_updated, t.accounts_new,
                t.accounts_updated);
        size_t i;
        json_t *l;
        json_array_foreach(t.new_logins, i, l) fprintf(
            stderr, "new agent %s has no password yet: kefud admin set-password --login %s\n",
            json_string_value(l), json_string_value(l));
    }
    json_decref(t.new_logins);
    json_decref(root);
    kf_pool_destroy(&t.pool);
    return rc == KF_OK ? 0 : EXIT_FAILED;
}

int
kf_admin_main(const kf_config *cfg, int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(const kf_config *, int, char **);
    } cmds[] = {
        {"create-agent", cmd_create_agent},   {"set-password", cmd_set_password},
        {"create-token", cmd_create_token},   {"list-tokens", cmd_list_tokens},
        {"revoke-token", cmd_revoke_token},   {"export-config", cmd_export_config},
        {"import-config", cmd_import_config},
        {"wechat-account", kf_wechat_admin_cli}, /* channels/wechat/wechat_admin.c */
        {"mailbox", kf_email_admin_cli},          /* channels/email/email_admin.c */
    };
    if (argc < 1)
        return usage(stderr);
    if (!strcmp(argv[0], "help") || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))
        return usage(stdout);
    for (size_t i = 0; i < KF_ARRAY_LEN(cmds); i++)
        if (!strcmp(argv[0], cmds[i].name))
            return cmds[i].fn(cfg, argc - 1, argv + 1);
    fprintf(stderr, "kefud admin: unknown command \"%s\"\n", argv[0]);
    return usage(stderr);
}
