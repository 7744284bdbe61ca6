/* model.h — the model as the rest of flashgen sees it: configuration, host weights, tokenizer and
 * chat template, loaded from GGUF or a Hugging Face checkpoint.
 *
 * Families: Llama 2/3.x, SmolLM2, Mistral, Qwen2/2.5 and Gemma 3 (text). They share one decoder
 * (model/forward.c); what differs is a handful of switches in struct model_config (biases,
 * QK-norm, post-norms, activation, sliding windows, per-layer RoPE base, scales, soft-capping).
 * Gemma's RMSNorm multiplies by (1 + w): the loaders store (1 + w), so one RMSNorm serves all.
 *
 * Design choice: the canonical in-memory layout is Hugging Face's. Linear weights are row-major
 * (out, in) fp32, and the Q/K rows are in HF order, so RoPE is "rotate_half" (pairs i, i+d/2).
 * The GGUF loader un-permutes llama's attn_q/attn_k rows at load (the inverse of LlamaModel.permute
 * in llama.cpp's convert_hf_to_gguf.py) so that both formats meet in one layout and one RoPE.
 */
#ifndef FG_MODEL_H
#define FG_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h" /* struct fg_qtensor */

struct gguf_file;

struct tokenizer;

enum model_rope_scaling {
    MODEL_ROPE_SCALING_NONE = 0,
    MODEL_ROPE_SCALING_LLAMA3 = 1,
    /* GGUF rope_freqs.weight: per-frequency divisors given by the file (llama3 written out by
     * convert_hf_to_gguf); the factors below are unknown (0) and w.rope_freqs is authoritative. */
    MODEL_ROPE_SCALING_FREQ_FACTORS = 2,
    MODEL_ROPE_SCALING_LINEAR = 3, /* positions divided by factor: inv_freq / factor */
    /* dynamic NTK: transformers changes the base only past original_max_position_embeddings; the
     * loader caps the context there, so within it the frequencies are the default ones */
    MODEL_ROPE_SCALING_DYNAMIC = 4,
    MODEL_ROPE_SCALING_YARN = 5, /* YaRN ramp between interpolation and extrapolation */
};

enum model_act {
    MODEL_ACT_SILU = 0,      /* SwiGLU: silu(gate) * up (Llama, Mistral, Qwen2) */
    MODEL_ACT_GELU_TANH = 1, /* GeGLU: gelu_tanh(gate) * up (Gemma 3) */
};

struct model_config {
    char arch[32];       /* "llama" */
    int n_layers;        /* decoder blocks */
    int dim;             /* hidden size */
    int ffn_dim;         /* SwiGLU inner size */
    int n_heads;         /* query heads */
    int n_kv_heads;      /* key/value heads; n_heads % n_kv_heads == 0 */
    int head_dim;        /* per head; usually dim / n_heads */
    int vocab_size;      /* rows of the embedding and of the output head */
    int max_seq_len;     /* context length from the file */
    float rope_theta;    /* RoPE base */
    float rms_eps;       /* RMSNorm epsilon */
    int tied_embeddings; /* 1: output head == token embedding */
    enum model_rope_scaling rope_scaling;
    float rope_factor;      /* llama3: factor */
    float rope_low_freq;    /* llama3: low_freq_factor */
    float rope_high_freq;   /* llama3: high_freq_factor */
    int rope_orig_max_pos;  /* llama3, yarn, dynamic: original_max_position_embeddings */
    float rope_beta_fast;   /* yarn: beta_fast (32) */
    float rope_beta_slow;   /* yarn: beta_slow (1) */
    float rope_attn_factor; /* yarn: cos/sin multiplier (the attention scale grows by its square) */
    int rope_yarn_truncate; /* yarn: floor/ceil the correction range (transformers' default 1) */

    /* Family switches; all zero is plain Llama. */
    enum model_act act; /* gated MLP activation */
    int attn_bias;      /* q/k/v projections have biases (Qwen2); o has none */
    int qk_norm;        /* RMSNorm over each q and k head before RoPE (Gemma 3) */
    int post_norms;     /* RMSNorm on the attention and MLP outputs before the residual adds */
    int norm_plus_one;  /* the checkpoint's RMSNorm weights are w for (1 + w) (Gemma, HF only) */
    float embed_scale;  /* embeddings multiplied by this (Gemma: sqrt(dim)); 0 = 1 */
    float attn_scale;   /* softmax scale; 0 = 1/sqrt(head_dim) (Gemma: query_pre_attn_scalar^-½) */
    float final_softcap; /* logits = cap * tanh(logits / cap); 0 = none */
    int sliding_window;  /* a local layer's query sees the last sliding_window keys; 0 = none */
    /* which layers are local (sliding window): 0 = all of them when sliding_window is set
     * (Mistral); N > 0 = every Nth layer (l % N == N - 1) is global, the rest local (Gemma 3) */
    int sliding_pattern;
    /* layers below this index are global whatever the pattern: Qwen2's max_window_layers (its
     * windows start there when use_sliding_window is set); 0 = no such prefix */
    int sliding_from;
    float rope_local_theta; /* RoPE base of local layers, unscaled; 0 = same table as global */
};

