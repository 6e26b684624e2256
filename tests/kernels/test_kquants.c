/* The K-quant and legacy Q4_1 / Q5_0 / Q5_1 kernels: dequantization
 * bit-exact with ggml's (vectors made with llama.cpp, tests/data/kquant),
 * Q8_K activations byte-identical to ggml's, each reference dot product
 * equal to the float64 sum of the dequantized operands, every SIMD twin
 * equal to its reference within the tolerance of test_kernels.c, and
 * ggml's own dot products on the same bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "base/cpu.h"
#include "base/rng.h"
#include "herd/gguf.h"
#include "kernels/kernels.h"
#include "kernels/kquants.h"
#include "kernels/kquants_simd.h"
#include "kernels/quant.h"
#include "test_util.h"

/* Relative tolerance for sums of per-block roundings (as test_kernels.c). */
#define DOT_RTOL 2e-5f

static const enum herd_ggml_type kTypes[] = {
    HERD_GGML_TYPE_Q4_1, HERD_GGML_TYPE_Q5_0, HERD_GGML_TYPE_Q5_1, HERD_GGML_TYPE_Q2_K,   HERD_GGML_TYPE_Q3_K,
    HERD_GGML_TYPE_Q4_K, HERD_GGML_TYPE_Q5_K, HERD_GGML_TYPE_Q6_K, HERD_GGML_TYPE_IQ4_NL,
};
#define N_TYPES (sizeof kTypes / sizeof kTypes[0])

static const struct herd_ggml_type_info *info(enum herd_ggml_type t) { return herd_ggml_type_info(t); }

/* A random finite fp16 of magnitude in about [2^-12, 1], either sign. */
static uint16_t random_scale(struct herd_rng *r) {
    const float mag = ldexpf((float)(1.0 + herd_rng_uniform(r)), -(int)(herd_rng_u64(r) % 12));
    return herd_fp32_to_fp16(herd_rng_u64(r) & 1 ? -mag : mag);
}

/* Sane fp16 scale fields (d, and m / dmin) for the block at b. */
static void sane_scales(struct herd_rng *r, enum herd_ggml_type t, uint8_t *b) {
    switch (t) {
    case HERD_GGML_TYPE_Q4_1:
        ((struct herd_block_q4_1 *)b)->d = random_scale(r), ((struct herd_block_q4_1 *)b)->m = random_scale(r);
        break;
    case HERD_GGML_TYPE_Q5_0: ((struct herd_block_q5_0 *)b)->d = random_scale(r); break;
    case HERD_GGML_TYPE_IQ4_NL: ((struct herd_block_iq4_nl *)b)->d = random_scale(r); break;
    case HERD_GGML_TYPE_Q5_1:
        ((struct herd_block_q5_1 *)b)->d = random_scale(r), ((struct herd_block_q5_1 *)b)->m = random_scale(r);
        break;
    case HERD_GGML_TYPE_Q2_K:
        ((struct herd_block_q2_k *)b)->d = random_scale(r), ((struct herd_block_q2_k *)b)->dmin = random_scale(r);
        break;
    case HERD_GGML_TYPE_Q3_K: ((struct herd_block_q3_k *)b)->d = random_scale(r); break;
    case HERD_GGML_TYPE_Q4_K:
        ((struct herd_block_q4_k *)b)->d = random_scale(r), ((struct herd_block_q4_k *)b)->dmin = random_scale(r);
        break;
    case HERD_GGML_TYPE_Q5_K:
        ((struct herd_block_q5_k *)b)->d = random_scale(r), ((struct herd_block_q5_k *)b)->dmin = random_scale(r);
        break;
    case HERD_GGML_TYPE_Q6_K: ((struct herd_block_q6_k *)b)->d = random_scale(r); break;
    default: fail_msg("no random blocks for type %d", (int)t);
    }
}

/* n_blocks blocks of random bits with sane fp16 scale fields. */
static uint8_t *random_blocks(struct herd_rng *r, enum herd_ggml_type t, size_t n_blocks) {
    const size_t bb = info(t)->block_bytes;
    uint8_t *w = malloc(n_blocks * bb);
    for (size_t i = 0; i < n_blocks * bb; i++) w[i] = (uint8_t)herd_rng_u64(r);
    for (size_t i = 0; i < n_blocks; i++) sane_scales(r, t, w + i * bb);
    return w;
}

