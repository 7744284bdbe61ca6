/* grammar_mask.c — which vocabulary tokens a matcher state allows (grammar.h).
 *
 * The vocabulary's decoded byte strings go into a prefix tree once per tokenizer. A state's mask
 * is one depth-first walk of that tree: a child is entered only when its byte is in the union of
 * the state's top byte sets, and the stack set after each byte is computed once for the whole
 * subtree below it, so tokens sharing a prefix share its work (instead of 49k walks from the
 * root). The walk is memoized as a DFA built lazily: stack sets are interned (by their 64-bit
 * hash) and each (state, byte) transition is computed once per matcher, so inside a JSON string,
 * where nearly every byte leads back to the same state, a walk is a table lookup per tree node
 * (bench/grammar.md: 20-40x). The memo is bounded (GDFA_MAX_STATES) and starts over when full.
 * Control tokens are never allowed (they are not text); end-of-generation tokens are
 * allowed exactly in accepting states. Masks are cached per state in the matcher: the states of
 * JSON repeat (inside a string, after a comma), and a cached mask is a 6 KB copy. A shared cache
 * (grammar_mask_cache) holds them across matchers too: requests with the same schema meet the
 * same states, so after the first request the others copy instead of walking.
 * A step's rows go through grammar_mask_rows: rows in one state of one schema cost one mask
 * (computed once, copied to the rest), distinct states are taken one at a time by the pool; and
 * grammar_accept_rows: a token the mask allowed advances its matcher along the memo the walk
 * left (a lookup per byte), its own or that of the matcher that walked the state (a row that
 * copied its mask has none), and rows taking one token from one state advance once. The tree
 * is laid out in depth-first preorder, the walk's order.
 */
#include "grammar_impl.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_pool.h"
#include "tokenizer.h"

struct trie_node {
    int32_t next_sibling; /* -1 = none */
    int32_t tok_start;    /* its tokens: tok_list[tok_start .. next node's tok_start) */
    uint8_t byte;         /* the byte leading into the node */
    uint8_t has_child;    /* then the first child is the next node */
};

struct grammar_vocab {
    int n_vocab;
    /* the prefix tree; node 0 is the root (the empty prefix) */
    int n_nodes, cap_nodes;
    int32_t *first_child, *next_sibling; /* (n_nodes) -1 = none */
    uint8_t *byte;                       /* (n_nodes) the byte leading into the node */
    int32_t *tok_head;                   /* (n_nodes) first token ending here, -1 = none */
    int32_t *tok_next;                   /* (n_vocab) next token ending at the same node */
    /* the same once the tree is in preorder, as lists in node order (what the walk reads): node
     * x's tokens are tok_list[tok_start[x] .. tok_start[x + 1]), so a walk reads the list
     * forward instead of chasing tok_next across the vocabulary (tok_head and tok_next are
     * freed then) */
    int32_t *tok_start; /* (n_nodes + 1) */
    int32_t *tok_list;  /* (tokens in the tree) */
    /* what the walk reads of a node, in one place (one cache line instead of five arrays);
     * in preorder a node's first child is the next node */
    struct trie_node *node; /* (n_nodes + 1), the last a sentinel for tok_start */
    int max_len;            /* longest token, bytes (the walk's depth) */
    /* each token's bytes, for advancing by a chosen token */
    char *bytes;         /* all tokens end to end */
    uint32_t *off, *len; /* (n_vocab); len 0: not text (control, empty) */
    uint8_t *eog;        /* (n_vocab) 1 = end of generation */
    int32_t *eog_ids;    /* (n_eog) the same as a list */
    int n_eog;
};

static int node_new(struct grammar_vocab *v, uint8_t b) {
    if (v->n_nodes == v->cap_nodes) {
        int cap = v->cap_nodes ? v->cap_nodes * 2 : 4096;
        int32_t *fc = realloc(v->first_child, sizeof(int32_t) * (size_t)cap);
        if (fc) v->first_child = fc;
        int32_t *ns = realloc(v->next_sibling, sizeof(int32_t) * (size_t)cap);
        if (ns) v->next_sibling = ns;
        uint8_t *by = realloc(v->byte, (size_t)cap);
        if (by) v->byte = by;
        int32_t *th = realloc(v->tok_head, sizeof(int32_t) * (size_t)cap);
        if (th) v->tok_head = th;
        if (!fc || !ns || !by || !th) return -1;
        v->cap_nodes = cap;
    }
    int n = v->n_nodes++;
    v->first_child[n] = v->next_sibling[n] = v->tok_head[n] = -1;
    v->byte[n] = b;
    return n;
}

static int child_of(struct grammar_vocab *v, int node, uint8_t b) {
    for (int c = v->first_child[node]; c >= 0; c = v->next_sibling[c])
        if (v->byte[c] == b) return c;
    int c = node_new(v, b);
    if (c < 0) return -1;
    v->next_sibling[c] = v->first_child[node];
    v->first_child[node] = c;
    return c;
}

