/* kv_write.cu — store new K/V rows into their KV-cache pages, with rotate_half RoPE fused.
 *
 * One block per new token. qkv_store_launch takes the rows from one fused q|k|v projection. V rows (and K rows without RoPE) move as 16-byte vectors. With RoPE
 * the block first computes the token's head_dim/2 (cos, sin) pairs into shared memory (sincosf on
 * pos * freq in fp32, as the C twin does), then each thread turns pairs (i, i + half) of K (stored
 * to the page) and of Q (in place), fp32 arithmetic, one rounding to the storage type.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>

#include "attention.h"
#include "kv_write.h"

template <typename T> __device__ __forceinline__ float kvw_f(T x);
template <> __device__ __forceinline__ float kvw_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <> __device__ __forceinline__ float kvw_f(__half x) { return __half2float(x); }
template <typename T> __device__ __forceinline__ T kvw_t(float x);
template <> __device__ __forceinline__ __nv_bfloat16 kvw_t(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ __half kvw_t(float x) { return __float2half(x); }

struct kvw_params {
    void *k_pool, *v_pool;
    const void *k, *v;
    const int *slots;
    int n_kv_heads, head_dim;
    const int *pos;
    const float *freqs;
    void *q;
    int n_heads;
    /* Elements from one token's row to the next in k, v and q (the packed layouts when the rows
     * are separate tensors; q+k+v dims when they are slices of one fused projection). q_out:
     * where rotated q rows go, packed; NULL = in place. */
    size_t k_stride, q_stride;
    void *q_out;
};

/* Rotate the pairs of n_heads rows of head_dim starting at src into dst (may alias). */
template <typename T>
__device__ __forceinline__ void kvw_rope_rows(T *dst, const T *src, int n_heads, int head_dim,
                                              const float2 *cs)
{
    const int half = head_dim / 2;
    for (int idx = threadIdx.x; idx < n_heads * half; idx += blockDim.x) {
        int h = idx / half, i = idx % half;
        const T *r = src + (size_t)h * head_dim;
        float a = kvw_f(r[i]), b = kvw_f(r[i + half]);
        float2 c = cs[i];
        T *w = dst + (size_t)h * head_dim;
        w[i] = kvw_t<T>(a * c.x - b * c.y);
        w[i + half] = kvw_t<T>(b * c.x + a * c.y);
    }
}

template <typename T> __global__ void kv_write_kernel(const kvw_params p)
{
    extern __shared__ float2 kvw_cs[];
    const int tok = blockIdx.x;
    const size_t kv_dim = (size_t)p.n_kv_heads * p.head_dim;
    const size_t slot = (size_t)p.slots[tok];
    const T *ksrc = static_cast<const T *>(p.k) + tok * p.k_stride;
    const T *vsrc = static_cast<const T *>(p.v) + tok * p.k_stride;
    T *kdst = static_cast<T *>(p.k_pool) + slot * kv_dim;
    T *vdst = static_cast<T *>(p.v_pool) + slot * kv_dim;

    const int vec = 16 / sizeof(T);
    for (size_t i = threadIdx.x; i < kv_dim / vec; i += blockDim.x)
        reinterpret_cast<uint4 *>(vdst)[i] = reinterpret_cast<const uint4 *>(vsrc)[i];
    if (!p.pos) {
        for (size_t i = threadIdx.x; i < kv_dim / vec; i += blockDim.x)
            reinterpret_cast<uint4 *>(kdst)[i] = reinterpret_cast<const uint4 *>(ksrc)[i];
        return;
    }
    const int half = p.head_dim / 2;
    const float fpos = (float)p.pos[tok];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float sn, cn;
        sincosf(fpos * p.freqs[i], &sn, &cn);
        kvw_cs[i] = make_float2(cn, sn);
    }
    __syncthreads();
    kvw_rope_rows<T>(kdst, ksrc, p.n_kv_heads, p.head_dim, kvw_cs);
    if (p.q) {
        T *qrow = static_cast<T *>(p.q) + (size_t)tok * p.q_stride;
        T *qdst = p.q_out ? static_cast<T *>(p.q_out) + (size_t)tok * p.n_heads * p.head_dim : qrow;
        kvw_rope_rows<T>(qdst, qrow, p.n_heads, p.head_dim, kvw_cs);
    }
}

static int kvw_launch(const kvw_params &p, int dtype, int n, void *stream, char *err,
                      size_t errlen)
{
    if (n == 0) return 0;
    size_t smem = p.pos ? sizeof(float2) * (size_t)(p.head_dim / 2) : 0;
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    if (dtype == ATTN_DTYPE_BF16)
        kv_write_kernel<__nv_bfloat16><<<n, 128, smem, st>>>(p);
    else
        kv_write_kernel<__half><<<n, 128, smem, st>>>(p);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        snprintf(err, errlen, "kv_write launch: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

static int kvw_bad_dtype(int dtype, char *err, size_t errlen)
{
    if (dtype == ATTN_DTYPE_BF16 || dtype == ATTN_DTYPE_FP16) return 0;
    snprintf(err, errlen, "kv_write: unknown dtype %d", dtype);
    return 1;
}

extern "C" int kv_write_launch(const struct kv_write_args *a, char *err, size_t errlen)
{
    if (kvw_bad_dtype(a->dtype, err, errlen)) return -1;
    if (a->head_dim < 2 || a->head_dim % 8 || a->n_kv_heads < 1 || a->n < 0 ||
        (!a->pos) != (!a->freqs) || (a->q && (!a->pos || a->n_heads < 1))) {
        snprintf(err, errlen, "kv_write: bad shape (head_dim %d must be a multiple of 8, "
                              "pos and freqs come together, q needs them)", a->head_dim);
        return -1;
    }
    size_t kv_dim = (size_t)a->n_kv_heads * a->head_dim;
    kvw_params p = {a->k_pool, a->v_pool, a->k,     a->v,     a->slots,
                    a->n_kv_heads, a->head_dim, a->pos, a->freqs, a->q, a->n_heads,
                    kv_dim, (size_t)a->n_heads * a->head_dim, NULL};
    return kvw_launch(p, a->dtype, a->n, a->stream, err, errlen);
}

extern "C" int qkv_store_launch(const struct qkv_store_args *a, char *err, size_t errlen)
{
    if (kvw_bad_dtype(a->dtype, err, errlen)) return -1;
    if (a->head_dim < 2 || a->head_dim % 8 || a->n_kv_heads < 1 || a->n_heads < 1 || a->n < 0) {
        snprintf(err, errlen, "qkv_store: bad shape (head_dim %d must be a multiple of 8)",
                 a->head_dim);
        return -1;
    }
    size_t qd = (size_t)a->n_heads * a->head_dim, kvd = (size_t)a->n_kv_heads * a->head_dim;
    size_t esz = 2, row = qd + 2 * kvd;
    const char *qkv = static_cast<const char *>(a->qkv);
    kvw_params p = {a->k_pool,   a->v_pool,    qkv + qd * esz, qkv + (qd + kvd) * esz,
                    a->slots,    a->n_kv_heads, a->head_dim,   a->pos,
                    a->freqs,    const_cast<void *>(a->qkv), a->n_heads, row, row, a->q_out};
    return kvw_launch(p, a->dtype, a->n, a->stream, err, errlen);
}
