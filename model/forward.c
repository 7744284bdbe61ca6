/* forward.c — the decoder forward pass over a mixed batch, once, against struct fg_ops, for
 * every family (model.h): the family switches add ops around the Llama layer below.
 *
 * Per step, for all T new tokens of all sequences at once (rows of one activation matrix):
 *   x = E[tokens]
 *   per layer:  h = rmsnorm(x) ; qkv = h [Wq;Wk;Wv]ᵀ ; q, cache[k,v] at slots = rope(qkv, pos)
 *               a = attention(q, paged cache) ; x += a Woᵀ
 *               h = rmsnorm(x) ; x += (silu(h Wgᵀ) * h Wuᵀ) Wdᵀ
 *   logits = rmsnorm(x[last row of each sequence]) Woutᵀ
 * Switches: x *= embed_scale; qkv += bias; RMSNorm per q/k head; local layers attend through a
 * sliding window with their own RoPE table; post_norms make the residual adds x += rmsnorm(a)
 * (Gemma 3's four norms per layer); GeGLU instead of SwiGLU; logits soft-capped.
 * q|k|v and gate|up are one GEMM each: the loader and the engine place those weights next to each
 * other, so [Wq;Wk;Wv] is simply Wq with more rows. The RMSNorms lead into their GEMMs
 * (norm_matmul), the residual adds ride on the GEMMs (matmul_add) and SwiGLU on the gate|up GEMM,
 * so a decode layer is six ops.
 * Only the last row of each sequence reaches the output head, so a 512-token prefill costs one
 * row of the (vocab × dim) head, not 512.
 *
 * Decode steps (one token per sequence) on a backend with graphs are recorded once per
 * (batch bucket, context bucket) and replayed: hundreds of launches become one. A step of n
 * sequences runs as fwd_batch_bucket(n) rows (up to max_seqs): the extra rows decode token 0 at
 * position 0 into one KV page the forward state holds for them (their K/V land there, their
 * logits are never read), so 256 batch sizes need 23 graphs and the GEMMs see few row counts. Every
 * buffer and the step description live at fixed addresses, so only the host-side sizes matter, and
 * those are fixed by the key (the attention's context bound is the bucket's upper end; kernels read
 * each sequence's true length from device memory).
 *
 * Tensor parallelism (model/tp.h): the same layer runs as phases over N shard states, each with
 * its own config (its heads, ffn rows and vocabulary slice), weights, KV pools and activations:
 * every shard's attention, one all-reduce after o, every shard's gate|up, one all-reduce after
 * down (fwd_row_parallel), and the logits slices gathered. The communicator (tp_comm) queues its
 * work in order with the ops, so a decode step with every shard on one context is still one
 * graph.
 */
#include "forward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "model.h"
#include "tp.h"

#define FWD_GRAPH_KV_BUCKET 256 /* context granularity of decode graphs (tokens) */
#define FWD_MAX_GRAPHS                                                                             \
    512 /* recorded graphs kept (23 batch buckets × context buckets);                             \
           the oldest goes first */

struct fwd_graph {
    int n_seqs, kv_bucket;
    void *exec; /* NULL: seen once (ran eagerly to size workspaces), record on the next sight */
};

struct fwd_state {
    const struct model_config *cfg;
    const struct model_weights *w;
    const struct fg_ops *ops;
    void *ctx;
    struct kv_cache *kv;
    int max_tokens, max_seqs, max_pages; /* max_pages: block-table row length */

    /* activations, backend memory */
    void *x;       /* (max_tokens, dim) residual stream */
    void *h;       /* (max_tokens, dim) normed input of a sub-block */
    void *qkv;     /* (max_tokens, (n_heads + 2 n_kv_heads) head_dim) fused projection */
    void *q;       /* (max_tokens, n_heads * head_dim) rotated queries */
    void *att;     /* (max_tokens, n_heads * head_dim) attention output */
    void *ffn;     /* (max_tokens, ffn_dim) silu(gate) * up */
    void *scratch; /* (max_tokens, 2 ffn_dim) gate|up before SwiGLU, where a backend needs it */
    void *last;    /* (max_seqs, dim) last row of each sequence */
    /* bf16 dequantization of one resident quantized weight (the largest layer weight's size), for
     * products past the backend's GEMV rows (fg_ops.qlinear); NULL without resident weights */
    void *wscratch;
    size_t wscratch_bytes;
    float *logits; /* (max_seqs, vocab) fp32 on every backend */
    /* step description, backend memory, and its host staging copy */
    int *d_ints, *h_ints; /* tokens | pos | slots (T each) | q_start (n_seqs+1) | kv_len (n_seqs) |
                             rows (n_seqs) | block table (n_seqs×max_pages), packed for the step's
                             T tokens and n_seqs sequences; room for the maxima */
    size_t n_ints;
    struct fwd_graph graphs[FWD_MAX_GRAPHS];
    int n_graphs;
    int use_graphs;       /* backend has graphs and FLASHGEN_CUDA_GRAPHS is not "0" */
    int pad;              /* decode steps padded to fwd_batch_bucket (fwd_set_padding) */
    struct kv_seq pad_kv; /* the page the padding rows write (taken at the first padded step) */
    /* This step's rows as runs of prompt rows (fwd_seq.n_prompt) and others, for
     * fg_ops.qmatmul's FG_QMM_PROMPT (fwd_qmm); (2 max_seqs) entries */
    struct fwd_qrun {
        int r0, n, prompt;
    } * qruns;
    int n_qruns;

    /* Tensor parallelism (model/tp.h). One shard: shard[0] is this state. N shards: each is a
     * state of its own (its config, weights, backend, activations; logits (max_seqs, its
     * vocabulary slice)), this one holds the step, the graphs and the gathered logits. */
    int n_shards;
    struct fwd_state *shard[TP_MAX_SHARDS];
    struct tp_comm *comm;
    int vocab_lo[TP_MAX_SHARDS + 1]; /* shard i's logits are columns [vocab_lo[i], vocab_lo[i+1]) */
    int kv_stride, kv_index;         /* this shard's pools of layer l: kv->k[l * stride + index] */
    int own_ints;                    /* d_ints allocated here (not shared with shard 0's) */
    int (*activate)(void *ctx);      /* shards on several devices: make this one's current */
};

