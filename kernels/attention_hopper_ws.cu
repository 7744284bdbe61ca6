/* attention_hopper_ws.cu — the warp-specialised, persistent Hopper (sm_90a) prefill kernel, the
 * default on sm_90: the same FlashAttention forward over the paged KV-cache as
 * attention_hopper.cu (same contract, row packing, MMAs and softmax:
 * kernels/attention_hopper_parts.cuh), organised as FlashAttention-3 organises it.
 *
 * - One block per SM, looping over work items (tile of BM packed query rows, KV head, sequence),
 *   heaviest tiles first. Warpgroup 0 is the producer and gives most of its registers to the NC
 *   consumer warpgroups of 64 rows each (setmaxnreg).
 * - Producer warp 0 moves K and V by TMA: one 3-D tensor map per pool (head dim, KV head, pool
 *   row), boxes of gcd(BN, page size) keys, each inside one page, addressed through the page
 *   table; 128-byte swizzled by the copy engine into the layout the MMAs read. Producer warps 1-3
 *   copy the next item's Q tile with cp.async (any GQA group size, rows past the end zero-filled).
 *   Measured (kernels/BENCH.md, run 7): the same producer with cp.async for K/V ran at 0.65× the
 *   all-threads-load kernel; with TMA, 1.1–1.5× it.
 * - Hand-over by mbarriers, never __syncthreads: K and V each have S stages with a "full" barrier
 *   (TMA bytes) and an "empty" one (each consumer warp arrives once its MMA no longer reads the
 *   stage); the Q tile has one pair, so Q of the next item loads while the consumers finish the
 *   current one. Consumers are never held in step with the loads.
 * - Consumer iteration: S(j-1) = Q K(j-1)ᵀ and O += P(j) V(j) issued together, then the online
 *   softmax of S(j-1) and the rescale. ptxas places the P·V wait before the softmax here too (see
 *   attention_hopper.cu), so the overlap comes from the other consumer: with PP they take turns to
 *   issue their MMAs (named barriers), and one's softmax runs under the other's MMAs.
 * - Epilogue: O / l through a staging tile of its own (the Q tile is being refilled) so the
 *   global stores are 16-byte and row-contiguous (measured 1–5% ahead of direct 4-byte stores).
 */
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>
#include <stdio.h>

#include <type_traits>

#include "attention_hopper.cuh"
#include "attention_hopper_parts.cuh"

/* Registers per thread after the split: the producer keeps HWS_PRODUCER_REGS; the consumers share
 * the rest of the SM's 64K (a multiple of 8). */
#define HWS_PRODUCER_REGS 72
#define HWS_Q_THREADS 96 /* producer warps 1-3 */
template <int NC> constexpr int hws_consumer_regs() {
    return ((65536 - 128 * HWS_PRODUCER_REGS) / (NC * 128)) & ~7;
}

/* Work item → tile; identical in producer and consumers, so both skip the same empty items.
 * Items run from the last query tile (the most keys when causal) to the first. */
__device__ __forceinline__ bool hws_item(attn_tile &w, const attn_kparams &p, int item,
                                         int n_qtiles, int n_seqs, int bm) {
    const int per = p.n_kv_heads * n_seqs, rest = item % per;
    const int qt = n_qtiles - 1 - item / per;
    return attn_tile_at(w, p, rest / p.n_kv_heads, rest % p.n_kv_heads, qt * bm, bm);
}

/* The Q tile's copy into swizzled shared memory by the producer's NT copying threads: thread tid
 * moves chunk tid % (HD / 8) of every (NT / (HD / 8))-th row; row(r) is the source row or null
 * for zeros. A rolled loop: the producer runs on HWS_PRODUCER_REGS registers. */
template <typename T, int HD, int ROWS, int NT, typename F>
__device__ __forceinline__ void hws_copy(uint32_t dst, int tid, const T *any, F &&row) {
    constexpr int CPR = HD / 8;
    const int ch = tid % CPR;
#pragma unroll 1
    for (int r = tid / CPR; r < ROWS; r += NT / CPR) {
        const T *src = row(r);
        cp_async16(dst + hop_off<ROWS>(r, ch * 8), src ? src + ch * 8 : any, src != nullptr);
    }
}

