/* jinja_int.h — what the Jinja parser (jinja_parse.c) and evaluator (jinja_eval.c) share: the
 * arena both allocate from, the value type and the AST. Private to model/jinja*.
 *
 * Every allocation of a parse or a render comes from one arena freed at once: values are shared
 * freely by pointer (templates cannot mutate lists or dicts; only namespace objects change, in
 * place), and an error can unwind with longjmp without leaking.
 */
#ifndef FG_JINJA_INT_H
#define FG_JINJA_INT_H

#include <setjmp.h>
#include <stddef.h>
#include <string.h>

struct jarena_block;
struct jarena {
    struct jarena_block *head;
    size_t used, limit; /* bytes taken from malloc; limit 0 = none */
    jmp_buf *fail;      /* when set, an allocation failure longjmps here with 1 */
    int over_limit;     /* the failure was the limit, not malloc */
};
void *jarena_alloc(struct jarena *a, size_t n); /* zeroed; NULL (or longjmp) when out */
char *jarena_strndup(struct jarena *a, const char *s, size_t n);
void jarena_free(struct jarena *a);

enum jv_type {
    JV_UNDEF = 0,
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STR,
    JV_LIST,
    JV_DICT,   /* also namespace() objects (d->ns) */
    JV_FUNC,   /* a global function: range, namespace, raise_exception, strftime_now, dict */
    JV_METHOD, /* a method bound to a value: "  x ".strip */
    JV_MACRO,
};

struct jv_list;
struct jv_dict;
struct jv_method;
struct jnode;

struct jv {
    enum jv_type t;
    union {
        long long i; /* JV_BOOL, JV_INT */
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
        struct jv_list *l;
        struct jv_dict *d;
        struct jv_method *m;
        const char *fn;          /* JV_FUNC: its name */
        const struct jnode *mac; /* JV_MACRO */
    };
    const char *undef_name; /* JV_UNDEF: what was missing, for the error message */
};

struct jv_list {
    struct jv *v;
    size_t n;
    int tuple; /* prints as (a, b) */
};
struct jv_dict {
    struct jv *k, *v;
    size_t n, cap;
    int ns;
};
struct jv_method {
    struct jv self;
    const char *name;
};

enum jexpr_kind {
    JE_LIT,
    JE_NAME,
    JE_ATTR,   /* a.name */
    JE_INDEX,  /* a[b] */
    JE_SLICE,  /* a[b:c:d], each of b c d may be NULL */
    JE_CALL,   /* a(args) */
    JE_FILTER, /* a | name(args) */
    JE_TEST,   /* a is [not] name(args); op = 1 when negated */
    JE_UNARY,  /* op: 'n' not, '-', '+' */
    JE_BINARY, /* op: see jinja_parse.c's operator codes */
    JE_COND,   /* b if a else c (c may be NULL) */
    JE_LIST,
    JE_TUPLE,
    JE_DICT, /* args: key, value, key, value ... */
};

/* Binary operator codes beyond single characters (+ - * / % ~ < >). */
enum {
    JOP_EQ = 256,
    JOP_NE,
    JOP_LE,
    JOP_GE,
    JOP_FLOORDIV,
    JOP_POW,
    JOP_IN,
    JOP_NOTIN,
    JOP_AND,
    JOP_OR
};

struct jexpr {
    enum jexpr_kind kind;
    int op;
    int line, col;
    struct jexpr *a, *b, *c;
    const char *name; /* JE_NAME, JE_ATTR, JE_FILTER, JE_TEST */
    struct jv lit;
    struct jexpr **args; /* (nargs) */
    const char **kw;     /* (nargs): keyword of each argument, NULL for positional */
    int nargs;
};

enum jnode_kind {
    JN_TEXT,
    JN_OUT,
    JN_IF,    /* cond; body; else_body (an elif is an if in else_body) */
    JN_FOR,   /* targets; iter; cond (the loop filter, or NULL); body; else_body */
    JN_SET,   /* target (name) [. attr]; expr, or body for a block set */
    JN_MACRO, /* target = name; params/defaults; body */
    JN_BREAK,
    JN_CONTINUE,
    JN_BLOCK, /* {% generation %}: renders its body */
};

struct jbody {
    struct jnode **v;
    int n;
};

struct jnode {
    enum jnode_kind kind;
    int line, col;
    const char *text; /* JN_TEXT */
    size_t len;
    struct jexpr *expr, *cond;
    const char *target, *attr;
    const char **targets;    /* JN_FOR: (ntargets); JN_MACRO: parameter names (ntargets) */
    struct jexpr **defaults; /* JN_MACRO: (ntargets), NULL where none */
    int ntargets;
    struct jbody body, else_body;
};

