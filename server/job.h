/* job.h — what the generation endpoints share: the admission check (ready, draining, overload),
 * the replies to what reqparse.c refused, prompt tokenization with the length limits, building a
 * worker request, and the one driver that runs it: it submits the request, feeds the worker's
 * events to a per-route renderer, cancels on a client that went away and frees everything at one
 * point. Called on the loop thread only; the prompt's tokenization (and chat template) runs on
 * a libuv work thread (job_start_text, job_start_chat), so that a large prompt never stalls
 * /health or the streams.
 *
 * Every function that fails has already sent the error reply and counted it in the metrics;
 * the caller just returns.
 */
#ifndef FG_JOB_H
#define FG_JOB_H

#include <cjson/cJSON.h>

#include "server/reqparse.h"
#include "server/serve.h"

/* 0 when the server can take a generation now; otherwise replies 503 (loading, draining) or
 * 429 (queued + running at max_concurrent_requests) and returns -1. */
int job_admit(struct server *sv, struct http_req *r);
/* Parse the body as one JSON object (reqparse_body); replies 400 and returns NULL when it is
 * not one. */
cJSON *job_parse_body(struct server *sv, struct http_req *r);
/* Reply to a request the parsers refused (reqparse.h): ERR's status, type, param and message,
 * counted as a validation error (an error when it is a 500). Returns -1. */
