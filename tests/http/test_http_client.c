/* The HTTP/1.1 client against the real herd HTTP server in this process
 * on 127.0.0.1 (same event loop): keep-alive reuse, bodies, an SSE stream
 * relayed piece by piece, cancellation reaching the server, pause and
 * resume, head and idle timeouts; and against a scripted raw listener for
 * what a well-behaved server never does: closing mid-body, bodies until
 * close, broken framing, closing a pooled connection as a request goes
 * out (retried once). Every wait is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <signal.h>

#include "base/timing.h"
#include "http/http_client.h"
#include "http/http_server.h"
#include "test_util.h"

/* ------------------------------------------------- the server under test */

struct fixture {
    struct herd_http_server *srv;
    struct event_base *base;
    struct herd_http_client *cl;
    uint16_t port;
};

static struct fixture g;

static int g_aborts; /* server-side work aborted because its client went away */

static void hello(struct herd_http_request *r, json_t *body, void *app) {
    (void)body, (void)app;
    herd_http_respond(r, 200, "text/plain", "hello", 5, NULL);
}

static void echo(struct herd_http_request *r, json_t *body, void *app) {
    (void)body, (void)app;
    size_t n;
    const char *b = herd_http_request_body(r, &n);
    herd_http_respond(r, 200, "application/octet-stream", b, n, NULL);
}

/* GET /sse?n=K: K events 2 ms apart, then [DONE]; /stall: one event, then
 * nothing; /never: no answer at all. */
struct work {
    struct herd_http_request *r;
    struct event *tick;
    int left, sent;
};

static void work_free(struct work *w) {
    event_free(w->tick);
    free(w);
}

static void noop_wake(struct herd_http_request *r, void *work) { (void)r, (void)work; }
static void work_cancel(struct herd_http_request *r, void *work) { (void)r, (void)work; }
static void work_abort(struct herd_http_request *r, void *work) {
    (void)r;
    g_aborts++;
    work_free(work);
}
static const struct herd_http_work_ops work_ops = {noop_wake, work_cancel, work_abort};

static void arm_ms(struct event *ev, int ms) {
    struct timeval tv = {0, ms * 1000};
    event_add(ev, &tv);
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct work *w = arg;
    if (w->left < 0) return; /* /stall */
    if (w->left-- > 0) {
        char ev[32];
        int n = snprintf(ev, sizeof ev, "%d", w->sent++);
        herd_http_sse_send(w->r, ev, (size_t)n);
        arm_ms(w->tick, 2);
        return;
    }
    struct herd_http_request *r = w->r;
    herd_http_request_set_work(r, NULL, NULL);
    work_free(w);
    herd_http_sse_send(r, "[DONE]", 6);
    herd_http_stream_end(r);
}

static struct work *work_new(struct herd_http_request *r, int left) {
    struct work *w = calloc(1, sizeof *w);
    w->r = r;
    w->left = left;
    w->tick = evtimer_new(g.base, on_tick, w);
    herd_http_request_set_work(r, &work_ops, w);
    return w;
}

static void sse(struct herd_http_request *r, json_t *body, void *app) {
    (void)body, (void)app;
    const char *q = strstr(herd_http_request_target(r), "n=");
    struct work *w = work_new(r, q ? atoi(q + 2) : 3);
    herd_http_sse_begin(r);
    arm_ms(w->tick, 2);
}

static void stall(struct herd_http_request *r, json_t *body, void *app) {
    (void)body, (void)app;
    struct work *w = work_new(r, -1);
    herd_http_sse_begin(r);
    herd_http_sse_send(r, "first", 5);
    (void)w;
}

static void never(struct herd_http_request *r, json_t *body, void *app) {
    (void)body, (void)app;
    work_new(r, -1);
}

static const struct herd_http_route routes[] = {
    {"GET", "/hello", 0, hello, NULL}, {"POST", "/echo", 0, echo, NULL},  {"GET", "/sse", 0, sse, NULL},
    {"GET", "/stall", 0, stall, NULL}, {"GET", "/never", 0, never, NULL},
};

static void client_with(const struct herd_http_client_params *p) {
    herd_http_client_destroy(g.cl);
    struct herd_error err = {0};
    assert_int_equal(herd_http_client_create(g.base, p, &g.cl, &err), HERD_OK);
}

