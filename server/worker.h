/* worker.h — the one worker thread that owns the engine (model, device, KV-cache), and the
 * boundary between it and the loop thread.
 *
 * A generation request is two objects with one owner each, joined by one shared ring:
 *
 *   struct wreq   (loop thread)   the request as the endpoint built it and its result so far,
 *                                 rebuilt from the events: tokens, logprobs, text, finish.
 *   struct wseq   (worker thread) private to worker.c: the tokens, the sampler, the KV pages,
 *                                 the text decoder and the stop matching.
 *   struct wring  (shared)        worker → loop events of that request (token: id, logprob,
 *                                 text bytes; prompt logprob; one finish with reason/error),
 *                                 guarded by the worker's mutex, plus the loop → worker cancel
 *                                 flag (an atomic).
 *
 * Nothing else is shared. The worker appends a whole iteration's events to the rings under its
 * mutex once, then wakes the loop with one uv_async_send; the loop swaps each ready ring's events
 * out under the mutex and renders them after letting it go (no JSON is built under a lock the
 * worker needs). The worker's last touch of a ring is the finish event; from then on the ring
 * belongs to the loop alone, which frees it with the wreq (wreq_free). The worker frees its
 * wseq after the scheduler has reaped it (pages back in the pool).
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
struct grammar;

enum wreq_finish {
    WREQ_FIN_NONE = 0,  /* still running */
    WREQ_FIN_LENGTH,    /* max_new_tokens reached */
    WREQ_FIN_EOS,       /* an end-of-generation token */
    WREQ_FIN_STOP,      /* a stop sequence */
    WREQ_FIN_CANCELLED, /* the client went away or the server shut down */
    WREQ_FIN_TIMEOUT,   /* past its deadline */
    WREQ_FIN_ERROR,     /* the forward pass failed */
};

enum wevent_kind {
    WEVENT_TOKEN = 0, /* a generated token: id, logprob, its text bytes */
    WEVENT_PROMPT_LP, /* log p of prompt token `id` (its position) */
};

/* One alternative of a position (top_logprobs / top_n_tokens): id and log p; id -1 = none. */
struct walt {
    int id;
    float logprob;
};

struct wevent {
    enum wevent_kind kind;
    int id; /* TOKEN: token id; PROMPT_LP: prompt position */
    float logprob;
    size_t text_off, text_len; /* TOKEN: its bytes in the batch's byte buffer */
    int alt_off, n_alt;        /* its alternatives in the batch's alt array (wreq.top_k) */
};

/* A batch of events and the text bytes and alternatives they point into. */
struct wevents {
    struct wevent *ev; /* (cap) */
    int n, cap;
    char *bytes; /* (bytes_cap) */
    size_t n_bytes, bytes_cap;
    struct walt *alt; /* (alt_cap) */
    int n_alt, alt_cap;
};

/* The finish event's payload. */
struct wfinish {
    enum wreq_finish reason;
    size_t stop_pos; /* STOP: where the matched stop sequence starts in the text */
    char error[256];
    double t_admitted, t_first, t_done; /* monotonic seconds; 0 = never */
};

struct wreq;

/* The shared part of one request. */
struct wring {
    /* --- the worker's mutex guards these; the worker writes, the loop swaps out --- */
    struct wevents pending;
    int finished; /* the finish event is in `fin`: the worker's last write */
    struct wfinish fin;
    int queued; /* on the worker's ready list */
    struct wring *next_ready;
    /* --- any thread: the loop sets it, the worker reads it until it posts the finish --- */
    atomic_int cancel; /* 1 = client gone */
    /* --- loop thread only --- */
    struct wevents taken; /* the last batch swapped out */
    int fin_taken;        /* `finished` was set when it was swapped out (so `fin` is final) */
    struct wreq *job;
    struct wring *next_taken;
};

struct worker;
/* Called on the loop thread, lock not held, after new events were applied to the wreq. It may
 * call http reply functions and, once r->finish is set, free the wreq (wreq_free). */
typedef void (*wreq_event_fn)(struct wreq *r, void *user);

/* A request (loop thread). */
struct wreq {
    /* --- the request: filled before worker_submit (the worker gets a copy) --- */
    uint64_t id;
    int *tokens; /* (n_prompt + max_new) prompt first; generated ids appended from the events */
    int n_prompt;
    int max_new;
    struct sampler_params sp;
    char **stop; /* (n_stop) stop sequences */
    int n_stop;
    int prompt_logprobs; /* compute log p of each prompt token (prefill in 1-token chunks) */
    int ignore_eos;
    int top_k; /* alternatives reported per position (<= FG_TOP_MAX); 0 = none (wreq_want_top) */
    struct grammar *grammar; /* constrained decoding, or NULL; owned, moved to the worker by
                                worker_submit (immutable: model/grammar.h) */
    int index;               /* its choice in the reply (n > 1, best_of, prompt lists); 0 alone */
    struct wreq *fork_of;    /* n > 1, best_of: an earlier request of the same worker_submit_group
                                with the same prompt, whose prompt KV this one forks (sched.h);
                                NULL: computes its own */
    double t_arrival;        /* monotonic seconds */
    double deadline;         /* absolute; 0 = none */
    double queue_deadline;   /* absolute; 0 = none */
    wreq_event_fn on_event;
    void *user;

