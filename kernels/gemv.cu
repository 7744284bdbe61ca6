/* gemv.cu — bf16 GEMV for 1 to 8 activation rows (decode), weights streamed once from HBM.
 *
 * Design: the tensor cores do the dot products so the SM's issue slots go to loads. One
 * mma.m16n8k16 takes x as A (rows = the ≤ 8 activation rows; rows 8-15 are zero) and 8 rows of W
 * as B. A dot product is a sum over k, so k may be permuted freely as long as x and W use the same
 * permutation: lane (g, t) = (lane / 4, lane % 4) loads 16 bytes (8 k) of W row g and 16 bytes of
 * x row g at k0 + 8t, and feeds them as two k16 steps in the fragment order, no shuffles and no
 * shared memory in the loop. The accumulators then hold (activation row g, W rows 2t, 2t+1).
 *
 * A block owns RT tiles of 8 W rows (for SwiGLU: RT/2 gate tiles and the matching up tiles, so
 * the epilogue sees both dots); its KW warps split k in interleaved runs of U 32-k chunks (each
 * warp streams U · 64 contiguous bytes per row), and their partial sums meet in shared memory,
 * summed in warp order (deterministic, no atomics) before the epilogue. W loads bypass L1 and ask
 * L2 to evict them first (read once); x (at most 229 KB) is read through L1, shared by the RT
 * tiles of a warp. With PIPE the next run of W loads is issued before this run's mma, two runs in
 * flight per warp.
 *
 * Launch: programmatic dependent launch (PDL). The kernel lets the next kernel launch as soon as
 * all its blocks have started, and issues its first W loads before griddepcontrol.wait, so in a
 * CUDA graph its start overlaps the tail of the kernel before it. This is why W must not be
 * written by the kernel queued just before (weights are constant during decode). Measured on the
 * H100, back to back in a graph: Llama-3-8B o projection (32 MB) 13.6 µs → 12.6 µs with PDL and
 * PIPE, SmolLM2 shapes 2.6 → 1.7 µs. Variants (RT, KW, U, PIPE, PDL) are one table; fg_gemv_pick
 * chooses from the shape (bench/results/gemv_h100_2026-11-23.log).
 *
 * RMSNorm fused in front (fg_gemv_norm, template flag NORM): after griddepcontrol.wait every block
 * computes the n row scales rsqrt(mean(x²) + eps) itself — x is at most 8 × 14336 bf16, read
 * through L1, where the main loop finds it again — then the main loop turns each 16-byte x chunk
 * into h = bf16(x · scale · gamma) just before its mma, as k_rmsnorm in cuda_ops.cu rounds it
 * (gamma fp32, two float4 loads per chunk: norm weights are fp32 on every backend, kernels/ops.h).
 * Each chunk of h is made by exactly one lane per block, so block 0 can store h on the way.
 * This removes the norm kernel and its launch gap in front of the q|k|v and gate|up GEMVs.
 * Measured on the H100 in a graph, the four GEMVs and two norms of a Llama-3-8B layer at batch 1
 * take 154 µs fused against 158 µs unfused (131 µs per 32-layer step), SmolLM2 11.3 against
 * 13.2 µs; one call alone gains 1.6-2.3 µs against norm kernel + fg_gemv, except the 8B q|k|v at
 * n = 8 (0.4 µs slower), where each block's pass over the 64 KB of x, in 1.5 waves of blocks,
 * costs more than the separate norm (bench/results/normgemv_h100_2026-11-23.log).
 */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "attention_wgmma.cuh"
#include "gemv.h"
#include "gemv_common.cuh"

struct gemv_params {
    void *y;                /* (n, out_dim) bf16 or fp32 */
    const __nv_bfloat16 *x; /* (n, in_dim) */
    const __nv_bfloat16 *w; /* (out_rows, in_dim); out_rows = out_dim, or 2 out_dim for SwiGLU */
    /* NORM kernels only: */
    const float *gamma;   /* (in_dim) RMSNorm weight, fp32 */
    __nv_bfloat16 *h_out; /* (n, in_dim) the normed x, or NULL */
    float eps;            /* RMSNorm epsilon */
    int n, in_dim, out_dim;
    int epilogue, y_f32;
    int out_tiles; /* 8-wide output tiles per block: RT, or RT / 2 for SwiGLU */
};

