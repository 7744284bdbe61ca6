/* fuzz_grammar.c — libFuzzer target: the grammar compilers and matcher (model/grammar.h).
 *
 * Input: one mode byte, then a spec, a NUL, then text. Mode bit 0 picks the compiler: a JSON
 * Schema (the spec parsed by cJSON) or a regular expression (the spec's bytes). Whatever the
 * spec, the compiler returns a grammar or NULL with a message (never a crash, a leak or a hang:
 * sizes are bounded). A grammar is then driven by the text in two ways: byte by byte (a refused
 * byte leaves the state as it was) and as tokens of a small built-in vocabulary (the 256 bytes,
 * a few multi-byte pieces and an end token), where at every step the trie-walk mask must equal
 * a token-by-token check and only allowed tokens are taken. No model file needed.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/grammar.h"
#include "model/tokenizer.h"

static struct tokenizer *g_tok;
static struct grammar_vocab *g_vocab;

/* GPT-2's byte-to-unicode mapping of byte B, as UTF-8. */
static void byte_level(unsigned b, char *out) {
    unsigned cp = b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
        unsigned n = 0;
        for (unsigned x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    enum { NB = 256, NP = 6, N = NB + NP + 1 };
    static char bytes[NB][4];
    const char *toks[N];
    int32_t types[N];
    for (int i = 0; i < NB; i++) {
        byte_level((unsigned)i, bytes[i]);
        toks[i] = bytes[i];
        types[i] = TOK_TYPE_NORMAL;
    }
    /* pieces in byte-level form: "{\"", "\":", "true", "Ġthe", "12", "\"}" */
    static const char *pieces[NP] = {"{\"", "\":", "true", "\xc4\xa0the", "12", "\"}"};
    for (int i = 0; i < NP; i++) {
        toks[NB + i] = pieces[i];
        types[NB + i] = TOK_TYPE_NORMAL;
    }
    toks[N - 1] = "<|endoftext|>";
    types[N - 1] = TOK_TYPE_CONTROL;
    struct tokenizer_spec s = {.n_tokens = N,
                               .tokens = toks,
                               .token_types = types,
                               .pre = TOK_PRE_GPT2,
                               .bos_id = -1,
                               .eos_id = N - 1,
                               .eot_id = -1,
                               .pad_id = -1,
                               .unk_id = -1};
    char err[256];
    if (tokenizer_init(&s, &g_tok, err, sizeof err) || grammar_vocab_new(g_tok, &g_vocab)) {
        fprintf(stderr, "fuzz_grammar: tiny tokenizer: %s\n", err);
        abort();
    }
    return 0;
}

static int bit(const uint32_t *m, int i) {
    return m[i >> 5] >> (i & 31) & 1;
}

static void drive_tokens(const struct grammar *g, const uint8_t *text, size_t n) {
    struct grammar_matcher *m = grammar_matcher_new(g), *probe = grammar_matcher_new(g);
    if (!m || !probe) abort(); /* a finished grammar always starts (or the fuzzer ran OOM) */
    uint32_t mask[(263 + 31) / 32];
    int V = grammar_vocab_size(g_vocab);
    for (size_t i = 0; i < n && i < 16; i++) {
        int count = grammar_mask(m, g_vocab, mask);
        if (count < 0) break; /* a limit: the request would end with an error */
        int brute = 0;
        for (int id = 0; id < V; id++) {
            if (grammar_matcher_copy_state(probe, m)) abort();
            int ok = grammar_matcher_accept_token(probe, g_vocab, id) == 0;
            if (tokenizer_is_special(g_tok, id) && !tokenizer_is_eog(g_tok, id)) ok = 0;
            if (ok != bit(mask, id)) abort();
            brute += ok;
        }
        if (brute != count) abort();
        if (count == 0) break;
        int id = text[i] % V; /* take an allowed token picked by the text */
        while (!bit(mask, id))
            id = (id + 1) % V;
        if (grammar_matcher_accept_token(m, g_vocab, id)) abort();
        if (tokenizer_is_eog(g_tok, id)) break;
    }
    grammar_matcher_free(m);
    grammar_matcher_free(probe);
}

static void drive_bytes(const struct grammar *g, const uint8_t *text, size_t n) {
    struct grammar_matcher *m = grammar_matcher_new(g);
    if (!m) abort();
    for (size_t i = 0; i < n; i++) {
        int acc = grammar_matcher_accepting(m), fin = grammar_matcher_finished(m);
        if (grammar_matcher_accept(m, text + i, 1) != 0) {
            if (grammar_matcher_accepting(m) != acc || grammar_matcher_finished(m) != fin) abort();
        } else if (fin) {
            abort(); /* a finished match takes no byte */
        }
    }
    grammar_matcher_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 4096) return 0;
    int mode = data[0];
    const uint8_t *spec = data + 1, *nul = memchr(spec, 0, size - 1);
    size_t spec_len = nul ? (size_t)(nul - spec) : size - 1;
    const uint8_t *text = nul ? nul + 1 : data + size;
    size_t text_len = (size_t)(data + size - text);
    char err[256] = "", kw[64] = "";
    struct grammar *g = NULL;
    if (mode & 1) {
        g = grammar_from_regex((const char *)spec, spec_len, err, sizeof err, kw, sizeof kw);
    } else {
        cJSON *s = cJSON_ParseWithLength((const char *)spec, spec_len);
        if (!s) return 0;
        g = grammar_from_json_schema(s, err, sizeof err, kw, sizeof kw);
        cJSON_Delete(s);
    }
    if (!g) {
        if (!err[0]) abort(); /* a refusal says why */
        return 0;
    }
    drive_bytes(g, text, text_len);
    drive_tokens(g, text, text_len);
    grammar_free(g);
    return 0;
}
