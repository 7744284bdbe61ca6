/* test_reqparse.c — server/reqparse: the generation routes' bodies as plain functions. Each
 * defect of issue 11 that lives in parsing has a case here (trailing data, the chat max_tokens
 * default, client no-op defaults, float underflow of temperature, repetition_penalty, token ids
 * past int, invalid UTF-8 in prompts), beside the API rules the endpoints already followed
 * (field types and ranges, the error's status / type / param). The bodies named "client" are
 * what the openai 1.x and huggingface_hub clients send (tests/fuzz/corpus/fuzz_request/). */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "server/reqparse.h"

static const struct reqparse_limits LIM = {.max_stop_sequences = 4};

static int tgi(const char *body, enum reqparse_tgi_route route, struct reqparse_tgi *t,
               struct reqparse_error *e) {
    return reqparse_tgi(body, strlen(body), route, &LIM, t, e);
}

static int chat(const char *body, struct reqparse_oai *o, struct reqparse_error *e) {
    return reqparse_chat(body, strlen(body), &LIM, o, e);
}

static int cmpl(const char *body, struct reqparse_oai *o, struct reqparse_error *e) {
    return reqparse_completions(body, strlen(body), &LIM, o, e);
}

enum route { TGI, CHAT, CMPL };

/* A body that ROUTE must refuse with STATUS, naming PARAM (NULL: no field). */
struct refusal {
    enum route route;
    const char *body;
    int status;
    const char *param;
};

static void refused(enum route route, const char *body, int status, const char *param) {
    struct reqparse_error e;
    int rc;
    if (route == TGI) {
        struct reqparse_tgi t;
        rc = tgi(body, REQPARSE_TGI_GENERATE, &t, &e);
        reqparse_tgi_free(&t);
    } else {
        struct reqparse_oai o;
        rc = route == CHAT ? chat(body, &o, &e) : cmpl(body, &o, &e);
        reqparse_oai_free(&o);
    }
    cr_assert_eq(rc, -1, "accepted: %s", body);
    cr_expect_eq(e.status, status, "%s: status %d (%s)", body, e.status, e.message);
    if (param) cr_expect_str_eq(e.param, param, "%s: %s", body, e.message);
    cr_expect(e.message[0] && e.type, "%s: an error needs a message and a type", body);
}

static void refused_all(const struct refusal *r, size_t n) {
    for (size_t i = 0; i < n; i++)
        refused(r[i].route, r[i].body, r[i].status, r[i].param);
}

static void chat_ok(const char *body, struct reqparse_oai *o) {
    struct reqparse_error e;
    int rc = chat(body, o, &e);
    cr_assert_eq(rc, 0, "%s refused: %d %s", body, e.status, e.message);
}

#define CHAT_MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]"

Test(reqparse, trailing_data_is_invalid_json) {
    static const struct refusal cases[] = {
        {TGI, "{\"inputs\":\"x\"} junk", 400, NULL},
        {TGI, "{\"inputs\":\"x\"}{}", 400, NULL},
        {CHAT, "{" CHAT_MSGS "} 1", 400, NULL},
        {TGI, "", 400, NULL},
        {TGI, "[1]", 400, NULL},
    };
    refused_all(cases, sizeof cases / sizeof cases[0]);
    struct reqparse_error e;
    struct reqparse_tgi t;
    /* a NUL inside the body, then garbage: the length counts, not the terminator */
    static const char nul[] = "{\"inputs\":\"x\"}\0junk";
    cr_expect_eq(reqparse_tgi(nul, sizeof nul - 1, REQPARSE_TGI_GENERATE, &LIM, &t, &e), -1);
    cr_expect_str_eq(e.type, "invalid_json");
    reqparse_tgi_free(&t);
    cr_expect_eq(tgi("{\"inputs\":\"x\"} \r\n\t", REQPARSE_TGI_GENERATE, &t, &e), 0,
                 "trailing whitespace is JSON");
    reqparse_tgi_free(&t);
}

