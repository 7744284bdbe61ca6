/* unicode_nfc.c — Unicode NFC normalization (UAX #15), for tokenizer.json's NFC normalizer.
 *
 * The three steps run over one code-point buffer: full canonical decomposition (the generated
 * table applied recursively, Hangul syllables by arithmetic), canonical ordering (a stable sort
 * of each run of non-zero combining classes), then canonical composition (each character joins
 * the last starter unless blocked by a character of equal or higher class in between). A byte
 * that is not valid UTF-8 is carried as RAW_BYTE | byte: class 0, composes with nothing, and is
 * written back as the same byte. Text below U+0300 is already NFC and is copied as is.
 */
#include <stdlib.h>
#include <string.h>

#include "model/unicode.h"

#define RAW_BYTE 0x80000000u

/* Hangul syllables (Unicode §3.12) */
enum {
    H_SBASE = 0xAC00,
    H_LBASE = 0x1100,
    H_VBASE = 0x1161,
    H_TBASE = 0x11A7,
    H_LCOUNT = 19,
    H_VCOUNT = 21,
    H_TCOUNT = 28,
    H_NCOUNT = H_VCOUNT * H_TCOUNT,
    H_SCOUNT = H_LCOUNT * H_NCOUNT,
};

struct cpbuf {
    uint32_t *v;
    size_t n, cap;
};

static int cp_push(struct cpbuf *b, uint32_t cp) {
    if (b->n == b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 64;
        uint32_t *nv = realloc(b->v, nc * sizeof(*nv));
        if (!nv) return -1;
        b->v = nv;
        b->cap = nc;
    }
    b->v[b->n++] = cp;
    return 0;
}

static uint32_t ccc_of(uint32_t cp) {
    if (cp < 0x300 || (cp & RAW_BYTE)) return 0;
    size_t lo = 0, hi = unicode_n_ccc;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < unicode_ccc[mid].lo)
            hi = mid;
        else if (cp > unicode_ccc[mid].hi)
            lo = mid + 1;
        else
            return unicode_ccc[mid].ccc;
    }
    return 0;
}

static const struct unicode_decomp *decomp_find(uint32_t cp) {
    size_t lo = 0, hi = unicode_n_decomp;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < unicode_decomp[mid].cp)
            hi = mid;
        else if (cp > unicode_decomp[mid].cp)
            lo = mid + 1;
        else
            return &unicode_decomp[mid];
    }
    return NULL;
}

/* Primary composite of (A, B), or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= H_LBASE && a < H_LBASE + H_LCOUNT && b >= H_VBASE && b < H_VBASE + H_VCOUNT)
        return H_SBASE + ((a - H_LBASE) * H_VCOUNT + (b - H_VBASE)) * H_TCOUNT;
    if (a >= H_SBASE && a < H_SBASE + H_SCOUNT && (a - H_SBASE) % H_TCOUNT == 0 && b > H_TBASE &&
        b < H_TBASE + H_TCOUNT)
        return a + (b - H_TBASE);
    size_t lo = 0, hi = unicode_n_comp;
    uint64_t key = (uint64_t)a << 32 | b;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t k = (uint64_t)unicode_comp[mid].first << 32 | unicode_comp[mid].second;
        if (key < k)
            hi = mid;
        else if (key > k)
            lo = mid + 1;
        else
            return unicode_comp[mid].cp;
    }
    return 0;
}

/* Append the full canonical decomposition of CP (mappings nest at most a few levels). */
static int decompose(struct cpbuf *b, uint32_t cp) {
    if (cp >= H_SBASE && cp < H_SBASE + H_SCOUNT) {
        uint32_t s = cp - H_SBASE, t = s % H_TCOUNT;
        if (cp_push(b, H_LBASE + s / H_NCOUNT) < 0 ||
            cp_push(b, H_VBASE + (s % H_NCOUNT) / H_TCOUNT) < 0)
            return -1;
        return t ? cp_push(b, H_TBASE + t) : 0;
    }
    const struct unicode_decomp *d = cp < 0xC0 || (cp & RAW_BYTE) ? NULL : decomp_find(cp);
    if (!d) return cp_push(b, cp);
    if (decompose(b, d->first) < 0) return -1;
    return d->second ? decompose(b, d->second) : 0;
}

int unicode_nfc(const char *in, size_t len, char **out, size_t *out_len) {
    const unsigned char *u = (const unsigned char *)in;
    size_t i = 0;
    while (i < len && u[i] < 0xCC) /* every code point >= U+0300 has a lead byte >= 0xCC */
        i++;
    if (i == len) {
        *out = malloc(len > 0 ? len : 1);
        if (!*out) return -1;
        memcpy(*out, in, len);
        *out_len = len;
        return 0;
    }
    struct cpbuf b = {0};
    for (i = 0; i < len;) {
        uint32_t cp;
        int k = unicode_utf8_decode(u + i, len - i, &cp);
        if (decompose(&b, cp == UNICODE_INVALID ? RAW_BYTE | u[i] : cp) < 0) goto oom;
        i += (size_t)k;
    }
    /* canonical ordering: stable insertion sort inside each run of non-zero classes */
    for (size_t j = 1; j < b.n; j++) {
        uint32_t c = ccc_of(b.v[j]);
        if (c == 0) continue;
        for (size_t k = j; k > 0 && ccc_of(b.v[k - 1]) > c; k--) {
            uint32_t x = b.v[k];
            b.v[k] = b.v[k - 1];
            b.v[k - 1] = x;
        }
    }
    /* canonical composition, in place */
    size_t o = 0, starter = SIZE_MAX;
    uint32_t last_ccc = 0;
    for (size_t j = 0; j < b.n; j++) {
        uint32_t cp = b.v[j], c = ccc_of(cp);
        if (starter != SIZE_MAX && (o == starter + 1 || (last_ccc < c))) {
            uint32_t comp =
                (cp & RAW_BYTE) || (b.v[starter] & RAW_BYTE) ? 0 : compose(b.v[starter], cp);
            if (comp) {
                b.v[starter] = comp;
                continue;
            }
        }
        if (c == 0) starter = o;
        last_ccc = c;
        b.v[o++] = cp;
    }
    char *s = malloc(4 * o + 1);
    if (!s) goto oom;
    size_t n = 0;
    for (size_t j = 0; j < o; j++) {
        if (b.v[j] & RAW_BYTE)
            s[n++] = (char)(b.v[j] & 0xFF);
        else
            n += (size_t)unicode_utf8_encode(b.v[j], s + n);
    }
    free(b.v);
    *out = s;
    *out_len = n;
    return 0;
oom:
    free(b.v);
    return -1;
}
