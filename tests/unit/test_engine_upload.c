/* test_engine_upload.c — engine_open's GPU path without a GPU: the CPU backend posing as the CUDA
 * one (tests/fake_cuda/cpu_as_cuda.c, build/tests/libfg_cpu_as_cuda.so through
 * FLASHGEN_CUDA_LIB) takes the weights as the GPU does (model/engine.c upload_weights: the
 * rope tables, the fp32 norm region of model_norms_upload, every other tensor in the element
 * type, one arena sized in advance). Its elements are fp32, so the forward pass on that copy must
 * give the CPU engine's logits (fp32 weights, MODEL_LOAD_KEEP_BLOCKS off) bit for bit: a tensor
 * misplaced by the arena's accounting overlaps another and changes them (a norm region 256 bytes
 * short changed every logit of SmolLM2). And each weight matrix goes to the backend whole through
 * upload_rows (where the CUDA backend records the e4m3 copies of --quantization fp8). With
 * --gpu-weights quantized, a tied model's embedding and head are resident once (issue 13): the
 * fake backend counts the bytes qupload stores, and its FG_QLAYOUT_GEMM (the rows reversed) makes
 * an embedding gather that misread the head's layout change the logits.
 */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/ops.h"
#include "model/engine.h"
#include "model/forward.h"
#include "model/gguf.h"
#include "model/gguf_quant.h"

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

/* What the fake CUDA run should show of its weights (engine_logits) */
struct want_dev {
    int quantized;    /* --gpu-weights quantized (else bf16) */
    int split_layers; /* layers whose q|k|v stayed resident part by part */
    int host_rows;    /* quantized: matrices sent whole through upload_rows (fp8's copies) */
    /* quantized, every type kept: each quantized matrix of the file resident exactly once */
    int blocks_once;
};

/* The fake backend's qupload byte counters (tests/fake_cuda/cpu_as_cuda.c), by enum fg_qlayout,
 * from the library engine_open opened (FLASHGEN_CUDA_LIB, set by check_model). */
static const size_t *fake_qupload_bytes(void) {
    void *dl = dlopen(getenv("FLASHGEN_CUDA_LIB"), RTLD_NOW | RTLD_NOLOAD);
    cr_assert(dl, "the fake CUDA library is not loaded");
    const size_t *n = dlsym(dl, "fg_fake_qupload_bytes");
    cr_assert(n, "no fg_fake_qupload_bytes in the fake CUDA library");
    dlclose(dl); /* the engine's handle keeps it loaded */
    return n;
}

/* The bytes of the file's quantized matrices (each tensor once) and of its embedding. */
static void file_block_bytes(const char *path, size_t *all, size_t *embd) {
    struct gguf_file *f;
    char err[256];
    cr_assert_eq(gguf_open(path, &f, err, sizeof err), 0, "%s", err);
    *all = *embd = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        if (t->n_dims != 2 || !gguf_type_quantized(t->type)) continue;
        *all += t->n_bytes;
        if (!strcmp(t->name, "token_embd.weight")) *embd = t->n_bytes;
    }
    gguf_close(f);
}

/* A resident copy's bytes against the file's (want_dev.blocks_once): qupload stored each
 * quantized matrix once, a tied embedding none of its own in FG_QLAYOUT_ROWS (the head's
 * FG_QLAYOUT_GEMM copy serves both), an untied one its rows there; the engine's accounts agree
 * (its resident bytes are those plus at most 256 bytes of alignment per resident group, and a
 * decode step reads all of them but an untied embedding). */
static void check_blocks_once(const struct engine *e, const char *path) {
    size_t all, embd;
    file_block_bytes(path, &all, &embd);
    const size_t *up = fake_qupload_bytes();
    const int tied = e->model->cfg.tied_embeddings;
    cr_assert_eq(up[FG_QLAYOUT_ROWS], tied ? 0 : embd,
                 "%zu bytes stored in FG_QLAYOUT_ROWS, want %zu (the embedding's own copy%s)",
                 up[FG_QLAYOUT_ROWS], tied ? (size_t)0 : embd, tied ? ": none, tied" : "");
    cr_assert_eq(up[FG_QLAYOUT_ROWS] + up[FG_QLAYOUT_GEMM], all,
                 "qupload stored %zu + %zu bytes, the file's quantized matrices are %zu",
                 up[FG_QLAYOUT_ROWS], up[FG_QLAYOUT_GEMM], all);
    const size_t groups = 4 * (size_t)e->model->cfg.n_layers + 2; /* q|k|v o gate|up down */
    cr_assert(e->device_block_bytes >= all && e->device_block_bytes <= all + 256 * groups,
              "device_block_bytes %zu for %zu bytes of blocks", e->device_block_bytes, all);
    const size_t own_embd = tied ? 0 : (embd + 255) / 256 * 256;
    cr_assert_eq(e->device_step_bytes, e->device_weight_bytes - own_embd,
                 "device_step_bytes %zu of %zu (the embedding's own %zu excluded)",
                 e->device_step_bytes, e->device_weight_bytes, own_embd);
}

