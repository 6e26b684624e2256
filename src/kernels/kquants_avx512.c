/* AVX-512 twins of the kquants.h kernels (AVX-512 F/BW/VL/DQ, and VNNI for
 * the _vnni variants): 64 values per step. The K-quants multiply unsigned
 * weights by int8 activations with vpmaddubsw and the groups' scales with
 * vpdpwssd (VNNI) or vpmaddwd; the legacy types take two blocks per
 * register, vpdpbusd (VNNI) or vpmaddubsw, eight blocks per step. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernels/kquants.h"
#include "kernels/kquants_simd.h"
#include "kernels/kquants_x86.h"

KQ_INLINE __m512i load512(const void *p) { return _mm512_loadu_si512(p); }

/* 32 bytes in both halves of a register. */
KQ_INLINE __m512i bcast256(const void *p) { return _mm512_broadcast_i64x4(kq_load256(p)); }

/* The upper 256 bits shifted right by k bits (in 16-bit lanes), the lower
 * kept: one load of 32 bytes serves two 32-value runs of a bit plane. */
KQ_INLINE __m512i shift_upper(__m512i v, unsigned k) { return _mm512_mask_srli_epi16(v, 0xffff0000u, v, k); }

/* As kquants_avx2.c's field: bit `from` of every byte to bit `to`, masked. */
KQ_INLINE __m512i field(__m512i v, int from, int to, int mask) {
    v = from > to ? _mm512_srli_epi16(v, (unsigned)(from - to)) : _mm512_slli_epi16(v, (unsigned)(to - from));
    return _mm512_and_si512(v, _mm512_set1_epi8((char)mask));
}

/* ------------------------------------------------------------ K-quants */

/* Values 64k..64k+63 (k < 4) of a super-block as unsigned bytes (Q3_K as
 * q + 4, Q6_K as q + 32). */
KQ_INLINE __m512i unpack(const enum herd_ggml_type T, const void *blk, const int k) {
    switch (T) {
    case HERD_GGML_TYPE_Q2_K: {
        const struct herd_block_q2_k *b = blk;
        return field(shift_upper(bcast256(b->qs + 32 * (k / 2)), 2), 4 * (k % 2), 0, 0x03);
    }
    case HERD_GGML_TYPE_Q3_K: {
        const struct herd_block_q3_k *b = blk;
        const __m512i lo = field(shift_upper(bcast256(b->qs + 32 * (k / 2)), 2), 4 * (k % 2), 0, 0x03);
        return _mm512_or_si512(lo, field(shift_upper(bcast256(b->hmask), 1), 2 * k, 2, 0x04));
    }
    case HERD_GGML_TYPE_Q4_K: {
        const struct herd_block_q4_k *b = blk;
        return field(shift_upper(bcast256(b->qs + 32 * k), 4), 0, 0, 0x0f);
    }
    case HERD_GGML_TYPE_Q5_K: {
        const struct herd_block_q5_k *b = blk;
        const __m512i lo = field(shift_upper(bcast256(b->qs + 32 * k), 4), 0, 0, 0x0f);
        return _mm512_or_si512(lo, field(shift_upper(bcast256(b->qh), 1), 2 * k, 4, 0x10));
    }
    default: {
        const struct herd_block_q6_k *b = blk;
        const int h = k / 2, u = k % 2;
        const __m512i lo = field(load512(b->ql + 64 * h), 4 * u, 0, 0x0f);
        return _mm512_or_si512(lo, field(shift_upper(bcast256(b->qh + 32 * h), 2), 4 * u, 4, 0x30));
    }
    }
}

/* The int16 scales of values 64k..64k+63 (k < 4) from p.scale by vpermw:
 * groups 4k..4k+3 over 8 lanes each, or sub-blocks 2k and 2k + 1 over 16. */
