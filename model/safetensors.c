/* safetensors.c — safetensors reader: mmap each file, parse and validate its JSON header.
 *
 * Checks made at open (format: the safetensors README, huggingface/safetensors): header length <=
 * 100 MB and inside the file, header is a JSON object, every tensor has a known dtype, a shape of
 * non-negative integers and data_offsets [begin, end] inside the data buffer with end - begin ==
 * numel * dtype size, and no name appears twice (also across shards). Conversion to fp32 handles
 * F32, F16, BF16 and F8_E4M3 (the code's value; the scales of an FP8 checkpoint are the loader's,
 * model/fp8_ckpt.h).
 */
#include "model/safetensors.h"

#include "model/gguf.h" /* gguf_fp16_to_fp32, gguf_bf16_to_fp32 */
#include "model/errmsg.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    int size;
} st_dtypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
    {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
    {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8},
};

int safetensors_dtype_size(const char *dtype) {
    for (size_t i = 0; i < sizeof(st_dtypes) / sizeof(st_dtypes[0]); i++)
        if (!strcmp(st_dtypes[i].name, dtype)) return st_dtypes[i].size;
    return 0;
}

int safetensors_dtype_supported(const char *dtype) {
    return !strcmp(dtype, "F32") || !strcmp(dtype, "F16") || !strcmp(dtype, "BF16") ||
           !strcmp(dtype, "F8_E4M3");
}

/* OCP 8-bit floating point, E4M3 (torch.float8_e4m3fn, safetensors F8_E4M3): sign, 4 exponent
 * bits with bias 7, 3 mantissa bits; exponent 0 is subnormal (m · 2^-9), S.1111.111 is NaN and
 * there are no infinities (S.1111.110 = ±448 is the largest finite). Every code is exact in fp32.
 */
float safetensors_e4m3_to_f32(uint8_t b) {
    uint32_t sign = (uint32_t)(b & 0x80) << 24;
    unsigned e = (b >> 3) & 15, m = b & 7;
    uint32_t bits;
    if (e == 15 && m == 7)
        bits = sign | 0x7fc00000u; /* quiet NaN, the sign kept */
    else if (e)
        bits = sign | (e - 7 + 127) << 23 | m << 20;
    else {
        float v = (float)m * 0x1p-9f; /* subnormal (or zero): exact */
        memcpy(&bits, &v, 4);
        bits |= sign;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float safetensors_value_f32(const struct safetensors_tensor *t, uint64_t i) {
    const uint8_t *p = t->data;
    if (!strcmp(t->dtype, "F32")) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    if (!strcmp(t->dtype, "F8_E4M3")) return safetensors_e4m3_to_f32(p[i]);
    uint16_t h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
    if (!strcmp(t->dtype, "BF16")) return gguf_bf16_to_fp32(h);
    if (!strcmp(t->dtype, "F16")) return gguf_fp16_to_fp32(h);
    return NAN;
}

void safetensors_close(struct safetensors *s) {
    if (!s) return;
    for (int i = 0; i < s->n_files; i++) {
        if (s->files[i].map) munmap((void *)s->files[i].map, s->files[i].size);
        free(s->files[i].path);
    }
    free(s->files);
    for (size_t i = 0; i < s->n_tensors; i++)
        free(s->tensors[i].name);
    free(s->tensors);
    free(s);
}

static int st_name_cmp(const void *a, const void *b) {
    const struct safetensors_tensor *x = a, *y = b;
    return strcmp(x->name, y->name);
}

/* Parse one tensor entry ITEM of file F (data buffer DATA of DSIZE bytes) into T. */
static int st_parse_entry(const char *path, const cJSON *item, const uint8_t *data, uint64_t dsize,
                          struct safetensors_tensor *t, char *err, size_t errlen) {
    const char *name = item->string;
    if (!cJSON_IsObject(item)) {
        errmsg_at(err, errlen, path, "header entry '%s' is not an object", name);
        return -1;
    }
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) ||
        cJSON_GetArraySize(off) != 2) {
        errmsg_at(err, errlen, path, "tensor '%s' lacks a valid dtype, shape or data_offsets",
                  name);
        return -1;
    }
    int esz = safetensors_dtype_size(dt->valuestring);
    if (!esz || strlen(dt->valuestring) >= sizeof(t->dtype)) {
        errmsg_at(err, errlen, path, "tensor '%s' has unknown dtype '%s'", name, dt->valuestring);
        return -1;
    }
    strcpy(t->dtype, dt->valuestring);
    t->n_dims = cJSON_GetArraySize(sh);
    if (t->n_dims > SAFETENSORS_MAX_DIMS) {
        errmsg_at(err, errlen, path, "tensor '%s' has %d dimensions (at most %d)", name, t->n_dims,
                  SAFETENSORS_MAX_DIMS);
        return -1;
    }
    uint64_t n = 1;
    int d = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, sh) {
        double v = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (v < 0 || v > 9007199254740992.0 || v != floor(v)) {
            errmsg_at(err, errlen, path, "tensor '%s' has an invalid shape entry", name);
            return -1;
        }
        t->shape[d++] = (int64_t)v;
        if (v > 0 && n > UINT64_MAX / (uint64_t)v) {
            errmsg_at(err, errlen, path, "tensor '%s' has an overflowing shape", name);
            return -1;
        }
        n *= (uint64_t)v;
    }
    t->n_elems = n;
    if (n > UINT64_MAX / (uint64_t)esz) {
        errmsg_at(err, errlen, path, "tensor '%s' is too large", name);
        return -1;
    }
    t->n_bytes = n * (uint64_t)esz;
    double b = cJSON_IsNumber(off->child) ? off->child->valuedouble : -1;
    double en = cJSON_IsNumber(off->child->next) ? off->child->next->valuedouble : -1;
    if (b < 0 || en < b || b != floor(b) || en != floor(en) || en > (double)dsize) {
        errmsg_at(err, errlen, path,
                  "tensor '%s' data_offsets [%.0f, %.0f] lie outside the data buffer (%llu bytes)",
                  name, b, en, (unsigned long long)dsize);
        return -1;
    }
    if ((uint64_t)en - (uint64_t)b != t->n_bytes) {
        errmsg_at(err, errlen, path,
                  "tensor '%s' spans %llu bytes but its shape and dtype %s need %llu", name,
                  (unsigned long long)((uint64_t)en - (uint64_t)b), t->dtype,
                  (unsigned long long)t->n_bytes);
        return -1;
    }
    t->data = data + (uint64_t)b;
    if (!(t->name = strdup(name))) {
        errmsg_at(err, errlen, path, "out of memory");
        return -1;
    }
    return 0;
}

