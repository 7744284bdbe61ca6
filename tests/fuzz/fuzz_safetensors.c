/* fuzz_safetensors.c — libFuzzer target: arbitrary bytes as a .safetensors file.
 *
 * safetensors_open parses the 8-byte header length and the header JSON and validates every
 * tensor's dtype, shape and data_offsets against the data buffer; the target then checks those
 * promises (find returns each tensor, n_bytes = n_elems * dtype size, data lies inside the file)
 * and converts every supported tensor to fp32; each F8_E4M3 tensor goes through the FP8
 * checkpoint's scale checks (fp8_ckpt_weight, as under a compressed-tensors config) and, when they
 * pass, is dequantized with its scale, which must then be one value or one per row.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/fp8_ckpt.h"
#include "model/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

#define FUZZ_MAX_ELEMS (1u << 22)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64], err[512];
    int fd = fuzz_memfd(data, size, path, sizeof(path));
    if (fd < 0) return 0;
    struct safetensors *s = NULL;
    if (safetensors_open(path, &s, err, sizeof(err)) == 0) {
        const struct safetensors_file *f = &s->files[0];
        for (size_t i = 0; i < s->n_tensors; i++) {
            const struct safetensors_tensor *t = &s->tensors[i];
            if (safetensors_find(s, t->name) != t) abort(); /* sorted, no duplicates */
            if (t->n_dims < 0 || t->n_dims > SAFETENSORS_MAX_DIMS) abort();
            if (t->n_bytes != t->n_elems * (uint64_t)safetensors_dtype_size(t->dtype)) abort();
            if (t->data < f->map + 8 || t->n_bytes > f->size ||
                t->data + t->n_bytes > f->map + f->size)
                abort();
            if (!safetensors_dtype_supported(t->dtype) || !t->n_elems ||
                t->n_elems > FUZZ_MAX_ELEMS)
                continue;
            float *dst = malloc(t->n_elems * sizeof(float));
            if (!dst) continue;
            if (safetensors_to_f32(t, dst)) abort();
            int64_t rows = t->n_dims ? t->shape[0] : 1;
            struct fp8_ckpt q = {.method = FP8_CKPT_COMPRESSED_TENSORS};
            struct fp8_ckpt_weight fw;
            if (!strcmp(t->dtype, "F8_E4M3") && rows <= INT32_MAX &&
                fp8_ckpt_weight(&q, s, t, (int)rows, &fw, err, sizeof(err)) == 0) {
                if (fw.w != t || fw.scale->n_elems != (fw.per_row ? (uint64_t)rows : 1)) abort();
                fp8_ckpt_dequant(&fw, (int)rows, dst);
            }
            free(dst);
        }
        safetensors_close(s);
    }
    close(fd);
    return 0;
}
