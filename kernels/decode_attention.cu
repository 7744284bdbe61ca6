/* decode_attention.cu — paged decode attention: split-K flash-decoding with an LSE merge.
 *
 * Design: the query rows of one sequence and KV head (its few new tokens × the G query heads of
 * the group, ≤ 16) form one 16-row mma tile, so every K/V byte is read once per group and the
 * tensor cores do the dot products (the padding rows cost math, not bandwidth). Block (split,
 * KV head, sequence) owns a contiguous part of the context; its 4 warps take turns over 16-key
 * tiles, each warp streaming its own tiles through a private 3-stage cp.async ring (16-byte
 * loads through the page table), so several tiles per warp are in flight. The warps' running
 * (max, sum, output) are merged in shared memory at the end; with several splits each block
 * writes a normalised fp32 partial and its log2-domain LSE, and the partials are combined:
 * out = Σ 2^(lse_i - M) o_i / Σ 2^(lse_i - M). Two ways, picked by decode_use_cluster: with 2–8
 * parts whose clusters fit in one wave, the parts of a (KV head, sequence) are one thread-block
 * cluster and merge each other's partials from shared memory (DSMEM) after a cluster barrier;
 * otherwise the partials go through the workspace to decode_merge_kernel. At serving batches
 * (≥ DECODE_PW_MIN_ITEMS (sequence, KV head) items, head dim ≤ 128) the blocks are
 * short-lived (a 512-key context is 8 tiles per warp) and their prologue (dependent loads of the
 * lengths and the page table before the first K/V request) and epilogue (the 4-warp merge) are a
 * large share of each block's life: decode_warp_kernel runs a persistent grid of independent
 * warps instead, each taking whole units and keeping its ring full across them.
 *
 * Fixed costs matter as much as bandwidth below ~100 MB per call, so: the merge kernel issues all
 * its loads at once (the old loop took one dependent L2 round trip per split, ~0.3 µs each) and is
 * launched as a programmatic dependent of the split kernel, so its launch overlaps the split
 * kernel and it waits (griddepcontrol.wait) only for the partials; calls that read at most
 * DECODE_EVICT_FIRST_MAX_MB of K/V load it with an L2 evict-first policy (read once). The
 * workspace holds only the partials of the two-kernel path: it needs no initialisation and
 * nothing in it outlives a launch. Split count: decode_attn_splits(); every choice here is
 * measured in bench/results/decode2_h100_2026-11-23.log and, as CUDA graph replays like the
 * engine's, decode3_h100_2026-11-23.log (which also holds the rejected one-kernel variant: the
 * last block of each group merging it after an atomic count, 0.5–6.6 µs per call slower) and
 * decode4_h100_2026-11-23.log (the cluster merge).
 */
#include <cooperative_groups.h>
#include <cuda_runtime.h>
#include <stdio.h>

#include "attention_common.cuh"
#include "decode_attention.h"

/* Warps per split block and cp.async stages of each warp's ring (the -D overrides are for A/B
 * builds: bench/bench_decode_variants.py). */
#ifndef DECODE_NW
#define DECODE_NW 4
#endif
#define DECODE_BN 16
#ifndef DECODE_STAGES
#define DECODE_STAGES 3
#endif
#define DECODE_MIN_KEYS 128
#define DECODE_MAX_SPLITS 128
/* Split counts up to this (the portable cluster size) merge inside a thread-block cluster when the
 * clusters fit in one wave (decode_use_cluster); other counts take the workspace and
 * decode_merge_kernel. Measured (bench/results/decode4_h100_2026-11-23.log): clusters of 2–8 beat
 * the two kernels by 2–9% where they fit one wave; clusters of 16 lost 6–10% (batch 1 at 4k/16k:
 * 1268 vs 1343, 2007 vs 2205 GB/s) and 8 × 64 clusters of 8 (two waves) lost 18–25%. */
#define DECODE_CLUSTER_MAX 8
#define DECODE_MERGE_NT 128 /* merge threads per (query row, head) */
#define DECODE_MERGE_U 8    /* partials each merge thread loads at once (one L2 round trip) */
#ifndef DECODE_BLOCKS_PER_SM
#define DECODE_BLOCKS_PER_SM 2 /* what the ~100 KB of shared memory per block allows */
#endif
/* The persistent warp kernel (decode_warp_kernel): warps per block, stages of each warp's ring,
 * the fewest (sequence, KV head) items for which the launcher takes it and the share of its
 * warps the units must keep busy (decode_warp_parts, decode_use_warp). Measured on the H200
 * (bench/results/decode_serving_run2_h200_2026-12-02.log): 8 warps of 3 stages per block (one
 * block per SM at hd 128) against 4 warps of 6 stages (the same shared memory, half the warps):
 * 2499–2685 GB/s for the latter at every serving point against 4030–4350 at batch 128–256: each
 * warp streams ~4.7 GB/s whatever its ring depth, so the warps per SM set the rate. */
#ifndef DECODE_PW_NW
#define DECODE_PW_NW 8
#endif
#ifndef DECODE_PW_STAGES
#define DECODE_PW_STAGES 3
#endif
#ifndef DECODE_PW_MIN_ITEMS
#define DECODE_PW_MIN_ITEMS 512
#endif
#define DECODE_PW_MIN_FILL 0.9
/* K/V loads carry an L2 evict-first policy when the call reads at most this many bytes of K/V.
 * Measured (bench/results/decode2_h100_2026-11-23.log, run 1): evict-first saved 1–4 µs per call
 * up to 134 MB (batch 1 16k: 41.6 → 37.3 µs) and cost 2–3% from 537 MB (batch 64 4k: 373 → 385
 * µs); a plain Triton read pass showed the same on both sides. The -D override is for A/B runs. */
#ifndef DECODE_EVICT_FIRST_MAX_MB
#define DECODE_EVICT_FIRST_MAX_MB 256
#endif
/* Calls up to this size take the fewest-parts split count (decode_attn_splits). Timed as CUDA
 * graph replays (kernels/BENCH.md run 7), filling the wave won from 64 MiB (batch 1 at 16k,
 * batch 8 at 4k) and the fewest parts up to 34 MB (batch 1 at 1k/4k, batch 8 at 1k); the
 * single-launch timing of run 6 had put the line at 384 MB. */
#define DECODE_FEW_SPLITS_MAX_MB 48

/* Folds N parts (log2-domain LSE ls[u], normalised output granule v[u]; empty parts carry
 * lse = -inf) into a running LSE merge: max m, weight sum l and weighted sum acc, all relative to
 * 2^m. Both merges use it: the cluster's (one fold from m = -inf) and decode_merge_kernel's. */
