/* The HTTP server with a route table of its own, driven over 127.0.0.1 by
 * raw requests on the same event loop: the order of the checks (parser
 * errors, API keys, routes answered in every state, the application's
 * loading and failed states, the drain, 404 / 405, JSON bodies), request
 * ids, HEAD, prefixes, the metrics it counts, connection limits and
 * deadlines, a stream woken from another thread, and the drain running
 * out of time. Every wait is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

#include "base/timing.h"
#include "http/http_server.h"
#include "test_util.h"

struct app {
    enum herd_http_app_state state;
    int drains;  /* on_drain calls */
    int cancels; /* work cancelled by the drain */
    json_t *last_body;
};

static struct app g_app;
static struct herd_http_server *g_srv;
static struct event_base *g_base;
static struct herd_metrics *g_reg;
static struct herd_http_metrics g_metrics;

/* -------------------------------------------------------------- routes */

static void text(struct herd_http_request *r, json_t *body, void *app) {
    (void)body, (void)app;
    char b[200];
    int n = snprintf(b, sizeof b, "%s %s rest=%s id=%s", herd_http_request_method(r), herd_http_request_path(r),
                     herd_http_request_path_rest(r), herd_http_request_id(r));
    herd_http_respond(r, 200, "text/plain", b, (size_t)n, "X-Extra: 1\r\n");
}

static void post(struct herd_http_request *r, json_t *body, void *app) {
    struct app *a = app;
    json_decref(a->last_body);
    a->last_body = json_incref(body);
    herd_http_respond_json(r, 201, json_pack("{s:b}", "ok", 1));
}

/* A stream fed from another thread, as the scheduler feeds one: the
 * thread posts five events, waking the request after each (wakes may
 * coalesce); a wake sends what was posted, the fifth ends the answer. */
struct feed {
    struct herd_http_request *r;
    pthread_t th;
    atomic_int posted;
    int sent;
};

static void *feeder(void *arg) {
    struct feed *f = arg;
    for (int i = 0; i < 5; i++) {
        usleep(10000);
        atomic_fetch_add(&f->posted, 1);
        herd_http_request_wake(f->r);
    }
    return NULL;
}

static void feed_wake(struct herd_http_request *r, void *work) {
    struct feed *f = work;
    for (int posted = atomic_load(&f->posted); f->sent < posted;) {
        char ev[16];
        int n = snprintf(ev, sizeof ev, "%d", f->sent++);
        herd_http_sse_send(r, ev, (size_t)n);
    }
    if (f->sent < 5) return;
    herd_http_request_set_work(r, NULL, NULL);
    pthread_join(f->th, NULL);
    free(f);
    herd_http_stream_end(r);
}

static void feed_cancel(struct herd_http_request *r, void *work) { (void)r, (void)work; }

static void feed_abort(struct herd_http_request *r, void *work) {
    (void)r;
    struct feed *f = work;
    pthread_join(f->th, NULL);
    free(f);
}

static const struct herd_http_work_ops feed_ops = {feed_wake, feed_cancel, feed_abort};

static void stream(struct herd_http_request *r, json_t *body, void *app) {
    (void)body, (void)app;
    struct feed *f = calloc(1, sizeof *f);
    f->r = r;
    herd_http_request_set_work(r, &feed_ops, f);
    herd_http_sse_begin(r);
    pthread_create(&f->th, NULL, feeder, f);
}

/* Work that never ends by itself: the drain's cancel answers it. */
static void hang_wake(struct herd_http_request *r, void *work) { (void)r, (void)work; }
static void hang_cancel(struct herd_http_request *r, void *work) {
    (void)work;
    g_app.cancels++;
    herd_http_request_set_work(r, NULL, NULL);
    herd_http_respond(r, 200, "text/plain", "cancelled", 9, NULL);
}
static void hang_abort(struct herd_http_request *r, void *work) { (void)r, (void)work; }
static const struct herd_http_work_ops hang_ops = {hang_wake, hang_cancel, hang_abort};

static void hang(struct herd_http_request *r, json_t *body, void *app) {
    (void)body, (void)app;
    herd_http_request_set_work(r, &hang_ops, &g_app);
}