/* Issue the next ops to ST's device (shards on several GPUs; a no-op on one context). */
static void fwd_on(const struct fwd_state *st) {
    if (st->activate) st->activate(st->ctx);
}

int fwd_batch_bucket(int n) {
    if (n <= 8) return n;
    int step = n <= 64 ? 8 : n <= 128 ? 16 : n <= 256 ? 32 : 64;
    return (n + step - 1) / step * step;
}

void fwd_set_padding(struct fwd_state *st, int on) {
    st->pad = on;
}

static size_t act_bytes(const struct fwd_state *st, size_t elems) {
    return elems * st->ops->act_size;
}

static void fwd_release(struct fwd_state *st) {
    void *bufs[] = {st->x,
                    st->h,
                    st->qkv,
                    st->q,
                    st->att,
                    st->ffn,
                    st->scratch,
                    st->last,
                    st->logits,
                    st->wscratch,
                    st->own_ints ? st->d_ints : NULL};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        if (bufs[i]) st->ops->release(st->ctx, bufs[i]);
}

void fwd_free(struct fwd_state *st) {
    if (!st) return;
    fwd_drop_graphs(st);
    for (int i = 0; st->comm && i < st->n_shards; i++)
        if (st->shard[i]) {
            fwd_on(st->shard[i]);
            fwd_release(st->shard[i]);
            free(st->shard[i]);
        }
    fwd_on(st);
    fwd_release(st);
    free(st->h_ints);
    free(st->pad_kv.pages); /* the page itself goes with the KV pool */
    free(st->qruns);
    free(st);
}

void fwd_drop_graphs(struct fwd_state *st) {
    for (int i = 0; i < st->n_graphs; i++)
        if (st->graphs[i].exec) st->ops->graph_free(st->ctx, st->graphs[i].exec);
    st->n_graphs = 0;
}

/* 0 when the weights W of CFG suit OPS and the fused GEMMs find q|k|v and gate|up adjacent. */
static int fwd_check_weights(const struct model_config *cfg, const struct model_weights *w,
                             const struct fg_ops *ops, char *err, size_t errlen) {
    for (int l = 0; l < cfg->n_layers; l++) {
        const struct model_layer *L = &w->layers[l];
        size_t esz = ops->act_size, D = (size_t)cfg->dim;
        size_t qd = (size_t)cfg->n_heads * cfg->head_dim,
               kvd = (size_t)cfg->n_kv_heads * cfg->head_dim;
        const char *wq = (const char *)L->wq, *wg = (const char *)L->w_gate;
        int blocks = L->qwq.data || L->qwo.data || L->qw_gate.data || L->qw_down.data ||
                     L->qwqkv.data || L->qw_gu.data;
        /* host blocks take qmatmul (the CPU), resident ones qlinear (model.h); both qembed */
        if ((blocks || w->q_embd.data || w->q_output.data) &&
            (!ops->qembed || (!ops->qmatmul && !ops->qlinear))) {
            snprintf(err, errlen, "forward: the %s backend takes no weights in GGUF blocks",
                     ops->name);
            return -1;
        }
        if ((!L->qwq.data && !L->qwqkv.data &&
             ((const char *)L->wk != wq + qd * D * esz ||
              (const char *)L->wv != wq + (qd + kvd) * D * esz)) ||
            (!L->qw_gate.data && !L->qw_gu.data &&
             (const char *)L->w_up != wg + (size_t)cfg->ffn_dim * D * esz)) {
            snprintf(err, errlen, "forward: layer %d's q/k/v or gate/up weights are not adjacent",
                     l);
            return -1;
        }
    }
    return 0;
}

/* The activations of ST (a shard, or the one state of an unsharded model) by its config;
 * logits of its vocabulary (its slice). 0, or -1. */
static int fwd_alloc_acts(struct fwd_state *st) {
    const struct model_config *cfg = st->cfg;
    const struct fg_ops *ops = st->ops;
    void *ctx = st->ctx;
    size_t T = (size_t)st->max_tokens, S = (size_t)st->max_seqs;
    size_t qd = (size_t)cfg->n_heads * cfg->head_dim, kvd = (size_t)cfg->n_kv_heads * cfg->head_dim;
    st->x = ops->alloc(ctx, act_bytes(st, T * cfg->dim));
    st->h = ops->alloc(ctx, act_bytes(st, T * cfg->dim));
    st->qkv = ops->alloc(ctx, act_bytes(st, T * (qd + 2 * kvd)));
    st->q = ops->alloc(ctx, act_bytes(st, T * qd));
    st->att = ops->alloc(ctx, act_bytes(st, T * qd));
    st->ffn = ops->alloc(ctx, act_bytes(st, T * cfg->ffn_dim));
    st->scratch = ops->alloc(ctx, act_bytes(st, T * 2 * cfg->ffn_dim));
    st->last = ops->alloc(ctx, act_bytes(st, S * cfg->dim));
    st->logits = ops->alloc(ctx, sizeof(float) * S * cfg->vocab_size);
    if (ops->qlinear) { /* the scratch of the largest resident layer weight */
        for (int l = 0; l < cfg->n_layers; l++) {
            const struct model_layer *L = &st->w->layers[l];
            const struct fg_qtensor *r[] = {&L->qwqkv, &L->qwo, &L->qw_gu, &L->qw_down,
                                            &L->qwq,   &L->qwk, &L->qwv};
            for (int k = 0; k < 7; k++)
                if (r[k]->data &&
                    act_bytes(st, (size_t)r[k]->rows * r[k]->cols) > st->wscratch_bytes)
                    st->wscratch_bytes = act_bytes(st, (size_t)r[k]->rows * r[k]->cols);
        }
        if (st->wscratch_bytes && !(st->wscratch = ops->alloc(ctx, st->wscratch_bytes))) return -1;
    }
    return st->x && st->h && st->qkv && st->q && st->att && st->ffn && st->scratch && st->last &&
                   st->logits
               ? 0
               : -1;
}