template <int N>
__device__ __forceinline__ void decode_merge_fold(const float *ls, const float4 *v, float &m,
                                                  float &l, float4 &acc) {
    float mn = m;
#pragma unroll
    for (int u = 0; u < N; u++)
        mn = fmaxf(mn, ls[u]);
    const float mu = mn == FG_NEG_INF ? 0.f : mn, a = fast_exp2(m - mu);
    acc.x *= a;
    acc.y *= a;
    acc.z *= a;
    acc.w *= a;
    l *= a;
#pragma unroll
    for (int u = 0; u < N; u++) {
        const float w = fast_exp2(ls[u] - mu);
        l += w;
        acc.x = fmaf(w, v[u].x, acc.x);
        acc.y = fmaf(w, v[u].y, acc.y);
        acc.z = fmaf(w, v[u].z, acc.z);
        acc.w = fmaf(w, v[u].w, acc.w);
    }
    m = mn;
}

/* Programmatic dependent launch (sm_90): the split kernel lets the merge grid launch early; the
 * merge waits for the whole split grid (and its memory) before reading any partial. */
__device__ __forceinline__ void decode_allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void decode_wait_prerequisites() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

/* L2 evict-first policy for K/V (EF): each byte is read once per call. */
template <bool EF> __device__ __forceinline__ uint64_t decode_kv_policy() {
    uint64_t pol = 0;
    if constexpr (EF)
        asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
    return pol;
}

/* 16-byte global→shared copy, under policy pol when EF (zero fill when !valid, src not read). */
template <bool EF>
__device__ __forceinline__ void decode_cp_async16(uint32_t saddr, const void *src, bool valid,
                                                  uint64_t pol) {
    int n = valid ? 16 : 0;
    if constexpr (EF)
        asm volatile(
            "cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(saddr),
            "l"(src), "r"(n), "l"(pol));
    else
        cp_async16(saddr, src, valid);
}

/* One warp loads the K and V tiles of BN keys from key0 (keys ≥ key_end zero-filled) into
 * swizzled sK / sV; K and V rows share the page-table arithmetic. */
template <typename T, int HD, int BN, bool EF>
__device__ __forceinline__ void decode_load_tile(T *sK, T *sV, const attn_kparams &p, const int *bt,
                                                 int key0, int key_end, int kvh, int lane,
                                                 uint64_t pol) {
    constexpr int CPR = HD / 8, TOTAL = BN * CPR;
    static_assert(TOTAL % 32 == 0, "tile chunks must divide evenly over the lanes");
    const T *kp = static_cast<const T *>(p.k), *vp = static_cast<const T *>(p.v);
    const uint32_t kb = smem_u32(sK), vb = smem_u32(sV);
#pragma unroll
    for (int i = 0; i < TOTAL / 32; i++) {
        int c = lane + i * 32, row = c / CPR, ch = c % CPR, key = key0 + row;
        bool valid = key < key_end;
        size_t off = 0;
        if (valid)
            off = kv_row_offset<HD>(bt, key, p.page_size, p.page_shift, p.n_kv_heads, kvh) + ch * 8;
        uint32_t so = 2u * (uint32_t)swz<HD>(row, ch * 8);
        decode_cp_async16<EF>(kb + so, kp + off, valid, pol);
        decode_cp_async16<EF>(vb + so, vp + off, valid, pol);
    }
}

/* Shared-memory bytes of one split block: Q and the warps' rings while streaming, then Q, the
 * warps' (m, l, o) and, in the cluster path, the block's partial o[16][HD], lse[16] (fp32). */
template <typename T, int HD> static size_t decode_smem_bytes() {
    size_t stream = (16 * HD + DECODE_NW * DECODE_STAGES * 2 * DECODE_BN * HD) * sizeof(T);
    size_t merge =
        16 * HD * sizeof(T) + (DECODE_NW * (32 + 16 * HD) + 16 * HD + 16) * sizeof(float);
    return stream > merge ? stream : merge;
}

/* CLU: the n_splits blocks of one (KV head, sequence) form a thread-block cluster; each keeps its
 * partial in shared memory and, after a cluster barrier, merges a slice of the group's output
 * from every peer's partial through distributed shared memory (no workspace, no second kernel). */
