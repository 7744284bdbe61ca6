/* test_gguf.c — GGUF parser and dequantization: a GGUF file built here byte by byte, read back
 * through every accessor, dequantized against hand-computed values (one hand-built block per
 * Q5_x / K-quant type too), then corrupted (truncated at every length, bad magic/version, huge
 * counts, bad offsets/types, K-quant rows that are not whole blocks) to check each failure is a
 * clean error naming the file and the tensor. Bit-identity with gguf-py on random blocks and a
 * real K-quant file: tests/test_gguf_quant.py. */
#include <criterion/criterion.h>

#include "model/gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* --- a tiny GGUF writer -------------------------------------------------------------------------
 */

struct buf {
    uint8_t *p;
    size_t n, cap;
};

static void put(struct buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(struct buf *b, uint32_t v) {
    put(b, &v, 4);
}
static void put_u64(struct buf *b, uint64_t v) {
    put(b, &v, 8);
}
static void put_str(struct buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void put_key(struct buf *b, const char *k, uint32_t type) {
    put_str(b, k);
    put_u32(b, type);
}

static uint16_t f2h(float f) /* exact for the values used here (small integers, halves) */
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int e = (int)((x >> 23) & 0xff) - 127 + 15;
    if ((x & 0x7fffffff) == 0) return (uint16_t)sign;
    return (uint16_t)(sign | (uint32_t)(e << 10) | ((x >> 13) & 0x3ff));
}

/* Offsets in the file of interesting fields, recorded by build_file for corruption tests. */
struct layout {
    size_t n_tensors_at, n_kv_at, first_tensor_info, data_start;
    size_t q40_type_at, q40_offset_at;
};

#define N_KV 14
#define N_T 6

/* Build the test GGUF: KVs of every type, tensors of every supported type. The last tensor's
 * data ends exactly at the end of the file, so every truncation is detectable. */
static struct buf build_file(struct layout *L, uint32_t version) {
    struct buf b = {0};
    struct layout l = {0};
    put_u32(&b, 0x46554747u);
    put_u32(&b, version);
    l.n_tensors_at = b.n;
    put_u64(&b, N_T);
    l.n_kv_at = b.n;
    put_u64(&b, N_KV);
    uint8_t u8 = 200;
    int8_t i8 = -5;
    uint16_t u16 = 60000;
    int16_t i16 = -300;
    int32_t i32 = -70000;
    uint64_t u64 = 1ull << 40;
    int64_t i64 = -(1ll << 40);
    float f32 = 0.25f;
    double f64 = 1e-5;
    uint8_t bo = 1;
    put_key(&b, "general.architecture", 8);
    put_str(&b, "llama");
    put_key(&b, "t.u8", 0);
    put(&b, &u8, 1);
    put_key(&b, "t.i8", 1);
    put(&b, &i8, 1);
    put_key(&b, "t.u16", 2);
    put(&b, &u16, 2);
    put_key(&b, "t.i16", 3);
    put(&b, &i16, 2);
    put_key(&b, "t.u32", 4);
    put_u32(&b, 576);
    put_key(&b, "t.i32", 5);
    put(&b, &i32, 4);
    put_key(&b, "t.f32", 6);
    put(&b, &f32, 4);
    put_key(&b, "t.bool", 7);
    put(&b, &bo, 1);
    put_key(&b, "t.u64", 10);
    put(&b, &u64, 8);
    put_key(&b, "t.i64", 11);
    put(&b, &i64, 8);
    put_key(&b, "t.f64", 12);
    put(&b, &f64, 8);
    put_key(&b, "t.strs", 9); /* array of strings */
    put_u32(&b, 8);
    put_u64(&b, 3);
    put_str(&b, "a");
    put_str(&b, "");
    put_str(&b, "Ġt he");
    put_key(&b, "t.nested", 9); /* array of arrays of u16 */
    put_u32(&b, 9);
    put_u64(&b, 2);
    put_u32(&b, 2);
    put_u64(&b, 1);
    put(&b, &u16, 2);
    put_u32(&b, 2);
    put_u64(&b, 0);

    /* tensors: name, n_dims, ne, type, offset (aligned 32) */
    static const struct {
        const char *name;
        uint32_t type;
        uint64_t ne0, ne1;
        uint64_t bytes;
    } ts[N_T] = {
        {"f32", 0, 4, 2, 32},   {"f16", 1, 4, 1, 8},    {"bf16", 30, 4, 1, 8},
        {"q8_0", 8, 32, 1, 34}, {"q4_1", 3, 32, 1, 20}, {"q4_0", 2, 32, 2, 36},
    };
    uint64_t off = 0, offs[N_T];
    l.first_tensor_info = b.n;
    for (int i = 0; i < N_T; i++) {
        put_str(&b, ts[i].name);
        put_u32(&b, 2);
        put_u64(&b, ts[i].ne0);
        put_u64(&b, ts[i].ne1);
        if (i == 5) l.q40_type_at = b.n;
        put_u32(&b, ts[i].type);
        if (i == 5) l.q40_offset_at = b.n;
        put_u64(&b, off);
        offs[i] = off;
        off += (ts[i].bytes + 31) / 32 * 32;
    }
    while (b.n % 32)
        put(&b, "", 1);
    l.data_start = b.n;
    /* data */
    for (int i = 0; i < N_T; i++) {
        while (b.n < l.data_start + offs[i])
            put(&b, "", 1);
        switch (i) {
        case 0:
            for (int j = 0; j < 8; j++) {
                float v = (float)j - 3.5f;
                put(&b, &v, 4);
            }
            break;
        case 1: {
            uint16_t h[4] = {0x3c00, 0xc000, 0x0001, 0x7c00}; /* 1, -2, 2^-24, inf */
            put(&b, h, 8);
            break;
        }
        case 2: {
            uint16_t h[4] = {0x3f80, 0xbf00, 0x4049, 0x0000}; /* 1, -0.5, 3.140625, 0 */
            put(&b, h, 8);
            break;
        }
        case 3: {
            uint16_t d = f2h(0.5f);
            put(&b, &d, 2);
            for (int j = 0; j < 32; j++) {
                int8_t q = (int8_t)(j * 8 - 128);
                put(&b, &q, 1);
            }
            break;
        }
        case 4: {
            uint16_t d = f2h(0.5f), m = f2h(-1.0f);
            put(&b, &d, 2);
            put(&b, &m, 2);
            for (int j = 0; j < 16; j++) {
                uint8_t q = (uint8_t)(j | ((15 - j) << 4));
                put(&b, &q, 1);
            }
            break;
        }
        case 5:
            for (int r = 0; r < 2; r++) {
                uint16_t d = f2h(r ? 2.0f : 1.0f);
                put(&b, &d, 2);
                for (int j = 0; j < 16; j++) {
                    uint8_t q = (uint8_t)(j | ((15 - j) << 4));
                    put(&b, &q, 1);
                }
            }
            break;
        }
    }
    if (L) *L = l;
    return b;
}

static char tmp_path[256];

static const char *write_tmp(const struct buf *b, size_t n) {
    mkdir("tests/tmp", 0755);
    snprintf(tmp_path, sizeof(tmp_path), "tests/tmp/test_gguf_%d.gguf", (int)getpid());
    FILE *f = fopen(tmp_path, "wb");
    cr_assert(f);
    if (n) fwrite(b->p, 1, n, f);
    fclose(f);
    return tmp_path;
}

/* Expect gguf_open of the first N bytes of B to fail with an error naming the file and
 * containing WANT (if not NULL). */
static void expect_fail(const struct buf *b, size_t n, const char *want) {
    const char *p = write_tmp(b, n);
    struct gguf_file *f = NULL;
    char err[512] = "";
    int rc = gguf_open(p, &f, err, sizeof(err));
    cr_assert_eq(rc, -1, "open of %zu bytes should fail", n);
    cr_assert_null(f);
    cr_assert(strstr(err, p), "error does not name the file: %s", err);
    if (want) cr_assert(strstr(err, want), "error '%s' lacks '%s'", err, want);
    unlink(p);
}

/* --- tests --------------------------------------------------------------------------------------
 */

Test(gguf, reads_kvs_of_every_width) {
    struct buf b = build_file(NULL, 3);
    const char *p = write_tmp(&b, b.n);
    struct gguf_file *f;
    char err[512];
    cr_assert_eq(gguf_open(p, &f, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f->version, 3);
    cr_assert_eq(f->n_kv, N_KV);
    int64_t v;
    static const struct {
        const char *k;
        int64_t want;
    } ints[] = {{"t.u8", 200},  {"t.i8", -5},      {"t.u16", 60000},     {"t.i16", -300},
                {"t.u32", 576}, {"t.i32", -70000}, {"t.u64", 1ll << 40}, {"t.i64", -(1ll << 40)},
                {"t.bool", 1}};
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        cr_assert_eq(gguf_get_int(f, ints[i].k, &v, err, sizeof(err)), 1, "%s", ints[i].k);
        cr_assert_eq(v, ints[i].want, "%s", ints[i].k);
    }
    cr_assert_eq(gguf_get_int(f, "absent", &v, err, sizeof(err)), 0);
    cr_assert_eq(gguf_get_int(f, "general.architecture", &v, err, sizeof(err)), -1);
    cr_assert(strstr(err, "general.architecture") && strstr(err, "string"), "%s", err);
    double d;
    cr_assert_eq(gguf_get_float(f, "t.f32", &d, err, sizeof(err)), 1);
    cr_assert_float_eq(d, 0.25, 0);
    cr_assert_eq(gguf_get_float(f, "t.f64", &d, err, sizeof(err)), 1);
    cr_assert_float_eq(d, 1e-5, 0);
    cr_assert_eq(gguf_get_float(f, "t.u32", &d, err, sizeof(err)), 1);
    cr_assert_float_eq(d, 576.0, 0);
    const char *s;
    size_t n;
    cr_assert_eq(gguf_get_str(f, "general.architecture", &s, &n, err, sizeof(err)), 1);
    cr_assert(n == 5 && !memcmp(s, "llama", 5));
    char **strs;
    size_t *lens;
    cr_assert_eq(gguf_get_str_array(f, "t.strs", &strs, &lens, &n, err, sizeof(err)), 1);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(strs[0], "a");
    cr_assert_str_eq(strs[1], "");
    cr_assert_str_eq(strs[2], "Ġt he");
    cr_assert_eq(lens[2], strlen("Ġt he"));
    free(strs);
    free(lens);
    int32_t *iv;
    cr_assert_eq(gguf_get_i32_array(f, "t.strs", &iv, &n, err, sizeof(err)), -1);
    cr_assert_eq(gguf_get_str_array(f, "t.u8", &strs, &lens, &n, err, sizeof(err)), -1);
    const struct gguf_kv *kv = gguf_find_kv(f, "t.nested");
    cr_assert(kv && kv->type == GGUF_VTYPE_ARRAY && kv->arr_type == GGUF_VTYPE_ARRAY &&
              kv->arr_count == 2);
    gguf_close(f);
    unlink(p);
    free(b.p);
}

Test(gguf, tensor_table_and_dequant) {
    struct layout L;
    struct buf b = build_file(&L, 2); /* v2 has the same layout */
    const char *p = write_tmp(&b, b.n);
    struct gguf_file *f;
    char err[512];
    cr_assert_eq(gguf_open(p, &f, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f->n_tensors, N_T);
    cr_assert_eq(f->alignment, 32);
    cr_assert_eq(f->data_offset, L.data_start);
    float y[64];

    const struct gguf_tensor *t = gguf_find_tensor(f, "f32");
    cr_assert(t && t->ne[0] == 4 && t->ne[1] == 2 && t->n_elems == 8 && t->n_bytes == 32);
    cr_assert_eq(gguf_dequantize(t->type, t->data, y, t->n_elems), 0);
    for (int j = 0; j < 8; j++)
        cr_assert_eq(y[j], (float)j - 3.5f);

    t = gguf_find_tensor(f, "f16");
    gguf_dequantize(t->type, t->data, y, 4);
    cr_assert(y[0] == 1.0f && y[1] == -2.0f && y[2] == ldexpf(1, -24) && isinf(y[3]));

    t = gguf_find_tensor(f, "bf16");
    gguf_dequantize(t->type, t->data, y, 4);
    cr_assert(y[0] == 1.0f && y[1] == -0.5f && y[2] == 3.140625f && y[3] == 0.0f);

    t = gguf_find_tensor(f, "q8_0");
    cr_assert_eq(t->n_bytes, 34);
    gguf_dequantize(t->type, t->data, y, 32);
    for (int j = 0; j < 32; j++)
        cr_assert_eq(y[j], (float)(j * 8 - 128) * 0.5f);

    /* nibble order: low nibble of byte j is element j, high nibble is element j+16 */
    t = gguf_find_tensor(f, "q4_1");
    gguf_dequantize(t->type, t->data, y, 32);
    for (int j = 0; j < 16; j++) {
        cr_assert_eq(y[j], 0.5f * (float)j - 1.0f, "q4_1 y[%d] = %g", j, y[j]);
        cr_assert_eq(y[j + 16], 0.5f * (float)(15 - j) - 1.0f, "q4_1 y[%d]", j + 16);
    }
    t = gguf_find_tensor(f, "q4_0");
    cr_assert_eq(gguf_type_row_bytes(t->type, t->ne[0]), 18);
    gguf_dequantize(t->type, t->data, y, 64);
    for (int r = 0; r < 2; r++)
        for (int j = 0; j < 16; j++) {
            float d = r ? 2.0f : 1.0f;
            cr_assert_eq(y[32 * r + j], d * (float)(j - 8));
            cr_assert_eq(y[32 * r + j + 16], d * (float)(7 - j));
        }
    cr_assert_null(gguf_find_tensor(f, "nope"));
    gguf_close(f);
    unlink(p);
    free(b.p);
}

Test(gguf, fp16_conversion_matches_ieee) {
    /* every finite half against a double-precision reconstruction */
    for (uint32_t h = 0; h < 0x10000; h++) {
        uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
        float got = gguf_fp16_to_fp32((uint16_t)h);
        if (e == 0x1f) {
            cr_assert(m ? isnan(got) : isinf(got));
            continue;
        }
        double v = e ? ldexp(1.0 + m / 1024.0, (int)e - 15) : ldexp(m / 1024.0, -14);
        if (h & 0x8000) v = -v;
        cr_assert_eq((double)got, v, "half 0x%04x -> %g, want %g", h, got, v);
    }
}

/* The vectorized row form gives the scalar's bits for every half (NaN payloads included), in
 * the 16-wide body and in the tail: all 65,536 halves in order (a multiple of 16), then shifted
 * by 5 so that every value also passes through the tail. */
Test(gguf, fp16_row_matches_scalar_bits) {
    static uint8_t src[2 * 0x10000 + 10];
    static float dst[0x10000 + 5];
    for (int shift = 0; shift <= 5; shift += 5) {
        for (uint32_t i = 0; i < 0x10000 + 5; i++) {
            uint32_t h = (i + 0x10000 - (uint32_t)shift) & 0xffff;
            src[2 * i] = (uint8_t)h;
            src[2 * i + 1] = (uint8_t)(h >> 8);
        }
        gguf_fp16_row_to_fp32(src, dst, 0x10000 + (uint64_t)shift);
        for (uint32_t i = 0; i < 0x10000 + (uint32_t)shift; i++) {
            uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
            float want = gguf_fp16_to_fp32(h);
            cr_assert(!memcmp(&dst[i], &want, 4), "half 0x%04x at %u: %a, want %a", h, i, dst[i],
                      want);
        }
    }
}

Test(gguf, type_names_and_support) {
    cr_assert_str_eq(gguf_type_name(3), "Q4_1");
    cr_assert_str_eq(gguf_type_name(14), "Q6_K");
    cr_assert_str_eq(gguf_type_name(30), "BF16");
    cr_assert_str_eq(gguf_type_name(999), "unknown");
    static const uint32_t ok[] = {0, 1, 30, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 15};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        cr_assert(gguf_type_supported(ok[i]), "%s", gguf_type_name(ok[i]));
        cr_assert(strstr(gguf_type_supported_list(), gguf_type_name(ok[i])));
    }
    /* known but not dequantized (IQ2_XXS, IQ4_NL, TQ1_0, Q8_1, I8): names, sizes, -1 */
    static const uint32_t no[] = {16, 20, 34, 9, 24};
    float y[256];
    uint8_t blk[292] = {0};
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        cr_assert(gguf_type_known(no[i]) && !gguf_type_supported(no[i]));
        cr_assert_eq(gguf_dequantize(no[i], blk, y, gguf_type_block(no[i])), -1);
    }
    cr_assert(!gguf_type_known(999) && gguf_type_block(999) == 0);
    cr_assert_eq(gguf_type_row_bytes(12, 512), 288);
    cr_assert_eq(gguf_type_row_bytes(12, 500), 0); /* not whole Q4_K blocks */
    cr_assert_eq(gguf_dequantize(12, blk, y, 128), -1);
    cr_assert(gguf_type_quantized(12) && !gguf_type_quantized(30) && !gguf_type_quantized(0));
}

