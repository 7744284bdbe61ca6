/* reqparse.c — reading and validating the generation routes' bodies (see reqparse.h).
 *
 * Field readers share one rule: absent or null means "not given" and leaves the default; a
 * value of the wrong type or out of range is a 422 naming the field. Ranges follow the APIs
 * (serving-apis.md): TGI temperature > 0, 0 < top_p <= 1; OpenAI temperature in [0, 2]. Two
 * ranges are ours, because the sampler works in float: a positive temperature below FLT_MIN
 * would round to 0 (which the sampler reads as "unset", i.e. 1), so it means greedy, its limit;
 * repetition_penalty is kept in [1e-8, 1e8] so that logits (float, far below 1e30 in magnitude)
 * stay finite once divided or multiplied by it (1e30 * 1e8 < FLT_MAX = 3.4e38). */
#include "reqparse.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/tools.h"
#include "server/utf8.h"

#define REP_PENALTY_MIN 1e-8
#define REP_PENALTY_MAX 1e8

void job_params_init(struct job_params *p) {
    memset(p, 0, sizeof *p);
    p->max_new = -1;
    p->n_seqs = p->n_return = 1;
    sampler_params_default(&p->sp);
}

void job_params_free(struct job_params *p) {
    for (int i = 0; i < p->n_stop; i++)
        free(p->stop[i]);
    free(p->stop);
    p->stop = NULL;
    p->n_stop = 0;
    grammar_free(p->grammar);
    p->grammar = NULL;
    cJSON_Delete(p->chat_tools);
    p->chat_tools = NULL;
}

/* ---- errors ------------------------------------------------------------------------------ */

static int fail(struct reqparse_error *e, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct reqparse_error *e, int status, const char *type, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    e->status = status;
    e->type = type;
    e->param[0] = 0;
    return -1;
}

int reqparse_invalid(struct reqparse_error *e, const char *field, const char *fmt, ...) {
    char msg[340];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    e->status = 422;
    e->type = "validation";
    snprintf(e->param, sizeof e->param, "%s", field ? field : "");
    snprintf(e->message, sizeof e->message, "Input validation error: %s", msg);
    return -1;
}

static int oom(struct reqparse_error *e) {
    return fail(e, 500, "internal", "out of memory");
}

/* ---- the body and its fields -------------------------------------------------------------- */

cJSON *reqparse_body(const char *body, size_t len, struct reqparse_error *e) {
    const char *end = NULL;
    cJSON *j = len ? cJSON_ParseWithLengthOpts(body, len, &end, 0) : NULL;
    if (j) { /* RFC 8259: one value, then only whitespace */
        size_t i = (size_t)(end - body);
        while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r'))
            i++;
        if (i < len) {
            cJSON_Delete(j);
            fail(e, 400, "invalid_json", "request body has data after the JSON value (byte %zu)",
                 i);
            return NULL;
        }
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        fail(e, 400, "invalid_json",
             len ? "request body is not a JSON object" : "request body is empty");
        return NULL;
    }
    return j;
}

