/* test_sched.c — the scheduler's state machine and one iteration, on a hand-built KV page pool
 * (no model): admission by free pages in arrival order, decode first then prefill chunks within
 * the token budget, pages back at the reap after finish or cancel, 1-token chunks for prompt
 * logprobs, an admitted list past 1024. The forward pass is simulated by advancing each
 * sequence's cached-token count. */
#include <criterion/criterion.h>

#include "server/sched.h"

#include <stdlib.h>
#include <string.h>

struct pool {
    struct kv_cache kv;
    int free_list[64];
};

static void pool_init(struct pool *p, int n_pages, int page_size) {
    memset(p, 0, sizeof *p);
    p->kv.n_pages = n_pages;
    p->kv.page_size = page_size;
    p->kv.free_list = p->free_list;
    for (int i = 0; i < n_pages; i++)
        p->free_list[i] = i;
    p->kv.n_free = n_pages;
}

static struct sched_seq *seq_new(int n_prompt, int max_new) {
    struct sched_seq *q = calloc(1, sizeof *q);
    q->cap = n_prompt + max_new;
    q->tokens = calloc((size_t)q->cap, sizeof(int));
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

Test(sched, admission_by_pages_in_order) {
    struct pool p;
    pool_init(&p, 10, 4);
    struct sched s;
    cr_assert_eq(sched_init(&s, &p.kv, 64, 8), 0);
    struct sched_seq *a = seq_new(10, 6), *b = seq_new(10, 6), *c = seq_new(10, 6),
                     *d = seq_new(1, 1);
    cr_assert_eq(sched_pages_needed(&s, 10, 6), 4);
    sched_add(&s, a), sched_add(&s, b), sched_add(&s, c), sched_add(&s, d);
    int n = sched_plan(&s);
    cr_assert_eq(s.n_admitted, 2); /* 8 of 10 pages; c needs 4 more; d may not overtake c */
    cr_assert_eq(s.admitted[0], a);
    cr_assert_eq(s.admitted[1], b);
    cr_assert_eq(c->state, SCHED_WAITING);
    cr_assert_eq(d->state, SCHED_WAITING);
    cr_assert_eq(p.kv.n_free, 2);
    cr_assert_eq(n, 2);
    cr_assert_eq(s.batch.n_prefill, 2);
    cr_assert_eq(s.batch.n_tokens, 20);
    fake_step(&s);
    cr_assert_eq(a->state, SCHED_DECODE);
    cr_assert_eq(a->n_tokens, 11);
    /* a is cancelled: it leaves at the next reap and its pages come back */
    sched_end(a, SCHED_CANCELLED);
    struct sched_seq *out[8];
    cr_assert_eq(sched_reap(&s, out, 8), 1);
    cr_assert_eq(out[0], a);
    cr_assert_eq(p.kv.n_free, 6);
    sched_plan(&s);
    cr_assert_eq(s.n_admitted, 2); /* c (4 pages) then d (1 page) */
    cr_assert_eq(s.admitted[0], c);
    cr_assert_eq(s.admitted[1], d);
    cr_assert_eq(p.kv.n_free, 1);
    /* run everything to the end */
    for (int it = 0; it < 50 && (s.n_running || s.n_waiting); it++) {
        int k = sched_reap(&s, out, 8);
        (void)k;
        if (sched_plan(&s)) fake_step(&s);
    }
    cr_assert_eq(s.n_running, 0);
    cr_assert_eq(p.kv.n_free, 10);
    cr_assert_eq(b->n_tokens, 16);
    cr_assert_eq(c->n_tokens, 16);
    cr_assert_eq(d->n_tokens, 2);
    seq_del(a), seq_del(b), seq_del(c), seq_del(d);
    sched_free(&s);
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
}

/* The admitted list is the scheduler's own, sized by max_batch_seqs: all 3000 sequences admitted
 * in one plan are listed (the worker sets up each one's sampler from it; a fixed 1024-entry list
 * in the worker once skipped the rest). */
Test(sched, admitted_list_holds_more_than_1024) {
    enum { N = 3000 };
    struct kv_cache kv;
    memset(&kv, 0, sizeof kv);
    kv.n_pages = N;
    kv.page_size = 16;
    kv.free_list = malloc(sizeof(int) * N);
    for (int i = 0; i < N; i++)
        kv.free_list[i] = i;
    kv.n_free = N;
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
    free(kv.free_list);
    sched_free(&s);
}
