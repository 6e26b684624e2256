/* The HTTP/1.1 client (http_client.h): connections on herd_sock
 * (sock.h), pooled per upstream; a call owns one connection from its
 * request to the end of its answer, then gives it back to the pool when
 * the answer was framed and the upstream keeps it alive.
 *
 * Callbacks run from the connection's events with the call marked
 * in_callback, so that a callback may cancel its own call: the cancel is
 * then finished when the callback returns, before the event handler
 * touches the call or its buffers again. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/checked.h"
#include "http/http_client.h"
#include "http/sock.h"

struct client_conn;

struct upstream {
    char host[64]; /* as given, the pool's key with port */
    uint16_t port;
    char host_line[96]; /* "Host: ...\r\n", for every request to it */
    size_t host_line_len;
    struct sockaddr_storage addr;
    int addr_len;
    struct client_conn *idle; /* pooled, most recently used first */
    uint32_t n_idle;
    struct upstream *next;
};

struct client_conn {
    struct herd_http_client *cl;
    struct upstream *up;
    struct herd_sock *sock;
    struct event *pool_timer;    /* closes it after pool_idle_timeout_s unused */
    struct herd_http_call *call; /* NULL while pooled */
    bool connected;
    bool pooled;
    struct client_conn *prev, *next; /* in up->idle while pooled */
};

enum call_phase {
    CALL_CONNECTING, /* a new connection is opening */
    CALL_WAITING,    /* the request is out; the head has not come */
    CALL_BODY,       /* the head came; the body is arriving */
};

struct herd_http_call {
    struct herd_http_client *cl;
    struct upstream *up;
    struct client_conn *conn;
    const struct herd_http_call_ops *ops;
    void *arg;
    char *request; /* [request_len] as sent, kept to send it again */
    size_t request_len;
    bool head_request;
    struct herd_http_resp_parser resp;
    struct event *timer;  /* the connect, head or idle deadline */
    struct event *resume; /* delivers what arrived while paused (made at the first pause) */
    enum call_phase phase;
    bool got_bytes;                     /* a byte of the answer came on this connection */
    bool reused;                        /* sent on a pooled connection */
    bool retried;                       /* already sent again once */
    bool head_given;                    /* on_head was called */
    bool paused;                        /* the caller asked for no body for now */
    int connect_error;                  /* errno of a connect refused at once */
    bool in_callback;                   /* a callback of this call is running */
    bool cancelled;                     /* cancelled during a callback: freed when it returns */
    struct herd_http_call *prev, *next; /* the client's calls in flight */
};

struct herd_http_client {
    struct event_base *base;
    struct herd_http_client_params p;
    struct upstream *upstreams;
    struct herd_http_call *calls;
    struct herd_http_client_stats stats;
    struct herd_deadlines deadlines;
};

void herd_http_client_default_params(struct herd_http_client_params *p) {
    memset(p, 0, sizeof *p);
    p->connect_timeout_s = 5;
    p->head_timeout_s = 300;
    p->idle_timeout_s = 60;
    p->pool_idle_timeout_s = 30;
    p->max_idle_per_upstream = 32;
    herd_http_resp_default_limits(&p->limits);
}

/* ----------------------------------------------------------- connections */

static const struct herd_sock_ops conn_ops;

static void pool_unlink(struct client_conn *k) {
    struct upstream *up = k->up;
    if (k->prev)
        k->prev->next = k->next;
    else
        up->idle = k->next;
    if (k->next) k->next->prev = k->prev;
    k->prev = k->next = NULL;
    k->pooled = false;
    up->n_idle--;
    k->cl->stats.idle--;
}

static void conn_free(struct client_conn *k) {
    if (k->pool_timer) event_free(k->pool_timer);
    herd_sock_free(k->sock);
    free(k);
}

static void conn_close(struct client_conn *k) {
    if (k->pooled) pool_unlink(k);
    conn_free(k);
}

static void on_pool_timeout(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    conn_close(arg);
}

/* An answered connection goes back to the pool, or closes when the pool
 * of its upstream is full. */
static void pool_put(struct client_conn *k) {
    struct upstream *up = k->up;
    k->call = NULL;
    if (up->n_idle >= k->cl->p.max_idle_per_upstream) {
        conn_free(k);
        return;
    }
    k->pooled = true;
    k->next = up->idle;
    if (up->idle) up->idle->prev = k;
    up->idle = k;
    up->n_idle++;
    k->cl->stats.idle++;
    herd_deadline_arm(&k->cl->deadlines, k->pool_timer, k->cl->p.pool_idle_timeout_s);
}

