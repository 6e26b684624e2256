/* The compute kernels behind matmul and attention, as a table of function
 * pointers with one implementation per instruction set: a scalar reference
 * (`_ref`, always built, the definition of correct) and AVX2+FMA+F16C and
 * AVX-512 versions chosen at start-up from CPUID. Every SIMD kernel is tested
 * against its _ref twin (tests/kernels/test_kernels.c).
 *
 * Quantized weights are multiplied with activations quantized to 8 bits
 * using integer dot products: the 32-value types (Q8_0, Q4_0, Q4_1, Q5_0,
 * Q5_1) with struct herd_block_q8a, the K-quants (Q2_K..Q6_K) with Q8_K
 * (kquants.h); float weights (F32, F16, BF16) with float activations. */
#ifndef HERD_KERNELS_KERNELS_H
#define HERD_KERNELS_KERNELS_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/gguf.h"
#include "kernels/quant.h"

#define HERD_QK8A 32

/* An activation block: 32 values as int8 with a float scale. The scale's
 * value is ggml's fp16 one (so results agree with llama.cpp's), kept as a
 * float so the kernels need no conversion. */
struct herd_block_q8a {
    float d;
    /* -128 x the sum of qs: the offset term of dot products with weights
     * stored as unsigned bytes (Q8_0 + 128; Q4_0's + 8 term is this / 16),
     * premultiplied so that a kernel starts its sum from it with a plain
     * broadcast load */
    int32_t neg128_sum;
    int8_t qs[HERD_QK8A];
};

/* A block's Q4_0 offset term, -8 x the sum of qs: exact (neg128_sum is a
 * multiple of 128), and a plain shift (GCC and clang shift signed values
 * arithmetically). */
static inline int32_t herd_q8a_q4_offset(const struct herd_block_q8a *xb) { return xb->neg128_sum >> 4; }

/* Quantized matrices repacked at load for the tiled kernels: rows in groups
 * of HERD_PACK_ROWS; per group and per 32-column block one chunk holding the
 * group's 16 fp16 scales, then the weights as unsigned bytes interleaved 4
 * columns x 16 rows per 64-byte vector, the layout a 512-bit dot-product
 * instruction (vpdpbusd: 16 lanes, each summing 4 byte products) consumes:
 *   Q4_0: 4 vectors; byte 4r+i of vector j = the original qs[4j+i] of row r
 *         (low nibble: column 4j+i, high nibble: column 16+4j+i); value = nibble - 8
 *   Q8_0: 8 vectors; byte 4r+i of vector k = q[4k+i] of row r, + 128; value = byte - 128 */
#define HERD_PACK_ROWS       16
#define HERD_PACK_Q4_0_CHUNK (2 * HERD_PACK_ROWS + 4 * 64)
#define HERD_PACK_Q8_0_CHUNK (2 * HERD_PACK_ROWS + 8 * 64)

/* One KV head of one KV-cache block, as the attention kernel reads it.
 * K is [head_dim][bt] (transposed), V rows are v_stride elements apart.
 * For the 8-bit type each key's K vector and each V row carry one float
 * scale (value = int8 x scale). */
enum herd_attn_kv_type { HERD_ATTN_KV_F16 = 0, HERD_ATTN_KV_F32 = 1, HERD_ATTN_KV_Q8 = 2 };

struct herd_attn_kv {
    enum herd_attn_kv_type type;
    const void *k;
    const float *k_scale; /* [bt], Q8 only */
    const void *v;
    size_t v_stride;
    const float *v_scale; /* one per V row, v_scale_stride apart; Q8 only */
    size_t v_scale_stride;
    /* The region of the walk's next block (NULL: none), prefetched while
     * this one is computed, or next_bytes of it: kernels spread the
     * prefetches through their loops rather than issuing them in a burst. */
    const uint8_t *next;
    size_t next_bytes;
    /* Keys [0, first) of the block are masked out (where a sliding window
     * starts inside it; first < n, so some key is seen), and with softcap >
     * 0 every score s becomes softcap * tanh(s / softcap) before the softmax
     * (gemma2). 0 and 0: the plain causal kernel. */
    int first;
    float softcap;
};

