/* hf_config.c — Hugging Face config.json → struct model_config.
 *
 * Reads the fields flashgen needs for Llama, Mistral, Qwen2 and Gemma 3 (text), applies
 * transformers' per-family defaults where a field is absent, sets the family switches
 * (model.h), and rejects what the forward pass does not implement (Llama's o_proj bias, MLP
 * biases, other activations, window layouts other than "one global every N" or "global layers
 * first" (Qwen2's max_window_layers), other rope types
 * and architectures), naming the field.
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

/* One rope_scaling object (or one of transformers 5's rope_parameters) → cfg. LOCAL: this is the
 * sliding layers' entry (Gemma 3), whose only allowed content is a default type and a base. */
static int hf_rope(const cJSON *rs, struct model_config *cfg, int local, const char *path,
                   char *err, size_t errlen) {
    if (!rs || cJSON_IsNull(rs)) return 0;
    if (!cJSON_IsObject(rs)) {
        errmsg_at(err, errlen, path, "'rope_scaling' is not an object");
        return -1;
    }
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!ty) ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const char *type = cJSON_IsString(ty) ? ty->valuestring : NULL;
    double theta;
    int has_theta = hf_num(rs, "rope_theta", &theta, path, err, errlen);
    if (has_theta < 0) return -1;
    if (has_theta) *(local ? &cfg->rope_local_theta : &cfg->rope_theta) = (float)theta;
    if (!type || !strcmp(type, "default")) return 0;
    if (local) {
        errmsg_at(err, errlen, path, "rope type '%s' on the sliding layers is not supported", type);
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
    cfg->rope_factor = (float)factor;
    if (!strcmp(type, "linear") || !strcmp(type, "dynamic")) {
        if (!rc[0]) {
            errmsg_at(err, errlen, path, "%s rope_scaling needs factor", type);
            return -1;
        }
        if (!strcmp(type, "linear")) {
            cfg->rope_scaling = MODEL_ROPE_SCALING_LINEAR;
        } else {
            /* transformers changes the base only past the original context: cap the context
             * there and the frequencies are the default ones at every position we accept */
            cfg->rope_scaling = MODEL_ROPE_SCALING_DYNAMIC;
            cfg->rope_orig_max_pos = rc[3] ? orig : cfg->max_seq_len;
            if (cfg->rope_orig_max_pos > 0 && cfg->max_seq_len > cfg->rope_orig_max_pos)
                cfg->max_seq_len = cfg->rope_orig_max_pos;
        }
        return 0;
    }
    if (!strcmp(type, "yarn")) {
        double bf = 32, bs = 1, af = 0, ms = 0, msa = 0;
        int truncate = 1;
        if (!rc[0] || hf_num(rs, "beta_fast", &bf, path, err, errlen) < 0 ||
            hf_num(rs, "beta_slow", &bs, path, err, errlen) < 0 ||
            hf_num(rs, "attention_factor", &af, path, err, errlen) < 0 ||
            hf_num(rs, "mscale", &ms, path, err, errlen) < 0 ||
            hf_num(rs, "mscale_all_dim", &msa, path, err, errlen) < 0 ||
            hf_bool(rs, "truncate", &truncate, path, err, errlen) < 0) {
            if (!rc[0]) errmsg_at(err, errlen, path, "yarn rope_scaling needs factor");
            return -1;
        }
        /* transformers' _compute_yarn_parameters: mscale(s, m) = 0.1 m ln s + 1 (1 for s <= 1) */
#define YARN_MSCALE(s, m) ((s) <= 1 ? 1.0 : 0.1 * (m)*log(s) + 1.0)
        if (af == 0)
            af = ms != 0 && msa != 0 ? YARN_MSCALE(factor, ms) / YARN_MSCALE(factor, msa)
                                     : YARN_MSCALE(factor, 1.0);
#undef YARN_MSCALE
        cfg->rope_scaling = MODEL_ROPE_SCALING_YARN;
        cfg->rope_orig_max_pos = rc[3] ? orig : cfg->max_seq_len;
        cfg->rope_beta_fast = (float)bf;
        cfg->rope_beta_slow = (float)bs;
        cfg->rope_attn_factor = (float)af;
        cfg->rope_yarn_truncate = truncate;
        return 0;
    }
    if (strcmp(type, "llama3")) {
        errmsg_at(err, errlen, path,
                  "rope scaling type '%s' is not supported (llama3, linear, dynamic, yarn)", type);
        return -1;
    }
    if (!rc[0] || !rc[1] || !rc[2] || !rc[3]) {
        errmsg_at(err, errlen, path,
                  "llama3 rope_scaling needs factor, low_freq_factor, high_freq_factor and "
                  "original_max_position_embeddings");
        return -1;
    }
    cfg->rope_scaling = MODEL_ROPE_SCALING_LLAMA3;
    cfg->rope_low_freq = (float)low;
    cfg->rope_high_freq = (float)high;
    cfg->rope_orig_max_pos = orig;
    return 0;
}

