/* The email channel's pure parts, table-driven over the .eml corpus in tests/data/email:
 * MIME parsing (charsets, RFC 2047/2231/6532, multipart, attachments, inline
 * images, forwards, DSN bounces, broken MIME, limits), auto-reply detection,
 * the HTML sanitizer and quoted-history folding. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kefu/email.h"
#include "kefu/pool.h"
#include "kefu/utf8.h"

static char *
slurp(const char *name, size_t *len_r)
{
    char path[1024];
    const char *src = __FILE__; /* .../tests/unit/test_mime.c */
    const char *slash = strrchr(src, '/');
    snprintf(path, sizeof(path), "%.*s/../data/email/%s", (int) (slash - src), src, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t) n + 1);
    assert_int_equal(fread(buf, 1, (size_t) n, f), (size_t) n);
    fclose(f);
    buf[n] = '\0';
    *len_r = (size_t) n;
    return buf;
}

struct att_want {
    const char *filename, *content_type, *content_id;
    size_t len;
};

struct mime_case {
    const char *file;
    int ok;                       /* 0: parse must fail */
    const char *from, *name, *subject;
    const char *text_has;         /* substring of the text */
    const char *fold_at;          /* text from the fold offset starts with this; NULL = no fold */
    int auto_submitted, bounce;
    const char *bounce_ref, *bounce_reason_has;
    const char *in_reply_to;
    unsigned n_refs;
    size_t n_att;
    struct att_want att[2];
    const char *html_has[3];
    const char *html_not[8];
};

static const struct mime_case cases[] = {
    {.file = "gbk_subject.eml", .ok = 1, .from = "zhang.san@example.cn", .name = "张三",
     .subject = "咨询：朱镕基的订单", .text_has = "我的订单（镕）还没有到"},
    {.file = "gb18030_body.eml", .ok = 1, .from = "li@example.cn", .subject = "测试𠀀字符",
     .text_has = "扩展汉字：𠀀𠀁，欧元€。"},
    {.file = "big5.eml", .ok = 1, .from = "chan@example.hk", .name = "陳大文",
     .subject = "繁體中文測試", .text_has = "請問退貨流程是怎樣的？"},
    {.file = "iso2022jp.eml", .ok = 1, .from = "tanaka@example.jp", .subject = "日本語のテスト",
     .text_has = "お問い合わせありがとうございます。"},
    {.file = "mixed_words.eml", .ok = 1, .from = "wang@example.org", .name = "Wang, Wu",
     .subject = "订单问题 about café and naïve", .text_has = "Hello."},
    {.file = "raw_utf8_header.eml", .ok = 1, .from = "wangwu@example.cn", .name = "王五",
     .subject = "直接的UTF-8主题", .text_has = "正文内容"},
    {.file = "rfc2231.eml", .ok = 1, .from = "buyer@example.com", .subject = "quote attached",
     .text_has = "See the attached files.", .n_att = 2,
     .att = {{"报价单.pdf", "application/pdf", NULL, 9}, {"很长的名字.txt", "text/plain", NULL, 6}}},
    {.file = "outlook_reply.eml", .ok = 1, .from = "jane@corp.example", .name = "Jane Doe",
     .subject = "RE: [KF-000042] Printer broken", .text_has = "Please restart it.",
     .fold_at = "-----Original Message-----", .in_reply_to = "kf.7.out@kefu.test", .n_refs = 2},
    {.file = "chinese_reply.eml", .ok = 1, .from = "zhao@example.cn",
     .subject = "回复：[KF-000042] 退款", .text_has = "好的，谢谢！", .fold_at = "发件人: 客服"},
    {.file = "qq_reply.eml", .ok = 1, .from = "qq@example.cn", .subject = "Re: refund",
     .text_has = "收到", .fold_at = "------------------ 原始邮件"},
    {.file = "english_reply.eml", .ok = 1, .from = "bob@example.com", .subject = "Re: help",
     .text_has = "Thanks, that worked.", .fold_at = "On Mon, Mar 4, 2024"},
    {.file = "gt_quote.eml", .ok = 1, .from = "carl@example.com", .text_has = "My answer first.",
     .fold_at = "> the old text"},
    {.file = "auto_reply.eml", .ok = 1, .from = "away@example.com", .auto_submitted = 1},
    {.file = "bulk.eml", .ok = 1, .from = "news@example.com", .auto_submitted = 1},
    {.file = "autoreply_suppress.eml", .ok = 1, .from = "ex@corp.example", .auto_submitted = 1},
    {.file = "dsn_bounce.eml", .ok = 1, .from = "mailer-daemon@mx.example.net",
     .auto_submitted = 1, .bounce = 1, .bounce_ref = "kf.5.out@kefu.test",
     .bounce_reason_has = "550 5.1.1"},
    {.file = "broken_mime.eml", .ok = 1, .from = "broken@example.com", .text_has = "Hello world",
     .n_att = 1, .att = {{"data.bin", "application/octet-stream", NULL, 4}}},
    {.file = "html_xss.eml", .ok = 1, .from = "attacker@example.com", .text_has = "Hello friend",
     .html_has = {"<b>friend</b>", "href=\"https://example.com/ok\"", "src=\"cid:logo@example.com\""},
     .html_not = {"script", "alert", "onload", "onerror", "javascript", "iframe", "evil",
                  "style="}},
    {.file = "inline_image.eml", .ok = 1, .from = "pic@example.com",
     .text_has = "See the screenshot.", .n_att = 1,
     .att = {{"shot.png", "image/png", "shot@example.com", 8}},
     .html_has = {"<img src=\"cid:shot@example.com\">"}},
    {.file = "forward.eml", .ok = 1, .from = "fwd@example.com", .text_has = "The inner text."},
    {.file = "deep_nesting.eml", .ok = 0},
    {.file = "huge_header.eml", .ok = 1, .from = "big@example.com", .text_has = "body"},
    {.file = "no_from.eml", .ok = 0},
};

