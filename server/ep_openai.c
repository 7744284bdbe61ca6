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
 * when it is a call. A request with tools has one choice (n = 1).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/tokenizer.h"
#include "server/job.h"
#include "server/tools.h"

static size_t visible_len(const struct wreq *j);

/* The route's state (owned by the job driver once the jobs run). A request runs one job per
 * sequence: n_prompts × n_seqs of them, job index = prompt · n_seqs + k (job_build_group); when
 * n_seqs > n_return (best_of) the n_return best of each prompt are the choices. */
struct oai_ctx {
    struct server *sv;
    int chat, stream, include_usage, echo, logprobs, top_logprobs;
    int token_ids; /* return_tokens_as_token_ids */
    int n_prompts, n_seqs, n_return, n_jobs;
    char **prompt_text; /* (n_prompts) echo */
    char id[48];
    long created;
    int *sent;               /* (n_jobs) tokens streamed */
    size_t *sent_text;       /* (n_jobs) bytes of text streamed */
    struct tools_req *tools; /* chat: tool calling (server/tools.h), or NULL; then one job */
    int tools_text;          /* streaming with tools: the output is known to be text */
    int call_sent;           /* streaming a forced call: its head was sent; sent_text[0] is then
                                the end of the arguments sent */
};

/* The output as tool calls (tools_parse_output), or NULL when it is text. */
static cJSON *tool_calls_of(const struct oai_ctx *c, const struct wreq *j) {
    if (!c->tools || j->finish == WREQ_FIN_LENGTH) return NULL;
    return tools_parse_output(c->tools, j->text, visible_len(j));
}

static int stream_tools(struct oai_ctx *c, struct http_req *r, const struct wreq *j);

static const char *finish_reason(enum wreq_finish f) {
    return f == WREQ_FIN_LENGTH ? "length" : "stop";
}

/* Bytes of the job's text the client may see so far: stop sequences are cut. */
static size_t visible_len(const struct wreq *j) {
    return j->finish == WREQ_FIN_STOP ? j->stop_pos : j->text_len;
}

/* Usage of the whole request: each prompt once, every sequence's tokens (best_of: the
 * candidates not returned too, as OpenAI counts them). */
