/* regex.c — a regular expression compiled to grammar rules (grammar.h), matched in full.
 *
 * Syntax: literals (UTF-8), '.', classes [a-z0-9_] and [^...] with ranges and the escapes \d \w
 * \s \D \W \S, escapes \n \t \r \f \v \xHH \uHHHH and escaped punctuation, groups (...), (?:...)
 * and (?P<name>...) / (?<name>...), alternation, quantifiers * + ? {m} {m,} {m,n} (lazy forms
 * read as greedy: a full match is the same). '^' at the start and '$' at the end are accepted
 * and implied anyway. Refused by name: backreferences, lookaround, \b, inline flags, ranges of
 * non-ASCII characters and non-ASCII members of negated classes (the matcher is byte-level).
 * '.' and negated classes match any well-formed UTF-8 character except the excluded ASCII; '.'
 * excludes '\n' as Python's re does. Counted repetition is bounded (REGEX_MAX_REPEAT).
 *
 * Each atom becomes a byte set (one element) or a rule reference; a quantified atom becomes a
 * rule: m copies then a right-recursive loop (unbounded) or a chain of optionals (bounded).
 */
#include "grammar.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define REGEX_MAX_REPEAT 1000 /* {m,n} bound: keeps one request's grammar small */
#define REGEX_MAX_NEST 100    /* group nesting (recursion depth of the parser) */

struct rx {
    struct grammar *g;
    const char *s;
    size_t n, i;
    int json_string; /* inside a JSON string: no '"', '\\' or control bytes */
    int nest;
    char *err;
    size_t errlen;
    char *kw;
    size_t kwlen;
};

/* One atom: a byte set, or a rule. */
struct unit {
    int rule; /* -1: the byte set */
    uint32_t set[8];
};

