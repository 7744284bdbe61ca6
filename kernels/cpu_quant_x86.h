/* cpu_quant_x86.h — the x86 SIMD bodies of kernels/cpu_quant.c; included only by that file,
 * once per ISA, under `#pragma GCC target`, with CQ_SUF naming the variant (avx2, avx512) and
 * CQ_VNNI 1 where AVX-512 VNNI's vpdpbusd does the u8 × s8 sums.
 *
 * The block layouts and the activation blocks are cpu_quant.c's. Weight quants are kept
 * unsigned (0..15, 0..31, 0..63) so that one u8 × s8 multiply-add (vpmaddubsw, or vpdpbusd)
 * forms each block's integer sum; a type's offset (Q4_0's −8, Q5_0's −16, Q6_K's −32) is
 * taken out exactly afterwards through the activation block's quant sums. Q8_0's signed
 * weights use |w| and sign(a, w). No sums saturate: the largest pair in vpmaddubsw is
 * 2 · 128 · 127 = 32 512 < 32 767.
 */

#define CQ_CAT2(a, b) a##_##b
#define CQ_CAT(a, b) CQ_CAT2(a, b)
#define CQ_FN(name) CQ_CAT(name, CQ_SUF)
#define CQ_X_ROWS 4 /* activation rows whose accumulators stay in registers */

/* acc + per-int32-lane sums of u8 U × s8 S (four products per lane) */
static inline __m256i CQ_FN(cq_x_dot)(__m256i acc, __m256i u, __m256i s) {
#if CQ_VNNI
    return _mm256_dpbusd_epi32(acc, u, s);
#else
    __m256i p16 = _mm256_maddubs_epi16(u, s);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
#endif
}

/* acc + the sums above times SC_LO for elements 0..15 and SC_HI for 16..31 */
static inline __m256i CQ_FN(cq_x_dot_scaled)(__m256i acc, __m256i u, __m256i s, int sc_lo,
                                             int sc_hi) {
#if CQ_VNNI
    __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
    __m256i sc = _mm256_set_m128i(_mm_set1_epi32(sc_hi), _mm_set1_epi32(sc_lo));
    return _mm256_add_epi32(acc, _mm256_mullo_epi32(p, sc));
#else
    __m256i p16 = _mm256_maddubs_epi16(u, s);
    __m256i sc = _mm256_set_m128i(_mm_set1_epi16((short)sc_hi), _mm_set1_epi16((short)sc_lo));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, sc));
#endif
}

static inline float CQ_FN(cq_x_hsum)(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float CQ_FN(cq_x_f16)(const uint8_t *p) {
    return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8));
}

/* 32 nibbles in element order: the low nibbles of 16 bytes, then the high ones. */
static inline __m256i CQ_FN(cq_x_nibbles)(const uint8_t *qs) {
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m128i m4 = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
}

/* The 32 bits of QH as bytes 0x10 (bit j set) or 0 in element order j. */
static inline __m256i CQ_FN(cq_x_bit16)(const uint8_t *qh4) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    __m256i v = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)qh),
        _mm256_setr_epi64x(0, 0x0101010101010101LL, 0x0202020202020202LL, 0x0303030303030303LL));
    __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* cq_quant_block (cpu_quant.c) for N a multiple of 32, bit for bit: the same max, scale and
 * product, rounded to nearest-even by vcvtps2dq as lrintf does. */
static inline float CQ_FN(cq_x_quant_block)(const float *x, int n, int8_t *q) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 mx = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8)
        mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    float amax = _mm_cvtss_f32(m);
    float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
    const __m256 vid = _mm256_set1_ps(id);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int i = 0; i < n; i += 32) {
        __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vid));
        __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vid));
        __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 16), vid));
        __m256i e = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 24), vid));
        __m256i v = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, e));
        _mm256_storeu_si256((__m256i *)(q + i), _mm256_permutevar8x32_epi32(v, order));
    }
    return d;
}

/* One block of a 32-block type as u8 quants Q (Q8_0: |q|, its signs in SGN), scale D and the
 * minimum M of x = d q + m (Q4_0: -8 d, Q5_0: -16 d; Q8_0 has none). TYPE is a constant at each
 * call site, so the switch folds away. */
static inline __attribute__((always_inline)) void CQ_FN(cq_x_unpack32)(uint32_t type,
                                                                       const uint8_t *b, __m256i *q,
                                                                       __m256i *sgn, float *d,
                                                                       float *m) {
    *d = CQ_FN(cq_x_f16)(b);
    *m = 0;
    *sgn = _mm256_setzero_si256();
    switch (type) {
    case GGUF_GGML_Q8_0:
        *sgn = _mm256_loadu_si256((const __m256i *)(b + 2));
        *q = _mm256_sign_epi8(*sgn, *sgn);
        break;
    case GGUF_GGML_Q4_0:
        *q = CQ_FN(cq_x_nibbles)(b + 2);
        *m = -8 * *d;
        break;
    case GGUF_GGML_Q4_1:
        *m = CQ_FN(cq_x_f16)(b + 2);
        *q = CQ_FN(cq_x_nibbles)(b + 4);
        break;
    case GGUF_GGML_Q5_0:
        *q = _mm256_or_si256(CQ_FN(cq_x_nibbles)(b + 6), CQ_FN(cq_x_bit16)(b + 2));
        *m = -16 * *d;
        break;
    default: /* Q5_1 */
        *m = CQ_FN(cq_x_f16)(b + 2);
        *q = _mm256_or_si256(CQ_FN(cq_x_nibbles)(b + 8), CQ_FN(cq_x_bit16)(b + 4));
        break;
    }
}