/* Renumber the tree's nodes in depth-first preorder, the order the walk visits them: a node's
 * first child is the next node and its subtree follows contiguously, so a walk streams through
 * the arrays instead of jumping around them in insertion order (measured on SmolLM2's 49k
 * tokens: bench/grammar.md). 0 or -1 (out of memory; the tree is unchanged). */
static int trie_preorder(struct grammar_vocab *v) {
    int n = v->n_nodes;
    int32_t *id = malloc(sizeof(int32_t) * (size_t)n), *stack = malloc(sizeof(int32_t) * (size_t)n);
    int32_t *fc = malloc(sizeof(int32_t) * (size_t)n), *ns = malloc(sizeof(int32_t) * (size_t)n);
    int32_t *th = malloc(sizeof(int32_t) * (size_t)n);
    uint8_t *by = malloc((size_t)n);
    int ok = id && stack && fc && ns && th && by;
    if (ok) {
        /* the stack holds each node's not yet visited next sibling, so the order is: a node, its
         * subtree, then its next sibling */
        int top = 0, next = 0;
        stack[top++] = 0;
        while (top) {
            int x = stack[--top];
            id[x] = next++;
            if (v->next_sibling[x] >= 0) stack[top++] = v->next_sibling[x];
            if (v->first_child[x] >= 0) stack[top++] = v->first_child[x];
        }
        for (int x = 0; x < n; x++) {
            int y = id[x];
            fc[y] = v->first_child[x] >= 0 ? id[v->first_child[x]] : -1;
            ns[y] = v->next_sibling[x] >= 0 ? id[v->next_sibling[x]] : -1;
            th[y] = v->tok_head[x];
            by[y] = v->byte[x];
        }
        free(v->first_child), free(v->next_sibling), free(v->tok_head), free(v->byte);
        v->first_child = fc, v->next_sibling = ns, v->tok_head = th, v->byte = by;
        v->cap_nodes = n;
    } else {
        free(fc), free(ns), free(th), free(by);
    }
    free(id), free(stack);
    return ok ? 0 : -1;
}

/* The token lists in node order (tok_start, tok_list) from tok_head / tok_next, and the walk's
 * node array from the tree's arrays; the arrays they came from go. 0 or -1 (out of memory; the
 * vocabulary is then freed). */
static int trie_token_lists(struct grammar_vocab *v) {
    v->tok_start = malloc(sizeof(int32_t) * ((size_t)v->n_nodes + 1));
    v->tok_list = malloc(sizeof(int32_t) * ((size_t)v->n_vocab + 1));
    if (!v->tok_start || !v->tok_list) return -1; /* grammar_vocab_free takes them */
    int k = 0;
    for (int x = 0; x < v->n_nodes; x++) {
        v->tok_start[x] = k;
        for (int t = v->tok_head[x]; t >= 0; t = v->tok_next[t])
            v->tok_list[k++] = t;
    }
    v->tok_start[v->n_nodes] = k;
    free(v->tok_head), free(v->tok_next);
    v->tok_head = v->tok_next = NULL;
    v->node = malloc(sizeof *v->node * ((size_t)v->n_nodes + 1));
    if (!v->node) return -1;
    for (int x = 0; x <= v->n_nodes; x++) {
        int last = x == v->n_nodes;
        v->node[x] =
            (struct trie_node){last ? -1 : v->next_sibling[x], v->tok_start[x],
                               last ? 0 : v->byte[x], (uint8_t)(!last && v->first_child[x] >= 0)};
    }
    free(v->first_child), free(v->next_sibling), free(v->byte); /* all in v->node now */
    v->first_child = v->next_sibling = NULL;
    v->byte = NULL;
    return 0;
}

