/* herd_sock (src/http/sock.h) on real sockets in this process: bytes both
 * ways, the read limit pausing and draining resuming, EOF, a write that
 * waits for the peer and its timeout, a connect that succeeds, one that is
 * refused, and output queued during a connect going out after it. Each
 * runs twice: with direct calls, and with batched I/O (io_uring; skipped
 * where the kernel does not allow it), whose loop runs a turn at a time.
 * Then batched only: more sockets in one turn than a batch holds, and
 * sockets freed by the callback of an earlier one in the same batch.
 * Every wait is bounded by the loop's own deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/sock.h"

struct seen {
    struct event_base *base;
    size_t reads;    /* on_read calls */
    size_t drained;  /* on_drained calls */
    int event;       /* the last on_event, or -1 */
    int err;         /* its errno */
    size_t stop_at;  /* the loop stops once the input holds this many bytes (0: never) */
    bool stop_event; /* the loop stops at an event */
};

static void on_read(struct herd_sock *s, void *arg) {
    struct seen *x = arg;
    x->reads++;
    if (x->stop_at && evbuffer_get_length(herd_sock_input(s)) >= x->stop_at) event_base_loopbreak(x->base);
}

static void on_drained(struct herd_sock *s, void *arg) {
    (void)s;
    struct seen *x = arg;
    x->drained++;
    event_base_loopbreak(x->base);
}

static void on_event(struct herd_sock *s, enum herd_sock_event what, int err, void *arg) {
    (void)s;
    struct seen *x = arg;
    x->event = (int)what;
    x->err = err;
    if (x->stop_event) event_base_loopbreak(x->base);
}

static const struct herd_sock_ops ops = {on_read, on_drained, on_event};

static bool batched; /* this run's mode (the group's setup) */

static int setup_direct(void **state) {
    (void)state;
    batched = false;
    return 0;
}

static int setup_batched(void **state) {
    (void)state;
    batched = true;
    return 0;
}

/* A loop; with batched I/O when this run is batched (skipped where the
 * kernel does not allow io_uring). */
static struct event_base *new_base(void) {
    struct event_base *base = event_base_new();
    assert_non_null(base);
    if (batched && !herd_sock_batch_begin(base)) {
        event_base_free(base);
        skip();
    }
    return base;
}

static void free_base(struct event_base *base) {
    if (batched) herd_sock_batch_end();
    event_base_free(base);
}

/* Runs the loop until a callback stops it, or 5 s. */
static void run(struct event_base *base) {
    struct timeval tv = {5, 0};
    event_base_loopexit(base, &tv);
    herd_sock_batch_dispatch(base);
}

/* Runs the loop for ms milliseconds. */
static void run_ms(struct event_base *base, int ms) {
    struct timeval tv = {0, ms * 1000};
    event_base_loopexit(base, &tv);
    herd_sock_batch_dispatch(base);
}

/* A flush as the owner's callback makes it, and the end of that loop turn
 * (where a batched one is written). */
static void flush_turn(struct herd_sock *s) {
    herd_sock_flush(s);
    if (batched) herd_sock_batch_run();
}

static void pair(int fd[2]) { assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0); }

static void test_read_write_and_eof(void **state) {
    (void)state;
    struct event_base *base = new_base();
    int fd[2];
    pair(fd);
    struct seen x = {.base = base, .event = -1, .stop_at = 5, .stop_event = true};
    struct herd_sock *s = herd_sock_new(base, fd[0], &ops, &x);
    assert_non_null(s);
    assert_int_equal(herd_sock_fd(s), fd[0]);
    herd_sock_set_reading(s, true);
    assert_int_equal(write(fd[1], "hello", 5), 5);
    run(base);
    assert_int_equal(evbuffer_get_length(herd_sock_input(s)), 5);
    assert_memory_equal(evbuffer_pullup(herd_sock_input(s), 5), "hello", 5);
    /* a flush writes at once (batched: at the end of the turn): no
     * waiting; on_drained only where the owner saw it pending */
    evbuffer_add(herd_sock_output(s), "world", 5);
    herd_sock_flush(s);
    assert_int_equal(herd_sock_pending(s), batched ? 5 : 0);
    if (batched) herd_sock_batch_run();
    assert_int_equal(herd_sock_pending(s), 0);
    assert_false(herd_sock_waiting(s));
    assert_int_equal(x.drained, batched ? 1 : 0);
    char buf[16];
    assert_int_equal(read(fd[1], buf, sizeof buf), 5);
    assert_memory_equal(buf, "world", 5);
    /* the peer closes: EOF */
    close(fd[1]);
    run(base);
    assert_int_equal(x.event, HERD_SOCK_EOF);
    herd_sock_free(s);
    free_base(base);
}