#if CQ_VNNI
/* The four blocks 4g .. 4g+3 of a Q4_1 row (N of them present, the rest zero): Q their qs, 16
 * bytes a block in block order (low nibble of byte j: element j, high nibble: element j + 16),
 * DM their (d, m) pairs as floats, d0 m0 d1 m1 d2 m2 d3 m3. */
static inline __attribute__((always_inline)) void
CQ_FN(cq_x_q41_group)(const uint8_t *b, const int n, __m512i *q, __m256 *dm) {
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(b + 4)));
    if (n > 1) v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(b + 24)), 1);
    if (n > 2) v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(b + 44)), 2);
    if (n > 3) v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(b + 64)), 3);
    if (n < 4) v = _mm512_maskz_mov_epi32((__mmask16)((1u << (4 * n)) - 1), v);
    uint32_t h4[4] = {0, 0, 0, 0};
    for (int k = 0; k < n; k++)
        memcpy(&h4[k], b + 20 * k, 4);
    __m128i h = _mm_setr_epi32((int)h4[0], (int)h4[1], (int)h4[2], (int)h4[3]);
    *q = v;
    *dm = _mm256_cvtph_ps(h);
}

/* Q4_1 weight rows W[0 .. R) against one activation row prepared as struct cq_a32x4 (the decode
 * case, R a constant at each call): four blocks per zmm, their low nibbles against the
 * activation blocks' first halves and the high ones against the second halves (two vpdpbusd,
 * no shuffle of the activations), each lane's d from one gather of the four (d, m) headers and
 * one permute, the minimum terms m d Σq in a ymm beside. Every row's chain is the one of R = 1,
 * so a row's result is the same bits whichever rows share its loop. */
static inline __attribute__((always_inline)) void CQ_FN(cq_x_q41_rows)(const uint8_t *const *w,
                                                                       const int R,
                                                                       const struct cq_a32x4 *a,
                                                                       int nb, float *out) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
    __m512 acc[4];
    __m256 accm[4];
    for (int r = 0; r < R; r++) {
        acc[r] = _mm512_setzero_ps();
        accm[r] = _mm256_setzero_ps();
    }
    int g = 0;
#define CQ_X_Q41_STEP(N)                                                                           \
    do {                                                                                           \
        __m512i alo = _mm512_loadu_si512(a[g].lo), ahi = _mm512_loadu_si512(a[g].hi);              \
        __m512 da = _mm512_loadu_ps(a[g].d);                                                       \
        __m256 ds = _mm256_loadu_ps(a[g].dsum);                                                    \
        for (int r = 0; r < R; r++) {                                                              \
            __m512i q;                                                                             \
            __m256 dm;                                                                             \
            CQ_FN(cq_x_q41_group)(w[r] + (size_t)g * 80, N, &q, &dm);                              \
            __m512i lo = _mm512_and_si512(q, m4),                                                  \
                    hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);                            \
            __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, alo);                      \
            p = _mm512_dpbusd_epi32(p, hi, ahi);                                                   \
            __m512 d = _mm512_permutexvar_ps(spread, _mm512_castps256_ps512(dm));                  \
            acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(p), da), d, acc[r]);         \
            accm[r] = _mm256_fmadd_ps(dm, ds, accm[r]);                                            \
        }                                                                                          \
    } while (0)
    for (; g < nb / 4; g++)
        CQ_X_Q41_STEP(4);
    switch (nb % 4) {
    case 3:
        CQ_X_Q41_STEP(3);
        break;
    case 2:
        CQ_X_Q41_STEP(2);
        break;
    case 1:
        CQ_X_Q41_STEP(1);
        break;
    default:
        break;
    }
#undef CQ_X_Q41_STEP
    for (int r = 0; r < R; r++)
        out[r] = _mm512_reduce_add_ps(acc[r]) + CQ_FN(cq_x_hsum)(accm[r]);
}
#endif

