/* sampler.h — turns one row of logits into a token: logit bias and presence / frequency
 * penalties (OpenAI), repetition penalty, temperature, top-k, top-p, then a draw from a
 * per-request seeded generator (same seed, same output) or argmax.
 * Thread-neutral: a sampler belongs to one request.
 */
#ifndef FG_SAMPLER_H
#define FG_SAMPLER_H

#include <stdint.h>

/* Most logit_bias entries one request may give (a fixed array, so the parameters stay a value
 * that is copied from the request to the worker's sequence). */
#define SAMPLER_MAX_BIAS 300

struct sampler_params {
    int do_sample;            /* 0: greedy (argmax after the repetition penalty) */
    float temperature;        /* > 0; 1 = unchanged */
    int top_k;                /* 0 = off */
    float top_p;              /* 1 = off; in (0, 1] */
    float repetition_penalty; /* 1 = off; CTRL-style: divide positive logits, multiply negative */
    uint64_t seed;
    /* OpenAI: logits[j] += bias[j] - frequency_penalty * c[j] - presence_penalty * (c[j] > 0),
     * c[j] = times j was generated so far (the prompt does not count); before the repetition
     * penalty, the grammar mask and everything else */
    float presence_penalty, frequency_penalty; /* 0 = off; in [-2, 2] */
    int n_bias;
    int bias_id[SAMPLER_MAX_BIAS]; /* distinct ids */
    float bias[SAMPLER_MAX_BIAS];  /* in [-100, 100] */
};

struct sampler {
    struct sampler_params p;
    uint64_t rng[4]; /* xoshiro256** state */
    int vocab;
    float *probs; /* (vocab) scratch */
    int *idx;     /* (vocab) scratch */
    int *count;   /* (vocab) zeros between calls of sampler_deltas; NULL when it has no deltas */
    int *touched; /* (vocab) sampler_deltas' list of ids */
    float *acc;   /* (vocab) sampler_deltas' bias per listed id */
};

void sampler_params_default(struct sampler_params *p); /* greedy */
int sampler_init(struct sampler *s, const struct sampler_params *p, int vocab);
void sampler_free(struct sampler *s);
/* Sample from logits (modified in place by the penalty). HISTORY holds the ids seen so far
 * (prompt + generated) for the repetition penalty; the logit bias is added first (the presence
 * and frequency penalties, which need the generated ids alone, are the caller's:
 * sampler_deltas). The pick is sample_ref_pick()
 * (kernels/sample_ref.h) on sampler_row()'s row. *logprob gets log p(token) under the final
 * distribution (may be NULL). */
int sampler_sample(struct sampler *s, float *logits, const int *history, int n_history,
                   float *logprob);
struct fg_sample_row;
struct fg_logit_delta;
/* Whether s adds deltas (bias or penalties) to its logits. */
int sampler_has_deltas(const struct sampler *s);
/* The deltas of s's next pick for the bias op (kernels/ops.h bias_logits) as row ROW, given the
 * N_GEN ids GEN generated so far: the bias and the penalties merged, one entry per id, ids in
 * first-seen order (bias ids, then generated ones), zero sums left out. OUT holds at least
 * n_bias + n_gen entries. Returns how many were written. */
int sampler_deltas(struct sampler *s, int row, const int *gen, int n_gen,
                   struct fg_logit_delta *out);
/* Describe s's next pick for a backend's sample op (kernels/ops.h): the parameters, the next
 * uniform draw when sampling, and the history window [hist_off, hist_off + n_hist) of the op's
 * history array. */
void sampler_row(struct sampler *s, int hist_off, int n_hist, struct fg_sample_row *row);
/* A row that picks nothing: the op returns id and log softmax(logits)[id]. */
void sampler_target_row(int id, struct fg_sample_row *row);

#endif
