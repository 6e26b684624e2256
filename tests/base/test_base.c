/* Unit tests for src/base: status messages, the bounded buffer, checked
 * arithmetic, the RNG, the thread pool's split runs. */
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/pool.h"
#include "base/checked.h"
#include "base/rng.h"
#include "base/utf8.h"
#include "herd/status.h"

static void test_error_set_and_prefix(void **state) {
    (void)state;
    struct herd_error err = {0};
    assert_int_equal(herd_error_set(&err, HERD_E_TRUNCATED, "at offset %d", 12), HERD_E_TRUNCATED);
    assert_string_equal(err.msg, "at offset 12");
    herd_error_prefix(&err, "file %s", "x.gguf");
    assert_string_equal(err.msg, "file x.gguf: at offset 12");
    assert_int_equal(err.code, HERD_E_TRUNCATED);
    assert_string_equal(herd_status_name(HERD_E_TRUNCATED), "truncated");
    assert_string_equal(herd_status_name(HERD_E_UNAVAILABLE), "unavailable");
    assert_string_equal(herd_status_name((enum herd_status)999), "unknown");
    assert_int_equal(herd_error_set(NULL, HERD_E_IO, "ignored"), HERD_E_IO);
}

static void test_error_message_is_bounded(void **state) {
    (void)state;
    struct herd_error err = {0};
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    herd_error_set(&err, HERD_E_INVALID, "%s", big);
    assert_int_equal(strlen(err.msg), HERD_ERROR_MSG_BYTES - 1);
    herd_error_prefix(&err, "%s", big);
    assert_int_equal(strlen(err.msg), HERD_ERROR_MSG_BYTES - 1);
}

static void test_buf_ceiling(void **state) {
    (void)state;
    struct herd_buf b;
    herd_buf_init(&b, 10);
    assert_true(herd_buf_append(&b, "12345", 5));
    assert_true(herd_buf_append_le(&b, 0x0403020100ull, 5));
    assert_int_equal(b.len, 10);
    assert_false(herd_buf_append(&b, "x", 1));
    assert_int_equal(b.len, 10);
    assert_memory_equal(b.data + 5, "\x00\x01\x02\x03\x04", 5);
    herd_buf_cleanup(&b);
}

static void test_checked_arithmetic(void **state) {
    (void)state;
    uint64_t r = 7;
    assert_false(herd_mul_u64(UINT64_MAX, 2, &r));
    assert_int_equal(r, 7);
    assert_false(herd_add_u64(UINT64_MAX, 1, &r));
    assert_true(herd_mul_u64(1u << 20, 1u << 20, &r));
    assert_int_equal(r, 1ull << 40);
    /* GGML_PAD(SIZE_MAX - 3, 32) wraps to 0 in ggml; here it fails. */
    assert_false(herd_align_up_u64(UINT64_MAX - 3, 32, &r));
    assert_true(herd_align_up_u64(33, 32, &r));
    assert_int_equal(r, 64);
    size_t s;
    assert_false(herd_mul_size(SIZE_MAX / 2 + 1, 2, &s));
}

static void test_rng_deterministic_and_normal(void **state) {
    (void)state;
    struct herd_rng a, b;
    herd_rng_init(&a, 42);
    herd_rng_init(&b, 42);
    for (int i = 0; i < 100; i++) assert_int_equal(herd_rng_u64(&a), herd_rng_u64(&b));
    herd_rng_init(&a, 1);
    double sum = 0, sq = 0;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double x = herd_rng_normal(&a);
        sum += x;
        sq += x * x;
    }
    double mean = sum / n, var = sq / n - mean * mean;
    assert_true(fabs(mean) < 0.01);
    assert_true(fabs(var - 1.0) < 0.02);
}

/* Every code point encodes and decodes back, and is a valid sequence;
 * overlong forms, surrogates, out-of-range and cut sequences are not. */
