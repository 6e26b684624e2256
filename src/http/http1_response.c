/* HTTP/1.1 response parsing (http1_response.h).
 *
 * As in the request parser (http1.c), the head is buffered up to the
 * blank line with its limit checked on every byte, then parsed in place;
 * header lines go through the same herd_http_parse_field. The body is
 * not buffered: each call hands out at most one span of it, a slice of
 * the caller's bytes, so a relay writes it on as it comes. */
#include <string.h>
#include <strings.h>

#include "http/http1_response.h"

/* A chunk-size or trailer line: sizes need 15 hex digits, extensions and
 * trailer fields are ignored, so 1 KiB is generous (as for requests). */
#define LINE_MAX_BYTES 1024

void herd_http_resp_default_limits(struct herd_http_resp_limits *l) {
    l->max_header_bytes = 64 << 10;
    l->max_headers = 100;
    l->max_body_bytes = (uint64_t)1 << 30;
}

void herd_http_resp_parser_init(struct herd_http_resp_parser *p, const struct herd_http_resp_limits *lim) {
    memset(p, 0, sizeof *p);
    p->lim = *lim;
    if (p->lim.max_headers > HERD_HTTP_MAX_HEADERS) p->lim.max_headers = HERD_HTTP_MAX_HEADERS;
    herd_buf_init(&p->head, lim->max_header_bytes + 1);
    herd_buf_init(&p->line, LINE_MAX_BYTES);
    p->phase = HERD_HTTP_RESP_HEAD;
}

void herd_http_resp_parser_cleanup(struct herd_http_resp_parser *p) {
    herd_buf_cleanup(&p->head);
    herd_buf_cleanup(&p->line);
}

/* Forgets the head (for the next response, or after an interim 1xx). */
static void clear_head(struct herd_http_resp_parser *p) {
    p->head.len = p->line.len = 0;
    p->status = p->version_minor = 0;
    p->reason = NULL;
    p->n_headers = 0;
    p->keep_alive = p->chunked = p->have_length = false;
    p->content_length = 0;
}

void herd_http_resp_parser_reset(struct herd_http_resp_parser *p, bool head_request) {
    clear_head(p);
    p->phase = HERD_HTTP_RESP_HEAD;
    p->head_request = head_request;
    p->remaining = p->body_bytes = 0;
    p->trailer_bytes = 0;
    p->error = NULL;
}

const struct herd_http_header *herd_http_resp_header_get(const struct herd_http_resp_parser *p, const char *name) {
    return herd_http_headers_find(p->headers, p->n_headers, name);
}

static size_t fail(struct herd_http_resp_parser *p, const char *why, size_t used) {
    p->phase = HERD_HTTP_RESP_ERROR;
    p->error = why;
    return used;
}

