/* engine.c — open a model on a backend: load, pick the device, put the weights where the
 * backend computes, size the KV pool, build the forward state. The only place that knows which
 * backends exist.
 *
 * The CUDA backend is a shared object (build/libflashgen_cuda.so) opened with dlopen, so the
 * CPU build runs where no CUDA library is installed. --device auto tries it and falls back to
 * the CPU: silently (a debug notice) when the library is absent, with one info notice when it is
 * there but no GPU can be used; --device cuda fails with that reason instead. Every notice goes
 * through engine_log, to the caller's engine_opts.log.
 */
#include "engine.h"

#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kernels/ops.h"
#include "model/errmsg.h"
#include "model/gguf.h"
#include "model/gguf_quant.h"
#include "model/tp.h"

#define ENGINE_CPU_KV_BYTES ((size_t)512 << 20) /* CPU default: 512 MiB of KV pool */
#define ENGINE_CUDA_LIB "libflashgen_cuda.so"
/* Batch limits when the options leave them 0, by device. CUDA: 256 sequences (the decode graphs
 * cover every batch up to it, model/forward.c) and a token budget of 1024 per iteration: a
 * step's time grows with its rows once prefill chunks join the decode rows, and on the 8B shape
 * 1024 rows of GEMMs are about 15 TFLOP, some 25 ms on an H200, which keeps a decoding stream's
 * inter-token latency under the 40 ms of issue 14 while a long prompt is prefilled beside it
 * (2048 doubled it; 8192 gave ITL p99 194 ms at 256 clients, issue 14). CPU: 64 sequences and
 * 512 tokens (its steps are slow per row: small budgets keep streams moving). */
#define ENGINE_CUDA_BATCH_SEQS 256
#define ENGINE_CUDA_BATCH_TOKENS 1024
#define ENGINE_CPU_BATCH_SEQS 64
#define ENGINE_CPU_BATCH_TOKENS 512
/* What --gpu-weights auto means (engine_auto_gpu_weights): a GGUF file's blocks stay resident
 * where the packed GEMV measured faster than bf16 — up to ENGINE_AUTO_QUANT_SEQS sequences per
 * step (H200, 8B shape, bench/ENGINE.md: Q4_0 1.76x bf16 at batch 1 and 1.29x at 8, Q8_0 1.19x
 * and 0.97x; from 16 rows on the bf16 scratch path makes both 0.5-0.9x) — or where the bf16 copy
 * would take more than ENGINE_AUTO_BF16_SHARE of the device's free memory (a model that only fits
 * quantized); everything else bf16. */
#define ENGINE_AUTO_QUANT_SEQS 8
#define ENGINE_AUTO_BF16_SHARE 0.8

void engine_opts_default(struct engine_opts *o) {
    memset(o, 0, sizeof(*o));
    o->device = ENGINE_DEVICE_AUTO;
    o->kv_fraction = 0.9f;
    o->page_size = 16;
    o->max_batch_tokens = 0; /* by device */
    o->max_batch_seqs = 0;
    /* FLASHGEN_CPU_WEIGHTS=fp32: the CPU dequantizes GGUF blocks at load, as before quantized
     * inference (the path tests compare bit for bit with gguf-py's dequantized weights) */
    const char *cw = getenv("FLASHGEN_CPU_WEIGHTS");
    o->cpu_fp32_weights = cw && !strcmp(cw, "fp32");
}

/* The one way the engine reports a notice: to o->log, else INFO and WARN on stderr. */
static void engine_log(const struct engine_opts *o, enum engine_log_level level, const char *fmt,
                       ...) __attribute__((format(printf, 3, 4)));
static void engine_log(const struct engine_opts *o, enum engine_log_level level, const char *fmt,
                       ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (o->log)
        o->log(level, msg, o->log_user);
    else if (level != ENGINE_LOG_DEBUG)
        fprintf(stderr, "flashgen: %s\n", msg);
}

/* Backend bookkeeping the header does not need to show. */
struct engine_backend {
    void *dl;                           /* dlopen handle of the CUDA library, or NULL */
    const struct fg_cuda_backend *cuda; /* its table, or NULL on the CPU */
    struct model_weights dw;            /* weights in backend memory (CUDA), else unused */
    struct model_layer *dlayers;
    void *dev_arena;
    /* tensor parallelism: the plan, each shard's weights (its dev ones on the backend), the
     * communicator, and what fwd_init_tp reads */
    struct tp_plan plan;
    struct tp_shard shards[TP_MAX_SHARDS];
    struct fwd_shard fshards[TP_MAX_SHARDS];
    struct tp_comm *comm;
    /* the KV pools' config: emulated, every shard's pools in one cache (tp_kv_config); nccl, one
     * shard's (its KV heads), in e->kv on GPU 0 and tp_kv[i] on GPU i */
    struct model_config kv_cfg;
    int n_gpus;                           /* nccl: shards on GPUs 0 .. n_gpus-1; else 0 */
    void *tp_ctx[TP_MAX_SHARDS];          /* nccl: GPU i's context (tp_ctx[0] is e->ops_ctx) */
    struct kv_cache tp_kv[TP_MAX_SHARDS]; /* nccl: GPU i's pools, i > 0 (mirrors of e->kv) */
    tp_activate_fn activate;              /* nccl: the CUDA backend's TP_CUDA_ACTIVATE_SYMBOL */
};

/* Close the other GPUs' contexts of the nccl mode and what lives there (the comm first: its
 * ranks use them). */
static void engine_tp_close_gpus(struct engine *e) {
    struct engine_backend *b = e->backend;
    tp_comm_free(b->comm);
    b->comm = NULL;
    for (int i = b->n_gpus - 1; i >= 1; i--) {
        b->activate(b->tp_ctx[i]);
        kv_cache_free(&b->tp_kv[i]);
        tp_shard_free(&b->shards[i], e->ops, b->tp_ctx[i]);
        b->cuda->destroy(b->tp_ctx[i]);
        b->tp_ctx[i] = NULL;
    }
    if (b->n_gpus) b->activate(e->ops_ctx);
    b->n_gpus = 0;
}

