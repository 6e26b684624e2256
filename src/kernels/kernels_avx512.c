/* AVX-512 kernels. With VNNI, vpdpbusd does the unsigned-by-signed byte dot
 * product and the 32-bit accumulation in one instruction. Two blocks of 32
 * values are handled per 512-bit register. Falls back to the AVX2 table for
 * the kernels that gain nothing from wider registers. */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "base/cpu.h"
#include "kernels/kernels.h"
#include "kernels/kpack.h"
#include "kernels/kquants_simd.h"
#include "kernels/quant.h"

static inline float fp16(uint16_t h) { return _cvtsh_ss(h); }

/* Two 32-byte blocks of signed weights and activations -> 16 int32 partial
 * sums (8 per block) as floats. */
static inline __m512 dot_i8x2_vnni(__m512i w, __m512i x) {
    __m512i aw = _mm512_abs_epi8(w);
    /* x with w's sign: negate where w < 0 (w == 0 contributes 0 either way) */
    __mmask64 neg = _mm512_movepi8_mask(w);
    __m512i sx = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
    return _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sx));
}

static inline __m512 dot_i8x2_bw(__m512i w, __m512i x) {
    __m512i aw = _mm512_abs_epi8(w);
    __mmask64 neg = _mm512_movepi8_mask(w);
    __m512i sx = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
    __m512i p = _mm512_madd_epi16(_mm512_maddubs_epi16(aw, sx), _mm512_set1_epi16(1));
    return _mm512_cvtepi32_ps(p);
}

/* Scales of two blocks spread over the two 256-bit halves. */
static inline __m512 two_scales(float s0, float s1) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(s0)), _mm256_set1_ps(s1), 1);
}

/* Two blocks' weights as 64 signed bytes. */
static inline __m256i q8_0_load(const struct herd_block_q8_0 *b) { return _mm256_loadu_si256((const __m256i *)b->qs); }

static inline __m256i q4_0_unpack(const struct herd_block_q4_0 *b) {
    const __m128i low = _mm_set1_epi8(0x0f);
    __m128i raw = _mm_loadu_si128((const __m128i *)b->qs);
    __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), low), _mm_and_si128(raw, low));
    return _mm256_sub_epi8(nib, _mm256_set1_epi8(8));
}

/* Dot product of a quantized weight row (BLOCK, its bytes through LOAD) with
 * an activation row, two blocks per 512-bit step; the reference kernel of
 * weight type REF handles an odd last block. */
#define DEFINE_DOT(NAME, BLOCK, LOAD, DOT, REF)                                                                        \
    static float NAME(const void *w, const struct herd_block_q8a *x, size_t n) {                                       \
        const BLOCK *b = w;                                                                                            \
        const size_t nb = n / HERD_QK8A;                                                                               \
        __m512 acc = _mm512_setzero_ps();                                                                              \
        size_t i = 0;                                                                                                  \
        for (; i + 2 <= nb; i += 2) {                                                                                  \
            __m512i wq = _mm512_inserti64x4(_mm512_castsi256_si512(LOAD(&b[i])), LOAD(&b[i + 1]), 1);                  \
            __m512i xq = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)x[i].qs)),      \
                                            _mm256_loadu_si256((const __m256i *)x[i + 1].qs), 1);                      \
            acc = _mm512_fmadd_ps(two_scales(fp16(b[i].d) * x[i].d, fp16(b[i + 1].d) * x[i + 1].d), DOT(wq, xq), acc); \
        }                                                                                                              \
        float sum = _mm512_reduce_add_ps(acc);                                                                         \
        if (i < nb) /* an odd last block: the reference kernel */                                                      \
            sum += herd_kernels_ref()->dot_q8a[REF](b + i, x + i, (nb - i) * HERD_QK8A);                               \
        return sum;                                                                                                    \
    }

DEFINE_DOT(dot_q8_0_q8a_vnni, struct herd_block_q8_0, q8_0_load, dot_i8x2_vnni, HERD_GGML_TYPE_Q8_0)
DEFINE_DOT(dot_q8_0_q8a_avx512, struct herd_block_q8_0, q8_0_load, dot_i8x2_bw, HERD_GGML_TYPE_Q8_0)
DEFINE_DOT(dot_q4_0_q8a_vnni, struct herd_block_q4_0, q4_0_unpack, dot_i8x2_vnni, HERD_GGML_TYPE_Q4_0)
DEFINE_DOT(dot_q4_0_q8a_avx512, struct herd_block_q4_0, q4_0_unpack, dot_i8x2_bw, HERD_GGML_TYPE_Q4_0)