Test(reqparse, tgi_client_body) {
    /* huggingface_hub InferenceClient.text_generation("Hello", max_new_tokens=16, details=True,
     * stop=["\n"], seed=3) as versions before 0.25 sent it, every parameter present, unset ones
     * null (newer ones drop the nulls: tests/fuzz/corpus/fuzz_request/hf_text_generation.json) */
    const char *b = "{\"inputs\": \"Hello\", \"parameters\": {\"best_of\": null, \"decoder_input_"
                    "details\": false, \"details\": true, \"do_sample\": false, \"frequency_penalty"
                    "\": null, \"grammar\": null, \"max_new_tokens\": 16, \"repetition_penalty\": "
                    "null, \"return_full_text\": false, \"seed\": 3, \"stop\": [\"\\n\"], "
                    "\"temperature\": null, \"top_k\": null, \"top_n_tokens\": null, \"top_p\": "
                    "null, \"truncate\": null, \"typical_p\": null, \"watermark\": false}, "
                    "\"stream\": false}";
    struct reqparse_tgi t;
    struct reqparse_error e;
    cr_assert_eq(tgi(b, REQPARSE_TGI_COMPAT, &t, &e), 0, "%s", e.message);
    cr_expect_str_eq(t.inputs, "Hello");
    cr_expect_eq(t.p.max_new, 16);
    cr_expect_eq(t.details, 1);
    cr_expect_eq(t.stream, 0);
    cr_expect_eq(t.p.sp.do_sample, 0);
    cr_expect_eq(t.p.seed_given, 1);
    cr_expect_eq(t.p.n_stop, 1);
    cr_expect_str_eq(t.p.stop[0], "\n");
    reqparse_tgi_free(&t);
    cr_assert_eq(tgi("{\"inputs\":\"a\",\"stream\":true}", REQPARSE_TGI_COMPAT, &t, &e), 0);
    cr_expect_eq(t.stream, 1, "POST / takes stream from the body");
    reqparse_tgi_free(&t);
    cr_assert_eq(tgi("{\"inputs\":\"a\",\"stream\":false}", REQPARSE_TGI_STREAM, &t, &e), 0);
    cr_expect_eq(t.stream, 1, "/generate_stream ignores a body's stream");
    reqparse_tgi_free(&t);
}

Test(reqparse, tgi_field_errors_name_the_field) {
    static const struct refusal cases[] = {
        {TGI, "{\"inputs\":1}", 422, "inputs"},
        {TGI, "{\"inputs\":\"\"}", 422, "inputs"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":[]}", 422, "parameters"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"temperature\":0}}", 422, "temperature"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"top_p\":1.5}}", 422, "top_p"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"max_new_tokens\":0}}", 422, "max_new_tokens"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"max_new_tokens\":2.5}}", 422, "max_new_tokens"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"best_of\":2}}", 422, "best_of"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"best_of\":2,\"do_sample\":true,\"seed\":1}}",
         422, "seed"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"best_of\":17,\"do_sample\":true}}", 422,
         "best_of"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"grammar\":{}}}", 422, "grammar"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"stop\":\"a\"}}", 422, "stop"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}}", 422,
         "stop"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"do_sample\":1}}", 422, "do_sample"},
    };
    refused_all(cases, sizeof cases / sizeof cases[0]);
}

/* 1e-50 rounds to 0.0f, which the sampler reads as "unset" (1): random output. It must be
 * greedy, the limit of temperature -> 0. */
Test(reqparse, underflowing_temperature_is_greedy) {
    struct reqparse_tgi t;
    struct reqparse_error e;
    cr_assert_eq(tgi("{\"inputs\":\"x\",\"parameters\":{\"temperature\":1e-50}}",
                     REQPARSE_TGI_GENERATE, &t, &e),
                 0);
    cr_expect_eq(t.p.sp.do_sample, 0, "TGI temperature 1e-50 samples");
    reqparse_tgi_free(&t);
    cr_assert_eq(tgi("{\"inputs\":\"x\",\"parameters\":{\"temperature\":1e-50,\"do_sample\":true}}",
                     REQPARSE_TGI_GENERATE, &t, &e),
                 0);
    cr_expect_eq(t.p.sp.do_sample, 0);
    reqparse_tgi_free(&t);
    cr_assert_eq(tgi("{\"inputs\":\"x\",\"parameters\":{\"temperature\":0.5}}",
                     REQPARSE_TGI_GENERATE, &t, &e),
                 0);
    cr_expect(t.p.sp.do_sample && t.p.sp.temperature == 0.5f);
    reqparse_tgi_free(&t);

    struct reqparse_oai o;
    const char *greedy[] = {"1e-50", "1e-39", "0", "1e-320"};
    for (int i = 0; i < 4; i++) {
        char b[128];
        snprintf(b, sizeof b, "{" CHAT_MSGS ",\"temperature\":%s}", greedy[i]);
        chat_ok(b, &o);
        cr_expect_eq(o.p.sp.do_sample, 0, "temperature %s samples", greedy[i]);
        reqparse_oai_free(&o);
    }
    chat_ok("{" CHAT_MSGS ",\"temperature\":2e-38}", &o);
    cr_expect(o.p.sp.do_sample && o.p.sp.temperature >= FLT_MIN,
              "a normal float temperature samples with that temperature");
    reqparse_oai_free(&o);
}