int fwd_init(struct fwd_state **out, const struct model_config *cfg, const struct model_weights *w,
             const struct fg_ops *ops, void *ops_ctx, struct kv_cache *kv, int max_tokens,
             int max_seqs, char *err, size_t errlen) {
    struct fwd_shard one = {.cfg = cfg, .w = w, .ops = ops, .ops_ctx = ops_ctx};
    return fwd_init_tp(out, cfg, &one, 1, NULL, kv, max_tokens, max_seqs, err, errlen);
}

int fwd_init_tp(struct fwd_state **out, const struct model_config *cfg,
                const struct fwd_shard *shards, int n, struct tp_comm *comm, struct kv_cache *kv,
                int max_tokens, int max_seqs, char *err, size_t errlen) {
    *out = NULL;
    if (max_tokens <= 0 || max_seqs <= 0) {
        snprintf(err, errlen, "forward: max_tokens and max_seqs must be positive");
        return -1;
    }
    if (n < 1 || n > TP_MAX_SHARDS || (n > 1 && !comm) || (comm && comm->n != n)) {
        snprintf(err, errlen, "forward: %d shards (1 to %d, a communicator beyond 1)", n,
                 TP_MAX_SHARDS);
        return -1;
    }
    int same_ctx = 1;
    for (int i = 0; i < n; i++) {
        if (fwd_check_backend(shards[i].cfg, shards[i].ops, err, errlen) != 0 ||
            fwd_check_weights(shards[i].cfg, shards[i].w, shards[i].ops, err, errlen) != 0)
            return -1;
        same_ctx &= shards[i].ops_ctx == shards[0].ops_ctx;
    }
    struct fwd_state *st = calloc(1, sizeof(*st));
    if (!st) {
        snprintf(err, errlen, "forward: out of memory");
        return -1;
    }
    const struct fg_ops *ops = shards[0].ops;
    st->cfg = cfg;
    st->w = shards[0].w;
    st->ops = ops;
    st->ctx = shards[0].ops_ctx;
    st->kv = kv;
    st->max_tokens = max_tokens;
    st->max_seqs = max_seqs;
    st->max_pages = (cfg->max_seq_len + kv->page_size - 1) / kv->page_size;
    st->n_shards = n;
    st->comm = comm;
    st->kv_stride = n;
    st->own_ints = 1;
    st->activate = shards[0].activate;
    /* graphs record one backend context's stream: shards on several record none */
    const char *g = getenv("FLASHGEN_CUDA_GRAPHS");
    st->use_graphs = ops->graph_begin != NULL && same_ctx && !(g && !strcmp(g, "0"));
    st->pad = st->use_graphs;
    size_t T = (size_t)max_tokens, S = (size_t)max_seqs;
    st->n_ints = 3 * T + (S + 1) + 2 * S + S * (size_t)st->max_pages;
    st->d_ints = ops->alloc(st->ctx, st->n_ints * sizeof(int));
    st->h_ints = calloc(st->n_ints, sizeof(int));
    st->qruns = calloc(2 * S, sizeof(*st->qruns));
    int ok = st->d_ints && st->h_ints && st->qruns;
    if (!comm) {
        st->shard[0] = st;
        ok = ok && fwd_alloc_acts(st) == 0;
    } else {
        st->logits = ops->alloc(st->ctx, sizeof(float) * S * cfg->vocab_size);
        ok = ok && st->logits;
    }
    for (int i = 0; comm && ok && i < n; i++) {
        struct fwd_state *sh = calloc(1, sizeof(*sh));
        st->shard[i] = sh;
        if (!sh) {
            ok = 0;
            break;
        }
        sh->cfg = shards[i].cfg;
        sh->w = shards[i].w;
        sh->ops = shards[i].ops;
        sh->ctx = shards[i].ops_ctx;
        sh->kv = shards[i].kv ? shards[i].kv : kv;
        sh->max_tokens = max_tokens;
        sh->max_seqs = max_seqs;
        sh->max_pages = st->max_pages;
        sh->kv_stride = shards[i].kv ? 1 : n;
        sh->kv_index = shards[i].kv ? 0 : i;
        sh->activate = shards[i].activate;
        sh->own_ints = sh->ctx != st->ctx;
        fwd_on(sh);
        sh->d_ints = sh->own_ints ? sh->ops->alloc(sh->ctx, st->n_ints * sizeof(int)) : st->d_ints;
        ok = sh->d_ints && fwd_alloc_acts(sh) == 0;
    }
    fwd_on(st);
    st->vocab_lo[0] = 0;
    for (int i = 0; ok && i < n; i++)
        st->vocab_lo[i + 1] = st->vocab_lo[i] + st->shard[i]->cfg->vocab_size;
    if (ok && st->vocab_lo[n] != cfg->vocab_size) {
        snprintf(err, errlen, "forward: the shards' vocabularies add up to %d, not %d",
                 st->vocab_lo[n], cfg->vocab_size);
        fwd_free(st);
        return -1;
    }
    if (!ok) {
        snprintf(err, errlen, "forward: cannot allocate activations for %d tokens, %d sequences",
                 max_tokens, max_seqs);
        fwd_free(st);
        return -1;
    }
    *out = st;
    return 0;
}

/* Weights kept in their GGUF blocks (model.h): on the host (MODEL_LOAD_KEEP_BLOCKS; the CPU
 * backend, fp32 activations) a weight whose qtensor has data goes through qmatmul, else the fp32
 * ops; the fused q|k|v and gate|up GEMMs stay one qmatmul where the parts share a type (the
 * loader puts them back to back), else one per part, each writing its columns. Resident in a
 * backend's quantized layout (fg_ops.qlinear; the CUDA engine's device copy): q|k|v and gate|up
 * are one matrix each (qwqkv, qw_gu) and qlinear fuses the norm in front and the residual add or
 * SwiGLU after, as norm_matmul / matmul_add / matmul_swiglu do for bf16 weights. */

