/* decode_attention.cu — paged decode attention: split-K flash-decoding with an LSE merge.
 *
 * Design: the query rows of one sequence and KV head (its few new tokens × the G query heads of
 * the group, ≤ 16) form one 16-row mma tile, so every K/V byte is read once per group and the
 * tensor cores do the dot products (the padding rows cost math, not bandwidth). Block (split,
 * KV head, sequence) owns a contiguous part of the context; its 4 warps take turns over 16-key
 * tiles, each warp streaming its own tiles through a private 3-stage cp.async ring (16-byte
 * loads through the page table), so several tiles per warp are in flight. The warps' running
 * (max, sum, output) are merged in shared memory at the end; with several splits each block
 * writes a normalised fp32 partial and its log2-domain LSE, and decode_merge_kernel combines
 * them: out = Σ 2^(lse_i - M) o_i / Σ 2^(lse_i - M).
 * Split count: the most parts that fit one wave of 2 blocks per SM, each at least 128 keys; measured
 * against half, double and 4x that count in kernels/BENCH.md.
 */
#include <cuda_runtime.h>
#include <stdio.h>

#include "attention_common.cuh"
#include "decode_attention.h"

#define DECODE_NW 4
#define DECODE_BN 16
#define DECODE_STAGES 3
#define DECODE_MIN_KEYS 128
#define DECODE_MAX_SPLITS 128

