/* AVX2 + FMA + F16C kernels (compiled with those flags; used only when CPUID
 * says so). Integer dot products use the sign trick: |w| (unsigned) times
 * x with w's sign moved onto it, through vpmaddubsw, then vpmaddwd to 32 bits. */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "base/cpu.h"
#include "kernels/kernels.h"
#include "kernels/kquants.h"
#include "kernels/kquants_simd.h"
#include "kernels/quant.h"

static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float fp16(uint16_t h) { return _cvtsh_ss(h); }

static void quantize_row_q8a_avx2(const float *x, struct herd_block_q8a *y, size_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (size_t b = 0; b < n / HERD_QK8A; b++, x += HERD_QK8A) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        /* the scale as ggml keeps it, in fp16 (the values are quantized with
         * the exact one, as ggml does): herd's answers then agree with
         * llama.cpp's on the same file (perplexity 0.016 % apart on a Q8_0
         * model, 0.2 % with the f32 scale), and neither is nearer float64 */
        y[b].d = herd_fp16_to_fp32(herd_fp32_to_fp16(amax / 127.0f));
        const __m256 vid = _mm256_set1_ps(id);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, vid)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, vid));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, vid)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, vid));
        i0 = _mm256_packs_epi32(i0, i1);
        i2 = _mm256_packs_epi32(i2, i3);
        i0 = _mm256_packs_epi16(i0, i2);
        const __m256i q = _mm256_permutevar8x32_epi32(i0, perm);
        _mm256_storeu_si256((__m256i *)y[b].qs, q);
        /* sum of the 32 bytes: widen to 16 bits in pairs, then to 32 bits */
        __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);
        __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        y[b].neg128_sum = -128 * _mm_cvtsi128_si32(s4);
    }
}

/* 32 signed bytes times 32 signed bytes, summed into 8 int32 lanes as floats. */
static inline __m256 dot_i8(__m256i w, __m256i x) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
}

static float dot_q8_0_q8a_avx2(const void *w, const struct herd_block_q8a *x, size_t n) {
    const struct herd_block_q8_0 *b = w;
    __m256 acc = _mm256_setzero_ps();
    for (size_t i = 0; i < n / HERD_QK8A; i++) {
        __m256i wq = _mm256_loadu_si256((const __m256i *)b[i].qs);
        __m256i xq = _mm256_loadu_si256((const __m256i *)x[i].qs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16(b[i].d) * x[i].d), dot_i8(wq, xq), acc);
    }
    return hsum_ps(acc);
}

static float dot_q4_0_q8a_avx2(const void *w, const struct herd_block_q8a *x, size_t n) {
    const struct herd_block_q4_0 *b = w;
    const __m128i low = _mm_set1_epi8(0x0f);
    const __m256i eight = _mm256_set1_epi8(8);
    __m256 acc = _mm256_setzero_ps();
    for (size_t i = 0; i < n / HERD_QK8A; i++) {
        __m128i raw = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), low), _mm_and_si128(raw, low));
        __m256i wq = _mm256_sub_epi8(nib, eight);
        __m256i xq = _mm256_loadu_si256((const __m256i *)x[i].qs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16(b[i].d) * x[i].d), dot_i8(wq, xq), acc);
    }
    return hsum_ps(acc);
}

static float dot_f32_avx2(const float *w, const float *x, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) sum += w[i] * x[i];
    return sum;
}

static inline __m256 load_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

