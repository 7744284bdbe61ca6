/* fp8_ckpt.c — FP8 (e4m3) checkpoints: quantization_config, weight scales, dequantization.
 *
 * The config decides whether F8_E4M3 tensors may appear at all and refuses the schemes whose
 * tensors mean something else (int8, 4-bit, block or group scales, zero points); the tensors
 * decide the rest: every F8_E4M3 weight the plan reads must bring its weight_scale, whose shape
 * says per tensor or per row; a weight stored in another dtype (the ignore list: lm_head, and the
 * embedding, which is no Linear) loads as that dtype. Layout and sources: fp8_ckpt.h, README.md.
 */
#include "model/fp8_ckpt.h"

#include "model/errmsg.h"
#include "model/model.h" /* hf_json_read */

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- config.json ------------------------------------------------------------------------------ */

/* A string field of J, or NULL when absent or null; *bad set when present and not a string. */
static const char *fc_str(const cJSON *j, const char *key, int *bad) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!e || cJSON_IsNull(e)) return NULL;
    if (!cJSON_IsString(e)) {
        *bad = 1;
        return NULL;
    }
    return e->valuestring;
}

static int fc_present(const cJSON *j, const char *key) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, key);
    return e && !cJSON_IsNull(e);
}

/* The ignore list (an array of strings) into q->ignore, shortened with "…" to fit. */
static int fc_ignore(const cJSON *arr, struct fp8_ckpt *q, const char *path, const char *key,
                     char *err, size_t errlen) {
    if (!arr || cJSON_IsNull(arr)) return 0;
    if (!cJSON_IsArray(arr)) {
        errmsg_at(err, errlen, path, "quantization_config.%s is not a list", key);
        return -1;
    }
    const cJSON *e;
    size_t cap = sizeof q->ignore, n = 0;
    cJSON_ArrayForEach(e, arr) {
        if (!cJSON_IsString(e)) {
            errmsg_at(err, errlen, path, "quantization_config.%s has an entry that is not a string",
                      key);
            return -1;
        }
        size_t need = strlen(e->valuestring) + (n ? 2 : 0);
        if (n + need + 4 >= cap) {
            snprintf(q->ignore + n, cap - n, "%s...", n ? ", " : "");
            return 0;
        }
        n += (size_t)snprintf(q->ignore + n, cap - n, "%s%s", n ? ", " : "", e->valuestring);
    }
    return 0;
}

/* compressed-tensors formats whose weights are the plain e4m3 tensors (the other formats pack
 * or compress them: pack-quantized, int-quantized, marlin-24, sparse-*, nvfp4-pack-quantized). */
static int fc_format_ok(const char *f) {
    return !strcmp(f, "float-quantized") || !strcmp(f, "naive-quantized");
}

