/* reqparse.h — the request bodies of the generation routes, read and validated as plain
 * functions: bytes in, parameters or an error value out. No server, no connection, no reply, so
 * the unit tests and the fuzz target (tests/fuzz/fuzz_request.c) call them directly; the
 * endpoints (ep_generate.c, ep_openai.c) turn a struct reqparse_error into their reply, whose
 * shape (TGI or OpenAI) http_reply_error picks from the path.
 *
 * What is checked here: the body is one JSON object and nothing after it (400 invalid_json);
 * every field has its type and range (422 validation, naming the field, in TGI's wording
 * "Input validation error: ..."); prompt and stop strings are valid UTF-8 (422: TGI's serde and
 * OpenAI both refuse bodies that are not UTF-8, and a prompt repaired behind the client's back
 * would be tokenized, counted and echoed as text the client never sent); the no-op values
 * clients send by default (tools: [], tool_choice "none", response_format {"type":"text"},
 * tool_choice "none", ...) pass, real uses of unimplemented features get 422 saying so.
 * logit_bias (token-id strings → [-100, 100]), presence_penalty and frequency_penalty ([-2, 2])
 * go into the sampler parameters (model/sampler.h); top_logprobs / top_n_tokens into top_k.
 * Structured output (OpenAI response_format json_object / json_schema, TGI grammar json / regex) is
 * compiled here into job_params.grammar (model/grammar.h), so an unsupported schema keyword or
 * regex construct is a 422 naming it before anything is queued. Chat's tools, tool_choice and tool
 * messages are read by server/tools.h (a forced call's grammar goes into job_params.grammar
 * too). What needs the
 * model (tokenizing, the vocabulary, prompt-length limits, the chat template) stays in job.c
 * and the endpoints. Pure functions; any thread.
 */
#ifndef FG_REQPARSE_H
#define FG_REQPARSE_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "model/grammar.h"
#include "model/sampler.h"
#include "model/tokenizer.h"

/* What a job is built from (job.c job_build_ids). It lives here, with its init/free, because the
 * parsers fill it and must be able to unwind it without linking the server. */
struct job_params {
    int max_new;            /* -1: not given (defaulted against the limits when the job is built) */
    int max_new_to_context; /* when not given: all of max_total_tokens left after the prompt
                               (OpenAI chat, as OpenAI, vLLM and TGI's OpenAI route do);
                               otherwise default_max_new_tokens */
    struct sampler_params sp;
    int seed_given;
    char **stop; /* (n_stop) malloc'd; moved into the job by job_build_ids */
    int n_stop;
    int prompt_logprobs;
    int top_k; /* alternatives per position (OpenAI top_logprobs / completions logprobs, TGI
                  top_n_tokens); 0 = none */
    int ignore_eos;
    int truncate;            /* keep the last N prompt tokens; 0 = off */
    struct grammar *grammar; /* constrained decoding (response_format, TGI grammar), or NULL;
                                owned; moved into the job by job_build_ids */
    cJSON *chat_tools;       /* chat: the tool list the template renders as `tools`, or NULL;
                                owned (server/tools.h) */
    int n_seqs;   /* sequences generated per prompt: OpenAI n (or best_of when larger), TGI
                     best_of; 1 by default. They share the prompt's KV pages (sched.h forks) */
    int n_return; /* of those, how many are returned per prompt: the best by cumulative logprob
                     when fewer than n_seqs (OpenAI n of best_of; TGI 1, the others in
                     details.best_of_sequences) */
};

/* Most sequences one request may ask for (prompts × n_seqs); TGI's own best_of limit. */
#define REQPARSE_MAX_SEQS 128
#define REQPARSE_MAX_BEST_OF 16
/* Alternatives per position: OpenAI completions' logprobs limit (chat's top_logprobs is
 * FG_TOP_MAX, 20) and TGI's default max_top_n_tokens. */
#define REQPARSE_MAX_LOGPROBS 5
#define REQPARSE_MAX_TOP_N 5

void job_params_init(struct job_params *p);
void job_params_free(struct job_params *p);

