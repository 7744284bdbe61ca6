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

/* Launchers of the all-threads-load kernel (kernels/attention_hopper.cu), now the fallback of the
 * warp-specialised one for page sizes its TMA boxes do not fit:
 * attn_hopper_<dtype>_hd<D>_<BM>x<BN>p. BM = 64 × warpgroups, BN keys per tile, "p" for ping-pong.
 * Same contract as attn_launch. X(launcher, T, HD, BN, warpgroups, blocks per SM the registers must
 * allow); declared here, defined from the same list in attention_hopper.cu. The tilings timed
 * against these: kernels/BENCH.md. */
#define ATTN_HOPPER_CONFIGS(X)                                                                     \
    X(attn_hopper_bf16_hd128_192x80p, __nv_bfloat16, 128, 80, 3, 1)                                \
    X(attn_hopper_bf16_hd64_128x64p, __nv_bfloat16, 64, 64, 2, 2)                                  \
    X(attn_hopper_fp16_hd128_192x64p, __half, 128, 64, 3, 1)                                       \
    X(attn_hopper_fp16_hd64_192x128p, __half, 64, 128, 3, 1)

/* The warp-specialised persistent kernel (kernels/attention_hopper_ws.cu), the default on sm_90:
 * attn_hws_<dtype>_hd<D>_<BM>x<BN>; X(launcher, T, HD, BN, consumer warpgroups, K/V stages,
 * ping-pong, the launcher serving page sizes its TMA boxes do not fit). */
#define ATTN_HWS_CONFIGS(X)                                                                        \
    X(attn_hws_bf16_hd128_128x128, __nv_bfloat16, 128, 128, 2, 2, true,                            \
      attn_hopper_bf16_hd128_192x80p)                                                              \
    X(attn_hws_bf16_hd128_128x128n, __nv_bfloat16, 128, 128, 2, 2, false,                          \
      attn_hopper_bf16_hd128_192x80p)                                                              \
    X(attn_hws_bf16_hd64_128x128, __nv_bfloat16, 64, 128, 2, 2, true,                              \
      attn_hopper_bf16_hd64_128x64p)                                                               \
    X(attn_hws_bf16_hd64_128x192, __nv_bfloat16, 64, 192, 2, 2, true,                              \
      attn_hopper_bf16_hd64_128x64p)                                                               \
    X(attn_hws_fp16_hd128_128x128, __half, 128, 128, 2, 2, true, attn_hopper_fp16_hd128_192x64p)   \
    X(attn_hws_fp16_hd64_128x128, __half, 64, 128, 2, 2, true, attn_hopper_fp16_hd64_192x128p)

#define ATTN_HOPPER_DECLARE(NAME, ...)                                                             \
    int NAME(const struct attn_args *a, char *err, size_t errlen);
ATTN_HOPPER_CONFIGS(ATTN_HOPPER_DECLARE)
ATTN_HWS_CONFIGS(ATTN_HOPPER_DECLARE)
#undef ATTN_HOPPER_DECLARE

#endif
