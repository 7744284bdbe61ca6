/* bench_grammar_walk.c — the cost of one mask walk where caches cannot help: a JSON document of
 * long bounded strings (maxLength 200 and 300), where every token position is a grammar state of
 * its own, so each mask is a walk of nearly the whole token tree (model/grammar_mask.c).
 *
 *   bench_grammar_walk [MODEL.gguf]   (default models/SmolLM2-135M-Instruct.Q4_1.gguf)
 *
 * Per token of the document: "warm" is the mask of the matcher that follows the document (its
 * walk memo kept from token to token, what a request pays), "fresh" the same state's mask by a
 * new matcher (empty memo). Best of 5 passes, µs per token. Used for the tree-layout A/B in
 * bench/grammar.md (run the binaries of both builds interleaved: the shared VM is noisy).
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/grammar.h"
#include "model/model.h"
#include "model/tokenizer.h"

static const char *SCHEMA =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":200},"
    "\"bio\":{\"type\":\"string\",\"maxLength\":300}},\"required\":[\"name\",\"bio\"]}";
static const char *DOC =
    "{\"name\": \"Ada Lovelace, Countess of Lovelace, English mathematician and writer\", "
    "\"bio\": \"Mathematician and writer, known for her work on Charles Babbage's proposed "
    "mechanical general-purpose computer, the Analytical Engine. She was the first to recognise "
    "that the machine had applications beyond pure calculation.\"}";

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    char err[512], kw[64];
    struct tokenizer *tok = NULL;
    struct grammar_vocab *v = NULL;
    if (model_load_tokenizer(path, &tok, NULL, err, sizeof err)) {
        fprintf(stderr, "bench_grammar_walk: %s\n", err);
        return 1;
    }
    cJSON *sj = cJSON_Parse(SCHEMA);
    struct grammar *g = grammar_from_json_schema(sj, err, sizeof err, kw, sizeof kw);
    cJSON_Delete(sj);
    int *ids = NULL, n = 0;
    uint32_t *mask = NULL;
    if (!g || grammar_vocab_new(tok, &v) ||
        tokenizer_encode(tok, DOC, strlen(DOC), 0, 0, &ids, &n, err, sizeof err) ||
        !(mask = malloc(grammar_mask_words(v) * sizeof *mask))) {
        fprintf(stderr, "bench_grammar_walk: setup failed (%s)\n", err);
        return 1;
    }
    double warm = 1e30, fresh = 1e30;
    for (int pass = 0; pass < 5; pass++) {
        struct grammar_matcher *m = grammar_matcher_new(g);
        double tw = 0, tf = 0;
        for (int k = 0; m && k < n; k++) {
            double t0 = now_s();
            int ok = grammar_mask(m, v, mask) > 0;
            tw += now_s() - t0;
            struct grammar_matcher *f = grammar_matcher_new(g);
            ok = ok && f && grammar_matcher_copy_state(f, m) == 0;
            t0 = now_s();
            ok = ok && grammar_mask(f, v, mask) > 0;
            tf += now_s() - t0;
            grammar_matcher_free(f);
            if (!ok || grammar_matcher_accept_token(m, v, ids[k])) {
                fprintf(stderr, "bench_grammar_walk: token %d of the document refused\n", k);
                return 1;
            }
        }
        grammar_matcher_free(m);
        warm = tw < warm ? tw : warm;
        fresh = tf < fresh ? tf : fresh;
    }
    printf("%d tokens, vocabulary %d: warm %.1f us/token, fresh %.1f us/token (best of 5)\n", n,
           grammar_vocab_size(v), warm / n * 1e6, fresh / n * 1e6);
    free(mask);
    free(ids);
    grammar_free(g);
    grammar_vocab_free(v);
    tokenizer_free(tok);
    return 0;
}
