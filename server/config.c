/*
 * config.c - the declarative configuration table (Redis static_configs[]).
 *
 * One row per key: name, type, field offset, default, bounds, validator and
 * the documentation printed by `kefud --help`.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kefu/config.h"
#include "kefu/log.h"
#include "kefu/pool.h"

enum cfg_type { T_STR, T_UINT, T_BOOL, T_ENUM };

typedef struct cfg_def {
    const char *name;
    enum cfg_type type;
    size_t offset;
    const char *def;      /* default, as text */
    unsigned long min, max;
    const char *choices;  /* T_ENUM: "a|b|c" */
    int secret;
    int (*valid)(const char *v, const char **why);
    const char *doc;
} cfg_def;

static int
valid_listen(const char *v, const char **why)
{
    if (!kf_hostport_ok(v, 1)) {
        *why = "expected host:port with a port 0..65535 (e.g. 127.0.0.1:8080)";
        return 0;
    }
    return 1;
}

static int
valid_ident(const char *v, const char **why)
{
    size_t n = strlen(v);
    if (n == 0 || n > 64) {
        *why = "expected 1..64 characters [A-Za-z0-9_]";
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char) v[i]) && v[i] != '_') {
            *why = "expected 1..64 characters [A-Za-z0-9_]";
            return 0;
        }
    return 1;
}

/* webform_categories: "slug:Label" items separated by commas; slugs as queue slugs. */
static int
valid_categories(const char *v, const char **why)
{
    const char *p = v;
    *why = "expected slug:Label[,slug:Label...] with slugs of [a-z0-9_-] and non-empty labels "
           "without control characters";
    if (*p == '\0' || strlen(v) > 4000)
        return 0;
    while (*p) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *colon = memchr(p, ':', (size_t) (end - p));
        if (colon == NULL || colon == p || colon - p > 64 || colon + 1 == end)
            return 0;
        for (const char *s = p; s < colon; s++)
            if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
                return 0;
        for (const char *s = colon + 1; s < end; s++)
            if ((unsigned char) *s < 0x20 || *s == 0x7f)
                return 0;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return 1;
}

/* One origin: scheme://host[:port], nothing else. */
static int
origin_ok(const char *s, size_t n)
{
    size_t skip;
    if (n > 8 && strncmp(s, "https://", 8) == 0)
        skip = 8;
    else if (n > 7 && strncmp(s, "http://", 7) == 0)
        skip = 7;
    else
        return 0;
    for (size_t i = skip; i < n; i++)
        if (!isalnum((unsigned char) s[i]) && s[i] != '.' && s[i] != '-' && s[i] != ':' &&
            s[i] != '[' && s[i] != ']')
            return 0;
    return 1;
}

static int
valid_origins(const char *v, const char **why)
{
    *why = "expected origins such as https://shop.example.com, separated by spaces or commas";
    for (const char *p = v; *p;) {
        size_t n = strcspn(p, " ,");
        if (n > 0 && !origin_ok(p, n))
            return 0;
        p += n;
        p += strspn(p, " ,");
    }
    return 1;
}

/* CSP source expressions for frame-ancestors: 'none', 'self', origins, *.host wildcards. */
static int
valid_frame_ancestors(const char *v, const char **why)
{
    *why = "expected 'none', or 'self' and/or origins (https://shop.example.com), space separated";
    if (*v == '\0' || strlen(v) > 1000)
        return 0;
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char) *p) && strchr(" '.:/-*[]", *p) == NULL)
            return 0;
    return 1;
}

static int
valid_base_url(const char *v, const char **why)
{
    size_t n = strlen(v);
    *why = "expected an absolute http:// or https:// URL without query or fragment";
    if (n == 0)
        return 1;
    if (n > 200 || (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0))
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char) v[i] <= 0x20 || v[i] == 0x7f || v[i] == '?' || v[i] == '#' ||
            v[i] == '"' || v[i] == '<' || v[i] == '>' || v[i] == '\\')
            return 0;
    return 1;
}

static int
valid_listen_or_off(const char *v, const char **why)
{
    return v[0] == '\0' || valid_listen(v, why);
}

#define OFF(f) offsetof(kf_config, f)

