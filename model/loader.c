/* loader.c — model_load: GGUF or Hugging Face checkpoint → struct model (fp32 host weights in one
 * arena, config, tokenizer, chat template).
 *
 * Both formats go through one plan: a list of (source tensor, expected shape, destination,
 * Q/K un-permute). The plan is checked completely — names, types, shapes — before the arena is
 * allocated, so a bad file fails fast and no allocation size ever comes from an unchecked count.
 * The canonical layout is Hugging Face's (model.h): GGUF llama attn_q/attn_k rows are
 * un-permuted while dequantizing (inverse of convert_hf_to_gguf.py's permute), so one rotate_half
 * RoPE serves both.
 * With MODEL_LOAD_KEEP_BLOCKS (the CPU backend), GGUF linear weights and the embedding whose type
 * kernels/cpu_quant.c multiplies stay in their file blocks: pointing into the mapping where no
 * row moves (the mapping then lives with the model, its pages shared with the page cache), else
 * copied row by row (the un-permute moves whole rows, so blocks survive it) into a second arena;
 * only norms, biases and the types without a block product become fp32. With
 * MODEL_LOAD_KEEP_FILE (a GPU backend with upload_rows) the F32/F16/BF16 linear weights stay in
 * the mapping unconverted, Q/K still permuted (model.qk_file_order): the backend converts them on
 * their way to the device, so the host never holds an fp32 copy.
 * The conversion runs on every online CPU over row chunks in file order (ld_convert); the
 * loading thread only reports progress.
 */
#include "model/model.h"

#include "kernels/cpu_quant.h"
#include "model/errmsg.h"
#include "model/gguf.h"
#include "model/fp8_ckpt.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LD_ALIGN_FLOATS 16 /* each tensor in the arena starts on a 64-byte boundary */

static double ld_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* --- config -------------------------------------------------------------------------------------
 */

/* YaRN's correction dimension for NUM_ROT rotations over the original context (transformers'
 * _compute_yarn_parameters). */
static double yarn_corr_dim(double num_rot, int dim, double base, double max_pos) {
    return dim * log(max_pos / (num_rot * 2 * M_PI)) / (2 * log(base));
}

void model_rope_freqs(const struct model_config *cfg, float *freqs) {
    const double two_pi = 6.283185307179586;
    int half = cfg->head_dim / 2;
    double lo = 0, hi = 0;
    if (cfg->rope_scaling == MODEL_ROPE_SCALING_YARN) {
        lo = yarn_corr_dim(cfg->rope_beta_fast, cfg->head_dim, cfg->rope_theta,
                           cfg->rope_orig_max_pos);
        hi = yarn_corr_dim(cfg->rope_beta_slow, cfg->head_dim, cfg->rope_theta,
                           cfg->rope_orig_max_pos);
        if (cfg->rope_yarn_truncate) {
            lo = floor(lo);
            hi = ceil(hi);
        }
        if (lo < 0) lo = 0;
        if (hi > cfg->head_dim - 1) hi = cfg->head_dim - 1;
        if (lo == hi) hi += 0.001;
    }
    for (int i = 0; i < half; i++) {
        /* theta^(-2i/d), as transformers computes it (in float32 there; double here) */
        double inv = 1.0 / pow((double)cfg->rope_theta, (2.0 * i) / cfg->head_dim);
        if (cfg->rope_scaling == MODEL_ROPE_SCALING_LLAMA3) {
            double factor = cfg->rope_factor, low = cfg->rope_low_freq, high = cfg->rope_high_freq,
                   L = cfg->rope_orig_max_pos;
            double wl = two_pi / inv;
            if (wl < L / high) {
                /* high frequency: unchanged */
            } else if (wl > L / low) {
                inv = inv / factor;
            } else {
                double smooth = (L / wl - low) / (high - low);
                inv = (1 - smooth) * inv / factor + smooth * inv;
            }
        } else if (cfg->rope_scaling == MODEL_ROPE_SCALING_LINEAR) {
            inv /= cfg->rope_factor;
        } else if (cfg->rope_scaling == MODEL_ROPE_SCALING_YARN) {
            double ramp = (i - lo) / (hi - lo);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            double extra = 1 - ramp; /* share of the extrapolated (unscaled) frequency */
            inv = inv / cfg->rope_factor * (1 - extra) + inv * extra;
        }
        freqs[i] = (float)inv;
    }
}

void model_rope_freqs_local(const struct model_config *cfg, float *freqs) {
    int half = cfg->head_dim / 2;
    for (int i = 0; i < half; i++)
        freqs[i] = (float)(1.0 / pow((double)cfg->rope_local_theta, (2.0 * i) / cfg->head_dim));
}

/* --- the load plan ------------------------------------------------------------------------------
 */

struct ld_item {
    char name[160]; /* source tensor name */
    int rows, cols; /* expected (out, in); cols == 0 for a 1-D tensor of `rows` */
    float **dst;    /* where the arena pointer goes */
    int perm_heads; /* GGUF: un-permute rows in this many head groups (0: none) */
    int join;       /* the next item follows with no padding (q|k|v and gate|up: fused GEMMs) */
    int plus_one;   /* an RMSNorm weight stored as w for (1 + w): the arena gets 1 + w */
    float *at;      /* its place in the arena (ld_arena) */
    struct fg_qtensor *qdst; /* a linear weight's block destination (KEEP_BLOCKS), else NULL */
    int keep;                /* ld_arena: this one stays in its file type, at qdst->data */
    int mapped;              /* kept where the file mapping has it (no copy) */
    const struct gguf_tensor *gt;
    const struct safetensors_tensor *st;
    struct fp8_ckpt_weight fp8; /* st is F8_E4M3: its checked scale (fp8.w == st), else zero */
};

struct ld_plan {
    struct ld_item *items;
    int n;
};

static struct ld_item *ld_add(struct ld_plan *p, const char *name, int rows, int cols, float **dst,
                              int perm) {
    struct ld_item *it = &p->items[p->n++];
    memset(it, 0, sizeof(*it));
    snprintf(it->name, sizeof(it->name), "%s", name);
    it->rows = rows;
    it->cols = cols;
    it->dst = dst;
    it->perm_heads = perm;
    return it;
}

/* One tensor of a decoder block: its GGUF and HF names and where it goes. */
struct ld_layer_tensor {
    const char *gguf, *hf;
    int rows, cols;
    float **dst;
    int perm_heads, join, norm;
    struct fg_qtensor *q; /* where a linear weight's blocks go (KEEP_BLOCKS) */
};

/* Build the plan for M (cfg already set; layers allocated). GGUF names when GGUF, else HF names
 * under HF_PREFIX ("model." or a multimodal checkpoint's language-model prefix). */
