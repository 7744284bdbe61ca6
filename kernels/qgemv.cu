/* qgemv.cu — GEMV for 1 to 16 activation rows on GGUF weights (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K,
 * Q3_K, Q4_K, Q5_K, Q6_K), read in the repacked device layout of qgemv.h (fg_qpack writes it from
 * the file's blocks).
 *
 * Why a repacking: the file's blocks (34 / 18 / 20 / 22 / 24 bytes) keep no 16-byte alignment, so
 * a lane could only take 2-byte loads, each warp load touching 8 rows' cache lines (the direct
 * kernel of bench/results/qgemv_direct_h200_2026-12-02.log ran at 15-29% of copy), and staging the
 * bytes through shared memory (qgemv_staged_h200_2026-12-02.log, 13-53%) costs as many
 * instructions as it saves. In the packed layout each lane's share of 4 consecutive blocks of one
 * W row is one 16-byte word (Q4_x / Q5_x: 32 nibbles; Q8_0: two words, 32 bytes), the 32 lanes of
 * a warp read 512 (1024) contiguous bytes per tile of 8 rows, and the fp16 scales of a row's 4
 * blocks are one 8-byte word in an array of their own.
 *
 * The dot products, on integers: lane (g, t) = (lane / 4, lane % 4) owns elements 8t .. 8t+7 of
 * every 32-element block: one contiguous 16-byte chunk of x, and of W row g the 8 quants in the
 * nibble order of qgemv.h, so that nibble pair p (elements 8t + 2p and 8t + 2p + 1) is the bits
 * (4p .. 4p+3, 16+4p .. 19+4p) of the lane's 32-bit word: one shift and one LOP3 make the bf16
 * pair (128 + q, 128 + q') (0x4300 | q is the bf16 128 + q, exact), one bf16x2 FMA subtracts 136
 * (Q4_0: q − 8) or 128 (Q4_1: q). Q8_0: byte → fp32 2^23 + 128 + q by PRMT, one FADD, two pack
 * into a pair by PRMT. The mma sees exact integers, so each block's partial dot is an fp32 sum of
 * exact products (integer × bf16 x), scaled once by the fp32 d of its W row; Q4_1 adds m · Σx, Σx
 * of the block by one more mma pair with a matrix of ones (shared by the block's tiles). Q5_0 and
 * Q5_1 run as Q4_0 and Q4_1 with a fifth bit per quant: the lane's byte of the block's high bits
 * (slot i's bit at bit i) spread once per block into a word whose one shift per pair puts both
 * bits of the pair at bit 4 of its halves (q5_pair: a shift and a LOP more than Q4_x's pair), one
 * bf16x2 FMA subtracts 144 (q − 16) or 128 (q). Q4_K runs as Q4_1 on its 32-element sub-blocks:
 * the scale d·sc_j and the min −dmin·m_j are formed in fp32 (exact) from the super-block's fp16
 * d/dmin word and the sub-block's unpacked 6-bit (sc, m) bytes; Q5_K runs as Q4_K with Q5_1's fifth
 * bits (the same byte per lane slot and block, the same q5_pair). Q6_K has two int8 scales per
 * 32-element block (one per 16 elements): its packed lane order puts the first 16 elements in the
 * first mma of the block's pair and the last 16 in the second (x follows by two lane swaps,
 * q6_xperm), so each half's fp32 sum takes its own exact d·sc; the 6-bit q − 32 is built as Q4_x's
 * nibbles plus the two high bits (PRMT, shifts, one bf16x2 FMA). Q3_K and Q2_K run as Q6_K (the
 * same lane order, x permutation and per-half scales) on 2-bit quants, 16 bits per lane and block
 * (a lane's 4 blocks one 8-byte word): one PRMT per block spreads them as Q6_K's high bits, a shift
 * and LOPs per pair make bf16 128 + q (Q3_K: with the hmask bit, Q5_x's byte, at bit 2) and one
 * bf16x2 FMA subtracts 132 ((q | h << 2) − 4) or 128 (q); Q2_K's mins add −dmin·m times each
 * half's Σx (the two mma of a pair with the matrix of ones, kept apart). The activations stay bf16
 * (the error is the bf16 GEMV's), except in the i8 variants of the bulk kernel (Q8_0, Q4_x, Q4_K;
 * qgemv_math.cuh's qi8_make and qgroup_i8), which round x to int8 per 32 values first and take
 * the int8 mma; fg_qgemv_pick uses them where they measured faster.
 *
 * Two mappings onto mma.m16n8k16 (template SW). SW (the variants fg_qgemv_pick takes): A = 16 W
 * rows (row g of two 8-row tiles), B = the x chunks of activation rows g (the n ≤ 8 columns; a
 * second mma for rows 8-15 when n > 8): every A register holds weights and B is the x chunk as
 * loaded, one mma pair per 16 rows and block. !SW (gemv.cu's): A = the activation rows, B = 8 W
 * rows: half of A is zero rows at n ≤ 8, and the compiler spends moves assembling it. Measured
 * (run 3): SW takes 0.83-1.00× the time of !SW on the same call (0.85-0.90 at most).
 *
 * A thread block owns RT tiles of 8 W rows (SwiGLU: RT/2 gate tiles and their up tiles); its KW
 * warps split the groups of 4 blocks of k interleaved; each warp loads its next group while it
 * computes the current one (a full group's 4 blocks without branches between them), or, with the
 * async ring (S > 0), S − 1 groups ahead through cp.async into shared memory. Partial sums meet in
 * shared memory in warp order (deterministic), then gemv.cu's epilogue. Programmatic dependent
 * launch as there: the first W loads are issued before griddepcontrol.wait. The fused RMSNorm
 * (NORM): each block computes the n row scales itself (one warp per row, a fixed order: the same
 * bits in every block, for every n and every variant), then h = bf16(x · scale · gamma) (gamma
 * fp32, as every norm weight, kernels/ops.h): into shared memory for all n rows first when they
 * fit (QG_HS_MAX), else chunk by chunk on the way into the mma (the same function, the same
 * bits). R16: activation rows 8-15 in use (n > 8).
 *
 * Measured (H200, bench/results/qgemv_packed_run{1,2,3}_h200_2026-12-02.log, kernels/BENCH.md):
 * the 8B layer's four GEMVs at n = 1 take 2.07 ms per 32-layer step on Q4_0, 2.58 on Q4_1, 3.16 on
 * Q8_0 against 3.92 for bf16, 32-70% of the copy ceiling for the bytes read (the target is 85%).
 * What did not help: an L2 bulk prefetch some steps ahead (PF) and the cp.async ring (S), both
 * slower than two register buffers, and 8-row blocks (rt1). What held it back: every block of
 * the grid (1792 for gate|up) norming all n rows of x again with the fused norm, and the few bytes
 * a warp keeps in flight (its life is a few load latencies on a 4096-wide row). The bulk-copy
 * kernel below (a producer warp, a ring of stages in shared memory, a persistent grid that norms
 * once per block) answers both: bench/results/qgemv_bulk_run2_h200_2026-12-03.log, the four
 * GEMVs per step at n = 1 Q4_0 1.69 ms (was 2.07), Q4_1 1.98 (2.58), Q8_0 2.43 (3.16), gate|up
 * Q8_0 at 81.5% of copy.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>

#include "attention_wgmma.cuh"
#include "gemv.h"
#include "gemv_common.cuh"
#include "qgemv.h"
#include "qgemv_math.cuh"

/* The loads of step uq (groups uq · UG .. uq · UG + UG − 1 that exist) of every tile. */
template <int TYPE, int RT, int UG>
__device__ __forceinline__ void qstep_load(qgrp<TYPE> (&w)[UG][RT], const qrows (&rw)[RT],
                                           const qgemv_params &p, int uq, int ng) {
#pragma unroll
    for (int j = 0; j < UG; j++)
        if (uq * UG + j < ng) {
#pragma unroll
            for (int r = 0; r < RT; r++)
                qgrp_load<TYPE>(w[j][r], rw[r], p, uq * UG + j);
        }
}

/* PF > 0: the warp asks L2 for its step PF steps ahead (one bulk prefetch per region of each
 * tile, lanes r < RT the quants of tile r, RT + r its scales, 2 RT + r its mins), so the loads
 * that follow find their bytes in L2 and the registers need cover only L2's latency. pf_base:
 * the lane's region at group 0, pf_bytes: the region's bytes per block. */
__device__ __forceinline__ void qprefetch(const uint8_t *pf_base, int pf_bytes, int nb, int gq) {
    if (!pf_base || gq >= (nb + 3) / 4) return;
    const int gs = min(4, nb - 4 * gq);
    asm volatile(
        "cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(pf_base + (size_t)gq * 4 * pf_bytes),
        "r"(gs * pf_bytes)
        : "memory");
}

/* The async ring (S > 0): every lane copies its own share of a step (quants, then the scales of
 * its rows 2t and 2t + 1 side by side, then the mins) with cp.async into its own 16-byte slots of
 * the warp's ring of S stages in shared memory, S − 1 steps ahead, and reads them back after
 * cp.async.wait_group; the bytes in flight hold no registers. Part v of tile r of stage st is
 * the 512 bytes at ((st · RT + r) · NP + v) · 512 of the warp's ring (lane l at 16 l: no bank
 * conflicts). A partial last group is read from global memory directly. */
template <int TYPE> struct qring { /* parts: quants, scales, mins or d/dmin, the high bits */
    static constexpr int nq = (qtype<TYPE>::qb + 3) / 4,      /* (QB 2: 8 of a lane's 16 bytes) */
        hp = nq + 1 + (qtype<TYPE>::mins || qtype<TYPE>::ks), /* the high bits' */
        np = hp + (qtype<TYPE>::hb > 0);
};

/* qring<TYPE>::np of a type id (qgemv_launch sizes the ring's shared memory with it). */
static int qring_np(int wtype) {
    switch (wtype) {
    case QT_Q8_0:
        return qring<QT_Q8_0>::np;
    case QT_Q4_0:
        return qring<QT_Q4_0>::np;
    case QT_Q4_1:
        return qring<QT_Q4_1>::np;
    case QT_Q5_0:
        return qring<QT_Q5_0>::np;
    case QT_Q5_1:
        return qring<QT_Q5_1>::np;
    case QT_Q4_K:
        return qring<QT_Q4_K>::np;
    case QT_Q5_K:
        return qring<QT_Q5_K>::np;
    case QT_Q3_K:
        return qring<QT_Q3_K>::np;
    case QT_Q2_K:
        return qring<QT_Q2_K>::np;
    default:
        return qring<QT_Q6_K>::np;
    }
}