/* out = epilogue(rmsnorm?(x) · Wᵀ) on a resident weight (struct fg_qlinear); rows of LD
 * elements (0: packed) */
static void fwd_ql_ld(struct fwd_state *st, void *out, int ld, const void *x, const float *norm_w,
                      void *h, const struct fg_qtensor *w, int T, int epilogue) {
    struct fg_qlinear a = {.out = out,
                           .x = x,
                           .norm_w = norm_w,
                           .eps = st->cfg->rms_eps,
                           .h = h,
                           .w = w,
                           .n = T,
                           .epilogue = epilogue,
                           .act_scratch = st->scratch,
                           .w_scratch = st->wscratch,
                           .w_scratch_bytes = st->wscratch_bytes,
                           .ld_out = ld};
    st->ops->qlinear(st->ctx, &a);
}

static void fwd_ql(struct fwd_state *st, void *out, const void *x, const float *norm_w, void *h,
                   const struct fg_qtensor *w, int T, int epilogue) {
    fwd_ql_ld(st, out, 0, x, norm_w, h, w, T, epilogue);
}

/* A and B as one matrix (A's rows, then B's) when the loader placed them back to back in one
 * type (model/loader.c joins q|k|v and gate|up); else 0. */
static int fwd_qjoin(const struct fg_qtensor *a, const struct fg_qtensor *b,
                     struct fg_qtensor *out) {
    if (a->type != b->type || a->cols != b->cols ||
        (const char *)b->data != (const char *)a->data + (size_t)a->rows * a->row_bytes)
        return 0;
    *out = *a;
    out->rows = a->rows + b->rows;
    return 1;
}

/* out (T, ld) = in · qᵀ (+= with ACCUMULATE) through fg_ops.qmatmul, one call per run of the
 * step's rows (fwd_run's qruns), prompt runs flagged FG_QMM_PROMPT. */
static void fwd_qmm(struct fwd_state *st, float *out, size_t ld, const float *in,
                    const struct fg_qtensor *q, int accumulate) {
    for (int i = 0; i < st->n_qruns; i++) {
        const struct fwd_qrun *r = &st->qruns[i];
        st->ops->qmatmul(st->ctx, out + (size_t)r->r0 * ld, ld, in + (size_t)r->r0 * q->cols, q,
                         r->n,
                         (accumulate ? FG_QMM_ACCUMULATE : 0) | (r->prompt ? FG_QMM_PROMPT : 0));
    }
}

/* out (T, out_dim) = in · wᵀ, or += (ACCUMULATE) */
static void fwd_proj(struct fwd_state *st, void *out, const void *in, const float *w,
                     const struct fg_qtensor *q, int T, int in_dim, int out_dim, int accumulate) {
    if (q->data && st->ops->qlinear)
        fwd_ql(st, out, in, NULL, NULL, q, T, accumulate ? FG_QL_ADD : FG_QL_STORE);
    else if (q->data)
        fwd_qmm(st, out, (size_t)out_dim, in, q, accumulate);
    else if (accumulate)
        st->ops->matmul_add(st->ctx, out, in, w, T, in_dim, out_dim);
    else
        st->ops->matmul(st->ctx, out, in, w, T, in_dim, out_dim);
}

/* qkv (T, QD + 2 KVD) = rmsnorm(x) [Wq;Wk;Wv]ᵀ */
static void fwd_qkv(struct fwd_state *st, const struct model_layer *L, int T) {
    const struct model_config *c = st->cfg;
    int D = c->dim, QD = c->n_heads * c->head_dim, KVD = c->n_kv_heads * c->head_dim;
    if (L->qwqkv.data) {
        fwd_ql(st, st->qkv, st->x, L->attn_norm, st->h, &L->qwqkv, T, FG_QL_STORE);
        return;
    }
    if (L->qwq.data && st->ops->qlinear) { /* resident parts of mixed types: each its columns */
        const struct fg_qtensor *part[] = {&L->qwq, &L->qwk, &L->qwv};
        int ld = QD + 2 * KVD, col = 0;
        for (int i = 0; i < 3; i++) {
            fwd_ql_ld(st, (char *)st->qkv + (size_t)col * st->ops->act_size, ld, st->x,
                      L->attn_norm, st->h, part[i], T, FG_QL_STORE);
            col += part[i]->rows;
        }
        return;
    }
    if (!L->qwq.data) {
        st->ops->norm_matmul(st->ctx, st->qkv, st->h, st->x, L->attn_norm, c->rms_eps, L->wq, T, D,
                             QD + 2 * KVD, 0, NULL);
        return;
    }
    size_t ld = (size_t)QD + 2 * KVD;
    float *qkv = st->qkv;
    st->ops->rmsnorm(st->ctx, st->h, st->x, L->attn_norm, T, D, c->rms_eps);
    struct fg_qtensor qk, all;
    if (fwd_qjoin(&L->qwq, &L->qwk, &qk) && fwd_qjoin(&qk, &L->qwv, &all)) {
        fwd_qmm(st, qkv, ld, st->h, &all, 0);
        return;
    }
    fwd_qmm(st, qkv, ld, st->h, &L->qwq, 0);
    fwd_qmm(st, qkv + QD, ld, st->h, &L->qwk, 0);
    fwd_qmm(st, qkv + QD + KVD, ld, st->h, &L->qwv, 0);
}