/* The model at PATH on the CPU (DEV NULL) or the fake CUDA backend (DEV as said there): the
 * prompt's logits, then N_GEN greedy steps, into a malloc'd (N_GEN + 1, vocab) array; *V the
 * vocabulary. */
static float *engine_logits(const char *path, const struct want_dev *dev, int *V) {
    int cuda = dev != NULL;
    struct engine_opts o;
    engine_opts_default(&o);
    o.model_path = path;
    if (dev)
        o.gpu_weights = dev->quantized ? ENGINE_GPU_WEIGHTS_QUANTIZED : ENGINE_GPU_WEIGHTS_BF16;
    o.device = cuda ? ENGINE_DEVICE_CUDA : ENGINE_DEVICE_CPU;
    o.cpu_fp32_weights = 1;
    o.kv_cache_bytes = (size_t)64 << 20;
    o.n_threads = 2;
    struct engine *e;
    char err[512];
    cr_assert_eq(engine_open(&o, &e, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(e->device, cuda ? "cuda" : "cpu");
    if (cuda && dev->quantized) {
        cr_assert_str_eq(engine_device_name(e), "cpu as cuda");
        cr_assert(e->device_block_bytes > 0, "no weight stayed in its blocks");
        cr_assert_eq(e->resident_split_qkv, dev->split_layers,
                     "%d layers' q|k|v resident part by part, not %d", e->resident_split_qkv,
                     dev->split_layers);
        cr_assert_eq(e->host_rows_uploads, dev->host_rows,
                     "%d matrices went whole through upload_rows, not %d", e->host_rows_uploads,
                     dev->host_rows);
        if (dev->blocks_once) check_blocks_once(e, path);
    } else if (cuda) {
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

static void check_model(const char *path, const struct want_dev *want) {
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
    float *cpu = engine_logits(path, NULL, &V), *dev = engine_logits(path, want, &V2);
    cr_assert_eq(V, V2);
    size_t total = (size_t)V * (N_GEN + 1), differ = 0;
    for (size_t i = 0; i < total; i++)
        differ += memcmp(&cpu[i], &dev[i], sizeof(float)) != 0;
    cr_assert_eq(differ, 0, "%s: %zu of %zu logits differ between the CPU engine and its GPU path",
                 path, differ, total);
    free(cpu);
    free(dev);
}

static const struct want_dev BF16 = {0, 0, 0, 0};

Test(engine, gpu_path_weights_copy_gives_the_cpu_logits_smollm2, .timeout = 300) {
    check_model(SMOLLM2_PATH, &BF16);
}

/* Gemma 3: QK-norm and post-norms (six norms a layer in the region), its local RoPE table,
 * head_dim 256 (rope tables of 512 bytes), tied embeddings */
Test(engine, gpu_path_weights_copy_gives_the_cpu_logits_gemma3, .timeout = 600) {
    check_model(GEMMA_PATH, &BF16);
}

/* --gpu-weights quantized on the fake backend, which keeps blocks as they are and multiplies
 * them dequantized to fp32 by the CPU's own ops (tests/fake_cuda/cpu_as_cuda.c): every resident
 * group, stacked as upload_weights stacks it and read as forward.c reads it, must give the fp32
 * CPU engine's logits bit for bit. SmolLM2: all Q4_1, q|k|v and gate|up one matrix each, the
 * tied embedding and head one copy in FG_QLAYOUT_GEMM, which the embedding lookup gathers from. */
Test(engine, resident_blocks_give_the_cpu_logits_smollm2, .timeout = 300) {
    const struct want_dev q = {1, 0, 0, 1};
    check_model(SMOLLM2_PATH, &q);
}

/* The Gemma 3 Q4_K_M file mixes types inside q|k|v (Q5_0 q and k, Q8_0 v in 9 of its 18 layers):
 * those stay resident part by part, each product storing into its columns of the q|k|v rows
 * (ld_out), the 12-token prompt a strided store of 12 rows. Tied: its Q8_0 embedding resident once,
 * as the head. */
Test(engine, resident_mixed_qkv_gives_the_cpu_logits_gemma3, .timeout = 600) {
    const struct want_dev q = {1, 9, 0, 1};
    check_model(GEMMA_PATH, &q);
}

/* A backend that does not keep Q8_0: the 9 mixed q|k|v go to the element type whole (their
 * rows adjacent for the fp32 product), the other 9 stay one Q5_0 matrix, the Q8_0 embedding is
 * dequantized. Under FLASHGEN_QUANTIZATION=fp8 (which the fake ignores) each of those 28
 * dequantized matrices reaches the backend whole, where the CUDA one makes its e4m3 copy. */
Test(engine, resident_with_a_type_not_kept_gives_the_cpu_logits_gemma3, .timeout = 600) {
    cr_assert_eq(setenv("FG_FAKE_QTYPES", "6,12,14", 1), 0); /* Q5_0, Q4_K, Q6_K */
    cr_assert_eq(setenv("FLASHGEN_QUANTIZATION", "fp8", 1), 0);
    const struct want_dev q = {1, 0, 9 * 3 + 1, 0};
    check_model(GEMMA_PATH, &q);
}