/* A repetition_penalty that rounds to 0 or inf in float divides logits into inf/NaN. */
Test(reqparse, repetition_penalty_keeps_logits_finite) {
    static const struct refusal cases[] = {
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"repetition_penalty\":1e-50}}", 422,
         "repetition_penalty"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"repetition_penalty\":1e-9}}", 422,
         "repetition_penalty"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"repetition_penalty\":1e20}}", 422,
         "repetition_penalty"},
        {CHAT, "{" CHAT_MSGS ",\"repetition_penalty\":1e-40}", 422, "repetition_penalty"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"repetition_penalty\":-1}}", 422,
         "repetition_penalty"},
    };
    refused_all(cases, sizeof cases / sizeof cases[0]);
    const char *ok[] = {"1e-8", "0.5", "1.2", "1e8"};
    for (int i = 0; i < 4; i++) {
        char b[128];
        snprintf(b, sizeof b, "{\"inputs\":\"x\",\"parameters\":{\"repetition_penalty\":%s}}",
                 ok[i]);
        struct reqparse_tgi t;
        struct reqparse_error e;
        cr_assert_eq(tgi(b, REQPARSE_TGI_GENERATE, &t, &e), 0, "%s: %s", ok[i], e.message);
        float pen = t.p.sp.repetition_penalty;
        /* the penalty's own arithmetic on a large float logit stays finite */
        cr_expect(pen > 0 && isfinite(1e30f / pen) && isfinite(-1e30f * pen), "%s", ok[i]);
        reqparse_tgi_free(&t);
    }
}

/* (int) of 2147483648.0 is undefined behaviour: the range is checked on the double first. */
Test(reqparse, token_ids_past_int_are_refused) {
    static const struct refusal cases[] = {
        {CMPL, "{\"prompt\":[1,2147483648]}", 422, "prompt"},
        {CMPL, "{\"prompt\":[1e300]}", 422, "prompt"},
        {CMPL, "{\"prompt\":[-1]}", 422, "prompt"},
        {CMPL, "{\"prompt\":[1.5]}", 422, "prompt"},
        {CMPL, "{\"prompt\":[1,\"a\"]}", 422, "prompt"},
    };
    refused_all(cases, sizeof cases / sizeof cases[0]);
    struct reqparse_oai o;
    struct reqparse_error e;
    cr_assert_eq(cmpl("{\"prompt\":[0,2147483647]}", &o, &e), 0, "%s", e.message);
    cr_expect(o.n_ids == 2 && o.ids[0] == 0 && o.ids[1] == 2147483647 && !o.prompt);
    reqparse_oai_free(&o);
}

/* Chat without max_tokens runs to the end of the context (OpenAI, vLLM, TGI's OpenAI route);
 * completions keep OpenAI's legacy default of 16. */
Test(reqparse, chat_max_tokens_default_is_the_context) {
    struct reqparse_oai o;
    chat_ok("{" CHAT_MSGS "}", &o);
    cr_expect_eq(o.p.max_new, -1);
    cr_expect_eq(o.p.max_new_to_context, 1, "chat without max_tokens must run to the context");
    reqparse_oai_free(&o);
    chat_ok("{" CHAT_MSGS ",\"max_tokens\":5}", &o);
    cr_expect_eq(o.p.max_new, 5);
    reqparse_oai_free(&o);
    chat_ok("{" CHAT_MSGS ",\"max_completion_tokens\":7}", &o);
    cr_expect_eq(o.p.max_new, 7);
    reqparse_oai_free(&o);
    chat_ok("{" CHAT_MSGS ",\"max_completion_tokens\":null,\"max_tokens\":9}", &o);
    cr_expect_eq(o.p.max_new, 9, "a null max_completion_tokens hid max_tokens");
    reqparse_oai_free(&o);
    chat_ok("{" CHAT_MSGS ",\"max_completion_tokens\":3,\"max_tokens\":9}", &o);
    cr_expect_eq(o.p.max_new, 3, "the newer name wins");
    reqparse_oai_free(&o);
    static const struct refusal cases[] = {
        {CHAT, "{" CHAT_MSGS ",\"max_completion_tokens\":0}", 422, "max_completion_tokens"},
    };
    refused_all(cases, sizeof cases / sizeof cases[0]);
    struct reqparse_error e;
    cr_assert_eq(cmpl("{\"prompt\":\"x\"}", &o, &e), 0);
    cr_expect(o.p.max_new == 16 && !o.p.max_new_to_context);
    reqparse_oai_free(&o);
}

