/* serve.c — `flashgen serve`: configuration → listen at once → worker loads the model → ready;
 * signals → drain → exit. Owns struct server and the route table.
 *
 * Design choice: the listening socket stays open while draining so that probes see /health turn
 * 503 (and new generation requests get a 503 JSON error) instead of "connection refused"; it is
 * closed when the last in-flight request has been answered or the grace period is over.
 */
#include "serve.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

#define SERVE_FLUSH_POLL_MS 20 /* how often shutdown checks that replies went out */
#define SERVE_FLUSH_MAX_S 5.0  /* longest wait for open replies once the work is done */
/* After the grace period, how long shutdown waits for the worker to come out of a forward pass
 * (or a model load) before the process exits without it: a GPU pass takes milliseconds, a long
 * CPU prefill under ASan tens of seconds (issue 11: 29 s with --shutdown-grace 4). */
#define SERVE_HARD_EXIT_S 3.0

static const struct http_route ROUTES[] = {
    {"GET", "/health", ep_health, HTTP_ROUTE_PUBLIC | HTTP_ROUTE_QUIET},
    {"GET", "/metrics", ep_metrics, HTTP_ROUTE_PUBLIC | HTTP_ROUTE_QUIET},
    {"GET", "/info", ep_info, 0},
    {"GET", "/v1/models", ep_models, 0},
    {"GET", "/v1/models/", ep_model, HTTP_ROUTE_PREFIX},
    {"POST", "/generate", ep_generate, 0},
    {"POST", "/generate_stream", ep_generate_stream, 0},
    {"POST", "/", ep_generate_compat, 0},
    {"POST", "/v1/completions", ep_completions, 0},
    {"POST", "/v1/chat/completions", ep_chat_completions, 0},
    {"POST", "/tokenize", ep_tokenize, 0},
};

static void shutdown_begin(struct server *sv);
static void on_drain_tick(uv_timer_t *t);

/* Worker state changes (loop thread). */
static void on_worker_state(struct worker *w, enum worker_state st, void *user) {
    struct server *sv = user;
    int json = sv->cfg.log_format == CONFIG_LOG_JSON;
    sv->worker_settled = 1;
    if (st == WORKER_READY) {
        const struct worker_info *in = &w->info;
        int total = in->n_ctx > 0 ? in->n_ctx : in->kv_tokens;
        if (sv->cfg.max_total_tokens > 0 && sv->cfg.max_total_tokens < total)
            total = sv->cfg.max_total_tokens;
        if (total > in->kv_tokens) total = in->kv_tokens; /* must fit the KV-cache alone */
        int input = total - 1;
        if (sv->cfg.max_input_tokens > 0 && sv->cfg.max_input_tokens < input)
            input = sv->cfg.max_input_tokens;
        sv->max_total = total;
        sv->max_input = input;
        if (sv->cfg.max_concurrent_requests <= 0) /* 0: from the batch size the device got */
            sv->cfg.max_concurrent_requests =
                2 * in->max_batch_seqs > 128 ? 2 * in->max_batch_seqs : 128;
        if (sv->phase == SERVER_LOADING) {
            sv->phase = SERVER_READY;
            metrics_set_ready(&sv->metrics, 1);
        }
        reqlog_message(sv->log, json, "info",
                       "ready: model %s (%s %s, %s) on %s in %.2f s; max_input_tokens=%d "
                       "max_total_tokens=%d kv_tokens=%d",
                       sv->model_id, in->arch, in->dtype, in->format, in->device,
                       worker_now() - sv->t_start, input, total, in->kv_tokens);
    } else if (st == WORKER_FAILED) {
        reqlog_message(sv->log, json, "error", "model load failed: %s", w->load_error);
        sv->phase = SERVER_FAILED;
        sv->exit_code = 1;
        shutdown_begin(sv);
    }
}

/* One job's finish event (loop thread, no lock held): accounting. A request of several jobs
 * (n > 1, best_of, prompt lists) counts once, by its job 0; every job's generated tokens count,
 * and the prompt tokens of those that did not fork another's prompt. */
