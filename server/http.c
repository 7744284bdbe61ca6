/* http.c — libmicrohttpd on the libuv loop (platform-notes.md §2): external epoll, a uv_poll on
 * MHD's epoll fd, a uv_timer that follows MHD_get_timeout, suspend/resume for deferred replies
 * and streams, routing, limits and JSON errors.
 *
 * Design choice: reply functions never run MHD themselves. They store the reply (or append to
 * the stream buffer), resume the connection if it sleeps, and arm the timer at 0 ms, so MHD_run
 * happens in exactly one place (drive) and reply functions are safe from any loop callback.
 */
#include "http.h"

#include "server/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

/* The housekeeping period (on_probe): receive deadlines, stream keep-alive pings, and MHD run
 * even without socket events (its listening socket, see on_probe). It also resumes sleeping
 * deferred requests so MHD reads their sockets: the fallback for noticing a hang-up where the
 * peer watch (peer_watch) could not be set up; streams notice at their next write. */
#define HTTP_PROBE_MS 250

/* MHD keeps a connection's request line, headers, read buffer and reply headers in one pool of
 * MHD_OPTION_CONNECTION_MEMORY_LIMIT bytes and answers 431 (HTML) when the headers do not fit.
 * The pool is sized well above max_header so that our own check (a JSON 431 at exactly
 * max_header) is the one clients meet; the slack holds the read buffer and reply headers. */
#define HTTP_DEFAULT_MAX_HEADER 32768u
#define HTTP_POOL_SLACK 32768u

/* A body refused by its headers (401, or 413 for its declared length) is read and discarded up
 * to this many bytes before the reply, because HTTP/1.1 clients (python's http.client, requests)
 * send the whole body before they read and see a reset instead of the reply when the server
 * closes first. Beyond it the connection is closed at once: 16 MiB is 8x the default body limit,
 * a few tenths of a second on a LAN, and costs no memory (nothing is stored). */
#define HTTP_DRAIN_MAX (16u << 20)

/* A client that declared a body over the limit and then stops sending it (it sent a part and
 * waits for the answer) gets its 413 once nothing has arrived for this long: MHD cannot queue a
 * reply in the middle of a body, so it is written to the socket directly (the connection is
 * between requests on the wire: nothing of a reply was sent) and the connection is closed.
 * Without it such a client met only the receive deadline's close (an empty answer). 2 s: well
 * above the pauses of a client sending its whole body from a loaded machine, well below
 * read_timeout. */
#define HTTP_DRAIN_STALL_S 2.0

/* One client connection (MHD's socket context), tracked for the receive deadline: a trickling
 * client makes progress, so MHD's idle timeout never fires. */
struct http_conn {
    struct MHD_Connection *conn;
    struct http_req *req; /* the request in progress on it, or NULL */
    double t_wait;        /* monotonic seconds since it owes us a whole request */
    int dropped;
    struct http_conn *prev, *next;
};

struct http_server {
    struct MHD_Daemon *d;
    uv_loop_t *loop;
    uv_poll_t poll;
    uv_timer_t timer;
    uv_timer_t probe;
    int n_handles_open;
    struct http_opts o;
    char *api_key;
    int port;
    int closing;
    struct http_req *reqs;   /* every live request (to resume them all before stopping) */
    struct http_conn *conns; /* every open connection (receive deadlines) */
    unsigned n_live;         /* open connections not yet dropped */
    int rerun;               /* a connection was dropped during MHD_run: run again at once */
};

enum req_mode {
    REQ_BODY = 0, /* collecting the body */
    REQ_HANDLING, /* the handler is running */
    REQ_DEFERRED, /* waiting for a late reply */
    REQ_REPLIED,  /* a full reply is queued */
    REQ_STREAM,   /* a stream is under way */
};

