/* jinja_eval.c — renders a parsed Jinja template (jinja_int.h's AST) against JSON variables.
 *
 * Values follow Python: ints, floats, str (UTF-8, indexed and measured in code points), lists,
 * ordered dicts, None, and Jinja's Undefined (prints as "", is false, iterates empty; its
 * attributes are an error); jinja_value.c holds their printing, JSON and comparisons. This file
 * is statements, expressions, the filters, tests, string/dict methods and globals. Scopes: a for
 * loop and a
 * macro call open one; {% set %} writes the innermost, so a set inside a loop does not leak out
 * (hence namespace()). A render error (the template's, or a limit) longjmps back to jinja_render
 * with the message; every allocation is in the render's arena, freed there.
 */
#include "model/jinja.h"
#include "model/jinja_int.h"
#include "model/unicode.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define JINJA_MAX_OUTPUT (16u << 20)
#define JINJA_MAX_STEPS 1000000L
#define JINJA_MAX_MEMORY (256u << 20)
#define JINJA_MAX_CALL_DEPTH 64 /* macro recursion */

static void step(struct ev *E, int line) {
    if (++E->steps > E->max_steps)
        jinja_fail(E, line, "the template ran more than %ld loop iterations", E->max_steps);
}

/* ---- scopes ---- */

static struct jv *scope_find(struct scope *s, const char *name) {
    for (; s; s = s->parent)
        for (int i = s->n - 1; i >= 0; i--)
            if (!strcmp(s->names[i], name)) return &s->vals[i];
    return NULL;
}

static void scope_set(struct ev *E, struct scope *s, const char *name, struct jv v) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) {
            s->vals[i] = v;
            return;
        }
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 8;
        const char **nn = jarena_alloc(&E->a, (size_t)cap * sizeof(*nn));
        struct jv *nv = jarena_alloc(&E->a, (size_t)cap * sizeof(*nv));
        if (s->n) {
            memcpy(nn, s->names, (size_t)s->n * sizeof(*nn));
            memcpy(nv, s->vals, (size_t)s->n * sizeof(*nv));
        }
        s->names = nn;
        s->vals = nv;
        s->cap = cap;
    }
    s->names[s->n] = name;
    s->vals[s->n++] = v;
}

static struct scope *scope_new(struct ev *E, struct scope *parent) {
    struct scope *s = jarena_alloc(&E->a, sizeof(*s));
    s->parent = parent;
    return s;
}

/* ---- expressions ---- */

struct args {
    struct jv *v;
    const char **kw;
    int n;
    int line;
};

static struct jv eval(struct ev *E, struct scope *S, const struct jexpr *x);

/* The name an undefined value goes by in "'x' is undefined". */
static const char *undef_name(const struct jv *v) {
    return v->undef_name ? v->undef_name : "value";
}
static int exec_body(struct ev *E, struct scope *S, const struct jbody *b, struct buf *out);

static void eval_args(struct ev *E, struct scope *S, const struct jexpr *x, int skip,
                      struct args *A) {
    A->n = x->nargs;
    A->v = jarena_alloc(&E->a, (size_t)(A->n + skip + 1) * sizeof(*A->v));
    A->kw = jarena_alloc(&E->a, (size_t)(A->n + skip + 1) * sizeof(*A->kw));
    for (int i = 0; i < x->nargs; i++) {
        A->v[i + skip] = eval(E, S, x->args[i]);
        A->kw[i + skip] = x->kw ? x->kw[i] : NULL;
    }
    A->n += skip;
    A->line = x->line;
}

/* Argument I (positional) or named NAME, or NULL. */
static const struct jv *arg(const struct args *A, int i, const char *name) {
    int pos = 0;
    for (int k = 0; k < A->n; k++) {
        if (A->kw[k]) {
            if (name && !strcmp(A->kw[k], name)) return &A->v[k];
        } else if (pos++ == i) {
            return &A->v[k];
        }
    }
    return NULL;
}

static struct jv need_str(struct ev *E, const struct jv *v, int line, const char *what) {
    if (!v || v->t != JV_STR)
        jinja_fail(E, line, "%s expects a string, got %s", what, v ? jv_type_name(v) : "nothing");
    return *v;
}
static long long need_int(struct ev *E, const struct jv *v, int line, const char *what) {
    if (!v || (v->t != JV_INT && v->t != JV_BOOL))
        jinja_fail(E, line, "%s expects an integer, got %s", what, v ? jv_type_name(v) : "nothing");
    return v->i;
}

static int is_ws(unsigned char c) {
    return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f);
}

/* str.strip/lstrip/rstrip with CHARS (NULL: whitespace). WHICH: 1 left, 2 right, 3 both. */
static struct jv strip(struct jv s, const struct jv *chars, int which) {
    const char *p = s.s.p;
    size_t n = s.s.n;
    int ws = !chars || chars->t == JV_NONE;
    /* CHARS holds code points; the strip tests whole UTF-8 sequences. */
#define STRIP_HIT(c)                                                                               \
    (ws ? is_ws((unsigned char)(c)) : (memchr(chars->s.p, (c), chars->s.n) != NULL))
    if (which & 1)
        while (n && STRIP_HIT(*p) && ((unsigned char)*p < 0x80 || !ws)) {
            p++;
            n--;
        }
    if (which & 2)
        while (n && STRIP_HIT(p[n - 1]) && ((unsigned char)p[n - 1] < 0x80 || !ws))
            n--;
#undef STRIP_HIT
    return v_str(p, n);
}