static const cfg_def defs[] = {
    {"listen", T_STR, OFF(listen), "127.0.0.1:8080", 0, 0, NULL, 0, valid_listen,
     "HTTP listen address host:port (port 0 picks a free port; the log says which)"},
    {"io_threads", T_UINT, OFF(io_threads), "2", 1, 64, NULL, 0, NULL,
     "I/O threads, each with its own event loop on the shared listening socket"},
    {"db_workers", T_UINT, OFF(db_workers), "8", 1, 256, NULL, 0, NULL,
     "worker threads; each owns one MariaDB connection"},
    {"job_threads", T_UINT, OFF(job_threads), "3", 1, 16, NULL, 0, NULL,
     "background job threads; each owns one MariaDB connection and runs whichever job is due "
     "(outbox lanes per channel, IMAP polls, WeChat tokens and media ...)"},
    {"work_queue_max", T_UINT, OFF(work_queue_max), "1024", 1, 1000000, NULL, 0, NULL,
     "requests waiting for a worker before new ones get 503 + Retry-After"},
    {"http_max_headers", T_UINT, OFF(http_max_headers), "16384", 1024, 1048576, NULL, 0, NULL,
     "largest request header block in bytes"},
    {"http_max_body", T_UINT, OFF(http_max_body), "10485760", 1024, 268435456, NULL, 0, NULL,
     "cap on any request body in bytes; each route has its own smaller limit"},
    {"http_timeout", T_UINT, OFF(http_timeout), "30", 1, 3600, NULL, 0, NULL,
     "seconds a client may take to send a request or read a reply"},
    {"shutdown_timeout", T_UINT, OFF(shutdown_timeout), "20", 0, 3600, NULL, 0, NULL,
     "seconds to let in-flight requests and jobs finish after SIGTERM"},
    {"reuseport", T_BOOL, OFF(reuseport), "0", 0, 1, NULL, 0, NULL,
     "give each I/O thread its own SO_REUSEPORT socket instead of sharing one"},
    {"debug_routes", T_BOOL, OFF(debug_routes), "0", 0, 1, NULL, 0, NULL,
     "enable /debug/* routes (tests only; never in production)"},
    {"db_host", T_STR, OFF(db_host), "localhost", 0, 0, NULL, 0, NULL,
     "MariaDB host (ignored when db_socket is set)"},
    {"db_port", T_UINT, OFF(db_port), "3306", 1, 65535, NULL, 0, NULL, "MariaDB TCP port"},
    {"db_socket", T_STR, OFF(db_socket), "", 0, 0, NULL, 0, NULL,
     "MariaDB unix socket path (preferred when set)"},
    {"db_name", T_STR, OFF(db_name), "kefu", 0, 0, NULL, 0, valid_ident, "database name"},
    {"db_user", T_STR, OFF(db_user), "kefu", 0, 0, NULL, 0, NULL, "database user"},
    {"db_password", T_STR, OFF(db_password), "", 0, 0, NULL, 1, NULL,
     "database password (secret: prefer db_password_file)"},
    {"db_connect_timeout", T_UINT, OFF(db_connect_timeout), "5", 1, 300, NULL, 0, NULL,
     "seconds to wait for a MariaDB connection"},
    {"db_rw_timeout", T_UINT, OFF(db_rw_timeout), "30", 1, 3600, NULL, 0, NULL,
     "seconds to wait for a MariaDB read or write"},
    {"db_tx_retries", T_UINT, OFF(db_tx_retries), "5", 0, 100, NULL, 0, NULL,
     "times a transaction is retried on deadlock or lock wait timeout"},
    {"sql_dir", T_STR, OFF(sql_dir), KEFU_SOURCE_DIR "/sql", 0, 0, NULL, 0, NULL,
     "directory of NNNN_name.sql migrations"},
    {"web_dir", T_STR, OFF(web_dir), KEFU_SOURCE_DIR "/server/web", 0, 0, NULL, 0, NULL,
     "directory of static UI assets"},
    {"migrate_on_start", T_BOOL, OFF(migrate_on_start), "1", 0, 1, NULL, 0, NULL,
     "apply pending migrations when kefud starts"},
    {"log_level", T_ENUM, OFF(log_level), "info", 0, 0, "err|warn|info|debug", 0, NULL,
     "least severe level logged"},
    {"log_format", T_ENUM, OFF(log_format), "kv", 0, 0, "kv|json", 0, NULL,
     "log line format: key=value or one JSON object per line"},
    {"access_log", T_BOOL, OFF(access_log), "1", 0, 1, NULL, 0, NULL,
     "log one info line per HTTP request (method, path, route, status, duration)"},
    {"session_ttl", T_UINT, OFF(session_ttl), "43200", 60, 2592000, NULL, 0, NULL,
     "seconds an agent session lives at most"},
    {"session_idle", T_UINT, OFF(session_idle), "7200", 60, 2592000, NULL, 0, NULL,
     "seconds of inactivity after which a session ends"},
    {"cookie_secure", T_BOOL, OFF(cookie_secure), "0", 0, 1, NULL, 0, NULL,
     "mark the session cookie Secure (set when served over HTTPS)"},
    {"login_max_failures", T_UINT, OFF(login_max_failures), "5", 1, 1000, NULL, 0, NULL,
     "failed logins per account or IP within login_window before a lockout"},
    {"login_window", T_UINT, OFF(login_window), "900", 10, 86400, NULL, 0, NULL,
     "seconds over which failed logins are counted"},
    {"login_lockout", T_UINT, OFF(login_lockout), "900", 1, 86400, NULL, 0, NULL,
     "seconds an account or IP is refused after too many failures"},
    {"api_max_body", T_UINT, OFF(api_max_body), "1048576", 1024, 16777216, NULL, 0, NULL,
     "largest JSON request body in bytes"},
    {"attachment_max_bytes", T_UINT, OFF(attachment_max_bytes), "26214400", 1024, 268435456,
     NULL, 0, NULL, "largest single attachment in bytes"},
    {"reply_attachments_max_bytes", T_UINT, OFF(reply_attachments_max_bytes), "15728640", 0,
     268435456, NULL, 0, NULL,
     "bytes of attachments one agent reply may carry (about 4/3 of that once base64-encoded in "
     "mail; relays often refuse messages over 25 MB)"},
    {"attachment_max_count", T_UINT, OFF(attachment_max_count), "10", 0, 100, NULL, 0, NULL,
     "attachments per message"},
    {"outbox_period_ms", T_UINT, OFF(outbox_period_ms), "500", 10, 60000, NULL, 0, NULL,
     "how often the outbox sender looks for due rows"},
    {"outbox_batch", T_UINT, OFF(outbox_batch), "20", 1, 1000, NULL, 0, NULL,
     "rows the outbox sender claims per tick"},
    {"outbox_max_attempts", T_UINT, OFF(outbox_max_attempts), "8", 1, 100, NULL, 0, NULL,
     "delivery attempts before a row is dead-lettered"},
    {"outbox_backoff_base", T_UINT, OFF(outbox_backoff_base), "30", 1, 86400, NULL, 0, NULL,
     "seconds before the first retry; doubled each attempt, with jitter"},
    {"outbox_backoff_max", T_UINT, OFF(outbox_backoff_max), "3600", 1, 604800, NULL, 0, NULL,
     "longest wait between two attempts, seconds"},
    {"outbox_lease", T_UINT, OFF(outbox_lease), "120", 5, 3600, NULL, 0, NULL,
     "seconds a claimed outbox row stays with the instance sending it"},
    {"sse_max_clients", T_UINT, OFF(sse_max_clients), "256", 0, 100000, NULL, 0, NULL,
     "live event streams per instance"},
    {"sse_heartbeat", T_UINT, OFF(sse_heartbeat), "15", 1, 300, NULL, 0, NULL,
     "seconds between SSE heartbeat comments"},
    {"sse_max_buffer", T_UINT, OFF(sse_max_buffer), "1048576", 4096, 67108864, NULL, 0, NULL,
     "bytes queued to one slow SSE client before it is cut off"},
    {"wechat_timestamp_window", T_UINT, OFF(wechat_timestamp_window), "300", 0, 31536000, NULL, 0,
     NULL, "seconds a WeChat push's timestamp may differ from now (0 = not checked; an account "
     "may set its own)"},
    {"wechat_max_body", T_UINT, OFF(wechat_max_body), "65536", 1024, 1048576, NULL, 0, NULL,
     "largest WeChat webhook push in bytes"},
    {"wechat_api_timeout", T_UINT, OFF(wechat_api_timeout), "10", 1, 120, NULL, 0, NULL,
     "seconds one call to the WeChat API may take"},
    {"secrets_file", T_STR, OFF(secrets_file), "", 0, 0, NULL, 0, NULL,
     "file of \"name = value\" secrets, mode 0600 (WeChat AppSecrets named by secret_ref)"},
    {"webform_categories", T_STR, OFF(webform_categories), "general:General support", 0, 0, NULL,
     0, valid_categories, "web form categories as slug:Label[,slug:Label...]; each slug is the "
     "queue a request goes to (a catalogue's category.<slug> text overrides the label)"},
    {"webform_rate_ip", T_UINT, OFF(webform_rate_ip), "20", 0, 1000000, NULL, 0, NULL,
     "web form submissions and sign-in requests per client address per window (0 = no limit)"},
    {"webform_rate_email", T_UINT, OFF(webform_rate_email), "5", 0, 1000000, NULL, 0, NULL,
     "web form submissions and sign-in requests per e-mail address per window (0 = no limit)"},
    {"webform_rate_window", T_UINT, OFF(webform_rate_window), "3600", 1, 604800, NULL, 0, NULL,
     "seconds of the web form rate-limit window"},
    {"webform_min_fill", T_UINT, OFF(webform_min_fill), "3", 0, 3600, NULL, 0, NULL,
     "seconds between showing the web form and accepting it (faster is a bot; 0 = off)"},
    {"webform_cors_origins", T_STR, OFF(webform_cors_origins), "", 0, 0, NULL, 0, valid_origins,
     "origins (https://shop.example.com, space or comma separated) whose pages may call "
     "/api/v1/public/*"},
    {"webform_frame_ancestors", T_STR, OFF(webform_frame_ancestors), "'self'", 0, 0, NULL, 0,
     valid_frame_ancestors, "CSP frame-ancestors of the embeddable form pages ('none', 'self', "
     "origins)"},
    {"portal_token_idle", T_UINT, OFF(portal_token_idle), "7776000", 60, 315360000, NULL, 0, NULL,
     "seconds of inactivity after which a customer's portal link stops working"},
    {"public_base_url", T_STR, OFF(public_base_url), "", 0, 0, NULL, 0, valid_base_url,
     "absolute URL kefud is reached at (https://support.example.com), for links in mail; "
     "empty: http://<listen>"},
    {"lmtp_listen", T_STR, OFF(lmtp_listen), "", 0, 0, NULL, 0, valid_listen_or_off,
     "LMTP listener host:port for mail from an MTA (\"\" = off; port 0 picks a free port)"},
    {"lmtp_max_size", T_UINT, OFF(lmtp_max_size), "26214400", 1024, 268435456, NULL, 0, NULL,
     "largest inbound mail in bytes (LMTP SIZE, raw MIME over HTTP)"},
    {"lmtp_max_sessions", T_UINT, OFF(lmtp_max_sessions), "32", 1, 10000, NULL, 0, NULL,
     "concurrent LMTP sessions; more are told 421 and closed"},
    {"lmtp_workers", T_UINT, OFF(lmtp_workers), "4", 1, 64, NULL, 0, NULL,
     "threads (each with its own database connection) that ingest LMTP mail"},
    {"lmtp_timeout", T_UINT, OFF(lmtp_timeout), "300", 1, 3600, NULL, 0, NULL,
     "seconds an LMTP client may stay silent before it is disconnected"},
    {"smtp_host", T_STR, OFF(smtp_host), "127.0.0.1", 0, 0, NULL, 0, NULL,
     "SMTP relay for outbound mail"},
    {"smtp_port", T_UINT, OFF(smtp_port), "25", 1, 65535, NULL, 0, NULL, "SMTP relay port"},
    {"smtp_starttls", T_ENUM, OFF(smtp_starttls), "no", 0, 0, "no|try|require", 0, NULL,
     "STARTTLS to the SMTP relay"},
    {"tls_ca_bundle", T_STR, OFF(tls_ca_bundle), "", 0, 0, NULL, 0, NULL,
     "PEM file of the CAs that IMAP and SMTP servers' certificates are checked against "
     "(\"\" = the system's store)"},
    {"imap_starttls", T_ENUM, OFF(imap_starttls), "try", 0, 0, "no|try|require", 0, NULL,
     "STARTTLS on imap:// mailboxes (imaps:// is always TLS); certificates are always verified"},
    {"smtp_user", T_STR, OFF(smtp_user), "", 0, 0, NULL, 0, NULL,
     "SMTP AUTH user (\"\" = no AUTH)"},
    {"smtp_password", T_STR, OFF(smtp_password), "", 0, 0, NULL, 1, NULL,
     "SMTP AUTH password (secret: prefer smtp_password_file)"},
    {"smtp_timeout", T_UINT, OFF(smtp_timeout), "30", 1, 600, NULL, 0, NULL,
     "seconds each SMTP step may take"},
    {"html_allow_remote_images", T_BOOL, OFF(html_allow_remote_images), "0", 0, 1, NULL, 0, NULL,
     "keep remote (http/https) images in sanitized mail HTML (tracking pixels!)"},
    {"email_list_id_bulk", T_BOOL, OFF(email_list_id_bulk), "0", 0, 1, NULL, 0, NULL,
     "treat mail with a List-Id header as bulk (recorded, never acknowledged); off so a support "
     "address that is itself a list still acknowledges (Precedence: list/bulk always counts)"},
    {"email_auto_reply_limit", T_UINT, OFF(email_auto_reply_limit), "5", 0, 1000, NULL, 0, NULL,
     "automatic replies (acknowledgements) per sender address per day; 0 = none"},
    {"webform_mailbox", T_STR, OFF(webform_mailbox), "", 0, 0, NULL, 0, NULL,
     "mailbox (e-mail channel account) the web form's acknowledgements and sign-in links are "
     "sent from"},
};

