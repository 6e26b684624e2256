/* The tiled kernels of kpack.h on AVX-512 VNNI: one 16-row group times a
 * tile of 1, 2, 4, 8 or 16 tokens. A block's weights are unpacked once into
 * registers of unsigned bytes (4 columns x 16 rows each) and serve every
 * token of the tile with one vpdpbusd per register against a broadcast of
 * 4 activation bytes. Each tile is compiled once per type (the type is a
 * constant in the inlined body), so the per-type choices fold away.
 *
 * The K types: per sub-block a fresh vpdpbusd chain, multiplied by the
 * rows' scales (vpmulld) into the super-block's int32 sum; the offset
 * (Q6_K, Q3_K) and min (Q2_K, Q4_K, Q5_K) terms are vpdpwssd of the rows'
 * scales or mins, as 16-bit pairs, with pairs of the activation block's
 * bsums. One float step per super-block, the reference's: the result is
 * herd_kpack_gemm_ref's (and the row-by-row reference dot's) exactly. */
#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/kpack.h"
#include "kernels/kquants.h"
#include "kernels/quant.h"

/* Loops below have constant trip counts and are fully unrolled so that the
 * weight registers and the tile's accumulators stay in registers. */
#define UNROLL _Pragma("GCC unroll 16")
#define INLINE static inline __attribute__((always_inline))

/* 4 activation bytes (or two int16 bsums) in every 32-bit lane, loaded
 * straight from memory: a broadcast operand, not a trip through a general
 * register. */
INLINE __m512i bcast4(const void *p) { return _mm512_broadcastd_epi32(_mm_loadu_si32(p)); }

INLINE __mmask64 mask_at(const uint8_t *p) {
    uint64_t m;
    memcpy(&m, p, 8);
    return _cvtu64_mask64(m);
}

INLINE __m512 fp16x16(const uint8_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }

/* 32 columns of nibbles (4 raw vectors at v) -> W[0..7]; where plane is
 * not NULL, its 8 masks add 16 (the fifth bit). */
INLINE void unpack_nibbles(const uint8_t *v, const uint8_t *plane, __m512i *W) {
    const __m512i low = _mm512_set1_epi8(0x0f);
    UNROLL for (int j = 0; j < 4; j++) {
        const __m512i raw = _mm512_loadu_si512((const void *)(v + 64 * j));
        W[j] = _mm512_and_si512(raw, low);
        W[j + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low);
    }
    if (plane) {
        const __m512i b4 = _mm512_set1_epi8(16);
        UNROLL for (int k = 0; k < 8; k++) W[k] = _mm512_mask_add_epi8(W[k], mask_at(plane + 8 * k), W[k], b4);
    }
}

/* 16 columns of crumbs (1 raw vector at v) -> W[0..3]; where plane is not
 * NULL, its 4 masks add 4 (Q3_K's third bit). */
INLINE void unpack_crumbs(const uint8_t *v, const uint8_t *plane, __m512i *W) {
    const __m512i three = _mm512_set1_epi8(3);
    const __m512i raw = _mm512_loadu_si512((const void *)v);
    W[0] = _mm512_and_si512(raw, three);
    W[1] = _mm512_and_si512(_mm512_srli_epi16(raw, 2), three);
    W[2] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), three);
    W[3] = _mm512_and_si512(_mm512_srli_epi16(raw, 6), three);
    if (plane) {
        const __m512i b2 = _mm512_set1_epi8(4);
        UNROLL for (int k = 0; k < 4; k++) W[k] = _mm512_mask_add_epi8(W[k], mask_at(plane + 8 * k), W[k], b2);
    }
}

/* Q6_K's bits 4-5: 2 raw vectors of crumbs at v, crumb m of vector h going
 * to W[4h + m] (a shift brings it to bits 4-5 of its byte, one
 * ternary-logic op masks it and ors it in). */
