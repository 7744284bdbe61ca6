/* cuda_ops.cu — the CUDA backend: struct fg_ops for bf16 activations, weights and KV-cache with
 * fp32 accumulation, on one stream owned by the worker thread.
 *
 * Products of prefill size go through cuBLASLt (bf16 × bf16 → bf16, or fp32 for the logits, fp32
 * compute; one heuristic algorithm cached per shape, split-K reduced in fp32); decode-sized ones
 * (≤ 8 rows) through the GEMV kernels of gemv.cu, with the RMSNorm, residual add and SwiGLU fused.
 * GGUF weights resident in their blocks (qupload, qlinear; below) go through qgemv.cu's GEMV at
 * decode sizes and through a bf16 dequantization into the caller's scratch and cuBLASLt beyond.
 * Attention, the q|k|v store with RoPE and sampling are the kernels of attention.cu /
 * decode_attention.cu / kv_write.cu / sample.cu, the family switches' ops (biases, QK-norm,
 * post-norms, GeGLU, scales, soft-capping) those of family.cu; the small elementwise ops are here.
 * Each op checks its launch; the first error sticks in the context and makes sync() fail, which the
 * engine treats as fatal. FLASHGEN_BATCH_INVARIANT=1 trades speed for results that do not depend
 * on the batch (cu_create). FLASHGEN_QUANTIZATION=fp8 gives the weights e4m3 copies that the
 * products use (try_fp8, kernels/fp8.h). FLASHGEN_SKIP (diagnostic, timing only) leaves named
 * stages out of the decode graphs recorded while it is set (skip_stage). Built into
 * build/libflashgen_cuda.so and opened with dlopen (ops.h). */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <pthread.h>
#include <unistd.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "family.h"
#include "fp8.h"
#include "gemv.h"
#include "sample.h"
#include "kv_write.h"
#include "logit_mask.h"
#include "ops.h"
#include "qembed.h"
#include "qgemm.h"
#include "qgemv.h"
#include "model/gguf_quant.h" /* ggml type ids */

#define LT_CACHE_SIZE                                                                              \
    256 /* plans by (rows, shape): 23 decode buckets × 5 GEMM shapes, and prefill sizes */
#define LT_WORKSPACE_BYTES ((size_t)32 << 20) /* cuBLASLt's recommended size for Hopper */

struct lt_plan {
    int n, in_dim, out_dim;
    cudaDataType_t out_type;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
};

struct lt_canon { /* batch-invariant mode: the algorithm of one weight shape */
    int in_dim, out_dim;
    cudaDataType_t out_type;
    cublasLtMatmulAlgo_t algo;
};

struct cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_workspace;
    struct lt_plan plans[LT_CACHE_SIZE];
    int n_plans;
    void *attn_ws; /* decode split-K partials, grown on demand */
    size_t attn_ws_bytes;
    /* Outgrown workspaces stay allocated until destroy: recorded graphs may still point at
     * them. Sizes at least double, so this list stays short. */
    void *retired[32];
    int n_retired;
    char name[256];
    char error[512]; /* sticky: the first failure */
    /* Diagnostics from the environment (FLASHGEN_ATTN_KIND=prefill|decode,
     * FLASHGEN_DECODE_SPLITS=N): force the attention variant or the decode split count, to
     * bisect numerical differences. Unset: the selector decides. */
    int attn_kind, decode_splits;
    int dattn_early; /* FLASHGEN_DATTN_EARLY=1: attn_args.early_dependents (A/B runs) */
    int use_gemv;    /* FLASHGEN_GEMV=0 sends decode-sized products to cuBLASLt too (A/B runs) */
    /* FLASHGEN_QGEMV_ROWS=N: resident quantized products of up to N rows run the GEMV (in slices
     * of FG_QGEMV_MAX_ROWS past it) instead of the bf16 scratch (A/B runs); 0 (unset): up to
     * FG_QGEMV_MAX_ROWS (cu_qlinear) */
    int qgemv_rows;
    int qgemm_rows; /* FLASHGEN_QGEMM_ROWS: the most rows fg_qgemm takes (0: the bf16 scratch) */
    /* FLASHGEN_BATCH_INVARIANT=1: a row's results do not depend on what else is in the batch
     * (see cu_create); canon holds one cuBLASLt algorithm per (in, out, type) for every n. */
    int batch_invariant;
    struct lt_canon canon[LT_CACHE_SIZE];
    int n_canon;
    /* sampling (outside graphs, so these may be replaced when outgrown): device rows, history,
     * picks and workspace; pinned host staging for rows in and picks out */
    void *smp_dev;
    size_t smp_dev_bytes;
    void *smp_host;
    size_t smp_host_bytes;
    /* constrained decoding: device masks and their row ids, pinned host staging (the sample
     * op that follows in the same step synchronises, so a later step may overwrite them) */
    void *msk_dev;
    size_t msk_dev_bytes;
    void *msk_host;
    size_t msk_host_bytes;
    /* logit bias / penalties: the step's deltas, device and pinned staging (as the masks) */
    void *bia_dev;
    size_t bia_dev_bytes;
    void *bia_host;
    size_t bia_host_bytes;
    /* top_logprobs: row ids and k in, (rows, FG_TOP_MAX) ids and logprobs out */
    void *top_dev;
    size_t top_dev_bytes;
    void *top_host;
    size_t top_host_bytes;
    /* FLASHGEN_SKIP, read at each graph_begin: the stages (SKIP_*) the graph being recorded
     * leaves out; 0 outside a capture. n_madd counts this capture's matmul_add calls. */
    unsigned skip;
    int n_madd;
    /* FLASHGEN_GRAPH_SPLITS=N, read at each graph_begin: the decode split count of the graph
     * being recorded (0: FLASHGEN_DECODE_SPLITS or the selector), for timing split counts as
     * the engine runs them (bench/decode_breakdown.c); 0 outside a capture. */
    int graph_splits;
    struct up_stage *up; /* upload_rows' pinned buffers while a model loads, else NULL */
    void *q_stage;       /* qupload's device staging for a weight's file rows while loading */
    size_t q_stage_bytes;
    /* FLASHGEN_QUANTIZATION=fp8: e4m3 copies of the weights upload_rows stores, which the
     * products take (try_fp8); NULL otherwise */
    struct fg_fp8_weights *fp8;
};

/* Stages of a decode step that FLASHGEN_SKIP=stage,stage,... can leave out of recorded decode
 * graphs, so that graph-replay timing of the variants attributes a step's time
 * (bench/decode_breakdown.c). Timing only: the results of such a graph are wrong. Eager launches
 * (prefill, the first sight of a decode shape) never skip. */
enum {
    SKIP_EMBED = 1u << 0,  /* the token embedding gather */
    SKIP_QKV = 1u << 1,    /* RMSNorm + q|k|v GEMV */
    SKIP_ROPE = 1u << 2,   /* RoPE + the K/V page write (qkv_store) */
    SKIP_ATTN = 1u << 3,   /* paged decode attention */
    SKIP_O = 1u << 4,      /* o projection + residual */
    SKIP_GATEUP = 1u << 5, /* RMSNorm + gate|up GEMV + SwiGLU */
    SKIP_DOWN = 1u << 6,   /* down projection + residual */
    SKIP_HEAD = 1u << 7,   /* last-row gather, final RMSNorm, lm_head */
};

static unsigned skip_parse(const char *s) {
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"embed", SKIP_EMBED}, {"qkv", SKIP_QKV},  {"rope", SKIP_ROPE},
                 {"attn", SKIP_ATTN},   {"o", SKIP_O},      {"gateup", SKIP_GATEUP},
                 {"down", SKIP_DOWN},   {"head", SKIP_HEAD}};
    unsigned m = 0;
    while (s && *s) {
        size_t len = strcspn(s, ",");
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            if (strlen(names[i].name) == len && !strncmp(s, names[i].name, len)) m |= names[i].bit;
        s += len + (s[len] == ',');
    }
    return m;
}

static int skip_stage(const struct cuda_ctx *c, unsigned stage) {
    return (c->skip & stage) != 0;
}

static void ctx_fail(struct cuda_ctx *c, const char *fmt, ...) {
    if (c->error[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof(c->error), fmt, ap);
    va_end(ap);
}

#define CK(c, call)                                                                                \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            ctx_fail((c), "%s failed at %s:%d: %s", #call, __FILE__, __LINE__,                     \
                     cudaGetErrorString(e_));                                                      \
    } while (0)

#define CK_LAUNCH(c) CK((c), cudaGetLastError())

/* ---- memory ------------------------------------------------------------------------------ */

static void *cu_alloc(void *ctx, size_t bytes) {
    (void)ctx;
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 256) != cudaSuccess) {
        cudaGetLastError(); /* an allocation failure is reported by NULL, not sticky */
        return NULL;
    }
    return p;
}

static void cu_release(void *ctx, void *p) {
    (void)ctx;
    if (p) cudaFree(p);
}

static int cu_upload(void *ctx, void *dst, const void *src, size_t bytes) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    CK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    return c->error[0] ? -1 : 0;
}