int grammar_vocab_new(const struct tokenizer *tok, struct grammar_vocab **out) {
    *out = NULL;
    struct grammar_vocab *v = calloc(1, sizeof *v);
    if (!v) return -1;
    int n = tokenizer_n_vocab(tok);
    v->n_vocab = n;
    v->tok_next = malloc(sizeof(int32_t) * (size_t)n);
    v->off = calloc((size_t)n, sizeof(uint32_t));
    v->len = calloc((size_t)n, sizeof(uint32_t));
    v->eog = calloc((size_t)n, 1);
    size_t cap = 1 << 16, used = 0;
    v->bytes = malloc(cap);
    if (!v->tok_next || !v->off || !v->len || !v->eog || !v->bytes || node_new(v, 0) < 0) goto fail;
    char buf[1024];
    for (int id = 0; id < n; id++) {
        v->tok_next[id] = -1;
        v->eog[id] = (uint8_t)(tokenizer_is_eog(tok, id) != 0);
        if (v->eog[id]) {
            int32_t *e = realloc(v->eog_ids, sizeof(int32_t) * (size_t)(v->n_eog + 1));
            if (!e) goto fail;
            v->eog_ids = e;
            v->eog_ids[v->n_eog++] = id;
        }
        if (tokenizer_is_special(tok, id)) continue;
        int len = tokenizer_token_bytes(tok, id, buf, sizeof buf);
        if (len <= 0 || (size_t)len >= sizeof buf) continue;
        if (used + (size_t)len > cap) {
            while (used + (size_t)len > cap)
                cap *= 2;
            char *nb = realloc(v->bytes, cap);
            if (!nb) goto fail;
            v->bytes = nb;
        }
        memcpy(v->bytes + used, buf, (size_t)len);
        v->off[id] = (uint32_t)used;
        v->len[id] = (uint32_t)len;
        used += (size_t)len;
        int node = 0;
        for (int i = 0; i < len; i++)
            if ((node = child_of(v, node, (uint8_t)buf[i])) < 0) goto fail;
        v->tok_next[id] = v->tok_head[node];
        v->tok_head[node] = id;
        if (len > v->max_len) v->max_len = len;
    }
    if (trie_preorder(v) || trie_token_lists(v)) goto fail;
    *out = v;
    return 0;
fail:
    grammar_vocab_free(v);
    return -1;
}

void grammar_vocab_free(struct grammar_vocab *v) {
    if (!v) return;
    free(v->first_child);
    free(v->next_sibling);
    free(v->byte);
    free(v->tok_head);
    free(v->tok_next);
    free(v->tok_start);
    free(v->tok_list);
    free(v->node);
    free(v->bytes);
    free(v->off);
    free(v->len);
    free(v->eog);
    free(v->eog_ids);
    free(v);
}

int grammar_vocab_size(const struct grammar_vocab *v) {
    return v->n_vocab;
}

size_t grammar_mask_words(const struct grammar_vocab *v) {
    return ((size_t)v->n_vocab + 31) / 32;
}

/* ---- the walk's memo ------------------------------------------------------------------------ */

void grammar_dfa_free(struct grammar_matcher *m) {
    for (int i = 0; m->dfa && i < GDFA_MAX_STATES; i++) {
        gstacks_free(&m->dfa[i].s);
        free(m->dfa[i].next);
    }
    free(m->dfa);
    free(m->index);
    gstacks_free(&m->tmp);
    m->dfa = NULL;
    m->index = NULL;
    m->n_dfa = 0;
}

static int dfa_init(struct grammar_matcher *m) {
    if (m->dfa) return 0;
    m->dfa = calloc(GDFA_MAX_STATES, sizeof *m->dfa);
    m->index = calloc(GDFA_INDEX_SIZE, sizeof *m->index);
    if (m->dfa && m->index) return 0;
    grammar_dfa_free(m);
    return -1;
}

/* Forget every state (the buffers stay). */
static void dfa_flush(struct grammar_matcher *m) {
    for (int i = 0; i < m->n_dfa; i++)
        gstacks_free(&m->dfa[i].s);
    m->n_dfa = 0;
    memset(m->index, 0, sizeof *m->index * GDFA_INDEX_SIZE);
}

/* The id of the state equal to S (by its 64-bit hash), interned by moving S's buffer in when it
 * is new; -1 when the memo is full (the caller flushes) or out of memory. */
static int dfa_intern(struct grammar_matcher *m, struct gstacks *s) {
    uint64_t h = gstacks_hash(s);
    size_t i = (size_t)h & (GDFA_INDEX_SIZE - 1);
    while (m->index[i]) {
        if (m->dfa[m->index[i] - 1].hash == h) return m->index[i] - 1;
        i = (i + 1) & (GDFA_INDEX_SIZE - 1);
    }
    if (m->n_dfa == GDFA_MAX_STATES) return -1;
    int id = m->n_dfa;
    struct gdfa_state *d = &m->dfa[id];
    if (d->next)
        memset(d->next, 0, sizeof(int16_t) * 256); /* a slot used before a flush */
    else if (!(d->next = calloc(256, sizeof(int16_t))))
        return -1;
    m->n_dfa++;
    d->s = *s; /* take the buffer; S gets none */
    memset(s, 0, sizeof *s);
    d->hash = h;
    gstacks_next_bytes(m->g, &d->s, d->next_bytes);
    m->index[i] = id + 1;
    return id;
}

/* The state after byte B from state SID: an id, -1 when B is refused, -2 on a limit (memo full:
 * the walk restarts after a flush) or out of memory. */
