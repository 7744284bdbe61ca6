/* qgemv_math.cuh — the packed layout of kernels/qgemv.h as kernels/qgemv.cu's kernels read it:
 * the per-type traits and region offsets, a lane's loads of one group of 4 blocks (from global
 * memory), the integer-to-bf16 conversions of its weights, the mma pairs, the block scales and
 * mins, the fused norm's row scales, and qblock / qgroup, the math of one block and one group of
 * RT tiles that both the register kernel and the bulk-copy kernel run (qgemv.cu's header says
 * why each piece is as it is). Included by qgemv.cu only. */
#ifndef FG_QGEMV_MATH_CUH
#define FG_QGEMV_MATH_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "gemv.h"
#include "gemv_common.cuh"
#include "qgemv.h"

/* enum gguf_ggml_type ids */
enum {
    QT_Q4_0 = 2,
    QT_Q4_1 = 3,
    QT_Q5_0 = 6,
    QT_Q5_1 = 7,
    QT_Q8_0 = 8,
    QT_Q2_K = 10,
    QT_Q3_K = 11,
    QT_Q4_K = 12,
    QT_Q5_K = 13,
    QT_Q6_K = 14
};

/* Per type: bytes of a file block, bytes of a lane's share of one 32-element block (QB: 8 int8,
 * 8 nibbles, or Q3_K / Q2_K's 8 two-bit fields), a min per block (Q4_1 / Q5_1: fp16 m; Q4_K /
 * Q5_K: −dmin·m_j; Q2_K: one per 16-element half), ks: K-quant super-block scales (the "scales"
 * region holds Q4_K / Q5_K's 6-bit (sc_j, m_j) bytes, Q6_K / Q3_K's two int8 scales of the block
 * or Q2_K's two (scale, min) nibble bytes, the fp16 d (and dmin) of each super-block a region of
 * its own, qgemv.h), hb: bytes of high quant bits per lane slot and block in a region of their
 * own (Q5_x, Q5_K 1: the fifth bit of each of the lane's 8 elements; Q3_K 1: the third (hmask)
 * bit; Q6_K 2: the two high bits, the lane's 8 elements in q6_elem's order), h16: each 16-element
 * half of a block has its own scale (Q6_K, Q3_K, Q2_K: the lane's 8 elements in q6_elem's order,
 * x permuted to match). */
template <int TYPE> struct qtype;
template <> struct qtype<QT_Q8_0> {
    static constexpr int file = 34, qb = 8, mins = 0, ks = 0, hb = 0, h16 = 0;
};
template <> struct qtype<QT_Q4_0> {
    static constexpr int file = 18, qb = 4, mins = 0, ks = 0, hb = 0, h16 = 0;
};
template <> struct qtype<QT_Q4_1> {
    static constexpr int file = 20, qb = 4, mins = 1, ks = 0, hb = 0, h16 = 0;
};
template <> struct qtype<QT_Q5_0> {
    static constexpr int file = 22, qb = 4, mins = 0, ks = 0, hb = 1, h16 = 0;
};
template <> struct qtype<QT_Q5_1> {
    static constexpr int file = 24, qb = 4, mins = 1, ks = 0, hb = 1, h16 = 0;
};
template <> struct qtype<QT_Q4_K> {
    static constexpr int file = 144, qb = 4, mins = 1, ks = 1, hb = 0, h16 = 0;
};
template <> struct qtype<QT_Q5_K> {
    static constexpr int file = 176, qb = 4, mins = 1, ks = 1, hb = 1, h16 = 0;
};
template <> struct qtype<QT_Q6_K> {
    static constexpr int file = 210, qb = 4, mins = 0, ks = 1, hb = 2, h16 = 1;
};
template <> struct qtype<QT_Q3_K> {
    static constexpr int file = 110, qb = 2, mins = 0, ks = 1, hb = 1, h16 = 1;
};
template <> struct qtype<QT_Q2_K> {
    static constexpr int file = 84, qb = 2, mins = 1, ks = 1, hb = 0, h16 = 1;
};

static int qtype_known(int wtype) {
    return wtype == QT_Q8_0 || wtype == QT_Q4_0 || wtype == QT_Q4_1 || wtype == QT_Q5_0 ||
           wtype == QT_Q5_1 || wtype == QT_Q4_K || wtype == QT_Q5_K || wtype == QT_Q6_K ||
           wtype == QT_Q3_K || wtype == QT_Q2_K;
}

/* The K-quants: super-blocks of 256 elements, scales in the super-block. */
static int qtype_ks(int wtype) {
    return wtype == QT_Q4_K || wtype == QT_Q5_K || wtype == QT_Q6_K || wtype == QT_Q3_K ||
           wtype == QT_Q2_K;
}

/* Columns the type's rows may have: whole blocks of 32 (K-quants: super-blocks of 256). */
static int qcols_ok(int wtype, int cols) {
    const int blk = qtype_ks(wtype) ? 256 : 32;
    return qtype_known(wtype) && cols >= blk && cols % blk == 0;
}

/* qtype<TYPE>::hb of a type id: bytes of high bits per lane slot and block. */
__host__ __device__ __forceinline__ int qlayout_hb(int wtype) {
    return wtype == QT_Q6_K                                                               ? 2
           : wtype == QT_Q5_0 || wtype == QT_Q5_1 || wtype == QT_Q5_K || wtype == QT_Q3_K ? 1
                                                                                          : 0;
}

/* qtype<TYPE>::qb of a type id: bytes of a lane slot's quants per block. */
__host__ __device__ __forceinline__ int qlayout_qb(int wtype) {
    return wtype == QT_Q8_0 ? 8 : wtype == QT_Q3_K || wtype == QT_Q2_K ? 2 : 4;
}

/* The packed layout's regions (qgemv.h): quants, then scales (K-quants: the per-block bytes),
 * then (Q4_1, Q5_1) mins or (K-quants) the super-blocks' d/dmin words, at m0, then (Q5_x, Q5_K,
 * Q6_K, Q3_K) the quants' high bits at h0. */
struct qlayout {
    int nb, tiles;
    size_t s0, m0, h0, total;
};

static qlayout qlayout_of(int wtype, int rows, int cols) {
    qlayout l;
    const int qb = qlayout_qb(wtype);
    l.nb = cols / 32;
    l.tiles = (rows + 7) / 8;
    const size_t tb = (size_t)l.tiles * (size_t)l.nb; /* (tile, block) pairs */
    l.s0 = tb * 32 * qb;
    l.m0 = l.s0 + tb * 16;
    const bool mins = wtype == QT_Q4_1 || wtype == QT_Q5_1, ks = qtype_ks(wtype);
    l.h0 = l.m0 + (mins ? tb * 16 : ks ? tb * 4 : 0);
    l.total = l.h0 + tb * 32 * (size_t)qlayout_hb(wtype);
    return l;
}

/* Byte offset of lane slot (row % 8) · 4 + t's share of block b in the quants region, and of
 * row r's fp16 scale of block b in a scale region (qgemv.h's formulas). */
__device__ __forceinline__ size_t qoff_quant(int qb, int nb, int r, int b, int t) {
    const int q = b >> 2, gs = min(4, nb - 4 * q);
    return ((size_t)(r >> 3) * nb + 4 * q) * 32 * qb +
           (size_t)((((r & 7) * 4 + t) * gs + (b & 3)) * qb);
}

