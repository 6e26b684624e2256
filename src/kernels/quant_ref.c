/* Scalar reference conversions between float and the weight formats herd
 * computes: fp16 / bf16, and dequantization of every block type (the
 * quantizers live in quantize_k.c). Built with -ffp-contract=off so each
 * product and sum rounds as in ggml's build, which does not fuse them. */
#include "kernels/quant.h"

#include <math.h>
#include <string.h>

#include "base/assert.h"
#include "kernels/quantize_k.h"

static uint32_t f32_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    return x;
}

static float bits_f32(uint32_t x) {
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

uint16_t herd_fp32_to_fp16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) /* inf stays inf; NaN stays a quiet NaN */
        return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0u));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (a < 0x38800000u) {
        /* Below the smallest normal half (2^-14): the result is a subnormal
         * count of 2^-24 units. Scaling by 2^24 is exact, lrintf rounds to even. */
        return (uint16_t)(sign | (uint16_t)lrintf(bits_f32(a) * 16777216.0f));
    }
    uint32_t h = ((a >> 23) - 112u) << 10 | ((a >> 13) & 0x3ffu); /* rebias 127 -> 15 */
    uint32_t rest = a & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* a carry into the exponent is right */
    return (uint16_t)(sign | h);
}

float herd_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13));
    if (e == 0) { /* zero or subnormal: m * 2^-24 is exact in float */
        float v = (float)m * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

uint16_t herd_fp32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

float herd_bf16_to_fp32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

/* ------------------------------------------------------------ dequantization of the other types
 *
 * Each is bit-exact with ggml's dequantize_row_* (tests/data/kquant): the
 * same products in the same order, each rounded to f32 (this file is not
 * contracted), so a value is computed as d * scale first, then times the
 * quant, then minus the min term. */

/* The fifth bit of element j of a Q5 block, as 0 or 16. */
static int q5_high(const uint8_t qh[4], int j) {
    const uint32_t h = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
    return (int)((h >> j) & 1u) << 4;
}

static void dequantize_q4_1(const struct herd_block_q4_1 *b, float *y, size_t n) {
    HERD_ASSERT(n % 32 == 0);
    for (size_t i = 0; i < n / 32; i++, y += 32) {
        const float d = herd_fp16_to_fp32(b[i].d), m = herd_fp16_to_fp32(b[i].m);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(b[i].qs[j] & 0x0f) * d + m;
            y[j + 16] = (float)(b[i].qs[j] >> 4) * d + m;
        }
    }
}

static void dequantize_q5_0(const struct herd_block_q5_0 *b, float *y, size_t n) {
    HERD_ASSERT(n % 32 == 0);
    for (size_t i = 0; i < n / 32; i++, y += 32) {
        const float d = herd_fp16_to_fp32(b[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(((b[i].qs[j] & 0x0f) | q5_high(b[i].qh, j)) - 16) * d;
            y[j + 16] = (float)(((b[i].qs[j] >> 4) | q5_high(b[i].qh, j + 16)) - 16) * d;
        }
    }
}

static void dequantize_q5_1(const struct herd_block_q5_1 *b, float *y, size_t n) {
    HERD_ASSERT(n % 32 == 0);
    for (size_t i = 0; i < n / 32; i++, y += 32) {
        const float d = herd_fp16_to_fp32(b[i].d), m = herd_fp16_to_fp32(b[i].m);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((b[i].qs[j] & 0x0f) | q5_high(b[i].qh, j)) * d + m;
            y[j + 16] = (float)((b[i].qs[j] >> 4) | q5_high(b[i].qh, j + 16)) * d + m;
        }
    }
}

static void dequantize_iq4_nl(const struct herd_block_iq4_nl *b, float *y, size_t n) {
    HERD_ASSERT(n % 32 == 0);
    for (size_t i = 0; i < n / 32; i++, y += 32) {
        const float d = herd_fp16_to_fp32(b[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)herd_iq4nl_values[b[i].qs[j] & 0x0f];
            y[j + 16] = d * (float)herd_iq4nl_values[b[i].qs[j] >> 4];
        }
    }
}

static void dequantize_q2_k(const struct herd_block_q2_k *b, float *y, size_t n) {
    HERD_ASSERT(n % HERD_QK_K == 0);
    for (size_t i = 0; i < n / HERD_QK_K; i++) {
        const float d = herd_fp16_to_fp32(b[i].d), dmin = herd_fp16_to_fp32(b[i].dmin);
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++)
                for (int k = 0; k < 2; k++) {
                    const uint8_t sc = b[i].scales[8 * h + 2 * s + k];
                    const float dl = d * (float)(sc & 0xf), ml = dmin * (float)(sc >> 4);
                    const uint8_t *q = b[i].qs + 32 * h + 16 * k;
                    for (int l = 0; l < 16; l++) *y++ = dl * (float)((q[l] >> (2 * s)) & 3) - ml;
                }
    }
}

static void dequantize_q3_k(const struct herd_block_q3_k *b, float *y, size_t n) {
    HERD_ASSERT(n % HERD_QK_K == 0);
    for (size_t i = 0; i < n / HERD_QK_K; i++) {
        const float d = herd_fp16_to_fp32(b[i].d);
        uint8_t scales[16];
        herd_q3_k_scales(b[i].scales, scales);
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++)
                for (int k = 0; k < 2; k++) {
                    const float dl = d * (float)(scales[8 * h + 2 * s + k] - 32);
                    const uint8_t *q = b[i].qs + 32 * h + 16 * k, *hm = b[i].hmask + 16 * k;
                    const uint8_t bit = (uint8_t)(1u << (4 * h + s));
                    for (int l = 0; l < 16; l++) *y++ = dl * (float)(((q[l] >> (2 * s)) & 3) - ((hm[l] & bit) ? 0 : 4));
                }
    }
}

