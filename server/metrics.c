/* metrics.c — counters, gauges and histograms behind one mutex; Prometheus text rendering.
 *
 * Bucket bounds: latency buckets follow vLLM's TTFT/ITL choices (ms to minutes), token-count
 * buckets are powers of two up to 16k; both are fixed so dashboards can rely on them.
 */
#include "metrics.h"

#include "model/strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double B_LATENCY[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25, 0.5,
                                   0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0};
static const double B_ITL[] = {0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
                               0.075, 0.1,    0.15,  0.2,  0.3,   0.4,  0.5,   0.75, 1.0,  2.5};
static const double B_TOKENS[] = {1,   2,   4,    8,    16,   32,   64,   128,
                                  256, 512, 1024, 2048, 4096, 8192, 16384};

#define NB(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const struct {
    const char *name, *help;
    const double *bounds;
    int n;
} HISTS[METRICS_H_COUNT] = {
    [METRICS_H_QUEUE] = {"flashgen_request_queue_time_seconds",
                         "Seconds from arrival to admission into the running batch.", B_LATENCY,
                         NB(B_LATENCY)},
    [METRICS_H_TTFT] = {"flashgen_time_to_first_token_seconds",
                        "Seconds from arrival to the first generated token.", B_LATENCY,
                        NB(B_LATENCY)},
    [METRICS_H_ITL] = {"flashgen_inter_token_latency_seconds",
                       "Seconds between consecutive generated tokens of one request.", B_ITL,
                       NB(B_ITL)},
    [METRICS_H_E2E] = {"flashgen_e2e_request_latency_seconds",
                       "Seconds from arrival to the end of a generation request.", B_LATENCY,
                       NB(B_LATENCY)},
    [METRICS_H_PROMPT_TOKENS] = {"flashgen_request_prompt_tokens",
                                 "Prompt tokens per generation request.", B_TOKENS, NB(B_TOKENS)},
    [METRICS_H_GEN_TOKENS] = {"flashgen_request_generation_tokens",
                              "Generated tokens per finished request.", B_TOKENS, NB(B_TOKENS)},
};

static const char *const OUTCOMES[METRICS_OUT_COUNT] = {
    "success",    "cancelled",    "timeout",     "validation_error",
    "overloaded", "unauthorized", "unavailable", "error"};
static const char *const FINISHES[METRICS_FIN_COUNT] = {"length", "eos_token", "stop_sequence"};

void metrics_init(struct metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    for (int i = 0; i < METRICS_H_COUNT; i++) {
        m->h[i].bounds = HISTS[i].bounds;
        m->h[i].n_bounds = HISTS[i].n;
    }
}

void metrics_free(struct metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
}

