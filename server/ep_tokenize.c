/* ep_tokenize.c — POST /tokenize (TGI): {"inputs": str, "add_special_tokens": bool} →
 * [{"id", "text", "start", "stop"}], start/stop being byte offsets into inputs (an added BOS
 * has start == stop == 0).
 *
 * Design choice: tokenizing a large input takes seconds, so it leaves the loop thread: the body
 * is checked on the loop, then the tokenizer (read-only, thread-neutral) runs and the reply JSON
 * is rendered on a libuv work thread (uv_queue_work), and the loop only sends the finished
 * string. Input and output are bounded by max_input_tokens: more tokens get 422, as /generate
 * does, and nothing is rendered for them.
 *
 * "text" is always valid UTF-8: a token whose bytes are part of a character (byte-level BPE
 * splits them) gets U+FFFD for the partial bytes, as transformers' tokenizer.decode([id]) does;
 * start/stop still give its exact bytes in the input.
 */
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"
#include "model/unicode.h"
#include "server/job.h"

struct tok_work {
    uv_work_t w;
    struct http_req *r; /* NULL once the client went away (loop thread) */
    struct server *sv; /* counts the work in sv->preps: shutdown waits, the tokenizer outlives it */
    const struct tokenizer *tok;
    char *text; /* (len) a copy of inputs */
    size_t len;
    int add_special;
    int max_tokens;
    /* results, written on the work thread, read in on_tokenized */
    int status;
    int n_tokens;
    char err[256];
    char *json; /* the reply body, or NULL */
};

/* The reply array for IDS (work thread). */
static char *render(const struct tokenizer *tok, const char *text, size_t len, const int *ids,
                    int n) {
    cJSON *arr = cJSON_CreateArray();
    size_t pos = 0;
    for (int i = 0; arr && i < n; i++) {
        char buf[512], utf8[3 * sizeof buf + 1];
        int nb = tokenizer_token_bytes(tok, ids[i], buf, sizeof buf - 1);
        if (nb < 0) nb = 0;
        if (nb > (int)sizeof buf - 1) nb = (int)sizeof buf - 1;
        /* a token whose bytes are not next in the input (BOS) takes no room in it */
        size_t start = pos, stop = pos;
        if (nb > 0 && pos + (size_t)nb <= len && !memcmp(text + pos, buf, (size_t)nb))
            stop = pos + (size_t)nb;
        else if (i == 0 && ids[i] == tokenizer_bos(tok))
            start = stop = 0;
        else
            stop = pos + (size_t)nb <= len ? pos + (size_t)nb : len;
        pos = stop;
        size_t nu = unicode_utf8_lossy((const unsigned char *)buf, (size_t)nb, 1, utf8, NULL);
        utf8[nu] = 0;
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "id", ids[i]);
        cJSON_AddStringToObject(t, "text", utf8);
        cJSON_AddNumberToObject(t, "start", (double)start);
        cJSON_AddNumberToObject(t, "stop", (double)stop);
        cJSON_AddItemToArray(arr, t);
    }
    char *s = arr ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    return s;
}

/* Work thread: tokenize and render; touches nothing but its tok_work. */
static void tokenize_work(uv_work_t *w) {
    struct tok_work *tw = w->data;
    int *ids = NULL;
    char err[200];
    if (tokenizer_encode(tw->tok, tw->text, tw->len, 0, tw->add_special, &ids, &tw->n_tokens, err,
                         sizeof err)) {
        tw->status = 422;
        snprintf(tw->err, sizeof tw->err, "cannot tokenize: %s", err);
    } else if (tw->n_tokens > tw->max_tokens) {
        tw->status = 422;
        snprintf(tw->err, sizeof tw->err,
                 "`inputs` must have less than %d tokens. Given: %d (max_input_tokens)",
                 tw->max_tokens + 1, tw->n_tokens);
    } else {
        tw->json = render(tw->tok, tw->text, tw->len, ids, tw->n_tokens);
        tw->status = tw->json ? 200 : 500;
    }
    free(ids);
}

/* Loop thread: the request ended before the work did. */
static void on_tokenize_closed(struct http_req *r, void *ctx, int aborted) {
    (void)r, (void)aborted;
    struct tok_work *tw = ctx;
    tw->r = NULL;
}

/* Loop thread: send the result (if the client is still there) and free the work. */
static void on_tokenized(uv_work_t *w, int status) {
    struct tok_work *tw = w->data;
    struct http_req *r = tw->r;
    tw->sv->preps--; /* the loop is still running, so the server is there */
    if (r) {
        http_req_set_ctx(r, NULL, NULL);
        struct server *sv = http_req_app(r);
        if (status || tw->status == 500)
            http_reply_error(r, 500, "internal", NULL, "tokenization failed (out of memory)");
        else if (tw->status == 422)
            job_invalid(sv, r, "inputs", "%s", tw->err);
        else
            http_reply(r, 200, "application/json", tw->json, strlen(tw->json));
    }
    free(tw->json);
    free(tw->text);
    free(tw);
}

void ep_tokenize(struct http_req *r) {
    struct server *sv = http_req_app(r);
    if (sv->phase != SERVER_READY && sv->phase != SERVER_DRAINING) {
        http_reply_error(r, 503, "unavailable", NULL, "Loading model");
        return;
    }
    cJSON *b = job_parse_body(sv, r);
    if (!b) return;
    int add_special = 1;
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(b, "inputs");
    if (!cJSON_IsString(in)) {
        job_invalid(sv, r, "inputs", "`inputs` must be a string");
        goto out;
    }
    if (job_get_bool(sv, r, b, "add_special_tokens", &add_special)) goto out;
    struct tok_work *tw = calloc(1, sizeof *tw);
    if (!tw || !(tw->text = strdup(in->valuestring))) {
        free(tw);
        http_reply_error(r, 500, "internal", NULL, "out of memory");
        goto out;
    }
    tw->w.data = tw;
    tw->r = r;
    tw->sv = sv;
    tw->tok = sv->worker.info.tok;
    tw->len = strlen(tw->text);
    tw->add_special = add_special;
    tw->max_tokens = sv->max_input;
    if (uv_queue_work(sv->loop, &tw->w, tokenize_work, on_tokenized) != 0) {
        free(tw->text);
        free(tw);
        http_reply_error(r, 500, "internal", NULL, "cannot queue the tokenization");
        goto out;
    }
    sv->preps++;
    http_req_set_ctx(r, tw, on_tokenize_closed);
    http_defer(r);
out:
    cJSON_Delete(b);
}
