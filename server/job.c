/* job.c — shared plumbing of the generation endpoints: admission, the replies to refused
 * bodies (reqparse.c does the reading), prompt tokenization on a libuv work thread (job_prep),
 * prompt limits, job construction. Error replies follow TGI's
 * wording ("Input validation error: ...") so clients written against TGI see familiar messages. */
#include "job.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "model/tokenizer.h"
#include "server/utf8.h"

int job_admit(struct server *sv, struct http_req *r) {
    if (sv->phase == SERVER_LOADING || sv->phase == SERVER_FAILED) {
        metrics_request(&sv->metrics, METRICS_OUT_UNAVAILABLE);
        http_req_log(r)->outcome = "unavailable";
        http_reply_error(r, 503, "unavailable", NULL,
                         sv->phase == SERVER_LOADING ? "Loading model" : "Model failed to load");
        return -1;
    }
    if (sv->phase == SERVER_DRAINING) {
        metrics_request(&sv->metrics, METRICS_OUT_UNAVAILABLE);
        http_req_log(r)->outcome = "unavailable";
        http_reply_error(r, 503, "shutting_down", NULL, "Server is shutting down");
        return -1;
    }
    if (sv->inflight >= sv->cfg.max_concurrent_requests) {
        metrics_request(&sv->metrics, METRICS_OUT_OVERLOADED);
        http_req_log(r)->outcome = "overloaded";
        http_reply_error(r, 429, "overloaded", NULL, "Model is overloaded (%d requests in flight)",
                         sv->inflight);
        return -1;
    }
    return 0;
}

int job_reply_invalid(struct server *sv, struct http_req *r, const struct reqparse_error *err) {
    int internal = err->status == 500; /* out of memory while parsing: not the client's fault */
    metrics_request(&sv->metrics, internal ? METRICS_OUT_ERROR : METRICS_OUT_VALIDATION);
    http_req_log(r)->outcome = internal ? "error" : "validation_error";
    http_reply_error(r, err->status, err->type, err->param[0] ? err->param : NULL, "%s",
                     err->message);
    return -1;
}

cJSON *job_parse_body(struct server *sv, struct http_req *r) {
    size_t len;
    const char *body = http_req_body(r, &len);
    struct reqparse_error err;
    cJSON *j = reqparse_body(body, len, &err);
    if (!j) job_reply_invalid(sv, r, &err);
    return j;
}

int job_invalid(struct server *sv, struct http_req *r, const char *field, const char *fmt, ...) {
    char msg[340];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct reqparse_error err;
    reqparse_invalid(&err, field, "%s", msg);
    return job_reply_invalid(sv, r, &err);
}

int job_get_bool(struct server *sv, struct http_req *r, const cJSON *obj, const char *name,
                 int *out) {
    struct reqparse_error err;
    if (reqparse_get_bool(obj, name, out, &err)) return job_reply_invalid(sv, r, &err);
    return 0;
}

static uint64_t random_seed(void) {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) s = (uint64_t)(worker_now() * 1e9);
    return s & ((1ull << 53) - 1); /* exact in a JSON number */
}

