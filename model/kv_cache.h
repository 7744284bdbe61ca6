/* kv_cache.h — the paged KV-cache: fixed-size pages carved from one pool per layer, a block table
 * per sequence, one free list. Owned by the worker thread; nothing here is thread-safe.
 *
 * Page layout of one layer's K (and V) pool: (n_pages, page_size, n_kv_heads, head_dim), backend
 * memory. Token t of a sequence lives in page pages[t / page_size] at row t % page_size.
 */
#ifndef FG_KV_CACHE_H
#define FG_KV_CACHE_H

#include <stddef.h>

struct fg_ops;
struct model_config;

struct kv_cache {
    int n_layers, n_pages, page_size, n_kv_heads, head_dim;
    size_t elem_bytes;   /* bytes per stored value (4 on the CPU backend) */
    void *pool;          /* one allocation: n_layers × {K, V} × page pools */
    void **k, **v;       /* (n_layers) views into pool */
    int *free_list;      /* (n_pages) stack of free page ids */
    int n_free;
    const struct fg_ops *ops;
    void *ops_ctx;
};

/* A sequence's block table. */
struct kv_seq {
    int *pages;   /* page ids in order */
    int n_pages;  /* pages held */
    int cap;      /* allocated length of pages */
    int n_tokens; /* tokens already written to the cache */
};

int kv_cache_init(struct kv_cache *kv, const struct fg_ops *ops, void *ops_ctx,
                  const struct model_config *cfg, int n_pages, int page_size, size_t elem_bytes);
void kv_cache_free(struct kv_cache *kv); /* accepts zeroed and half-built caches */
/* Bytes one page costs across all layers, K and V. */
size_t kv_cache_page_bytes(const struct model_config *cfg, int page_size, size_t elem_bytes);
/* Pages needed to hold n_tokens. */
int kv_cache_pages_for(const struct kv_cache *kv, int n_tokens);

/* Grow seq so it can hold n_tokens in total. Returns 0, or -1 (nothing taken) when the free
 * list is too short. */
int kv_seq_reserve(struct kv_cache *kv, struct kv_seq *seq, int n_tokens);
/* Return every page of seq to the free list and reset it; accepts an empty seq. */
void kv_seq_release(struct kv_cache *kv, struct kv_seq *seq);

#endif
