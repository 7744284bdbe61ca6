/* gguf.h — read-only GGUF v2/v3 parser (tensor types and dequantization: gguf_quant.h).
 *
 * The file is mmap'ed once (MAP_PRIVATE, read-only; never read() into a copy); the KV table and
 * tensor table point into the mapping, so nothing is copied and nothing is allocated from an
 * untrusted count without first bounding that count by the bytes left in the file. Every length,
 * count, shape and offset is checked against the file size at open, so later accessors
 * (gguf_tensor_data, gguf_get_*) cannot read out of bounds. Layout: the GGUF specification
 * (ggml-org/ggml, docs/gguf.md).
 */
#ifndef FG_GGUF_H
#define FG_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "model/gguf_quant.h" /* tensor types, gguf_dequantize */

enum gguf_vtype { /* metadata value types */
                  GGUF_VTYPE_UINT8 = 0,
                  GGUF_VTYPE_INT8 = 1,
                  GGUF_VTYPE_UINT16 = 2,
                  GGUF_VTYPE_INT16 = 3,
                  GGUF_VTYPE_UINT32 = 4,
                  GGUF_VTYPE_INT32 = 5,
                  GGUF_VTYPE_FLOAT32 = 6,
                  GGUF_VTYPE_BOOL = 7,
                  GGUF_VTYPE_STRING = 8,
                  GGUF_VTYPE_ARRAY = 9,
                  GGUF_VTYPE_UINT64 = 10,
                  GGUF_VTYPE_INT64 = 11,
                  GGUF_VTYPE_FLOAT64 = 12,
};

#define GGUF_MAX_DIMS 4

struct gguf_kv {
    const char *key; /* NOT NUL-terminated: key_len bytes inside the mapping */
    size_t key_len;
    uint32_t type;        /* enum gguf_vtype */
    const uint8_t *value; /* scalar bytes, or for STRING the u64 length, or for ARRAY the
                           * first element (after the u32 type and u64 count) */
    uint32_t arr_type;    /* ARRAY only: element type */
    uint64_t arr_count;   /* ARRAY only: number of elements */
};

struct gguf_tensor {
    char name[256]; /* NUL-terminated copy */
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] innermost (row length); unused dims are 1 */
    uint32_t type;              /* ggml type id */
    uint64_t offset;            /* relative to the data section */
    uint64_t n_elems;
    uint64_t n_bytes;
    const uint8_t *data; /* inside the mapping; n_bytes readable */
};

struct gguf_file {
    char *path;
    const uint8_t *map;
    size_t size;
    uint32_t version;
    uint64_t n_kv;
    struct gguf_kv *kv; /* (n_kv) */
    uint64_t n_tensors;
    struct gguf_tensor *tensors; /* (n_tensors) */
    uint64_t alignment;
    uint64_t data_offset; /* file offset of the tensor data section */
};

/* Open and validate PATH. On failure returns -1 with "PATH: problem" in err. */
int gguf_open(const char *path, struct gguf_file **out, char *err, size_t errlen);
void gguf_close(struct gguf_file *f); /* accepts NULL */

const struct gguf_kv *gguf_find_kv(const struct gguf_file *f, const char *key);
/* Typed getters: return 1 when found and converted, 0 when absent, -1 (err written) when the
 * key has an incompatible type or the value does not fit. Integers accept any integer width
 * (and BOOL); floats accept FLOAT32/FLOAT64 and any integer. */
int gguf_get_int(const struct gguf_file *f, const char *key, int64_t *v, char *err, size_t errlen);
int gguf_get_float(const struct gguf_file *f, const char *key, double *v, char *err, size_t errlen);
int gguf_get_bool(const struct gguf_file *f, const char *key, int *v, char *err, size_t errlen);
/* *s points into the mapping and is NOT NUL-terminated. */
int gguf_get_str(const struct gguf_file *f, const char *key, const char **s, size_t *len, char *err,
                 size_t errlen);
/* A string array as malloc'd NUL-terminated copies: *strs (n) pointers into one block, *lens (n).
 * Free with free(*strs) and free(*lens) (the strings share the *strs allocation). */
int gguf_get_str_array(const struct gguf_file *f, const char *key, char ***strs, size_t **lens,
                       size_t *n, char *err, size_t errlen);
/* An integer array converted to int32 (any integer element type); *vals malloc'd. */
int gguf_get_i32_array(const struct gguf_file *f, const char *key, int32_t **vals, size_t *n,
                       char *err, size_t errlen);

/* Say that every tensor is about to be read: madvise SEQUENTIAL on the mapping, and a thread
 * that reads the file ahead front to back (readahead(2) in 64 MB steps; FLASHGEN_READAHEAD picks
 * another way for A/B runs, gguf.c), so a cold file is read in file order while it is converted. */
void gguf_will_read(const struct gguf_file *f);

const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name);

#endif
