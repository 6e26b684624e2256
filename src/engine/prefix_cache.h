/* The prefix cache: full KV blocks kept after their request ends, found
 * again by content, so a request whose prompt starts like an earlier one
 * (the same system prompt, the previous turns of a chat) skips that part
 * of its prefill.
 *
 * A block is keyed by a chained hash: block i's hash covers its tokens and
 * block i-1's hash, so a match means the whole prefix up to it matched.
 * Each entry also stores the block's tokens and checks them on a hit, so
 * a hash collision can never hand a request someone else's KV. The cache
 * holds one KV reference per entry; entries whose block no sequence uses
 * are evicted least recently used first when the scheduler needs blocks.
 * Used by the scheduler thread only. */
#ifndef HERD_ENGINE_PREFIX_CACHE_H
#define HERD_ENGINE_PREFIX_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/block_hash.h"
#include "engine/block_feed.h"
#include "model/kv_cache.h"

struct herd_prefix_cache;

/* Room for one entry per KV block; NULL on out of memory. */
struct herd_prefix_cache *herd_prefix_cache_create(struct herd_kv *kv);
/* Releases every entry's block reference and frees. */
void herd_prefix_cache_destroy(struct herd_prefix_cache *pc);

/* Looks up the chain of full blocks of tokens[0, n_blocks * block_tokens):
 * writes the matching blocks to out and returns how many matched from the
 * start (0..n_blocks); *last_hash is the last matched block's hash (0 if
 * none). The matched blocks become the most recently used, the first
 * most of all, so that eviction takes a chain's tail before its head.
 * Counts nothing: a lookup whose admission then fails for want of
 * blocks is repeated next step, so the caller counts the one that stuck
 * (herd_prefix_cache_count). */
uint32_t herd_prefix_cache_match(struct herd_prefix_cache *pc, const int32_t *tokens, uint32_t n_blocks, int32_t *out,
                                 uint64_t *last_hash);

/* Counts one admitted prompt's lookup for the stats: n_blocks full blocks
 * looked up, matched of them found. Every block of the prompt counts as a
 * query, also those after the first miss (which match never looks at), so
 * hits / queries is the share of prompt blocks served from the cache, as
 * vLLM's prefix_cache_queries / hits (in tokens) mean it; counting only up
 * to the first miss made a request that missed its whole 1,000-token
 * prefix weigh one block against a hit's 62. */
void herd_prefix_cache_count(struct herd_prefix_cache *pc, uint32_t n_blocks, uint32_t matched);

/* Offers block (holding tokens, hashed to hash) to the cache; keeps a
 * reference if it is new. */
void herd_prefix_cache_insert(struct herd_prefix_cache *pc, uint64_t hash, const int32_t *tokens, int32_t block);

/* Frees up to n blocks that only the cache holds, least recently used
 * first. Returns how many it freed. */
uint32_t herd_prefix_cache_evict(struct herd_prefix_cache *pc, uint32_t n);

/* From now on, each hash taken in (insert) or dropped (evict) is pushed
 * to feed while it is on (block_feed.h); feed outlives pc. NULL: none. */
void herd_prefix_cache_set_feed(struct herd_prefix_cache *pc, struct herd_block_feed *feed);

/* Writes up to cap of the hashes held now to out (least recently used
 * first); returns how many. At most one per KV block. */
uint32_t herd_prefix_cache_hashes(const struct herd_prefix_cache *pc, uint64_t *out, uint32_t cap);

struct herd_prefix_cache_stats {
    uint64_t queries, hits; /* blocks looked up, blocks found */
    uint32_t entries;
};
void herd_prefix_cache_stats(const struct herd_prefix_cache *pc, struct herd_prefix_cache_stats *out);

#endif
