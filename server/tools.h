/* tools.h — OpenAI tool calling on /v1/chat/completions: the request's `tools`, `tool_choice`
 * and `parallel_tool_calls`; the messages of a tool conversation (assistant `tool_calls`, role
 * `tool`) in the shape transformers' apply_chat_template takes; the grammar that forces a call;
 * and the model's output read back into `tool_calls`.
 *
 * The design choice: a template that renders tools itself (its source reads `tools`: Qwen2.5,
 * Hermes, Llama 3.1/3.2, Mistral v0.3) gets the list and the messages as transformers passes
 * them (arguments as objects, as vLLM converts them); any other template (SmolLM2, Gemma) gets
 * the Hermes convention written into the conversation instead: a system message listing the
 * tools in <tools></tools> and asking for <tool_call>{"name", "arguments"}</tool_call>, earlier
 * calls as that text in the assistant's content, and tool results as a user message in
 * <tool_response></tool_response>, so that every template (also those that insist on
 * user/assistant alternation) can render the conversation.
 *
 * tool_choice "required" or a named function constrains the output with a JSON-Schema grammar
 * (model/grammar.h) to one call {"name": const, "arguments": its parameters}, an anyOf over the
 * functions for "required". One call, not an array of them: a grammar cannot tell a small model
 * when to stop, and SmolLM2 given an array repeats the same call until max_tokens (tried on the
 * real model). Parallel calls come from "auto" (several <tool_call> blocks). "auto" leaves the
 * model free; its output is a
 * call when (after leading whitespace) it starts with <tool_call> and every block parses, or when
 * the whole output is a JSON call object or an array of them (tools_parse_output); otherwise it
 * is text. Pure functions; any thread.
 */
#ifndef FG_TOOLS_H
#define FG_TOOLS_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "server/reqparse.h"

enum tools_choice {
    TOOLS_CHOICE_NONE = 0, /* no tools, "none" (TOOLS kept for the template), or none given */
    TOOLS_CHOICE_AUTO,
    TOOLS_CHOICE_REQUIRED,
    TOOLS_CHOICE_NAMED,
};

struct tools_req {
    enum tools_choice choice;
    cJSON *tools; /* the validated `tools` array (for the template and the system message), or
                     NULL when there are none; owned. With CHOICE NONE it still goes to a
                     template that takes tools (as vLLM passes it), never to the Hermes rewrite */
    char **names; /* (n_names) the functions' names, malloc'd */
    int n_names;
    int named;    /* TOOLS_CHOICE_NAMED: index into NAMES */
    int parallel; /* parallel_tool_calls (default 1): accepted; a forced call is one call */
};

void tools_req_init(struct tools_req *t);
void tools_req_free(struct tools_req *t); /* accepts an initialised or half-filled T */

/* Read BODY's tools, tool_choice and parallel_tool_calls into T (initialised here). For a forced
 * call the grammar goes into P->grammar (a request that already has one from response_format is
 * refused on tool_choice). Returns 0, or -1 with ERR (422 naming the field, 500 out of memory). */
int tools_parse(const cJSON *body, struct tools_req *t, struct job_params *p,
                struct reqparse_error *err);

/* The tool fields of messages[K] (MSG) into OUT: an assistant message's tool_calls (validated,
 * then kept as JSON text in transformers' shape), a tool message's tool_call_id (required) and
 * name. Returns 0, or -1 with ERR (422 on "messages"). */
int tools_parse_message(const cJSON *msg, int k, struct chat_msg *out, struct reqparse_error *err);

/* Make the messages renderable by a template (TAKES_TOOLS: chat_template_takes_tools). A template
 * that takes tools gets them unchanged but for a null content, which becomes "" (as vLLM's
 * string content format renders it: `message.content.split(...)` works); for any other, *MSGS (N,
 * owned, strings malloc'd) is replaced by the Hermes rewrite described above, with the tool list's
 * system message when T has tools and tool_choice is not "none". Returns 0, or -1 when out of
 * memory (*MSGS unchanged then). */
int tools_adapt_messages(const struct tools_req *t, int takes_tools, struct chat_msg **msgs,
                         int *n);

/* The model's output TEXT[0..LEN) as OpenAI tool_calls ([{"id": "call_...", "type": "function",
 * "function": {"name", "arguments": a JSON string}}]) when it is a call to T's functions by the
 * rule above; NULL when it is text (or T has no tools). A forced call's arguments are the
 * model's text as written; calls found by the "auto" rule are re-serialized compactly. */
cJSON *tools_parse_output(const struct tools_req *t, const char *text, size_t len);

/* A forced call's head in the output so far, TEXT[0..LEN) ({"name": "N", "arguments": as the
 * grammar writes it, and at least one byte after it): 1 with *ARGS_AT where the arguments start
 * and *FN the function's index; 0 while incomplete (or not a forced call). The arguments are
 * then TEXT[*ARGS_AT..) up to the call's closing '}', its last byte once complete: a stream may
 * send all but the last byte as it comes. */
int tools_forced_head(const struct tools_req *t, const char *text, size_t len, size_t *args_at,
                      int *fn);
/* A new call id: "call_" and 24 random hex digits (OpenAI's ids are opaque; clients only echo
 * them back). */
void tools_call_id(char out[32]);

/* Streaming: 1 while the output so far (TEXT[0..LEN)) may still become a call, so nothing of it
 * may be sent as content yet (always 1 for a forced call, whose arguments stream through
 * tools_forced_head instead); 0 once it is text. */
int tools_stream_hold(const struct tools_req *t, const char *text, size_t len);

/* The system-message text that describes T's tools to a template without tool support
 * (malloc'd), or NULL when out of memory. */
char *tools_system_text(const struct tools_req *t);

#endif
