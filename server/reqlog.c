/* reqlog.c — the per-request log line (text or JSON) and plain server messages. */
#include "reqlog.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

void reqlog_init(struct reqlog *l) {
    memset(l, 0, sizeof *l);
    l->queue_s = l->ttft_s = l->duration_s = -1;
}

static void timestamp(char *buf, size_t cap) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static const char *outcome_of(const struct reqlog *l) {
    if (l->outcome) return l->outcome;
    return l->status < 400 ? "success" : "error";
}

/* Append S to BUF (cap CAP, used *N) with every byte that could forge or split a text log line
 * written as \xNN: control bytes (CR, LF, ESC, ...), DEL, '"' and '\\', and the field separator
 * space unless the field is QUOTED. Bytes >= 0x80 (UTF-8) pass unchanged. */
static void add_escaped(char *buf, size_t cap, size_t *n, const char *s, int quoted) {
    static const char hex[] = "0123456789abcdef";
    if (*n >= cap) return;
    for (const unsigned char *p = (const unsigned char *)s; *p && *n + 5 < cap; p++) {
        if (*p < ' ' || (*p == ' ' && !quoted) || *p == 0x7f || *p == '"' || *p == '\\') {
            buf[(*n)++] = '\\';
            buf[(*n)++] = 'x';
            buf[(*n)++] = hex[*p >> 4];
            buf[(*n)++] = hex[*p & 15];
        } else {
            buf[(*n)++] = (char)*p;
        }
    }
    buf[*n] = 0;
}

void reqlog_write(FILE *f, int json, const struct reqlog *l) {
    if (!f) return;
    char ts[40];
    timestamp(ts, sizeof ts);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "ts", ts);
        cJSON_AddStringToObject(o, "level", "info");
        if (l->id) cJSON_AddNumberToObject(o, "id", (double)l->id);
        cJSON_AddStringToObject(o, "method", l->method ? l->method : "");
        cJSON_AddStringToObject(o, "path", l->path ? l->path : "");
        cJSON_AddNumberToObject(o, "status", l->status);
        cJSON_AddStringToObject(o, "outcome", outcome_of(l));
        if (l->finish) cJSON_AddStringToObject(o, "finish", l->finish);
        if (l->id) {
            cJSON_AddNumberToObject(o, "tokens_in", l->tokens_in);
            cJSON_AddNumberToObject(o, "tokens_out", l->tokens_out);
        }
        if (l->queue_s >= 0) cJSON_AddNumberToObject(o, "queue_ms", l->queue_s * 1e3);
        if (l->ttft_s >= 0) cJSON_AddNumberToObject(o, "ttft_ms", l->ttft_s * 1e3);
        if (l->duration_s >= 0) cJSON_AddNumberToObject(o, "duration_ms", l->duration_s * 1e3);
        if (l->error[0]) cJSON_AddStringToObject(o, "error", l->error);
        if (l->request_id) cJSON_AddStringToObject(o, "request_id", l->request_id);
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (s) fprintf(f, "%s\n", s);
        cJSON_free(s);
    } else {
        char buf[1024];
        size_t n = (size_t)snprintf(buf, sizeof buf, "%s", ts);
#define ADD(...)                                                                                   \
    do {                                                                                           \
        if (n < sizeof buf) n += (size_t)snprintf(buf + n, sizeof buf - n, __VA_ARGS__);           \
    } while (0)
        if (l->id) ADD(" id=%llu", (unsigned long long)l->id);
        ADD(" ");
        add_escaped(buf, sizeof buf, &n, l->method ? l->method : "-", 0);
        ADD(" ");
        add_escaped(buf, sizeof buf, &n, l->path ? l->path : "-", 0);
        ADD(" %d outcome=%s", l->status, outcome_of(l));
        if (l->finish) ADD(" finish=%s", l->finish);
        if (l->id) ADD(" tokens_in=%d tokens_out=%d", l->tokens_in, l->tokens_out);
        if (l->queue_s >= 0) ADD(" queue_ms=%.1f", l->queue_s * 1e3);
        if (l->ttft_s >= 0) ADD(" ttft_ms=%.1f", l->ttft_s * 1e3);
        if (l->duration_s >= 0) ADD(" duration_ms=%.1f", l->duration_s * 1e3);
        if (l->request_id) {
            ADD(" request_id=");
            add_escaped(buf, sizeof buf, &n, l->request_id, 0);
        }
        if (l->error[0]) {
            ADD(" error=\"");
            add_escaped(buf, sizeof buf, &n, l->error, 1);
            ADD("\"");
        }
#undef ADD
        fprintf(f, "%s\n", buf);
    }
    fflush(f);
}

void reqlog_message(FILE *f, int json, const char *level, const char *fmt, ...) {
    if (!f) return;
    char msg[1024], ts[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    timestamp(ts, sizeof ts);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "ts", ts);
        cJSON_AddStringToObject(o, "level", level);
        cJSON_AddStringToObject(o, "msg", msg);
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (s) fprintf(f, "%s\n", s);
        cJSON_free(s);
    } else {
        fprintf(f, "%s %s %s\n", ts, level, msg);
    }
    fflush(f);
}
