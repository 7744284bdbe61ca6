/* tp.h — tensor parallelism: how a model is cut into N shards, each shard's weights, and the
 * communicator that joins the shards' partial sums (issue 17).
 *
 * Megatron's cut, two collectives per layer:
 *   column-parallel  q|k|v (by heads) and gate|up (by ffn rows): each shard computes its own
 *                    heads and its own slice of the MLP, no communication;
 *   row-parallel     o and down (their input columns split the same way): each shard's product
 *                    is a partial sum of the full one, joined by one all-reduce after o and one
 *                    after down. The residual add rides on it: shard 0's projection adds into the
 *                    residual stream, the others write their partial sum in place of theirs (a
 *                    zeroed residual), so the sum is x + Σ partials on every shard.
 *   vocabulary       the output head's rows split; each shard's logits slice is gathered.
 *                    The embedding is replicated (every shard holds the whole table and looks up
 *                    its rows itself): simpler than a split lookup plus an all-reduce, and it
 *                    costs one table per shard, not a collective per step.
 *   replicated       every norm (so a post-norm sees the full sum: Gemma 3's norm_add runs after
 *                    the all-reduce), RoPE tables.
 * Heads: shard i owns query heads [i H / N, (i+1) H / N) and the KV heads they read. When the
 * shards cut the GQA groups evenly each gets H / N query heads and their KV heads (replicated
 * when N > n_kv_heads: every query head of a shard then lies in one group, whose KV head it
 * keeps). When they do not (SmolLM2's 9 heads over 2 shards), every shard takes ceil(H / N)
 * query slots, padding slots with zero weights (their output columns of o are zero, so they add
 * exactly 0), and one KV slot per query slot holding the KV head that query head reads: plain
 * multi-head attention inside the shard, more KV memory, the same maths. Either way all shards
 * have the same head counts, so one KV page layout serves them all (tp_kv_config).
 * Biases (Qwen2's q|k|v) split with their rows. ffn rows and the vocabulary split as
 * [i n / N, (i+1) n / N).
 *
 * Shards are built from fp32 host weights (the loader without MODEL_LOAD_KEEP_*), on the worker
 * thread at engine open.
 */
#ifndef FG_TP_H
#define FG_TP_H

#include <stddef.h>

#include "model.h"

#define TP_MAX_SHARDS 8

struct tp_plan {
    int n;        /* shards */
    int q_slots;  /* query heads per shard, padding slots included */
    int kv_slots; /* KV heads per shard */
    int expanded; /* 1: one KV slot per query slot (the groups do not split evenly) */
    int head_lo[TP_MAX_SHARDS + 1];  /* shard i owns query heads [head_lo[i], head_lo[i+1]) */
    int ffn_lo[TP_MAX_SHARDS + 1];   /* ... ffn rows [ffn_lo[i], ffn_lo[i+1]) */
    int vocab_lo[TP_MAX_SHARDS + 1]; /* ... output rows [vocab_lo[i], vocab_lo[i+1]) */
};

/* Plan N shards (1 .. TP_MAX_SHARDS) of CFG. Returns 0, or -1 with a message. */
int tp_plan_make(struct tp_plan *p, const struct model_config *cfg, int n, char *err,
                 size_t errlen);
/* The model's query head in slot SLOT of SHARD, or -1 for a padding slot. */
int tp_q_head(const struct tp_plan *p, int shard, int slot);
/* The model's KV head in KV slot SLOT of SHARD. */
int tp_kv_head(const struct tp_plan *p, const struct model_config *cfg, int shard, int slot);
/* SHARD's config: q_slots heads, kv_slots KV heads, its ffn rows and vocabulary slice, the
 * output head untied (it is a slice of the table). */
void tp_shard_config(const struct tp_plan *p, const struct model_config *cfg, int shard,
                     struct model_config *out);
/* The KV cache's config for all shards at once: n_layers * n layers of kv_slots heads, layer l of
 * shard i being pool l * n + i (so a page copied on write is copied for every shard). */
void tp_kv_config(const struct tp_plan *p, const struct model_config *cfg,
                  struct model_config *out);