static void on_job_final(struct wreq *j, void *user) {
    struct server *sv = user;
    sv->inflight--;
    if (j->index != 0) {
        metrics_tokens(&sv->metrics, j->t_admitted > 0 && !j->fork_of ? (uint64_t)j->n_prompt : 0,
                       (uint64_t)j->n_gen);
        if (sv->phase == SERVER_DRAINING && sv->inflight == 0)
            uv_timer_start(&sv->drain_timer, on_drain_tick, 0, 0);
        return;
    }
    enum metrics_outcome o = METRICS_OUT_SUCCESS;
    switch (j->finish) {
    case WREQ_FIN_LENGTH:
        metrics_finished(&sv->metrics, METRICS_FIN_LENGTH);
        break;
    case WREQ_FIN_EOS:
        metrics_finished(&sv->metrics, METRICS_FIN_EOS);
        break;
    case WREQ_FIN_STOP:
        metrics_finished(&sv->metrics, METRICS_FIN_STOP);
        break;
    case WREQ_FIN_CANCELLED:
        o = METRICS_OUT_CANCELLED;
        break;
    case WREQ_FIN_TIMEOUT:
        o = METRICS_OUT_TIMEOUT;
        break;
    default:
        o = METRICS_OUT_ERROR;
        break;
    }
    metrics_request(&sv->metrics, o);
    metrics_tokens(&sv->metrics, j->t_admitted > 0 ? (uint64_t)j->n_prompt : 0, (uint64_t)j->n_gen);
    metrics_observe(&sv->metrics, METRICS_H_E2E, j->t_done - j->t_arrival);
    metrics_observe(&sv->metrics, METRICS_H_PROMPT_TOKENS, j->n_prompt);
    if (o == METRICS_OUT_SUCCESS) metrics_observe(&sv->metrics, METRICS_H_GEN_TOKENS, j->n_gen);
    if (sv->phase == SERVER_DRAINING && sv->inflight == 0)
        uv_timer_start(&sv->drain_timer, on_drain_tick, 0, 0);
}

static void on_closed(uv_handle_t *h) {
    (void)h;
}

/* Last step: every reply is out (or we gave up waiting); stop everything. */
static void shutdown_finish(struct server *sv) {
    uv_timer_stop(&sv->drain_timer);
    http_close(sv->http);
    sv->http = NULL;
    worker_stop(&sv->worker);
    uv_signal_stop(&sv->sig_term);
    uv_signal_stop(&sv->sig_int);
    uv_close((uv_handle_t *)&sv->sig_term, on_closed);
    uv_close((uv_handle_t *)&sv->sig_int, on_closed);
    uv_close((uv_handle_t *)&sv->drain_timer, on_closed);
    reqlog_message(sv->log, sv->cfg.log_format == CONFIG_LOG_JSON, "info", "stopped (exit %d)",
                   sv->exit_code);
}

/* The worker is still inside a forward pass or its model load past the hard deadline: stop the
 * loop and let serve_main return without joining it (the process ends with it). */
static void shutdown_abandon(struct server *sv) {
    reqlog_message(sv->log, sv->cfg.log_format == CONFIG_LOG_JSON, "error",
                   "shutdown deadline passed (grace %.1f s + %.1f s): exiting while the worker "
                   "is still busy (%d requests)",
                   sv->cfg.shutdown_grace, SERVE_HARD_EXIT_S, sv->inflight);
    sv->abandoned = 1;
    uv_stop(sv->loop);
}

/* The drain timer: runs every SERVE_FLUSH_POLL_MS while draining. */
static void on_drain_tick(uv_timer_t *t) {
    struct server *sv = t->data;
    double now = worker_now();
    double waited = now - sv->t_drain;
    if (waited >= sv->cfg.shutdown_grace + SERVE_HARD_EXIT_S &&
        (sv->inflight > 0 || !sv->worker_settled)) {
        shutdown_abandon(sv);
        return;
    }
    if (sv->inflight > 0 && waited >= sv->cfg.shutdown_grace && sv->signals < 100) {
        reqlog_message(sv->log, sv->cfg.log_format == CONFIG_LOG_JSON, "info",
                       "grace period over: cancelling %d in-flight requests", sv->inflight);
        worker_cancel_all(&sv->worker);
        sv->signals = 100; /* cancel once */
    }
    /* worker_stop joins the worker thread: only once it is not loading a model; and closes the
     * engine, whose tokenizer a prompt's tokenization on a work thread may still be reading */
    int idle = sv->inflight == 0 && sv->preps == 0 && sv->worker_settled;
    int flushed = idle && (!sv->http || http_active(sv->http) == 0);
    if (flushed || (idle && waited >= sv->cfg.shutdown_grace + SERVE_FLUSH_MAX_S)) {
        shutdown_finish(sv);
        return;
    }
    uv_timer_start(&sv->drain_timer, on_drain_tick, SERVE_FLUSH_POLL_MS, 0);
}

static void shutdown_begin(struct server *sv) {
    if (sv->phase == SERVER_DRAINING) return;
    if (sv->phase != SERVER_FAILED) sv->phase = SERVER_DRAINING;
    sv->t_drain = worker_now();
    metrics_set_ready(&sv->metrics, 0);
    reqlog_message(sv->log, sv->cfg.log_format == CONFIG_LOG_JSON, "info",
                   "shutting down: draining %d in-flight requests (grace %.1f s)", sv->inflight,
                   sv->cfg.shutdown_grace);
    uv_timer_start(&sv->drain_timer, on_drain_tick, 0, 0);
}

