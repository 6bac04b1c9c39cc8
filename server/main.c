/*
 * main.c - kefud: parse the command line, load the configuration, apply
 * migrations, run the server until SIGTERM/SIGINT, stop gracefully.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "kefu/admin.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/demo.h"
#include "kefu/log.h"
#include "kefu/migrate.h"
#include "kefu/http.h"
#include "kefu/server.h"

extern char **environ;

static void
usage(FILE *out)
{
    fprintf(out,
            "kefud %s - Kefu customer-service ticketing server\n\n"
            "usage: kefud [--config FILE] [COMMAND]\n\n"
            "commands:\n"
            "  serve         run the server (default); applies pending migrations first\n"
            "  migrate       apply pending migrations and exit\n"
            "  demo          load the demo data once (prints the demo logins when it does)\n"
            "  check-config  validate the configuration, print it (secrets masked), exit\n"
            "  admin ...     operator commands (kefud admin help)\n"
            "  routes        print the route table: methods, pattern, role, body limit\n\n"
            "options:\n"
            "  -c, --config FILE  configuration file (also KEFU_CONFIG)\n"
            "  -h, --help         this help, with every configuration key\n"
            "  -V, --version      print the version\n\n",
            KEFU_VERSION);
    kf_config_help(out);
}

/* `kefud routes`: the route table, one line each (tests walk it for role checks). */
static int
print_routes(const kf_config *cfg)
{
    static const char *const auth[] = {"public", "agent", "supervisor", "admin", "token"};
    for (const kf_route *const *t = kf_all_route_tables; *t != NULL; t++)
        for (const kf_route *r = *t; r->pattern != NULL; r++) {
            char methods[96];
            if ((r->flags & KF_ROUTE_DEBUG) && !cfg->debug_routes)
                continue;
            kf_methods_str(r->methods, methods, sizeof(methods));
            /* "GET, HEAD" -> "GET,HEAD": one field per route line. */
            char *w = methods;
            for (const char *p = methods; *p; p++)
                if (*p != ' ')
                    *w++ = *p;
            *w = '\0';
            printf("%s %s %s %zu\n", methods, r->pattern, auth[r->auth], r->max_body);
        }
    return 0;
}

static int
open_db(const kf_config *cfg, kf_db **db_r)
{
    const char *error = NULL;
    kf_db *db = kf_db_create(cfg);
    if (kf_db_connect(db, &error) != KF_OK) {
        kf_log(KF_LOG_ERR, "main", "event=db-unreachable reason=\"%s\"", error);
        kf_db_destroy(&db);
        return KF_EDB;
    }
    *db_r = db;
    return KF_OK;
}

static int
run_migrations(const kf_config *cfg, const kf_migration_set *set)
{
    char err[1024];
    unsigned applied = 0;
    kf_db *db;
    if (open_db(cfg, &db) != KF_OK)
        return 1;
    int rc = kf_migrate(db, set, &applied, err, sizeof(err));
    kf_db_destroy(&db);
    if (rc != KF_OK) {
        kf_log(KF_LOG_ERR, "migrate", "event=failed reason=\"%s\"", err);
        fprintf(stderr, "kefud: %s\n", err);
        return 1;
    }
    kf_log(KF_LOG_INFO, "migrate", "event=done applied=%u total=%zu", applied, set->n);
    return 0;
}

static int
run_demo(const kf_config *cfg)
{
    const char *error = NULL;
    int created = 0;
    kf_db *db;
    if (open_db(cfg, &db) != KF_OK)
        return 1;
    int rc = kf_demo_load(db, stdout, &created, &error);
    kf_db_destroy(&db);
    if (rc != KF_OK) {
        fprintf(stderr, "kefud: demo data: %s\n", error ? error : "failed");
        return 1;
    }
    if (!created)
        printf("demo data already loaded\n");
    fflush(stdout);
    return 0;
}