static struct jv str_case(struct ev *E, struct jv s, int mode) {
    /* mode: 'u' upper, 'l' lower, 'c' capitalize, 't' Python title, 'j' Jinja title */
    char *o = jarena_alloc(&E->a, s.s.n + 1);
    int start = 1;
    for (size_t i = 0; i < s.s.n; i++) {
        char c = s.s.p[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        int up;
        switch (mode) {
        case 'u':
            up = 1;
            break;
        case 'l':
            up = 0;
            break;
        case 'c':
            up = i == 0;
            break;
        case 't':
            up = start;
            start = !alpha && !((unsigned char)c >= 0x80);
            break;
        default:
            up = start;
            start = c == '-' || is_ws((unsigned char)c) || strchr("([{<", c);
            break;
        }
        if (up && c >= 'a' && c <= 'z')
            c = (char)(c - 32);
        else if (!up && c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        o[i] = c;
    }
    return v_str(o, s.s.n);
}

static struct jv str_replace(struct ev *E, struct jv s, struct jv from, struct jv to,
                             long long count) {
    struct buf b = {0};
    jv_buf_add(E, &b, "", 0);
    size_t i = 0;
    long long done = 0;
    if (from.s.n == 0) { /* Python inserts TO between every code point */
        struct jv l = jv_as_list(E, &s, 0);
        for (size_t k = 0; k <= l.l->n; k++) {
            if (count < 0 || done < count) {
                jv_buf_add(E, &b, to.s.p, to.s.n);
                done++;
            }
            if (k < l.l->n) jv_buf_add(E, &b, l.l->v[k].s.p, l.l->v[k].s.n);
        }
        return v_buf(&b);
    }
    while (i < s.s.n) {
        const char *hit =
            (count < 0 || done < count) ? memmem(s.s.p + i, s.s.n - i, from.s.p, from.s.n) : NULL;
        if (!hit) break;
        jv_buf_add(E, &b, s.s.p + i, (size_t)(hit - s.s.p) - i);
        jv_buf_add(E, &b, to.s.p, to.s.n);
        i = (size_t)(hit - s.s.p) + from.s.n;
        done++;
    }
    jv_buf_add(E, &b, s.s.p + i, s.s.n - i);
    return v_buf(&b);
}

static struct jv str_split(struct ev *E, struct jv s, const struct jv *sep, long long maxsplit,
                           int line) {
    struct jv out = v_list(E, s.s.n + 1);
    size_t n = 0, i = 0;
    if (!sep || sep->t == JV_NONE) {
        for (;;) {
            while (i < s.s.n && is_ws((unsigned char)s.s.p[i]))
                i++;
            if (i >= s.s.n) break;
            size_t k = i;
            if (maxsplit >= 0 && (long long)n >= maxsplit) {
                size_t e = s.s.n;
                while (e > k && is_ws((unsigned char)s.s.p[e - 1]))
                    e--;
                out.l->v[n++] = v_str(s.s.p + k, e - k);
                break;
            }
            while (k < s.s.n && !is_ws((unsigned char)s.s.p[k]))
                k++;
            out.l->v[n++] = v_str(s.s.p + i, k - i);
            i = k;
        }
    } else {
        struct jv d = need_str(E, sep, line, "split");
        if (!d.s.n) jinja_fail(E, line, "split: empty separator");
        for (;;) {
            const char *hit = (maxsplit < 0 || (long long)n < maxsplit) && i <= s.s.n
                                  ? memmem(s.s.p + i, s.s.n - i, d.s.p, d.s.n)
                                  : NULL;
            if (!hit) {
                out.l->v[n++] = v_str(s.s.p + i, s.s.n - i);
                break;
            }
            out.l->v[n++] = v_str(s.s.p + i, (size_t)(hit - s.s.p) - i);
            i = (size_t)(hit - s.s.p) + d.s.n;
        }
    }
    out.l->n = n;
    return out;
}

static int starts_ends(struct ev *E, struct jv s, const struct jv *p, int end, int line) {
    if (p && p->t == JV_LIST) { /* a tuple of prefixes */
        for (size_t i = 0; i < p->l->n; i++)
            if (starts_ends(E, s, &p->l->v[i], end, line)) return 1;
        return 0;
    }
    struct jv x = need_str(E, p, line, end ? "endswith" : "startswith");
    if (x.s.n > s.s.n) return 0;
    return !memcmp(s.s.p + (end ? s.s.n - x.s.n : 0), x.s.p, x.s.n);
}

static struct jv join(struct ev *E, const struct jv *seq, struct jv sep, int line) {
    struct jv l = jv_as_list(E, seq, line);
    struct buf b = {0};
    jv_buf_add(E, &b, "", 0);
    for (size_t i = 0; i < l.l->n; i++) {
        if (i) jv_buf_add(E, &b, sep.s.p, sep.s.n);
        jv_to_str(E, &b, &l.l->v[i], 0);
    }
    return v_buf(&b);
}

static struct jv call_method(struct ev *E, const struct jv_method *m, const struct args *A) {
    const struct jv *self = &m->self;
    const char *nm = m->name;
    int line = A->line;
    if (self->t == JV_STR) {
        struct jv s = *self;
        if (!strcmp(nm, "strip")) return strip(s, arg(A, 0, "chars"), 3);
        if (!strcmp(nm, "lstrip")) return strip(s, arg(A, 0, "chars"), 1);
        if (!strcmp(nm, "rstrip")) return strip(s, arg(A, 0, "chars"), 2);
        if (!strcmp(nm, "upper")) return str_case(E, s, 'u');
        if (!strcmp(nm, "lower")) return str_case(E, s, 'l');
        if (!strcmp(nm, "title")) return str_case(E, s, 't');
        if (!strcmp(nm, "capitalize")) return str_case(E, str_case(E, s, 'l'), 'c');
        if (!strcmp(nm, "startswith")) return v_bool(starts_ends(E, s, arg(A, 0, NULL), 0, line));
        if (!strcmp(nm, "endswith")) return v_bool(starts_ends(E, s, arg(A, 0, NULL), 1, line));
        if (!strcmp(nm, "split")) {
            const struct jv *mx = arg(A, 1, "maxsplit");
            return str_split(E, s, arg(A, 0, "sep"), mx ? need_int(E, mx, line, "split") : -1,
                             line);
        }
        if (!strcmp(nm, "replace")) {
            const struct jv *c = arg(A, 2, "count");
            return str_replace(E, s, need_str(E, arg(A, 0, NULL), line, "replace"),
                               need_str(E, arg(A, 1, NULL), line, "replace"),
                               c ? need_int(E, c, line, "replace") : -1);
        }
        if (!strcmp(nm, "join"))
            return join(E, arg(A, 0, NULL) ? arg(A, 0, NULL) : &(struct jv){0}, s, line);
        if (!strcmp(nm, "find") || !strcmp(nm, "count")) {
            struct jv x = need_str(E, arg(A, 0, NULL), line, nm);
            if (nm[0] == 'f') {
                const char *h = x.s.n <= s.s.n ? memmem(s.s.p, s.s.n, x.s.p, x.s.n) : NULL;
                return v_int(h ? (long long)jv_u8_len(s.s.p, (size_t)(h - s.s.p)) : -1);
            }
            long long c = 0;
            if (!x.s.n) return v_int((long long)jv_u8_len(s.s.p, s.s.n) + 1);
            for (const char *h = s.s.p; (h = memmem(h, s.s.n - (size_t)(h - s.s.p), x.s.p, x.s.n));
                 h += x.s.n)
                c++;
            return v_int(c);
        }
    } else if (self->t == JV_DICT) {
        const struct jv_dict *d = self->d;
        if (!strcmp(nm, "items") || !strcmp(nm, "keys") || !strcmp(nm, "values")) {
            struct jv l = v_list(E, d->n);
            for (size_t i = 0; i < d->n; i++) {
                if (nm[0] == 'k')
                    l.l->v[i] = d->k[i];
                else if (nm[0] == 'v')
                    l.l->v[i] = d->v[i];
                else {
                    struct jv p = v_list(E, 2);
                    p.l->tuple = 1;
                    p.l->v[0] = d->k[i];
                    p.l->v[1] = d->v[i];
                    l.l->v[i] = p;
                }
            }
            return l;
        }
        if (!strcmp(nm, "get")) {
            const struct jv *k = arg(A, 0, NULL), *dflt = arg(A, 1, "default");
            struct jv *v = k ? jv_dict_find(d, k) : NULL;
            return v ? *v : dflt ? *dflt : v_none();
        }
    }
    if (self->t == JV_INT && !strcmp(nm, "cycle")) { /* loop.cycle, bound to loop.index0 */
        int n = 0;
        for (int k = 0; k < A->n; k++)
            n += !A->kw[k];
        if (!n) jinja_fail(E, line, "no items for cycling given");
        for (int k = 0, pos = 0; k < A->n; k++)
            if (!A->kw[k] && pos++ == self->i % n) return A->v[k];
    }
    jinja_fail(E, line, "'%s' object has no attribute '%s'", jv_type_name(self), nm);
}

static const char *const STR_METHODS[] = {
    "strip",    "lstrip", "rstrip",  "upper", "lower", "title", "capitalize", "startswith",
    "endswith", "split",  "replace", "join",  "find",  "count", NULL};
static const char *const DICT_METHODS[] = {"items", "keys", "values", "get", NULL};

static int in_list(const char *const *l, const char *s) {
    for (; *l; l++)
        if (!strcmp(*l, s)) return 1;
    return 0;
}

static struct jv bind(struct ev *E, struct jv self, const char *name) {
    struct jv_method *m = jarena_alloc(&E->a, sizeof(*m));
    m->self = self;
    m->name = name;
    return (struct jv){.t = JV_METHOD, .m = m};
}

/* obj.name (attribute first, then item, as Jinja's getattr does) */
static struct jv get_attr(struct ev *E, struct jv obj, const char *name, int line) {
    if (obj.t == JV_UNDEF) jinja_fail(E, line, "'%s' is undefined", undef_name(&obj));
    if (obj.t == JV_STR && in_list(STR_METHODS, name)) return bind(E, obj, name);
    if (obj.t == JV_DICT) {
        if (!obj.d->ns && in_list(DICT_METHODS, name)) return bind(E, obj, name);
        struct jv *v = jv_dict_get(obj.d, name);
        if (v) return *v;
    }
    return v_undef(name);
}

static long long norm_index(long long i, long long n) {
    return i < 0 ? i + n : i;
}

/* obj[key] (item first, then attribute) */
static struct jv get_item(struct ev *E, struct jv obj, struct jv key, int line) {
    if (obj.t == JV_UNDEF) jinja_fail(E, line, "'%s' is undefined", undef_name(&obj));
    if (obj.t == JV_DICT) {
        struct jv *v = jv_dict_find(obj.d, &key);
        if (v) return *v;
        if (key.t == JV_STR) {
            char *nm = jarena_strndup(&E->a, key.s.p, key.s.n);
            if (!obj.d->ns && in_list(DICT_METHODS, nm)) return bind(E, obj, nm);
            return v_undef(nm);
        }
        return v_undef(NULL);
    }
    if ((obj.t == JV_LIST || obj.t == JV_STR) && (key.t == JV_INT || key.t == JV_BOOL)) {
        long long n = jv_length(E, &obj, line), i = norm_index(key.i, n);
        if (i < 0 || i >= n) return v_undef("index");
        if (obj.t == JV_LIST) return obj.l->v[i];
        size_t a = jv_u8_off(obj.s.p, obj.s.n, (size_t)i),
               b = jv_u8_off(obj.s.p, obj.s.n, (size_t)i + 1);
        return v_str(obj.s.p + a, b - a);
    }
    if (key.t == JV_STR) {
        char *nm = jarena_strndup(&E->a, key.s.p, key.s.n);
        return get_attr(E, obj, nm, line);
    }
    return v_undef(NULL);
}

static struct jv slice(struct ev *E, struct jv obj, const struct jv *a, const struct jv *b,
                       const struct jv *c, int line) {
    long long step = c && c->t != JV_NONE ? need_int(E, c, line, "slice step") : 1;
    if (step == 0) jinja_fail(E, line, "slice step cannot be zero");
    if (obj.t == JV_UNDEF) jinja_fail(E, line, "'%s' is undefined", undef_name(&obj));
    struct jv l = obj.t == JV_STR ? jv_as_list(E, &obj, line) : obj;
    if (l.t != JV_LIST) jinja_fail(E, line, "'%s' object is not subscriptable", jv_type_name(&obj));
    long long n = (long long)l.l->n, lo, hi;
    /* Python's slice.indices */
    if (step > 0) {
        lo = a && a->t != JV_NONE ? need_int(E, a, line, "slice") : 0;
        hi = b && b->t != JV_NONE ? need_int(E, b, line, "slice") : n;
        lo = lo < 0 ? (lo + n < 0 ? 0 : lo + n) : (lo > n ? n : lo);
        hi = hi < 0 ? (hi + n < 0 ? 0 : hi + n) : (hi > n ? n : hi);
    } else {
        lo = a && a->t != JV_NONE ? need_int(E, a, line, "slice") : n - 1;
        hi = b && b->t != JV_NONE ? need_int(E, b, line, "slice") : -n - 1;
        lo = lo < 0 ? (lo + n < 0 ? -1 : lo + n) : (lo >= n ? n - 1 : lo);
        hi = hi < 0 ? (hi + n < 0 ? -1 : hi + n) : (hi >= n ? n - 1 : hi);
    }
    struct jv out = v_list(E, (size_t)n);
    size_t k = 0;
    for (long long i = lo; step > 0 ? i < hi : i > hi; i += step)
        out.l->v[k++] = l.l->v[i];
    out.l->n = k;
    if (obj.t != JV_STR) return out;
    struct buf s = {0};
    jv_buf_add(E, &s, "", 0);
    for (size_t i = 0; i < k; i++)
        jv_buf_add(E, &s, out.l->v[i].s.p, out.l->v[i].s.n);
    return v_buf(&s);
}

static struct jv call_macro(struct ev *E, const struct jnode *m, const struct args *A) {
    if (E->depth >= JINJA_MAX_CALL_DEPTH)
        jinja_fail(E, A->line, "macro '%s' nested more than %d calls deep", m->target,
                   JINJA_MAX_CALL_DEPTH);
    step(E, A->line);
    struct scope *S = scope_new(E, E->globals);
    int pos = 0;
    for (int i = 0; i < A->n; i++) {
        if (A->kw[i]) continue;
        if (pos >= m->ntargets)
            jinja_fail(E, A->line, "macro '%s' takes not more than %d argument(s)", m->target,
                       m->ntargets);
        scope_set(E, S, m->targets[pos++], A->v[i]);
    }
    for (int k = pos; k < m->ntargets; k++) {
        const struct jv *v = arg(A, -1, m->targets[k]);
        if (v)
            scope_set(E, S, m->targets[k], *v);
        else if (m->defaults[k])
            scope_set(E, S, m->targets[k], eval(E, S, m->defaults[k]));
        else
            scope_set(E, S, m->targets[k], v_undef(m->targets[k]));
    }
    struct buf out = {0};
    jv_buf_add(E, &out, "", 0);
    E->depth++;
    exec_body(E, S, &m->body, &out);
    E->depth--;
    return v_buf(&out);
}

static struct jv call_func(struct ev *E, const char *fn, const struct args *A) {
    int line = A->line;
    if (!strcmp(fn, "raise_exception")) {
        const struct jv *m = arg(A, 0, "message");
        struct jv s = m ? jv_str_of(E, m) : v_cstr("");
        snprintf(E->err, E->errlen, "%.*s", (int)s.s.n, s.s.p);
        longjmp(E->fail, 3);
    }
    if (!strcmp(fn, "range")) {
        long long a = 0, b, c = 1;
        const struct jv *x = arg(A, 0, NULL), *y = arg(A, 1, NULL), *z = arg(A, 2, NULL);
        if (!x) jinja_fail(E, line, "range expected at least 1 argument");
        if (y) {
            a = need_int(E, x, line, "range");
            b = need_int(E, y, line, "range");
        } else {
            b = need_int(E, x, line, "range");
        }
        if (z) c = need_int(E, z, line, "range");
        if (c == 0) jinja_fail(E, line, "range() arg 3 must not be zero");
        /* in floating point: b - a may not fit a long long */
        double span = c > 0 ? (double)b - (double)a : (double)a - (double)b;
        double cnt = span > 0 ? ceil(span / fabs((double)c)) : 0;
        if (cnt > 100000)
            jinja_fail(E, line, "range of %.0f items is over the limit of 100000", cnt);
        long long n = (long long)cnt;
        struct jv l = v_list(E, (size_t)n);
        for (long long i = 0; i < n; i++)
            l.l->v[i] = v_int(a + i * c);
        return l;
    }
    if (!strcmp(fn, "namespace") || !strcmp(fn, "dict")) {
        struct jv d = v_dict(E);
        d.d->ns = fn[0] == 'n';
        const struct jv *init = arg(A, 0, NULL);
        if (init && init->t == JV_DICT)
            for (size_t i = 0; i < init->d->n; i++)
                jv_dict_set(E, d.d, init->d->k[i], init->d->v[i]);
        for (int i = 0; i < A->n; i++)
            if (A->kw[i]) jv_dict_set(E, d.d, v_cstr(A->kw[i]), A->v[i]);
        return d;
    }
    if (!strcmp(fn, "strftime_now")) {
        struct jv f = need_str(E, arg(A, 0, NULL), line, "strftime_now");
        char *fmt = jarena_strndup(&E->a, f.s.p, f.s.n), out[256];
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        size_t n = strftime(out, sizeof out, fmt, &tm);
        return v_str(jarena_strndup(&E->a, out, n), n);
    }
    jinja_fail(E, line, "'%s' is not callable", fn);
}

static struct jv call(struct ev *E, struct jv f, const struct args *A) {
    switch (f.t) {
    case JV_FUNC:
        return call_func(E, f.fn, A);
    case JV_METHOD:
        return call_method(E, f.m, A);
    case JV_MACRO:
        return call_macro(E, f.mac, A);
    case JV_UNDEF:
        jinja_fail(E, A->line, "'%s' is undefined", undef_name(&f));
    default:
        jinja_fail(E, A->line, "'%s' object is not callable", jv_type_name(&f));
    }
}

static int test(struct ev *E, const char *name, const struct jv *v, const struct args *A);

/* A test or filter named by string (select('equalto', x), map('upper')). */
static struct jv filter(struct ev *E, const char *name, struct jv v, const struct args *A);

static struct jv attr_path(struct ev *E, struct jv v, struct jv path, int line) {
    /* map(attribute='a.b') walks dots; an int segment is an index */
    struct jv p = need_str(E, &path, line, "attribute");
    size_t i = 0;
    while (i <= p.s.n) {
        size_t k = i;
        while (k < p.s.n && p.s.p[k] != '.')
            k++;
        char *seg = jarena_strndup(&E->a, p.s.p + i, k - i);
        char *end;
        long long idx = strtoll(seg, &end, 10);
        if (v.t == JV_UNDEF) return v;
        v = *seg && !*end ? get_item(E, v, v_int(idx), line) : get_item(E, v, v_cstr(seg), line);
        i = k + 1;
    }
    return v;
}

static struct jv select_items(struct ev *E, struct jv seq, const struct args *A, int attr,
                              int keep) {
    /* jinja2 yields nothing for a falsy sequence (none, '', 0, undefined) before it looks at the
     * arguments: messages[i].tool_calls | selectattr(...) works on a null tool_calls. */
    if (!jv_truthy(&seq)) return v_list(E, 0);
    if (attr && !arg(A, 0, NULL))
        jinja_fail(E, A->line, "selectattr/rejectattr need an attribute name");
    struct jv l = jv_as_list(E, &seq, A->line);
    struct jv out = v_list(E, l.l->n);
    size_t n = 0;
    int first = attr ? 1 : 0;
    const struct jv *tn = arg(A, first, NULL);
    struct args TA = {.v = A->v, .kw = A->kw, .n = 0, .line = A->line};
    /* Arguments after the test's name go to the test. */
    int pos = 0, start = -1;
    for (int k = 0; k < A->n; k++)
        if (!A->kw[k] && pos++ == first + 1) {
            start = k;
            break;
        }
    if (start >= 0) {
        TA.v = A->v + start;
        TA.kw = A->kw + start;
        TA.n = A->n - start;
    }
    const char *tname = NULL;
    if (tn) {
        struct jv s = need_str(E, tn, A->line, "select");
        tname = jarena_strndup(&E->a, s.s.p, s.s.n);
    }
    for (size_t i = 0; i < l.l->n; i++) {
        struct jv x = l.l->v[i];
        if (attr) x = attr_path(E, x, *arg(A, 0, NULL), A->line);
        int ok = tname ? test(E, tname, &x, &TA) : jv_truthy(&x);
        if (ok == keep) out.l->v[n++] = l.l->v[i];
    }
    out.l->n = n;
    return out;
}

static struct jv filter(struct ev *E, const char *name, struct jv v, const struct args *A) {
    int line = A->line;
    if (!strcmp(name, "trim")) return strip(jv_str_of(E, &v), arg(A, 0, "chars"), 3);
    if (!strcmp(name, "length") || !strcmp(name, "count")) return v_int(jv_length(E, &v, line));
    if (!strcmp(name, "string")) return jv_str_of(E, &v);
    if (!strcmp(name, "safe") || !strcmp(name, "e") || !strcmp(name, "escape")) {
        if (name[0] == 's') return jv_str_of(E, &v);
        struct jv s = jv_str_of(E, &v);
        struct buf b = {0};
        jv_buf_add(E, &b, "", 0);
        for (size_t i = 0; i < s.s.n; i++) {
            char c = s.s.p[i];
            const char *r = c == '&'    ? "&amp;"
                            : c == '<'  ? "&lt;"
                            : c == '>'  ? "&gt;"
                            : c == '"'  ? "&#34;"
                            : c == '\'' ? "&#39;"
                                        : NULL;
            if (r)
                jv_buf_str(E, &b, r);
            else
                jv_buf_add(E, &b, &c, 1);
        }
        return v_buf(&b);
    }
    if (!strcmp(name, "upper")) return str_case(E, jv_str_of(E, &v), 'u');
    if (!strcmp(name, "lower")) return str_case(E, jv_str_of(E, &v), 'l');
    if (!strcmp(name, "capitalize")) return str_case(E, str_case(E, jv_str_of(E, &v), 'l'), 'c');
    if (!strcmp(name, "title")) return str_case(E, str_case(E, jv_str_of(E, &v), 'l'), 'j');
    if (!strcmp(name, "replace")) {
        const struct jv *c = arg(A, 2, "count");
        return str_replace(E, jv_str_of(E, &v),
                           jv_str_of(E, arg(A, 0, "old") ? arg(A, 0, "old") : &(struct jv){0}),
                           jv_str_of(E, arg(A, 1, "new") ? arg(A, 1, "new") : &(struct jv){0}),
                           c && c->t != JV_NONE ? need_int(E, c, line, "replace") : -1);
    }
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        const struct jv *d = arg(A, 0, "default_value"), *b = arg(A, 1, "boolean");
        int use = v.t == JV_UNDEF || (b && jv_truthy(b) && !jv_truthy(&v));
        return use ? (d ? *d : v_cstr("")) : v;
    }
    if (!strcmp(name, "tojson")) {
        const struct jv *ind = arg(A, 0, "indent"), *sk = arg(A, 3, "sort_keys"),
                        *sep = arg(A, 2, "separators");
        struct json_opts o = {.indent = -1, .item_sep = ", ", .key_sep = ": "};
        if (ind && ind->t != JV_NONE) {
            if (ind->t == JV_STR) jinja_fail(E, line, "tojson: a string indent is not supported");
            o.indent = (int)need_int(E, ind, line, "tojson indent");
            if (o.indent < 0) o.indent = 0;
            if (o.indent > 64) o.indent = 64;
            o.item_sep = ",";
        }
        if (sep && sep->t == JV_LIST && sep->l->n == 2) {
            struct jv a = need_str(E, &sep->l->v[0], line, "separators"),
                      b = need_str(E, &sep->l->v[1], line, "separators");
            o.item_sep = jarena_strndup(&E->a, a.s.p, a.s.n);
            o.key_sep = jarena_strndup(&E->a, b.s.p, b.s.n);
        }
        o.sort_keys = sk && jv_truthy(sk);
        struct buf b = {0};
        jv_buf_add(E, &b, "", 0);
        jv_to_json(E, &b, &v, &o, 0, line);
        return v_buf(&b);
    }
    if (!strcmp(name, "join")) {
        const struct jv *sep = arg(A, 0, "d"), *at = arg(A, 1, "attribute");
        struct jv l = jv_as_list(E, &v, line);
        if (at) {
            struct jv m = v_list(E, l.l->n);
            for (size_t i = 0; i < l.l->n; i++)
                m.l->v[i] = attr_path(E, l.l->v[i], *at, line);
            l = m;
        }
        return join(E, &l, sep ? jv_str_of(E, sep) : v_cstr(""), line);
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        struct jv l = jv_as_list(E, &v, line);
        if (!l.l->n) return v_undef(name);
        return l.l->v[name[0] == 'f' ? 0 : l.l->n - 1];
    }
    if (!strcmp(name, "list")) {
        struct jv l = jv_as_list(E, &v, line);
        struct jv c = v_list(E, l.l->n);
        if (l.l->n) memcpy(c.l->v, l.l->v, l.l->n * sizeof(*c.l->v));
        return c;
    }
    if (!strcmp(name, "reverse")) {
        if (v.t == JV_STR) {
            struct jv l = jv_as_list(E, &v, line);
            struct buf b = {0};
            jv_buf_add(E, &b, "", 0);
            for (size_t i = l.l->n; i > 0; i--)
                jv_buf_add(E, &b, l.l->v[i - 1].s.p, l.l->v[i - 1].s.n);
            return v_buf(&b);
        }
        struct jv l = jv_as_list(E, &v, line), c = v_list(E, l.l->n);
        for (size_t i = 0; i < l.l->n; i++)
            c.l->v[i] = l.l->v[l.l->n - 1 - i];
        return c;
    }
    if (!strcmp(name, "items")) {
        if (v.t == JV_UNDEF) return v_list(E, 0);
        if (v.t != JV_DICT)
            jinja_fail(E, line, "items: expected a mapping, got %s", jv_type_name(&v));
        struct jv_method m = {.self = v, .name = "items"};
        struct args none = {.line = line};
        return call_method(E, &m, &none);
    }
    if (!strcmp(name, "int")) {
        const struct jv *d = arg(A, 0, "default");
        if (v.t == JV_UNDEF) jinja_fail(E, line, "'%s' is undefined", undef_name(&v));
        if (v.t == JV_INT || v.t == JV_BOOL) return v_int(v.i);
        if (v.t == JV_FLOAT && isfinite(v.f) && fabs(v.f) < 9.2e18) return v_int((long long)v.f);
        if (v.t == JV_STR) {
            char *s = jarena_strndup(&E->a, v.s.p, v.s.n), *end;
            long long i = strtoll(s, &end, 10);
            while (*end && is_ws((unsigned char)*end))
                end++;
            if (end != s && !*end) return v_int(i);
            double f = strtod(s, &end);
            if (end != s && !*end && isfinite(f) && fabs(f) < 9.2e18) return v_int((long long)f);
        }
        return d ? *d : v_int(0);
    }
    if (!strcmp(name, "float")) {
        if (v.t == JV_UNDEF) jinja_fail(E, line, "'%s' is undefined", undef_name(&v));
        if (jv_is_num(&v)) return v_float(jv_num(&v));
        if (v.t == JV_STR) {
            char *s = jarena_strndup(&E->a, v.s.p, v.s.n), *end;
            double f = strtod(s, &end);
            if (end != s && !*end) return v_float(f);
        }
        const struct jv *d = arg(A, 0, "default");
        return d ? *d : v_float(0);
    }
    if (!strcmp(name, "abs")) {
        if (v.t == JV_FLOAT) return v_float(fabs(v.f));
        if (v.t == JV_INT || v.t == JV_BOOL) return v_int(v.i < 0 ? -v.i : v.i);
        jinja_fail(E, line, "bad operand type for abs(): '%s'", jv_type_name(&v));
    }
    if (!strcmp(name, "selectattr")) return select_items(E, v, A, 1, 1);
    if (!strcmp(name, "rejectattr")) return select_items(E, v, A, 1, 0);
    if (!strcmp(name, "select")) return select_items(E, v, A, 0, 1);
    if (!strcmp(name, "reject")) return select_items(E, v, A, 0, 0);
    if (!strcmp(name, "map")) {
        if (!jv_truthy(&v)) return v_list(E, 0); /* as select_items */
        struct jv l = jv_as_list(E, &v, line), out = v_list(E, l.l->n);
        const struct jv *at = arg(A, -1, "attribute"), *dflt = arg(A, -1, "default");
        const struct jv *fname = arg(A, 0, NULL);
        struct args FA = {.line = line};
        if (!at && fname) {
            /* filter arguments after its name */
            int pos = 0;
            for (int k = 0; k < A->n; k++)
                if (!A->kw[k] && pos++ == 1) {
                    FA.v = A->v + k;
                    FA.kw = A->kw + k;
                    FA.n = A->n - k;
                    break;
                }
        }
        if (!at && !fname) jinja_fail(E, line, "map: expected a filter name or attribute=");
        const char *fn = NULL;
        if (!at) {
            struct jv s = need_str(E, fname, line, "map");
            fn = jarena_strndup(&E->a, s.s.p, s.s.n);
        }
        for (size_t i = 0; i < l.l->n; i++) {
            if (at) {
                struct jv x = attr_path(E, l.l->v[i], *at, line);
                out.l->v[i] = x.t == JV_UNDEF && dflt ? *dflt : x;
            } else {
                out.l->v[i] = filter(E, fn, l.l->v[i], &FA);
            }
        }
        return out;
    }
    if (!strcmp(name, "unique")) {
        struct jv l = jv_as_list(E, &v, line), out = v_list(E, l.l->n);
        size_t n = 0;
        for (size_t i = 0; i < l.l->n; i++) {
            if (l.l->v[i].t == JV_LIST || l.l->v[i].t == JV_DICT)
                jinja_fail(E, line, "unhashable type: '%s'", jv_type_name(&l.l->v[i]));
            int dup = 0;
            for (size_t k = 0; k < n && !dup; k++)
                dup = jv_equal(&out.l->v[k], &l.l->v[i]);
            if (!dup) out.l->v[n++] = l.l->v[i];
        }
        out.l->n = n;
        return out;
    }
    if (!strcmp(name, "sort") || !strcmp(name, "dictsort")) {
        int ds = name[0] == 'd';
        if (ds && v.t == JV_UNDEF) jinja_fail(E, line, "'%s' is undefined", undef_name(&v));
        struct jv l = ds ? filter(E, "items", v, A) : filter(E, "list", v, A);
        const struct jv *rev = arg(A, ds ? 2 : 0, "reverse"),
                        *at = ds ? NULL : arg(A, 2, "attribute");
        int r = rev && jv_truthy(rev);
        for (size_t i = 1; i < l.l->n; i++)
            for (size_t j = i; j > 0; j--) {
                struct jv a = l.l->v[j - 1], b = l.l->v[j];
                struct jv ka = ds ? a.l->v[0] : at ? attr_path(E, a, *at, line) : a;
                struct jv kb = ds ? b.l->v[0] : at ? attr_path(E, b, *at, line) : b;
                int c = jv_cmp(E, &ka, &kb, line);
                if (r ? c >= 0 : c <= 0) break;
                l.l->v[j - 1] = b;
                l.l->v[j] = a;
            }
        return l;
    }
    if (!strcmp(name, "indent")) {
        const struct jv *w = arg(A, 0, "width"), *fst = arg(A, 1, "first"),
                        *blank = arg(A, 2, "blank");
        struct buf pad = {0};
        jv_buf_add(E, &pad, "", 0);
        if (w && w->t == JV_STR)
            jv_buf_add(E, &pad, w->s.p, w->s.n);
        else
            for (long long i = 0, n = w ? need_int(E, w, line, "indent") : 4; i < n && i < 256; i++)
                jv_buf_add(E, &pad, " ", 1);
        struct jv s = need_str(E, &v, line, "indent");
        struct buf b = {0};
        jv_buf_add(E, &b, "", 0);
        int at_start = 1, firstline = 1;
        for (size_t i = 0; i < s.s.n; i++) {
            if (at_start) {
                int empty = s.s.p[i] == '\n';
                if ((!firstline || (fst && jv_truthy(fst))) &&
                    (!empty || (blank && jv_truthy(blank))))
                    jv_buf_add(E, &b, pad.p, pad.n);
                at_start = 0;
            }
            jv_buf_add(E, &b, s.s.p + i, 1);
            if (s.s.p[i] == '\n') {
                at_start = 1;
                firstline = 0;
            }
        }
        return v_buf(&b);
    }
    if (!strcmp(name, "sum") || !strcmp(name, "max") || !strcmp(name, "min")) {
        struct jv l = jv_as_list(E, &v, line);
        if (name[1] == 'u') {
            struct jv acc = v_int(0);
            for (size_t i = 0; i < l.l->n; i++) {
                if (!jv_is_num(&l.l->v[i])) jinja_fail(E, line, "sum: not a number");
                acc = acc.t == JV_FLOAT || l.l->v[i].t == JV_FLOAT
                          ? v_float(jv_num(&acc) + jv_num(&l.l->v[i]))
                          : v_int(acc.i + l.l->v[i].i);
            }
            return acc;
        }
        if (!l.l->n) return v_undef(name);
        struct jv best = l.l->v[0];
        for (size_t i = 1; i < l.l->n; i++) {
            int c = jv_cmp(E, &l.l->v[i], &best, line);
            if (name[1] == 'a' ? c > 0 : c < 0) best = l.l->v[i];
        }
        return best;
    }
    if (!strcmp(name, "round")) {
        const struct jv *p = arg(A, 0, "precision");
        double m = pow(10, p ? (double)need_int(E, p, line, "round") : 0);
        if (!jv_is_num(&v)) jinja_fail(E, line, "round: not a number");
        return v_float(nearbyint(jv_num(&v) * m) / m);
    }
    if (!strcmp(name, "wordcount")) { /* runs of \\w (letters, numbers, '_'), as jinja2's regex */
        struct jv s = jv_str_of(E, &v);
        long long words = 0;
        int in_word = 0;
        for (size_t i = 0; i < s.s.n;) {
            uint32_t cp;
            i += unicode_utf8_decode((const unsigned char *)s.s.p + i, s.s.n - i, &cp);
            int w = cp == '_' || (unicode_class(cp) & (UNICODE_L | UNICODE_N));
            words += w && !in_word;
            in_word = w;
        }
        return v_int(words);
    }
    if (!strcmp(name, "batch")) { /* lists of LINECOUNT items, the last padded with fill_with */
        const struct jv *nv = arg(A, 0, "linecount"), *fill = arg(A, 1, "fill_with");
        if (!nv) jinja_fail(E, line, "batch: missing linecount");
        long long n = need_int(E, nv, line, "batch");
        if (n < 1) jinja_fail(E, line, "batch: linecount must be at least 1");
        struct jv l = jv_as_list(E, &v, line);
        if (fill && fill->t != JV_NONE && l.l->n && n > (1LL << 24)) /* padding past memory */
            jinja_fail(E, line, "batch: linecount %lld too large", n);
        size_t groups = (l.l->n + (size_t)n - 1) / (size_t)n;
        struct jv out = v_list(E, groups);
        for (size_t g = 0; g < groups; g++) {
            size_t from = g * (size_t)n,
                   have = l.l->n - from < (size_t)n ? l.l->n - from : (size_t)n;
            size_t len = fill && fill->t != JV_NONE ? (size_t)n : have;
            struct jv b = v_list(E, len);
            for (size_t k = 0; k < len; k++)
                b.l->v[k] = k < have ? l.l->v[from + k] : *fill;
            out.l->v[g] = b;
        }
        return out;
    }
    jinja_fail(E, line, "no filter named '%s'", name);
}

static int test(struct ev *E, const char *name, const struct jv *v, const struct args *A) {
    int line = A->line;
    const struct jv *x = arg(A, 0, NULL);
    if (!strcmp(name, "defined")) return v->t != JV_UNDEF;
    if (!strcmp(name, "undefined")) return v->t == JV_UNDEF;
    if (!strcmp(name, "none")) return v->t == JV_NONE;
    if (!strcmp(name, "string")) return v->t == JV_STR;
    if (!strcmp(name, "number")) return jv_is_num(v);
    if (!strcmp(name, "integer")) return v->t == JV_INT;
    if (!strcmp(name, "float")) return v->t == JV_FLOAT;
    if (!strcmp(name, "boolean")) return v->t == JV_BOOL;
    if (!strcmp(name, "true")) return v->t == JV_BOOL && v->i;
    if (!strcmp(name, "false")) return v->t == JV_BOOL && !v->i;
    if (!strcmp(name, "mapping")) return v->t == JV_DICT;
    /* jinja2's Undefined is iterable, has a length and a __call__ (that raises) */
    if (!strcmp(name, "iterable") || !strcmp(name, "sequence"))
        return v->t == JV_STR || v->t == JV_LIST || v->t == JV_DICT || v->t == JV_UNDEF;
    if (!strcmp(name, "callable"))
        return v->t == JV_FUNC || v->t == JV_METHOD || v->t == JV_MACRO || v->t == JV_UNDEF;
    if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        /* str(value).islower(): some cased character, none of the other case */
        struct jv s = jv_str_of(E, v);
        struct jv same = str_case(E, s, name[0]),
                  other = str_case(E, s, name[0] == 'l' ? 'u' : 'l');
        return jv_equal(&same, &s) && !jv_equal(&other, &s);
    }
    if (!strcmp(name, "even") || !strcmp(name, "odd")) {
        if (v->t == JV_FLOAT) { /* value % 2 == 0 (even), == 1 (odd), Python's modulo */
            double m = fmod(v->f, 2);
            if (m < 0) m += 2;
            return m == (name[0] == 'e' ? 0 : 1);
        }
        long long i = need_int(E, v, line, name);
        return (i % 2 == 0) == (name[0] == 'e');
    }
    if (!strcmp(name, "divisibleby")) {
        long long d = need_int(E, x, line, name);
        if (!d) jinja_fail(E, line, "integer division or modulo by zero");
        return need_int(E, v, line, name) % d == 0;
    }
    if (!x) jinja_fail(E, line, "test '%s' needs an argument (or does not exist)", name);
    if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "==") ||
        !strcmp(name, "sameas"))
        return jv_equal(v, x);
    if (!strcmp(name, "ne") || !strcmp(name, "!=")) return !jv_equal(v, x);
    if (!strcmp(name, "lt") || !strcmp(name, "<") || !strcmp(name, "lessthan"))
        return jv_cmp(E, v, x, line) < 0;
    if (!strcmp(name, "le") || !strcmp(name, "<=")) return jv_cmp(E, v, x, line) <= 0;
    if (!strcmp(name, "gt") || !strcmp(name, ">") || !strcmp(name, "greaterthan"))
        return jv_cmp(E, v, x, line) > 0;
    if (!strcmp(name, "ge") || !strcmp(name, ">=")) return jv_cmp(E, v, x, line) >= 0;
    if (!strcmp(name, "in")) return jv_contains(E, x, v, line);
    jinja_fail(E, line, "no test named '%s'", name);
}

