/* test_tp.c — tensor parallelism emulated on the CPU backend (model/tp.h): N shards on one
 * context, joined by the local communicator, against the unsharded forward pass.
 *
 * 1. The plan: every query head lands in exactly one shard and reads, through the shard's GQA
 *    mapping, the KV head it reads in the whole model.
 * 2. Random in-memory models of every family switch (Llama GQA, the uneven split SmolLM2's
 *    9 heads force, Qwen2 biases, Gemma 3's QK-norm, post-norms, GeGLU, scaled embeddings,
 *    sliding-window local layers and soft-capped logits) at N = 1 (one shard through the
 *    communicator), 2, 3, 4 and 8: a mixed prefill step then decode steps, every logit against
 *    the unsharded model.
 * 3. The default model (SmolLM2-135M, fp32 weights) and Gemma 3 270M through engine_open with
 *    tensor_parallel 2 and 4: logits against tensor_parallel 1, greedy tokens identical.
 * Tolerances: the shards sum the same products in another order (each o / down product is split
 * into N partial dot products, added after), so the results differ by fp32 reassociation only:
 * ~1e-6 relative; the bounds below leave 10-50x room for the model's depth.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "model/engine.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/tp.h"
#include "test_util.h"

#define SMOLLM2_PATH "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define GEMMA_PATH "models/gemma-3-270m-q4_k_m.gguf"

Test(tp, plan_maps_every_query_head_to_its_kv_head) {
    const int shapes[][2] = {{9, 3}, {32, 8}, {8, 2}, {4, 1}, {4, 4}, {6, 2}, {14, 2}, {64, 8}};
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++)
        for (int n = 1; n <= TP_MAX_SHARDS; n++) {
            struct model_config c = {.n_heads = shapes[k][0],
                                     .n_kv_heads = shapes[k][1],
                                     .ffn_dim = 64,
                                     .vocab_size = 100,
                                     .head_dim = 8};
            struct tp_plan p;
            char err[128];
            cr_assert_eq(tp_plan_make(&p, &c, n, err, sizeof(err)), 0, "%s", err);
            int seen[64] = {0}, g = c.n_heads / c.n_kv_heads;
            int group = p.q_slots / p.kv_slots; /* inside a shard: q slot j reads kv j / group */
            cr_assert_eq(p.q_slots % p.kv_slots, 0);
            for (int i = 0; i < n; i++)
                for (int j = 0; j < p.q_slots; j++) {
                    int h = tp_q_head(&p, i, j);
                    if (h < 0) continue;
                    seen[h]++;
                    cr_assert_eq(tp_kv_head(&p, &c, i, j / group), h / g,
                                 "%d/%d heads, %d shards: shard %d slot %d", c.n_heads,
                                 c.n_kv_heads, n, i, j);
                }
            for (int h = 0; h < c.n_heads; h++)
                cr_assert_eq(seen[h], 1, "%d/%d heads, %d shards: head %d seen %d times", c.n_heads,
                             c.n_kv_heads, n, h, seen[h]);
            /* the even cuts keep GQA: no more KV heads per shard than the whole model has */
            if (c.n_heads % n == 0 && n <= c.n_kv_heads && c.n_kv_heads % n == 0)
                cr_assert(!p.expanded && p.kv_slots == c.n_kv_heads / n);
            cr_assert_eq(p.ffn_lo[n], c.ffn_dim);
            cr_assert_eq(p.vocab_lo[n], c.vocab_size);
        }
    struct model_config c = {.n_heads = 6, .n_kv_heads = 4};
    struct tp_plan p;
    char err[128];
    cr_assert_eq(tp_plan_make(&p, &c, 2, err, sizeof(err)), -1); /* 6 % 4: no GQA */
    cr_assert_eq(tp_plan_make(&p, &c, 9, err, sizeof(err)), -1);
}

/* A random model laid out as the loader lays fp32 weights: q|k|v and gate|up back to back. */
struct rmodel {
    struct model m;
    float *mem;
};

static float *take(float **p, size_t n) {
    float *r = *p;
    *p += n;
    return r;
}

enum { F_BIAS = 1, F_GEMMA = 2 };