/* The 32-block types. */
static inline __attribute__((always_inline)) void
CQ_FN(cq_x_body32)(uint32_t type, size_t bbytes, const uint8_t *w, const uint8_t *qa,
                   size_t qa_stride, const int n_rows, int nb, float *out) {
#if CQ_VNNI
    /* every activation row prepared (cq_prep_a32x4) and run alone through cq_x_q41_rows, the
     * matrix form's kernel, so that cq_dot_rows gives its bits */
    if (type == GGUF_GGML_Q4_1) {
        struct cq_a32x4 stack[64], *prep = stack;
        size_t ng = (size_t)(nb + 3) / 4;
        if (ng > 64 && !(prep = malloc(ng * sizeof *prep))) {
            for (int r = 0; r < n_rows; r++)
                out[r] = NAN;
            return;
        }
        for (int r = 0; r < n_rows; r++) {
            cq_prep_a32x4((const struct cq_a32 *)(qa + r * qa_stride), nb, prep);
            CQ_FN(cq_x_q41_rows)(&w, 1, prep, nb, out + r);
        }
        if (prep != stack) free(prep);
        return;
    }
#endif
    __m256 acc[CQ_X_ROWS];
    float smin[CQ_X_ROWS];
    for (int r = 0; r < n_rows; r++) {
        acc[r] = _mm256_setzero_ps();
        smin[r] = 0;
    }
    for (int i = 0; i < nb; i++) {
        float d, m;
        __m256i q, sgn;
        CQ_FN(cq_x_unpack32)(type, w + (size_t)i * bbytes, &q, &sgn, &d, &m);
        for (int r = 0; r < n_rows; r++) {
            const struct cq_a32 *a = (const struct cq_a32 *)(qa + r * qa_stride) + i;
            __m256i av = _mm256_loadu_si256((const __m256i *)a->q);
            if (type == GGUF_GGML_Q8_0) av = _mm256_sign_epi8(av, sgn);
            __m256i p = CQ_FN(cq_x_dot)(_mm256_setzero_si256(), q, av);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * a->d), acc[r]);
            if (type != GGUF_GGML_Q8_0) smin[r] += m * a->d * (float)a->sum;
        }
    }
    for (int r = 0; r < n_rows; r++)
        out[r] = CQ_FN(cq_x_hsum)(acc[r]) + smin[r];
}

/* Two weight rows W0, W1 against one activation row (the decode case): each row's sums in
 * cq_x_body32's order (the same bits as two calls of it), the two chains interleaved so the
 * unpacking of one overlaps the other's products, and the activation block loaded once. */
static inline __attribute__((always_inline)) void
CQ_FN(cq_x_body32_r2)(uint32_t type, size_t bbytes, const uint8_t *w0, const uint8_t *w1,
                      const uint8_t *qa, int nb, float *out0, float *out1) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float smin0 = 0, smin1 = 0;
    for (int i = 0; i < nb; i++) {
        float d0, m0, d1, m1;
        __m256i q0, sgn0, q1, sgn1;
        CQ_FN(cq_x_unpack32)(type, w0 + (size_t)i * bbytes, &q0, &sgn0, &d0, &m0);
        CQ_FN(cq_x_unpack32)(type, w1 + (size_t)i * bbytes, &q1, &sgn1, &d1, &m1);
        const struct cq_a32 *a = (const struct cq_a32 *)qa + i;
        __m256i av = _mm256_loadu_si256((const __m256i *)a->q), av0 = av, av1 = av;
        if (type == GGUF_GGML_Q8_0) {
            av0 = _mm256_sign_epi8(av, sgn0);
            av1 = _mm256_sign_epi8(av, sgn1);
        }
        __m256i p0 = CQ_FN(cq_x_dot)(_mm256_setzero_si256(), q0, av0);
        __m256i p1 = CQ_FN(cq_x_dot)(_mm256_setzero_si256(), q1, av1);
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(d0 * a->d), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_set1_ps(d1 * a->d), acc1);
        if (type != GGUF_GGML_Q8_0) {
            smin0 += m0 * a->d * (float)a->sum;
            smin1 += m1 * a->d * (float)a->sum;
        }
    }
    *out0 = CQ_FN(cq_x_hsum)(acc0) + smin0;
    *out1 = CQ_FN(cq_x_hsum)(acc1) + smin1;
}

/* Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and minima. */
static inline __attribute__((always_inline)) void
CQ_FN(cq_x_body_k45)(uint32_t type, size_t bbytes, const uint8_t *w, const uint8_t *qa,
                     size_t qa_stride, const int n_rows, int nb, float *out) {
    __m256 acc[CQ_X_ROWS];
    float smin[CQ_X_ROWS];
    for (int r = 0; r < n_rows; r++) {
        acc[r] = _mm256_setzero_ps();
        smin[r] = 0;
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    for (int i = 0; i < nb; i++) {
        const uint8_t *b = w + (size_t)i * bbytes;
        float d = CQ_FN(cq_x_f16)(b), dmin = CQ_FN(cq_x_f16)(b + 2);
        int sc[8], mn[8];
        for (int j = 0; j < 8; j++)
            cq_k4_scale(b + 4, j, &sc[j], &mn[j]);
        const uint8_t *qs = type == GGUF_GGML_Q5_K ? b + 48 : b + 16;
        __m256i v[8];
        __m256i qh = type == GGUF_GGML_Q5_K ? _mm256_loadu_si256((const __m256i *)(b + 16))
                                            : _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            v[2 * c] = _mm256_and_si256(q, m4);
            v[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (type == GGUF_GGML_Q5_K) {
                __m256i b0 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one);
                __m256i b1 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one);
                v[2 * c] = _mm256_or_si256(v[2 * c], _mm256_slli_epi16(b0, 4));
                v[2 * c + 1] = _mm256_or_si256(v[2 * c + 1], _mm256_slli_epi16(b1, 4));
            }
        }
        for (int r = 0; r < n_rows; r++) {
            const struct cq_a256 *a = (const struct cq_a256 *)(qa + r * qa_stride) + i;
            __m256i isum = _mm256_setzero_si256();
            int msum = 0;
            for (int j = 0; j < 8; j++) {
                __m256i av = _mm256_loadu_si256((const __m256i *)(a->q + 32 * j));
                isum = CQ_FN(cq_x_dot_scaled)(isum, v[j], av, sc[j], sc[j]);
                msum += mn[j] * (a->bsum[2 * j] + a->bsum[2 * j + 1]);
            }
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(d * a->d), acc[r]);
            smin[r] -= dmin * a->d * (float)msum;
        }
    }
    for (int r = 0; r < n_rows; r++)
        out[r] = CQ_FN(cq_x_hsum)(acc[r]) + smin[r];
}

