/* tools.c — OpenAI tool calling: request fields, tool messages, the forced-call grammar, output
 * parsing (see tools.h for the design). */
#include "tools.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "model/grammar.h"
#include "model/strbuf.h"
#include "server/utf8.h"

#define TOOLS_MAX 128        /* functions in one request (OpenAI's limit is 128) */
#define TOOLS_NAME_MAX 64    /* OpenAI: ^[a-zA-Z0-9_-]{1,64}$ */
#define TOOLS_MAX_CALLS 1000 /* calls in one assistant message */

static const char TAG_OPEN[] = "<tool_call>", TAG_CLOSE[] = "</tool_call>";

void tools_req_init(struct tools_req *t) {
    memset(t, 0, sizeof *t);
    t->parallel = 1;
}

void tools_req_free(struct tools_req *t) {
    if (!t) return;
    cJSON_Delete(t->tools);
    for (int i = 0; i < t->n_names; i++)
        free(t->names[i]);
    free(t->names);
    t->tools = NULL;
    t->names = NULL;
    t->n_names = 0;
    t->choice = TOOLS_CHOICE_NONE;
}

static int oom(struct reqparse_error *e) {
    e->status = 500;
    e->type = "internal";
    e->param[0] = 0;
    snprintf(e->message, sizeof e->message, "out of memory");
    return -1;
}

