/* The HTTP side of `herd serve` (server.h): connections on libevent
 * bufferevents, HTTP/1.1 via http1.c, limits and deadlines, API keys,
 * routing, health and metrics endpoints, the access log, and the drain on
 * SIGTERM / SIGINT. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/thread.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/timing.h"
#include "server/server_internal.h"

/* Output a streaming client may leave unread before we stop pulling events
 * for it (the scheduler keeps the rest in the request, itself bounded). */
#define STREAM_HIGH_WATER ((size_t)1 << 20)

void herd_server_default_params(struct herd_server_params *p) {
    memset(p, 0, sizeof *p);
    p->host = "127.0.0.1";
    p->port = 8080;
    herd_http_default_limits(&p->http);
    p->max_connections = 1024;
    p->header_timeout_s = 10;
    p->body_timeout_s = 30;
    p->idle_timeout_s = 60;
    p->write_timeout_s = 30;
    p->drain_timeout_s = 30;
    p->model_name = "default";
    p->max_n = 16;
    p->max_tokens_limit = 1u << 20;
    p->max_stops = 4;
    p->max_stop_bytes = 256;
    p->max_logit_bias = 300;
    p->max_messages = 4096;
    p->vllm_metrics = true;
}

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
    }
}

static void arm(struct event *ev, double seconds) {
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
    event_add(ev, &tv);
}

/* ----------------------------------------------------------- connections */

static void conn_read(struct conn *c);

static void conn_free(struct conn *c) {
    struct herd_server *s = c->srv;
    if (c->call) api_abort(c);
    if (c->wake) event_free(c->wake);
    if (c->deadline) event_free(c->deadline);
    if (c->bev) bufferevent_free(c->bev);
    herd_http_parser_cleanup(&c->parser);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_conns--;
    free(c);
}

size_t conn_pending_output(const struct conn *c) { return evbuffer_get_length(bufferevent_get_output(c->bev)); }

static void access_log(struct conn *c) {
    struct herd_server *s = c->srv;
    server_count_response(s, c->status);
    if (s->p.quiet) return;
    const double ms = (herd_time_now_s() - c->t_start) * 1e3;
    struct herd_log_field f[9] = {HERD_LOG_S("method", c->method), HERD_LOG_S("path", c->path),
                                  HERD_LOG_I("status", c->status), HERD_LOG_N("duration_ms", ms)};
    size_t n = 4;
    if (c->have_usage) {
        f[n++] = HERD_LOG_I("prompt_tokens", c->log_prompt_tokens);
        f[n++] = HERD_LOG_I("cached_tokens", c->log_cached_tokens);
        f[n++] = HERD_LOG_I("completion_tokens", c->log_completion_tokens);
        f[n++] = HERD_LOG_N("queue_ms", c->log_queue_ms);
        f[n++] = HERD_LOG_N("ttft_ms", c->log_ttft_ms);
    }
    herd_log(c->status >= 500 ? HERD_LOG_WARN : HERD_LOG_INFO, "serve", c->request_id, f, n, "request");
    c->have_usage = false;
}

/* The response is complete: next request, or close when flushed. */
static void conn_finished(struct conn *c) {
    if (c->status) access_log(c);
    c->status = 0;
    if (c->keep_alive && !c->srv->draining) {
        c->state = CONN_READING;
        herd_http_parser_reset(&c->parser);
        c->head_started = false;
        arm(c->deadline, c->srv->p.idle_timeout_s);
        bufferevent_enable(c->bev, EV_READ);
        /* pipelined bytes may already be here */
        if (evbuffer_get_length(bufferevent_get_input(c->bev))) conn_read(c);
    } else {
        c->state = CONN_CLOSING;
        bufferevent_disable(c->bev, EV_READ);
        if (!conn_pending_output(c)) conn_free(c);
    }
}

void conn_respond(struct conn *c, int status, const char *content_type, const char *body, size_t len,
                  const char *extra_headers) {
    struct evbuffer *out = bufferevent_get_output(c->bev);
    c->status = status;
    if (status >= 500) c->keep_alive = false; /* a server error ends the connection; client errors keep it */
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nX-Request-Id: %s\r\n%s%s\r\n",
                        status, reason(status), content_type, len, c->request_id, extra_headers ? extra_headers : "",
                        c->keep_alive && !c->srv->draining ? "" : "Connection: close\r\n");
    if (strcmp(c->method, "HEAD") != 0) evbuffer_add(out, body, len);
    conn_finished(c);
}

