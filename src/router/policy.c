/* Replica choice (policy.h). */
#include "router/policy.h"

#include <math.h>
#include <string.h>

static const char *const policy_names[ROUTE_POLICY_N] = {"round-robin", "least-outstanding", "power-of-two",
                                                         "cache-aware"};
static const char *const reason_names[ROUTE_REASON_N] = {"turn", "load", "prefix", "hash"};

const char *route_policy_name(enum route_policy p) { return policy_names[p]; }
const char *route_reason_name(enum route_reason r) { return reason_names[r]; }

bool route_policy_parse(const char *s, enum route_policy *out) {
    for (int p = 0; p < ROUTE_POLICY_N; p++)
        if (strcmp(s, policy_names[p]) == 0) {
            *out = (enum route_policy)p;
            return true;
        }
    /* the short names people type */
    if (strcmp(s, "p2c") == 0)
        *out = ROUTE_POWER_OF_TWO;
    else if (strcmp(s, "rr") == 0)
        *out = ROUTE_ROUND_ROBIN;
    else if (strcmp(s, "least") == 0)
        *out = ROUTE_LEAST_OUTSTANDING;
    else
        return false;
    return true;
}

void route_policy_default_params(struct route_policy_params *p) {
    p->balance_abs = 4;
    p->balance_rel = 1.5;
    p->hash_eps = 0.1;
}

void route_policy_state_init(struct route_policy_state *s, uint64_t seed) {
    s->turn = 0;
    herd_rng_init(&s->rng, seed);
}

static double eff_load(const struct route_candidate *c) { return c->load / (c->weight > 0.01 ? c->weight : 0.01); }

/* The least loaded; ties to the earlier. */
static size_t least_loaded(const struct route_candidate *c, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (eff_load(&c[i]) < eff_load(&c[best])) best = i;
    return best;
}

static size_t round_robin(struct route_policy_state *s, const struct route_candidate *c, size_t n) {
    /* slow start: a warming replica takes its turn with probability weight */
    for (size_t tries = 0; tries < 2 * n; tries++) {
        const size_t i = (size_t)(s->turn++ % n);
        if (c[i].weight >= 1 || herd_rng_uniform(&s->rng) < c[i].weight) return i;
    }
    return (size_t)(s->turn++ % n);
}

static size_t power_of_two(struct route_policy_state *s, const struct route_candidate *c, size_t n) {
    if (n == 1) return 0;
    const size_t a = (size_t)(herd_rng_u64(&s->rng) % n);
    size_t b = (size_t)(herd_rng_u64(&s->rng) % (n - 1));
    if (b >= a) b++;
    return eff_load(&c[b]) < eff_load(&c[a]) ? b : a;
}

/* Rendezvous score of replica key for request key. */
static uint64_t score(uint64_t request_key, uint64_t replica_key) {
    return herd_rng_mix(request_key ^ herd_rng_mix(replica_key));
}

size_t route_pick_hashed(const struct route_policy_params *p, const struct route_candidate *c, size_t n,
                         uint64_t request_key) {
    double total = 0;
    for (size_t i = 0; i < n; i++) total += eff_load(&c[i]);
    /* the new request counts too; a replica may take it while its load
     * stays within the bound. One request of slack: loads other routers
     * see differ by a request for a moment (a stream's update is up to
     * 10 ms behind, a scrape a second), and at low load the strict bound
     * would then send the same prompt to different replicas. */
    const double bound = ceil((1 + p->hash_eps) * (total + 1) / (double)n) + 1;
    /* kinds: the even share exactly (a kind is many requests to come) */
    uint64_t kinds = 0;
    for (size_t i = 0; i < n; i++) kinds += c[i].kinds;
    const uint64_t kinds_bound = (kinds + 1 + n - 1) / n;
    size_t best = SIZE_MAX;
    uint64_t best_score = 0;
    for (int pass = 0; pass < 2 && best == SIZE_MAX; pass++) /* then without the kinds' bound */
        for (size_t i = 0; i < n; i++) {
            if (eff_load(&c[i]) + 1 > bound || (!pass && c[i].kinds + 1 > kinds_bound)) continue;
            const uint64_t sc = score(request_key, c[i].key);
            if (best == SIZE_MAX || sc > best_score) best = i, best_score = sc;
        }
    return best == SIZE_MAX ? least_loaded(c, n) : best;
}

/* The load difference past which cache-aware sends a request away from
 * the replica holding its prefix (policy.h: route_policy_params). The cap
 * keeps a skew release possible when the holder has the whole prompt. */
static double release_margin(const struct route_policy_params *p, const struct route_candidate *holder) {
    enum { MAX_MARGIN = 64 };
    if (!holder->prompt_blocks || holder->prefix_blocks >= holder->prompt_blocks)
        return holder->prompt_blocks ? fmax(p->balance_abs, MAX_MARGIN) : p->balance_abs;
    const double s = (double)holder->prefix_blocks / holder->prompt_blocks;
    return fmax(p->balance_abs, fmin(s / (1 - s), MAX_MARGIN));
}

static size_t cache_aware(const struct route_policy_params *p, const struct route_candidate *c, size_t n,
                          uint64_t request_key, enum route_reason *why) {
    size_t holder = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (!c[i].prefix_blocks) continue;
        if (holder == SIZE_MAX || c[i].prefix_blocks > c[holder].prefix_blocks ||
            (c[i].prefix_blocks == c[holder].prefix_blocks &&
             score(request_key, c[i].key) > score(request_key, c[holder].key)))
            holder = i;
    }
    if (holder == SIZE_MAX) {
        *why = ROUTE_BY_HASH;
        return route_pick_hashed(p, c, n, request_key);
    }
    const size_t least = least_loaded(c, n);
    const double h = eff_load(&c[holder]), l = eff_load(&c[least]);
    if (h - l > release_margin(p, &c[holder]) && h > l * p->balance_rel) {
        *why = ROUTE_BY_LOAD; /* affinity alone collapses under skew: release it */
        return least;
    }
    *why = ROUTE_BY_PREFIX;
    return holder;
}

size_t route_pick(enum route_policy policy, const struct route_policy_params *p, struct route_policy_state *s,
                  const struct route_candidate *c, size_t n, uint64_t request_key, enum route_reason *why) {
    switch (policy) {
    case ROUTE_ROUND_ROBIN: *why = ROUTE_BY_TURN; return round_robin(s, c, n);
    case ROUTE_LEAST_OUTSTANDING: *why = ROUTE_BY_LOAD; return least_loaded(c, n);
    case ROUTE_POWER_OF_TWO: *why = ROUTE_BY_LOAD; return power_of_two(s, c, n);
    case ROUTE_CACHE_AWARE:
    case ROUTE_POLICY_N: break;
    }
    return cache_aware(p, c, n, request_key, why);
}
