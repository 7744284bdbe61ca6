/* test_worker.c — the worker thread and its boundary with the loop, on a tiny random model
 * (tools/make_tiny_models.py, gqa1_tied F32 GGUF, CPU): a real worker_start on a real uv loop,
 * requests submitted and their events delivered as the server gets them.
 *
 * Covered: every finish reason the worker can give without a broken engine (length, eos_token,
 * stop_sequence, cancelled while queued and while running, timeout by request and by queue
 * deadline, cancel-all), the text/logprob events adding up, prompt logprobs, pages back in the
 * pool after each ending, and more than 1024 sequences in one batch with max_batch_seqs > 1024
 * (every one gets its sampler: seeded sampling differs from greedy, a repetition penalty gives
 * finite logprobs); the same tokens (greedy and seeded) with and without the prefix cache and
 * under forced preemption. ERROR needs a failing forward pass, which this model on the CPU does
 * not give.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "server/worker.h"
#include "test_util.h"

#define TINY_MODEL "tests/tmp/tiny/gqa1_tied/gqa1_tied.F32.gguf"
#define TINY_CTX 256 /* make_tiny_models.py CTX */
#define WAIT_S 120.0 /* longest any test waits for its events (ASan on a busy box) */

struct harness {
    uv_loop_t loop;
    uv_timer_t tick; /* wakes uv_run so that waits can time out */
    struct config cfg;
    struct metrics m;
    struct worker w;
    enum worker_state st;
    int n_final;
};

/* One request and what its events did. */
struct probe {
    struct harness *h;
    struct wreq *r;
    int events, finals_before_event;
    int cancel_at; /* > 0: cancel once this many tokens arrived */
    int cancelled;
};

static void on_state(struct worker *w, enum worker_state st, void *user) {
    (void)w;
    ((struct harness *)user)->st = st;
}

static void on_final(struct wreq *r, void *user) {
    (void)r;
    ((struct harness *)user)->n_final++;
}

static void on_event(struct wreq *r, void *user) {
    struct probe *p = user;
    p->events++;
    if (p->cancel_at > 0 && !p->cancelled && r->n_gen >= p->cancel_at &&
        r->finish == WREQ_FIN_NONE) {
        worker_cancel(&p->h->w, r);
        p->cancelled = 1;
    }
}

static void on_tick(uv_timer_t *t) {
    (void)t;
}

/* Run the loop until *FLAG (or COND(arg)) holds. */
static int run_until(struct harness *h, int (*cond)(void *), void *arg) {
    double t0 = worker_now();
    while (!cond(arg)) {
        if (worker_now() - t0 > WAIT_S) return -1;
        uv_run(&h->loop, UV_RUN_ONCE);
    }
    return 0;
}

static int is_started(void *arg) {
    struct harness *h = arg;
    return h->st != WORKER_LOADING;
}

/* Start a worker on the tiny model; EXTRA (N_EXTRA name/value pairs) override the defaults. */
static void harness_start_with(struct harness *h, int max_batch_seqs, int max_batch_tokens,
                               const char *const (*extra)[2], int n_extra) {
    char err[512];
    memset(h, 0, sizeof *h);
    cr_assert_eq(tu_tiny_models(err, sizeof err), 0, "%s", err);
    cr_assert_eq(config_defaults(&h->cfg, err, sizeof err), 0, "%s", err);
    char mbs[16], mbt[16];
    snprintf(mbs, sizeof mbs, "%d", max_batch_seqs);
    snprintf(mbt, sizeof mbt, "%d", max_batch_tokens);
    const char *set[][2] = {{"model", TINY_MODEL},   {"device", "cpu"},
                            {"threads", "1"},        {"kv_cache_mb", "64"},
                            {"max_batch_seqs", mbs}, {"max_batch_tokens", mbt}};
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
        cr_assert_eq(config_set(&h->cfg, set[i][0], set[i][1], "test", err, sizeof err), 0, "%s",
                     err);
    for (int i = 0; i < n_extra; i++)
        cr_assert_eq(config_set(&h->cfg, extra[i][0], extra[i][1], "test", err, sizeof err), 0,
                     "%s", err);
    metrics_init(&h->m);
    cr_assert_eq(uv_loop_init(&h->loop), 0);
    uv_timer_init(&h->loop, &h->tick);
    uv_timer_start(&h->tick, on_tick, 50, 50);
    cr_assert_eq(
        worker_start(&h->w, &h->loop, &h->cfg, &h->m, on_state, on_final, h, err, sizeof err), 0,
        "%s", err);
    cr_assert_eq(run_until(h, is_started, h), 0, "the worker did not load");
    cr_assert_eq(h->st, WORKER_READY, "load failed: %s", h->w.load_error);
}

