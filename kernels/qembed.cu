/* qembed.cu — the token-embedding gather from GGUF blocks (qembed.h). Moved out of
 * cuda_ops.cu, which calls it for fg_ops.qembed. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "model/gguf_quant.h"
#include "qembed.h"

size_t fg_qembed_row_bytes(uint32_t type, int cols) {
    size_t blocks = cols > 0 && cols % 32 == 0 ? (size_t)cols / 32 : 0;
    switch (type) {
    case GGUF_GGML_Q8_0:
        return blocks * 34;
    case GGUF_GGML_Q4_0:
        return blocks * 18;
    case GGUF_GGML_Q4_1:
        return blocks * 20;
    case GGUF_GGML_Q5_0:
        return blocks * 22;
    case GGUF_GGML_Q5_1:
        return blocks * 24;
    case GGUF_GGML_Q4_K:
        return cols % 256 == 0 ? blocks / 8 * 144 : 0;
    case GGUF_GGML_Q5_K:
        return cols % 256 == 0 ? blocks / 8 * 176 : 0;
    case GGUF_GGML_Q6_K:
        return cols % 256 == 0 ? blocks / 8 * 210 : 0;
    case GGUF_GGML_Q3_K:
        return cols % 256 == 0 ? blocks / 8 * 110 : 0;
    default:
        return 0;
    }
}

/* Element i of a Q4_K row (Q5: of a Q5_K row, q's fifth bit bit j of qh[l]): (d·sc_j)·q − dmin·m_j
 * in fp32, each operation rounded (none fused), as model/gguf_quant.c and fg_qdequant_bf16. */
template <bool Q5> static __device__ __forceinline__ float q4k_value(const uint8_t *row, int i) {
    const uint8_t *sb = row + (size_t)(i / 256) * (Q5 ? 176 : 144), *s = sb + 4;
    const int j = i % 256 / 32, l = i % 32;
    const int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
    const int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    int q = sb[(Q5 ? 48 : 16) + 32 * (j / 2) + l] >> (4 * (j & 1)) & 15;
    if (Q5) q |= (sb[16 + l] >> j & 1) << 4;
    const float d = __half2float(__ushort_as_half(*(const unsigned short *)sb));
    const float dmin = __half2float(__ushort_as_half(*(const unsigned short *)(sb + 2)));
    return __fsub_rn(__fmul_rn(__fmul_rn(d, (float)sc), (float)q), __fmul_rn(dmin, (float)m));
}

/* Element i of a Q6_K row: (d·sc_(e/16))·(q − 32), e = i % 256, the 6-bit q from ql / qh as
 * model/gguf_quant.c reads them (half h = e / 128, quarter s, l = e % 32), unfused. */
static __device__ __forceinline__ float q6k_value(const uint8_t *row, int i) {
    const uint8_t *sb = row + (size_t)(i / 256) * 210;
    const int e = i % 256, h = e / 128, s = e % 128 / 32, l = e % 32;
    const int q = ((sb[64 * h + 32 * (s & 1) + l] >> (4 * (s >> 1))) & 15) |
                  ((sb[128 + 32 * h + l] >> (2 * s)) & 3) << 4;
    const float d = __half2float(__ushort_as_half(*(const unsigned short *)(sb + 208)));
    return __fmul_rn(__fmul_rn(d, (float)(int8_t)sb[192 + e / 16]), (float)(q - 32));
}

/* Element i of a Q3_K row: (d·(sc − 32))·q, e = i % 256 (32-element group g = e / 32, l = e % 32),
 * the 2 low bits of q field g % 4 of qs[32 (g / 4) + l], minus 4 when bit g of hmask[l] is clear,
 * the 6-bit scale k = e / 16 from scales[k % 8] / scales[8 + k % 4] as model/gguf_quant.c reads
 * them, unfused. */
static __device__ __forceinline__ float q3k_value(const uint8_t *row, int i) {
    const uint8_t *sb = row + (size_t)(i / 256) * 110, *s = sb + 96;
    const int e = i % 256, g = e / 32, l = e % 32, k = e / 16;
    int q = (sb[32 + 32 * (g / 4) + l] >> (2 * (g % 4))) & 3;
    if (!((sb[l] >> g) & 1)) q -= 4;
    const int sc =
        (((k < 8 ? s[k] : s[k - 8] >> 4) & 15) | ((s[8 + k % 4] >> (2 * (k / 4))) & 3) << 4) - 32;
    const float d = __half2float(__ushort_as_half(*(const unsigned short *)(sb + 108)));
    return __fmul_rn(__fmul_rn(d, (float)sc), (float)q);
}

