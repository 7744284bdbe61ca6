/* cpu_quant.h — CPU dot products on weight rows kept in their GGUF blocks.
 *
 * A weight row stays as the file stored it (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 in 32-element blocks;
 * Q2_K, Q3_K, Q4_K, Q5_K, Q6_K in 256-element super-blocks). The activation row it multiplies is
 * quantized per block first, the way llama.cpp pairs them: 8-bit symmetric blocks of 32 (one fp32
 * scale, plus the sum of the quants for the types with a minimum) for the 32-element types, and
 * 8-bit blocks of 256 with the sums of every 16 quants for the K-quants. Each block product is then
 * an exact integer sum of int8 × int8 terms, scaled once in fp32.
 *
 * Variants: a plain-C body (the fallback, and the readable statement of each product) and SIMD
 * bodies (kernels/cpu_quant_x86.h) compiled twice under `#pragma GCC target` — AVX2+FMA, and
 * AVX-512 BW/VL with VNNI's vpdpbusd — so the file builds with the project's flags and the
 * best one the CPU has is chosen at run time (__builtin_cpu_supports). Tests pass the variant
 * explicitly. Pure functions unless a pool is
 * given; any thread.
 */
#ifndef FG_CPU_QUANT_H
#define FG_CPU_QUANT_H

#include <stddef.h>
#include <stdint.h>

struct cpu_pool;
struct fg_qtensor; /* kernels/ops.h */

enum cq_isa {
    CQ_ISA_C = 0,      /* plain C, any x86-64 (and any other target) */
    CQ_ISA_AVX2 = 1,   /* AVX2 + FMA */
    CQ_ISA_AVX512 = 2, /* AVX-512 F/BW/VL + VNNI */
    CQ_ISA_COUNT
};

/* "c", "avx2", "avx512" */
const char *cq_isa_name(enum cq_isa isa);
/* 1 when this CPU runs ISA. */
int cq_isa_supported(enum cq_isa isa);
/* The best variant this CPU runs, unless FLASHGEN_CPU_ISA (c, avx2, avx512) names a supported
 * lower one. */
enum cq_isa cq_isa_best(void);

/* 1 when TYPE (enum gguf_ggml_type) has a block dot product here: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
 * Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. */
int cq_type_supported(uint32_t type);

/* Bytes of one activation row of K elements quantized for weights of TYPE (K a multiple of the
 * type's block), or 0 for an unsupported type. */
size_t cq_act_row_bytes(uint32_t type, int k);
/* Quantize the K floats of X for weights of TYPE into QA (cq_act_row_bytes(TYPE, K) bytes, any
 * alignment of 4). */
void cq_quantize_act(uint32_t type, const float *x, int k, void *qa);
/* Dequantize a quantized activation row back to floats (what the kernels actually multiply). */
void cq_dequantize_act(uint32_t type, const void *qa, int k, float *x);

/* out[r] = w · act_r for the N_ROWS quantized activation rows act_r = QA + r * QA_STRIDE bytes,
 * with w one weight row of K elements of TYPE (gguf_type_row_bytes(TYPE, K) bytes). */
void cq_dot_rows(enum cq_isa isa, uint32_t type, const void *w, const void *qa, size_t qa_stride,
                 int n_rows, int k, float *out);

/* out (n, out_stride) columns [0, rows) = x (n, cols) · wᵀ (ACCUMULATE: out +=) for a quantized
 * weight matrix, threads over output rows through POOL (NULL: the calling thread). SCRATCH holds
 * the quantized activations: cq_matmul_scratch_bytes(w, n) bytes. One caller per pool at a
 * time. */
size_t cq_matmul_scratch_bytes(const struct fg_qtensor *w, int n);
/* PROMPT calls on a 32-block type take the panel product on AVX-512 VNNI (16 weight rows
 * unpacked once per call, one row per int32 lane; kernels/cpu_quant_x86.h): the same integer
 * block sums, the fp32 scaling in another order than cq_dot_rows' (so equal to it within fp32
 * rounding, not bit for bit). The caller says which rows are prompt rows (fg_ops.qmatmul's
 * FG_QMM_PROMPT: sequences with several new tokens), not the token count: decided by the count,
 * a decode row's result would change with the number of rows beside it in the batch. Measured
 * (2026-12-02, SmolLM2 shapes, Q4_1): at 1 token the row kernels take 0.55-0.8x the panel's
 * time, at 2 the panel 0.7-1x theirs, at 4 about 0.5x; prompt calls carry at least 2. 1 when
 * cq_matmul(ISA, TYPE, PROMPT) takes it. */
int cq_matmul_uses_panels(enum cq_isa isa, uint32_t type, int prompt);
void cq_matmul(struct cpu_pool *pool, enum cq_isa isa, const struct fg_qtensor *w, const float *x,
               int n, float *out, size_t out_stride, int accumulate, int prompt, void *scratch);

#endif
