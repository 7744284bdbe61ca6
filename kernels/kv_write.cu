/* kv_write.cu — store new K/V rows into their KV-cache pages, with rotate_half RoPE fused.
 *
 * One block per (new token, head): the q heads are turned (into q_out, or in place), the KV heads
 * stored, V as 16-byte vectors, K turned on the way (or copied without RoPE). qkv_store_launch
 * takes the rows from one fused q|k|v projection. Each thread turns pairs (i, i + half) with
 * sincosf(pos * freq_i) in fp32, as the C twin does, one rounding to the storage type.
 * Why a block per head: at decode the kernel stores one token per sequence, and one block per token
 * (the first version) walked the token's 32 q and 8 K heads in 20 rounds on 128 threads:
 * 6.6 µs per layer at batch 1 on the H200, 4.5% of a Llama-3-8B step (bench/ENGINE.md, breakdown).
 * Launched under programmatic dependent launch behind the q|k|v projection (decode graphs).
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "kv_write.h"

template <typename T> __device__ __forceinline__ float kvw_f(T x);
template <> __device__ __forceinline__ float kvw_f(__nv_bfloat16 x) {
    return __bfloat162float(x);
}
template <> __device__ __forceinline__ float kvw_f(__half x) {
    return __half2float(x);
}
template <typename T> __device__ __forceinline__ T kvw_t(float x);
template <> __device__ __forceinline__ __nv_bfloat16 kvw_t(float x) {
    return __float2bfloat16(x);
}
template <> __device__ __forceinline__ __half kvw_t(float x) {
    return __float2half(x);
}

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

/* Rotate the pairs (i, i + half) of one head_dim row src into dst (may alias: each pair is read
 * and written by the same thread), fp32 arithmetic, one rounding to T. */
template <typename T>
__device__ __forceinline__ void kvw_rope_row(T *dst, const T *src, int head_dim, float fpos,
                                             const float *freqs) {
    const int half = head_dim / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float sn, cn;
        sincosf(fpos * freqs[i], &sn, &cn);
        const float a = kvw_f(src[i]), b = kvw_f(src[i + half]);
        dst[i] = kvw_t<T>(a * cn - b * sn);
        dst[i + half] = kvw_t<T>(b * cn + a * sn);
    }
}

__device__ __forceinline__ void kvw_copy_row(void *dst, const void *src, int n16) {
    for (int i = threadIdx.x; i < n16; i += blockDim.x)
        reinterpret_cast<uint4 *>(dst)[i] = reinterpret_cast<const uint4 *>(src)[i];
}

/* Programmatic dependent launch: the next kernel (attention) may launch at once and waits for
 * this grid; this one waits for the kernel before it (the q|k|v projection) before any read. */
__device__ __forceinline__ void kvw_allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void kvw_wait_prerequisites() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

/* Block (token, head): blocks y < n_q (n_heads when q is given, else 0) turn q head y; the others
 * store KV head y - n_q (V copied, K turned when pos is given, else copied). */
template <typename T> __global__ void kv_write_kernel(const kvw_params p) {
    const int tok = blockIdx.x, n_q = p.q ? p.n_heads : 0, hd = p.head_dim;
    kvw_allow_dependents();
    kvw_wait_prerequisites();
    const float fpos = p.pos ? (float)p.pos[tok] : 0.0f;
    if ((int)blockIdx.y < n_q) {
        T *qrow = static_cast<T *>(p.q) + (size_t)tok * p.q_stride + (size_t)blockIdx.y * hd;
        T *qdst = p.q_out ? static_cast<T *>(p.q_out) + ((size_t)tok * p.n_heads + blockIdx.y) * hd
                          : qrow;
        kvw_rope_row<T>(qdst, qrow, hd, fpos, p.freqs);
        return;
    }
    const int kvh = (int)blockIdx.y - n_q;
    const size_t kv_dim = (size_t)p.n_kv_heads * hd, slot = (size_t)p.slots[tok];
    const size_t src = (size_t)tok * p.k_stride + (size_t)kvh * hd;
    const size_t dst = slot * kv_dim + (size_t)kvh * hd;
    const int n16 = hd * (int)sizeof(T) / 16;
    kvw_copy_row(static_cast<T *>(p.v_pool) + dst, static_cast<const T *>(p.v) + src, n16);
    if (p.pos)
        kvw_rope_row<T>(static_cast<T *>(p.k_pool) + dst, static_cast<const T *>(p.k) + src, hd,
                        fpos, p.freqs);
    else
        kvw_copy_row(static_cast<T *>(p.k_pool) + dst, static_cast<const T *>(p.k) + src, n16);
}

