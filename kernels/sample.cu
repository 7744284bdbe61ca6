/* sample.cu — logits → token on the GPU: the CUDA twin of sample_ref_pick()
 * (kernels/sample_ref.c).
 *
 * One thread-block cluster of SAMPLE_CLUSTER blocks per row; block r of the cluster owns the
 * contiguous id slice [r * slice, (r + 1) * slice) and keeps it in shared memory (logits, then
 * probabilities), so the row is read from device memory once and every later pass runs from
 * shared memory. Blocks combine partial results through distributed shared memory (each block
 * publishes into its own exchange slot, the cluster syncs, every block reads all slots in rank
 * order), so all blocks hold bit-identical copies of every row-wide decision and walk the same
 * path in lockstep. No device workspace, no allocation, no host sync: graph-capturable.
 *
 * Decisions follow the twin exactly:
 *  - penalty: each distinct history id once (a shared-memory bitmap per slice dedups), positive
 *    logits divided, others multiplied, written back to the logits;
 *  - greedy / target: max (lowest id on ties), logprob = x[id] - max - log(sum exp(x - max));
 *  - sampling: p = (float)(e / sum), e = expf((x - max) / T) rounded from a double exp (glibc's
 *    expf is correctly rounded in practice; CUDA's expf is 2 ulp, which would reorder near-equal
 *    probabilities against the twin), sum in double. Candidates are ordered by (p descending, id
 *    ascending). Without a cut the twin draws in id order, and so does this kernel.
 *  - Order statistics without a sort: the float bits K of p >= 0 are monotone as unsigned, so a
 *    radix select over K (digits of 8, 8, 8 and 6 bits, K < 2^30 since p <= 1) finds the key of
 *    the candidate where a running weight (count for top-k, mass for top-p and the draw) first
 *    reaches its target; ties at that key resolve by id with an ordered scan. Mass is counted
 *    in 2^-40 fixed point (u64), so every partial sum is exact and order-independent and the
 *    digit passes agree with each other; against the twin's sequential double sums it differs
 *    by at most n * 2^-41, which only moves a pick at a float near-tie.
 *  - A kept set of at most SAMPLE_CAP candidates (top-k 50, a peaked top-p) is gathered into
 *    rank 0, sorted (bitonic) and finished there with double prefix sums, as the twin does.
 */
#include <cooperative_groups.h>
#include <cuda_runtime.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "sample.h"

namespace cg = cooperative_groups;

enum {
    SAMPLE_CLUSTER = 8, /* blocks per row: the portable cluster limit */
    SAMPLE_THREADS = 512,
    SAMPLE_WARPS = SAMPLE_THREADS / 32,
    SAMPLE_NHIST = 8,  /* histogram copies, one per two warps: spreads same-bin atomics */
    SAMPLE_BINS = 256, /* 8-bit digits */
    SAMPLE_CAP = 2048, /* kept sets up to this size finish with a sort in rank 0 */
};
/* Blocks per SM the register budget is sized for: 2 caps registers at 64 (a few per-pass
 * spills), so two 108 KB blocks of a 128k vocab share an SM; 1 allows 122 registers, no spills.
 * H100, vocab 128256, 2026-11-23 (bench/results/sample_h100_2026-11-23.log): 2 is faster at 64
 * rows (top-k 50: 214 vs 271 us), 1 at 1 row (63 vs 55 us); throughput wins. */
#ifndef SAMPLE_MIN_BLOCKS
#define SAMPLE_MIN_BLOCKS 2
#endif
#define SAMPLE_FULL 0xffffffffu
#define SAMPLE_QSCALE 1099511627776.0 /* 2^40: fixed-point unit of probability mass */

/* Members of a kept set, always a prefix of the candidate order: key K > key, or K == key and
 * id <= lim. The whole row is {0, vocab - 1}. */
struct sample_set {
    unsigned key;
    int lim;
};

/* One block's published values for its cluster peers. */
struct sample_slot {
    unsigned long long q[SAMPLE_BINS]; /* histogram: mass (2^-40 units) per bin */
    unsigned c[SAMPLE_BINS];           /* histogram: count per bin */
    unsigned long long s[4];           /* scalars */
};

/* Block-wide scratch for reductions and broadcasts. */
struct sample_misc {
    double d[SAMPLE_WARPS];
    unsigned long long u[SAMPLE_WARPS];
    float f[SAMPLE_WARPS];
    int i[SAMPLE_WARPS];
    unsigned long long peer[SAMPLE_CLUSTER][4];
    unsigned long long above_q, warp_acc;
    unsigned above_c;
    int found, digit, warp_hit, cnt, imin;
};

