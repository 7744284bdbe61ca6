/* model_config.c — the consistency check of struct model_config (model.h), beside the struct it
 * checks: both readers of a config (the GGUF loader in loader.c, config.json in hf_config.c)
 * call it once the fields are filled, so neither file depends on the other.
 */
#include "model/model.h"

#include "model/errmsg.h"

#include <limits.h>
#include <math.h>
#include <stddef.h>

#define MODEL_MAX_DIM (1 << 20) /* widest dim (and n_heads * head_dim) accepted */

int model_config_validate(const struct model_config *c, char *err, size_t errlen) {
    static const struct {
        const char *name;
        size_t off;
        int max;
    } f[] = {
        {"n_layers", offsetof(struct model_config, n_layers), 1 << 12},
        {"dim", offsetof(struct model_config, dim), MODEL_MAX_DIM},
        {"ffn_dim", offsetof(struct model_config, ffn_dim), 1 << 22},
        {"n_heads", offsetof(struct model_config, n_heads), 1 << 12},
        {"n_kv_heads", offsetof(struct model_config, n_kv_heads), 1 << 12},
        {"head_dim", offsetof(struct model_config, head_dim), 1 << 12},
        {"vocab_size", offsetof(struct model_config, vocab_size), 1 << 24},
        {"max_seq_len", offsetof(struct model_config, max_seq_len), INT_MAX},
    };
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        int v = *(const int *)((const char *)c + f[i].off);
        if (v <= 0 || v > f[i].max) {
            errmsg_at(err, errlen, NULL, "config %s = %d is out of range (1..%d)", f[i].name, v,
                      f[i].max);
            return -1;
        }
    }
    if (c->n_heads % c->n_kv_heads) {
        errmsg_at(err, errlen, NULL, "config n_heads %d is not a multiple of n_kv_heads %d",
                  c->n_heads, c->n_kv_heads);
        return -1;
    }
    if (c->head_dim % 2) {
        errmsg_at(err, errlen, NULL, "config head_dim %d is odd (RoPE rotates pairs)", c->head_dim);
        return -1;
    }
    if ((long long)c->n_heads * c->head_dim > MODEL_MAX_DIM) {
        errmsg_at(err, errlen, NULL, "config n_heads * head_dim = %lld is too large",
                  (long long)c->n_heads * c->head_dim);
        return -1;
    }
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta)) {
        errmsg_at(err, errlen, NULL, "config rope_theta %g must be positive", c->rope_theta);
        return -1;
    }
    if (!(c->rms_eps > 0) || !(c->rms_eps < 1)) {
        errmsg_at(err, errlen, NULL, "config rms_eps %g must be in (0, 1)", c->rms_eps);
        return -1;
    }
    if (c->rope_scaling == MODEL_ROPE_SCALING_LLAMA3 &&
        (!(c->rope_factor > 0) || !(c->rope_low_freq > 0) ||
         !(c->rope_high_freq > c->rope_low_freq) || c->rope_orig_max_pos <= 0)) {
        errmsg_at(err, errlen, NULL,
                  "config llama3 rope scaling needs factor > 0, 0 < low_freq_factor < "
                  "high_freq_factor and original_max_position_embeddings > 0");
        return -1;
    }
    if ((c->rope_scaling == MODEL_ROPE_SCALING_LINEAR ||
         c->rope_scaling == MODEL_ROPE_SCALING_DYNAMIC) &&
        !(c->rope_factor >= 1)) {
        errmsg_at(err, errlen, NULL, "config rope scaling factor %g must be >= 1", c->rope_factor);
        return -1;
    }
    if (c->rope_scaling == MODEL_ROPE_SCALING_YARN &&
        (!(c->rope_factor > 0) || c->rope_orig_max_pos <= 0 || !(c->rope_beta_fast > 0) ||
         !(c->rope_beta_slow > 0) || !(c->rope_attn_factor > 0) ||
         !isfinite(c->rope_attn_factor))) {
        errmsg_at(err, errlen, NULL,
                  "config yarn rope scaling needs factor, beta_fast, beta_slow and "
                  "attention_factor > 0 and original_max_position_embeddings > 0");
        return -1;
    }
    if (c->rope_scaling < MODEL_ROPE_SCALING_NONE || c->rope_scaling > MODEL_ROPE_SCALING_YARN) {
        errmsg_at(err, errlen, NULL, "config rope_scaling %d is unknown", (int)c->rope_scaling);
        return -1;
    }
    if (c->act != MODEL_ACT_SILU && c->act != MODEL_ACT_GELU_TANH) {
        errmsg_at(err, errlen, NULL, "config activation %d is unknown", (int)c->act);
        return -1;
    }
    if (c->sliding_window < 0 || c->sliding_pattern < 0 || c->sliding_pattern > (1 << 12) ||
        c->sliding_from < 0 || c->sliding_from > c->n_layers) {
        errmsg_at(err, errlen, NULL,
                  "config sliding_window %d / sliding_pattern %d / sliding_from %d out of range",
                  c->sliding_window, c->sliding_pattern, c->sliding_from);
        return -1;
    }
    static const struct {
        const char *name;
        size_t off;
    } g[] = {
        {"embed_scale", offsetof(struct model_config, embed_scale)},
        {"attn_scale", offsetof(struct model_config, attn_scale)},
        {"final_softcap", offsetof(struct model_config, final_softcap)},
        {"rope_local_theta", offsetof(struct model_config, rope_local_theta)},
    };
    for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
        float v = *(const float *)((const char *)c + g[i].off);
        if (!(v >= 0) || !isfinite(v)) {
            errmsg_at(err, errlen, NULL, "config %s %g must be >= 0 and finite", g[i].name, v);
            return -1;
        }
    }
    return 0;
}

int model_layer_is_local(const struct model_config *c, int l) {
    if (c->sliding_window <= 0 || l < c->sliding_from) return 0;
    if (c->sliding_pattern <= 0) return 1;
    return l % c->sliding_pattern != c->sliding_pattern - 1;
}

float model_attn_scale(const struct model_config *c) {
    float s = c->attn_scale > 0 ? c->attn_scale : 1.0f / sqrtf((float)c->head_dim);
    if (c->rope_scaling == MODEL_ROPE_SCALING_YARN) s *= c->rope_attn_factor * c->rope_attn_factor;
    return s;
}
