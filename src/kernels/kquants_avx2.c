/* AVX2 + FMA + F16C twins of the kquants.h kernels (compiled with those
 * flags; used only when CPUID says so): Q8_K quantization byte-identical to
 * the reference, the K-quant dot products 32 values per step (for up to
 * four tokens per unpacked super-block), the legacy 32-value types eight
 * blocks at a time. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "base/assert.h"
#include "kernels/kquants.h"
#include "kernels/kquants_simd.h"
#include "kernels/kquants_x86.h"

/* ------------------------------------------------------------ Q8_K activations */

/* As herd_quantize_row_q8k_ref, the same float operations: amax as the
 * maximum of |x| (a NaN never wins a vmaxps against the running maximum,
 * as it never passes the reference's >), the first value of that magnitude
 * as the extreme one, iscale * x rounded by vcvtps2dq (to nearest even, as
 * lrintf), capped at 127, and its low byte kept (as the reference's
 * conversion to int8_t keeps it: a NaN or infinity product becomes 0 in both). */
void herd_quantize_row_q8k_avx2(const float *x, struct herd_block_q8_k *y, size_t n) {
    HERD_ASSERT(n % HERD_QK_K == 0);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i cap = _mm256_set1_epi32(127), low_byte = _mm256_set1_epi32(0xff);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7), ones = _mm256_set1_epi8(1);
    for (size_t b = 0; b < n / HERD_QK_K; b++, x += HERD_QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < HERD_QK_K; j += 8) m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), m);
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        memset(&y[b], 0, sizeof y[b]);
        if (amax == 0.0f) continue;
        int first = 0;
        const __m256 va = _mm256_set1_ps(amax);
        for (int j = 0;; j += 8) {
            const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j));
            const int hit = _mm256_movemask_ps(_mm256_cmp_ps(a, va, _CMP_EQ_OQ));
            if (hit) {
                first = j + __builtin_ctz((unsigned)hit);
                break;
            }
        }
        const float iscale = -127.0f / x[first];
        const __m256 vs = _mm256_set1_ps(iscale);
        __m256i sums[8];
        for (int j = 0; j < HERD_QK_K; j += 32) {
            __m256i q[4];
            for (int k = 0; k < 4; k++) {
                const __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * k), vs));
                q[k] = _mm256_and_si256(_mm256_min_epi32(v, cap), low_byte);
            }
            /* bytes 0..255 pack without saturating; the permute undoes the
             * packs' lane interleaving */
            const __m256i p = _mm256_packus_epi16(_mm256_packus_epi32(q[0], q[1]), _mm256_packus_epi32(q[2], q[3]));
            const __m256i qs = _mm256_permutevar8x32_epi32(p, order);
            _mm256_storeu_si256((__m256i *)(y[b].qs + j), qs);
            sums[j / 32] = _mm256_maddubs_epi16(ones, qs); /* pair sums of groups 2c (low lane), 2c + 1 */
        }
        /* three rounds of pairwise sums: lane 128 bits low holds the even
         * groups, high the odd ones (each |sum| <= 16 x 128 fits int16) */
        const __m256i h0 = _mm256_hadd_epi16(sums[0], sums[1]), h1 = _mm256_hadd_epi16(sums[2], sums[3]);
        const __m256i h2 = _mm256_hadd_epi16(sums[4], sums[5]), h3 = _mm256_hadd_epi16(sums[6], sums[7]);
        const __m256i g = _mm256_hadd_epi16(_mm256_hadd_epi16(h0, h1), _mm256_hadd_epi16(h2, h3));
        const __m128i even = _mm256_castsi256_si128(g), odd = _mm256_extracti128_si256(g, 1);
        _mm_storeu_si128((__m128i *)y[b].bsums, _mm_unpacklo_epi16(even, odd));
        _mm_storeu_si128((__m128i *)(y[b].bsums + 8), _mm_unpackhi_epi16(even, odd));
        y[b].d = 1.0f / iscale;
    }
}

/* ------------------------------------------------------------ K-quants */

/* Shift every byte so that its bit `from` lands on bit `to`, and keep mask
 * (bits at or above `to`): 16-bit shifts, whose carries between bytes the
 * mask removes. */