static void test_utf8(void **state) {
    (void)state;
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp += cp < 0x1000 ? 1 : 97) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        char b[4];
        size_t n = herd_utf8_encode(cp, b);
        assert_int_equal(herd_utf8_seq((const uint8_t *)b, n), (int)n);
        assert_int_equal(herd_utf8_decode(b, n), cp);
        if (n > 1) assert_int_equal(herd_utf8_seq((const uint8_t *)b, n - 1), 0);
    }
    static const char *const bad[] = {"\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80",
                                      "\xFF",     "\x80",         "\xC3\x28"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(herd_utf8_seq((const uint8_t *)bad[i], strlen(bad[i])), -1);
    assert_int_equal(herd_utf8_valid_prefix("ab\xC3\xA9"
                                            "c\xFF"
                                            "d",
                                            7),
                     5);
}

/* Runs one herd_log call with stderr redirected to a file; returns what
 * it wrote (static buffer). */
static const char *logged(enum herd_log_format f, enum herd_log_level min, enum herd_log_level l, const char *rid) {
    static char out[16384];
    char path[] = "/tmp/herd-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    herd_log_configure(f, min);
    const struct herd_log_field fields[3] = {HERD_LOG_S("path", "/v1/x \"q\"\n"), HERD_LOG_I("status", 200),
                                             HERD_LOG_N("ms", 1.5)};
    herd_log(l, "serve", rid, fields, 3, "request %d", 7);
    dup2(saved, STDERR_FILENO);
    close(saved);
    ssize_t n = pread(fd, out, sizeof out - 1, 0);
    close(fd);
    unlink(path);
    out[n > 0 ? n : 0] = 0;
    herd_log_configure(HERD_LOG_TEXT, HERD_LOG_INFO);
    return out;
}

static void test_log_lines(void **state) {
    (void)state;
    const char *j = logged(HERD_LOG_JSON, HERD_LOG_INFO, HERD_LOG_INFO, "req-1");
    const char *body = strchr(j, ',');
    assert_non_null(body);
    assert_true(strncmp(j, "{\"ts\":\"20", 9) == 0);
    assert_string_equal(body, ",\"level\":\"info\",\"component\":\"serve\",\"request_id\":\"req-1\",\"msg\":\"request "
                              "7\",\"path\":\"/v1/x \\\"q\\\"\\n\",\"status\":200,\"ms\":1.500}\n");
    const char *t = logged(HERD_LOG_TEXT, HERD_LOG_INFO, HERD_LOG_WARN, NULL);
    assert_non_null(strstr(t, "Z WARN serve request 7 path=\"/v1/x \\\"q\\\"\\n\" status=200 ms=1.500\n"));
    assert_string_equal(logged(HERD_LOG_TEXT, HERD_LOG_WARN, HERD_LOG_INFO, "r"), ""); /* below the level */
    enum herd_log_level lv;
    enum herd_log_format fm;
    assert_true(herd_log_parse_level("warn", &lv) && lv == HERD_LOG_WARN);
    assert_false(herd_log_parse_level("loud", &lv));
    assert_true(herd_log_parse_format("json", &fm) && fm == HERD_LOG_JSON);
    assert_false(herd_log_parse_format("xml", &fm));
}

struct split_count {
    _Atomic int *hits;
    _Atomic int ranges_by_thread[4];
    size_t grain, n;
    int bad_range;
    int stall_thread; /* this thread sleeps in its first range; -1: none */
    _Atomic int stalled;
};

static void count_range(void *ctx, int ith, size_t begin, size_t end) {
    struct split_count *c = ctx;
    if (begin >= end || end > c->n || end - begin > c->grain) c->bad_range = 1;
    if (ith == c->stall_thread && atomic_exchange(&c->stalled, 1) == 0) usleep(200 * 1000);
    atomic_fetch_add(&c->ranges_by_thread[ith], 1);
    for (size_t i = begin; i < end && i < c->n; i++) atomic_fetch_add(&c->hits[i], 1);
}

/* Every item runs exactly once in ranges of at most grain, whatever the
 * thread count, item count and grain. */