static const cJSON *get(const cJSON *obj, const char *name) {
    const cJSON *v = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static int valid_name(const char *s) {
    size_t n = strlen(s);
    if (n < 1 || n > TOOLS_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int find_name(const struct tools_req *t, const char *s) {
    for (int i = 0; i < t->n_names; i++)
        if (!strcmp(t->names[i], s)) return i;
    return -1;
}

/* ---- the request's fields ------------------------------------------------------------------ */

/* 1 when every key and string in V is valid UTF-8 (the list reaches the prompt as text). */
static int json_utf8(const cJSON *v) {
    if (v->string && !utf8_valid(v->string, strlen(v->string))) return 0;
    if (cJSON_IsString(v)) return utf8_valid(v->valuestring, strlen(v->valuestring));
    for (const cJSON *c = v->child; c; c = c->next)
        if (!json_utf8(c)) return 0;
    return 1;
}

/* tools: [{"type": "function", "function": {name, description?, parameters?, strict?}}]. */
static int parse_tools(const cJSON *v, struct tools_req *t, struct reqparse_error *e) {
    if (!cJSON_IsArray(v)) return reqparse_invalid(e, "tools", "`tools` must be an array");
    int n = cJSON_GetArraySize(v);
    if (n > TOOLS_MAX)
        return reqparse_invalid(e, "tools", "`tools` may hold at most %d functions (given %d)",
                                TOOLS_MAX, n);
    if (n == 0) return 0;
    if (!(t->names = calloc((size_t)n, sizeof *t->names))) return oom(e);
    int k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        const cJSON *ty = get(it, "type"), *fn = get(it, "function");
        if (!cJSON_IsObject(it) ||
            (ty && (!cJSON_IsString(ty) || strcmp(ty->valuestring, "function"))))
            return reqparse_invalid(e, "tools",
                                    "`tools[%d]` must be {\"type\": \"function\", \"function\": "
                                    "{...}}",
                                    k);
        if (!cJSON_IsObject(fn))
            return reqparse_invalid(e, "tools", "`tools[%d].function` must be an object", k);
        const cJSON *name = get(fn, "name"), *desc = get(fn, "description"),
                    *params = get(fn, "parameters");
        if (!cJSON_IsString(name) || !valid_name(name->valuestring))
            return reqparse_invalid(e, "tools",
                                    "`tools[%d].function.name` must be a string of 1 to %d "
                                    "letters, digits, '_' or '-'",
                                    k, TOOLS_NAME_MAX);
        if (find_name(t, name->valuestring) >= 0)
            return reqparse_invalid(e, "tools", "`tools[%d].function.name` \"%s\" is given twice",
                                    k, name->valuestring);
        if (desc &&
            (!cJSON_IsString(desc) || !utf8_valid(desc->valuestring, strlen(desc->valuestring))))
            return reqparse_invalid(e, "tools",
                                    "`tools[%d].function.description` must be a UTF-8 string", k);
        if (params && !cJSON_IsObject(params))
            return reqparse_invalid(
                e, "tools", "`tools[%d].function.parameters` must be a JSON Schema object", k);
        int strict = 0;
        if (reqparse_get_bool(fn, "strict", &strict, e)) {
            snprintf(e->param, sizeof e->param, "tools");
            return -1;
        }
        if (!(t->names[k] = strdup(name->valuestring))) return oom(e);
        t->n_names = ++k;
    }
    if (!json_utf8(v)) return reqparse_invalid(e, "tools", "`tools` is not valid UTF-8");
    if (!(t->tools = cJSON_Duplicate(v, 1))) return oom(e);
    return 0;
}

/* tool_choice: "none" | "auto" | "required" | {"type": "function", "function": {"name": ...}}. */
static int parse_choice(const cJSON *v, struct tools_req *t, struct reqparse_error *e) {
    t->choice = t->n_names ? TOOLS_CHOICE_AUTO : TOOLS_CHOICE_NONE;
    if (!v) return 0;
    if (cJSON_IsString(v)) {
        const char *s = v->valuestring;
        if (!strcmp(s, "none")) {
            t->choice = TOOLS_CHOICE_NONE;
            return 0;
        }
        if (!strcmp(s, "auto")) return 0;
        if (!strcmp(s, "required")) {
            if (!t->n_names)
                return reqparse_invalid(e, "tool_choice",
                                        "`tool_choice` \"required\" needs a non-empty `tools`");
            t->choice = TOOLS_CHOICE_REQUIRED;
            return 0;
        }
    } else if (cJSON_IsObject(v)) {
        const cJSON *ty = get(v, "type"), *fn = get(v, "function"), *name = get(fn, "name");
        if (cJSON_IsString(ty) && !strcmp(ty->valuestring, "function") && cJSON_IsString(name)) {
            int i = find_name(t, name->valuestring);
            if (i < 0)
                return reqparse_invalid(e, "tool_choice",
                                        "`tool_choice` names function \"%.64s\", which is not in "
                                        "`tools`",
                                        name->valuestring);
            t->choice = TOOLS_CHOICE_NAMED;
            t->named = i;
            return 0;
        }
    }
    return reqparse_invalid(e, "tool_choice",
                            "`tool_choice` must be \"none\", \"auto\", \"required\" or {\"type\": "
                            "\"function\", \"function\": {\"name\": ...}}");
}

/* ---- the forced-call grammar ---------------------------------------------------------------- */

/* Move SCHEMA's $defs / definitions into ROOT's (the wrapper is the document their "#/$defs/..."
 * pointers now resolve against). Two functions defining one name differently: a 422. */
static int hoist_defs(cJSON *root, cJSON *schema, struct reqparse_error *e) {
    static const char *const keys[] = {"$defs", "definitions"};
    for (int k = 0; k < 2; k++) {
        cJSON *defs = cJSON_DetachItemFromObjectCaseSensitive(schema, keys[k]);
        if (!defs) continue;
        if (!cJSON_IsObject(defs)) {
            cJSON_Delete(defs);
            return reqparse_invalid(e, "tools", "`%s` in a function's parameters must be an object",
                                    keys[k]);
        }
        cJSON *dst = cJSON_GetObjectItemCaseSensitive(root, keys[k]);
        if (!dst && !(dst = cJSON_AddObjectToObject(root, keys[k]))) {
            cJSON_Delete(defs);
            return oom(e);
        }
        while (defs->child) {
            cJSON *d = cJSON_DetachItemViaPointer(defs, defs->child);
            cJSON *old = cJSON_GetObjectItemCaseSensitive(dst, d->string);
            if (old) {
                int same = cJSON_Compare(old, d, 1);
                char nm[64];
                snprintf(nm, sizeof nm, "%s", d->string);
                cJSON_Delete(d);
                if (same) continue;
                cJSON_Delete(defs);
                return reqparse_invalid(e, "tools",
                                        "two functions define `%s/%s` differently (not supported "
                                        "with a forced tool_choice)",
                                        keys[k], nm);
            }
            cJSON_AddItemToObject(dst, d->string, d);
        }
        cJSON_Delete(defs);
    }
    return 0;
}

/* The schema of one call to function I: {"name": const, "arguments": its parameters}. */
static cJSON *call_schema(const struct tools_req *t, int i, cJSON *root, struct reqparse_error *e) {
    const cJSON *fn = get(cJSON_GetArrayItem(t->tools, i), "function");
    const cJSON *params = get(fn, "parameters");
    cJSON *s = cJSON_CreateObject();
    cJSON *props = cJSON_AddObjectToObject(s, "properties");
    cJSON *name = cJSON_AddObjectToObject(props, "name");
    cJSON *req = cJSON_AddArrayToObject(s, "required");
    /* no parameters: OpenAI's function without arguments, i.e. {} */
    cJSON *args = params ? cJSON_Duplicate(params, 1)
                         : cJSON_Parse("{\"type\":\"object\","
                                       "\"additionalProperties\":"
                                       "false}");
    if (!cJSON_AddStringToObject(s, "type", "object") || !props || !name || !req || !args ||
        !cJSON_AddStringToObject(name, "const", t->names[i]) ||
        !cJSON_AddItemToArray(req, cJSON_CreateString("name")) ||
        !cJSON_AddItemToArray(req, cJSON_CreateString("arguments")) ||
        !cJSON_AddFalseToObject(s, "additionalProperties")) {
        cJSON_Delete(args);
        cJSON_Delete(s);
        oom(e);
        return NULL;
    }
    cJSON_AddItemToObject(props, "arguments", args);
    if (hoist_defs(root, args, e)) {
        cJSON_Delete(s);
        return NULL;
    }
    return s;
}

/* The forced call's schema into P->grammar. */
static int build_grammar(const struct tools_req *t, struct job_params *p,
                         struct reqparse_error *e) {
    cJSON *root = cJSON_CreateObject(), *one = NULL;
    if (!root) return oom(e);
    int rc = -1;
    if (t->choice == TOOLS_CHOICE_NAMED) {
        if (!(one = call_schema(t, t->named, root, e))) goto out;
    } else {
        one = cJSON_CreateObject();
        cJSON *any = cJSON_AddArrayToObject(one, "anyOf");
        if (!any) {
            oom(e);
            goto out;
        }
        for (int i = 0; i < t->n_names; i++) {
            cJSON *c = call_schema(t, i, root, e);
            if (!c) goto out;
            cJSON_AddItemToArray(any, c);
        }
    }
    /* the call is the document's root, with the hoisted $defs */
    cJSON *body = one;
    one = NULL;
    for (cJSON *it = body->child; it;) {
        cJSON *next = it->next;
        cJSON_AddItemToObject(root, it->string, cJSON_DetachItemViaPointer(body, it));
        it = next;
    }
    cJSON_Delete(body);
    char msg[256], kw[64];
    p->grammar = grammar_from_json_schema(root, msg, sizeof msg, kw, sizeof kw);
    if (!p->grammar) {
        if (kw[0])
            reqparse_invalid(e, "tools",
                             "`tools`: a function's parameters cannot be enforced: %s "
                             "(unsupported: `%s`)",
                             msg, kw);
        else
            reqparse_invalid(e, "tools", "`tools`: a function's parameters: %s", msg);
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(one);
    cJSON_Delete(root);
    return rc;
}

int tools_parse(const cJSON *body, struct tools_req *t, struct job_params *p,
                struct reqparse_error *e) {
    tools_req_init(t);
    const cJSON *tools = get(body, "tools");
    if (tools && parse_tools(tools, t, e)) return -1;
    if (reqparse_get_bool(body, "parallel_tool_calls", &t->parallel, e) ||
        parse_choice(get(body, "tool_choice"), t, e))
        return -1;
    /* "none": no grammar and no call parsing, but the list stays for a template that takes
     * tools (vLLM hands it over too unless --exclude-tools-when-tool-choice-none; Hermes-style
     * templates iterate `tools` unconditionally). The Hermes rewrite leaves it out. */
    if (t->choice == TOOLS_CHOICE_NONE) return 0;
    if (t->choice == TOOLS_CHOICE_AUTO) return 0;
    if (p->grammar)
        return reqparse_invalid(e, "tool_choice",
                                "a forced `tool_choice` cannot be combined with `response_format` "
                                "json_object or json_schema");
    return build_grammar(t, p, e);
}

/* ---- tool messages -------------------------------------------------------------------------- */

/* One call of an assistant message into transformers' shape: {"id"?, "type": "function",
 * "function": {"name", "arguments": object}}; the OpenAI arguments string is parsed (a string
 * that is not a JSON object stays a string, as the client sent it). */
static cJSON *msg_call(const cJSON *c, int k, int i, struct reqparse_error *e) {
    const cJSON *id = get(c, "id"), *ty = get(c, "type"), *fn = get(c, "function");
    const cJSON *name = get(fn, "name"), *args = get(fn, "arguments");
    if (!cJSON_IsObject(c) || (id && !cJSON_IsString(id)) ||
        (id && !utf8_valid(id->valuestring, strlen(id->valuestring))) ||
        (cJSON_IsObject(args) && !json_utf8(args)) ||
        (ty && (!cJSON_IsString(ty) || strcmp(ty->valuestring, "function"))) ||
        !cJSON_IsString(name) || !utf8_valid(name->valuestring, strlen(name->valuestring)) ||
        (args && !cJSON_IsString(args) && !cJSON_IsObject(args)) ||
        (cJSON_IsString(args) && !utf8_valid(args->valuestring, strlen(args->valuestring)))) {
        reqparse_invalid(e, "messages",
                         "`messages[%d].tool_calls[%d]` must be {\"id\": str, \"type\": "
                         "\"function\", \"function\": {\"name\": str, \"arguments\": str}}",
                         k, i);
        return NULL;
    }
    cJSON *o = cJSON_CreateObject(), *f = NULL, *a = NULL;
    if (cJSON_IsString(args)) {
        a = cJSON_Parse(args->valuestring);
        if (!cJSON_IsObject(a)) {
            cJSON_Delete(a);
            a = cJSON_CreateString(args->valuestring);
        }
    } else {
        a = args ? cJSON_Duplicate(args, 1) : cJSON_CreateObject();
    }
    if (!o || !a || (id && !cJSON_AddStringToObject(o, "id", id->valuestring)) ||
        !cJSON_AddStringToObject(o, "type", "function") ||
        !(f = cJSON_AddObjectToObject(o, "function")) ||
        !cJSON_AddStringToObject(f, "name", name->valuestring)) {
        cJSON_Delete(a);
        cJSON_Delete(o);
        oom(e);
        return NULL;
    }
    cJSON_AddItemToObject(f, "arguments", a);
    return o;
}

static int dup_field(const cJSON *msg, const char *field, int k, const char **out,
                     struct reqparse_error *e) {
    const cJSON *v = get(msg, field);
    if (!v) return 0;
    if (!cJSON_IsString(v) || !utf8_valid(v->valuestring, strlen(v->valuestring)))
        return reqparse_invalid(e, "messages", "`messages[%d].%s` must be a UTF-8 string", k,
                                field);
    return (*out = strdup(v->valuestring)) ? 0 : oom(e);
}

int tools_parse_message(const cJSON *msg, int k, struct chat_msg *out, struct reqparse_error *e) {
    if (!strcmp(out->role, "tool")) {
        if (dup_field(msg, "tool_call_id", k, &out->tool_call_id, e) ||
            dup_field(msg, "name", k, &out->name, e))
            return -1;
        if (!out->tool_call_id)
            return reqparse_invalid(e, "messages", "`messages[%d].tool_call_id` is required", k);
        return 0;
    }
    const cJSON *tc = get(msg, "tool_calls");
    if (!tc || strcmp(out->role, "assistant")) return 0;
    if (!cJSON_IsArray(tc) || cJSON_GetArraySize(tc) > TOOLS_MAX_CALLS)
        return reqparse_invalid(e, "messages",
                                "`messages[%d].tool_calls` must be an array (of at most %d calls)",
                                k, TOOLS_MAX_CALLS);
    if (cJSON_GetArraySize(tc) == 0) return 0; /* [] is what some clients send for none */
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return oom(e);
    int i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, tc) {
        cJSON *o = msg_call(c, k, i++, e);
        if (!o) {
            cJSON_Delete(arr);
            return -1;
        }
        cJSON_AddItemToArray(arr, o);
    }
    out->tool_calls = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return out->tool_calls ? 0 : oom(e);
}

/* ---- messages for a template without tool support ------------------------------------------ */

char *tools_system_text(const struct tools_req *t) {
    struct strbuf b = {0};
    strbuf_str(&b, "You are a function calling AI model. You may call one or more of the following "
                   "functions to answer the user. Their signatures are within <tools></tools> XML "
                   "tags:\n<tools>");
    const cJSON *it;
    cJSON_ArrayForEach(it, t->tools) {
        char *s = cJSON_PrintUnformatted(it);
        if (!s) {
            strbuf_free(&b);
            return NULL;
        }
        strbuf_str(&b, "\n");
        strbuf_str(&b, s);
        free(s);
    }
    strbuf_str(&b,
               "\n</tools>\n\nFor each function call, return a JSON object with the function name "
               "and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
               "<function-name>, \"arguments\": <args-json-object>}\n</tool_call>\nFunction "
               "results are given back within <tool_response></tool_response> XML tags.");
    return strbuf_take(&b);
}

/* An assistant message's calls (transformers' shape, as JSON text) as Hermes text. */
static void calls_text(struct strbuf *b, const char *tool_calls) {
    cJSON *arr = cJSON_Parse(tool_calls);
    if (!arr) {
        b->oom = 1;
        return;
    }
    const cJSON *c;
    int first = 1;
    cJSON_ArrayForEach(c, arr) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "name",
                              cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(fn, "name"), 1));
        cJSON_AddItemToObject(
            o, "arguments", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(fn, "arguments"), 1));
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!s) {
            b->oom = 1;
            break;
        }
        strbuf_str(b, first ? "<tool_call>\n" : "\n<tool_call>\n");
        strbuf_str(b, s);
        strbuf_str(b, "\n</tool_call>");
        free(s);
        first = 0;
    }
    cJSON_Delete(arr);
}

