/* The HTTP server (http_server.h): connections on herd_sock (sock.h),
 * HTTP/1.1 via http1.c, limits and deadlines, API keys, the route table,
 * answers (whole or chunked), the access log (through base/log.c), and
 * the drain on SIGTERM / SIGINT. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/timing.h"
#include "http/http_server.h"
#include "http/sock.h"

/* Bytes a connection may read ahead while its request is worked on. */
#define READ_HIGH_WATER ((size_t)1 << 20)

enum conn_state {
    CONN_READING,   /* parsing a request */
    CONN_WORKING,   /* a handler waits for its work */
    CONN_STREAMING, /* a handler sends a chunked answer */
    CONN_CLOSING,   /* flushing the last answer, then close */
};

/* A connection, and the request it is answering (struct herd_http_request
 * is this struct: HTTP/1.1 answers one request at a time, in order). */
struct herd_http_request {
    struct herd_http_server *srv;
    struct herd_sock *sock;
    struct herd_http_parser parser;
    struct event *deadline;
    struct event *wake; /* activated by herd_http_request_wake, from any thread */
    enum conn_state state;
    bool keep_alive;
    bool head_started; /* bytes of the current request arrived */
    size_t body_limit; /* the current request's route's body limit (from its head on) */
    char request_id[48];
    char method[16];
    char path[128];
    size_t path_rest; /* offset of the part after a PREFIX route's path */
    double t_start;
    int status;
    struct herd_log_field log_extra[HERD_HTTP_LOG_EXTRA];
    size_t n_log_extra;
    const struct herd_http_work_ops *ops;
    void *work;
    struct herd_http_request *prev, *next;
};

struct herd_http_server {
    struct herd_http_server_params p;
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *sigterm, *sigint, *drain_timer;
    struct herd_deadlines deadlines;
    uint16_t port;
    uint32_t n_conns;
    struct herd_http_request *conns; /* all open connections */
    bool draining, drain_expired;
    uint64_t next_request_id;
    double drain_started_s;
    time_t started_wall;
};

void herd_http_server_default_params(struct herd_http_server_params *p) {
    memset(p, 0, sizeof *p);
    p->host = "127.0.0.1";
    p->port = 8080;
    herd_http_default_limits(&p->limits);
    p->max_connections = 1024;
    p->header_timeout_s = 10;
    p->body_timeout_s = 30;
    p->idle_timeout_s = 60;
    p->write_timeout_s = 30;
    p->drain_timeout_s = 30;
    p->log_component = "http";
    p->hooks.loading = (struct herd_http_refusal){"loading", "loading", "the server is starting"};
    p->hooks.failed = (struct herd_http_refusal){"failed", "failed", "the server failed and is exiting"};
}

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default: return "Status";
    }
}

static void count(struct herd_metric *const *m) {
    if (m) herd_metric_add(*m, 1);
}

static void count_rejection(struct herd_http_server *h, enum herd_http_reject why) {
    if (h->p.metrics) count(&h->p.metrics->rejections[why]);
}

static enum herd_http_app_state app_state(struct herd_http_server *h) {
    return h->p.hooks.state ? h->p.hooks.state(h->p.hooks.app) : HERD_HTTP_APP_READY;
}

/* ----------------------------------------------------------- connections */

static void conn_read(struct herd_http_request *c);

static void conn_free(struct herd_http_request *c) {
    struct herd_http_server *h = c->srv;
    if (c->ops) {
        const struct herd_http_work_ops *ops = c->ops;
        void *work = c->work;
        c->ops = NULL;
        c->work = NULL;
        ops->abort(c, work);
    }
    if (c->wake) event_free(c->wake);
    if (c->deadline) event_free(c->deadline);
    herd_sock_free(c->sock);
    herd_http_parser_cleanup(&c->parser);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    h->n_conns--;
    free(c);
}

size_t herd_http_request_pending_output(const struct herd_http_request *c) { return herd_sock_pending(c->sock); }

static void access_log(struct herd_http_request *c) {
    struct herd_http_server *h = c->srv;
    const int cls = c->status / 100;
    if (h->p.metrics && cls >= 1 && cls <= 5) count(&h->p.metrics->responses[cls - 1]);
    if (h->p.quiet) {
        c->n_log_extra = 0;
        return;
    }
    const double ms = (herd_time_now_s() - c->t_start) * 1e3;
    struct herd_log_field f[4 + HERD_HTTP_LOG_EXTRA] = {HERD_LOG_S("method", c->method), HERD_LOG_S("path", c->path),
                                                        HERD_LOG_I("status", c->status), HERD_LOG_N("duration_ms", ms)};
    memcpy(f + 4, c->log_extra, c->n_log_extra * sizeof *f);
    herd_log(c->status >= 500 ? HERD_LOG_WARN : HERD_LOG_INFO, h->p.log_component, c->request_id, f, 4 + c->n_log_extra,
             "request");
    c->n_log_extra = 0;
}