static float dot_f32_avx512(const float *w, const float *x, size_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, x + i), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

static float dot_f16_f32_avx512(const uint16_t *w, const float *x, size_t n) {
    __m512 a0 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i))), _mm512_loadu_ps(x + i), a0);
    float sum = _mm512_reduce_add_ps(a0);
    for (; i < n; i++) sum += fp16(w[i]) * x[i];
    return sum;
}

/* ------------------------------------------------------------ packed tiles */

/* One 16-row group times NT tokens: the weights of a block are loaded (and
 * for Q4_0 unpacked) once into 8 registers and serve every token of the
 * tile; each token then costs 8 vpdpbusd with a broadcast of 4 activation
 * bytes, an offset correction, and one FMA per block. Accumulation order
 * per output is the same for every NT, so results do not depend on the
 * batch. */
/* Loops below are fully unrolled (constant trip counts and GCC's unroll
 * pragma) so that W[] and acc[] live in registers, not on the stack. */
#define HERD_UNROLL _Pragma("GCC unroll 8")

/* 4 activation bytes in every 32-bit lane, loaded straight from memory (a
 * broadcast operand of vpdpbusd, not a trip through a general register). */
static inline __m512i bcast4(const int8_t *p) { return _mm512_broadcastd_epi32(_mm_loadu_si32(p)); }

/* A packed block's 16 rows x 32 weights as 8 registers of unsigned bytes
 * (Q4_0: the nibbles unpacked with one AND and one shift). */
static inline __attribute__((always_inline)) void load_block_weights(bool q4, const uint8_t *v, __m512i *W) {
    if (q4) {
        const __m512i low = _mm512_set1_epi8(0x0f);
        HERD_UNROLL for (int j = 0; j < 4; j++) {
            __m512i raw = _mm512_loadu_si512((const void *)(v + 64 * j));
            W[j] = _mm512_and_si512(raw, low);
            W[j + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low);
        }
    } else {
        HERD_UNROLL for (int k = 0; k < 8; k++) W[k] = _mm512_loadu_si512((const void *)(v + 64 * k));
    }
}

/* The unsigned-weight offset's share of a token's block, -offset x the
 * activation block's sum: the start of its vpdpbusd chain, so the sum comes
 * out corrected without a subtraction (integer: the same result). */
static inline __m512i offset_start(const struct herd_block_q8a *xb, int32_t offset) {
    if (offset == 128) /* a broadcast load: no multiply, no trip through a general register */
        return _mm512_broadcastd_epi32(_mm_loadu_si32(&xb->neg128_sum));
    return _mm512_set1_epi32(herd_q8a_q4_offset(xb));
}

/* acc += s x weight scales x the activation block's scale: one token's block. */
static inline __m512 add_scaled_block(__m512 acc, __m512i s, const struct herd_block_q8a *xb, __m512 dw) {
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(xb->d)), acc);
}

/* Bytes ahead that a Q4_0 tile of 1 or 2 tokens prefetches, in whole blocks. */
#define TILE_AHEAD_BYTES 6144

/* Each tile is compiled twice, for Q4_0 and Q8_0 (q4 a constant in the
 * body), so the per-token choices fold away. */
