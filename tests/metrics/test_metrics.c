/* The metrics registry: exact exposition text in both formats, escaping,
 * histogram buckets, aliases, lock-free updates from many threads, and the
 * process metrics. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
// clang-format off
#include <cmocka.h>
// clang-format on

#include "metrics/metrics.h"

/* The registry rendered as a NUL-terminated string (caller frees). */
static char *render(struct herd_metrics *m, enum herd_metrics_format f, bool aliases) {
    struct herd_buf b;
    herd_buf_init(&b, 1 << 20);
    assert_true(herd_metrics_render(m, f, aliases, &b));
    char *s = malloc(b.len + 1);
    memcpy(s, b.data, b.len);
    s[b.len] = 0;
    herd_buf_cleanup(&b);
    return s;
}

/* A removed series leaves its family (first, middle and last of the list;
 * a series added after still renders, and one of the same labels again
 * starts from zero). */
static void test_series_remove(void **state) {
    (void)state;
    struct herd_metrics *m = herd_metrics_create();
    struct herd_metric_family *f = herd_metrics_family(m, "t_up", "Up.", HERD_METRIC_GAUGE, NULL, 0);
    const char *names[1] = {"replica"};
    const char *a[1] = {"a"}, *b[1] = {"b"}, *c[1] = {"c"}, *d[1] = {"d"};
    struct herd_metric *xa = herd_metric_series(f, 1, names, a), *xb = herd_metric_series(f, 1, names, b);
    struct herd_metric *xc = herd_metric_series(f, 1, names, c);
    herd_metric_set(xa, 1), herd_metric_set(xb, 2), herd_metric_set(xc, 3);
    herd_metric_series_remove(xb);
    herd_metric_series_remove(xc);
    herd_metric_set(herd_metric_series(f, 1, names, d), 4);
    char *s = render(m, HERD_METRICS_PROMETHEUS, true);
    assert_string_equal(s, "# HELP t_up Up.\n# TYPE t_up gauge\nt_up{replica=\"a\"} 1\nt_up{replica=\"d\"} 4\n");
    free(s);
    herd_metric_series_remove(xa);
    assert_true(herd_metric_value(herd_metric_series(f, 1, names, b)) == 0);
    s = render(m, HERD_METRICS_PROMETHEUS, true);
    assert_string_equal(s, "# HELP t_up Up.\n# TYPE t_up gauge\nt_up{replica=\"d\"} 4\nt_up{replica=\"b\"} 0\n");
    free(s);
    herd_metrics_destroy(m);
}

static void test_prometheus_text(void **state) {
    (void)state;
    struct herd_metrics *m = herd_metrics_create();
    struct herd_metric *c = herd_metrics_counter(m, "t_requests_total", "Requests.");
    struct herd_metric *g = herd_metrics_gauge(m, "t_queue", "Line one\nback\\slash \"q\".");
    const double bounds[] = {0.1, 1, 2.5};
    struct herd_metric *h = herd_metrics_histogram(m, "t_latency_seconds", "Latency.", bounds, 3);
    herd_metric_add(c, 3);
    herd_metric_add(c, 2);
    herd_metric_set(g, -1.5);
    herd_metric_observe(h, 0.1); /* le is inclusive */
    herd_metric_observe(h, 0.05);
    herd_metric_observe(h, 2);
    herd_metric_observe(h, 100);
    char *s = render(m, HERD_METRICS_PROMETHEUS, true);
    assert_string_equal(s, "# HELP t_requests_total Requests.\n"
                           "# TYPE t_requests_total counter\n"
                           "t_requests_total 5\n"
                           "# HELP t_queue Line one\\nback\\\\slash \"q\".\n"
                           "# TYPE t_queue gauge\n"
                           "t_queue -1.5\n"
                           "# HELP t_latency_seconds Latency.\n"
                           "# TYPE t_latency_seconds histogram\n"
                           "t_latency_seconds_bucket{le=\"0.1\"} 2\n"
                           "t_latency_seconds_bucket{le=\"1\"} 2\n"
                           "t_latency_seconds_bucket{le=\"2.5\"} 3\n"
                           "t_latency_seconds_bucket{le=\"+Inf\"} 4\n"
                           "t_latency_seconds_sum 102.15\n"
                           "t_latency_seconds_count 4\n");
    free(s);
    assert_int_equal(herd_metric_count(h), 4);
    assert_true(fabs(herd_metric_value(h) - 102.15) < 1e-9);
    herd_metrics_destroy(m);
}

