/* How `herd route` picks a replica for a request: pure functions over a
 * snapshot of the eligible replicas, so that every policy is tested
 * without sockets.
 *
 *   round-robin         each in turn
 *   least-outstanding   the fewest requests in flight (weighted)
 *   power-of-two        the less loaded of two chosen at random
 *   cache-aware         the replica holding the longest prefix of the
 *                       prompt's KV blocks, unless it is overloaded against
 *                       the least-loaded one (then that one); with no
 *                       prefix anywhere, consistent hashing with bounded
 *                       load on the prompt's key (prompt_key.c: the first
 *                       block past what all prompts share)
 *
 * Load is a replica's outstanding requests (the larger of what this router
 * has in flight there and what the replica reports running and waiting,
 * which counts other routers' requests too) divided by its weight (below 1
 * while it warms up after joining: slow start).
 *
 * Consistent hashing is rendezvous hashing (each replica's score is a hash
 * of the request key and the replica's key; the highest wins) with the
 * bounded-load rule of Mirrokni et al.: a replica is skipped while its load
 * would pass (1 + eps) times the average, plus one request of slack. Two routers that see the same
 * replicas and loads send a prompt to the same replica without talking to
 * each other.
 *
 * The same rule bounds kinds of prompt (their consistent-hashing keys: one
 * per system prompt) as well as requests: a new kind goes to a replica
 * that was sent no more of the kinds seen lately than the even share. Hashing alone puts 8 system
 * prompts on 4 replicas 3 / 2 / 2 / 1 or worse most of the time, and the
 * replica with 3 then serves 3/8 of the traffic from a cache that holds
 * fewer of them: its queue set the TTFT p90. */
#ifndef HERD_ROUTER_POLICY_H
#define HERD_ROUTER_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/rng.h"

enum route_policy { ROUTE_ROUND_ROBIN, ROUTE_LEAST_OUTSTANDING, ROUTE_POWER_OF_TWO, ROUTE_CACHE_AWARE, ROUTE_POLICY_N };

/* Why a replica was chosen, for the router's decisions metric. */
enum route_reason {
    ROUTE_BY_TURN,   /* round-robin */
    ROUTE_BY_LOAD,   /* least-outstanding, power-of-two, or cache-aware releasing an overloaded affinity */
    ROUTE_BY_PREFIX, /* cache-aware: the longest cached prefix (an affinity hit) */
    ROUTE_BY_HASH,   /* cache-aware: no prefix anywhere, consistent hashing */
    ROUTE_REASON_N
};

const char *route_policy_name(enum route_policy p); /* "cache-aware" */
bool route_policy_parse(const char *s, enum route_policy *out);
const char *route_reason_name(enum route_reason r); /* "prefix" */

struct route_candidate {
    uint64_t key;           /* the replica's identity (a hash of host:port): the same in every router */
    double load;            /* outstanding requests */
    double weight;          /* (0, 1]: slow start */
    uint32_t prefix_blocks; /* blocks of this prompt the replica holds past those all prompts share */
    uint32_t prompt_blocks; /* the prompt's full blocks past those all prompts share (0: unknown) */
    uint32_t kinds;         /* other kinds of prompt seen lately that last went to it (cache-aware, no holder) */
};

struct route_policy_params {
    /* cache-aware releases the affinity when the holder's load exceeds the
     * least-loaded replica's by more than balance_abs requests and by more
     * than balance_rel times (both: small loads stay put). The absolute
     * margin grows with the share s of the prompt the holder has cached,
     * to s / (1 - s) requests when that is more (capped at 64): elsewhere
     * the request costs the s x prompt of prefill the holder skips, which
     * is about s / (1 - s) requests' worth of the holder's own work per
     * request when its traffic is alike (a 1,000-token prefix and a
     * 32-token question: 31 requests) */
    double balance_abs; /* (4) */
    double balance_rel; /* (1.5) */
    double hash_eps;    /* bounded load: at most (1 + eps) x average (0.1) */
};

void route_policy_default_params(struct route_policy_params *p);

struct route_policy_state {
    uint64_t turn;       /* round-robin's next */
    struct herd_rng rng; /* power-of-two's draws */
};

void route_policy_state_init(struct route_policy_state *s, uint64_t seed);

/* The index into c[0..n) (n >= 1) of the replica for a request whose key
 * (prompt_key.c's: the first block that tells it apart) is request_key; *why
 * says how it was chosen. */
size_t route_pick(enum route_policy policy, const struct route_policy_params *p, struct route_policy_state *s,
                  const struct route_candidate *c, size_t n, uint64_t request_key, enum route_reason *why);

/* The replica consistent hashing with bounded load picks (cache-aware's
 * tie-break), exposed for the tests. */
size_t route_pick_hashed(const struct route_policy_params *p, const struct route_candidate *c, size_t n,
                         uint64_t request_key);

#endif
