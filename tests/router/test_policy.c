/* herd route's replica choice (policy.h) and prefix index
 * (prefix_index.h), without sockets: each policy's rule, cache-aware's
 * release of an overloaded affinity, consistent hashing that two routers
 * agree on and that moves few keys when a replica joins, its load bound,
 * and the index's churn (deletion must not lose entries behind a hole). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "base/rng.h"
#include "router/policy.h"
#include "router/prefix_index.h"

static struct route_candidate cand(uint64_t key, double load, uint32_t prefix) {
    return (struct route_candidate){.key = key, .load = load, .weight = 1, .prefix_blocks = prefix};
}

static void test_round_robin_turns(void **state) {
    (void)state;
    struct route_policy_params p;
    route_policy_default_params(&p);
    struct route_policy_state s;
    route_policy_state_init(&s, 1);
    struct route_candidate c[3] = {cand(1, 5, 0), cand(2, 0, 0), cand(3, 9, 0)};
    enum route_reason why;
    int seen[3] = {0};
    for (int i = 0; i < 30; i++) seen[route_pick(ROUTE_ROUND_ROBIN, &p, &s, c, 3, 0, &why)]++;
    assert_int_equal(why, ROUTE_BY_TURN);
    assert_int_equal(seen[0], 10);
    assert_int_equal(seen[1], 10);
    assert_int_equal(seen[2], 10);
}

static void test_least_outstanding(void **state) {
    (void)state;
    struct route_policy_params p;
    route_policy_default_params(&p);
    struct route_policy_state s;
    route_policy_state_init(&s, 1);
    struct route_candidate c[3] = {cand(1, 5, 0), cand(2, 2, 0), cand(3, 9, 0)};
    enum route_reason why;
    assert_int_equal(route_pick(ROUTE_LEAST_OUTSTANDING, &p, &s, c, 3, 0, &why), 1);
    /* a warming replica (weight 0.1) counts as ten times as loaded */
    c[1].weight = 0.1;
    assert_int_equal(route_pick(ROUTE_LEAST_OUTSTANDING, &p, &s, c, 3, 0, &why), 0);
}

static void test_power_of_two_never_picks_the_worst(void **state) {
    (void)state;
    struct route_policy_params p;
    route_policy_default_params(&p);
    struct route_policy_state s;
    route_policy_state_init(&s, 7);
    struct route_candidate c[4] = {cand(1, 1, 0), cand(2, 2, 0), cand(3, 3, 0), cand(4, 100, 0)};
    enum route_reason why;
    int seen[4] = {0};
    for (int i = 0; i < 4000; i++) seen[route_pick(ROUTE_POWER_OF_TWO, &p, &s, c, 4, 0, &why)]++;
    assert_int_equal(seen[3], 0); /* the worst loses every pair it is in */
    assert_true(seen[0] > seen[1] && seen[1] > seen[2]);
}

static void test_cache_aware_follows_the_longest_prefix(void **state) {
    (void)state;
    struct route_policy_params p;
    route_policy_default_params(&p);
    struct route_policy_state s;
    route_policy_state_init(&s, 1);
    struct route_candidate c[3] = {cand(1, 1, 2), cand(2, 3, 7), cand(3, 0, 0)};
    enum route_reason why;
    assert_int_equal(route_pick(ROUTE_CACHE_AWARE, &p, &s, c, 3, 42, &why), 1);
    assert_int_equal(why, ROUTE_BY_PREFIX);
    /* overloaded by more than balance_abs and balance_rel: released */
    c[1].load = 10;
    assert_int_equal(route_pick(ROUTE_CACHE_AWARE, &p, &s, c, 3, 42, &why), 2);
    assert_int_equal(why, ROUTE_BY_LOAD);
    /* more than balance_abs, but not balance_rel times: kept */
    c[1].load = 20, c[2].load = 15, c[0].load = 16;
    assert_int_equal(route_pick(ROUTE_CACHE_AWARE, &p, &s, c, 3, 42, &why), 1);
    assert_int_equal(why, ROUTE_BY_PREFIX);
}

/* The release margin grows with the share of the prompt the holder has
 * cached: a holder with 62 of a prompt's 64 blocks (s / (1 - s) = 31) keeps
 * a request at 30 more in flight than the least loaded, releases it at 32;
 * with half the prompt the plain balance_abs (4) applies; with all of it,
 * only past 64. */