static void
seterr(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

static const cfg_def *
find_def(const char *key)
{
    for (size_t i = 0; i < KF_ARRAY_LEN(defs); i++)
        if (strcmp(defs[i].name, key) == 0)
            return &defs[i];
    return NULL;
}

static int
enum_ok(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t k = bar ? (size_t) (bar - p) : strlen(p);
        if (k == n && strncmp(p, v, n) == 0)
            return 1;
        p += k + (bar ? 1 : 0);
    }
    return 0;
}

static int
set_def(kf_config *cfg, const cfg_def *d, const char *value, const char *origin, char *err,
        size_t errsz)
{
    char *field = (char *) cfg + d->offset;
    const char *why = NULL;
    char shown[128];

    kf_printable(shown, sizeof(shown), value, strlen(value));
    switch (d->type) {
    case T_STR:
    case T_ENUM:
        if (d->type == T_ENUM && !enum_ok(d->choices, value)) {
            seterr(err, errsz, "%s: %s: invalid value \"%s\": expected one of %s", origin,
                   d->name, shown, d->choices);
            return KF_EINVAL;
        }
        if (d->valid != NULL && !d->valid(value, &why)) {
            seterr(err, errsz, "%s: %s: invalid value \"%s\": %s", origin, d->name,
                   d->secret ? "(secret)" : shown, why);
            return KF_EINVAL;
        }
        free(*(char **) field);
        *(char **) field = kf_xstrdup(value);
        return KF_OK;
    case T_UINT: {
        char *end;
        errno = 0;
        if (!isdigit((unsigned char) value[0])) {
            seterr(err, errsz, "%s: %s: invalid value \"%s\": expected a whole number", origin,
                   d->name, shown);
            return KF_EINVAL;
        }
        unsigned long v = strtoul(value, &end, 10);
        if (errno != 0 || *end != '\0' || v < d->min || v > d->max) {
            seterr(err, errsz, "%s: %s: invalid value \"%s\": expected a whole number %lu..%lu",
                   origin, d->name, shown, d->min, d->max);
            return KF_EINVAL;
        }
        *(unsigned *) field = (unsigned) v;
        return KF_OK;
    }
    case T_BOOL:
        if (!strcmp(value, "1") || !strcmp(value, "true") || !strcmp(value, "yes") ||
            !strcmp(value, "on")) {
            *(int *) field = 1;
        } else if (!strcmp(value, "0") || !strcmp(value, "false") || !strcmp(value, "no") ||
                   !strcmp(value, "off")) {
            *(int *) field = 0;
        } else {
            seterr(err, errsz, "%s: %s: invalid value \"%s\": expected true or false", origin,
                   d->name, shown);
            return KF_EINVAL;
        }
        return KF_OK;
    }
    return KF_EINVAL;
}