/* One hand-built block per newer type; the expected values are worked out by hand from the
 * layouts in the ggml block layouts (gguf-py quants.py, ggml-common.h) (the bit-identical check
 * against gguf-py on random blocks and on a real file is tests/test_gguf_quant.py). */
static void put_h(uint8_t *p, float v) {
    uint16_t h = f2h(v);
    memcpy(p, &h, 2);
}

Test(gguf, dequant_q5_blocks_by_hand) {
    uint8_t b0[22] = {0}, b1[24] = {0};
    uint32_t qh = 0x80000001u; /* fifth bit set for elements 0 and 31 */
    put_h(b0, 0.5f);
    memcpy(b0 + 2, &qh, 4);
    put_h(b1, 0.5f);
    put_h(b1 + 2, -1.0f);
    memcpy(b1 + 4, &qh, 4);
    for (int j = 0; j < 16; j++)
        b0[6 + j] = b1[8 + j] = (uint8_t)(j | (15 - j) << 4);
    float y[32];
    cr_assert_eq(gguf_dequantize(GGUF_GGML_Q5_0, b0, y, 32), 0);
    cr_assert(y[0] == 0.0f && y[1] == -7.5f && y[16] == -0.5f && y[31] == 0.0f, "%g %g %g %g", y[0],
              y[1], y[16], y[31]);
    cr_assert_eq(gguf_dequantize(GGUF_GGML_Q5_1, b1, y, 32), 0);
    cr_assert(y[0] == 7.0f && y[1] == -0.5f && y[16] == 6.5f && y[31] == 7.0f, "%g %g %g %g", y[0],
              y[1], y[16], y[31]);
}

