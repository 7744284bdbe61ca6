/* test_ops.c — the CPU backend's ops against straightforward fp64 references on fresh random
 * inputs, at sizes that are not multiples of the vector width or the page size. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "test_util.h"

Test(ops, matmul_matches_fp64) {
    uint64_t seed = tu_seed(), s = seed;
    void *ctx = cpu_ops_create(2);
    const struct fg_ops *ops = cpu_ops();
    int shapes[][3] = {{1, 576, 192}, {5, 67, 33}, {13, 8, 9}, {4, 1536, 50}, {7, 3, 1}};
    for (size_t c = 0; c < sizeof(shapes) / sizeof(shapes[0]); c++) {
        int n = shapes[c][0], in = shapes[c][1], out = shapes[c][2];
        float *x = malloc(sizeof(float) * n * in), *w = malloc(sizeof(float) * out * in);
        float *y = malloc(sizeof(float) * n * out), *ref = malloc(sizeof(float) * n * out);
        tu_fill(&s, x, (size_t)n * in, -1, 1);
        tu_fill(&s, w, (size_t)out * in, -1, 1);
        for (int i = 0; i < n * out; i++)
            y[i] = NAN; /* poison */
        for (int t = 0; t < n; t++)
            for (int o = 0; o < out; o++) {
                double acc = 0;
                for (int i = 0; i < in; i++)
                    acc += (double)x[t * in + i] * w[o * in + i];
                ref[t * out + o] = (float)acc;
            }
        ops->matmul(ctx, y, x, w, n, in, out);
        /* fp32 accumulation over up to 1536 terms of size ~1: relative error ~1e-6. */
        double e = tu_rel_err(y, ref, (size_t)n * out);
        cr_assert(e < 1e-5, "matmul %dx%dx%d rel err %g (seed %llu)", n, in, out, e,
                  (unsigned long long)seed);
        free(x), free(w), free(y), free(ref);
    }
    cpu_ops_destroy(ctx);
}

Test(ops, rmsnorm_swiglu_add_rope) {
    uint64_t s = tu_seed();
    const struct fg_ops *ops = cpu_ops();
    int n = 3, dim = 37;
    float x[3 * 37], w[37], out[3 * 37];
    tu_fill(&s, x, sizeof(x) / sizeof(x[0]), -2, 2);
    tu_fill(&s, w, 37, 0.5f, 1.5f);
    ops->rmsnorm(NULL, out, x, w, n, dim, 1e-5f);
    for (int t = 0; t < n; t++) {
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)x[t * dim + i] * x[t * dim + i];
        double inv = 1.0 / sqrt(ss / dim + 1e-5);
        for (int i = 0; i < dim; i++)
            cr_assert_float_eq(out[t * dim + i], x[t * dim + i] * inv * w[i], 1e-5);
    }
    float g[5] = {-3, -0.5f, 0, 0.7f, 4}, u[5] = {1, 2, 3, 4, 5}, o[5];
    ops->swiglu(NULL, o, g, u, 5);
    for (int i = 0; i < 5; i++)
        cr_assert_float_eq(o[i], g[i] / (1 + exp(-g[i])) * u[i], 1e-5);
    ops->add(NULL, u, g, 5);
    cr_assert_float_eq(u[4], 9.0f, 1e-6);

    /* RoPE preserves the norm of each (i, i+d/2) pair and is the identity at position 0. */
    int hd = 8, nh = 2, nkv = 1;
    float q[2 * 8], k[8], q0[2 * 8], k0[8], freqs[4] = {1.0f, 0.1f, 0.01f, 0.001f};
    tu_fill(&s, q, 16, -1, 1);
    tu_fill(&s, k, 8, -1, 1);
    memcpy(q0, q, sizeof q);
    memcpy(k0, k, sizeof k);
    int pos0 = 0;
    ops->rope(NULL, q, k, &pos0, 1, nh, nkv, hd, freqs);
    for (int i = 0; i < 16; i++)
        cr_assert_float_eq(q[i], q0[i], 1e-7);
    int pos = 7;
    ops->rope(NULL, q, k, &pos, 1, nh, nkv, hd, freqs);
    for (int i = 0; i < 4; i++) {
        double a = atan2(k0[i + 4], k0[i]) + 7 * freqs[i];
        double r = hypot(k0[i], k0[i + 4]);
        cr_assert_float_eq(k[i], r * cos(a), 1e-5);
        cr_assert_float_eq(k[i + 4], r * sin(a), 1e-5);
    }
}

