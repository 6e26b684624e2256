/* A reusable HTTP/1.1 server on a libevent loop: the listener, connections
 * and their limits and deadlines, API keys, request ids, routing by a
 * const table, fixed-length and chunked (SSE) answers, the access log,
 * and the drain on SIGTERM / SIGINT. It knows nothing of models: `herd
 * serve` (src/server/) puts its OpenAI routes on it, `herd route` its
 * forwarding routes.
 *
 * A request goes through these checks, in this order:
 *   1. a framing or limit error from the parser (http1.h), a body over its
 *      route's limit (413), or the header / body deadline (408): an error
 *      answer, then the connection closes;
 *   2. the API key (Authorization: Bearer), unless the route is OPEN and
 *      auth_all is off: 401;
 *   3. a route whose method and path match and which does not NEED_READY
 *      (probes, metrics) is answered now, whatever the state;
 *   4. the application's state (hooks.state): LOADING or FAILED is a 503
 *      (a PROBE path gets {"status": ...} instead of an error object);
 *   5. draining: 503 "draining";
 *   6. no route for the path: 404; a path whose route is ONLY_METHOD asked
 *      with another method: 405;
 *   7. JSON_BODY: the body must be a JSON object (400 invalid_json);
 *   8. the handler.
 * Error answers have OpenAI's shape {"error": {"message", "type", "param",
 * "code"}}, which every herd HTTP face speaks.
 *
 * Threads: everything runs on the thread that calls herd_http_server_run,
 * except herd_http_request_wake, which any thread may call (the scheduler
 * wakes a request whose events are ready). */
#ifndef HERD_HTTP_HTTP_SERVER_H
#define HERD_HTTP_HTTP_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"
#include "herd/status.h"
#include "http/http1.h"
#include "metrics/metrics.h"

struct event_base;
struct herd_http_server;
/* The request being answered on a connection (one at a time: HTTP/1.1
 * answers in order). Valid from the handler call until the answer ends
 * (herd_http_respond*, herd_http_stream_end) or the work is aborted. */
struct herd_http_request;

/* Output a streaming client may leave unread before the server stops
 * waking its work (the work's producer keeps the rest, itself bounded);
 * waking resumes below half of it. */
#define HERD_HTTP_STREAM_HIGH_WATER ((size_t)1 << 20)

/* --------------------------------------------------------------- routes */

enum herd_http_route_flags {
    HERD_HTTP_ROUTE_PREFIX = 1u << 0,      /* path is a prefix ("/v1/models/" matches "/v1/models/x") */
    HERD_HTTP_ROUTE_OPEN = 1u << 1,        /* no API key needed unless auth_all (probes, metrics) */
    HERD_HTTP_ROUTE_NEEDS_READY = 1u << 2, /* refused while loading, failed or draining (check 4, 5) */
    HERD_HTTP_ROUTE_PROBE = 1u << 3,       /* refused with {"status": ...}, not an error object */
    HERD_HTTP_ROUTE_JSON_BODY = 1u << 4,   /* the body is parsed: a JSON object, or 400 */
    HERD_HTTP_ROUTE_ONLY_METHOD = 1u << 5, /* another method on the path: 405 (else 404, as unknown) */
    HERD_HTTP_ROUTE_UPLOAD = 1u << 6,      /* the body may reach max_upload_bytes, not limits.max_body_bytes */
};

/* A handler answers r now or later (herd_http_request_set_work). body is
 * the parsed JSON object for JSON_BODY routes (the server releases it when
 * the handler returns; take a reference to keep it), else NULL. r may be
 * freed or reused by the time the handler returns when it answered:
 * touch nothing of r after an answer. app is hooks.app. */
typedef void (*herd_http_handler)(struct herd_http_request *r, json_t *body, void *app);

struct herd_http_route {
    const char *method; /* "GET" (HEAD too), "POST", ... */
    const char *path;   /* without the query */
    unsigned flags;     /* enum herd_http_route_flags */
    herd_http_handler handler;
    void *arg; /* handed to the handler as its app; NULL: hooks.app */
};

/* ---------------------------------------------------------------- hooks */

enum herd_http_app_state {
    HERD_HTTP_APP_READY,
    HERD_HTTP_APP_LOADING, /* not ready yet (a model loading) */
    HERD_HTTP_APP_FAILED,  /* failed for good: the application drains and exits */
};

/* How a state other than ready is told: to probes as a 503 with
 * {"status": probe_status}, to other requests as a 503 error with code and
 * message. */
struct herd_http_refusal {
    const char *probe_status; /* "loading" */
    const char *code;         /* "loading" */
    const char *message;      /* "the model is still loading" */
};