static struct jv arith(struct ev *E, int op, struct jv a, struct jv b, int line) {
    if (op == '~') {
        struct buf s = {0};
        jv_buf_add(E, &s, "", 0);
        jv_to_str(E, &s, &a, 0);
        jv_to_str(E, &s, &b, 0);
        return v_buf(&s);
    }
    if (a.t == JV_UNDEF || b.t == JV_UNDEF) {
        const struct jv *u = a.t == JV_UNDEF ? &a : &b;
        jinja_fail(E, line, "'%s' is undefined", u->undef_name ? u->undef_name : "value");
    }
    if (op == '+' && a.t == JV_STR && b.t == JV_STR) {
        struct buf s = {0};
        jv_buf_add(E, &s, a.s.p, a.s.n);
        jv_buf_add(E, &s, b.s.p, b.s.n);
        return v_buf(&s);
    }
    if (op == '+' && a.t == JV_LIST && b.t == JV_LIST) {
        struct jv l = v_list(E, a.l->n + b.l->n);
        if (a.l->n) memcpy(l.l->v, a.l->v, a.l->n * sizeof(*l.l->v));
        if (b.l->n) memcpy(l.l->v + a.l->n, b.l->v, b.l->n * sizeof(*l.l->v));
        return l;
    }
    if (op == '*' && ((a.t == JV_STR || a.t == JV_LIST) && (b.t == JV_INT || b.t == JV_BOOL))) {
        long long n = b.i < 0 ? 0 : b.i;
        size_t unit = a.t == JV_STR ? a.s.n : a.l->n;
        if (unit == 0) n = 0;
        if (n && (unsigned long long)n > E->max_output / unit)
            jinja_fail(E, line, "repetition of %lld is over the output limit", n);
        if (a.t == JV_STR) {
            struct buf s = {0};
            jv_buf_add(E, &s, "", 0);
            for (long long i = 0; i < n; i++)
                jv_buf_add(E, &s, a.s.p, a.s.n);
            return v_buf(&s);
        }
        if (n * (long long)a.l->n > 1000000) jinja_fail(E, line, "list repetition over the limit");
        struct jv l = v_list(E, (size_t)n * a.l->n);
        for (long long i = 0; i < n; i++)
            if (a.l->n) memcpy(l.l->v + i * (long long)a.l->n, a.l->v, a.l->n * sizeof(*l.l->v));
        return l;
    }
    if (!jv_is_num(&a) || !jv_is_num(&b))
        jinja_fail(E, line, "unsupported operand type(s) for %s: '%s' and '%s'",
                   op == '+'       ? "+"
                   : op == '-'     ? "-"
                   : op == '*'     ? "*"
                   : op == '/'     ? "/"
                   : op == '%'     ? "%"
                   : op == JOP_POW ? "**"
                                   : "//",
                   jv_type_name(&a), jv_type_name(&b));
    int ints = a.t != JV_FLOAT && b.t != JV_FLOAT;
    long long r;
    double x = jv_num(&a), y = jv_num(&b);
    switch (op) {
    case '+':
        if (ints && !__builtin_add_overflow(a.i, b.i, &r)) return v_int(r);
        return v_float(x + y);
    case '-':
        if (ints && !__builtin_sub_overflow(a.i, b.i, &r)) return v_int(r);
        return v_float(x - y);
    case '*':
        if (ints && !__builtin_mul_overflow(a.i, b.i, &r)) return v_int(r);
        return v_float(x * y);
    case '/':
        if (y == 0) jinja_fail(E, line, "division by zero");
        return v_float(x / y);
    case JOP_FLOORDIV:
    case '%':
        if (y == 0) jinja_fail(E, line, "integer division or modulo by zero");
        if (ints && !(a.i == LLONG_MIN && b.i == -1)) {
            long long q = a.i / b.i, m = a.i % b.i;
            if (m != 0 && ((m < 0) != (b.i < 0))) {
                q--;
                m += b.i;
            }
            return v_int(op == '%' ? m : q);
        }
        {
            double m = fmod(x, y);
            if (m != 0 && ((m < 0) != (y < 0))) m += y;
            return op == '%' ? v_float(m) : v_float(floor(x / y));
        }
    case JOP_POW:
        if (ints && b.i >= 0) { /* by squaring: 1 ** 10**18 must not loop 10**18 times */
            long long acc = 1, base = a.i, e = b.i;
            int ok = 1;
            while (e && ok) {
                if (e & 1) ok = !__builtin_mul_overflow(acc, base, &acc);
                e >>= 1;
                if (e && ok) ok = !__builtin_mul_overflow(base, base, &base);
            }
            if (ok) return v_int(acc);
        }
        return v_float(pow(x, y));
    }
    jinja_fail(E, line, "bad operator");
}

