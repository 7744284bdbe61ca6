/* worker.c — the worker thread: loads the engine, then runs scheduler iterations; and the loop
 * side of the boundary (submit, cancel, event delivery). See worker.h for who owns what.
 *
 * One iteration (iterate): take submissions, cancellations and deadlines under the lock → reap
 * what ended (pages back in the pool, at once for a cancelled sequence) → admit and plan → forward
 * pass → sample the wanted rows, decode, stop checks into each sequence's outbox → publish: every
 * outbox into its ring under the lock, once, then one uv_async_send. (Requests that ended at the
 * intake are published before the step, with a wake of their own, so that a cancelled or timed
 * out request is answered and accounted without waiting for a forward pass that is not theirs.)
 * When there is nothing to run the worker sleeps on the condition variable (with a timeout while
 * jobs with deadlines wait).
 *
 * Constrained decoding (model/grammar.h): while the step's forward pass runs (queued on the GPU;
 * on the CPU backend it has finished), each row under a grammar gets its allowed-token bitmask
 * (computed in parallel, one matcher per row); the masks go to the backend, which drops the
 * disallowed logits where they are (fwd_mask: on the GPU only the bitmasks travel, vocab / 8
 * bytes a row), and the backend's own sample op picks as for any row. The matcher then advances
 * by the token taken, and a complete value ends the request (finish EOS).
 */
#include "worker.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu_pool.h"
#include "kernels/logit_mask.h"
#include "kernels/sample.h"
#include "model/grammar.h"
#include "model/engine.h"
#include "model/forward.h"
#include "model/tokenizer.h"
#include "server/reqlog.h"

#define WORKER_REAP_MAX 64
#define WORKER_IDLE_WAIT_S 0.1 /* wake-up period while jobs wait (deadline checks) */
/* the shared mask cache: 64 MiB is ~10k masks of a 49k vocabulary, ~3.4k of a 152k one */
#define WORKER_MASK_CACHE_BYTES ((size_t)64 << 20)

double worker_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *const FINISH_NAMES[] = {"",          "length",  "eos_token", "stop_sequence",
                                           "cancelled", "timeout", "error"};

const char *wreq_finish_name(enum wreq_finish f) {
    return (unsigned)f <= WREQ_FIN_ERROR ? FINISH_NAMES[f] : "error";
}

/* ---- event batches (either thread, on the batch its owner holds) --------------------------- */

static void wevents_free(struct wevents *b) {
    free(b->ev);
    free(b->bytes);
    free(b->alt);
    memset(b, 0, sizeof *b);
}

/* Append one event (with N text bytes and N_ALT alternatives) to B; -1 when out of memory. */
static int wevents_push(struct wevents *b, enum wevent_kind kind, int id, float lp, const char *s,
                        size_t n, const struct walt *alt, int n_alt) {
    if (b->n_alt + n_alt > b->alt_cap) {
        int cap = b->alt_cap ? b->alt_cap : 64;
        while (cap < b->n_alt + n_alt)
            cap *= 2;
        struct walt *na = realloc(b->alt, sizeof *na * (size_t)cap);
        if (!na) return -1;
        b->alt = na;
        b->alt_cap = cap;
    }
    if (b->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 16;
        struct wevent *ev = realloc(b->ev, sizeof *ev * (size_t)cap);
        if (!ev) return -1;
        b->ev = ev;
        b->cap = cap;
    }
    if (b->n_bytes + n > b->bytes_cap) {
        size_t cap = b->bytes_cap ? b->bytes_cap : 256;
        while (cap < b->n_bytes + n)
            cap *= 2;
        char *nb = realloc(b->bytes, cap);
        if (!nb) return -1;
        b->bytes = nb;
        b->bytes_cap = cap;
    }
    if (n) memcpy(b->bytes + b->n_bytes, s, n);
    if (n_alt) memcpy(b->alt + b->n_alt, alt, sizeof *alt * (size_t)n_alt);
    b->ev[b->n++] = (struct wevent){kind, id, lp, b->n_bytes, n, b->n_alt, n_alt};
    b->n_bytes += n;
    b->n_alt += n_alt;
    return 0;
}

/* Append every event of SRC to DST (text offsets rebased). */
static int wevents_append(struct wevents *dst, const struct wevents *src) {
    for (int i = 0; i < src->n; i++) {
        const struct wevent *e = &src->ev[i];
        const char *t = e->text_len ? src->bytes + e->text_off : NULL;
        if (wevents_push(dst, e->kind, e->id, e->logprob, t, e->text_len, src->alt + e->alt_off,
                         e->n_alt))
            return -1;
    }
    return 0;
}

/* ---- requests (loop thread) ---------------------------------------------------------------- */

struct wreq *wreq_new(int n_prompt, int max_new, int want_prompt_logprobs) {
    struct wreq *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->n_prompt = n_prompt;
    r->max_new = max_new;
    r->tokens = malloc(sizeof(int) * (size_t)(n_prompt + max_new));
    r->logprobs = malloc(sizeof(float) * (size_t)(max_new > 0 ? max_new : 1));
    r->text_end = malloc(sizeof(size_t) * (size_t)(max_new > 0 ? max_new : 1));
    r->text_cap = 256;
    r->text = malloc(r->text_cap);
    if (want_prompt_logprobs) {
        r->prompt_logprobs = 1;
        r->prompt_lp = malloc(sizeof(float) * (size_t)(n_prompt > 0 ? n_prompt : 1));
    }
    if (!r->tokens || !r->logprobs || !r->text_end || !r->text ||
        (want_prompt_logprobs && !r->prompt_lp)) {
        wreq_free(r);
        return NULL;
    }
    r->text[0] = 0;
    if (r->prompt_lp) {
        r->prompt_lp[0] = NAN;
        r->n_prompt_lp = 1;
    }
    sampler_params_default(&r->sp);
    return r;
}

