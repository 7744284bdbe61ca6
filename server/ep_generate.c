/* ep_generate.c — POST /generate, POST /generate_stream and POST / (TGI's compat route with a
 * "stream" flag, which huggingface_hub's InferenceClient uses when given a URL).
 *
 * Request and response follow text-generation-inference (serving-apis.md §b): inputs +
 * parameters → generated_text + details {finish_reason, generated_tokens, seed, prefill, tokens}.
 * Streams are server-sent events "data:{json}\n\n", one per token, the last one carrying
 * generated_text (and details when asked); no [DONE]. A stream that fails after it started ends
 * with data:{"error","error_type"}. Validation errors come before the stream starts, as a
 * real HTTP status. Loop thread only.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"
#include "server/job.h"

/* The route's state (owned by the job driver once the job runs). */
struct gen_ctx {
    struct server *sv;
    int stream, details, input_details, full_text, wrap_array;
    char *prompt; /* for return_full_text */
};

static cJSON *token_json(const struct server *sv, const struct wreq *j, int k) {
    size_t len;
    const char *t = job_token_text(j, k, &len);
    int id = j->tokens[j->n_prompt + k];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", id);
    char *s = strndup(t, len);
    cJSON_AddStringToObject(o, "text", s ? s : "");
    free(s);
    cJSON_AddNumberToObject(o, "logprob", isfinite(j->logprobs[k]) ? j->logprobs[k] : -9999.0);
    cJSON_AddBoolToObject(o, "special", tokenizer_is_special(sv->worker.info.tok, id));
    return o;
}

/* Seeds are up to 53 bits; cJSON prints numbers with 15 significant digits, which would round
 * them, so the seed goes out as a raw decimal integer. */
static cJSON *seed_json(const struct wreq *j) {
    if (!j->sp.do_sample) return cJSON_CreateNull();
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)j->sp.seed);
    return cJSON_CreateRaw(buf);
}

/* The "details" object both reply forms share: finish reason, token count, seed. */
static cJSON *details_json(cJSON *o, const struct wreq *j) {
    cJSON *d = cJSON_AddObjectToObject(o, "details");
    cJSON_AddStringToObject(d, "finish_reason", wreq_finish_name(j->finish));
    cJSON_AddNumberToObject(d, "generated_tokens", j->n_gen);
    cJSON_AddItemToObject(d, "seed", seed_json(j));
    return d;
}

static char *full_text(const struct gen_ctx *c, const struct wreq *j) {
    size_t pl = c->full_text && c->prompt ? strlen(c->prompt) : 0;
    char *s = malloc(pl + j->text_len + 1);
    if (!s) return NULL;
    if (pl) memcpy(s, c->prompt, pl);
    memcpy(s + pl, j->text, j->text_len + 1);
    return s;
}

/* Streamed tokens [from, n_gen): one event each; the last one of a successful job carries
 * generated_text (and details when asked). */
static void stream_tokens(void *ctx, struct http_req *r, const struct wreq *j, int from) {
    struct gen_ctx *c = ctx;
    int done = j->finish != WREQ_FIN_NONE;
    for (int k = from; k < j->n_gen; k++) {
        int last = done && k == j->n_gen - 1 && !job_failed_finish(j->finish);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", k + 1);
        cJSON_AddItemToObject(o, "token", token_json(c->sv, j, k));
        cJSON_AddNullToObject(o, "top_tokens");
        if (last) {
            char *t = full_text(c, j);
            cJSON_AddStringToObject(o, "generated_text", t ? t : "");
            free(t);
            if (c->details) {
                cJSON *d = details_json(o, j);
                cJSON_AddNumberToObject(d, "input_length", j->n_prompt);
            } else {
                cJSON_AddNullToObject(o, "details");
            }
        } else {
            cJSON_AddNullToObject(o, "generated_text");
            cJSON_AddNullToObject(o, "details");
        }
        job_sse(r, "data:", o);
    }
}