/* What the openai 1.x client, LangChain and others send by default must pass. */
Test(reqparse, client_noop_defaults_accepted) {
    const char *noop[] = {
        "\"tools\":[]",
        "\"tools\":null",
        "\"tool_choice\":\"none\"",
        "\"tool_choice\":null",
        "\"tool_choice\":\"auto\"",
        "\"response_format\":{\"type\":\"text\"}",
        "\"logit_bias\":{}",
        "\"logit_bias\":null",
        "\"functions\":[]",
        "\"function_call\":\"none\"",
        "\"parallel_tool_calls\":true",
        "\"parallel_tool_calls\":false",
        "\"user\":\"user-1234\"",
        "\"stream_options\":null",
        "\"presence_penalty\":0",
        "\"frequency_penalty\":0.0",
        "\"n\":1",
        "\"logprobs\":false,\"top_logprobs\":null",
    };
    for (size_t i = 0; i < sizeof noop / sizeof noop[0]; i++) {
        char b[256];
        snprintf(b, sizeof b, "{" CHAT_MSGS ",%s}", noop[i]);
        struct reqparse_oai o;
        chat_ok(b, &o);
        reqparse_oai_free(&o);
    }
    /* openai 1.x: c.chat.completions.create(model="m", messages=[...], max_tokens=32,
     * temperature=0, stream=True, stream_options={"include_usage": True}) as LangChain sends it */
    struct reqparse_oai o;
    chat_ok(
        "{\"messages\": [{\"content\": \"You are terse.\", \"role\": \"system\"}, {\"content\": "
        "\"Hi\", \"role\": \"user\"}], \"model\": \"m\", \"max_tokens\": 32, \"n\": 1, "
        "\"stream\": true, \"stream_options\": {\"include_usage\": true}, \"temperature\": 0.0}",
        &o);
    cr_expect(o.stream && o.include_usage && o.p.max_new == 32 && !o.p.sp.do_sample);
    cr_expect(o.n_msgs == 2 && !strcmp(o.msgs[0].role, "system"));
    reqparse_oai_free(&o);
}

Test(reqparse, real_uses_of_unimplemented_features_refused) {
    static const struct refusal cases[] = {
        {CHAT,
         "{" CHAT_MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f g\"}}]}", 422,
         "tools"},
        {CMPL,
         "{\"prompt\":\"x\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}",
         422, "tools"},
        {CHAT, "{" CHAT_MSGS ",\"tools\":{}}", 422, "tools"},
        {CHAT, "{" CHAT_MSGS ",\"tool_choice\":\"required\"}", 422, "tool_choice"},
        {CHAT, "{" CHAT_MSGS ",\"tool_choice\":{\"type\":\"function\"}}", 422, "tool_choice"},
        {CHAT, "{" CHAT_MSGS ",\"response_format\":\"text\"}", 422, "response_format"},
        {CHAT, "{" CHAT_MSGS ",\"functions\":[{\"name\":\"f\"}]}", 422, "functions"},
        {CHAT, "{" CHAT_MSGS ",\"parallel_tool_calls\":\"yes\"}", 422, "parallel_tool_calls"},
        {CHAT, "{" CHAT_MSGS ",\"user\":5}", 422, "user"},
        {CHAT, "{" CHAT_MSGS ",\"n\":0}", 422, "n"},
        {CHAT, "{" CHAT_MSGS ",\"n\":129}", 422, "n"},
        {CHAT, "{" CHAT_MSGS ",\"best_of\":2}", 422, "best_of"},
        {CMPL, "{\"prompt\":\"x\",\"n\":2,\"best_of\":1}", 422, "best_of"},
        {CMPL, "{\"prompt\":\"x\",\"best_of\":3,\"stream\":true}", 422, "best_of"},
        {CMPL, "{\"prompt\":[\"x\",[1]]}", 422, "prompt"},
        {CMPL, "{\"prompt\":[[1],[]]}", 422, "prompt"},
        {CMPL, "{\"prompt\":\"x\",\"suffix\":\"y\"}", 422, "suffix"},
        {CMPL, "{\"prompt\":\"x\",\"echo\":true,\"stream\":true}", 422, "echo"},
    };
    refused_all(cases, sizeof cases / sizeof cases[0]);
}

