/* The row quantizers of every type herd writes, byte-identical to ggml's
 * ggml_quantize_chunk without and with importance weights, on the vectors
 * recorded from llama.cpp (tests/data/kquant/quant-T.bin: rows on rounding
 * boundaries, zero rows, outliers, tiny values); plus the whole-rows entry
 * point, odd row counts, NaN-poisoned outputs, and the validity check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "base/rng.h"
#include "herd/gguf.h"
#include "kernels/quant.h"
#include "kernels/quantize_k.h"
#include "test_util.h"

struct vec_case {
    const char *file;
    enum herd_ggml_type type;
    void (*row)(const float *x, void *y, size_t n, const float *qw);
};

static const struct vec_case kCases[] = {
    {"quant-q4_0.bin", HERD_GGML_TYPE_Q4_0, herd_quantize_row_q4_0},
    {"quant-q4_1.bin", HERD_GGML_TYPE_Q4_1, herd_quantize_row_q4_1},
    {"quant-q5_0.bin", HERD_GGML_TYPE_Q5_0, herd_quantize_row_q5_0},
    {"quant-q5_1.bin", HERD_GGML_TYPE_Q5_1, herd_quantize_row_q5_1},
    {"quant-q8_0.bin", HERD_GGML_TYPE_Q8_0, herd_quantize_row_q8_0},
    {"quant-iq4_nl.bin", HERD_GGML_TYPE_IQ4_NL, herd_quantize_row_iq4_nl},
    {"quant-q2_K.bin", HERD_GGML_TYPE_Q2_K, herd_quantize_row_q2_k},
    {"quant-q3_K.bin", HERD_GGML_TYPE_Q3_K, herd_quantize_row_q3_k},
    {"quant-q4_K.bin", HERD_GGML_TYPE_Q4_K, herd_quantize_row_q4_k},
    {"quant-q5_K.bin", HERD_GGML_TYPE_Q5_K, herd_quantize_row_q5_k},
    {"quant-q6_K.bin", HERD_GGML_TYPE_Q6_K, herd_quantize_row_q6_k},
};
#define N_CASES (sizeof kCases / sizeof kCases[0])

static uint32_t rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* One quant-T.bin file (tests/data/kquant/README.md). Pointers into data. */
struct vec_file {
    uint8_t *data;
    uint32_t n_per_row, n_rows;
    size_t row_bytes;
    float *x, *qw;                   /* copied: the file's floats are unaligned */
    const uint8_t *plain, *weighted; /* ggml's bytes without and with qw */
};

static void load(const struct vec_case *c, struct vec_file *v) {
    char path[512];
    size_t size;
    snprintf(path, sizeof path, "%s/kquant/%s", HERD_TEST_DATA, c->file);
    v->data = test_read_file(path, &size);
    assert_true(size >= 20);
    assert_memory_equal(v->data, "HKQQ", 4);
    assert_int_equal(rd_u32(v->data + 4), 1);
    assert_int_equal(rd_u32(v->data + 8), (uint32_t)c->type);
    v->n_per_row = rd_u32(v->data + 12);
    v->n_rows = rd_u32(v->data + 16);
    const struct herd_ggml_type_info *ti = herd_ggml_type_info(c->type);
    v->row_bytes = v->n_per_row / ti->block_elems * ti->block_bytes;
    const size_t nx = (size_t)v->n_rows * v->n_per_row;
    assert_int_equal(size, 20 + nx * 4 + v->n_per_row * 4 + 2 * v->n_rows * v->row_bytes);
    v->x = malloc(nx * sizeof *v->x);
    v->qw = malloc(v->n_per_row * sizeof *v->qw);
    memcpy(v->x, v->data + 20, nx * 4);
    memcpy(v->qw, v->data + 20 + nx * 4, v->n_per_row * 4);
    v->plain = v->data + 20 + nx * 4 + v->n_per_row * 4;
    v->weighted = v->plain + v->n_rows * v->row_bytes;
}

