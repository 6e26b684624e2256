/* The prefix cache's change feed for the state stream: off until started,
 * a snapshot that supersedes what was queued before it, changes in order,
 * an overflow told once and ended by the next snapshot, the prefix cache
 * telling it what it stores and evicts, and a producer and a reader on two
 * threads (run under ThreadSanitizer too) that never lose order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "engine/block_feed.h"
#include "engine/prefix_cache.h"
#include "model/kv_cache.h"
#include "test_util.h"

static void test_off_snapshot_order(void **state) {
    (void)state;
    struct herd_block_feed *f = herd_block_feed_create(8, 4);
    assert_non_null(f);
    struct herd_block_feed_take t;
    assert_false(herd_block_feed_on(f));
    herd_block_feed_push(f, 1, true); /* nobody listens: dropped */
    herd_block_feed_take(f, &t);
    assert_int_equal(t.n_changes, 0);
    assert_false(t.snapshot || t.overflowed);

    herd_block_feed_start(f);
    assert_true(herd_block_feed_on(f));
    assert_true(herd_block_feed_snapshot_wanted(f));
    herd_block_feed_push(f, 2, true); /* before the snapshot: in it */
    const uint64_t held[] = {2, 3};
    herd_block_feed_put_snapshot(f, held, 2);
    assert_false(herd_block_feed_snapshot_wanted(f));
    herd_block_feed_push(f, 4, true);
    herd_block_feed_push(f, 2, false);
    herd_block_feed_take(f, &t);
    assert_true(t.snapshot);
    assert_false(t.overflowed);
    assert_int_equal(t.n_hashes, 2);
    assert_int_equal(t.hashes[0], 2);
    assert_int_equal(t.hashes[1], 3);
    assert_int_equal(t.n_changes, 2);
    assert_int_equal(t.changes[0].hash, 4);
    assert_true(t.changes[0].stored);
    assert_int_equal(t.changes[1].hash, 2);
    assert_false(t.changes[1].stored);
    herd_block_feed_take(f, &t); /* taken once */
    assert_false(t.snapshot);
    assert_int_equal(t.n_changes, 0);

    herd_block_feed_stop(f);
    assert_false(herd_block_feed_on(f));
    herd_block_feed_push(f, 5, true);
    herd_block_feed_put_snapshot(f, held, 2); /* not asked for: ignored */
    herd_block_feed_take(f, &t);
    assert_false(t.snapshot);
    assert_int_equal(t.n_changes, 0);
    herd_block_feed_destroy(f);
}

static void test_overflow(void **state) {
    (void)state;
    struct herd_block_feed *f = herd_block_feed_create(4, 4);
    struct herd_block_feed_take t;
    herd_block_feed_start(f);
    herd_block_feed_put_snapshot(f, NULL, 0);
    herd_block_feed_take(f, &t);
    assert_true(t.snapshot);
    assert_int_equal(t.n_hashes, 0);
    for (uint64_t h = 1; h <= 5; h++) herd_block_feed_push(f, h, true); /* one more than fits */
    herd_block_feed_take(f, &t);
    assert_true(t.overflowed);
    assert_int_equal(t.n_changes, 0);
    assert_true(herd_block_feed_snapshot_wanted(f));
    herd_block_feed_push(f, 6, true); /* dropped until the snapshot */
    herd_block_feed_take(f, &t);
    assert_false(t.overflowed); /* told once */
    assert_int_equal(t.n_changes, 0);
    const uint64_t held[] = {1, 2, 3, 4, 5, 6};
    herd_block_feed_put_snapshot(f, held, 6); /* more than max_hashes: cut (defensive) */
    herd_block_feed_push(f, 7, true);
    herd_block_feed_take(f, &t);
    assert_false(t.overflowed);
    assert_true(t.snapshot);
    assert_int_equal(t.n_hashes, 4);
    assert_int_equal(t.n_changes, 1);
    assert_int_equal(t.changes[0].hash, 7);
    herd_block_feed_destroy(f);
}

enum { BT = 4, BLOCKS = 8 };

