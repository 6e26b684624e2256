/* Sampler: greedy, seeded determinism, the filters' effect, bias and
 * penalties, and parameter validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "sampling/sampler.h"
#include "test_util.h"

enum { V = 100 };

static struct herd_sampler *make(struct herd_sampler_params *p) {
    struct herd_error err = {0};
    struct herd_sampler *s = NULL;
    if (herd_sampler_create(p, V, &s, &err) != HERD_OK) fail_msg("%s", err.msg);
    return s;
}

static void logits(float *l) {
    for (int i = 0; i < V; i++) l[i] = (float)(i % 10) * 0.5f; /* ties: 9, 19, ..., 99 share the max */
    l[42] = 10.0f;
    l[43] = 9.5f;
}

static void test_greedy_and_ties(void **state) {
    (void)state;
    struct herd_sampler_params p;
    herd_sampler_default_params(&p);
    struct herd_sampler *s = make(&p);
    float l[V];
    logits(l);
    assert_int_equal(herd_sampler_sample(s, l), 42);
    l[42] = 0;
    l[43] = 0;
    assert_int_equal(herd_sampler_sample(s, l), 9); /* lowest id of the tied best */
    herd_sampler_destroy(s);
}

static void test_seed_determinism_and_filters(void **state) {
    (void)state;
    struct herd_sampler_params p;
    herd_sampler_default_params(&p);
    p.temperature = 1.5f;
    p.seed = 1234;
    float l[V];
    logits(l);
    struct herd_sampler *a = make(&p), *b = make(&p);
    int seen[V] = {0};
    for (int i = 0; i < 500; i++) {
        int32_t x = herd_sampler_sample(a, l), y = herd_sampler_sample(b, l);
        assert_int_equal(x, y);
        seen[x]++;
    }
    int distinct = 0;
    for (int i = 0; i < V; i++) distinct += seen[i] > 0;
    assert_true(distinct > 10); /* a real distribution, not argmax */
    herd_sampler_destroy(a);
    herd_sampler_destroy(b);

    p.top_k = 2;
    a = make(&p);
    for (int i = 0; i < 200; i++) {
        int32_t x = herd_sampler_sample(a, l);
        assert_true(x == 42 || x == 43);
    }
    herd_sampler_destroy(a);
    p.top_k = 0;
    p.top_p = 0.01f;
    a = make(&p);
    for (int i = 0; i < 50; i++) assert_int_equal(herd_sampler_sample(a, l), 42);
    herd_sampler_destroy(a);
    p.top_p = 1.0f;
    p.min_p = 0.5f; /* keeps tokens within ln 2 * T of the best: 42 and 43 */
    a = make(&p);
    for (int i = 0; i < 200; i++) {
        int32_t x = herd_sampler_sample(a, l);
        assert_true(x == 42 || x == 43);
    }
    herd_sampler_destroy(a);
}

static void test_bias_and_penalties(void **state) {
    (void)state;
    struct herd_sampler_params p;
    herd_sampler_default_params(&p);
    struct herd_logit_bias ban[2] = {{42, -INFINITY}, {7, 50.0f}};
    p.bias = ban;
    p.n_bias = 2;
    struct herd_sampler *s = make(&p);
    float l[V];
    logits(l);
    assert_int_equal(herd_sampler_sample(s, l), 7);
    herd_sampler_destroy(s);

    herd_sampler_default_params(&p);
    p.repeat_penalty = 10.0f;
    s = make(&p);
    herd_sampler_accept(s, 42);
    assert_int_equal(herd_sampler_sample(s, l), 43); /* 10 / 10 = 1 < 9.5 */
    herd_sampler_destroy(s);

    herd_sampler_default_params(&p);
    p.frequency_penalty = 0.4f;
    s = make(&p);
    herd_sampler_accept(s, 42);
    assert_int_equal(herd_sampler_sample(s, l), 42); /* 10 - 0.4 = 9.6 > 9.5 */
    herd_sampler_accept(s, 42);
    assert_int_equal(herd_sampler_sample(s, l), 43); /* 10 - 2 x 0.4 = 9.2 < 9.5 */
    herd_sampler_destroy(s);

    herd_sampler_default_params(&p);
    p.presence_penalty = 0.6f;
    p.penalty_last_n = 2;
    s = make(&p);
    herd_sampler_accept(s, 42);
    herd_sampler_accept(s, 42);
    assert_int_equal(herd_sampler_sample(s, l), 43); /* once, whatever the count: 9.4 */
    herd_sampler_accept(s, 1);
    herd_sampler_accept(s, 2); /* 42 has left the window of 2 */
    assert_int_equal(herd_sampler_sample(s, l), 42);
    herd_sampler_destroy(s);
}

static void test_validation(void **state) {
    (void)state;
    struct herd_sampler_params p;
    struct herd_error err = {0};
    struct herd_sampler *s = NULL;
    herd_sampler_default_params(&p);
    p.temperature = NAN;
    assert_int_equal(herd_sampler_create(&p, V, &s, &err), HERD_E_INVALID);
    herd_sampler_default_params(&p);
    p.top_p = 2;
    assert_int_equal(herd_sampler_create(&p, V, &s, &err), HERD_E_INVALID);
    herd_sampler_default_params(&p);
    struct herd_logit_bias bad = {V, 1.0f};
    p.bias = &bad;
    p.n_bias = 1;
    assert_int_equal(herd_sampler_create(&p, V, &s, &err), HERD_E_INVALID);
    assert_null(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_and_ties),
        cmocka_unit_test(test_seed_determinism_and_filters),
        cmocka_unit_test(test_bias_and_penalties),
        cmocka_unit_test(test_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
