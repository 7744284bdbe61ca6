/* grammar_impl.h — the layout shared by grammar.c (building, matching) and grammar_mask.c (the
 * token trie walk). Not an API: nothing outside model/grammar*.c includes it.
 *
 * A finished grammar is one element array. Rule r's alternatives start at rule_off[r], each a
 * run of BYTES / REF elements ended by ALT (another alternative follows) or END (the rule's last).
 * Element 0 is a REF to the root and element 1 an END, so the start state is the stack {0}.
 */
#ifndef FG_GRAMMAR_IMPL_H
#define FG_GRAMMAR_IMPL_H

#include "grammar.h"

enum gelem_type {
    GELEM_END = 0, /* end of a rule's last alternative */
    GELEM_ALT,     /* end of an alternative, another follows */
    GELEM_BYTES,   /* one byte out of set */
    GELEM_REF,     /* rule ref */
};

struct gelem {
    uint8_t type;    /* enum gelem_type */
    int32_t ref;     /* REF: the rule id (building) or its first element (finished) */
    uint32_t set[8]; /* BYTES: bit b = byte b */
};

struct grule {
    struct gelem *el; /* (n, cap) this rule's alternatives, ALT between them */
    int n, cap;
};

struct grammar {
    struct grule *rules; /* (n_rules) while building */
    int n_rules, cap_rules;
    int n_total;      /* elements added so far (the GRAMMAR_MAX_ELEMS bound) */
    int utf8_rule;    /* grammar_rule_utf8's id + 1; 0 = not built yet */
    struct gelem *el; /* (n_el) once finished */
    int n_el;
    int finished;
    uint64_t fingerprint; /* hash of the finished element array (grammar_fingerprint) */
};

/* A set of stacks, flat: for each stack its length then its positions, bottom first. */
struct gstacks {
    int32_t *v; /* (n, cap) */
    size_t n, cap;
    int count;     /* stacks */
    int any_empty; /* an empty stack is in the set: accepting */
};

/* Per-matcher scratch of one advance: the expansion frames and a hash set of the stacks seen. */
struct gscratch {
    int32_t *tmp; /* (tmp_cap) recursion frames */
    size_t tmp_cap;
    uint64_t *seen_key; /* (GSEEN_SIZE) */
    uint32_t *seen_gen; /* (GSEEN_SIZE) */
    uint32_t gen;
    int n_seen;
    long work; /* expansions since the caller reset it (grammar_mask's budget) */
};
#define GSEEN_SIZE (1 << 14) /* > 2 * the stacks one step may visit (GSEEN_MAX) */
#define GSEEN_MAX 6000
/* Expansions one mask may spend: a normal walk spends ~1e4-1e5 (a few thousand transitions of a
 * few expansions each); a pathologically ambiguous grammar is cut off here (the request ends
 * with an error) instead of stalling the worker, which serves every other request too. */
#define GRAMMAR_MASK_WORK 4000000L

#define GRAMMAR_MASK_CACHE                                                                         \
    64 /* masks kept per matcher: JSON's states repeat (inside a string,                           \
          between values), so a few dozen cover a generation */

/* One interned stack set of the mask walk's memo: a lazily built DFA over the states it met. */
struct gdfa_state {
    struct gstacks s;
    uint64_t hash;
    uint32_t next_bytes[8]; /* bytes some top admits (others are dead without a lookup) */
    int16_t
        *next; /* (256) by byte: 0 = not computed yet, -1 = dead, else the state id + 1;
                  allocated at the state's first transition, kept across flushes. A table
                  of its own per state rather than one hash of (state, byte): a walk
                  inside a string moves among a few dozen states, whose tables stay in the
                  L1/L2 cache, where the hash's probes went all over 256 KB (bench/grammar.md) */
};

#define GDFA_MAX_STATES 2048 /* then the memo starts over (a flush is cheap to refill) */
#define GDFA_INDEX_SIZE 4096 /* hash -> state slots (power of 2), > 2 * GDFA_MAX_STATES */

struct grammar_matcher {
    const struct grammar *g;
    struct gstacks cur, nxt;
    struct gscratch sc;
    /* grammar_mask's memo: interned states and their transitions (gdfa_state.next); allocated
     * at the first mask */
    struct gdfa_state *dfa; /* (GDFA_MAX_STATES), n_dfa in use */
    int n_dfa;
    int32_t *index; /* (GDFA_INDEX_SIZE) state id + 1 by hash; 0 = empty */
    struct gstacks tmp;
    /* the mask cache */
    uint64_t cache_key[GRAMMAR_MASK_CACHE];
    uint32_t *cache_mask[GRAMMAR_MASK_CACHE]; /* (words) each, or NULL */
    int cache_count[GRAMMAR_MASK_CACHE];
    int cache_next;
    size_t cache_words;
    struct grammar_mask_cache *shared; /* masks of every matcher of equal grammars, or NULL */
    uint64_t share_id; /* this matcher's number in SHARED (from 1; 0 = none): the cache notes
                          whose walk stored a mask, so a row that copied it can advance along
                          that matcher's memo (grammar_accept_rows) */
};

/* OUT = the stacks of IN after byte B (OUT emptied first). 0, or -1 on a limit / memory. */
int gstacks_advance(const struct grammar *g, struct gscratch *sc, const struct gstacks *in,
                    unsigned b, struct gstacks *out);
/* The union of the byte sets at the tops of S. */
void gstacks_next_bytes(const struct grammar *g, const struct gstacks *s, uint32_t set[8]);
/* Order-independent 64-bit hash of the set (the mask cache key). */
uint64_t gstacks_hash(const struct gstacks *s);
/* D = a copy of S. 0 or -1 (out of memory). */
int gstacks_copy(struct gstacks *d, const struct gstacks *s);
void gstacks_free(struct gstacks *s);
/* Release M's mask memo (grammar_mask.c). */
void grammar_dfa_free(struct grammar_matcher *m);

#endif