template <typename T, int HD, bool EF, bool CLU>
__global__ void __launch_bounds__(DECODE_NW * 32) decode_split_kernel(const attn_kparams p) {
    constexpr int NW = DECODE_NW, BN = DECODE_BN, ST = DECODE_STAGES, NT = NW * 32;
    constexpr int TILE = BN * HD; /* elements of one K or V tile */
    extern __shared__ __align__(128) unsigned char dec_smem[];
    T *sQ = reinterpret_cast<T *>(dec_smem);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    T *sW = sQ + 16 * HD + warp * ST * 2 * TILE; /* this warp's ring: stage i = K, then V */

    const int split = blockIdx.x, kvh = blockIdx.y, s = blockIdx.z, G = p.group;
    const int q0 = p.q_start[s], nq = p.q_start[s + 1] - q0, rows = nq * G;
    const int kvlen = p.kv_len[s], pos0 = kvlen - nq;
    const int *bt = p.block_table + (size_t)s * p.max_pages;
    const uint64_t pol = decode_kv_policy<EF>();
    if (!CLU || p.early)
        decode_allow_dependents(); /* the merge grid may start; it waits for this one to finish */

    /* Sliding window: the parts cover only the keys some row sees, from the first row's lower
     * end (row r's is its causal limit - window). */
    const int lim_first = p.causal ? pos0 + 1 : kvlen;
    const int k_base = p.window > 0 ? max(0, lim_first - p.window) : 0;
    int kps = (kvlen - k_base + p.n_splits - 1) / p.n_splits;
    kps = (kps + BN - 1) / BN * BN;
    const int k_begin = k_base + split * kps, k_end = min(kvlen, k_begin + kps);
    const int n_tiles = k_end > k_begin ? (k_end - k_begin + BN - 1) / BN : 0;

    {
        const T *qg = static_cast<const T *>(p.q);
        constexpr int CPR = HD / 8, TOTAL = 16 * CPR;
        const uint32_t qb = smem_u32(sQ);
        for (int c = tid; c < TOTAL; c += NT) {
            int row = c / CPR, ch = c % CPR;
            bool valid = row < rows;
            const T *src = qg;
            if (valid)
                src = qg + ((size_t)(q0 + row / G) * p.n_heads + kvh * G + row % G) * HD + ch * 8;
            cp_async16(qb + 2u * (uint32_t)swz<HD>(row, ch * 8), src, valid);
        }
        cp_async_commit();
    }

    const int g = lane >> 2, t = lane & 3;
    int lim[2] = {k_end, k_end};
    if (p.causal) {
        lim[0] = min(k_end, pos0 + min(g, rows - 1) / G + 1);
        lim[1] = min(k_end, pos0 + min(g + 8, rows - 1) / G + 1);
    }
    const int min_lim = p.causal ? min(k_end, pos0 + 1) : k_end;
    int lo[2] = {0, 0};
    int max_lo = 0;
    if (p.window > 0) {
        const int row_lim0 = p.causal ? pos0 + min(g, rows - 1) / G + 1 : kvlen;
        const int row_lim1 = p.causal ? pos0 + min(g + 8, rows - 1) / G + 1 : kvlen;
        const int last = p.causal ? pos0 + (rows - 1) / G + 1 : kvlen;
        lo[0] = max(0, row_lim0 - p.window);
        lo[1] = max(0, row_lim1 - p.window);
        max_lo = max(0, last - p.window);
    }

    /* This warp's tiles: i-th is global tile warp + i·NW of the part. */
    const int nt_w = n_tiles > warp ? (n_tiles - warp + NW - 1) / NW : 0;
#pragma unroll
    for (int st = 0; st < ST - 1; st++) {
        if (st < nt_w) {
            int key0 = k_begin + (warp + st * NW) * BN;
            T *buf = sW + st * 2 * TILE;
            decode_load_tile<T, HD, BN, EF>(buf, buf + TILE, p, bt, key0, k_end, kvh, lane, pol);
        }
        cp_async_commit();
    }

    float o[1][HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++)
        o[0][i][0] = o[0][i][1] = o[0][i][2] = o[0][i][3] = 0.f;
    float m[2] = {FG_NEG_INF, FG_NEG_INF}, l[2] = {0.f, 0.f};
    /* Q fragments in registers up to hd 128; at hd 256 they would take 64 more registers beside
     * the 128 of o, so they are re-read from sQ per k-step. */
    constexpr bool QR = HD <= 128;
    uint32_t qf[1][QR ? HD / 16 : 1][4];
    cp_async_wait<ST - 1>(); /* the Q group (committed first) is done */
    __syncthreads();
    if constexpr (QR) load_q_frags<HD>(qf[0], sQ, 0, lane);

    for (int i = 0; i < nt_w; i++) {
        int ni = i + ST - 1;
        if (ni < nt_w) {
            int key0 = k_begin + (warp + ni * NW) * BN;
            T *buf = sW + (ni % ST) * 2 * TILE;
            decode_load_tile<T, HD, BN, EF>(buf, buf + TILE, p, bt, key0, k_end, kvh, lane, pol);
        }
        cp_async_commit();
        cp_async_wait<ST - 1>();
        __syncwarp();
        const T *buf = sW + (i % ST) * 2 * TILE;
        int key0 = k_begin + (warp + i * NW) * BN;
        uint32_t pa[1][BN / 16][4];
        if (key0 + BN > min_lim || key0 < max_lo)
            warp_qk_softmax<T, HD, BN, 1, QR, true>(qf, sQ, 0, buf, o, m, l, pa, p.scale_log2, key0,
                                                    lim, lo, lane);
        else
            warp_qk_softmax<T, HD, BN, 1, QR, false>(qf, sQ, 0, buf, o, m, l, pa, p.scale_log2,
                                                     key0, lim, lo, lane);
        warp_pv<T, HD, BN, 1>(pa, buf + TILE, o, lane);
        __syncwarp(); /* the ring slot is refilled ST-1 iterations later */
    }
    cp_async_wait<0>();

#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
    __syncthreads(); /* every warp is done with its ring: reuse it for the merge */
    /* Merge area after sQ: per warp m[16], l[16], o[16][HD] (fp32). */
    float *mw = reinterpret_cast<float *>(sQ + 16 * HD);
    float *wm = mw + warp * (32 + 16 * HD);
    if (t == 0) {
        wm[g] = m[0];
        wm[g + 8] = m[1];
        wm[16 + g] = l[0];
        wm[16 + g + 8] = l[1];
    }
#pragma unroll
    for (int dt = 0; dt < HD / 8; dt++) {
        int col = dt * 8 + 2 * t;
        wm[32 + g * HD + col] = o[0][dt][0];
        wm[32 + g * HD + col + 1] = o[0][dt][1];
        wm[32 + (g + 8) * HD + col] = o[0][dt][2];
        wm[32 + (g + 8) * HD + col + 1] = o[0][dt][3];
    }
    __syncthreads();

    /* cluster path: this part's partial, o[16][HD] then lse[16], after the warps' area */
    float *sp = mw + NW * (32 + 16 * HD);
    for (int idx = tid; idx < rows * HD; idx += NT) {
        int r = idx / HD, d = idx % HD;
        float M = FG_NEG_INF;
#pragma unroll
        for (int w = 0; w < NW; w++)
            M = fmaxf(M, mw[w * (32 + 16 * HD) + r]);
        float mu = M == FG_NEG_INF ? 0.f : M, L = 0.f, O = 0.f;
#pragma unroll
        for (int w = 0; w < NW; w++) {
            const float *ww = mw + w * (32 + 16 * HD);
            float f = fast_exp2(ww[r] - mu);
            L += ww[16 + r] * f;
            O += ww[32 + r * HD + d] * f;
        }
        float val = L > 0.f ? O / L : 0.f;
        float lse2 = L > 0.f ? M + __log2f(L) : FG_NEG_INF;
        size_t qrow = (size_t)(q0 + r / G) * p.n_heads + kvh * G + r % G;
        if constexpr (CLU) {
            sp[idx] = val;
            if (d == 0) sp[16 * HD + r] = lse2;
        } else if (p.n_splits == 1) {
            static_cast<T *>(p.out)[qrow * HD + d] = attn_type<T>::from_float(val);
            if (p.lse && d == 0) p.lse[qrow] = lse2 * 0.69314718056f;
        } else {
            size_t prow = (size_t)split * p.n_q_total * p.n_heads + qrow;
            p.part_o[prow * HD + d] = val;
            if (d == 0) p.part_lse[prow] = lse2;
        }
    }
    if constexpr (CLU) {
        /* Every part's partial is in its shared memory after the first barrier. Part `split`
         * merges the float4 granules w ≡ split (mod C) of the group's rows × HD outputs (the
         * granules spread over all blocks, each thread loading all C peers at once); the second
         * barrier keeps each block's shared memory alive until every peer has read it. */
        namespace cg = cooperative_groups;
        cg::cluster_group cl = cg::this_cluster();
        constexpr int GPR = HD / 4; /* float4 granules per row */
        const int C = p.n_splits;
        cl.sync();
        for (int w = tid * C + split; w < rows * GPR; w += NT * C) {
            const int r = w / GPR, c4 = w % GPR;
            float ls[DECODE_CLUSTER_MAX];
            float4 v[DECODE_CLUSTER_MAX];
#pragma unroll
            for (int j = 0; j < DECODE_CLUSTER_MAX; j++) {
                ls[j] = FG_NEG_INF;
                v[j] = make_float4(0.f, 0.f, 0.f, 0.f);
                if (j < C) {
                    const float *pp = cl.map_shared_rank(sp, (unsigned)j);
                    ls[j] = pp[16 * HD + r];
                    v[j] = *reinterpret_cast<const float4 *>(pp + r * HD + c4 * 4);
                }
            }
            float M = FG_NEG_INF, W = 0.f;
            float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
            decode_merge_fold<DECODE_CLUSTER_MAX>(ls, v, M, W, acc);
            const float inv = W > 0.f ? 1.f / W : 0.f;
            size_t qrow = (size_t)(q0 + r / G) * p.n_heads + kvh * G + r % G;
            T *out = static_cast<T *>(p.out) + qrow * HD + c4 * 4;
            out[0] = attn_type<T>::from_float(acc.x * inv);
            out[1] = attn_type<T>::from_float(acc.y * inv);
            out[2] = attn_type<T>::from_float(acc.z * inv);
            out[3] = attn_type<T>::from_float(acc.w * inv);
            if (p.lse && c4 == 0)
                p.lse[qrow] = W > 0.f ? (M + __log2f(W)) * 0.69314718056f : FG_NEG_INF;
        }
        cl.sync();
    }
}

