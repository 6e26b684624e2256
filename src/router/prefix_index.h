/* What `herd route` believes one replica holds in its prefix cache: a set
 * of chained block hashes (base/block_hash.h). Entries come from two
 * places: the replica's own state stream (stored / evicted, exact, kept
 * until evicted) and the router's decisions (the blocks of a prompt just
 * sent there, kept for a while until the stream confirms them, so that the
 * second request with a new system prompt follows the first before the
 * replica has reported anything; for backends without a state stream these
 * guesses are all there is, as in SGLang's approximate tree).
 *
 * An open-addressing table with linear probing and backward-shift
 * deletion (no tombstones), bounded: when full, expired guesses go first,
 * then everything (a rebuilt index is only a worse guess for a while). */
#ifndef HERD_ROUTER_PREFIX_INDEX_H
#define HERD_ROUTER_PREFIX_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct prefix_index {
    uint64_t *hash;   /* [cap]; 0 marks an empty slot (a real hash of 0 is stored as 1) */
    double *expires;  /* [cap]; INFINITY for confirmed entries */
    uint32_t cap;     /* a power of two */
    uint32_t n;       /* entries */
    uint32_t max_cap; /* it never grows past this */
};

/* Empty, growing up to max_entries (rounded up to a power of two). */
void prefix_index_init(struct prefix_index *x, uint32_t max_entries);
void prefix_index_cleanup(struct prefix_index *x);
void prefix_index_clear(struct prefix_index *x);

/* Adds or refreshes h. expires INFINITY: confirmed (a guess is upgraded;
 * a confirmed entry is never downgraded by a guess). False on out of
 * memory. */
bool prefix_index_put(struct prefix_index *x, uint64_t h, double expires);
void prefix_index_remove(struct prefix_index *x, uint64_t h);
/* Removes every confirmed entry (a reconnected stream's snapshot brings
 * back what is still held), keeping the guesses. */
void prefix_index_drop_confirmed(struct prefix_index *x);
/* Removes the guesses that expired before now. */
void prefix_index_expire(struct prefix_index *x, double now);
bool prefix_index_has(const struct prefix_index *x, uint64_t h, double now);
/* How many of hashes[0..n) are present from the start. */
uint32_t prefix_index_match(const struct prefix_index *x, const uint64_t *hashes, uint32_t n, double now);

#endif
