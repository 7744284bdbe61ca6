/* test_sampler.c — greedy, seeded determinism, top-k / top-p support, repetition penalty,
 * logit bias and presence / frequency penalties, top-k alternatives. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "kernels/sample_ref.h"
#include "model/sampler.h"
#include "test_util.h"

#define V 1000

Test(sampler, greedy_is_argmax_and_logprob) {
    uint64_t s = tu_seed();
    float logits[V];
    tu_fill(&s, logits, V, -5, 5);
    logits[417] = 9;
    struct sampler_params p;
    sampler_params_default(&p);
    struct sampler smp;
    cr_assert_eq(sampler_init(&smp, &p, V), 0);
    float lp;
    cr_assert_eq(sampler_sample(&smp, logits, NULL, 0, &lp), 417);
    double sum = 0;
    for (int i = 0; i < V; i++)
        sum += exp(logits[i] - 9.0);
    cr_assert_float_eq(lp, -log(sum), 1e-4);
    sampler_free(&smp);
}

static void draw(const struct sampler_params *p, const float *base, int n, int *out) {
    struct sampler smp;
    cr_assert_eq(sampler_init(&smp, p, V), 0);
    float logits[V];
    for (int i = 0; i < n; i++) {
        memcpy(logits, base, sizeof(logits));
        out[i] = sampler_sample(&smp, logits, NULL, 0, NULL);
    }
    sampler_free(&smp);
}

Test(sampler, same_seed_same_tokens_and_cutoffs_hold) {
    uint64_t s = tu_seed();
    float base[V];
    tu_fill(&s, base, V, -2, 2);
    struct sampler_params p;
    sampler_params_default(&p);
    p.do_sample = 1;
    p.temperature = 0.9f;
    p.seed = 1234;
    int a[64], b[64], c[64];
    draw(&p, base, 64, a);
    draw(&p, base, 64, b);
    cr_assert_arr_eq(a, b, sizeof(a), "same seed must give the same tokens");
    p.seed = 99;
    draw(&p, base, 64, c);
    cr_assert(memcmp(a, c, sizeof(a)) != 0, "different seeds gave identical 64 draws");

    /* top-k: every draw is one of the k largest logits. */
    p.top_k = 5;
    draw(&p, base, 64, a);
    for (int i = 0; i < 64; i++) {
        int larger = 0;
        for (int j = 0; j < V; j++)
            larger += base[j] > base[a[i]];
        cr_assert(larger < 5, "top-k draw %d has %d larger logits", a[i], larger);
    }
    /* top-p tiny: only the argmax survives. */
    p.top_k = 0;
    p.top_p = 1e-6f;
    draw(&p, base, 16, a);
    int best = 0;
    for (int j = 1; j < V; j++)
        if (base[j] > base[best]) best = j;
    for (int i = 0; i < 16; i++)
        cr_assert_eq(a[i], best);
}

Test(sampler, repetition_penalty_changes_greedy_choice) {
    float logits[V] = {0};
    logits[10] = 3.0f;
    logits[20] = 2.0f;
    logits[30] = -1.0f;
    struct sampler_params p;
    sampler_params_default(&p);
    p.repetition_penalty = 2.0f;
    struct sampler smp;
    cr_assert_eq(sampler_init(&smp, &p, V), 0);
    int hist[3] = {10, 30, 10};
    cr_assert_eq(sampler_sample(&smp, logits, hist, 3, NULL), 20);
    cr_assert_float_eq(logits[10], 1.5f, 1e-6);  /* positive: divided once, not twice */
    cr_assert_float_eq(logits[30], -2.0f, 1e-6); /* negative: multiplied */
    sampler_free(&smp);
}

/* sample_ref_mask: every pick, greedy or sampled, is an allowed token; ids past the mask's
 * length are never picked; the logprob is over the allowed tokens. */
Test(sampler, mask_restricts_every_pick) {
    uint64_t s = tu_seed();
    float base[V], logits[V];
    tu_fill(&s, base, V, -3, 3);
    uint32_t mask[(V + 31) / 32] = {0};
    int n_mask = V - 100, allowed[V], n_allowed = 0;
    for (int i = 0; i < n_mask; i++)
        if (tu_next(&s) % 7 == 0) {
            mask[i >> 5] |= 1u << (i & 31);
            allowed[n_allowed++] = i;
        }
    cr_assert_gt(n_allowed, 1);
    int best = allowed[0];
    for (int k = 1; k < n_allowed; k++)
        if (base[allowed[k]] > base[best]) best = allowed[k];
    base[V - 1] = 100; /* past the mask: must lose even with the largest logit */
    struct sampler_params p;
    sampler_params_default(&p);
    struct sampler smp;
    cr_assert_eq(sampler_init(&smp, &p, V), 0);
    memcpy(logits, base, sizeof logits);
    sample_ref_mask(logits, V, mask, n_mask);
    float lp;
    cr_assert_eq(sampler_sample(&smp, logits, NULL, 0, &lp), best);
    double sum = 0;
    for (int k = 0; k < n_allowed; k++)
        sum += exp((double)base[allowed[k]] - base[best]);
    cr_assert_float_eq(lp, -log(sum), 1e-4);
    sampler_free(&smp);
    p.do_sample = 1;
    p.top_p = 0.9f;
    p.seed = 7;
    cr_assert_eq(sampler_init(&smp, &p, V), 0);
    for (int t = 0; t < 200; t++) {
        memcpy(logits, base, sizeof logits);
        sample_ref_mask(logits, V, mask, n_mask);
        int id = sampler_sample(&smp, logits, NULL, 0, NULL);
        cr_assert(id >= 0 && id < n_mask && (mask[id >> 5] >> (id & 31) & 1),
                  "picked %d, not allowed", id);
    }
    sampler_free(&smp);
}

