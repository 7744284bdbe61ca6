/* ops.h — the op interface: every op of the forward pass as one table per backend.
 *
 * The forward pass (model/forward.c) is written once against this table. The CPU backend
 * (kernels/cpu_ops.c) implements each op in plain C with threads; it is also the reference the
 * CUDA kernels are tested against. All buffer arguments are backend memory (host memory for the
 * CPU, device memory for CUDA), including the small int arrays (tokens, positions, page tables);
 * use upload/download to move data. Activations are fp32 on the CPU backend.
 *
 * Norm weights are fp32 on every backend, whatever act_size is: rmsnorm's w, norm_matmul's norm_w,
 * struct fg_qlinear's norm_w, head_norm's q_w and k_w, norm_add's w (each (dim) or (head_dim)
 * floats, 16-byte aligned). They are few bytes, and Gemma 3's (1 + w) rounded to bf16 loses up to
 * 2^-8 per element, more than the bf16 forward pass's own error; the engine stores them with
 * upload (raw fp32), not upload_f32.
 *
 * Layouts (row-major, innermost last):
 *   x, out of token ops         (n_tokens, dim)
 *   weights of matmul           (out_dim, in_dim)  — y = x Wᵀ, like torch.nn.Linear
 *   q                           (n_tokens, n_heads, head_dim)
 *   k, v (new rows)             (n_tokens, n_kv_heads, head_dim)
 *   K/V page pool of one layer  (n_pages, page_size, n_kv_heads, head_dim)
 */
#ifndef FG_OPS_H
#define FG_OPS_H

#include <stddef.h>
#include <stdint.h>

/* A weight matrix kept in its GGUF blocks (CPU backend; kernels/cpu_quant.h multiplies it):
 * (rows, cols) = (out_dim, in_dim) like every matmul weight, each row cols / block whole blocks
 * of TYPE in row_bytes bytes, rows consecutive. A copy resident in backend memory (qupload) is in
 * LAYOUT instead, which says how data is to be read (row_bytes stays the file's). */
struct fg_qtensor {
    uint32_t type;    /* enum gguf_ggml_type (model/gguf_quant.h): Q8_0, Q4_1, Q4_K, ... */
    int rows, cols;   /* (out_dim, in_dim) */
    size_t row_bytes; /* gguf_type_row_bytes(type, cols) */
    const void *data; /* (rows, row_bytes) */
    /* enum fg_qlayout (below): host blocks are the file's rows, FG_QLAYOUT_ROWS (0, so that a
     * tensor initialized without it is one); a resident copy the layout qupload wrote */
    uint32_t layout;
};

/* A varlen batch of sequences whose keys and values live in a paged cache. Sequence s owns query
 * rows q_start[s] .. q_start[s+1]-1; those are its newest tokens, so query row i of s sits at
 * absolute position kv_len[s] - n_q(s) + i and (when causal) sees keys 0 .. that position. */
#define FG_QMM_ACCUMULATE 1 /* fg_ops.qmatmul flags */
#define FG_QMM_PROMPT 2

struct attn_batch {
    int n_seqs;
    const int *q_start;     /* (n_seqs + 1) cumulative query offsets */
    const int *kv_len;      /* (n_seqs) tokens in the cache for each sequence, new ones included */
    const int *block_table; /* (n_seqs, max_pages) page ids, row stride max_pages */
    int max_pages;
    int page_size;
    int n_heads, n_kv_heads, head_dim;
    float scale; /* usually 1/sqrt(head_dim) */
    int causal;
    int max_q_len, max_kv_len; /* maxima over the batch, for launch shapes (host values) */
    /* Host copies of q_start and kv_len, for backends that plan launches on the host; may be
     * NULL on the CPU backend, which reads the arrays above directly. */
    const int *host_q_start, *host_kv_len;
};

/* A product on weights resident in the backend's quantized layout (fg_ops.qlinear):
 * out = epilogue(h · Wᵀ), h = rmsnorm(x; norm_w, eps) when norm_w, else x. Activations in the
 * backend's element type; W (w->rows, w->cols) = (out rows, in_dim) with w->data backend memory
 * written by qupload (w->row_bytes unused). */