static void
test_corpus(void **state)
{
    (void) state;
    for (size_t i = 0; i < KF_ARRAY_LEN(cases); i++) {
        const struct mime_case *c = &cases[i];
        size_t len;
        char *raw = slurp(c->file, &len);
        kf_pool *pool = kf_pool_create(4096);
        kf_email_msg m;
        const char *err = NULL;
        int rc = kf_email_parse(pool, raw, len, NULL, &m, &err);
        print_message("case %s\n", c->file);
        if (!c->ok) {
            assert_int_equal(rc, KF_EINVAL);
            assert_non_null(err);
        } else {
            assert_int_equal(rc, KF_OK);
            assert_true(kf_utf8_valid(m.subject, strlen(m.subject)));
            assert_true(kf_utf8_valid(m.text, m.text_len));
            assert_true(strlen(m.subject) <= 900);
            if (c->from)
                assert_string_equal(m.from_addr, c->from);
            if (c->name) {
                assert_non_null(m.from_name);
                assert_string_equal(m.from_name, c->name);
            }
            if (c->subject)
                assert_string_equal(m.subject, c->subject);
            if (c->text_has)
                assert_non_null(strstr(m.text, c->text_has));
            if (c->fold_at) {
                assert_true(m.text_fold < m.text_len);
                assert_memory_equal(m.text + m.text_fold, c->fold_at, strlen(c->fold_at));
            } else {
                assert_int_equal(m.text_fold, m.text_len);
            }
            assert_int_equal(m.auto_submitted, c->auto_submitted);
            assert_int_equal(m.is_bounce, c->bounce);
            if (c->bounce_ref)
                assert_string_equal(m.bounce_ref, c->bounce_ref);
            if (c->bounce_reason_has)
                assert_non_null(strstr(m.bounce_reason, c->bounce_reason_has));
            if (c->in_reply_to)
                assert_string_equal(m.in_reply_to, c->in_reply_to);
            assert_int_equal(m.n_refs, c->n_refs);
            assert_int_equal(m.n_attachments, c->n_att);
            for (size_t a = 0; a < c->n_att && a < 2; a++) {
                assert_string_equal(m.attachments[a].filename, c->att[a].filename);
                assert_string_equal(m.attachments[a].content_type, c->att[a].content_type);
                if (c->att[a].content_id)
                    assert_string_equal(m.attachments[a].content_id, c->att[a].content_id);
                else
                    assert_null(m.attachments[a].content_id);
                assert_int_equal(m.attachments[a].len, c->att[a].len);
            }
            for (int h = 0; h < 3 && c->html_has[h]; h++) {
                assert_non_null(m.html);
                if (strstr(m.html, c->html_has[h]) == NULL)
                    fail_msg("%s: html lacks %s: %s", c->file, c->html_has[h], m.html);
            }
            for (int h = 0; h < 8 && c->html_not[h]; h++)
                if (m.html && strcasestr(m.html, c->html_not[h]) != NULL)
                    fail_msg("%s: html keeps %s: %s", c->file, c->html_not[h], m.html);
        }
        kf_pool_destroy(&pool);
        free(raw);
    }
}

