/* test_cpu_attn.c — the tiled CPU attention (kernels/cpu_attn.c) in every variant this CPU runs
 * against a straightforward fp64 softmax over the paged cache, on fresh random inputs: long
 * sequences (many query and key blocks, lengths not multiples of the tiles), varlen batches of
 * prefill, continued-prefill and decode rows, causal and not, sliding windows, GQA ratios, head
 * sizes that are not multiples of the vector widths, and peaked scores. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_attn.h"
#include "kernels/cpu_pool.h"
#include "kernels/ops.h"
#include "test_util.h"

/* A batch over a page pool whose pages are handed out in a shuffled order. */
struct ta_case {
    int n_seqs, n_q[4], kv_len[4];
    int nh, nkv, hd, ps, causal, window;
    float q_amp; /* q in [-q_amp, q_amp]; k, v in [-1, 1] */
};

struct ta_data {
    struct attn_batch ab;
    int q_start[5], table[4 * 512];
    float *q, *kp, *vp;
    size_t nq; /* floats of q and out */
};

static void ta_build(uint64_t *s, const struct ta_case *c, struct ta_data *d) {
    int max_pages = 512, n_pages = 0;
    for (int b = 0; b < c->n_seqs; b++)
        n_pages += (c->kv_len[b] + c->ps - 1) / c->ps;
    int *perm = malloc(sizeof(int) * (size_t)(n_pages + 1));
    for (int i = 0; i < n_pages; i++)
        perm[i] = i;
    for (int i = n_pages - 1; i > 0; i--) {
        int k = (int)(tu_next(s) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[k], perm[k] = t;
    }
    int used = 0;
    d->q_start[0] = 0;
    for (int b = 0; b < c->n_seqs; b++) {
        d->q_start[b + 1] = d->q_start[b] + c->n_q[b];
        int np = (c->kv_len[b] + c->ps - 1) / c->ps;
        cr_assert(np <= max_pages);
        for (int p = 0; p < np; p++)
            d->table[b * max_pages + p] = perm[used++];
    }
    free(perm);
    size_t kvd = (size_t)c->nkv * c->hd, pool = (size_t)(n_pages + 1) * c->ps * kvd;
    d->kp = malloc(sizeof(float) * pool);
    d->vp = malloc(sizeof(float) * pool);
    tu_fill(s, d->kp, pool, -1, 1);
    tu_fill(s, d->vp, pool, -1, 1);
    d->nq = (size_t)d->q_start[c->n_seqs] * c->nh * c->hd;
    d->q = malloc(sizeof(float) * d->nq);
    tu_fill(s, d->q, d->nq, -c->q_amp, c->q_amp);
    int mq = 0, mk = 0;
    for (int b = 0; b < c->n_seqs; b++) {
        mq = c->n_q[b] > mq ? c->n_q[b] : mq;
        mk = c->kv_len[b] > mk ? c->kv_len[b] : mk;
    }
    d->ab = (struct attn_batch){.n_seqs = c->n_seqs,
                                .q_start = d->q_start,
                                .kv_len = c->kv_len,
                                .block_table = d->table,
                                .max_pages = max_pages,
                                .page_size = c->ps,
                                .n_heads = c->nh,
                                .n_kv_heads = c->nkv,
                                .head_dim = c->hd,
                                .scale = 1.0f / sqrtf((float)c->hd),
                                .causal = c->causal,
                                .max_q_len = mq,
                                .max_kv_len = mk};
}

static void ta_free(struct ta_data *d) {
    free(d->q), free(d->kp), free(d->vp);
}

/* The oracle: for each row and head, the visible keys by the definition in kernels/ops.h,
 * softmax and weighted sum in fp64, reading keys through the page table one by one. */
static void ta_reference(const struct ta_case *c, const struct ta_data *d, float *ref) {
    const struct attn_batch *b = &d->ab;
    size_t kvd = (size_t)c->nkv * c->hd;
    int group = c->nh / c->nkv;
    double *sc = malloc(sizeof(double) * (size_t)(b->max_kv_len + 1));
    double *acc = malloc(sizeof(double) * (size_t)c->hd);
    for (int s = 0; s < c->n_seqs; s++)
        for (int i = 0; i < c->n_q[s]; i++) {
            int pos = c->kv_len[s] - c->n_q[s] + i;
            int end = c->causal ? pos + 1 : c->kv_len[s];
            int first = c->window > 0 && end > c->window ? end - c->window : 0;
            for (int h = 0; h < c->nh; h++) {
                const float *qr = d->q + ((size_t)(d->q_start[s] + i) * c->nh + h) * c->hd;
                double mx = -INFINITY, sum = 0;
                for (int t = first; t < end; t++) {
                    size_t slot = (size_t)d->table[s * 512 + t / c->ps] * c->ps + t % c->ps;
                    const float *kr = d->kp + slot * kvd + (size_t)(h / group) * c->hd;
                    double dot = 0;
                    for (int e = 0; e < c->hd; e++)
                        dot += (double)qr[e] * kr[e];
                    sc[t] = dot / sqrt((double)c->hd);
                    mx = sc[t] > mx ? sc[t] : mx;
                }
                for (int e = 0; e < c->hd; e++)
                    acc[e] = 0;
                for (int t = first; t < end; t++) {
                    size_t slot = (size_t)d->table[s * 512 + t / c->ps] * c->ps + t % c->ps;
                    const float *vr = d->vp + slot * kvd + (size_t)(h / group) * c->hd;
                    double p = exp(sc[t] - mx);
                    sum += p;
                    for (int e = 0; e < c->hd; e++)
                        acc[e] += p * vr[e];
                }
                float *o = ref + ((size_t)(d->q_start[s] + i) * c->nh + h) * c->hd;
                for (int e = 0; e < c->hd; e++)
                    o[e] = sum > 0 ? (float)(acc[e] / sum) : 0.0f;
            }
        }
    free(sc), free(acc);
}

/* Every variant this CPU runs, pooled (2 threads) and on the calling thread, against the
 * oracle; the pooled and unpooled outputs are the same bits (an item's arithmetic does not
 * depend on the thread that runs it). */
static void ta_check(const struct ta_case *c, double tol, const char *what) {
    uint64_t seed = tu_seed(), s = seed;
    struct ta_data d;
    ta_build(&s, c, &d);
    float *ref = malloc(sizeof(float) * d.nq), *out = malloc(sizeof(float) * d.nq);
    float *one = malloc(sizeof(float) * d.nq);
    ta_reference(c, &d, ref);
    struct cpu_pool *pool = cpu_pool_create(2);
    for (int isa = 0; isa < CQ_ISA_COUNT; isa++) {
        if (!cq_isa_supported((enum cq_isa)isa)) continue;
        for (size_t i = 0; i < d.nq; i++)
            out[i] = one[i] = NAN;
        cr_assert_eq(cpu_attn(pool, (enum cq_isa)isa, out, d.q, d.kp, d.vp, &d.ab, c->window), 0);
        cr_assert_eq(cpu_attn(NULL, (enum cq_isa)isa, one, d.q, d.kp, d.vp, &d.ab, c->window), 0);
        double e = tu_rel_err(out, ref, d.nq);
        cr_assert(e < tol, "%s, %s: rel err %g > %g (seed %llu)", what,
                  cq_isa_name((enum cq_isa)isa), e, tol, (unsigned long long)seed);
        cr_assert(memcmp(out, one, sizeof(float) * d.nq) == 0, "%s, %s: threads change bits", what,
                  cq_isa_name((enum cq_isa)isa));
    }
    cpu_pool_destroy(pool);
    free(ref), free(out), free(one);
    ta_free(&d);
}

/* fp32 scores, exp2 and sums over up to ~2 100 keys: measured 1e-7 .. 2.5e-7 relative against
 * fp64 (every variant); 5e-6 leaves room for unlucky seeds while catching any masking or
 * rescaling mistake (those give errors of 1e-2 and up). */
#define TA_TOL 5e-6

/* SmolLM2's attention shape (9 query heads on 3 KV heads, head_dim 64, pages of 16): a prompt
 * of 200 tokens, a 70-token chunk after 1 430 cached ones, and a decode row at 2 100, causal. */
Test(cpu_attn, long_varlen_causal_matches_fp64) {
    struct ta_case c = {.n_seqs = 3,
                        .n_q = {200, 70, 1},
                        .kv_len = {200, 1500, 2100},
                        .nh = 9,
                        .nkv = 3,
                        .hd = 64,
                        .ps = 16,
                        .causal = 1,
                        .q_amp = 1};
    ta_check(&c, TA_TOL, "causal");
}

/* Sliding windows (Gemma 3's local layers, Mistral) on the same batch: windows shorter than a
 * key block, not a multiple of it, and longer than some contexts; 1 sees only the row itself. */
Test(cpu_attn, long_varlen_windows_match_fp64) {
    int windows[] = {1, 37, 512, 1024};
    for (int w = 0; w < 4; w++) {
        struct ta_case c = {.n_seqs = 3,
                            .n_q = {200, 70, 1},
                            .kv_len = {200, 1500, 2100},
                            .nh = 8,
                            .nkv = 2,
                            .hd = 64,
                            .ps = 16,
                            .causal = 1,
                            .window = windows[w],
                            .q_amp = 1};
        char what[32];
        snprintf(what, sizeof what, "window %d", windows[w]);
        ta_check(&c, TA_TOL, what);
    }
}

/* Not causal (every row sees its whole sequence), with and without a window. */
Test(cpu_attn, non_causal_matches_fp64) {
    for (int w = 0; w < 2; w++) {
        struct ta_case c = {.n_seqs = 2,
                            .n_q = {130, 3},
                            .kv_len = {130, 900},
                            .nh = 4,
                            .nkv = 4,
                            .hd = 32,
                            .ps = 7,
                            .causal = 0,
                            .window = w ? 100 : 0,
                            .q_amp = 1};
        ta_check(&c, TA_TOL, w ? "non-causal, window 100" : "non-causal");
    }
}

/* Head sizes off the vector widths (24: one AVX2 vector and a scalar tail; 80: one AVX-512
 * block of 64 and a vector of 16; 256: Gemma 3's) and every GQA ratio, small scattered pages. */
Test(cpu_attn, odd_head_dims_and_ratios_match_fp64) {
    int dims[] = {24, 80, 256}, ratios[] = {1, 4, 8};
    for (int di = 0; di < 3; di++)
        for (int ri = 0; ri < 3; ri++) {
            struct ta_case c = {.n_seqs = 4,
                                .n_q = {67, 1, 5, 1},
                                .kv_len = {67, 300, 131, 1},
                                .nh = 2 * ratios[ri],
                                .nkv = 2,
                                .hd = dims[di],
                                .ps = 5,
                                .causal = 1,
                                .q_amp = 1};
            char what[48];
            snprintf(what, sizeof what, "head_dim %d ratio %d", dims[di], ratios[ri]);
            ta_check(&c, TA_TOL, what);
        }
}

/* Peaked scores (q up to ±8: logits up to ~±30), where the running maximum moves by a lot
 * between key blocks and the rescaling of earlier blocks matters. fp32 scores of that size
 * carry ~1e-6 absolute error each, which the exponent turns into relative error of the
 * probabilities: measured ~1e-6, bound 2e-5. */
Test(cpu_attn, peaked_scores_match_fp64) {
    struct ta_case c = {.n_seqs = 2,
                        .n_q = {150, 1},
                        .kv_len = {1000, 1777},
                        .nh = 6,
                        .nkv = 2,
                        .hd = 64,
                        .ps = 16,
                        .causal = 1,
                        .q_amp = 8};
    ta_check(&c, 2e-5, "peaked");
}

/* A decode batch (one query row per sequence, so the tiles and their scratch are smallest),
 * contexts from one key to past two thousand, with and without a window. */
Test(cpu_attn, decode_batch_matches_fp64) {
    for (int w = 0; w < 2; w++) {
        struct ta_case c = {.n_seqs = 4,
                            .n_q = {1, 1, 1, 1},
                            .kv_len = {1, 77, 640, 2049},
                            .nh = 9,
                            .nkv = 3,
                            .hd = 64,
                            .ps = 16,
                            .causal = 1,
                            .window = w ? 100 : 0,
                            .q_amp = 1};
        ta_check(&c, TA_TOL, w ? "decode, window 100" : "decode");
    }
}