/* The answer is complete: next request, or close when flushed. */
static void conn_finished(struct herd_http_request *c) {
    if (c->status) access_log(c);
    c->status = 0;
    if (c->keep_alive && !c->srv->draining) {
        c->state = CONN_READING;
        herd_http_parser_reset(&c->parser);
        c->head_started = false;
        herd_deadline_arm(&c->srv->deadlines, c->deadline, c->srv->p.idle_timeout_s);
        herd_sock_set_reading(c->sock, true);
        /* pipelined bytes may already be here */
        if (evbuffer_get_length(herd_sock_input(c->sock))) conn_read(c);
    } else {
        c->state = CONN_CLOSING;
        herd_sock_set_reading(c->sock, false);
        /* all written (conn_flush): closed on the next loop turn, never
         * inside the answer's call, whose caller may still hold c */
        if (!herd_http_request_pending_output(c)) herd_deadline_arm(&c->srv->deadlines, c->deadline, 0);
    }
}

/* Writes what is queued now, not a loop turn later: an answer leaves in
 * one write with no epoll change, and only what the socket does not take
 * waits (see on_drained). */
static void conn_flush(struct herd_http_request *c) { herd_sock_flush(c->sock); }

/* Appends the pieces (NULL ones skipped) to out in one run: the heads of
 * answers and chunks are written per request, and printf's parsing of a
 * format costs more than the copy. */
static void add_parts(struct evbuffer *out, const char *const *part, size_t n) {
    size_t len[16], total = 0;
    for (size_t i = 0; i < n; i++) total += len[i] = part[i] ? strlen(part[i]) : 0;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)total, &v, 1) < 1) return; /* out of memory: the peer sees a cut */
    char *w = v.iov_base;
    for (size_t i = 0; i < n; i++) memcpy(w, part[i] ? part[i] : "", len[i]), w += len[i];
    v.iov_len = total;
    evbuffer_commit_space(out, &v, 1);
}

/* "Connection: close" when this answer ends the connection. */
static const char *closing(const struct herd_http_request *c) {
    return c->keep_alive && !c->srv->draining ? "" : "Connection: close\r\n";
}

/* The head of an answer of len bytes, or (chunked) of a chunked one. */
static void put_head(struct herd_http_request *c, struct evbuffer *out, int status, const char *content_type,
                     bool chunked, size_t len, const char *extra_headers) {
    char code[24], length[24];
    herd_http_fmt_uint(code, (uint64_t)status, 10);
    herd_http_fmt_uint(length, len, 10);
    const char *part[] = {"HTTP/1.1 ",
                          code,
                          " ",
                          reason(status),
                          "\r\nContent-Type: ",
                          content_type,
                          chunked ? "\r\nTransfer-Encoding: chunked" : "\r\nContent-Length: ",
                          chunked ? "" : length,
                          "\r\nX-Request-Id: ",
                          c->request_id,
                          "\r\n",
                          extra_headers,
                          closing(c),
                          "\r\n"};
    add_parts(out, part, sizeof part / sizeof *part);
}

void herd_http_respond(struct herd_http_request *c, int status, const char *content_type, const char *body, size_t len,
                       const char *extra_headers) {
    struct evbuffer *out = herd_sock_output(c->sock);
    c->status = status;
    if (status >= 500) c->keep_alive = false; /* a server error ends the connection; client errors keep it */
    put_head(c, out, status, content_type, false, len, extra_headers);
    /* HEAD and 304 carry no body: len is the length a 200 to GET would have */
    if (strcmp(c->method, "HEAD") != 0 && status != 304) evbuffer_add(out, body, len);
    conn_flush(c);
    conn_finished(c);
}

void herd_http_respond_file(struct herd_http_request *c, int status, const char *content_type, int fd, size_t len,
                            const char *extra_headers) {
    struct evbuffer *out = herd_sock_output(c->sock);
    c->status = status;
    put_head(c, out, status, content_type, false, len, extra_headers);
    /* the kernel copies the file out (sendfile): a 200 MB file is never in memory */
    if (strcmp(c->method, "HEAD") != 0 && len > 0) {
        if (evbuffer_add_file(out, fd, 0, (ev_off_t)len) != 0) {
            close(fd);
            c->keep_alive = false; /* the head promised a body that cannot come */
        }
    } else {
        close(fd);
    }
    conn_flush(c);
    conn_finished(c);
}

void herd_http_respond_json(struct herd_http_request *c, int status, json_t *body) {
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!s) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,"
                                  "\"code\":null}}";
        herd_http_respond(c, 500, "application/json", oom, sizeof oom - 1, NULL);
        return;
    }
    herd_http_respond(c, status, "application/json", s, strlen(s), NULL);
    free(s);
}

