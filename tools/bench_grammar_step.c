/* bench_grammar_step.c — what constrained decoding adds to a decode step (issue 15, "Masks
 * cost"): the engine step the worker runs (server/worker.c, iterate), at R decode rows, with
 * every row under a JSON Schema and without.
 *
 *   bench_grammar_step --model M.gguf [--device cuda|cpu] [--rows 1,64,256] [--steps 32]
 *                      [--context 64] [--threads N] [--schema bounded|free] [--show]
 *
 * One model load; for each row count R, R sequences are prefilled with CONTEXT tokens of their
 * own (distinct prompts, so the rows' picks differ), then each mode runs STEPS decode steps from
 * the same point (the sequence lengths reset between modes), every step what the worker does:
 *   fwd_run queued (logits left on the device) -> the rows' masks on the host while the pass
 *   runs -> fwd_mask (only the bitmasks travel) -> greedy fwd_sample (waits for the step) ->
 *   each matcher advanced by its token.
 * Modes:
 *   none               no grammar: the decode step alone (run first and last; the mean of both
 *                      is what the others are compared with);
 *   shared             one schema for every row, the worker's shared mask cache and its call
 *                      (grammar_mask_rows: one mask per distinct state, the states spread over
 *                      the pool one at a time);
 *   shared, per row    the same schema, each row's mask computed by its own matcher on static
 *                      chunks of rows (the worker before grammar_mask_rows), for the A/B;
 *   distinct           row i has its own schema (property names carry i): nothing is shared
 *                      between rows, every row walks its own states (the pool figure);
 *   distinct, per row  the same on static chunks.
 * Two unconstrained steps first, with every token allowed through fwd_mask: the decode graph
 * and the backend's mask buffers of this row count are made there (before, the first
 * constrained mode of a row count paid the pinned buffer's allocation in its fwd_mask column).
 * Each constrained mode starts with fresh matchers and an empty shared cache (the first
 * requests of a schema pay its walks, and those steps are timed too). A row whose document is
 * complete (or that picked an end token) starts over as a new request of its schema. Every
 * picked token is checked against the row's grammar: "refused" must be 0 (a mask the backend
 * did not apply would show here), "dead" counts rows whose state allowed no token.
 * Printed per mode: ms per step (mean, p50, max over the steps), host mask ms per step (the
 * call that computes the masks), distinct states per step, overhead % of the mean step against
 * `none`, the slowest step's mask call ("mask max": where it passes the forward pass, the step
 * waits for it). --show prints row 0's output in each constrained mode. bench/grammar.md has the
 * figures and bench/grammar_device.sh the device call.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "kernels/cpu_pool.h"
#include "kernels/sample.h"
#include "model/engine.h"
#include "model/grammar.h"
#include "model/sampler.h"
#include "model/tokenizer.h"

#define MAX_STEPS 4096

/* The schemas; %1$s is the row's suffix of the property names ("" when shared).
 * bounded: strings with maxLength, so a noise model moves through the whole document and meets a
 *   new state nearly every token (each position in a bounded string is a state of its own): the
 *   hard case for the caches;
 * free: the shape of the OpenAI guide's examples (strings without bounds), where a noise model
 *   spends most tokens inside a string, one state again and again: the common case. */
