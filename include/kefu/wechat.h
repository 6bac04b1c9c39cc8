/*
 * kefu/wechat.h - the WeChat channel: Official Accounts (公众号) and WeCom
 * (企业微信) self-built apps.
 *
 * Inbound, /hooks/wechat/{account} answers WeChat's URL verification (GET)
 * and message pushes (POST) in plaintext, compatible and safe mode
 * (WXBizMsgCrypt: SHA-1 signatures over the byte-wise sorted parts,
 * AES-256-CBC with 32-byte PKCS#7 blocks), turns messages into tickets
 * through kf_ingest() and acknowledges only after the commit.  Outbound,
 * the "wechat" channel adapter sends agent replies through the
 * customer-service API (WeCom: message/send) with an access token cached in
 * the database and refreshed by one instance at a time.
 *
 * Modules:   wechat_crypto.c (signatures, AES, base64; pure), wechat_xml.c
 *            (expat, no DOCTYPE; reply builders; pure), wechat_api.c (libcurl,
 *            the shared token, the secrets file), wechat_channel.c (webhook,
 *            adapter, jobs), wechat_admin.c (admin API and `kefud admin
 *            wechat-account`).
 * Threads:   the pure functions anywhere; the rest on worker and job threads
 *            with the caller's kf_db; kf_wechat_init() on the main thread.
 * Ownership: strings returned live in the kf_pool passed in.
 * Errors:    KF_OK, or KF_EINVAL with a static reason in *error_r.
 */
#ifndef KEFU_WECHAT_H
#define KEFU_WECHAT_H

#include <stddef.h>
#include <stdint.h>
#include "kefu/pool.h"
#include "kefu/types.h"

#define KF_WECHAT_AES_KEY_LEN 43  /* EncodingAESKey characters */
#define KF_WECHAT_KEY_MAX 64      /* account key: the {account} URL segment */
#define KF_WECHAT_XML_FIELDS 64   /* top-level elements kept per document */

/* ---- crypto (wechat_crypto.c) ---- */

/*
 * The 32-byte AES key of a 43-character EncodingAESKey ([A-Za-z0-9]):
 * base64 of key + "=", ignoring the unused low bits of the last character
 * (real keys are often not canonical base64).
 */
int kf_wechat_aes_key(const char *encoding_aes_key, unsigned char key[32], const char **error_r);

/* hex(sha1(concatenation of parts sorted byte-wise)), lower case, into hex[41]. */
void kf_wechat_signature(const char *const *parts, size_t n, char hex[41]);
/* 1 when given (40 hex digits, either case) is the signature of parts; constant time. */
int kf_wechat_signature_ok(const char *const *parts, size_t n, const char *given);

/*
 * WXBizMsgCrypt decryption of an Encrypt text: base64 -> AES-256-CBC (IV =
 * key[0..16), no cipher padding) -> 32-byte PKCS#7 -> random(16) ||
 * be32(len) || msg || receive id.  The receive id must equal receive_id.
 * *msg_r is a NUL-terminated pool copy (the message may itself hold NULs;
 * *len_r is its length).
 */
int kf_wechat_decrypt(kf_pool *pool, const unsigned char key[32], const char *b64, size_t b64_len,
                      const char *receive_id, char **msg_r, size_t *len_r, const char **error_r);
/* The reverse; random16 NULL = 16 fresh random bytes.  *b64_r in the pool. */
int kf_wechat_encrypt(kf_pool *pool, const unsigned char key[32], const unsigned char *random16,
                      const char *msg, size_t len, const char *receive_id, char **b64_r);

/* Standard base64 with padding; decode refuses anything else (NULL). */
char *kf_wechat_b64_encode(kf_pool *pool, const unsigned char *data, size_t len);
unsigned char *kf_wechat_b64_decode(kf_pool *pool, const char *s, size_t len, size_t *out_len);

/* ---- XML (wechat_xml.c) ---- */

/* The top-level elements of <xml>...</xml>, by name, first occurrence kept. */
typedef struct kf_wechat_xml {
    struct {
        const char *name, *value;
        size_t len;
    } f[KF_WECHAT_XML_FIELDS];
    unsigned n;
} kf_wechat_xml;

/*
 * Parse a WeChat XML document with expat: UTF-8, root <xml>, any DOCTYPE
 * (and so any entity declaration) refused, at most 16 levels and 1000
 * elements, unknown and nested elements ignored, CDATA and text alike.
 */
int kf_wechat_xml_parse(kf_pool *pool, const char *data, size_t len, kf_wechat_xml *x,
                        const char **error_r);
/* The same for a body in either data format: a JSON object (first character '{') or XML. */
int kf_wechat_doc_parse(kf_pool *pool, const char *data, size_t len, kf_wechat_xml *x,
                        const char **error_r);
/* The value of the top-level element name, or NULL. */
const char *kf_wechat_xml_get(const kf_wechat_xml *x, const char *name);

/* A passive text reply (To/From as given), CDATA-escaped. */
char *kf_wechat_reply_text(kf_pool *pool, const char *to, const char *from, long long create_time,
                           const char *content);
/* The encrypted reply envelope (Encrypt, MsgSignature, TimeStamp, Nonce). */
char *kf_wechat_envelope(kf_pool *pool, const char *encrypt, const char *signature,
                         const char *timestamp, const char *nonce);

/* ---- accounts ---- */