/* W is read exactly once: skip L1, mark the L2 lines evict-first and fetch 256 B around the
 * access (each warp reads 64 · U contiguous bytes of a row, a DRAM-friendly run). Zero when !ok
 * (the k tail), predicated inside the asm so no branch splits the unrolled loads. */
__device__ __forceinline__ uint4 gemv_load_w(const __nv_bfloat16 *p, bool ok, uint64_t policy) {
    uint4 v;
    asm("{\n .reg .pred q;\n setp.ne.b32 q, %5, 0;\n"
        " mov.b32 %0, 0;\n mov.b32 %1, 0;\n mov.b32 %2, 0;\n mov.b32 %3, 0;\n"
        " @q ld.global.nc.L1::no_allocate.L2::cache_hint.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4], %6;\n"
        "}\n"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p), "r"((int)ok), "l"(policy));
    return v;
}

__device__ __forceinline__ uint4 gemv_load_x(const __nv_bfloat16 *p) {
    return __ldg(reinterpret_cast<const uint4 *>(p));
}

/* RMSNorm row scales, computed by every block for itself: scale[b] = rsqrt(mean(x_b²) + eps) for
 * the n rows, returned for row g (row 0's for lanes past n, whose x is zero). The block's threads
 * stride over the flattened (row, 16-byte chunk) space with GEMV_NORM_LOADS loads in flight each;
 * each thread sums its chunks in a fixed order, the warps reduce by a fixed butterfly and thread
 * b adds the warps' sums in warp order, so every block gets the same bits (deterministic, and the
 * blocks agree). Reads x through L1, where the main loop finds it again. */
#define GEMV_NORM_LOADS 4
/* NAMED: the block's KW warps meet at named barrier 1 instead of __syncthreads (the bulk kernel,
 * whose producer warp does not take part). */
__device__ __forceinline__ void gemv_bar(bool named, int kw) {
    if (named)
        named_bar_sync(1, kw * 32);
    else
        __syncthreads();
}

template <int KW, bool NAMED = false>
__device__ __forceinline__ float gemv_norm_scale(const gemv_params &p, int g) {
    __shared__ float part[KW][FG_GEMV_MAX_ROWS]; /* warp, row */
    __shared__ float scale[FG_GEMV_MAX_ROWS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int per_row = p.in_dim / 8, total = p.n * per_row;
    float ss[FG_GEMV_MAX_ROWS];
#pragma unroll
    for (int r = 0; r < FG_GEMV_MAX_ROWS; r++)
        ss[r] = 0.0f;
    for (int i0 = threadIdx.x; i0 < total; i0 += GEMV_NORM_LOADS * KW * 32) {
        uint4 v[GEMV_NORM_LOADS];
#pragma unroll
        for (int q = 0; q < GEMV_NORM_LOADS; q++) {
            const int i = i0 + q * KW * 32;
            v[q] = i < total ? gemv_load_x(p.x + (size_t)i * 8) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int q = 0; q < GEMV_NORM_LOADS; q++) {
            const uint32_t wd[4] = {v[q].x, v[q].y, v[q].z, v[q].w};
            float s = 0.0f;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float lo = __uint_as_float(wd[e] << 16);
                const float hi = __uint_as_float(wd[e] & 0xffff0000u);
                s += lo * lo;
                s += hi * hi;
            }
            /* the row of chunk i; past total it is >= n and matches no accumulator in use */
            const int row = (i0 + q * KW * 32) / per_row;
#pragma unroll
            for (int r = 0; r < FG_GEMV_MAX_ROWS; r++)
                if (row == r) ss[r] += s;
        }
    }
#pragma unroll
    for (int r = 0; r < FG_GEMV_MAX_ROWS; r++) {
#pragma unroll
        for (int off = 16; off > 0; off >>= 1)
            ss[r] += __shfl_xor_sync(0xffffffffu, ss[r], off);
    }
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < FG_GEMV_MAX_ROWS; r++)
            part[warp][r] = ss[r];
    }
    gemv_bar(NAMED, KW);
    if (threadIdx.x < p.n) {
        float s = 0.0f;
        for (int w = 0; w < KW; w++)
            s += part[w][threadIdx.x];
        scale[threadIdx.x] = rsqrtf(s / p.in_dim + p.eps); /* as k_rmsnorm: sum / dim + eps */
    }
    gemv_bar(NAMED, KW);
    return scale[g < p.n ? g : 0];
}