/* One config group of compressed-tensors (NAME: its key) into Q. */
static int fc_group(const cJSON *g, const char *name, const char *top_format, struct fp8_ckpt *q,
                    const char *path, char *err, size_t errlen) {
    if (!cJSON_IsObject(g)) {
        errmsg_at(err, errlen, path, "quantization_config.config_groups.%s is not an object", name);
        return -1;
    }
    int bad = 0;
    const char *gf = fc_str(g, "format", &bad);
    if (bad || (gf && !fc_format_ok(gf)) || (!gf && !top_format)) {
        errmsg_at(err, errlen, path,
                  "quantization_config.config_groups.%s.format is %s%s%s: flashgen reads "
                  "'float-quantized' and 'naive-quantized' FP8 checkpoints",
                  name, gf ? "'" : "", gf ? gf : "missing", gf ? "'" : "");
        return -1;
    }
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(g, "weights");
    if (w && !cJSON_IsNull(w)) {
        if (!cJSON_IsObject(w)) {
            errmsg_at(err, errlen, path,
                      "quantization_config.config_groups.%s.weights is not an object", name);
            return -1;
        }
        const cJSON *nb = cJSON_GetObjectItemCaseSensitive(w, "num_bits");
        if (!cJSON_IsNumber(nb) || nb->valuedouble != 8) {
            char got[32] = "not a number";
            if (cJSON_IsNumber(nb)) snprintf(got, sizeof got, "%g", nb->valuedouble);
            errmsg_at(err, errlen, path,
                      "quantization_config.config_groups.%s.weights.num_bits is %s: flashgen "
                      "reads 8-bit (FP8 e4m3) weights only",
                      name, got);
            return -1;
        }
        const char *ty = fc_str(w, "type", &bad);
        if (bad || !ty || strcmp(ty, "float")) {
            errmsg_at(err, errlen, path,
                      "quantization_config.config_groups.%s.weights.type is '%s': flashgen reads "
                      "float (FP8 e4m3) weights only, not int8",
                      name, ty ? ty : "missing");
            return -1;
        }
        const char *st = fc_str(w, "strategy", &bad);
        if (bad || !st || (strcmp(st, "tensor") && strcmp(st, "channel"))) {
            errmsg_at(err, errlen, path,
                      "quantization_config.config_groups.%s.weights.strategy is '%s': flashgen "
                      "reads per-tensor ('tensor') and per-channel ('channel') weight scales, not "
                      "block or group scales",
                      name, st ? st : "missing");
            return -1;
        }
        const cJSON *sym = cJSON_GetObjectItemCaseSensitive(w, "symmetric");
        const cJSON *dyn = cJSON_GetObjectItemCaseSensitive(w, "dynamic");
        if (cJSON_IsFalse(sym) || (dyn && !cJSON_IsNull(dyn) && !cJSON_IsFalse(dyn))) {
            errmsg_at(err, errlen, path,
                      "quantization_config.config_groups.%s.weights: %s weights are not "
                      "supported (symmetric, static scales only)",
                      name, cJSON_IsFalse(sym) ? "asymmetric" : "dynamically quantized");
            return -1;
        }
        if (fc_present(w, "block_structure")) {
            errmsg_at(err, errlen, path,
                      "quantization_config.config_groups.%s.weights.block_structure is set: "
                      "block-wise FP8 scales are not supported",
                      name);
            return -1;
        }
    }
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(g, "input_activations");
    if (a && !cJSON_IsNull(a)) {
        const cJSON *nb = cJSON_IsObject(a) ? cJSON_GetObjectItemCaseSensitive(a, "num_bits") : 0;
        const char *ty = cJSON_IsObject(a) ? fc_str(a, "type", &bad) : NULL;
        if (!cJSON_IsNumber(nb) || nb->valuedouble != 8 || !ty || strcmp(ty, "float")) {
            errmsg_at(err, errlen, path,
                      "quantization_config.config_groups.%s.input_activations: flashgen reads "
                      "FP8 checkpoints with 8-bit float activations (or none)",
                      name);
            return -1;
        }
        const cJSON *dyn = cJSON_GetObjectItemCaseSensitive(a, "dynamic");
        if (cJSON_IsTrue(dyn))
            q->act_dynamic = 1;
        else
            q->act_static = 1;
    }
    return 0;
}

static int fc_compressed_tensors(const cJSON *qc, struct fp8_ckpt *q, const char *path, char *err,
                                 size_t errlen) {
    int bad = 0;
    const char *f = fc_str(qc, "format", &bad);
    if (bad || (f && !fc_format_ok(f) && strcmp(f, "mixed-precision"))) {
        errmsg_at(err, errlen, path,
                  "quantization_config.format is '%s': flashgen reads compressed-tensors "
                  "checkpoints in 'float-quantized' or 'naive-quantized' format (FP8 e4m3 weights)",
                  f ? f : "not a string");
        return -1;
    }
    const char *top = f && fc_format_ok(f) ? f : NULL; /* groups without a format of their own */
    snprintf(q->format, sizeof q->format, "%s", f ? f : "");
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(qc, "sparsity_config");
    if (sp && !cJSON_IsNull(sp)) {
        const char *sf = cJSON_IsObject(sp) ? fc_str(sp, "format", &bad) : NULL;
        if (!sf || strcmp(sf, "dense")) {
            errmsg_at(err, errlen, path,
                      "quantization_config.sparsity_config has format '%s': sparse-compressed "
                      "weights are not supported",
                      sf ? sf : "?");
            return -1;
        }
    }
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(qc, "config_groups");
    if (!cJSON_IsObject(groups) || !groups->child) {
        errmsg_at(err, errlen, path, "quantization_config.config_groups is missing or empty");
        return -1;
    }
    const cJSON *g;
    cJSON_ArrayForEach(g, groups) {
        if (fc_group(g, g->string, top, q, path, err, errlen)) return -1;
    }
    q->kv_scheme = fc_present(qc, "kv_cache_scheme");
    return fc_ignore(cJSON_GetObjectItemCaseSensitive(qc, "ignore"), q, path, "ignore", err,
                     errlen);
}

