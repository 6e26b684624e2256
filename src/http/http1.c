/* HTTP/1.1 request parsing (http1.h).
 *
 * The head (request line and headers) is buffered up to the blank line,
 * checking the limits on every byte so that a client sending a megabyte
 * of header is refused after max_header_bytes. It is then parsed in place:
 * names and values become NUL-terminated slices of the buffer. The body is
 * read by Content-Length or chunked coding into a buffer bounded by
 * max_body_bytes. A bare LF is accepted as a line end (RFC 9112 allows
 * it); obsolete line folding and whitespace before the colon are not. */
#include <string.h>
#include <strings.h>

#include "base/checked.h"
#include "http/http1.h"

void herd_http_default_limits(struct herd_http_limits *l) {
    l->max_request_line = 8 << 10;
    l->max_header_bytes = 64 << 10;
    l->max_headers = 100;
    l->max_body_bytes = 16 << 20;
}

void herd_http_parser_init(struct herd_http_parser *p, const struct herd_http_limits *lim) {
    memset(p, 0, sizeof *p);
    p->lim = *lim;
    if (p->lim.max_headers > HERD_HTTP_MAX_HEADERS) p->lim.max_headers = HERD_HTTP_MAX_HEADERS;
    herd_buf_init(&p->head, lim->max_header_bytes + 1);
    herd_buf_init(&p->body, lim->max_body_bytes);
    herd_buf_init(&p->line, 1024);
    p->phase = HERD_HTTP_HEAD;
}

void herd_http_parser_cleanup(struct herd_http_parser *p) {
    herd_buf_cleanup(&p->head);
    herd_buf_cleanup(&p->body);
    herd_buf_cleanup(&p->line);
}

/* A body buffer larger than this is given back between requests: one
 * upload must not keep its size allocated on a keep-alive connection. */
#define KEEP_BODY_BYTES ((size_t)1 << 20)

void herd_http_parser_reset(struct herd_http_parser *p) {
    if (p->body.cap > KEEP_BODY_BYTES) {
        herd_buf_cleanup(&p->body);
        herd_buf_init(&p->body, p->lim.max_body_bytes);
    }
    p->head.len = p->body.len = p->line.len = 0;
    p->phase = HERD_HTTP_HEAD;
    p->remaining = 0;
    p->method = p->target = NULL;
    p->n_headers = 0;
    p->keep_alive = p->chunked = p->expect_continue = p->request_line_done = false;
    p->content_length = 0;
    p->error_status = 0;
    p->error = NULL;
}

static size_t fail(struct herd_http_parser *p, int status, const char *why, size_t used) {
    p->phase = HERD_HTTP_ERROR;
    p->error_status = status;
    p->error = why;
    return used;
}

static bool is_tchar(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c);
}

const struct herd_http_header *herd_http_headers_find(const struct herd_http_header *h, size_t n, const char *name) {
    const size_t len = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (h[i].name_len == len && strcasecmp(h[i].name, name) == 0) return &h[i];
    return NULL;
}

