/* The prefix cache's change feed (block_feed.h): a ring under a mutex,
 * a snapshot slot beside it, and the reader's copies of both (so the
 * reader formats and sends with the lock released and the scheduler never
 * waits on a socket). The lock is held for a copy of at most cap changes. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine/block_feed.h"

struct herd_block_feed {
    atomic_bool on, want_snapshot;
    pthread_mutex_t lock;           /* guards everything below but the reader's copies */
    struct herd_block_change *ring; /* [cap] */
    uint32_t cap, head, n;
    bool overflowed;    /* changes are dropped until the next snapshot */
    bool overflow_told; /* the reader knows, and has asked for that snapshot */
    bool snap_ready;
    uint64_t *snap; /* [max_hashes] */
    uint32_t max_hashes, n_snap;
    /* the reader's copies: its thread only */
    struct herd_block_change *out_changes; /* [cap] */
    uint64_t *out_hashes;                  /* [max_hashes] */
};

struct herd_block_feed *herd_block_feed_create(uint32_t cap, uint32_t max_hashes) {
    struct herd_block_feed *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    atomic_init(&f->on, false);
    atomic_init(&f->want_snapshot, false);
    pthread_mutex_init(&f->lock, NULL);
    f->cap = cap ? cap : 1;
    f->max_hashes = max_hashes;
    f->ring = malloc(f->cap * sizeof *f->ring);
    f->out_changes = malloc(f->cap * sizeof *f->out_changes);
    f->snap = malloc((max_hashes ? max_hashes : 1) * sizeof *f->snap);
    f->out_hashes = malloc((max_hashes ? max_hashes : 1) * sizeof *f->out_hashes);
    if (!f->ring || !f->out_changes || !f->snap || !f->out_hashes) {
        herd_block_feed_destroy(f);
        return NULL;
    }
    return f;
}

void herd_block_feed_destroy(struct herd_block_feed *f) {
    if (!f) return;
    pthread_mutex_destroy(&f->lock);
    free(f->ring);
    free(f->out_changes);
    free(f->snap);
    free(f->out_hashes);
    free(f);
}

/* ------------------------------------------------------------ producer */

bool herd_block_feed_on(const struct herd_block_feed *f) { return atomic_load_explicit(&f->on, memory_order_relaxed); }

void herd_block_feed_push(struct herd_block_feed *f, uint64_t hash, bool stored) {
    pthread_mutex_lock(&f->lock);
    if (atomic_load_explicit(&f->on, memory_order_relaxed) && !f->overflowed) {
        if (f->n == f->cap) {
            /* the reader fell behind: rather than block the scheduler or
             * grow without bound, drop everything and resynchronise */
            f->overflowed = true;
            f->n = 0;
            f->snap_ready = false; /* the changes after it are lost too */
        } else {
            f->ring[(f->head + f->n++) % f->cap] = (struct herd_block_change){hash, stored};
        }
    }
    pthread_mutex_unlock(&f->lock);
}

bool herd_block_feed_snapshot_wanted(const struct herd_block_feed *f) {
    return atomic_load_explicit(&f->want_snapshot, memory_order_relaxed);
}

void herd_block_feed_put_snapshot(struct herd_block_feed *f, const uint64_t *hashes, uint32_t n) {
    pthread_mutex_lock(&f->lock);
    if (atomic_exchange(&f->want_snapshot, false) && atomic_load(&f->on)) {
        if (n > f->max_hashes) n = f->max_hashes; /* defensive: the cache holds one entry per block at most */
        if (n) memcpy(f->snap, hashes, (size_t)n * sizeof *hashes); /* an empty cache may pass NULL */
        f->n_snap = n;
        f->snap_ready = true;
        f->overflowed = f->overflow_told = false;
        f->head = f->n = 0; /* in the snapshot already */
    }
    pthread_mutex_unlock(&f->lock);
}

/* -------------------------------------------------------------- reader */

void herd_block_feed_start(struct herd_block_feed *f) {
    pthread_mutex_lock(&f->lock);
    f->head = f->n = 0;
    f->overflowed = f->overflow_told = f->snap_ready = false;
    atomic_store(&f->on, true);
    atomic_store(&f->want_snapshot, true);
    pthread_mutex_unlock(&f->lock);
}

void herd_block_feed_stop(struct herd_block_feed *f) {
    pthread_mutex_lock(&f->lock);
    atomic_store(&f->on, false);
    atomic_store(&f->want_snapshot, false);
    f->head = f->n = 0;
    f->overflowed = f->overflow_told = f->snap_ready = false;
    pthread_mutex_unlock(&f->lock);
}

void herd_block_feed_take(struct herd_block_feed *f, struct herd_block_feed_take *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&f->lock);
    if (f->overflowed && !f->overflow_told) {
        /* told once; changes stay dropped until the snapshot ends it */
        out->overflowed = true;
        f->overflow_told = true;
        atomic_store(&f->want_snapshot, true);
    }
    if (f->snap_ready) {
        memcpy(f->out_hashes, f->snap, (size_t)f->n_snap * sizeof *f->snap);
        out->snapshot = true;
        out->hashes = f->out_hashes;
        out->n_hashes = f->n_snap;
        f->snap_ready = false;
    }
    for (uint32_t i = 0; i < f->n; i++) f->out_changes[i] = f->ring[(f->head + i) % f->cap];
    out->changes = f->out_changes;
    out->n_changes = f->n;
    f->head = f->n = 0;
    pthread_mutex_unlock(&f->lock);
}
