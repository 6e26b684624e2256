/* The local replica pool (src/router/pool.c) with real `herd serve`
 * children of the built binary (HERD_TEST_BIN) on stories260K, the test
 * playing the router: it records the ops, health-checks /readyz with a
 * blocking GET and reports readiness, and sets the in-flight counts and the
 * observed metric. Checked: children start, answer on their ports, run on
 * disjoint CPUs in their own process groups; kill -9 is restarted with a
 * doubling backoff; a lost port race restarts at once without a crash;
 * scale up and down on the metric, a drain waiting for in-flight requests
 * and its timeout; scale from zero on demand and back to zero; destroy
 * leaves no child. Every wait has a deadline. The test includes pool.c to
 * replace its port picker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "router/pool.c"
#include "test_util.h"

/* ------------------------------------------------------- the fake router */

#define MAX_IDS 128

struct rep {
    bool up, ready, drained, gone;
    uint16_t port;
    pid_t pid;
    uint32_t in_flight;
    double up_s, gone_s;
};

static struct {
    struct event_base *base;
    struct herd_replica_pool *pool;
    struct rep reps[MAX_IDS];
    uint32_t n_up, n_gone, n_drained;
    double observed;
    bool in_flight_on_drain; /* a drained replica gets one request in flight */
    const char *bin;
    char model[4096];
} g;

static void on_up(void *arg, uint32_t id, const char *host, uint16_t port) {
    (void)arg;
    assert_true(id > 0 && id < MAX_IDS);
    assert_string_equal(host, "127.0.0.1");
    assert_false(g.reps[id].up); /* ids are never reused */
    g.reps[id] = (struct rep){.up = true, .port = port, .up_s = herd_time_now_s()};
    if (g.pool) g.reps[id].pid = herd_replica_pool_replica_pid(g.pool, id); /* else create() fills it in */
    g.n_up++;
}

static void on_drain(void *arg, uint32_t id) {
    (void)arg;
    assert_true(g.reps[id].up && !g.reps[id].gone);
    g.reps[id].drained = true;
    if (g.in_flight_on_drain) g.reps[id].in_flight = 1;
    g.n_drained++;
}

static uint32_t on_in_flight(void *arg, uint32_t id) {
    (void)arg;
    return g.reps[id].in_flight;
}

static void on_gone(void *arg, uint32_t id) {
    (void)arg;
    assert_true(g.reps[id].up && !g.reps[id].gone);
    g.reps[id].gone = true;
    g.reps[id].ready = false;
    g.reps[id].gone_s = herd_time_now_s();
    g.n_gone++;
}

static double on_observed(void *arg) {
    (void)arg;
    return g.observed;
}

static const struct herd_replica_pool_ops ops = {on_up, on_drain, on_in_flight, on_gone, on_observed};

/* GET path on 127.0.0.1:port; the status, or -1. */
static int http_get(uint16_t port, const char *path) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int status = -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        char req[256];
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
        char buf[512];
        ssize_t got;
        if (write(fd, req, (size_t)n) == n && (got = read(fd, buf, sizeof buf - 1)) > 12) {
            buf[got] = 0;
            if (sscanf(buf, "HTTP/1.1 %d", &status) != 1) status = -1;
        }
    }
    close(fd);
    return status;
}

/* The router's part between two loop turns: /readyz of each live replica
 * not yet ready. */
static void health_check(void) {
    for (uint32_t id = 1; id < MAX_IDS; id++) {
        struct rep *r = &g.reps[id];
        if (!r->up || r->gone || r->ready || r->drained) continue;
        if (http_get(r->port, "/readyz") == 200) {
            r->ready = true;
            herd_replica_pool_replica_ready(g.pool, id, true);
        }
    }
}