static int cu_download(void *ctx, void *dst, const void *src, size_t bytes) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    CK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    CK(c, cudaStreamSynchronize(c->stream));
    return c->error[0] ? -1 : 0;
}

static int cu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    CK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
    return c->error[0] ? -1 : 0;
}

static int cu_sync(void *ctx) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    CK(c, cudaStreamSynchronize(c->stream));
    return c->error[0] ? -1 : 0;
}

__global__ void k_f32_to_bf16(__nv_bfloat16 *dst, const float *src, size_t n) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) dst[i] = __float2bfloat16(src[i]);
}

/* Converts through a pinned staging buffer in chunks, so a 16 GB model needs no 16 GB of host
 * memory twice. */
static int cu_upload_f32(void *ctx, void *dst, const float *src, size_t n) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    const size_t chunk = (size_t)16 << 20; /* floats per round trip */
    float *stage = NULL;
    size_t stage_n = n < chunk ? n : chunk;
    if (cudaMalloc(&stage, stage_n * sizeof(float)) != cudaSuccess) {
        cudaGetLastError();
        ctx_fail(c, "upload: cannot allocate %zu bytes of staging memory", stage_n * 4);
        return -1;
    }
    for (size_t off = 0; off < n && !c->error[0]; off += chunk) {
        size_t m = n - off < chunk ? n - off : chunk;
        CK(c,
           cudaMemcpyAsync(stage, src + off, m * sizeof(float), cudaMemcpyHostToDevice, c->stream));
        k_f32_to_bf16<<<(unsigned)((m + 255) / 256), 256, 0, c->stream>>>(
            (__nv_bfloat16 *)dst + off, stage, m);
        CK_LAUNCH(c);
    }
    CK(c, cudaStreamSynchronize(c->stream));
    cudaFree(stage);
    return c->error[0] ? -1 : 0;
}

/* ---- weights from the file mapping (upload_rows) ------------------------------------------
 * A GGUF tensor of F16 / BF16 / F32 goes from the mapping to the device without an fp32 host
 * copy: all CPUs copy a chunk of rows (un-permuting llama's Q/K rows on the way, F32 rounded to
 * bf16 here) into one of UP_STAGES pinned buffers, which is copied by DMA straight into the
 * weight's place, F16 then turned into bf16 in place by k_f16_to_bf16 (same width); while it
 * travels the CPUs fill the next buffer. F16 → fp32 → bf16 rounds exactly as the fp32 path
 * (upload_f32) did, so results do not change. The buffers live until upload_rows(NULL). */
#define UP_STAGES 4                       /* buffers in flight: one filled while three travel */
#define UP_STAGE_BYTES ((size_t)64 << 20) /* per buffer: 1.3 ms of PCIe 5 DMA, ~3 ms of filling */
#define UP_MAX_THREADS 32

struct up_stage {
    void *host[UP_STAGES];       /* pinned, UP_STAGE_BYTES each */
    cudaEvent_t done[UP_STAGES]; /* recorded after the DMA (and conversion) out of host[i] */
    int used[UP_STAGES];
    int next;
    int n_threads;
};

static void up_stage_free(struct up_stage *u) {
    if (!u) return;
    for (int i = 0; i < UP_STAGES; i++) {
        if (u->used[i]) cudaEventSynchronize(u->done[i]);
        if (u->done[i]) cudaEventDestroy(u->done[i]);
        if (u->host[i]) cudaFreeHost(u->host[i]);
    }
    free(u);
}

static struct up_stage *up_stage_get(struct cuda_ctx *c) {
    if (c->up) return c->up;
    struct up_stage *u = (struct up_stage *)calloc(1, sizeof(*u));
    if (!u) return NULL;
    for (int i = 0; i < UP_STAGES; i++)
        if (cudaHostAlloc(&u->host[i], UP_STAGE_BYTES, cudaHostAllocDefault) != cudaSuccess ||
            cudaEventCreateWithFlags(&u->done[i], cudaEventDisableTiming) != cudaSuccess) {
            cudaGetLastError(); /* reported by the caller, not sticky */
            up_stage_free(u);
            return NULL;
        }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    u->n_threads = n < 1 ? 1 : n > UP_MAX_THREADS ? UP_MAX_THREADS : (int)n;
    return c->up = u;
}

/* GGUF llama row r (interleaved-RoPE order, heads of d rows) → its Hugging Face row; the same
 * map as model/loader.c's ld_hf_row. */
static int up_hf_row(int r, int d) {
    int i2 = r % d;
    return r / d * d + i2 / 2 + (i2 % 2) * (d / 2);
}

static uint16_t up_f32_to_bf16(float f) { /* round to nearest even, as __float2bfloat16 */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

struct up_fill { /* one thread's rows [r0, r1) of the chunk that starts at row base */
    const struct fg_qtensor *w;
    int d; /* rows per head group when un-permuting, else 0 */
    int base, r0, r1;
    uint8_t *out; /* the pinned buffer: the chunk's rows in Hugging Face order, 2 bytes each */
};

static void *up_fill_run(void *arg) {
    const struct up_fill *f = (const struct up_fill *)arg;
    const struct fg_qtensor *w = f->w;
    size_t out_rb = (size_t)w->cols * 2;
    for (int r = f->r0; r < f->r1; r++) {
        int hf = f->d ? up_hf_row(r, f->d) : r;
        const uint8_t *src = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
        uint8_t *dst = f->out + (size_t)(hf - f->base) * out_rb;
        if (w->type != GGUF_GGML_F32) {
            memcpy(dst, src, out_rb);
            continue;
        }
        uint16_t *o = (uint16_t *)dst;
        for (int j = 0; j < w->cols; j++) {
            float x;
            memcpy(&x, src + 4 * (size_t)j, 4);
            o[j] = up_f32_to_bf16(x);
        }
    }
    return NULL;
}

__global__ void k_f16_to_bf16(__nv_bfloat16 *x, size_t n) { /* in place: same width */
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) x[i] = __float2bfloat16(__half2float(((const __half *)x)[i]));
}

static int cu_upload_rows(void *ctx, void *dst, const struct fg_qtensor *w, int perm_heads) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (!w) { /* the load is over: give the staging memory back */
        up_stage_free(c->up);
        c->up = NULL;
        if (c->fp8 && !c->error[0] && fg_fp8_weights_build(c->fp8, c->stream) != 0)
            ctx_fail(c, "%s", fg_fp8_weights_error(c->fp8));
        return c->error[0] ? -1 : 0;
    }
    if (w->type != GGUF_GGML_F32 && w->type != GGUF_GGML_F16 && w->type != GGUF_GGML_BF16) {
        ctx_fail(c, "upload_rows: ggml type %u is not F32, F16 or BF16", w->type);
        return -1;
    }
    struct up_stage *u = up_stage_get(c);
    if (!u) {
        ctx_fail(c, "upload_rows: cannot allocate %d x %zu MB of pinned staging memory", UP_STAGES,
                 UP_STAGE_BYTES >> 20);
        return -1;
    }
    size_t out_rb = (size_t)w->cols * 2;
    int d = perm_heads > 0 ? w->rows / perm_heads : 0;
    int group = d ? d : 1; /* a chunk holds whole head groups, so un-permuted rows stay inside */
    size_t per = out_rb ? UP_STAGE_BYTES / out_rb / group * group : 0;
    if (per == 0 || (d && w->rows % perm_heads)) {
        ctx_fail(c, "upload_rows: a group of %d rows of %d columns does not fit %zu MB of staging",
                 group, w->cols, UP_STAGE_BYTES >> 20);
        return -1;
    }
    for (int r0 = 0; r0 < w->rows && !c->error[0]; r0 += (int)per) {
        int r1 = w->rows - r0 < (int)per ? w->rows : r0 + (int)per;
        int s = u->next;
        u->next = (s + 1) % UP_STAGES;
        if (u->used[s]) CK(c, cudaEventSynchronize(u->done[s]));
        /* fill: one share of rows per thread, this thread taking the first */
        int n_th = u->n_threads, rows = r1 - r0;
        if (n_th > rows / group) n_th = rows / group > 0 ? rows / group : 1;
        struct up_fill fills[UP_MAX_THREADS];
        pthread_t th[UP_MAX_THREADS];
        int started[UP_MAX_THREADS] = {0};
        for (int t = 0; t < n_th; t++) {
            int a = r0 + (int)((long)rows * t / n_th), b = r0 + (int)((long)rows * (t + 1) / n_th);
            fills[t] = up_fill{w, d, r0, a, b, (uint8_t *)u->host[s]};
            if (t > 0) started[t] = !pthread_create(&th[t], NULL, up_fill_run, &fills[t]);
        }
        up_fill_run(&fills[0]);
        for (int t = 1; t < n_th; t++) {
            if (started[t])
                pthread_join(th[t], NULL);
            else
                up_fill_run(&fills[t]);
        }
        size_t n = (size_t)rows * w->cols;
        __nv_bfloat16 *out = (__nv_bfloat16 *)dst + (size_t)r0 * w->cols;
        CK(c, cudaMemcpyAsync(out, u->host[s], n * 2, cudaMemcpyHostToDevice, c->stream));
        if (w->type == GGUF_GGML_F16) {
            k_f16_to_bf16<<<(unsigned)((n + 255) / 256), 256, 0, c->stream>>>(out, n);
            CK_LAUNCH(c);
        }
        CK(c, cudaEventRecord(u->done[s], c->stream));
        u->used[s] = 1;
    }
    if (c->fp8 && !c->error[0] && fg_fp8_weights_record(c->fp8, dst, w->rows, w->cols) != 0)
        ctx_fail(c, "upload_rows: out of host memory for the FP8 weight table");
    return c->error[0] ? -1 : 0;
}