static struct client_conn *pool_take(struct upstream *up) {
    struct client_conn *k = up->idle;
    if (!k) return NULL;
    pool_unlink(k);
    event_del(k->pool_timer);
    return k;
}

static struct client_conn *conn_open(struct herd_http_client *cl, struct upstream *up) {
    struct client_conn *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->cl = cl;
    k->up = up;
    k->sock = herd_sock_new(cl->base, -1, &conn_ops, k);
    k->pool_timer = evtimer_new(cl->base, on_pool_timeout, k);
    if (!k->sock || !k->pool_timer) {
        conn_free(k);
        return NULL;
    }
    cl->stats.connects++;
    return k;
}

/* ----------------------------------------------------------------- calls */

/* Frees a call that is over; its connection is already dealt with. */
static void call_free(struct herd_http_call *call) {
    struct herd_http_client *cl = call->cl;
    if (call->prev)
        call->prev->next = call->next;
    else
        cl->calls = call->next;
    if (call->next) call->next->prev = call->prev;
    cl->stats.calls--;
    if (call->timer) event_free(call->timer);
    if (call->resume) event_free(call->resume);
    herd_http_resp_parser_cleanup(&call->resp);
    free(call->request);
    free(call);
}

/* The connection leaves the call: closed (an answer cut short leaves it
 * unframed), or pooled when the answer is complete and reusable. */
static void call_detach(struct herd_http_call *call, bool reusable) {
    struct client_conn *k = call->conn;
    if (!k) return;
    call->conn = NULL;
    k->call = NULL;
    if (reusable)
        pool_put(k);
    else
        conn_free(k);
}

/* The end of a call: on_done (unless cancelled), then free. */
static void call_finish(struct herd_http_call *call, enum herd_http_call_error e, const char *msg) {
    event_del(call->timer);
    if (!call->cancelled && call->ops->on_done) {
        call->in_callback = true;
        call->ops->on_done(call, e, msg, call->arg);
    }
    call_free(call);
}

