/* safetensors reader: a well-formed file written here reads back with the
 * right dtypes, shapes, data and metadata; every way a header can lie
 * (sizes, JSON, dtypes, shapes, offsets out of range, overlapping or not
 * matching the shape) is an error that names the file and the field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "convert/safetensors.h"
#include "test_util.h"

/* Writes u64 header length, header, data. header_len overrides the length
 * field when not 0 (for lying sizes). */
static void write_st(const char *path, const char *header, const void *data, size_t data_len, uint64_t header_len) {
    struct herd_buf b;
    herd_buf_init(&b, SIZE_MAX);
    put_u64(&b, header_len ? header_len : strlen(header));
    herd_buf_append(&b, header, strlen(header));
    if (data_len) herd_buf_append(&b, data, data_len);
    FILE *f = fopen(path, "wb");
    fwrite(b.data, 1, b.len, f);
    fclose(f);
    herd_buf_cleanup(&b);
}

static void test_reads_a_valid_file(void **state) {
    (void)state;
    char path[512];
    test_tmp_path("ok.safetensors", path, sizeof path);
    /* 2x3 F32, 4 BF16, a scalar F16, an empty I8 tensor, metadata; the
     * header is space-padded as the Python writer pads it */
    uint8_t data[24 + 8 + 2];
    float m[6] = {1, 2, 3, 4, 5, 6};
    memcpy(data, m, 24);
    const uint16_t bf[4] = {0x3f80, 0x4000, 0xbf80, 0x0000}; /* 1, 2, -1, 0 */
    memcpy(data + 24, bf, 8);
    const uint16_t h = 0x3c00; /* 1.0 */
    memcpy(data + 32, &h, 2);
    write_st(path,
             "{\"__metadata__\":{\"format\":\"pt\",\"b\":\"m\"},"
             "\"m\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
             "\"s\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[32,34]},"
             "\"e\":{\"dtype\":\"I8\",\"shape\":[0,5],\"data_offsets\":[34,34]}}    ",
             data, sizeof data, 0);
    struct herd_safetensors *st = NULL;
    struct herd_error err = {0};
    if (herd_safetensors_open(path, &st, &err) != HERD_OK) fail_msg("%s", err.msg);
    assert_int_equal(herd_safetensors_n_tensors(st), 4);
    /* name order */
    assert_string_equal(herd_safetensors_tensor_at(st, 0)->name, "b");
    assert_string_equal(herd_safetensors_tensor_at(st, 3)->name, "s");
    assert_null(herd_safetensors_tensor_at(st, 4));
    const struct herd_safetensors_tensor *t = herd_safetensors_find(st, "m");
    assert_non_null(t);
    assert_int_equal(t->dtype, HERD_SAFETENSORS_F32);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->n_elems, 6);
    assert_int_equal(t->n_bytes, 24);
    float got[6];
    memcpy(got, t->data, 24);
    assert_memory_equal(got, m, 24);
    t = herd_safetensors_find(st, "b");
    assert_int_equal(t->dtype, HERD_SAFETENSORS_BF16);
    assert_memory_equal(t->data, bf, 8);
    t = herd_safetensors_find(st, "s");
    assert_int_equal(t->n_dims, 0);
    assert_int_equal(t->n_elems, 1);
    t = herd_safetensors_find(st, "e");
    assert_int_equal(t->n_elems, 0);
    assert_int_equal(t->n_bytes, 0);
    assert_null(herd_safetensors_find(st, "missing"));
    assert_string_equal(herd_safetensors_metadata(st, "format"), "pt");
    assert_string_equal(herd_safetensors_metadata(st, "b"), "m");
    assert_null(herd_safetensors_metadata(st, "nope"));
    /* releasing the pages keeps the data readable */
    t = herd_safetensors_find(st, "m");
    herd_safetensors_release(st, t);
    memcpy(got, t->data, 24);
    assert_memory_equal(got, m, 24);
    assert_string_equal(herd_safetensors_dtype_name(HERD_SAFETENSORS_BF16), "BF16");
    assert_int_equal(herd_safetensors_dtype_size(HERD_SAFETENSORS_F64), 8);
    assert_string_equal(herd_safetensors_dtype_name((enum herd_safetensors_dtype)99), "?");
    herd_safetensors_destroy(st);
    herd_safetensors_destroy(NULL);
    unlink(path);
}

/* Opens a file with this header (and data_len zero bytes of data) and
 * expects status want with each fragment in the message. */
static void expect_bad(const char *header, size_t data_len, uint64_t header_len, enum herd_status want,
                       const char *fragment) {
    char path[512];
    test_tmp_path("bad.safetensors", path, sizeof path);
    uint8_t *data = calloc(1, data_len + 1);
    write_st(path, header, data, data_len, header_len);
    free(data);
    struct herd_safetensors *st = (struct herd_safetensors *)1;
    struct herd_error err = {0};
    enum herd_status rc = herd_safetensors_open(path, &st, &err);
    if (rc != want || !strstr(err.msg, fragment) || !strstr(err.msg, "bad.safetensors"))
        fail_msg("header %.60s: got %s '%s', want %s with '%s'", header, herd_status_name(rc), err.msg,
                 herd_status_name(want), fragment);
    assert_null(st);
    unlink(path);
}

