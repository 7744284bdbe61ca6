/* worker.c — the worker thread: loads the engine, then runs scheduler iterations and publishes
 * tokens to the loop thread.
 *
 * One iteration (worker_iterate): take submissions and cancellations under the lock → reap what
 * ended (pages freed) → admit and plan → forward pass (lock not held) → sample the wanted rows,
 * stop checks, publish under the lock → wake the loop once. When there is nothing to run the
 * worker sleeps on the condition variable (with a timeout while jobs with deadlines wait).
 */
#include "worker.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/sample.h"
#include "model/engine.h"
#include "model/tokenizer.h"
#include "server/reqlog.h"

#define WORKER_REAP_MAX 64
#define WORKER_IDLE_WAIT_S 0.1 /* wake-up period while jobs wait (deadline checks) */

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

/* ---- jobs ---------------------------------------------------------------------------------- */

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
        free(r->tokens), free(r->logprobs), free(r->text_end), free(r->text), free(r->prompt_lp);
        free(r);
        return NULL;
    }
    r->text[0] = 0;
    sampler_params_default(&r->sp);
    atomic_init(&r->cancel, 0);
    return r;
}

static void wreq_free(struct wreq *r) {
    if (!r) return;
    if (r->sampler_ready) sampler_free(&r->sampler);
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->stop);
    free(r->tokens);
    free(r->logprobs);
    free(r->text_end);
    free(r->text);
    free(r->prompt_lp);
    free(r);
}

/* ---- loop-thread side ---------------------------------------------------------------------- */

