/* test_grammar.c — the grammar engine (model/grammar.h): the matcher and the regex and JSON
 * Schema compilers against accept/reject tables, the refusals of unsupported keywords, and the
 * token mask on the real SmolLM2 vocabulary: the trie walk equals a token-by-token check, and
 * every string a constrained random walk emits is accepted and parses (the sampler's property). */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_pool.h"
#include "model/grammar.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "test_util.h"

#define MODEL_PATH "models/SmolLM2-135M-Instruct.Q4_1.gguf"

/* 1 when G matches S in full. */
static int full_match(const struct grammar *g, const char *s) {
    struct grammar_matcher *m = grammar_matcher_new(g);
    cr_assert(m, "matcher");
    int ok = grammar_matcher_accept(m, s, strlen(s)) == 0 && grammar_matcher_accepting(m);
    grammar_matcher_free(m);
    return ok;
}

struct row {
    const char *text;
    int ok;
};

static void check_table(const struct grammar *g, const char *what, const struct row *rows, int n) {
    for (int i = 0; i < n; i++)
        cr_expect_eq(full_match(g, rows[i].text), rows[i].ok, "%s: \"%s\" should be %s", what,
                     rows[i].text, rows[i].ok ? "accepted" : "rejected");
}

static struct grammar *regex(const char *re) {
    char err[256], kw[64];
    struct grammar *g = grammar_from_regex(re, strlen(re), err, sizeof err, kw, sizeof kw);
    cr_assert(g, "regex %s: %s", re, err);
    return g;
}

static struct grammar *schema(const char *json) {
    cJSON *s = cJSON_Parse(json);
    cr_assert(s, "bad test schema %s", json);
    char err[256], kw[64];
    struct grammar *g = grammar_from_json_schema(s, err, sizeof err, kw, sizeof kw);
    cr_assert(g, "schema %s: %s", json, err);
    cJSON_Delete(s);
    return g;
}

Test(grammar, regex_tables) {
    struct {
        const char *re;
        struct row rows[6];
    } t[] = {
        {"abc", {{"abc", 1}, {"ab", 0}, {"abcd", 0}, {"", 0}}},
        {"a|bc|", {{"a", 1}, {"bc", 1}, {"", 1}, {"b", 0}}},
        {"[a-c]+x?", {{"a", 1}, {"cabx", 1}, {"x", 0}, {"", 0}, {"abxx", 0}}},
        {"[^a-z]{2,3}", {{"AB", 1}, {"ABC", 1}, {"A", 0}, {"ABCD", 0}, {"Ab", 0}, {"é9", 1}}},
        {"\\d{3}-\\d{4}", {{"555-1234", 1}, {"55-1234", 0}, {"555-12345", 0}}},
        {"(ab)*c", {{"c", 1}, {"ababc", 1}, {"abac", 0}}},
        {"^(?:[A-Z][a-z]*)( [A-Z][a-z]*)*$", {{"Ada Lovelace", 1}, {"ada", 0}, {"A B", 1}}},
        {"(a*)*b", {{"b", 1}, {"aaab", 1}, {"aa", 0}}}, /* a nullable loop ends */
        {".{2}", {{"ab", 1}, {"é!", 1}, {"\n!", 0}, {"a", 0}}},
        {"\\w+@\\w+\\.com", {{"me@x.com", 1}, {"me@x.org", 0}, {"@x.com", 0}}},
        {"[αβ]x\\u00e9", {{"αxé", 1}, {"βxé", 1}, {"γxé", 0}}},
        {"a{2,}", {{"a", 0}, {"aa", 1}, {"aaaaa", 1}}},
        {"(yes|no|maybe)\\.", {{"yes.", 1}, {"maybe.", 1}, {"may.", 0}}},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct grammar *g = regex(t[i].re);
        int n = 0;
        while (n < 6 && t[i].rows[n].text)
            n++;
        check_table(g, t[i].re, t[i].rows, n);
        grammar_free(g);
    }
}

