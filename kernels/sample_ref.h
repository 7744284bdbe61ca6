/* sample_ref.h — the plain-C twin of the GPU sampling kernel (kernels/sample.cu): one row of
 * fp32 logits and its struct fg_sample_row (kernels/sample.h) → a token id and its logprob.
 *
 * It is the CPU backend's sample op (kernels/cpu_ops.c) and the reference tests/gpu/check_sample.py
 * compares the kernel against; model/sampler.c, which owns the per-request generator, calls it for
 * every draw. Pure: no state, no allocation (the caller passes the scratch). Thread-neutral.
 */
#ifndef FG_SAMPLE_REF_H
#define FG_SAMPLE_REF_H

#include <stdint.h>

#include "logit_mask.h"
#include "sample.h"

/* One row, decision for decision as the kernel: target mode (r->target >= 0: id = target,
 * logprob = log softmax(logits)[target], logits untouched), else the repetition penalty over
 * history[r->hist_off .. + r->n_hist) (each distinct id once, LOGITS modified in place), then
 * argmax (lowest id on ties) or temperature, top-k, top-p and the draw at r->u in [0, 1).
 * LOGITS, PROBS (scratch) and IDX (scratch) hold V values; HISTORY may be NULL when n_hist is 0.
 * *logprob (may be NULL) gets log p(id) under the final distribution. Returns the id. */
int sample_ref_pick(const struct fg_sample_row *r, float *logits, int V, const int *history,
                    float *probs, int *idx, float *logprob);

/* Constrained decoding (model/grammar.h): logits of the tokens MASK does not allow become -inf,
 * so every pick (greedy or sampled, with top-k / top-p) is an allowed token and the logprob is
 * over the allowed ones. MASK holds N_MASK bits (bit i = token i, word i / 32); ids in
 * [N_MASK, V) are not allowed (a vocabulary padded past the tokenizer's). At least one token
 * must be allowed (the caller checks: an all -inf row has no distribution). */
void sample_ref_mask(float *logits, int V, const uint32_t *mask, int n_mask);

/* Logit bias and penalties: logits[d[e].row * V + d[e].id] += d[e].delta for e < N (LOGITS
 * holds N_ROWS rows); entries outside the rows or the vocabulary are skipped. */
void sample_ref_bias(float *logits, int n_rows, int V, const struct fg_logit_delta *d, int n);

/* The K (<= FG_TOP_MAX) largest logits of one row, by (logit descending, id ascending), with
 * their log softmax over the row (in double, as log_softmax_at): IDS / LPS (K each); an id whose
 * logit is -inf, and slots past the row's length, get -1 (and lps NaN). */
void sample_ref_top(const float *logits, int V, int k, int *ids, float *lps);

#endif
