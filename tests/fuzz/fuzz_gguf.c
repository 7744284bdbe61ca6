/* fuzz_gguf.c — libFuzzer target: arbitrary bytes as a GGUF file.
 *
 * Walks everything a model file reaches: gguf_open (header, KV table, tensor table), every typed
 * getter on every key, dequantization of every supported tensor, then the loader's own readers
 * on the same file (model_load_tokenizer: tokenizer.ggml.*; model_load_flags: llama.* config,
 * shape checks, the parallel conversion, with each flag). A rejected file is fine; a crash, a
 * sanitizer report, a leak or an allocation far beyond the file's size (libFuzzer -malloc_limit_mb)
 * is a bug.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/gguf.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

/* Dequantizing a tensor costs time linear in its elements; tensors are bounded by the file size,
 * but ne[] with a zero dimension elsewhere can still claim a huge ne[0]. */
#define FUZZ_MAX_ELEMS (1u << 22)

static void touch_kvs(const struct gguf_file *f) {
    char err[256], key[300];
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const struct gguf_kv *kv = &f->kv[i];
        size_t kl = kv->key_len < sizeof(key) - 1 ? kv->key_len : sizeof(key) - 1;
        memcpy(key, kv->key, kl);
        key[kl] = 0;
        if (strlen(key) != kl || gguf_find_kv(f, key) == NULL)
            continue; /* keys with NUL bytes cannot be named through the API */
        int64_t iv;
        double dv;
        int bv;
        const char *s;
        size_t sl, n;
        gguf_get_int(f, key, &iv, err, sizeof(err));
        gguf_get_float(f, key, &dv, err, sizeof(err));
        gguf_get_bool(f, key, &bv, err, sizeof(err));
        if (gguf_get_str(f, key, &s, &sl, err, sizeof(err)) == 1 && sl) {
            volatile char c = s[0];
            c = s[sl - 1];
            (void)c;
        }
        char **strs;
        size_t *lens;
        if (gguf_get_str_array(f, key, &strs, &lens, &n, err, sizeof(err)) == 1) {
            for (size_t j = 0; j < n; j++)
                if (strlen(strs[j]) > lens[j])
                    abort(); /* each copy is NUL-terminated at its length */
            free(strs);
            free(lens);
        }
        int32_t *vals;
        if (gguf_get_i32_array(f, key, &vals, &n, err, sizeof(err)) == 1) free(vals);
    }
}

static void touch_tensors(const struct gguf_file *f) {
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        if (gguf_find_tensor(f, t->name) != t) abort(); /* duplicate names are rejected at open */
        if (!gguf_type_supported(t->type) || t->n_elems == 0 || t->n_elems > FUZZ_MAX_ELEMS)
            continue;
        if (gguf_type_row_bytes(t->type, t->n_elems) != t->n_bytes) abort();
        float *dst = malloc(t->n_elems * sizeof(float));
        if (!dst) continue;
        if (gguf_dequantize(t->type, t->data, dst, t->n_elems)) abort();
        free(dst);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64], err[512];
    int fd = fuzz_memfd(data, size, path, sizeof(path));
    if (fd < 0) return 0;
    struct gguf_file *f = NULL;
    if (gguf_open(path, &f, err, sizeof(err)) == 0) {
        touch_kvs(f);
        touch_tensors(f);
        gguf_close(f);

        struct tokenizer *tok = NULL;
        char *tmpl = NULL;
        if (model_load_tokenizer(path, &tok, &tmpl, err, sizeof(err)) == 0) {
            int *ids = NULL, n = 0;
            static const char text[] = "Hello world 123 <|im_start|>user\n\xc3\xa9";
            if (tokenizer_encode(tok, text, sizeof(text) - 1, 1, 1, &ids, &n, err, sizeof(err)) ==
                0)
                free(tokenizer_decode(tok, ids, n, 0));
            free(ids);
            tokenizer_free(tok);
            free(tmpl);
        }
        /* fp32, the CPU's blocks (some kept in the mapping), the GPU's kept F16/BF16/F32 */
        static const unsigned flags[] = {0, MODEL_LOAD_KEEP_BLOCKS, MODEL_LOAD_KEEP_FILE};
        for (int k = 0; k < 3; k++) {
            struct model *m = NULL;
            if (model_load_flags(path, flags[k], &m, NULL, NULL, err, sizeof(err)) == 0)
                model_free(m);
        }
    }
    close(fd);
    return 0;
}
