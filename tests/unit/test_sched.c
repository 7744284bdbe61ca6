/* test_sched.c — the scheduler's state machine and one iteration, on a KV page pool without
 * backend memory (no model): admission by pages in arrival order, decode first then prefill
 * chunks within the token budget, pages back at the reap after finish or cancel, 1-token chunks
 * for prompt logprobs, an admitted list past 1024; pages on demand, preemption order and
 * requeue, prefix-cache hits, more sequences than pages, and a random stress with shared
 * prefixes, cancellations and preemptions. The forward pass is simulated by advancing each
 * sequence's cached-token count. */
#include <criterion/criterion.h>

#include "server/sched.h"

#include <stdlib.h>
#include <string.h>

struct pool {
    struct kv_cache kv;
};

static void pool_init(struct pool *p, int n_pages, int page_size) {
    memset(p, 0, sizeof *p);
    cr_assert_eq(kv_cache_init_pages(&p->kv, n_pages, page_size, 42), 0);
}

/* A sequence of N_PROMPT prompt tokens unlike any other's (no accidental prefix hits). */
static struct sched_seq *seq_new(int n_prompt, int max_new) {
    static int serial = 1000;
    struct sched_seq *q = calloc(1, sizeof *q);
    q->cap = n_prompt + max_new;
    q->tokens = calloc((size_t)q->cap, sizeof(int));
    serial++;
    for (int i = 0; i < n_prompt; i++)
        q->tokens[i] = serial * 100 + i;
    q->n_prompt = q->n_tokens = n_prompt;
    q->max_new = max_new;
    return q;
}

static void seq_del(struct sched_seq *q) {
    free(q->kv.pages); /* pages held are returned with the pool; the id array is the seq's */
    free(q->tokens);
    free(q);
}

/* The worker's part of an iteration: "forward", sample a token for wanted rows past the prompt,
 * finish at max_new; then commit. */
static void fake_step(struct sched *s) {
    for (int i = 0; i < s->batch.n; i++) {
        struct sched_item *it = &s->batch.items[i];
        cr_assert_eq(it->start, it->seq->kv.n_tokens);
        cr_assert_eq(s->batch.fwd[i].n_tokens, it->n);
        cr_assert_eq(s->batch.fwd[i].tokens, it->seq->tokens + it->start);
        it->seq->kv.n_tokens += it->n;
    }
    for (int i = 0; i < s->batch.n; i++) {
        struct sched_item *it = &s->batch.items[i];
        struct sched_seq *q = it->seq;
        if (!it->want || q->kv.n_tokens < q->n_prompt) continue;
        q->tokens[q->n_tokens++] = 7;
        if (q->n_tokens - q->n_prompt >= q->max_new) sched_end(q, SCHED_FINISHED);
    }
    sched_commit(s);
}

/* Every page is held exactly as often as the block tables of the running sequences say, and an
 * unheld page is free or cached, once. */
static void check_pages(const struct sched *s) {
    const struct kv_cache *kv = s->kv;
    int refs[256] = {0}, seen[256] = {0};
    cr_assert_leq(kv->n_pages, 256);
    for (int i = 0; i < s->n_running; i++)
        for (int k = 0; k < s->running[i]->kv.n_pages; k++)
            refs[s->running[i]->kv.pages[k]]++;
    for (const struct sched_seq *q = s->wait_head; q; q = q->next)
        cr_assert_eq(q->kv.n_pages, 0, "a waiting sequence holds pages");
    for (int i = 0; i < kv->n_free; i++)
        seen[kv->free_list[i]]++;
    int n_lru = 0;
    for (int p = kv->lru_head; p >= 0; p = kv->lru_next[p], n_lru++)
        seen[p]++;
    cr_assert_eq(n_lru, kv->n_cached);
    for (int p = 0; p < kv->n_pages; p++) {
        cr_assert_eq(kv->ref[p], refs[p], "page %d: ref %d, held %d", p, kv->ref[p], refs[p]);
        cr_assert_eq(seen[p], refs[p] ? 0 : 1, "page %d listed %d times", p, seen[p]);
    }
}