void conn_respond_json(struct conn *c, int status, json_t *body) {
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!s) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,"
                                  "\"code\":null}}";
        conn_respond(c, 500, "application/json", oom, sizeof oom - 1, NULL);
        return;
    }
    conn_respond(c, status, "application/json", s, strlen(s), NULL);
    free(s);
}

static void respond_error_v(struct conn *c, int status, const char *type, const char *param, const char *code,
                            const char *extra_headers, const char *fmt, va_list ap) {
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
        conn_respond(c, 500, "application/json", "{}", 2, NULL);
        return;
    }
    conn_respond(c, status, "application/json", s, strlen(s), extra_headers);
    free(s);
}

void conn_respond_error(struct conn *c, int status, const char *type, const char *param, const char *code,
                        const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    respond_error_v(c, status, type, param, code, NULL, fmt, ap);
    va_end(ap);
}

static void respond_error_headers(struct conn *c, int status, const char *type, const char *code, const char *headers,
                                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void respond_error_headers(struct conn *c, int status, const char *type, const char *code, const char *headers,
                                  const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    respond_error_v(c, status, type, NULL, code, headers, fmt, ap);
    va_end(ap);
}

void conn_stream_begin(struct conn *c) {
    c->status = 200;
    c->state = CONN_STREAMING;
    evbuffer_add_printf(bufferevent_get_output(c->bev),
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                        "Transfer-Encoding: chunked\r\nX-Request-Id: %s\r\n%s\r\n",
                        c->request_id, c->keep_alive && !c->srv->draining ? "" : "Connection: close\r\n");
}

void conn_stream_send(struct conn *c, const char *data, size_t len) {
    if (!len) return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "%zx\r\n", len);
    evbuffer_add(out, data, len);
    evbuffer_add(out, "\r\n", 2);
}

void conn_stream_end(struct conn *c) {
    evbuffer_add(bufferevent_get_output(c->bev), "0\r\n\r\n", 5);
    conn_finished(c);
}

/* ---------------------------------------------------------------- routes */

/* API keys are compared in constant time over the longest key, so the
 * time taken says nothing about how much of a key matched. */
static bool key_ok(const struct herd_server *s, const char *given) {
    if (!s->p.api_keys || !s->p.api_keys[0]) return true;
    if (!given) return false;
    size_t gl = strlen(given);
    bool ok = false;
    for (const char *const *k = s->p.api_keys; *k; k++) {
        size_t kl = strlen(*k);
        unsigned char diff = (unsigned char)(gl != kl);
        for (size_t i = 0; i < kl; i++) diff |= (unsigned char)((*k)[i] ^ (i < gl ? given[i] : 0));
        ok |= diff == 0;
    }
    return ok;
}

static const char *bearer(const struct conn *c) {
    const struct herd_http_header *h = herd_http_header_get(&c->parser, "authorization");
    if (!h) return NULL;
    const char *v = h->value;
    if (strncasecmp(v, "Bearer ", 7) != 0) return NULL;
    v += 7;
    while (*v == ' ') v++;
    return v;
}

/* The request id: the client's X-Request-Id when it is a sane token
 * (letters, digits, . _ -, at most 40), else ours. */
static void set_request_id(struct conn *c) {
    const struct herd_http_header *h = herd_http_header_get(&c->parser, "x-request-id");
    if (h && h->value_len > 0 && h->value_len <= 40) {
        bool ok = true;
        for (size_t i = 0; i < h->value_len; i++) {
            char ch = h->value[i];
            ok = ok && ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                        ch == '_' || ch == '-');
        }
        if (ok) {
            memcpy(c->request_id, h->value, h->value_len);
            c->request_id[h->value_len] = 0;
            return;
        }
    }
    snprintf(c->request_id, sizeof c->request_id, "req-%llx-%llu", (unsigned long long)c->srv->started_wall,
             (unsigned long long)++c->srv->next_request_id);
}

static void start_drain(struct herd_server *s);

/* The scheduler stopped on an engine failure: once seen, the server stops
 * being ready, refuses work, lets the failed answers go out and exits
 * (herd_server_run returns the failure; herd serve exits 1 for its
 * supervisor to restart it). Checked on every probe and every 100 ms. */
static bool engine_failed(struct herd_server *s) {
    if (s->engine_failed) return true;
    char msg[300];
    if (!s->m.sched || !herd_sched_failed(s->m.sched, msg, sizeof msg)) return false;
    s->engine_failed = true;
    herd_log(HERD_LOG_ERROR, "serve", NULL, NULL, 0, "%s; not ready, exiting", msg);
    start_drain(s);
    return true;
}