/* The last token event already carried the result. */
static void stream_finish(void *ctx, struct http_req *r, const struct wreq *j) {
    (void)ctx, (void)r, (void)j;
}

/* A stream that fails after it started ends with data:{"error","error_type"}. */
static void stream_error(void *ctx, struct http_req *r, const struct wreq *j) {
    (void)ctx;
    job_sse_error(r, j);
}

/* The whole reply: generated_text and details {prefill, tokens, ...}. */
static void full_finish(void *ctx, struct http_req *r, const struct wreq *j) {
    struct gen_ctx *c = ctx;
    cJSON *o = cJSON_CreateObject();
    char *t = full_text(c, j);
    cJSON_AddStringToObject(o, "generated_text", t ? t : "");
    free(t);
    if (c->details) {
        cJSON *d = details_json(o, j);
        cJSON *pre = cJSON_AddArrayToObject(d, "prefill");
        if (c->input_details) {
            const struct tokenizer *tok = c->sv->worker.info.tok;
            for (int i = 0; i < j->n_prompt; i++) {
                cJSON *p = cJSON_CreateObject();
                cJSON_AddNumberToObject(p, "id", j->tokens[i]);
                char buf[512];
                int n = tokenizer_token_bytes(tok, j->tokens[i], buf, sizeof buf - 1);
                buf[n > 0 ? n : 0] = 0;
                cJSON_AddStringToObject(p, "text", buf);
                if (i == 0 || !j->prompt_lp || i >= j->n_prompt_lp || !isfinite(j->prompt_lp[i]))
                    cJSON_AddNullToObject(p, "logprob");
                else
                    cJSON_AddNumberToObject(p, "logprob", j->prompt_lp[i]);
                cJSON_AddItemToArray(pre, p);
            }
        }
        cJSON *toks = cJSON_AddArrayToObject(d, "tokens");
        for (int k = 0; k < j->n_gen; k++)
            cJSON_AddItemToArray(toks, token_json(c->sv, j, k));
        cJSON_AddNullToObject(d, "best_of_sequences");
    }
    if (c->wrap_array) {
        cJSON *a = cJSON_CreateArray();
        cJSON_AddItemToArray(a, o);
        o = a;
    }
    http_reply_json(r, 200, o);
}

static void gen_ctx_free(void *ctx) {
    struct gen_ctx *c = ctx;
    if (!c) return;
    free(c->prompt);
    free(c);
}

static const struct job_render GEN_STREAM = {.stream = 1,
                                             .on_tokens = stream_tokens,
                                             .on_finish = stream_finish,
                                             .on_error = stream_error,
                                             .free = gen_ctx_free};
static const struct job_render GEN_FULL = {
    .stream = 0, .on_finish = full_finish, .free = gen_ctx_free};