Test(sched, pages_on_demand_and_preemption) {
    struct pool p;
    pool_init(&p, 10, 4);
    struct sched s;
    cr_assert_eq(sched_init(&s, &p.kv, 64, 8), 0);
    s.prefix_caching = 0;
    struct sched_seq *a = seq_new(10, 6), *b = seq_new(10, 6), *c = seq_new(10, 6),
                     *d = seq_new(1, 1);
    cr_assert_eq(sched_pages_needed(&s, 10, 6), 4);
    sched_add(&s, a), sched_add(&s, b), sched_add(&s, c), sched_add(&s, d);
    int n = sched_plan(&s);
    /* 3 pages each for the prompts, not 4 for prompt + max_new; d would leave no spare page */
    cr_assert_eq(s.n_admitted, 3);
    cr_assert_eq(s.admitted[2], c);
    cr_assert_eq(d->state, SCHED_WAITING);
    cr_assert_eq(p.kv.n_free, 1);
    cr_assert_eq(n, 3);
    cr_assert_eq(s.batch.n_tokens, 30);
    fake_step(&s); /* 11 tokens, 10 cached */
    for (int i = 0; i < 2; i++) {
        sched_plan(&s);
        fake_step(&s); /* 13 tokens, 12 cached: the next needs a 4th page */
    }
    check_pages(&s);
    cr_assert_eq(a->n_tokens, 13);
    n = sched_plan(&s);
    /* a takes the last free page; b finds none: c, the newest, is preempted for it */
    cr_assert_eq(s.preemptions, 1);
    cr_assert_eq(c->state, SCHED_WAITING);
    cr_assert_eq(c->n_preempted, 1);
    cr_assert_eq(s.wait_head, c, "requeued at the front");
    cr_assert_eq(c->next, d);
    cr_assert_eq(s.n_admitted, 0, "nothing is admitted in an iteration that preempted");
    cr_assert_eq(n, 2);
    cr_assert_eq(a->kv.n_pages, 4);
    cr_assert_eq(b->kv.n_pages, 4);
    check_pages(&s);
    fake_step(&s);
    /* c comes back: one prefill of its prompt and the 3 tokens it had, then the next sample */
    struct sched_seq *out[8];
    for (int it = 0; it < 50 && c->state == SCHED_WAITING; it++) {
        sched_reap(&s, out, 8);
        if (sched_plan(&s)) {
            check_pages(&s);
            for (int i = 0; i < s.batch.n; i++)
                if (s.batch.items[i].seq == c) {
                    cr_assert_eq(s.batch.items[i].start, 0);
                    cr_assert_eq(s.batch.items[i].n, 13);
                    cr_assert_eq(s.batch.items[i].want, 1);
                }
            fake_step(&s);
        }
    }
    for (int it = 0; it < 100 && (s.n_running || s.n_waiting); it++) {
        sched_reap(&s, out, 8);
        if (sched_plan(&s)) {
            check_pages(&s);
            fake_step(&s);
        }
    }
    cr_assert_eq(s.n_running + s.n_waiting, 0);
    cr_assert_eq(p.kv.n_free, 10);
    /* no token twice: each ends at exactly prompt + max_new */
    cr_assert_eq(a->n_tokens, 16);
    cr_assert_eq(b->n_tokens, 16);
    cr_assert_eq(c->n_tokens, 16);
    cr_assert_eq(d->n_tokens, 2);
    seq_del(a), seq_del(b), seq_del(c), seq_del(d);
    sched_free(&s);
    kv_cache_free(&p.kv);
}

Test(sched, more_sequences_than_pages) {
    for (int caching = 0; caching <= 1; caching++) {
        struct pool p;
        pool_init(&p, 6, 4);
        struct sched s;
        cr_assert_eq(sched_init(&s, &p.kv, 16, 8), 0);
        s.prefix_caching = caching;
        struct sched_seq *q[8];
        for (int i = 0; i < 8; i++) {
            q[i] = seq_new(5, 10); /* 15 tokens: 4 pages at the longest, 6 in all */
            if (caching && i % 2) memcpy(q[i]->tokens, q[0]->tokens, sizeof(int) * 5);
            sched_add(&s, q[i]);
        }
        struct sched_seq *out[8];
        int it = 0, ended = 0;
        for (; it < 2000 && (s.n_running || s.n_waiting); it++) {
            ended += sched_reap(&s, out, 8);
            if (sched_plan(&s)) {
                check_pages(&s);
                fake_step(&s);
            }
        }
        ended += sched_reap(&s, out, 8);
        cr_assert_eq(ended, 8, "caching %d: %d of 8 ended in %d iterations", caching, ended, it);
        cr_assert_gt(s.preemptions, 0);
        for (int i = 0; i < 8; i++) {
            cr_assert_eq(q[i]->n_tokens, 15);
            cr_assert_eq(q[i]->state, SCHED_FINISHED);
            seq_del(q[i]);
        }
        cr_assert_eq(kv_cache_available(&p.kv), 6);
        sched_free(&s);
        kv_cache_free(&p.kv);
    }
}

