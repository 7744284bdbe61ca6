/* tokenizer.h — byte-level BPE (GPT-2 family) and SentencePiece-style BPE (Llama-2, Mistral,
 * Gemma: the U+2581 space marker, <0xNN> byte fallback, merges by token score or by merge rank)
 * with the model's pre-tokenizer, special and added tokens, streaming-safe decoding, and chat
 * templates.
 *
 * A tokenizer is built from a format-neutral spec (struct tokenizer_spec), which the GGUF loader
 * fills from tokenizer.ggml.* metadata and tokenizer_from_json fills from tokenizer.json, so the
 * two sources share one code path. Thread-neutral once built: encode/decode only read it.
 */
#ifndef FG_TOKENIZER_H
#define FG_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

enum tok_pre {
    TOK_PRE_GPT2 = 0,   /* GPT-2 regex only */
    TOK_PRE_SMOLLM = 1, /* individual digits, then the GPT-2 regex (smollm, starcoder, ...) */
    TOK_PRE_LLAMA3 = 2, /* the Llama-3 regex */
    TOK_PRE_QWEN2 = 3,  /* the Llama-3 regex with single digits: \p{N} for \p{N}{1,3} */
    TOK_PRE_NONE = 4,   /* no pre-tokenizer: the whole stretch is one piece (SentencePiece) */
};

enum tok_model {
    TOK_MODEL_BYTE_BPE = 0, /* GPT-2 byte-level BPE: tokens in the byte-to-unicode alphabet */
    TOK_MODEL_SPM = 1,      /* SentencePiece-style: text with ' ' as U+2581, <0xNN> byte tokens */
};

/* Where a SentencePiece model puts the U+2581 it prefixes to text (add_space_prefix). A
 * "segment" is a stretch of text between added tokens. */
enum tok_prefix {
    TOK_PREFIX_NONE = 0,       /* Gemma (add_space_prefix false) */
    TOK_PREFIX_EACH = 1,       /* every non-empty segment: HF Prepend("▁"), llama.cpp SPM */
    TOK_PREFIX_META_ALL = 2,   /* HF Metaspace prepend_scheme "always": each segment that does
                                * not already start with ' ' or U+2581 */
    TOK_PREFIX_META_FIRST = 3, /* Metaspace "first": the same, only for a segment at offset 0 */
};

enum tok_type { /* GGUF tokenizer.ggml.token_type values */
                TOK_TYPE_NORMAL = 1,
                TOK_TYPE_UNKNOWN = 2,
                TOK_TYPE_CONTROL = 3,
                TOK_TYPE_USER_DEFINED = 4,
                TOK_TYPE_UNUSED = 5,
                TOK_TYPE_BYTE = 6,
};

/* Everything needed to build a tokenizer. Strings are borrowed for the duration of
 * tokenizer_init only (the tokenizer copies what it keeps). */
struct tokenizer_spec {
    int n_tokens;
    const char *const *tokens;  /* (n_tokens) byte-level-unicode strings, NUL-terminated */
    const size_t *token_lens;   /* (n_tokens) lengths, or NULL to use strlen */
    const int32_t *token_types; /* (n_tokens) enum tok_type, or NULL (all normal) */
    int n_merges;
    const char *const *merge_left;  /* (n_merges) in rank order */
    const char *const *merge_right; /* (n_merges) */
    enum tok_pre pre;
    int bos_id, eos_id, eot_id, pad_id, unk_id; /* -1 when absent */
    int add_bos, add_eos;
    /* SentencePiece-style models (TOK_MODEL_SPM) only: */
    enum tok_model model;
    const float *scores;    /* (n_tokens) merge by score of the merged token (GGUF "llama");
                             * NULL: merge by the rank of merge_left/right (tokenizer.json) */
    enum tok_prefix prefix; /* U+2581 added before text */
    int fuse_unk;           /* consecutive unknown characters give one unk_id */
    int strip_space;        /* decode drops one leading ' ' (HF Strip decoder, add_space_prefix) */
    int nfc;                /* NFC-normalize text between added tokens (HF normalizer NFC: Qwen2) */
};

struct tokenizer;

int tokenizer_init(const struct tokenizer_spec *spec, struct tokenizer **out, char *err,
                   size_t errlen);
/* Parse a Hugging Face tokenizer.json (both merges forms) and, if present beside it,
 * tokenizer_config.json (bos/eos, add_bos_token, chat_template). CHAT_TEMPLATE may be NULL;
 * otherwise *chat_template receives a malloc'd string or NULL. Pipelines recognised: byte-level
 * BPE with ByteLevel (GPT2), Sequence[Digits(individual), ByteLevel] (SMOLLM), or
 * Sequence[Split(llama3 / qwen2 / gpt2 regex), ByteLevel(use_regex=false)] (LLAMA3, QWEN2,
 * GPT2), with no normalizer or NFC; and byte_fallback BPE (TOK_MODEL_SPM) with normalizer
 * [Prepend("▁"),] Replace(" ", "▁"), no pre-tokenizer, decoders Replace, ByteFallback, Fuse
 * [, Strip]. Other pipelines are refused with a message. Without tokenizer_config.json, BOS/EOS
 * come from a TemplateProcessing post-processor. */
