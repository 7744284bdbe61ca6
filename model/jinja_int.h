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

struct jarena_block;
struct jarena {
    struct jarena_block *head;
    size_t used, limit; /* bytes taken from malloc; limit 0 = none */
    jmp_buf *fail;      /* when set, an allocation failure longjmps here with 1 */
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

#endif