static void test_pool_split_runs_each_item_once(void **state) {
    (void)state;
    const size_t sizes[] = {1, 2, 7, 64, 1000, 4099};
    const size_t grains[] = {0, 1, 3, 64, 5000};
    for (int nth = 1; nth <= 4; nth++) {
        struct herd_pool *p = herd_pool_create(nth);
        assert_non_null(p);
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
            for (size_t gi = 0; gi < sizeof grains / sizeof *grains; gi++) {
                const size_t n = sizes[si];
                _Atomic int *hits = calloc(n, sizeof *hits);
                assert_non_null(hits);
                struct split_count c = {.hits = hits, .grain = grains[gi] ? grains[gi] : 1, .n = n, .stall_thread = -1};
                herd_pool_run_split(p, n, grains[gi], count_range, &c);
                assert_int_equal(c.bad_range, 0);
                for (size_t i = 0; i < n; i++) assert_int_equal(atomic_load(&hits[i]), 1);
                free(hits);
            }
        herd_pool_run_split(p, 0, 1, count_range, NULL); /* nothing to do: fn not called */
        herd_pool_destroy(p);
    }
}

/* A thread held up in its first range (as the OS preempting it would) does
 * not hold up its share: the other thread takes the rest of it. */
static void test_pool_split_takes_a_stalled_share(void **state) {
    (void)state;
    struct herd_pool *p = herd_pool_create(2);
    assert_non_null(p);
    for (int stall = 0; stall < 2; stall++) {
        const size_t n = 100;
        _Atomic int hits[100] = {0};
        struct split_count c = {.hits = hits, .grain = 1, .n = n, .stall_thread = stall};
        herd_pool_run_split(p, n, 1, count_range, &c);
        for (size_t i = 0; i < n; i++) assert_int_equal(atomic_load(&hits[i]), 1);
        /* the stalled thread ran at most the range it stalled in (none
         * when the other had taken everything before it started) */
        assert_true(atomic_load(&c.ranges_by_thread[stall]) <= 1);
        assert_int_equal(atomic_load(&c.ranges_by_thread[0]) + atomic_load(&c.ranges_by_thread[1]), 100);
    }
    herd_pool_destroy(p);
}

/* A team run: every thread makes the same collective calls, each split run
 * with its own ctx. */
struct team_test {
    struct herd_pool *pool;
    _Atomic int *hits;               /* [rounds][n_max]: times each item of each split ran */
    _Atomic int runs[4];             /* herd_pool_run calls seen per thread */
    _Atomic int slots[4];            /* what each thread wrote before the last barrier */
    int stall_thread;                /* sleeps before the split of round TEAM_STALL_ROUND; -1: none */
    const char *prefetch;            /* what the threads name to prefetch while they wait (TEAM_PREFETCH_BYTES) */
    _Atomic int ranges_by_thread[4]; /* in that round's split */
    int bad;
};

enum {
    TEAM_ROUNDS = 40,
    TEAM_N_MAX = 1000,
    TEAM_STALL_ROUND = 4 /* TEAM_N_MAX items */,
    TEAM_PREFETCH_BYTES = 1 << 18
};

struct team_member_ctx {
    struct team_test *t;
    int round;
};

static size_t team_round_items(int round) {
    static const size_t n[] = {0, 1, 7, 64, TEAM_N_MAX};
    return n[round % 5];
}

static void team_range(void *ctx, int ith, size_t begin, size_t end) {
    struct team_member_ctx *m = ctx;
    if (m->round == TEAM_STALL_ROUND) atomic_fetch_add(&m->t->ranges_by_thread[ith], 1);
    for (size_t i = begin; i < end; i++) atomic_fetch_add(&m->t->hits[(size_t)m->round * TEAM_N_MAX + i], 1);
}

static void team_count_run(void *ctx, int ith, int nth) {
    (void)nth;
    struct team_test *t = ctx;
    atomic_fetch_add(&t->runs[ith], 1);
}

