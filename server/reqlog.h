/* reqlog.h — one log line per request, as text or JSON.
 *
 * Text:  2026-11-23T20:01:02.345Z id=7 POST /generate 200 outcome=success finish=length
 *        tokens_in=12 tokens_out=16 queue_ms=0.4 ttft_ms=85.1 duration_ms=610.2
 * JSON:  {"ts":"...","id":7,"method":"POST","path":"/generate","status":200,...}
 * In text lines the method, path and error message have control bytes, '"', '\\' (and in the
 * unquoted method and path, space) written as \xNN, so a request cannot forge or split a line (the
 * JSON format escapes anyway). Thread-neutral (one fprintf per line).
 */
#ifndef FG_REQLOG_H
#define FG_REQLOG_H

#include <stdint.h>
#include <stdio.h>

struct reqlog {
    uint64_t id; /* 0 = not a generation request */
    const char *method, *path;
    int status;
    const char *outcome; /* "success", "cancelled", "validation_error", ...; NULL = by status */
    const char *finish;  /* "length", "eos_token", "stop_sequence" or NULL */
    int tokens_in, tokens_out;
    double queue_s, ttft_s, duration_s; /* < 0 = unknown */
    char error[160];                    /* message of an error reply */
    const char *request_id;             /* x-request-id (printable, no spaces) or NULL */
};

void reqlog_init(struct reqlog *l);
void reqlog_write(FILE *f, int json, const struct reqlog *l);
/* A plain log line (start-up, shutdown) in the same format, level "info"/"error". */
void reqlog_message(FILE *f, int json, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
