/* pretok.c — the GPT-2, SmolLM, Llama-3 and Qwen2 pre-tokenizers as hand-written matchers.
 *
 * The text is decoded once into code points with their byte offsets and class flags; each
 * matcher then tries the regex alternatives in order at the current position, exactly as a
 * backtracking regex engine would, and returns where the match ends. A "segment" is the stretch
 * of text one regex sees: for SmolLM the digits pass cuts the text first, and the GPT-2 regex
 * runs on each cut separately, so its lookahead stops at the cut (HF Sequence semantics).
 */
#include "model/pretok.h"

#include <stdint.h>
#include <stdlib.h>

#include "model/unicode.h"

struct cps {
    const uint32_t *cp; /* (n) code points */
    const uint8_t *cls; /* (n) enum unicode_class flags; 0 = "other" */
    size_t b;           /* segment end (index into cp) */
};

static int is_l(const struct cps *s, size_t i) {
    return i < s->b && (s->cls[i] & UNICODE_L);
}
static int is_n(const struct cps *s, size_t i) {
    return i < s->b && (s->cls[i] & UNICODE_N);
}
static int is_s(const struct cps *s, size_t i) {
    return i < s->b && (s->cls[i] & UNICODE_SPACE);
}
static int is_other(const struct cps *s, size_t i) {
    return i < s->b && s->cls[i] == 0;
}
static int is_crlf(const struct cps *s, size_t i) {
    return i < s->b && (s->cp[i] == '\r' || s->cp[i] == '\n');
}

static size_t run_l(const struct cps *s, size_t i) {
    while (is_l(s, i))
        i++;
    return i;
}
static size_t run_n(const struct cps *s, size_t i) {
    while (is_n(s, i))
        i++;
    return i;
}
static size_t run_s(const struct cps *s, size_t i) {
    while (is_s(s, i))
        i++;
    return i;
}
static size_t run_other(const struct cps *s, size_t i) {
    while (is_other(s, i))
        i++;
    return i;
}

static uint32_t ascii_lower(uint32_t c) {
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* 's 't 're 've 'm 'll 'd at I: returns the end, or 0 when none. */
static size_t match_contraction(const struct cps *s, size_t i, int any_case) {
    if (s->cp[i] != '\'' || i + 1 >= s->b) return 0;
    uint32_t c1 = any_case ? ascii_lower(s->cp[i + 1]) : s->cp[i + 1];
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
    if (i + 2 >= s->b) return 0;
    uint32_t c2 = any_case ? ascii_lower(s->cp[i + 2]) : s->cp[i + 2];
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
        return i + 3;
    return 0;
}

/* \s+(?!\S)|\s+ at a whitespace code point I. */
static size_t match_space_run(const struct cps *s, size_t i) {
    size_t j = run_s(s, i);
    if (j == s->b) return j;      /* run reaches the end: all of it */
    if (j - i >= 2) return j - 1; /* leave the last one to prefix what follows */
    return j;                     /* a single one before a non-space: \s+ */
}

static size_t match_gpt2(const struct cps *s, size_t i) {
    size_t e = match_contraction(s, i, 0);
    if (e) return e;
    int sp = s->cp[i] == ' ';
    if (is_l(s, i)) return run_l(s, i);
    if (sp && is_l(s, i + 1)) return run_l(s, i + 1);
    if (is_n(s, i)) return run_n(s, i);
    if (sp && is_n(s, i + 1)) return run_n(s, i + 1);
    if (is_other(s, i)) return run_other(s, i);
    if (sp && is_other(s, i + 1)) return run_other(s, i + 1);
    return match_space_run(s, i); /* only whitespace is left */
}

/* The Llama-3 regex, with \p{N}{1,MAX_DIGITS} (3 for Llama-3, 1 for Qwen2's \p{N}). */
static size_t match_llama3(const struct cps *s, size_t i, size_t max_digits) {
    size_t e = match_contraction(s, i, 1);
    if (e) return e;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (is_l(s, i)) return run_l(s, i);
    if (!is_crlf(s, i) && !is_n(s, i) && is_l(s, i + 1)) return run_l(s, i + 1);
    /* \p{N}{1,3} */
    if (is_n(s, i)) {
        size_t j = i + 1;
        while (j < i + max_digits && is_n(s, j))
            j++;
        return j;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    size_t start = SIZE_MAX;
    if (is_other(s, i))
        start = i;
    else if (s->cp[i] == ' ' && is_other(s, i + 1))
        start = i + 1;
    if (start != SIZE_MAX) {
        size_t j = run_other(s, start);
        while (is_crlf(s, j))
            j++;
        return j;
    }
    /* \s*[\r\n]+ : the whitespace run up to and including its last CR/LF */
    size_t j = run_s(s, i);
    for (size_t k = j; k > i; k--)
        if (is_crlf(s, k - 1)) return k;
    return match_space_run(s, i);
}

static void split_segment(enum tok_pre pre, const struct cps *s, size_t a, const size_t *offs,
                          size_t *ends, size_t *n) {
    size_t i = a;
    while (i < s->b) {
        size_t e = pre == TOK_PRE_LLAMA3  ? match_llama3(s, i, 3)
                   : pre == TOK_PRE_QWEN2 ? match_llama3(s, i, 1)
                                          : match_gpt2(s, i);
        if (e <= i) e = i + 1; /* cannot happen; guarantees progress */
        ends[(*n)++] = offs[e];
        i = e;
    }
}

int pretok_split(enum tok_pre pre, const char *text, size_t len, size_t *ends, size_t *n_pieces) {
    *n_pieces = 0;
    if (len == 0) return 0;
    if (pre == TOK_PRE_NONE) {
        ends[(*n_pieces)++] = len;
        return 0;
    }
    uint32_t *cp = malloc(len * sizeof(*cp));
    uint8_t *cls = malloc(len);
    size_t *offs = malloc((len + 1) * sizeof(*offs));
    if (!cp || !cls || !offs) {
        free(cp);
        free(cls);
        free(offs);
        return -1;
    }
    const unsigned char *u = (const unsigned char *)text;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t c;
        int k = unicode_utf8_decode(u + i, len - i, &c);
        cp[n] = c;
        cls[n] = c == UNICODE_INVALID ? 0 : (uint8_t)unicode_class(c);
        offs[n] = i;
        n++;
        i += (size_t)k;
    }
    offs[n] = len;

    struct cps s = {cp, cls, n};
    if (pre == TOK_PRE_SMOLLM) {
        size_t a = 0;
        for (size_t i = 0; i <= n; i++) {
            if (i < n && !(cls[i] & UNICODE_N)) continue;
            s.b = i; /* non-digit run [a, i) */
            split_segment(TOK_PRE_GPT2, &s, a, offs, ends, n_pieces);
            if (i < n) ends[(*n_pieces)++] = offs[i + 1]; /* the digit alone */
            a = i + 1;
        }
    } else {
        split_segment(pre, &s, 0, offs, ends, n_pieces);
    }
    free(cp);
    free(cls);
    free(offs);
    return 0;
}
