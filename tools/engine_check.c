/* engine_check.c — drive the engine for the GPU engine's proofs and benchmark (issue 4).
 *
 *   engine_check --model DIR --device cuda|cpu --prompts FILE --steps N --out PREFIX [--batch]
 *       Greedy generation of N steps for every prompt (one line of token ids each). Writes
 *       PREFIX.tok (generated ids, one line per prompt) and PREFIX.logits (float32,
 *       [prompt][step][vocab]: the logits each step's token was chosen from). --batch runs all
 *       prompts as one batch (prefills together, then decode steps together) instead of one by one;
 *       --also-batch does both (batch tokens in PREFIX_batch.tok). --force FILE feeds the given
 *       tokens (one line per prompt) from step 1 on, so backends compare on identical contexts.
 *       --tensor-parallel N runs the model as N shards (model/tp.h; emulated on the one device).
 *   engine_check --model DIR --device cuda --bench [--batches 1,8,32,64,128,256] [--context 512]
 *       [--gen 64] [--prefill 512,2048,8192]
 *   --gpu-weights auto|bf16|quantized (either mode): how the GPU keeps GGUF weights (engine.h).
 *       Decode steps/s and tokens/s at each batch size (all sequences at the given context),
 *       prefill tokens/s at each prompt length; prints one row per point. Figures only. --bench
 *       may follow a --prompts run in the same process (one model load).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdint.h>
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
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static int parse_list(const char *s, int *out, int cap) {
    int n = 0;
    while (s && *s && n < cap) {
        out[n++] = atoi(s);
        s = strchr(s, ',');
        if (s) s++;
    }
    return n;
}

struct prompts {
    int n;
    int *len;
    int **ids;
};

static int read_prompts(const char *path, struct prompts *p) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[1 << 16];
    memset(p, 0, sizeof(*p));
    while (fgets(line, sizeof(line), f)) {
        p->len = realloc(p->len, sizeof(int) * (p->n + 1));
        p->ids = realloc(p->ids, sizeof(int *) * (p->n + 1));
        int cap = 16, n = 0;
        int *ids = malloc(sizeof(int) * cap);
        for (char *tok = strtok(line, " \t\n"); tok; tok = strtok(NULL, " \t\n")) {
            char *end;
            long id = strtol(tok, &end, 10);
            if (*end || id < 0 || id > INT32_MAX) { /* a word, not a token id: refuse it */
                fprintf(stderr, "engine_check: %s: '%s' is not a token id (the file holds ids)\n",
                        path, tok);
                free(ids);
                fclose(f);
                return -1;
            }
            if (n == cap) ids = realloc(ids, sizeof(int) * (cap *= 2));
            ids[n++] = (int)id;
        }
        if (n == 0) {
            free(ids);
            continue;
        }
        p->ids[p->n] = ids;
        p->len[p->n++] = n;
    }
    fclose(f);
    return p->n > 0 ? 0 : -1;
}

/* Greedy generation of `steps` tokens for sequences [first, first + count) in one batch. With
 * FORCE, step s > 0 is fed force[i][s-1] (teacher forcing) instead of the previous argmax, so runs
 * on different backends see the same contexts; gen still records each step's argmax. */
static int run_group(struct engine *e, struct prompts *pr, int first, int count, int steps,
                     int **gen, float *logits_all, struct prompts *force) {
    int V = e->model->cfg.vocab_size;
    char err[512];
    struct kv_seq *seqs = calloc((size_t)count, sizeof(*seqs));
    struct fwd_seq *fs = calloc((size_t)count, sizeof(*fs));
    float *logits = malloc(sizeof(float) * (size_t)count * V);
    int *last = malloc(sizeof(int) * count), rc = -1;
    for (int i = 0; i < count; i++)
        if (kv_seq_reserve(&e->kv, &seqs[i], pr->len[first + i] + steps) != 0) {
            fprintf(stderr, "engine_check: KV cache too small\n");
            goto out;
        }
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < count; i++) {
            fs[i].kv = &seqs[i];
            fs[i].tokens = s == 0 ? pr->ids[first + i] : &last[i];
            fs[i].n_tokens = s == 0 ? pr->len[first + i] : 1;
            fs[i].n_prompt = s == 0 ? pr->len[first + i] : 0;
        }
        if (fwd_run(e->fwd, fs, count, logits, err, sizeof(err)) != 0) {
            fprintf(stderr, "engine_check: %s\n", err);
            goto out;
        }
        for (int i = 0; i < count; i++) {
            const float *row = logits + (size_t)i * V;
            last[i] = argmax(row, V);
            gen[first + i][s] = last[i];
            if (force && s < force->len[first + i]) last[i] = force->ids[first + i][s];
            if (logits_all)
                memcpy(logits_all + ((size_t)(first + i) * steps + s) * V, row, sizeof(float) * V);
        }
    }
    rc = 0;
