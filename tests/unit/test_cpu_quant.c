/* test_cpu_quant.c — the GGUF block dot products (kernels/cpu_quant.c) on fresh random blocks.
 *
 * Two references per product: (1) the exact maths of the quantized-activation product,
 * dequantize(weights) · dequantize(quantize(x)) in fp64 (gguf_dequantize is bit-identical to
 * gguf-py, tests/test_gguf_quant.py), and (2) dequantize(weights) · x with the fp32 activations,
 * within the bound that quantizing x to 8 bits per block allows. Every ISA variant this CPU runs
 * is tested; the plain-C one always is.
 */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_pool.h"
#include "kernels/cpu_quant.h"
#include "kernels/ops.h"
#include "model/engine.h"
#include "model/generate.h"
#include "model/gguf.h"
#include "model/gguf_quant.h"
#include "model/model.h"
#include "test_util.h"

static const uint32_t types[] = {GGUF_GGML_Q8_0, GGUF_GGML_Q4_0, GGUF_GGML_Q4_1, GGUF_GGML_Q5_0,
                                 GGUF_GGML_Q5_1, GGUF_GGML_Q4_K, GGUF_GGML_Q5_K, GGUF_GGML_Q6_K,
                                 GGUF_GGML_Q2_K, GGUF_GGML_Q3_K};
#define N_TYPES (sizeof(types) / sizeof(types[0]))

/* A finite, non-zero f16: sign (if SIGNED), exponent giving 2^-9 .. 2^-3, random mantissa. */
static uint16_t rand_f16(uint64_t *s, int is_signed) {
    uint16_t sign = is_signed && (tu_next(s) & 1) ? 0x8000 : 0;
    uint16_t e = (uint16_t)(15 - 9 + tu_next(s) % 7);
    return (uint16_t)(sign | e << 10 | (tu_next(s) & 0x3FF));
}

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* ROWS rows of K elements of TYPE: random quant bits, valid f16 scales at the format's offsets. */
static uint8_t *rand_blocks(uint64_t *s, uint32_t type, int rows, int k) {
    size_t rb = gguf_type_row_bytes(type, (uint64_t)k), n = rb * (size_t)rows;
    uint8_t *w = malloc(n);
    for (size_t i = 0; i < n; i++)
        w[i] = (uint8_t)tu_next(s);
    uint32_t blk = gguf_type_block(type);
    size_t bb = rb / (k / blk);
    for (size_t b = 0; b < n / bb; b++) {
        uint8_t *p = w + b * bb;
        switch (type) {
        case GGUF_GGML_Q4_1:
        case GGUF_GGML_Q5_1:
            put16(p, rand_f16(s, 0));
            put16(p + 2, rand_f16(s, 1)); /* the minimum has either sign */
            break;
        case GGUF_GGML_Q4_K:
        case GGUF_GGML_Q5_K:
            put16(p, rand_f16(s, 0));
            put16(p + 2, rand_f16(s, 0));
            break;
        case GGUF_GGML_Q6_K:
            put16(p + 208, rand_f16(s, 1));
            break;
        case GGUF_GGML_Q2_K:
            put16(p + 80, rand_f16(s, 0));
            put16(p + 82, rand_f16(s, 0));
            break;
        case GGUF_GGML_Q3_K:
            put16(p + 108, rand_f16(s, 1));
            break;
        default:
            put16(p, rand_f16(s, 1));
            break;
        }
    }
    return w;
}

struct case_refs {
    double exact, fp32, base, qbound;
};

/* References for one weight row W (dequantized, K) with activations X: the quantized-activation
 * product, the fp32 product, Σ|w||xa| (the scale of fp32 rounding) and the bound on the effect
 * of quantizing x (|x - xa| <= d/2 per element, d the block's activation scale). */
