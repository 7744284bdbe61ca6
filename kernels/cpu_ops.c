/* cpu_ops.c — the CPU backend: every op of kernels/ops.h in plain C, fp32 throughout, including
 * the family ops (biases, QK-norm, post-norms, GeGLU, sliding windows, scales, soft-capping) the
 * CUDA backend does not have yet.
 *
 * These functions are also the references the CUDA kernels are tested against, so they favour
 * plain loops over cleverness. Two places are tuned because they dominate run time: the matmul
 * (parallel over output rows, four tokens per weight-row pass so each weight byte is read once
 * per four tokens; dot products in 8-wide vectors, cloned for AVX2+FMA where the CPU has it) and
 * the attention (kernels/cpu_attn.c: flash-style tiles over the paged cache, AVX2/AVX-512 chosen
 * at run time; tests/unit/test_ops.c keeps an fp64 dense oracle). Weights kept in their GGUF blocks
 * go through qmatmul/qembed to kernels/cpu_quant.c (block dot products on per-block quantized
 * activations).
 */
#include "ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_attn.h"
#include "cpu_pool.h"
#include "cpu_quant.h"
#include "model/gguf_quant.h"
#include "sample_ref.h"

struct cpu_ctx {
    struct cpu_pool *pool;
    enum cq_isa isa;     /* the block-product and attention variant (cq_isa_best at create) */
    void *qscratch;      /* quantized activations of one qmatmul, grown on demand */
    size_t qscratch_cap; /* its bytes */
};

/* ---- memory ------------------------------------------------------------------------------ */

static void *cpu_alloc(void *ctx, size_t bytes) {
    (void)ctx;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
    return p;
}

static void cpu_release(void *ctx, void *p) {
    (void)ctx;
    free(p);
}

static int cpu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx;
    if (bytes) memmove(dst, src, bytes);
    return 0;
}

static int cpu_upload_f32(void *ctx, void *dst, const float *src, size_t n) {
    return cpu_copy(ctx, dst, src, n * sizeof(float));
}

/* The twin of the CUDA backend's upload_rows, in fp32: each row of W converted at its Hugging
 * Face place (GGUF llama row h*d + 2j + k is HF row h*d + j + k*d/2, d = rows / perm_heads). */
static int cpu_upload_rows(void *ctx, void *dst, const struct fg_qtensor *w, int perm_heads) {
    (void)ctx;
    if (!w) return 0; /* the end of a load: nothing is staged here */
    int d = perm_heads > 0 ? w->rows / perm_heads : 0;
    for (int r = 0; r < w->rows; r++) {
        int hf = d ? r / d * d + (r % d) / 2 + (r % d) % 2 * (d / 2) : r;
        if (gguf_dequantize(w->type, (const char *)w->data + (size_t)r * w->row_bytes,
                            (float *)dst + (size_t)hf * w->cols, (uint64_t)w->cols))
            return -1;
    }
    return 0;
}

static int cpu_sync(void *ctx) {
    (void)ctx;
    return 0;
}

/* ---- elementwise ------------------------------------------------------------------------- */

static void cpu_embed(void *ctx, void *xv, const void *tablev, const int *tokens, int n, int dim) {
    (void)ctx;
    float *x = xv;
    const float *table = tablev;
    for (int t = 0; t < n; t++)
        memcpy(x + (size_t)t * dim, table + (size_t)tokens[t] * dim, sizeof(float) * (size_t)dim);
}

static void cpu_rmsnorm(void *ctx, void *outv, const void *xv, const void *wv, int n, int dim,
                        float eps) {
    (void)ctx;
    float *out = outv;
    const float *x = xv, *w = wv;
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * dim;
        float *o = out + (size_t)t * dim;
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / dim + eps));
        for (int i = 0; i < dim; i++)
            o[i] = xr[i] * inv * w[i];
    }
}

