/* kv_write.h — CUDA: store new K/V rows into their KV-cache pages, optionally rotating K (and Q,
 * in place) with rotate_half RoPE on the way, so the rotated K is written once.
 *
 * Twin: cpu_ops()->rope followed by cpu_ops()->kv_write (kernels/cpu_ops.c). All pointers are
 * device memory. Slot of token t: slots[t] = page * page_size + row; pool layout
 * (n_pages, page_size, n_kv_heads, head_dim).
 */
#ifndef FG_KV_WRITE_H
#define FG_KV_WRITE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct kv_write_args {
    int dtype;             /* enum attn_dtype (kernels/attention.h): pools, k, v, q */
    void *k_pool, *v_pool; /* (n_pages, page_size, n_kv_heads, head_dim) */
    const void *k, *v;     /* (n, n_kv_heads, head_dim) new rows */
    const int *slots;      /* (n) */
    int n, n_kv_heads, head_dim;
    /* RoPE, both or neither: K rows turn by pos[t] * freqs[i] for pairs (i, i + head_dim/2)
     * before they are stored; freqs (head_dim / 2) fp32. */
    const int *pos;
    const float *freqs;
    void *q;      /* optional with RoPE: (n, n_heads, head_dim) rotated in place */
    int n_heads;  /* heads of q */
    void *stream; /* cudaStream_t */
};

/* Queue the write. Returns 0, or -1 with a message (bad shape, launch error). */
int kv_write_launch(const struct kv_write_args *a, char *err, size_t errlen);

/* The same from one fused projection: qkv (n, (n_heads + 2 n_kv_heads) head_dim) holds each
 * token's q, k and v rows. K and q turn by RoPE; k and v go to the pages, q to q_out
 * (n, n_heads, head_dim). Twin: cpu_ops()->qkv_store. */
struct qkv_store_args {
    int dtype;
    void *q_out, *k_pool, *v_pool;
    const void *qkv;
    const int *pos, *slots;
    const float *freqs;
    int n, n_heads, n_kv_heads, head_dim;
    void *stream;
};
int qkv_store_launch(const struct qkv_store_args *a, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