static void harness_start(struct harness *h, int max_batch_seqs, int max_batch_tokens) {
    harness_start_with(h, max_batch_seqs, max_batch_tokens, NULL, 0);
}

static void harness_stop(struct harness *h) {
    worker_stop(&h->w);
    uv_timer_stop(&h->tick);
    uv_close((uv_handle_t *)&h->tick, NULL);
    uv_run(&h->loop, UV_RUN_DEFAULT); /* the close callbacks */
    cr_assert_eq(uv_loop_close(&h->loop), 0);
    metrics_free(&h->m);
    config_free(&h->cfg);
}

static double kv_usage(struct harness *h) {
    pthread_mutex_lock(&h->m.mu);
    double u = h->m.kv_usage;
    pthread_mutex_unlock(&h->m.mu);
    return u;
}

static int kv_empty(void *arg) {
    return kv_usage(arg) == 0;
}

/* A request for TEXT (bytes as tokens, no BOS), MAX_NEW tokens; greedy unless changed. */
static struct probe *probe_new(struct harness *h, const char *text, int max_new) {
    const struct tokenizer *tok = h->w.info.tok;
    int *ids = NULL, n = 0;
    char err[256];
    cr_assert_eq(tokenizer_encode(tok, text, strlen(text), 0, 0, &ids, &n, err, sizeof err), 0,
                 "%s", err);
    cr_assert(n > 0 && n + max_new <= TINY_CTX);
    struct probe *p = calloc(1, sizeof *p);
    p->h = h;
    p->r = wreq_new(n, max_new, 0);
    cr_assert(p->r);
    memcpy(p->r->tokens, ids, sizeof(int) * (size_t)n);
    free(ids);
    p->r->ignore_eos = 1;
    p->r->t_arrival = worker_now();
    p->r->on_event = on_event;
    p->r->user = p;
    return p;
}

static void probe_submit(struct probe *p) {
    cr_assert_eq(worker_submit(&p->h->w, p->r), 0);
}

static void probe_free(struct probe *p) {
    wreq_free(p->r);
    free(p);
}

struct probes {
    struct probe **p;
    int n;
};

static int all_done(void *arg) {
    struct probes *ps = arg;
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i]->r->finish == WREQ_FIN_NONE) return 0;
    return 1;
}

static void wait_all(struct harness *h, struct probe **p, int n) {
    struct probes ps = {p, n};
    cr_assert_eq(run_until(h, all_done, &ps), 0, "requests did not finish in time");
}

/* The events add up: text_end grows to text_len, logprobs are finite and <= 0. */
static void check_events(const struct wreq *r) {
    size_t prev = 0;
    for (int k = 0; k < r->n_gen; k++) {
        cr_assert(r->text_end[k] >= prev && r->text_end[k] <= r->text_len);
        prev = r->text_end[k];
        cr_assert(isfinite(r->logprobs[k]) && r->logprobs[k] <= 1e-4f, "logprob[%d] = %g", k,
                  r->logprobs[k]);
        cr_assert(r->tokens[r->n_prompt + k] >= 0 && r->tokens[r->n_prompt + k] < 282);
    }
    if (r->n_gen) cr_assert_eq(r->text_end[r->n_gen - 1], r->text_len);
    cr_assert_eq(strlen(r->text) <= r->text_len, 1);
}

Test(worker, length_deterministic_and_pages_back) {
    struct harness h;
    harness_start(&h, 8, 512);
    struct probe *p[2] = {probe_new(&h, "hello world", 24), probe_new(&h, "hello world", 24)};
    probe_submit(p[0]);
    wait_all(&h, p, 1);
    probe_submit(p[1]); /* alone again: the same greedy tokens */
    wait_all(&h, p, 2);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(p[i]->r->finish, WREQ_FIN_LENGTH);
        cr_assert_eq(p[i]->r->n_gen, 24);
        cr_assert(p[i]->r->t_admitted >= p[i]->r->t_arrival && p[i]->r->t_first > 0 &&
                  p[i]->r->t_done >= p[i]->r->t_first);
        check_events(p[i]->r);
        cr_assert(p[i]->events >= 1);
    }
    cr_assert_eq(
        memcmp(p[0]->r->tokens, p[1]->r->tokens, sizeof(int) * (size_t)(p[0]->r->n_prompt + 24)),
        0);
    cr_assert_eq(p[0]->r->text_len, p[1]->r->text_len);
    cr_assert_eq(memcmp(p[0]->r->text, p[1]->r->text, p[0]->r->text_len), 0);
    cr_assert_eq(h.n_final, 2);
    cr_assert_eq(run_until(&h, kv_empty, &h), 0, "pages not back: %g", kv_usage(&h));
    probe_free(p[0]), probe_free(p[1]);
    harness_stop(&h);
}

