/*
 * test_webform.c - the pure parts of the web form channel: the urlencoded
 * parser (table-driven), form bodies in both encodings, form tokens, the
 * template renderer's escaping and sections, language negotiation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "kefu/pool.h"
#include "kefu/webform.h"

static const kf_form_limits LIM = {
    .max_fields = 8, .max_files = 2, .max_name = 16, .max_value = 64, .max_total = 4096};

/* ---- urlencoded ---- */

struct ue_case {
    const char *name, *input;
    int ok;
    const char *want; /* "k=v|k=v" of the decoded fields, when ok */
    int too_large;
};

static const struct ue_case ue_cases[] = {
    {"empty body", "", 1, "", 0},
    {"one pair", "a=1", 1, "a=1", 0},
    {"plus and escapes", "name=Ann+Lee&s=%E4%BD%A0%E5%A5%BD%21", 1, "name=Ann Lee|s=你好!", 0},
    {"empty sequences skipped", "&a=1&&b=2&", 1, "a=1|b=2", 0},
    {"no equals sign", "flag&a=", 1, "flag=|a=", 0},
    {"equals in value", "a=b=c", 1, "a=b=c", 0},
    {"repeated names kept", "a=1&a=2", 1, "a=1|a=2", 0},
    {"bad escape", "a=%zz", 0, NULL, 0},
    {"truncated escape", "a=%4", 0, NULL, 0},
    {"NUL escape", "a=%00", 0, NULL, 0},
    {"invalid UTF-8", "a=%C3%28", 0, NULL, 0},
    {"overlong UTF-8", "a=%C0%AF", 0, NULL, 0},
    {"empty name", "=x", 0, NULL, 0},
    {"name too long", "abcdefghijklmnopq=1", 0, NULL, 1},
    {"too many fields", "a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9", 0, NULL, 1},
    {"value too long",
     "a=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 0, NULL,
     1},
};

static void
test_urlencoded_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(ue_cases) / sizeof(ue_cases[0]); i++) {
        const struct ue_case *tc = &ue_cases[i];
        kf_pool *pool = kf_pool_create(1024);
        kf_form f;
        const char *error = NULL;
        int rc = kf_urlencoded_parse(pool, tc->input, strlen(tc->input), &LIM, &f, &error);
        if ((rc == KF_OK) != tc->ok)
            fail_msg("%s: got rc %d (%s), want %s", tc->name, rc, error ? error : "-",
                     tc->ok ? "ok" : "error");
        if (tc->ok) {
            kf_str got = KF_STR_INIT;
            kf_str_append(&got, "", 0);
            for (size_t k = 0; k < f.n_fields; k++)
                kf_str_printf(&got, "%s%s=%s", k ? "|" : "", f.fields[k].name, f.fields[k].value);
            if (strcmp(got.ptr, tc->want) != 0)
                fail_msg("%s: got \"%s\", want \"%s\"", tc->name, got.ptr, tc->want);
            kf_str_free(&got);
        } else if (f.too_large != tc->too_large) {
            fail_msg("%s: too_large %d, want %d", tc->name, f.too_large, tc->too_large);
        }
        kf_pool_destroy(&pool);
    }
}

static void
test_form_parse_encodings(void **state)
{
    (void)state;
    kf_pool *pool = kf_pool_create(1024);
    const char *error = NULL;
    kf_form f;
    size_t n = 0;
    static const char mp[] =
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"name\"\r\n\r\n"
        "Ann\r\n"
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"attachments\"; filename=\"\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
        "\r\n"
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"attachments\"; "
        "filename=\"a.txt\"\r\n\r\n"
        "hello\r\n"
        "--XyZ--\r\n";

    assert_int_equal(kf_form_parse(pool, "multipart/form-data; boundary=XyZ", mp, sizeof(mp) - 1,
                                   &LIM, &f, &error),
                     KF_OK);
    assert_string_equal(kf_form_get(&f, "name", &n), "Ann");
    assert_int_equal(n, 1);
    assert_int_equal(f.n_files, 1); /* the empty file input is dropped */
    assert_string_equal(f.files[0].filename, "a.txt");
    assert_int_equal(f.files[0].len, 5);

    assert_int_equal(kf_form_parse(pool, "Application/X-WWW-Form-Urlencoded; charset=utf-8", "a=1",
                                   3, &LIM, &f, &error),
                     KF_OK);
    assert_string_equal(kf_form_get(&f, "a", NULL), "1");
    assert_null(kf_form_get(&f, "b", NULL));

    assert_int_equal(kf_form_parse(pool, "application/json", "{}", 2, &LIM, &f, &error), KF_EINVAL);
    assert_true(f.unsupported);
    assert_int_equal(kf_form_parse(pool, NULL, "", 0, &LIM, &f, &error), KF_EINVAL);
    assert_true(f.unsupported);
    kf_pool_destroy(&pool);
}