static int dfa_next(struct grammar_matcher *m, int sid, unsigned b) {
    int16_t t = m->dfa[sid].next[b];
    if (t) return t > 0 ? t - 1 : -1;
    if (m->sc.work > GRAMMAR_MASK_WORK) return -3;
    if (gstacks_advance(m->g, &m->sc, &m->dfa[sid].s, b, &m->tmp)) return -3;
    int nid = -1;
    if (m->tmp.count) {
        nid = dfa_intern(m, &m->tmp);
        if (nid < 0) return -2;
    }
    m->dfa[sid].next[b] = (int16_t)(nid < 0 ? -1 : nid + 1);
    return nid;
}

/* Mark the tokens below NODE that state SID allows; returns how many, -2 when the memo filled
 * up, -3 on a limit of the matcher. */
static int walk(struct grammar_matcher *m, const struct grammar_vocab *v, int node, int sid,
                uint32_t *mask) {
    int count = 0;
    if (!v->node[node].has_child) return 0;
    for (int c = node + 1; c >= 0; c = v->node[c].next_sibling) {
        const struct trie_node *nd = &v->node[c];
        unsigned b = nd->byte;
        if (!(m->dfa[sid].next_bytes[b >> 5] >> (b & 31) & 1)) continue;
        int nid = dfa_next(m, sid, b);
        if (nid == -1) continue;
        if (nid < 0) return nid;
        int e = nd[1].tok_start;
        for (int k = nd->tok_start; k < e; k++) {
            int t = v->tok_list[k];
            mask[t >> 5] |= 1u << (t & 31);
        }
        count += e - nd->tok_start;
        if (nd->has_child) {
            int r = walk(m, v, c, nid, mask);
            if (r < 0) return r;
            count += r;
        }
    }
    return count;
}

/* ---- the shared cache ---------------------------------------------------------------------- */

#define GMC_WAYS 4
#define GMC_LOCKS 64 /* sets are locked in stripes: rows of a step mostly hit different sets */

struct grammar_mask_cache {
    size_t words;
    size_t n_sets;
    uint64_t *key;    /* (n_sets * GMC_WAYS) 0 = empty */
    uint64_t *used;   /* (n_sets * GMC_WAYS) last use, for LRU within a set */
    int32_t *count;   /* (n_sets * GMC_WAYS) allowed tokens */
    uint32_t *masks;  /* (n_sets * GMC_WAYS, words) */
    uint64_t *walker; /* (n_sets * GMC_WAYS) share id of the matcher whose walk stored it */
    pthread_mutex_t lock[GMC_LOCKS];
    atomic_uint_fast64_t tick, hits, misses, next_id;
};

struct grammar_mask_cache *grammar_mask_cache_new(const struct grammar_vocab *v, size_t max_bytes) {
    struct grammar_mask_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->words = grammar_mask_words(v);
    size_t per_set = GMC_WAYS * c->words * sizeof(uint32_t);
    c->n_sets = max_bytes / per_set;
    if (c->n_sets == 0) c->n_sets = 1;
    size_t slots = c->n_sets * GMC_WAYS;
    c->key = calloc(slots, sizeof *c->key);
    c->used = calloc(slots, sizeof *c->used);
    c->count = calloc(slots, sizeof *c->count);
    c->masks = malloc(slots * c->words * sizeof(uint32_t));
    c->walker = calloc(slots, sizeof *c->walker);
    if (!c->key || !c->used || !c->count || !c->masks || !c->walker) {
        free(c->walker);
        free(c->key);
        free(c->used);
        free(c->count);
        free(c->masks);
        free(c);
        return NULL;
    }
    for (int i = 0; i < GMC_LOCKS; i++)
        pthread_mutex_init(&c->lock[i], NULL);
    return c;
}

void grammar_mask_cache_free(struct grammar_mask_cache *c) {
    if (!c) return;
    for (int i = 0; i < GMC_LOCKS; i++)
        pthread_mutex_destroy(&c->lock[i]);
    free(c->key);
    free(c->used);
    free(c->count);
    free(c->masks);
    free(c->walker);
    free(c);
}

void grammar_mask_cache_stats(struct grammar_mask_cache *c, uint64_t *hits, uint64_t *misses) {
    *hits = atomic_load(&c->hits);
    *misses = atomic_load(&c->misses);
}

void grammar_matcher_share(struct grammar_matcher *m, struct grammar_mask_cache *c) {
    m->shared = c;
    m->share_id = c ? atomic_fetch_add(&c->next_id, 1) + 1 : 0;
}

static uint64_t gmc_key(const struct grammar_matcher *m, uint64_t state) {
    uint64_t k = (grammar_fingerprint(m->g) ^ state) * 0x9E3779B97F4A7C15ull;
    k ^= k >> 32;
    return k ? k : 1; /* 0 marks an empty slot */
}