Test(worker, eos_ends_a_sampled_request) {
    /* near-uniform sampling over 282 tokens: each of 16 x 200 draws is the eos with p ~ 1/282 */
    struct harness h;
    harness_start(&h, 16, 512);
    struct probe *p[16];
    for (int i = 0; i < 16; i++) {
        p[i] = probe_new(&h, "ab", 200);
        p[i]->r->ignore_eos = 0;
        p[i]->r->sp.do_sample = 1;
        p[i]->r->sp.temperature = 50.0f;
        p[i]->r->sp.seed = 1000 + (uint64_t)i;
        probe_submit(p[i]);
    }
    wait_all(&h, p, 16);
    int n_eos = 0;
    for (int i = 0; i < 16; i++) {
        struct wreq *r = p[i]->r;
        check_events(r);
        if (r->finish == WREQ_FIN_EOS) {
            n_eos++;
            cr_assert(tokenizer_is_eog(h.w.info.tok, r->tokens[r->n_prompt + r->n_gen - 1]));
            for (int k = 0; k + 1 < r->n_gen; k++)
                cr_assert(!tokenizer_is_eog(h.w.info.tok, r->tokens[r->n_prompt + k]));
        } else {
            cr_assert_eq(r->finish, WREQ_FIN_LENGTH);
            cr_assert_eq(r->n_gen, 200);
        }
    }
    cr_assert(n_eos > 0, "no request drew the eos token");
    for (int i = 0; i < 16; i++)
        probe_free(p[i]);
    harness_stop(&h);
}

Test(worker, stop_sequence_ends_at_its_first_match) {
    struct harness h;
    harness_start(&h, 8, 512);
    struct probe *ref = probe_new(&h, "the quick brown fox", 40);
    probe_submit(ref);
    wait_all(&h, &ref, 1);
    const struct wreq *R = ref->r;
    /* two printable bytes from the middle of the greedy text */
    char stop[3] = "";
    for (size_t a = R->text_len / 3; a + 1 < R->text_len && !stop[0]; a++)
        if (R->text[a] > ' ' && R->text[a] < 127 && R->text[a + 1] > ' ' && R->text[a + 1] < 127)
            stop[0] = R->text[a], stop[1] = R->text[a + 1];
    cr_assert(stop[0], "no printable pair in the greedy text");
    size_t pos = (size_t)((char *)memmem(R->text, R->text_len, stop, 2) - R->text);
    int k_end = 0;
    while (R->text_end[k_end] < pos + 2)
        k_end++;
    struct probe *p = probe_new(&h, "the quick brown fox", 40);
    p->r->n_stop = 1;
    p->r->stop = malloc(sizeof(char *));
    p->r->stop[0] = strdup(stop);
    probe_submit(p);
    wait_all(&h, &p, 1);
    cr_assert_eq(p->r->finish, WREQ_FIN_STOP, "finish %d", p->r->finish);
    cr_assert_eq(p->r->stop_pos, pos);
    cr_assert_eq(p->r->n_gen, k_end + 1);
    cr_assert_eq(memcmp(p->r->text, R->text, pos + 2), 0);
    check_events(p->r);
    probe_free(ref), probe_free(p);
    harness_stop(&h);
}

