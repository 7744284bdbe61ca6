/* kv_cache.c — page pools, free list, per-sequence block tables, reference counts and the prefix
 * cache (hash table + LRU of unreferenced published pages). See kv_cache.h.
 * One backend allocation holds every layer's K and V pools; the free list is a stack so the most
 * recently freed (cache-warm) page is reused first. */
#include "kv_cache.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "model.h"

/* 64-bit mixing (the splitmix64 finalizer) of one word into a running hash. */
static uint64_t mix(uint64_t h, uint64_t x) {
    h ^= x + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

uint64_t kv_cache_chain(uint64_t prev, const int *tokens, int n) {
    uint64_t h = mix(prev, (uint64_t)n);
    for (int i = 0; i < n; i++)
        h = mix(h, (uint64_t)(uint32_t)tokens[i]);
    return h;
}

/* The model's identity as far as its K/V go: architecture and every shape that changes them. */
static uint64_t model_seed(const struct model_config *cfg) {
    uint64_t h = 0x666c617368676e00ULL; /* "flashgn" */
    for (const char *c = cfg->arch; *c; c++)
        h = mix(h, (uint64_t)(unsigned char)*c);
    const int dims[] = {cfg->n_layers,   cfg->dim,      cfg->ffn_dim,    cfg->n_heads,
                        cfg->n_kv_heads, cfg->head_dim, cfg->vocab_size, cfg->max_seq_len};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        h = mix(h, (uint64_t)(uint32_t)dims[i]);
    uint32_t theta;
    memcpy(&theta, &cfg->rope_theta, sizeof theta);
    return mix(h, theta);
}

size_t kv_cache_page_bytes(const struct model_config *cfg, int page_size, size_t elem_bytes) {
    return (size_t)2 * cfg->n_layers * page_size * cfg->n_kv_heads * cfg->head_dim * elem_bytes;
}

int kv_cache_init_pages(struct kv_cache *kv, int n_pages, int page_size, uint64_t seed) {
    memset(kv, 0, sizeof(*kv));
    if (n_pages <= 0 || page_size <= 0) return -1;
    kv->n_pages = n_pages;
    kv->page_size = page_size;
    kv->seed = seed;
    size_t np = (size_t)n_pages;
    kv->n_buckets = 16;
    while (kv->n_buckets < 2 * n_pages)
        kv->n_buckets *= 2;
    kv->free_list = malloc(sizeof(int) * np);
    kv->ref = calloc(np, sizeof(int));
    kv->hash = calloc(np, sizeof(uint64_t));
    kv->hashed = calloc(np, 1);
    kv->page_tokens = malloc(sizeof(int) * np * (size_t)page_size);
    kv->h_next = malloc(sizeof(int) * np);
    kv->lru_prev = malloc(sizeof(int) * np);
    kv->lru_next = malloc(sizeof(int) * np);
    kv->buckets = malloc(sizeof(int) * (size_t)kv->n_buckets);
    if (!kv->free_list || !kv->ref || !kv->hash || !kv->hashed || !kv->page_tokens || !kv->h_next ||
        !kv->lru_prev || !kv->lru_next || !kv->buckets)
        return -1;
    for (int i = 0; i < kv->n_buckets; i++)
        kv->buckets[i] = -1;
    for (int i = 0; i < n_pages; i++) /* page 0 on top of the stack */
        kv->free_list[i] = n_pages - 1 - i;
    kv->n_free = n_pages;
    kv->lru_head = kv->lru_tail = -1;
    kv->n_cached = 0;
    return 0;
}

int kv_cache_init(struct kv_cache *kv, const struct fg_ops *ops, void *ops_ctx,
                  const struct model_config *cfg, int n_pages, int page_size, size_t elem_bytes) {
    if (kv_cache_init_pages(kv, n_pages, page_size, model_seed(cfg)) != 0) {
        kv_cache_free(kv);
        return -1;
    }
    kv->n_layers = cfg->n_layers;
    kv->n_kv_heads = cfg->n_kv_heads;
    kv->head_dim = cfg->head_dim;
    kv->elem_bytes = elem_bytes;
    kv->ops = ops;
    kv->ops_ctx = ops_ctx;
    size_t pool_bytes = (size_t)n_pages * page_size * cfg->n_kv_heads * cfg->head_dim * elem_bytes;
    kv->pool = ops->alloc(ops_ctx, pool_bytes * 2 * (size_t)cfg->n_layers);
    kv->k = calloc((size_t)cfg->n_layers, sizeof(void *));
    kv->v = calloc((size_t)cfg->n_layers, sizeof(void *));
    if (!kv->pool || !kv->k || !kv->v) {
        kv_cache_free(kv);
        return -1;
    }
    for (int l = 0; l < cfg->n_layers; l++) {
        kv->k[l] = (char *)kv->pool + pool_bytes * (size_t)(2 * l);
        kv->v[l] = (char *)kv->pool + pool_bytes * (size_t)(2 * l + 1);
    }
    return 0;
}

void kv_cache_free(struct kv_cache *kv) {
    if (!kv) return;
    if (kv->pool && kv->ops) kv->ops->release(kv->ops_ctx, kv->pool);
    free(kv->k);
    free(kv->v);
    free(kv->free_list);
    free(kv->ref);
    free(kv->hash);
    free(kv->hashed);
    free(kv->page_tokens);
    free(kv->h_next);
    free(kv->lru_prev);
    free(kv->lru_next);
    free(kv->buckets);
    memset(kv, 0, sizeof(*kv));
}

int kv_cache_pages_for(const struct kv_cache *kv, int n_tokens) {
    return (n_tokens + kv->page_size - 1) / kv->page_size;
}

int kv_cache_available(const struct kv_cache *kv) {
    return kv->n_free + kv->n_cached;
}

int kv_cache_used(const struct kv_cache *kv) {
    return kv->n_pages - kv->n_free - kv->n_cached;
}

/* ---- the LRU of cached pages and the hash table --------------------------------------------- */

static void lru_unlink(struct kv_cache *kv, int p) {
    int a = kv->lru_prev[p], b = kv->lru_next[p];
    if (a >= 0)
        kv->lru_next[a] = b;
    else
        kv->lru_head = b;
    if (b >= 0)
        kv->lru_prev[b] = a;
    else
        kv->lru_tail = a;
    kv->n_cached--;
}

static void lru_push_tail(struct kv_cache *kv, int p) {
    kv->lru_prev[p] = kv->lru_tail;
    kv->lru_next[p] = -1;
    if (kv->lru_tail >= 0)
        kv->lru_next[kv->lru_tail] = p;
    else
        kv->lru_head = p;
    kv->lru_tail = p;
    kv->n_cached++;
}

static int *bucket_of(struct kv_cache *kv, uint64_t h) {
    return &kv->buckets[h & (uint64_t)(kv->n_buckets - 1)];
}

static int table_find(struct kv_cache *kv, uint64_t h, const int *tokens) {
    for (int p = *bucket_of(kv, h); p >= 0; p = kv->h_next[p])
        if (kv->hash[p] == h && !memcmp(kv->page_tokens + (size_t)p * kv->page_size, tokens,
                                        sizeof(int) * (size_t)kv->page_size))
            return p;
    return -1;
}

static void table_remove(struct kv_cache *kv, int p) {
    int *pp = bucket_of(kv, kv->hash[p]);
    while (*pp != p)
        pp = &kv->h_next[*pp];
    *pp = kv->h_next[p];
    kv->hashed[p] = 0;
}

/* One page for a block table: the top of the free list, else the oldest cached page. */
static int take_page(struct kv_cache *kv) {
    if (kv->n_free) return kv->free_list[--kv->n_free];
    int p = kv->lru_head;
    lru_unlink(kv, p);
    table_remove(kv, p);
    return p;
}

/* ---- block tables -------------------------------------------------------------------------- */

static int seq_grow(struct kv_seq *seq, int need) {
    if (need <= seq->cap) return 0;
    int cap = seq->cap ? seq->cap : 4;
    while (cap < need)
        cap *= 2;
    int *p = realloc(seq->pages, sizeof(int) * (size_t)cap);
    if (!p) return -1;
    seq->pages = p;
    seq->cap = cap;
    return 0;
}

int kv_seq_reserve(struct kv_cache *kv, struct kv_seq *seq, int n_tokens) {
    int need = kv_cache_pages_for(kv, n_tokens);
    if (need <= seq->n_pages) return 0;
    int more = need - seq->n_pages;
    if (more > kv_cache_available(kv) || seq_grow(seq, need) != 0) return -1;
    for (int i = 0; i < more; i++) {
        int p = take_page(kv);
        kv->ref[p] = 1;
        seq->pages[seq->n_pages++] = p;
    }
    return 0;
}

int kv_seq_match(struct kv_cache *kv, struct kv_seq *seq, const int *tokens, int n,
                 int max_tokens) {
    int ps = kv->page_size;
    int max_pages = (n < max_tokens ? n : max_tokens) / ps;
    uint64_t h = kv->seed;
    int got = 0;
    if (max_pages <= 0) return 0;
    if (seq_grow(seq, max_pages) != 0) return -1;
    for (int i = 0; i < max_pages; i++) {
        uint64_t hi = kv_cache_chain(h, tokens + (size_t)i * ps, ps);
        int p = table_find(kv, hi, tokens + (size_t)i * ps);
        if (p < 0) break;
        if (kv->ref[p]++ == 0) lru_unlink(kv, p);
        seq->pages[seq->n_pages++] = p;
        h = hi;
        got++;
    }
    seq->n_hashed = got;
    seq->last_hash = h;
    seq->n_tokens = got * ps;
    return seq->n_tokens;
}

void kv_seq_publish(struct kv_cache *kv, struct kv_seq *seq, const int *tokens) {
    int ps = kv->page_size;
    if (seq->n_hashed == 0) seq->last_hash = kv->seed;
    while (seq->n_hashed < seq->n_pages && (seq->n_hashed + 1) * ps <= seq->n_tokens) {
        int i = seq->n_hashed, p = seq->pages[i];
        const int *t = tokens + (size_t)i * ps;
        uint64_t h = kv_cache_chain(seq->last_hash, t, ps);
        if (!kv->hashed[p] && table_find(kv, h, t) < 0) {
            kv->hash[p] = h;
            kv->hashed[p] = 1;
            memcpy(kv->page_tokens + (size_t)p * ps, t, sizeof(int) * (size_t)ps);
            int *b = bucket_of(kv, h);
            kv->h_next[p] = *b;
            *b = p;
        }
        seq->last_hash = h;
        seq->n_hashed++;
    }
}

/* Copy page SRC's K and V rows of every layer into page DST (backend memory, queued in order with
 * the forward pass). */
static int page_copy(struct kv_cache *kv, int dst, int src) {
    if (!kv->pool || !kv->ops || !kv->ops->copy) return kv->pool ? -1 : 0;
    size_t pb = (size_t)kv->page_size * kv->n_kv_heads * kv->head_dim * kv->elem_bytes;
    for (int l = 0; l < kv->n_layers; l++) {
        char *k = kv->k[l], *v = kv->v[l];
        if (kv->ops->copy(kv->ops_ctx, k + pb * (size_t)dst, k + pb * (size_t)src, pb) != 0 ||
            kv->ops->copy(kv->ops_ctx, v + pb * (size_t)dst, v + pb * (size_t)src, pb) != 0)
            return -1;
    }
    return kv->mirror ? page_copy(kv->mirror, dst, src) : 0;
}

int kv_seq_fork(struct kv_cache *kv, const struct kv_seq *src, struct kv_seq *dst, int n_tokens) {
    int ps = kv->page_size, full = n_tokens / ps, part = n_tokens % ps != 0;
    if (n_tokens < 0 || n_tokens > src->n_tokens || dst->n_pages) return -1;
    if ((part && kv_cache_available(kv) < 1) || seq_grow(dst, full + part) != 0) return -1;
    for (int i = 0; i < full; i++) {
        int p = src->pages[i];
        kv->ref[p]++; /* held by SRC: never on the LRU */
        dst->pages[dst->n_pages++] = p;
    }
    if (part) {
        int p = take_page(kv);
        kv->ref[p] = 1;
        dst->pages[dst->n_pages++] = p;
        if (page_copy(kv, p, src->pages[full]) != 0) {
            kv_seq_release(kv, dst);
            return -1;
        }
    }
    dst->n_tokens = n_tokens;
    dst->n_hashed = 0; /* kv_seq_publish re-chains from the start; shared pages are found hashed */
    dst->last_hash = kv->seed;
    return 0;
}

void kv_seq_release(struct kv_cache *kv, struct kv_seq *seq) {
    if (!seq) return;
    for (int i = seq->n_pages - 1; i >= 0; i--) {
        int p = seq->pages[i];
        if (--kv->ref[p] > 0) continue;
        if (kv->hashed[p])
            lru_push_tail(kv, p);
        else
            kv->free_list[kv->n_free++] = p;
    }
    free(seq->pages);
    memset(seq, 0, sizeof(*seq));
}
