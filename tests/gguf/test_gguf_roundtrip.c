/* GGUF writer: reader -> writer -> reader reproduces every fixture byte for
 * byte, and the writer's own guarantees hold (unique keys, alignment, no
 * partial file under the target path when writing fails). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <sys/resource.h>

#include "herd/gguf.h"
#include "test_util.h"

/* Copies src into a writer: every entry raw, every tensor with its data. */
static enum herd_status rewrite(const struct herd_gguf *g, const char *out, struct herd_error *err) {
    struct herd_gguf_writer *w = herd_gguf_writer_create();
    enum herd_status rc = HERD_OK;
    for (size_t i = 0; rc == HERD_OK && i < herd_gguf_n_kv(g); i++)
        rc = herd_gguf_writer_add_kv_copy(w, herd_gguf_kv_at(g, i), err);
    for (size_t i = 0; rc == HERD_OK && i < herd_gguf_n_tensors(g); i++) {
        const struct herd_gguf_tensor *t = herd_gguf_tensor_at(g, i);
        char name[128];
        memcpy(name, t->name.ptr, (size_t)t->name.len);
        name[t->name.len] = '\0';
        rc = herd_gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, err);
    }
    if (rc == HERD_OK) rc = herd_gguf_writer_begin(w, out, err);
    for (size_t i = 0; rc == HERD_OK && i < herd_gguf_n_tensors(g); i++) {
        const struct herd_gguf_tensor *t = herd_gguf_tensor_at(g, i);
        rc = herd_gguf_writer_put_tensor_data(w, t->data, t->n_bytes, err);
    }
    if (rc == HERD_OK) rc = herd_gguf_writer_finish(w, err);
    herd_gguf_writer_destroy(w);
    return rc;
}

static void assert_roundtrip(const char *path) {
    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    if (herd_gguf_open_file(path, &g, &err) != HERD_OK) fail_msg("%s", err.msg);
    char out[512];
    test_tmp_path("roundtrip.gguf", out, sizeof out);
    if (rewrite(g, out, &err) != HERD_OK) fail_msg("%s: %s", path, err.msg);
    size_t n_in, n_out;
    unsigned char *in = test_read_file(path, &n_in);
    unsigned char *written = test_read_file(out, &n_out);
    if (n_in != n_out) fail_msg("%s: %zu bytes in, %zu out", path, n_in, n_out);
    size_t i = 0;
    while (i < n_in && in[i] == written[i]) i++;
    if (i != n_in) fail_msg("%s: first difference at byte %zu", path, i);
    struct herd_gguf *again = NULL;
    if (herd_gguf_open_file(out, &again, &err) != HERD_OK) fail_msg("reread: %s", err.msg);
    assert_int_equal(herd_gguf_n_kv(again), herd_gguf_n_kv(g));
    assert_int_equal(herd_gguf_n_tensors(again), herd_gguf_n_tensors(g));
    herd_gguf_destroy(again);
    herd_gguf_destroy(g);
    free(in);
    free(written);
    unlink(out);
}

static void test_roundtrip_repo_files(void **state) {
    (void)state;
    char p[512];
    assert_roundtrip(test_data_path("ggml-vocab-llama-spm.gguf", p, sizeof p));
    assert_roundtrip(test_data_path("tiny-spm-q4_0.gguf", p, sizeof p));
    snprintf(p, sizeof p, "%s/models/stories260K.gguf", HERD_SOURCE_DIR);
    assert_roundtrip(p);
}

static void test_roundtrip_shared_fixtures(void **state) {
    (void)state;
    static const char *const files[] = {
        "fixtures/models/tiny-spm-f32.gguf",        "fixtures/models/tiny-spm-f16.gguf",
        "fixtures/models/tiny-spm-q8_0.gguf",       "fixtures/models/tiny-spm-q4_0.gguf",
        "fixtures/models/tiny-spm-tied-f32.gguf",   "fixtures/models/tiny-bpe-q4_0.gguf",
        "fixtures/tokenizer/ggml-vocab-gpt-2.gguf", "fixtures/tokenizer/ggml-vocab-llama-spm.gguf",
        "fixtures/tokenizer/ggml-vocab-phi-3.gguf",
    };
    char p[512];
    if (!test_shared_path("fixtures", p, sizeof p)) skip();
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (!test_shared_path(files[i], p, sizeof p)) fail_msg("fixture %s missing", files[i]);
        assert_roundtrip(p);
    }
}

