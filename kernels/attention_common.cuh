/* attention_common.cuh — device helpers shared by the prefill (attention.cu) and decode
 * (decode_attention.cu) attention kernels: the kernel parameter struct, 16-byte cp.async with
 * zero fill, ldmatrix, mma.sync m16n8k16 (bf16/fp16 in, fp32 accumulate), the XOR-swizzled
 * shared-memory tile layout, and the page-table address of one K/V row.
 *
 * Fragment layouts (PTX ISA, mma.m16n8k16, g = lane / 4, t = lane % 4):
 *   A 16x16 row-major: a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..)
 *   B 16x8  (k, n):    b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g)
 *   C 16x8  fp32:      c0 c1 (g, 2t..2t+1), c2 c3 (g+8, 2t..2t+1)
 * A K tile stored row-major [key][d] is B of S = Q Kᵀ as is (plain ldmatrix); a V tile stored
 * [key][d] is B of O = P V after a transpose (ldmatrix.trans). P goes from the S accumulators
 * straight into A registers, never through shared memory.
 *
 * Shared tiles are rows of HD elements split in 16-byte chunks; chunk c of row r is stored at
 * chunk position c ^ (r & 7), so the 8 rows one ldmatrix phase reads hit 8 different bank groups.
 */
#ifndef FG_ATTENTION_COMMON_CUH
#define FG_ATTENTION_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <stdint.h>

/* Everything a prefill or decode launch needs, passed by value as one struct. */
struct attn_kparams {
    void *out;              /* (n_q_total, n_heads, HD) */
    const void *q;          /* (n_q_total, n_heads, HD) */
    const void *k, *v;      /* pools (n_pages, page_size, n_kv_heads, HD) */
    float *lse;             /* optional (n_q_total, n_heads), natural log */
    const int *q_start;     /* (n_seqs + 1) */
    const int *kv_len;      /* (n_seqs) */
    const int *block_table; /* (n_seqs, max_pages) */
    int max_pages, page_size;
    int page_shift; /* log2(page_size) when a power of two, else -1 */
    int n_heads, n_kv_heads, group;
    float scale_log2; /* softmax scale × log2(e): scores live in the exp2 domain */
    int causal;
    int window; /* > 0: a query sees only the last `window` of the keys it would see (sliding
                   window: at position p, keys p - window + 1 .. p); 0: no lower limit */
    /* decode split-K only */
    float *part_o;   /* (n_splits, n_q_total, n_heads, HD) normalised partial outputs */
    float *part_lse; /* (n_splits, n_q_total, n_heads) log2-domain LSE of each part */
    int n_splits;
    int n_q_total; /* query rows of the whole batch (decode partial layout) */
    int early;     /* attn_args.early_dependents */
};

#define FG_NEG_INF (-__int_as_float(0x7f800000))

/* Lets kernel k use smem bytes of dynamic shared memory and asks for the largest shared-memory
 * carve-out, so as many blocks share an SM as their registers allow (host side, every launcher). */
template <typename K> static inline cudaError_t attn_allow_smem(K *k, size_t smem) {
    const void *f = reinterpret_cast<const void *>(k);
    cudaError_t e = cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(f, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 cudaSharedmemCarveoutMaxShared);
    return e;
}

/* One block's share of a prefill launch: BM packed query rows from r0 of sequence s and KV head
 * kvh. Packed row gr is query token gr / G of head kvh·G + gr % G (G = group), so the G heads of
 * a group share each K/V tile. kv_end: keys past it are masked for every row of the tile. */
struct attn_tile {
    int s, kvh, r0, q0, rows, kvlen, pos0, kv_end;
    const int *bt; /* the sequence's block-table row */

    /* Packed row gr as a (token, head) row of q, out and lse. */
    __device__ __forceinline__ size_t qrow(const attn_kparams &p, int gr) const {
        return (size_t)(q0 + gr / p.group) * p.n_heads + kvh * p.group + gr % p.group;
    }
    /* Keys ≥ key_limit(gr) are masked for packed row gr. */
    __device__ __forceinline__ int key_limit(const attn_kparams &p, int gr) const {
        return p.causal ? min(kvlen, pos0 + gr / p.group + 1) : kvlen;
    }
    /* Keys < key_low(gr) are masked for packed row gr (the sliding window; 0 without one). */
    __device__ __forceinline__ int key_low(const attn_kparams &p, int gr) const {
        return p.window > 0 ? max(0, key_limit(p, gr) - p.window) : 0;
    }
};