/* logit_bias and the OpenAI penalties go into the sampler parameters; bad keys and values are
 * refused naming the field. */
Test(reqparse, logit_bias_and_penalties) {
    struct reqparse_oai o;
    chat_ok("{" CHAT_MSGS ",\"logit_bias\":{\"50256\":-100,\"7\":2.5,\"0\":100},"
            "\"presence_penalty\":0.5,\"frequency_penalty\":-2}",
            &o);
    cr_expect(o.p.sp.n_bias == 3);
    cr_expect(o.p.sp.bias_id[0] == 50256 && o.p.sp.bias[0] == -100.0f);
    cr_expect(o.p.sp.bias_id[1] == 7 && o.p.sp.bias[1] == 2.5f);
    cr_expect(o.p.sp.bias_id[2] == 0 && o.p.sp.bias[2] == 100.0f);
    cr_expect(o.p.sp.presence_penalty == 0.5f && o.p.sp.frequency_penalty == -2.0f);
    reqparse_oai_free(&o);
    static const struct refusal cases[] = {
        {CHAT, "{" CHAT_MSGS ",\"logit_bias\":{\"a\":1}}", 422, "logit_bias"},
        {CHAT, "{" CHAT_MSGS ",\"logit_bias\":{\"-1\":1}}", 422, "logit_bias"},
        {CHAT, "{" CHAT_MSGS ",\"logit_bias\":{\"1 \":1}}", 422, "logit_bias"},
        {CHAT, "{" CHAT_MSGS ",\"logit_bias\":{\"3000000000\":1}}", 422, "logit_bias"},
        {CHAT, "{" CHAT_MSGS ",\"logit_bias\":{\"1\":-100.5}}", 422, "logit_bias"},
        {CHAT, "{" CHAT_MSGS ",\"logit_bias\":{\"1\":null}}", 422, "logit_bias"},
        {CHAT, "{" CHAT_MSGS ",\"logit_bias\":{\"1\":1,\"1\":2}}", 422, "logit_bias"},
        {CMPL, "{\"prompt\":\"x\",\"logit_bias\":[]}", 422, "logit_bias"},
        {CHAT, "{" CHAT_MSGS ",\"presence_penalty\":2.5}", 422, "presence_penalty"},
        {CMPL, "{\"prompt\":\"x\",\"frequency_penalty\":\"1\"}", 422, "frequency_penalty"},
        {CHAT, "{" CHAT_MSGS ",\"top_logprobs\":2}", 422, "top_logprobs"},
        {CMPL, "{\"prompt\":\"x\",\"logprobs\":6}", 422, "logprobs"},
    };
    refused_all(cases, sizeof cases / sizeof cases[0]);
    /* top-k: chat top_logprobs with logprobs, completions logprobs k, echo scores the prompt */
    chat_ok("{" CHAT_MSGS ",\"logprobs\":true,\"top_logprobs\":20}", &o);
    cr_expect(o.p.top_k == 20 && !o.p.prompt_logprobs);
    reqparse_oai_free(&o);
    struct reqparse_error err;
    const char *b = "{\"prompt\":\"x\",\"logprobs\":3,\"echo\":true}";
    cr_assert_eq(reqparse_completions(b, strlen(b), &LIM, &o, &err), 0, "%s", err.message);
    cr_expect(o.p.top_k == 3 && o.p.prompt_logprobs);
    reqparse_oai_free(&o);
}

