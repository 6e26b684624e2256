/* The HPA rule of src/router/autoscale.c: the raw recommendation and its
 * tolerance, each stabilisation window alone and together (Kubernetes'
 * worked example from KEP 853 among them), the bounds, scale from zero,
 * the history's reuse of old samples, and flapping load that the windows
 * must smooth into one change each way. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "router/autoscale.h"

static struct herd_autoscale_params params(uint32_t min, uint32_t max, double up_s, double down_s) {
    struct herd_autoscale_params p;
    herd_autoscale_default_params(&p);
    p.min_replicas = min;
    p.max_replicas = max;
    p.scale_up_window_s = up_s;
    p.scale_down_window_s = down_s;
    return p;
}

static void test_defaults(void **state) {
    (void)state;
    struct herd_autoscale_params p;
    herd_autoscale_default_params(&p);
    assert_true(p.target == 2);
    assert_true(p.tolerance == 0.1);
    assert_true(p.scale_up_window_s == 0);
    assert_true(p.scale_down_window_s == 300);
}

/* desired = ceil(total / target) = ceil(current * per_replica / target) */
static void test_desired_rule(void **state) {
    (void)state;
    assert_int_equal(herd_autoscale_desired(2, 12, 2, 0.1), 6);  /* 6 per replica, target 2: x3 */
    assert_int_equal(herd_autoscale_desired(4, 9, 2, 0.1), 5);   /* 4.5 rounds up */
    assert_int_equal(herd_autoscale_desired(4, 2, 2, 0.1), 1);   /* a quarter of the load */
    assert_int_equal(herd_autoscale_desired(4, 0, 2, 0.1), 0);   /* none: the bounds keep min */
    assert_int_equal(herd_autoscale_desired(3, 0.5, 2, 0.1), 1); /* ceil */
    assert_int_equal(herd_autoscale_desired(1, 1e12, 2, 0.1), UINT32_MAX);
    /* bad metrics count as no demand */
    assert_int_equal(herd_autoscale_desired(3, -5, 2, 0.1), 0);
    assert_int_equal(herd_autoscale_desired(3, 0.0 / 0.0, 2, 0.1), 0);
}

/* |ratio - 1| <= tolerance: no change, either way */
static void test_tolerance(void **state) {
    (void)state;
    /* 4 replicas x target 2 = 8: 8.7 and 7.3 are within 10 % */
    assert_int_equal(herd_autoscale_desired(4, 8.7, 2, 0.1), 4);
    assert_int_equal(herd_autoscale_desired(4, 7.3, 2, 0.1), 4);
    assert_int_equal(herd_autoscale_desired(4, 8, 2, 0.1), 4);
    /* just past it: the rule applies */
    assert_int_equal(herd_autoscale_desired(4, 8.9, 2, 0.1), 5);
    assert_int_equal(herd_autoscale_desired(4, 7.1, 2, 0.1), 4); /* ceil(3.55): the rule itself says 4 */
    assert_int_equal(herd_autoscale_desired(4, 5.9, 2, 0.1), 3);
    /* tolerance 0: any difference; ceil(8.1 / 2) = 5 */
    assert_int_equal(herd_autoscale_desired(4, 8.1, 2, 0), 5);
    /* a wide tolerance holds the count through large swings */
    assert_int_equal(herd_autoscale_desired(4, 11.9, 2, 0.5), 4);
    assert_int_equal(herd_autoscale_desired(4, 12.1, 2, 0.5), 7);
}

