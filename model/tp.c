/* tp.c — tensor parallelism's plan, shard weights and the local communicator (model/tp.h).
 *
 * The cut is done once on fp32 host weights: row slices (q|k|v by heads, gate|up by ffn rows, the
 * output head by vocabulary rows) and column slices (o by heads, down by ffn columns) are copied
 * into the shard's own arena, q|k|v and gate|up back to back as the forward pass fuses them.
 */
#include "tp.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"

int tp_plan_make(struct tp_plan *p, const struct model_config *cfg, int n, char *err,
                 size_t errlen) {
    memset(p, 0, sizeof(*p));
    if (n < 1 || n > TP_MAX_SHARDS) {
        snprintf(err, errlen, "tensor_parallel %d: must be 1 to %d", n, TP_MAX_SHARDS);
        return -1;
    }
    int H = cfg->n_heads, KV = cfg->n_kv_heads;
    if (H < 1 || KV < 1 || H % KV != 0) {
        snprintf(err, errlen, "tensor_parallel: %d query heads over %d KV heads", H, KV);
        return -1;
    }
    if (cfg->ffn_dim < n || cfg->vocab_size < n) {
        snprintf(err, errlen, "tensor_parallel %d: ffn_dim %d or vocab %d has fewer rows", n,
                 cfg->ffn_dim, cfg->vocab_size);
        return -1;
    }
    int g = H / KV; /* query heads per KV head */
    p->n = n;
    for (int i = 0; i <= n; i++) {
        p->head_lo[i] = (int)((long)i * H / n);
        p->ffn_lo[i] = (int)((long)i * cfg->ffn_dim / n);
        p->vocab_lo[i] = (int)((long)i * cfg->vocab_size / n);
    }
    if (H % n == 0 && (H / n) % g == 0) { /* whole groups per shard */
        p->q_slots = H / n;
        p->kv_slots = H / n / g;
    } else if (H % n == 0 && g % (H / n) == 0) { /* each shard inside one group */
        p->q_slots = H / n;
        p->kv_slots = 1;
    } else { /* uneven: padded query slots, one KV slot each */
        p->expanded = 1;
        p->q_slots = (H + n - 1) / n;
        p->kv_slots = p->q_slots;
    }
    return 0;
}

int tp_q_head(const struct tp_plan *p, int shard, int slot) {
    int h = p->head_lo[shard] + slot;
    return h < p->head_lo[shard + 1] ? h : -1;
}

int tp_kv_head(const struct tp_plan *p, const struct model_config *cfg, int shard, int slot) {
    int g = cfg->n_heads / cfg->n_kv_heads;
    if (!p->expanded) return p->head_lo[shard] / g + slot;
    int h = tp_q_head(p, shard, slot);
    if (h < 0) h = p->head_lo[shard] < cfg->n_heads ? p->head_lo[shard] : cfg->n_heads - 1;
    return h / g; /* a padding slot keeps some real KV head: its query is zero, its output unused */
}

void tp_shard_config(const struct tp_plan *p, const struct model_config *cfg, int shard,
                     struct model_config *out) {
    *out = *cfg;
    out->n_heads = p->q_slots;
    out->n_kv_heads = p->kv_slots;
    out->ffn_dim = p->ffn_lo[shard + 1] - p->ffn_lo[shard];
    out->vocab_size = p->vocab_lo[shard + 1] - p->vocab_lo[shard];
    out->tied_embeddings = 0;
}

void tp_kv_config(const struct tp_plan *p, const struct model_config *cfg,
                  struct model_config *out) {
    *out = *cfg;
    out->n_layers = cfg->n_layers * p->n;
    out->n_kv_heads = p->kv_slots;
}

/* Rows [r0, r0 + n) of W (.., cols) to DST, or zeros when W is NULL (a padding slot). */
static float *copy_rows(float *dst, const float *w, size_t r0, size_t n, size_t cols) {
    if (w)
        memcpy(dst, w + r0 * cols, sizeof(float) * n * cols);
    else
        memset(dst, 0, sizeof(float) * n * cols);
    return dst + n * cols;
}