static int ld_plan_build(struct model *m, int gguf, const char *hf_prefix, struct ld_plan *p) {
    const struct model_config *c = &m->cfg;
    int q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    int plus_one = !gguf && c->norm_plus_one;
    /* llama's GGUF rows are permuted for the interleaved RoPE; qwen2 and gemma3 use NEOX */
    int permuted = gguf && !strcmp(c->arch, "llama");
    p->items = calloc((size_t)c->n_layers * 16 + 4, sizeof(*p->items));
    if (!p->items) return -1;
    char nm[160];
    snprintf(nm, sizeof(nm), "%sembed_tokens.weight", hf_prefix);
    ld_add(p, gguf ? "token_embd.weight" : nm, c->vocab_size, c->dim, &m->w.tok_embd, 0)->qdst =
        &m->w.q_embd;
    for (int l = 0; l < c->n_layers; l++) {
        struct model_layer *L = &m->w.layers[l];
        /* HF names the pre-MLP norm post_attention_layernorm unless there are post-norms */
        const char *ffn_norm_hf =
            c->post_norms ? "pre_feedforward_layernorm" : "post_attention_layernorm";
        const struct ld_layer_tensor t[] = {
            {"attn_norm", "input_layernorm", c->dim, 0, &L->attn_norm, 0, 0, 1, NULL},
            {"attn_q", "self_attn.q_proj", q, c->dim, &L->wq, permuted ? c->n_heads : 0, 1, 0,
             &L->qwq},
            {"attn_k", "self_attn.k_proj", kv, c->dim, &L->wk, permuted ? c->n_kv_heads : 0, 1, 0,
             &L->qwk},
            {"attn_v", "self_attn.v_proj", kv, c->dim, &L->wv, 0, 0, 0, &L->qwv},
            {"attn_output", "self_attn.o_proj", c->dim, q, &L->wo, 0, 0, 0, &L->qwo},
            {"ffn_norm", ffn_norm_hf, c->dim, 0, &L->ffn_norm, 0, 0, 1, NULL},
            {"ffn_gate", "mlp.gate_proj", c->ffn_dim, c->dim, &L->w_gate, 0, 1, 0, &L->qw_gate},
            {"ffn_up", "mlp.up_proj", c->ffn_dim, c->dim, &L->w_up, 0, 0, 0, &L->qw_up},
            {"ffn_down", "mlp.down_proj", c->dim, c->ffn_dim, &L->w_down, 0, 0, 0, &L->qw_down},
        };
        for (size_t k = 0; k < sizeof(t) / sizeof(t[0]); k++) {
            if (gguf)
                snprintf(nm, sizeof(nm), "blk.%d.%s.weight", l, t[k].gguf);
            else
                snprintf(nm, sizeof(nm), "%slayers.%d.%s.weight", hf_prefix, l, t[k].hf);
            struct ld_item *it = ld_add(p, nm, t[k].rows, t[k].cols, t[k].dst, t[k].perm_heads);
            /* forward.c runs q|k|v and gate|up as one GEMM each over adjacent weights */
            it->join = t[k].join;
            it->plus_one = plus_one && t[k].norm;
            it->qdst = t[k].q;
        }
        const struct ld_layer_tensor opt[] = {
            {"attn_q", "self_attn.q_proj", q, 0, &L->bqkv, 0, 1, 0, NULL},
            {"attn_k", "self_attn.k_proj", kv, 0, NULL, 0, 1, 0, NULL},
            {"attn_v", "self_attn.v_proj", kv, 0, NULL, 0, 0, 0, NULL},
            {"attn_q_norm", "self_attn.q_norm", c->head_dim, 0, &L->q_norm, 0, 0, 1, NULL},
            {"attn_k_norm", "self_attn.k_norm", c->head_dim, 0, &L->k_norm, 0, 0, 1, NULL},
            {"post_attention_norm", "post_attention_layernorm", c->dim, 0, &L->post_attn_norm, 0, 0,
             1, NULL},
            {"post_ffw_norm", "post_feedforward_layernorm", c->dim, 0, &L->post_ffn_norm, 0, 0, 1,
             NULL},
        };
        const int want[] = {c->attn_bias, c->attn_bias,  c->attn_bias, c->qk_norm,
                            c->qk_norm,   c->post_norms, c->post_norms};
        for (size_t k = 0; k < sizeof(opt) / sizeof(opt[0]); k++) {
            if (!want[k]) continue;
            int bias = k < 3;
            if (gguf)
                snprintf(nm, sizeof(nm), "blk.%d.%s.%s", l, opt[k].gguf, bias ? "bias" : "weight");
            else
                snprintf(nm, sizeof(nm), "%slayers.%d.%s.%s", hf_prefix, l, opt[k].hf,
                         bias ? "bias" : "weight");
            /* the k and v biases follow the q bias in one (qd + 2 kvd) vector: no destination */
            struct ld_item *it = ld_add(p, nm, opt[k].rows, 0, opt[k].dst, 0);
            it->join = opt[k].join;
            it->plus_one = plus_one && opt[k].norm;
        }
    }
    snprintf(nm, sizeof(nm), "%snorm.weight", hf_prefix);
    ld_add(p, gguf ? "output_norm.weight" : nm, c->dim, 0, &m->w.out_norm, 0)->plus_one = plus_one;
    if (!c->tied_embeddings)
        ld_add(p, gguf ? "output.weight" : "lm_head.weight", c->vocab_size, c->dim, &m->w.output, 0)
            ->qdst = &m->w.q_output;
    return 0;
}

static uint64_t ld_numel(const struct ld_item *it) {
    return (uint64_t)it->rows * (uint64_t)(it->cols ? it->cols : 1);
}

/* Check one GGUF tensor against its plan entry. */
static int ld_check_gguf(const struct gguf_file *f, struct ld_item *it, char *err, size_t errlen) {
    const struct gguf_tensor *t = gguf_find_tensor(f, it->name);
    if (!t) {
        errmsg_at(err, errlen, f->path, "missing tensor '%s'", it->name);
        return -1;
    }
    uint64_t want0 = it->cols ? (uint64_t)it->cols : (uint64_t)it->rows;
    uint64_t want1 = it->cols ? (uint64_t)it->rows : 1;
    if (t->ne[0] != want0 || t->ne[1] != want1 || t->ne[2] != 1 || t->ne[3] != 1) {
        if (it->cols)
            errmsg_at(err, errlen, f->path,
                      "tensor '%s' has shape ne=[%llu, %llu, %llu, %llu], expected [%llu, %llu]",
                      it->name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                      (unsigned long long)t->ne[2], (unsigned long long)t->ne[3],
                      (unsigned long long)want0, (unsigned long long)want1);
        else
            errmsg_at(err, errlen, f->path,
                      "tensor '%s' has shape ne=[%llu, %llu, %llu, %llu], expected [%llu]",
                      it->name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                      (unsigned long long)t->ne[2], (unsigned long long)t->ne[3],
                      (unsigned long long)want0);
        return -1;
    }
    if (!gguf_type_supported(t->type)) {
        errmsg_at(err, errlen, f->path,
                  "tensor '%s' has type %s, which flashgen cannot dequantize (supported: %s)",
                  it->name, gguf_type_name(t->type), gguf_type_supported_list());
        return -1;
    }
    it->gt = t;
    return 0;
}

/* Check one safetensors tensor against its plan entry; an F8_E4M3 one must bring its scales
 * (fp8_ckpt_weight), and Q counts the 2-D ones that are not e4m3 when config.json names FP8. */
static int ld_check_st(const struct safetensors *s, const char *dir, struct fp8_ckpt *q,
                       struct ld_item *it, char *err, size_t errlen) {
    const struct safetensors_tensor *t = safetensors_find(s, it->name);
    if (!t) {
        errmsg_at(err, errlen, dir, "missing tensor '%s'", it->name);
        return -1;
    }
    const char *file = s->files[t->file].path;
    int ok = it->cols ? t->n_dims == 2 && t->shape[0] == it->rows && t->shape[1] == it->cols
                      : t->n_dims == 1 && t->shape[0] == it->rows;
    if (!ok) {
        char got[128] = "[";
        for (int d = 0; d < t->n_dims; d++)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%lld", d ? ", " : "",
                     (long long)t->shape[d]);
        strncat(got, "]", sizeof(got) - strlen(got) - 1);
        if (it->cols)
            errmsg_at(err, errlen, file, "tensor '%s' has shape %s, expected [%d, %d]", it->name,
                      got, it->rows, it->cols);
        else
            errmsg_at(err, errlen, file, "tensor '%s' has shape %s, expected [%d]", it->name, got,
                      it->rows);
        return -1;
    }
    if (!strcmp(t->dtype, "F8_E4M3")) {
        if (fp8_ckpt_weight(q, s, t, it->rows, &it->fp8, err, errlen)) return -1;
    } else if (!strcmp(t->dtype, "F8_E5M2")) {
        errmsg_at(err, errlen, file,
                  "tensor '%s' has dtype F8_E5M2: flashgen reads FP8 weights in e4m3 (F8_E4M3) "
                  "only",
                  it->name);
        return -1;
    } else if (!safetensors_dtype_supported(t->dtype)) {
        errmsg_at(err, errlen, file,
                  "tensor '%s' has dtype %s, which flashgen cannot load (supported: F32, F16, "
                  "BF16, and F8_E4M3 with its weight_scale)",
                  it->name, t->dtype);
        return -1;
    } else if (it->cols && q->method != FP8_CKPT_NONE) {
        fp8_ckpt_plain(q, it->name, t->dtype);
    }
    it->st = t;
    return 0;
}

/* Floats an item takes in the arena: padded to LD_ALIGN_FLOATS unless joined to the next. */
static size_t ld_span(const struct ld_item *it) {
    if (it->keep) return 0;
    size_t n = ld_numel(it);
    return it->join ? n : (n + LD_ALIGN_FLOATS - 1) / LD_ALIGN_FLOATS * LD_ALIGN_FLOATS;
}

