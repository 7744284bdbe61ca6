/* engine.c — open a model on a backend: load, pick the device, size the KV pool, build the
 * forward state. The only place that knows which backends exist. */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"

#define ENGINE_CPU_KV_BYTES ((size_t)512 << 20) /* CPU default: 512 MiB of KV pool */

void engine_opts_default(struct engine_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->device = ENGINE_DEVICE_AUTO;
    o->kv_fraction = 0.9f;
    o->page_size = 16;
    o->max_batch_tokens = 512;
    o->max_batch_seqs = 64;
}

void engine_close(struct engine *e)
{
    if (!e) return;
    fwd_free(e->fwd);
    kv_cache_free(&e->kv);
    if (e->ops_ctx) cpu_ops_destroy(e->ops_ctx);
    chat_template_free(&e->chat);
    model_free(e->model);
    free(e);
}

int engine_open(const struct engine_opts *o, struct engine **out, char *err, size_t errlen)
{
    *out = NULL;
    if (o->device == ENGINE_DEVICE_CUDA) {
        snprintf(err, errlen, "device cuda: this build has no CUDA backend (use --device cpu)");
        return -1;
    }
    struct engine *e = calloc(1, sizeof(*e));
    if (!e) {
        snprintf(err, errlen, "engine: out of memory");
        return -1;
    }
    if (model_load(o->model_path, &e->model, o->progress, o->progress_user, err, errlen) != 0)
        goto fail;
    if (chat_template_init(&e->chat, e->model->chat_template, err, errlen) != 0) goto fail;

    snprintf(e->device, sizeof(e->device), "cpu");
    e->ops = cpu_ops();
    e->ops_ctx = cpu_ops_create(o->n_threads);
    if (!e->ops_ctx) {
        snprintf(err, errlen, "engine: cannot start CPU threads");
        goto fail;
    }

    const struct model_config *cfg = &e->model->cfg;
    int page_size = o->page_size > 0 ? o->page_size : 16;
    e->max_batch_tokens = o->max_batch_tokens > 0 ? o->max_batch_tokens : 512;
    e->max_batch_seqs = o->max_batch_seqs > 0 ? o->max_batch_seqs : 64;
    size_t kv_bytes = o->kv_cache_bytes ? o->kv_cache_bytes : ENGINE_CPU_KV_BYTES;
    size_t page_bytes = kv_cache_page_bytes(cfg, page_size, sizeof(float));
    size_t n_pages = kv_bytes / page_bytes;
    if (n_pages < 2) {
        snprintf(err, errlen, "kv_cache_bytes %zu holds fewer than 2 pages of %zu bytes", kv_bytes,
                 page_bytes);
        goto fail;
    }
    if (n_pages > (size_t)1 << 30) n_pages = (size_t)1 << 30;
    if (kv_cache_init(&e->kv, e->ops, e->ops_ctx, cfg, (int)n_pages, page_size, sizeof(float)) !=
        0) {
        snprintf(err, errlen, "engine: cannot allocate a KV pool of %zu pages", n_pages);
        goto fail;
    }
    if (fwd_init(&e->fwd, cfg, &e->model->w, e->ops, e->ops_ctx, &e->kv, e->max_batch_tokens,
                 e->max_batch_seqs, err, errlen) != 0)
        goto fail;
    *out = e;
    return 0;
fail:
    engine_close(e);
    return -1;
}