/* Dense fp64 attention of one sequence (keys 0..kv_len-1 contiguous) as the oracle. */
static void dense_attention(const float *q, const float *kd, const float *vd, int n_q, int kv_len,
                            int nh, int nkv, int hd, int causal, float *out) {
    int group = nh / nkv;
    double *sc = malloc(sizeof(double) * kv_len);
    for (int i = 0; i < n_q; i++) {
        int pos = kv_len - n_q + i;
        int n_vis = causal ? pos + 1 : kv_len;
        for (int h = 0; h < nh; h++) {
            const float *qr = q + ((size_t)i * nh + h) * hd;
            double mx = -1e300, sum = 0;
            for (int t = 0; t < n_vis; t++) {
                const float *kr = kd + ((size_t)t * nkv + h / group) * hd;
                double d = 0;
                for (int c = 0; c < hd; c++)
                    d += (double)qr[c] * kr[c];
                sc[t] = d / sqrt(hd);
                if (sc[t] > mx) mx = sc[t];
            }
            for (int t = 0; t < n_vis; t++)
                sum += sc[t] = exp(sc[t] - mx);
            for (int c = 0; c < hd; c++) {
                double acc = 0;
                for (int t = 0; t < n_vis; t++)
                    acc += sc[t] / sum * vd[((size_t)t * nkv + h / group) * hd + c];
                out[((size_t)i * nh + h) * hd + c] = (float)acc;
            }
        }
    }
    free(sc);
}

/* Paged attention over scattered pages, varlen batch, every GQA ratio of the issue, causal and
 * not, against the dense oracle. */
Test(ops, paged_attention_matches_dense) {
    uint64_t seed = tu_seed(), s = seed;
    void *ctx = cpu_ops_create(2);
    const struct fg_ops *ops = cpu_ops();
    int ratios[] = {1, 3, 4, 8};
    for (int ri = 0; ri < 4; ri++)
        for (int causal = 0; causal <= 1; causal++) {
            int nkv = 2, nh = nkv * ratios[ri], hd = 16, ps = 5, n_pages = 64;
            int n_seqs = 3, n_q[3] = {7, 1, 13}, kv_len[3] = {7, 23, 30};
            int kvd = nkv * hd, max_pages = 8;
            float *kp = malloc(sizeof(float) * n_pages * ps * kvd);
            float *vp = malloc(sizeof(float) * n_pages * ps * kvd);
            int table[3 * 8], perm[64], q_start[4] = {0};
            for (int i = 0; i < n_pages; i++)
                perm[i] = i;
            for (int i = n_pages - 1; i > 0; i--) { /* scatter pages */
                int j = (int)(tu_next(&s) % (uint64_t)(i + 1)), t = perm[i];
                perm[i] = perm[j], perm[j] = t;
            }
            int used = 0;
            for (int b = 0; b < n_seqs; b++) {
                q_start[b + 1] = q_start[b] + n_q[b];
                for (int p = 0; p < (kv_len[b] + ps - 1) / ps; p++)
                    table[b * max_pages + p] = perm[used++];
            }
            tu_fill(&s, kp, (size_t)n_pages * ps * kvd, -1, 1);
            tu_fill(&s, vp, (size_t)n_pages * ps * kvd, -1, 1);
            int total_q = q_start[n_seqs];
            float *q = malloc(sizeof(float) * total_q * nh * hd);
            float *out = malloc(sizeof(float) * total_q * nh * hd);
            float *ref = malloc(sizeof(float) * total_q * nh * hd);
            tu_fill(&s, q, (size_t)total_q * nh * hd, -1, 1);
            for (int i = 0; i < total_q * nh * hd; i++)
                out[i] = NAN;
            struct attn_batch ab = {.n_seqs = n_seqs,
                                    .q_start = q_start,
                                    .kv_len = kv_len,
                                    .block_table = table,
                                    .max_pages = max_pages,
                                    .page_size = ps,
                                    .n_heads = nh,
                                    .n_kv_heads = nkv,
                                    .head_dim = hd,
                                    .scale = 1.0f / sqrtf((float)hd),
                                    .causal = causal,
                                    .max_q_len = 13,
                                    .max_kv_len = 30};
            ops->attention(ctx, out, q, kp, vp, &ab);
            for (int b = 0; b < n_seqs; b++) {
                float *kd = malloc(sizeof(float) * kv_len[b] * kvd);
                float *vd = malloc(sizeof(float) * kv_len[b] * kvd);
                for (int t = 0; t < kv_len[b]; t++) {
                    size_t slot = (size_t)table[b * max_pages + t / ps] * ps + t % ps;
                    memcpy(kd + (size_t)t * kvd, kp + slot * kvd, sizeof(float) * kvd);
                    memcpy(vd + (size_t)t * kvd, vp + slot * kvd, sizeof(float) * kvd);
                }
                dense_attention(q + (size_t)q_start[b] * nh * hd, kd, vd, n_q[b], kv_len[b], nh,
                                nkv, hd, causal, ref + (size_t)q_start[b] * nh * hd);
                free(kd), free(vd);
            }
            /* fp32 softmax and sums over ≤ 30 keys: ~1e-6 relative. */
            double e = tu_rel_err(out, ref, (size_t)total_q * nh * hd);
            cr_assert(e < 1e-5, "ratio %d causal %d: rel err %g (seed %llu)", ratios[ri], causal, e,
                      (unsigned long long)seed);
            free(kp), free(vp), free(q), free(out), free(ref);
        }
    cpu_ops_destroy(ctx);
}

