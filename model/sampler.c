/* sampler.c — logits → token. Order as in Hugging Face generate: repetition penalty, then
 * temperature, top-k, top-p, then a draw (or argmax when do_sample is off). The generator is
 * xoshiro256** seeded through splitmix64, so a seed gives the same tokens on every machine. */
#include "sampler.h"

#include "kernels/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4])
{
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
static double rng_uniform(uint64_t s[4])
{
    return (double)(xoshiro_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

void sampler_params_default(struct sampler_params *p)
{
    memset(p, 0, sizeof(*p));
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
}

int sampler_init(struct sampler *s, const struct sampler_params *p, int vocab)
{
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

void sampler_free(struct sampler *s)
{
    if (!s) return;
    free(s->probs);
    free(s->idx);
    s->probs = NULL;
    s->idx = NULL;
}

static int cmp_prob_desc(const void *a, const void *b, void *probs)
{
    const float *p = probs;
    float pa = p[*(const int *)a], pb = p[*(const int *)b];
    if (pa > pb) return -1;
    if (pa < pb) return 1;
    return *(const int *)a - *(const int *)b; /* ties: lower id first, deterministic */
}

/* Each distinct id in the history is penalised once; SEEN (vocab ints) is scratch. */
static void apply_repetition_penalty(float *logits, int vocab, const int *history, int n,
                                     float penalty, int *seen)
{
    if (penalty == 1.0f || !history || n <= 0) return;
    memset(seen, 0, sizeof(int) * (size_t)vocab);
    for (int i = 0; i < n; i++) {
        int id = history[i];
        if (id < 0 || id >= vocab || seen[id]) continue;
        seen[id] = 1;
        logits[id] = logits[id] > 0 ? logits[id] / penalty : logits[id] * penalty;
    }
}

double sampler_uniform(struct sampler *s)
{
    return rng_uniform(s->rng);
}

int sampler_pick(const struct sampler_params *sp, float *logits, int V, const int *history,
                 int n_history, double u, float *probs, int *idx, float *logprob)
{
    apply_repetition_penalty(logits, V, history, n_history, sp->repetition_penalty, idx);

    if (!sp->do_sample) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        if (logprob) {
            double sum = 0;
            for (int i = 0; i < V; i++)
                sum += exp((double)logits[i] - logits[best]);
            *logprob = (float)-log(sum);
        }
        return best;
    }

    float temp = sp->temperature > 0 ? sp->temperature : 1.0f;
    float mx = -INFINITY;
    for (int i = 0; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < V; i++) {
        probs[i] = expf((logits[i] - mx) / temp);
        sum += probs[i];
    }
    for (int i = 0; i < V; i++) {
        probs[i] = (float)(probs[i] / sum);
        idx[i] = i;
    }
    /* Candidates sorted by probability; top-k and top-p cut the list. */
    int n = V;
    int need_sort = (sp->top_k > 0 && sp->top_k < V) || sp->top_p < 1.0f;
    if (need_sort) {
        qsort_r(idx, (size_t)V, sizeof(int), cmp_prob_desc, probs);
        if (sp->top_k > 0 && sp->top_k < n) n = sp->top_k;
        if (sp->top_p < 1.0f) {
            double cum = 0;
            int keep = 0;
            while (keep < n) {
                cum += probs[idx[keep]];
                keep++;
                if (cum >= sp->top_p) break;
            }
            n = keep;
        }
    }
    double total = 0;
    for (int i = 0; i < n; i++)
        total += probs[idx[i]];
    double r = u * total, acc = 0;
    int pick = idx[n - 1];
    for (int i = 0; i < n; i++) {
        acc += probs[idx[i]];
        if (r < acc) {
            pick = idx[i];
            break;
        }
    }
    if (logprob) *logprob = (float)log(probs[pick] / total);
    return pick;
}

int sampler_sample(struct sampler *s, float *logits, const int *history, int n_history,
                   float *logprob)
{
    double u = s->p.do_sample ? rng_uniform(s->rng) : 0.0;
    return sampler_pick(&s->p, logits, s->vocab, history, n_history, u, s->probs, s->idx,
                        logprob);
}

float sampler_log_softmax_at(const float *logits, int V, int id)
{
    float mx = logits[0];
    for (int i = 1; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < V; i++)
        sum += exp((double)(logits[i] - mx));
    return (float)((double)(logits[id] - mx) - log(sum));
}

void sampler_row(struct sampler *s, int hist_off, int n_hist, struct fg_sample_row *row)
{
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

void sampler_target_row(int id, struct fg_sample_row *row)
{
    memset(row, 0, sizeof(*row));
    row->temperature = 1.0f;
    row->top_p = 1.0f;
    row->repetition_penalty = 1.0f;
    row->target = id;
}