Test(sched, prefix_hits_at_admission) {
    struct pool p;
    pool_init(&p, 32, 4);
    struct sched s;
    cr_assert_eq(sched_init(&s, &p.kv, 64, 8), 0);
    struct sched_seq *a = seq_new(10, 2);
    sched_add(&s, a);
    struct sched_seq *out[4];
    while (s.n_running || s.n_waiting) {
        sched_reap(&s, out, 4);
        if (sched_plan(&s)) fake_step(&s);
    }
    /* 12 tokens, 11 cached: pages 0 and 1 are full and stay cached, no one holding them */
    cr_assert_eq(p.kv.n_cached, 2);
    cr_assert_eq(kv_cache_used(&p.kv), 0);
    cr_assert_eq(s.prefix_queries, 10);
    cr_assert_eq(s.prefix_hits, 0);
    struct sched_seq *b = seq_new(10, 2), *c = seq_new(8, 2), *d = seq_new(8, 2);
    memcpy(b->tokens, a->tokens, sizeof(int) * 9); /* differs in its last token */
    memcpy(c->tokens, a->tokens, sizeof(int) * 8); /* page-aligned: 8 tokens, 2 full pages */
    memcpy(d->tokens, a->tokens, sizeof(int) * 8);
    d->chunk_max = 1; /* prompt logprobs: no lookup */
    sched_add(&s, b), sched_add(&s, c), sched_add(&s, d);
    cr_assert_eq(sched_plan(&s), 3);
    cr_assert_eq(b->kv.n_tokens, 8, "b reuses both cached pages");
    cr_assert_eq(b->kv.pages[0], c->kv.pages[0], "shared, not copied");
    cr_assert_eq(p.kv.ref[b->kv.pages[0]], 2);
    cr_assert_eq(s.batch.items[0].seq, b);
    cr_assert_eq(s.batch.items[0].start, 8);
    cr_assert_eq(s.batch.items[0].n, 2);
    cr_assert_eq(c->kv.n_tokens, 4, "the last prompt token is always computed");
    cr_assert_eq(s.batch.items[1].start, 4);
    cr_assert_eq(d->kv.n_tokens, 0);
    cr_assert_eq(s.batch.items[2].n, 1);
    cr_assert_eq(s.prefix_queries, 10 + 10 + 8);
    cr_assert_eq(s.prefix_hits, 8 + 4);
    check_pages(&s);
    while (s.n_running || s.n_waiting) {
        sched_reap(&s, out, 4);
        if (sched_plan(&s)) {
            check_pages(&s);
            fake_step(&s);
        }
    }
    cr_assert_eq(kv_cache_used(&p.kv), 0);
    cr_assert_eq(kv_cache_available(&p.kv), 32);
    seq_del(a), seq_del(b), seq_del(c), seq_del(d);
    sched_free(&s);
    kv_cache_free(&p.kv);
}