static void rmodel_init(struct rmodel *r, uint64_t *s, int n_heads, int n_kv, int flags) {
    memset(r, 0, sizeof(*r));
    struct model_config *c = &r->m.cfg;
    snprintf(c->arch, sizeof(c->arch), "%s", flags & F_GEMMA ? "gemma3" : "llama");
    c->n_layers = 3;
    c->head_dim = 8;
    c->n_heads = n_heads;
    c->n_kv_heads = n_kv;
    c->dim = 24;
    c->ffn_dim = 40;
    c->vocab_size = 53; /* not a multiple of any shard count */
    c->max_seq_len = 64;
    c->rope_theta = 10000;
    c->rms_eps = 1e-5f;
    c->attn_bias = (flags & F_BIAS) != 0;
    if (flags & F_GEMMA) {
        c->qk_norm = c->post_norms = 1;
        c->act = MODEL_ACT_GELU_TANH;
        c->embed_scale = sqrtf((float)c->dim);
        c->final_softcap = 3.0f;
        c->sliding_window = 6; /* shorter than the prompts: the window bites */
        c->sliding_pattern = 3;
        c->rope_local_theta = 1000;
        c->tied_embeddings = 1;
    }
    size_t D = c->dim, hd = c->head_dim, F = c->ffn_dim, V = c->vocab_size;
    size_t QKV = ((size_t)n_heads + 2 * (size_t)n_kv) * hd;
    size_t per_layer = 2 * D + QKV * D + D * n_heads * hd + 3 * F * D + QKV + 2 * hd + 2 * D;
    size_t total = 2 * V * D + D + c->n_layers * per_layer + hd;
    r->mem = malloc(sizeof(float) * total);
    tu_fill(s, r->mem, total, -0.5f, 0.5f);
    float *p = r->mem;
    struct model_weights *w = &r->m.w;
    w->tok_embd = take(&p, V * D);
    w->output = c->tied_embeddings ? w->tok_embd : take(&p, V * D);
    w->out_norm = take(&p, D);
    w->layers = calloc((size_t)c->n_layers, sizeof(struct model_layer));
    for (int l = 0; l < c->n_layers; l++) {
        struct model_layer *L = &w->layers[l];
        L->attn_norm = take(&p, D);
        L->ffn_norm = take(&p, D);
        L->wq = take(&p, QKV * D);
        L->wk = L->wq + (size_t)n_heads * hd * D;
        L->wv = L->wk + (size_t)n_kv * hd * D;
        L->wo = take(&p, D * n_heads * hd);
        L->w_gate = take(&p, 2 * F * D);
        L->w_up = L->w_gate + F * D;
        L->w_down = take(&p, D * F);
        L->bqkv = c->attn_bias ? take(&p, QKV) : NULL;
        L->q_norm = c->qk_norm ? take(&p, hd) : NULL;
        L->k_norm = c->qk_norm ? take(&p, hd) : NULL;
        L->post_attn_norm = c->post_norms ? take(&p, D) : NULL;
        L->post_ffn_norm = c->post_norms ? take(&p, D) : NULL;
    }
    w->rope_freqs = take(&p, hd / 2);
    model_rope_freqs(c, w->rope_freqs);
    w->rope_freqs_local = w->rope_freqs;
    if (c->rope_local_theta > 0) {
        w->rope_freqs_local = take(&p, hd / 2);
        model_rope_freqs_local(c, w->rope_freqs_local);
    }
}

/* N norm weights at D (backend memory, uploaded from H) are H's fp32 values bit for bit, at a
 * MODEL_NORMS_ALIGN boundary inside the norm region [BASE, BASE + BYTES). */
static void check_dev_norm(const float *d, const float *h, int n, const char *base, size_t bytes,
                           const char *what, int l) {
    cr_assert(d && h, "%s of layer %d missing", what, l);
    const char *at = (const char *)d;
    cr_assert(at >= base && at + sizeof(float) * (size_t)n <= base + bytes,
              "%s of layer %d outside the norm region", what, l);
    cr_assert_eq((size_t)(at - base) % MODEL_NORMS_ALIGN, 0, "%s of layer %d off the alignment",
                 what, l);
    cr_assert_eq(memcmp(d, h, sizeof(float) * (size_t)n), 0, "%s of layer %d not fp32-exact", what,
                 l);
}

