/* cpu_quant.c — weight-row × activation-rows products on GGUF blocks (kernels/cpu_quant.h).
 *
 * Block layouts (little-endian, from the ggml format: ggml-common.h, gguf-py quants.py):
 *   Q8_0  34 B: f16 d, int8 q[32]                          x = d q
 *   Q4_0  18 B: f16 d, u8 qs[16]                           x = d (q - 8), q = nibble
 *   Q4_1  20 B: f16 d, f16 m, u8 qs[16]                    x = d q + m
 *   Q5_0  22 B: f16 d, u32 qh, u8 qs[16]                   x = d (q - 16), q = nibble | bit << 4
 *   Q5_1  24 B: f16 d, f16 m, u32 qh, u8 qs[16]            x = d q + m
 *     (32-blocks: element j < 16 is the low nibble of qs[j], element j + 16 the high one; its
 *      fifth bit is bit j, resp. j + 16, of qh)
 *   Q4_K 144 B: f16 d, f16 dmin, u8 sc[12], u8 qs[128]     x = d s_j q - dmin m_j (8 subs of 32)
 *   Q5_K 176 B: f16 d, f16 dmin, u8 sc[12], u8 qh[32], u8 qs[128]
 *   Q6_K 210 B: u8 ql[128], u8 qh[64], int8 sc[16], f16 d  x = d s_g (q - 32) (16 groups of 16)
 *   Q2_K  84 B: u8 sc[16], u8 qs[64], f16 d, f16 dmin      x = d (sc_g & 15) q - dmin (sc_g >> 4)
 *   Q3_K 110 B: u8 hmask[32], u8 qs[64], u8 sc[12], f16 d  x = d (s_g - 32) (q - 4 · !hbit)
 *     (Q2_K/Q3_K: element 128h + 32j + l, l < 32, is the 2-bit field j of qs[32h + l], its group
 *      of 16 g = 8h + 2j + l / 16; Q3_K's third bit is bit 4h + j of hmask[l], its 6-bit scale
 *      s_g has low 4 bits in sc[g % 8] (low nibble for g < 8) and high 2 in field g / 4 of
 *      sc[8 + g % 4])
 *
 * Each weight block is unpacked into int8 values plus fp32 scale (and minimum) per group, then
 * multiplied with every activation row while it is in L1: one pass over the weights serves up
 * to CQ_MAX_ROWS tokens. The integer sums are exact; fp32 enters only in the per-group scaling.
 */
#include "cpu_quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_pool.h"
#include "model/gguf_quant.h"
#include "ops.h"

#define CQ_MAX_ROWS 16 /* activation rows per weight pass (the decode batch sizes, 1–16) */
/* How far ahead of the weight row in hand the x86 row loops prefetch (cpu_quant_x86.h). The
 * hardware prefetchers alone left the decode products latency-bound: on the 2026-12-03 VM (Xeon,
 * AVX-512 VNNI, 2 MB L2 a core) one core read Q8_0 rows from a 94 MB set at 7.8 GB/s against 27
 * from L2; prefetching 1, 2, 4, 8, 16 KB ahead gave 11.6, 14.3, 20.1, 22.4, 22.0 GB/s (Q4_1,
 * compute-bound at 10 GB/s, from 6.3 to 10). */
#ifndef CQ_PF_BYTES
#define CQ_PF_BYTES 8192
#endif
#define CQ_N_TYPES 10 /* weight types with a block product */

/* A 32-element activation block (Q8_0-style, the fp32 scale kept exact). */
struct cq_a32 {
    float d;     /* scale: x ≈ d q */
    int32_t sum; /* Σ q, for the weight types with a minimum */
    int8_t q[32];
};

/* Four consecutive activation blocks 4g .. 4g+3 rearranged for the AVX-512 VNNI Q4_1 decode
 * kernel (cq_x_q41_rows, kernels/cpu_quant_x86.h), made once per product and read by every
 * weight row; the blocks past a row's end zero. */
struct cq_a32x4 {
    int8_t lo[64]; /* q[0 .. 16) of each block, block after block */
    int8_t hi[64]; /* q[16 .. 32) of each block */
    float d[16];   /* each block's d, four times (its four int32 lanes) */
    float dsum[8]; /* per block: 0, d Σq (against the weight header pairs d, m) */
};