/* k_qembed for Q3_K (a kernel of its own: k_qembed's code stays as it was). Untied Q2_K
 * embeddings are not gathered (dequantized to bf16 at load): a Q2_K gather was written with the
 * Q2_K GEMV but did not run on a GPU before it would have shipped (2026-12-04), so it was left
 * out. A tied one needs none: fg_qdequant_rows_bf16 gathers it from the head's packed blocks. */
static __global__ void k_qembed_q3k(__nv_bfloat16 *x, const uint8_t *table, const int *tokens,
                                    int dim, size_t row_bytes) {
    const int t = blockIdx.x;
    const uint8_t *row = table + (size_t)tokens[t] * row_bytes;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        x[(size_t)t * dim + i] = __float2bfloat16(q3k_value(row, i));
}

/* x[t] (dim bf16) = the dequantized row tokens[t] of a table in the file's blocks: one block of
 * threads per token, one element per thread and step (value d·q, Q4_0 d·(q − 8), Q4_1 d·q + m,
 * Q5_0 d·(q − 16) and Q5_1 d·q + m with q's fifth bit from qh, Q4_K / Q5_K q4k_value, Q6_K
 * q6k_value; fp32 rounded once to bf16, as fg_qdequant_bf16; Q3_K: k_qembed_q3k). */
static __global__ void k_qembed(__nv_bfloat16 *x, const uint8_t *table, const int *tokens, int dim,
                                size_t row_bytes, uint32_t type) {
    const int t = blockIdx.x;
    const uint8_t *row = table + (size_t)tokens[t] * row_bytes;
    const bool q5 = type == GGUF_GGML_Q5_0 || type == GGUF_GGML_Q5_1;
    const bool has_m = type == GGUF_GGML_Q4_1 || type == GGUF_GGML_Q5_1;
    const int qo = (has_m ? 4 : 2) + (q5 ? 4 : 0); /* where the nibbles start (Q5_x: after qh) */
    const int bb = type == GGUF_GGML_Q8_0 ? 34 : qo + 16; /* bytes of one block */
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        if (type == GGUF_GGML_Q4_K || type == GGUF_GGML_Q5_K || type == GGUF_GGML_Q6_K) {
            x[(size_t)t * dim + i] =
                __float2bfloat16(type == GGUF_GGML_Q4_K   ? q4k_value<false>(row, i)
                                 : type == GGUF_GGML_Q5_K ? q4k_value<true>(row, i)
                                                          : q6k_value(row, i));
            continue;
        }
        const uint8_t *blk = row + (size_t)(i / 32) * bb;
        const int j = i % 32;
        const float d = __half2float(__ushort_as_half(*(const unsigned short *)blk));
        float v;
        if (type == GGUF_GGML_Q8_0) {
            v = d * (float)(int8_t)blk[2 + j];
        } else {
            const uint8_t b = blk[qo + (j & 15)];
            int q = j < 16 ? b & 15 : b >> 4;
            if (q5) q |= (blk[qo - 4 + j / 8] >> (j % 8) & 1) << 4; /* bit j of the u32 qh */
            const float m =
                has_m ? __half2float(__ushort_as_half(*(const unsigned short *)(blk + 2))) : 0.0f;
            /* Q4_1 / Q5_1: d·q + m unfused, as gguf_quant.c */
            v = type == GGUF_GGML_Q4_0   ? d * (float)(q - 8)
                : type == GGUF_GGML_Q5_0 ? d * (float)(q - 16)
                                         : __fadd_rn(__fmul_rn(d, (float)q), m);
        }
        x[(size_t)t * dim + i] = __float2bfloat16(v);
    }
}

int fg_qembed(void *x, const void *table, const int *tokens, int n, int dim, size_t row_bytes,
              uint32_t type, void *stream) {
    if (n < 0 || fg_qembed_row_bytes(type, dim) == 0 || fg_qembed_row_bytes(type, dim) != row_bytes)
        return cudaErrorInvalidValue;
    if (n == 0) return 0;
    __nv_bfloat16 *xo = (__nv_bfloat16 *)x;
    const uint8_t *tb = (const uint8_t *)table;
    cudaStream_t s = (cudaStream_t)stream;
    if (type == GGUF_GGML_Q3_K)
        k_qembed_q3k<<<n, 256, 0, s>>>(xo, tb, tokens, dim, row_bytes);
    else
        k_qembed<<<n, 256, 0, s>>>(xo, tb, tokens, dim, row_bytes, type);
    return (int)cudaGetLastError();
}