/* Map PATH as file number FI of S and append its tensors. */
static int st_add_file(struct safetensors *s, const char *path, char *err, size_t errlen) {
    struct safetensors_file *nf = realloc(s->files, (size_t)(s->n_files + 1) * sizeof(*nf));
    if (!nf) {
        errmsg_at(err, errlen, path, "out of memory");
        return -1;
    }
    s->files = nf;
    int fi = s->n_files++;
    struct safetensors_file *f = &s->files[fi];
    memset(f, 0, sizeof(*f));
    if (!(f->path = strdup(path))) {
        errmsg_at(err, errlen, path, "out of memory");
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        errmsg_at(err, errlen, path, "cannot open: %s", strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        errmsg_at(err, errlen, path, "not a regular file");
        close(fd);
        return -1;
    }
    if (st.st_size < 8) {
        errmsg_at(err, errlen, path, "truncated: %lld bytes is shorter than the 8-byte header size",
                  (long long)st.st_size);
        close(fd);
        return -1;
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        errmsg_at(err, errlen, path, "mmap failed: %s", strerror(errno));
        return -1;
    }
    f->map = m;
    f->size = (size_t)st.st_size;
    uint64_t hlen;
    memcpy(&hlen, f->map, 8);
    if (hlen > SAFETENSORS_MAX_HEADER) {
        errmsg_at(err, errlen, path, "header length %llu exceeds the 100 MB limit",
                  (unsigned long long)hlen);
        return -1;
    }
    if (hlen > f->size - 8) {
        errmsg_at(err, errlen, path,
                  "truncated: header says %llu bytes but only %llu follow (not safetensors?)",
                  (unsigned long long)hlen, (unsigned long long)(f->size - 8));
        return -1;
    }
    cJSON *h = cJSON_ParseWithLength((const char *)f->map + 8, (size_t)hlen);
    if (!h || !cJSON_IsObject(h)) {
        errmsg_at(err, errlen, path, "header is not a JSON object");
        cJSON_Delete(h);
        return -1;
    }
    const uint8_t *data = f->map + 8 + hlen;
    uint64_t dsize = f->size - 8 - hlen;
    size_t n_new = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, h) n_new += strcmp(item->string, "__metadata__") != 0;
    struct safetensors_tensor *nt = realloc(s->tensors, (s->n_tensors + n_new + 1) * sizeof(*nt));
    if (!nt) {
        errmsg_at(err, errlen, path, "out of memory");
        cJSON_Delete(h);
        return -1;
    }
    s->tensors = nt;
    cJSON_ArrayForEach(item, h) {
        if (!strcmp(item->string, "__metadata__")) continue;
        struct safetensors_tensor *t = &s->tensors[s->n_tensors];
        memset(t, 0, sizeof(*t));
        if (st_parse_entry(path, item, data, dsize, t, err, errlen)) {
            free(t->name);
            cJSON_Delete(h);
            return -1;
        }
        t->file = fi;
        s->n_tensors++;
    }
    cJSON_Delete(h);
    return 0;
}

/* Sort tensors by name (for safetensors_find) and reject duplicates. */
static int st_finish(struct safetensors *s, char *err, size_t errlen) {
    qsort(s->tensors, s->n_tensors, sizeof(*s->tensors), st_name_cmp);
    for (size_t i = 1; i < s->n_tensors; i++)
        if (!strcmp(s->tensors[i - 1].name, s->tensors[i].name)) {
            errmsg_at(err, errlen, s->files[s->tensors[i].file].path, "duplicate tensor '%s'",
                      s->tensors[i].name);
            return -1;
        }
    return 0;
}

