/*
 * webform.c - what the web form and portal handlers share: the assets
 * (page templates, language catalogues, static files) and the form-token
 * key, loaded once; the parsed configuration; page rendering with the
 * security headers every page carries; CORS; rate limits.
 *
 * Assets are read once, by the first request that needs them, on a worker
 * thread (never on an I/O thread), and served from memory afterwards: they
 * are a few kilobytes.  A change to a file needs a restart, like any
 * configuration.
 *
 * The form-token key (channels/webform/form_token.c) lives in the database
 * (kefu_meta 'webform_form_key'), made by whichever instance needs it
 * first, so that every kefud behind a load balancer accepts the forms the
 * others rendered.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#include "kefu/auth.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/log.h"
#include "kefu/pool.h"
#include "webform_internal.h"

/* ---- assets ---- */

static const struct {
    const char *name, *path, *ctype;
} asset_files[] = {
    /* page templates ({{>name}} finds them by name) */
    {"head", "support/head.html", NULL},
    {"foot", "support/foot.html", NULL},
    {"new", "support/new.html", NULL},
    {"submitted", "support/submitted.html", NULL},
    {"ticket", "support/ticket.html", NULL},
    {"requests", "support/requests.html", NULL},
    {"signin", "support/signin.html", NULL},
    {"message", "support/message.html", NULL},
    /* static files, served as /support/static/<name> (embed.js as /support/embed.js) */
    {"portal.css", "support/static/portal.css", "text/css; charset=utf-8"},
    {"form.js", "support/static/form.js", "text/javascript; charset=utf-8"},
    {"embed.js", "support/embed.js", "text/javascript; charset=utf-8"},
};

#define N_ASSETS (sizeof(asset_files) / sizeof(asset_files[0]))

static pthread_mutex_t state_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int loaded, keyed;
    wf_asset assets[N_ASSETS];
    json_t *catalogues[2]; /* kf_webform_langs order */
    wf_category *categories;
    size_t n_categories;
    unsigned char key[KF_FORM_KEY_LEN];
} st;

static void
state_free(void)
{
    for (size_t i = 0; i < N_ASSETS; i++)
        free(st.assets[i].data);
    for (size_t i = 0; i < KF_ARRAY_LEN(st.catalogues); i++)
        json_decref(st.catalogues[i]);
    for (size_t i = 0; i < st.n_categories; i++) {
        free(st.categories[i].slug);
        free(st.categories[i].label);
    }
    free(st.categories);
    sodium_memzero(st.key, sizeof(st.key));
    memset(&st, 0, sizeof(st));
}

static int
read_all(const char *path, char **data_r, size_t *len_r)
{
    FILE *f = fopen(path, "re");
    kf_str s = KF_STR_INIT;
    char buf[8192];
    size_t n;

    if (f == NULL)
        return -1;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0 && s.len < 4 * 1024 * 1024)
        kf_str_append(&s, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        kf_str_free(&s);
        return -1;
    }
    if (s.ptr == NULL)
        kf_str_append(&s, "", 0);
    *data_r = s.ptr;
    *len_r = s.len;
    return 0;
}

static void
categories_parse(const char *v)
{
    /* Validated by config.c: "slug:Label" items separated by commas. */
    size_t n = 1;
    for (const char *p = v; *p; p++)
        n += *p == ',';
    st.categories = kf_xcalloc(n, sizeof(*st.categories));
    for (const char *p = v; *p;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *colon = memchr(p, ':', (size_t)(end - p));
        if (colon != NULL) {
            wf_category *c = &st.categories[st.n_categories++];
            c->slug = kf_xstrndup(p, (size_t)(colon - p));
            c->label = kf_xstrndup(colon + 1, (size_t)(end - colon - 1));
        }
        if (comma == NULL)
            break;
        p = comma + 1;
    }
}

