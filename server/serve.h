/* serve.h — `flashgen serve`: the daemon's start-up, state and shutdown.
 *
 * Start-up: configuration (config/) → listen at once (/health answers 503 "loading") → the
 * worker loads the model → READY (/health 200). SIGTERM/SIGINT: stop taking new generation
 * requests (they and /health get 503), let in-flight ones finish for up to shutdown_grace
 * seconds, cancel what is left, close, exit 0. A second signal cancels at once. A worker still
 * inside a forward pass or a model load a few seconds after the grace period is not waited for.
 *
 * struct server is the context every endpoint reaches through http_req_app(); all of it is
 * loop-thread state except the worker's own fields (see worker.h for the boundary).
 */
#ifndef FG_SERVE_H
#define FG_SERVE_H

#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "config/config.h"
#include "server/http.h"
#include "server/metrics.h"
#include "server/worker.h"

#define FLASHGEN_VERSION "0.1.0"

enum server_phase {
    SERVER_LOADING = 0,
    SERVER_READY,
    SERVER_FAILED,
    SERVER_DRAINING,
};

struct server {
    struct config cfg;
    uv_loop_t *loop;    /* = &loop_mem */
    uv_loop_t loop_mem; /* in here, so it stays reachable while an abandoned worker runs */
    struct http_server *http;
    struct worker worker;
    struct metrics metrics;
    enum server_phase phase;
    int inflight; /* generation jobs submitted and not yet finished */
    int preps; /* tokenizations on work threads (job.c, ep_tokenize.c): the engine outlives them */
    uint64_t next_id;
    char model_id[256];
    double t_start;           /* monotonic */
    double t_drain;           /* when draining began */
    int max_input, max_total; /* effective per-request limits once READY */
    FILE *log;
    int exit_code;
    uv_signal_t sig_term, sig_int;
    uv_timer_t drain_timer;
    int signals;        /* signals received */
    int worker_settled; /* the worker reported READY or FAILED (no model load under way) */
    int abandoned;      /* shutdown gave up waiting for the worker (serve_main frees nothing) */
};

/* `flashgen serve ...`: argv[0] is "serve". Returns the process exit status. */
int serve_main(int argc, char **argv);

/* Endpoints (one file each); registered in serve.c's route table. */
void ep_health(struct http_req *r);
void ep_info(struct http_req *r);
void ep_metrics(struct http_req *r);
void ep_generate(struct http_req *r);
void ep_generate_stream(struct http_req *r);
void ep_generate_compat(struct http_req *r); /* POST / with "stream" (huggingface_hub) */
void ep_completions(struct http_req *r);
void ep_chat_completions(struct http_req *r);
void ep_models(struct http_req *r);
void ep_model(struct http_req *r); /* GET /v1/models/{id} */
void ep_tokenize(struct http_req *r);

#endif