template <typename T, int HD, int BN, int NC, int S, bool PP>
__global__ void __launch_bounds__((NC + 1) * 128, 1)
    attn_hws_kernel(const attn_kparams p, const int n_qtiles, const int n_seqs, const int box,
                    const __grid_constant__ CUtensorMap tk,
                    const __grid_constant__ CUtensorMap tv) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int BM = NC * 64;
    constexpr uint32_t Q_BYTES = BM * HD * 2, KV_BYTES = BN * HD * 2;
    extern __shared__ __align__(1024) unsigned char hws_smem[];
    /* Swizzled tiles need 1024-byte alignment; the launcher adds 1 KB of slack. */
    const uint32_t base = (smem_u32(hws_smem) + 1023u) & ~1023u;
    const uint32_t sQ = base, sO = sQ + Q_BYTES, sK = sO + Q_BYTES, sV = sK + S * KV_BYTES;
    const uint32_t bars = sV + S * KV_BYTES;
    /* Barriers: full K, full V, empty K, empty V (S each), then Q full, Q empty and the tail
     * barrier (a V tile with rows past the end lands there first, see below). */
    auto bar = [&](int kind, uint32_t stage) { return bars + 8u * (kind * S + stage); };
    enum { FULL_K, FULL_V, EMPTY_K, EMPTY_V };
    const uint32_t q_full = bars + 8u * 4 * S, q_empty = q_full + 8u, tail = q_full + 16u;

    const int tid = threadIdx.x, wg = tid >> 7;
    if (tid == 0) {
        for (int i = 0; i < S; i++) {
            mbar_init(bar(FULL_K, i), 1);
            mbar_init(bar(FULL_V, i), 1);
            mbar_init(bar(EMPTY_K, i), NC * 4);
            mbar_init(bar(EMPTY_V, i), NC * 4);
        }
        mbar_init(q_full, HWS_Q_THREADS);
        mbar_init(q_empty, NC * 4);
        mbar_init(tail, 1);
        mbar_init_fence();
    }
    __syncthreads();

    const int n_items = n_qtiles * p.n_kv_heads * n_seqs;
    const T *qg = static_cast<const T *>(p.q);
    /* Tile i of an item is its i-th K/V tile in visiting order; u counts them over the block's
     * items, so stage u % S is in its (u / S)-th use. */
    uint32_t u0 = 0, q_use = 0;

    if (wg == 0) { /* producer: warp 0 moves K/V by TMA, warps 1-3 copy Q */
        setmaxnreg_dec<HWS_PRODUCER_REGS>();
        const int lane = tid & 31;
        uint32_t tail_use = 0;
        for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
            attn_tile w;
            if (!hws_item(w, p, item, n_qtiles, n_seqs, BM)) continue;
            const int n = w.kv_end > 0 ? (w.kv_end + BN - 1) / BN : 0;
            if (tid >= 32) {
                mbar_wait(q_empty, (q_use++ & 1) ^ 1);
                hws_copy<T, HD, BM, HWS_Q_THREADS>(sQ, tid - 32, qg, [&](int r) -> const T * {
                    return w.r0 + r < w.rows ? qg + w.qrow(p, w.r0 + r) * HD : nullptr;
                });
                mbar_arrive_cp_async(q_full);
                continue;
            }
            /* Tile i (visiting order) into its stage: boxes of `box` keys, each inside one page,
             * (HD / 64) column blocks each; boxes wholly past kv_end are not loaded. K rows past
             * kv_end may hold anything (their scores are masked by assignment); V rows there must
             * be finite (P = 0 times NaN is NaN), so a V tile with such rows lands on the tail
             * barrier first, gets them zeroed, then is handed over. */
            auto load = [&](int kind, uint32_t sbase, const CUtensorMap *tm, int i) {
                const uint32_t u = u0 + i, st = u % S, dst = sbase + st * KV_BYTES;
                const int key0 = (n - 1 - i) * BN, valid = min(BN, w.kv_end - key0);
                const int boxes = (valid + box - 1) / box * (HD / 64);
                const bool zero_tail = kind == FULL_V && valid < BN;
                const uint32_t land = zero_tail ? tail : bar(kind, st);
                mbar_wait(bar(kind + 2, st), ((u / S) & 1) ^ 1);
                if (lane == 0) mbar_arrive_expect_tx(land, (uint32_t)(boxes * box * 128));
                for (int b = lane; b < boxes; b += 32) {
                    const int c = b % (HD / 64), key = key0 + b / (HD / 64) * box;
                    const bool pow2 = p.page_shift >= 0;
                    const int pg = pow2 ? key >> p.page_shift : key / p.page_size;
                    const int prow = key - pg * p.page_size;
                    tma_load_3d(dst + hop_off<BN>(key - key0, c * 64), tm, c * 64, w.kvh,
                                __ldg(w.bt + pg) * p.page_size + prow, land);
                }
                if (zero_tail) {
                    mbar_wait(tail, tail_use++ & 1);
                    for (int x = lane; x < (BN - valid) * (HD / 8); x += 32) {
                        const uint32_t a =
                            dst + hop_off<BN>(valid + x / (HD / 8), x % (HD / 8) * 8);
                        asm volatile("st.shared.v4.b32 [%0], {%1, %1, %1, %1};\n" ::"r"(a), "r"(0)
                                     : "memory");
                    }
                    fence_proxy_async();
                    __syncwarp();
                    if (lane == 0) mbar_arrive(bar(kind, st));
                }
            };
            /* Visiting order K(0), then K(i+1) ahead of V(i): S of the next tile needs K first. */
            for (int i = 0; i <= n; i++) {
                if (i < n) load(FULL_K, sK, &tk, i);
                if (i > 0) load(FULL_V, sV, &tv, i - 1);
            }
            u0 += n;
        }
        cp_async_wait<0>();
        return;
    }

    /* consumers */
    setmaxnreg_inc<hws_consumer_regs<NC>()>();
    const int cw = wg - 1, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int trow = cw * 64 + warp * 16 + g; /* the thread's first row in the tile */
    const uint32_t sq = sQ + cw * 64 * 128;
    auto release = [&](uint32_t b) {
        if (lane == 0) mbar_arrive(b);
    };
    /* Ping-pong turns: consumer c issues after c-1, consumer 0 after the last one's previous turn;
     * the last one opens the first turn and consumer 0 takes the token left after the last. */
    constexpr int TURN_BAR = 1 + NC; /* 1..NC: each consumer's own barrier (epilogue) */
    auto turn_begin = [&]() {
        if (PP) named_bar_sync(TURN_BAR + cw, 256);
    };
    auto turn_end = [&]() {
        if (PP) named_bar_arrive(TURN_BAR + (cw + 1) % NC, 256);
    };
    if (PP && cw == NC - 1) named_bar_arrive(TURN_BAR, 256);

    for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
        attn_tile w;
        if (!hws_item(w, p, item, n_qtiles, n_seqs, BM)) continue;
        const int n = w.kv_end > 0 ? (w.kv_end + BN - 1) / BN : 0;
        /* Keys ≥ lim[i] are masked for this thread's rows; tiles past min_lim need masks. */
        const int lim[2] = {w.key_limit(p, w.r0 + trow), w.key_limit(p, w.r0 + trow + 8)};
        const int min_lim = w.key_limit(p, w.r0);
        float o[HD / 2], sc[BN / 2], m[2] = {FG_NEG_INF, FG_NEG_INF}, l[2] = {0.f, 0.f}, alpha[2];
        uint32_t pa[BN / 16][4];
