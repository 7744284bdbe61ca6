/* test_jinja.c — the Jinja interpreter (model/jinja.h) against jinja2 itself: every real chat
 * template in tests/golden/chat_templates/ over every conversation of
 * tools/gen_chat_golden.py (expected.json: renders, raise_exception messages, errors), the
 * language features one at a time (features.json), then what jinja2 cannot be asked: error
 * positions, the output/step/memory bounds, strftime_now against the C library. */
#include "test_util.h"
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/jinja.h"

#define GOLDEN_DIR "tests/golden/chat_templates/"

static char *slurp(const char *path, size_t *len) {
    char *s = tu_slurp(path, len);
    cr_assert_not_null(s, "cannot open %s", path);
    return s;
}

static cJSON *load_json(const char *path) {
    char *s = slurp(path, NULL);
    cJSON *j = cJSON_Parse(s);
    free(s);
    cr_assert_not_null(j, "%s is not JSON", path);
    return j;
}

/* One golden entry: OUTPUT equal, or the error jinja2 raised (raise_exception's message exactly).
 */
static void check(const char *what, struct jinja_template *t, const cJSON *e) {
    const cJSON *vars = cJSON_GetObjectItem(e, "vars"), *want = cJSON_GetObjectItem(e, "output");
    char *out = NULL, err[512];
    int rc = jinja_render(t, vars, NULL, &out, NULL, err, sizeof err);
    if (want) {
        cr_expect_eq(rc, JINJA_OK, "%s: render failed: %s", what, err);
        if (rc == JINJA_OK)
            cr_expect_str_eq(out, want->valuestring, "%s renders differently", what);
    } else {
        const char *kind = cJSON_GetObjectItem(e, "kind")->valuestring;
        const char *msg = cJSON_GetObjectItem(e, "error")->valuestring;
        cr_expect_eq(rc, JINJA_ERR_RENDER, "%s: jinja2 raised %s (%s), we returned %d", what, kind,
                     msg, rc);
        if (rc == JINJA_ERR_RENDER && !strcmp(kind, "raise"))
            cr_expect_str_eq(err, msg, "%s: raise_exception message", what);
    }
    free(out);
}

Test(jinja, real_templates_match_jinja2) {
    cJSON *golden = load_json(GOLDEN_DIR "expected.json");
    int n = 0, outputs = 0;
    char templates[64][64];
    int n_templates = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, golden) {
        const char *name = cJSON_GetObjectItem(e, "template")->valuestring;
        const char *cas = cJSON_GetObjectItem(e, "case")->valuestring;
        char path[256], what[160];
        snprintf(path, sizeof path, GOLDEN_DIR "%s.jinja", name);
        snprintf(what, sizeof what, "%s/%s", name, cas);
        size_t len;
        char *src = slurp(path, &len), err[512];
        struct jinja_template *t = NULL;
        cr_assert_eq(jinja_parse(src, len, &t, err, sizeof err), JINJA_OK, "%s: %s", path, err);
        check(what, t, e);
        jinja_free(t);
        free(src);
        int seen = 0;
        for (int i = 0; i < n_templates; i++)
            seen |= !strcmp(templates[i], name);
        if (!seen && n_templates < 64) snprintf(templates[n_templates++], 64, "%s", name);
        n++;
        outputs += cJSON_GetObjectItem(e, "output") != NULL;
    }
    cr_expect_geq(n_templates, 15, "the issue asks for at least 15 real templates");
    cr_expect_geq(outputs, 100);
    cJSON_Delete(golden);
}

Test(jinja, language_features_match_jinja2) {
    cJSON *golden = load_json(GOLDEN_DIR "features.json");
    const cJSON *e;
    int i = 0;
    cJSON_ArrayForEach(e, golden) {
        const char *src = cJSON_GetObjectItem(e, "source")->valuestring;
        const cJSON *kind = cJSON_GetObjectItem(e, "kind");
        char what[160], err[512];
        snprintf(what, sizeof what, "feature %d: %.100s", i++, src);
        struct jinja_template *t = NULL;
        int rc = jinja_parse(src, strlen(src), &t, err, sizeof err);
        if (kind && !strcmp(kind->valuestring, "syntax")) {
            cr_expect_eq(rc, JINJA_ERR_SYNTAX, "%s: jinja2 rejects it", what);
        } else {
            cr_expect_eq(rc, JINJA_OK, "%s: %s", what, err);
            if (rc == JINJA_OK) check(what, t, e);
        }
        jinja_free(t);
    }
    cr_expect_geq(i, 40);
    cJSON_Delete(golden);
}

