/* bench_cpu.c — CPU throughput of the default model: prompt (prefill) tokens/s at a few prompt
 * lengths and generated (decode) tokens/s, with the weight bytes each decode step streams and
 * the bandwidth that implies, for the weights kept in their GGUF blocks (kernels/cpu_quant.c)
 * and for the same file dequantized to fp32 at load, measured in one run with the repetitions
 * interleaved (best of --reps each). `make bench` runs it. --lens sets the prompt lengths (e.g.
 * --lens 512,8128 for the 512 and 8k prefill figures of bench/ENGINE.md's CPU section), --blocks
 * skips the fp32 copy, --json adds one machine-readable line (bench/cpu_peer.sh reads it). Beside
 * each prefill's wall time it prints the process CPU seconds it took (both threads), the figure
 * that stays meaningful on a machine shared with other work. --attn CTX and --qdot time the
 * attention op and the decode product alone instead. Prints figures; asserts nothing. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "kernels/cpu_attn.h"
#include "kernels/cpu_pool.h"
#include "kernels/cpu_quant.h"
#include "kernels/ops.h"
#include "model/engine.h"
#include "model/generate.h"
#include "model/gguf_quant.h"

#define BENCH_MAX_LENS 8

struct bench_mode {
    const char *name; /* "blocks", "fp32" */
    struct engine *e;
    double prefill_s[BENCH_MAX_LENS];   /* best prefill time per prompt length */
    double prefill_cpu[BENCH_MAX_LENS]; /* best process CPU seconds of that prefill */
    double decode_s;                    /* best seconds per decoded token */
    size_t weight_bytes;                /* weight bytes one decode step reads */
};

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double now(void) {
    return clock_s(CLOCK_MONOTONIC);
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
static int bench_once(struct bench_mode *b, const int *bench_lens, int n_lens, int n_gen, char *err,
                      size_t errlen) {
    const struct model_config *cfg = &b->e->model->cfg;
    struct sampler_params sp;
    sampler_params_default(&sp);
    for (int li = 0; li < n_lens; li++) {
        int n = bench_lens[li];
        int *prompt = malloc(sizeof(int) * n);
        for (int i = 0; i < n; i++)
            prompt[i] = 100 + (i * 7919) % (cfg->vocab_size - 200);
        struct gen_result res;
        double c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        int rc = gen_run(b->e, prompt, n, &sp, 1, 0, NULL, NULL, NULL, &res, err, errlen);
        double cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        free(prompt);
        if (rc != 0) return -1;
        if (res.prefill_seconds < b->prefill_s[li]) b->prefill_s[li] = res.prefill_seconds;
        if (cpu < b->prefill_cpu[li]) b->prefill_cpu[li] = cpu;
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

/* --attn CTX: the attention op alone (kernels/cpu_attn.c) at the model's shape, each variant this
 * CPU runs, best of REPS: the last 512-query chunk of a causal prefill of CTX tokens (what each
 * chunk of a long prompt costs at the end) and one decode row at CTX. GFLOP/s counts 4 · head_dim
 * flops (q·k and p·v) per visible (query head, key) pair. */
static void bench_attn(const struct model_config *cfg, int threads, int ctx, int reps) {
    int nh = cfg->n_heads, nkv = cfg->n_kv_heads, hd = cfg->head_dim, ps = 16;
    int n_pages = (ctx + ps - 1) / ps, chunk = ctx < 512 ? ctx : 512;
    size_t kvd = (size_t)nkv * hd, pool_f = (size_t)n_pages * ps * kvd;
    float *kp = malloc(sizeof(float) * pool_f), *vp = malloc(sizeof(float) * pool_f);
    float *q = malloc(sizeof(float) * (size_t)chunk * nh * hd);
    float *out = malloc(sizeof(float) * (size_t)chunk * nh * hd);
    int *table = malloc(sizeof(int) * (size_t)n_pages);
    struct cpu_pool *pool = cpu_pool_create(threads);
    if (!kp || !vp || !q || !out || !table || !pool) {
        fprintf(stderr, "bench_cpu: out of memory for --attn %d\n", ctx);
        goto done;
    }
    uint64_t st = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < pool_f; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        kp[i] = (float)((st >> 40) & 0xFFFF) / 32768.0f - 1.0f;
        vp[i] = (float)((st >> 20) & 0xFFFF) / 32768.0f - 1.0f;
    }
    for (size_t i = 0; i < (size_t)chunk * nh * hd; i++)
        q[i] = kp[i % pool_f];
    for (int i = 0; i < n_pages; i++)
        table[i] = i; /* pages in order */
    printf(
        "\nattention alone, %d/%d heads × %d, context %d, %d threads (GFLOP/s wall, per CPU s)\n",
        nh, nkv, hd, ctx, cpu_pool_size(pool));
    for (int kind = 0; kind < 2; kind++) {
        int n_q = kind == 0 ? chunk : 1, q_start[2] = {0, n_q}, kv_len[1] = {ctx};
        struct attn_batch ab = {.n_seqs = 1,
                                .q_start = q_start,
                                .kv_len = kv_len,
                                .block_table = table,
                                .max_pages = n_pages,
                                .page_size = ps,
                                .n_heads = nh,
                                .n_kv_heads = nkv,
                                .head_dim = hd,
                                .scale = 1.0f / sqrtf((float)hd),
                                .causal = 1,
                                .max_q_len = n_q,
                                .max_kv_len = ctx};
        double pairs = 0;
        for (int i = 0; i < n_q; i++)
            pairs += ctx - n_q + i + 1;
        double flop = pairs * nh * 4.0 * hd;
        printf("  %-34s", kind == 0 ? "prefill chunk (512 queries)" : "decode row (1 query)");
        for (int isa = 0; isa < CQ_ISA_COUNT; isa++) {
            if (!cq_isa_supported((enum cq_isa)isa)) continue;
            double best = 1e30, best_cpu = 1e30;
            int n_rep = kind == 0 ? reps : 20 * reps;
            for (int r = 0; r < n_rep; r++) {
                double t0 = now(), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
                cpu_attn(pool, (enum cq_isa)isa, out, q, kp, vp, &ab, 0);
                double t = now() - t0, c = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
                best = t < best ? t : best;
                best_cpu = c < best_cpu ? c : best_cpu;
            }
            printf("  %s %.1f, %.1f", cq_isa_name((enum cq_isa)isa), flop / best / 1e9,
                   flop / best_cpu / 1e9);
        }
        printf("\n");
    }
done:
    cpu_pool_destroy(pool);
    free(kp), free(vp), free(q), free(out), free(table);
}

/* --qdot: the decode product alone (cq_matmul, one activation row) on the model's own weights,
 * per variant, GB/s of weight rows: "hot", one matrix again and again (in L2 where it fits: the
 * kernel's own rate), and "cold", the same weight of every layer in turn (each read from memory
 * or L3 once per pass, as a decode step reads it); beside them a plain read of those cold bytes
 * (the ceiling the cold figure has, on this machine, at this moment). Best of REPS. */
static double qdot_read(const struct fg_qtensor *const *ws, int n) {
    uint64_t sum = 0;
    for (int i = 0; i < n; i++) {
        const uint64_t *p = ws[i]->data;
        for (size_t k = 0; k < (size_t)ws[i]->rows * ws[i]->row_bytes / 8; k++)
            sum += p[k];
    }
    return (double)(sum & 1);
}

static void bench_qdot(const struct model *m, int threads, int reps) {
    const struct model_config *cfg = &m->cfg;
    const char *names[4] = {"attn_q", "ffn_gate", "ffn_down", "output"};
    struct cpu_pool *pool = cpu_pool_create(threads);
    printf("\ndecode product alone (1 activation row), %d threads: weight GB/s hot (one matrix "
           "repeated) / cold (every layer's in turn); plain read of the cold bytes\n",
           cpu_pool_size(pool));
    for (int kind = 0; kind < 4; kind++) {
        const struct fg_qtensor *ws[256] = {0};
        int n = kind == 3 ? 1 : (cfg->n_layers < 256 ? cfg->n_layers : 256);
        for (int l = 0; l < n; l++) {
            const struct model_layer *L = &m->w.layers[l];
            ws[l] = kind == 0   ? &L->qwq
                    : kind == 1 ? &L->qw_gate
                    : kind == 2 ? &L->qw_down
                                : &m->w.q_output;
        }
        const struct fg_qtensor *w = ws[0];
        if (!w || !w->data || !cq_type_supported(w->type)) continue;
        size_t bytes = (size_t)w->rows * w->row_bytes;
        float *x = malloc(sizeof(float) * (size_t)w->cols), *y = malloc(sizeof(float) * w->rows);
        void *scratch = malloc(cq_matmul_scratch_bytes(w, 1));
        if (!x || !y || !scratch) {
            free(x), free(y), free(scratch);
            break;
        }
        for (int i = 0; i < w->cols; i++)
            x[i] = sinf(0.37f * (float)i);
        printf("  %-9s %s %5d x %4d (%5.2f MB x %2d)", names[kind], gguf_type_name(w->type),
               w->rows, w->cols, bytes / 1e6, n);
        for (int isa = 0; isa < CQ_ISA_COUNT; isa++) {
            if (!cq_isa_supported((enum cq_isa)isa)) continue;
            double hot = 1e30, cold = 1e30;
            for (int r = 0; r < reps; r++) {
                int loops = (int)(200e6 / (double)bytes) + 2;
                double t0 = now();
                for (int k = 0; k < loops; k++)
                    cq_matmul(pool, (enum cq_isa)isa, w, x, 1, y, (size_t)w->rows, 0, 0, scratch);
                double t = (now() - t0) / loops;
                hot = t < hot ? t : hot;
                t0 = now();
                for (int l = 0; l < n; l++)
                    cq_matmul(pool, (enum cq_isa)isa, ws[l], x, 1, y, (size_t)w->rows, 0, 0,
                              scratch);
                t = (now() - t0) / n;
                cold = t < cold ? t : cold;
            }
            printf("  %s %.1f / %.1f", cq_isa_name((enum cq_isa)isa), bytes / hot / 1e9,
                   bytes / cold / 1e9);
        }
        double rd = 1e30;
        volatile double sink = 0; /* keeps the read */
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            sink = sink + qdot_read(ws, n);
            double t = (now() - t0) / n;
            rd = t < rd ? t : rd;
        }
        printf("  read %.1f\n", bytes / rd / 1e9);
        free(x), free(y), free(scratch);
    }
    cpu_pool_destroy(pool);
}

int main(int argc, char **argv) {
    const char *model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    int threads = 0, n_gen = 64, reps = 3, n_modes = 2, json = 0;
    int bench_lens[BENCH_MAX_LENS] = {16, 128, 512}, n_lens = 3, max_len = 512, attn_ctx = 0;
    int qdot = 0;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"threads", required_argument, 0, 't'},
        {"gen", required_argument, 0, 'g'},   {"reps", required_argument, 0, 'r'},
        {"lens", required_argument, 0, 'l'},  {"blocks", no_argument, 0, 'b'},
        {"attn", required_argument, 0, 'a'},  {"qdot", no_argument, 0, 'q'},
        {"json", no_argument, 0, 'j'},        {0, 0, 0, 0}};
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
        else if (c == 'b')
            n_modes = 1;
        else if (c == 'a')
            attn_ctx = atoi(optarg);
        else if (c == 'q')
            qdot = 1, n_modes = 1;
        else if (c == 'j')
            json = 1;
        else if (c == 'l') {
            n_lens = 0;
            max_len = 0;
            for (char *p = optarg; *p && n_lens < BENCH_MAX_LENS;) {
                int v = (int)strtol(p, &p, 10);
                if (v <= 0) break;
                bench_lens[n_lens++] = v;
                max_len = v > max_len ? v : max_len;
                if (*p == ',') p++;
            }
            if (n_lens == 0) c = '?';
        }
        if (c == '?' || (c != 'm' && c != 't' && c != 'g' && c != 'r' && c != 'b' && c != 'l' &&
                         c != 'a' && c != 'j' && c != 'q')) {
            fprintf(stderr, "usage: bench_cpu [--model PATH] [--threads N] [--gen N] [--reps N] "
                            "[--lens N,N,...] [--blocks] [--attn CTX] [--qdot] [--json]\n");
            return 2;
        }
    }
    struct bench_mode modes[2] = {{.name = "blocks"}, {.name = "fp32"}};
    char err[512];
    double load[2];
    for (int k = 0; k < n_modes; k++) {
        struct engine_opts o;
        engine_opts_default(&o);
        o.model_path = model;
        o.device = ENGINE_DEVICE_CPU;
        o.n_threads = threads;
        /* 256 MB holds 5 000 SmolLM2 tokens (46 KB each); longer prompts get 128 KB a token */
        o.kv_cache_bytes = max_len <= 2048 ? (size_t)256 << 20 : (size_t)(max_len + 128) << 17;
        o.cpu_fp32_weights = k == 1;
        double t0 = now();
        if (engine_open(&o, &modes[k].e, err, sizeof(err)) != 0) {
            fprintf(stderr, "bench_cpu: %s\n", err);
            return 1;
        }
        load[k] = now() - t0;
        modes[k].weight_bytes = step_weight_bytes(modes[k].e->model);
        modes[k].decode_s = 1e30;
        for (int li = 0; li < n_lens; li++)
            modes[k].prefill_s[li] = modes[k].prefill_cpu[li] = 1e30;
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
    printf("model: %d layers, dim %d, %d/%d heads, vocab %d, source %s; load %.2f s (blocks)",
           cfg->n_layers, cfg->dim, cfg->n_heads, cfg->n_kv_heads, cfg->vocab_size,
           modes[0].e->model->dtype, load[0]);
    if (n_modes > 1) printf(", %.2f s (fp32)", load[1]);
    printf("\n");
    if (attn_ctx > 0 || qdot) { /* the attention op or the decode product alone, nothing else */
        if (attn_ctx > 0) bench_attn(cfg, threads, attn_ctx, reps);
        if (qdot) bench_qdot(modes[0].e->model, threads, reps);
        for (int k = 0; k < n_modes; k++)
            engine_close(modes[k].e);
        return 0;
    }
    for (int r = 0; r < reps; r++)
        for (int k = 0; k < n_modes; k++)
            if (bench_once(&modes[k], bench_lens, n_lens, n_gen, err, sizeof err) != 0) {
                fprintf(stderr, "bench_cpu: %s\n", err);
                return 1;
            }
    printf("\n%-30s", "tokens/s");
    for (int k = 0; k < n_modes; k++)
        printf(" %14s", modes[k].name);
    printf("\n");
    for (int li = 0; li < n_lens; li++) {
        char label[64];
        snprintf(label, sizeof(label), "prefill, %d-token prompt", bench_lens[li]);
        printf("%-30s", label);
        for (int k = 0; k < n_modes; k++)
            printf(" %14.1f", bench_lens[li] / modes[k].prefill_s[li]);
        printf("   (%.2f s; %.2f CPU s, %.1f tokens per CPU s)\n", modes[0].prefill_s[li],
               modes[0].prefill_cpu[li], bench_lens[li] / modes[0].prefill_cpu[li]);
    }
    printf("%-30s", "decode, batch 1");
    for (int k = 0; k < n_modes; k++)
        printf(" %14.1f", 1.0 / modes[k].decode_s);
    printf("\n%-30s", "weight MB per decode token");
    for (int k = 0; k < n_modes; k++)
        printf(" %14.1f", modes[k].weight_bytes / 1e6);
    printf("\n%-30s", "decode weight GB/s");
    for (int k = 0; k < n_modes; k++)
        printf(" %14.2f", modes[k].weight_bytes / modes[k].decode_s / 1e9);
    printf("\n");
    if (json) { /* the blocks mode: {"model", "threads", "prefill": {len: tokens/s}, "decode"} */
        printf("BENCH_JSON {\"model\": \"%s\", \"threads\": %d, \"isa\": \"%s\", \"gen\": %d, "
               "\"prefill\": {",
               model, threads > 0 ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN),
               cq_isa_name(cq_isa_best()), n_gen);
        for (int li = 0; li < n_lens; li++)
            printf("%s\"%d\": %.3f", li ? ", " : "", bench_lens[li],
                   bench_lens[li] / modes[0].prefill_s[li]);
        printf("}, \"prefill_cpu_s\": {");
        for (int li = 0; li < n_lens; li++)
            printf("%s\"%d\": %.3f", li ? ", " : "", bench_lens[li], modes[0].prefill_cpu[li]);
        printf("}, \"decode\": %.3f}\n", 1.0 / modes[0].decode_s);
    }
    for (int k = 0; k < n_modes; k++)
        engine_close(modes[k].e);
    return 0;
}