static const struct {
    const char *name, *fmt;
} SCHEMAS[] = {
    {"bounded",
     "{\"type\":\"object\",\"properties\":{"
     "\"id%1$s\":{\"type\":\"integer\"},"
     "\"name%1$s\":{\"type\":\"string\",\"maxLength\":24},"
     "\"kind%1$s\":{\"enum\":[\"person\",\"place\",\"thing\",\"event\"]},"
     "\"active%1$s\":{\"type\":\"boolean\"},"
     "\"tags%1$s\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":12},"
     "\"maxItems\":4},"
     "\"score%1$s\":{\"type\":\"number\"},"
     "\"owner%1$s\":{\"type\":\"object\",\"properties\":{\"first\":{\"type\":\"string\","
     "\"maxLength\":16},\"age\":{\"type\":\"integer\"}},\"required\":[\"first\",\"age\"],"
     "\"additionalProperties\":false}},"
     "\"required\":[\"id%1$s\",\"name%1$s\",\"kind%1$s\",\"active%1$s\",\"tags%1$s\","
     "\"score%1$s\",\"owner%1$s\"],\"additionalProperties\":false}"},
    {"free", "{\"type\":\"object\",\"properties\":{\"name%1$s\":{\"type\":\"string\"},"
             "\"date%1$s\":{\"type\":\"string\"},\"participants%1$s\":{\"type\":\"array\","
             "\"items\":{\"type\":\"string\"}},\"done%1$s\":{\"type\":\"boolean\"}},"
             "\"required\":[\"name%1$s\",\"date%1$s\",\"participants%1$s\",\"done%1$s\"],"
             "\"additionalProperties\":false}"},
};
#define N_SCHEMAS (int)(sizeof(SCHEMAS) / sizeof(SCHEMAS[0]))

enum mode { MODE_NONE, MODE_SHARED, MODE_SHARED_ROWS, MODE_DISTINCT, MODE_DISTINCT_ROWS };
static const char *const MODE_NAMES[] = {"none", "shared", "shared, per row", "distinct",
                                         "distinct, per row"};
static const enum mode ORDER[] = {MODE_NONE,     MODE_SHARED,        MODE_SHARED_ROWS,
                                  MODE_DISTINCT, MODE_DISTINCT_ROWS, MODE_NONE};
#define N_ORDER (int)(sizeof(ORDER) / sizeof(ORDER[0]))

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct run {
    struct engine *e;
    struct grammar_vocab *gv;
    struct cpu_pool *pool;
    int R, context, steps;
    struct kv_seq *seqs; /* (R) */
    struct fwd_seq *fs;  /* (R) */
    int *tok, *first;    /* (R) the next input token; the one after the prompt */
    struct fg_sample_row *rows;
    int *ids;
    float *lps;
    struct grammar **g;               /* (R) row i's grammar (shared: all the same object) */
    struct grammar_matcher **m;       /* (R) */
    uint32_t *masks;                  /* (R, words) */
    int *count, *use;                 /* (R) */
    struct grammar_matcher **adv_m;   /* (R) the rows advanced by their picks */
    int *adv_rc;                      /* (R) */
    struct grammar_mask_cache *cache; /* this mode's shared cache */
    int show;                         /* print row 0's text of each constrained mode */
    int prime; /* the warm-up: fwd_mask with every token allowed, so the backend's mask buffers
                  (pinned host and device, grown at the first mask of a row count) are not
                  allocated inside the first constrained mode's timed steps */
    const char *schema; /* the format of this table's schemas */
};

struct result {
    double mean, p50, max, mask_ms, mask_max, upload_ms, accept_ms, states;
    long refused, dead, docs;
};

/* The masks the worker's old path computed: each row by its own matcher, static chunks. */
struct chunk_job {
    struct run *r;
    size_t words;
};
static void per_row_chunk(void *arg, size_t b, size_t e) {
    struct chunk_job *j = arg;
    for (size_t i = b; i < e; i++)
        j->r->count[i] = grammar_mask(j->r->m[i], j->r->gv, j->r->masks + i * j->words);
}

static int new_matcher(struct run *r, int i) {
    grammar_matcher_free(r->m[i]);
    r->m[i] = grammar_matcher_new(r->g[i]);
    if (!r->m[i]) return -1;
    grammar_matcher_share(r->m[i], r->cache);
    return 0;
}

