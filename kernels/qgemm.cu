/* qgemm.cu — up to 64 activation rows times a GGUF weight in qgemv.h's packed layout, read once
 * (kernels/qgemm.h).
 *
 * Why not the GEMV in slices of 16 rows: each slice reads all of W again (at 64 rows four times
 * the blocks), and the GEMV's lanes load their x chunks from global memory per block and tile
 * pair, so at 16 rows its x traffic through L1 is four times W's and it runs far below the copy
 * ceiling (bench/ENGINE.md, issue 13: batch 16 0.45-0.8x the bf16 speed). Why not the bf16
 * scratch: dequantizing W costs a write and a read of 2 bytes per weight on top of the blocks'
 * 0.3-1.1, so batches 17-64 ran at about half the bf16 speed.
 *
 * Here a thread block of 8 warps owns 128 W rows (each warp 16: two 8-row tiles, or for SwiGLU a
 * gate tile and its up tile) over the whole k range, or its part of it (a k split, below). Its
 * threads copy each group of 128 columns (4 blocks, qgemv.h) of x (all n rows) and of the 16 tiles
 * (each tile's group is a few contiguous runs in the packed layout) into a ring of shared-memory
 * stages by cp.async, 2-3 groups ahead, one barrier per group. A warp reads its tiles' words at the
 * offsets the GEMV's lanes read (the swapped mma mapping of qgemv.cu, SW: A = row g of its two
 * tiles, B = the x chunks of 8 activation rows), turns each block into bf16 weights once
 * (qweights' exact integers times the block's fp32 scale, plus its fp32 min: fg_qdequant_bf16's
 * values, bit for bit) and runs one mma pair per 8 activation rows, accumulating in fp32. (The
 * GEMV's exact integer partials, scaled per block, cost 4 FMAs and a dependency on the mma per
 * pair: with them, x through shared memory but W from registers one group ahead, the first
 * version of this kernel ran at 12-27 % of copy at 64 rows on the H200, 2026-12-04.)
 * Shapes whose groups or tiles are not whole (in_dim % 128, a SwiGLU out_dim % 8) read W group by
 * group from global memory into registers instead: correct, not tuned (SmolLM2's 576 columns).
 *
 * The k split: the 4096-row projections have 256 warps' worth of rows (32 blocks), too few for
 * the SMs, so blockIdx.y takes a part of the k range, writes its fp32 sums to the caller's work
 * area, and a second kernel adds the parts in order and applies the epilogue (deterministic). A
 * call with enough blocks (gate|up, the head) runs the epilogue in the first kernel.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "gemv.h"
#include "gemv_common.cuh"
#include "qgemm.h"
#include "qgemv.h"
#include "qgemv_math.cuh"

#define QM_KW 8 /* warps per block */
#define QM_MAX_DEVICES 16

struct qgemm_params {
    qgemv_params q; /* y, x, w, n, in_dim, out_dim, epilogue, y_f32; nb, s0, m0, h0 */
    float *work;    /* splits > 1: (splits, n, rows) fp32 */
    int rows;       /* W's rows: out_dim (SWIGLU: 2 · out_dim) */
    int tiles;      /* W's 8-row tiles */
    int units;      /* warp units: 16 W rows (SWIGLU: 8 gate rows and their up rows) */
    int gps;        /* groups of 4 blocks per k split */
};

/* Bytes of one x group in shared memory: [block u of the group][activation row][32 bf16]. */
__host__ __device__ constexpr int qm_xbuf_bytes(int ng) {
    return 4 * 8 * ng * 32 * 2;
}

/* One tile's share of one group as it lies in the packed layout (qgemv.h): its quants, the 8 rows'
 * scales, their mins (Q4_1, Q5_1) or the super-block's d/dmin words (K-quants), the high bits;
 * each region one contiguous run in global memory. */
template <int TYPE> struct qm_img {
    static constexpr int q = 128 * qtype<TYPE>::qb, s = 64;
    static constexpr int m = qtype<TYPE>::ks ? 32 : qtype<TYPE>::mins ? 64 : 0;
    static constexpr int h = 128 * qtype<TYPE>::hb, bytes = q + s + m + h;
};

