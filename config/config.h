/* config.h — the server's configuration: one schema table for every option, three sources.
 *
 * Each option is one row of a table (name, type, default, help, environment name); parsing,
 * --help, the environment and the JSON file all walk that table, so they cannot disagree.
 * Sources apply in order, later wins: built-in default < JSON config file < FLASHGEN_* environment
 * < command-line flags. The file is named by --config (or FLASHGEN_CONFIG); without one, no file
 * is read. Invalid values stop start-up with a message that names the option and the source.
 * Thread-neutral: a config is filled once at start-up and only read afterwards.
 */
#ifndef FG_CONFIG_H
#define FG_CONFIG_H

#include <stddef.h>
#include <stdio.h>

enum config_log_format {
    CONFIG_LOG_TEXT = 0,
    CONFIG_LOG_JSON = 1,
};

enum config_device {
    CONFIG_DEVICE_AUTO = 0,
    CONFIG_DEVICE_CPU = 1,
    CONFIG_DEVICE_CUDA = 2,
};

struct config {
    char *config_file;              /* the JSON file that was read, or NULL */
    char *host;                     /* listen address */
    int port;                       /* listen port; 0 = ephemeral (tests) */
    char *model;                    /* model path (.gguf or HF directory) */
    char *model_id;                 /* name reported by /info and /v1/models; "" = file name */
    int device;                     /* enum config_device */
    int gpu_weights;                /* 0 auto, 1 bf16, 2 quantized (enum engine_gpu_weights) */
    int quantization;               /* 0 none, 1 fp8 (engine_opts.quantization) */
    int threads;                    /* CPU backend threads; 0 = all cores */
    int tensor_parallel;            /* model shards: 1, 2, 4 or 8 (model/tp.h) */
    int kv_cache_mb;                /* KV pool size in MiB; 0 = engine default */
    double kv_fraction;             /* GPU: fraction of free memory for the KV pool */
    int page_size;                  /* tokens per KV page */
    int prefix_caching;             /* reuse cached KV pages of a shared prompt prefix */
    int max_batch_tokens;           /* tokens per iteration (decode tokens + prefill chunks) */
    int max_batch_seqs;             /* sequences per iteration */
    int max_concurrent_requests;    /* queued + running generations; more gives 429 */
    int max_input_tokens;           /* prompt limit; 0 = model context - 1 */
    int max_total_tokens;           /* prompt + new tokens limit; 0 = model context */
    int default_max_new_tokens;     /* when a request gives none */
    int max_stop_sequences;         /* per request */
    int max_body_bytes;             /* request body limit */
    int max_header_bytes;           /* request line + headers limit; more gives 431 */
    int max_connections;            /* open HTTP connections; more wait in the listen backlog */
    int max_connections_per_client; /* open connections from one address; 0 = no limit */
    double request_read_timeout;    /* seconds to receive a whole request; 0 = none */
    double request_timeout;         /* seconds from arrival to the end of generation; 0 = none */
    double queue_timeout;           /* seconds a request may wait for admission; 0 = none */
    double shutdown_grace;          /* seconds to drain in-flight requests on SIGTERM */
    int connection_timeout;         /* seconds without progress before a connection is dropped */
    double sse_ping;          /* seconds between keep-alive comments on an idle stream; 0 = off */
    char *api_key;            /* "" = no authentication */
    char *cors_allow_origins; /* "" = off, "*", or comma-separated origins */
    int log_format;           /* enum config_log_format */
    int log_requests;         /* one line per request */
};

enum config_type {
    CONFIG_T_STRING = 0,
    CONFIG_T_INT = 1,
    CONFIG_T_DOUBLE = 2,
    CONFIG_T_BOOL = 3,
    CONFIG_T_ENUM = 4, /* stored as int: the index into config_option.choices */
};

/* One row of the schema. */
struct config_option {
    const char *name; /* JSON key; the flag is --name with '_' → '-'; env FLASHGEN_NAME */
    enum config_type type;
    size_t offset;              /* into struct config */
    const char *defval;         /* default, as text */
    const char *const *choices; /* CONFIG_T_ENUM: NULL-terminated names (index = stored value) */
    double min, max;            /* numeric bounds (inclusive) */
    const char *help;
};

/* The schema table and its length. */
const struct config_option *config_schema(size_t *n);

/* Fill c with every default (strings are malloc'd). Returns 0 or -1. */
int config_defaults(struct config *c, char *err, size_t errlen);
/* Defaults, then the file, then ENVP (NULL-terminated "K=V" list, or NULL), then ARGV (argv[0]
 * is the command name and is skipped), then config_validate. Returns 0, 1 when --help was asked
 * (nothing else done), or -1 with a message naming the option. */
int config_load(struct config *c, int argc, char **argv, char **envp, char *err, size_t errlen);
/* Apply one value given as text; SOURCE names where it came from for the message. */
int config_set(struct config *c, const char *name, const char *value, const char *source, char *err,
               size_t errlen);
/* Apply a JSON config file (an object keyed by option names). */
int config_load_file(struct config *c, const char *path, char *err, size_t errlen);
/* Checks across the whole configuration once every source is applied: host is a name or
 * address that resolves (getaddrinfo), not ""; model, when it exists, is a regular file or a
 * directory (a FIFO or device would block the loader in open()). Returns 0 or -1. */
int config_validate(const struct config *c, char *err, size_t errlen);
void config_free(struct config *c); /* accepts zeroed and half-filled configs */

/* --help text generated from the schema. */
void config_print_help(FILE *f, const char *prog);
/* The effective configuration as a JSON object string (api_key masked); malloc'd. */
char *config_to_json(const struct config *c);

#endif