/* STEPS decode steps of mode MD from the prefilled point. */
static int run_mode(struct run *r, enum mode md, struct result *res, char *err, size_t errlen) {
    struct engine *e = r->e;
    size_t words = grammar_mask_words(r->gv);
    int constrained = md != MODE_NONE, per_row = md == MODE_SHARED_ROWS || md == MODE_DISTINCT_ROWS;
    memset(res, 0, sizeof *res);
    if (constrained) {
        r->cache = grammar_mask_cache_new(r->gv, (size_t)64 << 20); /* the worker's size */
        if (!r->cache) return snprintf(err, errlen, "out of memory"), -1;
        int distinct = md == MODE_DISTINCT || md == MODE_DISTINCT_ROWS;
        size_t cap = strlen(r->schema) + 32 * 16; /* at most 16 suffixes of 31 bytes */
        char suffix[32], *text = malloc(cap);
        for (int i = 0; i < r->R; i++) {
            if (!text) return snprintf(err, errlen, "out of memory"), -1;
            if (i == 0 || distinct) {
                snprintf(suffix, sizeof suffix, distinct ? "_%d" : "", i);
                snprintf(text, cap, r->schema, suffix);
                cJSON *j = cJSON_Parse(text);
                char kw[64];
                r->g[i] = j ? grammar_from_json_schema(j, err, errlen, kw, sizeof kw) : NULL;
                cJSON_Delete(j);
                if (!r->g[i]) return free(text), -1;
            } else {
                r->g[i] = r->g[0];
            }
            if (new_matcher(r, i)) return free(text), snprintf(err, errlen, "out of memory"), -1;
        }
        free(text);
    }
    for (int i = 0; i < r->R; i++) {
        r->seqs[i].n_tokens = r->context;
        r->tok[i] = r->first[i];
    }
    double t_step[MAX_STEPS];
    int ok = e->ops->sync(e->ops_ctx) == 0;
    struct chunk_job cj = {r, words};
    for (int s = 0; ok && s < r->steps; s++) {
        double t0 = now();
        for (int i = 0; i < r->R; i++)
            r->fs[i] = (struct fwd_seq){&r->tok[i], 1, &r->seqs[i], 0};
        ok = fwd_run(e->fwd, r->fs, r->R, NULL, err, errlen) == 0;
        if (ok && r->prime) {
            memset(r->masks, 0xff, sizeof(uint32_t) * words * (size_t)r->R);
            for (int i = 0; i < r->R; i++)
                r->use[i] = 1;
            ok = fwd_mask(e->fwd, r->R, r->masks, words, r->use, grammar_vocab_size(r->gv), err,
                          errlen) == 0;
        }
        if (ok && constrained) {
            double tm = now();
            int states = r->R;
            if (per_row)
                cpu_pool_for(r->pool, (size_t)r->R, 1, per_row_chunk, &cj);
            else
                states = grammar_mask_rows(r->m, r->R, r->gv, r->masks, r->count, r->pool);
            double ms = (now() - tm) * 1e3;
            res->mask_ms += ms;
            if (ms > res->mask_max) res->mask_max = ms;
            res->states += states;
            for (int i = 0; i < r->R; i++) {
                r->use[i] = r->count[i] > 0;
                res->dead += !r->use[i];
            }
            double tu = now();
            ok = states >= 0 && fwd_mask(e->fwd, r->R, r->masks, words, r->use,
                                         grammar_vocab_size(r->gv), err, errlen) == 0;
            res->upload_ms += (now() - tu) * 1e3;
        }
        ok = ok && fwd_sample(e->fwd, r->R, r->rows, NULL, 0, r->ids, r->lps, err, errlen) == 0;
        if (ok && constrained && r->show && r->use[0]) {
            char piece[256];
            int n = tokenizer_token_bytes(e->model->tok, r->ids[0], piece, sizeof piece);
            if (n > 0 && (size_t)n < sizeof piece) fwrite(piece, 1, (size_t)n, stdout);
        }
        double ta = now();
        if (ok && constrained) { /* the worker's step_advance; the old path: one row at a time */
            for (int i = 0; i < r->R; i++)
                r->adv_m[i] = r->use[i] ? r->m[i] : NULL;
            if (per_row)
                for (int i = 0; i < r->R; i++)
                    r->adv_rc[i] =
                        r->adv_m[i] ? grammar_matcher_accept_token(r->m[i], r->gv, r->ids[i]) : 0;
            else
                grammar_accept_rows(r->adv_m, r->R, r->gv, r->ids, r->adv_rc);
        }
        for (int i = 0; ok && i < r->R; i++) {
            r->tok[i] = r->ids[i];
            if (!constrained) continue;
            int restart = !r->use[i];
            if (r->use[i] && r->adv_rc[i] != 0) {
                res->refused++;
                restart = 1;
            } else if (r->use[i] &&
                       (grammar_matcher_finished(r->m[i]) || grammar_matcher_accepting(r->m[i]))) {
                res->docs++; /* a complete document: the next request of this schema */
                restart = 1;
            }
            if (restart && new_matcher(r, i)) ok = 0;
        }
        if (constrained) res->accept_ms += (now() - ta) * 1e3;
        t_step[s] = (now() - t0) * 1e3;
    }
    if (constrained && r->show) printf("  <- row 0, %s\n", MODE_NAMES[md]);
    if (!ok && !err[0]) snprintf(err, errlen, "device error (%s)", e->ops->name);
    if (constrained) {
        for (int i = 0; i < r->R; i++) {
            grammar_matcher_free(r->m[i]);
            r->m[i] = NULL;
            if (i == 0 || r->g[i] != r->g[0]) grammar_free(r->g[i]);
        }
        memset(r->g, 0, sizeof *r->g * (size_t)r->R);
        grammar_mask_cache_free(r->cache);
        r->cache = NULL;
    }
    if (!ok) return -1;
    for (int s = 0; s < r->steps; s++)
        res->mean += t_step[s] / r->steps;
    qsort(t_step, (size_t)r->steps, sizeof(double), cmp_double);
    res->p50 = t_step[r->steps / 2];
    res->max = t_step[r->steps - 1];
    res->mask_ms /= r->steps;
    res->upload_ms /= r->steps;
    res->accept_ms /= r->steps;
    res->states /= r->steps;
    return 0;
}