static void dequantize_q4_k(const struct herd_block_q4_k *b, float *y, size_t n) {
    HERD_ASSERT(n % HERD_QK_K == 0);
    for (size_t i = 0; i < n / HERD_QK_K; i++) {
        const float d = herd_fp16_to_fp32(b[i].d), dmin = herd_fp16_to_fp32(b[i].dmin);
        for (int p = 0; p < 4; p++) {
            const uint8_t *q = b[i].qs + 32 * p;
            for (int k = 0; k < 2; k++) {
                uint8_t sc, m;
                herd_kquant_scale_min(2 * p + k, b[i].scales, &sc, &m);
                const float dl = d * (float)sc, ml = dmin * (float)m;
                for (int l = 0; l < 32; l++) *y++ = dl * (float)((q[l] >> (4 * k)) & 0xf) - ml;
            }
        }
    }
}

static void dequantize_q5_k(const struct herd_block_q5_k *b, float *y, size_t n) {
    HERD_ASSERT(n % HERD_QK_K == 0);
    for (size_t i = 0; i < n / HERD_QK_K; i++) {
        const float d = herd_fp16_to_fp32(b[i].d), dmin = herd_fp16_to_fp32(b[i].dmin);
        for (int p = 0; p < 4; p++) {
            const uint8_t *q = b[i].qs + 32 * p;
            for (int k = 0; k < 2; k++) {
                uint8_t sc, m;
                herd_kquant_scale_min(2 * p + k, b[i].scales, &sc, &m);
                const float dl = d * (float)sc, ml = dmin * (float)m;
                const int bit = 2 * p + k;
                for (int l = 0; l < 32; l++)
                    *y++ = dl * (float)(((q[l] >> (4 * k)) & 0xf) | (((b[i].qh[l] >> bit) & 1) << 4)) - ml;
            }
        }
    }
}

static void dequantize_q6_k(const struct herd_block_q6_k *b, float *y, size_t n) {
    HERD_ASSERT(n % HERD_QK_K == 0);
    for (size_t i = 0; i < n / HERD_QK_K; i++) {
        const float d = herd_fp16_to_fp32(b[i].d);
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++)
                for (int l = 0; l < 32; l++) {
                    const uint8_t lo = (uint8_t)((b[i].ql[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 0xf);
                    const uint8_t hi = (uint8_t)((b[i].qh[32 * h + l] >> (2 * s)) & 3);
                    const float dl = d * (float)b[i].scales[8 * h + 2 * s + l / 16];
                    *y++ = dl * (float)((lo | hi << 4) - 32);
                }
    }
}

void herd_dequantize_row_ref(enum herd_ggml_type type, const void *src, float *dst, size_t n) {
    switch (type) {
    case HERD_GGML_TYPE_F32: memcpy(dst, src, n * sizeof *dst); return;
    case HERD_GGML_TYPE_F16: {
        const uint8_t *p = src;
        for (size_t i = 0; i < n; i++) dst[i] = herd_fp16_to_fp32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return;
    }
    case HERD_GGML_TYPE_BF16: {
        const uint8_t *p = src;
        for (size_t i = 0; i < n; i++) dst[i] = herd_bf16_to_fp32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return;
    }
    case HERD_GGML_TYPE_Q8_0: {
        HERD_ASSERT(n % HERD_QK8_0 == 0);
        const struct herd_block_q8_0 *b = src;
        for (size_t i = 0; i < n / HERD_QK8_0; i++) {
            const float d = herd_fp16_to_fp32(b[i].d);
            for (int j = 0; j < HERD_QK8_0; j++) dst[i * HERD_QK8_0 + j] = (float)b[i].qs[j] * d;
        }
        return;
    }
    case HERD_GGML_TYPE_Q4_0: {
        HERD_ASSERT(n % HERD_QK4_0 == 0);
        const struct herd_block_q4_0 *b = src;
        for (size_t i = 0; i < n / HERD_QK4_0; i++) {
            const float d = herd_fp16_to_fp32(b[i].d);
            for (int j = 0; j < HERD_QK4_0 / 2; j++) {
                dst[i * HERD_QK4_0 + j] = (float)((b[i].qs[j] & 0x0f) - 8) * d;
                dst[i * HERD_QK4_0 + j + HERD_QK4_0 / 2] = (float)((b[i].qs[j] >> 4) - 8) * d;
            }
        }
        return;
    }
    case HERD_GGML_TYPE_Q4_1: dequantize_q4_1(src, dst, n); return;
    case HERD_GGML_TYPE_Q5_0: dequantize_q5_0(src, dst, n); return;
    case HERD_GGML_TYPE_Q5_1: dequantize_q5_1(src, dst, n); return;
    case HERD_GGML_TYPE_IQ4_NL: dequantize_iq4_nl(src, dst, n); return;
    case HERD_GGML_TYPE_Q2_K: dequantize_q2_k(src, dst, n); return;
    case HERD_GGML_TYPE_Q3_K: dequantize_q3_k(src, dst, n); return;
    case HERD_GGML_TYPE_Q4_K: dequantize_q4_k(src, dst, n); return;
    case HERD_GGML_TYPE_Q5_K: dequantize_q5_k(src, dst, n); return;
    case HERD_GGML_TYPE_Q6_K: dequantize_q6_k(src, dst, n); return;
    default: HERD_ASSERT(!"dequantize: type not computed");
    }
}

void herd_quantize_row_ref(enum herd_ggml_type type, const float *src, void *dst, size_t n) {
    herd_quantize_rows(type, src, dst, 1, n, NULL);
}

bool herd_quantize_row_supported(enum herd_ggml_type type) { return herd_quantize_rows_supported(type); }
