/* Row quantizers for every block type herd writes: the legacy Q4_0, Q4_1,
 * Q5_0, Q5_1, Q8_0 and IQ4_NL, and the K-quants Q2_K..Q6_K, each without an
 * importance matrix and with one. They re-implement ggml's algorithms
 * (ggml-quants.c: quantize_row_*_ref without an imatrix, quantize_row_*_impl
 * with one) and write the bytes ggml_quantize_chunk writes from the same
 * floats, so a model quantized by herd is the file llama-quantize writes.
 *
 * Byte identity needs ggml's float arithmetic exactly: every product and
 * sum rounded to f32 in ggml's order (quantize_k.c is compiled with
 * -ffp-contract=off; ggml-base is built without FMA, see
 * tests/data/kquant/README.md), and nearest_int's rounding (round half to
 * even through the 1.5 x 2^23 bias). tests/kernels/test_quantize_k.c
 * checks every type against ggml's recorded output.
 *
 * The importance matrix qw, when given, holds one weight per column of the
 * row (n values): the mean squared activation entering that column
 * (src/convert/imatrix.h). Q8_0 ignores it, as ggml does. All functions are
 * pure: no allocation, no shared state, any thread. */
#ifndef HERD_KERNELS_QUANTIZE_K_H
#define HERD_KERNELS_QUANTIZE_K_H

#include <stdbool.h>
#include <stddef.h>

#include "herd/gguf.h"
#include "kernels/quant.h"

/* One row of n floats (n a multiple of the type's block: 32, or 256 for the
 * K types; HERD_ASSERT otherwise) into n / block blocks at y. qw: n
 * importance weights, or NULL for ggml's plain (reference) quantizer. */
void herd_quantize_row_q4_0(const float *x, void *y, size_t n, const float *qw);
void herd_quantize_row_q4_1(const float *x, void *y, size_t n, const float *qw);
void herd_quantize_row_q5_0(const float *x, void *y, size_t n, const float *qw);
void herd_quantize_row_q5_1(const float *x, void *y, size_t n, const float *qw);
void herd_quantize_row_q8_0(const float *x, void *y, size_t n, const float *qw);
void herd_quantize_row_iq4_nl(const float *x, void *y, size_t n, const float *qw);
void herd_quantize_row_q2_k(const float *x, void *y, size_t n, const float *qw);
void herd_quantize_row_q3_k(const float *x, void *y, size_t n, const float *qw);
void herd_quantize_row_q4_k(const float *x, void *y, size_t n, const float *qw);
void herd_quantize_row_q5_k(const float *x, void *y, size_t n, const float *qw);
void herd_quantize_row_q6_k(const float *x, void *y, size_t n, const float *qw);

/* Whether herd_quantize_rows writes type: F32, F16, BF16 and the block
 * types above. */
bool herd_quantize_rows_supported(enum herd_ggml_type type);

/* n_rows rows of n_per_row floats (row-major at src) into n_rows rows of
 * type at dst, each herd_ggml_tensor_nbytes(type, {n_per_row}) bytes, as
 * ggml_quantize_chunk(type, src, dst, 0, n_rows, n_per_row, imatrix) does.
 * imatrix: n_per_row weights shared by every row, or NULL. type must be
 * supported and n_per_row a multiple of its block (HERD_ASSERT). Rows are
 * independent, so callers may split them over threads freely. */
void herd_quantize_rows(enum herd_ggml_type type, const float *src, void *dst, size_t n_rows, size_t n_per_row,
                        const float *imatrix);

/* ggml_validate_row_data for the types above: false when an F32 value, an
 * F16/BF16 value or a block's fp16 scale (d, and m or dmin) is infinite or
 * NaN. llama-quantize refuses to write such data (an all-zero importance
 * matrix, or weights beyond fp16's range, can produce it); herd quantize
 * does the same. n_bytes is a whole number of blocks. */
bool herd_quantize_rows_valid(enum herd_ggml_type type, const void *data, size_t n_bytes);

#endif