Test(sched, decode_first_then_prefill_chunks) {
    struct pool p;
    pool_init(&p, 64, 4);
    struct sched s;
    cr_assert_eq(sched_init(&s, &p.kv, 8, 8), 0);
    struct sched_seq *a = seq_new(3, 10), *b = seq_new(20, 2);
    sched_add(&s, a);
    sched_plan(&s);
    fake_step(&s); /* a prefilled, first token sampled */
    cr_assert_eq(a->state, SCHED_DECODE);
    sched_add(&s, b);
    int n = sched_plan(&s);
    cr_assert_eq(n, 2);
    cr_assert_eq(s.batch.items[0].seq, a); /* decode first */
    cr_assert_eq(s.batch.items[0].n, 1);
    cr_assert_eq(s.batch.items[1].seq, b);
    cr_assert_eq(s.batch.items[1].n, 7); /* the rest of the budget of 8 */
    cr_assert_eq(s.batch.items[1].want, 0);
    cr_assert_eq(s.batch.n_tokens, 8);
    fake_step(&s);
    cr_assert_eq(b->state, SCHED_PREFILL);
    sched_plan(&s);
    cr_assert_eq(s.batch.items[1].start, 7);
    cr_assert_eq(s.batch.items[1].n, 7);
    fake_step(&s);
    sched_plan(&s);
    cr_assert_eq(s.batch.items[1].n, 6); /* last chunk: its logits give b's first token */
    cr_assert_eq(s.batch.items[1].want, 1);
    fake_step(&s);
    cr_assert_eq(b->state, SCHED_DECODE);
    cr_assert_eq(b->n_tokens, 21);
    struct sched_seq *out[4];
    while (s.n_running) {
        sched_reap(&s, out, 4);
        if (sched_plan(&s)) fake_step(&s);
    }
    cr_assert_eq(a->n_tokens, 13);
    cr_assert_eq(b->n_tokens, 22);
    seq_del(a), seq_del(b);
    sched_free(&s);
    kv_cache_free(&p.kv);
}

Test(sched, batch_seq_limit_and_waiting_cancel) {
    struct pool p;
    pool_init(&p, 64, 16);
    struct sched s;
    cr_assert_eq(sched_init(&s, &p.kv, 512, 2), 0);
    struct sched_seq *q[4];
    for (int i = 0; i < 4; i++)
        sched_add(&s, q[i] = seq_new(4, 4));
    sched_plan(&s);
    cr_assert_eq(s.n_running, 2);
    cr_assert_eq(s.n_waiting, 2);
    sched_end(q[3], SCHED_CANCELLED); /* cancelled while waiting: holds no pages */
    struct sched_seq *out[4];
    cr_assert_eq(sched_reap(&s, out, 4), 1);
    cr_assert_eq(out[0], q[3]);
    cr_assert_eq(s.n_waiting, 1);
    cr_assert_eq(s.wait_head, q[2]);
    cr_assert_eq(s.wait_tail, q[2]);
    seq_del(q[3]);
    sched_add(&s, q[3] = seq_new(2, 2)); /* the tail is still right after a reap */
    cr_assert_eq(s.wait_head->next, q[3]);
    for (int i = 0; i < 4; i++)
        seq_del(q[i]);
    sched_free(&s);
    kv_cache_free(&p.kv);
}

Test(sched, prompt_logprobs_one_token_chunks) {
    struct pool p;
    pool_init(&p, 16, 4);
    struct sched s;
    cr_assert_eq(sched_init(&s, &p.kv, 64, 4), 0);
    struct sched_seq *a = seq_new(5, 1);
    a->chunk_max = 1;
    sched_add(&s, a);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(sched_plan(&s), 1);
        cr_assert_eq(s.batch.items[0].n, 1);
        cr_assert_eq(s.batch.items[0].want, 1); /* every row: the next prompt token's logprob */
        fake_step(&s);
    }
    cr_assert_eq(a->state, SCHED_FINISHED);
    cr_assert_eq(a->n_tokens, 6);
    cr_assert_str_eq(sched_state_name(a->state), "finished");
    seq_del(a);
    sched_free(&s);
    kv_cache_free(&p.kv);
}

/* Random shared prefixes, cancellations and preemptions in a pool far too small for everyone:
 * the page invariants hold at every iteration (under ASan: no page freed twice or used after
 * release), every sequence ends, and all pages come back. */
