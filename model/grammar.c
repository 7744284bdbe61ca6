/* grammar.c — building a byte-level grammar and matching bytes against it (grammar.h).
 *
 * Building appends elements to per-rule vectors (the compilers create nested rules while a
 * parent is half-built); grammar_finish lays them out end to end (grammar_impl.h) and turns rule
 * ids into element offsets. Matching keeps a deduplicated set of stacks; see grammar.h for the
 * idea and the limits.
 */
#include "grammar_impl.h"

#include <stdlib.h>
#include <string.h>

/* ---- building ------------------------------------------------------------------------------- */

struct grammar *grammar_new(void) {
    return calloc(1, sizeof(struct grammar));
}

void grammar_free(struct grammar *g) {
    if (!g) return;
    for (int i = 0; i < g->n_rules; i++)
        free(g->rules[i].el);
    free(g->rules);
    free(g->el);
    free(g);
}

int grammar_rule(struct grammar *g) {
    if (g->finished) return -1;
    if (g->n_rules == g->cap_rules) {
        int cap = g->cap_rules ? g->cap_rules * 2 : 32;
        struct grule *r = realloc(g->rules, sizeof *r * (size_t)cap);
        if (!r) return -1;
        g->rules = r;
        g->cap_rules = cap;
    }
    if (g->n_total + 1 > GRAMMAR_MAX_ELEMS) return -1;
    g->n_total++; /* its END */
    memset(&g->rules[g->n_rules], 0, sizeof g->rules[0]);
    return g->n_rules++;
}

static int rule_push(struct grammar *g, int r, const struct gelem *e) {
    if (g->finished || r < 0 || r >= g->n_rules || g->n_total + 1 > GRAMMAR_MAX_ELEMS) return -1;
    struct grule *ru = &g->rules[r];
    if (ru->n == ru->cap) {
        int cap = ru->cap ? ru->cap * 2 : 8;
        struct gelem *el = realloc(ru->el, sizeof *el * (size_t)cap);
        if (!el) return -1;
        ru->el = el;
        ru->cap = cap;
    }
    ru->el[ru->n++] = *e;
    g->n_total++;
    return 0;
}

int grammar_add_set(struct grammar *g, int r, const uint32_t set[8]) {
    struct gelem e = {.type = GELEM_BYTES};
    memcpy(e.set, set, sizeof e.set);
    return rule_push(g, r, &e);
}

int grammar_add_range(struct grammar *g, int r, unsigned lo, unsigned hi) {
    struct gelem e = {.type = GELEM_BYTES};
    for (unsigned b = lo; b <= hi && b < 256; b++)
        e.set[b >> 5] |= 1u << (b & 31);
    return rule_push(g, r, &e);
}

int grammar_add_bytes(struct grammar *g, int r, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned b = (unsigned char)s[i];
        if (grammar_add_range(g, r, b, b)) return -1;
    }
    return 0;
}

int grammar_add_ref(struct grammar *g, int r, int ref) {
    struct gelem e = {.type = GELEM_REF, .ref = ref};
    return rule_push(g, r, &e);
}

int grammar_add_alt(struct grammar *g, int r) {
    struct gelem e = {.type = GELEM_ALT};
    return rule_push(g, r, &e);
}

int grammar_rule_utf8(struct grammar *g) {
    if (g->utf8_rule) return g->utf8_rule - 1;
    /* the well-formed sequences of Unicode 15 table 3-7 */
    static const unsigned char seq[][4][2] = {
        {{0xC2, 0xDF}, {0x80, 0xBF}},
        {{0xE0, 0xE0}, {0xA0, 0xBF}, {0x80, 0xBF}},
        {{0xE1, 0xEC}, {0x80, 0xBF}, {0x80, 0xBF}},
        {{0xED, 0xED}, {0x80, 0x9F}, {0x80, 0xBF}},
        {{0xEE, 0xEF}, {0x80, 0xBF}, {0x80, 0xBF}},
        {{0xF0, 0xF0}, {0x90, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}},
        {{0xF1, 0xF3}, {0x80, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}},
        {{0xF4, 0xF4}, {0x80, 0x8F}, {0x80, 0xBF}, {0x80, 0xBF}},
    };
    int r = grammar_rule(g);
    if (r < 0) return -1;
    for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
        if (i && grammar_add_alt(g, r)) return -1;
        for (int k = 0; k < 4 && seq[i][k][0]; k++)
            if (grammar_add_range(g, r, seq[i][k][0], seq[i][k][1])) return -1;
    }
    g->utf8_rule = r + 1;
    return r;
}

