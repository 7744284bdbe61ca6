/* gemv_common.cuh — device helpers shared by the bf16 GEMV (gemv.cu) and the GEMV on GGUF blocks
 * (qgemv.cu) and the FP8 GEMV (fp8.cu): the one mma step with the activation rows as A, SiLU,
 * the output store, the partial sums' epilogue, and the fused RMSNorm's h chunk (bf16 x, fp32
 * gamma). */
#ifndef FG_GEMV_COMMON_CUH
#define FG_GEMV_COMMON_CUH

#include <cuda_bf16.h>
#include <stdint.h>

#include "gemv.h"

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

/* The epilogue of the bf16 and the block GEMVs: one of the first nthr threads per (output tile,
 * activation row, output column) sums the KW warps' partial dots of red (floats: warp, W tile,
 * NR activation rows, 8 W rows) in warp order (SwiGLU: the gate tile's and its up tile's, SiLU),
 * then stores. P: gemv_params or qgemv_params (y, y_f32, n, out_dim, epilogue, out_tiles). */
template <int KW, int RT, int NR, typename P>
__device__ __forceinline__ void gemv_epilogue(const P &p, const float *red, int j0, int nthr) {
    const int OT = p.out_tiles;
    const bool swiglu = p.epilogue == FG_GEMV_SWIGLU;
    for (int e = threadIdx.x; e < OT * p.n * 8; e += nthr) {
        const int o = e / (p.n * 8), b = (e / 8) % p.n, i = e % 8;
        const int j = j0 + o * 8 + i;
        if (j >= p.out_dim) continue;
        float v = 0.0f, up = 0.0f;
        for (int ww = 0; ww < KW; ww++) {
            v += red[((ww * RT + o) * NR + b) * 8 + i];
            if (swiglu) up += red[((ww * RT + o + OT) * NR + b) * 8 + i];
        }
        if (swiglu) v = gemv_silu(v) * up;
        gemv_store(p.y, p.y_f32, (size_t)b * p.out_dim + j, p.epilogue == FG_GEMV_ADD, v);
    }
}

/* The fused RMSNorm's weight gamma is fp32 (kernels/ops.h: norm weights are fp32 on every
 * backend): 8 of them, the ones of one 16-byte chunk of 8 bf16 x, as two float4 loads. */
struct gemv_gamma8 {
    float4 lo, hi; /* elements 0-3, 4-7 */
};

/* gamma[0..7] at p (16-byte aligned), read through L1 like x */
__device__ __forceinline__ gemv_gamma8 gemv_load_gamma(const float *p) {
    const float4 *q = reinterpret_cast<const float4 *>(p);
    return {__ldg(q), __ldg(q + 1)};
}

/* One bf16 pair of h = bf16((x · scale) · gamma), in k_rmsnorm's order of operations. */
__device__ __forceinline__ uint32_t gemv_norm_pair(uint32_t x, float g0, float g1, float scale) {
    const float x0 = __uint_as_float(x << 16), x1 = __uint_as_float(x & 0xffff0000u);
    const __nv_bfloat162 h = __floats2bfloat162_rn(x0 * scale * g0, x1 * scale * g1);
    return *reinterpret_cast<const uint32_t *>(&h);
}

/* The 8 h of one 16-byte chunk of x (8 bf16) with its 8 gamma. */
__device__ __forceinline__ uint4 gemv_norm_chunk(uint4 x, const gemv_gamma8 &g, float scale) {
    return make_uint4(
        gemv_norm_pair(x.x, g.lo.x, g.lo.y, scale), gemv_norm_pair(x.y, g.lo.z, g.lo.w, scale),
        gemv_norm_pair(x.z, g.hi.x, g.hi.y, scale), gemv_norm_pair(x.w, g.hi.z, g.hi.w, scale));
}

#endif