template <typename T, int HD>
__global__ void __launch_bounds__(DECODE_NW * 32) decode_split_kernel(const attn_kparams p)
{
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
    const T *kp = static_cast<const T *>(p.k);
    const T *vp = static_cast<const T *>(p.v);

    int kps = (kvlen + p.n_splits - 1) / p.n_splits;
    kps = (kps + BN - 1) / BN * BN;
    const int k_begin = split * kps, k_end = min(kvlen, k_begin + kps);
    const int n_tiles = k_end > k_begin ? (k_end - k_begin + BN - 1) / BN : 0;

    {
        const T *qg = static_cast<const T *>(p.q);
        constexpr int CPR = HD / 8, TOTAL = 16 * CPR;
        const uint32_t qb = smem_u32(sQ);
        for (int c = tid; c < TOTAL; c += NT) {
            int row = c / CPR, ch = c % CPR;
            bool valid = row < rows;
            const T *src = qg;
            if (valid) src = qg + ((size_t)(q0 + row / G) * p.n_heads + kvh * G + row % G) * HD + ch * 8;
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

    /* This warp's tiles: i-th is global tile warp + i·NW of the part. */
    const int nt_w = n_tiles > warp ? (n_tiles - warp + NW - 1) / NW : 0;
#pragma unroll
    for (int st = 0; st < ST - 1; st++) {
        if (st < nt_w) {
            int key0 = k_begin + (warp + st * NW) * BN;
            load_kv_tile<T, HD, BN, 32>(sW + st * 2 * TILE, kp, bt, key0, k_end, p.page_size,
                                        p.page_shift, p.n_kv_heads, kvh, lane,
                                        sW + st * 2 * TILE + TILE, vp);
        }
        cp_async_commit();
    }

    float o[1][HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++)
        o[0][i][0] = o[0][i][1] = o[0][i][2] = o[0][i][3] = 0.f;
    float m[2] = {FG_NEG_INF, FG_NEG_INF}, l[2] = {0.f, 0.f};
    uint32_t qf[1][HD / 16][4];
    cp_async_wait<ST - 1>(); /* the Q group (committed first) is done */
    __syncthreads();
    load_q_frags<HD>(qf[0], sQ, 0, lane);

    for (int i = 0; i < nt_w; i++) {
        int ni = i + ST - 1;
        if (ni < nt_w) {
            int key0 = k_begin + (warp + ni * NW) * BN;
            T *buf = sW + (ni % ST) * 2 * TILE;
            load_kv_tile<T, HD, BN, 32>(buf, kp, bt, key0, k_end, p.page_size, p.page_shift,
                                        p.n_kv_heads, kvh, lane, buf + TILE, vp);
        }
        cp_async_commit();
        cp_async_wait<ST - 1>();
        __syncwarp();
        const T *buf = sW + (i % ST) * 2 * TILE;
        int key0 = k_begin + (warp + i * NW) * BN;
        uint32_t pa[1][BN / 16][4];
        if (key0 + BN > min_lim)
            warp_qk_softmax<T, HD, BN, 1, true, true>(qf, sQ, 0, buf, o, m, l, pa, p.scale_log2,
                                                      key0, lim, lane);
        else
            warp_qk_softmax<T, HD, BN, 1, true, false>(qf, sQ, 0, buf, o, m, l, pa, p.scale_log2,
                                                       key0, lim, lane);
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
        if (p.n_splits == 1) {
            static_cast<T *>(p.out)[qrow * HD + d] = attn_type<T>::from_float(val);
            if (p.lse && d == 0) p.lse[qrow] = lse2 * 0.69314718056f;
        } else {
            size_t prow = (size_t)split * p.n_q_total * p.n_heads + qrow;
            p.part_o[prow * HD + d] = val;
            if (d == 0) p.part_lse[prow] = lse2;
        }
    }
}

/* One warp per (query row, head): combine the n_splits partials by their LSE. */
template <typename T, int HD>
__global__ void __launch_bounds__(128) decode_merge_kernel(const attn_kparams p)
{
    constexpr int PER = HD / 32;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t item = (size_t)blockIdx.x * 4 + warp;
    const size_t n_items = (size_t)p.n_q_total * p.n_heads;
    if (item >= n_items) return;
    float M = FG_NEG_INF;
    for (int sp = lane; sp < p.n_splits; sp += 32)
        M = fmaxf(M, p.part_lse[sp * n_items + item]);
#pragma unroll
    for (int off = 16; off; off >>= 1)
        M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, off));
    float mu = M == FG_NEG_INF ? 0.f : M, W = 0.f;
    float acc[PER];
#pragma unroll
    for (int e = 0; e < PER; e++)
        acc[e] = 0.f;
    for (int sp = 0; sp < p.n_splits; sp++) {
        float w = fast_exp2(p.part_lse[sp * n_items + item] - mu);
        if (w == 0.f) continue; /* empty part: its output is not read */
        W += w;
        const float *po = p.part_o + (sp * n_items + item) * HD + lane * PER;
        if constexpr (PER == 4) {
            float4 v = *reinterpret_cast<const float4 *>(po);
            acc[0] += w * v.x;
            acc[1] += w * v.y;
            acc[2] += w * v.z;
            acc[3] += w * v.w;
        } else {
#pragma unroll
            for (int e = 0; e < PER; e++)
                acc[e] += w * po[e];
        }
    }
    float inv = W > 0.f ? 1.f / W : 0.f;
    T *out = static_cast<T *>(p.out) + item * HD + lane * PER;
#pragma unroll
    for (int e = 0; e < PER; e++)
        out[e] = attn_type<T>::from_float(acc[e] * inv);
    if (p.lse && lane == 0) p.lse[item] = W > 0.f ? (M + __log2f(W)) * 0.69314718056f : FG_NEG_INF;
}

/* ---- host side ---------------------------------------------------------------------------- */

static int decode_rows(const struct attn_args *a)
{
    return a->b.max_q_len * (a->b.n_heads / a->b.n_kv_heads);
}

extern "C" int decode_attn_supported(const struct attn_args *a)
{
    if (a->dtype != ATTN_DTYPE_BF16 && a->dtype != ATTN_DTYPE_FP16) return 0;
    if (a->b.head_dim != 64 && a->b.head_dim != 128) return 0;
    if (a->b.n_kv_heads < 1 || a->b.n_heads % a->b.n_kv_heads) return 0;
    return decode_rows(a) <= DECODE_MAX_ROWS;
}