static void backend_close(struct engine *e) {
    struct engine_backend *b = e->backend;
    if (!b) {
        if (e->ops_ctx) cpu_ops_destroy(e->ops_ctx);
        return;
    }
    if (b->n_gpus) engine_tp_close_gpus(e);
    tp_comm_free(b->comm);
    for (int i = 0; i < TP_MAX_SHARDS; i++)
        tp_shard_free(&b->shards[i], b->shards[i].dev_arena ? e->ops : NULL, e->ops_ctx);
    if (b->cuda) {
        if (b->dev_arena) e->ops->release(e->ops_ctx, b->dev_arena);
        if (e->ops_ctx) b->cuda->destroy(e->ops_ctx);
    } else if (e->ops_ctx) {
        cpu_ops_destroy(e->ops_ctx);
    }
    free(b->dlayers);
    if (b->dl) dlclose(b->dl);
    free(b);
}

void engine_close(struct engine *e) {
    if (!e) return;
    fwd_free(e->fwd);
    if (e->backend && e->backend->n_gpus) e->backend->activate(e->ops_ctx);
    kv_cache_free(&e->kv);
    backend_close(e);
    chat_template_free(&e->chat);
    model_free(e->model);
    free(e);
}

/* Open the CUDA library: $FLASHGEN_CUDA_LIB, else beside the executable, else the loader's
 * search path. Returns 0; -2 when the library cannot be opened (a CPU-only build); -1 when it
 * opens but gives no usable device. The reason goes to err. */
static int cuda_open(struct engine_backend *b, int n_device, void **ctx, char *err, size_t errlen) {
    const char *env = getenv("FLASHGEN_CUDA_LIB");
    char path[PATH_MAX + 64] = ENGINE_CUDA_LIB;
    if (env && *env) {
        snprintf(path, sizeof(path), "%s", env);
    } else {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n > 0) {
            exe[n] = 0;
            snprintf(path, sizeof(path), "%s/%s", dirname(exe), ENGINE_CUDA_LIB);
            if (access(path, R_OK) != 0) snprintf(path, sizeof(path), "%s", ENGINE_CUDA_LIB);
        }
    }
    b->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!b->dl) {
        errmsg_set(err, errlen, "no CUDA backend (%s)", dlerror());
        return -2;
    }
    fg_cuda_backend_fn fn = (fg_cuda_backend_fn)dlsym(b->dl, FG_CUDA_BACKEND_SYMBOL);
    const struct fg_cuda_backend *cb = fn ? fn() : NULL;
    if (!cb || cb->abi != FG_CUDA_BACKEND_ABI) {
        errmsg_set(err, errlen, "%s is not a flashgen CUDA backend of this version", path);
        return -1;
    }
    *ctx = cb->create(n_device, err, errlen);
    if (!*ctx) return -1;
    b->cuda = cb;
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

const char *engine_gpu_weights_name(enum engine_gpu_weights g) {
    return g == ENGINE_GPU_WEIGHTS_QUANTIZED ? "quantized"
           : g == ENGINE_GPU_WEIGHTS_BF16    ? "bf16"
                                             : "auto";
}

/* Add a weight still in the file mapping (fp32 pointer NULL; see upload_weights) to PR's totals. */
static void count_kept(struct model_load_progress *pr, const struct fg_qtensor *q) {
    if (!q->data) return;
    pr->tensors_total++;
    pr->bytes_total += (size_t)q->rows * q->row_bytes;
}

/* Bytes the parts (host GGUF blocks, stacked: q|k|v, gate|up or one weight) take resident in
 * LAYOUT, or 0 when they go to the element type instead: a part not in blocks, parts of
 * different types, or a type (shape) the backend does not keep. */
static size_t resident_bytes(const struct engine *e, const struct fg_qtensor *parts, int n,
                             int layout) {
    if (!e->resident_quant) return 0;
    int rows = 0;
    for (int i = 0; i < n; i++) {
        if (!parts[i].data || !gguf_type_quantized(parts[i].type) ||
            parts[i].type != parts[0].type || parts[i].cols != parts[0].cols)
            return 0;
        rows += parts[i].rows;
    }
    return e->ops->qresident_bytes(e->ops_ctx, parts[0].type, rows, parts[0].cols, layout);
}

/* --quantization fp8, or the backend's FLASHGEN_QUANTIZATION=fp8 set by hand (kernels/cuda_ops.cu
 * reads the variable, which the option sets) */
static int fp8_requested(const struct engine_opts *o) {
    const char *q = getenv("FLASHGEN_QUANTIZATION");
    return o->quantization == 1 || (q && !strcmp(q, "fp8"));
}

/* A (rows, cols) weight matrix in fp32 host memory (a safetensors checkpoint, or a GGUF the loader
 * turned into fp32) to the device at dst in the element type: through upload_rows as an F32
 * tensor where the backend has it, so that the matrix reaches the backend whole, as a file-mapped
 * one does (the CUDA backend's FLASHGEN_QUANTIZATION=fp8 records its e4m3 copies there, and
 * upload_f32 records none: before 2026-12-02 `--quantization fp8` on a Hugging Face checkpoint ran
 * bf16 without a word); upload_f32 otherwise. Both round fp32 to bf16 to nearest even, so the
 * bytes on the device are the same either way. */
static int upload_host(struct engine *e, void *dst, const float *src, size_t rows, size_t cols) {
    if (!e->ops->upload_rows || rows > INT32_MAX || cols > INT32_MAX / 4)
        return e->ops->upload_f32(e->ops_ctx, dst, src, rows * cols);
    const struct fg_qtensor w = {.type = GGUF_GGML_F32,
                                 .rows = (int)rows,
                                 .cols = (int)cols,
                                 .row_bytes = cols * sizeof(float),
                                 .data = src}; /* layout FG_QLAYOUT_ROWS: host rows */
    int rc = e->ops->upload_rows(e->ops_ctx, dst, &w, 0);
    if (rc == 0) e->host_rows_uploads++;
    return rc;
}

#define UPLOAD_DEQ_FLOATS ((size_t)4 << 20) /* fp32 staging of upload_dequant (16 MB) */

/* Host GGUF blocks the backend does not keep resident: dequantized here (gguf_dequantize) in row
 * chunks and stored in the element type through upload_f32; WHOLE (--quantization fp8): the
 * matrix dequantized at once and sent through upload_host, so that the backend makes its e4m3
 * copy of it too (rows * cols fp32 of host memory for the while; chunks again if that fails). */