static void respond_error_v(struct herd_http_request *c, int status, const char *type, const char *param,
                            const char *code, const char *extra_headers, const char *fmt, va_list ap) {
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    json_t *err = json_pack("{s:s%,s:s,s:s?,s:s?}", "message", msg, strnlen(msg, sizeof msg), "type", type, "param",
                            param, "code", code);
    if (!err) /* a message that is not UTF-8 (from the input): say so instead */
        err = json_pack("{s:s,s:s,s:s?,s:s?}", "message", "invalid request (the message is not UTF-8)", "type", type,
                        "param", param, "code", code);
    json_t *body = json_pack("{s:o}", "error", err);
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!s) {
        herd_http_respond(c, 500, "application/json", "{}", 2, NULL);
        return;
    }
    herd_http_respond(c, status, "application/json", s, strlen(s), extra_headers);
    free(s);
}

void herd_http_respond_error(struct herd_http_request *c, int status, const char *type, const char *param,
                             const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    respond_error_v(c, status, type, param, code, NULL, fmt, ap);
    va_end(ap);
}

void herd_http_respond_error_headers(struct herd_http_request *c, int status, const char *type, const char *param,
                                     const char *code, const char *extra_headers, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    respond_error_v(c, status, type, param, code, extra_headers, fmt, ap);
    va_end(ap);
}

void herd_http_stream_begin(struct herd_http_request *c, int status, const char *content_type,
                            const char *extra_headers) {
    c->status = status;
    c->state = CONN_STREAMING;
    put_head(c, herd_sock_output(c->sock), status, content_type, true, 0, extra_headers);
    conn_flush(c);
}

void herd_http_stream_send(struct herd_http_request *c, const char *data, size_t len) {
    if (!len) return;
    struct evbuffer *out = herd_sock_output(c->sock);
    char size[24];
    const size_t n = herd_http_fmt_uint(size, len, 16);
    memcpy(size + n, "\r\n", 2);
    evbuffer_add(out, size, n + 2);
    evbuffer_add(out, data, len);
    evbuffer_add(out, "\r\n", 2);
    conn_flush(c);
}

void herd_http_stream_end(struct herd_http_request *c) {
    evbuffer_add(herd_sock_output(c->sock), "0\r\n\r\n", 5);
    conn_flush(c);
    conn_finished(c);
}

void herd_http_stream_abort(struct herd_http_request *c) {
    c->keep_alive = false;
    conn_flush(c);
    conn_finished(c);
}

void herd_http_sse_begin(struct herd_http_request *c) {
    herd_http_stream_begin(c, 200, "text/event-stream", "Cache-Control: no-cache\r\n");
}

void herd_http_sse_send(struct herd_http_request *c, const char *data, size_t len) {
    /* one chunk holding the whole event, framed without a copy */
    struct evbuffer *out = herd_sock_output(c->sock);
    char size[32];
    const size_t n = herd_http_fmt_uint(size, len + 8, 16);
    memcpy(size + n, "\r\ndata: ", 8);
    evbuffer_add(out, size, n + 8);
    evbuffer_add(out, data, len);
    evbuffer_add(out, "\n\n\r\n", 4);
    conn_flush(c);
}

/* ------------------------------------------------------- request access */

