/* sampler.h — turns one row of logits into a token: repetition penalty, temperature, top-k,
 * top-p, then a draw from a per-request seeded generator (same seed, same output) or argmax.
 * Thread-neutral: a sampler belongs to one request.
 */
#ifndef FG_SAMPLER_H
#define FG_SAMPLER_H

#include <stdint.h>

struct sampler_params {
    int do_sample;            /* 0: greedy (argmax after the repetition penalty) */
    float temperature;        /* > 0; 1 = unchanged */
    int top_k;                /* 0 = off */
    float top_p;              /* 1 = off; in (0, 1] */
    float repetition_penalty; /* 1 = off; CTRL-style: divide positive logits, multiply negative */
    uint64_t seed;
};

struct sampler {
    struct sampler_params p;
    uint64_t rng[4]; /* xoshiro256** state */
    int vocab;
    float *probs; /* (vocab) scratch */
    int *idx;     /* (vocab) scratch */
};

void sampler_params_default(struct sampler_params *p); /* greedy */
int sampler_init(struct sampler *s, const struct sampler_params *p, int vocab);
void sampler_free(struct sampler *s);
/* Sample from logits (modified in place by the penalty). HISTORY holds the ids seen so far
 * (prompt + generated) for the repetition penalty. The pick is sample_ref_pick()
 * (kernels/sample_ref.h) on sampler_row()'s row. *logprob gets log p(token) under the final
 * distribution (may be NULL). */
int sampler_sample(struct sampler *s, float *logits, const int *history, int n_history,
                   float *logprob);
struct fg_sample_row;
/* Describe s's next pick for a backend's sample op (kernels/ops.h): the parameters, the next
 * uniform draw when sampling, and the history window [hist_off, hist_off + n_hist) of the op's
 * history array. */
void sampler_row(struct sampler *s, int hist_off, int n_hist, struct fg_sample_row *row);
/* A row that picks nothing: the op returns id and log softmax(logits)[id]. */
void sampler_target_row(int id, struct fg_sample_row *row);

#endif