/* Q6_K: 16 groups of 16 with int8 scales, quants 0..63 offset by 32. */
static inline __attribute__((always_inline)) void
CQ_FN(cq_x_body_q6k)(uint32_t type, size_t bbytes, const uint8_t *w, const uint8_t *qa,
                     size_t qa_stride, int n_rows, int nb, float *out) {
    (void)type;
    __m256 acc[CQ_MAX_ROWS];
    for (int r = 0; r < n_rows; r++)
        acc[r] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    for (int i = 0; i < nb; i++) {
        const uint8_t *b = w + (size_t)i * bbytes;
        const int8_t *s = (const int8_t *)(b + 192);
        float d = CQ_FN(cq_x_f16)(b + 208);
        __m256i v[8];
        for (int h = 0; h < 2; h++) {
            __m256i la = _mm256_loadu_si256((const __m256i *)(b + 64 * h));
            __m256i lb = _mm256_loadu_si256((const __m256i *)(b + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
            __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4);
            __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4);
            __m256i h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4);
            __m256i h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4);
            v[4 * h] = _mm256_or_si256(_mm256_and_si256(la, m4), h0);
            v[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(lb, m4), h1);
            v[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(la, 4), m4), h2);
            v[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lb, 4), m4), h3);
        }
        for (int r = 0; r < n_rows; r++) {
            const struct cq_a256 *a = (const struct cq_a256 *)(qa + r * qa_stride) + i;
            __m256i isum = _mm256_setzero_si256();
            int bias = 0;
            for (int j = 0; j < 8; j++) {
                __m256i av = _mm256_loadu_si256((const __m256i *)(a->q + 32 * j));
                isum = CQ_FN(cq_x_dot_scaled)(isum, v[j], av, s[2 * j], s[2 * j + 1]);
                bias += s[2 * j] * a->bsum[2 * j] + s[2 * j + 1] * a->bsum[2 * j + 1];
            }
            __m256i off = _mm256_setr_epi32(-32 * bias, 0, 0, 0, 0, 0, 0, 0);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(isum, off)),
                                     _mm256_set1_ps(d * a->d), acc[r]);
        }
    }
    for (int r = 0; r < n_rows; r++)
        out[r] = CQ_FN(cq_x_hsum)(acc[r]);
}

/* Q2_K and Q3_K: 16 groups of 16, quants 0..3 (Q2_K: 4-bit scales, 4-bit minima) or 0..7 less
 * 4 (Q3_K: the third bit from hmask; 6-bit scales less 32; the offset taken out through the
 * quant sums as Q6_K's is). Vector j holds elements 32j .. 32j+31: field j % 4 of 32 qs bytes. */
