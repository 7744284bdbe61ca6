/* safetensors.h — read-only safetensors reader (single file or sharded checkpoint).
 *
 * Each file is mmap'ed; the header JSON is parsed with cJSON and every tensor's dtype, shape and
 * data_offsets are validated against the file size at open, so tensor data pointers are always
 * in bounds. Sharded checkpoints are opened through model.safetensors.index.json (weight_map).
 * Format: the safetensors README (huggingface/safetensors).
 */
#ifndef FG_SAFETENSORS_H
#define FG_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define SAFETENSORS_MAX_DIMS 8
#define SAFETENSORS_MAX_HEADER 100000000ull /* bytes; the format's own limit */

struct safetensors_tensor {
    char *name;
    char dtype[8]; /* "F32", "BF16", ... */
    int n_dims;
    int64_t shape[SAFETENSORS_MAX_DIMS]; /* row-major, shape[n_dims-1] innermost */
    uint64_t n_elems;
    uint64_t n_bytes;
    const uint8_t *data; /* inside the mapping of file `file` */
    int file;            /* index into safetensors.files */
};

struct safetensors_file {
    char *path;
    const uint8_t *map;
    size_t size;
};

struct safetensors {
    int n_files;
    struct safetensors_file *files;
    size_t n_tensors;
    struct safetensors_tensor *tensors;
};

/* Open one .safetensors file. On failure -1 with "PATH: problem" in err. */
int safetensors_open(const char *path, struct safetensors **out, char *err, size_t errlen);
/* Open the checkpoint in DIR: model.safetensors.index.json (sharded) if present, otherwise
 * model.safetensors. */
int safetensors_open_dir(const char *dir, struct safetensors **out, char *err, size_t errlen);
void safetensors_close(struct safetensors *s); /* accepts NULL */

const struct safetensors_tensor *safetensors_find(const struct safetensors *s, const char *name);
/* Bytes per element of a dtype string, 0 when unknown. */
int safetensors_dtype_size(const char *dtype);
/* 1 for the dtypes safetensors_to_f32 converts: F32, F16, BF16, F8_E4M3. */
int safetensors_dtype_supported(const char *dtype);
/* Convert all elements of T to fp32 in DST (n_elems floats); -1 for an unsupported dtype.
 * F8_E4M3 gives each code's value, unscaled (an FP8 checkpoint's scales: model/fp8_ckpt.h). */
int safetensors_to_f32(const struct safetensors_tensor *t, float *dst);
/* Element I (< n_elems) of T as fp32; NaN for a dtype safetensors_to_f32 does not convert. */
float safetensors_value_f32(const struct safetensors_tensor *t, uint64_t i);
/* One e4m3 code (OCP FP8 E4M3, torch.float8_e4m3fn) as fp32: exact; 0x7f / 0xff are NaN. */
float safetensors_e4m3_to_f32(uint8_t code);

#endif
