/* sample.h — CUDA: rows of fp32 logits → one token id and its logprob per row, on the device.
 *
 * Twin: sample_ref_pick() (kernels/sample_ref.c), decision for decision: repetition penalty over
 * the row's history (each distinct id once), then greedy (argmax, lowest id on ties) or sampling
 * (temperature, top-k, top-p, a draw at the host's uniform u), plus a target mode that only
 * scores a given id (prompt logprobs). The uniform comes from the request's own generator on the
 * host (model/sampler.c), so a seed gives the same tokens on the CPU and the GPU except at
 * float near-ties. No CUDA types here: the engine and the ctypes tests include it from C.
 */
#ifndef FG_SAMPLE_H
#define FG_SAMPLE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One row's request, in device memory (an array of n_rows). */
struct fg_sample_row {
    int do_sample;            /* 0: greedy */
    float temperature;        /* > 0 (<= 0 reads as 1, as in the twin) */
    int top_k;                /* 0 = off; >= vocab is off too */
    float top_p;              /* 1 = off */
    float repetition_penalty; /* 1 = off */
    int target;               /* >= 0: target mode: id = target, logprob = log_softmax(raw)[target],
                                 no penalty; a target >= vocab gives id -1 and logprob NaN */
    int hist_off, n_hist;     /* this row's history ids: history[hist_off .. hist_off+n_hist) */
    double u;                 /* uniform in [0, 1) (do_sample only) */
};

/* Most alternatives a row reports (OpenAI chat's top_logprobs limit). */
#define FG_TOP_MAX 20

/* Top-k alternatives (kernels/sample_top.cu; twin sample_ref_top): for n_rows rows, row r being
 * logits row rows[r] (device arrays), the k[r] (<= FG_TOP_MAX) ids with the largest logits,
 * ordered by (logit descending, id ascending), and their log softmax over the whole row, into
 * ids / lps (device, (n_rows, FG_TOP_MAX); slots past k[r], and ids whose logit is -inf, get
 * id -1). Enqueued on stream, no synchronisation. Returns 0, or -1 with a message in err. */
int fg_top_launch(const float *logits, int vocab, const int *rows, const int *k, int n_rows,
                  int *ids, float *lps, void *stream, char *err, size_t errlen);

/* Device workspace fg_sample_launch needs: 0, the kernel keeps its state in shared memory. */
size_t fg_sample_workspace_bytes(int n_rows, int vocab);

/* logits (device, (n_rows, vocab) fp32, modified in place by the penalty), rows and history
 * (device arrays), ids/logprobs (device outputs, n_rows each), workspace (device,
 * fg_sample_workspace_bytes; may be NULL when that is 0). Enqueued on stream (a cudaStream_t
 * passed as void *); no allocation, no synchronisation, so it can be captured in a graph.
 * Returns 0, or -1 with a message in err (bad shape, vocab too large, launch error). */
int fg_sample_launch(float *logits, int n_rows, int vocab, const struct fg_sample_row *rows,
                     const int *history, int *ids, float *logprobs, void *workspace, void *stream,
                     char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