static void call_fail(struct herd_http_call *call, enum herd_http_call_error e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void call_fail(struct herd_http_call *call, enum herd_http_call_error e, const char *fmt, ...) {
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    call_detach(call, false);
    call_finish(call, e, msg);
}

/* Runs a callback; false when the call was cancelled in it (it is freed). */
static bool after_callback(struct herd_http_call *call) {
    call->in_callback = false;
    if (!call->cancelled) return true;
    call_detach(call, false);
    call_free(call);
    return false;
}

/* Sends the request on a pooled connection or a new one. */
static bool call_send(struct herd_http_call *call, bool may_reuse) {
    struct herd_http_client *cl = call->cl;
    struct client_conn *k = may_reuse ? pool_take(call->up) : NULL;
    call->reused = k != NULL;
    if (!k) k = conn_open(cl, call->up);
    if (!k) return false;
    k->call = call;
    call->conn = k;
    call->got_bytes = call->head_given = false;
    call->connect_error = 0;
    herd_http_resp_parser_reset(&call->resp, call->head_request);
    if (evbuffer_add(herd_sock_output(k->sock), call->request, call->request_len) != 0) return false;
    if (call->reused) {
        /* out now, not a loop turn later, with no epoll change; an error
         * is met by the socket's write, or the read of the close */
        herd_sock_flush(k->sock);
        cl->stats.reuses++;
        call->phase = CALL_WAITING;
        herd_deadline_arm(&call->cl->deadlines, call->timer, cl->p.head_timeout_s);
        return true;
    }
    call->phase = CALL_CONNECTING;
    herd_deadline_arm(&call->cl->deadlines, call->timer, cl->p.connect_timeout_s);
    /* the callbacks come after the connect: libevent reports some
     * failures (no socket left) from inside it, and a callback must never
     * run from inside herd_http_client_send */
    if (herd_sock_connect(k->sock, (struct sockaddr *)&call->up->addr, (socklen_t)call->up->addr_len) != 0) {
        call->connect_error = errno;
        event_active(call->timer, EV_TIMEOUT, 0); /* reported from the loop, as a refusal would be */
        return true;
    }
    herd_sock_set_reading(k->sock, true); /* once connected; the request goes out then */
    return true;
}

static void on_call_timer(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct herd_http_call *call = arg;
    const struct herd_http_client_params *p = &call->cl->p;
    switch (call->phase) {
    case CALL_CONNECTING:
        if (call->connect_error)
            call_fail(call, HERD_HTTP_CALL_CONNECT, "connect to %s:%u: %s", call->up->host, call->up->port,
                      strerror(call->connect_error));
        else
            call_fail(call, HERD_HTTP_CALL_CONNECT, "connect to %s:%u: no answer in %g s", call->up->host,
                      call->up->port, p->connect_timeout_s);
        break;
    case CALL_WAITING:
        call_fail(call, HERD_HTTP_CALL_TIMEOUT, "%s:%u: no response head in %g s", call->up->host, call->up->port,
                  p->head_timeout_s);
        break;
    case CALL_BODY:
        call_fail(call, HERD_HTTP_CALL_TIMEOUT, "%s:%u: the response stalled for %g s", call->up->host, call->up->port,
                  p->idle_timeout_s);
        break;
    }
}

/* The answer is complete. */
static void call_complete(struct herd_http_call *call) {
    struct client_conn *k = call->conn;
    const bool reusable =
        call->resp.keep_alive && !evbuffer_get_length(herd_sock_input(k->sock)) && !herd_sock_pending(k->sock);
    call_detach(call, reusable);
    call_finish(call, HERD_HTTP_CALL_OK, NULL);
}

/* Parses what arrived for the call and hands it on; stops when paused. */
static void call_read(struct herd_http_call *call) {
    struct evbuffer *in = herd_sock_input(call->conn->sock);
    while (!call->paused && evbuffer_get_length(in)) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) break;
        call->got_bytes = true;
        struct herd_http_span body;
        size_t used = herd_http_resp_parse(&call->resp, v.iov_base, v.iov_len, &body);
        if (call->resp.phase == HERD_HTTP_RESP_ERROR) {
            call_fail(call, HERD_HTTP_CALL_PROTOCOL, "%s:%u: %s", call->up->host, call->up->port, call->resp.error);
            return;
        }
        if (!call->head_given && call->resp.phase != HERD_HTTP_RESP_HEAD) {
            call->head_given = true;
            call->phase = CALL_BODY;
            if (call->ops->on_head) {
                call->in_callback = true;
                call->ops->on_head(call, &call->resp, call->arg);
                if (!after_callback(call)) return;
            }
        }
        if (body.len && call->ops->on_body) {
            call->in_callback = true;
            call->ops->on_body(call, body.data, body.len, call->arg);
            if (!after_callback(call)) return;
        }
        evbuffer_drain(in, used);
        if (call->resp.phase == HERD_HTTP_RESP_DONE) {
            call_complete(call);
            return;
        }
        if (!used) break;
    }
    if (call->phase == CALL_BODY && !call->paused)
        herd_deadline_arm(&call->cl->deadlines, call->timer, call->cl->p.idle_timeout_s);
}

static void on_resume(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct herd_http_call *call = arg;
    if (call->conn && !call->paused) call_read(call);
}

static void conn_on_read(struct herd_sock *s, void *arg) {
    (void)s;
    struct client_conn *k = arg;
    if (!k->call) { /* bytes on a pooled connection answer nothing: drop it */
        conn_close(k);
        return;
    }
    call_read(k->call);
}

static void conn_on_event(struct herd_sock *s, enum herd_sock_event what, int e, void *arg) {
    struct client_conn *k = arg;
    struct herd_http_call *call = k->call;
    if (what == HERD_SOCK_CONNECTED) {
        k->connected = true;
        if (call) {
            call->phase = CALL_WAITING;
            herd_deadline_arm(&call->cl->deadlines, call->timer, k->cl->p.head_timeout_s);
        }
        return;
    }
    if (!call) { /* the upstream closed a pooled connection */
        conn_close(k);
        return;
    }
    const char *host = call->up->host;
    const unsigned port = call->up->port;
    if (!k->connected) {
        call_fail(call, HERD_HTTP_CALL_CONNECT, "connect to %s:%u: %s", host, port, strerror(e));
        return;
    }
    if (call->reused && !call->got_bytes && !call->retried) {
        /* the upstream closed the pooled connection as we sent on it:
         * it never read the request, so send it again on a new one */
        call_detach(call, false);
        call->retried = true;
        call->cl->stats.retries++;
        if (!call_send(call, false)) call_fail(call, HERD_HTTP_CALL_NOMEM, "out of memory");
        return;
    }
    if (what == HERD_SOCK_EOF) {
        /* what arrived before the close was read first (a paused call
         * has bytes left: the close cuts its answer short) */
        herd_http_resp_eof(&call->resp);
        if (call->resp.phase == HERD_HTTP_RESP_DONE && !evbuffer_get_length(herd_sock_input(s))) {
            call_detach(call, false);
            call_finish(call, HERD_HTTP_CALL_OK, NULL);
        } else {
            call_fail(call, HERD_HTTP_CALL_CLOSED, "%s:%u: %s", host, port,
                      call->resp.error ? call->resp.error : "the connection closed before the response ended");
        }
        return;
    }
    call_fail(call, HERD_HTTP_CALL_CLOSED, "%s:%u: %s", host, port, strerror(e));
}

