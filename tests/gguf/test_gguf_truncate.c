/* RELIABILITY.md A1: the default model (a real, converted GGUF) cut at every
 * byte offset must be refused with HERD_E_TRUNCATED, never crash, hang or
 * leak. Prefixes that end inside the header, metadata or tensor infos are
 * parsed from exact-size heap copies, so under ASan a single byte read past
 * the end fails the test; past that the parser reads no more bytes, and one
 * shared buffer serves the rest. A fixture with a 32000-token vocabulary is
 * cut at every offset of its first 4 KiB and at a stride beyond. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "herd/gguf.h"
#include "test_util.h"

static void check_prefix(const unsigned char *bytes, size_t n, bool exact_copy) {
    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    unsigned char *copy = NULL;
    const unsigned char *p = bytes;
    if (exact_copy) {
        copy = malloc(n ? n : 1);
        memcpy(copy, bytes, n);
        p = copy;
    }
    enum herd_status rc = herd_gguf_open_memory(p, n, &g, &err);
    if (rc != HERD_E_TRUNCATED) fail_msg("prefix of %zu bytes: got %s (%s)", n, herd_status_name(rc), err.msg);
    assert_null(g);
    free(copy);
}

static void truncate_file(const char *path, size_t exact_upto, size_t stride) {
    size_t size;
    unsigned char *bytes = test_read_file(path, &size);
    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    if (herd_gguf_open_memory(bytes, size, &g, &err) != HERD_OK) fail_msg("%s: %s", path, err.msg);
    size_t data_at = (size_t)herd_gguf_data_offset(g);
    herd_gguf_destroy(g);
    if (exact_upto == 0) exact_upto = data_at;
    for (size_t n = 0; n < size; n += (n < exact_upto ? 1 : stride)) check_prefix(bytes, n, n <= exact_upto);
    check_prefix(bytes, size - 1, false);
    free(bytes);
}

static void test_default_model_every_offset(void **state) {
    (void)state;
    char p[512];
    snprintf(p, sizeof p, "%s/models/stories260K.gguf", HERD_SOURCE_DIR);
    truncate_file(p, 0, 1);
}

static void test_large_vocab_fixture(void **state) {
    (void)state;
    char p[512];
    truncate_file(test_data_path("tiny-spm-q4_0.gguf", p, sizeof p), 4096, 997);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_model_every_offset),
        cmocka_unit_test(test_large_vocab_fixture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
