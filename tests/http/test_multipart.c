/* multipart/form-data: the bodies the openai SDKs send for a file upload,
 * boundaries quoted or not, binary data that looks like a delimiter, empty
 * parts, LF-only line ends, a large body of near misses, and every
 * malformed body refused with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "http/multipart.h"
#include "test_util.h"

#define ERR_SIZE 200

static bool parse_n(const char *body, size_t len, const char *boundary, struct herd_multipart_part *parts, size_t max,
                    size_t *n, char *err) {
    return herd_multipart_parse(body, len, boundary, strlen(boundary), parts, max, n, err, ERR_SIZE);
}

/* Parses a body written as a C string literal (sizeof - 1: NULs inside count). */
#define PARSE(lit, boundary, parts, max, n, err) parse_n(lit, sizeof lit - 1, boundary, parts, max, n, err)

static bool bytes_are(const char *p, size_t len, const char *want, size_t want_len) {
    return p && len == want_len && memcmp(p, want, len) == 0;
}
#define DATA_IS(part, lit)     bytes_are((part)->data, (part)->len, lit, sizeof lit - 1)
#define NAME_IS(part, lit)     bytes_are((part)->name, (part)->name_len, lit, sizeof lit - 1)
#define FILENAME_IS(part, lit) bytes_are((part)->filename, (part)->filename_len, lit, sizeof lit - 1)
#define TYPE_IS(part, lit)     bytes_are((part)->content_type, (part)->content_type_len, lit, sizeof lit - 1)

/* ---------------------------------------------------------- boundary */

static void expect_boundary(const char *ct, const char *want) {
    const char *b = NULL;
    size_t n = 0;
    if (!herd_multipart_boundary(ct, &b, &n)) fail_msg("refused: %s", ct);
    if (n != strlen(want) || memcmp(b, want, n) != 0) fail_msg("%s: got '%.*s', want '%s'", ct, (int)n, b, want);
    if (b < ct || b + n > ct + strlen(ct)) fail_msg("%s: the boundary is not inside the value", ct);
}

static void expect_no_boundary(const char *ct) {
    const char *b;
    size_t n;
    if (herd_multipart_boundary(ct, &b, &n)) fail_msg("accepted: %s ('%.*s')", ct, (int)n, b);
}

static void test_boundary(void **state) {
    (void)state;
    /* undici (openai node), httpx (openai python), curl, a browser */
    expect_boundary("multipart/form-data; boundary=----formdata-undici-012345678901",
                    "----formdata-undici-012345678901");
    expect_boundary("multipart/form-data; boundary=8d5e7c0a3b1f4e2d9c6a0b7e5f3d1c2a",
                    "8d5e7c0a3b1f4e2d9c6a0b7e5f3d1c2a");
    expect_boundary("multipart/form-data; boundary=------------------------d74496d66958873e",
                    "------------------------d74496d66958873e");
    expect_boundary("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
                    "----WebKitFormBoundary7MA4YWxkTrZu0gW");
    /* case, spacing, quoting, other parameters around it */
    expect_boundary("Multipart/Form-Data;BOUNDARY=\"a b:c\"", "a b:c");
    expect_boundary("  multipart/form-data ; boundary = xyz ", "xyz");
    expect_boundary("multipart/form-data; charset=utf-8; boundary=xyz", "xyz");
    expect_boundary("multipart/form-data; x=\"boundary=evil;\"; boundary=good", "good");
    expect_boundary("multipart/form-data; boundary=\"'()+_,-./:=? x\"", "'()+_,-./:=? x");
    char ct[160] = "multipart/form-data; boundary=";
    memset(ct + strlen(ct), 'a', 70);
    expect_boundary(ct, ct + strlen("multipart/form-data; boundary="));

    strcat(ct, "a"); /* 71 */
    expect_no_boundary(ct);
    expect_no_boundary("");
    expect_no_boundary("application/json");
    expect_no_boundary("multipart/mixed; boundary=a");
    expect_no_boundary("multipart/form-data");
    expect_no_boundary("multipart/form-data;");
    expect_no_boundary("multipart/form-dataX; boundary=a");
    expect_no_boundary("multipart/form-data x; boundary=a");
    expect_no_boundary("multipart/form-data; boundary=");
    expect_no_boundary("multipart/form-data; boundary=\"\"");
    expect_no_boundary("multipart/form-data; boundary");
    expect_no_boundary("multipart/form-data; boundary=\"abc");      /* unterminated */
    expect_no_boundary("multipart/form-data; boundary=\"a\\\"b\""); /* an escape */
    expect_no_boundary("multipart/form-data; boundary=\"ab \"");    /* a trailing space */
    expect_no_boundary("multipart/form-data; boundary=\"a\tb\"");   /* a control byte */
    expect_no_boundary("multipart/form-data; boundary=caf\xc3\xa9");
}

