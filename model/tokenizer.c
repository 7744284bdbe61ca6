/* tokenizer.c — byte-level and SentencePiece-style BPE: vocabulary, merges, encode, decode and
 * streaming decode.
 *
 * Layout and design choices:
 * - Token strings live in one arena in their stored form (GPT-2 byte-level unicode, "Ġt", or
 *   SentencePiece's "▁t" and "<0x0A>"); a second arena holds what each token decodes to (raw
 *   bytes: "▁" as ' ', a byte token as its byte). An open-addressing hash map takes
 *   a stored string to its id.
 * - BPE runs on token ids, never on strings: a piece starts as the ids of its single-byte symbols
 *   and a merge is a hash-map entry (left id, right id) → (rank, merged id). Merging pops the
 *   lowest (rank, position) from a binary heap over a linked list of symbols, so a piece of n
 *   bytes costs O(n log n) even for pathological runs (HF's word.merge_all does the same).
 * - Added tokens (control and user-defined) are cut out of the text first by a leftmost-longest
 *   scan (HF AddedVocabulary); the pieces between them go through the pre-tokenizer (pretok.c).
 *   With parse_special off, only user-defined (non-special) tokens are cut, as HF does with
 *   split_special_tokens=True and llama.cpp with parse_special=false.
 * - SentencePiece-style models (TOK_MODEL_SPM) share the merge loop. A segment is normalized
 *   (optional U+2581 prefix, ' ' → U+2581), its pieces start as one symbol per UTF-8 character
 *   (a character outside the vocabulary becomes its <0xNN> byte tokens, else unk), and a pair
 *   merges when its concatenation is a token. With scores (GGUF "llama") the pair whose merged
 *   token has the highest score goes first — the order transformers' SentencePiece-to-BPE
 *   conversion writes its merges in, and llama.cpp's SPM merge order — ties going to the lower
 *   merged id, then the leftmost pair; with a tokenizer.json the merges list's rank decides.
 */
#include "model/tokenizer.h"
#include "errmsg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/pretok.h"
#include "model/unicode.h"

enum { TOKF_SPECIAL = 1, TOKF_EOG = 2, TOKF_ADDED = 4 };

struct tokenizer {
    int n_vocab;
    char *text;          /* arena: stored token strings, each NUL-terminated */
    uint32_t *text_off;  /* (n_vocab) */
    uint32_t *text_len;  /* (n_vocab) */
    char *bytes;         /* arena: decoded bytes of each token */
    uint32_t *bytes_off; /* (n_vocab) */
    uint32_t *bytes_len; /* (n_vocab) */
    uint8_t *type;       /* (n_vocab) enum tok_type */
    uint8_t *flags;      /* (n_vocab) TOKF_* */
    size_t max_bytes;    /* longest decoded token */

    int32_t *vocab_slot; /* (vocab_mask + 1) id, or -1 when empty */
    uint32_t vocab_mask;

    uint64_t *merge_key; /* (merge_mask + 1) left << 32 | right, or UINT64_MAX when empty */
    int32_t *merge_rank; /* (merge_mask + 1) */
    int32_t *merge_out;  /* (merge_mask + 1) id of the merged token */
    uint32_t merge_mask;

    int byte_id[256]; /* id of each byte's single-symbol token, or -1 (byte dropped) */

    /* Added tokens sorted by first byte: those starting with byte b are
     * added[added_start[b] .. added_start[b + 1]). */
    int *added;
    int added_start[257];

    enum tok_pre pre;
    int bos_id, eos_id, eot_id, pad_id, unk_id;
    int add_bos, add_eos;
    int ignore_merges;

    enum tok_model model;
    int32_t *score_rank; /* (n_vocab) rank of the token in descending score order, or NULL */
    size_t max_text;     /* longest stored token string */
    enum tok_prefix prefix;
    int fuse_unk, strip_space, nfc;
};

#define SPM_MARK "\xe2\x96\x81" /* U+2581, SentencePiece's visible space */
#define SPM_MARK_LEN 3

/* --- GPT-2 byte <-> unicode (the GPT-2 bytes_to_unicode table)
 * ------------------------------------------- */

/* The 188 printable bytes map to themselves; the other 68, in byte order, to U+0100.. */
static uint32_t byte_to_cp(unsigned b) {
    if (b <= 0x20) return 256 + b;
    if (b >= 0x7F && b <= 0xA0) return 256 + 33 + (b - 0x7F);
    if (b == 0xAD) return 256 + 67;
    return b;
}

static int cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_to_cp(cp) == cp ? (int)cp : -1;
    if (cp < 256 + 33) return (int)(cp - 256);
    if (cp < 256 + 67) return (int)(0x7F + cp - 256 - 33);
    if (cp == 256 + 67) return 0xAD;
    return -1;
}

