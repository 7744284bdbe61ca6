/* attention.cu — the fused FlashAttention-2 prefill kernel over the paged KV-cache (mma.sync, any
 * sm_80+ GPU), and the selector of kernels/attention.h that picks between it, the Hopper prefill
 * kernel (kernels/attention_hopper.cu, on sm_90) and the decode kernel.
 *
 * Design (FlashAttention-2 forward, mma.sync m16n8k16, fp32 accumulation):
 * - One thread block per (tile of BM packed query rows, KV head, sequence); NW warps split the
 *   rows (16 each), never the keys. Packed row r of a sequence is query token r / G of query head
 *   kvh·G + r % G, so the G heads of a GQA group share every K/V tile the block loads (no copy of
 *   K/V per query head; group 1 is plain MHA).
 * - K/V tiles of BN keys stream through shared memory from the last tile to the first, read
 *   through the page table with 16-byte cp.async (zero fill past the end): V(j) loads while
 *   S = Q K(j)ᵀ and the softmax run, K(j-1) loads while O += P V(j) runs.
 * - Online softmax in the exp2 domain, running max and sum per row, one division at the end;
 *   LSE = ln(sum exp(scale q·k)) is written when asked for.
 * - Causal: a tile's key range stops at its last row's position, so fully masked tiles are never
 *   visited; masks are applied only to the tiles that straddle a row limit or the sequence end.
 * - Varlen: the grid covers the longest sequence; blocks past a shorter sequence's rows exit.
 *   Blocks are issued heaviest-first (last query tile first) for causal balance.
 * Tile shapes (measured, kernels/BENCH.md): each warp owns R = 2 m-tiles of 16 rows so every K/V
 * fragment read from shared memory feeds two mma's (16 rows per warp was shared-memory bound at
 * ~0.55x FA2); hd 64 → 128×64 tiles, 4 warps; hd 128 → 256×64, 8 warps, Q re-read from shared
 * memory to stay within 255 registers.
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include "attention.h"
#include "attention_common.cuh"
#include "attention_hopper.cuh"
#include "decode_attention.h"

template <typename T, int HD, int BN, int NW, int R, bool QREG, int MINB>
__global__ void __launch_bounds__(NW * 32, MINB) attn_prefill_kernel(const attn_kparams p) {
    constexpr int BM = NW * 16 * R, NT = NW * 32;
    extern __shared__ __align__(128) unsigned char attn_smem[];
    T *sQ = reinterpret_cast<T *>(attn_smem);
    T *sK = sQ + BM * HD;
    T *sV = sK + BN * HD;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    attn_tile w;
    if (!attn_tile_at(w, p, blockIdx.z, blockIdx.y, (gridDim.x - 1 - blockIdx.x) * BM, BM)) return;
    const int kvh = w.kvh, kvlen = w.kvlen, rows = w.rows, r0 = w.r0;
    const int *bt = w.bt;
    const T *qg = static_cast<const T *>(p.q);
    const T *kp = static_cast<const T *>(p.k);
    const T *vp = static_cast<const T *>(p.v);

    /* Q tile: packed rows r0 .. r0+BM-1, zero past the sequence's rows. */
    {
        constexpr int CPR = HD / 8, TOTAL = BM * CPR;
        const uint32_t qb = smem_u32(sQ);
#pragma unroll
        for (int i = 0; i < TOTAL / NT; i++) {
            int c = tid + i * NT, row = c / CPR, ch = c % CPR, gr = r0 + row;
            bool valid = gr < rows;
            const T *src = qg;
            if (valid) src = qg + w.qrow(p, gr) * HD + ch * 8;
            cp_async16(qb + 2u * (uint32_t)swz<HD>(row, ch * 8), src, valid);
        }
    }

    const int n_tiles = w.kv_end > 0 ? (w.kv_end + BN - 1) / BN : 0;
    /* Row limits: keys ≥ lim are masked for this thread's rows (g, g + 8 of each m-tile). */
    const int g = lane >> 2, t = lane & 3;
    const int wrow = warp * 16 * R; /* the warp's first row in the tile */
    int lim[2 * R], lo[2 * R];