struct sample_ctx {
    float *p;                 /* (slice) logits, then probabilities, of this block's ids */
    unsigned *bitmap;         /* (slice / 32 + 1) penalty dedup */
    unsigned *whist;          /* (NHIST, 3, BINS) count, mass >> 16, mass & 0xffff */
    unsigned long long *gbuf; /* (CAP) gathered candidates, rank 0; overlays whist */
    double *cum;              /* (CAP) their prefix sums; overlays whist */
    struct sample_slot *slot; /* (2) exchange slots, used alternately */
    unsigned long long *hq;   /* (BINS) cluster-wide histogram: mass */
    unsigned *hc;             /* (BINS) cluster-wide histogram: count */
    struct sample_misc *m;
    int n, id0, vocab, rank, tid, lane, warp;
    int ph; /* the slot the next exchange publishes in */
};

struct sample_args {
    float *logits; /* (n_rows, vocab) */
    const struct fg_sample_row *rows;
    const int *history;
    int *ids;
    float *logprobs;
    int vocab, slice, vec4;
};

/* Shared-memory layout for a slice (bytes), the same on host and device. */
struct sample_layout {
    size_t bitmap, whist, slot, hist, misc, total;
};

__host__ __device__ static inline struct sample_layout sample_layout_of(int slice) {
    struct sample_layout l;
    size_t o = (size_t)slice * sizeof(float);
    l.bitmap = o;
    o += ((size_t)slice / 32 + 1) * sizeof(unsigned);
    o = (o + 15) & ~(size_t)15;
    l.whist = o;
    size_t wh = (size_t)SAMPLE_NHIST * 3 * SAMPLE_BINS * sizeof(unsigned);
    size_t gather = (size_t)SAMPLE_CAP * (sizeof(unsigned long long) + sizeof(double));
    o += wh > gather ? wh : gather;
    l.slot = o;
    o += 2 * sizeof(struct sample_slot);
    l.hist = o;
    o += SAMPLE_BINS * (sizeof(unsigned long long) + sizeof(unsigned));
    o = (o + 15) & ~(size_t)15;
    l.misc = o;
    o += sizeof(struct sample_misc);
    l.total = o;
    return l;
}

__device__ __forceinline__ unsigned long long sample_q(unsigned key) {
    /* p * 2^40 is exact in float (a power-of-two scale), so only the integer rounding counts */
    return __float2ull_rn(__uint_as_float(key) * (float)SAMPLE_QSCALE);
}

__device__ __forceinline__ bool sample_member(struct sample_set s, unsigned key, int id) {
    return key > s.key || (key == s.key && id <= s.lim);
}

__device__ __forceinline__ bool sample_better(float v, int i, float bv, int bi) {
    return v > bv || (v == bv && i < bi);
}

/* ---- cluster exchange -------------------------------------------------------------------- */

/* The slot this block publishes in next. Writing it is safe: the last readers of that slot
 * finished before the previous exchange's cluster barrier. */
__device__ __forceinline__ struct sample_slot *sample_mine(struct sample_ctx &c) {
    return &c.slot[c.ph];
}

/* Barrier after publishing; returns the slot index peers read. */
__device__ __forceinline__ int sample_exchange(struct sample_ctx &c) {
    cg::this_cluster().sync();
    int used = c.ph;
    c.ph ^= 1;
    return used;
}

__device__ __forceinline__ const struct sample_slot *sample_peer(struct sample_ctx &c, int rank,
                                                                 int used) {
    return cg::this_cluster().map_shared_rank(&c.slot[used], rank);
}

/* Exchange, then copy every rank's first nwords scalars into m->peer. */
__device__ void sample_share(struct sample_ctx &c, int nwords) {
    int used = sample_exchange(c);
    if (c.tid < SAMPLE_CLUSTER * nwords) {
        int r = c.tid / nwords, k = c.tid % nwords;
        c.m->peer[r][k] = sample_peer(c, r, used)->s[k];
    }
    __syncthreads();
}

/* ---- block reductions (every thread gets the result; same inputs, same bits) ------------- */

__device__ double sample_block_sum_d(struct sample_ctx &c, double v) {
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(SAMPLE_FULL, v, o);
    if (c.lane == 0) c.m->d[c.warp] = v;
    __syncthreads();
    double s = 0;
    for (int w = 0; w < SAMPLE_WARPS; w++)
        s += c.m->d[w];
    __syncthreads();
    return s;
}

__device__ float sample_block_sum_f(struct sample_ctx &c, float v) {
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(SAMPLE_FULL, v, o);
    if (c.lane == 0) c.m->f[c.warp] = v;
    __syncthreads();
    float s = 0;
    for (int w = 0; w < SAMPLE_WARPS; w++)
        s += c.m->f[w];
    __syncthreads();
    return s;
}

__device__ unsigned long long sample_block_sum_u(struct sample_ctx &c, unsigned long long v) {
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(SAMPLE_FULL, v, o);
    if (c.lane == 0) c.m->u[c.warp] = v;
    __syncthreads();
    unsigned long long s = 0;
    for (int w = 0; w < SAMPLE_WARPS; w++)
        s += c.m->u[w];
    __syncthreads();
    return s;
}