#define LD_QALIGN 64 /* each kept tensor's blocks start on a cache line */

/* Bytes a kept item takes in the block arena: padded to LD_QALIGN unless joined to the next,
 * so that a run of one type (q|k|v, gate|up) is one matrix the forward pass can run as one. */
static size_t ld_qspan(const struct ld_item *it) {
    size_t n = it->gt->n_bytes;
    return it->join ? n : (n + LD_QALIGN - 1) / LD_QALIGN * LD_QALIGN;
}

/* F32, F16, BF16: the types a backend with upload_rows converts itself (MODEL_LOAD_KEEP_FILE). */
static int ld_type_plain(uint32_t t) {
    return t == GGUF_GGML_F32 || t == GGUF_GGML_F16 || t == GGUF_GGML_BF16;
}

/* KEEP_BLOCKS / KEEP_FILE: mark the linear weights that stay in their file types — a type with a
 * block product (KEEP_BLOCKS) or a plain type (KEEP_FILE), and for a fused run (q|k|v, gate|up)
 * all of the run or none, so that an fp32 run stays adjacent. A kept run stays in the mapping
 * (it->mapped) where nothing moves: KEEP_FILE always (the backend un-permutes), blocks when no
 * row is un-permuted and the run lies back to back in the file, so the forward pass still runs it
 * as one matrix. The rest is placed in one allocation. */
static int ld_qarena(struct model *m, struct ld_plan *p, unsigned flags, char *err, size_t errlen) {
    for (int i = 0; i < p->n; i++) {
        struct ld_item *it = &p->items[i];
        uint32_t t = it->gt ? it->gt->type : 0;
        it->keep = it->qdst && it->gt &&
                   (((flags & MODEL_LOAD_KEEP_BLOCKS) && cq_type_supported(t)) ||
                    ((flags & MODEL_LOAD_KEEP_FILE) && ld_type_plain(t)));
    }
    for (int i = 0; i < p->n;) { /* a run: items i .. j, each joined to the next but the last */
        int j = i, all = 1, inplace = 1;
        while (j < p->n - 1 && p->items[j].join)
            j++;
        for (int k = i; k <= j; k++)
            all &= p->items[k].keep;
        for (int k = i; k <= j && all; k++) {
            const struct ld_item *it = &p->items[k];
            if (ld_type_plain(it->gt->type)) continue;
            inplace &= !it->perm_heads;
            if (k < j) inplace &= p->items[k + 1].gt->data == it->gt->data + it->gt->n_bytes;
        }
        for (int k = i; k <= j; k++) {
            p->items[k].keep = all;
            p->items[k].mapped = all && inplace;
        }
        i = j + 1;
    }
    size_t bytes = 0;
    for (int i = 0; i < p->n; i++)
        if (p->items[i].keep && !p->items[i].mapped) bytes += ld_qspan(&p->items[i]);
    char *a = NULL;
    if (bytes && !(a = aligned_alloc(LD_QALIGN, bytes))) {
        errmsg_at(err, errlen, m->path, "out of memory for %zu MB of quantized weights",
                  bytes >> 20);
        return -1;
    }
    m->w.qarena = a;
    m->w.qarena_bytes = bytes;
    size_t off = 0;
    for (int i = 0; i < p->n; i++) {
        struct ld_item *it = &p->items[i];
        if (!it->keep) continue;
        const void *data = it->mapped ? (const void *)it->gt->data : a + off;
        *it->qdst =
            (struct fg_qtensor){.type = it->gt->type,
                                .rows = it->rows,
                                .cols = it->cols,
                                .row_bytes = gguf_type_row_bytes(it->gt->type, (uint64_t)it->cols),
                                .data = data}; /* the file's rows: FG_QLAYOUT_ROWS */
        if (it->mapped && it->perm_heads) m->qk_file_order = 1;
        if (it->mapped)
            m->w.mapped_bytes += it->gt->n_bytes;
        else
            off += ld_qspan(it);
    }
    return 0;
}

/* Allocate the arena for the plan (+ rope freqs) and point every destination into it. */
static int ld_arena(struct model *m, struct ld_plan *p, char *err, size_t errlen) {
    size_t total = 0;
    for (int i = 0; i < p->n; i++)
        total += ld_span(&p->items[i]);
    size_t rope_span =
        ((size_t)m->cfg.head_dim / 2 + LD_ALIGN_FLOATS - 1) / LD_ALIGN_FLOATS * LD_ALIGN_FLOATS;
    total += 2 * rope_span; /* global and local tables */
    size_t bytes = total * sizeof(float);
    float *a = aligned_alloc(64, bytes);
    if (!a) {
        errmsg_at(err, errlen, m->path, "out of memory for %zu MB of fp32 weights", bytes >> 20);
        return -1;
    }
    m->w.arena = a;
    m->w.arena_bytes = bytes;
    size_t off = 0;
    for (int i = 0; i < p->n; i++) {
        p->items[i].at = p->items[i].keep ? NULL : a + off;
        if (p->items[i].dst) *p->items[i].dst = p->items[i].at;
        off += ld_span(&p->items[i]);
    }
    m->w.rope_freqs = a + off;
    m->w.rope_freqs_local = m->cfg.rope_local_theta > 0 ? a + off + rope_span : m->w.rope_freqs;
    if (m->cfg.tied_embeddings) {
        m->w.output = m->w.tok_embd;
        m->w.q_output = m->w.q_embd;
    }
    return 0;
}

/* Count elements per source type; the winner becomes m->dtype. */
struct ld_hist {
    char name[8][16];
    uint64_t elems[8];
    int n;
};

static void ld_hist_add(struct ld_hist *h, const char *name, uint64_t n) {
    for (int i = 0; i < h->n; i++)
        if (!strcmp(h->name[i], name)) {
            h->elems[i] += n;
            return;
        }
    if (h->n < 8) {
        snprintf(h->name[h->n], sizeof(h->name[0]), "%s", name);
        h->elems[h->n++] = n;
    }
}

static void ld_hist_best(const struct ld_hist *h, char *out, size_t cap) {
    int best = 0;
    for (int i = 1; i < h->n; i++)
        if (h->elems[i] > h->elems[best]) best = i;
    snprintf(out, cap, "%s", h->n ? h->name[best] : "none");
}

/* Say once per load (m->notice, which the engine logs) what happened to the quantized GGUF
 * tensors: which types stay in their blocks (KEEP_BLOCKS) and which became fp32, with the file
 * bytes they had and what is resident now. */
static void ld_note_quant(struct model *m, const struct ld_plan *p) {
    char kept[128] = "", deq[128] = "";
    uint64_t qbytes = 0, dbytes = 0;
    for (int i = 0; i < p->n; i++) {
        const struct gguf_tensor *t = p->items[i].gt;
        if (!t || !gguf_type_quantized(t->type)) continue;
        int keep = p->items[i].keep;
        char *types = keep ? kept : deq;
        *(keep ? &qbytes : &dbytes) += t->n_bytes;
        const char *nm = gguf_type_name(t->type);
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = p->items[j].gt && p->items[j].gt->type == t->type && p->items[j].keep == keep;
        if (!seen)
            snprintf(types + strlen(types), sizeof(kept) - strlen(types), "%s%s",
                     types[0] ? ", " : "", nm);
    }
    if (!qbytes && !dbytes) return;
    char *o = m->notice;
    size_t cap = sizeof m->notice;
    int n = snprintf(o, cap, "%s:", m->path);
    if (qbytes && n >= 0 && (size_t)n < cap)
        n += snprintf(o + n, cap - (size_t)n, " %s tensors kept in their blocks (%.1f MB);", kept,
                      qbytes / 1048576.0);
    if (dbytes && n >= 0 && (size_t)n < cap)
        n += snprintf(o + n, cap - (size_t)n,
                      " %s tensors dequantized to fp32 at load (%.1f MB in the file);", deq,
                      dbytes / 1048576.0);
    if (n >= 0 && (size_t)n < cap)
        n += snprintf(o + n, cap - (size_t)n, " %.1f MB of weights resident",
                      (m->w.arena_bytes + m->w.qarena_bytes) / 1048576.0);
    if (m->w.mapped_bytes && n >= 0 && (size_t)n < cap)
        snprintf(o + n, cap - (size_t)n, " (+ %.1f MB shared with the file's page cache)",
                 m->w.mapped_bytes / 1048576.0);
}