Test(grammar, regex_refusals_name_the_construct) {
    const char *bad[][2] = {{"(a)\\1", "\\1"},
                            {"(?=a)", "(?"},
                            {"\\bword", "\\b"},
                            {"[à-ü]", "[non-ASCII range]"},
                            {"a{2000}", "{m,n}"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256], kw[64];
        struct grammar *g =
            grammar_from_regex(bad[i][0], strlen(bad[i][0]), err, sizeof err, kw, sizeof kw);
        cr_expect_null(g, "%s should be refused", bad[i][0]);
        cr_expect_str_eq(kw, bad[i][1], "%s: keyword %s (%s)", bad[i][0], kw, err);
        grammar_free(g);
    }
    const char *malformed[] = {"(ab", "ab)", "[ab", "*a", "a\\"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        char err[256], kw[64];
        struct grammar *g =
            grammar_from_regex(malformed[i], strlen(malformed[i]), err, sizeof err, kw, sizeof kw);
        cr_expect_null(g, "%s should be refused", malformed[i]);
        cr_expect(err[0], "%s: a message", malformed[i]);
        grammar_free(g);
    }
}

Test(grammar, json_object_mode) {
    char err[128];
    struct grammar *g = grammar_json_object(err, sizeof err);
    cr_assert(g, "%s", err);
    struct row rows[] = {
        {"{}", 1},
        {"{\"a\": 1, \"b\": [true, null, -0.5e+3, \"x\\n\\u00e9\"], \"c\": {\"d\": {}}}", 1},
        {"{\"é\":\"日本\"}", 1},
        {"[1]", 0},        /* the top level is an object */
        {"{\"a\":01}", 0}, /* no leading zeros */
        {"{\"a\":1,}", 0},
        {"{\"a\" :1}", 0}, /* compact: no space before ':' */
        {"{\"a\":\"\x01\"}", 0},
        {"{\"a\":tru}", 0},
        {"{\"a\":1}}", 0},
    };
    check_table(g, "json_object", rows, sizeof rows / sizeof rows[0]);
    grammar_free(g);
}

Test(grammar, schema_tables) {
    struct {
        const char *schema;
        struct row rows[8];
    } t[] = {
        {"{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":"
         "\"integer\"}},\"required\":[\"name\",\"age\"],\"additionalProperties\":false}",
         {{"{\"name\":\"Ann\",\"age\":31}", 1},
          {"{\"name\": \"Ann\", \"age\": -3}", 1},
          {"{\"age\":31,\"name\":\"Ann\"}", 0}, /* the schema's order */
          {"{\"name\":\"Ann\"}", 0},
          {"{\"name\":\"Ann\",\"age\":3.5}", 0},
          {"{\"name\":\"Ann\",\"age\":31,\"x\":1}", 0}}},
        {"{\"properties\":{\"a\":{\"type\":\"boolean\"},\"b\":{\"type\":\"null\"},\"c\":{\"enum\":"
         "[\"x\",2,[1]]}},\"required\":[\"b\"]}",
         {{"{\"b\":null}", 1},
          {"{\"a\":true,\"b\":null,\"c\":\"x\"}", 1},
          {"{\"b\":null,\"c\":[1]}", 1},
          {"{\"a\":false,\"b\":null,\"c\":3}", 0},
          {"{\"a\":false}", 0},
          {"{}", 0}}},
        {"{\"type\":\"array\",\"items\":{\"type\":\"number\"},\"minItems\":1,\"maxItems\":3}",
         {{"[1]", 1}, {"[1, 2.5,-3e2]", 1}, {"[]", 0}, {"[1,2,3,4]", 0}, {"[\"1\"]", 0}}},
        {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}",
         {{"\"ab\"", 1}, {"\"a\\nb\"", 1}, {"\"éé\"", 1}, {"\"a\"", 0}, {"\"abcd\"", 0}}},
        {"{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-[0-9]+$\"}",
         {{"\"AB-12\"", 1}, {"\"A-12\"", 0}, {"AB-12", 0}}},
        {"{\"anyOf\":[{\"type\":\"integer\"},{\"const\":\"none\"}]}",
         {{"7", 1}, {"\"none\"", 1}, {"\"some\"", 0}, {"7.5", 0}}},
        {"{\"type\":[\"string\",\"null\"]}", {{"null", 1}, {"\"\"", 1}, {"1", 0}}},
        {"{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
         "\"next\":{\"anyOf\":[{\"$ref\":\"#/$defs/node\"},{\"type\":\"null\"}]}},\"required\":["
         "\"v\",\"next\"]}},\"$ref\":\"#/$defs/node\"}",
         {{"{\"v\":1,\"next\":null}", 1},
          {"{\"v\":1,\"next\":{\"v\":2,\"next\":{\"v\":3,\"next\":null}}}", 1},
          {"{\"v\":1,\"next\":{\"v\":2}}", 0}}},
        {"{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"}}",
         {{"{}", 1}, {"{\"a\":1, \"b\":2}", 1}, {"{\"a\":\"1\"}", 0}}},
        {"{\"type\":\"object\",\"additionalProperties\":false}", {{"{}", 1}, {"{\"a\":1}", 0}}},
        {"{\"type\":\"string\",\"format\":\"date\"}",
         {{"\"2024-02-29\"", 1}, {"\"2024-13-01\"", 0}}},
        {"{}", {{"[1,{\"a\":null}]", 1}, {"\"x\"", 1}, {"nul", 0}}},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct grammar *g = schema(t[i].schema);
        int n = 0;
        while (n < 8 && t[i].rows[n].text)
            n++;
        check_table(g, t[i].schema, t[i].rows, n);
        grammar_free(g);
    }
}

