/* metrics.h — the server's Prometheus metrics: counters, gauges and histograms with stable,
 * vLLM-style names under the flashgen_ prefix, rendered in the Prometheus text format (0.0.4).
 *
 * Thread-neutral: every function takes the one mutex inside struct metrics, so the loop thread
 * (request outcomes, latencies) and the worker (batch size, KV use, queue lengths) both write.
 *
 * Names (stable; a rename is a breaking change):
 *   flashgen_requests_total{outcome}                counter  success|cancelled|timeout|
 *                                                            validation_error|overloaded|
 *                                                            unauthorized|unavailable|error
 *   flashgen_request_success_total{finished_reason} counter  length|eos_token|stop_sequence
 *   flashgen_prompt_tokens_total                    counter
 *   flashgen_generation_tokens_total                counter
 *   flashgen_iterations_total                       counter  worker iterations (forward calls)
 *   flashgen_num_requests_running                   gauge
 *   flashgen_num_requests_waiting                   gauge
 *   flashgen_batch_size                             gauge    sequences in the last iteration
 *   flashgen_batch_tokens                           gauge    tokens in the last iteration
 *   flashgen_kv_cache_usage_perc                    gauge    used pages / pages, 0..1
 *   flashgen_model_ready                            gauge    1 once /health is 200
 *   flashgen_prefix_cache_queries_total             counter  prompt tokens looked up in the
 *                                                            prefix cache (vLLM's
 *                                                            prefix_cache_queries)
 *   flashgen_prefix_cache_hits_total                counter  of those, tokens found cached
 *   flashgen_prefix_cache_pages                     gauge    KV pages cached, no one holding them
 *   flashgen_num_preemptions_total                  counter  sequences preempted for pages
 *   flashgen_kv_forks_total                         counter  sequences started from another's
 *                                                            prompt pages (n > 1, best_of)
 *   flashgen_prefill_tokens_total                   counter  prompt tokens computed (prefill
 *                                                            rows: not cached, not forked)
 *   flashgen_request_queue_time_seconds             histogram
 *   flashgen_time_to_first_token_seconds            histogram
 *   flashgen_inter_token_latency_seconds            histogram
 *   flashgen_e2e_request_latency_seconds            histogram
 *   flashgen_request_prompt_tokens                  histogram
 *   flashgen_request_generation_tokens              histogram
 */
#ifndef FG_METRICS_H
#define FG_METRICS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

enum metrics_outcome {
    METRICS_OUT_SUCCESS = 0,
    METRICS_OUT_CANCELLED,
    METRICS_OUT_TIMEOUT,
    METRICS_OUT_VALIDATION,
    METRICS_OUT_OVERLOADED,
    METRICS_OUT_UNAUTHORIZED,
    METRICS_OUT_UNAVAILABLE,
    METRICS_OUT_ERROR,
    METRICS_OUT_COUNT,
};

enum metrics_finish {
    METRICS_FIN_LENGTH = 0,
    METRICS_FIN_EOS,
    METRICS_FIN_STOP,
    METRICS_FIN_COUNT,
};

enum metrics_hist {
    METRICS_H_QUEUE = 0,
    METRICS_H_TTFT,
    METRICS_H_ITL,
    METRICS_H_E2E,
    METRICS_H_PROMPT_TOKENS,
    METRICS_H_GEN_TOKENS,
    METRICS_H_COUNT,
};

#define METRICS_MAX_BUCKETS 24

struct metrics_histogram {
    int n_bounds;
    const double *bounds;                     /* (n_bounds) upper bounds, increasing */
    uint64_t counts[METRICS_MAX_BUCKETS + 1]; /* per bucket, not cumulative; last = +Inf */
    double sum;
    uint64_t count;
};

struct metrics {
    pthread_mutex_t mu;
    uint64_t requests[METRICS_OUT_COUNT];
    uint64_t finished[METRICS_FIN_COUNT];
    uint64_t prompt_tokens, generation_tokens, iterations;
    int running, waiting, batch_size, batch_tokens, ready;
    double kv_usage;
    uint64_t prefix_queries, prefix_hits, preemptions; /* the scheduler's counters */
    int prefix_pages;
    uint64_t forks, prefill_tokens; /* the scheduler's too */
    struct metrics_histogram h[METRICS_H_COUNT];
};

void metrics_init(struct metrics *m);
void metrics_free(struct metrics *m); /* accepts NULL */

void metrics_request(struct metrics *m, enum metrics_outcome o);
void metrics_finished(struct metrics *m, enum metrics_finish f);
void metrics_tokens(struct metrics *m, uint64_t prompt, uint64_t generated);
void metrics_observe(struct metrics *m, enum metrics_hist h, double value);
/* The worker's view after one iteration. */
void metrics_iteration(struct metrics *m, int running, int waiting, int batch_size,
                       int batch_tokens, double kv_usage);
void metrics_set_ready(struct metrics *m, int ready);
/* The scheduler's KV counters (running totals) and cached pages, after one iteration. */
void metrics_kv(struct metrics *m, uint64_t prefix_queries, uint64_t prefix_hits,
                uint64_t preemptions, int prefix_pages);
/* The scheduler's fork and prefill counters (running totals), after one iteration. */
void metrics_forks(struct metrics *m, uint64_t forks, uint64_t prefill_tokens);

/* Render everything in the Prometheus text format into a malloc'd string (*len bytes). MODEL
 * labels flashgen_model_info. Returns NULL when out of memory. */
char *metrics_render(struct metrics *m, const char *model, const char *version, size_t *len);

#endif
