/* sched.h — the continuous-batching scheduler: a state machine per sequence and one documented
 * iteration. Owned and called by the worker thread only; nothing here is thread-safe.
 *
 * States:  WAITING ──admit──> PREFILL ──last prompt chunk──> DECODE ──> FINISHED
 *             │                  │                             │
 *             └──────────────────┴──────── cancel/deadline ────┴──> CANCELLED
 *
 * One iteration (the worker drives it):
 *   1. sched_reap: sequences that reached FINISHED or CANCELLED since the last iteration leave
 *      the scheduler and their KV pages are released (cancellation only flags a sequence; pages
 *      are released here, at the iteration boundary).
 *   2. sched_plan: pages on demand. Every DECODE sequence, oldest admission first, gets the page
 *      its next token needs when it crosses a page boundary; when none is left, the most
 *      recently admitted running sequence is preempted (its pages released, itself requeued at
 *      the front of the waiting list, to be recomputed from its tokens so far, prompt and
 *      generated, as one prefill), until the page is there or the one that needs it was itself
 *      the victim (vLLM's recompute preemption). Then, if nothing was preempted, the forks
 *      whose parent has their prompt start (below), and waiting sequences are admitted in
 *      arrival order while the batch has room (max_batch_seqs) and
 *      the KV-cache has pages for their tokens so far, less the pages the prefix cache already
 *      holds for them, plus SCHED_WATERMARK_PAGES left over for the running ones to grow into
 *      (not required of the only sequence). Last the batch: one token for every DECODE sequence
 *      first, then prefill chunks of PREFILL sequences up to max_batch_tokens in total.
 *   3. the worker runs the forward pass on the batch and samples the rows it wants.
 *   4. sched_commit: full pages are published to the prefix cache; PREFILL sequences whose
 *      tokens are now all cached move to DECODE.
 *
 * Forks (n > 1, best_of): sched_add_fork queues a sequence that shares another's prompt. It waits
 * (WAITING, on its parent's fork list, not in the arrival queue) until the parent has computed
 * all but the last prompt token; then, at the start of a sched_plan, it takes the parent's full
 * prompt pages and a copy of the partial one (kv_seq_fork) and enters PREFILL with one token
 * left, the last prompt token, whose logits are its own first sample (a parent that ended with
 * its first token forks them in sched_reap, before its pages go). A fork whose parent ends
 * before its prompt is in (cancelled in the queue) joins the front of the arrival queue as an
 * ordinary sequence. Once forked it is an ordinary running sequence (preempted and recomputed
 * alike).
 *
 * A preempted sequence keeps everything but its pages: the worker's sampler, text and stop
 * state go on, and its recompute produces no event until it is past what it had already
 * computed (sched_seq.n_done), so the loop side sees nothing twice.
 */
#ifndef FG_SCHED_H
#define FG_SCHED_H

#include "model/forward.h"
#include "model/kv_cache.h"

#include <stdint.h>

enum sched_state {
    SCHED_WAITING = 0,
    SCHED_PREFILL,
    SCHED_DECODE,
    SCHED_FINISHED,
    SCHED_CANCELLED,
};

struct sched_seq {
    enum sched_state state;
    int *tokens;  /* (cap) prompt, then generated tokens; owned by the caller */
    int n_tokens; /* prompt + generated so far */
    int cap;      /* n_prompt + max_new */
    int n_prompt;
    int max_new;
    int chunk_max;   /* prefill tokens per iteration; 0 = no limit (1: prompt logprobs) */
    int n_prefill;   /* prefill ends here (n_tokens at admission); then DECODE */
    int n_done;      /* the most tokens ever cached: rows below it were already seen (recompute) */
    int n_preempted; /* times preempted; > 0: an admission is a resumption */
    struct kv_seq kv;
    void *user;
    struct sched_seq *next;      /* waiting list link */
    struct sched_seq *fork_of;   /* WAITING to fork this sequence's prompt, or NULL */
    struct sched_seq *forks;     /* the sequences waiting to fork this one, in arrival order */
    struct sched_seq *fork_next; /* link on fork_of's list */
};

struct sched_item {
    struct sched_seq *seq;
    int start, n; /* tokens [start, start + n) of seq->tokens go into this step */
    int want;     /* 1 when the worker wants this row's logits (a sample or a prompt logprob) */
};

struct sched_batch {
    struct sched_item *items; /* (max_batch_seqs) */
    struct fwd_seq *fwd;      /* (max_batch_seqs) the same rows as fwd_run wants them */
    int n, n_tokens, n_decode, n_prefill;
};

/* Pages an admission leaves free for the running sequences' next tokens (vLLM's watermark). */
#define SCHED_WATERMARK_PAGES 1

struct sched {
    struct kv_cache *kv;
    int max_batch_tokens, max_batch_seqs;
    int prefix_caching; /* 1 (sched_init's default): look up and publish full pages */
    struct sched_seq *wait_head, *wait_tail;
    int n_waiting;
    struct sched_seq **running; /* (max_batch_seqs) in admission order */
    int n_running;
    struct sched_seq **admitted; /* (max_batch_seqs) admitted by the last sched_plan (and forks
                                    started by the sched_reap before it) */
    int n_admitted;
    int n_early; /* forks sched_reap started, at the head of `admitted` for the next plan */
    struct sched_batch batch;
    /* counters, since sched_init */
    uint64_t prefix_queries, prefix_hits; /* tokens looked up / found in the prefix cache */
    uint64_t preemptions;
    uint64_t forks;          /* sequences that started from another's prompt pages */
    uint64_t prefill_tokens; /* tokens of prefill rows planned (computed, not cached or forked) */
};

int sched_init(struct sched *s, struct kv_cache *kv, int max_batch_tokens, int max_batch_seqs);
void sched_free(struct sched *s); /* accepts zeroed */

/* Queue a new sequence (state WAITING). tokens/n_prompt/cap/max_new must be set. */
void sched_add(struct sched *s, struct sched_seq *q);
/* Queue Q (tokens/n_prompt/cap/max_new set, its prompt the same as PARENT's) to fork PARENT's
 * prompt pages instead of computing them; PARENT was queued before (sched_add or in the same
 * intake), and Q counts as waiting until it forks. */
void sched_add_fork(struct sched *s, struct sched_seq *parent, struct sched_seq *q);
/* Mark a sequence done; it leaves at the next sched_reap. STATE is FINISHED or CANCELLED. */
void sched_end(struct sched_seq *q, enum sched_state state);
/* Remove FINISHED/CANCELLED sequences (waiting or running), release their pages, and hand up to
 * MAX of them to the caller through OUT. Returns how many; call again while it returns MAX. */
int sched_reap(struct sched *s, struct sched_seq **out, int max);
/* Admit and build this iteration's batch (s->batch). Returns the number of rows (0: idle).
 * s->admitted[0 .. s->n_admitted) are the sequences this call admitted (the caller sets them up
 * before the step runs). */
int sched_plan(struct sched *s);
/* After the forward pass: advance states. */
void sched_commit(struct sched *s);

/* Pages a whole request needs at its longest; more than the cache holds means it can never run
 * (it is refused); anything less always completes, by waiting and preemption. */
int sched_pages_needed(const struct sched *s, int n_prompt, int max_new);
const char *sched_state_name(enum sched_state st);

#endif
