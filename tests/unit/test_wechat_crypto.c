/* WeChat signatures, WXBizMsgCrypt, the XML parser and the push opener,
 * checked against the published known-answer vectors in
 * tests/data/wechat/vectors.json (copied from ../shared/wechat/vectors.json,
 * each verified there against the official samples and three independent
 * implementations), plus round trips and the ways a push must be refused. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>
#include <sodium.h>

#include "kefu/pool.h"
#include "kefu/wechat.h"

#define VECTORS KEFU_SOURCE_DIR "/tests/data/wechat/vectors.json"

static json_t *vectors;

static const char *
s(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static int
load(void **state)
{
    (void) state;
    json_error_t e;
    vectors = json_load_file(VECTORS, 0, &e);
    if (vectors == NULL) {
        fprintf(stderr, "cannot read %s: %s (line %d)\n", VECTORS, e.text, e.line);
        return -1;
    }
    return 0;
}

static int
unload(void **state)
{
    (void) state;
    json_decref(vectors);
    return 0;
}

/* ---- signatures ---- */

static void
test_plain_signatures(void **state)
{
    size_t i, n = 0;
    json_t *v;
    (void) state;

    json_array_foreach(json_object_get(vectors, "plain_signature"), i, v) {
        char hex[41];
        const char *parts[4];
        size_t np = 0;
        json_t *p = json_object_get(v, "parts");
        if (p != NULL) {
            for (size_t k = 0; k < json_array_size(p); k++)
                parts[np++] = json_string_value(json_array_get(p, k));
        } else {
            parts[0] = s(v, "token");
            parts[1] = s(v, "timestamp");
            parts[2] = s(v, "nonce");
            np = 3;
        }
        kf_wechat_signature(parts, np, hex);
        print_message("vector %s\n", s(v, "id"));
        assert_string_equal(hex, s(v, "signature"));
        assert_true(kf_wechat_signature_ok(parts, np, s(v, "signature")));
        size_t j;
        json_t *r;
        json_array_foreach(json_object_get(v, "must_reject"), j, r)
            assert_false(kf_wechat_signature_ok(parts, np, s(r, "signature")));
        n++;
    }
    assert_true(n >= 6);
}

static void
test_msg_signature_and_sorting(void **state)
{
    json_t *v = json_array_get(json_object_get(vectors, "msg_signature"), 0);
    const char *parts[] = {s(v, "token"), s(v, "timestamp"), s(v, "nonce"), s(v, "encrypt")};
    char hex[41];
    (void) state;

    kf_wechat_signature(parts, 4, hex);
    assert_string_equal(hex, s(v, "msg_signature"));
    /* Order of the inputs does not matter; the sort is byte-wise, not numeric. */
    const char *swapped[] = {s(v, "encrypt"), s(v, "nonce"), s(v, "token"), s(v, "timestamp")};
    assert_true(kf_wechat_signature_ok(swapped, 4, s(v, "msg_signature")));
    const char *official[] = {"AAAAA", "1714037059", "486452656"};
    assert_true(kf_wechat_signature_ok(official, 3, "899cf89e464efb63f54ddac96b0a0a235f53aa78"));
    /* Upper-case hex is the same signature; anything else is not. */
    assert_true(kf_wechat_signature_ok(official, 3, "899CF89E464EFB63F54DDAC96B0A0A235F53AA78"));
    assert_false(kf_wechat_signature_ok(official, 3, "899cf89e464efb63f54ddac96b0a0a235f53aa7"));
    assert_false(kf_wechat_signature_ok(official, 3, NULL));
    assert_false(kf_wechat_signature_ok(official, 3, ""));
}

/* ---- AES ---- */

static void
test_aes_key_non_canonical(void **state)
{
    unsigned char a[32], b[32];
    const char *error = NULL;
    (void) state;

    /* The official sample key ends in a character with unused bits set. */
    assert_int_equal(kf_wechat_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", a, &error),
                     KF_OK);
    assert_int_equal(kf_wechat_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFE", b, &error),
                     KF_OK);
    assert_memory_equal(a, b, 32);
    assert_int_equal(kf_wechat_aes_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", a, &error),
                     KF_OK);
    for (int i = 0; i < 32; i++)
        assert_int_equal(a[i], 0);
    assert_int_equal(kf_wechat_aes_key("short", a, &error), KF_EINVAL);
    assert_int_equal(kf_wechat_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEF+", a, &error),
                     KF_EINVAL);
    assert_int_equal(kf_wechat_aes_key(NULL, a, &error), KF_EINVAL);
}

