/* qembed.h — CUDA: the token-embedding gather from a table kept in its GGUF file's blocks (the
 * engine's FG_QLAYOUT_ROWS copy of an untied embedding, kernels/ops.h; a tied one is gathered
 * from the head's packed copy by fg_qdequant_rows_bf16, kernels/qgemv.h, to the same values):
 * x[t] (dim bf16) = the dequantized row tokens[t],
 * each element d·q (Q8_0), d·(q − 8) (Q4_0), d·q + m (Q4_1), d·(q − 16) / d·q + m with q's fifth
 * bit from qh (Q5_0 / Q5_1), (d·sc)·q − dmin·m (Q4_K; Q5_K with q's fifth bit from qh),
 * (d·sc)·(q − 32) (Q6_K), (d·(sc − 32))·q with q's 2 low bits minus 4 where the
 * hmask bit is clear (Q3_K), in fp32 with each operation rounded (none fused) as
 * model/gguf_quant.c computes it, rounded once to bf16 (as fg_qdequant_bf16, kernels/qgemv.h).
 * Twin: cpu_ops()->qembed, which check_qengine.py compares through the engine.
 */
#ifndef FG_QEMBED_H
#define FG_QEMBED_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of one row of COLS elements of ggml TYPE as the file stores it, or 0 for a type (shape)
 * fg_qembed does not gather: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (cols % 32 == 0), Q3_K, Q4_K, Q5_K,
 * Q6_K (cols % 256 == 0); a Q2_K table is not gathered (kernels/qembed.cu says why; tied, the
 * head's packed Q2_K copy serves it). */
size_t fg_qembed_row_bytes(uint32_t type, int cols);

/* x (n, dim) bf16 = the rows tokens[0 .. n) of table (rows of row_bytes = fg_qembed_row_bytes(
 * type, dim) bytes), all device memory; one block of threads per token. Enqueued on stream;
 * graph-capturable. Returns 0, or a cudaError_t (cudaErrorInvalidValue for a type, shape or row
 * size it does not gather). */
int fg_qembed(void *x, const void *table, const int *tokens, int n, int dim, size_t row_bytes,
              uint32_t type, void *stream);

#ifdef __cplusplus
}
#endif

#endif
