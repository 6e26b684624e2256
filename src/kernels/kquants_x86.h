/* Pieces shared by the AVX2 and AVX-512 twins of the K-quant and legacy
 * 32-value kernels (kquants_avx2.c, kquants_avx512.c): a super-block's
 * integer scales and mins, the K-quant row driver (each family supplies the
 * integer sums of a super-block, kq_sb_sums), and the legacy kernels'
 * 256-bit block dot and float steps. Needs AVX2, FMA and F16C: include it
 * only from files compiled with them.
 *
 * The arithmetic contract of kquants.h, in integers: unpacked weights are
 * unsigned bytes below 64 (the signed types carry their offset: Q3_K's q + 4,
 * Q6_K's q + 32, Q5_0's q + 16), so vpmaddubsw's pair sums (at most
 * 2 x 63 x 128 = 16128) never saturate; the offsets and mins come back from
 * the activations' sums, exactly. */
#ifndef HERD_KERNELS_KQUANTS_X86_H
#define HERD_KERNELS_KQUANTS_X86_H

#include <immintrin.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/kquants.h"
#include "kernels/quant.h"

#define KQ_INLINE static inline __attribute__((always_inline))
/* Loops with constant trip counts, fully unrolled so that the unpacked
 * weights and the per-token sums live in registers. */
#define KQ_UNROLL _Pragma("GCC unroll 8")

KQ_INLINE float kq_fp16(uint16_t h) { return _cvtsh_ss(h); }

KQ_INLINE __m256i kq_load256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
KQ_INLINE __m128i kq_load128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }

/* ------------------------------------------------------------ K-quant super-blocks */

KQ_INLINE size_t kq_block_bytes(enum herd_ggml_type t) {
    switch (t) {
    case HERD_GGML_TYPE_Q2_K: return sizeof(struct herd_block_q2_k);
    case HERD_GGML_TYPE_Q3_K: return sizeof(struct herd_block_q3_k);
    case HERD_GGML_TYPE_Q4_K: return sizeof(struct herd_block_q4_k);
    case HERD_GGML_TYPE_Q5_K: return sizeof(struct herd_block_q5_k);
    default: return sizeof(struct herd_block_q6_k);
    }
}

/* Whether the type has mins (value = d x scale x q - dmin x min); the others
 * are signed, their offset folded into the integer sum. */
KQ_INLINE bool kq_has_min(enum herd_ggml_type t) {
    return t == HERD_GGML_TYPE_Q2_K || t == HERD_GGML_TYPE_Q4_K || t == HERD_GGML_TYPE_Q5_K;
}

/* Whether a type's scales are per 32-value sub-block (Q4_K, Q5_K: 8 of
 * them) rather than per 16-value group (the others: 16). */
KQ_INLINE bool kq_scales_per_sub(enum herd_ggml_type t) { return t == HERD_GGML_TYPE_Q4_K || t == HERD_GGML_TYPE_Q5_K; }

/* A super-block's integers besides its quants, as int16: scale, one per
 * group (or per sub-block, in the low 8 lanes, for kq_scales_per_sub
 * types), and minus, what each group's activation sum (bsums[g]) is
 * multiplied by and taken off: the min for Q2_K, Q4_K and Q5_K (kept apart,
 * scaled by dmin), offset x scale for Q3_K and Q6_K (taken off the integer
 * sum). */
struct kq_params {
    __m256i scale, minus;
};

/* Q4_K and Q5_K's 8 6-bit scales and 8 mins (herd_kquant_scale_min) as
 * [scale 0..7, min 0..7]: bytes 0-3 and 4-7 give scales and mins 0-3 in
 * their low 6 bits and the high 2 bits of 4-7; bytes 8-11 the low 4 bits of
 * scales (low nibbles) and mins (high nibbles) 4-7. s + 16 is still inside
 * the block (the quants follow the scales). */
