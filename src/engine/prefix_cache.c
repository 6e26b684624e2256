/* Prefix cache (prefix_cache.h): an open-addressing table (linear probing)
 * of the cached blocks by chained block hash (xxHash3), with each block's
 * tokens to verify a hit, and a doubly linked LRU list through the cached
 * blocks. Deleting shifts the following entries back instead of leaving a
 * tombstone: with tombstones, every insert / evict cycle of a long-running
 * server left one behind, until a miss probed the whole table. Eviction
 * walks the LRU list from its old end, skipping blocks a sequence still
 * uses, instead of scanning the table for the oldest entry once per block
 * (a 2,000-token prompt evicting 125 blocks from a 65,536-block pool was
 * 16 million slot visits on the scheduler thread). */
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "engine/prefix_cache.h"

/* Per KV block: its entry while cached (a block holds one prefix, so it is
 * cached under one hash at most). */
struct cached {
    uint64_t hash;
    int32_t prev, next; /* LRU list: prev towards the least recently used */
    bool in;
};

struct herd_prefix_cache {
    struct herd_kv *kv;
    uint32_t bt;    /* tokens per block */
    uint32_t cap;   /* slots, a power of two >= 2 x blocks */
    int32_t *slots; /* block ids, -1: empty */
    struct cached *by_block;
    int32_t *tokens;  /* [n_blocks][bt]: the tokens of the block cached in block b */
    int32_t lru, mru; /* ends of the list, -1 when empty */
    uint32_t entries;
    uint64_t queries, hits;
    struct herd_block_feed *feed; /* NULL: nobody listens */
};

/* A change for the state stream: one relaxed load when nobody subscribes. */
static void tell(struct herd_prefix_cache *pc, uint64_t hash, bool stored) {
    if (pc->feed && herd_block_feed_on(pc->feed)) herd_block_feed_push(pc->feed, hash, stored);
}

struct herd_prefix_cache *herd_prefix_cache_create(struct herd_kv *kv) {
    const struct herd_kv_params *p = herd_kv_params(kv);
    struct herd_prefix_cache *pc = calloc(1, sizeof *pc);
    if (!pc) return NULL;
    pc->kv = kv;
    pc->bt = p->block_tokens;
    pc->cap = 16;
    while (pc->cap < 2 * p->n_blocks) pc->cap *= 2;
    pc->slots = malloc(pc->cap * sizeof *pc->slots);
    pc->by_block = calloc(p->n_blocks, sizeof *pc->by_block);
    pc->tokens = malloc((size_t)p->n_blocks * pc->bt * sizeof *pc->tokens);
    if (!pc->slots || !pc->by_block || !pc->tokens) {
        herd_prefix_cache_destroy(pc);
        return NULL;
    }
    for (uint32_t i = 0; i < pc->cap; i++) pc->slots[i] = -1;
    pc->lru = pc->mru = -1;
    return pc;
}

void herd_prefix_cache_destroy(struct herd_prefix_cache *pc) {
    if (!pc) return;
    if (pc->slots)
        for (uint32_t i = 0; i < pc->cap; i++)
            if (pc->slots[i] >= 0) herd_kv_block_unref(pc->kv, pc->slots[i]);
    free(pc->slots);
    free(pc->by_block);
    free(pc->tokens);
    free(pc);
}

static uint32_t home(const struct herd_prefix_cache *pc, uint64_t hash) { return (uint32_t)hash & (pc->cap - 1); }

/* The slot holding the block cached under hash with these tokens, or -1. */
static int64_t find(const struct herd_prefix_cache *pc, uint64_t hash, const int32_t *tokens) {
    for (uint32_t i = home(pc, hash);; i = (i + 1) & (pc->cap - 1)) {
        const int32_t b = pc->slots[i];
        if (b < 0) return -1; /* never full: cap >= 2 x blocks */
        if (pc->by_block[b].hash == hash &&
            memcmp(pc->tokens + (size_t)b * pc->bt, tokens, pc->bt * sizeof *tokens) == 0)
            return i;
    }
}

static void lru_unlink(struct herd_prefix_cache *pc, int32_t b) {
    struct cached *c = &pc->by_block[b];
    if (c->prev >= 0)
        pc->by_block[c->prev].next = c->next;
    else
        pc->lru = c->next;
    if (c->next >= 0)
        pc->by_block[c->next].prev = c->prev;
    else
        pc->mru = c->prev;
}