static void cpu_swiglu(void *ctx, void *outv, const void *gv, const void *uv, size_t n) {
    (void)ctx;
    float *out = outv;
    const float *g = gv, *u = uv;
    for (size_t i = 0; i < n; i++)
        out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void cpu_add(void *ctx, void *xv, const void *yv, size_t n) {
    (void)ctx;
    float *x = xv;
    const float *y = yv;
    for (size_t i = 0; i < n; i++)
        x[i] += y[i];
}

static void cpu_gather_rows(void *ctx, void *dstv, const void *srcv, const int *rows, int n_rows,
                            int dim) {
    (void)ctx;
    float *dst = dstv;
    const float *src = srcv;
    for (int r = 0; r < n_rows; r++)
        memmove(dst + (size_t)r * dim, src + (size_t)rows[r] * dim, sizeof(float) * (size_t)dim);
}

/* rotate_half RoPE: pairs (i, i + d/2) of each head turn by pos * freqs[i]. */
static void rope_rows(float *x, int n_heads, int head_dim, int pos, const float *freqs) {
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        float angle = (float)pos * freqs[i];
        float c = cosf(angle), s = sinf(angle);
        for (int h = 0; h < n_heads; h++) {
            float *r = x + (size_t)h * head_dim;
            float a = r[i], b = r[i + half];
            r[i] = a * c - b * s;
            r[i + half] = b * c + a * s;
        }
    }
}

static void cpu_rope(void *ctx, void *qv, void *kv, const int *pos, int n, int n_heads,
                     int n_kv_heads, int head_dim, const void *freqsv) {
    (void)ctx;
    float *q = qv, *k = kv;
    const float *freqs = freqsv;
    for (int t = 0; t < n; t++) {
        rope_rows(q + (size_t)t * n_heads * head_dim, n_heads, head_dim, pos[t], freqs);
        rope_rows(k + (size_t)t * n_kv_heads * head_dim, n_kv_heads, head_dim, pos[t], freqs);
    }
}

static void cpu_kv_write(void *ctx, void *k_pool, void *v_pool, const void *k, const void *v,
                         const int *slots, int n, int kv_dim) {
    (void)ctx;
    float *kp = k_pool, *vp = v_pool;
    const float *kr = k, *vr = v;
    for (int t = 0; t < n; t++) {
        memcpy(kp + (size_t)slots[t] * kv_dim, kr + (size_t)t * kv_dim, sizeof(float) * kv_dim);
        memcpy(vp + (size_t)slots[t] * kv_dim, vr + (size_t)t * kv_dim, sizeof(float) * kv_dim);
    }
}

static void cpu_qkv_store(void *ctx, void *q_out, void *k_pool, void *v_pool, const void *qkvv,
                          const int *pos, const int *slots, int n, int n_heads, int n_kv_heads,
                          int head_dim, const void *freqs) {
    (void)ctx;
    size_t qd = (size_t)n_heads * head_dim, kvd = (size_t)n_kv_heads * head_dim;
    const float *qkv = qkvv;
    float *q = q_out, *kp = k_pool, *vp = v_pool;
    for (int t = 0; t < n; t++) {
        const float *row = qkv + (size_t)t * (qd + 2 * kvd);
        float *qr = q + (size_t)t * qd, *kr = kp + (size_t)slots[t] * kvd;
        memcpy(qr, row, sizeof(float) * qd);
        memcpy(kr, row + qd, sizeof(float) * kvd);
        memcpy(vp + (size_t)slots[t] * kvd, row + qd + kvd, sizeof(float) * kvd);
        rope_rows(qr, n_heads, head_dim, pos[t], freqs);
        rope_rows(kr, n_kv_heads, head_dim, pos[t], freqs);
    }
}

/* ---- matmul ------------------------------------------------------------------------------ */

typedef float v8f __attribute__((vector_size(32)));

#define V8F_SUM(v) (((v)[0] + (v)[1]) + ((v)[2] + (v)[3]) + (((v)[4] + (v)[5]) + ((v)[6] + (v)[7])))

/* Four dot products of one weight row w (len k) with rows x0..x3. */
__attribute__((target_clones("arch=x86-64-v3", "default"))) static void
dot4(const float *w, const float *x0, const float *x1, const float *x2, const float *x3, int k,
     float *out) {
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int i = 0;
    for (; i + 8 <= k; i += 8) {
        v8f wv, xv;
        memcpy(&wv, w + i, sizeof wv);
        memcpy(&xv, x0 + i, sizeof xv);
        a0 += wv * xv;
        memcpy(&xv, x1 + i, sizeof xv);
        a1 += wv * xv;
        memcpy(&xv, x2 + i, sizeof xv);
        a2 += wv * xv;
        memcpy(&xv, x3 + i, sizeof xv);
        a3 += wv * xv;
    }
    float s0 = V8F_SUM(a0), s1 = V8F_SUM(a1), s2 = V8F_SUM(a2), s3 = V8F_SUM(a3);
    for (; i < k; i++) {
        s0 += w[i] * x0[i];
        s1 += w[i] * x1[i];
        s2 += w[i] * x2[i];
        s3 += w[i] * x3[i];
    }
    out[0] = s0;
    out[1] = s1;
    out[2] = s2;
    out[3] = s3;
}

