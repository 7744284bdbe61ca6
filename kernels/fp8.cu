/* fp8.cu — FP8 (e4m3) on Hopper: row-wise quantization, the W8A8 GEMM through cuBLASLt, and a
 * decode GEMV that reads e4m3 weights (format and contracts: fp8.h).
 *
 * Quantization (fg_fp8_quant_rows): one block per row, three passes over the row (the sum of
 * squares when RMSNorm'ed, the amax, the quantization), the later ones finding the row in L1.
 * The same kernel quantizes weights at load (per output channel) and activations before a GEMM
 * (per token); the fused RMSNorm serves the prefill's norm → q|k|v and norm → gate|up products.
 *
 * GEMM (fg_fp8_gemm): cuBLASLt e4m3 × e4m3 → bf16 / fp32 with fp32 accumulation. cuBLASLt 13 has
 * the per-row / per-column scale vectors we need (OUTER_VEC_32F: the per-channel weight scales on
 * A, the per-token activation scales on B); where it has no algorithm for a shape, SPLIT mode
 * takes the unscaled fp32 product and scales it in one elementwise kernel of ours.
 *
 * GEMV (fg_fp8_gemv): the bf16 GEMV's design (gemv.cu: one mma.m16n8k16 with the activation rows
 * as A, 8 weight rows as B, k permuted per lane so that no shuffles are needed) on one byte per
 * weight, with 16 activation rows (a1 / a3 carry rows g + 8, as qgemv.cu). Lane (g, t) loads 16
 * bytes of W row g at k0 + 16t and the same 16 elements of x rows g and g + 8: four k16 steps.
 * Each e4m3 byte becomes the bf16 of its exact value without the conversion units (fp8v_bf16x4:
 * integer operations put its exponent and mantissa into bf16's fields, which is the e4m3 value
 * times 2^-120 exactly, subnormals included, and one bf16x2 multiply by 2^120 undoes the
 * offset). The products of bf16 x and these values are exact in fp32; the
 * row's scale multiplies the fp32 dot once in the epilogue. Programmatic dependent launch, warp
 * split of k, deterministic reduction in shared memory and the epilogues: as gemv.cu.
 */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp8.h"
#include "gemv.h"
#include "gemv_common.cuh"

/* ---- e4m3 conversions --------------------------------------------------------------------- */

/* two fp32 to e4m3 (round to nearest even, saturating to ±448), a in the low byte */
__device__ __forceinline__ uint32_t fp8_pack2(float a, float b) {
    uint16_t r;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(r) : "f"(b), "f"(a));
    return r;
}

__device__ __forceinline__ float bf_lo(uint32_t v) {
    return __uint_as_float(v << 16);
}
__device__ __forceinline__ float bf_hi(uint32_t v) {
    return __uint_as_float(v & 0xffff0000u);
}

/* ---- row-wise quantization ------------------------------------------------------------------ */

#define FP8_QUANT_THREADS 256

/* Sum (or max) of v over the block, the same bits in every thread: a fixed butterfly per warp,
 * then the warps' values in warp order. */
template <bool MAX> __device__ __forceinline__ float fp8_block_reduce(float v, float *red) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float o = __shfl_xor_sync(0xffffffffu, v, off);
        v = MAX ? fmaxf(v, o) : v + o;
    }
    __syncthreads(); /* red may still be read by the previous reduction */
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float r = red[0];
    for (int w = 1; w < (int)(blockDim.x >> 5); w++)
        r = MAX ? fmaxf(r, red[w]) : r + red[w];
    return r;
}

/* h of one 8-element chunk: x itself, or bf16(x · inv · gamma) (k_rmsnorm's order; gamma fp32) */
template <bool NORM>
__device__ __forceinline__ uint4 fp8_row_chunk(const uint4 *xr, const float *gamma, int i,
                                               float inv) {
    const uint4 v = xr[i];
    if (!NORM) return v;
    return gemv_norm_chunk(v, gemv_load_gamma(gamma + 8 * i), inv);
}

template <bool NORM>
__global__ void __launch_bounds__(FP8_QUANT_THREADS)
    fp8_quant_rows_kernel(uint8_t *q, float *scale, const __nv_bfloat16 *x, const float *gamma,
                          float eps, __nv_bfloat16 *h_out, int cols) {
    __shared__ float red[FP8_QUANT_THREADS / 32];
    const size_t row = blockIdx.x;
    const int chunks = cols / 8;
    const uint4 *xr = reinterpret_cast<const uint4 *>(x + row * cols);
    float inv = 0.0f;
    if (NORM) {
        float ss = 0.0f;
        for (int i = threadIdx.x; i < chunks; i += blockDim.x) {
            const uint4 v = xr[i];
            const uint32_t wd[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int e = 0; e < 4; e++)
                ss += bf_lo(wd[e]) * bf_lo(wd[e]) + bf_hi(wd[e]) * bf_hi(wd[e]);
        }
        inv = rsqrtf(fp8_block_reduce<false>(ss, red) / cols + eps);
    }
    float amax = 0.0f;
    for (int i = threadIdx.x; i < chunks; i += blockDim.x) {
        const uint4 h = fp8_row_chunk<NORM>(xr, gamma, i, inv);
        const uint32_t wd[4] = {h.x, h.y, h.z, h.w};
#pragma unroll
        for (int e = 0; e < 4; e++)
            amax = fmaxf(amax, fmaxf(fabsf(bf_lo(wd[e])), fabsf(bf_hi(wd[e]))));
    }
    amax = fp8_block_reduce<true>(amax, red);
    const float s = amax > 0.0f ? amax / FG_FP8_E4M3_MAX : 1.0f;
    if (threadIdx.x == 0) scale[row] = s;
    uint2 *qr = reinterpret_cast<uint2 *>(q + row * cols);
    uint4 *hr = h_out ? reinterpret_cast<uint4 *>(h_out + row * cols) : nullptr;
    for (int i = threadIdx.x; i < chunks; i += blockDim.x) {
        const uint4 h = fp8_row_chunk<NORM>(xr, gamma, i, inv);
        if (hr) hr[i] = h;
        const uint32_t wd[4] = {h.x, h.y, h.z, h.w};
        uint32_t b[4];
#pragma unroll
        for (int e = 0; e < 4; e++)
            b[e] = fp8_pack2(bf_lo(wd[e]) / s, bf_hi(wd[e]) / s);
        qr[i] = make_uint2(b[0] | b[1] << 16, b[2] | b[3] << 16);
    }
}

/* The same with the row held in registers (CPT chunks of 8 per thread: chunk i + k · blockDim.x),
 * x and gamma read once: the loop kernel above re-reads them from L1 in each pass, with one load
 * in flight per thread, and ran at ~470 GB/s on 8192 × 14336 activations (the H200, run 1 of
 * kernels/BENCH.md's FP8 section). Each thread sums its chunks in the same order and the block
 * reductions are the same, so both kernels give the same bits. */
