/* logit_mask.h — CUDA: allowed-token bitmasks and sparse additive deltas (logit bias,
 * presence / frequency penalties) applied to rows of fp32 logits on the device.
 *
 * Twin: sample_ref_mask() (kernels/sample_ref.c): id i of a masked row keeps its logit when
 * i < n_mask and bit i of the row's mask is set, else becomes -inf. Constrained decoding
 * (model/grammar.h) computes the masks on the host; only they travel (vocab / 8 bytes a row),
 * never the logits. No CUDA types here: the ctypes tests include it from C.
 */
#ifndef FG_LOGIT_MASK_H
#define FG_LOGIT_MASK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One additive change to one logit: logits[row * vocab + id] += delta. model/sampler.c merges a
 * row's logit_bias and penalties so that each (row, id) appears at most once. */
struct fg_logit_delta {
    int row, id;
    float delta;
};

/* logits (device, (n_logit_rows, vocab) fp32, changed in place); rows (device, n_rows): the
 * logits row each mask applies to; masks (device, (n_rows, words) bits, bit i of word i / 32 =
 * id i). Enqueued on stream (a cudaStream_t as void *), no synchronisation. Returns 0, or -1
 * with a message in err (bad shape, launch error). */
int fg_mask_launch(float *logits, int vocab, const int *rows, const uint32_t *masks, int n_rows,
                   size_t words, int n_mask, void *stream, char *err, size_t errlen);

/* Twin: sample_ref_bias(). logits (device, (n_rows, vocab) fp32, changed in place); d (device,
 * n_deltas); an entry whose row is outside [0, n_rows) or id outside [0, vocab) is skipped. No
 * atomics: each (row, id) at most once. Enqueued on stream, no synchronisation. Returns 0, or -1
 * with a message in err. */
int fg_bias_launch(float *logits, int n_rows, int vocab, const struct fg_logit_delta *d,
                   int n_deltas, void *stream, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