static void test_cache_aware_release_grows_with_the_cached_share(void **state) {
    (void)state;
    struct route_policy_params p;
    route_policy_default_params(&p);
    struct route_policy_state s;
    route_policy_state_init(&s, 1);
    struct route_candidate c[2] = {cand(1, 31, 62), cand(2, 1, 0)};
    c[0].prompt_blocks = c[1].prompt_blocks = 64;
    enum route_reason why;
    assert_int_equal(route_pick(ROUTE_CACHE_AWARE, &p, &s, c, 2, 42, &why), 0);
    assert_int_equal(why, ROUTE_BY_PREFIX);
    c[0].load = 33;
    assert_int_equal(route_pick(ROUTE_CACHE_AWARE, &p, &s, c, 2, 42, &why), 1);
    assert_int_equal(why, ROUTE_BY_LOAD);
    c[0].prefix_blocks = 32, c[0].load = 6;
    assert_int_equal(route_pick(ROUTE_CACHE_AWARE, &p, &s, c, 2, 42, &why), 1);
    assert_int_equal(why, ROUTE_BY_LOAD);
    c[0].load = 5;
    assert_int_equal(route_pick(ROUTE_CACHE_AWARE, &p, &s, c, 2, 42, &why), 0);
    c[0].prefix_blocks = 64, c[0].load = 60;
    assert_int_equal(route_pick(ROUTE_CACHE_AWARE, &p, &s, c, 2, 42, &why), 0);
    c[0].load = 70;
    assert_int_equal(route_pick(ROUTE_CACHE_AWARE, &p, &s, c, 2, 42, &why), 1);
}

static void test_hashing_agrees_and_moves_little(void **state) {
    (void)state;
    struct route_policy_params p;
    route_policy_default_params(&p);
    struct route_policy_state a, b;
    route_policy_state_init(&a, 1);
    route_policy_state_init(&b, 999); /* another router: another seed, same answers */
    struct route_candidate c[5];
    for (int i = 0; i < 5; i++) c[i] = cand(1000 + (uint64_t)i * 7919, 0, 0);
    enum route_reason why;
    int moved = 0, counts[5] = {0};
    for (uint64_t k = 0; k < 5000; k++) {
        const uint64_t key = herd_rng_mix(k);
        const size_t x = route_pick(ROUTE_CACHE_AWARE, &p, &a, c, 4, key, &why);
        assert_int_equal(why, ROUTE_BY_HASH);
        assert_int_equal(x, route_pick(ROUTE_CACHE_AWARE, &p, &b, c, 4, key, &why));
        counts[x]++;
        /* a fifth replica joins: only the keys it takes move */
        const size_t y = route_pick(ROUTE_CACHE_AWARE, &p, &a, c, 5, key, &why);
        if (y != x) {
            assert_int_equal(y, 4);
            moved++;
        }
    }
    assert_in_range(moved, 700, 1300); /* about a fifth */
    for (int i = 0; i < 4; i++) assert_in_range(counts[i], 1000, 1500);
}

static void test_hashing_bounds_load(void **state) {
    (void)state;
    struct route_policy_params p;
    route_policy_default_params(&p);
    struct route_candidate c[4];
    for (int i = 0; i < 4; i++) c[i] = cand(50 + (uint64_t)i, 0, 0);
    /* one hot key: bounded load spreads it once its favourite is full */
    for (int r = 0; r < 400; r++) {
        const size_t x = route_pick_hashed(&p, c, 4, 12345);
        c[x].load += 1;
    }
    double max = 0;
    for (int i = 0; i < 4; i++) max = fmax(max, c[i].load);
    assert_true(max <= ceil(1.1 * 400 / 4) + 2);
}

/* New kinds of prompt spread evenly: 8 keys placed one after another (each
 * then held where it went) end 2 / 2 / 2 / 2 over 4 replicas, where plain
 * rendezvous hashing of the same keys puts 3 or more on one of them. */
static void test_hashing_spreads_kinds(void **state) {
    (void)state;
    struct route_policy_params p;
    route_policy_default_params(&p);
    int worst_plain = 0;
    for (uint64_t seed = 0; seed < 50; seed++) {
        struct route_candidate c[4];
        int plain[4] = {0};
        for (int i = 0; i < 4; i++) c[i] = cand(50 + (uint64_t)i, 0, 0);
        for (uint64_t k = 0; k < 8; k++) {
            const uint64_t key = herd_rng_mix(seed * 100 + k);
            c[route_pick_hashed(&p, c, 4, key)].kinds++;
            struct route_candidate bare[4];
            for (int i = 0; i < 4; i++) bare[i] = cand(50 + (uint64_t)i, 0, 0);
            plain[route_pick_hashed(&p, bare, 4, key)]++;
        }
        for (int i = 0; i < 4; i++) {
            assert_int_equal(c[i].kinds, 2);
            worst_plain = plain[i] > worst_plain ? plain[i] : worst_plain;
        }
    }
    assert_true(worst_plain >= 3);
}