/* 1 when layer L of CFG attends through a sliding window. */
int model_layer_is_local(const struct model_config *cfg, int l);

/* One decoder block. All fp32, row-major (out, in). */
struct model_layer {
    float *attn_norm; /* (dim) */
    float *wq;        /* (n_heads * head_dim, dim) */
    float *wk;        /* (n_kv_heads * head_dim, dim) */
    float *wv;        /* (n_kv_heads * head_dim, dim) */
    float *wo;        /* (dim, n_heads * head_dim) */
    float *ffn_norm;  /* (dim) */
    float *w_gate;    /* (ffn_dim, dim) */
    float *w_up;      /* (ffn_dim, dim) */
    float *w_down;    /* (dim, ffn_dim) */
    float *bqkv;      /* attn_bias: q|k|v biases ((n_heads + 2 n_kv_heads) head_dim), else NULL */
    float *q_norm;    /* qk_norm: (head_dim), else NULL */
    float *k_norm;    /* qk_norm: (head_dim), else NULL */
    float *post_attn_norm; /* post_norms: (dim), else NULL */
    float *post_ffn_norm;  /* post_norms: (dim), else NULL */
    /* MODEL_LOAD_KEEP_BLOCKS: the linear weights kept in their GGUF blocks (same shapes as
     * above, Q/K rows in HF order); a weight kept here has a NULL fp32 pointer above, and one
     * with .data NULL here is fp32 above. */
    struct fg_qtensor qwq, qwk, qwv, qwo, qw_gate, qw_up, qw_down;
    /* Weights resident in a backend's quantized layout (fg_ops.qlinear; the engine's device copy,
     * engine.c): q|k|v and gate|up as one matrix each ((n_heads + 2 n_kv_heads) head_dim rows;
     * 2 ffn_dim rows), o and down in qwo / qw_down (data in backend memory); a q|k|v whose parts
     * differ in block type (llama.cpp's Q4_K_M gives some layers' v six bits) as three, in qwq /
     * qwk / qwv, qwqkv's .data NULL; .data NULL where the weight is in the backend's element type
     * instead (wq ... above). */
    struct fg_qtensor qwqkv, qw_gu;
};

struct model_weights {
    float *tok_embd;            /* (vocab_size, dim) */
    struct model_layer *layers; /* (n_layers) */
    float *out_norm;            /* (dim) */
    float *output;              /* (vocab_size, dim); == tok_embd when tied */
    float *rope_freqs;          /* (head_dim / 2) inverse frequencies, scaling applied */
    float *rope_freqs_local;    /* (head_dim / 2) local layers' table; read only when
                                   rope_local_theta > 0 */
    void *arena;                /* one allocation that holds every fp32 tensor above */
    size_t arena_bytes;
    /* MODEL_LOAD_KEEP_BLOCKS: the embedding and the head in their blocks (tok_embd / output
     * then NULL; q_output == q_embd when tied), and the one allocation every kept block lives in.
     * In a device copy with fg_ops.qlinear: q_embd in FG_QLAYOUT_ROWS, q_output in
     * FG_QLAYOUT_GEMM (each tensor's .layout says so); tied, q_embd == q_output, the one copy in
     * FG_QLAYOUT_GEMM, which qembed gathers from. */
    struct fg_qtensor q_embd, q_output;
    void *qarena;
    size_t qarena_bytes;
    /* bytes of kept tensors that point into the file mapping (model.file) instead of an arena */
    size_t mapped_bytes;
};

/* What a load reports as it goes; called on the loading thread. */
struct model_load_progress {
    size_t tensors_done, tensors_total;
    size_t bytes_done, bytes_total; /* bytes read from the file(s) */
    double seconds;                 /* since the load began */
};
typedef void (*model_progress_fn)(const struct model_load_progress *p, void *user);

struct model {
    struct model_config cfg;
    struct model_weights w;
    struct tokenizer *tok;
    char *chat_template;    /* Jinja source from the file, or NULL */
    char *path;             /* what was opened */
    char format[16];        /* "gguf" or "safetensors" */
    char dtype[16];         /* dominant source tensor type, e.g. "Q4_1", "BF16" */
    double load_seconds;    /* wall time of model_load */
    char notice[768];       /* what the load wants said (quantized types dequantized), or "" */
    struct gguf_file *file; /* the GGUF mapping, open while kept tensors point into it */
    /* MODEL_LOAD_KEEP_FILE: 1 when the kept qwq / qwk are still in GGUF llama's permuted row
     * order (n_heads / n_kv_heads head groups; fg_ops.upload_rows undoes it), else 0 */
    int qk_file_order;
};

