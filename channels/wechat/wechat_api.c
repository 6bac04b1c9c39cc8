/*
 * wechat_api.c - talking to WeChat's API: one libcurl exchange at a time
 * from a job thread (JSON calls, downloads, multipart uploads to
 * media/upload), the access token every instance shares through the
 * wechat_token row, and the secrets file the AppSecrets come from.
 *
 * The token (research §8.1): WeChat allows 2000 fetches a day and a new
 * token retires the old one after five minutes, so instances must not each
 * fetch their own.  The row holds the token and its expiry; an instance
 * that finds it missing, nearly expired or refused by the API (40001,
 * 40014, 42001) takes the row's lease (an UPDATE that only one instance
 * can win: compare-and-swap on the refused token), fetches outside any
 * transaction, stores the result and lets the lease go.  The others poll
 * the row until the new token appears.  A failed fetch leaves a 30-second
 * cool-down so a wrong AppSecret cannot burn the daily quota.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/job.h"
#include "kefu/log.h"
#include "kefu/pool.h"
#include "kefu/wechat.h"
#include "wechat_internal.h"

#define TOKEN_LEASE_S 30     /* longest one fetch may hold the row */
#define TOKEN_COOLDOWN_S 30  /* after a failed fetch, nobody tries again for this long */
#define TOKEN_MAX 2048
#define SECRETS_MAX (64 * 1024)
#define WAIT_SLICE_NS (50 * 1000000L)

static double
mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* ---- the secrets file ---- */

int
kf_wechat_secret(kf_pool *pool, const kf_config *cfg, const char *name, const char **secret_r,
                 const char **why_r)
{
    char *buf;
    struct stat sb;
    ssize_t n;
    int fd;

    *secret_r = NULL;
    if (name == NULL || *name == '\0') {
        *why_r = "the account has no secret_ref (its AppSecret in secrets_file)";
        return KF_ERR;
    }
    if (cfg->secrets_file == NULL || cfg->secrets_file[0] == '\0') {
        *why_r = "secrets_file is not configured";
        return KF_ERR;
    }
    if ((fd = open(cfg->secrets_file, O_RDONLY | O_CLOEXEC)) < 0) {
        *why_r = kf_pool_printf(pool, "cannot open secrets_file: %s", strerror(errno));
        return KF_ERR;
    }
    if (fstat(fd, &sb) != 0 || (sb.st_mode & 077) != 0) {
        close(fd);
        *why_r = "secrets_file must be readable by kefud's user only (chmod 600)";
        return KF_ERR;
    }
    buf = kf_pool_alloc(pool, SECRETS_MAX + 1);
    n = read(fd, buf, SECRETS_MAX + 1);
    close(fd);
    if (n < 0 || n > SECRETS_MAX) {
        *why_r = "cannot read secrets_file (or larger than 64 KiB)";
        return KF_ERR;
    }
    buf[n] = '\0';
    /* "name = value" lines, # comments, like the configuration file. */
    for (char *line = buf, *next; line != NULL && *line; line = next) {
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        char *eq = strchr(line, '=');
        if (eq == NULL)
            continue;
        char *k = line, *ke = eq, *v = eq + 1, *ve = v + strlen(v);
        while (*k == ' ' || *k == '\t')
            k++;
        while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
            ke--;
        while (*v == ' ' || *v == '\t')
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r'))
            ve--;
        if (*k == '#' || (size_t) (ke - k) != strlen(name) || strncmp(k, name, strlen(name)) != 0)
            continue;
        if (ve - v >= 2 && *v == '"' && ve[-1] == '"') {
            v++;
            ve--;
        }
        *ve = '\0';
        *secret_r = kf_pool_strdup(pool, v);
        explicit_bzero(buf, (size_t) n);
        return KF_OK;
    }
    explicit_bzero(buf, (size_t) n);
    *why_r = kf_pool_printf(pool, "no secret named %s in secrets_file", name);
    return KF_ERR;
}

/* ---- HTTP ---- */