static const cJSON *get(const cJSON *obj, const char *name) {
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static int get_int(const cJSON *obj, const char *name, long long lo, long long hi, long long *out,
                   struct reqparse_error *e) {
    const cJSON *v = get(obj, name);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return reqparse_invalid(e, name, "`%s` must be an integer", name);
    if (v->valuedouble < (double)lo || v->valuedouble > (double)hi)
        return reqparse_invalid(e, name, "`%s` must be in [%lld, %lld]", name, lo, hi);
    *out = (long long)v->valuedouble;
    return 0;
}

static int get_num(const cJSON *obj, const char *name, double lo, double hi, int lo_open,
                   double *out, struct reqparse_error *e) {
    const cJSON *v = get(obj, name);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return reqparse_invalid(e, name, "`%s` must be a number", name);
    double x = v->valuedouble;
    if ((lo_open ? x <= lo : x < lo) || x > hi) {
        if (lo_open && lo == 0 && hi >= 1e30)
            return reqparse_invalid(e, name, "`%s` must be strictly positive", name);
        return reqparse_invalid(e, name, "`%s` must be in %s%g, %g]", name, lo_open ? "(" : "[", lo,
                                hi);
    }
    *out = x;
    return 0;
}

int reqparse_get_bool(const cJSON *obj, const char *name, int *out, struct reqparse_error *e) {
    const cJSON *v = get(obj, name);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) return reqparse_invalid(e, name, "`%s` must be true or false", name);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* A string the model will read (or the client get back): non-empty unless EMPTY_OK, valid
 * UTF-8. FIELD names it in the error (e.g. "messages"), WHAT in the message. */
static int check_text(const char *s, const char *field, const char *what, int empty_ok,
                      struct reqparse_error *e) {
    size_t n = strlen(s);
    if (!n && !empty_ok) return reqparse_invalid(e, field, "`%s` cannot be empty", what);
    size_t ok = utf8_valid_prefix(s, n);
    if (ok < n)
        return reqparse_invalid(e, field, "`%s` is not valid UTF-8 (at byte %zu)", what, ok);
    return 0;
}

static int add_stop(struct job_params *p, const char *s) {
    char **ns = realloc(p->stop, sizeof(char *) * (size_t)(p->n_stop + 1));
    if (!ns) return -1;
    p->stop = ns;
    p->stop[p->n_stop] = strdup(s);
    if (!p->stop[p->n_stop]) return -1;
    p->n_stop++;
    return 0;
}

/* "stop": a string or an array of strings (OpenAI), or an array only (TGI: STRING_OK = 0). */
static int get_stop(const cJSON *obj, const char *name, int string_ok, int max,
                    struct job_params *p, struct reqparse_error *e) {
    const cJSON *v = get(obj, name);
    if (!v) return 0;
    if (cJSON_IsString(v) && string_ok) {
        if (!*v->valuestring)
            return reqparse_invalid(e, name, "`%s` entries must not be empty", name);
        if (check_text(v->valuestring, name, name, 0, e)) return -1;
        if (max < 1)
            return reqparse_invalid(e, name, "`%s` must have at most %d entries", name, max);
        return add_stop(p, v->valuestring) ? oom(e) : 0;
    }
    if (!cJSON_IsArray(v))
        return reqparse_invalid(e, name, "`%s` must be %s", name,
                                string_ok ? "a string or an array of strings"
                                          : "an array of strings");
    int n = cJSON_GetArraySize(v);
    if (n > max)
        return reqparse_invalid(e, name, "`%s` supports up to %d stop sequences. Given: %d", name,
                                max, n);
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        if (!cJSON_IsString(it) || !*it->valuestring)
            return reqparse_invalid(e, name, "`%s` entries must be non-empty strings", name);
        if (check_text(it->valuestring, name, name, 0, e)) return -1;
        if (add_stop(p, it->valuestring)) return oom(e);
    }
    return 0;
}

/* OpenAI logit_bias: {"<token id>": bias in [-100, 100], ...}, keys decimal ids (the vocabulary
 * is checked when the job is built), at most SAMPLER_MAX_BIAS, no id twice. */
static int get_logit_bias(const cJSON *b, struct sampler_params *sp, struct reqparse_error *e) {
    const cJSON *lb = get(b, "logit_bias"), *it;
    if (!lb) return 0;
    if (!cJSON_IsObject(lb))
        return reqparse_invalid(e, "logit_bias",
                                "`logit_bias` must be an object of token id strings to numbers");
    sp->n_bias = 0;
    cJSON_ArrayForEach(it, lb) {
        const char *k = it->string;
        char *end = NULL;
        long id = k && *k >= '0' && *k <= '9' ? strtol(k, &end, 10) : -1;
        if (id < 0 || id > INT_MAX || !end || *end || (k[0] == '0' && k[1]))
            return reqparse_invalid(e, "logit_bias",
                                    "`logit_bias` keys must be token ids (decimal integers); "
                                    "given \"%.40s\"",
                                    k ? k : "");
        if (!cJSON_IsNumber(it) || !(it->valuedouble >= -100 && it->valuedouble <= 100))
            return reqparse_invalid(e, "logit_bias",
                                    "`logit_bias` values must be numbers in [-100, 100] (key %ld)",
                                    id);
        for (int j = 0; j < sp->n_bias; j++)
            if (sp->bias_id[j] == id)
                return reqparse_invalid(e, "logit_bias", "`logit_bias` gives token %ld twice", id);
        if (sp->n_bias == SAMPLER_MAX_BIAS)
            return reqparse_invalid(e, "logit_bias", "`logit_bias` may have at most %d entries",
                                    SAMPLER_MAX_BIAS);
        sp->bias_id[sp->n_bias] = (int)id;
        sp->bias[sp->n_bias++] = (float)it->valuedouble;
    }
    return 0;
}

/* presence_penalty / frequency_penalty: numbers in [-2, 2] (OpenAI's range; TGI's
 * frequency_penalty too), 0 = off. */
static int get_penalties(const cJSON *b, int presence, struct sampler_params *sp,
                         struct reqparse_error *e) {
    double pp = 0, fp = 0;
    if ((presence && get_num(b, "presence_penalty", -2, 2, 0, &pp, e)) ||
        get_num(b, "frequency_penalty", -2, 2, 0, &fp, e))
        return -1;
    sp->presence_penalty = (float)pp;
    sp->frequency_penalty = (float)fp;
    return 0;
}

