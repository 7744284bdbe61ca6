/* config.c — the schema table and the three sources (file < FLASHGEN_* environment < flags).
 *
 * Design choice: every option is described exactly once, in SCHEMA below; defaults are text and
 * go through the same parser as user input, so a bad default would fail the unit tests.
 */
#include "config.h"

#include "model/errmsg.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define OFF(f) offsetof(struct config, f)

static const char *const DEVICES[] = {"auto", "cpu", "cuda", NULL}; /* enum config_device */
static const char *const LOG_FORMATS[] = {"text", "json", NULL};    /* enum config_log_format */
static const char *const GPU_WEIGHTS[] = {"auto", "bf16", "quantized", NULL}; /* engine.h */
static const char *const QUANTIZATIONS[] = {"none", "fp8", NULL}; /* engine_opts.quantization */

static const struct config_option SCHEMA[] = {
    {"config", CONFIG_T_STRING, OFF(config_file), "", NULL, 0, 0,
     "JSON configuration file (an object keyed by these option names)"},
    {"host", CONFIG_T_STRING, OFF(host), "127.0.0.1", NULL, 0, 0,
     "address to listen on (0.0.0.0 in the container image)"},
    {"port", CONFIG_T_INT, OFF(port), "8080", NULL, 0, 65535, "TCP port; 0 picks a free one"},
    {"model", CONFIG_T_STRING, OFF(model), "models/SmolLM2-135M-Instruct.Q4_1.gguf", NULL, 0, 0,
     "model: a .gguf file or a Hugging Face checkpoint directory (F32/F16/BF16 safetensors, or "
     "FP8 ones of compressed-tensors / AutoFP8, dequantized at load)"},
    {"model_id", CONFIG_T_STRING, OFF(model_id), "", NULL, 0, 0,
     "model name reported by /info and /v1/models (default: the file name)"},
    {"device", CONFIG_T_ENUM, OFF(device), "auto", DEVICES, 0, 0,
     "compute device; auto takes the GPU when one is usable"},
    {"gpu_weights", CONFIG_T_ENUM, OFF(gpu_weights), "auto", GPU_WEIGHTS, 0, 0,
     "GPU: GGUF weights dequantized to bf16 at load, or kept resident in their blocks where the "
     "GPU kernels read the type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1; Q2_K, Q3_K, Q4_K, Q5_K, Q6_K in "
     "whole 256-blocks; the rest bf16); auto = blocks up to 8 sequences per step or when bf16 "
     "would not fit"},
    {"quantization", CONFIG_T_ENUM, OFF(quantization), "none", QUANTIZATIONS, 0, 0,
     "GPU: fp8 gives the F16/BF16/F32 weights e4m3 copies with per-channel scales, read by W8A8 "
     "GEMMs (per-token activation scales) and an FP8 decode GEMV; the bf16 weights stay resident "
     "too (1.5x the memory); an FP8 checkpoint is re-quantized this way"},
    {"threads", CONFIG_T_INT, OFF(threads), "0", NULL, 0, 1024,
     "CPU backend threads; 0 = all cores"},
    {"tensor_parallel", CONFIG_T_INT, OFF(tensor_parallel), "1", NULL, 1, 8,
     "shards of the model (1, 2, 4 or 8): heads, MLP rows and vocabulary split, two all-reduces "
     "per layer; on one device (CPU or GPU) the shards are emulated there"},
    {"kv_cache_mb", CONFIG_T_INT, OFF(kv_cache_mb), "0", NULL, 0, 1 << 24,
     "KV-cache pool in MiB; 0 = derive (kv_fraction on a GPU, 512 on the CPU)"},
    {"kv_fraction", CONFIG_T_DOUBLE, OFF(kv_fraction), "0.9", NULL, 0.01, 1.0,
     "GPU: fraction of the memory left after the weights given to the KV-cache"},
    {"page_size", CONFIG_T_INT, OFF(page_size), "16", NULL, 1, 4096, "tokens per KV-cache page"},
    {"prefix_caching", CONFIG_T_BOOL, OFF(prefix_caching), "true", NULL, 0, 0,
     "reuse the KV pages of a prompt's longest cached prefix (full pages, chained hashes)"},
    {"max_batch_tokens", CONFIG_T_INT, OFF(max_batch_tokens), "0", NULL, 0, 1 << 20,
     "token budget of one iteration: decode tokens first, then prefill chunks; 0 = by device "
     "(CUDA 1024, CPU 512)"},
    {"max_batch_seqs", CONFIG_T_INT, OFF(max_batch_seqs), "0", NULL, 0, 4096,
     "sequences in one iteration; 0 = by device (CUDA 256, CPU 64)"},
    {"max_concurrent_requests", CONFIG_T_INT, OFF(max_concurrent_requests), "0", NULL, 0, 1 << 20,
     "queued + running generations (each sequence of n > 1 counts); beyond it requests get 429 "
     "at once; 0 = twice max_batch_seqs, at least 128"},
    {"max_input_tokens", CONFIG_T_INT, OFF(max_input_tokens), "0", NULL, 0, 1 << 24,
     "prompt token limit; 0 = model context - 1"},
    {"max_total_tokens", CONFIG_T_INT, OFF(max_total_tokens), "0", NULL, 0, 1 << 24,
     "prompt + new token limit per request; 0 = model context"},
    {"default_max_new_tokens", CONFIG_T_INT, OFF(default_max_new_tokens), "100", NULL, 1, 1 << 24,
     "new tokens when a request names none"},
    {"max_stop_sequences", CONFIG_T_INT, OFF(max_stop_sequences), "4", NULL, 0, 64,
     "stop sequences per request"},
    {"max_body_bytes", CONFIG_T_INT, OFF(max_body_bytes), "2000000", NULL, 64, 1 << 30,
     "request body limit in bytes; larger bodies get 413"},
    {"max_header_bytes", CONFIG_T_INT, OFF(max_header_bytes), "32768", NULL, 1024, 1 << 20,
     "request line + headers limit in bytes; larger get 431"},
    {"max_connections", CONFIG_T_INT, OFF(max_connections), "1024", NULL, 1, 1 << 20,
     "open HTTP connections (each costs a file descriptor); more wait in the listen backlog; 1/32 "
     "are kept free by closing the connection that has waited longest for its request"},
    {"max_connections_per_client", CONFIG_T_INT, OFF(max_connections_per_client), "256", NULL, 0,
     1 << 20,
     "open HTTP connections from one client address (more are closed at once), so one client "
     "cannot take every slot; behind a reverse proxy all clients share its address; 0 = no limit"},
    {"request_read_timeout", CONFIG_T_DOUBLE, OFF(request_read_timeout), "30", NULL, 0, 1e7,
     "seconds a connection has to send a whole request (headers and body), counted from its "
     "opening or its previous reply, however slowly it trickles; then it is dropped; 0 = none"},
    {"request_timeout", CONFIG_T_DOUBLE, OFF(request_timeout), "600", NULL, 0, 1e7,
     "seconds from arrival to the end of a generation; 0 = none"},
    {"queue_timeout", CONFIG_T_DOUBLE, OFF(queue_timeout), "60", NULL, 0, 1e7,
     "seconds a request may wait for admission; 0 = none"},
    {"shutdown_grace", CONFIG_T_DOUBLE, OFF(shutdown_grace), "30", NULL, 0, 1e7,
     "seconds SIGTERM/SIGINT waits for in-flight requests before cancelling them"},
    {"connection_timeout", CONFIG_T_INT, OFF(connection_timeout), "60", NULL, 1, 1 << 20,
     "seconds a connection may make no progress (a request that is not sent, a reply that is "
     "not read, an idle keep-alive) before it is dropped; waiting for a generation does not "
     "count"},
    {"sse_ping", CONFIG_T_DOUBLE, OFF(sse_ping), "15", NULL, 0, 3600,
     "seconds between keep-alive comments on an idle event stream (queue wait, long prefill), "
     "so proxies keep it open; 0 = off"},
    {"api_key", CONFIG_T_STRING, OFF(api_key), "", NULL, 0, 0,
     "require 'Authorization: Bearer KEY' (except /health and /metrics); empty = open"},
    {"cors_allow_origins", CONFIG_T_STRING, OFF(cors_allow_origins), "", NULL, 0, 0,
     "origins browsers may call from (CORS): \"*\" or a comma-separated list like "
     "\"https://a.example,http://localhost:3000\"; empty = no CORS headers"},
    {"log_format", CONFIG_T_ENUM, OFF(log_format), "text", LOG_FORMATS, 0, 0, "log line format"},
    {"log_requests", CONFIG_T_BOOL, OFF(log_requests), "true", NULL, 0, 0,
     "one log line per request"},
};

