/* jinja_value.c — the Jinja interpreter's values (jinja_int.h): Python's str() and repr() of
 * them, json.dumps as transformers' tojson calls it (ensure_ascii=False, indent, separators,
 * sort_keys), equality and ordering, iteration and len(), the arena-backed text buffer, and the
 * JSON variables of a render turned into values. Errors longjmp through jinja_fail.
 */
#include "model/jinja.h"
#include "model/jinja_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Noreturn void jinja_fail(struct ev *E, int line, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        snprintf(E->err, E->errlen, "chat template line %d: %s", line, msg);
    else
        snprintf(E->err, E->errlen, "%s", msg);
    longjmp(E->fail, 2);
}

/* ---- buffers (arena-backed) ---- */

void jv_buf_add(struct ev *E, struct buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        if (b->n + n > E->max_output)
            jinja_fail(E, 0, "the rendered template exceeds %zu bytes", E->max_output);
        size_t cap = 2 * (b->n + n) + 64;
        char *p = jarena_alloc(&E->a, cap);
        if (b->n) memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}
void jv_buf_str(struct ev *E, struct buf *b, const char *s) {
    jv_buf_add(E, b, s, strlen(s));
}
void jv_buf_printf(struct ev *E, struct buf *b, const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    jv_buf_add(E, b, tmp, (size_t)n);
}

const char *jv_type_name(const struct jv *v) {
    switch (v->t) {
    case JV_UNDEF:
        return "undefined";
    case JV_NONE:
        return "NoneType";
    case JV_BOOL:
        return "bool";
    case JV_INT:
        return "int";
    case JV_FLOAT:
        return "float";
    case JV_STR:
        return "str";
    case JV_LIST:
        return "list";
    case JV_DICT:
        return v->d->ns ? "Namespace" : "dict";
    default:
        return "function";
    }
}

int jv_is_num(const struct jv *v) {
    return v->t == JV_INT || v->t == JV_FLOAT || v->t == JV_BOOL;
}
double jv_num(const struct jv *v) {
    return v->t == JV_FLOAT ? v->f : (double)v->i;
}

int jv_truthy(const struct jv *v) {
    switch (v->t) {
    case JV_UNDEF:
    case JV_NONE:
        return 0;
    case JV_BOOL:
    case JV_INT:
        return v->i != 0;
    case JV_FLOAT:
        return v->f != 0.0;
    case JV_STR:
        return v->s.n != 0;
    case JV_LIST:
        return v->l->n != 0;
    case JV_DICT:
        return v->d->ns || v->d->n != 0;
    default:
        return 1;
    }
}

struct jv *jv_dict_find(const struct jv_dict *d, const struct jv *k) {
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(&d->k[i], k)) return &d->v[i];
    return NULL;
}
struct jv *jv_dict_get(const struct jv_dict *d, const char *key) {
    struct jv k = v_cstr(key);
    return jv_dict_find(d, &k);
}
void jv_dict_set(struct ev *E, struct jv_dict *d, struct jv k, struct jv v) {
    struct jv *old = jv_dict_find(d, &k);
    if (old) {
        *old = v;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 8;
        struct jv *nk = jarena_alloc(&E->a, cap * sizeof(*nk)),
                  *nv = jarena_alloc(&E->a, cap * sizeof(*nv));
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof(*nk));
            memcpy(nv, d->v, d->n * sizeof(*nv));
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
}

/* ---- UTF-8 code points ---- */

size_t jv_u8_len(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}
/* Byte offset of code point I (I <= length). */
size_t jv_u8_off(const char *s, size_t n, size_t i) {
    size_t k = 0;
    for (; k < n; k++)
        if (((unsigned char)s[k] & 0xC0) != 0x80) {
            if (i == 0) return k;
            i--;
        }
    return n;
}

/* ---- str() and repr() ---- */