/* Decoded bytes of a stored token: every char mapped back through the byte table, or — when
 * some char is not in the table (added tokens stored as plain text) — the string itself, as HF's
 * ByteLevel decoder does. OUT has room for LEN bytes; returns the length. */
static size_t token_decode_bytes(const char *s, size_t len, char *out) {
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i += (size_t)unicode_utf8_decode(u + i, len - i, &cp);
        int b = cp == UNICODE_INVALID ? -1 : cp_to_byte(cp);
        if (b < 0) {
            memcpy(out, s, len);
            return len;
        }
        out[o++] = (char)b;
    }
    return o;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* The byte of a "<0xNN>" byte-fallback token, or -1 (HF's ByteFallback decoder test). */
static int spm_byte_token(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* Decoded bytes of a SentencePiece token: a byte token gives its byte, any other has each
 * U+2581 turned back into ' ' (HF decoders Replace("▁", " ") + ByteFallback). */
static size_t spm_decode_bytes(const char *s, size_t len, char *out) {
    int b = spm_byte_token(s, len);
    if (b >= 0) {
        out[0] = (char)b;
        return 1;
    }
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        if (i + SPM_MARK_LEN <= len && memcmp(s + i, SPM_MARK, SPM_MARK_LEN) == 0) {
            out[o++] = ' ';
            i += SPM_MARK_LEN;
        } else {
            out[o++] = s[i++];
        }
    }
    return o;
}

/* --- hash maps ---------------------------------------------------------------------------------
 */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33; /* murmur3 finalizer */
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static uint32_t table_size(size_t n) {
    uint32_t sz = 16;
    while (sz < 2 * n + 1)
        sz <<= 1;
    return sz;
}

static int vocab_lookup(const struct tokenizer *t, const char *s, size_t n) {
    uint32_t i = (uint32_t)hash_bytes(s, n) & t->vocab_mask;
    for (;;) {
        int id = t->vocab_slot[i];
        if (id < 0) return -1;
        if (t->text_len[id] == n && memcmp(t->text + t->text_off[id], s, n) == 0) return id;
        i = (i + 1) & t->vocab_mask;
    }
}

static void vocab_insert(struct tokenizer *t, int id) {
    const char *s = t->text + t->text_off[id];
    size_t n = t->text_len[id];
    if (n == 0) return;
    uint32_t i = (uint32_t)hash_bytes(s, n) & t->vocab_mask;
    for (;;) {
        int other = t->vocab_slot[i];
        if (other < 0) {
            t->vocab_slot[i] = id;
            return;
        }
        if (t->text_len[other] == n && memcmp(t->text + t->text_off[other], s, n) == 0)
            return; /* duplicate string: the lower id wins */
        i = (i + 1) & t->vocab_mask;
    }
}

/* Rank of merging (L, R), or -1; *out receives the merged id. */
static int merge_lookup(const struct tokenizer *t, int l, int r, int *out) {
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    uint32_t i = (uint32_t)hash_u64(key) & t->merge_mask;
    for (;;) {
        uint64_t k = t->merge_key[i];
        if (k == UINT64_MAX) return -1;
        if (k == key) {
            *out = t->merge_out[i];
            return t->merge_rank[i];
        }
        i = (i + 1) & t->merge_mask;
    }
}

static void merge_insert(struct tokenizer *t, int l, int r, int rank, int out) {
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    uint32_t i = (uint32_t)hash_u64(key) & t->merge_mask;
    while (t->merge_key[i] != UINT64_MAX) {
        if (t->merge_key[i] == key) return; /* repeated merge: the first rank wins */
        i = (i + 1) & t->merge_mask;
    }
    t->merge_key[i] = key;
    t->merge_rank[i] = rank;
    t->merge_out[i] = out;
}

/* --- construction ------------------------------------------------------------------------------
 */

static int is_eog_text(const char *s) {
    static const char *const names[] = {"<|im_end|>", "<|endoftext|>",   "<|eot_id|>",
                                        "<|eom_id|>", "<|end_of_text|>", "<end_of_turn>"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i]) == 0) return 1;
    return 0;
}

static int check_id(int id, int n, const char *what, char *err, size_t errlen) {
    if (id < -1 || id >= n) {
        errmsg_set(err, errlen, "tokenizer: %s id %d is outside the vocabulary (%d tokens)", what,
                   id, n);
        return -1;
    }
    return 0;
}

