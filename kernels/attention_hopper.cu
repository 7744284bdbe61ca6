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
#include "attention_wgmma.cuh"

/* Byte offset of (row, col) in a 128-byte-swizzled tile of ROWS rows (col a multiple of 2). */
template <int ROWS> __device__ __forceinline__ uint32_t hop_off(int row, int col) {
    return (uint32_t)((((col >> 6) * ROWS + row) << 7) + ((((col >> 3) & 7) ^ (row & 7)) << 4) +
                      ((col & 7) << 1));
}

/* Calls f(row, ch) for every 16-byte chunk ch of the ROWS × HD tile, NT threads (thread tid). */
template <int HD, int ROWS, int NT, typename F>
__device__ __forceinline__ void hop_for_chunks(int tid, F &&f) {
    constexpr int CPR = HD / 8, TOTAL = ROWS * CPR;
#pragma unroll
    for (int i = 0; i < (TOTAL + NT - 1) / NT; i++) {
        int c = tid + i * NT;
        if (TOTAL % NT != 0 && c >= TOTAL) break;
        f(c / CPR, c % CPR);
    }
}

/* How hop_load_kv_paged finds a key's page: kv_row_offset per chunk, or decided once per tile:
 * shifts for power-of-two pages (the server's case), division otherwise. */
enum hop_paging { HOP_PAGING_CHUNK, HOP_PAGING_POW2, HOP_PAGING_DIV };

template <typename T, int HD, int ROWS, int NT, int PAGING>
__device__ __forceinline__ void hop_load_kv_paged(uint32_t dst, const T *pool,
                                                  const attn_kparams &p, const int *bt, int key0,
                                                  int key_end, int kvh, int tid) {
    hop_for_chunks<HD, ROWS, NT>(tid, [&](int row, int ch) {
        int key = key0 + row;
        bool valid = key < key_end;
        size_t off = 0;
        if (valid) {
            if constexpr (PAGING == HOP_PAGING_CHUNK) {
                off = kv_row_offset<HD>(bt, key, p.page_size, p.page_shift, p.n_kv_heads, kvh) +
                      ch * 8;
            } else {
                constexpr bool POW2 = PAGING == HOP_PAGING_POW2;
                int page = POW2 ? __ldg(bt + (key >> p.page_shift)) : __ldg(bt + key / p.page_size);
                int prow = POW2 ? key & (p.page_size - 1) : key % p.page_size;
                off = (((size_t)page * p.page_size + prow) * p.n_kv_heads + kvh) * HD + ch * 8;
            }
        }
        cp_async16(dst + hop_off<ROWS>(row, ch * 8), pool + off, valid);
    });
}

/* ROWS K or V rows starting at key0 into the swizzled tile at dst; keys ≥ key_end are zeros.
 * once (a constant at every call): the page-table arithmetic is decided once per tile instead of
 * per chunk. */
template <typename T, int HD, int ROWS, int NT>
__device__ __forceinline__ void hop_load_kv(uint32_t dst, const T *pool, const attn_kparams &p,
                                            const int *bt, int key0, int key_end, int kvh, int tid,
                                            bool once) {
    if (!once)
        hop_load_kv_paged<T, HD, ROWS, NT, HOP_PAGING_CHUNK>(dst, pool, p, bt, key0, key_end, kvh,
                                                             tid);
    else if (p.page_shift >= 0)
        hop_load_kv_paged<T, HD, ROWS, NT, HOP_PAGING_POW2>(dst, pool, p, bt, key0, key_end, kvh,
                                                            tid);
    else
        hop_load_kv_paged<T, HD, ROWS, NT, HOP_PAGING_DIV>(dst, pool, p, bt, key0, key_end, kvh,
                                                           tid);
}

/* S = Q Kᵀ for the warpgroup's 64 rows (sq: its first row in the BM-row Q tile) over BN keys. */
template <typename T, int HD, int BM, int BN>
__device__ __forceinline__ void hop_qk(float *s, uint32_t sq, uint32_t sk) {
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        uint64_t da = wgmma_desc(sq + (kk >> 2) * BM * 128 + (kk & 3) * 32, 16, 1024);
        uint64_t db = wgmma_desc(sk + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024);
        hop_mma<T, BN>::ss(s, da, db, kk > 0);
    }
}