static const struct herd_sock_ops conn_ops = {conn_on_read, NULL, conn_on_event};

/* ------------------------------------------------------------- requests */

static bool is_tchar(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Header lines: each "name: value\r\n", no bare CR or LF, no control bytes. */
static bool headers_ok(const char *h) {
    while (*h) {
        const char *eol = strstr(h, "\r\n");
        if (!eol || eol == h) return false;
        const char *colon = memchr(h, ':', (size_t)(eol - h));
        if (!colon || colon == h) return false;
        for (const char *c = h; c < colon; c++)
            if (!is_tchar((unsigned char)*c)) return false;
        for (const char *c = colon + 1; c < eol; c++)
            if (((unsigned char)*c < ' ' && *c != '\t') || *c == 0x7f) return false;
        h = eol + 2;
    }
    return true;
}

static struct upstream *upstream_get(struct herd_http_client *cl, const char *host, uint16_t port,
                                     struct herd_error *err) {
    for (struct upstream *up = cl->upstreams; up; up = up->next)
        if (up->port == port && strcmp(up->host, host) == 0) return up;
    struct upstream *up = calloc(1, sizeof *up);
    if (!up) return herd_error_set(err, HERD_E_NOMEM, "out of memory"), NULL;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&up->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&up->addr;
    if (strlen(host) >= sizeof up->host) {
        free(up);
        return herd_error_set(err, HERD_E_INVALID, "upstream host '%.40s...' is not an IP address", host), NULL;
    }
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        up->addr_len = (int)sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        up->addr_len = (int)sizeof *v6;
    } else {
        free(up);
        return herd_error_set(err, HERD_E_INVALID, "upstream host '%s' is not an IP address", host), NULL;
    }
    snprintf(up->host, sizeof up->host, "%s", host);
    up->port = port;
    const int hl = snprintf(up->host_line, sizeof up->host_line,
                            up->addr.ss_family == AF_INET6 ? "Host: [%s]:%u\r\n" : "Host: %s:%u\r\n", host, port);
    up->host_line_len = (size_t)hl;
    up->next = cl->upstreams;
    cl->upstreams = up;
    return up;
}

/* The request's bytes: request line, Host, the caller's headers,
 * Content-Length, the blank line, the body. */
static char *serialize(const struct herd_http_client_request *req, const struct upstream *up, size_t *out_len) {
    const bool has_body = req->body_len || strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0 ||
                          strcmp(req->method, "PATCH") == 0;
    char length[48] = "";
    size_t ll = 0;
    if (has_body) {
        memcpy(length, "Content-Length: ", 16);
        ll = 16 + herd_http_fmt_uint(length + 16, req->body_len, 10);
        memcpy(length + ll, "\r\n", 2), ll += 2;
    }
    const char *head = up->host_line;
    const size_t ml = strlen(req->method), tl = strlen(req->target), hl = req->headers ? strlen(req->headers) : 0;
    const size_t nl = up->host_line_len;
    size_t total = 0;
    /* method SP target " HTTP/1.1\r\n" Host headers length "\r\n" body */
    if (!herd_add_size(ml, tl, &total) || !herd_add_size(total, 1 + 11 + 2 + nl + ll, &total) ||
        !herd_add_size(total, hl, &total) || !herd_add_size(total, req->body_len, &total))
        return NULL;
    char *buf = malloc(total);
    if (!buf) return NULL;
    char *w = buf;
    memcpy(w, req->method, ml), w += ml;
    *w++ = ' ';
    memcpy(w, req->target, tl), w += tl;
    memcpy(w, " HTTP/1.1\r\n", 11), w += 11;
    memcpy(w, head, nl), w += nl;
    if (hl) memcpy(w, req->headers, hl), w += hl;
    memcpy(w, length, ll), w += ll;
    memcpy(w, "\r\n", 2), w += 2;
    if (req->body_len) memcpy(w, req->body, req->body_len), w += req->body_len;
    *out_len = (size_t)(w - buf);
    return buf;
}