KQ_INLINE __m256i field(__m256i v, int from, int to, int mask) {
    v = from > to ? _mm256_srli_epi16(v, from - to) : _mm256_slli_epi16(v, to - from);
    return _mm256_and_si256(v, _mm256_set1_epi8((char)mask));
}

/* Values 32c..32c+31 (c < 8) of a super-block as unsigned bytes (quant.h's
 * element layouts; Q3_K as q + 4, Q6_K as q + 32). */
KQ_INLINE __m256i unpack(const enum herd_ggml_type T, const void *blk, const int c) {
    switch (T) {
    case HERD_GGML_TYPE_Q2_K: {
        const struct herd_block_q2_k *b = blk;
        return field(kq_load256(b->qs + 32 * (c / 4)), 2 * (c % 4), 0, 0x03);
    }
    case HERD_GGML_TYPE_Q3_K: {
        const struct herd_block_q3_k *b = blk;
        const __m256i lo = field(kq_load256(b->qs + 32 * (c / 4)), 2 * (c % 4), 0, 0x03);
        return _mm256_or_si256(lo, field(kq_load256(b->hmask), c, 2, 0x04));
    }
    case HERD_GGML_TYPE_Q4_K: {
        const struct herd_block_q4_k *b = blk;
        return field(kq_load256(b->qs + 32 * (c / 2)), 4 * (c % 2), 0, 0x0f);
    }
    case HERD_GGML_TYPE_Q5_K: {
        const struct herd_block_q5_k *b = blk;
        const __m256i lo = field(kq_load256(b->qs + 32 * (c / 2)), 4 * (c % 2), 0, 0x0f);
        return _mm256_or_si256(lo, field(kq_load256(b->qh), c, 4, 0x10));
    }
    default: {
        const struct herd_block_q6_k *b = blk;
        const int h = c / 4, s = c % 4;
        const __m256i lo = field(kq_load256(b->ql + 64 * h + 32 * (s % 2)), 4 * (s / 2), 0, 0x0f);
        return _mm256_or_si256(lo, field(kq_load256(b->qh + 32 * h), 2 * s, 4, 0x30));
    }
    }
}

/* The int16 scales of values 32c..32c+31 (c < 8), from p.scale's 128-bit
 * half holding them broadcast to both (lo: groups 0-7 or the 8 sub-blocks,
 * hi: groups 8-15): groups 2c and 2c + 1 over the low and high 8 lanes, or
 * sub-block c over all 16. */
KQ_INLINE __m256i chunk_scales(const enum herd_ggml_type T, __m256i lo, __m256i hi, const int c) {
    if (kq_scales_per_sub(T)) return _mm256_shuffle_epi8(lo, _mm256_set1_epi16((short)(0x0100 + 0x0202 * c)));
    const int g = c % 4;
    const __m256i index =
        _mm256_set_m128i(_mm_set1_epi16((short)(0x0302 + 0x0404 * g)), _mm_set1_epi16((short)(0x0100 + 0x0404 * g)));
    return _mm256_shuffle_epi8(c < 4 ? lo : hi, index);
}

/* Super-block i's integer sums for NT tokens (kquants_x86.h): unpacked 32
 * values at a time, and every token takes those values. */
KQ_INLINE void kq_sb_sums(const enum herd_ggml_type T, const bool vnni, const int NT, const uint8_t *blk,
                          const struct herd_block_q8_k *x, size_t x_stride, size_t i, __m256i isum_out[4],
                          __m256i msum_out[4]) {
    (void)vnni;
    const struct kq_params p = kq_params_of(T, blk);
    const __m256i sc_lo = _mm256_permute2x128_si256(p.scale, p.scale, 0x00);
    const __m256i sc_hi = _mm256_permute2x128_si256(p.scale, p.scale, 0x11);
    __m256i acc[4];
    KQ_UNROLL for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_si256();
    KQ_UNROLL for (int c = 0; c < 8; c++) {
        const __m256i q = unpack(T, blk, c);
        const __m256i s = chunk_scales(T, sc_lo, sc_hi, c);
        KQ_UNROLL for (int t = 0; t < NT; t++) {
            const __m256i xq = kq_load256(x[(size_t)t * x_stride + i].qs + 32 * c);
            acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(_mm256_maddubs_epi16(q, xq), s));
        }
    }
    KQ_UNROLL for (int t = 0; t < NT; t++) {
        const __m256i m = kq_msum(&p, &x[(size_t)t * x_stride + i]);
        if (kq_has_min(T))
            isum_out[t] = acc[t], msum_out[t] = m;
        else
            isum_out[t] = _mm256_sub_epi32(acc[t], m);
    }
}