INLINE void add_high_crumbs(const uint8_t *v, __m512i *W) {
    const __m512i m30 = _mm512_set1_epi8(0x30);
    UNROLL for (int h = 0; h < 2; h++) {
        const __m512i raw = _mm512_loadu_si512((const void *)(v + 64 * h));
        /* A | (B & C): truth table 0xF0 | (0xCC & 0xAA) */
        W[4 * h + 0] = _mm512_ternarylogic_epi32(W[4 * h + 0], _mm512_slli_epi16(raw, 4), m30, 0xF8);
        W[4 * h + 1] = _mm512_ternarylogic_epi32(W[4 * h + 1], _mm512_slli_epi16(raw, 2), m30, 0xF8);
        W[4 * h + 2] = _mm512_ternarylogic_epi32(W[4 * h + 2], raw, m30, 0xF8);
        W[4 * h + 3] = _mm512_ternarylogic_epi32(W[4 * h + 3], _mm512_srli_epi16(raw, 2), m30, 0xF8);
    }
}

/* kpack.h's chunk bytes as a constant once T is (herd_kpack_chunk_bytes
 * looks the layout up at run time). */
INLINE size_t chunk_of(const enum herd_ggml_type T) {
    switch (T) {
    case HERD_GGML_TYPE_Q4_K: return HERD_KPACK_Q4_K_CHUNK;
    case HERD_GGML_TYPE_Q5_K: return HERD_KPACK_Q5_K_CHUNK;
    case HERD_GGML_TYPE_Q6_K: return HERD_KPACK_Q6_K_CHUNK;
    case HERD_GGML_TYPE_Q3_K: return HERD_KPACK_Q3_K_CHUNK;
    case HERD_GGML_TYPE_Q2_K: return HERD_KPACK_Q2_K_CHUNK;
    case HERD_GGML_TYPE_Q5_0: return HERD_KPACK_Q5_0_CHUNK;
    case HERD_GGML_TYPE_Q5_1: return HERD_KPACK_Q5_1_CHUNK;
    case HERD_GGML_TYPE_Q4_1: return HERD_KPACK_Q4_1_CHUNK;
    default: return HERD_KPACK_IQ4_NL_CHUNK;
    }
}

/* ------------------------------------------------------------ K types with Q8_K */

#define T_Q2_K HERD_GGML_TYPE_Q2_K
#define T_Q3_K HERD_GGML_TYPE_Q3_K
#define T_Q4_K HERD_GGML_TYPE_Q4_K
#define T_Q5_K HERD_GGML_TYPE_Q5_K
#define T_Q6_K HERD_GGML_TYPE_Q6_K

/* One group times NT tokens of type T (both constants once inlined); the
 * chunk offsets are kpack.h's. */
