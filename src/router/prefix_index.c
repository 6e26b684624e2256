/* The prefix index (prefix_index.h). */
#include "router/prefix_index.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t stored(uint64_t h) { return h ? h : 1; }

static uint32_t home(const struct prefix_index *x, uint64_t h) {
    /* the hashes are already uniform; mix anyway, the low bits decide */
    return (uint32_t)((h * 0x9e3779b97f4a7c15ull) >> 32) & (x->cap - 1);
}

void prefix_index_init(struct prefix_index *x, uint32_t max_entries) {
    memset(x, 0, sizeof *x);
    uint32_t cap = 64;
    while (cap < max_entries && cap < (1u << 30)) cap <<= 1;
    x->max_cap = cap;
}

void prefix_index_cleanup(struct prefix_index *x) {
    free(x->hash);
    free(x->expires);
    memset(x, 0, sizeof *x);
}

void prefix_index_clear(struct prefix_index *x) {
    if (x->hash) memset(x->hash, 0, (size_t)x->cap * sizeof *x->hash);
    x->n = 0;
}

static int64_t find(const struct prefix_index *x, uint64_t h) {
    if (!x->cap) return -1;
    for (uint32_t i = home(x, h);; i = (i + 1) & (x->cap - 1)) {
        if (x->hash[i] == h) return i;
        if (!x->hash[i]) return -1;
    }
}

/* Deletes slot i, moving later entries of its probe run back into the gap. */
static void delete_at(struct prefix_index *x, uint32_t i) {
    const uint32_t mask = x->cap - 1;
    uint32_t gap = i;
    for (uint32_t j = (i + 1) & mask; x->hash[j]; j = (j + 1) & mask) {
        const uint32_t h = home(x, x->hash[j]);
        /* j's entry may fill the gap if its home is not in (gap, j] */
        if (((j - h) & mask) >= ((j - gap) & mask)) {
            x->hash[gap] = x->hash[j];
            x->expires[gap] = x->expires[j];
            gap = j;
        }
    }
    x->hash[gap] = 0;
    x->n--;
}

static void insert_new(struct prefix_index *x, uint64_t h, double expires) {
    uint32_t i = home(x, h);
    while (x->hash[i]) i = (i + 1) & (x->cap - 1);
    x->hash[i] = h;
    x->expires[i] = expires;
    x->n++;
}

static bool grow(struct prefix_index *x, uint32_t cap) {
    uint64_t *oh = x->hash;
    double *oe = x->expires;
    const uint32_t ocap = x->cap;
    uint64_t *nh = calloc(cap, sizeof *nh);
    double *ne = malloc((size_t)cap * sizeof *ne);
    if (!nh || !ne) {
        free(nh);
        free(ne);
        return false;
    }
    x->hash = nh, x->expires = ne, x->cap = cap, x->n = 0;
    for (uint32_t i = 0; i < ocap; i++)
        if (oh[i]) insert_new(x, oh[i], oe[i]);
    free(oh);
    free(oe);
    return true;
}

void prefix_index_expire(struct prefix_index *x, double now) {
    for (uint32_t i = 0; i < x->cap;) {
        /* a deletion moves a later entry into i: look at i again */
        if (x->hash[i] && x->expires[i] < now)
            delete_at(x, i);
        else
            i++;
    }
}

void prefix_index_drop_confirmed(struct prefix_index *x) {
    for (uint32_t i = 0; i < x->cap;) {
        if (x->hash[i] && isinf(x->expires[i]))
            delete_at(x, i);
        else
            i++;
    }
}

bool prefix_index_put(struct prefix_index *x, uint64_t h, double expires) {
    h = stored(h);
    const int64_t at = find(x, h);
    if (at >= 0) {
        if (x->expires[at] < expires) x->expires[at] = expires;
        return true;
    }
    /* keep the load under 1/2: probe runs stay short */
    if ((x->n + 1) * 2 > x->cap) {
        if (x->cap < x->max_cap) {
            if (!grow(x, x->cap ? x->cap * 2 : 64)) return false;
        } else {
            /* full at its ceiling: drop the guesses, or start again */
            prefix_index_expire(x, INFINITY);
            if ((x->n + 1) * 2 > x->cap) prefix_index_clear(x);
        }
    }
    insert_new(x, h, expires);
    return true;
}

void prefix_index_remove(struct prefix_index *x, uint64_t h) {
    const int64_t at = find(x, stored(h));
    if (at >= 0) delete_at(x, (uint32_t)at);
}

bool prefix_index_has(const struct prefix_index *x, uint64_t h, double now) {
    const int64_t at = find(x, stored(h));
    return at >= 0 && x->expires[at] >= now;
}

uint32_t prefix_index_match(const struct prefix_index *x, const uint64_t *hashes, uint32_t n, double now) {
    uint32_t k = 0;
    while (k < n && prefix_index_has(x, hashes[k], now)) k++;
    return k;
}