void worker_submit(struct worker *w, struct wreq *r) {
    r->seq.tokens = r->tokens;
    r->seq.n_tokens = r->n_prompt;
    r->seq.n_prompt = r->n_prompt;
    r->seq.cap = r->n_prompt + r->max_new;
    r->seq.max_new = r->max_new;
    r->seq.chunk_max = r->prompt_logprobs ? 1 : 0;
    r->seq.user = r;
    pthread_mutex_lock(&w->mu);
    r->worker_holds = 1;
    r->loop_holds = 1;
    r->next_sub = NULL;
    if (w->sub_tail)
        w->sub_tail->next_sub = r;
    else
        w->sub_head = r;
    w->sub_tail = r;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void worker_cancel(struct worker *w, struct wreq *r) {
    int expect = 0;
    atomic_compare_exchange_strong(&r->cancel, &expect, 1);
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

void worker_release_locked(struct wreq *r) {
    r->loop_holds = 0;
    r->on_event = NULL;
}

void worker_release(struct worker *w, struct wreq *r) {
    if (!r) return;
    pthread_mutex_lock(&w->mu);
    worker_release_locked(r);
    int free_it = !r->worker_holds && !r->in_ready;
    pthread_mutex_unlock(&w->mu);
    if (free_it) wreq_free(r);
}

/* uv_async callback: hand every job with news to its owner. */
static void on_async(uv_async_t *h) {
    struct worker *w = h->data;
    struct wreq *dead = NULL; /* jobs nobody holds any more, linked through next_ready */
    pthread_mutex_lock(&w->mu);
    enum worker_state st = w->state;
    struct wreq *r = w->ready_head;
    w->ready_head = w->ready_tail = NULL;
    while (r) {
        struct wreq *next = r->next_ready;
        r->next_ready = NULL;
        r->in_ready = 0;
        if (r->loop_holds && r->on_event) r->on_event(r, r->user);
        if (r->finish != WREQ_FIN_NONE && !r->final_seen) {
            r->final_seen = 1;
            if (w->on_final) w->on_final(r, w->user);
        }
        if (!r->loop_holds && !r->worker_holds) {
            r->next_ready = dead;
            dead = r;
        }
        r = next;
    }
    pthread_mutex_unlock(&w->mu);
    while (dead) {
        struct wreq *next = dead->next_ready;
        wreq_free(dead);
        dead = next;
    }
    if (st != w->reported) {
        w->reported = st;
        if (w->on_state) w->on_state(w, st, w->user);
    }
}

/* ---- worker-thread side -------------------------------------------------------------------- */

/* Queue r for the loop (mu held). */
static void ready_push(struct worker *w, struct wreq *r) {
    if (r->in_ready) return;
    r->in_ready = 1;
    r->next_ready = NULL;
    if (w->ready_tail)
        w->ready_tail->next_ready = r;
    else
        w->ready_head = r;
    w->ready_tail = r;
}

/* End a job (mu held): publish the final state and stop scheduling it. */
static void finish_locked(struct worker *w, struct wreq *r, enum wreq_finish f, double now) {
    if (r->finish != WREQ_FIN_NONE) return;
    r->finish = f;
    r->t_done = now;
    sched_end(&r->seq, f == WREQ_FIN_CANCELLED || f == WREQ_FIN_TIMEOUT || f == WREQ_FIN_ERROR
                           ? SCHED_CANCELLED
                           : SCHED_FINISHED);
    ready_push(w, r);
}

static int text_append(struct wreq *r, const char *s, size_t n) {
    if (r->text_len + n + 1 > r->text_cap) {
        size_t nc = r->text_cap * 2 + n + 1;
        char *nt = realloc(r->text, nc);
        if (!nt) return -1;
        r->text = nt;
        r->text_cap = nc;
    }
    memcpy(r->text + r->text_len, s, n);
    r->text_len += n;
    r->text[r->text_len] = 0;
    return 0;
}

/* A stop sequence that ends inside the text added since FROM; sets stop_pos. */
static int stop_match(struct wreq *r, size_t from) {
    for (int i = 0; i < r->n_stop; i++) {
        size_t sl = strlen(r->stop[i]);
        if (!sl || sl > r->text_len) continue;
        size_t start = from >= sl - 1 ? from - (sl - 1) : 0;
        const char *hit = memmem(r->text + start, r->text_len - start, r->stop[i], sl);
        if (hit) {
            r->stop_pos = (size_t)(hit - r->text);
            return 1;
        }
    }
    return 0;
}

struct worker_run {
    struct sched sched;
    int vocab;
    /* one step's picks, made on the engine's backend: (max_batch_seqs) each */
    struct fg_sample_row *rows;
    int *ids;
    float *logprobs;
    int *history; /* the penalised rows' ids, end to end; grows */
    size_t history_cap;
};

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

/* Fail every job of a step that the engine could not run (mu not held). */
static void fail_step(struct worker *w, struct sched *s, int n, const char *what, const char *err) {
    double now = worker_now();
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < n; i++) {
        struct wreq *r = s->batch.items[i].seq->user;
        snprintf(r->error, sizeof r->error, "%s failed: %.200s", what, err);
        finish_locked(w, r, WREQ_FIN_ERROR, now);
    }
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->async);
}

/* Take submissions, flag cancellations and deadlines (mu held). */
static void intake_locked(struct worker *w, struct worker_run *wr, double now) {
    struct wreq *r = w->sub_head;
    w->sub_head = w->sub_tail = NULL;
    while (r) {
        struct wreq *next = r->next_sub;
        r->next_sub = NULL;
        sched_add(&wr->sched, &r->seq);
        r = next;
    }
    /* cancellation and deadlines: waiting jobs */
    for (struct sched_seq *q = wr->sched.wait_head; q; q = q->next) {
        struct wreq *j = q->user;
        if (w->cancel_all || atomic_load(&j->cancel))
            finish_locked(w, j, WREQ_FIN_CANCELLED, now);
        else if ((j->deadline > 0 && now > j->deadline) ||
                 (j->queue_deadline > 0 && now > j->queue_deadline))
            finish_locked(w, j, WREQ_FIN_TIMEOUT, now);
    }
    for (int i = 0; i < wr->sched.n_running; i++) {
        struct wreq *j = wr->sched.running[i]->user;
        if (w->cancel_all || atomic_load(&j->cancel))
            finish_locked(w, j, WREQ_FIN_CANCELLED, now);
        else if (j->deadline > 0 && now > j->deadline)
            finish_locked(w, j, WREQ_FIN_TIMEOUT, now);
    }
}

