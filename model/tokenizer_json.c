/* tokenizer_json.c — build a tokenizer from a Hugging Face tokenizer.json (+
 * tokenizer_config.json).
 *
 * Reads model.vocab (object string → id), model.merges in both forms ("a b" strings and
 * ["a", "b"] pairs, as tokenizers writes), added_tokens (special → control, else user-defined),
 * and recognises the pre_tokenizer pipelines we implement:
 *   ByteLevel(use_regex)                                          → TOK_PRE_GPT2
 *   Sequence[Digits(individual_digits), ByteLevel(use_regex)]     → TOK_PRE_SMOLLM
 *   Sequence[Split(llama3 regex, Isolated), ByteLevel(no regex)]  → TOK_PRE_LLAMA3
 *   Sequence[Split(GPT-2 regex, Isolated), ByteLevel(no regex)]   → TOK_PRE_GPT2
 *   Sequence[Split(Qwen2 regex, Isolated), ByteLevel(no regex)]   → TOK_PRE_QWEN2
 * and the SentencePiece-style BPE of Llama-2, Mistral and Gemma (TOK_MODEL_SPM): model
 * byte_fallback, normalizer Replace(" ", "▁") alone (Gemma) or after Prepend("▁") (Llama-2),
 * no pre_tokenizer — or no normalizer and a Metaspace("▁", prepend_scheme always / first /
 * never, split false) pre_tokenizer (transformers' non-legacy Llama converter) — and decoders
 * Replace("▁", " "), ByteFallback, Fuse and optionally Strip(" ", 1, 0) (sets strip_space).
 * A byte-level BPE may have the NFC normalizer (Qwen2, Qwen2.5).
 * Anything else (another normalizer, add_prefix_space, another regex, a splitting Metaspace)
 * is refused with a message rather than tokenized differently from the model's own tokenizer.
 * BOS/EOS come from tokenizer_config.json (bos_token, eos_token, add_bos_token, add_eos_token,
 * chat_template) beside the file, or else from a TemplateProcessing post-processor.
 */
#include "model/tokenizer.h"
#include "errmsg.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_BYTES (1u << 30) /* refuse absurd files before reading them */

static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char LLAMA3_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char SPM_MARK[] = "\xe2\x96\x81"; /* U+2581 */