Test(grammar, schema_refusals_name_the_keyword) {
    const char *bad[][2] = {
        {"{\"type\":\"integer\",\"minimum\":0}", "minimum"},
        {"{\"oneOf\":[{\"type\":\"string\"}]}", "oneOf"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"allOf\":[]}}}", "allOf"},
        {"{\"type\":\"string\",\"format\":\"hostname\"}", "format"},
        {"{\"type\":\"array\",\"items\":[{\"type\":\"string\"}]}", "items"},
        {"{\"type\":\"object\",\"required\":[\"x\"]}", "required"},
        {"{\"type\":\"string\",\"pattern\":\"(?=x)\"}", "pattern"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *s = cJSON_Parse(bad[i][0]);
        char err[256], kw[64];
        struct grammar *g = grammar_from_json_schema(s, err, sizeof err, kw, sizeof kw);
        cr_expect_null(g, "%s should be refused", bad[i][0]);
        cr_expect_str_eq(kw, bad[i][1], "%s: keyword %s (%s)", bad[i][0], kw, err);
        grammar_free(g);
        cJSON_Delete(s);
    }
    /* malformed: a message, and a $ref that does not resolve */
    cJSON *s = cJSON_Parse("{\"$ref\":\"#/$defs/missing\"}");
    char err[256], kw[64];
    cr_expect_null(grammar_from_json_schema(s, err, sizeof err, kw, sizeof kw));
    cr_expect(strstr(err, "does not resolve"), "%s", err);
    cJSON_Delete(s);
}

Test(grammar, accept_failure_keeps_the_state) {
    struct grammar *g = regex("abc");
    struct grammar_matcher *m = grammar_matcher_new(g);
    cr_assert_eq(grammar_matcher_accept(m, "a", 1), 0);
    cr_assert_eq(grammar_matcher_accept(m, "bx", 2), -1);
    cr_assert_eq(grammar_matcher_accept(m, "bc", 2), 0);
    cr_assert(grammar_matcher_finished(m));
    grammar_matcher_free(m);
    grammar_free(g);
}

/* ---- the mask on the real vocabulary ------------------------------------------------------- */

static struct tokenizer *smollm_tokenizer(void) {
    struct tokenizer *t = NULL;
    char err[512];
    cr_assert_eq(model_load_tokenizer(MODEL_PATH, &t, NULL, err, sizeof err), 0, "%s", err);
    return t;
}

static int bit(const uint32_t *mask, int i) {
    return mask[i >> 5] >> (i & 31) & 1;
}

/* The trie walk's mask equals checking every token on its own, at each state of a walk. */
static void mask_equals_brute_force(struct grammar *g, const struct grammar_vocab *v,
                                    const struct tokenizer *tok, const char *prefix_text) {
    struct grammar_matcher *m = grammar_matcher_new(g), *probe = grammar_matcher_new(g);
    cr_assert(m && probe);
    size_t words = grammar_mask_words(v);
    uint32_t *mask = calloc(words, sizeof *mask);
    int n = grammar_vocab_size(v);
    for (size_t k = 0; k <= strlen(prefix_text); k++) {
        int count = grammar_mask(m, v, mask);
        cr_assert_geq(count, 0);
        int brute = 0;
        for (int id = 0; id < n; id++) {
            cr_assert_eq(grammar_matcher_copy_state(probe, m), 0);
            int ok = grammar_matcher_accept_token(probe, v, id) == 0;
            if (tokenizer_is_special(tok, id) && !tokenizer_is_eog(tok, id)) ok = 0;
            brute += ok;
            cr_assert_eq(bit(mask, id), ok, "token %d (%s) after \"%.*s\": mask %d, brute %d", id,
                         tokenizer_token_text(tok, id), (int)k, prefix_text, bit(mask, id), ok);
        }
        cr_assert_eq(count, brute);
        if (k < strlen(prefix_text)) cr_assert_eq(grammar_matcher_accept(m, prefix_text + k, 1), 0);
    }
    free(mask);
    grammar_matcher_free(m);
    grammar_matcher_free(probe);
}

Test(grammar, mask_equals_token_by_token_check, .timeout = 120) {
    struct tokenizer *tok = smollm_tokenizer();
    struct grammar_vocab *v;
    cr_assert_eq(grammar_vocab_new(tok, &v), 0);
    struct grammar *g = schema("{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\","
                               "\"maxLength\":4},\"n\":{\"type\":\"number\"}},\"required\":["
                               "\"name\"]}");
    mask_equals_brute_force(g, v, tok, "{\"name\": \"ab\", \"n\":1");
    grammar_free(g);
    g = regex("(cat|dog)s? [0-9]{1,2}");
    mask_equals_brute_force(g, v, tok, "dogs 4");
    grammar_free(g);
    grammar_vocab_free(v);
    tokenizer_free(tok);
}

/* Random constrained walks (the sampler's view: pick any allowed token): every emitted string
 * is accepted from scratch, and ends only where the grammar may end; JSON ones parse. */
Test(grammar, constrained_walks_are_accepted, .timeout = 120) {
    struct tokenizer *tok = smollm_tokenizer();
    struct grammar_vocab *v;
    cr_assert_eq(grammar_vocab_new(tok, &v), 0);
    uint64_t seed = tu_seed();
    const char *schemas[] = {
        "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":12},"
        "\"temp\":{\"type\":\"number\"},\"ok\":{\"type\":\"boolean\"},\"tags\":{\"type\":\"array\","
        "\"items\":{\"enum\":[\"a\",\"b\"]},\"maxItems\":3}},\"required\":[\"city\",\"temp\"]}",
        NULL, /* JSON mode */
    };
    size_t words = grammar_mask_words(v);
    uint32_t *mask = calloc(words, sizeof *mask);
    int n = grammar_vocab_size(v);
    int *allowed = malloc(sizeof(int) * (size_t)n);
    for (int rep = 0; rep < 12; rep++) {
        const char *sj = schemas[rep % 2];
        char err[128];
        struct grammar *g = sj ? schema(sj) : grammar_json_object(err, sizeof err);
        struct grammar_matcher *m = grammar_matcher_new(g);
        char out[4096];
        size_t len = 0;
        int ended = 0;
        for (int step = 0; step < 200 && !ended; step++) {
            int count = grammar_mask(m, v, mask);
            cr_assert_gt(count, 0, "seed %llu: a dead end after \"%.*s\"", (unsigned long long)seed,
                         (int)len, out);
            int k = 0;
            for (int id = 0; id < n; id++)
                if (bit(mask, id)) allowed[k++] = id;
            /* close early half the time once possible, so that the walks end */
            int id = allowed[tu_next(&seed) % (uint64_t)k];
            if (grammar_matcher_accepting(m) && (tu_next(&seed) & 1)) id = tokenizer_eos(tok);
            cr_assert_eq(grammar_matcher_accept_token(m, v, id), 0);
            if (tokenizer_is_eog(tok, id)) {
                ended = 1;
                break;
            }
            char b[256];
            int bl = tokenizer_token_bytes(tok, id, b, sizeof b);
            cr_assert(bl > 0 && len + (size_t)bl < sizeof out);
            memcpy(out + len, b, (size_t)bl);
            len += (size_t)bl;
        }
        out[len] = 0;
        if (ended) {
            cr_expect(full_match(g, out), "seed %llu: emitted \"%s\" is not accepted",
                      (unsigned long long)seed, out);
            cJSON *j = cJSON_Parse(out);
            cr_expect(j && cJSON_IsObject(j), "seed %llu: \"%s\" does not parse as an object",
                      (unsigned long long)seed, out);
            cJSON_Delete(j);
        }
        grammar_matcher_free(m);
        grammar_free(g);
    }
    free(allowed);
    free(mask);
    grammar_vocab_free(v);
    tokenizer_free(tok);
}