struct wreq *job_build_ids(struct server *sv, struct http_req *r, const int *ids, int n,
                           struct job_params *p, const char *field) {
    const struct worker_info *in = &sv->worker.info;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= in->vocab) {
            job_invalid(sv, r, field, "token id %d is outside the vocabulary [0, %d)", ids[i],
                        in->vocab);
            return NULL;
        }
    for (int i = 0; i < p->sp.n_bias; i++)
        if (p->sp.bias_id[i] >= in->vocab) {
            job_invalid(sv, r, "logit_bias",
                        "`logit_bias` token id %d is outside the vocabulary [0, %d)",
                        p->sp.bias_id[i], in->vocab);
            return NULL;
        }
    if (p->truncate > 0 && n > p->truncate) {
        ids += n - p->truncate;
        n = p->truncate;
    }
    if (n <= 0) {
        job_invalid(sv, r, field, "`%s` cannot be empty", field);
        return NULL;
    }
    if (n > sv->max_input) {
        job_invalid(sv, r, field, "`%s` must have less than %d tokens. Given: %d", field,
                    sv->max_input + 1, n);
        return NULL;
    }
    int max_new = p->max_new;
    if (max_new < 0) {
        max_new = p->max_new_to_context ? sv->max_total - n : sv->cfg.default_max_new_tokens;
        if (n + max_new > sv->max_total) max_new = sv->max_total - n;
        if (max_new < 1) max_new = 1;
    }
    if (n + max_new > sv->max_total) {
        job_invalid(sv, r, field,
                    "`%s` tokens + `max_new_tokens` must be <= %d. Given: %d `%s` tokens and %d "
                    "`max_new_tokens`",
                    field, sv->max_total, n, field, max_new);
        return NULL;
    }
    struct wreq *j = wreq_new(n, max_new, p->prompt_logprobs);
    if (!j) {
        http_reply_error(r, 500, "internal", NULL, "out of memory");
        return NULL;
    }
    if (wreq_want_top(j, p->top_k) != 0) {
        wreq_free(j);
        http_reply_error(r, 500, "internal", NULL, "out of memory");
        return NULL;
    }
    memcpy(j->tokens, ids, sizeof(int) * (size_t)n);
    j->sp = p->sp;
    if (j->sp.do_sample && !p->seed_given) j->sp.seed = random_seed();
    j->stop = p->stop;
    j->n_stop = p->n_stop;
    p->stop = NULL;
    p->n_stop = 0;
    j->ignore_eos = p->ignore_eos;
    j->grammar = p->grammar;
    p->grammar = NULL;
    j->t_arrival = http_req_start(r);
    if (sv->cfg.request_timeout > 0) j->deadline = j->t_arrival + sv->cfg.request_timeout;
    if (sv->cfg.queue_timeout > 0) j->queue_deadline = j->t_arrival + sv->cfg.queue_timeout;
    j->id = ++sv->next_id;
    struct reqlog *l = http_req_log(r);
    l->id = j->id;
    l->tokens_in = n;
    return j;
}

uint64_t job_seed(uint64_t seed, int c) {
    if (c == 0) return seed;
    uint64_t z = seed + (uint64_t)c * 0x9E3779B97F4A7C15ULL; /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z & ((1ull << 53) - 1); /* exact in a JSON number, as random seeds are */
}

static void jobs_free(struct wreq **js, int n) {
    for (int i = 0; js && i < n; i++)
        wreq_free(js[i]);
    free(js);
}

int job_build_group(struct server *sv, struct http_req *r, int *const *ids, const int *lens,
                    int n_prompts, struct job_params *p, const char *field, struct wreq ***out) {
    int per = p->n_seqs > 0 ? p->n_seqs : 1, total = n_prompts * per, built = 0, prompt_tokens = 0;
    *out = NULL;
    if (total > 1 && p->grammar) {
        job_invalid(sv, r, "n",
                    "more than one sequence with a grammar (response_format) is not "
                    "supported");
        return -1;
    }
    struct wreq **js = calloc((size_t)total, sizeof *js);
    if (!js) {
        http_reply_error(r, 500, "internal", NULL, "out of memory");
        return -1;
    }
    char **stop = p->stop;
    int n_stop = p->n_stop;
    uint64_t seed = p->sp.seed;
    for (int c = 0; c < total; c++) {
        /* every job gets its own stop strings; the last one takes P's */
        char **mine = stop;
        if (c + 1 < total && n_stop) {
            mine = calloc((size_t)n_stop, sizeof *mine);
            for (int i = 0; mine && i < n_stop; i++)
                if (!(mine[i] = strdup(stop[i]))) {
                    for (int k = 0; k < i; k++)
                        free(mine[k]);
                    free(mine);
                    mine = NULL;
                }
            if (!mine) {
                http_reply_error(r, 500, "internal", NULL, "out of memory");
                goto fail;
            }
        }
        p->stop = mine;
        p->n_stop = n_stop;
        if (p->seed_given) p->sp.seed = job_seed(seed, c);
        struct wreq *j = job_build_ids(sv, r, ids[c / per], lens[c / per], p, field);
        if (!j) {
            if (mine != stop) {
                for (int i = 0; i < n_stop; i++)
                    free(mine[i]);
                free(mine);
            }
            goto fail;
        }
        j->index = c;
        if (c % per && !p->prompt_logprobs) j->fork_of = js[c - c % per];
        if (c % per == 0) prompt_tokens += j->n_prompt;
        js[built++] = j;
    }
    p->stop = NULL;
    p->n_stop = 0;
    http_req_log(r)->tokens_in = prompt_tokens;
    *out = js;
    return total;
fail:
    p->stop = stop; /* moved only into the last job, after which nothing fails */
    p->n_stop = n_stop;
    jobs_free(js, built);
    return -1;
}