#define N_SCHEMA (sizeof SCHEMA / sizeof SCHEMA[0])

const struct config_option *config_schema(size_t *n) {
    if (n) *n = N_SCHEMA;
    return SCHEMA;
}

/* "max_batch_tokens" matches "max_batch_tokens", "max-batch-tokens" and case variants. */
static int name_eq(const char *schema, const char *given, size_t glen) {
    size_t i = 0;
    for (; i < glen && schema[i]; i++) {
        char g = given[i] == '-' ? '_' : (char)tolower((unsigned char)given[i]);
        if (g != schema[i]) return 0;
    }
    return i == glen && schema[i] == 0;
}

static const struct config_option *find_opt(const char *name, size_t len) {
    for (size_t i = 0; i < N_SCHEMA; i++)
        if (name_eq(SCHEMA[i].name, name, len)) return &SCHEMA[i];
    return NULL;
}

static int enum_index(const char *const *choices, const char *v) {
    for (int i = 0; choices[i]; i++)
        if (!strcasecmp(choices[i], v)) return i;
    return -1;
}

/* "a|b|c" for messages and --help. */
static const char *choices_text(const char *const *choices, char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; choices[i] && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? "|" : "", choices[i]);
    return buf;
}

static int set_opt(struct config *c, const struct config_option *o, const char *v,
                   const char *source, char *err, size_t errlen) {
    char *field = (char *)c + o->offset;
    char *end = NULL;
    switch (o->type) {
    case CONFIG_T_STRING: {
        char *s = strdup(v);
        if (!s) {
            errmsg_set(err, errlen, "out of memory");
            return -1;
        }
        free(*(char **)field);
        *(char **)field = s;
        return 0;
    }
    case CONFIG_T_INT: {
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end || x < (long long)o->min || x > (long long)o->max) {
            errmsg_set(err, errlen,
                       "invalid value '%s' for option %s (%s): expected an integer in [%g, %g]", v,
                       o->name, source, o->min, o->max);
            return -1;
        }
        *(int *)field = (int)x;
        return 0;
    }
    case CONFIG_T_DOUBLE: {
        errno = 0;
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x) || x < o->min || x > o->max) {
            errmsg_set(err, errlen,
                       "invalid value '%s' for option %s (%s): expected a number in [%g, %g]", v,
                       o->name, source, o->min, o->max);
            return -1;
        }
        *(double *)field = x;
        return 0;
    }
    case CONFIG_T_BOOL: {
        int b = -1;
        if (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes") ||
            !strcasecmp(v, "on"))
            b = 1;
        else if (!strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "no") ||
                 !strcasecmp(v, "off"))
            b = 0;
        if (b < 0) {
            errmsg_set(err, errlen, "invalid value '%s' for option %s (%s): expected true or false",
                       v, o->name, source);
            return -1;
        }
        *(int *)field = b;
        return 0;
    }
    case CONFIG_T_ENUM: {
        int idx = enum_index(o->choices, v);
        if (idx < 0) {
            char ch[128];
            errmsg_set(err, errlen, "invalid value '%s' for option %s (%s): expected one of %s", v,
                       o->name, source, choices_text(o->choices, ch, sizeof ch));
            return -1;
        }
        *(int *)field = idx;
        return 0;
    }
    }
    return -1;
}