static inline __m256 load_bf16(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

/* Dot product of a 16-bit float row (f16 or bf16, read through LOAD, the
 * tail through SCALAR) with an f32 row: two accumulators of 8 lanes. */
#define DEFINE_DOT16(NAME, LOAD, SCALAR)                                                                               \
    static float NAME(const uint16_t *w, const float *x, size_t n) {                                                   \
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                                                     \
        size_t i = 0;                                                                                                  \
        for (; i + 16 <= n; i += 16) {                                                                                 \
            a0 = _mm256_fmadd_ps(LOAD(w + i), _mm256_loadu_ps(x + i), a0);                                             \
            a1 = _mm256_fmadd_ps(LOAD(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);                                     \
        }                                                                                                              \
        for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(LOAD(w + i), _mm256_loadu_ps(x + i), a0);                      \
        float sum = hsum_ps(_mm256_add_ps(a0, a1));                                                                    \
        for (; i < n; i++) sum += SCALAR(w[i]) * x[i];                                                                 \
        return sum;                                                                                                    \
    }

DEFINE_DOT16(dot_f16_f32_avx2, load_f16, fp16)
DEFINE_DOT16(dot_bf16_f32_avx2, load_bf16, herd_bf16_to_fp32)

static void axpy_f32_avx2(float a, const float *x, float *y, size_t n) {
    const __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

static void axpy_f16_avx2(float a, const uint16_t *x, float *y, size_t n) {
    const __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, load_f16(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * fp16(x[i]);
}

/* ------------------------------------------------------------ packed tiles */

/* The packed layout (kernels.h) read 8 rows at a time: bytes 0-31 of a
 * 64-byte vector are rows 0-7 (4 columns each), bytes 32-63 rows 8-15, the
 * operand layout of vpmaddubsw + vpmaddwd, which sum 4 byte products per
 * 32-bit lane like vpdpbusd. Q4_0 nibbles (0..15) times int8 cannot
 * saturate 16 bits; Q8_0 bytes are turned back to signed and use the sign
 * trick (|w| times x with w's sign). Per output the accumulation order is
 * fixed, whatever the number of tokens. */
#define HERD_UNROLL _Pragma("GCC unroll 8")

static inline __m256i dot4_q4(__m256i w, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
}

static inline __m256i dot4_q8(__m256i w_unsigned, __m256i x) {
    const __m256i w = _mm256_xor_si256(w_unsigned, _mm256_set1_epi8((char)0x80));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)),
                             _mm256_set1_epi16(1));
}

#define DEFINE_GEMM_TILE(NT)                                                                                           \
    static void gemm_tile_##NT(bool q4, const uint8_t *w, size_t n_blocks, const struct herd_block_q8a *x,             \
                               size_t x_stride, float *y, size_t y_stride) {                                           \
        const size_t chunk = q4 ? HERD_PACK_Q4_0_CHUNK : HERD_PACK_Q8_0_CHUNK;                                         \
        const __m256i low = _mm256_set1_epi8(0x0f);                                                                    \
        for (int half = 0; half < 2; half++) { /* rows 0-7, then 8-15 */                                               \
            __m256 acc[NT];                                                                                            \
            HERD_UNROLL for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();                                     \
            for (size_t b = 0; b < n_blocks; b++) {                                                                    \
                const uint8_t *c = w + b * chunk;                                                                      \
                const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(c + 16 * half)));                  \
                const uint8_t *v = c + 2 * HERD_PACK_ROWS + 32 * half;                                                 \
                __m256i W[8];                                                                                          \
                if (q4) {                                                                                              \
                    HERD_UNROLL for (int j = 0; j < 4; j++) {                                                          \
                        __m256i raw = _mm256_loadu_si256((const __m256i *)(v + 64 * j));                               \
                        W[j] = _mm256_and_si256(raw, low);                                                             \
                        W[j + 4] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);                                   \
                    }                                                                                                  \
                } else {                                                                                               \
                    HERD_UNROLL for (int k = 0; k < 8; k++) W[k] = _mm256_loadu_si256((const __m256i *)(v + 64 * k));  \
                }                                                                                                      \
                HERD_UNROLL for (int t = 0; t < NT; t++) {                                                             \
                    const struct herd_block_q8a *xb = x + (size_t)t * x_stride + b;                                    \
                    __m256i s = _mm256_setzero_si256();                                                                \
                    HERD_UNROLL for (int k = 0; k < 8; k++) {                                                          \
                        int32_t xq;                                                                                    \
                        memcpy(&xq, xb->qs + 4 * k, 4);                                                                \
                        const __m256i xv = _mm256_set1_epi32(xq);                                                      \
                        s = _mm256_add_epi32(s, q4 ? dot4_q4(W[k], xv) : dot4_q8(W[k], xv));                           \
                    }                                                                                                  \
                    if (q4) s = _mm256_add_epi32(s, _mm256_set1_epi32(herd_q8a_q4_offset(xb)));                        \
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(xb->d)), acc[t]); \
                }                                                                                                      \
            }                                                                                                          \
            HERD_UNROLL for (int t = 0; t < NT; t++) _mm256_storeu_ps(y + (size_t)t * y_stride + 8 * half, acc[t]);    \
        }                                                                                                              \
    }