/* Shard S after tp_shard_upload on the CPU backend: the norm region right after the rope tables
 * (head_dim 8: one MODEL_NORMS_ALIGN span each) and right before the embedding, every norm weight
 * in it fp32 and aligned (model_norms_upload). */
static void check_shard_norms(const struct tp_shard *s) {
    const struct model_config *c = &s->cfg;
    const struct model_weights *h = &s->w, *d = &s->dev;
    int tables = d->rope_freqs_local != d->rope_freqs ? 2 : 1;
    const char *base = (const char *)s->dev_arena + tables * MODEL_NORMS_ALIGN;
    size_t bytes = model_norms_bytes(c);
    cr_assert_eq((const char *)d->out_norm, base, "the norm region starts after the rope tables");
    cr_assert_eq((const char *)d->tok_embd, base + bytes, "the embedding follows the norm region");
    check_dev_norm(d->out_norm, h->out_norm, c->dim, base, bytes, "out_norm", -1);
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_layer *hl = &h->layers[l], *dl = &d->layers[l];
        check_dev_norm(dl->attn_norm, hl->attn_norm, c->dim, base, bytes, "attn_norm", l);
        check_dev_norm(dl->ffn_norm, hl->ffn_norm, c->dim, base, bytes, "ffn_norm", l);
        if (c->qk_norm) {
            check_dev_norm(dl->q_norm, hl->q_norm, c->head_dim, base, bytes, "q_norm", l);
            check_dev_norm(dl->k_norm, hl->k_norm, c->head_dim, base, bytes, "k_norm", l);
        }
        if (c->post_norms) {
            check_dev_norm(dl->post_attn_norm, hl->post_attn_norm, c->dim, base, bytes,
                           "post_attn_norm", l);
            check_dev_norm(dl->post_ffn_norm, hl->post_ffn_norm, c->dim, base, bytes,
                           "post_ffn_norm", l);
        }
    }
}

/* N shards of R's model on CTX (N = 0: the unsharded state; 1: one shard through the
 * communicator); logits of a mixed prefill step of three sequences, then STEPS decode steps of all
 * three, into OUT ((1 + STEPS) * 3 * vocab). UPLOAD: each shard copied by tp_shard_upload into
 * CPU backend memory and run from there (the GPU's layout, fp32 elements). */