int grammar_finish(struct grammar *g, int root) {
    if (g->finished || root < 0 || root >= g->n_rules) return -1;
    int *off = malloc(sizeof(int) * (size_t)g->n_rules);
    size_t n = 2;
    for (int i = 0; off && i < g->n_rules; i++) {
        off[i] = (int)n;
        n += (size_t)g->rules[i].n + 1;
    }
    struct gelem *el = off ? calloc(n, sizeof *el) : NULL;
    if (!el) {
        free(off);
        return -1;
    }
    el[0] = (struct gelem){.type = GELEM_REF, .ref = off[root]};
    el[1].type = GELEM_END;
    for (int i = 0; i < g->n_rules; i++) {
        struct grule *ru = &g->rules[i];
        struct gelem *d = el + off[i];
        for (int k = 0; k < ru->n; k++) {
            d[k] = ru->el[k];
            if (d[k].type != GELEM_REF) continue;
            if (d[k].ref < 0 || d[k].ref >= g->n_rules) {
                free(off);
                free(el);
                return -1;
            }
            d[k].ref = off[d[k].ref];
        }
        d[ru->n].type = GELEM_END;
        free(ru->el);
        ru->el = NULL;
    }
    free(off);
    free(g->rules);
    g->rules = NULL;
    g->n_rules = g->cap_rules = 0;
    g->el = el;
    g->n_el = (int)n;
    g->finished = 1;
    uint64_t h = 0xCBF29CE484222325ull ^ (uint64_t)n; /* field by field: no padding bytes */
    for (size_t i = 0; i < n; i++) {
        uint64_t v = (uint64_t)el[i].type << 32 ^ (uint32_t)el[i].ref;
        for (int k = 0; k < 8; k++)
            v = (v ^ el[i].set[k]) * 0x100000001B3ull;
        h = (h ^ v) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
    }
    g->fingerprint = h;
    return 0;
}

uint64_t grammar_fingerprint(const struct grammar *g) {
    return g->fingerprint;
}

int grammar_n_elems(const struct grammar *g) {
    return g->n_el;
}

/* ---- stack sets ----------------------------------------------------------------------------- */

static int is_end(const struct gelem *e) {
    return e->type == GELEM_END || e->type == GELEM_ALT;
}

static uint64_t stack_hash(const int32_t *s, int len) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)len;
    for (int i = 0; i < len; i++) {
        h ^= (uint64_t)(uint32_t)s[i];
        h *= 0xBF58476D1CE4E5B9ull;
        h ^= h >> 29;
    }
    return h * 0x94D049BB133111EBull;
}

void gstacks_free(struct gstacks *s) {
    free(s->v);
    memset(s, 0, sizeof *s);
}

static void gstacks_clear(struct gstacks *s) {
    s->n = 0;
    s->count = 0;
    s->any_empty = 0;
}

static int gstacks_reserve(struct gstacks *s, size_t extra) {
    if (s->n + extra <= s->cap) return 0;
    size_t cap = s->cap ? s->cap * 2 : 64;
    while (cap < s->n + extra)
        cap *= 2;
    int32_t *v = realloc(s->v, sizeof *v * cap);
    if (!v) return -1;
    s->v = v;
    s->cap = cap;
    return 0;
}

int gstacks_copy(struct gstacks *d, const struct gstacks *s) {
    gstacks_clear(d);
    if (gstacks_reserve(d, s->n)) return -1;
    if (s->n) memcpy(d->v, s->v, sizeof(int32_t) * s->n);
    d->n = s->n;
    d->count = s->count;
    d->any_empty = s->any_empty;
    return 0;
}