static void
test_aes_vectors(void **state)
{
    size_t i, n = 0;
    json_t *v;
    (void) state;

    json_array_foreach(json_object_get(vectors, "aes"), i, v) {
        kf_pool *pool = kf_pool_create(4096);
        unsigned char key[32];
        const char *error = NULL, *kind = s(v, "kind"), *enc = s(v, "encrypt");
        const char *rid = s(v, "receive_id");
        char *msg = NULL;
        size_t len = 0;

        print_message("vector %s\n", s(v, "id"));
        assert_int_equal(kf_wechat_aes_key(s(v, "encoding_aes_key"), key, &error), KF_OK);
        const char *sig = s(v, "msg_signature") ? s(v, "msg_signature")
                                                : s(v, "derived_msg_signature");
        const char *parts[] = {s(v, "token"), s(v, "timestamp"), s(v, "nonce"), enc};
        if (strcmp(kind, "negative") == 0) {
            assert_false(kf_wechat_signature_ok(parts, 4, sig));
            kf_pool_destroy(&pool);
            continue;
        }
        assert_true(kf_wechat_signature_ok(parts, 4, sig));

        /* Decrypt: the plaintext and nothing else; pads up to 30 included. */
        assert_int_equal(kf_wechat_decrypt(pool, key, enc, strlen(enc), rid, &msg, &len, &error),
                         KF_OK);
        const char *want = s(json_object_get(v, "expect"), "plaintext");
        assert_int_equal(len, strlen(want));
        assert_string_equal(msg, want);

        /* Re-encrypt with the source's random: byte for byte the same. */
        if (s(v, "random") != NULL) {
            char *again = NULL;
            assert_int_equal(kf_wechat_encrypt(pool, key, (const unsigned char *) s(v, "random"),
                                               want, strlen(want), rid, &again),
                             KF_OK);
            assert_string_equal(again, enc);
        }
        /* A reply: the envelope exactly as the official samples write it. */
        const char *env = s(json_object_get(v, "expect"), "reply_envelope");
        if (env != NULL)
            assert_string_equal(kf_wechat_envelope(pool, enc, sig, s(v, "timestamp"),
                                                   s(v, "nonce")),
                                env);

        /* The source's own must-reject cases. */
        size_t j;
        json_t *r;
        json_array_foreach(json_object_get(v, "must_reject"), j, r) {
            json_t *ch = json_object_get(r, "change");
            const char *p2[] = {s(v, "token"), s(v, "timestamp"), s(v, "nonce"), enc};
            const char *sig2 = sig;
            if (s(ch, "nonce"))
                p2[2] = s(ch, "nonce");
            if (s(ch, "msg_signature"))
                sig2 = s(ch, "msg_signature");
            if (s(ch, "receive_id")) {
                assert_int_equal(kf_wechat_decrypt(pool, key, enc, strlen(enc),
                                                   s(ch, "receive_id"), &msg, &len, &error),
                                 KF_EINVAL);
                continue;
            }
            assert_false(kf_wechat_signature_ok(p2, 4, sig2));
        }
        kf_pool_destroy(&pool);
        n++;
    }
    assert_true(n >= 10);
}

static void
test_aes_round_trips(void **state)
{
    kf_pool *pool = kf_pool_create(4096);
    unsigned char key[32];
    char msg[200];
    (void) state;

    randombytes_buf(key, sizeof(key));
    for (size_t len = 0; len < sizeof(msg); len++) {
        char *enc, *out;
        size_t out_len, clen;
        for (size_t k = 0; k < len; k++)
            msg[k] = (char) ('a' + (k * 7 + len) % 26);
        assert_int_equal(kf_wechat_encrypt(pool, key, NULL, msg, len, "wx1234567890abcdef", &enc),
                         KF_OK);
        unsigned char *c = kf_wechat_b64_decode(pool, enc, strlen(enc), &clen);
        assert_non_null(c);
        assert_int_equal(clen % 32, 0); /* 32-byte blocks, a whole pad block when aligned */
        assert_true(clen >= 16 + 4 + len + 18 + 1);
        const char *error = NULL;
        assert_int_equal(kf_wechat_decrypt(pool, key, enc, strlen(enc), "wx1234567890abcdef", &out,
                                           &out_len, &error),
                         KF_OK);
        assert_int_equal(out_len, len);
        assert_memory_equal(out, msg, len);
    }
    kf_pool_destroy(&pool);
}