__device__ __forceinline__ void qcp16(uint32_t dst, const uint8_t *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ void qcp8(uint32_t dst, const uint8_t *src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ void qcp4(uint32_t dst, const uint8_t *src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
}

/* Issue step gq's copies into stage st (nothing for a partial or absent group), one commit. */
template <int TYPE, int RT>
__device__ __forceinline__ void qring_issue(uint32_t ring, const qrows (&rw)[RT],
                                            const qgemv_params &p, int gq, int st) {
    constexpr int NQ = qring<TYPE>::nq, NP = qring<TYPE>::np, HP = qring<TYPE>::hp;
    if (4 * gq + 4 <= p.nb) {
        const size_t gb = (size_t)gq * 128 * qtype<TYPE>::qb, sgb = (size_t)gq * 64;
        const size_t md = p.m0 - p.s0;
#pragma unroll
        for (int r = 0; r < RT; r++) {
            const uint32_t b = ring + (uint32_t)((st * RT + r) * NP) * 512u;
            if constexpr (qtype<TYPE>::qb == 2) {
                qcp8(b, rw[r].q + gb);
            } else {
#pragma unroll
                for (int v = 0; v < NQ; v++)
                    qcp16(b + 512u * v, rw[r].q + gb + 16 * v);
            }
            qcp8(b + 512u * NQ, rw[r].sa + sgb);
            qcp8(b + 512u * NQ + 8, rw[r].sb + sgb);
            if (qtype<TYPE>::hb == 2) qcp8(b + 512u * HP, rw[r].h + (size_t)gq * 256);
            if (qtype<TYPE>::hb == 1) qcp4(b + 512u * HP, rw[r].h + (size_t)gq * 128);
            if (qtype<TYPE>::ks) { /* the d/dmin words where ma.x and mb.x are read back */
                qcp4(b + 512u * (NQ + 1), rw[r].da + (size_t)(gq >> 1) * 32);
                qcp4(b + 512u * (NQ + 1) + 8, rw[r].db + (size_t)(gq >> 1) * 32);
            } else if (qtype<TYPE>::mins) {
                qcp8(b + 512u * (NQ + 1), rw[r].sa + sgb + md);
                qcp8(b + 512u * (NQ + 1) + 8, rw[r].sb + sgb + md);
            }
        }
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

/* Step gq's share of tile r, from stage st of the ring (or, for a partial group, from W). */
template <int TYPE, int RT>
__device__ __forceinline__ void qring_read(qgrp<TYPE> (&w)[RT], const uint8_t *ring,
                                           const qrows (&rw)[RT], const qgemv_params &p, int gq,
                                           int st) {
    constexpr int NQ = qring<TYPE>::nq, NP = qring<TYPE>::np, HP = qring<TYPE>::hp;
#pragma unroll
    for (int r = 0; r < RT; r++) {
        if (4 * gq + 4 > p.nb) {
            qgrp_load<TYPE>(w[r], rw[r], p, gq);
            continue;
        }
        const uint8_t *b = ring + (size_t)((st * RT + r) * NP) * 512;
        if constexpr (qtype<TYPE>::qb == 2) {
            const uint2 a = *reinterpret_cast<const uint2 *>(b);
            w[r].q[0] = a.x;
            w[r].q[1] = a.y;
        } else {
#pragma unroll
            for (int v = 0; v < NQ; v++) {
                const uint4 a = *reinterpret_cast<const uint4 *>(b + 512 * v);
                w[r].q[4 * v] = a.x;
                w[r].q[4 * v + 1] = a.y;
                w[r].q[4 * v + 2] = a.z;
                w[r].q[4 * v + 3] = a.w;
            }
        }
        const uint4 sc = *reinterpret_cast<const uint4 *>(b + 512 * NQ);
        w[r].sa = make_uint2(sc.x, sc.y);
        w[r].sb = make_uint2(sc.z, sc.w);
        if (qtype<TYPE>::hb == 2) w[r].h = *reinterpret_cast<const uint2 *>(b + 512 * HP);
        if (qtype<TYPE>::hb == 1)
            w[r].h = make_uint2(*reinterpret_cast<const uint32_t *>(b + 512 * HP), 0u);
        if (qtype<TYPE>::mins || qtype<TYPE>::ks) {
            const uint4 mn = *reinterpret_cast<const uint4 *>(b + 512 * (NQ + 1));
            w[r].ma = make_uint2(mn.x, qtype<TYPE>::ks ? 0u : mn.y);
            w[r].mb = make_uint2(mn.z, qtype<TYPE>::ks ? 0u : mn.w);
        }
    }
}

/* Where a lane's activation chunks come from (qxsrc), after the norm's row scales sc are made:
 * with the fused norm and p.hs, the first nthr threads first norm all n rows of x into hsm (row
 * stride in_dim + 32: rows g and g + 1 of one 16-byte load fall in different banks), block 0 also
 * to h_out, then meet (named: barrier 1 among them; else __syncthreads); without p.hs block 0's
 * lanes store h on the way (h0 / h1). */
template <bool NORM, bool R16>
__device__ __forceinline__ qxsrc qxsrc_make(const qgemv_params &p, const float *sc,
                                            __nv_bfloat16 *hsm, int nthr, bool named) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const bool has0 = g < p.n, has1 = R16 && g + 8 < p.n;
    qxsrc xs = {};
    xs.x0 = p.x + (size_t)(has0 ? g : 0) * p.in_dim + 8 * t;
    xs.x1 = p.x + (size_t)(has1 ? g + 8 : 0) * p.in_dim + 8 * t;
    xs.gamma = NORM ? p.gamma + 8 * t : nullptr;
    xs.has0 = has0;
    xs.has1 = has1;
    xs.s0 = NORM && has0 ? sc[g] : 0.0f;
    xs.s1 = NORM && has1 ? sc[g + 8] : 0.0f;
    const bool store_h = NORM && p.h_out && blockIdx.x == 0;
    if (NORM && p.hs) {
        const int cpr = p.in_dim / 8, hst = p.in_dim + 32;
#pragma unroll 4
        for (int i = threadIdx.x; i < p.n * cpr; i += nthr) {
            const int row = i / cpr, c = i % cpr;
            const uint4 xv =
                __ldg(reinterpret_cast<const uint4 *>(p.x + (size_t)row * p.in_dim) + c);
            const uint4 h = gemv_norm_chunk(xv, gemv_load_gamma(p.gamma + 8 * c), sc[row]);
            *reinterpret_cast<uint4 *>(hsm + (size_t)row * hst + 8 * c) = h;
            if (store_h) *reinterpret_cast<uint4 *>(p.h_out + (size_t)row * p.in_dim + 8 * c) = h;
        }
        if (named)
            named_bar_sync(1, nthr);
        else
            __syncthreads();
        xs.hs0 = hsm + (size_t)(has0 ? g : 0) * hst + 8 * t;
        xs.hs1 = hsm + (size_t)(has1 ? g + 8 : 0) * hst + 8 * t;
    } else {
        xs.h0 = store_h && has0 ? p.h_out + (size_t)g * p.in_dim + 8 * t : nullptr;
        xs.h1 = store_h && has1 ? p.h_out + (size_t)(g + 8) * p.in_dim + 8 * t : nullptr;
    }
    return xs;
}

/* UG groups per warp step (consecutive in k; the warps' steps interleave), MINB the blocks per SM
 * the register budget is cut for, PF the prefetch distance in steps (0: none), S the stages of
 * the async ring (0: two register buffers instead). */
template <int TYPE, int RT, int KW, int UG, int MINB, int PF, int S, bool SW, bool NORM, bool R16>
__global__ void __launch_bounds__(KW * 32, MINB) qgemv_kernel(const qgemv_params p) {
    constexpr int QB = qtype<TYPE>::qb;
    __shared__ float red[KW][RT][FG_QGEMV_MAX_ROWS][8]; /* warp, W tile, act row, W row */
    __shared__ float sc[FG_QGEMV_MAX_ROWS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int OT = p.out_tiles, j0 = blockIdx.x * 8 * OT;
    const bool swiglu = p.epilogue == FG_GEMV_SWIGLU;

    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");

    /* The physical W row of tile r's column c (rows past out_dim read the last one, discarded). */
    qrows rw[RT];
#pragma unroll
    for (int r = 0; r < RT; r++) {
        const int o = swiglu ? r % OT : r;
        const int base = swiglu && r >= OT ? p.out_dim : 0;
        const int rq = base + min(j0 + o * 8 + g, p.out_dim - 1);
        /* the scales' rows: the accumulators' W rows 2t, 2t + 1 (SW: the lane's own row g) */
        const int ra = SW ? rq : base + min(j0 + o * 8 + 2 * t, p.out_dim - 1);
        const int rb = SW ? rq : base + min(j0 + o * 8 + 2 * t + 1, p.out_dim - 1);
        rw[r] = qrows_of<TYPE>(p, rq, ra, rb, t);
    }
    const uint8_t *pf_base = nullptr;
    int pf_bytes = 0;
    if (PF > 0 && UG == 1 && lane < (qtype<TYPE>::mins && !qtype<TYPE>::ks ? 3 : 2) * RT) {
        const int r = lane % RT, o = swiglu ? r % OT : r;
        const int row = (swiglu && r >= OT ? p.out_dim : 0) + min(j0 + o * 8, p.out_dim - 1);
        const size_t tb = (size_t)(row >> 3) * p.nb; /* the tile's first (tile, block) pair */
        const int region = lane / RT;                /* quants, scales, mins */
        pf_base = p.w + (region == 0 ? tb * 32 * QB : (region == 1 ? p.s0 : p.m0) + tb * 16);
        pf_bytes = region == 0 ? 32 * QB : 16;
    }
    float acc[RT][4];
#pragma unroll
    for (int r = 0; r < RT; r++)
        acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = 0.0f;

    const int ng = (p.nb + 3) / 4, nu = (ng + UG - 1) / UG; /* groups, steps of UG groups */
    int uq = warp;
    qgrp<TYPE> wa[UG][RT], wb[UG][RT];
    extern __shared__ __align__(16) uint8_t qsm[];
    uint8_t *ring = qsm + ((size_t)warp * S * RT * qring<TYPE>::np * 512 + 16 * lane);
    const uint32_t ring_s = (uint32_t)__cvta_generic_to_shared(ring);
    if (S > 0) {
        for (int st = 0; st < S - 1; st++)
            qring_issue<TYPE, RT>(ring_s, rw, p, uq + st * KW, st);
    } else {
#pragma unroll
        for (int d = 1; d <= PF; d++)
            qprefetch(pf_base, pf_bytes, p.nb, uq + d * KW);
        qstep_load<TYPE, RT, UG>(wa, rw, p, uq, ng);
    }
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    if (NORM) qnorm_scales<KW>(p, sc);
    __nv_bfloat16 *hsm =
        reinterpret_cast<__nv_bfloat16 *>(qsm + (size_t)KW * S * RT * qring<TYPE>::np * 512);
    const qxsrc xs = qxsrc_make<NORM, R16>(p, sc, hsm, KW * 32, false);
    /* The async ring: step i issues step i + S − 1, waits for its own, computes. */
    constexpr int SS = S > 0 ? S : 1;
    for (int i = 0; S > 0; i++) {
        const int gq = warp + i * KW;
        if (gq >= ng) break;
        qring_issue<TYPE, RT>(ring_s, rw, p, gq + (SS - 1) * KW, (i + SS - 1) % SS);
        asm volatile("cp.async.wait_group %0;\n" ::"n"(SS - 1) : "memory");
        qring_read<TYPE, RT>(wa[0], ring, rw, p, gq, i % SS);
        qgroup<TYPE, RT, NORM, R16, SW>(acc, wa[0], p, gq, xs, t);
    }
    if (S > 0) asm volatile("cp.async.wait_all;\n" ::: "memory");
    /* Two register buffers in turn: the next step's loads are in flight during this one's math. */
    while (S == 0 && uq < nu) {
        const int u1 = uq + KW, u2 = u1 + KW;
        if (PF > 0) {
            qprefetch(pf_base, pf_bytes, p.nb, uq + (PF + 1) * KW);
            qprefetch(pf_base, pf_bytes, p.nb, uq + (PF + 2) * KW);
        }
        qstep_load<TYPE, RT, UG>(wb, rw, p, u1, ng);
#pragma unroll
        for (int j = 0; j < UG; j++)
            if (uq * UG + j < ng)
                qgroup<TYPE, RT, NORM, R16, SW>(acc, wa[j], p, uq * UG + j, xs, t);
        if (u1 >= nu) break;
        qstep_load<TYPE, RT, UG>(wa, rw, p, u2, ng);
#pragma unroll
        for (int j = 0; j < UG; j++)
            if (u1 * UG + j < ng)
                qgroup<TYPE, RT, NORM, R16, SW>(acc, wb[j], p, u1 * UG + j, xs, t);
        uq = u2;
    }
#pragma unroll
    for (int r = 0; r < RT; r++) {
        if (SW) {
            red[warp][r][2 * t][g] = acc[r][0];
            red[warp][r][2 * t + 1][g] = acc[r][1];
            red[warp][r][8 + 2 * t][g] = acc[r][2];
            red[warp][r][9 + 2 * t][g] = acc[r][3];
        } else {
            red[warp][r][g][2 * t] = acc[r][0];
            red[warp][r][g][2 * t + 1] = acc[r][1];
            red[warp][r][g + 8][2 * t] = acc[r][2];
            red[warp][r][g + 8][2 * t + 1] = acc[r][3];
        }
    }
    __syncthreads();

    gemv_epilogue<KW, RT, FG_QGEMV_MAX_ROWS>(p, &red[0][0][0][0], j0, KW * 32);
}

/* The bulk-copy kernel (the "bulk" variants). The register kernel above keeps at most two groups
 * of each of its tiles in flight per warp: with 8 warps of 4 groups each on a 4096-wide row, the
 * warps' whole life is a few load latencies, and an SM holds too few bytes in flight to reach the
 * copy ceiling (Q4_0 0.56 bytes per weight: 38 % of copy at n = 1). Here one lane of an extra
 * producer warp streams the block's W through a ring of ST stages in shared memory by
 * cp.async.bulk (one instruction per region and tile, the bytes counted on the stage's "full"
 * mbarrier), so a block keeps ST stages of G = KW groups of each of its RT tiles in flight with
 * no registers held; the KW consumer warps wait on "full", read their group (warp w takes group w
 * of every stage: groups w, w + KW, ... of the row, as the register kernel's warps with KW warps,
 * so the sums are the same bits), release the stage on its "empty" mbarrier (KW arrivals) and run
 * the same qgroup. The grid is persistent (at most the blocks the SMs hold at once): a block walks
 * work items (RT tiles of 8 rows) item, item + gridDim.x, ..., the producer runs ahead across
 * item boundaries, and the fused norm's scales (and h in shared memory) are made once per block,
 * not once per item. Each item's partial sums meet in shared memory as above, behind named
 * barriers among the consumer warps (the producer never waits for them). A stage holds, per
 * tile, its regions' bytes for the stage's groups as they lie in global memory (qgemv.h: a
 * tile's group of quants, scales, mins or d/dmin words, high bits are contiguous runs), so a
 * consumer lane finds its words at the offsets the register kernel reads, relative to the run.
 * Served: every group full (in_dim % 128 == 0) and out_dim % 8 == 0 (whole tiles, the SwiGLU up
 * rows tile-aligned); other shapes run the register kernel's variant 0. */
/* The bytes of one tile's share of a stage of g groups: per region (quants, scales, mins or
 * d/dmin, high bits); the tile's slot in a stage holds a full stage's (KW groups). */
struct qbulk_parts {
    uint32_t q, s, m, h;
    __host__ __device__ uint32_t sum() const {
        return q + s + m + h;
    }
};

__host__ __device__ __forceinline__ qbulk_parts qbulk_parts_of(int wtype, int g) {
    qbulk_parts b;
    const bool mins = wtype == QT_Q4_1 || wtype == QT_Q5_1,
               ks = wtype == QT_Q4_K || wtype == QT_Q5_K || wtype == QT_Q6_K || wtype == QT_Q3_K ||
                    wtype == QT_Q2_K;
    b.q = (uint32_t)g * 128 * (uint32_t)qlayout_qb(wtype);
    b.s = (uint32_t)g * 64;
    b.m = mins ? (uint32_t)g * 64 : ks ? (uint32_t)g * 16 : 0;
    b.h = (uint32_t)g * 128 * (uint32_t)qlayout_hb(wtype);
    return b;
}

template <int TYPE, int RT, int KW, int ST, int MINB, bool NORM, bool R16, bool I8>
__global__ void __launch_bounds__((KW + 1) * 32, MINB) qgemv_bulk_kernel(const qgemv_params p) {
    constexpr int QB = qtype<TYPE>::qb, HB = qtype<TYPE>::hb;
    __shared__ float red[KW][RT][FG_QGEMV_MAX_ROWS][8]; /* warp, W tile, act row, W row */
    __shared__ float sc[FG_QGEMV_MAX_ROWS];
    __shared__ __align__(8) uint64_t bars[2 * ST]; /* full[ST], then empty[ST] */
    extern __shared__ __align__(16) uint8_t qsm[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int OT = p.out_tiles;
    const bool swiglu = p.epilogue == FG_GEMV_SWIGLU;
    const int items = (p.out_dim + 8 * OT - 1) / (8 * OT), ng = p.nb / 4, nch = (ng + KW - 1) / KW;
    const int tiles = (swiglu ? 2 : 1) * p.out_dim / 8; /* the packed matrix's */
    const qbulk_parts full = qbulk_parts_of(TYPE, KW);
    const uint32_t ts = full.sum(), stage_bytes = RT * ts;
    const uint32_t ring = (uint32_t)__cvta_generic_to_shared(qsm);
    const uint32_t bar0 = (uint32_t)__cvta_generic_to_shared(bars);

    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    mbar_ring_init(bar0, ST, KW);
    __syncthreads();

    if (warp == KW) { /* the producer: W only, constant, so it never waits for the grid before */
        if (lane != 0) return;
        uint64_t policy;
        asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
        int s = 0;
        uint32_t ph = 0;
        for (int it = blockIdx.x; it < items; it += gridDim.x) {
            const int j0 = it * 8 * OT;
            for (int c = 0; c < nch; c++) {
                const int gc = min(KW, ng - c * KW);
                const qbulk_parts part = qbulk_parts_of(TYPE, gc);
                mbar_wait(bar0 + 8 * (ST + s), ph ^ 1);
                mbar_arrive_expect_tx(bar0 + 8 * s, RT * part.sum());
#pragma unroll
                for (int r = 0; r < RT; r++) {
                    const int o = swiglu ? r % OT : r;
                    const int base = swiglu && r >= OT ? p.out_dim / 8 : 0;
                    const int tile = min(base + (j0 + 8 * o) / 8, tiles - 1);
                    const size_t tb = (size_t)tile * p.nb, gq = (size_t)c * KW;
                    const uint32_t d = ring + (uint32_t)s * stage_bytes + (uint32_t)r * ts;
                    const uint32_t bar = bar0 + 8 * s;
                    bulk_load_1d(d, p.w + tb * 32 * QB + gq * 128 * QB, part.q, bar, policy);
                    bulk_load_1d(d + full.q, p.w + p.s0 + tb * 16 + gq * 64, part.s, bar, policy);
                    if (qtype<TYPE>::ks)
                        bulk_load_1d(d + full.q + full.s, p.w + p.m0 + tb * 4 + gq * 16, part.m,
                                     bar, policy);
                    else if (qtype<TYPE>::mins)
                        bulk_load_1d(d + full.q + full.s, p.w + p.m0 + tb * 16 + gq * 64, part.m,
                                     bar, policy);
                    if (HB)
                        bulk_load_1d(d + full.q + full.s + full.m,
                                     p.w + p.h0 + tb * 32 * HB + gq * 128 * HB, part.h, bar,
                                     policy);
                }
                mbar_ring_next(s, ph, ST);
            }
        }
        return;
    }

    /* The consumers: KW warps, KW · 32 threads, barrier 1 among them. */
    const int nthr = KW * 32;
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    if (NORM) {
        qnorm_rows<KW>(p, sc);
        named_bar_sync(1, nthr);
    }
    qxsrc xs = {};
    qi8src xi = {};
    if constexpr (I8) { /* x quantized once per block (qi8_make), behind barrier 1 */
        xi = qi8_make<TYPE, NORM>(p, sc, qsm + (size_t)ST * stage_bytes, nthr);
        named_bar_sync(1, nthr);
    } else {
        xs = qxsrc_make<NORM, R16>(
            p, sc, reinterpret_cast<__nv_bfloat16 *>(qsm + (size_t)ST * stage_bytes), nthr, true);
    }

    int s = 0;
    uint32_t ph = 0;
    for (int it = blockIdx.x; it < items; it += gridDim.x) {
        const int j0 = it * 8 * OT;
        float acc[RT][4];
#pragma unroll
        for (int r = 0; r < RT; r++)
            acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = 0.0f;
        for (int c = 0; c < nch; c++) {
            const int gq = c * KW + warp;
            mbar_wait(bar0 + 8 * s, ph);
            qgrp<TYPE> w[RT];
            if (gq < ng) {
                const uint8_t *st = qsm + (size_t)s * stage_bytes;
#pragma unroll
                for (int r = 0; r < RT; r++) {
                    const uint8_t *b = st + (size_t)r * ts;
                    if constexpr (QB == 2) {
                        const uint2 a =
                            *reinterpret_cast<const uint2 *>(b + warp * 128 * QB + 8 * lane);
                        w[r].q[0] = a.x;
                        w[r].q[1] = a.y;
                    }
#pragma unroll
                    for (int v = 0; v < QB / 4; v++) {
                        const uint4 a = *reinterpret_cast<const uint4 *>(b + warp * 128 * QB +
                                                                         16 * (lane * QB / 4 + v));
                        w[r].q[4 * v] = a.x;
                        w[r].q[4 * v + 1] = a.y;
                        w[r].q[4 * v + 2] = a.z;
                        w[r].q[4 * v + 3] = a.w;
                    }
                    w[r].sa = w[r].sb =
                        *reinterpret_cast<const uint2 *>(b + full.q + warp * 64 + 8 * g);
                    w[r].h = make_uint2(0u, 0u);
                    if (HB == 2)
                        w[r].h = *reinterpret_cast<const uint2 *>(b + full.q + full.s + full.m +
                                                                  warp * 256 + 8 * lane);
                    if (HB == 1)
                        w[r].h.x = *reinterpret_cast<const uint32_t *>(
                            b + full.q + full.s + full.m + warp * 128 + 4 * lane);
                    if (qtype<TYPE>::ks)
                        w[r].ma = w[r].mb =
                            make_uint2(*reinterpret_cast<const uint32_t *>(
                                           b + full.q + full.s + (warp >> 1) * 32 + 4 * g),
                                       0u);
                    else if (qtype<TYPE>::mins)
                        w[r].ma = w[r].mb = *reinterpret_cast<const uint2 *>(b + full.q + full.s +
                                                                             warp * 64 + 8 * g);
                }
            }
            __syncwarp();
            if (lane == 0) mbar_arrive(bar0 + 8 * (ST + s));
            mbar_ring_next(s, ph, ST);
            if constexpr (I8) {
                if (gq < ng) qgroup_i8<TYPE, RT>(acc, w, xi, gq, p.n);
            } else {
                if (gq < ng) qgroup<TYPE, RT, NORM, R16, true>(acc, w, p, gq, xs, t);
            }
        }
        xs.h0 = xs.h1 = nullptr; /* h is whole after the first item */
#pragma unroll
        for (int r = 0; r < RT; r++) {
            red[warp][r][2 * t][g] = acc[r][0];
            red[warp][r][2 * t + 1][g] = acc[r][1];
            red[warp][r][8 + 2 * t][g] = acc[r][2];
            red[warp][r][9 + 2 * t][g] = acc[r][3];
        }
        named_bar_sync(1, nthr);
        gemv_epilogue<KW, RT, FG_QGEMV_MAX_ROWS>(p, &red[0][0][0][0], j0, nthr);
        named_bar_sync(1, nthr); /* red is free for the next item */
    }
}

/* The variants the benchmark times; fg_qgemv_pick chooses among them. */
typedef void (*qgemv_fn)(const qgemv_params);
struct qgemv_variant {
    const char *name;
    int rt, kw, stages;
    int bulk;             /* qgemv_bulk_kernel (stages: its ring's) */
    qgemv_fn k[10][2][2]; /* type (qtype_index), NORM, R16 */
    int i8;   /* int8 x (Q8_0, Q4_0, Q4_1, Q4_K; n <= 8: qgemv_i8_serves; NULL kernels else) */
    int twin; /* i8: the bf16-x variant of the same shape, for the calls it does not serve */
};

#define QG_K(T, RT, KW, MB, PF, S, SW, NORM, R16)                                                  \
    qgemv_kernel<T, RT, KW, 1, MB, PF, S, SW, NORM, R16>
#define QG_T(T, RT, KW, MB, PF, S, SW)                                                             \
    {                                                                                              \
        {QG_K(T, RT, KW, MB, PF, S, SW, false, false),                                             \
         QG_K(T, RT, KW, MB, PF, S, SW, false, true)},                                             \
        {                                                                                          \
            QG_K(T, RT, KW, MB, PF, S, SW, true, false),                                           \
                QG_K(T, RT, KW, MB, PF, S, SW, true, true)                                         \
        }                                                                                          \
    }
#define QG_V(RT, KW, MB, PF, S, SW)                                                                \
    {                                                                                              \
        "rt" #RT "_kw" #KW "_mb" #MB "_pf" #PF "_s" #S "_sw" #SW, RT, KW, S, 0,                    \
            {QG_T(QT_Q8_0, RT, KW, MB, PF, S, SW), QG_T(QT_Q4_0, RT, KW, MB, PF, S, SW),           \
             QG_T(QT_Q4_1, RT, KW, MB, PF, S, SW), QG_T(QT_Q4_K, RT, KW, MB, PF, S, SW),           \
             QG_T(QT_Q6_K, RT, KW, MB, PF, S, SW), QG_T(QT_Q5_0, RT, KW, MB, PF, S, SW),           \
             QG_T(QT_Q5_1, RT, KW, MB, PF, S, SW), QG_T(QT_Q5_K, RT, KW, MB, PF, S, SW),           \
             QG_T(QT_Q3_K, RT, KW, MB, PF, S, SW), QG_T(QT_Q2_K, RT, KW, MB, PF, S, SW)},          \
            0, 0                                                                                   \
    }
#define QG_BK(T, RT, KW, ST, MB, NORM, R16) qgemv_bulk_kernel<T, RT, KW, ST, MB, NORM, R16, false>
#define QG_BT(T, RT, KW, ST, MB)                                                                   \
    {                                                                                              \
        {QG_BK(T, RT, KW, ST, MB, false, false), QG_BK(T, RT, KW, ST, MB, false, true)},           \
            {QG_BK(T, RT, KW, ST, MB, true, false), QG_BK(T, RT, KW, ST, MB, true, true)},         \
    }
#define QG_VB(RT, KW, ST, MB)                                                                      \
    {                                                                                              \
        "bulk_rt" #RT "_kw" #KW "_st" #ST "_mb" #MB, RT, KW, ST, 1,                                \
            {QG_BT(QT_Q8_0, RT, KW, ST, MB), QG_BT(QT_Q4_0, RT, KW, ST, MB),                       \
             QG_BT(QT_Q4_1, RT, KW, ST, MB), QG_BT(QT_Q4_K, RT, KW, ST, MB),                       \
             QG_BT(QT_Q6_K, RT, KW, ST, MB), QG_BT(QT_Q5_0, RT, KW, ST, MB),                       \
             QG_BT(QT_Q5_1, RT, KW, ST, MB), QG_BT(QT_Q5_K, RT, KW, ST, MB),                       \
             QG_BT(QT_Q3_K, RT, KW, ST, MB), QG_BT(QT_Q2_K, RT, KW, ST, MB)},                      \
            0, 0                                                                                   \
    }
#define QG_IK(T, RT, KW, ST, MB, NORM) qgemv_bulk_kernel<T, RT, KW, ST, MB, NORM, false, true>
#define QG_IT(T, RT, KW, ST, MB)                                                                   \
    { {QG_IK(T, RT, KW, ST, MB, false), nullptr}, {QG_IK(T, RT, KW, ST, MB, true), nullptr}, }
#define QG_NT                                                                                      \
    {                                                                                              \
        {nullptr, nullptr}, {                                                                      \
            nullptr, nullptr                                                                       \
        }                                                                                          \
    }
/* (the rows of qtype_index: Q8_0, Q4_0, Q4_1, Q4_K, then the types it does not serve) */
#define QG_VI(RT, KW, ST, MB, TWIN)                                                                \
    {                                                                                              \
        "i8_rt" #RT "_kw" #KW "_st" #ST "_mb" #MB, RT, KW, ST, 1,                                  \
            {QG_IT(QT_Q8_0, RT, KW, ST, MB),                                                       \
             QG_IT(QT_Q4_0, RT, KW, ST, MB),                                                       \
             QG_IT(QT_Q4_1, RT, KW, ST, MB),                                                       \
             QG_IT(QT_Q4_K, RT, KW, ST, MB),                                                       \
             QG_NT,                                                                                \
             QG_NT,                                                                                \
             QG_NT,                                                                                \
             QG_NT,                                                                                \
             QG_NT,                                                                                \
             QG_NT},                                                                               \
            1, TWIN                                                                                \
    }
static const qgemv_variant qgemv_variants[] = {
    QG_V(2, 8, 2, 0, 0, 1), QG_V(2, 8, 3, 0, 0, 1), QG_V(2, 8, 2, 0, 4, 1), QG_V(2, 8, 2, 0, 0, 0),
    QG_V(2, 8, 3, 0, 0, 0), QG_V(2, 8, 2, 0, 4, 0), QG_V(1, 8, 3, 0, 0, 0), QG_VB(2, 8, 4, 2),
    QG_VB(2, 8, 3, 3),      QG_VB(2, 4, 6, 3),      QG_VB(4, 8, 3, 2),      QG_VI(2, 8, 4, 2, 7),
    QG_VI(2, 8, 3, 3, 8),   QG_VI(4, 8, 3, 2, 10),
};
#undef QG_VI
#undef QG_NT
#undef QG_IT
#undef QG_IK
#undef QG_VB
#undef QG_BT
#undef QG_BK
#undef QG_V
#undef QG_T
#undef QG_K
#define QG_N_VARIANTS (int)(sizeof(qgemv_variants) / sizeof(qgemv_variants[0]))

/* The row of a variant's kernel table for a type (qgemv_variant.k). */
static int qtype_index(int wtype) {
    switch (wtype) {
    case QT_Q8_0:
        return 0;
    case QT_Q4_0:
        return 1;
    case QT_Q4_1:
        return 2;
    case QT_Q4_K:
        return 3;
    case QT_Q6_K:
        return 4;
    case QT_Q5_0:
        return 5;
    case QT_Q5_1:
        return 6;
    case QT_Q5_K:
        return 7;
    case QT_Q3_K:
        return 8;
    default: /* Q2_K */
        return 9;
    }
}

extern "C" int fg_qgemv_supported(int wtype, int n, int in_dim, int out_dim) {
    return qcols_ok(wtype, in_dim) && n >= 1 && n <= FG_QGEMV_MAX_ROWS && out_dim >= 1;
}

/* Every group of a row full (in_dim / 32 a multiple of 4): 16-byte loads only. */
extern "C" int fg_qgemv_staged(int wtype, const void *w, int in_dim) {
    return qtype_known(wtype) && (uintptr_t)w % 16 == 0 && in_dim % 128 == 0;
}

extern "C" int fg_qgemv_n_variants(void) {
    return QG_N_VARIANTS;
}

extern "C" const char *fg_qgemv_variant_name(int v) {
    return v >= 0 && v < QG_N_VARIANTS ? qgemv_variants[v].name : "";
}

/* The one selector (the variant for a call; -1 for a refused shape). From the variants table of
 * bench/results/qgemv_packed_run3_h200_2026-12-02.log (µs per call back to back in a CUDA graph,
 * H200, the 8B layer's four GEMVs at n = 1, 8, 16): rt2_kw8_mb2_pf0_s0_sw1 (0) is the fastest or
 * within 0.4% of it at 27 of the 36 points; the fused-norm calls on Q4_x go faster with three
 * blocks per SM (1: rt2_kw8_mb3_pf0_s0_sw1, registers cut to 80 with a few spills): Q4_0 q|k|v
 * 8.6 µs against 13.3 at n = 1, gate|up 35.5 against 44.0; at n = 8 on Q4_0 (14.1 / 62.7 against
 * 18.8 / 66.9) and at n = 1 on Q4_1 (11.5 / 45.9 against 14.5 / 47.8); not at n = 16, nor for
 * Q4_1 gate|up at n = 8 (75.7 against 71.9). Q4_K takes Q4_1's choices (the same loads and mma
 * pairs plus its scale and min products), Q6_K the defaults (timed in
 * bench/results/qgemv_kquant_bench_h200_2026-12-02c.log, not re-picked). Q5_0 and Q5_1, from
 * bench/results/qgemv_q5_bench_h200_2026-12-03.log: Q5_0's fused norm at n = 1 takes variant 1
 * (q|k|v 11.7 µs against 15.8, gate|up 46.4 against 54.8; at n = 8 q|k|v gains 2.5 µs and gate|up
 * loses 2.0, at n = 16 both lose); Q5_1 keeps the defaults everywhere (its mb3 norm kernel for
 * n <= 8 spills 356 bytes, Q5_0's 56, Q4_1's 216: bench/results/qgemv_q5_ptxas_2026-12-03.log;
 * at n = 1 q|k|v 15.2 µs against 16.6 but gate|up 61.7 against 58.1).
 * Where the bulk kernel serves the shape (whole groups and tiles: every Llama-shape layer), from
 * bench/results/qgemv_bulk_run2_h200_2026-12-03.log (the same table with its four variants,
 * 7-10): the fused-norm calls take it for every type, 1.0-2.3x the register kernel's best (the
 * register grid normed x once per block: 1792 blocks for gate|up); gate|up: rt4_kw8_st3_mb2 (10)
 * (Q8_0 at n = 1: rt2_kw8_st3_mb3 (8), 36.0 µs against 53.6), q|k|v: 10 for Q4_0 / Q4_1 / Q5_0 /
 * Q4_K, 8 at n = 1 and rt2_kw8_st4_mb2 (7) past it for Q8_0 / Q5_1 / Q6_K. Without the norm the
 * register kernel's loads already keep the 4096-wide o projection near its best (the bulk one is
 * 0.90-0.99x there, but 1.04-1.14x for Q8_0 at n = 8 / 16); on the 14336-wide down projection 7
 * is 1.02-1.12x at n <= 8 (not Q6_K: 0.93-1.00x), and at n = 16 for Q8_0 / Q4_K / Q5_1 too.
 * Q5_K takes Q5_1's choices everywhere: the nearest in bytes per weight (180 / 256 against
 * 24 / 32) and in registers (Q4_K's words plus Q5_1's fifth-bit word; ptxas -v of the sm_90a
 * build, 2026-12-04: its mb3 norm kernel for n <= 8 spills 368 bytes, Q5_1's 336, Q4_K's 152, so
 * not Q4_K's mb3 pick). Timed on the H200 (2026-12-04,
 * bench/results/qgemv_q5k_h200_2026-12-04.log): the four 8B GEMVs per step with these picks 2.818
 * / 3.256 / 5.138 ms at n = 1 / 8 / 16 against the best variant per call 2.818 / 3.256 / 5.015.
 * Q3_K and Q2_K (not timed yet) take Q6_K's choices: the same half-block math (q6_xperm, a scale
 * per 16 elements; Q2_K adds the halves' Σx and mins). */
enum {
    QG_PICK = 0,
    QG_PICK_NORM_Q4 = 1,
    QG_PICK_BULK = 7,      /* bulk_rt2_kw8_st4_mb2 */
    QG_PICK_BULK_MB3 = 8,  /* bulk_rt2_kw8_st3_mb3 */
    QG_PICK_BULK_RT4 = 10, /* bulk_rt4_kw8_st3_mb2 */
    QG_PICK_I8 = 11,       /* i8_rt2_kw8_st4_mb2, 7's twin on int8 activations */
    QG_PICK_I8_RT4 = 13    /* i8_rt4_kw8_st3_mb2 (10's) */
};

/* The most shared memory the int8 x may take (qi8_bytes: n = 1 of the 14336-wide down projection
 * is 21 KB, n = 8 of a 4096-wide row 41 KB). */
#define QG_I8_MAX (64 * 1024)

/* The calls the i8 variants serve: Q8_0, Q4_0, Q4_1 and Q4_K, n <= 8, the bulk kernel's shapes
 * (whole groups and tiles), the quantized x within QG_I8_MAX. */
static int qgemv_i8_serves(int wtype, int n, int in_dim, int out_dim) {
    return (wtype == QT_Q8_0 || wtype == QT_Q4_0 || wtype == QT_Q4_1 || wtype == QT_Q4_K) &&
           n >= 1 && n <= 8 && in_dim % 128 == 0 && out_dim % 8 == 0 &&
           qi8_bytes(n, in_dim) <= QG_I8_MAX;
}

/* FLASHGEN_QGEMV_I8=0: the picks stay on bf16 activations (an A/B knob; read once). */
static int qgemv_i8_on(void) {
    static int on = -1; /* (a benign race: every thread computes the same value) */
    if (on < 0) {
        const char *e = getenv("FLASHGEN_QGEMV_I8");
        on = !(e && e[0] == '0');
    }
    return on;
}

extern "C" int fg_qgemv_variant_i8(int v, int wtype, int n, int in_dim, int out_dim) {
    return v >= 0 && v < QG_N_VARIANTS && qgemv_variants[v].i8 &&
           qgemv_i8_serves(wtype, n, in_dim, out_dim);
}

static int qgemv_pick_bf16(int wtype, int n, int in_dim, int out_dim, int epilogue, int norm);

/* The bf16-activation pick, or an int8 one where that was measured faster: from
 * bench/results/qgemv_i8_h200_2026-12-04.log (µs per call in a CUDA graph, the 8B layer, n = 1,
 * every variant), the fused-norm calls at n = 1 — Q8_0 q|k|v i8_rt2_kw8_st4_mb2 10.97 against the
 * best bf16 variant's 12.76, gate|up 31.51 against 36.84; Q4_0 gate|up i8_rt4_kw8_st3_mb2 22.94
 * against 25.65 (its q|k|v 9.30 against 8.74: bf16); and from qgemv_i8_q4k_h200_2026-12-04.log,
 * i8_rt4_kw8_st3_mb2 for Q4_1 (q|k|v 9.58 against 10.09, gate|up 24.34 against 29.50) and Q4_K
 * (10.24 against 10.91, 27.16 against 34.63). Not the o and down projections (no norm:
 * every block quantizing the whole x costs more than it saves, 6.54 / 17.32 against 5.56 /
 * 14.84 for Q4_0), nor n = 8 (within 1 % or slower). */
extern "C" int fg_qgemv_pick(int wtype, int n, int in_dim, int out_dim, int epilogue, int norm) {
    const int v = qgemv_pick_bf16(wtype, n, in_dim, out_dim, epilogue, norm);
    if (v < 0 || n != 1 || !norm || !qgemv_i8_on() || !qgemv_i8_serves(wtype, n, in_dim, out_dim))
        return v;
    if (wtype == QT_Q8_0) return QG_PICK_I8;
    if (wtype == QT_Q4_0) return epilogue == FG_GEMV_SWIGLU ? QG_PICK_I8_RT4 : v;
    return QG_PICK_I8_RT4; /* Q4_1, Q4_K */
}

static int qgemv_pick_bf16(int wtype, int n, int in_dim, int out_dim, int epilogue, int norm) {
    if (!fg_qgemv_supported(wtype, n, in_dim, out_dim) || epilogue < FG_GEMV_STORE ||
        epilogue > FG_GEMV_SWIGLU)
        return -1;
    if (in_dim % 128 == 0 && out_dim % 8 == 0) { /* the bulk kernel serves the shape */
        const bool h16 = wtype == QT_Q6_K || wtype == QT_Q3_K || wtype == QT_Q2_K;
        const bool wide = wtype == QT_Q8_0 || wtype == QT_Q5_1 || wtype == QT_Q5_K || h16;
        if (norm && epilogue == FG_GEMV_SWIGLU)
            return wtype == QT_Q8_0 && n == 1 ? QG_PICK_BULK_MB3 : QG_PICK_BULK_RT4;
        if (norm) return !wide ? QG_PICK_BULK_RT4 : n == 1 ? QG_PICK_BULK_MB3 : QG_PICK_BULK;
        if (h16) return QG_PICK;
        /* (not Q4_0 at n <= 8: the register kernel's 14.84 / 14.90 µs at n = 1 and 15.59 / 15.61
         * at n = 8 against the bulk kernel's 16.62 / 16.63 and 17.81 / 17.90 in the two runs of
         * bench/results/qgemv_i8{,_picks}_h200_2026-12-04.log) */
        if (in_dim >= 8192 && ((n <= 8 && wtype != QT_Q4_0) || wtype == QT_Q8_0 ||
                               wtype == QT_Q4_K || wtype == QT_Q5_1 || wtype == QT_Q5_K))
            return QG_PICK_BULK;
        if (wtype == QT_Q8_0 && n >= 8) return QG_PICK_BULK;
    }
    if (norm && ((wtype == QT_Q4_0 && n <= 8) ||
                 ((wtype == QT_Q4_1 || wtype == QT_Q4_K || wtype == QT_Q5_0) && n == 1)))
        return QG_PICK_NORM_Q4;
    return QG_PICK;
}

/* The most shared memory h of the fused norm may take (else it is normed chunk by chunk in the
 * main loop, as every block's warps read x): 8 rows of 4096 and their padding. */
#define QG_HS_MAX (80 * 1024)
#define QG_MAX_DEVICES 16

static int qgemv_launch(int v, int norm, qgemv_params p, int wtype, int epilogue, void *stream) {
    if (v < 0 || v >= QG_N_VARIANTS || !fg_qgemv_supported(wtype, p.n, p.in_dim, p.out_dim) ||
        epilogue < FG_GEMV_STORE || epilogue > FG_GEMV_SWIGLU || (uintptr_t)p.x % 16 ||
        (uintptr_t)p.w % 16 || ((uintptr_t)p.gamma | (uintptr_t)p.h_out) % 16 || !p.y)
        return (int)cudaErrorInvalidValue;
    const qgemv_variant *vr = &qgemv_variants[v];
    if (vr->i8 && !qgemv_i8_serves(wtype, p.n, p.in_dim, p.out_dim))
        vr = &qgemv_variants[v = vr->twin];
    if (vr->bulk && (p.in_dim % 128 || p.out_dim % 8)) /* (not whole groups and tiles) */
        vr = &qgemv_variants[v = 0];
    const int swiglu = epilogue == FG_GEMV_SWIGLU;
    if (swiglu && vr->rt % 2) return (int)cudaErrorInvalidValue; /* gate and up tiles in pairs */
    const qlayout l = qlayout_of(wtype, swiglu ? 2 * p.out_dim : p.out_dim, p.in_dim);
    p.epilogue = epilogue;
    p.out_tiles = swiglu ? vr->rt / 2 : vr->rt;
    p.nb = l.nb;
    p.s0 = l.s0;
    p.m0 = l.m0;
    p.h0 = l.h0;
    const int cols = 8 * p.out_tiles;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)((p.out_dim + cols - 1) / cols));
    cfg.blockDim = dim3((unsigned)(vr->kw * 32));
    cfg.stream = static_cast<cudaStream_t>(stream);
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    const int ti = qtype_index(wtype), r16 = p.n > 8;
    const qgemv_fn k = vr->k[ti][norm ? 1 : 0][r16];
    /* the async ring's shared memory (past the 48 KB default: the attribute, once per kernel);
     * the bulk kernel's ring of stages, its producer warp, its persistent grid */
    const size_t ring = vr->bulk ? (size_t)vr->stages * vr->rt * qbulk_parts_of(wtype, vr->kw).sum()
                                 : (size_t)vr->kw * vr->stages * vr->rt * qring_np(wtype) * 512;
    if (vr->bulk) cfg.blockDim = dim3((unsigned)((vr->kw + 1) * 32));
    const size_t hs = (size_t)p.n * (p.in_dim + 32) * 2;
    p.hs = norm && hs <= QG_HS_MAX && !vr->i8;
    cfg.dynamicSmemBytes = ring + (vr->i8 ? qi8_bytes(p.n, p.in_dim) : p.hs ? hs : 0);
    /* the attribute belongs to the function on one device: a flag per device (a benign race
     * between threads sets it twice) */
    static unsigned char smem_set[QG_MAX_DEVICES][QG_N_VARIANTS][10][2][2];
    const size_t smem_max = ring + (vr->i8 ? QG_I8_MAX : norm ? QG_HS_MAX : 0);
    /* (the bulk kernel's static arrays, 8 KB, count against the 48 KB default too) */
    if (smem_max > 48 * 1024 || vr->bulk) {
        int dev = 0;
        cudaError_t e = cudaGetDevice(&dev);
        if (e != cudaSuccess) return (int)e;
        unsigned char *set = dev >= 0 && dev < QG_MAX_DEVICES
                                 ? &smem_set[dev][v][ti][norm ? 1 : 0][r16]
                                 : nullptr; /* past the table: set it at every launch */
        if (!set || !*set) {
            e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_max);
            if (e != cudaSuccess) return (int)e;
            if (set) *set = 1;
        }
    }
    if (vr->bulk) {
        int dev = 0, sms = 0, per_sm = 0;
        cudaError_t e = cudaGetDevice(&dev);
        if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        if (e == cudaSuccess)
            e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, (int)cfg.blockDim.x,
                                                              cfg.dynamicSmemBytes);
        if (e != cudaSuccess) return (int)e;
        cfg.gridDim.x = (unsigned)min((int)cfg.gridDim.x, max(1, per_sm) * sms);
    }
    cudaError_t e = cudaLaunchKernelEx(&cfg, k, p);
    return (int)(e != cudaSuccess ? e : cudaGetLastError());
}

extern "C" int fg_qgemv_variant(int v, void *y, int y_f32, const void *x, const void *w, int wtype,
                                int n, int in_dim, int out_dim, int epilogue, void *stream) {
    qgemv_params p = {};
    p.y = y;
    p.y_f32 = y_f32 != 0;
    p.x = static_cast<const __nv_bfloat16 *>(x);
    p.w = static_cast<const uint8_t *>(w);
    p.n = n;
    p.in_dim = in_dim;
    p.out_dim = out_dim;
    return qgemv_launch(v, 0, p, wtype, epilogue, stream);
}

extern "C" int fg_qgemv(void *y, int y_f32, const void *x, const void *w, int wtype, int n,
                        int in_dim, int out_dim, int epilogue, void *stream) {
    const int v = fg_qgemv_pick(wtype, n, in_dim, out_dim, epilogue, 0);
    if (v < 0) return (int)cudaErrorInvalidValue;
    return fg_qgemv_variant(v, y, y_f32, x, w, wtype, n, in_dim, out_dim, epilogue, stream);
}

extern "C" int fg_qgemv_norm_variant(int v, void *y, int y_f32, const void *x, const void *gamma,
                                     float eps, void *h_out, const void *w, int wtype, int n,
                                     int in_dim, int out_dim, int epilogue, void *stream) {
    if (!gamma) return (int)cudaErrorInvalidValue;
    qgemv_params p = {};
    p.y = y;
    p.y_f32 = y_f32 != 0;
    p.x = static_cast<const __nv_bfloat16 *>(x);
    p.w = static_cast<const uint8_t *>(w);
    p.gamma = static_cast<const float *>(gamma);
    p.h_out = static_cast<__nv_bfloat16 *>(h_out);
    p.eps = eps;
    p.n = n;
    p.in_dim = in_dim;
    p.out_dim = out_dim;
    return qgemv_launch(v, 1, p, wtype, epilogue, stream);
}

extern "C" int fg_qgemv_norm(void *y, int y_f32, const void *x, const void *gamma, float eps,
                             void *h_out, const void *w, int wtype, int n, int in_dim, int out_dim,
                             int epilogue, void *stream) {
    const int v = fg_qgemv_pick(wtype, n, in_dim, out_dim, epilogue, 1);
    if (v < 0) return (int)cudaErrorInvalidValue;
    return fg_qgemv_norm_variant(v, y, y_f32, x, gamma, eps, h_out, w, wtype, n, in_dim, out_dim,
                                 epilogue, stream);
}

/* Element i (0..7) of a lane's 8: its bit position in the lane's 32-bit word of nibbles. */
__device__ __forceinline__ int qnib_shift(int i) {
    return (i & 1) * 16 + (i >> 1) * 4;
}

/* fg_qpack: one thread per (row of the padded rows, block): the file's block (zeros past the
 * last row) to its lane words, scale and min; Q5_x: byte t of the block's qh (the fifth bits of
 * elements 8t .. 8t+7, element 8t + i's at bit i) to lane slot t's byte of the high bits. */
template <int TYPE>
__global__ void qpack_kernel(uint8_t *dst, const uint8_t *src, int rows, int nb, int tiles,
                             size_t s0, size_t m0, size_t h0) {
    constexpr int QB = qtype<TYPE>::qb, FB = qtype<TYPE>::file;
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)tiles * 8 * nb) return;
    const int r = (int)(i / nb), b = (int)(i % nb);
    uint8_t blk[FB];
    for (int e = 0; e < FB; e++)
        blk[e] = r < rows ? src[((size_t)r * nb + b) * FB + e] : 0;
    const int qh = qtype<TYPE>::mins ? 4 : 2; /* where Q5_x's qh starts in the block */
    const int qs = qh + 4 * qtype<TYPE>::hb;  /* where the quants start */
    for (int t = 0; t < 4; t++) {
        uint32_t wd[2] = {0u, 0u};
        for (int j = 0; j < 8; j++) {
            const int el = 8 * t + j;
            if (TYPE == QT_Q8_0) {
                wd[j >> 2] |= (uint32_t)blk[qs + el] << (8 * (j & 3));
            } else {
                const uint32_t nib = el < 16 ? blk[qs + el] & 0x0f : blk[qs + el - 16] >> 4;
                wd[0] |= nib << qnib_shift(j);
            }
        }
        uint32_t *o = reinterpret_cast<uint32_t *>(dst + qoff_quant(QB, nb, r, b, t));
        for (int e = 0; e < QB / 4; e++)
            o[e] = wd[e];
        if (qtype<TYPE>::hb) dst[h0 + qoff_quant(1, nb, r, b, t)] = blk[qh + t];
    }
    const size_t so = qoff_scale(nb, r, b);
    *reinterpret_cast<unsigned short *>(dst + s0 + so) = (unsigned short)(blk[0] | blk[1] << 8);
    if (qtype<TYPE>::mins)
        *reinterpret_cast<unsigned short *>(dst + m0 + so) = (unsigned short)(blk[2] | blk[3] << 8);
}