static int upload_dequant(struct engine *e, void *dst, const struct fg_qtensor *q, int whole) {
    size_t per = UPLOAD_DEQ_FLOATS / (size_t)q->cols, rows = (size_t)q->rows;
    if (per == 0) per = 1;
    /* whole: one chunk, the matrix, through upload_host (chunks again when that much fails) */
    float *buf =
        whole && e->ops->upload_rows ? malloc(sizeof(float) * rows * (size_t)q->cols) : NULL;
    whole = buf != NULL;
    if (whole)
        per = rows;
    else if (!(buf = malloc(sizeof(float) * per * (size_t)q->cols)))
        return -1;
    int rc = 0;
    for (size_t r0 = 0; r0 < rows && rc == 0; r0 += per) {
        size_t m = rows - r0 < per ? rows - r0 : per;
        const uint8_t *src = (const uint8_t *)q->data + r0 * q->row_bytes;
        for (size_t r = 0; r < m && rc == 0; r++)
            rc = gguf_dequantize(q->type, src + r * q->row_bytes, buf + r * (size_t)q->cols,
                                 (uint64_t)q->cols);
        if (rc == 0 && whole)
            rc = upload_host(e, dst, buf, rows, (size_t)q->cols);
        else if (rc == 0)
            rc = e->ops->upload_f32(e->ops_ctx, (char *)dst + r0 * q->cols * e->ops->act_size, buf,
                                    m * (size_t)q->cols);
    }
    free(buf);
    return rc;
}

/* Copy the weights into one backend allocation: the norm weights raw fp32 (model_norms_upload:
 * fp32 on every backend, kernels/ops.h), the rest in the backend's element type, fp32 host ones
 * through upload_f32, those still in the file mapping (MODEL_LOAD_KEEP_FILE) through upload_rows,
 * host blocks the backend does not keep through upload_dequant; with resident quantized weights
 * (e->resident_quant, --gpu-weights quantized) the blocks of the types the backend keeps through
 * qupload, q|k|v and gate|up stacked into one matrix each (model.h qwqkv, qw_gu), the embedding in
 * FG_QLAYOUT_ROWS and the head in FG_QLAYOUT_GEMM; tied, the one copy in FG_QLAYOUT_GEMM that
 * both read (qembed gathers from it; issue 13: a second copy made SmolLM2 1.21x the file). A q|k|v
 * of mixed types is kept part by part (qwq, qwk, qwv; forward.c writes each part's columns) when
 * every part's type is kept; any other group with a part the backend does not keep goes to the
 * element type as a whole, so that its rows stay adjacent (the bf16 products read it as one
 * matrix). */
static int upload_weights(struct engine *e, const struct engine_opts *o, char *err, size_t errlen) {
    struct engine_backend *b = e->backend;
    const struct model_config *c = &e->model->cfg;
    const struct model_weights *hw = &e->model->w;
    size_t D = c->dim, QD = (size_t)c->n_heads * c->head_dim;
    size_t KVD = (size_t)c->n_kv_heads * c->head_dim, F = c->ffn_dim, V = c->vocab_size;
    /* elements in the backend's type; the norm weights are fp32 in a region of their own */
    size_t per_layer = QD * D + 2 * KVD * D + D * QD + 3 * F * D;
    per_layer += c->attn_bias ? QD + 2 * KVD : 0; /* Qwen2's q|k|v biases (model.h) */
    /* from the config, not the pointers: weights kept in the file mapping have NULL fp32 ones */
    int untied = !c->tied_embeddings;
    /* resident groups per layer (q|k|v, o, gate|up, down, then q, k, v one by one where q|k|v
     * mixes block types), the embedding and the head: their bytes, 0 where the group is in the
     * element type */
    size_t(*lq)[7] = calloc((size_t)c->n_layers, sizeof(*lq));
    if (!lq) {
        errmsg_set(err, errlen, "engine: out of memory");
        return -1;
    }
    size_t out_q = resident_bytes(e, &hw->q_output, 1, FG_QLAYOUT_GEMM);
    /* tied with the head resident: the embedding is the head's copy (no bytes of its own) */
    int embd_in_head = !untied && out_q;
    size_t q_total = 0,
           embd_q = embd_in_head ? 0 : resident_bytes(e, &hw->q_embd, 1, FG_QLAYOUT_ROWS);
    int out_shared = !untied && !embd_q && !out_q; /* the head is the bf16 embedding */
    size_t elems = (embd_q || embd_in_head ? 0 : V * D) + (out_q || out_shared ? 0 : V * D);
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_layer *h = &hw->layers[l];
        const struct fg_qtensor qkv[] = {h->qwq, h->qwk, h->qwv}, gu[] = {h->qw_gate, h->qw_up};
        lq[l][0] = resident_bytes(e, qkv, 3, FG_QLAYOUT_GEMM);
        if (!lq[l][0]) { /* q|k|v resident part by part, if every part can be */
            for (int k = 0; k < 3; k++)
                lq[l][4 + k] = resident_bytes(e, &qkv[k], 1, FG_QLAYOUT_GEMM);
            if (!lq[l][4] || !lq[l][5] || !lq[l][6]) lq[l][4] = lq[l][5] = lq[l][6] = 0;
        }
        lq[l][1] = resident_bytes(e, &h->qwo, 1, FG_QLAYOUT_GEMM);
        lq[l][2] = resident_bytes(e, gu, 2, FG_QLAYOUT_GEMM);
        lq[l][3] = resident_bytes(e, &h->qw_down, 1, FG_QLAYOUT_GEMM);
        const size_t group_elems[7] = {
            (QD + 2 * KVD) * D, D * QD, 2 * F * D, D * F, QD * D, KVD * D, KVD * D};
        elems += per_layer;
        for (int k = 0; k < 7; k++) {
            if (lq[l][k]) elems -= group_elems[k];
            q_total += (lq[l][k] + 255) / 256 * 256;
        }
    }
    q_total += (embd_q + 255) / 256 * 256 + (out_q + 255) / 256 * 256;
    size_t freq_bytes = sizeof(float) * (size_t)(c->head_dim / 2);
    size_t freq_span = (freq_bytes + 255) / 256 * 256;
    int local_rope = hw->rope_freqs_local && hw->rope_freqs_local != hw->rope_freqs;
    size_t norm_bytes = model_norms_bytes(c); /* 256-byte multiples (MODEL_NORMS_ALIGN) */
    size_t bf16_bytes = (elems * e->ops->act_size + 255) / 256 * 256;
    size_t bytes = freq_span * (local_rope ? 2 : 1) + norm_bytes + bf16_bytes + q_total + 256;
    b->dev_arena = e->ops->alloc(e->ops_ctx, bytes);
    b->dlayers = calloc((size_t)c->n_layers, sizeof(struct model_layer));
    if (!b->dev_arena || !b->dlayers) {
        errmsg_set(err, errlen, "cannot allocate %.2f GB of device memory for the weights",
                   bytes / 1e9);
        free(lq);
        return -1;
    }
    char *p = b->dev_arena;
    const int fp8 = fp8_requested(o); /* quantized blocks dequantized whole (upload_dequant) */
    /* fp32 first (alignment): the rope tables and the norm weights; then every tensor in the
     * backend's type, then the resident blocks */
    b->dw.rope_freqs = (float *)p;
    if (e->ops->upload(e->ops_ctx, p, hw->rope_freqs, freq_bytes) != 0) goto fail;
    p += freq_span;
    b->dw.rope_freqs_local = b->dw.rope_freqs;
    if (local_rope) { /* Gemma 3's local layers' own table */
        b->dw.rope_freqs_local = (float *)p;
        if (e->ops->upload(e->ops_ctx, p, hw->rope_freqs_local, freq_bytes) != 0) goto fail;
        p += freq_span;
    }
    b->dw.layers = b->dlayers;
    if (model_norms_upload(c, hw, e->ops, e->ops_ctx, p, &b->dw) != 0) goto fail;
    p += norm_bytes;
    /* a weight still in the file mapping (MODEL_LOAD_KEEP_FILE: fp32 pointer NULL, qtensor set)
     * is converted by upload_rows on its way; the rest is fp32 host memory. Progress as the
     * loader reports it, once per kept weight. */
    struct model_load_progress pr = {0, 0, 0, 0, 0};
    const int perm_q = e->model->qk_file_order ? c->n_heads : 0;
    const int perm_k = e->model->qk_file_order ? c->n_kv_heads : 0;
    if (!embd_in_head) count_kept(&pr, &hw->q_embd); /* else counted as the head */
    if (!out_shared) count_kept(&pr, &hw->q_output); /* a head of its own or the tied one */
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_layer *h = &hw->layers[l];
        const struct fg_qtensor *q[] = {&h->qwq,     &h->qwk,   &h->qwv,    &h->qwo,
                                        &h->qw_gate, &h->qw_up, &h->qw_down};
        for (int k = 0; k < 7; k++)
            count_kept(&pr, q[k]);
    }
    double t_up = now_s();