#define DEFINE_GEMM_TILE(NT)                                                                                           \
    static inline __attribute__((always_inline)) void gemm_tile_##NT##_body(                                           \
        const bool q4, const uint8_t *w, size_t n_blocks, const struct herd_block_q8a *x, size_t x_stride, float *y,   \
        size_t y_stride) {                                                                                             \
        const size_t chunk = q4 ? HERD_PACK_Q4_0_CHUNK : HERD_PACK_Q8_0_CHUNK;                                         \
        const int32_t offset = q4 ? 8 : 128;                                                                           \
        __m512 acc[NT];                                                                                                \
        HERD_UNROLL for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();                                         \
        for (size_t b = 0; b < n_blocks; b++) {                                                                        \
            const uint8_t *c = w + b * chunk;                                                                          \
            /* wide tiles compute long enough per block for the hardware                                             \
             * prefetcher to fall behind the weight stream: ask a few blocks                                          \
             * ahead (+7-12 % on 16-sequence decode). Narrow Q4_0 ones stream a                                      \
             * small model's matrix in microseconds, too short for the hardware                                       \
             * prefetcher (which restarts at every 4 KiB page): they ask                                              \
             * TILE_AHEAD_BYTES ahead (smollm-135m Q4_0 tg128 522 -> 572 tokens/s,                                    \
             * medians of 10 alternating runs; 6-12 KiB alike). Narrow Q8_0                                           \
             * ones do not: its heavier stream lost 8-10 % with it. */ \
            const size_t ahead = NT >= 4 ? 4 * chunk : q4 ? TILE_AHEAD_BYTES / chunk * chunk : 0;                      \
            if (ahead)                                                                                                 \
                for (size_t pf = 0; pf < chunk; pf += 64) _mm_prefetch((const char *)c + ahead + pf, _MM_HINT_T0);     \
            const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)c));                                 \
            const uint8_t *v = c + 2 * HERD_PACK_ROWS;                                                                 \
            __m512i W[8];                                                                                              \
            load_block_weights(q4, v, W);                                                                              \
            /* k outer, tokens inner: NT independent vpdpbusd chains interleave */                                     \
            __m512i s[NT];                                                                                             \
            HERD_UNROLL for (int t = 0; t < NT; t++) s[t] = offset_start(x + (size_t)t * x_stride + b, offset);        \
            HERD_UNROLL for (int k = 0; k < 8; k++) {                                                                  \
                HERD_UNROLL for (int t = 0; t < NT; t++) {                                                             \
                    s[t] = _mm512_dpbusd_epi32(s[t], W[k], bcast4(x[(size_t)t * x_stride + b].qs + 4 * k));            \
                }                                                                                                      \
            }                                                                                                          \
            HERD_UNROLL for (int t = 0; t < NT; t++) acc[t] =                                                          \
                add_scaled_block(acc[t], s[t], x + (size_t)t * x_stride + b, dw);                                      \
        }                                                                                                              \
        HERD_UNROLL for (int t = 0; t < NT; t++) _mm512_storeu_ps(y + (size_t)t * y_stride, acc[t]);                   \
    }                                                                                                                  \
    static void gemm_tile_##NT(bool q4, const uint8_t *w, size_t n_blocks, const struct herd_block_q8a *x,             \
                               size_t x_stride, float *y, size_t y_stride) {                                           \
        if (q4)                                                                                                        \
            gemm_tile_##NT##_body(true, w, n_blocks, x, x_stride, y, y_stride);                                        \
        else                                                                                                           \
            gemm_tile_##NT##_body(false, w, n_blocks, x, x_stride, y, y_stride);                                       \
    }

DEFINE_GEMM_TILE(1)
DEFINE_GEMM_TILE(2)
DEFINE_GEMM_TILE(4)
DEFINE_GEMM_TILE(8)

/* 16 tokens: one pass over the weight stream instead of two 8-token tiles
 * (each block's weights come from memory once per 16 tokens). With 16
 * accumulators and 8 weight registers there is no room for 16 int32 chains,
 * so tokens go outer, two at a time: their 8 vpdpbusd each form two
 * interleaved chains, and the out-of-order core overlaps successive pairs.
 * Same arithmetic, in the same order per output, as the other tiles. */
