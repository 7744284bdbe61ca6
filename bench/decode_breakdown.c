/* decode_breakdown.c — where a decode step's time goes (issue 16): one model load, then for each
 * batch size, variants of the step timed back to back in one process.
 *
 *   decode_breakdown --model DIR [--batches 1,8] [--context 512] [--steps 32] [--copy-gbs G]
 *                    [--device cuda|cpu]   (cpu: the same loop without graphs, a smoke test here)
 *
 * Every sequence of a batch is prefilled to CONTEXT tokens, then each variant drops the engine's
 * decode graphs (fwd_drop_graphs) and records fresh ones under the environment it names:
 *   - FLASHGEN_SKIP=stage,...: the CUDA backend leaves those stages out of the graphs it records
 *     (kernels/cuda_ops.cu, skip_stage); the difference to the full step is what the stage costs
 *     in place, launch tails included. Such steps compute nothing meaningful: timing only.
 *   - FLASHGEN_PDL=0: the q|k|v store launched without programmatic dependent launch
 *     (kernels/kv_write.cu; the GEMVs keep theirs), the A/B of that boundary in the same run.
 *   - FLASHGEN_GRAPH_SPLITS=N: decode attention in N parts instead of the selector's count.
 * Timed per variant, STEPS steps after two warm-ups (the second records the graph), the sequence
 * lengths reset after each variant so every variant sees the same context:
 *   graph  — forward steps queued back to back (upload of the step description + graph launch,
 *            no sampling, no wait between steps): the device's time for a step;
 *   served — forward + greedy sampling on the device with the picks read back each step, as the
 *            engine serves (what tools/engine_check --bench reports).
 * Also: the step description's upload alone and the sampling alone (µs per call). GB/s counts the
 * weights plus the K/V read per step, as engine_check does; % of copy is against --copy-gbs (a
 * device-to-device copy measured in the same run, bytes read + written). Each variant runs twice
 * (rounds 1 and 2, interleaved) so the spread between repeats is visible.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/ops.h"
#include "kernels/sample.h"
#include "model/engine.h"
#include "model/sampler.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct variant {
    const char *name;
    const char *skip;   /* FLASHGEN_SKIP */
    const char *pdl;    /* FLASHGEN_PDL */
    const char *splits; /* FLASHGEN_GRAPH_SPLITS, or NULL: the selector's decode split count */
};

static const struct variant variants[] = {
    {"full", "", "1", NULL},
    {"full, kv store PDL off", "", "0", NULL},
    {"- attention", "attn", "1", NULL},
    {"- rope+kv store", "rope", "1", NULL},
    {"- head (norm+lm_head)", "head", "1", NULL},
    {"- qkv gemv", "qkv", "1", NULL},
    {"- o gemv", "o", "1", NULL},
    {"- gate|up gemv", "gateup", "1", NULL},
    {"- down gemv", "down", "1", NULL},
    {"only 4 layer gemvs", "rope,attn,head", "1", NULL},
    {"only rope+attention", "qkv,o,gateup,down,head", "1", NULL},
    {"only head", "qkv,rope,attn,o,gateup,down", "1", NULL},
    {"only embed (fixed cost)", "qkv,rope,attn,o,gateup,down,head", "1", NULL},
    {"full, attention in 1 part", "", "1", "1"},
    {"full, attention in 2 parts", "", "1", "2"},
    {"full, attention in 4 parts", "", "1", "4"},
    {"full, attention in 8 parts", "", "1", "8"},
};
#define N_VARIANTS (int)(sizeof(variants) / sizeof(variants[0]))

struct batch_run {
    struct engine *e;
    int B, context, steps;
    struct kv_seq *seqs;
    struct fwd_seq *fs;
    int *tok;
    struct fg_sample_row *rows;
    float *lps;
};

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

/* Steps of one variant on a fresh forward state; ms per step for the two timings. */
static int time_variant(struct batch_run *r, const struct variant *v, double *graph_ms,
                        double *served_ms, char *err, size_t errlen) {
    struct engine *e = r->e;
    setenv("FLASHGEN_SKIP", v->skip, 1);
    setenv("FLASHGEN_PDL", v->pdl, 1);
    if (v->splits) setenv("FLASHGEN_GRAPH_SPLITS", v->splits, 1);
    struct fwd_state *st = e->fwd;
    fwd_drop_graphs(st);
    int ok = 1;
    for (int mode = 0; mode < 2 && ok; mode++) {
        for (int i = 0; i < r->B; i++) {
            r->seqs[i].n_tokens = r->context;
            r->tok[i] = (i * 31 + 7) % e->model->cfg.vocab_size;
        }
        double t0 = 0;
        for (int s = 0; ok && s < r->steps + 2; s++) {
            if (s == 2) {
                ok = e->ops->sync(e->ops_ctx) == 0;
                t0 = now();
            }
            for (int i = 0; i < r->B; i++)
                r->fs[i] = (struct fwd_seq){&r->tok[i], 1, &r->seqs[i], 0};
            ok = ok && fwd_run(st, r->fs, r->B, NULL, err, errlen) == 0;
            if (ok && mode == 1)
                ok = fwd_sample(st, r->B, r->rows, NULL, 0, r->tok, r->lps, err, errlen) == 0;
        }
        ok = ok && e->ops->sync(e->ops_ctx) == 0;
        if (!ok && !err[0]) snprintf(err, errlen, "device error: %s", e->ops->name);
        double ms = (now() - t0) / r->steps * 1e3;
        *(mode == 0 ? graph_ms : served_ms) = ms;
    }
    fwd_drop_graphs(st);
    unsetenv("FLASHGEN_SKIP");
    unsetenv("FLASHGEN_PDL");
    unsetenv("FLASHGEN_GRAPH_SPLITS");
    return ok ? 0 : -1;
}