KQ_INLINE __m512i chunk_scales(const enum herd_ggml_type T, __m512i scales, const int k) {
    const long long g0 = 0, g1 = 0x0001000100010001, g2 = 2 * g1, g3 = 3 * g1;
    const __m512i groups = _mm512_set_epi64(g3, g3, g2, g2, g1, g1, g0, g0);
    const __m512i subs = _mm512_set_epi64(g1, g1, g1, g1, g0, g0, g0, g0);
    const __m512i index = kq_scales_per_sub(T) ? _mm512_add_epi16(subs, _mm512_set1_epi16((short)(2 * k)))
                                               : _mm512_add_epi16(groups, _mm512_set1_epi16((short)(4 * k)));
    return _mm512_permutexvar_epi16(index, scales);
}

/* Super-block i's integer sums for NT tokens (kquants_x86.h), 64 values
 * per step; VNNI folds the scale multiply and the accumulation into one
 * vpdpwssd. */
KQ_INLINE void kq_sb_sums(const enum herd_ggml_type T, const bool vnni, const int NT, const uint8_t *blk,
                          const struct herd_block_q8_k *x, size_t x_stride, size_t i, __m256i isum_out[4],
                          __m256i msum_out[4]) {
    const struct kq_params p = kq_params_of(T, blk);
    const __m512i scales = _mm512_castsi256_si512(p.scale); /* vpermw reads the low 16 lanes only */
    __m512i acc[4];
    KQ_UNROLL for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_si512();
    KQ_UNROLL for (int k = 0; k < 4; k++) {
        const __m512i q = unpack(T, blk, k);
        const __m512i s = chunk_scales(T, scales, k);
        KQ_UNROLL for (int t = 0; t < NT; t++) {
            const __m512i prod = _mm512_maddubs_epi16(q, load512(x[(size_t)t * x_stride + i].qs + 64 * k));
            acc[t] = vnni ? _mm512_dpwssd_epi32(acc[t], prod, s) : _mm512_add_epi32(acc[t], _mm512_madd_epi16(prod, s));
        }
    }
    KQ_UNROLL for (int t = 0; t < NT; t++) {
        const __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(acc[t]), _mm512_extracti64x4_epi64(acc[t], 1));
        const __m256i m = kq_msum(&p, &x[(size_t)t * x_stride + i]);
        if (kq_has_min(T))
            isum_out[t] = s8, msum_out[t] = m;
        else
            isum_out[t] = _mm256_sub_epi32(s8, m);
    }
}

#define DEFINE_KDOT(NAME, TYPE, FAMILY, VNNI)                                                                          \
    float herd_dot_##NAME##_q8k_##FAMILY(const void *w, const struct herd_block_q8_k *x, size_t n) {                   \
        float y;                                                                                                       \
        kq_dot_rows(TYPE, VNNI, 1, w, x, 0, n / HERD_QK_K, &y, 1);                                                     \
        return y;                                                                                                      \
    }                                                                                                                  \
    void herd_dot_##NAME##_q8k_rows_##FAMILY(const void *w, const struct herd_block_q8_k *x, size_t x_stride,          \
                                             size_t n_tok, size_t n, float *y, size_t y_stride) {                      \
        const size_t nb = n / HERD_QK_K;                                                                               \
        size_t t = 0;                                                                                                  \
        for (; t + 4 <= n_tok; t += 4)                                                                                 \
            kq_dot_rows(TYPE, VNNI, 4, w, x + t * x_stride, x_stride, nb, y + t * y_stride, y_stride);                 \
        if (t + 2 <= n_tok)                                                                                            \
            kq_dot_rows(TYPE, VNNI, 2, w, x + t * x_stride, x_stride, nb, y + t * y_stride, y_stride), t += 2;         \
        if (t < n_tok) kq_dot_rows(TYPE, VNNI, 1, w, x + t * x_stride, x_stride, nb, y + t * y_stride, y_stride);      \
    }

