/* qgemv.cu — GEMV for 1 to 16 activation rows on weights in their GGUF blocks (Q8_0, Q4_0).
 *
 * Design (the bf16 GEMV's, kernels/gemv.cu, on blocks): one mma.m16n8k16 takes the activation
 * rows as A (all 16 rows: a1/a3 carry rows g + 8) and 8 weight rows as B. k may be permuted
 * freely as long as x and W use the same permutation, and the permutation here depends only on
 * the lane's t = lane % 4: lane (g, t) reads, in each 32-element block of W row g, the elements
 *   Q8_0: 8t .. 8t+7        (qs bytes 8t .. 8t+7)
 *   Q4_0: 4t .. 4t+3 and 16+4t .. 16+4t+3 (the low and high nibbles of qs bytes 4t .. 4t+3)
 * and the same elements of x rows g and g + 8; two k16 steps cover one block. The mma sees the
 * integers q (Q4_0: q − 8), exact in bf16, so each block's partial dot is an fp32 sum of exact
 * products; it is then scaled by the fp32 d of its W row (d of the accumulator's W rows 2t and
 * 2t + 1, taken from lanes 8t and 8t + 4 by shuffle) and added to the running sums. The bytes are
 * read where the file put them (2-byte loads: blocks of 34 / 18 bytes keep no wider alignment).
 *
 * A block owns RT tiles of 8 W rows (SwiGLU: RT/2 gate tiles and their up tiles); its KW warps
 * split the blocks of k in interleaved runs of U, partial sums meet in shared memory in warp order
 * (deterministic), then the epilogue of gemv.cu. Programmatic dependent launch as there: the
 * first W loads are issued before griddepcontrol.wait. The fused RMSNorm (NORM): each block
 * computes the n row scales itself (one warp per row, fixed butterfly: the same bits in every
 * block), then turns x into h = bf16(x · scale · gamma) on the way into the mma.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "gemv.h"
#include "gemv_common.cuh"
#include "qgemv.h"

enum { QT_Q4_0 = 2, QT_Q8_0 = 8 }; /* enum gguf_ggml_type ids */

struct qgemv_params {
    void *y;
    const __nv_bfloat16 *x;
    const uint8_t *w;
    const __nv_bfloat16 *gamma;
    __nv_bfloat16 *h_out;
    float eps;
    int n, in_dim, out_dim;
    int epilogue, y_f32;
    int out_tiles;
    size_t row_bytes;
};

template <int TYPE> struct qtype;
template <> struct qtype<QT_Q8_0> { static constexpr int bytes = 34; };
template <> struct qtype<QT_Q4_0> { static constexpr int bytes = 18; };

/* One lane's raw share of one block of one W row: d (f16 bits) and 8 bytes (Q8_0) or 4 (Q4_0). */
struct qraw {
    uint32_t d, q0, q1;
};

__device__ __forceinline__ uint32_t ld16(const uint8_t *p) {
    return __ldg(reinterpret_cast<const unsigned short *>(p));
}

template <bool SMEM> __device__ __forceinline__ uint32_t ld16a(const uint8_t *p) {
    return SMEM ? *reinterpret_cast<const unsigned short *>(p) : ld16(p);
}

/* The lane's share of one block at blk (global memory, or the warp's staged copy when SMEM). */
template <int TYPE, bool SMEM = false>
__device__ __forceinline__ qraw qload(const uint8_t *blk, int t, bool ok) {
    qraw r = {0u, 0u, 0u};
    if (!ok) return r;
    r.d = ld16a<SMEM>(blk);
    if (TYPE == QT_Q8_0) {
        const uint8_t *q = blk + 2 + 8 * t;
        r.q0 = ld16a<SMEM>(q) | ld16a<SMEM>(q + 2) << 16;
        r.q1 = ld16a<SMEM>(q + 4) | ld16a<SMEM>(q + 6) << 16;
    } else {
        const uint8_t *q = blk + 2 + 4 * t;
        r.q0 = ld16a<SMEM>(q) | ld16a<SMEM>(q + 2) << 16;
    }
    return r;
}

/* Small integers to bf16 without the conversion units (I2F / F2F run at a fraction of the ALU
 * rate): byte k of src becomes the fp32 2^23 + byte (bits 0x4B0000bb, one PRMT), minus the bias
 * in one FADD gives the integer exactly, and an exact small-integer fp32 is its own bf16 upper
 * half, so two pack into a bf16 pair with one more PRMT. */
