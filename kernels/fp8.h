/* fp8.h — CUDA: FP8 (e4m3) weights and activations on Hopper (issue 13).
 *
 * Format. A weight W (rows, cols) bf16 (torch Linear layout, (out_dim, in_dim)) is stored as
 * q (rows, cols) e4m3 bytes, row-major, and one fp32 scale per row (per output channel):
 *   s_r = amax_r / 448 (1 where the row is all zero), q_rc = e4m3_rn_satfinite(W_rc / s_r),
 * so that W_rc ≈ s_r · q_rc (448 is the largest finite e4m3; both divisions are correctly
 * rounded fp32, the rounding to e4m3 nearest-even, as torch's `.to(torch.float8_e4m3fn)`).
 * Activations for the FP8 GEMM are quantized the same way per token (per row of x), dynamically,
 * at every call (fg_fp8_quant_rows). All pointers are device memory.
 *
 * Twins: tests/gpu/check_fp8.py (torch's e4m3 conversion for the quantizers, bit for bit; fp64
 * products of the dequantized operands for the GEMM and the GEMV).
 */
#ifndef FG_FP8_H
#define FG_FP8_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FG_FP8_E4M3_MAX 448.0f
#define FG_FP8_GEMV_MAX_ROWS 16

/* Row-wise e4m3 quantization of a bf16 matrix x (rows, cols), cols % 8 == 0: q (rows, cols)
 * e4m3 and scale (rows) fp32 as the format above. Serves both the weights at load (per output
 * channel) and the activations before an FP8 GEMM (per token). With gamma (fp32 (cols)) the rows
 * are RMSNorm'ed first, h = bf16(x · rsqrt(mean(x²) + eps) · gamma) in the order of operations of
 * the engine's k_rmsnorm, and h is quantized; h_out (rows, cols) bf16, when not NULL, receives h
 * (gamma NULL: h_out must be NULL). One block per row; deterministic; graph-capturable. x, q and
 * h_out (and gamma) 16-byte aligned, scale 4-byte aligned. Returns 0 or a cudaError_t
 * (cudaErrorInvalidValue for a refused shape or alignment). Any thread. */
int fg_fp8_quant_rows(void *q, float *scale, const void *x, const void *gamma, float eps,
                      void *h_out, int rows, int cols, void *stream);

/* ---- W8A8 GEMM through cuBLASLt ------------------------------------------------------------
 * y (n, out_dim) = (sx ⊗ sw) ∘ (xq (n, in_dim) · wqᵀ), wq (out_dim, in_dim): e4m3 × e4m3 with
 * fp32 accumulation, y bf16 (or fp32 when y_f32), y += ... when accumulate. cuBLASLt's FP8 path
 * on Hopper takes only the "TN" form, which is what row-major x · Wᵀ is in its column-major
 * terms (A = W, transposed; B = x). Two ways to apply the scales (enum fg_fp8_gemm_mode):
 *   OUTER: cuBLASLt applies them itself (CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F on A and
 *          B: a vector of out_dim weight scales and one of n token scales), output straight in
 *          y's type, beta = 1 for accumulate;
 *   SPLIT: cuBLASLt writes the unscaled fp32 product into the caller's scratch (n · out_dim
 *          fp32), then one kernel of ours applies sx[t] · sw[j] (and the residual add).
 * AUTO takes OUTER where cuBLASLt has an algorithm for it, else SPLIT. FAST_ACCUM or'ed into the
 * mode turns on cuBLASLt's FP8 fast accumulation (partial sums no longer promoted to fp32 at
 * intervals: faster, less accurate; off by default). Shapes: n >= 1,
 * in_dim % 16 == 0, out_dim % 16 == 0; xq, wq, y, sx, sw and scratch 16-byte aligned. */
enum fg_fp8_gemm_mode {
    FG_FP8_GEMM_AUTO = 0,
    FG_FP8_GEMM_OUTER = 1,
    FG_FP8_GEMM_SPLIT = 2,
    FG_FP8_GEMM_FAST_ACCUM = 4, /* flag */
};

struct fg_fp8_lt; /* a cuBLASLt handle, its workspace and the plans per shape */

/* NULL on failure (no device, cuBLASLt refused). One context per thread that enqueues. */
struct fg_fp8_lt *fg_fp8_lt_create(void);
void fg_fp8_lt_free(struct fg_fp8_lt *lt); /* accepts NULL */
/* The last failure's message ("" when none). */
const char *fg_fp8_lt_error(const struct fg_fp8_lt *lt);

/* Enqueues the product on stream (graph-capturable once the shape's plan exists: the first call
 * of a shape asks cuBLASLt for an algorithm on the host). scratch (scratch_bytes) is read only
 * in SPLIT mode and must hold n · out_dim fp32 there (NULL otherwise is fine). Returns 0, the
 * mode that ran as 1 (OUTER) or 2 (SPLIT) when mode_used is not NULL, or -1 with the reason in
 * fg_fp8_lt_error (refused shape, alignment, scratch too small, no algorithm, a cuBLASLt or
 * launch error). Thread: the one that owns lt. */
int fg_fp8_gemm(struct fg_fp8_lt *lt, int mode, void *y, int y_f32, const void *xq, const float *sx,
                const void *wq, const float *sw, int n, int in_dim, int out_dim, int accumulate,
                void *scratch, size_t scratch_bytes, int *mode_used, void *stream);

