/* GGUF reader against hand-made files: every value type parsed right, and
 * each hostile input of ../shared/RELIABILITY.md rows A1-A6 refused with the
 * right status and a message naming the field. Inputs are parsed from
 * exact-size heap copies so ASan catches any read past the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "herd/gguf.h"
#include "test_util.h"

/* ------------------------------------------------------------ helpers */

static void header(struct herd_buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    herd_buf_init(b, SIZE_MAX);
    herd_buf_append(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}

/* Parses b's bytes from an exact-size copy; returns the status and fills err. */
static enum herd_status parse_bytes(const struct herd_buf *b, struct herd_error *err) {
    unsigned char *copy = malloc(b->len ? b->len : 1);
    if (b->len) memcpy(copy, b->data, b->len);
    struct herd_gguf *g = NULL;
    enum herd_status rc = herd_gguf_open_memory(copy, b->len, &g, err);
    if (rc == HERD_OK)
        assert_non_null(g);
    else
        assert_null(g);
    herd_gguf_destroy(g);
    free(copy);
    return rc;
}

/* Expects status want and a message containing each of the given fragments. */
static void expect_error(struct herd_buf *b, enum herd_status want, const char *frag1, const char *frag2) {
    struct herd_error err = {0};
    enum herd_status rc = parse_bytes(b, &err);
    if (rc != want || (frag1 && !strstr(err.msg, frag1)) || (frag2 && !strstr(err.msg, frag2)))
        fail_msg("got %s '%s', want %s with '%s' '%s'", herd_status_name(rc), err.msg, herd_status_name(want),
                 frag1 ? frag1 : "", frag2 ? frag2 : "");
    herd_buf_cleanup(b);
}

/* One tensor info record. */
static void tensor_info(struct herd_buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                        uint64_t offset) {
    put_str(b, name);
    put_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) put_u64(b, ne[i]);
    put_u32(b, type);
    put_u64(b, offset);
}

/* ------------------------------------------------------------ valid files */

