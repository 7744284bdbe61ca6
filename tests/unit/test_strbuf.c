/* test_strbuf.c — model/strbuf.[ch]: appends, growth, take, and the sticky out-of-memory state. */
#include "model/strbuf.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

Test(strbuf, empty_take_is_an_empty_string) {
    struct strbuf b = {0};
    char *s = strbuf_take(&b);
    cr_assert_not_null(s);
    cr_expect_str_eq(s, "");
    cr_expect_null(b.p, "take leaves the buffer empty");
    free(s);
}

Test(strbuf, appends_grow_and_keep_embedded_nul) {
    struct strbuf b = {0};
    strbuf_add(&b, "a\0b", 3);
    cr_expect_eq(b.n, 3);
    cr_expect_eq(memcmp(b.p, "a\0b", 4), 0, "bytes kept, NUL after them");
    char want[20001];
    for (int i = 0; i < 20000; i++) { /* many appends: crosses several reallocations */
        want[i] = (char)('a' + i % 26);
        strbuf_add(&b, &want[i], 1);
    }
    want[20000] = 0;
    cr_expect_eq(b.n, 20003);
    cr_expect_str_eq(b.p + 3, want);
    strbuf_str(&b, "end");
    char *s = strbuf_take(&b);
    cr_expect_eq(strlen(s + 3), 20003);
    cr_expect_str_eq(s + 20003, "end");
    free(s);
}

Test(strbuf, failed_append_is_sticky_and_take_reports_it) {
    struct strbuf b = {0};
    strbuf_str(&b, "kept");
    strbuf_add(&b, "x", SIZE_MAX); /* cannot be allocated: marks the buffer out of memory */
    cr_expect(b.oom);
    strbuf_str(&b, "dropped");
    cr_expect_eq(b.n, 4, "appends after the failure are dropped");
    cr_expect_null(strbuf_take(&b));
    cr_expect(!b.oom && !b.p, "take frees and resets");
    strbuf_free(&b);
    strbuf_free(NULL);
}

Test(strbuf, printf_appends_short_and_long_results) {
    struct strbuf b = {0};
    strbuf_printf(&b, "%s=%d;", "n", 42);
    char big[1000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = 0;
    strbuf_printf(&b, "[%s]%.3f", big, 0.5); /* longer than the 256-byte first attempt */
    cr_expect_eq(b.n, 5 + 1 + 999 + 1 + 5);
    cr_expect(strncmp(b.p, "n=42;[zzz", 9) == 0);
    cr_expect_str_eq(b.p + b.n - 7, "z]0.500");
    strbuf_free(&b);
}