/* ---- elementwise kernels ----------------------------------------------------------------- */

__global__ void k_embed(__nv_bfloat16 *x, const __nv_bfloat16 *table, const int *tokens, int dim) {
    int t = blockIdx.x;
    const __nv_bfloat16 *row = table + (size_t)tokens[t] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        x[(size_t)t * dim + i] = row[i];
}

/* One block per row: fp32 sum of squares, then x * rsqrt(mean + eps) * w (w fp32, as every norm
 * weight: kernels/ops.h). */
__global__ void k_rmsnorm(__nv_bfloat16 *out, const __nv_bfloat16 *x, const float *w, int dim,
                          float eps) {
    const __nv_bfloat16 *xr = x + (size_t)blockIdx.x * dim;
    __nv_bfloat16 *o = out + (size_t)blockIdx.x * dim;
    float ss = 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = __bfloat162float(xr[i]);
        ss += v * v;
    }
    __shared__ float warp_sums[32];
    for (int off = 16; off > 0; off >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, off);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        int n_warps = (blockDim.x + 31) >> 5;
        float v = threadIdx.x < n_warps ? warp_sums[threadIdx.x] : 0.0f;
        for (int off = 16; off > 0; off >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, off);
        if (threadIdx.x == 0) warp_sums[0] = v;
    }
    __syncthreads();
    float inv = rsqrtf(warp_sums[0] / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        o[i] = __float2bfloat16(__bfloat162float(xr[i]) * inv * w[i]);
}

/* out (n, ffn) = silu(gu[:, :ffn]) * gu[:, ffn:], gu (n, 2 ffn): the fused gate|up GEMM's output */
__global__ void k_swiglu_rows(__nv_bfloat16 *out, const __nv_bfloat16 *gu, int ffn, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    size_t t = i / (size_t)ffn, j = i % (size_t)ffn;
    float gv = __bfloat162float(gu[t * 2 * ffn + j]);
    out[i] =
        __float2bfloat16(gv / (1.0f + __expf(-gv)) * __bfloat162float(gu[t * 2 * ffn + ffn + j]));
}

__global__ void k_gather(__nv_bfloat16 *dst, const __nv_bfloat16 *src, const int *rows, int dim) {
    int r = blockIdx.x;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        dst[(size_t)r * dim + i] = src[(size_t)rows[r] * dim + i];
}

static unsigned blocks_for(size_t n, unsigned threads) {
    return (unsigned)((n + threads - 1) / threads);
}

static void cu_embed(void *ctx, void *x, const void *table, const int *tokens, int n, int dim) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (skip_stage(c, SKIP_EMBED)) return;
    k_embed<<<n, 256, 0, c->stream>>>((__nv_bfloat16 *)x, (const __nv_bfloat16 *)table, tokens,
                                      dim);
    CK_LAUNCH(c);
}

static void cu_rmsnorm(void *ctx, void *out, const void *x, const void *w, int n, int dim,
                       float eps) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    int threads = dim >= 1024 ? 1024 : ((dim + 31) / 32) * 32;
    k_rmsnorm<<<n, threads, 0, c->stream>>>((__nv_bfloat16 *)out, (const __nv_bfloat16 *)x,
                                            (const float *)w, dim, eps);
    CK_LAUNCH(c);
}

/* The table's rmsnorm: in a decode step only the final norm before the head uses it. */
static void cu_rmsnorm_op(void *ctx, void *out, const void *x, const void *w, int n, int dim,
                          float eps) {
    if (skip_stage((struct cuda_ctx *)ctx, SKIP_HEAD)) return;
    cu_rmsnorm(ctx, out, x, w, n, dim, eps);
}

static void cu_gather_rows(void *ctx, void *dst, const void *src, const int *rows, int n_rows,
                           int dim) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (skip_stage(c, SKIP_HEAD)) return;
    k_gather<<<n_rows, 256, 0, c->stream>>>((__nv_bfloat16 *)dst, (const __nv_bfloat16 *)src, rows,
                                            dim);
    CK_LAUNCH(c);
}

/* ---- KV write and attention: the kernels of kv_write.cu and attention.cu ----------------- */

static void cu_qkv_store(void *ctx, void *q_out, void *k_pool, void *v_pool, const void *qkv,
                         const int *pos, const int *slots, int n, int n_heads, int n_kv_heads,
                         int head_dim, const void *freqs) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (skip_stage(c, SKIP_ROPE)) return;
    struct qkv_store_args a;
    memset(&a, 0, sizeof(a));
    a.dtype = ATTN_DTYPE_BF16;
    a.q_out = q_out;
    a.k_pool = k_pool;
    a.v_pool = v_pool;
    a.qkv = qkv;
    a.pos = pos;
    a.slots = slots;
    a.freqs = (const float *)freqs;
    a.n = n;
    a.n_heads = n_heads;
    a.n_kv_heads = n_kv_heads;
    a.head_dim = head_dim;
    a.stream = c->stream;
    char err[256];
    if (qkv_store_launch(&a, err, sizeof(err)) != 0) ctx_fail(c, "qkv_store: %s", err);
}

/* attention and attention_window (window > 0: the sliding window, see attention.h) */
static void cu_attention_run(void *ctx, void *out, const void *q, const void *k_pool,
                             const void *v_pool, const struct attn_batch *b, int window) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (skip_stage(c, SKIP_ATTN)) return;
    struct attn_args a;
    memset(&a, 0, sizeof(a));
    a.dtype = ATTN_DTYPE_BF16;
    a.out = out;
    a.q = q;
    a.k_pool = k_pool;
    a.v_pool = v_pool;
    a.b = *b;
    a.stream = c->stream;
    a.kind = c->attn_kind;
    a.n_splits = c->graph_splits > 0 ? c->graph_splits : c->decode_splits;
    a.window = window;
    a.early_dependents = c->dattn_early;
    /* batch-invariant: the kernel depends on the sequence's own query count only (the selector
     * would take the decode kernel for short prompts when they run alone), and the split count is
     * fixed (c->decode_splits), so each sequence's parts do not depend on the batch */
    if (c->batch_invariant && a.kind == ATTN_KIND_AUTO)
        a.kind = b->max_q_len == 1 ? ATTN_KIND_DECODE : ATTN_KIND_PREFILL;
    size_t need = attn_workspace_bytes(&a);
    if (need > c->attn_ws_bytes &&
        c->n_retired < (int)(sizeof(c->retired) / sizeof(c->retired[0]))) {
        size_t want = need > 2 * c->attn_ws_bytes ? need : 2 * c->attn_ws_bytes;
        void *p = NULL;
        if (cudaMalloc(&p, want) == cudaSuccess) {
            if (c->attn_ws) c->retired[c->n_retired++] = c->attn_ws;
            c->attn_ws = p;
            c->attn_ws_bytes = want;
        } else {
            cudaGetLastError(); /* keeps the old one; the launcher splits less to fit */
        }
    }
    a.workspace = c->attn_ws;
    a.workspace_bytes = c->attn_ws_bytes;
    char err[256];
    if (attn_launch(&a, err, sizeof(err)) != 0) ctx_fail(c, "attention: %s", err);
}

static void cu_attention(void *ctx, void *out, const void *q, const void *k_pool,
                         const void *v_pool, const struct attn_batch *b) {
    cu_attention_run(ctx, out, q, k_pool, v_pool, b, 0);
}

static void cu_attention_window(void *ctx, void *out, const void *q, const void *k_pool,
                                const void *v_pool, const struct attn_batch *b, int window) {
    if (window <= 0) {
        ctx_fail((struct cuda_ctx *)ctx, "attention_window: window %d must be positive", window);
        return;
    }
    cu_attention_run(ctx, out, q, k_pool, v_pool, b, window);
}

/* ---- the family switches' ops: the kernels of family.cu ---------------------------------- */

static void family_check(struct cuda_ctx *c, const char *op, int e) {
    if (e != 0) ctx_fail(c, "%s: %s", op, cudaGetErrorString((cudaError_t)e));
}

static void cu_add_rows(void *ctx, void *x, const void *bias, int n, int dim) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    family_check(c, "add_rows", family_add_rows(x, bias, n, dim, c->stream));
}

static void cu_head_norm(void *ctx, void *qkv, const void *q_w, const void *k_w, int n, int n_heads,
                         int n_kv_heads, int head_dim, float eps) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    family_check(c, "head_norm",
                 family_head_norm(qkv, q_w, k_w, n, n_heads, n_kv_heads, head_dim, eps, c->stream));
}

