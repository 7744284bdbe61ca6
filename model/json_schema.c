/* json_schema.c — a JSON Schema compiled to grammar rules (grammar.h); and JSON mode.
 *
 * The subset OpenAI structured outputs and TGI accept:
 *   type (a name or a list of names): object, array, string, number, integer, boolean, null;
 *   properties / required / additionalProperties; items, minItems, maxItems; minLength,
 *   maxLength, pattern (regex.c's syntax), format (date-time, date, time, uuid, email); enum,
 *   const; anyOf; $ref to "#" or a JSON pointer into the document ($defs, definitions), recursion
 *   allowed. Annotations (title, description, default, examples, $schema, $id, $comment,
 *   deprecated, readOnly, writeOnly, strict) are ignored. Any other keyword is refused by name
 *   (grammar_from_json_schema's BAD_KEYWORD), so a request never gets output that silently
 *   ignores a constraint it asked for (oneOf, allOf, minimum, ...).
 *
 * The output is compact JSON: no whitespace except one optional space after ':' and ',' (what
 * models tend to write, and still one line). Objects list their properties in the schema's
 * order, each required one always and each optional one present or not. additionalProperties:
 * false changes nothing for an object with properties (only the declared ones are ever
 * generated, which every value of additionalProperties allows); on an object without
 * properties, false gives {}, a schema gives a map of string keys to that schema, true or absent
 * gives any object. Numbers: at most 16 integer digits, 16 fraction digits and a 3-digit
 * exponent, so a model cannot spin on digits forever. A schema without "type" takes it from
 * its keywords (properties → object, items → array, ...), or is any JSON value.
 */
#include "grammar.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JS_MAX_DEPTH 64    /* nesting of subschemas (not through $ref) */
#define JS_MAX_REPEAT 1000 /* minItems / maxItems / minLength / maxLength bound */
#define JS_MAX_PROPS 1000  /* properties of one object */
#define JS_NUM_DIGITS 16   /* digits of an integer part or a fraction */

struct js_ref {
    const cJSON *node;
    int rule;
};

struct js {
    struct grammar *g;
    const cJSON *root;
    struct js_ref *refs; /* (n_refs, cap_refs) compiled $ref targets */
    int n_refs, cap_refs;
    /* shared rules, built on first use; -1 = not yet */
    int r_sp, r_char, r_string, r_number, r_integer, r_value, r_object, r_array;
    char *err;
    size_t errlen;
    char *kw;
    size_t kwlen;
};