static int setup(void **state) {
    (void)state;
    struct herd_http_server_params hp;
    herd_http_server_default_params(&hp);
    hp.port = 0;
    hp.quiet = true;
    hp.routes = routes;
    hp.n_routes = sizeof routes / sizeof *routes;
    struct herd_error err = {0};
    if (herd_http_server_create(&hp, &g.srv, &err) != HERD_OK) return -1;
    /* the handlers reach the loop through the app pointer */
    g.base = herd_http_server_base(g.srv);
    g.port = herd_http_server_port(g.srv);
    g_aborts = 0;
    struct herd_http_client_params cp;
    herd_http_client_default_params(&cp);
    client_with(&cp);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    herd_http_client_destroy(g.cl);
    g.cl = NULL;
    herd_http_server_destroy(g.srv);
    return 0;
}

/* Turns the loop until *flag or max_s passed; true when flagged. */
static void on_poll(evutil_socket_t fd, short what, void *arg) { (void)fd, (void)what, (void)arg; }

static bool run_until(const bool *flag, double max_s) {
    struct event *poll = event_new(g.base, -1, EV_PERSIST, on_poll, NULL);
    struct timeval tv = {0, 5000};
    event_add(poll, &tv);
    const double end = herd_time_now_s() + max_s;
    while (!(flag && *flag) && herd_time_now_s() < end) event_base_loop(g.base, EVLOOP_ONCE);
    event_free(poll);
    return flag && *flag;
}

static void run_for(double s) { run_until(NULL, s); }

/* ------------------------------------------------------------- one call */

struct result {
    bool done;
    enum herd_http_call_error e;
    char msg[300];
    int status;
    int heads, pieces;
    char body[1 << 17];
    size_t body_len;
    int cancel_after; /* pieces, then cancel (0: never) */
    int pause_after;  /* pieces, then pause (0: never) */
    struct herd_http_call *call;
};

static void on_head(struct herd_http_call *call, const struct herd_http_resp_parser *resp, void *arg) {
    (void)call;
    struct result *r = arg;
    r->heads++;
    r->status = resp->status;
}

static void on_body(struct herd_http_call *call, const char *data, size_t len, void *arg) {
    struct result *r = arg;
    r->pieces++;
    assert_true(r->body_len + len <= sizeof r->body);
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    if (r->cancel_after && r->pieces == r->cancel_after) {
        herd_http_call_cancel(call);
        r->done = true; /* no on_done will come */
    }
    if (r->pause_after && r->pieces == r->pause_after) herd_http_call_pause(call, true);
}

static void on_done(struct herd_http_call *call, enum herd_http_call_error e, const char *msg, void *arg) {
    (void)call;
    struct result *r = arg;
    assert_false(r->done);
    r->done = true;
    r->e = e;
    snprintf(r->msg, sizeof r->msg, "%s", msg ? msg : "");
}

static const struct herd_http_call_ops ops = {on_head, on_body, on_done};

static struct result *call_to(uint16_t port, const char *method, const char *target, const char *body, size_t body_len,
                              double max_s) {
    struct result *r = calloc(1, sizeof *r);
    struct herd_http_client_request req = {
        .method = method, .host = "127.0.0.1", .port = port, .target = target, .body = body, .body_len = body_len};
    struct herd_error err = {0};
    r->call = herd_http_client_send(g.cl, &req, &ops, r, &err);
    assert_non_null(r->call);
    if (max_s > 0) run_until(&r->done, max_s);
    return r;
}

static struct result *call(const char *method, const char *target, double max_s) {
    return call_to(g.port, method, target, NULL, 0, max_s);
}

/* ------------------------------------------------------------ the tests */

static void test_keep_alive_reuse(void **state) {
    (void)state;
    for (int i = 0; i < 3; i++) {
        struct result *r = call("GET", "/hello", 5);
        assert_true(r->done);
        assert_int_equal(r->e, HERD_HTTP_CALL_OK);
        assert_int_equal(r->status, 200);
        assert_int_equal(r->heads, 1);
        assert_int_equal(r->body_len, 5);
        assert_memory_equal(r->body, "hello", 5);
        free(r);
    }
    struct herd_http_client_stats st;
    herd_http_client_stats(g.cl, &st);
    assert_int_equal(st.connects, 1); /* one connection carried all three */
    assert_int_equal(st.reuses, 2);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.calls, 0);
    /* HEAD: no body, and the connection stays usable */
    struct result *r = call("HEAD", "/hello", 5);
    assert_int_equal(r->e, HERD_HTTP_CALL_OK);
    assert_int_equal(r->body_len, 0);
    free(r);
    herd_http_client_stats(g.cl, &st);
    assert_int_equal(st.connects, 1);
    /* an error answer is an answer: 404 arrives as OK with its status */
    r = call("GET", "/nowhere", 5);
    assert_int_equal(r->e, HERD_HTTP_CALL_OK);
    assert_int_equal(r->status, 404);
    free(r);
}