struct http_req {
    struct http_server *s;
    struct MHD_Connection *conn;
    const struct http_route *route;
    enum req_mode mode;
    char method[16];
    char *path;
    char *body;
    size_t body_len, body_cap;
    int too_large, header_too_large, bad_route, dispatched;
    int unauth;           /* the API key is wrong: 401 at the headers, the body is not read */
    int framing;          /* 400/501: ambiguous or unsupported message framing */
    char framing_msg[96]; /* its message */
    size_t drained;       /* body bytes read and discarded */
    double t_body;        /* monotonic seconds the last body bytes arrived (or the headers) */
    int sent_raw;         /* the 413 was written to the socket directly (stalled_413) */
    int close_after;      /* the reply carries Connection: close */
    struct http_conn *hc; /* its connection (NULL once that closed) */
    int suspended;
    double t_start;
    /* a stored full reply, queued by the access handler */
    int status;
    char *resp;
    size_t resp_len;
    const char *ctype;
    int has_resp;
    /* the stream buffer */
    char *out;
    size_t out_len, out_cap, out_off;
    int stream_ended;
    const char *stream_ctype; /* a stream started while deferred: the access handler queues it */
    double last_write;        /* monotonic seconds of the last stream write (keep-alive pings) */
    /* handler state */
    void *ctx;
    http_close_fn on_close;
    uv_poll_t *peer; /* deferred: watches the client's socket while the reply is pending */
    struct reqlog log;
    char request_id[HTTP_REQUEST_ID_MAX + 1]; /* x-request-id: the client's, or generated */
    char cors_origin[256];                    /* Access-Control-Allow-Origin to send ("" = none) */
    int preflight; /* a CORS preflight (OPTIONS with Access-Control-Request-Method) */
    struct http_req *prev, *next;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- driving MHD ---------------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

static void drive(struct http_server *s) {
    if (!s->d) return;
    MHD_run(s->d);
    MHD_UNSIGNED_LONG_LONG to;
    if (s->rerun) {
        s->rerun = 0;
        uv_timer_start(&s->timer, on_timer, 0, 0);
    } else if (MHD_get_timeout(s->d, &to) == MHD_YES)
        uv_timer_start(&s->timer, on_timer, to, 0);
    else
        uv_timer_stop(&s->timer);
}

static void on_timer(uv_timer_t *t) {
    drive(t->data);
}

static void on_poll(uv_poll_t *p, int status, int events) {
    (void)status, (void)events;
    drive(p->data);
}

/* Run MHD on the next loop turn (reply functions call this instead of MHD_run). */
static void kick(struct http_server *s) {
    if (s->d) uv_timer_start(&s->timer, on_timer, 0, 0);
}

/* Shut a connection's socket down; MHD closes it at its next read. */
static void drop_conn(struct http_server *s, struct http_conn *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci || c->dropped) return;
    shutdown(ci->connect_fd, SHUT_RDWR);
    c->dropped = 1;
    s->n_live--;
    /* MHD stops accepting while its connection limit is reached, dropped ones included, and
     * resumes only inside a later MHD_run: have that happen on the next loop turn */
    s->rerun = 1;
}

/* Connections kept free for new clients: once more than conn_limit - reserve are open, each new
 * one evicts the connection that has owed a whole request the longest (an idle keep-alive or a
 * client trickling its headers; never one whose body is arriving or whose request is being
 * served: those are bounded by read_timeout and the drain limit). A slowloris from many addresses
 * then only evicts itself, and a probe that sends its request at once gets in. MHD's own limit
 * is conn_limit + reserve + 16 (MHD accepts up to 10 in one run, each evicting one), so that
 * evicted sockets not yet closed do not make it stop accepting (it then accepted again only at
 * later MHD_runs: ~12 connections a second, measured, with the probe behind them all).
 * 1/32 of the limit (33 of 1024): enough for a burst of probes, a small share of the slots. */
static unsigned conn_reserve(const struct http_server *s) {
    return s->o.conn_limit / 32 + 1;
}

static void evict_oldest_waiting(struct http_server *s, const struct http_conn *fresh) {
    struct http_conn *oldest = NULL;
    for (struct http_conn *c = s->conns; c; c = c->next)
        if (c != fresh && !c->dropped && !c->req && (!oldest || c->t_wait < oldest->t_wait))
            oldest = c;
    if (oldest) drop_conn(s, oldest);
}

/* Drop connections that have owed a whole request for longer than read_timeout. Returns how
 * many were dropped. */
static int drop_late(struct http_server *s, double now) {
    if (s->o.read_timeout <= 0) return 0;
    int n = 0;
    for (struct http_conn *c = s->conns; c; c = c->next) {
        if (c->dropped || (c->req && c->req->dispatched) || now - c->t_wait < s->o.read_timeout)
            continue;
        drop_conn(s, c);
        n += c->dropped;
    }
    return n;
}

static void dispatch(struct http_req *r);

/* Answer a stalled over-limit upload (HTTP_DRAIN_STALL_S): the stored 413 goes straight to the
 * socket, then the connection is shut down. Nothing is left unread (MHD has read everything the
 * client sent), so the close is a FIN, not a reset, and the client reads the whole answer. */