template <bool NORM, int CPT>
__global__ void __launch_bounds__(FP8_QUANT_THREADS)
    fp8_quant_rows_reg(uint8_t *q, float *scale, const __nv_bfloat16 *x, const float *gamma,
                       float eps, __nv_bfloat16 *h_out, int cols) {
    __shared__ float red[FP8_QUANT_THREADS / 32];
    const size_t row = blockIdx.x;
    const int chunks = cols / 8;
    const uint4 *xr = reinterpret_cast<const uint4 *>(x + row * cols);
    uint4 v[CPT];
#pragma unroll
    for (int k = 0; k < CPT; k++) {
        const int i = threadIdx.x + k * blockDim.x;
        v[k] = i < chunks ? xr[i] : make_uint4(0, 0, 0, 0);
    }
    if (NORM) {
        float ss = 0.0f;
#pragma unroll
        for (int k = 0; k < CPT; k++) {
            if (threadIdx.x + k * blockDim.x >= chunks) break;
            const uint32_t wd[4] = {v[k].x, v[k].y, v[k].z, v[k].w};
#pragma unroll
            for (int e = 0; e < 4; e++)
                ss += bf_lo(wd[e]) * bf_lo(wd[e]) + bf_hi(wd[e]) * bf_hi(wd[e]);
        }
        const float inv = rsqrtf(fp8_block_reduce<false>(ss, red) / cols + eps);
#pragma unroll
        for (int k = 0; k < CPT; k++) {
            const int i = threadIdx.x + k * blockDim.x;
            if (i >= chunks) break;
            v[k] = gemv_norm_chunk(v[k], gemv_load_gamma(gamma + 8 * i), inv);
        }
    }
    float amax = 0.0f;
#pragma unroll
    for (int k = 0; k < CPT; k++) {
        const uint32_t wd[4] = {v[k].x, v[k].y, v[k].z, v[k].w};
#pragma unroll
        for (int e = 0; e < 4; e++)
            amax = fmaxf(amax, fmaxf(fabsf(bf_lo(wd[e])), fabsf(bf_hi(wd[e]))));
    }
    amax = fp8_block_reduce<true>(amax, red);
    const float s = amax > 0.0f ? amax / FG_FP8_E4M3_MAX : 1.0f;
    if (threadIdx.x == 0) scale[row] = s;
    uint2 *qr = reinterpret_cast<uint2 *>(q + row * cols);
    uint4 *hr = h_out ? reinterpret_cast<uint4 *>(h_out + row * cols) : nullptr;
#pragma unroll
    for (int k = 0; k < CPT; k++) {
        const int i = threadIdx.x + k * blockDim.x;
        if (i >= chunks) break;
        if (hr) hr[i] = v[k];
        const uint32_t wd[4] = {v[k].x, v[k].y, v[k].z, v[k].w};
        uint32_t b[4];
#pragma unroll
        for (int e = 0; e < 4; e++)
            b[e] = fp8_pack2(bf_lo(wd[e]) / s, bf_hi(wd[e]) / s);
        qr[i] = make_uint2(b[0] | b[1] << 16, b[2] | b[3] << 16);
    }
}

template <bool NORM>
static void fp8_quant_launch(int cpt, int rows, int threads, cudaStream_t s, uint8_t *q,
                             float *scale, const __nv_bfloat16 *x, const float *gamma, float eps,
                             __nv_bfloat16 *h_out, int cols) {
    if (cpt <= 1)
        fp8_quant_rows_reg<NORM, 1><<<rows, threads, 0, s>>>(q, scale, x, gamma, eps, h_out, cols);
    else if (cpt <= 2)
        fp8_quant_rows_reg<NORM, 2><<<rows, threads, 0, s>>>(q, scale, x, gamma, eps, h_out, cols);
    else if (cpt <= 4)
        fp8_quant_rows_reg<NORM, 4><<<rows, threads, 0, s>>>(q, scale, x, gamma, eps, h_out, cols);
    else if (cpt <= 8)
        fp8_quant_rows_reg<NORM, 8><<<rows, threads, 0, s>>>(q, scale, x, gamma, eps, h_out, cols);
    else
        fp8_quant_rows_kernel<NORM><<<rows, threads, 0, s>>>(q, scale, x, gamma, eps, h_out, cols);
}

extern "C" int fg_fp8_quant_rows(void *q, float *scale, const void *x, const void *gamma, float eps,
                                 void *h_out, int rows, int cols, void *stream) {
    if (rows < 1 || cols < 8 || cols % 8 || !q || !scale || !x || (h_out && !gamma) ||
        ((uintptr_t)q | (uintptr_t)x | (uintptr_t)gamma | (uintptr_t)h_out) % 16 ||
        (uintptr_t)scale % 4)
        return (int)cudaErrorInvalidValue;
    const int chunks = cols / 8;
    const int threads = chunks >= FP8_QUANT_THREADS ? FP8_QUANT_THREADS : (chunks + 31) / 32 * 32;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    uint8_t *qq = static_cast<uint8_t *>(q);
    const __nv_bfloat16 *xx = static_cast<const __nv_bfloat16 *>(x);
    const float *gg = static_cast<const float *>(gamma);
    __nv_bfloat16 *hh = static_cast<__nv_bfloat16 *>(h_out);
    /* FLASHGEN_FP8_QUANT_LOOP=1 (tests): the loop kernel at every width */
    const char *loop = getenv("FLASHGEN_FP8_QUANT_LOOP");
    const int cpt = loop && !strcmp(loop, "1") ? 1 << 30 : (chunks + threads - 1) / threads;
    if (gamma)
        fp8_quant_launch<true>(cpt, rows, threads, s, qq, scale, xx, gg, eps, hh, cols);
    else
        fp8_quant_launch<false>(cpt, rows, threads, s, qq, scale, xx, gg, eps, hh, cols);
    return (int)cudaGetLastError();
}

/* ---- W8A8 GEMM through cuBLASLt ----------------------------------------------------------- */

#define FP8_LT_PLANS 128                    /* shapes × modes of one model's prefill sizes */
#define FP8_LT_WORKSPACE ((size_t)32 << 20) /* cuBLASLt's recommended size for Hopper */

struct fp8_plan {
    int n, in_dim, out_dim, y_f32, accumulate, mode, fast;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
};

struct fg_fp8_lt {
    cublasLtHandle_t h;
    void *ws;
    struct fp8_plan plans[FP8_LT_PLANS];
    int n_plans;
    char err[512];
};

static void lt_fail(struct fg_fp8_lt *lt, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lt->err, sizeof lt->err, fmt, ap);
    va_end(ap);
}

#define FP8_LT_CK(lt, call)                                                                        \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            lt_fail((lt), "%s failed at %s:%d: status %d", #call, __FILE__, __LINE__, (int)s_);    \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

extern "C" struct fg_fp8_lt *fg_fp8_lt_create(void) {
    struct fg_fp8_lt *lt = (struct fg_fp8_lt *)calloc(1, sizeof *lt);
    if (!lt) return NULL;
    if (cublasLtCreate(&lt->h) != CUBLAS_STATUS_SUCCESS) {
        free(lt);
        return NULL;
    }
    if (cudaMalloc(&lt->ws, FP8_LT_WORKSPACE) != cudaSuccess) {
        cublasLtDestroy(lt->h);
        free(lt);
        return NULL;
    }
    return lt;
}