Test(gguf, dequant_q2_k_and_q3_k_by_hand) {
    uint8_t b[110] = {0};
    float y[256];
    /* Q2_K: scales[k] = sc k | min (15-k) << 4; qs[i] = i; d 0.5, dmin 0.25 */
    for (int k = 0; k < 16; k++)
        b[k] = (uint8_t)(k | (15 - k) << 4);
    for (int i = 0; i < 64; i++)
        b[16 + i] = (uint8_t)i;
    put_h(b + 80, 0.5f);
    put_h(b + 82, 0.25f);
    cr_assert_eq(gguf_dequantize(GGUF_GGML_Q2_K, b, y, 256), 0);
    cr_assert_eq(y[0], -3.75f);   /* q 0, min 15 */
    cr_assert_eq(y[37], -2.25f);  /* qs[5] field 1 = 1; sub-block 2: sc 2, min 13 */
    cr_assert_eq(y[200], 11.25f); /* qs[40] field 2 = 2; sub-block 12: sc 12, min 3 */

    /* Q3_K: d 2; scale 9 = (5 | 2 << 4) - 32 = 5, scale 1 = -32 */
    memset(b, 0, sizeof(b));
    b[96 + 1] = 0x50; /* low 4 bits of scale 9 (high nibble); scale 1's are 0 */
    b[96 + 9] = 0x20; /* field 2 of scales[9]: high 2 bits of scale 9 */
    b[32 + 54] = 0x03;
    b[32 + 20] = 0x02;
    b[20] = 0x01; /* hmask[20] bit 0: element 20 has no -4 */
    put_h(b + 108, 2.0f);
    cr_assert_eq(gguf_dequantize(GGUF_GGML_Q3_K, b, y, 256), 0);
    cr_assert_eq(y[150], -10.0f); /* qs[54] field 0 = 3, hmask[22] bit 4 clear: q -1; scale 5 */
    cr_assert_eq(y[20], -128.0f); /* q 2, scale -32 */
    cr_assert_eq(y[0], 256.0f);   /* q 0 - 4 (hmask clear), scale 0 - 32: 2 * -32 * -4 */
}