/* A 256-element activation block (Q8_K-style). */
struct cq_a256 {
    float d;
    int16_t bsum[16]; /* Σ q over each 16 consecutive elements */
    int8_t q[256];
};

static int cq_is_k(uint32_t type) {
    return type == GGUF_GGML_Q2_K || type == GGUF_GGML_Q3_K || type == GGUF_GGML_Q4_K ||
           type == GGUF_GGML_Q5_K || type == GGUF_GGML_Q6_K;
}

int cq_type_supported(uint32_t type) {
    switch (type) {
    case GGUF_GGML_Q8_0:
    case GGUF_GGML_Q4_0:
    case GGUF_GGML_Q4_1:
    case GGUF_GGML_Q5_0:
    case GGUF_GGML_Q5_1:
    case GGUF_GGML_Q2_K:
    case GGUF_GGML_Q3_K:
    case GGUF_GGML_Q4_K:
    case GGUF_GGML_Q5_K:
    case GGUF_GGML_Q6_K:
        return 1;
    default:
        return 0;
    }
}

size_t cq_act_row_bytes(uint32_t type, int k) {
    if (!cq_type_supported(type)) return 0;
    if (cq_is_k(type)) return (size_t)(k / 256) * sizeof(struct cq_a256);
    return (size_t)(k / 32) * sizeof(struct cq_a32);
}

/* Symmetric 8-bit quantization of N floats with one scale: d = max|x| / 127. */
static float cq_quant_block(const float *x, int n, int8_t *q) {
    float amax = 0;
    for (int i = 0; i < n; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
    for (int i = 0; i < n; i++) {
        long v = lrintf(x[i] * id);
        q[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    return d;
}

void cq_dequantize_act(uint32_t type, const void *qa, int k, float *x) {
    if (cq_is_k(type)) {
        const struct cq_a256 *b = qa;
        for (int i = 0; i < k; i++)
            x[i] = b[i / 256].d * b[i / 256].q[i % 256];
        return;
    }
    const struct cq_a32 *b = qa;
    for (int i = 0; i < k; i++)
        x[i] = b[i / 32].d * b[i / 32].q[i % 32];
}

/* The NB quantized blocks at A as ceil(NB / 4) struct cq_a32x4 at P. */
static void cq_prep_a32x4(const struct cq_a32 *a, int nb, struct cq_a32x4 *p) {
    memset(p, 0, sizeof(*p) * (size_t)((nb + 3) / 4));
    for (int i = 0; i < nb; i++) {
        struct cq_a32x4 *g = &p[i / 4];
        int b = i % 4;
        memcpy(g->lo + 16 * b, a[i].q, 16);
        memcpy(g->hi + 16 * b, a[i].q + 16, 16);
        for (int l = 0; l < 4; l++)
            g->d[4 * b + l] = a[i].d;
        g->dsum[2 * b + 1] = a[i].d * (float)a[i].sum;
    }
}

/* ---- weight block unpacking (shared by every variant) ---------------------------------- */

#define CQ_INLINE static inline __attribute__((always_inline))

CQ_INLINE uint16_t cq_rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}

CQ_INLINE float cq_f16(const uint8_t *p) {
    return gguf_fp16_to_fp32(cq_rd16(p));
}

/* 32 nibbles: element j < 16 low nibble of qs[j], element j + 16 the high one. */
CQ_INLINE void cq_nibbles(const uint8_t *qs, int8_t *q, int bias) {
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)((qs[j] & 0x0F) - bias);
        q[j + 16] = (int8_t)((qs[j] >> 4) - bias);
    }
}

CQ_INLINE void cq_nibbles5(const uint8_t *qh4, const uint8_t *qs, int8_t *q, int bias) {
    uint32_t qh =
        (uint32_t)qh4[0] | (uint32_t)qh4[1] << 8 | (uint32_t)qh4[2] << 16 | (uint32_t)qh4[3] << 24;
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)(((qs[j] & 0x0F) | ((qh >> j) & 1) << 4) - bias);
        q[j + 16] = (int8_t)(((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - bias);
    }
}

