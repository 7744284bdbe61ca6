/* test_golden.c — the default model against Hugging Face transformers on the same GGUF
 * (tests/golden/generate_smollm2.json, made by tools/gen_golden.py): our tokenizer gives the
 * same prompt ids, greedy decoding gives the same 32 tokens, raw and chat-templated, and the
 * first step's top logits agree. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/engine.h"
#include "model/generate.h"
#include "test_util.h"

#define MODEL_PATH "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define GOLDEN_PATH "tests/golden/generate_smollm2.json"


static int *json_ids(const cJSON *arr, int *n)
{
    *n = cJSON_GetArraySize(arr);
    int *ids = malloc(sizeof(int) * (size_t)(*n > 0 ? *n : 1));
    for (int i = 0; i < *n; i++)
        ids[i] = cJSON_GetArrayItem(arr, i)->valueint;
    return ids;
}

Test(golden, smollm2_greedy_matches_transformers, .timeout = 600)
{
    char *text = tu_slurp(GOLDEN_PATH, NULL);
    cr_assert(text, "cannot read %s", GOLDEN_PATH);
    cJSON *doc = cJSON_Parse(text);
    cr_assert(doc, "bad JSON in %s", GOLDEN_PATH);
    int n_new = cJSON_GetObjectItem(doc, "n_new")->valueint;

    struct engine_opts o;
    engine_opts_default(&o);
    o.model_path = MODEL_PATH;
    o.device = ENGINE_DEVICE_CPU;
    /* fp32 weights: transformers multiplies the dequantized GGUF in fp32, so this is the path
     * that must match it token for token. The block path (8-bit activations, as llama.cpp) is
     * held to its own bound against this one: tests/unit/test_cpu_quant.c. */
    o.cpu_fp32_weights = 1;
    o.kv_cache_bytes = (size_t)64 << 20;
    struct engine *e;
    char err[512];
    cr_assert_eq(engine_open(&o, &e, err, sizeof(err)), 0, "%s", err);

    const cJSON *cases = cJSON_GetObjectItem(doc, "cases"), *c;
    int n_cases = 0, tok_ok = 0, gen_ok = 0, kinds[2] = {0};
    cJSON_ArrayForEach(c, cases)
    {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        const char *kind = cJSON_GetObjectItem(c, "kind")->valuestring;
        const char *user = cJSON_GetObjectItem(c, "user")->valuestring;
        const char *rendered = cJSON_GetObjectItem(c, "text")->valuestring;
        int n_prompt, n_gold;
        int *prompt = json_ids(cJSON_GetObjectItem(c, "prompt_ids"), &n_prompt);
        int *gold = json_ids(cJSON_GetObjectItem(c, "generated_ids"), &n_gold);
        n_cases++;
        kinds[!strcmp(kind, "chat")]++;

        /* Our rendering of the chat template and our tokenizer agree with transformers. */
        char *ours = NULL;
        if (!strcmp(kind, "chat")) {
            struct chat_msg m = {"user", user};
            ours = chat_template_apply(&e->chat, &m, 1, 1);
        } else {
            ours = strdup(user);
        }
        cr_expect_str_eq(ours, rendered, "%s: chat template renders differently", name);
        int *ids = NULL, n_ids = 0;
        cr_assert_eq(tokenizer_encode(e->model->tok, ours, strlen(ours), 1, 0, &ids, &n_ids, err,
                                      sizeof(err)),
                     0, "%s", err);
        int same = n_ids == n_prompt && !memcmp(ids, prompt, sizeof(int) * (size_t)n_ids);
        cr_expect(same, "%s: prompt ids differ from transformers (%d vs %d ids)", name, n_ids,
                  n_prompt);
        tok_ok += same;

        /* Greedy generation from transformers' prompt ids, eos ignored as in the golden run. */
        struct sampler_params sp;
        sampler_params_default(&sp);
        struct gen_result res;
        float *logits = malloc(sizeof(float) * (size_t)n_new * e->model->cfg.vocab_size);
        cr_assert_eq(gen_run(e, prompt, n_prompt, &sp, n_new, 0, NULL, NULL, logits, &res, err,
                             sizeof(err)),
                     0, "%s", err);
        int first_diff = -1;
        for (int i = 0; i < n_gold && first_diff < 0; i++)
            if (i >= res.n || res.ids[i] != gold[i]) first_diff = i;
        cr_expect_eq(first_diff, -1, "%s: greedy tokens differ from step %d", name, first_diff);
        gen_ok += first_diff < 0;

        /* Step-0 logits: fp32 on both sides, different summation order and kernels; the top
         * logits are ~10-20 in size, so 1e-2 absolute is a 1e-3 relative bound. */
        const cJSON *tv;
        cJSON_ArrayForEach(tv, cJSON_GetObjectItem(c, "step0_top"))
        {
            int id = cJSON_GetArrayItem(tv, 0)->valueint;
            double want = cJSON_GetArrayItem(tv, 1)->valuedouble;
            cr_expect(fabs(logits[id] - want) < 1e-2, "%s: logit[%d] = %f, transformers %f", name,
                      id, logits[id], want);
        }
        gen_result_free(&res);
        free(logits);
        free(ids);
        free(ours);
        free(prompt);
        free(gold);
    }
    cr_log_info("golden: %d cases (%d raw, %d chat): tokenizer %d/%d, greedy %d/%d", n_cases,
                kinds[0], kinds[1], tok_ok, n_cases, gen_ok, n_cases);
    cr_assert(n_cases >= 10 && kinds[0] > 0 && kinds[1] > 0);
    engine_close(e);
    cJSON_Delete(doc);
    free(text);
}