static const struct herd_http_route routes[] = {
    {"GET", "/livez", HERD_HTTP_ROUTE_OPEN, herd_http_livez, NULL},
    {"GET", "/health", HERD_HTTP_ROUTE_OPEN | HERD_HTTP_ROUTE_PROBE, herd_http_health, NULL},
    {"GET", "/readyz", HERD_HTTP_ROUTE_OPEN | HERD_HTTP_ROUTE_PROBE, herd_http_readyz, NULL},
    {"GET", "/open", HERD_HTTP_ROUTE_OPEN, text, NULL},
    {"GET", "/api", HERD_HTTP_ROUTE_NEEDS_READY, text, NULL},
    {"GET", "/pre/", HERD_HTTP_ROUTE_NEEDS_READY | HERD_HTTP_ROUTE_PREFIX, text, NULL},
    {"POST", "/post", HERD_HTTP_ROUTE_NEEDS_READY | HERD_HTTP_ROUTE_JSON_BODY | HERD_HTTP_ROUTE_ONLY_METHOD, post,
     NULL},
    {"GET", "/stream", HERD_HTTP_ROUTE_NEEDS_READY, stream, NULL},
    {"GET", "/hang", HERD_HTTP_ROUTE_NEEDS_READY, hang, NULL},
};

static enum herd_http_app_state state(void *app) { return ((struct app *)app)->state; }
static void on_drain(void *app) { ((struct app *)app)->drains++; }

static const char *const keys[] = {"k1", "secret2", NULL};

static void start(void (*adjust)(struct herd_http_server_params *)) {
    memset(&g_app, 0, sizeof g_app);
    g_reg = herd_metrics_create();
    struct herd_metric_family *resp =
        herd_metrics_family(g_reg, "t_responses_total", "by class", HERD_METRIC_COUNTER, NULL, 0);
    static const char *const classes[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    const char *name[1] = {"code"};
    for (int i = 0; i < 5; i++) g_metrics.responses[i] = herd_metric_series(resp, 1, name, &classes[i]);
    for (int i = 0; i < HERD_HTTP_REJECT_N; i++) {
        char n[40];
        snprintf(n, sizeof n, "t_reject_%d_total", i);
        g_metrics.rejections[i] = herd_metrics_counter(g_reg, n, "rejections");
    }
    g_metrics.cancellations = herd_metrics_counter(g_reg, "t_cancellations_total", "cancellations");
    struct herd_http_server_params p;
    herd_http_server_default_params(&p);
    p.port = 0;
    p.quiet = true;
    p.routes = routes;
    p.n_routes = sizeof routes / sizeof *routes;
    p.hooks.app = &g_app;
    p.hooks.state = state;
    p.hooks.on_drain = on_drain;
    p.metrics = &g_metrics;
    p.api_keys = keys;
    if (adjust) adjust(&p);
    struct herd_error err = {0};
    assert_int_equal(herd_http_server_create(&p, &g_srv, &err), HERD_OK);
    g_base = herd_http_server_base(g_srv);
}

static void stop(void) {
    herd_http_server_destroy(g_srv);
    herd_metrics_destroy(g_reg);
    json_decref(g_app.last_body);
    g_app.last_body = NULL;
}

/* ------------------------------------------------- a raw client on the loop */

struct exchange {
    struct bufferevent *bev;
    char out[1 << 16];
    size_t len;
    bool closed;
};

static void ex_read(struct bufferevent *bev, void *arg) {
    struct exchange *x = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    if (n > sizeof x->out - 1 - x->len) n = sizeof x->out - 1 - x->len;
    evbuffer_remove(in, x->out + x->len, n);
    x->len += n;
    x->out[x->len] = 0;
}

static void ex_event(struct bufferevent *bev, short what, void *arg) {
    struct exchange *x = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        ex_read(bev, arg);
        x->closed = true;
    }
}

static void on_poll(evutil_socket_t fd, short what, void *arg) { (void)fd, (void)what, (void)arg; }

/* Turns the loop until *flag (or for max_s when flag is NULL). */
static void run_until(const bool *flag, double max_s) {
    struct event *poll = event_new(g_base, -1, EV_PERSIST, on_poll, NULL);
    struct timeval tv = {0, 5000};
    event_add(poll, &tv);
    const double end = herd_time_now_s() + max_s;
    while (!(flag && *flag) && herd_time_now_s() < end) event_base_loop(g_base, EVLOOP_ONCE);
    event_free(poll);
}

