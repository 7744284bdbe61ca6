/* test_tokenizer.c — the BPE tokenizers against the Hugging Face `tokenizers` oracle.
 *
 * Goldens (tools/gen_tokenizer_golden.py): tests/golden/tokenizer_smollm2.json (300+ strings:
 * ids with special tokens parsed and split, decodes) and tests/golden/tokenizer_llama3pattern.json
 * (the Llama-3 pre-tokenizer over the same vocabulary). The tokenizer is built three ways and
 * every way must give exactly the oracle's ids and decodes:
 *   - from the GGUF (model_load_tokenizer → tokenizer.ggml.* → tokenizer_init);
 *   - from tokenizer.json with "a b" merges and with ["a","b"] merges, written at test time by
 *     tools/gguf_to_tokenizer_json.py (needs python3 with the `gguf` package; $PYTHON overrides).
 * SentencePiece-style and Qwen2 models (goldens from the same script, 300+ strings each):
 *   - Gemma 3's own GGUF (tokenizer.ggml.model "llama": scores, <0xNN> byte fallback, U+2581),
 *     when fetched (tools/fetch_model.py --gemma3; $FLASHGEN_GEMMA3 overrides the path);
 *   - tests/golden/tokenizer_bytefallback.model.json, a Llama-2-style byte_fallback BPE, and
 *     tests/golden/tokenizer_qwen2pattern.model.json, a byte-level BPE with Qwen2's regex, both
 *     trained by the `tokenizers` library and committed (the Qwen2 one also as a tokenizer-only
 *     GGUF with tokenizer.ggml.pre = "qwen2", and with Qwen2's NFC normalizer);
 *   - the byte-fallback model rewritten with a Metaspace pre-tokenizer (prepend_scheme first and
 *     always), as transformers' non-legacy Llama converter writes it, and in the legacy form
 *     without add_prefix_space;
 *   - tests/golden/tokenizer_spm.gguf, a tokenizer-only GGUF of a BPE model trained by the
 *     `sentencepiece` library as Llama-2's is (add_space_prefix, byte_fallback), against
 *     SentencePiece's own encode and decode.
 * Plus streaming decode across split UTF-8 characters, invalid UTF-8, pre-tokenizer pieces,
 * added-token rules on a hand-made vocabulary, errors, and encode speed.
 */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "model/model.h"
#include "model/pretok.h"
#include "model/tokenizer.h"
#include "model/unicode.h"
#include "test_util.h"

#define MODEL_PATH "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define GOLDEN_SMOLLM2 "tests/golden/tokenizer_smollm2.json"
#define GOLDEN_LLAMA3 "tests/golden/tokenizer_llama3pattern.json"
#define GOLDEN_GEMMA3 "tests/golden/tokenizer_gemma3.json"
#define GEMMA3_PATH "models/gemma-3-270m-q4_k_m.gguf"
#define BYTEFALLBACK_MODEL "tests/golden/tokenizer_bytefallback.model.json"
#define GOLDEN_BYTEFALLBACK "tests/golden/tokenizer_bytefallback.json"
#define GOLDEN_BYTEFALLBACK_NOPREFIX "tests/golden/tokenizer_bytefallback_noprefix.json"
#define GOLDEN_METASPACE_FIRST "tests/golden/tokenizer_metaspace_first.json"
#define GOLDEN_METASPACE_ALWAYS "tests/golden/tokenizer_metaspace_always.json"
#define QWEN2_MODEL "tests/golden/tokenizer_qwen2pattern.model.json"
#define GOLDEN_QWEN2 "tests/golden/tokenizer_qwen2pattern.json"
#define QWEN2_GGUF "tests/golden/tokenizer_qwen2pattern.gguf"
#define QWEN2NFC_MODEL "tests/golden/tokenizer_qwen2nfc.model.json"
#define GOLDEN_QWEN2NFC "tests/golden/tokenizer_qwen2nfc.json"
#define SPM_GGUF "tests/golden/tokenizer_spm.gguf"
#define GOLDEN_SPM "tests/golden/tokenizer_spm.json"

/* --- helpers -----------------------------------------------------------------------------------
 */

static cJSON *load_golden(const char *path) {
    char *text = tu_slurp(path, NULL);
    cr_assert(text, "cannot read %s (run from the repo root)", path);
    cJSON *doc = cJSON_Parse(text);
    free(text);
    cr_assert(doc, "bad JSON in %s", path);
    return doc;
}

/* Hex string → malloc'd bytes (NUL-terminated for printing); *n the length. */
static char *unhex(const char *hex, size_t *n) {
    size_t len = strlen(hex) / 2;
    char *out = malloc(len + 1);
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    out[len] = 0;
    *n = len;
    return out;
}

static int ids_equal(const int *a, int na, const cJSON *arr) {
    if (na != cJSON_GetArraySize(arr)) return 0;
    for (int i = 0; i < na; i++)
        if (a[i] != cJSON_GetArrayItem(arr, i)->valueint) return 0;
    return 1;
}