static struct case_refs refs(const float *w, const float *x, const float *xa, int k, int blk) {
    struct case_refs r = {0};
    for (int b = 0; b < k; b += blk) {
        double amax = 0;
        for (int i = b; i < b + blk; i++)
            amax = fmax(amax, fabs(x[i]));
        double half = amax / 127.0 / 2.0;
        for (int i = b; i < b + blk; i++) {
            r.exact += (double)w[i] * xa[i];
            r.fp32 += (double)w[i] * x[i];
            r.base += fabs((double)w[i] * xa[i]);
            r.qbound += fabs((double)w[i]) * half * 1.001; /* 1.001: rounding of x·(127/amax) */
        }
    }
    return r;
}

Test(cpu_quant, dot_matches_dequantized_fp64_every_type_every_isa) {
    uint64_t seed = tu_seed(), s = seed;
    const int rows = 5, n_act = 3;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        uint32_t type = types[ti];
        int blk = (int)gguf_type_block(type);
        /* 3, 5, 8 blocks: the AVX-512 Q4_1 kernel's groups of four blocks with tails of 3, 1
         * and none; 576 (18 blocks), a tail of 2 */
        int lens[] = {blk * 3, blk * 5, blk * 8, blk == 32 ? 576 : 1536};
        for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
            int k = lens[li];
            size_t rb = gguf_type_row_bytes(type, (uint64_t)k);
            uint8_t *w = rand_blocks(&s, type, rows, k);
            float *wd = malloc(sizeof(float) * (size_t)k * rows);
            cr_assert_eq(gguf_dequantize(type, w, wd, (uint64_t)k * rows), 0);
            float *x = malloc(sizeof(float) * (size_t)k * n_act);
            float *xa = malloc(sizeof(float) * (size_t)k * n_act);
            tu_fill(&s, x, (size_t)k * n_act, -2, 2);
            size_t ab = cq_act_row_bytes(type, k);
            uint8_t *qa = malloc(ab * n_act);
            for (int a = 0; a < n_act; a++) {
                cq_quantize_act(type, x + (size_t)a * k, k, qa + a * ab);
                cq_dequantize_act(type, qa + a * ab, k, xa + (size_t)a * k);
            }
            for (int isa = 0; isa < CQ_ISA_COUNT; isa++) {
                if (!cq_isa_supported((enum cq_isa)isa)) {
                    if (ti == 0 && li == 0)
                        cr_log_info("cpu_quant: %s not on this CPU, not tested here",
                                    cq_isa_name((enum cq_isa)isa));
                    continue;
                }
                for (int r = 0; r < rows; r++) {
                    float y[3], y1[3];
                    cq_dot_rows((enum cq_isa)isa, type, w + r * rb, qa, ab, n_act, k, y);
                    /* one activation row at a time too: the decode case, which some variants
                     * run in a body of its own (AVX-512 Q4_1: two blocks per zmm) */
                    for (int a = 0; a < n_act; a++)
                        cq_dot_rows((enum cq_isa)isa, type, w + r * rb, qa + a * ab, ab, 1, k,
                                    &y1[a]);
                    for (int a = 0; a < n_act; a++) {
                        struct case_refs f =
                            refs(wd + (size_t)r * k, x + (size_t)a * k, xa + (size_t)a * k, k, blk);
                        /* Integer block sums are exact; fp32 enters in the per-group scaling and
                         * the running sum over <= 64 groups/blocks: a few ulps (2^-24) each of
                         * Σ|w||xa|, <= ~4e-6; 2e-5 leaves room for Q4_1/Q5_1/K minimum terms,
                         * whose d q and m parts can cancel inside one element. */
                        double tol = 2e-5 * f.base + 1e-30;
                        cr_assert(
                            fabs(y[a] - f.exact) <= tol,
                            "%s %s k=%d row %d act %d: %.9g vs exact %.9g (tol %g, seed %llu)",
                            gguf_type_name(type), cq_isa_name((enum cq_isa)isa), k, r, a, y[a],
                            f.exact, tol, (unsigned long long)seed);
                        cr_assert(fabs(y1[a] - f.exact) <= tol,
                                  "%s %s k=%d row %d act %d alone: %.9g vs exact %.9g (tol %g, "
                                  "seed %llu)",
                                  gguf_type_name(type), cq_isa_name((enum cq_isa)isa), k, r, a,
                                  y1[a], f.exact, tol, (unsigned long long)seed);
                        /* Against the fp32 activations: quantizing x moves each term by at most
                         * |w| d/2, plus the rounding above. */
                        double tol32 = f.qbound + tol;
                        cr_assert(fabs(y[a] - f.fp32) <= tol32,
                                  "%s %s k=%d: %.9g vs fp32 %.9g (bound %g, seed %llu)",
                                  gguf_type_name(type), cq_isa_name((enum cq_isa)isa), k, y[a],
                                  f.fp32, tol32, (unsigned long long)seed);
                    }
                }
            }
            free(w), free(wd), free(x), free(xa), free(qa);
        }
    }
}