const char *herd_http_request_method(const struct herd_http_request *c) { return c->method; }
const char *herd_http_request_path(const struct herd_http_request *c) { return c->path; }
const char *herd_http_request_target(const struct herd_http_request *c) { return c->parser.target; }
const char *herd_http_request_path_rest(const struct herd_http_request *c) { return c->path + c->path_rest; }
const char *herd_http_request_id(const struct herd_http_request *c) { return c->request_id; }
static int hex_digit(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

bool herd_http_request_query(const struct herd_http_request *c, const char *name, char *buf, size_t cap) {
    const char *q = strchr(c->parser.target, '?');
    const size_t nlen = strlen(name);
    while (q && *q) {
        q++; /* past '?' or '&' */
        const char *end = q + strcspn(q, "&");
        if ((size_t)(end - q) >= nlen && strncmp(q, name, nlen) == 0 && (q[nlen] == '=' || q + nlen == end)) {
            size_t n = 0;
            for (const char *v = q[nlen] == '=' ? q + nlen + 1 : end; v < end; v++) {
                char ch = *v;
                if (ch == '+') {
                    ch = ' ';
                } else if (ch == '%') {
                    const int hi = v + 2 < end ? hex_digit(v[1]) : -1;
                    const int lo = hi >= 0 ? hex_digit(v[2]) : -1;
                    if (lo < 0) return false;
                    ch = (char)(hi * 16 + lo);
                    v += 2;
                }
                if (!ch || n + 1 >= cap) return false;
                buf[n++] = ch;
            }
            buf[n] = 0;
            return true;
        }
        q = *end ? end : NULL;
    }
    return false;
}

void *herd_http_request_app(const struct herd_http_request *c) { return c->srv->p.hooks.app; }

const char *herd_http_request_header(const struct herd_http_request *c, const char *name) {
    const struct herd_http_header *hd = herd_http_header_get(&c->parser, name);
    return hd ? hd->value : NULL;
}

const struct herd_http_header *herd_http_request_headers(const struct herd_http_request *c, size_t *n) {
    *n = c->parser.n_headers;
    return c->parser.headers;
}

const char *herd_http_request_body(const struct herd_http_request *c, size_t *len) {
    *len = c->parser.body.len;
    return c->parser.body.data ? (const char *)c->parser.body.data : "";
}

void herd_http_request_log(struct herd_http_request *c, const struct herd_log_field *fields, size_t n) {
    for (size_t i = 0; i < n && c->n_log_extra < HERD_HTTP_LOG_EXTRA; i++) c->log_extra[c->n_log_extra++] = fields[i];
}

void herd_http_request_set_work(struct herd_http_request *c, const struct herd_http_work_ops *ops, void *work) {
    c->ops = work ? ops : NULL;
    c->work = ops ? work : NULL;
}

void *herd_http_request_work(const struct herd_http_request *c) { return c->work; }

void herd_http_request_wake(struct herd_http_request *c) { event_active(c->wake, EV_READ, 0); }

/* ---------------------------------------------------------------- routes */

/* API keys are compared in constant time over the longest key, so the
 * time taken says nothing about how much of a key matched. */
static bool key_ok(const struct herd_http_server *h, const char *given) {
    if (!h->p.api_keys || !h->p.api_keys[0]) return true;
    if (!given) return false;
    size_t gl = strlen(given);
    bool ok = false;
    for (const char *const *k = h->p.api_keys; *k; k++) {
        size_t kl = strlen(*k);
        unsigned char diff = (unsigned char)(gl != kl);
        for (size_t i = 0; i < kl; i++) diff |= (unsigned char)((*k)[i] ^ (i < gl ? given[i] : 0));
        ok |= diff == 0;
    }
    return ok;
}

static const char *bearer(const struct herd_http_request *c) {
    const char *v = herd_http_request_header(c, "authorization");
    if (!v) return NULL;
    if (strncasecmp(v, "Bearer ", 7) != 0) return NULL;
    v += 7;
    while (*v == ' ') v++;
    return v;
}

/* "req-<start time, hex>-<count>" (without printf: most clients send no id) */
static void own_request_id(struct herd_http_request *c) {
    char *w = c->request_id; /* 4 + 16 + 1 + 20 + NUL fit its 48 */
    memcpy(w, "req-", 4), w += 4;
    w += herd_http_fmt_uint(w, (uint64_t)c->srv->started_wall, 16);
    *w++ = '-';
    herd_http_fmt_uint(w, ++c->srv->next_request_id, 10);
}

/* The target's path (without its query) into dst[cap], cut to fit. */
static void copy_path(char *dst, size_t cap, const char *target) {
    size_t n = strcspn(target, "?");
    if (n >= cap) n = cap - 1;
    memcpy(dst, target, n);
    dst[n] = 0;
}

/* The request id: the client's X-Request-Id when it is a sane token
 * (letters, digits, . _ -, at most 40), else ours. */
static void set_request_id(struct herd_http_request *c) {
    const struct herd_http_header *hd = herd_http_header_get(&c->parser, "x-request-id");
    if (hd && hd->value_len > 0 && hd->value_len <= 40) {
        bool ok = true;
        for (size_t i = 0; i < hd->value_len; i++) {
            char ch = hd->value[i];
            ok = ok && ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                        ch == '_' || ch == '-');
        }
        if (ok) {
            memcpy(c->request_id, hd->value, hd->value_len);
            c->request_id[hd->value_len] = 0;
            return;
        }
    }
    own_request_id(c);
}

static bool path_matches(const struct herd_http_route *rt, const char *path) {
    if (rt->flags & HERD_HTTP_ROUTE_PREFIX) return strncmp(path, rt->path, strlen(rt->path)) == 0;
    return strcmp(path, rt->path) == 0;
}

static bool method_matches(const struct herd_http_route *rt, const char *method) {
    return strcmp(method, rt->method) == 0 || (strcmp(rt->method, "GET") == 0 && strcmp(method, "HEAD") == 0);
}

/* The body limit of the request whose head was just parsed: its route's
 * (UPLOAD routes take max_upload_bytes), the server's for any other. */
static size_t body_allowed(const struct herd_http_request *c) {
    const struct herd_http_server *h = c->srv;
    char path[sizeof c->path];
    copy_path(path, sizeof path, c->parser.target);
    for (size_t i = 0; i < h->p.n_routes; i++) {
        const struct herd_http_route *rt = &h->p.routes[i];
        /* the upload limit only for a client whose key is good: the key
         * is checked once the body is in, and a body is held in memory, so
         * a client without one gets no more than any other request */
        if (path_matches(rt, path) && method_matches(rt, c->parser.method))
            return (rt->flags & HERD_HTTP_ROUTE_UPLOAD) && h->p.max_upload_bytes && key_ok(h, bearer(c))
                       ? h->p.max_upload_bytes
                       : h->p.limits.max_body_bytes;
    }
    return h->p.limits.max_body_bytes;
}

