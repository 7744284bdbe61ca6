/* test_tools.c — OpenAI tool calling (server/tools.h): request bodies with tools and tool
 * messages rendered through every chat template in tests/golden/chat_templates/ equal what
 * tools/gen_chat_golden.py renders with jinja2 (tools_requests.json: vLLM's apply_chat_template
 * input for templates that take tools, the documented Hermes rewrite for the others); the
 * refusals name their field; the forced-call grammar accepts exactly the calls the schemas allow;
 * the output rule tells calls from text. */
#include "test_util.h"
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/grammar.h"
#include "model/jinja.h"
#include "model/tokenizer.h"
#include "server/reqparse.h"
#include "server/tools.h"

#define GOLDEN "tests/golden/chat_templates/"

static const struct reqparse_limits LIM = {.max_stop_sequences = 4};

static char *slurp(const char *path) {
    char *s = tu_slurp(path, NULL);
    cr_assert_not_null(s, "cannot open %s", path);
    return s;
}

/* The template's bos/eos tokens as the golden's vars carry them (expected.json, same names). */
static void tokens_of(const cJSON *expected, const char *name, const char **bos, const char **eos) {
    const cJSON *e;
    cJSON_ArrayForEach(e, expected) {
        if (strcmp(cJSON_GetObjectItem(e, "template")->valuestring, name)) continue;
        const cJSON *v = cJSON_GetObjectItem(e, "vars");
        *bos = cJSON_GetObjectItem(v, "bos_token")->valuestring;
        *eos = cJSON_GetObjectItem(v, "eos_token")->valuestring;
        return;
    }
    cr_assert_fail("no vars for template %s", name);
}

Test(tools, requests_render_as_jinja2_renders_them) {
    char *gs = slurp(GOLDEN "tools_requests.json"), *es = slurp(GOLDEN "expected.json");
    cJSON *golden = cJSON_Parse(gs), *expected = cJSON_Parse(es);
    cr_assert(golden && expected);
    int n = 0, outputs = 0, with_tools = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, golden) {
        const char *name = cJSON_GetObjectItem(e, "template")->valuestring;
        const char *cas = cJSON_GetObjectItem(e, "case")->valuestring;
        if (cJSON_GetObjectItem(e, "extra")->child) continue; /* llama32's date_string: no API */
        char path[256], err[512];
        snprintf(path, sizeof path, GOLDEN "%s.jinja", name);
        char *src = slurp(path);
        const char *bos, *eos;
        tokens_of(expected, name, &bos, &eos);
        struct chat_template ct;
        cr_assert_eq(chat_template_init_tokens(&ct, src, bos, eos, err, sizeof err), 0, "%s", err);
        cr_expect_eq(chat_template_takes_tools(&ct),
                     cJSON_IsTrue(cJSON_GetObjectItem(e, "takes_tools")), "%s", name);
        char *body = cJSON_PrintUnformatted(cJSON_GetObjectItem(e, "request"));
        struct reqparse_oai o;
        struct reqparse_error re;
        cr_assert_eq(reqparse_chat(body, strlen(body), &LIM, &o, &re), 0, "%s/%s: %s", name, cas,
                     re.message);
        int takes = chat_template_takes_tools(&ct);
        cr_assert_eq(tools_adapt_messages(o.tools, takes, &o.msgs, &o.n_msgs), 0);
        char *out = NULL;
        int rc = chat_template_render_tools(&ct, o.msgs, o.n_msgs, takes ? o.tools->tools : NULL, 1,
                                            &out, err, sizeof err);
        const cJSON *want = cJSON_GetObjectItem(e, "output");
        if (want) {
            cr_expect_eq(rc, 0, "%s/%s: %s", name, cas, err);
            if (!rc)
                cr_expect_str_eq(out, want->valuestring, "%s/%s renders differently", name, cas);
            outputs++;
            with_tools += takes && o.tools->tools;
        } else {
            cr_expect_eq(rc, 1, "%s/%s: jinja2 raised %s", name, cas,
                         cJSON_GetObjectItem(e, "error")->valuestring);
            /* raise_exception's message exactly; another error (TypeError, ...) with ours
             * naming the line before jinja2's message */
            const char *msg = cJSON_GetObjectItem(e, "error")->valuestring;
            const char *kind = cJSON_GetObjectItem(e, "kind")->valuestring;
            if (rc == 1 && !strcmp(kind, "raise"))
                cr_expect_str_eq(err, msg, "%s/%s", name, cas);
            else if (rc == 1)
                cr_expect(strlen(err) >= strlen(msg) &&
                              !strcmp(err + strlen(err) - strlen(msg), msg),
                          "%s/%s: %s, jinja2: %s", name, cas, err, msg);
        }
        free(out);
        reqparse_oai_free(&o);
        free(body);
        chat_template_free(&ct);
        free(src);
        n++;
    }
    cr_expect_geq(n, 70);
    cr_expect_geq(outputs, 60);
    cr_expect_geq(with_tools, 10, "templates that render the tool list themselves");
    cJSON_Delete(golden);
    cJSON_Delete(expected);
    free(gs);
    free(es);
}

