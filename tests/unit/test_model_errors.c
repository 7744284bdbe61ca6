/* test_model_errors.c — the model layer's error reporting: the one error-message helper
 * (model/errmsg.c), the config.json architecture check (model/hf_config.c), whose message must
 * list exactly the architectures that load, and the engine's notices (model/engine.c), which go
 * to the caller's log callback at the right level. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/engine.h"
#include "model/errmsg.h"
#include "model/model.h"

#define MODEL_PATH "models/SmolLM2-135M-Instruct.Q4_1.gguf"

Test(errmsg, prefix_and_truncation) {
    char err[32];
    errmsg_at(err, sizeof(err), "a.gguf", "bad %s %d", "key", 7);
    cr_assert_str_eq(err, "a.gguf: bad key 7");
    errmsg_at(err, sizeof(err), NULL, "no path");
    cr_assert_str_eq(err, "no path");
    errmsg_set(err, sizeof(err), "%s", "a message much longer than thirty-two bytes");
    cr_assert_eq(strlen(err), sizeof(err) - 1);
    char tiny[4] = "xyz";
    errmsg_at(tiny, sizeof(tiny), "long/path/name", "lost");
    cr_assert_eq(strlen(tiny), 3, "the path prefix is cut, never overflows");
    errmsg_at(NULL, 0, "p", "nothing written"); /* accepted */
}

/* Load a config.json whose text is JSON; returns hf_config_load's result, message in err. */
static int load_config(const char *json, char *err, size_t errlen) {
    char dir[] = "/tmp/fg_hfcfg_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(json, f);
    fclose(f);
    struct model_config c;
    int rc = hf_config_load(path, &c, err, errlen);
    unlink(path);
    rmdir(dir);
    return rc;
}

#define SHAPE                                                                                      \
    "\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,"                        \
    "\"num_key_value_heads\":4,\"vocab_size\":282,\"intermediate_size\":96}"

/* The families the forward pass implements load (Qwen2 used to be refused for its q/k/v biases);
 * anything else is refused with a message that names exactly what loads. */
Test(hf_config, families_accepted_and_message_lists_what_loads) {
    const char *refused[] = {"{\"architectures\":[\"GPT2LMHeadModel\"]," SHAPE,
                             "{\"model_type\":\"phi3\"," SHAPE,
                             "{\"architectures\":[\"Gemma2ForCausalLM\"]," SHAPE};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        char err[512] = "";
        cr_assert_eq(load_config(refused[i], err, sizeof(err)), -1, "case %zu", i);
        cr_assert(strstr(err, "is not supported"), "%s", err);
        const char *list = strstr(err, "(flashgen loads");
        cr_assert(list, "%s", err);
        cr_assert(strstr(list, "LlamaForCausalLM") && strstr(list, "MistralForCausalLM") &&
                      strstr(list, "Qwen2ForCausalLM") && strstr(list, "Gemma3ForCausalLM"),
                  "%s", err);
    }
    const char *accepted[] = {"{\"architectures\":[\"LlamaForCausalLM\"]," SHAPE,
                              "{\"architectures\":[\"MistralForCausalLM\"]," SHAPE,
                              "{\"model_type\":\"llama\"," SHAPE,
                              "{\"architectures\":[\"Qwen2ForCausalLM\"]," SHAPE,
                              "{\"model_type\":\"qwen2\"," SHAPE,
                              "{\"architectures\":[\"Gemma3ForCausalLM\"]," SHAPE};
    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
        char err[512] = "";
        cr_assert_eq(load_config(accepted[i], err, sizeof(err)), 0, "case %zu: %s", i, err);
    }
}

struct notices {
    int n[3]; /* by enum engine_log_level */
    char last[3][768];
    int n_gpu; /* info or warn notices that mention CUDA or the GPU */
};

static void record(enum engine_log_level level, const char *msg, void *user) {
    struct notices *r = user;
    r->n[level]++;
    snprintf(r->last[level], sizeof(r->last[level]), "%s", msg);
    if (level != ENGINE_LOG_DEBUG && (strstr(msg, "CUDA") || strstr(msg, "GPU"))) r->n_gpu++;
}

/* --device auto without the CUDA library (a CPU-only build): one debug notice, nothing at info or
 * warn (the server shows neither), and the engine runs on the CPU. */
