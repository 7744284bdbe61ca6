/* model_norms.c — a model's RMSNorm weights in backend memory (model.h, model_norms_*): the one
 * layout the engine's device copy (engine.c) and each tensor-parallel shard's (tp.c) share.
 *
 * Norm weights stay fp32 on every backend (kernels/ops.h), whatever its element type: they are a
 * few KB per layer, and Gemma's (1 + w) rounded to bf16 is off by up to 2^-8 per element (on
 * gemma-3-270m more logit error than the whole bf16 forward pass). They go up raw, through
 * fg_ops.upload, into one region of their own, each tensor at a MODEL_NORMS_ALIGN boundary (the
 * kernels read them with 16-byte vector loads).
 */
#include "model/model.h"

#include <stddef.h>

/* bytes of one norm tensor of N floats in the region */
static size_t norms_span(size_t n) {
    return (n * sizeof(float) + MODEL_NORMS_ALIGN - 1) / MODEL_NORMS_ALIGN * MODEL_NORMS_ALIGN;
}

size_t model_norms_bytes(const struct model_config *c) {
    size_t D = norms_span((size_t)c->dim), hd = norms_span((size_t)c->head_dim);
    size_t per_layer = 2 * D + (c->qk_norm ? 2 * hd : 0) + (c->post_norms ? 2 * D : 0);
    return D + (size_t)c->n_layers * per_layer;
}

int model_norms_upload(const struct model_config *c, const struct model_weights *hw,
                       const struct fg_ops *ops, void *ctx, void *dst, struct model_weights *dw) {
    char *p = dst;
    size_t D = (size_t)c->dim, hd = (size_t)c->head_dim;
#define PUTN(d, s, n)                                                                              \
    do {                                                                                           \
        if (!(s) || ops->upload(ctx, p, (s), (n) * sizeof(float)) != 0) return -1;                 \
        (d) = (float *)p;                                                                          \
        p += norms_span(n);                                                                        \
    } while (0)
    PUTN(dw->out_norm, hw->out_norm, D);
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_layer *h = &hw->layers[l];
        struct model_layer *d = &dw->layers[l];
        PUTN(d->attn_norm, h->attn_norm, D);
        PUTN(d->ffn_norm, h->ffn_norm, D);
        if (c->qk_norm) {
            PUTN(d->q_norm, h->q_norm, hd);
            PUTN(d->k_norm, h->k_norm, hd);
        }
        if (c->post_norms) {
            PUTN(d->post_attn_norm, h->post_attn_norm, D);
            PUTN(d->post_ffn_norm, h->post_ffn_norm, D);
        }
    }
#undef PUTN
    return 0;
}