static void fill(struct herd_rng *r, float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = (float)herd_rng_normal(r) * scale;
}

/* The activation row of n values in the format type t takes, from x. */
struct act {
    struct herd_block_q8a *a;
    struct herd_block_q8_k *k;
};

static struct act quantize_act(const struct herd_kernels *k, enum herd_ggml_type t, const float *x, size_t n) {
    struct act a = {0};
    if (herd_act_type_of(t) == HERD_ACT_Q8K) {
        a.k = malloc(n / HERD_QK_K * sizeof *a.k);
        k->quantize_row_q8k(x, a.k, n);
    } else {
        a.a = malloc(n / HERD_QK8A * sizeof *a.a);
        k->quantize_row_q8a(x, a.a, n);
    }
    return a;
}

static float dot(const struct herd_kernels *k, enum herd_ggml_type t, const void *w, const struct act *a, size_t n) {
    return a->k ? k->dot_q8k[t](w, a->k, n) : k->dot_q8a[t](w, a->a, n);
}

/* The activation row's values as the kernels see them (q x d). */
static void act_values(const struct act *a, size_t n, double *v) {
    for (size_t i = 0; i < n; i++)
        v[i] = a->k ? (double)a->k[i / HERD_QK_K].qs[i % HERD_QK_K] * a->k[i / HERD_QK_K].d
                    : (double)a->a[i / HERD_QK8A].qs[i % HERD_QK8A] * a->a[i / HERD_QK8A].d;
}

/* ------------------------------------------------------------ properties that need no data */

/* ref dot == float64 sum of the dequantized weight times the activations, to
 * the per-block float rounding: checks the unpacking of every bit field in
 * the dot against the dequantizer (itself checked against ggml below). */
static void test_ref_dot_is_dequantized_dot(void **state) {
    (void)state;
    const struct herd_kernels *ref = herd_kernels_ref();
    struct herd_rng r;
    herd_rng_init(&r, 5);
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const enum herd_ggml_type t = kTypes[ti];
        const size_t n = 4 * 256;
        uint8_t *w = random_blocks(&r, t, n / info(t)->block_elems);
        float *x = malloc(n * sizeof *x), *wf = malloc(n * sizeof *wf);
        double *xv = malloc(n * sizeof *xv);
        fill(&r, x, n, 2.0f);
        struct act a = quantize_act(ref, t, x, n);
        act_values(&a, n, xv);
        herd_dequantize_row_ref(t, w, wf, n);
        double want = 0, mag = 0;
        for (size_t i = 0; i < n; i++) want += (double)wf[i] * xv[i], mag += fabs((double)wf[i] * xv[i]);
        const double got = dot(ref, t, w, &a, n);
        if (!(fabs(got - want) <= 1e-5 * (mag + 1e-30)))
            fail_msg("%s: ref dot %.9g, dequantized dot %.9g (magnitude %.3g)", info(t)->name, got, want, mag);
        free(w), free(x), free(wf), free(xv), free(a.a), free(a.k);
    }
}

static void test_q8k_properties(void **state) {
    (void)state;
    struct herd_rng r;
    herd_rng_init(&r, 9);
    const size_t n = 4 * HERD_QK_K;
    float *x = malloc(n * sizeof *x);
    fill(&r, x, n, 1.5f);
    memset(x + HERD_QK_K, 0, HERD_QK_K * sizeof *x); /* an all-zero block */
    x[2 * HERD_QK_K + 7] = -40.0f;                   /* a negative extreme */
    struct herd_block_q8_k *y = malloc(4 * sizeof *y);
    memset(y, 0xff, 4 * sizeof *y);
    herd_quantize_row_q8k_ref(x, y, n);
    assert_true(y[1].d == 0.0f);
    for (int j = 0; j < HERD_QK_K; j++) assert_int_equal(y[1].qs[j], 0);
    assert_int_equal(y[2].qs[7], -127);
    for (size_t b = 0; b < 4; b++) {
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += y[b].qs[16 * g + j];
            assert_int_equal(y[b].bsums[g], s);
        }
        for (int j = 0; j < HERD_QK_K; j++) {
            const float back = (float)y[b].qs[j] * y[b].d;
            if (!(fabsf(back - x[b * HERD_QK_K + (size_t)j]) <= 0.5001f * fabsf(y[b].d)))
                fail_msg("q8k block %zu value %d: %g back as %g", b, j, x[b * HERD_QK_K + (size_t)j], back);
        }
    }
    free(x), free(y);
}