/* Stages of the ring: x and (SMW) the 16 tile images of the block, for 2 blocks per SM. */
template <int TYPE, int NG, bool SMW> struct qm_stage {
    static constexpr int w = SMW ? 2 * QM_KW * qm_img<TYPE>::bytes : 0;
    static constexpr int bytes = qm_xbuf_bytes(NG) + w;
    static constexpr int n = 3 * bytes <= 100 * 1024 ? (4 * bytes <= 100 * 1024 ? 4 : 3) : 2;
};

__device__ __forceinline__ void qm_cp16(uint32_t dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ void qm_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

/* The two tiles of warp unit un: SWIGLU the gate tile and its up tile (out_dim % 8 == 0 when
 * staged), else two consecutive ones (the last clamped: its rows are discarded). */
__device__ __forceinline__ int qm_tile(const qgemm_params &P, int un, int k) {
    if (P.q.epilogue == FG_GEMV_SWIGLU) return k ? P.q.out_dim / 8 + un : un;
    return min(2 * un + k, P.tiles - 1);
}

/* x columns 128 gq .. (the group's gs blocks) of the n rows into dst: 16-byte chunks, block u's
 * 32 columns of each row contiguous (a warp's lane reads then hit 512 contiguous bytes: no bank
 * conflicts). */
template <int NG, bool FULL>
__device__ __forceinline__ void qm_stage_x(uint32_t dst, const qgemm_params &P, int gq, int gs) {
    const int per_row = FULL ? 16 : 4 * gs, chunks = P.q.n * per_row; /* (FULL: shifts) */
    for (int c = threadIdx.x; c < chunks; c += QM_KW * 32) {
        const int row = c / per_row, w = c % per_row, u = w >> 2, q = w & 3;
        const __nv_bfloat16 *src = P.q.x + (size_t)row * P.q.in_dim + 128 * gq + 32 * u + 8 * q;
        qm_cp16(dst + (uint32_t)(((u * 8 * NG + row) * 32 + 8 * q) * 2), src);
    }
}

/* The block's 16 tile images of (full) group gq into dst, image i = 2 · warp + tile. */
template <int TYPE>
__device__ __forceinline__ void qm_stage_w(uint32_t dst, const qgemm_params &P, int gq) {
    using I = qm_img<TYPE>;
    constexpr int per = I::bytes / 16;
    const qgemv_params &p = P.q;
    for (int c = threadIdx.x; c < 2 * QM_KW * per; c += QM_KW * 32) {
        const int i = c / per, off = (c % per) * 16;
        const int un = min((int)blockIdx.x * QM_KW + i / 2, P.units - 1);
        const size_t tg = (size_t)qm_tile(P, un, i & 1) * p.nb + 4 * gq; /* (tile, block) */
        const uint8_t *src;
        if (off < I::q)
            src = p.w + tg * 32 * qtype<TYPE>::qb + off;
        else if (off < I::q + I::s)
            src = p.w + p.s0 + tg * 16 + (off - I::q);
        else if (off < I::q + I::s + I::m)
            src = p.w + p.m0 + (off - I::q - I::s) +
                  (qtype<TYPE>::ks ? ((tg / p.nb) * (p.nb / 8) + gq / 2) * 32 : tg * 16);
        else
            src = p.w + p.h0 + tg * 32 * qtype<TYPE>::hb + (off - I::q - I::s - I::m);
        qm_cp16(dst + (uint32_t)(i * I::bytes + off), src);
    }
}

/* A lane's qgrp from a tile image (the words qgrp_load would read from global memory). */
template <int TYPE>
__device__ __forceinline__ void qm_read_w(qgrp<TYPE> &w, const uint8_t *img, int lane, int g) {
    using I = qm_img<TYPE>;
    constexpr int QB = qtype<TYPE>::qb;
    if constexpr (QB == 2) {
        const uint2 a = *reinterpret_cast<const uint2 *>(img + 8 * lane);
        w.q[0] = a.x;
        w.q[1] = a.y;
    } else {
#pragma unroll
        for (int v = 0; v < QB / 4; v++) {
            const uint4 a = *reinterpret_cast<const uint4 *>(img + 16 * (lane * QB / 4 + v));
            w.q[4 * v] = a.x;
            w.q[4 * v + 1] = a.y;
            w.q[4 * v + 2] = a.z;
            w.q[4 * v + 3] = a.w;
        }
    }
    w.sa = w.sb = *reinterpret_cast<const uint2 *>(img + I::q + 8 * g);
    w.ma = w.mb = w.h = make_uint2(0u, 0u);
    if (qtype<TYPE>::ks)
        w.ma = w.mb =
            make_uint2(*reinterpret_cast<const uint32_t *>(img + I::q + I::s + 4 * g), 0u);
    else if (qtype<TYPE>::mins)
        w.ma = w.mb = *reinterpret_cast<const uint2 *>(img + I::q + I::s + 8 * g);
    if (qtype<TYPE>::hb == 2)
        w.h = *reinterpret_cast<const uint2 *>(img + I::q + I::s + I::m + 8 * lane);
    if (qtype<TYPE>::hb == 1)
        w.h.x = *reinterpret_cast<const uint32_t *>(img + I::q + I::s + I::m + 4 * lane);
}

/* s · q (+ m) of a pair of exact integers q (a bf16 pair), in fp32 with each operation rounded
 * (none fused), rounded once to bf16: fg_qdequant_bf16's values (model/gguf_quant.c's order). */
template <bool MINS>
__device__ __forceinline__ uint32_t qm_scale_pair(uint32_t q, float s, float m) {
    float lo = __fmul_rn(s, __uint_as_float(q << 16)),
          hi = __fmul_rn(s, __uint_as_float(q & 0xffff0000u));
    if (MINS) {
        lo = __fadd_rn(lo, m);
        hi = __fadd_rn(hi, m);
    }
    return qbf2_rn(lo, hi);
}

/* bf16(q · (dh + dl)) of a pair of exact integers q, dh and dl bf16 pairs with q · dl exact: one
 * exact product, then one fused multiply-add rounded once. */
__device__ __forceinline__ uint32_t qm_fma_pair(uint32_t q, uint32_t dh, uint32_t dl) {
    uint32_t lo, r;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(lo) : "r"(q), "r"(dl), "r"(0x80008000u));
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(q), "r"(dh), "r"(lo));
    return r;
}

