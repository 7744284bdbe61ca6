/* ep_generate.c — POST /generate, POST /generate_stream and POST / (TGI's compat route with a
 * "stream" flag, which huggingface_hub's InferenceClient uses when given a URL).
 *
 * Request and response follow text-generation-inference (serving-apis.md §b): inputs +
 * parameters → generated_text + details {finish_reason, generated_tokens, seed, prefill, tokens}.
 * Streams are server-sent events "data:{json}\n\n", one per token, the last one carrying
 * generated_text (and details when asked); no [DONE]. A stream that fails after it started ends
 * with data:{"error","error_type"}. Validation errors come before the stream starts, as a
 * real HTTP status. Loop thread only; the prompt is tokenized on a work thread (job_start_text).
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
    job_add_text(o, "text", t, len);
    cJSON_AddNumberToObject(o, "logprob", isfinite(j->logprobs[k]) ? j->logprobs[k] : -9999.0);
    cJSON_AddBoolToObject(o, "special", tokenizer_is_special(sv->worker.info.tok, id));
    return o;
}

/* TGI top_tokens of generated token k: [{id, text, logprob, special}] by logprob. */
static cJSON *top_tokens_json(const struct server *sv, const struct wreq *j, int k) {
    if (!j->top) return cJSON_CreateNull();
    const struct tokenizer *tok = sv->worker.info.tok;
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < j->top_k; i++) {
        const struct walt *a = &j->top[(size_t)k * (size_t)j->top_k + (size_t)i];
        if (a->id < 0) break;
        char buf[512];
        int n = tokenizer_token_bytes(tok, a->id, buf, sizeof buf - 1);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", a->id);
        job_add_text(o, "text", buf, n > 0 ? (size_t)n : 0);
        cJSON_AddNumberToObject(o, "logprob", a->logprob);
        cJSON_AddBoolToObject(o, "special", tokenizer_is_special(tok, a->id));
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
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
        cJSON_AddItemToObject(o, "top_tokens", top_tokens_json(c->sv, j, k));
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
static void stream_finish(void *ctx, struct http_req *r, struct wreq *const *js, int n) {
    (void)ctx, (void)r, (void)js, (void)n;
}

/* A stream that fails after it started ends with data:{"error","error_type"}. */
static void stream_error(void *ctx, struct http_req *r, const struct wreq *j) {
    (void)ctx;
    job_sse_error(r, j);
}

/* The prefill entries of details: the prompt tokens, with their logprobs when computed. */
static void prefill_json(const struct gen_ctx *c, cJSON *d, const struct wreq *j) {
    cJSON *pre = cJSON_AddArrayToObject(d, "prefill");
    if (!c->input_details) return;
    const struct tokenizer *tok = c->sv->worker.info.tok;
    for (int i = 0; i < j->n_prompt; i++) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddNumberToObject(p, "id", j->tokens[i]);
        char buf[512];
        int n = tokenizer_token_bytes(tok, j->tokens[i], buf, sizeof buf - 1);
        job_add_text(p, "text", buf, n > 0 ? (size_t)n : 0);
        if (i == 0 || !j->prompt_lp || i >= j->n_prompt_lp || !isfinite(j->prompt_lp[i]))
            cJSON_AddNullToObject(p, "logprob");
        else
            cJSON_AddNumberToObject(p, "logprob", j->prompt_lp[i]);
        cJSON_AddItemToArray(pre, p);
    }
}

static void tokens_json(const struct gen_ctx *c, cJSON *d, const struct wreq *j) {
    cJSON *toks = cJSON_AddArrayToObject(d, "tokens");
    for (int k = 0; k < j->n_gen; k++)
        cJSON_AddItemToArray(toks, token_json(c->sv, j, k));
    if (!j->top) return;
    cJSON *tops = cJSON_AddArrayToObject(d, "top_tokens");
    for (int k = 0; k < j->n_gen; k++)
        cJSON_AddItemToArray(tops, top_tokens_json(c->sv, j, k));
}