/* The W loads of U chunks from chunk c (lane: k = 32 c + 8t; zero past in_dim, no access). */
template <int RT, int U>
__device__ __forceinline__ void gemv_load_w_chunks(uint4 (&wv)[U][RT],
                                                   const __nv_bfloat16 *const (&wrow)[RT], int c,
                                                   int in_dim, int t, uint64_t policy) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int k = (c + u) * 32;
#pragma unroll
        for (int r = 0; r < RT; r++)
            wv[u][r] = gemv_load_w(wrow[r] + k, k + 8 * t < in_dim, policy);
    }
}

/* The mma of one run of U chunks: each chunk's x against its W in the RT tiles, k16 by k16. */
template <int RT, int U>
__device__ __forceinline__ void gemv_mma_run(float (&acc)[RT][4], const uint4 (&xv)[U],
                                             const uint4 (&wv)[U][RT]) {
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int r = 0; r < RT; r++) {
            gemv_mma(acc[r], xv[u].x, xv[u].y, wv[u][r].x, wv[u][r].y);
            gemv_mma(acc[r], xv[u].z, xv[u].w, wv[u][r].z, wv[u][r].w);
        }
}

/* PIPE: the next run's W loads are issued before this run's mma (two runs in flight per warp,
 * twice the W registers). NORM: x is RMSNorm'ed on the way in (gemv_norm_scale,
 * gemv_norm_chunk). */
template <int RT, int KW, int U, bool PIPE, bool NORM>
__global__ void __launch_bounds__(KW * 32, 16 / KW) gemv_kernel(const gemv_params p) {
    __shared__ float2 red[KW][RT][8][4]; /* warp, W tile, activation row, W row pair */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int OT = p.out_tiles, j0 = blockIdx.x * 8 * OT;
    const bool swiglu = p.epilogue == FG_GEMV_SWIGLU;

    /* With programmatic dependent launch, the next kernel may start once every block of this one
     * has started; it waits (griddepcontrol.wait) for this grid to finish before reading y. */
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");

    /* This lane's W row in each tile; rows past out_dim read the last row (result discarded). */
    const __nv_bfloat16 *wrow[RT];
#pragma unroll
    for (int r = 0; r < RT; r++) {
        int o = swiglu ? r % OT : r;
        int j = min(j0 + o * 8 + g, p.out_dim - 1);
        size_t row = (size_t)j + (swiglu && r >= OT ? p.out_dim : 0);
        wrow[r] = p.w + row * p.in_dim + 8 * t;
    }
    const bool has_x = g < p.n;
    const __nv_bfloat16 *xrow = p.x + (size_t)(has_x ? g : 0) * p.in_dim + 8 * t;
    uint64_t policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));

    float acc[RT][4];
#pragma unroll
    for (int r = 0; r < RT; r++)
        acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = 0.0f;

    const int n_chunks = (p.in_dim + 31) / 32, step = KW * U;
    const uint4 zero = make_uint4(0, 0, 0, 0);
    int c0 = warp * U;
    uint4 wv[U][RT];
    gemv_load_w_chunks<RT, U>(wv, wrow, c0, p.in_dim, t, policy);
    /* Only W (constant during decode) was read so far; x and y may come from the kernel before
     * this one: wait for it (a no-op when launched without programmatic dependent launch). */
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    const float scale = NORM ? gemv_norm_scale<KW>(p, g) : 0.0f;
    /* Block 0 stores h (each chunk of it is made by one lane of the block); x rows only. */
    __nv_bfloat16 *hrow = NORM && p.h_out && blockIdx.x == 0 && has_x
                              ? p.h_out + (size_t)g * p.in_dim + 8 * t
                              : nullptr;
    while (c0 < n_chunks) {
        uint4 xv[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int k = (c0 + u) * 32;
            const bool in = k + 8 * t < p.in_dim;
            xv[u] = in && has_x ? gemv_load_x(xrow + k) : zero;
            if (NORM) {
                const gemv_gamma8 gm = in ? gemv_load_gamma(p.gamma + k + 8 * t) : gemv_gamma8{};
                xv[u] = gemv_norm_chunk(xv[u], gm, scale);
                if (hrow && in) *reinterpret_cast<uint4 *>(hrow + k) = xv[u];
            }
        }
        const int c1 = c0 + step;
        uint4 wn[U][RT];
        if (PIPE) gemv_load_w_chunks<RT, U>(wn, wrow, c1, p.in_dim, t, policy);
        gemv_mma_run<RT, U>(acc, xv, wv);
        if (PIPE) {
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int r = 0; r < RT; r++)
                    wv[u][r] = wn[u][r];
        } else if (c1 < n_chunks) {
            gemv_load_w_chunks<RT, U>(wv, wrow, c1, p.in_dim, t, policy);
        }
        c0 = c1;
    }