/* --- parallel conversion -----------------------------------------------------------------------
 *
 * The tensors are cut into chunks of whole rows (about LD_CHUNK_BYTES of the file, whole heads
 * where rows are un-permuted), and one thread per online CPU takes chunks in file order from one
 * counter, so the mapping is read front to back and every core converts. The loading thread
 * reports progress as tensors complete, in plan order. A safetensors tensor is one chunk
 * (safetensors_to_f32 converts whole tensors). */

#define LD_CHUNK_BYTES ((uint64_t)4 << 20) /* file bytes per chunk: ~3,700 chunks for 15 GB */
#define LD_MAX_THREADS 128

struct ld_chunk {
    int item;
    int r0, r1; /* rows [r0, r1) of the item; a 1-D item is one row */
};

struct ld_work {
    const struct ld_plan *p;
    const struct ld_chunk *chunks;
    size_t n_chunks;
    atomic_size_t next;  /* the next chunk to take */
    atomic_int *left;    /* (p->n) chunks of each item not yet converted */
    atomic_int bad;      /* 1 + the first item that failed, or 0 */
    pthread_mutex_t mu;  /* guards done, with cv */
    pthread_cond_t cv;   /* signalled when an item completes */
    unsigned char *done; /* (p->n) */
};

/* Rows of one chunk and where each goes: GGUF llama row h*d + 2j + k is HF row h*d + j + k*d/2
 * (the inverse of convert_hf_to_gguf.py's permute, §2.7). */
static int ld_hf_row(const struct ld_item *it, int r) {
    if (!it->perm_heads) return r;
    int d = it->rows / it->perm_heads, i2 = r % d;
    return r / d * d + i2 / 2 + (i2 % 2) * (d / 2);
}

/* Convert one chunk; returns 0 or -1 (a type gguf_open and ld_check_gguf let through but
 * gguf_dequantize refuses: ruled out, kept as a value). */
static int ld_chunk_run(const struct ld_item *it, const struct ld_chunk *c) {
    if (it->st) {
        if (it->fp8.w)
            fp8_ckpt_dequant(&it->fp8, it->rows, it->at);
        else
            safetensors_to_f32(it->st, it->at);
        if (it->plus_one)
            for (uint64_t e = 0; e < ld_numel(it); e++)
                it->at[e] += 1.0f;
        return 0;
    }
    const struct gguf_tensor *t = it->gt;
    uint64_t cols = it->cols ? (uint64_t)it->cols : (uint64_t)it->rows;
    uint64_t rb = gguf_type_row_bytes(t->type, cols);
    if (it->keep) { /* blocks copied as they are, rows un-permuted */
        char *q = (char *)it->qdst->data;
        for (int r = c->r0; r < c->r1; r++)
            memcpy(q + (size_t)ld_hf_row(it, r) * rb, t->data + (uint64_t)r * rb, rb);
        return 0;
    }
    if (!it->perm_heads) {
        float *dst = it->at + (size_t)c->r0 * cols;
        uint64_t n = (uint64_t)(c->r1 - c->r0) * cols;
        if (gguf_dequantize(t->type, t->data + (uint64_t)c->r0 * rb, dst, n)) return -1;
        if (it->plus_one)
            for (uint64_t e = 0; e < n; e++)
                dst[e] += 1.0f;
        return 0;
    }
    for (int r = c->r0; r < c->r1; r++)
        if (gguf_dequantize(t->type, t->data + (uint64_t)r * rb,
                            it->at + (size_t)ld_hf_row(it, r) * cols, cols))
            return -1;
    return 0;
}

static void *ld_worker(void *arg) {
    struct ld_work *w = arg;
    for (;;) {
        size_t k = atomic_fetch_add(&w->next, 1);
        if (k >= w->n_chunks) return NULL;
        const struct ld_chunk *c = &w->chunks[k];
        if (ld_chunk_run(&w->p->items[c->item], c)) {
            int none = 0;
            atomic_compare_exchange_strong(&w->bad, &none, c->item + 1);
        }
        if (atomic_fetch_sub(&w->left[c->item], 1) == 1) {
            pthread_mutex_lock(&w->mu);
            w->done[c->item] = 1;
            pthread_cond_broadcast(&w->cv);
            pthread_mutex_unlock(&w->mu);
        }
    }
}

/* The chunks of the plan (items kept in the mapping have none), into *out. */
static int ld_chunks(const struct ld_plan *p, struct ld_chunk **out, size_t *n_out) {
    size_t n = 0, cap = 0;
    struct ld_chunk *cs = NULL;
    for (int i = 0; i < p->n; i++) {
        const struct ld_item *it = &p->items[i];
        if (it->mapped) continue;
        int rows = 1, step = 1;
        if (it->gt && it->cols) {
            uint64_t rb = gguf_type_row_bytes(it->gt->type, (uint64_t)it->cols);
            uint64_t per = rb ? LD_CHUNK_BYTES / rb : 1;
            int group = it->perm_heads ? it->rows / it->perm_heads : 1;
            rows = it->rows;
            step = per < (uint64_t)group ? group : (int)(per / group * group);
        }
        for (int r = 0; r < rows; r += step) {
            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                struct ld_chunk *g = realloc(cs, cap * sizeof(*cs));
                if (!g) {
                    free(cs);
                    return -1;
                }
                cs = g;
            }
            cs[n++] = (struct ld_chunk){i, r, rows - r < step ? rows : r + step};
        }
    }
    *out = cs;
    *n_out = n;
    return 0;
}

static int ld_online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > LD_MAX_THREADS ? LD_MAX_THREADS : (int)n;
}

/* Convert every planned tensor into the arenas on all cores, reporting progress. */
static int ld_convert(struct model *m, struct ld_plan *p, const struct gguf_file *gf,
                      model_progress_fn progress, void *user, double t0, char *err, size_t errlen) {
    struct model_load_progress pr = {0, (size_t)p->n, 0, 0, 0};
    struct ld_hist hist = {0};
    for (int i = 0; i < p->n; i++)
        if (!p->items[i].mapped)
            pr.bytes_total += p->items[i].gt ? p->items[i].gt->n_bytes : p->items[i].st->n_bytes;
    struct ld_work w = {.p = p};
    struct ld_chunk *chunks = NULL;
    pthread_t th[LD_MAX_THREADS];
    int n_th = 0, rc = -1;
    w.left = calloc((size_t)p->n, sizeof(*w.left));
    w.done = calloc((size_t)p->n, 1);
    if (!w.left || !w.done || ld_chunks(p, &chunks, &w.n_chunks)) {
        free(w.left);
        free(w.done);
        errmsg_at(err, errlen, m->path, "out of memory");
        return -1;
    }
    w.chunks = chunks;
    for (size_t k = 0; k < w.n_chunks; k++)
        w.left[chunks[k].item]++;
    for (int i = 0; i < p->n; i++)
        w.done[i] = w.left[i] == 0;
    atomic_init(&w.next, 0);
    atomic_init(&w.bad, 0);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    if (gf) gguf_will_read(gf);
    int want = ld_online_cpus();
    if ((size_t)want > w.n_chunks) want = w.n_chunks ? (int)w.n_chunks : 1;
    while (n_th < want && !pthread_create(&th[n_th], NULL, ld_worker, &w))
        n_th++;
    if (!n_th) ld_worker(&w); /* no thread to be had: convert on this one */
    for (int i = 0; i < p->n; i++) {
        struct ld_item *it = &p->items[i];
        pthread_mutex_lock(&w.mu);
        while (!w.done[i])
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        if (it->gt)
            ld_hist_add(&hist, gguf_type_name(it->gt->type), it->gt->n_elems);
        else
            ld_hist_add(&hist, it->st->dtype, it->st->n_elems);
        if (!it->mapped) pr.bytes_done += it->gt ? it->gt->n_bytes : it->st->n_bytes;
        pr.tensors_done++;
        pr.seconds = ld_now() - t0;
        if (progress) progress(&pr, user);
    }
    for (int k = 0; k < n_th; k++)
        pthread_join(th[k], NULL);
    int bad = atomic_load(&w.bad);
    if (bad)
        errmsg_at(err, errlen, gf ? gf->path : m->path, "tensor '%s': cannot convert %s",
                  p->items[bad - 1].name,
                  p->items[bad - 1].gt ? gguf_type_name(p->items[bad - 1].gt->type)
                                       : p->items[bad - 1].st->dtype);
    else
        rc = 0;
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    free(chunks);
    free(w.left);
    free(w.done);
    if (rc) return -1;
    ld_hist_best(&hist, m->dtype, sizeof(m->dtype));
    ld_note_quant(m, p);

    model_rope_freqs(&m->cfg, m->w.rope_freqs);
    if (m->cfg.rope_local_theta > 0) model_rope_freqs_local(&m->cfg, m->w.rope_freqs_local);
    const struct gguf_tensor *rf = gf ? gguf_find_tensor(gf, "rope_freqs.weight") : NULL;
    if (rf) { /* llama3 divisors written by convert_hf_to_gguf: inv_freq / rope_freqs[i] */
        int half = m->cfg.head_dim / 2;
        float *fac = malloc((size_t)half * sizeof(float));
        if (!fac) {
            errmsg_at(err, errlen, gf->path, "out of memory");
            return -1;
        }
        if (gguf_dequantize(rf->type, rf->data, fac, (uint64_t)half)) {
            errmsg_at(err, errlen, gf->path, "tensor 'rope_freqs.weight': cannot dequantize %s",
                      gguf_type_name(rf->type));
            free(fac);
            return -1;
        }
        for (int i = 0; i < half; i++) {
            if (!(fac[i] > 0) || !isfinite(fac[i])) {
                errmsg_at(err, errlen, gf->path, "rope_freqs.weight[%d] = %g is not positive", i,
                          fac[i]);
                free(fac);
                return -1;
            }
            m->w.rope_freqs[i] /= fac[i];
        }
        free(fac);
    }
    return 0;
}