/* Checks 7 and 8: the JSON body, then the handler. */
static void run_route(struct herd_http_request *c, const struct herd_http_route *rt) {
    struct herd_http_server *h = c->srv;
    c->path_rest = rt->flags & HERD_HTTP_ROUTE_PREFIX ? strlen(rt->path) : strlen(c->path);
    json_t *body = NULL;
    if (rt->flags & HERD_HTTP_ROUTE_JSON_BODY) {
        json_error_t je;
        body = json_loadb((const char *)c->parser.body.data, c->parser.body.len, JSON_REJECT_DUPLICATES, &je);
        if (!body || !json_is_object(body)) {
            count_rejection(h, HERD_HTTP_REJECT_BAD_REQUEST);
            if (!body)
                herd_http_respond_error(c, 400, "invalid_request_error", NULL, "invalid_json",
                                        "the body is not valid JSON: %s (line %d, column %d, byte %d)", je.text,
                                        je.line, je.column, je.position);
            else
                herd_http_respond_error(c, 400, "invalid_request_error", NULL, "invalid_json",
                                        "the body must be a JSON object");
            json_decref(body);
            return;
        }
    }
    /* body is a local: c may be answered, freed or on its next request
     * when the handler returns */
    rt->handler(c, body, rt->arg ? rt->arg : h->p.hooks.app);
    json_decref(body);
}

static void probe_answer(struct herd_http_request *c, int status, const char *what) {
    char body[160];
    int n = snprintf(body, sizeof body, "{\"status\":\"%s\"}", what);
    herd_http_respond(c, status, "application/json", body, (size_t)n < sizeof body ? (size_t)n : sizeof body - 1, NULL);
}

/* A state other than ready, told to a probe or as an error. */
static void refuse(struct herd_http_request *c, const struct herd_http_refusal *why, bool probe) {
    if (probe)
        probe_answer(c, 503, why->probe_status);
    else
        herd_http_respond_error(c, 503, "server_error", NULL, why->code, "%s", why->message);
}

/* A complete request: the checks of http_server.h in order. */
static void handle(struct herd_http_request *c) {
    struct herd_http_server *h = c->srv;
    struct herd_http_parser *p = &c->parser;
    c->t_start = herd_time_now_s();
    c->keep_alive = p->keep_alive;
    const size_t ml = strnlen(p->method, sizeof c->method - 1);
    memcpy(c->method, p->method, ml);
    c->method[ml] = 0;
    copy_path(c->path, sizeof c->path, p->target);
    c->path_rest = strlen(c->path);
    set_request_id(c);
    /* the path's route (any method) and the route that takes this method */
    const struct herd_http_route *on_path = NULL, *route = NULL;
    for (size_t i = 0; i < h->p.n_routes && !route; i++) {
        const struct herd_http_route *rt = &h->p.routes[i];
        if (!path_matches(rt, c->path)) continue;
        if (!on_path) on_path = rt;
        if (method_matches(rt, p->method)) route = rt;
    }
    const struct herd_http_route *about = route ? route : on_path;
    const bool open = about && (about->flags & HERD_HTTP_ROUTE_OPEN);
    if ((!open || h->p.auth_all) && !key_ok(h, bearer(c))) {
        count_rejection(h, HERD_HTTP_REJECT_AUTH);
        herd_http_respond_error(c, 401, "invalid_request_error", NULL, "invalid_api_key",
                                "missing or incorrect API key (send Authorization: Bearer KEY)");
        return;
    }
    if (route && !(route->flags & HERD_HTTP_ROUTE_NEEDS_READY)) {
        run_route(c, route);
        return;
    }
    const enum herd_http_app_state st = app_state(h);
    if (st != HERD_HTTP_APP_READY) {
        const bool probe = st == HERD_HTTP_APP_LOADING && about && (about->flags & HERD_HTTP_ROUTE_PROBE);
        refuse(c, st == HERD_HTTP_APP_LOADING ? &h->p.hooks.loading : &h->p.hooks.failed, probe);
    } else if (h->draining) {
        count_rejection(h, HERD_HTTP_REJECT_DRAINING);
        herd_http_respond_error(c, 503, "server_error", NULL, "draining", "the server is shutting down");
    } else if (route) {
        run_route(c, route);
    } else if (on_path && (on_path->flags & HERD_HTTP_ROUTE_ONLY_METHOD)) {
        herd_http_respond_error(c, 405, "invalid_request_error", NULL, NULL, "use %s for %s", on_path->method, c->path);
    } else {
        herd_http_respond_error(c, 404, "invalid_request_error", NULL, "not_found", "no route for %s %s", p->method,
                                c->path);
    }
}

/* ----------------------------------------------------------- the probes */

void herd_http_livez(struct herd_http_request *c, json_t *body, void *app) {
    (void)body, (void)app;
    probe_answer(c, 200, "ok");
}

/* /health and /readyz: not while loading or failed; /readyz not while draining. */
static void probe(struct herd_http_request *c, bool ready) {
    struct herd_http_server *h = c->srv;
    const enum herd_http_app_state st = app_state(h);
    if (st == HERD_HTTP_APP_LOADING)
        probe_answer(c, 503, h->p.hooks.loading.probe_status);
    else if (st == HERD_HTTP_APP_FAILED)
        probe_answer(c, 503, h->p.hooks.failed.probe_status);
    else if (ready && h->draining)
        probe_answer(c, 503, "draining");
    else
        probe_answer(c, 200, "ok");
}