int tools_adapt_messages(const struct tools_req *t, int takes_tools, struct chat_msg **msgs,
                         int *n) {
    if (takes_tools) { /* a null content as vLLM renders it (string content format): "" */
        for (int i = 0; i < *n; i++)
            if (!(*msgs)[i].content && !((*msgs)[i].content = strdup(""))) return -1;
        return 0;
    }
    const cJSON *tools = t->choice == TOOLS_CHOICE_NONE ? NULL : t->tools;
    int has_tool_fields = 0;
    for (int i = 0; i < *n; i++)
        if ((*msgs)[i].tool_calls || !strcmp((*msgs)[i].role, "tool")) has_tool_fields = 1;
    if (!tools && !has_tool_fields) return 0;
    struct chat_msg *in = *msgs, *out = calloc((size_t)*n + 1, sizeof *out);
    if (!out) return -1;
    int m = 0, i = 0;
    char *sys = tools ? tools_system_text(t) : NULL;
    if (tools && !sys) goto oom;
    if (sys) { /* into the first system message, or a new one */
        struct strbuf b = {0};
        if (*n > 0 && !strcmp(in[0].role, "system")) {
            strbuf_str(&b, in[0].content ? in[0].content : "");
            strbuf_str(&b, "\n\n");
            i = 1;
        }
        strbuf_str(&b, sys);
        free(sys);
        out[m].role = "system";
        if (!(out[m++].content = strbuf_take(&b))) goto oom;
    }
    for (; i < *n; i++) {
        struct strbuf b = {0};
        if (!strcmp(in[i].role, "tool")) { /* a run of tool results: one user message */
            for (; i < *n && !strcmp(in[i].role, "tool"); i++) {
                if (b.n) strbuf_str(&b, "\n");
                strbuf_str(&b, "<tool_response>\n");
                strbuf_str(&b, in[i].content ? in[i].content : "");
                strbuf_str(&b, "\n</tool_response>");
            }
            i--;
            out[m].role = "user";
        } else {
            if (in[i].content) strbuf_str(&b, in[i].content);
            if (in[i].tool_calls) {
                if (b.n) strbuf_str(&b, "\n");
                calls_text(&b, in[i].tool_calls);
            }
            out[m].role = in[i].role;
        }
        if (!(out[m++].content = strbuf_take(&b))) goto oom;
    }
    for (int k = 0; k < *n; k++)
        chat_msg_free_strings(&in[k]);
    free(in);
    *msgs = out;
    *n = m;
    return 0;
oom:
    for (int k = 0; k < m; k++)
        chat_msg_free_strings(&out[k]);
    free(out);
    return -1;
}