enum fg_ql_epilogue {
    FG_QL_STORE = 0, /* out (n, w->rows) = h · Wᵀ */
    FG_QL_ADD = 1,   /* out (n, w->rows) += h · Wᵀ: a projection into the residual stream */
    FG_QL_SWIGLU = 2, /* out (n, w->rows / 2) = silu(h · gateᵀ) * (h · upᵀ): W gate rows then up */
    FG_QL_STORE_F32 = 3, /* out (n, w->rows) fp32 = h · Wᵀ (the logits) */
};
struct fg_qlinear {
    void *out;
    const void *x;      /* (n, w->cols) */
    const void *norm_w; /* (w->cols) fp32 RMSNorm weight in front, or NULL */
    float eps;
    void *h; /* (n, w->cols): the normed x where the backend materialises it; not read after */
    const struct fg_qtensor *w;
    int n;
    int epilogue;      /* enum fg_ql_epilogue */
    void *act_scratch; /* (n, w->rows) activations, for SWIGLU where the backend needs them */
    /* bf16 scratch the backend may dequantize W into for row counts past its GEMV (NULL or too
     * small for W: the GEMV runs in slices of rows) */
    void *w_scratch;
    size_t w_scratch_bytes;
    /* out's row stride in elements for FG_QL_STORE and FG_QL_STORE_F32: 0 (or w->rows) for
     * packed rows, more where the product fills columns of a wider matrix (a q|k|v of mixed block
     * types, one part at a time, out pointing at the part's first column) */
    int ld_out;
};

struct fg_sample_row;  /* kernels/sample.h */
struct fg_logit_delta; /* kernels/logit_mask.h */

struct fg_ops {
    const char *name; /* "cpu", "cuda" */
    /* bytes per activation, weight and KV element: 4 (fp32) CPU, 2 (bf16) CUDA; norm weights are
     * fp32 on both (see the top of this file) */
    size_t act_size;

    void *(*alloc)(void *ctx, size_t bytes); /* NULL on failure */
    void (*release)(void *ctx, void *p);     /* accepts NULL */
    int (*upload)(void *ctx, void *dst, const void *src, size_t bytes);
    int (*download)(void *ctx, void *dst, const void *src, size_t bytes);
    int (*sync)(void *ctx); /* wait for queued work; returns -1 on a device error */
    /* dst = src, both backend memory, queued in order with the ops (a KV page copied on write) */
    int (*copy)(void *ctx, void *dst, const void *src, size_t bytes);
    /* store n fp32 host values at dst (backend memory) in the backend's element type */
    int (*upload_f32)(void *ctx, void *dst, const float *src, size_t n);

    /* x[t] = table[tokens[t]] */
    void (*embed)(void *ctx, void *x, const void *table, const int *tokens, int n, int dim);
    /* out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w, w (dim) fp32 */
    void (*rmsnorm)(void *ctx, void *out, const void *x, const void *w, int n, int dim, float eps);
    /* out (n, out_dim) = x (n, in_dim) · wᵀ, w (out_dim, in_dim) */
    void (*matmul)(void *ctx, void *out, const void *x, const void *w, int n, int in_dim,
                   int out_dim);
    /* the same product written as fp32 whatever act_size is (the logits) */
    void (*matmul_f32)(void *ctx, float *out, const void *x, const void *w, int n, int in_dim,
                       int out_dim);
    /* rotate_half RoPE in place on q and k at absolute positions pos[t]; freqs (head_dim/2) fp32 */
    void (*rope)(void *ctx, void *q, void *k, const int *pos, int n, int n_heads, int n_kv_heads,
                 int head_dim, const void *freqs);
    /* store new k/v rows at slots[t] = page * page_size + offset of the layer's pools */
    void (*kv_write)(void *ctx, void *k_pool, void *v_pool, const void *k, const void *v,
                     const int *slots, int n, int kv_dim);
    /* out (n_q_total, n_heads, head_dim) = softmax(q kᵀ · scale) v over the paged cache */
    void (*attention)(void *ctx, void *out, const void *q, const void *k_pool, const void *v_pool,
                      const struct attn_batch *b);
    /* out = silu(gate) * up, elementwise over n values */
    void (*swiglu)(void *ctx, void *out, const void *gate, const void *up, size_t n);
    /* x += y over n values */
    void (*add)(void *ctx, void *x, const void *y, size_t n);
    /* dst[r] = src[rows[r]] for r < n_rows, rows of `dim` values (gathers last-token rows) */
    void (*gather_rows)(void *ctx, void *dst, const void *src, const int *rows, int n_rows,
                        int dim);