static void fp8_plan_free(struct fp8_plan *p) {
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->c) cublasLtMatrixLayoutDestroy(p->c);
    memset(p, 0, sizeof *p);
}

extern "C" void fg_fp8_lt_free(struct fg_fp8_lt *lt) {
    if (!lt) return;
    for (int i = 0; i < lt->n_plans; i++)
        fp8_plan_free(&lt->plans[i]);
    if (lt->ws) cudaFree(lt->ws);
    if (lt->h) cublasLtDestroy(lt->h);
    free(lt);
}

extern "C" const char *fg_fp8_lt_error(const struct fg_fp8_lt *lt) {
    return lt ? lt->err : "no context";
}

/* Builds the plan of (shape, mode) into p: 0, 1 when cuBLASLt has no algorithm for it (p left
 * empty), -1 on an error. In cuBLAS's column-major terms y (out × n) = op_T(A) · B with A = W
 * viewed as (in × out) and B = x viewed as (in × n): the TN form FP8 needs. The scale pointers
 * are set here too (the heuristic sees them) and again at every call. */
static int fp8_plan_make(struct fg_fp8_lt *lt, struct fp8_plan *p, int mode, const float *sx,
                         const float *sw) {
    const cudaDataType_t out_t = mode == FG_FP8_GEMM_SPLIT || p->y_f32 ? CUDA_R_32F : CUDA_R_16BF;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    FP8_LT_CK(lt, cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    FP8_LT_CK(lt,
              cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    FP8_LT_CK(lt,
              cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (p->fast) {
        const int8_t on = 1;
        FP8_LT_CK(lt, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &on,
                                                     sizeof on));
    }
    if (mode == FG_FP8_GEMM_OUTER) {
        /* a cuBLASLt without the outer-vector mode refuses the attribute: no algorithm, then */
        const int32_t vec = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
        cublasStatus_t sa = cublasLtMatmulDescSetAttribute(
            p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &vec, sizeof vec);
        if (sa == CUBLAS_STATUS_SUCCESS)
            sa = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vec,
                                                sizeof vec);
        if (sa != CUBLAS_STATUS_SUCCESS) {
            lt_fail(lt, "cuBLASLt refuses the outer-vector scale mode: status %d", (int)sa);
            return 1;
        }
        FP8_LT_CK(lt, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                     &sw, sizeof sw));
        FP8_LT_CK(lt, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                     &sx, sizeof sx));
    }
    FP8_LT_CK(lt,
              cublasLtMatrixLayoutCreate(&p->a, CUDA_R_8F_E4M3, p->in_dim, p->out_dim, p->in_dim));
    FP8_LT_CK(lt, cublasLtMatrixLayoutCreate(&p->b, CUDA_R_8F_E4M3, p->in_dim, p->n, p->in_dim));
    FP8_LT_CK(lt, cublasLtMatrixLayoutCreate(&p->c, out_t, p->out_dim, p->n, p->out_dim));
    cublasLtMatmulPreference_t pref;
    FP8_LT_CK(lt, cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = FP8_LT_WORKSPACE;
    /* as cuda_ops.cu's bf16 plans: split-K partials reduced in fp32, never in a bf16 output */
    uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                  &schemes, sizeof schemes);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(lt->h, p->desc, p->a, p->b, p->c, p->c, pref, 1, &res,
                                            &found);
    cublasLtMatmulPreferenceDestroy(pref);
    /* a refusal (not supported, invalid value for this combination, nothing found) means no
     * algorithm for this mode; AUTO then tries SPLIT */
    if (st != CUBLAS_STATUS_SUCCESS || !found) {
        lt_fail(lt, "cuBLASLt heuristic for %d x %d x %d (mode %d): status %d, %d found", p->n,
                p->in_dim, p->out_dim, mode, (int)st, found);
        return 1;
    }
    p->algo = res.algo;
    p->mode = mode;
    return 0;
}

/* The plan for (n, in, out, y_f32, accumulate) in MODE with fast accumulation or not (AUTO: OUTER,
 * else SPLIT), cached. */
static struct fp8_plan *fp8_plan_get(struct fg_fp8_lt *lt, int mode, int fast, int n, int in_dim,
                                     int out_dim, int y_f32, int accumulate, const float *sx,
                                     const float *sw) {
    for (int i = 0; i < lt->n_plans; i++) {
        struct fp8_plan *p = &lt->plans[i];
        if (p->n == n && p->in_dim == in_dim && p->out_dim == out_dim && p->y_f32 == y_f32 &&
            p->accumulate == accumulate && p->fast == fast &&
            (mode == FG_FP8_GEMM_AUTO || p->mode == mode))
            return p;
    }
    if (lt->n_plans == FP8_LT_PLANS) { /* evict the oldest */
        fp8_plan_free(&lt->plans[0]);
        memmove(&lt->plans[0], &lt->plans[1], sizeof(lt->plans[0]) * (FP8_LT_PLANS - 1));
        memset(&lt->plans[FP8_LT_PLANS - 1], 0, sizeof(lt->plans[0]));
        lt->n_plans--;
    }
    struct fp8_plan *p = &lt->plans[lt->n_plans];
    const int tries[2] = {mode == FG_FP8_GEMM_SPLIT ? FG_FP8_GEMM_SPLIT : FG_FP8_GEMM_OUTER,
                          mode == FG_FP8_GEMM_AUTO ? FG_FP8_GEMM_SPLIT : 0};
    for (int k = 0; k < 2 && tries[k]; k++) {
        memset(p, 0, sizeof *p);
        p->n = n;
        p->in_dim = in_dim;
        p->out_dim = out_dim;
        p->y_f32 = y_f32;
        p->accumulate = accumulate;
        p->fast = fast;
        const int r = fp8_plan_make(lt, p, tries[k], sx, sw);
        if (r == 0) {
            lt->n_plans++;
            return p;
        }
        fp8_plan_free(p);
        if (r < 0) return NULL;
    }
    /* lt->err holds the last try's reason */
    return NULL;
}

/* SPLIT mode's epilogue: y[t][j] (+)= acc[t][j] · (sx[t] · sw[j]) */
__global__ void fp8_scale_kernel(void *y, int y_f32, const float *acc, const float *sx,
                                 const float *sw, int n, int out_dim, int accumulate) {
    const size_t total = (size_t)n * out_dim;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const int t = (int)(i / out_dim), j = (int)(i % out_dim);
        const float v = acc[i] * (sx[t] * sw[j]);
        if (y_f32) {
            float *yf = static_cast<float *>(y);
            yf[i] = accumulate ? yf[i] + v : v;
        } else {
            __nv_bfloat16 *yb = static_cast<__nv_bfloat16 *>(y);
            yb[i] = __float2bfloat16(accumulate ? __bfloat162float(yb[i]) + v : v);
        }
    }
}