#pragma unroll
    for (int r = 0; r < RT; r++)
        red[warp][r][g][t] = make_float2(acc[r][0], acc[r][1]);
    __syncthreads();

    gemv_epilogue<KW, RT, 8>(p, reinterpret_cast<const float *>(red), j0, KW * 32);
}

/* The bulk-copy kernel (the "bulk" variants; kernels/qgemv.cu has its twin for GGUF blocks, where
 * the reasons are written out). The kernel above keeps one or two runs of U chunks per warp in
 * flight, a few KB per SM, short of what the copy ceiling needs in flight at 4.2 TB/s. Here one
 * producer warp streams the block's 8 · RT W rows through a ring of ST stages in shared memory by
 * cp.async.bulk (one per row and stage, lane i the row i, 8 · RT ≤ 32; the bytes counted on the
 * stage's "full" mbarrier), a stage being the k-run of KW · U chunks the KW warps take in one turn
 * of the kernel above (warp w chunks w · U .. w · U + U − 1 of it: the same chunks per warp, the
 * same sums, the same bits as the variant of the same RT, KW, U). A consumer warp waits on
 * "full", reads its W from shared memory (rows RS = 64 · KW · U + 16 bytes apart: a warp's
 * 16-byte reads of 8 rows fall in distinct bank groups), releases the stage on "empty" (KW
 * arrivals) and runs the same mma. The grid is persistent (at most the blocks the SMs hold): a
 * block walks items (RT tiles) it, it + gridDim.x, ..., the producer runs ahead across items,
 * the fused norm's scales are made once per block; each item's sums meet in shared memory behind
 * named barriers among the consumers. */

/* Bytes of one W row's run in a stage of the ring (padded: see above). */
#define GEMV_BULK_RS(KW, U) (64 * (KW) * (U) + 16)