static int
assets_load(const kf_config *cfg, const char **error_r)
{
    static _Thread_local char why[512];

    for (size_t i = 0; i < N_ASSETS; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", cfg->web_dir, asset_files[i].path);
        st.assets[i].name = asset_files[i].name;
        st.assets[i].ctype = asset_files[i].ctype;
        if (read_all(path, &st.assets[i].data, &st.assets[i].len) != 0) {
            snprintf(why, sizeof(why), "web asset %.300s: %s", path, strerror(errno));
            *error_r = why;
            return KF_ERR;
        }
    }
    for (size_t i = 0; kf_webform_langs[i] != NULL; i++) {
        char path[4096];
        json_error_t je;
        snprintf(path, sizeof(path), "%s/i18n/%s.json", cfg->web_dir, kf_webform_langs[i]);
        st.catalogues[i] = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(st.catalogues[i])) {
            snprintf(why, sizeof(why), "catalogue %.300s: %.150s (line %d)", path, je.text,
                     je.line);
            *error_r = why;
            return KF_ERR;
        }
    }
    categories_parse(cfg->webform_categories);
    return KF_OK;
}

/* The key shared by all instances: made by the first, read by every other. */
static int
key_load(kf_db *db, const char **error_r)
{
    unsigned char fresh[KF_FORM_KEY_LEN];
    char hex[2 * KF_FORM_KEY_LEN + 1];
    size_t bin_len = 0;
    kf_stmt *stmt;
    int rc;

    randombytes_buf(fresh, sizeof(fresh));
    sodium_bin2hex(hex, sizeof(hex), fresh, sizeof(fresh));
    sodium_memzero(fresh, sizeof(fresh));
    if ((rc = kf_db_stmt(db, "webform.key_make",
                         "INSERT IGNORE INTO kefu_meta (k, v) VALUES ('webform_form_key', ?)",
                         &stmt, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(stmt, 0, hex);
    sodium_memzero(hex, sizeof(hex));
    if ((rc = kf_stmt_exec(stmt, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_db_stmt(db, "webform.key_get",
                         "SELECT v FROM kefu_meta WHERE k = 'webform_form_key'", &stmt, error_r)) !=
        KF_OK)
        return rc;
    if ((rc = kf_stmt_exec(stmt, error_r)) != KF_OK || (rc = kf_stmt_fetch(stmt, error_r)) < 0)
        return rc;
    if (rc == 0) {
        *error_r = "webform_form_key vanished";
        return KF_EDB;
    }
    kf_pool *pool = kf_pool_create(256);
    size_t len = 0;
    char *v = kf_stmt_col_str(stmt, 0, pool, &len);
    kf_stmt_done(stmt);
    rc = sodium_hex2bin(st.key, sizeof(st.key), v, len, NULL, &bin_len, NULL);
    sodium_memzero(v, len);
    kf_pool_destroy(&pool);
    if (rc != 0 || bin_len != sizeof(st.key)) {
        *error_r = "kefu_meta webform_form_key is not 64 hex digits";
        return KF_EDB;
    }
    return KF_OK;
}

int
wf_ready(kf_call *c, const char **error_r)
{
    int rc = KF_OK;

    pthread_mutex_lock(&state_mtx);
    if (!st.loaded) {
        if ((rc = assets_load(c->cfg, error_r)) == KF_OK) {
            st.loaded = 1;
            atexit(state_free);
        } else {
            state_free();
        }
    }
    if (rc == KF_OK && !st.keyed && c->db != NULL) {
        if ((rc = key_load(c->db, error_r)) == KF_OK)
            st.keyed = 1;
    }
    pthread_mutex_unlock(&state_mtx);
    return rc;
}

const unsigned char *
wf_key(void)
{
    return st.key;
}

const json_t *
wf_catalogue(const char *lang)
{
    for (size_t i = 0; kf_webform_langs[i] != NULL; i++)
        if (strcmp(kf_webform_langs[i], lang) == 0)
            return st.catalogues[i];
    return st.catalogues[0];
}

const char *
wf_tr(const char *lang, const char *key)
{
    const char *s = json_string_value(json_object_get(wf_catalogue(lang), key));
    return s ? s : key;
}

const wf_asset *
wf_static(const char *name)
{
    for (size_t i = 0; i < N_ASSETS; i++)
        if (st.assets[i].ctype != NULL && strcmp(st.assets[i].name, name) == 0)
            return &st.assets[i];
    return NULL;
}

static const char *
template_get(void *arg, const char *name, size_t *len_r)
{
    (void)arg;
    for (size_t i = 0; i < N_ASSETS; i++)
        if (st.assets[i].ctype == NULL && strcmp(st.assets[i].name, name) == 0) {
            *len_r = st.assets[i].len;
            return st.assets[i].data;
        }
    return NULL;
}

const wf_category *
wf_categories(size_t *n_r)
{
    *n_r = st.n_categories;
    return st.categories;
}

const wf_category *
wf_category_find(const char *slug)
{
    for (size_t i = 0; slug != NULL && i < st.n_categories; i++)
        if (strcmp(st.categories[i].slug, slug) == 0)
            return &st.categories[i];
    return NULL;
}

const char *
wf_category_label(const char *lang, const wf_category *cat)
{
    char key[96];
    snprintf(key, sizeof(key), "category.%s", cat->slug);
    const char *s = json_string_value(json_object_get(wf_catalogue(lang), key));
    return s ? s : cat->label;
}

/* ---- request helpers ---- */

int64_t
wf_now(void)
{
    return (int64_t)time(NULL);
}

const char *
wf_cookie(kf_call *c, const char *name)
{
    size_t len = 0;
    for (unsigned i = 0; i < c->n_headers; i++) {
        if (strcasecmp(c->headers[i].key, "Cookie") != 0)
            continue;
        const char *v = kf_cookie_get(c->headers[i].value, name, &len);
        if (v != NULL)
            return kf_pool_strndup(c->pool, v, len);
    }
    return NULL;
}

const char *
wf_lang(kf_call *c, const char *form_lang, int *explicit_r)
{
    const char *q = kf_call_query(c, "lang"), *l;

    if (explicit_r != NULL)
        *explicit_r = 0;
    if (q != NULL && (l = kf_webform_lang_match(q, strlen(q))) != NULL) {
        if (explicit_r != NULL)
            *explicit_r = 1;
        return l;
    }
    if (form_lang != NULL && (l = kf_webform_lang_match(form_lang, strlen(form_lang))) != NULL)
        return l;
    if ((q = wf_cookie(c, WF_LANG_COOKIE)) != NULL && (l = kf_webform_lang_match(q, strlen(q))))
        return l;
    if ((l = kf_webform_lang_negotiate(kf_call_header(c, "Accept-Language"))) != NULL)
        return l;
    return kf_webform_langs[0];
}

const char *
wf_base_url(kf_call *c)
{
    const char *b = c->cfg->public_base_url;
    if (b != NULL && b[0] != '\0') {
        size_t n = strlen(b);
        while (n > 0 && b[n - 1] == '/')
            n--;
        return kf_pool_strndup(c->pool, b, n);
    }
    return kf_pool_printf(c->pool, "http://%s", c->cfg->listen);
}

const char *
wf_form_token(kf_call *c, const char *purpose, const char *binding)
{
    char *tok = kf_pool_alloc(c->pool, KF_FORM_TOKEN_MAX);
    kf_form_token_make(wf_key(), purpose, binding, wf_now(), tok);
    return tok;
}

const char *
wf_time_display(kf_pool *pool, const char *iso)
{
    if (iso == NULL || strlen(iso) < 16)
        return iso ? iso : "";
    return kf_pool_printf(pool, "%.10s %.5s UTC", iso, iso + 11);
}

const char *
wf_size_text(kf_pool *pool, uint64_t bytes)
{
    if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) == 0)
        return kf_pool_printf(pool, "%llu MB", (unsigned long long)(bytes / (1024 * 1024)));
    if (bytes >= 1024 * 1024)
        return kf_pool_printf(pool, "%.1f MB", (double)bytes / (1024.0 * 1024.0));
    return kf_pool_printf(pool, "%llu KB", (unsigned long long)((bytes + 1023) / 1024));
}

/* ---- pages ---- */

void
wf_page_init(wf_page *pg, kf_call *c, const char *lang, int set_lang_cookie, const char *self_path)
{
    memset(pg, 0, sizeof(*pg));
    pg->c = c;
    pg->lang = lang;
    pg->set_lang_cookie = set_lang_cookie;
    pg->self_path = self_path;
    pg->ctx = json_object();
}

static void
set_lang_switch(wf_page *pg)
{
    json_t *langs = json_array();
    const char *sep = strchr(pg->self_path, '?') ? "&" : "?";
    for (size_t i = 0; kf_webform_langs[i] != NULL; i++) {
        const char *code = kf_webform_langs[i];
        char key[32];
        snprintf(key, sizeof(key), "lang.%s", code);
        json_array_append_new(
            langs,
            json_pack("{s:s, s:s, s:s, s:b}", "code", code, "label", wf_tr(code, key), "href",
                      kf_pool_printf(pg->c->pool, "%s%slang=%s", pg->self_path, sep, code),
                      "current", strcmp(code, pg->lang) == 0));
    }
    json_object_set_new(pg->ctx, "langs", langs);
}

/*
 * Every page: strict CSP (scripts and styles only from us, no inline
 * anything); referrers only to ourselves (portal URLs carry tokens, and a
 * link in a message must not hand one to another site; "no-referrer" would
 * also make browsers send "Origin: null" with our own forms).
 */
static void
security_headers(kf_call *c, kf_reply *out, const char *frame_ancestors)
{
    kf_reply_header(out, c, "Content-Security-Policy",
                    kf_pool_printf(c->pool,
                                   "default-src 'none'; script-src 'self'; style-src 'self'; "
                                   "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                                   "base-uri 'none'; frame-ancestors %s",
                                   frame_ancestors ? frame_ancestors : "'none'"));
    kf_reply_header(out, c, "Referrer-Policy", "same-origin");
}

int
wf_page_reply(wf_page *pg, kf_reply *out, int status, const char *name, const char *title_key)
{
    kf_call *c = pg->c;
    const char *tmpl, *error = NULL;
    size_t len = 0;
    kf_str html = KF_STR_INIT;
    int rc;

    json_object_set_new(pg->ctx, "lang", json_string(pg->lang));
    json_object_set_new(pg->ctx, "title", json_string(wf_tr(pg->lang, title_key)));
    set_lang_switch(pg);
    if ((tmpl = template_get(NULL, name, &len)) == NULL) {
        json_decref(pg->ctx);
        pg->ctx = NULL;
        return kf_reply_internal(out, c, "no such page template");
    }
    rc = kf_tmpl_render(&html, tmpl, len, pg->ctx, wf_catalogue(pg->lang), template_get, NULL,
                        &error);
    json_decref(pg->ctx);
    pg->ctx = NULL;
    if (rc != KF_OK) {
        kf_str_free(&html);
        return kf_reply_internal(out, c, error);
    }
    kf_reply_text(out, c, status, "text/html; charset=utf-8", html.ptr, html.len);
    kf_str_free(&html);
    security_headers(c, out, pg->frame_ancestors);
    kf_reply_header(out, c, "Content-Language", pg->lang);
    if (pg->set_lang_cookie)
        kf_reply_header(out, c, "Set-Cookie",
                        kf_pool_printf(c->pool,
                                       WF_LANG_COOKIE "=%s; Path=/support; "
                                                      "Max-Age=31536000; SameSite=Lax%s",
                                       pg->lang, c->cfg->cookie_secure ? "; Secure" : ""));
    return 0;
}

int
wf_message_page(kf_call *c, kf_reply *out, int status, const char *lang, const char *title_key,
                const char *text_key)
{
    wf_page pg;
    wf_page_init(&pg, c, lang, 0, "/support/new");
    json_object_set_new(pg.ctx, "text", json_string(wf_tr(lang, text_key)));
    return wf_page_reply(&pg, out, status, "message", title_key);
}

int
wf_not_found(kf_call *c, kf_reply *out, const char *lang)
{
    return wf_message_page(c, out, 404, lang, "notfound.title", "notfound.text");
}

int
wf_redirect(kf_call *c, kf_reply *out, const char *location)
{
    kf_reply_text(out, c, 303, "text/plain; charset=utf-8", "", 0);
    kf_reply_header(out, c, "Location", location);
    kf_reply_header(out, c, "Referrer-Policy", "same-origin");
    return 0;
}

/* ---- CORS ---- */

/* scheme://host[:port] of an absolute URL, into the pool. */
static const char *
origin_of(kf_pool *pool, const char *url)
{
    const char *p = strstr(url, "://");
    if (p == NULL)
        return NULL;
    p += 3;
    return kf_pool_strndup(pool, url, (size_t)(p - url) + strcspn(p, "/?#"));
}

int
wf_origin_allowed(kf_call *c, const char **origin_r)
{
    const char *origin = kf_call_header(c, "Origin"), *host = kf_call_header(c, "Host");
    const char *list = c->cfg->webform_cors_origins, *base;
    size_t n;

    *origin_r = NULL;
    /* No Origin: not a browser's cross-origin request.  "null" (an opaque origin: sandboxed
     * frames, some privacy settings) says nothing either way; the form token decides. */
    if (origin == NULL || strcmp(origin, "null") == 0)
        return 1;
    /* Same origin: the page came from us. */
    const char *sep = strstr(origin, "://");
    if (sep != NULL && host != NULL && strcasecmp(sep + 3, host) == 0)
        return 1;
    if ((base = origin_of(c->pool, wf_base_url(c))) != NULL && strcasecmp(base, origin) == 0)
        return 1;
    n = strlen(origin);
    for (const char *p = list; p != NULL && *p;) {
        size_t k = strcspn(p, " ,");
        if (k == n && strncasecmp(p, origin, n) == 0) {
            *origin_r = origin;
            return 1;
        }
        p += k;
        p += strspn(p, " ,");
    }
    return 0;
}

void
wf_cors_headers(kf_call *c, kf_reply *out, const char *origin)
{
    kf_reply_header(out, c, "Vary", "Origin");
    if (origin != NULL)
        kf_reply_header(out, c, "Access-Control-Allow-Origin", origin);
}

/* ---- rate limits ---- */

struct rate_tx {
    const char *key;
    unsigned window;
    unsigned hits, left;
};

static int
rate_tx(kf_db *db, void *arg, const char **error_r)
{
    struct rate_tx *t = arg;
    kf_stmt *stmt;
    int rc;

    /* A new window starts when the old one is over; assignments run left to right. */
    if ((rc = kf_db_stmt(db, "webform.rate_hit",
                         "INSERT INTO webform_rate (k, hits, window_start) VALUES (?, 1, NOW(6)) "
                         "ON DUPLICATE KEY UPDATE "
                         "hits = IF(window_start <= NOW(6) - INTERVAL ? SECOND, 1, hits + 1), "
                         "window_start = IF(window_start <= NOW(6) - INTERVAL ? SECOND, NOW(6), "
                         "window_start)",
                         &stmt, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(stmt, 0, t->key);
    kf_stmt_bind_u64(stmt, 1, t->window);
    kf_stmt_bind_u64(stmt, 2, t->window);
    if ((rc = kf_stmt_exec(stmt, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_db_stmt(db, "webform.rate_get",
                         "SELECT hits, GREATEST(1, ? - TIMESTAMPDIFF(SECOND, window_start, "
                         "NOW(6))) FROM webform_rate WHERE k = ?",
                         &stmt, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(stmt, 0, t->window);
    kf_stmt_bind_cstr(stmt, 1, t->key);
    if ((rc = kf_stmt_exec(stmt, error_r)) != KF_OK || (rc = kf_stmt_fetch(stmt, error_r)) < 0)
        return rc;
    t->hits = rc == 1 ? (unsigned)kf_stmt_col_u64(stmt, 0) : 1;
    t->left = rc == 1 ? (unsigned)kf_stmt_col_i64(stmt, 1) : t->window;
    kf_stmt_done(stmt);
    return KF_OK;
}

int
wf_rate_hit(kf_db *db, const char *key, unsigned limit, unsigned window, unsigned *retry_after_r,
            const char **error_r)
{
    struct rate_tx t = {.key = key, .window = window};
    int rc;

    *retry_after_r = 0;
    if (limit == 0)
        return KF_OK;
    if ((rc = kf_tx_run(db, rate_tx, &t, error_r)) != KF_OK)
        return rc;
    if (t.hits > limit) {
        *retry_after_r = t.left ? t.left : 1;
        return KF_EBUSY;
    }
    return KF_OK;
}

void
wf_housekeeping(kf_db *db, const kf_config *cfg)
{
    const char *error = NULL;
    kf_stmt *stmt;

    if (randombytes_uniform(64) != 0)
        return;
    if (kf_db_stmt(db, "webform.rate_purge",
                   "DELETE FROM webform_rate WHERE window_start < NOW(6) - INTERVAL ? SECOND "
                   "LIMIT 500",
                   &stmt, &error) == KF_OK) {
        kf_stmt_bind_u64(stmt, 0, (uint64_t)cfg->webform_rate_window + 60);
        kf_stmt_exec(stmt, &error);
    }
    if (kf_db_stmt(db, "webform.magic_purge",
                   "DELETE FROM portal_magic WHERE expires_at < NOW(6) - INTERVAL 1 DAY LIMIT 500",
                   &stmt, &error) == KF_OK)
        kf_stmt_exec(stmt, &error);
}
