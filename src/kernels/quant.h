/* Number formats of model weights: fp16 and bf16 conversion, and the Q8_0 and
 * Q4_0 block formats, in their scalar reference (_ref) form. The quantizers
 * reproduce llama-quantize byte for byte (see the block layout comments), so
 * a model quantized by herd is the model llama.cpp would have written. */
#ifndef HERD_KERNELS_QUANT_H
#define HERD_KERNELS_QUANT_H

#include <stdbool.h>
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

/* ------------------------------------------------------------ legacy 32-value blocks with an offset or a fifth bit */

/* Q4_1, 20 bytes per 32 values: fp16 d, fp16 m, then 16 bytes laid out as
 * in Q4_0; value = nibble * d + m. */
struct herd_block_q4_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qs[16];
};

/* Q5_0, 22 bytes per 32 values: fp16 d, 4 bytes qh (a little-endian u32
 * whose bit j is the fifth bit of element j), then 16 bytes of low nibbles
 * laid out as in Q4_0; value = (nibble | fifth bit << 4) - 16) * d. */
struct herd_block_q5_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[16];
};

/* Q5_1, 24 bytes per 32 values: fp16 d, fp16 m, qh and qs as in Q5_0;
 * value = (nibble | fifth bit << 4) * d + m. */
struct herd_block_q5_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[16];
};

/* IQ4_NL, 18 bytes per 32 values: fp16 d, then 16 bytes laid out as in
 * Q4_0; value = d * herd_iq4nl_values[nibble], a non-linear grid denser
 * near zero. llama-quantize writes it where a Q2_K / Q3_K tensor's rows
 * are not a multiple of 256. */
struct herd_block_iq4_nl {
    uint16_t d;
    uint8_t qs[16];
};

static const int8_t herd_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

_Static_assert(sizeof(struct herd_block_q4_1) == 20, "Q4_1 block is 20 bytes");
_Static_assert(sizeof(struct herd_block_iq4_nl) == 18, "IQ4_NL block is 18 bytes");
_Static_assert(sizeof(struct herd_block_q5_0) == 22, "Q5_0 block is 22 bytes");
_Static_assert(sizeof(struct herd_block_q5_1) == 24, "Q5_1 block is 24 bytes");

/* ------------------------------------------------------------ K-quants: super-blocks of 256 values
 *
 * A super-block holds 8 sub-blocks of 32 values (Q4_K, Q5_K) or 16 of 16
 * (Q2_K, Q3_K, Q6_K), each with a small integer scale (and for the
 * unsigned types a min) relative to the super-block's fp16 d (and dmin).
 * Element order inside a super-block follows ggml's, which interleaves
 * bit planes so that SIMD unpacking is a shift and a mask; each struct
 * says where element i lives, and herd_dequantize_row_ref is the
 * definition (bit-exact with ggml's dequantize_row_*). */
#define HERD_QK_K 256

/* Q2_K, 84 bytes: scales[16] (low nibble: the sub-block's scale, high
 * nibble: its min), qs[64] (2-bit values), fp16 d and dmin. Element
 * 128h + 32s + 16k + l (h < 2, s < 4, k < 2, l < 16) is bits 2s..2s+1 of
 * qs[32h + 16k + l], sub-block 8h + 2s + k; value = d * scale * q - dmin * min. */
struct herd_block_q2_k {
    uint8_t scales[HERD_QK_K / 16];
    uint8_t qs[HERD_QK_K / 4];
    uint16_t d;
    uint16_t dmin;
};

/* Q3_K, 110 bytes: hmask[32] (the third bit, inverted: set means +0, clear
 * means -4), qs[64] (low 2 bits, laid out as Q2_K), scales[12] (16 6-bit
 * scales biased by 32: low 4 bits of scale j are scales[j] & 15 for j < 8,
 * scales[j - 8] >> 4 otherwise; high 2 bits are bits 2(j/4).. of
 * scales[8 + j % 4]), fp16 d. Element 128h + 32s + 16k + l has its third
 * bit in bit 4h + s of hmask[16k + l]; value = d * (scale - 32) * (q - 4 x !bit). */
