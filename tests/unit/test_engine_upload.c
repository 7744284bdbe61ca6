/* test_engine_upload.c — engine_open's GPU path without a GPU: the CPU backend posing as the CUDA
 * one (tests/fake_cuda/cpu_as_cuda.c, build/tests/libfg_cpu_as_cuda.so through
 * FLASHGEN_CUDA_LIB) takes the weights as the GPU does (model/engine.c upload_weights: the
 * rope tables, the fp32 norm region of model_norms_upload, every other tensor in the element
 * type, one arena sized in advance). Its elements are fp32, so the forward pass on that copy must
 * give the CPU engine's logits (fp32 weights, MODEL_LOAD_KEEP_BLOCKS off) bit for bit: a tensor
 * misplaced by the arena's accounting overlaps another and changes them (a norm region 256 bytes
 * short changed every logit of SmolLM2). And each weight matrix goes to the backend whole through
 * upload_rows (where the CUDA backend records the e4m3 copies of --quantization fp8).
 */
#include <criterion/criterion.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/engine.h"
#include "model/forward.h"

#define SMOLLM2_PATH "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define GEMMA_PATH "models/gemma-3-270m-q4_k_m.gguf"
#define FAKE_CUDA_LIB "libfg_cpu_as_cuda.so" /* beside the test binary (Makefile) */
enum { N_GEN = 6 };

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* The model at PATH on the CPU (cuda 0) or the fake CUDA backend (1): the prompt's logits, then
 * N_GEN greedy steps, into a malloc'd (N_GEN + 1, vocab) array; *V the vocabulary. */
static float *engine_logits(const char *path, int cuda, int *V) {
    struct engine_opts o;
    engine_opts_default(&o);
    o.model_path = path;
    o.device = cuda ? ENGINE_DEVICE_CUDA : ENGINE_DEVICE_CPU;
    o.cpu_fp32_weights = 1;
    o.kv_cache_bytes = (size_t)64 << 20;
    o.n_threads = 2;
    struct engine *e;
    char err[512];
    cr_assert_eq(engine_open(&o, &e, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(e->device, cuda ? "cuda" : "cpu");
    if (cuda) {
        cr_assert_str_eq(engine_device_name(e), "cpu as cuda");
        /* every weight matrix (fp32 host ones here: cpu_fp32_weights) reached the backend whole
         * through upload_rows, where the CUDA backend makes its FLASHGEN_QUANTIZATION=fp8 e4m3
         * copies (model/engine.c upload_host): seven a layer, the embedding, an untied head */
        const struct model_config *c = &e->model->cfg;
        int want = 7 * c->n_layers + 1 + !c->tied_embeddings;
        cr_assert_eq(e->host_rows_uploads, want,
                     "%d weight matrices went through upload_rows, not %d", e->host_rows_uploads,
                     want);
    }
    cr_assert_eq(e->device_weight_bytes > 0, cuda, "device weight bytes %zu",
                 e->device_weight_bytes);
    *V = e->model->cfg.vocab_size;
    const int prompt[] = {1, 504, 3458, 314, 260, 2370, 28, 359, 5248, 253, 1345, 30};
    const int n_prompt = (int)(sizeof(prompt) / sizeof(prompt[0]));
    float *logits = malloc(sizeof(float) * (size_t)*V * (N_GEN + 1));
    cr_assert(logits);
    int toks[N_GEN + 1];
    struct kv_seq q = {0};
    cr_assert_eq(kv_seq_reserve(&e->kv, &q, n_prompt + N_GEN), 0);
    struct fwd_seq fs = {prompt, n_prompt, &q, n_prompt};
    for (int s = 0; s <= N_GEN; s++) {
        float *out = logits + (size_t)s * *V;
        cr_assert_eq(fwd_run(e->fwd, &fs, 1, out, err, sizeof(err)), 0, "%s", err);
        toks[s] = argmax(out, *V);
        fs = (struct fwd_seq){&toks[s], 1, &q, 0};
    }
    kv_seq_release(&e->kv, &q);
    engine_close(e);
    return logits;
}

static void check_model(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) cr_skip_test("%s not fetched (make test-models)", path);
    fclose(f);
    char exe[PATH_MAX], lib[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    cr_assert(n > 0);
    exe[n] = 0;
    snprintf(lib, sizeof(lib), "%s/%s", dirname(exe), FAKE_CUDA_LIB);
    cr_assert_eq(access(lib, R_OK), 0, "%s missing: built by make with the unit tests", lib);
    cr_assert_eq(setenv("FLASHGEN_CUDA_LIB", lib, 1), 0);
    int V = 0, V2 = 0;
    float *cpu = engine_logits(path, 0, &V), *dev = engine_logits(path, 1, &V2);
    cr_assert_eq(V, V2);
    size_t total = (size_t)V * (N_GEN + 1), differ = 0;
    for (size_t i = 0; i < total; i++)
        differ += memcmp(&cpu[i], &dev[i], sizeof(float)) != 0;
    cr_assert_eq(differ, 0, "%s: %zu of %zu logits differ between the CPU engine and its GPU path",
                 path, differ, total);
    free(cpu);
    free(dev);
}

Test(engine, gpu_path_weights_copy_gives_the_cpu_logits_smollm2, .timeout = 300) {
    check_model(SMOLLM2_PATH);
}

/* Gemma 3: QK-norm and post-norms (six norms a layer in the region), its local RoPE table,
 * head_dim 256 (rope tables of 512 bytes), tied embeddings */
Test(engine, gpu_path_weights_copy_gives_the_cpu_logits_gemma3, .timeout = 600) {
    check_model(GEMMA_PATH);
}