/* A field that must be absent, null, or equal to its neutral value (e.g. best_of 1); NAN as
 * NEUTRAL: only absent or null. */
static int reject_unsupported(const cJSON *obj, const char *name, double neutral,
                              struct reqparse_error *e) {
    const cJSON *v = get(obj, name);
    if (!v) return 0;
    if (cJSON_IsNumber(v) && v->valuedouble == neutral) return 0;
    if (cJSON_IsBool(v) && !cJSON_IsTrue(v) && neutral == 0) return 0;
    return reqparse_invalid(e, name, "`%s` is not supported by this server", name);
}

/* An array field whose only accepted value is empty (tools, functions). */
static int empty_array_only(const cJSON *obj, const char *name, const char *why,
                            struct reqparse_error *e) {
    const cJSON *v = get(obj, name);
    if (!v) return 0;
    if (!cJSON_IsArray(v)) return reqparse_invalid(e, name, "`%s` must be an array", name);
    if (cJSON_GetArraySize(v) > 0)
        return reqparse_invalid(e, name, "`%s` is not supported by this server (%s)", name, why);
    return 0;
}

/* tool_choice / function_call: null, "none", or "auto" (which, with no tools, is "none"). */
static int choice_none_only(const cJSON *obj, const char *name, struct reqparse_error *e) {
    const cJSON *v = get(obj, name);
    if (!v) return 0;
    if (cJSON_IsString(v) && (!strcmp(v->valuestring, "none") || !strcmp(v->valuestring, "auto")))
        return 0;
    return reqparse_invalid(
        e, name, "`%s` must be \"none\" or \"auto\": this server does not call tools", name);
}

/* The sampler's view of the API's temperature: a positive value below float range (it would
 * round to 0, which the sampler reads as 1) is greedy, the limit of temperature → 0. */
static void set_temperature(struct sampler_params *sp, double temp) {
    if (temp < FLT_MIN) {
        sp->do_sample = 0;
        sp->temperature = 1.0f;
    } else {
        sp->temperature = (float)temp;
    }
}

static int get_rep_penalty(const cJSON *obj, double *rep, struct reqparse_error *e) {
    const cJSON *v = get(obj, "repetition_penalty");
    if (get_num(obj, "repetition_penalty", 0, 1e30, 1, rep, e)) return -1;
    if (v && (*rep < REP_PENALTY_MIN || *rep > REP_PENALTY_MAX))
        return reqparse_invalid(
            e, "repetition_penalty",
            "`repetition_penalty` must be in [%g, %g] (the penalised logits must stay finite)",
            REP_PENALTY_MIN, REP_PENALTY_MAX);
    return 0;
}

/* ---- constrained decoding ------------------------------------------------------------------ */

/* Compile a JSON Schema (a JSON object, or a string holding one: TGI accepts both) into
 * P->grammar; FIELD names it in errors. Runs on the loop thread: the work is linear in the
 * schema, whose size the body limit bounds, and the grammar it builds is capped at
 * GRAMMAR_MAX_ELEMS elements. */
static int grammar_schema(const cJSON *v, const char *field, struct job_params *p,
                          struct reqparse_error *e) {
    cJSON *parsed = NULL;
    if (cJSON_IsString(v)) {
        if (!(parsed = cJSON_Parse(v->valuestring)))
            return reqparse_invalid(e, field, "`%s` is not valid JSON", field);
        v = parsed;
    }
    if (!cJSON_IsObject(v) && !cJSON_IsTrue(v)) {
        cJSON_Delete(parsed);
        return reqparse_invalid(e, field, "`%s` must be a JSON Schema (an object)", field);
    }
    char msg[256], kw[64];
    p->grammar = grammar_from_json_schema(v, msg, sizeof msg, kw, sizeof kw);
    cJSON_Delete(parsed);
    if (!p->grammar) {
        if (kw[0])
            return reqparse_invalid(e, field, "`%s`: %s (unsupported: `%s`)", field, msg, kw);
        return reqparse_invalid(e, field, "`%s`: %s", field, msg);
    }
    return 0;
}

/* TGI parameters.grammar: null, {"type": "json", "value": schema} or {"type": "regex", "value":
 * str}. */