static inline __attribute__((always_inline)) void gemm_tile_16_body(const bool q4, const uint8_t *w, size_t n_blocks,
                                                                    const struct herd_block_q8a *x, size_t x_stride,
                                                                    float *y, size_t y_stride) {
    enum { NT = 16 };
    const size_t chunk = q4 ? HERD_PACK_Q4_0_CHUNK : HERD_PACK_Q8_0_CHUNK;
    const int32_t offset = q4 ? 8 : 128;
    __m512 acc[NT];
    HERD_UNROLL for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
    for (size_t b = 0; b < n_blocks; b++) {
        const uint8_t *c = w + b * chunk;
        for (size_t pf = 0; pf < chunk; pf += 64) _mm_prefetch((const char *)c + 4 * chunk + pf, _MM_HINT_T0);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)c));
        const uint8_t *v = c + 2 * HERD_PACK_ROWS;
        __m512i W[8];
        load_block_weights(q4, v, W);
        HERD_UNROLL for (int t = 0; t < NT; t += 2) {
            const struct herd_block_q8a *x0 = x + (size_t)t * x_stride + b, *x1 = x0 + x_stride;
            __m512i s0 = offset_start(x0, offset), s1 = offset_start(x1, offset);
            HERD_UNROLL for (int k = 0; k < 8; k++) {
                s0 = _mm512_dpbusd_epi32(s0, W[k], bcast4(x0->qs + 4 * k));
                s1 = _mm512_dpbusd_epi32(s1, W[k], bcast4(x1->qs + 4 * k));
            }
            acc[t] = add_scaled_block(acc[t], s0, x0, dw);
            acc[t + 1] = add_scaled_block(acc[t + 1], s1, x1, dw);
        }
    }
    HERD_UNROLL for (int t = 0; t < NT; t++) _mm512_storeu_ps(y + (size_t)t * y_stride, acc[t]);
}

static void gemm_tile_16(bool q4, const uint8_t *w, size_t n_blocks, const struct herd_block_q8a *x, size_t x_stride,
                         float *y, size_t y_stride) {
    if (q4)
        gemm_tile_16_body(true, w, n_blocks, x, x_stride, y, y_stride);
    else
        gemm_tile_16_body(false, w, n_blocks, x, x_stride, y, y_stride);
}

static void gemm_packed_vnni(enum herd_ggml_type type, const uint8_t *w, size_t n_blocks,
                             const struct herd_block_q8a *x, size_t x_stride, size_t n_tok, float *y, size_t y_stride) {
    const bool q4 = type == HERD_GGML_TYPE_Q4_0;
    size_t t = 0;
    for (; t + 16 <= n_tok; t += 16)
        gemm_tile_16(q4, w, n_blocks, x + t * x_stride, x_stride, y + t * y_stride, y_stride);
    for (; t + 8 <= n_tok; t += 8) gemm_tile_8(q4, w, n_blocks, x + t * x_stride, x_stride, y + t * y_stride, y_stride);
    if (t + 4 <= n_tok) gemm_tile_4(q4, w, n_blocks, x + t * x_stride, x_stride, y + t * y_stride, y_stride), t += 4;
    if (t + 2 <= n_tok) gemm_tile_2(q4, w, n_blocks, x + t * x_stride, x_stride, y + t * y_stride, y_stride), t += 2;
    if (t < n_tok) gemm_tile_1(q4, w, n_blocks, x + t * x_stride, x_stride, y + t * y_stride, y_stride);
}

/* ------------------------------------------------------------ attention */

/* e^x for x <= 0 (softmax arguments), 16 lanes: x = n ln2 + r with |r| <=
 * ln2/2, e^r by a degree-6 polynomial (relative error ~2e-7), times 2^n. */
static inline __m512 exp_ps(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.3981999507e-3f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* Row d of a block's K (the 16 keys' values of one head dimension) as floats. */
static inline __m512 k_row(const struct herd_attn_kv *kv, int d, int bt, __mmask16 valid) {
    const size_t off = (size_t)d * (size_t)bt;
    switch (kv->type) {
    case HERD_ATTN_KV_F32: return _mm512_maskz_loadu_ps(valid, (const float *)kv->k + off);
    case HERD_ATTN_KV_Q8:
        return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(valid, (const int8_t *)kv->k + off)));
    default: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(valid, (const uint16_t *)kv->k + off));
    }
}

/* 16 values of V row j from column d, as floats (unscaled for Q8). */
static inline __m512 v_row(const struct herd_attn_kv *kv, int j, int d) {
    const size_t off = (size_t)j * kv->v_stride + (size_t)d;
    switch (kv->type) {
    case HERD_ATTN_KV_F32: return _mm512_loadu_ps((const float *)kv->v + off);
    case HERD_ATTN_KV_Q8:
        return _mm512_cvtepi32_ps(
            _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)kv->v + off))));
    default: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)kv->v + off)));
    }
}