/* Copy the mask of KEY into MASK; its count, or -1 when absent. */
static int gmc_get(struct grammar_mask_cache *c, uint64_t key, uint32_t *mask) {
    size_t set = (size_t)(key % c->n_sets);
    pthread_mutex_t *lk = &c->lock[set % GMC_LOCKS];
    int count = -1;
    pthread_mutex_lock(lk);
    for (size_t w = set * GMC_WAYS; w < (set + 1) * GMC_WAYS; w++)
        if (c->key[w] == key) {
            memcpy(mask, c->masks + w * c->words, c->words * sizeof(uint32_t));
            c->used[w] = atomic_fetch_add(&c->tick, 1) + 1;
            count = c->count[w];
            break;
        }
    pthread_mutex_unlock(lk);
    atomic_fetch_add(count >= 0 ? &c->hits : &c->misses, 1);
    return count;
}

/* The share id of the matcher whose walk stored KEY's mask, or 0 when absent. */
static uint64_t gmc_walker(struct grammar_mask_cache *c, uint64_t key) {
    size_t set = (size_t)(key % c->n_sets);
    pthread_mutex_t *lk = &c->lock[set % GMC_LOCKS];
    uint64_t w = 0;
    pthread_mutex_lock(lk);
    for (size_t i = set * GMC_WAYS; i < (set + 1) * GMC_WAYS; i++)
        if (c->key[i] == key) {
            w = c->walker[i];
            break;
        }
    pthread_mutex_unlock(lk);
    return w;
}

static void gmc_put(struct grammar_mask_cache *c, uint64_t key, const uint32_t *mask, int count,
                    uint64_t walker) {
    size_t set = (size_t)(key % c->n_sets), victim = set * GMC_WAYS;
    pthread_mutex_t *lk = &c->lock[set % GMC_LOCKS];
    pthread_mutex_lock(lk);
    for (size_t w = set * GMC_WAYS; w < (set + 1) * GMC_WAYS; w++) {
        if (c->key[w] == key) { /* another row computed it meanwhile */
            victim = w;
            break;
        }
        if (c->used[w] < c->used[victim]) victim = w;
    }
    c->key[victim] = key;
    c->count[victim] = count;
    c->walker[victim] = walker;
    c->used[victim] = atomic_fetch_add(&c->tick, 1) + 1;
    memcpy(c->masks + victim * c->words, mask, c->words * sizeof(uint32_t));
    pthread_mutex_unlock(lk);
}

/* The matcher's own cache of its last masks. */
static void own_put(struct grammar_matcher *m, uint64_t key, const uint32_t *mask, int count,
                    size_t words) {
    int slot = m->cache_next;
    if (!m->cache_mask[slot]) m->cache_mask[slot] = malloc(words * sizeof(uint32_t));
    if (m->cache_mask[slot]) { /* no room to cache is not an error */
        memcpy(m->cache_mask[slot], mask, words * sizeof(uint32_t));
        m->cache_key[slot] = key;
        m->cache_count[slot] = count;
        m->cache_next = (slot + 1) % GRAMMAR_MASK_CACHE;
    }
}

int grammar_mask(struct grammar_matcher *m, const struct grammar_vocab *v, uint32_t *mask) {
    size_t words = grammar_mask_words(v);
    uint64_t key = gstacks_hash(&m->cur);
    if (m->cache_words != words) { /* another vocabulary: the cached masks are not its */
        for (int i = 0; i < GRAMMAR_MASK_CACHE; i++) {
            free(m->cache_mask[i]);
            m->cache_mask[i] = NULL;
        }
        m->cache_words = words;
    }
    for (int i = 0; i < GRAMMAR_MASK_CACHE; i++)
        if (m->cache_mask[i] && m->cache_key[i] == key) {
            memcpy(mask, m->cache_mask[i], words * sizeof(uint32_t));
            return m->cache_count[i];
        }
    struct grammar_mask_cache *sh = m->shared && m->shared->words == words ? m->shared : NULL;
    uint64_t skey = sh ? gmc_key(m, key) : 0;
    if (sh) {
        int count = gmc_get(sh, skey, mask);
        if (count >= 0) {
            own_put(m, key, mask, count, words);
            return count;
        }
    }
    if (dfa_init(m)) return -1;
    m->sc.work = 0;
    int count = -2;
    for (int attempt = 0; attempt < 2 && count == -2; attempt++) {
        if (attempt) dfa_flush(m); /* full: start over once with an empty memo */
        memset(mask, 0, words * sizeof(uint32_t));
        struct gstacks start = {0};
        int sid = -2;
        if (gstacks_copy(&start, &m->cur) == 0) sid = dfa_intern(m, &start);
        gstacks_free(&start);
        if (sid == -2 || sid < 0) {
            count = -2;
            continue;
        }
        count = walk(m, v, 0, sid, mask);
    }
    if (count < 0) return -1;
    if (grammar_matcher_accepting(m))
        for (int k = 0; k < v->n_eog; k++) {
            int id = v->eog_ids[k];
            mask[id >> 5] |= 1u << (id & 31);
            count++;
        }
    own_put(m, key, mask, count, words);
    if (sh) gmc_put(sh, skey, mask, count, m->share_id);
    return count;
}