/* ---- the persistent warp kernel ----------------------------------------------------------- */

/* One work unit of decode_warp_kernel: part `part` of the keys of (sequence s, KV head kvh),
 * split as decode_split_kernel splits them (p.n_splits parts of whole tiles), and its rows. */
struct decode_unit {
    int s, kvh, part, q0, rows, kvlen, pos0, k_begin, k_end, n_tiles;
    const int *bt; /* the sequence's block-table row */
};

/* Unit u = (s · n_kv_heads + kvh) · n_splits + part (the order of decode_split_kernel's grid:
 * units running at once read neighbouring rows of the pools). */
__device__ __forceinline__ decode_unit decode_unit_at(const attn_kparams &p, int u) {
    constexpr int BN = DECODE_BN;
    decode_unit w;
    const int item = u / p.n_splits;
    w.part = u - item * p.n_splits;
    w.s = item / p.n_kv_heads;
    w.kvh = item - w.s * p.n_kv_heads;
    w.q0 = p.q_start[w.s];
    const int nq = p.q_start[w.s + 1] - w.q0;
    w.rows = nq * p.group;
    w.kvlen = p.kv_len[w.s];
    w.pos0 = w.kvlen - nq;
    w.bt = p.block_table + (size_t)w.s * p.max_pages;
    const int lim_first = p.causal ? w.pos0 + 1 : w.kvlen;
    const int k_base = p.window > 0 ? max(0, lim_first - p.window) : 0;
    int kps = (w.kvlen - k_base + p.n_splits - 1) / p.n_splits;
    kps = (kps + BN - 1) / BN * BN;
    w.k_begin = k_base + w.part * kps;
    w.k_end = min(w.kvlen, w.k_begin + kps);
    w.n_tiles = w.k_end > w.k_begin ? (w.k_end - w.k_begin + BN - 1) / BN : 0;
    return w;
}

/* Persistent grid of independent warps: warp gw of TW takes units gw, gw + TW, ...; each unit
 * is all (or one part) of the keys of one (sequence, KV head), so no warp waits for another and
 * nothing is merged in shared memory. The warp's cp.async ring runs across its units: the first
 * tiles of the next unit are in flight while the current one finishes, so a unit's prologue and
 * epilogue (the per-block fixed costs of decode_split_kernel, where each block lives only ~8
 * tiles per warp at a 512-key context) cost no memory time. Q fragments come straight from global
 * memory into registers (HD ≤ 128). One part: the output (and LSE) is written from the
 * registers; several: the normalised fp32 partial and log2 LSE go to the workspace for
 * decode_merge_kernel, as in the two-kernel path. */
