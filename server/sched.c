/* sched.c — continuous batching: pages on demand with recompute preemption, prefix-cache
 * lookups at admission, decode first, then prefill chunks. See sched.h for one iteration.
 *
 * Design choice: a sequence holds pages only for what it has (prompt, then each token as it comes),
 * so a request that asks for 4096 tokens and stops after 50 holds 50 tokens' worth. The price is
 * that the running ones can outgrow the cache; then the newest is preempted and later recomputed
 * (one prefill of its tokens so far, mostly prefix-cache hits when its pages are still cached),
 * which is cheaper than swapping and never fails a request that fits the cache on its own.
 */
#include "sched.h"

#include <stdlib.h>
#include <string.h>

static const char *const STATE_NAMES[] = {"waiting", "prefill", "decode", "finished", "cancelled"};

const char *sched_state_name(enum sched_state st) {
    return (unsigned)st <= SCHED_CANCELLED ? STATE_NAMES[st] : "?";
}

int sched_init(struct sched *s, struct kv_cache *kv, int max_batch_tokens, int max_batch_seqs) {
    memset(s, 0, sizeof *s);
    s->kv = kv;
    s->max_batch_tokens = max_batch_tokens > 0 ? max_batch_tokens : 512;
    s->max_batch_seqs = max_batch_seqs > 0 ? max_batch_seqs : 64;
    s->prefix_caching = 1;
    s->running = calloc((size_t)s->max_batch_seqs, sizeof *s->running);
    s->admitted = calloc((size_t)s->max_batch_seqs, sizeof *s->admitted);
    s->batch.items = calloc((size_t)s->max_batch_seqs, sizeof *s->batch.items);
    s->batch.fwd = calloc((size_t)s->max_batch_seqs, sizeof *s->batch.fwd);
    if (!s->running || !s->admitted || !s->batch.items || !s->batch.fwd) {
        sched_free(s);
        return -1;
    }
    return 0;
}

void sched_free(struct sched *s) {
    if (!s) return;
    free(s->running);
    free(s->admitted);
    free(s->batch.items);
    free(s->batch.fwd);
    memset(s, 0, sizeof *s);
}

void sched_add(struct sched *s, struct sched_seq *q) {
    q->state = SCHED_WAITING;
    q->next = NULL;
    memset(&q->kv, 0, sizeof q->kv);
    if (s->wait_tail)
        s->wait_tail->next = q;
    else
        s->wait_head = q;
    s->wait_tail = q;
    s->n_waiting++;
}

void sched_add_fork(struct sched *s, struct sched_seq *parent, struct sched_seq *q) {
    q->state = SCHED_WAITING;
    q->next = q->forks = q->fork_next = NULL;
    q->fork_of = parent;
    memset(&q->kv, 0, sizeof q->kv);
    struct sched_seq **pp = &parent->forks;
    while (*pp)
        pp = &(*pp)->fork_next;
    *pp = q;
    s->n_waiting++;
}

void sched_end(struct sched_seq *q, enum sched_state state) {
    if (q->state == SCHED_FINISHED || q->state == SCHED_CANCELLED) return;
    q->state = state == SCHED_CANCELLED ? SCHED_CANCELLED : SCHED_FINISHED;
}

static int is_done(const struct sched_seq *q) {
    return q->state == SCHED_FINISHED || q->state == SCHED_CANCELLED;
}

/* Start Q, the first of P's forks, from P's pages (P has computed all but Q's last prompt token):
 * the full pages shared, the partial one copied, PREFILL with that last token to go, on the
 * running list and on ADMITTED at *N_ADM. KEEP: pages to leave available. Returns 0, -1 when P
 * is not that far yet, or -2 without room in the batch or the cache (nothing changed either way).
 */
static int fork_one(struct sched *s, struct sched_seq *p, struct sched_seq *q, int keep,
                    int *n_adm) {
    int n = q->n_prompt - 1;
    if (p->state == SCHED_WAITING || p->kv.n_tokens < n) return -1;
    if (s->n_running >= s->max_batch_seqs) return -2;
    if (s->kv) {
        /* the pages it needs of its own: the copied partial one, or a fresh one for the last
         * prompt token when the shared ones end at a page boundary */
        int own = kv_cache_pages_for(s->kv, q->n_tokens) - n / s->kv->page_size;
        if (own + keep > kv_cache_available(s->kv) || kv_seq_fork(s->kv, &p->kv, &q->kv, n) != 0)
            return -2;
        if (kv_seq_reserve(s->kv, &q->kv, q->n_tokens) != 0) {
            kv_seq_release(s->kv, &q->kv);
            return -2;
        }
    } else {
        q->kv.n_tokens = n;
    }
    p->forks = q->fork_next;
    q->fork_next = NULL;
    q->fork_of = NULL;
    s->n_waiting--;
    s->forks++;
    q->state = SCHED_PREFILL;
    q->n_prefill = q->n_tokens;
    s->running[s->n_running++] = q;
    s->admitted[(*n_adm)++] = q;
    return 0;
}