static int rx_fail(struct rx *x, const char *kw, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int rx_fail(struct rx *x, const char *kw, const char *fmt, ...) {
    if (x->err && x->errlen && !x->err[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->err, x->errlen, fmt, ap);
        va_end(ap);
    }
    if (x->kw && x->kwlen && !x->kw[0] && kw) snprintf(x->kw, x->kwlen, "%s", kw);
    return -1;
}

static int rx_oom(struct rx *x) {
    return rx_fail(x, NULL, "regular expression too large (at most %d grammar elements)",
                   GRAMMAR_MAX_ELEMS);
}

static void set_bit(uint32_t *s, unsigned b) {
    s[b >> 5] |= 1u << (b & 31);
}

static void set_range(uint32_t *s, unsigned lo, unsigned hi) {
    for (unsigned b = lo; b <= hi && b < 256; b++)
        set_bit(s, b);
}

static int set_empty(const uint32_t *s) {
    for (int k = 0; k < 8; k++)
        if (s[k]) return 0;
    return 1;
}

/* Bytes a JSON string may hold raw: the ASCII ones other than '"', '\\' and controls, and the
 * bytes of multi-byte characters (those go through the UTF-8 rule, never through a set). */
static void json_restrict(struct rx *x, uint32_t *s) {
    if (!x->json_string) return;
    s[0] = 0; /* 0x00..0x1f */
    s['"' >> 5] &= ~(1u << ('"' & 31));
    s['\\' >> 5] &= ~(1u << ('\\' & 31));
}

static int add_unit(struct rx *x, int r, const struct unit *u) {
    int rc = u->rule >= 0 ? grammar_add_ref(x->g, r, u->rule) : grammar_add_set(x->g, r, u->set);
    return rc ? rx_oom(x) : 0;
}

/* A unit for the ASCII set S plus, when ANY_MB, any multi-byte character. */
static int unit_of_set(struct rx *x, const uint32_t *s, int any_mb, struct unit *u) {
    uint32_t a[8];
    memcpy(a, s, sizeof a);
    a[4] = a[5] = a[6] = a[7] = 0; /* ASCII only: the rest goes through the UTF-8 rule */
    json_restrict(x, a);
    u->rule = -1;
    memcpy(u->set, a, sizeof a);
    if (!any_mb) return 0;
    int mb = grammar_rule_utf8(x->g), r = grammar_rule(x->g);
    if (mb < 0 || r < 0 || grammar_add_ref(x->g, r, mb)) return rx_oom(x);
    if (!set_empty(a) && (grammar_add_alt(x->g, r) || grammar_add_set(x->g, r, a)))
        return rx_oom(x);
    u->rule = r;
    return 0;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decode the UTF-8 character at x->i into *cp (advancing); -1 when malformed. */
static int next_char(struct rx *x, unsigned *cp) {
    const unsigned char *p = (const unsigned char *)x->s + x->i;
    size_t left = x->n - x->i;
    unsigned c = p[0];
    int len = c < 0x80             ? 1
              : (c & 0xE0) == 0xC0 ? 2
              : (c & 0xF0) == 0xE0 ? 3
              : (c & 0xF8) == 0xF0 ? 4
                                   : 0;
    if (!len || (size_t)len > left)
        return rx_fail(x, NULL, "regular expression is not valid UTF-8");
    unsigned v = len == 1 ? c : c & (0x7F >> len);
    for (int k = 1; k < len; k++) {
        if ((p[k] & 0xC0) != 0x80) return rx_fail(x, NULL, "regular expression is not valid UTF-8");
        v = v << 6 | (p[k] & 0x3F);
    }
    x->i += (size_t)len;
    *cp = v;
    return 0;
}

static int utf8_put(unsigned cp, char *o) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A unit for the one code point CP. */
static int unit_of_char(struct rx *x, unsigned cp, struct unit *u) {
    memset(u, 0, sizeof *u);
    u->rule = -1;
    if (cp < 0x80) {
        set_bit(u->set, cp);
        json_restrict(x, u->set);
        if (set_empty(u->set))
            return rx_fail(x, NULL,
                           "a `pattern` cannot contain '\"', '\\\\' or control characters (they "
                           "are escaped in JSON)");
        return 0;
    }
    char b[4];
    int n = utf8_put(cp, b);
    int r = grammar_rule(x->g);
    if (r < 0 || grammar_add_bytes(x->g, r, b, (size_t)n)) return rx_oom(x);
    u->rule = r;
    return 0;
}

/* Class escapes \d \w \s (and negations): the ASCII set into S; returns 1 for a negated one, 0
 * for a plain one, -1 when C is not a class escape. */
static int class_escape(int c, uint32_t *s) {
    int neg = c == 'D' || c == 'W' || c == 'S';
    switch (c | 0x20) {
    case 'd':
        set_range(s, '0', '9');
        break;
    case 'w':
        set_range(s, '0', '9');
        set_range(s, 'A', 'Z');
        set_range(s, 'a', 'z');
        set_bit(s, '_');
        break;
    case 's':
        set_range(s, '\t', '\r');
        set_bit(s, ' ');
        break;
    default:
        return -1;
    }
    return neg;
}

/* An escaped single character after '\\' (x->i past the backslash); *cp gets it. */
static int escape_char(struct rx *x, unsigned *cp) {
    if (x->i >= x->n) return rx_fail(x, NULL, "regular expression ends with '\\\\'");
    int c = (unsigned char)x->s[x->i++];
    switch (c) {
    case 'n':
        *cp = '\n';
        return 0;
    case 't':
        *cp = '\t';
        return 0;
    case 'r':
        *cp = '\r';
        return 0;
    case 'f':
        *cp = '\f';
        return 0;
    case 'v':
        *cp = '\v';
        return 0;
    case 'x':
    case 'u': {
        int nd = c == 'x' ? 2 : 4;
        unsigned v = 0;
        for (int k = 0; k < nd; k++) {
            int h = x->i < x->n ? hexval((unsigned char)x->s[x->i]) : -1;
            if (h < 0) return rx_fail(x, NULL, "bad \\%c escape in the regular expression", c);
            v = v * 16 + (unsigned)h;
            x->i++;
        }
        if (v >= 0xD800 && v <= 0xDFFF)
            return rx_fail(x, "\\u", "surrogate \\u escapes are not supported");
        *cp = v;
        return 0;
    }
    }
    if ((c >= '0' && c <= '9') || c == 'b' || c == 'B' || c == 'A' || c == 'Z' || c == 'z' ||
        c == 'G' || c == 'p' || c == 'P' || c == 'k') {
        char kw[4] = {'\\', (char)c, 0};
        return rx_fail(x, kw, "`\\%c` is not supported in regular expressions here", c);
    }
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return rx_fail(x, NULL, "unknown escape `\\%c` in the regular expression", c);
    x->i--;
    return next_char(x, cp);
}

/* [...] (x->i past '['). */
static int parse_class(struct rx *x, struct unit *u) {
    uint32_t s[8] = {0};
    int neg = 0, first = 1, any_mb = 0;
    unsigned mb[64];
    int n_mb = 0;
    if (x->i < x->n && x->s[x->i] == '^') {
        neg = 1;
        x->i++;
    }
    for (;;) {
        if (x->i >= x->n) return rx_fail(x, NULL, "unterminated [ in the regular expression");
        char c = x->s[x->i];
        if (c == ']' && !first) {
            x->i++;
            break;
        }
        first = 0;
        unsigned lo;
        if (c == '\\') {
            x->i++;
            if (x->i < x->n) {
                uint32_t es[8] = {0};
                int ce = class_escape((unsigned char)x->s[x->i], es);
                if (ce == 1) {
                    if (neg)
                        return rx_fail(x, "[^\\D]",
                                       "negated class escapes inside [^...] are not supported");
                    for (int k = 0; k < 8; k++)
                        s[k] |= ~es[k] & (k < 4 ? 0xFFFFFFFFu : 0);
                    any_mb = 1;
                    x->i++;
                    continue;
                }
                if (ce == 0) {
                    for (int k = 0; k < 8; k++)
                        s[k] |= es[k];
                    x->i++;
                    continue;
                }
            }
            if (escape_char(x, &lo)) return -1;
        } else if (next_char(x, &lo)) {
            return -1;
        }
        unsigned hi = lo;
        if (x->i + 1 < x->n && x->s[x->i] == '-' && x->s[x->i + 1] != ']') {
            x->i++;
            if (x->s[x->i] == '\\') {
                x->i++;
                if (escape_char(x, &hi)) return -1;
            } else if (next_char(x, &hi)) {
                return -1;
            }
            if (hi < lo) return rx_fail(x, NULL, "bad range in a regular expression class");
        }
        if (hi < 0x80) {
            set_range(s, lo, hi);
        } else if (lo != hi) {
            return rx_fail(x, "[non-ASCII range]",
                           "ranges of non-ASCII characters in a class are not supported");
        } else if (neg) {
            return rx_fail(x, "[^non-ASCII]", "non-ASCII characters in [^...] are not supported");
        } else {
            if (n_mb == 64) return rx_fail(x, NULL, "too many non-ASCII characters in a class");
            mb[n_mb++] = lo;
        }
    }
    if (neg) {
        for (int k = 0; k < 4; k++)
            s[k] = ~s[k];
        any_mb = 1;
    }
    if (unit_of_set(x, s, any_mb, u)) return -1;
    if (!n_mb) {
        if (u->rule < 0 && set_empty(u->set))
            return rx_fail(x, NULL, "a class of the regular expression matches nothing here");
        return 0;
    }
    /* the listed non-ASCII characters as alternatives beside the set */
    int r = grammar_rule(x->g);
    if (r < 0) return rx_oom(x);
    int alt = 0;
    if (u->rule >= 0 || !set_empty(u->set)) {
        if (add_unit(x, r, u)) return -1;
        alt = 1;
    }
    for (int k = 0; k < n_mb; k++) {
        struct unit c;
        if ((alt++ && grammar_add_alt(x->g, r)) || unit_of_char(x, mb[k], &c) || add_unit(x, r, &c))
            return rx_oom(x);
    }
    u->rule = r;
    return 0;
}

static int parse_alt(struct rx *x, int *rule);

/* At "?" after '(': 1 for (?P<name> or (?<name> (not the lookbehinds (?<= and (?<!). */
static int named_group(const struct rx *x) {
    const char *p = x->s + x->i + 1, *end = x->s + x->n;
    if (p < end && *p == 'P') p++;
    return p + 1 < end && *p == '<' && p[1] != '=' && p[1] != '!';
}

static int parse_atom(struct rx *x, struct unit *u) {
    memset(u, 0, sizeof *u);
    u->rule = -1;
    char c = x->s[x->i];
    if (c == '(') {
        x->i++;
        if (x->i < x->n && x->s[x->i] == '?') {
            if (x->i + 1 < x->n && x->s[x->i + 1] == ':') {
                x->i += 2;
            } else if (named_group(x)) {
                const char *gt = memchr(x->s + x->i, '>', x->n - x->i);
                if (!gt) return rx_fail(x, NULL, "bad group name in the regular expression");
                x->i = (size_t)(gt - x->s) + 1;
            } else {
                return rx_fail(x, "(?",
                               "lookaround, inline flags and other (?...) groups are "
                               "not supported");
            }
        }
        if (++x->nest > REGEX_MAX_NEST)
            return rx_fail(x, NULL, "regular expression nested too deeply");
        int r;
        if (parse_alt(x, &r)) return -1;
        x->nest--;
        if (x->i >= x->n || x->s[x->i] != ')')
            return rx_fail(x, NULL, "missing ) in the regular expression");
        x->i++;
        u->rule = r;
        return 0;
    }
    if (c == '[') {
        x->i++;
        return parse_class(x, u);
    }
    if (c == '.') {
        x->i++;
        uint32_t s[8] = {0};
        set_range(s, 0, 0x7F);
        s['\n' >> 5] &= ~(1u << '\n');
        return unit_of_set(x, s, 1, u);
    }
    if (c == '*' || c == '+' || c == '?' || c == '{')
        return rx_fail(x, NULL, "nothing to repeat at offset %zu of the regular expression", x->i);
    unsigned cp;
    if (c == '\\') {
        x->i++;
        if (x->i < x->n) {
            uint32_t s[8] = {0};
            int ce = class_escape((unsigned char)x->s[x->i], s);
            if (ce >= 0) {
                x->i++;
                if (ce == 1)
                    for (int k = 0; k < 4; k++)
                        s[k] = ~s[k];
                return unit_of_set(x, s, ce == 1, u);
            }
        }
        if (escape_char(x, &cp)) return -1;
    } else if (next_char(x, &cp)) {
        return -1;
    }
    return unit_of_char(x, cp, u);
}

/* {m}, {m,}, {m,n} at x->i; 0 with the bounds (max -1 = unbounded), 1 when it is not a
 * quantifier (a literal '{' as Python reads it), -1 on an error. */
static int parse_braces(struct rx *x, int *mn, int *mx) {
    size_t i = x->i + 1;
    long a = 0, b;
    int da = 0, db = 0;
    while (i < x->n && x->s[i] >= '0' && x->s[i] <= '9' && a <= REGEX_MAX_REPEAT)
        a = a * 10 + (x->s[i++] - '0'), da++;
    b = a;
    if (i < x->n && x->s[i] == ',') {
        i++;
        b = 0;
        while (i < x->n && x->s[i] >= '0' && x->s[i] <= '9' && b <= REGEX_MAX_REPEAT)
            b = b * 10 + (x->s[i++] - '0'), db++;
        if (!db) b = -1;
    } else {
        db = da;
    }
    if (i >= x->n || x->s[i] != '}' || !da) return 1;
    if (a > REGEX_MAX_REPEAT || b > REGEX_MAX_REPEAT)
        return rx_fail(x, "{m,n}", "repetition counts above %d are not supported",
                       REGEX_MAX_REPEAT);
    if (b >= 0 && b < a) return rx_fail(x, NULL, "bad repetition {%ld,%ld}", a, b);
    x->i = i + 1;
    *mn = (int)a;
    *mx = (int)b;
    return 0;
}

/* U repeated MN..MX times (MX -1: unbounded) as a new unit. */
static int repeat(struct rx *x, const struct unit *u, int mn, int mx, struct unit *out) {
    struct grammar *g = x->g;
    int q = grammar_rule(g);
    if (q < 0) return rx_oom(x);
    for (int k = 0; k < mn; k++)
        if (add_unit(x, q, u)) return -1;
    if (mx < 0) { /* S ::= u S | () */
        int s = grammar_rule(g);
        if (s < 0 || add_unit(x, s, u) || grammar_add_ref(g, s, s) || grammar_add_alt(g, s) ||
            grammar_add_ref(g, q, s))
            return rx_oom(x);
    } else if (mx > mn) { /* O_k ::= u O_{k-1} | () */
        int prev = -1;
        for (int k = 0; k < mx - mn; k++) {
            int o = grammar_rule(g);
            if (o < 0 || add_unit(x, o, u) || (prev >= 0 && grammar_add_ref(g, o, prev)) ||
                grammar_add_alt(g, o))
                return rx_oom(x);
            prev = o;
        }
        if (grammar_add_ref(g, q, prev)) return rx_oom(x);
    }
    memset(out, 0, sizeof *out);
    out->rule = q;
    return 0;
}

static int parse_concat(struct rx *x, int r) {
    while (x->i < x->n && x->s[x->i] != '|' && x->s[x->i] != ')') {
        char c = x->s[x->i];
        if (c == '^' || c == '$') { /* anchors: implied (a full match) */
            int edge = c == '^'
                           ? x->i == 0 || x->s[x->i - 1] == '(' || x->s[x->i - 1] == '|'
                           : x->i + 1 == x->n || x->s[x->i + 1] == ')' || x->s[x->i + 1] == '|';
            if (!edge)
                return rx_fail(x, c == '^' ? "^" : "$",
                               "anchors inside the expression are not supported");
            x->i++;
            continue;
        }
        struct unit u;
        if (parse_atom(x, &u)) return -1;
        for (;;) {
            if (x->i >= x->n) break;
            char q = x->s[x->i];
            int mn = 0, mx = 0;
            if (q == '*' || q == '+' || q == '?') {
                x->i++;
                mn = q == '+' ? 1 : 0;
                mx = q == '?' ? 1 : -1;
            } else if (q == '{') {
                int rc = parse_braces(x, &mn, &mx);
                if (rc < 0) return -1;
                if (rc == 1) break;
            } else {
                break;
            }
            if (x->i < x->n && (x->s[x->i] == '?' || x->s[x->i] == '+'))
                x->i++; /* lazy, possessive */
            struct unit rep;
            if (repeat(x, &u, mn, mx, &rep)) return -1;
            u = rep;
        }
        if (add_unit(x, r, &u)) return -1;
    }
    return 0;
}

static int parse_alt(struct rx *x, int *rule) {
    int r = grammar_rule(x->g);
    if (r < 0) return rx_oom(x);
    if (parse_concat(x, r)) return -1;
    while (x->i < x->n && x->s[x->i] == '|') {
        x->i++;
        if (grammar_add_alt(x->g, r)) return rx_oom(x);
        if (parse_concat(x, r)) return -1;
    }
    *rule = r;
    return 0;
}

int grammar_regex_rule(struct grammar *g, const char *re, size_t len, int json_string, char *err,
                       size_t errlen, char *bad_keyword, size_t kwlen) {
    struct rx x = {.g = g,
                   .s = re,
                   .n = len,
                   .json_string = json_string,
                   .err = err,
                   .errlen = errlen,
                   .kw = bad_keyword,
                   .kwlen = kwlen};
    if (err && errlen) err[0] = 0;
    if (bad_keyword && kwlen) bad_keyword[0] = 0;
    int r;
    if (parse_alt(&x, &r)) return -1;
    if (x.i < x.n) return rx_fail(&x, NULL, "unbalanced ) in the regular expression");
    return r;
}

struct grammar *grammar_from_regex(const char *re, size_t len, char *err, size_t errlen,
                                   char *bad_keyword, size_t kwlen) {
    struct grammar *g = grammar_new();
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int r = grammar_regex_rule(g, re, len, 0, err, errlen, bad_keyword, kwlen);
    if (r < 0 || grammar_finish(g, r)) {
        if (r >= 0) snprintf(err, errlen, "out of memory");
        grammar_free(g);
        return NULL;
    }
    return g;
}