/* ---- a step's rows ------------------------------------------------------------------------- */

struct rows_job {
    struct grammar_matcher *const *m;
    const struct grammar_vocab *v;
    uint32_t *masks; /* (n, words) */
    size_t words;
    int *counts;     /* (n) */
    const int *lead; /* (n) the row whose mask row i gets; i for the rows that compute; -1 none */
    const int *todo; /* (n_todo) the rows that compute, one per distinct state */
    int n_todo;
    atomic_int next; /* the next entry of todo to take */
};

/* Pool threads: take the distinct states one at a time (their costs differ by 1000x: a cached
 * copy or a fresh walk), so no thread sits on a chunk of walks while the others idle. */
static void rows_compute(void *arg, size_t begin, size_t end) {
    (void)begin, (void)end;
    struct rows_job *j = arg;
    for (int k; (k = atomic_fetch_add(&j->next, 1)) < j->n_todo;) {
        int r = j->todo[k];
        j->counts[r] = grammar_mask(j->m[r], j->v, j->masks + (size_t)r * j->words);
    }
}

/* Rows [begin, end) that share another row's state copy its mask. */
static void rows_copy(void *arg, size_t begin, size_t end) {
    struct rows_job *j = arg;
    for (size_t i = begin; i < end; i++) {
        int l = j->lead[i];
        if (l < 0 || (size_t)l == i) continue;
        j->counts[i] = j->counts[l];
        if (j->counts[l] >= 0)
            memcpy(j->masks + i * j->words, j->masks + (size_t)l * j->words,
                   j->words * sizeof(uint32_t));
    }
}

int grammar_mask_rows(struct grammar_matcher *const *m, int n, const struct grammar_vocab *v,
                      uint32_t *masks, int *counts, struct cpu_pool *pool) {
    if (n <= 0) return 0;
    size_t slots = 16;
    while (slots < 2 * (size_t)n)
        slots *= 2;
    int *lead = malloc(sizeof(int) * (size_t)n), *todo = malloc(sizeof(int) * (size_t)n);
    uint64_t *key = malloc(sizeof(uint64_t) * slots);
    int *row = malloc(sizeof(int) * slots);
    if (!lead || !todo || !key || !row) {
        free(lead), free(todo), free(key), free(row);
        return -1;
    }
    /* group the rows by state: an open-addressed table from the shared cache's key (grammar
     * fingerprint and stack-set hash) to the first row in that state */
    for (size_t s = 0; s < slots; s++)
        row[s] = -1;
    int n_todo = 0;
    for (int i = 0; i < n; i++) {
        counts[i] = -2;
        lead[i] = -1;
        if (!m[i]) continue;
        uint64_t k = gmc_key(m[i], gstacks_hash(&m[i]->cur));
        size_t s = (size_t)k & (slots - 1);
        while (row[s] >= 0 && key[s] != k)
            s = (s + 1) & (slots - 1);
        if (row[s] < 0) {
            row[s] = i;
            key[s] = k;
            todo[n_todo++] = i;
        }
        lead[i] = row[s];
    }
    struct rows_job j = {m, v, masks, grammar_mask_words(v), counts, lead, todo, n_todo, 0};
    int nt = cpu_pool_size(pool);
    if (nt > n_todo) nt = n_todo;
    if (nt <= 1)
        rows_compute(&j, 0, 1);
    else
        cpu_pool_for(pool, (size_t)nt, 1, rows_compute, &j);
    /* the copies on this thread: 6 KB a row is less than a second wake-up of the pool (and
     * on the GPU path all of this overlaps the forward pass) */
    if (n_todo < n) rows_copy(&j, 0, (size_t)n);
    free(lead), free(todo), free(key), free(row);
    return n_todo;
}

/* The memo's id of the state with hash H, or -1 when it has none. */
static int dfa_find(const struct grammar_matcher *m, uint64_t h) {
    for (size_t i = (size_t)h & (GDFA_INDEX_SIZE - 1); m->index[i];
         i = (i + 1) & (GDFA_INDEX_SIZE - 1))
        if (m->dfa[m->index[i] - 1].hash == h) return m->index[i] - 1;
    return -1;
}

/* The memo's transition from SID by byte B: a state id, -1 when B is refused, -2 when the memo
 * does not know it (nothing is computed here). */
static int dfa_peek(const struct grammar_matcher *m, int sid, unsigned b) {
    if (!(m->dfa[sid].next_bytes[b >> 5] >> (b & 31) & 1)) return -1; /* no top admits b */
    int16_t t = m->dfa[sid].next[b];
    return t > 0 ? t - 1 : t < 0 ? -1 : -2;
}

