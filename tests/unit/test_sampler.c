/* test_sampler.c — greedy, seeded determinism, top-k / top-p support, repetition penalty. */
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