size_t herd_http_fmt_uint(char *w, uint64_t v, unsigned base) {
    char t[64];
    size_t n = 0;
    do {
        t[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    for (size_t i = 0; i < n; i++) w[i] = t[n - 1 - i];
    w[n] = 0;
    return n;
}

const struct herd_http_header *herd_http_header_get(const struct herd_http_parser *p, const char *name) {
    return herd_http_headers_find(p->headers, p->n_headers, name);
}

bool herd_http_has_token(const char *v, const char *token) {
    size_t n = strlen(token);
    for (const char *s = v; *s;) {
        while (*s == ' ' || *s == '\t' || *s == ',') s++;
        const char *e = s;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t')) t--;
        if ((size_t)(t - s) == n && strncasecmp(s, token, n) == 0) return true;
        s = e;
    }
    return false;
}

const char *herd_http_parse_field(char *l, char *le, struct herd_http_header *out) {
    if (*l == ' ' || *l == '\t') return "obsolete header line folding";
    *le = 0;
    char *colon = strchr(l, ':');
    if (!colon || colon == l) return "malformed header line";
    for (char *c = l; c < colon; c++)
        if (!is_tchar((unsigned char)*c)) return "malformed header name";
    *colon = 0;
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    char *ve = le;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    *ve = 0;
    for (char *c = v; c < ve; c++)
        if (*c == 0 || ((unsigned char)*c < ' ' && *c != '\t') || *c == 0x7f)
            return "control character in a header value";
    *out = (struct herd_http_header){l, v, (size_t)(colon - l), (size_t)(ve - v)};
    return NULL;
}

const char *herd_http_parse_content_length(const char *v, uint64_t *out) {
    uint64_t cl = 0;
    if (!*v) return "empty Content-Length";
    for (const char *c = v; *c; c++)
        if (*c < '0' || *c > '9' || !herd_mul_u64(cl, 10, &cl) || !herd_add_u64(cl, (uint64_t)(*c - '0'), &cl))
            return "invalid Content-Length";
    *out = cl;
    return NULL;
}

const char *herd_http_parse_chunk_size(const char *s, size_t n, uint64_t *out) {
    uint64_t size = 0;
    size_t i = 0, digits = 0;
    for (; i < n; i++) {
        char c = s[i];
        int v = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (v < 0) break;
        /* 15 hex digits are 60 bits: the size cannot overflow */
        if (++digits > 15) return "chunk size too large";
        size = size * 16 + (uint64_t)v;
    }
    /* then optional extensions after ';', then CRLF */
    if (!digits || (i < n && s[i] != ';' && s[i] != '\r' && s[i] != '\n')) return "malformed chunk size";
    *out = size;
    return NULL;
}

/* Splits the buffered head into the request line and headers. */
static bool parse_head(struct herd_http_parser *p) {
    char *s = (char *)p->head.data;
    char *end = s + p->head.len;
    /* request line: METHOD SP target SP HTTP/1.x */
    char *eol = memchr(s, '\n', (size_t)(end - s));
    char *line_end = eol > s && eol[-1] == '\r' ? eol - 1 : eol;
    *line_end = 0;
    char *sp1 = strchr(s, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || sp1 == s || sp2 == sp1 + 1 || strchr(sp2 + 1, ' ')) {
        fail(p, 400, "malformed request line", 0);
        return false;
    }
    *sp1 = *sp2 = 0;
    for (char *c = s; c < sp1; c++)
        if (!is_tchar((unsigned char)*c)) {
            fail(p, 400, "malformed method", 0);
            return false;
        }
    for (char *c = sp1 + 1; c < sp2; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f) {
            fail(p, 400, "malformed request target", 0);
            return false;
        }
    if (strncmp(sp2 + 1, "HTTP/1.", 7) != 0 || (sp2[8] != '0' && sp2[8] != '1') || sp2[9]) {
        fail(p, strncmp(sp2 + 1, "HTTP/", 5) == 0 ? 505 : 400, "unsupported HTTP version", 0);
        return false;
    }
    p->method = s;
    p->target = sp1 + 1;
    p->version_minor = sp2[8] - '0';
    /* headers */
    bool have_cl = false, have_te = false;
    for (char *l = eol + 1; l < end;) {
        char *nl = memchr(l, '\n', (size_t)(end - l));
        char *le = nl > l && nl[-1] == '\r' ? nl - 1 : nl;
        if (le == l) break; /* the blank line */
        struct herd_http_header f;
        const char *bad = herd_http_parse_field(l, le, &f);
        if (bad) {
            fail(p, 400, bad, 0);
            return false;
        }
        if (p->n_headers == p->lim.max_headers) {
            fail(p, 431, "too many header fields", 0);
            return false;
        }
        p->headers[p->n_headers++] = f;
        const char *v = f.value;
        if (f.name_len == 14 && strcasecmp(l, "content-length") == 0) {
            uint64_t cl = 0;
            if ((bad = herd_http_parse_content_length(v, &cl))) {
                fail(p, 400, bad, 0);
                return false;
            }
            if (have_cl && cl != p->content_length) {
                fail(p, 400, "conflicting Content-Length headers", 0);
                return false;
            }
            have_cl = true;
            p->content_length = cl;
        } else if (f.name_len == 17 && strcasecmp(l, "transfer-encoding") == 0) {
            if (have_te || strcasecmp(v, "chunked") != 0) {
                fail(p, have_te || herd_http_has_token(v, "chunked") ? 400 : 501, "unsupported Transfer-Encoding", 0);
                return false;
            }
            have_te = true;
            p->chunked = true;
        } else if (f.name_len == 6 && strcasecmp(l, "expect") == 0 && strcasecmp(v, "100-continue") == 0) {
            p->expect_continue = true;
        }
        l = nl + 1;
    }
    if (have_cl && have_te) {
        fail(p, 400, "both Content-Length and Transfer-Encoding", 0);
        return false;
    }
    const struct herd_http_header *conn = herd_http_header_get(p, "connection");
    p->keep_alive = p->version_minor == 1 ? !(conn && herd_http_has_token(conn->value, "close"))
                                          : (conn && herd_http_has_token(conn->value, "keep-alive"));
    if (have_cl && p->content_length > p->lim.max_body_bytes) {
        fail(p, 413, "request body too large", 0);
        return false;
    }
    return true;
}

/* Reads one line (chunk size or trailer) into p->line; true when complete. */
static bool take_line(struct herd_http_parser *p, const char *data, size_t len, size_t *used) {
    const char *nl = memchr(data, '\n', len);
    size_t n = nl ? (size_t)(nl - data) + 1 : len;
    if (!herd_buf_append(&p->line, data, n)) {
        fail(p, 400, "chunk line too long", *used);
        *used += n;
        return false;
    }
    *used += n;
    return nl != NULL;
}

size_t herd_http_parse(struct herd_http_parser *p, const char *data, size_t len) {
    size_t used = 0;
    while (used < len && p->phase != HERD_HTTP_DONE && p->phase != HERD_HTTP_ERROR) {
        const char *d = data + used;
        size_t left = len - used;
        switch (p->phase) {
        case HERD_HTTP_HEAD: {
            /* a line at a time up to the blank line, each limit checked
             * at the byte that breaks it, as if byte by byte */
            size_t k = 0;
            bool complete = false;
            while (k < left) {
                if (!p->head.len) { /* blank lines before a request are ignored */
                    while (k < left && (d[k] == '\r' || d[k] == '\n')) k++;
                    if (k == left) break;
                }
                const char *nl = memchr(d + k, '\n', left - k);
                const size_t seg = nl ? (size_t)(nl - (d + k)) + 1 : left - k;
                /* the first byte past a limit: headers (431: the byte that
                 * would make the head longer than max_header_bytes), then
                 * the request line (414: a byte before its LF that makes
                 * it longer than max_request_line + 1); 431 wins a tie */
                const size_t room = p->head.len < p->lim.max_header_bytes ? p->lim.max_header_bytes - p->head.len : 0;
                size_t bad = seg > room ? room : SIZE_MAX;
                int status = 431;
                const char *why = "request headers too large";
                const size_t line_max = p->lim.max_request_line + 1;
                const size_t before_lf = nl ? seg - 1 : seg;
                if (!p->request_line_done && p->head.len + before_lf > line_max) {
                    const size_t at = line_max > p->head.len ? line_max - p->head.len : 0;
                    if (at < bad) bad = at, status = 414, why = "request line too long";
                }
                if (bad != SIZE_MAX) return fail(p, status, why, used + k + bad);
                if (!herd_buf_append(&p->head, d + k, seg)) return fail(p, 431, "request headers too large", used + k);
                k += seg;
                if (!nl) break;
                p->request_line_done = true;
                const char *h = (const char *)p->head.data;
                const size_t n = p->head.len;
                if ((n >= 2 && h[n - 2] == '\n') || (n >= 3 && h[n - 2] == '\r' && h[n - 3] == '\n')) {
                    complete = true;
                    break;
                }
            }
            used += k;
            if (!complete) break;
            if (!herd_buf_append(&p->head, "", 1)) return fail(p, 431, "request headers too large", used);
            p->head.len--; /* a NUL after the head, not part of it */
            if (!parse_head(p)) return used;
            if (p->chunked) {
                p->phase = HERD_HTTP_CHUNK_SIZE;
            } else if (p->content_length) {
                p->phase = HERD_HTTP_BODY;
                p->remaining = p->content_length;
            } else {
                p->phase = HERD_HTTP_DONE;
            }
            break;
        }
        case HERD_HTTP_BODY: {
            size_t n = left < p->remaining ? left : (size_t)p->remaining;
            if (!herd_buf_append(&p->body, d, n)) return fail(p, 413, "request body too large", used);
            used += n;
            p->remaining -= n;
            if (!p->remaining) p->phase = HERD_HTTP_DONE;
            break;
        }
        case HERD_HTTP_CHUNK_SIZE: {
            if (!take_line(p, d, left, &used)) break;
            uint64_t size = 0;
            const char *bad = herd_http_parse_chunk_size((const char *)p->line.data, p->line.len, &size);
            if (bad) return fail(p, 400, bad, used);
            p->line.len = 0;
            if (size > p->lim.max_body_bytes - p->body.len) return fail(p, 413, "request body too large", used);
            if (size == 0) {
                p->phase = HERD_HTTP_TRAILERS;
            } else {
                p->phase = HERD_HTTP_CHUNK_DATA;
                p->remaining = size;
            }
            break;
        }
        case HERD_HTTP_CHUNK_DATA: {
            size_t n = left < p->remaining ? left : (size_t)p->remaining;
            if (!herd_buf_append(&p->body, d, n)) return fail(p, 413, "request body too large", used);
            used += n;
            p->remaining -= n;
            if (!p->remaining) p->phase = HERD_HTTP_CHUNK_CRLF;
            break;
        }
        case HERD_HTTP_CHUNK_CRLF: {
            /* exactly CRLF (or LF) after the chunk data, checked byte by
             * byte so that garbage there fails at once */
            char ch = d[0];
            used++;
            if (ch == '\r' && p->line.len == 0) {
                p->line.len = 1;
            } else if (ch == '\n') {
                p->line.len = 0;
                p->phase = HERD_HTTP_CHUNK_SIZE;
            } else {
                return fail(p, 400, "malformed chunk end", used);
            }
            break;
        }
        case HERD_HTTP_TRAILERS: {
            /* trailer fields are read and ignored, up to the blank line */
            if (!take_line(p, d, left, &used)) break;
            bool blank = (p->line.len == 2 && p->line.data[0] == '\r') || p->line.len == 1;
            p->line.len = 0;
            if (blank) p->phase = HERD_HTTP_DONE;
            break;
        }
        default: break;
        }
    }
    return used;
}