static void test_every_value_type(void **state) {
    (void)state;
    struct herd_buf b;
    header(&b, 3, 1, 14);
    put_str(&b, "u8"), put_u32(&b, HERD_GGUF_VTYPE_U8), put_u8(&b, 200);
    put_str(&b, "i8"), put_u32(&b, HERD_GGUF_VTYPE_I8), put_u8(&b, 0xfe);
    put_str(&b, "u16"), put_u32(&b, HERD_GGUF_VTYPE_U16), herd_buf_append_le(&b, 60000, 2);
    put_str(&b, "i16"), put_u32(&b, HERD_GGUF_VTYPE_I16), herd_buf_append_le(&b, 0xfffd, 2);
    put_str(&b, "u32"), put_u32(&b, HERD_GGUF_VTYPE_U32), put_u32(&b, 4000000000u);
    put_str(&b, "i32"), put_u32(&b, HERD_GGUF_VTYPE_I32), put_u32(&b, (uint32_t)-5);
    put_str(&b, "f32"), put_u32(&b, HERD_GGUF_VTYPE_F32), put_f32(&b, 1.5f);
    put_str(&b, "bool"), put_u32(&b, HERD_GGUF_VTYPE_BOOL), put_u8(&b, 1);
    put_str(&b, "str"), put_u32(&b, HERD_GGUF_VTYPE_STRING), put_str(&b, "hello");
    put_str(&b, "u64"), put_u32(&b, HERD_GGUF_VTYPE_U64), put_u64(&b, UINT64_MAX);
    put_str(&b, "i64"), put_u32(&b, HERD_GGUF_VTYPE_I64), put_u64(&b, (uint64_t)INT64_MIN);
    double d = -2.25;
    uint64_t dbits;
    memcpy(&dbits, &d, 8);
    put_str(&b, "f64"), put_u32(&b, HERD_GGUF_VTYPE_F64), put_u64(&b, dbits);
    put_str(&b, "arr.i32"), put_u32(&b, HERD_GGUF_VTYPE_ARRAY), put_u32(&b, HERD_GGUF_VTYPE_I32), put_u64(&b, 3);
    put_u32(&b, 7), put_u32(&b, (uint32_t)-8), put_u32(&b, 9);
    put_str(&b, "arr.str"), put_u32(&b, HERD_GGUF_VTYPE_ARRAY), put_u32(&b, HERD_GGUF_VTYPE_STRING), put_u64(&b, 3);
    put_str(&b, "a"), put_str(&b, ""), put_str(&b, "ccc");
    uint64_t ne[2] = {32, 2};
    tensor_info(&b, "w", 2, ne, HERD_GGML_TYPE_Q8_0, 0);
    put_pad(&b, 32);
    size_t data_at = b.len;
    put_zeros(&b, 2 * 34);

    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    assert_int_equal(herd_gguf_open_memory(b.data, b.len, &g, &err), HERD_OK);
    assert_int_equal(herd_gguf_version(g), 3);
    assert_int_equal(herd_gguf_n_kv(g), 14);
    assert_int_equal(herd_gguf_find_kv(g, "u8")->v.u, 200);
    assert_int_equal(herd_gguf_find_kv(g, "i8")->v.i, -2);
    assert_int_equal(herd_gguf_find_kv(g, "u16")->v.u, 60000);
    assert_int_equal(herd_gguf_find_kv(g, "i16")->v.i, -3);
    assert_int_equal(herd_gguf_find_kv(g, "i32")->v.i, -5);
    assert_true(herd_gguf_find_kv(g, "f32")->v.f == 1.5);
    assert_true(herd_gguf_find_kv(g, "bool")->v.b);
    assert_true(herd_gguf_str_eq(herd_gguf_find_kv(g, "str")->v.s, "hello"));
    assert_true(herd_gguf_find_kv(g, "u64")->v.u == UINT64_MAX);
    assert_true(herd_gguf_find_kv(g, "i64")->v.i == INT64_MIN);
    assert_true(herd_gguf_find_kv(g, "f64")->v.f == -2.25);
    assert_null(herd_gguf_find_kv(g, "missing"));

    uint64_t u;
    assert_int_equal(herd_gguf_get_uint(g, "u32", UINT32_MAX, &u, &err), HERD_OK);
    assert_int_equal(u, 4000000000u);
    assert_int_equal(herd_gguf_get_uint(g, "u32", 100, &u, &err), HERD_E_INVALID);
    assert_int_equal(herd_gguf_get_uint(g, "i32", 100, &u, &err), HERD_E_INVALID);
    assert_int_equal(herd_gguf_get_uint(g, "str", 100, &u, &err), HERD_E_FORMAT);
    assert_non_null(strstr(err.msg, "'str'"));
    assert_int_equal(herd_gguf_get_uint(g, "nope", 100, &u, &err), HERD_E_NOT_FOUND);
    double f;
    assert_int_equal(herd_gguf_get_float(g, "f64", &f, &err), HERD_OK);
    assert_true(f == -2.25);

    struct herd_gguf_array arr;
    assert_int_equal(herd_gguf_get_array(g, "arr.i32", HERD_GGUF_VTYPE_I32, &arr, &err), HERD_OK);
    assert_int_equal(arr.count, 3);
    assert_int_equal(herd_gguf_array_i64(&arr, 1), -8);
    assert_int_equal(herd_gguf_get_array(g, "arr.i32", HERD_GGUF_VTYPE_F32, &arr, &err), HERD_E_FORMAT);
    assert_non_null(strstr(err.msg, "array of i32"));
    assert_int_equal(herd_gguf_get_array(g, "arr.str", HERD_GGUF_VTYPE_STRING, &arr, &err), HERD_OK);
    struct herd_gguf_str_iter it;
    struct herd_gguf_str s;
    herd_gguf_str_iter_init(&it, &arr);
    assert_true(herd_gguf_str_iter_next(&it, &s) && herd_gguf_str_eq(s, "a"));
    assert_true(herd_gguf_str_iter_next(&it, &s) && herd_gguf_str_eq(s, ""));
    assert_true(herd_gguf_str_iter_next(&it, &s) && herd_gguf_str_eq(s, "ccc"));
    assert_false(herd_gguf_str_iter_next(&it, &s));

    const struct herd_gguf_tensor *t = herd_gguf_find_tensor(g, "w");
    assert_non_null(t);
    assert_int_equal(t->n_bytes, 68);
    assert_int_equal(t->n_elems, 64);
    assert_ptr_equal(t->data, b.data + data_at);
    assert_null(herd_gguf_find_tensor(g, "x"));
    herd_gguf_destroy(g);
    herd_buf_cleanup(&b);
}