/* µs per call of the step description's upload (SIZE ints, as fwd_run sends for this batch) and
 * of a greedy sampling call over B rows of the logits. */
static void time_host_parts(struct batch_run *r, char *err, size_t errlen) {
    struct engine *e = r->e;
    const struct model_config *c = &e->model->cfg;
    int max_pages = (c->max_seq_len + e->kv.page_size - 1) / e->kv.page_size;
    size_t packed = 3 * (size_t)r->B + 3 * (size_t)r->B + 1 + (size_t)r->B * max_pages;
    /* what fwd_run sent before it packed the description: room for the maxima of the state */
    size_t unpacked = 3 * (size_t)e->max_batch_tokens + 3 * (size_t)e->max_batch_seqs + 1 +
                      (size_t)e->max_batch_seqs * max_pages;
    size_t sizes[2] = {packed, unpacked};
    int *h = calloc(unpacked, sizeof(int));
    void *d = e->ops->alloc(e->ops_ctx, unpacked * sizeof(int));
    for (int k = 0; k < 2 && h && d; k++) {
        e->ops->sync(e->ops_ctx);
        double t0 = now();
        for (int i = 0; i < 200; i++) {
            e->ops->upload(e->ops_ctx, d, h, sizes[k] * sizeof(int));
            e->ops->sync(e->ops_ctx);
        }
        printf("  upload + sync of %zu ints (%s): %.1f us\n", sizes[k],
               k == 0 ? "packed, as now" : "the whole buffer, as before", (now() - t0) / 200 * 1e6);
    }
    if (d) e->ops->release(e->ops_ctx, d);
    free(h);
    double t0 = 0;
    for (int i = 0; i < 202; i++) {
        if (i == 2) t0 = now();
        if (fwd_sample(e->fwd, r->B, r->rows, NULL, 0, r->tok, r->lps, err, errlen) != 0) break;
    }
    printf("  greedy sampling of %d rows (upload rows, kernel, read back, sync): %.1f us\n", r->B,
           (now() - t0) / 200 * 1e6);
}

