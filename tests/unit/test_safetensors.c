/* test_safetensors.c — safetensors reader: files built here (single and sharded), read back and
 * converted to fp32, then corrupted (every truncation, bad header length, bad JSON, unknown
 * dtype, offsets outside the buffer, size mismatches, duplicate names, bad index files) to check
 * that each failure is a clean error naming the file. FP8 checkpoints (model/fp8_ckpt.h): the
 * e4m3 decoder against ml_dtypes' table of all 256 codes, weight scales per tensor and per row,
 * and every refused quantization_config and scale tensor. */
#include <criterion/criterion.h>

#include "model/fp8_ckpt.h"
#include "model/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static void mkdirs(void) {
    mkdir("tests/tmp", 0755);
    snprintf(dir, sizeof(dir), "tests/tmp/test_st_%d", (int)getpid());
    mkdir(dir, 0755);
}

static void rmdirs(void) {
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* Write a safetensors file: HEADER JSON, then DATA (n bytes); TRUNC < 0 keeps all bytes. */
static const char *write_st(const char *name, const char *header, const void *data, size_t n,
                            long trunc) {
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    size_t hl = strlen(header);
    size_t total = 8 + hl + n;
    unsigned char *b = malloc(total);
    uint64_t h64 = hl;
    memcpy(b, &h64, 8);
    memcpy(b + 8, header, hl);
    memcpy(b + 8 + hl, data, n);
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    fwrite(b, 1, trunc >= 0 ? (size_t)trunc : total, f);
    fclose(f);
    free(b);
    return path;
}

/* F32 a [2,3] (24 B), F16 b [4] (8 B), BF16 c [2,2] (8 B), I32 d [1] (4 B) */
static const char *HDR = "{\"__metadata__\":{\"format\":\"pt\"},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                         "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
                         "\"c\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[32,40]},"
                         "\"d\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[40,44]}}";

static void make_data(unsigned char *d) {
    float a[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
    uint16_t b[4] = {0x3c00, 0xbc00, 0x3800, 0x0000}; /* 1 -1 0.5 0 */
    uint16_t c[4] = {0x4000, 0xc040, 0x3f00, 0x0000}; /* 2 -3 0.5 0 */
    int32_t i = 42;
    memcpy(d, a, 24);
    memcpy(d + 24, b, 8);
    memcpy(d + 32, c, 8);
    memcpy(d + 40, &i, 4);
}

static void expect_fail_path(const char *path, const char *want) {
    struct safetensors *s = NULL;
    char err[512] = "";
    cr_assert_eq(safetensors_open(path, &s, err, sizeof(err)), -1, "%s should fail", path);
    cr_assert_null(s);
    cr_assert(strstr(err, path), "error does not name the file: %s", err);
    if (want) cr_assert(strstr(err, want), "error '%s' lacks '%s'", err, want);
}

static void expect_fail_hdr(const char *hdr, const char *want) {
    unsigned char d[44];
    make_data(d);
    expect_fail_path(write_st("bad.safetensors", hdr, d, sizeof(d), -1), want);
}

Test(safetensors, reads_and_converts) {
    mkdirs();
    unsigned char d[44];
    make_data(d);
    const char *p = write_st("ok.safetensors", HDR, d, sizeof(d), -1);
    struct safetensors *s;
    char err[512];
    cr_assert_eq(safetensors_open(p, &s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(s->n_tensors, 4);
    const struct safetensors_tensor *t = safetensors_find(s, "a");
    cr_assert(t && t->n_dims == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->n_elems == 6);
    float y[6];
    cr_assert_eq(safetensors_to_f32(t, y), 0);
    cr_assert(y[0] == 1 && y[2] == 3.5f && y[4] == 1e-3f && y[5] == -7);
    t = safetensors_find(s, "b");
    safetensors_to_f32(t, y);
    cr_assert(y[0] == 1 && y[1] == -1 && y[2] == 0.5f && y[3] == 0);
    t = safetensors_find(s, "c");
    safetensors_to_f32(t, y);
    cr_assert(y[0] == 2 && y[1] == -3 && y[2] == 0.5f && y[3] == 0);
    t = safetensors_find(s, "d");
    cr_assert_str_eq(t->dtype, "I32");
    cr_assert_eq(safetensors_to_f32(t, y), -1, "I32 is not converted");
    cr_assert(!safetensors_dtype_supported("I32") && safetensors_dtype_supported("BF16"));
    cr_assert_null(safetensors_find(s, "__metadata__"));
    cr_assert_null(safetensors_find(s, "zz"));
    safetensors_close(s);
    safetensors_close(NULL);
    rmdirs();
}

Test(safetensors, truncated_at_every_length) {
    mkdirs();
    unsigned char d[44];
    make_data(d);
    size_t total = 8 + strlen(HDR) + sizeof(d);
    const char *p = write_st("t.safetensors", HDR, d, sizeof(d), -1);
    for (size_t n = total; n-- > 0;) { /* shrink in place: rewriting is slow on overlayfs */
        cr_assert_eq(truncate(p, (off_t)n), 0);
        expect_fail_path(p, NULL);
    }
    rmdirs();
}

Test(safetensors, bad_headers) {
    mkdirs();
    expect_fail_hdr("[1,2]", "not a JSON object");
    expect_fail_hdr("{\"a\":", "not a JSON object");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                    "unknown dtype 'F33'");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[40,48]}}",
                    "outside the data buffer");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,4]}}",
                    "outside the data buffer");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
                    "spans 8 bytes but its shape and dtype F32 need 12");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
                    "invalid shape");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
                    "invalid shape");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                    "\"data_offsets\":[0,4]}}",
                    "overflowing shape");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", "data_offsets");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    "duplicate tensor 'a'");
    expect_fail_hdr("{\"a\":3}", "not an object");
    rmdirs();
}