/* ---- the model's output --------------------------------------------------------------------- */

static const char *skip_ws(const char *s, const char *end) {
    while (s < end && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
        s++;
    return s;
}

void tools_call_id(char out[32]) {
    unsigned char r[12];
    if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        static _Thread_local unsigned long long x;
        x = x * 6364136223846793005ull + (unsigned long long)time(NULL) + 1442695040888963407ull;
        for (size_t i = 0; i < sizeof r; i++)
            r[i] = (unsigned char)(x >> (8 * (i % 8)));
    }
    memcpy(out, "call_", 5);
    for (size_t i = 0; i < sizeof r; i++)
        snprintf(out + 5 + 2 * i, 3, "%02x", r[i]);
}

/* Append the call O ({"name", "arguments" | "parameters"}) to CALLS in OpenAI's shape. 0, or -1
 * when O is not a call to one of T's functions. */
static int add_call(const struct tools_req *t, const cJSON *o, cJSON *calls) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(o, "arguments");
    if (!args) args = cJSON_GetObjectItemCaseSensitive(o, "parameters");
    if (!cJSON_IsObject(o) || !cJSON_IsString(name) || find_name(t, name->valuestring) < 0)
        return -1;
    cJSON *parsed = NULL;
    if (cJSON_IsString(args)) { /* some models write the arguments as a JSON string */
        parsed = cJSON_Parse(args->valuestring);
        args = parsed;
    }
    if (args && !cJSON_IsObject(args)) {
        cJSON_Delete(parsed);
        return -1;
    }
    char *a = args ? cJSON_PrintUnformatted(args) : strdup("{}");
    cJSON_Delete(parsed);
    cJSON *c = cJSON_CreateObject(), *f = NULL;
    char id[32];
    tools_call_id(id);
    if (!a || !c || !cJSON_AddStringToObject(c, "id", id) ||
        !cJSON_AddStringToObject(c, "type", "function") ||
        !(f = cJSON_AddObjectToObject(c, "function")) ||
        !cJSON_AddStringToObject(f, "name", name->valuestring) ||
        !cJSON_AddStringToObject(f, "arguments", a)) {
        free(a);
        cJSON_Delete(c);
        return -1;
    }
    free(a);
    cJSON_AddItemToArray(calls, c);
    return 0;
}

