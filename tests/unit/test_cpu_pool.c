/* test_cpu_pool.c — the CPU backend's thread pool (kernels/cpu_pool.c): every index of a loop
 * runs exactly once whatever the size and grain, and cpu_pool_if_worth's decision follows its
 * rule (split when serial / threads + measured wake-up < serial, else the caller alone, with a
 * probe every 32nd time). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernels/cpu_pool.h"

struct tp_count {
    int *hits; /* (n) how often each index ran (atomic adds: chunks run on several threads) */
};

static void tp_mark(void *arg, size_t begin, size_t end) {
    struct tp_count *c = arg;
    for (size_t i = begin; i < end; i++)
        __atomic_add_fetch(&c->hits[i], 1, __ATOMIC_RELAXED);
}

Test(cpu_pool, every_index_runs_once) {
    struct cpu_pool *p = cpu_pool_create(3);
    cr_assert(p);
    cr_assert_eq(cpu_pool_size(p), 3);
    size_t ns[] = {1, 2, 3, 16, 17, 1000, 4099};
    size_t grains[] = {1, 4, 16, 5000};
    for (size_t a = 0; a < sizeof(ns) / sizeof(ns[0]); a++)
        for (size_t b = 0; b < sizeof(grains) / sizeof(grains[0]); b++)
            for (int rep = 0; rep < 50; rep++) { /* back-to-back loops: no generation missed */
                int *hits = calloc(ns[a], sizeof(int));
                struct tp_count c = {hits};
                cpu_pool_for(p, ns[a], grains[b], tp_mark, &c);
                for (size_t i = 0; i < ns[a]; i++)
                    cr_assert_eq(hits[i], 1, "n %zu grain %zu: index %zu ran %d times", ns[a],
                                 grains[b], i, hits[i]);
                free(hits);
            }
    cpu_pool_destroy(p);
}

Test(cpu_pool, if_worth_follows_its_rule) {
    cr_assert_null(cpu_pool_if_worth(NULL, 1e12));
    struct cpu_pool *one = cpu_pool_create(1);
    cr_assert_eq(cpu_pool_if_worth(one, 0), one); /* one thread: nothing to decide */
    cpu_pool_destroy(one);

    struct cpu_pool *p = cpu_pool_create(2);
    cr_assert(p);
    /* work of a minute is always worth splitting, whatever the wake-up has measured */
    cr_assert_eq(cpu_pool_if_worth(p, 60e9), p);
    /* no work is never worth it, except in a probe: after 31 refusals the 32nd call and the 15
     * after it (16 loops back to back, so that the probe measures polling workers, not ones
     * asleep since the last probe), then 31 refusals again */
    int probes = 0;
    for (int i = 1; i <= 2 * 47; i++) {
        struct cpu_pool *q = cpu_pool_if_worth(p, 0);
        cr_assert(q == NULL || q == p);
        int k = (i - 1) % 47; /* 0..30 refused, 31..46 the probe */
        cr_assert_eq(q != NULL, k >= 31, "call %d: %s", i, q ? "pool" : "serial");
        probes += q != NULL;
    }
    cr_assert_eq(probes, 2 * 16);
    cpu_pool_destroy(p);
}
