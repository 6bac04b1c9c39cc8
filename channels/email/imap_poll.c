/*
 * imap_poll.c - IMAP polling with libcurl (job "email-imap").
 *
 * Per mailbox with an imap_url, every poll_interval seconds, by one kefud
 * instance at a time (lease "imap:<mailbox>"):
 *   EXAMINE -> UIDVALIDITY (a new one restarts the UID cursor at 0; ingest's
 *   Message-ID dedupe makes that harmless) -> UID SEARCH UID last+1:* ->
 *   for each new UID in order: UID FETCH BODY.PEEK[] (so nothing is marked
 *   read yet) -> kf_email_ingest_raw() in its own transaction -> after the
 *   commit: \Seen (or UID MOVE to imap_done_folder) -> the cursor.
 * A crash anywhere re-fetches from the cursor; the dedupe makes the second
 * ingest a no-op, so nothing is lost or doubled.  An unparseable message is
 * quarantined by the ingest and counts as done; a database failure stops the
 * poll without moving the cursor.
 *
 * libcurl passes untagged lines of custom commands to the write callback but
 * drops a FETCH literal; the literal is read from the protocol trace (the
 * debug callback) instead, and checked against its announced length; if
 * that fails the message is fetched with libcurl's own FETCH instead.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/email.h"
#include "kefu/job.h"
#include "kefu/log.h"
#include "kefu/pool.h"
#include "email_internal.h"

#define BATCH 100
#define POLL_BUDGET 10             /* seconds one poll may keep fetching */
#define CHUNK 20                   /* messages per FETCH */
#define CHUNK_BYTES (64u << 20)    /* trace kept for one chunk */
#define SECRETS_MAX 65536

struct imap {
    CURL *c;
    const kf_config *cfg;
    char errbuf[CURL_ERROR_SIZE];  /* libcurl's detail of the last failure */
    kf_str body, trace;
    size_t limit;
    int over;
};

static size_t
on_write(char *p, size_t size, size_t n, void *arg)
{
    struct imap *im = arg;
    if (im->body.len + size * n <= im->limit)
        kf_str_append(&im->body, p, size * n);
    else
        im->over = 1;
    return size * n;
}

static int
on_debug(CURL *c, curl_infotype type, char *p, size_t n, void *arg)
{
    struct imap *im = arg;
    (void) c;
    if (type == CURLINFO_HEADER_IN) {
        if (im->trace.len + n <= im->limit + 4096)
            kf_str_append(&im->trace, p, n);
        else
            im->over = 1;
    }
    return 0;
}

/* One request; custom NULL = plain URL fetch. */
static int
request(struct imap *im, const char *url, const char *custom, const char **why, kf_pool *pool)
{
    kf_str_reset(&im->body);
    kf_str_reset(&im->trace);
    im->over = 0;
    curl_easy_setopt(im->c, CURLOPT_URL, url);
    curl_easy_setopt(im->c, CURLOPT_CUSTOMREQUEST, custom);
    im->errbuf[0] = '\0';
    CURLcode rc = curl_easy_perform(im->c);
    if (rc != CURLE_OK) {
        /* e.g. "SSL peer certificate or SSH remote key was not OK: SSL certificate
         * problem: unable to get local issuer certificate" */
        *why = kf_pool_printf(pool, "IMAP %s: %s%s%s", custom ? custom : "FETCH",
                              curl_easy_strerror(rc), im->errbuf[0] ? ": " : "", im->errbuf);
        return KF_ERR;
    }
    return KF_OK;
}