int wreq_want_top(struct wreq *r, int k) {
    if (k <= 0) return 0;
    r->top_k = k < FG_TOP_MAX ? k : FG_TOP_MAX;
    size_t n = (size_t)(r->max_new > 0 ? r->max_new : 1) * (size_t)r->top_k;
    r->top = malloc(sizeof *r->top * n);
    if (r->prompt_logprobs)
        r->prompt_top = calloc((size_t)(r->n_prompt > 0 ? r->n_prompt : 1) * (size_t)r->top_k,
                               sizeof *r->prompt_top);
    if (!r->top || (r->prompt_logprobs && !r->prompt_top)) return -1;
    for (int j = 0; r->prompt_top && j < r->top_k; j++)
        r->prompt_top[j].id = -1; /* the first prompt token has no distribution */
    return 0;
}

void wreq_free(struct wreq *r) {
    if (!r) return;
    free(r->top);
    free(r->prompt_top);
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->stop);
    free(r->tokens);
    free(r->logprobs);
    free(r->text_end);
    free(r->text);
    free(r->prompt_lp);
    grammar_free(r->grammar);
    if (r->ring) {
        wevents_free(&r->ring->pending);
        wevents_free(&r->ring->taken);
        free(r->ring);
    }
    free(r);
}

/* ---- the worker's sequence (worker thread, from worker_submit on) -------------------------- */

struct wseq {
    struct sched_seq seq; /* seq.user = this */
    int *tokens;          /* (n_prompt + max_new) prompt, then the generated ids */
    int n_prompt, max_new, n_gen;
    struct sampler_params sp;
    struct sampler sampler;
    int sampler_ready;
    struct tok_stream stream;
    char **stop; /* (n_stop) copies */
    int n_stop;
    char *text; /* decoded text so far, for stop matching; NUL-terminated */
    size_t text_len, text_cap;
    int prompt_logprobs, ignore_eos;
    int top_k;                       /* alternatives per position; 0 = none */
    struct grammar *grammar;         /* constrained decoding, or NULL (moved from the wreq) */
    struct grammar_matcher *matcher; /* its state, from admission on */
    double t_arrival, deadline, queue_deadline, t_last;
    struct wfinish fin;       /* reason NONE while running */
    struct wring *ring;       /* shared; NULL once the finish event is posted */
    struct wevents out;       /* this iteration's events, published at its end */
    int in_pub;               /* on the publish list */
    struct wseq *next_pub;    /* publish list link */
    struct wseq *next;        /* submission list, then dead list link */
    struct wseq *fork_parent; /* until the intake: the sequence whose prompt pages it forks */
};

static void wseq_free(struct wseq *q) {
    if (!q) return;
    if (q->sampler_ready) sampler_free(&q->sampler);
    grammar_matcher_free(q->matcher);
    grammar_free(q->grammar);
    for (int i = 0; i < q->n_stop; i++)
        free(q->stop[i]);
    free(q->stop);
    free(q->tokens);
    free(q->text);
    wevents_free(&q->out);
    free(q);
}

/* The worker's copy of R. Loop thread (before it is handed over). */
static struct wseq *wseq_new(const struct wreq *r, struct wring *ring) {
    struct wseq *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->n_prompt = r->n_prompt;
    q->max_new = r->max_new;
    q->tokens = malloc(sizeof(int) * (size_t)(r->n_prompt + r->max_new));
    q->text_cap = 256;
    q->text = malloc(q->text_cap);
    q->stop = r->n_stop ? calloc((size_t)r->n_stop, sizeof *q->stop) : NULL;
    if (!q->tokens || !q->text || (r->n_stop && !q->stop)) {
        wseq_free(q);
        return NULL;
    }
    for (; q->n_stop < r->n_stop; q->n_stop++)
        if (!(q->stop[q->n_stop] = strdup(r->stop[q->n_stop]))) {
            wseq_free(q);
            return NULL;
        }
    memcpy(q->tokens, r->tokens, sizeof(int) * (size_t)r->n_prompt);
    q->text[0] = 0;
    q->sp = r->sp;
    q->prompt_logprobs = r->prompt_logprobs;
    q->ignore_eos = r->ignore_eos;
    q->top_k = r->top_k;
    q->t_arrival = r->t_arrival;
    q->deadline = r->deadline;
    q->queue_deadline = r->queue_deadline;
    q->ring = ring;
    q->seq.tokens = q->tokens;
    q->seq.n_tokens = q->n_prompt;
    q->seq.n_prompt = q->n_prompt;
    q->seq.cap = q->n_prompt + q->max_new;
    q->seq.max_new = q->max_new;
    q->seq.chunk_max = q->prompt_logprobs ? 1 : 0;
    q->seq.user = q;
    return q;
}

/* ---- loop-thread side ---------------------------------------------------------------------- */

int worker_submit(struct worker *w, struct wreq *r) {
    return worker_submit_group(w, &r, 1);
}

int worker_submit_group(struct worker *w, struct wreq **rs, int n) {
    struct wseq **qs = calloc((size_t)(n > 0 ? n : 1), sizeof *qs);
    int k = 0;
    for (; qs && k < n; k++) {
        struct wring *ring = calloc(1, sizeof *ring);
        if (!ring || !(qs[k] = wseq_new(rs[k], ring))) {
            free(ring);
            break;
        }
        atomic_init(&ring->cancel, 0);
        for (int i = 0; i < k && rs[k]->fork_of; i++)
            if (rs[i] == rs[k]->fork_of) qs[k]->fork_parent = qs[i];
    }
    if (!qs || k < n) { /* nothing was handed over: the wreqs keep their grammars */
        for (int i = 0; qs && i < k; i++) {
            free(qs[i]->ring);
            wseq_free(qs[i]);
        }
        free(qs);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        qs[i]->grammar = rs[i]->grammar; /* immutable: the worker owns it from here */
        rs[i]->grammar = NULL;
        qs[i]->ring->job = rs[i];
        rs[i]->ring = qs[i]->ring;
    }
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < n; i++) {
        if (w->sub_tail)
            w->sub_tail->next = qs[i];
        else
            w->sub_head = qs[i];
        w->sub_tail = qs[i];
    }
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    free(qs);
    return 0;
}

