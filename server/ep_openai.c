/* ep_openai.c — the OpenAI routes: POST /v1/completions, POST /v1/chat/completions (with
 * "stream": chunks "data: {json}\n\n" and a closing "data: [DONE]"), GET /v1/models.
 *
 * Chat prompts are rendered with the model's chat template (ChatML or Llama-3, from the GGUF or
 * tokenizer_config.json) and tokenized with special tokens parsed. temperature 0 means greedy;
 * the default temperature is 1 (sampling), as in OpenAI. Stop sequences are cut from the
 * returned text (OpenAI semantics; TGI routes keep them). Loop thread only.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/tokenizer.h"
#include "server/job.h"

/* The route's state (owned by the job driver once the job runs). */
struct oai_ctx {
    struct server *sv;
    int chat, stream, include_usage, echo, logprobs, top_logprobs;
    char *prompt_text; /* echo */
    char id[48];
    long created;
    int sent;         /* tokens streamed */
    size_t sent_text; /* bytes of text streamed */
};

static const char *finish_reason(enum wreq_finish f) {
    return f == WREQ_FIN_LENGTH ? "length" : "stop";
}

/* Bytes of the job's text the client may see so far: stop sequences are cut. */
static size_t visible_len(const struct wreq *j) {
    return j->finish == WREQ_FIN_STOP ? j->stop_pos : j->text_len;
}

static cJSON *usage_json(const struct wreq *j) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", j->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", j->n_gen);
    cJSON_AddNumberToObject(u, "total_tokens", j->n_prompt + j->n_gen);
    return u;
}

static cJSON *chunk_base(const struct oai_ctx *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", c->id);
    cJSON_AddStringToObject(o, "object", c->chat ? "chat.completion.chunk" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)c->created);
    cJSON_AddStringToObject(o, "model", c->sv->model_id);
    return o;
}

static void add_str_n(cJSON *o, const char *name, const char *s, size_t n) {
    char *t = strndup(s, n);
    cJSON_AddStringToObject(o, name, t ? t : "");
    free(t);
}

/* Logprobs of tokens [from, to): chat {"content":[{token, logprob, bytes, top_logprobs}]},
 * completions {tokens, token_logprobs, top_logprobs, text_offset}. Only the chosen token is
 * reported in top_logprobs. */
static cJSON *logprobs_json(const struct oai_ctx *c, const struct wreq *j, int from, int to) {
    if (!c->logprobs) return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject();
    if (c->chat) {
        cJSON *arr = cJSON_AddArrayToObject(o, "content");
        for (int k = from; k < to; k++) {
            size_t len;
            const char *t = job_token_text(j, k, &len);
            cJSON *e = cJSON_CreateObject();
            add_str_n(e, "token", t, len);
            cJSON_AddNumberToObject(e, "logprob", j->logprobs[k]);
            cJSON *b = cJSON_AddArrayToObject(e, "bytes");
            for (size_t i = 0; i < len; i++)
                cJSON_AddItemToArray(b, cJSON_CreateNumber((unsigned char)t[i]));
            cJSON *top = cJSON_AddArrayToObject(e, "top_logprobs");
            if (c->top_logprobs > 0) {
                cJSON *te = cJSON_CreateObject();
                add_str_n(te, "token", t, len);
                cJSON_AddNumberToObject(te, "logprob", j->logprobs[k]);
                cJSON_AddItemToArray(top, te);
            }
            cJSON_AddItemToArray(arr, e);
        }
    } else {
        cJSON *toks = cJSON_AddArrayToObject(o, "tokens");
        cJSON *lps = cJSON_AddArrayToObject(o, "token_logprobs");
        cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");
        cJSON *offs = cJSON_AddArrayToObject(o, "text_offset");
        for (int k = from; k < to; k++) {
            size_t len;
            const char *t = job_token_text(j, k, &len);
            char *s = strndup(t, len);
            cJSON_AddItemToArray(toks, cJSON_CreateString(s ? s : ""));
            cJSON_AddItemToArray(lps, cJSON_CreateNumber(j->logprobs[k]));
            cJSON *top = cJSON_CreateObject();
            cJSON_AddNumberToObject(top, s ? s : "", j->logprobs[k]);
            cJSON_AddItemToArray(tops, top);
            cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(t - j->text)));
            free(s);
        }
    }
    return o;
}