static cJSON *usage_json(const struct oai_ctx *c, struct wreq *const *js, int n) {
    int prompt = 0, gen = 0;
    for (int i = 0; i < n; i++) {
        if (i % c->n_seqs == 0) prompt += js[i]->n_prompt;
        gen += js[i]->n_gen;
    }
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", gen);
    cJSON_AddNumberToObject(u, "total_tokens", prompt + gen);
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

/* One alternative (id, logprob) as {token, logprob, bytes} (chat) or its text (completions). */
static cJSON *alt_json(const struct oai_ctx *c, const struct walt *a, char *buf, size_t cap,
                       int *len) {
    int n = c->token_ids ? snprintf(buf, cap, "token_id:%d", a->id)
                         : tokenizer_token_bytes(c->sv->worker.info.tok, a->id, buf, cap - 1);
    *len = n > 0 ? n : 0;
    if (!c->chat) return NULL;
    cJSON *te = cJSON_CreateObject();
    job_add_text(te, "token", buf, (size_t)*len);
    cJSON_AddNumberToObject(te, "logprob", a->logprob);
    cJSON *b = cJSON_AddArrayToObject(te, "bytes");
    for (int i = 0; i < *len; i++)
        cJSON_AddItemToArray(b, cJSON_CreateNumber((unsigned char)buf[i]));
    return te;
}

/* The alternatives of one position (K of TOP, id -1 ends them): chat a list of alt_json,
 * completions {text: logprob}. NULL TOP: the chosen token (T, LEN, LP) alone. */
static cJSON *tops_json(const struct oai_ctx *c, const struct walt *top, int k, const char *t,
                        size_t len, float lp) {
    cJSON *arr = c->chat ? cJSON_CreateArray() : cJSON_CreateObject();
    char buf[512];
    int n;
    for (int i = 0; top && i < k && top[i].id >= 0; i++) {
        cJSON *te = alt_json(c, &top[i], buf, sizeof buf, &n);
        if (c->chat) {
            cJSON_AddItemToArray(arr, te);
        } else {
            buf[n] = 0;
            if (!cJSON_GetObjectItemCaseSensitive(arr, buf)) /* the first (likeliest) spelling */
                cJSON_AddNumberToObject(arr, buf, top[i].logprob);
        }
    }
    if (!top && c->top_logprobs > 0) { /* no alternatives were computed: the chosen token */
        if (c->chat) {
            cJSON *te = cJSON_CreateObject();
            job_add_text(te, "token", t, len);
            cJSON_AddNumberToObject(te, "logprob", lp);
            cJSON_AddItemToArray(arr, te);
        }
    }
    if (!top && !c->chat) {
        char *s = strndup(t, len);
        cJSON_AddNumberToObject(arr, s ? s : "", lp);
        free(s);
    }
    return arr;
}

/* Completions with echo: the prompt tokens first, their logprobs from the prefill (the first
 * one null, as OpenAI), alternatives when asked. Returns the prompt's text length, which the
 * generated tokens' offsets start from. */
static size_t prompt_logprobs_json(const struct oai_ctx *c, const struct wreq *j, cJSON *toks,
                                   cJSON *lps, cJSON *tops, cJSON *offs) {
    size_t off = 0;
    char buf[512];
    for (int i = 0; i < j->n_prompt; i++) {
        int n = c->token_ids ? snprintf(buf, sizeof buf, "token_id:%d", j->tokens[i])
                             : tokenizer_token_bytes(c->sv->worker.info.tok, j->tokens[i], buf,
                                                     sizeof buf - 1);
        n = n > 0 ? n : 0;
        buf[n] = 0;
        cJSON_AddItemToArray(toks, cJSON_CreateString(buf));
        int have = i > 0 && i < j->n_prompt_lp && isfinite(j->prompt_lp[i]);
        cJSON_AddItemToArray(lps, have ? cJSON_CreateNumber(j->prompt_lp[i]) : cJSON_CreateNull());
        if (!have)
            cJSON_AddItemToArray(tops, cJSON_CreateNull());
        else
            cJSON_AddItemToArray(
                tops, tops_json(c, j->prompt_top ? j->prompt_top + (size_t)i * j->top_k : NULL,
                                j->top_k, buf, (size_t)n, j->prompt_lp[i]));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        off += (size_t)n;
    }
    return off;
}

/* Generated token k's name in logprobs: its text (T, *LEN from job_token_text), or
 * "token_id:ID" in BUF with return_tokens_as_token_ids. */
static const char *token_name(const struct oai_ctx *c, const struct wreq *j, int k, char *buf,
                              size_t cap, size_t *len) {
    const char *t = job_token_text(j, k, len);
    if (!c->token_ids) return t;
    int n = snprintf(buf, cap, "token_id:%d", j->tokens[j->n_prompt + k]);
    *len = n > 0 ? (size_t)n : 0;
    return buf;
}

/* Logprobs of tokens [from, to): chat {"content":[{token, logprob, bytes, top_logprobs}]},
 * completions {tokens, token_logprobs, top_logprobs, text_offset}, with ECHO the prompt tokens
 * first. top_logprobs holds the top_k alternatives the worker computed: the log softmax of the
 * logits the sampler saw (logit bias, penalties and grammar mask applied) before temperature and
 * the top-k / top-p cut, while `logprob` is the chosen token's under the distribution it was
 * drawn from (the same number for greedy decoding). */
static cJSON *logprobs_json(const struct oai_ctx *c, const struct wreq *j, int from, int to,
                            int echo) {
    if (!c->logprobs) return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject();
    if (c->chat) {
        cJSON *arr = cJSON_AddArrayToObject(o, "content");
        for (int k = from; k < to; k++) {
            size_t len;
            char nb[32];
            const char *t = token_name(c, j, k, nb, sizeof nb, &len);
            cJSON *e = cJSON_CreateObject();
            job_add_text(e, "token", t, len);
            cJSON_AddNumberToObject(e, "logprob", j->logprobs[k]);
            cJSON *b = cJSON_AddArrayToObject(e, "bytes");
            for (size_t i = 0; i < len; i++)
                cJSON_AddItemToArray(b, cJSON_CreateNumber((unsigned char)t[i]));
            cJSON_AddItemToObject(e, "top_logprobs",
                                  tops_json(c, j->top ? j->top + (size_t)k * j->top_k : NULL,
                                            j->top_k, t, len, j->logprobs[k]));
            cJSON_AddItemToArray(arr, e);
        }
    } else {
        cJSON *toks = cJSON_AddArrayToObject(o, "tokens");
        cJSON *lps = cJSON_AddArrayToObject(o, "token_logprobs");
        cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");
        cJSON *offs = cJSON_AddArrayToObject(o, "text_offset");
        size_t base = echo && j->prompt_lp ? prompt_logprobs_json(c, j, toks, lps, tops, offs) : 0;
        for (int k = from; k < to; k++) {
            size_t len, tl;
            char nb[32];
            const char *t = token_name(c, j, k, nb, sizeof nb, &len);
            const char *tx = job_token_text(j, k, &tl);
            char *s = strndup(t, len);
            cJSON_AddItemToArray(toks, cJSON_CreateString(s ? s : ""));
            cJSON_AddItemToArray(lps, cJSON_CreateNumber(j->logprobs[k]));
            cJSON_AddItemToArray(tops, tops_json(c, j->top ? j->top + (size_t)k * j->top_k : NULL,
                                                 j->top_k, t, len, j->logprobs[k]));
            cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(base + (size_t)(tx - j->text))));
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
    cJSON_AddNumberToObject(ch, "index", j->index); /* streams have no best_of: choice = job */
    if (c->chat) {
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        if (to > from || !finish) job_add_text(d, "content", j->text + from, to - from);
    } else {
        job_add_text(ch, "text", j->text + from, to - from);
    }
    cJSON_AddItemToObject(ch, "logprobs",
                          k1 > k0 ? logprobs_json(c, j, k0, k1, 0) : cJSON_CreateNull());
    if (finish)
        cJSON_AddStringToObject(ch, "finish_reason", finish);
    else
        cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(choices, ch);
    job_sse(r, "data: ", o);
}

/* Streamed text since the last chunk, holding back a tail that might become a stop sequence
 * while the job runs; the choice's finish chunk once it is done. */
static void stream_tokens(void *ctx, struct http_req *r, const struct wreq *j, int from) {
    (void)from;
    struct oai_ctx *c = ctx;
    if (c->tools && !c->tools_text && stream_tools(c, r, j)) return;
    int i = j->index;
    size_t vis = visible_len(j);
    if (j->finish == WREQ_FIN_NONE) {
        size_t hold = 0;
        for (int i = 0; i < j->n_stop; i++) {
            size_t l = strlen(j->stop[i]);
            if (l - 1 > hold) hold = l - 1;
        }
        vis = vis > hold ? vis - hold : 0;
        /* never cut inside a character: back up to the start of the one the cut falls in */
        while (vis > c->sent_text[i] && ((unsigned char)j->text[vis] & 0xC0) == 0x80)
            vis--;
    }
    if (vis > c->sent_text[i] || (c->sent[i] < j->n_gen && c->logprobs)) {
        if (vis < c->sent_text[i]) vis = c->sent_text[i];
        stream_chunk(c, r, j, c->sent_text[i], vis, c->sent[i], j->n_gen, NULL);
        c->sent_text[i] = vis;
        c->sent[i] = j->n_gen;
    }
    if (j->finish != WREQ_FIN_NONE && !job_failed_finish(j->finish))
        stream_chunk(c, r, j, 0, 0, 0, 0, finish_reason(j->finish));
}

/* OpenAI opens a chat stream with the role, one chunk per choice. */
static void stream_start(void *ctx, struct http_req *r) {
    struct oai_ctx *c = ctx;
    if (!c->chat) return;
    for (int i = 0; i < c->n_jobs; i++) {
        cJSON *o = chunk_base(c);
        cJSON *choices = cJSON_AddArrayToObject(o, "choices");
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddNumberToObject(ch, "index", i);
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        cJSON_AddStringToObject(d, "role", "assistant");
        cJSON_AddStringToObject(d, "content", "");
        cJSON_AddNullToObject(ch, "logprobs");
        cJSON_AddNullToObject(ch, "finish_reason");
        cJSON_AddItemToArray(choices, ch);
        job_sse(r, "data: ", o);
    }
}

/* Every choice has had its finish chunk: usage when asked, [DONE]. */
static void stream_finish(void *ctx, struct http_req *r, struct wreq *const *js, int n) {
    struct oai_ctx *c = ctx;
    if (c->include_usage) {
        cJSON *o = chunk_base(c);
        cJSON_AddArrayToObject(o, "choices");
        cJSON_AddItemToObject(o, "usage", usage_json(c, js, n));
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

/* Sum of the log-probabilities of J's generated tokens (best_of ranks by it). */
static double cum_logprob(const struct wreq *j) {
    double s = 0;
    for (int k = 0; k < j->n_gen; k++)
        s += isfinite(j->logprobs[k]) ? j->logprobs[k] : -1e30;
    return s;
}

/* One choice of the completion object: job J as choice INDEX of prompt P. */
static cJSON *choice_json(const struct oai_ctx *c, const struct wreq *j, int index, int p) {
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", index);
    size_t vis = visible_len(j);
    const char *prompt_text = c->prompt_text ? c->prompt_text[p] : NULL;
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
    } else if (c->echo && prompt_text) {
        size_t pl = strlen(prompt_text);
        char *t = malloc(pl + vis + 1);
        if (t) {
            memcpy(t, prompt_text, pl);
            memcpy(t + pl, j->text, vis);
            t[pl + vis] = 0;
        }
        cJSON_AddStringToObject(ch, "text", t ? t : "");
        free(t);
    } else {
        job_add_text(ch, "text", j->text, vis);
    }
    cJSON_AddItemToObject(ch, "logprobs", logprobs_json(c, j, 0, j->n_gen, c->echo));
    cJSON_AddStringToObject(ch, "finish_reason", calls ? "tool_calls" : finish_reason(j->finish));
    return ch;
}

/* The whole completion object: per prompt its n_return choices (the best n_return of its
 * n_seqs by cumulative logprob, best first, when best_of asked for more), index = prompt ·
 * n_return + rank. */
static void full_finish(void *ctx, struct http_req *r, struct wreq *const *js, int n) {
    struct oai_ctx *c = ctx;
    cJSON *o = chunk_base(c);
    cJSON_ReplaceItemInObject(o, "object",
                              cJSON_CreateString(c->chat ? "chat.completion" : "text_completion"));
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    for (int p = 0; p * c->n_seqs < n; p++) {
        struct wreq *const *cand = js + p * c->n_seqs;
        /* the best n_return by selection (n_seqs <= 128); ties and plain n keep job order */
        int used[REQPARSE_MAX_SEQS] = {0};
        for (int rank = 0; rank < c->n_return; rank++) {
            int best = -1;
            for (int k = 0; k < c->n_seqs; k++)
                if (!used[k] && (best < 0 || (c->n_seqs > c->n_return &&
                                              cum_logprob(cand[k]) > cum_logprob(cand[best]))))
                    best = k;
            used[best] = 1;
            cJSON_AddItemToArray(choices, choice_json(c, cand[best], p * c->n_return + rank, p));
        }
    }
    cJSON_AddItemToObject(o, "usage", usage_json(c, js, n));
    http_reply_json(r, 200, o);
}

static void oai_ctx_free(void *ctx) {
    struct oai_ctx *c = ctx;
    if (!c) return;
    for (int i = 0; c->prompt_text && i < c->n_prompts; i++)
        free(c->prompt_text[i]);
    free(c->prompt_text);
    free(c->sent);
    free(c->sent_text);
    tools_req_free(c->tools);
    free(c->tools);
    free(c);
}

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
        c->sent_text[0] = at;
    }
    size_t end = vis;
    int done = j->finish != WREQ_FIN_NONE;
    if (!done || (end > c->sent_text[0] && j->text[end - 1] == '}' && j->finish != WREQ_FIN_LENGTH))
        end = end > c->sent_text[0] ? end - 1 : c->sent_text[0];
    while (!done && end > c->sent_text[0] && ((unsigned char)j->text[end] & 0xC0) == 0x80)
        end--; /* never inside a character */
    if (end <= c->sent_text[0]) return;
    cJSON *d = cJSON_CreateObject();
    cJSON_AddNumberToObject(d, "index", 0);
    job_add_text(cJSON_AddObjectToObject(d, "function"), "arguments", j->text + c->sent_text[0],
                 end - c->sent_text[0]);
    tool_chunk(c, r, d);
    c->sent_text[0] = end;
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
        if (c->n_jobs > 1) {
            job_invalid(sv, r, "n", "tool calling takes one choice (`n` = 1; given %d)", c->n_jobs);
            return -1;
        }
        c->tools = q->tools;
        q->tools = NULL;
    }
    return 0;
}