Test(reqparse, chat_messages_validated) {
    static const struct refusal cases[] = {
        {CHAT, "{\"messages\":[]}", 422, "messages"},
        {CHAT, "{\"messages\":{}}", 422, "messages"},
        {CHAT, "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", 422, "messages"},
        {CHAT, "{\"messages\":[{\"role\":\"user\"}]}", 422, "messages"},
        {CHAT,
         "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
         "\"image_url\":{\"url\":\"x\"}}]}]}",
         422, "messages"},
    };
    refused_all(cases, sizeof cases / sizeof cases[0]);
    struct reqparse_oai o;
    chat_ok("{\"messages\":[{\"role\":\"developer\",\"content\":\"Be brief.\"},{\"role\":\"user\","
            "\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},"
            "{\"role\":\"assistant\",\"content\":\"\"}]}",
            &o);
    cr_assert_eq(o.n_msgs, 3);
    cr_expect_str_eq(o.msgs[0].role, "system", "developer is OpenAI's new name for system");
    cr_expect_str_eq(o.msgs[1].content, "ab");
    cr_expect_str_eq(o.msgs[2].content, "");
    reqparse_oai_free(&o);
}

/* Prompt strings are what return_full_text and echo send back: invalid UTF-8 is refused, by
 * field, before it can be echoed into JSON. Escaped characters (\u00e9, surrogate pairs) are
 * valid UTF-8 once cJSON decodes them. */
Test(reqparse, invalid_utf8_prompts_refused) {
    static const struct refusal cases[] = {
        {TGI, "{\"inputs\":\"ab\xff\",\"parameters\":{\"return_full_text\":true}}", 422, "inputs"},
        {TGI, "{\"inputs\":\"\xed\xa0\x80\"}", 422, "inputs"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"stop\":[\"\xc3\"]}}", 422, "stop"},
        {CMPL, "{\"prompt\":\"\xc0\xaf\",\"echo\":true}", 422, "prompt"},
        {CMPL, "{\"prompt\":[\"\xe2\x82\"],\"echo\":true}", 422, "prompt"},
        {CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"\xf5\"}]}", 422, "messages"},
        {CHAT,
         "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"\x80\"}]"
         "}]}",
         422, "messages"},
    };
    refused_all(cases, sizeof cases / sizeof cases[0]);
    struct reqparse_tgi t;
    struct reqparse_error e;
    cr_assert_eq(
        tgi("{\"inputs\":\"caf\\u00e9 \\ud83d\\ude00 \xc3\xa9\"}", REQPARSE_TGI_GENERATE, &t, &e),
        0, "%s", e.message);
    cr_expect_str_eq(t.inputs, "caf\xc3\xa9 \xf0\x9f\x98\x80 \xc3\xa9");
    reqparse_tgi_free(&t);
}

/* Constrained decoding: response_format and TGI grammar become a compiled grammar in the job
 * parameters; unsupported schema keywords and regex constructs are 422s that name them. */