struct sink {
    kf_wechat_http *r;
    size_t max;
    int too_big;
};

static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct sink *s = arg;
    size_t n = size * nmemb;
    if (s->r->body.len + n > s->max) {
        s->too_big = 1;
        return 0; /* aborts the transfer */
    }
    kf_str_append(&s->r->body, data, n);
    return n;
}

/* Copy a header's value (trimmed) into buf when its name matches. */
static void
header_value(const char *line, size_t n, const char *name, char *buf, size_t bufsz)
{
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return;
    const char *v = line + nl + 1, *e = line + n;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' '))
        e--;
    size_t len = (size_t) (e - v) < bufsz - 1 ? (size_t) (e - v) : bufsz - 1;
    memcpy(buf, v, len);
    buf[len] = '\0';
}

static size_t
on_header(char *line, size_t size, size_t nmemb, void *arg)
{
    kf_wechat_http *r = arg;
    size_t n = size * nmemb;
    char disp[512] = "";

    header_value(line, n, "Content-Type", r->content_type, sizeof(r->content_type));
    header_value(line, n, "Content-Disposition", disp, sizeof(disp));
    if (disp[0]) {
        /* attachment; filename="abc.jpg" */
        const char *f = strstr(disp, "filename=");
        if (f != NULL) {
            f += 9;
            size_t len = strcspn(f, "\";");
            if (*f == '"') {
                f++;
                len = strcspn(f, "\"");
            }
            if (len >= sizeof(r->filename))
                len = sizeof(r->filename) - 1;
            memcpy(r->filename, f, len);
            r->filename[len] = '\0';
        }
    }
    return n;
}

/* Give up when the job thread is being stopped (kefud got SIGTERM). */
static int
on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void) arg;
    (void) dltotal;
    (void) dlnow;
    (void) ultotal;
    (void) ulnow;
    return kf_job_stopping(NULL) ? 1 : 0;
}

/* A multipart/form-data upload: one file part. */
struct upload {
    const char *field, *filename, *content_type;
    const void *data;
    size_t len;
};

/* One exchange: GET, POST of json, or POST of the multipart form up. */
static int
exchange(const kf_config *cfg, const char *url, const char *json, const struct upload *up,
         double deadline, size_t max_body, kf_wechat_http *r, const char **why_r, kf_pool *pool)
{
    struct sink s = {.r = r, .max = max_body};
    struct curl_slist *hdrs = NULL;
    curl_mime *mime = NULL;
    char errbuf[CURL_ERROR_SIZE] = "";
    double left = deadline - mono();
    long ms;
    CURL *h;
    CURLcode cc;

    memset(r, 0, sizeof(*r));
    /* An upload (up to 20 MB) may take the rest of the caller's time; a call, the API timeout. */
    if (up == NULL && left > (double) cfg->wechat_api_timeout)
        left = (double) cfg->wechat_api_timeout;
    if (left < 0.2) {
        r->timed_out = 1;
        *why_r = "no time left before the deadline";
        return KF_ERR;
    }
    ms = (long) (left * 1000.0);
    long connect_ms = (long) cfg->wechat_api_timeout * 1000L;
    if (connect_ms > 5000L)
        connect_ms = 5000L;
    if ((h = curl_easy_init()) == NULL) {
        *why_r = "curl_easy_init failed";
        return KF_ERR;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, ms < connect_ms ? ms : connect_ms);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "kefu/" KEFU_VERSION);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    if (json != NULL) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json; charset=utf-8");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long) strlen(json));
    } else if (up != NULL) {
        curl_mimepart *part;
        /* The bytes are copied (curl_mime_data): the caller may free them afterwards. */
        if ((mime = curl_mime_init(h)) == NULL || (part = curl_mime_addpart(mime)) == NULL ||
            curl_mime_name(part, up->field) != CURLE_OK ||
            curl_mime_filename(part, up->filename) != CURLE_OK ||
            curl_mime_type(part, up->content_type) != CURLE_OK ||
            curl_mime_data(part, up->data ? up->data : "", up->len) != CURLE_OK) {
            curl_mime_free(mime);
            curl_easy_cleanup(h);
            *why_r = "cannot build the multipart upload (out of memory?)";
            return KF_ERR;
        }
        /* No "Expect: 100-continue" round trip before the body. */
        hdrs = curl_slist_append(hdrs, "Expect:");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_MIMEPOST, mime);
    }
    cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(h);
    curl_mime_free(mime);
    curl_slist_free_all(hdrs);
    if (cc != CURLE_OK) {
        r->timed_out = cc == CURLE_OPERATION_TIMEDOUT;
        if (s.too_big)
            *why_r = kf_pool_printf(pool, "the answer is larger than %zu bytes", max_body);
        else if (cc == CURLE_ABORTED_BY_CALLBACK)
            *why_r = "interrupted by shutdown";
        else
            *why_r = kf_pool_printf(pool, "%s%s%s", curl_easy_strerror(cc), errbuf[0] ? ": " : "",
                                    errbuf);
        kf_str_free(&r->body);
        return KF_ERR;
    }
    return KF_OK;
}