/* One dot product of w with x (the decode case: one token). */
__attribute__((target_clones("arch=x86-64-v3", "default"))) static float
dot1(const float *w, const float *x, int k) {
    v8f a0 = {0}, a1 = {0};
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        v8f wv, xv;
        memcpy(&wv, w + i, sizeof wv);
        memcpy(&xv, x + i, sizeof xv);
        a0 += wv * xv;
        memcpy(&wv, w + i + 8, sizeof wv);
        memcpy(&xv, x + i + 8, sizeof xv);
        a1 += wv * xv;
    }
    a0 += a1;
    float s = V8F_SUM(a0);
    for (; i < k; i++)
        s += w[i] * x[i];
    return s;
}

struct matmul_job {
    float *out;
    const float *x, *w;
    int n, in_dim, out_dim;
    int accumulate; /* out += product instead of out = product */
};

static inline void matmul_put(const struct matmul_job *j, size_t at, float v) {
    j->out[at] = j->accumulate ? j->out[at] + v : v;
}

/* Tokens per block: a block of x rows (64 × up to 1536 floats, ≤ 393 KB) stays in L2 while a
 * thread's weight rows stream past it, instead of the whole prompt's x (3 MB at 512 × 1536)
 * spilling out of cache once per weight row. */
#define MATMUL_TOKEN_BLOCK 64

static void matmul_rows(void *arg, size_t begin, size_t end) {
    const struct matmul_job *j = arg;
    float r[4];
    size_t in = (size_t)j->in_dim;
    for (int t0 = 0; t0 < j->n; t0 += MATMUL_TOKEN_BLOCK) {
        int t1 = t0 + MATMUL_TOKEN_BLOCK < j->n ? t0 + MATMUL_TOKEN_BLOCK : j->n;
        for (size_t o = begin; o < end; o++) {
            const float *wr = j->w + o * in;
            int t = t0;
            for (; t + 4 <= t1; t += 4) {
                const float *x0 = j->x + (size_t)t * in;
                dot4(wr, x0, x0 + in, x0 + 2 * in, x0 + 3 * in, j->in_dim, r);
                for (int u = 0; u < 4; u++)
                    matmul_put(j, (size_t)(t + u) * j->out_dim + o, r[u]);
            }
            for (; t < t1; t++)
                matmul_put(j, (size_t)t * j->out_dim + o,
                           dot1(wr, j->x + (size_t)t * in, j->in_dim));
        }
    }
}

static void cpu_matmul(void *ctx, void *out, const void *x, const void *w, int n, int in_dim,
                       int out_dim) {
    struct cpu_ctx *c = ctx;
    struct matmul_job j = {out, x, w, n, in_dim, out_dim, 0};
    cpu_pool_for(c ? c->pool : NULL, (size_t)out_dim, 16, matmul_rows, &j);
}

static void cpu_matmul_add(void *ctx, void *x, const void *h, const void *w, int n, int in_dim,
                           int out_dim) {
    struct cpu_ctx *c = ctx;
    struct matmul_job j = {x, h, w, n, in_dim, out_dim, 1};
    cpu_pool_for(c ? c->pool : NULL, (size_t)out_dim, 16, matmul_rows, &j);
}

static void cpu_matmul_swiglu(void *ctx, void *outv, const void *h, const void *w, int n,
                              int in_dim, int ffn, void *scratch) {
    cpu_matmul(ctx, scratch, h, w, n, in_dim, 2 * ffn);
    float *out = outv;
    const float *gu = scratch;
    for (int t = 0; t < n; t++)
        cpu_swiglu(NULL, out + (size_t)t * ffn, gu + (size_t)t * 2 * ffn,
                   gu + (size_t)t * 2 * ffn + ffn, (size_t)ffn);
}

static void cpu_matmul_f32(void *ctx, float *out, const void *x, const void *w, int n, int in_dim,
                           int out_dim) {
    cpu_matmul(ctx, out, x, w, n, in_dim, out_dim);
}

/* ---- attention (kernels/cpu_attn.c: tiled, online softmax, vectorized, threaded) --------- */

static void cpu_attention(void *ctx, void *out, const void *q, const void *k_pool,
                          const void *v_pool, const struct attn_batch *b) {
    struct cpu_ctx *c = ctx;
    /* no error path in a void op: rows without scratch memory come out NaN */
    (void)cpu_attn(c ? c->pool : NULL, c ? c->isa : cq_isa_best(), out, q, k_pool, v_pool, b, 0);
}

