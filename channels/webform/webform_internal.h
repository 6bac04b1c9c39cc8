/*
 * webform_internal.h - private to channels/webform/: the module's shared
 * state (assets, catalogues, the form-token key, parsed configuration),
 * page rendering, rate limits and portal tokens.
 *
 * Threads:   worker threads.  The state is loaded once, by the first
 *            request that needs it (on a worker: reading files and the key
 *            never happens on an I/O thread), then read-only until exit.
 */
#ifndef KEFU_WEBFORM_INTERNAL_H
#define KEFU_WEBFORM_INTERNAL_H

#include <stdint.h>
#include <jansson.h>

#include "kefu/http.h"
#include "kefu/types.h"
#include "kefu/webform.h"

#define WF_TOKEN_MAX_AGE (24 * 3600) /* seconds a rendered form stays valid */
#define WF_SESSION_IDLE (24 * 3600)  /* "My requests" sign-in: inactivity that ends it */
#define WF_SESSION_MAX (7 * 24 * 3600)
#define WF_MAGIC_TTL (15 * 60) /* a sign-in link, usable once */
#define WF_TEXT_MAX 50000      /* bytes of a description or reply */
#define WF_LINE_MAX 200        /* bytes of a name or subject */
#define WF_SESSION_COOKIE "kefu_portal"
#define WF_LANG_COOKIE "kefu_lang"
#define WF_UPLOAD_MAX_BODY ((size_t)64 * 1024 * 1024)

typedef struct wf_category {
    char *slug;  /* queue slug the category routes to */
    char *label; /* fallback label when the catalogue has no "category.<slug>" */
} wf_category;

typedef struct wf_asset {
    const char *name;
    const char *ctype;
    char *data;
    size_t len;
} wf_asset;

/* ---- webform.c: state ---- */

/* Load templates, catalogues, static files and the form key (once). KF_OK or 500-worthy. */
int wf_ready(kf_call *c, const char **error_r);
const unsigned char *wf_key(void);
const json_t *wf_catalogue(const char *lang);
/** The catalogue's text for key in lang (the key itself when missing). */
const char *wf_tr(const char *lang, const char *key);
const wf_asset *wf_static(const char *name);
const wf_category *wf_categories(size_t *n_r);
const wf_category *wf_category_find(const char *slug);
/** Label of a category in lang. */
const char *wf_category_label(const char *lang, const wf_category *cat);

/* ---- webform.c: requests and pages ---- */

/** Language of this request: ?lang=, the form's lang field, the cookie, Accept-Language. */
const char *wf_lang(kf_call *c, const char *form_lang, int *explicit_r);
/** Cookie value by name (pool copy) or NULL. */
const char *wf_cookie(kf_call *c, const char *name);
/** "https://support.example.com" (public_base_url, else http://<listen>), no trailing '/'. */
const char *wf_base_url(kf_call *c);
int64_t wf_now(void);

typedef struct wf_page {
    kf_call *c;
    const char *lang;
    int set_lang_cookie;
    const char *self_path;       /* where the language switcher points (a GET page) */
    const char *frame_ancestors; /* NULL = 'none' */
    json_t *ctx;                 /* owned; freed by wf_page_reply */
} wf_page;

void wf_page_init(wf_page *pg, kf_call *c, const char *lang, int set_lang_cookie,
                  const char *self_path);
/* Render template name into out with status, HTML security headers, title from title_key. */
int wf_page_reply(wf_page *pg, kf_reply *out, int status, const char *name, const char *title_key);
/* A page with a heading and a paragraph from the catalogue (errors, notices). */
int wf_message_page(kf_call *c, kf_reply *out, int status, const char *lang, const char *title_key,
                    const char *text_key);
/* The one answer to an unknown, expired, used or revoked link: same bytes for all. */
int wf_not_found(kf_call *c, kf_reply *out, const char *lang);
/* 303 See Other to a path of ours. */
int wf_redirect(kf_call *c, kf_reply *out, const char *location);
/* A fresh form token for purpose/binding. */
const char *wf_form_token(kf_call *c, const char *purpose, const char *binding);
/* "25 MB", "1.5 MB", "100 KB" (pool). */
const char *wf_size_text(kf_pool *pool, uint64_t bytes);
/* "2026-11-30 04:15 UTC" from an ISO-8601 time (pool). */
const char *wf_time_display(kf_pool *pool, const char *iso);

/* CORS: the Origin header when it is allowed (same origin or allow-listed), else NULL. */
int wf_origin_allowed(kf_call *c, const char **origin_r);
/* Add Access-Control-Allow-Origin / Vary for an allowed Origin. */
void wf_cors_headers(kf_call *c, kf_reply *out, const char *origin);

/* ---- webform.c: rate limits ---- */

/*
 * Count one attempt against key (fixed window of window seconds).  KF_OK
 * while within limit; KF_EBUSY when over it, with the seconds until the
 * window ends in *retry_after_r.  limit 0 = unlimited (no database work).
 */
int wf_rate_hit(kf_db *db, const char *key, unsigned limit, unsigned window,
                unsigned *retry_after_r, const char **error_r);
/* Now and then: forget old rate-limit windows and spent sign-in links. */
void wf_housekeeping(kf_db *db, const kf_config *cfg);

/* ---- portal.c: tokens ---- */

/* A portal link or session token (43 base64url characters) and its SHA-256 hex. */
typedef struct wf_secret {
    char token[44];
    char hash[65];
} wf_secret;

void wf_secret_new(wf_secret *s);
/** 1 when s looks like one of our tokens (so a lookup is worth doing). */
int wf_token_shape_ok(const char *s);

/* Store a token: kind "ticket" (ticket_id set) or "session". */
int wf_portal_token_add(kf_db *db, const char *kind, const char *hash, uint64_t customer_id,
                        uint64_t ticket_id, const char **error_r);
/*
 * Find a live token of kind: not revoked, used within idle seconds (and,
 * when max_age is not 0, created within it).  Touches last_used_at.
 * KF_ENOTFOUND for anything else.
 */
int wf_portal_token_find(kf_db *db, const char *kind, const char *token, unsigned idle,
                         unsigned max_age, uint64_t *customer_id_r, uint64_t *ticket_id_r,
                         const char **error_r);
int wf_portal_token_revoke(kf_db *db, const char *token, const char **error_r);

#endif /* KEFU_WEBFORM_INTERNAL_H */