template <int RT, int KW, int U, int ST, bool NORM>
__global__ void __launch_bounds__((KW + 1) * 32, 1) gemv_bulk_kernel(const gemv_params p) {
    static_assert(8 * RT <= 32, "one producer lane per row");
    constexpr int KC = 32 * KW * U, RS = GEMV_BULK_RS(KW, U);
    __shared__ float2 red[KW][RT][8][4]; /* warp, W tile, activation row, W row pair */
    __shared__ __align__(8) uint64_t bars[2 * ST];
    extern __shared__ __align__(16) uint8_t gsm[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int OT = p.out_tiles;
    const bool swiglu = p.epilogue == FG_GEMV_SWIGLU;
    const int items = (p.out_dim + 8 * OT - 1) / (8 * OT), nst = (p.in_dim + KC - 1) / KC;
    const uint32_t ring = (uint32_t)__cvta_generic_to_shared(gsm);
    const uint32_t bar0 = (uint32_t)__cvta_generic_to_shared(bars);

    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    mbar_ring_init(bar0, ST, KW);
    __syncthreads();

    if (warp == KW) { /* the producer: lane i copies row i of the item's 8 · RT rows */
        if (lane >= 8 * RT) return;
        uint64_t policy;
        asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
        const int r = lane / 8, o = swiglu ? r % OT : r;
        int s = 0;
        uint32_t ph = 0;
        for (int it = blockIdx.x; it < items; it += gridDim.x) {
            const int j = min(it * 8 * OT + o * 8 + lane % 8, p.out_dim - 1);
            const __nv_bfloat16 *row =
                p.w + ((size_t)j + (swiglu && r >= OT ? p.out_dim : 0)) * p.in_dim;
            for (int c = 0; c < nst; c++) {
                const uint32_t bytes = (uint32_t)min(KC, p.in_dim - c * KC) * 2;
                mbar_wait(bar0 + 8 * (ST + s), ph ^ 1);
                if (lane == 0) mbar_arrive_expect_tx(bar0 + 8 * s, bytes * 8 * RT);
                bulk_load_1d(ring + (uint32_t)((s * 8 * RT + lane) * RS), row + (size_t)c * KC,
                             bytes, bar0 + 8 * s, policy);
                mbar_ring_next(s, ph, ST);
            }
        }
        return;
    }

    const bool has_x = g < p.n;
    const __nv_bfloat16 *xrow = p.x + (size_t)(has_x ? g : 0) * p.in_dim + 8 * t;
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    const float scale = NORM ? gemv_norm_scale<KW, true>(p, g) : 0.0f;
    __nv_bfloat16 *hrow = NORM && p.h_out && blockIdx.x == 0 && has_x
                              ? p.h_out + (size_t)g * p.in_dim + 8 * t
                              : nullptr;
    const uint4 zero = make_uint4(0, 0, 0, 0);
    const float *rf = reinterpret_cast<const float *>(red);
    int s = 0;
    uint32_t ph = 0;
    for (int it = blockIdx.x; it < items; it += gridDim.x) {
        const int j0 = it * 8 * OT;
        float acc[RT][4];
#pragma unroll
        for (int r = 0; r < RT; r++)
            acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = 0.0f;
        for (int c = 0; c < nst; c++) {
            mbar_wait(bar0 + 8 * s, ph);
            const uint8_t *st = gsm + (size_t)s * 8 * RT * RS;
            uint4 wv[U][RT], xv[U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int kk = (warp * U + u) * 32 + 8 * t, k = c * KC + kk;
                const bool in = k < p.in_dim;
#pragma unroll
                for (int r = 0; r < RT; r++)
                    wv[u][r] = in ? *reinterpret_cast<const uint4 *>(st + (size_t)(8 * r + g) * RS +
                                                                     2 * kk)
                                  : zero;
                xv[u] = in && has_x ? gemv_load_x(xrow + k - 8 * t) : zero;
                if (NORM) {
                    const gemv_gamma8 gm = in ? gemv_load_gamma(p.gamma + k) : gemv_gamma8{};
                    xv[u] = gemv_norm_chunk(xv[u], gm, scale);
                    if (hrow && in) *reinterpret_cast<uint4 *>(hrow + k - 8 * t) = xv[u];
                }
            }
            __syncwarp();
            if (lane == 0) mbar_arrive(bar0 + 8 * (ST + s));
            mbar_ring_next(s, ph, ST);
            gemv_mma_run<RT, U>(acc, xv, wv);
        }
        hrow = nullptr; /* h is whole after the first item */
#pragma unroll
        for (int r = 0; r < RT; r++)
            red[warp][r][g][t] = make_float2(acc[r][0], acc[r][1]);
        gemv_bar(true, KW);
        gemv_epilogue<KW, RT, 8>(p, rf, j0, KW * 32);
        gemv_bar(true, KW); /* red is free for the next item */
    }
}

struct gemv_variant {
    const char *name;
    int rt, kw, u;
    int pdl;    /* launched with programmatic dependent launch */
    int stages; /* gemv_bulk_kernel's ring (0: gemv_kernel) */
    void (*kernel)(const gemv_params);
    void (*norm_kernel)(const gemv_params); /* the NORM twin, or NULL (fg_gemv_norm refuses) */
};

#define GEMV_V(RT, KW, U)                                                                          \
    { "rt" #RT "_kw" #KW "_u" #U, RT, KW, U, 0, 0, gemv_kernel<RT, KW, U, false, false>, nullptr }
#define GEMV_VP(RT, KW, U)                                                                         \
    {                                                                                              \
        "rt" #RT "_kw" #KW "_u" #U "_pdl", RT, KW, U, 1, 0, gemv_kernel<RT, KW, U, false, false>,  \
            nullptr                                                                                \
    }
/* with a NORM twin: only PDL variants, since the fusion is for decode graphs */
#define GEMV_VPN(RT, KW, U)                                                                        \
    {                                                                                              \
        "rt" #RT "_kw" #KW "_u" #U "_pdl", RT, KW, U, 1, 0, gemv_kernel<RT, KW, U, false, false>,  \
            gemv_kernel<RT, KW, U, false, true>                                                    \
    }
#define GEMV_VPPN(RT, KW, U)                                                                       \
    {                                                                                              \
        "rt" #RT "_kw" #KW "_u" #U "_pipe_pdl", RT, KW, U, 1, 0,                                   \
            gemv_kernel<RT, KW, U, true, false>, gemv_kernel<RT, KW, U, true, true>                \
    }
#define GEMV_VB(RT, KW, U, ST)                                                                     \
    {                                                                                              \
        "bulk_rt" #RT "_kw" #KW "_u" #U "_st" #ST, RT, KW, U, 1, ST,                               \
            gemv_bulk_kernel<RT, KW, U, ST, false>, gemv_bulk_kernel<RT, KW, U, ST, true>          \
    }
/* Candidates for the measurement that sets fg_gemv_pick (see the header comment). */
static const gemv_variant gemv_variants[] = {
    GEMV_V(2, 8, 4),     GEMV_V(4, 8, 2),     GEMV_V(2, 4, 4),     GEMV_V(4, 4, 4),
    GEMV_V(1, 8, 4),     GEMV_V(2, 2, 2),     GEMV_V(2, 8, 8),     GEMV_V(1, 4, 8),
    GEMV_V(4, 2, 4),     GEMV_V(2, 4, 8),     GEMV_V(1, 16, 2),    GEMV_V(2, 16, 2),
    GEMV_VPN(2, 8, 4),   GEMV_VPPN(2, 8, 4),  GEMV_VP(1, 16, 2),   GEMV_VPPN(1, 16, 2),
    GEMV_VPN(1, 8, 4),   GEMV_VPPN(1, 8, 4),  GEMV_VP(2, 4, 8),    GEMV_VPPN(2, 4, 4),
    GEMV_VB(2, 8, 4, 3), GEMV_VB(2, 8, 2, 4), GEMV_VB(2, 8, 2, 6), GEMV_VB(4, 8, 2, 3),
};
#undef GEMV_VB
#undef GEMV_V
#undef GEMV_VP
#undef GEMV_VPN
#undef GEMV_VPPN
#define GEMV_N_VARIANTS (int)(sizeof(gemv_variants) / sizeof(gemv_variants[0]))

extern "C" int fg_gemv_supported(int n, int in_dim, int out_dim) {
    return n >= 1 && n <= FG_GEMV_MAX_ROWS && in_dim >= 8 && in_dim % 8 == 0 && out_dim >= 1;
}

extern "C" int fg_gemv_n_variants(void) {
    return GEMV_N_VARIANTS;
}

extern "C" const char *fg_gemv_variant_name(int v) {
    return v >= 0 && v < GEMV_N_VARIANTS ? gemv_variants[v].name : "";
}

/* Indices into gemv_variants of the variants fg_gemv_pick returns. */
enum {
    GEMV_PICK_PIPE = 13,       /* rt2_kw8_u4_pipe_pdl */
    GEMV_PICK_SHORT_ROWS = 18, /* rt2_kw4_u8_pdl */
    GEMV_PICK_BULK = 20,       /* bulk_rt2_kw8_u4_st3 */
};

/* The one selector: fg_gemv_supported's shapes, then the variant. The bulk kernel
 * (bulk_rt2_kw8_u4_st3: the chunks per warp, and so the bits, of rt2_kw8_u4_pipe_pdl) for rows of
 * 2048 and more in fewer than 16384 of them, from bench/results/gemv_bulk_bench_h200_2026-12-03.log
 * (H200, in a CUDA graph, n = 1): Llama-3-8B q|k|v 13.3 µs against 15.5, o 9.9 / 10.2, gate|up
 * 56.8 / 59.0, down 28.9 / 30.7 (n = 8 likewise); not for the lm_heads (49152 rows: 252 against
 * 247) nor SmolLM2's 576-wide rows (1.8-2.0 against 1.6-1.9). Before it, from the variants table of
 * bench/results/gemv_h100_2026-11-23.log (µs per call back to back in a CUDA graph, H100, n = 1
 * and 8): rt2_kw8_u4_pipe_pdl is the fastest at 11 of the 18 points outside the SmolLM2 lm_head
 * and within 6% of the fastest at the others (Llama-3-8B qkv 19.0 µs against 18.2); many rows
 * shorter than 2048 (SmolLM2 lm_head, 49152 × 576) go 15% faster with rt2_kw4_u8_pdl (20.1 µs
 * against 23.4), whose 4-warp blocks cover those short rows with fewer idle warps. */
extern "C" int fg_gemv_pick(int n, int in_dim, int out_dim, int epilogue) {
    if (!fg_gemv_supported(n, in_dim, out_dim) || epilogue < FG_GEMV_STORE ||
        epilogue > FG_GEMV_SWIGLU)
        return -1;
    if (in_dim < 2048 && out_dim >= 16384) return GEMV_PICK_SHORT_ROWS;
    if (in_dim >= 2048 && out_dim < 16384) return GEMV_PICK_BULK;
    return GEMV_PICK_PIPE;
}

/* Fills p and launches variant v (its NORM twin when norm); the shared checks of fg_gemv_variant
 * and fg_gemv_norm_variant. */
static int gemv_launch(int v, int norm, gemv_params p, const void *x, const void *w, int n,
                       int in_dim, int out_dim, int epilogue, void *stream) {
    if (v < 0 || v >= GEMV_N_VARIANTS || !fg_gemv_supported(n, in_dim, out_dim) ||
        epilogue < FG_GEMV_STORE || epilogue > FG_GEMV_SWIGLU ||
        ((uintptr_t)x | (uintptr_t)w | (uintptr_t)p.gamma | (uintptr_t)p.h_out) % 16 != 0)
        return (int)cudaErrorInvalidValue;
    const gemv_variant *vr = &gemv_variants[v];
    const int swiglu = epilogue == FG_GEMV_SWIGLU;
    void (*kernel)(const gemv_params) = norm ? vr->norm_kernel : vr->kernel;
    if ((swiglu && vr->rt % 2) || !kernel) return (int)cudaErrorInvalidValue;
    p.x = static_cast<const __nv_bfloat16 *>(x);
    p.w = static_cast<const __nv_bfloat16 *>(w);
    p.n = n;
    p.in_dim = in_dim;
    p.out_dim = out_dim;
    p.epilogue = epilogue;
    p.out_tiles = swiglu ? vr->rt / 2 : vr->rt;
    const int cols = 8 * p.out_tiles;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)((out_dim + cols - 1) / cols));
    cfg.blockDim = dim3((unsigned)(vr->kw * 32));
    cfg.stream = static_cast<cudaStream_t>(stream);
    cfg.attrs = attr;
    cfg.numAttrs = vr->pdl ? 1 : 0;
    if (vr->stages) { /* the bulk kernel: its producer warp, ring and persistent grid */
        cfg.blockDim = dim3((unsigned)((vr->kw + 1) * 32));
        cfg.dynamicSmemBytes = (size_t)vr->stages * 8 * vr->rt * GEMV_BULK_RS(vr->kw, vr->u);
        int dev = 0, sms = 0, per_sm = 0;
        cudaError_t e = cudaGetDevice(&dev);
        if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        if (e == cudaSuccess && cfg.dynamicSmemBytes > 48 * 1024)
            e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     (int)cfg.dynamicSmemBytes);
        if (e == cudaSuccess)
            e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, (int)cfg.blockDim.x,
                                                              cfg.dynamicSmemBytes);
        if (e != cudaSuccess) return (int)e;
        cfg.gridDim.x = (unsigned)min((int)cfg.gridDim.x, max(1, per_sm) * sms);
    }
    cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, p);
    return (int)(e != cudaSuccess ? e : cudaGetLastError());
}

