/* Dot-product kernels for the weight types beyond Q8_0 and Q4_0: the
 * legacy 32-value Q4_1, Q5_0, Q5_1 and IQ4_NL (with Q8A activations, like Q8_0) and
 * the K-quants Q2_K..Q6_K (with Q8_K activations, as ggml's CPU path does,
 * so results agree with llama.cpp's). One scalar reference per kernel,
 * always built, and AVX2 and AVX-512 twins chosen with the rest of the
 * kernel table (kernels.h; the twins, and multi-token twins of the K
 * kernels for batches, in kquants_simd.h); each twin is tested against its
 * _ref (tests/kernels/test_kquants.c).
 *
 * Every dot product sums integer products exactly within a block (a
 * super-block for the K types: the sub-block scales and mins are integers
 * too) and rounds once per block into a float sum; twins differ from the
 * reference only in the order of those per-block float additions. */
#ifndef HERD_KERNELS_KQUANTS_H
#define HERD_KERNELS_KQUANTS_H

#include <stddef.h>

#include "kernels/kernels.h"
#include "kernels/quant.h"

/* x[n] (n a multiple of 256) -> n / 256 Q8_K blocks, as ggml's
 * quantize_row_q8_K: m = the value of largest magnitude (first on ties),
 * q = min(127, round-half-even(x * -127 / m)), d = 1 / (-127 / m); an
 * all-zero block has d = 0. bsums are the sums of each 16 values. */
void herd_quantize_row_q8k_ref(const float *x, struct herd_block_q8_k *y, size_t n);

/* Dot products of one weight row of n values with one activation row. */
float herd_dot_q4_1_q8a_ref(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_q5_0_q8a_ref(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_q5_1_q8a_ref(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_iq4_nl_q8a_ref(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_q2_k_q8k_ref(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q3_k_q8k_ref(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q4_k_q8k_ref(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q5_k_q8k_ref(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q6_k_q8k_ref(const void *w, const struct herd_block_q8_k *x, size_t n);

/* The sum of a Q8A block's values, from the offset term it carries. */
static inline int32_t herd_q8a_sum(const struct herd_block_q8a *xb) { return -(xb->neg128_sum / 128); }

#endif