/* The shared mask cache: matchers of separately compiled equal grammars copy each other's masks,
 * which equal the masks computed alone; another grammar never gets them (the fingerprint is in
 * the key); a cache far too small for the walk (one set: every store evicts) stays correct. */
Test(grammar, shared_mask_cache, .timeout = 120) {
    struct tokenizer *tok = smollm_tokenizer();
    struct grammar_vocab *v;
    cr_assert_eq(grammar_vocab_new(tok, &v), 0);
    const char *sj = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"},\"b\":{"
                     "\"type\":\"integer\"}},\"required\":[\"a\",\"b\"]}";
    const char *text = "{\"a\": \"xy z\", \"b\": 12}";
    struct grammar *g1 = schema(sj), *g2 = schema(sj), *other = regex("[a-z0-9\"{}:, ]*");
    cr_assert_eq(grammar_fingerprint(g1), grammar_fingerprint(g2));
    cr_assert_neq(grammar_fingerprint(g1), grammar_fingerprint(other));
    size_t words = grammar_mask_words(v);
    uint32_t *want = calloc(words, sizeof *want), *got = calloc(words, sizeof *got);
    for (int tiny = 0; tiny < 2; tiny++) {
        struct grammar_mask_cache *c = grammar_mask_cache_new(v, tiny ? 1 : (size_t)16 << 20);
        cr_assert(c);
        struct grammar_matcher *alone = grammar_matcher_new(g1), *first = grammar_matcher_new(g1),
                               *second = grammar_matcher_new(g2), *o = grammar_matcher_new(other);
        grammar_matcher_share(first, c);
        grammar_matcher_share(second, c);
        grammar_matcher_share(o, c);
        for (size_t k = 0; k <= strlen(text); k++) {
            int n_want = grammar_mask(alone, v, want);
            cr_assert_eq(grammar_mask(first, v, got), n_want);
            cr_assert_eq(memcmp(got, want, words * sizeof *got), 0, "first, after %zu bytes", k);
            uint64_t hits, misses, misses_before;
            grammar_mask_cache_stats(c, &hits, &misses_before);
            cr_assert_eq(grammar_mask(second, v, got), n_want);
            grammar_mask_cache_stats(c, &hits, &misses);
            /* every state the second meets, the first stored: it copies, never walks */
            if (!tiny) cr_assert_eq(misses, misses_before, "second walked after %zu bytes", k);
            cr_assert_eq(memcmp(got, want, words * sizeof *got), 0, "second, after %zu bytes", k);
            /* the regex matcher at the same text: its own masks, never the schema's */
            struct grammar_matcher *o_alone = grammar_matcher_new(other);
            cr_assert_eq(grammar_matcher_copy_state(o_alone, o), 0);
            int n_o = grammar_mask(o_alone, v, want);
            cr_assert_eq(grammar_mask(o, v, got), n_o);
            cr_assert_eq(memcmp(got, want, words * sizeof *got), 0, "other, after %zu bytes", k);
            grammar_matcher_free(o_alone);
            if (k == strlen(text)) break;
            cr_assert_eq(grammar_matcher_accept(alone, text + k, 1), 0);
            cr_assert_eq(grammar_matcher_accept(first, text + k, 1), 0);
            cr_assert_eq(grammar_matcher_accept(second, text + k, 1), 0);
            cr_assert_eq(grammar_matcher_accept(o, text + k, 1), 0);
        }
        uint64_t hits, misses;
        grammar_mask_cache_stats(c, &hits, &misses);
        cr_assert_gt(misses, 0);
        if (!tiny) cr_assert_gt(hits, 0);
        grammar_matcher_free(alone);
        grammar_matcher_free(first);
        grammar_matcher_free(second);
        grammar_matcher_free(o);
        grammar_mask_cache_free(c);
    }
    free(want);
    free(got);
    grammar_free(g1);
    grammar_free(g2);
    grammar_free(other);
    grammar_vocab_free(v);
    tokenizer_free(tok);
}