/* 1 when KEY was not yet in the current generation's seen set (and adds it); 0 when it was; -1
 * when the step has seen too many. */
static int seen_once(struct gscratch *sc, uint64_t key) {
    size_t i = (size_t)key & (GSEEN_SIZE - 1);
    while (sc->seen_gen[i] == sc->gen) {
        if (sc->seen_key[i] == key) return 0;
        i = (i + 1) & (GSEEN_SIZE - 1);
    }
    if (++sc->n_seen > GSEEN_MAX) return -1;
    sc->seen_gen[i] = sc->gen;
    sc->seen_key[i] = key;
    return 1;
}

static void seen_reset(struct gscratch *sc) {
    if (++sc->gen == 0) { /* wrapped: clear so no stale entry reads as current */
        memset(sc->seen_gen, 0, sizeof(uint32_t) * GSEEN_SIZE);
        sc->gen = 1;
    }
    sc->n_seen = 0;
}

static int scratch_init(struct gscratch *sc) {
    memset(sc, 0, sizeof *sc);
    sc->seen_key = malloc(sizeof(uint64_t) * GSEEN_SIZE);
    sc->seen_gen = calloc(GSEEN_SIZE, sizeof(uint32_t));
    return sc->seen_key && sc->seen_gen ? 0 : -1;
}

static void scratch_free(struct gscratch *sc) {
    free(sc->tmp);
    free(sc->seen_key);
    free(sc->seen_gen);
    memset(sc, 0, sizeof *sc);
}

static int tmp_reserve(struct gscratch *sc, size_t n) {
    if (n <= sc->tmp_cap) return 0;
    size_t cap = sc->tmp_cap ? sc->tmp_cap * 2 : 1024;
    while (cap < n)
        cap *= 2;
    int32_t *t = realloc(sc->tmp, sizeof *t * cap);
    if (!t) return -1;
    sc->tmp = t;
    sc->tmp_cap = cap;
    return 0;
}

/* Put the stack tmp[base .. base+len) into OUT, expanded until every top is a byte set: a REF
 * on top is replaced by each alternative of its rule (over what follows the REF). Each distinct
 * stack is handled once per step (the seen set): complete stacks are not added twice and
 * nullable loops end. */
static int expand(const struct grammar *g, struct gscratch *sc, size_t base, int len,
                  struct gstacks *out) {
    const int32_t *s = sc->tmp + base;
    int r = seen_once(sc, stack_hash(s, len));
    if (r <= 0) return r;
    sc->work++;
    if (len == 0 || g->el[s[len - 1]].type == GELEM_BYTES) {
        if (out->count >= GRAMMAR_MAX_STACKS || gstacks_reserve(out, (size_t)len + 1)) return -1;
        out->v[out->n++] = len;
        memcpy(out->v + out->n, s, sizeof(int32_t) * (size_t)len);
        out->n += (size_t)len;
        out->count++;
        if (len == 0) out->any_empty = 1;
        return 0;
    }
    int pos = s[len - 1];
    size_t nb = base + (size_t)len;
    if (len + 1 > GRAMMAR_MAX_DEPTH || tmp_reserve(sc, nb + (size_t)len + 1)) return -1;
    int32_t *t = sc->tmp + nb;
    memcpy(t, sc->tmp + base, sizeof(int32_t) * (size_t)(len - 1));
    int tl = len - 1;
    if (!is_end(&g->el[pos + 1])) t[tl++] = pos + 1;
    for (int a = g->el[pos].ref;;) {
        int l = tl;
        if (!is_end(&g->el[a])) sc->tmp[nb + (size_t)l++] = a;
        if (expand(g, sc, nb, l, out)) return -1;
        while (!is_end(&g->el[a]))
            a++;
        if (g->el[a].type == GELEM_END) break;
        a++;
    }
    return 0;
}