/* Every SIMD family against the reference, several row lengths. */
static void compare_family(const struct herd_kernels *k) {
    const struct herd_kernels *ref = herd_kernels_ref();
    struct herd_rng r;
    herd_rng_init(&r, 13);
    const size_t superblocks[] = {1, 3, 11, 17};
    for (size_t si = 0; si < sizeof superblocks / sizeof superblocks[0]; si++) {
        const size_t n = superblocks[si] * HERD_QK_K;
        float *x = malloc(n * sizeof *x);
        fill(&r, x, n, 3.0f);
        x[5] = 0.0f;
        if (n > HERD_QK_K) memset(x + HERD_QK_K, 0, HERD_QK_K * sizeof *x); /* a zero super-block */
        struct herd_block_q8_k *ka = malloc(n / HERD_QK_K * sizeof *ka), *kb = malloc(n / HERD_QK_K * sizeof *kb);
        memset(ka, 0xff, n / HERD_QK_K * sizeof *ka);
        memset(kb, 0xff, n / HERD_QK_K * sizeof *kb);
        ref->quantize_row_q8k(x, ka, n);
        k->quantize_row_q8k(x, kb, n);
        if (memcmp(ka, kb, n / HERD_QK_K * sizeof *ka) != 0)
            fail_msg("%s quantize_row_q8k differs at n=%zu", k->name, n);
        for (size_t ti = 0; ti < N_TYPES; ti++) {
            const enum herd_ggml_type t = kTypes[ti];
            /* the 32-value types also at lengths that are not multiples of 256 */
            const size_t len = herd_act_type_of(t) == HERD_ACT_Q8A ? n - 32 * (si % 2) : n;
            if (len == 0) continue;
            uint8_t *w = random_blocks(&r, t, len / info(t)->block_elems);
            struct act a = quantize_act(ref, t, x, len);
            float *wf = malloc(len * sizeof *wf);
            herd_dequantize_row_ref(t, w, wf, len);
            float mag = 0;
            for (size_t i = 0; i < len; i++) mag += fabsf(wf[i] * x[i]);
            const float got = dot(k, t, w, &a, len), want = dot(ref, t, w, &a, len);
            if (!(fabsf(got - want) <= DOT_RTOL * (mag + 1.0f)))
                fail_msg("%s dot_%s n=%zu: %.9g vs ref %.9g", k->name, info(t)->name, len, got, want);
            free(w), free(wf), free(a.a), free(a.k);
        }
        free(x), free(ka), free(kb);
    }
}

static void test_avx2_matches_ref(void **state) {
    (void)state;
    const struct herd_kernels *k = herd_kernels_avx2();
    if (!k) skip();
    compare_family(k);
}

static void test_avx512_matches_ref(void **state) {
    (void)state;
    const struct herd_kernels *k = herd_kernels_avx512();
    if (!k) skip();
    compare_family(k);
}

/* ------------------------------------------------------------ every SIMD variant by name, extreme values */

typedef float (*dot_q8a_fn)(const void *, const struct herd_block_q8a *, size_t);
typedef float (*dot_q8k_fn)(const void *, const struct herd_block_q8_k *, size_t);

/* A family's kernels by name: a processor with VNNI gets only the _vnni
 * AVX-512 kernels from its table, but runs the plain ones too. */
struct variant {
    const char *name;
    bool (*available)(void);
    void (*quantize_q8k)(const float *, struct herd_block_q8_k *, size_t);
    dot_q8a_fn q8a[HERD_GGML_TYPE__COUNT];
    dot_q8k_fn q8k[HERD_GGML_TYPE__COUNT];
    herd_dot_q8k_rows_fn rows[HERD_GGML_TYPE__COUNT];
};