static int build_merges(struct tokenizer *t, const struct tokenizer_spec *spec, char *err,
                        size_t errlen) {
    size_t n = spec->n_merges > 0 ? (size_t)spec->n_merges : 0;
    t->merge_mask = table_size(n) - 1;
    size_t slots = (size_t)t->merge_mask + 1;
    t->merge_key = malloc(slots * sizeof(*t->merge_key));
    t->merge_rank = malloc(slots * sizeof(*t->merge_rank));
    t->merge_out = malloc(slots * sizeof(*t->merge_out));
    char *buf = NULL;
    size_t cap = 0;
    if (!t->merge_key || !t->merge_rank || !t->merge_out) goto oom;
    memset(t->merge_key, 0xFF, slots * sizeof(*t->merge_key));
    for (size_t m = 0; m < n; m++) {
        const char *a = spec->merge_left[m], *b = spec->merge_right[m];
        if (!a || !b) {
            errmsg_set(err, errlen, "tokenizer: merge %zu is missing a side", m);
            free(buf);
            return -1;
        }
        size_t la = strlen(a), lb = strlen(b);
        if (la + lb > cap) {
            cap = 2 * (la + lb) + 64;
            char *nb = realloc(buf, cap);
            if (!nb) goto oom;
            buf = nb;
        }
        memcpy(buf, a, la);
        memcpy(buf + la, b, lb);
        int l = vocab_lookup(t, a, la), r = vocab_lookup(t, b, lb);
        int out = vocab_lookup(t, buf, la + lb);
        /* A merge whose parts are not all in the vocabulary can never fire; skip it. */
        if (l < 0 || r < 0 || out < 0) continue;
        merge_insert(t, l, r, (int)m, out);
    }
    free(buf);
    return 0;
oom:
    free(buf);
    errmsg_set(err, errlen, "tokenizer: out of memory for %zu merges", n);
    return -1;
}

/* Ids sorted by descending score, then ascending id: the merge priority of SentencePiece BPE. */
struct score_id {
    float score;
    int id;
};