template <typename T, int HD, bool EF>
__global__ void __launch_bounds__(DECODE_PW_NW * 32)
    decode_warp_kernel(const attn_kparams p, int n_units) {
    static_assert(HD <= 128, "Q fragments live in registers");
    constexpr int NW = DECODE_PW_NW, BN = DECODE_BN, ST = DECODE_PW_STAGES, TILE = BN * HD;
    extern __shared__ __align__(128) unsigned char dec_smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    T *sW = reinterpret_cast<T *>(dec_smem) + warp * ST * 2 * TILE; /* stage i: K, then V */
    /* warp-major numbering: with fewer units than warps every block gets some */
    const int gw = warp * gridDim.x + blockIdx.x, TW = gridDim.x * NW, G = p.group;
    const uint64_t pol = decode_kv_policy<EF>();
    if (p.n_splits > 1 || p.early)
        decode_allow_dependents(); /* the merge grid waits for this one */

    /* Producer cursor: tile pt of unit pu (info pi); each call commits one group (empty when the
     * warp has no tile left), so group n holds the warp's n-th tile overall. */
    int pu = gw, pt = 0, n_prod = 0;
    decode_unit pi = {};
    if (pu < n_units) pi = decode_unit_at(p, pu);
    auto produce = [&]() {
        while (pu < n_units && pt >= pi.n_tiles) {
            pu += TW;
            pt = 0;
            if (pu < n_units) pi = decode_unit_at(p, pu);
        }
        if (pu < n_units) {
            T *buf = sW + (n_prod % ST) * 2 * TILE;
            decode_load_tile<T, HD, BN, EF>(buf, buf + TILE, p, pi.bt, pi.k_begin + pt * BN,
                                            pi.k_end, pi.kvh, lane, pol);
            pt++;
            n_prod++;
        }
        cp_async_commit();
    };
#pragma unroll
    for (int st = 0; st < ST - 1; st++)
        produce();

    int n_cons = 0;
    for (int u = gw; u < n_units; u += TW) {
        const decode_unit w = decode_unit_at(p, u);
        /* Q fragments of rows g and g + 8 (mma A layout: a0 (g, 2t), a1 (g+8, 2t), a2 (g, 2t+8),
         * a3 (g+8, 2t+8) of each 16-column step); padding rows are zero. */
        uint32_t qf[1][HD / 16][4];
        {
            const T *qg = static_cast<const T *>(p.q);
            const int r0 = g, r1 = g + 8;
            const bool v0 = r0 < w.rows, v1 = r1 < w.rows;
            const T *q0p =
                qg +
                ((size_t)(w.q0 + (v0 ? r0 : 0) / G) * p.n_heads + w.kvh * G + (v0 ? r0 : 0) % G) *
                    HD +
                2 * t;
            const T *q1p =
                qg +
                ((size_t)(w.q0 + (v1 ? r1 : 0) / G) * p.n_heads + w.kvh * G + (v1 ? r1 : 0) % G) *
                    HD +
                2 * t;
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) {
                qf[0][kk][0] = v0 ? __ldg(reinterpret_cast<const uint32_t *>(q0p + kk * 16)) : 0u;
                qf[0][kk][1] = v1 ? __ldg(reinterpret_cast<const uint32_t *>(q1p + kk * 16)) : 0u;
                qf[0][kk][2] =
                    v0 ? __ldg(reinterpret_cast<const uint32_t *>(q0p + kk * 16 + 8)) : 0u;
                qf[0][kk][3] =
                    v1 ? __ldg(reinterpret_cast<const uint32_t *>(q1p + kk * 16 + 8)) : 0u;
            }
        }
        int lim[2] = {w.k_end, w.k_end};
        if (p.causal) {
            lim[0] = min(w.k_end, w.pos0 + min(g, w.rows - 1) / G + 1);
            lim[1] = min(w.k_end, w.pos0 + min(g + 8, w.rows - 1) / G + 1);
        }
        const int min_lim = p.causal ? min(w.k_end, w.pos0 + 1) : w.k_end;
        int lo[2] = {0, 0};
        int max_lo = 0;
        if (p.window > 0) {
            const int row_lim0 = p.causal ? w.pos0 + min(g, w.rows - 1) / G + 1 : w.kvlen;
            const int row_lim1 = p.causal ? w.pos0 + min(g + 8, w.rows - 1) / G + 1 : w.kvlen;
            const int last = p.causal ? w.pos0 + (w.rows - 1) / G + 1 : w.kvlen;
            lo[0] = max(0, row_lim0 - p.window);
            lo[1] = max(0, row_lim1 - p.window);
            max_lo = max(0, last - p.window);
        }
        float o[1][HD / 8][4];
#pragma unroll
        for (int i = 0; i < HD / 8; i++)
            o[0][i][0] = o[0][i][1] = o[0][i][2] = o[0][i][3] = 0.f;
        float m[2] = {FG_NEG_INF, FG_NEG_INF}, l[2] = {0.f, 0.f};

        for (int i = 0; i < w.n_tiles; i++, n_cons++) {
            produce();
            cp_async_wait<ST - 1>();
            __syncwarp();
            const T *buf = sW + (n_cons % ST) * 2 * TILE;
            const int key0 = w.k_begin + i * BN;
            uint32_t pa[1][BN / 16][4];
            if (key0 + BN > min_lim || key0 < max_lo)
                warp_qk_softmax<T, HD, BN, 1, true, true>(qf, nullptr, 0, buf, o, m, l, pa,
                                                          p.scale_log2, key0, lim, lo, lane);
            else
                warp_qk_softmax<T, HD, BN, 1, true, false>(qf, nullptr, 0, buf, o, m, l, pa,
                                                           p.scale_log2, key0, lim, lo, lane);
            warp_pv<T, HD, BN, 1>(pa, buf + TILE, o, lane);
            __syncwarp(); /* the slot is refilled ST - 1 tiles later */
        }

        /* Rows g (r = 0) and g + 8 (r = 1): quad-reduce l, normalise, write from registers. */
#pragma unroll
        for (int r = 0; r < 2; r++) {
            l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
            l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
            const int row = g + 8 * r;
            if (row >= w.rows) continue;
            const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
            const float lse2 = l[r] > 0.f ? m[r] + __log2f(l[r]) : FG_NEG_INF;
            const size_t qrow = (size_t)(w.q0 + row / G) * p.n_heads + w.kvh * G + row % G;
            if (p.n_splits == 1) {
                T *out = static_cast<T *>(p.out) + qrow * HD + 2 * t;
#pragma unroll
                for (int dt = 0; dt < HD / 8; dt++)
                    *reinterpret_cast<uint32_t *>(out + dt * 8) =
                        attn_type<T>::pack(o[0][dt][2 * r] * inv, o[0][dt][2 * r + 1] * inv);
                if (p.lse && t == 0) p.lse[qrow] = lse2 * 0.69314718056f;
            } else {
                const size_t prow = (size_t)w.part * p.n_q_total * p.n_heads + qrow;
                float *po = p.part_o + prow * HD + 2 * t;
#pragma unroll
                for (int dt = 0; dt < HD / 8; dt++)
                    *reinterpret_cast<float2 *>(po + dt * 8) =
                        make_float2(o[0][dt][2 * r] * inv, o[0][dt][2 * r + 1] * inv);
                if (t == 0) p.part_lse[prow] = lse2;
            }
        }
    }
    cp_async_wait<0>();
}

/* One block per (query row, head) item: combine the n_splits partials by their LSE. Thread
 * (r, c) takes 4 consecutive dims c·4.. of splits r, r + SPB, r + 2·SPB, ..., loading U of them at
 * once (no load waits on another), with a running max over its splits; the SPB row groups then
 * meet in shared memory. Empty parts carry lse = -inf and a zero output (weight 0). */
template <typename T, int HD>
__global__ void __launch_bounds__(DECODE_MERGE_NT) decode_merge_kernel(const attn_kparams p) {
    constexpr int NT = DECODE_MERGE_NT, TPR = HD / 4, SPB = NT / TPR, U = DECODE_MERGE_U;
    __shared__ float s_m[SPB], s_l[SPB];
    __shared__ __align__(16) float s_o[SPB][HD];
    const int tid = threadIdx.x, r = tid / TPR, c = tid % TPR, n = p.n_splits;
    const size_t item = blockIdx.x, n_items = (size_t)p.n_q_total * p.n_heads;
    if (p.early) decode_allow_dependents();
    decode_wait_prerequisites();

    float m = FG_NEG_INF, l = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int base = r; base < n; base += U * SPB) {
        float ls[U];
        float4 v[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            /* past the last split: re-read the last one (no branch, so every load is issued
             * before the first is used) and give it weight 0 */
            int sp = base + u * SPB, spc = min(sp, n - 1);
            ls[u] = p.part_lse[spc * n_items + item];
            const float *po = p.part_o + (spc * n_items + item) * HD + c * 4;
            v[u] = *reinterpret_cast<const float4 *>(po);
            if (sp >= n) ls[u] = FG_NEG_INF;
        }
        decode_merge_fold<U>(ls, v, m, l, acc);
    }
    if (c == 0) {
        s_m[r] = m;
        s_l[r] = l;
    }
    *reinterpret_cast<float4 *>(&s_o[r][c * 4]) = acc;
    __syncthreads();

    float M = FG_NEG_INF;
#pragma unroll
    for (int g = 0; g < SPB; g++)
        M = fmaxf(M, s_m[g]);
    const float mu = M == FG_NEG_INF ? 0.f : M;
    float W = 0.f;
#pragma unroll
    for (int g = 0; g < SPB; g++)
        W += s_l[g] * fast_exp2(s_m[g] - mu);
    const float inv = W > 0.f ? 1.f / W : 0.f;
    T *out = static_cast<T *>(p.out) + item * HD;
    for (int d = tid; d < HD; d += NT) {
        float o = 0.f;
#pragma unroll
        for (int g = 0; g < SPB; g++)
            o += s_o[g][d] * fast_exp2(s_m[g] - mu);
        out[d] = attn_type<T>::from_float(o * inv);
    }
    if (p.lse && tid == 0) p.lse[item] = W > 0.f ? (M + __log2f(W)) * 0.69314718056f : FG_NEG_INF;
}