#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define WEATHER                                                                                    \
    "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":"      \
    "\"object\",\"properties\":{\"location\":{\"type\":\"string\"},\"unit\":{\"enum\":["           \
    "\"c\",\"f\"]}},\"required\":[\"location\"]}}}"
#define NOARGS "{\"type\":\"function\",\"function\":{\"name\":\"now\"}}"

static int parse(const char *body, struct reqparse_oai *o, struct reqparse_error *e) {
    memset(e, 0, sizeof *e);
    return reqparse_chat(body, strlen(body), &LIM, o, e);
}

Test(tools, refusals_name_the_field) {
    static const struct {
        const char *body, *param;
    } cases[] = {
        {"{" MSGS ",\"tools\":{}}", "tools"},
        {"{" MSGS ",\"tools\":[{}]}", "tools"},
        {"{" MSGS ",\"tools\":[{\"type\":\"retrieval\",\"function\":{\"name\":\"f\"}}]}", "tools"},
        {"{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a b\"}}]}", "tools"},
        {"{" MSGS ",\"tools\":[" NOARGS "," NOARGS "]}", "tools"},
        {"{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
         "[]}}]}",
         "tools"},
        {"{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
         "{\"enum\":[\"\xc0\xaf\"]}}}]}",
         "tools"},
        {"{" MSGS ",\"tool_choice\":\"required\"}", "tool_choice"},
        {"{" MSGS ",\"tools\":[" WEATHER "],\"tool_choice\":\"always\"}", "tool_choice"},
        {"{" MSGS ",\"tools\":[" WEATHER "],\"tool_choice\":{\"type\":\"function\",\"function\":"
         "{\"name\":\"nope\"}}}",
         "tool_choice"},
        {"{" MSGS ",\"tools\":[" WEATHER "],\"tool_choice\":\"required\",\"response_format\":"
         "{\"type\":\"json_object\"}}",
         "tool_choice"},
        /* a forced call whose schema the grammar cannot enforce */
        {"{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
         "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\",\"minimum\":3}}}}}],"
         "\"tool_choice\":\"required\"}",
         "tools"},
        {"{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", "messages"},
        {"{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":{}}]}", "messages"},
        {"{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{}}]}]}",
         "messages"},
        {"{\"messages\":[{\"role\":\"assistant\",\"content\":null}]}", "messages"},
        {"{\"prompt\":\"x\",\"tools\":[" WEATHER "]}", NULL}, /* completions: below */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct reqparse_oai o;
        struct reqparse_error e;
        if (!cases[i].param) {
            memset(&e, 0, sizeof e);
            cr_expect_eq(reqparse_completions(cases[i].body, strlen(cases[i].body), &LIM, &o, &e),
                         -1);
            cr_expect_str_eq(e.param, "tools");
        } else {
            cr_expect_eq(parse(cases[i].body, &o, &e), -1, "accepted: %s", cases[i].body);
            cr_expect_eq(e.status, 422, "%s: %s", cases[i].body, e.message);
            cr_expect_str_eq(e.param, cases[i].param, "%s: %s", cases[i].body, e.message);
        }
        reqparse_oai_free(&o);
    }
    /* the default values clients send are no-ops */
    static const char *const noop[] = {
        "{" MSGS ",\"tools\":[]}", "{" MSGS ",\"tools\":[" WEATHER "],\"tool_choice\":\"none\"}",
        "{" MSGS ",\"tool_choice\":\"auto\"}"};
    for (size_t i = 0; i < 3; i++) {
        struct reqparse_oai o;
        struct reqparse_error e;
        cr_expect_eq(parse(noop[i], &o, &e), 0, "%s: %s", noop[i], e.message);
        cr_expect_eq(o.tools->choice, TOOLS_CHOICE_NONE);
        /* "none" keeps the list for a template that takes tools (as vLLM passes it) */
        if (i == 1)
            cr_expect_eq(cJSON_GetArraySize(o.tools->tools), 1);
        else
            cr_expect_null(o.tools->tools);
        cr_expect_null(o.p.grammar);
        reqparse_oai_free(&o);
    }
}

/* Feed TEXT to a fresh matcher of G: 1 when it is a complete match. */
static int matches(const struct grammar *g, const char *text) {
    struct grammar_matcher *m = grammar_matcher_new(g);
    cr_assert_not_null(m);
    int ok = grammar_matcher_accept(m, text, strlen(text)) == 0 && grammar_matcher_accepting(m);
    grammar_matcher_free(m);
    return ok;
}

