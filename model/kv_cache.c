/* kv_cache.c — page pools, free list and per-sequence block tables. See kv_cache.h.
 * One backend allocation holds every layer's K and V pools; the free list is a stack so the most
 * recently freed (cache-warm) page is reused first. */
#include "kv_cache.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "model.h"

size_t kv_cache_page_bytes(const struct model_config *cfg, int page_size, size_t elem_bytes)
{
    return (size_t)2 * cfg->n_layers * page_size * cfg->n_kv_heads * cfg->head_dim * elem_bytes;
}

int kv_cache_init(struct kv_cache *kv, const struct fg_ops *ops, void *ops_ctx,
                  const struct model_config *cfg, int n_pages, int page_size, size_t elem_bytes)
{
    memset(kv, 0, sizeof(*kv));
    if (n_pages <= 0 || page_size <= 0) return -1;
    kv->n_layers = cfg->n_layers;
    kv->n_pages = n_pages;
    kv->page_size = page_size;
    kv->n_kv_heads = cfg->n_kv_heads;
    kv->head_dim = cfg->head_dim;
    kv->elem_bytes = elem_bytes;
    kv->ops = ops;
    kv->ops_ctx = ops_ctx;
    size_t pool_bytes = (size_t)n_pages * page_size * cfg->n_kv_heads * cfg->head_dim * elem_bytes;
    kv->pool = ops->alloc(ops_ctx, pool_bytes * 2 * (size_t)cfg->n_layers);
    kv->k = calloc((size_t)cfg->n_layers, sizeof(void *));
    kv->v = calloc((size_t)cfg->n_layers, sizeof(void *));
    kv->free_list = malloc(sizeof(int) * (size_t)n_pages);
    if (!kv->pool || !kv->k || !kv->v || !kv->free_list) {
        kv_cache_free(kv);
        return -1;
    }
    for (int l = 0; l < cfg->n_layers; l++) {
        kv->k[l] = (char *)kv->pool + pool_bytes * (size_t)(2 * l);
        kv->v[l] = (char *)kv->pool + pool_bytes * (size_t)(2 * l + 1);
    }
    for (int i = 0; i < n_pages; i++) /* page 0 on top of the stack */
        kv->free_list[i] = n_pages - 1 - i;
    kv->n_free = n_pages;
    return 0;
}

void kv_cache_free(struct kv_cache *kv)
{
    if (!kv) return;
    if (kv->pool && kv->ops) kv->ops->release(kv->ops_ctx, kv->pool);
    free(kv->k);
    free(kv->v);
    free(kv->free_list);
    memset(kv, 0, sizeof(*kv));
}

int kv_cache_pages_for(const struct kv_cache *kv, int n_tokens)
{
    return (n_tokens + kv->page_size - 1) / kv->page_size;
}

int kv_seq_reserve(struct kv_cache *kv, struct kv_seq *seq, int n_tokens)
{
    int need = kv_cache_pages_for(kv, n_tokens);
    if (need <= seq->n_pages) return 0;
    int more = need - seq->n_pages;
    if (more > kv->n_free) return -1;
    if (need > seq->cap) {
        int cap = seq->cap ? seq->cap : 4;
        while (cap < need)
            cap *= 2;
        int *p = realloc(seq->pages, sizeof(int) * (size_t)cap);
        if (!p) return -1;
        seq->pages = p;
        seq->cap = cap;
    }
    for (int i = 0; i < more; i++)
        seq->pages[seq->n_pages++] = kv->free_list[--kv->n_free];
    return 0;
}

void kv_seq_release(struct kv_cache *kv, struct kv_seq *seq)
{
    if (!seq) return;
    for (int i = seq->n_pages - 1; i >= 0; i--)
        kv->free_list[kv->n_free++] = seq->pages[i];
    free(seq->pages);
    memset(seq, 0, sizeof(*seq));
}
