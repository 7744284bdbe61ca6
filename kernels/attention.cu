/* attention.cu — the fused FlashAttention-2 prefill kernel over the paged KV-cache, and the
 * selector of kernels/attention.h that picks between it and the decode kernel.
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
 * Tile shapes: hd 128 → 128×64, 8 warps (64 KB smem); hd 64 → 128×128, 8 warps (48 KB); chosen
 * as FlashAttention-2's sm80 table does (128-row Q tiles, 64-key tiles at hd 128), see BENCH.md.
 */
#include <cuda_runtime.h>
#include <stdio.h>

#include "attention.h"
#include "attention_common.cuh"
#include "decode_attention.h"

template <typename T, int HD, int BN, int NW>
__global__ void __launch_bounds__(NW * 32, 1) attn_prefill_kernel(const attn_kparams p)
{
    constexpr int BM = NW * 16, NT = NW * 32;
    extern __shared__ __align__(128) unsigned char attn_smem[];
    T *sQ = reinterpret_cast<T *>(attn_smem);
    T *sK = sQ + BM * HD;
    T *sV = sK + BN * HD;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int s = blockIdx.z, kvh = blockIdx.y, G = p.group;
    const int q0 = p.q_start[s], nq = p.q_start[s + 1] - q0, rows = nq * G;
    const int r0 = (gridDim.x - 1 - blockIdx.x) * BM;
    if (r0 >= rows) return;
    const int kvlen = p.kv_len[s], pos0 = kvlen - nq;
    const int *bt = p.block_table + (size_t)s * p.max_pages;
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
            if (valid) src = qg + ((size_t)(q0 + gr / G) * p.n_heads + kvh * G + gr % G) * HD + ch * 8;
            cp_async16(qb + 2u * (uint32_t)swz<HD>(row, ch * 8), src, valid);
        }
    }

    int kv_end = kvlen;
    if (p.causal) kv_end = min(kvlen, pos0 + (min(r0 + BM, rows) - 1) / G + 1);
    const int n_tiles = kv_end > 0 ? (kv_end + BN - 1) / BN : 0;
    /* Row limits: keys ≥ lim are masked for this thread's rows g and g + 8. */
    const int g = lane >> 2, t = lane & 3;
    const int gr0 = r0 + warp * 16 + g, gr1 = gr0 + 8;
    const int lim0 = p.causal ? min(kvlen, pos0 + gr0 / G + 1) : kvlen;
    const int lim1 = p.causal ? min(kvlen, pos0 + gr1 / G + 1) : kvlen;
    const int min_lim = p.causal ? min(kvlen, pos0 + r0 / G + 1) : kvlen;

    if (n_tiles > 0)
        load_kv_tile<T, HD, BN, NT>(sK, kp, bt, (n_tiles - 1) * BN, kvlen, p.page_size,
                                    p.n_kv_heads, kvh, tid);
    cp_async_commit();

    float o[HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++)
        o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m[2] = {FG_NEG_INF, FG_NEG_INF}, l[2] = {0.f, 0.f};
    uint32_t qf[HD / 16][4];

    cp_async_wait<0>();
    __syncthreads();
    load_q_frags<HD>(qf, sQ, warp * 16, lane);

    for (int j = n_tiles - 1; j >= 0; j--) {
        cp_async_wait<0>();
        __syncthreads(); /* K(j) landed; every warp is done reading V(j+1) */
        load_kv_tile<T, HD, BN, NT>(sV, vp, bt, j * BN, kvlen, p.page_size, p.n_kv_heads, kvh,
                                    tid);
        cp_async_commit();
        uint32_t pa[BN / 16][4];
        if ((j + 1) * BN > min_lim)
            warp_qk_softmax<T, HD, BN, true>(qf, sK, o, m, l, pa, p.scale_log2, j * BN, lim0, lim1,
                                             lane);
        else
            warp_qk_softmax<T, HD, BN, false>(qf, sK, o, m, l, pa, p.scale_log2, j * BN, lim0,
                                              lim1, lane);
        cp_async_wait<0>();
        __syncthreads(); /* V(j) landed; every warp is done reading K(j) */
        if (j > 0)
            load_kv_tile<T, HD, BN, NT>(sK, kp, bt, (j - 1) * BN, kvlen, p.page_size, p.n_kv_heads,
                                        kvh, tid);
        cp_async_commit();
        warp_pv<T, HD, BN>(pa, sV, o, lane);
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
    T *out = static_cast<T *>(p.out);
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int gr = r ? gr1 : gr0;
        if (gr >= rows) continue;
        int tok = gr / G, h = kvh * G + gr % G;
        float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
        T *orow = out + ((size_t)(q0 + tok) * p.n_heads + h) * HD;
#pragma unroll
        for (int dt = 0; dt < HD / 8; dt++) {
            uint32_t v = attn_type<T>::pack(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
            *reinterpret_cast<uint32_t *>(orow + dt * 8 + 2 * t) = v;
        }
        if (p.lse && t == 0)
            p.lse[(size_t)(q0 + tok) * p.n_heads + h] =
                l[r] > 0.f ? (m[r] + __log2f(l[r])) * 0.69314718056f : FG_NEG_INF;
    }
}