/* The lane's 8 weights of block u (qweights' order) as bf16 values bf16(dequantize(w)): the
 * exact integers of qweights times the block's fp32 scale, plus its fp32 min (Q4_1 / Q5_1: m;
 * the K-quants: −dmin · m); Q6_K / Q3_K / Q2_K: pairs 0-1 (the block's first 16 elements in this
 * order) take the first half's scale (and min), pairs 2-3 the second's. */
template <int TYPE> __device__ __forceinline__ uint4 qm_weights(const qgrp<TYPE> &w, int u) {
    constexpr bool M = qtype<TYPE>::mins;
    const uint4 q = qweights<TYPE>(w, u);
    if constexpr (qtype<TYPE>::h16) {
        const float a = q6_scale<TYPE, 0>(w, 0, u), b = q6_scale<TYPE, 1>(w, 0, u);
        float ma = 0.0f, mb = 0.0f;
        if (M) {
            ma = q2_min<TYPE, 0>(w, 0, u);
            mb = q2_min<TYPE, 1>(w, 0, u);
        }
        return make_uint4(qm_scale_pair<M>(q.x, a, ma), qm_scale_pair<M>(q.y, a, ma),
                          qm_scale_pair<M>(q.z, b, mb), qm_scale_pair<M>(q.w, b, mb));
    }
    const float d = qscale<TYPE>(w, 0, u), m = M ? qmin<TYPE>(w, 0, u) : 0.0f;
    if constexpr (TYPE == QT_Q4_0 || TYPE == QT_Q5_0) {
        /* The same bits in two bf16x2 FMAs a pair: d (an fp16, 11 significant bits) = dh + dl with
         * dh = bf16(d) and dl = d − dh (at most 3 significant bits, exact in bf16); q · dl (q − 8
         * or q − 16: at most 5 bits) is exact in bf16, and the fused q · dh + q · dl = q · d is
         * rounded once, as fg_qdequant_bf16 rounds its exact fp32 d · q. (Not for Q8_0, whose
         * 8-bit q makes q · dl inexact, nor where a min or a 6-bit scale joins in.) */
        const __nv_bfloat16 hb = __float2bfloat16_rn(d);
        const __nv_bfloat16 lb = __float2bfloat16_rn(d - __bfloat162float(hb));
        const uint32_t dh = qbf2_rn(__bfloat162float(hb), __bfloat162float(hb));
        const uint32_t dl = qbf2_rn(__bfloat162float(lb), __bfloat162float(lb));
        return make_uint4(qm_fma_pair(q.x, dh, dl), qm_fma_pair(q.y, dh, dl),
                          qm_fma_pair(q.z, dh, dl), qm_fma_pair(q.w, dh, dl));
    }
    return make_uint4(qm_scale_pair<M>(q.x, d, m), qm_scale_pair<M>(q.y, d, m),
                      qm_scale_pair<M>(q.z, d, m), qm_scale_pair<M>(q.w, d, m));
}