KQ_INLINE __m128i kq_scales_mins_k(const uint8_t *s) {
    const __m128i v = kq_load128(s);
    __m128i lo = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
    lo = _mm_and_si128(_mm_srlv_epi32(lo, _mm_setr_epi32(0, 0, 0, 4)),
                       _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    __m128i hi = _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
    hi = _mm_and_si128(_mm_srli_epi32(hi, 2), _mm_set1_epi8(0x30)); /* bits 6-7 to 4-5 */
    return _mm_or_si128(lo, hi);
}

/* Q3_K's 16 scales (herd_q3_k_scales) minus their bias of 32, as int8:
 * scale j's low 4 bits are nibble j / 8 of byte j % 8, its high 2 bits
 * bits 2 (j / 4) of byte 8 + j % 4; four scales per 32-bit lane. Two loads:
 * the 12 bytes end 2 bytes before the block does. */
KQ_INLINE __m128i kq_q3_k_scales(const uint8_t *s) {
    uint32_t a2;
    memcpy(&a2, s + 8, sizeof a2);
    const __m128i a01 = _mm_loadl_epi64((const __m128i *)s);
    __m128i lo = _mm_shuffle_epi32(a01, 0x44); /* a0 a1 a0 a1 */
    lo = _mm_and_si128(_mm_srlv_epi32(lo, _mm_setr_epi32(0, 0, 4, 4)), _mm_set1_epi8(0x0f));
    __m128i hi = _mm_srlv_epi32(_mm_set1_epi32((int)a2), _mm_setr_epi32(0, 2, 4, 6));
    hi = _mm_slli_epi32(_mm_and_si128(hi, _mm_set1_epi8(0x03)), 4);
    return _mm_sub_epi8(_mm_or_si128(lo, hi), _mm_set1_epi8(32));
}

KQ_INLINE struct kq_params kq_params_of(const enum herd_ggml_type T, const void *blk) {
    struct kq_params p;
    switch (T) {
    case HERD_GGML_TYPE_Q2_K: {
        const struct herd_block_q2_k *b = blk;
        const __m128i v = kq_load128(b->scales), low = _mm_set1_epi8(0x0f);
        p.scale = _mm256_cvtepu8_epi16(_mm_and_si128(v, low));
        p.minus = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(v, 4), low));
        break;
    }
    case HERD_GGML_TYPE_Q3_K: {
        const struct herd_block_q3_k *b = blk;
        p.scale = _mm256_cvtepi8_epi16(kq_q3_k_scales(b->scales));
        p.minus = _mm256_slli_epi16(p.scale, 2); /* q + 4 unpacked: 4 x scale per activation */
        break;
    }
    case HERD_GGML_TYPE_Q4_K:
    case HERD_GGML_TYPE_Q5_K: { /* scales and mins at the same place in both */
        const __m128i v = kq_scales_mins_k(((const struct herd_block_q4_k *)blk)->scales);
        p.scale = _mm256_cvtepu8_epi16(v);
        p.minus = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(v, v)); /* each min for its two groups */
        break;
    }
    default: {
        const struct herd_block_q6_k *b = blk;
        p.scale = _mm256_cvtepi8_epi16(kq_load128(b->scales));
        p.minus = _mm256_slli_epi16(p.scale, 5); /* q + 32 unpacked */
        break;
    }
    }
    return p;
}

/* The activation side of the offsets and mins: minus times the bsums, in 8
 * int32 lanes (|lane| <= 2 x 2032 x 4096, Q6_K's largest: no overflow). */
KQ_INLINE __m256i kq_msum(const struct kq_params *p, const struct herd_block_q8_k *xb) {
    return _mm256_madd_epi16(kq_load256(xb->bsums), p->minus);
}

/* Four vectors' lanes summed: [sum v0, sum v1, sum v2, sum v3]. Unpacking
 * pairs of registers and adding, twice, then the halves: no horizontal
 * instructions. */
KQ_INLINE __m128i kq_sum4(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
    const __m256i a = _mm256_add_epi32(_mm256_unpacklo_epi32(v0, v1), _mm256_unpackhi_epi32(v0, v1));
    const __m256i b = _mm256_add_epi32(_mm256_unpacklo_epi32(v2, v3), _mm256_unpackhi_epi32(v2, v3));
    const __m256i c = _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
    return _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
}

/* A K block's fp16 d, and dmin above it for the types with mins (the 16
 * bits after Q3_K's and Q6_K's d are past the block). */