static void run_sharded(struct rmodel *r, void *ctx, int n, int steps, const int toks[3][30],
                        float *out, int upload) {
    char err[256];
    const struct model_config *c = &r->m.cfg;
    struct tp_plan plan;
    struct tp_shard shards[TP_MAX_SHARDS];
    struct fwd_shard fs[TP_MAX_SHARDS];
    struct tp_comm *comm = NULL;
    struct model_config kvc = *c;
    memset(shards, 0, sizeof(shards));
    if (n > 0) {
        cr_assert_eq(tp_plan_make(&plan, c, n, err, sizeof(err)), 0, "%s", err);
        for (int i = 0; i < n; i++) {
            cr_assert_eq(tp_shard_build(&shards[i], &plan, &r->m, i, err, sizeof(err)), 0, "%s",
                         err);
            if (upload) {
                cr_assert_eq(
                    tp_shard_upload(&shards[i], cpu_ops(), ctx, c->vocab_size, err, sizeof(err)), 0,
                    "%s", err);
                check_shard_norms(&shards[i]);
            }
            fs[i] = (struct fwd_shard){.cfg = &shards[i].cfg,
                                       .w = upload ? &shards[i].dev : &shards[i].w,
                                       .ops = cpu_ops(),
                                       .ops_ctx = ctx};
        }
        cr_assert_eq(tp_comm_local(&comm, n, cpu_ops(), ctx, err, sizeof(err)), 0, "%s", err);
        tp_kv_config(&plan, c, &kvc);
    } else {
        fs[0] = (struct fwd_shard){.cfg = c, .w = &r->m.w, .ops = cpu_ops(), .ops_ctx = ctx};
    }
    struct kv_cache kv;
    cr_assert_eq(kv_cache_init(&kv, cpu_ops(), ctx, &kvc, 40, 4, 4), 0);
    struct fwd_state *st;
    cr_assert_eq(fwd_init_tp(&st, c, fs, n > 0 ? n : 1, comm, &kv, 64, 4, err, sizeof(err)), 0,
                 "%s", err);
    struct kv_seq q[3] = {{0}};
    int len[3] = {17, 9, 1};
    for (int b = 0; b < 3; b++)
        cr_assert_eq(kv_seq_reserve(&kv, &q[b], len[b] + steps), 0);
    struct fwd_seq f[3] = {
        {toks[0], 17, &q[0], 17}, {toks[1], 9, &q[1], 9}, {toks[2], 1, &q[2], 1}};
    size_t V = c->vocab_size;
    cr_assert_eq(fwd_run(st, f, 3, out, err, sizeof(err)), 0, "%s", err);
    for (int s = 1; s <= steps; s++) {
        for (int b = 0; b < 3; b++)
            f[b] = (struct fwd_seq){&toks[b][len[b] + s - 1], 1, &q[b], 0};
        cr_assert_eq(fwd_run(st, f, 3, out + (size_t)s * 3 * V, err, sizeof(err)), 0, "%s", err);
    }
    for (int b = 0; b < 3; b++)
        kv_seq_release(&kv, &q[b]);
    fwd_free(st);
    kv_cache_free(&kv);
    tp_comm_free(comm);
    for (int i = 0; i < n; i++)
        tp_shard_free(&shards[i], upload ? cpu_ops() : NULL, ctx);
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Three random 30-token prompts over a V-token vocabulary. */
static void random_prompts(int toks[3][30], int V, uint64_t *s) {
    for (int b = 0; b < 3; b++)
        for (int i = 0; i < 30; i++)
            toks[b][i] = (int)(tu_next(s) % (uint64_t)V);
}

Test(tp, sharded_forward_equals_unsharded_for_every_family) {
    uint64_t seed = tu_seed(), s = seed;
    const struct {
        int heads, kv, flags;
    } shapes[] = {{8, 2, 0},      {9, 3, 0},       {4, 4, 0},
                  {6, 2, F_BIAS}, {4, 1, F_GEMMA}, {9, 3, F_BIAS | F_GEMMA}};
    const int ns[] = {1, 2, 3, 4, 8}; /* 1: one shard through the communicator */
    enum { STEPS = 4 };
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        struct rmodel r;
        rmodel_init(&r, &s, shapes[k].heads, shapes[k].kv, shapes[k].flags);
        int V = r.m.cfg.vocab_size;
        int toks[3][30];
        random_prompts(toks, V, &s);
        size_t nl = (size_t)(1 + STEPS) * 3 * V;
        float *ref = malloc(sizeof(float) * nl), *got = malloc(sizeof(float) * nl);
        void *ctx = cpu_ops_create(2);
        run_sharded(&r, ctx, 0, STEPS, toks, ref, 0);
        for (size_t t = 0; t < sizeof(ns) / sizeof(ns[0]); t++) {
            for (size_t i = 0; i < nl; i++)
                got[i] = NAN; /* poisoned: every logit must be written */
            run_sharded(&r, ctx, ns[t], STEPS, toks, got, 0);
            double e = tu_rel_err(got, ref, nl), max_abs = 0;
            for (size_t i = 0; i < nl; i++)
                max_abs = fmax(max_abs, fabs((double)got[i] - ref[i]));
            /* fp32 reassociation only (file comment): ~1e-7 seen */
            cr_assert(e < 1e-5 && max_abs < 1e-4,
                      "heads %d/%d flags %d, %d shards: rel err %g, max abs %g (seed %llu)",
                      shapes[k].heads, shapes[k].kv, shapes[k].flags, ns[t], e, max_abs,
                      (unsigned long long)seed);
            for (size_t row = 0; row < nl / V; row++)
                cr_assert_eq(argmax(got + row * V, V), argmax(ref + row * V, V),
                             "heads %d/%d, %d shards: row %zu argmax (seed %llu)", shapes[k].heads,
                             shapes[k].kv, ns[t], row, (unsigned long long)seed);
        }
        cpu_ops_destroy(ctx);
        free(ref);
        free(got);
        free(r.m.w.layers);
        free(r.mem);
    }
}

/* tp_shard_upload's layout (the one the GPU gets; the CPU backend's elements are fp32 too): the
 * norm weights in their fp32 region, aligned and exact, and the shards run from the copies give
 * the host shards' logits bit for bit, for every family switch (a tensor misplaced by the
 * region's size accounting overlaps another and changes them). */