/* Block u of the warp's two tiles (wa: W rows of acc[.][0..1], wb: of acc[.][2..3]) against the
 * nrg groups of 8 activation rows staged at xu (block u's [row][32]): one mma pair per group,
 * accumulating in acc[j] (D of qmma_sw: W row g of each tile, activation rows 8j + 2t, 8j + 2t +
 * 1).
 */
template <int TYPE, int NG>
__device__ __forceinline__ void qm_block(float (&acc)[NG][4], const qgrp<TYPE> &wa,
                                         const qgrp<TYPE> &wb, const __nv_bfloat16 *xu, int u,
                                         int nrg, int g, int t) {
    const uint4 w0 = qm_weights<TYPE>(wa, u), w1 = qm_weights<TYPE>(wb, u);
#pragma unroll
    for (int j = 0; j < NG; j++) {
        if (j >= nrg) break;
        uint4 x = *reinterpret_cast<const uint4 *>(xu + (8 * j + g) * 32 + 8 * t);
        if (qtype<TYPE>::h16) x = q6_xperm(x, t);
        qmma_sw(acc[j], w0, w1, x);
    }
}

/* SMW: every group full and the tiles whole (in_dim % 128 == 0; SWIGLU: out_dim % 8 == 0), W
 * staged beside x in the ring; else W from global memory into registers group by group (the odd
 * shapes: correct, not fast). */