DEFINE_KDOT(q2_k, HERD_GGML_TYPE_Q2_K, avx512, false)
DEFINE_KDOT(q3_k, HERD_GGML_TYPE_Q3_K, avx512, false)
DEFINE_KDOT(q4_k, HERD_GGML_TYPE_Q4_K, avx512, false)
DEFINE_KDOT(q5_k, HERD_GGML_TYPE_Q5_K, avx512, false)
DEFINE_KDOT(q6_k, HERD_GGML_TYPE_Q6_K, avx512, false)
DEFINE_KDOT(q2_k, HERD_GGML_TYPE_Q2_K, vnni, true)
DEFINE_KDOT(q3_k, HERD_GGML_TYPE_Q3_K, vnni, true)
DEFINE_KDOT(q4_k, HERD_GGML_TYPE_Q4_K, vnni, true)
DEFINE_KDOT(q5_k, HERD_GGML_TYPE_Q5_K, vnni, true)
DEFINE_KDOT(q6_k, HERD_GGML_TYPE_Q6_K, vnni, true)

/* ------------------------------------------------------------ legacy 32-value types */

/* Two blocks' 16 bytes of nibbles as their 64 values in element order. */
KQ_INLINE __m512i nibbles2(const uint8_t *q0, const uint8_t *q1) {
    __m512i v = _mm512_broadcast_i32x4(kq_load128(q0));
    v = _mm512_mask_broadcast_i32x4(v, 0xff00, kq_load128(q1));
    return _mm512_and_si512(_mm512_mask_srli_epi16(v, 0xff00ff00u, v, 4), _mm512_set1_epi8(0x0f));
}

/* Two blocks' fifth bits as one 64-bit mask, bit j for byte j of nibbles2. */
KQ_INLINE __mmask64 fifth_bits2(const uint8_t *qh0, const uint8_t *qh1) {
    uint32_t h0, h1;
    memcpy(&h0, qh0, sizeof h0);
    memcpy(&h1, qh1, sizeof h1);
    return _cvtu64_mask64((uint64_t)h1 << 32 | h0);
}

/* Blocks i and i + 1's integer dots without the offset terms, in 16 int32
 * lanes (8 each) whose sums are exact. VNNI: vpdpbusd, IQ4_NL's grid stored
 * + 128 (unsigned; kq_legacy_offset8 takes the 128 back); without it
 * vpmaddubsw, IQ4_NL by the sign trick. */
KQ_INLINE __m512i legacy_pair(const enum herd_ggml_type T, const bool VNNI, const uint8_t *w,
                              const struct herd_block_q8a *x, size_t i) {
    const size_t bb = kq_legacy_bytes(T);
    const uint8_t *b0 = w + i * bb, *b1 = b0 + bb;
    const __m512i xq = _mm512_inserti64x4(_mm512_castsi256_si512(kq_load256(x[i].qs)), kq_load256(x[i + 1].qs), 1);
    __m512i q;
    switch (T) {
    case HERD_GGML_TYPE_Q4_1:
        q = nibbles2(((const struct herd_block_q4_1 *)b0)->qs, ((const struct herd_block_q4_1 *)b1)->qs);
        break;
    case HERD_GGML_TYPE_Q5_0: {
        const struct herd_block_q5_0 *p0 = (const void *)b0, *p1 = (const void *)b1;
        q = nibbles2(p0->qs, p1->qs);
        q = _mm512_mask_add_epi8(q, fifth_bits2(p0->qh, p1->qh), q, _mm512_set1_epi8(0x10));
        break;
    }
    case HERD_GGML_TYPE_Q5_1: {
        const struct herd_block_q5_1 *p0 = (const void *)b0, *p1 = (const void *)b1;
        q = nibbles2(p0->qs, p1->qs);
        q = _mm512_mask_add_epi8(q, fifth_bits2(p0->qh, p1->qh), q, _mm512_set1_epi8(0x10));
        break;
    }
    default: {
        const __m512i grid = _mm512_broadcast_i32x4(kq_load128(herd_iq4nl_values));
        q = _mm512_shuffle_epi8(
            grid, nibbles2(((const struct herd_block_iq4_nl *)b0)->qs, ((const struct herd_block_iq4_nl *)b1)->qs));
        if (VNNI) {
            q = _mm512_xor_si512(q, _mm512_set1_epi8((char)0x80));
        } else {
            const __m512i sx = _mm512_mask_sub_epi8(xq, _mm512_movepi8_mask(q), _mm512_setzero_si512(), xq);
            return _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(q), sx), _mm512_set1_epi16(1));
        }
        break;
    }
    }
    if (VNNI) return _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, xq);
    return _mm512_madd_epi16(_mm512_maddubs_epi16(q, xq), _mm512_set1_epi16(1));
}

