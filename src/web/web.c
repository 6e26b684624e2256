/* The embedded pages' handler (web.h): picks the file and its encoding,
 * answers conditional requests, and sets the caching and security
 * headers. The files themselves are generated data (scripts/embed_web.py). */
#include "web/web.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const struct herd_web_asset *herd_web_find(const char *path) {
    for (size_t i = 0; i < herd_web_n_assets; i++)
        if (strcmp(herd_web_assets[i].path, path) == 0) return &herd_web_assets[i];
    return NULL;
}

/* ------------------------------------------------------------ headers */

static const char *skip_ows(const char *s) {
    while (*s == ' ' || *s == '\t') s++;
    return s;
}

/* The q of one Accept-Encoding member's parameters ("; q=0.5"): 1 when
 * absent; 0 when it is 0, 0.0, 0.00 or 0.000. */
static bool q_positive(const char *params, const char *end) {
    const char *q = params;
    while (q < end) {
        q = skip_ows(q);
        if (q < end && *q == ';') {
            q = skip_ows(q + 1);
            if (end - q >= 2 && (q[0] == 'q' || q[0] == 'Q') && q[1] == '=') {
                q += 2;
                if (q < end && *q == '1') return true;
                for (q++; q < end && (*q == '0' || *q == '.'); q++) {
                }
                return q < end && *q >= '1' && *q <= '9';
            }
        }
        while (q < end && *q != ';') q++;
    }
    return true;
}

bool herd_web_accepts_gzip(const char *accept_encoding) {
    if (!accept_encoding) return false;
    int gzip = -1, star = -1; /* -1: not named, 0: refused, 1: allowed */
    const char *s = accept_encoding;
    while (*s) {
        s = skip_ows(s);
        const char *end = strchr(s, ',');
        if (!end) end = s + strlen(s);
        const char *name_end = s;
        while (name_end < end && *name_end != ';' && *name_end != ' ' && *name_end != '\t') name_end++;
        const size_t n = (size_t)(name_end - s);
        const int ok = q_positive(name_end, end);
        if ((n == 4 && strncasecmp(s, "gzip", 4) == 0) || (n == 6 && strncasecmp(s, "x-gzip", 6) == 0))
            gzip = ok;
        else if (n == 1 && *s == '*')
            star = ok;
        s = *end ? end + 1 : end;
    }
    return gzip == 1 || (gzip == -1 && star == 1);
}

bool herd_web_etag_matches(const char *if_none_match, const char *etag) {
    if (!if_none_match) return false;
    const size_t n = strlen(etag);
    const char *s = if_none_match;
    while (*s) {
        s = skip_ows(s);
        if (*s == '*') return true;
        if (strncmp(s, "W/", 2) == 0) s += 2;
        const char *end = strchr(s, ',');
        if (!end) end = s + strlen(s);
        const char *e = end;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
        if ((size_t)(e - s) == n && memcmp(s, etag, n) == 0) return true;
        s = *end ? end + 1 : end;
    }
    return false;
}

/* ------------------------------------------------------------ handler */

void herd_web_handler(struct herd_http_request *r, json_t *body, void *app) {
    (void)body, (void)app;
    const struct herd_web_asset *a = herd_web_find(herd_http_request_path(r));
    if (!a) {
        herd_http_respond_error(r, 404, "invalid_request_error", NULL, "not_found", "no page at %s",
                                herd_http_request_path(r));
        return;
    }
    const bool gz = a->gzip && herd_web_accepts_gzip(herd_http_request_header(r, "accept-encoding"));
    const char *etag = gz ? a->etag_gzip : a->etag;
    /* no-cache: a browser keeps the file but asks each time, so a new
     * binary's pages are seen at once and an unchanged one costs a 304 */
    char hdr[768];
    snprintf(hdr, sizeof hdr,
             "ETag: %s\r\nCache-Control: no-cache\r\nVary: Accept-Encoding\r\n%s"
             "Content-Security-Policy: " HERD_WEB_CSP "\r\n"
             "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n",
             etag, gz ? "Content-Encoding: gzip\r\n" : "");
    const size_t len = gz ? a->gzip_len : a->len;
    if (herd_web_etag_matches(herd_http_request_header(r, "if-none-match"), etag)) {
        herd_http_respond(r, 304, a->content_type, NULL, len, hdr);
        return;
    }
    herd_http_respond(r, 200, a->content_type, (const char *)(gz ? a->gzip : a->body), len, hdr);
}

void herd_web_routes(struct herd_http_route out[HERD_WEB_ROUTES]) {
    enum { PAGE = HERD_HTTP_ROUTE_OPEN | HERD_HTTP_ROUTE_ONLY_METHOD };
    out[0] = (struct herd_http_route){"GET", "/", PAGE, herd_web_handler, NULL};
    out[1] = (struct herd_http_route){"GET", "/status", PAGE, herd_web_handler, NULL};
    out[2] =
        (struct herd_http_route){"GET", "/web/", HERD_HTTP_ROUTE_OPEN | HERD_HTTP_ROUTE_PREFIX, herd_web_handler, NULL};
}