/* Reap ended jobs: their pages are back in the pool; drop the worker's hold. */
static void reap(struct worker *w, struct worker_run *wr) {
    struct sched_seq *out[WORKER_REAP_MAX];
    int n;
    do {
        n = sched_reap(&wr->sched, out, WORKER_REAP_MAX);
        pthread_mutex_lock(&w->mu);
        for (int i = 0; i < n; i++) {
            struct wreq *r = out[i]->user;
            r->worker_holds = 0;
            /* the loop frees it when it has seen the final event (ready list) or released it */
            if (!r->loop_holds && !r->in_ready) ready_push(w, r);
        }
        pthread_mutex_unlock(&w->mu);
    } while (n == WORKER_REAP_MAX);
}

/* One generated token for job r: append, decode, stop checks, publish. */
static void take_token(struct worker *w, struct wreq *r, int id, float lp, double now) {
    const struct tokenizer *tok = w->engine->model->tok;
    char piece[512];
    size_t np = tok_stream_push(tok, &r->stream, id, piece, sizeof piece);
    int eog = !r->ignore_eos && tokenizer_is_eog(tok, id);
    r->seq.tokens[r->seq.n_tokens++] = id;

    pthread_mutex_lock(&w->mu);
    size_t from = r->text_len;
    text_append(r, piece, np);
    int k = r->n_gen;
    r->logprobs[k] = lp;
    r->n_gen = k + 1;
    enum wreq_finish f = WREQ_FIN_NONE;
    if (eog)
        f = WREQ_FIN_EOS;
    else if (r->n_stop && stop_match(r, from))
        f = WREQ_FIN_STOP;
    else if (r->n_gen >= r->max_new)
        f = WREQ_FIN_LENGTH;
    if (f != WREQ_FIN_NONE && f != WREQ_FIN_STOP) {
        size_t nf = tok_stream_flush(&r->stream, piece, sizeof piece);
        text_append(r, piece, nf);
    }
    r->text_end[k] = r->text_len;
    if (k == 0) r->t_first = now;
    ready_push(w, r);
    if (f != WREQ_FIN_NONE) finish_locked(w, r, f, now);
    pthread_mutex_unlock(&w->mu);

    if (k == 0)
        metrics_observe(w->metrics, METRICS_H_TTFT, now - r->t_arrival);
    else
        metrics_observe(w->metrics, METRICS_H_ITL, now - r->t_last);
    r->t_last = now;
}