static struct jv lookup(struct ev *E, struct scope *S, const char *name) {
    struct jv *v = scope_find(S, name);
    if (v) return *v;
    static const char *const funcs[] = {"range",        "namespace", "raise_exception",
                                        "strftime_now", "dict",      NULL};
    for (int i = 0; funcs[i]; i++)
        if (!strcmp(funcs[i], name)) return (struct jv){.t = JV_FUNC, .fn = funcs[i]};
    (void)E;
    return v_undef(name);
}

static struct jv eval_expr(struct ev *E, struct scope *S, const struct jexpr *x);

#define JINJA_MAX_EVAL_DEPTH 2000 /* a 1+1+...+1 chain parses flat but evaluates recursively */

static struct jv eval(struct ev *E, struct scope *S, const struct jexpr *x) {
    if (++E->eval_depth > JINJA_MAX_EVAL_DEPTH)
        jinja_fail(E, x->line, "expression nested more than %d levels deep", JINJA_MAX_EVAL_DEPTH);
    struct jv v = eval_expr(E, S, x);
    E->eval_depth--;
    return v;
}

static struct jv eval_expr(struct ev *E, struct scope *S, const struct jexpr *x) {
    switch (x->kind) {
    case JE_LIT:
        return x->lit;
    case JE_NAME:
        return lookup(E, S, x->name);
    case JE_ATTR:
        return get_attr(E, eval(E, S, x->a), x->name, x->line);
    case JE_INDEX:
        return get_item(E, eval(E, S, x->a), eval(E, S, x->b), x->line);
    case JE_SLICE: {
        struct jv o = eval(E, S, x->a);
        struct jv a = x->b ? eval(E, S, x->b) : v_none(), b = x->c ? eval(E, S, x->c) : v_none();
        struct jv c = x->args[0] ? eval(E, S, x->args[0]) : v_none();
        return slice(E, o, &a, &b, &c, x->line);
    }
    case JE_CALL: {
        struct jv f = eval(E, S, x->a);
        struct args A;
        eval_args(E, S, x, 0, &A);
        return call(E, f, &A);
    }
    case JE_FILTER: {
        struct jv v = eval(E, S, x->a);
        struct args A;
        eval_args(E, S, x, 0, &A);
        return filter(E, x->name, v, &A);
    }
    case JE_TEST: {
        struct jv v = eval(E, S, x->a);
        struct args A;
        eval_args(E, S, x, 0, &A);
        int r = test(E, x->name, &v, &A);
        return v_bool(x->op ? !r : r);
    }
    case JE_UNARY: {
        struct jv v = eval(E, S, x->a);
        if (x->op == 'n') return v_bool(!jv_truthy(&v));
        if (v.t == JV_FLOAT) return v_float(x->op == '-' ? -v.f : v.f);
        if (v.t == JV_INT || v.t == JV_BOOL) {
            if (x->op == '-' && v.i == LLONG_MIN) return v_float(-(double)v.i);
            return v_int(x->op == '-' ? -v.i : v.i);
        }
        jinja_fail(E, x->line, "bad operand type for unary %c: '%s'", x->op, jv_type_name(&v));
    }
    case JE_BINARY: {
        struct jv a = eval(E, S, x->a);
        if (x->op == JOP_AND) return jv_truthy(&a) ? eval(E, S, x->b) : a;
        if (x->op == JOP_OR) return jv_truthy(&a) ? a : eval(E, S, x->b);
        struct jv b = eval(E, S, x->b);
        switch (x->op) {
        case JOP_EQ:
            return v_bool(jv_equal(&a, &b));
        case JOP_NE:
            return v_bool(!jv_equal(&a, &b));
        case '<':
            return v_bool(jv_cmp(E, &a, &b, x->line) < 0);
        case '>':
            return v_bool(jv_cmp(E, &a, &b, x->line) > 0);
        case JOP_LE:
            return v_bool(jv_cmp(E, &a, &b, x->line) <= 0);
        case JOP_GE:
            return v_bool(jv_cmp(E, &a, &b, x->line) >= 0);
        case JOP_IN:
            return v_bool(jv_contains(E, &b, &a, x->line));
        case JOP_NOTIN:
            return v_bool(!jv_contains(E, &b, &a, x->line));
        default:
            return arith(E, x->op, a, b, x->line);
        }
    }
    case JE_COND: {
        struct jv c = eval(E, S, x->a);
        if (jv_truthy(&c)) return eval(E, S, x->b);
        return x->c ? eval(E, S, x->c) : v_undef(NULL);
    }
    case JE_LIST:
    case JE_TUPLE: {
        struct jv l = v_list(E, (size_t)x->nargs);
        l.l->tuple = x->kind == JE_TUPLE;
        for (int i = 0; i < x->nargs; i++)
            l.l->v[i] = eval(E, S, x->args[i]);
        return l;
    }
    case JE_DICT: {
        struct jv d = v_dict(E);
        for (int i = 0; i + 1 < x->nargs; i += 2)
            jv_dict_set(E, d.d, eval(E, S, x->args[i]), eval(E, S, x->args[i + 1]));
        return d;
    }
    }
    jinja_fail(E, x->line, "bad expression");
}