static void test_from_zero(void **state) {
    (void)state;
    assert_int_equal(herd_autoscale_desired(0, 0, 2, 0.1), 0);
    assert_int_equal(herd_autoscale_desired(0, 1, 2, 0.1), 1);
    assert_int_equal(herd_autoscale_desired(0, 50, 2, 0.1), 1); /* one now; the next syncs scale by the rule */

    /* through step: a scale-up window does not delay it */
    struct herd_autoscale_params p = params(0, 8, 60, 300);
    struct herd_autoscale_sample st[64];
    struct herd_autoscale_history h;
    herd_autoscale_history_init(&h, st, 64);
    assert_int_equal(herd_autoscale_step(&p, &h, 0, 0, 0), 0);
    assert_int_equal(herd_autoscale_step(&p, &h, 1, 0, 0), 0);
    assert_int_equal(herd_autoscale_step(&p, &h, 2, 0, 3), 1);
    /* then the scale-up window holds: it saw 0s within 60 s */
    assert_int_equal(herd_autoscale_step(&p, &h, 3, 1, 20), 1);
    /* and the sample of 1 keeps the replica through the scale-down window */
    assert_int_equal(herd_autoscale_step(&p, &h, 100, 1, 0), 1);
    assert_int_equal(herd_autoscale_step(&p, &h, 302, 1, 0), 1); /* t=2 is not after 302 - 300 */
    assert_int_equal(herd_autoscale_step(&p, &h, 304, 1, 0), 0);
}

/* Out of [min, max]: to the bound at once; the raw rule clamped too. */
static void test_bounds(void **state) {
    (void)state;
    struct herd_autoscale_params p = params(2, 5, 0, 0);
    struct herd_autoscale_sample st[16];
    struct herd_autoscale_history h;
    herd_autoscale_history_init(&h, st, 16);
    assert_int_equal(herd_autoscale_step(&p, &h, 0, 9, 0), 5); /* current > max */
    assert_int_equal(h.n, 0);                                  /* nothing recorded, as Kubernetes */
    assert_int_equal(herd_autoscale_step(&p, &h, 0, 1, 100), 2);
    assert_int_equal(herd_autoscale_step(&p, &h, 0, 0, 0), 2);
    assert_int_equal(h.n, 0);
    assert_int_equal(herd_autoscale_step(&p, &h, 1, 3, 100), 5); /* the rule says 50 */
    assert_int_equal(herd_autoscale_step(&p, &h, 2, 5, 0), 2);   /* the rule says 0; no window */
    assert_int_equal(h.n, 1); /* with windows of 0 the t=1 sample was older than both: replaced */
}

/* KEP 853's example: down window 600 s, a sync a minute, current 10; the
 * recommendations 10, 9, 8, 9, 9, 8, 9, 8, 9, 8 keep 10; one more (7) drops
 * the 10 out of the window and the count goes to 9. */
static void test_scale_down_window_kep_example(void **state) {
    (void)state;
    struct herd_autoscale_params p = params(1, 20, 0, 600);
    struct herd_autoscale_sample st[64];
    struct herd_autoscale_history h;
    herd_autoscale_history_init(&h, st, 64);
    const uint32_t recs[] = {10, 9, 8, 9, 9, 8, 9, 8, 9, 8};
    for (int i = 0; i < 10; i++) assert_int_equal(herd_autoscale_stabilize(&p, &h, 60.0 * i, 10, recs[i]), 10);
    /* minute 10: the sample of minute 0 is exactly 600 s old, no longer after the cutoff */
    assert_int_equal(herd_autoscale_stabilize(&p, &h, 600, 10, 7), 9);
}

/* The scale-up window: a rise must hold for the whole window; the count
 * rises to the least recommendation within it. */
static void test_scale_up_window(void **state) {
    (void)state;
    struct herd_autoscale_params p = params(1, 20, 10, 0);
    struct herd_autoscale_sample st[64];
    struct herd_autoscale_history h;
    herd_autoscale_history_init(&h, st, 64);
    /* 2 replicas, steady */
    assert_int_equal(herd_autoscale_step(&p, &h, 0, 2, 4), 2);
    /* load triples; the window still holds the 2 from t=0 */
    assert_int_equal(herd_autoscale_step(&p, &h, 1, 2, 12), 2);
    assert_int_equal(herd_autoscale_step(&p, &h, 5, 2, 12), 2);
    assert_int_equal(herd_autoscale_step(&p, &h, 9.5, 2, 12), 2);
    assert_int_equal(herd_autoscale_step(&p, &h, 10, 2, 12), 6); /* t=0 is not after 10 - 10 */
    /* a rise that does not last the window leaves the count: */
    assert_int_equal(herd_autoscale_step(&p, &h, 30, 6, 12), 6);
    assert_int_equal(herd_autoscale_step(&p, &h, 31, 6, 40), 6);
    assert_int_equal(herd_autoscale_step(&p, &h, 32, 6, 12), 6);
    /* a scale-down is not held by the scale-up window (down window 0) */
    assert_int_equal(herd_autoscale_step(&p, &h, 33, 6, 2), 1);
    /* the rise rises to the least of the window: 20, 16, 30 -> 8 */
    assert_int_equal(herd_autoscale_step(&p, &h, 40, 1, 20), 1); /* (30, 40]: 20, 6, 1, 10 */
    assert_int_equal(herd_autoscale_step(&p, &h, 45, 1, 16), 8); /* (35, 45]: 10, 8 */
    assert_int_equal(herd_autoscale_step(&p, &h, 46, 8, 30), 8); /* 10, 8, 15: least 8, no change */
}