#define DEFINE_KDOT(NAME, TYPE)                                                                                        \
    float herd_dot_##NAME##_q8k_avx2(const void *w, const struct herd_block_q8_k *x, size_t n) {                       \
        float y;                                                                                                       \
        kq_dot_rows(TYPE, false, 1, w, x, 0, n / HERD_QK_K, &y, 1);                                                    \
        return y;                                                                                                      \
    }                                                                                                                  \
    void herd_dot_##NAME##_q8k_rows_avx2(const void *w, const struct herd_block_q8_k *x, size_t x_stride,              \
                                         size_t n_tok, size_t n, float *y, size_t y_stride) {                          \
        size_t t = 0;                                                                                                  \
        for (; t + 4 <= n_tok; t += 4)                                                                                 \
            kq_dot_rows(TYPE, false, 4, w, x + t * x_stride, x_stride, n / HERD_QK_K, y + t * y_stride, y_stride);     \
        if (t + 2 <= n_tok)                                                                                            \
            kq_dot_rows(TYPE, false, 2, w, x + t * x_stride, x_stride, n / HERD_QK_K, y + t * y_stride, y_stride),     \
                t += 2;                                                                                                \
        if (t < n_tok)                                                                                                 \
            kq_dot_rows(TYPE, false, 1, w, x + t * x_stride, x_stride, n / HERD_QK_K, y + t * y_stride, y_stride);     \
    }

DEFINE_KDOT(q2_k, HERD_GGML_TYPE_Q2_K)
DEFINE_KDOT(q3_k, HERD_GGML_TYPE_Q3_K)
DEFINE_KDOT(q4_k, HERD_GGML_TYPE_Q4_K)
DEFINE_KDOT(q5_k, HERD_GGML_TYPE_Q5_K)
DEFINE_KDOT(q6_k, HERD_GGML_TYPE_Q6_K)

/* ------------------------------------------------------------ legacy 32-value types */

/* Eight blocks per step: their integer sums side by side, then the scales. */
KQ_INLINE float legacy_dot(const enum herd_ggml_type T, const void *w, const struct herd_block_q8a *x, size_t n) {
    const size_t nb = n / HERD_QK8A, bb = kq_legacy_bytes(T);
    const uint8_t *wb = w;
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= nb; i += 8) {
        __m256i v[8];
        KQ_UNROLL for (int j = 0; j < 8; j++) v[j] = kq_legacy_block(T, wb + (i + (size_t)j) * bb, &x[i + (size_t)j]);
        const __m256i isum = _mm256_set_m128i(kq_sum4(v[4], v[5], v[6], v[7]), kq_sum4(v[0], v[1], v[2], v[3]));
        kq_legacy_add8(T, false, wb + i * bb, x + i, isum, &acc, &accm);
    }
    float s = 0.0f, sm = 0.0f;
    kq_legacy_tail(T, wb, x, i, nb, &s, &sm);
    return kq_hsum_ps256(_mm256_add_ps(acc, accm)) + (s + sm);
}

#define DEFINE_LEGACY(NAME, TYPE)                                                                                      \
    float herd_dot_##NAME##_q8a_avx2(const void *w, const struct herd_block_q8a *x, size_t n) {                        \
        return legacy_dot(TYPE, w, x, n);                                                                              \
    }

DEFINE_LEGACY(q4_1, HERD_GGML_TYPE_Q4_1)
DEFINE_LEGACY(q5_0, HERD_GGML_TYPE_Q5_0)
DEFINE_LEGACY(q5_1, HERD_GGML_TYPE_Q5_1)
DEFINE_LEGACY(iq4_nl, HERD_GGML_TYPE_IQ4_NL)