Test(tp, shard_upload_keeps_norms_fp32_and_the_forward_unchanged) {
    uint64_t seed = tu_seed(), s = seed;
    const int flags[] = {0, F_BIAS, F_GEMMA, F_BIAS | F_GEMMA};
    enum { STEPS = 2 };
    for (size_t k = 0; k < sizeof(flags) / sizeof(flags[0]); k++) {
        struct rmodel r;
        rmodel_init(&r, &s, 6, 2, flags[k]);
        int V = r.m.cfg.vocab_size;
        int toks[3][30];
        random_prompts(toks, V, &s);
        size_t nl = (size_t)(1 + STEPS) * 3 * V;
        float *ref = malloc(sizeof(float) * nl), *got = malloc(sizeof(float) * nl);
        void *ctx = cpu_ops_create(2);
        for (int n = 1; n <= 2; n++) {
            run_sharded(&r, ctx, n, STEPS, toks, ref, 0);
            for (size_t i = 0; i < nl; i++)
                got[i] = NAN;
            run_sharded(&r, ctx, n, STEPS, toks, got, 1);
            cr_assert_eq(memcmp(got, ref, sizeof(float) * nl), 0,
                         "flags %d, %d shards: uploaded shards' logits differ (seed %llu)",
                         flags[k], n, (unsigned long long)seed);
        }
        cpu_ops_destroy(ctx);
        free(ref);
        free(got);
        free(r.m.w.layers);
        free(r.mem);
    }
}

/* The model at PATH through the engine at tensor_parallel 1, 2 and 4 on the CPU (fp32 weights):
 * the prompt's logits, then N_GEN greedy steps of each engine on its own picks. */