struct jinja_template {
    struct jarena arena;
    struct jbody root;
};

/* ---- rendering state shared by jinja_eval.c and jinja_value.c ---- */

struct cJSON;

/* Text built in the render's arena; n bytes, NUL-terminated once anything was added. */
struct buf {
    char *p;
    size_t n, cap;
};

/* Variables of one frame (the globals, a for loop, a macro call); lookups walk to parent. */
struct scope {
    struct scope *parent;
    const char **names;
    struct jv *vals;
    int n, cap;
};

/* One render: its arena, where errors unwind to, the message buffer and the bounds. */
struct ev {
    struct jarena a;
    jmp_buf fail;
    char *err;
    size_t errlen;
    size_t max_output;
    long steps, max_steps;
    int depth;      /* macro calls */
    int eval_depth; /* expression recursion */
    struct scope *globals;
    const void *printing[64]; /* lists/dicts being printed (a namespace may hold itself) */
    int n_printing;
};
#define JV_MAX_NESTING 64 /* printing[]'s size */

/* Record "chat template line LINE: ..." (LINE <= 0: no line) and unwind the render. */
_Noreturn void jinja_fail(struct ev *E, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- value constructors ---- */

static inline struct jv v_undef(const char *name) {
    return (struct jv){.t = JV_UNDEF, .undef_name = name};
}
static inline struct jv v_none(void) {
    return (struct jv){.t = JV_NONE};
}
static inline struct jv v_bool(int b) {
    return (struct jv){.t = JV_BOOL, .i = !!b};
}
static inline struct jv v_int(long long i) {
    return (struct jv){.t = JV_INT, .i = i};
}
static inline struct jv v_float(double f) {
    return (struct jv){.t = JV_FLOAT, .f = f};
}
static inline struct jv v_str(const char *p, size_t n) {
    return (struct jv){.t = JV_STR, .s = {p, n}};
}
static inline struct jv v_cstr(const char *p) {
    return v_str(p, strlen(p));
}
static inline struct jv v_buf(struct buf *b) {
    return v_str(b->p ? b->p : "", b->n);
}
static inline struct jv v_list(struct ev *E, size_t n) {
    struct jv_list *l = jarena_alloc(&E->a, sizeof(*l));
    l->v = jarena_alloc(&E->a, (n ? n : 1) * sizeof(*l->v));
    l->n = n;
    return (struct jv){.t = JV_LIST, .l = l};
}
static inline struct jv v_dict(struct ev *E) {
    struct jv_dict *d = jarena_alloc(&E->a, sizeof(*d));
    return (struct jv){.t = JV_DICT, .d = d};
}

/* json.dumps options (transformers' tojson). */
struct json_opts {
    int indent; /* < 0: none */
    const char *item_sep, *key_sep;
    int sort_keys;
};

void jv_buf_add(struct ev *E, struct buf *b, const char *s, size_t n); /* bounded by max_output */
void jv_buf_str(struct ev *E, struct buf *b, const char *s);
void jv_buf_printf(struct ev *E, struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *jv_type_name(const struct jv *v); /* Python's type name, for messages */
int jv_is_num(const struct jv *v);            /* int, float or bool */
double jv_num(const struct jv *v);
int jv_truthy(const struct jv *v); /* Python truthiness; Undefined is false */
struct jv *jv_dict_find(const struct jv_dict *d, const struct jv *k);
struct jv *jv_dict_get(const struct jv_dict *d, const char *key);
void jv_dict_set(struct ev *E, struct jv_dict *d, struct jv k, struct jv v);
size_t jv_u8_len(const char *s, size_t n);           /* code points */
size_t jv_u8_off(const char *s, size_t n, size_t i); /* byte offset of code point i */
void jv_to_str(struct ev *E, struct buf *b, const struct jv *v, int repr); /* str() or repr() */
struct jv jv_str_of(struct ev *E, const struct jv *v);
void jv_to_json(struct ev *E, struct buf *b, const struct jv *v, const struct json_opts *o,
                int level, int line);
int jv_equal(const struct jv *a, const struct jv *b);
int jv_cmp(struct ev *E, const struct jv *a, const struct jv *b, int line); /* <0, 0, >0 or fail */
int jv_contains(struct ev *E, const struct jv *hay, const struct jv *needle, int line); /* in */
struct jv jv_as_list(struct ev *E, const struct jv *v, int line); /* what a for loop iterates */
long long jv_length(struct ev *E, const struct jv *v, int line);  /* len() */
struct jv jv_from_json(struct ev *E, const struct cJSON *j, int depth);

#endif