/* A step's masks at once (grammar_mask_rows, the worker's call): every row gets the mask and
 * count its matcher computes alone, rows in one state of equal grammars (separately compiled
 * too) are computed once, rows without a matcher are left alone; with the pool and without. */
Test(grammar, mask_rows_share_equal_states, .timeout = 120) {
    struct tokenizer *tok = smollm_tokenizer();
    struct grammar_vocab *v;
    cr_assert_eq(grammar_vocab_new(tok, &v), 0);
    const char *sj = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"},\"b\":{"
                     "\"type\":\"integer\"}},\"required\":[\"a\",\"b\"]}";
    const char *text = "{\"a\": \"xy z\", \"b\": 12}";
    struct grammar *g1 = schema(sj), *g2 = schema(sj), *other = regex("[a-z0-9\"{}:, ]*");
    /* rows: grammar and how many bytes of TEXT it has taken; NULL = no grammar. The schema's
     * states at 0, 3 and 5 bytes differ (they allow '{', '"', then ' ' or '"'): with the regex
     * row, 4 distinct states. */
    struct grammar *rg[] = {g1, g1, NULL, g1, g2, g1, g1, g2, other};
    int at[] = {0, 0, 0, 3, 0, 5, 5, 3, 0};
    enum { N = sizeof at / sizeof at[0] };
    size_t words = grammar_mask_words(v);
    uint32_t *masks = malloc(N * words * sizeof *masks), *want = calloc(words, sizeof *want);
    struct cpu_pool *pool = cpu_pool_create(4);
    cr_assert(pool && masks && want);
    for (int pooled = 0; pooled < 2; pooled++) {
        struct grammar_mask_cache *c = grammar_mask_cache_new(v, (size_t)16 << 20);
        struct grammar_matcher *m[N], *alone[N];
        for (int i = 0; i < N; i++) {
            m[i] = rg[i] ? grammar_matcher_new(rg[i]) : NULL;
            alone[i] = rg[i] ? grammar_matcher_new(rg[i]) : NULL;
            if (!rg[i]) continue;
            grammar_matcher_share(m[i], c);
            cr_assert_eq(grammar_matcher_accept(m[i], text, (size_t)at[i]), 0);
            cr_assert_eq(grammar_matcher_accept(alone[i], text, (size_t)at[i]), 0);
        }
        for (int step = 0; step < 3; step++) {
            memset(masks, 0xA5, N * words * sizeof *masks);
            int counts[N];
            int states = grammar_mask_rows(m, N, v, masks, counts, pooled ? pool : NULL);
            if (step == 0) cr_assert_eq(states, 4, "distinct states: %d", states);
            cr_assert_lt(states, N - 1, "step %d: rows in one state computed once each", step);
            for (int i = 0; i < N; i++) {
                if (!rg[i]) {
                    cr_assert_eq(counts[i], -2);
                    for (size_t w = 0; w < words; w++)
                        cr_assert_eq(masks[i * words + w], 0xA5A5A5A5u, "row %d touched", i);
                    continue;
                }
                int n_want = grammar_mask(alone[i], v, want);
                cr_assert_eq(counts[i], n_want, "row %d step %d", i, step);
                cr_assert_eq(memcmp(masks + i * words, want, words * sizeof *want), 0,
                             "row %d step %d: mask differs from its matcher's alone", i, step);
            }
            for (int i = 0; i < N; i++)
                if (rg[i]) { /* one more byte each: the groups stay (same text, same offset) */
                    cr_assert_eq(grammar_matcher_accept(m[i], text + at[i] + step, 1), 0);
                    cr_assert_eq(grammar_matcher_accept(alone[i], text + at[i] + step, 1), 0);
                }
        }
        for (int i = 0; i < N; i++) {
            grammar_matcher_free(m[i]);
            grammar_matcher_free(alone[i]);
        }
        grammar_mask_cache_free(c);
    }
    cpu_pool_destroy(pool);
    free(masks);
    free(want);
    grammar_free(g1);
    grammar_free(g2);
    grammar_free(other);
    grammar_vocab_free(v);
    tokenizer_free(tok);
}