static struct exchange *ex_open(void) {
    struct exchange *x = calloc(1, sizeof *x);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(herd_http_server_port(g_srv)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    x->bev = bufferevent_socket_new(g_base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(x->bev, ex_read, NULL, ex_event, x);
    bufferevent_enable(x->bev, EV_READ | EV_WRITE);
    assert_int_equal(bufferevent_socket_connect(x->bev, (struct sockaddr *)&a, sizeof a), 0);
    return x;
}

static void ex_close(struct exchange *x) {
    bufferevent_free(x->bev);
    free(x);
}

/* Sends raw bytes on a new connection and returns all that comes back
 * until the server closes (the caller frees). */
static char *send_raw(const char *bytes, double max_s) {
    struct exchange *x = ex_open();
    bufferevent_write(x->bev, bytes, strlen(bytes));
    run_until(&x->closed, max_s);
    assert_true(x->closed);
    char *out = strdup(x->out);
    ex_close(x);
    return out;
}

/* One request with Connection: close, and its answer. */
static char *request(const char *method, const char *path, const char *headers, const char *body) {
    char req[4096];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n%s",
             method, path, headers ? headers : "", body ? strlen(body) : 0, body ? body : "");
    return send_raw(req, 5);
}

static void expect(const char *method, const char *path, const char *headers, const char *body, const char *status,
                   const char *contains) {
    char *out = request(method, path, headers, body);
    if (strncmp(out, status, strlen(status)) != 0 || (contains && !strstr(out, contains)))
        fail_msg("%s %s: want '%s' with '%s', got:\n%s", method, path, status, contains ? contains : "", out);
    free(out);
}

static const char *const KEY = "Authorization: Bearer k1\r\n";

/* ----------------------------------------------------------- the tests */

static void test_checks_in_order(void **state) {
    (void)state;
    start(NULL);
    /* 1. the parser before anything */
    char *out = send_raw("GET / HTTP/2.0\r\n\r\n", 5);
    assert_non_null(strstr(out, "HTTP/1.1 505 "));
    assert_non_null(strstr(out, "Connection: close"));
    free(out);
    /* 2. keys: open routes need none, others one of the list, compared whole */
    expect("GET", "/open", NULL, NULL, "HTTP/1.1 200", "GET /open rest= id=req-");
    expect("GET", "/api", NULL, NULL, "HTTP/1.1 401", "\"code\":\"invalid_api_key\"");
    expect("GET", "/api", "Authorization: Bearer k\r\n", NULL, "HTTP/1.1 401", NULL);
    expect("GET", "/api", "Authorization: Bearer k12\r\n", NULL, "HTTP/1.1 401", NULL);
    expect("GET", "/api", "Authorization: Bearer   secret2\r\n", NULL, "HTTP/1.1 200", NULL);
    expect("GET", "/nowhere", NULL, NULL, "HTTP/1.1 401", NULL); /* unknown paths are not open */
    expect("GET", "/api", KEY, NULL, "HTTP/1.1 200", "X-Extra: 1\r\n");
    /* 3-4. loading: routes that do not need readiness answer; the rest 503 */
    g_app.state = HERD_HTTP_APP_LOADING;
    expect("GET", "/livez", NULL, NULL, "HTTP/1.1 200", "{\"status\":\"ok\"}");
    expect("GET", "/open", NULL, NULL, "HTTP/1.1 200", NULL);
    expect("GET", "/health", NULL, NULL, "HTTP/1.1 503", "{\"status\":\"loading\"}");
    expect("GET", "/readyz", NULL, NULL, "HTTP/1.1 503", "{\"status\":\"loading\"}");
    expect("POST", "/health", NULL, NULL, "HTTP/1.1 503", "{\"status\":\"loading\"}"); /* a probe path */
    expect("GET", "/api", KEY, NULL, "HTTP/1.1 503", "\"message\":\"the server is starting\"");
    expect("GET", "/nowhere", KEY, NULL, "HTTP/1.1 503", "\"code\":\"loading\"");
    g_app.state = HERD_HTTP_APP_FAILED;
    expect("GET", "/health", NULL, NULL, "HTTP/1.1 503", "{\"status\":\"failed\"}");
    expect("GET", "/api", KEY, NULL, "HTTP/1.1 503", "\"code\":\"failed\"");
    expect("POST", "/health", NULL, NULL, "HTTP/1.1 503", "\"code\":\"failed\"");
    g_app.state = HERD_HTTP_APP_READY;
    /* 6. no route, wrong method */
    expect("GET", "/nowhere", KEY, NULL, "HTTP/1.1 404", "no route for GET /nowhere");
    expect("GET", "/post", KEY, NULL, "HTTP/1.1 405", "use POST for /post");
    expect("POST", "/api", KEY, "{}", "HTTP/1.1 404", "no route for POST /api");
    expect("POST", "/health", NULL, NULL, "HTTP/1.1 404", NULL);
    /* 7. JSON bodies */
    expect("POST", "/post", KEY, "{nope", "HTTP/1.1 400", "the body is not valid JSON");
    expect("POST", "/post", KEY, "[1]", "HTTP/1.1 400", "the body must be a JSON object");
    expect("POST", "/post", KEY, "{\"a\":1,\"a\":2}", "HTTP/1.1 400", "invalid_json");
    expect("POST", "/post", KEY, "{\"a\":[1,2]}", "HTTP/1.1 201", "{\"ok\":true}");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(g_app.last_body, "a"), 1)), 2);
    /* prefixes, queries, HEAD, request ids */
    expect("GET", "/pre/abc?x=1", KEY, NULL, "HTTP/1.1 200", "GET /pre/abc rest=abc");
    expect("GET", "/pre/", KEY, NULL, "HTTP/1.1 200", "rest= ");
    out = request("HEAD", "/open", NULL, NULL);
    assert_non_null(strstr(out, "Content-Length: "));
    assert_non_null(strstr(out, "\r\n\r\n"));
    assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\n"); /* no body */
    free(out);
    expect("GET", "/open", "X-Request-Id: my-id.1_2\r\n", NULL, "HTTP/1.1 200", "X-Request-Id: my-id.1_2\r\n");
    out = request("GET", "/open", "X-Request-Id: bad id\r\n", NULL);
    assert_null(strstr(out, "bad id"));
    assert_non_null(strstr(out, "X-Request-Id: req-"));
    free(out);
    /* 5. draining: probes tell it, work is refused, the hook runs once */
    herd_http_server_drain(g_srv);
    herd_http_server_drain(g_srv);
    assert_int_equal(g_app.drains, 1);
    assert_true(herd_http_server_draining(g_srv));
    expect("GET", "/readyz", NULL, NULL, "HTTP/1.1 503", "{\"status\":\"draining\"}");
    expect("GET", "/health", NULL, NULL, "HTTP/1.1 200", NULL);
    expect("GET", "/api", KEY, NULL, "HTTP/1.1 503", "\"code\":\"draining\"");
    /* what was counted */
    assert_int_equal(herd_metric_value(g_metrics.rejections[HERD_HTTP_REJECT_AUTH]), 4);
    assert_int_equal(herd_metric_value(g_metrics.rejections[HERD_HTTP_REJECT_BAD_REQUEST]), 4);
    assert_int_equal(herd_metric_value(g_metrics.rejections[HERD_HTTP_REJECT_DRAINING]), 1);
    assert_true(herd_metric_value(g_metrics.responses[1]) >= 10);   /* 2xx */
    assert_int_equal(herd_metric_value(g_metrics.responses[2]), 0); /* 3xx */
    assert_true(herd_metric_value(g_metrics.responses[3]) >= 10);   /* 4xx */
    stop();
}