/* --- GGUF ---------------------------------------------------------------------------------------
 */

/* Read a required (REQ) or optional positive int KV into *v. */
static int ld_kv_int(const struct gguf_file *f, const char *key, int req, int *v, char *err,
                     size_t errlen) {
    int64_t x;
    int rc = gguf_get_int(f, key, &x, err, errlen);
    if (rc < 0) return -1;
    if (rc == 0) {
        if (req) {
            errmsg_at(err, errlen, f->path, "missing metadata '%s'", key);
            return -1;
        }
        return 0;
    }
    if (x <= 0 || x > INT_MAX) {
        errmsg_at(err, errlen, f->path, "metadata '%s' = %lld is out of range", key, (long long)x);
        return -1;
    }
    *v = (int)x;
    return 1;
}

/* "ARCH.SUFFIX" in BUF: GGUF's per-architecture keys. */
static const char *ld_key(char *buf, size_t cap, const char *arch, const char *suffix) {
    snprintf(buf, cap, "%s.%s", arch, suffix);
    return buf;
}

/* ARCH.rope.scaling.* of a yarn file → C. Facts from llama.cpp: conversion/base.py
 * (set_gguf_parameters: what the converter writes), src/llama-model.cpp and llama-context.cpp
 * (how they are read and combined), ggml's rope_yarn and ggml_rope_yarn_corr_dims.
 * The keys, as the converter writes them from the checkpoint's rope_scaling: factor (required),
 * original_context_length (default: context_length), yarn_beta_fast / yarn_beta_slow (32 / 1),
 * yarn_attn_factor (transformers' attention_factor, when the checkpoint has one),
 * yarn_ext_factor (1: only the plain ramp is implemented), yarn_log_multiplier (mscale_all_dim;
 * llama.cpp then takes mscale = 1: attention factor mscale(s, 1) / mscale(s, m)), attn_factor
 * (llama.cpp's extra multiplier of the cos/sin magnitude, default 1). Without yarn_attn_factor
 * and yarn_log_multiplier the attention factor is 0.1 ln(factor) + 1, as in both. The correction
 * range is truncated (floor/ceil), as in ggml. llama.cpp reads the yarn_beta and yarn_attn_factor
 * keys for a few architectures only (its defaults for llama and qwen2); we take them as written:
 * they carry the checkpoint's own values, which transformers runs with. */
static int ld_gguf_yarn(const struct gguf_file *f, const char *A, struct model_config *c, char *err,
                        size_t errlen) {
    char key[96];
    double factor = 0, bf = 32, bs = 1, af = 0, ext = 1, logmul = 0, mul = 1;
    int rc =
        gguf_get_float(f, ld_key(key, sizeof key, A, "rope.scaling.factor"), &factor, err, errlen);
    if (rc < 0) return -1;
    if (rc == 0 || !(factor > 0)) {
        errmsg_at(err, errlen, f->path, "yarn rope scaling needs metadata '%s' > 0", key);
        return -1;
    }
    c->rope_orig_max_pos = c->max_seq_len;
    if (ld_kv_int(f, ld_key(key, sizeof key, A, "rope.scaling.original_context_length"), 0,
                  &c->rope_orig_max_pos, err, errlen) < 0)
        return -1;
    static const char *const names[] = {
        "rope.scaling.yarn_beta_fast",      "rope.scaling.yarn_beta_slow",
        "rope.scaling.yarn_attn_factor",    "rope.scaling.yarn_ext_factor",
        "rope.scaling.yarn_log_multiplier", "rope.scaling.attn_factor"};
    double *vals[] = {&bf, &bs, &af, &ext, &logmul, &mul};
    for (int i = 0; i < 6; i++)
        if (gguf_get_float(f, ld_key(key, sizeof key, A, names[i]), vals[i], err, errlen) < 0)
            return -1;
    if (ext != 1) {
        errmsg_at(err, errlen, f->path,
                  "metadata '%s.rope.scaling.yarn_ext_factor' = %g is not supported (only 1)", A,
                  ext);
        return -1;
    }
#define YARN_MSCALE(s, m) ((s) <= 1 ? 1.0 : 0.1 * (m)*log(s) + 1.0)
    if (af == 0) af = YARN_MSCALE(factor, 1.0) / (logmul != 0 ? YARN_MSCALE(factor, logmul) : 1.0);
#undef YARN_MSCALE
    c->rope_scaling = MODEL_ROPE_SCALING_YARN;
    c->rope_factor = (float)factor;
    c->rope_beta_fast = (float)bf;
    c->rope_beta_slow = (float)bs;
    c->rope_attn_factor = (float)(af * mul);
    c->rope_yarn_truncate = 1;
    return 0;
}

/* general.architecture values and what they switch on. Facts (llama.cpp's converter and
 * src/llama-model.cpp, checked against the real gemma-3-270m file and transformers' GGUF
 * loader, which reads back the same checkpoint):
 *   llama  — Mistral too (converted as llama); attn_q/attn_k rows permuted for the interleaved
 *            RoPE, un-permuted here (model-format.md §2.7).
 *   qwen2  — NEOX (rotate_half) RoPE: no permutation; attn_{q,k,v}.bias present.
 *   gemma3 — NEOX RoPE: no permutation. convert_hf_to_gguf's Gemma3Model has norm_shift = 1.0:
 *            every "*norm.weight" is stored as (1 + w) already, so no +1 here (the HF loader adds
 *            it). The file has no local RoPE base, window pattern or query_pre_attn_scalar:
 *            llama.cpp fixes them (SWA base 10000, every 6th layer global, attention scale
 *            1/sqrt(head_dim), except 27B (62 layers): 1/sqrt(dim / n_heads)), and so do we.
 *            Embeddings scaled by sqrt(dim), tied output head, GELU-tanh MLP, QK-norm, 4 norms. */
