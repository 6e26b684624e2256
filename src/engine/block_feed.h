/* The prefix cache's changes as they happen, for `herd serve`'s state
 * stream (GET /v1/herd/state, docs/modules/router-protocol.md): the
 * scheduler thread appends the chained hash of each block the cache takes
 * in or drops; one reader (the server's loop thread) takes them every few
 * milliseconds and tells the routers subscribed.
 *
 * Off until the reader starts it: the scheduler then pays one relaxed
 * atomic load per cached or evicted block, nothing more. Bounded: a reader
 * that falls cap changes behind makes the feed overflow; from then on
 * changes are dropped, the reader's next take says so (it must forget every
 * hash) and a snapshot is asked for. A snapshot is every hash the cache
 * holds at one moment, taken by the scheduler thread between two steps
 * (herd_block_feed_snapshot_wanted / _put_snapshot), so it and the changes
 * queued after it are consistent: the snapshot replaces the reader's set,
 * the changes apply on top in order. */
#ifndef HERD_ENGINE_BLOCK_FEED_H
#define HERD_ENGINE_BLOCK_FEED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct herd_block_change {
    uint64_t hash;
    bool stored; /* taken in; false: evicted */
};

struct herd_block_feed;

/* Room for cap queued changes and snapshots of up to max_hashes hashes
 * (the KV blocks: the cache holds at most one entry per block). NULL on
 * out of memory. Free with herd_block_feed_destroy (NULL is a no-op). */
struct herd_block_feed *herd_block_feed_create(uint32_t cap, uint32_t max_hashes);
void herd_block_feed_destroy(struct herd_block_feed *f);

/* ------------------------------------------------ the producer's side */

/* Whether a reader listens (relaxed: a change pushed just after stop is
 * dropped by push itself). Scheduler thread. */
bool herd_block_feed_on(const struct herd_block_feed *f);
/* Queues one change; dropped while off or overflowed. Scheduler thread. */
void herd_block_feed_push(struct herd_block_feed *f, uint64_t hash, bool stored);
/* A snapshot was asked for (start, or an overflow): the scheduler
 * thread calls herd_block_feed_put_snapshot between two steps. */
bool herd_block_feed_snapshot_wanted(const struct herd_block_feed *f);
/* The snapshot: hashes[n] (n <= max_hashes) is every hash held now. Drops
 * the queued changes (the snapshot includes them) and ends an overflow. */
void herd_block_feed_put_snapshot(struct herd_block_feed *f, const uint64_t *hashes, uint32_t n);

/* -------------------------------------------------- the reader's side */

/* Turns the feed on and asks for a snapshot (the caller then wakes the
 * producer: herd_sched_feed_start does both). */
void herd_block_feed_start(struct herd_block_feed *f);
/* Turns it off and forgets what was queued. */
void herd_block_feed_stop(struct herd_block_feed *f);

/* What one take found, in the order to apply it. The arrays belong to the
 * feed and stay valid until the next take or stop; one reader thread. */
struct herd_block_feed_take {
    bool overflowed; /* changes were lost: forget every hash; a snapshot comes in a later take */
    bool snapshot;   /* hashes[n_hashes]: replace the set with these */
    const uint64_t *hashes;
    uint32_t n_hashes;
    const struct herd_block_change *changes; /* then these, in order */
    uint32_t n_changes;
};
void herd_block_feed_take(struct herd_block_feed *f, struct herd_block_feed_take *out);

#endif
