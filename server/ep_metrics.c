/* ep_metrics.c — GET /metrics: the Prometheus text exposition (metrics.h lists the names). */
#include <stdlib.h>

#include "server/serve.h"

void ep_metrics(struct http_req *r) {
    struct server *sv = http_req_app(r);
    size_t len = 0;
    char *text = metrics_render(&sv->metrics, sv->model_id, FLASHGEN_VERSION, &len);
    if (!text) {
        http_reply_error(r, 500, "internal", NULL, "out of memory");
        return;
    }
    http_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}