Test(gguf, dequant_q4_k_q5_k_q6_k_q8_k_by_hand) {
    uint8_t b[292] = {0};
    float y[256];
    /* Q4_K scales: sc0 1, m0 2, and for sub-block 4 the packed sc4 = 3 | 1 << 4 = 19,
     * m4 = 7 | 2 << 4 = 39 */
    uint8_t sc[12] = {0x41, 0, 0, 0, 0x82, 0, 0, 0, 0x73, 0, 0, 0};
    put_h(b, 1.0f);
    put_h(b + 2, 0.5f);
    memcpy(b + 4, sc, 12);
    b[16 + 0] = 0x0f;
    b[16 + 64 + 5] = 0xa7;
    cr_assert_eq(gguf_dequantize(GGUF_GGML_Q4_K, b, y, 256), 0);
    cr_assert_eq(y[0], 14.0f);    /* 1 * 1 * 15 - 0.5 * 2 */
    cr_assert_eq(y[133], 113.5f); /* 1 * 19 * 7 - 0.5 * 39 */
    cr_assert_eq(y[165], 0.0f);   /* sub-block 5: high nibble 10, scale and min 0 */
    cr_assert_eq(y[32], 0.0f);

    memset(b, 0, sizeof(b)); /* Q5_K: same scales, qh[5] bit 4 */
    put_h(b, 1.0f);
    put_h(b + 2, 0.5f);
    memcpy(b + 4, sc, 12);
    b[16 + 5] = 0x10;
    b[48 + 64 + 5] = 0xa7;
    cr_assert_eq(gguf_dequantize(GGUF_GGML_Q5_K, b, y, 256), 0);
    cr_assert_eq(y[133], 417.5f); /* 19 * (7 | 16) - 19.5 */
    cr_assert_eq(y[165], 0.0f);

    memset(b, 0, sizeof(b)); /* Q6_K: d 0.5, scales[0] -3, scales[13] 5 */
    b[0] = 0x3c;
    b[128] = 0x93;
    b[80] = 0x50;
    b[128 + 48] = 0x20;
    b[192] = (uint8_t)-3;
    b[192 + 13] = 5;
    put_h(b + 208, 0.5f);
    cr_assert_eq(gguf_dequantize(GGUF_GGML_Q6_K, b, y, 256), 0);
    cr_assert_eq(y[0], -42.0f);  /* (12 | 3 << 4) - 32 = 28, times 0.5 * -3 */
    cr_assert_eq(y[208], 12.5f); /* (ql[80] >> 4 = 5 | field 2 of qh[48] = 2 << 4) - 32 = 5 */
    cr_assert_eq(y[64], 0.0f);   /* scale 4 is 0 */

    memset(b, 0, sizeof(b)); /* Q8_K: f32 d 0.25; qs[j] = j - 128 */
    float d = 0.25f;
    memcpy(b, &d, 4);
    for (int j = 0; j < 256; j++)
        b[4 + j] = (uint8_t)(j - 128);
    cr_assert_eq(gguf_dequantize(GGUF_GGML_Q8_K, b, y, 256), 0);
    for (int j = 0; j < 256; j++)
        cr_assert_eq(y[j], 0.25f * (float)(j - 128));
}