__device__ __forceinline__ float qmagic(uint32_t src, int k, float bias) {
    return __uint_as_float(__byte_perm(src, 0x4B00u, 0x5440u | (uint32_t)k)) - bias;
}

__device__ __forceinline__ uint32_t qpack(float lo, float hi) {
    return __byte_perm(__float_as_uint(lo), __float_as_uint(hi), 0x7632u);
}

/* 4 bytes of src (each 2^23-biased by bias) as two bf16 pairs: bytes (0, 1) and (2, 3). */
__device__ __forceinline__ uint2 qpairs(uint32_t src, float bias) {
    return make_uint2(qpack(qmagic(src, 0, bias), qmagic(src, 1, bias)),
                      qpack(qmagic(src, 2, bias), qmagic(src, 3, bias)));
}

/* The lane's 8 weights as 4 bf16 pairs in the order of the x chunk of qx (exact integers):
 * Q8_0 q (int8: q ^ 0x80 = q + 128 as a byte), Q4_0 q − 8 (low nibbles, then high nibbles). */
template <int TYPE> __device__ __forceinline__ uint4 qweights(const qraw &r) {
    if (TYPE == QT_Q8_0) {
        const float bias = 8388608.0f + 128.0f;
        const uint2 a = qpairs(r.q0 ^ 0x80808080u, bias), b = qpairs(r.q1 ^ 0x80808080u, bias);
        return make_uint4(a.x, a.y, b.x, b.y);
    }
    const float bias = 8388608.0f + 8.0f;
    const uint2 lo = qpairs(r.q0 & 0x0f0f0f0fu, bias), hi = qpairs(r.q0 >> 4 & 0x0f0f0f0fu, bias);
    return make_uint4(lo.x, lo.y, hi.x, hi.y);
}

/* The lane's 8 elements of a bf16 row (x or gamma) at block b, in qweights' order. */
template <int TYPE> __device__ __forceinline__ uint4 qx(const __nv_bfloat16 *row, int b, int t) {
    if (TYPE == QT_Q8_0) return __ldg(reinterpret_cast<const uint4 *>(row + 32 * b + 8 * t));
    const uint2 lo = __ldg(reinterpret_cast<const uint2 *>(row + 32 * b + 4 * t));
    const uint2 hi = __ldg(reinterpret_cast<const uint2 *>(row + 32 * b + 16 + 4 * t));
    return make_uint4(lo.x, lo.y, hi.x, hi.y);
}

template <int TYPE>
__device__ __forceinline__ void qstore_h(__nv_bfloat16 *row, int b, int t, uint4 h) {
    if (TYPE == QT_Q8_0) {
        *reinterpret_cast<uint4 *>(row + 32 * b + 8 * t) = h;
    } else {
        *reinterpret_cast<uint2 *>(row + 32 * b + 4 * t) = make_uint2(h.x, h.y);
        *reinterpret_cast<uint2 *>(row + 32 * b + 16 + 4 * t) = make_uint2(h.z, h.w);
    }
}

__device__ __forceinline__ uint4 qnorm_chunk(uint4 x, uint4 gm, float scale) {
    return make_uint4(gemv_norm_pair(x.x, gm.x, scale), gemv_norm_pair(x.y, gm.y, scale),
                      gemv_norm_pair(x.z, gm.z, scale), gemv_norm_pair(x.w, gm.w, scale));
}

/* RMSNorm scales of the n rows into sc (shared): warp w sums rows w, w + KW, ... (lane i over
 * 16-byte chunks i, i + 32, ..., then a fixed butterfly), so every block gets the same bits. */
template <int KW> __device__ __forceinline__ void qnorm_scales(const qgemv_params &p, float *sc) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int r = warp; r < p.n; r += KW) {
        const __nv_bfloat16 *xr = p.x + (size_t)r * p.in_dim;
        float s = 0.0f;
        for (int i = lane; i < p.in_dim / 8; i += 32) {
            const uint4 v = __ldg(reinterpret_cast<const uint4 *>(xr) + i);
            const uint32_t wd[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float lo = __uint_as_float(wd[e] << 16);
                const float hi = __uint_as_float(wd[e] & 0xffff0000u);
                s += lo * lo;
                s += hi * hi;
            }
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1)
            s += __shfl_xor_sync(0xffffffffu, s, off);
        if (lane == 0) sc[r] = rsqrtf(s / p.in_dim + p.eps); /* as k_rmsnorm: sum / dim + eps */
    }
    __syncthreads();
}