out:
    for (int i = 0; i < count; i++)
        kv_seq_release(&e->kv, &seqs[i]);
    free(seqs);
    free(fs);
    free(logits);
    free(last);
    return rc;
}

static void write_tokens(const char *path, int **ids, int n, int steps) {
    FILE *f = fopen(path, "w");
    for (int i = 0; f && i < n; i++)
        for (int s = 0; s < steps; s++)
            fprintf(f, "%d%c", ids[i][s], s + 1 < steps ? ' ' : '\n');
    if (f) fclose(f);
}

static int bench(struct engine *e, const int *batches, int nb, int context, int gen,
                 const int *prefills, int np) {
    const struct model_config *c = &e->model->cfg;
    int V = c->vocab_size;
    char err[512];
    size_t D = c->dim, QD = (size_t)c->n_heads * c->head_dim;
    size_t KVD = (size_t)c->n_kv_heads * c->head_dim, F = c->ffn_dim;
    double params = (double)c->n_layers * (2 * QD * D + 2 * KVD * D + 3 * F * D) + (double)V * D;
    /* the bytes a decode step streams: the device copy but the embedding (resident GGUF blocks
     * where --gpu-weights quantized keeps them), else the matmul parameters in fp32 */
    double weight_bytes =
        e->device_step_bytes ? (double)e->device_step_bytes : params * e->ops->act_size;
    printf("device %s (%s); params (matmul) %.3f B; weights %.2f GB per step\n", e->device,
           engine_device_name(e), params / 1e9, weight_bytes / 1e9);
    printf("%-8s %6s %8s %10s %12s %10s\n", "phase", "batch", "context", "ms/step", "tokens/s",
           "GB/s");
    for (int bi = 0; bi < nb; bi++) {
        int B = batches[bi];
        struct kv_seq *seqs = calloc((size_t)B, sizeof(*seqs));
        struct fwd_seq *fs = calloc((size_t)B, sizeof(*fs));
        float *logits = malloc(sizeof(float) * (size_t)B * V);
        int *prompt = malloc(sizeof(int) * context), *tok = malloc(sizeof(int) * B);
        for (int i = 0; i < context; i++)
            prompt[i] = (i * 7919 + 13) % V;
        int ok = 1;
        for (int i = 0; i < B && ok; i++) {
            ok = kv_seq_reserve(&e->kv, &seqs[i], context + gen + 1) == 0;
            for (int off = 0; ok && off < context; off += e->max_batch_tokens) {
                int n = context - off < e->max_batch_tokens ? context - off : e->max_batch_tokens;
                struct fwd_seq one = {prompt + off, n, &seqs[i], n};
                ok = fwd_run(e->fwd, &one, 1, logits, err, sizeof(err)) == 0;
            }
            tok[i] = i % V;
        }
        /* A served decode step: forward, then the greedy pick on the backend (the logits stay
         * there), the picks fed back as the next tokens. */
        struct fg_sample_row *rows = calloc((size_t)B, sizeof(*rows));
        float *lps = malloc(sizeof(float) * (size_t)B);
        struct sampler_params greedy;
        sampler_params_default(&greedy);
        struct sampler smp;
        memset(&smp, 0, sizeof(smp));
        ok = ok && rows && lps && sampler_init(&smp, &greedy, V) == 0;
        for (int i = 0; ok && i < B; i++)
            sampler_row(&smp, 0, 0, &rows[i]);
        double t0 = 0;
        for (int s = 0; ok && s < gen + 2; s++) {
            if (s == 2) t0 = now(); /* two warm-up steps */
            for (int i = 0; i < B; i++)
                fs[i] = (struct fwd_seq){&tok[i], 1, &seqs[i], 0};
            ok = fwd_run(e->fwd, fs, B, NULL, err, sizeof(err)) == 0 &&
                 fwd_sample(e->fwd, B, rows, NULL, 0, tok, lps, err, sizeof(err)) == 0;
        }
        sampler_free(&smp);
        free(rows);
        free(lps);
        if (!ok) {
            fprintf(stderr, "bench batch %d: %s\n", B, err);
        } else {
            double step = (now() - t0) / gen;
            double kv_bytes = 2.0 * c->n_layers * KVD * e->ops->act_size * B * (context + gen / 2);
            printf("%-8s %6d %8d %10.3f %12.1f %10.1f\n", "decode", B, context, step * 1e3,
                   B / step, (weight_bytes + kv_bytes) / step / 1e9);
        }
        for (int i = 0; i < B; i++)
            kv_seq_release(&e->kv, &seqs[i]);
        free(seqs), free(fs), free(logits), free(prompt), free(tok);
    }
    for (int pi = 0; pi < np; pi++) {
        int L = prefills[pi];
        int *prompt = malloc(sizeof(int) * L);
        float *logits = malloc(sizeof(float) * V);
        for (int i = 0; i < L; i++)
            prompt[i] = (i * 7919 + 13) % V;
        double best = 1e30;
        for (int r = 0; r < 3; r++) {
            struct kv_seq seq = {0};
            if (kv_seq_reserve(&e->kv, &seq, L) != 0) break;
            double t0 = now();
            int ok = 1;
            for (int off = 0; ok && off < L; off += e->max_batch_tokens) {
                int n = L - off < e->max_batch_tokens ? L - off : e->max_batch_tokens;
                struct fwd_seq one = {prompt + off, n, &seq, n};
                ok = fwd_run(e->fwd, &one, 1, logits, err, sizeof(err)) == 0;
            }
            double t = now() - t0;
            kv_seq_release(&e->kv, &seq);
            if (!ok) {
                fprintf(stderr, "prefill %d: %s\n", L, err);
                break;
            }
            if (r > 0 && t < best) best = t; /* first run warms the cuBLASLt plans */
        }
        /* model FLOPs: 2 per matmul parameter per token + causal attention 2·2·L²/2·d·heads */
        double flops = 2 * params * L + 2.0 * L * (double)L * QD * c->n_layers;
        printf("%-8s %6d %8d %10.3f %12.1f %10s  %.1f TFLOP/s\n", "prefill", 1, L, best * 1e3,
               L / best, "-", flops / best / 1e12);
        free(prompt);
        free(logits);
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *prompts = NULL, *out = NULL, *device = "cuda", *force = NULL;
    int steps = 32, batch = 0, also_batch = 0, do_bench = 0, context = 512, gen = 64;
    int max_tokens = 8192, tensor_parallel = 1;
    enum engine_gpu_weights gpu_weights = ENGINE_GPU_WEIGHTS_AUTO;
    float kv_fraction = 0.9f;
    int batches[16] = {1, 8, 32, 64}, nb = 4, prefills[16] = {512, 2048, 8192}, np = 3;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"device", required_argument, 0, 'd'},
                                         {"prompts", required_argument, 0, 'p'},
                                         {"steps", required_argument, 0, 's'},
                                         {"out", required_argument, 0, 'o'},
                                         {"batch", no_argument, 0, 'b'},
                                         {"bench", no_argument, 0, 'B'},
                                         {"batches", required_argument, 0, 'n'},
                                         {"context", required_argument, 0, 'c'},
                                         {"gen", required_argument, 0, 'g'},
                                         {"prefill", required_argument, 0, 'P'},
                                         {"max-tokens", required_argument, 0, 'T'},
                                         {"force", required_argument, 0, 'F'},
                                         {"also-batch", no_argument, 0, 'A'},
                                         {"kv-fraction", required_argument, 0, 'K'},
                                         {"gpu-weights", required_argument, 0, 'W'},
                                         {"tensor-parallel", required_argument, 0, 'X'},
                                         {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'm':
            model = optarg;
            break;
        case 'd':
            device = optarg;
            break;
        case 'p':
            prompts = optarg;
            break;
        case 's':
            steps = atoi(optarg);
            break;
        case 'o':
            out = optarg;
            break;
        case 'b':
            batch = 1;
            break;
        case 'B':
            do_bench = 1;
            break;
        case 'n':
            nb = parse_list(optarg, batches, 16);
            break;
        case 'c':
            context = atoi(optarg);
            break;
        case 'g':
            gen = atoi(optarg);
            break;
        case 'P':
            np = parse_list(optarg, prefills, 16);
            break;
        case 'T':
            max_tokens = atoi(optarg);
            break;
        case 'F':
            force = optarg;
            break;
        case 'A':
            also_batch = 1;
            break;
        case 'K':
            kv_fraction = (float)atof(optarg);
            break;
        case 'W':
            gpu_weights = !strcmp(optarg, "quantized") ? ENGINE_GPU_WEIGHTS_QUANTIZED
                          : !strcmp(optarg, "bf16")    ? ENGINE_GPU_WEIGHTS_BF16
                                                       : ENGINE_GPU_WEIGHTS_AUTO;
            break;
        case 'X':
            tensor_parallel = atoi(optarg);
            break;
        default:
            fprintf(stderr, "engine_check: see the comment at the top of tools/engine_check.c\n");
            return 2;
        }
    }
    if (!model || (!do_bench && !prompts) || (prompts && !out)) {
        fprintf(stderr, "engine_check: --model and (--prompts and --out, or --bench) needed\n");
        return 2;
    }
    struct engine_opts o;
    engine_opts_default(&o);
    o.model_path = model;
    o.device = !strcmp(device, "cpu") ? ENGINE_DEVICE_CPU : ENGINE_DEVICE_CUDA;
    o.max_batch_tokens = max_tokens;
    /* room for the largest --batches in one decode step (graph buckets up to it) */
    o.max_batch_seqs = 64;
    for (int i = 0; i < nb; i++)
        if (batches[i] > o.max_batch_seqs) o.max_batch_seqs = batches[i];
    if (o.max_batch_tokens < o.max_batch_seqs) o.max_batch_tokens = o.max_batch_seqs;
    o.kv_fraction = kv_fraction;
    o.gpu_weights = gpu_weights;
    o.tensor_parallel = tensor_parallel;
    if (o.device == ENGINE_DEVICE_CPU) o.kv_cache_bytes = (size_t)2 << 30;
    struct engine *e;
    char err[512];
    double t0 = now();
    if (engine_open(&o, &e, err, sizeof(err)) != 0) {
        fprintf(stderr, "engine_check: %s\n", err);
        return 1;
    }
    fprintf(stderr,
            "engine_check: %s on %s, loaded in %.1f s, %d KV pages; gpu weights %s, %.1f MB on "
            "the device (%.1f MB in GGUF blocks)\n",
            model, engine_device_name(e), now() - t0, e->kv.n_pages,
            strcmp(e->device, "cuda") ? "-" : engine_gpu_weights_name(e->gpu_weights),
            e->device_weight_bytes / 1048576.0, e->device_block_bytes / 1048576.0);
    int rc = 0;
    if (prompts) {
        struct prompts pr, fr, *frp = NULL;
        if (read_prompts(prompts, &pr) != 0 || (force && read_prompts(force, &fr) != 0)) {
            fprintf(stderr, "engine_check: cannot read %s\n", force ? force : prompts);
            engine_close(e);
            return 1;
        }
        if (force) frp = &fr;
        int V = e->model->cfg.vocab_size;
        int **gen_ids = malloc(sizeof(int *) * pr.n);
        for (int i = 0; i < pr.n; i++)
            gen_ids[i] = calloc((size_t)steps, sizeof(int));
        float *logits = batch ? NULL : malloc(sizeof(float) * (size_t)pr.n * steps * V);
        if (batch) rc = run_group(e, &pr, 0, pr.n, steps, gen_ids, NULL, frp);
        for (int i = 0; !batch && i < pr.n && rc == 0; i++)
            rc = run_group(e, &pr, i, 1, steps, gen_ids, logits, frp);
        char path[1024];
        snprintf(path, sizeof(path), "%s.tok", out);
        write_tokens(path, gen_ids, pr.n, steps);
        if (logits) {
            snprintf(path, sizeof(path), "%s.logits", out);
            FILE *f = fopen(path, "wb");
            if (f) {
                fwrite(logits, sizeof(float), (size_t)pr.n * steps * V, f);
                fclose(f);
            }
        }
        free(logits);
        if (rc == 0 && also_batch) {
            rc = run_group(e, &pr, 0, pr.n, steps, gen_ids, NULL, frp);
            snprintf(path, sizeof(path), "%s_batch.tok", out);
            write_tokens(path, gen_ids, pr.n, steps);
        }
    }
    if (rc == 0 && do_bench) rc = bench(e, batches, nb, context, gen, prefills, np);
    engine_close(e);
    return rc;
}