DEFINE_GEMM_TILE(1)
DEFINE_GEMM_TILE(2)
DEFINE_GEMM_TILE(4)

static void gemm_packed_avx2(enum herd_ggml_type type, const uint8_t *w, size_t n_blocks,
                             const struct herd_block_q8a *x, size_t x_stride, size_t n_tok, float *y, size_t y_stride) {
    const bool q4 = type == HERD_GGML_TYPE_Q4_0;
    size_t t = 0;
    for (; t + 4 <= n_tok; t += 4) gemm_tile_4(q4, w, n_blocks, x + t * x_stride, x_stride, y + t * y_stride, y_stride);
    if (t + 2 <= n_tok) gemm_tile_2(q4, w, n_blocks, x + t * x_stride, x_stride, y + t * y_stride, y_stride), t += 2;
    if (t < n_tok) gemm_tile_1(q4, w, n_blocks, x + t * x_stride, x_stride, y + t * y_stride, y_stride);
}

/* ------------------------------------------------------------ attention */

/* e^x for x <= 0, 8 lanes: the same range reduction and polynomial as the
 * AVX-512 version; 2^n built in the exponent bits. */
static inline __m256 exp_ps(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.3981999507e-3f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* 8 values of K row d starting at key j0 (keys past n read as 0). */
static inline __m256 k_row8(const struct herd_attn_kv *kv, int d, int bt, int j0, int n) {
    const size_t off = (size_t)d * (size_t)bt + (size_t)j0;
    if (j0 + 8 <= n) {
        switch (kv->type) {
        case HERD_ATTN_KV_F32: return _mm256_loadu_ps((const float *)kv->k + off);
        case HERD_ATTN_KV_Q8:
            return _mm256_cvtepi32_ps(
                _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)kv->k + off))));
        default: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)kv->k + off)));
        }
    }
    float t[8] = {0};
    for (int j = j0; j < n && j < j0 + 8; j++) t[j - j0] = herd_attn_kv_k_at(kv, d, j, bt);
    return _mm256_loadu_ps(t);
}

static inline __m256 v_row8(const struct herd_attn_kv *kv, int j, int d) {
    const size_t off = (size_t)j * kv->v_stride + (size_t)d;
    switch (kv->type) {
    case HERD_ATTN_KV_F32: return _mm256_loadu_ps((const float *)kv->v + off);
    case HERD_ATTN_KV_Q8:
        return _mm256_cvtepi32_ps(
            _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)kv->v + off))));
    default: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)kv->v + off)));
    }
}