/* Forks of P that ended while they waited leave (to OUT while there is room); when P itself is
 * done, the others go to the front of the arrival queue as ordinary sequences (in their order). */
static void reap_forks(struct sched *s, struct sched_seq *p, struct sched_seq **out, int max,
                       int *n) {
    struct sched_seq **pp = &p->forks;
    while (*pp) {
        struct sched_seq *q = *pp;
        if (is_done(q) && *n < max) {
            *pp = q->fork_next;
            q->fork_next = NULL;
            q->fork_of = NULL;
            s->n_waiting--;
            out[(*n)++] = q;
        } else {
            pp = &q->fork_next;
        }
    }
    if (!is_done(p) || !p->forks || *n >= max) return; /* P leaves only with room in OUT */
    /* P ended (its first token was its last) but holds the prompt: the forks start from it now,
     * before its pages go (the plan's admitted list gets them, s->n_early) */
    while (p->forks && fork_one(s, p, p->forks, 0, &s->n_early) == 0) {
    }
    if (!p->forks) return;
    struct sched_seq *last = p->forks;
    for (struct sched_seq *q = p->forks; q; q = q->fork_next) {
        q->fork_of = NULL;
        q->next = q->fork_next;
        last = q;
    }
    last->next = s->wait_head;
    if (!s->wait_head) s->wait_tail = last;
    s->wait_head = p->forks;
    for (struct sched_seq *q = p->forks, *nx; q; q = nx) {
        nx = q->fork_next;
        q->fork_next = NULL;
    }
    p->forks = NULL; /* already counted in n_waiting */
}

int sched_reap(struct sched *s, struct sched_seq **out, int max) {
    int n = 0;
    for (int i = 0; i < s->n_running; i++)
        reap_forks(s, s->running[i], out, max, &n);
    for (struct sched_seq *q = s->wait_head; q; q = q->next)
        reap_forks(s, q, out, max, &n);
    /* running: keep the admission order of those that stay */
    int w = 0;
    for (int i = 0; i < s->n_running; i++) {
        struct sched_seq *q = s->running[i];
        if (is_done(q) && n < max) {
            if (s->kv) kv_seq_release(s->kv, &q->kv);
            out[n++] = q;
        } else {
            s->running[w++] = q;
        }
    }
    s->n_running = w;
    /* waiting: unlink the done ones (they hold no pages) */
    struct sched_seq **pp = &s->wait_head, *prev = NULL;
    while (*pp) {
        struct sched_seq *q = *pp;
        if (is_done(q) && n < max) {
            *pp = q->next;
            q->next = NULL;
            s->n_waiting--;
            out[n++] = q;
        } else {
            prev = q;
            pp = &q->next;
        }
    }
    s->wait_tail = prev;
    return n;
}

int sched_pages_needed(const struct sched *s, int n_prompt, int max_new) {
    int ps = s->kv && s->kv->page_size > 0 ? s->kv->page_size : 16;
    return (n_prompt + max_new + ps - 1) / ps;
}

/* Put the most recently admitted running sequence back at the front of the waiting list,
 * without its pages. */
static void preempt_last(struct sched *s) {
    struct sched_seq *q = s->running[--s->n_running];
    if (s->kv) kv_seq_release(s->kv, &q->kv);
    q->state = SCHED_WAITING;
    q->n_preempted++;
    q->next = s->wait_head;
    s->wait_head = q;
    if (!s->wait_tail) s->wait_tail = q;
    s->n_waiting++;
    s->preemptions++;
}

/* Pages for every DECODE sequence's next token, preempting from the newest when they run out.
 * Returns 1 when something was preempted. */
static int grow_running(struct sched *s) {
    int preempted = 0;
    if (!s->kv) return 0;
    for (int i = 0; i < s->n_running; i++) {
        struct sched_seq *q = s->running[i];
        if (q->state != SCHED_DECODE) continue;
        while (kv_seq_reserve(s->kv, &q->kv, q->kv.n_tokens + 1) != 0) {
            /* the victim is always at the end, at or after i */
            int self = s->running[s->n_running - 1] == q;
            preempt_last(s);
            preempted = 1;
            if (self) break;
        }
    }
    return preempted;
}

/* Pages for Q's tokens so far, the prefix cache's first. Returns 0, or -1 (nothing held) when
 * they do not fit with KEEP pages to spare. */
static int take_pages(struct sched *s, struct sched_seq *q, int keep) {
    struct kv_cache *kv = s->kv;
    int lookup = s->prefix_caching && q->chunk_max != 1; /* prompt logprobs need every row */
    int hit = 0;
    if (lookup) {
        /* the last token is always computed: its logits are the next sample */
        hit = kv_seq_match(kv, &q->kv, q->tokens, q->n_tokens, q->n_tokens - 1);
        if (hit < 0) return -1;
    }
    int more = kv_cache_pages_for(kv, q->n_tokens) - q->kv.n_pages;
    if (more + keep > kv_cache_available(kv) || kv_seq_reserve(kv, &q->kv, q->n_tokens) != 0) {
        kv_seq_release(kv, &q->kv);
        return -1;
    }
    if (lookup) {
        s->prefix_queries += (uint64_t)q->n_tokens;
        s->prefix_hits += (uint64_t)hit;
    }
    return 0;
}

