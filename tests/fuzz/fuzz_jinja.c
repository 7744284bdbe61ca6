/* fuzz_jinja.c — libFuzzer target: arbitrary bytes as a chat template.
 *
 * jinja_parse on the input, then jinja_render with a fixed conversation like the ones chat
 * requests build (system, user, assistant with tool_calls, tool; tools; bos/eos) under small
 * limits so a looping template ends fast. Whatever the source, parse and render must return a
 * status (never crash, leak or overrun), and a successful render must be a NUL-terminated string
 * of the length reported and within the output limit. Seeds: the real templates of
 * tests/golden/chat_templates/ (tests/fuzz/corpus/fuzz_jinja/).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "model/jinja.h"

static const char VARS[] =
    "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
    "{\"role\":\"user\",\"content\":\"  Hi \\u00e9 \"},"
    "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"call12345\",\"type\":"
    "\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":{\"location\":\"Paris\"}}}]}"
    ","
    "{\"role\":\"tool\",\"tool_call_id\":\"call12345\",\"content\":\"22\"},"
    "{\"role\":\"user\",\"content\":\"<think>x</think>y\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":"
    "\"d\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"location\":{\"type\":\"string\"}}}}}],"
    "\"documents\":null,\"add_generation_prompt\":true,\"bos_token\":\"<s>\",\"eos_token\":\"</"
    "s>\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static cJSON *vars;
    if (!vars && !(vars = cJSON_Parse(VARS))) abort();
    char err[512];
    struct jinja_template *t = NULL;
    int rc = jinja_parse((const char *)data, size, &t, err, sizeof err);
    if (rc != JINJA_OK) {
        if (t || (rc != JINJA_ERR_SYNTAX && rc != JINJA_ERR_NOMEM)) abort();
        return 0;
    }
    const struct jinja_limits lim = {
        .max_output = 1 << 16, .max_steps = 20000, .max_memory = 32 << 20};
    char *out = NULL;
    size_t len = 0;
    rc = jinja_render(t, vars, &lim, &out, &len, err, sizeof err);
    if (rc == JINJA_OK) {
        if (!out || len > lim.max_output || strlen(out) > len || out[len] != '\0') abort();
    } else if (out || (rc != JINJA_ERR_RENDER && rc != JINJA_ERR_NOMEM)) {
        abort();
    }
    free(out);
    jinja_free(t);
    return 0;
}