/* Both windows: the count moves only towards a recommendation that held
 * in every sync of the window of its direction. */
static void test_windows_bound_both_ways(void **state) {
    (void)state;
    struct herd_autoscale_params p = params(1, 20, 3, 5);
    struct herd_autoscale_sample st[64];
    struct herd_autoscale_history h;
    herd_autoscale_history_init(&h, st, 64);
    uint32_t cur = 4;
    /* recommendations 4 (steady) */
    for (int t = 0; t < 6; t++) cur = herd_autoscale_step(&p, &h, t, cur, 8);
    assert_int_equal(cur, 4);
    /* a spike (10 recommended): the up window (t - 3, t] still holds a 4 */
    assert_int_equal(cur = herd_autoscale_step(&p, &h, 6, cur, 20), 4);
    assert_int_equal(cur = herd_autoscale_step(&p, &h, 7, cur, 20), 4);
    /* the third sync: (5, 8] holds 10s only */
    assert_int_equal(cur = herd_autoscale_step(&p, &h, 8, cur, 20), 10);
    /* a short dip (1 recommended), then the spike again: held at 10 */
    assert_int_equal(cur = herd_autoscale_step(&p, &h, 9, cur, 2), 10);
    assert_int_equal(cur = herd_autoscale_step(&p, &h, 10, cur, 2), 10);
    assert_int_equal(cur = herd_autoscale_step(&p, &h, 11, cur, 20), 10);
    /* a long dip: the count falls once (t - 5, t] holds no 10, at t = 16 */
    for (int t = 12; t < 16; t++) assert_int_equal(cur = herd_autoscale_step(&p, &h, t, cur, 2), 10);
    assert_int_equal(cur = herd_autoscale_step(&p, &h, 16, cur, 2), 1);
}

/* Load that flaps every sync between idle and busy: with no windows the
 * count follows every flap; with Kubernetes' windows it rises once (after
 * the up window) and never falls during the flapping. */