int tokenizer_from_json(const char *path, struct tokenizer **out, char **chat_template, char *err,
                        size_t errlen);
void tokenizer_free(struct tokenizer *t);
/* HF BPE "ignore_merges": a pre-token that is itself in the vocabulary becomes that token without
 * running the merges. tokenizer_init turns it on for TOK_PRE_LLAMA3 (as llama.cpp does);
 * tokenizer_from_json sets it from the file. Call before the tokenizer is shared. */
void tokenizer_set_ignore_merges(struct tokenizer *t, int on);

int tokenizer_n_vocab(const struct tokenizer *t);
int tokenizer_bos(const struct tokenizer *t); /* -1 when none */
int tokenizer_eos(const struct tokenizer *t);
int tokenizer_add_bos(const struct tokenizer *t);
/* 1 when generation should stop at this id (eos, eot, <|im_end|>, <|endoftext|>, <|eot_id|>). */
int tokenizer_is_eog(const struct tokenizer *t, int id);
/* 1 for control/special tokens (not shown in decoded text unless asked). */
int tokenizer_is_special(const struct tokenizer *t, int id);
/* Id of an exact token string (e.g. "<|im_end|>"), or -1. */
int tokenizer_find(const struct tokenizer *t, const char *text);
/* The token's stored string (byte-level form, e.g. "Ġthe"; added tokens as plain text), or NULL
 * for an id outside the vocabulary. Valid as long as the tokenizer. */
const char *tokenizer_token_text(const struct tokenizer *t, int id);
enum tok_pre tokenizer_pre(const struct tokenizer *t);
/* 1 when byte B has a single-byte symbol in the vocabulary (byte-level BPE: its byte-level
 * character; SentencePiece: its <0xNN> token). Text bytes without one are dropped by encode, as
 * HF does (SmolLM2 lacks 21: 0x04 0x06 0x13 0x14 0x16 0x1D 0xC0 0xC1 0xF1 0xF2 0xF5..0xFF), so
 * decode(encode(text)) == text holds only for text made of known bytes (and, for SentencePiece,
 * without U+2581, which decodes to ' '). */
int tokenizer_has_byte(const struct tokenizer *t, unsigned char b);

/* Encode UTF-8 text. PARSE_SPECIAL: recognise special (control) token strings in the text (what
 * HF does for a rendered chat template); user-defined added tokens are always recognised, as in
 * HF. Off, "<|im_start|>" in the text is ordinary text (HF split_special_tokens=True).
 * ADD_BOS: add the model's special tokens as its settings say (BOS when add_bos, EOS when
 * add_eos) — HF's add_special_tokens. Bytes that are not valid UTF-8 are tokenized as bytes.
 * *ids is malloc'd (non-NULL on success, even for no ids); returns 0 or -1 (err written). */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int parse_special,
                     int add_bos, int **ids, int *n_ids, char *err, size_t errlen);

/* Raw bytes a token stands for (byte-level decoding applied); special tokens give their text.
 * Copies min(length, CAP) bytes to BUF (NUL-terminated when length < CAP) and returns the full
 * length, or -1 for an id outside the vocabulary. May split a UTF-8 character. */
int tokenizer_token_bytes(const struct tokenizer *t, int id, char *buf, size_t cap);

/* Decode a whole sequence into malloc'd UTF-8 (invalid sequences become U+FFFD, like HF).
 * SKIP_SPECIAL drops control tokens. */
char *tokenizer_decode(const struct tokenizer *t, const int *ids, int n_ids, int skip_special);
/* The same, with the length in *LEN (may be NULL): the text can hold NUL bytes (the token of
 * byte 0x00), which strlen would miss. */
char *tokenizer_decode_len(const struct tokenizer *t, const int *ids, int n_ids, int skip_special,
                           size_t *len);

/* Streaming decode: feed one id at a time; returns the number of bytes written to OUT that form
 * complete UTF-8 characters. Bytes of an unfinished character are held until a later token
 * completes them (or tok_stream_flush emits them as U+FFFD). The concatenated output equals
 * tokenizer_decode of the whole sequence. OUT is NUL-terminated when room is left; a CAP of
 * tok_stream_cap(t) is always enough (a smaller one may truncate). Ids outside the vocabulary
 * are ignored. */