/* Per-layer floats of the shard's arena. */
static size_t shard_layer_floats(const struct model_config *c) {
    size_t D = c->dim, hd = c->head_dim, F = c->ffn_dim;
    size_t qkv = ((size_t)c->n_heads + 2 * (size_t)c->n_kv_heads) * hd;
    return qkv * D + D * c->n_heads * hd + 3 * F * D + (c->attn_bias ? qkv : 0);
}

int tp_shard_build(struct tp_shard *s, const struct tp_plan *p, const struct model *m, int shard,
                   char *err, size_t errlen) {
    memset(s, 0, sizeof(*s));
    const struct model_config *mc = &m->cfg;
    const struct model_weights *mw = &m->w;
    if (!mw->tok_embd || !mw->output) {
        snprintf(err, errlen, "tensor_parallel: the embedding is not fp32 on the host");
        return -1;
    }
    for (int l = 0; l < mc->n_layers; l++) {
        const struct model_layer *L = &mw->layers[l];
        if (!L->wq || !L->wk || !L->wv || !L->wo || !L->w_gate || !L->w_up || !L->w_down) {
            snprintf(err, errlen,
                     "tensor_parallel: layer %d's weights are not fp32 on the host (kept in "
                     "their file blocks); shards are cut from fp32 weights",
                     l);
            return -1;
        }
    }
    tp_shard_config(p, mc, shard, &s->cfg);
    const struct model_config *c = &s->cfg;
    size_t D = mc->dim, hd = mc->head_dim, F0 = p->ffn_lo[shard], F = c->ffn_dim;
    size_t QDm = (size_t)mc->n_heads * hd, KVDm = (size_t)mc->n_kv_heads * hd;
    s->arena = malloc(sizeof(float) * shard_layer_floats(c) * mc->n_layers);
    s->w.layers = calloc((size_t)mc->n_layers, sizeof(struct model_layer));
    if (!s->arena || !s->w.layers) {
        snprintf(err, errlen, "tensor_parallel: out of memory for shard %d", shard);
        tp_shard_free(s, NULL, NULL);
        return -1;
    }
    s->w.tok_embd = mw->tok_embd; /* replicated */
    s->w.output = mw->output + (size_t)p->vocab_lo[shard] * D;
    s->w.out_norm = mw->out_norm;
    s->w.rope_freqs = mw->rope_freqs;
    s->w.rope_freqs_local = mw->rope_freqs_local;
    float *a = s->arena;
    for (int l = 0; l < mc->n_layers; l++) {
        const struct model_layer *L = &mw->layers[l];
        struct model_layer *S = &s->w.layers[l];
        *S = *L; /* norms replicated; the cut matrices replaced below */
        const struct fg_qtensor none = {.data = NULL};
        S->qwq = S->qwk = S->qwv = S->qwo = S->qw_gate = S->qw_up = S->qw_down = none;
        S->wq = a;
        for (int j = 0; j < c->n_heads; j++) {
            int h = tp_q_head(p, shard, j);
            a = copy_rows(a, h < 0 ? NULL : L->wq, (size_t)(h < 0 ? 0 : h) * hd, hd, D);
        }
        S->wk = a;
        for (int j = 0; j < c->n_kv_heads; j++)
            a = copy_rows(a, L->wk, (size_t)tp_kv_head(p, mc, shard, j) * hd, hd, D);
        S->wv = a;
        for (int j = 0; j < c->n_kv_heads; j++)
            a = copy_rows(a, L->wv, (size_t)tp_kv_head(p, mc, shard, j) * hd, hd, D);
        if (mc->attn_bias) { /* q | k | v biases, cut like their rows */
            S->bqkv = a;
            for (int j = 0; j < c->n_heads; j++) {
                int h = tp_q_head(p, shard, j);
                a = copy_rows(a, h < 0 ? NULL : L->bqkv, (size_t)(h < 0 ? 0 : h), 1, hd);
            }
            for (int kv = 0; kv < 2; kv++)
                for (int j = 0; j < c->n_kv_heads; j++)
                    a = copy_rows(a, L->bqkv + QDm + kv * KVDm, (size_t)tp_kv_head(p, mc, shard, j),
                                  1, hd);
        }
        S->wo = a; /* (D, QD): each row's columns of the shard's heads, zero for padding */
        for (size_t r = 0; r < D; r++)
            for (int j = 0; j < c->n_heads; j++) {
                int h = tp_q_head(p, shard, j);
                a = copy_rows(a, h < 0 ? NULL : L->wo + r * QDm, (size_t)(h < 0 ? 0 : h), 1, hd);
            }
        S->w_gate = a;
        a = copy_rows(a, L->w_gate, F0, F, D);
        S->w_up = a;
        a = copy_rows(a, L->w_up, F0, F, D);
        S->w_down = a; /* (D, F): columns [F0, F0 + F) */
        for (size_t r = 0; r < D; r++)
            a = copy_rows(a, L->w_down + r * mc->ffn_dim + F0, 0, 1, F);
    }
    return 0;
}