static void engine_tp_check(const char *path, int n_gen) {
    FILE *f = fopen(path, "rb");
    if (!f) cr_skip_test("%s not fetched (make test-models)", path);
    fclose(f);
    const int tps[] = {1, 2, 4};
    const int prompt[] = {1, 504, 3458, 314, 260, 2370, 28, 359, 5248, 253, 1345, 30};
    const int n_prompt = (int)(sizeof(prompt) / sizeof(prompt[0]));
    float *logits[3] = {NULL};
    int toks[3][64];
    int V = 0;
    for (int k = 0; k < 3; k++) {
        struct engine_opts o;
        engine_opts_default(&o);
        o.model_path = path;
        o.device = ENGINE_DEVICE_CPU;
        o.cpu_fp32_weights = 1;
        o.kv_cache_bytes = (size_t)64 << 20;
        o.n_threads = 2;
        o.tensor_parallel = tps[k];
        struct engine *e;
        char err[512];
        cr_assert_eq(engine_open(&o, &e, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(e->tensor_parallel, tps[k]);
        cr_assert_str_eq(e->tp_mode, tps[k] > 1 ? "emulated" : "none");
        V = e->model->cfg.vocab_size;
        logits[k] = malloc(sizeof(float) * (size_t)V * (n_gen + 1));
        struct kv_seq q = {0};
        cr_assert_eq(kv_seq_reserve(&e->kv, &q, n_prompt + n_gen), 0);
        struct fwd_seq fs = {prompt, n_prompt, &q, n_prompt};
        for (int s = 0; s <= n_gen; s++) {
            float *out = logits[k] + (size_t)s * V;
            cr_assert_eq(fwd_run(e->fwd, &fs, 1, out, err, sizeof(err)), 0, "%s", err);
            toks[k][s] = argmax(out, V);
            fs = (struct fwd_seq){&toks[k][s], 1, &q, 0};
        }
        kv_seq_release(&e->kv, &q);
        engine_close(e);
    }
    for (int k = 1; k < 3; k++) {
        double max_abs = 0, max_ref = 0;
        for (size_t i = 0; i < (size_t)V * (n_gen + 1); i++) {
            max_abs = fmax(max_abs, fabs((double)logits[k][i] - logits[0][i]));
            max_ref = fmax(max_ref, fabs((double)logits[0][i]));
        }
        /* fp32 reassociation through 30 (18) layers: ~1e-5 of the logits' scale seen */
        cr_assert(max_abs < 1e-3 * max_ref, "%s tp %d: max abs err %g (logits up to %g)", path,
                  tps[k], max_abs, max_ref);
        for (int s = 0; s <= n_gen; s++)
            cr_assert_eq(toks[k][s], toks[0][s], "%s tp %d: greedy token %d differs", path, tps[k],
                         s);
        cr_log_info("%s tp %d: max abs logit err %g of %g; %d greedy tokens identical", path,
                    tps[k], max_abs, max_ref, n_gen + 1);
    }
    for (int k = 0; k < 3; k++)
        free(logits[k]);
}

Test(tp, smollm2_tensor_parallel_equals_one, .timeout = 600) {
    engine_tp_check(SMOLLM2_PATH, 16);
}

Test(tp, gemma3_270m_tensor_parallel_equals_one, .timeout = 900) {
    engine_tp_check(GEMMA_PATH, 8);
}

/* engine_open of the default model on the CPU at TP shards must fail with a message holding
 * WANT (and WANT2, if not NULL). */
static void engine_refuses(int tp, const char *want, const char *want2) {
    struct engine_opts o;
    engine_opts_default(&o);
    o.model_path = SMOLLM2_PATH;
    o.device = ENGINE_DEVICE_CPU;
    o.tensor_parallel = tp;
    struct engine *e;
    char err[512];
    cr_assert_eq(engine_open(&o, &e, err, sizeof(err)), -1);
    cr_assert(strstr(err, want) && (!want2 || strstr(err, want2)), "%s", err);
}

Test(tp, engine_refuses_other_shard_counts) {
    engine_refuses(3, "tensor_parallel 3", "1, 2, 4 or 8");
}

Test(tp, engine_nccl_mode_without_a_gpu_is_refused) {
    setenv("FLASHGEN_TP_MODE", "nccl", 1);
    engine_refuses(2, "over NCCL", "no GPU");
    setenv("FLASHGEN_TP_MODE", "ring", 1);
    engine_refuses(2, "FLASHGEN_TP_MODE", NULL);
}

/* The nccl mode keeps each GPU's pools in a cache of its own under the scheduler's page ids: a
 * page copied on write (kv_seq_fork) must be copied in every mirror. */
Test(tp, fork_copies_the_partial_page_in_every_mirror) {
    struct model_config c = {.n_layers = 2,
                             .n_kv_heads = 1,
                             .head_dim = 4,
                             .vocab_size = 10,
                             .max_seq_len = 64,
                             .dim = 4,
                             .n_heads = 1};
    void *ctx = cpu_ops_create(1);
    struct kv_cache kv[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(kv_cache_init(&kv[i], cpu_ops(), ctx, &c, 8, 4, 4), 0);
    kv[0].mirror = &kv[1];
    kv[1].mirror = &kv[2];
    uint64_t s = tu_seed();
    struct kv_seq a = {0}, b = {0};
    cr_assert_eq(kv_seq_reserve(&kv[0], &a, 6), 0);
    a.n_tokens = 6;      /* page 0 full, page 1 holds 2 tokens */
    size_t page = 4 * 4; /* floats per page of one layer: page_size × n_kv × head_dim */
    for (int i = 0; i < 3; i++)
        for (int l = 0; l < 2; l++) {
            tu_fill(&s, (float *)kv[i].k[l], 8 * page, -1, 1);
            tu_fill(&s, (float *)kv[i].v[l], 8 * page, -1, 1);
        }
    cr_assert_eq(kv_seq_fork(&kv[0], &a, &b, 6), 0);
    cr_assert_eq(b.pages[0], a.pages[0]);  /* the full page shared */
    cr_assert_neq(b.pages[1], a.pages[1]); /* the partial one copied */
    for (int i = 0; i < 3; i++)
        for (int l = 0; l < 2; l++) {
            const float *k = kv[i].k[l], *v = kv[i].v[l];
            cr_assert(!memcmp(k + b.pages[1] * page, k + a.pages[1] * page, page * 4),
                      "cache %d layer %d K", i, l);
            cr_assert(!memcmp(v + b.pages[1] * page, v + a.pages[1] * page, page * 4),
                      "cache %d layer %d V", i, l);
        }
    kv_seq_release(&kv[0], &a);
    kv_seq_release(&kv[0], &b);
    for (int i = 0; i < 3; i++)
        kv_cache_free(&kv[i]);
    cpu_ops_destroy(ctx);
}