/* Read a secret file: at most 64 KiB, trailing newlines stripped. */
static int
read_secret(const char *path, char **out, const char *origin, const char *key, char *err,
            size_t errsz)
{
    char buf[65537];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        seterr(err, errsz, "%s: %s_file: cannot open \"%s\": %s", origin, key, path,
               strerror(errno));
        return KF_EINVAL;
    }
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0 || n == (ssize_t) sizeof(buf) - 1) {
        seterr(err, errsz, "%s: %s_file: cannot read \"%s\" (or larger than 64 KiB)", origin, key,
               path);
        return KF_EINVAL;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    *out = kf_xstrdup(buf);
    explicit_bzero(buf, sizeof(buf));
    return KF_OK;
}

static int
set_origin(kf_config *cfg, const char *key, const char *value, const char *origin, char *err,
           size_t errsz)
{
    const cfg_def *d = find_def(key);
    size_t kl = strlen(key);

    if (d == NULL && kl > 5 && strcmp(key + kl - 5, "_file") == 0) {
        char base[64];
        if (kl - 5 < sizeof(base)) {
            memcpy(base, key, kl - 5);
            base[kl - 5] = '\0';
            const cfg_def *sd = find_def(base);
            if (sd != NULL && sd->secret) {
                char *secret = NULL;
                int rc = read_secret(value, &secret, origin, base, err, errsz);
                if (rc != KF_OK)
                    return rc;
                rc = set_def(cfg, sd, secret, origin, err, errsz);
                explicit_bzero(secret, strlen(secret));
                free(secret);
                return rc;
            }
        }
    }
    if (d == NULL) {
        char shown[80];
        seterr(err, errsz, "%s: unknown key \"%s\" (kefud --help lists every key)", origin,
               kf_printable(shown, sizeof(shown), key, strlen(key)));
        return KF_EINVAL;
    }
    return set_def(cfg, d, value, origin, err, errsz);
}

