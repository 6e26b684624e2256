/* The packed layouts and tiled kernels of kpack.h: for every type, matmul
 * through the packed path of every family (ref, AVX2's fallback to the
 * scalar twin, AVX-512 VNNI where present) against the row-by-row
 * reference dot products, for every token count 1..27 (all tile shapes and
 * their mixes) and past a token chunk (70); outputs poisoned with NaN. A
 * token's result must be bit-identical whatever the batch, and the SIMD
 * tiles' floats the scalar twin's. The K types are even the row-by-row
 * reference's floats exactly (kpack.h says why). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/pool.h"
#include "base/rng.h"
#include "kernels/kernels.h"
#include "kernels/kpack.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"

/* Relative tolerance for sums of up to ~4k products in float (as in
 * test_kernels.c): the Q8A types' tiles fuse the per-block multiply-add. */
#define DOT_RTOL 2e-5f

static const enum herd_ggml_type types[] = {
    HERD_GGML_TYPE_Q4_K, HERD_GGML_TYPE_Q5_K, HERD_GGML_TYPE_Q6_K, HERD_GGML_TYPE_Q3_K,   HERD_GGML_TYPE_Q2_K,
    HERD_GGML_TYPE_Q5_0, HERD_GGML_TYPE_Q5_1, HERD_GGML_TYPE_Q4_1, HERD_GGML_TYPE_IQ4_NL,
};
#define N_TYPES (sizeof types / sizeof types[0])

/* Where a block of type keeps its fp16 scale(s): d, and dmin or m (-1: none). */
static void scale_fields(enum herd_ggml_type t, int *d, int *d2) {
    *d2 = -1;
    switch (t) {
    case HERD_GGML_TYPE_Q4_K:
    case HERD_GGML_TYPE_Q5_K:
    case HERD_GGML_TYPE_Q5_1:
    case HERD_GGML_TYPE_Q4_1: *d = 0, *d2 = 2; break;
    case HERD_GGML_TYPE_Q6_K: *d = 208; break;
    case HERD_GGML_TYPE_Q3_K: *d = 108; break;
    case HERD_GGML_TYPE_Q2_K: *d = 80, *d2 = 82; break;
    default: *d = 0;
    }
}

/* A rows x cols matrix of random blocks: every bit pattern of the quants,
 * scales and mins is valid, so random bytes reach the extremes (Q6_K's
 * scale -128, all-ones quants) that quantized weights rarely do; the fp16
 * scales are set to finite values of either sign. */
static uint8_t *random_matrix(struct herd_rng *r, enum herd_ggml_type t, size_t rows, size_t cols, size_t *row_bytes) {
    uint64_t ne[2] = {cols, rows}, bytes;
    struct herd_error err;
    assert_int_equal(herd_ggml_tensor_nbytes(t, 2, ne, NULL, &bytes, &err), HERD_OK);
    uint8_t *w = malloc(bytes);
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)herd_rng_u64(r);
    const size_t bc = herd_kpack_block_cols(t), bb = (size_t)bytes / rows / (cols / bc);
    int d, d2;
    scale_fields(t, &d, &d2);
    for (size_t b = 0; b < bytes / bb; b++) {
        const uint16_t h = herd_fp32_to_fp16((float)(herd_rng_uniform(r) - 0.5) * 0.02f);
        memcpy(w + b * bb + d, &h, 2);
        if (d2 >= 0) {
            const uint16_t h2 = herd_fp32_to_fp16((float)(herd_rng_uniform(r) - 0.5) * 0.02f);
            memcpy(w + b * bb + d2, &h2, 2);
        }
    }
    *row_bytes = (size_t)bytes / rows;
    return w;
}

/* Activations: token 0 all zeros (a Q8_K block with d = 0), token 1 large,
 * the rest normal. */
static void fill_activations(struct herd_rng *r, float *x, size_t n_tok, size_t cols) {
    for (size_t t = 0; t < n_tok; t++)
        for (size_t c = 0; c < cols; c++)
            x[t * cols + c] = t == 0 ? 0.0f : (float)herd_rng_normal(r) * (t == 1 ? 300.0f : 1.0f);
}