static int get_grammar_tgi(const cJSON *params, struct job_params *p, struct reqparse_error *e) {
    const cJSON *gr = get(params, "grammar");
    if (!gr) return 0;
    const cJSON *ty = cJSON_IsObject(gr) ? cJSON_GetObjectItemCaseSensitive(gr, "type") : NULL;
    const cJSON *val = cJSON_IsObject(gr) ? cJSON_GetObjectItemCaseSensitive(gr, "value") : NULL;
    if (!cJSON_IsString(ty) || !val)
        return reqparse_invalid(e, "grammar",
                                "`grammar` must be an object with a string `type` and a `value`");
    if (!strcmp(ty->valuestring, "json") || !strcmp(ty->valuestring, "json_schema"))
        return grammar_schema(val, "grammar.value", p, e);
    if (!strcmp(ty->valuestring, "regex")) {
        if (!cJSON_IsString(val))
            return reqparse_invalid(e, "grammar.value",
                                    "`grammar.value` must be a string (the "
                                    "regular expression)");
        char msg[256], kw[64];
        p->grammar = grammar_from_regex(val->valuestring, strlen(val->valuestring), msg, sizeof msg,
                                        kw, sizeof kw);
        if (!p->grammar)
            return kw[0] ? reqparse_invalid(e, "grammar.value",
                                            "`grammar.value`: %s (unsupported: "
                                            "`%s`)",
                                            msg, kw)
                         : reqparse_invalid(e, "grammar.value", "`grammar.value`: %s", msg);
        return 0;
    }
    return reqparse_invalid(e, "grammar.type",
                            "`grammar.type` \"%.40s\" is not supported (\"json\" and \"regex\" "
                            "are)",
                            ty->valuestring);
}

/* OpenAI response_format: {"type": "text"}, {"type": "json_object"} (any JSON object), or
 * {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}. */
static int get_response_format(const cJSON *b, struct job_params *p, struct reqparse_error *e) {
    const cJSON *rf = get(b, "response_format");
    if (!rf) return 0;
    const cJSON *ty = cJSON_IsObject(rf) ? cJSON_GetObjectItemCaseSensitive(rf, "type") : NULL;
    if (!cJSON_IsString(ty))
        return reqparse_invalid(e, "response_format",
                                "`response_format` must be an object with a string `type`");
    if (!strcmp(ty->valuestring, "text")) return 0;
    if (!strcmp(ty->valuestring, "json_object")) {
        char msg[128];
        if (!(p->grammar = grammar_json_object(msg, sizeof msg)))
            return fail(e, 500, "internal", "%s", msg);
        return 0;
    }
    if (!strcmp(ty->valuestring, "json_schema")) {
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
        const cJSON *sc =
            cJSON_IsObject(js) ? cJSON_GetObjectItemCaseSensitive(js, "schema") : NULL;
        if (!sc)
            return reqparse_invalid(e, "response_format.json_schema.schema",
                                    "`response_format.json_schema.schema` is required");
        int strict = 0;
        if (reqparse_get_bool(js, "strict", &strict, e)) return -1;
        /* strict or not, the output follows the schema: the grammar is the only mode here */
        return grammar_schema(sc, "response_format.json_schema.schema", p, e);
    }
    return reqparse_invalid(e, "response_format",
                            "`response_format` type \"%.40s\" is not supported (\"text\", "
                            "\"json_object\" and \"json_schema\" are)",
                            ty->valuestring);
}

/* ---- TGI ---------------------------------------------------------------------------------- */

