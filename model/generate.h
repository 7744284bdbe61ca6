/* generate.h — one sequence from prompt to stop, on an engine: chunked prefill, then decode
 * steps with a sampler. Used by `flashgen generate`, the golden tests and the CPU benchmark; the
 * server batches many sequences through its own scheduler instead. Caller's thread owns e.
 */
#ifndef FG_GENERATE_H
#define FG_GENERATE_H

#include "engine.h"
#include "sampler.h"

enum gen_finish {
    GEN_FINISH_LENGTH = 0, /* max_new_tokens reached */
    GEN_FINISH_EOS = 1,    /* end-of-generation token */
    GEN_FINISH_STOPPED = 2 /* the callback asked to stop */
};

struct gen_result {
    int *ids; /* (n) generated ids, malloc'd; free with gen_result_free */
    int n;
    enum gen_finish finish;
    double prefill_seconds, decode_seconds;
};

/* Called after each generated token; return nonzero to stop. */
typedef int (*gen_token_fn)(int id, void *user);

/* Generate up to max_new tokens after PROMPT. STOP_AT_EOG: end at the tokenizer's end tokens.
 * LOGITS_OUT (optional, (max_new, vocab) floats) receives the raw logits of every step. */
int gen_run(struct engine *e, const int *prompt, int n_prompt, const struct sampler_params *sp,
            int max_new, int stop_at_eog, gen_token_fn cb, void *user, float *logits_out,
            struct gen_result *res, char *err, size_t errlen);
void gen_result_free(struct gen_result *r);

#endif