static bool has_avx2(void) { return herd_kernels_avx2() != NULL; }
static bool has_avx512(void) { return herd_kernels_avx512() != NULL; }
static bool has_vnni(void) { return herd_kernels_avx512() && herd_cpu_features()->avx512_vnni; }

#define VARIANT(FAM, AVAILABLE, QUANTIZE)                                                                              \
    {                                                                                                                  \
#FAM, AVAILABLE, QUANTIZE,                                                                                     \
            {[HERD_GGML_TYPE_Q4_1] = herd_dot_q4_1_q8a_##FAM,                                                          \
            [HERD_GGML_TYPE_Q5_0] = herd_dot_q5_0_q8a_##FAM,                                                           \
            [HERD_GGML_TYPE_Q5_1] = herd_dot_q5_1_q8a_##FAM, [HERD_GGML_TYPE_IQ4_NL] = herd_dot_iq4_nl_q8a_##FAM, },   \
            {[HERD_GGML_TYPE_Q2_K] = herd_dot_q2_k_q8k_##FAM, [HERD_GGML_TYPE_Q3_K] = herd_dot_q3_k_q8k_##FAM,         \
                                                              [HERD_GGML_TYPE_Q4_K] = herd_dot_q4_k_q8k_##FAM,         \
                                                              [HERD_GGML_TYPE_Q5_K] = herd_dot_q5_k_q8k_##FAM,         \
                                                              [HERD_GGML_TYPE_Q6_K] = herd_dot_q6_k_q8k_##FAM, }, {    \
            [HERD_GGML_TYPE_Q2_K] = herd_dot_q2_k_q8k_rows_##FAM,                                                      \
            [HERD_GGML_TYPE_Q3_K] = herd_dot_q3_k_q8k_rows_##FAM,                                                      \
            [HERD_GGML_TYPE_Q4_K] = herd_dot_q4_k_q8k_rows_##FAM,                                                      \
            [HERD_GGML_TYPE_Q5_K] = herd_dot_q5_k_q8k_rows_##FAM,                                                      \
            [HERD_GGML_TYPE_Q6_K] = herd_dot_q6_k_q8k_rows_##FAM,                                                      \
        }                                                                                                              \
    }

static const struct variant kVariants[] = {
    VARIANT(avx2, has_avx2, herd_quantize_row_q8k_avx2),
    VARIANT(avx512, has_avx512, NULL),
    VARIANT(vnni, has_vnni, NULL),
};
#define N_VARIANTS (sizeof kVariants / sizeof kVariants[0])

/* Weight bytes: 0 random, 1 all ones (every quant at its maximum, 6-bit
 * scales and mins 63, Q3_K's third bits set, Q6_K's scales -1), 2 all zeros
 * (Q3_K's quants at -4, Q6_K's at -32), 3 bytes 0x7f and 0x80 by turns
 * (Q6_K's scales 127 and -128); scale fields sane in all. */
static uint8_t *pattern_blocks(struct herd_rng *r, enum herd_ggml_type t, size_t n_blocks, int pattern) {
    if (pattern == 0) return random_blocks(r, t, n_blocks);
    const size_t bb = info(t)->block_bytes;
    uint8_t *w = malloc(n_blocks * bb);
    for (size_t i = 0; i < n_blocks * bb; i++) w[i] = pattern == 1 ? 0xff : pattern == 2 ? 0x00 : i % 2 ? 0x80 : 0x7f;
    for (size_t i = 0; i < n_blocks; i++) sane_scales(r, t, w + i * bb);
    return w;
}

/* Activations of n values for type t: 0 quantized from random floats
 * (with a zero block), 1 all 127, 2 all -127, 3 +-127 by turns, 4 zero. */
static struct act pattern_act(struct herd_rng *r, enum herd_ggml_type t, size_t n, int pattern) {
    struct act a = {0};
    const bool k_type = herd_act_type_of(t) == HERD_ACT_Q8K;
    if (pattern == 0) {
        float *x = malloc(n * sizeof *x);
        fill(r, x, n, 2.0f);
        memset(x, 0, (k_type ? HERD_QK_K : HERD_QK8A) * sizeof *x);
        a = quantize_act(herd_kernels_ref(), t, x, n);
        free(x);
        return a;
    }
    int8_t *q = malloc(n);
    for (size_t i = 0; i < n; i++)
        q[i] = (int8_t)(pattern == 1 ? 127 : pattern == 2 ? -127 : pattern == 3 ? (i % 2 ? -127 : 127) : 0);
    if (k_type) {
        a.k = malloc(n / HERD_QK_K * sizeof *a.k);
        for (size_t b = 0; b < n / HERD_QK_K; b++) {
            a.k[b].d = 0.0123f;
            memcpy(a.k[b].qs, q + b * HERD_QK_K, HERD_QK_K);
            for (int g = 0; g < HERD_QK_K / 16; g++) {
                int sum = 0;
                for (int j = 0; j < 16; j++) sum += a.k[b].qs[16 * g + j];
                a.k[b].bsums[g] = (int16_t)sum;
            }
        }
    } else {
        a.a = malloc(n / HERD_QK8A * sizeof *a.a);
        for (size_t b = 0; b < n / HERD_QK8A; b++) {
            a.a[b].d = 0.0123f;
            memcpy(a.a[b].qs, q + b * HERD_QK8A, HERD_QK8A);
            int32_t sum = 0;
            for (int j = 0; j < HERD_QK8A; j++) sum += a.a[b].qs[j];
            a.a[b].neg128_sum = -128 * sum;
        }
    }
    free(q);
    return a;
}

/* Each variant's dot products against the reference at odd lengths (the
 * legacy kernels take eight blocks per step and finish one at a time; the
 * K kernels one super-block at a time), on random and extreme operands. */
static void test_simd_variants_match_ref(void **state) {
    (void)state;
    const struct herd_kernels *ref = herd_kernels_ref();
    struct herd_rng r;
    herd_rng_init(&r, 17);
    const size_t legacy_blocks[] = {1, 7, 8, 9, 31, 33, 129}, k_blocks[] = {1, 2, 3, 5, 17};
    int checked = 0;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const enum herd_ggml_type t = kTypes[ti];
        const bool k_type = herd_act_type_of(t) == HERD_ACT_Q8K;
        const size_t n_lengths =
            k_type ? sizeof k_blocks / sizeof k_blocks[0] : sizeof legacy_blocks / sizeof legacy_blocks[0];
        for (size_t li = 0; li < n_lengths; li++) {
            const size_t nb = k_type ? k_blocks[li] : legacy_blocks[li], n = nb * info(t)->block_elems;
            for (int wp = 0; wp < 4; wp++)
                for (int xp = 0; xp < 5; xp++) {
                    uint8_t *w = pattern_blocks(&r, t, nb, wp);
                    struct act a = pattern_act(&r, t, n, xp);
                    float *wf = malloc(n * sizeof *wf);
                    double *xv = malloc(n * sizeof *xv);
                    herd_dequantize_row_ref(t, w, wf, n);
                    act_values(&a, n, xv);
                    double mag = 0;
                    for (size_t i = 0; i < n; i++) mag += fabs((double)wf[i] * xv[i]);
                    const float want = dot(ref, t, w, &a, n);
                    for (size_t v = 0; v < N_VARIANTS; v++) {
                        if (!kVariants[v].available()) continue;
                        const float got = k_type ? kVariants[v].q8k[t](w, a.k, n) : kVariants[v].q8a[t](w, a.a, n);
                        if (!(fabsf(got - want) <= DOT_RTOL * ((float)mag + 1.0f)))
                            fail_msg("%s dot_%s n=%zu weights %d activations %d: %.9g vs ref %.9g", kVariants[v].name,
                                     info(t)->name, n, wp, xp, got, want);
                        checked++;
                    }
                    free(w), free(wf), free(xv), free(a.a), free(a.k);
                }
        }
    }
    if (checked == 0) skip();
}