static int parse_error(const char *src, char *err, size_t errlen) {
    struct jinja_template *t = NULL;
    int rc = jinja_parse(src, strlen(src), &t, err, errlen);
    jinja_free(t);
    return rc;
}

Test(jinja, syntax_errors_name_line_and_column) {
    static const struct {
        const char *src, *want;
    } cases[] = {
        {"ok\n{% if x %}\nno end", "line 2, column 4: unclosed block: expected {% elif %}"},
        {"{{ 1 + }}", "line 1, column 8: expected an expression"},
        {"a\n\n  {% frobnicate %}", "line 3, column 6: unknown tag 'frobnicate'"},
        {"{{ 'open", "line 1, column 4: unterminated string"},
        {"{% for x in %}{% endfor %}", "line 1, column 13: expected an expression"},
        {"{{ x ", "line 1, column 1: unclosed {{ tag"},
        {"{# never closed", "line 1, column 1: unclosed comment"},
        {"{{ a $ b }}", "line 1, column 6: unexpected character '$'"},
        {"{% endfor %}", "line 1, column 4: unknown tag 'endfor'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[256];
        cr_expect_eq(parse_error(cases[i].src, err, sizeof err), JINJA_ERR_SYNTAX, "%s",
                     cases[i].src);
        cr_expect(strstr(err, cases[i].want), "%s: got \"%s\", want \"%s\"", cases[i].src, err,
                  cases[i].want);
    }
    /* nesting far past any template is an error, not a stack overflow */
    char deep[4096];
    size_t n = 0;
    n += (size_t)snprintf(deep, sizeof deep, "{{ ");
    for (int i = 0; i < 1000; i++)
        deep[n++] = '[';
    for (int i = 0; i < 1000; i++)
        deep[n++] = ']';
    snprintf(deep + n, sizeof deep - n, " }}");
    char err[256];
    cr_expect_eq(parse_error(deep, err, sizeof err), JINJA_ERR_SYNTAX);
    cr_expect(strstr(err, "nested too deeply"), "%s", err);
}

static int render_src(const char *src, const char *vars_json, const struct jinja_limits *lim,
                      char **out, char *err, size_t errlen) {
    struct jinja_template *t = NULL;
    cr_assert_eq(jinja_parse(src, strlen(src), &t, err, errlen), JINJA_OK, "%s", err);
    cJSON *vars = vars_json ? cJSON_Parse(vars_json) : NULL;
    int rc = jinja_render(t, vars, lim, out, NULL, err, errlen);
    cJSON_Delete(vars);
    jinja_free(t);
    return rc;
}

Test(jinja, rendering_is_bounded) {
    char *out = NULL, err[256];
    struct jinja_limits lim = {.max_output = 1000, .max_steps = 500, .max_memory = 1 << 20};
    /* output over the byte limit */
    cr_expect_eq(
        render_src("{% for i in range(100) %}{{ 'abcdefghijklmnopqrstuvwxyz' }}{% endfor %}", NULL,
                   &lim, &out, err, sizeof err),
        JINJA_ERR_RENDER);
    cr_expect(strstr(err, "exceeds 1000 bytes"), "%s", err);
    /* loops: nested loops multiply, the step budget stops them */
    cr_expect_eq(
        render_src("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}",
                   NULL, &lim, &out, err, sizeof err),
        JINJA_ERR_RENDER);
    cr_expect(strstr(err, "more than 500 loop iterations"), "%s", err);
    /* unbounded macro recursion */
    cr_expect_eq(render_src("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, NULL,
                            &out, err, sizeof err),
                 JINJA_ERR_RENDER);
    cr_expect(strstr(err, "nested more than"), "%s", err);
    /* a string doubled until it takes all the memory it may */
    struct jinja_limits mem = {.max_memory = 1 << 20};
    cr_expect_eq(render_src("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}"
                            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
                            NULL, &mem, &out, err, sizeof err),
                 JINJA_ERR_RENDER);
    cr_expect(strstr(err, "memory"), "%s", err);
    cr_expect_null(out);
    /* and within the limits the same shapes render */
    cr_expect_eq(render_src("{% for i in range(10) %}{{ i }}{% endfor %}", NULL, &lim, &out, err,
                            sizeof err),
                 JINJA_OK, "%s", err);
    cr_expect_str_eq(out, "0123456789");
    free(out);
}

Test(jinja, long_operator_chains_are_bounded_not_a_stack_overflow) {
    /* 1+1+...+1 parses as a flat loop but evaluates as a 100,000-deep tree */
    size_t n = 100000;
    char *src = malloc(3 * n + 16), *p = src;
    p += sprintf(p, "{{ 1");
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "+1");
    sprintf(p, " }}");
    char *out = NULL, err[256];
    cr_expect_eq(render_src(src, NULL, NULL, &out, err, sizeof err), JINJA_ERR_RENDER);
    cr_expect(strstr(err, "nested more than"), "%s", err);
    free(src);
}