static void cu_norm_add(void *ctx, void *x, const void *y, const void *w, int n, int dim,
                        float eps) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    family_check(c, "norm_add", family_norm_add(x, y, w, n, dim, eps, c->stream));
}

static void cu_geglu(void *ctx, void *out, const void *gu, int n, int ffn) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    family_check(c, "geglu", family_geglu(out, gu, n, ffn, c->stream));
}

static void cu_scale(void *ctx, void *x, size_t n, float s) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    family_check(c, "scale", family_scale(x, n, s, c->stream));
}

static void cu_softcap(void *ctx, float *x, size_t n, float cap) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    family_check(c, "softcap", family_softcap(x, n, cap, c->stream));
}

/* ---- linear layers through cuBLASLt ------------------------------------------------------ */

#define LT_CK(c, call)                                                                             \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            ctx_fail((c), "%s failed at %s:%d: status %d", #call, __FILE__, __LINE__, (int)s_);    \
    } while (0)

#define LT_CANON_ROWS 256 /* the row count the batch-invariant algorithm is chosen for */

/* Batch-invariant mode: one algorithm per (in, out, type), chosen for LT_CANON_ROWS rows with
 * split-K off, used for every row count. Each output element is then the same K loop in the same
 * order whether its row comes alone or among hundreds. P supplies the operation descriptor. */
static const cublasLtMatmulAlgo_t *lt_canon_algo(struct cuda_ctx *c, const struct lt_plan *p,
                                                 int in_dim, int out_dim, cudaDataType_t out_type) {
    for (int i = 0; i < c->n_canon; i++)
        if (c->canon[i].in_dim == in_dim && c->canon[i].out_dim == out_dim &&
            c->canon[i].out_type == out_type)
            return &c->canon[i].algo;
    if (c->n_canon == LT_CACHE_SIZE) {
        ctx_fail(c, "batch-invariant GEMM: more than %d weight shapes", LT_CACHE_SIZE);
        return NULL;
    }
    cublasLtMatrixLayout_t b = NULL, d = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    LT_CK(c, cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, in_dim, LT_CANON_ROWS, in_dim));
    LT_CK(c, cublasLtMatrixLayoutCreate(&d, out_type, out_dim, LT_CANON_ROWS, out_dim));
    LT_CK(c, cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = LT_WORKSPACE_BYTES;
    uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_NONE;
    LT_CK(c, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &ws, sizeof(ws)));
    LT_CK(c, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                  &schemes, sizeof(schemes)));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    if (!c->error[0])
        LT_CK(c,
              cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->a, b, d, d, pref, 1, &res, &found));
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (c->error[0]) return NULL;
    if (!found) {
        ctx_fail(c, "batch-invariant GEMM: cuBLASLt has no algorithm for %d x %d", in_dim, out_dim);
        return NULL;
    }
    int32_t one = 1;
    uint32_t none = CUBLASLT_REDUCTION_SCHEME_NONE;
    LT_CK(c, cublasLtMatmulAlgoConfigSetAttribute(&res.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &one,
                                                  sizeof(one)));
    LT_CK(c, cublasLtMatmulAlgoConfigSetAttribute(&res.algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
                                                  &none, sizeof(none)));
    if (c->error[0]) return NULL;
    struct lt_canon *k = &c->canon[c->n_canon++];
    k->in_dim = in_dim;
    k->out_dim = out_dim;
    k->out_type = out_type;
    k->algo = res.algo;
    return &k->algo;
}

/* Row-major y (n, out) = x (n, in) · wᵀ with w (out, in) row-major. In cuBLAS's column-major
 * terms: yᵀ (out × n) = op_T(A) · B where A is w viewed as (in × out), B is x viewed as (in × n).
 */
static struct lt_plan *lt_plan_get(struct cuda_ctx *c, int n, int in_dim, int out_dim,
                                   cudaDataType_t out_type) {
    for (int i = 0; i < c->n_plans; i++) {
        struct lt_plan *p = &c->plans[i];
        if (p->n == n && p->in_dim == in_dim && p->out_dim == out_dim && p->out_type == out_type)
            return p;
    }
    if (c->n_plans == LT_CACHE_SIZE) { /* evict the oldest */
        struct lt_plan *p = &c->plans[0];
        cublasLtMatmulDescDestroy(p->desc);
        cublasLtMatrixLayoutDestroy(p->a);
        cublasLtMatrixLayoutDestroy(p->b);
        cublasLtMatrixLayoutDestroy(p->c);
        memmove(&c->plans[0], &c->plans[1], sizeof(c->plans[0]) * (LT_CACHE_SIZE - 1));
        c->n_plans--;
    }
    struct lt_plan *p = &c->plans[c->n_plans];
    memset(p, 0, sizeof(*p));
    p->n = n;
    p->in_dim = in_dim;
    p->out_dim = out_dim;
    p->out_type = out_type;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    LT_CK(c, cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    LT_CK(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    LT_CK(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    LT_CK(c, cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, in_dim, out_dim, in_dim));
    LT_CK(c, cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, in_dim, n, in_dim));
    LT_CK(c, cublasLtMatrixLayoutCreate(&p->c, out_type, out_dim, n, out_dim));
    if (c->batch_invariant) {
        const cublasLtMatmulAlgo_t *algo = lt_canon_algo(c, p, in_dim, out_dim, out_type);
        cublasLtMatmulHeuristicResult_t chk;
        if (!algo) return NULL;
        if (cublasLtMatmulAlgoCheck(c->lt, p->desc, p->a, p->b, p->c, p->c, algo, &chk) !=
            CUBLAS_STATUS_SUCCESS) {
            ctx_fail(c, "batch-invariant GEMM: the algorithm of %d x %d does not serve %d rows",
                     in_dim, out_dim, n);
            return NULL;
        }
        p->algo = *algo;
        c->n_plans++;
        return p;
    }
    cublasLtMatmulPreference_t pref;
    LT_CK(c, cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = LT_WORKSPACE_BYTES;
    LT_CK(c, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &ws, sizeof(ws)));
    /* Split-K partial sums are reduced in fp32 (a workspace of the compute type) or not split,
     * never in the bf16 output type nor "in place", which accumulates the partials in the output
     * buffer, i.e. in bf16 for bf16 outputs: over K = 14336 (Llama-3-8B's down projection) each
     * extra bf16 rounding shows in the logits. Only if no such algorithm exists is in place
     * allowed. */
    uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    for (int pass = 0; pass < 2 && !found && !c->error[0]; pass++) {
        if (pass == 1) schemes |= CUBLASLT_REDUCTION_SCHEME_INPLACE;
        LT_CK(c, cublasLtMatmulPreferenceSetAttribute(
                     pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes, sizeof(schemes)));
        LT_CK(c, cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->a, p->b, p->c, p->c, pref, 1,
                                                &res, &found));
    }
    cublasLtMatmulPreferenceDestroy(pref);
    if (c->error[0]) return NULL;
    if (found == 0) {
        ctx_fail(c, "cuBLASLt has no algorithm for %d x %d x %d", n, in_dim, out_dim);
        return NULL;
    }
    p->algo = res.algo;
    c->n_plans++;
    return p;
}

/* out = x · wᵀ, or out += x · wᵀ when accumulate (beta = 1, C and D the same matrix). */
static void lt_matmul(struct cuda_ctx *c, void *out, cudaDataType_t out_type, const void *x,
                      const void *w, int n, int in_dim, int out_dim, int accumulate) {
    if (c->error[0]) return;
    struct lt_plan *p = lt_plan_get(c, n, in_dim, out_dim, out_type);
    if (!p) return;
    float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    LT_CK(c, cublasLtMatmul(c->lt, p->desc, &alpha, w, p->a, x, p->b, &beta, out, p->c, out, p->c,
                            &p->algo, c->lt_workspace, LT_WORKSPACE_BYTES, c->stream));
}

/* Decode-sized products (a few rows) stream the weights through gemv.cu, which reaches more of
 * the memory bandwidth than cuBLASLt at one row and fuses the residual add and SwiGLU; 1 when it
 * took the product (launched or failed: failures stick in the context). */
static int try_gemv_norm(struct cuda_ctx *c, void *y, int y_f32, const void *x, const void *gamma,
                         float eps, const void *w, int n, int in_dim, int out_dim, int epilogue) {
    if (!c->use_gemv || !fg_gemv_supported(n, in_dim, out_dim) ||
        (((uintptr_t)y | (uintptr_t)x | (uintptr_t)gamma | (uintptr_t)w) & 15))
        return 0;
    if (c->error[0]) return 1;
    int e = gamma ? fg_gemv_norm(y, y_f32, x, gamma, eps, NULL, w, n, in_dim, out_dim, epilogue,
                                 c->stream)
                  : fg_gemv(y, y_f32, x, w, n, in_dim, out_dim, epilogue, c->stream);
    if (e != 0)
        ctx_fail(c, "gemv%s %d x %d x %d: %s", gamma ? "_norm" : "", n, in_dim, out_dim,
                 cudaGetErrorString((cudaError_t)e));
    return 1;
}