/* O += P V over BN keys; P as A fragments (one per 16 keys). */
template <typename T, int HD, int BN>
__device__ __forceinline__ void hop_pv(float *o, const uint32_t (&pa)[BN / 16][4], uint32_t sv) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++)
        hop_mma<T, HD>::rs_t(o, pa[kk], wgmma_desc(sv + kk * 16 * 128, BN * 128, 1024), 1);
}

/* Online softmax of one S tile for this thread's rows g and g+8 (index 0 and 1): masks keys
 * ≥ lim (when mask), updates the running max m (exp2 domain) and sum l, leaves P = exp2(...) in s
 * and the factor that rescales the old O in alpha. l is the thread's partial sum (quad-reduced at
 * the end). */
template <int BN>
__device__ __forceinline__ void hop_softmax(float *s, float (&m)[2], float (&l)[2],
                                            float (&alpha)[2], float scale_log2, int key0,
                                            const int (&lim)[2], bool mask, int t) {
    if (mask) {
#pragma unroll
        for (int i = 0; i < BN / 8; i++) {
            int key = key0 + i * 8 + 2 * t;
            if (key >= lim[0]) s[4 * i] = FG_NEG_INF;
            if (key + 1 >= lim[0]) s[4 * i + 1] = FG_NEG_INF;
            if (key >= lim[1]) s[4 * i + 2] = FG_NEG_INF;
            if (key + 1 >= lim[1]) s[4 * i + 3] = FG_NEG_INF;
        }
    }
    float mx[2] = {FG_NEG_INF, FG_NEG_INF};
#pragma unroll
    for (int i = 0; i < BN / 8; i++) {
        mx[0] = fmaxf(mx[0], fmaxf(s[4 * i], s[4 * i + 1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[4 * i + 2], s[4 * i + 3]));
    }
    float mu[2], rs[2] = {0.f, 0.f};
#pragma unroll
    for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        float mn = fmaxf(m[r], mx[r] * scale_log2);
        /* A row with every key masked so far keeps m = -inf; subtract 0 to avoid inf - inf. */
        mu[r] = mn == FG_NEG_INF ? 0.f : mn;
        alpha[r] = fast_exp2(m[r] - mu[r]);
        m[r] = mn;
    }
#pragma unroll
    for (int i = 0; i < BN / 8; i++) {
        s[4 * i] = fast_exp2(fmaf(s[4 * i], scale_log2, -mu[0]));
        s[4 * i + 1] = fast_exp2(fmaf(s[4 * i + 1], scale_log2, -mu[0]));
        s[4 * i + 2] = fast_exp2(fmaf(s[4 * i + 2], scale_log2, -mu[1]));
        s[4 * i + 3] = fast_exp2(fmaf(s[4 * i + 3], scale_log2, -mu[1]));
        rs[0] += s[4 * i] + s[4 * i + 1];
        rs[1] += s[4 * i + 2] + s[4 * i + 3];
    }
    l[0] = l[0] * alpha[0] + rs[0];
    l[1] = l[1] * alpha[1] + rs[1];
}

/* P (fp32 in s) → A fragments of the P·V wgmma: 16 keys = 8-column blocks 2kk and 2kk+1. */
template <typename T, int BN>
__device__ __forceinline__ void hop_pack_p(uint32_t (&pa)[BN / 16][4], const float *s) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
        pa[kk][0] = attn_type<T>::pack(s[8 * kk], s[8 * kk + 1]);
        pa[kk][1] = attn_type<T>::pack(s[8 * kk + 2], s[8 * kk + 3]);
        pa[kk][2] = attn_type<T>::pack(s[8 * kk + 4], s[8 * kk + 5]);
        pa[kk][3] = attn_type<T>::pack(s[8 * kk + 6], s[8 * kk + 7]);
    }
}