/* ------------------------------------------------------ SDK uploads */

/* The bytes openai-node 4.95 (tests/server/sdk, through form-data-encoder)
 * sent for files.create({file: toFile(buf, "batch.jsonl", {type:
 * "application/jsonl"}), purpose: "batch"}), captured from the wire; the
 * file's own data holds "--", a NUL and "\r\n--x". Without a type it sends
 * application/octet-stream. */
static void test_sdk_node(void **state) {
    (void)state;
    static const char body[] = "--form-data-boundary-2aulpxseb2ifhgzx\r\n"
                               "Content-Disposition: form-data; name=\"purpose\"\r\n"
                               "\r\n"
                               "batch\r\n"
                               "--form-data-boundary-2aulpxseb2ifhgzx\r\n"
                               "Content-Disposition: form-data; name=\"file\"; filename=\"batch.jsonl\"\r\n"
                               "Content-Type: application/jsonl\r\n"
                               "\r\n"
                               "{\"custom_id\":\"r1\"}\n--\0\r\n--x\r\n"
                               "--form-data-boundary-2aulpxseb2ifhgzx--\r\n"
                               "\r\n";
    const char *b;
    size_t blen;
    assert_true(
        herd_multipart_boundary("multipart/form-data; boundary=form-data-boundary-2aulpxseb2ifhgzx", &b, &blen));
    struct herd_multipart_part parts[8];
    size_t n;
    char err[ERR_SIZE];
    assert_true(herd_multipart_parse(body, sizeof body - 1, b, blen, parts, 8, &n, err, sizeof err));
    assert_int_equal(n, 2);
    const struct herd_multipart_part *purpose = herd_multipart_find(parts, n, "purpose");
    const struct herd_multipart_part *file = herd_multipart_find(parts, n, "file");
    assert_non_null(purpose);
    assert_non_null(file);
    assert_true(DATA_IS(purpose, "batch"));
    assert_true(DATA_IS(file, "{\"custom_id\":\"r1\"}\n--\0\r\n--x"));
    assert_true(FILENAME_IS(file, "batch.jsonl"));
    assert_true(TYPE_IS(file, "application/jsonl"));
}

/* What openai-node 5 sends through undici's FormData (native fetch). */
static void test_sdk_node_undici(void **state) {
    (void)state;
    static const char body[] = "------formdata-undici-012345678901\r\n"
                               "Content-Disposition: form-data; name=\"purpose\"\r\n"
                               "\r\n"
                               "batch\r\n"
                               "------formdata-undici-012345678901\r\n"
                               "Content-Disposition: form-data; name=\"file\"; filename=\"batch.jsonl\"\r\n"
                               "Content-Type: application/jsonl\r\n"
                               "\r\n"
                               "{\"custom_id\":\"r1\"}\n{\"custom_id\":\"r2\"}\n"
                               "\r\n"
                               "------formdata-undici-012345678901--\r\n";
    struct herd_multipart_part parts[8];
    size_t n;
    char err[ERR_SIZE];
    assert_true(PARSE(body, "----formdata-undici-012345678901", parts, 8, &n, err));
    assert_int_equal(n, 2);
    const struct herd_multipart_part *purpose = herd_multipart_find(parts, n, "purpose");
    const struct herd_multipart_part *file = herd_multipart_find(parts, n, "file");
    assert_non_null(purpose);
    assert_non_null(file);
    assert_true(DATA_IS(purpose, "batch"));
    assert_null(purpose->filename);
    assert_null(purpose->content_type);
    assert_true(DATA_IS(file, "{\"custom_id\":\"r1\"}\n{\"custom_id\":\"r2\"}\n"));
    assert_true(FILENAME_IS(file, "batch.jsonl"));
    assert_true(TYPE_IS(file, "application/jsonl"));
    assert_null(herd_multipart_find(parts, n, "other"));
    assert_null(herd_multipart_find(parts, n, "File")); /* names are case-sensitive */
}