/* The general kernel, one query head at a time: any head size. */
static void attn_heads_one_by_one(const float *q, int G, int hd, const struct herd_attn_kv *kv, int bt, int n, float *m,
                                  float *l, float *acc) {
    for (int g = 0; g < G; g++) {
        const float *qg = q + (size_t)g * hd;
        float *ag = acc + (size_t)g * hd;
        float sc[16];
        for (int j0 = 0; j0 < n; j0 += 8) { /* scores of 8 keys at a time */
            __m256 s = _mm256_setzero_ps();
            for (int d = 0; d < hd; d++) s = _mm256_fmadd_ps(_mm256_set1_ps(qg[d]), k_row8(kv, d, bt, j0, n), s);
            _mm256_storeu_ps(sc + j0, s);
        }
        float bm = -INFINITY;
        if (kv->type == HERD_ATTN_KV_Q8)
            for (int j = 0; j < n; j++) sc[j] *= kv->k_scale[j];
        herd_attn_adjust_scores(kv, sc, n);
        for (int j = 0; j < n; j++) bm = fmaxf(bm, sc[j]);
        if (bm > m[g]) {
            const float f = expf(m[g] - bm);
            for (int d = 0; d < hd; d++) ag[d] *= f;
            l[g] *= f;
            m[g] = bm;
        }
        float pw[16];
        for (int j0 = 0; j0 < n; j0 += 8) {
            __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(sc + j0), _mm256_set1_ps(m[g])));
            _mm256_storeu_ps(pw + j0, e);
        }
        for (int j = 0; j < kv->first; j++) pw[j] = 0.0f; /* exp_ps clamps -inf: not quite 0 */
        for (int j = 0; j < n; j++) {
            l[g] += pw[j];
            if (kv->type == HERD_ATTN_KV_Q8) pw[j] *= kv->v_scale[(size_t)j * kv->v_scale_stride];
        }
        int d = 0;
        for (; d + 8 <= hd; d += 8) {
            __m256 a = _mm256_loadu_ps(ag + d);
            for (int j = 0; j < n; j++) a = _mm256_fmadd_ps(_mm256_set1_ps(pw[j]), v_row8(kv, j, d), a);
            _mm256_storeu_ps(ag + d, a);
        }
        for (; d < hd; d++)
            for (int j = 0; j < n; j++) ag[d] += pw[j] * herd_attn_kv_v_at(kv, j, d);
    }
}

/* GS (1..3) query heads sharing a KV head, head size a multiple of 16, as
 * the AVX-512 twin does: each K and V row is loaded and converted once for
 * all of them, and the accumulations run in independent chains (scores: one
 * per head and 8 keys; values: two per head) instead of one 64-long chain. */
static inline __attribute__((always_inline)) void attn_group8(const int GS, const float *q, int hd,
                                                              const struct herd_attn_kv *kv, int bt, int n, float *m,
                                                              float *l, float *acc) {
    float sc[3][16], pw[3][16], f[3];
    const size_t pf = herd_attn_prefetch_per(kv, (size_t)hd);
    for (int j0 = 0; j0 < n; j0 += 8) {
        __m256 s[3];
        HERD_UNROLL for (int g = 0; g < GS; g++) s[g] = _mm256_setzero_ps();
        for (int d = 0; d < hd; d++) {
            if (j0 == 0) herd_attn_prefetch_part(kv, pf, (size_t)d);
            const __m256 k = k_row8(kv, d, bt, j0, n);
            HERD_UNROLL for (int g = 0; g < GS; g++) s[g] =
                _mm256_fmadd_ps(_mm256_set1_ps(q[(size_t)g * hd + d]), k, s[g]);
        }
        HERD_UNROLL for (int g = 0; g < GS; g++) _mm256_storeu_ps(sc[g] + j0, s[g]);
    }
    HERD_UNROLL for (int g = 0; g < GS; g++) {
        float bm = -INFINITY;
        if (kv->type == HERD_ATTN_KV_Q8)
            for (int j = 0; j < n; j++) sc[g][j] *= kv->k_scale[j];
        herd_attn_adjust_scores(kv, sc[g], n);
        for (int j = 0; j < n; j++) bm = fmaxf(bm, sc[g][j]);
        f[g] = 1.0f;
        if (bm > m[g]) {
            f[g] = expf(m[g] - bm); /* 0 on the first block */
            l[g] *= f[g];
            m[g] = bm;
        }
        for (int j0 = 0; j0 < n; j0 += 8)
            _mm256_storeu_ps(pw[g] + j0, exp_ps(_mm256_sub_ps(_mm256_loadu_ps(sc[g] + j0), _mm256_set1_ps(m[g]))));
        for (int j = 0; j < kv->first; j++) pw[g][j] = 0.0f;
        for (int j = 0; j < n; j++) {
            l[g] += pw[g][j];
            if (kv->type == HERD_ATTN_KV_Q8) pw[g][j] *= kv->v_scale[(size_t)j * kv->v_scale_stride];
        }
    }
    for (int d = 0; d < hd; d += 16) {
        __m256 a[3][2];
        HERD_UNROLL for (int g = 0; g < GS; g++) {
            const __m256 fg = _mm256_set1_ps(f[g]);
            a[g][0] = _mm256_mul_ps(_mm256_loadu_ps(acc + (size_t)g * hd + d), fg);
            a[g][1] = _mm256_mul_ps(_mm256_loadu_ps(acc + (size_t)g * hd + d + 8), fg);
        }
        for (int j = 0; j < n; j++) {
            const __m256 v0 = v_row8(kv, j, d), v1 = v_row8(kv, j, d + 8);
            HERD_UNROLL for (int g = 0; g < GS; g++) {
                const __m256 w = _mm256_set1_ps(pw[g][j]);
                a[g][0] = _mm256_fmadd_ps(w, v0, a[g][0]);
                a[g][1] = _mm256_fmadd_ps(w, v1, a[g][1]);
            }
        }
        HERD_UNROLL for (int g = 0; g < GS; g++) {
            _mm256_storeu_ps(acc + (size_t)g * hd + d, a[g][0]);
            _mm256_storeu_ps(acc + (size_t)g * hd + d + 8, a[g][1]);
        }
    }
}