/* The configuration the parsers need (from struct config). */
struct reqparse_limits {
    int max_stop_sequences;
};

/* A refused request: what the endpoint replies. */
struct reqparse_error {
    int status;        /* 400 (not a JSON object), 422 (a field), 500 (out of memory) */
    const char *type;  /* stable error type: "invalid_json", "validation", "internal" */
    char param[64];    /* the field at fault; "" when none */
    char message[400]; /* the full message, e.g. "Input validation error: `top_p` must be ..." */
};

/* The TGI routes. REQPARSE_TGI_COMPAT is POST /, whose body carries "stream". */
enum reqparse_tgi_route {
    REQPARSE_TGI_GENERATE,
    REQPARSE_TGI_STREAM,
    REQPARSE_TGI_COMPAT,
};

struct reqparse_tgi {
    struct job_params p;
    char *inputs; /* malloc'd, non-empty, valid UTF-8 */
    int stream;   /* the route's, or the body's "stream" on POST / */
    int details, input_details, full_text;
};

/* Parse a TGI body {"inputs": str, "parameters": {...}} (serving-apis.md §b). OUT is always
 * initialised: free it with reqparse_tgi_free whatever the result. Returns 0, or -1 with ERR
 * filled. */
int reqparse_tgi(const char *body, size_t len, enum reqparse_tgi_route route,
                 const struct reqparse_limits *lim, struct reqparse_tgi *out,
                 struct reqparse_error *err);
void reqparse_tgi_free(struct reqparse_tgi *t);

struct reqparse_oai {
    struct job_params p;
    int chat, stream, include_usage;
    int logprobs;     /* chat: the flag; completions: "logprobs" was given (0..20) */
    int top_logprobs; /* chat */
    int token_ids;    /* vLLM return_tokens_as_token_ids: logprobs name tokens "token_id:ID" */
    int echo;         /* completions */
    char *prompt;     /* completions: the text prompt (malloc'd), or NULL when given as ids */
    int *ids;         /* completions: token ids (n_ids, each in [0, INT_MAX]; the vocabulary is
                         checked when the job is built) */
    int n_ids;
    /* completions with a list of prompts (more than one): n_prompts > 1 and either prompts
       (texts, malloc'd) or id_lists/id_lens (token ids); prompt and ids then stay NULL */
    int n_prompts; /* 1 for a single prompt */
    char **prompts;
    int **id_lists, *id_lens;
    struct chat_msg *msgs; /* chat: (n_msgs); role a static string ("developer" becomes
                              "system"), content malloc'd valid UTF-8 (NULL for an assistant
                              message with tool_calls and no content), tool fields malloc'd */
    int n_msgs;
    struct tools_req *tools; /* chat: tools / tool_choice (server/tools.h); owned, never NULL
                                after a successful parse */
};

struct tools_req;

/* POST /v1/completions and POST /v1/chat/completions. OUT is always initialised: free it with
 * reqparse_oai_free whatever the result. Return 0, or -1 with ERR filled. */
int reqparse_completions(const char *body, size_t len, const struct reqparse_limits *lim,
                         struct reqparse_oai *out, struct reqparse_error *err);
int reqparse_chat(const char *body, size_t len, const struct reqparse_limits *lim,
                  struct reqparse_oai *out, struct reqparse_error *err);
void reqparse_oai_free(struct reqparse_oai *o);

/* The building blocks, for routes with a body of their own (/tokenize). reqparse_body: BODY[0..LEN)
 * as one JSON object with only whitespace after it, or NULL with ERR (400 invalid_json).
 * reqparse_get_bool: OBJ.NAME absent or null leaves *OUT unchanged; a non-boolean is a 422. */
cJSON *reqparse_body(const char *body, size_t len, struct reqparse_error *err);
int reqparse_get_bool(const cJSON *obj, const char *name, int *out, struct reqparse_error *err);
/* Fill ERR as a 422 naming FIELD ("Input validation error: " + the formatted text); returns -1. */
int reqparse_invalid(struct reqparse_error *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