extern "C" int fg_fp8_gemm(struct fg_fp8_lt *lt, int mode, void *y, int y_f32, const void *xq,
                           const float *sx, const void *wq, const float *sw, int n, int in_dim,
                           int out_dim, int accumulate, void *scratch, size_t scratch_bytes,
                           int *mode_used, void *stream) {
    if (!lt) return -1;
    lt->err[0] = 0;
    const int fast = (mode & FG_FP8_GEMM_FAST_ACCUM) != 0;
    mode &= ~FG_FP8_GEMM_FAST_ACCUM;
    if (n < 1 || in_dim < 16 || in_dim % 16 || out_dim < 16 || out_dim % 16 ||
        mode < FG_FP8_GEMM_AUTO || mode > FG_FP8_GEMM_SPLIT || !y || !xq || !wq || !sx || !sw ||
        ((uintptr_t)y | (uintptr_t)xq | (uintptr_t)wq | (uintptr_t)sx | (uintptr_t)sw |
         (uintptr_t)scratch) %
            16) {
        lt_fail(lt,
                "fg_fp8_gemm: refused %d x %d x %d (mode %d; in and out must be multiples of "
                "16, pointers 16-byte aligned)",
                n, in_dim, out_dim, mode);
        return -1;
    }
    struct fp8_plan *p =
        fp8_plan_get(lt, mode, fast, n, in_dim, out_dim, y_f32 != 0, accumulate != 0, sx, sw);
    if (!p) return -1;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    const float one = 1.0f, zero = 0.0f;
    if (p->mode == FG_FP8_GEMM_OUTER) {
        FP8_LT_CK(lt, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                     &sw, sizeof sw));
        FP8_LT_CK(lt, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                     &sx, sizeof sx));
        FP8_LT_CK(lt, cublasLtMatmul(lt->h, p->desc, &one, wq, p->a, xq, p->b,
                                     accumulate ? &one : &zero, y, p->c, y, p->c, &p->algo, lt->ws,
                                     FP8_LT_WORKSPACE, s));
    } else {
        if (!scratch || scratch_bytes < (size_t)n * out_dim * sizeof(float)) {
            lt_fail(lt, "fg_fp8_gemm: SPLIT mode needs %zu bytes of scratch, got %zu",
                    (size_t)n * out_dim * sizeof(float), scratch ? scratch_bytes : (size_t)0);
            return -1;
        }
        FP8_LT_CK(lt, cublasLtMatmul(lt->h, p->desc, &one, wq, p->a, xq, p->b, &zero, scratch, p->c,
                                     scratch, p->c, &p->algo, lt->ws, FP8_LT_WORKSPACE, s));
        const size_t total = (size_t)n * out_dim;
        const unsigned blocks = (unsigned)(total / 256 + 1 < 65536 ? total / 256 + 1 : 65536);
        fp8_scale_kernel<<<blocks, 256, 0, s>>>(y, y_f32 != 0, static_cast<const float *>(scratch),
                                                sx, sw, n, out_dim, accumulate != 0);
    }
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        lt_fail(lt, "fg_fp8_gemm: %s", cudaGetErrorString(e));
        return -1;
    }
    if (mode_used) *mode_used = p->mode;
    lt->err[0] = 0; /* a refused OUTER try of AUTO is no failure */
    return 0;
}

/* ---- decode GEMV on e4m3 weights ----------------------------------------------------------- */

struct fp8v_params {
    void *y;                /* (n, out_dim) bf16 or fp32 */
    const __nv_bfloat16 *x; /* (n, in_dim) */
    const uint8_t *w;       /* (out_rows, in_dim) e4m3 */
    const float *sw;        /* (out_rows) scales */
    const float *gamma;     /* NORM: (in_dim) fp32 */
    __nv_bfloat16 *h_out;   /* NORM: (n, in_dim) or NULL */
    float eps;
    int n, in_dim, out_dim;
    int epilogue, y_f32;
    int out_tiles; /* 8-wide output tiles per block: RT, or RT / 2 for SwiGLU */
};

/* W is read once: no L1, evict-first in L2, 256-byte prefetch (as gemv.cu's W loads); zero and
 * no access when !ok (the k tail). */
__device__ __forceinline__ uint4 fp8v_load_w(const uint8_t *p, bool ok, uint64_t policy) {
    uint4 v;
    asm("{\n .reg .pred q;\n setp.ne.b32 q, %5, 0;\n"
        " mov.b32 %0, 0;\n mov.b32 %1, 0;\n mov.b32 %2, 0;\n mov.b32 %3, 0;\n"
        " @q ld.global.nc.L1::no_allocate.L2::cache_hint.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4], %6;\n"
        "}\n"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p), "r"((int)ok), "l"(policy));
    return v;
}

/* 4 e4m3 bytes of w as two bf16 pairs (bytes 0, 1 and bytes 2, 3), each the exact value.
 * CONV 0 and 2 first build, per byte s eeee mmm, the bf16 s 0000 eeee mmm 0000 (= value · 2^-120,
 * exactly: e4m3 subnormals become bf16 subnormals), then multiply the pair by 2^120 (bf16 0x7b80)
 * and add -0 (keeps the sign of zeros): exact, the result normal. CONV 0 spreads each byte into
 * the high byte of a 16-bit half with PRMT and shifts it into place (4 integer operations per
 * pair); CONV 2 makes the four high bytes (s 0000 eee) and the four low bytes (e mmm 0000) of a
 * word at once and interleaves them with two PRMT (7 per four bytes). CONV 1 does it in fp32
 * (value · 2^-120 as fp32, × 2^120 with no flush to zero in this build, the bf16 is the fp32's
 * upper half): slower, plainly exact, kept as the reference variant. */
__device__ __forceinline__ uint32_t fp8v_times_2e120(uint32_t b) {
    uint32_t r;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(b), "r"(0x7b807b80u), "r"(0x80008000u));
    return r;
}

template <int CONV> __device__ __forceinline__ uint2 fp8v_bf16x4(uint32_t w) {
    if constexpr (CONV == 0) {
        const uint32_t v01 = __byte_perm(w, 0u, 0x1404u), v23 = __byte_perm(w, 0u, 0x3424u);
        const uint32_t b01 = ((v01 & 0x7f007f00u) >> 4) | (v01 & 0x80008000u);
        const uint32_t b23 = ((v23 & 0x7f007f00u) >> 4) | (v23 & 0x80008000u);
        return make_uint2(fp8v_times_2e120(b01), fp8v_times_2e120(b23));
    } else if constexpr (CONV == 2) {
        const uint32_t hi = ((w >> 4) & 0x07070707u) | (w & 0x80808080u);
        const uint32_t lo = (w << 4) & 0xf0f0f0f0u;
        return make_uint2(fp8v_times_2e120(__byte_perm(lo, hi, 0x5140u)),
                          fp8v_times_2e120(__byte_perm(lo, hi, 0x7362u)));
    } else {
        float f[4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const uint32_t b = w >> (8 * k) & 0xffu;
            f[k] = __uint_as_float((b & 0x7fu) << 20 | (b & 0x80u) << 24) *
                   __uint_as_float(0x7b800000u);
        }
        return make_uint2(__byte_perm(__float_as_uint(f[0]), __float_as_uint(f[1]), 0x7632u),
                          __byte_perm(__float_as_uint(f[2]), __float_as_uint(f[3]), 0x7632u));
    }
}