template <int TYPE, int NG, bool SMW>
__global__ void __launch_bounds__(QM_KW * 32, 2) qgemm_kernel(const qgemm_params P) {
    using S = qm_stage<TYPE, NG, SMW>;
    constexpr int ST = S::n, XB = qm_xbuf_bytes(NG);
    const qgemv_params &p = P.q;
    extern __shared__ __align__(16) uint8_t sm[]; /* ST stages of [x | 16 tile images] */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const bool swiglu = p.epilogue == FG_GEMV_SWIGLU;
    const int unit = blockIdx.x * QM_KW + warp;
    const bool live = unit < P.units; /* else it computes a clamped unit's rows, stores nothing */
    const int un = min(unit, P.units - 1);
    /* the output rows of the two tiles' row g, and the physical W rows read (clamped) */
    const int o0 = swiglu ? 8 * un + g : 16 * un + g, o1 = swiglu ? o0 : o0 + 8;
    const int r0 = min(o0, p.out_dim - 1);
    const int r1 = swiglu ? p.out_dim + r0 : min(o1, p.out_dim - 1);
    const int ng = (p.nb + 3) / 4;
    const int g0 = blockIdx.y * P.gps, g1 = min(ng, g0 + P.gps);
    const int nrg = (p.n + 7) / 8;
    const uint32_t sm0 = (uint32_t)__cvta_generic_to_shared(sm);

    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    /* the first stages' W before the previous kernel is done (W is constant), x after */
    if (SMW)
        for (int k = 0; k < ST - 1; k++) {
            if (g0 + k < g1) qm_stage_w<TYPE>(sm0 + k * S::bytes + XB, P, g0 + k);
            qm_commit();
        }
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    for (int k = 0; k < ST - 1; k++) {
        if (g0 + k < g1)
            qm_stage_x<NG, SMW>(sm0 + k * S::bytes, P, g0 + k, min(4, p.nb - 4 * (g0 + k)));
        qm_commit();
    }
    float acc[NG][4];
#pragma unroll
    for (int j = 0; j < NG; j++)
        acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    qrows rw[2];
    if (!SMW) {
        rw[0] = qrows_of<TYPE>(p, r0, r0, r0, t);
        rw[1] = qrows_of<TYPE>(p, r1, r1, r1, t);
    }
    for (int gq = g0; gq < g1; gq++) {
        const int k = gq - g0;
        qgrp<TYPE> w[2];
        if (!SMW) { /* issued before the wait below, so their latency overlaps it */
            qgrp_load<TYPE>(w[0], rw[0], p, gq);
            qgrp_load<TYPE>(w[1], rw[1], p, gq);
        }
        /* stage k landed (the groups after it: the ST − 2 stages issued since), and every warp
         * has left group k − 1, whose stage the next issue overwrites */
        asm volatile("cp.async.wait_group %0;\n" ::"n"(ST - 2) : "memory");
        __syncthreads();
        const int ahead = gq + ST - 1;
        if (ahead < g1) {
            const uint32_t st = sm0 + ((k + ST - 1) % ST) * S::bytes;
            if (SMW) qm_stage_w<TYPE>(st + XB, P, ahead);
            qm_stage_x<NG, SMW>(st, P, ahead, min(4, p.nb - 4 * ahead));
        }
        qm_commit();
        const uint8_t *stage = sm + (k % ST) * S::bytes;
        const __nv_bfloat16 *xb = reinterpret_cast<const __nv_bfloat16 *>(stage);
        if (SMW) {
            qm_read_w<TYPE>(w[0], stage + XB + (2 * warp) * qm_img<TYPE>::bytes, lane, g);
            qm_read_w<TYPE>(w[1], stage + XB + (2 * warp + 1) * qm_img<TYPE>::bytes, lane, g);
        }
        const int gs = min(4, p.nb - 4 * gq);
        if (gs == 4) {
#pragma unroll
            for (int u = 0; u < 4; u++)
                qm_block<TYPE, NG>(acc, w[0], w[1], xb + u * 8 * NG * 32, u, nrg, g, t);
        } else {
#pragma unroll
            for (int u = 0; u < 3; u++)
                if (u < gs) qm_block<TYPE, NG>(acc, w[0], w[1], xb + u * 8 * NG * 32, u, nrg, g, t);
        }
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    if (!live) return;
    const bool split = gridDim.y > 1, add = p.epilogue == FG_GEMV_ADD;
#pragma unroll
    for (int j = 0; j < NG; j++) {
        if (j >= nrg) break;
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int b = 8 * j + 2 * t + e;
            if (b >= p.n) continue;
            if (split) { /* the part's raw sums at the physical W rows */
                float *wk = P.work + ((size_t)blockIdx.y * p.n + b) * P.rows;
                if (o0 < p.out_dim) wk[r0] = acc[j][e];
                if (o1 < p.out_dim) wk[r1] = acc[j][2 + e];
            } else if (swiglu) {
                if (o0 < p.out_dim)
                    gemv_store(p.y, p.y_f32, (size_t)b * p.out_dim + o0, false,
                               gemv_silu(acc[j][e]) * acc[j][2 + e]);
            } else {
                if (o0 < p.out_dim)
                    gemv_store(p.y, p.y_f32, (size_t)b * p.out_dim + o0, add, acc[j][e]);
                if (o1 < p.out_dim)
                    gemv_store(p.y, p.y_f32, (size_t)b * p.out_dim + o1, add, acc[j][2 + e]);
            }
        }
    }
}

