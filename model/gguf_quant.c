/* gguf_quant.c — the ggml type table and block dequantization (the ggml block layouts (gguf-py
 * quants.py, ggml-common.h)).
 *
 * One function per block layout, each converting whole blocks with the arithmetic in the order
 * gguf-py's numpy code uses (a sub-block scale is formed first, d * sc, then multiplied by the
 * quant; the min term dmin * m is formed apart and subtracted), so the fp32 results are
 * bit-identical to gguf.quants.dequantize. Contraction into fused multiply-adds would change the
 * rounding: it is switched off for this file (GCC does not contract in -std=c11 mode; clang obeys
 * the pragma). The f16 scales are read byte-wise (little-endian), so blocks need no alignment.
 */
#include "model/gguf_quant.h"

#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define QK_K 256 /* elements of a K-quant super-block */

/* --- the type table: (block elements, block bytes), gguf-py GGML_QUANT_SIZES ----------------- */

struct gguf_type_info {
    uint32_t id;
    const char *name;
    uint32_t blck;
    uint32_t bytes;
};

static const struct gguf_type_info gguf_types[] = {
    {0, "F32", 1, 4},         {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},
    {3, "Q4_1", 32, 20},      {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},
    {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 40},      {10, "Q2_K", 256, 84},
    {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66},
    {17, "IQ2_XS", 256, 74},  {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},
    {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},  {22, "IQ2_S", 256, 82},
    {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},         {25, "I16", 1, 2},
    {26, "I32", 1, 4},        {27, "I64", 1, 8},        {28, "F64", 1, 8},
    {29, "IQ1_M", 256, 56},   {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},
    {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17},
};

static const struct gguf_type_info *gguf_type_info(uint32_t type) {
    for (size_t i = 0; i < sizeof(gguf_types) / sizeof(gguf_types[0]); i++)
        if (gguf_types[i].id == type) return &gguf_types[i];
    return NULL;
}

const char *gguf_type_name(uint32_t type) {
    const struct gguf_type_info *ti = gguf_type_info(type);
    return ti ? ti->name : "unknown";
}

int gguf_type_known(uint32_t type) {
    return gguf_type_info(type) != NULL;
}

int gguf_type_supported(uint32_t type) {
    switch (type) {
    case GGUF_GGML_F32:
    case GGUF_GGML_F16:
    case GGUF_GGML_BF16:
        return 1;
    default:
        return gguf_type_quantized(type);
    }
}

int gguf_type_quantized(uint32_t type) {
    switch (type) {
    case GGUF_GGML_Q4_0:
    case GGUF_GGML_Q4_1:
    case GGUF_GGML_Q5_0:
    case GGUF_GGML_Q5_1:
    case GGUF_GGML_Q8_0:
    case GGUF_GGML_Q2_K:
    case GGUF_GGML_Q3_K:
    case GGUF_GGML_Q4_K:
    case GGUF_GGML_Q5_K:
    case GGUF_GGML_Q6_K:
    case GGUF_GGML_Q8_K:
        return 1;
    default:
        return 0;
    }
}

const char *gguf_type_supported_list(void) {
    return "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K";
}

uint32_t gguf_type_block(uint32_t type) {
    const struct gguf_type_info *ti = gguf_type_info(type);
    return ti ? ti->blck : 0;
}

uint64_t gguf_type_row_bytes(uint32_t type, uint64_t n) {
    const struct gguf_type_info *ti = gguf_type_info(type);
    if (!ti || n % ti->blck) return 0;
    return n / ti->blck * ti->bytes;
}

/* --- scalar conversions -------------------------------------------------------------------- */

float gguf_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) { /* inf / nan: the payload moves up, as numpy's half→float does */
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400));
            mant &= 0x3ff;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (mant << 13);
        }
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float gguf_bf16_to_fp32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

static float rdh(const uint8_t *p) { /* a little-endian f16 */
    return gguf_fp16_to_fp32(rd16(p));
}

/* gguf_fp16_to_fp32 over N little-endian halves, branch-free so that the compiler vectorizes the
 * fixed 16-wide inner loop at -O2 (GCC's very-cheap cost model needs a known trip count):
 * normal and inf/nan are the exponent rebased by an add, a subnormal is its integer mantissa
 * times 2^-24 (exact in fp32); the same bits as the scalar form for all 65,536 inputs
 * (tests/unit/test_gguf.c). */