int
kf_config_set(kf_config *cfg, const char *key, const char *value, char *err, size_t errsz)
{
    return set_origin(cfg, key, value, "config", err, errsz);
}

void
kf_config_defaults(kf_config *cfg)
{
    char err[256];
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < KF_ARRAY_LEN(defs); i++)
        if (set_def(cfg, &defs[i], defs[i].def, "default", err, sizeof(err)) != KF_OK)
            kf_panic("bad built-in default: %s", err);
}

static char *
trim(char *s, char *end)
{
    while (s < end && isspace((unsigned char) *s))
        s++;
    while (end > s && isspace((unsigned char) end[-1]))
        end--;
    *end = '\0';
    return s;
}

int
kf_config_parse(kf_config *cfg, const char *text, size_t len, const char *origin, char *err,
                size_t errsz)
{
    char line[4096], where[300];
    size_t pos = 0;
    unsigned lineno = 0;

    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t) (nl - (text + pos)) : len - pos;
        lineno++;
        snprintf(where, sizeof(where), "%s:%u", origin, lineno);
        if (n >= sizeof(line)) {
            seterr(err, errsz, "%s: line too long", where);
            return KF_EINVAL;
        }
        if (memchr(text + pos, '\0', n) != NULL) {
            seterr(err, errsz, "%s: NUL byte in configuration", where);
            return KF_EINVAL;
        }
        memcpy(line, text + pos, n);
        line[n] = '\0';
        pos += n + (nl ? 1 : 0);

        char *s = trim(line, line + n);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            seterr(err, errsz, "%s: expected \"key = value\"", where);
            return KF_EINVAL;
        }
        char *key = trim(s, eq);
        char *value = trim(eq + 1, eq + 1 + strlen(eq + 1));
        /* Optional double quotes around the value. */
        size_t vl = strlen(value);
        if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
            value[vl - 1] = '\0';
            value++;
        }
        if (*key == '\0') {
            seterr(err, errsz, "%s: empty key", where);
            return KF_EINVAL;
        }
        int rc = set_origin(cfg, key, value, where, err, errsz);
        if (rc != KF_OK)
            return rc;
    }
    return KF_OK;
}