extern "C" int decode_attn_splits(const struct attn_args *a)
{
    int dev = 0, n_sm = 132;
    if (cudaGetDevice(&dev) == cudaSuccess)
        cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev);
    long base = (long)a->b.n_seqs * a->b.n_kv_heads;
    /* The most parts that still fit one wave of 2 blocks per SM: a partial second wave cost up to
     * 20% in the split sweeps of kernels/BENCH.md (batch 8: 4 parts 2657 GB/s, 5 parts 2018). */
    long n = 2L * n_sm / base;
    long cap = (a->b.max_kv_len + DECODE_MIN_KEYS - 1) / DECODE_MIN_KEYS;
    if (n > cap) n = cap;
    if (n > DECODE_MAX_SPLITS) n = DECODE_MAX_SPLITS;
    return n < 1 ? 1 : (int)n;
}

static size_t decode_q_total(const struct attn_args *a)
{
    return a->b.host_q_start ? (size_t)a->b.host_q_start[a->b.n_seqs] : 0;
}

extern "C" size_t decode_attn_workspace_bytes(const struct attn_args *a, int n_splits)
{
    size_t items = decode_q_total(a) * (size_t)a->b.n_heads;
    return (size_t)n_splits * items * (a->b.head_dim + 1) * sizeof(float);
}

template <typename T, int HD> static cudaError_t decode_run(attn_kparams p, int n_seqs, cudaStream_t st)
{
    size_t smem = (16 * HD + DECODE_NW * DECODE_STAGES * 2 * DECODE_BN * HD) * sizeof(T);
    size_t merge = DECODE_NW * (32 + 16 * HD) * sizeof(float) + 16 * HD * sizeof(T);
    if (merge > smem) smem = merge;
    cudaError_t e = cudaFuncSetAttribute(decode_split_kernel<T, HD>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) /* two blocks per SM need the largest shared-memory carve-out */
        e = cudaFuncSetAttribute(decode_split_kernel<T, HD>,
                                 cudaFuncAttributePreferredSharedMemoryCarveout,
                                 cudaSharedmemCarveoutMaxShared);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)p.n_splits, (unsigned)p.n_kv_heads, (unsigned)n_seqs);
    decode_split_kernel<T, HD><<<grid, DECODE_NW * 32, smem, st>>>(p);
    e = cudaGetLastError();
    if (e != cudaSuccess || p.n_splits == 1) return e;
    size_t items = (size_t)p.n_q_total * p.n_heads;
    decode_merge_kernel<T, HD><<<(unsigned)((items + 3) / 4), 128, 0, st>>>(p);
    return cudaGetLastError();
}

extern "C" int decode_attn_launch(const struct attn_args *a, char *err, size_t errlen)
{
    if (!decode_attn_supported(a)) {
        snprintf(err, errlen, "decode attention: unsupported shape");
        return -1;
    }
    const struct attn_batch *b = &a->b;
    int n = a->n_splits > 0 ? a->n_splits : decode_attn_splits(a);
    if (n > DECODE_MAX_SPLITS) n = DECODE_MAX_SPLITS;
    /* Splitting needs the exact row count (host_q_start) and room for the partials. */
    if (!b->host_q_start) n = 1;
    while (n > 1 && (!a->workspace || decode_attn_workspace_bytes(a, n) > a->workspace_bytes))
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
    p.n_splits = n;
    p.n_q_total = (int)decode_q_total(a);
    if (n > 1) {
        size_t items = (size_t)p.n_q_total * p.n_heads;
        p.part_o = static_cast<float *>(a->workspace);
        p.part_lse = p.part_o + (size_t)n * items * b->head_dim;
    }
    cudaStream_t st = static_cast<cudaStream_t>(a->stream);
    cudaError_t e;
    if (a->dtype == ATTN_DTYPE_BF16)
        e = b->head_dim == 64 ? decode_run<__nv_bfloat16, 64>(p, b->n_seqs, st)
                              : decode_run<__nv_bfloat16, 128>(p, b->n_seqs, st);
    else
        e = b->head_dim == 64 ? decode_run<__half, 64>(p, b->n_seqs, st)
                              : decode_run<__half, 128>(p, b->n_seqs, st);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "decode attention launch: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}
