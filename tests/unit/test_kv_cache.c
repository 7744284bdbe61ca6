/* test_kv_cache.c — page accounting: reserve grows a block table, exhaustion takes nothing,
 * release returns every page. */
#include <criterion/criterion.h>

#include "kernels/ops.h"
#include "model/kv_cache.h"
#include "model/model.h"

Test(kv_cache, reserve_release_exhaust)
{
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
