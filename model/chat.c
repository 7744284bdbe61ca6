/* chat.c — chat templates: render messages into the prompt text a model was trained on.
 *
 * flashgen does not run Jinja. It recognises the two template families it serves from the
 * model's Jinja source and renders them in C:
 *   ChatML  (SmolLM2, Qwen)  <|im_start|>ROLE\nCONTENT<|im_end|>\n ...  [<|im_start|>assistant\n]
 *   Llama-3                  <|begin_of_text|><|start_header_id|>ROLE<|end_header_id|>\n\n
 *                            CONTENT<|eot_id|> ...
 * [<|start_header_id|>assistant<|end_header_id|>\n\n] A ChatML template that injects a default
 * system message when the first message is not a system one (SmolLM2: "You are a helpful AI
 * assistant named SmolLM, trained by Hugging Face", in its GGUF's tokenizer.chat_template; Qwen2
 * likewise) has that text taken from its string literal
 * '<|im_start|>system\n...<|im_end|>' in the source, so the default always matches the file.
 * A source of neither family is not an error: plain ChatML stands in, and chat_template_init says
 * so for the caller to log (a model always loads; raw /generate needs no template).
 */
#include "model/tokenizer.h"
#include "errmsg.h"

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

int chat_template_init(struct chat_template *ct, const char *jinja, char *err, size_t errlen) {
    memset(ct, 0, sizeof(*ct));
    ct->kind = CHAT_KIND_CHATML;
    if (!jinja) return 0;
    if (strstr(jinja, "<|start_header_id|>")) {
        ct->kind = CHAT_KIND_LLAMA3;
        if (strstr(jinja, "bos_token") || strstr(jinja, "<|begin_of_text|>")) {
            ct->bos_text = strdup("<|begin_of_text|>");
            if (!ct->bos_text) goto oom;
        }
        ct->trim_content = strstr(jinja, "| trim") || strstr(jinja, "|trim");
        return 0;
    }
    if (strstr(jinja, "<|im_start|>")) {
        ct->default_system = chatml_default_system(jinja);
        return 0;
    }
    errmsg_set(err, errlen,
               "unrecognised chat template (neither ChatML <|im_start|> nor Llama-3 "
               "<|start_header_id|>): chat requests are rendered as ChatML");
    return 1;
oom:
    errmsg_set(err, errlen, "chat template: out of memory");
    return -1;
}

void chat_template_free(struct chat_template *ct) {
    if (!ct) return;
    free(ct->default_system);
    free(ct->bos_text);
    ct->default_system = ct->bos_text = NULL;
}

struct buf {
    char *p;
    size_t n, cap;
    int oom;
};

static void buf_add(struct buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t c = 2 * (b->n + n) + 256;
        char *np = realloc(b->p, c);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void buf_str(struct buf *b, const char *s) {
    buf_add(b, s, strlen(s));
}

/* Jinja's trim (Python str.strip) for ASCII whitespace. */
static void buf_trimmed(struct buf *b, const char *s) {
    size_t n = strlen(s);
    while (n > 0 && strchr(" \t\n\r\v\f", s[n - 1]))
        n--;
    while (n > 0 && strchr(" \t\n\r\v\f", *s)) {
        s++;
        n--;
    }
    buf_add(b, s, n);
}

char *chat_template_apply(const struct chat_template *ct, const struct chat_msg *msgs, int n_msgs,
                          int add_generation_prompt) {
    struct buf b = {0};
    buf_add(&b, "", 0);
    if (ct->kind == CHAT_KIND_LLAMA3) {
        if (ct->bos_text) buf_str(&b, ct->bos_text);
        for (int i = 0; i < n_msgs; i++) {
            buf_str(&b, "<|start_header_id|>");
            buf_str(&b, msgs[i].role ? msgs[i].role : "user");
            buf_str(&b, "<|end_header_id|>\n\n");
            const char *c = msgs[i].content ? msgs[i].content : "";
            if (ct->trim_content)
                buf_trimmed(&b, c);
            else
                buf_str(&b, c);
            buf_str(&b, "<|eot_id|>");
        }
        if (add_generation_prompt) buf_str(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    } else {
        if (ct->default_system && n_msgs > 0 &&
            (!msgs[0].role || strcmp(msgs[0].role, "system") != 0)) {
            buf_str(&b, "<|im_start|>system\n");
            buf_str(&b, ct->default_system);
            buf_str(&b, "<|im_end|>\n");
        }
        for (int i = 0; i < n_msgs; i++) {
            buf_str(&b, "<|im_start|>");
            buf_str(&b, msgs[i].role ? msgs[i].role : "user");
            buf_str(&b, "\n");
            buf_str(&b, msgs[i].content ? msgs[i].content : "");
            buf_str(&b, "<|im_end|>\n");
        }
        if (add_generation_prompt) buf_str(&b, "<|im_start|>assistant\n");
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