static void test_version2_and_vocab_only(void **state) {
    (void)state;
    struct herd_buf b;
    header(&b, 2, 0, 1);
    put_str(&b, "general.architecture"), put_u32(&b, HERD_GGUF_VTYPE_STRING), put_str(&b, "llama");
    struct herd_error err = {0};
    assert_int_equal(parse_bytes(&b, &err), HERD_OK);
    herd_buf_cleanup(&b);
}

/* ------------------------------------------------------------ A1: truncation */

static void test_a1_tiny_files(void **state) {
    (void)state;
    struct herd_buf b;
    herd_buf_init(&b, SIZE_MAX);
    expect_error(&b, HERD_E_TRUNCATED, "4-byte magic", NULL);
    herd_buf_init(&b, SIZE_MAX);
    herd_buf_append(&b, "GGUF", 4);
    expect_error(&b, HERD_E_TRUNCATED, "version", "offset 4");
    header(&b, 3, 0, 0);
    b.len = 16;
    expect_error(&b, HERD_E_TRUNCATED, "n_kv", "offset 16");
}

/* ------------------------------------------------------------ header */

static void test_magic_and_version(void **state) {
    (void)state;
    struct herd_buf b;
    header(&b, 3, 0, 0);
    memcpy(b.data, "GGUX", 4);
    expect_error(&b, HERD_E_FORMAT, "bad magic", "offset 0");
    header(&b, 3, 0, 0);
    memcpy(b.data, "tjgg", 4);
    expect_error(&b, HERD_E_UNSUPPORTED, "pre-GGUF", NULL);
    header(&b, 1, 0, 0);
    expect_error(&b, HERD_E_UNSUPPORTED, "version 1", NULL);
    header(&b, 0x03000000u, 0, 0);
    expect_error(&b, HERD_E_UNSUPPORTED, "big-endian", NULL);
    header(&b, 4, 0, 0);
    expect_error(&b, HERD_E_UNSUPPORTED, "version 4", NULL);
}

/* A2: counts that would make a naive reader allocate without bound. */
static void test_a2_header_counts(void **state) {
    (void)state;
    const uint64_t huge[] = {UINT64_MAX, 1ull << 63, 1ull << 32};
    struct herd_buf b;
    for (size_t i = 0; i < 3; i++) {
        header(&b, 3, 0, huge[i]);
        expect_error(&b, HERD_E_FORMAT, "n_kv", "limit");
        header(&b, 3, huge[i], 0);
        expect_error(&b, HERD_E_FORMAT, "n_tensors", "limit");
    }
    /* Under the cap but more than the file could hold. */
    header(&b, 3, 0, 60000);
    put_zeros(&b, 100);
    expect_error(&b, HERD_E_TRUNCATED, "60000 metadata entries", NULL);
    header(&b, 3, 1000000, 0);
    expect_error(&b, HERD_E_TRUNCATED, "tensor infos", NULL);
}

/* ------------------------------------------------------------ A3: strings and arrays */

static void kv_header(struct herd_buf *b, uint64_t key_len) {
    header(b, 3, 0, 1);
    put_u64(b, key_len);
}