template <typename T, int HD, int BN, int NWG, int V, int MINB>
__global__ void __launch_bounds__(NWG * 128, MINB) attn_hopper_kernel(const attn_kparams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int BM = NWG * 64, NT = NWG * 128;
    /* V (timed in bench/results/prefill2_h100_2026-11-23.log): 1 = loads issued before the MMAs; 2
     * = MMAs issued first, the next tiles' loads after them (page arithmetic decided once per
     * tile); 3 = 2 plus ping-pong: warpgroups take turns to issue their MMAs (named barriers), so
     * one's softmax can run under the others' MMAs. Measured: 3 within ±4% of 1 at equal tiles. The
     * softmax of S(j-1) does not overlap P(j)·V(j) inside a warpgroup: whatever the PTX order,
     * ptxas places the P·V wait before the first read of S (reading a wgmma accumulator inside a
     * pipeline stage; forcing it with a branch makes ptxas serialise every wgmma, C7514). */
    constexpr bool LATE = V >= 2, PP = V == 3 && NWG > 1;
    constexpr uint32_t Q_BYTES = BM * HD * 2, KV_BYTES = BN * HD * 2;
    extern __shared__ __align__(1024) unsigned char hop_smem[];
    /* Swizzled tiles need 1024-byte alignment; the launcher adds 1 KB of slack. */
    const uint32_t raw = smem_u32(hop_smem), base = (raw + 1023u) & ~1023u;
    const uint32_t sQ = base, sK = sQ + Q_BYTES, sV = sK + 2 * KV_BYTES; /* K, V: 2 stages */

    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    const int s = blockIdx.z, kvh = blockIdx.y, G = p.group;
    const int q0 = p.q_start[s], nq = p.q_start[s + 1] - q0, rows = nq * G;
    const int r0 = (gridDim.x - 1 - blockIdx.x) * BM;
    if (r0 >= rows) return;
    const int kvlen = p.kv_len[s], pos0 = kvlen - nq;
    const int *bt = p.block_table + (size_t)s * p.max_pages;
    const T *qg = static_cast<const T *>(p.q);
    const T *kp = static_cast<const T *>(p.k);
    const T *vp = static_cast<const T *>(p.v);
    /* Packed row gr as a (token, head) row of q, out and lse. */
    auto qrow = [&](int gr) { return (size_t)(q0 + gr / G) * p.n_heads + kvh * G + gr % G; };

    int kv_end = kvlen;
    if (p.causal) kv_end = min(kvlen, pos0 + (min(r0 + BM, rows) - 1) / G + 1);
    const int n_tiles = kv_end > 0 ? (kv_end + BN - 1) / BN : 0;
    /* Keys ≥ lim[i] are masked for this thread's rows; tiles reaching past min_lim need masks. */
    const int trow = wg * 64 + warp * 16 + g; /* the thread's first row in the tile */
    int lim[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int gr = r0 + trow + 8 * i;
        lim[i] = p.causal ? min(kvlen, pos0 + gr / G + 1) : kvlen;
    }
    const int min_lim = p.causal ? min(kvlen, pos0 + r0 / G + 1) : kvlen;

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
     * once as in hop_load_kv. */
    auto load_vk = [&](int j, bool once) {
        hop_load_kv<T, HD, BN, NT>(sV + ((j - 1) & 1) * KV_BYTES, vp, p, bt, (j - 1) * BN, kv_end,
                                   kvh, tid, once);
        if (j >= 2)
            hop_load_kv<T, HD, BN, NT>(sK + (j & 1) * KV_BYTES, kp, p, bt, (j - 2) * BN, kv_end,
                                       kvh, tid, once);
    };
    /* Iteration j ≥ 1: S(j-1) and P(j)·V(j) with P(j) in pc; leaves P(j-1) in pc. */
    auto step = [&](auto &pc, int j) {
        if (!LATE) {
            load_vk(j, false);
            cp_async_commit();
        }
        if (PP) named_bar_sync(1 + wg, 256);
        wgmma_hold<HD / 2>(o);
        wgmma_hold<BN / 4>(&pc[0][0]);
        wgmma_fence();
        hop_qk<T, HD, BM, BN>(sc, sq, sK + ((j - 1) & 1) * KV_BYTES);
        wgmma_commit();
        /* A fence per group: ptxas treats the wgmma's after one fence as one stage. */
        if (LATE) wgmma_fence();
        hop_pv<T, HD, BN>(o, pc, sV + (j & 1) * KV_BYTES);
        wgmma_commit();
        if (PP && !(wg == NWG - 1 && j == 1)) named_bar_arrive(1 + (wg + 1) % NWG, 256);
        if (LATE) { /* the stages these fill are read by no MMA of this iteration */
            load_vk(j, true);
            cp_async_commit();
        }
        wgmma_wait<1>(); /* S(j-1) done; P(j)·V(j) may still run */
        wgmma_hold<BN / 2>(sc);
        hop_softmax<BN>(sc, m, l, alpha, p.scale_log2, (j - 1) * BN, lim, j * BN > min_lim, t);
        if (LATE) { /* keeps the PTX order softmax → wait; ptxas still hoists the wait (see V) */
            wgmma_hold<BN / 2>(sc);
            wgmma_hold<2>(m);
            wgmma_hold<2>(l);
            wgmma_hold<2>(alpha);
        }
        wgmma_wait<0>();
        wgmma_hold<HD / 2>(o);
        if (LATE)
            wgmma_keep<BN / 4>(&pc[0][0]); /* pc stays allocated until P·V is done */
        else
            wgmma_hold<BN / 4>(&pc[0][0]);
#pragma unroll
        for (int i = 0; i < HD / 8; i++) {
            o[4 * i] *= alpha[0];
            o[4 * i + 1] *= alpha[0];
            o[4 * i + 2] *= alpha[1];
            o[4 * i + 3] *= alpha[1];
        }
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
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
    __syncthreads(); /* no wgmma of any warpgroup reads the Q tile any more */
    const float inv[2] = {l[0] > 0.f ? 1.f / l[0] : 0.f, l[1] > 0.f ? 1.f / l[1] : 0.f};
#pragma unroll
    for (int i = 0; i < HD / 8; i++) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            uint32_t v =
                attn_type<T>::pack(o[4 * i + 2 * r] * inv[r], o[4 * i + 2 * r + 1] * inv[r]);
            asm volatile(
                "st.shared.b32 [%0], %1;\n" ::"r"(sQ + hop_off<BM>(trow + 8 * r, 8 * i + 2 * t)),
                "r"(v)
                : "memory");
        }
    }
    if (p.lse && t == 0) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int gr = r0 + trow + 8 * r;
            if (gr < rows)
                p.lse[qrow(gr)] = l[r] > 0.f ? (m[r] + __log2f(l[r])) * 0.69314718056f : FG_NEG_INF;
        }
    }
    __syncthreads();
    T *out = static_cast<T *>(p.out);
    hop_for_chunks<HD, BM, NT>(tid, [&](int row, int ch) {
        int gr = r0 + row;
        if (gr >= rows) return;
        uint4 v;
        asm volatile("ld.shared.v4.b32 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "r"(sQ + hop_off<BM>(row, ch * 8)));
        *reinterpret_cast<uint4 *>(out + qrow(gr) * HD + ch * 8) = v;
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

template <typename T, int HD, int BN, int NWG, int V, int MINB>
static int hop_launch(const struct attn_args *a, char *err, size_t errlen) {
    constexpr int BM = NWG * 64;
    const struct attn_batch *b = &a->b;
    attn_kparams p = attn_prefill_kparams(a);
    size_t smem = (size_t)(BM + 4 * BN) * HD * sizeof(T) + 1024;
    cudaError_t e = cudaFuncSetAttribute(attn_hopper_kernel<T, HD, BN, NWG, V, MINB>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) /* let several blocks share an SM where registers allow */
        e = cudaFuncSetAttribute(attn_hopper_kernel<T, HD, BN, NWG, V, MINB>,
                                 cudaFuncAttributePreferredSharedMemoryCarveout,
                                 cudaSharedmemCarveoutMaxShared);
    if (e == cudaSuccess) {
        dim3 grid((unsigned)((b->max_q_len * p.group + BM - 1) / BM), (unsigned)b->n_kv_heads,
                  (unsigned)b->n_seqs);
        attn_hopper_kernel<T, HD, BN, NWG, V, MINB>
            <<<grid, NWG * 128, smem, static_cast<cudaStream_t>(a->stream)>>>(p);
        e = cudaGetLastError();
    }
    if (e != cudaSuccess) {
        snprintf(err, errlen, "attention prefill (hopper) launch: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

/* One launcher per row of ATTN_HOPPER_CONFIGS (attention_hopper.cuh): the tile shapes and the
 * version V of the kernel's comment. */
#define HOP(NAME, T, HD, BN, NWG, V, MINB)                                                         \
    int NAME(const struct attn_args *a, char *err, size_t errlen) {                                \
        return hop_launch<T, HD, BN, NWG, V, MINB>(a, err, errlen);                                \
    }
ATTN_HOPPER_CONFIGS(HOP)