/* Prompts on their way to jobs: tokenized (and first rendered, for a chat) on a libuv work
 * thread, then built and run on the loop. It owns everything until prep_done hands the jobs and
 * CTX to the driver; prep_done frees it, whether or not the client is still there. */
struct job_prep {
    uv_work_t w;
    struct server *sv;
    struct http_req *r; /* NULL once the HTTP request completed (loop thread) */
    const struct job_render *rd;
    void *ctx;
    struct job_params p;
    const char *field;
    int parse_special, add_bos;
    const struct tokenizer *tok;
    const struct chat_template *chat; /* with msgs: render them into texts[0] first */
    char **texts;                     /* (n_texts) */
    int n_texts;
    struct chat_msg *msgs;
    int n_msgs;
    /* results, written on the work thread, read in prep_done */
    int status;    /* 0, 422 (a prompt is refused) or 500 */
    int **ids, *n; /* (n_texts) */
    char err[400];
};

static void prep_free(struct job_prep *jp) {
    if (jp->ctx && jp->rd->free) jp->rd->free(jp->ctx);
    job_params_free(&jp->p);
    for (int i = 0; i < jp->n_texts; i++) {
        if (jp->texts) free(jp->texts[i]);
        if (jp->ids) free(jp->ids[i]);
    }
    free(jp->texts);
    for (int i = 0; i < jp->n_msgs; i++)
        chat_msg_free_strings(&jp->msgs[i]);
    free(jp->msgs);
    free(jp->ids);
    free(jp->n);
    free(jp);
}

/* Work thread: render and tokenize; touches nothing but its job_prep and the read-only model
 * tables (tokenizer, chat template). */
static void prep_work(uv_work_t *w) {
    struct job_prep *jp = w->data;
    char why[300];
    if (jp->msgs) {
        int rc = chat_template_render_tools(jp->chat, jp->msgs, jp->n_msgs, jp->p.chat_tools, 1,
                                            &jp->texts[0], why, sizeof why);
        if (rc) { /* > 0: the model's template refused these messages (raise_exception, ...) */
            jp->status = rc > 0 ? 422 : 500;
            snprintf(jp->err, sizeof jp->err, rc > 0 ? "%s" : "cannot render the chat template: %s",
                     why);
            return;
        }
    }
    for (int i = 0; i < jp->n_texts; i++)
        if (tokenizer_encode(jp->tok, jp->texts[i], strlen(jp->texts[i]), jp->parse_special,
                             jp->add_bos, &jp->ids[i], &jp->n[i], why, sizeof why) != 0) {
            jp->status = 422;
            if (jp->n_texts > 1)
                snprintf(jp->err, sizeof jp->err, "cannot tokenize `%s[%d]`: %s", jp->field, i,
                         why);
            else
                snprintf(jp->err, sizeof jp->err, "cannot tokenize `%s`: %s", jp->field, why);
            return;
        }
}

/* Loop thread: the request completed (the client went away) before the work did. */
static void prep_on_close(struct http_req *r, void *ctx, int aborted) {
    (void)r, (void)aborted;
    struct job_prep *jp = ctx;
    jp->r = NULL;
}