/* The openai python SDK's upload as httpx frames it (written from httpx's
 * encoder, not captured): a 32-hex-digit boundary, the fields before the
 * files, the type of a .jsonl file guessed as application/octet-stream. */
static void test_sdk_python(void **state) {
    (void)state;
    static const char body[] = "--8d5e7c0a3b1f4e2d9c6a0b7e5f3d1c2a\r\n"
                               "Content-Disposition: form-data; name=\"purpose\"\r\n\r\n"
                               "batch\r\n"
                               "--8d5e7c0a3b1f4e2d9c6a0b7e5f3d1c2a\r\n"
                               "Content-Disposition: form-data; name=\"file\"; filename=\"input.jsonl\"\r\n"
                               "Content-Type: application/octet-stream\r\n\r\n"
                               "{\"a\":1}\r\n{\"b\":2}\r\n"
                               "\r\n"
                               "--8d5e7c0a3b1f4e2d9c6a0b7e5f3d1c2a--\r\n";
    struct herd_multipart_part parts[8];
    size_t n;
    char err[ERR_SIZE];
    assert_true(PARSE(body, "8d5e7c0a3b1f4e2d9c6a0b7e5f3d1c2a", parts, 8, &n, err));
    assert_int_equal(n, 2);
    assert_true(NAME_IS(&parts[0], "purpose"));
    assert_true(DATA_IS(&parts[0], "batch"));
    assert_true(NAME_IS(&parts[1], "file"));
    assert_true(FILENAME_IS(&parts[1], "input.jsonl"));
    assert_true(TYPE_IS(&parts[1], "application/octet-stream"));
    /* the file's own CRLFs stay; only the one before the delimiter goes */
    assert_true(DATA_IS(&parts[1], "{\"a\":1}\r\n{\"b\":2}\r\n"));
}

/* --------------------------------------------------------- the data */

static void test_binary_data(void **state) {
    (void)state;
    /* "--B" not at a line start, "\n--B" without the CR of this CRLF body,
     * "\r--B", "--B--" inside a line, NULs, CRs, CRLFs */
    static const char body[] = "--B\r\n"
                               "Content-Disposition: form-data; name=bin\r\n\r\n"
                               "x--B\r\n-\0y\n--B\r\n\r--B--\r\r\n\r\n\0"
                               "\r\n--B--\r\n";
    struct herd_multipart_part parts[4];
    size_t n;
    char err[ERR_SIZE];
    assert_true(PARSE(body, "B", parts, 4, &n, err));
    assert_int_equal(n, 1);
    assert_true(DATA_IS(&parts[0], "x--B\r\n-\0y\n--B\r\n\r--B--\r\r\n\r\n\0"));

    /* every byte value, the boundary a prefix of a longer word in the data */
    char big[600];
    size_t k = (size_t)sprintf(big, "--bound\r\nContent-Disposition: form-data; name=\"f\"; filename=\"b\"\r\n\r\n");
    const size_t at = k;
    for (int i = 0; i < 256; i++) big[k++] = (char)i;
    memcpy(big + k, "--boundary", 10);
    k += 10;
    memcpy(big + k, "\r\n--bound--", 11);
    k += 11;
    assert_true(parse_n(big, k, "bound", parts, 4, &n, err));
    assert_int_equal(n, 1);
    assert_true(parts[0].data == big + at);
    assert_int_equal(parts[0].len, 266);
}

static void test_empty_parts(void **state) {
    (void)state;
    /* RFC 2046 spells an empty part with a blank line and the delimiter's
     * CRLF; some clients leave the second out */
    static const char body[] = "--B\r\n"
                               "Content-Disposition: form-data; name=strict\r\n\r\n"
                               "\r\n--B\r\n"
                               "Content-Disposition: form-data; name=short\r\n\r\n"
                               "--B\r\n"
                               "Content-Disposition: form-data; name=crlf\r\n\r\n"
                               "\r\n\r\n--B--";
    struct herd_multipart_part parts[4];
    size_t n;
    char err[ERR_SIZE];
    assert_true(PARSE(body, "B", parts, 4, &n, err));
    assert_int_equal(n, 3);
    assert_true(NAME_IS(&parts[0], "strict"));
    assert_int_equal(parts[0].len, 0);
    assert_true(NAME_IS(&parts[1], "short"));
    assert_int_equal(parts[1].len, 0);
    assert_true(DATA_IS(&parts[2], "\r\n"));
}