static void print_ids(const char *what, const int *ids, int n) {
    fprintf(stderr, "  %s:", what);
    for (int i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Decode by streaming one id at a time; malloc'd. Also checks that no chunk ends inside a
 * UTF-8 character. */
static char *stream_decode(const struct tokenizer *t, const int *ids, int n, int skip_special,
                           int *split_ok) {
    size_t cap = tok_stream_cap(t), total = 0;
    char *chunk = malloc(cap);
    char *out = malloc(1);
    struct tok_stream s;
    tok_stream_init(&s, skip_special);
    *split_ok = 1;
    for (int i = 0; i <= n; i++) {
        size_t k =
            i < n ? tok_stream_push(t, &s, ids[i], chunk, cap) : tok_stream_flush(&s, chunk, cap);
        char fixed[4 * 1024];
        size_t used;
        if (k > 0 && 3 * k <= sizeof(fixed)) {
            size_t w = unicode_utf8_lossy((const unsigned char *)chunk, k, 0, fixed, &used);
            if (used != k || w != k) *split_ok = 0; /* incomplete or invalid chunk */
        }
        out = realloc(out, total + k + 1);
        memcpy(out + total, chunk, k);
        total += k;
    }
    out[total] = 0;
    free(chunk);
    return out;
}

/* Check every golden case against T; returns the number of failures (the first few printed). */
static int check_golden(const struct tokenizer *t, const char *golden, const char *label,
                        int add_bos) {
    cJSON *doc = load_golden(golden);
    const cJSON *cases = cJSON_GetObjectItem(doc, "cases"), *c;
    int fails = 0, n_cases = 0;
    cJSON_ArrayForEach(c, cases) {
        n_cases++;
        size_t len;
        char *text = unhex(cJSON_GetObjectItem(c, "hex")->valuestring, &len);
        const cJSON *want = cJSON_GetObjectItem(c, "ids");
        const cJSON *want_split = cJSON_GetObjectItem(c, "ids_split");
        const cJSON *dec = cJSON_GetObjectItem(c, "decode");
        const cJSON *dec_skip = cJSON_GetObjectItem(c, "decode_skip");
        int *ids = NULL, n = 0, bad = 0;
        char err[256];
        cr_assert_eq(tokenizer_encode(t, text, len, 1, add_bos, &ids, &n, err, sizeof(err)), 0,
                     "%s", err);
        if (!ids_equal(ids, n, want)) {
            bad = 1;
            fprintf(stderr, "[%s] ids differ for %s\n", label,
                    cJSON_GetObjectItem(c, "text")->valuestring);
            print_ids("got ", ids, n);
        }
        if (!add_bos) {
            int *ids2 = NULL, n2 = 0;
            cr_assert_eq(tokenizer_encode(t, text, len, 0, 0, &ids2, &n2, err, sizeof(err)), 0);
            if (!ids_equal(ids2, n2, want_split ? want_split : want)) {
                bad = 1;
                fprintf(stderr, "[%s] split-special ids differ for %s\n", label,
                        cJSON_GetObjectItem(c, "text")->valuestring);
                print_ids("got ", ids2, n2);
            }
            free(ids2);
            /* decode of the oracle's ids, whole and streamed */
            int nw = cJSON_GetArraySize(want);
            int *wid = malloc(sizeof(int) * (size_t)(nw + 1));
            for (int i = 0; i < nw; i++)
                wid[i] = cJSON_GetArrayItem(want, i)->valueint;
            char *d = tokenizer_decode(t, wid, nw, 0);
            const char *dw = dec ? dec->valuestring : text;
            if (!d || strcmp(d, dw) != 0) {
                bad = 1;
                fprintf(stderr, "[%s] decode differs for case %d\n", label, n_cases - 1);
            }
            int split_ok;
            char *sd = stream_decode(t, wid, nw, 0, &split_ok);
            if (strcmp(sd, dw) != 0 || !split_ok) {
                bad = 1;
                fprintf(stderr, "[%s] stream decode differs (split_ok %d) for case %d\n", label,
                        split_ok, n_cases - 1);
            }
            char *ds = tokenizer_decode(t, wid, nw, 1);
            const char *dsw = dec_skip ? dec_skip->valuestring : dw;
            if (!ds || strcmp(ds, dsw) != 0) {
                bad = 1;
                fprintf(stderr, "[%s] skip-special decode differs for case %d\n", label,
                        n_cases - 1);
            }
            free(d);
            free(ds);
            free(sd);
            free(wid);
        }
        fails += bad;
        free(ids);
        free(text);
    }
    cr_assert_gt(n_cases, 0, "no cases in %s", golden);
    cJSON_Delete(doc);
    return fails;
}

static struct tokenizer *load_gguf_tokenizer(char **tmpl) {
    struct tokenizer *t = NULL;
    char err[512];
    cr_assert_eq(model_load_tokenizer(MODEL_PATH, &t, tmpl, err, sizeof(err)), 0, "%s", err);
    return t;
}

/* --- goldens -----------------------------------------------------------------------------------
 */

Test(tokenizer, gguf_matches_hf_golden, .timeout = 120) {
    char *tmpl = NULL;
    struct tokenizer *t = load_gguf_tokenizer(&tmpl);
    cr_assert_eq(tokenizer_n_vocab(t), 49152);
    cr_assert_eq(tokenizer_pre(t), TOK_PRE_SMOLLM);
    cr_assert_eq(tokenizer_bos(t), 1);
    cr_assert_eq(tokenizer_eos(t), 2);
    cr_assert_eq(tokenizer_add_bos(t), 0);
    cr_assert(tokenizer_is_eog(t, 2) && tokenizer_is_eog(t, 0) && !tokenizer_is_eog(t, 1));
    cr_assert(tokenizer_is_special(t, 1) && !tokenizer_is_special(t, 100));
    cr_assert_eq(tokenizer_find(t, "<|im_end|>"), 2);
    cr_assert_eq(tokenizer_find(t, "no such token"), -1);
    cr_assert_str_eq(tokenizer_token_text(t, 1), "<|im_start|>");
    cr_assert(tmpl && strstr(tmpl, "<|im_start|>"));
    int fails = check_golden(t, GOLDEN_SMOLLM2, "gguf", 0);
    cr_assert_eq(fails, 0, "%d golden cases failed (see stderr)", fails);
    tokenizer_free(t);
    free(tmpl);
}

/* Writes the tokenizer.json variants for this process into DIR (under tests/tmp). */
static void write_json_variants(char *dir, size_t cap) {
    snprintf(dir, cap, "tests/tmp/tok-%d", (int)getpid());
    const char *py = getenv("PYTHON") ? getenv("PYTHON") : "python3";
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "mkdir -p tests/tmp && %s tools/gguf_to_tokenizer_json.py %s %s >/dev/null", py,
             MODEL_PATH, dir);
    int rc = system(cmd);
    cr_assert_eq(rc, 0, "'%s' failed (needs python3 with the gguf package)", cmd);
}

static void remove_json_variants(const char *dir) {
    static const char *const variants[] = {"smollm2-legacy", "smollm2-pairs", "llama3-pattern"};
    char p[512];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s/%s/tokenizer.json", dir, variants[i]);
        unlink(p);
        snprintf(p, sizeof(p), "%s/%s/tokenizer_config.json", dir, variants[i]);
        unlink(p);
        snprintf(p, sizeof(p), "%s/%s", dir, variants[i]);
        rmdir(p);
    }
    rmdir(dir);
}

