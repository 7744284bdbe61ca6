/* fuzz_tokenizer.c — libFuzzer target: arbitrary bytes through encode, decode and streaming decode.
 *
 * The tokenizer is the real SmolLM2 one (models/SmolLM2-135M-Instruct.Q4_1.gguf, or the file in
 * $FUZZ_TOKENIZER_MODEL), loaded once in LLVMFuzzerInitialize; without the model a small
 * byte-level tokenizer (all 256 bytes, a few merges, ChatML specials) is built with
 * tokenizer_init so the target still runs in a bare checkout.
 *
 * A second, SentencePiece-style tokenizer (U+2581, <0xNN> byte fallback, merges by score,
 * add_space_prefix) is tests/golden/tokenizer_spm.gguf (or $FUZZ_TOKENIZER_SPM); without it a
 * tiny one is built with tokenizer_init.
 *
 * Input layout: byte 0 holds flags, the rest is the payload.
 *   bit 0 parse_special, bit 1 add_bos, bit 2 skip_special (decoding),
 *   bit 3 ids mode: the payload is little-endian u16 token ids (some outside the vocabulary)
 *         fed straight to decode, instead of text to encode,
 *   bit 4 use the SentencePiece tokenizer,
 *   bit 5 (without bit 4) use the Qwen2-pattern BPE with the NFC normalizer
 *         (tests/golden/tokenizer_qwen2nfc.model.json, when present; else the first tokenizer).
 * Properties checked (abort() on violation, so libFuzzer keeps the input):
 *   - every encoded id lies in the vocabulary;
 *   - streaming decode, one id at a time, then flush, equals tokenizer_decode of the sequence
 *     (up to a decoded NUL byte, where the C string of tokenizer_decode ends);
 *   - decode(encode(text)) == text when text is valid UTF-8 without NUL, every byte of it has a
 *     byte-level token in the vocabulary, add_bos is off and nothing is skipped; for the
 *     SentencePiece tokenizer (every byte has a <0xNN> token) when parse_special is also off
 *     (each stretch after an added token gets its own space prefix) and the text holds no
 *     U+2581 (which decodes to ' ', as in HF and SentencePiece);
 *   - the same text rendered as a chat message encodes with parse_special on.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/tokenizer.h"

static struct tokenizer *g_tok, *g_bpe, *g_spm, *g_nfc;
static unsigned char g_has_byte[256]; /* 1 when the byte's byte-level token is in the vocab */

