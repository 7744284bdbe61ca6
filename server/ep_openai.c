/* ep_openai.c — the OpenAI routes: POST /v1/completions, POST /v1/chat/completions (with
 * "stream": chunks "data: {json}\n\n" and a closing "data: [DONE]").
 *
 * Chat prompts are rendered with the model's chat template (ChatML or Llama-3, from the GGUF or
 * tokenizer_config.json) and tokenized with special tokens parsed. temperature 0 means greedy;
 * the default temperature is 1 (sampling), as in OpenAI. Stop sequences are cut from the
 * returned text (OpenAI semantics; TGI routes keep them). Loop thread only; chat templates and
 * text prompts are rendered and tokenized on a work thread (job_start_chat, job_start_text).
 * Tool calling (tools, tool_choice; server/tools.h): the messages are adapted to the template
 * before the job starts, and the output is rendered as tool_calls (streamed as delta.tool_calls)
 * when it is a call.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/tokenizer.h"
#include "server/job.h"
#include "server/tools.h"

static size_t visible_len(const struct wreq *j);

/* The route's state (owned by the job driver once the job runs). */
struct oai_ctx {
    struct server *sv;
    int chat, stream, include_usage, echo, logprobs, top_logprobs;
    char *prompt_text; /* echo */
    char id[48];
    long created;
    int sent;                /* tokens streamed */
    size_t sent_text;        /* bytes of text streamed */
    struct tools_req *tools; /* chat: tool calling (server/tools.h), or NULL */
    int tools_text;          /* streaming with tools: the output is known to be text */
    int call_sent;           /* streaming a forced call: its head was sent; sent_text is then
                                the end of the arguments sent */
};

/* The output as tool calls (tools_parse_output), or NULL when it is text. */
static cJSON *tool_calls_of(const struct oai_ctx *c, const struct wreq *j) {
    if (!c->tools || j->finish == WREQ_FIN_LENGTH) return NULL;
    return tools_parse_output(c->tools, j->text, visible_len(j));
}

/* The streamed calls as OpenAI sends them: per call a chunk with its index, id, type and
 * function.name (arguments ""), then one with the arguments. */