static void fmt_float(struct ev *E, struct buf *b, double f) {
    if (isnan(f)) {
        jv_buf_str(E, b, "nan");
        return;
    }
    if (isinf(f)) {
        jv_buf_str(E, b, f < 0 ? "-inf" : "inf");
        return;
    }
    /* Python's repr: the shortest digits that read back to the same double, written out in
     * positional notation for decimal exponents -4..15 and as d.ddde+XX otherwise. */
    char tmp[40], digits[24], out[48];
    for (int p = 0; p <= 16; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p, f);
        if (strtod(tmp, NULL) == f) break;
    }
    char *e = strchr(tmp, 'e');
    int exp10 = atoi(e + 1), nd = 0;
    for (const char *c = tmp; c < e; c++)
        if (*c >= '0' && *c <= '9') digits[nd++] = *c;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;
    const char *sign = f < 0 || (f == 0 && signbit(f)) ? "-" : "";
    if (exp10 < -4 || exp10 >= 16) {
        snprintf(out, sizeof out, "%s%c%s%.*se%c%02d", sign, digits[0], nd > 1 ? "." : "", nd - 1,
                 digits + 1, exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (exp10 < 0) {
        snprintf(out, sizeof out, "%s0.%.*s%s", sign, -exp10 - 1, "0000", digits);
    } else if (exp10 + 1 >= nd) {
        snprintf(out, sizeof out, "%s%s%.*s.0", sign, digits, exp10 + 1 - nd, "0000000000000000");
    } else {
        snprintf(out, sizeof out, "%s%.*s.%s", sign, exp10 + 1, digits, digits + exp10 + 1);
    }
    jv_buf_str(E, b, out);
}

static void repr_str(struct ev *E, struct buf *b, const char *s, size_t n) {
    int sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    char q = sq && !dq ? '"' : '\'';
    jv_buf_add(E, b, &q, 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\')
            jv_buf_str(E, b, "\\\\");
        else if (c == (unsigned char)q) {
            jv_buf_str(E, b, q == '\'' ? "\\'" : "\\\"");
        } else if (c == '\n')
            jv_buf_str(E, b, "\\n");
        else if (c == '\r')
            jv_buf_str(E, b, "\\r");
        else if (c == '\t')
            jv_buf_str(E, b, "\\t");
        else if (c < 0x20 || c == 0x7f)
            jv_buf_printf(E, b, "\\x%02x", c);
        else
            jv_buf_add(E, b, s + i, 1);
    }
    jv_buf_add(E, b, &q, 1);
}

void jv_to_str(struct ev *E, struct buf *b, const struct jv *v, int repr) {
    switch (v->t) {
    case JV_UNDEF:
        break;
    case JV_NONE:
        jv_buf_str(E, b, "None");
        break;
    case JV_BOOL:
        jv_buf_str(E, b, v->i ? "True" : "False");
        break;
    case JV_INT:
        jv_buf_printf(E, b, "%lld", v->i);
        break;
    case JV_FLOAT:
        fmt_float(E, b, v->f);
        break;
    case JV_STR:
        if (repr)
            repr_str(E, b, v->s.p, v->s.n);
        else
            jv_buf_add(E, b, v->s.p, v->s.n);
        break;
    case JV_LIST:
    case JV_DICT: {
        /* A namespace can hold itself: Python's repr prints the inner occurrence as {...} */
        const void *id = v->t == JV_LIST ? (const void *)v->l : (const void *)v->d;
        int seen = 0;
        for (int i = 0; i < E->n_printing; i++)
            seen |= E->printing[i] == id;
        if (v->t == JV_DICT && v->d->ns) jv_buf_str(E, b, "<Namespace ");
        if (seen) {
            jv_buf_str(E, b, v->t == JV_LIST ? "[...]" : "{...}");
        } else {
            if (E->n_printing == JV_MAX_NESTING)
                jinja_fail(E, 0, "a value nested more than %d levels deep", JV_MAX_NESTING);
            E->printing[E->n_printing++] = id;
            if (v->t == JV_LIST) {
                jv_buf_str(E, b, v->l->tuple ? "(" : "[");
                for (size_t i = 0; i < v->l->n; i++) {
                    if (i) jv_buf_str(E, b, ", ");
                    jv_to_str(E, b, &v->l->v[i], 1);
                }
                jv_buf_str(E, b, !v->l->tuple ? "]" : v->l->n == 1 ? ",)" : ")");
            } else {
                jv_buf_str(E, b, "{");
                for (size_t i = 0; i < v->d->n; i++) {
                    if (i) jv_buf_str(E, b, ", ");
                    jv_to_str(E, b, &v->d->k[i], 1);
                    jv_buf_str(E, b, ": ");
                    jv_to_str(E, b, &v->d->v[i], 1);
                }
                jv_buf_str(E, b, "}");
            }
            E->n_printing--;
        }
        if (v->t == JV_DICT && v->d->ns) jv_buf_str(E, b, ">");
        break;
    }
    default:
        jv_buf_str(E, b, "<function>");
        break;
    }
}

struct jv jv_str_of(struct ev *E, const struct jv *v) {
    if (v->t == JV_STR) return *v;
    struct buf b = {0};
    jv_buf_add(E, &b, "", 0);
    jv_to_str(E, &b, v, 0);
    return v_buf(&b);
}

/* ---- json.dumps(ensure_ascii=False, indent, separators, sort_keys) ---- */

static void json_str(struct ev *E, struct buf *b, const char *s, size_t n) {
    jv_buf_str(E, b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            jv_buf_str(E, b, "\\\"");
            break;
        case '\\':
            jv_buf_str(E, b, "\\\\");
            break;
        case '\n':
            jv_buf_str(E, b, "\\n");
            break;
        case '\r':
            jv_buf_str(E, b, "\\r");
            break;
        case '\t':
            jv_buf_str(E, b, "\\t");
            break;
        case '\b':
            jv_buf_str(E, b, "\\b");
            break;
        case '\f':
            jv_buf_str(E, b, "\\f");
            break;
        default:
            if (c < 0x20)
                jv_buf_printf(E, b, "\\u%04x", c);
            else
                jv_buf_add(E, b, s + i, 1);
        }
    }
    jv_buf_str(E, b, "\"");
}