#pragma unroll
        for (int i = 0; i < HD / 2; i++)
            o[i] = 0.f;

        mbar_wait(q_full, q_use & 1);
        if (n == 0) release(q_empty);
        /* Waits until tile u's K or V has landed in its stage (the caller then fences the proxies).
         */
        auto acquire = [&](int kind, uint32_t u) { mbar_wait(bar(kind, u % S), (u / S) & 1); };
        /* Before a turn that issues P·V: the landed tiles made visible to the MMAs, O and P
         * pinned behind the fence. */
        auto begin_pv_turn = [&]() {
            fence_proxy_async();
            turn_begin();
            wgmma_hold<HD / 2>(o);
            wgmma_hold<BN / 4>(&pa[0][0]);
            wgmma_fence();
        };
        if (n > 0) { /* S of the first tile alone */
            acquire(FULL_K, u0);
            fence_proxy_async();
            turn_begin();
            wgmma_fence();
            hop_qk<T, HD, BM, BN>(sc, sq, sK + (u0 % S) * KV_BYTES);
            wgmma_commit();
            turn_end();
            wgmma_wait<0>();
            wgmma_hold<BN / 2>(sc);
            release(bar(EMPTY_K, u0 % S));
            if (n == 1) release(q_empty);
            hop_softmax<BN>(sc, m, l, alpha, p.scale_log2, (n - 1) * BN, lim, n * BN > min_lim, t);
            hop_pack_p<T, BN>(pa, sc);
        }
        for (int i = 1; i < n; i++) { /* S of tile i with P·V of tile i-1 */
            const int key0 = (n - 1 - i) * BN;
            const uint32_t uk = u0 + i, uv = uk - 1;
            acquire(FULL_K, uk);
            acquire(FULL_V, uv);
            begin_pv_turn();
            hop_qk<T, HD, BM, BN>(sc, sq, sK + (uk % S) * KV_BYTES);
            wgmma_commit();
            wgmma_fence(); /* a fence per group: ptxas treats the wgmma's after one as one stage */
            hop_pv<T, HD, BN>(o, pa, sV + (uv % S) * KV_BYTES);
            wgmma_commit();
            turn_end();
            wgmma_wait<1>(); /* S done; P·V may still run */
            wgmma_hold<BN / 2>(sc);
            release(bar(EMPTY_K, uk % S));
            if (i == n - 1) release(q_empty);
            hop_softmax<BN>(sc, m, l, alpha, p.scale_log2, key0, lim, key0 + BN > min_lim, t);
            hop_wait_pv<HD, BN>(o, pa, sc, m, l, alpha);
            release(bar(EMPTY_V, uv % S));
            hop_rescale<HD>(o, alpha);
            hop_pack_p<T, BN>(pa, sc);
        }
        if (n > 0) { /* P·V of the last tile */
            const uint32_t uv = u0 + n - 1;
            acquire(FULL_V, uv);
            begin_pv_turn();
            hop_pv<T, HD, BN>(o, pa, sV + (uv % S) * KV_BYTES);
            wgmma_commit();
            turn_end();
            wgmma_wait<0>();
            wgmma_hold<HD / 2>(o);
            release(bar(EMPTY_V, uv % S));
        }
        u0 += n;
        q_use++;

        /* Epilogue: O / l → this consumer's rows of the staging tile → global. */
        named_bar_sync(1 + cw, 128); /* the previous item's stores have read the staging rows */
        hop_stage_o<T, HD, BM>(sO, o, l, m, trow, t, [&](int tr, float v) {
            if (p.lse && w.r0 + tr < w.rows) p.lse[w.qrow(p, w.r0 + tr)] = v;
        });
        named_bar_sync(1 + cw, 128);
        hop_store_o<T, HD, BM, 64, 128>(sO, tid - wg * 128, cw * 64, [&](int tr) -> T * {
            return w.r0 + tr < w.rows ? static_cast<T *>(p.out) + w.qrow(p, w.r0 + tr) * HD
                                      : nullptr;
        });
    }
    if (PP && cw == 0) named_bar_sync(TURN_BAR, 256);
