/* jinja_parse.c — Jinja source → AST: the arena, the lexer and a recursive-descent parser.
 *
 * The lexer follows Jinja 3.1 with the options transformers renders chat templates under:
 * newlines normalised to \n and one trailing newline dropped (keep_trailing_newline=False),
 * trim_blocks (the newline after a block or comment tag goes), lstrip_blocks (spaces and tabs
 * before a block or comment tag that starts a line go; `{%+` keeps them), and `-` on either side
 * of a tag strips all whitespace there. The parser keeps Jinja's precedence: or < and < not <
 * comparisons (in, not in) < + - < ~ < * / // % < ** < unary, with filters, tests, calls,
 * attributes and subscripts binding tightest. Errors longjmp to jinja_parse, which reports the
 * line and column and frees the arena.
 */
#include "model/jinja.h"
#include "model/jinja_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */

struct jarena_block {
    struct jarena_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

#define JARENA_BLOCK 65536 /* bytes per block: a chat render fits in one or two */

void *jarena_alloc(struct jarena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    struct jarena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > JARENA_BLOCK ? n : JARENA_BLOCK;
        if (a->limit && a->used + cap > a->limit) {
            b = NULL;
            a->over_limit = 1;
        } else {
            b = malloc(sizeof(*b) + cap);
        }
        if (!b) {
            if (a->fail) longjmp(*a->fail, 1);
            return NULL;
        }
        a->used += cap;
        b->cap = cap;
        b->used = 0;
        /* A large one-off block goes behind the current one so its free space stays usable. */
        if (a->head && n > JARENA_BLOCK) {
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *jarena_strndup(struct jarena *a, const char *s, size_t n) {
    char *p = jarena_alloc(a, n + 1);
    if (p && n) memcpy(p, s, n);
    return p;
}

void jarena_free(struct jarena *a) {
    struct jarena_block *b = a->head;
    while (b) {
        struct jarena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->used = 0;
}

/* ---- lexer ---- */

enum tok_kind {
    TK_EOF,
    TK_TEXT,
    TK_VAR_BEGIN,
    TK_VAR_END,
    TK_BLOCK_BEGIN,
    TK_BLOCK_END,
    TK_NAME,
    TK_STR,
    TK_INT,
    TK_FLOAT,
    TK_OP,
};

struct tok {
    enum tok_kind kind;
    int line, col;
    const char *p; /* TK_TEXT, TK_NAME, TK_OP: the bytes; TK_STR: the unescaped string */
    size_t n;
    long long i;
    double f;
};

struct parser {
    struct jarena *a;
    const char *src; /* normalised source */
    size_t len;
    struct tok *t;
    int nt, cap, pos;
    int line, col; /* of offset lc_off, advanced monotonically */
    size_t lc_off;
    int depth;
    jmp_buf fail;
    char *err;
    size_t errlen;
};

#define JPARSE_MAX_DEPTH 200 /* nesting of expressions and blocks; real templates use < 20 */

static void lc_at(struct parser *P, size_t off, int *line, int *col) {
    if (off < P->lc_off) { /* backwards (an error pointing at a tag's start): count again */
        P->lc_off = 0;
        P->line = P->col = 1;
    }
    for (; P->lc_off < off; P->lc_off++) {
        if (P->src[P->lc_off] == '\n') {
            P->line++;
            P->col = 1;
        } else if (((unsigned char)P->src[P->lc_off] & 0xC0) != 0x80) {
            P->col++;
        }
    }
    *line = P->line;
    *col = P->col;
}

static _Noreturn void perr(struct parser *P, int line, int col, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(P->err, P->errlen, "line %d, column %d: %s", line, col, msg);
    longjmp(P->fail, 2);
}

static struct tok *push(struct parser *P, enum tok_kind k, size_t off, const char *p, size_t n) {
    if (P->nt == P->cap) {
        int cap = P->cap ? 2 * P->cap : 256;
        struct tok *t = jarena_alloc(P->a, (size_t)cap * sizeof(*t));
        if (P->nt) memcpy(t, P->t, (size_t)P->nt * sizeof(*t));
        P->t = t;
        P->cap = cap;
    }
    struct tok *t = &P->t[P->nt++];
    memset(t, 0, sizeof(*t));
    t->kind = k;
    t->p = p;
    t->n = n;
    lc_at(P, off, &t->line, &t->col);
    return t;
}

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
static int is_name0(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static int is_digit(char c) {
    return c >= '0' && c <= '9';
}

static void put_utf8(char **o, unsigned long cp) {
    unsigned char *u = (unsigned char *)*o;
    if (cp < 0x80) {
        *u++ = (unsigned char)cp;
    } else if (cp < 0x800) {
        *u++ = (unsigned char)(0xC0 | cp >> 6);
        *u++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *u++ = (unsigned char)(0xE0 | cp >> 12);
        *u++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *u++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else {
        *u++ = (unsigned char)(0xF0 | cp >> 18);
        *u++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        *u++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *u++ = (unsigned char)(0x80 | (cp & 0x3F));
    }
    *o = (char *)u;
}

/* A string literal at OFF (its quote): Python's escapes. Returns the offset past it. */
static size_t lex_string(struct parser *P, size_t off) {
    char q = P->src[off];
    size_t i = off + 1;
    while (i < P->len && P->src[i] != q)
        i += P->src[i] == '\\' && i + 1 < P->len ? 2 : 1;
    if (i >= P->len) {
        int l, c;
        lc_at(P, off, &l, &c);
        perr(P, l, c, "unterminated string");
    }
    char *out = jarena_alloc(P->a, i - off), *o = out;
    for (size_t k = off + 1; k < i; k++) {
        char c = P->src[k];
        if (c != '\\' || k + 1 >= i) {
            *o++ = c;
            continue;
        }
        char e = P->src[++k];
        int hex = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        if (hex && k + (size_t)hex < i) {
            char h[9] = {0};
            memcpy(h, P->src + k + 1, (size_t)hex);
            char *end;
            unsigned long cp = strtoul(h, &end, 16);
            if (*end == '\0' && cp <= 0x10FFFF) {
                put_utf8(&o, cp);
                k += (size_t)hex;
                continue;
            }
        }
        switch (e) {
        case 'n':
            *o++ = '\n';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case '0':
            *o++ = '\0';
            break;
        case 'a':
            *o++ = '\a';
            break;
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'v':
            *o++ = '\v';
            break;
        case '\\':
        case '\'':
        case '"':
            *o++ = e;
            break;
        case '\n':
            break;
        default:
            *o++ = '\\';
            *o++ = e;
            break; /* Python keeps unknown escapes */
        }
    }
    struct tok *t = push(P, TK_STR, off, out, (size_t)(o - out));
    (void)t;
    return i + 1;
}

/* Tokens inside a tag from OFF up to its end marker (VAR: "}}", else "%}"). Returns the offset
 * of the end marker's first character ('-', '+' or the closing one), storing the marker kind. */
static size_t lex_tag(struct parser *P, size_t open, size_t off, int var, int *end_strip,
                      int *end_keep) {
    static const char *ops3[] = {"**", "//", "==", "!=", "<=", ">="};
    int depth = 0;
    size_t i = off;
    for (;;) {
        while (i < P->len && is_space(P->src[i]))
            i++;
        if (i >= P->len) {
            int l, c;
            lc_at(P, open, &l, &c);
            perr(P, l, c, "unclosed %s tag", var ? "{{" : "{%");
        }
        const char *s = P->src + i;
        size_t left = P->len - i;
        const char *close = var ? "}}" : "%}";
        if (depth == 0) {
            if ((s[0] == '-' || s[0] == '+') && left >= 3 && !memcmp(s + 1, close, 2)) {
                *end_strip = s[0] == '-';
                *end_keep = s[0] == '+';
                return i;
            }
            if (left >= 2 && !memcmp(s, close, 2)) {
                *end_strip = *end_keep = 0;
                return i;
            }
        }
        if (is_name0(*s)) {
            size_t n = 1;
            while (n < left && (is_name0(s[n]) || is_digit(s[n])))
                n++;
            push(P, TK_NAME, i, s, n);
            i += n;
        } else if (is_digit(*s)) {
            size_t n = 0;
            int flt = 0;
            while (n < left && (is_digit(s[n]) || s[n] == '_'))
                n++;
            if (n + 1 < left && s[n] == '.' && is_digit(s[n + 1])) {
                flt = 1;
                n++;
                while (n < left && is_digit(s[n]))
                    n++;
            }
            if (n < left && (s[n] == 'e' || s[n] == 'E')) {
                size_t m = n + 1;
                if (m < left && (s[m] == '+' || s[m] == '-')) m++;
                if (m < left && is_digit(s[m])) {
                    flt = 1;
                    n = m;
                    while (n < left && is_digit(s[n]))
                        n++;
                }
            }
            char buf[64];
            size_t k = 0;
            for (size_t j = 0; j < n && k + 1 < sizeof buf; j++)
                if (s[j] != '_') buf[k++] = s[j];
            buf[k] = '\0';
            struct tok *t = push(P, flt ? TK_FLOAT : TK_INT, i, s, n);
            errno = 0;
            if (flt)
                t->f = strtod(buf, NULL);
            else
                t->i = strtoll(buf, NULL, 10);
            if (errno) perr(P, t->line, t->col, "number out of range");
            i += n;
        } else if (*s == '\'' || *s == '"') {
            i = lex_string(P, i);
        } else {
            size_t n = 1;
            for (size_t k = 0; k < sizeof ops3 / sizeof *ops3; k++)
                if (left >= 2 && !memcmp(s, ops3[k], 2)) n = 2;
            if (n == 1 && !strchr("+-*/%~<>()[]{},.:|=!", *s)) {
                int l, c;
                lc_at(P, i, &l, &c);
                perr(P, l, c, "unexpected character '%c'", *s);
            }
            if (*s == '(' || *s == '[' || *s == '{') depth++;
            if ((*s == ')' || *s == ']' || *s == '}') && depth > 0) depth--;
            push(P, TK_OP, i, s, n);
            i += n;
        }
    }
}

static void lex(struct parser *P) {
    size_t i = 0;
    int strip_next = 0, line_start = 1;
    while (i < P->len) {
        /* The next tag. */
        size_t j = i;
        int kind = 0; /* '{' var, '%' block, '#' comment */
        while (j + 1 < P->len) {
            if (P->src[j] == '{' && strchr("{%#", P->src[j + 1])) {
                kind = P->src[j + 1];
                break;
            }
            j++;
        }
        if (!kind) j = P->len;
        size_t a = i, b = j;
        if (strip_next) {
            while (a < b && is_space(P->src[a]))
                a++;
            if (a > i) line_start = P->src[a - 1] == '\n';
        }
        if (kind) {
            char m = j + 2 < P->len ? P->src[j + 2] : 0;
            if (m == '-') {
                while (b > a && is_space(P->src[b - 1]))
                    b--;
            } else if (kind != '{' && m != '+') {
                /* lstrip_blocks: only spaces and tabs between the line's start and the tag. */
                size_t k = b;
                while (k > a && (P->src[k - 1] == ' ' || P->src[k - 1] == '\t'))
                    k--;
                if (k < b && ((k > a && P->src[k - 1] == '\n') || (k == a && line_start))) b = k;
            }
        }
        if (b > a) push(P, TK_TEXT, a, P->src + a, b - a);
        if (!kind) break;
        size_t k = j + 2;
        if (k < P->len && (P->src[k] == '-' || P->src[k] == '+')) k++;
        int es = 0, ek = 0;
        if (kind == '#') {
            const char *e = NULL;
            for (size_t q = k; q + 1 < P->len; q++)
                if (P->src[q] == '#' && P->src[q + 1] == '}') {
                    e = P->src + q;
                    break;
                }
            if (!e) {
                int l, c;
                lc_at(P, j, &l, &c);
                perr(P, l, c, "unclosed comment");
            }
            size_t q = (size_t)(e - P->src);
            es = q > k && P->src[q - 1] == '-';
            ek = q > k && P->src[q - 1] == '+';
            i = q + 2;
        } else {
            push(P, kind == '{' ? TK_VAR_BEGIN : TK_BLOCK_BEGIN, j, P->src + j, 2);
            size_t e = lex_tag(P, j, k, kind == '{', &es, &ek);
            push(P, kind == '{' ? TK_VAR_END : TK_BLOCK_END, e, P->src + e, 2);
            i = e + 2 + (P->src[e] == '-' || P->src[e] == '+');
        }
        strip_next = es;
        line_start = 0;
        if (kind != '{' && !es && !ek && i < P->len && P->src[i] == '\n') {
            i++; /* trim_blocks */
            line_start = 1;
        }
    }
    push(P, TK_EOF, P->len, P->src + P->len, 0);
}

/* ---- parser ---- */

static struct tok *cur(struct parser *P) {
    return &P->t[P->pos];
}
static int is_op(const struct tok *t, const char *op) {
    return t->kind == TK_OP && t->n == strlen(op) && !memcmp(t->p, op, t->n);
}
static int is_name(const struct tok *t, const char *name) {
    return t->kind == TK_NAME && t->n == strlen(name) && !memcmp(t->p, name, t->n);
}
static _Noreturn void unexpected(struct parser *P, const char *want) {
    struct tok *t = cur(P);
    const char *what = t->kind == TK_EOF         ? "end of template"
                       : t->kind == TK_VAR_END   ? "end of print statement"
                       : t->kind == TK_BLOCK_END ? "end of statement block"
                       : t->kind == TK_STR       ? "string"
                                                 : NULL;
    if (what) perr(P, t->line, t->col, "expected %s, got %s", want, what);
    perr(P, t->line, t->col, "expected %s, got '%.*s'", want, (int)(t->n > 40 ? 40 : t->n), t->p);
}
static void expect_op(struct parser *P, const char *op) {
    if (!is_op(cur(P), op)) {
        char w[16];
        snprintf(w, sizeof w, "'%s'", op);
        unexpected(P, w);
    }
    P->pos++;
}
static const char *expect_name(struct parser *P) {
    struct tok *t = cur(P);
    if (t->kind != TK_NAME) unexpected(P, "a name");
    P->pos++;
    return jarena_strndup(P->a, t->p, t->n);
}

static struct jexpr *mk(struct parser *P, enum jexpr_kind k, const struct tok *at) {
    struct jexpr *e = jarena_alloc(P->a, sizeof(*e));
    e->kind = k;
    e->line = at->line;
    e->col = at->col;
    return e;
}

static void enter(struct parser *P) {
    if (++P->depth > JPARSE_MAX_DEPTH)
        perr(P, cur(P)->line, cur(P)->col, "nested too deeply (over %d levels)", JPARSE_MAX_DEPTH);
}

static struct jexpr *expression(struct parser *P);
static struct jexpr *or_expr(struct parser *P);
static struct jexpr *unary(struct parser *P, int with_filters);

/* Argument lists: (a, b, name=c). Keeps the opening token consumed by the caller. */
static void arglist(struct parser *P, struct jexpr *e, const char *close) {
    struct jexpr *args[64];
    const char *kw[64];
    int n = 0;
    while (!is_op(cur(P), close)) {
        if (n == 64) perr(P, cur(P)->line, cur(P)->col, "too many arguments");
        kw[n] = NULL;
        if (cur(P)->kind == TK_NAME && is_op(&P->t[P->pos + 1], "=")) {
            kw[n] = expect_name(P);
            P->pos++;
        }
        args[n++] = expression(P);
        if (!is_op(cur(P), ",")) break;
        P->pos++;
    }
    expect_op(P, close);
    e->nargs = n;
    e->args = jarena_alloc(P->a, (size_t)(n ? n : 1) * sizeof(*e->args));
    e->kw = jarena_alloc(P->a, (size_t)(n ? n : 1) * sizeof(*e->kw));
    memcpy(e->args, args, (size_t)n * sizeof(*args));
    memcpy(e->kw, kw, (size_t)n * sizeof(*kw));
}

static struct jexpr *primary(struct parser *P) {
    struct tok *t = cur(P);
    struct jexpr *e;
    if (t->kind == TK_NAME) {
        P->pos++;
        e = mk(P, JE_LIT, t);
        if (is_name(t, "true") || is_name(t, "True"))
            e->lit = (struct jv){.t = JV_BOOL, .i = 1};
        else if (is_name(t, "false") || is_name(t, "False"))
            e->lit = (struct jv){.t = JV_BOOL};
        else if (is_name(t, "none") || is_name(t, "None"))
            e->lit = (struct jv){.t = JV_NONE};
        else {
            e->kind = JE_NAME;
            e->name = jarena_strndup(P->a, t->p, t->n);
        }
        return e;
    }
    if (t->kind == TK_STR) {
        /* Adjacent literals concatenate, as in Python. */
        size_t n = 0;
        int k = P->pos;
        while (P->t[k].kind == TK_STR)
            n += P->t[k++].n;
        char *s = jarena_alloc(P->a, n + 1), *o = s;
        while (cur(P)->kind == TK_STR) {
            memcpy(o, cur(P)->p, cur(P)->n);
            o += cur(P)->n;
            P->pos++;
        }
        e = mk(P, JE_LIT, t);
        e->lit = (struct jv){.t = JV_STR, .s = {s, n}};
        return e;
    }
    if (t->kind == TK_INT || t->kind == TK_FLOAT) {
        P->pos++;
        e = mk(P, JE_LIT, t);
        e->lit = t->kind == TK_INT ? (struct jv){.t = JV_INT, .i = t->i}
                                   : (struct jv){.t = JV_FLOAT, .f = t->f};
        return e;
    }
    if (is_op(t, "(")) {
        P->pos++;
        if (is_op(cur(P), ")")) {
            P->pos++;
            e = mk(P, JE_TUPLE, t);
            e->args = jarena_alloc(P->a, sizeof(*e->args));
            return e;
        }
        struct jexpr *first = expression(P);
        if (!is_op(cur(P), ",")) {
            expect_op(P, ")");
            return first;
        }
        e = mk(P, JE_TUPLE, t);
        P->pos++;
        struct jexpr *rest = mk(P, JE_TUPLE, t);
        arglist(P, rest, ")");
        e->nargs = rest->nargs + 1;
        e->args = jarena_alloc(P->a, (size_t)e->nargs * sizeof(*e->args));
        e->args[0] = first;
        memcpy(e->args + 1, rest->args, (size_t)rest->nargs * sizeof(*e->args));
        return e;
    }
    if (is_op(t, "[")) {
        P->pos++;
        e = mk(P, JE_LIST, t);
        arglist(P, e, "]");
        return e;
    }
    if (is_op(t, "{")) {
        P->pos++;
        e = mk(P, JE_DICT, t);
        struct jexpr *kv[128];
        int n = 0;
        while (!is_op(cur(P), "}")) {
            if (n == 128) perr(P, cur(P)->line, cur(P)->col, "dict literal too long");
            kv[n++] = expression(P);
            expect_op(P, ":");
            kv[n++] = expression(P);
            if (!is_op(cur(P), ",")) break;
            P->pos++;
        }
        expect_op(P, "}");
        e->nargs = n;
        e->args = jarena_alloc(P->a, (size_t)(n ? n : 1) * sizeof(*e->args));
        memcpy(e->args, kv, (size_t)n * sizeof(*kv));
        return e;
    }
    unexpected(P, "an expression");
}

/* Subscript: a[i] or a[b:c:d]. */
static struct jexpr *subscript(struct parser *P, struct jexpr *obj, const struct tok *at) {
    struct jexpr *parts[3] = {NULL, NULL, NULL};
    int colons = 0;
    for (;;) {
        if (is_op(cur(P), ":")) {
            if (++colons > 2) unexpected(P, "']'");
            P->pos++;
            continue;
        }
        if (is_op(cur(P), "]")) break;
        if (parts[colons]) unexpected(P, "':' or ']'");
        parts[colons] = expression(P);
    }
    P->pos++;
    struct jexpr *e = mk(P, colons ? JE_SLICE : JE_INDEX, at);
    e->a = obj;
    if (!colons) {
        if (!parts[0]) perr(P, at->line, at->col, "empty subscript");
        e->b = parts[0];
    } else {
        e->b = parts[0];
        e->c = parts[1];
        e->args = jarena_alloc(P->a, sizeof(*e->args));
        e->args[0] = parts[2];
        e->nargs = 1;
    }
    return e;
}

static struct jexpr *postfix(struct parser *P, struct jexpr *e) {
    for (;;) {
        struct tok *t = cur(P);
        if (is_op(t, ".")) {
            P->pos++;
            struct tok *n = cur(P);
            struct jexpr *x = mk(P, JE_ATTR, t);
            x->a = e;
            if (n->kind == TK_INT) { /* a.0 is a[0] */
                P->pos++;
                x->kind = JE_INDEX;
                x->b = mk(P, JE_LIT, n);
                x->b->lit = (struct jv){.t = JV_INT, .i = n->i};
            } else {
                x->name = expect_name(P);
            }
            e = x;
        } else if (is_op(t, "[")) {
            P->pos++;
            e = subscript(P, e, t);
        } else if (is_op(t, "(")) {
            P->pos++;
            struct jexpr *x = mk(P, JE_CALL, t);
            x->a = e;
            arglist(P, x, ")");
            e = x;
        } else {
            return e;
        }
    }
}

/* Filters (| name(args)) and tests (is [not] name [arg]) after a unary expression. */
static struct jexpr *filters(struct parser *P, struct jexpr *e) {
    for (;;) {
        struct tok *t = cur(P);
        if (is_op(t, "|")) {
            P->pos++;
            struct jexpr *x = mk(P, JE_FILTER, cur(P));
            x->a = e;
            x->name = expect_name(P);
            while (is_op(cur(P), ".")) { /* dotted filter names */
                P->pos++;
                const char *more = expect_name(P);
                size_t n = strlen(x->name) + strlen(more) + 2;
                char *s = jarena_alloc(P->a, n);
                snprintf(s, n, "%s.%s", x->name, more);
                x->name = s;
            }
            if (is_op(cur(P), "(")) {
                P->pos++;
                arglist(P, x, ")");
            } else {
                x->args = jarena_alloc(P->a, sizeof(*x->args));
            }
            e = x;
        } else if (is_name(t, "is")) {
            P->pos++;
            struct jexpr *x = mk(P, JE_TEST, t);
            x->a = e;
            if (is_name(cur(P), "not")) {
                x->op = 1;
                P->pos++;
            }
            /* Test names may be keywords (none, true, false, in). */
            struct tok *n = cur(P);
            if (n->kind != TK_NAME) unexpected(P, "a test name");
            P->pos++;
            x->name = jarena_strndup(P->a, n->p, n->n);
            struct tok *nx = cur(P);
            if (is_op(nx, "(")) {
                P->pos++;
                arglist(P, x, ")");
            } else if (nx->kind == TK_STR || nx->kind == TK_INT || nx->kind == TK_FLOAT ||
                       is_op(nx, "[") || is_op(nx, "{") ||
                       (nx->kind == TK_NAME && !is_name(nx, "else") && !is_name(nx, "or") &&
                        !is_name(nx, "and") && !is_name(nx, "if") && !is_name(nx, "is") &&
                        !is_name(nx, "in") && !is_name(nx, "not"))) {
                x->nargs = 1;
                x->args = jarena_alloc(P->a, sizeof(*x->args));
                x->kw = jarena_alloc(P->a, sizeof(*x->kw));
                x->args[0] = postfix(P, primary(P));
            } else {
                x->args = jarena_alloc(P->a, sizeof(*x->args));
            }
            e = x;
        } else if (is_op(t, "(") && e->kind == JE_FILTER) {
            P->pos++;
            struct jexpr *x = mk(P, JE_CALL, t);
            x->a = e;
            arglist(P, x, ")");
            e = x;
        } else {
            return e;
        }
    }
}

static struct jexpr *unary(struct parser *P, int with_filters) {
    enter(P);
    struct tok *t = cur(P);
    struct jexpr *e;
    if (is_op(t, "-") || is_op(t, "+")) {
        P->pos++;
        e = mk(P, JE_UNARY, t);
        e->op = *t->p;
        e->a = unary(P, 0);
    } else {
        e = postfix(P, primary(P));
    }
    if (with_filters) e = filters(P, e);
    P->depth--;
    return e;
}

static struct jexpr *binary(struct parser *P, int op, struct jexpr *a, struct jexpr *b,
                            const struct tok *at) {
    struct jexpr *e = mk(P, JE_BINARY, at);
    e->op = op;
    e->a = a;
    e->b = b;
    return e;
}

static struct jexpr *pow_expr(struct parser *P) {
    struct jexpr *e = unary(P, 1);
    while (is_op(cur(P), "**")) {
        struct tok *t = cur(P);
        P->pos++;
        e = binary(P, JOP_POW, e, unary(P, 1), t);
    }
    return e;
}

static struct jexpr *mul_expr(struct parser *P) {
    struct jexpr *e = pow_expr(P);
    for (;;) {
        struct tok *t = cur(P);
        int op = is_op(t, "*")    ? '*'
                 : is_op(t, "/")  ? '/'
                 : is_op(t, "//") ? JOP_FLOORDIV
                 : is_op(t, "%")  ? '%'
                                  : 0;
        if (!op) return e;
        P->pos++;
        e = binary(P, op, e, pow_expr(P), t);
    }
}

static struct jexpr *concat_expr(struct parser *P) {
    struct jexpr *e = mul_expr(P);
    while (is_op(cur(P), "~")) {
        struct tok *t = cur(P);
        P->pos++;
        e = binary(P, '~', e, mul_expr(P), t);
    }
    return e;
}

static struct jexpr *add_expr(struct parser *P) {
    struct jexpr *e = concat_expr(P);
    for (;;) {
        struct tok *t = cur(P);
        int op = is_op(t, "+") ? '+' : is_op(t, "-") ? '-' : 0;
        if (!op) return e;
        P->pos++;
        e = binary(P, op, e, concat_expr(P), t);
    }
}

static struct jexpr *compare(struct parser *P) {
    struct jexpr *e = add_expr(P), *chain = NULL, *prev = e;
    for (;;) {
        struct tok *t = cur(P);
        int op = is_op(t, "==")     ? JOP_EQ
                 : is_op(t, "!=")   ? JOP_NE
                 : is_op(t, "<=")   ? JOP_LE
                 : is_op(t, ">=")   ? JOP_GE
                 : is_op(t, "<")    ? '<'
                 : is_op(t, ">")    ? '>'
                 : is_name(t, "in") ? JOP_IN
                                    : 0;
        if (!op && is_name(t, "not") && is_name(&P->t[P->pos + 1], "in")) {
            op = JOP_NOTIN;
            P->pos++;
        }
        if (!op) return chain ? chain : e;
        P->pos++;
        struct jexpr *rhs = add_expr(P);
        struct jexpr *c = binary(P, op, prev, rhs, t);
        chain = chain ? binary(P, JOP_AND, chain, c, t) : c; /* a < b < c: a < b and b < c */
        prev = rhs;
    }
}

static struct jexpr *not_expr(struct parser *P) {
    struct tok *t = cur(P);
    if (is_name(t, "not")) {
        enter(P);
        P->pos++;
        struct jexpr *e = mk(P, JE_UNARY, t);
        e->op = 'n';
        e->a = not_expr(P);
        P->depth--;
        return e;
    }
    return compare(P);
}

static struct jexpr *and_expr(struct parser *P) {
    struct jexpr *e = not_expr(P);
    while (is_name(cur(P), "and")) {
        struct tok *t = cur(P);
        P->pos++;
        e = binary(P, JOP_AND, e, not_expr(P), t);
    }
    return e;
}

static struct jexpr *or_expr(struct parser *P) {
    struct jexpr *e = and_expr(P);
    while (is_name(cur(P), "or")) {
        struct tok *t = cur(P);
        P->pos++;
        e = binary(P, JOP_OR, e, and_expr(P), t);
    }
    return e;
}

static struct jexpr *expression(struct parser *P) {
    enter(P);
    struct jexpr *e = or_expr(P);
    while (is_name(cur(P), "if")) {
        struct tok *t = cur(P);
        P->pos++;
        struct jexpr *c = mk(P, JE_COND, t);
        c->b = e;
        c->a = or_expr(P);
        if (is_name(cur(P), "else")) {
            P->pos++;
            c->c = expression(P);
        }
        e = c;
    }
    P->depth--;
    return e;
}

/* An expression, or a bare tuple "a, b" (for {% set %} and {% for %} iterables). */
static struct jexpr *tuple_or_expr(struct parser *P) {
    struct tok *t = cur(P);
    struct jexpr *e = expression(P);
    if (!is_op(cur(P), ",")) return e;
    struct jexpr *items[64];
    int n = 0;
    items[n++] = e;
    while (is_op(cur(P), ",") && n < 64) {
        P->pos++;
        if (cur(P)->kind == TK_BLOCK_END || cur(P)->kind == TK_VAR_END) break;
        items[n++] = expression(P);
    }
    struct jexpr *x = mk(P, JE_TUPLE, t);
    x->nargs = n;
    x->args = jarena_alloc(P->a, (size_t)n * sizeof(*items));
    memcpy(x->args, items, (size_t)n * sizeof(*items));
    return x;
}

/* ---- statements ---- */

static struct jnode *node(struct parser *P, enum jnode_kind k, const struct tok *at) {
    struct jnode *n = jarena_alloc(P->a, sizeof(*n));
    n->kind = k;
    n->line = at->line;
    n->col = at->col;
    return n;
}

static void end_block(struct parser *P) {
    if (cur(P)->kind != TK_BLOCK_END) unexpected(P, "end of statement block");
    P->pos++;
}

/* Statements up to one of STOP's tags ({% name %}); returns the index in STOP of the tag found,
 * with P at the token after its name. STOP NULL: up to the end of the template. */
static int body(struct parser *P, struct jbody *out, const char *const *stop,
                const struct tok *open);

static void add(struct parser *P, struct jbody *b, struct jnode *n, int *cap) {
    if (b->n == *cap) {
        int c = *cap ? 2 * *cap : 8;
        struct jnode **v = jarena_alloc(P->a, (size_t)c * sizeof(*v));
        if (b->n) memcpy(v, b->v, (size_t)b->n * sizeof(*v));
        b->v = v;
        *cap = c;
    }
    b->v[b->n++] = n;
}

static struct jnode *stmt_if(struct parser *P, const struct tok *at) {
    static const char *const stop[] = {"elif", "else", "endif", NULL};
    struct jnode *n = node(P, JN_IF, at);
    n->cond = tuple_or_expr(P);
    end_block(P);
    int k = body(P, &n->body, stop, at);
    if (k == 0) {
        struct tok *t = &P->t[P->pos - 1];
        struct jnode *e = stmt_if(P, t);
        n->else_body.v = jarena_alloc(P->a, sizeof(*n->else_body.v));
        n->else_body.v[0] = e;
        n->else_body.n = 1;
        return n;
    }
    if (k == 1) {
        static const char *const stop2[] = {"endif", NULL};
        end_block(P);
        body(P, &n->else_body, stop2, at);
    }
    end_block(P);
    return n;
}

static struct jnode *stmt_for(struct parser *P, const struct tok *at) {
    static const char *const stop[] = {"else", "endfor", NULL};
    struct jnode *n = node(P, JN_FOR, at);
    const char *names[16];
    int nn = 0;
    int paren = is_op(cur(P), "(");
    if (paren) P->pos++;
    do {
        if (nn == 16) unexpected(P, "'in'");
        names[nn++] = expect_name(P);
    } while (is_op(cur(P), ",") && (P->pos++, 1));
    if (paren) expect_op(P, ")");
    n->ntargets = nn;
    n->targets = jarena_alloc(P->a, (size_t)nn * sizeof(*names));
    memcpy(n->targets, names, (size_t)nn * sizeof(*names));
    if (!is_name(cur(P), "in")) unexpected(P, "'in'");
    P->pos++;
    /* The iterable stops before a loop filter's "if" (no conditional expression there). */
    struct tok *t = cur(P);
    struct jexpr *it = or_expr(P);
    if (is_op(cur(P), ",")) {
        struct jexpr *tup = mk(P, JE_TUPLE, t);
        struct jexpr *items[64];
        int k = 0;
        items[k++] = it;
        while (is_op(cur(P), ",") && k < 64) {
            P->pos++;
            items[k++] = or_expr(P);
        }
        tup->nargs = k;
        tup->args = jarena_alloc(P->a, (size_t)k * sizeof(*items));
        memcpy(tup->args, items, (size_t)k * sizeof(*items));
        it = tup;
    }
    n->expr = it;
    if (is_name(cur(P), "if")) {
        P->pos++;
        n->cond = expression(P);
    }
    if (is_name(cur(P), "recursive"))
        perr(P, cur(P)->line, cur(P)->col, "recursive loops are not supported");
    end_block(P);
    int k = body(P, &n->body, stop, at);
    if (k == 0) {
        static const char *const stop2[] = {"endfor", NULL};
        end_block(P);
        body(P, &n->else_body, stop2, at);
    }
    end_block(P);
    return n;
}

static struct jnode *stmt_set(struct parser *P, const struct tok *at) {
    struct jnode *n = node(P, JN_SET, at);
    n->target = expect_name(P);
    if (is_op(cur(P), ".")) {
        P->pos++;
        n->attr = expect_name(P);
    } else if (is_op(cur(P), ",")) {
        perr(P, cur(P)->line, cur(P)->col, "tuple assignment in set is not supported");
    }
    if (is_op(cur(P), "=")) {
        P->pos++;
        n->expr = tuple_or_expr(P);
        end_block(P);
        return n;
    }
    /* Block set: {% set x %}...{% endset %} */
    static const char *const stop[] = {"endset", NULL};
    end_block(P);
    body(P, &n->body, stop, at);
    end_block(P);
    return n;
}

static struct jnode *stmt_macro(struct parser *P, const struct tok *at) {
    struct jnode *n = node(P, JN_MACRO, at);
    n->target = expect_name(P);
    expect_op(P, "(");
    const char *names[32];
    struct jexpr *defs[32];
    int k = 0;
    while (!is_op(cur(P), ")")) {
        if (k == 32) unexpected(P, "')'");
        names[k] = expect_name(P);
        defs[k] = NULL;
        if (is_op(cur(P), "=")) {
            P->pos++;
            defs[k] = expression(P);
        }
        k++;
        if (!is_op(cur(P), ",")) break;
        P->pos++;
    }
    expect_op(P, ")");
    n->ntargets = k;
    n->targets = jarena_alloc(P->a, (size_t)(k ? k : 1) * sizeof(*names));
    n->defaults = jarena_alloc(P->a, (size_t)(k ? k : 1) * sizeof(*defs));
    memcpy(n->targets, names, (size_t)k * sizeof(*names));
    memcpy(n->defaults, defs, (size_t)k * sizeof(*defs));
    end_block(P);
    static const char *const stop[] = {"endmacro", NULL};
    body(P, &n->body, stop, at);
    if (cur(P)->kind == TK_NAME) P->pos++; /* {% endmacro name %} */
    end_block(P);
    return n;
}

static int body(struct parser *P, struct jbody *out, const char *const *stop,
                const struct tok *open) {
    int cap = 0;
    enter(P);
    for (;;) {
        struct tok *t = cur(P);
        if (t->kind == TK_EOF) {
            if (!stop) {
                P->depth--;
                return -1;
            }
            perr(P, open->line, open->col, "unclosed block: expected {%% %s %%} before the end",
                 stop[0]);
        }
        if (t->kind == TK_TEXT) {
            struct jnode *n = node(P, JN_TEXT, t);
            n->text = t->p;
            n->len = t->n;
            add(P, out, n, &cap);
            P->pos++;
            continue;
        }
        if (t->kind == TK_VAR_BEGIN) {
            P->pos++;
            struct jnode *n = node(P, JN_OUT, t);
            n->expr = tuple_or_expr(P);
            if (cur(P)->kind != TK_VAR_END) unexpected(P, "end of print statement");
            P->pos++;
            add(P, out, n, &cap);
            continue;
        }
        if (t->kind != TK_BLOCK_BEGIN) unexpected(P, "template data");
        P->pos++;
        struct tok *name = cur(P);
        if (name->kind != TK_NAME) unexpected(P, "a statement name");
        for (int k = 0; stop && stop[k]; k++)
            if (is_name(name, stop[k])) {
                P->pos++;
                P->depth--;
                return k;
            }
        P->pos++;
        struct jnode *n;
        if (is_name(name, "if"))
            n = stmt_if(P, name);
        else if (is_name(name, "for"))
            n = stmt_for(P, name);
        else if (is_name(name, "set"))
            n = stmt_set(P, name);
        else if (is_name(name, "macro"))
            n = stmt_macro(P, name);
        else if (is_name(name, "break") || is_name(name, "continue")) {
            n = node(P, is_name(name, "break") ? JN_BREAK : JN_CONTINUE, name);
            end_block(P);
        } else if (is_name(name, "generation")) {
            static const char *const s2[] = {"endgeneration", NULL};
            n = node(P, JN_BLOCK, name);
            end_block(P);
            body(P, &n->body, s2, name);
            end_block(P);
        } else {
            perr(P, name->line, name->col, "unknown tag '%.*s'", (int)(name->n > 40 ? 40 : name->n),
                 name->p);
        }
        add(P, out, n, &cap);
    }
}

int jinja_parse(const char *src, size_t len, struct jinja_template **out, char *err,
                size_t errlen) {
    *out = NULL;
    struct jinja_template *t = calloc(1, sizeof(*t));
    if (!t) goto oom;
    struct parser P = {.a = &t->arena, .line = 1, .col = 1, .err = err, .errlen = errlen};
    t->arena.fail = &P.fail;
    int rc = setjmp(P.fail);
    if (rc) {
        jinja_free(t);
        if (rc == 1) goto oom;
        return JINJA_ERR_SYNTAX;
    }
    /* Newlines normalised to \n, one trailing newline dropped (Jinja's defaults). */
    char *s = jarena_alloc(&t->arena, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n && s[n - 1] == '\n') n--;
    s[n] = '\0';
    P.src = s;
    P.len = n;
    lex(&P);
    body(&P, &t->root, NULL, P.t);
    t->arena.fail = NULL;
    *out = t;
    return JINJA_OK;
oom:
    snprintf(err, errlen, "out of memory parsing the template");
    return JINJA_ERR_NOMEM;
}

void jinja_free(struct jinja_template *t) {
    if (!t) return;
    jarena_free(&t->arena);
    free(t);
}