static int js_fail(struct js *c, const char *kw, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int js_fail(struct js *c, const char *kw, const char *fmt, ...) {
    if (c->err && c->errlen && !c->err[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
    if (c->kw && c->kwlen && !c->kw[0] && kw) snprintf(c->kw, c->kwlen, "%s", kw);
    return -1;
}

static int js_oom(struct js *c) {
    return js_fail(c, NULL, "schema too large (at most %d grammar elements)", GRAMMAR_MAX_ELEMS);
}

static int lit(struct js *c, int r, const char *s) {
    return grammar_add_bytes(c->g, r, s, strlen(s)) ? js_oom(c) : 0;
}

static int ref(struct js *c, int r, int target) {
    return grammar_add_ref(c->g, r, target) ? js_oom(c) : 0;
}

static int alt(struct js *c, int r) {
    return grammar_add_alt(c->g, r) ? js_oom(c) : 0;
}

static int new_rule(struct js *c) {
    int r = grammar_rule(c->g);
    if (r < 0) js_oom(c);
    return r;
}

/* ITEM repeated MN..MX times (MX -1: unbounded); with SEP, "," and an optional space between. */
static int rule_sp(struct js *c);

static int repeat(struct js *c, int item, int mn, int mx, int sep) {
    int one = item;
    if (sep) { /* ", " item */
        if ((one = new_rule(c)) < 0 || lit(c, one, ",") || ref(c, one, rule_sp(c)) ||
            ref(c, one, item))
            return -1;
    }
    int q = new_rule(c);
    if (q < 0) return -1;
    if (sep && (mx == 0)) return q; /* empty */
    int first = 0;
    if (sep) { /* item (", " item){mn-1, mx-1} */
        if (ref(c, q, item)) return -1;
        first = 1;
    }
    int lo = mn - first < 0 ? 0 : mn - first, hi = mx < 0 ? -1 : mx - first;
    for (int k = 0; k < lo; k++)
        if (ref(c, q, one)) return -1;
    if (hi < 0) {
        int s = new_rule(c);
        if (s < 0 || ref(c, s, one) || ref(c, s, s) || alt(c, s) || ref(c, q, s)) return -1;
    } else if (hi > lo) {
        int prev = -1;
        for (int k = 0; k < hi - lo; k++) {
            int o = new_rule(c);
            if (o < 0 || ref(c, o, one) || (prev >= 0 && ref(c, o, prev)) || alt(c, o)) return -1;
            prev = o;
        }
        if (ref(c, q, prev)) return -1;
    }
    if (sep && mn == 0) { /* the whole list may be empty */
        int w = new_rule(c);
        if (w < 0 || ref(c, w, q) || alt(c, w)) return -1;
        return w;
    }
    return q;
}

/* ---- the shared rules ----------------------------------------------------------------------- */

static int rule_sp(struct js *c) {
    if (c->r_sp >= 0) return c->r_sp;
    int r = new_rule(c);
    if (r < 0 || lit(c, r, " ") || alt(c, r)) return -1;
    return c->r_sp = r;
}

/* One character of a JSON string: unescaped ASCII, a multi-byte UTF-8 character, or an escape. */
static int rule_char(struct js *c) {
    if (c->r_char >= 0) return c->r_char;
    int r = new_rule(c), mb = grammar_rule_utf8(c->g), esc = new_rule(c), hex = new_rule(c);
    if (r < 0 || mb < 0 || esc < 0 || hex < 0) return js_oom(c);
    uint32_t plain[8] = {0}, e1[8] = {0}, h[8] = {0};
    for (unsigned b = 0x20; b < 0x80; b++)
        if (b != '"' && b != '\\') plain[b >> 5] |= 1u << (b & 31);
    for (const char *p = "\"\\/bfnrt"; *p; p++)
        e1[(unsigned char)*p >> 5] |= 1u << (*p & 31);
    for (const char *p = "0123456789abcdefABCDEF"; *p; p++)
        h[(unsigned char)*p >> 5] |= 1u << (*p & 31);
    if (grammar_add_set(c->g, hex, h) || grammar_add_set(c->g, esc, e1) || alt(c, esc) ||
        lit(c, esc, "u"))
        return js_oom(c);
    for (int k = 0; k < 4; k++)
        if (ref(c, esc, hex)) return -1;
    if (grammar_add_set(c->g, r, plain) || alt(c, r) || ref(c, r, mb) || alt(c, r) ||
        lit(c, r, "\\") || ref(c, r, esc))
        return js_oom(c);
    return c->r_char = r;
}

/* A JSON string of MN..MX characters (MX -1: any). */
static int string_of(struct js *c, int mn, int mx) {
    int ch = rule_char(c);
    if (ch < 0) return -1;
    int body = repeat(c, ch, mn, mx, 0), r = new_rule(c);
    if (body < 0 || r < 0 || lit(c, r, "\"") || ref(c, r, body) || lit(c, r, "\"")) return -1;
    return r;
}

static int rule_string(struct js *c) {
    if (c->r_string >= 0) return c->r_string;
    int r = string_of(c, 0, -1);
    return r < 0 ? -1 : (c->r_string = r);
}

/* "-"? ("0" | [1-9][0-9]{0,15}) */
static int integer_part(struct js *c) {
    int r = new_rule(c), d = new_rule(c), neg = new_rule(c);
    if (r < 0 || d < 0 || neg < 0) return -1;
    if (grammar_add_range(c->g, d, '0', '9')) return js_oom(c);
    int digits = repeat(c, d, 0, JS_NUM_DIGITS - 1, 0);
    if (digits < 0 || lit(c, neg, "-") || alt(c, neg)) return -1;
    int mag = new_rule(c);
    if (mag < 0 || lit(c, mag, "0") || alt(c, mag) || grammar_add_range(c->g, mag, '1', '9') ||
        ref(c, mag, digits))
        return js_oom(c);
    if (ref(c, r, neg) || ref(c, r, mag)) return -1;
    return r;
}

static int rule_integer(struct js *c) {
    if (c->r_integer >= 0) return c->r_integer;
    int r = integer_part(c);
    return r < 0 ? -1 : (c->r_integer = r);
}

static int rule_number(struct js *c) {
    if (c->r_number >= 0) return c->r_number;
    int in = rule_integer(c), d = new_rule(c);
    if (in < 0 || d < 0 || grammar_add_range(c->g, d, '0', '9')) return js_oom(c);
    int fd = repeat(c, d, 1, JS_NUM_DIGITS, 0), ed = repeat(c, d, 1, 3, 0);
    int frac = new_rule(c), ex = new_rule(c), sign = new_rule(c), r = new_rule(c);
    if (fd < 0 || ed < 0 || frac < 0 || ex < 0 || sign < 0 || r < 0) return -1;
    uint32_t e[8] = {0};
    e['e' >> 5] |= 1u << ('e' & 31);
    e['E' >> 5] |= 1u << ('E' & 31);
    if (lit(c, frac, ".") || ref(c, frac, fd) || alt(c, frac) || lit(c, sign, "-") ||
        alt(c, sign) || lit(c, sign, "+") || alt(c, sign) || grammar_add_set(c->g, ex, e) ||
        ref(c, ex, sign) || ref(c, ex, ed) || alt(c, ex) || ref(c, r, in) || ref(c, r, frac) ||
        ref(c, r, ex))
        return js_oom(c);
    return c->r_number = r;
}

static int rule_value(struct js *c);

/* Any object: {} or {"k": v, ...}; V is the values' rule. */
static int object_of(struct js *c, int v) {
    int kv = new_rule(c), s = rule_string(c), sp = rule_sp(c);
    if (kv < 0 || s < 0 || sp < 0 || ref(c, kv, s) || lit(c, kv, ":") || ref(c, kv, sp) ||
        ref(c, kv, v))
        return -1;
    int list = repeat(c, kv, 0, -1, 1), r = new_rule(c);
    if (list < 0 || r < 0 || lit(c, r, "{") || ref(c, r, list) || lit(c, r, "}")) return -1;
    return r;
}

static int array_of(struct js *c, int item, int mn, int mx) {
    int list = repeat(c, item, mn, mx, 1), r = new_rule(c);
    if (list < 0 || r < 0 || lit(c, r, "[") || ref(c, r, list) || lit(c, r, "]")) return -1;
    return r;
}

/* value ::= object | array | string | number | true | false | null */
static int rule_value(struct js *c) {
    if (c->r_value >= 0) return c->r_value;
    int r = new_rule(c);
    if (r < 0) return -1;
    c->r_value = r; /* before the parts: they refer back to it */
    int o = object_of(c, r), a = array_of(c, r, 0, -1), s = rule_string(c), n = rule_number(c);
    if (o < 0 || a < 0 || s < 0 || n < 0) return -1;
    c->r_object = o;
    if (ref(c, r, o) || alt(c, r) || ref(c, r, a) || alt(c, r) || ref(c, r, s) || alt(c, r) ||
        ref(c, r, n) || alt(c, r) || lit(c, r, "true") || alt(c, r) || lit(c, r, "false") ||
        alt(c, r) || lit(c, r, "null"))
        return -1;
    return r;
}

static int rule_object_any(struct js *c) {
    if (c->r_object < 0 && rule_value(c) < 0) return -1;
    return c->r_object;
}

/* ---- schemas -------------------------------------------------------------------------------- */

static int compile(struct js *c, const cJSON *s, int depth);

/* A rule matching exactly the compact JSON text of V (enum, const). */
static int literal_of(struct js *c, const cJSON *v, int r) {
    char *t = cJSON_PrintUnformatted(v);
    if (!t) return js_oom(c);
    int rc = lit(c, r, t);
    cJSON_free(t);
    return rc;
}

/* Resolve a $ref: "#" or "#/a/b" (JSON pointer, ~0 ~1 escapes) into the document. */
static const cJSON *resolve(struct js *c, const char *p) {
    if (p[0] != '#') return NULL;
    const cJSON *n = c->root;
    p++;
    while (*p == '/' && n) {
        p++;
        char seg[256];
        size_t k = 0;
        while (*p && *p != '/' && k + 1 < sizeof seg) {
            if (p[0] == '~' && (p[1] == '0' || p[1] == '1')) {
                seg[k++] = p[1] == '0' ? '~' : '/';
                p += 2;
            } else {
                seg[k++] = *p++;
            }
        }
        seg[k] = 0;
        if (cJSON_IsArray(n)) {
            char *end;
            long i = strtol(seg, &end, 10);
            n = *end || !seg[0] ? NULL : cJSON_GetArrayItem(n, (int)i);
        } else {
            n = cJSON_GetObjectItemCaseSensitive(n, seg);
        }
    }
    return *p ? NULL : n;
}

static int compile_ref(struct js *c, const char *p) {
    const cJSON *t = resolve(c, p);
    if (!t) return js_fail(c, NULL, "`$ref` \"%.100s\" does not resolve in the schema", p);
    for (int i = 0; i < c->n_refs; i++)
        if (c->refs[i].node == t) return c->refs[i].rule;
    int r = new_rule(c);
    if (r < 0) return -1;
    if (c->n_refs == c->cap_refs) {
        int cap = c->cap_refs ? c->cap_refs * 2 : 8;
        struct js_ref *nr = realloc(c->refs, sizeof *nr * (size_t)cap);
        if (!nr) return js_oom(c);
        c->refs = nr;
        c->cap_refs = cap;
    }
    c->refs[c->n_refs++] = (struct js_ref){t, r}; /* first: the target may refer to itself */
    int body = compile(c, t, 0);
    if (body < 0 || ref(c, r, body)) return -1;
    return r;
}

static int get_count(struct js *c, const cJSON *s, const char *name, int dflt, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, name);
    *out = dflt;
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != (double)(long)v->valuedouble)
        return js_fail(c, NULL, "`%s` must be a non-negative integer", name);
    if (v->valuedouble > JS_MAX_REPEAT)
        return js_fail(c, name, "`%s` above %d is not supported", name, JS_MAX_REPEAT);
    *out = (int)v->valuedouble;
    return 0;
}

static int compile_object(struct js *c, const cJSON *s, int depth) {
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    const cJSON *addl = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    if (props && !cJSON_IsObject(props)) return js_fail(c, NULL, "`properties` must be an object");
    if (req && !cJSON_IsArray(req)) return js_fail(c, NULL, "`required` must be an array");
    if (addl && !cJSON_IsBool(addl) && !cJSON_IsObject(addl))
        return js_fail(c, NULL, "`additionalProperties` must be a boolean or a schema");
    int n = props ? cJSON_GetArraySize(props) : 0;
    if (n > JS_MAX_PROPS) return js_fail(c, NULL, "more than %d properties", JS_MAX_PROPS);
    for (const cJSON *q = req ? req->child : NULL; q; q = q->next) {
        if (!cJSON_IsString(q)) return js_fail(c, NULL, "`required` must hold strings");
        if (!props || !cJSON_GetObjectItemCaseSensitive(props, q->valuestring))
            return js_fail(c, "required",
                           "required property \"%.100s\" is not in `properties` (a required "
                           "property without a schema is not supported)",
                           q->valuestring);
    }
    if (n == 0) {
        if (cJSON_IsFalse(addl)) {
            int r = new_rule(c);
            return r < 0 || lit(c, r, "{}") ? -1 : r;
        }
        if (cJSON_IsObject(addl)) {
            int v = compile(c, addl, depth + 1);
            return v < 0 ? -1 : object_of(c, v);
        }
        return rule_object_any(c);
    }
    /* rest[i][any]: properties i.. given whether one was already written (then a comma first) */
    int *rest = malloc(sizeof(int) * 2 * (size_t)(n + 1));
    if (!rest) return js_oom(c);
    int rc = -1, sp = rule_sp(c);
    for (int i = 0; i < 2 * (n + 1); i++)
        if ((rest[i] = new_rule(c)) < 0) goto out;
    const cJSON *p = props->child;
    for (int i = 0; i < n; i++, p = p->next) {
        int v = compile(c, p, depth + 1), kv = new_rule(c);
        cJSON *key = cJSON_CreateString(p->string);
        int bad = v < 0 || kv < 0 || sp < 0 || !key || literal_of(c, key, kv) || lit(c, kv, ":") ||
                  ref(c, kv, sp) || ref(c, kv, v);
        cJSON_Delete(key);
        if (bad) goto out;
        int required = 0;
        for (const cJSON *q = req ? req->child : NULL; q; q = q->next)
            required |= !strcmp(q->valuestring, p->string);
        for (int any = 0; any < 2; any++) {
            int r = rest[2 * i + any];
            if ((any && (lit(c, r, ",") || ref(c, r, sp))) || ref(c, r, kv) ||
                ref(c, r, rest[2 * (i + 1) + 1]))
                goto out;
            if (!required && (alt(c, r) || ref(c, r, rest[2 * (i + 1) + any]))) goto out;
        }
    }
    int r = new_rule(c);
    if (r < 0 || lit(c, r, "{") || ref(c, r, rest[0]) || lit(c, r, "}")) goto out;
    rc = r;
out:
    free(rest);
    return rc;
}

static int compile_array(struct js *c, const cJSON *s, int depth) {
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
    int mn, mx;
    if (get_count(c, s, "minItems", 0, &mn) || get_count(c, s, "maxItems", -1, &mx)) return -1;
    if (mx >= 0 && mx < mn) return js_fail(c, NULL, "`maxItems` is below `minItems`");
    if (items && cJSON_IsArray(items))
        return js_fail(c, "items", "`items` as an array (tuples) is not supported");
    int it = items ? compile(c, items, depth + 1) : rule_value(c);
    return it < 0 ? -1 : array_of(c, it, mn, mx);
}

static int compile_string(struct js *c, const cJSON *s) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(s, "pattern");
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(s, "format");
    int mn, mx;
    if (get_count(c, s, "minLength", 0, &mn) || get_count(c, s, "maxLength", -1, &mx)) return -1;
    if (mx >= 0 && mx < mn) return js_fail(c, NULL, "`maxLength` is below `minLength`");
    const char *re = NULL;
    if (fmt) {
        static const char *const formats[][2] = {
            {"date", "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"},
            {"time",
             "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-"
             "3]):[0-5][0-9])"},
            {"date-time", "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):"
                          "[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5]["
                          "0-9])"},
            {"uuid", "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"},
            {"email", "[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\\.[A-Za-z0-9-]{1,63}){1,4}"},
        };
        if (!cJSON_IsString(fmt)) return js_fail(c, NULL, "`format` must be a string");
        for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
            if (!strcmp(fmt->valuestring, formats[i][0])) re = formats[i][1];
        if (!re)
            return js_fail(c, "format",
                           "`format` \"%.60s\" is not supported (date-time, date, "
                           "time, uuid, email are)",
                           fmt->valuestring);
    }
    if (pat) {
        if (!cJSON_IsString(pat)) return js_fail(c, NULL, "`pattern` must be a string");
        if (re) return js_fail(c, "pattern", "`pattern` together with `format` is not supported");
        re = pat->valuestring;
    }
    if (!re) return string_of(c, mn, mx);
    if (mn > 0 || mx >= 0)
        return js_fail(c, pat ? "pattern" : "format",
                       "`minLength`/`maxLength` together with `%s` is not supported",
                       pat ? "pattern" : "format");
    char kw[64] = "";
    int body = grammar_regex_rule(c->g, re, strlen(re), 1, c->err, c->errlen, kw, sizeof kw);
    if (body < 0) return js_fail(c, "pattern", "bad `pattern`");
    int r = new_rule(c);
    if (r < 0 || lit(c, r, "\"") || ref(c, r, body) || lit(c, r, "\"")) return -1;
    return r;
}