/* Fills w for rows r0 .. r0+bm-1 of (s, kvh); false when the sequence has no row there. */
__device__ __forceinline__ bool attn_tile_at(attn_tile &w, const attn_kparams &p, int s, int kvh,
                                             int r0, int bm) {
    w.s = s;
    w.kvh = kvh;
    w.r0 = r0;
    w.q0 = p.q_start[s];
    w.rows = (p.q_start[s + 1] - w.q0) * p.group;
    if (r0 >= w.rows) return false;
    w.kvlen = p.kv_len[s];
    w.pos0 = w.kvlen - w.rows / p.group;
    w.bt = p.block_table + (size_t)s * p.max_pages;
    w.kv_end = w.key_limit(p, min(r0 + bm, w.rows) - 1);
    return true;
}

/* 2^x on the special-function unit (ex2.approx: ~2 ulp, -inf → 0). */
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

template <typename T> struct attn_type;
template <> struct attn_type<__nv_bfloat16> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
    static __device__ __forceinline__ float to_float(__nv_bfloat16 x) {
        return __bfloat162float(x);
    }
    static __device__ __forceinline__ __nv_bfloat16 from_float(float x) {
        return __float2bfloat16(x);
    }
};
template <> struct attn_type<__half> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
    static __device__ __forceinline__ float to_float(__half x) {
        return __half2float(x);
    }
    static __device__ __forceinline__ __half from_float(float x) {
        return __float2half(x);
    }
};

template <typename T>
__device__ __forceinline__ void mma_16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float *c, const uint32_t *a, uint32_t b0,
                                                         uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma_16816<__half>(float *c, const uint32_t *a, uint32_t b0,
                                                  uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t *r, uint32_t saddr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(saddr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t *r, uint32_t saddr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(saddr));
}

/* 16-byte global→shared copy; when !valid the 16 bytes are zero-filled and src is not read. */
__device__ __forceinline__ void cp_async16(uint32_t saddr, const void *src, bool valid) {
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(saddr), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::);
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

/* Element offset of (row, col) in a swizzled tile of HD-wide rows; col a multiple of 8 for
 * chunk addresses. */
template <int HD> __device__ __forceinline__ int swz(int row, int col) {
    return row * HD + ((((col >> 3) ^ (row & 7))) << 3) + (col & 7);
}

/* Address of K/V row `key` of sequence `bt` (its block-table row) for kv head kvh. */
template <int HD>
__device__ __forceinline__ size_t kv_row_offset(const int *bt, int key, int page_size,
                                                int page_shift, int n_kv_heads, int kvh) {
    int page, row;
    if (page_shift >= 0) {
        page = __ldg(bt + (key >> page_shift));
        row = key & (page_size - 1);
    } else {
        page = __ldg(bt + key / page_size);
        row = key % page_size;
    }
    size_t slot = (size_t)page * page_size + row;
    return (slot * n_kv_heads + kvh) * HD;
}

/* Loads a tile of ROWS keys × HD into swizzled shared memory through the page table, NT threads
 * cooperating (thread index tid); keys ≥ key_end are zero-filled. With pool2/s2 set, the same
 * rows of a second pool (V beside K) load too, reusing the address arithmetic. */
template <typename T, int HD, int ROWS, int NT>
__device__ __forceinline__ void load_kv_tile(T *s, const T *pool, const int *bt, int key0,
                                             int key_end, int page_size, int page_shift,
                                             int n_kv_heads, int kvh, int tid, T *s2 = nullptr,
                                             const T *pool2 = nullptr) {
    constexpr int CPR = HD / 8; /* 16-byte chunks per row */
    constexpr int TOTAL = ROWS * CPR;
    static_assert(TOTAL % NT == 0, "tile chunks must divide evenly over the threads");
    const uint32_t sbase = smem_u32(s), sbase2 = s2 ? smem_u32(s2) : 0u;
#pragma unroll
    for (int i = 0; i < TOTAL / NT; i++) {
        int c = tid + i * NT;
        int row = c / CPR, ch = c % CPR;
        int key = key0 + row;
        bool valid = key < key_end;
        size_t off = 0;
        if (valid)
            off = kv_row_offset<HD>(bt, key, page_size, page_shift, n_kv_heads, kvh) + ch * 8;
        uint32_t so = 2u * (uint32_t)swz<HD>(row, ch * 8);
        cp_async16(sbase + so, pool + off, valid);
        if (pool2) cp_async16(sbase2 + so, pool2 + off, valid);
    }
}

