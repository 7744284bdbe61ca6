/* bench_cpu.c — CPU throughput of the default model: prompt (prefill) tokens/s at a few prompt
 * lengths and generated (decode) tokens/s, with the weight bytes each decode step streams and
 * the bandwidth that implies. `make bench` runs it. Prints figures; asserts nothing. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "model/engine.h"
#include "model/generate.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const char *model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    int threads = 0, n_gen = 64, reps = 3;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"threads", required_argument, 0, 't'},
                                         {"gen", required_argument, 0, 'g'},
                                         {"reps", required_argument, 0, 'r'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'm') model = optarg;
        else if (c == 't') threads = atoi(optarg);
        else if (c == 'g') n_gen = atoi(optarg);
        else if (c == 'r') reps = atoi(optarg);
        else {
            fprintf(stderr, "usage: bench_cpu [--model PATH] [--threads N] [--gen N] [--reps N]\n");
            return 2;
        }
    }
    struct engine_opts o;
    engine_opts_default(&o);
    o.model_path = model;
    o.device = ENGINE_DEVICE_CPU;
    o.n_threads = threads;
    o.kv_cache_bytes = (size_t)256 << 20;
    struct engine *e;
    char err[512];
    double t0 = now();
    if (engine_open(&o, &e, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_cpu: %s\n", err);
        return 1;
    }
    double load = now() - t0;
    const struct model_config *cfg = &e->model->cfg;
    size_t weight_bytes = 0; /* fp32 weights streamed per decode step: every layer + the head */
    size_t D = cfg->dim, QD = (size_t)cfg->n_heads * cfg->head_dim;
    size_t KVD = (size_t)cfg->n_kv_heads * cfg->head_dim;
    weight_bytes = 4 * (cfg->n_layers * (QD * D * 2 + KVD * D * 2 + 3 * (size_t)cfg->ffn_dim * D) +
                        (size_t)cfg->vocab_size * D);
    struct utsname un;
    uname(&un);
    char host[64] = "?";
    gethostname(host, sizeof(host) - 1);
    time_t tt = time(NULL);
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%d", gmtime(&tt));
    printf("flashgen CPU benchmark — %s, %s %s, %ld online cores, %s\n", e->model->path,
           un.sysname, un.machine, sysconf(_SC_NPROCESSORS_ONLN), date);
    printf("model: %d layers, dim %d, %d/%d heads, vocab %d, source %s; load %.2f s\n",
           cfg->n_layers, cfg->dim, cfg->n_heads, cfg->n_kv_heads, cfg->vocab_size,
           e->model->dtype, load);

    int lens[] = {16, 128, 512};
    struct sampler_params sp;
    sampler_params_default(&sp);
    printf("\n%-28s %10s %12s\n", "phase", "tokens", "tokens/s");
    for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
        int n = lens[li];
        int *prompt = malloc(sizeof(int) * n);
        for (int i = 0; i < n; i++)
            prompt[i] = 100 + (i * 7919) % (cfg->vocab_size - 200);
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            struct gen_result res;
            if (gen_run(e, prompt, n, &sp, 1, 0, NULL, NULL, NULL, &res, err, sizeof(err)) != 0) {
                fprintf(stderr, "bench_cpu: %s\n", err);
                return 1;
            }
            if (res.prefill_seconds < best) best = res.prefill_seconds;
            gen_result_free(&res);
        }
        char label[64];
        snprintf(label, sizeof(label), "prefill, %d-token prompt", n);
        printf("%-28s %10d %12.1f\n", label, n, n / best);
        free(prompt);
    }
    int prompt[16];
    for (int i = 0; i < 16; i++)
        prompt[i] = 200 + i;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        struct gen_result res;
        if (gen_run(e, prompt, 16, &sp, n_gen + 1, 0, NULL, NULL, NULL, &res, err, sizeof(err))) {
            fprintf(stderr, "bench_cpu: %s\n", err);
            return 1;
        }
        double per = res.decode_seconds / n_gen;
        if (per < best) best = per;
        gen_result_free(&res);
    }
    printf("%-28s %10d %12.1f\n", "decode, batch 1", n_gen, 1.0 / best);
    printf("\ndecode streams %.0f MB of fp32 weights per token: %.1f GB/s achieved\n",
           weight_bytes / 1e6, weight_bytes / best / 1e9);
    engine_close(e);
    return 0;
}