Test(jinja, raise_exception_message_and_undefined_errors) {
    char *out = NULL, err[256];
    cr_expect_eq(
        render_src("{{ raise_exception('Roles must alternate, got ' ~ messages[0].role) }}",
                   "{\"messages\":[{\"role\":\"tool\"}]}", NULL, &out, err, sizeof err),
        JINJA_ERR_RENDER);
    cr_expect_str_eq(err, "Roles must alternate, got tool");
    cr_expect_eq(render_src("line one\n{{ messages[5].content }}", "{\"messages\":[]}", NULL, &out,
                            err, sizeof err),
                 JINJA_ERR_RENDER);
    cr_expect(strstr(err, "line 2") && strstr(err, "undefined"), "%s", err);
    cr_expect_eq(render_src("{{ 'a' + 1 }}", NULL, NULL, &out, err, sizeof err), JINJA_ERR_RENDER);
    cr_expect(strstr(err, "unsupported operand"), "%s", err);
    cr_expect_eq(render_src("{% set x = 1 %}{% set x.y = 2 %}", NULL, NULL, &out, err, sizeof err),
                 JINJA_ERR_RENDER);
    cr_expect(strstr(err, "non-namespace"), "%s", err);
}

Test(jinja, strftime_now_is_the_local_date) {
    char *out = NULL, err[256], want[64];
    for (int attempt = 0; attempt < 2; attempt++) { /* a second may tick between the two reads */
        cr_assert_eq(render_src("{{ strftime_now('%d %b %Y %H:%M:%S') }}", NULL, NULL, &out, err,
                                sizeof err),
                     JINJA_OK, "%s", err);
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(want, sizeof want, "%d %b %Y %H:%M:%S", &tm);
        if (!strcmp(out, want)) break;
        free(out);
        out = NULL;
    }
    cr_expect_str_eq(out, want);
    free(out);
    cr_expect_eq(render_src("{{ strftime_now is defined }}", NULL, NULL, &out, err, sizeof err),
                 JINJA_OK);
    cr_expect_str_eq(out, "True");
    free(out);
}

Test(jinja, one_template_renders_many_times) {
    /* the AST is read-only: rendering twice with other variables changes nothing */
    char err[256];
    const char *src = "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 "
                      "%}{% endfor %}{{ ns.n }}";
    struct jinja_template *t = NULL;
    cr_assert_eq(jinja_parse(src, strlen(src), &t, err, sizeof err), JINJA_OK);
    for (int k = 0; k < 3; k++) {
        cJSON *v = cJSON_Parse(k == 1 ? "{\"messages\":[1,2,3]}" : "{\"messages\":[1]}");
        char *out = NULL;
        cr_assert_eq(jinja_render(t, v, NULL, &out, NULL, err, sizeof err), JINJA_OK, "%s", err);
        cr_expect_str_eq(out, k == 1 ? "3" : "1");
        free(out);
        cJSON_Delete(v);
    }
    jinja_free(t);
}