/* Advancing by a token after its mask (grammar_matcher_accept_token follows the walk's memo)
 * reaches the state that feeding its bytes to a matcher without a memo does: equal masks and
 * accepting flags at every step of constrained walks; a token outside the mask is refused and
 * leaves the state as it was. */
Test(grammar, accept_after_mask_equals_bytes, .timeout = 120) {
    struct tokenizer *tok = smollm_tokenizer();
    struct grammar_vocab *v;
    cr_assert_eq(grammar_vocab_new(tok, &v), 0);
    uint64_t seed = tu_seed();
    size_t words = grammar_mask_words(v);
    int n = grammar_vocab_size(v);
    uint32_t *mask = calloc(words, sizeof *mask), *want = calloc(words, sizeof *want);
    int *allowed = malloc(sizeof(int) * (size_t)n);
    char err[128];
    struct grammar *gs[] = {
        schema("{\"type\":\"object\",\"properties\":{\"s\":{\"type\":\"string\",\"maxLength\":6},"
               "\"n\":{\"type\":\"number\"},\"e\":{\"enum\":[\"ab\",\"cd\"]}},\"required\":[\"s\","
               "\"n\",\"e\"]}"),
        grammar_json_object(err, sizeof err), regex("(cat|dog)s? [0-9]{1,3}(, [a-z]+)*")};
    for (size_t k = 0; k < sizeof gs / sizeof gs[0]; k++) {
        struct grammar_matcher *m = grammar_matcher_new(gs[k]), *raw = grammar_matcher_new(gs[k]);
        cr_assert(m && raw);
        for (int step = 0; step < 40; step++) {
            int count = grammar_mask(m, v, mask);
            struct grammar_matcher *probe = grammar_matcher_new(gs[k]); /* no memo of its own */
            cr_assert_eq(grammar_matcher_copy_state(probe, raw), 0);
            cr_assert_eq(grammar_mask(probe, v, want), count, "grammar %zu step %d", k, step);
            cr_assert_eq(memcmp(mask, want, words * sizeof *mask), 0, "grammar %zu step %d", k,
                         step);
            cr_assert_eq(grammar_matcher_accepting(m), grammar_matcher_accepting(raw));
            grammar_matcher_free(probe);
            int n_allowed = 0, refused = -1;
            for (int id = 0; id < n; id++) {
                if (bit(mask, id))
                    allowed[n_allowed++] = id;
                else if (refused < 0 && !tokenizer_is_special(tok, id) && (tu_next(&seed) & 7) == 0)
                    refused = id;
            }
            if (refused >= 0) { /* refused, and the state (its mask) as before */
                cr_assert_eq(grammar_matcher_accept_token(m, v, refused), -1, "token %d", refused);
                cr_assert_eq(grammar_mask(m, v, want), count);
                cr_assert_eq(memcmp(mask, want, words * sizeof *mask), 0);
            }
            int text_ids = 0; /* pick among the allowed non-end tokens */
            for (int i = 0; i < n_allowed; i++)
                if (!tokenizer_is_eog(tok, allowed[i])) allowed[text_ids++] = allowed[i];
            if (text_ids == 0) break; /* complete: only an end token may follow */
            int id = allowed[tu_next(&seed) % (uint64_t)text_ids];
            cr_assert_eq(grammar_matcher_accept_token(m, v, id), 0, "seed %llu",
                         (unsigned long long)seed);
            char b[256];
            int bl = tokenizer_token_bytes(tok, id, b, sizeof b);
            cr_assert(bl > 0);
            cr_assert_eq(grammar_matcher_accept(raw, b, (size_t)bl), 0);
        }
        grammar_matcher_free(m);
        grammar_matcher_free(raw);
        grammar_free(gs[k]);
    }
    free(allowed);
    free(mask);
    free(want);
    grammar_vocab_free(v);
    tokenizer_free(tok);
}