/* S[0..N) as JSON: a call object or a non-empty array of them, appended to CALLS. */
static int add_json_calls(const struct tools_req *t, const char *s, size_t n, cJSON *calls) {
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (!v) return -1;
    int rc = -1;
    if (skip_ws(end, s + n) != s + n) goto out;
    if (cJSON_IsArray(v)) {
        if (!cJSON_GetArraySize(v)) goto out;
        const cJSON *it;
        cJSON_ArrayForEach(it, v) {
            if (add_call(t, it, calls)) goto out;
        }
        rc = 0;
    } else {
        rc = add_call(t, v, calls);
    }
out:
    cJSON_Delete(v);
    return rc;
}

/* Expect the literal L at *P (advanced past it); 0 when TEXT ends first or differs. */
static int expect(const char *text, size_t len, size_t *p, const char *l) {
    size_t n = strlen(l);
    if (len - *p < n || memcmp(text + *p, l, n)) return 0;
    *p += n;
    return 1;
}

int tools_forced_head(const struct tools_req *t, const char *text, size_t len, size_t *args_at,
                      int *fn) {
    if (t->choice != TOOLS_CHOICE_REQUIRED && t->choice != TOOLS_CHOICE_NAMED) return 0;
    size_t p = 0;
    if (!expect(text, len, &p, "{\"name\":")) return 0;
    if (p < len && text[p] == ' ') p++;
    if (!expect(text, len, &p, "\"")) return 0;
    size_t name = p;
    while (p < len && text[p] != '"')
        p++;
    if (p == len || p - name > TOOLS_NAME_MAX) return 0;
    char nm[TOOLS_NAME_MAX + 1];
    memcpy(nm, text + name, p - name);
    nm[p - name] = 0;
    p++;
    if (!expect(text, len, &p, ",")) return 0;
    if (p < len && text[p] == ' ') p++;
    if (!expect(text, len, &p, "\"arguments\":") || p == len) return 0;
    if (text[p] == ' ') p++;
    if (p == len || (*fn = find_name(t, nm)) < 0) return 0;
    *args_at = p;
    return 1;
}