static void cpu_attention_window(void *ctx, void *out, const void *q, const void *k_pool,
                                 const void *v_pool, const struct attn_batch *b, int window) {
    struct cpu_ctx *c = ctx;
    (void)cpu_attn(c ? c->pool : NULL, c ? c->isa : cq_isa_best(), out, q, k_pool, v_pool, b,
                   window);
}

static void cpu_norm_matmul(void *ctx, void *out, void *h, const void *x, const void *norm_w,
                            float eps, const void *w, int n, int in_dim, int out_dim, int swiglu,
                            void *scratch) {
    cpu_rmsnorm(ctx, h, x, norm_w, n, in_dim, eps);
    if (swiglu)
        cpu_matmul_swiglu(ctx, out, h, w, n, in_dim, out_dim, scratch);
    else
        cpu_matmul(ctx, out, h, w, n, in_dim, out_dim);
}

/* ---- the family switches' ops (Qwen2, Gemma 3) ------------------------------------------- */

static void cpu_add_rows(void *ctx, void *xv, const void *bv, int n, int dim) {
    (void)ctx;
    float *x = xv;
    const float *b = bv;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < dim; i++)
            x[(size_t)t * dim + i] += b[i];
}

/* RMSNorm of one head vector in place. */
static void norm_head(float *x, const float *w, int d, float eps) {
    double ss = 0;
    for (int i = 0; i < d; i++)
        ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / d + eps));
    for (int i = 0; i < d; i++)
        x[i] = x[i] * inv * w[i];
}

static void cpu_head_norm(void *ctx, void *qkvv, const void *q_w, const void *k_w, int n,
                          int n_heads, int n_kv_heads, int head_dim, float eps) {
    (void)ctx;
    float *qkv = qkvv;
    size_t row = (size_t)(n_heads + 2 * n_kv_heads) * head_dim;
    for (int t = 0; t < n; t++) {
        float *r = qkv + (size_t)t * row;
        for (int h = 0; h < n_heads + n_kv_heads; h++)
            norm_head(r + (size_t)h * head_dim, h < n_heads ? q_w : k_w, head_dim, eps);
    }
}

static void cpu_norm_add(void *ctx, void *xv, const void *yv, const void *wv, int n, int dim,
                         float eps) {
    (void)ctx;
    float *x = xv;
    const float *y = yv, *w = wv;
    for (int t = 0; t < n; t++) {
        const float *yr = y + (size_t)t * dim;
        float *xr = x + (size_t)t * dim;
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)yr[i] * yr[i];
        float inv = (float)(1.0 / sqrt(ss / dim + eps));
        for (int i = 0; i < dim; i++)
            xr[i] += yr[i] * inv * w[i];
    }
}

/* gelu with the tanh approximation (torch's gelu(approximate="tanh")) */
static float gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

static void cpu_geglu(void *ctx, void *outv, const void *guv, int n, int ffn) {
    (void)ctx;
    float *out = outv;
    const float *gu = guv;
    for (int t = 0; t < n; t++) {
        const float *g = gu + (size_t)t * 2 * ffn, *u = g + ffn;
        float *o = out + (size_t)t * ffn;
        for (int i = 0; i < ffn; i++)
            o[i] = gelu_tanh(g[i]) * u[i];
    }
}

static void cpu_scale(void *ctx, void *xv, size_t n, float s) {
    (void)ctx;
    float *x = xv;
    for (size_t i = 0; i < n; i++)
        x[i] *= s;
}

static void cpu_softcap(void *ctx, float *x, size_t n, float cap) {
    (void)ctx;
    for (size_t i = 0; i < n; i++)
        x[i] = cap * tanhf(x[i] / cap);
}

/* ---- weights in GGUF blocks (kernels/cpu_quant.c) ---------------------------------------- */

static void cpu_qmatmul(void *ctx, float *out, size_t out_stride, const float *x,
                        const struct fg_qtensor *w, int n, int flags) {
    struct cpu_ctx *c = ctx;
    size_t need = cq_matmul_scratch_bytes(w, n);
    if (need > c->qscratch_cap) {
        void *p = realloc(c->qscratch, need);
        if (!p) { /* no error path in a void op: the rows become NaN, which the output shows */
            for (int t = 0; t < n; t++)
                for (int o = 0; o < w->rows; o++)
                    out[(size_t)t * out_stride + o] = NAN;
            return;
        }
        c->qscratch = p;
        c->qscratch_cap = need;
    }
    cq_matmul(c->pool, c->isa, w, x, n, out, out_stride, (flags & FG_QMM_ACCUMULATE) != 0,
              (flags & FG_QMM_PROMPT) != 0, c->qscratch);
}

