/* attention_ref.h — plain-C twins of the CUDA attention kernels beyond cpu_ops()->attention:
 * the log-sum-exp the prefill kernel writes, and the decode kernel's split-K + LSE merge.
 *
 * Host memory, fp32 values, attn_batch arrays on the host (see kernels/ops.h for positions and
 * layouts). Single-threaded; used by the GPU tests (tests/gpu/) as references.
 */
#ifndef FG_ATTENTION_REF_H
#define FG_ATTENTION_REF_H

#include "ops.h"

/* lse (n_q_total, n_heads) = ln Σ_visible exp(scale q·k), accumulated in double. */
void attn_ref_lse(float *lse, const float *q, const float *k_pool, const struct attn_batch *b);

/* out (n_q_total, n_heads, head_dim) as cpu_ops()->attention, computed the decode kernel's way:
 * each sequence's keys cut into n_splits parts of ceil(kv_len / n_splits) keys (rounded up to
 * 16), a normalised output and log-sum-exp per part, then merged by their LSE. */
void attn_ref_decode_split(float *out, const float *q, const float *k_pool, const float *v_pool,
                           const struct attn_batch *b, int n_splits);

#endif