#else
    (void)p; /* compute_90 PTX fallback: never selected (attn_hopper_available() is 0 there) */
    (void)n_qtiles;
    (void)n_seqs;
    (void)box;
    (void)tk;
    (void)tv;
#endif
}

static int hws_sm_count(void) {
    static int sms; /* one device per process (the engine's worker owns it) */
    if (!sms) {
        int dev;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
            (void)cudaGetLastError();
            sms = 132;
        }
    }
    return sms;
}

/* The driver entry points the tensor maps need, found through the runtime (no -lcuda). */
struct hws_driver {
    PFN_cuTensorMapEncodeTiled_v12000 encode;
    PFN_cuMemGetAddressRange_v3020 range;
};
static const struct hws_driver *hws_driver(void) {
    static struct hws_driver d;
    static int state; /* 0 not tried, 1 found, -1 missing */
    if (!state) {
        cudaDriverEntryPointQueryResult q1, q2;
        state = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", (void **)&d.encode,
                                                 12000, cudaEnableDefault, &q1) == cudaSuccess &&
                        cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", (void **)&d.range,
                                                         12000, cudaEnableDefault,
                                                         &q2) == cudaSuccess &&
                        q1 == cudaDriverEntryPointSuccess && q2 == cudaDriverEntryPointSuccess
                    ? 1
                    : -1;
        (void)cudaGetLastError();
    }
    return state > 0 ? &d : NULL;
}