/* "HTTP/1.x SP 3DIGIT [SP reason]" (NUL-terminated, line end removed). */
static const char *parse_status_line(struct herd_http_resp_parser *p, char *s) {
    if (strncmp(s, "HTTP/", 5) != 0) return "malformed status line";
    if (strncmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ') return "unsupported HTTP version";
    /* each digit is checked before the next is read: no read past the NUL */
    for (int i = 9; i < 12; i++)
        if (s[i] < '0' || s[i] > '9') return "malformed status code";
    if (s[12] != 0 && s[12] != ' ') return "malformed status line";
    p->version_minor = s[7] - '0';
    p->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    if (p->status < 100 || p->status > 599) return "malformed status code";
    p->reason = s[12] ? s + 13 : s + 12;
    for (const char *c = p->reason; *c; c++)
        if (((unsigned char)*c < ' ' && *c != '\t') || *c == 0x7f) return "control character in the reason phrase";
    return NULL;
}

/* Splits the buffered head into the status line and headers and decides
 * the framing; false after failing. */
static bool parse_head(struct herd_http_resp_parser *p) {
    char *s = (char *)p->head.data;
    char *end = s + p->head.len;
    char *eol = memchr(s, '\n', (size_t)(end - s));
    char *line_end = eol > s && eol[-1] == '\r' ? eol - 1 : eol;
    *line_end = 0;
    const char *bad = parse_status_line(p, s);
    if (bad) return fail(p, bad, 0), false;
    bool have_te = false;
    for (char *l = eol + 1; l < end;) {
        char *nl = memchr(l, '\n', (size_t)(end - l));
        char *le = nl > l && nl[-1] == '\r' ? nl - 1 : nl;
        if (le == l) break; /* the blank line */
        struct herd_http_header f;
        if ((bad = herd_http_parse_field(l, le, &f))) return fail(p, bad, 0), false;
        if (p->n_headers == p->lim.max_headers) return fail(p, "too many header fields", 0), false;
        p->headers[p->n_headers++] = f;
        if (f.name_len == 14 && strcasecmp(f.name, "content-length") == 0) {
            uint64_t cl = 0;
            if ((bad = herd_http_parse_content_length(f.value, &cl))) return fail(p, bad, 0), false;
            if (p->have_length && cl != p->content_length)
                return fail(p, "conflicting Content-Length headers", 0), false;
            p->have_length = true;
            p->content_length = cl;
        } else if (f.name_len == 17 && strcasecmp(f.name, "transfer-encoding") == 0) {
            /* only chunked: another coding (gzip, chunked) would need decoding */
            if (have_te || strcasecmp(f.value, "chunked") != 0)
                return fail(p, "unsupported Transfer-Encoding", 0), false;
            have_te = true;
            p->chunked = true;
        }
        l = nl + 1;
    }
    /* both lengths is how responses are smuggled past a proxy: refuse */
    if (p->have_length && p->chunked) return fail(p, "both Content-Length and Transfer-Encoding", 0), false;
    const struct herd_http_header *conn = herd_http_resp_header_get(p, "connection");
    p->keep_alive = p->version_minor == 1 ? !(conn && herd_http_has_token(conn->value, "close"))
                                          : (conn && herd_http_has_token(conn->value, "keep-alive"));
    return true;
}

/* Reads one line (chunk size or trailer) into p->line; true when complete. */
static bool take_line(struct herd_http_resp_parser *p, const char *data, size_t len, size_t *used) {
    const char *nl = memchr(data, '\n', len);
    size_t n = nl ? (size_t)(nl - data) + 1 : len;
    *used += n;
    if (!herd_buf_append(&p->line, data, n)) {
        fail(p, "chunk line too long", *used);
        return false;
    }
    return nl != NULL;
}

/* The body bytes a span or chunk would bring stay under the limit. */
static bool body_fits(const struct herd_http_resp_parser *p, uint64_t n) {
    return n <= p->lim.max_body_bytes && p->body_bytes <= p->lim.max_body_bytes - n;
}

size_t herd_http_resp_parse(struct herd_http_resp_parser *p, const char *data, size_t len,
                            struct herd_http_span *body) {
    body->data = NULL;
    body->len = 0;
    size_t used = 0;
    while (used < len && p->phase != HERD_HTTP_RESP_DONE && p->phase != HERD_HTTP_RESP_ERROR) {
        const char *d = data + used;
        size_t left = len - used;
        switch (p->phase) {
        case HERD_HTTP_RESP_HEAD: {
            /* a line at a time up to the blank line; the limit is checked
             * at the byte that breaks it, as if byte by byte */
            size_t k = 0;
            bool complete = false;
            while (k < left) {
                const char *nl = memchr(d + k, '\n', left - k);
                const size_t seg = nl ? (size_t)(nl - (d + k)) + 1 : left - k;
                const size_t room = p->head.len < p->lim.max_header_bytes ? p->lim.max_header_bytes - p->head.len : 0;
                if (seg > room) return fail(p, "response headers too large", used + k + room);
                if (!herd_buf_append(&p->head, d + k, seg)) return fail(p, "response headers too large", used + k);
                k += seg;
                if (!nl) break;
                const char *h = (const char *)p->head.data;
                const size_t n = p->head.len;
                if ((n >= 2 && h[n - 2] == '\n') || (n >= 3 && h[n - 2] == '\r' && h[n - 3] == '\n')) {
                    complete = true;
                    break;
                }
            }
            used += k;
            if (!complete) break;
            if (!herd_buf_append(&p->head, "", 1)) return fail(p, "response headers too large", used);
            p->head.len--; /* a NUL after the head, not part of it */
            if (!parse_head(p)) return used;
            if (p->status < 200) {
                /* 100 Continue and other interim answers come before the
                 * real one; 101 would hand the connection to another protocol */
                if (p->status == 101) return fail(p, "unexpected 101 Switching Protocols", used);
                clear_head(p);
                break;
            }
            if (p->head_request || p->status == 204 || p->status == 304) {
                p->phase = HERD_HTTP_RESP_DONE;
            } else if (p->chunked) {
                p->phase = HERD_HTTP_RESP_CHUNK_SIZE;
            } else if (p->have_length) {
                if (!body_fits(p, p->content_length)) return fail(p, "response body too large", used);
                p->remaining = p->content_length;
                p->phase = p->remaining ? HERD_HTTP_RESP_BODY : HERD_HTTP_RESP_DONE;
            } else {
                p->phase = HERD_HTTP_RESP_BODY_UNTIL_CLOSE;
                p->keep_alive = false; /* the end of the body is the end of the connection */
            }
            break;
        }
        case HERD_HTTP_RESP_BODY:
        case HERD_HTTP_RESP_CHUNK_DATA: {
            size_t n = left < p->remaining ? left : (size_t)p->remaining;
            body->data = d;
            body->len = n;
            p->body_bytes += n;
            p->remaining -= n;
            used += n;
            if (!p->remaining)
                p->phase = p->phase == HERD_HTTP_RESP_BODY ? HERD_HTTP_RESP_DONE : HERD_HTTP_RESP_CHUNK_CRLF;
            return used;
        }
        case HERD_HTTP_RESP_BODY_UNTIL_CLOSE: {
            if (!body_fits(p, left)) return fail(p, "response body too large", used);
            body->data = d;
            body->len = left;
            p->body_bytes += left;
            return len;
        }
        case HERD_HTTP_RESP_CHUNK_SIZE: {
            if (!take_line(p, d, left, &used)) break;
            uint64_t size = 0;
            const char *bad = herd_http_parse_chunk_size((const char *)p->line.data, p->line.len, &size);
            if (bad) return fail(p, bad, used);
            p->line.len = 0;
            if (!body_fits(p, size)) return fail(p, "response body too large", used);
            if (size == 0) {
                p->phase = HERD_HTTP_RESP_TRAILERS;
            } else {
                p->phase = HERD_HTTP_RESP_CHUNK_DATA;
                p->remaining = size;
            }
            break;
        }
        case HERD_HTTP_RESP_CHUNK_CRLF: {
            /* exactly CRLF (or LF) after the chunk data */
            char ch = d[0];
            used++;
            if (ch == '\r' && p->line.len == 0) {
                p->line.len = 1;
            } else if (ch == '\n') {
                p->line.len = 0;
                p->phase = HERD_HTTP_RESP_CHUNK_SIZE;
            } else {
                return fail(p, "malformed chunk end", used);
            }
            break;
        }
        case HERD_HTTP_RESP_TRAILERS: {
            /* trailer fields are read and ignored, up to the blank line,
             * within the head's limit */
            size_t before = used;
            bool complete = take_line(p, d, left, &used);
            p->trailer_bytes += used - before;
            if (p->trailer_bytes > p->lim.max_header_bytes) return fail(p, "response trailers too large", used);
            if (!complete) break;
            bool blank = (p->line.len == 2 && p->line.data[0] == '\r') || p->line.len == 1;
            p->line.len = 0;
            if (blank) p->phase = HERD_HTTP_RESP_DONE;
            break;
        }
        default: break;
        }
    }
    return used;
}

void herd_http_resp_eof(struct herd_http_resp_parser *p) {
    if (p->phase == HERD_HTTP_RESP_BODY_UNTIL_CLOSE)
        p->phase = HERD_HTTP_RESP_DONE;
    else if (p->phase != HERD_HTTP_RESP_DONE && p->phase != HERD_HTTP_RESP_ERROR)
        fail(p, "the connection closed before the response ended", 0);
}