static int score_cmp(const void *a, const void *b) {
    const struct score_id *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int build_score_ranks(struct tokenizer *t, const float *scores) {
    struct score_id *order = malloc((size_t)t->n_vocab * sizeof(*order));
    t->score_rank = malloc((size_t)t->n_vocab * sizeof(*t->score_rank));
    if (!order || !t->score_rank) {
        free(order);
        return -1;
    }
    for (int i = 0; i < t->n_vocab; i++) /* a NaN score sorts as the lowest */
        order[i] = (struct score_id){scores[i] == scores[i] ? scores[i] : -1e30f, i};
    qsort(order, (size_t)t->n_vocab, sizeof(*order), score_cmp);
    for (int r = 0; r < t->n_vocab; r++)
        t->score_rank[order[r].id] = r;
    free(order);
    return 0;
}

static int build_added(struct tokenizer *t) {
    int n = 0;
    for (int id = 0; id < t->n_vocab; id++)
        if ((t->flags[id] & TOKF_ADDED)) n++;
    t->added = malloc((size_t)(n > 0 ? n : 1) * sizeof(*t->added));
    if (!t->added) return -1;
    int counts[257] = {0};
    for (int id = 0; id < t->n_vocab; id++)
        if ((t->flags[id] & TOKF_ADDED)) counts[(unsigned char)t->text[t->text_off[id]] + 1]++;
    t->added_start[0] = 0;
    for (int b = 1; b <= 256; b++)
        t->added_start[b] = t->added_start[b - 1] + counts[b];
    int fill[256];
    memcpy(fill, t->added_start, sizeof(fill));
    for (int id = 0; id < t->n_vocab; id++)
        if ((t->flags[id] & TOKF_ADDED))
            t->added[fill[(unsigned char)t->text[t->text_off[id]]]++] = id;
    return 0;
}

int tokenizer_init(const struct tokenizer_spec *spec, struct tokenizer **out, char *err,
                   size_t errlen) {
    *out = NULL;
    if (!spec || spec->n_tokens <= 0 || !spec->tokens) {
        errmsg_set(err, errlen, "tokenizer: empty vocabulary");
        return -1;
    }
    if (spec->n_merges > 0 && (!spec->merge_left || !spec->merge_right)) {
        errmsg_set(err, errlen, "tokenizer: merges missing");
        return -1;
    }
    if (spec->pre < TOK_PRE_GPT2 || spec->pre > TOK_PRE_NONE) {
        errmsg_set(err, errlen, "tokenizer: unknown pre-tokenizer %d", (int)spec->pre);
        return -1;
    }
    int n = spec->n_tokens;
    if (check_id(spec->bos_id, n, "bos", err, errlen) ||
        check_id(spec->eos_id, n, "eos", err, errlen) ||
        check_id(spec->eot_id, n, "eot", err, errlen) ||
        check_id(spec->pad_id, n, "pad", err, errlen) ||
        check_id(spec->unk_id, n, "unk", err, errlen))
        return -1;

    struct tokenizer *t = calloc(1, sizeof(*t));
    if (!t) goto oom;
    t->n_vocab = n;
    t->pre = spec->pre;
    t->bos_id = spec->bos_id;
    t->eos_id = spec->eos_id;
    t->eot_id = spec->eot_id;
    t->pad_id = spec->pad_id;
    t->unk_id = spec->unk_id;
    t->add_bos = spec->add_bos != 0;
    t->add_eos = spec->add_eos != 0;
    t->ignore_merges = spec->pre == TOK_PRE_LLAMA3; /* llama.cpp and Llama-3's tokenizer.json */
    t->model = spec->model == TOK_MODEL_SPM ? TOK_MODEL_SPM : TOK_MODEL_BYTE_BPE;
    t->prefix = spec->prefix;
    t->fuse_unk = spec->fuse_unk != 0;
    t->strip_space = spec->strip_space != 0;
    t->nfc = spec->nfc != 0;

    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!spec->tokens[i]) {
            errmsg_set(err, errlen, "tokenizer: token %d is missing", i);
            tokenizer_free(t);
            return -1;
        }
        total += (spec->token_lens ? spec->token_lens[i] : strlen(spec->tokens[i])) + 1;
    }
    if (total > UINT32_MAX) {
        errmsg_set(err, errlen, "tokenizer: vocabulary text too large");
        tokenizer_free(t);
        return -1;
    }
    t->text = malloc(total);
    t->bytes = malloc(total);
    t->text_off = malloc((size_t)n * sizeof(uint32_t));
    t->text_len = malloc((size_t)n * sizeof(uint32_t));
    t->bytes_off = malloc((size_t)n * sizeof(uint32_t));
    t->bytes_len = malloc((size_t)n * sizeof(uint32_t));
    t->type = malloc((size_t)n);
    t->flags = calloc((size_t)n, 1);
    t->vocab_mask = table_size((size_t)n) - 1;
    t->vocab_slot = malloc(((size_t)t->vocab_mask + 1) * sizeof(int32_t));
    if (!t->text || !t->bytes || !t->text_off || !t->text_len || !t->bytes_off || !t->bytes_len ||
        !t->type || !t->flags || !t->vocab_slot)
        goto oom;
    memset(t->vocab_slot, 0xFF, ((size_t)t->vocab_mask + 1) * sizeof(int32_t));

    size_t off = 0, boff = 0;
    for (int i = 0; i < n; i++) {
        size_t len = spec->token_lens ? spec->token_lens[i] : strlen(spec->tokens[i]);
        memcpy(t->text + off, spec->tokens[i], len);
        t->text[off + len] = '\0';
        t->text_off[i] = (uint32_t)off;
        t->text_len[i] = (uint32_t)len;
        off += len + 1;
        if (len > t->max_text) t->max_text = len;
        size_t bl = t->model == TOK_MODEL_SPM
                        ? spm_decode_bytes(t->text + t->text_off[i], len, t->bytes + boff)
                        : token_decode_bytes(t->text + t->text_off[i], len, t->bytes + boff);
        t->bytes_off[i] = (uint32_t)boff;
        t->bytes_len[i] = (uint32_t)bl;
        boff += bl;
        if (bl > t->max_bytes) t->max_bytes = bl;
        int ty = spec->token_types ? spec->token_types[i] : TOK_TYPE_NORMAL;
        t->type[i] = (uint8_t)(ty >= 1 && ty <= 6 ? ty : TOK_TYPE_NORMAL);
        if (ty == TOK_TYPE_CONTROL) t->flags[i] |= TOKF_SPECIAL;
        if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED) && len > 0)
            t->flags[i] |= TOKF_ADDED;
        if (is_eog_text(t->text + t->text_off[i])) t->flags[i] |= TOKF_EOG;
        vocab_insert(t, i);
    }
    if (t->eos_id >= 0) t->flags[t->eos_id] |= TOKF_EOG;
    if (t->eot_id >= 0) t->flags[t->eot_id] |= TOKF_EOG;

    for (unsigned b = 0; b < 256; b++) {
        char s[8];
        int k = t->model == TOK_MODEL_SPM ? snprintf(s, sizeof(s), "<0x%02X>", b)
                                          : unicode_utf8_encode(byte_to_cp(b), s);
        t->byte_id[b] = vocab_lookup(t, s, (size_t)k);
    }
    if (t->model == TOK_MODEL_SPM && spec->scores && build_score_ranks(t, spec->scores) < 0)
        goto oom;
    if (build_merges(t, spec, err, errlen) < 0) {
        tokenizer_free(t);
        return -1;
    }
    if (build_added(t) < 0) goto oom;
    *out = t;
    return 0;