/* c += x rows (g, g + 8) · W row pairs of one k16 step: a0/a2 row g, a1/a3 row g + 8. */
__device__ __forceinline__ void fp8v_mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* The RMSNorm row scales rsqrt(mean(x_r²) + eps) for rows g and g + 8 (row 0's past n), computed
 * by every block for itself with the same bits: thread i sums the 8-element chunks i, i + 32 KW,
 * ... of each row in order, a fixed butterfly per warp, then the warps in warp order. */
template <int KW> __device__ __forceinline__ float2 fp8v_norm_scales(const fp8v_params &p, int g) {
    __shared__ float part[KW][FG_FP8_GEMV_MAX_ROWS];
    __shared__ float scale[FG_FP8_GEMV_MAX_ROWS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, per_row = p.in_dim / 8;
#pragma unroll
    for (int r = 0; r < FG_FP8_GEMV_MAX_ROWS; r++) {
        if (r >= p.n) break;
        const uint4 *xr = reinterpret_cast<const uint4 *>(p.x + (size_t)r * p.in_dim);
        float ss = 0.0f;
        for (int i = threadIdx.x; i < per_row; i += KW * 32) {
            const uint4 v = __ldg(xr + i);
            const uint32_t wd[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int e = 0; e < 4; e++)
                ss += bf_lo(wd[e]) * bf_lo(wd[e]) + bf_hi(wd[e]) * bf_hi(wd[e]);
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1)
            ss += __shfl_xor_sync(0xffffffffu, ss, off);
        if (lane == 0) part[warp][r] = ss;
    }
    __syncthreads();
    if (threadIdx.x < p.n) {
        float s = 0.0f;
        for (int w = 0; w < KW; w++)
            s += part[w][threadIdx.x];
        scale[threadIdx.x] = rsqrtf(s / p.in_dim + p.eps); /* as k_rmsnorm: sum / dim + eps */
    }
    __syncthreads();
    return make_float2(scale[g < p.n ? g : 0], scale[g + 8 < p.n ? g + 8 : 0]);
}

/* The W loads of U 64-k chunks from chunk c (lane: k = 64 c + 16 t). */
template <int RT, int U>
__device__ __forceinline__ void fp8v_load_chunks(uint4 (&wv)[U][RT],
                                                 const uint8_t *const (&wrow)[RT], int c,
                                                 int in_dim, int t, uint64_t policy) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int k = (c + u) * 64;
#pragma unroll
        for (int r = 0; r < RT; r++)
            wv[u][r] = fp8v_load_w(wrow[r] + k, k + 16 * t < in_dim, policy);
    }
}

/* 16 bf16 of x row at k, as two uint4 (pairs 0-3, 4-7); zero when !ok */
__device__ __forceinline__ void fp8v_load_x(uint4 (&v)[2], const __nv_bfloat16 *row, bool ok) {
    const uint4 zero = make_uint4(0, 0, 0, 0);
    v[0] = ok ? __ldg(reinterpret_cast<const uint4 *>(row)) : zero;
    v[1] = ok ? __ldg(reinterpret_cast<const uint4 *>(row + 8)) : zero;
}

template <int RT, int KW, int U, bool PIPE, bool NORM, int CONV>
__global__ void __launch_bounds__(KW * 32, 16 / KW) fp8v_kernel(const fp8v_params p) {
    __shared__ float red[KW][RT][FG_FP8_GEMV_MAX_ROWS][8]; /* warp, tile, x row, W row */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int OT = p.out_tiles, j0 = blockIdx.x * 8 * OT;
    const bool swiglu = p.epilogue == FG_GEMV_SWIGLU;

    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");

    /* this lane's W row in each tile; rows past out_dim read the last row (result discarded) */
    const uint8_t *wrow[RT];
#pragma unroll
    for (int r = 0; r < RT; r++) {
        const int o = swiglu ? r % OT : r;
        const int j = min(j0 + o * 8 + g, p.out_dim - 1);
        const size_t row = (size_t)j + (swiglu && r >= OT ? p.out_dim : 0);
        wrow[r] = p.w + row * p.in_dim + 16 * t;
    }
    const bool has0 = g < p.n, has1 = g + 8 < p.n;
    const __nv_bfloat16 *x0 = p.x + (size_t)(has0 ? g : 0) * p.in_dim + 16 * t;
    const __nv_bfloat16 *x1 = p.x + (size_t)(has1 ? g + 8 : 0) * p.in_dim + 16 * t;
    uint64_t policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));

    float acc[RT][4];
#pragma unroll
    for (int r = 0; r < RT; r++)
        acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = 0.0f;

    const int n_chunks = (p.in_dim + 63) / 64, step = KW * U;
    int c0 = warp * U;
    uint4 wv[U][RT];
    fp8v_load_chunks<RT, U>(wv, wrow, c0, p.in_dim, t, policy);
    /* only W (constant during decode) was read so far; x and y may come from the kernel before */
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    const float2 sc = NORM ? fp8v_norm_scales<KW>(p, g) : make_float2(0.0f, 0.0f);
    const bool store_h = NORM && p.h_out && blockIdx.x == 0;
    while (c0 < n_chunks) {
        uint4 xa[U][2], xb[U][2]; /* x rows g and g + 8 */
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int k = (c0 + u) * 64;
            const bool in = k + 16 * t < p.in_dim;
            fp8v_load_x(xa[u], x0 + k, in && has0);
            fp8v_load_x(xb[u], x1 + k, in && has1);
            if (NORM) {
#pragma unroll
                for (int h = 0; h < 2; h++) { /* fp32 gamma of the chunk's 8-element halves */
                    const gemv_gamma8 gm =
                        in ? gemv_load_gamma(p.gamma + k + 16 * t + 8 * h) : gemv_gamma8{};
                    xa[u][h] = gemv_norm_chunk(xa[u][h], gm, sc.x);
                    xb[u][h] = gemv_norm_chunk(xb[u][h], gm, sc.y);
                }
                if (store_h && in) {
                    uint4 *h0 =
                        reinterpret_cast<uint4 *>(p.h_out + (size_t)g * p.in_dim + k + 16 * t);
                    uint4 *h1 = reinterpret_cast<uint4 *>(p.h_out + (size_t)(g + 8) * p.in_dim + k +
                                                          16 * t);
                    if (has0) h0[0] = xa[u][0], h0[1] = xa[u][1];
                    if (has1) h1[0] = xb[u][0], h1[1] = xb[u][1];
                }
            }
        }
        const int c1 = c0 + step;
        uint4 wn[U][RT];
        if (PIPE) fp8v_load_chunks<RT, U>(wn, wrow, c1, p.in_dim, t, policy);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const uint32_t a[8] = {xa[u][0].x, xa[u][0].y, xa[u][0].z, xa[u][0].w,
                                   xa[u][1].x, xa[u][1].y, xa[u][1].z, xa[u][1].w};
            const uint32_t b[8] = {xb[u][0].x, xb[u][0].y, xb[u][0].z, xb[u][0].w,
                                   xb[u][1].x, xb[u][1].y, xb[u][1].z, xb[u][1].w};