static void stalled_413(struct http_req *r) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci || !r->hc) return;
    dispatch(r); /* stores the 413 (and its log fields) */
    char head[256];
    int n =
        snprintf(head, sizeof head,
                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n",
                 r->status, MHD_get_reason_phrase_for((unsigned)r->status), r->ctype, r->resp_len);
    /* a few hundred bytes into an empty send buffer: one non-blocking send each */
    if (send(ci->connect_fd, head, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) == n &&
        send(ci->connect_fd, r->resp, r->resp_len, MSG_NOSIGNAL | MSG_DONTWAIT) ==
            (ssize_t)r->resp_len)
        r->sent_raw = 1;
    r->has_resp = 0; /* answered here: MHD queues nothing */
    drop_conn(r->s, r->hc);
}

/* Every HTTP_PROBE_MS: drop late connections, send a keep-alive comment (":\n\n", ignored by
 * SSE clients) on streams silent for sse_ping seconds, and resume every sleeping deferred request
 * once (it goes back to sleep in on_access). */
static void on_probe(uv_timer_t *t) {
    struct http_server *s = t->data;
    double now = now_s();
    int dropped = drop_late(s, now);
    if (dropped)
        reqlog_message(s->o.log ? s->o.log : stderr, s->o.log_json, "http",
                       "dropped %d connections that did not send a whole request within %g s",
                       dropped, s->o.read_timeout);
    for (struct http_req *r = s->reqs; r; r = r->next) {
        if (r->mode == REQ_BODY && r->too_large && !r->dispatched &&
            now - r->t_body >= HTTP_DRAIN_STALL_S)
            stalled_413(r);
        if (r->mode == REQ_STREAM && !r->stream_ended && s->o.sse_ping > 0 &&
            now - r->last_write >= s->o.sse_ping)
            http_stream_write(r, ":\n\n", 3);
        if (r->mode == REQ_DEFERRED && r->suspended) {
            r->suspended = 0;
            MHD_resume_connection(r->conn);
        }
    }
    /* Always run MHD here, even with nothing resumed: MHD takes its listening socket out of its
     * epoll set while max_connections are open and puts it back only inside a later MHD_run,
     * which no socket event may ever trigger once the connections have closed (the new clients
     * wait in the kernel's backlog). This bounds that stall to HTTP_PROBE_MS. */
    drive(s);
}

/* 1 when the client has closed its socket (EOF or an error), without consuming anything it
 * sent (MSG_PEEK). */
static int peer_gone(const struct http_req *r) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    char b;
    ssize_t n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void wake(struct http_req *r);

static void on_peer_closed(uv_handle_t *h) {
    free(h);
}

/* A deferred request's connection sleeps (suspended) and MHD does not watch it, so a client
 * that hangs up would go unnoticed until a probe. Its socket is watched here instead, from the
 * first suspension to the completion callback: on a hang-up the connection is resumed, on_access
 * drops it (MHD_NO), and the completion callback tells the handler at once, which cancels its
 * job. Bytes the client sends (a pipelined request) are left to MHD: the watch stops. START: 1 to
 * begin, 0 (completion) to end; the uv handle is freed in its close callback. */
static void on_peer_event(uv_poll_t *p, int status, int events) {
    struct http_req *r = p->data;
    uv_poll_stop(p);
    if (r && (status < 0 || (events & UV_DISCONNECT) || peer_gone(r))) wake(r);
}

