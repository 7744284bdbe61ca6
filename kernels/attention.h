/* attention.h — CUDA attention over the paged KV-cache: one selector for prefill and decode.
 *
 * attn_select() picks the kernel variant for (dtype, head_dim, GQA ratio, query rows per
 * sequence); attn_launch() and attn_workspace_bytes() both go through it, so "is it supported"
 * (attn_select() != NULL) and "what runs" cannot disagree. Variants:
 *   prefill  fused FlashAttention forward: one block per (tile of packed query rows, KV head,
 *            sequence), the query heads of one GQA group packed as rows of the tile so each K/V
 *            tile is loaded once per group; writes the LSE. On compute capability 9.0 the
 *            warp-specialised kernel of kernels/attention_hopper_ws.cu (TMA producer, persistent
 *            blocks; the wgmma kernel of kernels/attention_hopper.cu where the page size does not
 *            suit its TMA boxes), elsewhere the mma.sync kernel of kernels/attention.cu.
 *            Head dim 256 (Gemma 3) and sliding windows take the mma.sync kernel everywhere.
 *   decode   split-K flash-decoding (kernels/decode_attention.cu), used when a sequence's query
 *            rows × group size fit one 16-row tile (one token, or a few for speculation);
 *            partial results merged by their LSE in a second kernel.
 * All pointers are device memory, the arrays of attn_batch included; attn_batch's host_q_start
 * and host_kv_len are optional (with them the launch sizes the decode workspace exactly).
 * Callable from any one host thread at a time per stream; the only state is process-wide caches
 * filled on first use (the device's SM count, the driver's tensor-map entry points, how many
 * decode clusters fit one wave).
 */
#ifndef FG_ATTENTION_H
#define FG_ATTENTION_H

#include <stddef.h>

#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

enum attn_dtype { ATTN_DTYPE_BF16 = 0, ATTN_DTYPE_FP16 = 1 };

enum attn_kind { ATTN_KIND_AUTO = 0, ATTN_KIND_PREFILL = 1, ATTN_KIND_DECODE = 2 };

struct attn_args {
    int dtype;              /* enum attn_dtype: q, pools and out */
    void *out;              /* (n_q_total, n_heads, head_dim) */
    const void *q;          /* (n_q_total, n_heads, head_dim) */
    const void *k_pool;     /* (n_pages, page_size, n_kv_heads, head_dim) */
    const void *v_pool;     /* same */
    float *lse;             /* optional (n_q_total, n_heads): log(sum exp(scale q·k)) */
    struct attn_batch b;    /* device arrays; see ops.h for the query/key positions */
    void *workspace;        /* decode partials; attn_workspace_bytes() says how much */
    size_t workspace_bytes; /* 0 with NULL: decode runs unsplit */
    void *stream;           /* cudaStream_t, NULL = default stream */
    int kind;               /* enum attn_kind; AUTO lets the selector choose */
    int n_splits;           /* decode: 0 = heuristic, else forced (tests, benchmarks) */
    int window;             /* > 0: sliding window, a query at position p sees keys
                               p - window + 1 .. p (the mma.sync prefill and the decode kernel
                               take it; the Hopper prefill kernels do not, so the selector passes
                               over them); 0: none */
    int early_dependents;   /* decode: 1 lets the next kernel on the stream, launched with
                               programmatic serialization, launch at this one's start (it waits
                               for the whole of it in griddepcontrol.wait): the o projection's
                               bulk GEMV then streams its W while attention runs; 0: at its end */
};

/* Name of the variant that would run ("prefill_bf16_hd128", ...), or NULL when unsupported. */
const char *attn_select(const struct attn_args *a);
/* Workspace the decode variant wants for its heuristic split count (0 for prefill). */
size_t attn_workspace_bytes(const struct attn_args *a);
/* Queue the attention on a->stream. Returns 0, or -1 with a message (unsupported shape, launch
 * error). Does not synchronise. */
int attn_launch(const struct attn_args *a, char *err, size_t errlen);
/* The same with a named variant instead of the selector's choice (benchmarks, tests); -1 when the
 * name is unknown or does not serve a's dtype and head dim. */
int attn_launch_variant(const char *name, const struct attn_args *a, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
