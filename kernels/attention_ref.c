/* attention_ref.c — plain-C twins of the CUDA attention kernels (see attention_ref.h). Written
 * for clarity, not speed: one (query row, head) at a time, one part at a time. */
#include "attention_ref.h"

#include <math.h>
#include <stddef.h>

/* Sequence of query row `row` (q_start ascending). */
static int ref_seq_of(const struct attn_batch *b, int row) {
    int s = 0;
    while (b->q_start[s + 1] <= row)
        s++;
    return s;
}

static const float *ref_kv_row(const float *pool, const struct attn_batch *b, int s, int key,
                               int kvh) {
    const int *pages = b->block_table + (size_t)s * b->max_pages;
    size_t slot = (size_t)pages[key / b->page_size] * b->page_size + key % b->page_size;
    return pool + (slot * b->n_kv_heads + kvh) * b->head_dim;
}

static double ref_score(const float *qr, const float *kr, int hd, float scale) {
    double d = 0;
    for (int i = 0; i < hd; i++)
        d += (double)qr[i] * kr[i];
    return d * scale;
}

/* Keys visible to query row `row` of sequence s. */
static int ref_visible(const struct attn_batch *b, int s, int row) {
    int n_q = b->q_start[s + 1] - b->q_start[s];
    int pos = b->kv_len[s] - n_q + (row - b->q_start[s]);
    return b->causal ? pos + 1 : b->kv_len[s];
}

void attn_ref_lse(float *lse, const float *q, const float *k_pool, const struct attn_batch *b) {
    int hd = b->head_dim, group = b->n_heads / b->n_kv_heads;
    for (int row = 0; row < b->q_start[b->n_seqs]; row++) {
        int s = ref_seq_of(b, row), n_vis = ref_visible(b, s, row);
        for (int h = 0; h < b->n_heads; h++) {
            const float *qr = q + ((size_t)row * b->n_heads + h) * hd;
            double mx = -INFINITY, sum = 0;
            for (int t = 0; t < n_vis; t++) {
                double sc = ref_score(qr, ref_kv_row(k_pool, b, s, t, h / group), hd, b->scale);
                if (sc > mx) {
                    sum = sum * exp(mx - sc) + 1;
                    mx = sc;
                } else {
                    sum += exp(sc - mx);
                }
            }
            lse[(size_t)row * b->n_heads + h] = n_vis > 0 ? (float)(mx + log(sum)) : -INFINITY;
        }
    }
}

void attn_ref_decode_split(float *out, const float *q, const float *k_pool, const float *v_pool,
                           const struct attn_batch *b, int n_splits) {
    int hd = b->head_dim, group = b->n_heads / b->n_kv_heads;
    for (int row = 0; row < b->q_start[b->n_seqs]; row++) {
        int s = ref_seq_of(b, row), n_vis = ref_visible(b, s, row);
        int kps = (b->kv_len[s] + n_splits - 1) / n_splits;
        kps = (kps + 15) / 16 * 16;
        for (int h = 0; h < b->n_heads; h++) {
            const float *qr = q + ((size_t)row * b->n_heads + h) * hd;
            float *o = out + ((size_t)row * b->n_heads + h) * hd;
            double acc[512], part[512]; /* head_dim ≤ 512 */
            double big_m = -INFINITY, big_l = 0;
            for (int i = 0; i < hd; i++)
                acc[i] = 0;
            for (int sp = 0; sp < n_splits; sp++) {
                int k0 = sp * kps, k1 = k0 + kps < n_vis ? k0 + kps : n_vis;
                if (k1 <= k0) continue;
                /* one part: max, sum and normalised output, then its LSE */
                double mx = -INFINITY, sum = 0;
                for (int t = k0; t < k1; t++) {
                    double sc = ref_score(qr, ref_kv_row(k_pool, b, s, t, h / group), hd, b->scale);
                    if (sc > mx) mx = sc;
                }
                for (int i = 0; i < hd; i++)
                    part[i] = 0;
                for (int t = k0; t < k1; t++) {
                    int kvh = h / group;
                    double p =
                        exp(ref_score(qr, ref_kv_row(k_pool, b, s, t, kvh), hd, b->scale) - mx);
                    const float *vr = ref_kv_row(v_pool, b, s, t, kvh);
                    sum += p;
                    for (int i = 0; i < hd; i++)
                        part[i] += p * vr[i];
                }
                double lse = mx + log(sum);
                /* merge: running max over the parts' LSE */
                double nm = lse > big_m ? lse : big_m;
                double a = exp(big_m - nm), w = exp(lse - nm);
                for (int i = 0; i < hd; i++)
                    acc[i] = acc[i] * a + w * part[i] / sum;
                big_l = big_l * a + w;
                big_m = nm;
            }
            for (int i = 0; i < hd; i++)
                o[i] = big_l > 0 ? (float)(acc[i] / big_l) : 0.f;
        }
    }
}