KQ_INLINE int kq_d_bits(const enum herd_ggml_type T, const void *blk) {
    switch (T) {
    case HERD_GGML_TYPE_Q2_K: {
        uint32_t h;
        memcpy(&h, &((const struct herd_block_q2_k *)blk)->d, sizeof h);
        return (int)h;
    }
    case HERD_GGML_TYPE_Q3_K: return ((const struct herd_block_q3_k *)blk)->d;
    case HERD_GGML_TYPE_Q4_K:
    case HERD_GGML_TYPE_Q5_K: {
        uint32_t h;
        memcpy(&h, blk, sizeof h); /* d, dmin: the first fields of both */
        return (int)h;
    }
    default: return ((const struct herd_block_q6_k *)blk)->d;
    }
}

/* The float factors of four (token, super-block) pairs' sums, as laid out
 * by kq_terms4: [d_j dx_j | -(dmin_j dx_j)], from dd = [d_j | dmin_j] and
 * the activations' dx_j. */
KQ_INLINE __m256 kq_factors(__m256 dd, __m128 dx) {
    const __m256 f = _mm256_mul_ps(dd, _mm256_set_m128(dx, dx));
    return _mm256_xor_ps(f, _mm256_setr_ps(0.0f, 0.0f, 0.0f, 0.0f, -0.0f, -0.0f, -0.0f, -0.0f));
}

/* [a, b, c, d] from four floats in registers (no trip through memory). */
KQ_INLINE __m128 kq_set4(__m128 a, __m128 b, __m128 c, __m128 d) {
    return _mm_movelh_ps(_mm_unpacklo_ps(a, b), _mm_unpacklo_ps(c, d));
}

/* dd for super-blocks i..i+k-1 (k <= 4) of one row, zero past k:
 * [d_0..d_3 | dmin_0..dmin_3]. */
KQ_INLINE __m256 kq_dd_blocks(const enum herd_ggml_type T, const uint8_t *w, size_t k) {
    const size_t bb = kq_block_bytes(T);
    __m128i h[4];
    KQ_UNROLL for (size_t j = 0; j < 4; j++) h[j] = _mm_cvtsi32_si128(j < k ? kq_d_bits(T, w + j * bb) : 0);
    const __m128i v = _mm_unpacklo_epi64(_mm_unpacklo_epi32(h[0], h[1]), _mm_unpacklo_epi32(h[2], h[3]));
    return _mm256_permutevar8x32_ps(_mm256_cvtph_ps(v), _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
}

/* dd of one super-block for four tokens: [d d d d | dmin dmin dmin dmin]. */
KQ_INLINE __m256 kq_dd_tokens(const enum herd_ggml_type T, const uint8_t *blk) {
    const __m256 f = _mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128(kq_d_bits(T, blk))));
    return _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
}

/* The activation scales of up to 4 Q8_K blocks `stride` blocks apart (zero
 * past k). */
KQ_INLINE __m128 kq_dx4(const struct herd_block_q8_k *x, size_t stride, size_t k) {
    __m128 d[4];
    KQ_UNROLL for (size_t j = 0; j < 4; j++) d[j] = j < k ? _mm_load_ss(&x[j * stride].d) : _mm_setzero_ps();
    return kq_set4(d[0], d[1], d[2], d[3]);
}

/* Accumulation of a token's row: lane j of the I half (and of the M half)
 * sums the terms of the super-blocks j mod 4, one fused multiply-add per
 * term; the result is ((I0 + I1) + (I2 + I3)) + ((M0 + M1) + (M2 + M3)).
 * The multi-token kernels keep the same lanes per token in four registers
 * (one per j, tokens across) and add them in this order: the same bits. */
KQ_INLINE float kq_finish(__m256 acc) {
    __m128 i = _mm256_castps256_ps128(acc), m = _mm256_extractf128_ps(acc, 1);
    i = _mm_add_ps(i, _mm_shuffle_ps(i, i, _MM_SHUFFLE(2, 3, 0, 1))); /* l0 + l1, l2 + l3 */
    m = _mm_add_ps(m, _mm_shuffle_ps(m, m, _MM_SHUFFLE(2, 3, 0, 1)));
    i = _mm_add_ss(i, _mm_movehl_ps(i, i));
    m = _mm_add_ss(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_add_ss(i, m));
}