/* fg_qpack of Q4_K and Q5_K: one thread per (row of the padded rows, sub-block b = 8 ·
 * super-block + j): the sub-block's 32 nibbles (element l: qs[32 (j / 2) + l], the low nibble for
 * even j, the high for odd, model/gguf_quant.c's order) into the 4 lane words as Q4_x's, its 6-bit
 * scale and min unpacked into one (sc | m << 8) halfword of the scales region, and (j = 0) the
 * super-block's d/dmin bytes, as they are, into the d/dmin region; Q5_K also the fifth bits (of
 * element l: bit j of qh[l]), lane slot t's byte of the high bits holding element 8t + i's at bit
 * i (as Q5_x's). Rows past the last: zeros. */
template <int TYPE>
__global__ void qpack_k_kernel(uint8_t *dst, const uint8_t *src, int rows, int nb, int tiles,
                               size_t s0, size_t m0, size_t h0) {
    constexpr bool Q5 = TYPE == QT_Q5_K;
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)tiles * 8 * nb) return;
    const int r = (int)(i / nb), b = (int)(i % nb), sb = b / 8, j = b % 8;
    const bool live = r < rows;
    const uint8_t *blk = src + ((size_t)r * (nb / 8) + sb) * qtype<TYPE>::file;
    const uint8_t *qh = blk + 16;                            /* Q5_K: qh[32] before qs */
    const uint8_t *qs = blk + (Q5 ? 48 : 16) + 32 * (j / 2); /* qs[128] */
    const int sh = 4 * (j & 1);
    for (int t = 0; t < 4; t++) {
        uint32_t wd = 0u, hw = 0u;
        for (int e = 0; e < 8; e++) {
            const uint32_t nib = live ? (uint32_t)(qs[8 * t + e] >> sh) & 0x0fu : 0u;
            wd |= nib << qnib_shift(e);
            if (Q5 && live) hw |= ((uint32_t)(qh[8 * t + e] >> j) & 1u) << e;
        }
        *reinterpret_cast<uint32_t *>(dst + qoff_quant(4, nb, r, b, t)) = wd;
        if (Q5) dst[h0 + qoff_quant(1, nb, r, b, t)] = (uint8_t)hw;
    }
    uint32_t sc = 0u, m = 0u;
    if (live) {
        const uint8_t *s = blk + 4; /* the 12 bytes of 6-bit scales and mins */
        if (j < 4) {
            sc = s[j] & 63u;
            m = s[j + 4] & 63u;
        } else {
            sc = (s[j + 4] & 15u) | (uint32_t)(s[j - 4] >> 6) << 4;
            m = (uint32_t)(s[j + 4] >> 4) | (uint32_t)(s[j] >> 6) << 4;
        }
    }
    *reinterpret_cast<unsigned short *>(dst + s0 + qoff_scale(nb, r, b)) =
        (unsigned short)(sc | m << 8);
    if (j == 0) {
        const uint32_t dm = live ? (uint32_t)blk[0] | (uint32_t)blk[1] << 8 |
                                       (uint32_t)blk[2] << 16 | (uint32_t)blk[3] << 24
                                 : 0u;
        *reinterpret_cast<uint32_t *>(dst + m0 + qoff_dm(nb, r, sb)) = dm;
    }
}