Test(worker, cancel_queued_and_running) {
    struct harness h;
    harness_start(&h, 1, 512); /* one slot: b waits behind a */
    /* The running one is cancelled from the loop thread once 3 tokens arrived; the tiny model
     * can reach its 200 tokens before a loaded machine runs that thread (then it ends by length,
     * which is right too), so the scenario repeats until the cancel landed mid-run (5 tries). */
    int cancelled_running = 0;
    for (int attempt = 0; attempt < 5 && !cancelled_running; attempt++) {
        struct probe *p[2] = {probe_new(&h, "running one", 200), probe_new(&h, "queued one", 8)};
        p[0]->cancel_at = 3;
        probe_submit(p[0]);
        probe_submit(p[1]);
        worker_cancel(&h.w, p[1]->r); /* still queued: a holds the only slot */
        wait_all(&h, p, 2);
        cr_assert_eq(p[1]->r->finish, WREQ_FIN_CANCELLED);
        cr_assert_eq(p[1]->r->n_gen, 0);
        cr_assert_eq(p[1]->r->t_admitted, 0);
        if (p[0]->r->finish == WREQ_FIN_CANCELLED) {
            cr_assert(p[0]->r->n_gen >= 3 && p[0]->r->n_gen < 200, "n_gen %d", p[0]->r->n_gen);
            cancelled_running = 1;
        } else {
            cr_assert_eq(p[0]->r->finish, WREQ_FIN_LENGTH, "finish %d", p[0]->r->finish);
            cr_assert_eq(p[0]->r->n_gen, 200);
        }
        check_events(p[0]->r);
        cr_assert_eq(h.n_final, 2 * (attempt + 1));
        cr_assert_eq(run_until(&h, kv_empty, &h), 0, "pages not back: %g", kv_usage(&h));
        probe_free(p[0]), probe_free(p[1]);
    }
    cr_assert(cancelled_running, "the running request was never cancelled mid-run in 5 tries");
    /* the worker still serves */
    struct probe *q = probe_new(&h, "after", 4);
    probe_submit(q);
    wait_all(&h, &q, 1);
    cr_assert_eq(q->r->finish, WREQ_FIN_LENGTH);
    probe_free(q);
    harness_stop(&h);
}

/* Four requests on two slots, then cancel_all. The worker may run a request to its end before the
 * flag lands (the tiny model makes 200 tokens in a few ms, and CI's loaded cores can hold this
 * thread back between the submits: one finished by length there on 2026-12-03): each request
 * must be cancelled short of its length or have finished whole, and the round repeats (up to 5)
 * until the cancel caught some, each round on a worker of its own. */
Test(worker, cancel_all) {
    int caught = 0;
    for (int attempt = 0; attempt < 5 && !caught; attempt++) {
        struct harness h; /* a worker each round: cancel_all stays set (it is the shutdown's) */
        harness_start(&h, 2, 512);
        struct probe *p[4];
        for (int i = 0; i < 4; i++) {
            p[i] = probe_new(&h, "long", 200);
            probe_submit(p[i]);
        }
        worker_cancel_all(&h.w);
        wait_all(&h, p, 4);
        for (int i = 0; i < 4; i++) {
            if (p[i]->r->finish == WREQ_FIN_CANCELLED) {
                cr_assert(p[i]->r->n_gen < 200, "cancelled after all %d tokens", p[i]->r->n_gen);
                caught++;
            } else {
                cr_assert_eq(p[i]->r->finish, WREQ_FIN_LENGTH, "finish %d", p[i]->r->finish);
                cr_assert_eq(p[i]->r->n_gen, 200);
            }
            probe_free(p[i]);
        }
        cr_assert_eq(run_until(&h, kv_empty, &h), 0);
        harness_stop(&h);
    }
    cr_assert(caught > 0, "cancel_all caught no request in 5 rounds");
}

Test(worker, deadlines) {
    struct harness h;
    harness_start(&h, 512, 4096);
    /* a queue deadline already past: timed out before admission */
    struct probe *q = probe_new(&h, "late", 8);
    q->r->queue_deadline = worker_now() - 1;
    probe_submit(q);
    wait_all(&h, &q, 1);
    cr_assert_eq(q->r->finish, WREQ_FIN_TIMEOUT);
    cr_assert_eq(q->r->t_admitted, 0);
    cr_assert_eq(q->r->n_gen, 0);
    /* a request deadline that passes while running: 256 sequences make each step slow enough */
    enum { N = 256 };
    struct probe *p[N];
    double dl = worker_now() + 0.2;
    for (int i = 0; i < N; i++) {
        p[i] = probe_new(&h, "deadline", 240);
        p[i]->r->deadline = dl;
        probe_submit(p[i]);
    }
    wait_all(&h, p, N);
    int n_mid = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(p[i]->r->finish, WREQ_FIN_TIMEOUT, "finish %d n_gen %d", p[i]->r->finish,
                     p[i]->r->n_gen);
        cr_assert(p[i]->r->t_done >= dl);
        n_mid += p[i]->r->n_gen > 0 && p[i]->r->t_admitted > 0;
        check_events(p[i]->r);
        probe_free(p[i]);
    }
    cr_assert(n_mid > 0, "no request timed out while running");
    cr_assert_eq(run_until(&h, kv_empty, &h), 0);
    probe_free(q);
    harness_stop(&h);
}