static int tgi_params(const cJSON *params, const struct reqparse_limits *lim,
                      struct reqparse_tgi *t, struct reqparse_error *e) {
    struct job_params *p = &t->p;
    if (params && !cJSON_IsNull(params) && !cJSON_IsObject(params))
        return reqparse_invalid(e, "parameters", "`parameters` must be an object");
    long long v = -1;
    if (get_int(params, "max_new_tokens", 1, 1 << 24, &v, e)) return -1;
    p->max_new = (int)v;
    double temp = 1.0, top_p = 1.0, rep = 1.0;
    long long top_k = 0, seed = -1, best_of = 1, truncate = 0;
    int do_sample = 0;
    if (get_num(params, "temperature", 0, 1e30, 1, &temp, e) ||
        get_num(params, "top_p", 0, 1, 1, &top_p, e) || get_rep_penalty(params, &rep, e) ||
        get_int(params, "top_k", 1, 1 << 30, &top_k, e) ||
        get_int(params, "seed", 0, (1ll << 53), &seed, e) ||
        get_int(params, "best_of", 1, 1 << 20, &best_of, e) ||
        get_int(params, "truncate", 1, 1 << 24, &truncate, e) ||
        reqparse_get_bool(params, "do_sample", &do_sample, e) ||
        reqparse_get_bool(params, "details", &t->details, e) ||
        reqparse_get_bool(params, "decoder_input_details", &t->input_details, e) ||
        reqparse_get_bool(params, "return_full_text", &t->full_text, e) ||
        reqparse_get_bool(params, "ignore_eos", &p->ignore_eos, e) || /* extension */
        get_stop(params, "stop", 0, lim->max_stop_sequences, p, e))
        return -1;
    /* TGI's rules and wording: best_of samples, each sequence its own seed, no stream */
    if (best_of > REQPARSE_MAX_BEST_OF)
        return reqparse_invalid(e, "best_of", "`best_of` must be > 0 and <= %d. Given: %lld",
                                REQPARSE_MAX_BEST_OF, best_of);
    int sampling = do_sample || temp != 1.0 || top_k > 0 || top_p < 1.0;
    if (best_of > 1 && !sampling)
        return reqparse_invalid(e, "best_of", "you must use sampling when `best_of` is > 1");
    if (best_of > 1 && seed >= 0)
        return reqparse_invalid(e, "seed", "`seed` must not be set when `best_of` > 1");
    if (best_of > 1 && t->stream)
        return reqparse_invalid(e, "best_of",
                                "`best_of` != 1 is not supported when streaming tokens");
    p->n_seqs = (int)best_of;
    p->n_return = 1;
    long long top_n = 0;
    if (get_penalties(params, 0, &p->sp, e) ||
        get_int(params, "top_n_tokens", 0, REQPARSE_MAX_TOP_N, &top_n, e))
        return -1;
    p->top_k = (int)top_n;
    if (reject_unsupported(params, "typical_p", 1.0, e) ||
        reject_unsupported(params, "watermark", 0, e) ||
        reject_unsupported(params, "adapter_id", NAN, e))
        return -1;
    if (get_grammar_tgi(params, p, e)) return -1;
    if (t->stream && t->input_details)
        return reqparse_invalid(
            e, "decoder_input_details",
            "`decoder_input_details` == true is not supported when streaming tokens");
    /* TGI: any warper (temperature != 1, top_k, top_p < 1) means sampling */
    p->sp.do_sample = do_sample || temp != 1.0 || top_k > 0 || top_p < 1.0;
    set_temperature(&p->sp, temp);
    p->sp.top_k = (int)top_k;
    p->sp.top_p = (float)top_p;
    p->sp.repetition_penalty = (float)rep;
    if (seed >= 0) {
        p->sp.seed = (uint64_t)seed;
        p->seed_given = 1;
    }
    p->truncate = (int)truncate;
    p->prompt_logprobs = t->input_details && t->details;
    return 0;
}

int reqparse_tgi(const char *body, size_t len, enum reqparse_tgi_route route,
                 const struct reqparse_limits *lim, struct reqparse_tgi *out,
                 struct reqparse_error *err) {
    memset(out, 0, sizeof *out);
    job_params_init(&out->p);
    out->stream = route == REQPARSE_TGI_STREAM;
    cJSON *b = reqparse_body(body, len, err);
    if (!b) return -1;
    int rc = -1;
    if (route == REQPARSE_TGI_COMPAT && reqparse_get_bool(b, "stream", &out->stream, err)) goto out;
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(b, "inputs");
    if (!cJSON_IsString(in)) {
        reqparse_invalid(err, "inputs", "`inputs` must be a string");
        goto out;
    }
    if (check_text(in->valuestring, "inputs", "inputs", 0, err)) goto out;
    if (tgi_params(cJSON_GetObjectItemCaseSensitive(b, "parameters"), lim, out, err)) goto out;
    out->inputs = strdup(in->valuestring);
    rc = out->inputs ? 0 : oom(err);
out:
    cJSON_Delete(b);
    return rc;
}

void reqparse_tgi_free(struct reqparse_tgi *t) {
    job_params_free(&t->p);
    free(t->inputs);
    t->inputs = NULL;
}

/* ---- OpenAI ------------------------------------------------------------------------------- */

/* The no-op values clients send by default pass; real uses of what this server does not do
 * (tools, logit bias) are refused by name. */
static int oai_unsupported(const cJSON *b, int chat, struct reqparse_error *e) {
    if (reject_unsupported(b, "suffix", NAN, e) ||
        /* chat: tools, tool_choice and parallel_tool_calls are read by tools_parse */
        (!chat && empty_array_only(b, "tools", "tool calling is a chat feature", e)) ||
        empty_array_only(b, "functions",
                         "the legacy `functions` are not implemented: use "
                         "`tools`",
                         e) ||
        (!chat && choice_none_only(b, "tool_choice", e)) || choice_none_only(b, "function_call", e))
        return -1;
    int flag;
    if (reqparse_get_bool(b, "parallel_tool_calls", &flag, e)) return -1;
    const cJSON *u = get(b, "user");
    if (u && !cJSON_IsString(u)) return reqparse_invalid(e, "user", "`user` must be a string");
    return 0;
}