Test(sched, stress_shared_prefixes_cancels_preemptions) {
    struct pool p;
    pool_init(&p, 24, 4);
    struct sched s;
    cr_assert_eq(sched_init(&s, &p.kv, 32, 8), 0);
    enum { N = 200 };
    struct sched_seq *q[N];
    unsigned rng = 12345;
#define RND() (rng = rng * 1103515245u + 12345u, (rng >> 16) & 0x7fff)
    for (int i = 0; i < N; i++) {
        int n_prompt = 1 + (int)(RND() % 20), max_new = 1 + (int)(RND() % 20);
        q[i] = seq_new(n_prompt, max_new);
        int family = (int)(RND() % 3); /* three shared prefixes and their variants */
        int shared = n_prompt - (int)(RND() % 3);
        for (int k = 0; k < shared; k++)
            q[i]->tokens[k] = family * 1000 + k;
        if (RND() % 5 == 0) q[i]->chunk_max = 1;
    }
    struct sched_seq *out[8];
    int added = 0, ended = 0, it = 0, forked = 0;
    for (; it < 20000 && ended < N; it++) {
        if (added < N && RND() % 2) {
            /* now and then a parent with forks of its prompt (n > 1), queued together */
            int parent = added;
            sched_add(&s, q[added++]);
            for (int f = (int)(RND() % 3); f > 0 && added < N && RND() % 2; f--) {
                struct sched_seq *c = q[added++];
                c->n_prompt = c->n_tokens = q[parent]->n_prompt;
                c->cap = c->n_prompt + c->max_new;
                c->tokens = realloc(c->tokens, sizeof(int) * (size_t)c->cap);
                memcpy(c->tokens, q[parent]->tokens, sizeof(int) * (size_t)c->n_prompt);
                c->chunk_max = 0;
                sched_add_fork(&s, q[parent], c);
                forked++;
            }
        }
        /* cancel a random running or waiting sequence now and then */
        if (RND() % 7 == 0 && s.n_running)
            sched_end(s.running[RND() % s.n_running], SCHED_CANCELLED);
        if (RND() % 11 == 0 && s.wait_head) sched_end(s.wait_head, SCHED_CANCELLED);
        if (RND() % 13 == 0 && s.n_running) { /* a fork that still waits for its parent */
            struct sched_seq *r = s.running[RND() % s.n_running];
            if (r->forks) sched_end(r->forks, SCHED_CANCELLED);
        }
        int k;
        while ((k = sched_reap(&s, out, 8)) > 0)
            ended += k;
        if (sched_plan(&s)) {
            check_pages(&s);
            fake_step(&s);
            check_pages(&s);
        }
    }
#undef RND
    cr_assert_eq(ended, N, "%d of %d ended in %d iterations", ended, N, it);
    cr_assert_gt(s.preemptions, 0);
    cr_assert_gt(s.prefix_hits, 0);
    cr_assert_gt(forked, 10);
    cr_assert_gt(s.forks, 0);
    cr_assert_eq(s.n_waiting, 0);
    cr_assert_eq(kv_cache_used(&p.kv), 0);
    cr_assert_eq(kv_cache_available(&p.kv), 24);
    for (int i = 0; i < N; i++) {
        if (q[i]->state == SCHED_FINISHED)
            cr_assert_eq(q[i]->n_tokens, q[i]->n_prompt + q[i]->max_new, "no token twice");
        seq_del(q[i]);
    }
    sched_free(&s);
    kv_cache_free(&p.kv);
}

/* The admitted list is the scheduler's own, sized by max_batch_seqs: all 3000 sequences admitted
 * in one plan are listed (the worker sets up each one's sampler from it; a fixed 1024-entry list
 * in the worker once skipped the rest). */
