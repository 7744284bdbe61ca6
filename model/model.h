/* model.h — the Llama-family model as the rest of flashgen sees it: configuration, host
 * weights, tokenizer and chat template, loaded from GGUF or a Hugging Face checkpoint.
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

struct tokenizer;

enum model_rope_scaling {
    MODEL_ROPE_SCALING_NONE = 0,
    MODEL_ROPE_SCALING_LLAMA3 = 1,
    /* GGUF rope_freqs.weight: per-frequency divisors given by the file (llama3 written out by
     * convert_hf_to_gguf); the factors below are unknown (0) and w.rope_freqs is authoritative. */
    MODEL_ROPE_SCALING_FREQ_FACTORS = 2,
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
    float rope_factor;     /* llama3: factor */
    float rope_low_freq;   /* llama3: low_freq_factor */
    float rope_high_freq;  /* llama3: high_freq_factor */
    int rope_orig_max_pos; /* llama3: original_max_position_embeddings */
};

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
};

struct model_weights {
    float *tok_embd;            /* (vocab_size, dim) */
    struct model_layer *layers; /* (n_layers) */
    float *out_norm;            /* (dim) */
    float *output;              /* (vocab_size, dim); == tok_embd when tied */
    float *rope_freqs;          /* (head_dim / 2) inverse frequencies, scaling applied */
    void *arena;                /* one allocation that holds every tensor above */
    size_t arena_bytes;
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
    char *chat_template; /* Jinja source from the file, or NULL */
    char *path;          /* what was opened */
    char format[16];     /* "gguf" or "safetensors" */
    char dtype[16];      /* dominant source tensor type, e.g. "Q4_1", "BF16" */
    double load_seconds; /* wall time of model_load */
    char notice[384];    /* what the load wants said (quantized types dequantized), or "" */
};

/* Load a model. PATH is a .gguf file, or a directory (or its config.json) holding a Hugging Face
 * checkpoint: config.json + model.safetensors or model.safetensors.index.json with shards +
 * tokenizer.json (+ tokenizer_config.json for the chat template). On failure returns -1 and
 * writes a message naming the file and the problem into err. PROGRESS may be NULL. */
int model_load(const char *path, struct model **out, model_progress_fn progress, void *user,
               char *err, size_t errlen);
void model_free(struct model *m); /* accepts NULL and half-built models */

/* Load only the tokenizer (and the chat template, malloc'd or NULL; CHAT_TEMPLATE may be NULL)
 * of the model at PATH (same PATH forms as model_load), without reading any weights. */
int model_load_tokenizer(const char *path, struct tokenizer **out, char **chat_template, char *err,
                         size_t errlen);

/* Fill rope_freqs (head_dim / 2 floats) from cfg (theta, head_dim, llama3 scaling). Shared by
 * both loaders. For MODEL_ROPE_SCALING_FREQ_FACTORS it gives the unscaled frequencies (the GGUF
 * loader then divides by the file's factors). */
void model_rope_freqs(const struct model_config *cfg, float *freqs);

/* Check a config for consistency (model/model_config.c); returns -1 with a message naming the
 * field. */
int model_config_validate(const struct model_config *cfg, char *err, size_t errlen);

/* Parse a Hugging Face config.json (model/hf_config.c) into CFG and validate it. Accepts
 * LlamaForCausalLM and MistralForCausalLM (model_type llama or mistral when architectures is
 * absent); rope_scaling null or llama3. Errors name the file and the field. */
int hf_config_load(const char *path, struct model_config *cfg, char *err, size_t errlen);

#endif