#define PROGRESS(q)                                                                                \
    do {                                                                                           \
        pr.tensors_done++;                                                                         \
        pr.bytes_done += (size_t)(q).rows * (q).row_bytes;                                         \
        pr.seconds = e->model->load_seconds + now_s() - t_up;                                      \
        if (o->progress) o->progress(&pr, o->progress_user);                                       \
    } while (0)
#define PUTQ(dst, src, q, perm, rows_, cols_)                                                      \
    do {                                                                                           \
        (dst) = (float *)p;                                                                        \
        if (!(src) && (q).data && !gguf_type_quantized((q).type)) {                                \
            if (e->ops->upload_rows(e->ops_ctx, p, &(q), (perm)) != 0) goto fail;                  \
            PROGRESS(q);                                                                           \
        } else if (!(src) && (q).data) {                                                           \
            if (upload_dequant(e, p, &(q), fp8) != 0) goto fail;                                   \
            PROGRESS(q);                                                                           \
        } else if (upload_host(e, p, (src), (rows_), (cols_)) != 0) {                              \
            goto fail;                                                                             \
        }                                                                                          \
        p += (size_t)(rows_) * (cols_)*e->ops->act_size;                                           \
    } while (0)
    /* resident: DST (a qtensor) = PARTS stacked in LAYOUT, BYTES long, at the next 256 bytes */
    char *qp = p + bf16_bytes;
#define PUTR(dst, parts, n_parts, layout_, bytes_)                                                 \
    do {                                                                                           \
        if (e->ops->qupload(e->ops_ctx, qp, (parts), (n_parts), (layout_)) != 0) goto fail;        \
        (dst) = (parts)[0];                                                                        \
        (dst).data = qp;                                                                           \
        (dst).layout = (uint32_t)(layout_);                                                        \
        for (int i_ = 1; i_ < (n_parts); i_++)                                                     \
            (dst).rows += (parts)[i_].rows;                                                        \
        for (int i_ = 0; i_ < (n_parts); i_++)                                                     \
            PROGRESS((parts)[i_]);                                                                 \
        qp += ((bytes_) + 255) / 256 * 256;                                                        \
    } while (0)
#define PUT(dst, src, n)                                                                           \
    do {                                                                                           \
        (dst) = (float *)p;                                                                        \
        if (e->ops->upload_f32(e->ops_ctx, p, (src), (n)) != 0) goto fail;                         \
        p += (n)*e->ops->act_size;                                                                 \
    } while (0)
    if (embd_q)
        PUTR(b->dw.q_embd, &hw->q_embd, 1, FG_QLAYOUT_ROWS, embd_q);
    else if (!embd_in_head)
        PUTQ(b->dw.tok_embd, hw->tok_embd, hw->q_embd, 0, V, D);
    if (out_q)
        PUTR(b->dw.q_output, &hw->q_output, 1, FG_QLAYOUT_GEMM, out_q);
    else if (out_shared)
        b->dw.output = b->dw.tok_embd;
    else
        PUTQ(b->dw.output, hw->output, hw->q_output, 0, V, D);
    if (embd_in_head) b->dw.q_embd = b->dw.q_output; /* layout FG_QLAYOUT_GEMM: qembed reads it */
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_layer *h = &hw->layers[l];
        struct model_layer *d = &b->dlayers[l];
        const struct fg_qtensor qkv[] = {h->qwq, h->qwk, h->qwv}, gu[] = {h->qw_gate, h->qw_up};
        if (lq[l][0]) {
            PUTR(d->qwqkv, qkv, 3, FG_QLAYOUT_GEMM, lq[l][0]);
        } else if (lq[l][4]) {
            PUTR(d->qwq, &h->qwq, 1, FG_QLAYOUT_GEMM, lq[l][4]);
            PUTR(d->qwk, &h->qwk, 1, FG_QLAYOUT_GEMM, lq[l][5]);
            PUTR(d->qwv, &h->qwv, 1, FG_QLAYOUT_GEMM, lq[l][6]);
            e->resident_split_qkv++;
        } else {
            PUTQ(d->wq, h->wq, h->qwq, perm_q, QD, D);
            PUTQ(d->wk, h->wk, h->qwk, perm_k, KVD, D);
            PUTQ(d->wv, h->wv, h->qwv, 0, KVD, D);
        }
        if (lq[l][1])
            PUTR(d->qwo, &h->qwo, 1, FG_QLAYOUT_GEMM, lq[l][1]);
        else
            PUTQ(d->wo, h->wo, h->qwo, 0, D, QD);
        if (lq[l][2]) {
            PUTR(d->qw_gu, gu, 2, FG_QLAYOUT_GEMM, lq[l][2]);
        } else {
            PUTQ(d->w_gate, h->w_gate, h->qw_gate, 0, F, D);
            PUTQ(d->w_up, h->w_up, h->qw_up, 0, F, D);
        }
        if (lq[l][3])
            PUTR(d->qw_down, &h->qw_down, 1, FG_QLAYOUT_GEMM, lq[l][3]);
        else
            PUTQ(d->w_down, h->w_down, h->qw_down, 0, D, F);
        if (c->attn_bias) PUT(d->bqkv, h->bqkv, QD + 2 * KVD);
    }