/* Q6_K: the element (0..31) of the block in slot i (0..7) of lane t's 8 (q6_xperm's order):
 * slots 0-3 from the first 16 elements, 4-7 from the last 16; el = 8t + i, moved by 12 where
 * lanes t and t ^ 2 swapped. Its inverse: element e is slot (e >> 4) · 4 + (e & 3) of lane
 * ((e >> 3) & 1) | ((e >> 2) & 1) << 1. */
__device__ __forceinline__ int q6_elem(int t, int i) {
    return 8 * t + i + (i < 4 ? (t < 2 ? 0 : -12) : (t < 2 ? 12 : 0));
}

/* A Q6_K quant (0..63) of a super-block: element e of 256 (model/gguf_quant.c's order: half
 * h = e / 128, quarter s, l: ql[64h + 32 (s % 2) + l] nibble s / 2, qh[32h + l] bits 2s). */
__device__ __forceinline__ uint32_t q6_quant(const uint8_t *blk, int e) {
    const int h = e / 128, s = e % 128 / 32, l = e % 32;
    const uint32_t lo = (uint32_t)(blk[64 * h + 32 * (s & 1) + l] >> (4 * (s >> 1))) & 0x0fu;
    return lo | ((uint32_t)(blk[128 + 32 * h + l] >> (2 * s)) & 3u) << 4;
}

