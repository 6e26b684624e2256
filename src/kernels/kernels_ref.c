/* Scalar reference kernels: the definition every SIMD variant is tested
 * against. Built with -ffp-contract=off so its rounding is the same with
 * every compiler and flag set. */
#include <math.h>
#include <string.h>

#include "base/assert.h"
#include "kernels/kernels.h"
#include "kernels/kpack.h"
#include "kernels/kquants.h"
#include "kernels/quant.h"

static void quantize_row_q8a_ref(const float *x, struct herd_block_q8a *y, size_t n) {
    HERD_ASSERT(n % HERD_QK8A == 0);
    for (size_t b = 0; b < n / HERD_QK8A; b++, x += HERD_QK8A) {
        float amax = 0.0f;
        for (int j = 0; j < HERD_QK8A; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        /* the scale as ggml keeps it, in fp16 (the values are quantized with
         * the exact one, as ggml does): herd's answers then agree with
         * llama.cpp's on the same file (perplexity 0.016 % apart on a Q8_0
         * model, 0.2 % with the f32 scale), and neither is nearer float64 */
        y[b].d = herd_fp16_to_fp32(herd_fp32_to_fp16(amax / 127.0f));
        int32_t sum = 0;
        for (int j = 0; j < HERD_QK8A; j++) {
            y[b].qs[j] = (int8_t)lrintf(x[j] * id);
            sum += y[b].qs[j];
        }
        y[b].neg128_sum = -128 * sum;
    }
}

static float dot_q8_0_q8a_ref(const void *w, const struct herd_block_q8a *x, size_t n) {
    const struct herd_block_q8_0 *b = w;
    float sum = 0.0f;
    for (size_t i = 0; i < n / HERD_QK8A; i++) {
        int32_t s = 0;
        for (int j = 0; j < HERD_QK8A; j++) s += (int32_t)b[i].qs[j] * x[i].qs[j];
        sum += herd_fp16_to_fp32(b[i].d) * x[i].d * (float)s;
    }
    return sum;
}

static float dot_q4_0_q8a_ref(const void *w, const struct herd_block_q8a *x, size_t n) {
    const struct herd_block_q4_0 *b = w;
    float sum = 0.0f;
    for (size_t i = 0; i < n / HERD_QK8A; i++) {
        int32_t s = 0;
        for (int j = 0; j < HERD_QK8A / 2; j++) {
            s += ((b[i].qs[j] & 0x0f) - 8) * x[i].qs[j];
            s += ((b[i].qs[j] >> 4) - 8) * x[i].qs[j + HERD_QK8A / 2];
        }
        sum += herd_fp16_to_fp32(b[i].d) * x[i].d * (float)s;
    }
    return sum;
}

static float dot_f32_ref(const float *w, const float *x, size_t n) {
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++) sum += w[i] * x[i];
    return sum;
}

static float dot_f16_f32_ref(const uint16_t *w, const float *x, size_t n) {
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++) sum += herd_fp16_to_fp32(w[i]) * x[i];
    return sum;
}

static float dot_bf16_f32_ref(const uint16_t *w, const float *x, size_t n) {
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++) sum += herd_bf16_to_fp32(w[i]) * x[i];
    return sum;
}

