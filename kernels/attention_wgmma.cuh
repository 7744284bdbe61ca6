/* attention_wgmma.cuh — inline-PTX wrappers of the Hopper (sm_90a) warpgroup matrix instructions
 * used by the prefill kernel of kernels/attention_hopper.cu: wgmma.mma_async m64nNk16 with fp32
 * accumulators, its fences, and the shared-memory matrix descriptor.
 *
 * Accumulator layout (PTX ISA, wgmma .m64nNk16 D fragment): warp w of the warpgroup owns rows
 * 16w..16w+15; for each 8-column block i, thread (g = lane / 4, t = lane % 4) holds d[4i], d[4i+1]
 * = (row g, cols 8i+2t, 8i+2t+1) and d[4i+2], d[4i+3] = (row g+8, same cols), i.e. the mma.sync
 * m16n8 C fragment repeated N/8 times. An A operand from registers is, per warp, the mma.sync
 * m16n8k16 A fragment of its 16 rows, so P goes from the S accumulators to A without shared memory.
 *
 * Shared operands use the 128-byte swizzle: a tile of ROWS × (64·c) 16-bit elements is stored as c
 * column blocks of ROWS rows × 128 bytes, each 16-byte chunk k of row r at chunk k ^ (r & 7),
 * blocks 1024-byte aligned. Descriptor: K-major (Q, K): SBO = 1024 (next 8 rows), LBO unused; the
 * k-th 16-column step inside a 128-byte row adds 32 bytes to the start address. MN-major (V as B of
 * P·V, imm-trans-b = 1): SBO = 1024 (next 8 keys), LBO = the byte stride of 64-column blocks.
 * Also here: the mbarrier and register-reallocation instructions of the warp-specialised kernel.
 * The instructions exist only on sm_90a: callers compile them under __CUDA_ARCH_FEAT_SM90_ALL.
 */
#ifndef FG_ATTENTION_WGMMA_CUH
#define FG_ATTENTION_WGMMA_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

/* Shared-memory matrix descriptor, 128-byte swizzle (layout type 1 in bits 62-63). */
__device__ __forceinline__ uint64_t wgmma_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((saddr & 0x3ffffu) >> 4) | ((uint64_t)((lbo >> 4) & 0x3fffu) << 16) |
           ((uint64_t)((sbo >> 4) & 0x3fffu) << 32) | (1ull << 62);
}

/* Orders this thread's register and shared accesses before the next wgmma's. */
__device__ __forceinline__ void wgmma_fence() {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
/* Waits until at most N committed groups of this warpgroup are pending. */
template <int N> __device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/* Pins registers written by an in-flight wgmma behind the preceding wait, so the compiler cannot
 * read or move them earlier. */
template <int N> __device__ __forceinline__ void wgmma_hold(float *r) {
#pragma unroll
    for (int i = 0; i < N; i++)
        asm volatile("" : "+f"(r[i])::"memory");
}
template <int N> __device__ __forceinline__ void wgmma_hold(uint32_t *r) {
#pragma unroll
    for (int i = 0; i < N; i++)
        asm volatile("" : "+r"(r[i])::"memory");
}
/* Keeps registers that an in-flight wgmma reads (its A operand) allocated until this point: a real
 * instruction reads them here, so ptxas cannot hand them to other values before the wait above. */
template <int N> __device__ __forceinline__ void wgmma_keep(uint32_t *r) {
#pragma unroll
    for (int i = 0; i < N; i++)
        asm volatile("mov.b32 %0, %0;\n" : "+r"(r[i])::"memory");
}
/* Makes this thread's generic-proxy shared writes (cp.async, st.shared) visible to wgmma. */
__device__ __forceinline__ void fence_proxy_async() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

/* Named barrier id (1..15; 0 is __syncthreads) over n threads: sync waits, arrive does not. */
__device__ __forceinline__ void named_bar_sync(int id, int n) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int n) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}

/* mbarriers in shared memory (PTX ISA "mbarrier"): a phase completes when `count` arrivals have
 * been made; waiters name the parity of the phase they wait for. A fresh barrier is in phase 0, so
 * waiting for parity 1 passes at once (how a producer finds every stage empty the first time). */
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
/* Makes the initialisations visible to the other threads (before the block's first barrier). */
__device__ __forceinline__ void mbar_init_fence() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
/* A ring of st stages with a "full" barrier (one arrival: the producer's expect_tx) and an "empty"
 * one (`consumers` arrivals) per stage, full[i] at bar0 + 8 i, empty[i] at bar0 + 8 (st + i):
 * thread 0 initialises them (a __syncthreads must follow before any use). */
__device__ __forceinline__ void mbar_ring_init(uint32_t bar0, int st, uint32_t consumers) {
    if (threadIdx.x != 0) return;
    for (int s = 0; s < st; s++) {
        mbar_init(bar0 + 8 * s, 1);
        mbar_init(bar0 + 8 * (st + s), consumers);
    }
    mbar_init_fence();
}
/* The next stage of such a ring; the parity to wait for flips at each wrap. */
__device__ __forceinline__ void mbar_ring_next(int &s, uint32_t &ph, int st) {
    if (++s == st) {
        s = 0;
        ph ^= 1;
    }
}
/* Arrives once every cp.async this thread has issued so far has landed. */
__device__ __forceinline__ void mbar_arrive_cp_async(uint32_t bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    asm volatile("{\n.reg .pred done;\nWAIT:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra WAIT;\n}\n" ::"r"(bar),
                 "r"(parity)
                 : "memory");
}