/* Runs the loop and the health checks until pred holds or timeout_s. */
static bool run_until(bool (*pred)(void), double timeout_s) {
    double end = herd_time_now_s() + timeout_s;
    for (;;) {
        health_check();
        if (pred()) return true;
        if (herd_time_now_s() > end) return false;
        struct timeval tv = {.tv_usec = 20 * 1000};
        event_base_loopexit(g.base, &tv);
        event_base_dispatch(g.base);
    }
}

static void run_for(double s) {
    double end = herd_time_now_s() + s;
    while (herd_time_now_s() < end) {
        health_check();
        struct timeval tv = {.tv_usec = 20 * 1000};
        event_base_loopexit(g.base, &tv);
        event_base_dispatch(g.base);
    }
}

static uint32_t n_live(void) {
    uint32_t n = 0;
    for (uint32_t id = 1; id < MAX_IDS; id++) n += g.reps[id].up && !g.reps[id].gone;
    return n;
}
static uint32_t n_ready(void) {
    uint32_t n = 0;
    for (uint32_t id = 1; id < MAX_IDS; id++) n += g.reps[id].ready && !g.reps[id].gone && !g.reps[id].drained;
    return n;
}

static uint32_t want_ready, want_live, want_gone, want_up;
static bool ready_reached(void) { return n_ready() >= want_ready; }
static bool live_is(void) { return n_live() == want_live; }
static bool gone_reached(void) { return g.n_gone >= want_gone; }
static bool up_reached(void) { return g.n_up >= want_up; }

static void params(struct herd_replica_pool_params *p, uint32_t initial, uint32_t min, uint32_t max) {
    herd_replica_pool_default_params(p);
    p->herd_path = g.bin;
    p->model_path = g.model;
    static const char *const args[] = {"--quiet", "--log-level", "warn", NULL};
    p->serve_args = args;
    p->initial_replicas = initial;
    p->as.min_replicas = min;
    p->as.max_replicas = max;
    p->threads_per_replica = 1;
    p->sync_period_s = 0.1;
    p->stop_timeout_s = 10;
    p->ops = &ops;
}

static void create(const struct herd_replica_pool_params *p) {
    struct herd_error err = {0};
    enum herd_status rc = herd_replica_pool_create(g.base, p, &g.pool, &err);
    if (rc != HERD_OK) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, HERD_OK);
    /* replica_up ran inside create, before g.pool was set */
    for (uint32_t id = 1; id < MAX_IDS; id++)
        if (g.reps[id].up && !g.reps[id].pid) g.reps[id].pid = herd_replica_pool_replica_pid(g.pool, id);
}

static int setup(void **state) {
    (void)state;
    const char *bin = g.bin;
    memset(&g, 0, sizeof g);
    g.bin = bin;
    snprintf(g.model, sizeof g.model, "%s/models/stories260K.gguf", HERD_SOURCE_DIR);
    g.base = event_base_new();
    return g.base ? 0 : -1;
}

/* destroy reaps every child: none of ours is left, not even a zombie */
static int teardown(void **state) {
    (void)state;
    herd_replica_pool_destroy(g.pool);
    g.pool = NULL;
    for (uint32_t id = 1; id < MAX_IDS; id++)
        if (g.reps[id].pid > 0) assert_true(kill(g.reps[id].pid, 0) != 0 && errno == ESRCH);
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
    event_base_free(g.base);
    return 0;
}

/* ------------------------------------------------------------------ tests */