int safetensors_open(const char *path, struct safetensors **out, char *err, size_t errlen) {
    *out = NULL;
    struct safetensors *s = calloc(1, sizeof(*s));
    if (!s) {
        errmsg_at(err, errlen, path, "out of memory");
        return -1;
    }
    if (st_add_file(s, path, err, errlen) || st_finish(s, err, errlen)) {
        safetensors_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

/* Read a whole small file (index.json) into a NUL-terminated buffer, at most MAX bytes. */
static char *st_read_text(const char *path, size_t max, char *err, size_t errlen) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        errmsg_at(err, errlen, path, "cannot open: %s", strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    long n = -1;
    if (!fseek(fp, 0, SEEK_END) && (n = ftell(fp)) >= 0 && (size_t)n <= max &&
        !fseek(fp, 0, SEEK_SET) && (buf = malloc((size_t)n + 1)) &&
        fread(buf, 1, (size_t)n, fp) == (size_t)n) {
        buf[n] = 0;
        fclose(fp);
        return buf;
    }
    fclose(fp);
    free(buf);
    errmsg_at(err, errlen, path, n >= 0 && (size_t)n > max ? "file too large" : "read failed");
    return NULL;
}

static int st_open_index(struct safetensors *s, const char *dir, const char *index, char *err,
                         size_t errlen) {
    char *text = st_read_text(index, 64u << 20, err, errlen);
    if (!text) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    if (!cJSON_IsObject(wm) || !wm->child) {
        errmsg_at(err, errlen, index, "no weight_map object");
        cJSON_Delete(j);
        return -1;
    }
    const cJSON *e;
    int rc = -1;
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, '/') ||
            !strcmp(e->valuestring, "..")) {
            errmsg_at(err, errlen, index, "weight_map entry '%s' is not a shard file name in %s",
                      e->string, dir);
            goto out;
        }
        int seen = 0;
        for (int i = 0; i < s->n_files && !seen; i++) {
            const char *base = strrchr(s->files[i].path, '/');
            seen = !strcmp(base ? base + 1 : s->files[i].path, e->valuestring);
        }
        if (seen) continue;
        char path[4096];
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->valuestring) >= sizeof(path)) {
            errmsg_at(err, errlen, index, "shard path too long");
            goto out;
        }
        if (st_add_file(s, path, err, errlen)) goto out;
    }
    if (st_finish(s, err, errlen)) goto out;
    cJSON_ArrayForEach(e, wm) {
        const struct safetensors_tensor *t = safetensors_find(s, e->string);
        const char *base = t ? strrchr(s->files[t->file].path, '/') : NULL;
        if (!t || strcmp(base ? base + 1 : s->files[t->file].path, e->valuestring)) {
            errmsg_at(err, errlen, index, "tensor '%s' is listed for shard %s but is not in it",
                      e->string, e->valuestring);
            goto out;
        }
    }
    rc = 0;
out:
    cJSON_Delete(j);
    return rc;
}

int safetensors_open_dir(const char *dir, struct safetensors **out, char *err, size_t errlen) {
    *out = NULL;
    char index[4096], single[4096];
    if ((size_t)snprintf(index, sizeof(index), "%s/model.safetensors.index.json", dir) >=
            sizeof(index) ||
        (size_t)snprintf(single, sizeof(single), "%s/model.safetensors", dir) >= sizeof(single)) {
        errmsg_at(err, errlen, dir, "path too long");
        return -1;
    }
    struct safetensors *s = calloc(1, sizeof(*s));
    if (!s) {
        errmsg_at(err, errlen, dir, "out of memory");
        return -1;
    }
    int rc;
    if (access(index, F_OK) == 0)
        rc = st_open_index(s, dir, index, err, errlen);
    else if (access(single, F_OK) == 0)
        rc = st_add_file(s, single, err, errlen) || st_finish(s, err, errlen) ? -1 : 0;
    else {
        errmsg_at(err, errlen, dir, "no model.safetensors or model.safetensors.index.json");
        rc = -1;
    }
    if (rc) {
        safetensors_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

const struct safetensors_tensor *safetensors_find(const struct safetensors *s, const char *name) {
    size_t lo = 0, hi = s->n_tensors; /* tensors are sorted by name */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->tensors[mid].name, name);
        if (!c) return &s->tensors[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int safetensors_to_f32(const struct safetensors_tensor *t, float *dst) {
    const uint8_t *p = t->data;
    if (!strcmp(t->dtype, "F32")) {
        memcpy(dst, p, t->n_bytes);
        return 0;
    }
    if (!strcmp(t->dtype, "F8_E4M3")) {
        for (uint64_t i = 0; i < t->n_elems; i++)
            dst[i] = safetensors_e4m3_to_f32(p[i]);
        return 0;
    }
    int bf = !strcmp(t->dtype, "BF16");
    if (!bf && strcmp(t->dtype, "F16")) return -1;
    for (uint64_t i = 0; i < t->n_elems; i++) {
        uint16_t h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
        dst[i] = bf ? gguf_bf16_to_fp32(h) : gguf_fp16_to_fp32(h);
    }
    return 0;
}
