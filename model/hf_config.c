/* hf_config.c — Hugging Face config.json → struct model_config.
 *
 * Reads the LlamaConfig fields flashgen needs, applies transformers' defaults where a field is
 * absent, and rejects what the forward pass does not implement (attention biases, rope scaling
 * other than llama3, activations other than SiLU, architectures other than Llama and Mistral),
 * naming the field.
 */
#include "model/model.h"

#include "model/errmsg.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An integer field: 1 found, 0 absent or null, -1 bad (err written). */
static int hf_int(const cJSON *j, const char *key, int *v, const char *path, char *err,
                  size_t errlen) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!e || cJSON_IsNull(e)) return 0;
    if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) ||
        fabs(e->valuedouble) > 2147483647.0) {
        errmsg_at(err, errlen, path, "'%s' is not an integer", key);
        return -1;
    }
    *v = (int)e->valuedouble;
    return 1;
}

static int hf_num(const cJSON *j, const char *key, double *v, const char *path, char *err,
                  size_t errlen) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!e || cJSON_IsNull(e)) return 0;
    if (!cJSON_IsNumber(e)) {
        errmsg_at(err, errlen, path, "'%s' is not a number", key);
        return -1;
    }
    *v = e->valuedouble;
    return 1;
}

static int hf_bool(const cJSON *j, const char *key, int *v, const char *path, char *err,
                   size_t errlen) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!e || cJSON_IsNull(e)) return 0;
    if (!cJSON_IsBool(e)) {
        errmsg_at(err, errlen, path, "'%s' is not a boolean", key);
        return -1;
    }
    *v = cJSON_IsTrue(e);
    return 1;
}

/* rope_scaling (or transformers 5's rope_parameters) → cfg. */
static int hf_rope(const cJSON *rs, struct model_config *cfg, const char *path, char *err,
                   size_t errlen) {
    if (!rs || cJSON_IsNull(rs)) return 0;
    if (!cJSON_IsObject(rs)) {
        errmsg_at(err, errlen, path, "'rope_scaling' is not an object");
        return -1;
    }
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!ty) ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const char *type = cJSON_IsString(ty) ? ty->valuestring : NULL;
    double theta;
    if (hf_num(rs, "rope_theta", &theta, path, err, errlen) < 0) return -1;
    if (cJSON_GetObjectItemCaseSensitive(rs, "rope_theta")) cfg->rope_theta = (float)theta;
    if (!type || !strcmp(type, "default")) return 0;
    if (strcmp(type, "llama3")) {
        errmsg_at(err, errlen, path, "rope scaling type '%s' is not supported (only llama3)", type);
        return -1;
    }
    double factor = 0, low = 0, high = 0;
    int orig = 0;
    int rc[4] = {hf_num(rs, "factor", &factor, path, err, errlen),
                 hf_num(rs, "low_freq_factor", &low, path, err, errlen),
                 hf_num(rs, "high_freq_factor", &high, path, err, errlen),
                 hf_int(rs, "original_max_position_embeddings", &orig, path, err, errlen)};
    for (int i = 0; i < 4; i++)
        if (rc[i] < 0) return -1;
    if (!rc[0] || !rc[1] || !rc[2] || !rc[3]) {
        errmsg_at(err, errlen, path,
                  "llama3 rope_scaling needs factor, low_freq_factor, high_freq_factor and "
                  "original_max_position_embeddings");
        return -1;
    }
    cfg->rope_scaling = MODEL_ROPE_SCALING_LLAMA3;
    cfg->rope_factor = (float)factor;
    cfg->rope_low_freq = (float)low;
    cfg->rope_high_freq = (float)high;
    cfg->rope_orig_max_pos = orig;
    return 0;
}

