/* gguf_quant.h — GGUF (ggml) tensor types: block sizes, names, and dequantization to fp32.
 *
 * Every type stores a row as whole blocks of `blck` elements in `bytes` bytes; a row (ne[0]
 * elements, a multiple of blck) can therefore be converted on its own, and the loader converts
 * tensor by tensor or row by row. The block layouts are written from the format facts in
 * the ggml block layouts (gguf-py quants.py, ggml-common.h) and give, bit for bit, what the `gguf`
 * Python package's gguf.quants.dequantize gives (tests/test_gguf_quant.py). Pure functions: any
 * thread.
 */
#ifndef FG_GGUF_QUANT_H
#define FG_GGUF_QUANT_H

#include <stdint.h>

enum gguf_ggml_type { /* ggml type ids (gguf-py GGMLQuantizationType) flashgen dequantizes */
                      GGUF_GGML_F32 = 0,
                      GGUF_GGML_F16 = 1,
                      GGUF_GGML_Q4_0 = 2,
                      GGUF_GGML_Q4_1 = 3,
                      GGUF_GGML_Q5_0 = 6,
                      GGUF_GGML_Q5_1 = 7,
                      GGUF_GGML_Q8_0 = 8,
                      GGUF_GGML_Q2_K = 10,
                      GGUF_GGML_Q3_K = 11,
                      GGUF_GGML_Q4_K = 12,
                      GGUF_GGML_Q5_K = 13,
                      GGUF_GGML_Q6_K = 14,
                      GGUF_GGML_Q8_K = 15,
                      GGUF_GGML_BF16 = 30,
};

/* "Q4_K", "BF16", ...; "unknown" for ids this build does not know (names are known for every
 * type of gguf-py's table, also those flashgen cannot dequantize: IQ*, TQ*, MXFP4, ...). */
const char *gguf_type_name(uint32_t type);
/* 1 when TYPE is a known type id (dequantizable or not). */
int gguf_type_known(uint32_t type);
/* 1 when gguf_dequantize handles TYPE: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K,
 * Q4_K, Q5_K, Q6_K, Q8_K. */
int gguf_type_supported(uint32_t type);
/* 1 for the block-quantized types (everything but F32/F16/BF16 and the plain integer types). */
int gguf_type_quantized(uint32_t type);
/* Elements per block (1 for F32/F16/BF16), or 0 for an unknown type. */
uint32_t gguf_type_block(uint32_t type);
/* Bytes of N elements of TYPE, or 0 when TYPE is unknown or N is not a multiple of its block. */
uint64_t gguf_type_row_bytes(uint32_t type, uint64_t n);
/* The supported types' names, ", "-separated, for error messages. */
const char *gguf_type_supported_list(void);

/* Dequantize N elements (a multiple of the type's block) of TYPE from SRC (exactly
 * gguf_type_row_bytes(TYPE, N) readable bytes, any alignment) into DST. Returns 0, or -1 (DST
 * untouched) for an unsupported type or an N that is not a whole number of blocks. */
int gguf_dequantize(uint32_t type, const void *src, float *dst, uint64_t n);

float gguf_fp16_to_fp32(uint16_t h);
float gguf_bf16_to_fp32(uint16_t h);
/* N little-endian halves at P to fp32, bit for bit as gguf_fp16_to_fp32 (vectorized). */
void gguf_fp16_row_to_fp32(const uint8_t *p, float *dst, uint64_t n);

#endif
