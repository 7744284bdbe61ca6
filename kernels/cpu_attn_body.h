/* cpu_attn_body.h — the body of one work item of kernels/cpu_attn.c; included only by that
 * file, once per variant, with CA_SUF naming it (c, avx2, avx512), CA_VW floats per vector,
 * CA_NV vectors per register block and, for the x86 variants, CA_FMA(a, b, c) = a · b + c as
 * one fused instruction (the project builds with -std=c11, under which GCC does not contract
 * a · b + c by itself). Written in GCC vector extensions, so the portable variant is the same
 * code with 16-byte vectors.
 *
 * Layouts (floats): the tile's q and o rows (rows, hd); a key block transposed, kt (hd, KB) or
 * a sequence's keys transposed (hd, ld) (struct ca_kt);
 * the scores of four rows p (4, KB). CA_NV · CA_VW divides CA_KB.
 */

#define CA_CAT2(a, b) a##_##b
#define CA_CAT(a, b) CA_CAT2(a, b)
#define CA_FN(name) CA_CAT(name, CA_SUF)
#define CA_VF CA_FN(ca_vf)
#define CA_VI CA_FN(ca_vi)
#define CA_VU CA_FN(ca_vu)
#define CA_NC (CA_NV * CA_VW) /* columns (keys, or head_dim) per register block */

typedef float CA_VF __attribute__((vector_size(CA_VW * sizeof(float))));
typedef int32_t CA_VI __attribute__((vector_size(CA_VW * sizeof(int32_t))));
typedef uint32_t CA_VU __attribute__((vector_size(CA_VW * sizeof(uint32_t))));

#ifndef CA_FMA
#define CA_FMA(a, b, c) ((a) * (b) + (c))
#define CA_FMA_LOCAL 1
#endif

#define CA_INLINE static inline __attribute__((always_inline))
/* The register blocks' loops over rows and vectors are unrolled whole, so that acc[][] lives in
 * registers: at -O2 GCC otherwise keeps it on the stack, a load and a store per FMA (3× slower,
 * measured with tools/bench_cpu --attn). */
#define CA_UNROLL _Pragma("GCC unroll 16")

CA_INLINE CA_VF CA_FN(ca_ld)(const float *p) {
    CA_VF v;
    memcpy(&v, p, sizeof v);
    return v;
}

CA_INLINE void CA_FN(ca_st)(float *p, CA_VF v) {
    memcpy(p, &v, sizeof v);
}

CA_INLINE CA_VF CA_FN(ca_splat)(float x) {
    CA_VF v;
    for (int i = 0; i < CA_VW; i++)
        v[i] = x;
    return v;
}

/* 2^x for x <= 0 (x = -inf included), to about 2 ulp: x = n + r with n = round(x) and
 * |r| <= 1/2, 2^r by its Taylor series in r ln 2 to degree 7 (truncation < 1e-8 relative),
 * 2^n added into the exponent. Below 2^-125 the result is 0 (a probability that small next to
 * the row's maximum, which is 1, changes no fp32 sum). */
CA_INLINE CA_VF CA_FN(ca_exp2)(CA_VF x) {
    const CA_VF lo = CA_FN(ca_splat)(-125.0f), magic = CA_FN(ca_splat)(12582912.0f); /* 1.5·2^23 */
    CA_VI keep = x > lo;
    x = (CA_VF)(((CA_VI)x & keep) | ((CA_VI)lo & ~keep));
    CA_VF t = x + magic; /* round to nearest: n sits in the low mantissa bits of t */
    CA_VI n = (CA_VI)t - (CA_VI)magic;
    CA_VF r = x - (t - magic);
    CA_VF p = CA_FN(ca_splat)(1.525273380405984e-05f);
    p = CA_FMA(p, r, CA_FN(ca_splat)(1.5403530393381606e-04f));
    p = CA_FMA(p, r, CA_FN(ca_splat)(1.3333558146428443e-03f));
    p = CA_FMA(p, r, CA_FN(ca_splat)(9.618129107628477e-03f));
    p = CA_FMA(p, r, CA_FN(ca_splat)(5.550410866482158e-02f));
    p = CA_FMA(p, r, CA_FN(ca_splat)(2.402265069591007e-01f));
    p = CA_FMA(p, r, CA_FN(ca_splat)(6.931471805599453e-01f));
    p = CA_FMA(p, r, CA_FN(ca_splat)(1.0f));
    CA_VU e = (CA_VU)n << 23; /* unsigned: n < 0 shifts without undefined behaviour */
    return (CA_VF)(((CA_VU)p + e) & (CA_VU)keep);
}

