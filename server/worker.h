/* worker.h — the one worker thread that owns the engine (model, device, KV-cache), and the
 * generation job (struct wreq) that the loop thread and the worker share.
 *
 * Threads meet at one place: the worker's mutex guards the submission queue, the ready list
 * (jobs with new events for the loop) and every field of a wreq marked "published". The worker
 * wakes the loop with one uv_async_t (coalescing, so the ready list is a list, not a pointer);
 * the loop wakes the worker with the condition variable.
 *
 * Life of a job: the loop thread fills it (wreq_new), worker_submit; the worker runs it through
 * the scheduler and publishes tokens; the loop's ready callback reads them (under the lock,
 * through the job's on_event hook). Both sides drop their hold with one call each
 * (worker_release on the loop side; the worker at the iteration after the job ended); whoever
 * drops the last hold frees it.
 */
#ifndef FG_WORKER_H
#define FG_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "model/sampler.h"
#include "model/tokenizer.h"
#include "server/metrics.h"
#include "server/sched.h"

struct engine;

enum wreq_finish {
    WREQ_FIN_NONE = 0,  /* still running */
    WREQ_FIN_LENGTH,    /* max_new_tokens reached */
    WREQ_FIN_EOS,       /* an end-of-generation token */
    WREQ_FIN_STOP,      /* a stop sequence */
    WREQ_FIN_CANCELLED, /* the client went away or the server shut down */
    WREQ_FIN_TIMEOUT,   /* past its deadline */
    WREQ_FIN_ERROR,     /* the forward pass failed */
};

struct worker;
struct wreq;
/* Called on the loop thread, with the worker's mutex held, when a job has new events. It may
 * read the published fields and call http reply functions; to let go of the job from inside it,
 * call worker_release_locked (worker_release and worker_cancel would take the lock again). */
typedef void (*wreq_event_fn)(struct wreq *r, void *user);

struct wreq {
    /* --- set by the loop thread before worker_submit; read-only afterwards --- */
    uint64_t id;
    int *tokens; /* (n_prompt + max_new) prompt first; the worker appends */
    int n_prompt;
    int max_new;
    struct sampler_params sp;
    char **stop; /* (n_stop) stop sequences */
    int n_stop;
    int prompt_logprobs; /* compute log p of each prompt token (prefill in 1-token chunks) */
    int ignore_eos;
    double t_arrival;      /* monotonic seconds */
    double deadline;       /* absolute; 0 = none */
    double queue_deadline; /* absolute; 0 = none */
    wreq_event_fn on_event;
    void *user;

    /* --- cancellation: any thread --- */
    atomic_int cancel; /* 1 = client gone, 2 = server shutting down */

    /* --- published by the worker, under the worker's mutex --- */
    int n_gen;        /* generated tokens (ids at tokens[n_prompt ..]) */
    float *logprobs;  /* (max_new) log p of each generated token */
    float *prompt_lp; /* (n_prompt) log p of each prompt token; [0] = NaN; or NULL */
    int n_prompt_lp;  /* how many of prompt_lp are filled */
    char *text;       /* generated text so far (special tokens skipped), NUL-terminated */
    size_t text_len, text_cap;
    size_t *text_end;        /* (max_new) text_len after each generated token */
    size_t stop_pos;         /* WREQ_FIN_STOP: where the matched stop sequence starts in text */
    enum wreq_finish finish; /* NONE while running */
    char error[256];
    double t_admitted, t_first, t_done; /* monotonic seconds; 0 = not yet */

    /* --- worker only --- */
    struct sched_seq seq;
    struct sampler sampler;
    int sampler_ready;
    struct tok_stream stream;
    double t_last;

    /* --- bookkeeping under the mutex --- */
    int worker_holds, loop_holds, in_ready, final_seen;
    struct wreq *next_sub, *next_ready;
};

enum worker_state {
    WORKER_LOADING = 0,
    WORKER_READY,
    WORKER_FAILED,
    WORKER_STOPPED,
};

/* What the loop thread may read once the worker is READY (read-only from then on). */
struct worker_info {
    const struct tokenizer *tok;
    const struct chat_template *chat;
    int vocab, n_ctx; /* model context length */
    int kv_tokens;    /* tokens the whole KV-cache holds */
    int max_batch_tokens, max_batch_seqs;
    char device[16], dtype[16], format[16], arch[32];
    double load_seconds;
};

/* Called on the loop thread when the worker changes state (loaded, failed) and when every
 * in-flight job has ended after worker_drain. */
typedef void (*worker_state_fn)(struct worker *w, enum worker_state st, void *user);
/* Called on the loop thread, under the lock, once per job when its final event arrives (after
 * the job's on_event): the server's accounting hook (in-flight count, metrics, log). */
typedef void (*worker_final_fn)(struct wreq *r, void *user);

struct worker {
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uv_async_t async;
    struct wreq *sub_head, *sub_tail; /* submissions, under mu */
    struct wreq *ready_head, *ready_tail;
    int stop;                   /* under mu: the worker exits when idle */
    int cancel_all;             /* under mu: cancel every job (shutdown past grace) */
    enum worker_state state;    /* under mu */
    enum worker_state reported; /* loop thread: last state handed to on_state */
    char load_error[512];
    struct worker_info info; /* valid once READY */
    const struct config *cfg;
    struct metrics *metrics;
    worker_state_fn on_state;
    worker_final_fn on_final;
    void *user;
    struct engine *engine; /* worker thread only */
};

/* Start the worker thread; it loads the model and reports READY or FAILED through on_state.
 * Loop thread. */
int worker_start(struct worker *w, uv_loop_t *loop, const struct config *cfg, struct metrics *m,
                 worker_state_fn on_state, worker_final_fn on_final, void *user, char *err,
                 size_t errlen);
/* Ask the worker to exit when it is idle, wait for it, close the async handle (the loop must
 * run once more for the close callback). Loop thread. */
void worker_stop(struct worker *w);
/* Cancel every job, queued or running (shutdown past the grace period). Any thread. */
void worker_cancel_all(struct worker *w);

/* A new job for N_PROMPT prompt tokens and up to MAX_NEW new ones (arrays sized here); the
 * caller fills the prompt, sampling parameters and hooks. NULL when out of memory. */
struct wreq *wreq_new(int n_prompt, int max_new, int want_prompt_logprobs);
/* Hand a job to the worker. The loop keeps a hold until worker_release. Loop thread. */
void worker_submit(struct worker *w, struct wreq *r);
/* Flag a job cancelled (client gone); its pages are freed at the next iteration. Any thread. */
void worker_cancel(struct worker *w, struct wreq *r);
/* The loop side is done with the job: no more on_event calls. Loop thread, lock not held. */
void worker_release(struct worker *w, struct wreq *r);

/* The same, from inside an on_event callback (the lock is held there). */
void worker_release_locked(struct wreq *r);

const char *wreq_finish_name(enum wreq_finish f); /* TGI names: length, eos_token, stop_sequence */

double worker_now(void); /* monotonic seconds */

#endif
