/* The chained hash of a block of token ids: block i's hash covers its
 * tokens and block i-1's hash, so equal hashes mean equal prefixes up to
 * that block (with overwhelming probability; the prefix cache also checks
 * the tokens). One definition for the two sides that must agree on it: the
 * replica's prefix cache (src/engine/prefix_cache.c), which keys its blocks
 * by it and reports them on its state stream, and `herd route`'s
 * cache-aware policy, which hashes a request's prompt the same way to find
 * the replica already holding its longest prefix. Changing it changes a
 * wire format (docs/modules/router.md): bump the stream's "hash" name. */
#ifndef HERD_BASE_BLOCK_HASH_H
#define HERD_BASE_BLOCK_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <xxhash.h>

/* The name of this hash on the wire (the state stream's hello event). */
#define HERD_BLOCK_HASH_NAME "xxh3-64-chain-v1"

/* The hash of a block of block_tokens tokens following a prefix whose last
 * block hashed to prev (0 for the first block). */
static inline uint64_t herd_block_hash(uint64_t prev, const int32_t *tokens, uint32_t block_tokens) {
    return XXH3_64bits_withSeed(tokens, (size_t)block_tokens * sizeof *tokens, prev ^ 0x9e3779b97f4a7c15ull);
}

#endif