#undef PUT
#undef PUTQ
#undef PUTR
#undef PROGRESS
    if (e->ops->upload_rows && e->ops->upload_rows(e->ops_ctx, NULL, NULL, 0) != 0) goto fail;
    if (e->resident_quant && e->ops->qupload(e->ops_ctx, NULL, NULL, 0, 0) != 0) goto fail;
    if (e->ops->sync(e->ops_ctx) != 0) goto fail;
    free(lq);
    b->dw.arena = b->dev_arena;
    b->dw.arena_bytes = bytes;
    e->device_weight_bytes = bytes;
    e->device_block_bytes = q_total;
    /* the embedding is gathered (a few rows a step), unless it is the head too (the bf16 head,
     * or the tied head's blocks: every step reads those whole) */
    e->device_step_bytes = bytes - (embd_q                         ? (embd_q + 255) / 256 * 256
                                    : !out_shared && !embd_in_head ? V * D * e->ops->act_size
                                                                   : 0);
    return 0;
fail:
    free(lq);
    errmsg_set(err, errlen, "weight upload failed: %s", b->cuda->last_error(e->ops_ctx));
    return -1;
}

/* The log line of --gpu-weights: what the device holds, in which types, against the file. */
static void log_resident(const struct engine *e, const struct engine_opts *o) {
    const struct model_weights *dw = &e->backend->dw;
    char types[96] = "";
    const struct fg_qtensor *all[2] = {&dw->q_embd, &dw->q_output};
    for (int l = -1; l < e->model->cfg.n_layers; l++) {
        const struct model_layer *L = l >= 0 ? &dw->layers[l] : NULL;
        const struct fg_qtensor *lq[] = {L ? &L->qwqkv : all[0], L ? &L->qwo : all[1],
                                         L ? &L->qw_gu : NULL,   L ? &L->qw_down : NULL,
                                         L ? &L->qwq : NULL,     L ? &L->qwv : NULL};
        for (int k = 0; k < 6; k++) {
            if (!lq[k] || !lq[k]->data) continue;
            const char *nm = gguf_type_name(lq[k]->type);
            if (!strstr(types, nm))
                snprintf(types + strlen(types), sizeof(types) - strlen(types), "%s%s",
                         types[0] ? ", " : "", nm);
        }
    }
    struct stat st;
    double file = !stat(o->model_path, &st) && S_ISREG(st.st_mode) ? (double)st.st_size : 0;
    char ratio[48] = ""; /* a checkpoint folder has no one file to compare with */
    if (file > 0) snprintf(ratio, sizeof ratio, "; %.2fx the file", e->device_weight_bytes / file);
    engine_log(o, ENGINE_LOG_INFO,
               "gpu weights %s: %.1f MB resident on the device, %.1f MB of it in GGUF blocks (%s), "
               "the rest bf16%s",
               engine_gpu_weights_name(e->gpu_weights), e->device_weight_bytes / 1048576.0,
               e->device_block_bytes / 1048576.0, types[0] ? types : "none", ratio);
}

/* --gpu-weights auto on a GPU (ENGINE_AUTO_QUANT_SEQS above): reads the GGUF header for the
 * matrices the backend would keep in blocks and what they would take as bf16, logs the choice. A
 * checkpoint folder, a file without such blocks or one that cannot be read (the load reports
 * that) gets bf16. */
static enum engine_gpu_weights engine_auto_gpu_weights(struct engine *e,
                                                       const struct engine_opts *o) {
    const struct fg_ops *ops = e->ops;
    struct gguf_file *f = NULL;
    char err[256];
    struct stat st;
    if (!ops->qresident_bytes || !ops->qupload || !ops->qlinear || stat(o->model_path, &st) ||
        !S_ISREG(st.st_mode) || gguf_open(o->model_path, &f, err, sizeof err) != 0)
        return ENGINE_GPU_WEIGHTS_BF16;
    double kept = 0, bf16 = 0; /* bytes: the kept matrices' blocks, every tensor as bf16 */
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        bf16 += 2.0 * (double)t->n_elems;
        if (t->n_dims == 2 && t->ne[0] <= INT32_MAX && t->ne[1] <= INT32_MAX &&
            ops->qresident_bytes(e->ops_ctx, t->type, (int)t->ne[1], (int)t->ne[0],
                                 FG_QLAYOUT_GEMM))
            kept += (double)t->n_bytes;
    }
    gguf_close(f);
    int seqs = o->max_batch_seqs > 0 ? o->max_batch_seqs : ENGINE_CUDA_BATCH_SEQS;
    size_t free_b = 0, total_b = 0;
    int big = e->backend->cuda->mem_info(e->ops_ctx, &free_b, &total_b) == 0 &&
              bf16 > ENGINE_AUTO_BF16_SHARE * (double)free_b;
    enum engine_gpu_weights w = kept > 0 && (seqs <= ENGINE_AUTO_QUANT_SEQS || big)
                                    ? ENGINE_GPU_WEIGHTS_QUANTIZED
                                    : ENGINE_GPU_WEIGHTS_BF16;
    engine_log(o, ENGINE_LOG_INFO,
               "gpu weights auto: %s (%.2f GB of the file in blocks the GPU reads, %.2f GB as "
               "bf16, %.2f GB free on the device, %d sequences per step)",
               engine_gpu_weights_name(w), kept / 1e9, bf16 / 1e9, free_b / 1e9, seqs);
    return w;
}