Test(tokenizer, json_matches_hf_golden, .timeout = 180) {
    char dir[256], path[512], err[512];
    write_json_variants(dir, sizeof(dir));
    char *gguf_tmpl = NULL;
    struct tokenizer *g = load_gguf_tokenizer(&gguf_tmpl);

    static const char *const forms[] = {"smollm2-legacy", "smollm2-pairs"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/%s/tokenizer.json", dir, forms[i]);
        struct tokenizer *t = NULL;
        char *tmpl = NULL;
        cr_assert_eq(tokenizer_from_json(path, &t, &tmpl, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(tokenizer_pre(t), TOK_PRE_SMOLLM);
        cr_assert_eq(tokenizer_n_vocab(t), 49152);
        cr_assert_eq(tokenizer_bos(t), 1);
        cr_assert_eq(tokenizer_eos(t), 2);
        cr_assert_eq(tokenizer_add_bos(t), 0);
        cr_assert(tokenizer_is_special(t, 0) && tokenizer_is_eog(t, 0));
        cr_assert(tmpl && gguf_tmpl && strcmp(tmpl, gguf_tmpl) == 0, "chat template differs");
        for (int id = 0; id < 49152; id++) /* same vocabulary as the GGUF, byte for byte */
            cr_assert_str_eq(tokenizer_token_text(t, id), tokenizer_token_text(g, id));
        int fails = check_golden(t, GOLDEN_SMOLLM2, forms[i], 0);
        cr_assert_eq(fails, 0, "%s: %d golden cases failed (see stderr)", forms[i], fails);
        tokenizer_free(t);
        free(tmpl);
    }

    snprintf(path, sizeof(path), "%s/llama3-pattern/tokenizer.json", dir);
    struct tokenizer *t = NULL;
    char *tmpl = (char *)1;
    cr_assert_eq(tokenizer_from_json(path, &t, &tmpl, err, sizeof(err)), 0, "%s", err);
    cr_assert_null(tmpl); /* no tokenizer_config.json beside it */
    cr_assert_eq(tokenizer_pre(t), TOK_PRE_LLAMA3);
    cr_assert_eq(tokenizer_bos(t), 0); /* from the TemplateProcessing post-processor */
    cr_assert_eq(tokenizer_add_bos(t), 1);
    int fails = check_golden(t, GOLDEN_LLAMA3, "llama3-pattern", 1);
    cr_assert_eq(fails, 0, "llama3-pattern: %d golden cases failed (see stderr)", fails);
    tokenizer_free(t);
    tokenizer_free(g);
    free(gguf_tmpl);
    remove_json_variants(dir);
}

/* --- SentencePiece and Qwen2 ------------------------------------------------------------------
 */

Test(tokenizer, gemma3_gguf_matches_hf_golden, .timeout = 120) {
    const char *path = getenv("FLASHGEN_GEMMA3") ? getenv("FLASHGEN_GEMMA3") : GEMMA3_PATH;
    if (access(path, R_OK) != 0)
        cr_skip_test("%s not fetched (python3 tools/fetch_model.py --gemma3)", path);
    struct tokenizer *t = NULL;
    char err[512], *tmpl = NULL;
    cr_assert_eq(model_load_tokenizer(path, &t, &tmpl, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(tokenizer_n_vocab(t), 262144);
    cr_assert_eq(tokenizer_pre(t), TOK_PRE_NONE);
    cr_assert_eq(tokenizer_bos(t), 2);
    cr_assert_eq(tokenizer_eos(t), 1);
    cr_assert_eq(tokenizer_add_bos(t), 1);
    cr_assert(tokenizer_is_eog(t, 1) && tokenizer_is_eog(t, 106) && !tokenizer_is_eog(t, 105));
    cr_assert_eq(tokenizer_find(t, "<start_of_turn>"), 105);
    for (int b = 0; b < 256; b++)
        cr_assert(tokenizer_has_byte(t, (unsigned char)b), "no <0x%02X>", b);
    char buf[8];
    cr_assert_eq(tokenizer_token_bytes(t, 238 + 0x41, buf, sizeof(buf)), 1); /* <0x41> */
    cr_assert_eq(buf[0], 'A');
    int fails = check_golden(t, GOLDEN_GEMMA3, "gemma3", 0);
    cr_assert_eq(fails, 0, "gemma3: %d golden cases failed (see stderr)", fails);
    /* add_bos puts <bos> first */
    int *ids = NULL, n = 0;
    cr_assert_eq(tokenizer_encode(t, "Hello world", 11, 1, 1, &ids, &n, err, sizeof(err)), 0);
    cr_assert(n == 3 && ids[0] == 2 && ids[1] == 9259 && ids[2] == 1902);
    free(ids);
    tokenizer_free(t);
    free(tmpl);
}

Test(tokenizer, spm_gguf_matches_sentencepiece, .timeout = 60) {
    struct tokenizer *t = NULL;
    char err[512];
    cr_assert_eq(model_load_tokenizer(SPM_GGUF, &t, NULL, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(tokenizer_n_vocab(t), 1000);
    cr_assert_eq(tokenizer_bos(t), 1);
    cr_assert_eq(tokenizer_add_bos(t), 1);
    cr_assert_eq(tokenizer_find(t, "<0x41>"), 3 + 0x41);
    int fails = check_golden(t, GOLDEN_SPM, "spm", 0);
    cr_assert_eq(fails, 0, "spm: %d golden cases failed (see stderr)", fails);
    /* add_space_prefix: every stretch between added tokens gets its own U+2581 (llama.cpp) */
    int *a = NULL, *b = NULL, na = 0, nb = 0;
    cr_assert_eq(tokenizer_encode(t, "<s>hi</s>hi", 11, 1, 0, &a, &na, err, sizeof(err)), 0);
    cr_assert_eq(tokenizer_encode(t, "hi", 2, 1, 0, &b, &nb, err, sizeof(err)), 0);
    cr_assert(na == 2 * nb + 2 && a[0] == 1 && a[nb + 1] == 2);
    for (int i = 0; i < nb; i++)
        cr_assert(a[1 + i] == b[i] && a[nb + 2 + i] == b[i]);
    free(a);
    free(b);
    tokenizer_free(t);
}

Test(tokenizer, bytefallback_json_matches_hf_golden, .timeout = 60) {
    struct tokenizer *t = NULL;
    char err[512], *tmpl = (char *)1;
    cr_assert_eq(tokenizer_from_json(BYTEFALLBACK_MODEL, &t, &tmpl, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_null(tmpl);
    cr_assert_eq(tokenizer_pre(t), TOK_PRE_NONE);
    cr_assert_eq(tokenizer_bos(t), 1); /* <s> from the TemplateProcessing post-processor */
    cr_assert_eq(tokenizer_add_bos(t), 1);
    cr_assert_eq(tokenizer_find(t, "<0x00>"), 3);
    int fails = check_golden(t, GOLDEN_BYTEFALLBACK, "bytefallback", 0);
    cr_assert_eq(fails, 0, "bytefallback: %d golden cases failed (see stderr)", fails);
    /* Strip(" ", 1, 0): the prefixed space is gone from the decode, also when streamed */
    int *ids = NULL, n = 0, split_ok;
    cr_assert_eq(tokenizer_encode(t, "hello world", 11, 1, 1, &ids, &n, err, sizeof(err)), 0);
    cr_assert(n > 1 && ids[0] == 1);
    char *d = tokenizer_decode(t, ids, n, 1), *sd = stream_decode(t, ids, n, 1, &split_ok);
    cr_assert_str_eq(d, "hello world");
    cr_assert_str_eq(sd, "hello world");
    free(d);
    free(sd);
    free(ids);
    tokenizer_free(t);
}

/* The byte-fallback model rewritten by EDIT (with ARG), written under tests/tmp and checked
 * against GOLDEN. */
static void check_variant(void (*edit)(cJSON *, const char *), const char *arg,
                          const char *golden) {
    char *text = tu_slurp(BYTEFALLBACK_MODEL, NULL);
    cr_assert(text);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cr_assert(j);
    edit(j, arg);
    char *out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    char dir[128], path[256], err[512];
    snprintf(dir, sizeof(dir), "tests/tmp/tok-meta-%d", (int)getpid());
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "mkdir -p %s", dir);
    cr_assert_eq(system(cmd), 0);
    FILE *f = fopen(path, "w");
    cr_assert(f && fputs(out, f) >= 0);
    fclose(f);
    free(out);
    struct tokenizer *t = NULL;
    cr_assert_eq(tokenizer_from_json(path, &t, NULL, err, sizeof(err)), 0, "%s", err);
    int fails = check_golden(t, golden, arg, 0);
    cr_assert_eq(fails, 0, "%s: %d golden cases failed (see stderr)", golden, fails);
    tokenizer_free(t);
    unlink(path);
    rmdir(dir);
}

/* transformers' non-legacy form: no normalizer, Metaspace(prepend_scheme SCHEME, split false) */
static void edit_metaspace(cJSON *j, const char *scheme) {
    cJSON_ReplaceItemInObject(j, "normalizer", cJSON_CreateNull());
    cJSON *pre = cJSON_CreateObject();
    cJSON_AddStringToObject(pre, "type", "Metaspace");
    cJSON_AddStringToObject(pre, "replacement", "\xe2\x96\x81");
    cJSON_AddStringToObject(pre, "prepend_scheme", scheme);
    cJSON_AddFalseToObject(pre, "split");
    cJSON_ReplaceItemInObject(j, "pre_tokenizer", pre);
}

/* the legacy form without add_prefix_space: normalizer Sequence[Replace], no Strip decoder */
static void edit_noprefix(cJSON *j, const char *unused) {
    (void)unused;
    cJSON *norms = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "normalizer"), "normalizers");
    cJSON_DeleteItemFromArray(norms, 0); /* Prepend */
    cJSON_DeleteItemFromArray(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "decoder"), "decoders"),
                              3); /* Strip */
}

Test(tokenizer, metaspace_and_noprefix_json_match_hf_golden, .timeout = 60) {
    check_variant(edit_metaspace, "first", GOLDEN_METASPACE_FIRST);
    check_variant(edit_metaspace, "always", GOLDEN_METASPACE_ALWAYS);
    check_variant(edit_noprefix, "noprefix", GOLDEN_BYTEFALLBACK_NOPREFIX);
}

Test(tokenizer, qwen2_json_matches_hf_golden, .timeout = 60) {
    struct tokenizer *t = NULL;
    char err[512];
    cr_assert_eq(tokenizer_from_json(QWEN2_MODEL, &t, NULL, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(tokenizer_pre(t), TOK_PRE_QWEN2);
    int fails = check_golden(t, GOLDEN_QWEN2, "qwen2pattern", 0);
    cr_assert_eq(fails, 0, "qwen2pattern: %d golden cases failed (see stderr)", fails);
    tokenizer_free(t);
}

Test(tokenizer, qwen2_nfc_json_matches_hf_golden, .timeout = 60) {
    struct tokenizer *t = NULL;
    char err[512];
    cr_assert_eq(tokenizer_from_json(QWEN2NFC_MODEL, &t, NULL, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(tokenizer_pre(t), TOK_PRE_QWEN2);
    int fails = check_golden(t, GOLDEN_QWEN2NFC, "qwen2nfc", 0);
    cr_assert_eq(fails, 0, "qwen2nfc: %d golden cases failed (see stderr)", fails);
    tokenizer_free(t);
}

Test(tokenizer, qwen2_gguf_matches_hf_golden_and_unknown_pre_is_named, .timeout = 60) {
    struct tokenizer *t = NULL;
    char err[512];
    cr_assert_eq(model_load_tokenizer(QWEN2_GGUF, &t, NULL, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(tokenizer_pre(t), TOK_PRE_QWEN2);
    int fails = check_golden(t, GOLDEN_QWEN2, "qwen2pattern-gguf", 0);
    cr_assert_eq(fails, 0, "qwen2pattern-gguf: %d golden cases failed (see stderr)", fails);
    tokenizer_free(t);

    /* the same file with tokenizer.ggml.pre = "qwenX": refused, naming the value */
    size_t n;
    char *b = tu_slurp(QWEN2_GGUF, &n);
    cr_assert(b);
    static const char key[] = "tokenizer.ggml.pre";
    char *at = memmem(b, n, key, sizeof(key) - 1);
    cr_assert(at);
    at += sizeof(key) - 1 + 4 + 8; /* value type (u32), string length (u64) */
    cr_assert(memcmp(at, "qwen2", 5) == 0);
    at[4] = 'X';
    char path[256];
    snprintf(path, sizeof(path), "tests/tmp/tok-pre-%d.gguf", (int)getpid());
    cr_assert_eq(system("mkdir -p tests/tmp"), 0);
    FILE *f = fopen(path, "wb");
    cr_assert(f && fwrite(b, 1, n, f) == n);
    fclose(f);
    free(b);
    t = (struct tokenizer *)1;
    cr_assert_eq(model_load_tokenizer(path, &t, NULL, err, sizeof(err)), -1);
    cr_assert_null(t);
    cr_assert(strstr(err, "pre-tokenizer 'qwenX' is not supported"), "%s", err);
    unlink(path);
}

/* --- streaming and invalid UTF-8 ---------------------------------------------------------------
 */

Test(tokenizer, stream_never_splits_characters, .timeout = 60) {
    struct tokenizer *t = load_gguf_tokenizer(NULL);
    static const char *const texts[] = {
        "👨‍👩‍👧‍👦 family 🇺🇸🇫🇷 and 😀😁🤖🚀✨ mixed with "
        "你好，世界 "
        "and "
        "日本語のテキスト",
        "🙂🙂🙂🙂🙂🙂",
        "Привет, мир! नमस्ते दुनिया ก้ำ 한국어",
        "<|im_start|>😀<|im_end|>ü",
    };
    int saw_partial = 0;
    for (size_t k = 0; k < sizeof(texts) / sizeof(texts[0]); k++) {
        int *ids, n;
        char err[256];
        cr_assert_eq(
            tokenizer_encode(t, texts[k], strlen(texts[k]), 1, 0, &ids, &n, err, sizeof(err)), 0);
        for (int i = 0; i < n; i++) { /* the test is only meaningful if tokens split chars */
            char b[256];
            int m = tokenizer_token_bytes(t, ids[i], b, sizeof(b));
            size_t used;
            char tmp[768];
            unicode_utf8_lossy((unsigned char *)b, (size_t)m, 0, tmp, &used);
            if (used != (size_t)m) saw_partial = 1;
        }
        for (int skip = 0; skip <= 1; skip++) {
            char *full = tokenizer_decode(t, ids, n, skip);
            int ok;
            char *streamed = stream_decode(t, ids, n, skip, &ok);
            cr_assert(ok, "a streamed chunk ended inside a character (text %zu)", k);
            cr_assert_str_eq(streamed, full);
            if (!skip) cr_assert_str_eq(full, texts[k]);
            free(full);
            free(streamed);
        }
        /* cut the sequence inside a character: the flush gives one U+FFFD */
        char b[8];
        int last = -1;
        for (int i = 0; i < n && last < 0; i++) {
            int m = tokenizer_token_bytes(t, ids[i], b, sizeof(b));
            if (m == 1 && (unsigned char)b[0] >= 0xC0) last = i; /* a lead byte alone */
        }
        if (last >= 0) {
            char *full = tokenizer_decode(t, ids, last + 1, 0);
            int ok;
            char *streamed = stream_decode(t, ids, last + 1, 0, &ok);
            cr_assert_str_eq(streamed, full);
            cr_assert(strstr(full, "\xEF\xBF\xBD") != NULL);
            free(full);
            free(streamed);
        }
        free(ids);
    }
    cr_assert(saw_partial, "no token split a UTF-8 character; the test proves nothing");
    tokenizer_free(t);
}

Test(tokenizer, invalid_utf8_roundtrips_bytes) {
    struct tokenizer *t = load_gguf_tokenizer(NULL);
    /* invalid sequences made of bytes the vocabulary has (0xFF, 0xFE, 0xC0 ... it lacks) */
    const char text[] =
        "ok \x80\xbf bad \xc3 cut \xe4\xbd\xa0\xe5 \xed\xa0\x80 surrogate \xf4\x90 end";
    size_t len = sizeof(text) - 1;
    int *ids, n;
    char err[256];
    cr_assert_eq(tokenizer_encode(t, text, len, 1, 0, &ids, &n, err, sizeof(err)), 0);
    char raw[256];
    size_t o = 0;
    for (int i = 0; i < n; i++)
        o += (size_t)tokenizer_token_bytes(t, ids[i], raw + o, sizeof(raw) - o);
    cr_assert_eq(o, len);
    cr_assert(memcmp(raw, text, len) == 0, "token bytes do not give the input back");
    char *d = tokenizer_decode(t, ids, n, 0);
    char want[512];
    size_t w = unicode_utf8_lossy((const unsigned char *)text, len, 1, want, NULL);
    want[w] = 0;
    cr_assert_str_eq(d, want);
    free(d);
    free(ids);
    /* a NUL byte survives the round trip; decode_len reports it */
    cr_assert_eq(tokenizer_encode(t, "a\0b", 3, 1, 0, &ids, &n, err, sizeof(err)), 0);
    size_t dl = 0;
    d = tokenizer_decode_len(t, ids, n, 0, &dl);
    cr_assert_eq(dl, 3);
    cr_assert(memcmp(d, "a\0b", 4) == 0);
    free(d);
    free(ids);
    /* bytes without a symbol are dropped, as HF does */
    cr_assert(tokenizer_has_byte(t, 'a') && !tokenizer_has_byte(t, 0x04) &&
              !tokenizer_has_byte(t, 0xFF));
    cr_assert_eq(tokenizer_encode(t,
                                  "a\xff\x04"
                                  "b",
                                  4, 1, 0, &ids, &n, err, sizeof(err)),
                 0);
    d = tokenizer_decode(t, ids, n, 0);
    cr_assert_str_eq(d, "ab");
    free(d);
    free(ids);
    tokenizer_free(t);
}

/* --- Unicode and pre-tokenizer units -----------------------------------------------------------
 */

static void lossy_is(const char *in, size_t n, const char *want) {
    char out[64];
    size_t w = unicode_utf8_lossy((const unsigned char *)in, n, 1, out, NULL);
    out[w] = 0;
    cr_assert_str_eq(out, want);
}

#define FFFD "\xEF\xBF\xBD"

Test(unicode, lossy_follows_maximal_subparts) {
    lossy_is("a\xC0\x80z", 4, "a" FFFD FFFD "z");         /* overlong lead alone */
    lossy_is("\xE0\x80\x80", 3, FFFD FFFD FFFD);          /* E0 needs A0..BF */
    lossy_is("\xED\xA0\x80", 3, FFFD FFFD FFFD);          /* surrogate */
    lossy_is("\xF4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD); /* > U+10FFFF */
    lossy_is("\xE4\xBD", 2, FFFD);                        /* truncated: one */
    lossy_is("\xE4\xBDx", 3, FFFD "x");
    lossy_is("\xF0\x9F\x98\x80", 4, "\xF0\x9F\x98\x80");
    lossy_is("\xFF", 1, FFFD);
    char out[16];
    size_t used;
    size_t w = unicode_utf8_lossy((const unsigned char *)"a\xF0\x9F\x98", 4, 0, out, &used);
    cr_assert_eq(w, 1);
    cr_assert_eq(used, 1); /* the unfinished emoji is left */
}

static void nfc_is(const char *in, const char *want) {
    char *out;
    size_t n;
    cr_assert_eq(unicode_nfc(in, strlen(in), &out, &n), 0);
    cr_assert(n == strlen(want) && memcmp(out, want, n) == 0, "NFC of \"%s\"", in);
    free(out);
}

/* Expected values from Python's unicodedata.normalize("NFC", ...). */
Test(unicode, nfc) {
    nfc_is("", "");
    nfc_is("plain ascii", "plain ascii");
    nfc_is("e\xcc\x81", "\xc3\xa9");                                /* e + U+0301 -> é */
    nfc_is("\xe2\x84\xab", "\xc3\x85");                             /* U+212B -> Å */
    nfc_is("\xe0\xa5\x98", "\xe0\xa4\x95\xe0\xa4\xbc");             /* U+0958 excluded */
    nfc_is("a\xcc\x87\xcc\xa3", "\xe1\xba\xa1\xcc\x87");            /* reorder, compose */
    nfc_is("\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8", "\xea\xb0\x81"); /* jamo L V T */
    nfc_is("\xcc\x81x", "\xcc\x81x");                               /* leading mark */
    nfc_is("e\xff\xcc\x81", "e\xff\xcc\x81");                       /* invalid byte blocks */
    nfc_is("\xc3\xa9", "\xc3\xa9");
}

Test(unicode, classes) {
    cr_assert_eq(unicode_class('a'), UNICODE_L);
    cr_assert_eq(unicode_class('7'), UNICODE_N);
    cr_assert_eq(unicode_class(' '), UNICODE_SPACE);
    cr_assert_eq(unicode_class('\n'), UNICODE_SPACE);
    cr_assert_eq(unicode_class('.'), 0);
    cr_assert_eq(unicode_class(0x4F60), UNICODE_L); /* 你 */
    cr_assert_eq(unicode_class(0x00BD), UNICODE_N); /* ½ */
    cr_assert_eq(unicode_class(0x0663), UNICODE_N); /* ٣ */
    cr_assert_eq(unicode_class(0x3000), UNICODE_SPACE);
    cr_assert_eq(unicode_class(0x0085), UNICODE_SPACE);
    cr_assert_eq(unicode_class(0x001C), 0);  /* isspace() in Python, not White_Space */
    cr_assert_eq(unicode_class(0x0301), 0);  /* combining mark */
    cr_assert_eq(unicode_class(0x1F600), 0); /* emoji */
    cr_assert_eq(unicode_class(0x10FFFF), 0);
}

/* Pieces of TEXT under PRE joined with '|'. */
static void pieces_are(enum tok_pre pre, const char *text, const char *want) {
    size_t len = strlen(text), ends[256], n;
    cr_assert_eq(pretok_split(pre, text, len, ends, &n), 0);
    char got[512];
    size_t o = 0, a = 0;
    for (size_t i = 0; i < n; i++) {
        if (i) got[o++] = '|';
        memcpy(got + o, text + a, ends[i] - a);
        o += ends[i] - a;
        a = ends[i];
    }
    got[o] = 0;
    cr_assert_eq(a, len);
    cr_assert_str_eq(got, want, "pre %d on \"%s\"", (int)pre, text);
}

Test(pretok, gpt2_smollm_llama3_pieces) {
    pieces_are(TOK_PRE_GPT2, "a   b", "a|  | b");
    pieces_are(TOK_PRE_GPT2, "\n\nHi", "\n|\n|Hi");
    pieces_are(TOK_PRE_GPT2, "trailing  ", "trailing|  ");
    pieces_are(TOK_PRE_GPT2, "I'm don't 'S", "I|'m| don|'t| '|S");
    pieces_are(TOK_PRE_GPT2, "a 12 x", "a| 12| x");
    pieces_are(TOK_PRE_GPT2, "x?!  (y)", "x|?!| | (|y|)");
    pieces_are(TOK_PRE_SMOLLM, "a 12 x", "a| |1|2| x");
    pieces_are(TOK_PRE_SMOLLM, "v1.2  33 x", "v|1|.|2|  |3|3| x");
    pieces_are(TOK_PRE_LLAMA3, "I'M fine", "I|'M| fine");
    pieces_are(TOK_PRE_LLAMA3, "1234567", "123|456|7");
    pieces_are(TOK_PRE_LLAMA3, "\thello (world)", "\thello| (|world|)");
    pieces_are(TOK_PRE_LLAMA3, "x \n\n  y", "x| \n\n| | y");
    pieces_are(TOK_PRE_LLAMA3, "a?!\r\nb", "a|?!\r\n|b");
    pieces_are(TOK_PRE_LLAMA3, " 1", " |1");
    pieces_are(TOK_PRE_QWEN2, "1234567", "1|2|3|4|5|6|7");
    pieces_are(TOK_PRE_QWEN2, "I'M 12 fine", "I|'M| |1|2| fine");
    pieces_are(TOK_PRE_QWEN2, "x \n\n  y", "x| \n\n| | y");
    pieces_are(TOK_PRE_NONE, "a  b\n 1", "a  b\n 1");
}

/* --- added tokens on a hand-made vocabulary ----------------------------------------------------
 */

/* GPT-2 byte → unicode, for building byte symbols in tests. */
static int test_byte_cp(int b) {
    if (b <= 0x20) return 256 + b;
    if (b >= 0x7F && b <= 0xA0) return 256 + 33 + (b - 0x7F);
    if (b == 0xAD) return 256 + 67;
    return b;
}

Test(tokenizer, added_tokens_and_merges_on_tiny_vocab) {
    /* ids 0..255 byte symbols; 256 "ab"; 257 "abc"; 258 <s> (control); 259 <tool> (user) */
    enum { N = 260 };
    char store[N][16];
    const char *toks[N];
    int32_t types[N];
    for (int b = 0; b < 256; b++) {
        int k = unicode_utf8_encode((uint32_t)test_byte_cp(b), store[b]);
        store[b][k] = 0;
        toks[b] = store[b];
        types[b] = TOK_TYPE_NORMAL;
    }
    toks[256] = "ab";
    toks[257] = "abc";
    toks[258] = "<s>";
    toks[259] = "<tool>";
    types[256] = types[257] = TOK_TYPE_NORMAL;
    types[258] = TOK_TYPE_CONTROL;
    types[259] = TOK_TYPE_USER_DEFINED;
    const char *ml[] = {"a", "ab"}, *mr[] = {"b", "c"};
    struct tokenizer_spec sp = {0};
    sp.n_tokens = N;
    sp.tokens = toks;
    sp.token_types = types;
    sp.n_merges = 2;
    sp.merge_left = ml;
    sp.merge_right = mr;
    sp.pre = TOK_PRE_GPT2;
    sp.bos_id = 258;
    sp.eos_id = sp.eot_id = sp.pad_id = sp.unk_id = -1;
    sp.add_bos = 1;
    struct tokenizer *t;
    char err[256];
    cr_assert_eq(tokenizer_init(&sp, &t, err, sizeof(err)), 0, "%s", err);
    int *ids, n;
    const char *text = "abc<s>ab<tool>";
    cr_assert_eq(tokenizer_encode(t, text, strlen(text), 1, 1, &ids, &n, err, sizeof(err)), 0);
    int want1[] = {258, 257, 258, 256, 259};
    cr_assert_eq(n, 5);
    cr_assert_arr_eq(ids, want1, sizeof(want1));
    free(ids);
    /* parse_special off: the control token is text, the user-defined one is still recognised */
    cr_assert_eq(tokenizer_encode(t, text, strlen(text), 0, 0, &ids, &n, err, sizeof(err)), 0);
    int want2[] = {257, '<', 's', '>', 256, 259};
    cr_assert_eq(n, 6);
    cr_assert_arr_eq(ids, want2, sizeof(want2));
    char *d = tokenizer_decode(t, ids, n, 1);
    cr_assert_str_eq(d, text);
    free(d);
    free(ids);
    cr_assert_eq(tokenizer_encode(t, "", 0, 1, 0, &ids, &n, err, sizeof(err)), 0);
    cr_assert_eq(n, 0);
    cr_assert_not_null(ids);
    free(ids);
    tokenizer_free(t);

    sp.bos_id = N; /* out of range */
    cr_assert_eq(tokenizer_init(&sp, &t, err, sizeof(err)), -1);
    cr_assert(strstr(err, "bos"), "%s", err);
    tokenizer_free(NULL);
}

Test(tokenizer, json_rejects_unknown_pipeline) {
    const char *dir = "tests/tmp";
    char path[256], err[512];
    snprintf(path, sizeof(path), "%s/tok-bad-%d.json", dir, (int)getpid());
    cr_assert_eq(system("mkdir -p tests/tmp"), 0);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("{\"version\":\"1.0\",\"added_tokens\":[],\"normalizer\":null,"
          "\"pre_tokenizer\":{\"type\":\"Metaspace\"},"
          "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
          f);
    fclose(f);
    struct tokenizer *t = (struct tokenizer *)1;
    cr_assert_eq(tokenizer_from_json(path, &t, NULL, err, sizeof(err)), -1);
    cr_assert_null(t);
    cr_assert(strstr(err, "unsupported pre_tokenizer"), "%s", err);
    /* byte_fallback with a splitting Metaspace: refused, naming what it got */
    f = fopen(path, "w");
    cr_assert(f);
    fputs("{\"version\":\"1.0\",\"added_tokens\":[],\"normalizer\":null,"
          "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\","
          "\"prepend_scheme\":\"always\",\"split\":true},"
          "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{\"a\":0},"
          "\"merges\":[]}}",
          f);
    fclose(f);
    cr_assert_eq(tokenizer_from_json(path, &t, NULL, err, sizeof(err)), -1);
    cr_assert(strstr(err, "byte_fallback BPE needs") && strstr(err, "pre_tokenizer Metaspace"),
              "%s", err);
    unlink(path);
    cr_assert_eq(tokenizer_from_json("tests/tmp/does-not-exist.json", &t, NULL, err, sizeof(err)),
                 -1);
}

/* --- speed -------------------------------------------------------------------------------------
 */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

Test(tokenizer, encode_is_fast, .timeout = 60) {
    struct tokenizer *t = load_gguf_tokenizer(NULL);
    const char *chunk = "Large language models (LLMs) are trained on 1.5 trillion tokens; they "
                        "write code, e.g. `print('hi')`, translate 你好 → hello. 🚀\n\n"
                        "def f(x):\n    return [i * 2 for i in range(x)]\n";
    size_t cl = strlen(chunk), len = 0, cap = 64 * 1024;
    char *text = malloc(cap + 1);
    while (len + cl <= cap) {
        memcpy(text + len, chunk, cl);
        len += cl;
    }
    int *ids, n;
    char err[256];
    double t0 = now_s();
    for (int r = 0; r < 5; r++) {
        cr_assert_eq(tokenizer_encode(t, text, len, 1, 0, &ids, &n, err, sizeof(err)), 0);
        free(ids);
    }
    double us_per_kb = (now_s() - t0) / 5 * 1e6 / ((double)len / 1024);
    fprintf(stderr, "tokenizer: encode %.1f us/KB (%zu bytes, %d ids)\n", us_per_kb, len, n);
    cr_expect_lt(us_per_kb, 1000.0, "encode takes %.1f us per KB", us_per_kb);

    /* pathological pieces: one run of 64K spaces, one of 64K letters (heap BPE, not n^2) */
    for (int k = 0; k < 2; k++) {
        memset(text, k ? 'a' : ' ', cap);
        t0 = now_s();
        cr_assert_eq(tokenizer_encode(t, text, cap, 1, 0, &ids, &n, err, sizeof(err)), 0);
        double dt = now_s() - t0;
        free(ids);
        cr_expect_lt(dt, 0.5, "64 KB run of '%c' took %.3f s", k ? 'a' : ' ', dt);
    }
    free(text);
    tokenizer_free(t);
}