template <int TYPE, int RT, int U>
__device__ __forceinline__ void qload_run(qraw (&wv)[U][RT], const uint8_t *const (&wrow)[RT],
                                          int c, int n_blocks, int t) {
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int r = 0; r < RT; r++)
            wv[u][r] =
                qload<TYPE>(wrow[r] + (size_t)(c + u) * qtype<TYPE>::bytes, t, c + u < n_blocks);
}

/* STAGED: a warp's run (U blocks of its 8 · RT rows) is U · bytes per row, a whole number V of
 * 16-byte words when the rows are 16-byte aligned and U = 8 (272 / 144 bytes); the warp reads it
 * with coalesced 16-byte loads (lane l: words l, l + 32, ... of the run's 8 V per tile), stores it
 * in its shared-memory stage and the lanes take their bytes from there. */
template <int TYPE, int U> struct qstage {
    static constexpr int run = U * qtype<TYPE>::bytes; /* bytes of one row's run */
    static constexpr int words = run / 16;             /* V */
    static constexpr int per_lane = (8 * words + 31) / 32;
};

template <int TYPE, int RT, int U>
__device__ __forceinline__ void qstage_load(uint4 (&sv)[RT][qstage<TYPE, U>::per_lane],
                                            const qgemv_params &p, int j0, int c, int lane) {
    constexpr int V = qstage<TYPE, U>::words, PL = qstage<TYPE, U>::per_lane;
    const int OT = p.out_tiles;
    const bool swiglu = p.epilogue == FG_GEMV_SWIGLU;
#pragma unroll
    for (int r = 0; r < RT; r++)
#pragma unroll
        for (int q = 0; q < PL; q++) {
            const int i = lane + 32 * q;
            if (i >= 8 * V) continue;
            const int row = i / V, col = i % V;
            const int o = swiglu ? r % OT : r;
            const int j = min(j0 + o * 8 + row, p.out_dim - 1);
            const size_t wr = (size_t)j + (swiglu && r >= OT ? p.out_dim : 0);
            sv[r][q] = __ldcs(reinterpret_cast<const uint4 *>(
                p.w + wr * p.row_bytes + (size_t)c * qtype<TYPE>::bytes + 16 * col));
        }
}