static int
run_server(const kf_config *cfg, const kf_migration_set *set)
{
    char err[512] = "";
    sigset_t sigs;
    int sig = 0;

    /* Signals go to this thread only (sigwait); every thread inherits the mask. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (cfg->migrate_on_start && run_migrations(cfg, set) != 0)
        return 1;
    kf_server *srv = kf_server_create(cfg, set, err, sizeof(err));
    if (srv == NULL) {
        kf_log(KF_LOG_ERR, "server", "event=start-failed reason=\"%s\"", err);
        return 1;
    }
    if (kf_server_start(srv, err, sizeof(err)) != KF_OK) {
        kf_log(KF_LOG_ERR, "server", "event=start-failed reason=\"%s\"", err);
        kf_server_stop(srv);
        kf_server_destroy(&srv);
        return 1;
    }
    kf_log(KF_LOG_INFO, "server",
           "event=listening addr=%s io_threads=%u db_workers=%u job_threads=%u version=%s",
           kf_server_addr(srv), cfg->io_threads, cfg->db_workers, cfg->job_threads, KEFU_VERSION);

    for (;;) {
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            kf_log(KF_LOG_INFO, "server", "event=sighup msg=\"configuration is read at start; "
                                          "restart to change it\"");
            continue;
        }
        break;
    }
    kf_log(KF_LOG_INFO, "server", "event=signal signal=%s", sig == SIGTERM ? "TERM" : "INT");
    kf_server_stop(srv);
    kf_server_destroy(&srv);
    kf_log(KF_LOG_INFO, "server", "event=stopped");
    return 0;
}

int
main(int argc, char **argv)
{
    const char *config_path = getenv("KEFU_CONFIG");
    const char *command = "serve";
    int admin_argc = 0;
    char **admin_argv = NULL;
    char err[1024];
    kf_config cfg;
    kf_migration_set set;
    int rc;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
            printf("kefud %s\n", KEFU_VERSION);
            return 0;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
            if (++i == argc) {
                fprintf(stderr, "kefud: %s needs a file name\n", a);
                return 2;
            }
            config_path = argv[i];
        } else if (!strncmp(a, "--config=", 9)) {
            config_path = a + 9;
        } else if (!strcmp(a, "admin")) {
            command = a;
            admin_argc = argc - i - 1;
            admin_argv = argv + i + 1;
            break;
        } else if (a[0] != '-' && (!strcmp(a, "serve") || !strcmp(a, "migrate") ||
                                   !strcmp(a, "demo") || !strcmp(a, "check-config") ||
                                   !strcmp(a, "routes"))) {
            command = a;
        } else {
            fprintf(stderr, "kefud: unknown argument \"%s\" (try --help)\n", a);
            return 2;
        }
    }

    if (config_path != NULL && config_path[0] == '\0')
        config_path = NULL;
    if (kf_config_load(&cfg, config_path, environ, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "kefud: configuration error: %s\n", err);
        kf_config_deinit(&cfg);
        return 2;
    }
    kf_log_level = kf_log_level_parse(cfg.log_level);
    kf_log_set_format(strcmp(cfg.log_format, "json") == 0);

    if (!strcmp(command, "routes")) {
        rc = print_routes(&cfg);
        kf_config_deinit(&cfg);
        return rc;
    }
    if (!strcmp(command, "check-config")) {
        kf_config_dump(&cfg, stdout);
        kf_config_deinit(&cfg);
        return 0;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "kefud: libsodium failed to initialise\n");
        return 1;
    }
    kf_db_library_init();

    if (!strcmp(command, "admin")) {
        rc = kf_admin_main(&cfg, admin_argc, admin_argv);
    } else if (!strcmp(command, "demo")) {
        rc = run_demo(&cfg);
    } else if (kf_migrations_load(cfg.sql_dir, &set, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "kefud: %s\n", err);
        rc = 2;
    } else {
        rc = !strcmp(command, "migrate") ? run_migrations(&cfg, &set) : run_server(&cfg, &set);
        kf_migrations_free(&set);
    }
    kf_db_library_end();
    kf_config_deinit(&cfg);
    return rc;
}
