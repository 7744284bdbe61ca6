/* family.cu — the family switches' ops on the CUDA backend (kernels/family.h): elementwise and
 * per-row kernels beside the fused GEMV/GEMM path of cuda_ops.cu, which calls them where a
 * model's config asks (model/forward.c). Each is one pass over its data in bf16 with fp32
 * arithmetic, rounded once on the store, like the rest of the backend (the norms' weights are
 * fp32, kernels/ops.h); none is fused into a GEMM epilogue yet (correctness first: they are a
 * few percent of a decode step's bytes).
 * Layout: one thread per element for the elementwise ops (grid-stride), one block per row for
 * norm_add (rows are the model dim, up to a few thousand), one warp per head vector for
 * head_norm (head_dim 64..256).
 */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "family.h"

typedef __nv_bfloat16 bf16;

#define FAMILY_THREADS 256

static unsigned family_blocks(size_t n) {
    size_t b = (n + FAMILY_THREADS - 1) / FAMILY_THREADS;
    return (unsigned)(b < 65535u * 16u ? (b ? b : 1) : 65535u * 16u); /* grid-stride beyond */
}

static int family_last_error(void) {
    return (int)cudaGetLastError();
}

/* Sum of v over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it. */
__device__ float family_block_sum(float v) {
    __shared__ float warp_sums[32];
    __shared__ float total;
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        int n_warps = blockDim.x >> 5;
        float s = threadIdx.x < n_warps ? warp_sums[threadIdx.x] : 0.0f;
        for (int off = 16; off > 0; off >>= 1)
            s += __shfl_xor_sync(0xffffffffu, s, off);
        if (threadIdx.x == 0) total = s;
    }
    __syncthreads();
    return total;
}

__global__ void family_add_rows_kernel(bf16 *x, const bf16 *bias, size_t n, int dim) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = __float2bfloat16(__bfloat162float(x[i]) + __bfloat162float(bias[i % dim]));
}

/* One warp per (token, q or k head): the row's sum of squares, then x * rsqrt(mean + eps) * w. */
__global__ void family_head_norm_kernel(bf16 *qkv, const float *q_w, const float *k_w, int n,
                                        int n_heads, int n_kv_heads, int head_dim, float eps) {
    const int warps = blockDim.x >> 5, lane = threadIdx.x & 31;
    const long item = (long)blockIdx.x * warps + (threadIdx.x >> 5);
    const int per_tok = n_heads + n_kv_heads; /* normed heads per token (v is not) */
    if (item >= (long)n * per_tok) return;
    const int t = (int)(item / per_tok), h = (int)(item % per_tok);
    bf16 *x = qkv + (size_t)t * (n_heads + 2 * n_kv_heads) * head_dim + (size_t)h * head_dim;
    const float *w = h < n_heads ? q_w : k_w;
    float ss = 0.f;
    for (int i = lane; i < head_dim; i += 32) {
        float v = __bfloat162float(x[i]);
        ss += v * v;
    }
    for (int off = 16; off > 0; off >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, off);
    const float inv = rsqrtf(ss / head_dim + eps);
    for (int i = lane; i < head_dim; i += 32)
        x[i] = __float2bfloat16(__bfloat162float(x[i]) * inv * w[i]);
}

/* One block per row: x += y * rsqrt(mean(y²) + eps) * w. */
__global__ void family_norm_add_kernel(bf16 *x, const bf16 *y, const float *w, int dim, float eps) {
    const bf16 *yr = y + (size_t)blockIdx.x * dim;
    bf16 *xr = x + (size_t)blockIdx.x * dim;
    float ss = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = __bfloat162float(yr[i]);
        ss += v * v;
    }
    const float inv = rsqrtf(family_block_sum(ss) / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        xr[i] = __float2bfloat16(__bfloat162float(xr[i]) + __bfloat162float(yr[i]) * inv * w[i]);
}

/* gelu with the tanh approximation, as torch's gelu(approximate="tanh") */
__device__ __forceinline__ float family_gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

__global__ void family_geglu_kernel(bf16 *out, const bf16 *gu, int ffn, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / (size_t)ffn, j = i % (size_t)ffn;
        const bf16 *row = gu + t * 2 * (size_t)ffn;
        out[i] = __float2bfloat16(family_gelu_tanh(__bfloat162float(row[j])) *
                                  __bfloat162float(row[ffn + j]));
    }
}

__global__ void family_scale_kernel(bf16 *x, size_t n, float s) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = __float2bfloat16(__bfloat162float(x[i]) * s);
}

__global__ void family_softcap_kernel(float *x, size_t n, float cap) {
    const float inv = 1.0f / cap;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = cap * tanhf(x[i] * inv);
}

/* ---- launchers ---------------------------------------------------------------------------- */

extern "C" int family_add_rows(void *x, const void *bias, int n, int dim, void *stream) {
    if (n <= 0 || dim <= 0) return n == 0 ? 0 : (int)cudaErrorInvalidValue;
    size_t total = (size_t)n * dim;
    family_add_rows_kernel<<<family_blocks(total), FAMILY_THREADS, 0, (cudaStream_t)stream>>>(
        (bf16 *)x, (const bf16 *)bias, total, dim);
    return family_last_error();
}

extern "C" int family_head_norm(void *qkv, const void *q_w, const void *k_w, int n, int n_heads,
                                int n_kv_heads, int head_dim, float eps, void *stream) {
    if (n < 0 || n_heads < 1 || n_kv_heads < 1 || head_dim < 1) return (int)cudaErrorInvalidValue;
    if (n == 0) return 0;
    const int warps = 4;
    long items = (long)n * (n_heads + n_kv_heads);
    family_head_norm_kernel<<<(unsigned)((items + warps - 1) / warps), warps * 32, 0,
                              (cudaStream_t)stream>>>(
        (bf16 *)qkv, (const float *)q_w, (const float *)k_w, n, n_heads, n_kv_heads, head_dim, eps);
    return family_last_error();
}

extern "C" int family_norm_add(void *x, const void *y, const void *w, int n, int dim, float eps,
                               void *stream) {
    if (n < 0 || dim < 1) return (int)cudaErrorInvalidValue;
    if (n == 0) return 0;
    int threads = dim >= 1024 ? 1024 : (dim + 31) / 32 * 32;
    family_norm_add_kernel<<<(unsigned)n, threads, 0, (cudaStream_t)stream>>>(
        (bf16 *)x, (const bf16 *)y, (const float *)w, dim, eps);
    return family_last_error();
}

extern "C" int family_geglu(void *out, const void *gu, int n, int ffn, void *stream) {
    if (n < 0 || ffn < 1) return (int)cudaErrorInvalidValue;
    if (n == 0) return 0;
    size_t total = (size_t)n * ffn;
    family_geglu_kernel<<<family_blocks(total), FAMILY_THREADS, 0, (cudaStream_t)stream>>>(
        (bf16 *)out, (const bf16 *)gu, ffn, total);
    return family_last_error();
}

extern "C" int family_scale(void *x, size_t n, float s, void *stream) {
    if (n == 0) return 0;
    family_scale_kernel<<<family_blocks(n), FAMILY_THREADS, 0, (cudaStream_t)stream>>>((bf16 *)x, n,
                                                                                       s);
    return family_last_error();
}

extern "C" int family_softcap(float *x, size_t n, float cap, void *stream) {
    if (!(cap > 0)) return (int)cudaErrorInvalidValue;
    if (n == 0) return 0;
    family_softcap_kernel<<<family_blocks(n), FAMILY_THREADS, 0, (cudaStream_t)stream>>>(x, n, cap);
    return family_last_error();
}