/* ---- Decode GEMV: bf16 x, e4m3 weights ---------------------------------------------------
 * y (n, out_dim) = epilogue(x (n, in_dim) · (s ∘ q)ᵀ) for 1 <= n <= FG_FP8_GEMV_MAX_ROWS rows,
 * the bf16 GEMV's epilogues (enum fg_gemv_epilogue, gemv.h: STORE 0, ADD 1 the residual add,
 * SWIGLU 2 with q holding 2 out_dim rows [gate; up] and sw 2 out_dim scales), fp32 accumulation;
 * each weight byte is turned into the bf16 of its exact value and multiplied by bf16 x on the
 * tensor cores, the row's scale applied once to the fp32 dot. x bf16 16-byte aligned, q (rows,
 * in_dim) 16-byte aligned with in_dim % 16 == 0, sw fp32, y bf16 (fp32 when y_f32). Enqueued on
 * stream, graph-capturable, programmatic dependent launch as fg_gemv (q and sw are read before
 * the previous kernel has finished; x and y after). Deterministic. Returns 0 or a cudaError_t
 * (cudaErrorInvalidValue for a refused shape, epilogue or alignment). Any thread. */
int fg_fp8_gemv_supported(int n, int in_dim, int out_dim);
int fg_fp8_gemv(void *y, int y_f32, const void *x, const void *q, const float *sw, int n,
                int in_dim, int out_dim, int epilogue, void *stream);
/* RMSNorm fused in front, as fg_gemv_norm: h = bf16(x · rsqrt(mean(x²) + eps) · gamma) row by
 * row, y = epilogue(h · (s ∘ q)ᵀ); gamma fp32 (in_dim) 16-byte aligned; h_out (n, in_dim) bf16
 * written by block 0 when not NULL. */
int fg_fp8_gemv_norm(void *y, int y_f32, const void *x, const void *gamma, float eps, void *h_out,
                     const void *q, const float *sw, int n, int in_dim, int out_dim, int epilogue,
                     void *stream);

/* For tests and benchmarks: the variants behind fg_fp8_gemv (one table). fg_fp8_gemv_pick is
 * the variant fg_fp8_gemv launches (-1 when refused); fg_fp8_gemv_variant launches variant v
 * (gamma NULL: no norm; gamma set: the norm as fg_fp8_gemv_norm). */
int fg_fp8_gemv_n_variants(void);
const char *fg_fp8_gemv_variant_name(int v);
int fg_fp8_gemv_pick(int n, int in_dim, int out_dim, int epilogue);
int fg_fp8_gemv_variant(int v, void *y, int y_f32, const void *x, const void *gamma, float eps,
                        void *h_out, const void *q, const float *sw, int n, int in_dim, int out_dim,
                        int epilogue, void *stream);

/* ---- FP8 copies of a backend's bf16 weights (the CUDA backend's FLASHGEN_QUANTIZATION=fp8) ----
 * The backend records each bf16 weight it stores (record: rows of cols at bf16, device memory);
 * rows recorded back to back with the same cols form one run, so the fused q|k|v and gate|up
 * parts are one matrix. build quantizes every run (cols % 16 == 0) into one allocation, e4m3
 * rows and fp32 scales as the format above. fg_fp8_linear then serves a product whose weight
 * lies inside a run: up to 8 rows (FLASHGEN_FP8_GEMV_ROWS, at most FG_FP8_GEMV_MAX_ROWS) through
 * fg_fp8_gemv / fg_fp8_gemv_norm, more through fg_fp8_quant_rows of x (the norm fused into it)
 * and fg_fp8_gemm. The bf16 weights stay resident beside the copies (1.5x the weight bytes).
 * Thread: the backend's worker (one stream). */
struct fg_fp8_weights;
struct fg_fp8_weights *fg_fp8_weights_create(void);  /* NULL: out of memory or no cuBLASLt */
void fg_fp8_weights_free(struct fg_fp8_weights *fw); /* accepts NULL */
/* 0, or -1 when out of host memory */
int fg_fp8_weights_record(struct fg_fp8_weights *fw, const void *bf16, size_t rows, int cols);
/* Quantizes what was recorded since the last build: 0 or -1 (fg_fp8_weights_error). */
int fg_fp8_weights_build(struct fg_fp8_weights *fw, void *stream);
/* device bytes of the FP8 copies (e4m3 rows and scales) */
size_t fg_fp8_weights_bytes(const struct fg_fp8_weights *fw);
const char *fg_fp8_weights_error(const struct fg_fp8_weights *fw);
/* y = epilogue(h · Wᵀ) with h = x, or h = RMSNorm(x; norm_w, eps) when norm_w is set, on the
 * FP8 copy of W (out_rows × in_dim bf16 at w; out_rows = 2 out_dim for SWIGLU), the epilogues of
 * fg_fp8_gemv, y bf16. Returns 0 when W has no FP8 copy (the caller runs its bf16 product), 1
 * when the product was enqueued, 2 when (SWIGLU, more rows than the GEMV takes) the
 * (n, 2 out_dim) gate|up product was written to scratch as bf16 for the caller's SwiGLU, -1 on an
 * error (fg_fp8_weights_error). Graph-capturable once a shape has been seen (its cuBLASLt plan
 * and activation buffer exist). */
int fg_fp8_linear(struct fg_fp8_weights *fw, void *y, const void *x, const void *norm_w, float eps,
                  const void *w, int n, int in_dim, int out_dim, int epilogue, void *scratch,
                  void *stream);

#ifdef __cplusplus
}
#endif

#endif
