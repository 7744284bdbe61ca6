/* test_forward.c — the forward pass on a random in-memory model (no loader involved):
 * against an independent fp64 reference written out like the maths; incremental decode against
 * one-shot prefill; a mixed batch against each sequence alone. GQA ratio 3 and head_dim 8 keep
 * it small yet catch head-mapping and RoPE-pairing mistakes. */
#include <criterion/criterion.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "model/forward.h"
#include "model/model.h"
#include "test_util.h"

struct rand_model {
    struct model_config cfg;
    struct model_weights w;
    float *mem;
};

static float *take(float **p, size_t n) {
    float *r = *p;
    *p += n;
    return r;
}

static void rand_model_init(struct rand_model *m, uint64_t *s, int n_heads, int n_kv) {
    memset(m, 0, sizeof(*m));
    struct model_config *c = &m->cfg;
    c->n_layers = 2;
    c->head_dim = 8;
    c->n_heads = n_heads;
    c->n_kv_heads = n_kv;
    c->dim = 24;
    c->ffn_dim = 40;
    c->vocab_size = 50;
    c->max_seq_len = 64;
    c->rope_theta = 10000;
    c->rms_eps = 1e-5f;
    size_t D = c->dim, QD = (size_t)n_heads * c->head_dim, KVD = (size_t)n_kv * c->head_dim;
    size_t per_layer = 2 * D + QD * D + 2 * KVD * D + D * QD + 3 * (size_t)c->ffn_dim * D;
    size_t total = 2 * (size_t)c->vocab_size * D + D + c->n_layers * per_layer + c->head_dim / 2;
    m->mem = malloc(sizeof(float) * total);
    tu_fill(s, m->mem, total, -0.5f, 0.5f);
    float *p = m->mem;
    m->w.tok_embd = take(&p, (size_t)c->vocab_size * D);
    m->w.output = take(&p, (size_t)c->vocab_size * D);
    m->w.out_norm = take(&p, D);
    m->w.layers = calloc((size_t)c->n_layers, sizeof(struct model_layer));
    for (int l = 0; l < c->n_layers; l++) {
        struct model_layer *L = &m->w.layers[l];
        L->attn_norm = take(&p, D);
        L->ffn_norm = take(&p, D);
        L->wq = take(&p, QD * D);
        L->wk = take(&p, KVD * D);
        L->wv = take(&p, KVD * D);
        L->wo = take(&p, D * QD);
        L->w_gate = take(&p, (size_t)c->ffn_dim * D);
        L->w_up = take(&p, (size_t)c->ffn_dim * D);
        L->w_down = take(&p, D * c->ffn_dim);
    }
    m->w.rope_freqs = take(&p, (size_t)c->head_dim / 2);
    model_rope_freqs(c, m->w.rope_freqs);
}

static void rand_model_free(struct rand_model *m) {
    free(m->w.layers);
    free(m->mem);
}

/* ---- fp64 reference: one sequence, all tokens, straight from the equations ---------------- */

static void ref_rmsnorm(double *out, const double *x, const float *w, int d, float eps) {
    double ss = 0;
    for (int i = 0; i < d; i++)
        ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / d + eps);
    for (int i = 0; i < d; i++)
        out[i] = x[i] * inv * w[i];
}

static void ref_linear(double *out, const double *x, const float *w, int in, int outd) {
    for (int o = 0; o < outd; o++) {
        double a = 0;
        for (int i = 0; i < in; i++)
            a += x[i] * w[(size_t)o * in + i];
        out[o] = a;
    }
}

static void ref_rope(double *x, int n_heads, int hd, int pos, double theta) {
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < hd / 2; i++) {
            double f = pow(theta, -2.0 * i / hd), a = pos * f;
            double *r = x + h * hd, x0 = r[i], x1 = r[i + hd / 2];
            r[i] = x0 * cos(a) - x1 * sin(a);
            r[i + hd / 2] = x1 * cos(a) + x0 * sin(a);
        }
}