#pragma unroll
            for (int r = 0; r < RT; r++) {
                const uint32_t wd[4] = {wv[u][r].x, wv[u][r].y, wv[u][r].z, wv[u][r].w};
#pragma unroll
                for (int s = 0; s < 4; s++) { /* word s: k pairs 2s, 2s + 1 of the 16 */
                    const uint2 wb = fp8v_bf16x4<CONV>(wd[s]);
                    fp8v_mma(acc[r], a[2 * s], b[2 * s], a[2 * s + 1], b[2 * s + 1], wb.x, wb.y);
                }
            }
        }
        if (PIPE) {
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int r = 0; r < RT; r++)
                    wv[u][r] = wn[u][r];
        } else if (c1 < n_chunks) {
            fp8v_load_chunks<RT, U>(wv, wrow, c1, p.in_dim, t, policy);
        }
        c0 = c1;
    }
#pragma unroll
    for (int r = 0; r < RT; r++) {
        red[warp][r][g][2 * t] = acc[r][0];
        red[warp][r][g][2 * t + 1] = acc[r][1];
        red[warp][r][g + 8][2 * t] = acc[r][2];
        red[warp][r][g + 8][2 * t + 1] = acc[r][3];
    }
    __syncthreads();

    /* epilogue: one thread per (output tile, activation row, output column) */
    for (int e = threadIdx.x; e < OT * p.n * 8; e += KW * 32) {
        const int o = e / (p.n * 8), b = (e / 8) % p.n, i = e % 8;
        const int j = j0 + o * 8 + i;
        if (j >= p.out_dim) continue;
        float v = 0.0f, up = 0.0f;
        for (int ww = 0; ww < KW; ww++) {
            v += red[ww][o][b][i];
            if (swiglu) up += red[ww][o + OT][b][i];
        }
        v *= __ldg(p.sw + j);
        if (swiglu) v = gemv_silu(v) * (up * __ldg(p.sw + p.out_dim + j));
        const size_t at = (size_t)b * p.out_dim + j;
        gemv_store(p.y, p.y_f32, at, p.epilogue == FG_GEMV_ADD, v);
    }
}

struct fp8v_variant {
    const char *name;
    int rt, kw;
    void (*kernel)(const fp8v_params);
    void (*norm_kernel)(const fp8v_params);
};

#define FP8V(RT, KW, U, PIPE, CONV, NAME)                                                          \
    {                                                                                              \
        NAME, RT, KW, fp8v_kernel<RT, KW, U, PIPE, false, CONV>,                                   \
            fp8v_kernel<RT, KW, U, PIPE, true, CONV>                                               \
    }
/* Candidates for the measurement that sets fg_fp8_gemv_pick (kernels/BENCH.md, FP8 section). */
static const fp8v_variant fp8v_variants[] = {
    FP8V(2, 8, 2, true, 0, "rt2_kw8_u2_pipe"),
    FP8V(2, 8, 2, false, 0, "rt2_kw8_u2"),
    FP8V(2, 4, 4, true, 0, "rt2_kw4_u4_pipe"),
    FP8V(1, 8, 4, true, 0, "rt1_kw8_u4_pipe"),
    FP8V(4, 4, 2, true, 0, "rt4_kw4_u2_pipe"),
    FP8V(2, 16, 1, true, 0, "rt2_kw16_u1_pipe"),
    FP8V(2, 4, 2, true, 0, "rt2_kw4_u2_pipe"),
    FP8V(2, 8, 4, false, 0, "rt2_kw8_u4"),
    FP8V(2, 8, 2, true, 1, "rt2_kw8_u2_pipe_f32conv"),
    FP8V(2, 8, 2, true, 2, "rt2_kw8_u2_pipe_c2"),
    FP8V(2, 8, 1, true, 0, "rt2_kw8_u1_pipe"),
    FP8V(4, 8, 1, true, 0, "rt4_kw8_u1_pipe"),
    FP8V(1, 16, 2, true, 0, "rt1_kw16_u2_pipe"),
    FP8V(2, 4, 2, true, 2, "rt2_kw4_u2_pipe_c2"),
    FP8V(4, 8, 2, false, 0, "rt4_kw8_u2"),
    FP8V(4, 4, 4, false, 0, "rt4_kw4_u4"),
    FP8V(8, 4, 1, true, 0, "rt8_kw4_u1_pipe"),
    FP8V(8, 8, 1, false, 0, "rt8_kw8_u1"),
    FP8V(4, 8, 2, true, 0, "rt4_kw8_u2_pipe"),
    FP8V(4, 4, 2, false, 0, "rt4_kw4_u2"),
    FP8V(8, 4, 2, false, 0, "rt8_kw4_u2"),
};
#undef FP8V
#define FP8V_N (int)(sizeof(fp8v_variants) / sizeof(fp8v_variants[0]))

/* Indices into fp8v_variants of the variants fg_fp8_gemv_pick returns. */
enum {
    FP8V_PICK_SWIGLU = 4, /* rt4_kw4_u2_pipe */
    FP8V_PICK_QKV = 11,   /* rt4_kw8_u1_pipe */
    FP8V_PICK = 7,        /* rt2_kw8_u4 */
    FP8V_PICK_SHORT = 6,  /* rt2_kw4_u2_pipe: rows shorter than 2048, many of them */
};

extern "C" int fg_fp8_gemv_supported(int n, int in_dim, int out_dim) {
    return n >= 1 && n <= FG_FP8_GEMV_MAX_ROWS && in_dim >= 16 && in_dim % 16 == 0 && out_dim >= 1;
}

extern "C" int fg_fp8_gemv_n_variants(void) {
    return FP8V_N;
}

extern "C" const char *fg_fp8_gemv_variant_name(int v) {
    return v >= 0 && v < FP8V_N ? fp8v_variants[v].name : "";
}

/* The one selector (supported shapes, then the variant), from the variants table of
 * bench/results/check_fp8_h200_run1_2026-12-02.log (µs per call back to back in a CUDA graph,
 * H200, the 8B layer at n = 1 and 16): gate|up (SwiGLU, norm fused) is fastest with 4-warp blocks
 * of 4 tiles (rt4_kw4_u2_pipe: 48.0 / 68.8 µs against 69.5 / 111.8 for the first guess
 * rt2_kw8_u2_pipe), q|k|v (norm fused) with 8-warp blocks of 4 tiles (rt4_kw8_u1_pipe: 15.8 /
 * 23.7 against 21.3 / 38.6), o and down with rt2_kw8_u4 (7.7 / 9.2 and 19.6 / 22.9 µs). More
 * W rows per block give each block more bytes to stream for its fixed costs (start, the
 * shared-memory reduction, the epilogue), which weighs double at one byte per weight. */