__device__ __forceinline__ size_t qoff_scale(int nb, int r, int b) {
    const int q = b >> 2, gs = min(4, nb - 4 * q);
    return ((size_t)(r >> 3) * nb + 4 * q) * 16 + (size_t)(((r & 7) * gs + (b & 3)) * 2);
}

/* K-quants: byte offset of row r's d/dmin word of super-block sb in the d/dmin region (the 8 rows
 * of a tile side by side: 32 bytes per tile and super-block). */
__device__ __forceinline__ size_t qoff_dm(int nb, int r, int sb) {
    return ((size_t)(r >> 3) * (nb / 8) + sb) * 32 + (size_t)(r & 7) * 4;
}

struct qgemv_params {
    void *y;
    const __nv_bfloat16 *x;
    const uint8_t *w;
    const float *gamma; /* NORM: (in_dim) fp32 */
    __nv_bfloat16 *h_out;
    float eps;
    int n, in_dim, out_dim;
    int epilogue, y_f32;
    int out_tiles;
    int nb;        /* in_dim / 32 */
    int hs;        /* NORM: h of the n rows normed into shared memory first (it fits) */
    size_t s0, m0; /* the scale and min regions' offsets */
    size_t h0;     /* Q5_x, Q5_K, Q6_K, Q3_K: the high bits' region */
};

/* A lane's share of one group (up to 4 blocks) of one W tile: quants of its B row g (QB = 2:
 * block u in half u & 1 of q[u / 2]), fp16 scales (and mins) of the accumulator's W rows 2t (sa,
 * ma) and 2t + 1 (sb, mb), block u in half u. Q4_K / Q5_K: sa / sb hold the (sc, m) byte pairs of
 * the 4 sub-blocks (half u: sc_u | m_u << 8), ma.x / mb.x the rows' d/dmin word of the group's
 * super-block (d in the low half). */
template <int TYPE> struct qgrp {
    uint32_t q[qtype<TYPE>::qb];
    uint2 sa, sb, ma, mb;
    uint2 h; /* the high bits of the lane's 8 elements of block u: Q6_K in half u; Q5_x, Q5_K,
              * Q3_K in byte u of h.x (slot i's bit at bit i) */
};

/* Where the lane's loads of one tile start: its B row's quants and the two scale rows, at the
 * slot of a full group (the last, partial group of a row moves by slot · (gs − 4) · size). */
struct qrows {
    const uint8_t *q, *sa, *sb;
    const uint8_t *da, *db; /* K-quants: the rows' d/dmin words of super-block 0 */
    const uint8_t *h;       /* Q5_x, Q5_K, Q6_K, Q3_K: the B row's high bits (full group) */
    int slot_q, slot_a, slot_b;
};

/* The lane's qrows for a tile whose B row (the quants' lane slot, lane t) is physical W row rq and
 * whose accumulator rows (the scales') are ra and rb (SW: rq itself). */
template <int TYPE>
__device__ __forceinline__ qrows qrows_of(const qgemv_params &p, int rq, int ra, int rb, int t) {
    constexpr int QB = qtype<TYPE>::qb;
    qrows rw;
    rw.slot_q = (rq & 7) * 4 + t;
    rw.slot_a = ra & 7;
    rw.slot_b = rb & 7;
    rw.q = p.w + (size_t)(rq >> 3) * p.nb * 32 * QB + (size_t)rw.slot_q * 4 * QB;
    rw.sa = p.w + p.s0 + (size_t)(ra >> 3) * p.nb * 16 + (size_t)rw.slot_a * 8;
    rw.sb = p.w + p.s0 + (size_t)(rb >> 3) * p.nb * 16 + (size_t)rw.slot_b * 8;
    rw.da = p.w + p.m0 + (size_t)(ra >> 3) * p.nb * 4 + (size_t)(ra & 7) * 4;
    rw.db = p.w + p.m0 + (size_t)(rb >> 3) * p.nb * 4 + (size_t)(rb & 7) * 4;
    rw.h = p.w + p.h0 + (size_t)(rq >> 3) * p.nb * 32 * qtype<TYPE>::hb +
           (size_t)rw.slot_q * 4 * qtype<TYPE>::hb;
    return rw;
}

__device__ __forceinline__ uint32_t qhalf(uint2 v, int u) {
    return ((u < 2 ? v.x : v.y) >> (16 * (u & 1))) & 0xffffu;
}

__device__ __forceinline__ uint2 qset_half(uint2 v, int u, uint32_t h) {
    const int sh = 16 * (u & 1);
    const uint32_t m = ~(0xffffu << sh);
    if (u < 2)
        v.x = (v.x & m) | h << sh;
    else
        v.y = (v.y & m) | h << sh;
    return v;
}

