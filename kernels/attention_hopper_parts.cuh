/* attention_hopper_parts.cuh — the device pieces both Hopper (sm_90a) prefill kernels are built
 * from (kernels/attention_hopper.cu: every thread loads; kernels/attention_hopper_ws.cu: a producer
 * warpgroup loads, persistent): swizzled tile addressing, paged K/V tile loads with cp.async, the
 * two warpgroup MMAs of a K/V tile (S = Q Kᵀ, O += P V) and the online softmax of one S tile.
 * Layouts: kernels/attention_wgmma.cuh. Callers compile these under __CUDA_ARCH_FEAT_SM90_ALL.
 */
#ifndef FG_ATTENTION_HOPPER_PARTS_CUH
#define FG_ATTENTION_HOPPER_PARTS_CUH

#include "attention_common.cuh"
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

/* After the softmax of S(j-1) was issued behind P(j)·V(j): pins what the softmax wrote ahead of
 * the wait, waits for P·V, and keeps P(j)'s registers (its A operand) allocated until then. */
template <int HD, int BN>
__device__ __forceinline__ void hop_wait_pv(float *o, uint32_t (&pa)[BN / 16][4], float *sc,
                                            float (&m)[2], float (&l)[2], float (&alpha)[2]) {
    /* keeps the PTX order softmax → wait; ptxas still hoists the wait (attention_hopper.cu) */
    wgmma_hold<BN / 2>(sc);
    wgmma_hold<2>(m);
    wgmma_hold<2>(l);
    wgmma_hold<2>(alpha);
    wgmma_wait<0>();
    wgmma_hold<HD / 2>(o);
    wgmma_keep<BN / 4>(&pa[0][0]);
}

/* O of the thread's rows g and g + 8 times their softmax correction alpha. */
template <int HD> __device__ __forceinline__ void hop_rescale(float *o, const float (&alpha)[2]) {
#pragma unroll
    for (int i = 0; i < HD / 8; i++) {
        o[4 * i] *= alpha[0];
        o[4 * i + 1] *= alpha[0];
        o[4 * i + 2] *= alpha[1];
        o[4 * i + 3] *= alpha[1];
    }
}

/* Epilogue, first half: the row sums l are quad-reduced, O / l of this thread's tile rows trow and
 * trow + 8 goes into the swizzled ROWS-row staging tile at st, and lse(row, value) receives each
 * row's natural-log LSE (threads t == 0). The caller makes sure no MMA still reads st. */
template <typename T, int HD, int ROWS, typename F>
__device__ __forceinline__ void hop_stage_o(uint32_t st, const float *o, float (&l)[2],
                                            const float (&m)[2], int trow, int t, F &&lse) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
    const float inv[2] = {l[0] > 0.f ? 1.f / l[0] : 0.f, l[1] > 0.f ? 1.f / l[1] : 0.f};
#pragma unroll
    for (int i = 0; i < HD / 8; i++) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            uint32_t v =
                attn_type<T>::pack(o[4 * i + 2 * r] * inv[r], o[4 * i + 2 * r + 1] * inv[r]);
            asm volatile(
                "st.shared.b32 [%0], %1;\n" ::"r"(st + hop_off<ROWS>(trow + 8 * r, 8 * i + 2 * t)),
                "r"(v)
                : "memory");
        }
    }
    if (t == 0) {
#pragma unroll
        for (int r = 0; r < 2; r++)
            lse(trow + 8 * r, l[r] > 0.f ? (m[r] + __log2f(l[r])) * 0.69314718056f : FG_NEG_INF);
    }
}

/* Epilogue, second half: rows row0 .. row0+N-1 of the staging tile at st to global memory in
 * 16-byte row-contiguous pieces, NT threads; dst(row) is the row's output or null (no such row). */
template <typename T, int HD, int ROWS, int N, int NT, typename F>
__device__ __forceinline__ void hop_store_o(uint32_t st, int tid, int row0, F &&dst) {
    hop_for_chunks<HD, N, NT>(tid, [&](int row, int ch) {
        T *out = dst(row0 + row);
        if (!out) return;
        uint4 v;
        asm volatile("ld.shared.v4.b32 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "r"(st + hop_off<ROWS>(row0 + row, ch * 8)));
        *reinterpret_cast<uint4 *>(out + ch * 8) = v;
    });
}

#endif