static void peer_watch(struct http_req *r, int start) {
    if (!start) {
        if (r->peer) {
            r->peer->data = NULL;
            uv_close((uv_handle_t *)r->peer, on_peer_closed);
            r->peer = NULL;
        }
        return;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (r->peer || !ci || !(r->peer = malloc(sizeof *r->peer))) return; /* the probe remains */
    if (uv_poll_init_socket(r->s->loop, r->peer, ci->connect_fd) != 0) {
        free(r->peer);
        r->peer = NULL;
        return;
    }
    r->peer->data = r;
    uv_poll_start(r->peer, UV_READABLE | UV_DISCONNECT, on_peer_event);
}

static void wake(struct http_req *r) {
    if (r->suspended) {
        r->suspended = 0;
        MHD_resume_connection(r->conn);
    }
    kick(r->s);
}

/* ---- request accessors ---------------------------------------------------------------------- */

void *http_req_app(const struct http_req *r) {
    return r->s->o.app;
}
const char *http_req_path(const struct http_req *r) {
    return r->path;
}
const char *http_req_body(const struct http_req *r, size_t *len) {
    if (len) *len = r->body_len;
    return r->body ? r->body : "";
}
double http_req_start(const struct http_req *r) {
    return r->t_start;
}
struct reqlog *http_req_log(struct http_req *r) {
    return &r->log;
}
void http_req_set_ctx(struct http_req *r, void *ctx, http_close_fn on_close) {
    r->ctx = ctx;
    r->on_close = on_close;
}
void http_defer(struct http_req *r) {
    if (r->mode == REQ_HANDLING) r->mode = REQ_DEFERRED;
}
int http_replied(const struct http_req *r) {
    return r->has_resp || r->mode == REQ_REPLIED || r->mode == REQ_STREAM;
}

/* ---- replies -------------------------------------------------------------------------------- */

/* Headers every reply carries: the request id, and CORS's when the origin is allowed (a
 * preflight also gets the methods, headers and how long the browser may cache them). */
static void add_common_headers(struct http_req *r, struct MHD_Response *resp) {
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    if (!r->cors_origin[0]) return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->cors_origin);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", "X-Request-Id");
    if (strcmp(r->cors_origin, "*")) MHD_add_response_header(resp, "Vary", "Origin");
    if (!r->preflight) return;
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, HEAD, OPTIONS");
    const char *h =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Access-Control-Request-Headers");
    MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                            h && *h ? h : "authorization, content-type, x-request-id");
    MHD_add_response_header(resp, "Access-Control-Max-Age", HTTP_CORS_MAX_AGE);
}

static enum MHD_Result queue_stored(struct http_req *r) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(r->resp_len, r->resp, MHD_RESPMEM_MUST_FREE);
    if (!resp) return MHD_NO;
    r->resp = NULL; /* MHD owns it now */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype);
    add_common_headers(r, resp);
    if (r->close_after) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (r->status == 405)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
                                r->route ? r->route->method : "GET, POST");
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    r->mode = REQ_REPLIED;
    r->has_resp = 0;
    return ret;
}

void http_reply(struct http_req *r, int status, const char *ctype, const char *body, size_t len) {
    if (http_replied(r)) return;
    r->resp = malloc(len ? len : 1);
    if (!r->resp) return;
    memcpy(r->resp, body, len);
    r->resp_len = len;
    r->status = status;
    r->ctype = ctype;
    r->has_resp = 1;
    r->log.status = status;
    if (r->mode == REQ_DEFERRED) wake(r); /* the access handler queues it after the resume */
}

void http_reply_json(struct http_req *r, int status, cJSON *json) {
    char *s = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!s) {
        static const char oom[] = "{\"error\":\"out of memory\",\"error_type\":\"internal\"}";
        http_reply(r, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    http_reply(r, status, "application/json", s, strlen(s));
    cJSON_free(s);
}

void http_reply_error(struct http_req *r, int status, const char *type, const char *param,
                      const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(r->log.error, sizeof r->log.error, "%.150s", msg);
    cJSON *o = cJSON_CreateObject();
    if (r->path && !strncmp(r->path, "/v1/", 4)) {
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        cJSON_AddStringToObject(e, "message", msg);
        cJSON_AddStringToObject(e, "type", type);
        if (param)
            cJSON_AddStringToObject(e, "param", param);
        else
            cJSON_AddNullToObject(e, "param");
        cJSON_AddNumberToObject(e, "code", status);
    } else {
        cJSON_AddStringToObject(o, "error", msg);
        cJSON_AddStringToObject(o, "error_type", type);
        if (param) cJSON_AddStringToObject(o, "param", param);
    }
    http_reply_json(r, status, o);
}

/* ---- streams -------------------------------------------------------------------------------- */

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    struct http_req *r = cls;
    size_t avail = r->out_len - r->out_off;
    if (avail) {
        size_t n = avail < max ? avail : max;
        memcpy(buf, r->out + r->out_off, n);
        r->out_off += n;
        if (r->out_off == r->out_len) r->out_off = r->out_len = 0;
        return (ssize_t)n;
    }
    if (r->stream_ended) return MHD_CONTENT_READER_END_OF_STREAM;
    /* nothing to send: sleep until http_stream_write/_end wakes us (no busy loop) */
    if (!r->suspended && !r->s->closing) {
        r->suspended = 1;
        MHD_suspend_connection(r->conn);
    }
    return 0;
}