struct herd_http_call *herd_http_client_send(struct herd_http_client *cl, const struct herd_http_client_request *req,
                                             const struct herd_http_call_ops *ops, void *arg, struct herd_error *err) {
    const size_t ml = req->method ? strlen(req->method) : 0;
    bool ok = ml > 0 && ml <= 16;
    for (size_t i = 0; ok && i < ml; i++) ok = is_tchar((unsigned char)req->method[i]);
    if (!ok) return herd_error_set(err, HERD_E_INVALID, "malformed request method"), NULL;
    ok = req->target && req->target[0];
    for (const char *c = req->target; ok && *c; c++) ok = (unsigned char)*c > ' ' && *c != 0x7f;
    if (!ok) return herd_error_set(err, HERD_E_INVALID, "malformed request target"), NULL;
    if (req->headers && !headers_ok(req->headers))
        return herd_error_set(err, HERD_E_INVALID, "malformed request headers (each line 'name: value' CRLF)"), NULL;
    if (!req->host) return herd_error_set(err, HERD_E_INVALID, "no upstream host"), NULL;
    struct upstream *up = upstream_get(cl, req->host, req->port, err);
    if (!up) return NULL;
    struct herd_http_call *call = calloc(1, sizeof *call);
    if (!call) return herd_error_set(err, HERD_E_NOMEM, "out of memory"), NULL;
    call->cl = cl;
    call->up = up;
    call->ops = ops;
    call->arg = arg;
    call->head_request = strcmp(req->method, "HEAD") == 0;
    herd_http_resp_parser_init(&call->resp, &cl->p.limits);
    call->request = serialize(req, up, &call->request_len);
    call->timer = evtimer_new(cl->base, on_call_timer, call);
    call->next = cl->calls;
    if (cl->calls) cl->calls->prev = call;
    cl->calls = call;
    cl->stats.calls++;
    if (!call->request || !call->timer || !call_send(call, true)) {
        call_detach(call, false);
        call_free(call);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory"), NULL;
    }
    return call;
}

void herd_http_call_cancel(struct herd_http_call *call) {
    if (call->in_callback) {
        call->cancelled = true;
        return;
    }
    call_detach(call, false);
    call_free(call);
}

void herd_http_call_pause(struct herd_http_call *call, bool paused) {
    if (call->paused == paused) return;
    /* most calls never pause: their resume event is made on the first;
     * without memory for it the call goes on unpaused */
    if (paused && !call->resume && !(call->resume = event_new(call->cl->base, -1, 0, on_resume, call))) return;
    call->paused = paused;
    if (!call->conn) return;
    if (paused) {
        herd_sock_set_reading(call->conn->sock, false);
        if (call->phase == CALL_BODY) event_del(call->timer);
    } else {
        herd_sock_set_reading(call->conn->sock, true);
        if (call->phase == CALL_BODY) herd_deadline_arm(&call->cl->deadlines, call->timer, call->cl->p.idle_timeout_s);
        event_active(call->resume, EV_READ, 0); /* what is buffered, on the loop */
    }
}

/* ------------------------------------------------------------- lifecycle */

enum herd_status herd_http_client_create(struct event_base *base, const struct herd_http_client_params *p,
                                         struct herd_http_client **out, struct herd_error *err) {
    *out = NULL;
    struct herd_http_client *cl = calloc(1, sizeof *cl);
    if (!cl) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    cl->base = base;
    herd_deadlines_init(&cl->deadlines, base);
    cl->p = *p;
    *out = cl;
    return HERD_OK;
}

void herd_http_client_destroy(struct herd_http_client *cl) {
    if (!cl) return;
    while (cl->calls) {
        struct herd_http_call *call = cl->calls;
        call_detach(call, false);
        call_free(call);
    }
    for (struct upstream *up = cl->upstreams, *next; up; up = next) {
        next = up->next;
        while (up->idle) conn_close(up->idle);
        free(up);
    }
    free(cl);
}

void herd_http_client_stats(const struct herd_http_client *cl, struct herd_http_client_stats *out) { *out = cl->stats; }