static void attn_block_avx2(const float *q, int G, int hd, const struct herd_attn_kv *kv, int bt, int n, float *m,
                            float *l, float *acc) {
    if (hd % 16 != 0) {
        herd_attn_prefetch_part(kv, herd_attn_prefetch_per(kv, 1), 0);
        attn_heads_one_by_one(q, G, hd, kv, bt, n, m, l, acc);
        return;
    }
    /* the next block is prefetched by the first group only */
    struct herd_attn_kv later = *kv;
    later.next = NULL;
    for (int g = 0; g < G; g += 3) {
        const size_t o = (size_t)g * hd;
        if (g > 0) kv = &later;
        switch (G - g) {
        case 1: attn_group8(1, q + o, hd, kv, bt, n, m + g, l + g, acc + o); break;
        case 2: attn_group8(2, q + o, hd, kv, bt, n, m + g, l + g, acc + o); break;
        default: attn_group8(3, q + o, hd, kv, bt, n, m + g, l + g, acc + o);
        }
    }
}

/* silu(g) * u, 8 lanes: e^-g with -g clamped to [-87, 88] (the exp above
 * builds 2^n in the exponent bits, which must not overflow; beyond 88 the
 * result is 0 either way). The AVX-512 family uses this one too. */
static inline __m256 silu_mul8(__m256 x, __m256 u) {
    const __m256 e = exp_ps(_mm256_min_ps(_mm256_sub_ps(_mm256_setzero_ps(), x), _mm256_set1_ps(88.0f)));
    return _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

static void silu_mul_avx2(float *g, const float *u, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(g + i, silu_mul8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n) {
        /* the tail through the same arithmetic: a value's result must not
         * depend on where a thread's share of the batch happens to end */
        float tg[8] = {0}, tu[8] = {0};
        memcpy(tg, g + i, (n - i) * sizeof *g);
        memcpy(tu, u + i, (n - i) * sizeof *u);
        _mm256_storeu_ps(tg, silu_mul8(_mm256_loadu_ps(tg), _mm256_loadu_ps(tu)));
        memcpy(g + i, tg, (n - i) * sizeof *g);
    }
}

/* gelu(g) * u, 8 lanes: silu's form with e^-2z, 2z = 2 sqrt(2/pi) (g +
 * 0.044715 g^3), -2z clamped as silu's -g is. */
static inline __m256 gelu_mul8(__m256 x, __m256 u) {
    const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    const __m256 z2 = _mm256_mul_ps(_mm256_set1_ps(1.5957691216057308f),
                                    _mm256_add_ps(x, _mm256_mul_ps(_mm256_set1_ps(0.044715f), x3)));
    const __m256 e = exp_ps(_mm256_min_ps(_mm256_sub_ps(_mm256_setzero_ps(), z2), _mm256_set1_ps(88.0f)));
    return _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

static void gelu_mul_avx2(float *g, const float *u, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(g + i, gelu_mul8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n) { /* the tail through the same arithmetic, as silu's */
        float tg[8] = {0}, tu[8] = {0};
        memcpy(tg, g + i, (n - i) * sizeof *g);
        memcpy(tu, u + i, (n - i) * sizeof *u);
        _mm256_storeu_ps(tg, gelu_mul8(_mm256_loadu_ps(tg), _mm256_loadu_ps(tu)));
        memcpy(g + i, tg, (n - i) * sizeof *g);
    }
}

/* F16C's conversion, 8 at a time; the tail through the same instruction. */
static void f32_to_f16_avx2(const float *x, uint16_t *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < n) {
        float t[8] = {0};
        uint16_t h[8];
        memcpy(t, x + i, (n - i) * sizeof *x);
        _mm_storeu_si128((__m128i *)h, _mm256_cvtps_ph(_mm256_loadu_ps(t), _MM_FROUND_TO_NEAREST_INT));
        memcpy(y + i, h, (n - i) * sizeof *y);
    }
}

/* 8 weights: the exponent clamped below (exp_ps stays finite), then -inf
 * and NaN inputs (banned tokens) masked to exactly 0. */
static inline __m256 softmax_weights8(__m256 x, __m256 mx, __m256 scale) {
    const __m256 e = exp_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_sub_ps(x, mx), scale), _mm256_set1_ps(-87.0f)));
    return _mm256_and_ps(e, _mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_GT_OQ));
}