/* Applies a view's first and softcap to a block's scores s[0, n) (scaled,
 * Q8's per-key scales included): masked keys get -inf. */
static inline void herd_attn_adjust_scores(const struct herd_attn_kv *kv, float *s, int n) {
    if (kv->softcap > 0.0f)
        for (int j = 0; j < n; j++) s[j] = kv->softcap * tanhf(s[j] / kv->softcap);
    for (int j = 0; j < kv->first && j < n; j++) s[j] = -INFINITY;
}

/* Scalar element access for attention tails and the reference kernel:
 * K[d][j] and V row j, column d, as floats (Q8: unscaled int8 value; the
 * callers apply the scales). */
float herd_attn_kv_k_at(const struct herd_attn_kv *kv, int d, int j, int bt);
float herd_attn_kv_v_at(const struct herd_attn_kv *kv, int j, int d);

/* Spreading the prefetch of the next block's region (into L2) through a
 * kernel's loop: issued in one burst before the block, the region's line
 * fetches queued up behind each other and the block's own loads waited on
 * them (16-sequence decode attention 5.2 -> 3.7 ms a pass spread through the
 * K loop). herd_attn_prefetch_per gives the lines per iteration of a loop of
 * n_parts iterations (0 without a next block), computed once per block;
 * herd_attn_prefetch_part then fetches iteration i's lines. */
static inline size_t herd_attn_prefetch_per(const struct herd_attn_kv *kv, size_t n_parts) {
    return kv->next ? ((kv->next_bytes + 63) / 64 + n_parts - 1) / n_parts : 0;
}

static inline void herd_attn_prefetch_part(const struct herd_attn_kv *kv, size_t per, size_t i) {
    /* no test inside the loop: GCC 12 deleted the whole loop with one (a
     * prefetch is not a side effect) */
    const size_t end = (i + 1) * per * 64 < kv->next_bytes ? (i + 1) * per * 64 : kv->next_bytes;
    for (size_t o = i * per * 64; o < end; o += 64) __builtin_prefetch(kv->next + o, 0, 1);
}