INLINE void ktile(const enum herd_ggml_type T, const int NT, const uint8_t *w, size_t n_blocks,
                  const struct herd_block_q8_k *x, size_t x_stride, float *y, size_t y_stride) {
    const bool q45 = T == T_Q4_K || T == T_Q5_K, mins = q45 || T == T_Q2_K;
    const size_t chunk = chunk_of(T);
    const int off_sc = mins ? 64 : 32, off_mn = q45 ? 192 : 320, off_q = T == T_Q2_K ? 576 : 320;
    /* bytes per 32 columns of weights, a bit plane included */
    const int step = T == T_Q4_K ? 256 : T == T_Q5_K ? 320 : T == T_Q6_K ? 384 : T == T_Q3_K ? 192 : 128;
    /* the offset terms' factor, -32 or -4, as a left shift and a negation */
    const int off_shift = T == T_Q6_K ? 5 : 2;
    const bool offset = T == T_Q6_K || T == T_Q3_K;
    __m512 acc[16];
    UNROLL for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
    for (size_t b = 0; b < n_blocks; b++) {
        const uint8_t *c = w + b * chunk;
        const struct herd_block_q8_k *xb = x + b;
        __m512i isum[16];
        if (offset) {
            /* -off x sum_g sc_g x bsum_g: the start of every token's sum */
            UNROLL for (int k = 0; k < 8; k++) {
                const __m512i P = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(c + off_sc + 32 * k)));
                const __m512i O = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16(P, off_shift));
                UNROLL for (int t = 0; t < NT; t++) {
                    const __m512i s0 = k == 0 ? _mm512_setzero_si512() : isum[t];
                    isum[t] = _mm512_dpwssd_epi32(s0, O, bcast4(xb[(size_t)t * x_stride].bsums + 2 * k));
                }
            }
        } else {
            UNROLL for (int t = 0; t < NT; t++) isum[t] = _mm512_setzero_si512();
        }
        /* 8 steps of 32 columns: one sub-block of Q4_K / Q5_K, two of the others */
        for (int s = 0; s < 8; s++) {
            /* the chunk after next, spread over the steps: one token's
             * tile streaming from memory ran at 24-28 GB/s on Q6_K / Q5_K
             * without (the hardware prefetcher alone), 42-48 with; 1 or 4
             * chunks ahead did less (bench/kpack.c, one thread) */
            for (size_t pf = (size_t)s * chunk / 8; pf < (size_t)(s + 1) * chunk / 8; pf += 64)
                _mm_prefetch((const char *)c + 2 * chunk + pf, _MM_HINT_T0);
            __m512i W[8], sca, scb;
            if (q45) {
                const uint8_t *v = c + off_q + step * s;
                unpack_nibbles(v, T == T_Q5_K ? v + 256 : NULL, W);
                sca = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(c + off_sc + 16 * s)));
                scb = sca;
            } else {
                if (T == T_Q6_K) {
                    const uint8_t *v = c + off_q + step * s;
                    unpack_nibbles(v, NULL, W);
                    add_high_crumbs(v + 256, W);
                } else {
                    const uint8_t *v = c + off_q + step * s, *hb = T == T_Q3_K ? v + 128 : NULL;
                    unpack_crumbs(v, hb, W);
                    unpack_crumbs(v + 64, hb ? hb + 32 : NULL, W + 4);
                }
                /* lane r: sub-block 2s's scale in the low 16 bits, 2s+1's above */
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(c + off_sc + 32 * s));
                if (T == T_Q2_K) {
                    const __m512i P = _mm512_cvtepu8_epi16(raw);
                    sca = _mm512_and_si512(P, _mm512_set1_epi32(0xffff));
                    scb = _mm512_srli_epi32(P, 16);
                } else {
                    const __m512i P = _mm512_cvtepi8_epi16(raw);
                    sca = _mm512_srai_epi32(_mm512_slli_epi32(P, 16), 16);
                    scb = _mm512_srai_epi32(P, 16);
                }
            }
            UNROLL for (int t = 0; t < NT; t++) {
                const int8_t *q = xb[(size_t)t * x_stride].qs + 32 * s;
                if (q45) {
                    __m512i ch = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[0], bcast4(q));
                    UNROLL for (int k = 1; k < 8; k++) ch = _mm512_dpbusd_epi32(ch, W[k], bcast4(q + 4 * k));
                    isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(ch, sca));
                } else {
                    __m512i cha = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[0], bcast4(q));
                    __m512i chb = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[4], bcast4(q + 16));
                    UNROLL for (int k = 1; k < 4; k++) {
                        cha = _mm512_dpbusd_epi32(cha, W[k], bcast4(q + 4 * k));
                        chb = _mm512_dpbusd_epi32(chb, W[k + 4], bcast4(q + 16 + 4 * k));
                    }
                    isum[t] = _mm512_add_epi32(
                        isum[t], _mm512_add_epi32(_mm512_mullo_epi32(cha, sca), _mm512_mullo_epi32(chb, scb)));
                }
            }
        }
        const __m512 d = fp16x16(c);
        if (mins) {
            /* lane r of M[k]: the mins that multiply bsums 2k and 2k+1 */
            __m512i M[8];
            UNROLL for (int k = 0; k < 8; k++) {
                if (q45) {
                    const __m512i m = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(c + off_mn + 16 * k)));
                    M[k] = _mm512_or_si512(m, _mm512_slli_epi32(m, 16));
                } else {
                    M[k] = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(c + off_mn + 32 * k)));
                }
            }
            const __m512 dmin = fp16x16(c + 32);
            UNROLL for (int t = 0; t < NT; t++) {
                const struct herd_block_q8_k *xt = xb + (size_t)t * x_stride;
                __m512i ms = _mm512_dpwssd_epi32(_mm512_setzero_si512(), M[0], bcast4(xt->bsums));
                UNROLL for (int k = 1; k < 8; k++) ms = _mm512_dpwssd_epi32(ms, M[k], bcast4(xt->bsums + 2 * k));
                const __m512 dx = _mm512_set1_ps(xt->d);
                const __m512 p = _mm512_mul_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(isum[t]));
                const __m512 m = _mm512_mul_ps(_mm512_mul_ps(dmin, dx), _mm512_cvtepi32_ps(ms));
                acc[t] = _mm512_add_ps(acc[t], _mm512_sub_ps(p, m));
            }
        } else {
            UNROLL for (int t = 0; t < NT; t++) {
                const __m512 dx = _mm512_set1_ps(xb[(size_t)t * x_stride].d);
                acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(isum[t])));
            }
        }
    }
    UNROLL for (int t = 0; t < NT; t++) _mm512_storeu_ps(y + (size_t)t * y_stride, acc[t]);
}