static void test_a3_key_lengths(void **state) {
    (void)state;
    struct herd_buf b;
    const uint64_t lens[] = {UINT64_MAX, 1ull << 40, 65536};
    for (size_t i = 0; i < 3; i++) {
        kv_header(&b, lens[i]);
        put_zeros(&b, 64);
        expect_error(&b, HERD_E_FORMAT, "metadata key at offset 24", "exceeds the limit");
    }
    kv_header(&b, 1000); /* under the cap, past the end of the file */
    put_zeros(&b, 10);
    expect_error(&b, HERD_E_TRUNCATED, "metadata key", "need 1000 bytes");
    kv_header(&b, 0);
    put_zeros(&b, 16);
    expect_error(&b, HERD_E_FORMAT, "empty", NULL);
}

static void test_a3_value_lengths(void **state) {
    (void)state;
    struct herd_buf b;
    header(&b, 3, 0, 1);
    put_str(&b, "k"), put_u32(&b, HERD_GGUF_VTYPE_STRING), put_u64(&b, UINT64_MAX);
    expect_error(&b, HERD_E_TRUNCATED, "key 'k'", "string value");

    header(&b, 3, 0, 1);
    put_str(&b, "k"), put_u32(&b, HERD_GGUF_VTYPE_ARRAY), put_u32(&b, HERD_GGUF_VTYPE_U64), put_u64(&b, 1ull << 62);
    expect_error(&b, HERD_E_OVERFLOW, "key 'k'", "overflows");

    header(&b, 3, 0, 1);
    put_str(&b, "k"), put_u32(&b, HERD_GGUF_VTYPE_ARRAY), put_u32(&b, HERD_GGUF_VTYPE_U32), put_u64(&b, 1000);
    expect_error(&b, HERD_E_TRUNCATED, "key 'k'", NULL);

    header(&b, 3, 0, 1);
    put_str(&b, "tokens"), put_u32(&b, HERD_GGUF_VTYPE_ARRAY), put_u32(&b, HERD_GGUF_VTYPE_STRING);
    put_u64(&b, UINT64_MAX);
    expect_error(&b, HERD_E_TRUNCATED, "key 'tokens'", "strings cannot fit");

    header(&b, 3, 0, 1); /* second string's length runs past the end */
    put_str(&b, "tokens"), put_u32(&b, HERD_GGUF_VTYPE_ARRAY), put_u32(&b, HERD_GGUF_VTYPE_STRING), put_u64(&b, 2);
    put_str(&b, "ok"), put_u64(&b, 1ull << 40);
    expect_error(&b, HERD_E_TRUNCATED, "element 1", NULL);

    header(&b, 3, 0, 1);
    put_str(&b, "k"), put_u32(&b, HERD_GGUF_VTYPE_ARRAY), put_u32(&b, HERD_GGUF_VTYPE_ARRAY), put_u64(&b, 1);
    put_u32(&b, HERD_GGUF_VTYPE_U8), put_u64(&b, 1), put_u8(&b, 1);
    expect_error(&b, HERD_E_UNSUPPORTED, "arrays of arrays", NULL);

    header(&b, 3, 0, 1);
    put_str(&b, "k"), put_u32(&b, HERD_GGUF_VTYPE_ARRAY), put_u32(&b, HERD_GGUF_VTYPE__COUNT), put_u64(&b, 1);
    expect_error(&b, HERD_E_FORMAT, "unknown array element type 13", NULL);

    header(&b, 3, 0, 1);
    put_str(&b, "k"), put_u32(&b, HERD_GGUF_VTYPE__COUNT), put_u64(&b, 0);
    expect_error(&b, HERD_E_FORMAT, "unknown value type 13", "offset 33");
}

/* ------------------------------------------------------------ A4: tensor shapes */

static void one_tensor(struct herd_buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                       uint64_t offset) {
    header(b, 3, 1, 0);
    tensor_info(b, name, n_dims, ne, type, offset);
    put_pad(b, 32);
    put_zeros(b, 256);
}