#define T(body) "{\"w\":{" body "}}"

static void test_lying_headers(void **state) {
    (void)state;
    /* sizes */
    expect_bad("{}", 0, 1000, HERD_E_TRUNCATED, "the header needs 1000 bytes");
    expect_bad("{}", 0, 200000000, HERD_E_FORMAT, "exceeds");
    expect_bad("{}", 0, UINT64_MAX, HERD_E_FORMAT, "exceeds");
    /* JSON */
    expect_bad("{\"w\": [1, 2", 0, 0, HERD_E_FORMAT, "header JSON");
    expect_bad("[1, 2]", 0, 0, HERD_E_FORMAT, "not a JSON object");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, 0, HERD_E_FORMAT, "header JSON");
    expect_bad("{\"w\": 5}", 0, 0, HERD_E_FORMAT, "'w'");
    expect_bad("{\"__metadata__\": [1]}", 0, 0, HERD_E_FORMAT, "__metadata__");
    expect_bad("{\"__metadata__\": {\"k\": 3}}", 0, 0, HERD_E_FORMAT, "__metadata__ entry 'k'");
    /* dtype */
    expect_bad(T("\"dtype\":\"F17\",\"shape\":[1],\"data_offsets\":[0,4]"), 4, 0, HERD_E_FORMAT, "unknown dtype 'F17'");
    expect_bad(T("\"shape\":[1],\"data_offsets\":[0,4]"), 4, 0, HERD_E_FORMAT, "dtype");
    /* shape */
    expect_bad(T("\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,4]"), 4, 0, HERD_E_FORMAT, "shape");
    expect_bad(T("\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]"), 4, 0, HERD_E_FORMAT, "shape[0]");
    expect_bad(T("\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]"), 4, 0, HERD_E_FORMAT, "shape[0]");
    expect_bad(T("\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]"), 4, 0, HERD_E_FORMAT,
               "9 dimensions");
    expect_bad(T("\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]"), 4, 0, HERD_E_OVERFLOW,
               "element count overflows");
    expect_bad(T("\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]"), 4, 0, HERD_E_OVERFLOW,
               "byte count overflows");
    /* offsets */
    expect_bad(T("\"dtype\":\"F32\",\"shape\":[1]"), 4, 0, HERD_E_FORMAT, "data_offsets");
    expect_bad(T("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]"), 4, 0, HERD_E_FORMAT, "data_offsets");
    expect_bad(T("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]"), 4, 0, HERD_E_FORMAT, "data_offsets");
    expect_bad(T("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]"), 8, 0, HERD_E_FORMAT, "end before");
    expect_bad(T("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]"), 4, 0, HERD_E_TRUNCATED,
               "reach past the 4 bytes");
    expect_bad(T("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[18446744073709551612,18446744073709551615]"), 4, 0,
               HERD_E_FORMAT, "header JSON"); /* past int64: jansson refuses */
    /* shape and bytes disagree */
    expect_bad(T("\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]"), 8, 0, HERD_E_FORMAT,
               "needs 12 bytes, data_offsets [0, 8] hold 8");
    expect_bad(T("\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,16]"), 16, 0, HERD_E_FORMAT, "needs 8");
    /* overlap */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, 0, HERD_E_FORMAT, "overlap");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
               16, 0, HERD_E_FORMAT, "'a' (bytes 0..16) and 'b' (bytes 8..12) overlap");
}

static void test_short_and_missing_files(void **state) {
    (void)state;
    char path[512];
    test_tmp_path("short.safetensors", path, sizeof path);
    FILE *f = fopen(path, "wb");
    fwrite("\x02\x00\x00", 1, 3, f);
    fclose(f);
    struct herd_safetensors *st = NULL;
    struct herd_error err = {0};
    assert_int_equal(herd_safetensors_open(path, &st, &err), HERD_E_TRUNCATED);
    assert_non_null(strstr(err.msg, "needs 8"));
    f = fopen(path, "wb");
    fclose(f);
    assert_int_equal(herd_safetensors_open(path, &st, &err), HERD_E_TRUNCATED);
    unlink(path);
    assert_int_equal(herd_safetensors_open("/nonexistent/x.safetensors", &st, &err), HERD_E_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/x.safetensors"));
    assert_null(st);
    /* gaps between tensors hold no tensor and are allowed */
    uint8_t data[16] = {0};
    write_st(path,
             "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
             "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[8,10]}}",
             data, sizeof data, 0);
    if (herd_safetensors_open(path, &st, &err) != HERD_OK) fail_msg("%s", err.msg);
    herd_safetensors_destroy(st);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_a_valid_file),
        cmocka_unit_test(test_lying_headers),
        cmocka_unit_test(test_short_and_missing_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