/* p (rt, KB) columns [0, ncols) = q (rt rows at stride hd) · kt (hd rows at stride LDK):
 * register blocks of rt rows × CA_NC keys, one broadcast q value and CA_NV key vectors per step
 * of the head dimension. */
CA_INLINE void CA_FN(ca_qk)(const float *q, int hd, const float *kt, size_t ldk, int ncols,
                            float *p, const int rt) {
    for (int c = 0; c < ncols; c += CA_NC) {
        CA_VF acc[CA_RT][CA_NV];
        CA_UNROLL
        for (int r = 0; r < rt; r++) {
            CA_UNROLL
            for (int v = 0; v < CA_NV; v++)
                acc[r][v] = CA_FN(ca_splat)(0.0f);
        }
        for (int d = 0; d < hd; d++) {
            CA_VF k[CA_NV];
            CA_UNROLL
            for (int v = 0; v < CA_NV; v++)
                k[v] = CA_FN(ca_ld)(kt + (size_t)d * ldk + c + v * CA_VW);
            CA_UNROLL
            for (int r = 0; r < rt; r++) {
                CA_VF qv = CA_FN(ca_splat)(q[(size_t)r * hd + d]);
                CA_UNROLL
                for (int v = 0; v < CA_NV; v++)
                    acc[r][v] = CA_FMA(qv, k[v], acc[r][v]);
            }
        }
        CA_UNROLL
        for (int r = 0; r < rt; r++) {
            CA_UNROLL
            for (int v = 0; v < CA_NV; v++)
                CA_FN(ca_st)(p + (size_t)r * CA_KB + c + v * CA_VW, acc[r][v]);
        }
    }
}

/* o (rt rows at stride hd) += p (rt, KB) columns [0, nk) · the value rows vrow[0 .. nk):
 * register blocks of rt rows × CA_NC (then CA_VW, then 1) output columns. */
CA_INLINE void CA_FN(ca_pv)(const float *p, const float *const *vrow, int nk, float *o, int hd,
                            const int rt) {
    int c = 0;
    for (; c + CA_NC <= hd; c += CA_NC) {
        CA_VF acc[CA_RT][CA_NV];
        CA_UNROLL
        for (int r = 0; r < rt; r++) {
            CA_UNROLL
            for (int v = 0; v < CA_NV; v++)
                acc[r][v] = CA_FN(ca_ld)(o + (size_t)r * hd + c + v * CA_VW);
        }
        for (int t = 0; t < nk; t++) {
            CA_VF x[CA_NV];
            CA_UNROLL
            for (int v = 0; v < CA_NV; v++)
                x[v] = CA_FN(ca_ld)(vrow[t] + c + v * CA_VW);
            CA_UNROLL
            for (int r = 0; r < rt; r++) {
                CA_VF pv = CA_FN(ca_splat)(p[(size_t)r * CA_KB + t]);
                CA_UNROLL
                for (int v = 0; v < CA_NV; v++)
                    acc[r][v] = CA_FMA(pv, x[v], acc[r][v]);
            }
        }
        CA_UNROLL
        for (int r = 0; r < rt; r++) {
            CA_UNROLL
            for (int v = 0; v < CA_NV; v++)
                CA_FN(ca_st)(o + (size_t)r * hd + c + v * CA_VW, acc[r][v]);
        }
    }
    for (; c + CA_VW <= hd; c += CA_VW) {
        CA_VF acc[CA_RT];
        CA_UNROLL
        for (int r = 0; r < rt; r++)
            acc[r] = CA_FN(ca_ld)(o + (size_t)r * hd + c);
        for (int t = 0; t < nk; t++) {
            CA_VF x = CA_FN(ca_ld)(vrow[t] + c);
            CA_UNROLL
            for (int r = 0; r < rt; r++)
                acc[r] = CA_FMA(CA_FN(ca_splat)(p[(size_t)r * CA_KB + t]), x, acc[r]);
        }
        CA_UNROLL
        for (int r = 0; r < rt; r++)
            CA_FN(ca_st)(o + (size_t)r * hd + c, acc[r]);
    }
    for (; c < hd; c++) /* head_dim not a multiple of the vector width */
        for (int r = 0; r < rt; r++) {
            float s = o[(size_t)r * hd + c];
            for (int t = 0; t < nk; t++)
                s += p[(size_t)r * CA_KB + t] * vrow[t][c];
            o[(size_t)r * hd + c] = s;
        }
}

