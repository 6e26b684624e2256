/* Prefix cache (prefix_cache.h): an open-addressing table of entries by
 * chained block hash (xxHash3), with the block's tokens to verify a hit
 * and a use tick for LRU eviction. */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "base/assert.h"
#include "engine/prefix_cache.h"

struct entry {
    uint64_t hash;
    uint64_t used_tick;
    int32_t block; /* -1: empty slot */
    bool tomb;     /* a deleted slot that lookups must step over */
};

struct herd_prefix_cache {
    struct herd_kv *kv;
    uint32_t bt;  /* tokens per block */
    uint32_t cap; /* slots, a power of two >= 2 x blocks */
    struct entry *slots;
    int32_t *tokens; /* [n_blocks][bt]: the tokens of the block cached in block b */
    uint64_t tick;
    uint32_t entries;
    uint64_t queries, hits;
};

struct herd_prefix_cache *herd_prefix_cache_create(struct herd_kv *kv) {
    const struct herd_kv_params *p = herd_kv_params(kv);
    struct herd_prefix_cache *pc = calloc(1, sizeof *pc);
    if (!pc) return NULL;
    pc->kv = kv;
    pc->bt = p->block_tokens;
    pc->cap = 16;
    while (pc->cap < 2 * p->n_blocks) pc->cap *= 2;
    pc->slots = malloc(pc->cap * sizeof *pc->slots);
    pc->tokens = malloc((size_t)p->n_blocks * pc->bt * sizeof *pc->tokens);
    if (!pc->slots || !pc->tokens) {
        herd_prefix_cache_destroy(pc);
        return NULL;
    }
    for (uint32_t i = 0; i < pc->cap; i++) pc->slots[i] = (struct entry){.block = -1};
    return pc;
}

void herd_prefix_cache_destroy(struct herd_prefix_cache *pc) {
    if (!pc) return;
    if (pc->slots)
        for (uint32_t i = 0; i < pc->cap; i++)
            if (pc->slots[i].block >= 0) herd_kv_block_unref(pc->kv, pc->slots[i].block);
    free(pc->slots);
    free(pc->tokens);
    free(pc);
}

uint64_t herd_prefix_hash(uint64_t prev, const int32_t *tokens, uint32_t block_tokens) {
    return XXH3_64bits_withSeed(tokens, (size_t)block_tokens * sizeof *tokens, prev ^ 0x9e3779b97f4a7c15ull);
}

/* The slot holding hash, or NULL. */
static struct entry *find(struct herd_prefix_cache *pc, uint64_t hash, const int32_t *tokens) {
    for (uint32_t i = (uint32_t)hash & (pc->cap - 1), probes = 0; probes < pc->cap;
         i = (i + 1) & (pc->cap - 1), probes++) {
        struct entry *e = &pc->slots[i];
        if (e->block < 0 && !e->tomb) return NULL;
        if (e->block >= 0 && e->hash == hash &&
            memcmp(pc->tokens + (size_t)e->block * pc->bt, tokens, pc->bt * sizeof *tokens) == 0)
            return e;
    }
    return NULL;
}

uint32_t herd_prefix_cache_match(struct herd_prefix_cache *pc, const int32_t *tokens, uint32_t n_blocks, int32_t *out,
                                 uint64_t *last_hash) {
    uint64_t h = 0;
    *last_hash = 0;
    uint32_t m = 0;
    pc->tick++;
    for (; m < n_blocks; m++) {
        const int32_t *t = tokens + (size_t)m * pc->bt;
        h = herd_prefix_hash(h, t, pc->bt);
        pc->queries++;
        struct entry *e = find(pc, h, t);
        if (!e) break;
        pc->hits++;
        e->used_tick = pc->tick;
        out[m] = e->block;
        *last_hash = h;
    }
    return m;
}

void herd_prefix_cache_insert(struct herd_prefix_cache *pc, uint64_t hash, const int32_t *tokens, int32_t block) {
    if (find(pc, hash, tokens)) return; /* the same prefix computed twice: keep the first */
    /* a block is cached under one hash at most: it holds one prefix */
    for (uint32_t i = (uint32_t)hash & (pc->cap - 1);; i = (i + 1) & (pc->cap - 1)) {
        struct entry *e = &pc->slots[i];
        if (e->block >= 0) continue;
        /* there is always a free slot: cap >= 2 x blocks >= 2 x entries */
        *e = (struct entry){.hash = hash, .used_tick = ++pc->tick, .block = block};
        memcpy(pc->tokens + (size_t)block * pc->bt, tokens, pc->bt * sizeof *tokens);
        herd_kv_block_ref(pc->kv, block);
        pc->entries++;
        return;
    }
}

uint32_t herd_prefix_cache_evict(struct herd_prefix_cache *pc, uint32_t n) {
    uint32_t freed = 0;
    while (freed < n) {
        struct entry *lru = NULL;
        for (uint32_t i = 0; i < pc->cap; i++) {
            struct entry *e = &pc->slots[i];
            if (e->block < 0 || herd_kv_block_refs(pc->kv, e->block) != 1) continue; /* in use by a sequence */
            if (!lru || e->used_tick < lru->used_tick) lru = e;
        }
        if (!lru) break;
        herd_kv_block_unref(pc->kv, lru->block);
        lru->block = -1;
        lru->tomb = true;
        pc->entries--;
        freed++;
    }
    return freed;
}

void herd_prefix_cache_stats(const struct herd_prefix_cache *pc, struct herd_prefix_cache_stats *out) {
    out->queries = pc->queries;
    out->hits = pc->hits;
    out->entries = pc->entries;
}