/* The matrix form (threads over output rows, 1–16 tokens per weight pass and more in chunks,
 * accumulate or not) gives what the row form gives, every variant: bit for bit where it runs
 * the row kernels, and where it takes the panel product (AVX-512 VNNI, >= CQ_PANEL_MIN tokens:
 * the same integer sums, scaled in another order) within the row-product test's fp32 bound of
 * the exact fp64 product. 37 rows: two full 16-row panels and a partial one; 16, 21 and 35
 * tokens: full 12-token tiles (CQ_PT) and tails of 4, 9 and 11; 5 blocks a row: one group of
 * four blocks and a tail of one in the AVX-512 Q4_1 row kernel. */
Test(cpu_quant, matmul_matches_row_products) {
    uint64_t seed = tu_seed(), s = seed;
    struct cpu_pool *pool = cpu_pool_create(2);
    cr_assert(pool);
    int ns[] = {1, 4, 7, 8, 16, 21, 35};
    int n_panel_cases = 0;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        uint32_t type = types[ti];
        int blk = (int)gguf_type_block(type), k = blk * 5, rows = 37;
        uint8_t *w = rand_blocks(&s, type, rows, k);
        float *wd = malloc(sizeof(float) * (size_t)k * rows);
        cr_assert_eq(gguf_dequantize(type, w, wd, (uint64_t)k * rows), 0);
        struct fg_qtensor qt = {.type = type,
                                .rows = rows,
                                .cols = k,
                                .row_bytes = gguf_type_row_bytes(type, (uint64_t)k),
                                .data = w};
        for (size_t ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ni++) {
            int n = ns[ni];
            float *x = malloc(sizeof(float) * (size_t)n * k);
            float *xa = malloc(sizeof(float) * (size_t)n * k);
            size_t ld = (size_t)rows + 3; /* an output row stride wider than the matrix */
            float *y = malloc(sizeof(float) * (size_t)n * ld);
            float *base = malloc(sizeof(float) * (size_t)n * ld);
            float *ref = malloc(sizeof(float) * (size_t)n);
            tu_fill(&s, x, (size_t)n * k, -1, 1);
            tu_fill(&s, base, (size_t)n * ld, -1, 1);
            void *scratch = malloc(cq_matmul_scratch_bytes(&qt, n));
            size_t ab = cq_act_row_bytes(type, k);
            uint8_t *qa = malloc(ab * n);
            for (int t = 0; t < n; t++) {
                cq_quantize_act(type, x + (size_t)t * k, k, qa + t * ab);
                cq_dequantize_act(type, qa + t * ab, k, xa + (size_t)t * k);
            }
            for (int isa = 0; isa < CQ_ISA_COUNT; isa++) {
                if (!cq_isa_supported((enum cq_isa)isa)) continue;
                /* prompt calls from 2 tokens, as the forward pass makes them, and decode calls
                 * (a batch of sequences, one new token each) at every n */
                for (int call = 0; call < 2 * (1 + (n >= 2)); call++) {
                    int acc = call % 2, prompt = call >= 2;
                    int panel = cq_matmul_uses_panels((enum cq_isa)isa, type, prompt);
                    n_panel_cases += panel;
                    memcpy(y, base, sizeof(float) * (size_t)n * ld);
                    cq_matmul(pool, (enum cq_isa)isa, &qt, x, n, y, ld, acc, prompt, scratch);
                    for (int o = 0; o < rows; o++) {
                        cq_dot_rows((enum cq_isa)isa, type, w + o * qt.row_bytes, qa, ab, n, k,
                                    ref);
                        for (int t = 0; t < n; t++) {
                            float got = y[t * ld + o];
                            if (panel) {
                                struct case_refs f = refs(wd + (size_t)o * k, x + (size_t)t * k,
                                                          xa + (size_t)t * k, k, blk);
                                /* the bound of dot_matches_dequantized_fp64_every_type_every_isa,
                                 * plus the rounding of the one accumulating add */
                                double want = acc ? base[t * ld + o] + f.exact : f.exact;
                                double tol = 2e-5 * f.base + 1e-30 + (acc ? 6e-8 * fabs(want) : 0);
                                cr_assert(fabs(got - want) <= tol,
                                          "%s %s panel n=%d acc=%d row %d tok %d: %.9g vs exact "
                                          "%.9g (seed %llu)",
                                          gguf_type_name(type), cq_isa_name((enum cq_isa)isa), n,
                                          acc, o, t, got, want, (unsigned long long)seed);
                                continue;
                            }
                            /* same kernel, same order: bit-identical (plus one fp32 add) */
                            float want = acc ? base[t * ld + o] + ref[t] : ref[t];
                            cr_assert_eq(got, want, "%s %s n=%d acc=%d row %d tok %d (seed %llu)",
                                         gguf_type_name(type), cq_isa_name((enum cq_isa)isa), n,
                                         acc, o, t, (unsigned long long)seed);
                        }
                    }
                    for (int t = 0; t < n; t++) /* columns past the matrix stay as they were */
                        for (size_t o = (size_t)rows; o < ld; o++)
                            cr_assert_eq(y[t * ld + o], base[t * ld + o]);
                }
            }
            free(x), free(xa), free(y), free(base), free(ref), free(scratch), free(qa);
        }
        free(w), free(wd);
    }
    if (cq_isa_supported(CQ_ISA_AVX512))
        cr_assert(n_panel_cases > 0, "the panel product was never taken");
    else
        cr_log_info("cpu_quant: no AVX-512 VNNI here, the panel product is not tested");
    cpu_pool_destroy(pool);
}