void metrics_request(struct metrics *m, enum metrics_outcome o) {
    if ((unsigned)o >= METRICS_OUT_COUNT) o = METRICS_OUT_ERROR;
    pthread_mutex_lock(&m->mu);
    m->requests[o]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_finished(struct metrics *m, enum metrics_finish f) {
    if ((unsigned)f >= METRICS_FIN_COUNT) return;
    pthread_mutex_lock(&m->mu);
    m->finished[f]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_tokens(struct metrics *m, uint64_t prompt, uint64_t generated) {
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += prompt;
    m->generation_tokens += generated;
    pthread_mutex_unlock(&m->mu);
}

void metrics_observe(struct metrics *m, enum metrics_hist h, double v) {
    if ((unsigned)h >= METRICS_H_COUNT) return;
    pthread_mutex_lock(&m->mu);
    struct metrics_histogram *hh = &m->h[h];
    int b = 0;
    while (b < hh->n_bounds && v > hh->bounds[b])
        b++;
    hh->counts[b]++;
    hh->sum += v;
    hh->count++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_iteration(struct metrics *m, int running, int waiting, int batch_size,
                       int batch_tokens, double kv_usage) {
    pthread_mutex_lock(&m->mu);
    m->running = running;
    m->waiting = waiting;
    m->batch_size = batch_size;
    m->batch_tokens = batch_tokens;
    m->kv_usage = kv_usage;
    if (batch_size > 0) m->iterations++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_kv(struct metrics *m, uint64_t prefix_queries, uint64_t prefix_hits,
                uint64_t preemptions, int prefix_pages) {
    pthread_mutex_lock(&m->mu);
    m->prefix_queries = prefix_queries;
    m->prefix_hits = prefix_hits;
    m->preemptions = preemptions;
    m->prefix_pages = prefix_pages;
    pthread_mutex_unlock(&m->mu);
}

void metrics_forks(struct metrics *m, uint64_t forks, uint64_t prefill_tokens) {
    pthread_mutex_lock(&m->mu);
    m->forks = forks;
    m->prefill_tokens = prefill_tokens;
    pthread_mutex_unlock(&m->mu);
}

void metrics_set_ready(struct metrics *m, int ready) {
    pthread_mutex_lock(&m->mu);
    m->ready = ready;
    pthread_mutex_unlock(&m->mu);
}

static void head(struct strbuf *b, const char *name, const char *type, const char *help) {
    strbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Label values: escape backslash, quote and newline. */
static void label_escape(const char *in, char *out, size_t cap) {
    size_t n = 0;
    for (; *in && n + 3 < cap; in++) {
        if (*in == '\\' || *in == '"')
            out[n++] = '\\', out[n++] = *in;
        else if (*in == '\n')
            out[n++] = '\\', out[n++] = 'n';
        else
            out[n++] = *in;
    }
    out[n] = 0;
}

char *metrics_render(struct metrics *m, const char *model, const char *version, size_t *len) {
    struct strbuf b = {0};
    struct metrics s;
    pthread_mutex_lock(&m->mu);
    s = *m; /* snapshot; the copied mutex is never used */
    pthread_mutex_unlock(&m->mu);

    char lm[512], lv[128];
    label_escape(model ? model : "", lm, sizeof lm);
    label_escape(version ? version : "", lv, sizeof lv);
    head(&b, "flashgen_model_info", "gauge", "The served model (value is always 1).");
    strbuf_printf(&b, "flashgen_model_info{model_name=\"%s\",version=\"%s\"} 1\n", lm, lv);
    head(&b, "flashgen_model_ready", "gauge",
         "1 when the model is loaded and requests are served.");
    strbuf_printf(&b, "flashgen_model_ready %d\n", s.ready);

    head(&b, "flashgen_requests_total", "counter", "Generation requests by outcome.");
    for (int i = 0; i < METRICS_OUT_COUNT; i++)
        strbuf_printf(&b, "flashgen_requests_total{outcome=\"%s\"} %llu\n", OUTCOMES[i],
                      (unsigned long long)s.requests[i]);
    head(&b, "flashgen_request_success_total", "counter",
         "Successful generation requests by finish reason.");
    for (int i = 0; i < METRICS_FIN_COUNT; i++)
        strbuf_printf(&b, "flashgen_request_success_total{finished_reason=\"%s\"} %llu\n",
                      FINISHES[i], (unsigned long long)s.finished[i]);
    head(&b, "flashgen_prompt_tokens_total", "counter", "Prompt tokens processed.");
    strbuf_printf(&b, "flashgen_prompt_tokens_total %llu\n", (unsigned long long)s.prompt_tokens);
    head(&b, "flashgen_generation_tokens_total", "counter", "Tokens generated.");
    strbuf_printf(&b, "flashgen_generation_tokens_total %llu\n",
                  (unsigned long long)s.generation_tokens);
    head(&b, "flashgen_iterations_total", "counter",
         "Scheduler iterations that ran a forward pass.");
    strbuf_printf(&b, "flashgen_iterations_total %llu\n", (unsigned long long)s.iterations);

    head(&b, "flashgen_num_requests_running", "gauge", "Requests in the running batch.");
    strbuf_printf(&b, "flashgen_num_requests_running %d\n", s.running);
    head(&b, "flashgen_num_requests_waiting", "gauge", "Requests waiting for admission.");
    strbuf_printf(&b, "flashgen_num_requests_waiting %d\n", s.waiting);
    head(&b, "flashgen_batch_size", "gauge", "Sequences in the last iteration.");
    strbuf_printf(&b, "flashgen_batch_size %d\n", s.batch_size);
    head(&b, "flashgen_batch_tokens", "gauge", "Tokens in the last iteration.");
    strbuf_printf(&b, "flashgen_batch_tokens %d\n", s.batch_tokens);
    head(&b, "flashgen_kv_cache_usage_perc", "gauge",
         "Fraction of KV-cache pages in use (0 to 1).");
    strbuf_printf(&b, "flashgen_kv_cache_usage_perc %.6f\n", s.kv_usage);
    head(&b, "flashgen_prefix_cache_queries_total", "counter",
         "Prompt tokens looked up in the prefix cache.");
    strbuf_printf(&b, "flashgen_prefix_cache_queries_total %llu\n",
                  (unsigned long long)s.prefix_queries);
    head(&b, "flashgen_prefix_cache_hits_total", "counter",
         "Prompt tokens found in the prefix cache.");
    strbuf_printf(&b, "flashgen_prefix_cache_hits_total %llu\n", (unsigned long long)s.prefix_hits);
    head(&b, "flashgen_prefix_cache_pages", "gauge",
         "KV-cache pages cached for reuse that no sequence holds.");
    strbuf_printf(&b, "flashgen_prefix_cache_pages %d\n", s.prefix_pages);
    head(&b, "flashgen_num_preemptions_total", "counter",
         "Sequences preempted (pages released, recomputed later) for want of KV pages.");
    strbuf_printf(&b, "flashgen_num_preemptions_total %llu\n", (unsigned long long)s.preemptions);
    head(&b, "flashgen_kv_forks_total", "counter",
         "Sequences started from another sequence's prompt pages (n > 1, best_of).");
    strbuf_printf(&b, "flashgen_kv_forks_total %llu\n", (unsigned long long)s.forks);
    head(&b, "flashgen_prefill_tokens_total", "counter",
         "Prompt tokens computed in prefill (neither cached nor forked).");
    strbuf_printf(&b, "flashgen_prefill_tokens_total %llu\n", (unsigned long long)s.prefill_tokens);

    for (int i = 0; i < METRICS_H_COUNT; i++) {
        const struct metrics_histogram *h = &s.h[i];
        head(&b, HISTS[i].name, "histogram", HISTS[i].help);
        uint64_t cum = 0;
        for (int k = 0; k < h->n_bounds; k++) {
            cum += h->counts[k];
            strbuf_printf(&b, "%s_bucket{le=\"%g\"} %llu\n", HISTS[i].name, h->bounds[k],
                          (unsigned long long)cum);
        }
        cum += h->counts[h->n_bounds];
        strbuf_printf(&b, "%s_bucket{le=\"+Inf\"} %llu\n", HISTS[i].name, (unsigned long long)cum);
        strbuf_printf(&b, "%s_sum %.17g\n%s_count %llu\n", HISTS[i].name, h->sum, HISTS[i].name,
                      (unsigned long long)h->count);
    }
    size_t n = b.n;
    char *page = strbuf_take(&b);
    if (page && len) *len = n;
    return page;
}