Test(tools, forced_call_grammar) {
    struct reqparse_oai o;
    struct reqparse_error e;
    cr_assert_eq(
        parse("{" MSGS ",\"tools\":[" WEATHER "," NOARGS "],\"tool_choice\":\"required\"}", &o, &e),
        0, "%s", e.message);
    cr_assert_not_null(o.p.grammar);
    cr_expect(
        matches(o.p.grammar, "{\"name\":\"get_weather\",\"arguments\":{\"location\":\"P\"}}"));
    cr_expect(matches(o.p.grammar,
                      "{\"name\": \"get_weather\", \"arguments\": {\"location\": \"P\", \"unit\": "
                      "\"f\"}}"));
    cr_expect(matches(o.p.grammar, "{\"name\":\"now\",\"arguments\":{}}"));
    cr_expect(!matches(o.p.grammar, "{\"name\":\"now\",\"arguments\":{\"x\":1}}"));
    cr_expect(!matches(o.p.grammar, "{\"name\":\"get_weather\",\"arguments\":{}}"), "required");
    cr_expect(!matches(o.p.grammar, "{\"name\":\"other\",\"arguments\":{}}"));
    cr_expect(
        !matches(o.p.grammar,
                 "{\"name\":\"get_weather\",\"arguments\":{\"location\":\"P\",\"unit\":\"k\"}}"));
    reqparse_oai_free(&o);
    /* named: only that function; $defs of its parameters are hoisted and still resolve */
    cr_assert_eq(parse("{" MSGS ",\"tools\":[" WEATHER ",{\"type\":\"function\",\"function\":{"
                       "\"name\":\"pt\",\"parameters\":{\"type\":\"object\",\"properties\":{\"p\":"
                       "{\"$ref\":\"#/$defs/P\"}},\"required\":[\"p\"],\"$defs\":{\"P\":{\"type\":"
                       "\"object\",\"properties\":{\"x\":{\"type\":\"integer\"}},\"required\":["
                       "\"x\"]}}}}}],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":"
                       "\"pt\"}}}",
                       &o, &e),
                 0, "%s", e.message);
    cr_expect_eq(o.tools->choice, TOOLS_CHOICE_NAMED);
    cr_expect(matches(o.p.grammar, "{\"name\":\"pt\",\"arguments\":{\"p\":{\"x\":7}}}"));
    cr_expect(!matches(o.p.grammar, "{\"name\":\"pt\",\"arguments\":{\"p\":{\"x\":\"7\"}}}"));
    cr_expect(
        !matches(o.p.grammar, "{\"name\":\"get_weather\",\"arguments\":{\"location\":\"P\"}}"));
    reqparse_oai_free(&o);
}

/* The output rule: a call (its name and arguments), or text (NULL). */
static void output_is(const struct tools_req *t, const char *text, const char *name,
                      const char *args, int n_calls) {
    cJSON *calls = tools_parse_output(t, text, strlen(text));
    if (!name) {
        cr_expect_null(calls, "\"%s\" read as a call", text);
        cJSON_Delete(calls);
        return;
    }
    cr_assert_not_null(calls, "\"%s\" not read as a call", text);
    cr_expect_eq(cJSON_GetArraySize(calls), n_calls, "%s", text);
    const cJSON *c = cJSON_GetArrayItem(calls, 0), *f = cJSON_GetObjectItem(c, "function");
    cr_expect_str_eq(cJSON_GetObjectItem(c, "type")->valuestring, "function");
    const char *id = cJSON_GetObjectItem(c, "id")->valuestring;
    cr_expect(strncmp(id, "call_", 5) == 0 && strlen(id) == 29, "%s", id);
    cr_expect_str_eq(cJSON_GetObjectItem(f, "name")->valuestring, name);
    cr_expect_str_eq(cJSON_GetObjectItem(f, "arguments")->valuestring, args);
    if (n_calls > 1)
        cr_expect_str_neq(id, cJSON_GetObjectItem(cJSON_GetArrayItem(calls, 1), "id")->valuestring);
    cJSON_Delete(calls);
}

