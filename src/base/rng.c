/* xoshiro256** (Blackman and Vigna) with splitmix64 seeding; Box-Muller
 * normals. Chosen for being tiny, fast and the same everywhere. */
#include "base/rng.h"

#include <math.h>

#include "base/checked.h"

HERD_WRAPS_ON_PURPOSE uint64_t herd_rng_mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void herd_rng_init(struct herd_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) {
        seed = herd_rng_mix(seed);
        r->s[i] = seed;
    }
    r->has_spare = false;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

HERD_WRAPS_ON_PURPOSE uint64_t herd_rng_u64(struct herd_rng *r) {
    uint64_t *s = r->s;
    const uint64_t out = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double herd_rng_uniform(struct herd_rng *r) { return (double)(herd_rng_u64(r) >> 11) * 0x1.0p-53; }

double herd_rng_normal(struct herd_rng *r) {
    if (r->has_spare) {
        r->has_spare = false;
        return r->spare;
    }
    double u1 = 1.0 - herd_rng_uniform(r); /* (0, 1]: log(0) never happens */
    double u2 = herd_rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1));
    r->spare = rad * sin(2.0 * M_PI * u2);
    r->has_spare = true;
    return rad * cos(2.0 * M_PI * u2);
}