/* Scores of the block's keys for one head: lane j = q . K[:, j]. */
static inline __m512 block_scores(const float *q, int hd, const struct herd_attn_kv *kv, int bt, __mmask16 valid) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int d = 0;
    for (; d + 2 <= hd; d += 2) {
        s0 = _mm512_fmadd_ps(_mm512_set1_ps(q[d]), k_row(kv, d, bt, valid), s0);
        s1 = _mm512_fmadd_ps(_mm512_set1_ps(q[d + 1]), k_row(kv, d + 1, bt, valid), s1);
    }
    if (d < hd) s0 = _mm512_fmadd_ps(_mm512_set1_ps(q[d]), k_row(kv, d, bt, valid), s0);
    __m512 s = _mm512_add_ps(s0, s1);
    if (kv->type == HERD_ATTN_KV_Q8) s = _mm512_mul_ps(s, _mm512_maskz_loadu_ps(valid, kv->k_scale));
    return s;
}

/* The keys a view leaves visible among the block's valid ones. */
static inline __mmask16 live_keys(const struct herd_attn_kv *kv, __mmask16 valid) {
    return (__mmask16)(valid & ~((1u << kv->first) - 1));
}

/* The view's softcap on a block's scores (a rare option: through memory). */
static inline __m512 adjust_scores(const struct herd_attn_kv *kv, __m512 s, int n) {
    if (!(kv->softcap > 0.0f)) return s;
    float t[16];
    _mm512_storeu_ps(t, s);
    herd_attn_adjust_scores(kv, t, n);
    return _mm512_loadu_ps(t);
}

/* The general kernel, one query head at a time: any head size. */
static void attn_heads_one_by_one(const float *q, int G, int hd, const struct herd_attn_kv *kv, int bt, int n, float *m,
                                  float *l, float *acc) {
    const __mmask16 valid = (__mmask16)((1u << n) - 1), live = live_keys(kv, valid);
    for (int g = 0; g < G; g++) {
        const float *qg = q + (size_t)g * hd;
        float *ag = acc + (size_t)g * hd;
        __m512 s = block_scores(qg, hd, kv, bt, valid);
        s = adjust_scores(kv, s, n);
        s = _mm512_mask_blend_ps(live, _mm512_set1_ps(-INFINITY), s);
        const float bm = _mm512_reduce_max_ps(s);
        if (bm > m[g]) {
            const float f = expf(m[g] - bm);
            const __m512 vf = _mm512_set1_ps(f);
            int d = 0;
            for (; d + 16 <= hd; d += 16) _mm512_storeu_ps(ag + d, _mm512_mul_ps(_mm512_loadu_ps(ag + d), vf));
            for (; d < hd; d++) ag[d] *= f;
            l[g] *= f;
            m[g] = bm;
        }
        const __m512 p = _mm512_maskz_mov_ps(live, exp_ps(_mm512_sub_ps(s, _mm512_set1_ps(m[g]))));
        l[g] += _mm512_reduce_add_ps(p);
        float pw[16];
        _mm512_storeu_ps(pw, p);
        if (kv->type == HERD_ATTN_KV_Q8) /* fold each row's scale into its weight */
            for (int j = 0; j < n; j++) pw[j] *= kv->v_scale[(size_t)j * kv->v_scale_stride];
        int d = 0;
        for (; d + 16 <= hd; d += 16) {
            __m512 a = _mm512_loadu_ps(ag + d);
            for (int j = 0; j < n; j++) a = _mm512_fmadd_ps(_mm512_set1_ps(pw[j]), v_row(kv, j, d), a);
            _mm512_storeu_ps(ag + d, a);
        }
        for (; d < hd; d++)
            for (int j = 0; j < n; j++) ag[d] += pw[j] * herd_attn_kv_v_at(kv, j, d);
    }
}

/* GS (1..4) query heads sharing a KV head, head size a multiple of 32:
 * each K row and V row is loaded and converted once for all of them, and
 * every accumulation runs in 2 * GS independent chains, so the FMAs overlap
 * instead of waiting on each other (one head at a time, the block was
 * latency bound: a 16-long chain per 16 values of V). The max rescale of acc
 * is folded into the V pass (factor 1 when the max did not move). */
