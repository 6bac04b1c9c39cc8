/* multipart/form-data parsing (table-driven), and the attachment helpers:
 * type sniffing, filename cleaning, Content-Disposition. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "kefu/attachment.h"
#include "kefu/multipart.h"
#include "kefu/pool.h"

#define CT "multipart/form-data; boundary=XyZ"
#define PART(hdrs, body) "--XyZ\r\n" hdrs "\r\n" body "\r\n"
#define CD(name) "Content-Disposition: form-data; name=\"" name "\"\r\n"
#define END "--XyZ--\r\n"
#define BIN_BODY "--XyZ\r\n" CD("b") "\r\n\0\r\n\0--X\r\n--XyZ--"

static const kf_mp_limits LIM = {.max_parts = 4, .max_header_bytes = 256, .max_total = 4096};

/* ---- boundaries ---- */

struct boundary_case {
    const char *ctype, *want; /* want NULL = refused */
};

static const struct boundary_case boundaries[] = {
    {"multipart/form-data; boundary=abc", "abc"},
    {"Multipart/Form-Data;Boundary=abc", "abc"},
    {"multipart/form-data; boundary=\"a b:c?\"", "a b:c?"},
    {"multipart/form-data; charset=utf-8; boundary=----WebKitFormBoundary7MA4YWxk",
     "----WebKitFormBoundary7MA4YWxk"},
    {"multipart/form-data; boundary=abc;", "abc"},
    {"multipart/form-data", NULL},
    {"multipart/mixed; boundary=abc", NULL},
    {"text/plain; boundary=abc", NULL},
    {"multipart/form-data; boundary=", NULL},
    {"multipart/form-data; boundary=\"\"", NULL},
    {"multipart/form-data; boundary=\"ends with space \"", NULL},
    {"multipart/form-data; boundary=\"bad<char>\"", NULL},
    {"multipart/form-data; boundary=a; boundary=b", NULL},
    {"multipart/form-data; boundary=\"unterminated", NULL},
    {"multipart/form-data; boundary", NULL},
    {"multipart/form-data junk; boundary=a", NULL},
    {"multipart/form-data; boundary=12345678901234567890123456789012345678901234567890123456789012"
     "345678901",
     NULL}, /* 71 characters */
    {"multipart/form-data; boundary=1234567890123456789012345678901234567890123456789012345678901"
     "234567890",
     "1234567890123456789012345678901234567890123456789012345678901234567890"},
    {"", NULL},
};

static void
test_boundaries(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof(boundaries) / sizeof(boundaries[0]); i++) {
        const struct boundary_case *tc = &boundaries[i];
        kf_pool *pool = kf_pool_create(1024);
        const char *b = NULL, *error = NULL;
        int rc = kf_multipart_boundary(pool, tc->ctype, &b, &error);
        if (tc->want == NULL) {
            if (rc == KF_OK)
                fail_msg("case %zu (%s): accepted boundary \"%s\"", i, tc->ctype, b);
            assert_non_null(error);
        } else {
            if (rc != KF_OK)
                fail_msg("case %zu (%s): refused: %s", i, tc->ctype, error);
            assert_string_equal(b, tc->want);
        }
        kf_pool_destroy(&pool);
    }
}

/* ---- bodies ---- */

struct body_case {
    const char *what;
    const char *body;
    size_t len;    /* 0 = strlen */
    int ok;        /* 1 parse succeeds, 0 malformed, 2 a limit */
    size_t parts;  /* when ok */
    /* first part expectations (when ok) */
    const char *name, *filename, *ctype, *data;
    size_t data_len;
};