/* A body written by hand with LF line ends; a CR before a delimiter is then data. */
static void test_lf_only(void **state) {
    (void)state;
    static const char body[] = "--B\n"
                               "Content-Disposition: form-data; name=\"purpose\"\n\n"
                               "batch\n"
                               "--B\n"
                               "Content-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\n\n"
                               "{}\n{}\n"
                               "\n--B\n"
                               "Content-Disposition: form-data; name=\"empty\"\n\n"
                               "\n--B\n"
                               "Content-Disposition: form-data; name=\"cr\"\r\n\r\n"
                               "x\r\n--B--\n";
    struct herd_multipart_part parts[4];
    size_t n;
    char err[ERR_SIZE];
    assert_true(PARSE(body, "B", parts, 4, &n, err));
    assert_int_equal(n, 4);
    assert_true(DATA_IS(&parts[0], "batch"));
    assert_true(DATA_IS(&parts[1], "{}\n{}\n"));
    assert_int_equal(parts[2].len, 0);
    assert_true(DATA_IS(&parts[3], "x\r"));
}

static void test_framing_extras(void **state) {
    (void)state;
    /* a preamble, transport padding after delimiters, an epilogue that looks
     * like more parts */
    static const char body[] = "This is a preamble.\r\n--B \t\r\n"
                               "Content-Disposition: form-data; name=a\r\n\r\n"
                               "1\r\n--B\t\r\n"
                               "Content-Disposition: form-data; name=b\r\n\r\n"
                               "2\r\n--B--  \r\nepilogue\r\n--B\r\nContent-Disposition: junk\r\n\r\n";
    struct herd_multipart_part parts[4];
    size_t n;
    char err[ERR_SIZE];
    assert_true(PARSE(body, "B", parts, 4, &n, err));
    assert_int_equal(n, 2);
    assert_true(DATA_IS(&parts[0], "1"));
    assert_true(DATA_IS(&parts[1], "2"));
    /* "--B" in the preamble but not at a line start */
    static const char pre[] = "preamble --B\r\n--B\r\n"
                              "Content-Disposition: form-data; name=a\r\n\r\n"
                              "1\r\n--B--";
    assert_true(PARSE(pre, "B", parts, 4, &n, err));
    assert_int_equal(n, 1);
    assert_true(DATA_IS(&parts[0], "1"));
    /* the first "--B" at a line start opens the body, even when a second follows */
    static const char twice[] = "--B\r\n--B\r\n"
                                "Content-Disposition: form-data; name=a\r\n\r\n"
                                "1\r\n--B--";
    assert_false(PARSE(twice, "B", parts, 4, &n, err));
    assert_int_equal(n, 0);
    assert_non_null(strstr(err, "part 1 (byte 5): a header line without a colon"));
}

static void test_headers(void **state) {
    (void)state;
    static const char body[] = "--B\r\n"
                               "content-disposition:form-data;name=\"a\\\"b\";filename*=UTF-8''x.txt\r\n"
                               "X-Other: ignored\r\n"
                               "CONTENT-TYPE:   text/plain; charset=utf-8  \r\n\r\n"
                               "1\r\n--B\r\n"
                               "Content-Disposition: FORM-DATA; filename=\"\"; name=file; foo\r\n\r\n"
                               "2\r\n--B\r\n"
                               "Content-Disposition: form-data; name=\"file\"; filename=\"C:\\\\x;y.jsonl\"\r\n\r\n"
                               "3\r\n--B\r\n"
                               "Content-Disposition: form-data; name=\"\"\r\n\r\n"
                               "4\r\n--B--\r\n";
    struct herd_multipart_part parts[4];
    size_t n;
    char err[ERR_SIZE];
    assert_true(PARSE(body, "B", parts, 4, &n, err));
    assert_int_equal(n, 4);
    assert_true(NAME_IS(&parts[0], "a\\\"b")); /* the escape kept as sent */
    assert_null(parts[0].filename);            /* filename*= is not read */
    assert_true(TYPE_IS(&parts[0], "text/plain; charset=utf-8"));
    assert_true(NAME_IS(&parts[1], "file"));
    assert_true(FILENAME_IS(&parts[1], "")); /* present but empty: not NULL */
    assert_null(parts[1].content_type);
    assert_true(FILENAME_IS(&parts[2], "C:\\\\x;y.jsonl"));
    assert_true(NAME_IS(&parts[3], ""));
    /* the first of two parts with one name */
    assert_true(herd_multipart_find(parts, n, "file") == &parts[1]);
    assert_true(herd_multipart_find(parts, n, "") == &parts[3]);
}

