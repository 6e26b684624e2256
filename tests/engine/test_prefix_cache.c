/* Prefix cache on its own: chained lookups, least-recently-used eviction
 * that skips blocks a sequence still uses, and long churn (tens of thousands
 * of insert / evict cycles, as a long-running server makes) after which
 * every cached prefix is still found and no other is: deleting from the
 * probing table must not lose entries behind the hole. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "base/rng.h"
#include "engine/prefix_cache.h"
#include "model/kv_cache.h"
#include "test_util.h"

enum { BT = 4, BLOCKS = 64 };

static struct herd_kv *make_kv(void) {
    struct herd_kv_params p = {.n_layer = 1,
                               .kv_dim = 8,
                               .head_dim = 8,
                               .block_tokens = BT,
                               .n_blocks = BLOCKS,
                               .max_seqs = 4,
                               .type = HERD_KV_F16};
    struct herd_kv *kv = NULL;
    struct herd_error err = {0};
    if (herd_kv_create(&p, &kv, &err) != HERD_OK) fail_msg("%s", err.msg);
    return kv;
}

/* A block that only the cache will hold: taken from the pool through a
 * one-block sequence, offered under the hash of tokens after prev. */
static int32_t cache_block(struct herd_kv *kv, struct herd_prefix_cache *pc, uint64_t prev, const int32_t *tokens,
                           uint64_t *hash) {
    int32_t seq, b;
    uint32_t n;
    struct herd_error err = {0};
    if (herd_kv_seq_new(kv, &seq, &err) != HERD_OK || herd_kv_seq_prepare(kv, seq, 0, BT, &err) != HERD_OK)
        fail_msg("%s", err.msg);
    b = herd_kv_seq_blocks(kv, seq, &n)[0];
    *hash = herd_block_hash(prev, tokens, BT);
    herd_prefix_cache_insert(pc, *hash, tokens, b);
    herd_kv_seq_free(kv, seq);
    return b;
}

static void test_chain_and_lru(void **state) {
    (void)state;
    struct herd_kv *kv = make_kv();
    struct herd_prefix_cache *pc = herd_prefix_cache_create(kv);
    const int32_t a[2 * BT] = {1, 2, 3, 4, 5, 6, 7, 8}, other[BT] = {9, 9, 9, 9};
    uint64_t h0, h1, h2, last;
    const int32_t b0 = cache_block(kv, pc, 0, a, &h0), b1 = cache_block(kv, pc, h0, a + BT, &h1);
    cache_block(kv, pc, 0, other, &h2);
    int32_t out[2];
    assert_int_equal(herd_prefix_cache_match(pc, a, 2, out, &last), 2);
    assert_int_equal(out[0], b0);
    assert_int_equal(out[1], b1);
    assert_true(last == h1);
    /* the second block alone does not match: its hash chains the first */
    assert_int_equal(herd_prefix_cache_match(pc, a + BT, 1, out, &last), 0);
    /* 'other' is now the least recently used: evicted first */
    assert_int_equal(herd_prefix_cache_evict(pc, 1), 1);
    assert_int_equal(herd_prefix_cache_match(pc, other, 1, out, &last), 0);
    assert_int_equal(herd_prefix_cache_match(pc, a, 2, out, &last), 2);
    /* a block a sequence uses again is skipped by eviction */
    herd_kv_block_ref(kv, b0);
    assert_int_equal(herd_prefix_cache_evict(pc, 2), 1);
    herd_kv_block_unref(kv, b0);
    assert_int_equal(herd_prefix_cache_match(pc, a, 1, out, &last), 1);
    assert_int_equal(herd_prefix_cache_evict(pc, 5), 1);
    assert_int_equal(herd_kv_free_blocks(kv), BLOCKS);
    herd_prefix_cache_destroy(pc);
    herd_kv_destroy(kv);
}

static void test_churn(void **state) {
    (void)state;
    struct herd_kv *kv = make_kv();
    struct herd_prefix_cache *pc = herd_prefix_cache_create(kv);
    struct herd_rng r;
    herd_rng_init(&r, 3);
    /* up to BLOCKS single-block prefixes live at a time, keyed by a number */
    enum { KEYS = 4096 };
    static bool live[KEYS];
    static int32_t block_of[KEYS];
    uint32_t n_live = 0;
    for (int round = 0; round < 60000; round++) {
        const uint32_t k = (uint32_t)(herd_rng_u64(&r) % KEYS);
        const int32_t t[BT] = {(int32_t)k, (int32_t)(k * 7), 1, 2};
        int32_t out;
        uint64_t last, h;
        const uint32_t m = herd_prefix_cache_match(pc, t, 1, &out, &last);
        if (m != (live[k] ? 1u : 0u)) fail_msg("round %d: key %u %s", round, k, live[k] ? "lost" : "found, not cached");
        if (m) {
            assert_int_equal(out, block_of[k]);
            continue;
        }
        if (n_live == BLOCKS) { /* full: evict the least recently used one */
            assert_int_equal(herd_prefix_cache_evict(pc, 1), 1);
            n_live--;
            uint32_t gone = 0;
            for (uint32_t j = 0; j < KEYS; j++) {
                if (!live[j]) continue;
                const int32_t tj[BT] = {(int32_t)j, (int32_t)(j * 7), 1, 2};
                if (herd_prefix_cache_match(pc, tj, 1, &out, &last) == 0) live[j] = false, gone++;
            }
            assert_int_equal(gone, 1);
        }
        block_of[k] = cache_block(kv, pc, 0, t, &h);
        live[k] = true;
        n_live++;
    }
    struct herd_prefix_cache_stats st;
    herd_prefix_cache_stats(pc, &st);
    assert_int_equal(st.entries, n_live);
    herd_prefix_cache_destroy(pc);
    assert_int_equal(herd_kv_free_blocks(kv), BLOCKS);
    herd_kv_destroy(kv);
}

/* A matched chain is evicted from its tail: the head still matches after
 * one block of it goes (evicting the head first left the rest cached but
 * unreachable). */
static void test_eviction_trims_the_tail(void **state) {
    (void)state;
    struct herd_kv *kv = make_kv();
    struct herd_prefix_cache *pc = herd_prefix_cache_create(kv);
    const int32_t a[3 * BT] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    uint64_t h0, h1, h2, last;
    const int32_t b0 = cache_block(kv, pc, 0, a, &h0), b1 = cache_block(kv, pc, h0, a + BT, &h1);
    cache_block(kv, pc, h1, a + 2 * BT, &h2);
    int32_t out[3];
    assert_int_equal(herd_prefix_cache_match(pc, a, 3, out, &last), 3);
    assert_int_equal(herd_prefix_cache_evict(pc, 1), 1);
    assert_int_equal(herd_prefix_cache_match(pc, a, 3, out, &last), 2);
    assert_int_equal(out[0], b0);
    assert_int_equal(out[1], b1);
    assert_true(last == h1);
    assert_int_equal(herd_prefix_cache_evict(pc, 1), 1);
    assert_int_equal(herd_prefix_cache_match(pc, a, 3, out, &last), 1);
    assert_int_equal(herd_prefix_cache_evict(pc, 1), 1);
    assert_int_equal(herd_prefix_cache_match(pc, a, 3, out, &last), 0);
    assert_int_equal(herd_kv_free_blocks(kv), BLOCKS);
    herd_prefix_cache_destroy(pc);
    herd_kv_destroy(kv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain_and_lru),
        cmocka_unit_test(test_eviction_trims_the_tail),
        cmocka_unit_test(test_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