/* The multi-token kernels give each token the single-token kernel's bits,
 * for every token count (tiles of 4, 2, 1), with strides between the
 * activation rows and the outputs; the outputs in between stay untouched. */
static void test_rows_match_single(void **state) {
    (void)state;
    struct herd_rng r;
    herd_rng_init(&r, 19);
    const size_t nb = 3, n = nb * HERD_QK_K, x_stride = nb + 1, y_stride = 3, max_tok = 9;
    int checked = 0;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const enum herd_ggml_type t = kTypes[ti];
        if (herd_act_type_of(t) != HERD_ACT_Q8K) continue;
        uint8_t *w = random_blocks(&r, t, nb);
        float *x = malloc(max_tok * x_stride * HERD_QK_K * sizeof *x);
        fill(&r, x, max_tok * x_stride * HERD_QK_K, 1.0f);
        struct herd_block_q8_k *xk = malloc(max_tok * x_stride * sizeof *xk);
        herd_quantize_row_q8k_ref(x, xk, max_tok * x_stride * HERD_QK_K);
        for (size_t v = 0; v < N_VARIANTS; v++) {
            if (!kVariants[v].available()) continue;
            for (size_t n_tok = 1; n_tok <= max_tok; n_tok++) {
                float y[9 * 3];
                for (size_t i = 0; i < sizeof y / sizeof y[0]; i++) y[i] = NAN;
                kVariants[v].rows[t](w, xk, x_stride, n_tok, n, y, y_stride);
                for (size_t tok = 0; tok < max_tok; tok++) {
                    if (tok >= n_tok) {
                        assert_true(isnan(y[tok * y_stride]));
                        continue;
                    }
                    const float want = kVariants[v].q8k[t](w, xk + tok * x_stride, n);
                    if (memcmp(&y[tok * y_stride], &want, sizeof want) != 0)
                        fail_msg("%s rows_%s token %zu of %zu: %.9g, single %.9g", kVariants[v].name, info(t)->name,
                                 tok, n_tok, y[tok * y_stride], want);
                    assert_true(isnan(y[tok * y_stride + 1]) && isnan(y[tok * y_stride + 2]));
                    checked++;
                }
            }
        }
        free(w), free(x), free(xk);
    }
    if (checked == 0) skip();
}

