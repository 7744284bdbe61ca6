/* main.c — the flashgen command line: `flashgen serve ...` runs the daemon (server/serve.c),
 * `flashgen generate ...` runs one generation on the engine and streams it to stdout. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/engine.h"
#include "model/generate.h"
#include "server/serve.h"

#define FLASHGEN_VERSION "0.1.0"
#define DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"

static void usage_main(FILE *f) {
    fprintf(f,
            "flashgen %s — LLM inference server\n\n"
            "usage: flashgen COMMAND [options]\n\n"
            "commands:\n"
            "  serve      run the HTTP daemon (flashgen serve --help)\n"
            "  generate   one generation streamed to stdout (flashgen generate --help)\n"
            "  --help     this text\n"
            "  --version  print the version\n",
            FLASHGEN_VERSION);
}

static void usage_generate(FILE *f) {
    fprintf(
        f,
        "usage: flashgen generate [options] --prompt TEXT\n\n"
        "  --model PATH             GGUF file or Hugging Face model directory (default %s)\n"
        "  --prompt TEXT            the prompt (required)\n"
        "  --chat                   wrap the prompt as one user turn of the model's chat template\n"
        "  --system TEXT            system message for --chat (default: the template's own)\n"
        "  --max-new-tokens N       tokens to generate (default 128)\n"
        "  --temperature T          0 = greedy (default 0); > 0 samples\n"
        "  --top-k K                keep the K most likely tokens (default 0 = off)\n"
        "  --top-p P                nucleus sampling mass (default 1 = off)\n"
        "  --repetition-penalty R   penalise tokens already seen (default 1 = off)\n"
        "  --seed S                 sampling seed (default 0)\n"
        "  --ignore-eos             do not stop at end-of-generation tokens\n"
        "  --device auto|cpu|cuda   backend (default auto)\n"
        "  --gpu-weights auto|bf16|quantized\n"
        "                           GPU: GGUF weights as bf16 or resident in their blocks "
        "(default\n"
        "                           auto = bf16)\n"
        "  --quantization none|fp8  GPU: e4m3 copies of the weights for FP8 products (default "
        "none)\n"
        "  --threads N              CPU threads (default 0 = all cores)\n"
        "  --tensor-parallel N      model shards, 1, 2, 4 or 8 (default 1)\n"
        "  --print-ids              print the prompt and generated token ids to stderr\n"
        "  --stats                  print timing to stderr\n",
        DEFAULT_MODEL);
}

static int parse_int(const char *opt, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr,
                "flashgen: invalid value for %s: '%s' (expected an integer in [%ld, %ld])\n", opt,
                s, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_float(const char *opt, const char *s, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || !(v >= lo && v <= hi)) {
        fprintf(stderr, "flashgen: invalid value for %s: '%s' (expected a number in [%g, %g])\n",
                opt, s, lo, hi);
        return -1;
    }
    *out = (float)v;
    return 0;
}

struct print_state {
    const struct tokenizer *tok;
    struct tok_stream stream;
};

static int print_token(int id, void *user) {
    struct print_state *ps = user;
    char buf[256];
    size_t n = tok_stream_push(ps->tok, &ps->stream, id, buf, sizeof(buf));
    if (n) {
        fwrite(buf, 1, n, stdout);
        fflush(stdout);
    }
    return 0;
}

static int cmd_generate(int argc, char **argv) {
    enum {
        O_MODEL = 1,
        O_PROMPT,
        O_CHAT,
        O_SYSTEM,
        O_MAX,
        O_TEMP,
        O_TOPK,
        O_TOPP,
        O_REP,
        O_SEED,
        O_IGNORE_EOS,
        O_DEVICE,
        O_GPU_WEIGHTS,
        O_QUANTIZATION,
        O_THREADS,
        O_TP,
        O_IDS,
        O_STATS,
        O_HELP
    };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},
        {"prompt", required_argument, 0, O_PROMPT},
        {"chat", no_argument, 0, O_CHAT},
        {"system", required_argument, 0, O_SYSTEM},
        {"max-new-tokens", required_argument, 0, O_MAX},
        {"temperature", required_argument, 0, O_TEMP},
        {"top-k", required_argument, 0, O_TOPK},
        {"top-p", required_argument, 0, O_TOPP},
        {"repetition-penalty", required_argument, 0, O_REP},
        {"seed", required_argument, 0, O_SEED},
        {"ignore-eos", no_argument, 0, O_IGNORE_EOS},
        {"device", required_argument, 0, O_DEVICE},
        {"gpu-weights", required_argument, 0, O_GPU_WEIGHTS},
        {"quantization", required_argument, 0, O_QUANTIZATION},
        {"threads", required_argument, 0, O_THREADS},
        {"tensor-parallel", required_argument, 0, O_TP},
        {"print-ids", no_argument, 0, O_IDS},
        {"stats", no_argument, 0, O_STATS},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    struct engine_opts eo;
    engine_opts_default(&eo);
    eo.model_path = DEFAULT_MODEL;
    struct sampler_params sp;
    sampler_params_default(&sp);
    const char *prompt = NULL, *system = NULL;
    int chat = 0, max_new = 128, ignore_eos = 0, print_ids = 0, stats = 0, seed = 0;
    float temperature = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case O_MODEL:
            eo.model_path = optarg;
            break;
        case O_PROMPT:
            prompt = optarg;
            break;
        case O_CHAT:
            chat = 1;
            break;
        case O_SYSTEM:
            system = optarg;
            break;
        case O_MAX:
            bad = parse_int("--max-new-tokens", optarg, 0, 1 << 20, &max_new);
            break;
        case O_TEMP:
            bad = parse_float("--temperature", optarg, 0, 100, &temperature);
            break;
        case O_TOPK:
            bad = parse_int("--top-k", optarg, 0, 1 << 30, &sp.top_k);
            break;
        case O_TOPP:
            bad = parse_float("--top-p", optarg, 1e-6, 1, &sp.top_p);
            break;
        case O_REP:
            bad = parse_float("--repetition-penalty", optarg, 1e-3, 100, &sp.repetition_penalty);
            break;
        case O_SEED:
            bad = parse_int("--seed", optarg, 0, 0x7fffffff, &seed);
            break;
        case O_IGNORE_EOS:
            ignore_eos = 1;
            break;
        case O_DEVICE:
            if (!strcmp(optarg, "auto"))
                eo.device = ENGINE_DEVICE_AUTO;
            else if (!strcmp(optarg, "cpu"))
                eo.device = ENGINE_DEVICE_CPU;
            else if (!strcmp(optarg, "cuda"))
                eo.device = ENGINE_DEVICE_CUDA;
            else {
                fprintf(stderr, "flashgen: invalid value for --device: '%s' (auto|cpu|cuda)\n",
                        optarg);
                bad = 1;
            }
            break;
        case O_GPU_WEIGHTS:
            if (!strcmp(optarg, "auto"))
                eo.gpu_weights = ENGINE_GPU_WEIGHTS_AUTO;
            else if (!strcmp(optarg, "bf16"))
                eo.gpu_weights = ENGINE_GPU_WEIGHTS_BF16;
            else if (!strcmp(optarg, "quantized"))
                eo.gpu_weights = ENGINE_GPU_WEIGHTS_QUANTIZED;
            else {
                fprintf(stderr,
                        "flashgen: invalid value for --gpu-weights: '%s' (auto|bf16|quantized)\n",
                        optarg);
                bad = 1;
            }
            break;
        case O_QUANTIZATION:
            if (!strcmp(optarg, "none") || !strcmp(optarg, "fp8")) {
                eo.quantization = !strcmp(optarg, "fp8");
            } else {
                fprintf(stderr, "flashgen: invalid value for --quantization: '%s' (none|fp8)\n",
                        optarg);
                bad = 1;
            }
            break;
        case O_THREADS:
            bad = parse_int("--threads", optarg, 0, 1024, &eo.n_threads);
            break;
        case O_TP:
            bad = parse_int("--tensor-parallel", optarg, 1, 8, &eo.tensor_parallel);
            break;
        case O_IDS:
            print_ids = 1;
            break;
        case O_STATS:
            stats = 1;
            break;
        case O_HELP:
            usage_generate(stdout);
            return 0;
        default:
            usage_generate(stderr);
            return 2;
        }
        if (bad) return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "flashgen generate: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!prompt) {
        fprintf(stderr, "flashgen generate: --prompt is required\n");
        usage_generate(stderr);
        return 2;
    }
    sp.do_sample = temperature > 0;
    sp.temperature = temperature > 0 ? temperature : 1.0f;
    sp.seed = (uint64_t)seed;

    char err[512];
    struct engine *e = NULL;
    if (engine_open(&eo, &e, err, sizeof(err)) != 0) {
        fprintf(stderr, "flashgen: %s\n", err);
        return 1;
    }
    const struct tokenizer *tok = e->model->tok;
    char *text = NULL;
    if (chat) {
        struct chat_msg msgs[2];
        int n = 0;
        if (system) msgs[n++] = (struct chat_msg){.role = "system", .content = system};
        msgs[n++] = (struct chat_msg){.role = "user", .content = prompt};
        text = chat_template_apply(&e->chat, msgs, n, 1);
    } else {
        text = strdup(prompt);
    }
    int *ids = NULL, n_ids = 0, rc = 1;
    if (!text) {
        fprintf(stderr, "flashgen: out of memory\n");
        goto out;
    }
    if (tokenizer_encode(tok, text, strlen(text), 1, !chat, &ids, &n_ids, err, sizeof(err)) != 0) {
        fprintf(stderr, "flashgen: %s\n", err);
        goto out;
    }
    if (print_ids) {
        fprintf(stderr, "prompt_ids:");
        for (int i = 0; i < n_ids; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    struct print_state ps = {tok, {{0}, 0, 1}};
    tok_stream_init(&ps.stream, 1);
    struct gen_result res;
    if (gen_run(e, ids, n_ids, &sp, max_new, !ignore_eos, print_token, &ps, NULL, &res, err,
                sizeof(err)) != 0) {
        fprintf(stderr, "\nflashgen: %s\n", err);
        goto out;
    }
    char tail[16];
    size_t nt = tok_stream_flush(&ps.stream, tail, sizeof(tail));
    fwrite(tail, 1, nt, stdout);
    fputc('\n', stdout);
    if (print_ids) {
        fprintf(stderr, "generated_ids:");
        for (int i = 0; i < res.n; i++)
            fprintf(stderr, " %d", res.ids[i]);
        fprintf(stderr, "\n");
    }
    if (stats)
        fprintf(stderr,
                "device=%s prompt_tokens=%d prefill=%.3fs (%.1f tok/s) generated=%d "
                "decode=%.3fs (%.1f tok/s) finish=%s\n",
                e->device, n_ids, res.prefill_seconds, n_ids / (res.prefill_seconds + 1e-12), res.n,
                res.decode_seconds, res.n > 1 ? (res.n - 1) / (res.decode_seconds + 1e-12) : 0.0,
                res.finish == GEN_FINISH_EOS ? "eos" : "length");
    gen_result_free(&res);
    rc = 0;
out:
    free(ids);
    free(text);
    engine_close(e);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage_main(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage_main(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("flashgen %s\n", FLASHGEN_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "generate")) return cmd_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve")) return serve_main(argc - 1, argv + 1);
    fprintf(stderr, "flashgen: unknown command '%s'\n", cmd);
    usage_main(stderr);
    return 2;
}