Test(ops, kv_write_and_gather) {
    float kp[4 * 6] = {0}, vp[4 * 6] = {0}, k[2 * 6], v[2 * 6];
    for (int i = 0; i < 12; i++)
        k[i] = (float)i, v[i] = (float)(100 + i);
    int slots[2] = {3, 1};
    cpu_ops()->kv_write(NULL, kp, vp, k, v, slots, 2, 6);
    cr_assert_float_eq(kp[3 * 6 + 2], 2.0f, 0);
    cr_assert_float_eq(vp[1 * 6 + 5], 111.0f, 0);
    float dst[2 * 6];
    int rows[2] = {1, 0};
    cpu_ops()->gather_rows(NULL, dst, k, rows, 2, 6);
    cr_assert_float_eq(dst[0], 6.0f, 0);
    cr_assert_float_eq(dst[6], 0.0f, 0);
}

/* The fused ops of the forward pass equal their unfused twins exactly: same fp32 dot products,
 * same elementwise arithmetic, only fewer passes. */
Test(ops, fused_ops_equal_unfused) {
    uint64_t seed = tu_seed(), s = seed;
    void *ctx = cpu_ops_create(2);
    const struct fg_ops *ops = cpu_ops();
    int n = 5, in = 37, out = 19, ffn = 23;
    float *x = malloc(sizeof(float) * n * in), *w = malloc(sizeof(float) * 2 * ffn * in);
    float *res = malloc(sizeof(float) * n * out), *res2 = malloc(sizeof(float) * n * out);
    float *y = malloc(sizeof(float) * n * 2 * ffn), *scratch = malloc(sizeof(float) * n * 2 * ffn);
    float *f1 = malloc(sizeof(float) * n * ffn), *f2 = malloc(sizeof(float) * n * ffn);
    tu_fill(&s, x, (size_t)n * in, -1, 1);
    tu_fill(&s, w, (size_t)2 * ffn * in, -1, 1);
    tu_fill(&s, res, (size_t)n * out, -1, 1);
    memcpy(res2, res, sizeof(float) * n * out);

    ops->matmul_add(ctx, res, x, w, n, in, out); /* res += x wᵀ */
    ops->matmul(ctx, y, x, w, n, in, out);
    ops->add(ctx, res2, y, (size_t)n * out);
    cr_assert(memcmp(res, res2, sizeof(float) * n * out) == 0, "matmul_add (seed %llu)",
              (unsigned long long)seed);

    ops->matmul_swiglu(ctx, f1, x, w, n, in, ffn, scratch);
    ops->matmul(ctx, y, x, w, n, in, 2 * ffn);
    for (int t = 0; t < n; t++)
        ops->swiglu(ctx, f2 + t * ffn, y + t * 2 * ffn, y + t * 2 * ffn + ffn, (size_t)ffn);
    cr_assert(memcmp(f1, f2, sizeof(float) * n * ffn) == 0, "matmul_swiglu (seed %llu)",
              (unsigned long long)seed);
    free(x), free(w), free(res), free(res2), free(y), free(scratch), free(f1), free(f2);
    cpu_ops_destroy(ctx);
}