Test(gguf, truncated_at_every_length) {
    struct buf b = build_file(NULL, 3);
    const char *p = write_tmp(&b, b.n);
    for (size_t n = b.n; n-- > 0;) { /* shrink in place: rewriting is slow on overlayfs */
        cr_assert_eq(truncate(p, (off_t)n), 0);
        struct gguf_file *f = NULL;
        char err[512] = "";
        cr_assert_eq(gguf_open(p, &f, err, sizeof(err)), -1, "open of %zu bytes should fail", n);
        cr_assert(strstr(err, p), "error does not name the file: %s", err);
    }
    unlink(p);
    free(b.p);
}

Test(gguf, bad_magic_and_version) {
    struct buf b = build_file(NULL, 3);
    memcpy(b.p, "GGML", 4);
    expect_fail(&b, b.n, "not a GGUF file");
    free(b.p);
    b = build_file(NULL, 1);
    expect_fail(&b, b.n, "unsupported GGUF version 1");
    free(b.p);
    b = build_file(NULL, 4);
    expect_fail(&b, b.n, "unsupported GGUF version 4");
    free(b.p);
    b = build_file(NULL, 0x03000000u);
    expect_fail(&b, b.n, "big-endian");
    free(b.p);
}

Test(gguf, huge_counts_are_bounded) {
    struct layout L;
    struct buf b = build_file(&L, 3);
    uint64_t huge = 1ull << 60;
    memcpy(b.p + L.n_kv_at, &huge, 8);
    expect_fail(&b, b.n, "metadata count");
    free(b.p);
    b = build_file(&L, 3);
    memcpy(b.p + L.n_tensors_at, &huge, 8);
    expect_fail(&b, b.n, "tensor count");
    free(b.p);
    /* a string length of 2^60 in the first key */
    b = build_file(&L, 3);
    memcpy(b.p + 24, &huge, 8);
    expect_fail(&b, b.n, "truncated metadata key");
    free(b.p);
}