static inline __attribute__((always_inline)) void
CQ_FN(cq_x_body_k23)(uint32_t type, size_t bbytes, const uint8_t *w, const uint8_t *qa,
                     size_t qa_stride, const int n_rows, int nb, float *out) {
    __m256 acc[CQ_X_ROWS];
    float smin[CQ_X_ROWS];
    for (int r = 0; r < n_rows; r++) {
        acc[r] = _mm256_setzero_ps();
        smin[r] = 0;
    }
    const __m256i m2 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    const int q3 = type == GGUF_GGML_Q3_K;
    for (int i = 0; i < nb; i++) {
        const uint8_t *b = w + (size_t)i * bbytes;
        float d = CQ_FN(cq_x_f16)(q3 ? b + 108 : b + 80), dmin = q3 ? 0 : CQ_FN(cq_x_f16)(b + 82);
        int sc[16], mn[16];
        for (int g = 0; g < 16; g++) {
            sc[g] = q3 ? cq_k3_scale(b + 96, g) - 32 : b[g] & 0x0F;
            mn[g] = q3 ? 0 : b[g] >> 4;
        }
        __m256i v[8];
        __m256i hm = q3 ? _mm256_loadu_si256((const __m256i *)b) : _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(b + (q3 ? 32 : 16) + 32 * h));
            for (int j = 0; j < 4; j++) {
                v[4 * h + j] = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m2);
                if (q3) {
                    __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j), one);
                    v[4 * h + j] = _mm256_or_si256(v[4 * h + j], _mm256_slli_epi16(hb, 2));
                }
            }
        }
        for (int r = 0; r < n_rows; r++) {
            const struct cq_a256 *a = (const struct cq_a256 *)(qa + r * qa_stride) + i;
            __m256i isum = _mm256_setzero_si256();
            int gsum = 0; /* Σ_g (minimum or 4 · scale)_g · bsum_g */
            for (int j = 0; j < 8; j++) {
                __m256i av = _mm256_loadu_si256((const __m256i *)(a->q + 32 * j));
                isum = CQ_FN(cq_x_dot_scaled)(isum, v[j], av, sc[2 * j], sc[2 * j + 1]);
                if (q3)
                    gsum += 4 * (sc[2 * j] * a->bsum[2 * j] + sc[2 * j + 1] * a->bsum[2 * j + 1]);
                else
                    gsum += mn[2 * j] * a->bsum[2 * j] + mn[2 * j + 1] * a->bsum[2 * j + 1];
            }
            if (q3) {
                __m256i off = _mm256_setr_epi32(-gsum, 0, 0, 0, 0, 0, 0, 0);
                isum = _mm256_add_epi32(isum, off);
            } else {
                smin[r] -= dmin * a->d * (float)gsum;
            }
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(d * a->d), acc[r]);
        }
    }
    for (int r = 0; r < n_rows; r++)
        out[r] = CQ_FN(cq_x_hsum)(acc[r]) + smin[r];
}

#if CQ_VNNI
/* ---- the panel product (prefill-sized token counts; cpu_quant.c, cq_matmul) -------------
 *
 * Sixteen weight rows of a 32-block type are repacked so that one zmm holds, in its 16 int32
 * lanes, four consecutive quants of each row: vector v of block i, lane p = elements 4v..4v+3 of
 * row p, as unsigned bytes u with x = d u + m (Q8_0: u = q + 128, m = -128 d; Q4_0: m = -8 d;
 * Q5_0: m = -16 d; Q4_1/Q5_1: the block's own m). Against one token, vpdpbusd with the token's
 * four activation quants broadcast as the signed operand then sums four products for all 16 rows
 * at once, so an output row is a lane and the 16 outputs of one token are one store. Per block
 * and token: 8 vpdpbusd, one conversion and two FMAs (d·da·Σuq and m·da·Σq) for 512 products,
 * against the row kernel's unpack + dot + scale per (row, block, token). The weights of a panel
 * are unpacked once per call and stay in L1/L2 while every token goes past them.
 */
#define CQ_PT                                                                                      \
    12 /* tokens per register tile: 12 float accumulators + 8 weight vectors + d, m + sums         \
        * (measured: 12 and 16 ~10% faster than 8, 2026-12-02) */
/* The tile's loops over tokens and vectors unrolled whole, so that acc[] and wv[] live in
 * registers (at -O2 GCC otherwise keeps them on the stack: perf showed the FMAs reading acc
 * from memory). */
#define CQ_UNROLL _Pragma("GCC unroll 16")

/* PANEL (nb blocks × 8 vectors × 64 bytes), PD, PM (nb × 16 floats) from NROWS (<= 16) rows of
 * W (ROW_BYTES apart); lanes past NROWS are zero. */
