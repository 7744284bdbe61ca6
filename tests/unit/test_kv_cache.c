/* test_kv_cache.c — page accounting: reserve grows a block table, exhaustion takes nothing,
 * release returns every page; the prefix cache's refcounts, hash chain and LRU eviction. */
#include <criterion/criterion.h>

#include "kernels/ops.h"
#include "model/kv_cache.h"
#include "model/model.h"

#include <string.h>

Test(kv_cache, reserve_release_exhaust) {
    struct model_config cfg = {.n_layers = 2, .n_kv_heads = 2, .head_dim = 8};
    struct kv_cache kv;
    cr_assert_eq(kv_cache_init(&kv, cpu_ops(), NULL, &cfg, 10, 16, sizeof(float)), 0);
    cr_assert_eq(kv_cache_page_bytes(&cfg, 16, 4), (size_t)2 * 2 * 16 * 2 * 8 * 4);
    struct kv_seq a = {0}, b = {0};
    cr_assert_eq(kv_seq_reserve(&kv, &a, 1), 0);
    cr_assert_eq(a.n_pages, 1);
    cr_assert_eq(kv_seq_reserve(&kv, &a, 16), 0);
    cr_assert_eq(a.n_pages, 1);
    cr_assert_eq(kv_seq_reserve(&kv, &a, 100), 0); /* 7 pages */
    cr_assert_eq(a.n_pages, 7);
    cr_assert_eq(kv.n_free, 3);
    cr_assert_eq(kv_seq_reserve(&kv, &b, 64), -1, "4 pages must not fit in 3");
    cr_assert_eq(b.n_pages, 0);
    cr_assert_eq(kv.n_free, 3);
    cr_assert_eq(kv_seq_reserve(&kv, &b, 48), 0);
    for (int i = 0; i < a.n_pages; i++)
        for (int j = 0; j < b.n_pages; j++)
            cr_assert_neq(a.pages[i], b.pages[j], "a page is shared");
    kv_seq_release(&kv, &a);
    kv_seq_release(&kv, &b);
    cr_assert_eq(kv.n_free, 10);
    kv_cache_free(&kv);
    kv_cache_free(&kv); /* idempotent */
}

/* Publish a sequence holding TOKENS (n, a multiple of the page size) and release it. */
static void cache_tokens(struct kv_cache *kv, struct kv_seq *s, const int *tokens, int n) {
    memset(s, 0, sizeof *s);
    cr_assert_eq(kv_seq_reserve(kv, s, n), 0);
    s->n_tokens = n;
    kv_seq_publish(kv, s, tokens);
    cr_assert_eq(s->n_hashed, n / kv->page_size);
}

Test(kv_cache, refcounts_hash_chain_and_lru_eviction) {
    struct kv_cache kv;
    cr_assert_eq(kv_cache_init_pages(&kv, 4, 2, 7), 0);
    const int ta[] = {1, 2, 3, 4}, tb[] = {5, 6, 7, 8}, tx[] = {9, 9, 3, 4};
    struct kv_seq a, b, c = {0}, m = {0}, m2 = {0};
    cache_tokens(&kv, &a, ta, 4);
    int a0 = a.pages[0], a1 = a.pages[1];
    kv_seq_release(&kv, &a);
    cr_assert_eq(kv.n_cached, 2, "published pages stay cached");
    cr_assert_eq(kv.n_free, 2);
    cache_tokens(&kv, &b, tb, 4);
    int b0 = b.pages[0], b1 = b.pages[1];
    kv_seq_release(&kv, &b);
    cr_assert_eq(kv.n_cached, 4);
    cr_assert_eq(kv.n_free, 0);
    cr_assert_eq(kv_cache_available(&kv), 4);
    /* oldest first, and a sequence's tail before its head */
    cr_assert_eq(kv.lru_head, a1);
    cr_assert_eq(kv.lru_next[a1], a0);
    cr_assert_eq(kv.lru_next[a0], b1);
    cr_assert_eq(kv.lru_next[b1], b0);
    /* the chain: [3 4] after [9 9] is not the cached [3 4] after [1 2] */
    cr_assert_eq(kv_seq_match(&kv, &m, tx, 4, 4), 0);
    cr_assert_eq(m.n_pages, 0);
    cr_assert_neq(kv_cache_chain(kv_cache_chain(7, ta, 2), ta + 2, 2),
                  kv_cache_chain(7, ta + 2, 2));
    /* two holders of the same cached pages */
    cr_assert_eq(kv_seq_match(&kv, &m, tb, 4, 4), 4);
    cr_assert_eq(kv_seq_match(&kv, &m2, tb, 4, 3), 2, "whole pages within max_tokens");
    cr_assert_eq(m.pages[0], b0);
    cr_assert_eq(kv.ref[b0], 2);
    cr_assert_eq(kv.ref[b1], 1);
    cr_assert_eq(kv.n_cached, 2, "held pages leave the LRU");
    /* a fresh page evicts the oldest unheld one: a's tail, which breaks a's chain there */
    cr_assert_eq(kv_seq_reserve(&kv, &c, 2), 0);
    cr_assert_eq(c.pages[0], a1);
    cr_assert_eq(kv.hashed[a1], 0);
    struct kv_seq ma = {0};
    cr_assert_eq(kv_seq_match(&kv, &ma, ta, 4, 4), 2, "only a's head is left");
    cr_assert_eq(kv_seq_reserve(&kv, &c, 8), -1, "nothing left to take");
    kv_seq_release(&kv, &m2);
    cr_assert_eq(kv.ref[b0], 1, "still held by m");
    cr_assert_eq(kv.n_cached, 0);
    kv_seq_release(&kv, &m);
    kv_seq_release(&kv, &ma);
    kv_seq_release(&kv, &c);
    cr_assert_eq(kv.n_cached, 3);
    cr_assert_eq(kv.n_free, 1);
    /* publishing what is already cached keeps the second copy private */
    struct kv_seq d;
    cache_tokens(&kv, &d, tb, 4);
    cr_assert_eq(kv.n_free + kv.n_cached, 2);
    kv_seq_release(&kv, &d);
    cr_assert_eq(kv_cache_available(&kv), 4);
    for (int p = 0; p < 4; p++)
        cr_assert_eq(kv.ref[p], 0);
    kv_cache_free(&kv);
}

