/* multipart/form-data: the body the openai SDKs send for a file upload,
 * boundaries quoted or not, binary data that looks like a delimiter, empty
 * parts, LF-only line ends, and every malformed body refused with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "http/multipart.h"
#include "test_util.h"

static bool parse(const char *body, size_t len, const char *boundary, struct herd_multipart_part *parts, size_t max,
                  size_t *n, char *err) {
    return herd_multipart_parse(body, len, boundary, strlen(boundary), parts, max, n, err, 160);
}

static bool part_is(const struct herd_multipart_part *p, const char *data, size_t len) {
    return p && p->len == len && memcmp(p->data, data, len) == 0;
}

static void test_boundary(void **state) {
    (void)state;
    const char *b;
    size_t n;
    assert_true(herd_multipart_boundary("multipart/form-data; boundary=----formdata-undici-0123", &b, &n));
    assert_int_equal(n, strlen("----formdata-undici-0123"));
    assert_memory_equal(b, "----formdata-undici-0123", n);
    assert_true(herd_multipart_boundary("Multipart/Form-Data;BOUNDARY=\"a b:c\"", &b, &n));
    assert_int_equal(n, 5);
    assert_memory_equal(b, "a b:c", 5);
    assert_true(herd_multipart_boundary("multipart/form-data; charset=utf-8; boundary=xyz", &b, &n));
    assert_int_equal(n, 3);
    assert_false(herd_multipart_boundary("application/json", &b, &n));
    assert_false(herd_multipart_boundary("multipart/form-data", &b, &n));
    assert_false(herd_multipart_boundary("multipart/form-dataX; boundary=a", &b, &n));
    assert_false(herd_multipart_boundary("multipart/form-data; boundary=", &b, &n));
    char longb[120] = "multipart/form-data; boundary=";
    memset(longb + strlen(longb), 'a', 71);
    assert_false(herd_multipart_boundary(longb, &b, &n));
}

/* What the openai node SDK (undici's FormData) sends. */
static void test_sdk_upload(void **state) {
    (void)state;
    static const char body[] = "------formdata-undici-0123\r\n"
                               "Content-Disposition: form-data; name=\"purpose\"\r\n\r\n"
                               "batch\r\n"
                               "------formdata-undici-0123\r\n"
                               "Content-Disposition: form-data; name=\"file\"; filename=\"input.jsonl\"\r\n"
                               "Content-Type: application/octet-stream\r\n\r\n"
                               "{\"a\":1}\n{\"b\":2}\n\r\n"
                               "------formdata-undici-0123--\r\n";
    struct herd_multipart_part parts[4];
    size_t n;
    char err[160];
    assert_true(parse(body, sizeof body - 1, "----formdata-undici-0123", parts, 4, &n, err));
    assert_int_equal(n, 2);
    const struct herd_multipart_part *purpose = herd_multipart_find(parts, n, "purpose");
    const struct herd_multipart_part *file = herd_multipart_find(parts, n, "file");
    assert_true(part_is(purpose, "batch", 5));
    assert_null(purpose->filename);
    assert_true(part_is(file, "{\"a\":1}\n{\"b\":2}\n", 16));
    assert_int_equal(file->filename_len, 11);
    assert_memory_equal(file->filename, "input.jsonl", 11);
    assert_int_equal(file->content_type_len, strlen("application/octet-stream"));
    assert_null(herd_multipart_find(parts, n, "other"));
}

static void test_binary_and_edges(void **state) {
    (void)state;
    /* data holding "--B" not at a line start, CRLFs and NULs; an empty
     * part; a preamble and an epilogue; LF-only framing */
    static const char body[] = "preamble\r\n--B\r\n"
                               "content-disposition: form-data; name=a\r\n\r\n"
                               "x--B\r\n-\0y\r\r\n"
                               "\r\n--B\n"
                               "Content-Disposition: form-data; name=\"e\"\n\n"
                               "\n--B--\r\nepilogue";
    struct herd_multipart_part parts[4];
    size_t n;
    char err[160];
    assert_true(parse(body, sizeof body - 1, "B", parts, 4, &n, err));
    assert_int_equal(n, 2);
    assert_true(part_is(&parts[0], "x--B\r\n-\0y\r\r\n", 12));
    assert_true(part_is(&parts[1], "", 0));
    assert_int_equal(parts[1].name_len, 1);
}

static void expect_refused(const char *body, size_t max, const char *why) {
    struct herd_multipart_part parts[4];
    size_t n;
    char err[160] = "";
    if (parse(body, strlen(body), "B", parts, max, &n, err)) fail_msg("accepted: %s", body);
    if (!strstr(err, why)) fail_msg("want '%s', got '%s'", why, err);
}

static void test_refused(void **state) {
    (void)state;
    expect_refused("no delimiter at all", 4, "no opening boundary");
    expect_refused("--B\r\nContent-Disposition: form-data; name=a\r\n\r\ndata", 4, "no closing boundary");
    expect_refused("--B\r\nContent-Disposition: form-data; name=a\r\nno blank line", 4, "do not end with a blank line");
    expect_refused("--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--", 4, "without Content-Disposition");
    expect_refused("--B\r\nContent-Disposition: attachment; name=a\r\n\r\nx\r\n--B--", 4, "not form-data");
    expect_refused("--B\r\nno colon here\r\n\r\nx\r\n--B--", 4, "without a colon");
    expect_refused("--B junk\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--B--", 4, "junk after a boundary");
    expect_refused("--B--\r\n", 4, "no parts");
    expect_refused("--B", 4, "ends after a boundary");
    expect_refused("--B\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--B\r\n"
                   "Content-Disposition: form-data; name=b\r\n\r\ny\r\n--B--",
                   1, "too many parts");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boundary),
        cmocka_unit_test(test_sdk_upload),
        cmocka_unit_test(test_binary_and_edges),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