/* W is read once: skip L1 (which keeps x, read by every tile) on the full groups' loads. */
__device__ __forceinline__ uint4 qld16(const uint8_t *p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

__device__ __forceinline__ uint2 qld8(const uint8_t *p) {
    uint2 v;
    asm("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
}

__device__ __forceinline__ uint32_t qld4(const uint8_t *p) {
    uint32_t v;
    asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];\n" : "=r"(v) : "l"(p));
    return v;
}

/* K-quants: a row's d/dmin word for group gq (super-block gq / 2; the word's 32 bytes per tile are
 * read by the two groups' warps, so through L1). */
__device__ __forceinline__ uint32_t qld_dm(const uint8_t *da, int gq) {
    return __ldg(reinterpret_cast<const unsigned *>(da + (size_t)(gq >> 1) * 32));
}

/* The lane's share of group gq of one tile (streamed: W is read once). */
template <int TYPE>
__device__ __forceinline__ void qgrp_load(qgrp<TYPE> &w, const qrows &rw, const qgemv_params &p,
                                          int gq) {
    constexpr int QB = qtype<TYPE>::qb;
    const int gs = min(4, p.nb - 4 * gq);
    const size_t gb = (size_t)gq * 128 * QB, sgb = (size_t)gq * 64;
    const size_t md = p.m0 - p.s0;
    if (gs == 4) {
        if constexpr (QB == 2) { /* Q3_K / Q2_K: the lane's 4 blocks of 2-bit fields, 8 bytes */
            const uint2 a = qld8(rw.q + gb);
            w.q[0] = a.x;
            w.q[1] = a.y;
        } else {
#pragma unroll
            for (int v = 0; v < QB / 4; v++) {
                const uint4 a = qld16(rw.q + gb + 16 * v);
                w.q[4 * v] = a.x;
                w.q[4 * v + 1] = a.y;
                w.q[4 * v + 2] = a.z;
                w.q[4 * v + 3] = a.w;
            }
        }
        w.sa = qld8(rw.sa + sgb);
        w.sb = qld8(rw.sb + sgb);
        if (qtype<TYPE>::hb == 2) w.h = qld8(rw.h + (size_t)gq * 256);
        if (qtype<TYPE>::hb == 1) w.h = make_uint2(qld4(rw.h + (size_t)gq * 128), 0u);
        if (qtype<TYPE>::ks) {
            w.ma = make_uint2(qld_dm(rw.da, gq), 0u);
            w.mb = make_uint2(qld_dm(rw.db, gq), 0u);
        } else if (qtype<TYPE>::mins) {
            w.ma = qld8(rw.sa + sgb + md);
            w.mb = qld8(rw.sb + sgb + md);
        }
        return;
    }
    const uint8_t *qp = rw.q + gb + (ptrdiff_t)rw.slot_q * (gs - 4) * QB;
    const uint8_t *pa = rw.sa + sgb + (ptrdiff_t)rw.slot_a * (gs - 4) * 2;
    const uint8_t *pb = rw.sb + sgb + (ptrdiff_t)rw.slot_b * (gs - 4) * 2;
    w.sa = w.sb = w.ma = w.mb = w.h = make_uint2(0u, 0u);
    if constexpr (QB == 2) w.q[0] = w.q[1] = 0u;
    if (qtype<TYPE>::ks) { /* (not reached: K-quant rows are whole super-blocks, full groups) */
        w.ma.x = qld_dm(rw.da, gq);
        w.mb.x = qld_dm(rw.db, gq);
    }
#pragma unroll
    for (int u = 0; u < 4; u++) {
#pragma unroll
        for (int e = 0; e < QB / 4; e++)
            w.q[u * (QB / 4) + e] =
                u < gs ? __ldcs(reinterpret_cast<const unsigned *>(qp + u * QB) + e) : 0u;
        if (u >= gs) continue;
        if constexpr (QB == 2)
            w.q[u >> 1] |= (uint32_t)__ldcs(reinterpret_cast<const unsigned short *>(qp) + u)
                           << (16 * (u & 1));
        if (qtype<TYPE>::hb == 2) {
            const uint8_t *hp = rw.h + (size_t)gq * 256 + (ptrdiff_t)rw.slot_q * (gs - 4) * 2;
            w.h = qset_half(w.h, u, __ldcs(reinterpret_cast<const unsigned short *>(hp) + u));
        }
        if (qtype<TYPE>::hb == 1) {
            const uint8_t *hp = rw.h + (size_t)gq * 128 + (ptrdiff_t)rw.slot_q * (gs - 4);
            w.h.x |= (uint32_t)__ldcs(reinterpret_cast<const unsigned char *>(hp) + u) << (8 * u);
        }
        w.sa = qset_half(w.sa, u, __ldcs(reinterpret_cast<const unsigned short *>(pa) + u));
        w.sb = qset_half(w.sb, u, __ldcs(reinterpret_cast<const unsigned short *>(pb) + u));
        if (qtype<TYPE>::mins && !qtype<TYPE>::ks) {
            w.ma =
                qset_half(w.ma, u, __ldcs(reinterpret_cast<const unsigned short *>(pa + md) + u));
            w.mb =
                qset_half(w.mb, u, __ldcs(reinterpret_cast<const unsigned short *>(pb + md) + u));
        }
    }
}

/* Small integers to bf16 without the conversion units (Q8_0): byte k of src becomes the fp32
 * 2^23 + byte (bits 0x4B0000bb, one PRMT), minus the bias in one FADD gives the integer exactly,
 * and an exact small-integer fp32 is its own bf16 upper half, so two pack into a pair by PRMT. */
__device__ __forceinline__ float qmagic(uint32_t src, int k, float bias) {
    return __uint_as_float(__byte_perm(src, 0x4B00u, 0x5440u | (uint32_t)k)) - bias;
}

__device__ __forceinline__ uint32_t qpack(float lo, float hi) {
    return __byte_perm(__float_as_uint(lo), __float_as_uint(hi), 0x7632u);
}

/* The bf16 pair (lo, hi) of two fp32 values, each rounded to nearest (the dequantized weights'
 * one rounding; qpack above truncates, for exact small integers only). */
__device__ __forceinline__ uint32_t qbf2_rn(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&h);
}

/* One nibble pair (bits 0-3 and 16-19 of v) as the bf16 pair (q − off, q' − off), exact. */
__device__ __forceinline__ uint32_t qnib_pair(uint32_t v, uint32_t neg_off) {
    uint32_t b, r; /* bf16 128 + q: (v & mask) | 0x4300 in one LOP3 (the mask in a register) */
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(b) : "r"(v), "r"(0x000f000fu), "n"(0x43004300));
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(b), "r"(0x3F803F80u), "r"(neg_off));
    return r;
}

/* Q6_K pair p of the lane's block: nibbles (bits 4p.. and 16+4p.. of v) and high bits (bits 2p..
 * and 16+2p.. of hx, a block's 16 bits spread by PRMT, below) as the bf16 pair (q − 32, q' − 32):
 * bf16 128 + q (q < 64) by shifts and LOPs, then one bf16x2 FMA subtracts 160 (exact). */
template <int P> __device__ __forceinline__ uint32_t q6_pair(uint32_t v, uint32_t hx) {
    const uint32_t hs = P < 2 ? hx << (4 - 2 * P) : hx >> (2 * P - 4);
    const uint32_t b = ((v >> (4 * P)) & 0x000f000fu) | (hs & 0x00300030u) | 0x43004300u;
    uint32_t r;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(b), "r"(0x3F803F80u), "r"(0xC320C320u));
    return r;
}

/* Q5_x pair p of the lane's block: nibbles (bits 4p.. and 16+4p.. of v) and fifth bits (bits 2p
 * and 16+2p of hx, below) as the bf16 pair (q − off, q' − off): bf16 128 + q (q < 32) by shifts
 * and LOPs, then one bf16x2 FMA adds neg_off (−144 for Q5_0's q − 16, −128 for Q5_1 / Q5_K's q). */
template <int P>
__device__ __forceinline__ uint32_t q5_pair(uint32_t v, uint32_t hx, uint32_t neg) {
    const uint32_t hs = P < 2 ? hx << (4 - 2 * P) : hx >> (2 * P - 4);
    const uint32_t b = ((v >> (4 * P)) & 0x000f000fu) | (hs & 0x00100010u) | 0x43004300u;
    uint32_t r;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(b), "r"(0x3F803F80u), "r"(neg));
    return r;
}

/* Q3_K / Q2_K pair p of the lane's block: the 2-bit fields (bits 2p.. and 16+2p.. of lx, a
 * block's 16 bits spread by PRMT as Q6_K's high bits) and Q3_K's hmask bits (bits 2p + 2 and
 * 18 + 2p of hx, below; 0 for Q2_K) as the bf16 pair (q − off, q' − off): bf16 128 + q (q < 8) by
 * shifts and LOPs, one bf16x2 FMA adds neg (−132 for Q3_K's (q | h << 2) − 4, −128 for Q2_K's q).
 */
template <int P>
__device__ __forceinline__ uint32_t q23_pair(uint32_t lx, uint32_t hx, uint32_t neg) {
    const uint32_t b =
        ((lx >> (2 * P)) & 0x00030003u) | ((hx >> (2 * P)) & 0x00040004u) | 0x43004300u;
    uint32_t r;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(b), "r"(0x3F803F80u), "r"(neg));
    return r;
}

/* The lane's 8 weights of block u as 4 bf16 pairs in the order of its x chunk (exact integers):
 * Q8_0 q (int8: q ^ 0x80 = q + 128 as a byte), Q4_0 q − 8, Q4_1 / Q4_K q, Q5_0 q − 16, Q5_1 / Q5_K
 * q, Q6_K q − 32, Q3_K (q | h << 2) − 4, Q2_K q (the last three in q6_elem's order, the x chunk
 * permuted to match by q6_xperm). */