/* Sampling fields shared by both routes. */
static int oai_common(const cJSON *b, const struct reqparse_limits *lim, struct reqparse_oai *o,
                      struct reqparse_error *e) {
    struct job_params *p = &o->p;
    long long max_tokens = -1, n = 1, seed = -1, top_k = 0;
    double temp = 1.0, top_p = 1.0, rep = 1.0;
    if (o->chat) {
        p->max_new_to_context = 1;
    } else {
        max_tokens = 16; /* OpenAI's legacy completions default */
    }
    if (get_int(b, "max_tokens", 1, 1 << 24, &max_tokens, e) ||
        (o->chat && get_int(b, "max_completion_tokens", 1, 1 << 24, &max_tokens, e)) ||
        get_int(b, "n", 1, 1 << 20, &n, e) ||
        get_int(b, "seed", -(1ll << 53), 1ll << 53, &seed, e) ||
        get_int(b, "top_k", -1, 1 << 30, &top_k, e) ||
        get_num(b, "temperature", 0, 2, 0, &temp, e) || get_num(b, "top_p", 0, 1, 1, &top_p, e) ||
        get_rep_penalty(b, &rep, e) || reqparse_get_bool(b, "stream", &o->stream, e) ||
        reqparse_get_bool(b, "ignore_eos", &p->ignore_eos, e) ||
        reqparse_get_bool(b, "return_tokens_as_token_ids", &o->token_ids, e) || /* vLLM */
        get_stop(b, "stop", 1, lim->max_stop_sequences, p, e))
        return -1;
    long long best_of = n;
    if (o->chat ? reject_unsupported(b, "best_of", 1, e) /* the chat API has none */
                : get_int(b, "best_of", 1, REQPARSE_MAX_SEQS, &best_of, e))
        return -1;
    if (n > REQPARSE_MAX_SEQS)
        return reqparse_invalid(e, "n", "`n` must be <= %d (given %lld)", REQPARSE_MAX_SEQS, n);
    if (get(b, "best_of") && !cJSON_IsNull(get(b, "best_of")) && best_of < n)
        return reqparse_invalid(e, "best_of", "`best_of` must be >= `n` (given %lld < %lld)",
                                best_of, n);
    if (best_of > n && o->stream)
        return reqparse_invalid(e, "best_of", "`best_of` > `n` cannot be streamed");
    if (best_of < n) best_of = n;
    p->n_seqs = (int)best_of;
    p->n_return = (int)n;
    if (oai_unsupported(b, o->chat, e) || get_response_format(b, p, e) ||
        get_logit_bias(b, &p->sp, e) || get_penalties(b, 1, &p->sp, e))
        return -1;
    const cJSON *so = get(b, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so))
            return reqparse_invalid(e, "stream_options", "`stream_options` must be an object");
        if (reqparse_get_bool(so, "include_usage", &o->include_usage, e)) return -1;
    }
    p->max_new = (int)max_tokens;
    p->sp.do_sample = temp > 0;
    set_temperature(&p->sp, temp);
    p->sp.top_p = (float)top_p;
    p->sp.top_k = top_k > 0 ? (int)top_k : 0;
    p->sp.repetition_penalty = (float)rep;
    if (seed != -1) {
        p->sp.seed = (uint64_t)seed;
        p->seed_given = 1;
    }
    return 0;
}

static int oai_begin(const char *body, size_t len, int chat, struct reqparse_oai *o,
                     struct reqparse_error *err, cJSON **b) {
    memset(o, 0, sizeof *o);
    job_params_init(&o->p);
    o->chat = chat;
    *b = reqparse_body(body, len, err);
    return *b ? 0 : -1;
}

/* Token ids of one prompt: a non-empty array of integers in [0, INT_MAX]. *OUT malloc'd. */
static int prompt_ids(const cJSON *pr, int k, int **out, int *n_out, struct reqparse_error *e) {
    char what[32] = "`prompt`";
    if (k >= 0) snprintf(what, sizeof what, "`prompt[%d]`", k);
    int n = cJSON_GetArraySize(pr);
    if (n == 0) return reqparse_invalid(e, "prompt", "%s cannot be empty", what);
    *out = malloc(sizeof(int) * (size_t)n);
    if (!*out) return oom(e);
    *n_out = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, pr) {
        /* range-checked as a double before the cast: (int) of a value outside int is undefined */
        if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
            it->valuedouble < 0 || it->valuedouble > (double)INT_MAX)
            return reqparse_invalid(e, "prompt",
                                    "%s token ids must be integers in [0, %d] (item %d)", what,
                                    INT_MAX, *n_out);
        (*out)[(*n_out)++] = (int)it->valuedouble;
    }
    return 0;
}

