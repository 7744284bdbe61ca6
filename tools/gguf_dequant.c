/* gguf_dequant.c — write the fp32 values flashgen's dequantizer makes of a GGUF file's tensors.
 *
 *   gguf_dequant FILE.gguf [NAME...]   fp32 (little-endian) of every tensor, or of the NAMEd ones,
 *                                      in file order (in the order named), to stdout
 *   gguf_dequant --list FILE.gguf      one line per tensor: name, type, ne0, elements, bytes
 *
 * The check against gguf-py (tests/test_gguf_quant.py) streams this output and compares it byte
 * for byte with gguf.quants.dequantize. Tensors are converted row by row (gguf_dequantize on
 * ne[0] elements) in chunks of at most CHUNK_ELEMS, so the largest tensor needs no full buffer.
 */
#include "model/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_ELEMS (1u << 20)

static int dump_tensor(const struct gguf_tensor *t, float *buf) {
    uint64_t row = t->ne[0] ? t->ne[0] : 1, rows = t->n_elems / row;
    uint64_t rb = gguf_type_row_bytes(t->type, row);
    uint64_t per = row >= CHUNK_ELEMS ? 1 : CHUNK_ELEMS / row;
    if (!gguf_type_supported(t->type)) {
        fprintf(stderr, "gguf_dequant: tensor '%s' has type %s, which flashgen cannot dequantize\n",
                t->name, gguf_type_name(t->type));
        return -1;
    }
    for (uint64_t r = 0; r < rows; r += per) {
        uint64_t n = rows - r < per ? rows - r : per;
        for (uint64_t i = 0; i < n; i++)
            if (gguf_dequantize(t->type, t->data + (r + i) * rb, buf + i * row, row)) return -1;
        if (fwrite(buf, sizeof(float), n * row, stdout) != n * row) {
            perror("gguf_dequant: write");
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    int list = argc > 1 && !strcmp(argv[1], "--list");
    int a = 1 + list;
    if (argc <= a || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: gguf_dequant [--list] FILE.gguf [TENSOR...]\n");
        return 2;
    }
    char err[512];
    struct gguf_file *f = NULL;
    if (gguf_open(argv[a], &f, err, sizeof(err))) {
        fprintf(stderr, "gguf_dequant: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (list) {
        for (uint64_t i = 0; i < f->n_tensors; i++) {
            const struct gguf_tensor *t = &f->tensors[i];
            printf("%s %s %llu %llu %llu\n", t->name, gguf_type_name(t->type),
                   (unsigned long long)t->ne[0], (unsigned long long)t->n_elems,
                   (unsigned long long)t->n_bytes);
        }
        gguf_close(f);
        return 0;
    }
    uint64_t maxrow = 1;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].ne[0] > maxrow) maxrow = f->tensors[i].ne[0];
    float *buf = malloc((maxrow > CHUNK_ELEMS ? maxrow : CHUNK_ELEMS) * sizeof(float));
    if (!buf) {
        fprintf(stderr, "gguf_dequant: out of memory\n");
        gguf_close(f);
        return 1;
    }
    if (argc > a + 1) {
        for (int i = a + 1; i < argc && !rc; i++) {
            const struct gguf_tensor *t = gguf_find_tensor(f, argv[i]);
            if (!t) {
                fprintf(stderr, "gguf_dequant: %s: no tensor '%s'\n", argv[a], argv[i]);
                rc = 1;
            } else if (dump_tensor(t, buf)) {
                rc = 1;
            }
        }
    } else {
        for (uint64_t i = 0; i < f->n_tensors && !rc; i++)
            if (dump_tensor(&f->tensors[i], buf)) rc = 1;
    }
    if (fflush(stdout)) rc = 1;
    free(buf);
    gguf_close(f);
    return rc;
}
