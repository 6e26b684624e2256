/* A small, seedable, platform-independent random number generator
 * (xoshiro256** seeded through splitmix64) and a standard normal sampler.
 * Same seed, same numbers, on every machine and in every build. */
#ifndef HERD_BASE_RNG_H
#define HERD_BASE_RNG_H

#include <stdbool.h>
#include <stdint.h>

struct herd_rng {
    uint64_t s[4];
    double spare; /* second value of the last Box-Muller pair */
    bool has_spare;
};

void herd_rng_init(struct herd_rng *r, uint64_t seed);
uint64_t herd_rng_u64(struct herd_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double herd_rng_uniform(struct herd_rng *r);
/* Standard normal N(0, 1), Box-Muller. */
double herd_rng_normal(struct herd_rng *r);
/* splitmix64 step: mixes a 64-bit value; used to derive independent seeds. */
uint64_t herd_rng_mix(uint64_t x);

#endif