    /* Optional (NULL on the CPU): record the ops queued between graph_begin and graph_end as one
     * replayable graph, so a decode step costs one launch instead of hundreds. Every pointer and
     * host-side size an op receives while recording is frozen into the graph. */
    int (*graph_begin)(void *ctx);
    int (*graph_end)(void *ctx, void **graph);
    int (*graph_launch)(void *ctx, void *graph);
    void (*graph_free)(void *ctx, void *graph);

    /* Fused forms used by the forward pass (after the graph ops, so the prefix of this table
     * that tests/gpu/fgattn.py mirrors keeps its layout). rope, kv_write, swiglu and add above
     * are the CPU backend's unfused twins, which the GPU tests compare the fused kernels with;
     * the forward pass does not call them and the CUDA table leaves them NULL. */
    /* x (n, out_dim) += h (n, in_dim) · wᵀ: a projection added to the residual stream */
    void (*matmul_add)(void *ctx, void *x, const void *h, const void *w, int n, int in_dim,
                       int out_dim);
    /* out (n, ffn) = silu(h · gateᵀ) * (h · upᵀ), where w holds the gate rows then the up rows
     * ((2 ffn, in_dim)); scratch holds (n, 2 ffn) activations for backends that need them */
    void (*matmul_swiglu)(void *ctx, void *out, const void *h, const void *w, int n, int in_dim,
                          int ffn, void *scratch);
    /* h = rmsnorm(x; norm_w, eps) (norm_w (in_dim) fp32), then out = h · wᵀ (swiglu 0; w
     * (out_dim, in_dim)) or out = silu(h · gateᵀ) * (h · upᵀ) (swiglu 1; w holds 2 out_dim rows,
     * scratch as in matmul_swiglu). h (n, in_dim) is written where the backend materialises it,
     * so callers must not read it afterwards. */
    void (*norm_matmul)(void *ctx, void *out, void *h, const void *x, const void *norm_w, float eps,
                        const void *w, int n, int in_dim, int out_dim, int swiglu, void *scratch);
    /* qkv (n, (n_heads + 2 n_kv_heads) head_dim): each token's q, k and v rows of one fused
     * projection. Turns q and k by rotate_half RoPE at pos[t] (freqs: head_dim/2 fp32), stores q
     * to q_out (n, n_heads, head_dim) and k, v at slots[t] = page * page_size + offset of the
     * layer's pools. */
    void (*qkv_store)(void *ctx, void *q_out, void *k_pool, void *v_pool, const void *qkv,
                      const int *pos, const int *slots, int n, int n_heads, int n_kv_heads,
                      int head_dim, const void *freqs);
    /* Pick one token per row of logits (backend memory, (n, vocab) fp32; the penalty changes
     * them in place) as rows[i] says (struct fg_sample_row, kernels/sample.h: greedy or sampled
     * with the uniform given, or the log-probability of a given id). history holds the ids the
     * rows' repetition penalties look at. rows, history, ids and logprobs are host arrays.
     * Returns 0, or -1 on a device error. */
    int (*sample)(void *ctx, float *logits, int n, int vocab, const struct fg_sample_row *rows,
                  const int *history, int n_history, int *ids, float *logprobs);