#pragma unroll
    for (int i = 0; i < 2 * R; i++) {
        lim[i] = w.key_limit(p, r0 + wrow + (i >> 1) * 16 + (i & 1) * 8 + g);
        lo[i] = w.key_low(p, r0 + wrow + (i >> 1) * 16 + (i & 1) * 8 + g);
    }
    const int min_lim = w.key_limit(p, r0);
    /* Sliding window: tiles below the first row's lower end are never visited, and the tiles
     * below the last row's lower end are masked. */
    const int j_lo = w.key_low(p, r0) / BN, max_lo = w.key_low(p, min(r0 + BM, rows) - 1);

    if (n_tiles > 0)
        load_kv_tile<T, HD, BN, NT>(sK, kp, bt, (n_tiles - 1) * BN, kvlen, p.page_size,
                                    p.page_shift, p.n_kv_heads, kvh, tid);
    cp_async_commit();

    float o[R][HD / 8][4];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int i = 0; i < HD / 8; i++)
            o[r][i][0] = o[r][i][1] = o[r][i][2] = o[r][i][3] = 0.f;
    float m[2 * R], l[2 * R];
#pragma unroll
    for (int i = 0; i < 2 * R; i++) {
        m[i] = FG_NEG_INF;
        l[i] = 0.f;
    }
    uint32_t qf[QREG ? R : 1][QREG ? HD / 16 : 1][4];

    cp_async_wait<0>();
    __syncthreads();
    if constexpr (QREG) {
#pragma unroll
        for (int r = 0; r < R; r++)
            load_q_frags<HD>(qf[r], sQ, wrow + r * 16, lane);
    }

    for (int j = n_tiles - 1; j >= j_lo; j--) {
        cp_async_wait<0>();
        __syncthreads(); /* K(j) landed; every warp is done reading V(j+1) */
        load_kv_tile<T, HD, BN, NT>(sV, vp, bt, j * BN, kvlen, p.page_size, p.page_shift,
                                    p.n_kv_heads, kvh, tid);
        cp_async_commit();
        uint32_t pa[R][BN / 16][4];
        if ((j + 1) * BN > min_lim || j * BN < max_lo)
            warp_qk_softmax<T, HD, BN, R, QREG, true>(qf, sQ, wrow, sK, o, m, l, pa, p.scale_log2,
                                                      j * BN, lim, lo, lane);
        else
            warp_qk_softmax<T, HD, BN, R, QREG, false>(qf, sQ, wrow, sK, o, m, l, pa, p.scale_log2,
                                                       j * BN, lim, lo, lane);
        cp_async_wait<0>();
        __syncthreads(); /* V(j) landed; every warp is done reading K(j) */
        if (j > j_lo)
            load_kv_tile<T, HD, BN, NT>(sK, kp, bt, (j - 1) * BN, kvlen, p.page_size, p.page_shift,
                                        p.n_kv_heads, kvh, tid);
        cp_async_commit();
        warp_pv<T, HD, BN, R>(pa, sV, o, lane);
    }

#pragma unroll
    for (int i = 0; i < 2 * R; i++) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    }
    T *out = static_cast<T *>(p.out);
#pragma unroll
    for (int i = 0; i < 2 * R; i++) {
        int gr = r0 + wrow + (i >> 1) * 16 + (i & 1) * 8 + g;
        if (gr >= rows) continue;
        int r = i >> 1, c = (i & 1) * 2;
        float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
        T *orow = out + w.qrow(p, gr) * HD;
#pragma unroll
        for (int dt = 0; dt < HD / 8; dt++) {
            uint32_t v = attn_type<T>::pack(o[r][dt][c] * inv, o[r][dt][c + 1] * inv);
            *reinterpret_cast<uint32_t *>(orow + dt * 8 + 2 * t) = v;
        }
        if (p.lse && t == 0)
            p.lse[w.qrow(p, gr)] =
                l[i] > 0.f ? (m[i] + __log2f(l[i])) * 0.69314718056f : FG_NEG_INF;
    }
}

