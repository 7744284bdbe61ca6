/* test_config.c — the configuration schema: defaults, the three sources and their order
 * (file < FLASHGEN_* environment < flags), invalid values naming the option, --help from the
 * table, and config/flashgen.json agreeing with the built-in defaults. */
#include <criterion/criterion.h>

#include "config/config.h"
#include "model/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *scratch(const char *name, const char *content) {
    static char path[256];
    mkdir("tests/tmp", 0755);
    snprintf(path, sizeof path, "tests/tmp/%s", name);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(content, f);
    fclose(f);
    return path;
}

Test(config, defaults) {
    struct config c;
    char err[256];
    cr_assert_eq(config_defaults(&c, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(c.host, "127.0.0.1");
    cr_assert_eq(c.port, 8080);
    cr_assert_str_eq(c.model, "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    cr_assert_eq(c.device, CONFIG_DEVICE_AUTO);
    cr_assert_eq(c.max_batch_tokens, 0); /* by device (model/engine.c) */
    cr_assert_eq(c.max_concurrent_requests, 0);
    cr_assert_float_eq(c.kv_fraction, 0.9, 1e-12);
    cr_assert_eq(c.log_requests, 1);
    cr_assert_eq(c.log_format, CONFIG_LOG_TEXT);
    cr_assert_null(c.config_file);
    config_free(&c);
}

Test(config, sources_in_order) {
    const char *file = scratch("cfg_order.json", "{\"port\": 9000, \"max_batch_tokens\": 64, "
                                                 "\"device\": \"cpu\", \"api_key\": \"file\"}");
    char fileflag[300];
    snprintf(fileflag, sizeof fileflag, "--config=%s", file);
    char *argv[] = {
        "serve", fileflag, "--max-batch-tokens", "128", "--log_format=json", "--no-log-requests"};
    char *envp[] = {"FLASHGEN_PORT=9100", "FLASHGEN_MAX_BATCH_TOKENS=96", "FLASHGEN_API_KEY=env",
                    "UNRELATED=1", NULL};
    struct config c;
    char err[256];
    cr_assert_eq(config_load(&c, 6, argv, envp, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.port, 9100);            /* env over file */
    cr_assert_eq(c.max_batch_tokens, 128); /* flag over env over file */
    cr_assert_eq(c.device, CONFIG_DEVICE_CPU);
    cr_assert_str_eq(c.api_key, "env");
    cr_assert_eq(c.log_format, CONFIG_LOG_JSON);
    cr_assert_eq(c.log_requests, 0);
    cr_assert_str_eq(c.config_file, file);
    config_free(&c);
}

/* --gpu-weights takes the names of enum engine_gpu_weights in its order (worker.c casts) */
Test(config, gpu_weights_values) {
    const char *names[] = {"auto", "bf16", "quantized"};
    const int want[] = {ENGINE_GPU_WEIGHTS_AUTO, ENGINE_GPU_WEIGHTS_BF16,
                        ENGINE_GPU_WEIGHTS_QUANTIZED};
    for (int i = 0; i < 3; i++) {
        char *argv[] = {"serve", "--gpu-weights", (char *)names[i]};
        struct config c;
        char err[256];
        cr_assert_eq(config_load(&c, 3, argv, NULL, err, sizeof err), 0, "%s", err);
        cr_assert_eq(c.gpu_weights, want[i], "%s", names[i]);
        config_free(&c);
    }
}

/* --quantization: none or fp8, in engine_opts.quantization's order; anything else is refused */
Test(config, quantization_values) {
    const char *names[] = {"none", "fp8"};
    for (int i = 0; i < 2; i++) {
        char *argv[] = {"serve", "--quantization", (char *)names[i]};
        struct config c;
        char err[256];
        cr_assert_eq(config_load(&c, 3, argv, NULL, err, sizeof err), 0, "%s", err);
        cr_assert_eq(c.quantization, i, "%s", names[i]);
        config_free(&c);
    }
    char *bad[] = {"serve", "--quantization", "int4"};
    struct config c;
    char err[256];
    cr_assert_neq(config_load(&c, 3, bad, NULL, err, sizeof err), 0);
    cr_assert(strstr(err, "quantization"), "%s", err);
}

Test(config, config_from_env) {
    const char *file = scratch("cfg_env.json", "{\"threads\": 3}");
    char envv[300];
    snprintf(envv, sizeof envv, "FLASHGEN_CONFIG=%s", file);
    char *envp[] = {envv, NULL};
    char *argv[] = {"serve"};
    struct config c;
    char err[256];
    cr_assert_eq(config_load(&c, 1, argv, envp, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.threads, 3);
    config_free(&c);
}

static void expect_fail(int argc, char **argv, char **envp, const char *needle) {
    struct config c;
    char err[256] = "";
    cr_assert_eq(config_load(&c, argc, argv, envp, err, sizeof err), -1);
    cr_assert(strstr(err, needle), "message '%s' should contain '%s'", err, needle);
    config_free(&c);
}

Test(config, invalid_values_name_the_option) {
    char *a1[] = {"serve", "--port", "70000"};
    expect_fail(3, a1, NULL, "port");
    char *a2[] = {"serve", "--device", "tpu"};
    expect_fail(3, a2, NULL, "device");
    char *a3[] = {"serve", "--kv-fraction", "abc"};
    expect_fail(3, a3, NULL, "kv_fraction");
    char *a4[] = {"serve", "--no-such-option", "1"};
    expect_fail(3, a4, NULL, "no-such-option");
    char *a5[] = {"serve", "--port"};
    expect_fail(2, a5, NULL, "port");
    char *a6[] = {"serve", "stray"};
    expect_fail(2, a6, NULL, "stray");
    char *a_gw[] = {"serve", "--gpu-weights", "int3"};
    expect_fail(3, a_gw, NULL, "gpu_weights");
    char *e1[] = {"FLASHGEN_MAX_BATCH_SEQS=-1", NULL};
    char *a7[] = {"serve"};
    expect_fail(1, a7, e1, "FLASHGEN_MAX_BATCH_SEQS");
    const char *bad = scratch("cfg_bad.json", "{\"log_requests\": \"maybe\"}");
    char flag[300];
    snprintf(flag, sizeof flag, "--config=%s", bad);
    char *a8[] = {"serve", flag};
    expect_fail(2, a8, NULL, "log_requests");
    const char *unknown = scratch("cfg_unknown.json", "{\"prot\": 1}");
    snprintf(flag, sizeof flag, "--config=%s", unknown);
    char *a9[] = {"serve", flag};
    expect_fail(2, a9, NULL, "prot");
    const char *notjson = scratch("cfg_notjson.json", "port = 1");
    snprintf(flag, sizeof flag, "--config=%s", notjson);
    char *a10[] = {"serve", flag};
    expect_fail(2, a10, NULL, "not a JSON object");
    char *a11[] = {"serve", "--config", "tests/tmp/does-not-exist.json"};
    expect_fail(3, a11, NULL, "does-not-exist");
}

Test(config, help_lists_every_option) {
    char *argv[] = {"serve", "--port", "1", "--help"};
    struct config c;
    char err[256];
    cr_assert_eq(config_load(&c, 4, argv, NULL, err, sizeof err), 1);
    config_free(&c);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    config_print_help(f, "flashgen");
    fclose(f);
    size_t n;
    const struct config_option *o = config_schema(&n);
    for (size_t i = 0; i < n; i++) {
        char flag[96], env[96];
        size_t k = 0;
        for (const char *p = o[i].name; *p; p++)
            flag[k++] = *p == '_' ? '-' : *p;
        flag[k] = 0;
        char want[120];
        snprintf(want, sizeof want, "--%s ", flag);
        cr_assert(strstr(buf, want), "help lacks %s", want);
        k = 0;
        for (const char *p = o[i].name; *p; p++)
            env[k++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        env[k] = 0;
        snprintf(want, sizeof want, "FLASHGEN_%s", env);
        cr_assert(strstr(buf, want), "help lacks %s", want);
        cr_assert(strstr(buf, o[i].help), "help lacks the text of %s", o[i].name);
    }
    free(buf);
}

/* The shipped config file states exactly the built-in defaults. */
Test(config, default_file_matches_defaults) {
    struct config d, f;
    char err[256];
    cr_assert_eq(config_defaults(&d, err, sizeof err), 0);
    cr_assert_eq(config_defaults(&f, err, sizeof err), 0);
    cr_assert_eq(config_load_file(&f, "config/flashgen.json", err, sizeof err), 0, "%s", err);
    free(f.config_file);
    f.config_file = NULL; /* the only field the file itself sets */
    char *a = config_to_json(&d), *b = config_to_json(&f);
    cr_assert_str_eq(a, b);
    free(a), free(b);
    /* and every option is in the file */
    FILE *fp = fopen("config/flashgen.json", "r");
    cr_assert(fp);
    char text[8192];
    size_t len = fread(text, 1, sizeof text - 1, fp);
    text[len] = 0;
    fclose(fp);
    size_t n;
    const struct config_option *o = config_schema(&n);
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(o[i].name, "config")) continue;
        char key[96];
        snprintf(key, sizeof key, "\"%s\"", o[i].name);
        cr_assert(strstr(text, key), "config/flashgen.json lacks %s", key);
    }
    config_free(&d), config_free(&f);
}

Test(config, api_key_masked_in_json) {
    struct config c;
    char err[256];
    cr_assert_eq(config_defaults(&c, err, sizeof err), 0);
    cr_assert_eq(config_set(&c, "api_key", "secret", "test", err, sizeof err), 0);
    char *j = config_to_json(&c);
    cr_assert_null(strstr(j, "secret"));
    cr_assert(strstr(j, "\"device\":\"auto\""));
    free(j);
    config_free(&c);
}

/* Checks across the whole configuration (issue 11): an empty host used to bind every interface,
 * a name was refused, and a FIFO as the model blocked the loader in open() forever. */
Test(config, validate_host_and_model) {
    char *a1[] = {"serve", "--host", ""};
    expect_fail(3, a1, NULL, "host is empty");
    char *a2[] = {"serve", "--host", "no-such-host.invalid"};
    expect_fail(3, a2, NULL, "no-such-host.invalid");
    char *e1[] = {"FLASHGEN_HOST=", NULL};
    char *a3[] = {"serve"};
    expect_fail(1, a3, e1, "host");
    mkdir("tests/tmp", 0755);
    const char *fifo = "tests/tmp/cfg_fifo.gguf";
    unlink(fifo);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    char *a4[] = {"serve", "--model", (char *)fifo};
    expect_fail(3, a4, NULL, "not a regular file");
    unlink(fifo);

    struct config c;
    char err[256];
    char *ok[] = {"serve", "--host", "localhost", "--model", "tests/tmp/absent.gguf"};
    cr_assert_eq(config_load(&c, 5, ok, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(c.host, "localhost");
    config_free(&c);
    char *v6[] = {"serve", "--host", "::1", "--model", "tests/tmp"};
    cr_assert_eq(config_load(&c, 5, v6, NULL, err, sizeof err), 0, "%s", err);
    config_free(&c);
}

Test(config, slow_client_limits) {
    struct config c;
    char err[256];
    cr_assert_eq(config_defaults(&c, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.max_connections_per_client, 256);
    cr_assert_float_eq(c.request_read_timeout, 30, 1e-12);
    config_free(&c);
    char *argv[] = {"serve", "--max-connections-per-client", "8", "--request-read-timeout", "2.5"};
    cr_assert_eq(config_load(&c, 5, argv, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.max_connections_per_client, 8);
    cr_assert_float_eq(c.request_read_timeout, 2.5, 1e-12);
    config_free(&c);
    char *bad[] = {"serve", "--request-read-timeout", "-1"};
    expect_fail(3, bad, NULL, "request_read_timeout");
}