static void axpy_f32_ref(float a, const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

static void axpy_f16_ref(float a, const uint16_t *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += a * herd_fp16_to_fp32(x[i]);
}

void herd_gemm_packed_ref(enum herd_ggml_type type, const uint8_t *w, size_t n_blocks, const struct herd_block_q8a *x,
                          size_t x_stride, size_t n_tok, float *y, size_t y_stride) {
    HERD_ASSERT(type == HERD_GGML_TYPE_Q4_0 || type == HERD_GGML_TYPE_Q8_0);
    const bool q4 = type == HERD_GGML_TYPE_Q4_0;
    const size_t chunk = q4 ? HERD_PACK_Q4_0_CHUNK : HERD_PACK_Q8_0_CHUNK;
    const int32_t offset = q4 ? 8 : 128;
    for (size_t t = 0; t < n_tok; t++) {
        float acc[HERD_PACK_ROWS] = {0};
        for (size_t b = 0; b < n_blocks; b++) {
            const uint8_t *c = w + b * chunk;
            const struct herd_block_q8a *xb = x + t * x_stride + b;
            for (int r = 0; r < HERD_PACK_ROWS; r++) {
                int32_t s = 0;
                for (int col = 0; col < HERD_QK8A; col++) {
                    int32_t u;
                    if (q4) {
                        const int j = (col % 16) / 4, i = col % 4;
                        const uint8_t byte = c[2 * HERD_PACK_ROWS + 64 * j + 4 * r + i];
                        u = col < 16 ? (byte & 0x0f) : (byte >> 4);
                    } else {
                        u = c[2 * HERD_PACK_ROWS + 64 * (col / 4) + 4 * r + col % 4];
                    }
                    s += u * xb->qs[col];
                }
                s += offset == 128 ? xb->neg128_sum : herd_q8a_q4_offset(xb); /* - offset x sum */
                const uint16_t dh = (uint16_t)(c[2 * r] | c[2 * r + 1] << 8);
                acc[r] += (float)s * (herd_fp16_to_fp32(dh) * xb->d);
            }
        }
        for (int r = 0; r < HERD_PACK_ROWS; r++) y[t * y_stride + (size_t)r] = acc[r];
    }
}

float herd_attn_kv_k_at(const struct herd_attn_kv *kv, int d, int j, int bt) {
    const size_t i = (size_t)d * (size_t)bt + (size_t)j;
    switch (kv->type) {
    case HERD_ATTN_KV_F32: return ((const float *)kv->k)[i];
    case HERD_ATTN_KV_Q8: return (float)((const int8_t *)kv->k)[i];
    default: return herd_fp16_to_fp32(((const uint16_t *)kv->k)[i]);
    }
}

float herd_attn_kv_v_at(const struct herd_attn_kv *kv, int j, int d) {
    const size_t i = (size_t)j * kv->v_stride + (size_t)d;
    switch (kv->type) {
    case HERD_ATTN_KV_F32: return ((const float *)kv->v)[i];
    case HERD_ATTN_KV_Q8: return (float)((const int8_t *)kv->v)[i];
    default: return herd_fp16_to_fp32(((const uint16_t *)kv->v)[i]);
    }
}

static float k_at(const struct herd_attn_kv *kv, int d, int j, int bt) {
    const float v = herd_attn_kv_k_at(kv, d, j, bt);
    return kv->type == HERD_ATTN_KV_Q8 ? v * kv->k_scale[j] : v;
}

static float v_at(const struct herd_attn_kv *kv, int j, int d) {
    const float v = herd_attn_kv_v_at(kv, j, d);
    return kv->type == HERD_ATTN_KV_Q8 ? v * kv->v_scale[(size_t)j * kv->v_scale_stride] : v;
}

void herd_attn_block_ref(const float *q, int G, int hd, const struct herd_attn_kv *kv, int bt, int n, float *m,
                         float *l, float *acc) {
    float s[16];
    HERD_ASSERT(bt <= 16 && n <= bt);
    herd_attn_prefetch_part(kv, herd_attn_prefetch_per(kv, 1), 0);
    for (int g = 0; g < G; g++) {
        const float *qg = q + (size_t)g * hd;
        float *ag = acc + (size_t)g * hd;
        float bm = -INFINITY;
        for (int j = 0; j < n; j++) {
            float dot = 0.0f;
            for (int d = 0; d < hd; d++) dot += qg[d] * k_at(kv, d, j, bt);
            s[j] = dot;
        }
        herd_attn_adjust_scores(kv, s, n);
        for (int j = 0; j < n; j++) bm = fmaxf(bm, s[j]);
        if (bm > m[g]) {
            const float f = expf(m[g] - bm); /* 0 on the first block */
            for (int d = 0; d < hd; d++) ag[d] *= f;
            l[g] *= f;
            m[g] = bm;
        }
        for (int j = kv->first; j < n; j++) {
            const float w = expf(s[j] - m[g]);
            l[g] += w;
            for (int d = 0; d < hd; d++) ag[d] += w * v_at(kv, j, d);
        }
    }
}

static void silu_mul_ref(float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void gelu_mul_ref(float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float x = g[i], z2 = 1.5957691216057308f * (x + 0.044715f * x * x * x); /* 2 sqrt(2/pi) (...) */
        g[i] = x / (1.0f + expf(-z2)) * u[i];
    }
}

static void f32_to_f16_ref(const float *x, uint16_t *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = herd_fp32_to_fp16(x[i]);
}

static void softmax_weights_ref(const float *x, float mx, float scale, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = x[i] > -INFINITY ? expf((x[i] - mx) * scale) : 0.0f;
}

static const struct herd_kernels ref = {
    .name = "ref",
    .quantize_row_q8a = quantize_row_q8a_ref,
    .quantize_row_q8k = herd_quantize_row_q8k_ref,
    .dot_q8a =
        {
            [HERD_GGML_TYPE_Q8_0] = dot_q8_0_q8a_ref,
            [HERD_GGML_TYPE_Q4_0] = dot_q4_0_q8a_ref,
            [HERD_GGML_TYPE_Q4_1] = herd_dot_q4_1_q8a_ref,
            [HERD_GGML_TYPE_Q5_0] = herd_dot_q5_0_q8a_ref,
            [HERD_GGML_TYPE_Q5_1] = herd_dot_q5_1_q8a_ref,
            [HERD_GGML_TYPE_IQ4_NL] = herd_dot_iq4_nl_q8a_ref,
        },
    .dot_q8k =
        {
            [HERD_GGML_TYPE_Q2_K] = herd_dot_q2_k_q8k_ref,
            [HERD_GGML_TYPE_Q3_K] = herd_dot_q3_k_q8k_ref,
            [HERD_GGML_TYPE_Q4_K] = herd_dot_q4_k_q8k_ref,
            [HERD_GGML_TYPE_Q5_K] = herd_dot_q5_k_q8k_ref,
            [HERD_GGML_TYPE_Q6_K] = herd_dot_q6_k_q8k_ref,
        },
    .dot_f32 = dot_f32_ref,
    .dot_f16_f32 = dot_f16_f32_ref,
    .dot_bf16_f32 = dot_bf16_f32_ref,
    .axpy_f32 = axpy_f32_ref,
    .axpy_f16 = axpy_f16_ref,
    .gemm_packed = herd_gemm_packed_ref,
    .gemm_kpack = herd_kpack_gemm_ref,
    .prefers_packed = false,
    .attn_block = herd_attn_block_ref,
    .silu_mul = silu_mul_ref,
    .gelu_mul = gelu_mul_ref,
    .f32_to_f16 = f32_to_f16_ref,
    .softmax_weights = softmax_weights_ref,
};

const struct herd_kernels *herd_kernels_ref(void) { return &ref; }
