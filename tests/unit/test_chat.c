/* test_chat.c — chat templates: the model's own Jinja source (SmolLM2's, from the GGUF; Qwen2.5's;
 * Llama-3's) is rendered by the interpreter, and equals what jinja2 renders for the same messages
 * (expected strings below were produced with jinja2 3.1 by Template(source).render(messages=...,
 * add_generation_prompt=..., bos_token=...)); a source that does not parse gets the hand-written
 * ChatML or Llama-3 fallback, with a warning naming the line and column, and renders the same. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/tokenizer.h"

#define MODEL_PATH "models/SmolLM2-135M-Instruct.Q4_1.gguf"

static const char SMOL_DEFAULT[] =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

static const char LLAMA3_JINJA[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% "
    "endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

static const char QWEN_JINJA[] =
    "{%- if messages[0]['role'] == 'system' %}\n    {{- '<|im_start|>system\\n' + "
    "messages[0]['content'] + '<|im_end|>\\n' }}\n{%- else %}\n    {{- '<|im_start|>system\\nYou "
    "are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n{%- endif "
    "%}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role "
    "== \"system\" and not loop.first) or (message.role == \"assistant\") %}\n        {{- "
    "'<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- "
    "endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' "
    "}}\n{%- endif %}\n";

static const struct chat_msg ONE[] = {{.role = "user", .content = "Hi"}};
static const struct chat_msg FOUR[] = {{.role = "system", .content = "Be brief."},
                                       {.role = "user", .content = "Hi"},
                                       {.role = "assistant", .content = "Hello!"},
                                       {.role = "user", .content = "2+2?"}};
static const struct chat_msg PADDED[] = {{.role = "user", .content = "  padded \n"}};

static void renders(const struct chat_template *ct, const struct chat_msg *m, int n, int gen,
                    const char *want) {
    char *got = chat_template_apply(ct, m, n, gen);
    cr_assert_not_null(got);
    cr_assert_str_eq(got, want);
    free(got);
}

static void smollm2_renders(const struct chat_template *ct);

static char *smollm2_jinja(void) {
    struct tokenizer *t = NULL;
    char *tmpl = NULL, err[512];
    cr_assert_eq(model_load_tokenizer(MODEL_PATH, &t, &tmpl, err, sizeof(err)), 0, "%s", err);
    tokenizer_free(t);
    cr_assert_not_null(tmpl, "the GGUF has no tokenizer.chat_template");
    return tmpl;
}

Test(chat, smollm2_template_from_gguf) {
    char *jinja = smollm2_jinja();
    struct chat_template ct;
    char err[256];
    cr_assert_eq(chat_template_init(&ct, jinja, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ct.kind, CHAT_KIND_JINJA);
    cr_assert_str_eq(chat_template_kind_name(&ct), "jinja");
    smollm2_renders(&ct);
    chat_template_free(&ct);
    chat_template_free(&ct); /* idempotent */

    /* The same source made unparseable: the ChatML fallback, its default system message taken
     * from the source, renders the same. */
    size_t n = strlen(jinja);
    char *broken = malloc(n + 16);
    memcpy(broken, jinja, n);
    strcpy(broken + n, "{% endif %}");
    cr_assert_eq(chat_template_init(&ct, broken, err, sizeof(err)), 1);
    cr_assert(strstr(err, "does not parse (line 6, column 19: unknown tag 'endif')") &&
                  strstr(err, "as chatml"),
              "%s", err);
    cr_assert_eq(ct.kind, CHAT_KIND_CHATML);
    cr_assert_null(ct.bos_text);
    cr_assert_str_eq(ct.default_system, SMOL_DEFAULT);
    smollm2_renders(&ct);
    chat_template_free(&ct);
    free(broken);
    free(jinja);
}