int config_set(struct config *c, const char *name, const char *value, const char *source, char *err,
               size_t errlen) {
    const struct config_option *o = find_opt(name, strlen(name));
    if (!o) {
        errmsg_set(err, errlen, "unknown option '%s' (%s)", name, source);
        return -1;
    }
    return set_opt(c, o, value, source, err, errlen);
}

void config_free(struct config *c) {
    if (!c) return;
    for (size_t i = 0; i < N_SCHEMA; i++) {
        if (SCHEMA[i].type != CONFIG_T_STRING) continue;
        char **p = (char **)((char *)c + SCHEMA[i].offset);
        free(*p);
        *p = NULL;
    }
}

int config_defaults(struct config *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_SCHEMA; i++)
        if (set_opt(c, &SCHEMA[i], SCHEMA[i].defval, "default", err, errlen)) return -1;
    free(c->config_file);
    c->config_file = NULL;
    return 0;
}

int config_load_file(struct config *c, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        errmsg_set(err, errlen, "config file %s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                errmsg_set(err, errlen, "config file %s: out of memory", path);
                return -1;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    fclose(f);
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        errmsg_set(err, errlen, "config file %s: not a JSON object", path);
        return -1;
    }
    char source[300];
    snprintf(source, sizeof source, "config file %s", path);
    int rc = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        if (it->string && it->string[0] == '_') continue; /* "_comment" keys */
        const struct config_option *o = find_opt(it->string, strlen(it->string));
        if (!o || o->offset == OFF(config_file)) {
            errmsg_set(err, errlen, "unknown option '%s' (%s)", it->string, source);
            rc = -1;
            break;
        }
        char num[64];
        const char *v = NULL;
        if (cJSON_IsString(it))
            v = it->valuestring;
        else if (cJSON_IsBool(it))
            v = cJSON_IsTrue(it) ? "true" : "false";
        else if (cJSON_IsNumber(it)) {
            if (o->type == CONFIG_T_INT && it->valuedouble == floor(it->valuedouble))
                snprintf(num, sizeof num, "%.0f", it->valuedouble);
            else
                snprintf(num, sizeof num, "%.17g", it->valuedouble);
            v = num;
        } else if (cJSON_IsNull(it))
            continue;
        if (!v) {
            errmsg_set(err, errlen,
                       "invalid value for option %s (%s): expected a string, number or bool",
                       o->name, source);
            rc = -1;
            break;
        }
        if (set_opt(c, o, v, source, err, errlen)) {
            rc = -1;
            break;
        }
    }
    cJSON_Delete(root);
    if (rc == 0) {
        free(c->config_file);
        c->config_file = strdup(path);
    }
    return rc;
}

