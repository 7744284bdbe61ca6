/* sample_top.cu — top-k alternatives of rows of device logits with their log softmax: the CUDA
 * twin of sample_ref_top() (kernels/sample_ref.c), for OpenAI top_logprobs and TGI top_n_tokens.
 *
 * One block per requested row. Pass 1: the row's max; pass 2: sum exp(x - max) in double (the
 * twin's sum, to a reordering of the additions); then k selection passes, each taking the best
 * (logit, id) strictly after the previous pick in (logit descending, id ascending) order. k is
 * at most FG_TOP_MAX = 20, so the k passes over the row (read through L2) cost less than a sort,
 * and there is nothing to keep per thread. Runs only on steps that have a row asking for it.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>

#include "sample.h"

#define TOP_THREADS 512
#define TOP_WARPS (TOP_THREADS / 32)

__device__ __forceinline__ bool top_before(float a, int ia, float b, int ib) {
    return a > b || (a == b && ia < ib);
}

/* The block's best (v, i) in top_before order; every thread gets it. */
__device__ void top_block_best(float &v, int &i, float *sv, int *si) {
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_down_sync(0xffffffffu, v, o);
        int oi = __shfl_down_sync(0xffffffffu, i, o);
        if (oi >= 0 && (i < 0 || top_before(ov, oi, v, i))) {
            v = ov;
            i = oi;
        }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) {
        sv[warp] = v;
        si[warp] = i;
    }
    __syncthreads();
    v = sv[0];
    i = si[0];
    for (int w = 1; w < TOP_WARPS; w++)
        if (si[w] >= 0 && (i < 0 || top_before(sv[w], si[w], v, i))) {
            v = sv[w];
            i = si[w];
        }
}

__global__ void __launch_bounds__(TOP_THREADS)
    top_kernel(const float *logits, int vocab, const int *rows, const int *ks, int *ids,
               float *lps) {
    __shared__ float sv[TOP_WARPS];
    __shared__ int si[TOP_WARPS];
    __shared__ double sd[TOP_WARPS];
    const int r = blockIdx.x;
    const float *x = logits + (size_t)rows[r] * (size_t)vocab;
    int k = ks[r] < FG_TOP_MAX ? ks[r] : FG_TOP_MAX;
    int *out_i = ids + (size_t)r * FG_TOP_MAX;
    float *out_l = lps + (size_t)r * FG_TOP_MAX;

    /* the max (first pick) */
    float v = 0;
    int i = -1;
    for (int j = threadIdx.x; j < vocab; j += TOP_THREADS)
        if (x[j] != -INFINITY && (i < 0 || top_before(x[j], j, v, i))) {
            v = x[j];
            i = j;
        }
    top_block_best(v, i, sv, si);
    const float mx = v;
    double s = 0;
    if (i >= 0)
        for (int j = threadIdx.x; j < vocab; j += TOP_THREADS)
            s += exp((double)(x[j] - mx));
    for (int o = 16; o > 0; o >>= 1)
        s += __shfl_down_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) sd[threadIdx.x >> 5] = s;
    __syncthreads();
    double sum = 0;
    for (int w = 0; w < TOP_WARPS; w++)
        sum += sd[w];
    const double lse = log(sum);

    float pv = v;
    int pi = i;
    for (int t = 0; t < FG_TOP_MAX; t++) {
        if (t > 0 && t < k && pi >= 0) { /* the best strictly after the previous pick */
            float bv = 0;
            int bi = -1;
            for (int j = threadIdx.x; j < vocab; j += TOP_THREADS)
                if (x[j] != -INFINITY && top_before(pv, pi, x[j], j) &&
                    (bi < 0 || top_before(x[j], j, bv, bi))) {
                    bv = x[j];
                    bi = j;
                }
            top_block_best(bv, bi, sv, si);
            pv = bv;
            pi = bi;
        }
        if (threadIdx.x == 0) {
            int ok = t < k && pi >= 0;
            out_i[t] = ok ? pi : -1;
            out_l[t] = ok ? (float)((double)(pv - mx) - lse) : NAN;
        }
    }
}

extern "C" int fg_top_launch(const float *logits, int vocab, const int *rows, const int *k,
                             int n_rows, int *ids, float *lps, void *stream, char *err,
                             size_t errlen) {
    if (n_rows <= 0) return 0;
    if (vocab <= 0 || n_rows > 65535) {
        snprintf(err, errlen, "top: bad shape (%d rows, vocab %d)", n_rows, vocab);
        return -1;
    }
    top_kernel<<<n_rows, TOP_THREADS, 0, (cudaStream_t)stream>>>(logits, vocab, rows, k, ids, lps);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        snprintf(err, errlen, "top: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}