int
kf_config_env(kf_config *cfg, char *const *envp, char *err, size_t errsz)
{
    char key[80], where[100];
    for (; envp != NULL && *envp != NULL; envp++) {
        const char *e = *envp;
        if (strncmp(e, "KEFU_", 5) != 0)
            continue;
        const char *eq = strchr(e, '=');
        if (eq == NULL || (size_t) (eq - e - 5) >= sizeof(key))
            continue;
        size_t kl = (size_t) (eq - e - 5);
        for (size_t i = 0; i < kl; i++)
            key[i] = (char) tolower((unsigned char) e[5 + i]);
        key[kl] = '\0';
        /* Variables of the scripts and tests, not configuration keys. */
        if (!strcmp(key, "config") || !strncmp(key, "test_", 5) || !strncmp(key, "bench_", 6) ||
            !strcmp(key, "var") || !strcmp(key, "http") || !strcmp(key, "source_dir") ||
            !strcmp(key, "wechat_token") || !strcmp(key, "wechat_aeskey") ||
            !strcmp(key, "wechat_appid") || !strcmp(key, "lmtp") || !strcmp(key, "smtp"))
            continue;
        snprintf(where, sizeof(where), "environment KEFU_%.*s", (int) kl, e + 5);
        int rc = set_origin(cfg, key, eq + 1, where, err, errsz);
        if (rc != KF_OK)
            return rc;
    }
    return KF_OK;
}

