/* sampler.c — one request's sampler: its parameters and generator, and the rows it hands to a
 * backend's sample op. The pick itself is kernels/sample_ref.c (the GPU kernel's C twin), so the
 * CPU, the GPU and sampler_sample() decide alike. The generator is xoshiro256** seeded through
 * splitmix64, so a seed gives the same tokens on every machine. */
#include "sampler.h"

#include "kernels/sample_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4]) {
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform double in [0, 1) from the top 53 bits. */
static double rng_uniform(uint64_t s[4]) {
    return (double)(xoshiro_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

void sampler_params_default(struct sampler_params *p) {
    memset(p, 0, sizeof(*p));
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
}

int sampler_init(struct sampler *s, const struct sampler_params *p, int vocab) {
    memset(s, 0, sizeof(*s));
    s->p = *p;
    s->vocab = vocab;
    s->probs = malloc(sizeof(float) * (size_t)vocab);
    s->idx = malloc(sizeof(int) * (size_t)vocab);
    if (!s->probs || !s->idx) {
        sampler_free(s);
        return -1;
    }
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    return 0;
}

void sampler_free(struct sampler *s) {
    if (!s) return;
    free(s->probs);
    free(s->idx);
    s->probs = NULL;
    s->idx = NULL;
}

int sampler_sample(struct sampler *s, float *logits, const int *history, int n_history,
                   float *logprob) {
    struct fg_sample_row row;
    sampler_row(s, 0, n_history, &row);
    return sample_ref_pick(&row, logits, s->vocab, history, s->probs, s->idx, logprob);
}

void sampler_row(struct sampler *s, int hist_off, int n_hist, struct fg_sample_row *row) {
    memset(row, 0, sizeof(*row));
    row->do_sample = s->p.do_sample;
    row->temperature = s->p.temperature;
    row->top_k = s->p.top_k;
    row->top_p = s->p.top_p;
    row->repetition_penalty = s->p.repetition_penalty;
    row->target = -1;
    row->hist_off = hist_off;
    row->n_hist = n_hist;
    row->u = s->p.do_sample ? rng_uniform(s->rng) : 0.0;
}

void sampler_target_row(int id, struct fg_sample_row *row) {
    memset(row, 0, sizeof(*row));
    row->temperature = 1.0f;
    row->top_p = 1.0f;
    row->repetition_penalty = 1.0f;
    row->target = id;
}