static inline __attribute__((always_inline)) void
CQ_FN(cq_x_pack)(uint32_t type, size_t bbytes, const uint8_t *w, size_t row_bytes, int nrows,
                 int nb, uint8_t *panel, float *pd, float *pm) {
    const __mmask16 live = nrows >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nrows) - 1);
    const __m512i idx =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32((int)row_bytes));
    const __m512i m4 = _mm512_set1_epi8(0x0F), z = _mm512_setzero_si512();
    for (int i = 0; i < nb; i++, panel += 512) {
        const uint8_t *b = w + (size_t)i * bbytes;
        __m512i hdr = _mm512_mask_i32gather_epi32(z, live, idx, b, 1); /* d | m or qh << 16 */
        __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(hdr)), m;
        if (type == GGUF_GGML_Q8_0) {
            m = _mm512_mul_ps(d, _mm512_set1_ps(-128.0f));
            for (int v = 0; v < 8; v++) {
                __m512i g = _mm512_mask_i32gather_epi32(z, live, idx, b + 2 + 4 * v, 1);
                g = _mm512_maskz_xor_epi32(live, g, _mm512_set1_epi8((char)0x80));
                _mm512_storeu_si512(panel + 64 * v, g);
            }
        } else {
            int off = type == GGUF_GGML_Q4_0   ? 2
                      : type == GGUF_GGML_Q4_1 ? 4
                      : type == GGUF_GGML_Q5_0 ? 6
                                               : 8;
            if (type == GGUF_GGML_Q4_1 || type == GGUF_GGML_Q5_1)
                m = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(hdr, 16)));
            else
                m = _mm512_mul_ps(d, _mm512_set1_ps(type == GGUF_GGML_Q4_0 ? -8.0f : -16.0f));
            __m512i qh = z;
            if (type == GGUF_GGML_Q5_0 || type == GGUF_GGML_Q5_1)
                qh = _mm512_mask_i32gather_epi32(z, live, idx, b + off - 4, 1);
            for (int k = 0; k < 4; k++) {
                __m512i g = _mm512_mask_i32gather_epi32(z, live, idx, b + off + 4 * k, 1);
                __m512i lo = _mm512_and_si512(g, m4);
                __m512i hi = _mm512_and_si512(_mm512_srli_epi32(g, 4), m4);
                if (type == GGUF_GGML_Q5_0 || type == GGUF_GGML_Q5_1) {
                    /* bits 4k..4k+3 of qh (elements 4k..4k+3) and 16+4k.. (16+4k..), each
                     * moved to bit 4 of its element's byte: b · 0x00204081 = b + b << 7 +
                     * b << 14 + b << 21 (no carries) has bit j of b at bit 8j, j < 4 */
                    const __m512i spread = _mm512_set1_epi32(0x00204081);
                    const __m512i ones = _mm512_set1_epi32(0x01010101);
                    __m512i bl =
                        _mm512_and_si512(_mm512_srli_epi32(qh, 4 * k), _mm512_set1_epi32(15));
                    __m512i bh =
                        _mm512_and_si512(_mm512_srli_epi32(qh, 16 + 4 * k), _mm512_set1_epi32(15));
                    bl = _mm512_slli_epi32(_mm512_and_si512(_mm512_mullo_epi32(bl, spread), ones),
                                           4);
                    bh = _mm512_slli_epi32(_mm512_and_si512(_mm512_mullo_epi32(bh, spread), ones),
                                           4);
                    lo = _mm512_or_si512(lo, bl);
                    hi = _mm512_or_si512(hi, bh);
                }
                _mm512_storeu_si512(panel + 64 * k, lo);
                _mm512_storeu_si512(panel + 64 * (k + 4), hi);
            }
        }
        _mm512_storeu_ps(pd + 16 * i, _mm512_maskz_mov_ps(live, d));
        _mm512_storeu_ps(pm + 16 * i, _mm512_maskz_mov_ps(live, m));
    }
}

/* out rows t < NT (OUT_STRIDE apart), lanes LIVE = the panel's rows · the NT activation rows at
 * QA (QA_STRIDE apart), DS (DS_STRIDE apart) their per-block d · Σq. */
static inline __attribute__((always_inline)) void
CQ_FN(cq_x_ptile)(const uint8_t *panel, const float *pd, const float *pm, int nb, const uint8_t *qa,
                  size_t qa_stride, const float *ds, size_t ds_stride, const int nt, float *out,
                  size_t out_stride, __mmask16 live, int accumulate) {
    __m512 acc[CQ_PT];
    CQ_UNROLL
    for (int t = 0; t < nt; t++)
        acc[t] = _mm512_setzero_ps();
    for (int i = 0; i < nb; i++, panel += 512) {
        __m512i wv[8];
        CQ_UNROLL
        for (int v = 0; v < 8; v++)
            wv[v] = _mm512_loadu_si512(panel + 64 * v);
        __m512 d = _mm512_loadu_ps(pd + 16 * i), m = _mm512_loadu_ps(pm + 16 * i);
        CQ_UNROLL
        for (int t = 0; t < nt; t++) {
            const struct cq_a32 *a = (const struct cq_a32 *)(qa + t * qa_stride) + i;
            int32_t aq[8];
            memcpy(aq, a->q, 32);
            __m512i s0 =
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[0], _mm512_set1_epi32(aq[0]));
            __m512i s1 =
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[1], _mm512_set1_epi32(aq[1]));
            CQ_UNROLL
            for (int v = 2; v < 8; v += 2) {
                s0 = _mm512_dpbusd_epi32(s0, wv[v], _mm512_set1_epi32(aq[v]));
                s1 = _mm512_dpbusd_epi32(s1, wv[v + 1], _mm512_set1_epi32(aq[v + 1]));
            }
            __m512 p = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
            acc[t] = _mm512_fmadd_ps(p, _mm512_mul_ps(d, _mm512_set1_ps(a->d)), acc[t]);
            acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(ds[t * ds_stride + i]), acc[t]);
        }
    }
    CQ_UNROLL
    for (int t = 0; t < nt; t++) {
        float *y = out + t * out_stride;
        __m512 v = acc[t];
        if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(live, y), v);
        _mm512_mask_storeu_ps(y, live, v);
    }
}

/* Every token of the call against one repacked panel, CQ_PT at a time, the tile size a
 * constant in each call so the accumulators stay in registers. */
