/* gguf.c — GGUF v2/v3 reader (mmap); tensor types and dequantization live in gguf_quant.c.
 *
 * Parsing walks the header with a bounds-checked cursor: every read first checks that the bytes
 * exist, every count is bounded by the bytes left (each element needs at least a known minimum),
 * and every tensor's extent is checked against the data section. After gguf_open succeeds the
 * tables only point at validated bytes. Format: ggml's docs/gguf.md.
 */
#include "model/gguf.h"

#include "model/errmsg.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC 0x46554747u
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_ARRAY_DEPTH 8
#define GGUF_MAX_TENSOR_NAME 255

/* --- bounds-checked cursor ----------------------------------------------------------------------
 */

struct gguf_cur {
    const uint8_t *p;
    size_t size;
    size_t pos;
};

static int cur_need(const struct gguf_cur *c, uint64_t n) {
    return n <= c->size - c->pos;
}

static int cur_u32(struct gguf_cur *c, uint32_t *v) {
    if (!cur_need(c, 4)) return -1;
    memcpy(v, c->p + c->pos, 4); /* little-endian host assumed (x86-64, aarch64) */
    c->pos += 4;
    return 0;
}

static int cur_u64(struct gguf_cur *c, uint64_t *v) {
    if (!cur_need(c, 8)) return -1;
    memcpy(v, c->p + c->pos, 8);
    c->pos += 8;
    return 0;
}

static int cur_str(struct gguf_cur *c, const char **s, uint64_t *len) {
    if (cur_u64(c, len) || !cur_need(c, *len)) return -1;
    *s = (const char *)(c->p + c->pos);
    c->pos += (size_t)*len;
    return 0;
}

