/* The pages `herd serve` and `herd route` serve themselves (web/: a chat
 * page at /, a live status page at /status, their scripts and styles under
 * /web/), embedded in the binary at build time by scripts/embed_web.py
 * with each file's gzip twin and a strong ETag from a hash of its bytes.
 *
 * Answers are cacheable but revalidated (Cache-Control: no-cache with an
 * ETag: If-None-Match gives a 304), gzip when Accept-Encoding allows it,
 * and carry a Content-Security-Policy that allows only the server's own
 * scripts, styles and connections (no inline script, no other origin), so
 * that model output that slips into the page could not run or call out. */
#ifndef HERD_WEB_WEB_H
#define HERD_WEB_WEB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "http/http_server.h"

/* One embedded file, as generated (build/generated/web_assets_data.c). */
struct herd_web_asset {
    const char *path;          /* the URL path: "/", "/status", "/web/app.js" */
    const char *content_type;  /* "text/html; charset=utf-8" */
    const unsigned char *body; /* [len] */
    size_t len;
    const unsigned char *gzip; /* [gzip_len]; NULL when gzip would not be smaller */
    size_t gzip_len;
    const char *etag;      /* quoted, strong: "\"<16 hex of sha256>\"" */
    const char *etag_gzip; /* the gzip twin's: "\"<same>-gz\"" */
};

extern const struct herd_web_asset herd_web_assets[];
extern const size_t herd_web_n_assets;

/* The policy every page answer carries (also in docs/user-guide.md). */
#define HERD_WEB_CSP                                                                                                   \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "                    \
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

/* The embedded file at path, or NULL. */
const struct herd_web_asset *herd_web_find(const char *path);

/* Whether an Accept-Encoding value allows gzip (gzip, x-gzip or * with a
 * q above 0; gzip;q=0 refuses it even with *). NULL: no. */
bool herd_web_accepts_gzip(const char *accept_encoding);

/* Whether an If-None-Match value matches etag ("*", or one of its
 * comma-separated entity tags, W/ or not: the weak comparison RFC 9110
 * 13.1.2 asks for). NULL: no. */
bool herd_web_etag_matches(const char *if_none_match, const char *etag);

/* The routes of the pages, for a route table (GET and HEAD; OPEN: a page
 * must load before it can ask for an API key; not NEEDS_READY: the status
 * page works while a model loads or the server drains). */
#define HERD_WEB_ROUTES 3
void herd_web_routes(struct herd_http_route out[HERD_WEB_ROUTES]);

/* The handler of those routes: the asset at the request's path, 304 when
 * If-None-Match matches, 404 for a path under /web/ with no file. */
void herd_web_handler(struct herd_http_request *r, json_t *body, void *app);

#endif