/* The nccl mode's devices: contexts on GPUs 1 .. N-1 beside e->ops_ctx on GPU 0, and the CUDA
 * backend's stream and activate entry points. 0, or -1 with the reason (fewer GPUs, an old
 * backend); what was opened is closed again. */
static int engine_tp_gpus(struct engine *e, int n, tp_stream_fn *stream, char *why, size_t len) {
    struct engine_backend *b = e->backend;
    *stream = (tp_stream_fn)dlsym(b->dl, TP_CUDA_STREAM_SYMBOL);
    b->activate = (tp_activate_fn)dlsym(b->dl, TP_CUDA_ACTIVATE_SYMBOL);
    if (!*stream || !b->activate) {
        errmsg_set(why, len, "the CUDA backend has no %s", TP_CUDA_STREAM_SYMBOL);
        return -1;
    }
    b->tp_ctx[0] = e->ops_ctx;
    b->n_gpus = 1;
    for (int i = 1; i < n; i++) {
        char err[256];
        b->tp_ctx[i] = b->cuda->create(i, err, sizeof(err));
        if (!b->tp_ctx[i]) {
            errmsg_set(why, len, "GPU %d: %s", i, err);
            engine_tp_close_gpus(e);
            return -1;
        }
        b->n_gpus = i + 1;
    }
    b->activate(e->ops_ctx);
    return 0;
}

/* Cut the model into e->tensor_parallel shards (model/tp.h) and put each where it computes:
 * "nccl", shard i on GPU i joined by NCCL, where the CUDA backend is in use, there are as many
 * GPUs and libnccl opens (FLASHGEN_TP_MODE=nccl insists, and with --tensor-parallel 1 runs the
 * one shard through a one-rank NCCL communicator: the smoke test of one GPU); else "emulated",
 * every shard on the one backend context opened, joined by the local communicator
 * (FLASHGEN_TP_MODE=emulated insists). The forward state and the KV pools are built from
 * b->fshards, b->kv_cfg and b->tp_kv afterwards. */
static int engine_tp_open(struct engine *e, const struct engine_opts *o, char *err, size_t errlen) {
    struct engine_backend *b = e->backend;
    const struct model_config *cfg = &e->model->cfg;
    int n = e->tensor_parallel;
    const char *mode = getenv("FLASHGEN_TP_MODE"); /* checked by engine_open */
    int force_nccl = mode && !strcmp(mode, "nccl");
    if (tp_plan_make(&b->plan, cfg, n, err, errlen) != 0) return -1;
    char why[512] = "";
    tp_stream_fn stream = NULL;
    if (!b->cuda)
        snprintf(why, sizeof(why), "no GPU");
    else if (mode && !strcmp(mode, "emulated"))
        snprintf(why, sizeof(why), "FLASHGEN_TP_MODE=emulated");
    else if (engine_tp_gpus(e, n, &stream, why, sizeof(why)) == 0 &&
             tp_comm_nccl(&b->comm, n, e->ops, b->tp_ctx, stream, b->activate, e->max_batch_seqs,
                          b->plan.vocab_lo, why, sizeof(why)) != 0)
        engine_tp_close_gpus(e);
    if (!b->comm && force_nccl) {
        errmsg_set(err, errlen, "tensor_parallel %d over NCCL: %s", n, why);
        return -1;
    }
    size_t dev_bytes = 0;
    for (int i = 0; i < n; i++) {
        struct tp_shard *s = &b->shards[i];
        if (tp_shard_build(s, &b->plan, e->model, i, err, errlen) != 0) return -1;
        void *ctx = b->n_gpus ? b->tp_ctx[i] : e->ops_ctx;
        if (b->cuda) {
            if (b->n_gpus) b->activate(ctx);
            if (tp_shard_upload(s, e->ops, ctx, cfg->vocab_size, err, errlen) != 0) return -1;
            tp_shard_drop_host(s);
            dev_bytes += s->dev_bytes;
        }
        b->fshards[i] = (struct fwd_shard){.cfg = &s->cfg,
                                           .w = b->cuda ? &s->dev : &s->w,
                                           .ops = e->ops,
                                           .ops_ctx = ctx,
                                           .kv = b->n_gpus ? (i ? &b->tp_kv[i] : &e->kv) : NULL,
                                           .activate = b->n_gpus ? b->activate : NULL};
    }
    if (b->n_gpus) b->activate(e->ops_ctx);
    if (b->n_gpus) { /* one shard's pools per GPU */
        b->kv_cfg = *cfg;
        b->kv_cfg.n_kv_heads = b->plan.kv_slots;
    } else {
        if (tp_comm_local(&b->comm, n, e->ops, e->ops_ctx, err, errlen) != 0) return -1;
        tp_kv_config(&b->plan, cfg, &b->kv_cfg);
    }
    e->tp_mode = b->comm->kind;
    e->device_weight_bytes = dev_bytes;
    char where[64];
    if (b->n_gpus)
        snprintf(where, sizeof(where), "over %d GPUs", n);
    else
        snprintf(where, sizeof(where), "on one %s context", e->device);
    engine_log(o, ENGINE_LOG_INFO,
               "tensor parallel %d (%s %s%s%s): %d query heads and %d KV heads per shard%s, ffn %d "
               "and vocabulary %d rows on shard 0",
               n, e->tp_mode, where, b->cuda && !b->n_gpus ? "; not nccl: " : "",
               b->cuda && !b->n_gpus ? why : "", b->plan.q_slots, b->plan.kv_slots,
               b->plan.expanded ? " (the groups do not split evenly: padded, one KV head each)"
                                : "",
               b->plan.ffn_lo[1], b->plan.vocab_lo[1]);
    return 0;
}

/* nccl mode: GPU i's KV pools, N_PAGES pages like e->kv's, chained as its mirrors. */
static int engine_tp_kv(struct engine *e, int n_pages, int page_size, char *err, size_t errlen) {
    struct engine_backend *b = e->backend;
    struct kv_cache *prev = &e->kv;
    for (int i = 1; i < b->n_gpus; i++) {
        b->activate(b->tp_ctx[i]);
        if (kv_cache_init(&b->tp_kv[i], e->ops, b->tp_ctx[i], &b->kv_cfg, n_pages, page_size,
                          e->ops->act_size) != 0) {
            b->activate(e->ops_ctx);
            errmsg_set(err, errlen, "engine: cannot allocate GPU %d's KV pool of %d pages", i,
                       n_pages);
            return -1;
        }
        prev->mirror = &b->tp_kv[i];
        prev = &b->tp_kv[i];
    }
    b->activate(e->ops_ctx);
    return 0;
}