/* FLASHGEN_CPU_ISA forces a lower variant; the best one is the highest this CPU runs. */
Test(cpu_quant, isa_selection_honours_env) {
    cr_assert(cq_isa_supported(CQ_ISA_C));
    setenv("FLASHGEN_CPU_ISA", "c", 1);
    cr_assert_eq(cq_isa_best(), CQ_ISA_C);
    unsetenv("FLASHGEN_CPU_ISA");
    enum cq_isa best = cq_isa_best();
    cr_assert(cq_isa_supported(best));
    for (int i = best + 1; i < CQ_ISA_COUNT; i++)
        cr_assert(!cq_isa_supported((enum cq_isa)i), "best %s but %s is supported",
                  cq_isa_name(best), cq_isa_name((enum cq_isa)i));
    cr_assert(!cq_type_supported(GGUF_GGML_F32));
    cr_assert(!cq_type_supported(GGUF_GGML_Q8_K));
    cr_assert(cq_type_supported(GGUF_GGML_Q2_K));
    cr_assert(cq_type_supported(GGUF_GGML_Q3_K));
    cr_assert(cq_type_supported(GGUF_GGML_Q6_K));
}

/* ---- the loader keeps the blocks, the forward pass runs them ---------------------------- */

#define SMOLLM2 "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define GEMMA3 "models/gemma-3-270m-q4_k_m.gguf"

/* Weights resident with MODEL_LOAD_KEEP_BLOCKS are at most 1.1x the file's tensor bytes (issue
 * 13), and every linear weight of these files is one of the kept ones. */