template <int TYPE, int RT, int KW, int U, bool NORM, bool STAGED>
__global__ void __launch_bounds__(KW * 32, 16 / KW) qgemv_kernel(const qgemv_params p) {
    __shared__ float red[KW][RT][FG_QGEMV_MAX_ROWS][8]; /* warp, W tile, act row, W row */
    __shared__ float sc[FG_QGEMV_MAX_ROWS];
    constexpr int PL = qstage<TYPE, U>::per_lane, V = qstage<TYPE, U>::words;
    __shared__ __align__(16)
        uint8_t stage[STAGED ? KW : 1][STAGED ? RT : 1][8][STAGED ? qstage<TYPE, U>::run : 16];
    uint4 sv[RT][PL];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int OT = p.out_tiles, j0 = blockIdx.x * 8 * OT;
    const bool swiglu = p.epilogue == FG_GEMV_SWIGLU;

    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");

    const uint8_t *wrow[RT];
#pragma unroll
    for (int r = 0; r < RT; r++) {
        const int o = swiglu ? r % OT : r;
        const int j = min(j0 + o * 8 + g, p.out_dim - 1);
        const size_t row = (size_t)j + (swiglu && r >= OT ? p.out_dim : 0);
        wrow[r] = p.w + row * p.row_bytes;
    }
    const bool has0 = g < p.n, has1 = g + 8 < p.n;
    const __nv_bfloat16 *x0 = p.x + (size_t)(has0 ? g : 0) * p.in_dim;
    const __nv_bfloat16 *x1 = p.x + (size_t)(has1 ? g + 8 : 0) * p.in_dim;

    float acc[RT][4];
#pragma unroll
    for (int r = 0; r < RT; r++)
        acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = 0.0f;

    const int n_blocks = p.in_dim / 32, step = KW * U;
    const uint4 zero = make_uint4(0, 0, 0, 0);
    int c0 = warp * U;
    qraw wv[U][RT];
    if (STAGED) {
        if (c0 < n_blocks) qstage_load<TYPE, RT, U>(sv, p, j0, c0, lane);
    } else {
        qload_run<TYPE, RT, U>(wv, wrow, c0, n_blocks, t);
    }
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    if (NORM) qnorm_scales<KW>(p, sc);
    const float s0 = NORM && has0 ? sc[g] : 0.0f, s1 = NORM && has1 ? sc[g + 8] : 0.0f;
    const bool store_h = NORM && p.h_out && blockIdx.x == 0;
    while (c0 < n_blocks) {
        const int c1 = c0 + step;
        if (STAGED) {
#pragma unroll
            for (int r = 0; r < RT; r++)
#pragma unroll
                for (int q = 0; q < PL; q++) {
                    const int i = lane + 32 * q;
                    if (i < 8 * V)
                        *reinterpret_cast<uint4 *>(&stage[warp][r][i / V][16 * (i % V)]) = sv[r][q];
                }
            __syncwarp();
            if (c1 < n_blocks) qstage_load<TYPE, RT, U>(sv, p, j0, c1, lane);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int b = c0 + u;
            const bool in = b < n_blocks;
            uint4 xa = in && has0 ? qx<TYPE>(x0, b, t) : zero;
            uint4 xb = in && has1 ? qx<TYPE>(x1, b, t) : zero;
            if (NORM && in) {
                const uint4 gm = qx<TYPE>(p.gamma, b, t);
                xa = qnorm_chunk(xa, gm, s0);
                xb = qnorm_chunk(xb, gm, s1);
                if (store_h && has0) qstore_h<TYPE>(p.h_out + (size_t)g * p.in_dim, b, t, xa);
                if (store_h && has1) qstore_h<TYPE>(p.h_out + (size_t)(g + 8) * p.in_dim, b, t, xb);
            }
#pragma unroll
            for (int r = 0; r < RT; r++) {
                const qraw raw =
                    STAGED ? qload<TYPE, true>(&stage[warp][r][g][u * qtype<TYPE>::bytes], t, true)
                           : wv[u][r];
                const uint4 q = qweights<TYPE>(raw);
                float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                    "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                    : "+f"(part[0]), "+f"(part[1]), "+f"(part[2]), "+f"(part[3])
                    : "r"(xa.x), "r"(xb.x), "r"(xa.y), "r"(xb.y), "r"(q.x), "r"(q.y));
                asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                    "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                    : "+f"(part[0]), "+f"(part[1]), "+f"(part[2]), "+f"(part[3])
                    : "r"(xa.z), "r"(xb.z), "r"(xa.w), "r"(xb.w), "r"(q.z), "r"(q.w));
                const float d = __half2float(__ushort_as_half((unsigned short)raw.d));
                const float d0 = __shfl_sync(0xffffffffu, d, 8 * t);
                const float d1 = __shfl_sync(0xffffffffu, d, 8 * t + 4);
                acc[r][0] += d0 * part[0];
                acc[r][1] += d1 * part[1];
                acc[r][2] += d0 * part[2];
                acc[r][3] += d1 * part[3];
            }
        }
        if (STAGED) __syncwarp(); /* the stage is rewritten next run */
        if (!STAGED && c1 < n_blocks) qload_run<TYPE, RT, U>(wv, wrow, c1, n_blocks, t);
        c0 = c1;
    }