/* Environment name of an option: FLASHGEN_ + upper-case name. */
static void env_name(const struct config_option *o, char *out, size_t cap) {
    size_t n = (size_t)snprintf(out, cap, "FLASHGEN_");
    for (const char *p = o->name; *p && n + 1 < cap; p++)
        out[n++] = (char)toupper((unsigned char)*p);
    out[n] = 0;
}

static const char *env_get(char **envp, const char *name) {
    if (!envp) return NULL;
    size_t nl = strlen(name);
    for (char **e = envp; *e; e++)
        if (!strncmp(*e, name, nl) && (*e)[nl] == '=') return *e + nl + 1;
    return NULL;
}

static const char *const BOOL_WORDS[] = {"true", "false", "1", "0", "yes", "no", "on", "off", NULL};

int config_load(struct config *c, int argc, char **argv, char **envp, char *err, size_t errlen) {
    if (config_defaults(c, err, errlen)) return -1;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;

    /* 1. the file: --config on the command line wins over FLASHGEN_CONFIG. */
    const char *file = env_get(envp, "FLASHGEN_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            file = argv[i + 1];
        else if (!strncmp(argv[i], "--config=", 9))
            file = argv[i] + 9;
    }
    if (file && *file && config_load_file(c, file, err, errlen)) return -1;

    /* 2. the environment. */
    char name[96];
    for (size_t i = 0; i < N_SCHEMA; i++) {
        if (SCHEMA[i].offset == OFF(config_file)) continue;
        env_name(&SCHEMA[i], name, sizeof name);
        const char *v = env_get(envp, name);
        char source[128];
        snprintf(source, sizeof source, "environment %s", name);
        if (v && set_opt(c, &SCHEMA[i], v, source, err, errlen)) return -1;
    }

    /* 3. flags: --name VALUE or --name=VALUE; a bool may stand alone (--log-requests) or be
     * negated (--no-log-requests). */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2)) {
            errmsg_set(err, errlen, "unexpected argument '%s' (options start with --; see --help)",
                       a);
            return -1;
        }
        a += 2;
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        int negate = 0;
        const struct config_option *o = find_opt(a, nl);
        if (!o && nl > 3 && !strncmp(a, "no-", 3)) {
            o = find_opt(a + 3, nl - 3);
            if (o && o->type != CONFIG_T_BOOL) o = NULL;
            negate = 1;
        }
        if (!o) {
            errmsg_set(err, errlen, "unknown option '--%.*s' (see --help)", (int)nl, a);
            return -1;
        }
        const char *v;
        if (eq)
            v = eq + 1;
        else if (o->type == CONFIG_T_BOOL && (i + 1 >= argc || !strncmp(argv[i + 1], "--", 2) ||
                                              enum_index(BOOL_WORDS, argv[i + 1]) < 0))
            v = negate ? "false" : "true";
        else if (i + 1 < argc)
            v = argv[++i];
        else {
            errmsg_set(err, errlen, "option --%s needs a value", o->name);
            return -1;
        }
        if (o->offset == OFF(config_file)) continue; /* already applied */
        char source[128];
        snprintf(source, sizeof source, "flag --%.*s", (int)nl, a);
        if (set_opt(c, o, v, source, err, errlen)) return -1;
    }
    return config_validate(c, err, errlen);
}

