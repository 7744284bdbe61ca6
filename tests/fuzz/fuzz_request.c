/* fuzz_request.c — libFuzzer target: arbitrary bytes as the body of every generation route.
 *
 * Each input goes through all five parsers (server/reqparse.h): POST /generate, /generate_stream
 * and / (TGI), /v1/completions and /v1/chat/completions, with the default stop-sequence limit.
 * Whatever the bytes, a parser returns 0 with parameters the engine can run (strings valid
 * UTF-8 and non-empty where required, floats the sampler reads as finite, counts inside their
 * limits), or -1 with an error the endpoint can send (400/422/500, a type, a message); the
 * result's free releases it all (LeakSanitizer checks). The raw bytes also go through the UTF-8
 * repair (server/utf8.h), which must always give valid UTF-8. No server: libuv and libmicrohttpd
 * are not linked. Chat bodies also go through the tool-calling checks (check_tools), with the
 * body's bytes doubling as a model output for the tool-call reader.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/reqparse.h"
#include "server/tools.h"
#include "server/utf8.h"

static const struct reqparse_limits LIM = {.max_stop_sequences = 4};

static void check_text(const char *s, int empty_ok) {
    if (!s || (!empty_ok && !*s) || !utf8_valid(s, strlen(s))) abort();
}

static void check_params(const struct job_params *p) {
    const struct sampler_params *sp = &p->sp;
    if (p->max_new != -1 && (p->max_new < 1 || p->max_new > (1 << 24))) abort();
    if (!(sp->temperature >= FLT_MIN && sp->temperature <= 1e30f)) abort();
    if (!(sp->top_p > 0 && sp->top_p <= 1)) abort();
    float pen = sp->repetition_penalty;
    if (!(pen > 0) || !isfinite(1e30f / pen) || !isfinite(1e30f * pen)) abort();
    if (sp->top_k < 0 || p->truncate < 0) abort();
    if (p->n_stop < 0 || p->n_stop > LIM.max_stop_sequences || (p->n_stop && !p->stop)) abort();
    for (int i = 0; i < p->n_stop; i++)
        check_text(p->stop[i], 0);
}

static void check_error(const struct reqparse_error *e) {
    if (e->status != 400 && e->status != 422 && e->status != 500) abort();
    if (!e->type || !e->message[0]) abort();
    if (e->status == 422 && !e->param[0]) abort(); /* a validation error names its field */
}

/* server/utf8 on the raw bytes: the repair is valid UTF-8 and keeps the valid prefix. */
static void check_utf8(const char *s, size_t n) {
    size_t p = utf8_valid_prefix(s, n), m;
    char *r = utf8_sanitize(s, n, &m);
    if (!r || !utf8_valid(r, m) || m < p || memcmp(r, s, p) || r[m]) abort();
    if (utf8_valid(s, n) != (p == n) || (p == n && (m != n || memcmp(r, s, n)))) abort();
    free(r);
}

/* A parsed chat's tool state (server/tools.h): a choice with its tools and names, a grammar
 * exactly for a forced call; the messages rewritten for a template without tools are all plain
 * valid text; and the raw bytes read as model output give either nothing or calls with ids,
 * known names and arguments that are a JSON object. */
static void check_tools(struct reqparse_oai *o, const char *body, size_t size) {
    const struct tools_req *t = o->tools;
    if (!t) abort();
    if ((t->choice == TOOLS_CHOICE_NONE) != (t->tools == NULL)) abort();
    if (t->choice != TOOLS_CHOICE_NONE && t->n_names < 1) abort();
    int forced = t->choice == TOOLS_CHOICE_REQUIRED || t->choice == TOOLS_CHOICE_NAMED;
    if (forced && !o->p.grammar) abort();
    if (t->choice == TOOLS_CHOICE_NAMED && (t->named < 0 || t->named >= t->n_names)) abort();
    for (int i = 0; i < t->n_names; i++)
        check_text(t->names[i], 0);
    if (forced != tools_stream_hold(t, "x", 1)) abort();
    cJSON *calls = tools_parse_output(t, body, size);
    const cJSON *c;
    cJSON_ArrayForEach(c, calls) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(f, "arguments");
        if (!cJSON_IsString(name) || !cJSON_IsString(args)) abort();
        int known = 0;
        for (int i = 0; i < t->n_names; i++)
            known |= !strcmp(t->names[i], name->valuestring);
        cJSON *a = cJSON_Parse(args->valuestring);
        if (!known || !cJSON_IsObject(a)) abort();
        cJSON_Delete(a);
    }
    if (calls && !cJSON_GetArraySize(calls)) abort();
    cJSON_Delete(calls);
    if (tools_adapt_messages(t, 0, &o->msgs, &o->n_msgs) == 0)
        for (int i = 0; i < o->n_msgs; i++) {
            check_text(o->msgs[i].role, 0);
            check_text(o->msgs[i].content, 1);
            if (o->msgs[i].tool_calls || o->msgs[i].tool_call_id) abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *body = (const char *)data;
    struct reqparse_error err;
    check_utf8(body, size);
    static const enum reqparse_tgi_route routes[] = {REQPARSE_TGI_GENERATE, REQPARSE_TGI_STREAM,
                                                     REQPARSE_TGI_COMPAT};
    for (int r = 0; r < 3; r++) {
        struct reqparse_tgi t;
        memset(&err, 0, sizeof err);
        if (reqparse_tgi(body, size, routes[r], &LIM, &t, &err) == 0) {
            check_text(t.inputs, 0);
            check_params(&t.p);
            if (routes[r] == REQPARSE_TGI_STREAM && (!t.stream || t.input_details)) abort();
        } else {
            check_error(&err);
        }
        reqparse_tgi_free(&t);
    }
    for (int chat = 0; chat < 2; chat++) {
        struct reqparse_oai o;
        memset(&err, 0, sizeof err);
        int rc = chat ? reqparse_chat(body, size, &LIM, &o, &err)
                      : reqparse_completions(body, size, &LIM, &o, &err);
        if (rc == 0) {
            check_params(&o.p);
            if (chat) {
                if (o.n_msgs < 1 || !o.msgs) abort();
                for (int i = 0; i < o.n_msgs; i++) {
                    check_text(o.msgs[i].role, 0);
                    if (o.msgs[i].content || !o.msgs[i].tool_calls)
                        check_text(o.msgs[i].content, 1);
                }
                check_tools(&o, body, size);
            } else if (o.prompt) {
                check_text(o.prompt, 0);
            } else {
                if (o.n_ids < 1 || !o.ids) abort();
                for (int i = 0; i < o.n_ids; i++)
                    if (o.ids[i] < 0) abort();
            }
        } else {
            check_error(&err);
        }
        reqparse_oai_free(&o);
    }
    return 0;
}