/* Queue the stream's response (inside the access handler). */
static enum MHD_Result queue_stream(struct http_req *r, const char *ctype) {
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, r, NULL);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    add_common_headers(r, resp);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    enum MHD_Result ok = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ok;
}

int http_stream_start(struct http_req *r, const char *ctype) {
    if (http_replied(r)) return -1;
    if (r->mode == REQ_DEFERRED) {
        /* MHD queues responses only inside the access handler: it does so after the resume;
         * writes until then are buffered */
        r->stream_ctype = ctype;
    } else if (r->mode != REQ_HANDLING || queue_stream(r, ctype) != MHD_YES) {
        return -1;
    }
    r->mode = REQ_STREAM;
    r->log.status = 200;
    r->last_write = now_s();
    if (r->stream_ctype) wake(r);
    return 0;
}

int http_stream_write(struct http_req *r, const char *data, size_t len) {
    if (r->mode != REQ_STREAM || r->stream_ended) return -1;
    if (r->out_len + len > r->out_cap) {
        size_t nc = r->out_cap * 2 + len + 1024;
        char *no = realloc(r->out, nc);
        if (!no) return -1;
        r->out = no;
        r->out_cap = nc;
    }
    memcpy(r->out + r->out_len, data, len);
    r->out_len += len;
    r->last_write = now_s();
    wake(r);
    return 0;
}

void http_stream_end(struct http_req *r) {
    if (r->mode != REQ_STREAM || r->stream_ended) return;
    r->stream_ended = 1;
    wake(r);
}

/* x-request-id: the client's when it is 1..HTTP_REQUEST_ID_MAX printable ASCII characters
 * (no spaces, so it stays one token of the log line), else a generated 32-hex-digit one. */
static void request_id_of(struct http_req *r) {
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Request-Id");
    size_t n = h ? strlen(h) : 0;
    int ok = n > 0 && n <= HTTP_REQUEST_ID_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = h[i] > 0x20 && h[i] < 0x7f;
    if (ok) {
        memcpy(r->request_id, h, n + 1);
        return;
    }
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) { /* no entropy: time and address */
        double t = now_s();
        uintptr_t a = (uintptr_t)r;
        memcpy(b, &t, sizeof t);
        memcpy(b + 8, &a, sizeof a < 8 ? sizeof a : 8);
    }
    for (int i = 0; i < 16; i++)
        snprintf(r->request_id + 2 * i, 3, "%02x", b[i]);
}

/* The Origin header against cors_allow_origins ("*" or a comma-separated list of exact
 * origins): sets the value to send back, and whether this is a preflight. */
static void cors_of(struct http_req *r) {
    const char *allow = r->s->o.cors_origins;
    if (!allow || !*allow) return;
    const char *o = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (!o || !*o || strlen(o) >= sizeof r->cors_origin) return;
    int ok = !strcmp(allow, "*");
    size_t ol = strlen(o);
    for (const char *p = allow; !ok && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        ok = (size_t)(t - p) == ol && !strncmp(p, o, ol);
        p = e;
    }
    if (!ok) return;
    snprintf(r->cors_origin, sizeof r->cors_origin, "%s", strcmp(allow, "*") ? o : "*");
    r->preflight = !strcmp(r->method, "OPTIONS") &&
                   MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                               "Access-Control-Request-Method") != NULL;
}

/* ---- MHD callbacks -------------------------------------------------------------------------- */

static int auth_ok(struct http_req *r) {
    const char *key = r->s->api_key;
    if (!key || !*key || (r->route && (r->route->flags & HTTP_ROUTE_PUBLIC))) return 1;
    const char *h =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7)) return 0;
    h += 7;
    while (*h == ' ')
        h++;
    size_t kl = strlen(key), hl = strlen(h);
    unsigned diff = (unsigned)(kl ^ hl);
    for (size_t i = 0; i < kl; i++)
        diff |= (unsigned)(key[i] ^ (i < hl ? h[i] : 0));
    return diff == 0;
}

static int path_matches(const struct http_route *rt, const char *path) {
    if (!(rt->flags & HTTP_ROUTE_PREFIX)) return !strcmp(rt->path, path);
    size_t n = strlen(rt->path);
    return !strncmp(rt->path, path, n) && path[n];
}