int config_validate(const struct config *c, char *err, size_t errlen) {
    if (!c->host || !*c->host) {
        errmsg_set(err, errlen,
                   "option host is empty: give an address or name to listen on (0.0.0.0 for every "
                   "interface)");
        return -1;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo(c->host, NULL, &hints, &ai);
    if (gai) {
        errmsg_set(err, errlen, "invalid value '%s' for option host: %s", c->host,
                   gai_strerror(gai));
        return -1;
    }
    freeaddrinfo(ai);
    if (c->tensor_parallel != 1 && c->tensor_parallel != 2 && c->tensor_parallel != 4 &&
        c->tensor_parallel != 8) {
        errmsg_set(err, errlen, "invalid value %d for option tensor_parallel: must be 1, 2, 4 or 8",
                   c->tensor_parallel);
        return -1;
    }
    struct stat st;
    if (c->model && stat(c->model, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
        errmsg_set(
            err, errlen,
            "invalid value '%s' for option model: not a regular file or a directory (a FIFO, "
            "socket or device)",
            c->model);
        return -1;
    }
    return 0;
}

void config_print_help(FILE *f, const char *prog) {
    fprintf(f,
            "usage: %s serve [options]\n\n"
            "Every option can be given as a flag (--name VALUE or --name=VALUE, '-' or '_'),\n"
            "as an environment variable (FLASHGEN_NAME) or in the JSON file named by --config.\n"
            "Later sources win: file < environment < flags.\n\noptions:\n",
            prog);
    char env[96], flag[96], ch[128];
    for (size_t i = 0; i < N_SCHEMA; i++) {
        const struct config_option *o = &SCHEMA[i];
        size_t n = 0;
        for (const char *p = o->name; *p && n + 1 < sizeof flag; p++)
            flag[n++] = *p == '_' ? '-' : *p;
        flag[n] = 0;
        env_name(o, env, sizeof env);
        const char *t = o->type == CONFIG_T_STRING   ? "STR"
                        : o->type == CONFIG_T_INT    ? "INT"
                        : o->type == CONFIG_T_DOUBLE ? "NUM"
                        : o->type == CONFIG_T_BOOL   ? "BOOL"
                                                     : choices_text(o->choices, ch, sizeof ch);
        fprintf(f, "  --%s %s\n      %s\n      default: %s%s%s  env: %s\n", flag, t, o->help,
                o->defval[0] ? "" : "\"", o->defval, o->defval[0] ? "" : "\"", env);
    }
}

/* Name of an enum value, e.g. config_enum_name("device", 1) = "cpu"; NULL if unknown. */
static const char *config_enum_name(const char *option, int value) {
    const struct config_option *o = find_opt(option, strlen(option));
    if (!o || o->type != CONFIG_T_ENUM || value < 0) return NULL;
    for (int i = 0; o->choices[i]; i++)
        if (i == value) return o->choices[i];
    return NULL;
}

char *config_to_json(const struct config *c) {
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; i < N_SCHEMA; i++) {
        const struct config_option *s = &SCHEMA[i];
        const char *field = (const char *)c + s->offset;
        switch (s->type) {
        case CONFIG_T_STRING: {
            const char *v = *(char *const *)field;
            if (s->offset == OFF(api_key) && v && *v) v = "***";
            if (v)
                cJSON_AddStringToObject(o, s->name, v);
            else
                cJSON_AddNullToObject(o, s->name);
            break;
        }
        case CONFIG_T_INT:
            cJSON_AddNumberToObject(o, s->name, *(const int *)field);
            break;
        case CONFIG_T_DOUBLE:
            cJSON_AddNumberToObject(o, s->name, *(const double *)field);
            break;
        case CONFIG_T_BOOL:
            cJSON_AddBoolToObject(o, s->name, *(const int *)field);
            break;
        case CONFIG_T_ENUM:
            cJSON_AddStringToObject(o, s->name, config_enum_name(s->name, *(const int *)field));
            break;
        }
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}