/* ffn (T, F) = act(rmsnorm(x) Wgᵀ) * (rmsnorm(x) Wuᵀ), act silu or gelu-tanh */
static void fwd_ffn_in(struct fwd_state *st, const struct model_layer *L, int T) {
    const struct model_config *c = st->cfg;
    const struct fg_ops *ops = st->ops;
    int D = c->dim, F = c->ffn_dim;
    int gelu = c->act == MODEL_ACT_GELU_TANH;
    if (L->qw_gu.data && gelu) {
        fwd_ql(st, st->scratch, st->x, L->ffn_norm, st->h, &L->qw_gu, T, FG_QL_STORE);
        ops->geglu(st->ctx, st->ffn, st->scratch, T, F);
        return;
    }
    if (L->qw_gu.data) {
        fwd_ql(st, st->ffn, st->x, L->ffn_norm, st->h, &L->qw_gu, T, FG_QL_SWIGLU);
        return;
    }
    if (!L->qw_gate.data) {
        if (gelu) {
            ops->norm_matmul(st->ctx, st->scratch, st->h, st->x, L->ffn_norm, c->rms_eps, L->w_gate,
                             T, D, 2 * F, 0, NULL);
            ops->geglu(st->ctx, st->ffn, st->scratch, T, F);
        } else {
            ops->norm_matmul(st->ctx, st->ffn, st->h, st->x, L->ffn_norm, c->rms_eps, L->w_gate, T,
                             D, F, 1, st->scratch);
        }
        return;
    }
    float *gu = st->scratch, *ffn = st->ffn; /* gu (T, 2F): each token's gate | up */
    ops->rmsnorm(st->ctx, st->h, st->x, L->ffn_norm, T, D, c->rms_eps);
    struct fg_qtensor both;
    if (fwd_qjoin(&L->qw_gate, &L->qw_up, &both)) {
        fwd_qmm(st, gu, 2 * (size_t)F, st->h, &both, 0);
    } else {
        fwd_qmm(st, gu, 2 * (size_t)F, st->h, &L->qw_gate, 0);
        fwd_qmm(st, gu + F, 2 * (size_t)F, st->h, &L->qw_up, 0);
    }
    if (gelu)
        ops->geglu(st->ctx, st->ffn, st->scratch, T, F);
    else
        for (int t = 0; t < T; t++)
            ops->swiglu(st->ctx, ffn + (size_t)t * F, gu + (size_t)t * 2 * F,
                        gu + (size_t)t * 2 * F + F, (size_t)F);
}

/* logits (n_seqs, vocab) fp32 = rmsnorm(x[rows]) Woutᵀ, one shard's vocabulary (fwd_layers
 * gathers the shards' and soft-caps where the family says) */
static void fwd_head(struct fwd_state *st, int n_seqs, const int *d_rows) {
    const struct model_config *c = st->cfg;
    const struct model_weights *w = st->w;
    const struct fg_ops *ops = st->ops;
    int D = c->dim;
    ops->gather_rows(st->ctx, st->h, st->x, d_rows, n_seqs, D);
    if (w->q_output.data && ops->qlinear) {
        fwd_ql(st, st->logits, st->h, w->out_norm, st->last, &w->q_output, n_seqs, FG_QL_STORE_F32);
    } else {
        ops->rmsnorm(st->ctx, st->last, st->h, w->out_norm, n_seqs, D, c->rms_eps);
        if (w->q_output.data) /* one row per sequence: the row kernel for all (no FG_QMM_PROMPT) */
            ops->qmatmul(st->ctx, st->logits, (size_t)c->vocab_size, st->last, &w->q_output, n_seqs,
                         0);
        else
            ops->matmul_f32(st->ctx, st->logits, st->last, w->output, n_seqs, D, c->vocab_size);
    }
}

/* 1 when the local layers' window is shorter than the context, so that it can hide keys (a
 * longer one never does: those layers then run the plain attention, with their own RoPE). */
static int fwd_windowed(const struct model_config *c) {
    return c->sliding_window > 0 && c->sliding_window < c->max_seq_len;
}

/* The step's device arrays as shard SH reads them (from its own copy of the description where
 * it has one), and its attention batch: the shard's head counts. */
struct fwd_view {
    const int *tokens, *pos, *slots, *rows;
    struct attn_batch ab;
};

static void fwd_view_of(const struct fwd_state *sh, const struct attn_batch *ab, size_t MT,
                        size_t MS, struct fwd_view *v) {
    const int *b = sh->d_ints; /* tokens | pos | slots | q_start | kv_len | rows | table */
    v->tokens = b;
    v->pos = b + MT;
    v->slots = v->pos + MT;
    v->ab = *ab;
    v->ab.q_start = v->slots + MT;
    v->ab.kv_len = v->ab.q_start + MS + 1;
    v->rows = v->ab.kv_len + MS;
    v->ab.block_table = v->rows + MS;
    v->ab.n_heads = sh->cfg->n_heads;
    v->ab.n_kv_heads = sh->cfg->n_kv_heads;
}

/* sh->x = E[tokens] (× embed_scale) */
static void fwd_embed(struct fwd_state *sh, const int *tokens, int T) {
    const struct model_weights *w = sh->w;
    const struct model_config *c = sh->cfg;
    if (w->q_embd.data)
        sh->ops->qembed(sh->ctx, sh->x, &w->q_embd, tokens, T);
    else
        sh->ops->embed(sh->ctx, sh->x, w->tok_embd, tokens, T, c->dim);
    if (c->embed_scale > 0) sh->ops->scale(sh->ctx, sh->x, (size_t)T * c->dim, c->embed_scale);
}