static uint64_t vtype_size(uint32_t t) /* scalar size, 0 for string/array/unknown */
{
    switch (t) {
    case GGUF_VTYPE_UINT8:
    case GGUF_VTYPE_INT8:
    case GGUF_VTYPE_BOOL:
        return 1;
    case GGUF_VTYPE_UINT16:
    case GGUF_VTYPE_INT16:
        return 2;
    case GGUF_VTYPE_UINT32:
    case GGUF_VTYPE_INT32:
    case GGUF_VTYPE_FLOAT32:
        return 4;
    case GGUF_VTYPE_UINT64:
    case GGUF_VTYPE_INT64:
    case GGUF_VTYPE_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

/* Skip one value of type T; returns 0 or -1 with a reason in *why. */
static int cur_skip_value(struct gguf_cur *c, uint32_t t, int depth, const char **why) {
    uint64_t sz = vtype_size(t);
    if (sz) {
        if (!cur_need(c, sz)) {
            *why = "truncated value";
            return -1;
        }
        c->pos += sz;
        return 0;
    }
    if (t == GGUF_VTYPE_STRING) {
        const char *s;
        uint64_t len;
        if (cur_str(c, &s, &len)) {
            *why = "truncated string value";
            return -1;
        }
        return 0;
    }
    if (t == GGUF_VTYPE_ARRAY) {
        uint32_t et;
        uint64_t n;
        if (depth >= GGUF_MAX_ARRAY_DEPTH) {
            *why = "arrays nested too deeply";
            return -1;
        }
        if (cur_u32(c, &et) || cur_u64(c, &n)) {
            *why = "truncated array header";
            return -1;
        }
        uint64_t esz = vtype_size(et);
        if (esz) {
            if (n > (c->size - c->pos) / esz) {
                *why = "array runs past the end of the file";
                return -1;
            }
            c->pos += (size_t)(n * esz);
            return 0;
        }
        if (et != GGUF_VTYPE_STRING && et != GGUF_VTYPE_ARRAY) {
            *why = "array of unknown value type";
            return -1;
        }
        /* each string needs >= 8 bytes, each nested array >= 12: n is bounded by the loop's
         * progress, and we bail out as soon as the bytes run out */
        for (uint64_t i = 0; i < n; i++)
            if (cur_skip_value(c, et, depth + 1, why)) return -1;
        return 0;
    }
    *why = "unknown value type";
    return -1;
}

/* --- open / close -------------------------------------------------------------------------------
 */

void gguf_close(struct gguf_file *f) {
    if (!f) return;
    if (f->map) munmap((void *)f->map, f->size);
    free(f->kv);
    free(f->tensors);
    free(f->path);
    free(f);
}

static int gguf_key_eq(const struct gguf_kv *kv, const char *key) {
    size_t n = strlen(key);
    return kv->key_len == n && memcmp(kv->key, key, n) == 0;
}

const struct gguf_kv *gguf_find_kv(const struct gguf_file *f, const char *key) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (gguf_key_eq(&f->kv[i], key)) return &f->kv[i];
    return NULL;
}

static int tensor_name_cmp(const void *a, const void *b) {
    const struct gguf_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int gguf_parse_kvs(struct gguf_file *f, struct gguf_cur *c, char *err, size_t errlen) {
    /* each KV needs >= 8 (key length) + 4 (type) + 1 (smallest value) bytes */
    if (f->n_kv > (c->size - c->pos) / 13) {
        errmsg_at(err, errlen, f->path,
                  "metadata count %llu exceeds what the file can hold (truncated or corrupt)",
                  (unsigned long long)f->n_kv);
        return -1;
    }
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof(*f->kv));
    if (!f->kv) {
        errmsg_at(err, errlen, f->path, "out of memory for %llu metadata entries",
                  (unsigned long long)f->n_kv);
        return -1;
    }
    for (uint64_t i = 0; i < f->n_kv; i++) {
        struct gguf_kv *kv = &f->kv[i];
        uint64_t klen;
        if (cur_str(c, &kv->key, &klen)) {
            errmsg_at(err, errlen, f->path, "truncated metadata key #%llu", (unsigned long long)i);
            return -1;
        }
        if (klen == 0 || klen > 65535) {
            errmsg_at(err, errlen, f->path, "metadata key #%llu has invalid length %llu",
                      (unsigned long long)i, (unsigned long long)klen);
            return -1;
        }
        kv->key_len = (size_t)klen;
        if (cur_u32(c, &kv->type)) {
            errmsg_at(err, errlen, f->path, "truncated type of metadata key '%.*s'", (int)klen,
                      kv->key);
            return -1;
        }
        const char *why = "";
        if (kv->type == GGUF_VTYPE_ARRAY) {
            size_t start = c->pos;
            if (cur_u32(c, &kv->arr_type) || cur_u64(c, &kv->arr_count)) {
                errmsg_at(err, errlen, f->path, "truncated array header of metadata key '%.*s'",
                          (int)klen, kv->key);
                return -1;
            }
            kv->value = c->p + c->pos;
            c->pos = start;
        } else {
            kv->value = c->p + c->pos;
        }
        if (cur_skip_value(c, kv->type, 0, &why)) {
            errmsg_at(err, errlen, f->path, "metadata key '%.*s': %s", (int)klen, kv->key, why);
            return -1;
        }
        for (uint64_t j = 0; j < i; j++)
            if (f->kv[j].key_len == kv->key_len && !memcmp(f->kv[j].key, kv->key, klen)) {
                errmsg_at(err, errlen, f->path, "duplicate metadata key '%.*s'", (int)klen,
                          kv->key);
                return -1;
            }
    }
    return 0;
}

static int gguf_parse_tensors(struct gguf_file *f, struct gguf_cur *c, char *err, size_t errlen) {
    /* each tensor info needs >= 8 (name length) + 1 (name) + 4 (n_dims) + 4 (type) + 8 (offset) */
    if (f->n_tensors > (c->size - c->pos) / 25) {
        errmsg_at(err, errlen, f->path,
                  "tensor count %llu exceeds what the file can hold (truncated or corrupt)",
                  (unsigned long long)f->n_tensors);
        return -1;
    }
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof(*f->tensors));
    if (!f->tensors) {
        errmsg_at(err, errlen, f->path, "out of memory for %llu tensors",
                  (unsigned long long)f->n_tensors);
        return -1;
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        struct gguf_tensor *t = &f->tensors[i];
        const char *name;
        uint64_t nlen;
        if (cur_str(c, &name, &nlen)) {
            errmsg_at(err, errlen, f->path, "truncated name of tensor #%llu",
                      (unsigned long long)i);
            return -1;
        }
        if (nlen == 0 || nlen > GGUF_MAX_TENSOR_NAME || memchr(name, 0, (size_t)nlen)) {
            errmsg_at(err, errlen, f->path, "tensor #%llu has an invalid name (length %llu)",
                      (unsigned long long)i, (unsigned long long)nlen);
            return -1;
        }
        memcpy(t->name, name, (size_t)nlen);
        t->name[nlen] = 0;
        if (cur_u32(c, &t->n_dims)) {
            errmsg_at(err, errlen, f->path, "truncated info of tensor '%s'", t->name);
            return -1;
        }
        if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS) {
            errmsg_at(err, errlen, f->path, "tensor '%s' has %u dimensions (1..%d allowed)",
                      t->name, t->n_dims, GGUF_MAX_DIMS);
            return -1;
        }
        uint64_t n = 1;
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
            t->ne[d] = 1;
            if (d < t->n_dims && cur_u64(c, &t->ne[d])) {
                errmsg_at(err, errlen, f->path, "truncated shape of tensor '%s'", t->name);
                return -1;
            }
            if (t->ne[d] && n > UINT64_MAX / t->ne[d]) {
                errmsg_at(err, errlen, f->path, "tensor '%s' has an overflowing shape", t->name);
                return -1;
            }
            n *= t->ne[d];
        }
        t->n_elems = n;
        if (cur_u32(c, &t->type) || cur_u64(c, &t->offset)) {
            errmsg_at(err, errlen, f->path, "truncated info of tensor '%s'", t->name);
            return -1;
        }
        if (!gguf_type_known(t->type)) {
            errmsg_at(err, errlen, f->path, "tensor '%s' has unknown ggml type id %u", t->name,
                      t->type);
            return -1;
        }
        uint64_t blck = gguf_type_block(t->type), bytes = gguf_type_row_bytes(t->type, blck);
        if (t->ne[0] % blck) {
            errmsg_at(err, errlen, f->path,
                      "tensor '%s': row length %llu is not a multiple of the %s block (%llu)",
                      t->name, (unsigned long long)t->ne[0], gguf_type_name(t->type),
                      (unsigned long long)blck);
            return -1;
        }
        if (n / blck > UINT64_MAX / bytes) {
            errmsg_at(err, errlen, f->path, "tensor '%s' is too large", t->name);
            return -1;
        }
        t->n_bytes = n / blck * bytes;
    }
    return 0;
}