/* Half a second after the last connection closed, free heap memory goes
 * back to the kernel once: a burst (a full queue, a thousand connections)
 * leaves the allocator's free pages resident otherwise, and resident memory
 * is what operators and the soak test watch (measured: RSS rose ~5 MiB over
 * the first minutes of a soak at 80 % load and stayed there). */
#define IDLE_TRIM_S 0.5

static void trim_when_idle(struct herd_server *s) {
    if (s->n_conns > 0) {
        s->idle_since_s = 0;
        s->trimmed = false;
        return;
    }
    const double now = herd_time_now_s();
    if (s->idle_since_s == 0) s->idle_since_s = now;
    if (s->trimmed || now - s->idle_since_s < IDLE_TRIM_S) return;
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
    s->trimmed = true;
}

static void on_watch(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct herd_server *s = arg;
    if (engine_failed(s)) return;
    trim_when_idle(s);
    arm(s->watch, 0.1);
}

static void handle(struct conn *c) {
    struct herd_server *s = c->srv;
    struct herd_http_parser *p = &c->parser;
    c->t_start = herd_time_now_s();
    c->keep_alive = p->keep_alive;
    snprintf(c->method, sizeof c->method, "%s", p->method);
    /* the path without the query */
    size_t plen = strcspn(p->target, "?");
    snprintf(c->path, sizeof c->path, "%.*s", (int)(plen < sizeof c->path ? plen : sizeof c->path - 1), p->target);
    set_request_id(c);
    const char *path = c->path;
    bool get = strcmp(p->method, "GET") == 0 || strcmp(p->method, "HEAD") == 0;
    bool post = strcmp(p->method, "POST") == 0;
    bool open_path = strcmp(path, "/health") == 0 || strcmp(path, "/livez") == 0 || strcmp(path, "/readyz") == 0 ||
                     strcmp(path, "/metrics") == 0;
    if ((!open_path || s->p.auth_all) && !key_ok(s, bearer(c))) {
        server_count_rejection(s, SERVER_REJECT_AUTH);
        conn_respond_error(c, 401, "invalid_request_error", NULL, "invalid_api_key",
                           "missing or incorrect API key (send Authorization: Bearer KEY)");
        return;
    }
    if (strcmp(path, "/livez") == 0 && get) {
        conn_respond(c, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    } else if (!s->m.sched && strcmp(path, "/metrics") != 0) {
        if (strcmp(path, "/health") == 0 || strcmp(path, "/readyz") == 0)
            conn_respond(c, 503, "application/json", "{\"status\":\"loading\"}", 20, NULL);
        else
            conn_respond_error(c, 503, "server_error", NULL, "loading", "the model is still loading");
    } else if ((strcmp(path, "/health") == 0 || strcmp(path, "/readyz") == 0) && get && engine_failed(s)) {
        conn_respond(c, 503, "application/json", "{\"status\":\"engine failed\"}", 26, NULL);
    } else if ((strcmp(path, "/health") == 0 || strcmp(path, "/readyz") == 0) && get) {
        if (s->draining && strcmp(path, "/readyz") == 0)
            conn_respond(c, 503, "application/json", "{\"status\":\"draining\"}", 21, NULL);
        else
            conn_respond(c, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    } else if (strcmp(path, "/metrics") == 0 && get) {
        server_metrics_respond(c);
    } else if (engine_failed(s)) {
        conn_respond_error(c, 503, "server_error", NULL, "engine_failed", "the engine failed; the server is exiting");
    } else if (s->draining) {
        server_count_rejection(s, SERVER_REJECT_DRAINING);
        conn_respond_error(c, 503, "server_error", NULL, "draining", "the server is shutting down");
    } else if ((strcmp(path, "/v1/models") == 0 || strncmp(path, "/v1/models/", 11) == 0) && get) {
        api_models(c, path[10] == '/' ? path + 11 : NULL);
    } else if (strcmp(path, "/v1/chat/completions") == 0 || strcmp(path, "/v1/completions") == 0 ||
               strcmp(path, "/tokenize") == 0 || strcmp(path, "/detokenize") == 0) {
        if (!post) {
            conn_respond_error(c, 405, "invalid_request_error", NULL, NULL, "use POST for %s", path);
            return;
        }
        json_error_t je;
        json_t *body = json_loadb((const char *)p->body.data, p->body.len, JSON_REJECT_DUPLICATES, &je);
        if (!body || !json_is_object(body)) {
            server_count_rejection(s, SERVER_REJECT_BAD_REQUEST);
            if (!body)
                conn_respond_error(c, 400, "invalid_request_error", NULL, "invalid_json",
                                   "the body is not valid JSON: %s (line %d, column %d, byte %d)", je.text, je.line,
                                   je.column, je.position);
            else
                conn_respond_error(c, 400, "invalid_request_error", NULL, "invalid_json",
                                   "the body must be a JSON object");
            json_decref(body);
            return;
        }
        if (strcmp(path, "/v1/chat/completions") == 0)
            api_chat_completions(c, body);
        else if (strcmp(path, "/v1/completions") == 0)
            api_completions(c, body);
        else if (strcmp(path, "/tokenize") == 0)
            api_tokenize(c, body);
        else
            api_detokenize(c, body);
        json_decref(body);
    } else {
        conn_respond_error(c, 404, "invalid_request_error", NULL, "not_found", "no route for %s %s", p->method, path);
    }
}

/* Parses what arrived; handles a complete request. */
static void conn_read(struct conn *c) {
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (c->state == CONN_READING && evbuffer_get_length(in)) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) break;
        if (!c->head_started) {
            c->head_started = true;
            arm(c->deadline, c->srv->p.header_timeout_s);
        }
        enum herd_http_phase before = c->parser.phase;
        size_t used = herd_http_parse(&c->parser, v.iov_base, v.iov_len);
        evbuffer_drain(in, used);
        if (before == HERD_HTTP_HEAD && c->parser.phase != HERD_HTTP_HEAD && c->parser.phase != HERD_HTTP_ERROR &&
            c->parser.phase != HERD_HTTP_DONE) {
            arm(c->deadline, c->srv->p.body_timeout_s);
            if (c->parser.expect_continue)
                evbuffer_add_printf(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n");
        }
        if (c->parser.phase == HERD_HTTP_ERROR) {
            event_del(c->deadline);
            bufferevent_disable(c->bev, EV_READ);
            c->keep_alive = false;
            snprintf(c->request_id, sizeof c->request_id, "req-%llx-%llu", (unsigned long long)c->srv->started_wall,
                     (unsigned long long)++c->srv->next_request_id);
            snprintf(c->method, sizeof c->method, "-");
            snprintf(c->path, sizeof c->path, "-");
            c->t_start = herd_time_now_s();
            server_count_rejection(c->srv, SERVER_REJECT_BAD_REQUEST);
            conn_respond_error(c, c->parser.error_status,
                               c->parser.error_status == 413 ? "invalid_request_error" : "invalid_request_error", NULL,
                               NULL, "%s", c->parser.error);
            return;
        }
        if (c->parser.phase == HERD_HTTP_DONE) {
            event_del(c->deadline);
            bufferevent_disable(c->bev, EV_READ);
            c->state = CONN_WORKING;
            handle(c);
            return;
        }
        if (!used) break;
    }
}

static void on_read(struct bufferevent *bev, void *arg) {
    (void)bev;
    conn_read(arg);
}

static void on_write(struct bufferevent *bev, void *arg) {
    (void)bev;
    struct conn *c = arg;
    if (c->state == CONN_CLOSING && !conn_pending_output(c)) {
        conn_free(c);
    } else if (c->state == CONN_STREAMING && c->call && conn_pending_output(c) < STREAM_HIGH_WATER / 2) {
        api_on_wake(c); /* resume a stream paused for a slow reader */
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
    (void)bev;
    struct conn *c = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        if (c->call) {
            server_count_cancellation(c->srv);
            herd_log(HERD_LOG_INFO, "serve", c->request_id, NULL, 0, "client went away: request cancelled");
        }
        conn_free(c);
    }
}

static void on_deadline(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct conn *c = arg;
    if (c->state != CONN_READING) return;
    if (!c->head_started) { /* idle keep-alive connection */
        conn_free(c);
        return;
    }
    bufferevent_disable(c->bev, EV_READ);
    c->keep_alive = false;
    snprintf(c->method, sizeof c->method, "-");
    snprintf(c->path, sizeof c->path, "-");
    c->t_start = herd_time_now_s();
    conn_respond_error(c, 408, "invalid_request_error", NULL, "timeout", "the request did not arrive in time");
}

static void on_wake(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct conn *c = arg;
    if (c->call && !(c->state == CONN_STREAMING && conn_pending_output(c) >= STREAM_HIGH_WATER)) api_on_wake(c);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *addr, int socklen, void *arg) {
    (void)l, (void)addr, (void)socklen;
    struct herd_server *s = arg;
    if (s->n_conns >= s->p.max_connections) {
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
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->srv = s;
    c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->deadline = evtimer_new(s->base, on_deadline, c);
    c->wake = event_new(s->base, -1, 0, on_wake, c);
    herd_http_parser_init(&c->parser, &s->p.http);
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    if (!c->bev || !c->deadline || !c->wake) {
        if (!c->bev) evutil_closesocket(fd);
        conn_free(c);
        return;
    }
    struct timeval wt = {(time_t)s->p.write_timeout_s, 0};
    bufferevent_set_timeouts(c->bev, NULL, &wt);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->state = CONN_READING;
    arm(c->deadline, s->p.idle_timeout_s);
}

/* ----------------------------------------------------------------- drain */

static bool busy(const struct herd_server *s) {
    for (const struct conn *c = s->conns; c; c = c->next)
        if (c->state == CONN_WORKING || c->state == CONN_STREAMING ||
            (c->state == CONN_CLOSING && conn_pending_output(c)))
            return true;
    return false;
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct herd_server *s = arg;
    if (!busy(s)) {
        event_base_loopexit(s->base, NULL);
        return;
    }
    /* after an engine failure the answers are already ended: only flushing remains */
    const double limit = s->engine_failed && s->p.drain_timeout_s > 2 ? 2 : s->p.drain_timeout_s;
    if (herd_time_now_s() - s->drain_started_s > limit && !s->drain_expired) {
        /* time is up: what still runs ends now (finish_reason "abort") */
        s->drain_expired = true;
        for (struct conn *c = s->conns; c; c = c->next)
            if (c->call) api_cancel(c);
    }
    if (s->drain_expired && herd_time_now_s() - s->drain_started_s > limit + 2) {
        event_base_loopexit(s->base, NULL);
        return;
    }
    arm(s->drain_timer, 0.05);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    (void)what;
    struct herd_server *s = arg;
    if (s->draining) { /* a second signal: stop now */
        herd_log(HERD_LOG_WARN, "serve", NULL, NULL, 0, "second signal, exiting now");
        event_base_loopbreak(s->base);
        return;
    }
    herd_log(HERD_LOG_INFO, "serve", NULL, NULL, 0, "%s: draining (up to %.0f s for running requests)",
             sig == SIGTERM ? "SIGTERM" : "SIGINT", s->p.drain_timeout_s);
    start_drain(s);
}

static void start_drain(struct herd_server *s) {
    if (s->draining) return;
    s->draining = true;
    if (s->m.sched) herd_sched_drain(s->m.sched);
    /* the listener stays open: probes see /readyz 503, new work gets 503 */
    s->drain_started_s = herd_time_now_s();
    /* idle keep-alive connections close now */
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == CONN_READING && !c->head_started) conn_free(c);
    }
    arm(s->drain_timer, 0);
}