/* fg_qpack of Q6_K: one thread per (row of the padded rows, block b = 8 · super-block + j): per
 * lane t the 8 elements in q6_elem's order, low nibbles as a Q4_x word, high bits as 16 bits (slot
 * i's at bit (i & 1) · 8 + (i >> 1) · 2, what qweights' PRMT spreads) in the high-bits region;
 * the block's two int8 scales (sc[2j], sc[2j + 1]) in the scales region; (j = 0) the f16 d in
 * the low half of the super-block's d/dmin word. Rows past the last: zeros. */
__global__ void qpack_q6k_kernel(uint8_t *dst, const uint8_t *src, int rows, int nb, int tiles,
                                 size_t s0, size_t m0, size_t h0) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)tiles * 8 * nb) return;
    const int r = (int)(i / nb), b = (int)(i % nb), sb = b / 8, j = b % 8;
    const bool live = r < rows;
    const uint8_t *blk = src + ((size_t)r * (nb / 8) + sb) * qtype<QT_Q6_K>::file;
    for (int t = 0; t < 4; t++) {
        uint32_t wd = 0u, hw = 0u;
        for (int e = 0; e < 8; e++) {
            const uint32_t q = live ? q6_quant(blk, 32 * j + q6_elem(t, e)) : 0u;
            wd |= (q & 0x0fu) << qnib_shift(e);
            hw |= (q >> 4) << ((e & 1) * 8 + (e >> 1) * 2);
        }
        *reinterpret_cast<uint32_t *>(dst + qoff_quant(4, nb, r, b, t)) = wd;
        *reinterpret_cast<unsigned short *>(dst + h0 + qoff_quant(2, nb, r, b, t)) =
            (unsigned short)hw;
    }
    const uint32_t sc = live ? (uint32_t)blk[192 + 2 * j] | (uint32_t)blk[193 + 2 * j] << 8 : 0u;
    *reinterpret_cast<unsigned short *>(dst + s0 + qoff_scale(nb, r, b)) = (unsigned short)sc;
    if (j == 0)
        *reinterpret_cast<uint32_t *>(dst + m0 + qoff_dm(nb, r, sb)) =
            live ? (uint32_t)blk[208] | (uint32_t)blk[209] << 8 : 0u;
}