/* The tables' K kernels have multi-token twins (matmul's batch path), the
 * reference ones none. */
static void test_rows_of_tables(void **state) {
    (void)state;
    const struct herd_kernels *fams[] = {herd_kernels_ref(), herd_kernels_avx2(), herd_kernels_avx512()};
    for (size_t f = 0; f < 3; f++) {
        if (!fams[f]) continue;
        for (size_t ti = 0; ti < N_TYPES; ti++) {
            const enum herd_ggml_type t = kTypes[ti];
            if (herd_act_type_of(t) != HERD_ACT_Q8K) continue;
            const herd_dot_q8k_rows_fn rows = herd_dot_q8k_rows_of(fams[f]->dot_q8k[t]);
            if (f == 0)
                assert_null(rows);
            else
                assert_non_null(rows);
        }
    }
}

/* SIMD Q8_K quantization byte for byte against the reference on the edge
 * cases: ties of magnitude (the first wins: sign of d), values halfway
 * between integers (to even), a negative extreme, subnormal maxima (the
 * scale overflows to infinity), an infinity, NaNs (never the maximum, 0
 * when quantized), zeros and negative zeros. */
static void test_q8k_edge_cases(void **state) {
    (void)state;
    enum { BLOCKS = 10 };
    const size_t n = BLOCKS * HERD_QK_K;
    struct herd_rng r;
    herd_rng_init(&r, 23);
    float *x = malloc(n * sizeof *x);
    fill(&r, x, n, 0.25f);
    float *b = x;
    b[3] = 2.0f, b[100] = -2.0f; /* tie, positive first */
    b += HERD_QK_K;
    b[3] = -2.0f, b[100] = 2.0f; /* tie, negative first */
    b += HERD_QK_K;
    b[0] = -127.0f; /* iscale 1: halves round to even */
    for (int j = 1; j < HERD_QK_K; j++) b[j] = (float)(j % 64 - 32) + 0.5f;
    b += HERD_QK_K;
    b[0] = 127.0f; /* iscale -1 */
    for (int j = 1; j < HERD_QK_K; j++) b[j] = (float)(j % 64 - 32) - 0.5f;
    b += HERD_QK_K;
    for (int j = 0; j < HERD_QK_K; j++) b[j] = (float)(j % 5) * 1e-41f; /* subnormal */
    b += HERD_QK_K;
    b[10] = INFINITY;
    b += HERD_QK_K;
    b[0] = NAN, b[77] = -NAN;
    b += HERD_QK_K;
    memset(b, 0, HERD_QK_K * sizeof *b);
    b += HERD_QK_K;
    for (int j = 0; j < HERD_QK_K; j++) b[j] = -0.0f;
    b += HERD_QK_K;
    for (int j = 0; j < HERD_QK_K; j++) b[j] *= 1e37f; /* large */
    struct herd_block_q8_k *want = malloc(BLOCKS * sizeof *want), *got = malloc(BLOCKS * sizeof *got);
    herd_quantize_row_q8k_ref(x, want, n);
    const struct herd_kernels *tables[] = {herd_kernels_avx2(), herd_kernels_avx512()};
    int checked = 0;
    for (size_t f = 0; f < 2; f++) {
        if (!tables[f]) continue;
        memset(got, 0xff, BLOCKS * sizeof *got);
        tables[f]->quantize_row_q8k(x, got, n);
        for (size_t i = 0; i < BLOCKS; i++)
            if (memcmp(&got[i], &want[i], sizeof want[i]) != 0)
                fail_msg("%s quantize_row_q8k block %zu differs from the reference", tables[f]->name, i);
        checked++;
    }
    free(x), free(want), free(got);
    if (checked == 0) skip();
}