/* Tool calling in a stream (one job): a forced call streams as its arguments come; under "auto",
 * output that may still become a call is held back, then sent as whole calls once complete, or
 * released as text. Returns 1 when it handled J's news, 0 when J's output turned out to be text
 * (c->tools_text is then set and stream_tokens streams it as any text). */
static int stream_tools(struct oai_ctx *c, struct http_req *r, const struct wreq *j) {
    if (j->finish == WREQ_FIN_NONE) {
        if (c->tools->choice != TOOLS_CHOICE_AUTO) {
            stream_forced(c, r, j);
            return 1;
        }
        if (tools_stream_hold(c->tools, j->text, visible_len(j))) return 1;
        c->tools_text = 1;
        return 0;
    }
    if (job_failed_finish(j->finish)) return 1; /* on_error tells the client */
    if (c->tools->choice != TOOLS_CHOICE_AUTO) stream_forced(c, r, j);
    cJSON *calls = tool_calls_of(c, j);
    const char *fin = calls ? "tool_calls" : finish_reason(j->finish);
    if (c->call_sent) { /* a forced call, streamed as it came */
        cJSON_Delete(calls);
    } else if (calls) {
        stream_tool_calls(c, r, calls);
    } else { /* held back, and text after all */
        c->tools_text = 1;
        return 0;
    }
    stream_chunk(c, r, j, 0, 0, 0, 0, fin);
    return 1;
}