/* One streamed chunk with text [from, to) of the visible text and tokens [k0, k1). */
static void stream_chunk(struct oai_ctx *c, struct http_req *r, const struct wreq *j, size_t from,
                         size_t to, int k0, int k1, const char *finish) {
    cJSON *o = chunk_base(c);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    if (c->chat) {
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        if (to > from || !finish) add_str_n(d, "content", j->text + from, to - from);
    } else {
        add_str_n(ch, "text", j->text + from, to - from);
    }
    cJSON_AddItemToObject(ch, "logprobs",
                          k1 > k0 ? logprobs_json(c, j, k0, k1) : cJSON_CreateNull());
    if (finish)
        cJSON_AddStringToObject(ch, "finish_reason", finish);
    else
        cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(choices, ch);
    job_sse(r, "data: ", o);
}

/* Streamed text since the last chunk, holding back a tail that might become a stop sequence
 * while the job runs. */
static void stream_tokens(void *ctx, struct http_req *r, const struct wreq *j, int from) {
    (void)from;
    struct oai_ctx *c = ctx;
    size_t vis = visible_len(j);
    if (j->finish == WREQ_FIN_NONE) {
        size_t hold = 0;
        for (int i = 0; i < j->n_stop; i++) {
            size_t l = strlen(j->stop[i]);
            if (l - 1 > hold) hold = l - 1;
        }
        vis = vis > hold ? vis - hold : 0;
    }
    if (vis > c->sent_text || (c->sent < j->n_gen && c->logprobs)) {
        if (vis < c->sent_text) vis = c->sent_text;
        stream_chunk(c, r, j, c->sent_text, vis, c->sent, j->n_gen, NULL);
        c->sent_text = vis;
        c->sent = j->n_gen;
    }
}

/* OpenAI opens a chat stream with the role. */
static void stream_start(void *ctx, struct http_req *r) {
    struct oai_ctx *c = ctx;
    if (!c->chat) return;
    cJSON *o = chunk_base(c);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    cJSON *d = cJSON_AddObjectToObject(ch, "delta");
    cJSON_AddStringToObject(d, "role", "assistant");
    cJSON_AddStringToObject(d, "content", "");
    cJSON_AddNullToObject(ch, "logprobs");
    cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(choices, ch);
    job_sse(r, "data: ", o);
}

/* The finish chunk, usage when asked, [DONE]. */
static void stream_finish(void *ctx, struct http_req *r, const struct wreq *j) {
    struct oai_ctx *c = ctx;
    stream_chunk(c, r, j, 0, 0, 0, 0, finish_reason(j->finish));
    if (c->include_usage) {
        cJSON *o = chunk_base(c);
        cJSON_AddArrayToObject(o, "choices");
        cJSON_AddItemToObject(o, "usage", usage_json(j));
        job_sse(r, "data: ", o);
    }
    http_stream_write(r, "data: [DONE]\n\n", 14);
}

/* A stream that fails after it started: the error event, then [DONE]. */
static void stream_error(void *ctx, struct http_req *r, const struct wreq *j) {
    (void)ctx;
    job_sse_error(r, j);
    http_stream_write(r, "data: [DONE]\n\n", 14);
}