/* One 32-block of a 32-type: int8 q[32], scale d, minimum m (x = d q + m). */
CQ_INLINE void cq_unpack32(uint32_t type, const uint8_t *p, int8_t *q, float *d, float *m) {
    *m = 0;
    switch (type) {
    case GGUF_GGML_Q8_0:
        *d = cq_f16(p);
        memcpy(q, p + 2, 32);
        break;
    case GGUF_GGML_Q4_0:
        *d = cq_f16(p);
        cq_nibbles(p + 2, q, 8);
        break;
    case GGUF_GGML_Q4_1:
        *d = cq_f16(p);
        *m = cq_f16(p + 2);
        cq_nibbles(p + 4, q, 0);
        break;
    case GGUF_GGML_Q5_0:
        *d = cq_f16(p);
        cq_nibbles5(p + 2, p + 6, q, 16);
        break;
    default: /* Q5_1 */
        *d = cq_f16(p);
        *m = cq_f16(p + 2);
        cq_nibbles5(p + 4, p + 8, q, 0);
        break;
    }
}

/* The 6-bit scale and minimum of sub-block j of a Q4_K/Q5_K super-block (12 packed bytes). */
CQ_INLINE void cq_k4_scale(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | (s[j - 4] >> 6) << 4;
        *mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* The 6-bit scale of group g of a Q3_K super-block (12 packed bytes), before its offset of 32. */
CQ_INLINE int cq_k3_scale(const uint8_t *s, int g) {
    int lo = (g < 8 ? s[g] : s[g - 8] >> 4) & 0x0F;
    int hi = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
    return lo | hi << 4;
}

/* One 256-super-block of a K type: int8 q[256]; per group of 16, scale sc[g] and minimum
 * coefficient mn[g] (x = sc q - mn). */
CQ_INLINE void cq_unpack256(uint32_t type, const uint8_t *p, int8_t *q, float *sc, float *mn) {
    if (type == GGUF_GGML_Q2_K || type == GGUF_GGML_Q3_K) {
        const uint8_t *hm = p, *qs = type == GGUF_GGML_Q2_K ? p + 16 : p + 32;
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++) {
                    int v = (qs[32 * h + l] >> (2 * j)) & 3;
                    if (type == GGUF_GGML_Q3_K && !((hm[l] >> (4 * h + j)) & 1)) v -= 4;
                    q[128 * h + 32 * j + l] = (int8_t)v;
                }
        if (type == GGUF_GGML_Q2_K) {
            float d = cq_f16(p + 80), dmin = cq_f16(p + 82);
            for (int g = 0; g < 16; g++) {
                sc[g] = d * (float)(p[g] & 0x0F);
                mn[g] = dmin * (float)(p[g] >> 4);
            }
        } else {
            const uint8_t *s = p + 96;
            float d = cq_f16(p + 108);
            for (int g = 0; g < 16; g++) {
                sc[g] = d * (float)(cq_k3_scale(s, g) - 32);
                mn[g] = 0;
            }
        }
        return;
    }
    if (type == GGUF_GGML_Q6_K) {
        const uint8_t *ql = p, *qh = p + 128;
        const int8_t *s = (const int8_t *)(p + 192);
        float d = cq_f16(p + 208);
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, q += 128)
            for (int l = 0; l < 32; l++) {
                q[l] = (int8_t)(((ql[l] & 0x0F) | ((qh[l] >> 0) & 3) << 4) - 32);
                q[l + 32] = (int8_t)(((ql[l + 32] & 0x0F) | ((qh[l] >> 2) & 3) << 4) - 32);
                q[l + 64] = (int8_t)(((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32);
                q[l + 96] = (int8_t)(((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32);
            }
        for (int g = 0; g < 16; g++) {
            sc[g] = d * (float)s[g];
            mn[g] = 0;
        }
        return;
    }
    float d = cq_f16(p), dmin = cq_f16(p + 2);
    const uint8_t *scales = p + 4;
    const uint8_t *qh = type == GGUF_GGML_Q5_K ? p + 16 : NULL;
    const uint8_t *qs = type == GGUF_GGML_Q5_K ? p + 48 : p + 16;
    for (int c = 0; c < 4; c++, qs += 32) {
        for (int l = 0; l < 32; l++) {
            int lo = qs[l] & 0x0F, hi = qs[l] >> 4;
            if (qh) {
                lo |= ((qh[l] >> (2 * c)) & 1) << 4;
                hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
            }
            q[64 * c + l] = (int8_t)lo;
            q[64 * c + 32 + l] = (int8_t)hi;
        }
    }
    for (int j = 0; j < 8; j++) {
        int s, m;
        cq_k4_scale(scales, j, &s, &m);
        sc[2 * j] = sc[2 * j + 1] = d * (float)s;
        mn[2 * j] = mn[2 * j + 1] = dmin * (float)m;
    }
}

/* ---- the products, one body per block family ------------------------------------------- */

CQ_INLINE int32_t cq_idot(const int8_t *a, const int8_t *b, int n) {
    int32_t s = 0;
    for (int i = 0; i < n; i++)
        s += (int32_t)a[i] * b[i];
    return s;
}

CQ_INLINE void cq_body32(uint32_t type, size_t bbytes, const uint8_t *w, const uint8_t *qa,
                         size_t qa_stride, int n_rows, int nb, float *out) {
    float acc[CQ_MAX_ROWS] = {0};
    for (int i = 0; i < nb; i++) {
        int8_t q[32];
        float d, m;
        cq_unpack32(type, w + (size_t)i * bbytes, q, &d, &m);
        for (int r = 0; r < n_rows; r++) {
            const struct cq_a32 *a = (const struct cq_a32 *)(qa + r * qa_stride) + i;
            acc[r] += a->d * (d * (float)cq_idot(q, a->q, 32) + m * (float)a->sum);
        }
    }
    for (int r = 0; r < n_rows; r++)
        out[r] = acc[r];
}

CQ_INLINE void cq_body256(uint32_t type, size_t bbytes, const uint8_t *w, const uint8_t *qa,
                          size_t qa_stride, int n_rows, int nb, float *out) {
    float acc[CQ_MAX_ROWS] = {0};
    for (int i = 0; i < nb; i++) {
        int8_t q[256];
        float sc[16], mn[16];
        cq_unpack256(type, w + (size_t)i * bbytes, q, sc, mn);
        for (int r = 0; r < n_rows; r++) {
            const struct cq_a256 *a = (const struct cq_a256 *)(qa + r * qa_stride) + i;
            float s = 0;
            for (int g = 0; g < 16; g++)
                s += sc[g] * (float)cq_idot(q + 16 * g, a->q + 16 * g, 16) -
                     mn[g] * (float)a->bsum[g];
            acc[r] += a->d * s;
        }
    }
    for (int r = 0; r < n_rows; r++)
        out[r] = acc[r];
}

/* One entry per (variant, type): the type constant folds into the body, so every type gets its
 * own unpacking loop compiled for the variant's ISA. */
#define CQ_DEFINE(ISA, TARGET, NAME, TYPE, BODY, BBYTES)                                           \
    TARGET static void cq_##NAME##_##ISA(const uint8_t *w, const uint8_t *qa, size_t qa_stride,    \
                                         int n_rows, int nb, float *out) {                         \
        BODY(TYPE, BBYTES, w, qa, qa_stride, n_rows, nb, out);                                     \
    }

#define CQ_DEFINE_ALL(ISA, TARGET)                                                                 \
    CQ_DEFINE(ISA, TARGET, q8_0, GGUF_GGML_Q8_0, cq_body32, 34)                                    \
    CQ_DEFINE(ISA, TARGET, q4_0, GGUF_GGML_Q4_0, cq_body32, 18)                                    \
    CQ_DEFINE(ISA, TARGET, q4_1, GGUF_GGML_Q4_1, cq_body32, 20)                                    \
    CQ_DEFINE(ISA, TARGET, q5_0, GGUF_GGML_Q5_0, cq_body32, 22)                                    \
    CQ_DEFINE(ISA, TARGET, q5_1, GGUF_GGML_Q5_1, cq_body32, 24)                                    \
    CQ_DEFINE(ISA, TARGET, q4_k, GGUF_GGML_Q4_K, cq_body256, 144)                                  \
    CQ_DEFINE(ISA, TARGET, q5_k, GGUF_GGML_Q5_K, cq_body256, 176)                                  \
    CQ_DEFINE(ISA, TARGET, q6_k, GGUF_GGML_Q6_K, cq_body256, 210)                                  \
    CQ_DEFINE(ISA, TARGET, q2_k, GGUF_GGML_Q2_K, cq_body256, 84)                                   \
    CQ_DEFINE(ISA, TARGET, q3_k, GGUF_GGML_Q3_K, cq_body256, 110)

/* The x86 variants are compiled under GCC's target pragmas; another compiler (clang, which the fuzz
 * build uses, knows neither those pragmas nor the "f16c" feature test) gets the plain-C body under
 * every name, and cq_isa_supported never selects them. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CQ_X86 1
#else
#define CQ_X86 0
#endif

CQ_DEFINE_ALL(c, )

/* One call of a row-loop kernel (cq_m_*): weight rows [o, end) against N_TOK (<= CQ_MAX_ROWS)
 * activation rows; out[t * out_stride + o] = (or +=) the product. */
struct cq_margs {
    const uint8_t *w; /* row 0 of the weight matrix */
    size_t row_bytes;
    const uint8_t *qa; /* the N_TOK quantized activation rows */
    size_t qa_stride;
    int n_tok, nb;
    float *out;
    size_t out_stride;
    int accumulate;
    const struct cq_a32x4 *prep; /* the N_TOK rows prepared (cq_matmul_preps), or NULL */
    size_t prep_stride;          /* struct cq_a32x4 a row */
};

typedef void (*cq_mkernel)(const struct cq_margs *g, size_t o, size_t end);

#if CQ_X86 /* the x86 row-pair loops' store */
CQ_INLINE void cq_put(const struct cq_margs *g, size_t o, float v) {
    float *y = g->out + o;
    *y = g->accumulate ? *y + v : v;
}
#endif

CQ_INLINE void cq_put_rows(const struct cq_margs *g, size_t o, const float *r) {
    for (int u = 0; u < g->n_tok; u++) {
        float *y = g->out + (size_t)u * g->out_stride + o;
        *y = g->accumulate ? *y + r[u] : r[u];
    }
}

#define CQ_MDEFINE(ISA, TARGET, NAME)                                                              \
    TARGET static void cq_m_##NAME##_##ISA(const struct cq_margs *g, size_t o, size_t end) {       \
        float r[CQ_MAX_ROWS];                                                                      \
        for (; o < end; o++) {                                                                     \
            cq_##NAME##_##ISA(g->w + o * g->row_bytes, g->qa, g->qa_stride, g->n_tok, g->nb, r);   \
            cq_put_rows(g, o, r);                                                                  \
        }                                                                                          \
    }

#define CQ_MDEFINE_ALL(ISA, TARGET)                                                                \
    CQ_MDEFINE(ISA, TARGET, q8_0)                                                                  \
    CQ_MDEFINE(ISA, TARGET, q4_0)                                                                  \
    CQ_MDEFINE(ISA, TARGET, q4_1)                                                                  \
    CQ_MDEFINE(ISA, TARGET, q5_0)                                                                  \
    CQ_MDEFINE(ISA, TARGET, q5_1)                                                                  \
    CQ_MDEFINE(ISA, TARGET, q4_k)                                                                  \
    CQ_MDEFINE(ISA, TARGET, q5_k)                                                                  \
    CQ_MDEFINE(ISA, TARGET, q6_k)                                                                  \
    CQ_MDEFINE(ISA, TARGET, q2_k)                                                                  \
    CQ_MDEFINE(ISA, TARGET, q3_k)

CQ_MDEFINE_ALL(c, )

/* One panel-product call (the AVX-512 VNNI variant's cq_panel_*, kernels/cpu_quant_x86.h). */
struct cq_pjob {
    const uint8_t *w; /* the weight matrix, ROWS rows of ROW_BYTES */
    size_t row_bytes;
    int rows, nb;      /* output rows; 32-blocks per row */
    const uint8_t *qa; /* (n, qa_stride) quantized activations */
    size_t qa_stride;
    const float *ds; /* (n, nb) each activation block's d · Σq */
    int n;
    float *out; /* (n, out_stride) */
    size_t out_stride;
    int accumulate;
};

typedef void (*cq_panel_fn)(const struct cq_pjob *j, int r0, void *buf);

#if CQ_X86
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define CQ_SUF avx2
#define CQ_VNNI 0
#include "cpu_quant_x86.h"
#undef CQ_SUF
#undef CQ_VNNI
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#define CQ_SUF avx512
#define CQ_VNNI 1
#include "cpu_quant_x86.h"
#undef CQ_SUF
#undef CQ_VNNI
#pragma GCC pop_options
#else /* other targets: the plain-C body stands in for the x86 variants (never selected) */
CQ_DEFINE_ALL(avx2, )
CQ_DEFINE_ALL(avx512, )
CQ_MDEFINE_ALL(avx2, )
CQ_MDEFINE_ALL(avx512, )
#endif

typedef void (*cq_kernel)(const uint8_t *w, const uint8_t *qa, size_t qa_stride, int n_rows, int nb,
                          float *out);

#define CQ_ROW(ISA)                                                                                \
    {                                                                                              \
        cq_q8_0_##ISA, cq_q4_0_##ISA, cq_q4_1_##ISA, cq_q5_0_##ISA, cq_q5_1_##ISA, cq_q4_k_##ISA,  \
            cq_q5_k_##ISA, cq_q6_k_##ISA, cq_q2_k_##ISA, cq_q3_k_##ISA                             \
    }

static const cq_kernel cq_kernels[CQ_ISA_COUNT][CQ_N_TYPES] = {CQ_ROW(c), CQ_ROW(avx2),
                                                               CQ_ROW(avx512)};

#define CQ_MROW(ISA)                                                                               \
    {                                                                                              \
        cq_m_q8_0_##ISA, cq_m_q4_0_##ISA, cq_m_q4_1_##ISA, cq_m_q5_0_##ISA, cq_m_q5_1_##ISA,       \
            cq_m_q4_k_##ISA, cq_m_q5_k_##ISA, cq_m_q6_k_##ISA, cq_m_q2_k_##ISA, cq_m_q3_k_##ISA    \
    }

static const cq_mkernel cq_mkernels[CQ_ISA_COUNT][CQ_N_TYPES] = {CQ_MROW(c), CQ_MROW(avx2),
                                                                 CQ_MROW(avx512)};

/* The panel products by cq_kernels' column (the 32-block types), AVX-512 VNNI only. */
#if CQ_X86
static const cq_panel_fn cq_panels[CQ_N_TYPES] = {cq_panel_q8_0_avx512, cq_panel_q4_0_avx512,
                                                  cq_panel_q4_1_avx512, cq_panel_q5_0_avx512,
                                                  cq_panel_q5_1_avx512};
#else
static const cq_panel_fn cq_panels[CQ_N_TYPES] = {0};
#endif

/* Column of cq_kernels for TYPE, or -1. */
static int cq_type_index(uint32_t type) {
    static const uint32_t order[CQ_N_TYPES] = {
        GGUF_GGML_Q8_0, GGUF_GGML_Q4_0, GGUF_GGML_Q4_1, GGUF_GGML_Q5_0, GGUF_GGML_Q5_1,
        GGUF_GGML_Q4_K, GGUF_GGML_Q5_K, GGUF_GGML_Q6_K, GGUF_GGML_Q2_K, GGUF_GGML_Q3_K};
    for (int i = 0; i < CQ_N_TYPES; i++)
        if (order[i] == type) return i;
    return -1;
}

/* ---- variant selection ----------------------------------------------------------------- */

const char *cq_isa_name(enum cq_isa isa) {
    static const char *names[CQ_ISA_COUNT] = {"c", "avx2", "avx512"};
    return isa >= 0 && isa < CQ_ISA_COUNT ? names[isa] : "unknown";
}

int cq_isa_supported(enum cq_isa isa) {
    switch (isa) {
    case CQ_ISA_C:
        return 1;
#if CQ_X86
    case CQ_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    case CQ_ISA_AVX512:
        return cq_isa_supported(CQ_ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512vnni");
#endif
    default:
        return 0;
    }
}

enum cq_isa cq_isa_best(void) {
    enum cq_isa best = CQ_ISA_C;
    for (int i = CQ_ISA_COUNT - 1; i > 0; i--)
        if (cq_isa_supported((enum cq_isa)i)) {
            best = (enum cq_isa)i;
            break;
        }
    const char *env = getenv("FLASHGEN_CPU_ISA");
    if (env)
        for (int i = 0; i < (int)best; i++)
            if (!strcmp(env, cq_isa_name((enum cq_isa)i))) return (enum cq_isa)i;
    return best;
}

/* ---- activation quantization (after the variants: the AVX2 one does the same maths) ----- */

void cq_quantize_act(uint32_t type, const float *x, int k, void *qa) {
    float (*quant)(const float *, int, int8_t *) = cq_quant_block;
#if CQ_X86
    if (cq_isa_supported(CQ_ISA_AVX2)) quant = cq_x_quant_block_avx2;
#endif
    if (cq_is_k(type)) {
        struct cq_a256 *b = qa;
        for (int i = 0; i < k / 256; i++, x += 256) {
            b[i].d = quant(x, 256, b[i].q);
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int j = 0; j < 16; j++)
                    s += b[i].q[16 * g + j];
                b[i].bsum[g] = (int16_t)s;
            }
        }
        return;
    }
    struct cq_a32 *b = qa;
    for (int i = 0; i < k / 32; i++, x += 32) {
        b[i].d = quant(x, 32, b[i].q);
        int s = 0;
        for (int j = 0; j < 32; j++)
            s += b[i].q[j];
        b[i].sum = s;
    }
}