Test(engine, missing_cuda_library_is_a_debug_notice) {
    setenv("FLASHGEN_CUDA_LIB", "/nonexistent/libflashgen_cuda.so", 1);
    struct notices r = {0};
    struct engine_opts o;
    engine_opts_default(&o);
    o.model_path = MODEL_PATH;
    o.kv_cache_bytes = (size_t)16 << 20;
    o.log = record;
    o.log_user = &r;
    struct engine *e;
    char err[512];
    cr_assert_eq(engine_open(&o, &e, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(e->device, "cpu");
    cr_assert_eq(r.n[ENGINE_LOG_DEBUG], 1);
    cr_assert(strstr(r.last[ENGINE_LOG_DEBUG], "no CUDA backend"), "%s", r.last[ENGINE_LOG_DEBUG]);
    /* info notices are the load's own (dequantized types, the chat renderer), none about a GPU */
    cr_assert_eq(r.n[ENGINE_LOG_WARN], 0, "%s", r.last[ENGINE_LOG_WARN]);
    cr_assert_eq(r.n_gpu, 0, "%s", r.last[ENGINE_LOG_INFO]);
    engine_close(e);

    /* --device cuda: the same reason is the error, and nothing is logged */
    memset(&r, 0, sizeof(r));
    o.device = ENGINE_DEVICE_CUDA;
    cr_assert_eq(engine_open(&o, &e, err, sizeof(err)), -1);
    cr_assert(strstr(err, "device cuda: no CUDA backend"), "%s", err);
    cr_assert_eq(r.n[0] + r.n[1] + r.n[2], 0);
}

/* What the family switches cannot express is refused, naming the field. */
Test(hf_config, family_layouts_not_implemented_are_refused) {
    static const struct {
        const char *json, *want;
    } bad[] = {
        {"{\"architectures\":[\"Qwen2ForCausalLM\"],\"use_sliding_window\":true,"
         "\"max_window_layers\":-1," SHAPE,
         "'max_window_layers' -1 is negative"},
        {"{\"architectures\":[\"Gemma3ForCausalLM\"],\"sliding_window\":8,\"layer_types\":["
         "\"sliding_attention\",\"full_attention\",\"full_attention\"],"
         "\"hidden_size\":64,\"num_hidden_layers\":3,\"num_attention_heads\":4,"
         "\"vocab_size\":282,\"intermediate_size\":96}",
         "layer_types: layer 2 breaks the pattern"},
        {"{\"architectures\":[\"Gemma3ForCausalLM\"],\"sliding_window\":8,\"layer_types\":["
         "\"sliding_attention\",\"chunked_attention\"]," SHAPE,
         "layer_types[1] 'chunked_attention'"},
        {"{\"architectures\":[\"Gemma3ForCausalLM\"],\"use_bidirectional_attention\":true," SHAPE,
         "'use_bidirectional_attention'"},
        {"{\"architectures\":[\"Gemma3ForCausalLM\"],\"attn_logit_softcapping\":50," SHAPE,
         "'attn_logit_softcapping'"},
        {"{\"architectures\":[\"Gemma3ForCausalLM\"],\"hidden_activation\":\"silu\"," SHAPE,
         "must be \"gelu_pytorch_tanh\""},
        {"{\"architectures\":[\"Gemma3ForConditionalGeneration\"]," SHAPE, "'text_config'"},
        {"{\"architectures\":[\"LlamaForCausalLM\"],\"rope_scaling\":{\"rope_type\":\"yarn\"}"
         "," SHAPE,
         "yarn rope_scaling needs factor"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[512] = "";
        cr_assert_eq(load_config(bad[i].json, err, sizeof(err)), -1, "case %zu", i);
        cr_expect(strstr(err, bad[i].want), "case %zu: '%s' lacks '%s'", i, err, bad[i].want);
    }
    /* a layout that fits: one global layer every 3 */
    char err[512] = "";
    cr_assert_eq(load_config("{\"architectures\":[\"Gemma3ForCausalLM\"],\"sliding_window\":8,"
                             "\"num_hidden_layers\":6,\"layer_types\":[\"sliding_attention\","
                             "\"sliding_attention\",\"full_attention\",\"sliding_attention\","
                             "\"sliding_attention\",\"full_attention\"],\"hidden_size\":64,"
                             "\"num_attention_heads\":4,\"vocab_size\":282,"
                             "\"intermediate_size\":96}",
                             err, sizeof(err)),
                 0, "%s", err);
}