static void test_bad_params(void **state) {
    (void)state;
    struct herd_replica_pool_params p;
    struct herd_error err = {0};
    struct herd_replica_pool *pool = (struct herd_replica_pool *)1;
    params(&p, 1, 2, 1);
    assert_int_equal(herd_replica_pool_create(g.base, &p, &pool, &err), HERD_E_INVALID);
    assert_null(pool);
    assert_non_null(strstr(err.msg, "min 2 max 1"));
    params(&p, 1, 0, 0);
    assert_int_equal(herd_replica_pool_create(g.base, &p, &pool, &err), HERD_E_INVALID);
    params(&p, 1, 1, 1);
    p.model_path = NULL;
    assert_int_equal(herd_replica_pool_create(g.base, &p, &pool, &err), HERD_E_INVALID);
    params(&p, 1, 1, 1);
    p.herd_path = "/nonexistent/herd";
    assert_int_equal(herd_replica_pool_create(g.base, &p, &pool, &err), HERD_E_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/herd"));
    assert_int_equal(g.n_up, 0);
}

/* Two replicas answer /readyz on their own ports, on disjoint CPUs (when
 * this process may use two), each in its own process group. */
static void test_start_ready_pinned(void **state) {
    (void)state;
    struct herd_replica_pool_params p;
    params(&p, 2, 2, 2);
    create(&p);
    assert_int_equal(g.n_up, 2);
    want_ready = 2;
    assert_true(run_until(ready_reached, 60));
    assert_int_not_equal(g.reps[1].port, g.reps[2].port);
    assert_int_equal(herd_replica_pool_replica_port(g.pool, 1), g.reps[1].port);
    struct herd_replica_pool_status st;
    herd_replica_pool_status(g.pool, &st);
    assert_int_equal(st.running, 2);
    assert_int_equal(st.ready, 2);
    assert_int_equal(st.desired, 2);
    assert_int_equal(st.starts, 2);
    assert_int_equal(st.crashes, 0);

    cpu_set_t mine, a, b, both;
    assert_int_equal(sched_getaffinity(0, sizeof mine, &mine), 0);
    assert_int_equal(sched_getaffinity(g.reps[1].pid, sizeof a, &a), 0);
    assert_int_equal(sched_getaffinity(g.reps[2].pid, sizeof b, &b), 0);
    assert_int_equal(CPU_COUNT(&a), 1);
    assert_int_equal(CPU_COUNT(&b), 1);
    CPU_AND(&both, &a, &b);
    if (CPU_COUNT(&mine) >= 2) assert_int_equal(CPU_COUNT(&both), 0);
    assert_int_equal(getpgid(g.reps[1].pid), g.reps[1].pid);

    /* an idle start keeps its count through the scale-down window (300 s) */
    run_for(0.5);
    herd_replica_pool_status(g.pool, &st);
    assert_int_equal(st.running, 2);
    assert_int_equal(st.scale_downs, 0);
}

/* kill -9: the replica is gone, and a new one starts on the same CPUs
 * after the backoff, which doubles while the crashes repeat. */
static void test_crash_restart_backoff(void **state) {
    (void)state;
    struct herd_replica_pool_params p;
    params(&p, 1, 1, 1);
    p.backoff_initial_s = 0.3;
    p.backoff_max_s = 1;
    create(&p);
    want_ready = 1;
    assert_true(run_until(ready_reached, 60));
    cpu_set_t before, after;
    assert_int_equal(sched_getaffinity(g.reps[1].pid, sizeof before, &before), 0);

    assert_int_equal(kill(g.reps[1].pid, SIGKILL), 0);
    want_gone = 1;
    assert_true(run_until(gone_reached, 10));
    want_up = 2;
    assert_true(run_until(up_reached, 10));
    double delay1 = g.reps[2].up_s - g.reps[1].gone_s;
    assert_true(delay1 >= 0.3 - 0.02);
    want_ready = 1;
    assert_true(run_until(ready_reached, 60));
    assert_int_equal(sched_getaffinity(g.reps[2].pid, sizeof after, &after), 0);
    assert_true(CPU_EQUAL(&before, &after));

    /* again at once: the delay doubled */
    assert_int_equal(kill(g.reps[2].pid, SIGKILL), 0);
    want_up = 3;
    assert_true(run_until(up_reached, 10));
    double delay2 = g.reps[3].up_s - g.reps[2].gone_s;
    assert_true(delay2 >= 0.6 - 0.02);
    assert_true(delay2 > delay1);

    struct herd_replica_pool_status st;
    herd_replica_pool_status(g.pool, &st);
    assert_int_equal(st.crashes, 2);
    assert_int_equal(st.restarts, 2);
    assert_int_equal(st.starts, 3);
    assert_int_equal(st.port_races, 0);
}

/* The picker hands the first child a port a socket here listens on: the
 * child fails to bind and exits; the pool starts it again on a free port
 * at once, without counting a crash. */
static int g_taken_fd = -1;
static uint16_t g_taken_port;
static uint16_t pick_taken_once(void) {
    if (g_taken_fd >= 0 && g_taken_port) {
        uint16_t port = g_taken_port;
        g_taken_port = 0;
        return port;
    }
    return pick_port();
}

static void test_port_race(void **state) {
    (void)state;
    g_taken_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(g_taken_fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(g_taken_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(g_taken_fd, 4), 0);
    assert_int_equal(getsockname(g_taken_fd, (struct sockaddr *)&a, &len), 0);
    g_taken_port = ntohs(a.sin_port);
    uint16_t taken = g_taken_port;
    pick_port_fn = pick_taken_once;

    struct herd_replica_pool_params p;
    params(&p, 1, 1, 1);
    p.backoff_initial_s = 30; /* a crash would show as a long wait */
    create(&p);
    assert_int_equal(g.reps[1].port, taken);
    want_up = 2;
    assert_true(run_until(up_reached, 20));
    assert_true(g.reps[1].gone);
    assert_int_not_equal(g.reps[2].port, taken);
    want_ready = 1;
    assert_true(run_until(ready_reached, 60));
    struct herd_replica_pool_status st;
    herd_replica_pool_status(g.pool, &st);
    assert_int_equal(st.port_races, 1);
    assert_int_equal(st.crashes, 0);
    assert_int_equal(st.restarts, 0);
    pick_port_fn = pick_port;
    close(g_taken_fd);
    g_taken_fd = -1;
}

/* The metric rises: the pool grows to ceil(total / target) within max;
 * it falls: after the scale-down window the pool drains the extra ones,
 * each stopped only once its in-flight count is 0 (or the drain timeout
 * passed). */
static void test_scale_up_down_drain(void **state) {
    (void)state;
    struct herd_replica_pool_params p;
    params(&p, 1, 1, 3);
    p.as.target = 2;
    p.as.scale_down_window_s = 0.5;
    p.drain_timeout_s = 3;
    create(&p);
    want_ready = 1;
    assert_true(run_until(ready_reached, 60));

    g.observed = 5; /* ceil(5 / 2) = 3 */
    want_ready = 3;
    assert_true(run_until(ready_reached, 60));
    struct herd_replica_pool_status st;
    herd_replica_pool_status(g.pool, &st);
    assert_int_equal(st.running, 3);
    assert_int_equal(st.desired, 3);
    assert_int_equal(st.scale_ups, 1);
    g.observed = 100; /* past max: still 3 */
    run_for(0.3);
    herd_replica_pool_status(g.pool, &st);
    assert_int_equal(st.running, 3);

    /* the load ends; each drained replica has a request in flight */
    g.in_flight_on_drain = true;
    g.observed = 2.1; /* at 3 replicas: ceil(2.1 / 2) = 2 */
    double t0 = herd_time_now_s();
    want_live = 2;
    while (g.n_drained == 0 && herd_time_now_s() - t0 < 10) run_for(0.05);
    assert_int_equal(g.n_drained, 1);
    assert_true(herd_time_now_s() - t0 >= 0.4); /* the scale-down window */
    uint32_t victim = 0;
    for (uint32_t id = 1; id < MAX_IDS; id++)
        if (g.reps[id].drained) victim = id;
    /* its request holds it: not stopped */
    run_for(0.5);
    assert_false(g.reps[victim].gone);
    assert_int_equal(kill(g.reps[victim].pid, 0), 0);
    herd_replica_pool_status(g.pool, &st);
    assert_int_equal(st.draining, 1);
    assert_int_equal(st.running, 3);
    /* the request ends: stopped soon after (SIGTERM, herd serve exits 0) */
    g.reps[victim].in_flight = 0;
    assert_true(run_until(live_is, 10));
    assert_true(g.reps[victim].gone);
    herd_replica_pool_status(g.pool, &st);
    assert_int_equal(st.crashes, 0);
    assert_int_equal(st.scale_downs, 1);

    /* down to min; this drain's request never ends: the drain timeout stops it */
    g.observed = 0;
    double t1 = herd_time_now_s();
    want_live = 1;
    assert_true(run_until(live_is, 15));
    assert_true(herd_time_now_s() - t1 >= 3 - 0.05);
    herd_replica_pool_status(g.pool, &st);
    assert_int_equal(st.running, 1);
    assert_int_equal(st.desired, 1);
    assert_int_equal(st.crashes, 0);
    assert_int_equal(g.n_drained, 2);
}

/* min 0: nothing runs until a request arrives; then one starts at once,
 * and with the load gone the pool returns to zero. */
static void test_scale_from_zero(void **state) {
    (void)state;
    struct herd_replica_pool_params p;
    params(&p, 0, 0, 2);
    p.as.scale_down_window_s = 0.5;
    create(&p);
    run_for(0.3);
    assert_int_equal(g.n_up, 0);
    struct herd_replica_pool_status st;
    herd_replica_pool_status(g.pool, &st);
    assert_int_equal(st.running, 0);

    herd_replica_pool_demand(g.pool);
    assert_int_equal(g.n_up, 1);      /* inside the call */
    herd_replica_pool_demand(g.pool); /* one is starting: nothing more */
    assert_int_equal(g.n_up, 1);
    g.observed = 1; /* the router holds the request meanwhile */
    want_ready = 1;
    assert_true(run_until(ready_reached, 60));
    assert_int_equal(http_get(g.reps[1].port, "/v1/models"), 200);
    herd_replica_pool_status(g.pool, &st);
    assert_int_equal(st.running, 1);
    assert_int_equal(st.scale_ups, 1);

    g.observed = 0;
    want_live = 0;
    assert_true(run_until(live_is, 15));
    herd_replica_pool_status(g.pool, &st);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.desired, 0);
    assert_int_equal(st.crashes, 0);

    /* and up again */
    herd_replica_pool_demand(g.pool);
    assert_int_equal(g.n_up, 2);
}

/* destroy with replicas starting, ready and draining: all reaped
 * (teardown checks that no child is left). */
static void test_destroy_mid_drain(void **state) {
    (void)state;
    struct herd_replica_pool_params p;
    params(&p, 2, 1, 2);
    p.as.scale_down_window_s = 0;
    g.observed = 4; /* 2 replicas' worth until both are ready */
    create(&p);
    want_ready = 2;
    assert_true(run_until(ready_reached, 60));
    g.in_flight_on_drain = true;
    g.observed = 0;
    double t0 = herd_time_now_s();
    while (g.n_drained == 0 && herd_time_now_s() - t0 < 10) run_for(0.05);
    assert_int_equal(g.n_drained, 1);
    struct herd_replica_pool_status st;
    herd_replica_pool_status(g.pool, &st);
    assert_int_equal(st.draining, 1);
    assert_int_equal(st.running, 2);
}

int main(int argc, char **argv) {
    g.bin = argc > 1 ? argv[1] : getenv("HERD_TEST_BIN");
    if (!g.bin || access(g.bin, X_OK) != 0) {
        fprintf(stderr, "note: no herd binary (argv[1] or HERD_TEST_BIN)\n");
        return TEST_SKIP_EXIT;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_ready_pinned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_restart_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_port_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scale_up_down_drain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scale_from_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_mid_drain, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