static void
test_limits(void **state)
{
    (void) state;
    size_t len;
    char *raw = slurp("rfc2231.eml", &len);
    kf_pool *pool = kf_pool_create(4096);
    kf_email_msg m;
    const char *err = NULL;
    kf_email_limits small = {.max_size = 100, .max_parts = 500, .max_depth = 20};
    assert_int_equal(kf_email_parse(pool, raw, len, &small, &m, &err), KF_EINVAL);
    kf_email_limits few = {.max_size = 1 << 20, .max_parts = 2, .max_depth = 20};
    assert_int_equal(kf_email_parse(pool, raw, len, &few, &m, &err), KF_EINVAL);
    assert_int_equal(kf_email_parse(pool, "", 0, NULL, &m, &err), KF_EINVAL);
    kf_pool_destroy(&pool);
    free(raw);
}

/* List-Id alone is bulk only where configured; Precedence: list always is. */
static void
test_list_id(void **state)
{
    (void) state;
    static const char list_only[] = "From: Customer <c@example.com>\r\nTo: support@kefu.test\r\n"
                                    "Subject: Help\r\nList-Id: <support.kefu.test>\r\n\r\nHi\r\n";
    static const char precedence[] = "From: c@example.com\r\nSubject: x\r\n"
                                     "Precedence: list\r\n\r\nHi\r\n";
    kf_pool *pool = kf_pool_create(4096);
    kf_email_msg m;
    const char *err = NULL;
    kf_email_limits lim = KF_EMAIL_DEFAULT_LIMITS;
    assert_int_equal(kf_email_parse(pool, list_only, sizeof(list_only) - 1, &lim, &m, &err), KF_OK);
    assert_int_equal(m.auto_submitted, 0);
    lim.list_id_is_bulk = 1;
    assert_int_equal(kf_email_parse(pool, list_only, sizeof(list_only) - 1, &lim, &m, &err), KF_OK);
    assert_int_equal(m.auto_submitted, 1);
    assert_string_equal(m.auto_reason, "List-Id");
    lim.list_id_is_bulk = 0;
    assert_int_equal(kf_email_parse(pool, precedence, sizeof(precedence) - 1, &lim, &m, &err), KF_OK);
    assert_int_equal(m.auto_submitted, 1);
    assert_string_equal(m.auto_reason, "precedence");
    kf_pool_destroy(&pool);
}

static void
test_decode_header(void **state)
{
    (void) state;
    static const struct {
        const char *in, *want;
    } t[] = {
        {"plain text", "plain text"},
        {"=?UTF-8?Q?a_b?= =?UTF-8?Q?c?=", "a bc"},
        /* a character split over two words of the same charset */
        {"=?UTF-8?B?5L2g?= =?UTF-8?B?5aW9?=", "你好"},
        {"=?gb2312?B?xOO6ww==?=", "你好"},
        {"=?x-nonexistent?Q?ok?=", "ok"},
        {"=?utf-8?b?broken", "=?utf-8?b?broken"},
        {"=?UTF-8*zh?B?5L2g?=", "你"},
        {"a\r\n b", "a b"},
        {"=?UTF-8?Q?=E4=BD=A0=ZZ?=", "你=ZZ"},
    };
    kf_pool *pool = kf_pool_create(1024);
    for (size_t i = 0; i < KF_ARRAY_LEN(t); i++) {
        char *got = kf_email_decode_header(pool, t[i].in);
        if (strcmp(got, t[i].want) != 0)
            fail_msg("decode(%s) = [%s], want [%s]", t[i].in, got, t[i].want);
    }
    /* Invalid bytes never survive: the result is always UTF-8. */
    char *g = kf_email_decode_header(pool, "=?utf-8?B?/w==?= \xff\xfe");
    assert_true(kf_utf8_valid(g, strlen(g)));
    kf_pool_destroy(&pool);
}

