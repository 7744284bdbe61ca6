/* fuzz_hf_config.c — libFuzzer target: arbitrary text as a Hugging Face config.json.
 *
 * hf_config_load parses and validates the model configuration of a safetensors checkpoint; a
 * config that loads must pass model_config_validate (the loader trusts it to size the arena),
 * and model_rope_freqs must accept it. fp8_ckpt_config reads the same file's quantization_config:
 * a refused one leaves no scheme behind.
 */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "model/fp8_ckpt.h"
#include "model/model.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64], err[512];
    int fd = fuzz_memfd(data, size, path, sizeof(path));
    if (fd < 0) return 0;
    struct model_config cfg;
    if (hf_config_load(path, &cfg, err, sizeof(err)) == 0) {
        if (model_config_validate(&cfg, err, sizeof(err))) abort();
        float *freqs = malloc((size_t)cfg.head_dim / 2 * sizeof(float) + sizeof(float));
        if (freqs) {
            model_rope_freqs(&cfg, freqs);
            free(freqs);
        }
    }
    struct fp8_ckpt q;
    int rc = fp8_ckpt_config(path, &q, err, sizeof(err));
    if (rc != 0 && q.method != FP8_CKPT_NONE) abort();
    if (rc == 0 && (q.method < FP8_CKPT_NONE || q.method > FP8_CKPT_VLLM)) abort();
    close(fd);
    return 0;
}
