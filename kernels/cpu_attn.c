/* cpu_attn.c — tiled, vectorized, threaded attention for the CPU backend (kernels/cpu_attn.h).
 *
 * The work of one item (sequence s, KV head g, query rows i0 .. i1-1 of s):
 *   tile rows r = (i, h) for i in [i0, i1) and the `group` query heads h of g, q pre-scaled by
 *   scale · log2(e) so that the softmax runs on exp2;
 *   for each block of CPU_ATTN_KB keys the tile can see: gather the block's keys transposed,
 *   (hd, KB), from their pages; then, four tile rows at a time, S = q Kᵀ, the row's mask
 *   (causal, window, past the block's end) where the block is not wholly visible to it,
 *   m' = max(m, max S), P = 2^(S - m'), l = l 2^(m - m') + Σ P, O = O 2^(m - m') + P V;
 *   finally out = O / l.
 * So K and V are read once per item, not once per query row, and the O(n²) work is register-
 * tiled multiply-adds (S: 4 rows × 2–4 vectors of keys; PV: 4 rows × 2–4 vectors of head_dim).
 *
 * Cost of an item ≈ rows × visible keys; items are sorted by it (largest first) and taken
 * from one atomic counter by every thread of the pool, so a causal prefill, whose late query
 * blocks see many more keys than its early ones, still splits evenly.
 */
#include "cpu_attn.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_pool.h"
#include "ops.h"

/* One work item. */
struct ca_item {
    int s, g;    /* sequence, KV head */
    int i0, i1;  /* query rows of s (0-based within s) */
    double cost; /* rows × visible keys, for the ordering */
};

/* Per-thread scratch, sized for the batch: 64-byte aligned float arrays. */
struct ca_scratch {
    float *q;           /* (QB · group, hd) the tile's q rows, pre-scaled */
    float *o;           /* (QB · group, hd) unnormalised output rows */
    float *m, *l;       /* (QB · group) running max (log2 domain) and sum */
    float *kt;          /* (hd, KB) one key block, transposed */
    float *p;           /* (4, KB) scores, then probabilities, of four rows */
    const float **vrow; /* (KB) the block's value rows */
};

/* One (sequence, KV head)'s keys 0 .. kv_len-1 transposed, (hd, ld) floats, ld >= kv_len +
 * CA_NC (the columns past kv_len zero), so a block starting at any key reads ncols columns. */
struct ca_kt {
    float *kt; /* NULL: not made, the items gather their blocks */
    size_t ld;
};

struct ca_job {
    float *out;
    const float *q, *k_pool, *v_pool;
    const struct attn_batch *b;
    int window, group;
    int max_rows;           /* rows of the largest tile: min(QB, longest query run) · group */
    float qscale;           /* scale · log2(e) */
    const struct ca_kt *kt; /* (n_seqs, n_kv_heads), or NULL */
    const struct ca_item *items;
    int n_items;
    int next;   /* next item to take (atomic) */
    int failed; /* a worker had no scratch (atomic) */
};

/* Position bounds of query row i of sequence s: it sees keys [first, end). */
static inline void ca_row_keys(const struct ca_job *j, int s, int i, int *first, int *end) {
    const struct attn_batch *b = j->b;
    int n_q = b->q_start[s + 1] - b->q_start[s];
    int kv_len = b->kv_len[s];
    int pos = kv_len - n_q + i;
    int n_vis = b->causal ? pos + 1 : kv_len;
    if (n_vis < 0) n_vis = 0;
    *end = n_vis;
    *first = j->window > 0 && n_vis > j->window ? n_vis - j->window : 0;
}

/* ---- the variants ------------------------------------------------------------------------ */

#define CA_KB CPU_ATTN_KB
#define CA_RT 4 /* tile rows per register block */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CA_X86 1
#else
#define CA_X86 0
#endif

#define CA_SUF c
#define CA_VW 4
#define CA_NV 2
#include "cpu_attn_body.h"
#undef CA_SUF
#undef CA_VW
#undef CA_NV

#if CA_X86
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CA_SUF avx2
#define CA_VW 8
#define CA_NV 2
#define CA_FMA(a, b, c) ((ca_vf_avx2)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#include "cpu_attn_body.h"
#undef CA_FMA
#undef CA_SUF
#undef CA_VW
#undef CA_NV
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f")
#define CA_SUF avx512
#define CA_VW 16
#define CA_NV 4
#define CA_FMA(a, b, c) ((ca_vf_avx512)_mm512_fmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)))
#include "cpu_attn_body.h"
#undef CA_FMA
#undef CA_SUF
#undef CA_VW
#undef CA_NV
#pragma GCC pop_options
typedef void (*ca_item_fn)(const struct ca_job *, const struct ca_item *, struct ca_scratch *);
static const ca_item_fn ca_items[CQ_ISA_COUNT] = {ca_item_c, ca_item_avx2, ca_item_avx512};
#else /* other compilers and targets: the portable body under every name (never selected) */
typedef void (*ca_item_fn)(const struct ca_job *, const struct ca_item *, struct ca_scratch *);
static const ca_item_fn ca_items[CQ_ISA_COUNT] = {ca_item_c, ca_item_c, ca_item_c};
#endif