static void unload(struct vec_file *v) {
    free(v->data);
    free(v->x);
    free(v->qw);
}

/* Fills with NaN bit patterns, so a byte the quantizer forgets shows. */
static void poison(void *p, size_t n) { memset(p, 0xff, n); }

static void check_rows(const struct vec_case *c, const struct vec_file *v, const float *qw, const uint8_t *want) {
    uint8_t *got = malloc(v->row_bytes);
    for (uint32_t r = 0; r < v->n_rows; r++) {
        poison(got, v->row_bytes);
        c->row(v->x + (size_t)r * v->n_per_row, got, v->n_per_row, qw);
        const uint8_t *w = want + r * v->row_bytes;
        for (size_t i = 0; i < v->row_bytes; i++)
            if (got[i] != w[i])
                fail_msg("%s %s: row %u differs from ggml at byte %zu (block %zu): 0x%02x, ggml 0x%02x", c->file,
                         qw ? "with imatrix" : "plain", r, i, i / herd_ggml_type_info(c->type)->block_bytes, got[i],
                         w[i]);
    }
    free(got);
}

static void test_rows_match_ggml(void **state) {
    (void)state;
    for (size_t i = 0; i < N_CASES; i++) {
        struct vec_file v;
        load(&kCases[i], &v);
        check_rows(&kCases[i], &v, NULL, v.plain);
        check_rows(&kCases[i], &v, v.qw, v.weighted);
        unload(&v);
    }
}

/* herd_quantize_rows over all rows at once equals the per-row functions,
 * and its output passes the validity check. */
static void test_quantize_rows_whole_matrix(void **state) {
    (void)state;
    for (size_t i = 0; i < N_CASES; i++) {
        struct vec_file v;
        load(&kCases[i], &v);
        const size_t n = v.n_rows * v.row_bytes;
        uint8_t *got = malloc(n);
        for (int with = 0; with < 2; with++) {
            poison(got, n);
            herd_quantize_rows(kCases[i].type, v.x, got, v.n_rows, v.n_per_row, with ? v.qw : NULL);
            assert_memory_equal(got, with ? v.weighted : v.plain, n);
            assert_true(herd_quantize_rows_valid(kCases[i].type, got, n));
        }
        free(got);
        unload(&v);
    }
}

/* Random rows of odd counts: every block of a multi-block row is quantized
 * as the same values alone would be (blocks are independent without an
 * imatrix), and the output is finite. */
static void test_odd_sizes_blocks_independent(void **state) {
    (void)state;
    struct herd_rng rng;
    herd_rng_init(&rng, 7);
    for (size_t i = 0; i < N_CASES; i++) {
        const struct herd_ggml_type_info *ti = herd_ggml_type_info(kCases[i].type);
        const size_t sizes[] = {1, 3, 7};
        for (size_t s = 0; s < 3; s++) {
            const size_t n = sizes[s] * ti->block_elems, nb = n / ti->block_elems * ti->block_bytes;
            float *x = malloc(n * sizeof *x);
            for (size_t j = 0; j < n; j++) x[j] = (float)(0.05 * herd_rng_normal(&rng));
            uint8_t *all = malloc(nb), *one = malloc(ti->block_bytes);
            poison(all, nb);
            kCases[i].row(x, all, n, NULL);
            assert_true(herd_quantize_rows_valid(kCases[i].type, all, nb));
            for (size_t b = 0; b < sizes[s]; b++) {
                poison(one, ti->block_bytes);
                kCases[i].row(x + b * ti->block_elems, one, ti->block_elems, NULL);
                assert_memory_equal(one, all + b * ti->block_bytes, ti->block_bytes);
            }
            free(x);
            free(all);
            free(one);
        }
    }
}

/* Round trip: dequantized values are close to the input (a property that
 * fails on a misplaced nibble or a wrong scale even where no vector exists). */