static char *
secret(kf_pool *pool, const kf_config *cfg, const char *name, const char **why)
{
    if (name == NULL || !*name) {
        *why = "the mailbox has no imap_secret_ref";
        return NULL;
    }
    FILE *f = cfg->secrets_file && *cfg->secrets_file ? fopen(cfg->secrets_file, "re") : NULL;
    if (f == NULL) {
        *why = "cannot open secrets_file";
        return NULL;
    }
    char *buf = kf_pool_alloc(pool, SECRETS_MAX + 1);
    size_t n = fread(buf, 1, SECRETS_MAX, f);
    fclose(f);
    buf[n] = '\0';
    for (char *line = buf, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *eq = strchr(line, '=');
        if (eq == NULL || *line == '#')
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
        if ((size_t) (ke - k) == strlen(name) && strncmp(k, name, (size_t) (ke - k)) == 0) {
            *ve = '\0';
            return kf_pool_strdup(pool, v);
        }
    }
    *why = "imap_secret_ref not found in secrets_file";
    return NULL;
}

struct mbox {
    char *name, *url, *user, *secret_ref, *done, *base, *folder;
    uint64_t uidvalidity, last_uid;
};

static int
set_state(kf_db *db, const char *name, uint64_t uidvalidity, uint64_t last_uid, int reset,
          const char *error, const char **error_r)
{
    kf_stmt *st;
    int rc;
    if (reset) {
        if ((rc = kf_db_stmt(db, "email.imap_reset",
                             "UPDATE email_mailbox SET imap_uidvalidity = ?, imap_last_uid = 0 "
                             "WHERE name = ?",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, uidvalidity);
        kf_stmt_bind_cstr(st, 1, name);
        return kf_stmt_exec(st, error_r);
    }
    if (last_uid) {
        if ((rc = kf_db_stmt(db, "email.imap_cursor",
                             "UPDATE email_mailbox SET imap_last_uid = ? WHERE name = ? "
                             "AND imap_last_uid < ?",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, last_uid);
        kf_stmt_bind_cstr(st, 1, name);
        kf_stmt_bind_u64(st, 2, last_uid);
        return kf_stmt_exec(st, error_r);
    }
    if ((rc = kf_db_stmt(db, "email.imap_polled",
                         "UPDATE email_mailbox SET imap_polled_at = NOW(6), imap_error = ? "
                         "WHERE name = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, error);
    kf_stmt_bind_cstr(st, 1, name);
    return kf_stmt_exec(st, error_r);
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

/* Poll one mailbox; *why set (pool) when the poll failed. */
static int
poll_one(kf_job *job, kf_db *db, kf_pool *pool, const kf_config *cfg, struct mbox *mb,
         const char **why)
{
    struct imap im = {.cfg = cfg, .limit = (size_t) cfg->lmtp_max_size + 1};
    unsigned fetched = 0, duplicates = 0, quarantined = 0; /* for the event=imap-polled line */
    const char *err = NULL;
    int rc = KF_OK;
    char *pass = secret(pool, cfg, mb->secret_ref, why);
    if (pass == NULL)
        return KF_ERR;
    im.c = curl_easy_init();
    curl_easy_setopt(im.c, CURLOPT_USERNAME, mb->user ? mb->user : "");
    curl_easy_setopt(im.c, CURLOPT_PASSWORD, pass);
    curl_easy_setopt(im.c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(im.c, CURLOPT_WRITEDATA, &im);
    curl_easy_setopt(im.c, CURLOPT_DEBUGFUNCTION, on_debug);
    curl_easy_setopt(im.c, CURLOPT_DEBUGDATA, &im);
    curl_easy_setopt(im.c, CURLOPT_ERRORBUFFER, im.errbuf);
    curl_easy_setopt(im.c, CURLOPT_VERBOSE, 1L);
    curl_easy_setopt(im.c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(im.c, CURLOPT_TIMEOUT, (long) cfg->smtp_timeout);
    curl_easy_setopt(im.c, CURLOPT_CONNECTTIMEOUT, (long) cfg->smtp_timeout);
    /* TLS: imaps:// is implicit TLS; imap:// follows imap_starttls (no, try,
     * require).  The server's certificate and name are always verified, against
     * tls_ca_bundle when set; a failure is the poll's error, before any login. */
    const char *stls = cfg->imap_starttls ? cfg->imap_starttls : "try";
    long use_ssl = strcmp(stls, "require") == 0 ? (long) CURLUSESSL_ALL
                   : strcmp(stls, "no") == 0    ? (long) CURLUSESSL_NONE
                                                : (long) CURLUSESSL_TRY;
    curl_easy_setopt(im.c, CURLOPT_USE_SSL, use_ssl);
    curl_easy_setopt(im.c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(im.c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (cfg->tls_ca_bundle && cfg->tls_ca_bundle[0])
        curl_easy_setopt(im.c, CURLOPT_CAINFO, cfg->tls_ca_bundle);
    curl_easy_setopt(im.c, CURLOPT_PROTOCOLS_STR, "imap,imaps");

    /* 1. UIDVALIDITY */
    char *cmd = kf_pool_printf(pool, "EXAMINE \"%s\"", mb->folder);
    if ((rc = request(&im, mb->base, cmd, why, pool)) != KF_OK)
        goto out;
    const char *uv = im.body.ptr ? strstr(im.body.ptr, "[UIDVALIDITY ") : NULL;
    if (uv == NULL) {
        *why = "IMAP EXAMINE: no UIDVALIDITY";
        rc = KF_ERR;
        goto out;
    }
    uint64_t uidvalidity = strtoull(uv + 13, NULL, 10);
    if (uidvalidity != mb->uidvalidity) {
        if (mb->uidvalidity != 0)
            kf_log(KF_LOG_WARN, "email", "event=imap-uidvalidity mailbox=\"%s\" old=%" PRIu64
                   " new=%" PRIu64, mb->name, mb->uidvalidity, uidvalidity);
        if ((rc = set_state(db, mb->name, uidvalidity, 0, 1, NULL, &err)) != KF_OK) {
            *why = err;
            goto out;
        }
        mb->last_uid = 0;
    }
    /* 2. new UIDs, BATCH at a time, for up to POLL_BUDGET seconds */
    char *furl = kf_pool_printf(pool, "%s%s", mb->base, mb->folder);
    time_t began = time(NULL);
more:
    cmd = kf_pool_printf(pool, "UID SEARCH UID %" PRIu64 ":*", mb->last_uid + 1);
    if ((rc = request(&im, furl, cmd, why, pool)) != KF_OK)
        goto out;
    uint64_t uids[BATCH];
    unsigned n = 0;
    const char *s = im.body.ptr ? strstr(im.body.ptr, "* SEARCH") : NULL;
    if (s) {
        s += 8;
        while (*s == ' ' && n < BATCH) {
            char *e;
            uint64_t u = strtoull(s + 1, &e, 10);
            if (e == s + 1)
                break;
            if (u > mb->last_uid)
                uids[n++] = u;
            s = e;
        }
    }
    qsort(uids, n, sizeof(uids[0]), cmp_u64);
    /* 3. chunks: one FETCH for up to CHUNK messages; each message in its own
     * transaction; then one STORE (or MOVE) for those committed, then the cursor. */
    for (unsigned i = 0, k; i < n && !kf_job_stopping(job); i += k) {
        k = n - i < CHUNK ? n - i : CHUNK;
        const char *raws[CHUNK] = {0};
        size_t lens[CHUNK] = {0};
        kf_str set = KF_STR_INIT;
        for (unsigned j = 0; j < k; j++)
            kf_str_printf(&set, "%s%" PRIu64, j ? "," : "", uids[i + j]);
        char *uidset = kf_pool_strdup(pool, set.ptr);
        kf_str_free(&set);
        cmd = kf_pool_printf(pool, "UID FETCH %s BODY.PEEK[]", uidset);
        im.limit = CHUNK_BYTES;
        rc = request(&im, furl, cmd, why, pool);
        im.limit = (size_t) cfg->lmtp_max_size + 1;
        if (rc != KF_OK)
            goto out;
        if (!im.over && im.trace.ptr) {
            char *copy = kf_pool_strndup(pool, im.trace.ptr, im.trace.len);
            kf_imap_literals(copy, im.trace.len, uids + i, k, raws, lens);
        }
        unsigned done = 0;
        int failed = 0;
        for (unsigned j = 0; j < k && !failed; j++) {
            const char *raw = raws[j];
            size_t len = lens[j];
            if (raw == NULL) {
                /* one by one: the literal was not found whole (or the chunk was too big) */
                cmd = kf_pool_printf(pool, "UID FETCH %" PRIu64 " BODY.PEEK[]", uids[i + j]);
                if ((rc = request(&im, furl, cmd, why, pool)) != KF_OK) {
                    failed = 1;
                    break;
                }
                raw = im.over || im.trace.ptr == NULL ? NULL
                                                   : kf_imap_literal(im.trace.ptr, im.trace.len, &len);
                if (raw == NULL && !im.over) {
                    /* libcurl's own FETCH reads a literal by its length (it marks \Seen early) */
                    char *u = kf_pool_printf(pool, "%s;UID=%" PRIu64, furl, uids[i + j]);
                    if ((rc = request(&im, u, NULL, why, pool)) != KF_OK) {
                        failed = 1;
                        break;
                    }
                    raw = im.body.ptr ? im.body.ptr : "";
                    len = im.body.len;
                    curl_easy_setopt(im.c, CURLOPT_FORBID_REUSE, 1L); /* may be out of step */
                }
                if (im.over) { /* over the size limit: the ingest quarantines it */
                    raw = im.trace.ptr ? im.trace.ptr : "";
                    len = (size_t) cfg->lmtp_max_size + 1;
                    if (im.trace.len < len)
                        len = im.trace.len;
                }
                raw = kf_pool_strndup(pool, raw, len);
            }
            kf_email_result res;
            if ((rc = kf_email_ingest_raw(db, mb->name, raw, len, "imap", &res, &err)) != KF_OK) {
                *why = kf_pool_printf(pool, "ingest: %s", err ? err : "failed");
                failed = 1;
                break;
            }
            done++;
            fetched++;
            duplicates += res.duplicate != 0;
            quarantined += res.quarantined != 0;
        }
        if (done > 0) {
            kf_str ds = KF_STR_INIT;
            for (unsigned j = 0; j < done; j++)
                kf_str_printf(&ds, "%s%" PRIu64, j ? "," : "", uids[i + j]);
            if (mb->done && *mb->done)
                cmd = kf_pool_printf(pool, "UID MOVE %s \"%s\"", ds.ptr, mb->done);
            else
                cmd = kf_pool_printf(pool, "UID STORE %s +FLAGS.SILENT (\\Seen)", ds.ptr);
            kf_str_free(&ds);
            const char *ferr = NULL;
            if (request(&im, furl, cmd, &ferr, pool) != KF_OK)
                kf_log(KF_LOG_WARN, "email", "event=imap-flag-failed mailbox=\"%s\" uids=%s "
                       "reason=\"%s\"", mb->name, uidset, ferr);
            int src = set_state(db, mb->name, 0, uids[i + done - 1], 0, NULL, &err);
            if (src != KF_OK) {
                *why = err;
                rc = src;
                goto out;
            }
            mb->last_uid = uids[i + done - 1];
        }
        if (failed)
            goto out;
    }
    if (n == BATCH && !kf_job_stopping(job) && time(NULL) - began < POLL_BUDGET)
        goto more;
out:
    if (fetched > 0)
        kf_log(KF_LOG_INFO, "email", "event=imap-polled mailbox=\"%s\" fetched=%u duplicate=%u "
               "quarantined=%u last_uid=%" PRIu64, mb->name, fetched, duplicates, quarantined,
               mb->last_uid);
    curl_easy_cleanup(im.c);
    kf_str_free(&im.body);
    kf_str_free(&im.trace);
    return rc;
}

/* Split imap://host:port/Folder into base "imap://host:port/" and folder. */
static int
split_url(kf_pool *pool, struct mbox *mb)
{
    const char *u = mb->url;
    const char *sch = strstr(u, "://");
    if (sch == NULL || (strncasecmp(u, "imap://", 7) != 0 && strncasecmp(u, "imaps://", 8) != 0))
        return KF_EINVAL;
    const char *slash = strchr(sch + 3, '/');
    if (slash == NULL) {
        mb->base = kf_pool_printf(pool, "%s/", u);
        mb->folder = "INBOX";
    } else {
        mb->base = kf_pool_strndup(pool, u, (size_t) (slash - u) + 1);
        mb->folder = slash[1] ? kf_pool_strdup(pool, slash + 1) : "INBOX";
    }
    for (const char *p = mb->folder; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char) *p < 0x20)
            return KF_EINVAL;
    return KF_OK;
}

static int
imap_tick(kf_job *job, kf_db *db, const char **error_r)
{
    const kf_config *cfg = job->arg;
    kf_stmt *st;
    int rc;
    struct mbox boxes[32];
    unsigned n = 0;
    kf_pool *pool = kf_pool_create(8192);

    if ((rc = kf_db_stmt(db, "email.imap_due",
                         "SELECT name, imap_url, imap_user, imap_secret_ref, imap_done_folder, "
                         "COALESCE(imap_uidvalidity, 0), imap_last_uid, poll_interval "
                         "FROM email_mailbox WHERE enabled = 1 AND imap_url IS NOT NULL "
                         "AND (imap_polled_at IS NULL OR imap_polled_at <= NOW(6) - INTERVAL "
                         "poll_interval SECOND) ORDER BY imap_polled_at LIMIT 32",
                         &st, error_r)) != KF_OK ||
        (rc = kf_stmt_exec(st, error_r)) != KF_OK) {
        kf_pool_destroy(&pool);
        return rc;
    }
    unsigned ttl[32];
    while (n < 32 && (rc = kf_stmt_fetch(st, error_r)) == 1) {
        struct mbox *m = &boxes[n];
        m->name = kf_stmt_col_str(st, 0, pool, NULL);
        m->url = kf_stmt_col_str(st, 1, pool, NULL);
        m->user = kf_stmt_col_str(st, 2, pool, NULL);
        m->secret_ref = kf_stmt_col_str(st, 3, pool, NULL);
        m->done = kf_stmt_col_str(st, 4, pool, NULL);
        m->uidvalidity = kf_stmt_col_u64(st, 5);
        m->last_uid = kf_stmt_col_u64(st, 6);
        ttl[n] = (unsigned) kf_stmt_col_u64(st, 7) * 3 + 60;
        n++;
    }
    kf_stmt_done(st);
    if (rc < 0) {
        kf_pool_destroy(&pool);
        return KF_EDB;
    }
    for (unsigned i = 0; i < n && !kf_job_stopping(job); i++) {
        struct mbox *m = &boxes[i];
        char lease[140];
        int held = 0;
        const char *why = NULL;
        snprintf(lease, sizeof(lease), "imap:%s", m->name);
        if (kf_job_lease(db, lease, ttl[i], &held, error_r) != KF_OK || !held)
            continue;
        if (split_url(pool, m) != KF_OK)
            why = "imap_url: expected imap://host[:port]/Folder or imaps://...";
        else
            poll_one(job, db, pool, cfg, m, &why);
        if (why)
            kf_log(KF_LOG_WARN, "email", "event=imap-poll-failed mailbox=\"%s\" reason=\"%s\"",
                   m->name, why);
        const char *err = NULL;
        set_state(db, m->name, 0, 0, 0, why, &err);
    }
    kf_pool_destroy(&pool);
    return KF_OK;
}

static kf_job imap_job;

void
kf_email_imap_add(kf_scheduler *s, const kf_config *cfg)
{
    imap_job = (kf_job){.name = "email-imap", .period_ms = 1000, .batch = BATCH, .tick = imap_tick,
                        .arg = (void *) cfg};
    kf_scheduler_add(s, &imap_job);
}