static void
test_aes_refusals(void **state)
{
    kf_pool *pool = kf_pool_create(4096);
    unsigned char key[32];
    const char *error = NULL, *rid = "wx1234567890abcdef";
    char *enc, *msg;
    size_t len, clen;
    (void) state;

    assert_int_equal(kf_wechat_aes_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", key, &error),
                     KF_OK);
    assert_int_equal(kf_wechat_encrypt(pool, key, NULL, "hello", 5, rid, &enc), KF_OK);

    /* Wrong AppID in the trailer. */
    assert_int_equal(kf_wechat_decrypt(pool, key, enc, strlen(enc), "wx0000000000000000", &msg,
                                       &len, &error),
                     KF_EINVAL);
    assert_non_null(strstr(error, "AppID"));

    /* Truncated base64: not a multiple of 4, then not whole blocks. */
    assert_int_equal(kf_wechat_decrypt(pool, key, enc, strlen(enc) - 1, rid, &msg, &len, &error),
                     KF_EINVAL);
    assert_int_equal(kf_wechat_decrypt(pool, key, enc, strlen(enc) - 4, rid, &msg, &len, &error),
                     KF_EINVAL);
    assert_int_equal(kf_wechat_decrypt(pool, key, "", 0, rid, &msg, &len, &error), KF_EINVAL);
    assert_int_equal(kf_wechat_decrypt(pool, key, "!!!!", 4, rid, &msg, &len, &error), KF_EINVAL);

    /* Bad padding: in CBC, flipping a byte of the previous AES block flips the
     * same byte of the last plaintext block; turn the pad byte into 0. */
    unsigned char *c = kf_wechat_b64_decode(pool, enc, strlen(enc), &clen);
    unsigned char plain_pad = 32 - (16 + 4 + 5 + 18) % 32; /* what encrypt used */
    c[clen - 16 - 1] ^= plain_pad;
    char *bad = kf_wechat_b64_encode(pool, c, clen);
    assert_int_equal(kf_wechat_decrypt(pool, key, bad, strlen(bad), rid, &msg, &len, &error),
                     KF_EINVAL);
    assert_non_null(strstr(error, "padding"));
    /* ... and into 33. */
    c[clen - 16 - 1] ^= 33;
    bad = kf_wechat_b64_encode(pool, c, clen);
    assert_int_equal(kf_wechat_decrypt(pool, key, bad, strlen(bad), rid, &msg, &len, &error),
                     KF_EINVAL);

    /* Another key. */
    unsigned char other[32];
    assert_int_equal(kf_wechat_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", other,
                                       &error),
                     KF_OK);
    assert_int_equal(kf_wechat_decrypt(pool, other, enc, strlen(enc), rid, &msg, &len, &error),
                     KF_EINVAL);
    kf_pool_destroy(&pool);
}

static void
test_base64(void **state)
{
    kf_pool *pool = kf_pool_create(1024);
    size_t n;
    (void) state;

    assert_string_equal(kf_wechat_b64_encode(pool, (const unsigned char *) "", 0), "");
    assert_string_equal(kf_wechat_b64_encode(pool, (const unsigned char *) "f", 1), "Zg==");
    assert_string_equal(kf_wechat_b64_encode(pool, (const unsigned char *) "fo", 2), "Zm8=");
    assert_string_equal(kf_wechat_b64_encode(pool, (const unsigned char *) "foo", 3), "Zm9v");
    unsigned char *d = kf_wechat_b64_decode(pool, "Zm9vYg==", 8, &n);
    assert_non_null(d);
    assert_int_equal(n, 4);
    assert_memory_equal(d, "foob", 4);
    assert_null(kf_wechat_b64_decode(pool, "Zm9vYg=", 7, &n));
    assert_null(kf_wechat_b64_decode(pool, "Zm=vYg==", 8, &n));
    assert_null(kf_wechat_b64_decode(pool, "Zm9v\nYg==", 9, &n));
    assert_null(kf_wechat_b64_decode(pool, "Z===", 4, &n));
    kf_pool_destroy(&pool);
}