Test(sched, admitted_list_holds_more_than_1024) {
    enum { N = 3000 };
    struct kv_cache kv;
    /* a page each, and the spare page admission leaves */
    cr_assert_eq(kv_cache_init_pages(&kv, N + SCHED_WATERMARK_PAGES, 16, 42), 0);
    struct sched s;
    cr_assert_eq(sched_init(&s, &kv, 8192, 4096), 0);
    struct sched_seq **q = calloc(N, sizeof *q);
    for (int i = 0; i < N; i++)
        sched_add(&s, q[i] = seq_new(2, 2));
    cr_assert_eq(sched_plan(&s), N);
    cr_assert_eq(s.n_admitted, N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(s.admitted[i], q[i]);
    fake_step(&s);
    cr_assert_eq(sched_plan(&s), N); /* decode rows; nothing newly admitted */
    cr_assert_eq(s.n_admitted, 0);
    for (int i = 0; i < N; i++)
        seq_del(q[i]);
    free(q);
    kv_cache_free(&kv);
    sched_free(&s);
}

/* A prompt-logprobs sequence (1-token chunks) preempted half-way: its recompute runs the rows it
 * had in one chunk that nobody wants, then goes on 1 token at a time, each row wanted once. */
Test(sched, preempted_prompt_logprobs_recompute) {
    struct pool p;
    pool_init(&p, 6, 4); /* a needs 4 pages at its longest, b 3 */
    struct sched s;
    cr_assert_eq(sched_init(&s, &p.kv, 64, 4), 0);
    struct sched_seq *a = seq_new(4, 12), *b = seq_new(9, 3);
    b->chunk_max = 1;
    sched_add(&s, a);
    sched_plan(&s), fake_step(&s); /* a: 5 tokens, 4 cached */
    sched_add(&s, b);
    for (int i = 0; i < 8; i++) /* b: 8 prompt rows, each wanted; a grows into its 3rd page */
        sched_plan(&s), fake_step(&s);
    cr_assert_eq(b->kv.n_tokens, 8);
    cr_assert_eq(b->n_done, 8);
    cr_assert_eq(a->kv.n_tokens, 12);
    cr_assert_eq(s.preemptions, 0);
    sched_plan(&s); /* no page left for a: b, the newest, goes */
    cr_assert_eq(s.preemptions, 1);
    cr_assert_eq(b->state, SCHED_WAITING);
    cr_assert_eq(b->kv.n_pages, 0);
    fake_step(&s);
    struct sched_seq *out[4];
    int wanted[16] = {0};
    for (int it = 0; it < 100 && (s.n_running || s.n_waiting); it++) {
        sched_reap(&s, out, 4);
        if (!sched_plan(&s)) continue;
        check_pages(&s);
        for (int i = 0; i < s.batch.n; i++) {
            struct sched_item *x = &s.batch.items[i];
            if (x->seq != b) continue;
            if (x->start == 0 && b->n_preempted) cr_assert_eq(x->n, 8, "up to what b had");
            if (x->want) wanted[x->start + x->n]++;
        }
        fake_step(&s);
    }
    cr_assert_eq(b->state, SCHED_FINISHED);
    cr_assert_eq(b->n_tokens, 12);
    for (int k = 9; k < 12; k++)
        cr_assert_eq(wanted[k], 1, "row ending at %d wanted %d times", k, wanted[k]);
    for (int k = 1; k < 9; k++)
        cr_assert_eq(wanted[k], 0, "row ending at %d computed before", k);
    seq_del(a), seq_del(b);
    sched_free(&s);
    kv_cache_free(&p.kv);
}

/* n > 1: forks wait for the parent's prompt, then share its full pages and a copy of the partial
 * one, prefill only the last prompt token, and hold fewer pages than separate prompts; a fork
 * cancelled while it waits leaves at the reap; the forks of a parent cancelled in the queue run
 * as ordinary sequences. */
Test(sched, forks_share_the_prompt_pages) {
    struct pool p;
    pool_init(&p, 32, 4);
    struct sched s;
    cr_assert_eq(sched_init(&s, &p.kv, 64, 8), 0);
    s.prefix_caching = 0; /* the sharing is the fork's own, not the prefix cache's */
    struct sched_seq *par = seq_new(10, 3), *f[3];
    sched_add(&s, par);
    for (int i = 0; i < 3; i++) {
        f[i] = seq_new(10, 3);
        memcpy(f[i]->tokens, par->tokens, sizeof(int) * 10);
        sched_add_fork(&s, par, f[i]);
    }
    cr_assert_eq(s.n_waiting, 4);
    cr_assert_eq(sched_plan(&s), 1, "only the parent runs first");
    cr_assert_eq(s.batch.items[0].n, 10);
    fake_step(&s);
    cr_assert_eq(sched_plan(&s), 4, "the forks join with their last prompt token");
    cr_assert_eq(s.n_admitted, 3);
    cr_assert_eq(s.n_waiting, 0);
    cr_assert_eq(s.forks, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(f[i]->state, SCHED_PREFILL);
        cr_assert_eq(f[i]->kv.pages[0], par->kv.pages[0]);
        cr_assert_eq(f[i]->kv.pages[1], par->kv.pages[1]);
        cr_assert_neq(f[i]->kv.pages[2], par->kv.pages[2]);
    }
    cr_assert_eq(p.kv.ref[par->kv.pages[0]], 4);
    for (int i = 1; i < 4; i++) {
        cr_assert_eq(s.batch.items[i].start, 9);
        cr_assert_eq(s.batch.items[i].n, 1);
        cr_assert(s.batch.items[i].want);
    }
    /* 2 shared + 4 partial pages, against 4 × 3 for separate prompts */
    cr_assert_eq(kv_cache_used(&p.kv), 6);
    check_pages(&s);
    fake_step(&s);
    struct sched_seq *out[8];
    int ended = 0;
    for (int it = 0; it < 20 && ended < 4; it++) {
        ended += sched_reap(&s, out, 8);
        if (sched_plan(&s)) {
            check_pages(&s);
            fake_step(&s);
        }
    }
    cr_assert_eq(ended, 4);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(f[i]->n_tokens, 13);
    cr_assert_eq(kv_cache_used(&p.kv), 0);

    /* a fork cancelled while it waits; the parent cancelled in the queue: its forks run alone */
    struct sched_seq *p2 = seq_new(6, 2), *g[2];
    sched_add(&s, p2);
    for (int i = 0; i < 2; i++) {
        g[i] = seq_new(6, 2);
        memcpy(g[i]->tokens, p2->tokens, sizeof(int) * 6);
        sched_add_fork(&s, p2, g[i]);
    }
    sched_end(g[0], SCHED_CANCELLED);
    sched_end(p2, SCHED_CANCELLED);
    cr_assert_eq(sched_reap(&s, out, 8), 2);
    cr_assert_eq(s.n_waiting, 1);
    cr_assert_eq(s.wait_head, g[1]);
    cr_assert_null(g[1]->fork_of);
    cr_assert_eq(sched_plan(&s), 1);
    cr_assert_eq(s.batch.items[0].n, 6, "an orphaned fork computes its whole prompt");
    fake_step(&s);
    for (int it = 0; it < 5; it++) {
        sched_reap(&s, out, 8);
        if (sched_plan(&s)) fake_step(&s);
    }
    cr_assert_eq(g[1]->state, SCHED_FINISHED);
    sched_reap(&s, out, 8);
    cr_assert_eq(kv_cache_used(&p.kv), 0);

    /* a parent whose first token is its last (max_new 1): the reap forks them before its pages
     * go, and the next plan admits them with their last prompt token */
    struct sched_seq *p3 = seq_new(9, 1), *h[2];
    sched_add(&s, p3);
    for (int i = 0; i < 2; i++) {
        h[i] = seq_new(9, 2);
        memcpy(h[i]->tokens, p3->tokens, sizeof(int) * 9);
        sched_add_fork(&s, p3, h[i]);
    }
    uint64_t forks = s.forks;
    cr_assert_eq(sched_plan(&s), 1);
    fake_step(&s);
    cr_assert_eq(p3->state, SCHED_FINISHED);
    cr_assert_eq(sched_reap(&s, out, 8), 1);
    cr_assert_eq(s.forks - forks, 2);
    cr_assert_eq(sched_plan(&s), 2);
    cr_assert_eq(s.n_admitted, 2);
    cr_assert_eq(s.admitted[0], h[0]);
    cr_assert_eq(s.batch.items[0].n, 1, "the fork computes its last prompt token only");
    check_pages(&s);
    for (int it = 0; it < 5; it++) {
        fake_step(&s);
        sched_reap(&s, out, 8);
        sched_plan(&s);
    }
    cr_assert_eq(h[0]->state, SCHED_FINISHED);
    cr_assert_eq(h[1]->n_tokens, 11);
    sched_reap(&s, out, 8);
    cr_assert_eq(kv_cache_used(&p.kv), 0);
    seq_del(p3);
    for (int i = 0; i < 2; i++)
        seq_del(h[i]);
    seq_del(par);
    seq_del(p2);
    for (int i = 0; i < 3; i++)
        seq_del(f[i]);
    for (int i = 0; i < 2; i++)
        seq_del(g[i]);
    sched_free(&s);
    kv_cache_free(&p.kv);
}