/* Parse TGI parameters into P and the flags of C. Returns 0 or -1 (reply sent). */
static int parse_params(struct server *sv, struct http_req *r, const cJSON *params,
                        struct gen_ctx *c, struct job_params *p) {
    if (params && !cJSON_IsNull(params) && !cJSON_IsObject(params))
        return job_invalid(sv, r, "parameters", "`parameters` must be an object");
    long long v = -1;
    if (job_get_int(sv, r, params, "max_new_tokens", 1, 1 << 24, &v)) return -1;
    p->max_new = (int)v;
    double temp = 1.0, top_p = 1.0, rep = 1.0;
    long long top_k = 0, seed = -1, best_of = 1, truncate = 0;
    int do_sample = 0;
    if (job_get_num(sv, r, params, "temperature", 0, 1e30, 1, &temp) ||
        job_get_num(sv, r, params, "top_p", 0, 1, 1, &top_p) ||
        job_get_num(sv, r, params, "repetition_penalty", 0, 1e30, 1, &rep) ||
        job_get_int(sv, r, params, "top_k", 1, 1 << 30, &top_k) ||
        job_get_int(sv, r, params, "seed", 0, (1ll << 53), &seed) ||
        job_get_int(sv, r, params, "best_of", 1, 1 << 20, &best_of) ||
        job_get_int(sv, r, params, "truncate", 1, 1 << 24, &truncate) ||
        job_get_bool(sv, r, params, "do_sample", &do_sample) ||
        job_get_bool(sv, r, params, "details", &c->details) ||
        job_get_bool(sv, r, params, "decoder_input_details", &c->input_details) ||
        job_get_bool(sv, r, params, "return_full_text", &c->full_text) ||
        job_get_bool(sv, r, params, "ignore_eos", &p->ignore_eos) || /* extension */
        job_get_stop(sv, r, params, "stop", 0, p))
        return -1;
    if (best_of > 1)
        return job_invalid(sv, r, "best_of", "`best_of` > 1 is not supported (given %lld)",
                           best_of);
    if (job_reject_unsupported(sv, r, params, "typical_p", 1.0) ||
        job_reject_unsupported(sv, r, params, "frequency_penalty", 0) ||
        job_reject_unsupported(sv, r, params, "top_n_tokens", 0) ||
        job_reject_unsupported(sv, r, params, "watermark", 0) ||
        job_reject_unsupported(sv, r, params, "grammar", NAN) ||
        job_reject_unsupported(sv, r, params, "adapter_id", NAN))
        return -1;
    if (c->stream && c->input_details)
        return job_invalid(
            sv, r, "decoder_input_details",
            "`decoder_input_details` == true is not supported when streaming tokens");
    /* TGI: any warper (temperature != 1, top_k, top_p < 1) means sampling */
    p->sp.do_sample = do_sample || temp != 1.0 || top_k > 0 || top_p < 1.0;
    p->sp.temperature = (float)temp;
    p->sp.top_k = (int)top_k;
    p->sp.top_p = (float)top_p;
    p->sp.repetition_penalty = (float)rep;
    if (seed >= 0) {
        p->sp.seed = (uint64_t)seed;
        p->seed_given = 1;
    }
    p->truncate = (int)truncate;
    p->prompt_logprobs = c->input_details && c->details;
    return 0;
}

static void handle(struct http_req *r, int stream, int compat) {
    struct server *sv = http_req_app(r);
    if (job_admit(sv, r)) return;
    cJSON *body = job_parse_body(sv, r);
    if (!body) return;
    struct job_params p;
    job_params_init(&p);
    struct gen_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        http_reply_error(r, 500, "internal", NULL, "out of memory");
        goto out;
    }
    c->sv = sv;
    if (compat) {
        if (job_get_bool(sv, r, body, "stream", &stream)) goto out;
        c->wrap_array = !stream;
    }
    c->stream = stream;
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(body, "inputs");
    if (!cJSON_IsString(in)) {
        job_invalid(sv, r, "inputs", "`inputs` must be a string");
        goto out;
    }
    if (!*in->valuestring) {
        job_invalid(sv, r, "inputs", "`inputs` cannot be empty");
        goto out;
    }
    if (parse_params(sv, r, cJSON_GetObjectItemCaseSensitive(body, "parameters"), c, &p)) goto out;
    struct wreq *j = job_build(sv, r, in->valuestring, 1, 1, &p, "inputs");
    if (!j) goto out;
    if (c->full_text) c->prompt = strdup(in->valuestring);
    if (job_run(sv, r, j, stream ? &GEN_STREAM : &GEN_FULL, c) == 0) c = NULL;
out:
    job_params_free(&p);
    gen_ctx_free(c);
    cJSON_Delete(body);
}

void ep_generate(struct http_req *r) {
    handle(r, 0, 0);
}

void ep_generate_stream(struct http_req *r) {
    handle(r, 1, 0);
}

void ep_generate_compat(struct http_req *r) {
    handle(r, 0, 1);
}