/* Headers of exactly 8 KiB pass; one byte more is refused. */
static void test_header_cap(void **state) {
    (void)state;
    static const char disp[] = "Content-Disposition: form-data; name=a\r\n";
    const size_t size = 16 << 10;
    char *body = malloc(size);
    assert_non_null(body);
    for (size_t extra = 0; extra < 2; extra++) {
        size_t k = (size_t)sprintf(body, "--B\r\n%s", disp);
        const size_t pad = (8 << 10) - (sizeof disp - 1) - strlen("X-Pad: \r\n") + extra;
        k += (size_t)sprintf(body + k, "X-Pad: ");
        memset(body + k, 'p', pad);
        k += pad;
        k += (size_t)sprintf(body + k, "\r\n\r\nx\r\n--B--\r\n");
        struct herd_multipart_part parts[1];
        size_t n;
        char err[ERR_SIZE] = "";
        const bool ok = parse_n(body, k, "B", parts, 1, &n, err);
        if (extra) {
            assert_false(ok);
            assert_non_null(strstr(err, "headers over 8 KiB"));
        } else {
            assert_true(ok);
            assert_true(DATA_IS(&parts[0], "x"));
        }
    }
    /* a header line that never ends: refused after 8 KiB, not at the end */
    size_t k = (size_t)sprintf(body, "--B\r\n%s", disp);
    memset(body + k, 'h', size - k);
    struct herd_multipart_part parts[1];
    size_t n;
    char err[ERR_SIZE] = "";
    assert_false(parse_n(body, size, "B", parts, 1, &n, err));
    assert_non_null(strstr(err, "headers over 8 KiB"));
    free(body);
}

/* 16 MB of near misses of a 70-character delimiter: found in one linear
 * pass, the data byte-exact (a quadratic scan would take minutes). */
static void test_large_body(void **state) {
    (void)state;
    char boundary[71];
    memset(boundary, 'B', 70);
    boundary[70] = 0;
    const size_t size = 16 << 20;
    char *body = malloc(size + 256);
    assert_non_null(body);
    size_t k = (size_t)sprintf(body, "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n",
                               boundary);
    const size_t start = k;
    char miss[80];
    const size_t miss_len = (size_t)sprintf(miss, "\r\n--%.69sA", boundary);
    while (k + miss_len < size) {
        memcpy(body + k, miss, miss_len);
        k += miss_len;
    }
    const size_t data_len = k - start;
    k += (size_t)sprintf(body + k, "\r\n--%s--\r\n", boundary);
    struct herd_multipart_part parts[2];
    size_t n;
    char err[ERR_SIZE];
    assert_true(parse_n(body, k, boundary, parts, 2, &n, err));
    assert_int_equal(n, 1);
    assert_true(parts[0].data == body + start);
    assert_int_equal(parts[0].len, data_len);
    free(body);
}

/* ------------------------------------------------------- refusals */

static void expect_refused_n(const char *body, size_t len, size_t max, const char *why) {
    struct herd_multipart_part parts[4];
    size_t n = 99;
    char err[ERR_SIZE] = "";
    if (parse_n(body, len, "B", parts, max, &n, err)) fail_msg("accepted: %.*s", (int)len, body);
    if (!strstr(err, why)) fail_msg("want '%s', got '%s'", why, err);
    if (n != 0) fail_msg("*n is %zu after a refusal", n);
}
#define REFUSED(lit, max, why) expect_refused_n(lit, sizeof lit - 1, max, why)