/* sampler_deltas: logit_bias and the OpenAI penalties merged into one entry per id, as
 * mu[j] + bias[j] - c[j] * frequency - (c[j] > 0) * presence over the generated ids; then the
 * CPU bias op applies them. */
Test(sampler, deltas_merge_bias_and_penalties) {
    struct sampler_params p;
    sampler_params_default(&p);
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    p.n_bias = 2;
    p.bias_id[0] = 7;
    p.bias[0] = 3.0f;
    p.bias_id[1] = 900;
    p.bias[1] = -100.0f;
    struct sampler smp;
    cr_assert_eq(sampler_init(&smp, &p, V), 0);
    cr_assert(sampler_has_deltas(&smp));
    int gen[] = {7, 12, 12, 12, 999, 5000 /* outside the vocabulary: ignored */};
    struct fg_logit_delta d[8];
    int n = sampler_deltas(&smp, 3, gen, 6, d);
    cr_assert_eq(n, 4);
    float want[V] = {0};
    want[7] = 3.0f - 0.25f - 0.5f;
    want[900] = -100.0f;
    want[12] = -3 * 0.25f - 0.5f;
    want[999] = -0.25f - 0.5f;
    for (int i = 0; i < n; i++) {
        cr_expect_eq(d[i].row, 3);
        cr_expect_float_eq(d[i].delta, want[d[i].id], 1e-6, "id %d", d[i].id);
        want[d[i].id] = 0; /* each id once */
    }
    for (int i = 0; i < V; i++)
        cr_expect_eq(want[i], 0.0f, "id %d missing", i);
    /* the scratch is clean again: the same call gives the same entries */
    struct fg_logit_delta d2[8];
    cr_assert_eq(sampler_deltas(&smp, 3, gen, 6, d2), n);
    cr_expect_arr_eq(d, d2, sizeof(d[0]) * (size_t)n);

    /* the op: row 3 of 4 rows changes at those ids only */
    uint64_t s = tu_seed();
    static float x[4 * V], y[4 * V];
    tu_fill(&s, x, 4 * V, -5, 5);
    memcpy(y, x, sizeof x);
    sample_ref_bias(y, 4, V, d, n);
    for (int i = 0; i < 4 * V; i++) {
        float dv = 0;
        for (int e = 0; e < n; e++)
            if (i == 3 * V + d[e].id) dv = d[e].delta;
        cr_expect_eq(y[i], x[i] + dv, "logit %d", i);
    }
    sampler_free(&smp);

    /* no bias, no penalties: nothing to add */
    sampler_params_default(&p);
    cr_assert_eq(sampler_init(&smp, &p, V), 0);
    cr_expect(!sampler_has_deltas(&smp));
    cr_expect_eq(sampler_deltas(&smp, 0, gen, 6, d), 0);
    sampler_free(&smp);
}

/* sample_ref_top: the k largest by (logit desc, id asc), log softmax over the row, -1 past the
 * finite ids. */
Test(sampler, top_alternatives) {
    uint64_t s = tu_seed();
    float x[V];
    tu_fill(&s, x, V, -5, 5);
    x[10] = x[20] = 8; /* a tie: the lower id first */
    x[30] = 9;
    int ids[FG_TOP_MAX];
    float lps[FG_TOP_MAX];
    sample_ref_top(x, V, 3, ids, lps);
    cr_expect(ids[0] == 30 && ids[1] == 10 && ids[2] == 20);
    double sum = 0;
    for (int i = 0; i < V; i++)
        sum += exp((double)x[i] - 9.0);
    cr_expect_float_eq(lps[0], -log(sum), 1e-5);
    cr_expect_float_eq(lps[1], -1.0 - log(sum), 1e-5);
    sample_ref_top(x, V, FG_TOP_MAX, ids, lps);
    for (int j = 1; j < FG_TOP_MAX; j++)
        cr_expect(x[ids[j]] < x[ids[j - 1]] || (x[ids[j]] == x[ids[j - 1]] && ids[j] > ids[j - 1]));
    for (int i = 0; i < V; i++)
        if (i != 30) x[i] = -INFINITY;
    sample_ref_top(x, V, 4, ids, lps);
    cr_expect(ids[0] == 30 && lps[0] == 0.0f && ids[1] == -1 && ids[3] == -1 && isnan(lps[1]));
}