Test(worker, prompt_logprobs) {
    struct harness h;
    harness_start(&h, 8, 512);
    struct probe *p = probe_new(&h, "abcdef", 4);
    wreq_free(p->r);
    p->r = wreq_new(6, 4, 1);
    const char *s = "abcdef";
    int *ids = NULL, n = 0;
    char err[128];
    cr_assert_eq(tokenizer_encode(h.w.info.tok, s, 6, 0, 0, &ids, &n, err, sizeof err), 0);
    cr_assert_eq(n, 6);
    memcpy(p->r->tokens, ids, sizeof ids[0] * 6);
    free(ids);
    p->r->ignore_eos = 1;
    p->r->on_event = on_event;
    p->r->user = p;
    probe_submit(p);
    wait_all(&h, &p, 1);
    cr_assert_eq(p->r->finish, WREQ_FIN_LENGTH);
    cr_assert_eq(p->r->n_prompt_lp, 6);
    cr_assert(isnan(p->r->prompt_lp[0]));
    for (int i = 1; i < 6; i++)
        cr_assert(isfinite(p->r->prompt_lp[i]) && p->r->prompt_lp[i] <= 1e-4f, "lp[%d] = %g", i,
                  p->r->prompt_lp[i]);
    probe_free(p);
    harness_stop(&h);
}

Test(worker, more_than_1024_sequences_get_their_samplers, .timeout = 600) {
    enum { N = 1100, NEW = 8 };
    struct harness h;
    harness_start(&h, 2048, 8192);
    struct probe *greedy = probe_new(&h, "zq", NEW);
    probe_submit(greedy);
    wait_all(&h, &greedy, 1);
    struct probe **p = calloc(N, sizeof *p);
    for (int i = 0; i < N; i++) {
        p[i] = probe_new(&h, "zq", NEW);
        if (i % 2 == 0) { /* seeded sampling */
            p[i]->r->sp.do_sample = 1;
            p[i]->r->sp.temperature = 1.5f;
            p[i]->r->sp.seed = 77 + (uint64_t)i;
        } else { /* greedy with a repetition penalty */
            p[i]->r->sp.repetition_penalty = 1.5f;
        }
    }
    for (int i = 0; i < N; i++) /* submitted at once: admitted together, in this order */
        probe_submit(p[i]);
    wait_all(&h, p, N);
    const int *g = greedy->r->tokens + greedy->r->n_prompt;
    int differ_hi = 0, n_hi = 0;
    for (int i = 0; i < N; i++) {
        struct wreq *r = p[i]->r;
        cr_assert_eq(r->finish, WREQ_FIN_LENGTH, "seq %d finish %d", i, r->finish);
        cr_assert_eq(r->n_gen, NEW);
        check_events(r); /* finite logprobs, also for the penalised ones */
        if (i % 2 == 0 && i >= 1024) {
            n_hi++;
            differ_hi += memcmp(r->tokens + r->n_prompt, g, sizeof(int) * NEW) != 0;
        }
    }
    /* 8 draws at temperature 1.5 over 282 tokens all equal to greedy: practically never */
    cr_assert(differ_hi >= n_hi - 2, "%d of %d seeded sequences past 1024 gave the greedy text",
              n_hi - differ_hi, n_hi);
    cr_assert_eq(run_until(&h, kv_empty, &h), 0);
    for (int i = 0; i < N; i++)
        probe_free(p[i]);
    free(p);
    probe_free(greedy);
    harness_stop(&h);
}

/* The tokens of PS_N requests sharing a 130-byte prefix (two 64-token pages), under the worker
 * config EXTRA; odd ones sample with a seed, even ones are greedy; WAVES 2 submits the second
 * half after the first has finished. Returns the generated ids, (PS_N, PS_NEW), and the
 * scheduler's counters through HITS/PREEMPTIONS. */