/* The dequantization kernels' row list (fg_qdequant_rows_bf16): the source row of output row o
 * (ids NULL: o itself, every row in order), or -1 for an id outside [0, rows), whose output row
 * is written as zeros without reading W. A uniform branch: every existing caller passes NULL. */
__device__ __forceinline__ int qdq_src_row(const int *ids, int o, int rows) {
    if (!ids) return o;
    const int r = __ldg(ids + o);
    return r >= 0 && r < rows ? r : -1;
}

/* Lane t's 8 bf16 of a block in q6_elem's order to the block's 32 at out: pairs v.x, v.y are
 * elements q6_elem(t, 0..3), v.z, v.w q6_elem(t, 4..7) (4 consecutive each): two 8-byte stores. */
__device__ __forceinline__ void q6_store(__nv_bfloat16 *out, int t, uint4 v) {
    *reinterpret_cast<uint2 *>(out + q6_elem(t, 0)) = make_uint2(v.x, v.y);
    *reinterpret_cast<uint2 *>(out + q6_elem(t, 4)) = make_uint2(v.z, v.w);
}

/* fg_qdequant_bf16 of Q6_K: one thread per (output row o of n, block, t), lane t's 8 elements of
 * source row r (qdq_src_row): (d · sc) · (q − 32) in fp32 as model/gguf_quant.c (dl = d · sc,
 * then dl · (q − 32)), rounded once to bf16; slots 0-3 and 4-7 are 4 consecutive elements each:
 * two 8-byte stores. */