oom:
    tokenizer_free(t);
    errmsg_set(err, errlen, "tokenizer: out of memory (%d tokens)", n);
    return -1;
}

void tokenizer_free(struct tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->text_off);
    free(t->text_len);
    free(t->bytes);
    free(t->bytes_off);
    free(t->bytes_len);
    free(t->type);
    free(t->flags);
    free(t->vocab_slot);
    free(t->merge_key);
    free(t->merge_rank);
    free(t->merge_out);
    free(t->added);
    free(t->score_rank);
    free(t);
}

void tokenizer_set_ignore_merges(struct tokenizer *t, int on) {
    t->ignore_merges = on != 0;
}

/* --- accessors ---------------------------------------------------------------------------------
 */

int tokenizer_n_vocab(const struct tokenizer *t) {
    return t->n_vocab;
}
int tokenizer_bos(const struct tokenizer *t) {
    return t->bos_id;
}
int tokenizer_eos(const struct tokenizer *t) {
    return t->eos_id;
}
int tokenizer_add_bos(const struct tokenizer *t) {
    return t->add_bos;
}
enum tok_pre tokenizer_pre(const struct tokenizer *t) {
    return t->pre;
}
int tokenizer_has_byte(const struct tokenizer *t, unsigned char b) {
    return t->byte_id[b] >= 0;
}

int tokenizer_is_eog(const struct tokenizer *t, int id) {
    return id >= 0 && id < t->n_vocab && (t->flags[id] & TOKF_EOG) != 0;
}

int tokenizer_is_special(const struct tokenizer *t, int id) {
    return id >= 0 && id < t->n_vocab && (t->flags[id] & TOKF_SPECIAL) != 0;
}

int tokenizer_find(const struct tokenizer *t, const char *text) {
    return text ? vocab_lookup(t, text, strlen(text)) : -1;
}

const char *tokenizer_token_text(const struct tokenizer *t, int id) {
    return id >= 0 && id < t->n_vocab ? t->text + t->text_off[id] : NULL;
}

int tokenizer_token_bytes(const struct tokenizer *t, int id, char *buf, size_t cap) {
    if (id < 0 || id >= t->n_vocab) return -1;
    size_t n = t->bytes_len[id];
    if (buf && cap > 0) {
        memcpy(buf, t->bytes + t->bytes_off[id], n < cap ? n : cap);
        if (n < cap) buf[n] = '\0';
    }
    return (int)n;
}

/* --- encode ------------------------------------------------------------------------------------
 */

struct enc {
    int *ids; /* output */
    size_t n, cap;
    /* BPE scratch for one piece, sized for its byte count */
    int32_t *sym, *prev, *next;
    uint64_t *heap; /* rank << 32 | position, a min-heap */
    size_t scratch_cap;
    size_t *ends; /* (ends_cap) pretok piece ends */
    size_t ends_cap;
    char *str;  /* byte-level string of a piece (ignore_merges lookup) */
    char *cat;  /* (2 * max_text) two tokens' strings joined (merge by score) */
    char *norm; /* (3 * segment + 3) a normalized SentencePiece segment */
};

static int enc_push(struct enc *e, int id) {
    if (e->n == e->cap) {
        size_t nc = e->cap ? 2 * e->cap : 64;
        int *ni = realloc(e->ids, nc * sizeof(*ni));
        if (!ni) return -1;
        e->ids = ni;
        e->cap = nc;
    }
    e->ids[e->n++] = id;
    return 0;
}

static int enc_scratch(struct enc *e, size_t n) {
    if (n <= e->scratch_cap) return 0;
    size_t c = n + n / 2 + 16;
    free(e->sym);
    free(e->prev);
    free(e->next);
    free(e->heap);
    free(e->str);
    e->sym = malloc(c * sizeof(*e->sym));
    e->prev = malloc(c * sizeof(*e->prev));
    e->next = malloc(c * sizeof(*e->next));
    e->heap = malloc(3 * c * sizeof(*e->heap));
    e->str = malloc(2 * c);
    e->scratch_cap = e->sym && e->prev && e->next && e->heap && e->str ? c : 0;
    return e->scratch_cap ? 0 : -1;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= v) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], v = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (v <= h[c]) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = v;
    return top;
}

/* Priority of merging symbols L and R (lower first), or -1; *out receives the merged id. */
static int pair_rank(const struct tokenizer *t, struct enc *e, int l, int r, int *out) {
    if (!t->score_rank) return merge_lookup(t, l, r, out);
    size_t la = t->text_len[l], lb = t->text_len[r];
    memcpy(e->cat, t->text + t->text_off[l], la);
    memcpy(e->cat + la, t->text + t->text_off[r], lb);
    int id = vocab_lookup(t, e->cat, la + lb);
    if (id < 0) return -1;
    *out = id;
    return t->score_rank[id];
}

