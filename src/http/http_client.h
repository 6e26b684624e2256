/* An HTTP/1.1 client on a libevent loop (the one an HTTP server runs on:
 * herd_http_server_base), for `herd route` to talk to its replicas: a
 * keep-alive connection pool per upstream host:port, responses parsed by
 * http1_response.h, bodies handed to a callback piece by piece as they
 * arrive (a chunked SSE stream is relayed, never buffered whole),
 * connect / head / idle deadlines, and cancellation (the router cancels
 * the upstream call when its own client goes away).
 *
 * A call: herd_http_client_send, then on the loop on_head once, on_body
 * for each piece of the body, and on_done once; or herd_http_call_cancel,
 * after which nothing is called. A request that fails on a pooled
 * connection before any byte of the answer arrived (the upstream closed it
 * while it sat idle: the keep-alive race) is sent again once on a new
 * connection; every other failure goes to on_done.
 *
 * Threads: everything on the loop's thread. */
#ifndef HERD_HTTP_HTTP_CLIENT_H
#define HERD_HTTP_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/status.h"
#include "http/http1_response.h"

struct event_base;
struct herd_http_client;
struct herd_http_call;

struct herd_http_client_params {
    double connect_timeout_s; /* to open the TCP connection (5) */
    /* From the request sent to the end of the response head (300): a
     * completion's head comes after its queue wait and, unstreamed, after
     * the whole generation. */
    double head_timeout_s;
    double idle_timeout_s;          /* the longest silence inside a body (60): between two SSE events */
    double pool_idle_timeout_s;     /* a pooled connection unused this long closes (30; under herd serve's 60) */
    uint32_t max_idle_per_upstream; /* pooled connections kept per host:port (32) */
    struct herd_http_resp_limits limits;
};

void herd_http_client_default_params(struct herd_http_client_params *p);

/* Why a call failed: the router retries a CONNECT failure on another
 * replica at once, but not a call whose answer had begun. */
enum herd_http_call_error {
    HERD_HTTP_CALL_OK,
    HERD_HTTP_CALL_CONNECT,  /* the connection could not be opened (refused, unreachable, connect timeout) */
    HERD_HTTP_CALL_TIMEOUT,  /* no head within head_timeout_s, or a body silent for idle_timeout_s */
    HERD_HTTP_CALL_CLOSED,   /* the upstream closed or reset the connection before the answer ended */
    HERD_HTTP_CALL_PROTOCOL, /* the answer broke HTTP/1.1 or a limit (the parser's error) */
    HERD_HTTP_CALL_NOMEM,
};

/* Callbacks of one call, on the loop; arg is herd_http_client_send's.
 * Each may cancel the call (then nothing more is called). */
struct herd_http_call_ops {
    /* The status line and headers (resp->status, herd_http_resp_header_get). */
    void (*on_head)(struct herd_http_call *call, const struct herd_http_resp_parser *resp, void *arg);
    /* A piece of the body, chunk framing removed, as it arrived. */
    void (*on_body)(struct herd_http_call *call, const char *data, size_t len, void *arg);
    /* The end: HERD_HTTP_CALL_OK once the whole answer arrived, else why
     * not (msg says it for people: "connect to 10.0.0.7:8080: Connection
     * refused"). The call is freed when this returns. */
    void (*on_done)(struct herd_http_call *call, enum herd_http_call_error e, const char *msg, void *arg);
};

struct herd_http_client_request {
    const char *method; /* "GET", "POST", ... */
    const char *host;   /* an IP address (names are resolved by the caller) */
    uint16_t port;
    const char *target;  /* path and query: "/v1/chat/completions" */
    const char *headers; /* more header lines, each ending CRLF, or NULL; not Host or Content-Length */
    const char *body;    /* body_len bytes (copied), or NULL */
    size_t body_len;
};

/* Creates a client on base (which must outlive it). The caller frees with
 * herd_http_client_destroy. */
enum herd_status herd_http_client_create(struct event_base *base, const struct herd_http_client_params *p,
                                         struct herd_http_client **out, struct herd_error *err);
/* Cancels the calls in flight (no callbacks) and closes every connection.
 * NULL is a no-op. Not from a callback of this client. */
void herd_http_client_destroy(struct herd_http_client *cl);

/* Starts a request (copied: req's strings need not outlive the call).
 * Returns the call, or NULL with err (HERD_E_INVALID: a malformed method,
 * host, target or header text; HERD_E_NOMEM); no callback is called for a
 * call that did not start. ops must outlive the call. */
struct herd_http_call *herd_http_client_send(struct herd_http_client *cl, const struct herd_http_client_request *req,
                                             const struct herd_http_call_ops *ops, void *arg, struct herd_error *err);
/* Stops a call: its connection closes (an answer cut short cannot be
 * reused), nothing more is called, the call is freed. Also from the
 * call's own callbacks; not after on_done returned. */
void herd_http_call_cancel(struct herd_http_call *call);

/* Pausing stops reading the call's answer (and its idle deadline), so
 * that the upstream's TCP window fills and it slows to the pace of a slow
 * client downstream; what was already read waits too. Resuming hands it on
 * from the loop, not from inside this call. */
void herd_http_call_pause(struct herd_http_call *call, bool paused);

/* Counters, for tests and metrics. */
struct herd_http_client_stats {
    uint64_t connects; /* connections opened */
    uint64_t reuses;   /* requests sent on a pooled connection */
    uint64_t retries;  /* requests sent again after a pooled connection failed */
    uint32_t idle;     /* pooled connections now */
    uint32_t calls;    /* calls in flight now */
};
void herd_http_client_stats(const struct herd_http_client *cl, struct herd_http_client_stats *out);

#endif
