/* attention_hopper.cu — the Hopper (sm_90a) prefill attention kernel over the paged KV-cache:
 * FlashAttention forward with warpgroup MMAs (wgmma), chosen by the selector of attention.cu on
 * compute capability 9.0; the mma.sync kernel of attention.cu stays the fallback elsewhere.
 *
 * Design (same contract and row packing as attention.cu's kernel: one block per (tile of BM packed
 * query rows, KV head, sequence), packed row r = query token r / G of head kvh·G + r % G):
 * - NWG warpgroups of 128 threads, each owning 64 packed rows; BM = 64·NWG. No producer warp:
 *   every thread loads, every warpgroup computes.
 * - S = Q Kᵀ is one chain of HD/16 wgmma m64nBNk16 with Q and K both read from shared memory
 *   (128-byte swizzled tiles, kernels/attention_wgmma.cuh); P stays in registers as the A operand
 *   of O += P V (wgmma m64nHDk16, V read MN-major through the descriptor: no transpose pass).
 * - Iteration j issues S(j-1) and P(j)·V(j) together, then runs the online softmax of S(j-1) and
 *   rescales O. K and V tiles have two stages each, loaded with 16-byte cp.async through the page
 *   table (any page size; rows past the causal/sequence end zero-filled): V(j-1) and K(j-2) load
 *   while iteration j computes; one __syncthreads per iteration hands the stages over.
 * - Tiles run from the last to the first, so the causal and end-of-sequence masks touch only the
 *   first tiles; fully masked tiles are never visited. Blocks go heaviest-first.
 * - Epilogue: O / l goes through shared memory (the Q tile's space) so the global stores are
 *   16-byte and row-contiguous; LSE = ln(sum exp(scale q·k)) when asked for.
 * Tile shapes and versions: ATTN_HOPPER_CONFIGS in attention_hopper.cuh; timings in
 * bench/results/prefill2_h100_2026-11-23.log (run B).
 */
#include <cuda_runtime.h>
#include <stdio.h>

#include "attention_hopper.cuh"
#include "attention_hopper_parts.cuh"

