/* pretok.h — pre-tokenizers of byte-level BPE: split text into the pieces BPE runs on.
 *
 * Hand-written matchers equivalent to the regexes of Hugging Face tokenizers and llama.cpp's
 * llama-vocab.cpp, applied in "Isolated" mode (every byte of the text lands in exactly one piece):
 *   TOK_PRE_GPT2    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   TOK_PRE_SMOLLM  every \p{N} code point alone, then the GPT-2 regex on each remaining run
 *   TOK_PRE_LLAMA3  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *                   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   TOK_PRE_QWEN2   the Llama-3 regex with \p{N} in place of \p{N}{1,3} (Qwen2's tokenizer.json)
 *   TOK_PRE_NONE    the whole text is one piece
 * Bytes that are not valid UTF-8 count as single code points of no class (like punctuation).
 */
#ifndef FG_PRETOK_H
#define FG_PRETOK_H

#include <stddef.h>

#include "model/tokenizer.h"

/* Split TEXT (LEN bytes) into pieces. ENDS (room for LEN entries) receives the byte offset just
 * past each piece, in order; *n_pieces their count. Returns 0, or -1 when out of memory. */
int pretok_split(enum tok_pre pre, const char *text, size_t len, size_t *ends, size_t *n_pieces);

#endif