static void bpe_try_pair(const struct tokenizer *t, struct enc *e, size_t *hn, int pos) {
    int nx = e->next[pos], merged;
    if (nx < 0) return;
    int rank = pair_rank(t, e, e->sym[pos], e->sym[nx], &merged);
    if (rank >= 0) heap_push(e->heap, hn, (uint64_t)(uint32_t)rank << 32 | (uint32_t)pos);
}

/* Run the merges over the M symbols in e->sym (linked through prev/next) and append the ids. */
static int bpe_merge(const struct tokenizer *t, struct enc *e, int m) {
    if (m == 0) return 0;
    e->next[m - 1] = -1;
    size_t hn = 0;
    for (int i = 0; i + 1 < m; i++)
        bpe_try_pair(t, e, &hn, i);
    while (hn > 0) {
        uint64_t top = heap_pop(e->heap, &hn);
        int rank = (int)(top >> 32), pos = (int)(uint32_t)top;
        /* Stale entries: the symbol was merged away (sym < 0) or its pair changed. */
        if (e->sym[pos] < 0 || e->next[pos] < 0) continue;
        int nx = e->next[pos], merged;
        if (pair_rank(t, e, e->sym[pos], e->sym[nx], &merged) != rank) continue;
        e->sym[pos] = merged;
        e->sym[nx] = -1;
        e->next[pos] = e->next[nx];
        if (e->next[nx] >= 0) e->prev[e->next[nx]] = pos;
        if (e->prev[pos] >= 0) bpe_try_pair(t, e, &hn, e->prev[pos]);
        bpe_try_pair(t, e, &hn, pos);
    }
    for (int i = 0; i >= 0; i = e->next[i])
        if (enc_push(e, e->sym[i]) < 0) return -1;
    return 0;
}

static void sym_add(struct enc *e, int *m, int id) {
    e->sym[*m] = id;
    e->prev[*m] = *m - 1;
    e->next[*m] = *m + 1;
    (*m)++;
}

/* SentencePiece-style BPE of one normalized piece P (N bytes): a symbol per UTF-8 character
 * that is a token; else its <0xNN> byte tokens when all exist (HF byte_fallback); else unk_id
 * (one for a run when fuse_unk); else the character is dropped. */
static int spm_piece(const struct tokenizer *t, struct enc *e, const unsigned char *p, size_t n) {
    if (enc_scratch(e, n) < 0) return -1;
    int m = 0, prev_unk = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = (size_t)unicode_utf8_decode(p + i, n - i, &cp);
        int id = vocab_lookup(t, (const char *)p + i, k), bytes_ok = 1;
        for (size_t j = 0; j < k && id < 0; j++)
            bytes_ok &= t->byte_id[p[i + j]] >= 0;
        if (id >= 0) {
            sym_add(e, &m, id);
            prev_unk = 0;
        } else if (bytes_ok) {
            for (size_t j = 0; j < k; j++)
                sym_add(e, &m, t->byte_id[p[i + j]]);
            prev_unk = 0;
        } else if (t->unk_id >= 0) {
            if (!(t->fuse_unk && prev_unk)) sym_add(e, &m, t->unk_id);
            prev_unk = 1;
        }
        i += k;
    }
    return bpe_merge(t, e, m);
}

/* Normalize a SentencePiece segment into e->norm (a U+2581 prefix as t->prefix says, every
 * ' ' as U+2581: HF Prepend + Replace or Metaspace, llama.cpp's escape_whitespace) and BPE it
 * whole. AT_START: the segment begins the text (Metaspace "first"). */
static int spm_segment(const struct tokenizer *t, struct enc *e, const char *s, size_t len,
                       int at_start) {
    free(e->norm);
    e->norm = malloc(3 * len + SPM_MARK_LEN);
    if (!e->norm) return -1;
    size_t o = 0;
    int marked = s[0] == ' ' || (len >= SPM_MARK_LEN && memcmp(s, SPM_MARK, SPM_MARK_LEN) == 0);
    if (t->prefix == TOK_PREFIX_EACH || (t->prefix == TOK_PREFIX_META_ALL && !marked) ||
        (t->prefix == TOK_PREFIX_META_FIRST && !marked && at_start)) {
        memcpy(e->norm, SPM_MARK, SPM_MARK_LEN);
        o = SPM_MARK_LEN;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ' ') {
            memcpy(e->norm + o, SPM_MARK, SPM_MARK_LEN);
            o += SPM_MARK_LEN;
        } else {
            e->norm[o++] = s[i];
        }
    }
    return spm_piece(t, e, (const unsigned char *)e->norm, o);
}