static void name_job(void *ctx, struct wreq *const *js, int n);

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
    int n_prompts = q->n_prompts > 0 ? q->n_prompts : 1;
    int n_jobs = n_prompts * q->p.n_seqs;
    if (c) {
        c->sent = calloc((size_t)n_jobs, sizeof *c->sent);
        c->sent_text = calloc((size_t)n_jobs, sizeof *c->sent_text);
        c->prompt_text = q->echo ? calloc((size_t)n_prompts, sizeof *c->prompt_text) : NULL;
        c->n_prompts = n_prompts;
    }
    if (!c || !c->sent || !c->sent_text || (q->echo && !c->prompt_text)) {
        oai_ctx_free(c);
        http_reply_error(r, 500, "internal", NULL, "out of memory");
        return NULL;
    }
    c->sv = sv, c->chat = q->chat;
    c->stream = q->stream;
    c->include_usage = q->include_usage;
    c->logprobs = q->logprobs;
    c->top_logprobs = q->top_logprobs;
    c->token_ids = q->token_ids;
    c->echo = q->echo;
    c->n_seqs = q->p.n_seqs;
    c->n_return = q->p.n_return;
    c->n_jobs = n_jobs;
    return c;
}

/* Name the completion once its jobs exist (job_start_*, before they run). */
static void name_job(void *ctx, struct wreq *const *js, int n) {
    (void)n;
    struct oai_ctx *c = ctx;
    snprintf(c->id, sizeof c->id, "%s-%llu", c->chat ? "chatcmpl" : "cmpl",
             (unsigned long long)js[0]->id);
    c->created = (long)time(NULL);
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
    if (!c || ep_tools_prepare(sv, r, &q, c)) goto out;
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
    const struct job_render *rd = c->stream ? &OAI_STREAM : &OAI_FULL;
    if (q.prompt || q.prompts) { /* text: tokenized off the loop thread */
        char **texts = q.prompts;
        if (!texts && (texts = malloc(sizeof *texts))) {
            texts[0] = q.prompt;
            q.prompt = NULL;
        }
        if (!texts) {
            http_reply_error(r, 500, "internal", NULL, "out of memory");
            goto out;
        }
        q.prompts = NULL;
        for (int i = 0; c->echo && i < c->n_prompts; i++) /* valid UTF-8 (reqparse) */
            if (!(c->prompt_text[i] = strdup(texts[i]))) {
                for (int k = 0; k < c->n_prompts; k++)
                    free(texts[k]);
                free(texts);
                http_reply_error(r, 500, "internal", NULL, "out of memory");
                goto out;
            }
        if (job_start_texts(sv, r, texts, c->n_prompts, 1, 1, &q.p, "prompt", rd, c) == 0) c = NULL;
        goto out;
    }
    /* token ids: only checked against the limits, which is quick */
    int *one = q.ids, **ids = q.id_lists ? q.id_lists : &one;
    int *lens = q.id_lists ? q.id_lens : &q.n_ids;
    struct wreq **js;
    int n = job_build_group(sv, r, ids, lens, c->n_prompts, &q.p, "prompt", &js);
    if (n < 0) goto out;
    for (int i = 0; c->echo && i < c->n_prompts; i++)
        c->prompt_text[i] = tokenizer_decode(sv->worker.info.tok, ids[i], lens[i], 0);
    name_job(c, js, n);
    if (job_run(sv, r, js, n, rd, c) == 0) c = NULL;
out:
    oai_ctx_free(c);
    reqparse_oai_free(&q);
}