extern "C" int fg_gemv_variant(int v, void *y, int y_f32, const void *x, const void *w, int n,
                               int in_dim, int out_dim, int epilogue, void *stream) {
    gemv_params p = {};
    p.y = y;
    p.y_f32 = y_f32 != 0;
    return gemv_launch(v, 0, p, x, w, n, in_dim, out_dim, epilogue, stream);
}

extern "C" int fg_gemv(void *y, int y_f32, const void *x, const void *w, int n, int in_dim,
                       int out_dim, int epilogue, void *stream) {
    int v = fg_gemv_pick(n, in_dim, out_dim, epilogue);
    if (v < 0) return (int)cudaErrorInvalidValue;
    return fg_gemv_variant(v, y, y_f32, x, w, n, in_dim, out_dim, epilogue, stream);
}

/* The fused kernel's variant: bulk_rt2_kw8_u4_st3
 * (bench/results/gemv_bulk_bench_h200_2026-12-03.log, H200, n = 1 / 8: Llama-3-8B q|k|v 15.3 / 19.8
 * µs against rt2_kw8_u4_pdl's 19.0 / 23.0, gate|up 58.9 / 65.5 against 63.9 / 72.8, SmolLM2 2.9-3.6
 * against 3.1-3.8 (n = 8 q|k|v 3.35 against 3.21): its grid norms x once per resident block instead
 * of once per block of 16 rows). Before it, rt2_kw8_u4_pdl: in the variants table of
 * bench/results/normgemv_h100_2026-11-23.log (µs per call back to back in a CUDA graph, H100,
 * n = 1 and 8) it is the fastest of the six NORM twins at 6 of the 8 points and within 1.4% of
 * the fastest at the other two (Llama-3-8B qkv: 20.95 / 24.04 µs against rt2_kw4_u4_pipe_pdl's
 * 20.67 / 23.80). fg_gemv's PIPE pick loses here (SmolLM2 qkv 3.23 µs against 2.66, Llama-3-8B
 * gate_up 80.65 against 79.59): with the norm it sits at the 128-register cap of its launch
 * bounds. The short-rows pick, rt2_kw4_u8_pdl, has no NORM twin: it spills with the norm, and the
 * shapes it serves (49152 × 576 lm_heads) do not follow a fused norm in the engine. */