/* logits of the last token */
static void ref_forward(const struct rand_model *m, const int *tokens, int n, double *logits) {
    const struct model_config *c = &m->cfg;
    int D = c->dim, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, F = c->ffn_dim;
    int QD = nh * hd, KVD = nkv * hd;
    double *x = calloc((size_t)n * D, sizeof(double)), *h = malloc(sizeof(double) * D);
    double *q = malloc(sizeof(double) * QD * n), *k = malloc(sizeof(double) * KVD * n);
    double *v = malloc(sizeof(double) * KVD * n), *att = malloc(sizeof(double) * QD);
    double *o = malloc(sizeof(double) * D), *g = malloc(sizeof(double) * F);
    double *u = malloc(sizeof(double) * F), *sc = malloc(sizeof(double) * n);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < D; i++)
            x[t * D + i] = m->w.tok_embd[(size_t)tokens[t] * D + i];
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_layer *L = &m->w.layers[l];
        for (int t = 0; t < n; t++) {
            ref_rmsnorm(h, x + t * D, L->attn_norm, D, c->rms_eps);
            ref_linear(q + t * QD, h, L->wq, D, QD);
            ref_linear(k + t * KVD, h, L->wk, D, KVD);
            ref_linear(v + t * KVD, h, L->wv, D, KVD);
            ref_rope(q + t * QD, nh, hd, t, c->rope_theta);
            ref_rope(k + t * KVD, nkv, hd, t, c->rope_theta);
        }
        for (int t = 0; t < n; t++) {
            for (int hh = 0; hh < nh; hh++) {
                int kvh = hh / (nh / nkv); /* HF repeat_kv: consecutive query heads share */
                double mx = -1e300, sum = 0;
                for (int j = 0; j <= t; j++) {
                    double d = 0;
                    for (int i = 0; i < hd; i++)
                        d += q[t * QD + hh * hd + i] * k[j * KVD + kvh * hd + i];
                    sc[j] = d / sqrt(hd);
                    if (sc[j] > mx) mx = sc[j];
                }
                for (int j = 0; j <= t; j++)
                    sum += sc[j] = exp(sc[j] - mx);
                for (int i = 0; i < hd; i++) {
                    double a = 0;
                    for (int j = 0; j <= t; j++)
                        a += sc[j] / sum * v[j * KVD + kvh * hd + i];
                    att[hh * hd + i] = a;
                }
            }
            ref_linear(o, att, L->wo, QD, D);
            for (int i = 0; i < D; i++)
                x[t * D + i] += o[i];
            ref_rmsnorm(h, x + t * D, L->ffn_norm, D, c->rms_eps);
            ref_linear(g, h, L->w_gate, D, F);
            ref_linear(u, h, L->w_up, D, F);
            for (int i = 0; i < F; i++)
                g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            ref_linear(o, g, L->w_down, F, D);
            for (int i = 0; i < D; i++)
                x[t * D + i] += o[i];
        }
    }
    ref_rmsnorm(h, x + (n - 1) * D, m->w.out_norm, D, c->rms_eps);
    ref_linear(logits, h, m->w.output, D, c->vocab_size);
    free(x), free(h), free(q), free(k), free(v), free(att), free(o), free(g), free(u), free(sc);
}

struct rig {
    struct rand_model m;
    void *ctx;
    struct kv_cache kv;
    struct fwd_state *fwd;
};

static void rig_init(struct rig *r, uint64_t *s, int n_heads, int n_kv, int page_size) {
    char err[256];
    rand_model_init(&r->m, s, n_heads, n_kv);
    r->ctx = cpu_ops_create(2);
    cr_assert_eq(kv_cache_init(&r->kv, cpu_ops(), r->ctx, &r->m.cfg, 64, page_size, 4), 0);
    cr_assert_eq(
        fwd_init(&r->fwd, &r->m.cfg, &r->m.w, cpu_ops(), r->ctx, &r->kv, 48, 4, err, sizeof(err)),
        0, "%s", err);
}

static void rig_free(struct rig *r) {
    fwd_free(r->fwd);
    kv_cache_free(&r->kv);
    cpu_ops_destroy(r->ctx);
    rand_model_free(&r->m);
}