/* The whole completion object. */
static void full_finish(void *ctx, struct http_req *r, const struct wreq *j) {
    struct oai_ctx *c = ctx;
    cJSON *o = chunk_base(c);
    cJSON_ReplaceItemInObject(o, "object",
                              cJSON_CreateString(c->chat ? "chat.completion" : "text_completion"));
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    size_t vis = visible_len(j);
    if (c->chat) {
        cJSON *m = cJSON_AddObjectToObject(ch, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        add_str_n(m, "content", j->text, vis);
    } else if (c->echo && c->prompt_text) {
        size_t pl = strlen(c->prompt_text);
        char *t = malloc(pl + vis + 1);
        if (t) {
            memcpy(t, c->prompt_text, pl);
            memcpy(t + pl, j->text, vis);
            t[pl + vis] = 0;
        }
        cJSON_AddStringToObject(ch, "text", t ? t : "");
        free(t);
    } else {
        add_str_n(ch, "text", j->text, vis);
    }
    cJSON_AddItemToObject(ch, "logprobs", logprobs_json(c, j, 0, j->n_gen));
    cJSON_AddStringToObject(ch, "finish_reason", finish_reason(j->finish));
    cJSON_AddItemToArray(choices, ch);
    cJSON_AddItemToObject(o, "usage", usage_json(j));
    http_reply_json(r, 200, o);
}

static void oai_ctx_free(void *ctx) {
    struct oai_ctx *c = ctx;
    if (!c) return;
    free(c->prompt_text);
    free(c);
}

static const struct job_render OAI_STREAM = {.stream = 1,
                                             .on_start = stream_start,
                                             .on_tokens = stream_tokens,
                                             .on_finish = stream_finish,
                                             .on_error = stream_error,
                                             .free = oai_ctx_free};
static const struct job_render OAI_FULL = {
    .stream = 0, .on_finish = full_finish, .free = oai_ctx_free};

/* Sampling fields shared by both routes. */
static int parse_common(struct server *sv, struct http_req *r, const cJSON *b, struct oai_ctx *c,
                        struct job_params *p) {
    long long max_tokens = -1, n = 1, seed = -1, top_k = 0;
    double temp = 1.0, top_p = 1.0, rep = 1.0;
    const char *mt = c->chat && cJSON_GetObjectItemCaseSensitive(b, "max_completion_tokens")
                         ? "max_completion_tokens"
                         : "max_tokens";
    if (!c->chat) max_tokens = 16; /* OpenAI's legacy completions default */
    if (job_get_int(sv, r, b, mt, 1, 1 << 24, &max_tokens) ||
        job_get_int(sv, r, b, "n", 1, 1 << 20, &n) ||
        job_get_int(sv, r, b, "seed", -(1ll << 53), 1ll << 53, &seed) ||
        job_get_int(sv, r, b, "top_k", -1, 1 << 30, &top_k) ||
        job_get_num(sv, r, b, "temperature", 0, 2, 0, &temp) ||
        job_get_num(sv, r, b, "top_p", 0, 1, 1, &top_p) ||
        job_get_num(sv, r, b, "repetition_penalty", 0, 1e30, 1, &rep) ||
        job_get_bool(sv, r, b, "stream", &c->stream) ||
        job_get_bool(sv, r, b, "ignore_eos", &p->ignore_eos) ||
        job_get_stop(sv, r, b, "stop", 1, p))
        return -1;
    if (n != 1) return job_invalid(sv, r, "n", "`n` > 1 is not supported (given %lld)", n);
    if (job_reject_unsupported(sv, r, b, "presence_penalty", 0) ||
        job_reject_unsupported(sv, r, b, "frequency_penalty", 0) ||
        job_reject_unsupported(sv, r, b, "best_of", 1) ||
        job_reject_unsupported(sv, r, b, "logit_bias", NAN) ||
        job_reject_unsupported(sv, r, b, "suffix", NAN) ||
        job_reject_unsupported(sv, r, b, "tools", NAN) ||
        job_reject_unsupported(sv, r, b, "response_format", NAN))
        return -1;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(b, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so))
            return job_invalid(sv, r, "stream_options", "`stream_options` must be an object");
        if (job_get_bool(sv, r, so, "include_usage", &c->include_usage)) return -1;
    }
    p->max_new = (int)max_tokens;
    p->sp.do_sample = temp > 0;
    p->sp.temperature = temp > 0 ? (float)temp : 1.0f;
    p->sp.top_p = (float)top_p;
    p->sp.top_k = top_k > 0 ? (int)top_k : 0;
    p->sp.repetition_penalty = (float)rep;
    if (seed != -1) {
        p->sp.seed = (uint64_t)seed;
        p->seed_given = 1;
    }
    return 0;
}