static void json_nl(struct ev *E, struct buf *b, const struct json_opts *o, int level) {
    jv_buf_str(E, b, "\n");
    for (int i = 0; i < o->indent * level; i++)
        jv_buf_str(E, b, " ");
}

void jv_to_json(struct ev *E, struct buf *b, const struct jv *v, const struct json_opts *o,
                int level, int line) {
    if (level > 100) jinja_fail(E, line, "tojson: nested too deeply");
    switch (v->t) {
    case JV_NONE:
        jv_buf_str(E, b, "null");
        break;
    case JV_BOOL:
        jv_buf_str(E, b, v->i ? "true" : "false");
        break;
    case JV_INT:
        jv_buf_printf(E, b, "%lld", v->i);
        break;
    case JV_FLOAT:
        if (isnan(v->f))
            jv_buf_str(E, b, "NaN");
        else if (isinf(v->f))
            jv_buf_str(E, b, v->f < 0 ? "-Infinity" : "Infinity");
        else
            fmt_float(E, b, v->f);
        break;
    case JV_STR:
        json_str(E, b, v->s.p, v->s.n);
        break;
    case JV_LIST:
        if (!v->l->n) {
            jv_buf_str(E, b, "[]");
            break;
        }
        jv_buf_str(E, b, "[");
        for (size_t i = 0; i < v->l->n; i++) {
            if (i) jv_buf_str(E, b, o->item_sep);
            if (o->indent >= 0) json_nl(E, b, o, level + 1);
            jv_to_json(E, b, &v->l->v[i], o, level + 1, line);
        }
        if (o->indent >= 0) json_nl(E, b, o, level);
        jv_buf_str(E, b, "]");
        break;
    case JV_DICT: {
        size_t n = v->d->n;
        if (!n) {
            jv_buf_str(E, b, "{}");
            break;
        }
        size_t *idx = jarena_alloc(&E->a, n * sizeof(*idx));
        for (size_t i = 0; i < n; i++)
            idx[i] = i;
        if (o->sort_keys) /* insertion sort: dicts in templates are small */
            for (size_t i = 1; i < n; i++)
                for (size_t j = i;
                     j > 0 && jv_cmp(E, &v->d->k[idx[j - 1]], &v->d->k[idx[j]], line) > 0; j--) {
                    size_t t = idx[j];
                    idx[j] = idx[j - 1];
                    idx[j - 1] = t;
                }
        jv_buf_str(E, b, "{");
        for (size_t i = 0; i < n; i++) {
            const struct jv *k = &v->d->k[idx[i]];
            if (i) jv_buf_str(E, b, o->item_sep);
            if (o->indent >= 0) json_nl(E, b, o, level + 1);
            if (k->t == JV_STR)
                json_str(E, b, k->s.p, k->s.n);
            else if (k->t == JV_NONE)
                jv_buf_str(E, b, "\"null\"");
            else if (k->t == JV_BOOL)
                jv_buf_str(E, b, k->i ? "\"true\"" : "\"false\"");
            else if (k->t == JV_INT || k->t == JV_FLOAT) {
                jv_buf_str(E, b, "\"");
                jv_to_str(E, b, k, 0);
                jv_buf_str(E, b, "\"");
            } else
                jinja_fail(E, line, "tojson: keys must be str, int, float, bool or None");
            jv_buf_str(E, b, o->key_sep);
            jv_to_json(E, b, &v->d->v[idx[i]], o, level + 1, line);
        }
        if (o->indent >= 0) json_nl(E, b, o, level);
        jv_buf_str(E, b, "}");
        break;
    }
    default:
        jinja_fail(E, line, "tojson: Object of type %s is not JSON serializable", jv_type_name(v));
    }
}