static int try_gemv(struct cuda_ctx *c, void *y, int y_f32, const void *x, const void *w, int n,
                    int in_dim, int out_dim, int epilogue) {
    return try_gemv_norm(c, y, y_f32, x, NULL, 0.0f, w, n, in_dim, out_dim, epilogue);
}

/* FLASHGEN_QUANTIZATION=fp8: the product on the weight's e4m3 copy (fg_fp8_linear, fp8.h: the
 * FP8 GEMV up to 16 rows, else per-token quantization + the W8A8 cuBLASLt GEMM). 0 when w has
 * no copy (the bf16 path runs), 1 when taken (or failed: failures stick in the context), 2 when
 * SwiGLU's (n, 2 out_dim) gate|up product sits in scratch for the caller's SwiGLU. */
static int try_fp8(struct cuda_ctx *c, void *y, const void *x, const void *norm_w, float eps,
                   const void *w, int n, int in_dim, int out_dim, int epilogue, void *scratch) {
    if (!c->fp8) return 0;
    if (c->error[0]) return 1;
    int r = fg_fp8_linear(c->fp8, y, x, norm_w, eps, w, n, in_dim, out_dim, epilogue, scratch,
                          c->stream);
    if (r < 0) {
        ctx_fail(c, "%s", fg_fp8_weights_error(c->fp8));
        return 1;
    }
    return r;
}

static void cu_swiglu_from(struct cuda_ctx *c, void *out, const void *gu, int n, int ffn) {
    size_t total = (size_t)n * ffn;
    k_swiglu_rows<<<blocks_for(total, 256), 256, 0, c->stream>>>(
        (__nv_bfloat16 *)out, (const __nv_bfloat16 *)gu, ffn, total);
    CK_LAUNCH(c);
}

static void cu_matmul(void *ctx, void *out, const void *x, const void *w, int n, int in_dim,
                      int out_dim) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (try_fp8(c, out, x, NULL, 0.0f, w, n, in_dim, out_dim, FG_GEMV_STORE, NULL)) return;
    if (!try_gemv(c, out, 0, x, w, n, in_dim, out_dim, FG_GEMV_STORE))
        lt_matmul(c, out, CUDA_R_16BF, x, w, n, in_dim, out_dim, 0);
}

static void cu_matmul_f32(void *ctx, float *out, const void *x, const void *w, int n, int in_dim,
                          int out_dim) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (skip_stage(c, SKIP_HEAD)) return;
    if (!try_gemv(c, out, 1, x, w, n, in_dim, out_dim, FG_GEMV_STORE))
        lt_matmul(c, out, CUDA_R_32F, x, w, n, in_dim, out_dim, 0);
}

static void cu_matmul_add(void *ctx, void *x, const void *h, const void *w, int n, int in_dim,
                          int out_dim) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    /* forward.c's order: each layer's o projection, then its down projection */
    if (c->skip && skip_stage(c, c->n_madd++ % 2 ? SKIP_DOWN : SKIP_O)) return;
    if (try_fp8(c, x, h, NULL, 0.0f, w, n, in_dim, out_dim, FG_GEMV_ADD, NULL)) return;
    if (!try_gemv(c, x, 0, h, w, n, in_dim, out_dim, FG_GEMV_ADD))
        lt_matmul(c, x, CUDA_R_16BF, h, w, n, in_dim, out_dim, 1);
}

static void cu_matmul_swiglu(void *ctx, void *out, const void *h, const void *w, int n, int in_dim,
                             int ffn, void *scratch) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    int f = try_fp8(c, out, h, NULL, 0.0f, w, n, in_dim, ffn, FG_GEMV_SWIGLU, scratch);
    if (f == 1) return;
    if (f == 0) {
        if (try_gemv(c, out, 0, h, w, n, in_dim, ffn, FG_GEMV_SWIGLU)) return;
        lt_matmul(c, scratch, CUDA_R_16BF, h, w, n, in_dim, 2 * ffn, 0);
    }
    cu_swiglu_from(c, out, scratch, n, ffn);
}

static void cu_norm_matmul(void *ctx, void *out, void *h, const void *x, const void *norm_w,
                           float eps, const void *w, int n, int in_dim, int out_dim, int swiglu,
                           void *scratch) {
    if (skip_stage((struct cuda_ctx *)ctx, swiglu ? SKIP_GATEUP : SKIP_QKV)) return;
    /* FP8 weights: the norm rides on the GEMV or on the activations' quantization */
    int f = try_fp8((struct cuda_ctx *)ctx, out, x, norm_w, eps, w, n, in_dim, out_dim,
                    swiglu ? FG_GEMV_SWIGLU : FG_GEMV_STORE, scratch);
    if (f == 2) cu_swiglu_from((struct cuda_ctx *)ctx, out, scratch, n, out_dim);
    if (f) return;
    /* decode sizes: the norm runs inside the GEMV (each block scales its x chunks), h unwritten */
    if (try_gemv_norm((struct cuda_ctx *)ctx, out, 0, x, norm_w, eps, w, n, in_dim, out_dim,
                      swiglu ? FG_GEMV_SWIGLU : FG_GEMV_STORE))
        return;
    cu_rmsnorm(ctx, h, x, norm_w, n, in_dim, eps);
    if (swiglu)
        cu_matmul_swiglu(ctx, out, h, w, n, in_dim, out_dim, scratch);
    else
        cu_matmul(ctx, out, h, w, n, in_dim, out_dim);
}

/* ---- GGUF weights resident on the device -------------------------------------------------
 * FG_QLAYOUT_GEMM: qgemv.h's layout, whatever fg_qpack makes of the file's blocks (allocated as
 * fg_qpack_bytes; the file's rows travel to a device staging buffer, then fg_qpack writes the
 * resident copy; q|k|v and gate|up are packed as one matrix each). qlinear runs rows <=
 * FG_QGEMV_MAX_ROWS through fg_qgemv / fg_qgemv_norm with the epilogue fused (inside the decode
 * graphs); 17 (Q8_0, Q4_0: 9, fg_qgemm_min_rows) to FG_QGEMM_MAX_ROWS (64) rows through
 * fg_qgemm (kernels/qgemm.h: W read once in its
 * blocks, the bf16 scratch only as the work area of its k split; 1.5-2.3x the scratch path's
 * speed, H200 2026-12-04, bench/ENGINE.md issue 13; FLASHGEN_QGEMM_ROWS=N lowers the cut, 0 turns
 * it off); more rows dequantize W into the caller's bf16 scratch (fg_qdequant_bf16, one weight at
 * a time) and take the bf16 path (cuBLASLt), where the tensor-core GEMM's rate pays for the
 * scratch. FLASHGEN_QGEMV_ROWS=N takes the GEMV in 16-row slices up to N rows instead (slower:
 * each slice reads W again). A W larger than the scratch (the output head: the scratch has the
 * largest layer weight's size) past 64 rows takes the slices. FG_QLAYOUT_ROWS: the file's blocks as
 * they are (an untied token embedding), gathered by fg_qembed (kernels/qembed.h: Q8_0, Q4_0, Q4_1,
 * Q5_0, Q5_1, Q3_K, Q4_K, Q5_K, Q6_K; an untied Q2_K embedding becomes bf16). A tied embedding has
 * no copy of its own: qembed gathers its rows from the head's FG_QLAYOUT_GEMM copy
 * (fg_qdequant_rows_bf16, the same bf16 values, every type the GEMV keeps, Q2_K too), so a tied
 * model's blocks are resident once (issue 13: SmolLM2's were 1.21x the file with two copies).
 * Batch-invariant mode keeps no weight quantized (the GEMV's summation order is not cuBLASLt's). */

static size_t cu_qresident_bytes(void *ctx, uint32_t type, int rows, int cols, int layout) {
    const struct cuda_ctx *c = (const struct cuda_ctx *)ctx;
    if (c->batch_invariant || rows < 1) return 0;
    if (layout == FG_QLAYOUT_ROWS) return (size_t)rows * fg_qembed_row_bytes(type, cols);
    if (!fg_qgemv_supported((int)type, 1, cols, rows)) return 0;
    return fg_qpack_bytes((int)type, rows, cols);
}