int
kf_wechat_http_call(const kf_config *cfg, const char *url, const char *json, double deadline,
                    size_t max_body, kf_wechat_http *r, const char **why_r, kf_pool *pool)
{
    return exchange(cfg, url, json, NULL, deadline, max_body, r, why_r, pool);
}

int
kf_wechat_http_upload(const kf_config *cfg, const char *url, const char *field,
                      const char *filename, const char *content_type, const void *data,
                      size_t len, double deadline, size_t max_body, kf_wechat_http *r,
                      const char **why_r, kf_pool *pool)
{
    struct upload up = {.field = field, .filename = filename, .content_type = content_type,
                        .data = data, .len = len};
    return exchange(cfg, url, NULL, &up, deadline, max_body, r, why_r, pool);
}

/* ---- the access token ---- */

/* WeChat's token endpoint for the account (appid/secret or corpid/corpsecret). */
static char *
token_url(kf_pool *pool, const kf_wechat_account *a, const char *secret)
{
    char *id = curl_easy_escape(NULL, a->app_id, 0), *sec = curl_easy_escape(NULL, secret, 0);
    char *url;
    if (strcmp(a->kind, "wecom") == 0)
        url = kf_pool_printf(pool, "%s/cgi-bin/gettoken?corpid=%s&corpsecret=%s", a->api_base,
                             id ? id : "", sec ? sec : "");
    else
        url = kf_pool_printf(pool,
                             "%s/cgi-bin/token?grant_type=client_credential&appid=%s&secret=%s",
                             a->api_base, id ? id : "", sec ? sec : "");
    if (sec != NULL)
        explicit_bzero(sec, strlen(sec));
    curl_free(id);
    curl_free(sec);
    return url;
}

/* Fetch a new token from WeChat (no database). */
static int
token_fetch(kf_pool *pool, const kf_config *cfg, const kf_wechat_account *a, double deadline,
            const char **token_r, unsigned *expires_in_r, const char **why_r)
{
    const char *secret = NULL;
    kf_wechat_http r;
    json_t *root;
    int rc = KF_ERR;

    if (kf_wechat_secret(pool, cfg, a->secret_ref, &secret, why_r) != KF_OK)
        return KF_ERR;
    char *url = token_url(pool, a, secret);
    explicit_bzero((char *) secret, strlen(secret));
    int hrc = kf_wechat_http_call(cfg, url, NULL, deadline, 64 * 1024, &r, why_r, pool);
    explicit_bzero(url, strlen(url));
    if (hrc != KF_OK) {
        *why_r = kf_pool_printf(pool, "access token: %s", *why_r);
        return KF_ERR;
    }
    if (r.status != 200) {
        *why_r = kf_pool_printf(pool, "access token: HTTP %ld", r.status);
        kf_str_free(&r.body);
        return KF_ERR;
    }
    root = json_loadb(r.body.ptr ? r.body.ptr : "", r.body.len, 0, NULL);
    const char *tok = json_string_value(json_object_get(root, "access_token"));
    json_int_t exp = json_integer_value(json_object_get(root, "expires_in"));
    json_int_t code = json_integer_value(json_object_get(root, "errcode"));
    const char *msg = json_string_value(json_object_get(root, "errmsg"));
    if (tok != NULL && *tok && strlen(tok) <= TOKEN_MAX && exp > 0) {
        *token_r = kf_pool_strdup(pool, tok);
        *expires_in_r = exp > 86400 ? 86400u : (unsigned) exp;
        rc = KF_OK;
    } else if (root == NULL) {
        *why_r = "access token: the answer is not JSON";
    } else {
        char shown[160];
        kf_printable(shown, sizeof(shown), msg ? msg : "", msg ? strlen(msg) : 0);
        *why_r = kf_pool_printf(pool, "access token: errcode %lld %s%s", (long long) code, shown,
                                code == 40001 || code == 40125 ? " (check the AppSecret)"
                                : code == 40013             ? " (check the AppID)"
                                : code == 40164 || code == 60020
                                    ? " (this server's IP is not on the account's whitelist)"
                                    : "");
    }
    json_decref(root);
    kf_str_free(&r.body);
    return rc;
}