/* Layer L's attention on shard SH up to sh->att: q|k|v of its heads, K/V into its pools. */
static void fwd_attn(struct fwd_state *sh, int l, const struct fwd_view *v, int T) {
    const struct model_config *c = sh->cfg;
    const struct fg_ops *ops = sh->ops;
    void *ctx = sh->ctx;
    const struct model_layer *L = &sh->w->layers[l];
    int local = model_layer_is_local(c, l);
    int QD = c->n_heads * c->head_dim, KVD = c->n_kv_heads * c->head_dim;
    int pool = l * sh->kv_stride + sh->kv_index;
    void *kc = sh->kv->k[pool], *vc = sh->kv->v[pool];
    fwd_qkv(sh, L, T);
    if (c->attn_bias) ops->add_rows(ctx, sh->qkv, L->bqkv, T, QD + 2 * KVD);
    if (c->qk_norm)
        ops->head_norm(ctx, sh->qkv, L->q_norm, L->k_norm, T, c->n_heads, c->n_kv_heads,
                       c->head_dim, c->rms_eps);
    ops->qkv_store(ctx, sh->q, kc, vc, sh->qkv, v->pos, v->slots, T, c->n_heads, c->n_kv_heads,
                   c->head_dim,
                   local && c->rope_local_theta > 0 ? sh->w->rope_freqs_local : sh->w->rope_freqs);
    if (local && fwd_windowed(c))
        ops->attention_window(ctx, sh->att, sh->q, kc, vc, &v->ab, c->sliding_window);
    else
        ops->attention(ctx, sh->att, sh->q, kc, vc, &v->ab);
}

/* A row-parallel projection (o: DOWN 0, down: DOWN 1) of every shard, joined into the residual
 * stream. Shard 0 adds into x, the others write their partial sums over theirs, the all-reduce
 * sums: x + Σ partials on every shard. Post-norms (Gemma 3): the partial sums go to h, the
 * all-reduce sums them and only then does each shard norm the full sum into its x. */
static void fwd_row_parallel(struct fwd_state *st, int l, int down, int T) {
    const struct model_config *c = st->cfg;
    int D = c->dim;
    void *sums[TP_MAX_SHARDS];
    for (int i = 0; i < st->n_shards; i++) {
        struct fwd_state *sh = st->shard[i];
        const struct model_layer *L = &sh->w->layers[l];
        fwd_on(sh);
        int in_dim = down ? sh->cfg->ffn_dim : sh->cfg->n_heads * sh->cfg->head_dim;
        const void *in = down ? sh->ffn : sh->att;
        const float *w = down ? L->w_down : L->wo;
        const struct fg_qtensor *q = down ? &L->qw_down : &L->qwo;
        sums[i] = c->post_norms ? sh->h : sh->x;
        fwd_proj(sh, sums[i], in, w, q, T, in_dim, D, !c->post_norms && i == 0);
    }
    if (st->comm) st->comm->all_reduce_sum(st->comm, sums, (size_t)T * D);
    for (int i = 0; c->post_norms && i < st->n_shards; i++) {
        struct fwd_state *sh = st->shard[i];
        const struct model_layer *L = &sh->w->layers[l];
        fwd_on(sh);
        sh->ops->norm_add(sh->ctx, sh->x, sh->h, down ? L->post_ffn_norm : L->post_attn_norm, T, D,
                          c->rms_eps);
    }
}

/* Queue every op of one step: embedding, the layers, the last rows through the head. The
 * family switches (model.h) add ops; all of them off, a layer is the six ops above. With N
 * shards a layer runs as phases over them: attention (each its heads), the o all-reduce, the
 * MLP's first half (each its ffn rows), the down all-reduce; each shard's logits slice is
 * gathered at the end. */
static void fwd_layers(struct fwd_state *st, const struct attn_batch *ab, int T, int n_seqs,
                       size_t MT, size_t MS) {
    const struct model_config *c = st->cfg;
    int N = st->n_shards;
    struct fwd_view v[TP_MAX_SHARDS];
    for (int i = 0; i < N; i++) { /* every shard holds the whole residual stream */
        fwd_on(st->shard[i]);
        fwd_view_of(st->shard[i], ab, MT, MS, &v[i]);
        fwd_embed(st->shard[i], v[i].tokens, T);
    }
    for (int l = 0; l < c->n_layers; l++) {
        for (int i = 0; i < N; i++) {
            fwd_on(st->shard[i]);
            fwd_attn(st->shard[i], l, &v[i], T);
        }
        fwd_row_parallel(st, l, 0, T);
        for (int i = 0; i < N; i++) {
            fwd_on(st->shard[i]);
            fwd_ffn_in(st->shard[i], &st->shard[i]->w->layers[l], T);
        }
        fwd_row_parallel(st, l, 1, T);
    }
    float *slices[TP_MAX_SHARDS];
    for (int i = 0; i < N; i++) {
        struct fwd_state *sh = st->shard[i];
        fwd_on(sh);
        fwd_head(sh, n_seqs, v[i].rows);
        slices[i] = sh->logits;
    }
    if (st->comm) st->comm->gather(st->comm, st->logits, slices, st->vocab_lo, n_seqs);
    fwd_on(st);
    if (c->final_softcap > 0)
        st->ops->softcap(st->ctx, st->logits, (size_t)n_seqs * c->vocab_size, c->final_softcap);
}

int fwd_check_backend(const struct model_config *c, const struct fg_ops *ops, char *err,
                      size_t errlen) {
    int windowed = 0;
    for (int l = 0; l < c->n_layers; l++)
        windowed |= model_layer_is_local(c, l) && fwd_windowed(c);
    const struct {
        int needed;
        const void *op;
        const char *feature;
    } f[] = {
        {c->attn_bias, (const void *)ops->add_rows, "attention q/k/v biases (Qwen2)"},
        {c->qk_norm, (const void *)ops->head_norm, "QK-norm (Gemma 3)"},
        {windowed, (const void *)ops->attention_window, "sliding-window attention"},
        {c->post_norms, (const void *)ops->norm_add, "post-attention/post-MLP norms (Gemma 3)"},
        {c->act == MODEL_ACT_GELU_TANH, (const void *)ops->geglu, "the GELU-tanh gated MLP"},
        {c->embed_scale > 0, (const void *)ops->scale, "scaled embeddings (Gemma)"},
        {c->final_softcap > 0, (const void *)ops->softcap, "final logit soft-capping"},
    };
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        if (f[i].needed && !f[i].op) {
            snprintf(err, errlen, "the %s backend does not implement %s, which this %s model needs",
                     ops->name, f[i].feature, c->arch);
            return -1;
        }
    return 0;
}