void gguf_fp16_row_to_fp32(const uint8_t *p, float *dst, uint64_t n) {
    uint64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint32_t out[16];
        for (int j = 0; j < 16; j++) {
            uint32_t h = (uint32_t)p[2 * (i + j)] | (uint32_t)p[2 * (i + j) + 1] << 8;
            uint32_t em = h & 0x7fff, sign = (h & 0x8000) << 16;
            uint32_t normal = (em << 13) + ((uint32_t)(127 - 15) << 23);
            uint32_t infnan = (em << 13) + ((uint32_t)(255 - 31) << 23);
            float sub = (float)(int32_t)em * 0x1p-24f;
            uint32_t subb;
            memcpy(&subb, &sub, 4);
            out[j] = sign | (em >= 0x7c00 ? infnan : em >= 0x400 ? normal : subb);
        }
        memcpy(dst + i, out, sizeof(out));
    }
    for (; i < n; i++)
        dst[i] = gguf_fp16_to_fp32(rd16(p + 2 * i));
}

/* --- 32-element blocks --------------------------------------------------------------------- */

/* Q4_0 (18 B): f16 d; u8 qs[16]. Element j is the low nibble of qs[j], j+16 the high nibble;
 * y = d * (q - 8). */
static void dq_q4_0(const uint8_t *p, float *y, uint64_t nb) {
    for (uint64_t b = 0; b < nb; b++, p += 18, y += 32) {
        float d = rdh(p);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)((p[2 + j] & 0x0f) - 8);
            y[j + 16] = d * (float)((p[2 + j] >> 4) - 8);
        }
    }
}

/* Q4_1 (20 B): f16 d; f16 m; u8 qs[16]; y = d * q + m. */
static void dq_q4_1(const uint8_t *p, float *y, uint64_t nb) {
    for (uint64_t b = 0; b < nb; b++, p += 20, y += 32) {
        float d = rdh(p), m = rdh(p + 2);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)(p[4 + j] & 0x0f) + m;
            y[j + 16] = d * (float)(p[4 + j] >> 4) + m;
        }
    }
}

/* The 5-bit quants of Q5_0/Q5_1: nibbles as Q4_x, bit j of the little-endian u32 QH is the fifth
 * bit of element j. */
static void dq_q5_quants(const uint8_t *qh4, const uint8_t *qs, int q[32]) {
    uint32_t qh =
        (uint32_t)qh4[0] | (uint32_t)qh4[1] << 8 | (uint32_t)qh4[2] << 16 | (uint32_t)qh4[3] << 24;
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
        q[j + 16] = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
    }
}

/* Q5_0 (22 B): f16 d; u8 qh[4]; u8 qs[16]; y = d * (q - 16). */
static void dq_q5_0(const uint8_t *p, float *y, uint64_t nb) {
    int q[32];
    for (uint64_t b = 0; b < nb; b++, p += 22, y += 32) {
        float d = rdh(p);
        dq_q5_quants(p + 2, p + 6, q);
        for (int j = 0; j < 32; j++)
            y[j] = d * (float)(q[j] - 16);
    }
}

/* Q5_1 (24 B): f16 d; f16 m; u8 qh[4]; u8 qs[16]; y = d * q + m. */
static void dq_q5_1(const uint8_t *p, float *y, uint64_t nb) {
    int q[32];
    for (uint64_t b = 0; b < nb; b++, p += 24, y += 32) {
        float d = rdh(p), m = rdh(p + 2);
        dq_q5_quants(p + 4, p + 8, q);
        for (int j = 0; j < 32; j++)
            y[j] = d * (float)q[j] + m;
    }
}

/* Q8_0 (34 B): f16 d; i8 qs[32]; y = q * d. */
static void dq_q8_0(const uint8_t *p, float *y, uint64_t nb) {
    for (uint64_t b = 0; b < nb; b++, p += 34, y += 32) {
        float d = rdh(p);
        for (int j = 0; j < 32; j++)
            y[j] = (float)(int8_t)p[2 + j] * d;
    }
}

/* --- 256-element K-quant super-blocks ------------------------------------------------------- */

/* Q2_K (84 B): u8 scales[16]; u8 qs[64]; f16 d; f16 dmin. Sixteen sub-blocks of 16, each with a
 * 4-bit scale (low nibble) and 4-bit min (high nibble). Element 128h + 32s + l is the 2-bit field
 * s of qs[32h + l]; y = (d * sc) * q - (dmin * m) of its sub-block. */
