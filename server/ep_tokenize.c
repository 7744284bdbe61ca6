/* ep_tokenize.c — POST /tokenize (TGI): {"inputs": str, "add_special_tokens": bool} →
 * [{"id", "text", "start", "stop"}], start/stop being byte offsets into inputs (an added BOS
 * has start == stop == 0). Runs on the loop thread with the read-only tokenizer. */
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"
#include "server/job.h"

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
    const struct tokenizer *tok = sv->worker.info.tok;
    int *ids = NULL, n = 0;
    char err[256];
    size_t len = strlen(in->valuestring);
    if (tokenizer_encode(tok, in->valuestring, len, 0, add_special, &ids, &n, err, sizeof err)) {
        job_invalid(sv, r, "inputs", "cannot tokenize: %s", err);
        goto out;
    }
    cJSON *arr = cJSON_CreateArray();
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        char buf[512];
        int nb = tokenizer_token_bytes(tok, ids[i], buf, sizeof buf - 1);
        if (nb < 0) nb = 0;
        buf[nb] = 0;
        /* a token whose bytes are not next in the input (BOS) takes no room in it */
        size_t start = pos, stop = pos;
        if (nb > 0 && pos + (size_t)nb <= len && !memcmp(in->valuestring + pos, buf, (size_t)nb))
            stop = pos + (size_t)nb;
        else if (i == 0 && ids[i] == tokenizer_bos(tok))
            start = stop = 0;
        else
            stop = pos + (size_t)nb <= len ? pos + (size_t)nb : len;
        pos = stop;
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "id", ids[i]);
        cJSON_AddStringToObject(t, "text", buf);
        cJSON_AddNumberToObject(t, "start", (double)start);
        cJSON_AddNumberToObject(t, "stop", (double)stop);
        cJSON_AddItemToArray(arr, t);
    }
    free(ids);
    http_reply_json(r, 200, arr);
out:
    cJSON_Delete(b);
}
