/* An incremental HTTP/1.1 request parser (RFC 9112) with limits, written
 * for a server that faces the internet: every size is bounded before it is
 * buffered, ambiguous framing is an error that closes the connection, and
 * the error says which status to answer with:
 *   400 malformed request line, header or chunk; conflicting or invalid
 *       Content-Length; Content-Length with Transfer-Encoding
 *   413 body (declared or received) over max_body_bytes
 *   414 request line over max_request_line
 *   431 headers over max_header_bytes or more than max_headers of them
 *   501 a transfer coding other than chunked
 *   505 a version other than HTTP/1.0 and HTTP/1.1
 * It does no I/O: feed it bytes, it says how many it used. */
#ifndef HERD_HTTP_HTTP1_H
#define HERD_HTTP_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

struct herd_http_limits {
    size_t max_request_line; /* bytes, CRLF excluded (8 KiB) */
    size_t max_header_bytes; /* request line and headers together (64 KiB) */
    size_t max_headers;      /* (100) */
    size_t max_body_bytes;   /* (16 MiB) */
};

void herd_http_default_limits(struct herd_http_limits *l);

#define HERD_HTTP_MAX_HEADERS 256

struct herd_http_header {
    const char *name, *value; /* NUL-terminated, into the parser's head buffer */
    size_t name_len, value_len;
};

enum herd_http_phase {
    HERD_HTTP_HEAD,
    HERD_HTTP_BODY,
    HERD_HTTP_CHUNK_SIZE,
    HERD_HTTP_CHUNK_DATA,
    HERD_HTTP_CHUNK_CRLF,
    HERD_HTTP_TRAILERS,
    HERD_HTTP_DONE,
    HERD_HTTP_ERROR
};

struct herd_http_parser {
    struct herd_http_limits lim;
    enum herd_http_phase phase;
    struct herd_buf head; /* request line and headers as received */
    struct herd_buf body;
    struct herd_buf line; /* a chunk-size or trailer line */
    uint64_t remaining;   /* bytes of the body or chunk still to read */
    bool request_line_done;
    /* the parsed request (valid from HERD_HTTP_BODY on) */
    const char *method, *target;
    int version_minor; /* HTTP/1.x */
    struct herd_http_header headers[HERD_HTTP_MAX_HEADERS];
    size_t n_headers;
    bool keep_alive, chunked, expect_continue;
    uint64_t content_length;
    /* on HERD_HTTP_ERROR */
    int error_status;
    const char *error;
};

void herd_http_parser_init(struct herd_http_parser *p, const struct herd_http_limits *lim);
void herd_http_parser_cleanup(struct herd_http_parser *p);
/* Ready for the next request on the same connection (keeps the buffers). */
void herd_http_parser_reset(struct herd_http_parser *p);

/* Feeds len bytes; returns how many were used (the rest belongs to the
 * next request). Check p->phase afterwards: HERD_HTTP_DONE (a complete
 * request), HERD_HTTP_ERROR (answer error_status and close), otherwise
 * more bytes are needed. */
size_t herd_http_parse(struct herd_http_parser *p, const char *data, size_t len);

/* The value of a header (case-insensitive name), or NULL. */
const struct herd_http_header *herd_http_header_get(const struct herd_http_parser *p, const char *name);

/* ------------------------------ shared with the response parser (http1_response.h) */

/* The first of n headers named name (case-insensitive), or NULL. */
const struct herd_http_header *herd_http_headers_find(const struct herd_http_header *h, size_t n, const char *name);
/* Writes v in base 10 or 16 (lower case) at w, NUL-terminated (w holds
 * 21 bytes for any value); returns the digits written. For heads written
 * per request without printf. */
size_t herd_http_fmt_uint(char *w, uint64_t v, unsigned base);
/* Does the comma-separated header value contain token (case-insensitive)? */
bool herd_http_has_token(const char *value, const char *token);
/* Parses one header field line [line, line_end) in place: the name must be
 * a token right before the colon, the value loses its surrounding
 * whitespace, and both become NUL-terminated slices of the line (into
 * *out). Returns NULL, or what is wrong with the line (a 400). */
const char *herd_http_parse_field(char *line, char *line_end, struct herd_http_header *out);
/* A Content-Length value: decimal digits only, without overflow. Returns
 * NULL with *out set, or what is wrong. */
const char *herd_http_parse_content_length(const char *v, uint64_t *out);
/* A chunk-size line of len bytes (hex digits, then optional ";extensions",
 * then the line end): at most 15 digits, so that a size never overflows.
 * Returns NULL with *size set, or what is wrong. */
const char *herd_http_parse_chunk_size(const char *line, size_t len, uint64_t *size);

#endif