static void run_one(struct rig *r, const int *toks, int n, struct kv_seq *seq, float *logits) {
    char err[256];
    cr_assert_eq(kv_seq_reserve(&r->kv, seq, seq->n_tokens + n), 0);
    struct fwd_seq fs = {toks, n, seq, n};
    cr_assert_eq(fwd_run(r->fwd, &fs, 1, logits, err, sizeof(err)), 0, "%s", err);
}

Test(forward, matches_fp64_reference_for_each_gqa_ratio) {
    uint64_t seed = tu_seed(), s = seed;
    int shapes[][2] = {{3, 1}, {3, 3}, {4, 1}, {8, 1}};
    for (int c = 0; c < 4; c++) {
        struct rig r;
        rig_init(&r, &s, shapes[c][0], shapes[c][1], 5);
        int toks[19];
        for (int i = 0; i < 19; i++)
            toks[i] = (int)(tu_next(&s) % 50);
        float logits[50];
        double ref[50];
        struct kv_seq seq = {0};
        run_one(&r, toks, 19, &seq, logits);
        ref_forward(&r.m, toks, 19, ref);
        float reff[50];
        for (int i = 0; i < 50; i++)
            reff[i] = (float)ref[i];
        double e = tu_rel_err(logits, reff, 50);
        /* fp32 vs fp64 through two small layers: ~1e-6 expected. */
        cr_assert(e < 1e-4, "heads %d/%d: rel err %g (seed %llu)", shapes[c][0], shapes[c][1], e,
                  (unsigned long long)seed);
        kv_seq_release(&r.kv, &seq);
        rig_free(&r);
    }
}

Test(forward, incremental_decode_equals_prefill) {
    uint64_t seed = tu_seed(), s = seed;
    struct rig r;
    rig_init(&r, &s, 4, 2, 4);
    int toks[30];
    for (int i = 0; i < 30; i++)
        toks[i] = (int)(tu_next(&s) % 50);
    float full[50], step[50];
    struct kv_seq a = {0}, b = {0};
    run_one(&r, toks, 30, &a, full);
    run_one(&r, toks, 11, &b, step); /* chunked prefill: 11 + 13, then 6 single steps */
    run_one(&r, toks + 11, 13, &b, step);
    for (int i = 24; i < 30; i++)
        run_one(&r, toks + i, 1, &b, step);
    cr_assert_eq(b.n_tokens, 30);
    double e = tu_rel_err(step, full, 50);
    cr_assert(e < 1e-5, "rel err %g (seed %llu)", e, (unsigned long long)seed);
    kv_seq_release(&r.kv, &a);
    kv_seq_release(&r.kv, &b);
    rig_free(&r);
}

Test(forward, mixed_batch_equals_each_alone) {
    uint64_t seed = tu_seed(), s = seed;
    struct rig r;
    rig_init(&r, &s, 6, 2, 3);
    int toks[3][24];
    for (int b = 0; b < 3; b++)
        for (int i = 0; i < 24; i++)
            toks[b][i] = (int)(tu_next(&s) % 50);
    /* Alone: seq b prefilled with its first 10 + 5b tokens, then one more token. */
    float alone[3][50], batch[3][50], tmp[50];
    for (int b = 0; b < 3; b++) {
        struct kv_seq q = {0};
        run_one(&r, toks[b], 10 + 5 * b, &q, tmp);
        run_one(&r, toks[b] + 10 + 5 * b, 1, &q, alone[b]);
        kv_seq_release(&r.kv, &q);
    }
    /* Together: seq 0 decodes one token while seqs 1 and 2 prefill in the same step. */
    struct kv_seq q[3] = {{0}};
    run_one(&r, toks[0], 10, &q[0], tmp);
    for (int b = 0; b < 3; b++)
        cr_assert_eq(kv_seq_reserve(&r.kv, &q[b], 11 + 5 * b), 0);
    struct fwd_seq fs[3] = {
        {toks[0] + 10, 1, &q[0], 0}, {toks[1], 16, &q[1], 16}, {toks[2], 21, &q[2], 21}};
    char err[256];
    cr_assert_eq(fwd_run(r.fwd, fs, 3, &batch[0][0], err, sizeof(err)), 0, "%s", err);
    for (int b = 0; b < 3; b++) {
        double e = tu_rel_err(batch[b], alone[b], 50);
        cr_assert(e < 1e-5, "seq %d rel err %g (seed %llu)", b, e, (unsigned long long)seed);
        kv_seq_release(&r.kv, &q[b]);
    }
    rig_free(&r);
}