/* A list of prompts (OpenAI: strings, or arrays of token ids; each its own choices). */
static int completions_prompt_list(const cJSON *pr, struct reqparse_oai *o,
                                   struct reqparse_error *e) {
    int n = cJSON_GetArraySize(pr), texts = cJSON_IsString(cJSON_GetArrayItem(pr, 0));
    if (n > REQPARSE_MAX_SEQS)
        return reqparse_invalid(e, "prompt", "`prompt` lists at most %d prompts (given %d)",
                                REQPARSE_MAX_SEQS, n);
    if (texts ? !(o->prompts = calloc((size_t)n, sizeof *o->prompts))
              : !(o->id_lists = calloc((size_t)n, sizeof *o->id_lists)) ||
                    !(o->id_lens = calloc((size_t)n, sizeof *o->id_lens)))
        return oom(e);
    o->n_prompts = n; /* entries filled so far or NULL: reqparse_oai_free frees either */
    const cJSON *it;
    int k = 0;
    cJSON_ArrayForEach(it, pr) {
        if (texts && cJSON_IsString(it)) {
            char what[32];
            snprintf(what, sizeof what, "prompt[%d]", k);
            if (check_text(it->valuestring, "prompt", what, 0, e)) return -1;
            if (!(o->prompts[k] = strdup(it->valuestring))) return oom(e);
        } else if (!texts && cJSON_IsArray(it)) {
            if (prompt_ids(it, k, &o->id_lists[k], &o->id_lens[k], e)) return -1;
        } else {
            return reqparse_invalid(e, "prompt",
                                    "`prompt` lists must be all strings or all token-id arrays "
                                    "(item %d differs)",
                                    k);
        }
        k++;
    }
    return 0;
}

/* "prompt": a string, an array of token ids, or a list of either (each prompt its own
 * choices). A one-element list is the prompt itself. */
static int completions_prompt(const cJSON *pr, struct reqparse_oai *o, struct reqparse_error *e) {
    o->n_prompts = 1;
    if (cJSON_IsArray(pr) && cJSON_GetArraySize(pr) == 1 &&
        (cJSON_IsString(cJSON_GetArrayItem(pr, 0)) || cJSON_IsArray(cJSON_GetArrayItem(pr, 0))))
        pr = cJSON_GetArrayItem(pr, 0);
    else if (cJSON_IsArray(pr) && cJSON_GetArraySize(pr) > 1 &&
             (cJSON_IsString(cJSON_GetArrayItem(pr, 0)) ||
              cJSON_IsArray(cJSON_GetArrayItem(pr, 0))))
        return completions_prompt_list(pr, o, e);
    if (cJSON_IsString(pr)) {
        if (check_text(pr->valuestring, "prompt", "prompt", 0, e)) return -1;
        o->prompt = strdup(pr->valuestring);
        return o->prompt ? 0 : oom(e);
    }
    if (!cJSON_IsArray(pr) || cJSON_GetArraySize(pr) == 0 ||
        !cJSON_IsNumber(cJSON_GetArrayItem(pr, 0)))
        return reqparse_invalid(e, "prompt",
                                "`prompt` must be a string, token ids, or a list of either");
    return prompt_ids(pr, -1, &o->ids, &o->n_ids, e);
}