static int fc_vllm(const cJSON *qc, struct fp8_ckpt *q, const char *path, char *err,
                   size_t errlen) {
    int bad = 0;
    const char *as = fc_str(qc, "activation_scheme", &bad);
    if (bad || (as && strcmp(as, "static") && strcmp(as, "dynamic"))) {
        errmsg_at(err, errlen, path,
                  "quantization_config.activation_scheme is '%s' (expected 'static' or 'dynamic')",
                  as ? as : "not a string");
        return -1;
    }
    if (as && !strcmp(as, "static"))
        q->act_static = 1;
    else
        q->act_dynamic = 1; /* vLLM's Fp8Config default */
    if (fc_present(qc, "weight_block_size")) {
        errmsg_at(err, errlen, path,
                  "quantization_config.weight_block_size is set: block-wise FP8 weights "
                  "(weight_scale_inv per block) are not supported");
        return -1;
    }
    q->kv_scheme = fc_present(qc, "kv_cache_scheme");
    return fc_ignore(cJSON_GetObjectItemCaseSensitive(qc, "ignored_layers"), q, path,
                     "ignored_layers", err, errlen);
}

static int fc_parse(const cJSON *j, struct fp8_ckpt *q, const char *path, char *err,
                    size_t errlen) {
    const char *key = "quantization_config";
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!qc || cJSON_IsNull(qc))
        qc = cJSON_GetObjectItemCaseSensitive(j, key = "compression_config");
    if (!qc || cJSON_IsNull(qc)) return 0;
    if (!cJSON_IsObject(qc)) {
        errmsg_at(err, errlen, path, "%s is not an object", key);
        return -1;
    }
    int bad = 0;
    const char *m = fc_str(qc, "quant_method", &bad);
    if (!strcmp(key, "compression_config") && !m && !bad) m = "compressed-tensors";
    if (m && !strcmp(m, "compressed-tensors")) {
        q->method = FP8_CKPT_COMPRESSED_TENSORS;
        return fc_compressed_tensors(qc, q, path, err, errlen);
    }
    if (m && !strcmp(m, "fp8")) {
        q->method = FP8_CKPT_VLLM;
        return fc_vllm(qc, q, path, err, errlen);
    }
    errmsg_at(err, errlen, path,
              "%s.quant_method is %s%s%s: flashgen loads FP8 checkpoints of quant_method "
              "'compressed-tensors' or 'fp8', and unquantized ones",
              key, m ? "'" : "", m ? m : "missing", m ? "'" : "");
    return -1;
}

int fp8_ckpt_config(const char *config_path, struct fp8_ckpt *q, char *err, size_t errlen) {
    memset(q, 0, sizeof(*q));
    cJSON *j = hf_json_read(config_path, err, errlen);
    if (!j) return -1;
    int rc = cJSON_IsObject(j) ? fc_parse(j, q, config_path, err, errlen) : 0;
    cJSON_Delete(j);
    if (rc) memset(q, 0, sizeof(*q));
    return rc;
}

/* --- tensors ---------------------------------------------------------------------------------- */

static int fc_float_dtype(const char *d) {
    return !strcmp(d, "F32") || !strcmp(d, "F16") || !strcmp(d, "BF16");
}