/* Fork: full pages shared (one more reference), the partial last page copied on the backend (all
 * layers, K and V), the copy private from then on; no page for the copy means nothing taken. */
Test(kv_cache, fork_shares_full_pages_copies_the_partial_one) {
    struct model_config cfg = {.n_layers = 2, .n_kv_heads = 2, .head_dim = 4};
    struct kv_cache kv;
    const int ps = 4;
    cr_assert_eq(kv_cache_init(&kv, cpu_ops(), NULL, &cfg, 5, ps, sizeof(float)), 0);
    size_t row = (size_t)cfg.n_kv_heads * cfg.head_dim, pe = ps * row; /* floats per row, page */
    struct kv_seq a = {0}, b = {0}, c = {0};
    cr_assert_eq(kv_seq_reserve(&kv, &a, 10), 0); /* pages for rows 0..9: 2 full + 1 partial */
    a.n_tokens = 10;
    for (int l = 0; l < cfg.n_layers; l++)
        for (int t = 0; t < 10; t++)
            for (size_t e = 0; e < row; e++) {
                size_t at = (size_t)a.pages[t / ps] * pe + (size_t)(t % ps) * row + e;
                ((float *)kv.k[l])[at] = (float)(1000 * l + 10 * t) + (float)e * 0.5f;
                ((float *)kv.v[l])[at] = -(float)(1000 * l + 10 * t) - (float)e * 0.25f;
            }
    cr_assert_eq(kv_seq_fork(&kv, &a, &b, 9), 0);
    cr_assert_eq(b.n_tokens, 9);
    cr_assert_eq(b.n_pages, 3);
    cr_assert_eq(b.pages[0], a.pages[0]);
    cr_assert_eq(b.pages[1], a.pages[1]);
    cr_assert_neq(b.pages[2], a.pages[2], "the partial page is copied, not shared");
    cr_assert_eq(kv.ref[a.pages[0]], 2);
    cr_assert_eq(kv.ref[a.pages[2]], 1);
    cr_assert_eq(kv.ref[b.pages[2]], 1);
    for (int l = 0; l < cfg.n_layers; l++)
        for (int t = 8; t < 9; t++)
            for (size_t e = 0; e < row; e++) {
                size_t sa = (size_t)a.pages[2] * pe + (size_t)(t % ps) * row + e;
                size_t sb = (size_t)b.pages[2] * pe + (size_t)(t % ps) * row + e;
                cr_assert_eq(((float *)kv.k[l])[sb], ((float *)kv.k[l])[sa]);
                cr_assert_eq(((float *)kv.v[l])[sb], ((float *)kv.v[l])[sa]);
            }
    /* writing the fork's row 9 leaves the source's row 9 alone */
    size_t a9 = (size_t)a.pages[2] * pe + 1 * row, b9 = (size_t)b.pages[2] * pe + 1 * row;
    float before = ((float *)kv.k[1])[a9];
    ((float *)kv.k[1])[b9] = 12345.0f;
    cr_assert_eq(((float *)kv.k[1])[a9], before);
    /* at a page boundary nothing is copied */
    cr_assert_eq(kv_seq_fork(&kv, &a, &c, 8), 0);
    cr_assert_eq(c.n_pages, 2);
    cr_assert_eq(kv.ref[a.pages[1]], 3);
    cr_assert_eq(kv.n_free, 1);
    struct kv_seq d = {0}, e = {0};
    cr_assert_eq(kv_seq_reserve(&kv, &d, 1), 0); /* the last free page */
    cr_assert_eq(kv_seq_fork(&kv, &a, &e, 9), -1, "no page left for the copy");
    cr_assert_eq(e.n_pages, 0);
    cr_assert_eq(kv.ref[a.pages[0]], 3, "a refused fork takes no reference");
    cr_assert_eq(kv_seq_fork(&kv, &a, &e, 11), -1, "more tokens than the source holds");
    kv_seq_release(&kv, &a);
    cr_assert_eq(kv.ref[b.pages[0]], 2, "shared pages outlive the source");
    kv_seq_release(&kv, &b);
    kv_seq_release(&kv, &c);
    kv_seq_release(&kv, &d);
    cr_assert_eq(kv.n_free, 5);
    kv_cache_free(&kv);
}