static int run_rows(struct engine *e, struct grammar_vocab *gv, struct cpu_pool *pool, int R,
                    int context, int steps, int show, unsigned schemas) {
    int V = e->model->cfg.vocab_size;
    size_t words = grammar_mask_words(gv);
    char err[512] = "";
    struct run r = {
        .e = e, .gv = gv, .pool = pool, .R = R, .context = context, .steps = steps, .show = show};
    r.seqs = calloc((size_t)R, sizeof *r.seqs);
    r.fs = calloc((size_t)R, sizeof *r.fs);
    r.tok = calloc((size_t)R, sizeof(int));
    r.first = calloc((size_t)R, sizeof(int));
    r.rows = calloc((size_t)R, sizeof *r.rows);
    r.ids = calloc((size_t)R, sizeof(int));
    r.lps = calloc((size_t)R, sizeof(float));
    r.g = calloc((size_t)R, sizeof *r.g);
    r.m = calloc((size_t)R, sizeof *r.m);
    r.masks = calloc((size_t)R * words, sizeof(uint32_t));
    r.count = calloc((size_t)R, sizeof(int));
    r.use = calloc((size_t)R, sizeof(int));
    r.adv_m = calloc((size_t)R, sizeof *r.adv_m);
    r.adv_rc = calloc((size_t)R, sizeof(int));
    int *prompt = malloc(sizeof(int) * (size_t)R * (size_t)(context + 1));
    struct sampler_params greedy;
    sampler_params_default(&greedy); /* do_sample 0: greedy */
    struct sampler smp;
    memset(&smp, 0, sizeof smp);
    int ok = r.seqs && r.fs && r.tok && r.first && r.rows && r.ids && r.lps && r.g && r.m &&
             r.masks && r.count && r.use && r.adv_m && r.adv_rc && prompt &&
             sampler_init(&smp, &greedy, V) == 0;
    /* distinct prompts, prefilled as many sequences to a forward pass as fit */
    for (int i = 0; ok && i < R; i++) {
        for (int t = 0; t <= context; t++)
            prompt[(size_t)i * (context + 1) + t] =
                (int)(((long)i * 7919 + (long)t * 104729 + 13) % grammar_vocab_size(gv));
        r.first[i] = prompt[(size_t)i * (context + 1) + context];
        sampler_row(&smp, 0, 0, &r.rows[i]);
        ok = kv_seq_reserve(&e->kv, &r.seqs[i], context + steps + 3) == 0;
        if (!ok) snprintf(err, sizeof err, "KV cache too small for %d rows", R);
    }
    int per_pass = e->max_batch_tokens / context;
    if (per_pass > e->max_batch_seqs) per_pass = e->max_batch_seqs;
    for (int i = 0; ok && i < R; i += per_pass) {
        int n = R - i < per_pass ? R - i : per_pass;
        for (int k = 0; k < n; k++)
            r.fs[k] = (struct fwd_seq){prompt + (size_t)(i + k) * (context + 1), context,
                                       &r.seqs[i + k], context};
        for (int k = 0; k < n; k++)
            sampler_row(&smp, 0, 0, &r.rows[k]);
        ok = fwd_run(e->fwd, r.fs, n, NULL, err, sizeof err) == 0 &&
             fwd_sample(e->fwd, n, r.rows, NULL, 0, r.ids, r.lps, err, sizeof err) == 0;
    }
    for (int i = 0; ok && i < R; i++)
        sampler_row(&smp, 0, 0, &r.rows[i]);
    /* two unconstrained steps first: the decode graph of this batch size is recorded there */
    int keep = r.steps;
    r.steps = 2;
    r.prime = 1;
    struct result warm, res[N_ORDER];
    ok = ok && run_mode(&r, MODE_NONE, &warm, err, sizeof err) == 0;
    r.steps = keep;
    r.prime = 0;
    for (int sc = 0; ok && sc < N_SCHEMAS; sc++) {
        if (!(schemas >> sc & 1)) continue;
        r.schema = SCHEMAS[sc].fmt;
        for (int k = 0; ok && k < N_ORDER; k++)
            ok = run_mode(&r, ORDER[k], &res[k], err, sizeof err) == 0;
        if (!ok) {
            fprintf(stderr, "bench_grammar_step: %d rows: %s\n", R, err);
            break;
        }
        double base = (res[0].mean + res[N_ORDER - 1].mean) / 2;
        printf("\n%d rows, %s schema, context %d, %d steps per mode; none = %.3f ms/step (first "
               "%.3f, last %.3f)\n",
               R, SCHEMAS[sc].name, context, steps, base, res[0].mean, res[N_ORDER - 1].mean);
        printf("%-18s %9s %9s %9s %9s %9s %9s %9s %9s %9s %6s %6s %7s\n", "mode", "ms/step", "p50",
               "max", "mask ms", "fwd_mask", "accept", "states", "overhead", "mask max", "docs",
               "dead", "refused");
        for (int k = 0; k < N_ORDER; k++) {
            const struct result *x = &res[k];
            printf("%-18s %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f %9.1f %8.1f%% %9.3f %6ld %6ld %7ld\n",
                   MODE_NAMES[ORDER[k]], x->mean, x->p50, x->max, x->mask_ms, x->upload_ms,
                   x->accept_ms, x->states, (x->mean - base) / base * 100, x->mask_max, x->docs,
                   x->dead, x->refused);
            if (x->refused) ok = 0;
        }
        if (!ok) fprintf(stderr, "bench_grammar_step: a row picked a token its grammar refuses\n");
    }
    sampler_free(&smp);
    for (int i = 0; r.seqs && i < R; i++)
        kv_seq_release(&e->kv, &r.seqs[i]);
    free(r.seqs), free(r.fs), free(r.tok), free(r.first), free(r.rows), free(r.ids), free(r.lps);
    free(r.g), free(r.m), free(r.masks), free(r.count), free(r.use), free(prompt);
    free(r.adv_m), free(r.adv_rc);
    return ok ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *model = NULL, *device = "cuda";
    int rows[16] = {1, 64, 256}, nr = 3, context = 64, steps = 32, threads = 0, show = 0;
    unsigned schemas = 0;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"rows", required_argument, 0, 'r'},
                                         {"context", required_argument, 0, 'c'},
                                         {"steps", required_argument, 0, 's'},
                                         {"threads", required_argument, 0, 't'},
                                         {"device", required_argument, 0, 'd'},
                                         {"show", no_argument, 0, 'S'},
                                         {"schema", required_argument, 0, 'x'},
                                         {0, 0, 0, 0}};
    for (int ch; (ch = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (ch == 'm') {
            model = optarg;
        } else if (ch == 'r') {
            nr = 0;
            for (const char *p = optarg; p && *p && nr < 16; p = strchr(p, ','), p = p ? p + 1 : p)
                rows[nr++] = atoi(p);
        } else if (ch == 'c') {
            context = atoi(optarg);
        } else if (ch == 's') {
            steps = atoi(optarg);
        } else if (ch == 't') {
            threads = atoi(optarg);
        } else if (ch == 'x') {
            for (int k = 0; k < N_SCHEMAS; k++)
                if (!strcmp(optarg, SCHEMAS[k].name)) schemas |= 1u << k;
            if (!schemas) {
                fprintf(stderr, "bench_grammar_step: --schema bounded or free\n");
                return 2;
            }
        } else if (ch == 'S') {
            show = 1;
        } else if (ch == 'd') {
            device = optarg;
        } else {
            fprintf(stderr, "bench_grammar_step: see the comment at the top of the file\n");
            return 2;
        }
    }
    int bad_rows = nr == 0;
    for (int i = 0; i < nr; i++)
        bad_rows |= rows[i] < 1;
    if (!model || steps < 1 || steps > MAX_STEPS || context < 1 || bad_rows) {
        fprintf(stderr,
                "bench_grammar_step: --model M.gguf needed; --steps 1..%d, --context >= 1, "
                "--rows a list of counts >= 1 (see the top of the file)\n",
                MAX_STEPS);
        return 2;
    }
    if (!schemas) schemas = (1u << N_SCHEMAS) - 1;
    struct engine_opts o;
    engine_opts_default(&o);
    o.model_path = model;
    o.device = !strcmp(device, "cpu") ? ENGINE_DEVICE_CPU : ENGINE_DEVICE_CUDA;
    o.n_threads = threads;
    if (o.device == ENGINE_DEVICE_CPU) o.kv_cache_bytes = (size_t)256 << 20;
    o.max_batch_tokens = 8192;
    o.max_batch_seqs = 64;
    for (int i = 0; i < nr; i++)
        if (rows[i] > o.max_batch_seqs) o.max_batch_seqs = rows[i];
    o.kv_fraction = 0.5f;
    struct engine *e;
    char err[512];
    double t0 = now();
    if (engine_open(&o, &e, err, sizeof err) != 0) {
        fprintf(stderr, "bench_grammar_step: %s\n", err);
        return 1;
    }
    struct grammar_vocab *gv = NULL;
    struct cpu_pool *pool = cpu_pool_create(threads); /* the worker's mask pool */
    if (grammar_vocab_new(e->model->tok, &gv) || !pool) {
        fprintf(stderr, "bench_grammar_step: out of memory\n");
        engine_close(e);
        return 1;
    }
    printf("bench_grammar_step: %s on %s, loaded in %.1f s; vocabulary %d (masks %zu B a row), "
           "%d mask threads\n",
           model, engine_device_name(e), now() - t0, grammar_vocab_size(gv),
           grammar_mask_words(gv) * 4, cpu_pool_size(pool));
    int rc = 0;
    for (int i = 0; i < nr && rc == 0; i++)
        rc = run_rows(e, gv, pool, rows[i], context, steps, show, schemas);
    printf("(ms per step: fwd_run to the tokens taken, the worker's step; mask ms: the host call "
           "computing the masks, overlapping the queued pass on a GPU; states: distinct states per "
           "step; overhead: the mean step against none)\n");
    grammar_vocab_free(gv);
    cpu_pool_destroy(pool);
    engine_close(e);
    return rc ? 1 : 0;
}