__global__ void qdequant_q6k_kernel(__nv_bfloat16 *dst, const uint8_t *w, int rows, int nb,
                                    size_t s0, size_t m0, size_t h0, const int *ids, int n) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)n * nb * 4) return;
    const int t = (int)(i & 3), o = (int)(i / 4 / nb), b = (int)(i / 4 % nb);
    const int r = qdq_src_row(ids, o, rows);
    __nv_bfloat16 *out = dst + ((size_t)o * nb + b) * 32;
    if (r < 0) {
        q6_store(out, t, make_uint4(0u, 0u, 0u, 0u));
        return;
    }
    const uint32_t sc = *reinterpret_cast<const unsigned short *>(w + s0 + qoff_scale(nb, r, b));
    const uint32_t dm = *reinterpret_cast<const uint32_t *>(w + m0 + qoff_dm(nb, r, b / 8));
    const uint32_t q = *reinterpret_cast<const uint32_t *>(w + qoff_quant(4, nb, r, b, t));
    const uint32_t hb =
        *reinterpret_cast<const unsigned short *>(w + h0 + qoff_quant(2, nb, r, b, t));
    const float d = qf16(dm & 0xffffu);
    const float dl[2] = {__fmul_rn(d, (float)(int8_t)(sc & 0xffu)),
                         __fmul_rn(d, (float)(int8_t)(sc >> 8))};
    uint32_t pr[4];
#pragma unroll
    for (int e = 0; e < 4; e++) {
        float v[2];
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const int s = 2 * e + k; /* slot */
            const int qv = (int)((q >> qnib_shift(s)) & 0x0fu) |
                           (int)((hb >> ((s & 1) * 8 + (s >> 1) * 2)) & 3u) << 4;
            v[k] = __fmul_rn(dl[s >> 2], (float)(qv - 32));
        }
        pr[e] = qbf2_rn(v[0], v[1]);
    }
    q6_store(out, t, make_uint4(pr[0], pr[1], pr[2], pr[3]));
}

/* fg_qpack of Q3_K and Q2_K: one thread per (row of the padded rows, block b = 8 · super-block +
 * j): per lane t the 8 elements l = q6_elem(t, i) of the block (Q6_K's order), element l's 2 low
 * bits (field j % 4 of qs[32 (j / 4) + l], model/gguf_quant.c's order) at bit (i & 1) · 8 +
 * (i >> 1) · 2 of the lane slot's 16 bits in the quants region (QB = 2), Q3_K's hmask bit (bit j
 * of hmask[l]) at bit i of the slot's byte of the high bits; the scales region: Q3_K the 6-bit
 * scales of sub-blocks 2j and 2j + 1 as int8 (sc − 32), Q2_K the file's (scale | min << 4) bytes
 * scales[2j], scales[2j + 1] (first 16 elements in the low byte); (j = 0) the d/dmin word: Q3_K
 * the f16 d in the low half (the high half 0), Q2_K the f16 d and dmin as they are. Rows past the
 * last: zeros. */
template <int TYPE>
__global__ void qpack_k23_kernel(uint8_t *dst, const uint8_t *src, int rows, int nb, int tiles,
                                 size_t s0, size_t m0, size_t h0) {
    constexpr bool Q3 = TYPE == QT_Q3_K;
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)tiles * 8 * nb) return;
    const int r = (int)(i / nb), b = (int)(i % nb), sb = b / 8, j = b % 8;
    const bool live = r < rows;
    const uint8_t *blk = src + ((size_t)r * (nb / 8) + sb) * qtype<TYPE>::file;
    const uint8_t *qs = blk + (Q3 ? 32 : 16) + 32 * (j / 4); /* Q3_K: hmask[32] before qs[64] */
    const int sh = 2 * (j & 3);
    for (int t = 0; t < 4; t++) {
        uint32_t lw = 0u, hw = 0u;
        for (int e = 0; e < 8; e++) {
            const int l = q6_elem(t, e);
            if (!live) continue;
            lw |= ((uint32_t)(qs[l] >> sh) & 3u) << ((e & 1) * 8 + (e >> 1) * 2);
            if (Q3) hw |= ((uint32_t)(blk[l] >> j) & 1u) << e;
        }
        *reinterpret_cast<unsigned short *>(dst + qoff_quant(2, nb, r, b, t)) = (unsigned short)lw;
        if (Q3) dst[h0 + qoff_quant(1, nb, r, b, t)] = (uint8_t)hw;
    }
    uint32_t sc = 0u;
    if (live && Q3) {
        const uint8_t *s = blk + 96; /* scale k: low 4 bits in s[k % 8] (nibble k / 8), high 2 in
                                      * field k / 4 of s[8 + k % 4] */
        for (int h = 0; h < 2; h++) {
            const int k = 2 * j + h;
            const uint32_t lo = (uint32_t)(k < 8 ? s[k] : s[k - 8] >> 4) & 15u;
            const uint32_t hi = (uint32_t)(s[8 + k % 4] >> (2 * (k / 4))) & 3u;
            sc |= (((lo | hi << 4) - 32u) & 0xffu) << (8 * h);
        }
    } else if (live) {
        sc = (uint32_t)blk[2 * j] | (uint32_t)blk[2 * j + 1] << 8;
    }
    *reinterpret_cast<unsigned short *>(dst + s0 + qoff_scale(nb, r, b)) = (unsigned short)sc;
    if (j == 0) {
        const uint8_t *dp = blk + (Q3 ? 108 : 80);
        const uint32_t dm = !live ? 0u
                            : Q3  ? (uint32_t)dp[0] | (uint32_t)dp[1] << 8
                                  : (uint32_t)dp[0] | (uint32_t)dp[1] << 8 | (uint32_t)dp[2] << 16 |
                                       (uint32_t)dp[3] << 24;
        *reinterpret_cast<uint32_t *>(dst + m0 + qoff_dm(nb, r, sb)) = dm;
    }
}

/* fg_qdequant_bf16 of Q3_K and Q2_K: one thread per (output row o of n, block, t), lane t's 8
 * elements (in q6_elem's order) of source row r (qdq_src_row): Q3_K (d · sc) · q with q = (the 2
 * low bits) − (hmask bit ? 0 : 4), Q2_K (d · sc) · q − dmin · m, in fp32 as model/gguf_quant.c
 * (each operation rounded, none fused), rounded once to bf16; two 8-byte stores as Q6_K's. */