/* ---- form tokens ---- */

static void
test_form_token(void **state)
{
    (void)state;
    unsigned char key[KF_FORM_KEY_LEN], other[KF_FORM_KEY_LEN];
    char tok[KF_FORM_TOKEN_MAX];
    kf_pool *pool = kf_pool_create(256);
    int64_t issued = 0;
    const char *nonce = NULL;

    memset(key, 7, sizeof(key));
    memset(other, 8, sizeof(other));
    kf_form_token_make(key, "new", "", 1000, tok);
    assert_int_equal(kf_form_token_check(key, "new", "", tok, 1005, 3600, pool, &issued, &nonce),
                     KF_FORM_TOKEN_OK);
    assert_int_equal(issued, 1000);
    assert_int_equal(strlen(nonce), 16);
    /* another key, form, binding: forged */
    assert_int_equal(kf_form_token_check(other, "new", "", tok, 1005, 3600, pool, NULL, NULL),
                     KF_FORM_TOKEN_BAD);
    assert_int_equal(kf_form_token_check(key, "signin", "", tok, 1005, 3600, pool, NULL, NULL),
                     KF_FORM_TOKEN_BAD);
    assert_int_equal(kf_form_token_check(key, "new", "x", tok, 1005, 3600, pool, NULL, NULL),
                     KF_FORM_TOKEN_BAD);
    /* age */
    assert_int_equal(kf_form_token_check(key, "new", "", tok, 1000 + 3601, 3600, pool, NULL, NULL),
                     KF_FORM_TOKEN_EXPIRED);
    assert_int_equal(kf_form_token_check(key, "new", "", tok, 900, 3600, pool, NULL, NULL),
                     KF_FORM_TOKEN_EXPIRED);
    /* tampering with the time or the MAC */
    char bad[KF_FORM_TOKEN_MAX];
    snprintf(bad, sizeof(bad), "%s", tok);
    bad[0] = '2';
    assert_int_equal(kf_form_token_check(key, "new", "", bad, 2005, 3600, pool, NULL, NULL),
                     KF_FORM_TOKEN_BAD);
    snprintf(bad, sizeof(bad), "%s", tok);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == 'A' ? 'B' : 'A';
    assert_int_equal(kf_form_token_check(key, "new", "", bad, 1005, 3600, pool, NULL, NULL),
                     KF_FORM_TOKEN_BAD);
    static const char *const junk[] = {"",  "abc", "1.2.3", "1000..x", "-5.AAAAAAAAAAAAAAAA.x",
                                       NULL};
    for (size_t i = 0; junk[i]; i++)
        assert_int_equal(kf_form_token_check(key, "new", "", junk[i], 1005, 3600, pool, NULL, NULL),
                         KF_FORM_TOKEN_BAD);
    assert_int_equal(kf_form_token_check(key, "new", "", NULL, 1005, 3600, pool, NULL, NULL),
                     KF_FORM_TOKEN_BAD);
    kf_pool_destroy(&pool);
}

/* ---- templates ---- */

static const char *
partials(void *arg, const char *name, size_t *len_r)
{
    (void)arg;
    if (strcmp(name, "head") == 0) {
        *len_r = strlen("<h1>{{title}}</h1>");
        return "<h1>{{title}}</h1>";
    }
    return NULL;
}

static char *
render(const char *tmpl, const char *ctx_json, const char *cat_json, int *rc_r)
{
    json_t *ctx = json_loads(ctx_json, 0, NULL), *cat = json_loads(cat_json, 0, NULL);
    kf_str out = KF_STR_INIT;
    const char *error = NULL;
    *rc_r = kf_tmpl_render(&out, tmpl, strlen(tmpl), ctx, cat, partials, NULL, &error);
    json_decref(ctx);
    json_decref(cat);
    return out.ptr;
}

struct tmpl_case {
    const char *name, *tmpl, *ctx, *want;
};