/* A K or V pool (rows of n_kv_heads × HD, to the end of its allocation) as a 3-D tensor map
 * (HD, KV head, pool row) with boxes of 64 × 1 × box, 128-byte swizzled. 0 when made. */
static int hws_pool_map(CUtensorMap *m, const void *pool, const struct attn_batch *b, int box,
                        CUtensorMapDataType type) {
    const struct hws_driver *d = hws_driver();
    CUdeviceptr base;
    size_t size;
    if (!d || d->range(&base, &size, (CUdeviceptr)pool) != CUDA_SUCCESS) return -1;
    const cuuint64_t row_bytes = (cuuint64_t)b->n_kv_heads * b->head_dim * 2;
    const cuuint64_t dims[3] = {(cuuint64_t)b->head_dim, (cuuint64_t)b->n_kv_heads,
                                (base + size - (CUdeviceptr)pool) / row_bytes};
    const cuuint64_t strides[2] = {(cuuint64_t)b->head_dim * 2, row_bytes};
    const cuuint32_t boxdim[3] = {64, 1, (cuuint32_t)box}, estr[3] = {1, 1, 1};
    return d->encode(m, type, 3, const_cast<void *>(pool), dims, strides, boxdim, estr,
                     CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                     CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS
               ? 0
               : -1;
}

static int hws_gcd(int a, int b) {
    return b ? hws_gcd(b, a % b) : a;
}

/* Runs the warp-specialised kernel where its TMA boxes fit the pages (a box of gcd(BN, page
 * size) keys must be a multiple of 8 rows, and both pools must be device allocations the driver
 * can map); elsewhere the all-threads-load kernel `fallback` serves the call. */
template <typename T, int HD, int BN, int NC, int S, bool PP>
static int hws_launch(const struct attn_args *a, char *err, size_t errlen,
                      int (*fallback)(const struct attn_args *, char *, size_t)) {
    constexpr int BM = NC * 64;
    const struct attn_batch *b = &a->b;
    const int box = hws_gcd(BN, b->page_size);
    const CUtensorMapDataType type = std::is_same<T, __nv_bfloat16>::value
                                         ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                         : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
    CUtensorMap tk, tv;
    if (box % 8 || hws_pool_map(&tk, a->k_pool, b, box, type) ||
        hws_pool_map(&tv, a->v_pool, b, box, type))
        return fallback(a, err, errlen);
    attn_kparams p = attn_prefill_kparams(a);
    const size_t smem = (size_t)(2 * BM + 2 * S * BN) * HD * sizeof(T) + 8 * (4 * S + 3) + 1024;
    const int n_qtiles = (b->max_q_len * p.group + BM - 1) / BM;
    const long items = (long)n_qtiles * b->n_kv_heads * b->n_seqs;
    cudaError_t e = attn_allow_smem(attn_hws_kernel<T, HD, BN, NC, S, PP>, smem);
    if (e == cudaSuccess && items > 0x7fffffffL) e = cudaErrorInvalidValue;
    if (e == cudaSuccess) {
        const unsigned grid = (unsigned)(items < hws_sm_count() ? items : hws_sm_count());
        attn_hws_kernel<T, HD, BN, NC, S, PP>
            <<<grid, (NC + 1) * 128, smem, static_cast<cudaStream_t>(a->stream)>>>(
                p, n_qtiles, b->n_seqs, box, tk, tv);
        e = cudaGetLastError();
    }
    if (e != cudaSuccess) {
        snprintf(err, errlen, "attention prefill (hopper, warp-specialised) launch: %s",
                 cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

/* One launcher per row of ATTN_HWS_CONFIGS (attention_hopper.cuh). */
#define HWS(NAME, T, HD, BN, NC, S, PP, FALLBACK)                                                  \
    int NAME(const struct attn_args *a, char *err, size_t errlen) {                                \
        return hws_launch<T, HD, BN, NC, S, PP>(a, err, errlen, FALLBACK);                         \
    }
ATTN_HWS_CONFIGS(HWS)