static struct fwd_graph *fwd_graph_find(struct fwd_state *st, int n_seqs, int kv_bucket) {
    for (int i = 0; i < st->n_graphs; i++)
        if (st->graphs[i].n_seqs == n_seqs && st->graphs[i].kv_bucket == kv_bucket)
            return &st->graphs[i];
    return NULL;
}

static void fwd_graph_add(struct fwd_state *st, int n_seqs, int kv_bucket) {
    if (st->n_graphs == FWD_MAX_GRAPHS) {
        if (st->graphs[0].exec) st->ops->graph_free(st->ctx, st->graphs[0].exec);
        memmove(&st->graphs[0], &st->graphs[1], sizeof(st->graphs[0]) * (FWD_MAX_GRAPHS - 1));
        st->n_graphs--;
    }
    st->graphs[st->n_graphs++] = (struct fwd_graph){n_seqs, kv_bucket, NULL};
}

int fwd_run(struct fwd_state *st, const struct fwd_seq *seqs, int n_seqs, float *logits, char *err,
            size_t errlen) {
    const struct model_config *c = st->cfg;
    const struct fg_ops *ops = st->ops;
    void *ctx = st->ctx;
    struct kv_cache *kv = st->kv;
    if (n_seqs <= 0 || n_seqs > st->max_seqs) {
        snprintf(err, errlen, "forward: %d sequences (limit %d)", n_seqs, st->max_seqs);
        return -1;
    }

    /* Host description of the step. */
    int T = 0, max_q = 0, max_kv = 0;
    for (int s = 0; s < n_seqs; s++) {
        const struct fwd_seq *q = &seqs[s];
        int total = q->kv->n_tokens + q->n_tokens;
        if (q->n_tokens <= 0) {
            snprintf(err, errlen, "forward: sequence %d has no new tokens", s);
            return -1;
        }
        if (total > c->max_seq_len) {
            snprintf(err, errlen, "forward: sequence %d reaches %d tokens (context %d)", s, total,
                     c->max_seq_len);
            return -1;
        }
        if (q->kv->n_pages * kv->page_size < total) {
            snprintf(err, errlen, "forward: sequence %d has pages for %d tokens, needs %d", s,
                     q->kv->n_pages * kv->page_size, total);
            return -1;
        }
        for (int i = 0; i < q->n_tokens; i++)
            if (q->tokens[i] < 0 || q->tokens[i] >= c->vocab_size) {
                snprintf(err, errlen, "forward: token id %d out of range", q->tokens[i]);
                return -1;
            }
        T += q->n_tokens;
        if (q->n_tokens > max_q) max_q = q->n_tokens;
        if (total > max_kv) max_kv = total;
    }
    if (T > st->max_tokens) {
        snprintf(err, errlen, "forward: %d tokens in one step (limit %d)", T, st->max_tokens);
        return -1;
    }
    /* A padded decode step runs n_run rows: the real ones, then padding rows into pad_kv. */
    int n_run = n_seqs;
    if (max_q == 1 && st->pad) {
        int b = fwd_batch_bucket(n_seqs);
        if (b > st->max_seqs) b = st->max_seqs;
        if (b > st->max_tokens) b = st->max_tokens;
        if (b > n_seqs && (st->pad_kv.n_pages || kv_seq_reserve(kv, &st->pad_kv, 1) == 0))
            n_run = b;
    }
    int T_run = T + n_run - n_seqs;
    /* Packed for this step's T_run tokens and n_run sequences, so only what the step uses
     * travels (a decode graph's key fixes both, so its pointers stay valid at every replay). */
    size_t MT = (size_t)T_run, MS = (size_t)n_run;
    size_t n_ints = 3 * MT + 3 * MS + 1 + MS * (size_t)st->max_pages;
    int *tokens = st->h_ints, *pos = tokens + MT, *slots = pos + MT, *q_start = slots + MT;
    int *kv_len = q_start + MS + 1, *rows = kv_len + MS, *table = rows + MS;
    int t = 0;
    q_start[0] = 0;
    for (int s = 0; s < n_seqs; s++) {
        const struct fwd_seq *q = &seqs[s];
        for (int i = 0; i < q->n_tokens; i++, t++) {
            int p = q->kv->n_tokens + i;
            tokens[t] = q->tokens[i];
            pos[t] = p;
            slots[t] = q->kv->pages[p / kv->page_size] * kv->page_size + p % kv->page_size;
        }
        q_start[s + 1] = t;
        kv_len[s] = q->kv->n_tokens + q->n_tokens;
        rows[s] = t - 1;
        int np = kv_cache_pages_for(kv, kv_len[s]);
        memcpy(table + (size_t)s * st->max_pages, q->kv->pages, sizeof(int) * (size_t)np);
    }
    for (int s = n_seqs; s < n_run; s++, t++) { /* padding: token 0 at position 0 of pad_kv */
        tokens[t] = 0;
        pos[t] = 0;
        slots[t] = st->pad_kv.pages[0] * kv->page_size;
        q_start[s + 1] = t + 1;
        kv_len[s] = 1;
        rows[s] = t;
        table[(size_t)s * st->max_pages] = st->pad_kv.pages[0];
    }
    st->n_qruns = 0;
    for (int s = 0; s < n_run; s++) {
        int r0 = q_start[s], n = q_start[s + 1] - r0;
        int np = s < n_seqs ? seqs[s].n_prompt : 0; /* padding rows: decode rows */
        np = np < 0 ? 0 : np > n ? n : np;
        for (int part = 0; part < 2; part++) { /* its prompt rows, then its generated ones */
            int len = part ? n - np : np, prompt = !part;
            if (!len) continue;
            struct fwd_qrun *last = st->n_qruns ? &st->qruns[st->n_qruns - 1] : NULL;
            if (last && last->prompt == prompt)
                last->n += len;
            else
                st->qruns[st->n_qruns++] = (struct fwd_qrun){r0 + (part ? np : 0), len, prompt};
        }
    }
    fwd_on(st);
    int up = ops->upload(ctx, st->d_ints, st->h_ints, n_ints * sizeof(int));
    for (int i = 0; st->comm && i < st->n_shards; i++) /* shards on other devices */
        if (st->shard[i]->own_ints) {
            fwd_on(st->shard[i]);
            up |= st->shard[i]->ops->upload(st->shard[i]->ctx, st->shard[i]->d_ints, st->h_ints,
                                            n_ints * sizeof(int));
        }
    fwd_on(st);
    if (up != 0) {
        snprintf(err, errlen, "forward: upload of the step description failed");
        return -1;
    }
    int *d_tokens = st->d_ints, *d_pos = d_tokens + MT, *d_slots = d_pos + MT;
    int *d_q_start = d_slots + MT, *d_kv_len = d_q_start + MS + 1, *d_rows = d_kv_len + MS;
    int *d_table = d_rows + MS;

    struct attn_batch ab = {
        .n_seqs = n_run,
        .q_start = d_q_start,
        .kv_len = d_kv_len,
        .block_table = d_table,
        .max_pages = st->max_pages,
        .page_size = kv->page_size,
        .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv_heads,
        .head_dim = c->head_dim,
        .scale = model_attn_scale(c),
        .causal = 1,
        .max_q_len = max_q,
        .max_kv_len = max_kv,
        .host_q_start = q_start,
        .host_kv_len = kv_len,
    };
    int decode = max_q == 1;
    struct fwd_graph *gr = NULL;
    if (decode && st->use_graphs) {
        int bucket = (max_kv + FWD_GRAPH_KV_BUCKET - 1) / FWD_GRAPH_KV_BUCKET * FWD_GRAPH_KV_BUCKET;
        if (bucket > c->max_seq_len) bucket = c->max_seq_len;
        ab.max_kv_len = bucket;
        gr = fwd_graph_find(st, n_run, bucket);
    }
    if (gr && gr->exec) {
        if (ops->graph_launch(ctx, gr->exec) != 0) {
            snprintf(err, errlen, "forward: graph launch failed");
            return -1;
        }
    } else if (gr) { /* second sight: record, then replay */
        if (ops->graph_begin(ctx) != 0) {
            snprintf(err, errlen, "forward: cannot start recording a graph");
            return -1;
        }
        fwd_layers(st, &ab, T_run, n_run, MT, MS);
        if (ops->graph_end(ctx, &gr->exec) != 0 || ops->graph_launch(ctx, gr->exec) != 0) {
            snprintf(err, errlen, "forward: recording a decode graph failed");
            return -1;
        }
    } else {
        fwd_layers(st, &ab, T_run, n_run, MT, MS);
        if (decode && st->use_graphs) fwd_graph_add(st, n_run, ab.max_kv_len);
    }
    if (st->comm && st->comm->error[0]) { /* a collective that could not be queued */
        snprintf(err, errlen, "forward: %s", st->comm->error);
        return -1;
    }
    if (logits && (ops->download(ctx, logits, st->logits,
                                 sizeof(float) * (size_t)n_seqs * c->vocab_size) != 0 ||
                   ops->sync(ctx) != 0)) {
        snprintf(err, errlen, "forward: device error");
        return -1;
    }
    for (int s = 0; s < n_seqs; s++)
        seqs[s].kv->n_tokens += seqs[s].n_tokens;
    return 0;
}