/* A forced call as the grammar wrote it: the arguments are the model's own text (what the stream
 * sent), not a re-serialization. NULL when TEXT is not that shape. */
static cJSON *forced_call(const struct tools_req *t, const char *text, size_t len) {
    size_t at;
    int fn;
    if (!tools_forced_head(t, text, len, &at, &fn) || text[len - 1] != '}' || len - 1 <= at)
        return NULL;
    char *args = strndup(text + at, len - 1 - at);
    if (!args) return NULL;
    const char *end = NULL;
    cJSON *a = cJSON_ParseWithOpts(args, &end, 1);
    int ok = cJSON_IsObject(a);
    cJSON_Delete(a);
    cJSON *calls = ok ? cJSON_CreateArray() : NULL, *c = cJSON_CreateObject(), *f = NULL;
    char id[32];
    tools_call_id(id);
    if (!calls || !c || !cJSON_AddStringToObject(c, "id", id) ||
        !cJSON_AddStringToObject(c, "type", "function") ||
        !(f = cJSON_AddObjectToObject(c, "function")) ||
        !cJSON_AddStringToObject(f, "name", t->names[fn]) ||
        !cJSON_AddStringToObject(f, "arguments", args)) {
        free(args);
        cJSON_Delete(c);
        cJSON_Delete(calls);
        return NULL;
    }
    free(args);
    cJSON_AddItemToArray(calls, c);
    return calls;
}