/* GPT-2 bytes_to_unicode: byte B as the UTF-8 of its byte-level character. */
static void byte_level(unsigned b, char *out) {
    unsigned cp;
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)) {
        cp = b;
    } else {
        unsigned k = 0; /* rank of b among the remapped bytes */
        for (unsigned x = 0; x < b; x++)
            if (!((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || (x >= 0xae && x <= 0xff)))
                k++;
        cp = 256 + k;
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

static struct tokenizer *tiny_tokenizer(void) {
    enum { NB = 256, NM = 4, NS = 3, N = NB + NM + NS };
    static char bytes[NB][4];
    const char *toks[N];
    int32_t types[N];
    for (int i = 0; i < NB; i++) {
        byte_level((unsigned)i, bytes[i]);
        toks[i] = bytes[i];
        types[i] = TOK_TYPE_NORMAL;
    }
    /* merges: "Ġ t" → "Ġt", "h e" → "he", "Ġt he" → "Ġthe", "1 2" → "12" */
    static const char *ml[NM] = {"\xc4\xa0", "h", "\xc4\xa0t", "1"};
    static const char *mr[NM] = {"t", "e", "he", "2"};
    static const char *merged[NM] = {"\xc4\xa0t", "he", "\xc4\xa0the", "12"};
    for (int i = 0; i < NM; i++) {
        toks[NB + i] = merged[i];
        types[NB + i] = TOK_TYPE_NORMAL;
    }
    static const char *sp[NS] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < NS; i++) {
        toks[NB + NM + i] = sp[i];
        types[NB + NM + i] = TOK_TYPE_CONTROL;
    }
    struct tokenizer_spec s = {
        .n_tokens = N,
        .tokens = toks,
        .token_types = types,
        .n_merges = NM,
        .merge_left = ml,
        .merge_right = mr,
        .pre = TOK_PRE_SMOLLM,
        .bos_id = NB + NM,
        .eos_id = NB + NM + 2,
        .eot_id = -1,
        .pad_id = -1,
        .unk_id = -1,
        .add_bos = 0,
        .add_eos = 0,
    };
    struct tokenizer *t = NULL;
    char err[256];
    if (tokenizer_init(&s, &t, err, sizeof(err))) {
        fprintf(stderr, "fuzz_tokenizer: tiny tokenizer: %s\n", err);
        abort();
    }
    return t;
}

/* A tiny SentencePiece-style vocabulary: <unk> <s> </s>, the 256 byte tokens, then pieces with
 * descending scores (merged by score, add_space_prefix on). */
static struct tokenizer *tiny_spm(void) {
    enum { NS = 3, NB = 256, NP = 8, N = NS + NB + NP };
    static char bytes[NB][8];
    static const char *pieces[NP] = {"\xe2\x96\x81",
                                     "\xe2\x96\x81t",
                                     "he",
                                     "\xe2\x96\x81the",
                                     "h",
                                     "t",
                                     "e",
                                     "\xe2\x96\x81\xe2\x96\x81"};
    const char *toks[N] = {"<unk>", "<s>", "</s>"};
    int32_t types[N] = {TOK_TYPE_UNKNOWN, TOK_TYPE_CONTROL, TOK_TYPE_CONTROL};
    float scores[N] = {0, 0, 0};
    for (int i = 0; i < NB; i++) {
        snprintf(bytes[i], sizeof(bytes[i]), "<0x%02X>", i);
        toks[NS + i] = bytes[i];
        types[NS + i] = TOK_TYPE_BYTE;
        scores[NS + i] = 0;
    }
    for (int i = 0; i < NP; i++) {
        toks[NS + NB + i] = pieces[i];
        types[NS + NB + i] = TOK_TYPE_NORMAL;
        scores[NS + NB + i] = -(float)i;
    }
    struct tokenizer_spec s = {
        .n_tokens = N,
        .tokens = toks,
        .token_types = types,
        .pre = TOK_PRE_NONE,
        .bos_id = 1,
        .eos_id = 2,
        .eot_id = -1,
        .pad_id = -1,
        .unk_id = 0,
        .add_bos = 1,
        .model = TOK_MODEL_SPM,
        .scores = scores,
        .prefix = TOK_PREFIX_EACH,
        .fuse_unk = 1,
        .strip_space = 1,
    };
    struct tokenizer *t = NULL;
    char err[256];
    if (tokenizer_init(&s, &t, err, sizeof(err))) {
        fprintf(stderr, "fuzz_tokenizer: tiny SentencePiece tokenizer: %s\n", err);
        abort();
    }
    return t;
}

static void load_spm(void) {
    const char *path = getenv("FUZZ_TOKENIZER_SPM");
    if (!path) path = "tests/golden/tokenizer_spm.gguf";
    char err[512];
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        if (model_load_tokenizer(path, &g_spm, NULL, err, sizeof(err)) == 0) return;
        fprintf(stderr, "fuzz_tokenizer: %s\n", err);
        abort();
    }
    g_spm = tiny_spm();
}

static void find_bytes(void) {
    for (unsigned b = 0; b < 256; b++) {
        char s[4];
        byte_level(b, s);
        g_has_byte[b] = tokenizer_find(g_tok, s) >= 0;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;

    load_spm();
    char nerr[512];
    if (tokenizer_from_json("tests/golden/tokenizer_qwen2nfc.model.json", &g_nfc, NULL, nerr,
                            sizeof(nerr)))
        g_nfc = NULL; /* not in this checkout: bit 5 falls back to the first tokenizer */
    const char *path = getenv("FUZZ_TOKENIZER_MODEL");
    if (!path) path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    char err[512];
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        if (model_load_tokenizer(path, &g_tok, NULL, err, sizeof(err)) == 0) {
            fprintf(stderr, "fuzz_tokenizer: using the tokenizer of %s (%d tokens)\n", path,
                    tokenizer_n_vocab(g_tok));
            find_bytes();
            g_bpe = g_tok;
            return 0;
        }
        fprintf(stderr, "fuzz_tokenizer: %s\n", err);
        abort();
    }
    g_tok = tiny_tokenizer();
    find_bytes();
    g_bpe = g_tok;
    fprintf(stderr, "fuzz_tokenizer: %s not found; using a tiny built-in tokenizer\n", path);
    return 0;
}

/* 1 when every byte of TEXT has its byte-level token (SmolLM2 lacks 21 of the 256, e.g. 0x13
 * and 0xff; like HF, encode drops such bytes, so the round trip cannot hold for them). */
static int all_bytes_known(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!g_has_byte[s[i]]) return 0;
    return 1;
}

/* Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF). */
static int utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= k) return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

static void dump(const char *what, const void *p, size_t n) {
    fprintf(stderr, "%s (%zu bytes):", what, n);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %02x", ((const unsigned char *)p)[i]);
    fprintf(stderr, "\n");
}