/* ---- products ------------------------------------------------------------------------- */

void cq_dot_rows(enum cq_isa isa, uint32_t type, const void *w, const void *qa, size_t qa_stride,
                 int n_rows, int k, float *out) {
    int t = cq_type_index(type);
    if (t < 0 || isa < 0 || isa >= CQ_ISA_COUNT) return;
    int blk = cq_is_k(type) ? 256 : 32;
    for (int r0 = 0; r0 < n_rows; r0 += CQ_MAX_ROWS) {
        int nr = n_rows - r0 < CQ_MAX_ROWS ? n_rows - r0 : CQ_MAX_ROWS;
        cq_kernels[isa][t](w, (const uint8_t *)qa + (size_t)r0 * qa_stride, qa_stride, nr, k / blk,
                           out + r0);
    }
}

/* The panel path (cq_panels) takes prompt calls (cpu_quant.h). */
static cq_panel_fn cq_panel_for(enum cq_isa isa, uint32_t type, int prompt) {
    int t = cq_type_index(type);
    if (isa != CQ_ISA_AVX512 || !prompt || t < 0) return NULL;
    return cq_panels[t];
}

int cq_matmul_uses_panels(enum cq_isa isa, uint32_t type, int prompt) {
    return cq_panel_for(isa, type, prompt) != NULL;
}