template <typename T, int HD, int BN, int NWG, int MINB>
__global__ void __launch_bounds__(NWG * 128, MINB) attn_hopper_kernel(const attn_kparams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int BM = NWG * 64, NT = NWG * 128;
    /* MMAs are issued first and the next tiles' loads after them (page arithmetic decided once
     * per tile); warpgroups take turns to issue their MMAs (ping-pong, named barriers), so one's
     * softmax can run under the others' MMAs. The versions timed against this one (loads before
     * the MMAs, no ping-pong: within ±4%) are in kernels/BENCH.md, history. The softmax of S(j-1)
     * does not overlap P(j)·V(j) inside a warpgroup: whatever the PTX order, ptxas places the P·V
     * wait before the first read of S (reading a wgmma accumulator inside a pipeline stage; forcing
     * it with a branch makes ptxas serialise every wgmma, C7514). */
    constexpr bool PP = NWG > 1;
    constexpr uint32_t Q_BYTES = BM * HD * 2, KV_BYTES = BN * HD * 2;
    extern __shared__ __align__(1024) unsigned char hop_smem[];
    /* Swizzled tiles need 1024-byte alignment; the launcher adds 1 KB of slack. */
    const uint32_t raw = smem_u32(hop_smem), base = (raw + 1023u) & ~1023u;
    const uint32_t sQ = base, sK = sQ + Q_BYTES, sV = sK + 2 * KV_BYTES; /* K, V: 2 stages */

    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    attn_tile w;
    if (!attn_tile_at(w, p, blockIdx.z, blockIdx.y, (gridDim.x - 1 - blockIdx.x) * BM, BM)) return;
    const int kvh = w.kvh, rows = w.rows, r0 = w.r0, kv_end = w.kv_end;
    const int *bt = w.bt;
    const T *qg = static_cast<const T *>(p.q);
    const T *kp = static_cast<const T *>(p.k);
    const T *vp = static_cast<const T *>(p.v);
    auto qrow = [&](int gr) { return w.qrow(p, gr); };

    const int n_tiles = kv_end > 0 ? (kv_end + BN - 1) / BN : 0;
    /* Keys ≥ lim[i] are masked for this thread's rows; tiles reaching past min_lim need masks. */
    const int trow = wg * 64 + warp * 16 + g; /* the thread's first row in the tile */
    const int lim[2] = {w.key_limit(p, r0 + trow), w.key_limit(p, r0 + trow + 8)};
    const int min_lim = w.key_limit(p, r0);

    /* Prologue: group 0 = Q and K(n-1); group 1 = V(n-1) and K(n-2). */
    hop_for_chunks<HD, BM, NT>(tid, [&](int row, int ch) {
        int gr = r0 + row;
        bool valid = gr < rows;
        const T *src = qg;
        if (valid) src = qg + qrow(gr) * HD + ch * 8;
        cp_async16(sQ + hop_off<BM>(row, ch * 8), src, valid);
    });
    const int n = n_tiles;
    if (n > 0)
        hop_load_kv<T, HD, BN, NT>(sK + ((n - 1) & 1) * KV_BYTES, kp, p, bt, (n - 1) * BN, kv_end,
                                   kvh, tid, false);
    cp_async_commit();
    if (n > 0)
        hop_load_kv<T, HD, BN, NT>(sV + ((n - 1) & 1) * KV_BYTES, vp, p, bt, (n - 1) * BN, kv_end,
                                   kvh, tid, false);
    if (n > 1)
        hop_load_kv<T, HD, BN, NT>(sK + ((n - 2) & 1) * KV_BYTES, kp, p, bt, (n - 2) * BN, kv_end,
                                   kvh, tid, false);
    cp_async_commit();

    float o[HD / 2], sc[BN / 2], m[2] = {FG_NEG_INF, FG_NEG_INF}, l[2] = {0.f, 0.f}, alpha[2];
    uint32_t pa[BN / 16][4];
#pragma unroll
    for (int i = 0; i < HD / 2; i++)
        o[i] = 0.f;
    const uint32_t sq = sQ + wg * 64 * 128;

    if (n > 0) {
        cp_async_wait<1>();
        fence_proxy_async();
        __syncthreads();
        wgmma_fence();
        hop_qk<T, HD, BM, BN>(sc, sq, sK + ((n - 1) & 1) * KV_BYTES);
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_hold<BN / 2>(sc);
        hop_softmax<BN>(sc, m, l, alpha, p.scale_log2, (n - 1) * BN, lim, n * BN > min_lim, t);
        hop_pack_p<T, BN>(pa, sc);
    }

    /* Iterations j = n-1 .. 1 issue S(j-1) and P(j)·V(j); the last P(0)·V(0) is peeled off so that
     * every wgmma of the loop body is unconditional (ptxas serialises wgmma's across branches). */
    /* Ping-pong: warpgroup w issues after w-1 (barrier 1 + w, 256 threads); warpgroup 0 after the
     * last one's previous turn, so the last one opens the first turn and skips its final arrive. */
    if (PP && n >= 2 && wg == NWG - 1) named_bar_arrive(1, 256);
    /* Top of every iteration. Pending: V(j), K(j-1); after the barrier nobody reads K(j) or V(j+1)
     * any more. */
    auto top = [&]() {
        cp_async_wait<0>();
        fence_proxy_async();
        __syncthreads();
    };
    /* The tiles iteration j-1 reads: V(j-1) and, for j ≥ 2, K(j-2) (tile i lives in stage i & 1);
     * the page arithmetic decided once per tile (hop_load_kv). */
    auto load_vk = [&](int j) {
        hop_load_kv<T, HD, BN, NT>(sV + ((j - 1) & 1) * KV_BYTES, vp, p, bt, (j - 1) * BN, kv_end,
                                   kvh, tid, true);
        if (j >= 2)
            hop_load_kv<T, HD, BN, NT>(sK + (j & 1) * KV_BYTES, kp, p, bt, (j - 2) * BN, kv_end,
                                       kvh, tid, true);
    };
    /* Iteration j ≥ 1: S(j-1) and P(j)·V(j) with P(j) in pc; leaves P(j-1) in pc. */
    auto step = [&](auto &pc, int j) {
        if (PP) named_bar_sync(1 + wg, 256);
        wgmma_hold<HD / 2>(o);
        wgmma_hold<BN / 4>(&pc[0][0]);
        wgmma_fence();
        hop_qk<T, HD, BM, BN>(sc, sq, sK + ((j - 1) & 1) * KV_BYTES);
        wgmma_commit();
        /* A fence per group: ptxas treats the wgmma's after one fence as one stage. */
        wgmma_fence();
        hop_pv<T, HD, BN>(o, pc, sV + (j & 1) * KV_BYTES);
        wgmma_commit();
        if (PP && !(wg == NWG - 1 && j == 1)) named_bar_arrive(1 + (wg + 1) % NWG, 256);
        load_vk(j); /* the stages these fill are read by no MMA of this iteration */
        cp_async_commit();
        wgmma_wait<1>(); /* S(j-1) done; P(j)·V(j) may still run */
        wgmma_hold<BN / 2>(sc);
        hop_softmax<BN>(sc, m, l, alpha, p.scale_log2, (j - 1) * BN, lim, j * BN > min_lim, t);
        hop_wait_pv<HD, BN>(o, pc, sc, m, l, alpha);
        hop_rescale<HD>(o, alpha);
        hop_pack_p<T, BN>(pc, sc);
    };
    /* P(0)·V(0); the last top() waited for V(0). */
    auto last_pv = [&](auto &pc) {
        wgmma_hold<HD / 2>(o);
        wgmma_hold<BN / 4>(&pc[0][0]);
        wgmma_fence();
        hop_pv<T, HD, BN>(o, pc, sV);
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_hold<HD / 2>(o);
    };
    for (int j = n - 1; j >= 0; j--) {
        top();
        if (j == 0) break;
        step(pa, j);
    }
    if (n > 0) last_pv(pa);

    /* Epilogue: O / l → the Q tile's shared memory (each warpgroup its own rows) → global. */
    cp_async_wait<0>(); /* with no K/V tile (kv_end = 0) the Q load may still be in flight */
    __syncthreads();    /* no wgmma of any warpgroup reads the Q tile any more */
    hop_stage_o<T, HD, BM>(sQ, o, l, m, trow, t, [&](int tr, float v) {
        if (p.lse && r0 + tr < rows) p.lse[qrow(r0 + tr)] = v;
    });
    __syncthreads();
    hop_store_o<T, HD, BM, BM, NT>(sQ, tid, 0, [&](int tr) -> T * {
        return r0 + tr < rows ? static_cast<T *>(p.out) + qrow(r0 + tr) * HD : nullptr;
    });
#else
    (void)p; /* compute_90 PTX fallback: never selected (attn_hopper_available() is 0 there) */
#endif
}

