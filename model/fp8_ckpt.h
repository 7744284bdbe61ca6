/* fp8_ckpt.h — FP8 checkpoints in the safetensors layouts of compressed-tensors and vLLM
 * (issue 13).
 *
 * Two producers write the same tensors: llm-compressor (config.json quantization_config with
 * quant_method "compressed-tensors", format "float-quantized" or "naive-quantized") and
 * AutoFP8 / vLLM (quant_method "fp8"). Each quantized Linear keeps <layer>.weight as F8_E4M3
 * (out, in) with <layer>.weight_scale (F32, F16 or BF16; shape [] or [1] per tensor, [out, 1] per
 * output channel) and, for static activation scales, <layer>.input_scale (one value). The loader
 * dequantizes the weights into its fp32 host weights, W = e4m3(q) · scale; input_scale is read and
 * checked but not used, since flashgen's FP8 path (kernels/fp8.h) quantizes activations per token
 * at every call. What is refused, with the file and the key or tensor named: other quant_methods
 * and formats, weights that are not 8-bit floats, block / group strategies, asymmetric schemes,
 * a weight without its scale, a scale of the wrong shape, dtype or value. Facts and sources:
 * README.md, "FP8 safetensors (compressed-tensors)".
 */
#ifndef FG_FP8_CKPT_H
#define FG_FP8_CKPT_H

#include "model/safetensors.h"

#include <stddef.h>

enum fp8_ckpt_method {
    FP8_CKPT_NONE = 0,               /* no quantization_config */
    FP8_CKPT_COMPRESSED_TENSORS = 1, /* quant_method "compressed-tensors" */
    FP8_CKPT_VLLM = 2,               /* quant_method "fp8" (AutoFP8, vLLM) */
};

/* What config.json says, and what the load found (counted by fp8_ckpt_weight / fp8_ckpt_plain). */
struct fp8_ckpt {
    enum fp8_ckpt_method method;
    char format[24];  /* compressed-tensors' format ("float-quantized"); "" for "fp8" */
    int act_static;   /* some scheme has static activation scales (input_scale tensors) */
    int act_dynamic;  /* some scheme quantizes activations dynamically */
    int kv_scheme;    /* kv_cache_scheme set: its k_scale / v_scale tensors are not used */
    char ignore[128]; /* the ignore / ignored_layers list, shortened, for the log */
    int n_tensor_scale, n_row_scale; /* F8_E4M3 weights with one scale / one per row */
    int n_input_scale;               /* of those, with an input_scale */
    char scale_dtypes[24];           /* the weight_scale dtypes seen, e.g. "BF16" */
    int n_plain;                     /* 2-D weights of the plan not in e4m3 */
    char plain[96];                  /* the first of them and its dtype, for the log */
};

/* One F8_E4M3 weight and its scale, checked (fp8_ckpt_weight). */
struct fp8_ckpt_weight {
    const struct safetensors_tensor *w;     /* F8_E4M3, (rows, cols) or (rows) */
    const struct safetensors_tensor *scale; /* F32 / F16 / BF16: 1 value or one per row */
    int per_row;
};

/* Read CONFIG_PATH's quantization_config (or the older key compression_config) into Q (zeroed
 * first; method FP8_CKPT_NONE when there is none). -1 with "CONFIG_PATH: problem" for a scheme
 * flashgen does not load. Thread-neutral. */
int fp8_ckpt_config(const char *config_path, struct fp8_ckpt *q, char *err, size_t errlen);

/* For the F8_E4M3 tensor W of S, ROWS rows (its first dimension): find <base>.weight_scale and
 * check its dtype, shape and values (finite, > 0), <base>.input_scale if present (one value,
 * finite, > 0) and any <base>.weight_zero_point / input_zero_point (all zero: symmetric), then
 * count it in Q. Q must name a scheme (fp8_ckpt_config), else the F8_E4M3 tensor is refused.
 * -1 with "FILE: problem" naming the tensor. Thread-neutral (Q is the caller's). */
int fp8_ckpt_weight(struct fp8_ckpt *q, const struct safetensors *s,
                    const struct safetensors_tensor *w, int rows, struct fp8_ckpt_weight *out,
                    char *err, size_t errlen);

/* W's ROWS rows dequantized into DST (all of W's elements, row-major fp32). Any thread. */
void fp8_ckpt_dequant(const struct fp8_ckpt_weight *fw, int rows, float *dst);

/* Count a 2-D weight of the plan that is not in e4m3 (NAME, DTYPE: the file's). */
void fp8_ckpt_plain(struct fp8_ckpt *q, const char *name, const char *dtype);

/* One log line for the load of PATH (the checkpoint), into OUT: "" when Q found no FP8 weight
 * and names no scheme. */
void fp8_ckpt_note(const struct fp8_ckpt *q, const char *path, char *out, size_t cap);

#endif