#define PS_N 8
#define PS_NEW 90
static void shared_prefix_run(const char *const (*extra)[2], int n_extra, int waves,
                              int out[PS_N][PS_NEW], uint64_t *hits, uint64_t *preemptions) {
    struct harness h;
    harness_start_with(&h, PS_N, 512, extra, n_extra);
    static const char prefix[] =
        "The quick brown fox jumps over the lazy dog; pack my box with "
        "five dozen liquor jugs. Sphinx of black quartz, judge my vow! How "
        "vexingly quick daft zebras jump.";
    cr_assert_geq(strlen(prefix), 128);
    struct probe *p[PS_N];
    char text[256];
    for (int i = 0; i < PS_N; i++) {
        snprintf(text, sizeof text, "%s request %d", prefix, i);
        p[i] = probe_new(&h, text, PS_NEW);
        if (i % 2) {
            p[i]->r->sp.do_sample = 1;
            p[i]->r->sp.temperature = 1.5f;
            p[i]->r->sp.seed = 77 + (uint64_t)i;
        }
    }
    int per = waves == 2 ? PS_N / 2 : PS_N;
    for (int i = 0; i < per; i++)
        probe_submit(p[i]);
    wait_all(&h, p, per);
    for (int i = per; i < PS_N; i++)
        probe_submit(p[i]);
    wait_all(&h, p, PS_N);
    for (int i = 0; i < PS_N; i++) {
        cr_assert_eq(p[i]->r->finish, WREQ_FIN_LENGTH, "request %d: %s", i, p[i]->r->error);
        cr_assert_eq(p[i]->r->n_gen, PS_NEW);
        check_events(p[i]->r);
        memcpy(out[i], p[i]->r->tokens + p[i]->r->n_prompt, sizeof(int) * PS_NEW);
    }
    cr_assert_eq(run_until(&h, kv_empty, &h), 0, "pages not back: %g", kv_usage(&h));
    pthread_mutex_lock(&h.m.mu);
    *hits = h.m.prefix_hits;
    *preemptions = h.m.preemptions;
    pthread_mutex_unlock(&h.m.mu);
    for (int i = 0; i < PS_N; i++)
        probe_free(p[i]);
    harness_stop(&h);
}

Test(worker, prefix_cache_and_preemption_keep_the_tokens, .timeout = 300) {
    static int ref[PS_N][PS_NEW], cached[PS_N][PS_NEW], tiny[PS_N][PS_NEW];
    uint64_t hits, pre;
    const char *const off[][2] = {{"prefix_caching", "false"}, {"page_size", "64"}};
    shared_prefix_run(off, 2, 2, ref, &hits, &pre);
    cr_assert_eq(hits, 0);
    cr_assert_eq(pre, 0);
    const char *const on[][2] = {{"prefix_caching", "true"}, {"page_size", "64"}};
    shared_prefix_run(on, 2, 2, cached, &hits, &pre);
    /* the second wave finds the first's two prefix pages */
    cr_assert_geq(hits, (uint64_t)(PS_N / 2) * 128, "prefix hits %llu", (unsigned long long)hits);
    cr_assert_eq(pre, 0);
    /* 1 MiB of KV = 1024 tokens of this model = 16 pages of 64, for 8 requests of up to ~230
     * tokens (4 pages each) at once: preemption must happen, and no request fails */
    const char *const small[][2] = {
        {"prefix_caching", "true"}, {"page_size", "64"}, {"kv_cache_mb", "1"}};
    /* whether the pool runs out depends on how far the first requests got before the last were
     * submitted (a loaded machine can finish some first): up to 5 runs, each checked below only
     * through its tokens, until one has preempted */
    for (int attempt = 0; attempt < 5; attempt++) {
        shared_prefix_run(small, 3, 1, tiny, &hits, &pre);
        for (int i = 0; i < PS_N; i++)
            for (int k = 0; k < PS_NEW; k++)
                cr_assert_eq(tiny[i][k], ref[i][k], "request %d token %d: small KV-cache", i, k);
        if (pre > 0) break;
    }
    cr_assert_gt(pre, 0, "no preemption in 5 runs with a KV-cache this small");
    for (int i = 0; i < PS_N; i++)
        for (int k = 0; k < PS_NEW; k++) {
            cr_assert_eq(cached[i][k], ref[i][k], "request %d token %d: with the prefix cache", i,
                         k);
            cr_assert_eq(tiny[i][k], ref[i][k], "request %d token %d: with preemption", i, k);
        }
}