/* Admit from the head of the waiting queue, in arrival order (no overtaking, so a large request
 * cannot starve behind a stream of small ones). */
static void admit(struct sched *s) {
    while (s->wait_head && s->n_running < s->max_batch_seqs) {
        struct sched_seq *q = s->wait_head;
        if (s->kv && take_pages(s, q, s->n_running ? SCHED_WATERMARK_PAGES : 0) != 0) break;
        s->wait_head = q->next;
        if (!s->wait_head) s->wait_tail = NULL;
        q->next = NULL;
        s->n_waiting--;
        q->state = SCHED_PREFILL;
        q->n_prefill = q->n_tokens;
        s->running[s->n_running++] = q;
        s->admitted[s->n_admitted++] = q;
    }
}

static void push(struct sched *s, struct sched_seq *q, int n, int want) {
    struct sched_batch *b = &s->batch;
    struct sched_item *it = &b->items[b->n];
    it->seq = q;
    it->start = q->kv.n_tokens;
    it->n = n;
    it->want = want;
    b->fwd[b->n].tokens = q->tokens + it->start;
    b->fwd[b->n].n_tokens = n;
    b->fwd[b->n].kv = &q->kv;
    int np =
        q->n_prompt - it->start; /* of these n, the prompt's (a recomputed sequence has more) */
    b->fwd[b->n].n_prompt = np < 0 ? 0 : np > n ? n : np;
    b->n++;
    b->n_tokens += n;
}

/* Start the forks whose parent has computed all but their last prompt token, oldest parents
 * first; like admissions, only with room in the batch and SCHED_WATERMARK_PAGES left for the
 * running ones (out of room: the rest wait for the next plan, in order). */
static void start_forks(struct sched *s) {
    for (int i = 0; i < s->n_running; i++) {
        struct sched_seq *p = s->running[i];
        int rc = 0;
        while (p->forks &&
               (rc = fork_one(s, p, p->forks, SCHED_WATERMARK_PAGES, &s->n_admitted)) == 0) {
        }
        if (rc == -2) return;
    }
}

int sched_plan(struct sched *s) {
    struct sched_batch *b = &s->batch;
    b->n = b->n_tokens = b->n_decode = b->n_prefill = 0;
    s->n_admitted = s->n_early; /* forks sched_reap started */
    s->n_early = 0;
    if (!grow_running(s)) {
        start_forks(s);
        admit(s);
    }
    /* decode tokens first: they are what the users of running streams are waiting for */
    for (int i = 0; i < s->n_running && b->n < s->max_batch_seqs; i++) {
        struct sched_seq *q = s->running[i];
        if (q->state != SCHED_DECODE || b->n_tokens + 1 > s->max_batch_tokens) continue;
        push(s, q, 1, 1);
        b->n_decode++;
    }
    /* then prefill chunks, in admission order, up to the token budget */
    for (int i = 0; i < s->n_running && b->n < s->max_batch_seqs; i++) {
        struct sched_seq *q = s->running[i];
        if (q->state != SCHED_PREFILL) continue;
        int left = q->n_prefill - q->kv.n_tokens;
        int room = s->max_batch_tokens - b->n_tokens;
        if (room <= 0) break;
        int n = left < room ? left : room;
        /* chunk_max holds for rows not computed before; a recompute goes up to them at once */
        int seen = q->n_done - q->kv.n_tokens;
        if (q->chunk_max > 0 && seen > 0 && n > seen)
            n = seen;
        else if (q->chunk_max > 0 && seen <= 0 && n > q->chunk_max)
            n = q->chunk_max;
        if (n <= 0) continue;
        /* want the logits of the last chunk (the next sample), or of every chunk when the
         * request asked for prompt logprobs (chunk_max == 1) and a recompute has not seen it */
        int end = q->kv.n_tokens + n;
        push(s, q, n, end == q->n_prefill || (q->chunk_max == 1 && end > q->n_done));
        b->n_prefill++;
        s->prefill_tokens += (uint64_t)n;
    }
    return b->n;
}

void sched_commit(struct sched *s) {
    struct sched_batch *b = &s->batch;
    for (int i = 0; i < b->n; i++) {
        struct sched_seq *q = b->items[i].seq;
        if (q->kv.n_tokens > q->n_done) q->n_done = q->kv.n_tokens;
        if (s->kv && s->prefix_caching) kv_seq_publish(s->kv, &q->kv, q->tokens);
        if (q->state == SCHED_PREFILL && q->kv.n_tokens >= q->n_prefill) q->state = SCHED_DECODE;
    }
}