int tp_shard_upload(struct tp_shard *s, const struct fg_ops *ops, void *ctx, int vocab, char *err,
                    size_t errlen) {
    const struct model_config *c = &s->cfg;
    const struct model_weights *hw = &s->w;
    size_t D = c->dim, hd = c->head_dim, F = c->ffn_dim;
    size_t QD = (size_t)c->n_heads * hd, KVD = (size_t)c->n_kv_heads * hd;
    /* elements in the backend's type; the norm weights are fp32 in a region of their own */
    size_t per_layer = (QD + 2 * KVD) * D + D * QD + 3 * F * D + (c->attn_bias ? QD + 2 * KVD : 0);
    size_t elems = (size_t)vocab * D + (size_t)c->vocab_size * D + c->n_layers * per_layer;
    size_t freq_bytes = sizeof(float) * (hd / 2), freq_span = (freq_bytes + 255) / 256 * 256;
    int local_rope = hw->rope_freqs_local && hw->rope_freqs_local != hw->rope_freqs;
    size_t norm_bytes = model_norms_bytes(c); /* 256-byte multiples (MODEL_NORMS_ALIGN) */
    size_t bytes = freq_span * (local_rope ? 2 : 1) + norm_bytes + elems * ops->act_size + 256;
    s->dev_arena = ops->alloc(ctx, bytes);
    s->dev.layers = calloc((size_t)c->n_layers, sizeof(struct model_layer));
    if (!s->dev_arena || !s->dev.layers) {
        snprintf(err, errlen, "tensor_parallel: cannot allocate %.2f GB for a shard", bytes / 1e9);
        return -1;
    }
    s->dev_bytes = bytes;
    char *p = s->dev_arena;
    s->dev.rope_freqs = (float *)p;
    if (ops->upload(ctx, p, hw->rope_freqs, freq_bytes) != 0) goto fail;
    p += freq_span;
    s->dev.rope_freqs_local = s->dev.rope_freqs;
    if (local_rope) {
        s->dev.rope_freqs_local = (float *)p;
        if (ops->upload(ctx, p, hw->rope_freqs_local, freq_bytes) != 0) goto fail;
        p += freq_span;
    }
    if (model_norms_upload(c, hw, ops, ctx, p, &s->dev) != 0) goto fail; /* fp32, kernels/ops.h */
    p += norm_bytes;
#define PUT(dst, src, n)                                                                           \
    do {                                                                                           \
        (dst) = (float *)p;                                                                        \
        if (ops->upload_f32(ctx, p, (src), (n)) != 0) goto fail;                                   \
        p += (n)*ops->act_size;                                                                    \
    } while (0)
    PUT(s->dev.tok_embd, hw->tok_embd, (size_t)vocab * D);
    PUT(s->dev.output, hw->output, (size_t)c->vocab_size * D);
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_layer *h = &hw->layers[l];
        struct model_layer *d = &s->dev.layers[l];
        PUT(d->wq, h->wq, (QD + 2 * KVD) * D); /* q | k | v back to back, as on the host */
        d->wk = (float *)((char *)d->wq + QD * D * ops->act_size);
        d->wv = (float *)((char *)d->wk + KVD * D * ops->act_size);
        PUT(d->wo, h->wo, D * QD);
        PUT(d->w_gate, h->w_gate, 2 * F * D); /* gate | up back to back */
        d->w_up = (float *)((char *)d->w_gate + F * D * ops->act_size);
        PUT(d->w_down, h->w_down, D * F);
        if (c->attn_bias) PUT(d->bqkv, h->bqkv, QD + 2 * KVD);
    }