/* ---- host side: variants and the selector ------------------------------------------------ */

attn_kparams attn_prefill_kparams(const struct attn_args *a) {
    const struct attn_batch *b = &a->b;
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
    return p;
}

template <typename T, int HD, int BN, int NW, int R, bool QREG, int MINB>
static int prefill_launch(const struct attn_args *a, char *err, size_t errlen) {
    constexpr int BM = NW * 16 * R;
    const struct attn_batch *b = &a->b;
    attn_kparams p = attn_prefill_kparams(a);
    size_t smem = (size_t)(BM + 2 * BN) * HD * sizeof(T);
    cudaError_t e = attn_allow_smem(attn_prefill_kernel<T, HD, BN, NW, R, QREG, MINB>, smem);
    if (e == cudaSuccess) {
        dim3 grid((unsigned)((b->max_q_len * p.group + BM - 1) / BM), (unsigned)b->n_kv_heads,
                  (unsigned)b->n_seqs);
        attn_prefill_kernel<T, HD, BN, NW, R, QREG, MINB>
            <<<grid, NW * 32, smem, static_cast<cudaStream_t>(a->stream)>>>(p);
        e = cudaGetLastError();
    }
    if (e != cudaSuccess) {
        snprintf(err, errlen, "attention prefill launch: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

typedef int (*attn_launch_fn)(const struct attn_args *a, char *err, size_t errlen);

struct attn_variant {
    const char *name;
    int kind, dtype, head_dim;
    attn_launch_fn launch;
    int sm90a; /* 1: wgmma kernel, runs only where attn_hopper_available() */
};

/* bf16 hd 64 on sm_90: 192-key tiles from 2k query tokens, 128-key tiles below (kernels/BENCH.md,
 * run 7: 128x192 is 4–8% ahead from 2k, 1–6% behind at 512–1k). */
static int attn_hws_bf16_hd64(const struct attn_args *a, char *err, size_t errlen) {
    return (a->b.max_q_len >= 2048 ? attn_hws_bf16_hd64_128x192
                                   : attn_hws_bf16_hd64_128x128)(a, err, errlen);
}

/* The selector takes the first entry that matches (kind, dtype, head_dim) and that the device
 * runs (sm90a entries need compute capability 9.0); later entries with the same key are
 * alternatives that attn_launch_variant() runs by name, for benchmarks and tests. Order from the
 * measured table in kernels/BENCH.md. Names: prefill_<dtype>_hd<D>_ws[<BM>x<BN>[n]] for the
 * warp-specialised Hopper kernel (kernels/attention_hopper_ws.cu; n: no ping-pong),
 * prefill_<dtype>_hd<D>_wg<BM>x<BN>p for the all-threads-load one (kernels/attention_hopper.cu,
 * also the former's fallback), prefill_<dtype>_hd<D>[_<BM>x<BN>w<NW>] for mma.sync. */
#define PFH(TN, D, SUFFIX)                                                                         \
    {                                                                                              \
        "prefill_" #TN "_hd" #D "_wg" #SUFFIX, ATTN_KIND_PREFILL,                                  \
            #TN[0] == 'b' ? ATTN_DTYPE_BF16 : ATTN_DTYPE_FP16, D,                                  \
            attn_hopper_##TN##_hd##D##_##SUFFIX, 1                                                 \
    }
#define PFW(TN, D, SUFFIX)                                                                         \
    {                                                                                              \
        "prefill_" #TN "_hd" #D "_ws" #SUFFIX, ATTN_KIND_PREFILL,                                  \
            #TN[0] == 'b' ? ATTN_DTYPE_BF16 : ATTN_DTYPE_FP16, D,                                  \
            attn_hws_##TN##_hd##D##_##SUFFIX, 1                                                    \
    }
#define PF(T, TN, D, BN, NW, R, QREG, MINB, SUFFIX)                                                \
    {                                                                                              \
        "prefill_" TN "_hd" #D SUFFIX, ATTN_KIND_PREFILL,                                          \
            sizeof(T) == 2 && TN[0] == 'b' ? ATTN_DTYPE_BF16 : ATTN_DTYPE_FP16, D,                 \
            prefill_launch<T, D, BN, NW, R, QREG, MINB>, 0                                         \
    }
static const struct attn_variant attn_variants[] = {
    /* Hopper defaults (kernels/BENCH.md, run 7): the warp-specialised kernel, 2 consumer
     * warpgroups × 64 rows, 128-key tiles (192 for bf16 hd 64 from 2k tokens). */
    PFW(bf16, 128, 128x128),
    {"prefill_bf16_hd64_ws", ATTN_KIND_PREFILL, ATTN_DTYPE_BF16, 64, attn_hws_bf16_hd64, 1},
    PFW(fp16, 128, 128x128),
    PFW(fp16, 64, 128x128),
    /* mma.sync, the default where the device is not sm_90: hd 64 → 128×64 tiles, 4 warps × 32
     * rows (K/V fragments feed 2 m-tiles, Q in registers); hd 128 → 256×64, 8 warps × 32 rows, Q
     * re-read from shared memory. */
    PF(__nv_bfloat16, "bf16", 64, 64, 4, 2, true, 1, ""),
    PF(__nv_bfloat16, "bf16", 128, 64, 8, 2, false, 1, ""),
    PF(__half, "fp16", 64, 64, 4, 2, true, 1, ""),
    PF(__half, "fp16", 128, 64, 8, 2, false, 1, ""),
    /* hd 256 (Gemma 3), every device: 64×32 tiles, 4 warps × 16 rows, Q re-read from shared
     * memory: the fp32 output block of a row alone is 128 registers a thread, and 64-key tiles
     * spilled (ptxas: 255 registers, 180 bytes of spills; 32-key tiles fit without). Speed
     * against torch SDPA FA2 in kernels/BENCH.md. */
    PF(__nv_bfloat16, "bf16", 256, 32, 4, 1, false, 1, ""),
    PF(__half, "fp16", 256, 32, 4, 1, false, 1, ""),
    /* alternatives, measured in BENCH.md */
    PFW(bf16, 128, 128x128n),
    PFW(bf16, 64, 128x128),
    PFW(bf16, 64, 128x192),
    PFH(bf16, 128, 192x80p),
    PFH(bf16, 64, 128x64p),
    PFH(fp16, 128, 192x64p),
    PFH(fp16, 64, 192x128p),
    PF(__nv_bfloat16, "bf16", 64, 128, 8, 1, true, 1, "_128x128w8"),
    PF(__nv_bfloat16, "bf16", 64, 128, 4, 1, true, 2, "_64x128w4"),
    PF(__nv_bfloat16, "bf16", 128, 64, 8, 1, true, 1, "_128x64w8"),
    PF(__nv_bfloat16, "bf16", 128, 32, 4, 2, false, 2, "_128x32w4"),
    PF(__nv_bfloat16, "bf16", 128, 64, 4, 2, false, 1, "_128x64w4"),
    {"decode_bf16_hd64", ATTN_KIND_DECODE, ATTN_DTYPE_BF16, 64, decode_attn_launch, 0},
    {"decode_bf16_hd128", ATTN_KIND_DECODE, ATTN_DTYPE_BF16, 128, decode_attn_launch, 0},
    {"decode_fp16_hd64", ATTN_KIND_DECODE, ATTN_DTYPE_FP16, 64, decode_attn_launch, 0},
    {"decode_fp16_hd128", ATTN_KIND_DECODE, ATTN_DTYPE_FP16, 128, decode_attn_launch, 0},
    {"decode_bf16_hd256", ATTN_KIND_DECODE, ATTN_DTYPE_BF16, 256, decode_attn_launch, 0},
    {"decode_fp16_hd256", ATTN_KIND_DECODE, ATTN_DTYPE_FP16, 256, decode_attn_launch, 0},
};

/* Shape checks common to every variant; NULL when fine, else the reason. */
static const char *attn_check(const struct attn_args *a) {
    const struct attn_batch *b = &a->b;
    if (!a->out || !a->q || !a->k_pool || !a->v_pool) return "null tensor";
    if (!b->q_start || !b->kv_len || !b->block_table) return "null batch array";
    if (b->n_seqs < 1 || b->max_q_len < 1) return "empty batch";
    if (b->n_kv_heads < 1 || b->n_heads % b->n_kv_heads)
        return "n_heads not a multiple of n_kv_heads";
    if (b->page_size < 1 || b->max_pages < 1) return "bad page table shape";
    if (b->n_seqs > 65535 || b->n_kv_heads > 65535) return "too many sequences or heads";
    if (a->window < 0) return "negative window";
    return NULL;
}

static const struct attn_variant *attn_pick(const struct attn_args *a, const char **why) {
    *why = attn_check(a);
    if (*why) return NULL;
    int kind = a->kind;
    if (kind == ATTN_KIND_AUTO)
        kind = decode_attn_supported(a) ? ATTN_KIND_DECODE : ATTN_KIND_PREFILL;
    if (kind == ATTN_KIND_DECODE && !decode_attn_supported(a)) {
        *why = "decode kernel needs query rows x group <= 16 per sequence";
        return NULL;
    }
    const int hopper = kind == ATTN_KIND_PREFILL && a->window == 0 && attn_hopper_available();
    for (size_t i = 0; i < sizeof(attn_variants) / sizeof(attn_variants[0]); i++) {
        const struct attn_variant *v = &attn_variants[i];
        if (v->kind == kind && v->dtype == a->dtype && v->head_dim == a->b.head_dim &&
            (!v->sm90a || hopper))
            return v;
    }
    *why = "no variant for this dtype and head_dim (64, 128 and 256 are built)";
    return NULL;
}

extern "C" const char *attn_select(const struct attn_args *a) {
    const char *why;
    const struct attn_variant *v = attn_pick(a, &why);
    return v ? v->name : NULL;
}

extern "C" size_t attn_workspace_bytes(const struct attn_args *a) {
    const char *why;
    const struct attn_variant *v = attn_pick(a, &why);
    if (!v || v->kind != ATTN_KIND_DECODE) return 0;
    int n = a->n_splits > 0 ? a->n_splits : decode_attn_splits(a);
    return n > 1 ? decode_attn_workspace_bytes(a, n) : 0;
}

extern "C" int attn_launch_variant(const char *name, const struct attn_args *a, char *err,
                                   size_t errlen) {
    const char *why = attn_check(a);
    for (size_t i = 0; !why && i < sizeof(attn_variants) / sizeof(attn_variants[0]); i++) {
        const struct attn_variant *v = &attn_variants[i];
        if (strcmp(v->name, name)) continue;
        if (v->dtype != a->dtype || v->head_dim != a->b.head_dim) break;
        if (v->kind == ATTN_KIND_DECODE && !decode_attn_supported(a)) break;
        if (v->sm90a && (!attn_hopper_available() || a->window > 0)) break;
        return v->launch(a, err, errlen);
    }
    snprintf(err, errlen, "attention: variant %s does not serve this shape%s%s", name,
             why ? ": " : "", why ? why : "");
    return -1;
}

extern "C" int attn_launch(const struct attn_args *a, char *err, size_t errlen) {
    const char *why;
    const struct attn_variant *v = attn_pick(a, &why);
    if (!v) {
        snprintf(err, errlen, "attention: %s", why);
        return -1;
    }
    return v->launch(a, err, errlen);
}