template <int TYPE>
__global__ void qdequant_k23_kernel(__nv_bfloat16 *dst, const uint8_t *w, int rows, int nb,
                                    size_t s0, size_t m0, size_t h0, const int *ids, int n) {
    constexpr bool Q3 = TYPE == QT_Q3_K;
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)n * nb * 4) return;
    const int t = (int)(i & 3), o = (int)(i / 4 / nb), b = (int)(i / 4 % nb);
    const int r = qdq_src_row(ids, o, rows);
    __nv_bfloat16 *out = dst + ((size_t)o * nb + b) * 32;
    if (r < 0) {
        q6_store(out, t, make_uint4(0u, 0u, 0u, 0u));
        return;
    }
    const uint32_t sc = *reinterpret_cast<const unsigned short *>(w + s0 + qoff_scale(nb, r, b));
    const uint32_t dm = *reinterpret_cast<const uint32_t *>(w + m0 + qoff_dm(nb, r, b / 8));
    const uint32_t q = *reinterpret_cast<const unsigned short *>(w + qoff_quant(2, nb, r, b, t));
    const uint32_t hb = Q3 ? w[h0 + qoff_quant(1, nb, r, b, t)] : 0u;
    const float d = qf16(dm & 0xffffu), dmin = qf16(dm >> 16);
    float dl[2], ml[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const uint32_t by = sc >> (8 * h) & 0xffu;
        dl[h] = __fmul_rn(d, Q3 ? (float)(int8_t)by : (float)(by & 15u));
        ml[h] = Q3 ? 0.0f : __fmul_rn(dmin, (float)(by >> 4));
    }
    uint32_t pr[4];
#pragma unroll
    for (int e = 0; e < 4; e++) {
        float v[2];
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const int s = 2 * e + k; /* slot */
            const int qv = (int)((q >> ((s & 1) * 8 + (s >> 1) * 2)) & 3u);
            v[k] = Q3 ? __fmul_rn(dl[s >> 2], (float)(qv - (hb >> s & 1u ? 0 : 4)))
                      : __fsub_rn(__fmul_rn(dl[s >> 2], (float)qv), ml[s >> 2]);
        }
        pr[e] = qbf2_rn(v[0], v[1]);
    }
    q6_store(out, t, make_uint4(pr[0], pr[1], pr[2], pr[3]));
}

/* fg_qdequant_bf16: one thread per (output row o of n, block, t), the 8 elements 8t .. 8t+7 of
 * the block of source row r (qdq_src_row): d · q (Q4_0 d · (q − 8), Q4_1 d · q + m, Q5_0
 * d · (q − 16), Q5_1 d · q + m with the fifth bit from the high bits' byte, Q4_K (d · sc) · q −
 * dmin · m, Q5_K the same with the fifth bit) in fp32 as model/gguf_quant.c computes it (each
 * operation rounded, none fused), rounded once to bf16, one 16-byte store (consecutive threads,
 * consecutive stores). */
template <int TYPE>
__global__ void qdequant_kernel(__nv_bfloat16 *dst, const uint8_t *w, int rows, int nb, size_t s0,
                                size_t m0, size_t h0, const int *ids, int n) {
    constexpr int QB = qtype<TYPE>::qb;
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)n * nb * 4) return;
    const int t = (int)(i & 3), o = (int)(i / 4 / nb), b = (int)(i / 4 % nb);
    const int r = qdq_src_row(ids, o, rows);
    if (r < 0) {
        reinterpret_cast<uint4 *>(dst)[i] = make_uint4(0u, 0u, 0u, 0u);
        return;
    }
    const size_t so = qoff_scale(nb, r, b);
    const uint32_t sh = *reinterpret_cast<const unsigned short *>(w + s0 + so);
    float d, m;
    if (qtype<TYPE>::ks) { /* d · sc_j and dmin · m_j (exact), as model/gguf_quant.c's dl, ml */
        const uint32_t dm = *reinterpret_cast<const uint32_t *>(w + m0 + qoff_dm(nb, r, b / 8));
        d = __fmul_rn(qf16(dm & 0xffffu), (float)(sh & 0xffu));
        m = __fmul_rn(qf16(dm >> 16), (float)(sh >> 8));
    } else {
        d = qf16(sh);
        m = qtype<TYPE>::mins ? qf16(*reinterpret_cast<const unsigned short *>(w + m0 + so)) : 0.0f;
    }
    const uint32_t *q = reinterpret_cast<const uint32_t *>(w + qoff_quant(QB, nb, r, b, t));
    const uint32_t hb = qtype<TYPE>::hb ? w[h0 + qoff_quant(1, nb, r, b, t)] : 0u;
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; j++) {
        if (TYPE == QT_Q8_0) {
            v[j] = (float)(int8_t)(q[j >> 2] >> (8 * (j & 3))) * d;
        } else {
            const int nib = (int)(q[0] >> qnib_shift(j) & 0x0f) | (int)(hb >> j & 1u) << 4;
            v[j] = TYPE == QT_Q4_0   ? d * (float)(nib - 8)
                   : TYPE == QT_Q5_0 ? d * (float)(nib - 16)
                   : qtype<TYPE>::ks ? __fsub_rn(__fmul_rn(d, (float)nib), m) /* Q4_K, Q5_K */
                                     : __fadd_rn(__fmul_rn(d, (float)nib), m);
        }
    }
    uint32_t pr[4];
#pragma unroll
    for (int e = 0; e < 4; e++) {
        pr[e] = qbf2_rn(v[2 * e], v[2 * e + 1]);
    }
    reinterpret_cast<uint4 *>(dst)[i] = make_uint4(pr[0], pr[1], pr[2], pr[3]);
}

extern "C" int fg_qdequant_rows_bf16(void *dst, const void *w, int wtype, int rows, int cols,
                                     const int *ids, int n, void *stream) {
    if (!qcols_ok(wtype, cols) || rows < 1 || n < 0 || (uintptr_t)dst % 16 || (uintptr_t)w % 16)
        return (int)cudaErrorInvalidValue;
    if (n == 0) return 0;
    const qlayout l = qlayout_of(wtype, rows, cols);
    const size_t n_threads = (size_t)n * l.nb * 4;
    const unsigned grid = (unsigned)((n_threads + 255) / 256);
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    __nv_bfloat16 *o = static_cast<__nv_bfloat16 *>(dst);
    const uint8_t *in = static_cast<const uint8_t *>(w);
#define QDQ_ARGS o, in, rows, l.nb, l.s0, l.m0, l.h0, ids, n
    if (wtype == QT_Q8_0)
        qdequant_kernel<QT_Q8_0><<<grid, 256, 0, s>>>(QDQ_ARGS);
    else if (wtype == QT_Q4_0)
        qdequant_kernel<QT_Q4_0><<<grid, 256, 0, s>>>(QDQ_ARGS);
    else if (wtype == QT_Q4_1)
        qdequant_kernel<QT_Q4_1><<<grid, 256, 0, s>>>(QDQ_ARGS);
    else if (wtype == QT_Q5_0)
        qdequant_kernel<QT_Q5_0><<<grid, 256, 0, s>>>(QDQ_ARGS);
    else if (wtype == QT_Q5_1)
        qdequant_kernel<QT_Q5_1><<<grid, 256, 0, s>>>(QDQ_ARGS);
    else if (wtype == QT_Q4_K)
        qdequant_kernel<QT_Q4_K><<<grid, 256, 0, s>>>(QDQ_ARGS);
    else if (wtype == QT_Q5_K)
        qdequant_kernel<QT_Q5_K><<<grid, 256, 0, s>>>(QDQ_ARGS);
    else if (wtype == QT_Q3_K)
        qdequant_k23_kernel<QT_Q3_K><<<grid, 256, 0, s>>>(QDQ_ARGS);
    else if (wtype == QT_Q2_K)
        qdequant_k23_kernel<QT_Q2_K><<<grid, 256, 0, s>>>(QDQ_ARGS);
    else
        qdequant_q6k_kernel<<<grid, 256, 0, s>>>(QDQ_ARGS);
#undef QDQ_ARGS
    return (int)cudaGetLastError();
}

extern "C" int fg_qdequant_bf16(void *dst, const void *w, int wtype, int rows, int cols,
                                void *stream) {
    return fg_qdequant_rows_bf16(dst, w, wtype, rows, cols, NULL, rows, stream);
}

extern "C" size_t fg_qpack_bytes(int wtype, int rows, int cols) {
    if (!qcols_ok(wtype, cols) || rows < 1) return 0;
    return qlayout_of(wtype, rows, cols).total;
}

extern "C" int fg_qpack(void *dst, const void *src, int wtype, int rows, int cols, void *stream) {
    const size_t bytes = fg_qpack_bytes(wtype, rows, cols);
    if (!bytes || !dst || !src || (uintptr_t)dst % 16) return (int)cudaErrorInvalidValue;
    const qlayout l = qlayout_of(wtype, rows, cols);
    const size_t n = (size_t)l.tiles * 8 * l.nb;
    const unsigned grid = (unsigned)((n + 255) / 256);
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    uint8_t *o = static_cast<uint8_t *>(dst);
    const uint8_t *in = static_cast<const uint8_t *>(src);
    if (wtype == QT_Q8_0)
        qpack_kernel<QT_Q8_0><<<grid, 256, 0, s>>>(o, in, rows, l.nb, l.tiles, l.s0, l.m0, l.h0);
    else if (wtype == QT_Q4_0)
        qpack_kernel<QT_Q4_0><<<grid, 256, 0, s>>>(o, in, rows, l.nb, l.tiles, l.s0, l.m0, l.h0);
    else if (wtype == QT_Q4_1)
        qpack_kernel<QT_Q4_1><<<grid, 256, 0, s>>>(o, in, rows, l.nb, l.tiles, l.s0, l.m0, l.h0);
    else if (wtype == QT_Q5_0)
        qpack_kernel<QT_Q5_0><<<grid, 256, 0, s>>>(o, in, rows, l.nb, l.tiles, l.s0, l.m0, l.h0);
    else if (wtype == QT_Q5_1)
        qpack_kernel<QT_Q5_1><<<grid, 256, 0, s>>>(o, in, rows, l.nb, l.tiles, l.s0, l.m0, l.h0);
    else if (wtype == QT_Q4_K)
        qpack_k_kernel<QT_Q4_K><<<grid, 256, 0, s>>>(o, in, rows, l.nb, l.tiles, l.s0, l.m0, l.h0);
    else if (wtype == QT_Q5_K)
        qpack_k_kernel<QT_Q5_K><<<grid, 256, 0, s>>>(o, in, rows, l.nb, l.tiles, l.s0, l.m0, l.h0);
    else if (wtype == QT_Q3_K)
        qpack_k23_kernel<QT_Q3_K>
            <<<grid, 256, 0, s>>>(o, in, rows, l.nb, l.tiles, l.s0, l.m0, l.h0);
    else if (wtype == QT_Q2_K)
        qpack_k23_kernel<QT_Q2_K>
            <<<grid, 256, 0, s>>>(o, in, rows, l.nb, l.tiles, l.s0, l.m0, l.h0);
    else
        qpack_q6k_kernel<<<grid, 256, 0, s>>>(o, in, rows, l.nb, l.tiles, l.s0, l.m0, l.h0);
    return (int)cudaGetLastError();
}
