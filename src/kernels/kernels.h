/* The compute kernels behind matmul and attention, as a table of function
 * pointers with one implementation per instruction set: a scalar reference
 * (`_ref`, always built, the definition of correct) and AVX2+FMA+F16C and
 * AVX-512 versions chosen at start-up from CPUID. Every SIMD kernel is tested
 * against its _ref twin (tests/kernels/test_kernels.c).
 *
 * Quantized weights (Q8_0, Q4_0) are multiplied with activations quantized to
 * 8 bits (struct herd_block_q8a) using integer dot products; float weights
 * (F32, F16, BF16) with float activations. */
#ifndef HERD_KERNELS_KERNELS_H
#define HERD_KERNELS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define HERD_QK8A 32

/* An activation block: 32 values as int8 with a float scale (a float rather
 * than ggml's fp16 scale: one less rounding, same memory traffic order). */
struct herd_block_q8a {
    float d;
    int8_t qs[HERD_QK8A];
};

struct herd_kernels {
    const char *name;
    /* x[n] (n a multiple of 32) -> n/32 blocks: d = amax/127, q = round-half-even(x * 127/amax). */
    void (*quantize_row_q8a)(const float *x, struct herd_block_q8a *y, size_t n);
    /* Dot products of one weight row with one activation row of n values. */
    float (*dot_q8_0_q8a)(const void *w, const struct herd_block_q8a *x, size_t n);
    float (*dot_q4_0_q8a)(const void *w, const struct herd_block_q8a *x, size_t n);
    float (*dot_f32)(const float *w, const float *x, size_t n);
    float (*dot_f16_f32)(const uint16_t *w, const float *x, size_t n);
    float (*dot_bf16_f32)(const uint16_t *w, const float *x, size_t n);
    /* y[i] += a * x[i] */
    void (*axpy_f32)(float a, const float *x, float *y, size_t n);
    void (*axpy_f16)(float a, const uint16_t *x, float *y, size_t n);
};

const struct herd_kernels *herd_kernels_ref(void);
/* NULL when the processor (or HERD_CPU) does not allow the family. */
const struct herd_kernels *herd_kernels_avx2(void);
const struct herd_kernels *herd_kernels_avx512(void);
/* The best family this processor runs. */
const struct herd_kernels *herd_kernels_best(void);

#endif