static void smollm2_renders(const struct chat_template *ct) {
    renders(ct, ONE, 1, 1,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    renders(ct, ONE, 1, 0,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
    renders(
        ct, FOUR, 4, 1,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>"
        "assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
    renders(ct, FOUR, 4, 0,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>"
            "assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n");
    renders(ct, PADDED, 1, 1,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\n  padded \n<|im_end|>\n<|im_start|>assistant\n");
    renders(ct, NULL, 0, 1, "<|im_start|>assistant\n");
}

Test(chat, rendered_prompt_encodes_like_hf) {
    struct tokenizer *t = NULL;
    char *jinja = NULL, err[512];
    cr_assert_eq(model_load_tokenizer(MODEL_PATH, &t, &jinja, err, sizeof(err)), 0, "%s", err);
    struct chat_template ct;
    cr_assert_eq(chat_template_init(&ct, jinja, err, sizeof(err)), 0);
    char *prompt = chat_template_apply(&ct, ONE, 1, 1);
    int *ids, n;
    cr_assert_eq(tokenizer_encode(t, prompt, strlen(prompt), 1, 1, &ids, &n, err, sizeof(err)), 0);
    /* the HF tokenizers oracle on the same text (tools/gen_tokenizer_golden.py pipeline) */
    static const int want[] = {1,    9690,  198,   2683, 359, 253, 5356,  5646, 11173, 3365, 3511,
                               308,  34519, 28,    7018, 411, 407, 19712, 8182, 2,     198,  1,
                               4093, 198,   26843, 2,    198, 1,   520,   9531, 198};
    cr_assert_eq(n, (int)(sizeof(want) / sizeof(want[0])));
    cr_assert_arr_eq(ids, want, sizeof(want));
    free(ids);
    free(prompt);
    chat_template_free(&ct);
    free(jinja);
    tokenizer_free(t);
}

Test(chat, qwen_default_system_from_escaped_literal) {
    struct chat_template ct;
    char err[256];
    cr_assert_eq(chat_template_init(&ct, QWEN_JINJA, err, sizeof(err)), 0);
    cr_assert_eq(ct.kind, CHAT_KIND_JINJA);
    renders(&ct, ONE, 1, 1,
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    renders(&ct, FOUR, 4, 0,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>"
            "assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n");
    chat_template_free(&ct);
}

static void llama3_renders(const struct chat_template *ct);

Test(chat, llama3) {
    struct chat_template ct;
    char err[256];
    cr_assert_eq(chat_template_init_tokens(&ct, LLAMA3_JINJA, "<|begin_of_text|>", "<|eot_id|>",
                                           err, sizeof(err)),
                 0);
    cr_assert_eq(ct.kind, CHAT_KIND_JINJA);
    llama3_renders(&ct);
    chat_template_free(&ct);

    /* Unparseable: the Llama-3 fallback renders the same. */
    char broken[sizeof(LLAMA3_JINJA) + 8];
    snprintf(broken, sizeof broken, "%s{{ 1 +", LLAMA3_JINJA);
    cr_assert_eq(chat_template_init(&ct, broken, err, sizeof(err)), 1);
    cr_assert(strstr(err, "as llama3"), "%s", err);
    cr_assert_eq(ct.kind, CHAT_KIND_LLAMA3);
    cr_assert_str_eq(ct.bos_text, "<|begin_of_text|>");
    cr_assert_null(ct.default_system);
    llama3_renders(&ct);
    chat_template_free(&ct);
}

static void llama3_renders(const struct chat_template *ct) {
    renders(ct, ONE, 1, 1,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_"
            "header_id|>assistant<|end_header_id|>\n\n");
    renders(ct, ONE, 1, 0,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
    renders(ct, FOUR, 4, 1,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe "
            "brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_"
            "header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|"
            "end_header_id|>\n\n2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    renders(ct, PADDED, 1, 1,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\npadded<|eot_id|><|start_"
            "header_id|>assistant<|end_header_id|>\n\n");
}

Test(chat, null_and_unknown_templates) {
    struct chat_template ct;
    char err[256] = "";
    cr_assert_eq(chat_template_init(&ct, NULL, err, sizeof(err)), 0);
    cr_assert_eq(ct.kind, CHAT_KIND_CHATML);
    cr_assert_null(ct.default_system);
    renders(&ct, ONE, 1, 1, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    chat_template_free(&ct);

    /* any other template is the model's own, rendered as written */
    cr_assert_eq(chat_template_init(&ct, "{{ messages[0].content }} [INST]", err, sizeof(err)), 0);
    cr_assert_eq(ct.kind, CHAT_KIND_JINJA);
    renders(&ct, ONE, 1, 1, "Hi [INST]");
    chat_template_free(&ct);

    /* one that does not parse: a warning (1) naming line and column, not an error, and ChatML
     * stands in as the warning says */
    cr_assert_eq(chat_template_init(&ct, "[INST]\n  {% if %}", err, sizeof(err)), 1);
    cr_assert(strstr(err, "line 2, column 9") && strstr(err, "as chatml"), "%s", err);
    cr_assert_eq(ct.kind, CHAT_KIND_CHATML);
    renders(&ct, ONE, 1, 1, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    chat_template_free(&ct);
    chat_template_free(NULL);

    /* a ChatML template without a default system message */
    cr_assert_eq(chat_template_init(&ct,
                                    "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + "
                                    "m['content'] + '<|im_end|>\\n'}}{% endfor %}",
                                    err, sizeof(err)),
                 0);
    cr_assert_null(ct.default_system);
    chat_template_free(&ct);
}