/* Loop thread: reply the refusal, or build and run the jobs; then free what is left. */
static void prep_done(uv_work_t *w, int status) {
    struct job_prep *jp = w->data;
    struct http_req *r = jp->r;
    jp->sv->preps--; /* the loop is still running, so the server is there */
    if (r) {
        struct server *sv = jp->sv;
        http_req_set_ctx(r, NULL, NULL);
        if (status)
            http_reply_error(r, 500, "internal", NULL, "the tokenization was cancelled");
        else if (jp->status == 500)
            http_reply_error(r, 500, "internal", NULL, "%s",
                             jp->err[0] ? jp->err : "out of memory");
        else if (jp->status == 422)
            job_invalid(sv, r, jp->field, "%s", jp->err);
        else if (job_admit(sv, r) == 0) {
            struct wreq **js;
            int n = job_build_group(sv, r, jp->ids, jp->n, jp->n_texts, &jp->p, jp->field, &js);
            if (n > 0 && jp->rd->on_job) jp->rd->on_job(jp->ctx, js, n);
            if (n > 0 && job_run(sv, r, js, n, jp->rd, jp->ctx) == 0) jp->ctx = NULL;
        }
    }
    prep_free(jp);
}

/* Queue JP's work and defer the reply; on failure reply 500 and free JP but not its CTX. */
static int prep_queue(struct job_prep *jp) {
    jp->w.data = jp;
    if (uv_queue_work(jp->sv->loop, &jp->w, prep_work, prep_done) != 0) {
        http_reply_error(jp->r, 500, "internal", NULL, "cannot queue the tokenization");
        jp->ctx = NULL;
        prep_free(jp);
        return -1;
    }
    jp->sv->preps++;
    http_req_set_ctx(jp->r, jp, prep_on_close);
    http_defer(jp->r);
    return 0;
}

/* A prep for N_TEXTS prompts; its texts array is allocated (NULL entries). */
static struct job_prep *prep_new(struct server *sv, struct http_req *r, struct job_params *p,
                                 const char *field, const struct job_render *rd, void *ctx,
                                 int n_texts) {
    struct job_prep *jp = calloc(1, sizeof *jp);
    if (jp) {
        *jp = (struct job_prep){.sv = sv,
                                .r = r,
                                .rd = rd,
                                .ctx = ctx,
                                .p = *p,
                                .field = field,
                                .tok = sv->worker.info.tok,
                                .n_texts = n_texts};
        job_params_init(p); /* its stop and grammar are the prep's now */
        jp->texts = calloc((size_t)n_texts, sizeof *jp->texts);
        jp->ids = calloc((size_t)n_texts, sizeof *jp->ids);
        jp->n = calloc((size_t)n_texts, sizeof *jp->n);
    }
    if (!jp || !jp->texts || !jp->ids || !jp->n) {
        if (jp) {
            jp->ctx = NULL; /* still the caller's */
            prep_free(jp);
        }
        http_reply_error(r, 500, "internal", NULL, "out of memory");
        return NULL;
    }
    return jp;
}

int job_start_texts(struct server *sv, struct http_req *r, char **texts, int n_texts,
                    int parse_special, int add_bos, struct job_params *p, const char *field,
                    const struct job_render *rd, void *ctx) {
    struct job_prep *jp = prep_new(sv, r, p, field, rd, ctx, n_texts);
    if (!jp) {
        for (int i = 0; i < n_texts; i++)
            free(texts[i]);
        free(texts);
        return -1;
    }
    memcpy(jp->texts, texts, sizeof *texts * (size_t)n_texts);
    free(texts);
    jp->parse_special = parse_special;
    jp->add_bos = add_bos;
    return prep_queue(jp);
}

int job_start_text(struct server *sv, struct http_req *r, char *text, int parse_special,
                   int add_bos, struct job_params *p, const char *field,
                   const struct job_render *rd, void *ctx) {
    char **texts = malloc(sizeof *texts);
    if (!texts) {
        free(text);
        http_reply_error(r, 500, "internal", NULL, "out of memory");
        return -1;
    }
    texts[0] = text;
    return job_start_texts(sv, r, texts, 1, parse_special, add_bos, p, field, rd, ctx);
}

