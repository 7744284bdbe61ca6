/* unicode.h — the little Unicode the tokenizer needs: UTF-8 decoding and encoding, lossy UTF-8
 * repair (the way Rust's String::from_utf8_lossy and so Hugging Face decode), the code-point
 * classes behind the pre-tokenizer regexes (\p{L}, \p{N}, \s), and NFC normalization (the
 * normalizer of Qwen2's tokenizer.json).
 *
 * The class table is generated (tools/gen_unicode_tables.py → model/unicode_data.c) as sorted
 * ranges and searched by bisection; ASCII takes a fast path.
 */
#ifndef FG_UNICODE_H
#define FG_UNICODE_H

#include <stddef.h>
#include <stdint.h>

enum unicode_class {
    UNICODE_L = 1,     /* general category L* */
    UNICODE_N = 2,     /* general category N* */
    UNICODE_SPACE = 4, /* White_Space property */
};

/* Code point returned for a byte that does not start a valid UTF-8 sequence. It is outside
 * Unicode, so it has no class (it behaves like punctuation in the pre-tokenizers). */
#define UNICODE_INVALID 0xFFFFFFFFu

/* Class flags of CP (0 when none). */
int unicode_class(uint32_t cp);

/* Decode one code point from S (LEN > 0 bytes). Returns the bytes consumed (1..4). A byte that
 * does not begin a complete, valid sequence (overlong, surrogate, > U+10FFFF, truncated) yields
 * *cp = UNICODE_INVALID and consumes 1 byte. */
int unicode_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp);

/* Encode CP (<= 0x10FFFF) into OUT (room for 4); returns the length. */
int unicode_utf8_encode(uint32_t cp, char *out);

/* Copy IN to OUT, replacing each maximal ill-formed subsequence with U+FFFD (EF BF BD), as
 * String::from_utf8_lossy does. OUT needs room for 3 * LEN bytes. When FINAL is 0, a valid but
 * incomplete sequence at the very end is not consumed (left for more bytes); *consumed (may be
 * NULL) receives the bytes of IN used. Returns the bytes written to OUT. */
size_t unicode_utf8_lossy(const unsigned char *in, size_t len, int final, char *out,
                          size_t *consumed);

/* The generated table (model/unicode_data.c): sorted, disjoint, inclusive ranges. */
struct unicode_range {
    uint32_t lo, hi;
    uint32_t flags; /* enum unicode_class */
};
extern const struct unicode_range unicode_ranges[];
extern const size_t unicode_n_ranges;

/* NFC (UAX #15: canonical decomposition, canonical ordering, canonical composition) of IN (LEN
 * bytes) into a malloc'd *OUT of *OUT_LEN bytes (not NUL-terminated; non-NULL even when empty).
 * Bytes that are not valid UTF-8 pass through unchanged, and nothing composes across them.
 * Returns 0, or -1 when out of memory. */
int unicode_nfc(const char *in, size_t len, char **out, size_t *out_len);

/* The generated NFC tables (model/unicode_nfc_data.c, tools/gen_nfc_tables.py). */
struct unicode_ccc_range {
    uint32_t lo, hi; /* inclusive, sorted, disjoint */
    uint32_t ccc;    /* Canonical_Combining_Class, non-zero */
};
struct unicode_decomp {
    uint32_t cp, first, second; /* canonical mapping cp -> first [second]; second 0: singleton */
};
struct unicode_comp {
    uint32_t first, second, cp; /* primary composite; sorted by (first, second) */
};
extern const struct unicode_ccc_range unicode_ccc[];
extern const size_t unicode_n_ccc;
extern const struct unicode_decomp unicode_decomp[];
extern const size_t unicode_n_decomp;
extern const struct unicode_comp unicode_comp[];
extern const size_t unicode_n_comp;

#endif
