/* Perplexity scoring against float64 arithmetic, the packed rows' bounds,
 * KL divergence of a row with itself and with a shifted copy, the summary
 * formulas, and llama-perplexity's file written, read back and refused
 * when truncated, padded or not a log-probability file (under ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quality/logits_file.h"
#include "quality/perplexity.h"
#include "test_util.h"

/* A deterministic row of logits in about [-8, 8). */
static void fill_row(float *row, uint32_t n, uint32_t seed) {
    uint32_t s = seed * 2654435761u + 1;
    for (uint32_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        row[i] = (float)((double)(s >> 8) / (double)(1u << 24) * 16.0 - 8.0);
    }
}

/* -log softmax in float64 throughout. */
static double nll_f64(const float *row, uint32_t n, int32_t tok) {
    double mx = row[0];
    for (uint32_t i = 1; i < n; i++) mx = row[i] > mx ? row[i] : mx;
    double s = 0;
    for (uint32_t i = 0; i < n; i++) s += exp((double)row[i] - mx);
    return -((double)row[tok] - mx - log(s));
}

static void test_row_nll(void **state) {
    (void)state;
    static const uint32_t sizes[] = {1, 2, 31, 512, 32000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const uint32_t n = sizes[k];
        float *row = malloc(n * sizeof *row);
        fill_row(row, n, (uint32_t)k);
        for (int32_t tok = 0; tok < (int32_t)n; tok += (int32_t)(n / 7 + 1)) {
            const double want = nll_f64(row, n, tok), got = herd_ppl_row_nll(row, n, tok);
            assert_true(fabs(got - want) < 1e-5 * (1 + fabs(want)));
            assert_true(got >= 0);
        }
        free(row);
    }
    /* a uniform row: every token has probability 1/n */
    float flat[100];
    for (int i = 0; i < 100; i++) flat[i] = 3.0f;
    assert_true(fabs(herd_ppl_row_nll(flat, 100, 42) - log(100.0)) < 1e-6);
}

static void test_stats(void **state) {
    (void)state;
    struct herd_ppl_stats s = {0};
    double ppl, err;
    assert_false(herd_ppl_final(&s, &ppl, &err));
    const double v[] = {1.0, 2.0, 3.0, 4.0};
    for (int i = 0; i < 4; i++) herd_ppl_add(&s, v[i]);
    assert_int_equal(s.count, 4);
    assert_true(fabs(herd_ppl_value(&s) - exp(2.5)) < 1e-12);
    assert_true(herd_ppl_final(&s, &ppl, &err));
    /* population variance 1.25, so the standard error sqrt(1.25 / 3) */
    assert_true(fabs(ppl - exp(2.5)) < 1e-12);
    assert_true(fabs(err - sqrt(1.25 / 3) * exp(2.5)) < 1e-9);
    /* no spread: no error estimate */
    struct herd_ppl_stats same = {0};
    for (int i = 0; i < 5; i++) herd_ppl_add(&same, 2.0);
    assert_false(herd_ppl_final(&same, &ppl, &err));
}

static void test_pack(void **state) {
    (void)state;
    static const uint32_t sizes[] = {3, 31, 32000, 32001};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const uint32_t n = sizes[k];
        const size_t len = herd_ppl_packed_row_len(n);
        assert_int_equal(len, 2 * ((n + 1) / 2) + 4);
        float *row = malloc(n * sizeof *row);
        uint16_t *packed = malloc(len * sizeof *packed);
        for (size_t i = 0; i < len; i++) packed[i] = 0xBEEF; /* poison */
        fill_row(row, n, 7 + (uint32_t)k);
        const int32_t tok = (int32_t)(n / 2);
        const double nll = herd_ppl_row_pack(row, n, tok, packed);
        assert_true(fabs(nll - nll_f64(row, n, tok)) < 1e-4 * (1 + nll));
        float scale, min_lp;
        memcpy(&scale, packed, 4);
        memcpy(&min_lp, packed + 2, 4);
        assert_true(scale > 0);
        /* each stored log-prob within half a step (plus float rounding) of
         * the exact one, for the ones above the -16 floor */
        double mx = row[0];
        for (uint32_t i = 1; i < n; i++) mx = row[i] > mx ? row[i] : mx;
        double se = 0;
        for (uint32_t i = 0; i < n; i++) se += exp(row[i] - mx);
        for (uint32_t i = 0; i < n; i++) {
            const double lp = row[i] - mx - log(se), got = scale * packed[4 + i] + min_lp;
            if (row[i] - mx > -15.9) assert_true(fabs(got - lp) <= scale * 0.5 + 1e-4);
        }
        if (n % 2) assert_int_equal(packed[4 + n], 0); /* the pad is zero, not left over */
        free(row);
        free(packed);
    }
}