cJSON *tools_parse_output(const struct tools_req *t, const char *text, size_t len) {
    if (t->choice == TOOLS_CHOICE_NONE || !t->n_names) return NULL;
    const char *end = text + len, *s = skip_ws(text, end);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
        end--;
    cJSON *calls = forced_call(t, s, (size_t)(end - s));
    if (calls) return calls;
    if (!(calls = cJSON_CreateArray())) return NULL;
    size_t lo = sizeof TAG_OPEN - 1, lc = sizeof TAG_CLOSE - 1;
    if ((size_t)(end - s) >= lo && !memcmp(s, TAG_OPEN, lo)) {
        /* <tool_call>JSON</tool_call> blocks with only whitespace between them; the last may
         * lack its closing tag (generation ended on a stop or end token there) */
        while (s < end) {
            if ((size_t)(end - s) < lo || memcmp(s, TAG_OPEN, lo)) goto text;
            s += lo;
            const char *close = memmem(s, (size_t)(end - s), TAG_CLOSE, lc);
            const char *body_end = close ? close : end;
            if (add_json_calls(t, s, (size_t)(body_end - s), calls)) goto text;
            s = close ? skip_ws(close + lc, end) : end;
        }
        return calls;
    }
    if (s < end && (*s == '{' || *s == '[') && add_json_calls(t, s, (size_t)(end - s), calls) == 0)
        return calls;
text:
    cJSON_Delete(calls);
    return NULL;
}

int tools_stream_hold(const struct tools_req *t, const char *text, size_t len) {
    if (t->choice == TOOLS_CHOICE_REQUIRED || t->choice == TOOLS_CHOICE_NAMED) return 1;
    if (t->choice == TOOLS_CHOICE_NONE) return 0;
    const char *end = text + len, *s = skip_ws(text, end);
    size_t n = (size_t)(end - s), lo = sizeof TAG_OPEN - 1;
    if (n == 0) return 1;
    if (*s == '{' || *s == '[') return 1;
    return !memcmp(s, TAG_OPEN, n < lo ? n : lo); /* a prefix of the tag, or the tag */
}