/* ------------------------------------------------------------ against llama.cpp's vectors (tests/data/kquant) */

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The vector file for type t and kind, or NULL (with a note) when absent. */
static uint8_t *read_vectors(const char *kind, enum herd_ggml_type t, const char magic[4], size_t *size) {
    char rel[128], path[512];
    snprintf(rel, sizeof rel, "kquant/%s-%s.bin", kind, info(t)->name);
    test_data_path(rel, path, sizeof path);
    if (!test_path_exists(path)) return NULL;
    uint8_t *p = test_read_file(path, size);
    if (*size < 16 || memcmp(p, magic, 4) != 0 || rd32(p + 4) != 1 || rd32(p + 8) != (uint32_t)t)
        fail_msg("%s: bad header", path);
    return p;
}

static void test_dequantize_matches_ggml(void **state) {
    (void)state;
    int checked = 0;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const enum herd_ggml_type t = kTypes[ti];
        size_t size;
        uint8_t *p = read_vectors("dequant", t, "HKQD", &size);
        if (!p) continue;
        const size_t nb = rd32(p + 12), bb = info(t)->block_bytes, n = nb * info(t)->block_elems;
        assert_int_equal(size, 16 + nb * bb + n * 4);
        float *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
        memcpy(want, p + 16 + nb * bb, n * 4);
        herd_dequantize_row_ref(t, p + 16, got, n);
        for (size_t i = 0; i < n; i++)
            if (memcmp(&got[i], &want[i], 4) != 0)
                fail_msg("%s element %zu: herd %.9g, ggml %.9g", info(t)->name, i, got[i], want[i]);
        free(want), free(got), free(p);
        checked++;
    }
    if (checked == 0) skip();
    assert_int_equal(checked, N_TYPES);
}

static void test_q8k_matches_ggml(void **state) {
    (void)state;
    char path[512];
    test_data_path("kquant/q8k.bin", path, sizeof path);
    if (!test_path_exists(path)) skip();
    size_t size;
    uint8_t *p = test_read_file(path, &size);
    assert_memory_equal(p, "HKQ8", 4);
    const size_t n = rd32(p + 8), nb = n / HERD_QK_K;
    assert_int_equal(size, 12 + n * 4 + nb * sizeof(struct herd_block_q8_k));
    float *x = malloc(n * sizeof *x);
    memcpy(x, p + 12, n * 4);
    struct herd_block_q8_k *y = malloc(nb * sizeof *y);
    herd_quantize_row_q8k_ref(x, y, n);
    for (size_t b = 0; b < nb; b++)
        if (memcmp(&y[b], p + 12 + n * 4 + b * sizeof *y, sizeof *y) != 0)
            fail_msg("Q8_K block %zu differs from ggml's", b);
    free(x), free(y), free(p);
}