/* ---- host side ---------------------------------------------------------------------------- */

static int decode_rows(const struct attn_args *a) {
    return a->b.max_q_len * (a->b.n_heads / a->b.n_kv_heads);
}

extern "C" int decode_attn_supported(const struct attn_args *a) {
    if (a->dtype != ATTN_DTYPE_BF16 && a->dtype != ATTN_DTYPE_FP16) return 0;
    if (a->b.head_dim != 64 && a->b.head_dim != 128 && a->b.head_dim != 256) return 0;
    if (a->b.n_kv_heads < 1 || a->b.n_heads % a->b.n_kv_heads) return 0;
    return decode_rows(a) <= DECODE_MAX_ROWS;
}

/* K/V bytes the call reads: exact with host_kv_len, else the n_seqs × max_kv_len bound. */
static size_t decode_kv_bytes(const struct attn_args *a) {
    const struct attn_batch *b = &a->b;
    size_t tokens = (size_t)b->n_seqs * (size_t)b->max_kv_len;
    if (b->host_kv_len) {
        tokens = 0;
        for (int s = 0; s < b->n_seqs; s++)
            tokens += (size_t)b->host_kv_len[s];
    }
    return tokens * (size_t)b->n_kv_heads * (size_t)b->head_dim * 2 * 2; /* K and V, 2 bytes */
}

/* Load of the busiest SM with n parts per (sequence, head): ceil(base·n / n_sm) blocks of 1/n. */
static double decode_sm_load(long base, long n, int n_sm) {
    return (double)((base * n + n_sm - 1) / n_sm) / (double)n;
}

/* Most parts a's keys allow: parts of at least DECODE_MIN_KEYS keys (a sliding window reads at
 * most window + query rows keys), at most DECODE_MAX_SPLITS. */
static long decode_max_parts(const struct attn_args *a) {
    long keys = a->b.max_kv_len;
    if (a->window > 0 && keys > (long)a->window + a->b.max_q_len)
        keys = (long)a->window + a->b.max_q_len;
    const long cap = (keys + DECODE_MIN_KEYS - 1) / DECODE_MIN_KEYS;
    return cap < DECODE_MAX_SPLITS ? cap : DECODE_MAX_SPLITS;
}

/* ---- the warp path's selection (decode_warp_kernel) ---- */

template <typename T, int HD> static size_t decode_warp_smem_bytes() {
    return (size_t)DECODE_PW_NW * DECODE_PW_STAGES * 2 * DECODE_BN * HD * sizeof(T);
}

/* Blocks of decode_warp_kernel<T, HD, EF> the device runs at once (0 when it cannot run):
 * asked once per instantiation, which also lets it use its shared memory. */
template <typename T, int HD, bool EF> static int decode_warp_slots() {
    static int slots = -1;
    if (slots < 0) {
        const size_t smem = decode_warp_smem_bytes<T, HD>();
        int dev = 0, n_sm = 0, per_sm = 0;
        if (attn_allow_smem(decode_warp_kernel<T, HD, EF>, smem) != cudaSuccess ||
            cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, decode_warp_kernel<T, HD, EF>,
                                                          DECODE_PW_NW * 32, smem) != cudaSuccess) {
            cudaGetLastError(); /* not sticky: the split kernel serves */
            per_sm = 0;
        }
        slots = n_sm * per_sm;
    }
    return slots;
}

/* Warps of the warp kernel's full grid for a's dtype and head dim (0: head dim > 128). */
static long decode_warp_count(const struct attn_args *a) {
    const int bf = a->dtype == ATTN_DTYPE_BF16, hd = a->b.head_dim;
    int slots = 0;
    if (hd == 64)
        slots = bf ? decode_warp_slots<__nv_bfloat16, 64, true>()
                   : decode_warp_slots<__half, 64, true>();
    else if (hd == 128)
        slots = bf ? decode_warp_slots<__nv_bfloat16, 128, true>()
                   : decode_warp_slots<__half, 128, true>();
    return (long)slots * DECODE_PW_NW;
}

/* Busy share of the warps over the kernel when `units` equal units are dealt round-robin to
 * `warps` warps: units / (warps · rounds). */
static double decode_warp_fill(long units, long warps) {
    const long rounds = (units + warps - 1) / warps;
    return (double)units / ((double)warps * (double)rounds);
}

/* The warp path's part count for a: the fewest parts (of at least DECODE_MIN_KEYS keys) whose
 * units keep DECODE_PW_MIN_FILL of the warps busy, or 0 where the warp path does not serve
 * (head dim > 128, fewer than DECODE_PW_MIN_ITEMS (sequence, KV head) items, or no such count).
 * Measured (bench/results/decode_serving_run2_h200_2026-12-02.log, GB/s at context 512 / 1024 /
 * 2048): 512 items (batch 64 × 8 KV heads) as 512 units on 1056 warps (fill 0.48) 2340 / 2483 /
 * 2575, as 1024 units (2 parts, fill 0.97) 3362 / 3830 / 4111 (split kernel: 3177 / 3701 /
 * 4018); 1024 and 2048 items in 1 part (fill 0.97) 4030 / 4257 / 4332 and 4158 / 4297 / 4350
 * (split kernel 3286 / 3788 / 4121 and 3352 / 3874 / 4172). */
static int decode_warp_parts(const struct attn_args *a) {
    const long items = (long)a->b.n_seqs * a->b.n_kv_heads;
    if (a->b.head_dim > 128 || items < DECODE_PW_MIN_ITEMS) return 0;
    const long warps = decode_warp_count(a);
    if (warps < 1) return 0;
    const long cap = decode_max_parts(a);
    for (long n = 1; n <= cap; n++)
        if (decode_warp_fill(items * n, warps) >= DECODE_PW_MIN_FILL) return (int)n;
    return 0;
}

/* 1 when a launch of n parts takes decode_warp_kernel: the launcher's own choice (a->n_splits
 * ≤ 0; a forced split count keeps the split kernel, whose arithmetic then does not depend on the
 * batch: the engine's batch-invariant mode forces one), head dim ≤ 128, at least
 * DECODE_PW_MIN_ITEMS items and units that fill DECODE_PW_MIN_FILL of the warps. Serves the
 * workspace and the launch, before decode_use_cluster (the warp kernel's parts go through the
 * workspace). */
static int decode_use_warp(const struct attn_args *a, int n) {
    if (a->n_splits > 0 || a->b.head_dim > 128) return 0;
    const long items = (long)a->b.n_seqs * a->b.n_kv_heads, warps = decode_warp_count(a);
    return items >= DECODE_PW_MIN_ITEMS && warps > 0 &&
           decode_warp_fill(items * n, warps) >= DECODE_PW_MIN_FILL;
}