/* Load a model. PATH is a .gguf file, or a directory (or its config.json) holding a Hugging Face
 * checkpoint: config.json + model.safetensors or model.safetensors.index.json with shards +
 * tokenizer.json (+ tokenizer_config.json for the chat template). On failure returns -1 and
 * writes a message naming the file and the problem into err. PROGRESS may be NULL. */
int model_load(const char *path, struct model **out, model_progress_fn progress, void *user,
               char *err, size_t errlen);
/* model_load with FLAGS: MODEL_LOAD_KEEP_BLOCKS keeps every GGUF linear weight (and the
 * embedding) whose type kernels/cpu_quant.h multiplies in its file blocks instead of fp32 — for
 * the CPU backend, which reads them through fg_ops.qmatmul/qembed. */
/* MODEL_LOAD_KEEP_FILE (for a backend with fg_ops.upload_rows) keeps every GGUF linear weight
 * and the embedding of type F32, F16 or BF16 where the file has it: the qtensor (q* fields; see
 * qk_file_order) points into the mapping and the fp32 pointer is NULL, so the
 * backend converts while uploading and no fp32 copy is made. Kept blocks (either flag) point
 * into the mapping too wherever no row has to move (w.mapped_bytes), so the resident weights
 * are the page cache's own pages. */
enum model_load_flags { MODEL_LOAD_KEEP_BLOCKS = 1, MODEL_LOAD_KEEP_FILE = 2 };
int model_load_flags(const char *path, unsigned flags, struct model **out,
                     model_progress_fn progress, void *user, char *err, size_t errlen);
void model_free(struct model *m); /* accepts NULL and half-built models */
/* Close the file mapping of M (model.file) and free the block arena (w.qarena) once a backend
 * has its own copy of the weights kept there (after the GPU upload): every qtensor pointing into
 * either is cleared, so M's host weights are then incomplete. */
void model_drop_file(struct model *m);

/* Load only the tokenizer (and the chat template, malloc'd or NULL; CHAT_TEMPLATE may be NULL)
 * of the model at PATH (same PATH forms as model_load), without reading any weights. */
int model_load_tokenizer(const char *path, struct tokenizer **out, char **chat_template, char *err,
                         size_t errlen);

/* The RMSNorm weights in backend memory (model/model_norms.c): fp32 on every backend
 * (kernels/ops.h), in one region of model_norms_bytes(cfg) bytes, each tensor at a
 * MODEL_NORMS_ALIGN-byte boundary of it (DST itself that aligned). model_norms_upload stores HW's
 * norms (out_norm; each layer's attn_norm, ffn_norm, and q_norm / k_norm, post_attn_norm /
 * post_ffn_norm where cfg has them) raw through ops->upload at DST, and points DW's out_norm and
 * DW->layers' (allocated, cfg->n_layers) norm fields at them; the other fields are untouched.
 * 0, or -1 when an upload fails (or HW lacks a norm cfg says it has). Queued on the backend's
 * stream: sync before HW's memory goes. */
#define MODEL_NORMS_ALIGN 256
size_t model_norms_bytes(const struct model_config *cfg);
int model_norms_upload(const struct model_config *cfg, const struct model_weights *hw,
                       const struct fg_ops *ops, void *ctx, void *dst, struct model_weights *dw);

/* Fill rope_freqs (head_dim / 2 floats) from cfg (theta, head_dim, scaling). Shared by both
 * loaders. For MODEL_ROPE_SCALING_FREQ_FACTORS it gives the unscaled frequencies (the GGUF
 * loader then divides by the file's factors). */
void model_rope_freqs(const struct model_config *cfg, float *freqs);
/* The same for the local layers: base rope_local_theta, no scaling (Gemma 3). */
void model_rope_freqs_local(const struct model_config *cfg, float *freqs);
/* The softmax scale of attention: attn_scale or 1/sqrt(head_dim), times YaRN's factor². */
float model_attn_scale(const struct model_config *cfg);

/* Check a config for consistency (model/model_config.c); returns -1 with a message naming the
 * field. */
int model_config_validate(const struct model_config *cfg, char *err, size_t errlen);

/* Parse a Hugging Face config.json (model/hf_config.c) into CFG and validate it. Accepts
 * LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Gemma3ForCausalLM and the text part of
 * Gemma3ForConditionalGeneration (or their model_type when architectures is absent); rope_scaling
 * null, llama3, linear, dynamic or yarn. Errors name the file and the field. */
int hf_config_load(const char *path, struct model_config *cfg, char *err, size_t errlen);

/* The JSON file at PATH (at most 16 MB) parsed, for the caller to cJSON_Delete; NULL with "PATH:
 * problem" (cannot open, too large, read failed, invalid JSON). hf_config_load and fp8_ckpt_config
 * read config.json through it. */
struct cJSON;
struct cJSON *hf_json_read(const char *path, char *err, size_t errlen);

#endif