static void check_resident(const char *path) {
    char err[512];
    struct gguf_file *f = NULL;
    cr_assert_eq(gguf_open(path, &f, err, sizeof err), 0, "%s", err);
    uint64_t file_bytes = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        file_bytes += f->tensors[i].n_bytes;
    gguf_close(f);
    struct model *m = NULL;
    cr_assert_eq(model_load_flags(path, MODEL_LOAD_KEEP_BLOCKS, &m, NULL, NULL, err, sizeof err), 0,
                 "%s", err);
    size_t resident = m->w.arena_bytes + m->w.qarena_bytes;
    cr_log_info("%s: %.1f MB of tensors in the file, %.1f MB resident (%.1f blocks + %.1f fp32)",
                path, file_bytes / 1048576.0, resident / 1048576.0, m->w.qarena_bytes / 1048576.0,
                m->w.arena_bytes / 1048576.0);
    cr_assert(resident <= 1.1 * (double)file_bytes, "%s: %zu resident bytes for %llu in the file",
              path, resident, (unsigned long long)file_bytes);
    cr_assert(m->w.q_embd.data && !m->w.tok_embd);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const struct model_layer *L = &m->w.layers[l];
        cr_assert(L->qwq.data && L->qwk.data && L->qwv.data && L->qwo.data && L->qw_gate.data &&
                      L->qw_up.data && L->qw_down.data && !L->wq && !L->w_down,
                  "%s: layer %d not kept in blocks", path, l);
    }
    model_free(m);
}

Test(cpu_quant, resident_weights_within_1_1x_of_the_file) {
    int n = 0;
    if (!access(SMOLLM2, R_OK)) check_resident(SMOLLM2), n++;
    if (!access(GEMMA3, R_OK)) check_resident(GEMMA3), n++;
    if (!n) cr_skip_test("neither %s nor %s present (make model test-models)", SMOLLM2, GEMMA3);
}

static struct engine *open_cpu(const char *path, int fp32) {
    struct engine_opts o;
    engine_opts_default(&o);
    o.model_path = path;
    o.device = ENGINE_DEVICE_CPU;
    o.cpu_fp32_weights = fp32;
    o.kv_cache_bytes = (size_t)64 << 20;
    struct engine *e = NULL;
    char err[512];
    cr_assert_eq(engine_open(&o, &e, err, sizeof err), 0, "%s", err);
    return e;
}

/* The block path against the fp32-weight path (which test_golden holds to transformers) on the
 * golden prompts, greedy: at every step up to the first differing pick, each logit is within B
 * of fp32's, B = 8% of the step's largest |logit|. Why 8%: quantizing each activation block to
 * 8 bits (as llama.cpp does for these weights) moves an element by up to max|x|/254 of its
 * block, and SmolLM2's few large hidden channels make that max large; through 30 layers and the
 * head this was measured at up to 5.3% (6 prompts × 16 steps, 2026-12-02), so the exact-token
 * golden (1e-2 absolute on step-0 logits) cannot hold for this path. A pick may differ only
 * where fp32's own margin between the two tokens is at most 2B (each side moved by <= B). */