void worker_cancel(struct worker *w, struct wreq *r) {
    if (!r->ring || r->finish != WREQ_FIN_NONE) return;
    atomic_store(&r->ring->cancel, 1);
    pthread_mutex_lock(&w->mu);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void worker_cancel_all(struct worker *w) {
    pthread_mutex_lock(&w->mu);
    w->cancel_all = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int text_append(char **text, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t nc = *cap * 2 + n + 1;
        char *nt = realloc(*text, nc);
        if (!nt) return -1;
        *text = nt;
        *cap = nc;
    }
    if (n) memcpy(*text + *len, s, n);
    *len += n;
    (*text)[*len] = 0;
    return 0;
}

/* Row POS of a (rows, k) alternatives table from event E of batch B (-1 past what it carries). */
static void wreq_put_top(struct walt *tab, int k, int pos, const struct wevents *b,
                         const struct wevent *e) {
    struct walt *row = tab + (size_t)pos * (size_t)k;
    for (int j = 0; j < k; j++)
        row[j] = j < e->n_alt ? b->alt[e->alt_off + j] : (struct walt){-1, 0};
}

/* Apply a batch of events (and the finish, if FIN) to the request. */
static void wreq_apply(struct wreq *r, const struct wevents *b, const struct wfinish *fin) {
    for (int i = 0; i < b->n; i++) {
        const struct wevent *e = &b->ev[i];
        if (e->kind == WEVENT_PROMPT_LP) {
            if (r->prompt_lp && e->id > 0 && e->id < r->n_prompt) {
                r->prompt_lp[e->id] = e->logprob;
                r->n_prompt_lp = e->id + 1;
                if (r->prompt_top) wreq_put_top(r->prompt_top, r->top_k, e->id, b, e);
            }
            continue;
        }
        if (r->n_gen >= r->max_new) continue;
        int k = r->n_gen++;
        r->tokens[r->n_prompt + k] = e->id;
        r->logprobs[k] = e->logprob;
        if (r->top) wreq_put_top(r->top, r->top_k, k, b, e);
        const char *t = e->text_len ? b->bytes + e->text_off : NULL;
        text_append(&r->text, &r->text_len, &r->text_cap, t, e->text_len);
        r->text_end[k] = r->text_len;
    }
    if (fin) {
        r->finish = fin->reason;
        r->stop_pos = fin->stop_pos < r->text_len ? fin->stop_pos : r->text_len;
        memcpy(r->error, fin->error, sizeof r->error);
        r->t_admitted = fin->t_admitted;
        r->t_first = fin->t_first;
        r->t_done = fin->t_done;
    }
}

/* uv_async callback: take every ready ring's events under the lock, then deliver them. */
static void on_async(uv_async_t *h) {
    struct worker *w = h->data;
    struct wring *taken = NULL, **tail = &taken;
    pthread_mutex_lock(&w->mu);
    enum worker_state st = w->state;
    for (struct wring *g = w->ready_head; g; g = g->next_ready) {
        struct wevents t = g->taken; /* emptied by the last delivery: its buffers go back */
        t.n = 0;
        t.n_bytes = 0;
        t.n_alt = 0;
        g->taken = g->pending;
        g->pending = t;
        g->fin_taken = g->finished; /* the finish comes after every event in `taken` */
        g->queued = 0;
        g->next_taken = NULL;
        *tail = g;
        tail = &g->next_taken;
    }
    w->ready_head = NULL;
    pthread_mutex_unlock(&w->mu);
    /* after the finish was taken the worker never writes the ring again; until then only
     * `pending` (and the list links) change, under the lock */
    while (taken) {
        struct wring *g = taken;
        taken = g->next_taken;
        struct wreq *r = g->job;
        int fin = g->fin_taken && r->finish == WREQ_FIN_NONE;
        wreq_apply(r, &g->taken, fin ? &g->fin : NULL);
        g->taken.n = 0;
        g->taken.n_bytes = 0;
        g->taken.n_alt = 0;
        if (fin && w->on_final) w->on_final(r, w->user);
        if (r->on_event) r->on_event(r, r->user); /* may free r (and g) once finished */
    }
    if (st != w->reported) {
        w->reported = st;
        if (w->on_state) w->on_state(w, st, w->user);
    }
}

/* ---- worker-thread side -------------------------------------------------------------------- */

/* The worker thread's private state for its loop (on its stack in worker_main). */
struct worker_run {
    struct sched sched;
    int vocab;
    /* one step's picks, made on the engine's backend: (max_batch_seqs) each */
    struct fg_sample_row *rows;
    int *ids;
    float *logprobs;
    int *history; /* the penalised rows' ids, end to end; grows */
    size_t history_cap;
    struct fg_logit_delta *deltas; /* the step's logit bias and penalties; grows */
    size_t deltas_cap;
    /* top_logprobs: (max_batch_seqs) k per row, (max_batch_seqs, FG_TOP_MAX) results */
    int *top_k;
    struct walt *top;
    int *top_ids;
    float *top_lps;
    /* constrained decoding (model/grammar.h), set up at the first request that has a grammar:
     * a step with such a row computes its mask on the host and hands it to the backend */
    struct grammar_vocab *gvocab;    /* the tokenizer's token trie */
    uint32_t *masks;                 /* (max_batch_seqs, grammar_mask_words) allowed tokens */
    int *mask_count;                 /* (max_batch_seqs) allowed per row; -2 = not constrained */
    int *mask_use;                   /* (max_batch_seqs) 1 where the row's mask applies */
    struct grammar_matcher **mask_m; /* (max_batch_seqs) the step's rows' matchers, NULL = none */
    int *advance_rc; /* (max_batch_seqs) each row's matcher advanced by its pick: 0 or -1 */
    struct grammar_mask_cache *mask_cache; /* masks shared by requests with the same grammar */
    struct cpu_pool *mask_pool; /* the rows' masks are independent: computed in parallel */
    struct wseq *pub;           /* sequences with events for the loop this iteration */
    struct wseq *dead;          /* reaped this iteration: freed after the publish */
};

/* Queue Q's outbox for this iteration's publish. */
static void pub_mark(struct worker_run *wr, struct wseq *q) {
    if (q->in_pub) return;
    q->in_pub = 1;
    q->next_pub = wr->pub;
    wr->pub = q;
}

/* End a sequence: record the finish and stop scheduling it (its pages go at the next reap). */
static void seq_finish(struct worker_run *wr, struct wseq *q, enum wreq_finish f, double now) {
    if (q->fin.reason != WREQ_FIN_NONE) return;
    q->fin.reason = f;
    q->fin.t_done = now;
    sched_end(&q->seq, f == WREQ_FIN_CANCELLED || f == WREQ_FIN_TIMEOUT || f == WREQ_FIN_ERROR
                           ? SCHED_CANCELLED
                           : SCHED_FINISHED);
    pub_mark(wr, q);
}

static void seq_fail(struct worker_run *wr, struct wseq *q, const char *msg, double now) {
    if (q->fin.reason != WREQ_FIN_NONE) return;
    snprintf(q->fin.error, sizeof q->fin.error, "%s", msg);
    seq_finish(wr, q, WREQ_FIN_ERROR, now);
}

/* Hand every outbox to its ring (one lock), free what was reaped, wake the loop once. */
static void publish(struct worker *w, struct worker_run *wr) {
    int any = wr->pub != NULL;
    if (any) {
        pthread_mutex_lock(&w->mu);
        for (struct wseq *q = wr->pub; q; q = q->next_pub) {
            struct wring *g = q->ring;
            q->in_pub = 0;
            if (!g) continue;
            if (wevents_append(&g->pending, &q->out) != 0 && q->fin.reason == WREQ_FIN_NONE) {
                /* the loop would miss tokens: end the request rather than lie */
                snprintf(q->fin.error, sizeof q->fin.error, "out of memory (events)");
                q->fin.reason = WREQ_FIN_ERROR;
                q->fin.t_done = worker_now();
                sched_end(&q->seq, SCHED_CANCELLED);
            }
            q->out.n = 0;
            q->out.n_bytes = 0;
            q->out.n_alt = 0;
            if (q->fin.reason != WREQ_FIN_NONE) {
                g->fin = q->fin;
                g->finished = 1;
                q->ring = NULL; /* the worker's last touch of the ring */
            }
            if (!g->queued) {
                g->queued = 1;
                g->next_ready = w->ready_head;
                w->ready_head = g;
            }
        }
        pthread_mutex_unlock(&w->mu);
        wr->pub = NULL;
    }
    while (wr->dead) {
        struct wseq *q = wr->dead;
        wr->dead = q->next;
        wseq_free(q);
    }
    if (any) uv_async_send(&w->async);
}

/* A stop sequence that ends inside the text added since FROM; sets stop_pos. */
static int stop_match(struct wseq *q, size_t from) {
    for (int i = 0; i < q->n_stop; i++) {
        size_t sl = strlen(q->stop[i]);
        if (!sl || sl > q->text_len) continue;
        size_t start = from >= sl - 1 ? from - (sl - 1) : 0;
        const char *hit = memmem(q->text + start, q->text_len - start, q->stop[i], sl);
        if (hit) {
            q->fin.stop_pos = (size_t)(hit - q->text);
            return 1;
        }
    }
    return 0;
}

/* Append N ids to wr->history at *len; -1 when out of memory. */
static int history_append(struct worker_run *wr, size_t *len, const int *ids, int n) {
    if (*len + (size_t)n > wr->history_cap) {
        size_t cap = wr->history_cap ? wr->history_cap : 4096;
        while (cap < *len + (size_t)n)
            cap *= 2;
        int *h = realloc(wr->history, sizeof(int) * cap);
        if (!h) return -1;
        wr->history = h;
        wr->history_cap = cap;
    }
    memcpy(wr->history + *len, ids, sizeof(int) * (size_t)n);
    *len += (size_t)n;
    return 0;
}

/* Fail every sequence of a step that the engine could not run. */
static void fail_step(struct worker_run *wr, int n, const char *what, const char *err) {
    double now = worker_now();
    char msg[256];
    snprintf(msg, sizeof msg, "%s failed: %.200s", what, err);
    for (int i = 0; i < n; i++)
        seq_fail(wr, wr->sched.batch.items[i].seq->user, msg, now);
}

/* A sequence not admitted yet (in the queue, or waiting to fork): cancelled, or past a deadline. */
static void waiting_check(struct worker *w, struct worker_run *wr, struct wseq *j, double now) {
    if (j->fin.reason != WREQ_FIN_NONE) return;
    if (w->cancel_all || atomic_load(&j->ring->cancel))
        seq_finish(wr, j, WREQ_FIN_CANCELLED, now);
    else if ((j->deadline > 0 && now > j->deadline) ||
             (j->queue_deadline > 0 && now > j->queue_deadline && j->fin.t_admitted == 0))
        seq_finish(wr, j, WREQ_FIN_TIMEOUT, now);
}

/* Take submissions, flag cancellations and deadlines (mu held). */
static void intake_locked(struct worker *w, struct worker_run *wr, double now) {
    struct wseq *q = w->sub_head;
    w->sub_head = w->sub_tail = NULL;
    while (q) {
        struct wseq *next = q->next;
        q->next = NULL;
        if (q->fork_parent)
            sched_add_fork(&wr->sched, &q->fork_parent->seq, &q->seq);
        else
            sched_add(&wr->sched, &q->seq);
        q->fork_parent = NULL;
        q = next;
    }
    for (struct sched_seq *s = wr->sched.wait_head; s; s = s->next) {
        waiting_check(w, wr, s->user, now);
        for (struct sched_seq *f = s->forks; f; f = f->fork_next)
            waiting_check(w, wr, f->user, now);
    }
    for (int i = 0; i < wr->sched.n_running; i++) {
        struct wseq *j = wr->sched.running[i]->user;
        for (struct sched_seq *f = wr->sched.running[i]->forks; f; f = f->fork_next)
            waiting_check(w, wr, f->user, now);
        if (j->fin.reason != WREQ_FIN_NONE) continue;
        if (w->cancel_all || atomic_load(&j->ring->cancel))
            seq_finish(wr, j, WREQ_FIN_CANCELLED, now);
        else if (j->deadline > 0 && now > j->deadline)
            seq_finish(wr, j, WREQ_FIN_TIMEOUT, now);
    }
}

/* Reap ended sequences: their pages are back in the pool; they are freed after the publish. */
static void reap(struct worker_run *wr) {
    struct sched_seq *out[WORKER_REAP_MAX];
    int n;
    do {
        n = sched_reap(&wr->sched, out, WORKER_REAP_MAX);
        for (int i = 0; i < n; i++) {
            struct wseq *q = out[i]->user;
            q->next = wr->dead;
            wr->dead = q;
        }
    } while (n == WORKER_REAP_MAX);
}

/* One generated token for sequence q: append, decode, stop checks, into the outbox. ADVANCE_RC:
 * what advancing q's matcher by the token returned (step_advance), when q has one. */
static void take_token(struct worker *w, struct worker_run *wr, struct wseq *q, int id, float lp,
                       const struct walt *alt, int advance_rc, double now) {
    const struct tokenizer *tok = w->engine->model->tok;
    if (q->matcher && advance_rc != 0) { /* step_advance moved the matcher */
        seq_fail(wr, q, "constrained decoding: the grammar refused the sampled token", now);
        return;
    }
    char piece[512];
    size_t np = tok_stream_push(tok, &q->stream, id, piece, sizeof piece);
    int eog = !q->ignore_eos && tokenizer_is_eog(tok, id);
    q->seq.tokens[q->seq.n_tokens++] = id;
    size_t from = q->text_len;
    int k = q->n_gen++;
    text_append(&q->text, &q->text_len, &q->text_cap, piece, np);
    enum wreq_finish f = WREQ_FIN_NONE;
    if (eog)
        f = WREQ_FIN_EOS;
    else if (q->n_stop && stop_match(q, from))
        f = WREQ_FIN_STOP;
    else if (q->matcher && grammar_matcher_finished(q->matcher))
        f = WREQ_FIN_EOS; /* the grammar is complete: only an end token could follow */
    else if (q->n_gen >= q->max_new)
        f = WREQ_FIN_LENGTH;
    if (f != WREQ_FIN_NONE && f != WREQ_FIN_STOP) {
        size_t nf = tok_stream_flush(&q->stream, piece + np, sizeof piece - np);
        text_append(&q->text, &q->text_len, &q->text_cap, piece + np, nf);
        np += nf;
    }
    if (k == 0) q->fin.t_first = now;
    if (wevents_push(&q->out, WEVENT_TOKEN, id, lp, piece, np, alt, alt ? q->top_k : 0) != 0)
        seq_fail(wr, q, "out of memory (events)", now);
    pub_mark(wr, q);
    if (f != WREQ_FIN_NONE) seq_finish(wr, q, f, now);

    if (k == 0)
        metrics_observe(w->metrics, METRICS_H_TTFT, now - q->t_arrival);
    else
        metrics_observe(w->metrics, METRICS_H_ITL, now - q->t_last);
    q->t_last = now;
}

/* A matcher for Q's grammar, and on first use the token trie and the host buffers. */
static int grammar_setup(struct worker *w, struct worker_run *wr, struct wseq *q) {
    if (!wr->gvocab) {
        size_t ns = (size_t)w->engine->max_batch_seqs;
        if (grammar_vocab_new(w->engine->model->tok, &wr->gvocab)) return -1;
        wr->masks = malloc(sizeof(uint32_t) * grammar_mask_words(wr->gvocab) * ns);
        wr->mask_count = malloc(sizeof(int) * ns);
        wr->mask_use = malloc(sizeof(int) * ns);
        wr->mask_m = malloc(sizeof(*wr->mask_m) * ns);
        wr->advance_rc = malloc(sizeof(int) * ns);
        wr->mask_cache = grammar_mask_cache_new(wr->gvocab, WORKER_MASK_CACHE_BYTES);
        wr->mask_pool = cpu_pool_create(w->cfg->threads > 0 ? w->cfg->threads : 0);
    }
    if (!wr->masks || !wr->mask_count || !wr->mask_use || !wr->mask_m || !wr->advance_rc ||
        !wr->mask_pool || !wr->mask_cache)
        return -1;
    q->matcher = grammar_matcher_new(q->grammar);
    if (q->matcher) grammar_matcher_share(q->matcher, wr->mask_cache);
    return q->matcher ? 0 : -1;
}

/* Constrained rows of a step: a mask for each picking row with a grammar, handed to the backend
 * (mask_count[i] > 0 marks the rows it applies to). Returns fwd_mask's status. */
static int step_masks(struct worker *w, struct worker_run *wr, int n, char *err, size_t errlen) {
    for (int i = 0; i < n; i++) {
        struct wseq *q = wr->sched.batch.items[i].seq->user;
        int picks = wr->rows[i].target < 0 && q->matcher && q->fin.reason == WREQ_FIN_NONE;
        wr->mask_m[i] = picks ? q->matcher : NULL;
    }
    /* rows in one state of one schema cost one mask (model/grammar.h) */
    int oom =
        grammar_mask_rows(wr->mask_m, n, wr->gvocab, wr->masks, wr->mask_count, wr->mask_pool) < 0;
    double now = worker_now();
    for (int i = 0; i < n; i++) {
        if (oom) wr->mask_count[i] = wr->mask_m[i] ? -1 : -2;
        if (wr->mask_count[i] == -2 || wr->mask_count[i] > 0) continue;
        /* a dead end (no token spells what must come), a limit of the matcher, no memory */
        seq_fail(wr, wr->sched.batch.items[i].seq->user,
                 oom ? "out of memory (constrained decoding)"
                     : "constrained decoding: no token can continue the grammar",
                 now);
        sampler_target_row(0, &wr->rows[i]);
    }
    for (int i = 0; i < n; i++)
        wr->mask_use[i] = wr->mask_count[i] > 0;
    return fwd_mask(w->engine->fwd, n, wr->masks, grammar_mask_words(wr->gvocab), wr->mask_use,
                    grammar_vocab_size(wr->gvocab), err, errlen);
}

/* The matchers of the rows that take a token this step (the ones take_token will see), advanced
 * by their picks at once (rows in one state help each other: model/grammar.h; on this thread,
 * as the pool's wake-up cost more than the advances, bench/grammar.md); wr->advance_rc[i] is
 * the result. */
static void step_advance(struct worker_run *wr, int n) {
    for (int i = 0; i < n; i++) {
        struct sched_item *it = &wr->sched.batch.items[i];
        struct wseq *q = it->seq->user;
        int takes =
            it->want && q->fin.reason == WREQ_FIN_NONE && it->seq->kv.n_tokens >= q->n_prompt;
        wr->mask_m[i] = takes ? q->matcher : NULL;
    }
    grammar_accept_rows(wr->mask_m, n, wr->gvocab, wr->ids, wr->advance_rc);
}

/* Set up the sequences sched_plan admitted for the first time (s->admitted). */
static void admit_setup(struct worker *w, struct worker_run *wr, double now) {
    struct sched *s = &wr->sched;
    for (int i = 0; i < s->n_admitted; i++) {
        struct wseq *q = s->admitted[i]->user;
        if (q->seq.n_preempted > 0) continue; /* resumed: its sampler and text go on */
        q->sampler_ready = sampler_init(&q->sampler, &q->sp, wr->vocab) == 0;
        tok_stream_init(&q->stream, 1);
        q->fin.t_admitted = now;
        metrics_observe(w->metrics, METRICS_H_QUEUE, now - q->t_arrival);
        if (!q->sampler_ready) seq_fail(wr, q, "out of memory (sampler)", now);
        if (q->grammar && grammar_setup(w, wr, q) != 0)
            seq_fail(wr, q, "out of memory (constrained decoding)", now);
    }
}

/* Append row I's logit deltas (sequence Q's bias and penalties over its generated ids) to
 * wr->deltas at *len; -1 when out of memory. */
static int deltas_append(struct worker_run *wr, size_t *len, struct wseq *q, int i) {
    size_t need = *len + (size_t)q->sp.n_bias + (size_t)q->n_gen;
    if (need > wr->deltas_cap) {
        size_t cap = wr->deltas_cap ? wr->deltas_cap : 1024;
        while (cap < need)
            cap *= 2;
        struct fg_logit_delta *d = realloc(wr->deltas, sizeof *d * cap);
        if (!d) return -1;
        wr->deltas = d;
        wr->deltas_cap = cap;
    }
    *len += (size_t)sampler_deltas(&q->sampler, i, q->tokens + q->n_prompt, q->n_gen,
                                   wr->deltas + *len);
    return 0;
}

/* Row I's alternatives of this step as walts (wr->top + I * FG_TOP_MAX). */
static const struct walt *step_top(struct worker_run *wr, int i) {
    struct walt *a = wr->top + (size_t)i * FG_TOP_MAX;
    for (int j = 0; j < wr->top_k[i]; j++) {
        size_t at = (size_t)i * FG_TOP_MAX + (size_t)j;
        a[j] = (struct walt){wr->top_ids[at], wr->top_lps[at]};
    }
    return a;
}

/* Run one iteration. Returns 1 if a forward pass ran, 0 when idle. */
static int iterate(struct worker *w, struct worker_run *wr) {
    struct sched *s = &wr->sched;
    double now = worker_now();
    pthread_mutex_lock(&w->mu);
    intake_locked(w, wr, now);
    pthread_mutex_unlock(&w->mu);
    reap(wr);
    /* requests that ended here (cancelled, past a deadline) are told now, not after a forward
     * pass that is not theirs: their replies and the accounting go out with the pages freed */
    publish(w, wr);

    int n = sched_plan(s);
    admit_setup(w, wr, worker_now());
    struct kv_cache *kv = &w->engine->kv;
    double kv_use = kv->n_pages ? (double)kv_cache_used(kv) / kv->n_pages : 0;
    metrics_iteration(w->metrics, s->n_running, s->n_waiting, n, s->batch.n_tokens, kv_use);
    metrics_kv(w->metrics, s->prefix_queries, s->prefix_hits, s->preemptions, kv->n_cached);
    metrics_forks(w->metrics, s->forks, s->prefill_tokens);
    if (n == 0) {
        publish(w, wr); /* a failed admission (sampler) has news although no step runs */
        return 0;
    }

    /* a step with a constrained row computes masks on the host while the pass runs */
    int constrained = 0;
    for (int i = 0; i < n; i++) {
        const struct wseq *q = s->batch.items[i].seq->user;
        constrained |= s->batch.items[i].want && q->matcher && q->fin.reason == WREQ_FIN_NONE;
    }
    char err[256] = "";
    if (fwd_run(w->engine->fwd, s->batch.fwd, n, NULL, err, sizeof err) != 0) {
        /* a failed step fails every job in it; the others are untouched */
        fail_step(wr, n, "forward pass", err);
        publish(w, wr);
        return 1;
    }
    /* One pick per sequence on the engine's backend: the next token of generating sequences, the
     * log-probability of the next prompt token of prefilling ones (details), nothing kept for
     * middle chunks. */
    size_t n_hist = 0, n_deltas = 0;
    int any_top = 0;
    for (int i = 0; i < n; i++) {
        struct sched_item *it = &s->batch.items[i];
        struct wseq *q = it->seq->user;
        int pos = it->seq->kv.n_tokens; /* tokens cached after this step (fwd_run advanced it) */
        int live = it->want && q->fin.reason == WREQ_FIN_NONE;
        wr->top_k[i] = live ? q->top_k : 0; /* prompt rows: the raw logits' alternatives */
        any_top |= wr->top_k[i] > 0;
        if (!live || pos < q->n_prompt) {
            sampler_target_row(pos < q->n_prompt ? q->tokens[pos] : 0, &wr->rows[i]);
            continue;
        }
        int penalised = q->sp.repetition_penalty != 1.0f;
        sampler_row(&q->sampler, (int)n_hist, penalised ? q->seq.n_tokens : 0, &wr->rows[i]);
        if ((penalised && history_append(wr, &n_hist, q->seq.tokens, q->seq.n_tokens) != 0) ||
            (sampler_has_deltas(&q->sampler) && deltas_append(wr, &n_deltas, q, i) != 0)) {
            fail_step(wr, n, "sampling", "out of memory for the penalty history");
            publish(w, wr);
            return 1;
        }
    }
    if ((n_deltas && fwd_bias(w->engine->fwd, n, wr->deltas, (int)n_deltas, err, sizeof err)) ||
        (constrained && step_masks(w, wr, n, err, sizeof err) != 0) ||
        fwd_sample(w->engine->fwd, n, wr->rows, wr->history, (int)n_hist, wr->ids, wr->logprobs,
                   err, sizeof err) != 0 ||
        (any_top &&
         fwd_top(w->engine->fwd, n, wr->top_k, wr->top_ids, wr->top_lps, err, sizeof err))) {
        fail_step(wr, n, "forward pass", err);
        publish(w, wr);
        return 1;
    }
    now = worker_now();
    if (wr->gvocab && wr->mask_m && wr->advance_rc) step_advance(wr, n); /* grammar_setup ran */
    for (int i = 0; i < n; i++) {
        struct sched_item *it = &s->batch.items[i];
        struct wseq *q = it->seq->user;
        if (!it->want || q->fin.reason != WREQ_FIN_NONE) continue;
        int pos = it->seq->kv.n_tokens; /* tokens cached after this step */
        const struct walt *alt = wr->top_k[i] ? step_top(wr, i) : NULL;
        if (pos < q->n_prompt) { /* prompt logprob of the next prompt token */
            if (wevents_push(&q->out, WEVENT_PROMPT_LP, pos, wr->logprobs[i], NULL, 0, alt,
                             alt ? q->top_k : 0) != 0)
                seq_fail(wr, q, "out of memory (events)", now);
            pub_mark(wr, q);
            continue;
        }
        take_token(w, wr, q, wr->ids[i], wr->logprobs[i], alt,
                   wr->advance_rc ? wr->advance_rc[i] : 0, now);
    }
    sched_commit(s);
    publish(w, wr);
    return 1;
}

/* Load progress, at most once a second, as log lines (one JSON object each with
 * --log-format json). */
struct load_report {
    double last; /* seconds of the last report */
    int json;
};

static void progress_cb(const struct model_load_progress *p, void *user) {
    struct load_report *lr = user;
    if (p->tensors_done == p->tensors_total || p->seconds - lr->last >= 1.0) {
        lr->last = p->seconds;
        reqlog_message(stderr, lr->json, "info", "loading %zu/%zu tensors, %.1f/%.1f MB, %.1f MB/s",
                       p->tensors_done, p->tensors_total, (double)p->bytes_done / 1e6,
                       (double)p->bytes_total / 1e6,
                       p->seconds > 0 ? (double)p->bytes_done / 1e6 / p->seconds : 0.0);
    }
}

/* The engine's notices (GPU fallback, chat template) in the server's log format; debug ones
 * (no CUDA library in a CPU-only build) are not shown. USER: the config. */
static void engine_log_cb(enum engine_log_level level, const char *msg, void *user) {
    const struct config *c = user;
    if (level == ENGINE_LOG_DEBUG) return;
    reqlog_message(stderr, c->log_format == CONFIG_LOG_JSON,
                   level == ENGINE_LOG_WARN ? "warn" : "info", "%s", msg);
}

static void worker_run_free(struct worker_run *wr) {
    grammar_vocab_free(wr->gvocab);
    free(wr->masks);
    free(wr->mask_count);
    free(wr->mask_use);
    free(wr->mask_m);
    free(wr->advance_rc);
    grammar_mask_cache_free(wr->mask_cache);
    cpu_pool_destroy(wr->mask_pool);
    free(wr->rows);
    free(wr->ids);
    free(wr->logprobs);
    free(wr->history);
    free(wr->deltas);
    free(wr->top_k);
    free(wr->top);
    free(wr->top_ids);
    free(wr->top_lps);
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    const struct config *c = w->cfg;
    struct engine_opts o;
    engine_opts_default(&o);
    o.model_path = c->model;
    o.device = c->device == CONFIG_DEVICE_CPU    ? ENGINE_DEVICE_CPU
               : c->device == CONFIG_DEVICE_CUDA ? ENGINE_DEVICE_CUDA
                                                 : ENGINE_DEVICE_AUTO;
    o.n_threads = c->threads;
    o.gpu_weights = (enum engine_gpu_weights)c->gpu_weights; /* the same order (config.c) */
    o.quantization = c->quantization;
    o.tensor_parallel = c->tensor_parallel;
    o.kv_cache_bytes = (size_t)c->kv_cache_mb << 20;
    o.kv_fraction = (float)c->kv_fraction;
    o.page_size = c->page_size;
    o.max_batch_tokens = c->max_batch_tokens;
    o.max_batch_seqs = c->max_batch_seqs;
    struct load_report lr = {.last = -1, .json = c->log_format == CONFIG_LOG_JSON};
    o.progress = progress_cb;
    o.progress_user = &lr;
    o.log = engine_log_cb;
    o.log_user = (void *)c;
    char err[512] = "";
    struct worker_run wr;
    memset(&wr, 0, sizeof wr);
    if (engine_open(&o, &w->engine, err, sizeof err) != 0) goto failed;
    struct engine *e = w->engine;
    wr.vocab = e->model->cfg.vocab_size;
    wr.rows = calloc((size_t)e->max_batch_seqs, sizeof(*wr.rows));
    wr.ids = calloc((size_t)e->max_batch_seqs, sizeof(*wr.ids));
    wr.logprobs = calloc((size_t)e->max_batch_seqs, sizeof(*wr.logprobs));
    wr.top_k = calloc((size_t)e->max_batch_seqs, sizeof(*wr.top_k));
    wr.top = calloc((size_t)e->max_batch_seqs * FG_TOP_MAX, sizeof(*wr.top));
    wr.top_ids = calloc((size_t)e->max_batch_seqs * FG_TOP_MAX, sizeof(*wr.top_ids));
    wr.top_lps = calloc((size_t)e->max_batch_seqs * FG_TOP_MAX, sizeof(*wr.top_lps));
    if (!wr.rows || !wr.ids || !wr.logprobs || !wr.top_k || !wr.top || !wr.top_ids || !wr.top_lps ||
        sched_init(&wr.sched, &e->kv, e->max_batch_tokens, e->max_batch_seqs)) {
        snprintf(err, sizeof err, "out of memory");
        goto failed;
    }
    wr.sched.prefix_caching = c->prefix_caching;
    {
        struct worker_info *in = &w->info;
        in->tok = e->model->tok;
        in->chat = &e->chat;
        in->vocab = wr.vocab;
        in->n_ctx = e->model->cfg.max_seq_len;
        in->kv_tokens = e->kv.n_pages * e->kv.page_size;
        in->max_batch_tokens = e->max_batch_tokens;
        in->max_batch_seqs = e->max_batch_seqs;
        snprintf(in->device, sizeof in->device, "%s", e->device);
        snprintf(in->dtype, sizeof in->dtype, "%s", e->model->dtype);
        snprintf(in->format, sizeof in->format, "%s", e->model->format);
        snprintf(in->arch, sizeof in->arch, "%s", e->model->cfg.arch);
        in->load_seconds = e->model->load_seconds;
        in->weights_block_bytes = e->model->w.qarena_bytes;
        in->weights_fp32_bytes = e->model->w.arena_bytes;
        in->weights_mapped_bytes = e->model->w.mapped_bytes;
        in->weights_device_bytes = e->device_weight_bytes;
        in->weights_device_block_bytes = e->device_block_bytes;
        snprintf(in->gpu_weights, sizeof in->gpu_weights, "%s",
                 strcmp(e->device, "cuda") ? "none" : engine_gpu_weights_name(e->gpu_weights));
        in->tensor_parallel = e->tensor_parallel;
        snprintf(in->tp_mode, sizeof in->tp_mode, "%s", e->tp_mode);
    }
    pthread_mutex_lock(&w->mu);
    w->state = WORKER_READY;
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->async);

    for (;;) {
        int ran = iterate(w, &wr);
        if (ran) continue;
        pthread_mutex_lock(&w->mu);
        int busy = wr.sched.n_running + wr.sched.n_waiting;
        if (w->stop && !busy && !w->sub_head) {
            pthread_mutex_unlock(&w->mu);
            break;
        }
        if (!w->sub_head && !(w->cancel_all && busy)) {
            if (busy) { /* jobs wait for pages: wake up for deadlines and cancellations */
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += (long)(WORKER_IDLE_WAIT_S * 1e9);
                if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
                pthread_cond_timedwait(&w->cv, &w->mu, &ts);
            } else {
                pthread_cond_wait(&w->cv, &w->mu);
            }
        }
        pthread_mutex_unlock(&w->mu);
    }
    reap(&wr);
    publish(w, &wr);
    sched_free(&wr.sched);
    worker_run_free(&wr);
    pthread_mutex_lock(&w->mu);
    w->state = WORKER_STOPPED;
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->async);
    return NULL;