Test(gguf, huge_array_and_string_values) {
    struct buf b = {0};
    put_u32(&b, 0x46554747u);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 1);
    put_key(&b, "tokenizer.ggml.tokens", 9);
    put_u32(&b, 8);
    put_u64(&b, 1ull << 62); /* claims 2^62 strings */
    put_str(&b, "a");
    expect_fail(&b, b.n, "tokenizer.ggml.tokens");
    b.n = 0;
    put_u32(&b, 0x46554747u);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 1);
    put_key(&b, "x.scores", 9);
    put_u32(&b, 6);
    put_u64(&b, 1ull << 62); /* 2^62 floats */
    expect_fail(&b, b.n, "array runs past the end");
    b.n = 0;
    put_u32(&b, 0x46554747u);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 1);
    put_key(&b, "x.weird", 77);
    put_u32(&b, 0);
    expect_fail(&b, b.n, "unknown value type");
    free(b.p);
}

Test(gguf, bad_tensor_infos) {
    struct layout L;
    struct buf b = build_file(&L, 3);
    uint32_t t = 99;
    memcpy(b.p + L.q40_type_at, &t, 4);
    expect_fail(&b, b.n, "unknown ggml type id 99");
    free(b.p);

    b = build_file(&L, 3);
    uint64_t off = 1ull << 40;
    memcpy(b.p + L.q40_offset_at, &off, 8);
    expect_fail(&b, b.n, "runs past the end");
    free(b.p);

    b = build_file(&L, 3);
    off = 33;
    memcpy(b.p + L.q40_offset_at, &off, 8);
    expect_fail(&b, b.n, "not aligned");
    free(b.p);

    b = build_file(&L, 3);
    t = 8; /* Q8_0 (34 bytes per 32) in place of Q4_0 (18): larger than the data left */
    memcpy(b.p + L.q40_type_at, &t, 4);
    expect_fail(&b, b.n, "'q4_0'");
    free(b.p);

    b = build_file(&L, 3);
    uint64_t ne0 = 33; /* q4_0's row length (first ne, 16 bytes before the type) */
    memcpy(b.p + L.q40_type_at - 16, &ne0, 8);
    expect_fail(&b, b.n, "not a multiple of the Q4_0 block");
    free(b.p);

    b = build_file(&L, 3);
    uint32_t nd = 7; /* first tensor's n_dims: after its name (u64 len + "f32") */
    memcpy(b.p + L.first_tensor_info + 8 + 3, &nd, 4);
    expect_fail(&b, b.n, "7 dimensions");
    free(b.p);

    b = build_file(&L, 3);
    memcpy(b.p + L.first_tensor_info + 8, "f16", 3); /* duplicate name */
    expect_fail(&b, b.n, "duplicate tensor 'f16'");
    free(b.p);
}