Test(reqparse, grammar_fields_compile) {
    const char *ok_chat[] = {
        "{" CHAT_MSGS ",\"response_format\":{\"type\":\"json_object\"}}",
        "{" CHAT_MSGS ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{"
        "\"name\":\"x\",\"strict\":true,\"schema\":{\"type\":\"object\",\"properties\":{"
        "\"a\":{\"type\":\"integer\"}},\"required\":[\"a\"]}}}}",
    };
    for (size_t i = 0; i < sizeof ok_chat / sizeof ok_chat[0]; i++) {
        struct reqparse_oai o;
        chat_ok(ok_chat[i], &o);
        cr_expect(o.p.grammar, "%s: no grammar", ok_chat[i]);
        reqparse_oai_free(&o);
    }
    struct reqparse_oai o;
    chat_ok("{" CHAT_MSGS ",\"response_format\":{\"type\":\"text\"}}", &o);
    cr_expect_null(o.p.grammar);
    reqparse_oai_free(&o);
    const char *ok_tgi[] = {
        "{\"inputs\":\"x\",\"parameters\":{\"grammar\":{\"type\":\"regex\",\"value\":\"[0-9]+\"}}}",
        "{\"inputs\":\"x\",\"parameters\":{\"grammar\":{\"type\":\"json\",\"value\":{"
        "\"type\":\"string\"}}}}",
        "{\"inputs\":\"x\",\"parameters\":{\"grammar\":{\"type\":\"json\",\"value\":\"{"
        "\\\"type\\\":"
        "\\\"boolean\\\"}\"}}}",
    };
    for (size_t i = 0; i < sizeof ok_tgi / sizeof ok_tgi[0]; i++) {
        struct reqparse_tgi t;
        struct reqparse_error e;
        cr_assert_eq(tgi(ok_tgi[i], REQPARSE_TGI_GENERATE, &t, &e), 0, "%s: %s", ok_tgi[i],
                     e.message);
        cr_expect(t.p.grammar, "%s: no grammar", ok_tgi[i]);
        reqparse_tgi_free(&t);
    }
    static const struct refusal cases[] = {
        {CHAT, "{" CHAT_MSGS ",\"response_format\":{\"type\":\"json_schema\"}}", 422,
         "response_format.json_schema.schema"},
        {CHAT,
         "{" CHAT_MSGS ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{"
         "\"schema\":{\"type\":\"integer\",\"minimum\":0}}}}",
         422, "response_format.json_schema.schema"},
        {CHAT, "{" CHAT_MSGS ",\"response_format\":{\"type\":\"xml\"}}", 422, "response_format"},
        {TGI,
         "{\"inputs\":\"x\",\"parameters\":{\"grammar\":{\"type\":\"regex\",\"value\":\"(?=a)\"}}}",
         422, "grammar.value"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"grammar\":{\"type\":\"regex\",\"value\":3}}}",
         422, "grammar.value"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"grammar\":{\"type\":\"json\",\"value\":\"{\"}}}",
         422, "grammar.value"},
        {TGI, "{\"inputs\":\"x\",\"parameters\":{\"grammar\":{\"type\":\"lark\",\"value\":\"x\"}}}",
         422, "grammar.type"},
    };
    refused_all(cases, sizeof cases / sizeof cases[0]);
    /* the message names the keyword */
    struct reqparse_error e;
    cr_assert_eq(chat("{" CHAT_MSGS ",\"response_format\":{\"type\":\"json_schema\","
                      "\"json_schema\":{\"schema\":{\"oneOf\":[]}}}}",
                      &o, &e),
                 -1);
    cr_expect(strstr(e.message, "oneOf"), "%s", e.message);
    reqparse_oai_free(&o);
}

/* n, best_of and prompt lists: what the job layer builds from (job_build_group). */
Test(reqparse, n_best_of_and_prompt_lists) {
    struct reqparse_limits lim = {.max_stop_sequences = 4};
    struct reqparse_oai o;
    struct reqparse_error e;
    const char *b = "{\"prompt\":[\"a\",\"bc\",\"d\"],\"n\":2,\"best_of\":3}";
    cr_assert_eq(reqparse_completions(b, strlen(b), &lim, &o, &e), 0, "%s", e.message);
    cr_assert_eq(o.n_prompts, 3);
    cr_assert_str_eq(o.prompts[1], "bc");
    cr_assert_null(o.prompt);
    cr_assert_eq(o.p.n_seqs, 3);
    cr_assert_eq(o.p.n_return, 2);
    reqparse_oai_free(&o);
    b = "{\"prompt\":[[1,2],[3]],\"n\":4}";
    cr_assert_eq(reqparse_completions(b, strlen(b), &lim, &o, &e), 0, "%s", e.message);
    cr_assert_eq(o.n_prompts, 2);
    cr_assert_eq(o.id_lens[0], 2);
    cr_assert_eq(o.id_lists[1][0], 3);
    cr_assert_eq(o.p.n_seqs, 4);
    cr_assert_eq(o.p.n_return, 4);
    reqparse_oai_free(&o);
    b = "{\"prompt\":[[5,6]]}"; /* a one-element list is the prompt itself */
    cr_assert_eq(reqparse_completions(b, strlen(b), &lim, &o, &e), 0, "%s", e.message);
    cr_assert_eq(o.n_prompts, 1);
    cr_assert_eq(o.n_ids, 2);
    reqparse_oai_free(&o);
    struct reqparse_tgi t;
    b = "{\"inputs\":\"x\",\"parameters\":{\"best_of\":3,\"do_sample\":true}}";
    cr_assert_eq(reqparse_tgi(b, strlen(b), REQPARSE_TGI_GENERATE, &lim, &t, &e), 0, "%s",
                 e.message);
    cr_assert_eq(t.p.n_seqs, 3);
    cr_assert_eq(t.p.n_return, 1);
    reqparse_tgi_free(&t);
}