static void test_read_limit_pauses_and_drain_resumes(void **state) {
    (void)state;
    struct event_base *base = new_base();
    int fd[2];
    pair(fd);
    struct seen x = {.base = base, .event = -1};
    struct herd_sock *s = herd_sock_new(base, fd[0], &ops, &x);
    herd_sock_set_read_limit(s, 1000);
    herd_sock_set_reading(s, true);
    char big[3000];
    memset(big, 'x', sizeof big);
    assert_int_equal(write(fd[1], big, sizeof big), (ssize_t)sizeof big);
    run_ms(base, 100);
    /* one read took all 3000 (under READ_CHUNK), then reading paused */
    const size_t held = evbuffer_get_length(herd_sock_input(s));
    assert_int_equal(held, 3000);
    const size_t reads = x.reads;
    assert_int_equal(write(fd[1], big, 500), 500);
    run_ms(base, 100);
    assert_int_equal(x.reads, reads); /* paused: nothing more read */
    assert_int_equal(evbuffer_get_length(herd_sock_input(s)), held);
    /* the owner parses below the limit: reading resumes by itself */
    evbuffer_drain(herd_sock_input(s), held - 10);
    x.stop_at = 510;
    run(base);
    assert_int_equal(evbuffer_get_length(herd_sock_input(s)), 510);
    /* reading off: bytes stay in the socket */
    herd_sock_set_reading(s, false);
    const size_t reads2 = x.reads;
    assert_int_equal(write(fd[1], "abc", 3), 3);
    run_ms(base, 50);
    assert_int_equal(x.reads, reads2);
    herd_sock_free(s);
    close(fd[1]);
    free_base(base);
}

static void test_write_waits_then_drains_or_times_out(void **state) {
    (void)state;
    struct event_base *base = new_base();
    int fd[2];
    pair(fd);
    struct seen x = {.base = base, .event = -1, .stop_event = true};
    struct herd_sock *s = herd_sock_new(base, fd[0], &ops, &x);
    herd_sock_set_write_timeout(s, 0.2);
    /* more than the socket buffers take: the rest waits */
    static char blob[8 << 20];
    memset(blob, 'y', sizeof blob);
    evbuffer_add(herd_sock_output(s), blob, sizeof blob);
    flush_turn(s);
    assert_true(herd_sock_pending(s) > 0);
    assert_true(herd_sock_waiting(s));
    /* the peer reads it all: on_drained */
    size_t got = 0;
    static char buf[65536];
    for (int i = 0; i < 20000 && (got < sizeof blob || !x.drained); i++) {
        const ssize_t n = read(fd[1], buf, sizeof buf);
        if (n > 0) got += (size_t)n;
        run_ms(base, 1);
    }
    assert_int_equal(got, sizeof blob);
    assert_int_equal(x.drained, 1);
    assert_int_equal(herd_sock_pending(s), 0);
    /* again, and the peer reads nothing: the write timeout */
    evbuffer_add(herd_sock_output(s), blob, sizeof blob);
    flush_turn(s);
    run(base);
    assert_int_equal(x.event, HERD_SOCK_TIMEOUT);
    herd_sock_free(s);
    close(fd[1]);
    free_base(base);
}

static uint16_t listen_port(int *lfd) {
    *lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(*lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(*lfd, 4), 0);
    socklen_t l = sizeof a;
    getsockname(*lfd, (struct sockaddr *)&a, &l);
    return ntohs(a.sin_port);
}

static void test_connect_sends_what_was_queued(void **state) {
    (void)state;
    struct event_base *base = new_base();
    int lfd;
    const uint16_t port = listen_port(&lfd);
    struct seen x = {.base = base, .event = -1, .stop_event = true};
    struct herd_sock *s = herd_sock_new(base, -1, &ops, &x);
    assert_int_equal(herd_sock_fd(s), -1);
    evbuffer_add(herd_sock_output(s), "queued", 6);
    flush_turn(s); /* no socket yet: stays queued */
    assert_int_equal(herd_sock_pending(s), 6);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(herd_sock_connect(s, (struct sockaddr *)&a, sizeof a), 0);
    herd_sock_set_reading(s, true);
    run(base);
    assert_int_equal(x.event, HERD_SOCK_CONNECTED);
    assert_int_equal(herd_sock_pending(s), 0);
    int afd = -1;
    for (int i = 0; i < 500 && afd < 0; i++) {
        afd = accept(lfd, NULL, NULL);
        if (afd < 0) run_ms(base, 2);
    }
    assert_true(afd >= 0);
    fcntl(afd, F_SETFL, 0);
    char buf[16];
    assert_int_equal(read(afd, buf, sizeof buf), 6);
    assert_memory_equal(buf, "queued", 6);
    /* and an answer comes back */
    x.stop_at = 2;
    assert_int_equal(write(afd, "ok", 2), 2);
    run(base);
    assert_memory_equal(evbuffer_pullup(herd_sock_input(s), 2), "ok", 2);
    assert_int_equal(herd_sock_connect(s, (struct sockaddr *)&a, sizeof a), -1); /* once only */
    assert_int_equal(errno, EISCONN);
    herd_sock_free(s);
    close(afd);
    close(lfd);
    free_base(base);
}