static void stream_mismatch(const int *ids, int n, const char *full, const char *acc, size_t a) {
    fprintf(stderr, "stream decode differs from full decode; ids:");
    for (int i = 0; i < n; i++) {
        char b[64];
        int k = tokenizer_token_bytes(g_tok, ids[i], b, sizeof(b));
        fprintf(stderr, " %d[", ids[i]);
        for (int j = 0; j < k && j < (int)sizeof(b); j++)
            fprintf(stderr, "%s%02x", j ? " " : "", (unsigned char)b[j]);
        fprintf(stderr, "]");
    }
    fprintf(stderr, "\n");
    dump("full  ", full, strlen(full));
    dump("stream", acc, a);
    abort();
}

/* Decode IDS both ways and require equal results; returns the full decode (malloc'd).
 * tokenizer_decode returns a C string, so a NUL byte inside the decoded text (token "\0") ends
 * it there; the stream's bytes are compared up to their first NUL likewise. */
static char *check_stream(const int *ids, int n, int skip) {
    const struct tokenizer *t = g_tok;
    char *full = tokenizer_decode(t, ids, n, skip);
    if (!full) abort();
    size_t cap = tok_stream_cap(t), flen = strlen(full);
    char *acc = malloc(((size_t)n + 1) * cap);
    size_t a = 0;
    struct tok_stream s;
    tok_stream_init(&s, skip);
    for (int i = 0; i <= n; i++) {
        size_t w = i < n ? tok_stream_push(t, &s, ids[i], acc + a, cap)
                         : tok_stream_flush(&s, acc + a, cap);
        if (w >= cap) abort(); /* tok_stream_cap() is always enough */
        a += w;
    }
    const char *nul = memchr(acc, 0, a);
    size_t alen = nul ? (size_t)(nul - acc) : a;
    if (alen != flen || memcmp(acc, full, flen)) stream_mismatch(ids, n, full, acc, a);
    free(acc);
    return full;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int spm = (data[0] >> 4) & 1, nfc = !spm && ((data[0] >> 5) & 1) && g_nfc;
    g_tok = spm ? g_spm : nfc ? g_nfc : g_bpe; /* libFuzzer runs one input at a time */
    const struct tokenizer *t = g_tok;
    int parse_special = data[0] & 1, add_bos = (data[0] >> 1) & 1, skip = (data[0] >> 2) & 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    char err[256];

    if (data[0] & 8) { /* raw ids, a few outside the vocabulary */
        int n = (int)(len / 2), nv = tokenizer_n_vocab(t);
        int *ids = malloc(((size_t)n + 1) * sizeof(int));
        for (int i = 0; i < n; i++) {
            unsigned v = (unsigned)data[1 + 2 * i] | (unsigned)data[2 + 2 * i] << 8;
            ids[i] = (int)(v % (unsigned)(nv + 4)) - 2;
        }
        free(check_stream(ids, n, skip));
        char buf[64];
        for (int i = 0; i < n; i++)
            tokenizer_token_bytes(t, ids[i], buf, sizeof(buf));
        free(ids);
        return 0;
    }

    int *ids = NULL, n = 0;
    if (tokenizer_encode(t, text, len, parse_special, add_bos, &ids, &n, err, sizeof(err))) {
        free(ids);
        return 0;
    }
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tokenizer_n_vocab(t)) abort();
    char *full = check_stream(ids, n, skip);
    if (!add_bos && !skip && utf8_valid((const unsigned char *)text, len) &&
        !memchr(text, 0, len) && !nfc && /* NFC changes the text */
        (spm ? !parse_special && !memmem(text, len, "\xe2\x96\x81", 3)
             : all_bytes_known((const unsigned char *)text, len)) &&
        (strlen(full) != len || memcmp(full, text, len))) {
        fprintf(stderr, "decode(encode(text)) != text (parse_special %d)\n", parse_special);
        dump("text   ", text, len);
        dump("decoded", full, strlen(full));
        abort();
    }
    free(full);
    free(ids);

    /* the chat route: the text as a user message in a ChatML prompt */
    char *content = malloc(len + 1);
    memcpy(content, text, len);
    content[len] = 0;
    struct chat_template ct;
    chat_template_init(&ct, NULL, err, sizeof(err));
    struct chat_msg msgs[2] = {{.role = "system", .content = "You are a test."},
                               {.role = "user", .content = content}};
    char *prompt = chat_template_apply(&ct, msgs, 2, 1);
    if (prompt) {
        ids = NULL;
        if (tokenizer_encode(t, prompt, strlen(prompt), 1, 0, &ids, &n, err, sizeof(err)) == 0)
            free(check_stream(ids, n, 1));
        free(ids);
        free(prompt);
    }
    chat_template_free(&ct);
    free(content);
    return 0;
}