static void dq_q2_k(const uint8_t *p, float *y, uint64_t nb) {
    for (uint64_t b = 0; b < nb; b++, p += 84, y += QK_K) {
        const uint8_t *sc = p;
        float d = rdh(p + 80), dmin = rdh(p + 82);
        for (int h = 0; h < 2; h++) {
            const uint8_t *qs = p + 16 + 32 * h;
            for (int s = 0; s < 4; s++) {
                float *o = y + 128 * h + 32 * s;
                for (int half = 0; half < 2; half++) { /* two sub-blocks of 16 */
                    int k = 8 * h + 2 * s + half;
                    float dl = d * (float)(sc[k] & 0x0f), ml = dmin * (float)(sc[k] >> 4);
                    for (int l = 16 * half; l < 16 * half + 16; l++)
                        o[l] = dl * (float)((qs[l] >> (2 * s)) & 3) - ml;
                }
            }
        }
    }
}

/* Q3_K (110 B): u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d. Sixteen 6-bit signed scales
 * (minus 32): scale k has low 4 bits in scales[k % 8] (low nibble for k < 8, high nibble after)
 * and high 2 bits in field k / 4 of scales[8 + k % 4]. Element e = 128h + 32s + l takes its low
 * 2 bits from field s of qs[32h + l] and subtracts 4 when bit e / 32 of hmask[l] is clear;
 * y = (d * scale) * q. */
static void dq_q3_k(const uint8_t *p, float *y, uint64_t nb) {
    for (uint64_t b = 0; b < nb; b++, p += 110, y += QK_K) {
        const uint8_t *hm = p, *qs = p + 32, *sc = p + 96;
        float d = rdh(p + 108);
        float dl[16];
        for (int k = 0; k < 16; k++) {
            int lo = (k < 8 ? sc[k] : sc[k - 8] >> 4) & 0x0f;
            int hi = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
            dl[k] = d * (float)((lo | hi << 4) - 32);
        }
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++) {
                int g = 4 * h + s; /* the 32-element group: hmask bit g, sub-blocks 2g, 2g+1 */
                float *o = y + 32 * g;
                for (int l = 0; l < 32; l++) {
                    int q = (qs[32 * h + l] >> (2 * s)) & 3;
                    if (!((hm[l] >> g) & 1)) q -= 4;
                    o[l] = dl[2 * g + l / 16] * (float)q;
                }
            }
    }
}

/* The 6-bit scales and mins of Q4_K/Q5_K packed in 12 bytes, for sub-blocks j = 0..7:
 * j < 4: sc = s[j] & 63, m = s[j+4] & 63; else sc = (s[j+4] & 15) | (s[j-4] >> 6) << 4 and
 * m = (s[j+4] >> 4) | (s[j] >> 6) << 4. */
static void dq_k4_scale_min(const uint8_t *s, int sc[8], int m[8]) {
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            sc[j] = s[j] & 63;
            m[j] = s[j + 4] & 63;
        } else {
            sc[j] = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
            m[j] = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
        }
    }
}

/* Q4_K (144 B): f16 d; f16 dmin; u8 scales[12]; u8 qs[128]. Eight sub-blocks of 32: sub-block
 * 2c takes the low nibbles of qs[32c .. 32c+32), 2c+1 their high nibbles;
 * y = (d * sc) * q - (dmin * m). */
static void dq_q4_k(const uint8_t *p, float *y, uint64_t nb) {
    int sc[8], m[8];
    for (uint64_t b = 0; b < nb; b++, p += 144, y += QK_K) {
        float d = rdh(p), dmin = rdh(p + 2);
        const uint8_t *qs = p + 16;
        dq_k4_scale_min(p + 4, sc, m);
        for (int j = 0; j < 8; j++) {
            float dl = d * (float)sc[j], ml = dmin * (float)m[j];
            const uint8_t *q = qs + 32 * (j / 2);
            int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++)
                y[32 * j + l] = dl * (float)((q[l] >> shift) & 0x0f) - ml;
        }
    }
}

/* Q5_K (176 B): f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]. As Q4_K, plus bit j of
 * qh[l] as the fifth bit of element l of sub-block j. */
