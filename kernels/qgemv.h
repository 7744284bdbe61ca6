/* qgemv.h — CUDA: GEMV for decode (1 to 16 activation rows) reading weights quantized as GGUF
 * blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) in a GPU-friendly repacking
 * of the same bits, with the epilogues of kernels/gemv.h (store, residual add, SwiGLU) and the
 * fused RMSNorm in front; and the bf16 dequantization of such a weight for larger batches (the
 * scratch a cuBLASLt GEMM then reads).
 *
 * y (n, out_dim) = x (n, in_dim) · Wᵀ, W (rows, in_dim) given by the file as rows of in_dim / 32
 * blocks (Q8_0: 34 bytes, f16 d then 32 int8 q, value d·q; Q4_0: 18 bytes, f16 d then 16 bytes
 * whose low nibbles are elements 0-15 and high nibbles 16-31, value d·(q − 8); Q4_1: 20 bytes,
 * f16 d, f16 m, then the nibbles as Q4_0, value d·q + m; Q5_0: 22 bytes, f16 d, 4 bytes qh (bit
 * j of the little-endian u32 the fifth bit of element j), 16 bytes of nibbles as Q4_0, value
 * d·(q − 16) with q = nibble | bit << 4; Q5_1: 24 bytes, f16 d, f16 m, qh, the nibbles, value
 * d·q + m; model/gguf_quant.c is the oracle), or of in_dim / 256 super-blocks (Q4_K: 144 bytes,
 * f16 d, f16 dmin, 12 bytes of 6-bit scales sc_j and mins m_j, 128 bytes qs; sub-block j
 * (elements 32j .. 32j+31) takes the low nibbles of qs[32 (j/2) ..] for even j, the high ones
 * for odd j, value (d·sc_j)·q − dmin·m_j: Q4_1's form per 32-element block with scale d·sc_j and
 * min −dmin·m_j, both exact in fp32; Q5_K: 176 bytes, f16 d, f16 dmin, the 12 bytes of scales,
 * 32 bytes qh, 128 bytes qs, all as Q4_K's but qh: element l (0..31) of sub-block j has its
 * fifth bit at bit j of qh[l], q = nibble | bit << 4, value (d·sc_j)·q − dmin·m_j as Q4_K's;
 * Q6_K: 210 bytes, ql[128], qh[64], int8 scales[16], f16 d, value (d·sc_(e/16))·(q − 32) with
 * the 6-bit q of element e from ql / qh as model/gguf_quant.c reads them; Q3_K: 110 bytes,
 * hmask[32], qs[64], 12 bytes of sixteen 6-bit scales, f16 d; element e = 32g + l (g = 4h + s)
 * takes the 2 bits s of qs[32h + l] and subtracts 4 when bit g of hmask[l] is clear, value
 * (d·(sc_(e/16) − 32))·q; Q2_K: 84 bytes, scales[16] (low nibble sc, high nibble m, per 16
 * elements), qs[64] (2-bit q as Q3_K's), f16 d, f16 dmin, value (d·sc_(e/16))·q − dmin·m_(e/16)).
 * x bf16, fp32 accumulation; each block's 32 products are exact (integer q times bf16 x), summed
 * in fp32 and scaled by the fp32 d once (Q4_1 / Q5_1: plus m · Σx; Q4_K / Q5_K: d·sc_j and
 * −dmin·m_j formed in fp32 from the resident fp16 and 6-bit integers, never rounded to fp16; Q6_K,
 * Q3_K, Q2_K: each 16-element half of a block summed on its own and scaled by the exact fp32 d·sc;
 * Q2_K plus −dmin·m times the half's Σx).
 * Activations: bf16 (the error is the bf16 GEMV's), except that the calls the int8 variants
 * serve (Q8_0, Q4_0, Q4_1, Q4_K; n <= 8 rows on whole groups and tiles, the quantized x within
 * shared memory) run on int8 activations where fg_qgemv_pick takes them (the fused-norm calls at
 * n = 1; fg_qgemv_variant_i8 says which; FLASHGEN_QGEMV_I8=0 turns it off): each 32-element
 * block of x (after the fused norm: of h) as llama.cpp's integer kernels quantize it, d = amax /
 * 127 and q = v · (1 / d) rounded to nearest even in fp32, the block's products exact integers
 * (int8 mma), scaled by the fp32 d_w · d_x; the error beyond the bf16 GEMV's is that of x's
 * rounding to 8 bits (kernels/qgemv_math.cuh, qi8_make). Twin: dequantize-then-fp64 in
 * tests/gpu/check_qgemv.py (on the same quantized x for the int8 calls).
 *
 * The device layout (fg_qpack writes it, everything else here reads it). Rows are taken in tiles
 * of 8 (the last tile padded with zero rows), k in groups of 4 blocks (128 elements; the last
 * group of a row has gs = nb − 4q blocks, nb = in_dim / 32). Three regions, each 16-byte aligned:
 *   quants: for tile T, group q, lane slot l = (row % 8) · 4 + t (t = 0..3), block u of the
 *     group: QB bytes at ((T · nb + 4q) · 32 + l · gs + u) · QB, QB = 8 (Q8_0) or 4 (Q4_x): the
 *     8 elements 8t .. 8t+7 of the block in row (8T + row % 8). Q8_0: the 8 int8 in order.
 *     Q4_x: one little-endian 32-bit word whose bits 4p .. 4p+3 hold element 8t + 2p and bits
 *     16+4p .. 19+4p element 8t + 2p + 1 (p = 0..3).
 *   scales at S = tiles · nb · 32 · QB: the fp16 d of row r, block b at
 *     S + ((T · nb + 4q) · 8 + (r % 8) · gs + u) · 2 (T = r / 8, q = b / 4, u = b % 4).
 *   mins (Q4_1, Q5_1) at M = S + tiles · nb · 16, laid out as the scales.
 * So a lane reads its 4 blocks of a row as one 16-byte word (Q8_0: two), a warp 512 (1024)
 * contiguous bytes, and a row's 4 scales as one 8-byte word. The bytes equal the file's when the
 * rows are a multiple of 8 (every model shape); the padding of smaller row counts is at most 7
 * rows.
 * Q5_0 / Q5_1: quants (the low nibbles), scales and (Q5_1) mins as Q4_0 / Q4_1's. At H = M
 * (Q5_0) or M + tiles · nb · 16 (Q5_1), the fifth bits: per lane slot and block one byte at
 * H + ((T · nb + 4q) · 32 + l · gs + u) (as the quants with QB = 1), slot i's bit (element
 * 8t + i) at bit i: byte t of the block's qh. A lane's 4 blocks of a group are one 4-byte word.
 * Per row and 32 elements 16 + 2 + 4 = 22 bytes (Q5_1: + 2 = 24), the file's own (1×).
 * Q4_K (in_dim % 256 == 0, so every group is full): each sub-block j of super-block s is block
 * b = 8s + j. Quants as Q4_x (its 32 nibbles in element order). The scales region holds, where
 * Q4_x has block b's fp16 d, the halfword sc_j | m_j << 8 (the 6-bit integers unpacked). At
 * M = S + tiles · nb · 16, the d/dmin region: row r's 4 file bytes (f16 d, f16 dmin) of super-block
 * s at M + ((T · nb / 8 + s) · 8 + r % 8) · 4 (a tile's 8 rows side by side). Per row and 256
 * elements 128 + 16 + 4 = 148 bytes against the file's 144: 37/36 = 1.028× (rows a multiple of 8).
 * Q5_K (in_dim % 256 == 0): quants (the low nibbles), scales and d/dmin regions as Q4_K's. At
 * H = M + tiles · nb · 4, the fifth bits as Q5_x's: per lane slot and block one byte at
 * H + ((T · nb + 4q) · 32 + l · gs + u), slot i's bit (element 8t + i of sub-block j: bit j of the
 * super-block's qh[8t + i]) at bit i. Per row and 256 elements 128 + 16 + 4 + 32 = 180 bytes
 * against the file's 176: 45/44 = 1.023×.
 * Q6_K (in_dim % 256 == 0): blocks as Q4_K's, but lane slot l's 8 elements of a block are, in
 * its word's order (slots i = 0..7), elements 8t + i + (i < 4 ? (t < 2 ? 0 : −12) : (t < 2 ? 12 :
 * 0)): slots 0-3 of the four lanes are the block's first 16 elements, slots 4-7 its last 16 (the
 * kernel permutes x to match). Quants: the low nibbles, as Q4_x's word. Scales region: the
 * block's two int8 scales (first 16 elements in the low byte). d/dmin region: as Q4_K's, the f16
 * d in the low half (the high half 0). At H = M + tiles · nb · 4, the high bits: per lane slot
 * and block 16 bits at H + ((T · nb + 4q) · 32 + l · gs + u) · 2 (as the quants with QB = 2),
 * slot i's two bits at bit (i & 1) · 8 + (i >> 1) · 2. Per row and 256 elements 128 + 64 + 16 +
 * 4 = 212 bytes against the file's 210: 1.0095×.
 * Q3_K (in_dim % 256 == 0): lane slot l's 8 elements of a block in Q6_K's order. Quants with
 * QB = 2: per lane slot and block 16 bits at ((T · nb + 4q) · 32 + l · gs + u) · 2, slot i's 2 low
 * bits at bit (i & 1) · 8 + (i >> 1) · 2 (Q6_K's high bits' places); a lane's 4 blocks of a group
 * are one 8-byte word (a warp 256 contiguous bytes), the scales region at S = tiles · nb · 32 · 2.
 * Scales region: the block's two scales as int8 sc − 32 (first 16 elements in the low byte).
 * d/dmin region as Q6_K's (f16 d in the low half, the high half 0). At H = M + tiles · nb · 4,
 * the hmask bits as Q5_x's fifth bits: per lane slot and block one byte, slot i's bit at bit i.
 * Per row and 256 elements 64 + 16 + 4 + 32 = 116 bytes against the file's 110: 58/55 = 1.055×.
 * Q2_K (in_dim % 256 == 0): quants, the lane order and the d/dmin region's place as Q3_K's; the
 * scales region holds the file's two bytes scales[2j], scales[2j + 1] of block j (sc | m << 4 of
 * each 16-element half, the first in the low byte); the d/dmin word is the file's f16 d, f16 dmin
 * (as Q4_K's). No high bits. Per row and 256 elements 64 + 16 + 4 = 84 bytes, the file's own (1×).
 */