int
kf_config_check(const kf_config *cfg, char *err, size_t errsz)
{
    if (kf_log_level_parse(cfg->log_level) < 0) {
        seterr(err, errsz, "log_level: invalid");
        return KF_EINVAL;
    }
    if (cfg->db_socket[0] == '\0' && cfg->db_host[0] == '\0') {
        seterr(err, errsz, "db_host or db_socket must be set");
        return KF_EINVAL;
    }
    return KF_OK;
}

int
kf_config_load(kf_config *cfg, const char *path, char *const *envp, char *err, size_t errsz)
{
    int rc;
    kf_config_defaults(cfg);
    if (path != NULL) {
        FILE *f = fopen(path, "re");
        if (f == NULL) {
            seterr(err, errsz, "%s: cannot open: %s", path, strerror(errno));
            return KF_EINVAL;
        }
        kf_str text = KF_STR_INIT;
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0 && text.len < 1024 * 1024)
            kf_str_append(&text, buf, n);
        fclose(f);
        rc = kf_config_parse(cfg, text.ptr ? text.ptr : "", text.len, path, err, errsz);
        kf_str_free(&text);
        if (rc != KF_OK)
            return rc;
    }
    if ((rc = kf_config_env(cfg, envp, err, errsz)) != KF_OK)
        return rc;
    return kf_config_check(cfg, err, errsz);
}

void
kf_config_deinit(kf_config *cfg)
{
    for (size_t i = 0; i < KF_ARRAY_LEN(defs); i++) {
        if (defs[i].type == T_STR || defs[i].type == T_ENUM) {
            char **f = (char **) ((char *) cfg + defs[i].offset);
            if (*f != NULL && defs[i].secret)
                explicit_bzero(*f, strlen(*f));
            free(*f);
            *f = NULL;
        }
    }
}

void
kf_config_help(FILE *out)
{
    fprintf(out, "Configuration keys (file: key = value; environment: KEFU_<KEY>; secrets also "
                 "<key>_file = path):\n\n");
    for (size_t i = 0; i < KF_ARRAY_LEN(defs); i++) {
        const cfg_def *d = &defs[i];
        fprintf(out, "  %-20s default %-24s %s%s\n", d->name,
                d->def[0] ? d->def : "\"\"", d->doc, d->secret ? " [secret]" : "");
    }
}

void
kf_config_dump(const kf_config *cfg, FILE *out)
{
    for (size_t i = 0; i < KF_ARRAY_LEN(defs); i++) {
        const cfg_def *d = &defs[i];
        const char *field = (const char *) cfg + d->offset;
        switch (d->type) {
        case T_STR:
        case T_ENUM:
            fprintf(out, "%s = %s\n", d->name,
                    d->secret ? ((*(char *const *) field)[0] ? "(set)" : "")
                              : *(char *const *) field);
            break;
        case T_UINT:
            fprintf(out, "%s = %u\n", d->name, *(const unsigned *) field);
            break;
        case T_BOOL:
            fprintf(out, "%s = %s\n", d->name, *(const int *) field ? "true" : "false");
            break;
        }
    }
}

int
kf_hostport_ok(const char *s, int allow_zero)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || colon[1] == '\0')
        return 0;
    size_t hl = (size_t) (colon - s);
    if (s[0] == '[') {
        if (hl < 3 || s[hl - 1] != ']')
            return 0;
    } else {
        for (size_t i = 0; i < hl; i++)
            if (!isalnum((unsigned char) s[i]) && s[i] != '.' && s[i] != '-')
                return 0;
    }
    char *end;
    errno = 0;
    if (!isdigit((unsigned char) colon[1]))
        return 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || *end || port > 65535 || (port == 0 && !allow_zero))
        return 0;
    return 1;
}
