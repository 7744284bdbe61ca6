/* chat.c — chat templates: render messages into the prompt text a model was trained on.
 *
 * The model's own Jinja template (GGUF tokenizer.chat_template, or tokenizer_config.json's
 * chat_template) is parsed once at load by model/jinja.h's interpreter and rendered per request
 * with the variables transformers' apply_chat_template passes: messages, tools (the request's
 * list, or None), documents (None), add_generation_prompt, bos_token and eos_token. A template that
 * fails for a request is that request's error (a 422 with the template's message), never a silent
 * fallback.
 *
 * Only a model without a template, or whose template does not parse, gets a hand-written
 * renderer, picked from the source's markers:
 *   ChatML  (SmolLM2, Qwen)  <|im_start|>ROLE\nCONTENT<|im_end|>\n ...  [<|im_start|>assistant\n]
 *   Llama-3                  <|begin_of_text|><|start_header_id|>ROLE<|end_header_id|>\n\n
 *                            CONTENT<|eot_id|> ...
 * [<|start_header_id|>assistant<|end_header_id|>\n\n] A ChatML source that injects a default system
 * message (SmolLM2, Qwen2) has that text taken from its string literal
 * '<|im_start|>system\n...<|im_end|>', so the default matches the file.
 */
#include "model/tokenizer.h"
#include "errmsg.h"
#include "model/jinja.h"
#include "model/strbuf.h"

#include <cjson/cJSON.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The Jinja string literal whose opening quote is at Q, unescaped into a malloc'd string (Python
 * escapes \n \t \r \\ \' \"), or NULL when it does not close. */
static char *jinja_literal(const char *q) {
    char quote = *q;
    const char *p = q + 1;
    size_t n = 0;
    while (p[n] && p[n] != quote)
        n += p[n] == '\\' && p[n + 1] ? 2 : 1;
    if (p[n] != quote) return NULL;
    char *out = malloc(n + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char e = p[++i];
            c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
        }
        *o++ = c;
    }
    *o = '\0';
    return out;
}

/* Default system prompt of a ChatML template: the text of the first string literal
 * '<|im_start|>system\n' TEXT '<|im_end|>...' in JINJA, or NULL. */
static char *chatml_default_system(const char *jinja) {
    static const char head[] = "<|im_start|>system\n", tail[] = "<|im_end|>";
    for (const char *p = strstr(jinja, "<|im_start|>system"); p;
         p = strstr(p + 1, "<|im_start|>system")) {
        if (p == jinja || (p[-1] != '\'' && p[-1] != '"')) continue;
        char *lit = jinja_literal(p - 1);
        if (!lit) continue;
        char *end = strstr(lit, tail);
        if (strncmp(lit, head, sizeof(head) - 1) == 0 && end) {
            size_t n = (size_t)(end - lit) - (sizeof(head) - 1);
            memmove(lit, lit + sizeof(head) - 1, n);
            lit[n] = '\0';
            return lit;
        }
        free(lit);
    }
    return NULL;
}

/* The fallback renderer for SRC (NULL: plain ChatML). Returns 0, or -1 when out of memory. */
static int fallback_init(struct chat_template *ct, const char *jinja) {
    ct->kind = CHAT_KIND_CHATML;
    if (!jinja) return 0;
    if (strstr(jinja, "<|start_header_id|>")) {
        ct->kind = CHAT_KIND_LLAMA3;
        if (strstr(jinja, "bos_token") || strstr(jinja, "<|begin_of_text|>")) {
            ct->bos_text = strdup("<|begin_of_text|>");
            if (!ct->bos_text) return -1;
        }
        ct->trim_content = strstr(jinja, "| trim") || strstr(jinja, "|trim");
        return 0;
    }
    if (strstr(jinja, "<|im_start|>")) ct->default_system = chatml_default_system(jinja);
    return 0;
}