static void softmax_weights_avx2(const float *x, float mx, float scale, float *y, size_t n) {
    const __m256 vm = _mm256_set1_ps(mx), vs = _mm256_set1_ps(scale);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, softmax_weights8(_mm256_loadu_ps(x + i), vm, vs));
    if (i < n) {
        float t[8], w[8];
        for (int k = 0; k < 8; k++) t[k] = -INFINITY;
        memcpy(t, x + i, (n - i) * sizeof *x);
        _mm256_storeu_ps(w, softmax_weights8(_mm256_loadu_ps(t), vm, vs));
        memcpy(y + i, w, (n - i) * sizeof *y);
    }
}

static const struct herd_kernels avx2 = {
    .name = "avx2",
    .quantize_row_q8a = quantize_row_q8a_avx2,
    .quantize_row_q8k = herd_quantize_row_q8k_avx2,
    .dot_q8a =
        {
            [HERD_GGML_TYPE_Q8_0] = dot_q8_0_q8a_avx2,
            [HERD_GGML_TYPE_Q4_0] = dot_q4_0_q8a_avx2,
            [HERD_GGML_TYPE_Q4_1] = herd_dot_q4_1_q8a_avx2,
            [HERD_GGML_TYPE_Q5_0] = herd_dot_q5_0_q8a_avx2,
            [HERD_GGML_TYPE_Q5_1] = herd_dot_q5_1_q8a_avx2,
            [HERD_GGML_TYPE_IQ4_NL] = herd_dot_iq4_nl_q8a_avx2,
        },
    .dot_q8k =
        {
            [HERD_GGML_TYPE_Q2_K] = herd_dot_q2_k_q8k_avx2,
            [HERD_GGML_TYPE_Q3_K] = herd_dot_q3_k_q8k_avx2,
            [HERD_GGML_TYPE_Q4_K] = herd_dot_q4_k_q8k_avx2,
            [HERD_GGML_TYPE_Q5_K] = herd_dot_q5_k_q8k_avx2,
            [HERD_GGML_TYPE_Q6_K] = herd_dot_q6_k_q8k_avx2,
        },
    .dot_f32 = dot_f32_avx2,
    .dot_f16_f32 = dot_f16_f32_avx2,
    .dot_bf16_f32 = dot_bf16_f32_avx2,
    .axpy_f32 = axpy_f32_avx2,
    .axpy_f16 = axpy_f16_avx2,
    .gemm_packed = gemm_packed_avx2,
    .prefers_packed = true,
    .attn_block = attn_block_avx2,
    .silu_mul = silu_mul_avx2,
    .gelu_mul = gelu_mul_avx2,
    .f32_to_f16 = f32_to_f16_avx2,
    .softmax_weights = softmax_weights_avx2,
};

const struct herd_kernels *herd_kernels_avx2(void) { return herd_cpu_features()->avx2 ? &avx2 : NULL; }
