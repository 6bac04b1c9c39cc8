/*
 * The IMAP literal parser (channels/email/imap_parse.c): literals matched
 * to UIDs whichever side of BODY[] the UID is on, text inside a message
 * never read as protocol, and lengths a server lies about refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../channels/email/email_internal.h"

#define S(x) x, sizeof(x) - 1

static void
test_one_literal(void **state)
{
    (void) state;
    size_t n = 0;
    const char *p = kf_imap_literal(S("* 1 FETCH (UID 7 BODY[] {5}\r\nhello)\r\nA1 OK done\r\n"),
                                    &n);
    assert_non_null(p);
    assert_int_equal(n, 5);
    assert_memory_equal(p, "hello", 5);
    /* short, unterminated, or not followed by ')' */
    assert_null(kf_imap_literal(S("* 1 FETCH (BODY[] {50}\r\nhello)"), &n));
    assert_null(kf_imap_literal(S("* 1 FETCH (BODY[] {5}\r\nhello"), &n));
    assert_null(kf_imap_literal(S("* 1 FETCH (BODY[] {4}\r\nhello)"), &n));
    assert_null(kf_imap_literal(S("* 1 FETCH (BODY[] {}\r\n)"), &n));
    assert_null(kf_imap_literal(S("* 1 FETCH (BODY[] {5}"), &n));
    /* a length that would wrap around */
    assert_null(kf_imap_literal(S("* 1 FETCH (BODY[] {18446744073709551615}\r\nx)"), &n));
    assert_null(kf_imap_literal(S("* 1 FETCH (BODY[] {99999999999999999999999}\r\nx)"), &n));
}

static void
test_chunk(void **state)
{
    (void) state;
    /* UID before and after the literal; the second message contains text that
     * looks like protocol, which must not be read as a third FETCH */
    static const char t[] = "* 1 FETCH (UID 10 BODY[] {3}\r\nabc)\r\n"
                            "* 2 FETCH (BODY[] {32}\r\nx * 3 FETCH (UID 12 BODY[] {1}\r\n UID 11)\r\n"
                            "* 4 FETCH (UID 13 BODY[] {2}\r\nzz)\r\n"
                            "A5 OK FETCH completed\r\n";
    uint64_t uids[] = {10, 11, 12, 13, 14};
    const char *raws[5] = {0};
    size_t lens[5] = {0};
    kf_imap_literals(t, sizeof(t) - 1, uids, 5, raws, lens);
    assert_non_null(raws[0]);
    assert_int_equal(lens[0], 3);
    assert_memory_equal(raws[0], "abc", 3);
    assert_non_null(raws[1]);
    assert_int_equal(lens[1], 32);
    assert_memory_equal(raws[1], "x * 3 FETCH (UID 12 BODY[] {1}\r\n", 32);
    assert_null(raws[2]); /* only inside message 11 */
    assert_non_null(raws[3]);
    assert_memory_equal(raws[3], "zz", 2);
    assert_null(raws[4]);
}

static void
test_chunk_lies(void **state)
{
    (void) state;
    uint64_t uids[] = {1};
    const char *raws[1] = {0};
    size_t lens[1] = {0};
    kf_imap_literals(S("* 1 FETCH (UID 1 BODY[] {18446744073709551615}\r\nabc)\r\n"), uids, 1,
                     raws, lens);
    assert_null(raws[0]);
    kf_imap_literals(S("* 1 FETCH (UID 1 BODY[] {100}\r\nabc)\r\n"), uids, 1, raws, lens);
    assert_null(raws[0]);
    kf_imap_literals(S("* 1 FETCH (UID 1 BODY[] {3}\r\nabc"), uids, 1, raws, lens);
    assert_null(raws[0]); /* the byte after the literal is missing */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_literal),
        cmocka_unit_test(test_chunk),
        cmocka_unit_test(test_chunk_lies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
