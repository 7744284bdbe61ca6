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
    if (sampler_has_deltas(s)) {
        s->count = calloc((size_t)vocab, sizeof(int));
        s->touched = malloc(sizeof(int) * (size_t)vocab);
        s->acc = malloc(sizeof(float) * (size_t)vocab);
    }
    if (!s->probs || !s->idx || (sampler_has_deltas(s) && (!s->count || !s->touched || !s->acc))) {
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
    free(s->count);
    free(s->touched);
    free(s->acc);
    s->acc = NULL;
    s->probs = NULL;
    s->idx = NULL;
    s->count = s->touched = NULL;
}

int sampler_has_deltas(const struct sampler *s) {
    return s->p.n_bias > 0 || s->p.presence_penalty != 0 || s->p.frequency_penalty != 0;
}

int sampler_deltas(struct sampler *s, int row, const int *gen, int n_gen,
                   struct fg_logit_delta *out) {
    if (!s->count) return 0;
    int n_ids = 0;
    /* count[id]: generated occurrences + 1 (so that 0 means "not listed yet") */
    for (int j = 0; j < s->p.n_bias; j++) {
        int id = s->p.bias_id[j];
        if (id < 0 || id >= s->vocab || s->count[id]) continue;
        s->count[id] = 1;
        s->acc[id] = s->p.bias[j];
        s->touched[n_ids++] = id;
    }
    int pen = s->p.presence_penalty != 0 || s->p.frequency_penalty != 0;
    for (int t = 0; pen && t < n_gen; t++) {
        int id = gen[t];
        if (id < 0 || id >= s->vocab) continue;
        if (!s->count[id]++) {
            s->count[id] = 2;
            s->acc[id] = 0;
            s->touched[n_ids++] = id;
        }
    }
    int n = 0;
    for (int j = 0; j < n_ids; j++) {
        int id = s->touched[j], c = s->count[id] - 1;
        s->count[id] = 0;
        float d = s->acc[id];
        if (c > 0) d -= s->p.frequency_penalty * (float)c + s->p.presence_penalty;
        if (d != 0) out[n++] = (struct fg_logit_delta){row, id, d};
    }
    return n;
}

int sampler_sample(struct sampler *s, float *logits, const int *history, int n_history,
                   float *logprob) {
    struct fg_sample_row row;
    for (int j = 0; j < s->p.n_bias; j++)
        if (s->p.bias_id[j] >= 0 && s->p.bias_id[j] < s->vocab)
            logits[s->p.bias_id[j]] += s->p.bias[j];
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
