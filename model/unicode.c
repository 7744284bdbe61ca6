/* unicode.c — UTF-8 coding, lossy repair and code-point classes for the tokenizer.
 *
 * UTF-8 validity follows Unicode §3.9 table 3-7 (the same rules as Rust and WHATWG): the second
 * byte's range depends on the lead byte (E0: A0..BF, ED: 80..9F, F0: 90..BF, F4: 80..8F), so
 * overlongs, surrogates and code points above U+10FFFF are rejected at the earliest byte, and a
 * "maximal subpart" of an ill-formed sequence becomes one U+FFFD.
 */
#include "model/unicode.h"

int unicode_class(uint32_t cp) {
    if (cp < 0x80) {
        if (cp >= 'a' && cp <= 'z') return UNICODE_L;
        if (cp >= 'A' && cp <= 'Z') return UNICODE_L;
        if (cp >= '0' && cp <= '9') return UNICODE_N;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return UNICODE_SPACE;
        return 0;
    }
    size_t lo = 0, hi = unicode_n_ranges;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < unicode_ranges[mid].lo)
            hi = mid;
        else if (cp > unicode_ranges[mid].hi)
            lo = mid + 1;
        else
            return (int)unicode_ranges[mid].flags;
    }
    return 0;
}

/* Length a lead byte announces (0 for a byte that cannot lead), and the allowed range of the
 * byte after it. */
static int utf8_lead(unsigned char b, unsigned char *lo2, unsigned char *hi2) {
    *lo2 = 0x80;
    *hi2 = 0xBF;
    if (b < 0x80) return 1;
    if (b < 0xC2) return 0;
    if (b < 0xE0) return 2;
    if (b < 0xF0) {
        if (b == 0xE0) *lo2 = 0xA0;
        if (b == 0xED) *hi2 = 0x9F;
        return 3;
    }
    if (b < 0xF5) {
        if (b == 0xF0) *lo2 = 0x90;
        if (b == 0xF4) *hi2 = 0x8F;
        return 4;
    }
    return 0;
}

/* Length of the valid prefix of the sequence starting at S: returns n == need when complete;
 * *need receives the announced length (0: invalid lead). */
static int utf8_prefix(const unsigned char *s, size_t len, int *need) {
    unsigned char lo2, hi2;
    int n = utf8_lead(s[0], &lo2, &hi2);
    *need = n;
    if (n <= 1) return n;
    int got = 1;
    while (got < n && (size_t)got < len) {
        unsigned char c = s[got];
        unsigned char lo = got == 1 ? lo2 : 0x80, hi = got == 1 ? hi2 : 0xBF;
        if (c < lo || c > hi) break;
        got++;
    }
    return got;
}

int unicode_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp) {
    int need;
    int got = utf8_prefix(s, len, &need);
    if (need == 0 || got < need) {
        *cp = UNICODE_INVALID;
        return 1;
    }
    switch (need) {
    case 1:
        *cp = s[0];
        break;
    case 2:
        *cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        break;
    case 3:
        *cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        break;
    default:
        *cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
              ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
    return need;
}

int unicode_utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t unicode_utf8_lossy(const unsigned char *in, size_t len, int final, char *out,
                          size_t *consumed) {
    size_t i = 0, o = 0;
    while (i < len) {
        if (in[i] < 0x80) { /* ASCII run */
            out[o++] = (char)in[i++];
            continue;
        }
        int need;
        int got = utf8_prefix(in + i, len - i, &need);
        if (need > 0 && got == need) {
            for (int k = 0; k < got; k++)
                out[o++] = (char)in[i + k];
            i += (size_t)got;
            continue;
        }
        if (need > 0 && i + (size_t)got == len && !final) break; /* incomplete, wait */
        if (got == 0) got = 1;
        out[o++] = (char)0xEF;
        out[o++] = (char)0xBF;
        out[o++] = (char)0xBD;
        i += (size_t)got;
    }
    if (consumed) *consumed = i;
    return o;
}