Test(safetensors, header_length_bounds) {
    mkdirs();
    char path[512];
    snprintf(path, sizeof(path), "%s/len.safetensors", dir);
    uint64_t lens[2] = {1ull << 62, 200000000ull}; /* past the file; over the 100 MB limit */
    const char *want[2] = {"exceeds the 100 MB limit", "exceeds the 100 MB limit"};
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(path, "wb");
        fwrite(&lens[i], 8, 1, f);
        fwrite("{}", 1, 2, f);
        fclose(f);
        expect_fail_path(path, want[i]);
    }
    FILE *f = fopen(path, "wb");
    uint64_t l = 100;
    fwrite(&l, 8, 1, f);
    fwrite("{}", 1, 2, f);
    fclose(f);
    expect_fail_path(path, "only 2 follow");
    rmdirs();
}

static void write_text(const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

Test(safetensors, sharded_checkpoint) {
    mkdirs();
    float a[2] = {1, 2}, b[3] = {3, 4, 5};
    write_st("model-00001-of-00002.safetensors",
             "{\"x.a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", a, 8, -1);
    write_st("model-00002-of-00002.safetensors",
             "{\"x.b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", b, 12, -1);
    write_text("model.safetensors.index.json", "{\"metadata\":{\"total_size\":20},\"weight_map\":{"
                                               "\"x.a\":\"model-00001-of-00002.safetensors\","
                                               "\"x.b\":\"model-00002-of-00002.safetensors\"}}");
    struct safetensors *s;
    char err[512];
    cr_assert_eq(safetensors_open_dir(dir, &s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(s->n_files, 2);
    cr_assert_eq(s->n_tensors, 2);
    float y[3];
    safetensors_to_f32(safetensors_find(s, "x.b"), y);
    cr_assert(y[0] == 3 && y[2] == 5);
    cr_assert_eq(safetensors_find(s, "x.b")->file, 1);
    safetensors_close(s);

    /* index names a tensor that is not in its shard */
    write_text("model.safetensors.index.json",
               "{\"weight_map\":{\"x.a\":\"model-00001-of-00002.safetensors\","
               "\"x.c\":\"model-00002-of-00002.safetensors\"}}");
    cr_assert_eq(safetensors_open_dir(dir, &s, err, sizeof(err)), -1);
    cr_assert(strstr(err, "'x.c'") && strstr(err, "index.json"), "%s", err);
    /* a shard that does not exist */
    write_text("model.safetensors.index.json",
               "{\"weight_map\":{\"x.a\":\"model-00009-of-00009.safetensors\"}}");
    cr_assert_eq(safetensors_open_dir(dir, &s, err, sizeof(err)), -1);
    cr_assert(strstr(err, "model-00009-of-00009.safetensors"), "%s", err);
    /* path traversal */
    write_text("model.safetensors.index.json", "{\"weight_map\":{\"x.a\":\"../evil\"}}");
    cr_assert_eq(safetensors_open_dir(dir, &s, err, sizeof(err)), -1);
    cr_assert(strstr(err, "not a shard file name"), "%s", err);
    /* the same tensor in two shards */
    write_st("model-00002-of-00002.safetensors",
             "{\"x.a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", a, 8, -1);
    write_text("model.safetensors.index.json",
               "{\"weight_map\":{\"x.a\":\"model-00001-of-00002.safetensors\","
               "\"x.b\":\"model-00002-of-00002.safetensors\"}}");
    cr_assert_eq(safetensors_open_dir(dir, &s, err, sizeof(err)), -1);
    cr_assert(strstr(err, "duplicate tensor 'x.a'"), "%s", err);
    write_text("model.safetensors.index.json", "{\"weight_map\":[]}");
    cr_assert_eq(safetensors_open_dir(dir, &s, err, sizeof(err)), -1);
    cr_assert(strstr(err, "no weight_map"), "%s", err);
    rmdirs();
}

Test(safetensors, empty_dir) {
    mkdirs();
    struct safetensors *s;
    char err[512];
    cr_assert_eq(safetensors_open_dir(dir, &s, err, sizeof(err)), -1);
    cr_assert(strstr(err, "no model.safetensors"), "%s", err);
    rmdirs();
}

/* --- FP8 (e4m3) --------------------------------------------------------------------------------
 */

/* All 256 e4m3 codes as ml_dtypes 0.6.0 decodes them (numpy.arange(256, dtype=uint8)
 * .view(ml_dtypes.float8_e4m3fn).astype(float64), printed with float.hex): an implementation
 * independent of ours. NAN marks 0x7f and 0xff. */
static const double E4M3[256] = {
    0x0p+0,  0x1p-9,    0x1p-8,    0x1.8p-8,  0x1p-7,    0x1.4p-7,  0x1.8p-7,  0x1.cp-7,
    0x1p-6,  0x1.2p-6,  0x1.4p-6,  0x1.6p-6,  0x1.8p-6,  0x1.ap-6,  0x1.cp-6,  0x1.ep-6,
    0x1p-5,  0x1.2p-5,  0x1.4p-5,  0x1.6p-5,  0x1.8p-5,  0x1.ap-5,  0x1.cp-5,  0x1.ep-5,
    0x1p-4,  0x1.2p-4,  0x1.4p-4,  0x1.6p-4,  0x1.8p-4,  0x1.ap-4,  0x1.cp-4,  0x1.ep-4,
    0x1p-3,  0x1.2p-3,  0x1.4p-3,  0x1.6p-3,  0x1.8p-3,  0x1.ap-3,  0x1.cp-3,  0x1.ep-3,
    0x1p-2,  0x1.2p-2,  0x1.4p-2,  0x1.6p-2,  0x1.8p-2,  0x1.ap-2,  0x1.cp-2,  0x1.ep-2,
    0x1p-1,  0x1.2p-1,  0x1.4p-1,  0x1.6p-1,  0x1.8p-1,  0x1.ap-1,  0x1.cp-1,  0x1.ep-1,
    0x1p+0,  0x1.2p+0,  0x1.4p+0,  0x1.6p+0,  0x1.8p+0,  0x1.ap+0,  0x1.cp+0,  0x1.ep+0,
    0x1p+1,  0x1.2p+1,  0x1.4p+1,  0x1.6p+1,  0x1.8p+1,  0x1.ap+1,  0x1.cp+1,  0x1.ep+1,
    0x1p+2,  0x1.2p+2,  0x1.4p+2,  0x1.6p+2,  0x1.8p+2,  0x1.ap+2,  0x1.cp+2,  0x1.ep+2,
    0x1p+3,  0x1.2p+3,  0x1.4p+3,  0x1.6p+3,  0x1.8p+3,  0x1.ap+3,  0x1.cp+3,  0x1.ep+3,
    0x1p+4,  0x1.2p+4,  0x1.4p+4,  0x1.6p+4,  0x1.8p+4,  0x1.ap+4,  0x1.cp+4,  0x1.ep+4,
    0x1p+5,  0x1.2p+5,  0x1.4p+5,  0x1.6p+5,  0x1.8p+5,  0x1.ap+5,  0x1.cp+5,  0x1.ep+5,
    0x1p+6,  0x1.2p+6,  0x1.4p+6,  0x1.6p+6,  0x1.8p+6,  0x1.ap+6,  0x1.cp+6,  0x1.ep+6,
    0x1p+7,  0x1.2p+7,  0x1.4p+7,  0x1.6p+7,  0x1.8p+7,  0x1.ap+7,  0x1.cp+7,  0x1.ep+7,
    0x1p+8,  0x1.2p+8,  0x1.4p+8,  0x1.6p+8,  0x1.8p+8,  0x1.ap+8,  0x1.cp+8,  NAN,
    -0x0p+0, -0x1p-9,   -0x1p-8,   -0x1.8p-8, -0x1p-7,   -0x1.4p-7, -0x1.8p-7, -0x1.cp-7,
    -0x1p-6, -0x1.2p-6, -0x1.4p-6, -0x1.6p-6, -0x1.8p-6, -0x1.ap-6, -0x1.cp-6, -0x1.ep-6,
    -0x1p-5, -0x1.2p-5, -0x1.4p-5, -0x1.6p-5, -0x1.8p-5, -0x1.ap-5, -0x1.cp-5, -0x1.ep-5,
    -0x1p-4, -0x1.2p-4, -0x1.4p-4, -0x1.6p-4, -0x1.8p-4, -0x1.ap-4, -0x1.cp-4, -0x1.ep-4,
    -0x1p-3, -0x1.2p-3, -0x1.4p-3, -0x1.6p-3, -0x1.8p-3, -0x1.ap-3, -0x1.cp-3, -0x1.ep-3,
    -0x1p-2, -0x1.2p-2, -0x1.4p-2, -0x1.6p-2, -0x1.8p-2, -0x1.ap-2, -0x1.cp-2, -0x1.ep-2,
    -0x1p-1, -0x1.2p-1, -0x1.4p-1, -0x1.6p-1, -0x1.8p-1, -0x1.ap-1, -0x1.cp-1, -0x1.ep-1,
    -0x1p+0, -0x1.2p+0, -0x1.4p+0, -0x1.6p+0, -0x1.8p+0, -0x1.ap+0, -0x1.cp+0, -0x1.ep+0,
    -0x1p+1, -0x1.2p+1, -0x1.4p+1, -0x1.6p+1, -0x1.8p+1, -0x1.ap+1, -0x1.cp+1, -0x1.ep+1,
    -0x1p+2, -0x1.2p+2, -0x1.4p+2, -0x1.6p+2, -0x1.8p+2, -0x1.ap+2, -0x1.cp+2, -0x1.ep+2,
    -0x1p+3, -0x1.2p+3, -0x1.4p+3, -0x1.6p+3, -0x1.8p+3, -0x1.ap+3, -0x1.cp+3, -0x1.ep+3,
    -0x1p+4, -0x1.2p+4, -0x1.4p+4, -0x1.6p+4, -0x1.8p+4, -0x1.ap+4, -0x1.cp+4, -0x1.ep+4,
    -0x1p+5, -0x1.2p+5, -0x1.4p+5, -0x1.6p+5, -0x1.8p+5, -0x1.ap+5, -0x1.cp+5, -0x1.ep+5,
    -0x1p+6, -0x1.2p+6, -0x1.4p+6, -0x1.6p+6, -0x1.8p+6, -0x1.ap+6, -0x1.cp+6, -0x1.ep+6,
    -0x1p+7, -0x1.2p+7, -0x1.4p+7, -0x1.6p+7, -0x1.8p+7, -0x1.ap+7, -0x1.cp+7, -0x1.ep+7,
    -0x1p+8, -0x1.2p+8, -0x1.4p+8, -0x1.6p+8, -0x1.8p+8, -0x1.ap+8, -0x1.cp+8, NAN,
};

Test(safetensors, e4m3_all_codes) {
    for (int c = 0; c < 256; c++) {
        float f = safetensors_e4m3_to_f32((uint8_t)c);
        if (isnan(E4M3[c])) {
            cr_assert(isnan(f), "code 0x%02x: %g, want NaN", c, f);
            continue;
        }
        cr_assert((double)f == E4M3[c] && !signbit(f) == !signbit(E4M3[c]),
                  "code 0x%02x: %a, want %a", c, f, E4M3[c]);
    }
    cr_assert_eq(safetensors_e4m3_to_f32(0x7e), 448.0f);
    cr_assert(safetensors_dtype_supported("F8_E4M3") && !safetensors_dtype_supported("F8_E5M2"));
}

/* A tensor for write_tensors: NAME DTYPE SHAPE ("[3,4]"), N bytes at DATA. */
struct tt {
    const char *name, *dtype, *shape;
    const void *data;
    size_t n;
};

/* One file NAME of the tensors T[0..N) at consecutive offsets. */
static const char *write_tensors(const char *name, const struct tt *t, int n) {
    char hdr[4096] = "{";
    unsigned char data[4096];
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        snprintf(hdr + strlen(hdr), sizeof hdr - strlen(hdr),
                 "%s\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}",
                 i ? "," : "", t[i].name, t[i].dtype, t[i].shape, off, off + t[i].n);
        memcpy(data + off, t[i].data, t[i].n);
        off += t[i].n;
    }
    strcat(hdr, "}");
    return write_st(name, hdr, data, off, -1);
}

/* codes of "l.weight" (3, 4): 1, -2, 448, 2^-9 (subnormal) ... */
static const uint8_t CODES[12] = {0x38, 0xc0, 0x7e, 0x01, 0x00, 0x80,
                                  0x3f, 0x08, 0x11, 0x92, 0x5a, 0xfe};
#define W8                                                                                         \
    { "l.weight", "F8_E4M3", "[3,4]", CODES, 12 }

/* fp8_ckpt_weight on the tensors T, under a compressed-tensors config (or none: NO_CFG); on
 * success the dequantized weight goes to Y (12 floats). Returns its rc, message in ERR. */
static int fp8_try(const struct tt *t, int n, int no_cfg, float *y, char *err, size_t errlen) {
    const char *p = write_tensors("fp8.safetensors", t, n);
    struct safetensors *s;
    cr_assert_eq(safetensors_open(p, &s, err, errlen), 0, "%s", err);
    struct fp8_ckpt q = {.method = no_cfg ? FP8_CKPT_NONE : FP8_CKPT_COMPRESSED_TENSORS};
    struct fp8_ckpt_weight fw;
    const struct safetensors_tensor *w = safetensors_find(s, t[0].name);
    int rc = fp8_ckpt_weight(&q, s, w, 3, &fw, err, errlen);
    if (!rc && y) fp8_ckpt_dequant(&fw, 3, y);
    if (!rc) cr_assert_eq(q.n_tensor_scale + q.n_row_scale, 1);
    safetensors_close(s);
    return rc;
}

static void fp8_fail(const struct tt *t, int n, int no_cfg, const char *want) {
    char err[512] = "";
    cr_assert_eq(fp8_try(t, n, no_cfg, NULL, err, sizeof err), -1, "should fail: %s", want);
    cr_assert(strstr(err, "fp8.safetensors"), "error does not name the file: %s", err);
    cr_assert(strstr(err, want), "error '%s' lacks '%s'", err, want);
}

Test(safetensors, fp8_weight_scales) {
    mkdirs();
    char err[512];
    float y[12];
    /* per row, BF16 scales 0.5, 0.25, 3 (exact in bf16): y = table · scale of the row */
    const uint16_t srow[3] = {0x3f00, 0x3e80, 0x4040};
    const double rs[3] = {0.5, 0.25, 3};
    const struct tt row[] = {W8, {"l.weight_scale", "BF16", "[3,1]", srow, 6}};
    cr_assert_eq(fp8_try(row, 2, 0, y, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < 12; i++)
        cr_assert((double)y[i] == E4M3[CODES[i]] * rs[i / 4], "[%d] = %a", i, y[i]);
    /* per tensor: F32 [] with an input_scale, F16 [1] with an all-zero weight_zero_point */
    const float s1 = 0.1f, in1 = 0.02f;
    const struct tt ten[] = {
        W8, {"l.weight_scale", "F32", "[]", &s1, 4}, {"l.input_scale", "F32", "[]", &in1, 4}};
    cr_assert_eq(fp8_try(ten, 3, 0, y, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < 12; i++)
        cr_assert(y[i] == (float)E4M3[CODES[i]] * 0.1f, "[%d] = %a", i, y[i]);
    const uint16_t h2 = 0x4000; /* 2.0 */
    const uint8_t zp = 0;
    const struct tt f16[] = {W8,
                             {"l.weight_scale", "F16", "[1]", &h2, 2},
                             {"l.weight_zero_point", "F8_E4M3", "[1]", &zp, 1}};
    cr_assert_eq(fp8_try(f16, 3, 0, y, err, sizeof err), 0, "%s", err);
    cr_assert(y[2] == 896.0f && y[3] == 0x1p-8f && y[5] == 0.0f && signbit(y[5]));
    rmdirs();
}

Test(safetensors, fp8_weight_errors) {
    mkdirs();
    const float one = 1, zero = 0, neg = -1, nan_ = NAN, inf = INFINITY, two[2] = {1, 1};
    const int32_t i32 = 1;
    const float rows4[4] = {1, 1, 1, 1}, r32[6] = {1, 1, 1, 1, 1, 1}, r3[3] = {1, 1, 1};
    const uint8_t zp1 = 0x38;
    fp8_fail((struct tt[]){W8}, 1, 0, "'l.weight_scale' is missing");
    fp8_fail((struct tt[]){W8, {"l.weight_scale_inv", "F32", "[1,1]", &one, 4}}, 2, 0,
             "block-wise weight_scale_inv");
    fp8_fail((struct tt[]){W8, {"l.weight_scale", "F32", "[]", &one, 4}}, 2, 1,
             "no quantization_config");
    fp8_fail((struct tt[]){{"l.w", "F8_E4M3", "[3,4]", CODES, 12}}, 1, 0, "is not a '.weight'");
    fp8_fail((struct tt[]){W8, {"l.weight_scale", "I32", "[]", &i32, 4}}, 2, 0,
             "'l.weight_scale' has dtype I32");
    fp8_fail((struct tt[]){W8, {"l.weight_scale", "F32", "[3,2]", r32, 24}}, 2, 0,
             "'l.weight_scale' has shape [3, 2]");
    fp8_fail((struct tt[]){W8, {"l.weight_scale", "F32", "[4,1]", rows4, 16}}, 2, 0,
             "has shape [4, 1]; for 'l.weight' [3, 4]");
    fp8_fail((struct tt[]){W8, {"l.weight_scale", "F32", "[3]", r3, 12}}, 2, 0, "has shape [3]");
    fp8_fail((struct tt[]){W8, {"l.weight_scale", "F32", "[]", &zero, 4}}, 2, 0,
             "'l.weight_scale' has value 0 at element 0");
    fp8_fail((struct tt[]){W8, {"l.weight_scale", "F32", "[]", &neg, 4}}, 2, 0, "value -1");
    fp8_fail((struct tt[]){W8, {"l.weight_scale", "F32", "[1]", &nan_, 4}}, 2, 0,
             "must be finite and > 0");
    fp8_fail((struct tt[]){W8, {"l.weight_scale", "F32", "[1]", &inf, 4}}, 2, 0, "value inf");
    fp8_fail((struct tt[]){W8,
                           {"l.weight_scale", "F32", "[]", &one, 4},
                           {"l.input_scale", "F32", "[2]", two, 8}},
             3, 0, "'l.input_scale' is F32 [2]; a static activation scale is one");
    fp8_fail((struct tt[]){W8,
                           {"l.weight_scale", "F32", "[]", &one, 4},
                           {"l.input_scale", "F32", "[]", &zero, 4}},
             3, 0, "'l.input_scale' has value 0");
    fp8_fail((struct tt[]){W8,
                           {"l.weight_scale", "F32", "[]", &one, 4},
                           {"l.weight_zero_point", "F8_E4M3", "[1]", &zp1, 1}},
             3, 0, "asymmetric FP8");
    rmdirs();
}

/* fp8_ckpt_config on TEXT as config.json: rc, message in ERR. */
static int fp8_cfg(const char *text, struct fp8_ckpt *q, char *err, size_t errlen) {
    write_text("config.json", text);
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    return fp8_ckpt_config(path, q, err, errlen);
}

#define CT_HEAD "{\"quantization_config\":{\"quant_method\":\"compressed-tensors\","
#define GROUP(w, a)                                                                                \
    "\"config_groups\":{\"group_0\":{\"targets\":[\"Linear\"],\"weights\":" w                      \
    ",\"input_activations\":" a "}}"
#define WCH                                                                                        \
    "{\"num_bits\":8,\"type\":\"float\",\"strategy\":\"channel\",\"symmetric\":true,"              \
    "\"dynamic\":false,\"group_size\":null,\"block_structure\":null}"
#define ATOK "{\"num_bits\":8,\"type\":\"float\",\"strategy\":\"token\",\"dynamic\":true}"

Test(safetensors, fp8_configs) {
    mkdirs();
    char err[512];
    struct fp8_ckpt q;
    cr_assert_eq(fp8_cfg("{\"hidden_size\":64}", &q, err, sizeof err), 0, "%s", err);
    cr_assert_eq(q.method, FP8_CKPT_NONE);
    cr_assert_eq(
        fp8_cfg(
            CT_HEAD "\"format\":\"float-quantized\"," GROUP(
                WCH, ATOK) ",\"ignore\":[\"lm_head\",\"re:.*gate$\"],\"kv_cache_scheme\":null}}",
            &q, err, sizeof err),
        0, "%s", err);
    cr_assert(q.method == FP8_CKPT_COMPRESSED_TENSORS && q.act_dynamic && !q.act_static &&
              !q.kv_scheme);
    cr_assert_str_eq(q.format, "float-quantized");
    cr_assert_str_eq(q.ignore, "lm_head, re:.*gate$");
    /* the older key, without quant_method */
    cr_assert_eq(
        fp8_cfg("{\"compression_config\":{\"format\":\"naive-quantized\"," GROUP(WCH, "null") "}}",
                &q, err, sizeof err),
        0, "%s", err);
    cr_assert_eq(q.method, FP8_CKPT_COMPRESSED_TENSORS);
    cr_assert_eq(fp8_cfg("{\"quantization_config\":{\"quant_method\":\"fp8\","
                         "\"activation_scheme\":\"static\",\"ignored_layers\":[\"lm_head\"]}}",
                         &q, err, sizeof err),
                 0, "%s", err);
    cr_assert(q.method == FP8_CKPT_VLLM && q.act_static);
    static const struct {
        const char *cfg, *want;
    } bad[] = {
        {"{\"quantization_config\":{\"quant_method\":\"awq\",\"bits\":4}}",
         "quantization_config.quant_method is 'awq'"},
        {"{\"quantization_config\":{\"bits\":4}}", "quant_method is missing"},
        {"{\"quantization_config\":[1]}", "quantization_config is not an object"},
        {CT_HEAD "\"format\":\"pack-quantized\"," GROUP(WCH, "null") "}}",
         "quantization_config.format is 'pack-quantized'"},
        {CT_HEAD "\"format\":\"int-quantized\"," GROUP(WCH, "null") "}}", "'int-quantized'"},
        {CT_HEAD "\"format\":\"float-quantized\"}}", "config_groups is missing"},
        {CT_HEAD "\"format\":\"float-quantized\"," GROUP(
             "{\"num_bits\":4,\"type\":\"float\",\"strategy\":\"tensor_group\"}", "null") "}}",
         "group_0.weights.num_bits is 4"},
        {CT_HEAD "\"format\":\"float-quantized\"," GROUP(
             "{\"num_bits\":8,\"type\":\"int\",\"strategy\":\"channel\"}", "null") "}}",
         "group_0.weights.type is 'int'"},
        {CT_HEAD "\"format\":\"float-quantized\"," GROUP(
             "{\"num_bits\":8,\"type\":\"float\",\"strategy\":\"block\","
             "\"block_structure\":[128,128]}",
             "null") "}}",
         "group_0.weights.strategy is 'block'"},
        {CT_HEAD "\"format\":\"float-quantized\"," GROUP(
             "{\"num_bits\":8,\"type\":\"float\",\"strategy\":\"group\",\"group_size\":128}",
             "null") "}}",
         "strategy is 'group'"},
        {CT_HEAD "\"format\":\"float-quantized\"," GROUP(
             "{\"num_bits\":8,\"type\":\"float\",\"strategy\":\"tensor\",\"symmetric\":false}",
             "null") "}}",
         "asymmetric weights"},
        {CT_HEAD "\"format\":\"float-quantized\"," GROUP(
             WCH, "{\"num_bits\":8,\"type\":\"int\",\"strategy\":\"token\"}") "}}",
         "group_0.input_activations"},
        {CT_HEAD "\"format\":\"float-quantized\",\"sparsity_config\":{\"format\":"
                 "\"sparse-24-bitmask\"}," GROUP(WCH, "null") "}}",
         "sparsity_config has format 'sparse-24-bitmask'"},
        {CT_HEAD "\"format\":\"float-quantized\",\"ignore\":\"lm_head\"," GROUP(WCH, "null") "}}",
         "quantization_config.ignore is not a list"},
        {"{\"quantization_config\":{\"quant_method\":\"fp8\",\"activation_scheme\":\"dynamic\","
         "\"weight_block_size\":[128,128]}}",
         "weight_block_size is set"},
        {"{\"quantization_config\":{\"quant_method\":\"fp8\",\"activation_scheme\":\"sometimes\"}}",
         "activation_scheme is 'sometimes'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        cr_assert_eq(fp8_cfg(bad[i].cfg, &q, err, sizeof err), -1, "case %zu should fail", i);
        cr_assert(strstr(err, "config.json"), "case %zu: error does not name the file: %s", i, err);
        cr_assert(strstr(err, bad[i].want), "case %zu: '%s' lacks '%s'", i, err, bad[i].want);
        cr_assert_eq(q.method, FP8_CKPT_NONE, "case %zu", i);
    }
    rmdirs();
}