int fwd_mask(struct fwd_state *st, int n, const uint32_t *masks, size_t words, const int *use,
             int n_mask, char *err, size_t errlen) {
    if (n <= 0 || n > st->max_seqs) {
        snprintf(err, errlen, "mask: %d rows (limit %d)", n, st->max_seqs);
        return -1;
    }
    if (!st->ops->mask_logits) {
        snprintf(err, errlen, "mask: the %s backend has no mask op", st->ops->name);
        return -1;
    }
    if (st->ops->mask_logits(st->ctx, st->logits, n, st->cfg->vocab_size, masks, words, use,
                             n_mask) != 0) {
        snprintf(err, errlen, "mask: device error");
        return -1;
    }
    return 0;
}

int fwd_bias(struct fwd_state *st, int n, const struct fg_logit_delta *d, int n_deltas, char *err,
             size_t errlen) {
    if (n <= 0 || n > st->max_seqs) {
        snprintf(err, errlen, "bias: %d rows (limit %d)", n, st->max_seqs);
        return -1;
    }
    if (!st->ops->bias_logits) {
        snprintf(err, errlen, "bias: the %s backend has no logit bias op", st->ops->name);
        return -1;
    }
    if (st->ops->bias_logits(st->ctx, st->logits, n, st->cfg->vocab_size, d, n_deltas) != 0) {
        snprintf(err, errlen, "bias: device error");
        return -1;
    }
    return 0;
}

int fwd_top(struct fwd_state *st, int n, const int *k, int *ids, float *lps, char *err,
            size_t errlen) {
    if (n <= 0 || n > st->max_seqs) {
        snprintf(err, errlen, "top logprobs: %d rows (limit %d)", n, st->max_seqs);
        return -1;
    }
    if (!st->ops->top_logprobs) {
        snprintf(err, errlen, "top logprobs: the %s backend has no top-k op", st->ops->name);
        return -1;
    }
    if (st->ops->top_logprobs(st->ctx, st->logits, n, st->cfg->vocab_size, k, ids, lps) != 0) {
        snprintf(err, errlen, "top logprobs: device error");
        return -1;
    }
    return 0;
}

int fwd_sample(struct fwd_state *st, int n, const struct fg_sample_row *rows, const int *history,
               int n_history, int *ids, float *logprobs, char *err, size_t errlen) {
    if (n <= 0 || n > st->max_seqs) {
        snprintf(err, errlen, "sample: %d rows (limit %d)", n, st->max_seqs);
        return -1;
    }
    if (st->ops->sample(st->ctx, st->logits, n, st->cfg->vocab_size, rows, history, n_history, ids,
                        logprobs) != 0) {
        snprintf(err, errlen, "sample: device error");
        return -1;
    }
    return 0;
}