/* The multi-token twin of kq_finish: acc[j] holds lane j of four tokens. */
KQ_INLINE __m128 kq_finish_tokens(const __m256 acc[4]) {
    const __m256 s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

/* Super-block i (at blk) for tokens t < NT (activation rows x_stride blocks
 * apart): isum[t], 8 int32 lanes summing to the exact integer I (scale x
 * unpacked quant x activation, less the offsets for the signed types), and
 * for the types with mins msum[t] (kq_msum), summing to M. Defined by each
 * family's file (vnni: whether to use VNNI, where the family has it). */
KQ_INLINE void kq_sb_sums(const enum herd_ggml_type T, const bool vnni, const int NT, const uint8_t *blk,
                          const struct herd_block_q8_k *x, size_t x_stride, size_t i, __m256i isum[4], __m256i msum[4]);

/* Four (token, super-block) pairs' sums as floats: [I0..I3 | M0..M3]. */
KQ_INLINE __m256 kq_terms4(const enum herd_ggml_type T, const __m256i isum[4], const __m256i msum[4]) {
    const __m128i i4 = kq_sum4(isum[0], isum[1], isum[2], isum[3]);
    const __m128i m4 = kq_has_min(T) ? kq_sum4(msum[0], msum[1], msum[2], msum[3]) : _mm_setzero_si128();
    return _mm256_cvtepi32_ps(_mm256_set_m128i(m4, i4));
}

/* A row's dot products with NT (1, 2 or 4) tokens, the same for both
 * families. One token: super-blocks four at a time, their sums side by side
 * in the lanes of one accumulator. Two or four: one super-block at a time,
 * the tokens side by side, into accumulator i mod 4. Either way each
 * (token, super-block) term meets the same fused multiply-add in the same
 * lane, and kq_finish's additions: a token's result does not depend on NT
 * (zero padding adds +0 to an accumulator that starts at +0 and so is never
 * -0: that changes nothing). */
KQ_INLINE void kq_dot_rows(const enum herd_ggml_type T, const bool vnni, const int NT, const uint8_t *w,
                           const struct herd_block_q8_k *x, size_t x_stride, size_t nb, float *y, size_t y_stride) {
    const size_t bb = kq_block_bytes(T);
    const __m256i zero = _mm256_setzero_si256();
    if (NT == 1) {
        __m256 acc = _mm256_setzero_ps();
        for (size_t i = 0; i < nb; i += 4) {
            const size_t k = nb - i < 4 ? nb - i : 4;
            __m256i isum[4], msum[4];
            KQ_UNROLL for (size_t j = 0; j < 4; j++) {
                isum[j] = msum[j] = zero;
                if (j < k) kq_sb_sums(T, vnni, 1, w + (i + j) * bb, x, 0, i + j, &isum[j], &msum[j]);
            }
            const __m256 f = kq_factors(kq_dd_blocks(T, w + i * bb, k), kq_dx4(x + i, 1, k));
            acc = _mm256_fmadd_ps(kq_terms4(T, isum, msum), f, acc);
        }
        y[0] = kq_finish(acc);
        return;
    }
    __m256 acc[4];
    KQ_UNROLL for (int j = 0; j < 4; j++) acc[j] = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *blk = w + i * bb;
        __m256i isum[4] = {zero, zero, zero, zero}, msum[4] = {zero, zero, zero, zero};
        kq_sb_sums(T, vnni, NT, blk, x, x_stride, i, isum, msum);
        const __m256 f = kq_factors(kq_dd_tokens(T, blk), kq_dx4(x + i, x_stride, (size_t)NT));
        acc[i % 4] = _mm256_fmadd_ps(kq_terms4(T, isum, msum), f, acc[i % 4]);
    }
    float r[4];
    _mm_storeu_ps(r, kq_finish_tokens(acc));
    KQ_UNROLL for (int t = 0; t < NT; t++) y[(size_t)t * y_stride] = r[t];
}

/* ------------------------------------------------------------ legacy 32-value blocks, 256 bits */

/* 16 bytes of nibbles as the 32 values in element order (low nibbles, then high). */
KQ_INLINE __m256i kq_nibbles(const uint8_t *qs) {
    const __m128i raw = kq_load128(qs), low = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), low), _mm_and_si128(raw, low));
}

