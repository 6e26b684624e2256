/* Number formats of model weights: fp16 and bf16 conversion, and the Q8_0 and
 * Q4_0 block formats, in their scalar reference (_ref) form. The quantizers
 * reproduce llama-quantize byte for byte (see the block layout comments), so
 * a model quantized by herd is the model llama.cpp would have written. */
#ifndef HERD_KERNELS_QUANT_H
#define HERD_KERNELS_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "herd/gguf.h"

#define HERD_QK8_0 32
#define HERD_QK4_0 32

/* Q8_0, 34 bytes per 32 values: fp16 d, then 32 int8 q; value = q * d. */
struct herd_block_q8_0 {
    uint16_t d;
    int8_t qs[HERD_QK8_0];
};

/* Q4_0, 18 bytes per 32 values: fp16 d, then 16 bytes; byte j holds element j
 * in its low nibble and element j + 16 in its high nibble; value = (nibble - 8) * d. */
struct herd_block_q4_0 {
    uint16_t d;
    uint8_t qs[HERD_QK4_0 / 2];
};

_Static_assert(sizeof(struct herd_block_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(struct herd_block_q4_0) == 18, "Q4_0 block is 18 bytes");

/* IEEE half <-> float, round to nearest even (what F16C and numpy do). */
uint16_t herd_fp32_to_fp16(float f);
float herd_fp16_to_fp32(uint16_t h);
/* bfloat16 <-> float, round to nearest even; NaN stays NaN. */
uint16_t herd_fp32_to_bf16(float f);
float herd_bf16_to_fp32(uint16_t h);

/* Quantize n values (a multiple of 32) into n / 32 blocks.
 * Q8_0: d = amax / 127, q = roundf(x / d).
 * Q4_0: m = the value of largest magnitude (first on ties, sign kept),
 * d = m / -8, q = min(15, trunc(x / d + 8.5)), without fused multiply-add. */
void herd_quantize_row_q8_0_ref(const float *x, struct herd_block_q8_0 *y, size_t n);
void herd_quantize_row_q4_0_ref(const float *x, struct herd_block_q4_0 *y, size_t n);

/* Converts n values of a row of type src_type to float. type must be one of
 * F32, F16, BF16, Q8_0, Q4_0 (HERD_ASSERT otherwise); n a multiple of its block. */
void herd_dequantize_row_ref(enum herd_ggml_type type, const void *src, float *dst, size_t n);

/* Converts n floats to a row of type dst_type (F32, F16, BF16, Q8_0, Q4_0),
 * writing herd_ggml_tensor_nbytes(...) bytes. */
void herd_quantize_row_ref(enum herd_ggml_type type, const float *src, void *dst, size_t n);

#endif