static const struct body_case bodies[] = {
    {"one field", PART(CD("a"), "hello") END, 0, 1, 1, "a", NULL, NULL, "hello", 5},
    {"empty content", PART(CD("a"), "") END, 0, 1, 1, "a", NULL, NULL, "", 0},
    {"file with type",
     PART("Content-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n"
          "Content-Type: text/plain\r\n",
          "x") END,
     0, 1, 1, "f", "a.txt", "text/plain", "x", 1},
    {"header names any case, OWS",
     PART("content-disposition:form-data ;  name=f;filename=b.bin  \r\n", "y") END, 0, 1, 1,
     "f", "b.bin", NULL, "y", 1},
    {"binary with NUL and CRLF inside", BIN_BODY, sizeof(BIN_BODY) - 1, 1, 1, "b", NULL, NULL,
     "\0\r\n\0--X", 7},
    {"filename* wins, UTF-8",
     PART("Content-Disposition: form-data; name=\"f\"; filename=\"fallback.txt\"; "
          "filename*=UTF-8''%E4%B8%AD%E6%96%87.txt\r\n",
          "z") END,
     0, 1, 1, "f", "\xe4\xb8\xad\xe6\x96\x87.txt", NULL, "z", 1},
    {"filename* ISO-8859-1",
     PART("Content-Disposition: form-data; name=\"f\"; filename*=iso-8859-1'en'caf%E9.txt\r\n",
          "z") END,
     0, 1, 1, "f", "caf\xc3\xa9.txt", NULL, "z", 1},
    {"raw UTF-8 filename (browsers)",
     PART("Content-Disposition: form-data; name=\"f\"; "
          "filename=\"\xe6\x8a\xa5\xe5\x91\x8a.pdf\"\r\n",
          "z") END,
     0, 1, 1, "f", "\xe6\x8a\xa5\xe5\x91\x8a.pdf", NULL, "z", 1},
    {"quoted-pair and Windows path",
     PART("Content-Disposition: form-data; name=\"f\"; filename=\"C:\\dir\\a\\\"b\\\\.txt\"\r\n",
          "z") END,
     0, 1, 1, "f", "C:\\dir\\a\"b\\.txt", NULL, "z", 1},
    {"two parts, epilogue ignored", PART(CD("a"), "1") PART(CD("b"), "2") "--XyZ--\r\nepilogue",
     0, 1, 2, "a", NULL, NULL, "1", 1},
    {"close delimiter without CRLF", PART(CD("a"), "1") "--XyZ--", 0, 1, 1, "a", NULL, NULL, "1",
     1},
    {"transport padding after delimiter", "--XyZ  \r\n" CD("a") "\r\nv\r\n--XyZ--", 0, 1, 1, "a",
     NULL, NULL, "v", 1},
    {"other headers ignored",
     PART(CD("a") "X-Whatever: 1\r\nContent-Transfer-Encoding: binary\r\n", "v") END, 0, 1, 1,
     "a", NULL, NULL, "v", 1},

    {"empty body", "", 0, 0, 0, NULL, NULL, NULL, NULL, 0},
    {"preamble", "hello\r\n" PART(CD("a"), "v") END, 0, 0, 0, NULL, NULL, NULL, NULL, 0},
    {"no parts", "--XyZ--\r\n", 0, 0, 0, NULL, NULL, NULL, NULL, 0},
    {"no close delimiter", PART(CD("a"), "v"), 0, 0, 0, NULL, NULL, NULL, NULL, 0},
    {"truncated in content", "--XyZ\r\n" CD("a") "\r\nabc", 0, 0, 0, NULL, NULL, NULL, NULL, 0},
    {"truncated in headers", "--XyZ\r\n" CD("a"), 0, 0, 0, NULL, NULL, NULL, NULL, 0},
    {"boundary inside content", PART(CD("a"), "x\r\n--XyZzz") END, 0, 0, 0, NULL, NULL, NULL,
     NULL, 0},
    {"text after the delimiter", "--XyZ junk\r\n" CD("a") "\r\nv\r\n--XyZ--", 0, 0, 0, NULL, NULL,
     NULL, NULL, 0},
    {"no Content-Disposition", PART("Content-Type: text/plain\r\n", "v") END, 0, 0, 0, NULL, NULL,
     NULL, NULL, 0},
    {"no headers at all", PART("", "v") END, 0, 0, 0, NULL, NULL, NULL, NULL, 0},
    {"not form-data", PART("Content-Disposition: attachment; name=\"a\"\r\n", "v") END, 0, 0, 0,
     NULL, NULL, NULL, NULL, 0},
    {"no name", PART("Content-Disposition: form-data; filename=\"a\"\r\n", "v") END, 0, 0, 0,
     NULL, NULL, NULL, NULL, 0},
    {"two dispositions", PART(CD("a") CD("b"), "v") END, 0, 0, 0, NULL, NULL, NULL, NULL, 0},
    {"two content types", PART(CD("a") "Content-Type: a/b\r\nContent-Type: c/d\r\n", "v") END, 0,
     0, 0, NULL, NULL, NULL, NULL, 0},
    {"duplicate parameter", PART("Content-Disposition: form-data; name=a; name=b\r\n", "v") END,
     0, 0, 0, NULL, NULL, NULL, NULL, 0},
    {"folded header", PART("Content-Disposition: form-data;\r\n name=\"a\"\r\n", "v") END, 0, 0,
     0, NULL, NULL, NULL, NULL, 0},
    {"bare LF in headers", "--XyZ\r\nContent-Disposition: form-data; name=a\n\r\n\r\nv\r\n--XyZ--",
     0, 0, 0, NULL, NULL, NULL, NULL, 0},
    {"bare CR in headers", "--XyZ\r\nContent-Disposition: form-data;\r name=a\r\n\r\nv\r\n--XyZ--",
     0, 0, 0, NULL, NULL, NULL, NULL, 0},
    {"base64 transfer encoding", PART(CD("a") "Content-Transfer-Encoding: base64\r\n", "dg==") END,
     0, 0, 0, NULL, NULL, NULL, NULL, 0},
    {"control character in a quoted value",
     PART("Content-Disposition: form-data; name=\"a\x01\"\r\n", "v") END, 0, 0, 0, NULL, NULL,
     NULL, NULL, 0},
    {"unterminated quote", PART("Content-Disposition: form-data; name=\"a\r\n", "v") END, 0, 0, 0,
     NULL, NULL, NULL, NULL, 0},
    {"filename not UTF-8",
     PART("Content-Disposition: form-data; name=a; filename=\"\xb1\xa8.txt\"\r\n", "v") END, 0, 0,
     0, NULL, NULL, NULL, NULL, 0},
    {"filename* bad charset",
     PART("Content-Disposition: form-data; name=a; filename*=GBK''%B1%A8\r\n", "v") END, 0, 0, 0,
     NULL, NULL, NULL, NULL, 0},
    {"filename* bad escape",
     PART("Content-Disposition: form-data; name=a; filename*=UTF-8''%E4%B8\r\n", "v") END, 0, 0, 0,
     NULL, NULL, NULL, NULL, 0},
    {"filename* NUL",
     PART("Content-Disposition: form-data; name=a; filename*=UTF-8''a%00b\r\n", "v") END, 0, 0,
     0, NULL, NULL, NULL, NULL, 0},
    {"filename* no quotes", PART("Content-Disposition: form-data; name=a; filename*=UTF-8%41\r\n",
                                 "v") END,
     0, 0, 0, NULL, NULL, NULL, NULL, 0},
    {"header name with space", PART("Content Disposition: form-data; name=a\r\n", "v") END, 0, 0,
     0, NULL, NULL, NULL, NULL, 0},

    {"too many parts", PART(CD("a"), "") PART(CD("b"), "") PART(CD("c"), "") PART(CD("d"), "")
                           PART(CD("e"), "") END,
     0, 2, 0, NULL, NULL, NULL, NULL, 0},
    {"header block too large",
     PART(CD("a") "X-Pad: "
                  "012345678901234567890123456789012345678901234567890123456789012345678901234567"
                  "890123456789012345678901234567890123456789012345678901234567890123456789012345"
                  "67890123456789012345678901234567890123456789012345678901234567890123456789\r\n",
          "v") END,
     0, 2, 0, NULL, NULL, NULL, NULL, 0},
};