static void test_connect_refused(void **state) {
    (void)state;
    struct event_base *base = new_base();
    int lfd;
    const uint16_t port = listen_port(&lfd);
    close(lfd); /* nobody listens there now */
    struct seen x = {.base = base, .event = -1, .stop_event = true};
    struct herd_sock *s = herd_sock_new(base, -1, &ops, &x);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (herd_sock_connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
        run(base); /* refused from the loop */
        assert_int_equal(x.event, HERD_SOCK_ERROR);
        assert_int_equal(x.err, ECONNREFUSED);
    } else {
        assert_int_equal(errno, ECONNREFUSED); /* refused at once */
    }
    herd_sock_free(s);
    free_base(base);
}

/* ------------------------------------------------------ batched only */

#define MANY 150 /* more than a batch's 64 reads in one turn */

struct many {
    struct event_base *base;
    struct herd_sock *s[MANY];
    int peer[MANY];
    int answered, freed;
};

static struct many *g_many; /* the test's sockets; each one's arg is its index */

static void many_read(struct herd_sock *s, void *arg) {
    const int i = (int)(intptr_t)arg;
    struct many *m = g_many;
    struct evbuffer *in = herd_sock_input(s);
    if (evbuffer_get_length(in) < 4) return;
    evbuffer_drain(in, 4);
    /* an answer, queued for the turn's end */
    evbuffer_add(herd_sock_output(s), "pong", 4);
    herd_sock_flush(s);
    m->answered++;
    /* an even socket ends its odd neighbour: that one may have a read in
     * this same batch, after this one */
    if (i % 2 == 0 && i + 1 < MANY && m->s[i + 1]) {
        herd_sock_free(m->s[i + 1]);
        m->s[i + 1] = NULL;
        m->freed++;
    }
}

static void many_event(struct herd_sock *s, enum herd_sock_event what, int err, void *arg) {
    (void)s, (void)what, (void)err, (void)arg;
}

static const struct herd_sock_ops many_ops = {many_read, NULL, many_event};

static void test_batch_many_sockets_and_frees_within_a_batch(void **state) {
    (void)state;
    struct event_base *base = new_base();
    static struct many m;
    memset(&m, 0, sizeof m);
    g_many = &m;
    m.base = base;
    for (int i = 0; i < MANY; i++) {
        int fd[2];
        pair(fd);
        m.peer[i] = fd[1];
        m.s[i] = herd_sock_new(base, fd[0], &many_ops, (void *)(intptr_t)i);
        assert_non_null(m.s[i]);
        herd_sock_set_reading(m.s[i], true);
    }
    /* every peer writes before the loop runs: one turn sees them all */
    for (int i = 0; i < MANY; i++) assert_int_equal(write(m.peer[i], "ping", 4), 4);
    for (int t = 0; t < 200 && m.answered + m.freed < MANY; t++) run_ms(base, 5);
    assert_int_equal(m.answered + m.freed, MANY);
    assert_true(m.freed > 0);
    /* every socket still open answered exactly once; a freed one's peer
     * sees it closed, answered or not */
    for (int i = 0; i < MANY; i++) {
        char buf[16];
        fcntl(m.peer[i], F_SETFL, 0);
        if (m.s[i]) {
            assert_int_equal(read(m.peer[i], buf, sizeof buf), 4);
            assert_memory_equal(buf, "pong", 4);
            herd_sock_free(m.s[i]);
        }
        ssize_t n;
        while ((n = read(m.peer[i], buf, sizeof buf)) > 0) assert_memory_equal(buf, "pong", (size_t)n);
        assert_int_equal(n, 0);
        close(m.peer[i]);
    }
    free_base(base);
}

int main(void) {
#define BOTH(t) cmocka_unit_test_setup(t, setup_direct), cmocka_unit_test_setup(t, setup_batched)
    const struct CMUnitTest tests[] = {
        BOTH(test_read_write_and_eof),
        BOTH(test_read_limit_pauses_and_drain_resumes),
        BOTH(test_write_waits_then_drains_or_times_out),
        BOTH(test_connect_sends_what_was_queued),
        BOTH(test_connect_refused),
        cmocka_unit_test_setup(test_batch_many_sockets_and_frees_within_a_batch, setup_batched),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