Test(tools, output_calls_and_text) {
    struct reqparse_oai o;
    struct reqparse_error e;
    cr_assert_eq(parse("{" MSGS ",\"tools\":[" WEATHER "," NOARGS "]}", &o, &e), 0);
    const struct tools_req *t = o.tools;
    cr_assert_eq(t->choice, TOOLS_CHOICE_AUTO);
    output_is(t, "{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris\"}}",
              "get_weather", "{\"location\":\"Paris\"}", 1);
    output_is(t, "  <tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>\n", "now",
              "{}", 1);
    output_is(t,
              "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n"
              "{\"name\": \"get_weather\", \"arguments\": {\"location\": \"X\"}}",
              "now", "{}", 2); /* the last block cut by the end token */
    output_is(t, "[{\"name\": \"now\", \"parameters\": {}}, {\"name\": \"now\"}]", "now", "{}", 2);
    output_is(t, "{\"name\": \"now\", \"arguments\": \"{\\\"a\\\": 1}\"}", "now", "{\"a\":1}", 1);
    output_is(t, "The weather is fine.", NULL, NULL, 0);
    output_is(t, "{\"name\": \"unknown\", \"arguments\": {}}", NULL, NULL, 0);
    output_is(t, "{\"name\": \"now\", \"arguments\": {}} and more", NULL, NULL, 0);
    output_is(t, "<tool_call>\n{\"name\": \"now\"\n</tool_call>", NULL, NULL, 0);
    output_is(t, "<tool_call>{\"name\":\"now\"}</tool_call> then text", NULL, NULL, 0);
    output_is(t, "{\"city\": \"Paris\"}", NULL, NULL, 0);
    /* streaming holds what may still become a call, and only that */
    cr_expect(tools_stream_hold(t, "", 0));
    cr_expect(tools_stream_hold(t, " \n<tool", 7));
    cr_expect(tools_stream_hold(t, "<tool_call>\n{", 13));
    cr_expect(tools_stream_hold(t, "{\"na", 4));
    cr_expect(!tools_stream_hold(t, "The", 3));
    cr_expect(!tools_stream_hold(t, "<tool>", 6));
    reqparse_oai_free(&o);
}

/* A forced call: its arguments as the model wrote them, and the head a stream waits for. */
Test(tools, forced_call_output_and_head) {
    struct reqparse_oai o;
    struct reqparse_error e;
    cr_assert_eq(
        parse("{" MSGS ",\"tools\":[" NOARGS "," WEATHER "],\"tool_choice\":\"required\"}", &o, &e),
        0, "%s", e.message);
    const struct tools_req *t = o.tools;
    const char *out = "{\"name\": \"get_weather\", \"arguments\": {\"location\": \"P\"}}";
    output_is(t, out, "get_weather", "{\"location\": \"P\"}", 1);
    output_is(t, "{\"name\":\"now\",\"arguments\":{}}", "now", "{}", 1);
    output_is(t, "{\"name\": \"get_weather\", \"arguments\": {\"location\": \"P", NULL, NULL, 0);
    size_t at = 0, n = strlen(out);
    int fn = -1;
    const char *args = strstr(out, "{\"location");
    for (size_t k = 0; k <= n; k++) {
        int want = k > (size_t)(args - out);
        cr_expect_eq(tools_forced_head(t, out, k, &at, &fn), want, "prefix of %zu bytes", k);
        if (want) cr_expect(at == (size_t)(args - out) && fn == 1);
    }
    reqparse_oai_free(&o);
}

Test(tools, hermes_rewrite_for_templates_without_tools) {
    struct reqparse_oai o;
    struct reqparse_error e;
    cr_assert_eq(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"w?\"},{\"role\":"
                       "\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
                       "\"function\",\"function\":{\"name\":\"now\",\"arguments\":\"{}\"}}]},{"
                       "\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"9:00\"},{\"role\":"
                       "\"tool\",\"tool_call_id\":\"c2\",\"content\":\"x\"}],\"tools\":[" NOARGS
                       "]}",
                       &o, &e),
                 0, "%s", e.message);
    cr_assert_eq(o.n_msgs, 4);
    cr_expect_null(o.msgs[1].content);
    cr_expect_str_eq(o.msgs[1].tool_calls,
                     "[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"now\","
                     "\"arguments\":{}}}]");
    cr_expect_str_eq(o.msgs[2].tool_call_id, "c1");
    cr_assert_eq(tools_adapt_messages(o.tools, 0, &o.msgs, &o.n_msgs), 0);
    cr_assert_eq(o.n_msgs, 4, "system + user + assistant + one user for both results");
    cr_expect_str_eq(o.msgs[0].role, "system");
    cr_expect(strstr(o.msgs[0].content, "<tools>\n" NOARGS "\n</tools>"), "%s", o.msgs[0].content);
    cr_expect_str_eq(o.msgs[2].content,
                     "<tool_call>\n{\"name\":\"now\",\"arguments\":{}}\n</tool_call>");
    cr_expect_str_eq(o.msgs[3].role, "user");
    cr_expect_str_eq(
        o.msgs[3].content,
        "<tool_response>\n9:00\n</tool_response>\n<tool_response>\nx\n</tool_response>");
    for (int i = 0; i < o.n_msgs; i++)
        cr_expect_null(o.msgs[i].tool_calls);
    reqparse_oai_free(&o);
}