static inline __attribute__((always_inline)) void attn_group(const int GS, const float *q, int hd,
                                                             const struct herd_attn_kv *kv, int bt, int n, float *m,
                                                             float *l, float *acc) {
    const __mmask16 valid = (__mmask16)((1u << n) - 1), live = live_keys(kv, valid);
    __m512 s[4][2];
    HERD_UNROLL for (int g = 0; g < GS; g++) s[g][0] = s[g][1] = _mm512_setzero_ps();
    const size_t pf = herd_attn_prefetch_per(kv, (size_t)hd / 2);
    for (int d = 0; d < hd; d += 2) {
        herd_attn_prefetch_part(kv, pf, (size_t)d / 2);
        const __m512 k0 = k_row(kv, d, bt, valid), k1 = k_row(kv, d + 1, bt, valid);
        HERD_UNROLL for (int g = 0; g < GS; g++) {
            s[g][0] = _mm512_fmadd_ps(_mm512_set1_ps(q[(size_t)g * hd + d]), k0, s[g][0]);
            s[g][1] = _mm512_fmadd_ps(_mm512_set1_ps(q[(size_t)g * hd + d + 1]), k1, s[g][1]);
        }
    }
    float pw[4][16], f[4];
    HERD_UNROLL for (int g = 0; g < GS; g++) {
        __m512 sg = _mm512_add_ps(s[g][0], s[g][1]);
        if (kv->type == HERD_ATTN_KV_Q8) sg = _mm512_mul_ps(sg, _mm512_maskz_loadu_ps(valid, kv->k_scale));
        sg = adjust_scores(kv, sg, n);
        sg = _mm512_mask_blend_ps(live, _mm512_set1_ps(-INFINITY), sg);
        const float bm = _mm512_reduce_max_ps(sg);
        f[g] = 1.0f;
        if (bm > m[g]) {
            f[g] = expf(m[g] - bm); /* 0 on the first block */
            l[g] *= f[g];
            m[g] = bm;
        }
        const __m512 p = _mm512_maskz_mov_ps(live, exp_ps(_mm512_sub_ps(sg, _mm512_set1_ps(m[g]))));
        l[g] += _mm512_reduce_add_ps(p);
        _mm512_storeu_ps(pw[g], p);
        if (kv->type == HERD_ATTN_KV_Q8) /* fold each row's scale into its weight */
            for (int j = 0; j < n; j++) pw[g][j] *= kv->v_scale[(size_t)j * kv->v_scale_stride];
    }
    for (int d = 0; d < hd; d += 32) {
        __m512 a[4][2];
        HERD_UNROLL for (int g = 0; g < GS; g++) {
            const __m512 fg = _mm512_set1_ps(f[g]);
            a[g][0] = _mm512_mul_ps(_mm512_loadu_ps(acc + (size_t)g * hd + d), fg);
            a[g][1] = _mm512_mul_ps(_mm512_loadu_ps(acc + (size_t)g * hd + d + 16), fg);
        }
        for (int j = 0; j < n; j++) {
            const __m512 v0 = v_row(kv, j, d), v1 = v_row(kv, j, d + 16);
            HERD_UNROLL for (int g = 0; g < GS; g++) {
                const __m512 w = _mm512_set1_ps(pw[g][j]);
                a[g][0] = _mm512_fmadd_ps(w, v0, a[g][0]);
                a[g][1] = _mm512_fmadd_ps(w, v1, a[g][1]);
            }
        }
        HERD_UNROLL for (int g = 0; g < GS; g++) {
            _mm512_storeu_ps(acc + (size_t)g * hd + d, a[g][0]);
            _mm512_storeu_ps(acc + (size_t)g * hd + d + 16, a[g][1]);
        }
    }
}