Test(ops, qkv_store_equals_rope_and_kv_write) {
    uint64_t seed = tu_seed(), s = seed;
    enum { N = 3, NH = 4, NKV = 2, HD = 8, QD = NH * HD, KVD = NKV * HD, PAGES = 8 };
    float qkv[N * (QD + 2 * KVD)], q[N * QD], k[N * KVD], v[N * KVD], freqs[HD / 2];
    float kp1[PAGES * KVD] = {0}, vp1[PAGES * KVD] = {0}, kp2[PAGES * KVD] = {0};
    float vp2[PAGES * KVD] = {0}, q_out[N * QD];
    int pos[N] = {0, 7, 300}, slots[N] = {5, 0, 6};
    tu_fill(&s, qkv, sizeof(qkv) / sizeof(qkv[0]), -1, 1);
    for (int i = 0; i < HD / 2; i++)
        freqs[i] = 1.0f / (float)(1 + 3 * i);
    for (int t = 0; t < N; t++) {
        const float *row = qkv + t * (QD + 2 * KVD);
        memcpy(q + t * QD, row, sizeof(float) * QD);
        memcpy(k + t * KVD, row + QD, sizeof(float) * KVD);
        memcpy(v + t * KVD, row + QD + KVD, sizeof(float) * KVD);
    }
    cpu_ops()->rope(NULL, q, k, pos, N, NH, NKV, HD, freqs);
    cpu_ops()->kv_write(NULL, kp1, vp1, k, v, slots, N, KVD);
    cpu_ops()->qkv_store(NULL, q_out, kp2, vp2, qkv, pos, slots, N, NH, NKV, HD, freqs);
    cr_assert(memcmp(q, q_out, sizeof(q)) == 0, "q (seed %llu)", (unsigned long long)seed);
    cr_assert(memcmp(kp1, kp2, sizeof(kp1)) == 0, "k pool (seed %llu)", (unsigned long long)seed);
    cr_assert(memcmp(vp1, vp2, sizeof(vp1)) == 0, "v pool (seed %llu)", (unsigned long long)seed);
}

/* Sliding-window attention (Mistral, Gemma 3's local layers) over scattered pages, varlen
 * batch: each query row equals dense attention over only its last `window` keys; a window as
 * long as the context is the plain attention. */
Test(ops, attention_window_matches_dense_over_the_window) {
    uint64_t seed = tu_seed(), s = seed;
    void *ctx = cpu_ops_create(2);
    const struct fg_ops *ops = cpu_ops();
    int windows[] = {1, 4, 9, 30};
    for (int wi = 0; wi < 4; wi++) {
        int W = windows[wi], nkv = 1, nh = 4, hd = 24, ps = 5, n_pages = 32, max_pages = 8;
        int n_seqs = 3, n_q[3] = {7, 1, 13}, kv_len[3] = {7, 23, 30}, kvd = nkv * hd;
        int table[3 * 8], q_start[4] = {0}, used = 0;
        float *kp = malloc(sizeof(float) * n_pages * ps * kvd);
        float *vp = malloc(sizeof(float) * n_pages * ps * kvd);
        for (int b = 0; b < n_seqs; b++) {
            q_start[b + 1] = q_start[b] + n_q[b];
            for (int p = 0; p < (kv_len[b] + ps - 1) / ps; p++)
                table[b * max_pages + p] = (used++ * 7) % n_pages; /* scattered, distinct */
        }
        tu_fill(&s, kp, (size_t)n_pages * ps * kvd, -1, 1);
        tu_fill(&s, vp, (size_t)n_pages * ps * kvd, -1, 1);
        int total_q = q_start[n_seqs];
        size_t nq = (size_t)total_q * nh * hd;
        float *q = malloc(sizeof(float) * nq), *out = malloc(sizeof(float) * nq);
        float *ref = malloc(sizeof(float) * nq), *plain = malloc(sizeof(float) * nq);
        tu_fill(&s, q, nq, -1, 1);
        for (size_t i = 0; i < nq; i++)
            out[i] = NAN;
        struct attn_batch ab = {.n_seqs = n_seqs,
                                .q_start = q_start,
                                .kv_len = kv_len,
                                .block_table = table,
                                .max_pages = max_pages,
                                .page_size = ps,
                                .n_heads = nh,
                                .n_kv_heads = nkv,
                                .head_dim = hd,
                                .scale = 1.0f / sqrtf((float)hd),
                                .causal = 1,
                                .max_q_len = 13,
                                .max_kv_len = 30};
        ops->attention_window(ctx, out, q, kp, vp, &ab, W);
        ops->attention(ctx, plain, q, kp, vp, &ab);
        for (int b = 0; b < n_seqs; b++)
            for (int i = 0; i < n_q[b]; i++) {
                int pos = kv_len[b] - n_q[b] + i, first = pos + 1 > W ? pos + 1 - W : 0;
                int n = pos + 1 - first;
                float *kd = malloc(sizeof(float) * n * kvd), *vd = malloc(sizeof(float) * n * kvd);
                for (int t = first; t <= pos; t++) {
                    size_t slot = (size_t)table[b * max_pages + t / ps] * ps + t % ps;
                    memcpy(kd + (size_t)(t - first) * kvd, kp + slot * kvd, sizeof(float) * kvd);
                    memcpy(vd + (size_t)(t - first) * kvd, vp + slot * kvd, sizeof(float) * kvd);
                }
                size_t row = (size_t)(q_start[b] + i) * nh * hd;
                dense_attention(q + row, kd, vd, 1, n, nh, nkv, hd, 1, ref + row);
                free(kd), free(vd);
            }
        /* fp32 softmax and sums over ≤ 30 keys: ~1e-6 relative. */
        double e = tu_rel_err(out, ref, nq);
        cr_assert(e < 1e-5, "window %d: rel err %g (seed %llu)", W, e, (unsigned long long)seed);
        if (W >= 30)
            cr_assert_eq(memcmp(out, plain, sizeof(float) * nq), 0, "a full window is plain");
        else
            cr_assert(tu_rel_err(out, plain, nq) > 1e-3, "window %d changes nothing", W);
        free(kp), free(vp), free(q), free(out), free(ref), free(plain);
    }
    cpu_ops_destroy(ctx);
}

