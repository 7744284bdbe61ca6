/* qgemv.h — CUDA: GEMV for decode (1 to 16 activation rows) reading weights in their GGUF blocks
 * (Q8_0, Q4_0), with the epilogues of kernels/gemv.h (store, residual add, SwiGLU) and the fused
 * RMSNorm in front; and the bf16 dequantization of such a weight for larger batches (the scratch
 * a cuBLASLt GEMM then reads).
 *
 * y (n, out_dim) = x (n, in_dim) · Wᵀ, W (out_rows, in_dim) stored as GGUF rows of in_dim / 32
 * blocks each (Q8_0: 34 bytes, f16 d then 32 int8 q, value d·q; Q4_0: 18 bytes, f16 d then 16
 * bytes whose low nibbles are elements 0-15 and high nibbles 16-31, value d·(q − 8)), rows
 * consecutive, exactly as in the file (model/gguf_quant.c is the oracle). x bf16, fp32
 * accumulation; each block's 32 products are summed exactly-representable (integer q times bf16 x)
 * and scaled by fp32 d once. Twin: dequantize-then-fp64 in tests/gpu/check_qgemv.py.
 */
#ifndef FG_QGEMV_H
#define FG_QGEMV_H

#ifdef __cplusplus
extern "C" {
#endif

#define FG_QGEMV_MAX_ROWS 16

/* 1 when fg_qgemv serves this shape: wtype Q8_0 (8) or Q4_0 (2), 1 <= n <= FG_QGEMV_MAX_ROWS,
 * in_dim % 32 == 0, out_dim >= 1. */
int fg_qgemv_supported(int wtype, int n, int in_dim, int out_dim);

/* Epilogues as enum fg_gemv_epilogue (gemv.h): STORE 0, ADD 1, SWIGLU 2 (W has 2·out_dim rows,
 * gate rows then up rows). x: bf16 (n, in_dim), 16-byte aligned; w: the blocks, 2-byte aligned;
 * y: (n, out_dim) bf16, or fp32 when y_f32. Enqueued on stream; graph-capturable (no allocation,
 * no sync); launched with programmatic dependent launch (w is read before the previous kernel on
 * the stream has finished, x and y only after). Deterministic (fixed reduction order). Returns 0
 * or the cudaError_t of the launch (cudaErrorInvalidValue for a refused shape, type, epilogue or
 * alignment). Any thread. */
int fg_qgemv(void *y, int y_f32, const void *x, const void *w, int wtype, int n, int in_dim,
             int out_dim, int epilogue, void *stream);

/* RMSNorm fused in front, as fg_gemv_norm: h = bf16(x · rsqrt(mean(x²) + eps) · gamma) row by
 * row (k_rmsnorm's order of operations), y = epilogue(h · Wᵀ). gamma bf16 (in_dim), 16-byte
 * aligned; h_out (n, in_dim) written by block 0 when not NULL. */
int fg_qgemv_norm(void *y, int y_f32, const void *x, const void *gamma, float eps, void *h_out,
                  const void *w, int wtype, int n, int in_dim, int out_dim, int epilogue,
                  void *stream);

/* 1 when fg_qgemv takes its staged kernel for W at w with rows of in_dim (16-byte aligned rows,
 * in_dim / 32 a multiple of 8: the 8B shapes), 0 for the direct one (tests cover both). */
int fg_qgemv_staged(int wtype, const void *w, int in_dim);

/* The device layout of a quantized weight. fg_qgemv, fg_qgemv_norm and fg_qdequant_bf16 read W in
 * the layout fg_qpack writes, which is this file's business (today: the file's own blocks, rows
 * consecutive, as above). A caller that keeps a GGUF weight on the device allocates
 * fg_qpack_bytes(wtype, rows, cols) bytes (16-byte aligned), copies the file's rows to the device
 * (src, rows · row_bytes) and calls fg_qpack; a fused weight (q|k|v, gate|up) is packed as one
 * matrix of all its rows. dst and src must not overlap. Returns 0 or a cudaError_t. */
size_t fg_qpack_bytes(int wtype, int rows, int cols);
int fg_qpack(void *dst, const void *src, int wtype, int rows, int cols, void *stream);

/* dst (rows, cols) bf16 = bf16(dequantize(w)), w as above: the scratch through which prefill and
 * batches past FG_QGEMV_MAX_ROWS reach the bf16 GEMM. Each element is d·q (Q4_0: d·(q − 8)) in
 * fp32 rounded once to bf16. dst 16-byte aligned. Graph-capturable. Returns 0 or a cudaError_t. */
int fg_qdequant_bf16(void *dst, const void *w, int wtype, int rows, int cols, void *stream);

#ifdef __cplusplus
}
#endif

#endif