/* Advance M by the N bytes P along the memo of SRC: M itself, or a matcher of an equal grammar
 * (the same elements, so the same positions) whose mask walk started from M's state H. The walk
 * that allowed the token went through every byte of it, so after a mask the state it leads to is
 * a lookup per byte and a copy, instead of expanding the stacks again (what
 * grammar_matcher_accept does: ~1-2 µs a token on a JSON Schema, bench/grammar.md). SRC's memo
 * is only read. 0 or -1 as grammar_matcher_accept; -2 when the memo does not cover the way (the
 * caller tries another memo or advances the slow way). */
static int accept_by_memo(struct grammar_matcher *m, const struct grammar_matcher *src, uint64_t h,
                          const unsigned char *p, size_t n) {
    if (!src->dfa || src->n_dfa == 0) return -2;
    int sid = dfa_find(src, h);
    for (size_t i = 0; sid >= 0 && i < n; i++) {
        int nid = dfa_peek(src, sid, p[i]);
        if (nid < 0) return nid == -1 ? -1 : -2;
        sid = nid;
    }
    if (sid < 0 || gstacks_copy(&m->nxt, &src->dfa[sid].s)) return -2; /* cur is untouched */
    struct gstacks t = m->cur;
    m->cur = m->nxt;
    m->nxt = t;
    return 0;
}

/* Advance M by token ID along the memo of SRC (M itself or a donor, as accept_by_memo), H being
 * the hash of M's stack set: grammar_matcher_accept_token's return, or -2 when that memo does not
 * cover the way (nothing changed; ID is then a text token). */
static int accept_token_memo(struct grammar_matcher *m, const struct grammar_matcher *src,
                             const struct grammar_vocab *v, int id, uint64_t h) {
    if (id < 0 || id >= v->n_vocab) return -1;
    if (v->eog[id]) return grammar_matcher_accepting(m) ? 0 : -1;
    if (v->len[id] == 0) return -1;
    return accept_by_memo(m, src, h, (const unsigned char *)v->bytes + v->off[id], v->len[id]);
}

/* The slow way, for a text token no memo covered: its bytes fed to the matcher. */
static int accept_token_bytes(struct grammar_matcher *m, const struct grammar_vocab *v, int id) {
    return grammar_matcher_accept(m, v->bytes + v->off[id], v->len[id]);
}

int grammar_matcher_accept_token(struct grammar_matcher *m, const struct grammar_vocab *v, int id) {
    int rc = accept_token_memo(m, m, v, id, gstacks_hash(&m->cur));
    return rc != -2 ? rc : accept_token_bytes(m, v, id);
}

/* 1 when A and B have equal grammars: the same object, or the same fingerprint and size (a
 * memo's stack sets index the grammar's elements, so this guards the memory, not just a mask). */
static int same_grammar(const struct grammar *a, const struct grammar *b) {
    return a == b || (a->n_el == b->n_el && grammar_fingerprint(a) == grammar_fingerprint(b));
}

/* An open-addressed table from 64-bit keys to row numbers, for a step's rows (2N slots or more,
 * a power of 2). */
struct row_table {
    uint64_t *key;
    int *row; /* -1 = empty */
    size_t mask;
};

static int row_table_init(struct row_table *t, int n) {
    size_t slots = 16;
    while (slots < 2 * (size_t)n)
        slots *= 2;
    t->key = malloc(sizeof(uint64_t) * slots);
    t->row = malloc(sizeof(int) * slots);
    t->mask = slots - 1;
    if (!t->key || !t->row) {
        free(t->key), free(t->row);
        t->key = NULL, t->row = NULL;
        return -1;
    }
    for (size_t s = 0; s < slots; s++)
        t->row[s] = -1;
    return 0;
}

static void row_table_free(struct row_table *t) {
    free(t->key), free(t->row);
}

/* The row stored under K for which SAME(arg, row) holds, or, when none, ROW stored and -1. */
static int row_table_put(struct row_table *t, uint64_t k, int row,
                         int (*same)(const void *arg, int a, int b), const void *arg) {
    size_t s = (size_t)k & t->mask;
    for (; t->row[s] >= 0; s = (s + 1) & t->mask)
        if (t->key[s] == k && same(arg, t->row[s], row)) return t->row[s];
    t->key[s] = k;
    t->row[s] = row;
    return -1;
}

/* The row stored under K (the first, when several), or -1. */
static int row_table_get(const struct row_table *t, uint64_t k) {
    for (size_t s = (size_t)k & t->mask; t->row[s] >= 0; s = (s + 1) & t->mask)
        if (t->key[s] == k) return t->row[s];
    return -1;
}

struct accept_rows {
    struct grammar_matcher *const *m;
    const int *ids;
};

/* Rows A and B are in one state of equal grammars (their keys being equal). */
static int same_state(const void *arg, int a, int b) {
    const struct accept_rows *x = arg;
    return same_grammar(x->m[a]->g, x->m[b]->g);
}