static int cu_qupload(void *ctx, void *dst, const struct fg_qtensor *parts, int n_parts,
                      int layout) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (n_parts <= 0) { /* the load is over */
        CK(c, cudaStreamSynchronize(c->stream));
        if (c->q_stage) cudaFree(c->q_stage);
        c->q_stage = NULL;
        c->q_stage_bytes = 0;
        return c->error[0] ? -1 : 0;
    }
    int rows = 0;
    size_t bytes = 0;
    for (int i = 0; i < n_parts; i++) {
        if (parts[i].type != parts[0].type || parts[i].cols != parts[0].cols ||
            parts[i].row_bytes != parts[0].row_bytes || !parts[i].data) {
            ctx_fail(c, "qupload: part %d differs from part 0 in type or columns", i);
            return -1;
        }
        rows += parts[i].rows;
        bytes += (size_t)parts[i].rows * parts[i].row_bytes;
    }
    const uint32_t type = parts[0].type;
    const int cols = parts[0].cols;
    if (cu_qresident_bytes(c, type, rows, cols, layout) == 0 ||
        (layout == FG_QLAYOUT_ROWS && fg_qembed_row_bytes(type, cols) != parts[0].row_bytes)) {
        ctx_fail(c, "qupload: ggml type %u (%d x %d) cannot stay quantized on the GPU", type, rows,
                 cols);
        return -1;
    }
    char *to = (char *)dst;
    if (layout == FG_QLAYOUT_GEMM) { /* the file's rows into the staging buffer first */
        if (c->q_stage_bytes < bytes) {
            CK(c, cudaStreamSynchronize(c->stream)); /* the last fg_qpack may still read it */
            if (c->q_stage) cudaFree(c->q_stage);
            c->q_stage = NULL;
            c->q_stage_bytes = 0;
            if (cudaMalloc(&c->q_stage, bytes) != cudaSuccess) {
                cudaGetLastError();
                c->q_stage = NULL;
                ctx_fail(c, "qupload: cannot allocate %zu MB of staging memory", bytes >> 20);
                return -1;
            }
            c->q_stage_bytes = bytes;
        }
        to = (char *)c->q_stage;
    }
    /* pageable sources: each copy returns once its host rows are read */
    for (int i = 0; i < n_parts && !c->error[0]; i++) {
        size_t n = (size_t)parts[i].rows * parts[i].row_bytes;
        CK(c, cudaMemcpyAsync(to, parts[i].data, n, cudaMemcpyHostToDevice, c->stream));
        to += n;
    }
    if (layout == FG_QLAYOUT_GEMM && !c->error[0]) {
        int e = fg_qpack(dst, c->q_stage, (int)type, rows, cols, c->stream);
        if (e != 0)
            ctx_fail(c, "fg_qpack %d x %d (type %u): %s", rows, cols, type,
                     cudaGetErrorString((cudaError_t)e));
    }
    return c->error[0] ? -1 : 0;
}

static void cu_qembed(void *ctx, void *x, const struct fg_qtensor *table, const int *tokens,
                      int n) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (skip_stage(c, SKIP_EMBED)) return;
    /* a tied embedding: its rows from the head's packed copy (ops.h qembed) */
    int e = table->layout == FG_QLAYOUT_GEMM
                ? fg_qdequant_rows_bf16(x, table->data, (int)table->type, table->rows, table->cols,
                                        tokens, n, c->stream)
                : fg_qembed(x, table->data, tokens, n, table->cols, table->row_bytes, table->type,
                            c->stream);
    if (e != 0)
        ctx_fail(c, "qembed: ggml type %u (%d columns, %s layout): %s", table->type, table->cols,
                 table->layout == FG_QLAYOUT_GEMM ? "gemm" : "rows",
                 cudaGetErrorString((cudaError_t)e));
}

/* cu_qlinear's strided store: the packed (n, width) product in act_scratch to a->out's rows of
 * ld_out elements */
static void ql_place(struct cuda_ctx *c, const struct fg_qlinear *a, size_t es, int width) {
    if (c->error[0]) return;
    cudaError_t e =
        cudaMemcpy2DAsync(a->out, (size_t)a->ld_out * es, a->act_scratch, (size_t)width * es,
                          (size_t)width * es, (size_t)a->n, cudaMemcpyDeviceToDevice, c->stream);
    if (e != cudaSuccess)
        ctx_fail(c, "qlinear: strided store of %d x %d: %s", a->n, width, cudaGetErrorString(e));
}

static void cu_qlinear(void *ctx, const struct fg_qlinear *a) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    const struct fg_qtensor *w = a->w;
    const int swiglu = a->epilogue == FG_QL_SWIGLU, f32 = a->epilogue == FG_QL_STORE_F32;
    const int add = a->epilogue == FG_QL_ADD;
    const int in_dim = w->cols, out_dim = swiglu ? w->rows / 2 : w->rows;
    /* FLASHGEN_SKIP: the stages of forward.c's order (o, then down, for the residual adds) */
    unsigned stage = f32         ? SKIP_HEAD
                     : swiglu    ? SKIP_GATEUP
                     : add       ? (c->skip ? (c->n_madd++ % 2 ? SKIP_DOWN : SKIP_O) : 0)
                     : a->norm_w ? SKIP_QKV
                                 : 0;
    if (skip_stage(c, stage) || c->error[0]) return;
    const int epi = swiglu ? FG_GEMV_SWIGLU : add ? FG_GEMV_ADD : FG_GEMV_STORE;
    const size_t out_es = f32 ? 4 : 2, w_bf16 = (size_t)w->rows * in_dim * 2;
    /* a product into columns of a wider matrix (ld_out): rows past the first are written packed
     * to act_scratch (n, w->rows), then copied into place (one 2-D copy, graph-capturable) */
    const int strided = a->ld_out > 0 && a->ld_out != out_dim && a->n > 1;
    if (strided && (swiglu || add || !a->act_scratch)) {
        ctx_fail(c, "qlinear: ld_out %d needs a store epilogue and act_scratch", a->ld_out);
        return;
    }
    void *out = strided ? a->act_scratch : a->out;
    /* the GEMV up to 16 rows (8 for the types fg_qgemm takes from 9: fg_qgemm_min_rows) */
    const int gemv_rows = c->qgemv_rows > 0                    ? c->qgemv_rows
                          : c->qgemm_rows >= FG_QGEMV_MAX_ROWS ? fg_qgemm_min_rows((int)w->type) - 1
                                                               : FG_QGEMV_MAX_ROWS;
    const int sliced = c->use_gemv && a->n <= gemv_rows;
    const int fits = a->w_scratch && w_bf16 <= a->w_scratch_bytes;
    const int qgemm =
        !sliced && a->n <= c->qgemm_rows && fg_qgemm_supported((int)w->type, a->n, in_dim, out_dim);
    if (qgemm || (!sliced && fits)) {
        const void *h = a->x;
        if (a->norm_w) {
            cu_rmsnorm(c, a->h, a->x, a->norm_w, a->n, in_dim, a->eps);
            h = a->h;
        }
        if (qgemm) {
            /* past the GEMV's rows and up to 64: W read once in its blocks (kernels/qgemm.h), the
             * k split's parts in the bf16 scratch (unused on this path) */
            int e = fg_qgemm(out, f32, h, w->data, (int)w->type, a->n, in_dim, out_dim, epi, 0,
                             a->w_scratch, a->w_scratch ? a->w_scratch_bytes : 0, c->stream);
            if (e != 0) {
                ctx_fail(c, "qgemm %d x %d x %d (type %u): %s", a->n, in_dim, out_dim, w->type,
                         cudaGetErrorString((cudaError_t)e));
                return;
            }
        } else {
            /* past fg_qgemm's rows (or FLASHGEN_QGEMM_ROWS=0): W in bf16 through the scratch,
             * then the bf16 path */
            int e =
                fg_qdequant_bf16(a->w_scratch, w->data, (int)w->type, w->rows, in_dim, c->stream);
            if (e != 0) {
                ctx_fail(c, "fg_qdequant_bf16 %d x %d: %s", w->rows, in_dim,
                         cudaGetErrorString((cudaError_t)e));
                return;
            }
            if (swiglu) {
                lt_matmul(c, a->act_scratch, CUDA_R_16BF, h, a->w_scratch, a->n, in_dim, w->rows,
                          0);
                size_t total = (size_t)a->n * out_dim;
                k_swiglu_rows<<<blocks_for(total, 256), 256, 0, c->stream>>>(
                    (__nv_bfloat16 *)a->out, (const __nv_bfloat16 *)a->act_scratch, out_dim, total);
                CK_LAUNCH(c);
            } else {
                lt_matmul(c, out, f32 ? CUDA_R_32F : CUDA_R_16BF, h, a->w_scratch, a->n, in_dim,
                          out_dim, add);
            }
        }
        if (strided) ql_place(c, a, out_es, out_dim);
        return;
    }
    /* the GEMV, in slices of FG_QGEMV_MAX_ROWS rows (one at decode sizes; FLASHGEN_GEMV=0 and a
     * W past the scratch come here too) */
    for (int r0 = 0; r0 < a->n && !c->error[0]; r0 += FG_QGEMV_MAX_ROWS) {
        const int m = a->n - r0 < FG_QGEMV_MAX_ROWS ? a->n - r0 : FG_QGEMV_MAX_ROWS;
        const char *x = (const char *)a->x + (size_t)r0 * in_dim * 2;
        char *y = (char *)out + (size_t)r0 * out_dim * out_es;
        int e = a->norm_w ? fg_qgemv_norm(y, f32, x, a->norm_w, a->eps, NULL, w->data, (int)w->type,
                                          m, in_dim, out_dim, epi, c->stream)
                          : fg_qgemv(y, f32, x, w->data, (int)w->type, m, in_dim, out_dim, epi,
                                     c->stream);
        if (e != 0)
            ctx_fail(c, "qgemv%s %d x %d x %d (type %u): %s", a->norm_w ? "_norm" : "", m, in_dim,
                     out_dim, w->type, cudaGetErrorString((cudaError_t)e));
    }
    if (strided) ql_place(c, a, out_es, out_dim);
}

