/* grammar_mask.c — which vocabulary tokens a matcher state allows (grammar.h).
 *
 * The vocabulary's decoded byte strings go into a prefix tree once per tokenizer. A state's mask
 * is one depth-first walk of that tree: a child is entered only when its byte is in the union of
 * the state's top byte sets, and the stack set after each byte is computed once for the whole
 * subtree below it, so tokens sharing a prefix share its work (instead of 49k walks from the
 * root). Control tokens are never allowed (they are not text); end-of-generation tokens are
 * allowed exactly in accepting states. Masks are cached per state in the matcher: the states of
 * JSON repeat (inside a string, after a comma), and a cached mask is a 6 KB copy.
 */
#include "grammar_impl.h"

#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

struct grammar_vocab {
    int n_vocab;
    /* the prefix tree; node 0 is the root (the empty prefix) */
    int n_nodes, cap_nodes;
    int32_t *first_child, *next_sibling; /* (n_nodes) -1 = none */
    uint8_t *byte;                       /* (n_nodes) the byte leading into the node */
    int32_t *tok_head;                   /* (n_nodes) first token ending here, -1 = none */
    int32_t *tok_next;                   /* (n_vocab) next token ending at the same node */
    int max_len;                         /* longest token, bytes (the walk's depth) */
    /* each token's bytes, for advancing by a chosen token */
    char *bytes;         /* all tokens end to end */
    uint32_t *off, *len; /* (n_vocab); len 0: not text (control, empty) */
    uint8_t *eog;        /* (n_vocab) 1 = end of generation */
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
    free(v->bytes);
    free(v->off);
    free(v->len);
    free(v->eog);
    free(v);
}

int grammar_vocab_size(const struct grammar_vocab *v) {
    return v->n_vocab;
}

size_t grammar_mask_words(const struct grammar_vocab *v) {
    return ((size_t)v->n_vocab + 31) / 32;
}

/* Mark the tokens below NODE that state S (at depth D of the walk) allows; returns how many,
 * or -1 on a limit. */
static int walk(struct grammar_matcher *m, const struct grammar_vocab *v, int node,
                const struct gstacks *s, int d, uint32_t *mask) {
    uint32_t next[8];
    gstacks_next_bytes(m->g, s, next);
    int count = 0;
    struct gstacks *out = &m->depth[d];
    for (int c = v->first_child[node]; c >= 0; c = v->next_sibling[c]) {
        unsigned b = v->byte[c];
        if (!(next[b >> 5] >> (b & 31) & 1)) continue;
        if (gstacks_advance(m->g, &m->sc, s, b, out)) return -1;
        if (out->count == 0) continue;
        for (int t = v->tok_head[c]; t >= 0; t = v->tok_next[t]) {
            mask[t >> 5] |= 1u << (t & 31);
            count++;
        }
        if (v->first_child[c] >= 0) {
            int r = walk(m, v, c, out, d + 1, mask);
            if (r < 0) return -1;
            count += r;
        }
    }
    return count;
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
    if (m->n_depth < v->max_len + 1) {
        struct gstacks *d = realloc(m->depth, sizeof *d * (size_t)(v->max_len + 1));
        if (!d) return -1;
        memset(d + m->n_depth, 0, sizeof *d * (size_t)(v->max_len + 1 - m->n_depth));
        m->depth = d;
        m->n_depth = v->max_len + 1;
    }
    memset(mask, 0, words * sizeof(uint32_t));
    int count = walk(m, v, 0, &m->cur, 0, mask);
    if (count < 0) return -1;
    if (grammar_matcher_accepting(m))
        for (int id = 0; id < v->n_vocab; id++)
            if (v->eog[id]) {
                mask[id >> 5] |= 1u << (id & 31);
                count++;
            }
    int slot = m->cache_next;
    if (!m->cache_mask[slot]) m->cache_mask[slot] = malloc(words * sizeof(uint32_t));
    if (m->cache_mask[slot]) { /* no room to cache is not an error */
        memcpy(m->cache_mask[slot], mask, words * sizeof(uint32_t));
        m->cache_key[slot] = key;
        m->cache_count[slot] = count;
        m->cache_next = (slot + 1) % GRAMMAR_MASK_CACHE;
    }
    return count;
}

int grammar_matcher_accept_token(struct grammar_matcher *m, const struct grammar_vocab *v, int id) {
    if (id < 0 || id >= v->n_vocab) return -1;
    if (v->eog[id]) return grammar_matcher_accepting(m) ? 0 : -1;
    if (v->len[id] == 0) return -1;
    return grammar_matcher_accept(m, v->bytes + v->off[id], v->len[id]);
}