size_t cq_matmul_scratch_bytes(const struct fg_qtensor *w, int n) {
    n = n > 0 ? n : 1;
    size_t bytes = cq_act_row_bytes(w->type, w->cols) * (size_t)n;
    if (!cq_is_k(w->type)) { /* the panel path's d · Σq per activation block, or the preps */
        size_t nb = (size_t)(w->cols / 32), ds = sizeof(float) * (size_t)n * nb;
        size_t prep = sizeof(struct cq_a32x4) * (size_t)n * ((nb + 3) / 4);
        bytes += ds > prep ? ds : prep;
    }
    return bytes;
}

struct cq_job {
    const struct fg_qtensor *w;
    cq_mkernel kern;
    const uint8_t *qa; /* (n, act_row) quantized activations */
    size_t qa_stride;
    int n, nb;
    float *out; /* (n, out_stride) */
    size_t out_stride;
    int accumulate;
    const struct cq_a32x4 *prep; /* (n, prep_stride) prepared rows, or NULL */
    size_t prep_stride;
};

/* 1 when the row kernel of (ISA, TYPE) reads its activation rows prepared (struct cq_a32x4). */
static int cq_matmul_preps(enum cq_isa isa, uint32_t type) {
    return CQ_X86 && isa == CQ_ISA_AVX512 && type == GGUF_GGML_Q4_1;
}