static void lru_append(struct herd_prefix_cache *pc, int32_t b) {
    struct cached *c = &pc->by_block[b];
    c->prev = pc->mru;
    c->next = -1;
    if (pc->mru >= 0)
        pc->by_block[pc->mru].next = b;
    else
        pc->lru = b;
    pc->mru = b;
}

uint32_t herd_prefix_cache_match(struct herd_prefix_cache *pc, const int32_t *tokens, uint32_t n_blocks, int32_t *out,
                                 uint64_t *last_hash) {
    uint64_t h = 0;
    *last_hash = 0;
    uint32_t m = 0;
    for (; m < n_blocks; m++) {
        const int32_t *t = tokens + (size_t)m * pc->bt;
        h = herd_block_hash(h, t, pc->bt);
        const int64_t at = find(pc, h, t);
        if (at < 0) break;
        out[m] = pc->slots[at];
        *last_hash = h;
    }
    /* now the most recently used, the chain's head last: eviction then
     * trims a prefix from its tail. Touched head first, the head was the
     * chain's oldest block and went first, which made every block after it
     * unreachable (a hash chains its predecessors) while they stayed in the
     * cache: one evicted block cost a 1,000-token system prompt whole, and
     * the router, told the head was gone, saw no replica holding it. */
    for (uint32_t i = m; i-- > 0;) {
        lru_unlink(pc, out[i]);
        lru_append(pc, out[i]);
    }
    return m;
}

void herd_prefix_cache_insert(struct herd_prefix_cache *pc, uint64_t hash, const int32_t *tokens, int32_t block) {
    if (find(pc, hash, tokens) >= 0) return; /* the same prefix computed twice: keep the first */
    HERD_ASSERT(!pc->by_block[block].in);
    uint32_t i = home(pc, hash);
    while (pc->slots[i] >= 0) i = (i + 1) & (pc->cap - 1);
    pc->slots[i] = block;
    pc->by_block[block] = (struct cached){.hash = hash, .in = true};
    lru_append(pc, block);
    memcpy(pc->tokens + (size_t)block * pc->bt, tokens, pc->bt * sizeof *tokens);
    herd_kv_block_ref(pc->kv, block);
    pc->entries++;
    tell(pc, hash, true);
}

/* Empties slot i, moving back every following entry of the probe run that
 * may sit there (its home is not cyclically within (i, j]), so lookups never
 * stop early at the hole. */
static void remove_slot(struct herd_prefix_cache *pc, uint32_t i) {
    const uint32_t mask = pc->cap - 1;
    for (uint32_t j = (i + 1) & mask;; j = (j + 1) & mask) {
        const int32_t b = pc->slots[j];
        if (b < 0) break;
        const uint32_t h = home(pc, pc->by_block[b].hash);
        if (((j - h) & mask) >= ((j - i) & mask)) { /* h is not in (i, j]: b may move to i */
            pc->slots[i] = b;
            i = j;
        }
    }
    pc->slots[i] = -1;
}

uint32_t herd_prefix_cache_evict(struct herd_prefix_cache *pc, uint32_t n) {
    uint32_t freed = 0;
    for (int32_t b = pc->lru; b >= 0 && freed < n;) {
        const int32_t next = pc->by_block[b].next;
        if (herd_kv_block_refs(pc->kv, b) == 1) { /* only the cache holds it */
            int64_t at = find(pc, pc->by_block[b].hash, pc->tokens + (size_t)b * pc->bt);
            HERD_ASSERT(at >= 0);
            remove_slot(pc, (uint32_t)at);
            lru_unlink(pc, b);
            pc->by_block[b].in = false;
            herd_kv_block_unref(pc->kv, b);
            pc->entries--;
            freed++;
            tell(pc, pc->by_block[b].hash, false);
        }
        b = next;
    }
    return freed;
}

void herd_prefix_cache_count(struct herd_prefix_cache *pc, uint32_t n_blocks, uint32_t matched) {
    pc->queries += n_blocks;
    pc->hits += matched;
}

void herd_prefix_cache_set_feed(struct herd_prefix_cache *pc, struct herd_block_feed *feed) { pc->feed = feed; }

uint32_t herd_prefix_cache_hashes(const struct herd_prefix_cache *pc, uint64_t *out, uint32_t cap) {
    uint32_t n = 0;
    for (int32_t b = pc->lru; b >= 0 && n < cap; b = pc->by_block[b].next) out[n++] = pc->by_block[b].hash;
    return n;
}

void herd_prefix_cache_stats(const struct herd_prefix_cache *pc, struct herd_prefix_cache_stats *out) {
    out->queries = pc->queries;
    out->hits = pc->hits;
    out->entries = pc->entries;
}