static void test_round_trip_error_is_small(void **state) {
    (void)state;
    struct herd_rng rng;
    herd_rng_init(&rng, 11);
    const size_t n = 1024;
    float x[1024], y[1024], qw[1024];
    for (size_t j = 0; j < n; j++) {
        x[j] = (float)herd_rng_normal(&rng);
        qw[j] = (float)(herd_rng_uniform(&rng) + 0.1);
    }
    /* RMS error bounds relative to RMS(x) = 1: about half a quant step */
    static const struct {
        enum herd_ggml_type t;
        double rms;
    } bounds[] = {
        {HERD_GGML_TYPE_Q2_K, 0.45}, {HERD_GGML_TYPE_Q3_K, 0.25},   {HERD_GGML_TYPE_Q4_K, 0.12},
        {HERD_GGML_TYPE_Q5_K, 0.06}, {HERD_GGML_TYPE_Q6_K, 0.03},   {HERD_GGML_TYPE_Q4_0, 0.15},
        {HERD_GGML_TYPE_Q4_1, 0.12}, {HERD_GGML_TYPE_Q5_0, 0.08},   {HERD_GGML_TYPE_Q5_1, 0.06},
        {HERD_GGML_TYPE_Q8_0, 0.01}, {HERD_GGML_TYPE_IQ4_NL, 0.15},
    };
    uint8_t *q = malloc(n * 4);
    for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++)
        for (int with = 0; with < 2; with++) {
            herd_quantize_rows(bounds[b].t, x, q, 1, n, with ? qw : NULL);
            herd_dequantize_row_ref(bounds[b].t, q, y, n);
            double se = 0;
            for (size_t j = 0; j < n; j++) se += (double)(y[j] - x[j]) * (y[j] - x[j]);
            const double rms = sqrt(se / (double)n);
            if (rms > bounds[b].rms)
                fail_msg("%s%s: rms error %g > %g", herd_ggml_type_info(bounds[b].t)->name, with ? " (imatrix)" : "",
                         rms, bounds[b].rms);
        }
    free(q);
}

static void test_validity_check(void **state) {
    (void)state;
    struct herd_block_q4_k k = {0};
    assert_true(herd_quantize_rows_valid(HERD_GGML_TYPE_Q4_K, &k, sizeof k));
    k.dmin = 0x7c00; /* +inf */
    assert_false(herd_quantize_rows_valid(HERD_GGML_TYPE_Q4_K, &k, sizeof k));
    struct herd_block_q6_k b6 = {0};
    b6.d = 0x7e00; /* NaN */
    assert_false(herd_quantize_rows_valid(HERD_GGML_TYPE_Q6_K, &b6, sizeof b6));
    uint16_t h[3] = {0x3c00, 0xfc00, 0};
    assert_false(herd_quantize_rows_valid(HERD_GGML_TYPE_F16, h, sizeof h));
    const float f[2] = {1.0f, INFINITY};
    assert_false(herd_quantize_rows_valid(HERD_GGML_TYPE_F32, f, sizeof f));
    assert_true(herd_quantize_rows_valid(HERD_GGML_TYPE_F32, f, sizeof f[0]));
    /* an all-zero importance matrix makes ggml's weighted fit divide 0 by 0 */
    float x[256], zero[256] = {0};
    for (int j = 0; j < 256; j++) x[j] = (float)(j % 7) - 3.0f;
    struct herd_block_q4_k q;
    herd_quantize_row_q4_k(x, &q, 256, zero);
    assert_false(herd_quantize_rows_valid(HERD_GGML_TYPE_Q4_K, &q, sizeof q));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_match_ggml),
        cmocka_unit_test(test_quantize_rows_whole_matrix),
        cmocka_unit_test(test_odd_sizes_blocks_independent),
        cmocka_unit_test(test_round_trip_error_is_small),
        cmocka_unit_test(test_validity_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