/* ---- host side: variants and the selector ------------------------------------------------ */

template <typename T, int HD, int BN, int NW>
static int prefill_launch(const struct attn_args *a, char *err, size_t errlen)
{
    constexpr int BM = NW * 16;
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
    p.n_heads = b->n_heads;
    p.n_kv_heads = b->n_kv_heads;
    p.group = b->n_heads / b->n_kv_heads;
    p.scale_log2 = b->scale * 1.4426950408889634f;
    p.causal = b->causal;
    size_t smem = (size_t)(BM + 2 * BN) * HD * sizeof(T);
    cudaError_t e = cudaFuncSetAttribute(attn_prefill_kernel<T, HD, BN, NW>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) {
        dim3 grid((unsigned)((b->max_q_len * p.group + BM - 1) / BM), (unsigned)b->n_kv_heads,
                  (unsigned)b->n_seqs);
        attn_prefill_kernel<T, HD, BN, NW>
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
};

static const struct attn_variant attn_variants[] = {
    {"prefill_bf16_hd64", ATTN_KIND_PREFILL, ATTN_DTYPE_BF16, 64,
     prefill_launch<__nv_bfloat16, 64, 128, 8>},
    {"prefill_bf16_hd128", ATTN_KIND_PREFILL, ATTN_DTYPE_BF16, 128,
     prefill_launch<__nv_bfloat16, 128, 64, 8>},
    {"prefill_fp16_hd64", ATTN_KIND_PREFILL, ATTN_DTYPE_FP16, 64, prefill_launch<__half, 64, 128, 8>},
    {"prefill_fp16_hd128", ATTN_KIND_PREFILL, ATTN_DTYPE_FP16, 128,
     prefill_launch<__half, 128, 64, 8>},
    {"decode_bf16_hd64", ATTN_KIND_DECODE, ATTN_DTYPE_BF16, 64, decode_attn_launch},
    {"decode_bf16_hd128", ATTN_KIND_DECODE, ATTN_DTYPE_BF16, 128, decode_attn_launch},
    {"decode_fp16_hd64", ATTN_KIND_DECODE, ATTN_DTYPE_FP16, 64, decode_attn_launch},
    {"decode_fp16_hd128", ATTN_KIND_DECODE, ATTN_DTYPE_FP16, 128, decode_attn_launch},
};

/* Shape checks common to every variant; NULL when fine, else the reason. */
static const char *attn_check(const struct attn_args *a)
{
    const struct attn_batch *b = &a->b;
    if (!a->out || !a->q || !a->k_pool || !a->v_pool) return "null tensor";
    if (!b->q_start || !b->kv_len || !b->block_table) return "null batch array";
    if (b->n_seqs < 1 || b->max_q_len < 1) return "empty batch";
    if (b->n_kv_heads < 1 || b->n_heads % b->n_kv_heads) return "n_heads not a multiple of n_kv_heads";
    if (b->page_size < 1 || b->max_pages < 1) return "bad page table shape";
    if (b->n_seqs > 65535 || b->n_kv_heads > 65535) return "too many sequences or heads";
    return NULL;
}

static const struct attn_variant *attn_pick(const struct attn_args *a, const char **why)
{
    *why = attn_check(a);
    if (*why) return NULL;
    int kind = a->kind;
    if (kind == ATTN_KIND_AUTO) kind = decode_attn_supported(a) ? ATTN_KIND_DECODE : ATTN_KIND_PREFILL;
    if (kind == ATTN_KIND_DECODE && !decode_attn_supported(a)) {
        *why = "decode kernel needs query rows x group <= 16 per sequence";
        return NULL;
    }
    for (size_t i = 0; i < sizeof(attn_variants) / sizeof(attn_variants[0]); i++) {
        const struct attn_variant *v = &attn_variants[i];
        if (v->kind == kind && v->dtype == a->dtype && v->head_dim == a->b.head_dim) return v;
    }
    *why = "no variant for this dtype and head_dim (64 and 128 are built)";
    return NULL;
}

extern "C" const char *attn_select(const struct attn_args *a)
{
    const char *why;
    const struct attn_variant *v = attn_pick(a, &why);
    return v ? v->name : NULL;
}

extern "C" int attn_supported(const struct attn_args *a, char *err, size_t errlen)
{
    const char *why;
    if (attn_pick(a, &why)) return 1;
    snprintf(err, errlen, "attention: %s", why);
    return 0;
}

extern "C" size_t attn_workspace_bytes(const struct attn_args *a)
{
    const char *why;
    const struct attn_variant *v = attn_pick(a, &why);
    if (!v || v->kind != ATTN_KIND_DECODE) return 0;
    int n = a->n_splits > 0 ? a->n_splits : decode_attn_splits(a);
    return n > 1 ? decode_attn_workspace_bytes(a, n) : 0;
}

extern "C" int attn_launch(const struct attn_args *a, char *err, size_t errlen)
{
    const char *why;
    const struct attn_variant *v = attn_pick(a, &why);
    if (!v) {
        snprintf(err, errlen, "attention: %s", why);
        return -1;
    }
    return v->launch(a, err, errlen);
}
