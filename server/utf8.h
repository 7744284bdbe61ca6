/* utf8.h — UTF-8 checks for text that crosses the API: request strings (validated before they
 * can be tokenized or echoed) and generated text (cut or repaired before it goes into JSON).
 *
 * "Valid" is RFC 3629 / Unicode §3.9 table 3-7: no overlong forms, no surrogates (U+D800..DFFF),
 * nothing above U+10FFFF. Repair follows Unicode's "substitution of maximal subparts" (§3.9,
 * U+FFFD), which is what Python's bytes.decode("utf-8", "replace") and WHATWG decoders do, so a
 * client decoding our bytes leniently sees the same characters. Pure functions; any thread.
 */
#ifndef FG_UTF8_H
#define FG_UTF8_H

#include <stddef.h>

/* The character at S[0..N), N >= 1: its length (1..4) when it is complete and valid; 0 when
 * all N bytes are the valid start of a longer character (more bytes may complete it); -M when
 * it is invalid, M (>= 1) being the maximal subpart that one U+FFFD replaces. */
int utf8_char_len(const char *s, size_t n);

/* 1 when S[0..N) is valid UTF-8 throughout, 0 otherwise. */
int utf8_valid(const char *s, size_t n);

/* Bytes of S[0..N) before the first invalid or incomplete character: the longest prefix that is
 * valid UTF-8 (a stream may send this much and hold back the rest). */
size_t utf8_valid_prefix(const char *s, size_t n);

/* A malloc'd, NUL-terminated copy of S[0..N) in which every maximal invalid subpart (and an
 * incomplete character at the end) is replaced by U+FFFD; *OUT_LEN (may be NULL) gets its length.
 * NULL when out of memory. */
char *utf8_sanitize(const char *s, size_t n, size_t *out_len);

#endif
