/* test_rope_scaling.c — RoPE scaling and window layouts read from the two formats.
 *
 * hf_rope: every case of tests/golden/rope_freqs.json (tools/gen_rope_golden.py: transformers'
 * ROPE_INIT_FUNCTIONS on the same config.json) loaded with hf_config_load, its table computed by
 * model_rope_freqs, compared frequency by frequency with transformers' inv_freq and attention
 * factor. gguf_yarn: the {arch}.rope.scaling.* keys llama.cpp's converter writes for yarn, read
 * back into the same table as the checkpoint they came from. qwen2_windows: use_sliding_window /
 * max_window_layers / layer_types → which layers are local, as transformers' Qwen2Config says.
 */
#include "test_util.h"
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/model.h"

static char *slurp(const char *path) {
    char *s = tu_slurp(path, NULL);
    cr_assert_not_null(s, "cannot open %s", path);
    return s;
}

/* hf_config_load on JSON written to a fresh directory; returns its rc. */
static int load_json(const char *json, struct model_config *c, char *err, size_t errlen) {
    char dir[] = "/tmp/fg_rope_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(json, f);
    fclose(f);
    int rc = hf_config_load(path, c, err, errlen);
    unlink(path);
    rmdir(dir);
    return rc;
}

static float attention_factor(const struct model_config *c) {
    return c->rope_scaling == MODEL_ROPE_SCALING_YARN ? c->rope_attn_factor : 1.0f;
}

/* transformers computes inv_freq in float32 (base ** (arange / dim) in fp32, then the yarn / llama3
 * blends in fp32); we compute in double and round once. Both are within a few float32 ulps of the
 * exact value, so 2e-6 relative (about 16 ulps) separates rounding from any real difference: the
 * smallest change a wrong knob makes (a beta off by one, a missing truncation) moves some
 * frequency by far more than 1e-3. */
#define FREQ_RTOL 2e-6

Test(rope_scaling, hf_rope_matches_transformers) {
    char *s = slurp("tests/golden/rope_freqs.json");
    cJSON *g = cJSON_Parse(s);
    free(s);
    cr_assert_not_null(g);
    const cJSON *cases = cJSON_GetObjectItem(g, "cases"), *e;
    int n = 0, n_yarn = 0;
    cJSON_ArrayForEach(e, cases) {
        const char *name = cJSON_GetObjectItem(e, "name")->valuestring;
        char *json = cJSON_PrintUnformatted(cJSON_GetObjectItem(e, "config"));
        struct model_config c;
        char err[512] = "";
        cr_assert_eq(load_json(json, &c, err, sizeof err), 0, "%s: %s", name, err);
        free(json);
        const cJSON *inv = cJSON_GetObjectItem(e, "inv_freq");
        cr_assert_eq(cJSON_GetArraySize(inv), c.head_dim / 2, "%s: table size", name);
        float *freqs = malloc(sizeof(float) * (size_t)(c.head_dim / 2));
        model_rope_freqs(&c, freqs);
        for (int i = 0; i < c.head_dim / 2; i++) {
            double want = cJSON_GetArrayItem(inv, i)->valuedouble;
            cr_expect(fabs(freqs[i] - want) <= FREQ_RTOL * fabs(want),
                      "%s: inv_freq[%d] = %.9g, transformers %.9g", name, i, freqs[i], want);
        }
        free(freqs);
        double af = cJSON_GetObjectItem(e, "attention_factor")->valuedouble;
        cr_expect(fabs(attention_factor(&c) - af) <= 1e-6 * af, "%s: attention factor %.9g vs %.9g",
                  name, attention_factor(&c), af);
        n_yarn += c.rope_scaling == MODEL_ROPE_SCALING_YARN;
        n++;
    }
    cr_expect_geq(n, 10);
    cr_expect_geq(n_yarn, 6);
    cJSON_Delete(g);
}

#define QWEN2                                                                                      \
    "\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":96,"        \
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":282,"

/* Qwen2Config: sliding_window only with use_sliding_window; then, without layer_types, layers
 * from max_window_layers on are local (transformers' Qwen2Config.__init__ builds layer_types so);
 * layer_types, when the config has it, says it directly. */
Test(rope_scaling, qwen2_windows_follow_use_sliding_window_and_max_window_layers) {
    static const struct {
        const char *json;
        int window;
        const char *local; /* per layer: 1 local, 0 global */
    } cases[] = {
        {"{" QWEN2 "\"num_hidden_layers\":4,\"use_sliding_window\":false,\"sliding_window\":8,"
         "\"max_window_layers\":2}",
         0, "0000"},
        {"{" QWEN2 "\"num_hidden_layers\":4,\"use_sliding_window\":true,\"sliding_window\":8,"
         "\"max_window_layers\":2}",
         8, "0011"},
        {"{" QWEN2 "\"num_hidden_layers\":4,\"use_sliding_window\":true,\"sliding_window\":8,"
         "\"max_window_layers\":0}",
         8, "1111"},
        {"{" QWEN2 "\"num_hidden_layers\":4,\"use_sliding_window\":true,\"sliding_window\":8,"
         "\"max_window_layers\":9}",
         8, "0000"},
        /* Qwen2Config's defaults: window 4096 from layer 28 */
        {"{" QWEN2 "\"num_hidden_layers\":30,\"use_sliding_window\":true}", 4096,
         "000000000000000000000000000011"},
        {"{" QWEN2 "\"num_hidden_layers\":4,\"use_sliding_window\":true,\"sliding_window\":null}",
         0, "0000"},
        {"{" QWEN2 "\"num_hidden_layers\":3,\"use_sliding_window\":true,\"sliding_window\":8,"
         "\"max_window_layers\":0,\"layer_types\":[\"full_attention\",\"sliding_attention\","
         "\"sliding_attention\"]}",
         8, "011"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct model_config c;
        char err[512] = "";
        cr_assert_eq(load_json(cases[i].json, &c, err, sizeof err), 0, "case %zu: %s", i, err);
        cr_expect_eq(c.sliding_window, cases[i].window, "case %zu: window %d", i, c.sliding_window);
        for (int l = 0; l < c.n_layers; l++)
            cr_expect_eq(model_layer_is_local(&c, l), cases[i].local[l] == '1',
                         "case %zu: layer %d local %d", i, l, model_layer_is_local(&c, l));
    }
}
