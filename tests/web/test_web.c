/* src/web/web.c without sockets: the Accept-Encoding and If-None-Match
 * readings, the embedded table (every page there, typed, a gzip twin
 * smaller than it, strong and distinct tags), the routes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "web/web.h"

static void test_accepts_gzip(void **state) {
    (void)state;
    assert_true(herd_web_accepts_gzip("gzip"));
    assert_true(herd_web_accepts_gzip("gzip, deflate, br"));
    assert_true(herd_web_accepts_gzip("br;q=1.0, GZIP;q=0.5"));
    assert_true(herd_web_accepts_gzip("x-gzip"));
    assert_true(herd_web_accepts_gzip("*"));
    assert_true(herd_web_accepts_gzip("deflate, *;q=0.1"));
    assert_true(herd_web_accepts_gzip("gzip;q=0.001"));
    assert_true(herd_web_accepts_gzip("gzip ; q=1"));
    assert_false(herd_web_accepts_gzip(NULL));
    assert_false(herd_web_accepts_gzip(""));
    assert_false(herd_web_accepts_gzip("identity"));
    assert_false(herd_web_accepts_gzip("br, deflate"));
    assert_false(herd_web_accepts_gzip("gzip;q=0"));
    assert_false(herd_web_accepts_gzip("gzip;q=0.000"));
    assert_false(herd_web_accepts_gzip("gzip;q=0, *")); /* named and refused beats the wildcard */
    assert_false(herd_web_accepts_gzip("*;q=0"));
    assert_false(herd_web_accepts_gzip("gzipx, xgzip")); /* names, not prefixes */
}

static void test_etag_matches(void **state) {
    (void)state;
    const char *tag = "\"0123456789abcdef\"";
    assert_true(herd_web_etag_matches("\"0123456789abcdef\"", tag));
    assert_true(herd_web_etag_matches("W/\"0123456789abcdef\"", tag));
    assert_true(herd_web_etag_matches("\"x\", \"0123456789abcdef\"", tag));
    assert_true(herd_web_etag_matches("\"x\" ,\t\"0123456789abcdef\" ", tag));
    assert_true(herd_web_etag_matches("*", tag));
    assert_false(herd_web_etag_matches(NULL, tag));
    assert_false(herd_web_etag_matches("", tag));
    assert_false(herd_web_etag_matches("\"0123456789abcde\"", tag));
    assert_false(herd_web_etag_matches("\"0123456789abcdef-gz\"", tag));
    assert_false(herd_web_etag_matches("0123456789abcdef", tag));
}

static void test_table(void **state) {
    (void)state;
    const char *pages[] = {
        "/", "/status", "/web/app.js", "/web/markdown.js", "/web/status.js", "/web/prom.js", "/web/style.css"};
    for (size_t i = 0; i < sizeof pages / sizeof *pages; i++) {
        const struct herd_web_asset *a = herd_web_find(pages[i]);
        assert_non_null(a);
        assert_true(a->len > 0);
        assert_true(strstr(a->content_type, "charset=utf-8") != NULL);
        /* the pages and scripts are text that gzip shrinks: the twin exists */
        assert_non_null(a->gzip);
        assert_true(a->gzip_len < a->len);
        assert_int_equal(a->gzip[0], 0x1f);
        assert_int_equal(a->gzip[1], 0x8b);
        assert_int_equal(strlen(a->etag), 18);
        assert_int_equal(strncmp(a->etag, a->etag_gzip, 17), 0);
        assert_string_equal(a->etag_gzip + 17, "-gz\"");
    }
    assert_string_equal(herd_web_find("/")->content_type, "text/html; charset=utf-8");
    assert_string_equal(herd_web_find("/web/app.js")->content_type, "text/javascript; charset=utf-8");
    assert_null(herd_web_find("/index.html"));
    assert_null(herd_web_find("/web/"));
    assert_null(herd_web_find(""));
    for (size_t i = 0; i < herd_web_n_assets; i++)
        for (size_t j = i + 1; j < herd_web_n_assets; j++) {
            assert_string_not_equal(herd_web_assets[i].path, herd_web_assets[j].path);
            assert_string_not_equal(herd_web_assets[i].etag, herd_web_assets[j].etag);
        }
}

static void test_routes(void **state) {
    (void)state;
    struct herd_http_route r[HERD_WEB_ROUTES];
    herd_web_routes(r);
    for (size_t i = 0; i < HERD_WEB_ROUTES; i++) {
        assert_string_equal(r[i].method, "GET");
        assert_true(r[i].flags & HERD_HTTP_ROUTE_OPEN);
        assert_false(r[i].flags & HERD_HTTP_ROUTE_NEEDS_READY);
        assert_ptr_equal(r[i].handler, herd_web_handler);
    }
    assert_string_equal(r[2].path, "/web/");
    assert_true(r[2].flags & HERD_HTTP_ROUTE_PREFIX);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_gzip),
        cmocka_unit_test(test_etag_matches),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