static void test_post_body(void **state) {
    (void)state;
    size_t n = 100000;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++) big[i] = (char)('a' + i % 26);
    struct result *r = call_to(g.port, "POST", "/echo", big, n, 5);
    assert_int_equal(r->e, HERD_HTTP_CALL_OK);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->body_len, n);
    assert_memory_equal(r->body, big, n);
    free(r);
    free(big);
    /* several calls at once: each gets its own connection */
    struct result *many[4];
    for (int i = 0; i < 4; i++) many[i] = call("GET", "/hello", 0);
    for (int i = 0; i < 4; i++) {
        run_until(&many[i]->done, 5);
        assert_int_equal(many[i]->e, HERD_HTTP_CALL_OK);
        free(many[i]);
    }
}

static void test_sse_relayed_piece_by_piece(void **state) {
    (void)state;
    struct result *r = call("GET", "/sse?n=20", 10);
    assert_int_equal(r->e, HERD_HTTP_CALL_OK);
    assert_int_equal(r->status, 200);
    char want[1024];
    size_t wn = 0;
    for (int i = 0; i < 20; i++) wn += (size_t)sprintf(want + wn, "data: %d\n\n", i);
    wn += (size_t)sprintf(want + wn, "data: [DONE]\n\n");
    assert_int_equal(r->body_len, wn);
    assert_memory_equal(r->body, want, wn);
    /* events 2 ms apart arrive as they are sent, not at the end */
    assert_true(r->pieces >= 10);
    free(r);
    /* and the connection goes back to the pool after the last chunk */
    struct herd_http_client_stats st;
    herd_http_client_stats(g.cl, &st);
    assert_int_equal(st.idle, 1);
}

static void test_cancel_reaches_the_server(void **state) {
    (void)state;
    struct result *r = call("GET", "/sse?n=100000", 0);
    r->cancel_after = 3;
    run_until(&r->done, 5);
    assert_int_equal(r->pieces, 3);
    /* the server sees its client go and aborts the work */
    for (int i = 0; i < 200 && g_aborts == 0; i++) run_for(0.01);
    assert_int_equal(g_aborts, 1);
    struct herd_http_client_stats st;
    herd_http_client_stats(g.cl, &st);
    assert_int_equal(st.calls, 0);
    assert_int_equal(st.idle, 0); /* an answer cut short is not reused */
    free(r);
    /* cancel before anything arrived */
    r = call("GET", "/never", 0);
    herd_http_call_cancel(r->call);
    run_for(0.05);
    assert_false(r->done);
    free(r);
}

static void test_pause_and_resume(void **state) {
    (void)state;
    struct result *r = call("GET", "/sse?n=30", 0);
    r->pause_after = 2;
    for (int i = 0; i < 500 && r->pieces < 2; i++) run_for(0.01);
    assert_int_equal(r->pieces, 2);
    run_for(0.15); /* the server sends on; nothing is handed over */
    assert_int_equal(r->pieces, 2);
    assert_false(r->done);
    r->pause_after = 0;
    herd_http_call_pause(r->call, false);
    run_until(&r->done, 5);
    assert_int_equal(r->e, HERD_HTTP_CALL_OK);
    assert_true(r->body_len > 0 && !memcmp(r->body + r->body_len - 14, "data: [DONE]\n\n", 14));
    free(r);
}

static void test_timeouts(void **state) {
    (void)state;
    struct herd_http_client_params cp;
    herd_http_client_default_params(&cp);
    cp.head_timeout_s = 0.2;
    cp.idle_timeout_s = 0.2;
    client_with(&cp);
    double t0 = herd_time_now_s();
    struct result *r = call("GET", "/never", 5);
    assert_int_equal(r->e, HERD_HTTP_CALL_TIMEOUT);
    assert_int_equal(r->heads, 0);
    assert_true(herd_time_now_s() - t0 < 2);
    assert_non_null(strstr(r->msg, "no response head"));
    free(r);
    r = call("GET", "/stall", 5);
    assert_int_equal(r->e, HERD_HTTP_CALL_TIMEOUT);
    assert_int_equal(r->heads, 1);
    assert_int_equal(r->body_len, 13);
    assert_non_null(strstr(r->msg, "stalled"));
    free(r);
}