/* Arrives and adds `bytes` to the transaction count the current phase waits for (TMA). */
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
                 : "memory");
}
/* TMA: the box at coordinates (c0, c1, c2) of the 3-D tensor map at tmap (a kernel parameter's
 * generic address) into shared memory at dst; its bytes complete on bar. */
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const void *tmap, int c0, int c1, int c2,
                                            uint32_t bar) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
                 "l"(tmap), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
                 : "memory");
}

/* The 1-D bulk copy (no tensor map): bytes (a multiple of 16, both addresses 16-byte aligned) from
 * global src into shared memory at dst, completing on bar, with an L2 cache policy (createpolicy).
 */
__device__ __forceinline__ void bulk_load_1d(uint32_t dst, const void *src, uint32_t bytes,
                                             uint32_t bar, uint64_t policy) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
                 " [%0], [%1], %2, [%3], %4;\n" ::"r"(dst),
                 "l"(src), "r"(bytes), "r"(bar), "l"(policy)
                 : "memory");
}

/* Warp specialisation: a warpgroup gives registers back to the SM's pool (dec) or takes them
 * (inc); N is per thread, a multiple of 8 in [24, 256]. */
template <int N> __device__ __forceinline__ void setmaxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N> __device__ __forceinline__ void setmaxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}

/* hop_mma<T, N>::ss: d (+)= A·B, both from shared memory, K-major (S = Q Kᵀ).
 * hop_mma<T, N>::rs_t: d (+)= A·B, A from registers, B MN-major (O += P V).
 * acc = 0 overwrites d, 1 accumulates. */
template <typename T, int N> struct hop_mma;

/* The specialisations differ only in the PTX type and N, so one macro writes them all. The asm
 * operands are the N/2 accumulators d[] first (%0 ..), then the inputs: HOP_MMA_R<N> names the
 * accumulators in the asm text, HOP_MMA_F<N> binds them, HOP_MMA_NEXT<N> numbers the six operands
 * after them (ss: da, db, acc; rs_t: a[0..3], db, acc). */
#define HOP_MMA_R64                                                                                \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "   \
    "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define HOP_MMA_R80 HOP_MMA_R64 ", %32, %33, %34, %35, %36, %37, %38, %39"
#define HOP_MMA_R128                                                                               \
    HOP_MMA_R80 ", %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, "    \
                "%55, %56, %57, %58, %59, %60, %61, %62, %63"
#define HOP_MMA_R192                                                                               \
    HOP_MMA_R128                                                                                   \
    ", %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, "                \
    "%79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, "             \
    "%95"
#define HOP_MMA_F8(i)                                                                              \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]),    \
        "+f"(d[i + 6]), "+f"(d[i + 7])
#define HOP_MMA_F64 HOP_MMA_F8(0), HOP_MMA_F8(8), HOP_MMA_F8(16), HOP_MMA_F8(24)
#define HOP_MMA_F80 HOP_MMA_F64, HOP_MMA_F8(32)
#define HOP_MMA_F128 HOP_MMA_F80, HOP_MMA_F8(40), HOP_MMA_F8(48), HOP_MMA_F8(56)
#define HOP_MMA_F192 HOP_MMA_F128, HOP_MMA_F8(64), HOP_MMA_F8(72), HOP_MMA_F8(80), HOP_MMA_F8(88)
#define HOP_MMA_NEXT64 32, 33, 34, 35, 36, 37
#define HOP_MMA_NEXT80 40, 41, 42, 43, 44, 45
#define HOP_MMA_NEXT128 64, 65, 66, 67, 68, 69
#define HOP_MMA_NEXT192 96, 97, 98, 99, 100, 101

/* hop_mma<T, N> for T's PTX type TS (bf16, f16). The extra level expands HOP_MMA_NEXT<N> into
 * the six numbers n0..n5 before they are stringified into the asm text. */
#define HOP_MMA_DEF(T, TS, N) HOP_MMA_EXPAND(T, TS, N, HOP_MMA_NEXT##N)
#define HOP_MMA_EXPAND(T, TS, N, NEXT) HOP_MMA_BODY(T, TS, N, NEXT)
#define HOP_MMA_BODY(T, TS, N, n0, n1, n2, n3, n4, n5)                                             \
    template <> struct hop_mma<T, N> {                                                             \
        static __device__ __forceinline__ void ss(float *d, uint64_t da, uint64_t db, int acc) {   \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #n2 ", 0;\n"                         \
                         "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." #TS "." #TS " "         \
                         "{" HOP_MMA_R##N "}, %" #n0 ", %" #n1 ", p, 1, 1, 0, 0;\n}\n"             \
                         : HOP_MMA_F##N                                                            \
                         : "l"(da), "l"(db), "r"(acc));                                            \
        }                                                                                          \
        /* A from registers (a[4], the m16n8k16 A fragment of this warp's 16 rows); B MN-major. */ \
        static __device__ __forceinline__ void rs_t(float *d, const uint32_t *a, uint64_t db,      \
                                                    int acc) {                                     \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #n5 ", 0;\n"                         \
                         "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." #TS "." #TS " "         \
                         "{" HOP_MMA_R##N "}, {%" #n0 ", %" #n1 ", %" #n2 ", %" #n3 "}, "          \
                                          "%" #n4 ", p, 1, 1, 1;\n}\n"                             \
                         : HOP_MMA_F##N                                                            \
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc));         \
        }                                                                                          \
    };

HOP_MMA_DEF(__nv_bfloat16, bf16, 64)
HOP_MMA_DEF(__half, f16, 64)
HOP_MMA_DEF(__nv_bfloat16, bf16, 80)
HOP_MMA_DEF(__half, f16, 80)
HOP_MMA_DEF(__nv_bfloat16, bf16, 128)
HOP_MMA_DEF(__half, f16, 128)
HOP_MMA_DEF(__nv_bfloat16, bf16, 192)
HOP_MMA_DEF(__half, f16, 192)

#endif