static void auth_all(struct herd_http_server_params *p) { p->auth_all = true; }

static void test_auth_all(void **state) {
    (void)state;
    start(auth_all);
    expect("GET", "/livez", NULL, NULL, "HTTP/1.1 401", NULL);
    expect("GET", "/livez", KEY, NULL, "HTTP/1.1 200", NULL);
    stop();
}

static void test_keep_alive_and_pipelining(void **state) {
    (void)state;
    start(NULL);
    /* three pipelined requests on one connection, answered in order */
    struct exchange *x = ex_open();
    const char *three = "GET /open HTTP/1.1\r\n\r\nGET /nowhere HTTP/1.1\r\nAuthorization: Bearer k1\r\n\r\n"
                        "GET /livez HTTP/1.1\r\nConnection: close\r\n\r\n";
    bufferevent_write(x->bev, three, strlen(three));
    run_until(&x->closed, 5);
    const char *a = strstr(x->out, "HTTP/1.1 200"), *b = strstr(x->out, "HTTP/1.1 404"),
               *c = a ? strstr(a + 1, "HTTP/1.1 200") : NULL;
    assert_true(a && b && c && a < b && b < c);
    assert_non_null(strstr(c, "Connection: close"));
    ex_close(x);
    stop();
}

static void tight(struct herd_http_server_params *p) {
    p->max_connections = 1;
    p->header_timeout_s = 0.2;
    p->idle_timeout_s = 0.3;
}