Test(gguf, bad_alignment_key) {
    struct buf b = {0};
    put_u32(&b, 0x46554747u);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 1);
    put_key(&b, "general.alignment", 4);
    put_u32(&b, 24);
    expect_fail(&b, b.n, "power of two");
    free(b.p);
}

Test(gguf, missing_file) {
    struct gguf_file *f = NULL;
    char err[256];
    cr_assert_eq(gguf_open("tests/tmp/does-not-exist.gguf", &f, err, sizeof(err)), -1);
    cr_assert(strstr(err, "does-not-exist.gguf"), "%s", err);
    gguf_close(NULL);
}

/* A GGUF of one 2-row tensor NAME of TYPE with row length NE0 and DATA_BYTES bytes of data. */
static struct buf one_tensor_file(const char *name, uint32_t type, uint64_t ne0,
                                  size_t data_bytes) {
    struct buf b = {0};
    put_u32(&b, 0x46554747u);
    put_u32(&b, 3);
    put_u64(&b, 1);
    put_u64(&b, 0);
    put_str(&b, name);
    put_u32(&b, 2);
    put_u64(&b, ne0);
    put_u64(&b, 2);
    put_u32(&b, type);
    put_u64(&b, 0);
    while (b.n % 32)
        put(&b, "", 1);
    for (size_t i = 0; i < data_bytes; i++) {
        uint8_t v = (uint8_t)(i * 37);
        put(&b, &v, 1);
    }
    return b;
}

