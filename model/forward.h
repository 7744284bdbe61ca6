/* forward.h — the decoder forward pass (every family) over a mixed batch, written once against
 * struct fg_ops.
 *
 * One call runs any mix of prefill chunks and decode tokens: each sequence brings n_tokens new
 * tokens starting at position kv->n_tokens; their K/V rows are appended to the paged cache and
 * the logits of each sequence's last new token are returned. Called by the worker thread only.
 */
#ifndef FG_FORWARD_H
#define FG_FORWARD_H

#include <stdint.h>

#include "kv_cache.h"

struct model_config;
struct model_weights;
struct fg_ops;

struct fwd_seq {
    const int *tokens; /* (n_tokens) new tokens */
    int n_tokens;
    struct kv_seq *kv; /* block table; n_tokens of it already cached; must have room reserved */
    /* the first n_prompt of the new tokens are prompt tokens (the rest, generated ones, are
     * recomputed after a preemption): a backend may run their products through a prompt kernel
     * of its own (fg_ops.qmatmul, FG_QMM_PROMPT), chosen by the token, not by the batch */
    int n_prompt;
};

struct fwd_state;

/* W holds the weights in backend memory (for the CPU backend, the model's own host weights).
 * MAX_TOKENS bounds the tokens of one call (sizes the activation buffers); MAX_SEQS the
 * sequences. CFG and W must outlive the state. */
int fwd_init(struct fwd_state **out, const struct model_config *cfg, const struct model_weights *w,
             const struct fg_ops *ops, void *ops_ctx, struct kv_cache *kv, int max_tokens,
             int max_seqs, char *err, size_t errlen);
/* One shard of a tensor-parallel forward pass (model/tp.h): its config, its weights in its
 * backend's memory, its backend. */
struct fwd_shard {
    const struct model_config *cfg;
    const struct model_weights *w;
    const struct fg_ops *ops;
    void *ops_ctx;
    /* shards on several devices: this shard's KV pools (on its device, same page ids as the
     * shared cache's), and the call that makes its device current before its ops are issued;
     * both NULL when every shard shares one context (its pools are then the shared cache's
     * layer l * N + i) */
    struct kv_cache *kv;
    int (*activate)(void *ctx);
};
struct tp_comm;
/* fwd_init for N (1 .. TP_MAX_SHARDS) shards joined by COMM (model/tp.h); COMM NULL: N is 1 and
 * the one shard is the model (fwd_init), else even one shard runs through the communicator (the
 * one-rank NCCL smoke). CFG is the whole model's (the step's checks, the logits' vocabulary); KV
 * is the cache whose pages the scheduler hands out, holding every shard's pools (tp_kv_config:
 * layer l of shard i is pool l * N + i) unless the shards bring their own. The step description
 * and the gathered logits live on shard 0's backend. CFG, the shards and COMM must outlive the
 * state. */
int fwd_init_tp(struct fwd_state **out, const struct model_config *cfg,
                const struct fwd_shard *shards, int n, struct tp_comm *comm, struct kv_cache *kv,
                int max_tokens, int max_seqs, char *err, size_t errlen);
void fwd_free(struct fwd_state *st);
/* Forget the recorded decode graphs: the next decode steps run eagerly, then record anew (under
 * whatever the backend's diagnostic switches say then: bench/decode_breakdown.c). */
void fwd_drop_graphs(struct fwd_state *st);
/* Decode steps padded to the next batch bucket (fwd_batch_bucket): on by default where the
 * backend records graphs (one graph per bucket instead of per batch size), off elsewhere; the
 * tests turn it on for the CPU. Worker thread. */
void fwd_set_padding(struct fwd_state *st, int on);
/* The rows a decode step of N sequences runs as when padded: N up to 8 (the GEMV sizes), then
 * multiples of 8 to 64, of 16 to 128, of 32 to 256, of 64 beyond. */
int fwd_batch_bucket(int n);
/* 0 when OPS implements every op the family switches of CFG need; else -1 with a message naming
 * the missing feature (fwd_init calls it; the engine calls it before uploading weights). */
int fwd_check_backend(const struct model_config *cfg, const struct fg_ops *ops, char *err,
                      size_t errlen);
/* Run one step. LOGITS (host, (n_seqs, vocab)) receives each sequence's last-token logits, or
 * is NULL to leave them in backend memory for fwd_sample (the step is then only queued; errors
 * surface there). Advances each kv->n_tokens by its n_tokens. Returns 0, or -1 with err written. */
int fwd_run(struct fwd_state *st, const struct fwd_seq *seqs, int n_seqs, float *logits, char *err,
            size_t errlen);

struct fg_sample_row;
/* Pick a token for each of the N sequences of the last fwd_run from its logits, on the backend
 * (the logits never leave the GPU): ROWS (host, n) say how (model/sampler.h builds them),
 * HISTORY (host, N_HISTORY ids) is what the rows' repetition penalties look at. IDS and LOGPROBS
 * (host, n) receive the picks. Returns 0, or -1 with err written. */
int fwd_sample(struct fwd_state *st, int n, const struct fg_sample_row *rows, const int *history,
               int n_history, int *ids, float *logprobs, char *err, size_t errlen);
struct fg_logit_delta;
/* Logit bias and penalties, between fwd_run and fwd_mask: D (host, N_DELTAS entries, rows of the
 * N of the last fwd_run) added to the logits on the backend. Returns 0, or -1 with err. */
int fwd_bias(struct fwd_state *st, int n, const struct fg_logit_delta *d, int n_deltas, char *err,
             size_t errlen);
/* After fwd_sample: row i with K[i] > 0 gets its K[i] (<= FG_TOP_MAX) most likely ids and their
 * log softmax over the logits the pick saw into IDS / LPS + i * FG_TOP_MAX (host). Returns 0,
 * or -1 with err. */
int fwd_top(struct fwd_state *st, int n, const int *k, int *ids, float *lps, char *err,
            size_t errlen);
/* Constrained decoding, between fwd_run and fwd_sample: row i (of the N of the last fwd_run)
 * with USE[i] keeps only the ids allowed by its bitmask MASKS + i * WORDS (host; ids >= N_MASK
 * are dropped too), on the backend, so the logits stay where they are. Returns 0, or -1 with
 * err written. */
int fwd_mask(struct fwd_state *st, int n, const uint32_t *masks, size_t words, const int *use,
             int n_mask, char *err, size_t errlen);

#endif