/* Sum of the log-probabilities of J's generated tokens (best_of ranks by it, as TGI does). */
static double cum_logprob(const struct wreq *j) {
    double s = 0;
    for (int k = 0; k < j->n_gen; k++)
        s += isfinite(j->logprobs[k]) ? j->logprobs[k] : -1e30;
    return s;
}

/* The whole reply: generated_text and details {prefill, tokens, ...}. With best_of, JS are the
 * candidates: the one with the highest cumulative logprob is the reply, the others go to
 * details.best_of_sequences. */
static void full_finish(void *ctx, struct http_req *r, struct wreq *const *js, int n) {
    struct gen_ctx *c = ctx;
    int best = 0;
    for (int i = 1; i < n; i++)
        if (cum_logprob(js[i]) > cum_logprob(js[best])) best = i;
    const struct wreq *j = js[best];
    cJSON *o = cJSON_CreateObject();
    char *t = full_text(c, j);
    cJSON_AddStringToObject(o, "generated_text", t ? t : "");
    free(t);
    if (c->details) {
        cJSON *d = details_json(o, j);
        prefill_json(c, d, j);
        tokens_json(c, d, j);
        if (n > 1) {
            cJSON *bos = cJSON_AddArrayToObject(d, "best_of_sequences");
            for (int i = 0; i < n; i++) {
                if (i == best) continue;
                cJSON *b = cJSON_CreateObject();
                char *bt = full_text(c, js[i]);
                cJSON_AddStringToObject(b, "generated_text", bt ? bt : "");
                free(bt);
                cJSON_AddStringToObject(b, "finish_reason", wreq_finish_name(js[i]->finish));
                cJSON_AddNumberToObject(b, "generated_tokens", js[i]->n_gen);
                cJSON_AddItemToObject(b, "seed", seed_json(js[i]));
                prefill_json(c, b, js[i]);
                tokens_json(c, b, js[i]);
                cJSON_AddItemToArray(bos, b);
            }
        } else {
            cJSON_AddNullToObject(d, "best_of_sequences");
        }
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

static void handle(struct http_req *r, enum reqparse_tgi_route route) {
    struct server *sv = http_req_app(r);
    if (job_admit(sv, r)) return;
    size_t len;
    const char *body = http_req_body(r, &len);
    struct reqparse_limits lim = {.max_stop_sequences = sv->cfg.max_stop_sequences};
    struct reqparse_tgi q;
    struct reqparse_error err;
    struct gen_ctx *c = NULL;
    if (reqparse_tgi(body, len, route, &lim, &q, &err)) {
        job_reply_invalid(sv, r, &err);
        goto out;
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        http_reply_error(r, 500, "internal", NULL, "out of memory");
        goto out;
    }
    c->sv = sv;
    c->stream = q.stream;
    c->wrap_array = route == REQPARSE_TGI_COMPAT && !q.stream;
    c->details = q.details;
    c->input_details = q.input_details;
    c->full_text = q.full_text;
    char *text = q.inputs;
    q.inputs = NULL;
    if (c->full_text && !(c->prompt = strdup(text))) { /* valid UTF-8 (reqparse): safe to echo */
        free(text);
        http_reply_error(r, 500, "internal", NULL, "out of memory");
        goto out;
    }
    /* tokenized off the loop thread; the job then runs through the driver */
    if (job_start_text(sv, r, text, 1, 1, &q.p, "inputs", c->stream ? &GEN_STREAM : &GEN_FULL, c) ==
        0)
        c = NULL;
out:
    reqparse_tgi_free(&q);
    gen_ctx_free(c);
}

void ep_generate(struct http_req *r) {
    handle(r, REQPARSE_TGI_GENERATE);
}

void ep_generate_stream(struct http_req *r) {
    handle(r, REQPARSE_TGI_STREAM);
}

void ep_generate_compat(struct http_req *r) {
    handle(r, REQPARSE_TGI_COMPAT);
}