int gstacks_advance(const struct grammar *g, struct gscratch *sc, const struct gstacks *in,
                    unsigned b, struct gstacks *out) {
    gstacks_clear(out);
    seen_reset(sc);
    for (size_t i = 0; i < in->n;) {
        int len = in->v[i];
        const int32_t *s = in->v + i + 1;
        i += (size_t)len + 1;
        if (len == 0) continue;
        int top = s[len - 1];
        const struct gelem *e = &g->el[top];
        if (!(e->set[b >> 5] >> (b & 31) & 1)) continue;
        if (tmp_reserve(sc, (size_t)len + 1)) return -1;
        memcpy(sc->tmp, s, sizeof(int32_t) * (size_t)(len - 1));
        int tl = len - 1;
        if (!is_end(&g->el[top + 1])) sc->tmp[tl++] = top + 1;
        if (expand(g, sc, 0, tl, out)) return -1;
    }
    return 0;
}

void gstacks_next_bytes(const struct grammar *g, const struct gstacks *s, uint32_t set[8]) {
    memset(set, 0, sizeof(uint32_t) * 8);
    for (size_t i = 0; i < s->n;) {
        int len = s->v[i];
        if (len) {
            const uint32_t *es = g->el[s->v[i + (size_t)len]].set;
            for (int k = 0; k < 8; k++)
                set[k] |= es[k];
        }
        i += (size_t)len + 1;
    }
}

uint64_t gstacks_hash(const struct gstacks *s) {
    uint64_t h = 0;
    for (size_t i = 0; i < s->n;) {
        int len = s->v[i];
        h ^= stack_hash(s->v + i + 1, len); /* the stacks are distinct: xor is order-free */
        i += (size_t)len + 1;
    }
    return h ^ (uint64_t)s->count;
}

/* ---- the matcher ---------------------------------------------------------------------------- */

struct grammar_matcher *grammar_matcher_new(const struct grammar *g) {
    if (!g || !g->finished) return NULL;
    struct grammar_matcher *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->g = g;
    if (scratch_init(&m->sc) || tmp_reserve(&m->sc, 1024)) goto fail;
    seen_reset(&m->sc);
    m->sc.tmp[0] = 0; /* the REF to the root */
    if (expand(g, &m->sc, 0, 1, &m->cur)) goto fail;
    return m;
fail:
    grammar_matcher_free(m);
    return NULL;
}

void grammar_matcher_free(struct grammar_matcher *m) {
    if (!m) return;
    gstacks_free(&m->cur);
    gstacks_free(&m->nxt);
    grammar_dfa_free(m);
    for (int i = 0; i < GRAMMAR_MASK_CACHE; i++)
        free(m->cache_mask[i]);
    scratch_free(&m->sc);
    free(m);
}

int grammar_matcher_accept(struct grammar_matcher *m, const void *bytes, size_t n) {
    const unsigned char *p = bytes;
    if (n == 0) return 0;
    if (gstacks_advance(m->g, &m->sc, &m->cur, p[0], &m->nxt) || m->nxt.count == 0) return -1;
    for (size_t i = 1; i < n; i++) {
        /* cur keeps the state before the call until every byte has passed */
        struct gstacks t = {0};
        if (gstacks_advance(m->g, &m->sc, &m->nxt, p[i], &t) || t.count == 0) {
            gstacks_free(&t);
            return -1;
        }
        gstacks_free(&m->nxt);
        m->nxt = t;
    }
    struct gstacks t = m->cur;
    m->cur = m->nxt;
    m->nxt = t;
    return 0;
}

int grammar_matcher_copy_state(struct grammar_matcher *dst, const struct grammar_matcher *src) {
    if (dst->g != src->g) return -1;
    return gstacks_copy(&dst->cur, &src->cur);
}

int grammar_matcher_accepting(const struct grammar_matcher *m) {
    return m->cur.any_empty;
}

int grammar_matcher_finished(const struct grammar_matcher *m) {
    return m->cur.any_empty && m->cur.count == 1;
}