/* 16 in byte j where bit j of the little-endian qh is set: each byte picks
 * its qh byte (j / 8) and tests its bit (j % 8). */
KQ_INLINE __m256i kq_fifth_bits(const uint8_t *qh) {
    uint32_t h;
    memcpy(&h, qh, sizeof h);
    const __m256i pick = _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i v = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)h), pick), bit);
    return _mm256_and_si256(_mm256_cmpeq_epi8(v, bit), _mm256_set1_epi8(0x10));
}

KQ_INLINE size_t kq_legacy_bytes(enum herd_ggml_type t) {
    switch (t) {
    case HERD_GGML_TYPE_Q4_1: return sizeof(struct herd_block_q4_1);
    case HERD_GGML_TYPE_Q5_0: return sizeof(struct herd_block_q5_0);
    case HERD_GGML_TYPE_Q5_1: return sizeof(struct herd_block_q5_1);
    default: return sizeof(struct herd_block_iq4_nl);
    }
}

/* Whether the type has an offset m (value = q x d + m). */
KQ_INLINE bool kq_legacy_has_m(enum herd_ggml_type t) { return t == HERD_GGML_TYPE_Q4_1 || t == HERD_GGML_TYPE_Q5_1; }

/* One block's integer dot with its activations, without the offset terms,
 * in 8 int32 lanes whose sum is exact. IQ4_NL's signed grid values go
 * through the sign trick (|w| times x with w's sign), the others are
 * unsigned below 32 (Q5_0 as q + 16). */
KQ_INLINE __m256i kq_legacy_block(const enum herd_ggml_type T, const void *blk, const struct herd_block_q8a *xb) {
    const __m256i x = kq_load256(xb->qs), ones = _mm256_set1_epi16(1);
    switch (T) {
    case HERD_GGML_TYPE_Q4_1: {
        const struct herd_block_q4_1 *b = blk;
        return _mm256_madd_epi16(_mm256_maddubs_epi16(kq_nibbles(b->qs), x), ones);
    }
    case HERD_GGML_TYPE_Q5_0: {
        const struct herd_block_q5_0 *b = blk;
        const __m256i w = _mm256_or_si256(kq_nibbles(b->qs), kq_fifth_bits(b->qh));
        return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones);
    }
    case HERD_GGML_TYPE_Q5_1: {
        const struct herd_block_q5_1 *b = blk;
        const __m256i w = _mm256_or_si256(kq_nibbles(b->qs), kq_fifth_bits(b->qh));
        return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones);
    }
    default: {
        const struct herd_block_iq4_nl *b = blk;
        const __m256i grid = _mm256_broadcastsi128_si256(kq_load128(herd_iq4nl_values));
        const __m256i w = _mm256_shuffle_epi8(grid, kq_nibbles(b->qs));
        return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)), ones);
    }
    }
}

/* The offset term of blocks whose activations carry neg128 = -128 x their
 * sum: Q5_0's -16 x sum (its quants unpacked as q + 16); IQ4_NL's -128 x
 * sum where its grid is stored + 128 (grid_u8: the VNNI kernel); else 0.
 * Exact: neg128 is a multiple of 128. */
KQ_INLINE __m256i kq_legacy_offset8(const enum herd_ggml_type T, bool grid_u8, __m256i neg128) {
    if (T == HERD_GGML_TYPE_Q5_0) return _mm256_srai_epi32(neg128, 3);
    if (T == HERD_GGML_TYPE_IQ4_NL && grid_u8) return neg128;
    return _mm256_setzero_si256();
}

KQ_INLINE int32_t kq_legacy_offset(const enum herd_ggml_type T, int32_t neg128) {
    return T == HERD_GGML_TYPE_Q5_0 ? neg128 >> 3 : 0;
}

KQ_INLINE int32_t kq_hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1)));
}

/* Eight activation blocks' d and neg128 (their first 8 bytes), in block
 * order: loads and two vshufps instead of sixteen scalar inserts. */
