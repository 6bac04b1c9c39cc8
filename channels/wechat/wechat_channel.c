/*
 * wechat_channel.c - the WeChat channel: the webhook /hooks/wechat/{account},
 * the "wechat" outbox adapter and the channel's jobs.
 *
 * A push is handled in four steps, all on the worker that got it:
 *   1. check   the timestamp window, the signature (msg_signature over the
 *              ciphertext when encrypted), AES and the receive id: 403 and
 *              nothing stored when any of it fails; the XML: 400;
 *   2. ingest  one transaction: kf_ingest_tx() (dedupe on the MsgId through
 *              inbound_receipt, customer by OpenID, the customer's latest
 *              ticket on this account, else a new one), the follower row,
 *              media to fetch; events instead go to wechat_event, deduped
 *              on FromUserName|CreateTime|Event;
 *   3. commit  only then is WeChat answered, so a push it retries is never
 *              lost; a retry finds the receipt and changes nothing;
 *   4. answer  "success", or a passive reply (welcome message, menu reply,
 *              auto reply), encrypted when the push was.
 * WeChat waits five seconds for that answer; media are fetched afterwards by
 * the wechat-media job.
 *
 * Outbound, deliver() runs on the outbox job thread: the recipient's OpenID
 * (or WeCom UserID), the shared access token (wechat_api.c) and one
 * customer-service send per part (the text, then each file: media/upload,
 * then an image or file message), retried once with a fresh token when
 * WeChat says the token is stale.  Each part WeChat accepted is recorded in
 * wechat_sent_part at once, so a retried row sends only the rest.  45015
 * (outside the 48-hour window) and 45047 (too many messages) are permanent:
 * the outbox dead-letters the row with an event the agent sees.  Which files
 * an account can carry is files_ok()'s to say, before the answer is stored.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "kefu/channel.h"
#include "kefu/config.h"
#include "kefu/customer.h"
#include "kefu/db.h"
#include "kefu/event.h"
#include "kefu/ingest.h"
#include "kefu/job.h"
#include "kefu/log.h"
#include "kefu/attachment.h"
#include "kefu/server.h"
#include "kefu/ticket.h"
#include "wechat_internal.h"

#define WINDOW_48H_S (48 * 3600)
#define TOKEN_MARGIN_S 60         /* a token this close to expiring is not used */
#define TOKEN_REFRESH_EARLY_S 300 /* the token job renews tokens this early */
#define MEDIA_LEASE_S 120
#define MEDIA_MAX_ATTEMPTS 5
#define MEDIA_BATCH 8
#define API_JSON_MAX (64 * 1024)

static double
mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* ---- accounts ---- */

int
kf_wechat_key_ok(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > KF_WECHAT_KEY_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char) key[i]) && key[i] != '_' && key[i] != '-')
            return 0;
    return 1;
}