extern "C" int decode_attn_splits(const struct attn_args *a) {
    const int warp_parts = decode_warp_parts(a);
    if (warp_parts > 0) return warp_parts;
    int dev = 0, n_sm = 132;
    if (cudaGetDevice(&dev) == cudaSuccess)
        cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev);
    long base = (long)a->b.n_seqs * a->b.n_kv_heads;
    /* At most one wave of DECODE_BLOCKS_PER_SM blocks per SM (a partial second wave cost up to 20%:
     * kernels/BENCH.md run 4), parts of at least DECODE_MIN_KEYS keys. */
    long max_n = (long)DECODE_BLOCKS_PER_SM * n_sm / base;
    const long cap = decode_max_parts(a);
    if (max_n > cap) max_n = cap;
    if (max_n < 1) return 1;
    /* Small calls: the fewest parts within 5% of the best busiest-SM load (every part adds merge
     * work; one block per SM streams nearly as fast as two when every SM has one), if that keeps
     * ≥ 90% of the SMs busy. Larger calls, or when it would not: fill the wave. Measured as CUDA
     * graph replays of 32 calls (bench/results/decode3_h100_2026-11-23.log, run 2, GB/s):
     * batch 1 at 4k 16 parts 1341 vs 32 parts 1270; at 16k/32k 33 parts 2284/2559 vs 16 parts
     * 2223/2516; batch 8 at 1k 2 parts 1807 vs 4 parts 1832; at 4k 4 parts 2629 vs 2 parts 2465.
     * Earlier, single-launch: batch 12 at 4k 1 part (96 SMs busy) 1974 vs 2 parts 2183; 3 parts
     * of batch 8 (busiest SMs with 2 blocks, others 1) lost 10%; batch 16 at 4k (268 MB) 1 part
     * 2523 vs 2 parts 2436 (it now takes 2: not yet timed as graph replays). */
    double best = 1e30;
    for (long n = 1; n <= max_n; n++)
        if (decode_sm_load(base, n, n_sm) < best) best = decode_sm_load(base, n, n_sm);
    long fewest = max_n;
    for (long n = max_n; n >= 1; n--)
        if (decode_sm_load(base, n, n_sm) <= best * 1.05) fewest = n;
    bool small = decode_kv_bytes(a) <= (size_t)DECODE_FEW_SPLITS_MAX_MB << 20;
    long n = small && base * fewest * 10 >= 9L * n_sm ? fewest : max_n;
    /* The merge takes SPB · U parts per dependent L2 round trip (decode_merge_kernel): a count
     * just past a multiple of that pays a whole round for a few parts, so round down when it
     * costs at most 5% of the busiest SM's load. Measured (same log, run 2): batch 1 at 16k/32k
     * 32 parts 2300/2635 GB/s vs 33 parts 2284/2559. */
    long per_round = (long)(DECODE_MERGE_NT / (a->b.head_dim / 4)) * DECODE_MERGE_U;
    long down = n / per_round * per_round;
    if (down >= 1 && down < n &&
        decode_sm_load(base, down, n_sm) <= decode_sm_load(base, n, n_sm) * 1.05)
        n = down;
    return (int)n;
}

static size_t decode_q_total(const struct attn_args *a) {
    return a->b.host_q_start ? (size_t)a->b.host_q_start[a->b.n_seqs] : 0;
}

template <typename T, int HD, bool EF, bool CLU> static cudaError_t decode_set_attrs(size_t smem) {
    return attn_allow_smem(decode_split_kernel<T, HD, EF, CLU>, smem); /* two blocks per SM */
}

/* Launch attributes of the cluster path: one cluster = the n parts of a (KV head, sequence).
 * Load-balancing placement: with the default (spread) only 62 clusters of 4 fit at once on the
 * H100 against 66 (264 blocks, a full wave), and batch 8 at 4k took two waves (1900 vs 2669 GB/s,
 * decode4 log). */
static void decode_cluster_attrs(cudaLaunchAttribute attr[2], int n) {
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = (unsigned)n;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    attr[1].id = cudaLaunchAttributeClusterSchedulingPolicyPreference;
    attr[1].val.clusterSchedulingPolicyPreference = cudaClusterSchedulingPolicyLoadBalancing;
}

/* Clusters of n split blocks the device runs at once (0 when it cannot). The evict-first
 * instantiation stands for both: they differ only in the policy operand of their loads, and the
 * shared memory bounds the occupancy. */
template <typename T, int HD> static int decode_cluster_capacity(int n) {
    const size_t smem = decode_smem_bytes<T, HD>();
    if (decode_set_attrs<T, HD, true, true>(smem) != cudaSuccess) return 0;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)n);
    cfg.blockDim = dim3(DECODE_NW * 32);
    cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute attr[2];
    decode_cluster_attrs(attr, n);
    cfg.attrs = attr;
    cfg.numAttrs = 2;
    int c = 0;
    if (cudaOccupancyMaxActiveClusters(&c, decode_split_kernel<T, HD, true, true>, &cfg) !=
        cudaSuccess) {
        cudaGetLastError(); /* not sticky: the two-kernel path serves */
        return 0;
    }
    return c;
}

/* The selector for the merge: 1 when the n parts of every (KV head, sequence) merge in a
 * cluster (n ≤ DECODE_CLUSTER_MAX and all the clusters run in one wave), 0 when they go through
 * the workspace and decode_merge_kernel. Serves decode_attn_workspace_bytes and the launch. */
static int decode_use_cluster(const struct attn_args *a, int n) {
    if (n < 2 || n > DECODE_CLUSTER_MAX || decode_use_warp(a, n)) return 0;
    long clusters = (long)a->b.n_seqs * a->b.n_kv_heads;
    /* The capacity depends only on (dtype, head dim, cluster size) on the process's one device:
     * asked once (the query and the attribute calls cost microseconds, twice per launch). */
    static int cache[2][3][DECODE_CLUSTER_MAX + 1]; /* capacity + 1; 0 = not asked yet */
    const int bf = a->dtype == ATTN_DTYPE_BF16;
    const int hi = a->b.head_dim == 64 ? 0 : a->b.head_dim == 128 ? 1 : 2;
    int &c = cache[bf][hi][n];
    if (!c) {
        int cap;
        if (bf)
            cap = hi == 0   ? decode_cluster_capacity<__nv_bfloat16, 64>(n)
                  : hi == 1 ? decode_cluster_capacity<__nv_bfloat16, 128>(n)
                            : decode_cluster_capacity<__nv_bfloat16, 256>(n);
        else
            cap = hi == 0   ? decode_cluster_capacity<__half, 64>(n)
                  : hi == 1 ? decode_cluster_capacity<__half, 128>(n)
                            : decode_cluster_capacity<__half, 256>(n);
        c = cap + 1;
    }
    return clusters <= c - 1;
}

