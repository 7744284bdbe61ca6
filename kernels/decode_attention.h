/* decode_attention.h — split-K paged decode attention (flash-decoding), called through the
 * selector of kernels/attention.h; not for direct use by the forward pass.
 *
 * Rows of one sequence = its query tokens × the GQA group, at most DECODE_MAX_ROWS (one 16-row
 * mma tile). The context is cut into n_splits parts per (sequence, KV head), each part one
 * thread block whose 4 warps take turns over 16-key tiles; a part writes its normalised output
 * and log-sum-exp; with 2–8 parts whose clusters fit one wave the parts of a group form a
 * thread-block cluster and merge through distributed shared memory (no workspace), otherwise the
 * partials go to the workspace and a merge kernel, launched as a programmatic dependent of the
 * first (its launch overlaps it), combines them (n_splits 1 writes the output directly).
 * At serving batches (≥ 512 (sequence, KV head) items, head dims ≤ 128) and the launcher's own
 * split count (n_splits 0) a persistent grid of independent warps takes the (sequence, KV head,
 * part) units instead, one at a time each, its cp.async ring running on into the next unit
 * (decode_warp_kernel); its parts, if any, go through the workspace and the merge kernel. A
 * forced n_splits always takes the split kernel (results then do not depend on the batch).
 * Head dims 64, 128 and 256. With attn_args.window > 0 (a sliding window) the parts cover only
 * the keys some row of the sequence sees, and each row masks the keys below its window.
 * The workspace needs no initialisation: each launch writes every partial it reads, and nothing
 * in it is kept between launches (so CUDA graph replays need nothing reset).
 */
#ifndef FG_DECODE_ATTENTION_H
#define FG_DECODE_ATTENTION_H

#include <stddef.h>

#include "attention.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DECODE_MAX_ROWS 16

/* 1 when the decode kernel serves a's shape (dtype, head dim, rows per sequence). */
int decode_attn_supported(const struct attn_args *a);
/* Split count the heuristic picks for a (ignores the workspace); at least 1. */
int decode_attn_splits(const struct attn_args *a);
/* Workspace bytes for n_splits parts (0 where they merge in a cluster). */
size_t decode_attn_workspace_bytes(const struct attn_args *a, int n_splits);
/* Launch; n_splits is a->n_splits or the heuristic, lowered to what the workspace holds. */
int decode_attn_launch(const struct attn_args *a, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