/* rope_scaling, or transformers 5's rope_parameters: one object, or (Gemma 3) one per layer type.
 */
static int hf_rope_all(const cJSON *j, struct model_config *cfg, const char *path, char *err,
                       size_t errlen) {
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "rope_scaling");
    if (!rs || cJSON_IsNull(rs)) rs = cJSON_GetObjectItemCaseSensitive(j, "rope_parameters");
    const cJSON *full =
        cJSON_IsObject(rs) ? cJSON_GetObjectItemCaseSensitive(rs, "full_attention") : NULL;
    const cJSON *slide =
        cJSON_IsObject(rs) ? cJSON_GetObjectItemCaseSensitive(rs, "sliding_attention") : NULL;
    if (full || slide)
        return hf_rope(full, cfg, 0, path, err, errlen) || hf_rope(slide, cfg, 1, path, err, errlen)
                   ? -1
                   : 0;
    return hf_rope(rs, cfg, 0, path, err, errlen);
}

/* layer_types (a list of "sliding_attention" / "full_attention") → sliding_pattern; only the
 * layouts model_layer_is_local expresses are accepted. Returns 1 set, 0 absent, -1 error. */
static int hf_layer_types(const cJSON *j, struct model_config *cfg, const char *path, char *err,
                          size_t errlen) {
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(j, "layer_types");
    if (!lt || cJSON_IsNull(lt)) return 0;
    int n = cJSON_IsArray(lt) ? cJSON_GetArraySize(lt) : -1;
    if (n != cfg->n_layers) {
        errmsg_at(err, errlen, path, "'layer_types' is not a list of num_hidden_layers (%d) names",
                  cfg->n_layers);
        return -1;
    }
    int n_local = 0, first_global = -1;
    for (int l = 0; l < n; l++) {
        const cJSON *e = cJSON_GetArrayItem(lt, l);
        const char *v = cJSON_IsString(e) ? e->valuestring : "";
        if (!strcmp(v, "sliding_attention"))
            n_local++;
        else if (!strcmp(v, "full_attention")) {
            if (first_global < 0) first_global = l;
        } else {
            errmsg_at(err, errlen, path, "layer_types[%d] '%.40s' is not supported", l, v);
            return -1;
        }
    }
    if (n_local == 0) { /* every layer global: no window */
        cfg->sliding_window = 0;
        return 1;
    }
    cfg->sliding_from = 0;
    /* Qwen2's layout: the first max_window_layers global, every later one local */
    if (first_global == 0 && n_local < n &&
        !strcmp(cJSON_GetArrayItem(lt, n - n_local)->valuestring, "sliding_attention")) {
        int k = n - n_local, ok = 1;
        for (int l = 0; l < n; l++)
            ok &= !strcmp(cJSON_GetArrayItem(lt, l)->valuestring,
                          l < k ? "full_attention" : "sliding_attention");
        if (ok) {
            cfg->sliding_from = k;
            cfg->sliding_pattern = 0;
            return 1;
        }
    }
    cfg->sliding_pattern = n_local == n ? 0 : first_global + 1;
    for (int l = 0; l < n; l++) {
        int local = !strcmp(cJSON_GetArrayItem(lt, l)->valuestring, "sliding_attention");
        int want =
            cfg->sliding_pattern == 0 || l % cfg->sliding_pattern != cfg->sliding_pattern - 1;
        if (local != want) {
            errmsg_at(err, errlen, path,
                      "layer_types: layer %d breaks the pattern of one global layer every %d "
                      "(or global layers first, then local ones; not supported)",
                      l, cfg->sliding_pattern);
            return -1;
        }
    }
    return 1;
}

enum hf_family { HF_LLAMA, HF_MISTRAL, HF_QWEN2, HF_GEMMA3 };