/* One warp's scores over one K/V tile of BN keys for its R×16 query rows: S = Q Kᵀ, mask,
 * online softmax update of (m, l) and rescale of o; P comes back packed as A fragments in pa.
 * Q comes from registers (QREG: qf holds the fragments) or is re-read per k-step from the
 * swizzled Q tile sQ at rows qrow0 + 16r (saves R·HD/4 registers). m is in the exp2 domain; l is
 * this thread's partial row sum (reduce over the quad at the end). Index 2r / 2r+1 of m, l, lim,
 * lo are rows g and g + 8 of m-tile r; keys ≥ lim and keys < lo (a sliding window's lower end)
 * are masked (MASK only). Each K fragment loaded
 * from shared memory feeds R mma's, which is what R > 1 buys. */
template <typename T, int HD, int BN, int R, bool QREG, bool MASK>
__device__ __forceinline__ void
warp_qk_softmax(const uint32_t (&qf)[QREG ? R : 1][QREG ? HD / 16 : 1][4], const T *sQ, int qrow0,
                const T *sK, float (&o)[R][HD / 8][4], float (&m)[2 * R], float (&l)[2 * R],
                uint32_t (&pa)[R][BN / 16][4], float scale_log2, int key0, const int (&lim)[2 * R],
                const int (&lo)[2 * R], int lane) {
    float s[R][BN / 8][4];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int i = 0; i < BN / 8; i++)
            s[r][i][0] = s[r][i][1] = s[r][i][2] = s[r][i][3] = 0.f;

    const uint32_t kb = smem_u32(sK);
    const int li = lane >> 3, lr = lane & 7;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        uint32_t qa[R][4];
#pragma unroll
        for (int r = 0; r < R; r++) {
            if constexpr (QREG) {
                qa[r][0] = qf[r][kk][0];
                qa[r][1] = qf[r][kk][1];
                qa[r][2] = qf[r][kk][2];
                qa[r][3] = qf[r][kk][3];
            } else {
                int row = qrow0 + r * 16 + (li & 1) * 8 + lr;
                ldmatrix_x4(qa[r],
                            smem_u32(sQ) + 2u * (uint32_t)swz<HD>(row, kk * 16 + (li >> 1) * 8));
            }
        }
#pragma unroll
        for (int nn = 0; nn < BN / 16; nn++) {
            uint32_t b[4];
            int key = nn * 16 + (li >> 1) * 8 + lr;
            int d = kk * 16 + (li & 1) * 8;
            ldmatrix_x4(b, kb + 2u * (uint32_t)swz<HD>(key, d));
#pragma unroll
            for (int r = 0; r < R; r++) {
                mma_16816<T>(s[r][2 * nn], qa[r], b[0], b[1]);
                mma_16816<T>(s[r][2 * nn + 1], qa[r], b[2], b[3]);
            }
        }
    }

    const int t = lane & 3;