/* ---- XML ---- */

static void
test_xml_vectors(void **state)
{
    size_t i;
    json_t *v;
    (void) state;

    json_array_foreach(json_object_get(vectors, "aes"), i, v) {
        const char *plain = s(json_object_get(v, "expect"), "plaintext");
        if (plain == NULL || strncmp(plain, "<xml>", 5) != 0)
            continue;
        kf_pool *pool = kf_pool_create(4096);
        kf_wechat_xml x;
        const char *error = NULL;
        print_message("vector %s\n", s(v, "id"));
        assert_int_equal(kf_wechat_xml_parse(pool, plain, strlen(plain), &x, &error), KF_OK);
        assert_true(x.n >= 1);
        if (strstr(plain, "<ToUserName>") != NULL)
            assert_non_null(kf_wechat_xml_get(&x, "ToUserName"));
        kf_pool_destroy(&pool);
    }

    /* 64-bit MsgId kept as text; CDATA and plain values alike; unknown elements too. */
    kf_pool *pool = kf_pool_create(4096);
    kf_wechat_xml x;
    const char *error = NULL;
    const char *doc = "<xml><URL><![CDATA[http://x]]></URL>"
                      "<ToUserName><![CDATA[gh_1]]></ToUserName>"
                      "\n<MsgId>6054768590064713728</MsgId><AgentID><![CDATA[218]]></AgentID>"
                      "<Content><![CDATA[a]]><![CDATA[b]]> c</Content>"
                      "<ScanCodeInfo><ScanType>qrcode</ScanType></ScanCodeInfo></xml>";
    assert_int_equal(kf_wechat_xml_parse(pool, doc, strlen(doc), &x, &error), KF_OK);
    assert_string_equal(kf_wechat_xml_get(&x, "MsgId"), "6054768590064713728");
    assert_string_equal(kf_wechat_xml_get(&x, "AgentID"), "218");
    assert_string_equal(kf_wechat_xml_get(&x, "Content"), "ab c");
    assert_string_equal(kf_wechat_xml_get(&x, "URL"), "http://x");
    assert_string_equal(kf_wechat_xml_get(&x, "ScanCodeInfo"), "");
    assert_null(kf_wechat_xml_get(&x, "ScanType"));
    kf_pool_destroy(&pool);
}

struct xml_bad {
    const char *name, *doc, *why;
};

static const struct xml_bad xml_bads[] = {
    {"doctype", "<!DOCTYPE xml><xml><a>1</a></xml>", "DOCTYPE"},
    {"xxe",
     "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
     "<xml><Content>&x;</Content></xml>",
     "DOCTYPE"},
    {"billion-laughs",
     "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;\">"
     "<!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;\">]><xml><Content>&lol3;</Content></xml>",
     "DOCTYPE"},
    {"root", "<notxml><a>1</a></notxml>", "root"},
    {"undefined-entity", "<xml><a>&nope;</a></xml>", NULL},
    {"truncated", "<xml><a>1</a>", NULL},
    {"junk-after", "<xml></xml><xml></xml>", NULL},
    {"empty", "", NULL},
};

static void
test_xml_refusals(void **state)
{
    (void) state;
    for (size_t i = 0; i < KF_ARRAY_LEN(xml_bads); i++) {
        kf_pool *pool = kf_pool_create(1024);
        kf_wechat_xml x;
        const char *error = NULL;
        print_message("case %s\n", xml_bads[i].name);
        assert_int_equal(kf_wechat_xml_parse(pool, xml_bads[i].doc, strlen(xml_bads[i].doc), &x,
                                             &error),
                         KF_EINVAL);
        assert_non_null(error);
        if (xml_bads[i].why)
            assert_non_null(strstr(error, xml_bads[i].why));
        assert_int_equal(x.n, 0);
        kf_pool_destroy(&pool);
    }
    /* Too deep. */
    kf_str deep = KF_STR_INIT;
    kf_str_puts(&deep, "<xml>");
    for (int i = 0; i < 40; i++)
        kf_str_puts(&deep, "<a>");
    for (int i = 0; i < 40; i++)
        kf_str_puts(&deep, "</a>");
    kf_str_puts(&deep, "</xml>");
    kf_pool *pool = kf_pool_create(1024);
    kf_wechat_xml x;
    const char *error = NULL;
    assert_int_equal(kf_wechat_xml_parse(pool, deep.ptr, deep.len, &x, &error), KF_EINVAL);
    assert_non_null(strstr(error, "deep"));
    kf_str_free(&deep);
    kf_pool_destroy(&pool);
}