static void
test_bodies(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        const struct body_case *tc = &bodies[i];
        kf_pool *pool = kf_pool_create(1024);
        kf_multipart mp;
        const char *error = NULL;
        size_t len = tc->len ? tc->len : strlen(tc->body);
        int rc = kf_multipart_parse(pool, CT, tc->body, len, &LIM, &mp, &error);
        if (tc->ok == 1) {
            if (rc != KF_OK)
                fail_msg("case \"%s\": refused: %s", tc->what, error);
            assert_int_equal(mp.n_parts, tc->parts);
            const kf_mp_part *p = &mp.parts[0];
            assert_string_equal(p->name, tc->name);
            if (tc->filename)
                assert_string_equal(p->filename, tc->filename);
            else
                assert_null(p->filename);
            if (tc->ctype)
                assert_string_equal(p->content_type, tc->ctype);
            else
                assert_null(p->content_type);
            assert_int_equal(p->len, tc->data_len);
            assert_memory_equal(p->data, tc->data, tc->data_len);
        } else {
            if (rc == KF_OK)
                fail_msg("case \"%s\": accepted", tc->what);
            assert_non_null(error);
            if (mp.too_large != (tc->ok == 2))
                fail_msg("case \"%s\": too_large=%d (%s)", tc->what, mp.too_large, error);
        }
        kf_pool_destroy(&pool);
    }
}