int reqparse_completions(const char *body, size_t len, const struct reqparse_limits *lim,
                         struct reqparse_oai *out, struct reqparse_error *err) {
    cJSON *b;
    if (oai_begin(body, len, 0, out, err, &b)) return -1;
    int rc = -1;
    long long lp = -1;
    if (oai_common(b, lim, out, err) ||
        get_int(b, "logprobs", 0, REQPARSE_MAX_LOGPROBS, &lp, err) ||
        reqparse_get_bool(b, "echo", &out->echo, err))
        goto out;
    out->logprobs = lp >= 0;
    out->p.top_k = lp > 0 ? (int)lp : 0;
    out->p.prompt_logprobs = out->echo && out->logprobs; /* echo scores the prompt tokens */
    if (completions_prompt(cJSON_GetObjectItemCaseSensitive(b, "prompt"), out, err)) goto out;
    if (out->echo && out->stream) {
        reqparse_invalid(err, "echo", "`echo` is not supported when streaming");
        goto out;
    }
    if (out->n_prompts * out->p.n_seqs > REQPARSE_MAX_SEQS) {
        reqparse_invalid(err, "n", "%d prompts × %d sequences each is more than %d", out->n_prompts,
                         out->p.n_seqs, REQPARSE_MAX_SEQS);
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(b);
    return rc;
}

/* Text of a message's content: a string, or an array of {"type":"text","text":...} parts,
 * joined. Returns a malloc'd string, or NULL with ERR. */
static char *content_text(const cJSON *content, int k, struct reqparse_error *e) {
    char what[48];
    snprintf(what, sizeof what, "messages[%d].content", k);
    if (cJSON_IsString(content)) {
        if (check_text(content->valuestring, "messages", what, 1, e)) return NULL;
        char *s = strdup(content->valuestring);
        if (!s) oom(e);
        return s;
    }
    if (!cJSON_IsArray(content)) goto bad;
    size_t total = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(part, "type");
        if (!cJSON_IsString(t) || (ty && (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text"))))
            goto bad;
        if (check_text(t->valuestring, "messages", what, 1, e)) return NULL;
        total += strlen(t->valuestring);
    }
    char *s = malloc(total + 1);
    if (!s) {
        oom(e);
        return NULL;
    }
    size_t o = 0;
    cJSON_ArrayForEach(part, content) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        size_t l = strlen(t);
        memcpy(s + o, t, l);
        o += l;
    }
    s[o] = 0;
    return s;
bad:
    reqparse_invalid(e, "messages", "`%s` must be a string or an array of text parts", what);
    return NULL;
}

static int chat_messages(const cJSON *m, struct reqparse_oai *o, struct reqparse_error *e) {
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) == 0)
        return reqparse_invalid(e, "messages", "`messages` must be a non-empty array");
    int nm = cJSON_GetArraySize(m);
    o->msgs = calloc((size_t)nm, sizeof *o->msgs);
    if (!o->msgs) return oom(e);
    static const char *const roles[] = {"system", "user", "assistant", "tool"};
    const cJSON *it;
    cJSON_ArrayForEach(it, m) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
        const char *r = NULL;
        if (cJSON_IsString(role)) {
            for (int i = 0; i < 4; i++)
                if (!strcmp(role->valuestring, roles[i])) r = roles[i];
            if (!strcmp(role->valuestring, "developer")) r = "system"; /* OpenAI's new name */
        }
        if (!r)
            return reqparse_invalid(
                e, "messages",
                "`messages[%d].role` must be system, developer, user, assistant or tool",
                o->n_msgs);
        struct chat_msg *cm = &o->msgs[o->n_msgs++];
        cm->role = r;
        if (tools_parse_message(it, o->n_msgs - 1, cm, e)) return -1;
        const cJSON *content = get(it, "content");
        if (!content && cm->tool_calls) continue; /* an assistant's calls without text: None */
        if (!(cm->content = content_text(content, o->n_msgs - 1, e))) return -1;
    }
    return 0;
}

int reqparse_chat(const char *body, size_t len, const struct reqparse_limits *lim,
                  struct reqparse_oai *out, struct reqparse_error *err) {
    cJSON *b;
    if (oai_begin(body, len, 1, out, err, &b)) return -1;
    int rc = -1;
    long long tl = 0;
    if (oai_common(b, lim, out, err) || reqparse_get_bool(b, "logprobs", &out->logprobs, err) ||
        get_int(b, "top_logprobs", 0, 20, &tl, err))
        goto out;
    out->top_logprobs = (int)tl;
    if (tl > 0 && !out->logprobs) {
        reqparse_invalid(err, "top_logprobs", "`top_logprobs` needs `logprobs` true");
        goto out;
    }
    out->p.top_k = out->logprobs ? (int)tl : 0;
    if (!(out->tools = malloc(sizeof *out->tools))) {
        oom(err);
        goto out;
    }
    if (tools_parse(b, out->tools, &out->p, err) ||
        chat_messages(cJSON_GetObjectItemCaseSensitive(b, "messages"), out, err))
        goto out;
    rc = 0;
out:
    cJSON_Delete(b);
    return rc;
}

void reqparse_oai_free(struct reqparse_oai *o) {
    job_params_free(&o->p);
    free(o->prompt);
    free(o->ids);
    for (int i = 0; i < o->n_msgs; i++)
        chat_msg_free_strings(&o->msgs[i]);
    free(o->msgs);
    tools_req_free(o->tools);
    free(o->tools);
    o->tools = NULL;
    for (int i = 0; i < o->n_prompts; i++) {
        if (o->prompts) free(o->prompts[i]);
        if (o->id_lists) free(o->id_lists[i]);
    }
    free(o->prompts);
    free(o->id_lists);
    free(o->id_lens);
    o->prompt = NULL;
    o->ids = NULL;
    o->msgs = NULL;
    o->prompts = NULL;
    o->id_lists = NULL;
    o->id_lens = NULL;
    o->n_ids = o->n_msgs = o->n_prompts = 0;
}