static void test_policy_names(void **state) {
    (void)state;
    enum route_policy p;
    for (int i = 0; i < ROUTE_POLICY_N; i++) {
        assert_true(route_policy_parse(route_policy_name((enum route_policy)i), &p));
        assert_int_equal(p, i);
    }
    assert_true(route_policy_parse("p2c", &p) && p == ROUTE_POWER_OF_TWO);
    assert_false(route_policy_parse("random", &p));
}

static void test_index_match_and_churn(void **state) {
    (void)state;
    struct prefix_index x;
    prefix_index_init(&x, 4096);
    uint64_t chain[8];
    for (int i = 0; i < 8; i++) chain[i] = herd_rng_mix(100 + (uint64_t)i);
    for (int i = 0; i < 5; i++) assert_true(prefix_index_put(&x, chain[i], INFINITY));
    assert_int_equal(prefix_index_match(&x, chain, 8, 0), 5);
    prefix_index_remove(&x, chain[2]);
    assert_int_equal(prefix_index_match(&x, chain, 8, 0), 2);
    /* a guess expires; a confirmation makes it stay */
    assert_true(prefix_index_put(&x, chain[2], 10));
    assert_int_equal(prefix_index_match(&x, chain, 8, 5), 5);
    assert_int_equal(prefix_index_match(&x, chain, 8, 11), 2);
    assert_true(prefix_index_put(&x, chain[2], INFINITY));
    assert_true(prefix_index_put(&x, chain[2], 1)); /* never downgraded */
    assert_int_equal(prefix_index_match(&x, chain, 8, 100), 5);
    /* churn: many inserts and deletes; what is in stays found */
    struct herd_rng rng;
    herd_rng_init(&rng, 3);
    enum { N = 1500 };
    static uint64_t keys[N];
    static bool in[N];
    for (int round = 0; round < 40000; round++) {
        const int k = (int)(herd_rng_u64(&rng) % N);
        if (!keys[k]) keys[k] = herd_rng_u64(&rng) | 2;
        if (in[k])
            prefix_index_remove(&x, keys[k]);
        else
            assert_true(prefix_index_put(&x, keys[k], INFINITY));
        in[k] = !in[k];
    }
    for (int k = 0; k < N; k++)
        if (keys[k]) assert_int_equal(prefix_index_has(&x, keys[k], 0), in[k]);
    prefix_index_cleanup(&x);
}

/* A reconnected stream: what the replica confirmed goes (its snapshot
 * brings back what is still held), the router's own guesses stay. */
static void test_index_drops_confirmed_keeps_guesses(void **state) {
    (void)state;
    struct prefix_index x;
    prefix_index_init(&x, 4096);
    for (uint64_t i = 1; i <= 600; i++) assert_true(prefix_index_put(&x, herd_rng_mix(i), i % 3 ? INFINITY : 50));
    prefix_index_drop_confirmed(&x);
    for (uint64_t i = 1; i <= 600; i++) assert_int_equal(prefix_index_has(&x, herd_rng_mix(i), 10), i % 3 == 0);
    assert_int_equal(x.n, 200);
    prefix_index_cleanup(&x);
}

static void test_index_is_bounded(void **state) {
    (void)state;
    struct prefix_index x;
    prefix_index_init(&x, 256);
    for (uint64_t i = 1; i < 10000; i++) assert_true(prefix_index_put(&x, herd_rng_mix(i), 1e9));
    assert_true(x.cap <= 256);
    assert_true(x.n <= 128);
    prefix_index_cleanup(&x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin_turns),
        cmocka_unit_test(test_least_outstanding),
        cmocka_unit_test(test_power_of_two_never_picks_the_worst),
        cmocka_unit_test(test_cache_aware_follows_the_longest_prefix),
        cmocka_unit_test(test_cache_aware_release_grows_with_the_cached_share),
        cmocka_unit_test(test_hashing_agrees_and_moves_little),
        cmocka_unit_test(test_hashing_bounds_load),
        cmocka_unit_test(test_hashing_spreads_kinds),
        cmocka_unit_test(test_policy_names),
        cmocka_unit_test(test_index_match_and_churn),
        cmocka_unit_test(test_index_drops_confirmed_keeps_guesses),
        cmocka_unit_test(test_index_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
