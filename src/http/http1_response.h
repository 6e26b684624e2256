/* An incremental HTTP/1.1 response parser (RFC 9112), the client side of
 * http1.h: bytes in, the status line and headers, then the body handed
 * out span by span as it arrives, chunk framing removed, so that a relay
 * can pass a streamed (SSE) body on without buffering it.
 *
 * Framing (RFC 9112 section 6.3), in this order:
 *   - a response to HEAD, and 1xx, 204 and 304 responses have no body;
 *   - Transfer-Encoding: chunked (the only coding accepted; with a
 *     Content-Length too it is an error: a proxy must not guess);
 *   - Content-Length (digits, without overflow, equal when repeated);
 *   - otherwise the body runs until the server closes the connection
 *     (herd_http_resp_eof ends it).
 * Interim 1xx responses (100 Continue) are skipped; 101 is an error (the
 * client never asks to switch protocols). Every size is bounded before it
 * is buffered: the head by max_header_bytes, the header count by
 * max_headers, a chunk-size or trailer line by 1 KiB, the trailers by
 * max_header_bytes, the decoded body by max_body_bytes. The parser does
 * no I/O. */
#ifndef HERD_HTTP_HTTP1_RESPONSE_H
#define HERD_HTTP_HTTP1_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "http/http1.h"

struct herd_http_resp_limits {
    size_t max_header_bytes; /* status line and headers together (64 KiB) */
    size_t max_headers;      /* (100; at most HERD_HTTP_MAX_HEADERS) */
    /* Decoded body bytes (1 GiB). The body is handed out, not buffered,
     * so this bounds how long a runaway upstream can stream, not memory:
     * a 1M-token completion streamed as SSE is ~200 MiB. */
    uint64_t max_body_bytes;
};

void herd_http_resp_default_limits(struct herd_http_resp_limits *l);

enum herd_http_resp_phase {
    HERD_HTTP_RESP_HEAD,
    HERD_HTTP_RESP_BODY,             /* Content-Length bytes */
    HERD_HTTP_RESP_BODY_UNTIL_CLOSE, /* no length: until herd_http_resp_eof */
    HERD_HTTP_RESP_CHUNK_SIZE,
    HERD_HTTP_RESP_CHUNK_DATA,
    HERD_HTTP_RESP_CHUNK_CRLF,
    HERD_HTTP_RESP_TRAILERS,
    HERD_HTTP_RESP_DONE,
    HERD_HTTP_RESP_ERROR
};

/* A piece of the body: a slice of the bytes last given to the parser. */
struct herd_http_span {
    const char *data;
    size_t len;
};

struct herd_http_resp_parser {
    struct herd_http_resp_limits lim;
    enum herd_http_resp_phase phase;
    bool head_request;    /* the request was HEAD: no body, whatever the headers say */
    struct herd_buf head; /* status line and headers as received */
    struct herd_buf line; /* a chunk-size or trailer line */
    uint64_t remaining;   /* bytes of the body or chunk still to come */
    uint64_t body_bytes;  /* decoded body bytes so far */
    size_t trailer_bytes;
    /* the parsed head (valid from HERD_HTTP_RESP_BODY on) */
    int version_minor; /* HTTP/1.x */
    int status;        /* 200..599 (1xx are skipped) */
    const char *reason;
    struct herd_http_header headers[HERD_HTTP_MAX_HEADERS];
    size_t n_headers;
    bool keep_alive; /* the connection may carry the next request once this one is DONE */
    bool chunked, have_length;
    uint64_t content_length;
    /* on HERD_HTTP_RESP_ERROR */
    const char *error;
};

/* For a response to a request other than HEAD (herd_http_resp_parser_reset
 * says which). The caller frees with herd_http_resp_parser_cleanup. */
void herd_http_resp_parser_init(struct herd_http_resp_parser *p, const struct herd_http_resp_limits *lim);
void herd_http_resp_parser_cleanup(struct herd_http_resp_parser *p);
/* Ready for the next response on the same connection (keeps the buffers);
 * head_request: that response answers a HEAD request. */
void herd_http_resp_parser_reset(struct herd_http_resp_parser *p, bool head_request);

/* Feeds len bytes; returns how many were used. It stops after each span
 * of body, so *body (set on every call, len 0 when none) is a slice of
 * data to hand on before calling again with the rest. Check p->phase:
 * HERD_HTTP_RESP_DONE (complete; bytes past `used` belong to the next
 * response), HERD_HTTP_RESP_ERROR (p->error says why; close the
 * connection), otherwise more bytes are needed. The head is complete once
 * the phase has left HERD_HTTP_RESP_HEAD. */
size_t herd_http_resp_parse(struct herd_http_resp_parser *p, const char *data, size_t len, struct herd_http_span *body);

/* The connection closed: a body read until close is DONE, anything else
 * unfinished is an ERROR ("the connection closed before the response
 * ended"). */
void herd_http_resp_eof(struct herd_http_resp_parser *p);

/* The value of a response header (case-insensitive name), or NULL. */
const struct herd_http_header *herd_http_resp_header_get(const struct herd_http_resp_parser *p, const char *name);

#endif