#pragma unroll
    for (int r = 0; r < R; r++) {
        if (MASK) {
#pragma unroll
            for (int i = 0; i < BN / 8; i++) {
                int key = key0 + i * 8 + 2 * t;
                if (key >= lim[2 * r] || key < lo[2 * r]) s[r][i][0] = FG_NEG_INF;
                if (key + 1 >= lim[2 * r] || key + 1 < lo[2 * r]) s[r][i][1] = FG_NEG_INF;
                if (key >= lim[2 * r + 1] || key < lo[2 * r + 1]) s[r][i][2] = FG_NEG_INF;
                if (key + 1 >= lim[2 * r + 1] || key + 1 < lo[2 * r + 1]) s[r][i][3] = FG_NEG_INF;
            }
        }
        float mx0 = FG_NEG_INF, mx1 = FG_NEG_INF;
#pragma unroll
        for (int i = 0; i < BN / 8; i++) {
            mx0 = fmaxf(mx0, fmaxf(s[r][i][0], s[r][i][1]));
            mx1 = fmaxf(mx1, fmaxf(s[r][i][2], s[r][i][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        float mn0 = fmaxf(m[2 * r], mx0 * scale_log2), mn1 = fmaxf(m[2 * r + 1], mx1 * scale_log2);
        /* A row with every key masked so far keeps m = -inf; subtract 0 to avoid inf - inf. */
        float mu0 = mn0 == FG_NEG_INF ? 0.f : mn0, mu1 = mn1 == FG_NEG_INF ? 0.f : mn1;
        float a0 = fast_exp2(m[2 * r] - mu0), a1 = fast_exp2(m[2 * r + 1] - mu1);
        m[2 * r] = mn0;
        m[2 * r + 1] = mn1;
        float rs0 = 0.f, rs1 = 0.f;
#pragma unroll
        for (int i = 0; i < BN / 8; i++) {
            s[r][i][0] = fast_exp2(fmaf(s[r][i][0], scale_log2, -mu0));
            s[r][i][1] = fast_exp2(fmaf(s[r][i][1], scale_log2, -mu0));
            s[r][i][2] = fast_exp2(fmaf(s[r][i][2], scale_log2, -mu1));
            s[r][i][3] = fast_exp2(fmaf(s[r][i][3], scale_log2, -mu1));
            rs0 += s[r][i][0] + s[r][i][1];
            rs1 += s[r][i][2] + s[r][i][3];
        }
        l[2 * r] = l[2 * r] * a0 + rs0;
        l[2 * r + 1] = l[2 * r + 1] * a1 + rs1;
#pragma unroll
        for (int i = 0; i < HD / 8; i++) {
            o[r][i][0] *= a0;
            o[r][i][1] *= a0;
            o[r][i][2] *= a1;
            o[r][i][3] *= a1;
        }
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            pa[r][kk][0] = attn_type<T>::pack(s[r][2 * kk][0], s[r][2 * kk][1]);
            pa[r][kk][1] = attn_type<T>::pack(s[r][2 * kk][2], s[r][2 * kk][3]);
            pa[r][kk][2] = attn_type<T>::pack(s[r][2 * kk + 1][0], s[r][2 * kk + 1][1]);
            pa[r][kk][3] = attn_type<T>::pack(s[r][2 * kk + 1][2], s[r][2 * kk + 1][3]);
        }
    }
}

/* o += P V for one tile of BN keys; P as packed A fragments from warp_qk_softmax. Each V
 * fragment feeds R mma's. */
template <typename T, int HD, int BN, int R>
__device__ __forceinline__ void warp_pv(const uint32_t (&pa)[R][BN / 16][4], const T *sV,
                                        float (&o)[R][HD / 8][4], int lane) {
    const uint32_t vb = smem_u32(sV);
    const int li = lane >> 3, lr = lane & 7;
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
#pragma unroll
        for (int dd = 0; dd < HD / 16; dd++) {
            uint32_t b[4];
            int key = kk * 16 + (li & 1) * 8 + lr;
            int d = dd * 16 + (li >> 1) * 8;
            ldmatrix_x4_trans(b, vb + 2u * (uint32_t)swz<HD>(key, d));
#pragma unroll
            for (int r = 0; r < R; r++) {
                mma_16816<T>(o[r][2 * dd], pa[r][kk], b[0], b[1]);
                mma_16816<T>(o[r][2 * dd + 1], pa[r][kk], b[2], b[3]);
            }
        }
    }
}

/* The warp's 16×HD slice of a swizzled Q tile (rows row0..row0+15) into A fragments. */
template <int HD>
__device__ __forceinline__ void load_q_frags(uint32_t (&qf)[HD / 16][4], const void *sQ, int row0,
                                             int lane) {
    const uint32_t qb = smem_u32(sQ);
    const int li = lane >> 3, lr = lane & 7;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        int row = row0 + (li & 1) * 8 + lr;
        int d = kk * 16 + (li >> 1) * 8;
        ldmatrix_x4(qf[kk], qb + 2u * (uint32_t)swz<HD>(row, d));
    }
}

#endif