static void test_kld(void **state) {
    (void)state;
    const uint32_t n = 1000;
    float row[1000], other[1000];
    uint16_t base[1004];
    fill_row(row, n, 3);
    herd_ppl_row_pack(row, n, 17, base);
    /* the same logits: KL ~ 0 (only the 16-bit packing), same argmax */
    struct herd_kld_stats s = {0};
    float kld, p_diff;
    herd_kld_row(row, n, base, 17, &s, &kld, &p_diff);
    assert_true(fabsf(kld) < 1e-4f);
    assert_true(fabsf(p_diff) < 1e-4f);
    assert_int_equal(s.n_same_top, 1);
    /* a shifted copy (every logit + 5) is the same distribution */
    for (uint32_t i = 0; i < n; i++) other[i] = row[i] + 5.0f;
    herd_kld_row(other, n, base, 17, &s, &kld, &p_diff);
    assert_true(fabsf(kld) < 1e-4f);
    /* a different row: KL > 0, against the float64 sum */
    fill_row(other, n, 99);
    herd_kld_row(other, n, base, 17, &s, &kld, &p_diff);
    double mx = row[0], mo = other[0];
    for (uint32_t i = 1; i < n; i++) mx = fmax(mx, row[i]), mo = fmax(mo, other[i]);
    double sp = 0, so = 0;
    for (uint32_t i = 0; i < n; i++) sp += exp(row[i] - mx), so += exp(other[i] - mo);
    double want = 0;
    for (uint32_t i = 0; i < n; i++) {
        const double lp = row[i] - mx - log(sp), lq = other[i] - mo - log(so);
        if (lp > -16) want += exp(lp) * (lp - lq);
    }
    assert_true(want > 0.1);
    assert_true(fabs(kld - want) < 1e-2 * want);
    assert_int_equal(s.count, 3);
    struct herd_kld_summary sum;
    herd_kld_summarize(&s, &sum);
    assert_true(fabs(sum.kld.mean - (s.sum_kld / 3)) < 1e-12);
    assert_true(fabs(sum.same_top.mean - (double)s.n_same_top / 3) < 1e-12);
}

static void test_percentile(void **state) {
    (void)state;
    const float v[] = {1, 2, 3, 4, 5};
    assert_true(herd_percentile_sorted(v, 5, 0) == 1);
    assert_true(herd_percentile_sorted(v, 5, 1) == 5);
    assert_true(fabsf(herd_percentile_sorted(v, 5, 0.5f) - 3) < 1e-6f);
    assert_true(fabsf(herd_percentile_sorted(v, 5, 0.125f) - 1.5f) < 1e-6f);
    assert_true(herd_percentile_sorted(v, 1, 0.7f) == 1);
}

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "/tmp/herd-test-ppl-%ld-%s", (long)getpid(), name);
}

/* Writes a file of n_chunk chunks of n_ctx over n_vocab, rows from fill_row. */
static void write_file(const char *path, uint32_t n_ctx, int32_t n_vocab, int32_t n_chunk) {
    int32_t *tokens = malloc((size_t)n_chunk * n_ctx * sizeof *tokens);
    for (size_t i = 0; i < (size_t)n_chunk * n_ctx; i++) tokens[i] = (int32_t)(i * 7 % (size_t)n_vocab);
    struct herd_logits_writer w;
    struct herd_error err = {0};
    assert_int_equal(herd_logits_writer_create(&w, path, n_ctx, n_vocab, n_chunk, tokens, &err), HERD_OK);
    const uint32_t rows = herd_logits_file_rows(n_ctx);
    const size_t len = herd_ppl_packed_row_len((uint32_t)n_vocab);
    float *row = malloc((size_t)n_vocab * sizeof *row);
    uint16_t *packed = malloc(len * sizeof *packed);
    for (int32_t c = 0; c < n_chunk; c++)
        for (uint32_t r = 0; r < rows; r++) {
            fill_row(row, (uint32_t)n_vocab, (uint32_t)c * 1000 + r);
            herd_ppl_row_pack(row, (uint32_t)n_vocab, 0, packed);
            assert_int_equal(herd_logits_writer_append(&w, packed, len, &err), HERD_OK);
        }
    assert_int_equal(herd_logits_writer_finish(&w, &err), HERD_OK);
    free(tokens);
    free(row);
    free(packed);
}