/* The family ops against their formulas in fp64: bias rows, per-head RMSNorm on the fused q|k
 * rows (v untouched), post-norm residual add, GELU-tanh gate, scale, soft-cap. */
Test(ops, family_ops_match_formulas) {
    uint64_t s = tu_seed();
    const struct fg_ops *ops = cpu_ops();
    int n = 3, nh = 2, nkv = 1, hd = 10, row = (nh + 2 * nkv) * hd;
    float qkv[3 * 40], qkv0[3 * 40], bias[40], qw[10], kw[10];
    tu_fill(&s, qkv, sizeof(qkv) / sizeof(qkv[0]), -2, 2);
    tu_fill(&s, bias, 40, -1, 1);
    tu_fill(&s, qw, 10, 0.5f, 1.5f);
    tu_fill(&s, kw, 10, 0.5f, 1.5f);
    memcpy(qkv0, qkv, sizeof qkv);
    ops->add_rows(NULL, qkv, bias, n, row);
    for (int i = 0; i < n * row; i++)
        cr_assert_float_eq(qkv[i], qkv0[i] + bias[i % row], 1e-6);
    memcpy(qkv0, qkv, sizeof qkv);
    ops->head_norm(NULL, qkv, qw, kw, n, nh, nkv, hd, 1e-6f);
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nh + 2 * nkv; h++) {
            const float *x = qkv0 + t * row + h * hd;
            double ss = 0;
            for (int i = 0; i < hd; i++)
                ss += (double)x[i] * x[i];
            double inv = 1.0 / sqrt(ss / hd + 1e-6);
            for (int i = 0; i < hd; i++) {
                double want = h < nh         ? x[i] * inv * qw[i]
                              : h < nh + nkv ? x[i] * inv * kw[i]
                                             : x[i];
                cr_assert_float_eq(qkv[t * row + h * hd + i], want, 1e-5, "t %d head %d", t, h);
            }
        }
    int dim = 37;
    float x[3 * 37], x0[3 * 37], y[3 * 37], w[37];
    tu_fill(&s, x, sizeof(x) / sizeof(x[0]), -2, 2);
    tu_fill(&s, y, sizeof(y) / sizeof(y[0]), -2, 2);
    tu_fill(&s, w, 37, 0.5f, 1.5f);
    memcpy(x0, x, sizeof x);
    ops->norm_add(NULL, x, y, w, n, dim, 1e-6f);
    for (int t = 0; t < n; t++) {
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)y[t * dim + i] * y[t * dim + i];
        double inv = 1.0 / sqrt(ss / dim + 1e-6);
        for (int i = 0; i < dim; i++)
            cr_assert_float_eq(x[t * dim + i], x0[t * dim + i] + y[t * dim + i] * inv * w[i], 1e-5);
    }
    float gu[2 * 10], o[2 * 5];
    tu_fill(&s, gu, 20, -4, 4);
    ops->geglu(NULL, o, gu, 2, 5);
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < 5; i++) {
            double g = gu[t * 10 + i], u = gu[t * 10 + 5 + i];
            double want = 0.5 * g * (1 + tanh(sqrt(2 / M_PI) * (g + 0.044715 * g * g * g))) * u;
            cr_assert_float_eq(o[t * 5 + i], want, 1e-5);
        }
    float v[4] = {-3, 0, 0.5f, 100};
    ops->scale(NULL, v, 4, 2.0f);
    cr_assert(v[0] == -6 && v[1] == 0 && v[2] == 1 && v[3] == 200);
    ops->softcap(NULL, v, 4, 30.0f);
    for (int i = 0; i < 4; i++)
        cr_assert_float_eq(v[i], 30 * tanh((double)(float[]){-6, 0, 1, 200}[i] / 30), 1e-5);
}