#undef PUT
    if (ops->sync(ctx) != 0) goto fail;
    s->dev.arena = s->dev_arena;
    s->dev.arena_bytes = bytes;
    return 0;
fail:
    snprintf(err, errlen, "tensor_parallel: a shard's weight upload failed");
    return -1;
}

void tp_shard_drop_host(struct tp_shard *s) {
    free(s->arena);
    s->arena = NULL;
    free(s->w.layers);
    memset(&s->w, 0, sizeof(s->w));
}

void tp_shard_free(struct tp_shard *s, const struct fg_ops *ops, void *ctx) {
    if (!s) return;
    tp_shard_drop_host(s);
    if (s->dev_arena && ops) ops->release(ctx, s->dev_arena);
    free(s->dev.layers);
    memset(s, 0, sizeof(*s));
}

/* ---- the local communicator: N shards on one backend context ------------------------------ */

static void local_all_reduce(struct tp_comm *c, void *const *bufs, size_t count) {
    const struct fg_ops *ops = c->ops;
    /* the CUDA table has no unfused add; add_rows over one row of COUNT is the same sum */
    for (int i = 1; i < c->n; i++)
        if (ops->add)
            ops->add(c->ctx, bufs[0], bufs[i], count);
        else
            ops->add_rows(c->ctx, bufs[0], bufs[i], 1, (int)count);
    for (int i = 1; i < c->n; i++)
        ops->copy(c->ctx, bufs[i], bufs[0], count * ops->act_size);
}

static void local_gather(struct tp_comm *c, float *dst, float *const *src, const int *cols_lo,
                         int rows) {
    size_t ld = (size_t)cols_lo[c->n];
    for (int i = 0; i < c->n; i++) {
        size_t w = (size_t)(cols_lo[i + 1] - cols_lo[i]);
        for (int r = 0; r < rows; r++)
            c->ops->copy(c->ctx, dst + r * ld + cols_lo[i], src[i] + r * w, w * sizeof(float));
    }
}

static void local_free(struct tp_comm *c) {
    free(c);
}

int tp_comm_local(struct tp_comm **out, int n, const struct fg_ops *ops, void *ctx, char *err,
                  size_t errlen) {
    *out = NULL;
    if (!ops->copy || (!ops->add && !ops->add_rows)) {
        snprintf(err, errlen, "tensor_parallel: the %s backend has no add or copy op", ops->name);
        return -1;
    }
    struct tp_comm *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "tensor_parallel: out of memory");
        return -1;
    }
    c->kind = "emulated";
    c->n = n;
    c->all_reduce_sum = local_all_reduce;
    c->gather = local_gather;
    c->free = local_free;
    c->ops = ops;
    c->ctx = ctx;
    *out = c;
    return 0;
}

void tp_comm_free(struct tp_comm *c) {
    if (c) c->free(c);
}