/* ---- statements ---- */

enum { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE };

static void bind_targets(struct ev *E, struct scope *S, const struct jnode *n, struct jv item) {
    if (n->ntargets == 1) {
        scope_set(E, S, n->targets[0], item);
        return;
    }
    struct jv l = jv_as_list(E, &item, n->line);
    if ((int)l.l->n != n->ntargets)
        jinja_fail(E, n->line, "cannot unpack %zu values into %d names", l.l->n, n->ntargets);
    for (int i = 0; i < n->ntargets; i++)
        scope_set(E, S, n->targets[i], l.l->v[i]);
}

static int exec_for(struct ev *E, struct scope *S, const struct jnode *n, struct buf *out) {
    struct jv seq = eval(E, S, n->expr);
    struct jv l = jv_as_list(E, &seq, n->line);
    if (n->cond) { /* the loop filter: loop.* counts only the items it keeps */
        struct jv kept = v_list(E, l.l->n);
        size_t k = 0;
        for (size_t i = 0; i < l.l->n; i++) {
            step(E, n->line);
            struct scope *L = scope_new(E, S);
            bind_targets(E, L, n, l.l->v[i]);
            struct jv c = eval(E, L, n->cond);
            if (jv_truthy(&c)) kept.l->v[k++] = l.l->v[i];
        }
        kept.l->n = k;
        l = kept;
    }
    size_t len = l.l->n;
    if (!len) return n->else_body.n ? exec_body(E, S, &n->else_body, out) : FLOW_NEXT;
    static const char *const keys[] = {"index",    "index0",   "first",     "last",
                                       "length",   "revindex", "revindex0", "previtem",
                                       "nextitem", "cycle",    "depth",     "depth0"};
    for (size_t i = 0; i < len; i++) {
        step(E, n->line);
        struct jv loop = v_dict(E);
        struct jv vals[12] = {v_int((long long)i + 1),
                              v_int((long long)i),
                              v_bool(i == 0),
                              v_bool(i + 1 == len),
                              v_int((long long)len),
                              v_int((long long)(len - i)),
                              v_int((long long)(len - i - 1)),
                              i ? l.l->v[i - 1] : v_undef("previtem"),
                              i + 1 < len ? l.l->v[i + 1] : v_undef("nextitem"),
                              bind(E, v_int((long long)i), "cycle"),
                              v_int(1), /* depth, depth0: loops are not recursive */
                              v_int(0)};
        for (int k = 0; k < 12; k++)
            jv_dict_set(E, loop.d, v_cstr(keys[k]), vals[k]);
        /* Each iteration starts from the enclosing values: a set in one does not reach the next. */
        struct scope *L = scope_new(E, S);
        scope_set(E, L, "loop", loop);
        bind_targets(E, L, n, l.l->v[i]);
        int f = exec_body(E, L, &n->body, out);
        if (f == FLOW_BREAK) break;
    }
    return FLOW_NEXT;
}