Test(gguf, k_quant_tensor_errors_name_the_tensor) {
    /* whole: two Q4_K rows of 256 = 288 bytes; one byte short is a truncated block */
    struct buf b = one_tensor_file("blk.3.ffn_up.weight", GGUF_GGML_Q4_K, 256, 288);
    const char *p = write_tmp(&b, b.n);
    struct gguf_file *f;
    char err[512];
    cr_assert_eq(gguf_open(p, &f, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f->tensors[0].n_bytes, 288);
    gguf_close(f);
    unlink(p);
    expect_fail(&b, b.n - 1, "tensor 'blk.3.ffn_up.weight' (offset 0, 288 bytes) runs past");
    free(b.p);
    static const struct {
        uint32_t type;
        uint64_t ne0;
        const char *want;
    } bad[] = {
        {GGUF_GGML_Q6_K, 200, "tensor 'w': row length 200 is not a multiple of the Q6_K block"},
        {GGUF_GGML_Q2_K, 128, "not a multiple of the Q2_K block (256)"},
        {GGUF_GGML_Q5_1, 48, "not a multiple of the Q5_1 block (32)"},
        {77, 256, "tensor 'w' has unknown ggml type id 77"},
        {31, 256, "unknown ggml type id 31"}, /* a gap in ggml's numbering */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        b = one_tensor_file("w", bad[i].type, bad[i].ne0, 4096);
        expect_fail(&b, b.n, bad[i].want);
        free(b.p);
    }
}