/* The schema S read as type NAME. */
static int compile_type(struct js *c, const cJSON *s, const char *name, int depth) {
    if (!strcmp(name, "object")) return compile_object(c, s, depth);
    if (!strcmp(name, "array")) return compile_array(c, s, depth);
    if (!strcmp(name, "string")) return compile_string(c, s);
    if (!strcmp(name, "number")) return rule_number(c);
    if (!strcmp(name, "integer")) return rule_integer(c);
    int r = new_rule(c);
    if (r < 0) return -1;
    if (!strcmp(name, "boolean"))
        return lit(c, r, "true") || alt(c, r) || lit(c, r, "false") ? -1 : r;
    if (!strcmp(name, "null")) return lit(c, r, "null") ? -1 : r;
    return js_fail(c, "type", "unknown `type` \"%.40s\"", name);
}

static const char *const SUPPORTED[] = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "enum",
    "const",
    "anyOf",
    "$ref",
    "$defs",
    "definitions",
    /* annotations */
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "strict",
};

static int compile(struct js *c, const cJSON *s, int depth) {
    if (depth > JS_MAX_DEPTH) return js_fail(c, NULL, "schema nested deeper than %d", JS_MAX_DEPTH);
    if (cJSON_IsTrue(s)) return rule_value(c);
    if (!cJSON_IsObject(s)) return js_fail(c, NULL, "a schema must be an object or true");
    for (const cJSON *k = s->child; k; k = k->next) {
        size_t i = 0;
        while (i < sizeof SUPPORTED / sizeof SUPPORTED[0] && strcmp(SUPPORTED[i], k->string))
            i++;
        if (i == sizeof SUPPORTED / sizeof SUPPORTED[0])
            return js_fail(c, k->string, "JSON Schema keyword `%.60s` is not supported", k->string);
    }
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(s, "$ref"))) {
        if (!cJSON_IsString(v)) return js_fail(c, NULL, "`$ref` must be a string");
        return compile_ref(c, v->valuestring);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(s, "const"))) {
        int r = new_rule(c);
        return r < 0 || literal_of(c, v, r) ? -1 : r;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(s, "enum"))) {
        if (!cJSON_IsArray(v) || !v->child)
            return js_fail(c, NULL, "`enum` must be a non-empty array");
        int r = new_rule(c);
        if (r < 0) return -1;
        for (const cJSON *e = v->child; e; e = e->next)
            if ((e != v->child && alt(c, r)) || literal_of(c, e, r)) return -1;
        return r;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(s, "anyOf"))) {
        if (!cJSON_IsArray(v) || !v->child)
            return js_fail(c, NULL, "`anyOf` must be a non-empty array");
        int r = new_rule(c);
        if (r < 0) return -1;
        for (const cJSON *e = v->child; e; e = e->next) {
            int sub = compile(c, e, depth + 1);
            if (sub < 0 || (e != v->child && alt(c, r)) || ref(c, r, sub)) return -1;
        }
        return r;
    }
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (cJSON_IsString(ty)) return compile_type(c, s, ty->valuestring, depth);
    if (cJSON_IsArray(ty) && ty->child) {
        int r = new_rule(c);
        if (r < 0) return -1;
        for (const cJSON *e = ty->child; e; e = e->next) {
            if (!cJSON_IsString(e)) return js_fail(c, NULL, "`type` must hold strings");
            int sub = compile_type(c, s, e->valuestring, depth);
            if (sub < 0 || (e != ty->child && alt(c, r)) || ref(c, r, sub)) return -1;
        }
        return r;
    }
    if (ty) return js_fail(c, NULL, "`type` must be a string or a non-empty array of strings");
    /* no type: from the keywords */
    if (cJSON_GetObjectItemCaseSensitive(s, "properties") ||
        cJSON_GetObjectItemCaseSensitive(s, "additionalProperties") ||
        cJSON_GetObjectItemCaseSensitive(s, "required"))
        return compile_object(c, s, depth);
    if (cJSON_GetObjectItemCaseSensitive(s, "items") ||
        cJSON_GetObjectItemCaseSensitive(s, "minItems") ||
        cJSON_GetObjectItemCaseSensitive(s, "maxItems"))
        return compile_array(c, s, depth);
    if (cJSON_GetObjectItemCaseSensitive(s, "pattern") ||
        cJSON_GetObjectItemCaseSensitive(s, "format") ||
        cJSON_GetObjectItemCaseSensitive(s, "minLength") ||
        cJSON_GetObjectItemCaseSensitive(s, "maxLength"))
        return compile_string(c, s);
    return rule_value(c);
}

