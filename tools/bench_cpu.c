/* bench_cpu.c — CPU throughput of the default model: prompt (prefill) tokens/s at a few prompt
 * lengths and generated (decode) tokens/s, with the weight bytes each decode step streams and
 * the bandwidth that implies, for the weights kept in their GGUF blocks (kernels/cpu_quant.c)
 * and for the same file dequantized to fp32 at load, measured in one run with the repetitions
 * interleaved (best of --reps each). `make bench` runs it. Prints figures; asserts nothing. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "kernels/cpu_quant.h"
#include "model/engine.h"
#include "model/generate.h"

#define BENCH_N_LENS 3
static const int bench_lens[BENCH_N_LENS] = {16, 128, 512};

struct bench_mode {
    const char *name; /* "blocks", "fp32" */
    struct engine *e;
    double prefill_s[BENCH_N_LENS]; /* best prefill time per prompt length */
    double decode_s;                /* best seconds per decoded token */
    size_t weight_bytes;            /* weight bytes one decode step reads */
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static size_t linear_bytes(const float *w, const struct fg_qtensor *q, size_t rows, size_t cols) {
    if (q->data) return (size_t)q->rows * q->row_bytes;
    return w ? 4 * rows * cols : 0;
}

/* Every linear weight of every layer and the head, as resident (blocks or fp32). */
static size_t step_weight_bytes(const struct model *m) {
    const struct model_config *c = &m->cfg;
    size_t D = c->dim, F = c->ffn_dim, QD = (size_t)c->n_heads * c->head_dim;
    size_t KVD = (size_t)c->n_kv_heads * c->head_dim, total = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_layer *L = &m->w.layers[l];
        total += linear_bytes(L->wq, &L->qwq, QD, D) + linear_bytes(L->wk, &L->qwk, KVD, D) +
                 linear_bytes(L->wv, &L->qwv, KVD, D) + linear_bytes(L->wo, &L->qwo, D, QD) +
                 linear_bytes(L->w_gate, &L->qw_gate, F, D) +
                 linear_bytes(L->w_up, &L->qw_up, F, D) +
                 linear_bytes(L->w_down, &L->qw_down, D, F);
    }
    return total + linear_bytes(m->w.output, &m->w.q_output, (size_t)c->vocab_size, D);
}

/* One repetition of every measurement on MODE, keeping the best times. */
static int bench_once(struct bench_mode *b, int n_gen, char *err, size_t errlen) {
    const struct model_config *cfg = &b->e->model->cfg;
    struct sampler_params sp;
    sampler_params_default(&sp);
    for (int li = 0; li < BENCH_N_LENS; li++) {
        int n = bench_lens[li];
        int *prompt = malloc(sizeof(int) * n);
        for (int i = 0; i < n; i++)
            prompt[i] = 100 + (i * 7919) % (cfg->vocab_size - 200);
        struct gen_result res;
        int rc = gen_run(b->e, prompt, n, &sp, 1, 0, NULL, NULL, NULL, &res, err, errlen);
        free(prompt);
        if (rc != 0) return -1;
        if (res.prefill_seconds < b->prefill_s[li]) b->prefill_s[li] = res.prefill_seconds;
        gen_result_free(&res);
    }
    int prompt[16];
    for (int i = 0; i < 16; i++)
        prompt[i] = 200 + i;
    struct gen_result res;
    if (gen_run(b->e, prompt, 16, &sp, n_gen + 1, 0, NULL, NULL, NULL, &res, err, errlen))
        return -1;
    double per = res.decode_seconds / n_gen;
    if (per < b->decode_s) b->decode_s = per;
    gen_result_free(&res);
    return 0;
}

int main(int argc, char **argv) {
    const char *model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    int threads = 0, n_gen = 64, reps = 3;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"threads", required_argument, 0, 't'},
                                         {"gen", required_argument, 0, 'g'},
                                         {"reps", required_argument, 0, 'r'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'm')
            model = optarg;
        else if (c == 't')
            threads = atoi(optarg);
        else if (c == 'g')
            n_gen = atoi(optarg);
        else if (c == 'r')
            reps = atoi(optarg);
        else {
            fprintf(stderr, "usage: bench_cpu [--model PATH] [--threads N] [--gen N] [--reps N]\n");
            return 2;
        }
    }
    struct bench_mode modes[2] = {{.name = "blocks"}, {.name = "fp32"}};
    char err[512];
    double load[2];
    for (int k = 0; k < 2; k++) {
        struct engine_opts o;
        engine_opts_default(&o);
        o.model_path = model;
        o.device = ENGINE_DEVICE_CPU;
        o.n_threads = threads;
        o.kv_cache_bytes = (size_t)256 << 20;
        o.cpu_fp32_weights = k == 1;
        double t0 = now();
        if (engine_open(&o, &modes[k].e, err, sizeof(err)) != 0) {
            fprintf(stderr, "bench_cpu: %s\n", err);
            return 1;
        }
        load[k] = now() - t0;
        modes[k].weight_bytes = step_weight_bytes(modes[k].e->model);
        modes[k].decode_s = 1e30;
        for (int li = 0; li < BENCH_N_LENS; li++)
            modes[k].prefill_s[li] = 1e30;
    }
    const struct model_config *cfg = &modes[0].e->model->cfg;
    struct utsname un;
    uname(&un);
    time_t tt = time(NULL);
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%d", gmtime(&tt));
    printf("flashgen CPU benchmark — %s, %s %s, %ld online cores, %d threads, block kernels %s, "
           "%s\n",
           model, un.sysname, un.machine, sysconf(_SC_NPROCESSORS_ONLN), threads,
           cq_isa_name(cq_isa_best()), date);
    printf("model: %d layers, dim %d, %d/%d heads, vocab %d, source %s; load %.2f s (blocks), "
           "%.2f s (fp32)\n",
           cfg->n_layers, cfg->dim, cfg->n_heads, cfg->n_kv_heads, cfg->vocab_size,
           modes[0].e->model->dtype, load[0], load[1]);
    for (int r = 0; r < reps; r++)
        for (int k = 0; k < 2; k++)
            if (bench_once(&modes[k], n_gen, err, sizeof err) != 0) {
                fprintf(stderr, "bench_cpu: %s\n", err);
                return 1;
            }
    printf("\n%-28s %14s %14s\n", "tokens/s", "blocks", "fp32");
    for (int li = 0; li < BENCH_N_LENS; li++) {
        char label[64];
        snprintf(label, sizeof(label), "prefill, %d-token prompt", bench_lens[li]);
        printf("%-28s %14.1f %14.1f\n", label, bench_lens[li] / modes[0].prefill_s[li],
               bench_lens[li] / modes[1].prefill_s[li]);
    }
    printf("%-28s %14.1f %14.1f\n", "decode, batch 1", 1.0 / modes[0].decode_s,
           1.0 / modes[1].decode_s);
    printf("%-28s %14.1f %14.1f\n", "weight MB per decode token", modes[0].weight_bytes / 1e6,
           modes[1].weight_bytes / 1e6);
    printf("%-28s %14.2f %14.2f\n", "decode weight GB/s",
           modes[0].weight_bytes / modes[0].decode_s / 1e9,
           modes[1].weight_bytes / modes[1].decode_s / 1e9);
    for (int k = 0; k < 2; k++)
        engine_close(modes[k].e);
    return 0;
}