int gguf_open(const char *path, struct gguf_file **out, char *err, size_t errlen) {
    *out = NULL;
    struct gguf_file *f = calloc(1, sizeof(*f));
    if (!f || !(f->path = strdup(path))) {
        free(f);
        errmsg_at(err, errlen, path, "out of memory");
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        errmsg_at(err, errlen, path, "cannot open: %s", strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        errmsg_at(err, errlen, path, "not a regular file");
        close(fd);
        goto fail;
    }
    if (st.st_size < 24) {
        errmsg_at(err, errlen, path, "truncated: %lld bytes is shorter than a GGUF header",
                  (long long)st.st_size);
        close(fd);
        goto fail;
    }
    f->size = (size_t)st.st_size;
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        errmsg_at(err, errlen, path, "mmap failed: %s", strerror(errno));
        goto fail;
    }
    f->map = m;

    struct gguf_cur c = {f->map, f->size, 0};
    uint32_t magic = 0;
    cur_u32(&c, &magic);
    if (magic != GGUF_MAGIC) {
        errmsg_at(err, errlen, path, "not a GGUF file (bad magic 0x%08x)", magic);
        goto fail;
    }
    cur_u32(&c, &f->version);
    if (f->version != 2 && f->version != 3) {
        if ((f->version & 0xffff) == 0 && (f->version >> 24) <= 3)
            errmsg_at(err, errlen, path, "big-endian GGUF is not supported");
        else
            errmsg_at(err, errlen, path, "unsupported GGUF version %u (only 2 and 3)", f->version);
        goto fail;
    }
    if (cur_u64(&c, &f->n_tensors) || cur_u64(&c, &f->n_kv)) {
        errmsg_at(err, errlen, path, "truncated header");
        goto fail;
    }
    if (gguf_parse_kvs(f, &c, err, errlen) || gguf_parse_tensors(f, &c, err, errlen)) goto fail;

    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (gguf_find_kv(f, "general.alignment")) {
        int64_t a;
        if (gguf_get_int(f, "general.alignment", &a, err, errlen) < 0) goto fail;
        if (a <= 0 || a > (1 << 24) || (a & (a - 1))) {
            errmsg_at(err, errlen, path, "general.alignment %lld is not a power of two",
                      (long long)a);
            goto fail;
        }
        f->alignment = (uint64_t)a;
    }
    f->data_offset = (c.pos + f->alignment - 1) / f->alignment * f->alignment;
    if (f->data_offset > f->size) {
        errmsg_at(err, errlen, path, "truncated before the tensor data section");
        goto fail;
    }
    uint64_t data_size = f->size - f->data_offset;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        struct gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment) {
            errmsg_at(err, errlen, path, "tensor '%s' offset %llu is not aligned to %llu", t->name,
                      (unsigned long long)t->offset, (unsigned long long)f->alignment);
            goto fail;
        }
        if (t->offset > data_size || t->n_bytes > data_size - t->offset) {
            errmsg_at(err, errlen, path,
                      "tensor '%s' (offset %llu, %llu bytes) runs past the end of the file "
                      "(data section holds %llu bytes; truncated?)",
                      t->name, (unsigned long long)t->offset, (unsigned long long)t->n_bytes,
                      (unsigned long long)data_size);
            goto fail;
        }
        t->data = f->map + f->data_offset + t->offset;
    }
    if (f->n_tensors > 1) { /* duplicate names: sort pointers, compare neighbours */
        const struct gguf_tensor **idx = malloc(f->n_tensors * sizeof(*idx));
        if (!idx) {
            errmsg_at(err, errlen, path, "out of memory");
            goto fail;
        }
        for (uint64_t i = 0; i < f->n_tensors; i++)
            idx[i] = &f->tensors[i];
        qsort(idx, f->n_tensors, sizeof(*idx), tensor_name_cmp);
        for (uint64_t i = 1; i < f->n_tensors; i++)
            if (!strcmp(idx[i - 1]->name, idx[i]->name)) {
                errmsg_at(err, errlen, path, "duplicate tensor '%s'", idx[i]->name);
                free(idx);
                goto fail;
            }
        free(idx);
    }
    *out = f;
    return 0;