static void test_connect_refused(void **state) {
    (void)state;
    /* a port that was just free */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    evutil_socket_t fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    evutil_closesocket(fd);
    struct result *r = call_to(ntohs(a.sin_port), "GET", "/", NULL, 0, 5);
    assert_int_equal(r->e, HERD_HTTP_CALL_CONNECT);
    assert_non_null(strstr(r->msg, "connect to 127.0.0.1"));
    free(r);
}

static void test_bad_arguments(void **state) {
    (void)state;
    struct herd_error err = {0};
    struct herd_http_client_request req = {.method = "GET", .host = "127.0.0.1", .port = g.port, .target = "/"};
    struct result r = {0};
    const struct herd_http_client_request bad[] = {
        {.method = "G T", .host = "127.0.0.1", .port = 1, .target = "/"},
        {.method = "GET", .host = "127.0.0.1", .port = 1, .target = "/a b"},
        {.method = "GET", .host = "127.0.0.1", .port = 1, .target = ""},
        {.method = "GET", .host = "localhost", .port = 1, .target = "/"},
        {.method = "GET", .host = "127.0.0.1", .port = 1, .target = "/", .headers = "X-A: 1\n"},
        {.method = "GET", .host = "127.0.0.1", .port = 1, .target = "/", .headers = "X-A: 1\r\n\r\nGET / HTTP/1.1\r\n"},
        {.method = "GET", .host = "127.0.0.1", .port = 1, .target = "/", .headers = "X-A 1\r\n"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_null(herd_http_client_send(g.cl, &bad[i], &ops, &r, &err));
        assert_int_equal(err.code, HERD_E_INVALID);
    }
    req.headers = "X-Request-Id: abc\r\nAuthorization: Bearer k\r\n";
    struct herd_http_call *c = herd_http_client_send(g.cl, &req, &ops, &r, &err);
    assert_non_null(c);
    run_until(&r.done, 5);
    assert_int_equal(r.status, 404);
}

/* --------------------------------------------- a scripted raw listener */

enum raw_mode {
    RAW_CUT,             /* Content-Length 100, 10 bytes, close */
    RAW_UNTIL_CLOSE,     /* no length: "abc", close */
    RAW_BROKEN,          /* malformed chunk size */
    RAW_CLOSE_ON_SECOND, /* answers one request keep-alive; closes when a second comes on it */
    RAW_INTERIM_CHUNKED, /* 100 Continue, then a chunked answer */
};

struct raw_conn {
    struct raw_server *rs;
    struct bufferevent *bev;
    int answered;
    struct raw_conn *next;
};

struct raw_server {
    struct evconnlistener *l;
    enum raw_mode mode;
    uint16_t port;
    int accepted;
    struct raw_conn *conns; /* open ones */
};

static void raw_event(struct bufferevent *bev, short what, void *arg) {
    (void)what;
    struct raw_conn *rc = arg;
    for (struct raw_conn **p = &rc->rs->conns; *p; p = &(*p)->next)
        if (*p == rc) {
            *p = rc->next;
            break;
        }
    bufferevent_free(bev);
    free(rc);
}

static void raw_stop(struct raw_server *rs) {
    while (rs->conns) raw_event(rs->conns->bev, 0, rs->conns);
    evconnlistener_free(rs->l);
}

static void raw_flush_close(struct bufferevent *bev, void *arg) {
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) raw_event(bev, 0, arg);
}

static void raw_read(struct bufferevent *bev, void *arg) {
    struct raw_conn *rc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0) return;
    evbuffer_drain(in, (size_t)end.pos + 4);
    struct evbuffer *out = bufferevent_get_output(bev);
    bool close_after = true;
    switch (rc->rs->mode) {
    case RAW_CUT: evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"); break;
    case RAW_UNTIL_CLOSE: evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\n\r\nabc"); break;
    case RAW_BROKEN: evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"); break;
    case RAW_INTERIM_CHUNKED:
        evbuffer_add_printf(out, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 "3\r\nabc\r\n0\r\n\r\n");
        close_after = false;
        break;
    case RAW_CLOSE_ON_SECOND:
        if (rc->answered++ == 0) {
            evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            close_after = false;
        } else {
            raw_event(bev, 0, rc); /* as if it had closed while idle */
            return;
        }
        break;
    }
    if (close_after) bufferevent_setcb(bev, NULL, raw_flush_close, raw_event, rc);
}