#pragma unroll
    for (int r = 0; r < RT; r++) {
        red[warp][r][g][2 * t] = acc[r][0];
        red[warp][r][g][2 * t + 1] = acc[r][1];
        red[warp][r][g + 8][2 * t] = acc[r][2];
        red[warp][r][g + 8][2 * t + 1] = acc[r][3];
    }
    __syncthreads();

    /* Epilogue: one thread per (output tile, activation row, output column), as gemv.cu. */
    for (int e = threadIdx.x; e < OT * p.n * 8; e += KW * 32) {
        const int o = e / (p.n * 8), b = (e / 8) % p.n, i = e % 8;
        const int j = j0 + o * 8 + i;
        if (j >= p.out_dim) continue;
        float v = 0.0f, up = 0.0f;
        for (int ww = 0; ww < KW; ww++) {
            v += red[ww][o][b][i];
            if (swiglu) up += red[ww][o + OT][b][i];
        }
        if (swiglu) v = gemv_silu(v) * up;
        const size_t at = (size_t)b * p.out_dim + j;
        if (p.y_f32) {
            float *y = static_cast<float *>(p.y);
            y[at] = p.epilogue == FG_GEMV_ADD ? y[at] + v : v;
        } else {
            __nv_bfloat16 *y = static_cast<__nv_bfloat16 *>(p.y);
            y[at] = __float2bfloat16(p.epilogue == FG_GEMV_ADD ? __bfloat162float(y[at]) + v : v);
        }
    }
}

/* One variant: RT 2 tiles, KW 8 warps, runs of U 4 blocks (gemv.cu's pick, rt2_kw8_u4). */
#define QG_RT 2
#define QG_KW 8
#define QG_U 4
/* The staged kernel runs 8 blocks (whole 16-byte words per row run). */
#define QG_US 8

extern "C" int fg_qgemv_supported(int wtype, int n, int in_dim, int out_dim) {
    return (wtype == QT_Q8_0 || wtype == QT_Q4_0) && n >= 1 && n <= FG_QGEMV_MAX_ROWS &&
           in_dim >= 32 && in_dim % 32 == 0 && out_dim >= 1;
}

/* Rows that start on 16-byte boundaries and whole runs of QG_US blocks take the staged kernel. */
extern "C" int fg_qgemv_staged(int wtype, const void *w, int in_dim) {
    const size_t row_bytes = (size_t)(in_dim / 32) * (wtype == QT_Q8_0 ? 34 : 18);
    return (uintptr_t)w % 16 == 0 && row_bytes % 16 == 0 && (in_dim / 32) % QG_US == 0;
}

template <bool NORM> static void (*qgemv_pick_kernel(int wtype, bool staged))(const qgemv_params) {
    if (staged)
        return wtype == QT_Q8_0 ? qgemv_kernel<QT_Q8_0, QG_RT, QG_KW, QG_US, NORM, true>
                                : qgemv_kernel<QT_Q4_0, QG_RT, QG_KW, QG_US, NORM, true>;
    return wtype == QT_Q8_0 ? qgemv_kernel<QT_Q8_0, QG_RT, QG_KW, QG_U, NORM, false>
                            : qgemv_kernel<QT_Q4_0, QG_RT, QG_KW, QG_U, NORM, false>;
}

static int qgemv_launch(int norm, qgemv_params p, int wtype, int epilogue, void *stream) {
    if (!fg_qgemv_supported(wtype, p.n, p.in_dim, p.out_dim) || epilogue < FG_GEMV_STORE ||
        epilogue > FG_GEMV_SWIGLU || (uintptr_t)p.x % 16 || (uintptr_t)p.w % 2 ||
        ((uintptr_t)p.gamma | (uintptr_t)p.h_out) % 16 || !p.y)
        return (int)cudaErrorInvalidValue;
    const int swiglu = epilogue == FG_GEMV_SWIGLU;
    p.epilogue = epilogue;
    p.out_tiles = swiglu ? QG_RT / 2 : QG_RT;
    p.row_bytes = (size_t)(p.in_dim / 32) * (wtype == QT_Q8_0 ? 34 : 18);
    const int cols = 8 * p.out_tiles;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)((p.out_dim + cols - 1) / cols));
    cfg.blockDim = dim3(QG_KW * 32);
    cfg.stream = static_cast<cudaStream_t>(stream);
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    const bool staged = fg_qgemv_staged(wtype, p.w, p.in_dim) != 0;
    cudaError_t e = cudaLaunchKernelEx(
        &cfg,
        norm ? qgemv_pick_kernel<true>(wtype, staged) : qgemv_pick_kernel<false>(wtype, staged), p);
    return (int)(e != cudaSuccess ? e : cudaGetLastError());
}

extern "C" int fg_qgemv(void *y, int y_f32, const void *x, const void *w, int wtype, int n,
                        int in_dim, int out_dim, int epilogue, void *stream) {
    qgemv_params p = {};
    p.y = y;
    p.y_f32 = y_f32 != 0;
    p.x = static_cast<const __nv_bfloat16 *>(x);
    p.w = static_cast<const uint8_t *>(w);
    p.n = n;
    p.in_dim = in_dim;
    p.out_dim = out_dim;
    return qgemv_launch(0, p, wtype, epilogue, stream);
}