static int run_batch(struct engine *e, int B, int context, int steps, double copy_gbs) {
    const struct model_config *c = &e->model->cfg;
    int V = c->vocab_size;
    char err[512] = "";
    size_t D = c->dim, QD = (size_t)c->n_heads * c->head_dim;
    size_t KVD = (size_t)c->n_kv_heads * c->head_dim, F = c->ffn_dim;
    double params = (double)c->n_layers * (2 * QD * D + 2 * KVD * D + 3 * F * D) + (double)V * D;
    double bytes = params * e->ops->act_size +
                   2.0 * c->n_layers * KVD * e->ops->act_size * B * (context + steps / 2);
    struct batch_run r = {e,
                          B,
                          context,
                          steps,
                          calloc((size_t)B, sizeof(struct kv_seq)),
                          calloc((size_t)B, sizeof(struct fwd_seq)),
                          calloc((size_t)B, sizeof(int)),
                          calloc((size_t)B, sizeof(struct fg_sample_row)),
                          calloc((size_t)B, sizeof(float))};
    int *prompt = malloc(sizeof(int) * (size_t)context);
    float *logits = malloc(sizeof(float) * V);
    struct sampler_params greedy;
    sampler_params_default(&greedy);
    struct sampler smp;
    memset(&smp, 0, sizeof(smp));
    int ok = r.seqs && r.fs && r.tok && r.rows && r.lps && prompt && logits &&
             sampler_init(&smp, &greedy, V) == 0;
    for (int i = 0; ok && i < context; i++)
        prompt[i] = (i * 7919 + 13) % V;
    for (int i = 0; ok && i < B; i++) {
        sampler_row(&smp, 0, 0, &r.rows[i]);
        ok = kv_seq_reserve(&e->kv, &r.seqs[i], context + steps + 3) == 0;
        for (int off = 0; ok && off < context; off += e->max_batch_tokens) {
            int n = context - off < e->max_batch_tokens ? context - off : e->max_batch_tokens;
            struct fwd_seq one = {prompt + off, n, &r.seqs[i], n};
            ok = fwd_run(e->fwd, &one, 1, logits, err, sizeof(err)) == 0;
        }
    }
    if (!ok) {
        fprintf(stderr, "decode_breakdown: batch %d setup: %s\n", B, err);
    } else {
        printf("\nbatch %d, context %d, %d steps per timing; %.3f GB per step (weights + K/V)\n", B,
               context, steps, bytes / 1e9);
        double g[2][N_VARIANTS], s[2][N_VARIANTS];
        for (int round = 0; round < 2 && ok; round++)
            for (int v = 0; v < N_VARIANTS && ok; v++)
                if (time_variant(&r, &variants[v], &g[round][v], &s[round][v], err, sizeof(err)) !=
                    0) {
                    fprintf(stderr, "decode_breakdown: %s: %s\n", variants[v].name, err);
                    ok = 0;
                }
        if (ok) {
            printf("%-30s %-34s %9s %9s %9s %9s %8s %8s\n", "variant", "FLASHGEN_SKIP", "graph1",
                   "graph2", "served1", "served2", "tok/s", "%copy");
            for (int v = 0; v < N_VARIANTS; v++) {
                double sv = s[0][v] < s[1][v] ? s[0][v] : s[1][v];
                printf("%-30s %-34s %9.4f %9.4f %9.4f %9.4f %8.1f %8.1f\n", variants[v].name,
                       variants[v].skip[0] ? variants[v].skip : "-", g[0][v], g[1][v], s[0][v],
                       s[1][v], B / sv * 1e3,
                       copy_gbs > 0 ? bytes / (sv * 1e-3) / 1e9 / copy_gbs * 100 : 0.0);
            }
            printf("(ms per step; graph = steps queued back to back without sampling; served = "
                   "with greedy sampling read back each step; tok/s and %%copy from the better "
                   "served time, %%copy against %.0f GB/s)\n",
                   copy_gbs);
            time_host_parts(&r, err, sizeof(err));
        }
    }
    sampler_free(&smp);
    for (int i = 0; r.seqs && i < B; i++)
        kv_seq_release(&e->kv, &r.seqs[i]);
    free(r.seqs), free(r.fs), free(r.tok), free(r.rows), free(r.lps), free(prompt), free(logits);
    return ok ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *model = NULL, *device = "cuda";
    int batches[16] = {1, 8}, nb = 2, context = 512, steps = 32;
    double copy_gbs = 0;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"batches", required_argument, 0, 'n'},
                                         {"context", required_argument, 0, 'c'},
                                         {"steps", required_argument, 0, 's'},
                                         {"copy-gbs", required_argument, 0, 'G'},
                                         {"device", required_argument, 0, 'd'},
                                         {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'm':
            model = optarg;
            break;
        case 'n':
            nb = parse_list(optarg, batches, 16);
            break;
        case 'c':
            context = atoi(optarg);
            break;
        case 's':
            steps = atoi(optarg);
            break;
        case 'G':
            copy_gbs = atof(optarg);
            break;
        case 'd':
            device = optarg;
            break;
        default:
            fprintf(stderr, "decode_breakdown: see the comment at the top of the file\n");
            return 2;
        }
    }
    if (!model || steps < 1 || context < 1) {
        fprintf(stderr, "decode_breakdown: --model DIR needed (see the top of the file)\n");
        return 2;
    }
    struct engine_opts o;
    engine_opts_default(&o);
    o.model_path = model;
    o.device = !strcmp(device, "cpu") ? ENGINE_DEVICE_CPU : ENGINE_DEVICE_CUDA;
    if (o.device == ENGINE_DEVICE_CPU) o.kv_cache_bytes = (size_t)256 << 20;
    o.max_batch_tokens = 8192;
    o.max_batch_seqs = 64; /* room for the largest --batches (up to 256 and beyond) */
    for (int i = 0; i < nb; i++)
        if (batches[i] > o.max_batch_seqs) o.max_batch_seqs = batches[i];
    o.kv_fraction = 0.5f;
    struct engine *e;
    char err[512];
    double t0 = now();
    if (engine_open(&o, &e, err, sizeof(err)) != 0) {
        fprintf(stderr, "decode_breakdown: %s\n", err);
        return 1;
    }
    printf("decode_breakdown: %s on %s, loaded in %.1f s\n", model, engine_device_name(e),
           now() - t0);
    int rc = 0;
    for (int i = 0; i < nb && rc == 0; i++)
        rc = run_batch(e, batches[i], context, steps, copy_gbs);
    engine_close(e);
    return rc ? 1 : 0;
}