static void stream_tool_calls(struct oai_ctx *c, struct http_req *r, cJSON *calls);
static void stream_forced(struct oai_ctx *c, struct http_req *r, const struct wreq *j);

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
            job_add_text(e, "token", t, len);
            cJSON_AddNumberToObject(e, "logprob", j->logprobs[k]);
            cJSON *b = cJSON_AddArrayToObject(e, "bytes");
            for (size_t i = 0; i < len; i++)
                cJSON_AddItemToArray(b, cJSON_CreateNumber((unsigned char)t[i]));
            cJSON *top = cJSON_AddArrayToObject(e, "top_logprobs");
            if (c->top_logprobs > 0) {
                cJSON *te = cJSON_CreateObject();
                job_add_text(te, "token", t, len);
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
        if (to > from || !finish) job_add_text(d, "content", j->text + from, to - from);
    } else {
        job_add_text(ch, "text", j->text + from, to - from);
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
    if (c->tools && !c->tools_text) { /* "auto": a call is sent whole, once complete */
        if (c->tools->choice != TOOLS_CHOICE_AUTO) return stream_forced(c, r, j);
        if (tools_stream_hold(c->tools, j->text, vis)) return;
        c->tools_text = 1;
    }
    if (j->finish == WREQ_FIN_NONE) {
        size_t hold = 0;
        for (int i = 0; i < j->n_stop; i++) {
            size_t l = strlen(j->stop[i]);
            if (l - 1 > hold) hold = l - 1;
        }
        vis = vis > hold ? vis - hold : 0;
        /* never cut inside a character: back up to the start of the one the cut falls in */
        while (vis > c->sent_text && ((unsigned char)j->text[vis] & 0xC0) == 0x80)
            vis--;
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
    cJSON *calls = c->tools && !c->tools_text ? tool_calls_of(c, j) : NULL;
    const char *fin = calls ? "tool_calls" : finish_reason(j->finish);
    if (c->call_sent) { /* a forced call, streamed as it came: the last of its arguments */
        stream_forced(c, r, j);
        cJSON_Delete(calls);
    } else if (calls) {
        stream_tool_calls(c, r, calls);
    } else if (c->tools && !c->tools_text) { /* held back, and text after all */
        c->tools_text = 1;
        stream_tokens(c, r, j, c->sent);
    }
    stream_chunk(c, r, j, 0, 0, 0, 0, fin);
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
    cJSON *calls = c->chat ? tool_calls_of(c, j) : NULL;
    if (c->chat) {
        cJSON *m = cJSON_AddObjectToObject(ch, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        if (calls) {
            cJSON_AddNullToObject(m, "content");
            cJSON_AddItemToObject(m, "tool_calls", calls);
        } else {
            job_add_text(m, "content", j->text, vis);
        }
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
        job_add_text(ch, "text", j->text, vis);
    }
    cJSON_AddItemToObject(ch, "logprobs", logprobs_json(c, j, 0, j->n_gen));
    cJSON_AddStringToObject(ch, "finish_reason", calls ? "tool_calls" : finish_reason(j->finish));
    cJSON_AddItemToArray(choices, ch);
    cJSON_AddItemToObject(o, "usage", usage_json(j));
    http_reply_json(r, 200, o);
}

static void oai_ctx_free(void *ctx) {
    struct oai_ctx *c = ctx;
    if (!c) return;
    tools_req_free(c->tools);
    free(c->tools);
    free(c->prompt_text);
    free(c);
}

static void name_job(void *ctx, const struct wreq *j);

/* One chunk of a streamed call: delta.tool_calls = [CALL_DELTA]. */
static void tool_chunk(struct oai_ctx *c, struct http_req *r, cJSON *call_delta) {
    cJSON *o = chunk_base(c);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    cJSON *d = cJSON_AddObjectToObject(ch, "delta");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(d, "tool_calls"), call_delta);
    cJSON_AddNullToObject(ch, "logprobs");
    cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(choices, ch);
    job_sse(r, "data: ", o);
}

/* A forced call streamed as OpenAI does: once the head is complete, a chunk with index, id, type
 * and name; then the arguments as they come, all but the last byte (which may be the call's
 * closing brace) until the job ends. */
static void stream_forced(struct oai_ctx *c, struct http_req *r, const struct wreq *j) {
    size_t vis = visible_len(j), at;
    int fn;
    if (!c->call_sent) {
        if (!tools_forced_head(c->tools, j->text, vis, &at, &fn)) return;
        char id[32];
        tools_call_id(id);
        cJSON *head = cJSON_CreateObject(), *f;
        cJSON_AddNumberToObject(head, "index", 0);
        cJSON_AddStringToObject(head, "id", id);
        cJSON_AddStringToObject(head, "type", "function");
        f = cJSON_AddObjectToObject(head, "function");
        cJSON_AddStringToObject(f, "name", c->tools->names[fn]);
        cJSON_AddStringToObject(f, "arguments", "");
        tool_chunk(c, r, head);
        c->call_sent = 1;
        c->sent_text = at;
    }
    size_t end = vis;
    int done = j->finish != WREQ_FIN_NONE;
    if (!done || (end > c->sent_text && j->text[end - 1] == '}' && j->finish != WREQ_FIN_LENGTH))
        end = end > c->sent_text ? end - 1 : c->sent_text;
    while (!done && end > c->sent_text && ((unsigned char)j->text[end] & 0xC0) == 0x80)
        end--; /* never inside a character */
    if (end <= c->sent_text) return;
    cJSON *d = cJSON_CreateObject();
    cJSON_AddNumberToObject(d, "index", 0);
    job_add_text(cJSON_AddObjectToObject(d, "function"), "arguments", j->text + c->sent_text,
                 end - c->sent_text);
    tool_chunk(c, r, d);
    c->sent_text = end;
}

static void stream_tool_calls(struct oai_ctx *c, struct http_req *r, cJSON *calls) {
    int i = 0;
    const cJSON *call;
    cJSON_ArrayForEach(call, calls) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
        cJSON *head = cJSON_CreateObject(), *f;
        cJSON_AddNumberToObject(head, "index", i);
        cJSON_AddItemToObject(head, "id",
                              cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(call, "id"), 0));
        cJSON_AddStringToObject(head, "type", "function");
        f = cJSON_AddObjectToObject(head, "function");
        cJSON_AddItemToObject(f, "name",
                              cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(fn, "name"), 0));
        cJSON_AddStringToObject(f, "arguments", "");
        tool_chunk(c, r, head);
        cJSON *args = cJSON_CreateObject();
        cJSON_AddNumberToObject(args, "index", i);
        f = cJSON_AddObjectToObject(args, "function");
        cJSON_AddItemToObject(
            f, "arguments", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(fn, "arguments"), 0));
        tool_chunk(c, r, args);
        i++;
    }
    cJSON_Delete(calls);
}

/* Tool calling before the job starts: the messages made renderable by the model's template
 * (tools_adapt_messages), the tool list handed to the template when it takes one, the request's
 * tool state moved into C. Returns -1 after replying 500 when out of memory. */
static int ep_tools_prepare(struct server *sv, struct http_req *r, struct reqparse_oai *q,
                            struct oai_ctx *c) {
    const struct chat_template *ct = sv->worker.info.chat;
    int takes = chat_template_takes_tools(ct);
    if (tools_adapt_messages(q->tools, takes, &q->msgs, &q->n_msgs) ||
        (takes && q->tools->tools && !(q->p.chat_tools = cJSON_Duplicate(q->tools->tools, 1)))) {
        http_reply_error(r, 500, "internal", NULL, "out of memory");
        return -1;
    }
    if (q->tools->choice != TOOLS_CHOICE_NONE) {
        c->tools = q->tools;
        q->tools = NULL;
    }
    return 0;
}