static void on_signal(uv_signal_t *h, int signum) {
    struct server *sv = h->data;
    sv->signals++;
    if (sv->phase == SERVER_DRAINING || sv->phase == SERVER_FAILED) {
        reqlog_message(sv->log, sv->cfg.log_format == CONFIG_LOG_JSON, "info",
                       "signal %d again: cancelling in-flight requests", signum);
        worker_cancel_all(&sv->worker);
        return;
    }
    reqlog_message(sv->log, sv->cfg.log_format == CONFIG_LOG_JSON, "info", "signal %d", signum);
    shutdown_begin(sv);
}

/* The model's name: configured, or the file (directory) name without .gguf. */
static void model_name(struct server *sv) {
    if (sv->cfg.model_id && *sv->cfg.model_id) {
        snprintf(sv->model_id, sizeof sv->model_id, "%s", sv->cfg.model_id);
        return;
    }
    const char *p = sv->cfg.model;
    size_t len = strlen(p);
    while (len > 1 && p[len - 1] == '/')
        len--;
    const char *base = p;
    for (size_t i = 0; i < len; i++)
        if (p[i] == '/') base = p + i + 1;
    size_t bl = (size_t)(p + len - base);
    if (bl > 5 && !strncmp(base + bl - 5, ".gguf", 5)) bl -= 5;
    snprintf(sv->model_id, sizeof sv->model_id, "%.*s", (int)bl, base);
}

int serve_main(int argc, char **argv) {
    struct server *sv = calloc(1, sizeof *sv);
    if (!sv) return 1;
    char err[512];
    int rc = config_load(&sv->cfg, argc, argv, environ, err, sizeof err);
    if (rc == 1) {
        config_print_help(stdout, "flashgen");
        config_free(&sv->cfg);
        free(sv);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "flashgen serve: %s\n", err);
        config_free(&sv->cfg);
        free(sv);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    sv->log = stderr;
    sv->t_start = worker_now();
    sv->phase = SERVER_LOADING;
    model_name(sv);
    metrics_init(&sv->metrics);
    int json = sv->cfg.log_format == CONFIG_LOG_JSON;
    sv->loop = &sv->loop_mem;
    uv_loop_init(sv->loop);

    struct http_opts ho = {
        .host = sv->cfg.host,
        .port = sv->cfg.port,
        .max_body = (size_t)sv->cfg.max_body_bytes,
        .api_key = sv->cfg.api_key,
        .cors_origins = sv->cfg.cors_allow_origins,
        .conn_timeout = (unsigned)sv->cfg.connection_timeout,
        .conn_limit = (unsigned)sv->cfg.max_connections,
        .per_client = (unsigned)sv->cfg.max_connections_per_client,
        .read_timeout = sv->cfg.request_read_timeout,
        .metrics = &sv->metrics,
        .max_header = (size_t)sv->cfg.max_header_bytes,
        .sse_ping = sv->cfg.sse_ping,
        .routes = ROUTES,
        .n_routes = (int)(sizeof ROUTES / sizeof ROUTES[0]),
        .app = sv,
        .log = sv->cfg.log_requests ? sv->log : NULL,
        .log_json = json,
    };
    if (http_start(&sv->http, sv->loop, &ho, err, sizeof err) != 0) {
        reqlog_message(sv->log, json, "error", "%s", err);
        rc = 1;
        goto out;
    }
    reqlog_message(sv->log, json, "info", "listening on http://%s:%d (model %s loading)",
                   sv->cfg.host, http_port(sv->http), sv->cfg.model);

    uv_timer_init(sv->loop, &sv->drain_timer);
    sv->drain_timer.data = sv;
    uv_signal_init(sv->loop, &sv->sig_term);
    uv_signal_init(sv->loop, &sv->sig_int);
    sv->sig_term.data = sv->sig_int.data = sv;
    uv_signal_start(&sv->sig_term, on_signal, SIGTERM);
    uv_signal_start(&sv->sig_int, on_signal, SIGINT);

    if (worker_start(&sv->worker, sv->loop, &sv->cfg, &sv->metrics, on_worker_state, on_job_final,
                     sv, err, sizeof err) != 0) {
        reqlog_message(sv->log, json, "error", "%s", err);
        sv->exit_code = 1;
        sv->worker_settled = 1; /* no thread to wait for */
        shutdown_begin(sv);
    }
    uv_run(sv->loop, UV_RUN_DEFAULT);
    rc = sv->exit_code;
    /* the worker thread may still run and use sv, the loop and the metrics: free none of them */
    if (sv->abandoned) return rc;
out:
    uv_loop_close(sv->loop);
    metrics_free(&sv->metrics);
    config_free(&sv->cfg);
    free(sv);
    return rc;
}