static void
test_total_limit(void **state)
{
    (void) state;
    kf_pool *pool = kf_pool_create(1024);
    kf_mp_limits small = {.max_parts = 4, .max_header_bytes = 256, .max_total = 10};
    kf_multipart mp;
    const char *error = NULL;
    const char *body = PART(CD("a"), "hello") END;
    assert_int_equal(kf_multipart_parse(pool, CT, body, strlen(body), &small, &mp, &error),
                     KF_EINVAL);
    assert_int_equal(mp.too_large, 1);
    kf_pool_destroy(&pool);
}

/* ---- attachment helpers ---- */

struct sniff_case {
    const char *data;
    size_t len;
    const char *want;
};

static const struct sniff_case sniffs[] = {
    {"\x89PNG\r\n\x1a\n....", 12, "image/png"},
    {"\xff\xd8\xff\xe0", 4, "image/jpeg"},
    {"GIF89a..", 8, "image/gif"},
    {"GIF87a", 6, "image/gif"},
    {"%PDF-1.7\n", 9, "application/pdf"},
    {"PK\x03\x04rest", 8, "application/zip"},
    {"PK\x05\x06", 4, "application/zip"},
    {"hello\tworld\r\n", 13, "text/plain; charset=utf-8"},
    {"\xe4\xb8\xad\xe6\x96\x87\n", 7, "text/plain; charset=utf-8"},
    {"<html><script>", 14, "text/plain; charset=utf-8"}, /* never text/html */
    {"a\0b", 3, "application/octet-stream"},
    {"\xe4\xb8", 2, "application/octet-stream"},
    {"\x1b[31m", 5, "application/octet-stream"},
    {"", 0, "application/octet-stream"},
    {"\x89PN", 3, "application/octet-stream"},
};

static void
test_sniff(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof(sniffs) / sizeof(sniffs[0]); i++) {
        const char *got =
            kf_attachment_sniff((const unsigned char *) sniffs[i].data, sniffs[i].len);
        if (strcmp(got, sniffs[i].want) != 0)
            fail_msg("sniff case %zu: %s, want %s", i, got, sniffs[i].want);
    }
}

struct name_case {
    const char *in, *want;
};

static const struct name_case names[] = {
    {"report.pdf", "report.pdf"},
    {"../../etc/passwd", "passwd"},
    {"C:\\Users\\me\\a.txt", "a.txt"},
    {"dir/", "attachment"},
    {"..", "attachment"},
    {"", "attachment"},
    {" .hidden. ", "hidden"},
    {"a\x01" "b\x7f" "c", "a_b_c"},
    {"\xe4\xb8\xad\xe6\x96\x87 \xe6\x8a\xa5\xe5\x91\x8a.docx", "\xe4\xb8\xad\xe6\x96\x87 "
                                                             "\xe6\x8a\xa5\xe5\x91\x8a.docx"},
    {"bad\xb1utf8", "bad_utf8"},
    {"rlo\xe2\x80\xaegpj.exe", "rlo_gpj.exe"},
};

static void
test_filename_clean(void **state)
{
    (void) state;
    kf_pool *pool = kf_pool_create(1024);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *got = kf_attachment_filename_clean(pool, names[i].in);
        if (strcmp(got, names[i].want) != 0)
            fail_msg("name case %zu: \"%s\", want \"%s\"", i, got, names[i].want);
    }
    /* 300 Chinese characters + ".txt": 255 characters, extension kept */
    char longname[300 * 3 + 5];
    for (int i = 0; i < 300; i++)
        memcpy(longname + 3 * i, "\xe4\xb8\xad", 3);
    memcpy(longname + 900, ".txt", 5);
    const char *got = kf_attachment_filename_clean(pool, longname);
    assert_int_equal(strlen(got), 251 * 3 + 4);
    assert_string_equal(got + 251 * 3, ".txt");
    kf_pool_destroy(&pool);
}

static void
test_disposition(void **state)
{
    (void) state;
    kf_pool *pool = kf_pool_create(1024);
    assert_string_equal(kf_attachment_disposition(pool, "a b.txt"),
                        "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt");
    assert_string_equal(kf_attachment_disposition(pool, "\xe4\xb8\xad\"x\\.txt"),
                        "attachment; filename=\"__x_.txt\"; "
                        "filename*=UTF-8''%E4%B8%AD%22x%5C.txt");
    kf_pool_destroy(&pool);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boundaries),  cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_total_limit), cmocka_unit_test(test_sniff),
        cmocka_unit_test(test_filename_clean), cmocka_unit_test(test_disposition),
    };
    return cmocka_run_group_tests_name("multipart", tests, NULL, NULL);
}