/* ---- comparisons ---- */

int jv_equal(const struct jv *a, const struct jv *b) {
    if (jv_is_num(a) && jv_is_num(b)) {
        if (a->t != JV_FLOAT && b->t != JV_FLOAT) return a->i == b->i;
        return jv_num(a) == jv_num(b);
    }
    if (a->t != b->t) return 0;
    switch (a->t) {
    case JV_UNDEF:
    case JV_NONE:
        return 1;
    case JV_STR:
        return a->s.n == b->s.n && !memcmp(a->s.p, b->s.p, a->s.n);
    case JV_LIST:
        if (a->l->n != b->l->n) return 0;
        for (size_t i = 0; i < a->l->n; i++)
            if (!jv_equal(&a->l->v[i], &b->l->v[i])) return 0;
        return 1;
    case JV_DICT:
        if (a->d->ns || b->d->ns) return a->d == b->d;
        if (a->d->n != b->d->n) return 0;
        for (size_t i = 0; i < a->d->n; i++) {
            struct jv *o = jv_dict_find(b->d, &a->d->k[i]);
            if (!o || !jv_equal(&a->d->v[i], o)) return 0;
        }
        return 1;
    case JV_FUNC:
        return !strcmp(a->fn, b->fn);
    case JV_MACRO:
        return a->mac == b->mac;
    default:
        return 0;
    }
}

/* Ordering (<): numbers, strings (UTF-8 bytes order as code points do), lists. */
int jv_cmp(struct ev *E, const struct jv *a, const struct jv *b, int line) {
    if (jv_is_num(a) && jv_is_num(b)) {
        if (a->t != JV_FLOAT && b->t != JV_FLOAT) return (a->i > b->i) - (a->i < b->i);
        return (jv_num(a) > jv_num(b)) - (jv_num(a) < jv_num(b));
    }
    if (a->t == JV_STR && b->t == JV_STR) {
        size_t n = a->s.n < b->s.n ? a->s.n : b->s.n;
        int c = memcmp(a->s.p, b->s.p, n);
        if (c) return c < 0 ? -1 : 1;
        return (a->s.n > b->s.n) - (a->s.n < b->s.n);
    }
    if (a->t == JV_LIST && b->t == JV_LIST) {
        for (size_t i = 0; i < a->l->n && i < b->l->n; i++) {
            int c = jv_cmp(E, &a->l->v[i], &b->l->v[i], line);
            if (c) return c;
        }
        return (a->l->n > b->l->n) - (a->l->n < b->l->n);
    }
    jinja_fail(E, line, "'<' not supported between instances of '%s' and '%s'", jv_type_name(a),
               jv_type_name(b));
}