static void dq_q5_k(const uint8_t *p, float *y, uint64_t nb) {
    int sc[8], m[8];
    for (uint64_t b = 0; b < nb; b++, p += 176, y += QK_K) {
        float d = rdh(p), dmin = rdh(p + 2);
        const uint8_t *qh = p + 16, *qs = p + 48;
        dq_k4_scale_min(p + 4, sc, m);
        for (int j = 0; j < 8; j++) {
            float dl = d * (float)sc[j], ml = dmin * (float)m[j];
            const uint8_t *q = qs + 32 * (j / 2);
            int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++) {
                int v = ((q[l] >> shift) & 0x0f) | ((qh[l] >> j) & 1) << 4;
                y[32 * j + l] = dl * (float)v - ml;
            }
        }
    }
}

/* Q6_K (210 B): u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d. Two halves of 128; in half h,
 * element 32s + l (s = 0..3) takes its low 4 bits from ql[64h + 32(s%2) + l] (low nibble for
 * s < 2, high after) and its high 2 bits from field s of qh[32h + l]; q = that - 32 and
 * y = (d * scales[e / 16]) * q. */
static void dq_q6_k(const uint8_t *p, float *y, uint64_t nb) {
    for (uint64_t b = 0; b < nb; b++, p += 210, y += QK_K) {
        const uint8_t *ql = p, *qh = p + 128;
        const int8_t *sc = (const int8_t *)(p + 192);
        float d = rdh(p + 208);
        float dl[16];
        for (int k = 0; k < 16; k++)
            dl[k] = d * (float)sc[k];
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++) {
                const uint8_t *lo = ql + 64 * h + 32 * (s % 2), *hi = qh + 32 * h;
                int g = 4 * h + s;
                float *o = y + 32 * g;
                for (int l = 0; l < 32; l++) {
                    int q = ((lo[l] >> (4 * (s / 2))) & 0x0f) | ((hi[l] >> (2 * s)) & 3) << 4;
                    o[l] = dl[2 * g + l / 16] * (float)(q - 32);
                }
            }
    }
}

/* Q8_K (292 B): f32 d; i8 qs[256]; i16 bsums[16] (sums for dot products, not needed here);
 * y = d * q. */
static void dq_q8_k(const uint8_t *p, float *y, uint64_t nb) {
    for (uint64_t b = 0; b < nb; b++, p += 292, y += QK_K) {
        float d;
        memcpy(&d, p, 4);
        for (int j = 0; j < QK_K; j++)
            y[j] = d * (float)(int8_t)p[4 + j];
    }
}

int gguf_dequantize(uint32_t type, const void *src, float *dst, uint64_t n) {
    const uint8_t *p = src;
    uint32_t blck = gguf_type_block(type);
    if (!gguf_type_supported(type) || n % blck) return -1;
    uint64_t nb = n / blck;
    switch (type) {
    case GGUF_GGML_F32:
        memcpy(dst, p, n * 4);
        return 0;
    case GGUF_GGML_F16:
        gguf_fp16_row_to_fp32(p, dst, n);
        return 0;
    case GGUF_GGML_BF16:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = gguf_bf16_to_fp32(rd16(p + 2 * i));
        return 0;
    case GGUF_GGML_Q4_0:
        dq_q4_0(p, dst, nb);
        return 0;
    case GGUF_GGML_Q4_1:
        dq_q4_1(p, dst, nb);
        return 0;
    case GGUF_GGML_Q5_0:
        dq_q5_0(p, dst, nb);
        return 0;
    case GGUF_GGML_Q5_1:
        dq_q5_1(p, dst, nb);
        return 0;
    case GGUF_GGML_Q8_0:
        dq_q8_0(p, dst, nb);
        return 0;
    case GGUF_GGML_Q2_K:
        dq_q2_k(p, dst, nb);
        return 0;
    case GGUF_GGML_Q3_K:
        dq_q3_k(p, dst, nb);
        return 0;
    case GGUF_GGML_Q4_K:
        dq_q4_k(p, dst, nb);
        return 0;
    case GGUF_GGML_Q5_K:
        dq_q5_k(p, dst, nb);
        return 0;
    case GGUF_GGML_Q6_K:
        dq_q6_k(p, dst, nb);
        return 0;
    case GGUF_GGML_Q8_K:
        dq_q8_k(p, dst, nb);
        return 0;
    default:
        return -1;
    }
}