failed:
    sched_free(&wr.sched);
    worker_run_free(&wr);
    engine_close(w->engine);
    w->engine = NULL;
    pthread_mutex_lock(&w->mu);
    snprintf(w->load_error, sizeof w->load_error, "%s", err);
    w->state = WORKER_FAILED;
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->async);
    return NULL;
}

int worker_start(struct worker *w, uv_loop_t *loop, const struct config *cfg, struct metrics *m,
                 worker_state_fn on_state, worker_final_fn on_final, void *user, char *err,
                 size_t errlen) {
    memset(w, 0, sizeof *w);
    w->cfg = cfg;
    w->metrics = m;
    w->on_state = on_state;
    w->on_final = on_final;
    w->user = user;
    w->state = w->reported = WORKER_LOADING;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (uv_async_init(loop, &w->async, on_async) != 0) {
        snprintf(err, errlen, "uv_async_init failed");
        return -1;
    }
    w->async.data = w;
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        snprintf(err, errlen, "cannot start the worker thread");
        uv_close((uv_handle_t *)&w->async, NULL);
        return -1;
    }
    w->started = 1;
    return 0;
}

void worker_stop(struct worker *w) {
    if (!w->started) return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    w->started = 0;
    on_async(&w->async); /* deliver what is left (final events) */
    engine_close(w->engine);
    w->engine = NULL;
    uv_close((uv_handle_t *)&w->async, NULL);
}