#define CQ_X_PANEL(NAME, TYPE, BBYTES)                                                             \
    static void CQ_FN(cq_panel_##NAME)(const struct cq_pjob *j, int r0, void *buf) {               \
        int nrows = j->rows - r0 < 16 ? j->rows - r0 : 16, nb = j->nb;                             \
        uint8_t *panel = buf;                                                                      \
        float *pd = (float *)(panel + (size_t)nb * 512), *pm = pd + (size_t)nb * 16;               \
        CQ_FN(cq_x_pack)                                                                           \
        (TYPE, BBYTES, j->w + (size_t)r0 * j->row_bytes, j->row_bytes, nrows, nb, panel, pd, pm);  \
        __mmask16 live = nrows >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nrows) - 1);         \
        int t = 0;                                                                                 \
        for (; t + CQ_PT <= j->n; t += CQ_PT)                                                      \
            CQ_FN(cq_x_ptile)                                                                      \
        (panel, pd, pm, nb, j->qa + t * j->qa_stride, j->qa_stride, j->ds + (size_t)t * nb,        \
         (size_t)nb, CQ_PT, j->out + t * j->out_stride + r0, j->out_stride, live, j->accumulate);  \
        switch (j->n - t) {                                                                        \
            CQ_X_PTAIL(11)                                                                         \
            CQ_X_PTAIL(10)                                                                         \
            CQ_X_PTAIL(9)                                                                          \
            CQ_X_PTAIL(8)                                                                          \
            CQ_X_PTAIL(7)                                                                          \
            CQ_X_PTAIL(6)                                                                          \
            CQ_X_PTAIL(5)                                                                          \
            CQ_X_PTAIL(4)                                                                          \
            CQ_X_PTAIL(3)                                                                          \
            CQ_X_PTAIL(2)                                                                          \
            CQ_X_PTAIL(1)                                                                          \
        default:                                                                                   \
            break;                                                                                 \
        }                                                                                          \
    }
#define CQ_X_PTAIL(NT)                                                                             \
    case NT:                                                                                       \
        CQ_FN(cq_x_ptile)                                                                          \
        (panel, pd, pm, nb, j->qa + t * j->qa_stride, j->qa_stride, j->ds + (size_t)t * nb,        \
         (size_t)nb, NT, j->out + t * j->out_stride + r0, j->out_stride, live, j->accumulate);     \
        break;

CQ_X_PANEL(q8_0, GGUF_GGML_Q8_0, 34)
CQ_X_PANEL(q4_0, GGUF_GGML_Q4_0, 18)
CQ_X_PANEL(q4_1, GGUF_GGML_Q4_1, 20)
CQ_X_PANEL(q5_0, GGUF_GGML_Q5_0, 22)
CQ_X_PANEL(q5_1, GGUF_GGML_Q5_1, 24)

#undef CQ_X_PTAIL
#undef CQ_X_PANEL
#undef CQ_UNROLL
#undef CQ_PT
#endif /* CQ_VNNI */

/* Rows go through the body in groups of up to CQ_X_ROWS with the group size a constant, so
 * each row's accumulator lives in a register rather than in a loop-carried stack slot. */
#define CQ_X_DEFINE(NAME, TYPE, BODY, BBYTES)                                                      \
    static void CQ_FN(cq_##NAME)(const uint8_t *w, const uint8_t *qa, size_t qa_stride,            \
                                 int n_rows, int nb, float *out) {                                 \
        int r = 0;                                                                                 \
        for (; r + CQ_X_ROWS <= n_rows; r += CQ_X_ROWS)                                            \
            CQ_FN(BODY)(TYPE, BBYTES, w, qa + r * qa_stride, qa_stride, CQ_X_ROWS, nb, out + r);   \
        switch (n_rows - r) {                                                                      \
        case 3:                                                                                    \
            CQ_FN(BODY)(TYPE, BBYTES, w, qa + r * qa_stride, qa_stride, 3, nb, out + r);           \
            break;                                                                                 \
        case 2:                                                                                    \
            CQ_FN(BODY)(TYPE, BBYTES, w, qa + r * qa_stride, qa_stride, 2, nb, out + r);           \
            break;                                                                                 \
        case 1:                                                                                    \
            CQ_FN(BODY)(TYPE, BBYTES, w, qa + r * qa_stride, qa_stride, 1, nb, out + r);           \
            break;                                                                                 \
        default:                                                                                   \
            break;                                                                                 \
        }                                                                                          \
    }

CQ_X_DEFINE(q8_0, GGUF_GGML_Q8_0, cq_x_body32, 34)
CQ_X_DEFINE(q4_0, GGUF_GGML_Q4_0, cq_x_body32, 18)
CQ_X_DEFINE(q4_1, GGUF_GGML_Q4_1, cq_x_body32, 20)
CQ_X_DEFINE(q5_0, GGUF_GGML_Q5_0, cq_x_body32, 22)
CQ_X_DEFINE(q5_1, GGUF_GGML_Q5_1, cq_x_body32, 24)
CQ_X_DEFINE(q4_k, GGUF_GGML_Q4_K, cq_x_body_k45, 144)
CQ_X_DEFINE(q5_k, GGUF_GGML_Q5_K, cq_x_body_k45, 176)
CQ_X_DEFINE(q6_k, GGUF_GGML_Q6_K, cq_x_body_q6k, 210)
CQ_X_DEFINE(q2_k, GGUF_GGML_Q2_K, cq_x_body_k23, 84)
CQ_X_DEFINE(q3_k, GGUF_GGML_Q3_K, cq_x_body_k23, 110)