static void attn_block_avx512(const float *q, int G, int hd, const struct herd_attn_kv *kv, int bt, int n, float *m,
                              float *l, float *acc) {
    if (hd % 32 != 0) {
        herd_attn_prefetch_part(kv, herd_attn_prefetch_per(kv, 1), 0);
        attn_heads_one_by_one(q, G, hd, kv, bt, n, m, l, acc);
        return;
    }
    /* the next block is prefetched by the first group only */
    struct herd_attn_kv later = *kv;
    later.next = NULL;
    for (int g = 0; g < G; g += 4) {
        const size_t o = (size_t)g * hd;
        if (g > 0) kv = &later;
        switch (G - g) {
        case 1: attn_group(1, q + o, hd, kv, bt, n, m + g, l + g, acc + o); break;
        case 2: attn_group(2, q + o, hd, kv, bt, n, m + g, l + g, acc + o); break;
        case 3: attn_group(3, q + o, hd, kv, bt, n, m + g, l + g, acc + o); break;
        default: attn_group(4, q + o, hd, kv, bt, n, m + g, l + g, acc + o);
        }
    }
}

static struct herd_kernels table;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* Starts from the AVX2 table and replaces what AVX-512 does better. */
static void init_table(void) {
    const struct herd_cpu_features *f = herd_cpu_features();
    table = *herd_kernels_avx2();
    table.name = f->avx512_vnni ? "avx512-vnni" : "avx512";
    table.dot_q8a[HERD_GGML_TYPE_Q8_0] = f->avx512_vnni ? dot_q8_0_q8a_vnni : dot_q8_0_q8a_avx512;
    table.dot_q8a[HERD_GGML_TYPE_Q4_0] = f->avx512_vnni ? dot_q4_0_q8a_vnni : dot_q4_0_q8a_avx512;
    /* The other quantized types (kquants_simd.h): VNNI where the CPU has
     * it, else the plain AVX-512BW twins, both ahead of AVX2 (Zen 5, one
     * thread, 4096 columns in L2, GMAC/s VNNI / BW / AVX2: Q4_K 58 / 54 /
     * 39, Q6_K 61 / 59 / 38, Q4_1 40 / 38 / 28, Q5_0 36 / 34 / 21). Q8_K
     * quantization stays AVX2's: 4 Gvalues/s, one row per token against a
     * whole matrix of multiply-adds. */
    table.dot_q8a[HERD_GGML_TYPE_Q4_1] = f->avx512_vnni ? herd_dot_q4_1_q8a_vnni : herd_dot_q4_1_q8a_avx512;
    table.dot_q8a[HERD_GGML_TYPE_Q5_0] = f->avx512_vnni ? herd_dot_q5_0_q8a_vnni : herd_dot_q5_0_q8a_avx512;
    table.dot_q8a[HERD_GGML_TYPE_Q5_1] = f->avx512_vnni ? herd_dot_q5_1_q8a_vnni : herd_dot_q5_1_q8a_avx512;
    table.dot_q8a[HERD_GGML_TYPE_IQ4_NL] = f->avx512_vnni ? herd_dot_iq4_nl_q8a_vnni : herd_dot_iq4_nl_q8a_avx512;
    table.dot_q8k[HERD_GGML_TYPE_Q2_K] = f->avx512_vnni ? herd_dot_q2_k_q8k_vnni : herd_dot_q2_k_q8k_avx512;
    table.dot_q8k[HERD_GGML_TYPE_Q3_K] = f->avx512_vnni ? herd_dot_q3_k_q8k_vnni : herd_dot_q3_k_q8k_avx512;
    table.dot_q8k[HERD_GGML_TYPE_Q4_K] = f->avx512_vnni ? herd_dot_q4_k_q8k_vnni : herd_dot_q4_k_q8k_avx512;
    table.dot_q8k[HERD_GGML_TYPE_Q5_K] = f->avx512_vnni ? herd_dot_q5_k_q8k_vnni : herd_dot_q5_k_q8k_avx512;
    table.dot_q8k[HERD_GGML_TYPE_Q6_K] = f->avx512_vnni ? herd_dot_q6_k_q8k_vnni : herd_dot_q6_k_q8k_avx512;
    table.dot_f32 = dot_f32_avx512;
    table.dot_f16_f32 = dot_f16_f32_avx512;
    table.attn_block = attn_block_avx512;
    if (f->avx512_vnni) {
        table.gemm_packed = gemm_packed_vnni;
        table.gemm_kpack = herd_kpack_gemm_vnni;
        table.prefers_packed = true;
    }
}

const struct herd_kernels *herd_kernels_avx512(void) {
    if (!herd_cpu_features()->avx512) return NULL;
    pthread_once(&once, init_table);
    return &table;
}
