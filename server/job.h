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
/* How one route renders one stream mode. Each hook runs on the loop thread with no lock held,
 * only while the client is still there; J is read-only and CTX is the route's state. */
struct job_render {
    int stream; /* 1: text/event-stream started before the job runs; 0: one deferred reply */
    void (*on_start)(void *ctx, struct http_req *r); /* stream: right after it started; or NULL */
    /* stream: events arrived; tokens [from, j->n_gen) are new (j->finish may be set already) */
    void (*on_tokens)(void *ctx, struct http_req *r, const struct wreq *j, int from);
    /* the job ended with a result (length, eos_token, stop_sequence) */
    void (*on_finish)(void *ctx, struct http_req *r, const struct wreq *j);
    /* the job ended without one (job_failed_finish); NULL: job_reply_failed (deferred replies) */
    void (*on_error)(void *ctx, struct http_req *r, const struct wreq *j);
    void (*free)(void *ctx); /* releases CTX (with the job, after both ends are done) */
    /* job_start_*: the job was built, before it runs (on the loop thread); or NULL */
    void (*on_job)(void *ctx, const struct wreq *j);
};

/* Tokenize + job_build_ids + job_run, the heavy part off the loop thread: TEXT (malloc'd, taken
 * whatever the result) is tokenized on a libuv work thread; back on the loop the request is
 * admitted again (job_admit: the server may be draining or full by then), the job is built from the
 * ids (job_build_ids: truncate and the limits, the same 422s), RD->on_job sees it and job_run
 * starts it. The owned parts of P (stop, grammar) move in; P is left empty. Returns 0 with the
 * reply deferred and CTX owned by the job from here on (RD->free releases it, also when the build
 * fails or the client hangs up first); -1 after replying 500 when the work could not be queued
 * (CTX still the caller's). */
int job_start_text(struct server *sv, struct http_req *r, char *text, int parse_special,
                   int add_bos, struct job_params *p, const char *field,
                   const struct job_render *rd, void *ctx);
/* The same for a chat: MSGS (N, owned, contents malloc'd; taken whatever the result) are rendered
 * with the model's chat template on the work thread too, then tokenized with special tokens
 * parsed and no BOS added (the template writes it). A template that refuses the messages is a
 * 422 on "messages", one that fails a 500. */
int job_start_chat(struct server *sv, struct http_req *r, struct chat_msg *msgs, int n,
                   struct job_params *p, const struct job_render *rd, void *ctx);

/* Start the reply (a stream or a deferred one), submit J and drive it through RD. From here on
 * J and CTX belong to the driver, which frees them once the finish event has been rendered and
 * the HTTP request has completed, whichever comes last. Returns -1 after replying 500 when it
 * could not start (J freed; CTX still the caller's). */
int job_run(struct server *sv, struct http_req *r, struct wreq *j, const struct job_render *rd,
            void *ctx);

/* Fill the request log line from a finished (or cancelled) job. */
void job_log(struct http_req *r, const struct wreq *j);
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