/* ---- planning and threads ---------------------------------------------------------------- */

static int ca_cost_desc(const void *a, const void *b) {
    double x = ((const struct ca_item *)a)->cost, y = ((const struct ca_item *)b)->cost;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void *ca_alloc(size_t floats) {
    void *p = NULL;
    if (posix_memalign(&p, 64, (floats ? floats : 1) * sizeof(float)) != 0) return NULL;
    return p;
}

static void ca_scratch_free(struct ca_scratch *w) {
    free(w->q);
    free(w->o);
    free(w->m);
    free(w->l);
    free(w->kt);
    free(w->p);
    free(w->vrow);
}

static int ca_scratch_init(struct ca_scratch *w, int rows, int hd) {
    memset(w, 0, sizeof(*w));
    w->q = ca_alloc((size_t)rows * hd);
    w->o = ca_alloc((size_t)rows * hd);
    w->m = ca_alloc((size_t)rows);
    w->l = ca_alloc((size_t)rows);
    w->kt = ca_alloc((size_t)hd * CA_KB);
    w->p = ca_alloc((size_t)CA_RT * CA_KB);
    w->vrow = malloc(sizeof(*w->vrow) * CA_KB);
    if (w->q && w->o && w->m && w->l && w->kt && w->p && w->vrow) return 0;
    ca_scratch_free(w);
    return -1;
}

/* The item's output rows set to NaN (no scratch: the failure shows in the output). */
static void ca_item_nan(const struct ca_job *j, const struct ca_item *it) {
    const struct attn_batch *b = j->b;
    for (int i = it->i0; i < it->i1; i++) {
        float *o =
            j->out +
            ((size_t)(b->q_start[it->s] + i) * b->n_heads + (size_t)it->g * j->group) * b->head_dim;
        for (int c = 0; c < j->group * b->head_dim; c++)
            o[c] = NAN;
    }
}

/* Keys of (sequence, KV head) pairs [begin, end) into their ca_kt (pairs without one skipped). */
struct ca_tjob {
    const struct ca_job *job;
    struct ca_kt *kt;
};

static void ca_transpose(void *arg, size_t begin, size_t end) {
    const struct ca_tjob *tj = arg;
    const struct attn_batch *b = tj->job->b;
    int hd = b->head_dim;
    size_t kv_dim = (size_t)b->n_kv_heads * hd;
    for (size_t i = begin; i < end; i++) {
        const struct ca_kt *t = &tj->kt[i];
        if (!t->kt) continue;
        int s = (int)(i / (size_t)b->n_kv_heads), g = (int)(i % (size_t)b->n_kv_heads);
        const int *pages = b->block_table + (size_t)s * b->max_pages;
        for (int key = 0; key < b->kv_len[s]; key++) {
            size_t slot = (size_t)pages[key / b->page_size] * b->page_size + key % b->page_size;
            const float *kr = tj->job->k_pool + slot * kv_dim + (size_t)g * hd;
            for (int d = 0; d < hd; d++)
                t->kt[(size_t)d * t->ld + key] = kr[d];
        }
        for (int d = 0; d < hd; d++)
            memset(t->kt + (size_t)d * t->ld + b->kv_len[s], 0,
                   sizeof(float) * (t->ld - (size_t)b->kv_len[s]));
    }
}

/* Transposes the keys of every sequence with more than one query block (its items would each
 * gather the same keys again: at a 512-token chunk of an 8k prompt, 8 times), in one buffer; NULL
 * when no sequence needs it or there is no memory (the items then gather their own). */
static struct ca_kt *ca_transpose_keys(struct cpu_pool *pool, const struct ca_job *j, float **buf) {
    const struct attn_batch *b = j->b;
    size_t n = (size_t)b->n_seqs * b->n_kv_heads, floats = 0;
    *buf = NULL;
    for (int s = 0; s < b->n_seqs; s++)
        if (b->q_start[s + 1] - b->q_start[s] > CPU_ATTN_QB && b->kv_len[s] > 0)
            floats += (size_t)b->n_kv_heads * b->head_dim * ((size_t)b->kv_len[s] + 2 * CA_KB);
    if (floats == 0) return NULL;
    struct ca_kt *kt = calloc(n, sizeof(*kt));
    float *p = kt ? ca_alloc(floats) : NULL;
    if (!p) {
        free(kt);
        return NULL;
    }
    size_t at = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        if (b->q_start[s + 1] - b->q_start[s] <= CPU_ATTN_QB || b->kv_len[s] <= 0) continue;
        /* a multiple of 16 floats plus 16, so rows do not all fall on the same cache sets */
        size_t ld = ((size_t)b->kv_len[s] + CA_KB + 15) / 16 * 16 + 16;
        for (int g = 0; g < b->n_kv_heads; g++) {
            kt[(size_t)s * b->n_kv_heads + g] = (struct ca_kt){p + at, ld};
            at += (size_t)b->head_dim * ld;
        }
    }
    struct ca_tjob tj = {j, kt};
    cpu_pool_for(pool, n, 1, ca_transpose, &tj);
    *buf = p;
    return kt;
}