/* Under programmatic dependent launch behind the kernel before it, unless FLASHGEN_PDL=0 (A/B
 * timing; read at every launch, so decode graphs recorded after a change follow it). */
static int kvw_pdl(void) {
    const char *v = getenv("FLASHGEN_PDL");
    return !(v && !strcmp(v, "0"));
}

static int kvw_launch(const kvw_params &p, int dtype, int n, void *stream, char *err,
                      size_t errlen) {
    if (n == 0) return 0;
    const int n_q = p.q ? p.n_heads : 0, half = p.head_dim / 2;
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.gridDim = dim3((unsigned)n, (unsigned)(n_q + p.n_kv_heads));
    cfg.blockDim = dim3((unsigned)(half >= 128 ? 128 : (half + 31) / 32 * 32));
    cfg.stream = static_cast<cudaStream_t>(stream);
    cfg.attrs = attr;
    cfg.numAttrs = kvw_pdl() ? 1 : 0;
    cudaError_t e = dtype == ATTN_DTYPE_BF16
                        ? cudaLaunchKernelEx(&cfg, kv_write_kernel<__nv_bfloat16>, p)
                        : cudaLaunchKernelEx(&cfg, kv_write_kernel<__half>, p);
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess) {
        snprintf(err, errlen, "kv_write launch: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

static int kvw_bad_dtype(int dtype, char *err, size_t errlen) {
    if (dtype == ATTN_DTYPE_BF16 || dtype == ATTN_DTYPE_FP16) return 0;
    snprintf(err, errlen, "kv_write: unknown dtype %d", dtype);
    return 1;
}

extern "C" int kv_write_launch(const struct kv_write_args *a, char *err, size_t errlen) {
    if (kvw_bad_dtype(a->dtype, err, errlen)) return -1;
    if (a->head_dim < 2 || a->head_dim % 8 || a->n_kv_heads < 1 || a->n < 0 ||
        (!a->pos) != (!a->freqs) || (a->q && (!a->pos || a->n_heads < 1))) {
        snprintf(err, errlen,
                 "kv_write: bad shape (head_dim %d must be a multiple of 8, "
                 "pos and freqs come together, q needs them)",
                 a->head_dim);
        return -1;
    }
    size_t kv_dim = (size_t)a->n_kv_heads * a->head_dim;
    kvw_params p = {a->k_pool,
                    a->v_pool,
                    a->k,
                    a->v,
                    a->slots,
                    a->n_kv_heads,
                    a->head_dim,
                    a->pos,
                    a->freqs,
                    a->q,
                    a->n_heads,
                    kv_dim,
                    (size_t)a->n_heads * a->head_dim,
                    NULL};
    return kvw_launch(p, a->dtype, a->n, a->stream, err, errlen);
}

extern "C" int qkv_store_launch(const struct qkv_store_args *a, char *err, size_t errlen) {
    if (kvw_bad_dtype(a->dtype, err, errlen)) return -1;
    if (a->head_dim < 2 || a->head_dim % 8 || a->n_kv_heads < 1 || a->n_heads < 1 || a->n < 0) {
        snprintf(err, errlen, "qkv_store: bad shape (head_dim %d must be a multiple of 8)",
                 a->head_dim);
        return -1;
    }
    size_t qd = (size_t)a->n_heads * a->head_dim, kvd = (size_t)a->n_kv_heads * a->head_dim;
    size_t esz = 2, row = qd + 2 * kvd;
    const char *qkv = static_cast<const char *>(a->qkv);
    kvw_params p = {a->k_pool,
                    a->v_pool,
                    qkv + qd * esz,
                    qkv + (qd + kvd) * esz,
                    a->slots,
                    a->n_kv_heads,
                    a->head_dim,
                    a->pos,
                    a->freqs,
                    const_cast<void *>(a->qkv),
                    a->n_heads,
                    row,
                    row,
                    a->q_out};
    return kvw_launch(p, a->dtype, a->n, a->stream, err, errlen);
}