struct herd_kernels {
    const char *name;
    /* x[n] (n a multiple of 32) -> n/32 blocks: d = amax/127, q = round-half-even(x * 127/amax). */
    void (*quantize_row_q8a)(const float *x, struct herd_block_q8a *y, size_t n);
    /* x[n] (n a multiple of 256) -> n/256 Q8_K blocks (kquants.h). */
    void (*quantize_row_q8k)(const float *x, struct herd_block_q8_k *y, size_t n);
    /* Dot products of one weight row of n values with one activation row,
     * indexed by the weight's type: dot_q8a for the types whose activations
     * are Q8A blocks, dot_q8k for those taking Q8_K (herd_act_type_of tells
     * which); NULL elsewhere. */
    float (*dot_q8a[HERD_GGML_TYPE__COUNT])(const void *w, const struct herd_block_q8a *x, size_t n);
    float (*dot_q8k[HERD_GGML_TYPE__COUNT])(const void *w, const struct herd_block_q8_k *x, size_t n);
    float (*dot_f32)(const float *w, const float *x, size_t n);
    float (*dot_f16_f32)(const uint16_t *w, const float *x, size_t n);
    float (*dot_bf16_f32)(const uint16_t *w, const float *x, size_t n);
    /* Packed matmul for one group of 16 rows: y[t][0..16) for the n_tok
     * tokens whose activation rows start at x + t * x_stride (in blocks);
     * n_blocks chunks of the group start at w. type: Q8_0 or Q4_0. */
    void (*gemm_packed)(enum herd_ggml_type type, const uint8_t *w, size_t n_blocks, const struct herd_block_q8a *x,
                        size_t x_stride, size_t n_tok, float *y, size_t y_stride);
    /* Packed matmul for one group of 16 rows of the other quantized types
     * (kpack.h: Q2_K..Q6_K with Q8_K activations, Q4_1 / Q5_0 / Q5_1 /
     * IQ4_NL with Q8A), x the activation rows of the type's format. NULL:
     * the family has no tiled kernel for them (matmul then uses
     * herd_kpack_gemm_ref on a packed matrix, and the model does not pack). */
    void (*gemm_kpack)(enum herd_ggml_type type, const uint8_t *w, size_t n_blocks, const void *x, size_t x_stride,
                       size_t n_tok, float *y, size_t y_stride);
    /* Whether herd should repack quantized weights at load for this family. */
    bool prefers_packed;
    /* Attention over one KV block for the G query heads that share a KV
     * head: q [G][hd] (already scaled by 1/sqrt(hd)); kv that head's block;
     * the first n of the block's bt keys are valid (bt <= 16). Updates each
     * head's running max m[g], sum l[g] and unnormalised output acc[g][hd]:
     * the online softmax, one block at a time. */
    void (*attn_block)(const float *q, int G, int hd, const struct herd_attn_kv *kv, int bt, int n, float *m, float *l,
                       float *acc);
    /* y[i] += a * x[i] */
    void (*axpy_f32)(float a, const float *x, float *y, size_t n);
    void (*axpy_f16)(float a, const uint16_t *x, float *y, size_t n);
    /* g[i] = silu(g[i]) * u[i] = g / (1 + e^-g) * u: the SwiGLU gate. The
     * vector twins use the attention kernels' exp (relative error ~2e-7). */
    void (*silu_mul)(float *g, const float *u, size_t n);
    /* g[i] = gelu(g[i]) * u[i], GELU's tanh form 0.5 g (1 + tanh(sqrt(2/pi)
     * (g + 0.044715 g^3))), computed as g / (1 + e^-2z): gemma's gate. */
    void (*gelu_mul)(float *g, const float *u, size_t n);
    /* y[i] = x[i] as IEEE half, round to nearest even (the KV cache store) */
    void (*f32_to_f16)(const float *x, uint16_t *y, size_t n);
    /* y[i] = e^((x[i] - mx) * scale), the unnormalised softmax weights of a
     * sampler (scale = 1 / temperature > 0, mx >= every finite x[i]); x[i] =
     * -inf or NaN gives 0. Vector twins: relative error ~2e-7. */
    void (*softmax_weights)(const float *x, float mx, float scale, float *y, size_t n);
};

/* The activation format a weight type's integer dot products take. */
enum herd_act_type { HERD_ACT_F32 = 0, HERD_ACT_Q8A = 1, HERD_ACT_Q8K = 2 };

static inline enum herd_act_type herd_act_type_of(enum herd_ggml_type t) {
    switch (t) {
    case HERD_GGML_TYPE_Q8_0:
    case HERD_GGML_TYPE_Q4_0:
    case HERD_GGML_TYPE_Q4_1:
    case HERD_GGML_TYPE_Q5_0:
    case HERD_GGML_TYPE_Q5_1:
    case HERD_GGML_TYPE_IQ4_NL: return HERD_ACT_Q8A;
    case HERD_GGML_TYPE_Q2_K:
    case HERD_GGML_TYPE_Q3_K:
    case HERD_GGML_TYPE_Q4_K:
    case HERD_GGML_TYPE_Q5_K:
    case HERD_GGML_TYPE_Q6_K: return HERD_ACT_Q8K;
    default: return HERD_ACT_F32;
    }
}

const struct herd_kernels *herd_kernels_ref(void);
/* NULL when the processor (or HERD_CPU) does not allow the family. */
const struct herd_kernels *herd_kernels_avx2(void);
const struct herd_kernels *herd_kernels_avx512(void);
/* The scalar twin of gemm_packed, shared by families without their own. */
void herd_gemm_packed_ref(enum herd_ggml_type type, const uint8_t *w, size_t n_blocks, const struct herd_block_q8a *x,
                          size_t x_stride, size_t n_tok, float *y, size_t y_stride);

void herd_attn_block_ref(const float *q, int G, int hd, const struct herd_attn_kv *kv, int bt, int n, float *m,
                         float *l, float *acc);

/* The best family this processor runs, HERD_CPU's cap applied (dispatch.c). */
const struct herd_kernels *herd_kernels_best(void);

#endif