/* ---- sampling: kernels/sample.cu ------------------------------------------------------- */

static size_t align256(size_t n) {
    return (n + 255) / 256 * 256;
}

/* Make *buf at least BYTES (device or pinned host memory); 0, or -1 when out of memory. */
static int grow(void **buf, size_t *have, size_t bytes, int host) {
    if (*have >= bytes) return 0;
    size_t want = bytes > 2 * *have ? bytes : 2 * *have;
    void *p = NULL;
    cudaError_t e = host ? cudaMallocHost(&p, want) : cudaMalloc(&p, want);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    if (*buf) host ? cudaFreeHost(*buf) : cudaFree(*buf);
    *buf = p;
    *have = want;
    return 0;
}

static int cu_sample(void *ctx, float *logits, int n, int vocab, const struct fg_sample_row *rows,
                     const int *history, int n_history, int *ids, float *logprobs) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->error[0]) return -1;
    size_t rows_b = align256(sizeof(*rows) * (size_t)n);
    size_t hist_b = align256(sizeof(int) * (size_t)(n_history > 0 ? n_history : 1));
    size_t out_b = align256((sizeof(int) + sizeof(float)) * (size_t)n);
    size_t ws_b = align256(fg_sample_workspace_bytes(n, vocab));
    /* the previous step's copies are complete: every call ends with a synchronize */
    if (grow(&c->smp_dev, &c->smp_dev_bytes, rows_b + hist_b + out_b + ws_b, 0) != 0 ||
        grow(&c->smp_host, &c->smp_host_bytes, rows_b + hist_b + out_b, 1) != 0) {
        ctx_fail(c, "out of memory for sampling %d rows", n);
        return -1;
    }
    char *hb = (char *)c->smp_host, *db = (char *)c->smp_dev;
    memcpy(hb, rows, sizeof(*rows) * (size_t)n);
    if (n_history > 0) memcpy(hb + rows_b, history, sizeof(int) * (size_t)n_history);
    CK(c, cudaMemcpyAsync(db, hb, rows_b + (n_history > 0 ? hist_b : 0), cudaMemcpyHostToDevice,
                          c->stream));
    int *d_ids = (int *)(db + rows_b + hist_b);
    float *d_lp = (float *)(d_ids + n);
    char err[256];
    if (!c->error[0] &&
        fg_sample_launch(logits, n, vocab, (const struct fg_sample_row *)db,
                         (const int *)(db + rows_b), d_ids, d_lp, db + rows_b + hist_b + out_b,
                         c->stream, err, sizeof(err)) != 0)
        ctx_fail(c, "sample: %s", err);
    CK(c, cudaMemcpyAsync(hb + rows_b + hist_b, d_ids, (sizeof(int) + sizeof(float)) * (size_t)n,
                          cudaMemcpyDeviceToHost, c->stream));
    CK(c, cudaStreamSynchronize(c->stream));
    if (c->error[0]) return -1;
    memcpy(ids, hb + rows_b + hist_b, sizeof(int) * (size_t)n);
    memcpy(logprobs, hb + rows_b + hist_b + sizeof(int) * (size_t)n, sizeof(float) * (size_t)n);
    return 0;
}

static int cu_mask_logits(void *ctx, float *logits, int n, int vocab, const uint32_t *masks,
                          size_t words, const int *use, int n_mask) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->error[0]) return -1;
    int m = 0;
    for (int i = 0; i < n; i++)
        m += use[i] != 0;
    if (m == 0) return 0;
    size_t rows_b = align256(sizeof(int) * (size_t)m);
    size_t total = rows_b + sizeof(uint32_t) * words * (size_t)m;
    if (grow(&c->msk_dev, &c->msk_dev_bytes, total, 0) != 0 ||
        grow(&c->msk_host, &c->msk_host_bytes, total, 1) != 0) {
        ctx_fail(c, "out of memory for the masks of %d rows", m);
        return -1;
    }
    int *h_rows = (int *)c->msk_host;
    uint32_t *h_masks = (uint32_t *)((char *)c->msk_host + rows_b);
    for (int i = 0, k = 0; i < n; i++)
        if (use[i]) {
            h_rows[k] = i;
            memcpy(h_masks + (size_t)k++ * words, masks + (size_t)i * words,
                   sizeof(uint32_t) * words);
        }
    CK(c, cudaMemcpyAsync(c->msk_dev, c->msk_host, total, cudaMemcpyHostToDevice, c->stream));
    char err[256];
    if (!c->error[0] && fg_mask_launch(logits, vocab, (const int *)c->msk_dev,
                                       (const uint32_t *)((char *)c->msk_dev + rows_b), m, words,
                                       n_mask, c->stream, err, sizeof(err)) != 0)
        ctx_fail(c, "%s", err);
    return c->error[0] ? -1 : 0;
}

static int cu_bias_logits(void *ctx, float *logits, int n, int vocab,
                          const struct fg_logit_delta *d, int n_deltas) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->error[0]) return -1;
    if (n_deltas <= 0) return 0;
    size_t bytes = sizeof(*d) * (size_t)n_deltas;
    if (grow(&c->bia_dev, &c->bia_dev_bytes, bytes, 0) != 0 ||
        grow(&c->bia_host, &c->bia_host_bytes, bytes, 1) != 0) {
        ctx_fail(c, "out of memory for %d logit deltas", n_deltas);
        return -1;
    }
    memcpy(c->bia_host, d, bytes);
    CK(c, cudaMemcpyAsync(c->bia_dev, c->bia_host, bytes, cudaMemcpyHostToDevice, c->stream));
    char err[256];
    if (!c->error[0] && fg_bias_launch(logits, n, vocab, (const struct fg_logit_delta *)c->bia_dev,
                                       n_deltas, c->stream, err, sizeof(err)) != 0)
        ctx_fail(c, "%s", err);
    return c->error[0] ? -1 : 0;
}

/* Only the rows that ask (k > 0) are launched; their results are scattered back. */
static int cu_top_logprobs(void *ctx, const float *logits, int n, int vocab, const int *k, int *ids,
                           float *lps) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->error[0]) return -1;
    int m = 0;
    for (int i = 0; i < n; i++)
        m += k[i] > 0;
    if (m == 0) return 0;
    size_t in_b = align256(2 * sizeof(int) * (size_t)m);
    size_t out_b = (sizeof(int) + sizeof(float)) * FG_TOP_MAX * (size_t)m;
    if (grow(&c->top_dev, &c->top_dev_bytes, in_b + out_b, 0) != 0 ||
        grow(&c->top_host, &c->top_host_bytes, in_b + out_b, 1) != 0) {
        ctx_fail(c, "out of memory for the top logprobs of %d rows", m);
        return -1;
    }
    int *h_rows = (int *)c->top_host, *h_k = h_rows + m;
    for (int i = 0, j = 0; i < n; i++)
        if (k[i] > 0) {
            h_rows[j] = i;
            h_k[j++] = k[i];
        }
    char *db = (char *)c->top_dev, *hb = (char *)c->top_host;
    CK(c, cudaMemcpyAsync(db, hb, 2 * sizeof(int) * (size_t)m, cudaMemcpyHostToDevice, c->stream));
    int *d_ids = (int *)(db + in_b);
    float *d_lps = (float *)(d_ids + FG_TOP_MAX * (size_t)m);
    char err[256];
    if (!c->error[0] && fg_top_launch(logits, vocab, (const int *)db, (const int *)db + m, m, d_ids,
                                      d_lps, c->stream, err, sizeof(err)) != 0)
        ctx_fail(c, "%s", err);
    CK(c, cudaMemcpyAsync(hb + in_b, d_ids, out_b, cudaMemcpyDeviceToHost, c->stream));
    CK(c, cudaStreamSynchronize(c->stream));
    if (c->error[0]) return -1;
    const int *o_ids = (const int *)(hb + in_b);
    const float *o_lps = (const float *)(o_ids + FG_TOP_MAX * (size_t)m);
    for (int j = 0; j < m; j++) {
        memcpy(ids + (size_t)h_rows[j] * FG_TOP_MAX, o_ids + (size_t)j * FG_TOP_MAX,
               sizeof(int) * FG_TOP_MAX);
        memcpy(lps + (size_t)h_rows[j] * FG_TOP_MAX, o_lps + (size_t)j * FG_TOP_MAX,
               sizeof(float) * FG_TOP_MAX);
    }
    return 0;
}

/* ---- graphs ------------------------------------------------------------------------------ */

static int cu_graph_begin(void *ctx) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    /* Relaxed: cuBLASLt and the attention launcher make host-side calls (attribute queries)
     * while the stream records; none of them touches the stream. */
    CK(c, cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeRelaxed));
    c->skip = skip_parse(getenv("FLASHGEN_SKIP"));
    const char *gs = getenv("FLASHGEN_GRAPH_SPLITS");
    c->graph_splits = gs ? atoi(gs) : 0;
    c->n_madd = 0;
    return c->error[0] ? -1 : 0;
}