static void test_refused(void **state) {
    (void)state;
    REFUSED("", 4, "no opening boundary \"--B\"");
    REFUSED("no delimiter at all --B", 4, "no opening boundary");
    REFUSED("--B", 4, "no closing boundary \"--B--\"");
    REFUSED("--B\r\n", 4, "no closing boundary");
    REFUSED("--B\r\nContent-Disposition: form-data; name=a\r\n\r\ndata", 4, "no closing boundary \"--B--\"");
    REFUSED("--B\r\nContent-Disposition: form-data; name=a\r\n\r\ndata\r\n--B", 4, "no closing boundary");
    REFUSED("--B\r\nContent-Disposition: form-data; name=a\r\n\r\ndata\r\n--B\r\n", 4, "no closing boundary");
    REFUSED("--B\r\nContent-Disposition: form-data; name=a\r\n\r\ndata\n--B--\r\n", 4, "no closing boundary");
    REFUSED("--B\r\nContent-Disposition: form-data; name=a\r\nno blank line", 4, "headers not ended by a blank line");
    REFUSED("--B\r\nContent-Disposition: form-data; name=a\r\n", 4,
            "part 1 (byte 5): headers not ended by a blank line");
    REFUSED("--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--", 4, "part 1: no Content-Disposition");
    REFUSED("--B\r\nContent-Disposition: form-data\r\n\r\nx\r\n--B--", 4, "no Content-Disposition: form-data; name=");
    REFUSED("--B\r\nContent-Disposition: form-data; name\r\n\r\nx\r\n--B--", 4, "no Content-Disposition");
    REFUSED("--B\r\nContent-Disposition: form-data; filename=a\r\n\r\nx\r\n--B--", 4, "no Content-Disposition");
    REFUSED("--B\r\nContent-Disposition: attachment; name=a\r\n\r\nx\r\n--B--", 4, "not form-data");
    REFUSED("--B\r\nContent-Disposition: form-data; name=\"a\r\n\r\nx\r\n--B--", 4, "unterminated quoted string");
    REFUSED("--B\r\nno colon here\r\n\r\nx\r\n--B--", 4, "part 1 (byte 5): a header line without a colon");
    REFUSED("--B junk\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--B--", 4,
            "junk after a boundary (byte 4)");
    REFUSED("--Bx\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--B--", 4, "junk after a boundary");
    REFUSED("--B\rContent-Disposition: form-data; name=a\r\n\r\nx\r\n--B--", 4, "junk after a boundary");
    REFUSED("--B--\r\n", 4, "no parts");
    REFUSED("--B\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--B\r\n"
            "Content-Disposition: form-data; name=b\r\n\r\ny\r\n--B--",
            1, "too many parts (at most 1)");
    REFUSED("--B\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--B--", 0, "too many parts (at most 0)");
    /* the second part is broken: the first, parsed, is not handed out */
    REFUSED("--B\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--B\r\nX: y\r\n\r\nz\r\n--B--", 4, "part 2");

    struct herd_multipart_part parts[1];
    size_t n;
    char err[ERR_SIZE] = "";
    char b71[72];
    memset(b71, 'b', 71);
    b71[71] = 0;
    assert_false(herd_multipart_parse("--b", 3, b71, 71, parts, 1, &n, err, sizeof err));
    assert_non_null(strstr(err, "71 characters"));
    assert_false(herd_multipart_parse("--b", 3, "", 0, parts, 1, &n, err, sizeof err));
    /* a short err buffer is truncated, not overrun */
    char small[8];
    memset(small, 'z', sizeof small);
    assert_false(herd_multipart_parse("x", 1, "B", 1, parts, 1, &n, small, 4));
    assert_string_equal(small, "no ");
    assert_int_equal(small[4], 'z');
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boundary),        cmocka_unit_test(test_sdk_node),
        cmocka_unit_test(test_sdk_node_undici), cmocka_unit_test(test_sdk_python),
        cmocka_unit_test(test_binary_data),     cmocka_unit_test(test_empty_parts),
        cmocka_unit_test(test_lf_only),         cmocka_unit_test(test_framing_extras),
        cmocka_unit_test(test_headers),         cmocka_unit_test(test_header_cap),
        cmocka_unit_test(test_large_body),      cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