template <int TYPE> __device__ __forceinline__ uint4 qweights(const qgrp<TYPE> &w, int u) {
    if (TYPE == QT_Q3_K || TYPE == QT_Q2_K) {
        /* block u's 16 bits (half u & 1 of q[u / 2]): byte 0 to bits 0-7, byte 1 to bits 16-23 */
        const uint32_t lx = __byte_perm(w.q[u >> 1], 0u, u & 1 ? 0x4342u : 0x4140u);
        uint32_t hx = 0u;
        if (TYPE == QT_Q3_K) { /* byte u of h.x (slot i's bit at bit i): slot 2p's at bit 2p + 2,
                                * slot 2p + 1's at bit 18 + 2p */
            const uint32_t hb = __byte_perm(w.h.x, 0u, 0x4440u | (uint32_t)u);
            hx = (hb | hb << 15) << 2;
        }
        const uint32_t neg = TYPE == QT_Q3_K ? 0xC304C304u /* -132 */ : 0xC300C300u /* -128 */;
        return make_uint4(q23_pair<0>(lx, hx, neg), q23_pair<1>(lx, hx, neg),
                          q23_pair<2>(lx, hx, neg), q23_pair<3>(lx, hx, neg));
    }
    if (qtype<TYPE>::hb == 1) {
        const uint32_t v = w.q[u];
        /* block u's 8 fifth bits (byte u of w.h.x, slot i's at bit i) as hx: slot 2p's bit at bit
         * 2p, slot 2p + 1's at bit 16 + 2p (h | h << 15), so that one shift per pair aligns both */
        const uint32_t hb = __byte_perm(w.h.x, 0u, 0x4440u | (uint32_t)u);
        const uint32_t hx = hb | hb << 15;
        const uint32_t neg = TYPE == QT_Q5_0 ? 0xC310C310u /* -144 */ : 0xC300C300u /* -128 */;
        return make_uint4(q5_pair<0>(v, hx, neg), q5_pair<1>(v, hx, neg), q5_pair<2>(v, hx, neg),
                          q5_pair<3>(v, hx, neg));
    }
    if (TYPE == QT_Q6_K) {
        const uint32_t v = w.q[u];
        /* block u's 16 high bits (half u of w.h): byte 0 to bits 0-7, byte 1 to bits 16-23 */
        const uint32_t hx = __byte_perm(u < 2 ? w.h.x : w.h.y, 0u, u & 1 ? 0x4342u : 0x4140u);
        return make_uint4(q6_pair<0>(v, hx), q6_pair<1>(v, hx), q6_pair<2>(v, hx),
                          q6_pair<3>(v, hx));
    }
    if (TYPE == QT_Q8_0) {
        const float bias = 8388608.0f + 128.0f;
        const uint32_t a = w.q[2 * u] ^ 0x80808080u, b = w.q[2 * u + 1] ^ 0x80808080u;
        return make_uint4(qpack(qmagic(a, 0, bias), qmagic(a, 1, bias)),
                          qpack(qmagic(a, 2, bias), qmagic(a, 3, bias)),
                          qpack(qmagic(b, 0, bias), qmagic(b, 1, bias)),
                          qpack(qmagic(b, 2, bias), qmagic(b, 3, bias)));
    }
    const uint32_t neg = TYPE == QT_Q4_0 ? 0xC308C308u /* -136 */ : 0xC300C300u /* -128 */;
    const uint32_t v = w.q[u];
    return make_uint4(qnib_pair(v, neg), qnib_pair(v >> 4, neg), qnib_pair(v >> 8, neg),
                      qnib_pair(v >> 12, neg));
}

__device__ __forceinline__ void qmma(float (&c)[4], uint4 xa, uint4 xb, uint4 q) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
        "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(xa.x), "r"(xb.x), "r"(xa.y), "r"(xb.y), "r"(q.x), "r"(q.y));
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
        "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(xa.z), "r"(xb.z), "r"(xa.w), "r"(xb.w), "r"(q.z), "r"(q.w));
}

/* The swapped roles (SW): A = 16 W rows (rows g of two 8-row tiles: a0/a2 the first, a1/a3 the
 * second), B = the activation chunk of row g as the n ≤ 8 columns; D (W row, act col): c0/c1
 * row g of the first tile for act cols 2t, 2t + 1, c2/c3 the second tile's. Every A register
 * holds weights, no zero rows, and B is the x chunk as loaded. */
__device__ __forceinline__ void qmma_sw(float (&c)[4], uint4 wa, uint4 wb, uint4 x) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
        "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(wa.x), "r"(wb.x), "r"(wa.y), "r"(wb.y), "r"(x.x), "r"(x.y));
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
        "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(wa.z), "r"(wb.z), "r"(wa.w), "r"(wb.w), "r"(x.z), "r"(x.w));
}

__device__ __forceinline__ float qf16(uint32_t h) {
    return __half2float(__ushort_as_half((unsigned short)h));
}

/* One of the two mma of qmma_sw (H 0: the x / w pairs .x, .y; H 1: .z, .w), and of qmma. */
template <int H>
__device__ __forceinline__ void qmma_sw1(float (&c)[4], uint4 wa, uint4 wb, uint4 x) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
        "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(H ? wa.z : wa.x), "r"(H ? wb.z : wb.x), "r"(H ? wa.w : wa.y), "r"(H ? wb.w : wb.y),
          "r"(H ? x.z : x.x), "r"(H ? x.w : x.y));
}

template <int H> __device__ __forceinline__ void qmma1(float (&c)[4], uint4 xa, uint4 xb, uint4 q) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
        "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(H ? xa.z : xa.x), "r"(H ? xb.z : xb.x), "r"(H ? xa.w : xa.y), "r"(H ? xb.w : xb.y),
          "r"(H ? q.z : q.x), "r"(H ? q.w : q.y));
}

/* Q6_K: lane t's x chunk (elements 8t .. 8t+7 of the block) in the order of its weights: lanes t
 * and t ^ 2 swap half their chunk, so that lane t < 2 holds 8t .. 8t+3 then 8t+16 .. 8t+19 and
 * lane t >= 2 holds 8t−12 .. 8t−9 then 8t+4 .. 8t+7 (q6_elem): the first mma of a block then sums
 * elements 0-15 (the block's first int8 scale), the second 16-31 (its second). */
__device__ __forceinline__ uint4 q6_xperm(uint4 x, int t) {
    const bool lo = t < 2;
    const uint32_t r0 = __shfl_xor_sync(0xffffffffu, lo ? x.z : x.x, 2);
    const uint32_t r1 = __shfl_xor_sync(0xffffffffu, lo ? x.w : x.y, 2);
    return lo ? make_uint4(x.x, x.y, r0, r1) : make_uint4(r0, r1, x.z, x.w);
}

/* Q6_K / Q3_K: d · sc of half H (elements 16H .. 16H+15) of block u, row a (rb 0) or b (rb 1):
 * the int8 scale by qmagic (byte ^ 0x80 = sc + 128), the product exact in fp32 (fp16 × int8).
 * Q2_K: d times the low nibble of byte H of the block's halfword (fp16 × 4 bits, exact). */
template <int TYPE, int H>
__device__ __forceinline__ float q6_scale(const qgrp<TYPE> &w, int rb, int u) {
    const uint2 s = rb ? w.sb : w.sa;
    const uint32_t dm = rb ? w.mb.x : w.ma.x;
    if (TYPE == QT_Q2_K) {
        const uint32_t n = ((u < 2 ? s.x : s.y) >> (16 * (u & 1) + 8 * H)) & 0x0fu;
        return __fmul_rn(qf16(dm & 0xffffu), __uint_as_float(n | 0x4B000000u) - 8388608.0f);
    }
    const float sc =
        qmagic((u < 2 ? s.x : s.y) ^ 0x80808080u, 2 * (u & 1) + H, 8388608.0f + 128.0f);
    return __fmul_rn(qf16(dm & 0xffffu), sc);
}