static void
test_sanitize(void **state)
{
    (void) state;
    static const struct {
        const char *in, *want;
        int remote;
    } t[] = {
        {"<p onclick=\"x()\">hi</p>", "<p>hi</p>", 0},
        {"<script>alert(1)</script>ok", "ok", 0},
        {"<a href=\"java&#x09;script:alert(1)\">x</a>",
         "<a rel=\"noopener noreferrer nofollow\" target=\"_blank\">x</a>", 0},
        {"<a href=\"mailto:a@b.c\">m</a>",
         "<a href=\"mailto:a@b.c\" rel=\"noopener noreferrer nofollow\" target=\"_blank\">m</a>", 0},
        {"<img src=\"https://t.example/p.gif\">", "<img>", 0},
        {"<img src=\"https://t.example/p.gif\">", "<img src=\"https://t.example/p.gif\">", 1},
        {"<img src=\"data:image/png;base64,AAAA\">", "<img>", 1},
        {"<iframe src=x></iframe><object data=x></object>after", "after", 0},
        {"<b>1 &lt; 2 &amp; \"q\"</b>", "<b>1 &lt; 2 &amp; \"q\"</b>", 0},
        {"<unknown-tag>kept text</unknown-tag>", "kept text", 0},
        {"<svg><a href=\"javascript:x\">s</a></svg>t", "t", 0},
        {"<table border=1><tr><td colspan=2 onmouseover=x>c</td></tr></table>",
         "<table border=\"1\"><tbody><tr><td colspan=\"2\">c</td></tr></tbody></table>", 0},
        {"<div style=\"background:url(x)\">d</div>", "<div>d</div>", 0},
        {"<noscript><img src=x onerror=alert(1)></noscript>n", "<img>n", 0},
    };
    kf_pool *pool = kf_pool_create(1024);
    for (size_t i = 0; i < KF_ARRAY_LEN(t); i++) {
        char *got = kf_html_sanitize(pool, t[i].in, strlen(t[i].in), t[i].remote);
        if (strcmp(got, t[i].want) != 0)
            fail_msg("sanitize(%s) = [%s], want [%s]", t[i].in, got, t[i].want);
    }
    /* 100000 nested elements: no stack exhaustion, text survives up to the tag bound. */
    kf_str deep = KF_STR_INIT;
    for (int i = 0; i < 100000; i++)
        kf_str_puts(&deep, "<div>");
    kf_str_puts(&deep, "x");
    char *got = kf_html_sanitize(pool, deep.ptr, deep.len, 0);
    assert_non_null(got);
    kf_str_free(&deep);
    char *text = kf_html_to_text(pool, "<p>One</p><p>Two<br>Three</p><script>x</script>", 48);
    assert_string_equal(text, "One\nTwo\nThree");
    kf_pool_destroy(&pool);
}

static void
test_fold(void **state)
{
    (void) state;
    static const struct {
        const char *text;
        int folds_at; /* -1: no fold */
    } t[] = {
        {"just text\nno quotes\n", -1},
        {"> only a quote at the top\nthen my text\n", -1},
        {"answer\n> q1\n> q2\n", 7},
        {"answer\n-----Original Message-----\nFrom: x\n", 7},
        {"answer\n-----原始邮件-----\n发件人: x\n", 7},
        {"好\n在 2024年3月4日，客服 写道：\n> 旧\n", 4},
        {"ok\nFrom: A <a@b>\nSent: Monday\nTo: x\n", 3},
        {"ok\nFrom: the shop, our new offer\nnothing else\n", -1},
        {"ok\n---------- Forwarded message ----------\nFrom: x\nDate: y\n", -1},
        {"", -1},
    };
    for (size_t i = 0; i < KF_ARRAY_LEN(t); i++) {
        size_t len = strlen(t[i].text);
        size_t got = kf_quote_fold(t[i].text, len);
        size_t want = t[i].folds_at < 0 ? len : (size_t) t[i].folds_at;
        if (got != want)
            fail_msg("fold(%s) = %zu, want %zu", t[i].text, got, want);
    }
}

static void
test_to_utf8(void **state)
{
    (void) state;
    kf_pool *pool = kf_pool_create(1024);
    size_t n;
    /* gb2312 label, GBK-only character: read as GB18030. */
    char *s = kf_email_to_utf8(pool, "gb2312", "\xe9\x46", 2, &n);
    assert_string_equal(s, "镕");
    /* Unknown label, UTF-8 bytes. */
    s = kf_email_to_utf8(pool, "x-klingon", "caf\xc3\xa9", 5, &n);
    assert_string_equal(s, "café");
    /* Mislabelled as UTF-8, really GBK. */
    s = kf_email_to_utf8(pool, "utf-8", "\xc4\xe3\xba\xc3", 4, &n);
    assert_string_equal(s, "你好");
    /* NULs and control characters dropped. */
    s = kf_email_to_utf8(pool, NULL, "a\0b\x01" "c", 5, &n);
    assert_string_equal(s, "abc");
    kf_pool_destroy(&pool);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),    cmocka_unit_test(test_limits),
        cmocka_unit_test(test_list_id),
        cmocka_unit_test(test_decode_header), cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_fold),      cmocka_unit_test(test_to_utf8),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    kf_email_lib_shutdown();
    return rc;
}