static void fc_shape(const struct safetensors_tensor *t, char *out, size_t cap) {
    size_t n = (size_t)snprintf(out, cap, "[");
    for (int d = 0; d < t->n_dims && n < cap; d++)
        n += (size_t)snprintf(out + n, cap - n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (n < cap) snprintf(out + n, cap - n, "]");
}

/* One value in every dimension (shape [], [1], [1, 1]): a per-tensor scale. */
static int fc_single(const struct safetensors_tensor *t) {
    return t->n_elems == 1;
}

/* Every element of T finite and > 0; -1 naming the first that is not. */
static int fc_positive(const struct safetensors_tensor *t, const char *file, char *err,
                       size_t errlen) {
    for (uint64_t i = 0; i < t->n_elems; i++) {
        float v = safetensors_value_f32(t, i);
        if (!(v > 0) || !isfinite(v)) {
            errmsg_at(err, errlen, file,
                      "tensor '%s' has value %g at element %llu: a scale must "
                      "be finite and > 0",
                      t->name, v, (unsigned long long)i);
            return -1;
        }
    }
    return 0;
}

/* A zero point next to the weight, if any, must be all zero (the symmetric schemes). */
static int fc_zero_point(const struct safetensors *s, const char *base, const char *suffix,
                         char *err, size_t errlen) {
    char nm[320];
    snprintf(nm, sizeof nm, "%s.%s", base, suffix);
    const struct safetensors_tensor *z = safetensors_find(s, nm);
    if (!z) return 0;
    for (uint64_t i = 0; i < z->n_bytes; i++) {
        int zero =
            safetensors_dtype_supported(z->dtype)
                ? safetensors_value_f32(z, i / (uint64_t)safetensors_dtype_size(z->dtype)) == 0
                : z->data[i] == 0;
        if (!zero) {
            errmsg_at(err, errlen, s->files[z->file].path,
                      "tensor '%s' is not all zero: asymmetric FP8 (zero points) is not supported",
                      nm);
            return -1;
        }
    }
    return 0;
}

/* Add dtype D to the "/"-separated LIST unless it is there. */
static void fc_add_dtype(char *list, size_t cap, const char *d) {
    size_t l = strlen(d);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == l && !strncmp(p, d, l)) return;
        p += n + (e != NULL);
    }
    size_t n = strlen(list);
    snprintf(list + n, cap - n, "%s%s", n ? "/" : "", d);
}

int fp8_ckpt_weight(struct fp8_ckpt *q, const struct safetensors *s,
                    const struct safetensors_tensor *w, int rows, struct fp8_ckpt_weight *out,
                    char *err, size_t errlen) {
    const char *file = s->files[w->file].path;
    memset(out, 0, sizeof(*out));
    if (q->method == FP8_CKPT_NONE) {
        errmsg_at(err, errlen, file,
                  "tensor '%s' is F8_E4M3 but config.json has no quantization_config (FP8 "
                  "checkpoints: quant_method 'compressed-tensors' or 'fp8')",
                  w->name);
        return -1;
    }
    size_t l = strlen(w->name);
    if (l < 7 || strcmp(w->name + l - 7, ".weight") || l - 7 >= 300) {
        errmsg_at(err, errlen, file, "tensor '%s' is F8_E4M3 but is not a '.weight'", w->name);
        return -1;
    }
    char base[300], nm[320];
    memcpy(base, w->name, l - 7);
    base[l - 7] = 0;
    snprintf(nm, sizeof nm, "%s.weight_scale", base);
    const struct safetensors_tensor *sc = safetensors_find(s, nm);
    if (!sc) {
        char inv[320];
        snprintf(inv, sizeof inv, "%s.weight_scale_inv", base);
        errmsg_at(err, errlen, file, "tensor '%s' is F8_E4M3 but '%s' is missing%s", w->name, nm,
                  safetensors_find(s, inv) ? " (it has a block-wise weight_scale_inv, which is "
                                             "not supported)"
                                           : "");
        return -1;
    }
    const char *sfile = s->files[sc->file].path;
    if (!fc_float_dtype(sc->dtype)) {
        errmsg_at(err, errlen, sfile,
                  "tensor '%s' has dtype %s (a weight scale is F32, F16 or BF16)", nm, sc->dtype);
        return -1;
    }
    int per_row = !fc_single(sc);
    if (per_row &&
        !(sc->n_dims == 2 && sc->shape[0] == rows && sc->shape[1] == 1 && w->n_dims == 2)) {
        char got[96], ws[96];
        fc_shape(sc, got, sizeof got);
        fc_shape(w, ws, sizeof ws);
        errmsg_at(err, errlen, sfile,
                  "tensor '%s' has shape %s; for '%s' %s flashgen reads [] or [1] (per tensor) or "
                  "[%d, 1] (per output channel), not block or group scales",
                  nm, got, w->name, ws, rows);
        return -1;
    }
    if (fc_positive(sc, sfile, err, errlen)) return -1;
    snprintf(nm, sizeof nm, "%s.input_scale", base);
    const struct safetensors_tensor *is = safetensors_find(s, nm);
    if (is) {
        const char *ifile = s->files[is->file].path;
        if (!fc_float_dtype(is->dtype) || !fc_single(is)) {
            char got[96];
            fc_shape(is, got, sizeof got);
            errmsg_at(err, errlen, ifile,
                      "tensor '%s' is %s %s; a static activation scale is one F32, F16 or BF16 "
                      "value",
                      nm, is->dtype, got);
            return -1;
        }
        if (fc_positive(is, ifile, err, errlen)) return -1;
    }
    if (fc_zero_point(s, base, "weight_zero_point", err, errlen) ||
        fc_zero_point(s, base, "input_zero_point", err, errlen))
        return -1;
    out->w = w;
    out->scale = sc;
    out->per_row = per_row;
    *(per_row ? &q->n_row_scale : &q->n_tensor_scale) += 1;
    q->n_input_scale += is != NULL;
    fc_add_dtype(q->scale_dtypes, sizeof q->scale_dtypes, sc->dtype);
    return 0;
}