Test(cpu_quant, smollm2_blocks_track_fp32_weights, .timeout = 600) {
    if (access(SMOLLM2, R_OK)) cr_skip_test("%s not present (make model)", SMOLLM2);
    char *text = tu_slurp("tests/golden/generate_smollm2.json", NULL);
    cr_assert(text);
    cJSON *doc = cJSON_Parse(text);
    cr_assert(doc);
    struct engine *ef = open_cpu(SMOLLM2, 1), *eq = open_cpu(SMOLLM2, 0);
    cr_assert(eq->model->w.qarena && !ef->model->w.qarena);
    int V = ef->model->cfg.vocab_size, n_new = 16, n_cases = 0, n_same = 0;
    double worst = 0;
    float *lf = malloc(sizeof(float) * (size_t)n_new * V), *lq = malloc(sizeof(float) * n_new * V);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(doc, "cases")) {
        if (n_cases == 6) break;
        const cJSON *pa = cJSON_GetObjectItem(c, "prompt_ids");
        int n_prompt = cJSON_GetArraySize(pa);
        int *prompt = malloc(sizeof(int) * (size_t)n_prompt);
        for (int i = 0; i < n_prompt; i++)
            prompt[i] = cJSON_GetArrayItem(pa, i)->valueint;
        struct sampler_params sp;
        sampler_params_default(&sp);
        struct gen_result rf, rq;
        char err[512];
        cr_assert_eq(
            gen_run(ef, prompt, n_prompt, &sp, n_new, 0, NULL, NULL, lf, &rf, err, sizeof err), 0,
            "%s", err);
        cr_assert_eq(
            gen_run(eq, prompt, n_prompt, &sp, n_new, 0, NULL, NULL, lq, &rq, err, sizeof err), 0,
            "%s", err);
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        int same = 1;
        for (int s = 0; s < n_new && s < rf.n && s < rq.n; s++) {
            const float *f = lf + (size_t)s * V, *q = lq + (size_t)s * V;
            double big = 0, diff = 0;
            for (int i = 0; i < V; i++) {
                big = fmax(big, fabs(f[i]));
                diff = fmax(diff, fabs((double)f[i] - q[i]));
            }
            double B = 0.08 * big;
            worst = fmax(worst, diff / big);
            cr_assert(diff <= B, "%s step %d: logits differ by %g (bound %g)", name, s, diff, B);
            if (rf.ids[s] != rq.ids[s]) {
                double margin = (double)f[rf.ids[s]] - f[rq.ids[s]];
                cr_assert(margin <= 2 * B, "%s step %d: picks %d vs %d with fp32 margin %g > %g",
                          name, s, rf.ids[s], rq.ids[s], margin, 2 * B);
                same = 0;
                break; /* the continuations differ from here on */
            }
        }
        n_same += same;
        n_cases++;
        gen_result_free(&rf);
        gen_result_free(&rq);
        free(prompt);
    }
    cr_log_info("smollm2 blocks vs fp32 weights: %d/%d cases pick the same %d tokens; worst "
                "logit error %.2f%% of the step's largest logit",
                n_same, n_cases, n_new, 100 * worst);
    cr_assert(n_cases > 0);
    free(lf), free(lq);
    engine_close(ef);
    engine_close(eq);
    cJSON_Delete(doc);
    free(text);
}

/* Activation quantization (whichever variant the CPU runs) is the documented maths, bit for bit:
 * d = max|x| / 127 per block, q = x · (127 / max|x|) rounded to nearest-even; the sums match. */
Test(cpu_quant, activation_quantization_is_exact) {
    uint64_t seed = tu_seed(), s = seed;
    uint32_t ts[] = {GGUF_GGML_Q8_0, GGUF_GGML_Q4_K};
    for (int ti = 0; ti < 2; ti++) {
        int blk = ti ? 256 : 32, k = blk * 5;
        float *x = malloc(sizeof(float) * k), *xa = malloc(sizeof(float) * k);
        tu_fill(&s, x, (size_t)k, -3, 3);
        for (int i = 0; i < blk; i++)
            x[2 * blk + i] = 0; /* an all-zero block: d 0, q 0 */
        uint8_t *qa = malloc(cq_act_row_bytes(ts[ti], k));
        cq_quantize_act(ts[ti], x, k, qa);
        cq_dequantize_act(ts[ti], qa, k, xa);
        for (int b = 0; b < k / blk; b++) {
            float amax = 0;
            for (int i = b * blk; i < (b + 1) * blk; i++)
                amax = fmaxf(amax, fabsf(x[i]));
            float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
            for (int i = b * blk; i < (b + 1) * blk; i++) {
                float want = d * (float)lrintf(x[i] * id);
                cr_assert_eq(xa[i], want, "%s element %d: %g vs %g (seed %llu)",
                             gguf_type_name(ts[ti]), i, xa[i], want, (unsigned long long)seed);
            }
        }
        free(x), free(xa), free(qa);
    }
}