static void test_flapping_is_smoothed(void **state) {
    (void)state;
    struct herd_autoscale_sample st[256];
    struct herd_autoscale_history h;

    struct herd_autoscale_params raw = params(1, 10, 0, 0);
    herd_autoscale_history_init(&h, st, 256);
    uint32_t cur = 2, changes = 0;
    for (int t = 0; t < 60; t++) {
        double total = (t % 2) ? 16 : 1; /* 8 replicas' worth, then half of one */
        uint32_t next = herd_autoscale_step(&raw, &h, t, cur, total);
        changes += next != cur;
        cur = next;
    }
    assert_true(changes >= 58); /* every sync */

    /* Kubernetes' windows start empty: a history begins with steady load
     * (2 replicas, 4 waiting) for 40 syncs */
    struct herd_autoscale_params smooth = params(1, 10, 3, 30);
    herd_autoscale_history_init(&h, st, 256);
    cur = 2;
    for (int t = 0; t < 40; t++) cur = herd_autoscale_step(&smooth, &h, t, cur, 4);
    assert_int_equal(cur, 2);
    uint32_t ups = 0, downs = 0;
    for (int t = 40; t < 100; t++) {
        double total = (t % 2) ? 16 : 1;
        uint32_t next = herd_autoscale_step(&smooth, &h, t, cur, total);
        ups += next > cur;
        downs += next < cur;
        cur = next;
    }
    /* the up window always holds an idle sample (1): never up; the down
     * window always holds a busy one (8): never down */
    assert_int_equal(ups, 0);
    assert_int_equal(downs, 0);
    assert_int_equal(cur, 2);

    /* flapping between busy and very busy: rises once to the lower level,
     * holds through the flapping, and falls once the load really ends,
     * after the whole down window */
    herd_autoscale_history_init(&h, st, 256);
    cur = 2;
    for (int t = 0; t < 40; t++) cur = herd_autoscale_step(&smooth, &h, t, cur, 4);
    ups = downs = 0;
    int rose_at = -1;
    for (int t = 40; t < 100; t++) {
        double total = (t % 2) ? 16 : 10; /* at 2 replicas: 8, then 5 replicas' worth */
        uint32_t next = herd_autoscale_step(&smooth, &h, t, cur, total);
        if (next > cur && rose_at < 0) rose_at = t;
        ups += next > cur;
        downs += next < cur;
        cur = next;
    }
    assert_int_equal(ups, 1);
    assert_int_equal(rose_at, 42); /* (39, 42] holds no 2 */
    assert_int_equal(downs, 0);
    assert_int_equal(cur, 5); /* the least of the up window: the lower flap level */
    int fell_at = -1;
    for (int t = 100; t < 160; t++) {
        uint32_t next = herd_autoscale_step(&smooth, &h, t, cur, 0);
        if (next < cur && fell_at < 0) fell_at = t;
        downs += next < cur;
        cur = next;
    }
    assert_int_equal(downs, 1);
    assert_int_equal(cur, 1);
    assert_int_equal(fell_at, 129); /* t=99 was the last busy sample: out of (t - 30, t] at 129 */
}

/* The history reuses a sample older than both windows (Kubernetes' list),
 * so a long run in a small history keeps its windows exact. */
static void test_history_reuses_old_samples(void **state) {
    (void)state;
    struct herd_autoscale_params p = params(1, 100, 2, 5);
    uint32_t cap = herd_autoscale_history_cap(&p, 1);
    assert_true(cap >= 5 + 2);
    struct herd_autoscale_sample st[32];
    assert_true(cap <= 32);
    struct herd_autoscale_history h;
    herd_autoscale_history_init(&h, st, cap);
    uint32_t cur = 10;
    for (int t = 0; t < 10000; t++) {
        /* a slow wave: the count follows it, the windows bound each move */
        double total = 20 + 10 * ((t / 50) % 2);
        cur = herd_autoscale_step(&p, &h, t, cur, total);
        assert_true(h.n <= 7); /* samples at t-5 .. t, and one being replaced */
    }
    /* a full history without old samples: the oldest goes */
    struct herd_autoscale_sample two[2];
    herd_autoscale_history_init(&h, two, 2);
    herd_autoscale_stabilize(&p, &h, 0, 1, 9);
    herd_autoscale_stabilize(&p, &h, 1, 1, 8);
    herd_autoscale_stabilize(&p, &h, 2, 1, 7);
    assert_int_equal(h.n, 2);
    assert_true(h.samples[0].t_s == 2 && h.samples[0].desired == 7);
    assert_true(h.samples[1].t_s == 1);
}

/* Tolerance inside step: a metric hovering about the target never moves
 * the count, even with no windows. */
static void test_hovering_metric_holds(void **state) {
    (void)state;
    struct herd_autoscale_params p = params(1, 10, 0, 0);
    struct herd_autoscale_sample st[8];
    struct herd_autoscale_history h;
    herd_autoscale_history_init(&h, st, 8);
    uint32_t cur = 5;
    for (int t = 0; t < 100; t++) cur = herd_autoscale_step(&p, &h, t, cur, 10 + ((t % 3) - 1) * 0.9);
    assert_int_equal(cur, 5);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_desired_rule),
        cmocka_unit_test(test_tolerance),
        cmocka_unit_test(test_from_zero),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_scale_down_window_kep_example),
        cmocka_unit_test(test_scale_up_window),
        cmocka_unit_test(test_windows_bound_both_ways),
        cmocka_unit_test(test_flapping_is_smoothed),
        cmocka_unit_test(test_history_reuses_old_samples),
        cmocka_unit_test(test_hovering_metric_holds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