typedef struct kf_wechat_account {
    uint64_t id;
    const char *key;           /* URL segment and channel_account */
    const char *kind;          /* "official" | "wecom" */
    const char *name;
    const char *app_id;        /* AppID or CorpID: the receive id */
    uint64_t agent_id;         /* WeCom AgentID, 0 = none */
    const char *token;
    const char *aes_key;       /* EncodingAESKey or NULL */
    const char *prev_aes_key;  /* the previous one (rotation), or NULL */
    const char *secret_ref;    /* name in secrets_file, or NULL */
    const char *mode;          /* "plain" | "compat" | "safe" (WeCom: always encrypted) */
    const char *api_base;      /* without a trailing slash */
    int timestamp_window;      /* seconds; -1 = wechat_timestamp_window */
    const char *auto_reply, *welcome_message; /* NULL = none */
    const char *menu_replies;  /* JSON object text {"KEY": "reply"} */
    int enabled;
    uint64_t default_queue_id; /* from channel_account, 0 = none */
} kf_wechat_account;

/* The account called key; KF_ENOTFOUND when there is none. */
int kf_wechat_account_get(kf_db *db, kf_pool *pool, const char *key, kf_wechat_account *a,
                          const char **error_r);
/* 1 for [A-Za-z0-9_-]{1,64}. */
int kf_wechat_key_ok(const char *key);

/* ---- the webhook (wechat_channel.c) ---- */

/* The query parameters of a callback, percent-decoded ('+' stays '+'); NULL when absent. */
typedef struct kf_wechat_query {
    const char *timestamp, *nonce, *signature, *msg_signature, *encrypt_type, *echostr;
} kf_wechat_query;

/* An opened push. */
typedef struct kf_wechat_push {
    kf_wechat_xml x;        /* the message's own fields (the decrypted copy when encrypted) */
    int encrypted;          /* it came encrypted: a passive reply must be encrypted too */
    int json;               /* it came in the JSON data format (no passive replies then) */
    unsigned char key[32];  /* the AES key that opened it (the current or the previous one) */
} kf_wechat_push;

/*
 * URL verification (GET): 0 and the text to echo, or the HTTP status to
 * answer (403) with the reason.  Official Accounts: `signature` over token,
 * timestamp, nonce, echo echostr as is.  WeCom: `msg_signature` also over
 * echostr, which is decrypted with the CorpID as receive id.
 */
int kf_wechat_verify_url(kf_pool *pool, const kf_wechat_account *a, const kf_wechat_query *q,
                         const char **echo_r, const char **why_r);
/*
 * Check and open a push (POST body): 0, or 403 (signature, AES, receive id,
 * a plaintext push to a safe-mode account) or 400 (XML) with the reason.
 * Encrypted when the account is WeCom or encrypt_type=aes; then only the
 * decrypted copy is used, even in compatible mode.
 */
int kf_wechat_open_push(kf_pool *pool, const kf_wechat_account *a, const kf_wechat_query *q,
                        const char *body, size_t len, kf_wechat_push *p, const char **why_r);
/* The passive reply as sent: plain_xml itself, or its encrypted envelope when p was encrypted. */
char *kf_wechat_seal_reply(kf_pool *pool, const kf_wechat_account *a, const kf_wechat_push *p,
                           const char *nonce, long long now, const char *plain_xml);

/* ---- outbound API (wechat_api.c) ---- */

/*
 * A usable access token for the account: the one cached in wechat_token
 * unless it expires within 60 s or equals bad (the API just refused it);
 * then exactly one instance refreshes it (a lease on the row) while the
 * others wait for the result, up to deadline (monotonic seconds).  Short
 * statements only, never a transaction across the network.  On failure
 * *why_r says why (pool text) and the result is KF_ERR.
 */
int kf_wechat_token(kf_db *db, kf_pool *pool, const kf_config *cfg, const kf_wechat_account *a,
                    const char *bad, unsigned margin_s, double deadline, const char **token_r,
                    const char **why_r);
/* The secret called name from secrets_file (mode 0600); KF_ERR with *why_r otherwise. */
int kf_wechat_secret(kf_pool *pool, const kf_config *cfg, const char *name, const char **secret_r,
                     const char **why_r);

/* Result of one API call. */
typedef struct kf_wechat_http {
    long status;               /* HTTP status, 0 = no response */
    kf_str body;
    char content_type[128];
    char filename[256];        /* from Content-Disposition, may be "" */
    int timed_out;
} kf_wechat_http;

/*
 * One HTTP exchange with libcurl: GET when json is NULL, else POST of json.
 * At most max_body response bytes; gives up at deadline or when the job
 * thread is asked to stop.  KF_ERR with *why_r on a transport error.
 */
int kf_wechat_http_call(const kf_config *cfg, const char *url, const char *json, double deadline,
                        size_t max_body, kf_wechat_http *r, const char **why_r, kf_pool *pool);

/* ---- wiring ---- */

/* Register the "wechat" channel adapter and its jobs (main thread, before the scheduler starts). */
void kf_wechat_init(kf_scheduler *s, const kf_config *cfg);
/* `kefud admin wechat-account ...`; argv[0] is the subcommand.  Exit code 0/1/2. */
int kf_wechat_admin_cli(const kf_config *cfg, int argc, char **argv);

#endif /* KEFU_WECHAT_H */