static int exec_node(struct ev *E, struct scope *S, const struct jnode *n, struct buf *out) {
    switch (n->kind) {
    case JN_TEXT:
        jv_buf_add(E, out, n->text, n->len);
        return FLOW_NEXT;
    case JN_OUT: {
        struct jv v = eval(E, S, n->expr);
        jv_to_str(E, out, &v, 0);
        return FLOW_NEXT;
    }
    case JN_IF: {
        struct jv c = eval(E, S, n->cond);
        return exec_body(E, S, jv_truthy(&c) ? &n->body : &n->else_body, out);
    }
    case JN_FOR:
        return exec_for(E, S, n, out);
    case JN_SET: {
        struct jv v;
        if (n->expr) {
            v = eval(E, S, n->expr);
        } else {
            struct buf b = {0};
            jv_buf_add(E, &b, "", 0);
            exec_body(E, S, &n->body, &b);
            v = v_buf(&b);
        }
        if (n->attr) {
            struct jv *ns = scope_find(S, n->target);
            if (!ns || ns->t != JV_DICT || !ns->d->ns)
                jinja_fail(E, n->line, "cannot assign attribute on non-namespace object '%s'",
                           n->target);
            if (n->attr[0] == '_')
                jinja_fail(E, n->line, "namespace attributes cannot start with '_'");
            jv_dict_set(E, ns->d, v_cstr(n->attr), v);
        } else {
            scope_set(E, S, n->target, v);
        }
        return FLOW_NEXT;
    }
    case JN_MACRO:
        scope_set(E, S, n->target, (struct jv){.t = JV_MACRO, .mac = n});
        return FLOW_NEXT;
    case JN_BREAK:
        return FLOW_BREAK;
    case JN_CONTINUE:
        return FLOW_CONTINUE;
    case JN_BLOCK:
        return exec_body(E, S, &n->body, out);
    }
    return FLOW_NEXT;
}

