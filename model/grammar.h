/* grammar.h — constrained decoding: a context-free grammar over bytes, its matcher, the
 * compilers that produce one (JSON Schema, JSON mode, regular expressions) and the
 * allowed-token mask of a matcher state.
 *
 * The grammar is GBNF-like: rules, each a list of alternatives, each a sequence of elements;
 * an element is a byte set (one byte in 256) or a reference to a rule. It is byte-level rather
 * than code-point-level because tokens are byte strings that may split a UTF-8 character: a
 * multi-byte character is a sequence of byte sets, so a token walks the matcher one byte at a
 * time with no partial-character bookkeeping.
 *
 * The matcher (llama.cpp's design, written here from the idea) holds a set of stacks: each stack
 * is the positions still to match, innermost last, and every top is a byte set (rule references
 * are expanded eagerly). Accepting a byte keeps the stacks whose top admits it, pops that
 * element and expands what follows; an empty stack means the input so far is a complete match.
 * Expansion visits each distinct intermediate stack once per byte, so grammars with nullable
 * loops ((a*)*) terminate; stacks deeper than GRAMMAR_MAX_DEPTH or sets larger than
 * GRAMMAR_MAX_STACKS make the step fail (an error, not a crash: the request ends).
 *
 * Ownership: a struct grammar is immutable once compiled (any thread may read it); a matcher
 * belongs to one request and is used by one thread at a time; a struct grammar_vocab (the token
 * trie) is built once per tokenizer and only read afterwards.
 */
#ifndef FG_GRAMMAR_H
#define FG_GRAMMAR_H

#include <stddef.h>
#include <stdint.h>

struct tokenizer;
struct cJSON;

#define GRAMMAR_MAX_DEPTH 2048   /* positions in one stack */
#define GRAMMAR_MAX_STACKS 4096  /* stacks in one state */
#define GRAMMAR_MAX_ELEMS 200000 /* elements in one grammar (bounds what a request can build) */

struct grammar;

/* ---- building (the compilers' API) ---------------------------------------------------------- */

/* A new empty grammar; NULL when out of memory. */
struct grammar *grammar_new(void);
void grammar_free(struct grammar *g); /* accepts NULL and half-built grammars */
/* A new rule with one empty alternative; returns its id, or -1 (out of memory or too many). */
int grammar_rule(struct grammar *g);
/* Append to rule R's last alternative: the bytes S[0..N) (one element each), the byte set SET
 * (256 bits, bit b = byte b allowed), the byte range [LO, HI], or a reference to rule REF.
 * Return 0 or -1 (out of memory, or over GRAMMAR_MAX_ELEMS). */
int grammar_add_bytes(struct grammar *g, int r, const char *s, size_t n);
int grammar_add_set(struct grammar *g, int r, const uint32_t set[8]);
int grammar_add_range(struct grammar *g, int r, unsigned lo, unsigned hi);
int grammar_add_ref(struct grammar *g, int r, int ref);
/* Start a new (empty) alternative of rule R. */
int grammar_add_alt(struct grammar *g, int r);
/* The rule of one well-formed multi-byte UTF-8 character (U+0080..U+10FFFF, no surrogates, no
 * overlong forms), built once per grammar; its id or -1. */
int grammar_rule_utf8(struct grammar *g);
/* Freeze G with rule ROOT as the start symbol: no more building. Returns 0 or -1 (out of memory,
 * or a reference to a rule that does not exist). */
int grammar_finish(struct grammar *g, int root);
/* Elements in a finished grammar (its size, for limits and logs). */
int grammar_n_elems(const struct grammar *g);
/* A 64-bit hash of a finished grammar's elements: grammars compiled from the same schema or
 * regex are equal and have the same fingerprint (what a shared mask cache is keyed by). */
uint64_t grammar_fingerprint(const struct grammar *g);

/* ---- compilers ------------------------------------------------------------------------------ */

/* Each returns a finished grammar, or NULL with a message in ERR; *BAD_KEYWORD (may be NULL)
 * gets the unsupported keyword or construct ("" when the input is merely malformed or too big). */

/* A JSON Schema (the subset OpenAI structured outputs and TGI accept; json_schema.c lists it). */
struct grammar *grammar_from_json_schema(const struct cJSON *schema, char *err, size_t errlen,
                                         char *bad_keyword, size_t kwlen);
/* JSON mode: any JSON value whose top level is an object (OpenAI json_object). */
struct grammar *grammar_json_object(char *err, size_t errlen);
/* A regular expression, matched in full (anchors implied; regex.c lists the syntax). */
struct grammar *grammar_from_regex(const char *re, size_t len, char *err, size_t errlen,
                                   char *bad_keyword, size_t kwlen);

/* Used by the schema compiler: compile regex RE into a new rule of G. JSON_STRING restricts it
 * to what may appear raw inside a JSON string (no '"', '\\' or control bytes). Returns the rule
 * id or -1 with ERR. */
int grammar_regex_rule(struct grammar *g, const char *re, size_t len, int json_string, char *err,
                       size_t errlen, char *bad_keyword, size_t kwlen);

/* ---- matching ------------------------------------------------------------------------------- */