int attn_hopper_available(void) {
    int dev, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: leave no error for the next launch check */
        return 0;
    }
    return major == 9 && minor == 0;
}

template <typename T, int HD, int BN, int NWG, int MINB>
static int hop_launch(const struct attn_args *a, char *err, size_t errlen) {
    constexpr int BM = NWG * 64;
    const struct attn_batch *b = &a->b;
    attn_kparams p = attn_prefill_kparams(a);
    size_t smem = (size_t)(BM + 4 * BN) * HD * sizeof(T) + 1024;
    cudaError_t e = attn_allow_smem(attn_hopper_kernel<T, HD, BN, NWG, MINB>, smem);
    if (e == cudaSuccess) {
        dim3 grid((unsigned)((b->max_q_len * p.group + BM - 1) / BM), (unsigned)b->n_kv_heads,
                  (unsigned)b->n_seqs);
        attn_hopper_kernel<T, HD, BN, NWG, MINB>
            <<<grid, NWG * 128, smem, static_cast<cudaStream_t>(a->stream)>>>(p);
        e = cudaGetLastError();
    }
    if (e != cudaSuccess) {
        snprintf(err, errlen, "attention prefill (hopper) launch: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

/* One launcher per row of ATTN_HOPPER_CONFIGS (attention_hopper.cuh). */
#define HOP(NAME, T, HD, BN, NWG, MINB)                                                            \
    int NAME(const struct attn_args *a, char *err, size_t errlen) {                                \
        return hop_launch<T, HD, BN, NWG, MINB>(a, err, errlen);                                   \
    }
ATTN_HOPPER_CONFIGS(HOP)
