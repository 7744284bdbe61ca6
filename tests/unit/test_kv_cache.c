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