static void test_a4_tensor_shapes(void **state) {
    (void)state;
    struct herd_buf b;
    uint64_t ne[5] = {32, 1, 1, 1, 1};
    one_tensor(&b, "t", 0, ne, HERD_GGML_TYPE_F32, 0);
    expect_error(&b, HERD_E_FORMAT, "tensor 't'", "n_dims 0");
    one_tensor(&b, "t", 5, ne, HERD_GGML_TYPE_F32, 0);
    expect_error(&b, HERD_E_FORMAT, "n_dims 5", NULL);
    uint64_t zero[2] = {32, 0};
    one_tensor(&b, "t", 2, zero, HERD_GGML_TYPE_F32, 0);
    expect_error(&b, HERD_E_FORMAT, "ne[1] is 0", NULL);
    uint64_t neg[1] = {(uint64_t)-32}; /* -32 as int64 */
    one_tensor(&b, "t", 1, neg, HERD_GGML_TYPE_F32, 0);
    expect_error(&b, HERD_E_OVERFLOW, "tensor 't'", "int64");
    uint64_t prod[4] = {1ull << 32, 1ull << 32, 1, 1};
    one_tensor(&b, "t", 4, prod, HERD_GGML_TYPE_F32, 0);
    expect_error(&b, HERD_E_OVERFLOW, "element count", NULL);
    /* element count fits int64, bytes do not */
    uint64_t bytes[2] = {1ull << 31, 1ull << 31};
    one_tensor(&b, "t", 2, bytes, HERD_GGML_TYPE_F64, 0);
    expect_error(&b, HERD_E_OVERFLOW, "byte size", NULL);
    uint64_t odd[1] = {33};
    one_tensor(&b, "t", 1, odd, HERD_GGML_TYPE_Q4_0, 0);
    expect_error(&b, HERD_E_FORMAT, "multiple of the q4_0 block size 32", NULL);
    const uint32_t bad_types[] = {4, 5, 31, 36, HERD_GGML_TYPE__COUNT, 1000};
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++) {
        one_tensor(&b, "t", 1, ne, bad_types[i], 0);
        expect_error(&b, HERD_E_FORMAT, "unknown ggml type id", NULL);
    }
    char long_name[65];
    memset(long_name, 'n', 64);
    long_name[64] = '\0';
    one_tensor(&b, long_name, 1, ne, HERD_GGML_TYPE_F32, 0);
    expect_error(&b, HERD_E_FORMAT, "tensor name", "exceeds the limit of 63");
    one_tensor(&b, "", 1, ne, HERD_GGML_TYPE_F32, 0);
    expect_error(&b, HERD_E_FORMAT, "empty", NULL);
}

/* ------------------------------------------------------------ A5: offsets and alignment */

static void test_a5_offsets(void **state) {
    (void)state;
    struct herd_buf b;
    uint64_t ne[1] = {32};
    one_tensor(&b, "t", 1, ne, HERD_GGML_TYPE_F32, UINT64_MAX);
    expect_error(&b, HERD_E_FORMAT, "not a multiple of the alignment", NULL);
    one_tensor(&b, "t", 1, ne, HERD_GGML_TYPE_F32, UINT64_MAX - 31);
    expect_error(&b, HERD_E_OVERFLOW, "overflows", NULL);
    one_tensor(&b, "t", 1, ne, HERD_GGML_TYPE_F32, 160); /* 128 bytes at 160 > 256 of data */
    expect_error(&b, HERD_E_TRUNCATED, "tensor 't' data [160, 288)", NULL);
    one_tensor(&b, "t", 1, ne, HERD_GGML_TYPE_F32, 16);
    expect_error(&b, HERD_E_FORMAT, "data offset 16 is not a multiple", NULL);

    header(&b, 3, 2, 0); /* overlapping */
    tensor_info(&b, "a", 1, ne, HERD_GGML_TYPE_F32, 0);
    tensor_info(&b, "b", 1, ne, HERD_GGML_TYPE_F32, 64);
    put_pad(&b, 32);
    put_zeros(&b, 256);
    expect_error(&b, HERD_E_FORMAT, "tensor 'a' data [0, 128) overlaps tensor 'b'", NULL);
}