/* W = e4m3(q) · s is one fp32 multiply, correctly rounded. It is exact whenever the product's
 * significand fits in 24 bits and stays a normal fp32: an e4m3 code has at most 4 significant bits,
 * so every BF16 (8 bits) or F16 (11 bits) scale gives the exact product; an F32 scale (24 bits)
 * may not, and then rounds once to nearest even, as numpy's and torch's float32 `q.float() * s`
 * do — the same bits. */
void fp8_ckpt_dequant(const struct fp8_ckpt_weight *fw, int rows, float *dst) {
    float lut[256];
    for (int c = 0; c < 256; c++)
        lut[c] = safetensors_e4m3_to_f32((uint8_t)c);
    uint64_t cols = rows > 0 ? fw->w->n_elems / (uint64_t)rows : 0;
    const uint8_t *src = fw->w->data;
    float s = safetensors_value_f32(fw->scale, 0);
    for (int r = 0; r < rows; r++) {
        if (fw->per_row) s = safetensors_value_f32(fw->scale, (uint64_t)r);
        const uint8_t *x = src + (uint64_t)r * cols;
        float *y = dst + (uint64_t)r * cols;
        for (uint64_t c = 0; c < cols; c++)
            y[c] = lut[x[c]] * s;
    }
}

void fp8_ckpt_plain(struct fp8_ckpt *q, const char *name, const char *dtype) {
    if (!q->n_plain++) snprintf(q->plain, sizeof q->plain, "%s (%s)", name, dtype);
}

void fp8_ckpt_note(const struct fp8_ckpt *q, const char *path, char *out, size_t cap) {
    out[0] = 0;
    int nq = q->n_tensor_scale + q->n_row_scale;
    if (q->method == FP8_CKPT_NONE) return;
    const char *how = q->n_row_scale && q->n_tensor_scale ? "per-tensor and per-channel"
                      : q->n_row_scale                    ? "per-channel"
                                                          : "per-tensor";
    const char *meth = q->method == FP8_CKPT_VLLM ? "quant_method fp8" : "compressed-tensors";
    size_t n;
    if (!nq) {
        snprintf(out, cap,
                 "%s: quantization_config names FP8 (%s) but no weight flashgen reads is F8_E4M3: "
                 "loaded from the dtypes the file has",
                 path, meth);
        return;
    }
    n = (size_t)snprintf(out, cap,
                         "%s: fp8 checkpoint (%s%s%s, %s %s weight scales, %d e4m3 weights", path,
                         meth, q->format[0] ? " " : "", q->format, how, q->scale_dtypes, nq);
    if (q->n_plain && n < cap)
        n += (size_t)snprintf(out + n, cap - n, "; not quantized, loaded from their dtype: %s",
                              q->plain);
    if (q->n_plain > 1 && n < cap)
        n += (size_t)snprintf(out + n, cap - n, " and %d more", q->n_plain - 1);
    if (q->ignore[0] && n < cap)
        n += (size_t)snprintf(out + n, cap - n, "; ignore list: %s", q->ignore);
    if (n < cap)
        n += (size_t)snprintf(out + n, cap - n,
                              "): e4m3 weights dequantized to fp32 on load; on the GPU, "
                              "--quantization fp8 re-quantizes them per output row and quantizes "
                              "activations dynamically per token");
    if (q->n_input_scale && n < cap)
        n += (size_t)snprintf(out + n, cap - n,
                              " (the %d static input_scale values were checked, finite and > 0, "
                              "and are not used)",
                              q->n_input_scale);
    if (q->kv_scheme && n < cap)
        snprintf(out + n, cap - n, "; kv_cache_scheme's k_scale / v_scale are not used");
}