/* Output rows [begin, end): each weight row is read once per CQ_MAX_ROWS tokens. */
static void cq_rows(void *arg, size_t begin, size_t end) {
    const struct cq_job *j = arg;
    for (int t0 = 0; t0 < j->n; t0 += CQ_MAX_ROWS) {
        struct cq_margs g = {.w = j->w->data,
                             .row_bytes = j->w->row_bytes,
                             .qa = j->qa + (size_t)t0 * j->qa_stride,
                             .qa_stride = j->qa_stride,
                             .n_tok = j->n - t0 < CQ_MAX_ROWS ? j->n - t0 : CQ_MAX_ROWS,
                             .nb = j->nb,
                             .out = j->out + (size_t)t0 * j->out_stride,
                             .out_stride = j->out_stride,
                             .accumulate = j->accumulate,
                             .prep = j->prep ? j->prep + (size_t)t0 * j->prep_stride : NULL,
                             .prep_stride = j->prep_stride};
        j->kern(&g, begin, end);
    }
}

struct cq_prun {
    struct cq_pjob job;
    cq_panel_fn fn;
    struct cq_job rows; /* the row path, for a thread that could not get its panel buffer */
};

/* Panels [begin, end) of 16 output rows: each is unpacked once into a buffer of this thread's
 * (nb · 640 bytes: L1/L2-sized for the model widths here) and meets every token. */
