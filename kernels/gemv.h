/* gemv.h — CUDA: bf16 matrix-vector products for decode (1 to 8 rows of activations against a
 * weight matrix read once), with the residual add or SwiGLU fused into the epilogue.
 *
 * y (n, out_dim) = x (n, in_dim) · Wᵀ, W (out_rows, in_dim) row-major bf16 (torch Linear layout),
 * fp32 accumulation. All pointers are device memory, 16-byte aligned; y must not overlap x or w.
 * Twin: the fp64 torch reference of tests/gpu/check_gemv.py (and cpu_ops()->matmul for STORE).
 */
#ifndef FG_GEMV_H
#define FG_GEMV_H

#ifdef __cplusplus
extern "C" {
#endif

#define FG_GEMV_MAX_ROWS 8

enum fg_gemv_epilogue {
    FG_GEMV_STORE = 0, /* y = x · Wᵀ (y bf16, or fp32 when y_f32) */
    FG_GEMV_ADD = 1, /* y += x · Wᵀ, y bf16 in place (the residual stream): y = bf16(y + dot) */
    FG_GEMV_SWIGLU = 2, /* W has 2·out_dim rows, [gate rows; up rows]:
                           y[j] = bf16(silu(x·gate_j) · (x·up_j)), both dots and silu in fp32 */
};

/* 1 when the kernel serves this shape: 1 <= n <= FG_GEMV_MAX_ROWS, in_dim % 8 == 0, out_dim >= 1 */
int fg_gemv_supported(int n, int in_dim, int out_dim);

/* x: bf16 (n, in_dim) contiguous; w: bf16 (out_rows, in_dim) row-major (torch Linear layout);
 * y: (n, out_dim). Enqueued on stream (cudaStream_t as void *); graph-capturable (no allocation,
 * no sync). Returns 0 or the cudaError_t value of the launch (cudaErrorInvalidValue for a shape
 * fg_gemv_supported refuses, an unknown epilogue or a pointer not 16-byte aligned).
 * y_f32 (fp32 y) is honoured by every epilogue: ADD then accumulates into fp32 y. Results are
 * deterministic: a fixed reduction order, no atomics. Launched with programmatic dependent launch:
 * it starts reading w before the previous kernel on the stream has finished (x and y only after),
 * so w must not be written by the kernel queued just before it. Any thread. */
int fg_gemv(void *y, int y_f32, const void *x, const void *w, int n, int in_dim, int out_dim,
            int epilogue, void *stream);

/* RMSNorm fused in front of fg_gemv: y = epilogue(h · Wᵀ) where, row by row,
 * h = bf16(x · rsqrt(mean(x²) + eps) · gamma), rounded to bf16 once and in the order of operations
 * of the engine's k_rmsnorm, so y equals rmsnorm then fg_gemv up to the fp32 sum order of the
 * mean (an h element may then differ by one bf16 ulp). gamma: fp32 (in_dim). Shapes, epilogues,
 * alignment (gamma and h_out 16-byte aligned too), status values, determinism, graph capture and
 * programmatic dependent launch as fg_gemv (w is read before the previous kernel has finished;
 * x, gamma and h_out are touched only after). If h_out is not NULL the kernel also writes h
 * (n, in_dim) there (from one block); h_out must not overlap x, w or y. Any thread. */
int fg_gemv_norm(void *y, int y_f32, const void *x, const void *gamma, float eps, void *h_out,
                 const void *w, int n, int in_dim, int out_dim, int epilogue, void *stream);

/* For tests and benchmarks: the kernel variants behind fg_gemv (one table; fg_gemv uses
 * fg_gemv_pick's entry). fg_gemv_pick returns the variant fg_gemv would launch (-1 when not
 * supported); fg_gemv_variant launches variant v (cudaErrorInvalidValue where v cannot serve
 * the epilogue); fg_gemv_variant_name names v ("" out of range). */
int fg_gemv_n_variants(void);
const char *fg_gemv_variant_name(int v);
int fg_gemv_pick(int n, int in_dim, int out_dim, int epilogue);
int fg_gemv_variant(int v, void *y, int y_f32, const void *x, const void *w, int n, int in_dim,
                    int out_dim, int epilogue, void *stream);
/* The same for fg_gemv_norm; only some variants have a fused twin (the others are refused with
 * cudaErrorInvalidValue). */
int fg_gemv_norm_pick(int n, int in_dim, int out_dim, int epilogue);
int fg_gemv_norm_variant(int v, void *y, int y_f32, const void *x, const void *gamma, float eps,
                         void *h_out, const void *w, int n, int in_dim, int out_dim, int epilogue,
                         void *stream);
/* The benchmark's unfused baseline: a copy of the engine's RMSNorm kernel (k_rmsnorm, one block
 * per row, no PDL), out (n, dim) = bf16(x · rsqrt(mean(x²) + eps) · gamma), gamma fp32 (dim). */
int fg_gemv_bench_rmsnorm(void *out, const void *x, const void *gamma, float eps, int n, int dim,
                          void *stream);

#ifdef __cplusplus
}
#endif

#endif
