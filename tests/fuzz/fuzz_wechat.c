/*
 * libFuzzer: the WeChat push path - envelope XML, signature, base64,
 * AES-256-CBC with 32-byte PKCS#7, the receive id, and the message XML -
 * exactly as the webhook runs it (kf_wechat_open_push), plus the passive
 * reply built from what was parsed.
 *
 * Input: the first byte picks the path, the rest is the data.
 *   'P'  a POST body for a plaintext-mode account (valid signature);
 *   'S'  a POST body for a safe-mode account: the fuzzer writes the envelope
 *        and its Encrypt text, the harness signs whatever Encrypt it finds, so
 *        the decryption and the inner XML are reached;
 *   'E'  an Encrypt text decrypted directly;
 *   else a message plaintext, encrypted with the account's key and wrapped
 *        in an envelope, which must open to the same fields as parsing it
 *        directly (a round trip).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/pool.h"
#include "kefu/wechat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const kf_wechat_account plain_acct = {
    .key = "f", .kind = "official", .app_id = "wx1234567890abcdef", .token = "pamtest",
    .mode = "plain", .api_base = "http://127.0.0.1:1", .enabled = 1};
static const kf_wechat_account safe_acct = {
    .key = "f", .kind = "official", .app_id = "wx1234567890abcdef", .token = "pamtest",
    .aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", .mode = "safe",
    .api_base = "http://127.0.0.1:1", .enabled = 1};

/* Exercise what the handler does with an opened push. */
static void
use(kf_pool *pool, const kf_wechat_account *a, const kf_wechat_push *p, const char *nonce)
{
    const char *to = kf_wechat_xml_get(&p->x, "FromUserName");
    const char *from = kf_wechat_xml_get(&p->x, "ToUserName");
    const char *content = kf_wechat_xml_get(&p->x, "Content");
    if (to == NULL || from == NULL || content == NULL)
        return;
    char *xml = kf_wechat_reply_text(pool, to, from, 1700000000, content);
    char *sealed = kf_wechat_seal_reply(pool, a, p, nonce, 1700000000, xml);
    if (sealed == NULL)
        __builtin_trap();
    kf_wechat_xml back;
    const char *error = NULL;
    /* Our own reply always parses and carries the content unchanged. */
    if (kf_wechat_xml_parse(pool, xml, strlen(xml), &back, &error) != KF_OK ||
        strcmp(kf_wechat_xml_get(&back, "Content"), content) != 0)
        __builtin_trap();
}

static void
fuzz_plain(kf_pool *pool, const char *body, size_t len)
{
    kf_wechat_query q = {.timestamp = "1409304348", .nonce = "xxxxxx"};
    char sig[41];
    const char *parts[] = {plain_acct.token, q.timestamp, q.nonce}, *why = NULL;
    kf_wechat_push p;

    kf_wechat_signature(parts, 3, sig);
    q.signature = sig;
    if (kf_wechat_open_push(pool, &plain_acct, &q, body, len, &p, &why) == 0)
        use(pool, &plain_acct, &p, q.nonce);
}

static void
fuzz_safe(kf_pool *pool, const char *body, size_t len)
{
    kf_wechat_query q = {.timestamp = "1409304348", .nonce = "xxxxxx", .encrypt_type = "aes"};
    kf_wechat_xml env;
    const char *why = NULL, *enc;
    kf_wechat_push p;
    char sig[41];

    /* Sign the Encrypt the envelope holds, as WeChat would have. */
    if (kf_wechat_xml_parse(pool, body, len, &env, &why) == KF_OK &&
        (enc = kf_wechat_xml_get(&env, "Encrypt")) != NULL) {
        const char *parts[] = {safe_acct.token, q.timestamp, q.nonce, enc};
        kf_wechat_signature(parts, 4, sig);
        q.msg_signature = sig;
    }
    if (kf_wechat_open_push(pool, &safe_acct, &q, body, len, &p, &why) == 0)
        use(pool, &safe_acct, &p, q.nonce);
}

static void
fuzz_decrypt(kf_pool *pool, const char *b64, size_t len)
{
    unsigned char key[32];
    const char *error = NULL;
    char *msg;
    size_t mlen;
    kf_wechat_xml x;

    if (kf_wechat_aes_key(safe_acct.aes_key, key, &error) != KF_OK)
        __builtin_trap();
    if (kf_wechat_decrypt(pool, key, b64, len, safe_acct.app_id, &msg, &mlen, &error) == KF_OK)
        (void) kf_wechat_xml_parse(pool, msg, mlen, &x, &error);
}

static void
fuzz_round_trip(kf_pool *pool, const char *plain, size_t len)
{
    unsigned char key[32];
    const char *error = NULL, *why = NULL;
    char *enc, sig[41];
    kf_wechat_xml direct;
    kf_wechat_push p;

    if (kf_wechat_aes_key(safe_acct.aes_key, key, &error) != KF_OK ||
        kf_wechat_encrypt(pool, key, NULL, plain, len, safe_acct.app_id, &enc) != KF_OK)
        __builtin_trap();
    char *body = kf_pool_printf(pool, "<xml><ToUserName><![CDATA[gh_1]]></ToUserName>"
                                      "<Encrypt><![CDATA[%s]]></Encrypt></xml>", enc);
    kf_wechat_query q = {.timestamp = "1", .nonce = "2", .encrypt_type = "aes",
                         .msg_signature = sig};
    const char *parts[] = {safe_acct.token, q.timestamp, q.nonce, enc};
    kf_wechat_signature(parts, 4, sig);
    int direct_ok = kf_wechat_doc_parse(pool, plain, len, &direct, &error) == KF_OK;
    int st = kf_wechat_open_push(pool, &safe_acct, &q, body, strlen(body), &p, &why);
    /* Encryption never changes what the message says. */
    if ((st == 0) != direct_ok || (st != 0 && st != 400))
        __builtin_trap();
    if (st == 0) {
        if (p.x.n != direct.n)
            __builtin_trap();
        for (unsigned i = 0; i < p.x.n; i++)
            if (strcmp(p.x.f[i].name, direct.f[i].name) != 0 ||
                p.x.f[i].len != direct.f[i].len ||
                memcmp(p.x.f[i].value, direct.f[i].value, direct.f[i].len) != 0)
                __builtin_trap();
        use(pool, &safe_acct, &p, q.nonce);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    kf_pool *pool = kf_pool_create(4096);
    /* A copy of exactly the bytes, so ASan sees any read past the end. */
    size_t len = size - 1;
    char *copy = kf_xmalloc(len ? len : 1);
    memcpy(copy, data + 1, len);

    switch (data[0]) {
    case 'P':
        fuzz_plain(pool, copy, len);
        break;
    case 'S':
        fuzz_safe(pool, copy, len);
        break;
    case 'E':
        fuzz_decrypt(pool, copy, len);
        break;
    default:
        fuzz_round_trip(pool, copy, len);
        break;
    }
    free(copy);
    kf_pool_destroy(&pool);
    return 0;
}