/* The k split's second kernel: y = epilogue(Σ parts), the parts added in order. */
__global__ void qgemm_reduce_kernel(const qgemm_params P, int splits) {
    const qgemv_params &p = P.q;
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    const size_t total = (size_t)p.n * p.out_dim;
    const bool swiglu = p.epilogue == FG_GEMV_SWIGLU;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const int b = (int)(i / p.out_dim), j = (int)(i % p.out_dim);
        float v = 0.0f, up = 0.0f;
        for (int s = 0; s < splits; s++) {
            const float *wk = P.work + ((size_t)s * p.n + b) * P.rows;
            v += wk[j];
            if (swiglu) up += wk[p.out_dim + j];
        }
        if (swiglu) v = gemv_silu(v) * up;
        gemv_store(p.y, p.y_f32, i, p.epilogue == FG_GEMV_ADD, v);
    }
}

typedef void (*qgemm_fn)(const qgemm_params);
struct qgemm_kern {
    qgemm_fn k;
    int smem; /* its ring's bytes */
};

#define QM_K(T, NG, SMW)                                                                           \
    { qgemm_kernel<T, NG, SMW>, qm_stage<T, NG, SMW>::n *qm_stage<T, NG, SMW>::bytes }
#define QM_T(T)                                                                                    \
    {                                                                                              \
        {QM_K(T, 2, false), QM_K(T, 2, true)}, {QM_K(T, 4, false), QM_K(T, 4, true)}, {            \
            QM_K(T, 8, false), QM_K(T, 8, true)                                                    \
        }                                                                                          \
    }
static const qgemm_kern qgemm_kernels[10][3][2] = {
    QM_T(QT_Q8_0), QM_T(QT_Q4_0), QM_T(QT_Q4_1), QM_T(QT_Q5_0), QM_T(QT_Q5_1),
    QM_T(QT_Q2_K), QM_T(QT_Q3_K), QM_T(QT_Q4_K), QM_T(QT_Q5_K), QM_T(QT_Q6_K),
};
#undef QM_T
#undef QM_K

static int qm_type_index(int wtype) {
    const int ids[10] = {QT_Q8_0, QT_Q4_0, QT_Q4_1, QT_Q5_0, QT_Q5_1,
                         QT_Q2_K, QT_Q3_K, QT_Q4_K, QT_Q5_K, QT_Q6_K};
    for (int i = 0; i < 10; i++)
        if (ids[i] == wtype) return i;
    return -1;
}

extern "C" int fg_qgemm_supported(int wtype, int n, int in_dim, int out_dim) {
    return qcols_ok(wtype, in_dim) && n >= 1 && n <= FG_QGEMM_MAX_ROWS && out_dim >= 1;
}

extern "C" int fg_qgemm_min_rows(int wtype) {
    if (qm_type_index(wtype) < 0) return 0;
    return wtype == QT_Q8_0 || wtype == QT_Q4_0 ? 9 : FG_QGEMV_MAX_ROWS + 1;
}

static int qm_sms(void) {
    int dev = 0, sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
        cudaGetLastError();
        return 132;
    }
    return sms > 0 ? sms : 132;
}

static int qm_units(int out_dim, int epilogue) {
    return epilogue == FG_GEMV_SWIGLU ? (out_dim + 7) / 8 : (out_dim + 15) / 16;
}

/* One part when the row blocks alone give every SM one; else as many parts as fill the SMs' two
 * blocks each in one wave (a second, partial wave would take as long as the first), each part at
 * least 4 groups (512 columns) long, and no more parts than the work area holds. */
static int qm_pick_splits(int n, int in_dim, int out_dim, int epilogue, size_t work_bytes,
                          int sms) {
    const int blocks = (qm_units(out_dim, epilogue) + QM_KW - 1) / QM_KW;
    if (blocks >= sms) return 1;
    const int ng = (in_dim / 32 + 3) / 4;
    int s = max(1, 2 * sms / blocks);
    s = min(s, max(1, ng / 4));
    const size_t rows = (size_t)(epilogue == FG_GEMV_SWIGLU ? 2 : 1) * out_dim;
    const size_t per = (size_t)n * rows * sizeof(float);
    if ((size_t)s * per > work_bytes) s = (int)(work_bytes / per);
    return max(1, s);
}