struct grammar_matcher;

/* A matcher at the start of G (which must outlive it); NULL when out of memory or when the
 * grammar's start cannot be expanded (the limits above). */
struct grammar_matcher *grammar_matcher_new(const struct grammar *g);
void grammar_matcher_free(struct grammar_matcher *m);
/* Feed bytes. 0: all accepted; -1: some byte was refused (or a limit hit) and the state is as
 * before the call. */
int grammar_matcher_accept(struct grammar_matcher *m, const void *bytes, size_t n);
/* Set DST's state to SRC's (both of one grammar). 0 or -1 (out of memory, or another grammar). */
int grammar_matcher_copy_state(struct grammar_matcher *dst, const struct grammar_matcher *src);
/* 1 when the bytes so far are a complete match (the end may come here). */
int grammar_matcher_accepting(const struct grammar_matcher *m);
/* 1 when no byte can follow (complete and nothing may extend it). */
int grammar_matcher_finished(const struct grammar_matcher *m);

/* ---- the allowed-token mask ----------------------------------------------------------------- */

struct grammar_vocab;

/* The prefix tree of TOK's non-special tokens (their decoded bytes) and its end-of-generation
 * ids. Returns 0 or -1 (out of memory). */
int grammar_vocab_new(const struct tokenizer *tok, struct grammar_vocab **out);
void grammar_vocab_free(struct grammar_vocab *v);
int grammar_vocab_size(const struct grammar_vocab *v);

/* MASK (grammar_mask_words(V) words, bit i = token i allowed) for M's state: every token whose
 * bytes the matcher accepts from here, and the end-of-generation tokens when the state is
 * accepting. Computed by one walk of the prefix tree, memoized as a DFA over the stack sets met
 * (grammar_mask.c); masks are cached per state (by a 64-bit hash of the stack set) inside M. The
 * memo takes 180 KB per matcher plus 512 B per state met (2048 at most), allocated from the
 * first call; the cache up to 64 masks (6 KB each for a 49k vocabulary). Returns the number of
 * allowed tokens, or -1 on a limit. */
int grammar_mask(struct grammar_matcher *m, const struct grammar_vocab *v, uint32_t *mask);
size_t grammar_mask_words(const struct grammar_vocab *v);

/* Masks shared between matchers: requests with the same schema walk the same states, so a mask
 * one request computed is a copy for every other (keyed by the grammar's fingerprint and the
 * state's hash). Thread-safe: the worker computes rows' masks in parallel. Bounded by MAX_BYTES
 * of masks for V's vocabulary (4-way sets, the least recently used way replaced). NULL when out
 * of memory. */
struct grammar_mask_cache;
struct grammar_mask_cache *grammar_mask_cache_new(const struct grammar_vocab *v, size_t max_bytes);
void grammar_mask_cache_free(struct grammar_mask_cache *c);
/* Lookups and stores of M's masks then go to C too (C must outlive M; NULL detaches). */
void grammar_matcher_share(struct grammar_matcher *m, struct grammar_mask_cache *c);
/* Masks found in C (hits) and computed then stored (misses) since it was made. */
void grammar_mask_cache_stats(struct grammar_mask_cache *c, uint64_t *hits, uint64_t *misses);
/* The masks of a step's N rows (the worker's call): row i with M[i] != NULL gets its mask in
 * MASKS + i * grammar_mask_words(V) and grammar_mask's return in COUNTS[i]; rows with M[i] NULL
 * get COUNTS[i] = -2 and their mask untouched. Rows whose matchers are in one state of equal
 * grammars (the shared cache's key) cost one mask: the first of them computes it, the others
 * copy it, so a batch of one schema does not walk a new state once per row. The distinct states
 * run on POOL's threads (NULL: the caller's thread), taken one at a time, as their costs differ
 * (a cached copy or a fresh walk). The matchers must be distinct objects. Returns how many masks
 * were computed (distinct states), or -1 when out of memory (nothing computed). */
struct cpu_pool;
int grammar_mask_rows(struct grammar_matcher *const *m, int n, const struct grammar_vocab *v,
                      uint32_t *masks, int *counts, struct cpu_pool *pool);
/* Advance M by token ID: its bytes, or nothing for an end-of-generation token (accepted only in
 * an accepting state). 0, or -1 when the grammar refuses it (the state is unchanged). */
int grammar_matcher_accept_token(struct grammar_matcher *m, const struct grammar_vocab *v, int id);
/* A step's advances at once (the worker's call, after the picks): row i with M[i] != NULL is
 * advanced by IDS[i], STATUS[i] = grammar_matcher_accept_token's return (0 for rows with M[i]
 * NULL), on the calling thread. Rows in one state of equal grammars help each other: the same
 * token from the same state is advanced once and copied, and a row whose matcher did not walk
 * its state (its mask was a copy) follows the memo of one that did (the step's row that
 * computed the state's mask, or the matcher whose walk stored it in the shared cache, when that
 * one is in the step). The matchers must be distinct objects. */
void grammar_accept_rows(struct grammar_matcher *const *m, int n, const struct grammar_vocab *v,
                         const int *ids, int *status);

#endif