/* HEAD is answered by the GET route (MHD sends the headers of the reply without its body). */
static void route(struct http_req *r) {
    int path_known = 0;
    const char *method = strcmp(r->method, "HEAD") ? r->method : "GET";
    for (int i = 0; i < r->s->o.n_routes; i++) {
        const struct http_route *rt = &r->s->o.routes[i];
        if (!path_matches(rt, r->path)) continue;
        path_known = 1;
        if (!strcmp(rt->method, method)) {
            r->route = rt;
            return;
        }
        if (!r->route) r->route = rt; /* for the Allow header */
    }
    r->bad_route = path_known ? 405 : 404;
}

/* The body is complete: answer errors of the HTTP layer or run the handler. */
static void dispatch(struct http_req *r) {
    r->dispatched = 1;
    r->mode = REQ_HANDLING;
    if (r->preflight && !r->framing)
        http_reply(r, 204, "text/plain", "", 0);
    else if (r->framing)
        http_reply_error(r, r->framing, r->framing == 501 ? "not_implemented" : "bad_request", NULL,
                         "%s", r->framing_msg);
    else if (r->bad_route == 404)
        http_reply_error(r, 404, "not_found", NULL, "no route for %s %s", r->method, r->path);
    else if (r->bad_route == 405)
        http_reply_error(r, 405, "method_not_allowed", NULL, "%s is not allowed on %s (use %s)",
                         r->method, r->path, r->route->method);
    else if (r->header_too_large)
        http_reply_error(r, 431, "header_too_large", NULL,
                         "request line and headers are larger than the limit of %zu bytes",
                         r->s->o.max_header);
    else if (r->too_large)
        http_reply_error(r, 413, "payload_too_large", NULL,
                         "request body is larger than the limit of %zu bytes", r->s->o.max_body);
    else if (r->unauth) {
        http_reply_error(r, 401, "unauthorized", NULL,
                         "missing or wrong API key (send 'Authorization: Bearer KEY')");
        if (r->s->o.metrics) metrics_request(r->s->o.metrics, METRICS_OUT_UNAUTHORIZED);
    } else
        r->route->fn(r);
    if (r->mode == REQ_HANDLING && !r->has_resp)
        http_reply_error(r, 500, "internal", NULL, "handler gave no reply");
}

static enum MHD_Result add_header_len(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value) {
    (void)kind;
    size_t *n = cls;
    *n += strlen(key) + (value ? strlen(value) : 0) + 4; /* ": " and CRLF */
    return MHD_YES;
}

/* Bytes of the request line and headers as the client sent them (give or take whitespace). */
static size_t header_bytes(struct MHD_Connection *conn, const char *method, const char *url,
                           const char *version) {
    size_t n = strlen(method) + strlen(url) + strlen(version ? version : "") + 4;
    MHD_get_connection_values(conn, MHD_HEADER_KIND, add_header_len, &n);
    return n;
}

struct framing {
    int n_cl, n_te, cl_differ, bad_name;
    const char *cl, *te;
};

static enum MHD_Result scan_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value) {
    (void)kind;
    struct framing *f = cls;
    if (!value) value = "";
    if (strpbrk(key, " \t")) f->bad_name = 1;
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        if (f->n_cl++ && strcmp(f->cl, value)) f->cl_differ = 1;
        f->cl = value;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        f->n_te++;
        f->te = value;
    }
    return MHD_YES;
}

/* Message framing that two parsers could read differently (RFC 9112 §6.3, §5.1) is refused, so
 * no request can hide inside another's body: 400, or 501 for a transfer coding we lack. */