void herd_http_health(struct herd_http_request *c, json_t *body, void *app) {
    (void)body, (void)app;
    probe(c, false);
}

void herd_http_readyz(struct herd_http_request *c, json_t *body, void *app) {
    (void)body, (void)app;
    probe(c, true);
}

/* ------------------------------------------------------------ I/O events */

/* Parses what arrived; handles a complete request. */
static void conn_read(struct herd_http_request *c) {
    struct evbuffer *in = herd_sock_input(c->sock);
    while (c->state == CONN_READING && evbuffer_get_length(in)) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) break;
        if (!c->head_started) {
            c->head_started = true;
            herd_deadline_arm(&c->srv->deadlines, c->deadline, c->srv->p.header_timeout_s);
        }
        enum herd_http_phase before = c->parser.phase;
        size_t used = herd_http_parse(&c->parser, v.iov_base, v.iov_len);
        evbuffer_drain(in, used);
        if (before == HERD_HTTP_HEAD && c->parser.phase != HERD_HTTP_HEAD && c->parser.phase != HERD_HTTP_ERROR) {
            c->body_limit = body_allowed(c);
            if (c->parser.content_length > c->body_limit) {
                c->parser.phase = HERD_HTTP_ERROR; /* before a 100 Continue invites the body */
                c->parser.error_status = 413;
                c->parser.error = "request body too large";
            } else if (c->parser.phase != HERD_HTTP_DONE) {
                /* an upload gets a second more per MiB (at least 1 MiB/s) */
                const bool upload = c->body_limit > c->srv->p.limits.max_body_bytes;
                herd_deadline_arm(&c->srv->deadlines, c->deadline,
                                  c->srv->p.body_timeout_s +
                                      (upload ? (double)c->parser.content_length / (1 << 20) : 0));
                if (c->parser.expect_continue) {
                    evbuffer_add_printf(herd_sock_output(c->sock), "HTTP/1.1 100 Continue\r\n\r\n");
                    conn_flush(c);
                }
            }
        }
        if (c->parser.phase != HERD_HTTP_HEAD && c->parser.phase != HERD_HTTP_ERROR &&
            c->parser.body.len > c->body_limit) {
            c->parser.phase = HERD_HTTP_ERROR; /* a chunked body past its route's limit */
            c->parser.error_status = 413;
            c->parser.error = "request body too large";
        }
        if (c->parser.phase == HERD_HTTP_ERROR) {
            event_del(c->deadline);
            herd_sock_set_reading(c->sock, false);
            c->keep_alive = false;
            own_request_id(c);
            snprintf(c->method, sizeof c->method, "-");
            snprintf(c->path, sizeof c->path, "-");
            c->t_start = herd_time_now_s();
            count_rejection(c->srv, HERD_HTTP_REJECT_BAD_REQUEST);
            herd_http_respond_error(c, c->parser.error_status, "invalid_request_error", NULL, NULL, "%s",
                                    c->parser.error);
            return;
        }
        if (c->parser.phase == HERD_HTTP_DONE) {
            event_del(c->deadline);
            c->state = CONN_WORKING;
            handle(c);
            return;
        }
        if (!used) break;
    }
}

static void on_read(struct herd_sock *s, void *arg) {
    (void)s;
    conn_read(arg);
}

/* Output that waited is all out: a closing connection closes, a stream
 * paused for a slow reader goes on. */
static void on_drained(struct herd_sock *s, void *arg) {
    (void)s;
    struct herd_http_request *c = arg;
    if (c->state == CONN_CLOSING) {
        conn_free(c);
    } else if (c->state == CONN_STREAMING && c->ops) {
        c->ops->wake(c, c->work); /* resume a stream paused for a slow reader */
    }
}

/* The client closed, a read or write failed, or it read nothing for the
 * write timeout: the connection and its work end. */
static void on_sock_event(struct herd_sock *s, enum herd_sock_event what, int err, void *arg) {
    (void)s, (void)err;
    struct herd_http_request *c = arg;
    if (what == HERD_SOCK_CONNECTED) return;
    if (c->ops) {
        if (c->srv->p.metrics) count(&c->srv->p.metrics->cancellations);
        herd_log(HERD_LOG_INFO, c->srv->p.log_component, c->request_id, NULL, 0, "client went away: request cancelled");
    }
    conn_free(c);
}

static const struct herd_sock_ops sock_ops = {on_read, on_drained, on_sock_event};

static void on_deadline(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct herd_http_request *c = arg;
    if (c->state == CONN_CLOSING) {
        if (!herd_http_request_pending_output(c)) conn_free(c); /* else on_write frees it */
        return;
    }
    if (c->state != CONN_READING) return;
    if (!c->head_started) { /* idle keep-alive connection */
        conn_free(c);
        return;
    }
    herd_sock_set_reading(c->sock, false);
    c->keep_alive = false;
    snprintf(c->method, sizeof c->method, "-");
    snprintf(c->path, sizeof c->path, "-");
    c->t_start = herd_time_now_s();
    herd_http_respond_error(c, 408, "invalid_request_error", NULL, "timeout", "the request did not arrive in time");
}