extern "C" size_t decode_attn_workspace_bytes(const struct attn_args *a, int n_splits) {
    if (decode_use_cluster(a, n_splits)) return 0;
    size_t items = decode_q_total(a) * (size_t)a->b.n_heads;
    return (size_t)n_splits * items * (a->b.head_dim + 1) * sizeof(float);
}

enum decode_path { DECODE_PATH_SPLIT, DECODE_PATH_CLUSTER, DECODE_PATH_WARP };

/* The merge of the workspace partials, launched as a programmatic dependent of the kernel
 * before it on st (see decode_wait_prerequisites()). */
template <typename T, int HD> static cudaError_t decode_merge_run(attn_kparams p, cudaStream_t st) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)((size_t)p.n_q_total * p.n_heads));
    cfg.blockDim = dim3(DECODE_MERGE_NT);
    cfg.stream = st;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, decode_merge_kernel<T, HD>, p);
}

/* decode_warp_kernel over n_units units: one block per SM slot its shared memory allows
 * (decode_warp_slots), fewer when there are fewer units than slots. */
template <typename T, int HD, bool EF>
static cudaError_t decode_warp_run(attn_kparams p, int n_units, cudaStream_t st) {
    const int slots = decode_warp_slots<T, HD, EF>();
    if (slots < 1) return cudaErrorInvalidConfiguration;
    int blocks = n_units < slots ? n_units : slots;
    if (blocks < 1) blocks = 1;
    decode_warp_kernel<T, HD, EF>
        <<<blocks, DECODE_PW_NW * 32, decode_warp_smem_bytes<T, HD>(), st>>>(p, n_units);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || p.n_splits == 1) return e;
    return decode_merge_run<T, HD>(p, st);
}

template <typename T, int HD, bool EF>
static cudaError_t decode_run(attn_kparams p, int n_seqs, decode_path path, cudaStream_t st) {
    if constexpr (HD <= 128) {
        if (path == DECODE_PATH_WARP)
            return decode_warp_run<T, HD, EF>(p, n_seqs * p.n_kv_heads * p.n_splits, st);
    }
    const size_t smem = decode_smem_bytes<T, HD>();
    const dim3 grid((unsigned)p.n_splits, (unsigned)p.n_kv_heads, (unsigned)n_seqs);
    cudaError_t e;
    if (path == DECODE_PATH_CLUSTER) {
        e = decode_set_attrs<T, HD, EF, true>(smem);
        if (e != cudaSuccess) return e;
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = grid;
        cfg.blockDim = dim3(DECODE_NW * 32);
        cfg.dynamicSmemBytes = smem;
        cfg.stream = st;
        cudaLaunchAttribute attr[2];
        decode_cluster_attrs(attr, p.n_splits);
        cfg.attrs = attr;
        cfg.numAttrs = 2;
        return cudaLaunchKernelEx(&cfg, decode_split_kernel<T, HD, EF, true>, p);
    }
    e = decode_set_attrs<T, HD, EF, false>(smem);
    if (e != cudaSuccess) return e;
    decode_split_kernel<T, HD, EF, false><<<grid, DECODE_NW * 32, smem, st>>>(p);
    e = cudaGetLastError();
    if (e != cudaSuccess || p.n_splits == 1) return e;
    return decode_merge_run<T, HD>(p, st);
}

template <typename T, int HD>
static cudaError_t decode_run(attn_kparams p, int n_seqs, bool ef, decode_path path,
                              cudaStream_t st) {
    return ef ? decode_run<T, HD, true>(p, n_seqs, path, st)
              : decode_run<T, HD, false>(p, n_seqs, path, st);
}

extern "C" int decode_attn_launch(const struct attn_args *a, char *err, size_t errlen) {
    if (!decode_attn_supported(a)) {
        snprintf(err, errlen, "decode attention: unsupported shape");
        return -1;
    }
    const struct attn_batch *b = &a->b;
    int n = a->n_splits > 0 ? a->n_splits : decode_attn_splits(a);
    if (n > DECODE_MAX_SPLITS) n = DECODE_MAX_SPLITS;
    /* Splitting needs the exact row count (host_q_start) and room for the partials. */
    if (!b->host_q_start) n = 1;
    while (n > 1 && decode_attn_workspace_bytes(a, n) > (a->workspace ? a->workspace_bytes : 0))
        n--;
    attn_kparams p = {};
    p.out = a->out;
    p.q = a->q;
    p.k = a->k_pool;
    p.v = a->v_pool;
    p.lse = a->lse;
    p.q_start = b->q_start;
    p.kv_len = b->kv_len;
    p.block_table = b->block_table;
    p.max_pages = b->max_pages;
    p.page_size = b->page_size;
    p.page_shift = (b->page_size & (b->page_size - 1)) ? -1 : __builtin_ctz((unsigned)b->page_size);
    p.n_heads = b->n_heads;
    p.n_kv_heads = b->n_kv_heads;
    p.group = b->n_heads / b->n_kv_heads;
    p.scale_log2 = b->scale * 1.4426950408889634f;
    p.causal = b->causal;
    p.window = a->window > 0 ? a->window : 0;
    p.n_splits = n;
    p.n_q_total = (int)decode_q_total(a);
    p.early = a->early_dependents != 0;
    const decode_path path = decode_use_warp(a, n)      ? DECODE_PATH_WARP
                             : decode_use_cluster(a, n) ? DECODE_PATH_CLUSTER
                                                        : DECODE_PATH_SPLIT;
    if (n > 1 && path != DECODE_PATH_CLUSTER) {
        size_t items = (size_t)p.n_q_total * p.n_heads;
        p.part_o = static_cast<float *>(a->workspace);
        p.part_lse = p.part_o + (size_t)n * items * b->head_dim;
    }
    cudaStream_t st = static_cast<cudaStream_t>(a->stream);
    bool ef = decode_kv_bytes(a) <= (size_t)DECODE_EVICT_FIRST_MAX_MB << 20;
    cudaError_t e;
    if (a->dtype == ATTN_DTYPE_BF16)
        e = b->head_dim == 64    ? decode_run<__nv_bfloat16, 64>(p, b->n_seqs, ef, path, st)
            : b->head_dim == 128 ? decode_run<__nv_bfloat16, 128>(p, b->n_seqs, ef, path, st)
                                 : decode_run<__nv_bfloat16, 256>(p, b->n_seqs, ef, path, st);
    else
        e = b->head_dim == 64    ? decode_run<__half, 64>(p, b->n_seqs, ef, path, st)
            : b->head_dim == 128 ? decode_run<__half, 128>(p, b->n_seqs, ef, path, st)
                                 : decode_run<__half, 256>(p, b->n_seqs, ef, path, st);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "decode attention launch: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}