Test(forward, rejects_bad_steps) {
    uint64_t s = tu_seed();
    struct rig r;
    rig_init(&r, &s, 4, 2, 4);
    char err[256];
    int toks[2] = {1, 99};
    struct kv_seq q = {0};
    cr_assert_eq(kv_seq_reserve(&r.kv, &q, 2), 0);
    struct fwd_seq fs = {toks, 2, &q, 2};
    float logits[50];
    cr_assert_eq(fwd_run(r.fwd, &fs, 1, logits, err, sizeof(err)), -1);
    cr_assert(strstr(err, "out of range"), "%s", err);
    toks[1] = 2;
    fs.n_tokens = 9; /* more than reserved */
    int many[9] = {0};
    fs.tokens = many;
    cr_assert_eq(fwd_run(r.fwd, &fs, 1, logits, err, sizeof(err)), -1);
    cr_assert(strstr(err, "pages"), "%s", err);
    kv_seq_release(&r.kv, &q);
    rig_free(&r);
}

/* A backend without one of the family ops cannot run a model that needs it: fwd_check_backend
 * (and so fwd_init and the engine, before any weight upload) names the missing feature. The CPU
 * table has every op; the CUDA table today leaves the family ops NULL, as this copy does. */
Test(forward, backend_without_a_family_op_is_refused_naming_it) {
    struct model_config c;
    memset(&c, 0, sizeof(c));
    strcpy(c.arch, "gemma3");
    c.n_layers = 6;
    c.max_seq_len = 1024;
    char err[256];
    cr_assert_eq(fwd_check_backend(&c, cpu_ops(), err, sizeof(err)), 0, "plain llama: %s", err);
    struct fg_ops gpu_like = *cpu_ops();
    gpu_like.name = "cuda";
    gpu_like.add_rows = NULL;
    gpu_like.head_norm = NULL;
    gpu_like.attention_window = NULL;
    gpu_like.norm_add = NULL;
    gpu_like.geglu = NULL;
    gpu_like.scale = NULL;
    gpu_like.softcap = NULL;
    cr_assert_eq(fwd_check_backend(&c, &gpu_like, err, sizeof(err)), 0, "no switch on: %s", err);
    static const struct {
        size_t off; /* the switch to turn on */
        int is_float;
        const char *want;
    } sw[] = {
        {offsetof(struct model_config, attn_bias), 0, "q/k/v biases"},
        {offsetof(struct model_config, qk_norm), 0, "QK-norm"},
        {offsetof(struct model_config, post_norms), 0, "post-attention/post-MLP norms"},
        {offsetof(struct model_config, act), 0, "GELU-tanh"},
        {offsetof(struct model_config, embed_scale), 1, "scaled embeddings"},
        {offsetof(struct model_config, final_softcap), 1, "soft-capping"},
        {offsetof(struct model_config, sliding_window), 0, "sliding-window attention"},
    };
    for (size_t i = 0; i < sizeof(sw) / sizeof(sw[0]); i++) {
        struct model_config d = c;
        if (sw[i].is_float)
            *(float *)((char *)&d + sw[i].off) = 8.0f;
        else
            *(int *)((char *)&d + sw[i].off) = 1;
        cr_expect_eq(fwd_check_backend(&d, cpu_ops(), err, sizeof(err)), 0, "cpu: %s", err);
        cr_assert_eq(fwd_check_backend(&d, &gpu_like, err, sizeof(err)), -1, "case %zu", i);
        cr_expect(strstr(err, sw[i].want) && strstr(err, "cuda") && strstr(err, "gemma3"),
                  "case %zu: %s", i, err);
    }
    /* Gemma 3's window pattern with every layer global needs no windowed attention, nor does
     * a window as long as the context (Mistral v0.1's 4096 at a 4096 context) */
    c.sliding_window = 512;
    c.sliding_pattern = 1;
    cr_assert_eq(fwd_check_backend(&c, &gpu_like, err, sizeof(err)), 0, "%s", err);
    c.sliding_pattern = 0;
    c.sliding_window = c.max_seq_len;
    cr_assert_eq(fwd_check_backend(&c, &gpu_like, err, sizeof(err)), 0, "%s", err);
    c.sliding_window = c.max_seq_len - 1;
    cr_assert_eq(fwd_check_backend(&c, &gpu_like, err, sizeof(err)), -1);
}