struct tok_read {
    const char *key, *bad;
    unsigned margin;
    kf_pool *pool;
    /* out */
    const char *token, *last_error;
    int fresh, cooling, leased;
};

/* Make sure the row exists, read it, and try to take the refresh lease. */
static int
tok_read_tx(kf_db *db, void *arg, const char **error_r)
{
    struct tok_read *t = arg;
    kf_stmt *st;
    int rc;

    t->token = t->last_error = NULL;
    t->fresh = t->cooling = t->leased = 0;
    if ((rc = kf_db_stmt(db, "wechat.token_row",
                         "INSERT IGNORE INTO wechat_token (account_key) VALUES (?)", &st,
                         error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->key);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_db_stmt(db, "wechat.token_get",
                         "SELECT access_token, "
                         " COALESCE(expires_at > NOW(6) + INTERVAL ? SECOND, 0), "
                         " COALESCE(refresh_until > NOW(6), 0), refresh_owner IS NULL, last_error "
                         "FROM wechat_token WHERE account_key = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, t->margin);
    kf_stmt_bind_cstr(st, 1, t->key);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK || (rc = kf_stmt_fetch(st, error_r)) < 0)
        return rc;
    if (rc == 1) {
        t->token = kf_stmt_col_str(st, 0, t->pool, NULL);
        t->fresh = t->token != NULL && kf_stmt_col_i64(st, 1) != 0;
        t->cooling = kf_stmt_col_i64(st, 2) != 0 && kf_stmt_col_i64(st, 3) != 0;
        t->last_error = kf_stmt_col_str(st, 4, t->pool, NULL);
    }
    kf_stmt_done(st);
    if (t->fresh && (t->bad == NULL || strcmp(t->token, t->bad) != 0))
        return KF_OK;
    /* Stale, missing or refused: one instance wins this UPDATE and fetches.
     * The token comparison makes a refusal refresh only the refused token. */
    if ((rc = kf_db_stmt(db, "wechat.token_lease",
                         "UPDATE wechat_token SET refresh_owner = ?, "
                         " refresh_until = NOW(6) + INTERVAL ? SECOND "
                         "WHERE account_key = ? "
                         " AND (refresh_until IS NULL OR refresh_until < NOW(6)) "
                         " AND (access_token IS NULL OR expires_at <= NOW(6) + INTERVAL ? SECOND "
                         "      OR access_token = ?)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, kf_instance_id());
    kf_stmt_bind_u64(st, 1, TOKEN_LEASE_S);
    kf_stmt_bind_cstr(st, 2, t->key);
    kf_stmt_bind_u64(st, 3, t->margin);
    kf_stmt_bind_cstr(st, 4, t->bad); /* NULL: never equal */
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    t->leased = kf_stmt_affected(st) == 1;
    return KF_OK;
}

struct tok_store {
    const char *key, *token, *error;
    unsigned expires_in;
};

/* Settle our lease: the new token, or the error and a cool-down. */
static int
tok_store_tx(kf_db *db, void *arg, const char **error_r)
{
    struct tok_store *t = arg;
    kf_stmt *st;
    int rc;

    if (t->token != NULL)
        rc = kf_db_stmt(db, "wechat.token_store",
                        "UPDATE wechat_token SET access_token = ?, "
                        " expires_at = NOW(6) + INTERVAL ? SECOND, generation = generation + 1, "
                        " refreshed_at = NOW(6), refresh_owner = NULL, refresh_until = NULL, "
                        " last_error = NULL WHERE account_key = ? AND refresh_owner = ?",
                        &st, error_r);
    else
        rc = kf_db_stmt(db, "wechat.token_failed",
                        "UPDATE wechat_token SET last_error = LEFT(?, 1000), refresh_owner = NULL, "
                        " refresh_until = NOW(6) + INTERVAL ? SECOND "
                        "WHERE account_key = ? AND refresh_owner = ?",
                        &st, error_r);
    if (rc != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->token ? t->token : t->error);
    kf_stmt_bind_u64(st, 1, t->token ? t->expires_in : TOKEN_COOLDOWN_S);
    kf_stmt_bind_cstr(st, 2, t->key);
    kf_stmt_bind_cstr(st, 3, kf_instance_id());
    return kf_stmt_exec(st, error_r);
}

int
kf_wechat_token(kf_db *db, kf_pool *pool, const kf_config *cfg, const kf_wechat_account *a,
                const char *bad, unsigned margin_s, double deadline, const char **token_r,
                const char **why_r)
{
    struct tok_read t = {.key = a->key, .bad = bad, .margin = margin_s, .pool = pool};
    const char *error = NULL;

    *token_r = NULL;
    for (;;) {
        /* 1. The shared row: a good token, or the lease to fetch one. */
        if (kf_tx_run(db, tok_read_tx, &t, &error) != KF_OK) {
            *why_r = kf_pool_printf(pool, "access token: database: %s", error ? error : "?");
            return KF_ERR;
        }
        if (t.fresh && (bad == NULL || strcmp(t.token, bad) != 0)) {
            *token_r = t.token;
            return KF_OK;
        }
        if (t.leased) {
            /* 2. Ours to fetch, outside any transaction. */
            struct tok_store s = {.key = a->key};
            const char *tok = NULL, *why = NULL;
            unsigned exp = 0;
            if (token_fetch(pool, cfg, a, deadline, &tok, &exp, &why) == KF_OK) {
                s.token = tok;
                s.expires_in = exp;
            } else {
                s.error = why;
            }
            if (kf_tx_run(db, tok_store_tx, &s, &error) != KF_OK)
                kf_log(KF_LOG_WARN, "wechat", "event=token-store-failed account=%s reason=\"%s\"",
                       a->key, error ? error : "-");
            if (s.token != NULL) {
                kf_log(KF_LOG_INFO, "wechat", "event=token-refreshed account=%s expires_in=%u",
                       a->key, exp);
                *token_r = s.token;
                return KF_OK;
            }
            char shown[300];
            kf_log(KF_LOG_WARN, "wechat", "event=token-failed account=%s reason=\"%s\"", a->key,
                   kf_printable(shown, sizeof(shown), why, strlen(why)));
            *why_r = why;
            return KF_ERR;
        }
        if (t.cooling) {
            *why_r = kf_pool_printf(pool, "%s (waiting before the next try)",
                                    t.last_error ? t.last_error : "access token unavailable");
            return KF_ERR;
        }
        /* 3. Another instance is fetching: wait for its result. */
        if (mono() + 0.1 > deadline || kf_job_stopping(NULL)) {
            *why_r = "access token: another instance is still fetching it";
            return KF_ERR;
        }
        struct timespec slice = {0, WAIT_SLICE_NS};
        nanosleep(&slice, NULL);
    }
}