static int hf_parse(const cJSON *j, struct model_config *cfg, const char *path, char *err,
                    size_t errlen) {
    memset(cfg, 0, sizeof(*cfg));
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
    /* Exactly the architectures the forward pass implements. */
    static const struct {
        const char *name;
        enum hf_family fam;
        int multimodal; /* the text model is under text_config */
    } archs_ok[] = {
        {"LlamaForCausalLM", HF_LLAMA, 0},
        {"llama", HF_LLAMA, 0},
        {"MistralForCausalLM", HF_MISTRAL, 0},
        {"mistral", HF_MISTRAL, 0},
        {"Qwen2ForCausalLM", HF_QWEN2, 0},
        {"qwen2", HF_QWEN2, 0},
        {"Gemma3ForCausalLM", HF_GEMMA3, 0},
        {"gemma3_text", HF_GEMMA3, 0},
        {"Gemma3ForConditionalGeneration", HF_GEMMA3, 1},
        {"gemma3", HF_GEMMA3, 1},
    };
    int found = -1;
    for (size_t i = 0; i < sizeof(archs_ok) / sizeof(archs_ok[0]); i++)
        if (!strcmp(arch, archs_ok[i].name)) found = (int)i;
    if (found < 0) {
        errmsg_at(err, errlen, path,
                  "architecture '%s' is not supported (flashgen loads LlamaForCausalLM, "
                  "MistralForCausalLM, Qwen2ForCausalLM, Gemma3ForCausalLM and "
                  "Gemma3ForConditionalGeneration's text model)",
                  arch);
        return -1;
    }
    enum hf_family fam = archs_ok[found].fam;
    if (archs_ok[found].multimodal) {
        j = cJSON_GetObjectItemCaseSensitive(j, "text_config");
        if (!cJSON_IsObject(j)) {
            errmsg_at(err, errlen, path, "'%s' needs a 'text_config' object", arch);
            return -1;
        }
    }
    static const char *const fam_names[] = {"llama", "mistral", "qwen2", "gemma3"};
    strcpy(cfg->arch, fam_names[fam]);
    int gemma = fam == HF_GEMMA3;

    int bias = 0;
    if (hf_bool(j, "attention_bias", &bias, path, err, errlen) < 0) return -1;
    if (bias) { /* Llama's attention_bias covers o_proj as well: not the Qwen2 layout */
        errmsg_at(err, errlen, path, "'attention_bias' true is not supported");
        return -1;
    }
    if (hf_bool(j, "mlp_bias", &bias, path, err, errlen) < 0) return -1;
    if (bias) {
        errmsg_at(err, errlen, path, "'mlp_bias' true is not supported");
        return -1;
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "hidden_activation");
    if (!act || cJSON_IsNull(act)) act = cJSON_GetObjectItemCaseSensitive(j, "hidden_act");
    const char *want_act = gemma ? "gelu_pytorch_tanh" : "silu";
    if (act && !cJSON_IsNull(act) && (!cJSON_IsString(act) || strcmp(act->valuestring, want_act))) {
        errmsg_at(err, errlen, path, "'hidden_act' must be \"%s\" for %s", want_act, cfg->arch);
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
    if (hd == 0 && gemma) {
        cfg->head_dim = 256; /* Gemma3TextConfig default */
    } else if (hd == 0) {
        if (cfg->n_heads <= 0 || cfg->dim % cfg->n_heads) {
            errmsg_at(
                err, errlen, path,
                "hidden_size %d is not a multiple of num_attention_heads %d (and no head_dim)",
                cfg->dim, cfg->n_heads);
            return -1;
        }
        cfg->head_dim = cfg->dim / cfg->n_heads;
    }
    /* transformers' defaults per family (LlamaConfig, MistralConfig, Qwen2Config,
     * Gemma3TextConfig) */
    static const struct {
        int max_pos;
        double theta, eps;
        int tied;
    } def[] = {
        {2048, 10000.0, 1e-6, 0},
        {4096 * 32, 10000.0, 1e-6, 0},
        {32768, 10000.0, 1e-6, 0},
        {131072, 1000000.0, 1e-6, 1},
    };
    cfg->max_seq_len = def[fam].max_pos;
    if (hf_int(j, "max_position_embeddings", &cfg->max_seq_len, path, err, errlen) < 0) return -1;
    double theta = def[fam].theta, eps = def[fam].eps;
    if (hf_num(j, "rope_theta", &theta, path, err, errlen) < 0 ||
        hf_num(j, "rms_norm_eps", &eps, path, err, errlen) < 0)
        return -1;
    cfg->rope_theta = (float)theta;
    cfg->rms_eps = (float)eps;
    cfg->tied_embeddings = def[fam].tied; /* the loader also ties when lm_head is absent */
    if (hf_bool(j, "tie_word_embeddings", &cfg->tied_embeddings, path, err, errlen) < 0) return -1;

    cfg->attn_bias = fam == HF_QWEN2; /* Qwen2's q/k/v projections always have biases */
    if (gemma) {
        double local = 10000.0, qpas = 256.0;
        if (hf_num(j, "rope_local_base_freq", &local, path, err, errlen) < 0 ||
            hf_num(j, "query_pre_attn_scalar", &qpas, path, err, errlen) < 0)
            return -1;
        if (!(qpas > 0)) {
            errmsg_at(err, errlen, path, "'query_pre_attn_scalar' %g must be positive", qpas);
            return -1;
        }
        cfg->rope_local_theta = (float)local;
        cfg->attn_scale = (float)(1.0 / sqrt(qpas));
        cfg->act = MODEL_ACT_GELU_TANH;
        cfg->qk_norm = 1;
        cfg->post_norms = 1;
        cfg->norm_plus_one = 1;
        cfg->embed_scale = (float)sqrt((double)cfg->dim);
        cfg->sliding_window = 4096;
        cfg->sliding_pattern = 6;
        if (hf_int(j, "sliding_window_pattern", &cfg->sliding_pattern, path, err, errlen) < 0 ||
            hf_int(j, "_sliding_window_pattern", &cfg->sliding_pattern, path, err, errlen) < 0)
            return -1;
        double cap = 0;
        if (hf_num(j, "final_logit_softcapping", &cap, path, err, errlen) < 0) return -1;
        cfg->final_softcap = (float)cap;
        int bidi = 0;
        if (hf_bool(j, "use_bidirectional_attention", &bidi, path, err, errlen) < 0) return -1;
        if (bidi) {
            errmsg_at(err, errlen, path, "'use_bidirectional_attention' true is not supported");
            return -1;
        }
        if (hf_num(j, "attn_logit_softcapping", &cap, path, err, errlen) < 0) return -1;
        if (cJSON_GetObjectItemCaseSensitive(j, "attn_logit_softcapping") &&
            !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "attn_logit_softcapping"))) {
            errmsg_at(err, errlen, path, "'attn_logit_softcapping' is not supported");
            return -1;
        }
    }
    if (fam == HF_MISTRAL || gemma) {
        /* Mistral: every layer windowed when sliding_window is set (null: none) */
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(j, "sliding_window");
        cfg->sliding_window = sw && cJSON_IsNull(sw) ? 0 : 4096; /* both configs' default */
        if (hf_int(j, "sliding_window", &cfg->sliding_window, path, err, errlen) < 0) return -1;
    }
    if (fam == HF_QWEN2) {
        /* Qwen2Config: sliding_window counts only with use_sliding_window, and then (without
         * layer_types) layers from max_window_layers on are local, the ones below global */
        int use = 0, mwl = 28; /* Qwen2Config's default max_window_layers */
        if (hf_bool(j, "use_sliding_window", &use, path, err, errlen) < 0) return -1;
        if (use) {
            const cJSON *sw = cJSON_GetObjectItemCaseSensitive(j, "sliding_window");
            cfg->sliding_window = sw && cJSON_IsNull(sw) ? 0 : 4096; /* its default */
            if (hf_int(j, "sliding_window", &cfg->sliding_window, path, err, errlen) < 0 ||
                hf_int(j, "max_window_layers", &mwl, path, err, errlen) < 0)
                return -1;
            if (mwl < 0) {
                errmsg_at(err, errlen, path, "'max_window_layers' %d is negative", mwl);
                return -1;
            }
            cfg->sliding_from = mwl < cfg->n_layers ? mwl : cfg->n_layers;
        }
    }
    if (cfg->sliding_window > 0 && hf_layer_types(j, cfg, path, err, errlen) < 0) return -1;
    if (hf_rope_all(j, cfg, path, err, errlen)) return -1;
    if (gemma && cfg->rope_local_theta <= 0) cfg->rope_local_theta = 10000.0f;
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

cJSON *hf_json_read(const char *path, char *err, size_t errlen) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        errmsg_at(err, errlen, path, "cannot open: %s", strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    long n = -1;
    if (fseek(fp, 0, SEEK_END) || (n = ftell(fp)) < 0 || n > (16 << 20) || fseek(fp, 0, SEEK_SET) ||
        !(buf = malloc((size_t)n + 1)) || fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        fclose(fp);
        free(buf);
        errmsg_at(err, errlen, path, n > (16 << 20) ? "file too large" : "read failed");
        return NULL;
    }
    fclose(fp);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    if (!j) {
        errmsg_at(err, errlen, path, "invalid JSON");
        return NULL;
    }
    return j;
}

int hf_config_load(const char *path, struct model_config *cfg, char *err, size_t errlen) {
    cJSON *j = hf_json_read(path, err, errlen);
    if (!j) return -1;
    int rc = hf_parse(j, cfg, path, err, errlen);
    cJSON_Delete(j);
    return rc;
}