static void check_framing(struct http_req *r) {
    struct framing f = {0};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, scan_framing, &f);
    const char *msg = NULL;
    r->framing = 400;
    if (f.bad_name)
        msg = "whitespace between a header name and its colon";
    else if (f.n_cl && f.n_te)
        msg = "both Content-Length and Transfer-Encoding are given";
    else if (f.cl_differ)
        msg = "conflicting Content-Length headers";
    else if (f.n_te && (f.n_te > 1 || strcasecmp(f.te, "chunked"))) {
        r->framing = 501;
        snprintf(r->framing_msg, sizeof r->framing_msg,
                 "Transfer-Encoding '%.40s' is not supported (only chunked)", f.te);
        return;
    }
    if (msg)
        snprintf(r->framing_msg, sizeof r->framing_msg, "%s", msg);
    else
        r->framing = 0;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls) {
    struct http_server *s = cls;
    struct http_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->s = s;
        r->conn = conn;
        r->t_start = now_s();
        r->t_body = r->t_start;
        snprintf(r->method, sizeof r->method, "%s", method);
        r->path = strdup(url);
        if (!r->path) {
            free(r);
            return MHD_NO;
        }
        reqlog_init(&r->log);
        r->log.method = r->method;
        r->log.path = r->path;
        request_id_of(r);
        r->log.request_id = r->request_id;
        cors_of(r);
        route(r);
        *con_cls = r;
        r->next = s->reqs;
        if (s->reqs) s->reqs->prev = r;
        s->reqs = r;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        r->hc = ci ? ci->socket_context : NULL;
        if (r->hc) r->hc->req = r;
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        unsigned long long declared = cl ? strtoull(cl, NULL, 10) : 0;
        check_framing(r);
        if (header_bytes(conn, method, url, version) > s->o.max_header)
            r->header_too_large = 1;
        else if (declared > s->o.max_body)
            r->too_large = 1;
        r->unauth = !r->preflight && !auth_ok(r); /* browsers send no credentials there */
        int has_body =
            declared > 0 ||
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
        if (r->framing || r->header_too_large || declared > HTTP_DRAIN_MAX || r->unauth) {
            /* refuse before reading the body (an unauthenticated client gets nothing read or
             * stored) and close the connection after the reply if a body follows */
            r->close_after = r->framing || r->header_too_large || has_body;
            dispatch(r);
            return queue_stored(r);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->has_resp || r->dispatched) return MHD_YES;
        r->t_body = now_s();
        if (!r->too_large && r->body_len + n > s->o.max_body) {
            r->too_large = 1;
            free(r->body);
            r->body = NULL;
            r->body_len = r->body_cap = 0;
        }
        if (r->too_large) {
            /* discard; past HTTP_DRAIN_MAX close without reading more (MHD cannot queue a reply
             * in the middle of a body) */
            r->drained += n;
            if (r->drained <= HTTP_DRAIN_MAX) return MHD_YES;
            dispatch(r); /* the log line and the metrics say what happened */
            return MHD_NO;
        }
        if (r->body_len + n + 1 > r->body_cap) {
            size_t nc = (r->body_len + n + 1) * 2;
            if (nc > s->o.max_body + 1) nc = s->o.max_body + 1;
            char *nb = realloc(r->body, nc);
            if (!nb) return MHD_NO;
            r->body = nb;
            r->body_cap = nc;
        }
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        r->body[r->body_len] = 0;
        return MHD_YES;
    }
    /* the whole request is here (first time) or the connection was resumed */
    if (!r->dispatched) dispatch(r);
    if (r->has_resp) return queue_stored(r);
    if (r->stream_ctype) {
        const char *ctype = r->stream_ctype;
        r->stream_ctype = NULL;
        return queue_stream(r, ctype);
    }
    if (r->mode == REQ_DEFERRED && peer_gone(r)) return MHD_NO; /* MHD closes it: aborted */
    if (r->mode == REQ_DEFERRED && !r->suspended && !s->closing) {
        peer_watch(r, 1);
        r->suspended = 1;
        MHD_suspend_connection(conn);
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)conn;
    struct http_server *s = cls;
    struct http_req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    if (r->hc) {
        r->hc->req = NULL;
        r->hc->t_wait = now_s(); /* the next request's deadline runs from here */
    }
    int aborted = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !r->sent_raw;
    peer_watch(r, 0);
    if (r->on_close) r->on_close(r, r->ctx, aborted);
    if (aborted && !r->log.outcome) r->log.outcome = "cancelled";
    if (r->log.duration_s < 0) r->log.duration_s = now_s() - r->t_start;
    if (!r->log.status) r->log.status = 499; /* nginx's "client closed request" */
    /* quiet routes log only their failures; a 503 is not one (/health answers it while the
     * model loads and while draining, and probes poll it several times a second) */
    int quiet = r->route && (r->route->flags & HTTP_ROUTE_QUIET) &&
                (r->log.status < 400 || r->log.status == 503);
    if (!quiet) reqlog_write(s->o.log, s->o.log_json, &r->log);
    if (r->prev)
        r->prev->next = r->next;
    else
        s->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    free(r->path);
    free(r->body);
    free(r->resp);
    free(r->out);
    free(r);
}

/* MHD_OPTION_NOTIFY_CONNECTION: keep the list of open connections. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    struct http_server *s = cls;
    struct http_conn *c = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        c = calloc(1, sizeof *c);
        if (!c) return; /* untracked: only its deadline is lost */
        c->conn = conn;
        c->t_wait = now_s();
        c->next = s->conns;
        if (s->conns) s->conns->prev = c;
        s->conns = c;
        *socket_context = c;
        if (++s->n_live + conn_reserve(s) > s->o.conn_limit) evict_oldest_waiting(s, c);
        return;
    }
    if (!c) return;
    if (!c->dropped) s->n_live--;
    if (c->req) c->req->hc = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c);
    *socket_context = NULL;
}