/* Software prefetch of the N bytes at P into L1, one request a cache line. */
static inline void CQ_FN(cq_x_prefetch)(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i += 64)
        _mm_prefetch((const char *)p + i, _MM_HINT_T0);
}

/* The matrix form's row loop (struct cq_margs, cpu_quant.c) with the kernel inlined; a single
 * activation row takes the 4- and 5-bit 32-block types two weight rows at a time (PAIR). Not
 * Q8_0: its pairs ran faster from cache (37-46 vs 29-35 GB/s) but at 7-8 GB/s instead of 26-29
 * streaming 60 MB from memory, one row at a time (2026-12-02, one core; Q4_1 pairs: 16.1 vs
 * 15.3-15.5 GB/s from memory). */
#define CQ_X_MDEFINE(NAME, TYPE, BBYTES, PAIR)                                                     \
    static void CQ_FN(cq_m_##NAME)(const struct cq_margs *g, size_t o, size_t end) {               \
        float r[CQ_MAX_ROWS];                                                                      \
        if (PAIR && g->n_tok == 1)                                                                 \
            for (; o + 2 <= end; o += 2) {                                                         \
                CQ_FN(cq_x_prefetch)(g->w + o * g->row_bytes + CQ_PF_BYTES, 2 * g->row_bytes);     \
                CQ_FN(cq_x_body32_r2)                                                              \
                (TYPE, BBYTES, g->w + o * g->row_bytes, g->w + (o + 1) * g->row_bytes, g->qa,      \
                 g->nb, &r[0], &r[1]);                                                             \
                cq_put(g, o, r[0]);                                                                \
                cq_put(g, o + 1, r[1]);                                                            \
            }                                                                                      \
        for (; o < end; o++) {                                                                     \
            CQ_FN(cq_x_prefetch)(g->w + o * g->row_bytes + CQ_PF_BYTES, g->row_bytes);             \
            CQ_FN(cq_##NAME)(g->w + o * g->row_bytes, g->qa, g->qa_stride, g->n_tok, g->nb, r);    \
            cq_put_rows(g, o, r);                                                                  \
        }                                                                                          \
    }

CQ_X_MDEFINE(q8_0, GGUF_GGML_Q8_0, 34, 0)
CQ_X_MDEFINE(q4_0, GGUF_GGML_Q4_0, 18, 1)
#if CQ_VNNI
/* Q4_1 on VNNI: the activation rows come prepared (g->prep, cq_prep_a32x4), two weight rows a
 * loop against each of them. */
static void CQ_FN(cq_m_q4_1)(const struct cq_margs *g, size_t o, size_t end) {
    float r[2];
    for (; o + 2 <= end; o += 2) {
        CQ_FN(cq_x_prefetch)(g->w + o * g->row_bytes + CQ_PF_BYTES, 2 * g->row_bytes);
        const uint8_t *w2[2] = {g->w + o * g->row_bytes, g->w + (o + 1) * g->row_bytes};
        for (int u = 0; u < g->n_tok; u++) {
            CQ_FN(cq_x_q41_rows)(w2, 2, g->prep + (size_t)u * g->prep_stride, g->nb, r);
            float *y = g->out + (size_t)u * g->out_stride + o;
            y[0] = g->accumulate ? y[0] + r[0] : r[0];
            y[1] = g->accumulate ? y[1] + r[1] : r[1];
        }
    }
    for (; o < end; o++) {
        const uint8_t *w1 = g->w + o * g->row_bytes;
        for (int u = 0; u < g->n_tok; u++) {
            CQ_FN(cq_x_q41_rows)(&w1, 1, g->prep + (size_t)u * g->prep_stride, g->nb, r);
            float *y = g->out + (size_t)u * g->out_stride + o;
            *y = g->accumulate ? *y + r[0] : r[0];
        }
    }
}
#else
CQ_X_MDEFINE(q4_1, GGUF_GGML_Q4_1, 20, 1)
#endif
CQ_X_MDEFINE(q5_0, GGUF_GGML_Q5_0, 22, 1)
CQ_X_MDEFINE(q5_1, GGUF_GGML_Q5_1, 24, 1)
CQ_X_MDEFINE(q4_k, GGUF_GGML_Q4_K, 144, 0)
CQ_X_MDEFINE(q5_k, GGUF_GGML_Q5_K, 176, 0)
CQ_X_MDEFINE(q6_k, GGUF_GGML_Q6_K, 210, 0)
CQ_X_MDEFINE(q2_k, GGUF_GGML_Q2_K, 84, 0)
CQ_X_MDEFINE(q3_k, GGUF_GGML_Q3_K, 110, 0)
#undef CQ_X_MDEFINE

#undef CQ_X_DEFINE
#undef CQ_X_ROWS
#undef CQ_FN
#undef CQ_CAT
#undef CQ_CAT2