/* ------------------------------------------------------------ 32-value types with Q8A */

#define T_Q5_0   HERD_GGML_TYPE_Q5_0
#define T_Q5_1   HERD_GGML_TYPE_Q5_1
#define T_Q4_1   HERD_GGML_TYPE_Q4_1
#define T_IQ4_NL HERD_GGML_TYPE_IQ4_NL

/* Blocks ahead that a tile of 1 or 2 tokens prefetches (chunks of 288-384 bytes). */
#define QTILE_AHEAD_ONE 16

INLINE void qtile(const enum herd_ggml_type T, const int NT, const uint8_t *w, size_t n_blocks,
                  const struct herd_block_q8a *x, size_t x_stride, float *y, size_t y_stride) {
    const bool has_m = T == T_Q5_1 || T == T_Q4_1;
    const size_t chunk = chunk_of(T);
    const int off_q = has_m ? 64 : 32, off_hb = T == T_Q5_0 ? 288 : 320;
    /* IQ4_NL's grid + 128 (unsigned bytes), in each 128-bit lane for vpshufb */
    __m512i lut = _mm512_setzero_si512();
    if (T == T_IQ4_NL) {
        uint8_t g[16];
        for (int i = 0; i < 16; i++) g[i] = (uint8_t)(herd_iq4nl_values[i] + 128);
        lut = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)g));
    }
    __m512 acc[16];
    UNROLL for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
    for (size_t b = 0; b < n_blocks; b++) {
        const uint8_t *c = w + b * chunk;
        /* wide tiles compute long enough per block for the hardware
         * prefetcher to fall behind: ask a few blocks ahead (as the Q4_0
         * tiles). Narrow ones stream a matrix of a small model in a few
         * microseconds, too short for the hardware prefetcher to get ahead
         * of (it restarts at every 4 KiB page): ask ~5 KiB ahead, as the K
         * types' tiles do (smollm-135m Q4_K_M, whose 576-wide matrices are
         * Q5_0: gate/up 0.65-0.73 -> 0.58-0.61 ms a token, tg128 +6 %) */
        const size_t ahead = NT >= 4 ? 4 * chunk : QTILE_AHEAD_ONE * chunk;
        for (size_t pf = 0; pf < chunk; pf += 64) _mm_prefetch((const char *)c + ahead + pf, _MM_HINT_T0);
        const __m512 dw = fp16x16(c);
        __m512i W[8];
        unpack_nibbles(c + off_q, T == T_Q5_0 || T == T_Q5_1 ? c + off_hb : NULL, W);
        if (T == T_IQ4_NL) UNROLL for (int k = 0; k < 8; k++) W[k] = _mm512_shuffle_epi8(lut, W[k]);
        UNROLL for (int t = 0; t < NT; t++) {
            const struct herd_block_q8a *xt = x + (size_t)t * x_stride + b;
            /* the chain starts at the offset term, -offset x sum(x) */
            __m512i s;
            if (T == T_Q5_0)
                s = _mm512_set1_epi32(xt->neg128_sum >> 3); /* a multiple of 128: exact */
            else if (T == T_IQ4_NL)
                s = bcast4(&xt->neg128_sum);
            else
                s = _mm512_setzero_si512();
            UNROLL for (int k = 0; k < 8; k++) s = _mm512_dpbusd_epi32(s, W[k], bcast4(xt->qs + 4 * k));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(xt->d)), acc[t]);
            if (has_m)
                acc[t] = _mm512_fmadd_ps(fp16x16(c + 32), _mm512_set1_ps(xt->d * (float)herd_q8a_sum(xt)), acc[t]);
        }
    }
    UNROLL for (int t = 0; t < NT; t++) _mm512_storeu_ps(y + (size_t)t * y_stride, acc[t]);
}

