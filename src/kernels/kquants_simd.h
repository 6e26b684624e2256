/* The SIMD twins of the kquants.h kernels, one set per instruction-set
 * family, for the families' tables (kernels_avx2.c, kernels_avx512.c) and
 * matmul's multi-token path. Call a family's functions only where its table
 * exists (herd_kernels_avx2() / herd_kernels_avx512() not NULL; _vnni also
 * needs AVX512-VNNI). Each is tested against its _ref twin
 * (tests/kernels/test_kquants.c). */
#ifndef HERD_KERNELS_KQUANTS_SIMD_H
#define HERD_KERNELS_KQUANTS_SIMD_H

#include <stddef.h>

#include "kernels/kernels.h"
#include "kernels/quant.h"

/* A weight row's dot products with n_tok activation rows, x_stride blocks
 * apart: y[t * y_stride] = the family's dot_q8k(w, x + t * x_stride, n),
 * bit for bit, each super-block of the row unpacked once for up to four
 * tokens. Thread-safe (no state). */
typedef void (*herd_dot_q8k_rows_fn)(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                     size_t n, float *y, size_t y_stride);

/* The multi-token twin of a table's dot_q8k entry (the function itself), or
 * NULL when it has none (the reference kernels). */
herd_dot_q8k_rows_fn herd_dot_q8k_rows_of(float (*dot)(const void *, const struct herd_block_q8_k *, size_t));

/* AVX2 + FMA + F16C (kquants_avx2.c) */
void herd_quantize_row_q8k_avx2(const float *x, struct herd_block_q8_k *y, size_t n);
float herd_dot_q4_1_q8a_avx2(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_q5_0_q8a_avx2(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_q5_1_q8a_avx2(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_iq4_nl_q8a_avx2(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_q2_k_q8k_avx2(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q3_k_q8k_avx2(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q4_k_q8k_avx2(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q5_k_q8k_avx2(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q6_k_q8k_avx2(const void *w, const struct herd_block_q8_k *x, size_t n);
void herd_dot_q2_k_q8k_rows_avx2(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                 size_t n, float *y, size_t y_stride);
void herd_dot_q3_k_q8k_rows_avx2(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                 size_t n, float *y, size_t y_stride);
void herd_dot_q4_k_q8k_rows_avx2(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                 size_t n, float *y, size_t y_stride);
void herd_dot_q5_k_q8k_rows_avx2(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                 size_t n, float *y, size_t y_stride);
void herd_dot_q6_k_q8k_rows_avx2(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                 size_t n, float *y, size_t y_stride);

/* AVX-512 F/BW/VL/DQ (kquants_avx512.c) */
float herd_dot_q4_1_q8a_avx512(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_q5_0_q8a_avx512(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_q5_1_q8a_avx512(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_iq4_nl_q8a_avx512(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_q2_k_q8k_avx512(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q3_k_q8k_avx512(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q4_k_q8k_avx512(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q5_k_q8k_avx512(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q6_k_q8k_avx512(const void *w, const struct herd_block_q8_k *x, size_t n);
void herd_dot_q2_k_q8k_rows_avx512(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                   size_t n, float *y, size_t y_stride);
void herd_dot_q3_k_q8k_rows_avx512(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                   size_t n, float *y, size_t y_stride);
void herd_dot_q4_k_q8k_rows_avx512(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                   size_t n, float *y, size_t y_stride);
void herd_dot_q5_k_q8k_rows_avx512(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                   size_t n, float *y, size_t y_stride);
void herd_dot_q6_k_q8k_rows_avx512(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                   size_t n, float *y, size_t y_stride);

/* AVX-512 with VNNI (kquants_avx512.c) */
float herd_dot_q4_1_q8a_vnni(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_q5_0_q8a_vnni(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_q5_1_q8a_vnni(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_iq4_nl_q8a_vnni(const void *w, const struct herd_block_q8a *x, size_t n);
float herd_dot_q2_k_q8k_vnni(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q3_k_q8k_vnni(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q4_k_q8k_vnni(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q5_k_q8k_vnni(const void *w, const struct herd_block_q8_k *x, size_t n);
float herd_dot_q6_k_q8k_vnni(const void *w, const struct herd_block_q8_k *x, size_t n);
void herd_dot_q2_k_q8k_rows_vnni(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                 size_t n, float *y, size_t y_stride);
void herd_dot_q3_k_q8k_rows_vnni(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                 size_t n, float *y, size_t y_stride);
void herd_dot_q4_k_q8k_rows_vnni(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                 size_t n, float *y, size_t y_stride);
void herd_dot_q5_k_q8k_rows_vnni(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                 size_t n, float *y, size_t y_stride);
void herd_dot_q6_k_q8k_rows_vnni(const void *w, const struct herd_block_q8_k *x, size_t x_stride, size_t n_tok,
                                 size_t n, float *y, size_t y_stride);

#endif