fail:
    gguf_close(f);
    return -1;
}

/* How a cold file is read ahead of the loader (FLASHGEN_READAHEAD=chunks|willneed|pread|none,
 * for A/B runs): CHUNKS (default) one thread walks the file front to back by readahead(2) in
 * 64 MB steps (no copy to user space), so the page cache fills in file order while the loader's
 * threads copy behind it; WILLNEED one madvise(MADV_WILLNEED) over the whole mapping; PREAD the
 * walk by 64 MB pread()s into a scratch buffer, as `dd` does; NONE only MADV_SEQUENTIAL (the
 * loader's page faults read the file). On the H200 machine (bench/LOADING.md) the four load
 * the 14.77 GB cold file in 9.1-10.9 s, inside the disk's own run-to-run spread (dd of it
 * 7.3-9.0 s); CHUNKS keeps the one reader in file order at least. */
enum gguf_ra { GGUF_RA_CHUNKS, GGUF_RA_WILLNEED, GGUF_RA_PREAD, GGUF_RA_NONE };

struct gguf_advice {
    enum gguf_ra mode;
    void *map;
    size_t size;
    char *path;
};

#define GGUF_RA_CHUNK ((size_t)64 << 20)

static void gguf_advice_walk(const struct gguf_advice *a) {
    int fd = open(a->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    char *buf = a->mode == GGUF_RA_PREAD ? malloc(GGUF_RA_CHUNK) : NULL;
    for (size_t off = 0; off < a->size; off += GGUF_RA_CHUNK) {
        size_t n = a->size - off < GGUF_RA_CHUNK ? a->size - off : GGUF_RA_CHUNK;
        if (a->mode == GGUF_RA_CHUNKS) {
            if (readahead(fd, (off_t)off, n) != 0) break;
        } else if (!buf || pread(fd, buf, n, (off_t)off) <= 0) {
            break;
        }
    }
    free(buf);
    close(fd);
}

static void *gguf_advice_run(void *arg) {
    struct gguf_advice *a = arg;
    /* on a range unmapped meanwhile madvise fails with ENOMEM, which is fine: advice only */
    if (a->mode == GGUF_RA_WILLNEED)
        (void)madvise(a->map, a->size, MADV_WILLNEED);
    else
        gguf_advice_walk(a);
    free(a->path);
    free(a);
    return NULL;
}

void gguf_will_read(const struct gguf_file *f) {
    /* advice only: a failure changes nothing but speed */
    (void)madvise((void *)f->map, f->size, MADV_SEQUENTIAL);
    const char *env = getenv("FLASHGEN_READAHEAD");
    enum gguf_ra mode = !env                       ? GGUF_RA_CHUNKS
                        : !strcmp(env, "willneed") ? GGUF_RA_WILLNEED
                        : !strcmp(env, "pread")    ? GGUF_RA_PREAD
                        : !strcmp(env, "none")     ? GGUF_RA_NONE
                                                   : GGUF_RA_CHUNKS;
    if (mode == GGUF_RA_NONE) return;
    /* The reads of a cold file take as long as the disk does, so they run on a thread of its own
     * and the loader starts converting at once; the thread holds only the address range and a
     * copy of the path, never F (it may outlive the load). Without a thread: WILLNEED inline. */
    struct gguf_advice *a = malloc(sizeof(*a));
    char *path = strdup(f->path);
    pthread_t t;
    pthread_attr_t attr;
    int ok = a && path && !pthread_attr_init(&attr);
    if (ok) {
        *a = (struct gguf_advice){mode, (void *)f->map, f->size, path};
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        ok = !pthread_create(&t, &attr, gguf_advice_run, a);
        pthread_attr_destroy(&attr);
    }
    if (!ok) {
        free(a);
        free(path);
        (void)madvise((void *)f->map, f->size, MADV_WILLNEED);
    }
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name) {
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

/* --- typed KV access ----------------------------------------------------------------------------
 */

/* Read one integer of integer type T at P; returns 0 or -1 when T is not an integer type. */
static int read_int(uint32_t t, const uint8_t *p, int64_t *v, int *is_unsigned_big) {
    *is_unsigned_big = 0;
    switch (t) {
    case GGUF_VTYPE_UINT8:
    case GGUF_VTYPE_BOOL:
        *v = p[0];
        return 0;
    case GGUF_VTYPE_INT8:
        *v = (int8_t)p[0];
        return 0;
    case GGUF_VTYPE_UINT16: {
        uint16_t x;
        memcpy(&x, p, 2);
        *v = x;
        return 0;
    }
    case GGUF_VTYPE_INT16: {
        int16_t x;
        memcpy(&x, p, 2);
        *v = x;
        return 0;
    }
    case GGUF_VTYPE_UINT32: {
        uint32_t x;
        memcpy(&x, p, 4);
        *v = x;
        return 0;
    }
    case GGUF_VTYPE_INT32: {
        int32_t x;
        memcpy(&x, p, 4);
        *v = x;
        return 0;
    }
    case GGUF_VTYPE_UINT64: {
        uint64_t x;
        memcpy(&x, p, 8);
        if (x > INT64_MAX) *is_unsigned_big = 1;
        *v = (int64_t)x;
        return 0;
    }
    case GGUF_VTYPE_INT64: {
        int64_t x;
        memcpy(&x, p, 8);
        *v = x;
        return 0;
    }
    default:
        return -1;
    }
}

static const char *vtype_name(uint32_t t) {
    static const char *names[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                  "int32",  "float32", "bool",   "string", "array",
                                  "uint64", "int64",   "float64"};
    return t < sizeof(names) / sizeof(names[0]) ? names[t] : "unknown";
}

int gguf_get_int(const struct gguf_file *f, const char *key, int64_t *v, char *err, size_t errlen) {
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return 0;
    int big;
    if (read_int(kv->type, kv->value, v, &big)) {
        errmsg_at(err, errlen, f->path, "metadata '%s' is %s, expected an integer", key,
                  vtype_name(kv->type));
        return -1;
    }
    if (big) {
        errmsg_at(err, errlen, f->path, "metadata '%s' is out of range", key);
        return -1;
    }
    return 1;
}

int gguf_get_float(const struct gguf_file *f, const char *key, double *v, char *err,
                   size_t errlen) {
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return 0;
    if (kv->type == GGUF_VTYPE_FLOAT32) {
        float x;
        memcpy(&x, kv->value, 4);
        *v = x;
        return 1;
    }
    if (kv->type == GGUF_VTYPE_FLOAT64) {
        memcpy(v, kv->value, 8);
        return 1;
    }
    int64_t i;
    int big;
    if (kv->type != GGUF_VTYPE_BOOL && !read_int(kv->type, kv->value, &i, &big) && !big) {
        *v = (double)i;
        return 1;
    }
    errmsg_at(err, errlen, f->path, "metadata '%s' is %s, expected a number", key,
              vtype_name(kv->type));
    return -1;
}

int gguf_get_bool(const struct gguf_file *f, const char *key, int *v, char *err, size_t errlen) {
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return 0;
    int64_t i;
    int big;
    if (read_int(kv->type, kv->value, &i, &big)) {
        errmsg_at(err, errlen, f->path, "metadata '%s' is %s, expected a bool", key,
                  vtype_name(kv->type));
        return -1;
    }
    *v = i != 0;
    return 1;
}

int gguf_get_str(const struct gguf_file *f, const char *key, const char **s, size_t *len, char *err,
                 size_t errlen) {
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return 0;
    if (kv->type != GGUF_VTYPE_STRING) {
        errmsg_at(err, errlen, f->path, "metadata '%s' is %s, expected a string", key,
                  vtype_name(kv->type));
        return -1;
    }
    uint64_t n;
    memcpy(&n, kv->value, 8);
    *s = (const char *)kv->value + 8;
    *len = (size_t)n;
    return 1;
}

static const struct gguf_kv *find_array(const struct gguf_file *f, const char *key, uint32_t want,
                                        char *err, size_t errlen, int *rc) {
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    *rc = 0;
    if (!kv) return NULL;
    int ok = kv->type == GGUF_VTYPE_ARRAY &&
             (want == GGUF_VTYPE_STRING
                  ? kv->arr_type == GGUF_VTYPE_STRING
                  : vtype_size(kv->arr_type) && kv->arr_type != 6 && kv->arr_type != 12);
    if (!ok) {
        errmsg_at(err, errlen, f->path, "metadata '%s' is %s%s%s, expected an array of %s", key,
                  vtype_name(kv->type), kv->type == GGUF_VTYPE_ARRAY ? " of " : "",
                  kv->type == GGUF_VTYPE_ARRAY ? vtype_name(kv->arr_type) : "",
                  want == GGUF_VTYPE_STRING ? "strings" : "integers");
        *rc = -1;
        return NULL;
    }
    *rc = 1;
    return kv;
}

int gguf_get_str_array(const struct gguf_file *f, const char *key, char ***strs, size_t **lens,
                       size_t *n, char *err, size_t errlen) {
    int rc;
    const struct gguf_kv *kv = find_array(f, key, GGUF_VTYPE_STRING, err, errlen, &rc);
    if (!kv) return rc;
    /* validated at open: arr_count strings lie inside the file, so count <= size/8 and the
     * total string bytes <= size */
    uint64_t cnt = kv->arr_count, total = 0;
    const uint8_t *p = kv->value;
    for (uint64_t i = 0; i < cnt; i++) {
        uint64_t l;
        memcpy(&l, p, 8);
        total += l + 1;
        p += 8 + l;
    }
    char **s = malloc((cnt ? cnt : 1) * sizeof(*s) + total);
    size_t *l = malloc((cnt ? cnt : 1) * sizeof(*l));
    if (!s || !l) {
        free(s);
        free(l);
        errmsg_at(err, errlen, f->path, "out of memory for '%s'", key);
        return -1;
    }
    char *blob = (char *)(s + (cnt ? cnt : 1));
    p = kv->value;
    for (uint64_t i = 0; i < cnt; i++) {
        uint64_t len;
        memcpy(&len, p, 8);
        memcpy(blob, p + 8, (size_t)len);
        blob[len] = 0;
        s[i] = blob;
        l[i] = (size_t)len;
        blob += len + 1;
        p += 8 + len;
    }
    *strs = s;
    *lens = l;
    *n = (size_t)cnt;
    return 1;
}

int gguf_get_i32_array(const struct gguf_file *f, const char *key, int32_t **vals, size_t *n,
                       char *err, size_t errlen) {
    int rc;
    const struct gguf_kv *kv = find_array(f, key, GGUF_VTYPE_INT32, err, errlen, &rc);
    if (!kv) return rc;
    uint64_t cnt = kv->arr_count, esz = vtype_size(kv->arr_type);
    int32_t *v = malloc((cnt ? cnt : 1) * sizeof(*v)); /* cnt <= file size / esz */
    if (!v) {
        errmsg_at(err, errlen, f->path, "out of memory for '%s'", key);
        return -1;
    }
    for (uint64_t i = 0; i < cnt; i++) {
        int64_t x = 0;
        int big;
        read_int(kv->arr_type, kv->value + i * esz, &x, &big);
        if (big || x < INT32_MIN || x > INT32_MAX) {
            free(v);
            errmsg_at(err, errlen, f->path, "metadata '%s'[%llu] is out of range", key,
                      (unsigned long long)i);
            return -1;
        }
        v[i] = (int32_t)x;
    }
    *vals = v;
    *n = (size_t)cnt;
    return 1;
}