static void raw_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *a, int al, void *arg) {
    (void)l, (void)a, (void)al;
    struct raw_server *rs = arg;
    rs->accepted++;
    struct raw_conn *rc = calloc(1, sizeof *rc);
    rc->rs = rs;
    struct bufferevent *bev = bufferevent_socket_new(g.base, fd, BEV_OPT_CLOSE_ON_FREE);
    rc->bev = bev;
    rc->next = rs->conns;
    rs->conns = rc;
    bufferevent_setcb(bev, raw_read, NULL, raw_event, rc);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void raw_start(struct raw_server *rs, enum raw_mode mode) {
    memset(rs, 0, sizeof *rs);
    rs->mode = mode;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    rs->l = evconnlistener_new_bind(g.base, raw_accept, rs, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
                                    (struct sockaddr *)&a, sizeof a);
    assert_non_null(rs->l);
    socklen_t al = sizeof a;
    getsockname(evconnlistener_get_fd(rs->l), (struct sockaddr *)&a, &al);
    rs->port = ntohs(a.sin_port);
}

static void test_closed_mid_body(void **state) {
    (void)state;
    struct raw_server rs;
    raw_start(&rs, RAW_CUT);
    struct result *r = call_to(rs.port, "GET", "/", NULL, 0, 5);
    assert_int_equal(r->e, HERD_HTTP_CALL_CLOSED);
    assert_int_equal(r->heads, 1);
    assert_int_equal(r->body_len, 10);
    assert_non_null(strstr(r->msg, "closed before the response ended"));
    free(r);
    raw_stop(&rs);
}

static void test_until_close_and_broken(void **state) {
    (void)state;
    struct raw_server rs;
    raw_start(&rs, RAW_UNTIL_CLOSE);
    struct result *r = call_to(rs.port, "GET", "/", NULL, 0, 5);
    assert_int_equal(r->e, HERD_HTTP_CALL_OK);
    assert_int_equal(r->body_len, 3);
    assert_memory_equal(r->body, "abc", 3);
    free(r);
    raw_stop(&rs);
    raw_start(&rs, RAW_BROKEN);
    r = call_to(rs.port, "GET", "/", NULL, 0, 5);
    assert_int_equal(r->e, HERD_HTTP_CALL_PROTOCOL);
    assert_non_null(strstr(r->msg, "malformed chunk size"));
    free(r);
    raw_stop(&rs);
    raw_start(&rs, RAW_INTERIM_CHUNKED);
    r = call_to(rs.port, "POST", "/", "x", 1, 5);
    assert_int_equal(r->e, HERD_HTTP_CALL_OK);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->heads, 1);
    assert_memory_equal(r->body, "abc", 3);
    free(r);
    raw_stop(&rs);
}

static void test_retry_on_a_stale_pooled_connection(void **state) {
    (void)state;
    struct raw_server rs;
    raw_start(&rs, RAW_CLOSE_ON_SECOND);
    struct result *r = call_to(rs.port, "GET", "/", NULL, 0, 5);
    assert_int_equal(r->e, HERD_HTTP_CALL_OK);
    free(r);
    /* the pooled connection is closed by the server as the next request
     * arrives on it: sent again once, on a new connection */
    r = call_to(rs.port, "GET", "/", NULL, 0, 5);
    assert_int_equal(r->e, HERD_HTTP_CALL_OK);
    assert_memory_equal(r->body, "ok", 2);
    free(r);
    struct herd_http_client_stats st;
    herd_http_client_stats(g.cl, &st);
    assert_int_equal(st.retries, 1);
    assert_int_equal(rs.accepted, 2);
    raw_stop(&rs);
}

static void test_pool_idle_timeout(void **state) {
    (void)state;
    struct herd_http_client_params cp;
    herd_http_client_default_params(&cp);
    cp.pool_idle_timeout_s = 0.05;
    client_with(&cp);
    struct result *r = call("GET", "/hello", 5);
    free(r);
    struct herd_http_client_stats st;
    herd_http_client_stats(g.cl, &st);
    assert_int_equal(st.idle, 1);
    run_for(0.2);
    herd_http_client_stats(g.cl, &st);
    assert_int_equal(st.idle, 0);
    /* the server closing an idle connection takes it out of the pool too */
    herd_http_client_default_params(&cp);
    cp.max_idle_per_upstream = 0;
    client_with(&cp);
    r = call("GET", "/hello", 5);
    assert_int_equal(r->e, HERD_HTTP_CALL_OK);
    free(r);
    herd_http_client_stats(g.cl, &st);
    assert_int_equal(st.idle, 0); /* a pool of 0 keeps nothing */
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keep_alive_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sse_relayed_piece_by_piece, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_reaches_the_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_and_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeouts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_mid_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_until_close_and_broken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_on_a_stale_pooled_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_idle_timeout, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