int engine_open(const struct engine_opts *o, struct engine **out, char *err, size_t errlen) {
    double t_open = now_s(); /* the ready line's start: device, load and upload */
    *out = NULL;
    struct engine *e = calloc(1, sizeof(*e));
    struct engine_backend *b = calloc(1, sizeof(*b));
    if (!e || !b) {
        free(e);
        free(b);
        errmsg_set(err, errlen, "engine: out of memory");
        return -1;
    }
    e->backend = b;
    e->tensor_parallel = o->tensor_parallel > 1 ? o->tensor_parallel : 1;
    e->tp_mode = "none";
    if (e->tensor_parallel != 1 && e->tensor_parallel != 2 && e->tensor_parallel != 4 &&
        e->tensor_parallel != 8) {
        errmsg_set(err, errlen, "tensor_parallel %d: must be 1, 2, 4 or 8", o->tensor_parallel);
        goto fail;
    }
    int tp = e->tensor_parallel;
    /* the sharded path: beyond one shard, or one shard through NCCL (engine_tp_open) */
    const char *tp_env = getenv("FLASHGEN_TP_MODE");
    int sharded = tp > 1 || (tp_env && !strcmp(tp_env, "nccl"));
    if (tp_env && *tp_env && strcmp(tp_env, "nccl") && strcmp(tp_env, "emulated") &&
        strcmp(tp_env, "auto")) {
        errmsg_set(err, errlen, "FLASHGEN_TP_MODE '%s': auto, nccl or emulated", tp_env);
        goto fail;
    }
    if (sharded && tp_env && !strcmp(tp_env, "nccl") && o->device == ENGINE_DEVICE_CPU) {
        errmsg_set(err, errlen, "tensor_parallel %d over NCCL: no GPU (device cpu)", tp);
        goto fail;
    }

    /* Device first: a --device cuda that cannot work fails before a long model load. */
    if (o->device != ENGINE_DEVICE_CPU) {
        char why[512];
        /* the CUDA backend reads its quantization from the environment when it creates a
         * context (kernels/cuda_ops.cu, cu_create); the option sets it for that */
        if (o->quantization == 1 && setenv("FLASHGEN_QUANTIZATION", "fp8", 1) != 0) {
            errmsg_set(err, errlen, "quantization fp8: cannot set FLASHGEN_QUANTIZATION");
            goto fail;
        }
        int rc = cuda_open(b, 0, &e->ops_ctx, why, sizeof(why));
        if (rc == 0) {
            e->ops = b->cuda->ops;
            snprintf(e->device, sizeof(e->device), "cuda");
        } else if (o->device == ENGINE_DEVICE_CUDA) {
            errmsg_set(err, errlen, "device cuda: %s", why);
            goto fail;
        } else {
            engine_log(o, rc == -2 ? ENGINE_LOG_DEBUG : ENGINE_LOG_INFO,
                       "no usable GPU (%s); running on the CPU", why);
            if (b->dl) dlclose(b->dl);
            b->dl = NULL;
        }
    }
    if (!e->ops) {
        snprintf(e->device, sizeof(e->device), "cpu");
        e->ops = cpu_ops();
        e->ops_ctx = cpu_ops_create(o->n_threads);
        if (!e->ops_ctx) {
            errmsg_set(err, errlen, "engine: cannot start CPU threads");
            goto fail;
        }
    }

    /* The CPU multiplies GGUF blocks directly (kernels/cpu_quant.h), so it keeps them; the GPU
     * converts F16 / BF16 / F32 weights itself on their way from the file mapping (upload_rows)
     * and takes the rest as fp32 host weights, which upload_weights turns into its element
     * type. */
    /* --gpu-weights quantized (on a backend with qupload) keeps the GGUF blocks too: those of
     * the types the backend keeps stay resident in them, the rest is dequantized on upload.
     * Shards are cut from fp32 host weights (tp.h): tensor parallelism loads without KEEP_*
     * and keeps no blocks on the device. */
    /* auto: bf16 wherever no blocks could stay (the CPU, shards) and under fp8 (its e4m3
     * copies are cut from bf16) */
    e->gpu_weights = o->gpu_weights;
    if (e->gpu_weights == ENGINE_GPU_WEIGHTS_AUTO)
        e->gpu_weights = sharded || e->ops == cpu_ops() || fp8_requested(o)
                             ? ENGINE_GPU_WEIGHTS_BF16
                             : engine_auto_gpu_weights(e, o);
    e->resident_quant = !sharded && e->ops != cpu_ops() &&
                        e->gpu_weights == ENGINE_GPU_WEIGHTS_QUANTIZED && e->ops->qupload &&
                        e->ops->qresident_bytes && e->ops->qlinear;
    unsigned cpu_flags = o->cpu_fp32_weights || sharded ? 0 : MODEL_LOAD_KEEP_BLOCKS;
    unsigned load_flags = sharded               ? 0
                          : e->ops == cpu_ops() ? cpu_flags
                          : e->ops->upload_rows ? MODEL_LOAD_KEEP_FILE
                                                : 0;
    if (e->resident_quant) load_flags |= MODEL_LOAD_KEEP_BLOCKS;
    if (model_load_flags(o->model_path, load_flags, &e->model, o->progress, o->progress_user, err,
                         errlen) != 0)
        goto fail;
    if (e->model->notice[0]) engine_log(o, ENGINE_LOG_INFO, "%s", e->model->notice);
    const struct model_config *cfg = &e->model->cfg;
    const struct model_weights *w = &e->model->w;
    /* A family switch the GPU kernels lack (or a head size they are not built for) keeps the
     * model off the GPU: --device cuda fails naming the feature, auto runs it on the CPU. */
    if (b->cuda) {
        char why[512] = "";
        if (fwd_check_backend(cfg, e->ops, why, sizeof(why)) == 0 && cfg->head_dim != 64 &&
            cfg->head_dim != 128 && cfg->head_dim != 256)
            snprintf(why, sizeof(why),
                     "the cuda backend's attention kernels are built for head_dim 64, 128 and "
                     "256, not %d (this %s model)",
                     cfg->head_dim, cfg->arch);
        if (why[0] && o->device == ENGINE_DEVICE_CUDA) {
            snprintf(err, errlen, "device cuda: %s: %s", o->model_path, why);
            goto fail;
        }
        if (why[0]) {
            engine_log(o, ENGINE_LOG_WARN, "%s: %s; running on the CPU", o->model_path, why);
            b->cuda->destroy(e->ops_ctx);
            b->cuda = NULL;
            dlclose(b->dl);
            b->dl = NULL;
            snprintf(e->device, sizeof(e->device), "cpu");
            e->ops = cpu_ops();
            e->resident_quant = 0;
            e->ops_ctx = cpu_ops_create(o->n_threads);
            if (!e->ops_ctx) {
                snprintf(err, errlen, "engine: cannot start CPU threads");
                goto fail;
            }
            if (load_flags != cpu_flags) { /* loaded for the GPU: again as the CPU keeps it */
                model_free(e->model);
                e->model = NULL;
                if (model_load_flags(o->model_path, cpu_flags, &e->model, o->progress,
                                     o->progress_user, err, errlen) != 0)
                    goto fail;
                cfg = &e->model->cfg;
                w = &e->model->w;
            }
        }
    }
    /* After the fallback above, which may load the model again. A template that does not parse
     * never stops the load: /generate needs none, and chat requests are rendered by the
     * fallback family the warning names. */
    char why[512];
    int chat_rc = chat_template_init_model(&e->chat, e->model->chat_template, e->model->tok, why,
                                           sizeof(why));
    if (chat_rc < 0) {
        errmsg_set(err, errlen, "%s", why);
        goto fail;
    }
    if (chat_rc > 0)
        engine_log(o, ENGINE_LOG_WARN, "%s: %s", o->model_path, why);
    else if (e->chat.kind == CHAT_KIND_JINJA)
        engine_log(o, ENGINE_LOG_INFO, "chat template: the model's own (jinja)");
    else
        engine_log(o, ENGINE_LOG_INFO, "chat template: %s fallback (%s)",
                   chat_template_kind_name(&e->chat), e->chat.fallback_why);

    int page_size = o->page_size > 0 ? o->page_size : 16;
    e->max_batch_tokens = o->max_batch_tokens > 0 ? o->max_batch_tokens
                          : b->cuda               ? ENGINE_CUDA_BATCH_TOKENS
                                                  : ENGINE_CPU_BATCH_TOKENS;
    e->max_batch_seqs = o->max_batch_seqs > 0 ? o->max_batch_seqs
                        : b->cuda             ? ENGINE_CUDA_BATCH_SEQS
                                              : ENGINE_CPU_BATCH_SEQS;
    /* a decode step of every sequence must fit the token budget */
    if (e->max_batch_tokens < e->max_batch_seqs && o->max_batch_tokens <= 0)
        e->max_batch_tokens = e->max_batch_seqs;
    if (sharded) {
        if (engine_tp_open(e, o, err, errlen) != 0) goto fail;
    } else if (b->cuda) {
        if (upload_weights(e, o, err, errlen) != 0) goto fail;
        w = &b->dw;
        log_resident(e, o);
        model_drop_file(e->model); /* the device has the kept weights: the mapping can go */
    }
    { /* one line: how long the weights took to be ready, and at what rate the file was read */
        double secs = now_s() - t_open;
        struct stat st;
        if (!stat(o->model_path, &st) && S_ISREG(st.st_mode) && secs > 0)
            engine_log(o, ENGINE_LOG_INFO, "weights ready on %s in %.2f s: %.2f GB at %.2f GB/s",
                       e->device, secs, st.st_size / 1e9, st.st_size / 1e9 / secs);
        else
            engine_log(o, ENGINE_LOG_INFO, "weights ready on %s in %.2f s", e->device, secs);
    }
    e->kv.page_size = page_size; /* fwd_init sizes block tables from it */
    if (sharded ? fwd_init_tp(&e->fwd, cfg, b->fshards, tp, b->comm, &e->kv, e->max_batch_tokens,
                              e->max_batch_seqs, err, errlen)
                : fwd_init(&e->fwd, cfg, w, e->ops, e->ops_ctx, &e->kv, e->max_batch_tokens,
                           e->max_batch_seqs, err, errlen))
        goto fail;
    const struct model_config *kv_cfg = sharded ? &b->kv_cfg : cfg; /* the shards' pools */

    /* KV pool: what the caller asked for, else on a GPU a fraction of the memory left after
     * weights and activations, on the CPU a fixed default. */
    size_t kv_bytes = o->kv_cache_bytes;
    if (!kv_bytes && b->cuda) {
        size_t free_b = 0, total_b = 0;
        if (b->cuda->mem_info(e->ops_ctx, &free_b, &total_b) != 0) {
            errmsg_set(err, errlen, "cannot read free device memory");
            goto fail;
        }
        for (int i = 1; i < b->n_gpus; i++) { /* nccl: the GPU with the least left */
            size_t f_i = 0, t_i = 0;
            b->activate(b->tp_ctx[i]);
            if (b->cuda->mem_info(b->tp_ctx[i], &f_i, &t_i) == 0 && f_i < free_b) free_b = f_i;
        }
        if (b->n_gpus) b->activate(e->ops_ctx);
        float f = o->kv_fraction > 0 && o->kv_fraction <= 1 ? o->kv_fraction : 0.9f;
        kv_bytes = (size_t)(free_b * (double)f);
    }
    if (!kv_bytes) kv_bytes = ENGINE_CPU_KV_BYTES;
    size_t page_bytes = kv_cache_page_bytes(kv_cfg, page_size, e->ops->act_size);
    size_t n_pages = kv_bytes / page_bytes;
    if (n_pages < 2) {
        errmsg_set(err, errlen, "kv_cache_bytes %zu holds fewer than 2 pages of %zu bytes",
                   kv_bytes, page_bytes);
        goto fail;
    }
    if (n_pages > (size_t)1 << 30) n_pages = (size_t)1 << 30;
    if (kv_cache_init(&e->kv, e->ops, e->ops_ctx, kv_cfg, (int)n_pages, page_size,
                      e->ops->act_size) != 0) {
        errmsg_set(err, errlen, "engine: cannot allocate a KV pool of %zu pages (%.2f GB)", n_pages,
                   n_pages * (double)page_bytes / 1e9);
        goto fail;
    }
    if (b->n_gpus && engine_tp_kv(e, (int)n_pages, page_size, err, errlen) != 0) goto fail;
    *out = e;
    return 0;
fail:
    engine_close(e);
    return -1;
}

const char *engine_device_name(const struct engine *e) {
    const struct engine_backend *b = e->backend;
    if (b && b->cuda) return b->cuda->device_name(e->ops_ctx);
    return "cpu";
}