int chat_template_init_tokens(struct chat_template *ct, const char *jinja, const char *bos_token,
                              const char *eos_token, char *err, size_t errlen) {
    memset(ct, 0, sizeof(*ct));
    if ((bos_token && !(ct->bos_token = strdup(bos_token))) ||
        (eos_token && !(ct->eos_token = strdup(eos_token))))
        goto oom;
    if (!jinja) {
        snprintf(ct->fallback_why, sizeof ct->fallback_why, "the model has no chat template");
        return fallback_init(ct, NULL) ? (chat_template_free(ct), -1) : 0;
    }
    char why[400];
    int rc = jinja_parse(jinja, strlen(jinja), &ct->jinja, why, sizeof why);
    if (rc == JINJA_OK) {
        ct->kind = CHAT_KIND_JINJA;
        ct->takes_tools = strstr(jinja, "tools") != NULL;
        return 0;
    }
    if (rc == JINJA_ERR_NOMEM) goto oom;
    if (fallback_init(ct, jinja)) goto oom;
    snprintf(ct->fallback_why, sizeof ct->fallback_why, "its chat template does not parse");
    errmsg_set(err, errlen,
               "chat template does not parse (%s): chat requests are rendered as %s instead", why,
               chat_template_kind_name(ct));
    return 1;
oom:
    chat_template_free(ct);
    errmsg_set(err, errlen, "chat template: out of memory");
    return -1;
}

int chat_template_init(struct chat_template *ct, const char *jinja, char *err, size_t errlen) {
    return chat_template_init_tokens(ct, jinja, NULL, NULL, err, errlen);
}

int chat_template_init_model(struct chat_template *ct, const char *jinja,
                             const struct tokenizer *tok, char *err, size_t errlen) {
    int bos = tok ? tokenizer_bos(tok) : -1, eos = tok ? tokenizer_eos(tok) : -1;
    return chat_template_init_tokens(ct, jinja, bos >= 0 ? tokenizer_token_text(tok, bos) : NULL,
                                     eos >= 0 ? tokenizer_token_text(tok, eos) : NULL, err, errlen);
}

void chat_template_free(struct chat_template *ct) {
    if (!ct) return;
    jinja_free(ct->jinja);
    free(ct->default_system);
    free(ct->bos_text);
    free(ct->bos_token);
    free(ct->eos_token);
    ct->jinja = NULL;
    ct->default_system = ct->bos_text = ct->bos_token = ct->eos_token = NULL;
}

const char *chat_template_kind_name(const struct chat_template *ct) {
    return ct->kind == CHAT_KIND_JINJA    ? "jinja"
           : ct->kind == CHAT_KIND_LLAMA3 ? "llama3"
                                          : "chatml";
}

/* Jinja's trim (Python str.strip) for ASCII whitespace. */
static void add_trimmed(struct strbuf *b, const char *s) {
    size_t n = strlen(s);
    while (n > 0 && strchr(" \t\n\r\v\f", s[n - 1]))
        n--;
    while (n > 0 && strchr(" \t\n\r\v\f", *s)) {
        s++;
        n--;
    }
    strbuf_add(b, s, n);
}

/* The hand-written fallback renderers. */
static char *fallback_render(const struct chat_template *ct, const struct chat_msg *msgs,
                             int n_msgs, int add_generation_prompt) {
    struct strbuf b = {0};
    if (ct->kind == CHAT_KIND_LLAMA3) {
        if (ct->bos_text) strbuf_str(&b, ct->bos_text);
        for (int i = 0; i < n_msgs; i++) {
            strbuf_str(&b, "<|start_header_id|>");
            strbuf_str(&b, msgs[i].role ? msgs[i].role : "user");
            strbuf_str(&b, "<|end_header_id|>\n\n");
            const char *c = msgs[i].content ? msgs[i].content : "";
            if (ct->trim_content)
                add_trimmed(&b, c);
            else
                strbuf_str(&b, c);
            strbuf_str(&b, "<|eot_id|>");
        }
        if (add_generation_prompt)
            strbuf_str(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    } else {
        if (ct->default_system && n_msgs > 0 &&
            (!msgs[0].role || strcmp(msgs[0].role, "system") != 0)) {
            strbuf_str(&b, "<|im_start|>system\n");
            strbuf_str(&b, ct->default_system);
            strbuf_str(&b, "<|im_end|>\n");
        }
        for (int i = 0; i < n_msgs; i++) {
            strbuf_str(&b, "<|im_start|>");
            strbuf_str(&b, msgs[i].role ? msgs[i].role : "user");
            strbuf_str(&b, "\n");
            strbuf_str(&b, msgs[i].content ? msgs[i].content : "");
            strbuf_str(&b, "<|im_end|>\n");
        }
        if (add_generation_prompt) strbuf_str(&b, "<|im_start|>assistant\n");
    }
    return strbuf_take(&b);
}

void chat_msg_free_strings(struct chat_msg *m) {
    free((char *)m->content);
    free((char *)m->tool_calls);
    free((char *)m->tool_call_id);
    free((char *)m->name);
    m->content = m->tool_calls = m->tool_call_id = m->name = NULL;
}

int chat_template_takes_tools(const struct chat_template *ct) {
    return ct->kind == CHAT_KIND_JINJA && ct->takes_tools;
}

/* One message as transformers passes it: role, content (None when NULL), and the tool fields
 * that are set (tool_calls parsed from its JSON text). */
static cJSON *render_msg(const struct chat_msg *msg) {
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "role", msg->role ? msg->role : "user") ||
        !(msg->content ? cJSON_AddStringToObject(o, "content", msg->content)
                       : cJSON_AddNullToObject(o, "content")) ||
        (msg->tool_call_id && !cJSON_AddStringToObject(o, "tool_call_id", msg->tool_call_id)) ||
        (msg->name && !cJSON_AddStringToObject(o, "name", msg->name)))
        goto oom;
    if (msg->tool_calls) {
        cJSON *tc = cJSON_Parse(msg->tool_calls);
        if (!tc || !cJSON_AddItemToObject(o, "tool_calls", tc)) {
            cJSON_Delete(tc);
            goto oom;
        }
    }
    return o;