static void test_writer_rejects_duplicates_and_bad_alignment(void **state) {
    (void)state;
    struct herd_error err = {0};
    struct herd_gguf_writer *w = herd_gguf_writer_create();
    assert_int_equal(herd_gguf_writer_add_u32(w, "a", 1, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_string(w, "a", "x", &err), HERD_E_DUPLICATE);
    assert_int_equal(herd_gguf_writer_add_u32(w, "general.alignment", 3, &err), HERD_E_INVALID);
    assert_int_equal(herd_gguf_writer_add_u32(w, "", 3, &err), HERD_E_INVALID);
    uint64_t ne[1] = {32};
    assert_int_equal(herd_gguf_writer_add_tensor(w, "t", HERD_GGML_TYPE_F32, 1, ne, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_tensor(w, "t", HERD_GGML_TYPE_F32, 1, ne, &err), HERD_E_DUPLICATE);
    uint64_t odd[1] = {33};
    assert_int_equal(herd_gguf_writer_add_tensor(w, "u", HERD_GGML_TYPE_Q8_0, 1, odd, &err), HERD_E_FORMAT);
    herd_gguf_writer_destroy(w);
}

static void test_writer_alignment_and_layout(void **state) {
    (void)state;
    struct herd_error err = {0};
    char out[512];
    test_tmp_path("aligned.gguf", out, sizeof out);
    struct herd_gguf_writer *w = herd_gguf_writer_create();
    assert_int_equal(herd_gguf_writer_add_u32(w, "general.alignment", 64, &err), HERD_OK);
    uint64_t ne[2] = {3, 1};
    float a[3] = {1, 2, 3}, b[3] = {4, 5, 6};
    assert_int_equal(herd_gguf_writer_add_tensor(w, "a", HERD_GGML_TYPE_F32, 1, ne, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_tensor(w, "b", HERD_GGML_TYPE_F32, 1, ne, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_begin(w, out, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_put_tensor_data(w, a, 8, &err), HERD_E_INVALID); /* wrong size */
    assert_int_equal(herd_gguf_writer_put_tensor_data(w, a, sizeof a, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_finish(w, &err), HERD_E_INVALID); /* b has no data yet */
    assert_int_equal(herd_gguf_writer_put_tensor_data(w, b, sizeof b, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_finish(w, &err), HERD_OK);
    herd_gguf_writer_destroy(w);
    struct herd_gguf *g = NULL;
    assert_int_equal(herd_gguf_open_file(out, &g, &err), HERD_OK);
    assert_int_equal(herd_gguf_alignment(g), 64);
    assert_int_equal(herd_gguf_data_offset(g) % 64, 0);
    assert_int_equal(herd_gguf_find_tensor(g, "b")->offset, 64);
    assert_memory_equal(herd_gguf_find_tensor(g, "b")->data, b, sizeof b);
    assert_int_equal(herd_gguf_file_size(g), herd_gguf_data_offset(g) + 128);
    herd_gguf_destroy(g);
    unlink(out);
}

/* A write that fails (here: the file size limit, as a full disk would) must
 * leave whatever was at the target path untouched and no temp file behind. */
static void test_writer_failure_keeps_old_file(void **state) {
    (void)state;
    struct herd_error err = {0};
    char out[512], tmp[600];
    test_tmp_path("keep.gguf", out, sizeof out);
    FILE *f = fopen(out, "wb");
    fputs("old contents", f);
    fclose(f);

    struct herd_gguf_writer *w = herd_gguf_writer_create();
    uint64_t ne[1] = {1 << 20};
    float *big = calloc(1 << 20, sizeof *big);
    assert_int_equal(herd_gguf_writer_add_tensor(w, "big", HERD_GGML_TYPE_F32, 1, ne, &err), HERD_OK);
    struct rlimit old;
    getrlimit(RLIMIT_FSIZE, &old);
    struct rlimit lim = {64 * 1024, old.rlim_max};
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    enum herd_status rc = herd_gguf_writer_begin(w, out, &err);
    if (rc == HERD_OK) rc = herd_gguf_writer_put_tensor_data(w, big, (1 << 20) * sizeof(float), &err);
    if (rc == HERD_OK) rc = herd_gguf_writer_finish(w, &err);
    setrlimit(RLIMIT_FSIZE, &old);
    assert_int_equal(rc, HERD_E_IO);
    assert_non_null(strstr(err.msg, out));
    herd_gguf_writer_destroy(w);
    free(big);

    size_t n;
    unsigned char *kept = test_read_file(out, &n);
    assert_int_equal(n, strlen("old contents"));
    assert_memory_equal(kept, "old contents", n);
    free(kept);
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", out, (long)getpid());
    assert_false(test_path_exists(tmp));
    unlink(out);

    w = herd_gguf_writer_create();
    assert_int_equal(herd_gguf_writer_begin(w, "/nonexistent-dir/x.gguf", &err), HERD_E_IO);
    assert_non_null(strstr(err.msg, "/nonexistent-dir/x.gguf"));
    herd_gguf_writer_destroy(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_repo_files),
        cmocka_unit_test(test_roundtrip_shared_fixtures),
        cmocka_unit_test(test_writer_rejects_duplicates_and_bad_alignment),
        cmocka_unit_test(test_writer_alignment_and_layout),
        cmocka_unit_test(test_writer_failure_keeps_old_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