static void on_wake(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct herd_http_request *c = arg;
    if (c->ops && !(c->state == CONN_STREAMING && herd_http_request_pending_output(c) >= HERD_HTTP_STREAM_HIGH_WATER))
        c->ops->wake(c, c->work);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *addr, int socklen, void *arg) {
    (void)l, (void)addr, (void)socklen;
    struct herd_http_server *h = arg;
    if (h->n_conns >= h->p.max_connections) {
        /* over the cap: a short answer, then the door */
        static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                   "Content-Length: 102\r\nConnection: close\r\n\r\n"
                                   "{\"error\":{\"message\":\"too many connections\",\"type\":\"server_error\","
                                   "\"param\":null,\"code\":\"overloaded\"}}";
        ssize_t w = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
        evutil_closesocket(fd);
        return;
    }
    struct herd_http_request *c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->srv = h;
    c->sock = herd_sock_new(h->base, fd, &sock_ops, c);
    c->deadline = evtimer_new(h->base, on_deadline, c);
    c->wake = event_new(h->base, -1, 0, on_wake, c);
    /* the parser takes the largest body any route takes; each request is
     * held to its own route's limit once its head is known (body_allowed) */
    struct herd_http_limits lim = h->p.limits;
    if (h->p.max_upload_bytes > lim.max_body_bytes) lim.max_body_bytes = h->p.max_upload_bytes;
    herd_http_parser_init(&c->parser, &lim);
    c->next = h->conns;
    if (h->conns) h->conns->prev = c;
    h->conns = c;
    h->n_conns++;
    if (!c->sock || !c->deadline || !c->wake) {
        if (!c->sock) evutil_closesocket(fd);
        conn_free(c);
        return;
    }
    herd_sock_set_write_timeout(c->sock, h->p.write_timeout_s);
    /* reading stays on while a request is worked on (a close is seen at
     * once and cancels it; pipelined bytes wait in the input, at most
     * READ_HIGH_WATER of them); writing only while output waits */
    herd_sock_set_read_limit(c->sock, READ_HIGH_WATER);
    herd_sock_set_reading(c->sock, true);
    c->state = CONN_READING;
    herd_deadline_arm(&c->srv->deadlines, c->deadline, h->p.idle_timeout_s);
}

/* ----------------------------------------------------------------- drain */

static bool busy(const struct herd_http_server *h) {
    for (const struct herd_http_request *c = h->conns; c; c = c->next)
        if (c->state == CONN_WORKING || c->state == CONN_STREAMING ||
            (c->state == CONN_CLOSING && herd_http_request_pending_output(c)))
            return true;
    return false;
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct herd_http_server *h = arg;
    if (!busy(h)) {
        event_base_loopexit(h->base, NULL);
        return;
    }
    /* after a failure the answers are already ended: only flushing remains */
    const bool failed = app_state(h) == HERD_HTTP_APP_FAILED;
    const double limit = failed && h->p.drain_timeout_s > 2 ? 2 : h->p.drain_timeout_s;
    if (herd_time_now_s() - h->drain_started_s > limit && !h->drain_expired) {
        /* time is up: what still runs ends now */
        h->drain_expired = true;
        /* an answer goes out at once, and may end (free) its connection */
        for (struct herd_http_request *c = h->conns, *next; c; c = next) {
            next = c->next;
            if (c->ops) c->ops->cancel(c, c->work);
        }
    }
    if (h->drain_expired && herd_time_now_s() - h->drain_started_s > limit + 2) {
        event_base_loopexit(h->base, NULL);
        return;
    }
    herd_deadline_arm(&h->deadlines, h->drain_timer, 0.05);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    (void)what;
    struct herd_http_server *h = arg;
    if (h->draining) { /* a second signal: stop now */
        herd_log(HERD_LOG_WARN, h->p.log_component, NULL, NULL, 0, "second signal, exiting now");
        event_base_loopbreak(h->base);
        return;
    }
    herd_log(HERD_LOG_INFO, h->p.log_component, NULL, NULL, 0, "%s: draining (up to %.0f s for running requests)",
             sig == SIGTERM ? "SIGTERM" : "SIGINT", h->p.drain_timeout_s);
    herd_http_server_drain(h);
}

void herd_http_server_drain(struct herd_http_server *h) {
    if (h->draining) return;
    h->draining = true;
    if (h->p.hooks.on_drain) h->p.hooks.on_drain(h->p.hooks.app);
    /* the listener stays open: probes see /readyz 503, new work gets 503 */
    h->drain_started_s = herd_time_now_s();
    /* idle keep-alive connections close now */
    for (struct herd_http_request *c = h->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == CONN_READING && !c->head_started) conn_free(c);
    }
    herd_deadline_arm(&h->deadlines, h->drain_timer, 0);
}

