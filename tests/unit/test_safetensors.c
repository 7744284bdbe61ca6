/* test_safetensors.c — safetensors reader: files built here (single and sharded), read back and
 * converted to fp32, then corrupted (every truncation, bad header length, bad JSON, unknown
 * dtype, offsets outside the buffer, size mismatches, duplicate names, bad index files) to check
 * that each failure is a clean error naming the file. */
#include <criterion/criterion.h>

#include "model/safetensors.h"

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