static int exec_body(struct ev *E, struct scope *S, const struct jbody *b, struct buf *out) {
    for (int i = 0; i < b->n; i++) {
        int f = exec_node(E, S, b->v[i], out);
        if (f != FLOW_NEXT) return f;
    }
    return FLOW_NEXT;
}

int jinja_render(const struct jinja_template *t, const cJSON *vars, const struct jinja_limits *lim,
                 char **out, size_t *out_len, char *err, size_t errlen) {
    *out = NULL;
    struct ev *E = calloc(1, sizeof(*E));
    if (!E) {
        snprintf(err, errlen, "out of memory rendering the template");
        return JINJA_ERR_NOMEM;
    }
    E->err = err;
    E->errlen = errlen;
    E->max_output = lim && lim->max_output ? lim->max_output : JINJA_MAX_OUTPUT;
    E->max_steps = lim && lim->max_steps ? lim->max_steps : JINJA_MAX_STEPS;
    E->a.limit = lim && lim->max_memory ? lim->max_memory : JINJA_MAX_MEMORY;
    E->a.fail = &E->fail;
    int rc = setjmp(E->fail);
    if (rc) {
        int over = E->a.over_limit;
        if (rc == 1 && over)
            snprintf(err, errlen, "the template needs more than %zu bytes of memory", E->a.limit);
        else if (rc == 1)
            snprintf(err, errlen, "out of memory rendering the template");
        jarena_free(&E->a);
        free(E);
        return rc == 1 && !over ? JINJA_ERR_NOMEM : JINJA_ERR_RENDER;
    }
    E->globals = scope_new(E, NULL);
    if (vars)
        for (const cJSON *c = vars->child; c; c = c->next)
            if (c->string) scope_set(E, E->globals, c->string, jv_from_json(E, c, 0));
    struct buf b = {0};
    jv_buf_add(E, &b, "", 0);
    exec_body(E, E->globals, &t->root, &b);
    char *s = malloc(b.n + 1);
    if (!s) {
        jarena_free(&E->a);
        free(E);
        snprintf(err, errlen, "out of memory rendering the template");
        return JINJA_ERR_NOMEM;
    }
    memcpy(s, b.p, b.n + 1);
    if (out_len) *out_len = b.n;
    *out = s;
    jarena_free(&E->a);
    free(E);
    return JINJA_OK;
}
