/* fuzz_tokenizer_json.c — libFuzzer target: arbitrary text as a Hugging Face tokenizer.json.
 *
 * Input layout: the bytes up to the first NUL are tokenizer.json; if there is a NUL, the bytes
 * after it are a tokenizer_config.json placed beside it (JSON text cannot hold a raw NUL, so the
 * split never cuts a valid document). Both go into a per-process scratch directory and
 * tokenizer_from_json reads them. A tokenizer that loads is then used once: encode a fixed text
 * with and without special parsing, decode it, and render the chat template it named.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

static void exercise(const struct tokenizer *t, const char *jinja) {
    static const char text[] = "Hi <|im_start|>user 42\n\xc3\xa9\xf0\x9f\x98\x80 don't  x";
    char err[256];
    for (int ps = 0; ps < 2; ps++) {
        int *ids = NULL, n = 0;
        if (tokenizer_encode(t, text, sizeof(text) - 1, ps, 1, &ids, &n, err, sizeof(err)) == 0)
            free(tokenizer_decode(t, ids, n, ps));
        free(ids);
    }
    struct chat_template ct;
    chat_template_init(&ct, jinja, err, sizeof(err)); /* leaves a usable ChatML on failure */
    struct chat_msg msgs[2] = {{.role = "user", .content = "hello"},
                               {.role = "assistant", .content = "hi"}};
    free(chat_template_apply(&ct, msgs, 2, 1));
    chat_template_free(&ct);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = fuzz_scratch_dir();
    if (!dir) return 0;
    const uint8_t *nul = memchr(data, 0, size);
    size_t json_len = nul ? (size_t)(nul - data) : size;
    char path[4200], cfg[4200];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    snprintf(cfg, sizeof(cfg), "%s/tokenizer_config.json", dir);
    if (fuzz_write_file(dir, "tokenizer.json", data, json_len)) return 0;
    unlink(cfg);
    if (nul && fuzz_write_file(dir, "tokenizer_config.json", nul + 1, size - json_len - 1))
        return 0;

    struct tokenizer *t = NULL;
    char *tmpl = NULL, err[512];
    if (tokenizer_from_json(path, &t, &tmpl, err, sizeof(err)) == 0) {
        exercise(t, tmpl);
        tokenizer_free(t);
    }
    free(tmpl);
    return 0;
}