extern "C" int fg_gemv_norm_pick(int n, int in_dim, int out_dim, int epilogue) {
    return fg_gemv_pick(n, in_dim, out_dim, epilogue) < 0 ? -1 : GEMV_PICK_BULK;
}

extern "C" int fg_gemv_norm_variant(int v, void *y, int y_f32, const void *x, const void *gamma,
                                    float eps, void *h_out, const void *w, int n, int in_dim,
                                    int out_dim, int epilogue, void *stream) {
    if (!gamma) return (int)cudaErrorInvalidValue;
    gemv_params p = {};
    p.y = y;
    p.y_f32 = y_f32 != 0;
    p.gamma = static_cast<const float *>(gamma);
    p.h_out = static_cast<__nv_bfloat16 *>(h_out);
    p.eps = eps;
    return gemv_launch(v, 1, p, x, w, n, in_dim, out_dim, epilogue, stream);
}

extern "C" int fg_gemv_norm(void *y, int y_f32, const void *x, const void *gamma, float eps,
                            void *h_out, const void *w, int n, int in_dim, int out_dim,
                            int epilogue, void *stream) {
    int v = fg_gemv_norm_pick(n, in_dim, out_dim, epilogue);
    if (v < 0) return (int)cudaErrorInvalidValue;
    return fg_gemv_norm_variant(v, y, y_f32, x, gamma, eps, h_out, w, n, in_dim, out_dim, epilogue,
                                stream);
}

