/* gemv_common.cuh — device helpers shared by the bf16 GEMV (gemv.cu) and the GEMV on GGUF blocks
 * (qgemv.cu): the one mma step with the activation rows as A, SiLU, and one bf16 pair of the
 * fused RMSNorm. */
#ifndef FG_GEMV_COMMON_CUH
#define FG_GEMV_COMMON_CUH

#include <cuda_bf16.h>
#include <stdint.h>

/* c += A · B for one m16n8k16 step with A rows 8-15 zero: a0 = x k-pair (2t), a2 = x k-pair
 * (2t + 8) of row g; b0, b1 = the same k-pairs of W row g. */
__device__ __forceinline__ void gemv_mma(float (&c)[4], uint32_t a0, uint32_t a2, uint32_t b0,
                                         uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float gemv_silu(float v) {
    return v / (1.0f + expf(-v));
}

/* y[at] = v, or y[at] += v when ADD, y fp32 (Y_F32) or bf16: the epilogues' one store. */
__device__ __forceinline__ void gemv_store(void *y, bool y_f32, size_t at, bool add, float v) {
    if (y_f32) {
        float *yf = static_cast<float *>(y);
        yf[at] = add ? yf[at] + v : v;
    } else {
        __nv_bfloat16 *yb = static_cast<__nv_bfloat16 *>(y);
        yb[at] = __float2bfloat16(add ? __bfloat162float(yb[at]) + v : v);
    }
}

/* One bf16 pair of h = bf16((x · scale) · gamma), in k_rmsnorm's order of operations. */
__device__ __forceinline__ uint32_t gemv_norm_pair(uint32_t x, uint32_t gm, float scale) {
    const float x0 = __uint_as_float(x << 16), x1 = __uint_as_float(x & 0xffff0000u);
    const float g0 = __uint_as_float(gm << 16), g1 = __uint_as_float(gm & 0xffff0000u);
    const __nv_bfloat162 h = __floats2bfloat162_rn(x0 * scale * g0, x1 * scale * g1);
    return *reinterpret_cast<const uint32_t *>(&h);
}

#endif
