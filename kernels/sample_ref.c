/* sample_ref.c — logits → token in plain C (sample_ref.h). Order as in Hugging Face generate:
 * repetition penalty, then temperature, top-k, top-p, then a draw (or argmax when do_sample is
 * off). Kept plain (qsort for the cut, sequential double sums) because it is the reference. */
#include "sample_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_prob_desc(const void *a, const void *b, void *probs) {
    const float *p = probs;
    float pa = p[*(const int *)a], pb = p[*(const int *)b];
    if (pa > pb) return -1;
    if (pa < pb) return 1;
    return *(const int *)a - *(const int *)b; /* ties: lower id first, deterministic */
}

/* Each distinct id in the history is penalised once; SEEN (vocab ints) is scratch. */
static void apply_repetition_penalty(float *logits, int vocab, const int *history, int n,
                                     float penalty, int *seen) {
    if (penalty == 1.0f || !history || n <= 0) return;
    memset(seen, 0, sizeof(int) * (size_t)vocab);
    for (int i = 0; i < n; i++) {
        int id = history[i];
        if (id < 0 || id >= vocab || seen[id]) continue;
        seen[id] = 1;
        logits[id] = logits[id] > 0 ? logits[id] / penalty : logits[id] * penalty;
    }
}

/* log softmax(logits)[id] over V values, in double. */
static float log_softmax_at(const float *logits, int V, int id) {
    float mx = logits[0];
    for (int i = 1; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < V; i++)
        sum += exp((double)(logits[i] - mx));
    return (float)((double)(logits[id] - mx) - log(sum));
}

void sample_ref_bias(float *logits, int n_rows, int V, const struct fg_logit_delta *d, int n) {
    for (int e = 0; e < n; e++)
        if (d[e].row >= 0 && d[e].row < n_rows && d[e].id >= 0 && d[e].id < V)
            logits[(size_t)d[e].row * (size_t)V + (size_t)d[e].id] += d[e].delta;
}

/* (a, ia) comes before (b, ib) in the top-k order. */
static int top_before(float a, int ia, float b, int ib) {
    return a > b || (a == b && ia < ib);
}

void sample_ref_top(const float *logits, int V, int k, int *ids, float *lps) {
    if (k > FG_TOP_MAX) k = FG_TOP_MAX;
    if (k <= 0) return;
    int n = 0;
    for (int i = 0; i < V; i++) { /* insertion into a sorted list of at most k */
        if (logits[i] == -INFINITY) continue;
        if (n == k && !top_before(logits[i], i, logits[ids[k - 1]], ids[k - 1])) continue;
        int j = n < k ? n++ : k - 1;
        while (j > 0 && top_before(logits[i], i, logits[ids[j - 1]], ids[j - 1])) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = i;
    }
    if (n > 0) {
        float mx = logits[ids[0]];
        double sum = 0;
        for (int i = 0; i < V; i++)
            sum += exp((double)(logits[i] - mx));
        double lse = log(sum);
        for (int j = 0; j < n; j++)
            lps[j] = (float)((double)(logits[ids[j]] - mx) - lse);
    }
    for (int j = n; j < k; j++) {
        ids[j] = -1;
        lps[j] = NAN;
    }
}

void sample_ref_mask(float *logits, int V, const uint32_t *mask, int n_mask) {
    for (int i = 0; i < V; i++)
        if (i >= n_mask || !(mask[i >> 5] >> (i & 31) & 1)) logits[i] = -INFINITY;
}

int sample_ref_pick(const struct fg_sample_row *r, float *logits, int V, const int *history,
                    float *probs, int *idx, float *logprob) {
    if (r->target >= 0) {
        if (r->target >= V) {
            if (logprob) *logprob = NAN;
            return -1;
        }
        if (logprob) *logprob = log_softmax_at(logits, V, r->target);
        return r->target;
    }
    apply_repetition_penalty(logits, V, history ? history + r->hist_off : NULL, r->n_hist,
                             r->repetition_penalty, idx);

    if (!r->do_sample) {
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

    float temp = r->temperature > 0 ? r->temperature : 1.0f;
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
    int need_sort = (r->top_k > 0 && r->top_k < V) || r->top_p < 1.0f;
    if (need_sort) {
        qsort_r(idx, (size_t)V, sizeof(int), cmp_prob_desc, probs);
        if (r->top_k > 0 && r->top_k < n) n = r->top_k;
        if (r->top_p < 1.0f) {
            double cum = 0;
            int keep = 0;
            while (keep < n) {
                cum += probs[idx[keep]];
                keep++;
                if (cum >= r->top_p) break;
            }
            n = keep;
        }
    }
    double total = 0;
    for (int i = 0; i < n; i++)
        total += probs[idx[i]];
    double rr = r->u * total, acc = 0;
    int pick = idx[n - 1];
    for (int i = 0; i < n; i++) {
        acc += probs[idx[i]];
        if (rr < acc) {
            pick = idx[i];
            break;
        }
    }
    if (logprob) *logprob = (float)log(probs[pick] / total);
    return pick;
}