/* The unfused baseline of the benchmark: the engine's k_rmsnorm (kernels/cuda_ops.cu, which is
 * not part of the test library) with its launch shape, one block per row, no PDL. */
__global__ void gemv_bench_rmsnorm_kernel(__nv_bfloat16 *out, const __nv_bfloat16 *x,
                                          const float *w, int dim, float eps) {
    __shared__ float warp_sums[32];
    const __nv_bfloat16 *xr = x + (size_t)blockIdx.x * dim;
    __nv_bfloat16 *o = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = __bfloat162float(xr[i]);
        ss += v * v;
    }
    for (int off = 16; off > 0; off >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, off);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        const int n_warps = (blockDim.x + 31) >> 5;
        float v = threadIdx.x < n_warps ? warp_sums[threadIdx.x] : 0.0f;
        for (int off = 16; off > 0; off >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, off);
        if (threadIdx.x == 0) warp_sums[0] = v;
    }
    __syncthreads();
    const float inv = rsqrtf(warp_sums[0] / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        o[i] = __float2bfloat16(__bfloat162float(xr[i]) * inv * w[i]);
}

extern "C" int fg_gemv_bench_rmsnorm(void *out, const void *x, const void *gamma, float eps, int n,
                                     int dim, void *stream) {
    if (n < 1 || dim < 1) return (int)cudaErrorInvalidValue;
    const int threads = dim >= 1024 ? 1024 : (dim + 31) / 32 * 32;
    gemv_bench_rmsnorm_kernel<<<n, threads, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<__nv_bfloat16 *>(out), static_cast<const __nv_bfloat16 *>(x),
        static_cast<const float *>(gamma), dim, eps);
    return (int)cudaGetLastError();
}