    /* --- the result so far, from the events --- */
    int n_gen;               /* generated tokens (ids at tokens[n_prompt ..]) */
    float *logprobs;         /* (max_new) log p of each generated token */
    float *prompt_lp;        /* (n_prompt) log p of each prompt token; [0] = NaN; or NULL */
    int n_prompt_lp;         /* how many of prompt_lp are filled */
    struct walt *top;        /* (max_new, top_k) each generated token's alternatives, or NULL */
    struct walt *prompt_top; /* (n_prompt, top_k) each prompt token's (row 0 empty), or NULL */
    char *text;              /* generated text so far (special tokens skipped), NUL-terminated */
    size_t text_len, text_cap;
    size_t *text_end;        /* (max_new) text_len after each generated token */
    size_t stop_pos;         /* WREQ_FIN_STOP: where the matched stop sequence starts in text */
    enum wreq_finish finish; /* NONE while running */
    char error[256];
    double t_admitted, t_first, t_done; /* monotonic seconds; 0 = not yet */

    struct wring *ring; /* shared with the worker from worker_submit on; freed with the wreq */
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
    /* host weight bytes by form: kept in GGUF blocks (the CPU multiplies them), fp32 */
    size_t weights_block_bytes, weights_fp32_bytes, weights_mapped_bytes, weights_device_bytes;
    size_t weights_device_block_bytes; /* of the device copy: resident in GGUF blocks */
    char gpu_weights[16];              /* "bf16" or "quantized" on a GPU, "none" on the CPU */
    int tensor_parallel;               /* shards (1: none) */
    char tp_mode[16];                  /* "none", "emulated" (every shard on one device) */
};

/* Called on the loop thread when the worker changes state (loaded, failed, stopped). */
typedef void (*worker_state_fn)(struct worker *w, enum worker_state st, void *user);
/* Called on the loop thread, lock not held, once per job when its finish event arrives (before
 * the job's on_event): the server's accounting hook (in-flight count, metrics). */
typedef void (*worker_final_fn)(struct wreq *r, void *user);

struct wseq;

struct worker {
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uv_async_t async;
    struct wseq *sub_head, *sub_tail; /* submissions, under mu (ownership passes to the worker) */
    struct wring *ready_head;         /* rings with news, under mu */
    int stop;                         /* under mu: the worker exits when idle */
    int cancel_all;                   /* under mu: cancel every job (shutdown past grace) */
    enum worker_state state;          /* under mu */
    enum worker_state reported;       /* loop thread: last state handed to on_state */
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
/* Ask the worker to exit when it is idle, wait for it, deliver the last events, close the async
 * handle (the loop must run once more for the close callback). Loop thread. */
void worker_stop(struct worker *w);
/* Cancel every job, queued or running (shutdown past the grace period). Any thread. */
void worker_cancel_all(struct worker *w);

/* A new request for N_PROMPT prompt tokens and up to MAX_NEW new ones (arrays sized here); the
 * caller fills the prompt, sampling parameters and hooks. NULL when out of memory. Loop thread. */
struct wreq *wreq_new(int n_prompt, int max_new, int want_prompt_logprobs);
/* Ask for K (1..FG_TOP_MAX) alternatives per generated token (and per prompt token when the
 * request has prompt logprobs): sets top_k and sizes top / prompt_top. -1 when out of memory.
 * Loop thread, before submitting. */
int wreq_want_top(struct wreq *r, int k);
/* Free a request: one never submitted, or one whose finish event has been delivered (the only
 * two states in which the worker holds nothing of it). Accepts NULL. Loop thread. */
void wreq_free(struct wreq *r);
/* Hand a request to the worker (it copies what it needs). -1 when out of memory (nothing was
 * submitted). Loop thread. */
int worker_submit(struct worker *w, struct wreq *r);
/* Hand N requests to the worker at once (one lock, in order), so that each one's fork_of, an
 * earlier one of RS, is queued before it. -1 when out of memory (nothing was submitted). Loop
 * thread. */
int worker_submit_group(struct worker *w, struct wreq **rs, int n);
/* Ask the worker to cancel a submitted request whose finish has not been delivered yet; its
 * pages are freed at the worker's next iteration and a CANCELLED finish follows (or whatever
 * finish was already on its way). Loop thread. */
void worker_cancel(struct worker *w, struct wreq *r);

const char *wreq_finish_name(enum wreq_finish f); /* TGI names: length, eos_token, stop_sequence */

double worker_now(void); /* monotonic seconds */

#endif
