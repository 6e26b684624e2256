/* Importance matrices: the collector's means, llama.cpp's file layout
 * written and read back, and every truncation or corrupt count of a file
 * an error with no crash (under ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "convert/imatrix.h"
#include "test_util.h"

/* A collector over a hand-built 2-layer model description: only the
 * matrices' column counts matter to it. */
static struct herd_imatrix *collector(struct herd_model *m, struct herd_layer *layers) {
    memset(m, 0, sizeof *m);
    memset(layers, 0, 2 * sizeof *layers);
    m->desc.n_layer = 2;
    m->layers = layers;
    for (int l = 0; l < 2; l++) {
        struct herd_matrix *ws[] = {&layers[l].wq,     &layers[l].wk,   &layers[l].wv,    &layers[l].wo,
                                    &layers[l].w_gate, &layers[l].w_up, &layers[l].w_down};
        for (int i = 0; i < 7; i++) ws[i]->cols = i == 6 ? 8 : 4;
    }
    m->output.cols = 4;
    struct herd_imatrix *im = herd_imatrix_create_for(m, false);
    assert_non_null(im);
    assert_int_equal(im->n_entries, 14);
    assert_string_equal(im->entries[0].name, "blk.0.attn_q.weight");
    assert_string_equal(im->entries[13].name, "blk.1.ffn_down.weight");
    return im;
}

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "/tmp/herd-test-imatrix-%ld-%s", (long)getpid(), name);
}

static void test_collect_save_load(void **state) {
    (void)state;
    struct herd_model m;
    struct herd_layer layers[2];
    struct herd_imatrix *im = collector(&m, layers);
    /* 16 rows of [1, 2, 3, 4] then 32 rows of [3, 0, 0, 0]: means 19/3, 4/3, 3, 16/3 */
    float rows[32 * 4];
    for (int t = 0; t < 16; t++) rows[4 * t] = 1, rows[4 * t + 1] = 2, rows[4 * t + 2] = 3, rows[4 * t + 3] = 4;
    herd_imatrix_observe(im, 1, HERD_ROLE_ATTN_K, rows, 4, 16);
    for (int t = 0; t < 32; t++) rows[4 * t] = 3, rows[4 * t + 1] = rows[4 * t + 2] = rows[4 * t + 3] = 0;
    herd_imatrix_observe(im, 1, HERD_ROLE_ATTN_K, rows, 4, 32);
    herd_imatrix_observe(im, 0, HERD_ROLE_ATTN_Q, rows, 4, 15); /* too few rows: not counted */
    herd_imatrix_observe(im, 0, HERD_ROLE_OUTPUT, rows, 4, 32); /* output not collected */
    char path[256];
    tmp_path(path, sizeof path, "a.dat");
    struct herd_error err = {0};
    assert_int_equal(herd_imatrix_save(im, path, 7, "wiki.txt", &err), HERD_OK);
    herd_imatrix_destroy(im);

    /* the layout, byte by byte */
    size_t size;
    unsigned char *b = test_read_file(path, &size);
    const char *name = "blk.1.attn_k.weight";
    assert_int_equal(size, 4 + 4 + strlen(name) + 8 + 16 + 8 + strlen("wiki.txt"));
    int32_t v;
    memcpy(&v, b, 4);
    assert_int_equal(v, 1);
    memcpy(&v, b + 4, 4);
    assert_int_equal(v, (int)strlen(name));
    assert_memory_equal(b + 8, name, strlen(name));
    const unsigned char *q = b + 8 + strlen(name);
    memcpy(&v, q, 4);
    assert_int_equal(v, 2); /* ncall */
    memcpy(&v, q + 4, 4);
    assert_int_equal(v, 4);
    float f;
    memcpy(&f, q + 8, 4);
    assert_true(fabsf(f - 2.0f * 19.0f / 3.0f) < 1e-5f); /* stored as mean x ncall */
    free(b);

    struct herd_imatrix *back = NULL;
    assert_int_equal(herd_imatrix_load(path, &back, &err), HERD_OK);
    assert_int_equal(back->n_entries, 1);
    assert_int_equal(back->chunks, 7);
    assert_string_equal(back->dataset, "wiki.txt");
    const struct herd_imatrix_entry *e = herd_imatrix_find(back, name);
    assert_non_null(e);
    assert_null(herd_imatrix_find(back, "blk.0.attn_q.weight"));
    const float want[4] = {19.0f / 3.0f, 4.0f / 3.0f, 3.0f, 16.0f / 3.0f};
    for (int j = 0; j < 4; j++) assert_true(fabsf(e->values[j] - want[j]) < 1e-5f);
    herd_imatrix_destroy(back);
    unlink(path);
}