/* Four pairs of blocks' lanes summed per block: [block 0, ..., block 7].
 * Two rounds of adding neighbouring lanes (vpermt2d gathers the even and the
 * odd ones of two registers), then the last pair, then every other lane. */
KQ_INLINE __m256i hsum8_pairs(__m512i v0, __m512i v1, __m512i v2, __m512i v3) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512i a = _mm512_add_epi32(_mm512_permutex2var_epi32(v0, even, v1), _mm512_permutex2var_epi32(v0, odd, v1));
    const __m512i b = _mm512_add_epi32(_mm512_permutex2var_epi32(v2, even, v3), _mm512_permutex2var_epi32(v2, odd, v3));
    __m512i c = _mm512_add_epi32(_mm512_permutex2var_epi32(a, even, b), _mm512_permutex2var_epi32(a, odd, b));
    c = _mm512_add_epi32(c, _mm512_shuffle_epi32(c, _MM_PERM_CDAB));
    return _mm512_cvtepi64_epi32(c);
}

KQ_INLINE float legacy_dot(const enum herd_ggml_type T, const bool VNNI, const void *w, const struct herd_block_q8a *x,
                           size_t n) {
    const size_t nb = n / HERD_QK8A, bb = kq_legacy_bytes(T);
    const uint8_t *wb = w;
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= nb; i += 8) {
        const __m256i isum = hsum8_pairs(legacy_pair(T, VNNI, wb, x, i), legacy_pair(T, VNNI, wb, x, i + 2),
                                         legacy_pair(T, VNNI, wb, x, i + 4), legacy_pair(T, VNNI, wb, x, i + 6));
        kq_legacy_add8(T, VNNI, wb + i * bb, x + i, isum, &acc, &accm);
    }
    float s = 0.0f, sm = 0.0f;
    kq_legacy_tail(T, wb, x, i, nb, &s, &sm);
    return kq_hsum_ps256(_mm256_add_ps(acc, accm)) + (s + sm);
}

#define DEFINE_LEGACY(NAME, TYPE, FAMILY, VNNI)                                                                        \
    float herd_dot_##NAME##_q8a_##FAMILY(const void *w, const struct herd_block_q8a *x, size_t n) {                    \
        return legacy_dot(TYPE, VNNI, w, x, n);                                                                        \
    }

DEFINE_LEGACY(q4_1, HERD_GGML_TYPE_Q4_1, avx512, false)
DEFINE_LEGACY(q5_0, HERD_GGML_TYPE_Q5_0, avx512, false)
DEFINE_LEGACY(q5_1, HERD_GGML_TYPE_Q5_1, avx512, false)
DEFINE_LEGACY(iq4_nl, HERD_GGML_TYPE_IQ4_NL, avx512, false)
DEFINE_LEGACY(q4_1, HERD_GGML_TYPE_Q4_1, vnni, true)
DEFINE_LEGACY(q5_0, HERD_GGML_TYPE_Q5_0, vnni, true)
DEFINE_LEGACY(q5_1, HERD_GGML_TYPE_Q5_1, vnni, true)
DEFINE_LEGACY(iq4_nl, HERD_GGML_TYPE_IQ4_NL, vnni, true)
