/* family.h — CUDA kernels of the family switches' ops (kernels/ops.h: add_rows, head_norm,
 * norm_add, geglu, scale, softcap) for the bf16 activations of the CUDA backend: Qwen2's q/k/v
 * biases, Gemma 3's QK-norm, post-norms, GELU-tanh gated MLP, embedding scale and logit
 * soft-capping. Their C twins are the CPU backend's ops (kernels/cpu_ops.c); tests/gpu/
 * check_family.py compares the two.
 *
 * Every function queues one kernel on STREAM (a cudaStream_t; NULL = the default stream) and
 * returns 0 or the cudaError_t of the launch. All pointers are device memory; bf16 everywhere
 * except softcap's fp32 logits and the norms' fp32 weights (head_norm's q_w / k_w, norm_add's
 * w). Reductions (the norms) are fp32. Callable from any one host thread at a time per stream;
 * no state.
 */
#ifndef FG_FAMILY_H
#define FG_FAMILY_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* x (n, dim) += bias (dim) on every row */
int family_add_rows(void *x, const void *bias, int n, int dim, void *stream);
/* in qkv (n, (n_heads + 2 n_kv_heads) head_dim), RMSNorm each q head with q_w and each k head
 * with k_w (head_dim weights each), in place; v untouched */
int family_head_norm(void *qkv, const void *q_w, const void *k_w, int n, int n_heads,
                     int n_kv_heads, int head_dim, float eps, void *stream);
/* x (n, dim) += rmsnorm(y; w, eps), one rounding to bf16 per element */
int family_norm_add(void *x, const void *y, const void *w, int n, int dim, float eps, void *stream);
/* out (n, ffn) = gelu_tanh(gu[:, :ffn]) * gu[:, ffn:], gu (n, 2 ffn) */
int family_geglu(void *out, const void *gu, int n, int ffn, void *stream);
/* x *= s over n values */
int family_scale(void *x, size_t n, float s, void *stream);
/* x = cap * tanh(x / cap) over n fp32 values */
int family_softcap(float *x, size_t n, float cap, void *stream);

#ifdef __cplusplus
}
#endif

#endif