static void
test_reply_xml_round_trip(void **state)
{
    kf_pool *pool = kf_pool_create(1024);
    kf_wechat_xml x;
    const char *error = NULL;
    (void) state;

    char *r = kf_wechat_reply_text(pool, "openid_1", "gh_2", 1700000000, "a]]>b 你好 <&>");
    assert_int_equal(kf_wechat_xml_parse(pool, r, strlen(r), &x, &error), KF_OK);
    assert_string_equal(kf_wechat_xml_get(&x, "Content"), "a]]>b 你好 <&>");
    assert_string_equal(kf_wechat_xml_get(&x, "ToUserName"), "openid_1");
    assert_string_equal(kf_wechat_xml_get(&x, "FromUserName"), "gh_2");
    assert_string_equal(kf_wechat_xml_get(&x, "CreateTime"), "1700000000");
    assert_string_equal(kf_wechat_xml_get(&x, "MsgType"), "text");
    kf_pool_destroy(&pool);
}

/* ---- opening requests as the webhook does ---- */

static json_t *
vector(const char *section, const char *id)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(vectors, section), i, v) if (strcmp(s(v, "id"), id) == 0)
        return v;
    fail_msg("no vector %s", id);
    return NULL;
}

static kf_wechat_account
account_of(const json_t *v, const char *kind, const char *mode)
{
    kf_wechat_account a = {
        .key = "t",
        .kind = kind,
        .app_id = s(v, "receive_id"),
        .token = s(v, "token"),
        .aes_key = s(v, "encoding_aes_key"),
        .mode = mode,
        .api_base = "http://127.0.0.1:1",
        .timestamp_window = 0,
        .enabled = 1,
    };
    return a;
}

static kf_wechat_query
query_of(const json_t *v)
{
    json_t *q = json_object_get(json_object_get(v, "http_request"), "query");
    kf_wechat_query r = {
        .timestamp = s(q, "timestamp"),
        .nonce = s(q, "nonce"),
        .signature = s(q, "signature"),
        .msg_signature = s(q, "msg_signature"),
        .encrypt_type = s(q, "encrypt_type"),
        .echostr = s(q, "echostr"),
    };
    return r;
}

static void
test_open_pushes(void **state)
{
    static const struct {
        const char *id, *kind, *mode, *field, *want;
    } cases[] = {
        {"wecom-official-push", "wecom", "safe", "Content", "hello"},
        {"wechatpy-wecom-decrypt", "wecom", "safe", "MsgId", "4363689963896700987"},
        {"easywechat-mp-decrypt", "official", "safe", "FromUserName", "asdasdasdsadasd"},
        {"official-mp-sample-compat", "official", "compat", "MsgId", "6054768590064713728"},
        {"official-oplatform-push", "official", "safe", "Event", "debug_demo"},
    };
    (void) state;

    for (size_t i = 0; i < KF_ARRAY_LEN(cases); i++) {
        json_t *v = vector("aes", cases[i].id);
        kf_wechat_account a = account_of(v, cases[i].kind, cases[i].mode);
        kf_wechat_query q = query_of(v);
        const char *body = s(json_object_get(v, "http_request"), "body"), *why = NULL;
        kf_pool *pool = kf_pool_create(4096);
        kf_wechat_push p;

        print_message("vector %s\n", cases[i].id);
        assert_int_equal(kf_wechat_open_push(pool, &a, &q, body, strlen(body), &p, &why), 0);
        assert_true(p.encrypted);
        assert_string_equal(kf_wechat_xml_get(&p.x, cases[i].field), cases[i].want);

        /* A wrong AppID, a wrong token, another key: all 403. */
        kf_wechat_account b = a;
        b.app_id = "wx0000000000000000";
        assert_int_equal(kf_wechat_open_push(pool, &b, &q, body, strlen(body), &p, &why), 403);
        b = a;
        b.token = "wrongtoken";
        assert_int_equal(kf_wechat_open_push(pool, &b, &q, body, strlen(body), &p, &why), 403);
        b = a;
        b.aes_key = "Bbcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        assert_int_equal(kf_wechat_open_push(pool, &b, &q, body, strlen(body), &p, &why), 403);
        /* Key rotation: the old key still opens it when set as the previous one. */
        b.prev_aes_key = a.aes_key;
        assert_int_equal(kf_wechat_open_push(pool, &b, &q, body, strlen(body), &p, &why), 0);
        /* A tampered signature. */
        kf_wechat_query t = q;
        t.msg_signature = "0000000000000000000000000000000000000000";
        assert_int_equal(kf_wechat_open_push(pool, &a, &t, body, strlen(body), &p, &why), 403);
        kf_pool_destroy(&pool);
    }
}