static void js_init(struct js *c, struct grammar *g, const cJSON *root, char *err, size_t errlen,
                    char *kw, size_t kwlen) {
    memset(c, 0, sizeof *c);
    c->g = g;
    c->root = root;
    c->r_sp = c->r_char = c->r_string = c->r_number = c->r_integer = c->r_value = c->r_object =
        c->r_array = -1;
    c->err = err;
    c->errlen = errlen;
    c->kw = kw;
    c->kwlen = kwlen;
    if (err && errlen) err[0] = 0;
    if (kw && kwlen) kw[0] = 0;
}

/* Finish G at ROOT (or fail with C's message); frees G on failure. */
static struct grammar *js_done(struct js *c, int root) {
    free(c->refs);
    if (root >= 0 && grammar_finish(c->g, root) == 0) return c->g;
    if (root >= 0) js_fail(c, NULL, "schema too large or malformed");
    grammar_free(c->g);
    return NULL;
}

struct grammar *grammar_from_json_schema(const cJSON *schema, char *err, size_t errlen,
                                         char *bad_keyword, size_t kwlen) {
    struct js c;
    js_init(&c, grammar_new(), schema, err, errlen, bad_keyword, kwlen);
    if (!c.g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return js_done(&c, compile(&c, schema, 0));
}

struct grammar *grammar_json_object(char *err, size_t errlen) {
    struct js c;
    js_init(&c, grammar_new(), NULL, err, errlen, NULL, 0);
    if (!c.g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return js_done(&c, rule_object_any(&c));
}