struct herd_block_q3_k {
    uint8_t hmask[HERD_QK_K / 8];
    uint8_t qs[HERD_QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
};

/* Q4_K, 144 bytes: fp16 d and dmin, scales[12] (8 6-bit scales and 8 6-bit
 * mins, see herd_kquant_scale_min), qs[128]. Element 64p + 32k + l (p < 4,
 * k < 2, l < 32) is nibble k of qs[32p + l], sub-block 2p + k; value =
 * d * scale * q - dmin * min. */
struct herd_block_q4_k {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qs[HERD_QK_K / 2];
};

/* Q5_K, 176 bytes: as Q4_K plus qh[32]; element 64p + 32k + l has its fifth
 * bit in bit 2p + k of qh[l]. */
struct herd_block_q5_k {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[HERD_QK_K / 8];
    uint8_t qs[HERD_QK_K / 2];
};

/* Q6_K, 210 bytes: ql[128] (low 4 bits), qh[64] (high 2 bits), 16 int8
 * scales, fp16 d. Element 128h + 32s + l (h < 2, s < 4, l < 32): low bits
 * are nibble s / 2 of ql[64h + 32(s % 2) + l], high bits are bits 2s..2s+1
 * of qh[32h + l], sub-block 8h + 2s + l / 16; value = d * scale * (q - 32). */
struct herd_block_q6_k {
    uint8_t ql[HERD_QK_K / 2];
    uint8_t qh[HERD_QK_K / 4];
    int8_t scales[HERD_QK_K / 16];
    uint16_t d;
};

/* Q8_K, 292 bytes: the activation format the K-quant dot products take (as
 * in ggml's CPU path, so results agree with llama.cpp's): f32 d, 256 int8
 * values, and the sums of each 16 of them (the min terms need only these). */
struct herd_block_q8_k {
    float d;
    int8_t qs[HERD_QK_K];
    int16_t bsums[HERD_QK_K / 16];
};

_Static_assert(sizeof(struct herd_block_q2_k) == 84, "Q2_K block is 84 bytes");
_Static_assert(sizeof(struct herd_block_q3_k) == 110, "Q3_K block is 110 bytes");
_Static_assert(sizeof(struct herd_block_q4_k) == 144, "Q4_K block is 144 bytes");
_Static_assert(sizeof(struct herd_block_q5_k) == 176, "Q5_K block is 176 bytes");
_Static_assert(sizeof(struct herd_block_q6_k) == 210, "Q6_K block is 210 bytes");
_Static_assert(sizeof(struct herd_block_q8_k) == 292, "Q8_K block is 292 bytes");

/* Sub-block j's (j < 8) 6-bit scale and min in Q4_K and Q5_K's scales[12]:
 * for j < 4 the low 6 bits of bytes j and j + 4; for j >= 4 the nibbles of
 * byte j + 4 with the top two bits of bytes j - 4 and j above them. */
static inline void herd_kquant_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q3_K's 16 scales unpacked from scales[12], still biased by 32 (0..63). */
static inline void herd_q3_k_scales(const uint8_t *s, uint8_t out[16]) {
    for (int j = 0; j < 16; j++) {
        const int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
        const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = (uint8_t)(lo | hi << 4);
    }
}

/* IEEE half <-> float, round to nearest even (what F16C and numpy do). */
uint16_t herd_fp32_to_fp16(float f);
float herd_fp16_to_fp32(uint16_t h);
/* bfloat16 <-> float, round to nearest even; NaN stays NaN. */
uint16_t herd_fp32_to_bf16(float f);
float herd_bf16_to_fp32(uint16_t h);

/* Converts n values of a row of type src_type to float. type must be one of
 * F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K..Q6_K (HERD_ASSERT otherwise);
 * n a multiple of its block. Bit-exact with ggml's dequantize_row_*. */
void herd_dequantize_row_ref(enum herd_ggml_type type, const void *src, float *dst, size_t n);

/* Converts n floats to one row of type (F32, F16, BF16 or any block type
 * herd_quantize_rows writes: quantize_k.h), writing herd_ggml_tensor_nbytes
 * bytes, byte-identical to ggml's quantizer without an importance matrix. */
void herd_quantize_row_ref(enum herd_ggml_type type, const float *src, void *dst, size_t n);

/* Whether herd_quantize_row_ref writes type (the writers' check). */
bool herd_quantize_row_supported(enum herd_ggml_type type);

#endif