/* Tile rows r0 .. r0+rt-1 against one key block (keys kb .. kb+nk-1, transposed in KT at row
 * stride LDK, ncols = nk rounded up to CA_NC): scores, mask, online-softmax update, P V. FULL:
 * every key of the block is visible to every row of the item. */
CA_INLINE void CA_FN(ca_rows)(const struct ca_job *j, const struct ca_item *it,
                              struct ca_scratch *w, const float *kt, size_t ldk, int r0, int kb,
                              int nk, int ncols, int full, const int rt) {
    int hd = j->b->head_dim;
    float *p = w->p;
    CA_FN(ca_qk)(w->q + (size_t)r0 * hd, hd, kt, ldk, ncols, p, rt);
    for (int r = 0; r < rt; r++) {
        float *pr = p + (size_t)r * CA_KB;
        if (!full || ncols != nk) {
            int first, end;
            ca_row_keys(j, it->s, it->i0 + (r0 + r) / j->group, &first, &end);
            int a = first - kb, e = end - kb < nk ? end - kb : nk; /* visible columns [a, e) */
            for (int c = 0; c < ncols; c++)
                if (c < a || c >= e) pr[c] = -INFINITY;
        }
        CA_VF mv = CA_FN(ca_splat)(-INFINITY);
        for (int c = 0; c < ncols; c += CA_VW) {
            CA_VF x = CA_FN(ca_ld)(pr + c);
            CA_VI gt = x > mv;
            mv = (CA_VF)(((CA_VI)x & gt) | ((CA_VI)mv & ~gt));
        }
        float mx = mv[0];
        for (int i = 1; i < CA_VW; i++)
            mx = mv[i] > mx ? mv[i] : mx;
        float m_old = w->m[r0 + r], m_new = mx > m_old ? mx : m_old;
        if (m_new == -INFINITY) { /* nothing visible yet: this block adds nothing to the row */
            memset(pr, 0, sizeof(float) * (size_t)ncols);
            continue;
        }
        CA_VF mn = CA_FN(ca_splat)(m_new), sv = CA_FN(ca_splat)(0.0f);
        for (int c = 0; c < ncols; c += CA_VW) {
            CA_VF e = CA_FN(ca_exp2)(CA_FN(ca_ld)(pr + c) - mn);
            CA_FN(ca_st)(pr + c, e);
            sv += e;
        }
        float sum = 0;
        for (int i = 0; i < CA_VW; i++)
            sum += sv[i];
        if (m_new != m_old) {
            float alpha = exp2f(m_old - m_new); /* 0 when m_old is -inf */
            w->l[r0 + r] *= alpha;
            float *o = w->o + (size_t)(r0 + r) * hd;
            for (int c = 0; c < hd; c++)
                o[c] *= alpha;
            w->m[r0 + r] = m_new;
        }
        w->l[r0 + r] += sum;
    }
    CA_FN(ca_pv)(p, w->vrow, nk, w->o + (size_t)r0 * hd, hd, rt);
}