extern "C" int fg_fp8_gemv_pick(int n, int in_dim, int out_dim, int epilogue) {
    if (!fg_fp8_gemv_supported(n, in_dim, out_dim) || epilogue < FG_GEMV_STORE ||
        epilogue > FG_GEMV_SWIGLU)
        return -1;
    if (in_dim < 2048 && out_dim >= 16384) return FP8V_PICK_SHORT;
    if (epilogue == FG_GEMV_SWIGLU) return FP8V_PICK_SWIGLU;
    if (epilogue == FG_GEMV_STORE && in_dim < 8192 && out_dim >= 5120) return FP8V_PICK_QKV;
    return FP8V_PICK;
}

extern "C" int fg_fp8_gemv_variant(int v, void *y, int y_f32, const void *x, const void *gamma,
                                   float eps, void *h_out, const void *q, const float *sw, int n,
                                   int in_dim, int out_dim, int epilogue, void *stream) {
    if (v < 0 || v >= FP8V_N || !fg_fp8_gemv_supported(n, in_dim, out_dim) ||
        epilogue < FG_GEMV_STORE || epilogue > FG_GEMV_SWIGLU || !y || !x || !q || !sw ||
        (h_out && !gamma) ||
        ((uintptr_t)x | (uintptr_t)q | (uintptr_t)gamma | (uintptr_t)h_out) % 16 ||
        (uintptr_t)sw % 4 || (uintptr_t)y % (y_f32 ? 4 : 2))
        return (int)cudaErrorInvalidValue;
    const fp8v_variant *vr = &fp8v_variants[v];
    const int swiglu = epilogue == FG_GEMV_SWIGLU;
    if (swiglu && vr->rt % 2) return (int)cudaErrorInvalidValue;
    fp8v_params p = {};
    p.y = y;
    p.y_f32 = y_f32 != 0;
    p.x = static_cast<const __nv_bfloat16 *>(x);
    p.w = static_cast<const uint8_t *>(q);
    p.sw = sw;
    p.gamma = static_cast<const float *>(gamma);
    p.h_out = static_cast<__nv_bfloat16 *>(h_out);
    p.eps = eps;
    p.n = n;
    p.in_dim = in_dim;
    p.out_dim = out_dim;
    p.epilogue = epilogue;
    p.out_tiles = swiglu ? vr->rt / 2 : vr->rt;
    const int cols = 8 * p.out_tiles;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)((out_dim + cols - 1) / cols));
    cfg.blockDim = dim3((unsigned)(vr->kw * 32));
    cfg.stream = static_cast<cudaStream_t>(stream);
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    const cudaError_t e = cudaLaunchKernelEx(&cfg, gamma ? vr->norm_kernel : vr->kernel, p);
    return (int)(e != cudaSuccess ? e : cudaGetLastError());
}

extern "C" int fg_fp8_gemv(void *y, int y_f32, const void *x, const void *q, const float *sw, int n,
                           int in_dim, int out_dim, int epilogue, void *stream) {
    const int v = fg_fp8_gemv_pick(n, in_dim, out_dim, epilogue);
    if (v < 0) return (int)cudaErrorInvalidValue;
    return fg_fp8_gemv_variant(v, y, y_f32, x, NULL, 0.0f, NULL, q, sw, n, in_dim, out_dim,
                               epilogue, stream);
}

extern "C" int fg_fp8_gemv_norm(void *y, int y_f32, const void *x, const void *gamma, float eps,
                                void *h_out, const void *q, const float *sw, int n, int in_dim,
                                int out_dim, int epilogue, void *stream) {
    const int v = fg_fp8_gemv_pick(n, in_dim, out_dim, epilogue);
    if (v < 0 || !gamma) return (int)cudaErrorInvalidValue;
    return fg_fp8_gemv_variant(v, y, y_f32, x, gamma, eps, h_out, q, sw, n, in_dim, out_dim,
                               epilogue, stream);
}

/* ---- FP8 copies of a backend's bf16 weights ------------------------------------------------ */

#define FP8W_BLOCKS 16   /* device allocations: one per build (one per model load) */
#define FP8W_RETIRED 32  /* outgrown activation buffers, kept while graphs may point at them */
#define FP8W_GEMV_ROWS 8 /* default GEMV / GEMM crossover in rows (fg_fp8_weights_create) */

struct fp8w_run {
    const char *bf; /* first bf16 row (device) */
    size_t rows;
    int cols;
    uint8_t *q; /* (rows, cols) e4m3, NULL until built or where cols % 16 */
    float *s;   /* (rows) scales */
};

struct fg_fp8_weights {
    struct fp8w_run *runs;
    int n_runs, cap_runs, n_built;
    void *blocks[FP8W_BLOCKS];
    int n_blocks;
    size_t bytes;
    struct fg_fp8_lt *lt;
    void *act; /* the GEMM path's quantized activations: (n, in_dim) e4m3, then n scales */
    size_t act_bytes;
    void *retired[FP8W_RETIRED];
    int n_retired;
    int gemv_rows; /* products of up to this many rows take the GEMV (FLASHGEN_FP8_GEMV_ROWS) */
    char err[512];
};

static size_t fp8w_align(size_t n) {
    return (n + 255) / 256 * 256;
}

extern "C" struct fg_fp8_weights *fg_fp8_weights_create(void) {
    struct fg_fp8_weights *fw = (struct fg_fp8_weights *)calloc(1, sizeof *fw);
    if (!fw) return NULL;
    fw->lt = fg_fp8_lt_create();
    if (!fw->lt) {
        free(fw);
        return NULL;
    }
    /* FLASHGEN_FP8_GEMV_ROWS=N (0..16, A/B runs): up to N rows take the GEMV, more the GEMM.
     * Default 8: on the H200 (kernels/BENCH.md, FP8 section, run 2) the 8B engine decoded batch 16
     * at 3185 tokens/s with the W8A8 GEMM and 2801 with the GEMV at 16 rows, batch 8 at 1985
     * with the GEMV (bf16: 1595). */
    const char *r = getenv("FLASHGEN_FP8_GEMV_ROWS");
    fw->gemv_rows = r && *r ? atoi(r) : FP8W_GEMV_ROWS;
    if (fw->gemv_rows < 0 || fw->gemv_rows > FG_FP8_GEMV_MAX_ROWS)
        fw->gemv_rows = FG_FP8_GEMV_MAX_ROWS;
    return fw;
}

extern "C" void fg_fp8_weights_free(struct fg_fp8_weights *fw) {
    if (!fw) return;
    for (int i = 0; i < fw->n_blocks; i++)
        cudaFree(fw->blocks[i]);
    for (int i = 0; i < fw->n_retired; i++)
        cudaFree(fw->retired[i]);
    if (fw->act) cudaFree(fw->act);
    fg_fp8_lt_free(fw->lt);
    free(fw->runs);
    free(fw);
}

extern "C" const char *fg_fp8_weights_error(const struct fg_fp8_weights *fw) {
    return fw ? fw->err : "no FP8 weights";
}

extern "C" size_t fg_fp8_weights_bytes(const struct fg_fp8_weights *fw) {
    return fw ? fw->bytes : 0;
}