bool herd_http_server_draining(const struct herd_http_server *h) { return h->draining; }

void herd_http_server_stop(struct herd_http_server *h) { event_base_loopexit(h->base, NULL); }

/* ------------------------------------------------------------- lifecycle */

enum herd_status herd_http_server_create(const struct herd_http_server_params *p, struct herd_http_server **out,
                                         struct herd_error *err) {
    *out = NULL;
    static bool threads_on;
    if (!threads_on) { /* herd_http_request_wake comes from other threads */
        if (evthread_use_pthreads() != 0) return herd_error_set(err, HERD_E_NOMEM, "libevent threads unavailable");
        threads_on = true;
    }
    struct herd_http_server *h = calloc(1, sizeof *h);
    if (!h) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    h->p = *p;
    /* words left out (params built without herd_http_server_default_params) */
    struct herd_http_server_params d;
    herd_http_server_default_params(&d);
    if (!h->p.log_component) h->p.log_component = d.log_component;
    struct herd_http_refusal *mine[2] = {&h->p.hooks.loading, &h->p.hooks.failed};
    const struct herd_http_refusal *dflt[2] = {&d.hooks.loading, &d.hooks.failed};
    for (int i = 0; i < 2; i++) {
        if (!mine[i]->probe_status) mine[i]->probe_status = dflt[i]->probe_status;
        if (!mine[i]->code) mine[i]->code = dflt[i]->code;
        if (!mine[i]->message) mine[i]->message = dflt[i]->message;
    }
    h->started_wall = time(NULL);
    /* epoll's changelist: an event added and removed within one loop turn
     * (a write's EPOLLOUT, a read paused and resumed) costs no epoll_ctl.
     * Its one hazard, dup()ed descriptors, does not arise here. */
    struct event_config *cfg = event_config_new();
    if (cfg) {
        event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        h->base = event_base_new_with_config(cfg);
        herd_deadlines_init(&h->deadlines, h->base);
        event_config_free(cfg);
    }
    if (!h->base) {
        herd_http_server_destroy(h);
        return herd_error_set(err, HERD_E_NOMEM, "cannot create the event loop");
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    int sl;
    char addr[300];
    snprintf(addr, sizeof addr, strchr(p->host, ':') ? "[%s]:%u" : "%s:%u", p->host, p->port);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, p->host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(p->port);
        sl = (int)sizeof *v4;
    } else if (inet_pton(AF_INET6, p->host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(p->port);
        sl = (int)sizeof *v6;
    } else {
        herd_http_server_destroy(h);
        return herd_error_set(err, HERD_E_INVALID, "--host %s is not an IP address", p->host);
    }
    h->listener = evconnlistener_new_bind(h->base, on_accept, h, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 512,
                                          (struct sockaddr *)&ss, sl);
    if (!h->listener) {
        int e = errno;
        herd_http_server_destroy(h);
        return herd_error_set(err, HERD_E_IO, "cannot listen on %s: %s", addr, strerror(e));
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    getsockname(evconnlistener_get_fd(h->listener), (struct sockaddr *)&bound, &bl);
    h->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    h->drain_timer = evtimer_new(h->base, on_drain_tick, h);
    if (!h->drain_timer) {
        herd_http_server_destroy(h);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    *out = h;
    return HERD_OK;
}

uint16_t herd_http_server_port(const struct herd_http_server *h) { return h->port; }
struct event_base *herd_http_server_base(struct herd_http_server *h) {
    return h->base;
}
uint32_t herd_http_server_connections(const struct herd_http_server *h) { return h->n_conns; }

enum herd_status herd_http_server_run(struct herd_http_server *h, struct herd_error *err) {
    signal(SIGPIPE, SIG_IGN);
    if (!h->sigterm) h->sigterm = evsignal_new(h->base, SIGTERM, on_signal, h);
    if (!h->sigint) h->sigint = evsignal_new(h->base, SIGINT, on_signal, h);
    if (!h->sigterm || !h->sigint || event_add(h->sigterm, NULL) || event_add(h->sigint, NULL))
        return herd_error_set(err, HERD_E_NOMEM, "cannot install signal handlers");
    const bool batched = h->p.batched_io && herd_sock_batch_begin(h->base);
    herd_sock_batch_dispatch(h->base);
    if (batched) herd_sock_batch_end();
    return HERD_OK;
}

void herd_http_server_destroy(struct herd_http_server *h) {
    if (!h) return;
    while (h->conns) conn_free(h->conns);
    if (h->sigterm) event_free(h->sigterm);
    if (h->sigint) event_free(h->sigint);
    if (h->sigterm || h->sigint) {
        /* drained: a late signal must not kill the process mid-teardown
         * (freeing the events restored the default action) */
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
    }
    if (h->drain_timer) event_free(h->drain_timer);
    if (h->listener) evconnlistener_free(h->listener);
    if (h->base) event_base_free(h->base);
    free(h);
}