/* ---- start and stop ------------------------------------------------------------------------- */

/* MHD's own messages (a client gone mid-reply, a malformed request) go to the request log in its
 * format, so a JSON log stays one JSON object per line. */
static void mhd_logger(void *cls, const char *fmt, va_list ap) {
    struct http_server *s = cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = 0;
    reqlog_message(s->o.log ? s->o.log : stderr, s->o.log_json, "http", "%s", msg);
}

int http_start(struct http_server **out, uv_loop_t *loop, const struct http_opts *o, char *err,
               size_t errlen) {
    *out = NULL;
    struct http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->loop = loop;
    s->o = *o;
    if (!s->o.max_header) s->o.max_header = HTTP_DEFAULT_MAX_HEADER;
    if (!s->o.conn_limit) s->o.conn_limit = 1024;
    if (!s->o.conn_timeout) s->o.conn_timeout = 60;
    s->api_key = o->api_key && *o->api_key ? strdup(o->api_key) : NULL;

    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE; /* names ("localhost") resolve too; the first address wins */
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", o->port);
    int gai = getaddrinfo(o->host && *o->host ? o->host : NULL, portstr, &hints, &ai);
    if (gai) {
        snprintf(err, errlen, "invalid host '%s': %s", o->host ? o->host : "", gai_strerror(gai));
        free(s->api_key);
        free(s);
        return -1;
    }
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    /* No MHD_OPTION_LISTENING_ADDRESS_REUSE: it sets SO_REUSEPORT, and then a second server
     * started on a busy port binds too and silently shares the traffic. MHD's default
     * (SO_REUSEADDR only) still allows a restart while old connections sit in TIME_WAIT. */
    s->d = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, on_access, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger,
        s, /* must come first */
        MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_CONNECTION_TIMEOUT,
        s->o.conn_timeout, MHD_OPTION_CONNECTION_LIMIT, s->o.conn_limit + conn_reserve(s) + 16,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->o.per_client, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(2 * s->o.max_header + HTTP_POOL_SLACK), MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->d) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use or not available)",
                 o->host ? o->host : "", o->port);
        free(s->api_key);
        free(s);
        return -1;
    }
    const union MHD_DaemonInfo *pi = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = pi ? pi->port : o->port;
    const union MHD_DaemonInfo *ei = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_EPOLL_FD);
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    if (!ei || uv_poll_init(loop, &s->poll, ei->epoll_fd) != 0) {
        snprintf(err, errlen, "cannot watch the HTTP epoll fd");
        MHD_stop_daemon(s->d);
        s->d = NULL;
        uv_close((uv_handle_t *)&s->timer, NULL);
        /* the handle close finishes on the next loop turn; s leaks deliberately here (start-up
         * failure ends the process) */
        return -1;
    }
    s->poll.data = s;
    uv_poll_start(&s->poll, UV_READABLE, on_poll);
    uv_timer_init(loop, &s->probe);
    s->probe.data = s;
    uv_timer_start(&s->probe, on_probe, HTTP_PROBE_MS, HTTP_PROBE_MS);
    drive(s);
    *out = s;
    return 0;
}

int http_port(const struct http_server *s) {
    return s->port;
}

int http_active(const struct http_server *s) {
    int n = 0;
    for (const struct http_req *r = s->reqs; r; r = r->next)
        n += r->dispatched;
    return n;
}

static void on_handle_closed(uv_handle_t *h) {
    struct http_server *s = h->data;
    if (--s->n_handles_open == 0) {
        free(s->api_key);
        free(s);
    }
}

void http_close(struct http_server *s) {
    if (!s) return;
    s->closing = 1;
    for (struct http_req *r = s->reqs; r; r = r->next) {
        if (r->suspended) {
            r->suspended = 0;
            MHD_resume_connection(r->conn);
        }
    }
    MHD_run(s->d);
    MHD_stop_daemon(s->d); /* completes every request (on_completed) */
    s->d = NULL;
    uv_poll_stop(&s->poll);
    uv_timer_stop(&s->timer);
    uv_timer_stop(&s->probe);
    s->n_handles_open = 3;
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
    uv_close((uv_handle_t *)&s->probe, on_handle_closed);
}
