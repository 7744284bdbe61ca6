/* cpu_attn.h — the CPU backend's attention over the paged KV-cache (fp32), tiled the flash way.
 *
 * One work item is (sequence, KV head, block of up to CPU_ATTN_QB query rows): the query rows of
 * every query head that shares the KV head are one tile, and the item makes one pass over the
 * keys it can see in blocks of CPU_ATTN_KB, keeping a running maximum and sum per row (online
 * softmax) so that no score row of the whole context is ever stored. Items are sorted by cost
 * and taken by the pool's threads from one shared counter.
 *
 * Variants: one body (kernels/cpu_attn_body.h, GCC vector extensions) compiled three times — a
 * portable one (16-byte vectors, no intrinsics), AVX2+FMA and AVX-512F — chosen by the caller
 * with enum cq_isa as the block products are (kernels/cpu_quant.h; cq_isa_best picks at run
 * time, so the AVX-512 body runs where cq's AVX-512 does: F/BW/VL with VNNI). Results of the
 * variants agree to fp32 rounding, not bit for bit; one variant's are the same bits whatever the
 * thread count.
 */
#ifndef FG_CPU_ATTN_H
#define FG_CPU_ATTN_H

#include "cpu_quant.h" /* enum cq_isa */

struct cpu_pool;
struct attn_batch; /* kernels/ops.h */

#define CPU_ATTN_QB 64 /* query positions per work item */
#define CPU_ATTN_KB 64 /* keys per block of the online softmax */

/* out (n_q_total, n_heads, head_dim) = softmax(q kᵀ · scale) v over B's paged cache, with the
 * semantics of fg_ops.attention (kernels/ops.h): query row i of sequence s sits at position
 * kv_len[s] - n_q(s) + i and, when causal, sees keys 0 .. that position; WINDOW > 0 keeps only
 * the last WINDOW of the keys a row would see (fg_ops.attention_window). A row that sees no key
 * is 0. Threads through POOL (NULL: the calling thread); one caller per pool at a time.
 * Returns 0, or -1 when scratch memory could not be had (the rows are then NaN). */
int cpu_attn(struct cpu_pool *pool, enum cq_isa isa, float *out, const float *q,
             const float *k_pool, const float *v_pool, const struct attn_batch *b, int window);

#endif
