/* Sampler: greedy, seeded determinism, the filters' effect, the drawn
 * distribution against the filters' definition, bias and penalties, and
 * parameter validation. */
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

/* The distribution actually drawn, against the filters' definition computed
 * here in double: 1,000 tokens whose logits fall slowly with rank (so top-p
 * 0.9 needs hundreds of them: several rounds of the quickselect by mass),
 * shuffled in id order, one banned. Frequencies of rank bands over 20,000
 * seeded draws within 0.02 of the expected mass (~6 standard deviations),
 * and nothing outside the kept set. */
enum { DV = 1000, DRAWS = 20000 };

static void check_distribution(float temp, uint32_t top_k, float top_p, float min_p) {
    static float l[DV];
    static int rank_of[DV], count[DV];
    static double want[DV];
    for (int r = 0; r < DV; r++) rank_of[(r * 7919) % DV] = r; /* 7919 is prime: a permutation */
    for (int i = 0; i < DV; i++) l[i] = -0.012f * (float)rank_of[i];
    const int banned = (5 * 7919) % DV; /* the token of rank 5 */
    struct herd_logit_bias bias = {banned, -INFINITY};
    /* expected: weights by rank, then top-k, top-p (of the kept mass), min-p */
    double w[DV], total = 0;
    for (int r = 0; r < DV; r++) w[r] = r == 5 ? 0 : exp(-0.012 * r / temp);
    int n = DV;
    if (top_k && (int)top_k < n) n = (int)top_k + 1; /* + the banned one, weight 0 */
    for (int r = 0; r < n; r++) total += w[r];
    if (top_p < 1) {
        double cum = 0;
        for (int r = 0; r < n; r++) {
            cum += w[r] / total;
            if (cum >= top_p) {
                n = r + 1;
                break;
            }
        }
    }
    for (int r = 0; r < n; r++)
        if (w[r] < min_p * w[0]) w[r] = 0;
    total = 0;
    for (int r = 0; r < DV; r++) total += r < n ? w[r] : 0;
    for (int r = 0; r < DV; r++) want[r] = r < n ? w[r] / total : 0, count[r] = 0;

    struct herd_sampler_params p;
    herd_sampler_default_params(&p);
    p.temperature = temp, p.top_k = top_k, p.top_p = top_p, p.min_p = min_p, p.seed = 77;
    p.bias = &bias, p.n_bias = 1;
    struct herd_error err = {0};
    struct herd_sampler *s = NULL;
    if (herd_sampler_create(&p, DV, &s, &err) != HERD_OK) fail_msg("%s", err.msg);
    for (int i = 0; i < DRAWS; i++) {
        const int32_t t = herd_sampler_sample(s, l);
        assert_true(t >= 0 && t < DV);
        if (want[rank_of[t]] == 0)
            fail_msg("T %g k %u p %g min-p %g: drew rank %d, outside the kept set", temp, top_k, top_p, min_p,
                     rank_of[t]);
        count[rank_of[t]]++;
    }
    herd_sampler_destroy(s);
    const int bands[] = {0, 5, 20, 60, 150, 300, 600, DV};
    for (int b = 0; b + 1 < (int)(sizeof bands / sizeof *bands); b++) {
        double got = 0, expect = 0;
        for (int r = bands[b]; r < bands[b + 1]; r++) got += (double)count[r] / DRAWS, expect += want[r];
        if (fabs(got - expect) > 0.02)
            fail_msg("T %g k %u p %g min-p %g: ranks %d-%d drawn %.4f, expected %.4f", temp, top_k, top_p, min_p,
                     bands[b], bands[b + 1] - 1, got, expect);
    }
}

static void test_drawn_distribution(void **state) {
    (void)state;
    check_distribution(1.0f, 0, 1.0f, 0.0f);   /* the whole distribution, no sort */
    check_distribution(0.8f, 0, 0.9f, 0.0f);   /* top-p past the partial selection */
    check_distribution(1.0f, 0, 0.3f, 0.0f);   /* top-p within the first 64 */
    check_distribution(1.0f, 0, 1.0f, 0.2f);   /* min-p alone, a floor without a sort */
    check_distribution(1.3f, 0, 0.6f, 0.1f);   /* min-p before top-p's sort */
    check_distribution(1.0f, 100, 0.5f, 0.5f); /* top-k, then top-p of its mass, then min-p */
    check_distribution(2.0f, 400, 1.0f, 0.0f); /* top-k beyond the insertion's 256 */
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
        cmocka_unit_test(test_greedy_and_ties),    cmocka_unit_test(test_seed_determinism_and_filters),
        cmocka_unit_test(test_drawn_distribution), cmocka_unit_test(test_bias_and_penalties),
        cmocka_unit_test(test_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