/* Decode steps padded to the batch bucket (what the CUDA backend's graphs run): the real rows'
 * logits are those of the unpadded step, the padding rows write only the page the forward state
 * took for them, and the bucket table is the documented one. */
Test(forward, padded_decode_equals_unpadded) {
    cr_assert_eq(fwd_batch_bucket(1), 1);
    cr_assert_eq(fwd_batch_bucket(8), 8);
    cr_assert_eq(fwd_batch_bucket(9), 16);
    cr_assert_eq(fwd_batch_bucket(65), 80);
    cr_assert_eq(fwd_batch_bucket(129), 160);
    cr_assert_eq(fwd_batch_bucket(256), 256);
    cr_assert_eq(fwd_batch_bucket(257), 320);
    uint64_t seed = tu_seed(), s = seed;
    struct rig r;
    char err[256];
    rand_model_init(&r.m, &s, 4, 2);
    r.ctx = cpu_ops_create(2);
    cr_assert_eq(kv_cache_init(&r.kv, cpu_ops(), r.ctx, &r.m.cfg, 64, 4, 4), 0);
    cr_assert_eq(
        fwd_init(&r.fwd, &r.m.cfg, &r.m.w, cpu_ops(), r.ctx, &r.kv, 48, 16, err, sizeof(err)), 0,
        "%s", err);
    enum { B = 11 }; /* runs as 16 rows */
    struct kv_seq q[B] = {{0}};
    int toks[B][8];
    float tmp[50], plain[B][50], padded[B][50];
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < 8; i++)
            toks[b][i] = (int)(tu_next(&s) % 50);
        run_one(&r, toks[b], 5 + b % 3, &q[b], tmp);
        cr_assert_eq(kv_seq_reserve(&r.kv, &q[b], q[b].n_tokens + 2), 0);
    }
    struct fwd_seq fs[B];
    for (int b = 0; b < B; b++)
        fs[b] = (struct fwd_seq){&toks[b][7], 1, &q[b], 0};
    cr_assert_eq(fwd_run(r.fwd, fs, B, &plain[0][0], err, sizeof err), 0, "%s", err);
    for (int b = 0; b < B; b++)
        q[b].n_tokens--; /* the same step again, padded: it rewrites the same rows */
    int used = kv_cache_used(&r.kv);
    fwd_set_padding(r.fwd, 1);
    cr_assert_eq(fwd_run(r.fwd, fs, B, &padded[0][0], err, sizeof err), 0, "%s", err);
    cr_assert_eq(kv_cache_used(&r.kv), used + 1, "one page held for the padding rows");
    for (int b = 0; b < B; b++) {
        double e = tu_rel_err(padded[b], plain[b], 50);
        cr_assert(e < 1e-6, "seq %d rel err %g (seed %llu)", b, e, (unsigned long long)seed);
    }
    /* and the next steps (the page is reused) agree with a fresh unpadded rig's */
    for (int b = 0; b < B; b++)
        fs[b] = (struct fwd_seq){&toks[b][6], 1, &q[b], 0};
    cr_assert_eq(fwd_run(r.fwd, fs, B, &padded[0][0], err, sizeof err), 0, "%s", err);
    fwd_set_padding(r.fwd, 0);
    for (int b = 0; b < B; b++)
        q[b].n_tokens--;
    cr_assert_eq(fwd_run(r.fwd, fs, B, &plain[0][0], err, sizeof err), 0, "%s", err);
    for (int b = 0; b < B; b++)
        cr_assert(tu_rel_err(padded[b], plain[b], 50) < 1e-6, "seq %d, second step", b);
    for (int b = 0; b < B; b++)
        kv_seq_release(&r.kv, &q[b]);
    rig_free(&r);
}