struct herd_http_hooks {
    void *app; /* handed to every hook and handler */
    /* The application's state, asked for each request past check 3, by
     * the probes and by each drain tick. NULL: always ready. */
    enum herd_http_app_state (*state)(void *app);
    struct herd_http_refusal loading, failed;
    /* The drain began (a signal, herd_http_server_drain): stop taking
     * work. Called once, on the loop. NULL: nothing to do. */
    void (*on_drain)(void *app);
};

/* What the server counts, registered by the application in its registry
 * (so that it orders its /metrics); any may be NULL. */
enum herd_http_reject {
    HERD_HTTP_REJECT_AUTH,
    HERD_HTTP_REJECT_BAD_REQUEST,
    HERD_HTTP_REJECT_DRAINING,
    HERD_HTTP_REJECT_N
};

struct herd_http_metrics {
    struct herd_metric *responses[5]; /* answers by status class, 1xx..5xx */
    struct herd_metric *rejections[HERD_HTTP_REJECT_N];
    struct herd_metric *cancellations; /* a client went away while its work ran */
};

/* ---------------------------------------------------------------- server */

struct herd_http_server_params {
    const char *host; /* an IP address ("127.0.0.1") */
    uint16_t port;    /* 0 picks a free port (tests) */
    struct herd_http_limits limits;
    /* The body limit of UPLOAD routes (file uploads); 0: limits.max_body_bytes.
     * Held in memory while the request is handled. */
    size_t max_upload_bytes;
    uint32_t max_connections;    /* open connections; past it a 503 and close (1024) */
    double header_timeout_s;     /* from the first byte to the end of the headers (10) */
    double body_timeout_s;       /* to receive the body (30) */
    double idle_timeout_s;       /* keep-alive wait for the next request (60) */
    double write_timeout_s;      /* a client that reads nothing for this long is dropped (30) */
    double drain_timeout_s;      /* SIGTERM: how long running work may finish (30) */
    const char *const *api_keys; /* NULL-terminated; NULL or empty: no auth */
    bool auth_all;               /* OPEN routes need a key too */
    bool quiet;                  /* no access log */
    /* The loop's reads and writes in batches (sock.h herd_sock_batch_begin)
     * where the kernel allows it: fewer system calls for a proxy (false) */
    bool batched_io;
    const char *log_component;            /* the access log's and drain's component ("http") */
    const struct herd_http_route *routes; /* [n_routes], outlives the server; the first match wins */
    size_t n_routes;
    struct herd_http_hooks hooks;
    const struct herd_http_metrics *metrics; /* outlives the server; NULL: none */
};

void herd_http_server_default_params(struct herd_http_server_params *p);

/* Creates the event loop and binds the listening socket (the port is
 * known after this). The caller frees with herd_http_server_destroy. */
enum herd_status herd_http_server_create(const struct herd_http_server_params *p, struct herd_http_server **out,
                                         struct herd_error *err);
uint16_t herd_http_server_port(const struct herd_http_server *h);
/* The loop, for the application's own timers and events and for an HTTP
 * client (http_client.h) sharing it. */
struct event_base *herd_http_server_base(struct herd_http_server *h);
uint32_t herd_http_server_connections(const struct herd_http_server *h);
/* Runs the loop until drained after a signal (or herd_http_server_stop).
 * Installs SIGTERM/SIGINT handlers for its duration: the first drains,
 * a second ends the loop at once. */
enum herd_status herd_http_server_run(struct herd_http_server *h, struct herd_error *err);
/* Starts the drain as SIGTERM does (idempotent): probes see /readyz 503,
 * new requests 503, idle connections close; the loop ends when no request
 * is in flight, or drain_timeout_s later after cancelling the work. */
void herd_http_server_drain(struct herd_http_server *h);
bool herd_http_server_draining(const struct herd_http_server *h);
/* Ends the loop after the current callback. */
void herd_http_server_stop(struct herd_http_server *h);
/* Closes every connection (aborting their work) and frees the loop. NULL is
 * a no-op. */
void herd_http_server_destroy(struct herd_http_server *h);

/* ------------------------------------------------------------- requests */

const char *herd_http_request_method(const struct herd_http_request *r); /* as sent: "HEAD" too */
const char *herd_http_request_path(const struct herd_http_request *r);   /* without the query */
const char *herd_http_request_target(const struct herd_http_request *r); /* as sent: path and query */
/* The query parameter name's value, percent-decoded ('+' as a space) into
 * buf; false when the query has no such parameter, or its value does not
 * fit cap - 1 bytes or decodes to a NUL. */
bool herd_http_request_query(const struct herd_http_request *r, const char *name, char *buf, size_t cap);
/* The part of the path after a PREFIX route's path ("" for others). */
const char *herd_http_request_path_rest(const struct herd_http_request *r);
/* The client's X-Request-Id when it is a sane token (letters, digits,
 * . _ -, at most 40), else the server's own. */