extern "C" int fg_qgemv_norm(void *y, int y_f32, const void *x, const void *gamma, float eps,
                             void *h_out, const void *w, int wtype, int n, int in_dim, int out_dim,
                             int epilogue, void *stream) {
    if (!gamma) return (int)cudaErrorInvalidValue;
    qgemv_params p = {};
    p.y = y;
    p.y_f32 = y_f32 != 0;
    p.x = static_cast<const __nv_bfloat16 *>(x);
    p.w = static_cast<const uint8_t *>(w);
    p.gamma = static_cast<const __nv_bfloat16 *>(gamma);
    p.h_out = static_cast<__nv_bfloat16 *>(h_out);
    p.eps = eps;
    p.n = n;
    p.in_dim = in_dim;
    p.out_dim = out_dim;
    return qgemv_launch(1, p, wtype, epilogue, stream);
}

/* One thread per block of 32: d · q in fp32, rounded once to bf16, four 16-byte stores. */
template <int TYPE>
__global__ void qdequant_kernel(__nv_bfloat16 *dst, const uint8_t *w, size_t n_blocks) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_blocks) return;
    const uint8_t *blk = w + i * qtype<TYPE>::bytes;
    const float d = __half2float(__ushort_as_half((unsigned short)ld16(blk)));
    float v[32];
    for (int j = 0; j < 16; j++) {
        if (TYPE == QT_Q8_0) {
            v[j] = (float)(int8_t)blk[2 + j] * d;
            v[j + 16] = (float)(int8_t)blk[18 + j] * d;
        } else {
            v[j] = d * (float)((blk[2 + j] & 0x0f) - 8);
            v[j + 16] = d * (float)((blk[2 + j] >> 4) - 8);
        }
    }
    uint4 *o = reinterpret_cast<uint4 *>(dst + i * 32);
    for (int c = 0; c < 4; c++) {
        uint32_t pr[4];
        for (int e = 0; e < 4; e++) {
            const __nv_bfloat162 h = __floats2bfloat162_rn(v[8 * c + 2 * e], v[8 * c + 2 * e + 1]);
            pr[e] = *reinterpret_cast<const uint32_t *>(&h);
        }
        o[c] = make_uint4(pr[0], pr[1], pr[2], pr[3]);
    }
}

extern "C" int fg_qdequant_bf16(void *dst, const void *w, int wtype, int rows, int cols,
                                void *stream) {
    if ((wtype != QT_Q8_0 && wtype != QT_Q4_0) || rows < 1 || cols < 32 || cols % 32 ||
        (uintptr_t)dst % 16 || (uintptr_t)w % 2)
        return (int)cudaErrorInvalidValue;
    const size_t n_blocks = (size_t)rows * (cols / 32);
    const unsigned grid = (unsigned)((n_blocks + 255) / 256);
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    __nv_bfloat16 *o = static_cast<__nv_bfloat16 *>(dst);
    const uint8_t *in = static_cast<const uint8_t *>(w);
    if (wtype == QT_Q8_0)
        qdequant_kernel<QT_Q8_0><<<grid, 256, 0, s>>>(o, in, n_blocks);
    else
        qdequant_kernel<QT_Q4_0><<<grid, 256, 0, s>>>(o, in, n_blocks);
    return (int)cudaGetLastError();
}

extern "C" size_t fg_qpack_bytes(int wtype, int rows, int cols) {
    if ((wtype != QT_Q8_0 && wtype != QT_Q4_0) || rows < 1 || cols < 32 || cols % 32) return 0;
    return (size_t)rows * (size_t)(cols / 32) * (wtype == QT_Q8_0 ? 34 : 18);
}

/* The file's layout, as it is: a device-to-device copy. */
extern "C" int fg_qpack(void *dst, const void *src, int wtype, int rows, int cols, void *stream) {
    const size_t bytes = fg_qpack_bytes(wtype, rows, cols);
    if (!bytes || !dst || !src) return (int)cudaErrorInvalidValue;
    return (int)cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice,
                                static_cast<cudaStream_t>(stream));
}