static void alignment_file(struct herd_buf *b, uint32_t vtype, uint32_t value) {
    header(b, 3, 1, 1);
    put_str(b, "general.alignment");
    put_u32(b, vtype);
    put_u32(b, value);
    uint64_t ne[1] = {32};
    tensor_info(b, "t", 1, ne, HERD_GGML_TYPE_F32, 0);
    put_zeros(b, 512);
}

static void test_a5_alignment(void **state) {
    (void)state;
    struct herd_buf b;
    const uint32_t bad[] = {0, 3, 1u << 31, 48};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        alignment_file(&b, HERD_GGUF_VTYPE_U32, bad[i]);
        expect_error(&b, HERD_E_FORMAT, "general.alignment", "power of two");
    }
    alignment_file(&b, HERD_GGUF_VTYPE_I32, 32);
    expect_error(&b, HERD_E_FORMAT, "general.alignment", "must be u32");
    alignment_file(&b, HERD_GGUF_VTYPE_U32, 64);
    struct herd_error err = {0};
    assert_int_equal(parse_bytes(&b, &err), HERD_OK);
    herd_buf_cleanup(&b);
}

/* ------------------------------------------------------------ A6: duplicates */

static void test_a6_duplicates(void **state) {
    (void)state;
    struct herd_buf b;
    header(&b, 3, 0, 3);
    put_str(&b, "a"), put_u32(&b, HERD_GGUF_VTYPE_U8), put_u8(&b, 1);
    put_str(&b, "dup.key"), put_u32(&b, HERD_GGUF_VTYPE_U8), put_u8(&b, 1);
    put_str(&b, "dup.key"), put_u32(&b, HERD_GGUF_VTYPE_STRING), put_str(&b, "x");
    expect_error(&b, HERD_E_DUPLICATE, "duplicate metadata key 'dup.key' at offsets 38 and 58", NULL);

    uint64_t ne[1] = {32};
    header(&b, 3, 2, 0);
    tensor_info(&b, "same", 1, ne, HERD_GGML_TYPE_F32, 0);
    tensor_info(&b, "same", 1, ne, HERD_GGML_TYPE_F32, 128);
    put_pad(&b, 32);
    put_zeros(&b, 256);
    expect_error(&b, HERD_E_DUPLICATE, "duplicate tensor name 'same'", NULL);
}

static void test_printable_names(void **state) {
    (void)state;
    struct herd_buf b;
    header(&b, 3, 0, 2);
    put_u64(&b, 3), herd_buf_append(&b, "a\nb", 3), put_u32(&b, HERD_GGUF_VTYPE_U8), put_u8(&b, 1);
    put_u64(&b, 3), herd_buf_append(&b, "a\nb", 3), put_u32(&b, HERD_GGUF_VTYPE_U8), put_u8(&b, 1);
    expect_error(&b, HERD_E_DUPLICATE, "'a\\x0ab'", NULL);
}

static void test_open_file_errors(void **state) {
    (void)state;
    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    assert_int_equal(herd_gguf_open_file("/nonexistent/model.gguf", &g, &err), HERD_E_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/model.gguf"));
    assert_int_equal(herd_gguf_open_file("/", &g, &err), HERD_E_IO);
    char path[512];
    test_tmp_path("empty.gguf", path, sizeof path);
    FILE *f = fopen(path, "wb");
    fclose(f);
    assert_int_equal(herd_gguf_open_file(path, &g, &err), HERD_E_TRUNCATED);
    assert_non_null(strstr(err.msg, path));
    unlink(path);
    assert_null(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_value_type), cmocka_unit_test(test_version2_and_vocab_only),
        cmocka_unit_test(test_a1_tiny_files),    cmocka_unit_test(test_magic_and_version),
        cmocka_unit_test(test_a2_header_counts), cmocka_unit_test(test_a3_key_lengths),
        cmocka_unit_test(test_a3_value_lengths), cmocka_unit_test(test_a4_tensor_shapes),
        cmocka_unit_test(test_a5_offsets),       cmocka_unit_test(test_a5_alignment),
        cmocka_unit_test(test_a6_duplicates),    cmocka_unit_test(test_printable_names),
        cmocka_unit_test(test_open_file_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
