/* bench_grammar.c — what constrained decoding costs on the CPU: the allowed-token mask
 * (model/grammar.h) per generated token, for 1, 64 and 256 rows, on a real vocabulary.
 *
 * Each row is a request with its own matcher (and mask cache) following a JSON document
 * token by token, as the worker does: mask, then advance by the document's next token. Two
 * figures per row count: "cached" is what the worker pays (masks of repeated states are copies),
 * "uncached" computes every mask by a fresh trie walk (a new matcher per step: the worst case,
 * states never seen before). One thread, and "pool ms/step": the cached figure with the rows
 * spread over a CPU pool of all cores; "shared ms/step": the same with every row's matcher
 * sharing one grammar_mask_cache, as the worker computes them (rows with one schema: after the
 * first row walks a state, the others copy its mask).
 *
 * usage: bench_grammar [MODEL.gguf | tokenizer.json]
 *        (default models/SmolLM2-135M-Instruct.Q4_1.gguf)
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu_pool.h"
#include "model/grammar.h"
#include "model/model.h"
#include "model/tokenizer.h"

static const char *SCHEMA =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":"
    "\"integer\"},\"languages\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"bio\":{"
    "\"type\":\"string\"}},\"required\":[\"name\",\"age\",\"languages\",\"bio\"]}";
static const char *DOC =
    "{\"name\": \"Ada Lovelace\", \"age\": 36, \"languages\": [\"English\", \"French\"], \"bio\": "
    "\"Mathematician and writer, known for her work on Charles Babbage's proposed mechanical "
    "general-purpose computer, the Analytical Engine.\"}";

struct pool_job {
    struct grammar_matcher **m;
    const struct grammar_vocab *v;
    uint32_t *masks; /* (rows, words) */
    size_t words;
};

static void pool_chunk(void *arg, size_t b, size_t e) {
    struct pool_job *j = arg;
    for (size_t r = b; r < e; r++)
        grammar_mask(j->m[r], j->v, j->masks + r * j->words);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    char err[512];
    struct tokenizer *tok = NULL;
    size_t pl = strlen(path);
    int json = pl > 5 && !strcmp(path + pl - 5, ".json"); /* a tokenizer.json instead */
    if (json ? tokenizer_from_json(path, &tok, NULL, err, sizeof err)
             : model_load_tokenizer(path, &tok, NULL, err, sizeof err)) {
        fprintf(stderr, "bench_grammar: %s\n", err);
        return 1;
    }
    double t0 = now_s();
    struct grammar_vocab *v = NULL;
    if (grammar_vocab_new(tok, &v)) {
        fprintf(stderr, "bench_grammar: out of memory\n");
        return 1;
    }
    double t_trie = now_s() - t0;
    cJSON *sj = cJSON_Parse(SCHEMA);
    char kw[64];
    t0 = now_s();
    struct grammar *g = grammar_from_json_schema(sj, err, sizeof err, kw, sizeof kw);
    double t_compile = now_s() - t0;
    cJSON_Delete(sj);
    int *ids = NULL, n_ids = 0;
    if (!g || tokenizer_encode(tok, DOC, strlen(DOC), 0, 0, &ids, &n_ids, err, sizeof err)) {
        fprintf(stderr, "bench_grammar: %s\n", err);
        return 1;
    }
    printf("vocabulary %d tokens; trie built in %.1f ms; schema compiled in %.3f ms (%d "
           "elements); document %d tokens\n",
           grammar_vocab_size(v), t_trie * 1e3, t_compile * 1e3, grammar_n_elems(g), n_ids);
    uint32_t *mask = malloc(sizeof(uint32_t) * grammar_mask_words(v));
    struct cpu_pool *pool = cpu_pool_create(0);
    printf("%6s  %14s  %14s  %16s  %16s  %14s  %14s (%d threads)\n", "rows", "cached us/tok",
           "cached ms/step", "uncached us/tok", "uncached ms/step", "pool ms/step",
           "shared ms/step", cpu_pool_size(pool));
    const int rows_list[] = {1, 64, 256};
    for (int ri = 0; ri < 3; ri++) {
        int rows = rows_list[ri];
        struct grammar_matcher **m = calloc((size_t)rows, sizeof *m);
        for (int r = 0; r < rows; r++)
            m[r] = grammar_matcher_new(g);
        double cached = 0, uncached = 0, pooled = 0;
        struct grammar_matcher **pm = calloc((size_t)rows, sizeof *pm);
        for (int r = 0; r < rows; r++)
            pm[r] = grammar_matcher_new(g);
        struct pool_job pj = {pm, v, malloc(sizeof(uint32_t) * grammar_mask_words(v) * rows),
                              grammar_mask_words(v)};
        struct grammar_mask_cache *sc = grammar_mask_cache_new(v, (size_t)64 << 20);
        struct grammar_matcher **sm = calloc((size_t)rows, sizeof *sm);
        for (int r = 0; r < rows; r++) {
            sm[r] = grammar_matcher_new(g);
            grammar_matcher_share(sm[r], sc);
        }
        struct pool_job sj_ = {sm, v, pj.masks, pj.words};
        double shared = 0;
        long allowed = 0;
        int uncached_rows = rows < 8 ? rows : 8; /* the cold walk is per row alike: sample 8 */
        for (int k = 0; k < n_ids; k++) {
            t0 = now_s();
            for (int r = 0; r < rows; r++)
                allowed += grammar_mask(m[r], v, mask);
            cached += now_s() - t0;
            for (int r = 0; r < uncached_rows; r++) {
                struct grammar_matcher *fresh = grammar_matcher_new(g);
                grammar_matcher_copy_state(fresh, m[r]);
                t0 = now_s();
                grammar_mask(fresh, v, mask);
                uncached += now_s() - t0;
                grammar_matcher_free(fresh);
            }
            t0 = now_s();
            cpu_pool_for(pool, (size_t)rows, 1, pool_chunk, &pj);
            pooled += now_s() - t0;
            t0 = now_s();
            cpu_pool_for(pool, (size_t)rows, 1, pool_chunk, &sj_);
            shared += now_s() - t0;
            for (int r = 0; r < rows; r++)
                if (grammar_matcher_accept_token(m[r], v, ids[k]) ||
                    grammar_matcher_accept_token(pm[r], v, ids[k]) ||
                    grammar_matcher_accept_token(sm[r], v, ids[k])) {
                    fprintf(stderr, "bench_grammar: token %d refused\n", k);
                    return 1;
                }
        }
        double per_tok = cached / ((double)n_ids * rows);
        double per_tok_cold = uncached / ((double)n_ids * uncached_rows);
        printf("%6d  %14.1f  %14.3f  %16.1f  %16.3f  %14.3f  %14.3f\n", rows, per_tok * 1e6,
               per_tok * rows * 1e3, per_tok_cold * 1e6, per_tok_cold * rows * 1e3,
               pooled / n_ids * 1e3, shared / n_ids * 1e3);
        for (int r = 0; r < rows; r++)
            grammar_matcher_free(sm[r]);
        free(sm);
        grammar_mask_cache_free(sc);
        for (int r = 0; r < rows; r++)
            grammar_matcher_free(pm[r]);
        free(pm);
        free(pj.masks);
        (void)allowed;
        for (int r = 0; r < rows; r++)
            grammar_matcher_free(m[r]);
        free(m);
    }
    cpu_pool_destroy(pool);
    free(mask);
    free(ids);
    grammar_free(g);
    grammar_vocab_free(v);
    tokenizer_free(tok);
    return 0;
}
