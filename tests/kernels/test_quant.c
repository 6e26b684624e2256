/* Reference number formats: fp16/bf16 conversion exhaustively, and Q8_0 and
 * Q4_0 quantization byte-identical to llama-quantize on the fixture weights
 * (the fixtures' q8_0/q4_0 files were written by llama-quantize from the
 * f32 file's weights), including blocks placed on rounding boundaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "herd/gguf.h"
#include "kernels/quant.h"
#include "test_util.h"

static void test_fp16_every_value_round_trips(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = herd_fp16_to_fp32((uint16_t)h);
        uint16_t back = herd_fp32_to_fp16(f);
        if (isnan(f))
            assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff));
        else if (back != h)
            fail_msg("half 0x%04x -> %g -> 0x%04x", h, f, back);
    }
}

static void test_fp16_rounding(void **state) {
    (void)state;
    assert_int_equal(herd_fp32_to_fp16(65504.0f), 0x7bff);
    assert_int_equal(herd_fp32_to_fp16(65519.0f), 0x7bff);
    assert_int_equal(herd_fp32_to_fp16(65520.0f), 0x7c00); /* ties to even -> inf */
    assert_int_equal(herd_fp32_to_fp16(-1e10f), 0xfc00);
    assert_int_equal(herd_fp32_to_fp16(1.0f + 1.0f / 2048), 0x3c00); /* tie, even stays */
    assert_int_equal(herd_fp32_to_fp16(1.0f + 3.0f / 2048), 0x3c02); /* tie, odd rounds up */
    assert_int_equal(herd_fp32_to_fp16(5.9604645e-8f), 0x0001);      /* smallest subnormal */
    assert_int_equal(herd_fp32_to_fp16(2.9802322e-8f), 0x0000);      /* half of it: tie to 0 */
    assert_int_equal(herd_fp32_to_fp16(6.1035156e-5f), 0x0400);      /* smallest normal */
    /* every float between two halves rounds to the nearer one */
    for (uint32_t h = 0x0001; h < 0x7bff; h += 97) {
        float lo = herd_fp16_to_fp32((uint16_t)h), hi = herd_fp16_to_fp32((uint16_t)(h + 1));
        float q1 = lo + (hi - lo) * 0.25f, q3 = lo + (hi - lo) * 0.75f;
        assert_int_equal(herd_fp32_to_fp16(q1), h);
        assert_int_equal(herd_fp32_to_fp16(q3), h + 1);
    }
}

static void test_bf16(void **state) {
    (void)state;
    assert_int_equal(herd_fp32_to_bf16(1.0f), 0x3f80);
    assert_true(herd_bf16_to_fp32(0x3f80) == 1.0f);
    assert_int_equal(herd_fp32_to_bf16(1.0f + 1.0f / 256), 0x3f80); /* tie to even */
    assert_int_equal(herd_fp32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
    assert_true(isnan(herd_bf16_to_fp32(herd_fp32_to_bf16(NAN))));
}

static void test_q8_0_and_q4_0_basics(void **state) {
    (void)state;
    float x[32], y[32];
    for (int i = 0; i < 32; i++) x[i] = (float)(i - 16) / 4.0f;
    struct herd_block_q8_0 b8;
    herd_quantize_row_ref(HERD_GGML_TYPE_Q8_0, x, &b8, 32);
    herd_dequantize_row_ref(HERD_GGML_TYPE_Q8_0, &b8, y, 32);
    for (int i = 0; i < 32; i++) assert_true(fabsf(x[i] - y[i]) <= 4.0f / 127 / 2 + 1e-3f);
    struct herd_block_q4_0 b4;
    herd_quantize_row_ref(HERD_GGML_TYPE_Q4_0, x, &b4, 32);
    herd_dequantize_row_ref(HERD_GGML_TYPE_Q4_0, &b4, y, 32);
    assert_true(y[0] == -4.0f); /* the extreme value is exact: d = -4 / -8 */
    for (int i = 0; i < 32; i++) assert_true(fabsf(x[i] - y[i]) <= 0.5f * 0.5f + 1e-3f);
    float zeros[32] = {0};
    herd_quantize_row_ref(HERD_GGML_TYPE_Q4_0, zeros, &b4, 32);
    herd_dequantize_row_ref(HERD_GGML_TYPE_Q4_0, &b4, y, 32);
    for (int i = 0; i < 32; i++) assert_true(y[i] == 0.0f);
}

/* Quantizes every f32 matrix of tiny-spm-f32 and compares with the bytes
 * llama-quantize wrote into tiny-spm-q8_0 and tiny-spm-q4_0. */
static void test_quantize_matches_llama_quantize(void **state) {
    (void)state;
    char pf[512], pq8[512], pq4[512];
    if (!test_shared_path("fixtures/models/tiny-spm-f32.gguf", pf, sizeof pf) ||
        !test_shared_path("fixtures/models/tiny-spm-q8_0.gguf", pq8, sizeof pq8) ||
        !test_shared_path("fixtures/models/tiny-spm-q4_0.gguf", pq4, sizeof pq4))
        skip();
    struct herd_error err = {0};
    struct herd_gguf *gf = NULL, *gq[2] = {NULL, NULL};
    const enum herd_ggml_type types[2] = {HERD_GGML_TYPE_Q8_0, HERD_GGML_TYPE_Q4_0};
    assert_int_equal(herd_gguf_open_file(pf, &gf, &err), HERD_OK);
    assert_int_equal(herd_gguf_open_file(pq8, &gq[0], &err), HERD_OK);
    assert_int_equal(herd_gguf_open_file(pq4, &gq[1], &err), HERD_OK);
    size_t compared = 0;
    for (size_t i = 0; i < herd_gguf_n_tensors(gf); i++) {
        const struct herd_gguf_tensor *t = herd_gguf_tensor_at(gf, i);
        if (t->type != HERD_GGML_TYPE_F32 || t->n_dims != 2) continue;
        char name[96];
        memcpy(name, t->name.ptr, (size_t)t->name.len);
        name[t->name.len] = '\0';
        for (int k = 0; k < 2; k++) {
            const struct herd_gguf_tensor *q = herd_gguf_find_tensor(gq[k], name);
            assert_non_null(q);
            assert_int_equal(q->type, types[k]);
            uint8_t *mine = malloc(q->n_bytes);
            herd_quantize_row_ref(types[k], t->data, mine, (size_t)t->n_elems);
            if (memcmp(mine, q->data, q->n_bytes) != 0) {
                size_t j = 0;
                while (((const uint8_t *)q->data)[j] == mine[j]) j++;
                fail_msg("%s as %s differs from llama-quantize at byte %zu", name, herd_ggml_type_info(types[k])->name,
                         j);
            }
            free(mine);
            compared++;
        }
    }
    assert_int_equal(compared, 2 * 15); /* 7 matrices in each of 2 layers, and output */
    herd_gguf_destroy(gf);
    herd_gguf_destroy(gq[0]);
    herd_gguf_destroy(gq[1]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_every_value_round_trips),
        cmocka_unit_test(test_fp16_rounding),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_q8_0_and_q4_0_basics),
        cmocka_unit_test(test_quantize_matches_llama_quantize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
