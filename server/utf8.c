/* utf8.c — UTF-8 validation, longest valid prefix and U+FFFD repair (see utf8.h). One decoder,
 * utf8_char_len, written from Unicode table 3-7 (well-formed byte sequences); the other three
 * functions are loops over it, so they cannot disagree about what is valid. */
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

int utf8_char_len(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    unsigned char c = u[0];
    if (c < 0x80) return 1;
    int len;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte (table 3-7) */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong below U+0800 */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates U+D800..DFFF */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return -1; /* 80..C1 (continuation or overlong lead), F5..FF */
    }
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        unsigned char b = u[i];
        if (i == 1 ? b < lo || b > hi : b < 0x80 || b > 0xBF) return -i;
    }
    return len;
}

size_t utf8_valid_prefix(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int l = utf8_char_len(s + i, n - i);
        if (l <= 0) break;
        i += (size_t)l;
    }
    return i;
}

int utf8_valid(const char *s, size_t n) {
    return utf8_valid_prefix(s, n) == n;
}

char *utf8_sanitize(const char *s, size_t n, size_t *out_len) {
    /* each replaced byte grows to at most 3 (U+FFFD is EF BF BD) */
    if (n > (((size_t)-1) - 1) / 3) return NULL;
    char *out = malloc(3 * n + 1);
    if (!out) return NULL;
    size_t i = 0, o = 0;
    while (i < n) {
        int l = utf8_char_len(s + i, n - i);
        if (l > 0) {
            memcpy(out + o, s + i, (size_t)l);
            o += (size_t)l;
            i += (size_t)l;
            continue;
        }
        memcpy(out + o, "\xEF\xBF\xBD", 3);
        o += 3;
        i += l < 0 ? (size_t)-l : n - i; /* 0: an incomplete character ends the input */
    }
    out[o] = 0;
    if (out_len) *out_len = o;
    return out;
}