static int ld_gguf_config(const struct gguf_file *f, struct model_config *c, char *err,
                          size_t errlen) {
    memset(c, 0, sizeof(*c));
    const char *arch;
    size_t alen;
    char key[96];
    int rc = gguf_get_str(f, "general.architecture", &arch, &alen, err, errlen);
    if (rc < 0) return -1;
    if (rc == 0) {
        errmsg_at(err, errlen, f->path, "missing metadata 'general.architecture'");
        return -1;
    }
    static const char *const archs[] = {"llama", "qwen2", "gemma3"};
    int which = -1;
    for (int i = 0; i < 3; i++)
        if (alen == strlen(archs[i]) && !memcmp(arch, archs[i], alen)) which = i;
    if (which < 0) {
        errmsg_at(err, errlen, f->path,
                  "architecture '%.*s' is not supported (llama, qwen2 or gemma3)",
                  (int)(alen > 64 ? 64 : alen), arch);
        return -1;
    }
    strcpy(c->arch, archs[which]);
    const char *A = c->arch;
    if (ld_kv_int(f, ld_key(key, sizeof key, A, "block_count"), 1, &c->n_layers, err, errlen) < 0 ||
        ld_kv_int(f, ld_key(key, sizeof key, A, "embedding_length"), 1, &c->dim, err, errlen) < 0 ||
        ld_kv_int(f, ld_key(key, sizeof key, A, "feed_forward_length"), 1, &c->ffn_dim, err,
                  errlen) < 0 ||
        ld_kv_int(f, ld_key(key, sizeof key, A, "attention.head_count"), 1, &c->n_heads, err,
                  errlen) < 0)
        return -1;
    c->n_kv_heads = c->n_heads;
    if (ld_kv_int(f, ld_key(key, sizeof key, A, "attention.head_count_kv"), 0, &c->n_kv_heads, err,
                  errlen) < 0)
        return -1;
    rc = ld_kv_int(f, ld_key(key, sizeof key, A, "attention.key_length"), 0, &c->head_dim, err,
                   errlen);
    if (rc < 0) return -1;
    if (rc == 0) {
        if (c->dim % c->n_heads) {
            errmsg_at(err, errlen, f->path,
                      "embedding_length %d is not a multiple of head_count %d (and no key_length)",
                      c->dim, c->n_heads);
            return -1;
        }
        c->head_dim = c->dim / c->n_heads;
    }
    int vl = c->head_dim;
    if (ld_kv_int(f, ld_key(key, sizeof key, A, "attention.value_length"), 0, &vl, err, errlen) < 0)
        return -1;
    int rd = c->head_dim;
    if (ld_kv_int(f, ld_key(key, sizeof key, A, "rope.dimension_count"), 0, &rd, err, errlen) < 0)
        return -1;
    if (vl != c->head_dim || rd != c->head_dim) {
        errmsg_at(err, errlen, f->path,
                  "value_length %d / rope.dimension_count %d differ from head_dim %d "
                  "(not supported)",
                  vl, rd, c->head_dim);
        return -1;
    }
    c->max_seq_len = 2048;
    if (ld_kv_int(f, ld_key(key, sizeof key, A, "context_length"), 0, &c->max_seq_len, err,
                  errlen) < 0)
        return -1;
    double theta = 10000.0, eps = 1e-5;
    if (gguf_get_float(f, ld_key(key, sizeof key, A, "rope.freq_base"), &theta, err, errlen) < 0 ||
        gguf_get_float(f, ld_key(key, sizeof key, A, "attention.layer_norm_rms_epsilon"), &eps, err,
                       errlen) < 0)
        return -1;
    c->rope_theta = (float)theta;
    c->rms_eps = (float)eps;
    const char *rst;
    size_t rsl;
    rc = gguf_get_str(f, ld_key(key, sizeof key, A, "rope.scaling.type"), &rst, &rsl, err, errlen);
    if (rc < 0) return -1;
    if (rc == 1 && rsl == 6 && !memcmp(rst, "linear", 6)) {
        double factor = 1;
        if (gguf_get_float(f, ld_key(key, sizeof key, A, "rope.scaling.factor"), &factor, err,
                           errlen) < 0)
            return -1;
        c->rope_scaling = MODEL_ROPE_SCALING_LINEAR;
        c->rope_factor = (float)factor;
    } else if (rc == 1 && rsl == 4 && !memcmp(rst, "yarn", 4)) {
        if (ld_gguf_yarn(f, A, c, err, errlen) < 0) return -1;
    } else if (rc == 1 && !(rsl == 4 && !memcmp(rst, "none", 4))) {
        errmsg_at(err, errlen, f->path,
                  "rope scaling type '%.*s' is not supported (none, linear, yarn)",
                  (int)(rsl > 64 ? 64 : rsl), rst);
        return -1;
    }
    if (which == 1) c->attn_bias = 1;
    if (which == 2) {
        c->act = MODEL_ACT_GELU_TANH;
        c->qk_norm = 1;
        c->post_norms = 1;
        c->embed_scale = sqrtf((float)c->dim);
        c->attn_scale = c->n_layers == 62 ? 1.0f / sqrtf((float)c->dim / c->n_heads)
                                          : 1.0f / sqrtf((float)c->head_dim);
        c->sliding_pattern = 6;
        c->rope_local_theta = 10000.0f;
        if (ld_kv_int(f, ld_key(key, sizeof key, A, "attention.sliding_window"), 0,
                      &c->sliding_window, err, errlen) < 0)
            return -1;
        double cap = 0;
        if (gguf_get_float(f, ld_key(key, sizeof key, A, "final_logit_softcapping"), &cap, err,
                           errlen) < 0)
            return -1;
        c->final_softcap = (float)cap;
    }
    const struct gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    c->vocab_size = emb && emb->ne[1] <= INT_MAX ? (int)emb->ne[1] : 0;
    if (ld_kv_int(f, ld_key(key, sizeof key, A, "vocab_size"), 0, &c->vocab_size, err, errlen) < 0)
        return -1;
    if (!c->vocab_size) {
        errmsg_at(err, errlen, f->path, "missing tensor 'token_embd.weight'");
        return -1;
    }
    c->tied_embeddings = gguf_find_tensor(f, "output.weight") == NULL;
    const struct gguf_tensor *rf = gguf_find_tensor(f, "rope_freqs.weight");
    if (rf) {
        if (rf->n_elems != (uint64_t)c->head_dim / 2 || !gguf_type_supported(rf->type)) {
            errmsg_at(err, errlen, f->path,
                      "tensor 'rope_freqs.weight' has %llu elements of %s, expected %d supported",
                      (unsigned long long)rf->n_elems, gguf_type_name(rf->type), c->head_dim / 2);
            return -1;
        }
        c->rope_scaling = MODEL_ROPE_SCALING_FREQ_FACTORS;
    }
    char verr[256];
    if (model_config_validate(c, verr, sizeof(verr))) {
        errmsg_at(err, errlen, f->path, "%s", verr);
        return -1;
    }
    return 0;
}

/* Map tokenizer.ggml.pre to the pre-tokenizer; -1 for unknown names. */
static int ld_gguf_pre(const char *s, size_t n) {
    static const struct {
        const char *name;
        enum tok_pre pre;
    } t[] = {
        {"default", TOK_PRE_GPT2},      {"gpt2", TOK_PRE_GPT2},
        {"gpt-2", TOK_PRE_GPT2},        {"mpt", TOK_PRE_GPT2},
        {"olmo", TOK_PRE_GPT2},         {"jais", TOK_PRE_GPT2},
        {"smollm", TOK_PRE_SMOLLM},     {"starcoder", TOK_PRE_SMOLLM},
        {"refact", TOK_PRE_SMOLLM},     {"command-r", TOK_PRE_SMOLLM},
        {"codeshell", TOK_PRE_SMOLLM},  {"exaone", TOK_PRE_SMOLLM},
        {"minerva-7b", TOK_PRE_SMOLLM}, {"llama3", TOK_PRE_LLAMA3},
        {"llama-bpe", TOK_PRE_LLAMA3},  {"llama-v3", TOK_PRE_LLAMA3},
        {"smaug-bpe", TOK_PRE_LLAMA3},  {"qwen2", TOK_PRE_QWEN2},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (strlen(t[i].name) == n && !memcmp(t[i].name, s, n)) return (int)t[i].pre;
    return -1;
}

static int ld_gguf_tok_id(const struct gguf_file *f, const char *key, int *v, char *err,
                          size_t errlen) {
    int64_t x;
    *v = -1;
    int rc = gguf_get_int(f, key, &x, err, errlen);
    if (rc < 0) return -1;
    if (rc == 1) *v = x >= 0 && x <= INT_MAX ? (int)x : -1;
    return 0;
}

/* The SentencePiece ("llama") settings: tokenizer.ggml.scores (NTOK float32, copied out of the
 * mapping, which need not be aligned) into *scores, and tokenizer.ggml.add_space_prefix
 * (llama.cpp's default: true), which also strips the leading space when decoding. */
static int ld_gguf_spm(const struct gguf_file *f, size_t ntok, struct tokenizer_spec *sp,
                       float **scores, char *err, size_t errlen) {
    const struct gguf_kv *kv = gguf_find_kv(f, "tokenizer.ggml.scores");
    if (!kv || kv->type != GGUF_VTYPE_ARRAY || kv->arr_type != GGUF_VTYPE_FLOAT32 ||
        kv->arr_count != ntok) {
        errmsg_at(err, errlen, f->path,
                  "SentencePiece tokenizer needs 'tokenizer.ggml.scores' as %zu float32 values",
                  ntok);
        return -1;
    }
    if (!(*scores = malloc(ntok * sizeof(float)))) {
        errmsg_at(err, errlen, f->path, "out of memory");
        return -1;
    }
    memcpy(*scores, kv->value, ntok * sizeof(float));
    int prefix = 1;
    if (gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &prefix, err, errlen) < 0) return -1;
    sp->model = TOK_MODEL_SPM;
    sp->scores = *scores;
    sp->prefix = prefix ? TOK_PREFIX_EACH : TOK_PREFIX_NONE;
    sp->strip_space = prefix;
    sp->fuse_unk = 1; /* transformers' SentencePiece converters set fuse_unk */
    return 0;
}