static int hf_parse(const cJSON *j, struct model_config *cfg, const char *path, char *err,
                    size_t errlen) {
    memset(cfg, 0, sizeof(*cfg));
    strcpy(cfg->arch, "llama");
    if (!cJSON_IsObject(j)) {
        errmsg_at(err, errlen, path, "not a JSON object");
        return -1;
    }
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(j, "architectures");
    const char *arch =
        cJSON_IsArray(archs) && cJSON_IsString(archs->child) ? archs->child->valuestring : NULL;
    if (!arch) {
        const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
        arch = cJSON_IsString(mt) ? mt->valuestring : "(none)";
    }
    /* Exactly the architectures the forward pass implements: Qwen2 (q/k/v biases) is not one. */
    static const char *const archs_ok[] = {"LlamaForCausalLM", "MistralForCausalLM", "llama",
                                           "mistral"};
    int ok = 0;
    for (size_t i = 0; i < sizeof(archs_ok) / sizeof(archs_ok[0]); i++)
        ok |= !strcmp(arch, archs_ok[i]);
    if (!ok) {
        errmsg_at(err, errlen, path,
                  "architecture '%s' is not supported (flashgen loads LlamaForCausalLM and "
                  "MistralForCausalLM)",
                  arch);
        return -1;
    }
    int bias = 0;
    if (hf_bool(j, "attention_bias", &bias, path, err, errlen) < 0) return -1;
    if (bias) {
        errmsg_at(err, errlen, path, "'attention_bias' true is not supported");
        return -1;
    }
    if (hf_bool(j, "mlp_bias", &bias, path, err, errlen) < 0) return -1;
    if (bias) {
        errmsg_at(err, errlen, path, "'mlp_bias' true is not supported");
        return -1;
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu"))) {
        errmsg_at(err, errlen, path, "'hidden_act' must be \"silu\"");
        return -1;
    }

    static const struct {
        const char *key;
        size_t off;
    } req[] = {
        {"hidden_size", offsetof(struct model_config, dim)},
        {"intermediate_size", offsetof(struct model_config, ffn_dim)},
        {"num_hidden_layers", offsetof(struct model_config, n_layers)},
        {"num_attention_heads", offsetof(struct model_config, n_heads)},
        {"vocab_size", offsetof(struct model_config, vocab_size)},
    };
    for (size_t i = 0; i < sizeof(req) / sizeof(req[0]); i++) {
        int rc = hf_int(j, req[i].key, (int *)((char *)cfg + req[i].off), path, err, errlen);
        if (rc < 0) return -1;
        if (rc == 0) {
            errmsg_at(err, errlen, path, "missing '%s'", req[i].key);
            return -1;
        }
    }
    cfg->n_kv_heads = cfg->n_heads;
    if (hf_int(j, "num_key_value_heads", &cfg->n_kv_heads, path, err, errlen) < 0) return -1;
    int hd = hf_int(j, "head_dim", &cfg->head_dim, path, err, errlen);
    if (hd < 0) return -1;
    if (hd == 0) {
        if (cfg->n_heads <= 0 || cfg->dim % cfg->n_heads) {
            errmsg_at(
                err, errlen, path,
                "hidden_size %d is not a multiple of num_attention_heads %d (and no head_dim)",
                cfg->dim, cfg->n_heads);
            return -1;
        }
        cfg->head_dim = cfg->dim / cfg->n_heads;
    }
    cfg->max_seq_len = 2048; /* LlamaConfig default */
    if (hf_int(j, "max_position_embeddings", &cfg->max_seq_len, path, err, errlen) < 0) return -1;
    double theta = 10000.0, eps = 1e-6; /* LlamaConfig defaults */
    if (hf_num(j, "rope_theta", &theta, path, err, errlen) < 0 ||
        hf_num(j, "rms_norm_eps", &eps, path, err, errlen) < 0)
        return -1;
    cfg->rope_theta = (float)theta;
    cfg->rms_eps = (float)eps;
    cfg->tied_embeddings = 0; /* LlamaConfig default; the loader also ties when lm_head is absent */
    if (hf_bool(j, "tie_word_embeddings", &cfg->tied_embeddings, path, err, errlen) < 0) return -1;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "rope_scaling");
    if (!rs || cJSON_IsNull(rs)) rs = cJSON_GetObjectItemCaseSensitive(j, "rope_parameters");
    if (hf_rope(rs, cfg, path, err, errlen)) return -1;
    double prf = 1.0;
    if (hf_num(j, "partial_rotary_factor", &prf, path, err, errlen) < 0) return -1;
    if (prf != 1.0) {
        errmsg_at(err, errlen, path, "'partial_rotary_factor' %g is not supported", prf);
        return -1;
    }
    char verr[256];
    if (model_config_validate(cfg, verr, sizeof(verr))) {
        errmsg_at(err, errlen, path, "%s", verr);
        return -1;
    }
    return 0;
}

int hf_config_load(const char *path, struct model_config *cfg, char *err, size_t errlen) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        errmsg_at(err, errlen, path, "cannot open: %s", strerror(errno));
        return -1;
    }
    char *buf = NULL;
    long n = -1;
    if (fseek(fp, 0, SEEK_END) || (n = ftell(fp)) < 0 || n > (16 << 20) || fseek(fp, 0, SEEK_SET) ||
        !(buf = malloc((size_t)n + 1)) || fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        fclose(fp);
        free(buf);
        errmsg_at(err, errlen, path, n > (16 << 20) ? "file too large" : "read failed");
        return -1;
    }
    fclose(fp);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    if (!j) {
        errmsg_at(err, errlen, path, "invalid JSON");
        return -1;
    }
    int rc = hf_parse(j, cfg, path, err, errlen);
    cJSON_Delete(j);
    return rc;
}
