/* engine.h — one loaded model on one backend: weights in backend memory, the paged KV-cache and
 * the forward state. The CLI and the server's worker thread drive it; whichever thread opened
 * the engine is its only user (the device belongs to that thread).
 */
#ifndef FG_ENGINE_H
#define FG_ENGINE_H

#include <stddef.h>

#include "forward.h"
#include "kv_cache.h"
#include "model.h"
#include "tokenizer.h"

enum engine_device {
    ENGINE_DEVICE_AUTO = 0,
    ENGINE_DEVICE_CPU = 1,
    ENGINE_DEVICE_CUDA = 2,
};

/* The engine's notices (the CPU fallback of --device auto, an unrecognised chat template): one
 * message without a trailing newline, called on the thread running engine_open. */
enum engine_log_level {
    ENGINE_LOG_DEBUG = 0, /* expected and routine: no CUDA backend library in a CPU-only build */
    ENGINE_LOG_INFO = 1,
    ENGINE_LOG_WARN = 2,
};
typedef void (*engine_log_fn)(enum engine_log_level level, const char *msg, void *user);

/* How the CUDA engine keeps GGUF weights (--gpu-weights): dequantized to bf16 at load, or
 * resident in their blocks where the backend reads the type (the rest bf16); AUTO = blocks where
 * they measured faster (at most 8 sequences per step) or where bf16 would not fit the device, else
 * bf16 (engine.c engine_auto_gpu_weights). The CPU always keeps blocks (cpu_fp32_weights). */
enum engine_gpu_weights {
    ENGINE_GPU_WEIGHTS_AUTO = 0,
    ENGINE_GPU_WEIGHTS_BF16 = 1,
    ENGINE_GPU_WEIGHTS_QUANTIZED = 2,
};

struct engine_opts {
    const char *model_path;
    enum engine_device device;
    int n_threads;         /* CPU backend threads; 0 = all cores */
    size_t kv_cache_bytes; /* KV pool size; 0 = derive (kv_fraction on a GPU, 512 MiB on the CPU) */
    float kv_fraction;     /* GPU: fraction of free memory after weights for the KV pool */
    int page_size;         /* tokens per KV page; 0 = 16 */
    int max_batch_tokens;  /* tokens per forward call; 0 = by device (engine.c: CUDA 1024, CPU 512)
                            */
    int max_batch_seqs;    /* sequences per forward call; 0 = by device (CUDA 256, CPU 64) */
    int cpu_fp32_weights;  /* 1: the CPU dequantizes GGUF blocks to fp32 at load (the path
                              transformers runs on the same file) instead of multiplying the blocks
                            */
    enum engine_gpu_weights gpu_weights; /* CUDA: bf16 or resident GGUF blocks (AUTO: default) */
    /* CUDA: 1 = fp8 (--quantization fp8): the F16/BF16/F32 weights also get e4m3 copies that the
     * products read (kernels/fp8.h; the backend's FLASHGEN_QUANTIZATION=fp8); 0 = none */
    int quantization;
    /* tensor parallelism (model/tp.h): shards of the model, 1, 2, 4 or 8; 0 = 1. Beyond 1 every
     * shard runs on the one backend context opened (emulated: a local sum for the all-reduce),
     * from fp32 host weights */
    int tensor_parallel;
    model_progress_fn progress;
    void *progress_user;
    engine_log_fn log; /* NULL: INFO and WARN as "flashgen: MSG" lines on stderr */
    void *log_user;
};

struct engine_backend;

struct engine {
    struct model *model;
    struct chat_template chat;
    const struct fg_ops *ops;
    void *ops_ctx;
    struct kv_cache kv;
    struct fwd_state *fwd;
    int max_batch_tokens, max_batch_seqs;
    char device[16];                /* "cpu" or "cuda" */
    struct engine_backend *backend; /* private to engine.c */
    size_t device_weight_bytes;     /* the weights' copy on the device (0 on the CPU) */
    size_t device_block_bytes;      /* the part of it resident in GGUF blocks (--gpu-weights) */
    size_t device_step_bytes; /* the part a decode step streams: all but a separate embedding */
    int host_rows_uploads;    /* fp32 host weight matrices sent whole through upload_rows */
    enum engine_gpu_weights gpu_weights; /* what AUTO became (BF16 or QUANTIZED) */
    int resident_quant; /* 1: the device keeps GGUF blocks (QUANTIZED on a backend with qupload) */
    int resident_split_qkv; /* layers whose q|k|v (mixed block types) is resident part by part */
    int tensor_parallel;    /* shards (1: none) */
    const char *tp_mode;    /* "none", or how shards meet: "emulated" (one context) */
};

void engine_opts_default(struct engine_opts *o);
int engine_open(const struct engine_opts *o, struct engine **out, char *err, size_t errlen);
void engine_close(struct engine *e); /* accepts NULL */
/* Human-readable device: "cpu" or the GPU's name. */
const char *engine_device_name(const struct engine *e);
/* "auto", "bf16" or "quantized" */
const char *engine_gpu_weights_name(enum engine_gpu_weights g);

#endif