/* Run one iteration. Returns 1 if a forward pass ran, 0 when idle, -1 on a fatal error. */
static int iterate(struct worker *w, struct worker_run *wr) {
    struct sched *s = &wr->sched;
    double now = worker_now();
    pthread_mutex_lock(&w->mu);
    intake_locked(w, wr, now);
    pthread_mutex_unlock(&w->mu);
    reap(w, wr);

    struct sched_seq *adm[1024];
    int n_adm = 0;
    int n = sched_plan(s, s->max_batch_seqs <= 1024 ? adm : NULL, &n_adm);
    now = worker_now();
    for (int i = 0; i < n_adm && s->max_batch_seqs <= 1024; i++) {
        struct wreq *r = adm[i]->user;
        r->sampler_ready = sampler_init(&r->sampler, &r->sp, wr->vocab) == 0;
        tok_stream_init(&r->stream, 1);
        pthread_mutex_lock(&w->mu);
        r->t_admitted = now;
        if (r->prompt_lp) {
            r->prompt_lp[0] = NAN;
            r->n_prompt_lp = 1;
        }
        pthread_mutex_unlock(&w->mu);
        metrics_observe(w->metrics, METRICS_H_QUEUE, now - r->t_arrival);
        if (!r->sampler_ready) {
            pthread_mutex_lock(&w->mu);
            snprintf(r->error, sizeof r->error, "out of memory (sampler)");
            finish_locked(w, r, WREQ_FIN_ERROR, now);
            pthread_mutex_unlock(&w->mu);
        }
    }
    struct kv_cache *kv = &w->engine->kv;
    double kv_use = kv->n_pages ? (double)(kv->n_pages - kv->n_free) / kv->n_pages : 0;
    metrics_iteration(w->metrics, s->n_running, s->n_waiting, n, s->batch.n_tokens, kv_use);
    if (n == 0) {
        /* Jobs ended above (deadline, cancellation, a failed admission) have news for the loop
         * although no step runs to announce it; without this a request whose deadline passed as
         * the last job waited for the next unrelated event (seen: a 504 never sent). */
        pthread_mutex_lock(&w->mu);
        int news = w->ready_head != NULL;
        pthread_mutex_unlock(&w->mu);
        if (news) uv_async_send(&w->async);
        return 0;
    }

    char err[256] = "";
    if (fwd_run(w->engine->fwd, s->batch.fwd, n, NULL, err, sizeof err) != 0) {
        /* a failed step fails every job in it; the others are untouched */
        fail_step(w, s, n, "forward pass", err);
        return 1;
    }
    /* One pick per sequence on the engine's backend: the next token of generating sequences, the
     * log-probability of the next prompt token of prefilling ones (details), nothing kept for
     * middle chunks. */
    size_t n_hist = 0;
    for (int i = 0; i < n; i++) {
        struct sched_item *it = &s->batch.items[i];
        struct wreq *r = it->seq->user;
        int pos = it->seq->kv.n_tokens; /* tokens cached after this step (fwd_run advanced it) */
        if (!it->want || r->finish != WREQ_FIN_NONE || pos < r->n_prompt) {
            sampler_target_row(pos < r->n_prompt ? r->tokens[pos] : 0, &wr->rows[i]);
            continue;
        }
        int penalised = r->sp.repetition_penalty != 1.0f;
        sampler_row(&r->sampler, (int)n_hist, penalised ? r->seq.n_tokens : 0, &wr->rows[i]);
        if (penalised && history_append(wr, &n_hist, r->seq.tokens, r->seq.n_tokens) != 0) {
            fail_step(w, s, n, "sampling", "out of memory for the penalty history");
            return 1;
        }
    }
    if (fwd_sample(w->engine->fwd, n, wr->rows, wr->history, (int)n_hist, wr->ids, wr->logprobs,
                   err, sizeof err) != 0) {
        fail_step(w, s, n, "forward pass", err);
        return 1;
    }
    now = worker_now();
    for (int i = 0; i < n; i++) {
        struct sched_item *it = &s->batch.items[i];
        struct wreq *r = it->seq->user;
        if (!it->want || r->finish != WREQ_FIN_NONE) continue;
        int pos = it->seq->kv.n_tokens; /* tokens cached after this step */
        if (pos < r->n_prompt) {        /* prompt logprob of the next prompt token */
            pthread_mutex_lock(&w->mu);
            r->prompt_lp[pos] = wr->logprobs[i];
            r->n_prompt_lp = pos + 1;
            pthread_mutex_unlock(&w->mu);
            continue;
        }
        take_token(w, r, wr->ids[i], wr->logprobs[i], now);
    }
    sched_commit(s);
    uv_async_send(&w->async);
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
    free(wr->rows);
    free(wr->ids);
    free(wr->logprobs);
    free(wr->history);
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
    if (!wr.rows || !wr.ids || !wr.logprobs ||
        sched_init(&wr.sched, &e->kv, e->max_batch_tokens, e->max_batch_seqs)) {
        snprintf(err, sizeof err, "out of memory");
        goto failed;
    }
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
        if (!w->sub_head && !w->cancel_all) {
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
    reap(w, &wr);
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