static void test_file_roundtrip(void **state) {
    (void)state;
    char path[256];
    tmp_path(path, sizeof path, "rt.kld");
    write_file(path, 16, 33, 3);
    struct herd_logits_file lf;
    struct herd_error err = {0};
    assert_int_equal(herd_logits_file_open(&lf, path, &err), HERD_OK);
    assert_int_equal(lf.n_ctx, 16);
    assert_int_equal(lf.n_vocab, 33);
    assert_int_equal(lf.n_chunk, 3);
    assert_int_equal(lf.tokens[5], 35 % 33);
    /* the size is exactly llama.cpp's: header, tokens, rows */
    assert_int_equal(lf.map.size, 20 + 3 * 16 * 4 + 3 * 7 * (2 * 17 + 4) * 2);
    /* the row of chunk 2, position 8 + 4 is the one written there */
    float row[33];
    uint16_t want[38];
    fill_row(row, 33, 2 * 1000 + 4);
    herd_ppl_row_pack(row, 33, 0, want);
    assert_memory_equal(herd_logits_file_row(&lf, 2, 4), want, sizeof want);
    herd_logits_file_cleanup(&lf);
    /* no temporary file is left beside it */
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    assert_int_not_equal(access(tmp, F_OK), 0);
    unlink(path);
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void test_file_refused(void **state) {
    (void)state;
    char path[256], bad[256];
    tmp_path(path, sizeof path, "good.kld");
    tmp_path(bad, sizeof bad, "bad.kld");
    write_file(path, 16, 33, 2);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t buf[4096];
    const size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    struct herd_logits_file lf;
    struct herd_error err = {0};
    /* every truncation, and a byte more, is refused with a message */
    for (size_t cut = 0; cut < n; cut += (cut < 40 ? 1 : 37)) {
        write_bytes(bad, buf, cut);
        assert_int_not_equal(herd_logits_file_open(&lf, bad, &err), HERD_OK);
        assert_true(strlen(err.msg) > 0);
    }
    write_bytes(bad, buf, n - 1);
    assert_int_not_equal(herd_logits_file_open(&lf, bad, &err), HERD_OK);
    assert_non_null(strstr(err.msg, "truncated"));
    buf[n] = 0;
    write_bytes(bad, buf, n + 1);
    assert_int_not_equal(herd_logits_file_open(&lf, bad, &err), HERD_OK);
    assert_non_null(strstr(err.msg, "trailing"));
    /* a wrong magic, and counts out of range */
    uint8_t hdr[sizeof buf];
    memcpy(hdr, buf, n);
    hdr[0] = 'X';
    write_bytes(bad, hdr, n);
    assert_int_not_equal(herd_logits_file_open(&lf, bad, &err), HERD_OK);
    assert_non_null(strstr(err.msg, "_logits_"));
    memcpy(hdr, buf, n);
    const int32_t huge = 0x7fffffff, neg = -1;
    memcpy(hdr + 12, &huge, 4);
    write_bytes(bad, hdr, n);
    assert_int_not_equal(herd_logits_file_open(&lf, bad, &err), HERD_OK);
    memcpy(hdr, buf, n);
    memcpy(hdr + 16, &neg, 4);
    write_bytes(bad, hdr, n);
    assert_int_not_equal(herd_logits_file_open(&lf, bad, &err), HERD_OK);
    assert_int_not_equal(herd_logits_file_open(&lf, "/nonexistent/x.kld", &err), HERD_OK);
    unlink(bad);
    unlink(path);
}

static void test_writer_abort(void **state) {
    (void)state;
    char path[256];
    tmp_path(path, sizeof path, "abort.kld");
    const int32_t tokens[16] = {0};
    struct herd_logits_writer w;
    struct herd_error err = {0};
    assert_int_equal(herd_logits_writer_create(&w, path, 16, 4, 1, tokens, &err), HERD_OK);
    herd_logits_writer_abort(&w);
    assert_int_not_equal(access(path, F_OK), 0);
    /* an unwritable place: an error, nothing left */
    assert_int_not_equal(herd_logits_writer_create(&w, "/nonexistent/dir/x.kld", 16, 4, 1, tokens, &err), HERD_OK);
    assert_non_null(strstr(err.msg, "cannot create"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_nll),      cmocka_unit_test(test_stats),        cmocka_unit_test(test_pack),
        cmocka_unit_test(test_kld),          cmocka_unit_test(test_percentile),   cmocka_unit_test(test_file_roundtrip),
        cmocka_unit_test(test_file_refused), cmocka_unit_test(test_writer_abort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