static void team_body(void *ctx, int ith, int nth) {
    struct team_test *t = ctx;
    for (int r = 0; r < TEAM_ROUNDS; r++) {
        struct team_member_ctx m = {t, r}; /* each thread's own */
        if (r == TEAM_STALL_ROUND && ith == t->stall_thread) usleep(200 * 1000);
        /* a region to ask for while waiting: none, empty, or pieces of the
         * buffer (a hint: the collective calls give the same results) */
        const size_t pf_bytes = (size_t)(r % 4) * (TEAM_PREFETCH_BYTES / 4);
        herd_pool_prefetch_while_waiting(t->pool, r % 5 == 0 ? NULL : t->prefetch + (size_t)ith * 64,
                                         pf_bytes ? pf_bytes - 64 : 0);
        herd_pool_run_split(t->pool, team_round_items(r), (size_t)(r % 3 + 1), team_range, &m);
        /* every item of this split ran once, seen by every thread */
        for (size_t i = 0; i < team_round_items(r); i++)
            if (atomic_load(&t->hits[(size_t)r * TEAM_N_MAX + i]) != 1) t->bad = 1;
        herd_pool_run(t->pool, team_count_run, t);
        for (int k = 0; k < nth; k++)
            if (atomic_load(&t->runs[k]) != r + 1) t->bad = 1;
        atomic_store(&t->slots[ith], r);
        herd_pool_barrier(t->pool);
        for (int k = 0; k < nth; k++)
            if (atomic_load(&t->slots[k]) != r) t->bad = 1;
        herd_pool_barrier(t->pool); /* nobody writes round r + 1 before all have read round r */
    }
}

/* Runs team_body on p as a team (thread stall_thread late to one split, or
 * -1) and checks what its threads saw; t keeps the counts. */
static void run_team_body(struct herd_pool *p, int stall_thread, struct team_test *t) {
    char *prefetch = malloc(TEAM_PREFETCH_BYTES);
    assert_non_null(prefetch);
    *t = (struct team_test){.pool = p, .stall_thread = stall_thread, .prefetch = prefetch};
    t->hits = calloc((size_t)TEAM_ROUNDS * TEAM_N_MAX, sizeof *t->hits);
    assert_non_null(t->hits);
    herd_pool_run_team(p, team_body, t);
    assert_int_equal(t->bad, 0);
    free(t->hits);
    free(prefetch);
}

/* Collective split runs, runs and barriers inside a team run, any thread
 * count; then plain split runs on the same pool as before. */
static void test_pool_team_run(void **state) {
    (void)state;
    for (int nth = 1; nth <= 4; nth++) {
        struct herd_pool *p = herd_pool_create(nth);
        assert_non_null(p);
        for (int rep = 0; rep < 3; rep++) {
            struct team_test t;
            run_team_body(p, -1, &t);
            _Atomic int hits[64] = {0};
            herd_pool_prefetch_while_waiting(p, hits, sizeof hits); /* outside a team run: ignored */
            struct split_count c = {.hits = hits, .grain = 3, .n = 64, .stall_thread = -1};
            herd_pool_run_split(p, 64, 3, count_range, &c);
            for (size_t i = 0; i < 64; i++) assert_int_equal(atomic_load(&hits[i]), 1);
        }
        herd_pool_destroy(p);
    }
}

/* A thread of a team run that is late to a split (as the OS preempting it
 * would make it) does not hold its share up: the others take all of it. */
static void test_pool_team_takes_a_late_share(void **state) {
    (void)state;
    struct herd_pool *p = herd_pool_create(2);
    assert_non_null(p);
    for (int late = 0; late < 2; late++) {
        struct team_test t;
        run_team_body(p, late, &t);
        /* the other thread opened the late one's share and took it all,
         * in grains of 2 */
        assert_int_equal(atomic_load(&t.ranges_by_thread[late]), 0);
        assert_int_equal(atomic_load(&t.ranges_by_thread[1 - late]), TEAM_N_MAX / 2);
    }
    herd_pool_destroy(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_set_and_prefix),
        cmocka_unit_test(test_error_message_is_bounded),
        cmocka_unit_test(test_buf_ceiling),
        cmocka_unit_test(test_checked_arithmetic),
        cmocka_unit_test(test_rng_deterministic_and_normal),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_log_lines),
        cmocka_unit_test(test_pool_split_runs_each_item_once),
        cmocka_unit_test(test_pool_split_takes_a_stalled_share),
        cmocka_unit_test(test_pool_team_run),
        cmocka_unit_test(test_pool_team_takes_a_late_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