/* A step's advances at once (grammar_accept_rows, the worker's call) reach the states each
 * matcher reaches alone by the token's bytes: rows of one schema (two separately compiled
 * copies of it and a regex too) started a step or two apart, so that rows copy masks from a row
 * of the same step or from a walk an earlier step stored in the shared cache, and picking few
 * tokens so that rows in one state often take the same one; a refused token is refused for
 * every row that takes it and leaves its state as it was. Checked each step: the status, the
 * next step's mask and count (grammar_mask_rows) against the lone matcher's, accepting and
 * finished flags. */
Test(grammar, accept_rows_equal_alone, .timeout = 240) {
    struct tokenizer *tok = smollm_tokenizer();
    struct grammar_vocab *v;
    cr_assert_eq(grammar_vocab_new(tok, &v), 0);
    uint64_t seed = tu_seed();
    const char *sj = "{\"type\":\"object\",\"properties\":{\"s\":{\"type\":\"string\","
                     "\"maxLength\":5},\"n\":{\"type\":\"integer\"},\"e\":{\"enum\":[\"ab\","
                     "\"cd\"]}},\"required\":[\"s\",\"n\",\"e\"],\"additionalProperties\":false}";
    struct grammar *g1 = schema(sj), *g2 = schema(sj), *other = regex("(cat|dog)s? [0-9]{1,3}");
    enum { N = 23, STEPS = 36 };
    struct grammar *rg[N];
    for (int i = 0; i < N; i++)
        rg[i] = i % 11 == 10 ? NULL : i % 7 == 6 ? other : i % 3 == 2 ? g2 : g1;
    size_t words = grammar_mask_words(v);
    int nv = grammar_vocab_size(v);
    uint32_t *masks = malloc(N * words * sizeof *masks), *want = calloc(words, sizeof *want);
    int *allowed = malloc(sizeof(int) * (size_t)nv);
    struct grammar_mask_cache *c = grammar_mask_cache_new(v, (size_t)16 << 20);
    cr_assert(masks && want && allowed && c);
    struct grammar_matcher *m[N] = {0}, *alone[N] = {0}, *step_m[N];
    int counts[N], ids[N], status[N], twins = 0, refusals = 0;
    for (int step = 0; step < STEPS; step++) {
        for (int i = 0; i < N; i++)
            if (rg[i] && !m[i] && step >= i % 3) { /* a new request of row i's grammar */
                m[i] = grammar_matcher_new(rg[i]);
                alone[i] = grammar_matcher_new(rg[i]);
                cr_assert(m[i] && alone[i]);
                grammar_matcher_share(m[i], c);
            }
        cr_assert_geq(grammar_mask_rows(m, N, v, masks, counts, NULL), 0);
        for (int i = 0; i < N; i++) {
            step_m[i] = m[i];
            if (!m[i]) continue;
            int n_want = grammar_mask(alone[i], v, want);
            cr_assert_eq(counts[i], n_want, "row %d step %d", i, step);
            cr_assert_eq(memcmp(masks + i * words, want, words * sizeof *want), 0,
                         "row %d step %d: the mask differs from its lone matcher's", i, step);
            cr_assert_eq(grammar_matcher_accepting(m[i]), grammar_matcher_accepting(alone[i]));
            cr_assert_eq(grammar_matcher_finished(m[i]), grammar_matcher_finished(alone[i]));
            int k = 0, refused = -1;
            for (int id = 0; id < nv; id++)
                if (bit(masks + i * words, id))
                    allowed[k++] = id;
                else if (refused < 0 && !tokenizer_is_special(tok, id))
                    refused = id;
            cr_assert_gt(k, 0, "row %d step %d: a dead end", i, step);
            /* few choices (rows in one state collide), now and then the state's first refused
             * token (the same for every row in that state) */
            ids[i] = (i + step) % 5 == 0 && refused >= 0
                         ? refused
                         : allowed[tu_next(&seed) % (uint64_t)(k < 3 ? k : 3)];
        }
        for (int i = 0; i < N; i++)
            for (int j = 0; j < i; j++)
                twins += m[i] && m[j] && ids[i] == ids[j] && counts[i] == counts[j];
        grammar_accept_rows(step_m, N, v, ids, status);
        for (int i = 0; i < N; i++) {
            if (!m[i]) {
                cr_assert_eq(status[i], 0);
                continue;
            }
            int want_rc;
            if (tokenizer_is_eog(tok, ids[i])) {
                want_rc = grammar_matcher_accepting(alone[i]) ? 0 : -1;
            } else {
                char b[256];
                int bl = tokenizer_token_bytes(tok, ids[i], b, sizeof b);
                cr_assert(bl > 0);
                want_rc = grammar_matcher_accept(alone[i], b, (size_t)bl);
            }
            cr_assert_eq(status[i], want_rc, "row %d step %d token %d", i, step, ids[i]);
            refusals += status[i] != 0;
            if ((status[i] == 0 && tokenizer_is_eog(tok, ids[i])) ||
                grammar_matcher_finished(alone[i])) { /* done: the row's next request */
                grammar_matcher_free(m[i]);
                grammar_matcher_free(alone[i]);
                m[i] = alone[i] = NULL;
            }
        }
    }
    cr_assert_gt(twins, 0, "no two rows took one token from one state: the test lost its point");
    cr_assert_gt(refusals, 0);
    for (int i = 0; i < N; i++) {
        grammar_matcher_free(m[i]);
        grammar_matcher_free(alone[i]);
    }
    grammar_mask_cache_free(c);
    free(masks), free(want), free(allowed);
    grammar_free(g1), grammar_free(g2), grammar_free(other);
    grammar_vocab_free(v);
    tokenizer_free(tok);
}