static int cu_graph_end(void *ctx, void **graph) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    cudaGraph_t g = NULL;
    cudaGraphExec_t ge = NULL;
    *graph = NULL;
    c->skip = 0;
    c->graph_splits = 0;
    CK(c, cudaStreamEndCapture(c->stream, &g));
    if (!c->error[0]) CK(c, cudaGraphInstantiate(&ge, g, 0));
    if (g) cudaGraphDestroy(g);
    if (c->error[0]) return -1;
    *graph = ge;
    return 0;
}

static int cu_graph_launch(void *ctx, void *graph) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    CK(c, cudaGraphLaunch((cudaGraphExec_t)graph, c->stream));
    return c->error[0] ? -1 : 0;
}

static void cu_graph_free(void *ctx, void *graph) {
    (void)ctx;
    if (graph) cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

/* ---- context ----------------------------------------------------------------------------- */

static void cu_destroy(void *ctx) {
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (!c) return;
    for (int i = 0; i < c->n_plans; i++) {
        cublasLtMatmulDescDestroy(c->plans[i].desc);
        cublasLtMatrixLayoutDestroy(c->plans[i].a);
        cublasLtMatrixLayoutDestroy(c->plans[i].b);
        cublasLtMatrixLayoutDestroy(c->plans[i].c);
    }
    up_stage_free(c->up);
    if (c->q_stage) cudaFree(c->q_stage);
    fg_fp8_weights_free(c->fp8);
    if (c->attn_ws) cudaFree(c->attn_ws);
    if (c->smp_dev) cudaFree(c->smp_dev);
    if (c->smp_host) cudaFreeHost(c->smp_host);
    if (c->msk_dev) cudaFree(c->msk_dev);
    if (c->msk_host) cudaFreeHost(c->msk_host);
    if (c->bia_dev) cudaFree(c->bia_dev);
    if (c->bia_host) cudaFreeHost(c->bia_host);
    if (c->top_dev) cudaFree(c->top_dev);
    if (c->top_host) cudaFreeHost(c->top_host);
    for (int i = 0; i < c->n_retired; i++)
        cudaFree(c->retired[i]);
    if (c->lt_workspace) cudaFree(c->lt_workspace);
    if (c->lt) cublasLtDestroy(c->lt);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

static void *cu_create(int device, char *err, size_t errlen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "no usable CUDA device: %s", cudaGetErrorString(e));
        return NULL;
    }
    if (device < 0 || device >= n) {
        snprintf(err, errlen, "CUDA device %d does not exist (%d found)", device, n);
        return NULL;
    }
    cudaDeviceProp prop;
    if (cudaSetDevice(device) != cudaSuccess ||
        cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
        snprintf(err, errlen, "cannot open CUDA device %d", device);
        return NULL;
    }
    if (prop.major < 9) {
        snprintf(err, errlen, "CUDA device %d (%s) is sm_%d%d; flashgen's kernels need sm_90",
                 device, prop.name, prop.major, prop.minor);
        return NULL;
    }
    struct cuda_ctx *c = (struct cuda_ctx *)calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->device = device;
    snprintf(c->name, sizeof(c->name), "%s", prop.name);
    const char *kind = getenv("FLASHGEN_ATTN_KIND"), *splits = getenv("FLASHGEN_DECODE_SPLITS");
    c->attn_kind = kind && !strcmp(kind, "prefill")  ? ATTN_KIND_PREFILL
                   : kind && !strcmp(kind, "decode") ? ATTN_KIND_DECODE
                                                     : ATTN_KIND_AUTO;
    c->decode_splits = splits ? atoi(splits) : 0;
    const char *early = getenv("FLASHGEN_DATTN_EARLY");
    c->dattn_early = early && !strcmp(early, "1");
    const char *gemv = getenv("FLASHGEN_GEMV"), *inv = getenv("FLASHGEN_BATCH_INVARIANT");
    c->use_gemv = !(gemv && !strcmp(gemv, "0"));
    const char *qrows = getenv("FLASHGEN_QGEMV_ROWS");
    c->qgemv_rows = qrows ? atoi(qrows) : 0;
    const char *qgemm = getenv("FLASHGEN_QGEMM_ROWS");
    c->qgemm_rows = qgemm ? atoi(qgemm) : FG_QGEMM_MAX_ROWS;
    /* Batch-invariant mode (off by default: it costs speed): every product through one cuBLASLt
     * algorithm per weight shape without split-K (no GEMV, whose summation order differs from
     * cuBLASLt's), attention kernel by query count, a fixed decode split count. Sampling and the
     * elementwise kernels are per row already. */
    c->batch_invariant = inv && !strcmp(inv, "1");
    if (c->batch_invariant) {
        c->use_gemv = 0;
        if (c->decode_splits <= 0) c->decode_splits = 16;
    }
    if (cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking) != cudaSuccess ||
        cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS ||
        cudaMalloc(&c->lt_workspace, LT_WORKSPACE_BYTES) != cudaSuccess) {
        snprintf(err, errlen, "cannot create the CUDA stream, cuBLASLt handle or workspace");
        cu_destroy(c);
        return NULL;
    }
    /* FLASHGEN_QUANTIZATION=fp8: the F16 / BF16 / F32 weights upload_rows stores also get an
     * e4m3 copy with per-row scales when the load is over, and the products use it (try_fp8) */
    const char *qz = getenv("FLASHGEN_QUANTIZATION");
    if (qz && *qz && strcmp(qz, "none") != 0) {
        if (strcmp(qz, "fp8") != 0) {
            snprintf(err, errlen, "FLASHGEN_QUANTIZATION=%s: expected none or fp8", qz);
            cu_destroy(c);
            return NULL;
        }
        c->fp8 = fg_fp8_weights_create();
        if (!c->fp8) {
            snprintf(err, errlen, "FLASHGEN_QUANTIZATION=fp8: cannot create the FP8 GEMM context");
            cu_destroy(c);
            return NULL;
        }
    }
    return c;
}

static int cu_mem_info(void *ctx, size_t *free_bytes, size_t *total_bytes) {
    (void)ctx;
    return cudaMemGetInfo(free_bytes, total_bytes) == cudaSuccess ? 0 : -1;
}

static const char *cu_device_name(void *ctx) {
    return ((struct cuda_ctx *)ctx)->name;
}

static const char *cu_last_error(void *ctx) {
    return ((struct cuda_ctx *)ctx)->error;
}

static struct fg_ops make_table(void) {
    struct fg_ops t;
    memset(&t, 0, sizeof(t));
    t.name = "cuda";
    t.act_size = 2;
    t.alloc = cu_alloc;
    t.release = cu_release;
    t.upload = cu_upload;
    t.download = cu_download;
    t.sync = cu_sync;
    t.copy = cu_copy;
    t.upload_f32 = cu_upload_f32;
    t.upload_rows = cu_upload_rows;
    t.embed = cu_embed;
    t.rmsnorm = cu_rmsnorm_op;
    t.matmul = cu_matmul;
    t.matmul_f32 = cu_matmul_f32;
    t.attention = cu_attention;
    t.gather_rows = cu_gather_rows;
    t.graph_begin = cu_graph_begin;
    t.graph_end = cu_graph_end;
    t.graph_launch = cu_graph_launch;
    t.graph_free = cu_graph_free;
    t.matmul_add = cu_matmul_add;
    t.matmul_swiglu = cu_matmul_swiglu;
    t.qkv_store = cu_qkv_store;
    t.norm_matmul = cu_norm_matmul;
    t.sample = cu_sample;
    t.add_rows = cu_add_rows;
    t.head_norm = cu_head_norm;
    t.attention_window = cu_attention_window;
    t.norm_add = cu_norm_add;
    t.geglu = cu_geglu;
    t.scale = cu_scale;
    t.softcap = cu_softcap;
    t.mask_logits = cu_mask_logits;
    t.bias_logits = cu_bias_logits;
    t.top_logprobs = cu_top_logprobs;
    t.qembed = cu_qembed;
    t.qresident_bytes = cu_qresident_bytes;
    t.qupload = cu_qupload;
    t.qlinear = cu_qlinear;
    return t;
}

static const struct fg_ops cuda_table = make_table();

static const struct fg_cuda_backend backend = {
    FG_CUDA_BACKEND_ABI, &cuda_table,    cu_create,     cu_destroy,
    cu_mem_info,         cu_device_name, cu_last_error,
};

extern "C" __attribute__((visibility("default"))) const struct fg_cuda_backend *
fg_cuda_backend(void) {
    return &backend;
}

/* Tensor parallelism over several GPUs (model/tp.h, model/tp_nccl.c), outside the op table so its
 * ABI stays as it is: the stream a context queues on (NCCL's collectives join it there), and
 * making a context's device the calling thread's current one (the worker issues to every GPU in
 * turn; allocations and launches go to the current device). */
extern "C" __attribute__((visibility("default"))) void *fg_cuda_stream(void *ctx) {
    return (void *)((struct cuda_ctx *)ctx)->stream;
}

extern "C" __attribute__((visibility("default"))) int fg_cuda_activate(void *ctx) {
    return cudaSetDevice(((struct cuda_ctx *)ctx)->device) == cudaSuccess ? 0 : -1;
}