/* ------------------------------------------------------------ dispatch */

/* n_tok tokens as tiles of 16, 8, 4, 2, 1: every tile gives a token the
 * same floats, so the split does not change results. */
#define DEFINE_GEMM(NAME, TILE, T, XT)                                                                                 \
    static void NAME(const uint8_t *w, size_t n_blocks, const XT *x, size_t x_stride, size_t n_tok, float *y,          \
                     size_t y_stride) {                                                                                \
        size_t t = 0;                                                                                                  \
        for (; t + 16 <= n_tok; t += 16)                                                                               \
            TILE(T, 16, w, n_blocks, x + t * x_stride, x_stride, y + t * y_stride, y_stride);                          \
        for (; t + 8 <= n_tok; t += 8)                                                                                 \
            TILE(T, 8, w, n_blocks, x + t * x_stride, x_stride, y + t * y_stride, y_stride);                           \
        if (t + 4 <= n_tok) TILE(T, 4, w, n_blocks, x + t * x_stride, x_stride, y + t * y_stride, y_stride), t += 4;   \
        if (t + 2 <= n_tok) TILE(T, 2, w, n_blocks, x + t * x_stride, x_stride, y + t * y_stride, y_stride), t += 2;   \
        if (t < n_tok) TILE(T, 1, w, n_blocks, x + t * x_stride, x_stride, y + t * y_stride, y_stride);                \
    }

DEFINE_GEMM(gemm_q2_k, ktile, T_Q2_K, struct herd_block_q8_k)
DEFINE_GEMM(gemm_q3_k, ktile, T_Q3_K, struct herd_block_q8_k)
DEFINE_GEMM(gemm_q4_k, ktile, T_Q4_K, struct herd_block_q8_k)
DEFINE_GEMM(gemm_q5_k, ktile, T_Q5_K, struct herd_block_q8_k)
DEFINE_GEMM(gemm_q6_k, ktile, T_Q6_K, struct herd_block_q8_k)
DEFINE_GEMM(gemm_q5_0, qtile, T_Q5_0, struct herd_block_q8a)
DEFINE_GEMM(gemm_q5_1, qtile, T_Q5_1, struct herd_block_q8a)
DEFINE_GEMM(gemm_q4_1, qtile, T_Q4_1, struct herd_block_q8a)
DEFINE_GEMM(gemm_iq4_nl, qtile, T_IQ4_NL, struct herd_block_q8a)

void herd_kpack_gemm_vnni(enum herd_ggml_type type, const uint8_t *w, size_t n_blocks, const void *x, size_t x_stride,
                          size_t n_tok, float *y, size_t y_stride) {
    switch (type) {
    case HERD_GGML_TYPE_Q2_K: gemm_q2_k(w, n_blocks, x, x_stride, n_tok, y, y_stride); break;
    case HERD_GGML_TYPE_Q3_K: gemm_q3_k(w, n_blocks, x, x_stride, n_tok, y, y_stride); break;
    case HERD_GGML_TYPE_Q4_K: gemm_q4_k(w, n_blocks, x, x_stride, n_tok, y, y_stride); break;
    case HERD_GGML_TYPE_Q5_K: gemm_q5_k(w, n_blocks, x, x_stride, n_tok, y, y_stride); break;
    case HERD_GGML_TYPE_Q6_K: gemm_q6_k(w, n_blocks, x, x_stride, n_tok, y, y_stride); break;
    case HERD_GGML_TYPE_Q5_0: gemm_q5_0(w, n_blocks, x, x_stride, n_tok, y, y_stride); break;
    case HERD_GGML_TYPE_Q5_1: gemm_q5_1(w, n_blocks, x, x_stride, n_tok, y, y_stride); break;
    case HERD_GGML_TYPE_Q4_1: gemm_q4_1(w, n_blocks, x, x_stride, n_tok, y, y_stride); break;
    case HERD_GGML_TYPE_IQ4_NL: gemm_iq4_nl(w, n_blocks, x, x_stride, n_tok, y, y_stride); break;
    default: herd_kpack_gemm_ref(type, w, n_blocks, x, x_stride, n_tok, y, y_stride);
    }
}
