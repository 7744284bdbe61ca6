/* generate.c — prompt → tokens for one sequence. See generate.h. */
#include "generate.h"

#include "kernels/sample.h"
#include "model/errmsg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void gen_result_free(struct gen_result *r) {
    if (!r) return;
    free(r->ids);
    memset(r, 0, sizeof(*r));
}

int gen_run(struct engine *e, const int *prompt, int n_prompt, const struct sampler_params *sp,
            int max_new, int stop_at_eog, gen_token_fn cb, void *user, float *logits_out,
            struct gen_result *res, char *err, size_t errlen) {
    memset(res, 0, sizeof(*res));
    const struct model_config *cfg = &e->model->cfg;
    int V = cfg->vocab_size;
    if (n_prompt <= 0) {
        errmsg_set(err, errlen, "empty prompt");
        return -1;
    }
    if (max_new < 0) max_new = 0;
    if (n_prompt + max_new > cfg->max_seq_len) {
        errmsg_set(err, errlen, "prompt of %d tokens + %d new exceeds the context of %d", n_prompt,
                   max_new, cfg->max_seq_len);
        return -1;
    }
    struct kv_seq seq = {0};
    struct sampler smp;
    int *history = malloc(sizeof(int) * (size_t)(n_prompt + max_new + 1));
    res->ids = malloc(sizeof(int) * (size_t)(max_new + 1));
    if (!history || !res->ids || sampler_init(&smp, sp, V) != 0) {
        errmsg_set(err, errlen, "out of memory");
        free(history);
        gen_result_free(res);
        return -1;
    }
    memcpy(history, prompt, sizeof(int) * (size_t)n_prompt);
    int n_hist = n_prompt, rc = -1;
    if (kv_seq_reserve(&e->kv, &seq, n_prompt + max_new) != 0) {
        errmsg_set(err, errlen, "KV cache too small for %d tokens", n_prompt + max_new);
        goto done;
    }
    double t0 = now_seconds();
    for (int off = 0; off < n_prompt; off += e->max_batch_tokens) {
        int n = n_prompt - off < e->max_batch_tokens ? n_prompt - off : e->max_batch_tokens;
        struct fwd_seq fs = {prompt + off, n, &seq, n};
        int last = off + n >= n_prompt;
        float *lo = last && logits_out && max_new > 0 ? logits_out : NULL;
        if (fwd_run(e->fwd, &fs, 1, lo, err, errlen) != 0) goto done;
    }
    double t1 = now_seconds();
    res->prefill_seconds = t1 - t0;
    res->finish = GEN_FINISH_LENGTH;
    for (int step = 0; step < max_new; step++) {
        if (step > 0) {
            struct fwd_seq fs = {&history[n_hist - 1], 1, &seq, 0};
            float *lo = logits_out ? logits_out + (size_t)step * V : NULL;
            if (fwd_run(e->fwd, &fs, 1, lo, err, errlen) != 0) goto done;
        }
        struct fg_sample_row row;
        int penalised = sp->repetition_penalty != 1.0f, id = 0;
        float lp = 0;
        sampler_row(&smp, 0, penalised ? n_hist : 0, &row);
        if (fwd_sample(e->fwd, 1, &row, history, n_hist, &id, &lp, err, errlen) != 0) goto done;
        history[n_hist++] = id;
        res->ids[res->n++] = id;
        if (stop_at_eog && tokenizer_is_eog(e->model->tok, id)) {
            res->finish = GEN_FINISH_EOS;
            break;
        }
        if (cb && cb(id, user)) {
            res->finish = GEN_FINISH_STOPPED;
            break;
        }
    }
    res->decode_seconds = now_seconds() - t1;
    rc = 0;
done:
    kv_seq_release(&e->kv, &seq);
    sampler_free(&smp);
    free(history);
    if (rc != 0) gen_result_free(res);
    return rc;
}