/* Build the tokenizer (and chat template) from tokenizer.ggml.* metadata. */
static int ld_gguf_tokenizer(const struct gguf_file *f, struct tokenizer **tok, char **tmpl,
                             char *err, size_t errlen) {
    struct tokenizer_spec sp;
    memset(&sp, 0, sizeof(sp));
    char **toks = NULL, **merges = NULL;
    size_t *tlens = NULL, *mlens = NULL, ntok = 0, nmer = 0, ntype = 0;
    int32_t *types = NULL;
    float *scores = NULL;
    const char **ml = NULL, **mr = NULL;
    int rc = -1;
    const char *s;
    size_t n;
    if (tmpl) *tmpl = NULL;

    int k = gguf_get_str(f, "tokenizer.ggml.model", &s, &n, err, errlen);
    if (k < 0) goto out;
    int spm = k == 1 && n == 5 && !memcmp(s, "llama", 5); /* SentencePiece-style */
    if (!spm && (k == 0 || n != 4 || memcmp(s, "gpt2", 4))) {
        errmsg_at(err, errlen, f->path,
                  "tokenizer model '%.*s' is not supported (gpt2 byte-level BPE or llama "
                  "SentencePiece)",
                  k ? (int)(n > 64 ? 64 : n) : 6, k ? s : "(none)");
        goto out;
    }
    sp.pre = spm ? TOK_PRE_NONE : TOK_PRE_GPT2;
    k = gguf_get_str(f, "tokenizer.ggml.pre", &s, &n, err, errlen);
    if (k < 0) goto out;
    if (k == 1 && !spm) { /* llama.cpp's SentencePiece path has no pre-tokenizer */
        int pre = ld_gguf_pre(s, n);
        if (pre < 0) {
            errmsg_at(err, errlen, f->path, "pre-tokenizer '%.*s' is not supported",
                      (int)(n > 64 ? 64 : n), s);
            goto out;
        }
        sp.pre = (enum tok_pre)pre;
    }
    k = gguf_get_str_array(f, "tokenizer.ggml.tokens", &toks, &tlens, &ntok, err, errlen);
    if (k < 0) goto out;
    if (k == 0 || ntok == 0 || ntok > (1u << 24)) {
        errmsg_at(err, errlen, f->path, "missing or empty 'tokenizer.ggml.tokens'");
        goto out;
    }
    k = gguf_get_i32_array(f, "tokenizer.ggml.token_type", &types, &ntype, err, errlen);
    if (k < 0) goto out;
    if (k == 1 && ntype != ntok) {
        errmsg_at(err, errlen, f->path, "tokenizer.ggml.token_type has %zu entries, tokens %zu",
                  ntype, ntok);
        goto out;
    }
    k = gguf_get_str_array(f, "tokenizer.ggml.merges", &merges, &mlens, &nmer, err, errlen);
    if (k < 0) goto out;
    ml = malloc((nmer + 1) * sizeof(*ml));
    mr = malloc((nmer + 1) * sizeof(*mr));
    if (!ml || !mr) {
        errmsg_at(err, errlen, f->path, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nmer; i++) {
        char *sp_ = strchr(merges[i], ' ');
        if (!sp_) {
            errmsg_at(err, errlen, f->path, "tokenizer.ggml.merges[%zu] '%.64s' has no space", i,
                      merges[i]);
            goto out;
        }
        *sp_ = 0; /* our own copy: split in place */
        ml[i] = merges[i];
        mr[i] = sp_ + 1;
    }
    sp.n_tokens = (int)ntok;
    sp.tokens = (const char *const *)toks;
    sp.token_lens = tlens;
    sp.token_types = types;
    sp.n_merges = (int)nmer;
    sp.merge_left = ml;
    sp.merge_right = mr;
    if (ld_gguf_tok_id(f, "tokenizer.ggml.bos_token_id", &sp.bos_id, err, errlen) ||
        ld_gguf_tok_id(f, "tokenizer.ggml.eos_token_id", &sp.eos_id, err, errlen) ||
        ld_gguf_tok_id(f, "tokenizer.ggml.eot_token_id", &sp.eot_id, err, errlen) ||
        ld_gguf_tok_id(f, "tokenizer.ggml.padding_token_id", &sp.pad_id, err, errlen) ||
        ld_gguf_tok_id(f, "tokenizer.ggml.unknown_token_id", &sp.unk_id, err, errlen))
        goto out;
    sp.add_bos = sp.pre == TOK_PRE_LLAMA3 || spm; /* llama.cpp's default when the key is absent */
    if (spm && ld_gguf_spm(f, ntok, &sp, &scores, err, errlen) < 0) goto out;
    if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &sp.add_bos, err, errlen) < 0 ||
        gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &sp.add_eos, err, errlen) < 0)
        goto out;
    char terr[512];
    if (tokenizer_init(&sp, tok, terr, sizeof(terr))) {
        errmsg_at(err, errlen, f->path, "tokenizer: %s", terr);
        goto out;
    }
    if (tmpl) {
        k = gguf_get_str(f, "tokenizer.chat_template", &s, &n, err, errlen);
        if (k < 0) goto out_tok;
        if (k == 1) {
            if (!(*tmpl = malloc(n + 1))) {
                errmsg_at(err, errlen, f->path, "out of memory");
                goto out_tok;
            }
            memcpy(*tmpl, s, n);
            (*tmpl)[n] = 0;
        }
    }
    rc = 0;
    goto out;
out_tok:
    tokenizer_free(*tok);
    *tok = NULL;
out:
    free(toks);
    free(tlens);
    free(merges);
    free(mlens);
    free(types);
    free(scores);
    free(ml);
    free(mr);
    return rc;
}

static int ld_load_gguf(struct model *m, unsigned flags, model_progress_fn progress, void *user,
                        double t0, char *err, size_t errlen) {
    struct gguf_file *f = NULL;
    struct ld_plan p = {0};
    int rc = -1;
    if (gguf_open(m->path, &f, err, errlen) || ld_gguf_config(f, &m->cfg, err, errlen)) goto out;
    if (!(m->w.layers = calloc((size_t)m->cfg.n_layers, sizeof(*m->w.layers))) ||
        ld_plan_build(m, 1, NULL, &p)) {
        errmsg_at(err, errlen, m->path, "out of memory");
        goto out;
    }
    for (int i = 0; i < p.n; i++)
        if (ld_check_gguf(f, &p.items[i], err, errlen)) goto out;
    if (ld_gguf_tokenizer(f, &m->tok, &m->chat_template, err, errlen)) goto out;
    if (tokenizer_n_vocab(m->tok) > m->cfg.vocab_size) {
        errmsg_at(err, errlen, m->path, "tokenizer has %d tokens but vocab_size is %d",
                  tokenizer_n_vocab(m->tok), m->cfg.vocab_size);
        goto out;
    }
    if ((flags & (MODEL_LOAD_KEEP_BLOCKS | MODEL_LOAD_KEEP_FILE)) &&
        ld_qarena(m, &p, flags, err, errlen))
        goto out;
    if (ld_arena(m, &p, err, errlen) || ld_convert(m, &p, f, progress, user, t0, err, errlen))
        goto out;
    if (m->w.mapped_bytes) { /* kept tensors point into the mapping: it lives with the model */
        m->file = f;
        f = NULL;
    }
    rc = 0;
out:
    free(p.items);
    gguf_close(f);
    return rc;
}