static void test_limits_and_deadlines(void **state) {
    (void)state;
    start(tight);
    /* an idle keep-alive connection holds the only slot */
    struct exchange *idle = ex_open();
    run_until(NULL, 0.05);
    char *out = send_raw("GET /livez HTTP/1.1\r\n\r\n", 5);
    assert_non_null(strstr(out, "HTTP/1.1 503 "));
    assert_non_null(strstr(out, "too many connections"));
    free(out);
    /* ... until the idle deadline closes it */
    run_until(&idle->closed, 2);
    assert_true(idle->closed);
    assert_int_equal(idle->len, 0);
    ex_close(idle);
    assert_int_equal(herd_http_server_connections(g_srv), 0);
    /* a head that does not arrive in time: 408, then close */
    double t0 = herd_time_now_s();
    out = send_raw("GET /livez HTTP/1.1\r\nHost: slow\r\n", 5);
    assert_non_null(strstr(out, "HTTP/1.1 408 "));
    assert_true(herd_time_now_s() - t0 < 2);
    free(out);
    stop();
}

static void test_stream_woken_from_another_thread(void **state) {
    (void)state;
    start(NULL);
    char *out = request("GET", "/stream", KEY, NULL);
    assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                                "X-Request-Id: "));
    assert_non_null(strstr(out, "\r\nCache-Control: no-cache\r\n"));
    /* each event one chunk, framed; then the last chunk */
    const char *body = strstr(out, "\r\n\r\n") + 4;
    assert_string_equal(body, "9\r\ndata: 0\n\n\r\n9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n9\r\ndata: 3\n\n\r\n"
                              "9\r\ndata: 4\n\n\r\n0\r\n\r\n");
    free(out);
    stop();
}

static void quick_drain(struct herd_http_server_params *p) { p->drain_timeout_s = 0.1; }

static void begin_drain(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    herd_http_server_drain(g_srv);
}

static void test_drain_cancels_what_runs(void **state) {
    (void)state;
    start(quick_drain);
    struct exchange *x = ex_open();
    const char *req = "GET /hang HTTP/1.1\r\nAuthorization: Bearer k1\r\n\r\n";
    bufferevent_write(x->bev, req, strlen(req));
    run_until(NULL, 0.05);
    /* the drain starts from the loop; herd_http_server_run returns once
     * the cancelled answer went out */
    struct event *ev = evtimer_new(g_base, begin_drain, NULL);
    struct timeval tv = {0, 10000};
    evtimer_add(ev, &tv);
    double t0 = herd_time_now_s();
    struct herd_error err = {0};
    assert_int_equal(herd_http_server_run(g_srv, &err), HERD_OK);
    assert_true(herd_time_now_s() - t0 < 3);
    assert_int_equal(g_app.cancels, 1);
    assert_int_equal(g_app.drains, 1);
    event_free(ev);
    run_until(&x->closed, 1);
    assert_non_null(strstr(x->out, "HTTP/1.1 200 OK"));
    assert_non_null(strstr(x->out, "Connection: close")); /* draining: no keep-alive */
    assert_non_null(strstr(x->out, "cancelled"));
    ex_close(x);
    stop();
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checks_in_order),
        cmocka_unit_test(test_auth_all),
        cmocka_unit_test(test_keep_alive_and_pipelining),
        cmocka_unit_test(test_limits_and_deadlines),
        cmocka_unit_test(test_stream_woken_from_another_thread),
        cmocka_unit_test(test_drain_cancels_what_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