int job_start_chat(struct server *sv, struct http_req *r, struct chat_msg *msgs, int n,
                   struct job_params *p, const struct job_render *rd, void *ctx) {
    struct job_prep *jp = prep_new(sv, r, p, "messages", rd, ctx, 1);
    if (!jp) {
        for (int i = 0; i < n; i++)
            chat_msg_free_strings(&msgs[i]);
        free(msgs);
        return -1;
    }
    jp->msgs = msgs;
    jp->n_msgs = n;
    jp->chat = sv->worker.info.chat;
    jp->parse_special = 1;
    jp->add_bos = 0;
    return prep_queue(jp);
}

/* The driver of one request and its jobs: everything the loop holds for it (loop thread only).
 * It is freed once, by whichever of its two ends comes last: the last finish event or the HTTP
 * completion. */
struct job_drv {
    struct server *sv;
    struct http_req *r; /* NULL once the HTTP request completed */
    struct wreq **js;   /* (n) by index */
    int n;
    int *sent; /* (n) tokens handed to on_tokens */
    const struct job_render *rd;
    void *ctx;
    int finished; /* finish events delivered */
    int quiet; /* render nothing more (client gone, a job failed, or the reply could not start) */
};

static void drv_free(struct job_drv *d) {
    if (d->rd->free) d->rd->free(d->ctx);
    jobs_free(d->js, d->n);
    free(d->sent);
    free(d);
}

/* Ask the worker to end every job of D that has not ended. */
static void drv_cancel(struct job_drv *d) {
    for (int i = 0; i < d->n; i++)
        worker_cancel(&d->sv->worker, d->js[i]);
}

/* Worker events of one job (loop thread, no lock held). */
static void drv_on_event(struct wreq *j, void *user) {
    struct job_drv *d = user;
    int done = j->finish != WREQ_FIN_NONE, i = j->index;
    if (done) d->finished++;
    if (!d->quiet) {
        int failed = done && job_failed_finish(j->finish);
        if (d->rd->stream && d->rd->on_tokens) d->rd->on_tokens(d->ctx, d->r, j, d->sent[i]);
        d->sent[i] = j->n_gen;
        if (failed) { /* the request fails with it; the other jobs are cancelled */
            if (d->rd->on_error)
                d->rd->on_error(d->ctx, d->r, j);
            else
                job_reply_failed(d->r, j);
            d->quiet = 1;
            drv_cancel(d);
        } else if (d->finished == d->n) {
            d->rd->on_finish(d->ctx, d->r, d->js, d->n);
            d->quiet = 1;
        }
        if (d->quiet) {
            if (d->rd->stream) http_stream_end(d->r);
            job_log(d->r, d->js, d->n);
        }
    }
    if (d->finished == d->n && !d->r) drv_free(d); /* the request completed first: the last */
}

/* The HTTP request completed (reply sent, or the client went away). Its log line is written
 * right after this: when the finish events have not all arrived yet, it carries the counts the
 * loop has received so far (the outcome stays unset: "cancelled"). */
static void drv_on_close(struct http_req *r, void *ctx, int aborted) {
    (void)aborted;
    struct job_drv *d = ctx;
    if (d->finished < d->n) job_log(r, d->js, d->n);
    d->r = NULL;
    d->quiet = 1;
    if (d->finished == d->n) {
        drv_free(d);
        return;
    }
    drv_cancel(d); /* the last finish event then frees it */
}

int job_run(struct server *sv, struct http_req *r, struct wreq **js, int n,
            const struct job_render *rd, void *ctx) {
    struct job_drv *d = calloc(1, sizeof *d);
    int *sent = calloc((size_t)n, sizeof *sent);
    if (!d || !sent || worker_submit_group(&sv->worker, js, n) != 0) {
        free(d);
        free(sent);
        jobs_free(js, n);
        http_reply_error(r, 500, "internal", NULL, "out of memory");
        return -1;
    }
    *d = (struct job_drv){.sv = sv, .r = r, .js = js, .n = n, .sent = sent, .rd = rd, .ctx = ctx};
    for (int i = 0; i < n; i++) {
        js[i]->index = i;
        js[i]->on_event = drv_on_event;
        js[i]->user = d;
    }
    sv->inflight += n;
    http_req_set_ctx(r, d, drv_on_close);
    if (!rd->stream) {
        http_defer(r);
        return 0;
    }
    if (http_stream_start(r, "text/event-stream") != 0) {
        /* submitted already: answer now, and let the cancelled jobs end the usual way */
        http_reply_error(r, 500, "internal", NULL, "cannot start the stream");
        d->quiet = 1;
        drv_cancel(d);
        return 0;
    }
    if (rd->on_start) rd->on_start(ctx, r);
    return 0;
}