static void
test_open_plain_and_modes(void **state)
{
    kf_pool *pool = kf_pool_create(4096);
    kf_wechat_account a = {.key = "p", .kind = "official", .app_id = "wx1", .token = "AAAAA",
                           .mode = "plain", .api_base = "x"};
    kf_wechat_query q = {.timestamp = "1714037059", .nonce = "486452656",
                         .signature = "899cf89e464efb63f54ddac96b0a0a235f53aa78"};
    const char *body = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA["
                       "o1]]></FromUserName><MsgType><![CDATA[text]]></MsgType>"
                       "<Content>hi</Content><MsgId>1</MsgId></xml>",
               *why = NULL;
    kf_wechat_push p;
    (void) state;

    assert_int_equal(kf_wechat_open_push(pool, &a, &q, body, strlen(body), &p, &why), 0);
    assert_false(p.encrypted);
    assert_string_equal(kf_wechat_xml_get(&p.x, "Content"), "hi");
    /* compat accepts a plaintext push; safe does not. */
    a.mode = "compat";
    assert_int_equal(kf_wechat_open_push(pool, &a, &q, body, strlen(body), &p, &why), 0);
    a.mode = "safe";
    assert_int_equal(kf_wechat_open_push(pool, &a, &q, body, strlen(body), &p, &why), 403);
    a.mode = "plain";
    /* Bad signature before any parsing; then a DOCTYPE is a 400. */
    kf_wechat_query bad = q;
    bad.signature = "899cf89e464efb63f54ddac96b0a0a235f53aa79";
    assert_int_equal(kf_wechat_open_push(pool, &a, &bad, body, strlen(body), &p, &why), 403);
    const char *dt = "<!DOCTYPE x [<!ENTITY a \"b\">]><xml><Content>&a;</Content></xml>";
    assert_int_equal(kf_wechat_open_push(pool, &a, &q, dt, strlen(dt), &p, &why), 400);
    /* The JSON data format (the official plaintext-mode example). */
    const char *js = "{\"ToUserName\":\"gh_97417a04a28d\",\"FromUserName\":\"o9AgO5Kd5ggOC-bXrbNODIiE3bGY\","
                     "\"CreateTime\":1714037059,\"MsgType\":\"event\",\"Event\":\"debug_demo\","
                     "\"debug_str\":\"hello world\"}";
    assert_int_equal(kf_wechat_open_push(pool, &a, &q, js, strlen(js), &p, &why), 0);
    assert_true(p.json);
    assert_string_equal(kf_wechat_xml_get(&p.x, "Event"), "debug_demo");
    assert_string_equal(kf_wechat_xml_get(&p.x, "CreateTime"), "1714037059");
    assert_int_equal(kf_wechat_open_push(pool, &a, &q, "{\"a\":", 5, &p, &why), 400);
    assert_int_equal(kf_wechat_open_push(pool, &a, &q, "[1]", 3, &p, &why), 400);
    /* Missing timestamp. */
    kf_wechat_query none = {.signature = q.signature};
    assert_int_equal(kf_wechat_open_push(pool, &a, &none, body, strlen(body), &p, &why), 403);
    kf_pool_destroy(&pool);
}

static void
test_verify_url(void **state)
{
    static const char *const ids[][2] = {
        {"plain_signature", "official-doc-verify-get"},
        {"aes", "wecom-official-verify-url"},
        {"aes", "wechatpy-wecom-verify-url"},
    };
    (void) state;

    for (size_t i = 0; i < KF_ARRAY_LEN(ids); i++) {
        json_t *v = vector(ids[i][0], ids[i][1]);
        int wecom = strcmp(ids[i][0], "aes") == 0;
        kf_wechat_account a = account_of(v, wecom ? "wecom" : "official", "safe");
        kf_wechat_query q = query_of(v);
        kf_pool *pool = kf_pool_create(4096);
        const char *echo = NULL, *why = NULL;
        const char *want = wecom ? s(json_object_get(v, "expect"), "http_response_body")
                                 : s(v, "expect_response_body");

        print_message("vector %s\n", ids[i][1]);
        assert_int_equal(kf_wechat_verify_url(pool, &a, &q, &echo, &why), 0);
        assert_string_equal(echo, want);
        kf_wechat_query t = q;
        t.nonce = "1";
        assert_int_equal(kf_wechat_verify_url(pool, &a, &t, &echo, &why), 403);
        kf_wechat_account b = a;
        b.app_id = "wx0000000000000000";
        if (wecom)
            assert_int_equal(kf_wechat_verify_url(pool, &b, &q, &echo, &why), 403);
        kf_pool_destroy(&pool);
    }
}

static void
test_sealed_reply_opens(void **state)
{
    json_t *v = vector("aes", "easywechat-mp-decrypt");
    kf_wechat_account a = account_of(v, "official", "safe");
    kf_wechat_query q = query_of(v);
    const char *body = s(json_object_get(v, "http_request"), "body"), *why = NULL;
    kf_pool *pool = kf_pool_create(4096);
    kf_wechat_push p, back;
    (void) state;

    assert_int_equal(kf_wechat_open_push(pool, &a, &q, body, strlen(body), &p, &why), 0);
    char *xml = kf_wechat_reply_text(pool, "asdasdasdsadasd", "asdasdasd", 1458300677, "welcome");
    char *sealed = kf_wechat_seal_reply(pool, &a, &p, q.nonce, 1458300677, xml);
    assert_non_null(sealed);
    /* What we send opens like a push: the same check WeChat makes. */
    kf_wechat_xml env;
    assert_int_equal(kf_wechat_xml_parse(pool, sealed, strlen(sealed), &env, &why), KF_OK);
    kf_wechat_query rq = {.timestamp = kf_wechat_xml_get(&env, "TimeStamp"),
                          .nonce = kf_wechat_xml_get(&env, "Nonce"),
                          .msg_signature = kf_wechat_xml_get(&env, "MsgSignature"),
                          .encrypt_type = "aes"};
    assert_string_equal(rq.nonce, q.nonce);
    assert_int_equal(kf_wechat_open_push(pool, &a, &rq, sealed, strlen(sealed), &back, &why), 0);
    assert_string_equal(kf_wechat_xml_get(&back.x, "Content"), "welcome");
    assert_string_equal(kf_wechat_xml_get(&back.x, "ToUserName"), "asdasdasdsadasd");
    kf_pool_destroy(&pool);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_signatures),
        cmocka_unit_test(test_msg_signature_and_sorting),
        cmocka_unit_test(test_aes_key_non_canonical),
        cmocka_unit_test(test_aes_vectors),
        cmocka_unit_test(test_aes_round_trips),
        cmocka_unit_test(test_aes_refusals),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_xml_vectors),
        cmocka_unit_test(test_xml_refusals),
        cmocka_unit_test(test_reply_xml_round_trip),
        cmocka_unit_test(test_open_pushes),
        cmocka_unit_test(test_open_plain_and_modes),
        cmocka_unit_test(test_verify_url),
        cmocka_unit_test(test_sealed_reply_opens),
    };
    return cmocka_run_group_tests_name("wechat_crypto", tests, load, unload);
}