struct tok_stream {
    unsigned char pending[8];
    int n_pending;
    int skip_special; /* bit 0: drop control tokens; TOK_STREAM_STARTED: some byte has been
                       * produced, so a model's leading-space strip is done (a flag bit rather
                       * than a field: server/main.c brace-initializes the three fields) */
};
#define TOK_STREAM_STARTED 2
void tok_stream_init(struct tok_stream *s, int skip_special);
size_t tok_stream_push(const struct tokenizer *t, struct tok_stream *s, int id, char *out,
                       size_t cap);
size_t tok_stream_flush(struct tok_stream *s, char *out, size_t cap);
size_t tok_stream_cap(const struct tokenizer *t);

/* Chat templates. The model's own Jinja template is rendered by model/jinja.h's interpreter, the
 * way transformers' apply_chat_template renders it; the hand-written ChatML and Llama-3 renderers
 * remain only as the fallback for a model without a template or with one that does not parse. */
enum chat_kind {
    CHAT_KIND_CHATML = 0, /* fallback: <|im_start|>role\ncontent<|im_end|>\n (SmolLM2, Qwen) */
    CHAT_KIND_LLAMA3 =
        1, /* fallback: <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> */
    CHAT_KIND_JINJA = 2, /* the model's own template */
};
struct chat_msg {
    const char *role;    /* "system", "user", "assistant", "tool" */
    const char *content; /* NULL: None in the template (an assistant message with tool_calls) */
    /* OpenAI tool calling (server/tools.h), NULL when absent: an assistant message's calls as a
     * JSON array in transformers' shape ({"id", "type", "function": {"name", "arguments":
     * object}}), and a tool message's tool_call_id and name */
    const char *tool_calls, *tool_call_id, *name;
};
/* Free a message's malloc'd strings (content and the tool fields), as the server owns them. */
void chat_msg_free_strings(struct chat_msg *m);
struct jinja_template;
struct cJSON;
struct chat_template {
    enum chat_kind kind;
    struct jinja_template *jinja; /* CHAT_KIND_JINJA: the parsed template */
    char *bos_token, *eos_token;  /* the template's bos_token / eos_token, or NULL (undefined) */
    char *default_system;   /* fallback: injected when the first message is not a system one */
    char *bos_text;         /* fallback: text prepended (Llama-3: "<|begin_of_text|>"), or NULL */
    int trim_content;       /* fallback: Llama-3's `content | trim` */
    char fallback_why[160]; /* fallback: why the model's template is not used ("" when none) */
    int takes_tools;        /* the Jinja source reads `tools` (chat_template_takes_tools) */
};
/* Set CT up from the model's Jinja source (NULL: no template) and its tokenizer (for bos_token
 * and eos_token; NULL: both undefined). Returns 0 when the model's template is used or there is
 * none (ChatML then); 1 when the source does not parse: CT is the recognised fallback family
 * (Llama-3 or ChatML) and err holds a warning naming the line and column (the caller logs it and
 * goes on); -1 only when out of memory. The rendered prompt holds any BOS the template writes:
 * encode it with parse_special = 1 and add_bos = 0. */
int chat_template_init_model(struct chat_template *ct, const char *jinja,
                             const struct tokenizer *tok, char *err, size_t errlen);
/* The same with the token texts given (NULL: undefined in the template). */
int chat_template_init_tokens(struct chat_template *ct, const char *jinja, const char *bos_token,
                              const char *eos_token, char *err, size_t errlen);
/* chat_template_init_tokens without bos_token and eos_token. */
int chat_template_init(struct chat_template *ct, const char *jinja, char *err, size_t errlen);
void chat_template_free(struct chat_template *ct);
/* Which renderer CT uses, for the log and /info: "jinja" (the model's own template),
 * "chatml" or "llama3" (a fallback). */
const char *chat_template_kind_name(const struct chat_template *ct);
/* Render messages into *OUT (malloc'd). Returns 0; 1 when the template fails for these messages
 * (its raise_exception, a type error, a limit): err says why, for a 422; -1 when out of memory. */
int chat_template_render(const struct chat_template *ct, const struct chat_msg *msgs, int n_msgs,
                         int add_generation_prompt, char **out, char *err, size_t errlen);
/* chat_template_render with the request's tool list: TOOLS (a JSON array, passed to the template
 * as `tools`, as apply_chat_template(tools=...) does; NULL: None). */
int chat_template_render_tools(const struct chat_template *ct, const struct chat_msg *msgs,
                               int n_msgs, const struct cJSON *tools, int add_generation_prompt,
                               char **out, char *err, size_t errlen);
/* 1 when CT is the model's own template and its source reads `tools` (it renders a tool list
 * and tool calls itself); 0: the caller describes the tools in a system message (server/tools.h).
 */
int chat_template_takes_tools(const struct chat_template *ct);
/* chat_template_render returning the prompt, or NULL on any failure. */
char *chat_template_apply(const struct chat_template *ct, const struct chat_msg *msgs, int n_msgs,
                          int add_generation_prompt);

#endif