/* Name the completion and hand the job to the driver. Returns -1 (reply sent, job freed, C
 * still the caller's) when it could not start. */
static int start(struct server *sv, struct http_req *r, struct oai_ctx *c, struct wreq *j) {
    snprintf(c->id, sizeof c->id, "%s-%llu", c->chat ? "chatcmpl" : "cmpl",
             (unsigned long long)j->id);
    c->created = (long)time(NULL);
    return job_run(sv, r, j, c->stream ? &OAI_STREAM : &OAI_FULL, c);
}

/* Text of a message's content: a string, or an array of {"type":"text","text":...} parts. */
static char *content_text(const cJSON *content) {
    if (cJSON_IsString(content)) return strdup(content->valuestring);
    if (!cJSON_IsArray(content)) return NULL;
    size_t total = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(part, "type");
        if (!cJSON_IsString(t) || (ty && (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text"))))
            return NULL;
        total += strlen(t->valuestring);
    }
    char *s = malloc(total + 1);
    if (!s) return NULL;
    s[0] = 0;
    cJSON_ArrayForEach(part, content)
        strcat(s, cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring);
    return s;
}

void ep_chat_completions(struct http_req *r) {
    struct server *sv = http_req_app(r);
    if (job_admit(sv, r)) return;
    cJSON *b = job_parse_body(sv, r);
    if (!b) return;
    struct job_params p;
    job_params_init(&p);
    struct chat_msg *msgs = NULL;
    char **texts = NULL;
    int n_msgs = 0, nm = 0;
    struct oai_ctx *c = calloc(1, sizeof *c);
    if (!c) goto out;
    c->sv = sv, c->chat = 1;
    if (parse_common(sv, r, b, c, &p)) goto out;
    if (job_get_bool(sv, r, b, "logprobs", &c->logprobs)) goto out;
    long long tl = 0;
    if (job_get_int(sv, r, b, "top_logprobs", 0, 20, &tl)) goto out;
    c->top_logprobs = (int)tl;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(b, "messages");
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) == 0) {
        job_invalid(sv, r, "messages", "`messages` must be a non-empty array");
        goto out;
    }
    nm = cJSON_GetArraySize(m);
    msgs = calloc((size_t)nm, sizeof *msgs);
    texts = calloc((size_t)nm, sizeof *texts);
    if (!msgs || !texts) goto out;
    const cJSON *it;
    cJSON_ArrayForEach(it, m) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsString(role) ||
            (strcmp(role->valuestring, "system") && strcmp(role->valuestring, "user") &&
             strcmp(role->valuestring, "assistant") && strcmp(role->valuestring, "developer"))) {
            job_invalid(sv, r, "messages",
                        "`messages[%d].role` must be system, developer, user or assistant", n_msgs);
            goto out;
        }
        texts[n_msgs] = content_text(content);
        if (!texts[n_msgs]) {
            job_invalid(sv, r, "messages",
                        "`messages[%d].content` must be a string or an array of text parts",
                        n_msgs);
            goto out;
        }
        msgs[n_msgs].role = strcmp(role->valuestring, "developer") ? role->valuestring : "system";
        msgs[n_msgs].content = texts[n_msgs];
        n_msgs++;
    }
    char *prompt = chat_template_apply(sv->worker.info.chat, msgs, n_msgs, 1);
    if (!prompt) {
        http_reply_error(r, 500, "internal", NULL, "cannot render the chat template");
        goto out;
    }
    struct wreq *j = job_build(sv, r, prompt, 1, 0, &p, "messages");
    free(prompt);
    if (!j) goto out;
    if (start(sv, r, c, j) == 0) c = NULL;