/* ... and take the same token. */
static int same_pick(const void *arg, int a, int b) {
    const struct accept_rows *x = arg;
    return x->ids[a] == x->ids[b] && same_state(arg, a, b);
}

static int any_row(const void *arg, int a, int b) {
    (void)arg, (void)a, (void)b;
    return 1;
}

/* A step's advances, one row after another on the calling thread. Measured on the H200 host
 * (bench/results/grammar_step_h200_2026-12-02.log, 16 pool threads), the pool's wake-up and join
 * took 0.2-0.3 ms a step, while 64-256 rows advanced one after another took 0.03-0.13 ms (0.5
 * µs a row along the memo) and 0.09-0.31 ms where most rows took the slow way (1.2-1.4 µs): so
 * the rows go in order, which also lets a row reuse an earlier row's result:
 * - rows in one state of equal grammars that take the same token end in the same state: the
 *   first advances, the others copy its stack set (a real model picks alike: property names);
 * - a row whose own memo does not cover its state tries the memo of the first row in its state
 *   (grammar_mask_rows walked there for the group), then that of the matcher whose walk stored
 *   the state's mask in the shared cache, when it is in this step (the cache keeps its share
 *   id). The donors' memos are only read here.
 * Only then the slow way (the stacks expanded byte by byte). */
void grammar_accept_rows(struct grammar_matcher *const *m, int n, const struct grammar_vocab *v,
                         const int *ids, int *status) {
    if (n <= 0) return;
    struct accept_rows x = {m, ids};
    struct row_table state, pick, by_id;
    int ok = row_table_init(&state, n) == 0;
    if (ok && row_table_init(&pick, n)) {
        row_table_free(&state);
        ok = 0;
    }
    if (ok && row_table_init(&by_id, n)) {
        row_table_free(&state), row_table_free(&pick);
        ok = 0;
    }
    uint64_t *hash = ok ? malloc(sizeof(uint64_t) * (size_t)n) : NULL; /* (n) of each stack set */
    int *lead = ok ? malloc(sizeof(int) * (size_t)n) : NULL, *twin = NULL;
    if (lead) twin = malloc(sizeof(int) * (size_t)n);
    if (!twin) { /* out of memory: each row by itself */
        free(hash), free(lead);
        if (ok) row_table_free(&state), row_table_free(&pick), row_table_free(&by_id);
        for (int i = 0; i < n; i++)
            status[i] = m[i] ? grammar_matcher_accept_token(m[i], v, ids[i]) : 0;
        return;
    }
    /* before any row moves: each row's group (the first row in its state) and twin (the first
     * row in its state taking its token) */
    for (int i = 0; i < n; i++) {
        lead[i] = twin[i] = -1;
        if (!m[i]) continue;
        uint64_t h = hash[i] = gstacks_hash(&m[i]->cur);
        uint64_t k = h * 0x9E3779B97F4A7C15ull ^ grammar_fingerprint(m[i]->g);
        lead[i] = row_table_put(&state, k, i, same_state, &x);
        twin[i] = row_table_put(&pick, k ^ ((uint64_t)(unsigned)ids[i] * 0xC2B2AE3D27D4EB4Full), i,
                                same_pick, &x);
        if (m[i]->share_id) row_table_put(&by_id, m[i]->share_id, i, any_row, &x);
    }
    for (int i = 0; i < n; i++) {
        if (!m[i]) {
            status[i] = 0;
            continue;
        }
        int t = twin[i];
        if (t >= 0) { /* the twin went first from the same state by the same token */
            status[i] = status[t];
            if (status[t] != 0) continue; /* refused: the state stays, as the twin's did */
            if (gstacks_copy(&m[i]->nxt, &m[t]->cur) == 0) {
                struct gstacks tmp = m[i]->cur;
                m[i]->cur = m[i]->nxt;
                m[i]->nxt = tmp;
                continue;
            }
            /* no memory for the copy (cur is untouched): advance it itself */
        }
        /* its own memo, the group's first row's, the walker's (looked up only when needed) */
        int rc = accept_token_memo(m[i], m[i], v, ids[i], hash[i]);
        if (rc == -2 && lead[i] >= 0) rc = accept_token_memo(m[i], m[lead[i]], v, ids[i], hash[i]);
        if (rc == -2 && m[i]->shared) {
            uint64_t w = gmc_walker(m[i]->shared, gmc_key(m[i], hash[i]));
            int r = w ? row_table_get(&by_id, w) : -1;
            if (r >= 0 && r != i && m[r]->shared == m[i]->shared && same_grammar(m[r]->g, m[i]->g))
                rc = accept_token_memo(m[i], m[r], v, ids[i], hash[i]);
        }
        status[i] = rc != -2 ? rc : accept_token_bytes(m[i], v, ids[i]);
    }
    free(hash), free(lead), free(twin);
    row_table_free(&state), row_table_free(&pick), row_table_free(&by_id);
}
