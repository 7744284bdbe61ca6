/* jinja.h — a Jinja subset interpreter for chat templates: parse once, render per request.
 *
 * Covers what real chat templates use (Llama, Mistral, Qwen, Gemma, Phi, DeepSeek, SmolLM2...):
 * for/if/set (namespace objects), macros, break/continue, {% generation %}, whitespace control,
 * the expression grammar, tests, filters and string/dict methods of Jinja 3.1, with the options
 * transformers' apply_chat_template uses (trim_blocks, lstrip_blocks, its tojson, raise_exception,
 * strftime_now). Rendering is bounded: output bytes, loop iterations and memory.
 * Any thread may call these; a parsed template is read-only and may be rendered concurrently.
 */
#ifndef FG_JINJA_H
#define FG_JINJA_H

#include <cjson/cJSON.h>
#include <stddef.h>

struct jinja_template;

enum jinja_status {
    JINJA_OK = 0,
    JINJA_ERR_SYNTAX = -1, /* jinja_parse: err says "line L, column C: ..." */
    JINJA_ERR_RENDER = -2, /* jinja_render: the template failed for these variables (an undefined
                              attribute, a type error, raise_exception, a limit): err says why */
    JINJA_ERR_NOMEM = -3,
};

/* Parse SRC (LEN bytes) into *OUT. Returns JINJA_OK, JINJA_ERR_SYNTAX or JINJA_ERR_NOMEM. */
int jinja_parse(const char *src, size_t len, struct jinja_template **out, char *err, size_t errlen);
void jinja_free(struct jinja_template *t);

struct jinja_limits {
    size_t max_output; /* bytes of rendered text (0: 16 MiB) */
    long max_steps;    /* loop iterations + macro calls (0: 1,000,000) */
    size_t max_memory; /* bytes of working memory for values (0: 256 MiB) */
};

/* Render T with the variables of the JSON object VARS (NULL: none). LIM may be NULL. On
 * JINJA_OK *OUT is a malloc'd NUL-terminated string of *OUT_LEN bytes (OUT_LEN may be NULL).
 * When the template calls raise_exception(msg), err holds exactly msg. */
int jinja_render(const struct jinja_template *t, const cJSON *vars, const struct jinja_limits *lim,
                 char **out, size_t *out_len, char *err, size_t errlen);

#endif