int
kf_wechat_account_get(kf_db *db, kf_pool *pool, const char *key, kf_wechat_account *a,
                      const char **error_r)
{
    kf_stmt *st;
    int rc;

    memset(a, 0, sizeof(*a));
    if ((rc = kf_db_stmt(db, "wechat.account_get",
                         "SELECT w.id, w.account_key, w.kind, w.name, w.app_id, "
                         " COALESCE(w.agent_id, 0), w.token, w.encoding_aes_key, "
                         " w.previous_aes_key, w.secret_ref, w.mode, w.api_base, "
                         " COALESCE(w.timestamp_window, 0), w.timestamp_window IS NULL, "
                         " w.auto_reply, w.welcome_message, w.menu_replies, w.enabled, "
                         " COALESCE(c.default_queue_id, 0) "
                         "FROM wechat_account w LEFT JOIN channel_account c "
                         " ON c.channel = 'wechat' AND c.account = w.account_key "
                         "WHERE w.account_key = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, key);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK || (rc = kf_stmt_fetch(st, error_r)) < 0)
        return rc;
    if (rc == 0)
        return KF_ENOTFOUND;
    a->id = kf_stmt_col_u64(st, 0);
    a->key = kf_stmt_col_str(st, 1, pool, NULL);
    a->kind = kf_stmt_col_str(st, 2, pool, NULL);
    a->name = kf_stmt_col_str(st, 3, pool, NULL);
    a->app_id = kf_stmt_col_str(st, 4, pool, NULL);
    a->agent_id = kf_stmt_col_u64(st, 5);
    a->token = kf_stmt_col_str(st, 6, pool, NULL);
    a->aes_key = kf_stmt_col_str(st, 7, pool, NULL);
    a->prev_aes_key = kf_stmt_col_str(st, 8, pool, NULL);
    a->secret_ref = kf_stmt_col_str(st, 9, pool, NULL);
    a->mode = kf_stmt_col_str(st, 10, pool, NULL);
    a->api_base = kf_stmt_col_str(st, 11, pool, NULL);
    a->timestamp_window = kf_stmt_col_i64(st, 13) ? -1 : (int) kf_stmt_col_i64(st, 12);
    a->auto_reply = kf_stmt_col_str(st, 14, pool, NULL);
    a->welcome_message = kf_stmt_col_str(st, 15, pool, NULL);
    a->menu_replies = kf_stmt_col_str(st, 16, pool, NULL);
    a->enabled = kf_stmt_col_i64(st, 17) != 0;
    a->default_queue_id = kf_stmt_col_u64(st, 18);
    kf_stmt_done(st);
    if (a->api_base == NULL || *a->api_base == '\0')
        a->api_base =
            strcmp(a->kind, "wecom") == 0 ? WX_DEFAULT_API_WECOM : WX_DEFAULT_API_OFFICIAL;
    return KF_OK;
}

/*
 * A short-lived cache of accounts, so a burst of pushes does not read the
 * same row thousands of times a second.  An entry lives ACCOUNT_TTL_S; an
 * admin change in this process drops every entry at once (another
 * instance's change is seen within the TTL).
 */
#define ACCOUNT_SLOTS 32
#define ACCOUNT_TTL_S 1.0

struct cached_account {
    char key[KF_WECHAT_KEY_MAX + 1];
    double fetched;
    unsigned generation;
    int found;
    kf_pool *pool; /* owns the strings of a */
    kf_wechat_account a;
};

static pthread_mutex_t cache_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct cached_account cache[ACCOUNT_SLOTS];
static atomic_uint cache_generation;

void
kf_wechat_account_changed(void)
{
    atomic_fetch_add(&cache_generation, 1);
}

static const char *
dup_or_null(kf_pool *pool, const char *s)
{
    return s != NULL ? kf_pool_strdup(pool, s) : NULL;
}

static void
account_copy(kf_pool *pool, kf_wechat_account *dst, const kf_wechat_account *src)
{
    *dst = *src;
    dst->key = dup_or_null(pool, src->key);
    dst->kind = dup_or_null(pool, src->kind);
    dst->name = dup_or_null(pool, src->name);
    dst->app_id = dup_or_null(pool, src->app_id);
    dst->token = dup_or_null(pool, src->token);
    dst->aes_key = dup_or_null(pool, src->aes_key);
    dst->prev_aes_key = dup_or_null(pool, src->prev_aes_key);
    dst->secret_ref = dup_or_null(pool, src->secret_ref);
    dst->mode = dup_or_null(pool, src->mode);
    dst->api_base = dup_or_null(pool, src->api_base);
    dst->auto_reply = dup_or_null(pool, src->auto_reply);
    dst->welcome_message = dup_or_null(pool, src->welcome_message);
    dst->menu_replies = dup_or_null(pool, src->menu_replies);
}

static void
cache_free(void)
{
    for (size_t i = 0; i < ACCOUNT_SLOTS; i++)
        kf_pool_destroy(&cache[i].pool);
}

/* kf_wechat_account_get() through the cache (the webhook's hot path). */
static int
account_cached(kf_db *db, kf_pool *pool, const char *key, kf_wechat_account *a,
               const char **error_r)
{
    unsigned h = 5381, gen = atomic_load(&cache_generation);
    double now = mono();
    int rc;

    for (const char *p = key; *p; p++)
        h = h * 33 + (unsigned char) *p;
    struct cached_account *e = &cache[h % ACCOUNT_SLOTS];

    pthread_mutex_lock(&cache_mtx);
    if (e->pool != NULL && e->generation == gen && now - e->fetched < ACCOUNT_TTL_S &&
        strcmp(e->key, key) == 0) {
        rc = e->found ? KF_OK : KF_ENOTFOUND;
        if (e->found)
            account_copy(pool, a, &e->a);
        pthread_mutex_unlock(&cache_mtx);
        return rc;
    }
    pthread_mutex_unlock(&cache_mtx);

    rc = kf_wechat_account_get(db, pool, key, a, error_r);
    if (rc != KF_OK && rc != KF_ENOTFOUND)
        return rc;
    pthread_mutex_lock(&cache_mtx);
    kf_pool_destroy(&e->pool);
    e->pool = kf_pool_create(1024);
    snprintf(e->key, sizeof(e->key), "%s", key);
    e->fetched = now;
    e->generation = gen;
    e->found = rc == KF_OK;
    if (e->found)
        account_copy(e->pool, &e->a, a);
    pthread_mutex_unlock(&cache_mtx);
    return rc;
}

static int
is_wecom(const kf_wechat_account *a)
{
    return strcmp(a->kind, "wecom") == 0;
}

/* ---- checking and opening callbacks ---- */

int
kf_wechat_verify_url(kf_pool *pool, const kf_wechat_account *a, const kf_wechat_query *q,
                     const char **echo_r, const char **why_r)
{
    unsigned char key[32];

    if (q->timestamp == NULL || q->nonce == NULL || q->echostr == NULL) {
        *why_r = "timestamp, nonce and echostr are required";
        return 403;
    }
    if (!is_wecom(a)) {
        /* Official Accounts, every mode: the 3-part signature, echostr as is. */
        const char *parts[] = {a->token, q->timestamp, q->nonce};
        if (!kf_wechat_signature_ok(parts, 3, q->signature)) {
            *why_r = "bad signature";
            return 403;
        }
        *echo_r = q->echostr;
        return 0;
    }
    /* WeCom: msg_signature over the encrypted echostr, then decrypt it. */
    const char *parts[] = {a->token, q->timestamp, q->nonce, q->echostr};
    if (!kf_wechat_signature_ok(parts, 4, q->msg_signature)) {
        *why_r = "bad msg_signature";
        return 403;
    }
    const char *keys[] = {a->aes_key, a->prev_aes_key};
    const char *error = "the account has no EncodingAESKey";
    for (size_t i = 0; i < KF_ARRAY_LEN(keys); i++) {
        char *msg;
        size_t len;
        if (keys[i] == NULL || kf_wechat_aes_key(keys[i], key, &error) != KF_OK)
            continue;
        if (kf_wechat_decrypt(pool, key, q->echostr, strlen(q->echostr), a->app_id, &msg, &len,
                              &error) == KF_OK) {
            *echo_r = msg;
            return 0;
        }
    }
    *why_r = error;
    return 403;
}

/* The JSON data format: the first character that is not white space is '{'. */
static int
starts_json(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    return i < len && s[i] == '{';
}

int
kf_wechat_open_push(kf_pool *pool, const kf_wechat_account *a, const kf_wechat_query *q,
                    const char *body, size_t len, kf_wechat_push *p, const char **why_r)
{
    const char *error = NULL;

    memset(p, 0, sizeof(*p));
    p->encrypted = is_wecom(a) || (q->encrypt_type != NULL && strcmp(q->encrypt_type, "aes") == 0);
    if (q->timestamp == NULL || q->nonce == NULL) {
        *why_r = "timestamp and nonce are required";
        return 403;
    }

    /* 1. Plaintext: the 3-part signature (it does not cover the body). */
    if (!p->encrypted) {
        const char *parts[] = {a->token, q->timestamp, q->nonce};
        if (strcmp(a->mode, "safe") == 0) {
            *why_r = "a plaintext push to an account in safe mode";
            return 403;
        }
        if (!kf_wechat_signature_ok(parts, 3, q->signature)) {
            *why_r = "bad signature";
            return 403;
        }
        if (kf_wechat_doc_parse(pool, body, len, &p->x, &error) != KF_OK) {
            *why_r = error;
            return 400;
        }
        p->json = starts_json(body, len);
        return 0;
    }

    /* 2. Encrypted: the envelope, msg_signature over its Encrypt text. */
    kf_wechat_xml env;
    if (kf_wechat_doc_parse(pool, body, len, &env, &error) != KF_OK) {
        *why_r = error;
        return 400;
    }
    const char *enc = kf_wechat_xml_get(&env, "Encrypt");
    if (enc == NULL || *enc == '\0') {
        *why_r = "no Encrypt element";
        return 400;
    }
    const char *parts[] = {a->token, q->timestamp, q->nonce, enc};
    if (!kf_wechat_signature_ok(parts, 4, q->msg_signature)) {
        *why_r = "bad msg_signature";
        return 403;
    }

    /* 3. Decrypt with the current key, else the previous one (rotation). */
    const char *keys[] = {a->aes_key, a->prev_aes_key};
    char *plain = NULL;
    size_t plen = 0;
    error = "the account has no EncodingAESKey";
    for (size_t i = 0; i < KF_ARRAY_LEN(keys) && plain == NULL; i++) {
        const char *e2 = NULL;
        if (keys[i] == NULL || kf_wechat_aes_key(keys[i], p->key, &e2) != KF_OK)
            continue;
        if (kf_wechat_decrypt(pool, p->key, enc, strlen(enc), a->app_id, &plain, &plen, &e2) !=
            KF_OK) {
            plain = NULL;
            if (i == 0 || error == NULL)
                error = e2;
        }
    }
    if (plain == NULL) {
        *why_r = error;
        return 403;
    }

    /* 4. The message itself: only the decrypted copy counts (compat mode too). */
    if (kf_wechat_doc_parse(pool, plain, plen, &p->x, &error) != KF_OK) {
        *why_r = error;
        return 400;
    }
    p->json = starts_json(plain, plen);
    return 0;
}

char *
kf_wechat_seal_reply(kf_pool *pool, const kf_wechat_account *a, const kf_wechat_push *p,
                     const char *nonce, long long now, const char *plain_xml)
{
    char *enc, ts[24], sig[41];

    if (!p->encrypted)
        return kf_pool_strdup(pool, plain_xml);
    if (kf_wechat_encrypt(pool, p->key, NULL, plain_xml, strlen(plain_xml), a->app_id, &enc) !=
        KF_OK)
        return NULL;
    snprintf(ts, sizeof(ts), "%lld", now);
    const char *parts[] = {a->token, ts, nonce, enc};
    kf_wechat_signature(parts, 4, sig);
    return kf_wechat_envelope(pool, enc, sig, ts, nonce);
}

/* ---- the webhook ---- */

/* The first value of name in the query string, percent-decoded without form rules. */
static const char *
query_get(kf_call *c, const char *name)
{
    const char *qs = c->query;
    size_t nl = strlen(name);

    while (qs != NULL && *qs) {
        const char *amp = strchr(qs, '&');
        size_t len = amp ? (size_t) (amp - qs) : strlen(qs);
        const char *eq = memchr(qs, '=', len);
        size_t kl = eq ? (size_t) (eq - qs) : len;
        if (kl == nl && memcmp(qs, name, nl) == 0)
            return eq ? kf_url_decode(c->pool, eq + 1, len - kl - 1, 0) : "";
        qs = amp ? amp + 1 : NULL;
    }
    return NULL;
}

static void
query_read(kf_call *c, kf_wechat_query *q)
{
    q->timestamp = query_get(c, "timestamp");
    q->nonce = query_get(c, "nonce");
    q->signature = query_get(c, "signature");
    q->msg_signature = query_get(c, "msg_signature");
    q->encrypt_type = query_get(c, "encrypt_type");
    q->echostr = query_get(c, "echostr");
}

/* 0 when the timestamp is a number within the window (or the window is off). */
static int
timestamp_check(const kf_config *cfg, const kf_wechat_account *a, const char *ts,
                const char **why_r)
{
    unsigned window = a->timestamp_window >= 0 ? (unsigned) a->timestamp_window
                                               : cfg->wechat_timestamp_window;
    size_t n = ts ? strlen(ts) : 0;

    if (n == 0 || n > 12 || strspn(ts, "0123456789") != n) {
        *why_r = "timestamp must be a number of seconds";
        return 403;
    }
    if (window == 0)
        return 0;
    long long t = strtoll(ts, NULL, 10), now = (long long) time(NULL);
    if (t < now - (long long) window || t > now + (long long) window) {
        *why_r = "timestamp outside the accepted window";
        return 403;
    }
    return 0;
}

static int
reject(kf_call *c, kf_reply *out, const char *account, int status, const char *why)
{
    char shown_a[80], shown_w[200];
    kf_log(KF_LOG_INFO, "wechat", "event=rejected account=%s status=%d reason=\"%s\" req=%s",
           kf_printable(shown_a, sizeof(shown_a), account, strlen(account)), status,
           kf_printable(shown_w, sizeof(shown_w), why, strlen(why)), c->request_id);
    return kf_reply_problem(out, c, status, status == 403 ? "wechat-forbidden" : "wechat-bad-push",
                            why, NULL);
}

/*
 * The customer_identity value for a sender.  An OpenID is itself (unique
 * per account and person).  A WeCom UserID is only unique within its
 * company, so it is prefixed with the CorpID; one that is not [A-Za-z0-9_-]
 * is replaced by its SHA-1.
 */
static const char *
identity_for(kf_pool *pool, const kf_wechat_account *a, const char *user)
{
    const char *detail;
    if (!is_wecom(a))
        return kf_customer_identity_ok("wechat_openid", user, &detail) ? user : NULL;
    const char *v = kf_pool_printf(pool, "%s-%s", a->app_id, user);
    if (kf_customer_identity_ok("wechat_openid", v, &detail))
        return v;
    char hex[41];
    const char *parts[] = {user};
    kf_wechat_signature(parts, 1, hex);
    v = kf_pool_printf(pool, "%s-x%s", a->app_id, hex);
    return kf_customer_identity_ok("wechat_openid", v, &detail) ? v : NULL;
}

/* The message as text for the ticket, and the media to fetch. */
struct content {
    const char *text, *media_id, *media_kind, *format;
};

static void
message_content(kf_pool *pool, const char *type, const kf_wechat_xml *x, struct content *m)
{
    const char *v;
#define F(name) (kf_wechat_xml_get(x, name) ? kf_wechat_xml_get(x, name) : "")

    memset(m, 0, sizeof(*m));
    if (strcmp(type, "text") == 0) {
        m->text = *F("Content") ? F("Content") : "(empty message)";
    } else if (strcmp(type, "image") == 0) {
        v = F("PicUrl");
        m->text = *v ? kf_pool_printf(pool, "[image]\n%s", v) : "[image]";
        m->media_kind = "image";
    } else if (strcmp(type, "voice") == 0) {
        v = F("Recognition");
        m->text = *v ? kf_pool_printf(pool, "[voice] %s", v) : "[voice message]";
        m->media_kind = "voice";
        m->format = kf_wechat_xml_get(x, "Format");
    } else if (strcmp(type, "video") == 0 || strcmp(type, "shortvideo") == 0) {
        m->text = "[video]";
        m->media_kind = type;
    } else if (strcmp(type, "location") == 0) {
        m->text = kf_pool_printf(pool, "[location] %s (%s, %s)", F("Label"), F("Location_X"),
                                 F("Location_Y"));
    } else if (strcmp(type, "link") == 0) {
        m->text = kf_pool_printf(pool, "[link] %s\n%s\n%s", F("Title"), F("Description"), F("Url"));
    } else {
        m->text = kf_pool_printf(pool, "[%s message]", type);
    }
    if (m->media_kind != NULL) {
        m->media_id = kf_wechat_xml_get(x, "MediaId");
        if (m->media_id == NULL || *m->media_id == '\0' || strlen(m->media_id) > 255)
            m->media_id = NULL;
        if (m->format != NULL && strlen(m->format) > 16)
            m->format = NULL;
    }
#undef F
}

/*
 * The UnionID, when the push carries one (accounts bound to an Open
 * Platform account): it makes the same person on two accounts one customer.
 */
static const char *
unionid_of(const kf_wechat_xml *x)
{
    const char *u = kf_wechat_xml_get(x, "UnionId"), *detail;
    if (u == NULL)
        u = kf_wechat_xml_get(x, "UnionID");
    return u != NULL && kf_customer_identity_ok("wechat_unionid", u, &detail) ? u : NULL;
}

/* Threading: the customer's latest ticket on this account (ingest reopens or follows up). */
static int
wx_thread(kf_db *db, const kf_inbound *in, uint64_t customer_id, uint64_t *ticket_id_r,
          const char **error_r)
{
    kf_stmt *st;
    int rc;

    *ticket_id_r = 0;
    if ((rc = kf_db_stmt(db, "wechat.thread",
                         "SELECT id FROM ticket WHERE customer_id = ? AND channel = 'wechat' "
                         " AND channel_account = ? ORDER BY created_at DESC, id DESC LIMIT 1",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, customer_id);
    kf_stmt_bind_cstr(st, 1, in->channel_account);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK || (rc = kf_stmt_fetch(st, error_r)) < 0)
        return rc;
    if (rc == 1)
        *ticket_id_r = kf_stmt_col_u64(st, 0);
    kf_stmt_done(st);
    return KF_OK;
}

/* The follower row: the address for replies, and when they last wrote. */
static int
user_touch(kf_db *db, const char *account, const char *user, const char *identity, int subscribed,
           const char **error_r)
{
    kf_stmt *st;
    int rc;

    if ((rc = kf_db_stmt(db, "wechat.user_touch",
                         "INSERT INTO wechat_user (account_key, user_id, identity_value, "
                         " subscribed, last_in_at) VALUES (?, ?, ?, ?, NOW(6)) "
                         "ON DUPLICATE KEY UPDATE identity_value = VALUES(identity_value), "
                         " last_in_at = GREATEST(last_in_at, VALUES(last_in_at)), "
                         " subscribed = COALESCE(VALUES(subscribed), subscribed)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, account);
    kf_stmt_bind_cstr(st, 1, user);
    kf_stmt_bind_cstr(st, 2, identity);
    if (subscribed < 0)
        kf_stmt_bind_null(st, 3);
    else
        kf_stmt_bind_i64(st, 3, subscribed);
    return kf_stmt_exec(st, error_r);
}

/*
 * Followers this process wrote a wechat_user row for lately: their
 * last_in_at is at most TOUCH_FRESH_S old, so a burst of messages from one
 * follower does not rewrite the same row each time (the 48-hour window
 * does not need better than a minute).  Filled after the commit only.
 */
#define TOUCH_SLOTS 1024
#define TOUCH_FRESH_S 60.0

static pthread_mutex_t touch_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct {
    uint64_t hash;
    double at;
} touched[TOUCH_SLOTS];

static uint64_t
touch_hash(const char *account, const char *user)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a over "account\0user" */
    for (const char *p = account; *p; p++)
        h = (h ^ (unsigned char) *p) * 1099511628211ull;
    h = (h ^ 0) * 1099511628211ull;
    for (const char *p = user; *p; p++)
        h = (h ^ (unsigned char) *p) * 1099511628211ull;
    return h | 1; /* never 0, the empty slot */
}

static int
touch_fresh(uint64_t h)
{
    pthread_mutex_lock(&touch_mtx);
    int fresh = touched[h % TOUCH_SLOTS].hash == h &&
                mono() - touched[h % TOUCH_SLOTS].at < TOUCH_FRESH_S;
    pthread_mutex_unlock(&touch_mtx);
    return fresh;
}

static void
touch_note(uint64_t h)
{
    pthread_mutex_lock(&touch_mtx);
    touched[h % TOUCH_SLOTS].hash = h;
    touched[h % TOUCH_SLOTS].at = mono();
    pthread_mutex_unlock(&touch_mtx);
}

struct push_tx {
    kf_inbound in;
    const char *user;
    struct content m;
    int touch_fresh;      /* the follower row was written lately: leave it */
    kf_ingest_result res; /* out */
};

static int
push_tx(kf_db *db, void *arg, const char **error_r)
{
    struct push_tx *t = arg;
    kf_stmt *st;
    int rc;

    if ((rc = kf_ingest_tx(db, &t->in, &t->res, error_r)) != KF_OK)
        return rc;
    if (t->res.duplicate)
        return KF_OK; /* a retry of a push we have: nothing else to do */
    if (!t->touch_fresh && (rc = user_touch(db, t->in.channel_account, t->user,
                                            t->in.identity_value, -1, error_r)) != KF_OK)
        return rc;
    if (t->m.media_id == NULL)
        return KF_OK;
    if ((rc = kf_db_stmt(db, "wechat.media_add",
                         "INSERT IGNORE INTO wechat_media (account_key, media_id, kind, format, "
                         " ticket_id, message_id) VALUES (?, ?, ?, ?, ?, ?)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->in.channel_account);
    kf_stmt_bind_cstr(st, 1, t->m.media_id);
    kf_stmt_bind_cstr(st, 2, t->m.media_kind);
    kf_stmt_bind_cstr(st, 3, t->m.format);
    kf_stmt_bind_u64(st, 4, t->res.ticket_id);
    kf_stmt_bind_u64(st, 5, t->res.message_id);
    return kf_stmt_exec(st, error_r);
}

struct event_tx {
    const char *account, *user, *identity, *unionid, *event, *key, *dedupe;
    int subscribed;     /* 1 subscribe, 0 unsubscribe, -1 neither */
    int duplicate;      /* out */
    uint64_t customer_id;
};

static int
event_tx(kf_db *db, void *arg, const char **error_r)
{
    struct event_tx *t = arg;
    kf_customer_who who = {
        .kind = "wechat_openid", .value = t->identity, .unionid = t->unionid};
    kf_stmt *st;
    int created = 0, rc;

    t->duplicate = 0;
    if ((rc = kf_db_stmt(db, "wechat.event_add",
                         "INSERT IGNORE INTO wechat_event (account_key, dedupe_key, user_id, "
                         " event, event_key) VALUES (?, ?, ?, ?, ?)",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, t->account);
    kf_stmt_bind_cstr(st, 1, t->dedupe);
    kf_stmt_bind_cstr(st, 2, t->user);
    kf_stmt_bind_cstr(st, 3, t->event);
    kf_stmt_bind_cstr(st, 4, t->key);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if (kf_stmt_affected(st) == 0) {
        t->duplicate = 1;
        return KF_OK;
    }
    uint64_t event_id = kf_stmt_insert_id(st);
    if ((rc = kf_customer_resolve(db, &who, &t->customer_id, &created, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_db_stmt(db, "wechat.event_customer",
                         "UPDATE wechat_event SET customer_id = ? WHERE id = ?", &st, error_r)) !=
        KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, t->customer_id);
    kf_stmt_bind_u64(st, 1, event_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = user_touch(db, t->account, t->user, t->identity, t->subscribed, error_r)) != KF_OK)
        return rc;
    const char *kind = t->subscribed == 1   ? "wechat.subscribed"
                       : t->subscribed == 0 ? "wechat.unsubscribed"
                                            : "wechat.event";
    json_t *d = json_pack("{s:s, s:s, s:s?, s:I, s:b}", "account", t->account, "event", t->event,
                          "event_key", t->key, "customer_id", (json_int_t) t->customer_id,
                          "customer_created", created);
    rc = kf_event_add(db, 0, kind, KF_ACTOR_CUSTOMER, t->customer_id, d, NULL, error_r);
    json_decref(d);
    return rc;
}

/* "success", or the passive reply (encrypted like the push). */
static int
answer(kf_call *c, kf_reply *out, const kf_wechat_account *a, const kf_wechat_query *q,
       const kf_wechat_push *p, const char *to, const char *content)
{
    if (content == NULL || *content == '\0' || p->json)
        return kf_reply_text(out, c, 200, "text/plain; charset=utf-8", "success", 7);
    const char *from = kf_wechat_xml_get(&p->x, "ToUserName");
    long long now = (long long) time(NULL);
    char *xml = kf_wechat_reply_text(c->pool, to, from ? from : a->app_id, now, content);
    char *sealed = kf_wechat_seal_reply(c->pool, a, p, q->nonce, now, xml);
    if (sealed == NULL)
        return kf_reply_text(out, c, 200, "text/plain; charset=utf-8", "success", 7);
    return kf_reply_text(out, c, 200, "application/xml; charset=utf-8", sealed, strlen(sealed));
}

/* The menu's reply for a CLICK key, from the account's menu_replies object. */
static const char *
menu_reply(kf_pool *pool, const kf_wechat_account *a, const char *key)
{
    json_t *m;
    const char *v, *r = NULL;
    if (key == NULL || a->menu_replies == NULL)
        return NULL;
    if ((m = json_loads(a->menu_replies, 0, NULL)) == NULL)
        return NULL;
    if ((v = json_string_value(json_object_get(m, key))) != NULL)
        r = kf_pool_strdup(pool, v);
    json_decref(m);
    return r;
}

/* {number} in the auto reply becomes the ticket number. */
static const char *
auto_reply(kf_pool *pool, const kf_wechat_account *a, uint64_t ticket_id)
{
    const char *tpl = a->auto_reply, *at;
    char number[32];
    kf_str s = KF_STR_INIT;

    if (tpl == NULL || *tpl == '\0')
        return NULL;
    kf_ticket_number(ticket_id, number, sizeof(number));
    while ((at = strstr(tpl, "{number}")) != NULL) {
        kf_str_append(&s, tpl, (size_t) (at - tpl));
        kf_str_puts(&s, number);
        tpl = at + 8;
    }
    kf_str_puts(&s, tpl);
    char *r = kf_pool_strndup(pool, s.ptr, s.len);
    kf_str_free(&s);
    return r;
}

static int
on_event(kf_call *c, kf_reply *out, const kf_wechat_account *a, const kf_wechat_query *q,
         const kf_wechat_push *p, const char *user, const char *identity)
{
    const char *ev = kf_wechat_xml_get(&p->x, "Event");
    const char *ct = kf_wechat_xml_get(&p->x, "CreateTime");
    const char *key = kf_wechat_xml_get(&p->x, "EventKey"), *error = NULL;
    static const char *const kept[] = {"subscribe", "unsubscribe", "scan", "click", "view"};
    int keep = 0;

    if (ev == NULL || *ev == '\0' || strlen(ev) > 64)
        return reject(c, out, a->key, 400, "an event push without a valid Event");
    for (size_t i = 0; i < KF_ARRAY_LEN(kept); i++)
        keep |= strcasecmp(ev, kept[i]) == 0;
    if (!keep) /* LOCATION reports, template results ...: acknowledged, not kept */
        return answer(c, out, a, q, p, user, NULL);
    if (key != NULL && strlen(key) > 512)
        key = kf_pool_strndup(c->pool, key, 512);

    struct event_tx t = {
        .account = a->key,
        .user = user,
        .identity = identity,
        .unionid = unionid_of(&p->x),
        .event = ev,
        .key = key && *key ? key : NULL,
        .dedupe = kf_pool_printf(c->pool, "%.128s|%.20s|%.32s", user, ct ? ct : "", ev),
        .subscribed = strcasecmp(ev, "subscribe") == 0     ? 1
                      : strcasecmp(ev, "unsubscribe") == 0 ? 0
                                                           : -1,
    };
    int rc = kf_tx_run(c->db, event_tx, &t, &error);
    if (rc == KF_EINVAL)
        return reject(c, out, a->key, 400, error ? error : "invalid event");
    if (rc != KF_OK)
        return kf_reply_internal(out, c, error);
    if (t.subscribed == 1)
        return answer(c, out, a, q, p, user, a->welcome_message);
    if (strcasecmp(ev, "click") == 0)
        return answer(c, out, a, q, p, user, menu_reply(c->pool, a, key));
    return answer(c, out, a, q, p, user, NULL);
}

static int
on_message(kf_call *c, kf_reply *out, const kf_wechat_account *a, const kf_wechat_query *q,
           const kf_wechat_push *p, const char *type, const char *user, const char *identity)
{
    const char *msgid = kf_wechat_xml_get(&p->x, "MsgId");
    const char *ct = kf_wechat_xml_get(&p->x, "CreateTime"), *error = NULL;
    struct push_tx t;

    memset(&t, 0, sizeof(t));
    message_content(c->pool, type, &p->x, &t.m);
    /* MsgId is 64-bit: kept as text, never as a double. */
    if (msgid != NULL && *msgid && strlen(msgid) <= 64)
        t.in.external_id = msgid;
    else
        t.in.external_id = kf_pool_printf(c->pool, "nomsgid:%.128s:%.20s:%.32s", user,
                                          ct ? ct : "", type);
    t.user = user;
    t.in.channel = "wechat";
    t.in.channel_account = a->key;
    t.in.identity_kind = "wechat_openid";
    t.in.identity_value = identity;
    t.in.unionid = unionid_of(&p->x);
    t.in.text = t.m.text;
    t.in.text_len = strlen(t.m.text);
    t.in.thread_fn = wx_thread;
    uint64_t th = touch_hash(a->key, user);
    t.touch_fresh = touch_fresh(th);

    int rc = kf_tx_run(c->db, push_tx, &t, &error);
    if (rc == KF_EINVAL)
        return reject(c, out, a->key, 400, error ? error : "invalid message");
    if (rc != KF_OK)
        return kf_reply_internal(out, c, error);
    if (!t.res.duplicate && !t.touch_fresh)
        touch_note(th);
    if (!t.res.duplicate)
        kf_debug("wechat", "event=ingested account=%s ticket=%llu message=%llu created=%d req=%s",
                 a->key, (unsigned long long) t.res.ticket_id,
                 (unsigned long long) t.res.message_id, t.res.created_ticket, c->request_id);
    /* A retry gets the same reply as the first delivery. */
    return answer(c, out, a, q, p, user, auto_reply(c->pool, a, t.res.ticket_id));
}

/*
 * GET|POST /hooks/wechat/{account} - WeChat's URL verification and pushes.
 * Public: WeChat authenticates with the account's token and key, checked here.
 */
static int
h_hook(kf_call *c, kf_reply *out)
{
    const char *key = kf_call_param(c, "account"), *error = NULL, *why = NULL;
    kf_wechat_account a;
    kf_wechat_query q;
    kf_wechat_push p;
    int rc, st;

    if (key == NULL || !kf_wechat_key_ok(key))
        return kf_reply_problem(out, c, 404, "not-found", "No WeChat account here.", NULL);
    if (c->method == KF_POST && c->body_len > c->cfg->wechat_max_body)
        return kf_reply_problem(out, c, 413, "payload-too-large",
                                kf_pool_printf(c->pool, "A WeChat push may have at most %u bytes.",
                                               c->cfg->wechat_max_body),
                                NULL);
    rc = account_cached(c->db, c->pool, key, &a, &error);
    if (rc == KF_ENOTFOUND || (rc == KF_OK && !a.enabled))
        return kf_reply_problem(out, c, 404, "not-found", "No WeChat account here.", NULL);
    if (rc != KF_OK)
        return kf_reply_internal(out, c, error);

    /* 1. Check. */
    query_read(c, &q);
    if ((st = timestamp_check(c->cfg, &a, q.timestamp, &why)) != 0)
        return reject(c, out, a.key, st, why);
    if (c->method != KF_POST) {
        const char *echo = NULL;
        if ((st = kf_wechat_verify_url(c->pool, &a, &q, &echo, &why)) != 0)
            return reject(c, out, a.key, st, why);
        return kf_reply_text(out, c, 200, "text/plain; charset=utf-8", echo, strlen(echo));
    }
    if ((st = kf_wechat_open_push(c->pool, &a, &q, c->body, c->body_len, &p, &why)) != 0)
        return reject(c, out, a.key, st, why);

    const char *type = kf_wechat_xml_get(&p.x, "MsgType");
    const char *user = kf_wechat_xml_get(&p.x, "FromUserName");
    if (type == NULL || *type == '\0' || strlen(type) > 32 || user == NULL || *user == '\0' ||
        strlen(user) > 128)
        return reject(c, out, a.key, 400, "MsgType and FromUserName are required");
    const char *identity = identity_for(c->pool, &a, user);
    if (identity == NULL)
        return reject(c, out, a.key, 400, "FromUserName is not a WeChat user id");

    /* 2-4. Store, commit, answer. */
    if (strcmp(type, "event") == 0)
        return on_event(c, out, &a, &q, &p, user, identity);
    return on_message(c, out, &a, &q, &p, type, user, identity);
}

/* ---- outbound: the "wechat" adapter ---- */

struct wx_adapter {
    kf_channel super; /* first: (kf_channel *) <-> (struct wx_adapter *) */
    const kf_config *cfg;
};

/* The API address of the recipient: by identity on this account, else the ticket's customer's. */
static int
recipient(kf_db *db, kf_pool *pool, const kf_wechat_account *a, const kf_outbound *msg,
          const char **user_r, int *stale_r, const char **error_r)
{
    kf_stmt *st;
    int rc;

    *user_r = NULL;
    if (msg->target != NULL && *msg->target) {
        if ((rc = kf_db_stmt(db, "wechat.user_by_identity",
                             "SELECT user_id, last_in_at < NOW(6) - INTERVAL ? SECOND "
                             "FROM wechat_user WHERE identity_value = ? AND account_key = ? "
                             "ORDER BY last_in_at DESC LIMIT 1",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, WINDOW_48H_S);
        kf_stmt_bind_cstr(st, 1, msg->target);
        kf_stmt_bind_cstr(st, 2, a->key);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK || (rc = kf_stmt_fetch(st, error_r)) < 0)
            return rc;
        if (rc == 1) {
            *user_r = kf_stmt_col_str(st, 0, pool, NULL);
            *stale_r = kf_stmt_col_i64(st, 1) != 0;
        }
        kf_stmt_done(st);
        if (*user_r != NULL)
            return KF_OK;
    }
    if (msg->ticket_id == 0)
        return KF_OK;
    /* The target is another account's follower (a merged customer): look for ours. */
    if ((rc = kf_db_stmt(db, "wechat.user_by_ticket",
                         "SELECT u.user_id, u.last_in_at < NOW(6) - INTERVAL ? SECOND "
                         "FROM ticket t JOIN customer_identity i ON i.customer_id = t.customer_id "
                         " AND i.kind = 'wechat_openid' "
                         "JOIN wechat_user u ON u.identity_value = i.value AND u.account_key = ? "
                         "WHERE t.id = ? ORDER BY u.last_in_at DESC LIMIT 1",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, WINDOW_48H_S);
    kf_stmt_bind_cstr(st, 1, a->key);
    kf_stmt_bind_u64(st, 2, msg->ticket_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK || (rc = kf_stmt_fetch(st, error_r)) < 0)
        return rc;
    if (rc == 1) {
        *user_r = kf_stmt_col_str(st, 0, pool, NULL);
        *stale_r = kf_stmt_col_i64(st, 1) != 0;
    }
    kf_stmt_done(st);
    return KF_OK;
}

/* What to say: the payload's text, or an acknowledgement. */
static const char *
outbound_text(kf_pool *pool, const json_t *payload)
{
    const char *text = json_string_value(json_object_get(payload, "text"));
    const char *tpl = json_string_value(json_object_get(payload, "template"));
    const char *number = json_string_value(json_object_get(payload, "number"));

    if (text != NULL && *text)
        return text;
    if (tpl != NULL && strcmp(tpl, "ack") == 0 && number != NULL)
        return kf_pool_printf(pool, "We have received your message (ticket %s) and will reply "
                                    "soon.",
                              number);
    return NULL;
}

enum api_outcome { API_OK, API_TOKEN, API_RETRY, API_REJECT, API_MEDIA };

/* Classify a WeChat API answer (errcode) for a send or an upload. */
static int
classify(long long code, const char **hint_r)
{
    *hint_r = "";
    switch (code) {
    case 0:
        return API_OK;
    case 40001:
    case 40014:
    case 42001:
        *hint_r = " (the access token was refused)";
        return API_TOKEN;
    case 45015:
        *hint_r = " (the customer has not written in the last 48 hours: the customer-service "
                  "window is closed)";
        return API_REJECT;
    case 45047:
        *hint_r = " (too many messages since the customer last wrote)";
        return API_REJECT;
    case 40003:
    case 43004:
    case 46004:
    case 81013:
        *hint_r = " (the recipient cannot be reached: not a follower or not a member)";
        return API_REJECT;
    case 45002:
    case 40033:
    case 44002:
    case 47001:
        *hint_r = " (the message itself was refused)";
        return API_REJECT;
    case 40004: /* invalid media type */
    case 40005: /* invalid file type */
    case 40006: /* invalid file size */
    case 40009: /* invalid image size */
    case 41005: /* media data missing */
    case 44001: /* empty media data */
        *hint_r = " (the file was refused)";
        return API_REJECT;
    case 40007:
        *hint_r = " (the media_id is unknown or expired)";
        return API_MEDIA;
    case 45009:
    case 45011:
        *hint_r = " (API quota reached)";
        return API_RETRY;
    case -1:
        *hint_r = " (WeChat is busy)";
        return API_RETRY;
    default:
        return API_RETRY;
    }
}

/* A send's or upload's answer: the outcome, WeChat's words in *peer, its JSON in *root_r. */
static int
api_answer(kf_wechat_http *r, const char *media_key, kf_str *peer, json_t **root_r)
{
    const char *hint;
    char shown[200];

    *root_r = NULL;
    if (r->status != 200) {
        kf_str_printf(peer, "WeChat API: HTTP %ld", r->status);
        kf_str_free(&r->body);
        return API_RETRY;
    }
    json_t *root = json_loadb(r->body.ptr ? r->body.ptr : "", r->body.len, 0, NULL);
    kf_str_free(&r->body);
    /* An upload that worked has a media_id (Official Accounts: and no errcode). */
    const char *mid = media_key ? json_string_value(json_object_get(root, media_key)) : NULL;
    if (mid != NULL && *mid && json_integer_value(json_object_get(root, "errcode")) == 0) {
        *root_r = root;
        return API_OK;
    }
    if (root == NULL || !json_is_integer(json_object_get(root, "errcode"))) {
        kf_str_puts(peer, "WeChat API: the answer is not the expected JSON");
        json_decref(root);
        return API_RETRY;
    }
    long long code = json_integer_value(json_object_get(root, "errcode"));
    const char *msg = json_string_value(json_object_get(root, "errmsg"));
    const char *invalid = json_string_value(json_object_get(root, "invaliduser"));
    int out = classify(code, &hint);
    /* WeCom answers 0 and lists the members it could not reach. */
    if (out == API_OK && invalid != NULL && *invalid) {
        out = API_REJECT;
        hint = " (the member cannot receive messages from this app)";
    }
    /* An upload answered 0 without a media_id: nothing to send. */
    if (out == API_OK && media_key != NULL) {
        out = API_RETRY;
        hint = " (no media_id in the answer)";
    }
    kf_str_printf(peer, "errcode %lld %s%s", code,
                  kf_printable(shown, sizeof(shown), msg ? msg : "", msg ? strlen(msg) : 0), hint);
    *root_r = root;
    return out;
}

/* One send with a given token: the outcome, and WeChat's words in *peer. */
static int
send_once(const kf_config *cfg, kf_pool *pool, const kf_wechat_account *a, const char *token,
          const char *json, double deadline, kf_str *peer)
{
    char *tok = curl_easy_escape(NULL, token, 0);
    char *url = kf_pool_printf(pool, "%s/cgi-bin/message/%s?access_token=%s", a->api_base,
                               is_wecom(a) ? "send" : "custom/send", tok ? tok : "");
    const char *why = NULL;
    kf_wechat_http r;
    json_t *root;

    curl_free(tok);
    kf_str_reset(peer);
    if (kf_wechat_http_call(cfg, url, json, deadline, API_JSON_MAX, &r, &why, pool) != KF_OK) {
        kf_str_printf(peer, "WeChat API: %s", why);
        return API_RETRY;
    }
    int out = api_answer(&r, NULL, peer, &root);
    json_decref(root);
    return out;
}

/*
 * Files on replies (media/upload, then a message with the media_id).
 * Official Accounts' customer-service messages carry images (type image:
 * JPEG, PNG, GIF up to 10 MB); WeCom app messages images (JPEG, PNG up to
 * 10 MB) and files (type file: more than 5 bytes, up to 20 MB).  "MB" is
 * taken as 10^6 bytes, so nothing WeChat would refuse for its size goes out.
 */
#define WX_IMAGE_MAX 10000000u
#define WX_FILE_MAX 20000000u
#define WX_FILE_MIN 6u

/* The type without parameters equals want. */
static int
type_is(const char *type, const char *want)
{
    size_t n = strlen(want);
    return type != NULL && strncasecmp(type, want, n) == 0 &&
           (type[n] == '\0' || type[n] == ';' || type[n] == ' ');
}

/* How a file goes out on account a: "image", "file", or NULL (it cannot). */
static const char *
file_msgtype(const kf_wechat_account *a, const char *type, uint64_t size)
{
    int jpeg_png = type_is(type, "image/jpeg") || type_is(type, "image/png");
    if (!is_wecom(a))
        return (jpeg_png || type_is(type, "image/gif")) && size <= WX_IMAGE_MAX ? "image" : NULL;
    if (jpeg_png && size >= WX_FILE_MIN && size <= WX_IMAGE_MAX)
        return "image";
    return size >= WX_FILE_MIN && size <= WX_FILE_MAX ? "file" : NULL;
}

/* channel.h's files_ok: worker thread, inside the answer's transaction. */
static int
wx_files_ok(kf_channel *ch, kf_db *db, kf_pool *pool, const char *account, const json_t *files,
            const char **why_r, const char **error_r)
{
    kf_wechat_account a;
    kf_str names = KF_STR_INIT;
    const json_t *f;
    size_t i;

    (void) ch;
    *why_r = NULL;
    int rc = kf_wechat_account_get(db, pool, account, &a, error_r);
    if (rc == KF_ENOTFOUND) {
        *why_r = kf_pool_printf(pool, "There is no WeChat account called %s to send the files "
                                      "through.", account);
        return KF_OK;
    }
    if (rc != KF_OK)
        return rc;
    json_array_foreach(files, i, f) {
        const char *name = json_string_value(json_object_get(f, "filename"));
        const char *type = json_string_value(json_object_get(f, "content_type"));
        json_int_t size = json_integer_value(json_object_get(f, "size"));
        if (file_msgtype(&a, type, size < 0 ? 0 : (uint64_t) size) != NULL)
            continue;
        kf_str_printf(&names, "%s%s", names.len ? ", " : "", name && *name ? name : "attachment");
    }
    if (names.len == 0)
        return KF_OK;
    *why_r = is_wecom(&a)
        ? kf_pool_printf(pool, "WeCom apps receive images (JPEG, PNG up to 10 MB) and files "
                               "(more than 5 bytes, up to 20 MB) only: %s", names.ptr)
        : kf_pool_printf(pool, "WeChat Official Accounts receive images only (JPEG, PNG, GIF up "
                               "to 10 MB): %s", names.ptr);
    kf_str_free(&names);
    return KF_OK;
}

/*
 * The parts of a reply: 0 is the text, n the payload's n-th attachment.
 * Each one WeChat accepted has a wechat_sent_part row with sent_at, written
 * right after it did; a retried row sends only the parts without one.  A
 * file uploaded whose message did not go out yet has a row without sent_at:
 * its media_id is sent again while fresh (WeChat keeps it three days).
 */
#define MEDIA_REUSE_S (2 * 86400)

struct part_state {
    int sent;
    const char *msgtype, *media_id; /* uploaded on an earlier attempt and still fresh, or NULL */
};

static int
parts_load(kf_db *db, kf_pool *pool, uint64_t outbox_id, struct part_state *ps, size_t n,
           const char **error_r)
{
    kf_stmt *st;
    int rc;

    if ((rc = kf_db_stmt(db, "wechat.parts",
                         "SELECT part, sent_at IS NOT NULL, "
                         " IF(uploaded_at > NOW(6) - INTERVAL ? SECOND, media_id, NULL), msgtype "
                         "FROM wechat_sent_part WHERE outbox_id = ?",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, MEDIA_REUSE_S);
    kf_stmt_bind_u64(st, 1, outbox_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    while ((rc = kf_stmt_fetch(st, error_r)) == 1) {
        uint64_t p = kf_stmt_col_u64(st, 0);
        if (p >= n)
            continue;
        ps[p].sent = kf_stmt_col_i64(st, 1) != 0;
        ps[p].media_id = kf_stmt_col_str(st, 2, pool, NULL);
        ps[p].msgtype = kf_stmt_col_str(st, 3, pool, NULL);
    }
    kf_stmt_done(st);
    return rc < 0 ? rc : KF_OK;
}

struct part_row {
    uint64_t outbox_id;
    unsigned part;
    const char *msgtype, *media_id;
    int sent; /* 0: only uploaded */
};

static int
part_row_tx(kf_db *db, void *arg, const char **error_r)
{
    struct part_row *t = arg;
    kf_stmt *st;
    int rc;

    if (t->sent)
        rc = kf_db_stmt(db, "wechat.part_sent",
                        "INSERT INTO wechat_sent_part (outbox_id, part, msgtype, media_id, "
                        " sent_at) VALUES (?, ?, ?, ?, NOW(6)) "
                        "ON DUPLICATE KEY UPDATE msgtype = VALUES(msgtype), "
                        " media_id = VALUES(media_id), sent_at = NOW(6)",
                        &st, error_r);
    else
        rc = kf_db_stmt(db, "wechat.part_uploaded",
                        "INSERT INTO wechat_sent_part (outbox_id, part, msgtype, media_id, "
                        " uploaded_at) VALUES (?, ?, ?, ?, NOW(6)) "
                        "ON DUPLICATE KEY UPDATE msgtype = VALUES(msgtype), "
                        " media_id = VALUES(media_id), uploaded_at = NOW(6)",
                        &st, error_r);
    if (rc != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, t->outbox_id);
    kf_stmt_bind_u64(st, 1, t->part);
    kf_stmt_bind_cstr(st, 2, t->msgtype);
    kf_stmt_bind_cstr(st, 3, t->media_id);
    return kf_stmt_exec(st, error_r);
}

/* The bytes of attachment id (size bytes, in seq order): KF_OK, KF_ENOTFOUND (missing), KF_EDB. */
static int
attachment_bytes(kf_db *db, uint64_t id, uint64_t size, kf_str *data, const char **error_r)
{
    kf_stmt *st;
    int rc;

    if ((rc = kf_db_stmt(db, "wechat.out_chunks",
                         "SELECT data FROM attachment_chunk WHERE attachment_id = ? ORDER BY seq",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    while ((rc = kf_stmt_fetch(st, error_r)) == 1) {
        size_t n = 0;
        kf_pool *tmp = kf_pool_create(KF_ATTACHMENT_CHUNK + 1024);
        const char *chunk = kf_stmt_col_str(st, 0, tmp, &n);
        kf_str_append(data, chunk, n);
        kf_pool_destroy(&tmp);
    }
    kf_stmt_done(st);
    if (rc < 0)
        return rc;
    return data->len == size ? KF_OK : KF_ENOTFOUND;
}

/* One upload with a given token: the outcome; the media_id in *media_id_r when API_OK. */
static int
upload_once(const kf_config *cfg, kf_pool *pool, const kf_wechat_account *a, const char *token,
            const char *msgtype, const char *filename, const char *type, const kf_str *data,
            double deadline, kf_str *peer, const char **media_id_r)
{
    char *tok = curl_easy_escape(NULL, token, 0);
    char *url = kf_pool_printf(pool, "%s/cgi-bin/media/upload?access_token=%s&type=%s",
                               a->api_base, tok ? tok : "", msgtype);
    const char *why = NULL;
    kf_wechat_http r;
    json_t *root;

    curl_free(tok);
    kf_str_reset(peer);
    if (kf_wechat_http_upload(cfg, url, "media", filename, type, data->ptr, data->len, deadline,
                              API_JSON_MAX, &r, &why, pool) != KF_OK) {
        kf_str_printf(peer, "WeChat API (upload): %s", why);
        return API_RETRY;
    }
    int out = api_answer(&r, "media_id", peer, &root);
    if (out == API_OK)
        *media_id_r = kf_pool_strdup(pool, json_string_value(json_object_get(root, "media_id")));
    json_decref(root);
    return out;
}

/* The message JSON for a part (raw UTF-8, never \u escapes: 40033); free() it. */
static char *
part_json(const kf_wechat_account *a, const char *user, const char *msgtype, const char *text,
          const char *media_id)
{
    json_t *body = text != NULL
        ? json_pack("{s:s, s:s, s:{s:s}}", "touser", user, "msgtype", "text", "text", "content",
                    text)
        : json_pack("{s:s, s:s, s:{s:s}}", "touser", user, "msgtype", msgtype, msgtype,
                    "media_id", media_id);
    if (is_wecom(a))
        json_object_set_new(body, "agentid", json_integer((json_int_t) a->agent_id));
    char *json = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return json;
}

struct wx_send {
    const kf_config *cfg;
    const kf_outbound *msg;
    kf_pool *pool;
    const kf_wechat_account *a;
    const char *user, *token; /* token: the one last used, or NULL */
    kf_str *peer;
};

/*
 * Send part number part: the text, or a file (data != NULL): its upload
 * (unless *media_id_io holds one from an earlier attempt), recorded, then
 * the message.  A refused token is refreshed once; a media_id WeChat does
 * not know (40007: expired) is uploaded again once.
 */
static kf_deliver_status
send_part(struct wx_send *s, unsigned part, const char *msgtype, const char *text,
          const char *filename, const char *type, const kf_str *data, const char **media_id_io)
{
    const char *why = NULL, *bad = NULL, *media_id = *media_id_io, *error = NULL;
    int out = API_RETRY, refreshed = 0, reuploaded = 0;

    for (;;) {
        if (kf_wechat_token(s->msg->db, s->pool, s->cfg, s->a, bad, TOKEN_MARGIN_S,
                            s->msg->deadline, &s->token, &why) != KF_OK) {
            kf_str_reset(s->peer);
            kf_str_puts(s->peer, why);
            out = API_RETRY;
            break;
        }
        bad = NULL;
        if (data != NULL && media_id == NULL) {
            out = upload_once(s->cfg, s->pool, s->a, s->token, msgtype, filename, type, data,
                              s->msg->deadline, s->peer, &media_id);
            if (out == API_TOKEN && !refreshed) {
                refreshed = 1;
                bad = s->token;
                continue;
            }
            if (out != API_OK)
                break;
            /* Kept for a retry of the send; not critical when it cannot be written. */
            struct part_row pr = {.outbox_id = s->msg->id, .part = part, .msgtype = msgtype,
                                  .media_id = media_id};
            if (kf_tx_run(s->msg->db, part_row_tx, &pr, &error) != KF_OK)
                kf_log(KF_LOG_WARN, "wechat", "event=part-upload-unrecorded outbox=%llu part=%u "
                       "reason=\"%s\"", (unsigned long long) s->msg->id, part,
                       error ? error : "-");
        }
        char *json = part_json(s->a, s->user, msgtype, text, media_id);
        out = send_once(s->cfg, s->pool, s->a, s->token, json, s->msg->deadline, s->peer);
        free(json);
        if (out == API_TOKEN && !refreshed) {
            refreshed = 1;
            bad = s->token;
            continue;
        }
        if (out == API_MEDIA && data != NULL && !reuploaded) {
            reuploaded = 1;
            media_id = NULL;
            continue;
        }
        break;
    }
    *media_id_io = media_id;
    return out == API_OK ? KF_DELIVER_SENT : out == API_REJECT ? KF_DELIVER_REJECTED
                                                               : KF_DELIVER_RETRY;
}

/* Prefix *peer with which part it is about. */
static void
peer_about(kf_str *peer, const char *what)
{
    kf_str tmp = KF_STR_INIT;
    kf_str_printf(&tmp, "%s: %s", what, peer->ptr ? peer->ptr : "");
    kf_str_reset(peer);
    kf_str_append(peer, tmp.ptr, tmp.len);
    kf_str_free(&tmp);
}

static kf_deliver_status
wx_deliver(kf_channel *ch, const kf_outbound *msg, kf_str *peer)
{
    struct wx_adapter *ad = (struct wx_adapter *) ch;
    const kf_config *cfg = ad->cfg;
    kf_pool *pool = kf_pool_create(8192);
    kf_deliver_status ds = KF_DELIVER_RETRY;
    const char *error = NULL, *user = NULL;
    kf_wechat_account a;
    int stale = 0, rc;

    /* 1. The account, what to say and to whom. */
    if (msg->db == NULL) {
        kf_str_puts(peer, "the WeChat adapter needs the job thread's database connection");
        goto done;
    }
    rc = kf_wechat_account_get(msg->db, pool, msg->channel_account, &a, &error);
    if (rc == KF_ENOTFOUND || (rc == KF_OK && !a.enabled)) {
        kf_str_printf(peer, "no enabled WeChat account called %s", msg->channel_account);
        ds = KF_DELIVER_REJECTED;
        goto done;
    }
    if (rc != KF_OK) {
        kf_str_printf(peer, "database: %s", error ? error : "?");
        goto done;
    }
    const char *text = outbound_text(pool, msg->payload);
    const json_t *files = json_object_get(msg->payload, "attachments");
    size_t nfiles = json_is_array(files) ? json_array_size(files) : 0;
    if (text == NULL && nfiles == 0) {
        kf_str_printf(peer, "nothing to send: a %s without text", msg->kind);
        ds = KF_DELIVER_REJECTED;
        goto done;
    }
    if ((rc = recipient(msg->db, pool, &a, msg, &user, &stale, &error)) != KF_OK) {
        kf_str_printf(peer, "database: %s", error ? error : "?");
        goto done;
    }
    if (user == NULL) {
        kf_str_printf(peer, "the customer has never written to WeChat account %s", a.key);
        ds = KF_DELIVER_REJECTED;
        goto done;
    }
    if (stale && !is_wecom(&a)) {
        kf_str_puts(peer, "45015 predicted: the customer has not written in the last 48 hours "
                          "(the customer-service window is closed)");
        ds = KF_DELIVER_REJECTED;
        goto done;
    }
    if (is_wecom(&a) && a.agent_id == 0) {
        kf_str_printf(peer, "WeCom account %s has no agent_id", a.key);
        goto done;
    }

    /* 2. The parts WeChat already accepted on an earlier attempt. */
    size_t nparts = 1 + nfiles;
    struct part_state *ps = kf_pool_alloc(pool, nparts * sizeof(*ps));
    memset(ps, 0, nparts * sizeof(*ps));
    ps[0].sent = text == NULL;
    if (nfiles > 0 && parts_load(msg->db, pool, msg->id, ps, nparts, &error) != KF_OK) {
        kf_str_printf(peer, "database: %s", error ? error : "?");
        goto done;
    }

    /* 3. Each part not yet sent, in order; recorded as soon as WeChat accepts it. */
    struct wx_send s = {.cfg = cfg, .msg = msg, .pool = pool, .a = &a, .user = user,
                        .peer = peer};
    ds = KF_DELIVER_SENT;
    for (size_t i = 0; i < nparts && ds == KF_DELIVER_SENT; i++) {
        const char *media_id = ps[i].media_id, *msgtype = "text", *what = "the text";
        if (ps[i].sent)
            continue;
        if (i == 0) {
            ds = send_part(&s, 0, "text", text, NULL, NULL, NULL, &media_id);
        } else {
            const json_t *f = json_array_get(files, i - 1);
            uint64_t id = (uint64_t) json_integer_value(json_object_get(f, "id"));
            json_int_t size = json_integer_value(json_object_get(f, "size"));
            const char *name = json_string_value(json_object_get(f, "filename"));
            const char *type = json_string_value(json_object_get(f, "content_type"));
            kf_str data = KF_STR_INIT;
            if (name == NULL || *name == '\0')
                name = "attachment";
            what = kf_pool_printf(pool, "file %zu (%s)", i, name);
            msgtype = file_msgtype(&a, type, size < 0 ? 0 : (uint64_t) size);
            if (msgtype == NULL) {
                kf_str_reset(peer);
                kf_str_printf(peer, "%s: WeChat account %s cannot carry this file (%s, %lld "
                                    "bytes)", what, a.key, type ? type : "?", (long long) size);
                ds = KF_DELIVER_REJECTED;
                break;
            }
            rc = attachment_bytes(msg->db, id, (uint64_t) size, &data, &error);
            if (rc != KF_OK) {
                kf_str_reset(peer);
                if (rc == KF_ENOTFOUND)
                    kf_str_printf(peer, "%s is missing or incomplete", what);
                else
                    kf_str_printf(peer, "database: %s", error ? error : "?");
                ds = rc == KF_ENOTFOUND ? KF_DELIVER_REJECTED : KF_DELIVER_RETRY;
                kf_str_free(&data);
                break;
            }
            /* An earlier upload is sent only as what it was uploaded for. */
            if (media_id != NULL && (ps[i].msgtype == NULL || strcmp(ps[i].msgtype, msgtype) != 0))
                media_id = NULL;
            /* The sniffed type (attachment.h); never a header-breaking one. */
            if (type == NULL || strchr(type, '/') == NULL || strpbrk(type, "\r\n\"") != NULL)
                type = "application/octet-stream";
            ds = send_part(&s, (unsigned) i, msgtype, NULL, name, type, &data, &media_id);
            kf_str_free(&data);
        }
        if (ds != KF_DELIVER_SENT) {
            if (nparts > 1)
                peer_about(peer, what);
            break;
        }
        struct part_row pr = {.outbox_id = msg->id, .part = (unsigned) i, .msgtype = msgtype,
                              .media_id = media_id, .sent = 1};
        if (nparts > 1 && kf_tx_run(msg->db, part_row_tx, &pr, &error) != KF_OK) {
            /* Not recorded: stop here; the retry may send this part again. */
            kf_str_reset(peer);
            kf_str_printf(peer, "%s went out but could not be recorded (database: %s)", what,
                          error ? error : "?");
            ds = KF_DELIVER_RETRY;
            break;
        }
    }
done:
    kf_pool_destroy(&pool);
    return ds;
}

static const kf_channel_ops wx_ops = {.name = "wechat", .deliver = wx_deliver,
                                      .files_ok = wx_files_ok};
static struct wx_adapter adapter = {.super = {.ops = &wx_ops}};

/* ---- jobs: token renewal and media ---- */

/* Renew tokens that expire soon, so sends rarely wait for one. */
static int
token_tick(kf_job *job, kf_db *db, const char **error_r)
{
    const kf_config *cfg = job->arg;
    kf_pool *pool = kf_pool_create(4096);
    const char *keys[16];
    size_t n = 0;
    kf_stmt *st;
    int rc;

    if ((rc = kf_db_stmt(db, "wechat.token_due",
                         "SELECT t.account_key FROM wechat_token t JOIN wechat_account w "
                         " ON w.account_key = t.account_key AND w.enabled = 1 "
                         "WHERE t.access_token IS NOT NULL "
                         " AND t.expires_at < NOW(6) + INTERVAL ? SECOND "
                         " AND (t.refresh_until IS NULL OR t.refresh_until < NOW(6)) LIMIT 16",
                         &st, error_r)) != KF_OK)
        goto done;
    kf_stmt_bind_u64(st, 0, TOKEN_REFRESH_EARLY_S);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        goto done;
    while ((rc = kf_stmt_fetch(st, error_r)) == 1 && n < KF_ARRAY_LEN(keys))
        keys[n++] = kf_stmt_col_str(st, 0, pool, NULL);
    kf_stmt_done(st);
    if (rc < 0)
        goto done;
    rc = KF_OK;
    for (size_t i = 0; i < n && !kf_job_stopping(job); i++) {
        kf_wechat_account a;
        const char *tok, *why = NULL, *error = NULL;
        if (kf_wechat_account_get(db, pool, keys[i], &a, &error) != KF_OK)
            continue;
        (void) kf_wechat_token(db, pool, cfg, &a, NULL, TOKEN_REFRESH_EARLY_S,
                               mono() + cfg->wechat_api_timeout + 1.0, &tok, &why);
    }
done:
    kf_pool_destroy(&pool);
    return rc;
}

typedef struct media_row {
    uint64_t id, ticket_id, message_id;
    const char *account, *media_id, *kind, *format;
    unsigned attempts;
} media_row;

struct media_claim {
    kf_pool *pool;
    media_row rows[MEDIA_BATCH];
    size_t n;
};

static int
media_claim_tx(kf_db *db, void *arg, const char **error_r)
{
    struct media_claim *t = arg;
    kf_stmt *st;
    int rc;

    t->n = 0;
    /* An instance died mid-fetch: its rows are due again. */
    if ((rc = kf_db_stmt(db, "wechat.media_reclaim",
                         "UPDATE wechat_media SET status = 'queued', lease_owner = NULL, "
                         " lease_until = NULL WHERE status = 'fetching' AND lease_until < NOW(6)",
                         &st, error_r)) != KF_OK ||
        (rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_db_stmt(db, "wechat.media_due",
                         "SELECT id, account_key, media_id, kind, format, ticket_id, message_id, "
                         " attempts FROM wechat_media WHERE status = 'queued' "
                         " AND next_attempt_at <= NOW(6) ORDER BY next_attempt_at LIMIT ? "
                         "FOR UPDATE SKIP LOCKED",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, MEDIA_BATCH);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    while (t->n < MEDIA_BATCH && (rc = kf_stmt_fetch(st, error_r)) == 1) {
        media_row *r = &t->rows[t->n++];
        r->id = kf_stmt_col_u64(st, 0);
        r->account = kf_stmt_col_str(st, 1, t->pool, NULL);
        r->media_id = kf_stmt_col_str(st, 2, t->pool, NULL);
        r->kind = kf_stmt_col_str(st, 3, t->pool, NULL);
        r->format = kf_stmt_col_str(st, 4, t->pool, NULL);
        r->ticket_id = kf_stmt_col_u64(st, 5);
        r->message_id = kf_stmt_col_u64(st, 6);
        r->attempts = (unsigned) kf_stmt_col_u64(st, 7) + 1;
    }
    kf_stmt_done(st);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < t->n; i++) {
        if ((rc = kf_db_stmt(db, "wechat.media_lease",
                             "UPDATE wechat_media SET status = 'fetching', lease_owner = ?, "
                             " lease_until = NOW(6) + INTERVAL ? SECOND, attempts = attempts + 1 "
                             "WHERE id = ?",
                             &st, error_r)) != KF_OK)
            return rc;
        kf_stmt_bind_cstr(st, 0, kf_instance_id());
        kf_stmt_bind_u64(st, 1, MEDIA_LEASE_S);
        kf_stmt_bind_u64(st, 2, t->rows[i].id);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
    }
    return KF_OK;
}

struct media_settle {
    const media_row *r;
    const unsigned char *data;
    size_t len;
    const char *filename, *content_type, *error;
    int permanent; /* no point trying again */
};

static int
media_settle_tx(kf_db *db, void *arg, const char **error_r)
{
    struct media_settle *t = arg;
    const media_row *r = t->r;
    uint64_t att = 0;
    kf_stmt *st;
    int rc;

    if (t->data != NULL) {
        if ((rc = kf_ticket_add_attachment(db, r->ticket_id, r->message_id, t->filename,
                                           t->content_type, NULL, t->data, t->len, &att,
                                           error_r)) != KF_OK)
            return rc;
        json_t *d = json_pack("{s:I, s:s, s:s, s:I, s:I}", "attachment_id", (json_int_t) att,
                              "filename", t->filename, "content_type", t->content_type, "size",
                              (json_int_t) t->len, "message_id", (json_int_t) r->message_id);
        rc = kf_event_add(db, r->ticket_id, "attachment.added", KF_ACTOR_SYSTEM, 0, d, NULL,
                          error_r);
        json_decref(d);
        if (rc != KF_OK)
            return rc;
        rc = kf_db_stmt(db, "wechat.media_done",
                        "UPDATE wechat_media SET status = 'done', attachment_id = ?, "
                        " last_error = NULL, lease_owner = NULL, lease_until = NULL WHERE id = ?",
                        &st, error_r);
        if (rc != KF_OK)
            return rc;
        kf_stmt_bind_u64(st, 0, att);
        kf_stmt_bind_u64(st, 1, r->id);
        return kf_stmt_exec(st, error_r);
    }
    /* Failed: again later (10 s, 20 s, 40 s ...), or given up. */
    rc = kf_db_stmt(db, "wechat.media_failed",
                    "UPDATE wechat_media SET status = IF(? OR attempts >= ?, 'failed', 'queued'), "
                    " next_attempt_at = NOW(6) + INTERVAL (10 << LEAST(attempts, 8)) SECOND, "
                    " last_error = LEFT(?, 1000), lease_owner = NULL, lease_until = NULL "
                    "WHERE id = ?",
                    &st, error_r);
    if (rc != KF_OK)
        return rc;
    kf_stmt_bind_i64(st, 0, t->permanent);
    kf_stmt_bind_u64(st, 1, MEDIA_MAX_ATTEMPTS);
    kf_stmt_bind_cstr(st, 2, t->error);
    kf_stmt_bind_u64(st, 3, r->id);
    return kf_stmt_exec(st, error_r);
}

/* Fetch one medium: KF_OK with the bytes in r, or KF_ERR, *why_r and whether to give up. */
static int
media_fetch(kf_db *db, kf_pool *pool, const kf_config *cfg, const kf_wechat_account *a,
            const media_row *m, kf_wechat_http *r, const char **why_r, int *permanent_r)
{
    double deadline = mono() + cfg->wechat_api_timeout + 5.0;
    const char *token = NULL;

    for (int round = 0; round < 2; round++) {
        if (kf_wechat_token(db, pool, cfg, a, round ? token : NULL, TOKEN_MARGIN_S, deadline,
                            &token, why_r) != KF_OK)
            return KF_ERR;
        char *tok = curl_easy_escape(NULL, token, 0), *mid = curl_easy_escape(NULL, m->media_id, 0);
        char *url = kf_pool_printf(pool, "%s/cgi-bin/media/get?access_token=%s&media_id=%s",
                                   a->api_base, tok ? tok : "", mid ? mid : "");
        curl_free(tok);
        curl_free(mid);
        if (kf_wechat_http_call(cfg, url, NULL, deadline, cfg->attachment_max_bytes, r, why_r,
                                pool) != KF_OK) {
            *permanent_r = strstr(*why_r, "larger than") != NULL;
            return KF_ERR;
        }
        if (r->status != 200) {
            *why_r = kf_pool_printf(pool, "HTTP %ld", r->status);
            kf_str_free(&r->body);
            return KF_ERR;
        }
        /* Errors come as JSON; media as anything else. */
        if (strncasecmp(r->content_type, "application/json", 16) != 0 &&
            strncasecmp(r->content_type, "text/plain", 10) != 0)
            return KF_OK;
        json_t *root = json_loadb(r->body.ptr ? r->body.ptr : "", r->body.len, 0, NULL);
        long long code = json_integer_value(json_object_get(root, "errcode"));
        const char *msg = json_string_value(json_object_get(root, "errmsg"));
        char shown[160];
        *why_r = kf_pool_printf(pool, "errcode %lld %s", code,
                                kf_printable(shown, sizeof(shown), msg ? msg : "",
                                             msg ? strlen(msg) : 0));
        int token_bad = code == 40001 || code == 40014 || code == 42001;
        if (code == 0 && json_object_get(root, "video_url") != NULL)
            *why_r = "WeChat gives a download link (video_url) for this video, not the file";
        /* A bad media id, or a link instead of the file: trying again changes nothing. */
        *permanent_r = code == 0 || code == 40007;
        json_decref(root);
        kf_str_free(&r->body);
        if (!token_bad)
            return KF_ERR;
    }
    return KF_ERR;
}

static int
media_tick(kf_job *job, kf_db *db, const char **error_r)
{
    const kf_config *cfg = job->arg;
    kf_pool *pool = kf_pool_create(8192);
    struct media_claim t = {.pool = pool};
    int rc;

    if ((rc = kf_tx_run(db, media_claim_tx, &t, error_r)) != KF_OK || t.n == 0)
        goto done;
    for (size_t i = 0; i < t.n; i++) {
        const media_row *m = &t.rows[i];
        struct media_settle s = {.r = m};
        kf_wechat_account a;
        kf_wechat_http r;
        const char *why = NULL, *error = NULL;

        memset(&r, 0, sizeof(r));
        if (kf_job_stopping(job)) {
            s.error = "interrupted by shutdown";
        } else if (kf_wechat_account_get(db, pool, m->account, &a, &error) != KF_OK) {
            s.error = "the WeChat account is gone";
        } else if (media_fetch(db, pool, cfg, &a, m, &r, &why, &s.permanent) != KF_OK) {
            s.error = why ? why : "failed";
        } else {
            char ext[8] = "";
            s.data = (const unsigned char *) (r.body.ptr ? r.body.ptr : "");
            s.len = r.body.len;
            s.content_type = kf_attachment_sniff(s.data, s.len);
            if (strcmp(s.content_type, "application/octet-stream") == 0 && s.len >= 6 &&
                memcmp(s.data, "#!AMR", 5) == 0)
                s.content_type = "audio/amr";
            if (m->format != NULL && strlen(m->format) < 6 && strspn(m->format,
                "abcdefghijklmnopqrstuvwxyz0123456789") == strlen(m->format))
                snprintf(ext, sizeof(ext), ".%s", m->format);
            s.filename = r.filename[0] ? kf_attachment_filename_clean(pool, r.filename)
                                       : kf_pool_printf(pool, "wechat-%s-%llu%s", m->kind,
                                                        (unsigned long long) m->message_id, ext);
        }
        if (kf_tx_run(db, media_settle_tx, &s, &error) != KF_OK)
            kf_log(KF_LOG_WARN, "wechat", "event=media-settle-failed id=%llu reason=\"%s\"",
                   (unsigned long long) m->id, error ? error : "-");
        else if (s.error != NULL) {
            char shown[200];
            kf_log(KF_LOG_WARN, "wechat", "event=media-failed id=%llu attempt=%u reason=\"%s\"",
                   (unsigned long long) m->id, m->attempts,
                   kf_printable(shown, sizeof(shown), s.error, strlen(s.error)));
        } else {
            kf_log(KF_LOG_INFO, "wechat", "event=media-stored id=%llu message=%llu bytes=%zu",
                   (unsigned long long) m->id, (unsigned long long) m->message_id, s.len);
        }
        kf_str_free(&r.body);
    }
done:
    kf_pool_destroy(&pool);
    return rc;
}

static kf_job token_job, media_job;
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void
at_exit(void)
{
    cache_free();
    curl_global_cleanup();
}

static void
curl_start(void)
{
    /* Before any job thread exists: curl_global_init is not thread-safe. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        kf_fatal("module=wechat msg=\"curl_global_init failed\"");
    atexit(at_exit);
}

void
kf_wechat_init(kf_scheduler *s, const kf_config *cfg)
{
    pthread_once(&curl_once, curl_start);
    adapter.cfg = cfg;
    kf_channel_register(&adapter.super);
    token_job = (kf_job){.name = "wechat-token", .period_ms = 30000, .tick = token_tick,
                         .arg = (void *) cfg};
    media_job = (kf_job){.name = "wechat-media", .period_ms = 1000, .batch = MEDIA_BATCH,
                         .tick = media_tick, .arg = (void *) cfg};
    kf_scheduler_add(s, &token_job);
    kf_scheduler_add(s, &media_job);
}

/* ---- routes ---- */

const kf_route kf_wechat_routes[] = {
    /* WeChat's callbacks: 1 MiB here, wechat_max_body in the handler. */
    {KF_GET | KF_POST, "/hooks/wechat/{account}", KF_AUTH_PUBLIC, 1024 * 1024, h_hook, 0,
     "wechat.hook"},
    {KF_GET, "/api/v1/wechat/accounts", KF_AUTH_ADMIN, 0, kf_wechat_h_list, 0,
     "wechat.accounts.list"},
    {KF_POST, "/api/v1/wechat/accounts", KF_AUTH_ADMIN, 64 * 1024, kf_wechat_h_create, 0,
     "wechat.accounts.create"},
    {KF_GET, "/api/v1/wechat/accounts/{account}", KF_AUTH_ADMIN, 0, kf_wechat_h_get, 0,
     "wechat.accounts.get"},
    {KF_PATCH, "/api/v1/wechat/accounts/{account}", KF_AUTH_ADMIN, 64 * 1024, kf_wechat_h_update,
     0, "wechat.accounts.update"},
    {KF_DELETE, "/api/v1/wechat/accounts/{account}", KF_AUTH_ADMIN, 0, kf_wechat_h_delete, 0,
     "wechat.accounts.delete"},
    {0, NULL, 0, 0, NULL, 0, NULL},
};