struct ca_run {
    struct ca_job *job;
    ca_item_fn fn;
};

/* One pool thread: takes items from the shared counter until none is left. */
static void ca_worker(void *arg, size_t begin, size_t end) {
    const struct ca_run *run = arg;
    struct ca_job *j = run->job;
    for (size_t w = begin; w < end; w++) {
        struct ca_scratch sc;
        int ok = ca_scratch_init(&sc, j->max_rows, j->b->head_dim) == 0;
        if (!ok) __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        for (;;) {
            int k = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
            if (k >= j->n_items) break;
            if (ok)
                run->fn(j, &j->items[k], &sc);
            else
                ca_item_nan(j, &j->items[k]);
        }
        if (ok) ca_scratch_free(&sc);
    }
}

int cpu_attn(struct cpu_pool *pool, enum cq_isa isa, float *out, const float *q,
             const float *k_pool, const float *v_pool, const struct attn_batch *b, int window) {
    if (b->n_seqs <= 0 || b->n_kv_heads <= 0) return 0;
    if (isa < 0 || isa >= CQ_ISA_COUNT) isa = CQ_ISA_C;
    struct ca_job j = {.out = out,
                       .q = q,
                       .k_pool = k_pool,
                       .v_pool = v_pool,
                       .b = b,
                       .window = window,
                       .group = b->n_heads / b->n_kv_heads,
                       .qscale = b->scale * 1.4426950408889634f};
    int n_items = 0, max_q = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        int n_q = b->q_start[s + 1] - b->q_start[s];
        n_items += (n_q + CPU_ATTN_QB - 1) / CPU_ATTN_QB * b->n_kv_heads;
        max_q = n_q > max_q ? n_q : max_q;
    }
    /* decode batches (one query per sequence) get small tiles and small scratch */
    j.max_rows = (max_q < CPU_ATTN_QB ? max_q : CPU_ATTN_QB) * j.group;
    if (n_items == 0) return 0;
    struct ca_item *items = malloc(sizeof(*items) * (size_t)n_items);
    if (!items) {
        size_t n = (size_t)b->q_start[b->n_seqs] * b->n_heads * b->head_dim;
        for (size_t i = 0; i < n; i++)
            out[i] = NAN;
        return -1;
    }
    int k = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        int n_q = b->q_start[s + 1] - b->q_start[s];
        for (int i0 = 0; i0 < n_q; i0 += CPU_ATTN_QB) {
            int i1 = i0 + CPU_ATTN_QB < n_q ? i0 + CPU_ATTN_QB : n_q, f0, e0, f1, e1;
            ca_row_keys(&j, s, i0, &f0, &e0);
            ca_row_keys(&j, s, i1 - 1, &f1, &e1);
            double cost = (double)(i1 - i0) * ((e0 - f0) + (e1 - f1)) / 2 + 1;
            for (int g = 0; g < b->n_kv_heads; g++)
                items[k++] = (struct ca_item){s, g, i0, i1, cost};
        }
    }
    qsort(items, (size_t)n_items, sizeof(*items), ca_cost_desc);
    float *ktbuf;
    struct ca_kt *kt = ca_transpose_keys(pool, &j, &ktbuf);
    j.kt = kt;
    j.items = items;
    j.n_items = n_items;
    struct ca_run run = {&j, ca_items[isa]};
    /* one thread when the whole op is shorter than the pool's wake-up (a decode step's at a
     * short context); the cost in ns at ~15 flop/ns, the decode rows' rate here (bench_cpu --attn
     * 1024, 2026-12-02) */
    double flop = 0;
    for (int i = 0; i < n_items; i++)
        flop += items[i].cost * j.group * b->head_dim * 4.0;
    pool = cpu_pool_if_worth(pool, flop / 15.0);
    int nt = pool ? cpu_pool_size(pool) : 1;
    if (nt > n_items) nt = n_items;
    cpu_pool_for(pool, (size_t)nt, 1, ca_worker, &run);
    free(items);
    free(kt);
    free(ktbuf);
    return j.failed ? -1 : 0;
}