static void test_bad_files(void **state) {
    (void)state;
    struct herd_model m;
    struct herd_layer layers[2];
    struct herd_imatrix *im = collector(&m, layers);
    float rows[16 * 8] = {0};
    for (int i = 0; i < 16 * 8; i++) rows[i] = (float)i;
    herd_imatrix_observe(im, 0, HERD_ROLE_ATTN_Q, rows, 4, 16);
    herd_imatrix_observe(im, 1, HERD_ROLE_FFN_DOWN, rows, 8, 16);
    char path[256], bad[256];
    tmp_path(path, sizeof path, "good.dat");
    tmp_path(bad, sizeof bad, "bad.dat");
    struct herd_error err = {0};
    assert_int_equal(herd_imatrix_save(im, path, 3, "t", &err), HERD_OK);
    herd_imatrix_destroy(im);
    size_t size;
    unsigned char *b = test_read_file(path, &size);
    /* every truncation: an error, except where the optional trailer starts */
    const size_t body = size - 4 - 4 - 1;
    for (size_t cut = 0; cut < size; cut++) {
        FILE *f = fopen(bad, "wb");
        assert_int_equal(fwrite(b, 1, cut, f), cut);
        fclose(f);
        struct herd_imatrix *x = NULL;
        enum herd_status rc = herd_imatrix_load(bad, &x, &err);
        if (cut == body) {
            assert_int_equal(rc, HERD_OK);
            assert_int_equal(x->chunks, 0);
        } else {
            if (rc == HERD_OK) fail_msg("a file cut at %zu of %zu loaded", cut, size);
            assert_null(x);
            assert_true(strstr(err.msg, bad) != NULL);
        }
        herd_imatrix_destroy(x);
    }
    /* corrupt counts: entries, a name length, a value count */
    const size_t offsets[] = {0, 4, 4 + 4 + strlen("blk.0.attn_q.weight") + 4};
    const int32_t values[] = {-1, 1 << 30, 0x7fffffff};
    for (size_t o = 0; o < 3; o++)
        for (size_t k = 0; k < 3; k++) {
            unsigned char *c = malloc(size);
            memcpy(c, b, size);
            memcpy(c + offsets[o], &values[k], 4);
            FILE *f = fopen(bad, "wb");
            fwrite(c, 1, size, f);
            fclose(f);
            struct herd_imatrix *x = NULL;
            assert_int_not_equal(herd_imatrix_load(bad, &x, &err), HERD_OK);
            assert_null(x);
            free(c);
        }
    /* a tensor named twice */
    {
        const unsigned char dup[] = {2,    0,    0, 0, 1, 0, 0,   0, 'a', 1, 0, 0, 0, 1, 0, 0, 0, 0,    0,
                                     0x80, 0x3f, 1, 0, 0, 0, 'a', 1, 0,   0, 0, 1, 0, 0, 0, 0, 0, 0x80, 0x3f};
        FILE *f = fopen(bad, "wb");
        fwrite(dup, 1, sizeof dup, f);
        fclose(f);
        struct herd_imatrix *x = NULL;
        assert_int_equal(herd_imatrix_load(bad, &x, &err), HERD_E_DUPLICATE);
        assert_null(x);
    }
    struct herd_imatrix *x = NULL;
    assert_int_equal(herd_imatrix_load("/nonexistent/imatrix.dat", &x, &err), HERD_E_IO);
    free(b);
    unlink(path);
    unlink(bad);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_collect_save_load),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