static void test_prefix_cache_tells(void **state) {
    (void)state;
    struct herd_kv_params p = {.n_layer = 1,
                               .kv_dim = 8,
                               .head_dim = 8,
                               .block_tokens = BT,
                               .n_blocks = BLOCKS,
                               .max_seqs = 2,
                               .type = HERD_KV_F16};
    struct herd_kv *kv = NULL;
    struct herd_error err = {0};
    if (herd_kv_create(&p, &kv, &err) != HERD_OK) fail_msg("%s", err.msg);
    struct herd_prefix_cache *pc = herd_prefix_cache_create(kv);
    struct herd_block_feed *f = herd_block_feed_create(16, BLOCKS);
    herd_prefix_cache_set_feed(pc, f);
    herd_block_feed_start(f);
    herd_block_feed_put_snapshot(f, NULL, 0);
    /* two blocks of a prefix, taken from the pool and left to the cache */
    const int32_t tokens[2 * BT] = {1, 2, 3, 4, 5, 6, 7, 8};
    int32_t seq;
    uint32_t n;
    if (herd_kv_seq_new(kv, &seq, &err) != HERD_OK || herd_kv_seq_prepare(kv, seq, 0, 2 * BT, &err) != HERD_OK)
        fail_msg("%s", err.msg);
    const int32_t *blocks = herd_kv_seq_blocks(kv, seq, &n);
    const uint64_t h0 = herd_block_hash(0, tokens, BT), h1 = herd_block_hash(h0, tokens + BT, BT);
    herd_prefix_cache_insert(pc, h0, tokens, blocks[0]);
    herd_prefix_cache_insert(pc, h1, tokens + BT, blocks[1]);
    herd_prefix_cache_insert(pc, h1, tokens + BT, blocks[1]); /* again: nothing new */
    herd_kv_seq_free(kv, seq);
    uint64_t listed[BLOCKS];
    assert_int_equal(herd_prefix_cache_hashes(pc, listed, BLOCKS), 2);
    assert_int_equal(listed[0], h0);
    assert_int_equal(listed[1], h1);
    assert_int_equal(herd_prefix_cache_evict(pc, 1), 1);
    struct herd_block_feed_take t;
    herd_block_feed_take(f, &t);
    assert_int_equal(t.n_changes, 3);
    assert_true(t.changes[0].hash == h0 && t.changes[0].stored);
    assert_true(t.changes[1].hash == h1 && t.changes[1].stored);
    assert_true(t.changes[2].hash == h0 && !t.changes[2].stored); /* least recently used first */
    herd_prefix_cache_destroy(pc);
    herd_block_feed_destroy(f);
    herd_kv_destroy(kv);
}

/* A producer storing 1, 2, 3, ... and a reader applying what it takes:
 * whenever it is in sync, the last hash it saw is exactly the count of
 * changes it applied since its snapshot's last. */
struct threads {
    struct herd_block_feed *f;
    atomic_bool done, reader_synced;
    atomic_uint_fast64_t produced;
};

static void *producer(void *arg) {
    struct threads *th = arg;
    const uint64_t none = 0;
    herd_block_feed_put_snapshot(th->f, &none, 1);
    while (!atomic_load(&th->reader_synced)) sched_yield(); /* then it races */
    for (uint64_t h = 1; h <= 200000; h++) {
        herd_block_feed_push(th->f, h, true);
        if (herd_block_feed_snapshot_wanted(th->f))
            herd_block_feed_put_snapshot(th->f, &h, 1); /* "everything up to h" */
        atomic_store(&th->produced, h);
    }
    atomic_store(&th->done, true);
    return NULL;
}

static void test_two_threads(void **state) {
    (void)state;
    struct threads th = {.f = herd_block_feed_create(64, 1)};
    atomic_init(&th.done, false);
    atomic_init(&th.reader_synced, false);
    atomic_init(&th.produced, 0);
    herd_block_feed_start(th.f);
    pthread_t t;
    pthread_create(&t, NULL, producer, &th);
    uint64_t last = 0, overflows = 0, snapshots = 0;
    bool synced = false;
    for (;;) {
        const bool done = atomic_load(&th.done);
        struct herd_block_feed_take k;
        herd_block_feed_take(th.f, &k);
        if (k.overflowed) {
            overflows++;
            synced = false;
        }
        if (k.snapshot) {
            snapshots++;
            last = k.hashes[0];
            synced = true;
            atomic_store(&th.reader_synced, true);
        }
        for (uint32_t i = 0; synced && i < k.n_changes; i++) {
            assert_int_equal(k.changes[i].hash, last + 1); /* none lost, none repeated, in order */
            last++;
        }
        if (done) break;
    }
    pthread_join(t, NULL);
    assert_true(snapshots >= 1);
    assert_true(overflows + 1 >= snapshots); /* each snapshot after the first answers an overflow */
    if (synced) assert_int_equal(last, atomic_load(&th.produced));
    herd_block_feed_destroy(th.f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_snapshot_order),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_prefix_cache_tells),
        cmocka_unit_test(test_two_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