    /* Weights kept in their GGUF blocks on the host (optional: the CPU backend). out (n,
     * out_stride) columns [0, w->rows) = x (n, w->cols) · wᵀ, or += with FG_QMM_ACCUMULATE in
     * FLAGS; x fp32. FG_QMM_PROMPT: the rows are prompt rows (of sequences with several new
     * tokens this step), which the backend may run through a kernel of its own that rounds
     * differently; the forward pass decides it per sequence, never by the batch, so a token's
     * result does not depend on what else is in the step. */
    void (*qmatmul)(void *ctx, float *out, size_t out_stride, const float *x,
                    const struct fg_qtensor *w, int n, int flags);
    /* x[t] = dequantize(table row tokens[t]) (table (vocab, dim) in blocks; on the CUDA backend
     * resident, x bf16, in table->layout: FG_QLAYOUT_ROWS, or FG_QLAYOUT_GEMM where the table is
     * a head shared with a tied embedding; the same values from either) */
    void (*qembed)(void *ctx, void *x, const struct fg_qtensor *table, const int *tokens, int n);

    /* The family switches' ops (model_config: Qwen2, Mistral's window, Gemma 3). The forward
     * pass calls each only when the model needs it; a backend that leaves one NULL cannot run
     * such a model, and fwd_check_backend says which feature is missing. */
    /* x[t] += bias for each of n rows of dim values (q/k/v biases on the fused projection) */
    void (*add_rows)(void *ctx, void *x, const void *bias, int n, int dim);
    /* in the fused qkv rows (see qkv_store), RMSNorm each q head with q_w and each k head with
     * k_w (head_dim fp32 values each), in place */
    void (*head_norm)(void *ctx, void *qkv, const void *q_w, const void *k_w, int n, int n_heads,
                      int n_kv_heads, int head_dim, float eps);
    /* attention as above, where a query at position p sees only keys p - window + 1 .. p */
    void (*attention_window)(void *ctx, void *out, const void *q, const void *k_pool,
                             const void *v_pool, const struct attn_batch *b, int window);
    /* x[t] += rmsnorm(y[t]) * w, w (dim) fp32: a post-norm on a sub-block's output before the
     * residual add */
    void (*norm_add)(void *ctx, void *x, const void *y, const void *w, int n, int dim, float eps);
    /* out (n, ffn) = gelu_tanh(gu[:, :ffn]) * gu[:, ffn:], gu (n, 2 ffn) */
    void (*geglu)(void *ctx, void *out, const void *gu, int n, int ffn);
    /* x *= s over n values */
    void (*scale)(void *ctx, void *x, size_t n, float s);
    /* x = cap * tanh(x / cap) over n fp32 values (the logits) */
    void (*softcap)(void *ctx, float *x, size_t n, float cap);

    /* Constrained decoding: logits row i (of n, backend memory, (n, vocab) fp32) with use[i]
     * keeps id j only where j < n_mask and bit j of masks + i * words is set; the rest become
     * -inf (sample_ref_mask). masks and use are host arrays; only the used rows' masks travel.
     * Queued before the sample op of the same step, which synchronises. Returns 0, or -1 on a
     * device error. */
    int (*mask_logits)(void *ctx, float *logits, int n, int vocab, const uint32_t *masks,
                       size_t words, const int *use, int n_mask);

    /* Loading (optional: NULL where the backend takes only fp32 host weights, upload_f32): store
     * the host matrix W (w->rows, w->cols) of type F32, F16 or BF16 (a GGUF tensor still in the
     * file mapping, MODEL_LOAD_KEEP_FILE) at dst in the backend's element type. PERM_HEADS > 0:
     * W's rows are in GGUF llama's order for interleaved RoPE, in that many head groups; they
     * are stored in Hugging Face order (as model/loader.c un-permutes). Returns when W has been
     * read (the mapping may go): 0, or -1 on a device error. */
    int (*upload_rows)(void *ctx, void *dst, const struct fg_qtensor *w, int perm_heads);
    /* Logit bias and penalties (OpenAI logit_bias, presence_penalty, frequency_penalty): for
     * e < n_deltas, logits row d[e].row (of n) gets d[e].delta added at id d[e].id, each (row,
     * id) at most once (sample_ref_bias; model/sampler.h builds them). d is a host array.
     * Queued before mask_logits and sample of the same step. Returns 0, or -1 on a device
     * error. */
    int (*bias_logits)(void *ctx, float *logits, int n, int vocab, const struct fg_logit_delta *d,
                       int n_deltas);
    /* Top-k alternatives (top_logprobs): for each row i of n with k[i] > 0 (<= FG_TOP_MAX),
     * ids + i * FG_TOP_MAX and lps + i * FG_TOP_MAX get the k[i] largest logits of the row
     * and their log softmax over the row (sample_ref_top; -1 past the finite ones). Called
     * after sample, so it sees the logits the pick saw (bias, mask and repetition penalty
     * applied, before temperature and the top-k / top-p cut). k, ids and lps are host arrays;
     * synchronises. Returns 0, or -1 on a device error. */
    int (*top_logprobs)(void *ctx, const float *logits, int n, int vocab, const int *k, int *ids,
                        float *lps);