static void test_sizes(void **state) {
    (void)state;
    for (size_t i = 0; i < N_TYPES; i++) {
        const size_t bc = herd_kpack_block_cols(types[i]), chunk = herd_kpack_chunk_bytes(types[i]);
        assert_true(bc == 32 || bc == 256);
        assert_int_equal(herd_kpack_bytes(types[i], 48, 4 * bc), 3 * 4 * chunk);
        assert_int_equal(herd_kpack_bytes(types[i], 40, 4 * bc), 0);                     /* rows not whole groups */
        if (bc == 256) assert_int_equal(herd_kpack_bytes(types[i], 48, 4 * bc + 32), 0); /* smollm's 576 */
        /* the same bytes per row as the file, but for what the K types spend on
         * byte-wide scales (and Q6_K on whole bytes per weight) */
        uint64_t ne[2] = {bc, 16}, bytes;
        struct herd_error err;
        assert_int_equal(herd_ggml_tensor_nbytes(types[i], 2, ne, NULL, &bytes, &err), HERD_OK);
        assert_true(chunk >= bytes && chunk <= bytes * 14 / 10);
        const struct herd_matrix m = {types[i], NULL, 48, 4 * bc, (size_t)bytes / 16 * 4, NULL};
        assert_int_equal(herd_matrix_packed_bytes(&m), 3 * 4 * chunk);
    }
    assert_int_equal(herd_kpack_chunk_bytes(HERD_GGML_TYPE_Q8_0), 0);
    assert_int_equal(herd_kpack_chunk_bytes(HERD_GGML_TYPE_F16), 0);
    /* the loader packs a type only for a family with its tiled kernel */
    assert_false(herd_kernels_packs(herd_kernels_ref(), HERD_GGML_TYPE_Q4_K));
    const struct herd_kernels *k = herd_kernels_avx512();
    if (k && k->gemm_kpack) {
        for (size_t i = 0; i < N_TYPES; i++) assert_true(herd_kernels_packs(k, types[i]));
        assert_true(herd_kernels_packs(k, HERD_GGML_TYPE_Q8_0));
        assert_false(herd_kernels_packs(k, HERD_GGML_TYPE_F16));
    }
}

/* sum_c |w[r][c] x[t][c]|: the scale of an output's rounding error. */
static float *magnitudes(enum herd_ggml_type t, const uint8_t *w, size_t row_bytes, size_t rows, size_t cols,
                         const float *x, size_t n_tok) {
    float *mag = malloc(n_tok * rows * sizeof *mag), *wf = malloc(cols * sizeof *wf);
    for (size_t r = 0; r < rows; r++) {
        herd_dequantize_row_ref(t, w + r * row_bytes, wf, cols);
        for (size_t tok = 0; tok < n_tok; tok++) {
            double s = 0;
            for (size_t c = 0; c < cols; c++) s += fabs((double)wf[c] * x[tok * cols + c]);
            mag[tok * rows + r] = (float)s;
        }
    }
    free(wf);
    return mag;
}

static void poison(float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = NAN;
}

static void check_type(struct herd_pool *pool, struct herd_pool *pool1, enum herd_ggml_type type) {
    struct herd_rng r;
    herd_rng_init(&r, 17 + (uint64_t)type);
    const bool k_type = herd_act_type_of(type) == HERD_ACT_Q8K;
    const size_t rows = 48, cols = k_type ? 768 : 160, T = 27, TBIG = 70;
    size_t row_bytes;
    uint8_t *w = random_matrix(&r, type, rows, cols, &row_bytes);
    float *x = malloc(TBIG * cols * sizeof *x);
    fill_activations(&r, x, TBIG, cols);
    float *mag = magnitudes(type, w, row_bytes, rows, cols, x, TBIG);
    struct herd_matrix plain = {type, w, rows, cols, row_bytes, NULL}, packed = plain;
    const size_t pbytes = herd_matrix_packed_bytes(&packed);
    assert_true(pbytes > 0);
    uint8_t *store = aligned_alloc(64, (pbytes + 63) & ~(size_t)63);
    herd_matrix_pack(&packed, store);
    assert_ptr_equal(packed.packed, store);
    void *scratch = malloc(herd_matmul_scratch_bytes(&plain, TBIG, 2, false) + 64);
    float *want = malloc(TBIG * rows * sizeof *want), *got = malloc(TBIG * rows * sizeof *got);
    float *full = malloc(TBIG * rows * sizeof *full), *twin = malloc(TBIG * rows * sizeof *twin);
    const struct herd_kernels *fams[3] = {herd_kernels_ref(), herd_kernels_avx2(), herd_kernels_avx512()};
    const char *tname = herd_ggml_type_info(type)->name;

    /* the scalar twin on all tokens: the floats every family must give */
    herd_matmul(pool, herd_kernels_ref(), &packed, x, cols, TBIG, twin, rows, scratch, false);
    herd_matmul(pool, herd_kernels_ref(), &plain, x, cols, TBIG, want, rows, scratch, false);
    for (size_t i = 0; i < TBIG * rows; i++) {
        if (!(fabsf(twin[i] - want[i]) <= DOT_RTOL * (mag[i] + 1e-3f)))
            fail_msg("%s: packed ref %.9g vs row-by-row ref %.9g (token %zu row %zu)", tname, twin[i], want[i],
                     i / rows, i % rows);
        if (k_type && memcmp(&twin[i], &want[i], sizeof(float)) != 0)
            fail_msg("%s: packed ref %.9g is not the row-by-row ref's %.9g", tname, twin[i], want[i]);
    }
    for (int f = 0; f < 3; f++) {
        if (!fams[f]) continue;
        poison(full, TBIG * rows);
        herd_matmul(pool, fams[f], &packed, x, cols, TBIG, full, rows, scratch, false);
        if (memcmp(full, twin, TBIG * rows * sizeof *full) != 0)
            fail_msg("%s %s: packed tiles differ from the scalar twin", tname, fams[f]->name);
        for (size_t n = 1; n <= T; n++) {
            poison(got, n * rows);
            herd_matmul(n % 2 ? pool : pool1, fams[f], &packed, x, cols, n, got, rows, scratch, false);
            if (memcmp(got, full, n * rows * sizeof *got) != 0)
                fail_msg("%s %s: %zu tokens differ from the same tokens in a batch of %zu", tname, fams[f]->name, n,
                         TBIG);
        }
        /* tokens past the first chunk of 64, alone */
        for (size_t t = 60; t < TBIG; t += 3) {
            poison(got, rows);
            herd_matmul(pool, fams[f], &packed, x + t * cols, cols, 1, got, rows, scratch, false);
            if (memcmp(got, full + t * rows, rows * sizeof *got) != 0)
                fail_msg("%s %s: token %zu alone differs from the batch", tname, fams[f]->name, t);
        }
        /* activations quantized by the caller (Q8A or Q8_K rows where the
         * matmul reads them) give the same result */
        {
            assert_true(herd_matmul_quantizes(&packed, false) && !herd_matmul_quantizes(&packed, true));
            memset(scratch, 0xff, herd_matmul_scratch_bytes(&plain, TBIG, 2, false));
            for (size_t t = 0; t < T; t++) {
                if (k_type)
                    fams[f]->quantize_row_q8k(x + t * cols, herd_matmul_q8k_rows(scratch, cols, T) + t * (cols / 256),
                                              cols);
                else
                    fams[f]->quantize_row_q8a(x + t * cols, herd_matmul_q8a_rows(scratch) + t * (cols / 32), cols);
            }
            /* beside the packed matrix, the same rows unpacked (the row-by-row path) */
            float *pre = malloc(T * rows * sizeof *pre), *plain_y = malloc(T * rows * sizeof *plain_y);
            const struct herd_matmul_out o[2] = {{&packed, got, rows}, {&plain, pre, rows}};
            poison(got, T * rows);
            poison(pre, T * rows);
            herd_matmul_multi_quantized(pool, fams[f], o, 2, T, scratch);
            assert_memory_equal(got, full, T * rows * sizeof *got);
            herd_matmul(pool, fams[f], &plain, x, cols, T, plain_y, rows, scratch, false);
            assert_memory_equal(pre, plain_y, T * rows * sizeof *pre);
            free(pre), free(plain_y);
        }
    }
    free(w), free(x), free(mag), free(store), free(scratch), free(want), free(got), free(full), free(twin);
}