int jv_contains(struct ev *E, const struct jv *hay, const struct jv *needle, int line) {
    switch (hay->t) {
    case JV_STR:
        if (needle->t != JV_STR)
            jinja_fail(E, line, "'in <string>' requires string as left operand, not %s",
                       jv_type_name(needle));
        if (needle->s.n == 0) return 1;
        if (needle->s.n > hay->s.n) return 0;
        return memmem(hay->s.p, hay->s.n, needle->s.p, needle->s.n) != NULL;
    case JV_LIST:
        for (size_t i = 0; i < hay->l->n; i++)
            if (jv_equal(&hay->l->v[i], needle)) return 1;
        return 0;
    case JV_DICT:
        return jv_dict_find(hay->d, needle) != NULL;
    case JV_UNDEF:
        return 0;
    default:
        jinja_fail(E, line, "argument of type '%s' is not iterable", jv_type_name(hay));
    }
}

/* ---- iteration: a value as a list ---- */

struct jv jv_as_list(struct ev *E, const struct jv *v, int line) {
    switch (v->t) {
    case JV_LIST:
        return *v;
    case JV_UNDEF:
        return v_list(E, 0);
    case JV_DICT: {
        struct jv l = v_list(E, v->d->n);
        for (size_t i = 0; i < v->d->n; i++)
            l.l->v[i] = v->d->k[i];
        return l;
    }
    case JV_STR: {
        size_t n = jv_u8_len(v->s.p, v->s.n);
        struct jv l = v_list(E, n);
        size_t off = 0;
        for (size_t i = 0; i < n; i++) {
            size_t k = off + 1;
            while (k < v->s.n && ((unsigned char)v->s.p[k] & 0xC0) == 0x80)
                k++;
            l.l->v[i] = v_str(v->s.p + off, k - off);
            off = k;
        }
        return l;
    }
    default:
        jinja_fail(E, line, "'%s' object is not iterable", jv_type_name(v));
    }
}

long long jv_length(struct ev *E, const struct jv *v, int line) {
    switch (v->t) {
    case JV_STR:
        return (long long)jv_u8_len(v->s.p, v->s.n);
    case JV_LIST:
        return (long long)v->l->n;
    case JV_DICT:
        return (long long)v->d->n;
    case JV_UNDEF:
        return 0;
    default:
        jinja_fail(E, line, "object of type '%s' has no len()", jv_type_name(v));
    }
}

/* ---- JSON variables → values ---- */

struct jv jv_from_json(struct ev *E, const cJSON *j, int depth) {
    if (depth > 64) jinja_fail(E, 0, "template variables nested too deeply");
    if (cJSON_IsString(j)) return v_cstr(j->valuestring ? j->valuestring : "");
    if (cJSON_IsBool(j)) return v_bool(cJSON_IsTrue(j));
    if (cJSON_IsNull(j)) return v_none();
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) < 9e15) return v_int((long long)d);
        return v_float(d);
    }
    if (cJSON_IsArray(j)) {
        struct jv l = v_list(E, (size_t)cJSON_GetArraySize(j));
        size_t i = 0;
        for (const cJSON *c = j->child; c; c = c->next)
            l.l->v[i++] = jv_from_json(E, c, depth + 1);
        return l;
    }
    if (cJSON_IsObject(j)) {
        struct jv d = v_dict(E);
        for (const cJSON *c = j->child; c; c = c->next)
            jv_dict_set(E, d.d, v_cstr(c->string ? c->string : ""), jv_from_json(E, c, depth + 1));
        return d;
    }
    return v_none();
}