static void test_openmetrics_and_labels(void **state) {
    (void)state;
    struct herd_metrics *m = herd_metrics_create();
    struct herd_metric_family *f =
        herd_metrics_family(m, "t_rejections_total", "Refused \"requests\".", HERD_METRIC_COUNTER, NULL, 0);
    herd_metric_family_alias(f, "vllm:t_rejections_total", "model_name", "my\"model\\\n");
    const char *names[] = {"reason"};
    const char *v1[] = {"queue_full"}, *v2[] = {"auth"};
    struct herd_metric *a = herd_metric_series(f, 1, names, v1);
    struct herd_metric *b = herd_metric_series(f, 1, names, v2);
    assert_ptr_equal(herd_metric_series(f, 1, names, v1), a);
    herd_metric_add(a, 1);
    herd_metric_add(b, 7);
    const char *p = "# HELP t_rejections_total Refused \"requests\".\n"
                    "# TYPE t_rejections_total counter\n"
                    "t_rejections_total{reason=\"queue_full\"} 1\n"
                    "t_rejections_total{reason=\"auth\"} 7\n";
    const char *alias = "# HELP vllm:t_rejections_total Refused \"requests\".\n"
                        "# TYPE vllm:t_rejections_total counter\n"
                        "vllm:t_rejections_total{model_name=\"my\\\"model\\\\\\n\",reason=\"queue_full\"} 1\n"
                        "vllm:t_rejections_total{model_name=\"my\\\"model\\\\\\n\",reason=\"auth\"} 7\n";
    char *s = render(m, HERD_METRICS_PROMETHEUS, false);
    assert_string_equal(s, p);
    free(s);
    s = render(m, HERD_METRICS_PROMETHEUS, true);
    char want[2048];
    snprintf(want, sizeof want, "%s%s", p, alias);
    assert_string_equal(s, want);
    free(s);
    /* OpenMetrics: the counter family without _total, help quotes escaped, # EOF */
    s = render(m, HERD_METRICS_OPENMETRICS, false);
    assert_string_equal(s, "# HELP t_rejections Refused \\\"requests\\\".\n"
                           "# TYPE t_rejections counter\n"
                           "t_rejections_total{reason=\"queue_full\"} 1\n"
                           "t_rejections_total{reason=\"auth\"} 7\n"
                           "# EOF\n");
    free(s);
    assert_int_equal(herd_metrics_negotiate(NULL), HERD_METRICS_PROMETHEUS);
    assert_int_equal(herd_metrics_negotiate("text/plain;version=0.0.4;q=0.3,*/*;q=0.2"), HERD_METRICS_PROMETHEUS);
    assert_int_equal(
        herd_metrics_negotiate("application/openmetrics-text;version=1.0.0,application/openmetrics-text;q=0.5"),
        HERD_METRICS_OPENMETRICS);
    herd_metrics_destroy(m);
}

static void test_render_ceiling(void **state) {
    (void)state;
    struct herd_metrics *m = herd_metrics_create();
    herd_metric_add(herd_metrics_counter(m, "t_total", "A counter with a long enough help text."), 1);
    struct herd_buf b;
    herd_buf_init(&b, 16);
    assert_false(herd_metrics_render(m, HERD_METRICS_PROMETHEUS, true, &b));
    herd_buf_cleanup(&b);
    herd_metrics_destroy(m);
}

struct hammer {
    struct herd_metric *c, *h;
};

static void *hammer_main(void *arg) {
    struct hammer *x = arg;
    for (int i = 0; i < 100000; i++) {
        herd_metric_add(x->c, 1);
        herd_metric_observe(x->h, (double)(i % 4));
    }
    return NULL;
}

/* No lock, no lost update: 4 threads x 100 000 updates each. */
static void test_concurrent_updates(void **state) {
    (void)state;
    struct herd_metrics *m = herd_metrics_create();
    struct hammer x;
    x.c = herd_metrics_counter(m, "t_total", "c");
    const double bounds[] = {0.5, 1.5, 2.5};
    x.h = herd_metrics_histogram(m, "t_h", "h", bounds, 3);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, hammer_main, &x);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    assert_true(herd_metric_value(x.c) == 400000.0);
    assert_int_equal(herd_metric_count(x.h), 400000);
    assert_true(herd_metric_value(x.h) == 4 * 25000.0 * (0 + 1 + 2 + 3));
    char *s = render(m, HERD_METRICS_PROMETHEUS, false);
    assert_non_null(strstr(s, "t_h_bucket{le=\"0.5\"} 100000\n"));
    assert_non_null(strstr(s, "t_h_bucket{le=\"2.5\"} 300000\n"));
    assert_non_null(strstr(s, "t_h_bucket{le=\"+Inf\"} 400000\n"));
    free(s);
    herd_metrics_destroy(m);
}

static double sample(const char *text, const char *name) {
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(text, key);
    assert_non_null(p);
    return strtod(p + strlen(key), NULL);
}

static void test_process_metrics(void **state) {
    (void)state;
    struct herd_metrics *m = herd_metrics_create();
    herd_metrics_register_process(m);
    volatile double burn = 0;
    for (int i = 0; i < 20000000; i++) burn += i * 0.5;
    assert_true(burn > 0); /* some CPU time spent, for the counter below */
    char *s = render(m, HERD_METRICS_PROMETHEUS, false);
    assert_true(sample(s, "process_cpu_seconds_total") > 0);
    assert_true(sample(s, "process_resident_memory_bytes") > 1e5);
    assert_true(sample(s, "process_virtual_memory_bytes") >= sample(s, "process_resident_memory_bytes"));
    assert_true(sample(s, "process_open_fds") >= 3);
    assert_true(sample(s, "process_max_fds") >= sample(s, "process_open_fds"));
    double start = sample(s, "process_start_time_seconds"), now = (double)time(NULL);
    assert_true(start > now - 3600 && start <= now + 2);
    free(s);
    herd_metrics_destroy(m);
}

static void test_exponential_bounds(void **state) {
    (void)state;
    double b[4];
    herd_metrics_exponential_bounds(b, 4, 0.001, 10);
    assert_true(b[0] == 0.001 && fabs(b[3] - 1.0) < 1e-12);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prometheus_text),    cmocka_unit_test(test_openmetrics_and_labels),
        cmocka_unit_test(test_series_remove),      cmocka_unit_test(test_render_ceiling),
        cmocka_unit_test(test_concurrent_updates), cmocka_unit_test(test_process_metrics),
        cmocka_unit_test(test_exponential_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