static void CA_FN(ca_item)(const struct ca_job *j, const struct ca_item *it, struct ca_scratch *w) {
    const struct attn_batch *b = j->b;
    int hd = b->head_dim, group = j->group, nh = b->n_heads;
    int rows = (it->i1 - it->i0) * group;
    size_t kv_dim = (size_t)b->n_kv_heads * hd;
    const int *pages = b->block_table + (size_t)it->s * b->max_pages;
    int q0 = b->q_start[it->s];
    /* the tile: row (i - i0) · group + k is query row i, head g · group + k */
    for (int i = it->i0; i < it->i1; i++) {
        const float *src = j->q + ((size_t)(q0 + i) * nh + (size_t)it->g * group) * hd;
        float *dst = w->q + (size_t)(i - it->i0) * group * hd;
        for (int c = 0; c < group * hd; c++)
            dst[c] = src[c] * j->qscale;
    }
    memset(w->o, 0, sizeof(float) * (size_t)rows * hd);
    for (int r = 0; r < rows; r++) {
        w->m[r] = -INFINITY;
        w->l[r] = 0;
    }
    int f0, e0, f1, e1;
    ca_row_keys(j, it->s, it->i0, &f0, &e0);
    ca_row_keys(j, it->s, it->i1 - 1, &f1, &e1);
    /* rows see [first, end) with both bounds non-decreasing in i: the item's keys are
     * [f0, e1), and a block inside [f1, e0) is visible to all of its rows */
    /* the sequence's keys transposed once for all its items (cpu_attn, n_q > CPU_ATTN_QB), or
     * each block gathered here */
    const struct ca_kt *pre = j->kt ? &j->kt[(size_t)it->s * b->n_kv_heads + it->g] : NULL;
    if (pre && !pre->kt) pre = NULL;
    for (int kb = f0; kb < e1; kb += CA_KB) {
        int nk = e1 - kb < CA_KB ? e1 - kb : CA_KB;
        int ncols = (nk + CA_NC - 1) / CA_NC * CA_NC;
        for (int t = 0; t < nk; t++) {
            int key = kb + t;
            size_t slot = (size_t)pages[key / b->page_size] * b->page_size + key % b->page_size;
            if (!pre) {
                const float *kr = j->k_pool + slot * kv_dim + (size_t)it->g * hd;
                for (int d = 0; d < hd; d++)
                    w->kt[(size_t)d * CA_KB + t] = kr[d];
            }
            w->vrow[t] = j->v_pool + slot * kv_dim + (size_t)it->g * hd;
        }
        if (!pre)
            for (int t = nk; t < ncols; t++)
                for (int d = 0; d < hd; d++)
                    w->kt[(size_t)d * CA_KB + t] = 0;
        const float *kt = pre ? pre->kt + kb : w->kt;
        size_t ldk = pre ? pre->ld : CA_KB;
        int full = kb >= f1 && kb + nk <= e0;
        int r0 = 0;
        for (; r0 + CA_RT <= rows; r0 += CA_RT)
            CA_FN(ca_rows)(j, it, w, kt, ldk, r0, kb, nk, ncols, full, CA_RT);
        switch (rows - r0) {
        case 3:
            CA_FN(ca_rows)(j, it, w, kt, ldk, r0, kb, nk, ncols, full, 3);
            break;
        case 2:
            CA_FN(ca_rows)(j, it, w, kt, ldk, r0, kb, nk, ncols, full, 2);
            break;
        case 1:
            CA_FN(ca_rows)(j, it, w, kt, ldk, r0, kb, nk, ncols, full, 1);
            break;
        default:
            break;
        }
    }
    for (int i = it->i0; i < it->i1; i++) {
        float *dst = j->out + ((size_t)(q0 + i) * nh + (size_t)it->g * group) * hd;
        for (int k = 0; k < group; k++) {
            int r = (i - it->i0) * group + k;
            float inv = w->l[r] > 0 ? 1.0f / w->l[r] : 0.0f;
            const float *o = w->o + (size_t)r * hd;
            for (int c = 0; c < hd; c++)
                dst[(size_t)k * hd + c] = o[c] * inv;
        }
    }
}

#ifdef CA_FMA_LOCAL
#undef CA_FMA
#undef CA_FMA_LOCAL
#endif
#undef CA_INLINE
#undef CA_UNROLL
#undef CA_NC
#undef CA_VI
#undef CA_VU
#undef CA_VF
#undef CA_FN
#undef CA_CAT
#undef CA_CAT2