int job_reply_invalid(struct server *sv, struct http_req *r, const struct reqparse_error *err);
/* Replies 422 (type "validation") naming FIELD; always returns -1. */
int job_invalid(struct server *sv, struct http_req *r, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* OBJ.NAME as a boolean (reqparse_get_bool); replies 422 and returns -1 when it is not one. */
int job_get_bool(struct server *sv, struct http_req *r, const cJSON *obj, const char *name,
                 int *out);

/* Apply truncate and the limits to the prompt IDS (N; the OpenAI prompt as an array of ints, or
 * what job_start_* tokenized) and build a job. Returns NULL after replying (422) on failure. */
struct wreq *job_build_ids(struct server *sv, struct http_req *r, const int *ids, int n,
                           struct job_params *p, const char *field);
/* The jobs of one request: for each of N_PROMPTS prompts (IDS[i], LENS[i]) P->n_seqs jobs, job
 * index = prompt * n_seqs + k, each a copy of P (stop strings duplicated). Jobs k > 0 of a prompt
 * fork the prompt's KV pages from job 0 (worker.h fork_of; not with prompt logprobs, which each
 * computes). Seeds: job index c of a request with a seed s samples with seed_c = s for c = 0,
 * else splitmix64(s + c · 0x9E3779B97F4A7C15) mod 2^53 (job_seed); without one each job draws its
 * own. A grammar cannot be shared: more than one job with one is a 422 on "n". Returns the
 * number of jobs in *OUT (malloc'd), or -1 after replying. */
int job_build_group(struct server *sv, struct http_req *r, int *const *ids, const int *lens,
                    int n_prompts, struct job_params *p, const char *field, struct wreq ***out);
/* The seed of job C of a request seeded with SEED (above). */
uint64_t job_seed(uint64_t seed, int c);
/* How one route renders one stream mode. Each hook runs on the loop thread with no lock held,
 * only while the client is still there; jobs are read-only and CTX is the route's state. A
 * request runs one job per choice (n > 1, best_of, prompt lists: job_build_group); J->index
 * says which. */
struct job_render {
    int stream; /* 1: text/event-stream started before the job runs; 0: one deferred reply */
    void (*on_start)(void *ctx, struct http_req *r); /* stream: right after it started; or NULL */
    /* stream: events of job J arrived; tokens [from, j->n_gen) are new; j->finish set means this
     * job is done (when job_failed_finish, on_error follows, once for the whole request) */
    void (*on_tokens)(void *ctx, struct http_req *r, const struct wreq *j, int from);
    /* every job ended with a result (length, eos_token, stop_sequence): JS[0..N) by index */
    void (*on_finish)(void *ctx, struct http_req *r, struct wreq *const *js, int n);
    /* a job ended without one (job_failed_finish; the others are cancelled); NULL:
     * job_reply_failed (deferred replies) */
    void (*on_error)(void *ctx, struct http_req *r, const struct wreq *j);
    void (*free)(void *ctx); /* releases CTX (with the jobs, after both ends are done) */
    /* job_start_*: the jobs were built, before they run (on the loop thread); or NULL */
    void (*on_job)(void *ctx, struct wreq *const *js, int n);
};

/* Tokenize + job_build_group + job_run, the heavy part off the loop thread: TEXTS[0..N_TEXTS)
 * (each malloc'd; the array and the texts are taken whatever the result) are tokenized on a
 * libuv work thread; back on the loop the request is admitted again (job_admit: the server may
 * be draining or full by then), the jobs are built from the ids (job_build_group: truncate and
 * the limits, the same 422s), RD->on_job sees them and job_run starts them. The owned parts of P
 * (stop, grammar) move in; P is left empty. Returns 0 with the reply deferred and CTX owned by
 * the job from here on (RD->free releases it, also when the build fails or the client hangs up
 * first); -1 after replying 500 when the work could not be queued (CTX still the caller's). */
int job_start_texts(struct server *sv, struct http_req *r, char **texts, int n_texts,
                    int parse_special, int add_bos, struct job_params *p, const char *field,
                    const struct job_render *rd, void *ctx);
/* job_start_texts of one TEXT (malloc'd, taken whatever the result). */
int job_start_text(struct server *sv, struct http_req *r, char *text, int parse_special,
                   int add_bos, struct job_params *p, const char *field,
                   const struct job_render *rd, void *ctx);
/* The same for a chat: MSGS (N, owned, contents malloc'd; taken whatever the result) are rendered
 * with the model's chat template on the work thread too, then tokenized with special tokens
 * parsed and no BOS added (the template writes it). A template that refuses the messages is a
 * 422 on "messages", one that fails a 500. */
int job_start_chat(struct server *sv, struct http_req *r, struct chat_msg *msgs, int n,
                   struct job_params *p, const struct job_render *rd, void *ctx);

/* Start the reply (a stream or a deferred one), submit the jobs JS[0..N) (malloc'd array; its
 * fork_of links within it) and drive them through RD. From here on the jobs, the array and CTX
 * belong to the driver, which frees them once every finish event has been rendered and the
 * HTTP request has completed, whichever comes last. Returns -1 after replying 500 when it could
 * not start (jobs and array freed; CTX still the caller's). */
int job_run(struct server *sv, struct http_req *r, struct wreq **js, int n,
            const struct job_render *rd, void *ctx);

/* Fill the request log line from its finished (or cancelled) jobs JS[0..N): tokens summed, the
 * outcome of the first that failed, else of job 0. */
void job_log(struct http_req *r, struct wreq *const *js, int n);
/* Add S[0..N) to O as string NAME, valid UTF-8 whatever the bytes (a token that holds part of a
 * character: U+FFFD for those bytes, as tokenizers' decode([id]) shows them). */
void job_add_text(cJSON *o, const char *name, const char *s, size_t n);
/* Generated text of token K (between text_end[k-1] and text_end[k]). */
const char *job_token_text(const struct wreq *j, int k, size_t *len);

/* 1 when a request ended without a usable result: deadline, shutdown or engine error. */
int job_failed_finish(enum wreq_finish f);
/* The HTTP status, stable error type and message of such a request. */
void job_error_of(const struct wreq *j, int *status, const char **type, const char **msg);
/* Answer a failed request (not a stream) with its status and JSON error. Loop thread. */
void job_reply_failed(struct http_req *r, const struct wreq *j);
/* The event that ends a stream whose job failed: TGI's data:{"error","error_type"}, or on /v1/
 * routes OpenAI's data: {"error":{"message","type","code"}} (http_reply_error's envelopes). */
void job_sse_error(struct http_req *r, const struct wreq *j);
/* Write one server-sent event, PREFIX (TGI "data:", OpenAI "data: ") + JSON + blank line;
 * consumes O. Loop thread. */
void job_sse(struct http_req *r, const char *prefix, cJSON *o);

#endif