#ifndef FG_QGEMV_H
#define FG_QGEMV_H

#ifdef __cplusplus
extern "C" {
#endif

#define FG_QGEMV_MAX_ROWS 16

/* 1 when fg_qgemv serves this shape: wtype Q8_0 (8), Q4_0 (2), Q4_1 (3), Q5_0 (6) or Q5_1 (7)
 * with in_dim % 32 == 0, or Q2_K (10), Q3_K (11), Q4_K (12), Q5_K (13) or Q6_K (14) with
 * in_dim % 256 == 0;
 * 1 <= n <= FG_QGEMV_MAX_ROWS, out_dim >= 1. */
int fg_qgemv_supported(int wtype, int n, int in_dim, int out_dim);

/* Epilogues as enum fg_gemv_epilogue (gemv.h): STORE 0, ADD 1, SWIGLU 2 (W has 2·out_dim rows,
 * gate rows then up rows). x: bf16 (n, in_dim), 16-byte aligned; w: the start of a matrix
 * fg_qpack packed with exactly out_dim rows (SwiGLU: 2·out_dim), 16-byte aligned;
 * y: (n, out_dim) bf16, or fp32 when y_f32. Enqueued on stream; graph-capturable (no allocation,
 * no sync); launched with programmatic dependent launch (w is read before the previous kernel on
 * the stream has finished, x and y only after). Deterministic (fixed reduction order). Returns 0
 * or the cudaError_t of the launch (cudaErrorInvalidValue for a refused shape, type, epilogue or
 * alignment). Any thread. */
int fg_qgemv(void *y, int y_f32, const void *x, const void *w, int wtype, int n, int in_dim,
             int out_dim, int epilogue, void *stream);

/* RMSNorm fused in front, as fg_gemv_norm: h = bf16(x · rsqrt(mean(x²) + eps) · gamma) row by
 * row (k_rmsnorm's order of operations), y = epilogue(h · Wᵀ). gamma fp32 (in_dim), 16-byte
 * aligned; h_out (n, in_dim) written by block 0 when not NULL. */
int fg_qgemv_norm(void *y, int y_f32, const void *x, const void *gamma, float eps, void *h_out,
                  const void *w, int wtype, int n, int in_dim, int out_dim, int epilogue,
                  void *stream);

/* 1 when every group of 4 blocks of a row is full (in_dim % 128 == 0, w 16-byte aligned): the
 * lanes then take 16-byte loads only; 0 when each row ends in a partial group, read block by block
 * (tests cover both). The name is the earlier staged kernel's. */
int fg_qgemv_staged(int wtype, const void *w, int in_dim);

/* The variants the benchmark times (tile rows RT · 8 per thread block, KW warps; the "bulk_"
 * ones stream W through shared memory by cp.async.bulk from one producer warp beside the KW, in
 * a persistent grid, and serve in_dim % 128 == 0 with out_dim % 8 == 0 (other shapes run variant
 * 0 instead; those with KW 8 give variant 0's bits)): their count,
 * name, the one fg_qgemv / fg_qgemv_norm (norm = 1) take for a call (-1 when refused), and a call
 * of variant v (arguments and results as fg_qgemv / fg_qgemv_norm). */
int fg_qgemv_n_variants(void);
const char *fg_qgemv_variant_name(int v);
int fg_qgemv_pick(int wtype, int n, int in_dim, int out_dim, int epilogue, int norm);
int fg_qgemv_variant(int v, void *y, int y_f32, const void *x, const void *w, int wtype, int n,
                     int in_dim, int out_dim, int epilogue, void *stream);
int fg_qgemv_norm_variant(int v, void *y, int y_f32, const void *x, const void *gamma, float eps,
                          void *h_out, const void *w, int wtype, int n, int in_dim, int out_dim,
                          int epilogue, void *stream);
/* 1 when variant v runs this call on int8 activations (the "i8_" variants on the calls they
 * serve; others run their bf16 twin, the bulk variant of the same shape). */
int fg_qgemv_variant_i8(int v, int wtype, int n, int in_dim, int out_dim);

/* The device layout of a quantized weight (above). A caller that keeps a GGUF weight on the
 * device allocates fg_qpack_bytes(wtype, rows, cols) bytes (16-byte aligned), copies the file's
 * rows to the device (src, rows · row_bytes, any alignment) and calls fg_qpack (a kernel on
 * stream); a fused weight (q|k|v, gate|up) is packed as one matrix of all its rows. dst and src
 * must not overlap. fg_qpack_bytes returns 0 for a type or shape it does not pack; fg_qpack 0 or
 * a cudaError_t (cudaErrorInvalidValue for a refused type, shape or alignment). */
size_t fg_qpack_bytes(int wtype, int rows, int cols);
int fg_qpack(void *dst, const void *src, int wtype, int rows, int cols, void *stream);

/* dst (rows, cols) bf16 = bf16(dequantize(w)), w packed by fg_qpack (rows, cols), 16-byte
 * aligned: the scratch through which prefill and batches past FG_QGEMV_MAX_ROWS reach the bf16
 * GEMM. Each element is d·q (Q4_0: d·(q − 8), Q4_1: d·q + m, Q5_0: d·(q − 16), Q5_1: d·q + m,
 * Q4_K / Q5_K / Q2_K: (d·sc)·q − dmin·m, Q6_K: (d·sc)·(q − 32), Q3_K: (d·sc)·q, unfused) in fp32
 * as model/gguf_quant.c
 * computes it, rounded once to bf16. dst 16-byte aligned.
 * Graph-capturable. Returns 0 or a cudaError_t. */
int fg_qdequant_bf16(void *dst, const void *w, int wtype, int rows, int cols, void *stream);

/* The same for a list of rows: dst (n, cols) bf16, row i = row ids[i] of w (rows, cols) packed by
 * fg_qpack, each element bit for bit what fg_qdequant_bf16 writes for that row; ids (n) device
 * ints in any order, repeats allowed; NULL: every row in order (n = rows: fg_qdequant_bf16). The
 * token-embedding gather from a head resident in this layout (a tied embedding, kernels/ops.h
 * qembed), the values fg_qembed (qembed.h) gathers from the file's rows. An id outside [0, rows)
 * gets a row of zeros and reads nothing (the forward pass refuses such tokens before any op,
 * model/forward.c, so this only bounds a bad caller). dst and w 16-byte aligned; n = 0 launches
 * nothing. Graph-capturable, no allocation. Returns 0 or a cudaError_t (cudaErrorInvalidValue
 * for a refused type, shape, n < 0 or alignment). */
int fg_qdequant_rows_bf16(void *dst, const void *w, int wtype, int rows, int cols, const int *ids,
                          int n, void *stream);

#ifdef __cplusplus
}
#endif

#endif