static void cpu_qembed(void *ctx, void *xv, const struct fg_qtensor *table, const int *tokens,
                       int n) {
    (void)ctx;
    float *x = xv;
    for (int t = 0; t < n; t++)
        gguf_dequantize(table->type,
                        (const char *)table->data + (size_t)tokens[t] * table->row_bytes,
                        x + (size_t)t * table->cols, (uint64_t)table->cols);
}

/* ---- sampling: sample_ref_pick per row (kernels/sample_ref.c), the GPU kernel's twin ------- */

static int cpu_sample(void *ctx, float *logits, int n, int vocab, const struct fg_sample_row *rows,
                      const int *history, int n_history, int *ids, float *logprobs) {
    (void)ctx;
    (void)n_history;
    float *probs = malloc(sizeof(float) * (size_t)vocab);
    int *idx = malloc(sizeof(int) * (size_t)vocab);
    if (!probs || !idx) {
        free(probs);
        free(idx);
        return -1;
    }
    for (int i = 0; i < n; i++)
        ids[i] = sample_ref_pick(&rows[i], logits + (size_t)i * vocab, vocab, history, probs, idx,
                                 &logprobs[i]);
    free(probs);
    free(idx);
    return 0;
}

static int cpu_mask_logits(void *ctx, float *logits, int n, int vocab, const uint32_t *masks,
                           size_t words, const int *use, int n_mask) {
    (void)ctx;
    for (int i = 0; i < n; i++)
        if (use[i]) sample_ref_mask(logits + (size_t)i * vocab, vocab, masks + i * words, n_mask);
    return 0;
}

static int cpu_bias_logits(void *ctx, float *logits, int n, int vocab,
                           const struct fg_logit_delta *d, int n_deltas) {
    (void)ctx;
    sample_ref_bias(logits, n, vocab, d, n_deltas);
    return 0;
}

static int cpu_top_logprobs(void *ctx, const float *logits, int n, int vocab, const int *k,
                            int *ids, float *lps) {
    (void)ctx;
    for (int i = 0; i < n; i++)
        if (k[i] > 0)
            sample_ref_top(logits + (size_t)i * vocab, vocab, k[i], ids + (size_t)i * FG_TOP_MAX,
                           lps + (size_t)i * FG_TOP_MAX);
    return 0;
}

/* ---- table ------------------------------------------------------------------------------- */

static const struct fg_ops cpu_table = {
    .name = "cpu",
    .act_size = sizeof(float),
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .sync = cpu_sync,
    .upload_f32 = cpu_upload_f32,
    .upload_rows = cpu_upload_rows,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .matmul = cpu_matmul,
    .matmul_f32 = cpu_matmul_f32,
    .rope = cpu_rope,
    .kv_write = cpu_kv_write,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .gather_rows = cpu_gather_rows,
    .matmul_add = cpu_matmul_add,
    .matmul_swiglu = cpu_matmul_swiglu,
    .qkv_store = cpu_qkv_store,
    .norm_matmul = cpu_norm_matmul,
    .sample = cpu_sample,
    .qmatmul = cpu_qmatmul,
    .qembed = cpu_qembed,
    .add_rows = cpu_add_rows,
    .head_norm = cpu_head_norm,
    .attention_window = cpu_attention_window,
    .norm_add = cpu_norm_add,
    .geglu = cpu_geglu,
    .scale = cpu_scale,
    .softcap = cpu_softcap,
    .mask_logits = cpu_mask_logits,
    .bias_logits = cpu_bias_logits,
    .top_logprobs = cpu_top_logprobs,
};

const struct fg_ops *cpu_ops(void) {
    return &cpu_table;
}

void *cpu_ops_create(int n_threads) {
    struct cpu_ctx *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->pool = cpu_pool_create(n_threads);
    if (!c->pool) {
        free(c);
        return NULL;
    }
    c->isa = cq_isa_best();
    return c;
}

void cpu_ops_destroy(void *ctx) {
    struct cpu_ctx *c = ctx;
    if (!c) return;
    cpu_pool_destroy(c->pool);
    free(c->qscratch);
    free(c);
}
