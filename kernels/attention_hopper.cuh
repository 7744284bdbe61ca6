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
 * contract as attn_launch. The built configurations, one X(launcher, T, HD, BN, warpgroups,
 * version, blocks per SM the registers must allow) each: declared here, defined from the same list
 * in attention_hopper.cu. Times: bench/results/prefill2_h100_2026-11-23.log (run B). */
#define ATTN_HOPPER_CONFIGS(X)                                                                     \
    X(attn_hopper_bf16_hd128_192x80p, __nv_bfloat16, 128, 80, 3, 3, 1)                             \
    X(attn_hopper_bf16_hd128_192x64, __nv_bfloat16, 128, 64, 3, 1, 1)                              \
    X(attn_hopper_bf16_hd128_192x64p, __nv_bfloat16, 128, 64, 3, 3, 1)                             \
    X(attn_hopper_bf16_hd128_128x128, __nv_bfloat16, 128, 128, 2, 1, 1)                            \
    X(attn_hopper_bf16_hd64_128x64p, __nv_bfloat16, 64, 64, 2, 3, 2)                               \
    X(attn_hopper_bf16_hd64_128x64, __nv_bfloat16, 64, 64, 2, 1, 1)                                \
    X(attn_hopper_bf16_hd64_192x128, __nv_bfloat16, 64, 128, 3, 1, 1)                              \
    X(attn_hopper_bf16_hd64_192x128p, __nv_bfloat16, 64, 128, 3, 3, 1)                             \
    X(attn_hopper_fp16_hd128_192x64p, __half, 128, 64, 3, 3, 1)                                    \
    X(attn_hopper_fp16_hd64_192x128p, __half, 64, 128, 3, 3, 1)                                    \
    X(attn_hopper_fp16_hd128_128x128, __half, 128, 128, 2, 1, 1)                                   \
    X(attn_hopper_fp16_hd64_128x128, __half, 64, 128, 2, 1, 1)

#define ATTN_HOPPER_DECLARE(NAME, ...)                                                             \
    int NAME(const struct attn_args *a, char *err, size_t errlen);
ATTN_HOPPER_CONFIGS(ATTN_HOPPER_DECLARE)
#undef ATTN_HOPPER_DECLARE

#endif
