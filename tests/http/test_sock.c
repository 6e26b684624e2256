/* herd_sock (src/http/sock.h) on real sockets in this process: bytes both
 * ways, the read limit pausing and draining resuming, EOF, a write that
 * waits for the peer and its timeout, a connect that succeeds, one that is
 * refused, and output queued during a connect going out after it. Every
 * wait is bounded by the loop's own deadline. */
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

/* Runs the loop until a callback stops it, or 5 s. */
static void run(struct event_base *base) {
    struct timeval tv = {5, 0};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

/* Runs the loop for ms milliseconds. */
static void run_ms(struct event_base *base, int ms) {
    struct timeval tv = {0, ms * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static void pair(int fd[2]) { assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0); }

static void test_read_write_and_eof(void **state) {
    (void)state;
    struct event_base *base = event_base_new();
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
    /* a flush writes at once: no waiting, no on_drained */
    evbuffer_add(herd_sock_output(s), "world", 5);
    herd_sock_flush(s);
    assert_int_equal(herd_sock_pending(s), 0);
    assert_false(herd_sock_waiting(s));
    char buf[16];
    assert_int_equal(read(fd[1], buf, sizeof buf), 5);
    assert_memory_equal(buf, "world", 5);
    /* the peer closes: EOF */
    close(fd[1]);
    run(base);
    assert_int_equal(x.event, HERD_SOCK_EOF);
    herd_sock_free(s);
    event_base_free(base);
}

static void test_read_limit_pauses_and_drain_resumes(void **state) {
    (void)state;
    struct event_base *base = event_base_new();
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
    event_base_free(base);
}

static void test_write_waits_then_drains_or_times_out(void **state) {
    (void)state;
    struct event_base *base = event_base_new();
    int fd[2];
    pair(fd);
    struct seen x = {.base = base, .event = -1, .stop_event = true};
    struct herd_sock *s = herd_sock_new(base, fd[0], &ops, &x);
    herd_sock_set_write_timeout(s, 0.2);
    /* more than the socket buffers take: the rest waits */
    static char blob[8 << 20];
    memset(blob, 'y', sizeof blob);
    evbuffer_add(herd_sock_output(s), blob, sizeof blob);
    herd_sock_flush(s);
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
    herd_sock_flush(s);
    run(base);
    assert_int_equal(x.event, HERD_SOCK_TIMEOUT);
    herd_sock_free(s);
    close(fd[1]);
    event_base_free(base);
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
    struct event_base *base = event_base_new();
    int lfd;
    const uint16_t port = listen_port(&lfd);
    struct seen x = {.base = base, .event = -1, .stop_event = true};
    struct herd_sock *s = herd_sock_new(base, -1, &ops, &x);
    assert_int_equal(herd_sock_fd(s), -1);
    evbuffer_add(herd_sock_output(s), "queued", 6);
    herd_sock_flush(s); /* no socket yet: stays queued */
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
    event_base_free(base);
}

static void test_connect_refused(void **state) {
    (void)state;
    struct event_base *base = event_base_new();
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
    event_base_free(base);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_write_and_eof),
        cmocka_unit_test(test_read_limit_pauses_and_drain_resumes),
        cmocka_unit_test(test_write_waits_then_drains_or_times_out),
        cmocka_unit_test(test_connect_sends_what_was_queued),
        cmocka_unit_test(test_connect_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