const char *herd_http_request_id(const struct herd_http_request *r);
/* A request header's value (case-insensitive name), or NULL. */
const char *herd_http_request_header(const struct herd_http_request *r, const char *name);
/* All the request's headers in the order sent ([*n]), to forward them. */
const struct herd_http_header *herd_http_request_headers(const struct herd_http_request *r, size_t *n);
/* The body as received (its length in *len). */
const char *herd_http_request_body(const struct herd_http_request *r, size_t *len);
void *herd_http_request_app(const struct herd_http_request *r);

/* Fields for this request's access-log line, after method, path, status
 * and duration_ms (copied; string values must be static). At most
 * HERD_HTTP_LOG_EXTRA; they are cleared when the line is written. */
#define HERD_HTTP_LOG_EXTRA 8
void herd_http_request_log(struct herd_http_request *r, const struct herd_log_field *fields, size_t n);

/* Work the request waits on (an answer from another thread): while it is
 * set, the server calls ops back and counts the request as in flight for
 * the drain. Clear it (ops NULL) before answering for good. */
struct herd_http_work_ops {
    /* herd_http_request_wake was called, or a paused stream's client read
     * below half the high water: make progress. Not called while the
     * client leaves HERD_HTTP_STREAM_HIGH_WATER bytes unread. */
    void (*wake)(struct herd_http_request *r, void *work);
    /* The drain ran out of time: end the work now; the answer still ends
     * normally (it is still in flight until it does). */
    void (*cancel)(struct herd_http_request *r, void *work);
    /* The client went away, or the server is being destroyed: free the
     * work and answer nothing; r is gone after this returns. */
    void (*abort)(struct herd_http_request *r, void *work);
};
void herd_http_request_set_work(struct herd_http_request *r, const struct herd_http_work_ops *ops, void *work);
void *herd_http_request_work(const struct herd_http_request *r);
/* From any thread: call ops->wake on the loop soon. Safe until the work's
 * abort returns or the work is cleared, when the caller stops waking. */
void herd_http_request_wake(struct herd_http_request *r);
/* Bytes waiting to be written to the client. */
size_t herd_http_request_pending_output(const struct herd_http_request *r);

/* -------------------------------------------------------------- answers */

/* A whole answer: headers end with Content-Length (then extra_headers,
 * each line ending CRLF); X-Request-Id is always set; no body for HEAD
 * or a 304 (body may then be NULL, len the length a GET's 200 would have:
 * a proxy relaying an upstream's HEAD answer, a page not modified). A
 * 5xx ends the connection, other answers keep it alive when the client
 * does and the server is not draining. */
void herd_http_respond(struct herd_http_request *r, int status, const char *content_type, const char *body, size_t len,
                       const char *extra_headers);
void herd_http_respond_json(struct herd_http_request *r, int status, json_t *body); /* steals body */
/* A whole answer whose body is the first len bytes of the open file fd
 * (which the server closes): sent by the kernel, never read into memory. */
void herd_http_respond_file(struct herd_http_request *r, int status, const char *content_type, int fd, size_t len,
                            const char *extra_headers);
/* OpenAI's error shape; param and code may be NULL. */
void herd_http_respond_error(struct herd_http_request *r, int status, const char *type, const char *param,
                             const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void herd_http_respond_error_headers(struct herd_http_request *r, int status, const char *type, const char *param,
                                     const char *code, const char *extra_headers, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

/* A streamed answer in chunked transfer coding: the head (extra_headers
 * after Content-Type), then chunks, then the last chunk, which ends the
 * request. */
void herd_http_stream_begin(struct herd_http_request *r, int status, const char *content_type,
                            const char *extra_headers);
void herd_http_stream_send(struct herd_http_request *r, const char *data, size_t len); /* one chunk; 0 bytes: none */
void herd_http_stream_end(struct herd_http_request *r);
/* The stream cannot be completed (a proxy's upstream broke mid-body):
 * what was sent is flushed and the connection closed without the last
 * chunk, so the client sees a cut answer, never a complete short one. */
void herd_http_stream_abort(struct herd_http_request *r);
/* Server-sent events over the stream: a 200 text/event-stream head
 * (Cache-Control: no-cache), and one chunk "data: <data>\n\n" per event. */
void herd_http_sse_begin(struct herd_http_request *r);
void herd_http_sse_send(struct herd_http_request *r, const char *data, size_t len);

/* ------------------------------------------------------- stock handlers */

/* Probes for the route table (GET, OPEN, PROBE, not NEEDS_READY):
 * /livez 200 while the process runs; /health 200 unless loading or failed
 * (draining is still healthy); /readyz 200 only when ready and not
 * draining. */
void herd_http_livez(struct herd_http_request *r, json_t *body, void *app);
void herd_http_health(struct herd_http_request *r, json_t *body, void *app);
void herd_http_readyz(struct herd_http_request *r, json_t *body, void *app);

#endif