extern "C" int fg_fp8_weights_record(struct fg_fp8_weights *fw, const void *bf16, size_t rows,
                                     int cols) {
    const char *p = static_cast<const char *>(bf16);
    if (fw->n_runs > fw->n_built) { /* continues the last unbuilt run? */
        struct fp8w_run *r = &fw->runs[fw->n_runs - 1];
        if (r->cols == cols && r->bf + r->rows * cols * 2 == p) {
            r->rows += rows;
            return 0;
        }
    }
    if (fw->n_runs == fw->cap_runs) {
        const int cap = fw->cap_runs ? 2 * fw->cap_runs : 256;
        struct fp8w_run *n = (struct fp8w_run *)realloc(fw->runs, sizeof(*n) * (size_t)cap);
        if (!n) return -1;
        fw->runs = n;
        fw->cap_runs = cap;
    }
    fw->runs[fw->n_runs++] = fp8w_run{p, rows, cols, nullptr, nullptr};
    return 0;
}

extern "C" int fg_fp8_weights_build(struct fg_fp8_weights *fw, void *stream) {
    size_t bytes = 0;
    for (int i = fw->n_built; i < fw->n_runs; i++) {
        const struct fp8w_run *r = &fw->runs[i];
        if (r->cols % 16 == 0) bytes += fp8w_align(r->rows * r->cols) + fp8w_align(r->rows * 4);
    }
    if (bytes == 0) {
        fw->n_built = fw->n_runs;
        return 0;
    }
    void *mem = NULL;
    if (fw->n_blocks == FP8W_BLOCKS || cudaMalloc(&mem, bytes) != cudaSuccess) {
        cudaGetLastError();
        snprintf(fw->err, sizeof fw->err, "cannot allocate %.2f GB for the FP8 weights",
                 bytes / 1e9);
        return -1;
    }
    fw->blocks[fw->n_blocks++] = mem;
    fw->bytes += bytes;
    char *at = static_cast<char *>(mem);
    for (int i = fw->n_built; i < fw->n_runs; i++) {
        struct fp8w_run *r = &fw->runs[i];
        if (r->cols % 16) continue;
        r->q = reinterpret_cast<uint8_t *>(at);
        at += fp8w_align(r->rows * r->cols);
        r->s = reinterpret_cast<float *>(at);
        at += fp8w_align(r->rows * 4);
        /* at most 2^31 - 1 rows per launch (the grid's x limit) */
        for (size_t r0 = 0; r0 < r->rows; r0 += (size_t)1 << 30) {
            const size_t m = r->rows - r0 < ((size_t)1 << 30) ? r->rows - r0 : (size_t)1 << 30;
            const int e =
                fg_fp8_quant_rows(r->q + r0 * r->cols, r->s + r0, r->bf + r0 * r->cols * 2, NULL,
                                  0.0f, NULL, (int)m, r->cols, stream);
            if (e) {
                snprintf(fw->err, sizeof fw->err, "FP8 quantization of a %zu x %d weight: %s",
                         r->rows, r->cols, cudaGetErrorString((cudaError_t)e));
                return -1;
            }
        }
    }
    fw->n_built = fw->n_runs;
    const cudaError_t e = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
    if (e != cudaSuccess) {
        snprintf(fw->err, sizeof fw->err, "FP8 quantization of the weights: %s",
                 cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

/* The built run holding rows [row0, row0 + rows) of cols that start at w, or NULL. */
static const struct fp8w_run *fp8w_find(const struct fg_fp8_weights *fw, const void *w, size_t rows,
                                        int cols, size_t *row0) {
    const char *p = static_cast<const char *>(w);
    const size_t rb = (size_t)cols * 2;
    for (int i = 0; i < fw->n_built; i++) {
        const struct fp8w_run *r = &fw->runs[i];
        if (!r->q || r->cols != cols || p < r->bf) continue;
        const size_t off = (size_t)(p - r->bf);
        if (off % rb || off / rb + rows > r->rows) continue;
        *row0 = off / rb;
        return r;
    }
    return NULL;
}

extern "C" int fg_fp8_linear(struct fg_fp8_weights *fw, void *y, const void *x, const void *norm_w,
                             float eps, const void *w, int n, int in_dim, int out_dim, int epilogue,
                             void *scratch, void *stream) {
    if (!fw || n < 1 || epilogue < FG_GEMV_STORE || epilogue > FG_GEMV_SWIGLU) return 0;
    const size_t out_rows = epilogue == FG_GEMV_SWIGLU ? 2 * (size_t)out_dim : (size_t)out_dim;
    size_t row0 = 0;
    const struct fp8w_run *r = fp8w_find(fw, w, out_rows, in_dim, &row0);
    if (!r) return 0;
    const uint8_t *q = r->q + row0 * in_dim;
    const float *s = r->s + row0;
    if (((uintptr_t)x | (uintptr_t)norm_w) % 16) return 0;
    if (n <= fw->gemv_rows) {
        const int e = norm_w ? fg_fp8_gemv_norm(y, 0, x, norm_w, eps, NULL, q, s, n, in_dim,
                                                out_dim, epilogue, stream)
                             : fg_fp8_gemv(y, 0, x, q, s, n, in_dim, out_dim, epilogue, stream);
        if (e) {
            snprintf(fw->err, sizeof fw->err, "fp8 gemv %d x %d x %d: %s", n, in_dim, out_dim,
                     cudaGetErrorString((cudaError_t)e));
            return -1;
        }
        return 1;
    }
    void *dst = epilogue == FG_GEMV_SWIGLU ? scratch : y;
    if (out_rows % 16 || (uintptr_t)s % 16 || !dst || (uintptr_t)dst % 16) return 0;
    const size_t xq_bytes = fp8w_align((size_t)n * in_dim), need = xq_bytes + (size_t)n * 4;
    if (fw->act_bytes < need) {
        void *p = NULL;
        const size_t want = need > 2 * fw->act_bytes ? need : 2 * fw->act_bytes;
        if (fw->n_retired == FP8W_RETIRED || cudaMalloc(&p, want) != cudaSuccess) {
            cudaGetLastError();
            snprintf(fw->err, sizeof fw->err, "cannot allocate %zu bytes of FP8 activations", want);
            return -1;
        }
        if (fw->act) fw->retired[fw->n_retired++] = fw->act;
        fw->act = p;
        fw->act_bytes = want;
    }
    uint8_t *xq = static_cast<uint8_t *>(fw->act);
    float *sx = reinterpret_cast<float *>(xq + xq_bytes);
    const int e = fg_fp8_quant_rows(xq, sx, x, norm_w, eps, NULL, n, in_dim, stream);
    if (e) {
        snprintf(fw->err, sizeof fw->err, "fp8 activation quantization %d x %d: %s", n, in_dim,
                 cudaGetErrorString((cudaError_t)e));
        return -1;
    }
    if (fg_fp8_gemm(fw->lt, FG_FP8_GEMM_AUTO, dst, 0, xq, sx, q, s, n, in_dim, (int)out_rows,
                    epilogue == FG_GEMV_ADD, NULL, 0, NULL, stream) != 0) {
        snprintf(fw->err, sizeof fw->err, "%s", fg_fp8_lt_error(fw->lt));
        return -1;
    }
    return epilogue == FG_GEMV_SWIGLU ? 2 : 1;
}