/* ggml's vec_dot on its own quantized activations against herd's kernels on
 * the same bytes: the same integers, so equal within the float-sum order. */
static void test_dot_matches_ggml(void **state) {
    (void)state;
    int checked = 0;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const enum herd_ggml_type t = kTypes[ti];
        size_t size;
        uint8_t *p = read_vectors("dot", t, "HKDT", &size);
        if (!p) continue;
        const size_t n = rd32(p + 12), cases = rd32(p + 16);
        const bool k_type = herd_act_type_of(t) == HERD_ACT_Q8K;
        /* ggml's activation blocks: Q8_K, or Q8_0 (fp16 d + 32) / Q8_1 (fp16 d, fp16 s + 32) */
        const size_t wbytes = n / info(t)->block_elems * info(t)->block_bytes;
        const size_t abb = k_type ? sizeof(struct herd_block_q8_k)
                                  : (t == HERD_GGML_TYPE_Q5_0 || t == HERD_GGML_TYPE_IQ4_NL ? 34 : 36);
        const size_t abytes = n / (k_type ? HERD_QK_K : 32) * abb;
        const size_t per = n * 4 + wbytes + abytes + 4;
        assert_int_equal(size, 20 + cases * per);
        for (size_t c = 0; c < cases; c++) {
            const uint8_t *q = p + 20 + c * per;
            const uint8_t *w = q + n * 4, *ab = w + wbytes;
            float want;
            memcpy(&want, ab + abytes, 4);
            struct act a = {0};
            if (k_type) {
                a.k = malloc(abytes);
                memcpy(a.k, ab, abytes);
            } else { /* the same int8 values with herd's f32 scale and sum term */
                a.a = malloc(n / 32 * sizeof *a.a);
                for (size_t b = 0; b < n / 32; b++) {
                    const uint8_t *blk = ab + b * abb;
                    a.a[b].d = herd_fp16_to_fp32((uint16_t)(blk[0] | blk[1] << 8));
                    memcpy(a.a[b].qs, blk + abb - 32, 32);
                    int32_t s = 0;
                    for (int j = 0; j < 32; j++) s += a.a[b].qs[j];
                    a.a[b].neg128_sum = -128 * s;
                }
            }
            float *wf = malloc(n * sizeof *wf);
            herd_dequantize_row_ref(t, w, wf, n);
            float mag = 0, xf;
            for (size_t i = 0; i < n; i++) memcpy(&xf, q + 4 * i, 4), mag += fabsf(wf[i] * xf);
            /* Q8_1's s is d x sum rounded to fp16, herd's sum term is exact: a
             * little looser for Q4_1 / Q5_1 */
            const float tol =
                (k_type || t == HERD_GGML_TYPE_Q5_0 || t == HERD_GGML_TYPE_IQ4_NL ? DOT_RTOL : 1e-3f) * (mag + 1.0f);
            const struct herd_kernels *fams[] = {herd_kernels_ref(), herd_kernels_avx2(), herd_kernels_avx512()};
            for (size_t f = 0; f < 3; f++) {
                if (!fams[f]) continue;
                const float got = dot(fams[f], t, w, &a, n);
                if (!(fabsf(got - want) <= tol))
                    fail_msg("%s %s case %zu: herd %.9g, ggml %.9g", fams[f]->name, info(t)->name, c, got, want);
            }
            free(wf), free(a.a), free(a.k);
        }
        free(p);
        checked++;
    }
    if (checked == 0) skip();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_dot_is_dequantized_dot),
        cmocka_unit_test(test_q8k_properties),
        cmocka_unit_test(test_avx2_matches_ref),
        cmocka_unit_test(test_avx512_matches_ref),
        cmocka_unit_test(test_dequantize_matches_ggml),
        cmocka_unit_test(test_q8k_matches_ggml),
        cmocka_unit_test(test_dot_matches_ggml),
        cmocka_unit_test(test_simd_variants_match_ref),
        cmocka_unit_test(test_rows_match_single),
        cmocka_unit_test(test_rows_of_tables),
        cmocka_unit_test(test_q8k_edge_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