/* One shard's weights. Host: its own arena for the cut matrices (q|k|v, o, gate|up, down,
 * biases); the replicated tensors point into the model's, the output head at its rows. After
 * tp_shard_upload, dev holds the whole shard in backend memory. */
struct tp_shard {
    struct model_config cfg;
    struct model_weights w; /* host, fp32 */
    float *arena;           /* host: the cut matrices */
    struct model_weights dev;
    void *dev_arena; /* backend memory (tp_shard_upload), or NULL */
    size_t dev_bytes;
};

/* Build SHARD's host weights from the model's fp32 host weights M. Returns 0, or -1 with a
 * message (weights kept in file blocks cannot be cut). */
int tp_shard_build(struct tp_shard *s, const struct tp_plan *p, const struct model *m, int shard,
                   char *err, size_t errlen);
/* Copy the shard (replicated tensors too: the embedding of VOCAB rows, the norms) into one
 * backend allocation, in the backend's element type but for the norm weights, which stay fp32
 * (model_norms_upload); s->dev then points there. Returns 0, or -1 with a message. */
int tp_shard_upload(struct tp_shard *s, const struct fg_ops *ops, void *ctx, int vocab, char *err,
                    size_t errlen);
/* Release the host arena (after upload); the dev weights stay. */
void tp_shard_drop_host(struct tp_shard *s);
void tp_shard_free(struct tp_shard *s, const struct fg_ops *ops, void *ctx); /* accepts zeroed */

/* The collectives the forward pass needs, queued in order with the shards' ops.
 * all_reduce_sum: BUFS[i] (shard i's memory, COUNT activation elements) all become their sum.
 * gather: DST (shard 0's memory, fp32 (rows, cols_lo[n])) gets the column blocks SRC[i]
 * ((rows, cols_lo[i+1] - cols_lo[i]) fp32, shard i's memory) side by side.
 * Errors surface at the next sync, as the ops' do. */
struct tp_comm {
    const char *kind; /* "emulated" (local) or "nccl" */
    int n;
    char error[256]; /* sticky: the first failure ("" while none); fwd_run reports it */
    void (*all_reduce_sum)(struct tp_comm *c, void *const *bufs, size_t count);
    void (*gather)(struct tp_comm *c, float *dst, float *const *src, const int *cols_lo, int rows);
    void (*free)(struct tp_comm *c);
    const struct fg_ops *ops;
    void *ctx;
};

/* "local": all N shards on one backend context (the CPU, or one GPU emulating N): the sum is
 * ops->add (add_rows with one row where the backend has no add) into shard 0's buffer, then a
 * copy back to each other shard, the gather one copy per row and shard. */
int tp_comm_local(struct tp_comm **out, int n, const struct fg_ops *ops, void *ctx, char *err,
                  size_t errlen);
/* "nccl": shard i on GPU i (its backend context CTXS[i]), one NCCL rank each, created together
 * by ncclCommInitAll in this one thread (the worker issues to every GPU's stream in turn, each
 * collective inside ncclGroupStart/End). libnccl.so.2 is opened with dlopen (the CPU build needs
 * nothing); NCCL_NVLS_ENABLE is set to 0 (NVLink SHARP multicast is off on the lent machines).
 * The all-reduce runs in place on the shards' streams in the activation type (bf16); the gather
 * sends each shard's logits to GPU 0 (ncclSend/ncclRecv into staging buffers there, MAX_ROWS
 * rows of COLS_LO's slices), then copies them into place there. STREAM gives a context's CUDA
 * stream and ACTIVATE makes its device current (TP_CUDA_*_SYMBOL of the CUDA backend). Returns
 * 0, or -1 with a message (no libnccl, a communicator that would not form). */
#define TP_CUDA_STREAM_SYMBOL "fg_cuda_stream"
#define TP_CUDA_ACTIVATE_SYMBOL "fg_cuda_activate"
typedef void *(*tp_stream_fn)(void *ctx);
typedef int (*tp_activate_fn)(void *ctx);
int tp_comm_nccl(struct tp_comm **out, int n, const struct fg_ops *ops, void *const *ctxs,
                 tp_stream_fn stream, tp_activate_fn activate, int max_rows, const int *cols_lo,
                 char *err, size_t errlen);
void tp_comm_free(struct tp_comm *c); /* accepts NULL */

#endif