static const struct job_render OAI_STREAM = {.stream = 1,
                                             .on_start = stream_start,
                                             .on_tokens = stream_tokens,
                                             .on_finish = stream_finish,
                                             .on_error = stream_error,
                                             .free = oai_ctx_free,
                                             .on_job = name_job};
static const struct job_render OAI_FULL = {
    .stream = 0, .on_finish = full_finish, .free = oai_ctx_free, .on_job = name_job};

/* The route's state from a parsed request (reqparse.h). NULL (reply sent) when out of memory. */
static struct oai_ctx *ctx_new(struct server *sv, struct http_req *r,
                               const struct reqparse_oai *q) {
    struct oai_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        http_reply_error(r, 500, "internal", NULL, "out of memory");
        return NULL;
    }
    c->sv = sv, c->chat = q->chat;
    c->stream = q->stream;
    c->include_usage = q->include_usage;
    c->logprobs = q->logprobs;
    c->top_logprobs = q->top_logprobs;
    c->echo = q->echo;
    return c;
}

/* Name the completion once its job exists (job_start_*, before it runs). */
static void name_job(void *ctx, const struct wreq *j) {
    struct oai_ctx *c = ctx;
    snprintf(c->id, sizeof c->id, "%s-%llu", c->chat ? "chatcmpl" : "cmpl",
             (unsigned long long)j->id);
    c->created = (long)time(NULL);
}

/* Hand the job to the driver. Returns -1 (reply sent, job freed, C still the caller's) when it
 * could not start. */
static int start(struct server *sv, struct http_req *r, struct oai_ctx *c, struct wreq *j) {
    name_job(c, j);
    return job_run(sv, r, j, c->stream ? &OAI_STREAM : &OAI_FULL, c);
}

/* Both routes: admission, the body parsed by PARSE into Q, the route's state. Returns NULL
 * after replying (Q is initialised either way: free it with reqparse_oai_free). */
static struct oai_ctx *begin(struct server *sv, struct http_req *r,
                             int (*parse)(const char *, size_t, const struct reqparse_limits *,
                                          struct reqparse_oai *, struct reqparse_error *),
                             struct reqparse_oai *q) {
    size_t len;
    const char *body = http_req_body(r, &len);
    struct reqparse_limits lim = {.max_stop_sequences = sv->cfg.max_stop_sequences};
    struct reqparse_error err;
    if (parse(body, len, &lim, q, &err)) {
        job_reply_invalid(sv, r, &err);
        return NULL;
    }
    return ctx_new(sv, r, q);
}

void ep_chat_completions(struct http_req *r) {
    struct server *sv = http_req_app(r);
    if (job_admit(sv, r)) return;
    struct reqparse_oai q;
    struct oai_ctx *c = begin(sv, r, reqparse_chat, &q);
    if (!c) goto out;
    if (ep_tools_prepare(sv, r, &q, c)) goto out;
    /* the template is rendered and the prompt tokenized off the loop thread */
    struct chat_msg *msgs = q.msgs;
    int n_msgs = q.n_msgs;
    q.msgs = NULL;
    q.n_msgs = 0;
    if (job_start_chat(sv, r, msgs, n_msgs, &q.p, c->stream ? &OAI_STREAM : &OAI_FULL, c) == 0)
        c = NULL;
out:
    oai_ctx_free(c);
    reqparse_oai_free(&q);
}

void ep_completions(struct http_req *r) {
    struct server *sv = http_req_app(r);
    if (job_admit(sv, r)) return;
    struct reqparse_oai q;
    struct oai_ctx *c = begin(sv, r, reqparse_completions, &q);
    if (!c) goto out;
    if (q.prompt) { /* tokenized off the loop thread */
        char *text = q.prompt;
        q.prompt = NULL;
        if (c->echo && !(c->prompt_text = strdup(text))) { /* valid UTF-8 (reqparse) */
            free(text);
            http_reply_error(r, 500, "internal", NULL, "out of memory");
            goto out;
        }
        if (job_start_text(sv, r, text, 1, 1, &q.p, "prompt", c->stream ? &OAI_STREAM : &OAI_FULL,
                           c) == 0)
            c = NULL;
        goto out;
    }
    /* token ids: only checked against the limits, which is quick */
    struct wreq *j = job_build_ids(sv, r, q.ids, q.n_ids, &q.p, "prompt");
    if (!j) goto out;
    if (c->echo) c->prompt_text = tokenizer_decode(sv->worker.info.tok, q.ids, q.n_ids, 0);
    if (start(sv, r, c, j) == 0) c = NULL;
out:
    oai_ctx_free(c);
    reqparse_oai_free(&q);
}
