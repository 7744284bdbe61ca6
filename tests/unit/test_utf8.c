/* test_utf8.c — server/utf8: validation, longest valid prefix and U+FFFD repair. The expected
 * repairs were produced by CPython 3.11, bytes.decode("utf-8", "replace").encode(), which
 * implements Unicode's substitution of maximal subparts; the inputs cover each row of Unicode
 * table 3-7 (overlongs, surrogates, > U+10FFFF, truncations). Random inputs check the
 * properties that tie the four functions together. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "server/utf8.h"
#include "tests/unit/test_util.h"

struct repair_case {
    const char *in;
    size_t n;
    const char *want;
    size_t want_n;
};

/* clang-format off */
static const struct repair_case CASES[] = {
    {"", 0, "", 0},
    {"\x61\x62\x63", 3, "\x61\x62\x63", 3},
    {"\x68\xc3\xa9\x6c\x6c\x6f\x20\xe2\x82\xac\xf0\x9d\x84\x9e", 14,
     "\x68\xc3\xa9\x6c\x6c\x6f\x20\xe2\x82\xac\xf0\x9d\x84\x9e", 14},
    {"\x80", 1, "\xef\xbf\xbd", 3},
    {"\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd", 6},
    {"\xc1\xbf", 2, "\xef\xbf\xbd\xef\xbf\xbd", 6},
    {"\xe0\x80\xaf", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 9},
    {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 9},
    {"\xf4\x90\x80\x80", 4, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 12},
    {"\xf5\x80", 2, "\xef\xbf\xbd\xef\xbf\xbd", 6},
    {"\xff", 1, "\xef\xbf\xbd", 3},
    {"\x61\xe2\x82", 3, "\x61\xef\xbf\xbd", 4},
    {"\xe2\x82\xe2\x82\xac", 5, "\xef\xbf\xbd\xe2\x82\xac", 6},
    {"\xf0\x9f\x98", 3, "\xef\xbf\xbd", 3},
    {"\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80", 4},
    {"\xe2\x28\xa1", 3, "\xef\xbf\xbd\x28\xef\xbf\xbd", 7},
    {"\xf1\x80\x80\xc0", 4, "\xef\xbf\xbd\xef\xbf\xbd", 6},
    {"\x61\x00\x62", 3, "\x61\x00\x62", 3}, /* NUL is a valid character */
};
/* clang-format on */

Test(utf8, sanitize_matches_python_replace) {
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const struct repair_case *c = &CASES[i];
        size_t n = 99;
        char *s = utf8_sanitize(c->in, c->n, &n);
        cr_assert(s, "case %zu", i);
        cr_expect_eq(n, c->want_n, "case %zu: length %zu, want %zu", i, n, c->want_n);
        cr_expect(n == c->want_n && memcmp(s, c->want, n) == 0, "case %zu: bytes differ", i);
        cr_expect_eq(s[n], 0, "case %zu: not NUL-terminated", i);
        cr_expect_eq(utf8_valid(c->in, c->n), c->n == c->want_n && !memcmp(c->in, c->want, c->n),
                     "case %zu: utf8_valid disagrees with the repair", i);
        free(s);
    }
}

Test(utf8, char_len_kinds) {
    cr_expect_eq(utf8_char_len("a", 1), 1);
    cr_expect_eq(utf8_char_len("\xc3\xa9", 2), 2);
    cr_expect_eq(utf8_char_len("\xe2\x82\xac", 3), 3);
    cr_expect_eq(utf8_char_len("\xf0\x9f\x98\x80", 4), 4);
    cr_expect_eq(utf8_char_len("\xf0\x9f\x98", 3), 0, "a 4-byte start with 3 bytes is incomplete");
    cr_expect_eq(utf8_char_len("\xe2", 1), 0);
    cr_expect_eq(utf8_char_len("\xed\xa0\x80", 3), -1, "surrogate: the lead byte alone");
    cr_expect_eq(utf8_char_len("\xe2\x82\x41", 3), -2, "two bytes of a 3-byte character");
    cr_expect_eq(utf8_char_len("\xbf", 1), -1, "a lone continuation byte");
    cr_expect_eq(utf8_char_len("\xf4\x8f\xbf\xbf", 4), 4, "U+10FFFF is valid");
    cr_expect_eq(utf8_char_len("\xef\xbf\xbf", 3), 3, "U+FFFF is valid");
}

Test(utf8, valid_prefix_stops_before_incomplete_or_invalid) {
    cr_expect_eq(utf8_valid_prefix("ab\xe2\x82", 4), 2);
    cr_expect_eq(utf8_valid_prefix("ab\xe2\x82\xac", 5), 5);
    cr_expect_eq(utf8_valid_prefix("\xc3\xa9\xff\x61", 4), 2);
    cr_expect_eq(utf8_valid_prefix("", 0), 0);
}

/* Random byte strings biased towards UTF-8 lead and continuation bytes: the repair is always
 * valid, leaves valid input unchanged, and the valid prefix is a prefix of the repair. */
Test(utf8, random_properties) {
    uint64_t seed = (uint64_t)time(NULL) | 1;
    static const unsigned char pool[] = {0x41, 0x00, 0x7f, 0x80, 0xbf, 0xc2, 0xc3, 0xdf, 0xe0,
                                         0xe2, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff, 0x9f, 0xa0};
    unsigned char buf[24];
    for (int it = 0; it < 20000; it++) {
        size_t n = (size_t)(tu_next(&seed) % sizeof buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = pool[tu_next(&seed) % sizeof pool];
        const char *s = (const char *)buf;
        size_t m;
        char *r = utf8_sanitize(s, n, &m);
        cr_assert(r);
        cr_assert(utf8_valid(r, m), "seed %llu: repair not valid", (unsigned long long)seed);
        size_t p = utf8_valid_prefix(s, n);
        cr_assert(p <= n && utf8_valid(s, p));
        cr_assert(m >= p && memcmp(r, s, p) == 0, "repair must keep the valid prefix");
        if (utf8_valid(s, n))
            cr_assert(m == n && memcmp(r, s, n) == 0);
        else
            cr_assert(p < n);
        free(r);
    }
}