__device__ void sample_block_argmax(struct sample_ctx &c, float &bv, int &bi) {
    for (int o = 16; o; o >>= 1) {
        float v = __shfl_xor_sync(SAMPLE_FULL, bv, o);
        int i = __shfl_xor_sync(SAMPLE_FULL, bi, o);
        if (sample_better(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
    if (c.lane == 0) {
        c.m->f[c.warp] = bv;
        c.m->i[c.warp] = bi;
    }
    __syncthreads();
    bv = c.m->f[0];
    bi = c.m->i[0];
    for (int w = 1; w < SAMPLE_WARPS; w++)
        if (sample_better(c.m->f[w], c.m->i[w], bv, bi)) {
            bv = c.m->f[w];
            bi = c.m->i[w];
        }
    __syncthreads();
}

/* Cluster-wide: block partial → row value, combined in rank order. */
__device__ void sample_cluster_argmax(struct sample_ctx &c, float &bv, int &bi) {
    sample_block_argmax(c, bv, bi);
    if (c.tid == 0) {
        sample_mine(c)->s[0] = __float_as_uint(bv);
        sample_mine(c)->s[1] = (unsigned)bi;
    }
    sample_share(c, 2);
    bv = __uint_as_float((unsigned)c.m->peer[0][0]);
    bi = (int)(unsigned)c.m->peer[0][1];
    for (int r = 1; r < SAMPLE_CLUSTER; r++) {
        float v = __uint_as_float((unsigned)c.m->peer[r][0]);
        int i = (int)(unsigned)c.m->peer[r][1];
        if (sample_better(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
}

__device__ double sample_cluster_sum_d(struct sample_ctx &c, double v) {
    v = sample_block_sum_d(c, v);
    if (c.tid == 0) sample_mine(c)->s[0] = (unsigned long long)__double_as_longlong(v);
    sample_share(c, 1);
    double s = 0;
    for (int r = 0; r < SAMPLE_CLUSTER; r++)
        s += __longlong_as_double((long long)c.m->peer[r][0]);
    return s;
}

__device__ float sample_cluster_sum_f(struct sample_ctx &c, float v) {
    v = sample_block_sum_f(c, v);
    if (c.tid == 0) sample_mine(c)->s[0] = __float_as_uint(v);
    sample_share(c, 1);
    float s = 0;
    for (int r = 0; r < SAMPLE_CLUSTER; r++)
        s += __uint_as_float((unsigned)c.m->peer[r][0]);
    return s;
}

/* ---- ordered search in id order ---------------------------------------------------------- */

/* Weight of a candidate for sample_find: its mass, or 1 for a member of s at key. */
struct sample_w_mass {
    __device__ unsigned long long operator()(unsigned k, int) const {
        return sample_q(k);
    }
};
struct sample_w_tie {
    struct sample_set s;
    unsigned key;
    __device__ unsigned long long operator()(unsigned k, int id) const {
        return k == key && sample_member(s, k, id);
    }
};

/* The first id of the row, in id order, whose inclusive prefix of w exceeds tgt, or -1 when the
 * row's total does not. Each warp scans a contiguous segment of its block's slice, 32 ids at a
 * time; the block, then the warp, holding the crossing is found from partial totals. */
template <class W> __device__ int sample_find(struct sample_ctx &c, W w, double tgt) {
    const int seg = (c.n + SAMPLE_THREADS - 1) / SAMPLE_THREADS * 32;
    const int s0 = c.warp * seg, s1 = min(c.n, s0 + seg);
    unsigned long long acc = 0;
    for (int i = s0 + c.lane; i < s1; i += 32)
        acc += w(__float_as_uint(c.p[i]), c.id0 + i);
    for (int o = 16; o; o >>= 1)
        acc += __shfl_xor_sync(SAMPLE_FULL, acc, o);
    if (c.lane == 0) c.m->u[c.warp] = acc;
    __syncthreads();
    if (c.tid == 0) {
        unsigned long long t = 0;
        for (int k = 0; k < SAMPLE_WARPS; k++)
            t += c.m->u[k];
        sample_mine(c)->s[0] = t;
    }
    sample_share(c, 1);
    unsigned long long ex = 0;
    int rk = -1;
    for (int r = 0; r < SAMPLE_CLUSTER; r++) {
        if ((double)(ex + c.m->peer[r][0]) > tgt) {
            rk = r;
            break;
        }
        ex += c.m->peer[r][0];
    }
    if (rk < 0) return -1; /* the same on every block */
    if (c.rank == rk) {
        if (c.tid == 0) {
            unsigned long long a = ex;
            int hit = SAMPLE_WARPS - 1;
            for (int k = 0; k < SAMPLE_WARPS; k++) {
                if ((double)(a + c.m->u[k]) > tgt) {
                    hit = k;
                    break;
                }
                a += c.m->u[k];
            }
            c.m->warp_hit = hit;
            c.m->warp_acc = a;
            sample_mine(c)->s[1] = (unsigned)-1;
        }
        __syncthreads();
        if (c.warp == c.m->warp_hit) {
            unsigned long long a = c.m->warp_acc;
            const int b0 = c.warp * seg, b1 = min(c.n, b0 + seg);
            for (int base = b0; base < b1; base += 32) {
                int i = base + c.lane;
                unsigned long long v = i < b1 ? w(__float_as_uint(c.p[i]), c.id0 + i) : 0;
                unsigned long long inc = v;
                for (int o = 1; o < 32; o <<= 1) {
                    unsigned long long t = __shfl_up_sync(SAMPLE_FULL, inc, o);
                    if (c.lane >= o) inc += t;
                }
                unsigned hit = __ballot_sync(SAMPLE_FULL, i < b1 && (double)(a + inc) > tgt);
                if (hit) {
                    if (c.lane == __ffs(hit) - 1) sample_mine(c)->s[1] = (unsigned)(c.id0 + i);
                    break;
                }
                a += __shfl_sync(SAMPLE_FULL, inc, 31);
            }
        }
    }
    int used = sample_exchange(c);
    return (int)(unsigned)sample_peer(c, rk, used)->s[1];
}

/* ---- radix select over the candidate order ----------------------------------------------- */

struct sample_sel {
    int found;
    unsigned key;               /* key of the selected candidate */
    unsigned above_c;           /* members with a larger key: count */
    unsigned long long above_q; /* ... and mass */
    unsigned ties;              /* members at key */
    int j;                      /* the selected one is the j-th tie (0-based, id order) */
    int id;
};

__device__ __forceinline__ void sample_flush(unsigned *wh, int bin, unsigned n,
                                             unsigned long long q) {
    if (bin < 0) return;
    atomicAdd(&wh[bin], n);
    atomicAdd(&wh[SAMPLE_BINS + bin], (unsigned)(q >> 16));
    atomicAdd(&wh[2 * SAMPLE_BINS + bin], (unsigned)(q & 0xffff));
}

/* Histogram of the members of s whose key agrees with prefix above bit hs, by the digit at
 * shift, into this block's slot. Each thread merges runs of one bin before its atomics (a flat
 * distribution puts everything in one bin). Mass halves cannot overflow: the high parts sum to
 * at most 2^24 + flushes, each low part is < 2^16 and a copy sees < 2^15 flushes. */
__device__ void sample_hist(struct sample_ctx &c, struct sample_set s, unsigned prefix, int hs,
                            int shift, unsigned nb) {
    for (int i = c.tid; i < SAMPLE_NHIST * 3 * SAMPLE_BINS; i += SAMPLE_THREADS)
        c.whist[i] = 0;
    __syncthreads();
    unsigned *wh = c.whist + (c.warp % SAMPLE_NHIST) * 3 * SAMPLE_BINS;
    int cur = -1;
    unsigned cn = 0;
    unsigned long long cq = 0;
    for (int i = c.tid; i < c.n; i += SAMPLE_THREADS) {
        unsigned k = __float_as_uint(c.p[i]);
        if (!sample_member(s, k, c.id0 + i) || (k >> hs) != (prefix >> hs)) continue;
        int b = (int)((k >> shift) & (nb - 1));
        if (b != cur) {
            sample_flush(wh, cur, cn, cq);
            cur = b;
            cn = 0;
            cq = 0;
        }
        cn++;
        cq += sample_q(k);
    }
    sample_flush(wh, cur, cn, cq);
    __syncthreads();
    struct sample_slot *mine = sample_mine(c);
    for (int t = c.tid; t < (int)nb; t += SAMPLE_THREADS) {
        unsigned long long hi = 0, lo = 0;
        unsigned n = 0;
        for (int h = 0; h < SAMPLE_NHIST; h++) {
            const unsigned *x = c.whist + h * 3 * SAMPLE_BINS;
            n += x[t];
            hi += x[SAMPLE_BINS + t];
            lo += x[2 * SAMPLE_BINS + t];
        }
        mine->c[t] = n;
        mine->q[t] = (hi << 16) + lo;
    }
}

__device__ __forceinline__ bool sample_reached(unsigned long long w, bool strict, double tgt) {
    return strict ? (double)w > tgt : (double)w >= tgt;
}

/* Warp 0: walk the cluster histogram from the top digit down; the first non-empty bin where
 * the running weight (count or mass) reaches tgt is the next digit. */
__device__ void sample_scan_bins(struct sample_ctx &c, unsigned nb, bool by_count, bool strict,
                                 double tgt, unsigned ac, unsigned long long aq) {
    const int per = (int)nb / 32;
    unsigned sc = 0;
    unsigned long long sq = 0;
    for (int k = 0; k < per; k++) {
        int d = (int)nb - 1 - (c.lane * per + k);
        sc += c.hc[d];
        sq += c.hq[d];
    }
    unsigned ic = sc;
    unsigned long long iq = sq;
    for (int o = 1; o < 32; o <<= 1) {
        unsigned tc = __shfl_up_sync(SAMPLE_FULL, ic, o);
        unsigned long long tq = __shfl_up_sync(SAMPLE_FULL, iq, o);
        if (c.lane >= o) {
            ic += tc;
            iq += tq;
        }
    }
    unsigned cc = ac + ic - sc;
    unsigned long long cq = aq + iq - sq;
    int hit = -1;
    for (int k = 0; k < per; k++) {
        int d = (int)nb - 1 - (c.lane * per + k);
        unsigned nc = cc + c.hc[d];
        unsigned long long nq = cq + c.hq[d];
        if (c.hc[d] > 0 && sample_reached(by_count ? nc : nq, strict, tgt)) {
            hit = d;
            break;
        }
        cc = nc;
        cq = nq;
    }
    unsigned any = __ballot_sync(SAMPLE_FULL, hit >= 0);
    if (!any) {
        if (c.lane == 0) c.m->found = 0;
    } else if (c.lane == __ffs(any) - 1) {
        c.m->found = 1;
        c.m->digit = hit;
        c.m->above_c = cc;
        c.m->above_q = cq;
    }
}

/* The first member of s, in candidate order, where the running weight — count (by_count) or
 * mass, counted from the top — reaches tgt (>= tgt, or > tgt when strict). */
__device__ struct sample_sel sample_select(struct sample_ctx &c, struct sample_set s, bool by_count,
                                           bool strict, double tgt) {
    struct sample_sel r;
    r.found = 0;
    r.id = -1;
    unsigned prefix = 0, ac = 0, ties = 0;
    unsigned long long aq = 0;
    for (int pass = 0; pass < 4; pass++) {
        const int shift = pass < 3 ? 22 - 8 * pass : 0;
        const unsigned nb = pass < 3 ? 256u : 64u;
        const int hs = pass < 3 ? shift + 8 : 6;
        sample_hist(c, s, prefix, hs, shift, nb);
        int used = sample_exchange(c);
        for (int t = c.tid; t < (int)nb; t += SAMPLE_THREADS) {
            unsigned long long q = 0;
            unsigned n = 0;
            for (int k = 0; k < SAMPLE_CLUSTER; k++) {
                const struct sample_slot *ps = sample_peer(c, k, used);
                q += ps->q[t];
                n += ps->c[t];
            }
            c.hq[t] = q;
            c.hc[t] = n;
        }
        __syncthreads();
        if (c.warp == 0) sample_scan_bins(c, nb, by_count, strict, tgt, ac, aq);
        __syncthreads();
        int found = c.m->found, d = c.m->digit;
        if (found) {
            ac = c.m->above_c;
            aq = c.m->above_q;
            ties = c.hc[d];
            prefix |= (unsigned)d << shift;
        }
        __syncthreads();
        if (!found) return r; /* pass 0: the set never reaches tgt; later passes cannot miss */
    }
    r.found = 1;
    r.key = prefix;
    r.above_c = ac;
    r.above_q = aq;
    r.ties = ties;
    /* which tie: the smallest j with reached(above + (j + 1) * w) */
    const unsigned long long base = by_count ? ac : aq;
    const unsigned long long wt = by_count ? 1ull : sample_q(prefix);
    long long j = 0;
    if (wt > 0 && ties > 1) {
        double x = (tgt - (double)base) / (double)wt;
        x = fmin(fmax(x, -1.0), (double)ties + 1.0);
        j = strict ? (long long)floor(x) : (long long)ceil(x) - 1;
        if (j < 0) j = 0;
        if (j > (long long)ties - 1) j = (long long)ties - 1;
        while (j > 0 && sample_reached(base + (unsigned long long)j * wt, strict, tgt))
            j--;
        while (j < (long long)ties - 1 &&
               !sample_reached(base + (unsigned long long)(j + 1) * wt, strict, tgt))
            j++;
    }
    r.j = (int)j;
    struct sample_w_tie w = {s, prefix};
    r.id = sample_find(c, w, (double)j);
    return r;
}

/* ---- small kept sets: gather into rank 0, sort, finish as the twin does ------------------ */

/* Block-wide minimum of v (INT_MAX when none). */
__device__ int sample_block_min(struct sample_ctx &c, int v) {
    if (c.tid == 0) c.m->imin = INT_MAX;
    __syncthreads();
    if (v != INT_MAX) atomicMin(&c.m->imin, v);
    __syncthreads();
    int r = c.m->imin;
    __syncthreads();
    return r;
}

/* Top-p (top_p < 1) and the draw over the members of s, at most SAMPLE_CAP of them, in sorted
 * order with double prefix sums; rank 0 writes the row's outputs. */
__device__ void sample_sorted(struct sample_ctx &c, struct sample_set s, float top_p, double u,
                              int *out_id, float *out_lp) {
    unsigned long long cnt = 0;
    for (int i = c.tid; i < c.n; i += SAMPLE_THREADS)
        cnt += sample_member(s, __float_as_uint(c.p[i]), c.id0 + i);
    cnt = sample_block_sum_u(c, cnt);
    if (c.tid == 0) {
        sample_mine(c)->s[0] = cnt;
        c.m->cnt = 0;
    }
    sample_share(c, 1);
    unsigned long long base = 0, all = 0;
    for (int r = 0; r < SAMPLE_CLUSTER; r++) {
        if (r < c.rank) base += c.m->peer[r][0];
        all += c.m->peer[r][0];
    }
    unsigned long long *dst = cg::this_cluster().map_shared_rank(c.gbuf, 0);
    for (int i = c.tid; i < c.n; i += SAMPLE_THREADS) {
        unsigned k = __float_as_uint(c.p[i]);
        if (!sample_member(s, k, c.id0 + i)) continue;
        unsigned long long pos = base + (unsigned)atomicAdd(&c.m->cnt, 1);
        /* descending order of this key is (p descending, id ascending); 0 pads */
        if (pos < SAMPLE_CAP)
            dst[pos] = (unsigned long long)k << 32 | (0xffffffffu - (unsigned)(c.id0 + i));
    }
    cg::this_cluster().sync();
    if (c.rank != 0) return;

    const int n = (int)(all < SAMPLE_CAP ? all : SAMPLE_CAP);
    if (n == 0) { /* cannot happen: a kept set holds at least one candidate */
        if (c.tid == 0) *out_id = -1;
        return;
    }
    unsigned long long *g = c.gbuf;
    double *cum = c.cum;
    int N = 2;
    while (N < n)
        N <<= 1;
    for (int i = n + c.tid; i < N; i += SAMPLE_THREADS)
        g[i] = 0;
    __syncthreads();
    for (int k = 2; k <= N; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = c.tid; i < N; i += SAMPLE_THREADS) {
                int x = i ^ j;
                if (x <= i) continue;
                unsigned long long a = g[i], b = g[x];
                bool desc = (i & k) == 0;
                if (desc ? a < b : a > b) {
                    g[i] = b;
                    g[x] = a;
                }
            }
            __syncthreads();
        }
    /* inclusive prefix sums in double: contiguous chunks per thread, then the chunk offsets */
    const int per = (N + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
    const int i0 = c.tid * per;
    double loc = 0;
    for (int k = 0; k < per; k++)
        if (i0 + k < n) loc += (double)__uint_as_float((unsigned)(g[i0 + k] >> 32));
    double inc = loc;
    for (int o = 1; o < 32; o <<= 1) {
        double t = __shfl_up_sync(SAMPLE_FULL, inc, o);
        if (c.lane >= o) inc += t;
    }
    if (c.lane == 31) c.m->d[c.warp] = inc;
    __syncthreads();
    double run = inc - loc;
    for (int w = 0; w < c.warp; w++)
        run += c.m->d[w];
    for (int k = 0; k < per; k++)
        if (i0 + k < n) {
            run += (double)__uint_as_float((unsigned)(g[i0 + k] >> 32));
            cum[i0 + k] = run;
        }
    __syncthreads();
    int keep = n;
    if (top_p < 1.0f) {
        int first = INT_MAX;
        for (int i = c.tid; i < n; i += SAMPLE_THREADS)
            if (cum[i] >= (double)top_p && i < first) first = i;
        first = sample_block_min(c, first);
        if (first != INT_MAX) keep = first + 1;
    }
    const double total = cum[keep - 1], r = u * total;
    int pick = INT_MAX;
    for (int i = c.tid; i < keep; i += SAMPLE_THREADS)
        if (r < cum[i] && i < pick) pick = i;
    pick = sample_block_min(c, pick);
    if (pick == INT_MAX) pick = keep - 1;
    if (c.tid == 0) {
        float pv = __uint_as_float((unsigned)(g[pick] >> 32));
        *out_id = (int)(0xffffffffu - (unsigned)g[pick]);
        *out_lp = (float)log((double)pv / total);
    }
}

/* ---- the kernel -------------------------------------------------------------------------- */

/* The value p[] holds for a global id, from its owner's shared memory. */
__device__ float sample_value(struct sample_ctx &c, int slice, int id) {
    int r = id / slice;
    return cg::this_cluster().map_shared_rank(c.p, r)[id - r * slice];
}

__device__ void sample_penalty(struct sample_ctx &c, float *row, const int *hist, int nh, float pen,
                               int slice) {
    const int words = slice / 32 + 1;
    for (int i = c.tid; i < words; i += SAMPLE_THREADS)
        c.bitmap[i] = 0;
    __syncthreads();
    for (int i = c.tid; i < nh; i += SAMPLE_THREADS) {
        int id = hist[i];
        int l = id - c.id0;
        if (id < 0 || id >= c.vocab || l < 0 || l >= c.n) continue;
        unsigned bit = 1u << (l & 31);
        if (atomicOr(&c.bitmap[l >> 5], bit) & bit) continue;
        float v = c.p[l];
        v = v > 0 ? v / pen : v * pen;
        c.p[l] = v;
        row[id] = v;
    }
    __syncthreads();
}

__global__ void __cluster_dims__(SAMPLE_CLUSTER, 1, 1)
    __launch_bounds__(SAMPLE_THREADS, SAMPLE_MIN_BLOCKS) sample_kernel(const struct sample_args a) {
    extern __shared__ __align__(16) unsigned char sample_smem[];
    const struct sample_layout L = sample_layout_of(a.slice);
    struct sample_ctx c;
    c.p = (float *)sample_smem;
    c.bitmap = (unsigned *)(sample_smem + L.bitmap);
    c.whist = (unsigned *)(sample_smem + L.whist);
    c.gbuf = (unsigned long long *)(sample_smem + L.whist);
    c.cum = (double *)(sample_smem + L.whist + SAMPLE_CAP * sizeof(unsigned long long));
    c.slot = (struct sample_slot *)(sample_smem + L.slot);
    c.hq = (unsigned long long *)(sample_smem + L.hist);
    c.hc = (unsigned *)(sample_smem + L.hist + SAMPLE_BINS * sizeof(unsigned long long));
    c.m = (struct sample_misc *)(sample_smem + L.misc);
    c.rank = (int)cg::this_cluster().block_rank();
    c.tid = threadIdx.x;
    c.lane = c.tid & 31;
    c.warp = c.tid >> 5;
    c.ph = 0;
    c.vocab = a.vocab;
    c.id0 = c.rank * a.slice;
    c.n = max(0, min(a.slice, a.vocab - c.id0));

    const int row = blockIdx.x / SAMPLE_CLUSTER;
    const struct fg_sample_row r = a.rows[row];
    float *xrow = a.logits + (size_t)row * a.vocab;
    int *out_id = a.ids + row;
    float *out_lp = a.logprobs + row;
    const bool target = r.target >= 0;

    /* load the slice (raw logits) and its max / argmax */
    float bv = -INFINITY;
    int bi = INT_MAX;
    if (a.vec4) {
        const float4 *x4 = (const float4 *)(xrow + c.id0);
        float4 *p4 = (float4 *)c.p;
        const int n4 = c.n / 4;
        for (int b = c.tid; b < n4; b += 4 * SAMPLE_THREADS) {
            float4 v[4];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                int i = b + k * SAMPLE_THREADS;
                v[k] = i < n4 ? x4[i] : make_float4(0.f, 0.f, 0.f, 0.f);
            }
#pragma unroll
            for (int k = 0; k < 4; k++) {
                int i = b + k * SAMPLE_THREADS;
                if (i >= n4) break;
                p4[i] = v[k];
                int id = c.id0 + 4 * i;
                if (sample_better(v[k].x, id, bv, bi)) bv = v[k].x, bi = id;
                if (sample_better(v[k].y, id + 1, bv, bi)) bv = v[k].y, bi = id + 1;
                if (sample_better(v[k].z, id + 2, bv, bi)) bv = v[k].z, bi = id + 2;
                if (sample_better(v[k].w, id + 3, bv, bi)) bv = v[k].w, bi = id + 3;
            }
        }
    } else {
        for (int i = c.tid; i < c.n; i += SAMPLE_THREADS) {
            float v = xrow[c.id0 + i];
            c.p[i] = v;
            if (sample_better(v, c.id0 + i, bv, bi)) bv = v, bi = c.id0 + i;
        }
    }
    __syncthreads();
    if (!target && r.repetition_penalty != 1.0f && r.n_hist > 0) {
        sample_penalty(c, xrow, a.history + r.hist_off, r.n_hist, r.repetition_penalty, a.slice);
        bv = -INFINITY;
        bi = INT_MAX;
        for (int i = c.tid; i < c.n; i += SAMPLE_THREADS)
            if (sample_better(c.p[i], c.id0 + i, bv, bi)) bv = c.p[i], bi = c.id0 + i;
    }
    sample_cluster_argmax(c, bv, bi);
    const float mx = bv;

    if (target || !r.do_sample) {
        int id = target ? r.target : bi;
        float s = 0;
        for (int i = c.tid; i < c.n; i += SAMPLE_THREADS)
            s += expf(c.p[i] - mx);
        s = sample_cluster_sum_f(c, s);
        if (c.rank == 0 && c.tid == 0) {
            if (id >= a.vocab) {
                *out_id = -1;
                *out_lp = NAN;
            } else {
                float x = sample_value(c, a.slice, id);
                *out_id = id;
                *out_lp = (float)((double)(x - mx) - log((double)s));
            }
        }
        cg::this_cluster().sync(); /* peers may still read this block's shared memory */
        return;
    }

    /* probabilities, as the twin computes them */
    const float temp = r.temperature > 0 ? r.temperature : 1.0f;
    double ds = 0;
    for (int i = c.tid; i < c.n; i += SAMPLE_THREADS) {
        float e = (float)exp((double)((c.p[i] - mx) / temp));
        c.p[i] = e;
        ds += e;
    }
    const double sum = sample_cluster_sum_d(c, ds);
    unsigned long long qs = 0;
    for (int i = c.tid; i < c.n; i += SAMPLE_THREADS) {
        float q = (float)((double)c.p[i] / sum);
        c.p[i] = q;
        qs += sample_q(__float_as_uint(q));
    }
    qs = sample_block_sum_u(c, qs);
    if (c.tid == 0) sample_mine(c)->s[0] = qs;
    sample_share(c, 1);
    unsigned long long total = 0;
    for (int k = 0; k < SAMPLE_CLUSTER; k++)
        total += c.m->peer[k][0];

    int pick = -1;
    float pv = 0;
    const bool cut_k = r.top_k > 0 && r.top_k < a.vocab;
    if (!cut_k && !(r.top_p < 1.0f)) {
        /* no cut: the twin draws in id order */
        pick = sample_find(c, sample_w_mass(), r.u * (double)total);
        if (pick < 0) pick = a.vocab - 1;
        pv = sample_value(c, a.slice, pick);
    } else {
        /* Stages, one select each (one call site keeps the code and its registers small):
         * 0 top-k, 1 top-p, 2 the draw, 3 the last kept candidate (the twin's fallback when
         * u * total rounds up to total). Kept sets of at most SAMPLE_CAP finish sorted. */
        struct sample_set s = {0u, a.vocab - 1};
        long long n_kept = a.vocab;
        bool reduced = false;
        int stage = cut_k ? 0 : 1;
        for (;;) {
            if (stage == 1 && !(n_kept > SAMPLE_CAP && r.top_p < 1.0f)) stage = 2;
            if (stage == 2 && n_kept <= SAMPLE_CAP) {
                sample_sorted(c, s, r.top_p, r.u, out_id, out_lp);
                cg::this_cluster().sync();
                return;
            }
            const bool by_count = stage == 0 || stage == 3;
            const double tgt = stage == 0   ? (double)r.top_k
                               : stage == 1 ? (double)r.top_p * SAMPLE_QSCALE
                               : stage == 2 ? r.u * (double)total
                                            : (double)a.vocab;
            struct sample_sel t = sample_select(c, s, by_count, stage == 2, tgt);
            if (stage >= 2) {
                if (t.found) {
                    pick = t.id;
                    pv = __uint_as_float(t.key);
                } else if (stage == 2 && !reduced) {
                    stage = 3;
                    continue;
                } else {
                    pick = s.lim;
                    pv = __uint_as_float(s.key);
                }
                break;
            }
            if (t.found) {
                s.key = t.key;
                s.lim = t.id;
                n_kept = (long long)t.above_c + t.j + 1;
                total = t.above_q + (unsigned long long)(t.j + 1) * sample_q(t.key);
                reduced = true;
            }
            stage++;
        }
    }
    if (c.rank == 0 && c.tid == 0) {
        *out_id = pick;
        *out_lp = (float)log((double)pv / ((double)total / SAMPLE_QSCALE));
    }
    cg::this_cluster().sync();
}

/* ---- host -------------------------------------------------------------------------------- */

static int sample_slice_of(int vocab) {
    int s = (vocab + SAMPLE_CLUSTER - 1) / SAMPLE_CLUSTER;
    return (s + 3) & ~3;
}

extern "C" size_t fg_sample_workspace_bytes(int n_rows, int vocab) {
    (void)n_rows;
    (void)vocab;
    return 0;
}

static int sample_smem_limit(void) {
    int dev = 0, lim = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&lim, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
        return -1;
    return lim;
}

extern "C" int fg_sample_launch(float *logits, int n_rows, int vocab,
                                const struct fg_sample_row *rows, const int *history, int *ids,
                                float *logprobs, void *workspace, void *stream, char *err,
                                size_t errlen) {
    (void)workspace;
    if (n_rows < 0 || vocab < 1 || n_rows > INT_MAX / SAMPLE_CLUSTER) {
        snprintf(err, errlen, "sample: bad shape (%d rows, vocab %d)", n_rows, vocab);
        return -1;
    }
    if (n_rows == 0) return 0;
    if (!logits || !rows || !ids || !logprobs) {
        snprintf(err, errlen, "sample: NULL logits, rows or outputs");
        return -1;
    }
    const int slice = sample_slice_of(vocab);
    const size_t smem = sample_layout_of(slice).total;
    const int lim = sample_smem_limit();
    if (lim < 0 || smem > (size_t)lim) {
        snprintf(err, errlen, "sample: vocab %d needs %zu bytes of shared memory per block (%d)",
                 vocab, smem, lim);
        return -1;
    }
    struct cudaFuncAttributes fa;
    cudaError_t e = cudaFuncGetAttributes(&fa, sample_kernel);
    if (e == cudaSuccess && (size_t)fa.maxDynamicSharedSizeBytes < smem)
        e = cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)smem);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "sample: kernel attributes: %s", cudaGetErrorString(e));
        return -1;
    }
    struct sample_args a;
    a.logits = logits;
    a.rows = rows;
    a.history = history;
    a.ids = ids;
    a.logprobs = logprobs;
    a.vocab = vocab;
    a.slice = slice;
    a.vec4 = vocab % 4 == 0 && ((uintptr_t)logits & 15) == 0;
    sample_kernel<<<n_rows * SAMPLE_CLUSTER, SAMPLE_THREADS, smem, (cudaStream_t)stream>>>(a);
    e = cudaGetLastError();
    if (e != cudaSuccess) {
        snprintf(err, errlen, "sample: launch: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}
