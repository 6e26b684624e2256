/* The HTTP/1.1 response parser: responses split at every byte boundary
 * give the same head and body; each framing (Content-Length, chunked,
 * until close, none) ends where it should; interim 1xx answers are
 * skipped; every limit and malformed input is an error, never a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "http/http1_response.h"
#include "test_util.h"

/* What a whole response parsed into. */
struct parsed {
    enum herd_http_resp_phase phase;
    int status;
    bool keep_alive;
    char body[4096];
    size_t body_len;
    size_t used;
    const char *error;
};

/* Feeds text in pieces of at most piece bytes (0: all at once), then EOF
 * when eof; collects the body spans. */
static struct parsed parse_with(const struct herd_http_resp_limits *lim, const char *text, size_t len, size_t piece,
                                bool head_request, bool eof) {
    struct parsed out = {0};
    struct herd_http_resp_parser p;
    herd_http_resp_parser_init(&p, lim);
    herd_http_resp_parser_reset(&p, head_request);
    size_t at = 0;
    while (at < len && p.phase != HERD_HTTP_RESP_DONE && p.phase != HERD_HTTP_RESP_ERROR) {
        size_t n = piece && len - at > piece ? piece : len - at;
        size_t off = 0;
        while (off < n && p.phase != HERD_HTTP_RESP_DONE && p.phase != HERD_HTTP_RESP_ERROR) {
            struct herd_http_span b;
            size_t used = herd_http_resp_parse(&p, text + at + off, n - off, &b);
            if (b.len) {
                /* a span is a slice of what was given */
                assert_true(b.data >= text + at + off && b.data + b.len <= text + at + n);
                assert_true(out.body_len + b.len <= sizeof out.body);
                memcpy(out.body + out.body_len, b.data, b.len);
                out.body_len += b.len;
            }
            off += used;
            if (!used) break;
        }
        at += off;
        if (off < n) break;
    }
    if (eof) herd_http_resp_eof(&p);
    out.phase = p.phase;
    out.status = p.status;
    out.keep_alive = p.keep_alive;
    out.used = at;
    out.error = p.error;
    herd_http_resp_parser_cleanup(&p);
    return out;
}

static struct parsed parse(const char *text, size_t piece, bool eof) {
    struct herd_http_resp_limits l;
    herd_http_resp_default_limits(&l);
    return parse_with(&l, text, strlen(text), piece, false, eof);
}

static void expect_error(const struct herd_http_resp_limits *lim, const char *text, bool eof) {
    for (size_t piece = 0; piece <= 3; piece++) {
        struct parsed r = parse_with(lim, text, strlen(text), piece, false, eof);
        if (r.phase != HERD_HTTP_RESP_ERROR) fail_msg("want an error, got phase %d for %.60s", r.phase, text);
        assert_non_null(r.error);
    }
}

static void test_content_length_split_everywhere(void **state) {
    (void)state;
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
                               "X-Empty:\r\n\r\n{\"a\": true}";
    const size_t n = sizeof resp - 1;
    for (size_t cut = 0; cut <= n; cut++) {
        struct herd_http_resp_limits l;
        herd_http_resp_default_limits(&l);
        struct herd_http_resp_parser p;
        herd_http_resp_parser_init(&p, &l);
        char body[32];
        size_t body_len = 0, at = 0;
        const size_t ends[2] = {cut, n};
        for (int part = 0; part < 2; part++) {
            while (at < ends[part]) {
                struct herd_http_span b;
                size_t used = herd_http_resp_parse(&p, resp + at, ends[part] - at, &b);
                memcpy(body + body_len, b.data ? b.data : "", b.len);
                body_len += b.len;
                at += used;
                if (!used) break;
            }
        }
        assert_int_equal(at, n);
        assert_int_equal(p.phase, HERD_HTTP_RESP_DONE);
        assert_int_equal(p.status, 200);
        assert_string_equal(p.reason, "OK");
        assert_true(p.keep_alive);
        assert_int_equal(body_len, 11);
        assert_memory_equal(body, "{\"a\": true}", 11);
        assert_string_equal(herd_http_resp_header_get(&p, "content-type")->value, "application/json");
        assert_string_equal(herd_http_resp_header_get(&p, "X-EMPTY")->value, "");
        herd_http_resp_parser_cleanup(&p);
    }
}

static void test_chunked(void **state) {
    (void)state;
    static const char resp[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "6;ext=1\r\ndata: \r\n5\r\nhello\r\n2\n\n\n\r\n0\r\nTrailer: x\r\n\r\n";
    for (size_t piece = 0; piece <= 7; piece++) {
        struct parsed r = parse(resp, piece, false);
        assert_int_equal(r.phase, HERD_HTTP_RESP_DONE);
        assert_int_equal(r.used, sizeof resp - 1);
        assert_int_equal(r.body_len, 13);
        assert_memory_equal(r.body, "data: hello\n\n", 13);
        assert_true(r.keep_alive);
    }
}

static void test_no_body_and_until_close(void **state) {
    (void)state;
    struct herd_http_resp_limits l;
    herd_http_resp_default_limits(&l);
    /* HEAD: no body whatever Content-Length says; 204 and 304 neither */
    const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
    struct parsed r = parse_with(&l, head, strlen(head), 0, true, false);
    assert_int_equal(r.phase, HERD_HTTP_RESP_DONE);
    assert_int_equal(r.body_len, 0);
    r = parse("HTTP/1.1 204 No Content\r\n\r\n", 0, false);
    assert_int_equal(r.phase, HERD_HTTP_RESP_DONE);
    r = parse("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", 0, false);
    assert_int_equal(r.phase, HERD_HTTP_RESP_DONE);
    /* no length: the body runs until the close, and the connection ends */
    r = parse("HTTP/1.1 200 OK\r\n\r\nall of this", 4, false);
    assert_int_equal(r.phase, HERD_HTTP_RESP_BODY_UNTIL_CLOSE);
    r = parse("HTTP/1.1 200 OK\r\n\r\nall of this", 4, true);
    assert_int_equal(r.phase, HERD_HTTP_RESP_DONE);
    assert_int_equal(r.body_len, 11);
    assert_false(r.keep_alive);
    /* the close cuts a framed body short: an error */
    r = parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0, true);
    assert_int_equal(r.phase, HERD_HTTP_RESP_ERROR);
    r = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 0, true);
    assert_int_equal(r.phase, HERD_HTTP_RESP_ERROR);
    r = parse("HTTP/1.1 200 O", 0, true);
    assert_int_equal(r.phase, HERD_HTTP_RESP_ERROR);
    /* zero length: done at once */
    r = parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, false);
    assert_int_equal(r.phase, HERD_HTTP_RESP_DONE);
}