/* BPE one pre-token piece P (N bytes) and append its ids. */
static int bpe_piece(const struct tokenizer *t, struct enc *e, const unsigned char *p, size_t n) {
    if (enc_scratch(e, n) < 0) return -1;
    if (t->ignore_merges) { /* the whole piece is a token: take it (Llama-3) */
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            k += (size_t)unicode_utf8_encode(byte_to_cp(p[i]), e->str + k);
        int id = vocab_lookup(t, e->str, k);
        if (id >= 0) return enc_push(e, id);
    }
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int id = t->byte_id[p[i]];
        /* A byte without a symbol in the vocabulary is dropped, as HF's BPE does with no
         * unk_token (SmolLM2 lacks 21 of the 256, e.g. 0x04, 0x1D, 0xC0, 0xF5..0xFF). */
        if (id >= 0) sym_add(e, &m, id);
    }
    return bpe_merge(t, e, m);
}

/* Pre-tokenize and BPE a stretch of text that holds no added token; AT_START when it begins
 * the text. */
static int encode_plain(const struct tokenizer *t, struct enc *e, const char *s, size_t len,
                        int at_start) {
    if (len == 0) return 0;
    if (t->model == TOK_MODEL_SPM) return spm_segment(t, e, s, len, at_start);
    size_t np;
    if (pretok_split(t->pre, s, len, e->ends, &np) < 0) return -1;
    size_t a = 0;
    for (size_t i = 0; i < np; i++) {
        if (bpe_piece(t, e, (const unsigned char *)s + a, e->ends[i] - a) < 0) return -1;
        a = e->ends[i];
    }
    return 0;
}

/* encode_plain after the normalizer: NFC when the model has one (HF normalizes each stretch
 * between added tokens on its own). NFC may lengthen the text, so e->ends may grow. */
static int encode_normalized(const struct tokenizer *t, struct enc *e, const char *s, size_t len,
                             int at_start) {
    if (!t->nfc || len == 0) return encode_plain(t, e, s, len, at_start);
    char *n;
    size_t nl;
    if (unicode_nfc(s, len, &n, &nl) < 0) return -1;
    if (nl > e->ends_cap) {
        size_t *ne = realloc(e->ends, nl * sizeof(*ne));
        if (!ne) {
            free(n);
            return -1;
        }
        e->ends = ne;
        e->ends_cap = nl;
    }
    int rc = encode_plain(t, e, n, nl, at_start);
    free(n);
    return rc;
}

/* Longest added token matching at S (LEN bytes left), or -1. */
static int match_added(const struct tokenizer *t, const char *s, size_t len, int parse_special) {
    unsigned char b = (unsigned char)s[0];
    int best = -1;
    size_t best_len = 0;
    for (int k = t->added_start[b]; k < t->added_start[b + 1]; k++) {
        int id = t->added[k];
        if (!parse_special && (t->flags[id] & TOKF_SPECIAL)) continue;
        size_t n = t->text_len[id];
        if (n > best_len && n <= len && memcmp(s, t->text + t->text_off[id], n) == 0) {
            best = id;
            best_len = n;
        }
    }
    return best;
}

int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int parse_special,
                     int add_bos, int **ids, int *n_ids, char *err, size_t errlen) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len > 0) {
        errmsg_set(err, errlen, "tokenizer: NULL text");
        return -1;
    }
    if (len > (size_t)INT32_MAX / 2) {
        errmsg_set(err, errlen, "tokenizer: text too long (%zu bytes)", len);
        return -1;
    }
    struct enc e = {0};
    int rc = -1;
    e.ends_cap = len > 0 ? len : 1;
    e.ends = malloc(e.ends_cap * sizeof(*e.ends));
    e.cat = malloc(2 * t->max_text + 1);
    if (!e.ends || !e.cat) goto done;
    if (add_bos && t->add_bos && t->bos_id >= 0 && enc_push(&e, t->bos_id) < 0) goto done;
    size_t seg = 0; /* start of the text not yet encoded */
    for (size_t i = 0; i < len; i++) {
        if (t->added_start[(unsigned char)text[i]] == t->added_start[(unsigned char)text[i] + 1])
            continue;
        int id = match_added(t, text + i, len - i, parse_special);
        if (id < 0) continue;
        if (encode_normalized(t, &e, text + seg, i - seg, seg == 0) < 0 || enc_push(&e, id) < 0)
            goto done;
        i += t->text_len[id] - 1;
        seg = i + 1;
    }
    if (encode_normalized(t, &e, text + seg, len - seg, seg == 0) < 0) goto done;
    if (add_bos && t->add_eos && t->eos_id >= 0 && enc_push(&e, t->eos_id) < 0) goto done;
    rc = 0;