static const struct tmpl_case tmpl_cases[] = {
    {"escape", "<p>{{v}}</p>", "{\"v\": \"<script>&'\\\"\"}",
     "<p>&lt;script&gt;&amp;&#39;&quot;</p>"},
    {"dotted", "{{a.b}}", "{\"a\": {\"b\": \"x<\"}}", "x&lt;"},
    {"missing is empty", "[{{nope}}]", "{}", "[]"},
    {"number", "{{n}}", "{\"n\": 42}", "42"},
    {"array section", "{{#xs}}<i>{{.}}</i>{{/xs}}", "{\"xs\": [\"a\", \"<b>\"]}",
     "<i>a</i><i>&lt;b&gt;</i>"},
    {"object section", "{{#o}}{{k}}{{/o}}", "{\"o\": {\"k\": \"v\"}}", "v"},
    {"outer lookup", "{{#xs}}{{p}}{{n}};{{/xs}}",
     "{\"p\": \"-\", \"xs\": [{\"n\": 1}, {\"n\": 2}]}", "-1;-2;"},
    {"falsy", "{{#f}}no{{/f}}{{#e}}no{{/e}}{{#z}}no{{/z}}{{#s}}no{{/s}}ok",
     "{\"f\": false, \"e\": [], \"z\": 0, \"s\": \"\"}", "ok"},
    {"inverted", "{{^f}}yes{{/f}}{{^t}}no{{/t}}", "{\"f\": false, \"t\": true}", "yes"},
    {"nested same name", "{{#a}}({{#a}}x{{/a}}){{/a}}", "{\"a\": true}", "(x)"},
    {"comment", "a{{! ignore me }}b", "{}", "ab"},
    {"partial", "{{>head}}!", "{\"title\": \"T<\"}", "<h1>T&lt;</h1>!"},
    {"catalogue", "{{t.hello}}", "{\"who\": \"<Ann>\"}", "Hi &lt;Ann&gt;, {not a var} &amp; 你好"},
    {"missing key shows itself", "{{t.nope.key}}", "{}", "nope.key"},
    {"no raw output", "{{&v}}", "{\"&v\": \"x\", \"v\": \"<\"}", "x"},
};

static void
test_tmpl_table(void **state)
{
    (void)state;
    const char *cat = "{\"hello\": \"Hi {who}, {not a var} & 你好\"}";
    for (size_t i = 0; i < sizeof(tmpl_cases) / sizeof(tmpl_cases[0]); i++) {
        int rc;
        char *got = render(tmpl_cases[i].tmpl, tmpl_cases[i].ctx, cat, &rc);
        if (rc != KF_OK || strcmp(got, tmpl_cases[i].want) != 0)
            fail_msg("%s: rc %d, got \"%s\", want \"%s\"", tmpl_cases[i].name, rc, got,
                     tmpl_cases[i].want);
        free(got);
    }
}

static void
test_tmpl_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {"{{#a}}x", "{{/a}}", "{{a", "{{>nope}}", "{{}}", NULL};
    for (size_t i = 0; bad[i]; i++) {
        int rc;
        char *got = render(bad[i], "{\"a\": true}", "{}", &rc);
        if (rc != KF_EINVAL)
            fail_msg("template \"%s\" rendered (rc %d): %s", bad[i], rc, got);
        free(got);
    }
}

/* ---- languages ---- */

static void
test_lang(void **state)
{
    (void)state;
    struct {
        const char *header, *want;
    } cases[] = {
        {NULL, NULL},
        {"", NULL},
        {"fr-FR,fr;q=0.9", NULL},
        {"zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"},
        {"en-US,en;q=0.9,zh-CN;q=0.8", "en"},
        {"fr;q=1, zh-Hans-CN;q=0.7, en;q=0.6", "zh-CN"},
        {"en;q=0.2, zh;q=0.5", "zh-CN"},
        {"zh;q=0, en;q=0.1", "en"},
        {"ZH-tw", "zh-CN"},
        {"english", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = kf_webform_lang_negotiate(cases[i].header);
        if ((got == NULL) != (cases[i].want == NULL) ||
            (got != NULL && strcmp(got, cases[i].want) != 0))
            fail_msg("Accept-Language \"%s\": got %s, want %s",
                     cases[i].header ? cases[i].header : "(none)", got ? got : "(none)",
                     cases[i].want ? cases[i].want : "(none)");
    }
    assert_string_equal(kf_webform_lang_match("zh-CN", 5), "zh-CN");
    assert_null(kf_webform_lang_match("z", 1));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_urlencoded_table), cmocka_unit_test(test_form_parse_encodings),
        cmocka_unit_test(test_form_token),       cmocka_unit_test(test_tmpl_table),
        cmocka_unit_test(test_tmpl_malformed),   cmocka_unit_test(test_lang),
    };
    return cmocka_run_group_tests_name("webform", tests, NULL, NULL);
}
