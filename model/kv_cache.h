/* kv_cache.h — the paged KV-cache: fixed-size pages carved from one pool per layer, a block table
 * per sequence, reference-counted pages, and the prefix cache. Owned by the worker thread;
 * nothing here is thread-safe.
 *
 * Page layout of one layer's K (and V) pool: (n_pages, page_size, n_kv_heads, head_dim), backend
 * memory. Token t of a sequence lives in page pages[t / page_size] at row t % page_size.
 *
 * Every page is in exactly one of three places:
 *   free       on the free list (a stack), content meaningless;
 *   held       in one or more block tables (ref > 0);
 *   cached     ref 0 but its content is a published full page, still findable by its hash; kept
 *              on an LRU list and only evicted (unhashed, reused) when the free list is empty.
 * A full page is published (kv_seq_publish) under a hash chained over the tokens it holds:
 * hash(page i) = H(hash(page i-1), tokens of page i), page 0 chained from a seed made of the
 * model's shape, so equal hashes mean equal token prefixes (the tokens are compared too). A new
 * sequence takes every cached page of its longest cached prefix (kv_seq_match); such pages are
 * only ever read: a sequence writes rows at and past its n_tokens, and the pages it took are
 * all below that.
 *
 * Forks (n > 1, best_of: several sequences of one prompt): kv_seq_fork gives a new sequence the
 * first n tokens of another, every full page among them shared (one more reference each, as a
 * prefix-cache hit takes it) and the page holding the rest, if any, copied (copy on write: the
 * source goes on writing into its own copy), so the prompt is computed once.
 */
#ifndef FG_KV_CACHE_H
#define FG_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct fg_ops;
struct model_config;

struct kv_cache {
    int n_layers, n_pages, page_size, n_kv_heads, head_dim;
    size_t elem_bytes; /* bytes per stored value (4 on the CPU backend) */
    void *pool;        /* one allocation: n_layers × {K, V} × page pools */
    void **k, **v;     /* (n_layers) views into pool */
    int *free_list;    /* (n_pages) stack of free page ids */
    int n_free;
    /* per page (n_pages) */
    int *ref;                         /* block tables holding it */
    uint64_t *hash;                   /* its chained hash, when published */
    unsigned char *hashed;            /* 1: published (findable by hash) */
    int *page_tokens;                 /* (n_pages, page_size) the tokens of a published page */
    int *h_next;                      /* hash bucket chain */
    int *lru_prev, *lru_next;         /* the cached (ref 0, published) pages, oldest first */
    int *buckets;                     /* (n_buckets) first page of each chain, -1 = none */
    int n_buckets;                    /* power of two */
    int lru_head, lru_tail, n_cached; /* -1 = none */
    uint64_t seed;                    /* the chain's start: the model's shape */
    const struct fg_ops *ops;
    void *ops_ctx;
    /* tensor parallelism over several GPUs (model/tp.h): the next shard's pools, on its own
     * device, under the same page ids (only their memory is used there); a page copied on write
     * here is copied there too. NULL: none. Not owned. */
    struct kv_cache *mirror;
};

/* A sequence's block table. */
struct kv_seq {
    int *pages;         /* page ids in order */
    int n_pages;        /* pages held */
    int cap;            /* allocated length of pages */
    int n_tokens;       /* tokens already written to the cache */
    int n_hashed;       /* leading pages published or taken from the cache */
    uint64_t last_hash; /* hash of page n_hashed - 1 (the seed when 0) */
};

int kv_cache_init(struct kv_cache *kv, const struct fg_ops *ops, void *ops_ctx,
                  const struct model_config *cfg, int n_pages, int page_size, size_t elem_bytes);
/* The page bookkeeping alone (free list, refcounts, prefix cache), without backend memory: for
 * the scheduler's tests. KV is zeroed first; kv_cache_free releases it. */
int kv_cache_init_pages(struct kv_cache *kv, int n_pages, int page_size, uint64_t seed);
void kv_cache_free(struct kv_cache *kv); /* accepts zeroed and half-built caches */
/* Bytes one page costs across all layers, K and V. */
size_t kv_cache_page_bytes(const struct model_config *cfg, int page_size, size_t elem_bytes);
/* Pages needed to hold n_tokens. */
int kv_cache_pages_for(const struct kv_cache *kv, int n_tokens);
/* Pages a sequence can still get: free ones and cached ones (evicted on demand). */
int kv_cache_available(const struct kv_cache *kv);
/* Pages held by sequences (neither free nor cached). */
int kv_cache_used(const struct kv_cache *kv);
/* The chain: the hash of a page holding TOKENS[0 .. n) after a page hashed PREV. */
uint64_t kv_cache_chain(uint64_t prev, const int *tokens, int n);

/* Grow seq so it can hold n_tokens in total, taking free pages first, then evicting cached ones
 * oldest first. Returns 0, or -1 (nothing taken) when too few are available. */
int kv_seq_reserve(struct kv_cache *kv, struct kv_seq *seq, int n_tokens);
/* Give an empty seq every cached page of the longest cached prefix of TOKENS[0 .. n), at most
 * max_tokens tokens' worth (whole pages); seq->n_tokens becomes the tokens they hold. Returns
 * that count (0: none), or -1 when out of memory (nothing taken). */
int kv_seq_match(struct kv_cache *kv, struct kv_seq *seq, const int *tokens, int n, int max_tokens);
/* Publish every full page of seq not yet published (TOKENS: the sequence's tokens, at least
 * seq->n_tokens of them). A page whose hash is already cached stays private. */
void kv_seq_publish(struct kv_cache *kv, struct kv_seq *seq, const int *tokens);
/* Give an empty DST the first N_TOKENS tokens of SRC (which holds at least that many): the full
 * pages shared, the partial last one copied into a page of its own on the backend (all layers, K
 * and V; only the bookkeeping when the cache has no backend memory). DST->n_tokens becomes
 * N_TOKENS. Returns 0, or -1 (nothing taken) when no page is left for the copy. */
int kv_seq_fork(struct kv_cache *kv, const struct kv_seq *src, struct kv_seq *dst, int n_tokens);
/* Drop seq's hold on every page and reset it (accepts an empty seq): a page no one holds goes
 * to the cache if it was published (last page first, so a sequence's tail is evicted before its
 * head), else to the free list. */
void kv_seq_release(struct kv_cache *kv, struct kv_seq *seq);

#endif