/* --- Hugging Face checkpoint --------------------------------------------------------------------
 */

static int ld_load_hf(struct model *m, const char *dir, model_progress_fn progress, void *user,
                      double t0, char *err, size_t errlen) {
    struct safetensors *s = NULL;
    struct ld_plan p = {0};
    struct fp8_ckpt q;
    int rc = -1;
    char path[4200]; /* dir is < 4096 bytes */
    snprintf(path, sizeof(path), "%s/config.json", dir);
    if (hf_config_load(path, &m->cfg, err, errlen) || fp8_ckpt_config(path, &q, err, errlen) ||
        safetensors_open_dir(dir, &s, err, errlen))
        goto out;
    /* Gemma3ForConditionalGeneration keeps the text model under a prefix (transformers 5:
     * model.language_model., 4.x: language_model.model.); the vision tower is not read. */
    const char *prefix = "model.";
    if (safetensors_find(s, "model.language_model.embed_tokens.weight"))
        prefix = "model.language_model.";
    else if (safetensors_find(s, "language_model.model.embed_tokens.weight"))
        prefix = "language_model.model.";
    if (!safetensors_find(s, "lm_head.weight")) m->cfg.tied_embeddings = 1;
    if (!(m->w.layers = calloc((size_t)m->cfg.n_layers, sizeof(*m->w.layers))) ||
        ld_plan_build(m, 0, prefix, &p)) {
        errmsg_at(err, errlen, dir, "out of memory");
        goto out;
    }
    for (int i = 0; i < p.n; i++)
        if (ld_check_st(s, dir, &q, &p.items[i], err, errlen)) goto out;
    /* A bias the family does not have would be silently dropped: refuse it. */
    for (size_t i = 0; i < s->n_tensors; i++) {
        const char *nm = s->tensors[i].name;
        size_t l = strlen(nm);
        if (l < 5 || strcmp(nm + l - 5, ".bias")) continue;
        int planned = 0;
        for (int k = 0; k < p.n && !planned; k++)
            planned = !strcmp(p.items[k].name, nm);
        if (!planned) {
            errmsg_at(err, errlen, s->files[s->tensors[i].file].path,
                      "bias tensor '%s' is not supported (only Qwen2's q/k/v biases are)", nm);
            goto out;
        }
    }
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    char terr[512];
    if (tokenizer_from_json(path, &m->tok, &m->chat_template, terr, sizeof(terr))) {
        errmsg_at(err, errlen, NULL, "%s", terr);
        goto out;
    }
    if (tokenizer_n_vocab(m->tok) > m->cfg.vocab_size) {
        errmsg_at(err, errlen, dir, "tokenizer has %d tokens but vocab_size is %d",
                  tokenizer_n_vocab(m->tok), m->cfg.vocab_size);
        goto out;
    }
    if (ld_arena(m, &p, err, errlen) || ld_convert(m, &p, NULL, progress, user, t0, err, errlen))
        goto out;
    fp8_ckpt_note(&q, dir, m->notice, sizeof m->notice);
    rc = 0;
out:
    free(p.items);
    safetensors_close(s);
    return rc;
}

/* --- entry points -------------------------------------------------------------------------------
 */

/* Classify PATH: 1 = GGUF file, 0 = HF checkpoint (DIR filled), -1 = error. */
static int ld_resolve(const char *path, char *dir, size_t cap, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st)) {
        errmsg_at(err, errlen, path, "cannot open: %s", strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        snprintf(dir, cap, "%s", path);
        return 0;
    }
    size_t n = strlen(path);
    if ((n >= 5 && !strcmp(path + n - 5, ".json")) || /* config.json, tokenizer.json */
        (n >= 12 && !strcmp(path + n - 12, ".safetensors"))) {
        const char *slash = strrchr(path, '/');
        if (!slash)
            snprintf(dir, cap, ".");
        else
            snprintf(dir, cap, "%.*s", (int)(slash - path), path);
        return 0;
    }
    FILE *fp = fopen(path, "rb");
    unsigned char magic[4] = {0};
    size_t got = fp ? fread(magic, 1, 4, fp) : 0;
    if (fp) fclose(fp);
    if (got == 4 && !memcmp(magic, "GGUF", 4)) return 1;
    if (got < 4) {
        errmsg_at(err, errlen, path, "truncated or empty file (%zu bytes)", got);
        return -1;
    }
    errmsg_at(err, errlen, path,
              "not a GGUF file (bad magic) nor a Hugging Face checkpoint directory");
    return -1;
}

/* Clear every kept qtensor of M whose data lies in [lo, hi). */
static void ld_clear_kept(struct model *m, const uint8_t *lo, const uint8_t *hi) {
    struct fg_qtensor *q[] = {&m->w.q_embd, &m->w.q_output};
    for (int k = 0; k < 2; k++)
        if ((const uint8_t *)q[k]->data >= lo && (const uint8_t *)q[k]->data < hi)
            memset(q[k], 0, sizeof(*q[k]));
    for (int l = 0; l < m->cfg.n_layers; l++) {
        struct model_layer *L = &m->w.layers[l];
        struct fg_qtensor *lq[] = {&L->qwq,     &L->qwk,   &L->qwv,    &L->qwo,
                                   &L->qw_gate, &L->qw_up, &L->qw_down};
        for (int k = 0; k < 7; k++)
            if ((const uint8_t *)lq[k]->data >= lo && (const uint8_t *)lq[k]->data < hi)
                memset(lq[k], 0, sizeof(*lq[k]));
    }
}

void model_drop_file(struct model *m) {
    if (m->w.qarena) { /* blocks copied out of the file (un-permuted Q/K rows, ...): gone too */
        ld_clear_kept(m, m->w.qarena, (const uint8_t *)m->w.qarena + m->w.qarena_bytes);
        free(m->w.qarena);
        m->w.qarena = NULL;
        m->w.qarena_bytes = 0;
    }
    if (!m->file) return;
    ld_clear_kept(m, m->file->map, m->file->map + m->file->size);
    m->w.mapped_bytes = 0;
    m->qk_file_order = 0;
    gguf_close(m->file);
    m->file = NULL;
}

void model_free(struct model *m) {
    if (!m) return;
    tokenizer_free(m->tok);
    free(m->chat_template);
    free(m->w.arena);
    free(m->w.qarena);
    gguf_close(m->file);
    free(m->w.layers);
    free(m->path);
    free(m);
}

int model_load(const char *path, struct model **out, model_progress_fn progress, void *user,
               char *err, size_t errlen) {
    return model_load_flags(path, 0, out, progress, user, err, errlen);
}

int model_load_flags(const char *path, unsigned flags, struct model **out,
                     model_progress_fn progress, void *user, char *err, size_t errlen) {
    double t0 = ld_now();
    *out = NULL;
    if (err && errlen) err[0] = 0;
    struct model *m = calloc(1, sizeof(*m));
    if (!m || !(m->path = strdup(path))) {
        free(m);
        errmsg_at(err, errlen, path, "out of memory");
        return -1;
    }
    char dir[4096];
    int kind = ld_resolve(path, dir, sizeof(dir), err, errlen);
    int rc = -1;
    if (kind == 1) {
        strcpy(m->format, "gguf");
        rc = ld_load_gguf(m, flags, progress, user, t0, err, errlen);
    } else if (kind == 0) {
        strcpy(m->format, "safetensors");
        rc = ld_load_hf(m, dir, progress, user, t0, err, errlen);
    }
    if (rc) {
        model_free(m);
        return -1;
    }
    m->load_seconds = ld_now() - t0;
    *out = m;
    return 0;
}

int model_load_tokenizer(const char *path, struct tokenizer **out, char **chat_template, char *err,
                         size_t errlen) {
    *out = NULL;
    if (chat_template) *chat_template = NULL;
    char dir[4096];
    int kind = ld_resolve(path, dir, sizeof(dir), err, errlen);
    if (kind < 0) return -1;
    if (kind == 0) {
        char p[4200];
        snprintf(p, sizeof(p), "%s/tokenizer.json", dir);
        return tokenizer_from_json(p, out, chat_template, err, errlen);
    }
    struct gguf_file *f = NULL;
    if (gguf_open(path, &f, err, errlen)) return -1;
    int rc = ld_gguf_tokenizer(f, out, chat_template, err, errlen);
    gguf_close(f);
    return rc;
}