static void test_interim_and_versions(void **state) {
    (void)state;
    /* 100 Continue (and 103) come before the answer and are skipped */
    struct parsed r = parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
                            "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
                            5, false);
    assert_int_equal(r.phase, HERD_HTTP_RESP_DONE);
    assert_int_equal(r.status, 201);
    assert_memory_equal(r.body, "ok", 2);
    /* keep-alive by version and Connection */
    r = parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 0, false);
    assert_false(r.keep_alive);
    r = parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 0, false);
    assert_false(r.keep_alive);
    r = parse("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", 0, false);
    assert_true(r.keep_alive);
    /* a status line without a reason, with bare LF line ends */
    r = parse("HTTP/1.1 503\nContent-Length: 1\n\nx", 0, false);
    assert_int_equal(r.phase, HERD_HTTP_RESP_DONE);
    assert_int_equal(r.status, 503);
}

static void test_pipelined(void **state) {
    (void)state;
    static const char two[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\noneHTTP/1.1 404 Not Found\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n";
    struct herd_http_resp_limits l;
    herd_http_resp_default_limits(&l);
    struct herd_http_resp_parser p;
    herd_http_resp_parser_init(&p, &l);
    size_t at = 0, n = sizeof two - 1;
    struct herd_http_span b;
    while (p.phase != HERD_HTTP_RESP_DONE) at += herd_http_resp_parse(&p, two + at, n - at, &b);
    assert_int_equal(p.status, 200);
    herd_http_resp_parser_reset(&p, false);
    char body[8];
    size_t bl = 0;
    while (p.phase != HERD_HTTP_RESP_DONE) {
        at += herd_http_resp_parse(&p, two + at, n - at, &b);
        memcpy(body + bl, b.data ? b.data : "", b.len);
        bl += b.len;
    }
    assert_int_equal(at, n);
    assert_int_equal(p.status, 404);
    assert_int_equal(bl, 3);
    assert_memory_equal(body, "two", 3);
    herd_http_resp_parser_cleanup(&p);
}

static void test_errors_and_limits(void **state) {
    (void)state;
    struct herd_http_resp_limits l;
    herd_http_resp_default_limits(&l);
    static const char *const bad[] = {
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 abc OK\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.2 200 OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
        "HTTP/1.1 200 O\x01K\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",
        "HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) expect_error(&l, bad[i], false);
    /* a 1 MiB header is refused after at most the head limit */
    size_t big = 1 << 20;
    char *h = malloc(big + 64);
    int off = snprintf(h, 64, "HTTP/1.1 200 OK\r\nX: ");
    memset(h + off, 'a', big);
    struct herd_http_resp_parser p;
    herd_http_resp_parser_init(&p, &l);
    struct herd_http_span b;
    size_t used = herd_http_resp_parse(&p, h, big + (size_t)off, &b);
    assert_int_equal(p.phase, HERD_HTTP_RESP_ERROR);
    assert_true(used <= l.max_header_bytes + 1);
    assert_true(p.head.cap <= l.max_header_bytes + 1);
    herd_http_resp_parser_cleanup(&p);
    free(h);
    /* too many headers */
    char many[4096];
    size_t n = (size_t)sprintf(many, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < 120; i++) n += (size_t)sprintf(many + n, "H%d: v\r\n", i);
    sprintf(many + n, "\r\n");
    expect_error(&l, many, false);
    /* the body limit, for each framing */
    l.max_body_bytes = 8;
    expect_error(&l, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", false);
    expect_error(&l, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n4\r\n", false);
    expect_error(&l, "HTTP/1.1 200 OK\r\n\r\n123456789", false);
    const char *fits = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n12345678";
    struct parsed r = parse_with(&l, fits, strlen(fits), 0, false, false);
    assert_int_equal(r.phase, HERD_HTTP_RESP_DONE);
    /* trailers within the head's limit; a chunk-size line within 1 KiB */
    l.max_header_bytes = 256;
    char trailers[2048];
    n = (size_t)sprintf(trailers, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n");
    for (int i = 0; i < 40; i++) n += (size_t)sprintf(trailers + n, "T%d: value\r\n", i);
    sprintf(trailers + n, "\r\n");
    expect_error(&l, trailers, false);
    char ext[2048];
    n = (size_t)sprintf(ext, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;");
    memset(ext + n, 'e', 1500);
    sprintf(ext + n + 1500, "\r\nx\r\n0\r\n\r\n");
    expect_error(&l, ext, false);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length_split_everywhere),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_no_body_and_until_close),
        cmocka_unit_test(test_interim_and_versions),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_errors_and_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