/* Whole file as a NUL-terminated string, or NULL (err written; a missing file sets *missing). */
static char *read_file(const char *path, int *missing, char *err, size_t errlen) {
    if (missing) *missing = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (missing) *missing = 1;
        errmsg_set(err, errlen, "%s: cannot open", path);
        return NULL;
    }
    char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 0 || (unsigned long)n > JSON_MAX_BYTES || fseek(f, 0, SEEK_SET) != 0) {
        errmsg_set(err, errlen, "%s: cannot read (size %ld)", path, n);
        fclose(f);
        return NULL;
    }
    buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        errmsg_set(err, errlen, "%s: read failed", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static const char *json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A bool field: 1/0, or DEF when absent or not a bool. */
static int json_bool(const cJSON *o, const char *key, int def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return def;
}

static int is_type(const cJSON *o, const char *type) {
    const char *t = json_str(o, "type");
    return t && strcmp(t, type) == 0;
}

/* ByteLevel with add_prefix_space false and the wanted use_regex. */
static int is_byte_level(const cJSON *o, int use_regex) {
    return is_type(o, "ByteLevel") && !json_bool(o, "add_prefix_space", 0) &&
           json_bool(o, "use_regex", 1) == use_regex;
}

/* Split{pattern:{Regex: RE}, behavior: Isolated, invert: false}. */
static int is_split(const cJSON *o, const char *re) {
    if (!is_type(o, "Split")) return 0;
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const char *r = json_str(pat, "Regex");
    const char *beh = json_str(o, "behavior");
    return r && strcmp(r, re) == 0 && beh && strcmp(beh, "Isolated") == 0 &&
           !json_bool(o, "invert", 0);
}

static int detect_pre(const cJSON *pre, enum tok_pre *out, char *err, size_t errlen) {
    if (is_byte_level(pre, 1)) {
        *out = TOK_PRE_GPT2;
        return 0;
    }
    if (is_type(pre, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
        int n = cJSON_GetArraySize(list);
        const cJSON *a = cJSON_GetArrayItem(list, 0), *b = cJSON_GetArrayItem(list, 1);
        if (n == 2 && is_type(a, "Digits") && json_bool(a, "individual_digits", 0) &&
            is_byte_level(b, 1)) {
            *out = TOK_PRE_SMOLLM;
            return 0;
        }
        if (n == 2 && is_split(a, LLAMA3_REGEX) && is_byte_level(b, 0)) {
            *out = TOK_PRE_LLAMA3;
            return 0;
        }
        if (n == 2 && is_split(a, GPT2_REGEX) && is_byte_level(b, 0)) {
            *out = TOK_PRE_GPT2;
            return 0;
        }
        if (n == 2 && is_split(a, QWEN2_REGEX) && is_byte_level(b, 0)) {
            *out = TOK_PRE_QWEN2;
            return 0;
        }
    }
    char *s = pre ? cJSON_PrintUnformatted(pre) : NULL;
    errmsg_set(
        err, errlen,
        "unsupported pre_tokenizer %.300s (supported: ByteLevel; Sequence[Digits(individual), "
        "ByteLevel]; Sequence[Split(llama3, qwen2 or gpt2 regex), "
        "ByteLevel(use_regex=false)]; none with a SentencePiece normalizer)",
        s ? s : "null");
    free(s);
    return -1;
}

/* Replace{pattern: {String: FROM}, content: TO}. */
static int is_replace(const cJSON *o, const char *from, const char *to) {
    const char *f = json_str(cJSON_GetObjectItemCaseSensitive(o, "pattern"), "String");
    const char *c = json_str(o, "content");
    return is_type(o, "Replace") && f && c && strcmp(f, from) == 0 && strcmp(c, to) == 0;
}

/* The SentencePiece normalizers: Replace(" ", "▁"), alone or as a one-item Sequence (the legacy
 * Llama converter without add_prefix_space) → TOK_PREFIX_NONE; Sequence[Prepend("▁"),
 * Replace(" ", "▁")] → TOK_PREFIX_EACH; anything else -1. */
static int spm_normalizer(const cJSON *norm) {
    if (is_replace(norm, " ", SPM_MARK)) return TOK_PREFIX_NONE;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(norm, "normalizers");
    const cJSON *a = cJSON_GetArrayItem(list, 0), *b = cJSON_GetArrayItem(list, 1);
    if (is_type(norm, "Sequence") && cJSON_GetArraySize(list) == 1 && is_replace(a, " ", SPM_MARK))
        return TOK_PREFIX_NONE;
    const char *pre = json_str(a, "prepend");
    if (is_type(norm, "Sequence") && cJSON_GetArraySize(list) == 2 && is_type(a, "Prepend") &&
        pre && strcmp(pre, SPM_MARK) == 0 && is_replace(b, " ", SPM_MARK))
        return TOK_PREFIX_EACH;
    return -1;
}

/* Metaspace("▁", split false) as a TOK_PREFIX_*: prepend_scheme, or in older files the bool
 * add_prefix_space (true: always); -1 for anything else. */
static int spm_metaspace(const cJSON *pre) {
    const char *rep = json_str(pre, "replacement");
    if (!is_type(pre, "Metaspace") || !rep || strcmp(rep, SPM_MARK) != 0 ||
        json_bool(pre, "split", 1))
        return -1;
    const char *scheme = json_str(pre, "prepend_scheme");
    if (!scheme)
        return json_bool(pre, "add_prefix_space", 1) ? TOK_PREFIX_META_ALL : TOK_PREFIX_NONE;
    if (strcmp(scheme, "always") == 0) return TOK_PREFIX_META_ALL;
    if (strcmp(scheme, "first") == 0) return TOK_PREFIX_META_FIRST;
    if (strcmp(scheme, "never") == 0) return TOK_PREFIX_NONE;
    return -1;
}

/* The SentencePiece decoders: Sequence of Replace("▁", " "), ByteFallback, Fuse and optionally
 * Strip(" ", 1, 0), in that order. Returns 1 with a Strip, 0 without, -1 for anything else. */
static int spm_decoder(const cJSON *dec) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(dec, "decoders");
    int n = cJSON_GetArraySize(list);
    if (!is_type(dec, "Sequence") || (n != 3 && n != 4) ||
        !is_replace(cJSON_GetArrayItem(list, 0), SPM_MARK, " ") ||
        !is_type(cJSON_GetArrayItem(list, 1), "ByteFallback") ||
        !is_type(cJSON_GetArrayItem(list, 2), "Fuse"))
        return -1;
    if (n == 3) return 0;
    const cJSON *st = cJSON_GetArrayItem(list, 3);
    const char *c = json_str(st, "content");
    const cJSON *start = cJSON_GetObjectItemCaseSensitive(st, "start");
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(st, "stop");
    if (is_type(st, "Strip") && c && strcmp(c, " ") == 0 && cJSON_IsNumber(start) &&
        start->valueint == 1 && cJSON_IsNumber(stop) && stop->valueint == 0)
        return 1;
    return -1;
}

/* "<s>" or {"content": "<s>", ...} (tokenizer_config.json's two spellings). */
static const char *token_content(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    return json_str(v, "content");
}

/* TemplateProcessing (alone or inside a Sequence of processors): the special tokens it puts
 * before and after a single sequence. */
static void post_processor_specials(const cJSON *pp, const char **first, const char **last) {
    if (is_type(pp, "Sequence")) {
        const cJSON *p;
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(pp, "processors"))
            post_processor_specials(p, first, last);
        return;
    }
    if (!is_type(pp, "TemplateProcessing")) return;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    int n = cJSON_GetArraySize(single);
    if (n == 0) return;
    const cJSON *a =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, 0), "SpecialToken");
    const cJSON *z =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, n - 1), "SpecialToken");
    if (a) *first = json_str(a, "id");
    if (z && n > 1) *last = json_str(z, "id");
}