/* Block u's fp32 scale and min for the accumulator's W row a (rb 0: sa, ma) or b (rb 1: sb, mb):
 * Q8_0 / Q4_x the fp16 d (and m); Q4_K / Q5_K d·sc_u and −(dmin·m_u), each exact in fp32 (an fp16
 * times a 6-bit integer has at most 17 significant bits), the values model/gguf_quant.c forms; the
 * 6-bit integers to fp32 by qmagic (PRMT + FADD, no conversion unit). */
template <int TYPE> __device__ __forceinline__ float qscale(const qgrp<TYPE> &w, int rb, int u) {
    const uint2 s = rb ? w.sb : w.sa;
    if (qtype<TYPE>::ks) {
        const uint32_t dm = rb ? w.mb.x : w.ma.x;
        const float sc = qmagic(u < 2 ? s.x : s.y, 2 * (u & 1), 8388608.0f);
        return __fmul_rn(qf16(dm & 0xffffu), sc);
    }
    return qf16(qhalf(s, u));
}

/* Q2_K: the min −(dmin · m) of half H of block u, row a (rb 0) or b (rb 1), m the high nibble of
 * byte H of the block's halfword (exact in fp32, as qscale's). */
template <int TYPE, int H>
__device__ __forceinline__ float q2_min(const qgrp<TYPE> &w, int rb, int u) {
    const uint2 s = rb ? w.sb : w.sa;
    const uint32_t dm = rb ? w.mb.x : w.ma.x;
    const uint32_t n = ((u < 2 ? s.x : s.y) >> (16 * (u & 1) + 8 * H + 4)) & 0x0fu;
    return -__fmul_rn(qf16(dm >> 16), __uint_as_float(n | 0x4B000000u) - 8388608.0f);
}

template <int TYPE> __device__ __forceinline__ float qmin(const qgrp<TYPE> &w, int rb, int u) {
    if (qtype<TYPE>::ks) {
        const uint2 s = rb ? w.sb : w.sa;
        const uint32_t dm = rb ? w.mb.x : w.ma.x;
        const float m = qmagic(u < 2 ? s.x : s.y, 2 * (u & 1) + 1, 8388608.0f);
        return -__fmul_rn(qf16(dm >> 16), m);
    }
    return qf16(qhalf(rb ? w.mb : w.ma, u));
}

/* RMSNorm scales of the n rows into sc (shared): warp w sums rows w, w + KW, ... (lane i over
 * 16-byte chunks i, i + 32, ..., then a fixed butterfly), so every block, every n and every
 * variant gets the same bits. */
template <int KW> __device__ __forceinline__ void qnorm_rows(const qgemv_params &p, float *sc) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int r = warp; r < p.n; r += KW) {
        const uint4 *xr = reinterpret_cast<const uint4 *>(p.x + (size_t)r * p.in_dim);
        float s = 0.0f;
#pragma unroll 8
        for (int i = lane; i < p.in_dim / 8; i += 32) {
            const uint4 v = __ldg(xr + i);
            const uint32_t wd[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float lo = __uint_as_float(wd[e] << 16);
                const float hi = __uint_as_float(wd[e] & 0xffff0000u);
                s += lo * lo;
                s += hi * hi;
            }
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1)
            s += __shfl_xor_sync(0xffffffffu, s, off);
        if (lane == 0) sc[r] = rsqrtf(s / p.in_dim + p.eps); /* as k_rmsnorm: sum / dim + eps */
    }
}

template <int KW> __device__ __forceinline__ void qnorm_scales(const qgemv_params &p, float *sc) {
    qnorm_rows<KW>(p, sc);
    __syncthreads();
}

/* Where a lane's activation chunks come from: x rows g and g + 8 (has0 / has1), normed on the way
 * (NORM: scales s0 / s1, h stored at h0 / h1 when not NULL), or, when hs0 is not NULL, the rows of
 * h the block normed into shared memory in its prologue. */
struct qxsrc { /* every pointer at the lane's element 8t of block 0 */
    const __nv_bfloat16 *x0, *x1, *hs0, *hs1;
    const float *gamma;
    __nv_bfloat16 *h0, *h1;
    float s0, s1;
    bool has0, has1;
};