KQ_INLINE void kq_q8a_info8(const struct herd_block_q8a *x, __m256 *dx, __m256i *neg128) {
    __m128i p[4];
    KQ_UNROLL for (int j = 0; j < 4; j++) p[j] = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)&x[2 * j]),
                                                                    _mm_loadl_epi64((const __m128i *)&x[2 * j + 1]));
    const __m256 a = _mm256_castsi256_ps(_mm256_set_m128i(p[2], p[0])); /* d n of blocks 0 1 | 4 5 */
    const __m256 b = _mm256_castsi256_ps(_mm256_set_m128i(p[3], p[1])); /* 2 3 | 6 7 */
    *dx = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    *neg128 = _mm256_castps_si256(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Eight weight blocks' fp16 d, and the fp16 after it (m, where the type has
 * it), as floats in block order. The first 4 bytes of each block: the
 * conversion takes them in the order 0 1 4 5 | 2 3 6 7 so that vshufps
 * puts the d's (and m's) back in block order. */
KQ_INLINE void kq_legacy_scales8(const uint8_t *w, size_t bb, __m256 *d, __m256 *m) {
    __m128i p[4]; /* blocks 0 1, 4 5, 2 3, 6 7 */
    KQ_UNROLL for (int j = 0; j < 4; j++) {
        const size_t b = (size_t)(j % 2 * 4 + j / 2 * 2);
        p[j] = _mm_unpacklo_epi32(_mm_loadu_si32(w + b * bb), _mm_loadu_si32(w + (b + 1) * bb));
    }
    const __m256 f0 = _mm256_cvtph_ps(_mm_unpacklo_epi64(p[0], p[1]));
    const __m256 f1 = _mm256_cvtph_ps(_mm_unpacklo_epi64(p[2], p[3]));
    *d = _mm256_shuffle_ps(f0, f1, _MM_SHUFFLE(2, 0, 2, 0));
    *m = _mm256_shuffle_ps(f0, f1, _MM_SHUFFLE(3, 1, 3, 1));
}

/* Eight blocks' exact integer sums isum (offsets not yet in) into the
 * accumulators: acc += d_w d_x x I, accm += m_w d_x x (sum of x) for the
 * types with an offset m; each one fused multiply-add per block. */
KQ_INLINE void kq_legacy_add8(const enum herd_ggml_type T, bool grid_u8, const uint8_t *w,
                              const struct herd_block_q8a *x, __m256i isum, __m256 *acc, __m256 *accm) {
    __m256 dx, d, m;
    __m256i neg128;
    kq_q8a_info8(x, &dx, &neg128);
    kq_legacy_scales8(w, kq_legacy_bytes(T), &d, &m);
    isum = _mm256_add_epi32(isum, kq_legacy_offset8(T, grid_u8, neg128));
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d, dx), *acc);
    if (kq_legacy_has_m(T)) { /* (neg128 >> 7) x -(m d_x) = sum x m d_x */
        const __m256 mdx = _mm256_xor_ps(_mm256_mul_ps(m, dx), _mm256_set1_ps(-0.0f));
        *accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32(neg128, 7)), mdx, *accm);
    }
}

/* Blocks [i, nb) of a legacy row one at a time (a row's last few, fewer
 * than a group), into the scalar sums *s and *sm. */
KQ_INLINE void kq_legacy_tail(const enum herd_ggml_type T, const uint8_t *w, const struct herd_block_q8a *x, size_t i,
                              size_t nb, float *s, float *sm) {
    const size_t bb = kq_legacy_bytes(T);
    __m128 a = _mm_set_ss(*s), am = _mm_set_ss(*sm);
    for (; i < nb; i++) {
        const uint8_t *blk = w + i * bb;
        uint16_t h[2];
        memcpy(h, blk, sizeof h);
        const int32_t isum = kq_hsum_epi32(kq_legacy_block(T, blk, &x[i])) + kq_legacy_offset(T, x[i].neg128_sum);
        a = _mm_fmadd_ss(_mm_set_ss((float)isum), _mm_set_ss(kq_fp16(h[0]) * x[i].d), a);
        if (kq_legacy_has_m(T))
            am = _mm_fmadd_ss(_mm_set_ss((float)(x[i].neg128_sum >> 7)), _mm_set_ss(-(kq_fp16(h[1]) * x[i].d)), am);
    }
    *s = _mm_cvtss_f32(a), *sm = _mm_cvtss_f32(am);
}

KQ_INLINE float kq_hsum_ps256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

#endif