static void cq_panel_rows(void *arg, size_t begin, size_t end) {
    const struct cq_prun *p = arg;
    void *buf = NULL;
    if (posix_memalign(&buf, 64, (size_t)p->job.nb * 640) != 0) {
        size_t e = end * 16 < (size_t)p->job.rows ? end * 16 : (size_t)p->job.rows;
        cq_rows((void *)&p->rows, begin * 16, e);
        return;
    }
    for (size_t b = begin; b < end; b++)
        p->fn(&p->job, (int)b * 16, buf);
    free(buf);
}

void cq_matmul(struct cpu_pool *pool, enum cq_isa isa, const struct fg_qtensor *w, const float *x,
               int n, float *out, size_t out_stride, int accumulate, int prompt, void *scratch) {
    int t = cq_type_index(w->type);
    if (t < 0 || n <= 0) return;
    size_t stride = cq_act_row_bytes(w->type, w->cols);
    for (int i = 0; i < n; i++)
        cq_quantize_act(w->type, x + (size_t)i * w->cols, w->cols, (uint8_t *)scratch + i * stride);
    struct cq_job j = {.w = w,
                       .kern = cq_mkernels[isa][t],
                       .qa = scratch,
                       .qa_stride = stride,
                       .n = n,
                       .nb = w->cols / (cq_is_k(w->type) ? 256 : 32),
                       .out = out,
                       .out_stride = out_stride,
                       .accumulate = accumulate};
    /* one thread for a product smaller than the pool's wake-up is worth: a decode step's q|k|v
     * of the 135M model is ~20 µs of work. CQ_NS_PER_BYTE: the row kernels' rate on weights in
     * cache, Q4_1 15 GB/s and Q8_0 37-46 GB/s on one AVX-512 core (2026-12-02), the slower one;
     * kept since the VNNI Q4_1 kernel (17-20 GB/s, Q8_0 24-27, 2026-12-03 VM, bench_cpu
     * --qdot), which makes the estimate err towards the pool by up to a quarter. */
    const double CQ_NS_PER_BYTE = 1.0 / 15.0;
    pool = cpu_pool_if_worth(pool, (double)w->rows * w->row_bytes * n * CQ_NS_PER_BYTE);
    cq_panel_fn pf = cq_panel_for(isa, w->type, prompt);
    if (!pf) {
        if (cq_matmul_preps(isa, w->type)) {
            struct cq_a32x4 *prep = (struct cq_a32x4 *)((uint8_t *)scratch + (size_t)n * stride);
            j.prep_stride = (size_t)(j.nb + 3) / 4;
            for (int i = 0; i < n; i++)
                cq_prep_a32x4((const struct cq_a32 *)((uint8_t *)scratch + i * stride), j.nb,
                              prep + (size_t)i * j.prep_stride);
            j.prep = prep;
        }
        cpu_pool_for(pool, (size_t)w->rows, 16, cq_rows, &j);
        return;
    }
    float *ds = (float *)((uint8_t *)scratch + (size_t)n * stride);
    for (int i = 0; i < n; i++) {
        const struct cq_a32 *a = (const struct cq_a32 *)((uint8_t *)scratch + i * stride);
        for (int b = 0; b < j.nb; b++)
            ds[(size_t)i * j.nb + b] = a[b].d * (float)a[b].sum;
    }
    struct cq_prun p = {.job = {.w = w->data,
                                .row_bytes = w->row_bytes,
                                .rows = w->rows,
                                .nb = j.nb,
                                .qa = scratch,
                                .qa_stride = stride,
                                .ds = ds,
                                .n = n,
                                .out = out,
                                .out_stride = out_stride,
                                .accumulate = accumulate},
                        .fn = pf,
                        .rows = j};
    cpu_pool_for(pool, (size_t)(w->rows + 15) / 16, 1, cq_panel_rows, &p);
}