done:
    free(e.sym);
    free(e.prev);
    free(e.next);
    free(e.heap);
    free(e.str);
    free(e.cat);
    free(e.norm);
    free(e.ends);
    if (rc < 0) {
        free(e.ids);
        errmsg_set(err, errlen, "tokenizer: out of memory encoding %zu bytes", len);
        return -1;
    }
    if (!e.ids) e.ids = malloc(sizeof(int)); /* a valid pointer even for no ids */
    *ids = e.ids;
    *n_ids = (int)e.n;
    return 0;
}

/* --- decode ------------------------------------------------------------------------------------
 */

static int decode_skips(const struct tokenizer *t, int id, int skip_special) {
    return id < 0 || id >= t->n_vocab || ((skip_special & 1) && (t->flags[id] & TOKF_SPECIAL));
}

char *tokenizer_decode(const struct tokenizer *t, const int *ids, int n_ids, int skip_special) {
    return tokenizer_decode_len(t, ids, n_ids, skip_special, NULL);
}

char *tokenizer_decode_len(const struct tokenizer *t, const int *ids, int n_ids, int skip_special,
                           size_t *len) {
    size_t total = 0;
    for (int i = 0; i < n_ids; i++)
        if (!decode_skips(t, ids[i], skip_special)) total += t->bytes_len[ids[i]];
    char *raw = malloc(total + 1);
    char *out = malloc(3 * total + 1);
    if (!raw || !out) {
        free(raw);
        free(out);
        return NULL;
    }
    size_t o = 0;
    for (int i = 0; i < n_ids; i++) {
        if (decode_skips(t, ids[i], skip_special)) continue;
        memcpy(raw + o, t->bytes + t->bytes_off[ids[i]], t->bytes_len[ids[i]]);
        o += t->bytes_len[ids[i]];
    }
    size_t skip = t->strip_space && total > 0 && raw[0] == ' '; /* HF Strip(" ", 1, 0) */
    size_t n = unicode_utf8_lossy((const unsigned char *)raw + skip, total - skip, 1, out, NULL);
    out[n] = '\0';
    if (len) *len = n;
    free(raw);
    return out;
}

void tok_stream_init(struct tok_stream *s, int skip_special) {
    memset(s, 0, sizeof(*s));
    s->skip_special = skip_special != 0;
}

size_t tok_stream_cap(const struct tokenizer *t) {
    return 3 * (t->max_bytes + sizeof(((struct tok_stream *)0)->pending)) + 1;
}

/* Repair IN (N bytes) into OUT (CAP), keeping an unfinished trailing character in S. */
static size_t stream_emit(struct tok_stream *s, const unsigned char *in, size_t n, int final,
                          char *out, size_t cap) {
    char local[1024];
    char *tmp = 3 * n <= sizeof(local) ? local : malloc(3 * n);
    if (!tmp) return 0;
    size_t used;
    size_t w = unicode_utf8_lossy(in, n, final, tmp, &used);
    /* unconsumed bytes are a valid but unfinished character: at most 3 */
    s->n_pending = (int)(n - used);
    memmove(s->pending, in + used, n - used);
    size_t c = w < cap ? w : cap; /* a CAP below tok_stream_cap() may truncate */
    if (c > 0) memcpy(out, tmp, c);
    if (c < cap) out[c] = '\0';
    if (tmp != local) free(tmp);
    return c;
}

size_t tok_stream_push(const struct tokenizer *t, struct tok_stream *s, int id, char *out,
                       size_t cap) {
    if (decode_skips(t, id, s->skip_special)) {
        if (cap > 0) out[0] = '\0';
        return 0;
    }
    const char *tb = t->bytes + t->bytes_off[id];
    size_t tn = t->bytes_len[id];
    if (tn > 0 && !(s->skip_special & TOK_STREAM_STARTED)) { /* the output's first byte */
        s->skip_special |= TOK_STREAM_STARTED;
        if (t->strip_space && tb[0] == ' ') {
            tb++;
            tn--;
        }
    }
    size_t n = (size_t)s->n_pending + tn;
    unsigned char local[512];
    unsigned char *buf = n <= sizeof(local) ? local : malloc(n > 0 ? n : 1);
    if (!buf) return 0;
    memcpy(buf, s->pending, (size_t)s->n_pending);
    memcpy(buf + s->n_pending, tb, tn);
    size_t w = stream_emit(s, buf, n, 0, out, cap);
    if (buf != local) free(buf);
    return w;
}

size_t tok_stream_flush(struct tok_stream *s, char *out, size_t cap) {
    unsigned char buf[sizeof(s->pending)];
    size_t n = (size_t)s->n_pending;
    memcpy(buf, s->pending, n);
    return stream_emit(s, buf, n, 1, out, cap);
}
