/* logit_mask.cu — allowed-token bitmasks on device logits: the CUDA twin of sample_ref_mask();
 * and sparse logit deltas (logit bias, penalties), the twin of sample_ref_bias(): one thread per
 * delta, a scatter of a few hundred floats at most.
 *
 * One thread per 32-bit mask word (32 ids), blockIdx.y = the masked row: a word's ids are
 * consecutive, so a warp writes 1024 consecutive logits. Ids past the mask's words (the model's
 * vocabulary can be larger than the tokenizer's) are masked too, one thread per id.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>

#include "logit_mask.h"

#define MASK_THREADS 256

__global__ void logit_mask_kernel(float *logits, int vocab, const int *rows, const uint32_t *masks,
                                  size_t words, int n_mask) {
    const int r = blockIdx.y;
    float *x = logits + (size_t)rows[r] * (size_t)vocab;
    const uint32_t *m = masks + (size_t)r * words;
    /* word w covers ids [32 w, 32 w + 32): each id beyond vocab or n_mask is dropped too */
    size_t n_words = ((size_t)vocab + 31) / 32;
    for (size_t w = blockIdx.x * (size_t)blockDim.x + threadIdx.x; w < n_words;
         w += (size_t)gridDim.x * blockDim.x) {
        uint32_t bits = w < words ? m[w] : 0u;
        int base = (int)(w * 32);
        if (base + 32 > n_mask) { /* the partial last word of the mask, and past it */
            int keep = n_mask - base;
            bits = keep <= 0 ? 0u : bits & (keep >= 32 ? ~0u : (1u << keep) - 1u);
        }
        if (bits == ~0u) continue;
        int end = base + 32 < vocab ? base + 32 : vocab;
        for (int i = base; i < end; i++)
            if (!(bits >> (i - base) & 1u)) x[i] = -INFINITY;
    }
}

extern "C" int fg_mask_launch(float *logits, int vocab, const int *rows, const uint32_t *masks,
                              int n_rows, size_t words, int n_mask, void *stream, char *err,
                              size_t errlen) {
    if (n_rows <= 0) return 0;
    if (vocab <= 0 || n_mask < 0 || n_rows > 65535) {
        snprintf(err, errlen, "mask: bad shape (%d rows, vocab %d)", n_rows, vocab);
        return -1;
    }
    size_t n_words = ((size_t)vocab + 31) / 32;
    unsigned bx = (unsigned)((n_words + MASK_THREADS - 1) / MASK_THREADS);
    dim3 grid(bx, (unsigned)n_rows);
    logit_mask_kernel<<<grid, MASK_THREADS, 0, (cudaStream_t)stream>>>(logits, vocab, rows, masks,
                                                                       words, n_mask);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        snprintf(err, errlen, "mask: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

__global__ void logit_bias_kernel(float *logits, int n_rows, int vocab,
                                  const struct fg_logit_delta *d, int n) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= n) return;
    struct fg_logit_delta t = d[e];
    if (t.row < 0 || t.row >= n_rows || t.id < 0 || t.id >= vocab) return;
    logits[(size_t)t.row * (size_t)vocab + (size_t)t.id] += t.delta;
}

extern "C" int fg_bias_launch(float *logits, int n_rows, int vocab, const struct fg_logit_delta *d,
                              int n_deltas, void *stream, char *err, size_t errlen) {
    if (n_deltas <= 0) return 0;
    if (vocab <= 0 || n_rows <= 0) {
        snprintf(err, errlen, "bias: bad shape (%d rows, vocab %d)", n_rows, vocab);
        return -1;
    }
    unsigned blocks = (unsigned)((n_deltas + MASK_THREADS - 1) / MASK_THREADS);
    logit_bias_kernel<<<blocks, MASK_THREADS, 0, (cudaStream_t)stream>>>(logits, n_rows, vocab, d,
                                                                         n_deltas);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        snprintf(err, errlen, "bias: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}
