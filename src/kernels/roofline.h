/* Ceilings of this machine, measured now: memory read bandwidth (decode is
 * bound by it: every weight is read once per token) and int8 / f32 compute
 * throughput (prefill and batched decode are bound by them). Benchmarks
 * report their results as fractions of these. */
#ifndef HERD_KERNELS_ROOFLINE_H
#define HERD_KERNELS_ROOFLINE_H

#include <stddef.h>

#include "base/pool.h"
#include "kernels/kernels.h"

/* Best of reps passes reading a buffer of `bytes` with every pool thread, GB/s. */
double herd_roofline_read_gbps(struct herd_pool *pool, const struct herd_kernels *k, size_t bytes, int reps);

/* The same probe on a buffer kept for repeated use, so a benchmark can
 * measure the bandwidth beside each of its repetitions (on a shared machine
 * it moves with the neighbours' traffic from one second to the next):
 * create allocates and touches `bytes` (NULL when it cannot), measure
 * returns the best of reps passes in GB/s, destroy frees (NULL: no-op). */
struct herd_roofline_read;
struct herd_roofline_read *herd_roofline_read_create(size_t bytes);
double herd_roofline_read_measure(struct herd_roofline_read *r, struct herd_pool *pool, const struct herd_kernels *k,
                                  int reps);
void herd_roofline_read_destroy(struct herd_roofline_read *r);
/* Int8 multiply-accumulate throughput with the widest dot-product
 * instruction the CPU has (VNNI, else AVX2 maddubs), ops/s (a MAC is 2 ops). */
double herd_roofline_int8_ops(struct herd_pool *pool, int reps);
/* f32 FMA throughput, FLOP/s. */
double herd_roofline_f32_flops(struct herd_pool *pool, int reps);

#endif
