/* http.h — the HTTP layer: libmicrohttpd in external-epoll mode driven by the libuv loop,
 * routing, body limits, the API key, JSON error replies with stable types, deferred replies
 * (suspend/resume) and server-sent-event streams.
 *
 * Everything here runs on the loop thread. MHD has no threads of its own: a uv_poll_t watches
 * its epoll fd and a uv_timer_t follows MHD_get_timeout(); MHD_run is called only from those
 * callbacks (never from inside a reply function), so reply functions may be called from any
 * loop-thread callback, including a worker event hook.
 *
 * Hostile input is refused before the handler: ambiguous framing (Content-Length with
 * Transfer-Encoding, differing Content-Lengths, whitespace before a header's colon: 400; another
 * Transfer-Encoding: 501) closes the connection; a wrong API key gets 401 as soon as the headers
 * arrive, its body never read; a body over the limit (413) is read and discarded (up to
 * HTTP_DRAIN_MAX bytes, never stored) before the reply, so that a client that sends its whole
 * body before it reads (python's http.client, requests) sees the 413 instead of a reset; one that
 * stops sending (a part sent, waiting for the answer) gets it after HTTP_DRAIN_STALL_S of
 * silence. A connection that has not delivered a whole request read_timeout seconds after it
 * opened (or after its previous reply) is dropped, however slowly it trickles; and 1/32 of
 * conn_limit is kept free by evicting the connection that has owed a whole request the longest (one
 * whose body is arriving is not idle, and never evicted).
 *
 * A request's life: MHD collects the body → the route's handler runs once with the whole body
 * and either replies at once, defers (the connection is suspended until http_reply_* is called
 * later), or starts a stream (200 + text/event-stream; http_stream_write/_end feed it, the
 * connection sleeps while there is nothing to send). The request object lives until MHD's
 * completion callback, which first calls the handler's on_close hook (aborted = the client went
 * away before the reply was fully sent) and writes the request log line.
 */
#ifndef FG_HTTP_H
#define FG_HTTP_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <uv.h>

#include "server/reqlog.h"

struct metrics;

struct http_server;
struct http_req;

typedef void (*http_handler_fn)(struct http_req *r);
/* Called from the completion callback; ABORTED is 1 when the reply did not reach the client. */
typedef void (*http_close_fn)(struct http_req *r, void *ctx, int aborted);

enum {
    HTTP_ROUTE_PUBLIC = 1, /* no API key needed (/health, /metrics) */
    HTTP_ROUTE_QUIET = 2,  /* no log line when it succeeds */
    HTTP_ROUTE_PREFIX = 4, /* PATH is a prefix: "/v1/models/" matches "/v1/models/x" */
};

struct http_route {
    const char *method; /* "GET" (HEAD is served by it too), "POST" */
    const char *path;   /* exact match, or a prefix with HTTP_ROUTE_PREFIX */
    http_handler_fn fn;
    int flags;
};

struct http_opts {
    const char *host;
    int port;              /* 0: ephemeral */
    size_t max_body;       /* bytes; larger bodies get 413 */
    const char *api_key;   /* NULL or "" = open */
    unsigned conn_timeout; /* seconds without progress before a connection is dropped */
    unsigned conn_limit;   /* open connections; 0 = 1024 */
    unsigned per_client;   /* open connections from one client address; 0 = no limit */
    double read_timeout;   /* seconds a connection has to deliver a whole request (headers and
                            * body), counted from its opening or its previous reply; 0 = none */
    size_t max_header;     /* request line + headers, bytes; larger get 431; 0 = 32 KiB */
    double sse_ping;       /* seconds of silence before a stream gets a ":" comment; 0 = off */
    const struct http_route *routes;
    int n_routes;
    void *app;               /* handed to handlers through http_req_app */
    struct metrics *metrics; /* HTTP-layer outcomes (401) are counted here; NULL = none */
    FILE *log;               /* request log (NULL = none) */
    int log_json;
    const char *cors_origins; /* CORS: "*", a comma-separated list of origins, or NULL/"" (off) */
};

#define HTTP_REQUEST_ID_MAX 128   /* longest x-request-id taken from a client */
#define HTTP_CORS_MAX_AGE "86400" /* seconds a browser may cache a preflight's answer */

/* Bind and start serving on LOOP. Returns 0 or -1 with err written. */
int http_start(struct http_server **out, uv_loop_t *loop, const struct http_opts *o, char *err,
               size_t errlen);
int http_port(const struct http_server *s);
/* Requests being answered: dispatched to their handler and not yet completed. A connection
 * still sending its request is not one: shutdown closes it (http_close) instead of waiting. */
int http_active(const struct http_server *s);
/* Resume every suspended connection, stop MHD, close the uv handles. The loop must run once more
 * to finish the handle closes; the server is freed then. */
void http_close(struct http_server *s);

/* --- the request (loop thread) --- */
void *http_req_app(const struct http_req *r);
const char *http_req_path(const struct http_req *r);
const char *http_req_body(const struct http_req *r, size_t *len); /* NUL-terminated */
double http_req_start(const struct http_req *r);                  /* monotonic seconds at arrival */
struct reqlog *http_req_log(struct http_req *r); /* the log line; handlers fill what they know */
/* Attach handler state; on_close is called exactly once when the request ends. */
void http_req_set_ctx(struct http_req *r, void *ctx, http_close_fn on_close);
/* The handler will reply later: the connection sleeps until an http_reply_* call. */
void http_defer(struct http_req *r);

/* Replies (once per request). BODY is copied. */
void http_reply(struct http_req *r, int status, const char *ctype, const char *body, size_t len);
void http_reply_json(struct http_req *r, int status, cJSON *json); /* deletes json */
/* A JSON error with a stable TYPE. Routes under /v1/ get the OpenAI envelope
 * {"error":{"message","type","param","code"}}, the others TGI's {"error","error_type"}.
 * PARAM names the offending field (or NULL). */
void http_reply_error(struct http_req *r, int status, const char *type, const char *param,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Streams: 200 with CTYPE at once (a deferred request: as soon as its connection is resumed);
 * writes are buffered and sent as the client reads. */
int http_stream_start(struct http_req *r, const char *ctype);
int http_stream_write(struct http_req *r, const char *data, size_t len);
void http_stream_end(struct http_req *r);
/* 1 once the request has a reply (or a stream) under way. */
int http_replied(const struct http_req *r);

#endif