void job_log(struct http_req *r, struct wreq *const *js, int n) {
    struct reqlog *l = http_req_log(r);
    const struct wreq *j = js[0];
    l->tokens_out = 0;
    for (int i = 0; i < n; i++) {
        l->tokens_out += js[i]->n_gen;
        if (job_failed_finish(js[i]->finish) && !job_failed_finish(j->finish)) j = js[i];
    }
    if (j->t_admitted > 0) l->queue_s = j->t_admitted - j->t_arrival;
    if (j->t_first > 0) l->ttft_s = j->t_first - j->t_arrival;
    switch (j->finish) {
    case WREQ_FIN_LENGTH:
    case WREQ_FIN_EOS:
    case WREQ_FIN_STOP:
        l->outcome = "success";
        l->finish = wreq_finish_name(j->finish);
        break;
    case WREQ_FIN_CANCELLED:
        l->outcome = "cancelled";
        break;
    case WREQ_FIN_TIMEOUT:
        l->outcome = "timeout";
        break;
    case WREQ_FIN_ERROR:
        l->outcome = "error";
        break;
    default:
        break;
    }
}

void job_add_text(cJSON *o, const char *name, const char *s, size_t n) {
    char *t = utf8_sanitize(s, n, NULL);
    cJSON_AddStringToObject(o, name, t ? t : "");
    free(t);
}

const char *job_token_text(const struct wreq *j, int k, size_t *len) {
    size_t a = k > 0 ? j->text_end[k - 1] : 0, b = j->text_end[k];
    *len = b - a;
    return j->text + a;
}

int job_failed_finish(enum wreq_finish f) {
    return f == WREQ_FIN_CANCELLED || f == WREQ_FIN_TIMEOUT || f == WREQ_FIN_ERROR;
}

void job_error_of(const struct wreq *j, int *status, const char **type, const char **msg) {
    switch (j->finish) {
    case WREQ_FIN_TIMEOUT:
        *status = 504, *type = "timeout", *msg = "request deadline exceeded";
        break;
    case WREQ_FIN_CANCELLED:
        *status = 503, *type = "shutting_down", *msg = "request cancelled (server shutting down)";
        break;
    default:
        *status = 500, *type = "generation", *msg = j->error[0] ? j->error : "generation failed";
    }
}

void job_reply_failed(struct http_req *r, const struct wreq *j) {
    int st;
    const char *type, *msg;
    job_error_of(j, &st, &type, &msg);
    http_reply_error(r, st, type, NULL, "%s", msg);
}

void job_sse(struct http_req *r, const char *prefix, cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) return;
    http_stream_write(r, prefix, strlen(prefix));
    http_stream_write(r, s, strlen(s));
    http_stream_write(r, "\n\n", 2);
    cJSON_free(s);
}

void job_sse_error(struct http_req *r, const struct wreq *j) {
    int st;
    const char *type, *msg;
    job_error_of(j, &st, &type, &msg);
    cJSON *o = cJSON_CreateObject();
    if (!strncmp(http_req_path(r), "/v1/", 4)) {
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        cJSON_AddStringToObject(e, "message", msg);
        cJSON_AddStringToObject(e, "type", type);
        cJSON_AddNumberToObject(e, "code", st);
        job_sse(r, "data: ", o);
    } else {
        cJSON_AddStringToObject(o, "error", msg);
        cJSON_AddStringToObject(o, "error_type", type);
        job_sse(r, "data:", o);
    }
}