oom:
    cJSON_Delete(o);
    return NULL;
}

/* The variables apply_chat_template passes, as JSON for jinja_render. */
static cJSON *render_vars(const struct chat_template *ct, const struct chat_msg *msgs, int n_msgs,
                          const cJSON *tools, int add_generation_prompt) {
    cJSON *v = cJSON_CreateObject(), *m = cJSON_AddArrayToObject(v, "messages");
    if (!m) goto oom;
    for (int i = 0; i < n_msgs; i++) {
        cJSON *o = render_msg(&msgs[i]);
        if (!o || !cJSON_AddItemToArray(m, o)) {
            cJSON_Delete(o);
            goto oom;
        }
    }
    cJSON *t = tools ? cJSON_Duplicate(tools, 1) : cJSON_CreateNull();
    if (!t || !cJSON_AddItemToObject(v, "tools", t)) {
        cJSON_Delete(t);
        goto oom;
    }
    if (!cJSON_AddNullToObject(v, "documents") ||
        !cJSON_AddBoolToObject(v, "add_generation_prompt", add_generation_prompt) ||
        (ct->bos_token && !cJSON_AddStringToObject(v, "bos_token", ct->bos_token)) ||
        (ct->eos_token && !cJSON_AddStringToObject(v, "eos_token", ct->eos_token)))
        goto oom;
    return v;
oom:
    cJSON_Delete(v);
    return NULL;
}

/* Bounds on one chat render: the prompt is tokenized and checked against max_input_tokens next,
 * so 16 MiB of text is far past any context; steps stop a template that loops for ever. */
static const struct jinja_limits CHAT_LIMITS = {
    .max_output = 16u << 20, .max_steps = 1000000, .max_memory = 256u << 20};

int chat_template_render(const struct chat_template *ct, const struct chat_msg *msgs, int n_msgs,
                         int add_generation_prompt, char **out, char *err, size_t errlen) {
    return chat_template_render_tools(ct, msgs, n_msgs, NULL, add_generation_prompt, out, err,
                                      errlen);
}

int chat_template_render_tools(const struct chat_template *ct, const struct chat_msg *msgs,
                               int n_msgs, const cJSON *tools, int add_generation_prompt,
                               char **out, char *err, size_t errlen) {
    *out = NULL;
    if (ct->kind != CHAT_KIND_JINJA) {
        *out = fallback_render(ct, msgs, n_msgs, add_generation_prompt);
        if (*out) return 0;
        errmsg_set(err, errlen, "chat template: out of memory");
        return -1;
    }
    cJSON *vars = render_vars(ct, msgs, n_msgs, tools, add_generation_prompt);
    if (!vars) {
        errmsg_set(err, errlen, "chat template: out of memory");
        return -1;
    }
    int rc = jinja_render(ct->jinja, vars, &CHAT_LIMITS, out, NULL, err, errlen);
    cJSON_Delete(vars);
    return rc == JINJA_OK ? 0 : rc == JINJA_ERR_NOMEM ? -1 : 1;
}

char *chat_template_apply(const struct chat_template *ct, const struct chat_msg *msgs, int n_msgs,
                          int add_generation_prompt) {
    char *out, err[256];
    return chat_template_render(ct, msgs, n_msgs, add_generation_prompt, &out, err, sizeof err)
               ? NULL
               : out;
}
