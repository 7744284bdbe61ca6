/* attention_hopper.cuh — host-side interface between the selector (kernels/attention.cu) and the
 * Hopper prefill kernel (kernels/attention_hopper.cu): its launchers, one per built configuration,
 * and the kernel-parameter builder both prefill kernels share. Internal to libfgattn; the public
 * API stays kernels/attention.h.
 */
#ifndef FG_ATTENTION_HOPPER_CUH
#define FG_ATTENTION_HOPPER_CUH

#include <stddef.h>

#include "attention.h"
#include "attention_common.cuh"

/* The kernel parameters of a prefill launch (pointers, shapes, scale in the exp2 domain). */
attn_kparams attn_prefill_kparams(const struct attn_args *a);

/* 1 when the current device runs the sm_90a kernels (compute capability 9.0), else 0. */
int attn_hopper_available(void);

/* Launchers: attn_hopper_<dtype>_hd<D>_<BM>x<BN>[p]. BM = 64 × warpgroups, BN keys per tile;
 * suffix = kernel version (attention_hopper.cu): none 1, "p" 3 (late loads + ping-pong). Same
 * contract as attn_launch. */
int attn_hopper_bf16_hd128_192x80p(const struct attn_args *a, char *err, size_t errlen);
int attn_hopper_bf16_hd128_192x64(const struct attn_args *a, char *err, size_t errlen);
int attn_hopper_bf16_hd128_192x64p(const struct attn_args *a, char *err, size_t errlen);
int attn_hopper_bf16_hd128_128x128(const struct attn_args *a, char *err, size_t errlen);
int attn_hopper_bf16_hd64_128x64p(const struct attn_args *a, char *err, size_t errlen);
int attn_hopper_bf16_hd64_128x64(const struct attn_args *a, char *err, size_t errlen);
int attn_hopper_bf16_hd64_192x128(const struct attn_args *a, char *err, size_t errlen);
int attn_hopper_bf16_hd64_192x128p(const struct attn_args *a, char *err, size_t errlen);
int attn_hopper_fp16_hd128_192x64p(const struct attn_args *a, char *err, size_t errlen);
int attn_hopper_fp16_hd64_192x128p(const struct attn_args *a, char *err, size_t errlen);
int attn_hopper_fp16_hd128_128x128(const struct attn_args *a, char *err, size_t errlen);
int attn_hopper_fp16_hd64_128x128(const struct attn_args *a, char *err, size_t errlen);

#endif