static int find_id(const char *const *tokens, int n, const char *s) {
    if (!s) return -1;
    for (int i = 0; i < n; i++)
        if (tokens[i] && strcmp(tokens[i], s) == 0) return i;
    return -1;
}

/* The chat template of tokenizer_config.json: a string, or a list of {name, template} of which
 * "default" (else the first) is taken. */
static char *config_chat_template(const cJSON *cfg) {
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    if (cJSON_IsString(ct)) return strdup(ct->valuestring);
    if (cJSON_IsArray(ct)) {
        const cJSON *e, *pick = NULL;
        cJSON_ArrayForEach(e, ct) {
            const char *name = json_str(e, "name");
            if (!pick || (name && strcmp(name, "default") == 0)) pick = e;
        }
        const char *tmpl = json_str(pick, "template");
        if (tmpl) return strdup(tmpl);
    }
    return NULL;
}

int tokenizer_from_json(const char *path, struct tokenizer **out, char **chat_template, char *err,
                        size_t errlen) {
    *out = NULL;
    if (chat_template) *chat_template = NULL;
    int rc = -1;
    char *text = NULL, *cfg_text = NULL, *cfg_path = NULL, *merge_arena = NULL;
    cJSON *root = NULL, *cfg = NULL;
    const char **tokens = NULL, **mleft = NULL, **mright = NULL;
    int32_t *types = NULL;
    char sub[512];

    text = read_file(path, NULL, err, errlen);
    if (!text) goto done;
    root = cJSON_Parse(text);
    if (!root) {
        errmsg_set(err, errlen, "%s: invalid JSON", path);
        goto done;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *mtype = json_str(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if ((mtype && strcmp(mtype, "BPE") != 0) || !cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
        errmsg_set(err, errlen, "%s: model is not a BPE model with a vocab object and merges list",
                   path);
        goto done;
    }
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *pre_tok = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    int has_norm = norm && !cJSON_IsNull(norm);
    int spm = json_bool(model, "byte_fallback", 0); /* SentencePiece-style BPE */
    int prefix = TOK_PREFIX_NONE, strip = 0;
    enum tok_pre pre = TOK_PRE_NONE;
    if (spm) {
        int has_pre = pre_tok && !cJSON_IsNull(pre_tok);
        prefix =
            has_norm || !has_pre ? (has_pre ? -1 : spm_normalizer(norm)) : spm_metaspace(pre_tok);
        strip = spm_decoder(cJSON_GetObjectItemCaseSensitive(root, "decoder"));
        if (prefix < 0 || strip < 0) {
            errmsg_set(err, errlen,
                       "%s: byte_fallback BPE needs normalizer Replace(\" \", \"\u2581\") "
                       "(after Prepend(\"\u2581\")) and no pre_tokenizer, or no normalizer and "
                       "pre_tokenizer Metaspace(split false), with decoders Replace, ByteFallback, "
                       "Fuse[, Strip]; got normalizer %s, pre_tokenizer %s",
                       path, has_norm && json_str(norm, "type") ? json_str(norm, "type") : "none",
                       pre_tok && json_str(pre_tok, "type") ? json_str(pre_tok, "type") : "none");
            goto done;
        }
    } else {
        if (has_norm && !is_type(norm, "NFC")) {
            errmsg_set(err, errlen, "%s: normalizer %s is not supported", path,
                       json_str(norm, "type") ? json_str(norm, "type") : "?");
            goto done;
        }
        if (detect_pre(pre_tok, &pre, sub, sizeof(sub)) < 0) {
            errmsg_set(err, errlen, "%s: %s", path, sub);
            goto done;
        }
    }

    /* ids: the vocab object, then added_tokens on top */
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *e;
    int n = 0;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= 1 << 30) {
            errmsg_set(err, errlen, "%s: vocab entry \"%.100s\" has a bad id", path, e->string);
            goto done;
        }
        if (e->valueint + 1 > n) n = e->valueint + 1;
    }
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= 1 << 30 ||
            !json_str(e, "content")) {
            errmsg_set(err, errlen, "%s: malformed added_tokens entry", path);
            goto done;
        }
        if (id->valueint + 1 > n) n = id->valueint + 1;
    }
    if (n == 0) {
        errmsg_set(err, errlen, "%s: empty vocabulary", path);
        goto done;
    }
    /* Ids index arrays sized by the largest id, so the largest id is bounded by the number of
     * entries (real tokenizers number their tokens densely from 0): a 140-byte file claiming id
     * 2^30 must not cost gigabytes (found by tests/fuzz/fuzz_tokenizer_json.c). */
    int entries = cJSON_GetArraySize(vocab) + cJSON_GetArraySize(added);
    if (n > entries) {
        errmsg_set(err, errlen, "%s: token id %d exceeds the %d entries of vocab and added_tokens",
                   path, n - 1, entries);
        goto done;
    }
    tokens = calloc((size_t)n, sizeof(*tokens));
    types = malloc((size_t)n * sizeof(*types));
    if (!tokens || !types) goto oom;
    for (int i = 0; i < n; i++)
        types[i] = TOK_TYPE_NORMAL;
    cJSON_ArrayForEach(e, vocab) tokens[e->valueint] = e->string;
    cJSON_ArrayForEach(e, added) {
        int id = cJSON_GetObjectItemCaseSensitive(e, "id")->valueint;
        tokens[id] = json_str(e, "content");
        types[id] = json_bool(e, "special", 0) ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED;
    }
    for (int i = 0; i < n; i++)
        if (!tokens[i]) {
            tokens[i] = "";
            types[i] = TOK_TYPE_UNUSED;
        }

    /* merges: ["a b", ...] or [["a", "b"], ...] */
    int nm = cJSON_GetArraySize(merges);
    size_t arena = 0;
    cJSON_ArrayForEach(e, merges) if (cJSON_IsString(e)) arena += strlen(e->valuestring) + 1;
    mleft = malloc((size_t)(nm > 0 ? nm : 1) * sizeof(*mleft));
    mright = malloc((size_t)(nm > 0 ? nm : 1) * sizeof(*mright));
    merge_arena = malloc(arena > 0 ? arena : 1);
    if (!mleft || !mright || !merge_arena) goto oom;
    int m = 0;
    size_t ao = 0;
    cJSON_ArrayForEach(e, merges) {
        if (cJSON_IsString(e)) {
            char *s = merge_arena + ao;
            size_t len = strlen(e->valuestring);
            memcpy(s, e->valuestring, len + 1);
            ao += len + 1;
            char *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                errmsg_set(err, errlen, "%s: merge %d \"%.100s\" is not \"left right\"", path, m,
                           e->valuestring);
                goto done;
            }
            *sp = '\0';
            mleft[m] = s;
            mright[m] = sp + 1;
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            mleft[m] = cJSON_GetArrayItem(e, 0)->valuestring;
            mright[m] = cJSON_GetArrayItem(e, 1)->valuestring;
        } else {
            errmsg_set(err, errlen, "%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", path, m);
            goto done;
        }
        m++;
    }

    struct tokenizer_spec spec = {0};
    spec.n_tokens = n;
    spec.tokens = tokens;
    spec.token_types = types;
    spec.n_merges = m;
    spec.merge_left = mleft;
    spec.merge_right = mright;
    spec.pre = pre;
    spec.model = spm ? TOK_MODEL_SPM : TOK_MODEL_BYTE_BPE;
    spec.prefix = (enum tok_prefix)prefix;
    spec.strip_space = strip;
    spec.fuse_unk = json_bool(model, "fuse_unk", 0);
    spec.nfc = !spm && has_norm; /* the one normalizer a byte-level BPE may have */
    spec.bos_id = spec.eos_id = spec.eot_id = spec.pad_id = -1;
    spec.unk_id = find_id(tokens, n, json_str(model, "unk_token"));

    /* BOS/EOS: the post-processor first, tokenizer_config.json over it */
    const char *pp_first = NULL, *pp_last = NULL;
    post_processor_specials(cJSON_GetObjectItemCaseSensitive(root, "post_processor"), &pp_first,
                            &pp_last);
    if (pp_first) {
        spec.bos_id = find_id(tokens, n, pp_first);
        spec.add_bos = spec.bos_id >= 0;
    }
    if (pp_last) {
        spec.eos_id = find_id(tokens, n, pp_last);
        spec.add_eos = spec.eos_id >= 0;
    }
    const char *slash = strrchr(path, '/');
    size_t dir = slash ? (size_t)(slash - path + 1) : 0;
    cfg_path = malloc(dir + sizeof("tokenizer_config.json"));
    if (!cfg_path) goto oom;
    memcpy(cfg_path, path, dir);
    strcpy(cfg_path + dir, "tokenizer_config.json");
    int missing;
    cfg_text = read_file(cfg_path, &missing, sub, sizeof(sub));
    if (!cfg_text && !missing) {
        errmsg_set(err, errlen, "%s", sub);
        goto done;
    }
    if (cfg_text) {
        cfg = cJSON_Parse(cfg_text);
        if (!cfg) {
            errmsg_set(err, errlen, "%s: invalid JSON", cfg_path);
            goto done;
        }
        const char *bos = token_content(cJSON_GetObjectItemCaseSensitive(cfg, "bos_token"));
        const char *eos = token_content(cJSON_GetObjectItemCaseSensitive(cfg, "eos_token"));
        const char *pad = token_content(cJSON_GetObjectItemCaseSensitive(cfg, "pad_token"));
        const char *unk = token_content(cJSON_GetObjectItemCaseSensitive(cfg, "unk_token"));
        if (bos) spec.bos_id = find_id(tokens, n, bos);
        if (eos) spec.eos_id = find_id(tokens, n, eos);
        if (pad) spec.pad_id = find_id(tokens, n, pad);
        if (unk && spec.unk_id < 0) spec.unk_id = find_id(tokens, n, unk);
        spec.add_bos = json_bool(cfg, "add_bos_token", spec.add_bos) && spec.bos_id >= 0;
        spec.add_eos = json_bool(cfg, "add_eos_token", spec.add_eos) && spec.eos_id >= 0;
        if (chat_template) *chat_template = config_chat_template(cfg);
    }
    spec.eot_id = find_id(tokens, n, "<|eot_id|>");

    if (tokenizer_init(&spec, out, sub, sizeof(sub)) < 0) {
        errmsg_set(err, errlen, "%s: %s", path, sub);
        goto done;
    }
    tokenizer_set_ignore_merges(*out, json_bool(model, "ignore_merges", 0));
    rc = 0;
    goto done;
oom:
    errmsg_set(err, errlen, "%s: out of memory", path);
done:
    if (rc < 0 && chat_template) {
        free(*chat_template);
        *chat_template = NULL;
    }
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    free(text);
    free(cfg_text);
    free(cfg_path);
    free(merge_arena);
    free(tokens);
    free(types);
    free(mleft);
    free(mright);
    return rc;
}