static void test_packed_matches_reference(void **state) {
    (void)state;
    struct herd_pool *pool = herd_pool_create(2), *pool1 = herd_pool_create(1);
    for (size_t i = 0; i < N_TYPES; i++) check_type(pool, pool1, types[i]);
    herd_pool_destroy(pool);
    herd_pool_destroy(pool1);
}

/* A K matrix beside a Q8A one in one call (a Q4_K_M layer's mix): each
 * takes its own activations from the shared scratch. */
static void test_mixed_families(void **state) {
    (void)state;
    const struct herd_kernels *k = herd_kernels_best();
    struct herd_pool *pool = herd_pool_create(2);
    struct herd_rng r;
    herd_rng_init(&r, 5);
    const size_t rows = 32, cols = 512, T = 19;
    size_t rb_k, rb_a;
    uint8_t *wk = random_matrix(&r, HERD_GGML_TYPE_Q4_K, rows, cols, &rb_k);
    uint8_t *wa = random_matrix(&r, HERD_GGML_TYPE_Q5_0, rows, cols, &rb_a);
    float *x = malloc(T * cols * sizeof *x);
    fill_activations(&r, x, T, cols);
    struct herd_matrix mk = {HERD_GGML_TYPE_Q4_K, wk, rows, cols, rb_k, NULL},
                       ma = {HERD_GGML_TYPE_Q5_0, wa, rows, cols, rb_a, NULL};
    uint8_t *sk = aligned_alloc(64, (herd_matrix_packed_bytes(&mk) + 63) & ~(size_t)63);
    uint8_t *sa = aligned_alloc(64, (herd_matrix_packed_bytes(&ma) + 63) & ~(size_t)63);
    herd_matrix_pack(&mk, sk);
    herd_matrix_pack(&ma, sa);
    void *scratch = malloc(herd_matmul_scratch_bytes(&mk, T, 2, false) + 64);
    float *y1 = malloc(2 * T * rows * sizeof *y1), *y2 = malloc(2 * T * rows * sizeof *y2);
    poison(y1, 2 * T * rows);
    const struct herd_matmul_out o[2] = {{&mk, y1, rows}, {&ma, y1 + T * rows, rows}};
    herd_matmul_multi(pool, k, o, 2, x, cols, T, scratch, false);
    herd_matmul(pool, k, &mk, x, cols, T, y2, rows, scratch, false);
    herd_matmul(pool, k, &ma, x, cols, T, y2 + T * rows, rows, scratch, false);
    assert_memory_equal(y1, y2, 2 * T * rows * sizeof *y1);
    free(wk), free(wa), free(x), free(sk), free(sa), free(scratch), free(y1), free(y2);
    herd_pool_destroy(pool);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_packed_matches_reference),
        cmocka_unit_test(test_mixed_families),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
