/* ep_health.c — GET /health, GET /info, GET /v1/models and /v1/models/{id}, answered on the loop
 * thread from server state alone, so they reply at once however busy the worker is.
 *
 * /health: 200 {"status":"ok"} when requests are served; 503 {"status":"loading"|"draining"|
 * "failed"} otherwise (a load balancer's readiness probe and Docker's HEALTHCHECK read the code).
 */
#include <cjson/cJSON.h>
#include <string.h>
#include <time.h>

#include "server/serve.h"

static const char *phase_name(enum server_phase p) {
    switch (p) {
    case SERVER_LOADING:
        return "loading";
    case SERVER_READY:
        return "ok";
    case SERVER_FAILED:
        return "failed";
    case SERVER_DRAINING:
        return "draining";
    }
    return "unknown";
}

void ep_health(struct http_req *r) {
    struct server *sv = http_req_app(r);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", phase_name(sv->phase));
    if (sv->phase == SERVER_FAILED) {
        cJSON_AddStringToObject(o, "error", sv->worker.load_error);
        cJSON_AddStringToObject(o, "error_type", "healthcheck");
    }
    http_reply_json(r, sv->phase == SERVER_READY ? 200 : 503, o);
}

void ep_info(struct http_req *r) {
    struct server *sv = http_req_app(r);
    const struct worker_info *in = &sv->worker.info;
    int ready = sv->phase == SERVER_READY || sv->phase == SERVER_DRAINING;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model_id", sv->model_id);
    cJSON_AddStringToObject(o, "model_path", sv->cfg.model);
    cJSON_AddNullToObject(o, "model_sha");
    cJSON_AddStringToObject(o, "model_pipeline_tag", "text-generation");
    cJSON_AddStringToObject(o, "status", phase_name(sv->phase));
    if (ready) {
        cJSON_AddStringToObject(o, "model_dtype", in->dtype);
        cJSON_AddStringToObject(o, "model_format", in->format);
        cJSON_AddStringToObject(o, "model_arch", in->arch);
        cJSON_AddStringToObject(o, "model_device_type", in->device);
        cJSON_AddStringToObject(o, "chat_template", chat_template_kind_name(in->chat));
        cJSON_AddNumberToObject(o, "max_input_tokens", sv->max_input);
        cJSON_AddNumberToObject(o, "max_total_tokens", sv->max_total);
        cJSON_AddNumberToObject(o, "max_batch_total_tokens", in->kv_tokens);
        cJSON_AddNumberToObject(o, "max_batch_tokens", in->max_batch_tokens);
        cJSON_AddNumberToObject(o, "max_batch_seqs", in->max_batch_seqs);
        cJSON_AddNumberToObject(o, "context_length", in->n_ctx);
        cJSON_AddNumberToObject(o, "load_seconds", in->load_seconds);
        cJSON_AddNumberToObject(o, "tensor_parallel", in->tensor_parallel);
        cJSON_AddStringToObject(o, "tensor_parallel_mode", in->tp_mode);
        /* memory the weights hold: host copies in their GGUF blocks and as fp32, blocks read in
         * place from the file's mapping (shared with the page cache), and the device copy */
        cJSON *res = cJSON_AddObjectToObject(o, "weights_resident");
        cJSON_AddNumberToObject(res, "block_bytes", (double)in->weights_block_bytes);
        cJSON_AddNumberToObject(res, "fp32_bytes", (double)in->weights_fp32_bytes);
        cJSON_AddNumberToObject(res, "mapped_bytes", (double)in->weights_mapped_bytes);
        cJSON_AddNumberToObject(res, "device_bytes", (double)in->weights_device_bytes);
        cJSON_AddNumberToObject(res, "device_block_bytes", (double)in->weights_device_block_bytes);
        cJSON_AddStringToObject(res, "gpu_weights", in->gpu_weights);
    }
    cJSON_AddNumberToObject(o, "max_concurrent_requests", sv->cfg.max_concurrent_requests);
    cJSON_AddNumberToObject(o, "max_best_of", 1);
    cJSON_AddNumberToObject(o, "max_stop_sequences", sv->cfg.max_stop_sequences);
    cJSON_AddNumberToObject(o, "max_client_batch_size", 1);
    cJSON_AddNumberToObject(o, "validation_workers", 1);
    cJSON_AddNumberToObject(o, "max_body_bytes", sv->cfg.max_body_bytes);
    cJSON_AddStringToObject(o, "router", "flashgen");
    cJSON_AddStringToObject(o, "version", FLASHGEN_VERSION);
    cJSON_AddNullToObject(o, "sha");
    cJSON_AddNullToObject(o, "docker_label");
    http_reply_json(r, 200, o);
}

/* The one model object of /v1/models and /v1/models/{id} (OpenAI's "model"). */
static cJSON *model_object(const struct server *sv) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", sv->model_id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)time(NULL));
    cJSON_AddStringToObject(m, "owned_by", "flashgen");
    if (sv->phase == SERVER_READY || sv->phase == SERVER_DRAINING)
        cJSON_AddNumberToObject(m, "max_model_len", sv->max_total);
    return m;
}

/* GET /v1/models (OpenAI "list models"): the one model. */
void ep_models(struct http_req *r) {
    struct server *sv = http_req_app(r);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "data"), model_object(sv));
    http_reply_json(r, 200, o);
}

/* GET /v1/models/{id} (OpenAI "retrieve model"): the one model object of /v1/models, or 404. */
void ep_model(struct http_req *r) {
    struct server *sv = http_req_app(r);
    const char *id = http_req_path(r) + strlen("/v1/models/");
    if (strcmp(id, sv->model_id)) {
        http_reply_error(r, 404, "not_found", "model", "The model '%.200s' does not exist", id);
        return;
    }
    http_reply_json(r, 200, model_object(sv));
}