    /* Quantized weights resident in backend memory (optional: NULL where the backend keeps its
     * own element type only; the CUDA backend). Two layouts: FG_QLAYOUT_GEMM, the one qlinear
     * reads (the backend's own, possibly a repacking of the blocks), which qembed gathers from
     * too (one copy of a tied embedding and head), and FG_QLAYOUT_ROWS, the file's blocks row
     * after row, which only qembed reads (an embedding of its own). The caller stores the layout
     * in the resident copy's fg_qtensor.layout. */
    /* Bytes a (rows, cols) weight of ggml TYPE takes resident in LAYOUT, or 0 where the backend
     * cannot keep that type (shape) so: the caller then dequantizes it to the element type. */
    size_t (*qresident_bytes)(void *ctx, uint32_t type, int rows, int cols, int layout);
    /* Store the matrix of parts[0 .. n_parts) stacked (rows one after the other, one type and
     * cols; host GGUF blocks, Hugging Face row order) at dst (qresident_bytes of the stack) in
     * LAYOUT. Returns when the host rows have been read: 0, or -1 on a device error. A call with
     * n_parts 0 ends the load (staging memory goes back). */
    int (*qupload)(void *ctx, void *dst, const struct fg_qtensor *parts, int n_parts, int layout);
    /* The product struct fg_qlinear describes (its comment); graph-capturable. */
    void (*qlinear)(void *ctx, const struct fg_qlinear *a);
};
enum fg_qlayout { FG_QLAYOUT_ROWS = 0, FG_QLAYOUT_GEMM = 1 };

/* The CPU backend. ctx from cpu_ops_create (n_threads 0 = all cores). */
const struct fg_ops *cpu_ops(void);
void *cpu_ops_create(int n_threads);
void cpu_ops_destroy(void *ctx);

/* The CUDA backend lives in a shared object (build/libflashgen_cuda.so) that the engine opens
 * with dlopen, so the CPU build of flashgen needs no CUDA library at all. Its one exported
 * symbol, FG_CUDA_BACKEND_SYMBOL, returns this table. */
#define FG_CUDA_BACKEND_SYMBOL "fg_cuda_backend"
struct fg_cuda_backend {
    int abi; /* FG_CUDA_BACKEND_ABI */
    const struct fg_ops *ops;
    /* ctx for device DEVICE, or NULL with the reason (no device, driver too old, ...) */
    void *(*create)(int device, char *err, size_t errlen);
    void (*destroy)(void *ctx);
    int (*mem_info)(void *ctx, size_t *free_bytes, size_t *total_bytes);
    const char *(*device_name)(void *ctx);
    /* the sticky error that made sync fail, or "" */
    const char *(*last_error)(void *ctx);
};
/* 2: fg_ops.upload_rows; 3: bias_logits, top_logprobs; 4: qresident_bytes, qupload, qlinear (and
 * qembed on bf16 activations); 5: norm weights fp32 (no signature changed, but a backend of 4 reads
 * them as bf16); 6: fg_qlinear.ld_out (a backend of 5 would write a strided product packed); 7:
 * fg_qtensor.layout, enum fg_qlayout renumbered (ROWS 0, GEMM 1), qembed from an FG_QLAYOUT_GEMM
 * table (a backend of 6 would gather a tied head's packed bytes as file rows) */
#define FG_CUDA_BACKEND_ABI 7
typedef const struct fg_cuda_backend *(*fg_cuda_backend_fn)(void);

#endif