out:
    if (c && !http_replied(r)) http_reply_error(r, 500, "internal", NULL, "out of memory");
    for (int i = 0; texts && i < nm; i++)
        free(texts[i]);
    free(texts);
    free(msgs);
    oai_ctx_free(c);
    job_params_free(&p);
    cJSON_Delete(b);
}

void ep_completions(struct http_req *r) {
    struct server *sv = http_req_app(r);
    if (job_admit(sv, r)) return;
    cJSON *b = job_parse_body(sv, r);
    if (!b) return;
    struct job_params p;
    job_params_init(&p);
    int *ids = NULL;
    struct oai_ctx *c = calloc(1, sizeof *c);
    if (!c) goto out;
    c->sv = sv;
    if (parse_common(sv, r, b, c, &p)) goto out;
    long long lp = -1;
    if (job_get_int(sv, r, b, "logprobs", 0, 20, &lp) || job_get_bool(sv, r, b, "echo", &c->echo))
        goto out;
    c->logprobs = lp >= 0;
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(b, "prompt");
    if (cJSON_IsArray(pr) && cJSON_GetArraySize(pr) == 1 &&
        cJSON_IsString(cJSON_GetArrayItem(pr, 0)))
        pr = cJSON_GetArrayItem(pr, 0);
    struct wreq *j = NULL;
    if (cJSON_IsString(pr)) {
        if (!*pr->valuestring) {
            job_invalid(sv, r, "prompt", "`prompt` cannot be empty");
            goto out;
        }
        j = job_build(sv, r, pr->valuestring, 1, 1, &p, "prompt");
        if (j && c->echo) c->prompt_text = strdup(pr->valuestring);
    } else if (cJSON_IsArray(pr) && cJSON_GetArraySize(pr) > 0 &&
               cJSON_IsNumber(cJSON_GetArrayItem(pr, 0))) {
        int n = cJSON_GetArraySize(pr), k = 0;
        ids = malloc(sizeof(int) * (size_t)n);
        if (!ids) goto out;
        const cJSON *it;
        cJSON_ArrayForEach(it, pr) {
            if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble)) {
                job_invalid(sv, r, "prompt", "`prompt` token arrays must hold integers");
                goto out;
            }
            ids[k++] = (int)it->valuedouble;
        }
        j = job_build_ids(sv, r, ids, n, &p, "prompt");
        if (j && c->echo) c->prompt_text = tokenizer_decode(sv->worker.info.tok, ids, n, 0);
    } else {
        job_invalid(sv, r, "prompt",
                    "`prompt` must be a string, a one-element array of strings, or token ids");
        goto out;
    }
    if (!j) goto out;
    if (c->echo && c->stream) {
        wreq_free(j);
        job_invalid(sv, r, "echo", "`echo` is not supported when streaming");
        goto out;
    }
    if (start(sv, r, c, j) == 0) c = NULL;
out:
    if (c && !http_replied(r)) http_reply_error(r, 500, "internal", NULL, "out of memory");
    oai_ctx_free(c);
    free(ids);
    job_params_free(&p);
    cJSON_Delete(b);
}

void ep_models(struct http_req *r) {
    struct server *sv = http_req_app(r);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", sv->model_id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)time(NULL));
    cJSON_AddStringToObject(m, "owned_by", "flashgen");
    if (sv->phase == SERVER_READY || sv->phase == SERVER_DRAINING)
        cJSON_AddNumberToObject(m, "max_model_len", sv->max_total);
    cJSON_AddItemToArray(data, m);
    http_reply_json(r, 200, o);
}