extern "C" int fg_qgemm_pick_splits(int wtype, int n, int in_dim, int out_dim, int epilogue,
                                    size_t work_bytes) {
    if (!fg_qgemm_supported(wtype, n, in_dim, out_dim)) return 0;
    return qm_pick_splits(n, in_dim, out_dim, epilogue, work_bytes, qm_sms());
}

extern "C" int fg_qgemm(void *y, int y_f32, const void *x, const void *w, int wtype, int n,
                        int in_dim, int out_dim, int epilogue, int splits, void *work,
                        size_t work_bytes, void *stream) {
    if (!fg_qgemm_supported(wtype, n, in_dim, out_dim) || epilogue < FG_GEMV_STORE ||
        epilogue > FG_GEMV_SWIGLU || !y || (uintptr_t)x % 16 || (uintptr_t)w % 16 ||
        (uintptr_t)work % 16 || splits < 0)
        return (int)cudaErrorInvalidValue;
    const int swiglu = epilogue == FG_GEMV_SWIGLU;
    const qlayout l = qlayout_of(wtype, swiglu ? 2 * out_dim : out_dim, in_dim);
    const int ng = (l.nb + 3) / 4;
    const int sms = qm_sms();
    if (splits == 0) splits = qm_pick_splits(n, in_dim, out_dim, epilogue, work_bytes, sms);
    if (splits > ng) return (int)cudaErrorInvalidValue;
    qgemm_params P = {};
    P.q.y = y;
    P.q.y_f32 = y_f32 != 0;
    P.q.x = static_cast<const __nv_bfloat16 *>(x);
    P.q.w = static_cast<const uint8_t *>(w);
    P.q.n = n;
    P.q.in_dim = in_dim;
    P.q.out_dim = out_dim;
    P.q.epilogue = epilogue;
    P.q.nb = l.nb;
    P.q.s0 = l.s0;
    P.q.m0 = l.m0;
    P.q.h0 = l.h0;
    P.rows = (swiglu ? 2 : 1) * out_dim;
    P.units = qm_units(out_dim, epilogue);
    P.tiles = l.tiles;
    P.gps = (ng + splits - 1) / splits;
    splits = (ng + P.gps - 1) / P.gps; /* no empty part */
    P.work = static_cast<float *>(work);
    if (splits > 1 && (!work || (size_t)splits * n * P.rows * sizeof(float) > work_bytes))
        return (int)cudaErrorInvalidValue;
    const int ngi = n <= 16 ? 0 : n <= 32 ? 1 : 2;
    const int smw = in_dim % 128 == 0 && (!swiglu || out_dim % 8 == 0);
    const int ti = qm_type_index(wtype);
    const qgemm_kern *kk = &qgemm_kernels[ti][ngi][smw];
    /* past the 48 KB default: the attribute, once per kernel and device */
    static unsigned char smem_set[QM_MAX_DEVICES][10][3][2];
    if (kk->smem > 48 * 1024) {
        int dev = 0;
        cudaError_t e = cudaGetDevice(&dev);
        if (e != cudaSuccess) return (int)e;
        unsigned char *set =
            dev >= 0 && dev < QM_MAX_DEVICES ? &smem_set[dev][ti][ngi][smw] : nullptr;
        if (!set || !*set) {
            e = cudaFuncSetAttribute(kk->k, cudaFuncAttributeMaxDynamicSharedMemorySize, kk->smem);
            if (e != cudaSuccess) return (int)e;
            if (set) *set = 1;
        }
    }
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)((P.units + QM_KW - 1) / QM_KW), (unsigned)splits);
    cfg.blockDim = dim3(QM_KW * 32);
    cfg.dynamicSmemBytes = kk->smem;
    cfg.stream = static_cast<cudaStream_t>(stream);
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kk->k, P);
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess || splits == 1) return (int)e;
    const size_t total = (size_t)n * out_dim;
    cfg.gridDim = dim3((unsigned)min((total + 255) / 256, (size_t)4 * sms));
    cfg.blockDim = dim3(256);
    cfg.dynamicSmemBytes = 0;
    e = cudaLaunchKernelEx(&cfg, qgemm_reduce_kernel, P, splits);
    return (int)(e != cudaSuccess ? e : cudaGetLastError());
}
