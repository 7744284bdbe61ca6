/* qgemm.h — CUDA: the product of up to 64 activation rows with a GGUF weight in the packed layout
 * of kernels/qgemv.h, without a bf16 copy of the weight: the batches from where the GEMV falls
 * behind (17 rows, 9 for Q8_0 / Q4_0: fg_qgemm_min_rows) up to 64 (decode at serving batches),
 * which otherwise dequantize W into a bf16 scratch and run cuBLASLt (reading and writing 4 bytes
 * per weight more than the quantized blocks hold).
 *
 * y (n, out_dim) = epilogue(x (n, in_dim) · Wᵀ), the types and epilogues of fg_qgemv (STORE, ADD,
 * SWIGLU with W's gate rows then up rows; y bf16 or fp32). The numbers are those of the path it
 * replaces, the bf16 GEMM on fg_qdequant_bf16's scratch: W's values are bf16(dequantize(w)), the
 * same bits that kernel writes, made in registers on the way into the tensor cores, times bf16 x
 * exactly, summed in fp32 (in k order per part). Twin: the fp64 products of the bf16-rounded
 * dequantized weights in tests/gpu/check_qgemm.py. Deterministic: a fixed summation order for a
 * given (n, splits).
 */
#ifndef FG_QGEMM_H
#define FG_QGEMM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FG_QGEMM_MAX_ROWS 64

/* 1 when fg_qgemm serves the shape: a type and in_dim fg_qgemv serves (qgemv.h), 1 <= n <=
 * FG_QGEMM_MAX_ROWS, out_dim >= 1. */
int fg_qgemm_supported(int wtype, int n, int in_dim, int out_dim);

/* The fewest rows for which the engine takes fg_qgemm over the GEMV (kernels/qgemv.h) for a type:
 * 9 for Q8_0 and Q4_0, 17 for the others. Measured in the engine (H200, 2026-12-04, 8B shape,
 * batch 16, the GEMV's fused norm against a separate RMSNorm + fg_qgemm): Q8_0 2295 -> 2950
 * tokens/s, Q4_0 3658 -> 3794; Q5_K 2539 -> 2400 and the Q4_K_M mix 2692 -> 2451 (their GEMV
 * stays). 0 for a type fg_qgemm does not read. */
int fg_qgemm_min_rows(int wtype);

/* The k splits fg_qgemm takes for a call when splits is 0 (enough thread blocks for the SMs,
 * bounded by the workspace: splits · n · rows · 4 bytes, rows = out_dim or 2 · out_dim for
 * SWIGLU). */
int fg_qgemm_pick_splits(int wtype, int n, int in_dim, int out_dim, int epilogue,
                         size_t work_bytes);

/* The product above, enqueued on stream (graph-capturable, no allocation). x bf16 (n, in_dim) and
 * w (fg_qpack's layout, exactly out_dim rows, 2 · out_dim for SWIGLU) 16-byte aligned. splits: 0
 * picks (fg_qgemm_pick_splits), else the k range is cut into that many parts (at most the groups
 * of 128 columns), each part's fp32 sums written to work (16-byte aligned, splits · n · rows · 4
 * bytes) and summed in part order by a second kernel that applies the epilogue; with one part
 * the epilogue runs in the first kernel and work may be NULL. Launched with programmatic
 * dependent launch (W read before the previous kernel on the stream has finished). Returns 0 or a
 * cudaError_t (cudaErrorInvalidValue for a refused shape, type, epilogue, alignment or a work
 * area too small). Any thread. */
int fg_qgemm(void *y, int y_f32, const void *x, const void *w, int wtype, int n, int in_dim,
             int out_dim, int epilogue, int splits, void *work, size_t work_bytes, void *stream);

#ifdef __cplusplus
}
#endif

#endif