/* Block b (u-th of its group) of RT tiles against the lane's x chunk. */
template <int TYPE, int RT, bool NORM, bool R16, bool SW>
__device__ __forceinline__ void qblock(float (&acc)[RT][4], const qgrp<TYPE> (&w)[RT],
                                       const qgemv_params &p, const qxsrc &xs, int b, int u,
                                       int t) {
    /* (the qxsrc pointers are at the lane's 8t already; t is q6_xperm's) */
    const int k = 32 * b;
    const uint4 zero = make_uint4(0, 0, 0, 0);
    uint4 xa, xb;
    if (NORM && xs.hs0) {
        xa = xs.has0 ? *reinterpret_cast<const uint4 *>(xs.hs0 + k) : zero;
        xb = R16 && xs.has1 ? *reinterpret_cast<const uint4 *>(xs.hs1 + k) : zero;
    } else {
        xa = xs.has0 ? __ldg(reinterpret_cast<const uint4 *>(xs.x0 + k)) : zero;
        xb = R16 && xs.has1 ? __ldg(reinterpret_cast<const uint4 *>(xs.x1 + k)) : zero;
        if (NORM) {
            const gemv_gamma8 gm = gemv_load_gamma(xs.gamma + k);
            xa = gemv_norm_chunk(xa, gm, xs.s0);
            if (R16) xb = gemv_norm_chunk(xb, gm, xs.s1);
            if (xs.h0) *reinterpret_cast<uint4 *>(xs.h0 + k) = xa;
            if (R16 && xs.h1) *reinterpret_cast<uint4 *>(xs.h1 + k) = xb;
        }
    }
    if (qtype<TYPE>::h16) { /* the two halves of the block apart, each with its scale */
        xa = q6_xperm(xa, t);
        if (R16) xb = q6_xperm(xb, t);
        /* Q2_K: Σx of each half (sl: first, sh: second; sl1 / sh1 of rows 8-15 with SW), by the
         * mma of ones as Q4_1's Σx, for the halves' mins */
        const uint4 ones = make_uint4(0x3F803F80u, 0x3F803F80u, 0x3F803F80u, 0x3F803F80u);
        float sl[4] = {0.0f, 0.0f, 0.0f, 0.0f}, sh[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        float sl1[4] = {0.0f, 0.0f, 0.0f, 0.0f}, sh1[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (qtype<TYPE>::mins) {
            if (SW) {
                qmma_sw1<0>(sl, ones, ones, xa);
                qmma_sw1<1>(sh, ones, ones, xa);
                if (R16) {
                    qmma_sw1<0>(sl1, ones, ones, xb);
                    qmma_sw1<1>(sh1, ones, ones, xb);
                }
            } else {
                qmma1<0>(sl, xa, xb, ones);
                qmma1<1>(sh, xa, xb, ones);
            }
        }
#pragma unroll
        for (int r = 0; r < RT; r += SW ? 2 : 1) {
            float pa[4] = {0.0f, 0.0f, 0.0f, 0.0f}, pb[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (SW) { /* pa / pb: c0, c1 of tile r, c2, c3 of tile r + 1 (as below) */
                const uint4 w0 = qweights<TYPE>(w[r], u), w1 = qweights<TYPE>(w[r + 1], u);
                const float a0 = q6_scale<TYPE, 0>(w[r], 0, u), b0 = q6_scale<TYPE, 1>(w[r], 0, u);
                const float a1 = q6_scale<TYPE, 0>(w[r + 1], 0, u);
                const float b1 = q6_scale<TYPE, 1>(w[r + 1], 0, u);
                qmma_sw1<0>(pa, w0, w1, xa);
                qmma_sw1<1>(pb, w0, w1, xa);
                acc[r][0] = fmaf(b0, pb[0], fmaf(a0, pa[0], acc[r][0]));
                acc[r][1] = fmaf(b0, pb[1], fmaf(a0, pa[1], acc[r][1]));
                acc[r + 1][0] = fmaf(b1, pb[2], fmaf(a1, pa[2], acc[r + 1][0]));
                acc[r + 1][1] = fmaf(b1, pb[3], fmaf(a1, pa[3], acc[r + 1][1]));
                if (R16) {
                    float qa[4] = {0.0f, 0.0f, 0.0f, 0.0f}, qb[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                    qmma_sw1<0>(qa, w0, w1, xb);
                    qmma_sw1<1>(qb, w0, w1, xb);
                    acc[r][2] = fmaf(b0, qb[0], fmaf(a0, qa[0], acc[r][2]));
                    acc[r][3] = fmaf(b0, qb[1], fmaf(a0, qa[1], acc[r][3]));
                    acc[r + 1][2] = fmaf(b1, qb[2], fmaf(a1, qa[2], acc[r + 1][2]));
                    acc[r + 1][3] = fmaf(b1, qb[3], fmaf(a1, qa[3], acc[r + 1][3]));
                }
                if (qtype<TYPE>::mins) { /* Q2_K: each half's min times its Σx */
                    const float l0 = q2_min<TYPE, 0>(w[r], 0, u), h0 = q2_min<TYPE, 1>(w[r], 0, u);
                    const float l1 = q2_min<TYPE, 0>(w[r + 1], 0, u);
                    const float h1 = q2_min<TYPE, 1>(w[r + 1], 0, u);
                    acc[r][0] = fmaf(h0, sh[0], fmaf(l0, sl[0], acc[r][0]));
                    acc[r][1] = fmaf(h0, sh[1], fmaf(l0, sl[1], acc[r][1]));
                    acc[r + 1][0] = fmaf(h1, sh[0], fmaf(l1, sl[0], acc[r + 1][0]));
                    acc[r + 1][1] = fmaf(h1, sh[1], fmaf(l1, sl[1], acc[r + 1][1]));
                    if (R16) {
                        acc[r][2] = fmaf(h0, sh1[0], fmaf(l0, sl1[0], acc[r][2]));
                        acc[r][3] = fmaf(h0, sh1[1], fmaf(l0, sl1[1], acc[r][3]));
                        acc[r + 1][2] = fmaf(h1, sh1[0], fmaf(l1, sl1[0], acc[r + 1][2]));
                        acc[r + 1][3] = fmaf(h1, sh1[1], fmaf(l1, sl1[1], acc[r + 1][3]));
                    }
                }
            } else { /* D (act row g / g + 8, W rows 2t, 2t + 1) */
                const uint4 q = qweights<TYPE>(w[r], u);
                const float aa = q6_scale<TYPE, 0>(w[r], 0, u), ba = q6_scale<TYPE, 1>(w[r], 0, u);
                const float ab = q6_scale<TYPE, 0>(w[r], 1, u), bb = q6_scale<TYPE, 1>(w[r], 1, u);
                qmma1<0>(pa, xa, xb, q);
                qmma1<1>(pb, xa, xb, q);
                acc[r][0] = fmaf(ba, pb[0], fmaf(aa, pa[0], acc[r][0]));
                acc[r][1] = fmaf(bb, pb[1], fmaf(ab, pa[1], acc[r][1]));
                if (R16) {
                    acc[r][2] = fmaf(ba, pb[2], fmaf(aa, pa[2], acc[r][2]));
                    acc[r][3] = fmaf(bb, pb[3], fmaf(ab, pa[3], acc[r][3]));
                }
                if (qtype<TYPE>::mins) { /* Q2_K: rows a, b; halves l, h */
                    const float la = q2_min<TYPE, 0>(w[r], 0, u), ha = q2_min<TYPE, 1>(w[r], 0, u);
                    const float lb = q2_min<TYPE, 0>(w[r], 1, u), hb = q2_min<TYPE, 1>(w[r], 1, u);
                    acc[r][0] = fmaf(ha, sh[0], fmaf(la, sl[0], acc[r][0]));
                    acc[r][1] = fmaf(hb, sh[0], fmaf(lb, sl[0], acc[r][1]));
                    if (R16) {
                        acc[r][2] = fmaf(ha, sh[2], fmaf(la, sl[2], acc[r][2]));
                        acc[r][3] = fmaf(hb, sh[2], fmaf(lb, sl[2], acc[r][3]));
                    }
                }
            }
        }
        return;
    }
    const uint4 ones = make_uint4(0x3F803F80u, 0x3F803F80u, 0x3F803F80u, 0x3F803F80u);
    if (SW) {
        /* acc[r]: W row g of tile r, act cols 2t, 2t + 1 (R16: and 8 + 2t, 9 + 2t) */
        float sx[4] = {0.0f, 0.0f, 0.0f, 0.0f}, sx1[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (qtype<TYPE>::mins) {
            qmma_sw(sx, ones, ones, xa);
            if (R16) qmma_sw(sx1, ones, ones, xb);
        }
#pragma unroll
        for (int r = 0; r < RT; r += 2) {
            const uint4 w0 = qweights<TYPE>(w[r], u), w1 = qweights<TYPE>(w[r + 1], u);
            const float d0 = qscale<TYPE>(w[r], 0, u), d1 = qscale<TYPE>(w[r + 1], 0, u);
            float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            qmma_sw(part, w0, w1, xa);
            acc[r][0] = fmaf(d0, part[0], acc[r][0]);
            acc[r][1] = fmaf(d0, part[1], acc[r][1]);
            acc[r + 1][0] = fmaf(d1, part[2], acc[r + 1][0]);
            acc[r + 1][1] = fmaf(d1, part[3], acc[r + 1][1]);
            if (R16) {
                float p1[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                qmma_sw(p1, w0, w1, xb);
                acc[r][2] = fmaf(d0, p1[0], acc[r][2]);
                acc[r][3] = fmaf(d0, p1[1], acc[r][3]);
                acc[r + 1][2] = fmaf(d1, p1[2], acc[r + 1][2]);
                acc[r + 1][3] = fmaf(d1, p1[3], acc[r + 1][3]);
            }
            if (qtype<TYPE>::mins) {
                const float m0 = qmin<TYPE>(w[r], 0, u), m1 = qmin<TYPE>(w[r + 1], 0, u);
                acc[r][0] = fmaf(m0, sx[0], acc[r][0]);
                acc[r][1] = fmaf(m0, sx[1], acc[r][1]);
                acc[r + 1][0] = fmaf(m1, sx[0], acc[r + 1][0]);
                acc[r + 1][1] = fmaf(m1, sx[1], acc[r + 1][1]);
                if (R16) {
                    acc[r][2] = fmaf(m0, sx1[0], acc[r][2]);
                    acc[r][3] = fmaf(m0, sx1[1], acc[r][3]);
                    acc[r + 1][2] = fmaf(m1, sx1[0], acc[r + 1][2]);
                    acc[r + 1][3] = fmaf(m1, sx1[1], acc[r + 1][3]);
                }
            }
        }
        return;
    }
    float sx[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (qtype<TYPE>::mins) qmma(sx, xa, xb, ones);
#pragma unroll
    for (int r = 0; r < RT; r++) {
        float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        qmma(part, xa, xb, qweights<TYPE>(w[r], u));
        const float da = qscale<TYPE>(w[r], 0, u), db = qscale<TYPE>(w[r], 1, u);
        acc[r][0] = fmaf(da, part[0], acc[r][0]);
        acc[r][1] = fmaf(db, part[1], acc[r][1]);
        if (R16) {
            acc[r][2] = fmaf(da, part[2], acc[r][2]);
            acc[r][3] = fmaf(db, part[3], acc[r][3]);
        }
        if (qtype<TYPE>::mins) {
            const float ma = qmin<TYPE>(w[r], 0, u), mb = qmin<TYPE>(w[r], 1, u);
            acc[r][0] = fmaf(ma, sx[0], acc[r][0]);
            acc[r][1] = fmaf(mb, sx[0], acc[r][1]);
            if (R16) {
                acc[r][2] = fmaf(ma, sx[2], acc[r][2]);
                acc[r][3] = fmaf(mb, sx[2], acc[r][3]);
            }
        }
    }
}

/* Int8 activations (the i8 variants of qgemv.cu; Q8_0, Q4_0, Q4_1 and Q4_K weights, n <= 8, SW):
 * each 32-element block of x (or of the normed h) quantized as llama.cpp quantizes activations for
 * its integer kernels (q8_1: d = amax / 127, q = v · (1 / d) rounded to nearest even; fp32, each
 * operation correctly rounded, so tests/gpu/check_qgemv.py's model gives the same q), then
 * one mma.m16n8k32 s8 × s8 → s32 per block and 16 W rows: Q8_0's int8 as they lie, the 4-bit
 * types' nibbles by one mask each (Q4_0's q − 8 through −8 Σq, below; Q4_1 / Q4_K's min m times
 * the block's Σx = d_x · Σq, Q4_1's form with Q4_K's d·sc_j and −dmin·m_j, as their bf16 path). The
 * mma's k slots are relabelled: lane t's A words hold the 8 elements 8t .. 8t+7 of the block in the
 * packed word's order and its B words the same elements of x in the same order, so the sum is the
 * block's dot product. The int32 sum starts from the integer bits of fp32 1.5 · 2^23 (0x4B400000;
 * Q4_0: minus 8 Σq of the x block), so the result read as fp32 is 1.5 · 2^23 + the exact dot (|dot|
 * < 2^22), one FADD away from the dot; scaled by d_w · d_x (fp32) into the fp32 sums. */
__device__ __forceinline__ void qimma(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                      uint32_t a3, uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

#define QI8_BIAS 0x4B400000
#define QI8_BIAS_F 12582912.0f

/* Where a lane finds its quantized x: row g's bytes of block 0 at q (+ 8t), and the (d, k) words
 * of its accumulator columns 2t, 2t + 1 for block b at meta + b · np · 8 (hasm: 2t < np): k is the
 * mma's start (QI8_BIAS; Q4_0 QI8_BIAS − 8 Σq) or, for the types with mins, the fp32 d · Σq. */
struct qi8src {
    const uint8_t *q, *meta;
    int np;
    bool has0, hasm;
};

/* Shared memory of the quantized x: n rows of in_dim + 32 bytes (rows g and g + 1 of one load in
 * different banks), then per block np (d, bias) pairs, np = n rounded up to even. */
__host__ __device__ __forceinline__ int qi8_np(int n) {
    return n < 2 ? 2 : (n + 1) & ~1;
}

__host__ __device__ __forceinline__ size_t qi8_bytes(int n, int in_dim) {
    return (size_t)n * (in_dim + 32) + (size_t)(in_dim / 32) * qi8_np(n) * 8;
}

/* One thread's 16-byte chunk of x quantized (qi8_make): the 4 chunks of a block are in 4
 * consecutive lanes, which meet by shuffles for the amax and Σq (every lane of the warp calls it:
 * in = 0 for a lane past the rows, real = 0 for rows n .. np − 1, both with zero x). */
template <int TYPE>
__device__ __forceinline__ void qi8_chunk(uint4 xv, bool in, bool real, int row, int c, int np,
                                          int xst, uint8_t *sm, uint8_t *meta) {
    const uint32_t wd[4] = {xv.x, xv.y, xv.z, xv.w};
    float v[8], am = 0.0f;
#pragma unroll
    for (int e = 0; e < 4; e++) {
        v[2 * e] = __uint_as_float(wd[e] << 16);
        v[2 * e + 1] = __uint_as_float(wd[e] & 0xffff0000u);
    }
#pragma unroll
    for (int e = 0; e < 8; e++)
        am = fmaxf(am, fabsf(v[e]));
    am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, 1));
    am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, 2));
    const float d = __fdiv_rn(am, 127.0f), id = d != 0.0f ? __frcp_rn(d) : 0.0f;
    /* q = rint(v · id) without the conversion unit (a quarter of the FMA rate): 1.5 · 2^23 + v · id
     * rounded to fp32 is 1.5 · 2^23 + q exactly (|q| <= 127, ties to even as rint), so the bits are
     * QI8_BIAS + q and their low byte is q's two's complement */
    uint32_t qb[8];
    int s = 0;
#pragma unroll
    for (int e = 0; e < 8; e++) {
        qb[e] = __float_as_uint(__fadd_rn(__fmul_rn(v[e], id), QI8_BIAS_F));
        s += (int)(qb[e] - (uint32_t)QI8_BIAS);
    }
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    constexpr int o4[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    uint32_t b0 = 0u, b1 = 0u;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int e0 = TYPE != QT_Q8_0 ? o4[j] : j, e1 = TYPE != QT_Q8_0 ? o4[4 + j] : 4 + j;
        b0 |= (qb[e0] & 0xffu) << (8 * j);
        b1 |= (qb[e1] & 0xffu) << (8 * j);
    }
    if (real) *reinterpret_cast<uint2 *>(sm + (size_t)row * xst + 8 * c) = make_uint2(b0, b1);
    if (in && (c & 3) == 0) {
        const uint32_t k = qtype<TYPE>::mins
                               ? __float_as_uint(__fmul_rn(d, (float)s))
                               : (uint32_t)(TYPE == QT_Q4_0 ? QI8_BIAS - 8 * s : QI8_BIAS);
        *reinterpret_cast<uint2 *>(meta + ((size_t)(c >> 2) * np + row) * 8) =
            make_uint2(__float_as_uint(d), k);
    }
}

/* Chunks a thread loads before it quantizes any (their loads in flight together: the prologue
 * costs one L2 round trip per batch, not one per chunk); with the norm their gamma too. */
#define QI8_BATCH(NORM) ((NORM) ? 4 : 8)

/* The n rows of x (NORM: h = bf16(x · sc[row] · gamma), block 0 storing h to h_out) quantized into
 * sm (qi8_bytes) by the nthr consumer threads: pass j of a thread takes 16-byte chunk
 * j · nthr + threadIdx.x of the rows (in_dim % 32 == 0 and nthr % 32 == 0: a block's 4 chunks in
 * 4 consecutive lanes). Rows n .. np − 1 get d = 0. Byte order within a lane's 8: Q8_0 the
 * elements', the 4-bit types (0, 4, 1, 5 | 2, 6, 3, 7), the order a nibble word's masks give. */
template <int TYPE, bool NORM>
__device__ __forceinline__ qi8src qi8_make(const qgemv_params &p, const float *sc, uint8_t *sm,
                                           int nthr) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int cpr = p.in_dim / 8, np = qi8_np(p.n), xst = p.in_dim + 32;
    uint8_t *meta = sm + (size_t)p.n * xst;
    const int total = np * cpr, per = (total + nthr - 1) / nthr;
    const bool store_h = NORM && p.h_out && blockIdx.x == 0;
    constexpr int NB = QI8_BATCH(NORM);
    for (int j0 = 0; j0 < per; j0 += NB) { /* (uniform: every lane, every pass) */
        uint4 xv[NB];
        gemv_gamma8 gm[NB];
#pragma unroll
        for (int j = 0; j < NB; j++) {
            const int i = (j0 + j) * nthr + threadIdx.x, row = i / cpr, c = i % cpr;
            xv[j] = make_uint4(0u, 0u, 0u, 0u);
            gm[j] = gemv_gamma8{};
            if (j0 + j < per && i < total && row < p.n) {
                xv[j] = __ldg(reinterpret_cast<const uint4 *>(p.x + (size_t)row * p.in_dim) + c);
                if (NORM) gm[j] = gemv_load_gamma(p.gamma + 8 * c);
            }
        }
#pragma unroll
        for (int j = 0; j < NB; j++) {
            if (j0 + j >= per) break;
            const int i = (j0 + j) * nthr + threadIdx.x;
            const bool in = i < total;
            const int row = in ? i / cpr : 0, c = in ? i % cpr : 0;
            const bool real = in && row < p.n;
            if (NORM && real) {
                xv[j] = gemv_norm_chunk(xv[j], gm[j], sc[row]);
                if (store_h)
                    *reinterpret_cast<uint4 *>(p.h_out + (size_t)row * p.in_dim + 8 * c) = xv[j];
            }
            qi8_chunk<TYPE>(xv[j], in, real, row, c, np, xst, sm, meta);
        }
    }
    qi8src xi;
    xi.np = np;
    xi.has0 = g < p.n;
    xi.hasm = 2 * t < np;
    xi.q = sm + (size_t)(xi.has0 ? g : 0) * xst + 8 * t;
    xi.meta = meta + (size_t)(xi.hasm ? 2 * t : 0) * 8;
    return xi;
}

/* One group (4 blocks, full) of RT tiles on the int8 x: per block and tile pair one mma; columns
 * 2t + 1 (c1, c3) only when n > 1 (at n = 1 only column 0 is stored). */
template <int TYPE, int RT>
__device__ __forceinline__ void qgroup_i8(float (&acc)[RT][4], const qgrp<TYPE> (&w)[RT],
                                          const qi8src &xi, int gq, int n) {
#pragma unroll
    for (int u = 0; u < 4; u++) {
        const int b = 4 * gq + u;
        const uint2 xq =
            xi.has0 ? *reinterpret_cast<const uint2 *>(xi.q + 32 * b) : make_uint2(0u, 0u);
        const uint32_t k_none = qtype<TYPE>::mins ? 0u : (uint32_t)QI8_BIAS; /* (columns >= np) */
        const uint4 m = xi.hasm ? *reinterpret_cast<const uint4 *>(xi.meta + (size_t)b * xi.np * 8)
                                : make_uint4(0u, k_none, 0u, k_none);
        const float dx0 = __uint_as_float(m.x), dx1 = __uint_as_float(m.z);
#pragma unroll
        for (int r = 0; r < RT; r += 2) {
            uint32_t a0, a1, a2, a3;
            if (TYPE == QT_Q8_0) {
                a0 = w[r].q[2 * u];
                a2 = w[r].q[2 * u + 1];
                a1 = w[r + 1].q[2 * u];
                a3 = w[r + 1].q[2 * u + 1];
            } else {
                a0 = w[r].q[u] & 0x0f0f0f0fu;
                a2 = (w[r].q[u] >> 4) & 0x0f0f0f0fu;
                a1 = w[r + 1].q[u] & 0x0f0f0f0fu;
                a3 = (w[r + 1].q[u] >> 4) & 0x0f0f0f0fu;
            }
            constexpr bool MN = qtype<TYPE>::mins;
            const int k0 = MN ? QI8_BIAS : (int)m.y, k1 = MN ? QI8_BIAS : (int)m.w;
            int c[4] = {k0, k1, k0, k1};
            qimma(c, a0, a1, a2, a3, xq.x, xq.y);
            const float d0 = qscale<TYPE>(w[r], 0, u), d1 = qscale<TYPE>(w[r + 1], 0, u);
            acc[r][0] = fmaf(d0 * dx0, __int_as_float(c[0]) - QI8_BIAS_F, acc[r][0]);
            acc[r + 1][0] = fmaf(d1 * dx0, __int_as_float(c[2]) - QI8_BIAS_F, acc[r + 1][0]);
            if (n > 1) {
                acc[r][1] = fmaf(d0 * dx1, __int_as_float(c[1]) - QI8_BIAS_F, acc[r][1]);
                acc[r + 1][1] = fmaf(d1 * dx1, __int_as_float(c[3]) - QI8_BIAS_F, acc[r + 1][1]);
            }
            if (MN) { /* the min times the block's Σx (d_x · Σq, in m.y / m.w) */
                const float m0 = qmin<TYPE>(w[r], 0, u), m1 = qmin<TYPE>(w[r + 1], 0, u);
                acc[r][0] = fmaf(m0, __uint_as_float(m.y), acc[r][0]);
                acc[r + 1][0] = fmaf(m1, __uint_as_float(m.y), acc[r + 1][0]);
                if (n > 1) {
                    acc[r][1] = fmaf(m0, __uint_as_float(m.w), acc[r][1]);
                    acc[r + 1][1] = fmaf(m1, __uint_as_float(m.w), acc[r + 1][1]);
                }
            }
        }
    }
}

/* One group of RT tiles: a full group's 4 blocks without branches between them (so their loads
 * and math interleave), a partial group's block by block. */
template <int TYPE, int RT, bool NORM, bool R16, bool SW>
__device__ __forceinline__ void qgroup(float (&acc)[RT][4], const qgrp<TYPE> (&w)[RT],
                                       const qgemv_params &p, int gq, const qxsrc &xs, int t) {
    if (4 * gq + 4 <= p.nb) {
#pragma unroll
        for (int u = 0; u < 4; u++)
            qblock<TYPE, RT, NORM, R16, SW>(acc, w, p, xs, 4 * gq + u, u, t);
        return;
    }
#pragma unroll
    for (int u = 0; u < 3; u++) {
        if (4 * gq + u >= p.nb) break;
        qblock<TYPE, RT, NORM, R16, SW>(acc, w, p, xs, 4 * gq + u, u, t);
    }
}

#endif