/* ------------------------------------------------------------- lifecycle */

static void on_loaded(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct herd_server *s = arg;
    pthread_mutex_lock(&s->load_lock);
    bool ready = s->loaded_ready && !s->m.sched;
    if (ready) s->m = s->loaded;
    bool failed = s->load_failed;
    pthread_mutex_unlock(&s->load_lock);
    if (ready) {
        server_metrics_model_loaded(s);
        arm(s->watch, 0.1);
    }
    if (failed) {
        event_base_loopexit(s->base, NULL);
        return;
    }
    if (s->draining && s->m.sched) herd_sched_drain(s->m.sched);
}

void herd_server_set_model(struct herd_server *s, const struct herd_server_model *m) {
    pthread_mutex_lock(&s->load_lock);
    s->loaded = *m;
    s->loaded_ready = true;
    pthread_mutex_unlock(&s->load_lock);
    event_active(s->load_event, EV_READ, 0);
}

void herd_server_load_failed(struct herd_server *s, const char *msg) {
    pthread_mutex_lock(&s->load_lock);
    s->load_failed = true;
    snprintf(s->load_error, sizeof s->load_error, "%s", msg);
    pthread_mutex_unlock(&s->load_lock);
    event_active(s->load_event, EV_READ, 0);
}

enum herd_status herd_server_create(const struct herd_server_params *p, const struct herd_server_model *m,
                                    struct herd_server **out, struct herd_error *err) {
    *out = NULL;
    static bool threads_on;
    if (!threads_on) { /* the scheduler thread wakes connections with event_active */
        if (evthread_use_pthreads() != 0) return herd_error_set(err, HERD_E_NOMEM, "libevent threads unavailable");
        threads_on = true;
    }
    struct herd_server *s = calloc(1, sizeof *s);
    if (!s) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    s->p = *p;
    if (m) s->m = *m;
    pthread_mutex_init(&s->load_lock, NULL);
    s->started_wall = time(NULL);
    if (!server_metrics_init(s)) {
        pthread_mutex_destroy(&s->load_lock);
        free(s);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    if (m) server_metrics_model_loaded(s);
    s->base = event_base_new();
    if (!s->base) {
        herd_server_destroy(s);
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
        herd_server_destroy(s);
        return herd_error_set(err, HERD_E_INVALID, "--host %s is not an IP address", p->host);
    }
    s->listener = evconnlistener_new_bind(s->base, on_accept, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 512,
                                          (struct sockaddr *)&ss, sl);
    if (!s->listener) {
        int e = errno;
        herd_server_destroy(s);
        return herd_error_set(err, HERD_E_IO, "cannot listen on %s: %s", addr, strerror(e));
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    getsockname(evconnlistener_get_fd(s->listener), (struct sockaddr *)&bound, &bl);
    s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    s->drain_timer = evtimer_new(s->base, on_drain_tick, s);
    s->load_event = event_new(s->base, -1, 0, on_loaded, s);
    s->watch = evtimer_new(s->base, on_watch, s);
    if (!s->drain_timer || !s->load_event || !s->watch) {
        herd_server_destroy(s);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    *out = s;
    return HERD_OK;
}

uint16_t herd_server_port(const struct herd_server *s) { return s->port; }

enum herd_status herd_server_run(struct herd_server *s, struct herd_error *err) {
    signal(SIGPIPE, SIG_IGN);
    s->sigterm = evsignal_new(s->base, SIGTERM, on_signal, s);
    s->sigint = evsignal_new(s->base, SIGINT, on_signal, s);
    if (!s->sigterm || !s->sigint || event_add(s->sigterm, NULL) || event_add(s->sigint, NULL))
        return herd_error_set(err, HERD_E_NOMEM, "cannot install signal handlers");
    if (s->m.sched) arm(s->watch, 0.1);
    event_base_dispatch(s->base);
    pthread_mutex_lock(&s->load_lock);
    bool failed = s->load_failed;
    pthread_mutex_unlock(&s->load_lock);
    if (failed) return herd_error_set(err, HERD_E_IO, "%s", s->load_error);
    if (s->engine_failed) {
        char msg[300] = "the engine failed";
        herd_sched_failed(s->m.sched, msg, sizeof msg);
        return herd_error_set(err, HERD_E_IO, "%s", msg);
    }
    return HERD_OK;
}

void herd_server_destroy(struct herd_server *s) {
    if (!s) return;
    while (s->conns) conn_free(s->conns);
    if (s->sigterm) event_free(s->sigterm);
    if (s->sigint) event_free(s->sigint);
    if (s->sigterm || s->sigint) {
        /* drained: a late signal must not kill the process mid-teardown
         * (freeing the events restored the default action) */
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
    }
    if (s->drain_timer) event_free(s->drain_timer);
    if (s->load_event) event_free(s->load_event);
    if (s->watch) event_free(s->watch);
    if (s->listener) evconnlistener_free(s->listener);
    if (s->base) event_base_free(s->base);
    pthread_mutex_destroy(&s->load_lock);
    server_metrics_destroy(s);
    free(s);
}

const struct herd_sched_metrics *herd_server_sched_metrics(const struct herd_server *s) { return &s->metrics.sched; }

void server_respond_queue_full(struct conn *c, const char *msg) {
    struct herd_sched_status st = {0};
    herd_sched_status(c->srv->m.sched, &st);
    /* a rough wait: the queue ahead, each request taking a few hundred
     * steps spread over the running slots */
    double per_req = st.median_step_s > 0 ? st.median_step_s * 256 : 1;
    unsigned secs = (unsigned)(1 + st.waiting * per_req / (st.running ? st.running : 1));
    if (secs > 120) secs = 120;
    char hdr[64];
    snprintf(hdr, sizeof hdr, "Retry-After: %u\r\n", secs);
    server_count_rejection(c->srv, SERVER_REJECT_QUEUE_FULL);
    respond_error_headers(c, 429, "rate_limit_exceeded", "queue_full", hdr, "%s", msg);
}
