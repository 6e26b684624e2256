/* The HTTP/1.1 parser: requests split at every byte boundary parse the
 * same; every limit and framing rule of RELIABILITY.md B2/B3 gives its
 * status; pipelined requests are separated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "http/http1.h"
#include "test_util.h"

static struct herd_http_limits lim(void) {
    struct herd_http_limits l;
    herd_http_default_limits(&l);
    l.max_body_bytes = 1 << 20;
    return l;
}

/* Parses text in one go; returns the parser (caller cleans up). */
static size_t parse_all(struct herd_http_parser *p, const char *text, size_t len) {
    struct herd_http_limits l = lim();
    herd_http_parser_init(p, &l);
    return herd_http_parse(p, text, len);
}

static void expect_status(const char *text, size_t len, int status) {
    struct herd_http_parser p;
    parse_all(&p, text, len);
    if (p.phase != HERD_HTTP_ERROR || p.error_status != status)
        fail_msg("want %d, got phase %d status %d (%s) for %.60s", status, p.phase, p.error_status,
                 p.error ? p.error : "", text);
    herd_http_parser_cleanup(&p);
}

static void test_simple_and_split(void **state) {
    (void)state;
    static const char req[] = "POST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                              "Content-Length: 11\r\nX-Empty:\r\n\r\n{\"a\": true}";
    size_t n = sizeof req - 1;
    for (size_t cut = 0; cut <= n; cut++) {
        struct herd_http_limits l = lim();
        struct herd_http_parser p;
        herd_http_parser_init(&p, &l);
        size_t used = herd_http_parse(&p, req, cut);
        used += herd_http_parse(&p, req + used, n - used);
        assert_int_equal(used, n);
        assert_int_equal(p.phase, HERD_HTTP_DONE);
        assert_string_equal(p.method, "POST");
        assert_string_equal(p.target, "/v1/completions?x=1");
        assert_true(p.keep_alive);
        assert_int_equal(p.body.len, 11);
        assert_memory_equal(p.body.data, "{\"a\": true}", 11);
        assert_string_equal(herd_http_header_get(&p, "content-type")->value, "application/json");
        assert_string_equal(herd_http_header_get(&p, "X-EMPTY")->value, "");
        herd_http_parser_cleanup(&p);
    }
}

static void test_chunked_and_pipelined(void **state) {
    (void)state;
    static const char req[] = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n"
                              "0\r\nTrailer: x\r\n\r\nGET /next HTTP/1.0\r\n\r\n";
    struct herd_http_parser p;
    size_t used = parse_all(&p, req, sizeof req - 1);
    assert_int_equal(p.phase, HERD_HTTP_DONE);
    assert_int_equal(p.body.len, 11);
    assert_memory_equal(p.body.data, "hello world", 11);
    herd_http_parser_reset(&p);
    herd_http_parse(&p, req + used, sizeof req - 1 - used);
    assert_int_equal(p.phase, HERD_HTTP_DONE);
    assert_string_equal(p.target, "/next");
    assert_false(p.keep_alive); /* HTTP/1.0 without keep-alive */
    herd_http_parser_cleanup(&p);
}

static void test_limits_and_framing(void **state) {
    (void)state;
    struct herd_http_limits l = lim();
    /* B2: a 1 MiB header is refused after at most the header limit */
    size_t big = 1 << 20;
    char *h = malloc(big + 64);
    int off = snprintf(h, 64, "GET / HTTP/1.1\r\nX: ");
    memset(h + off, 'a', big);
    struct herd_http_parser p;
    herd_http_parser_init(&p, &l);
    size_t used = herd_http_parse(&p, h, big + (size_t)off);
    assert_int_equal(p.phase, HERD_HTTP_ERROR);
    assert_int_equal(p.error_status, 431);
    assert_true(used <= l.max_header_bytes + 1);
    assert_true(p.head.cap <= l.max_header_bytes + 1);
    herd_http_parser_cleanup(&p);
    /* 10 000 headers */
    size_t n = 0;
    char *many = malloc(200000);
    n += (size_t)sprintf(many, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 10000 && n < 190000; i++) n += (size_t)sprintf(many + n, "H%d: v\r\n", i);
    n += (size_t)sprintf(many + n, "\r\n");
    expect_status(many, n, 431);
    /* a 64 KiB request line */
    memcpy(h, "GET /", 5);
    memset(h + 5, 'a', 65536);
    memcpy(h + 5 + 65536, " HTTP/1.1\r\n\r\n", 13);
    expect_status(h, 5 + 65536 + 13, 414);
    free(h);
    free(many);
    /* B3: body framing */
    static const char *const bad400[] = {
        "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",
        "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "GET / HTTP/1.1\r\n Folded: x\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        "GET /\r\n\r\n",
        "GET  / HTTP/1.1\r\n\r\n",
        "G(T / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad400 / sizeof *bad400; i++) expect_status(bad400[i], strlen(bad400[i]), 400);
    const char *too_big = "POST / HTTP/1.1\r\nContent-Length: 1000000000000\r\n\r\n";
    expect_status(too_big, strlen(too_big), 413);
    const char *chunk_big = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n200000\r\n";
    expect_status(chunk_big, strlen(chunk_big), 413);
    const char *gzip = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
    expect_status(gzip, strlen(gzip), 501);
    const char *http2 = "GET / HTTP/2.0\r\n\r\n";
    expect_status(http2, strlen(http2), 505);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_and_split),
        cmocka_unit_test(test_chunked_and_pipelined),
        cmocka_unit_test(test_limits_and_framing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
