/* multipart/form-data bodies (RFC 7578 over RFC 2046's multipart): the
 * OpenAI file upload (`purpose` as a text field, `file` as a file part),
 * which every OpenAI SDK sends this way. Zero-copy: parts point into the
 * body. One linear pass, so a 200 MB upload costs one scan. */
#ifndef HERD_HTTP_MULTIPART_H
#define HERD_HTTP_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

struct herd_multipart_part {
    const char *name; /* Content-Disposition: form-data; name=... (quotes removed) */
    size_t name_len;
    const char *filename; /* filename=...; NULL when absent */
    size_t filename_len;
    const char *content_type; /* NULL when absent */
    size_t content_type_len;
    const char *data; /* the part's body, without the CRLF before the next delimiter */
    size_t len;
};

/* The boundary of a Content-Type header value ("multipart/form-data;
 * boundary=..." with the boundary quoted or not, names case-insensitive):
 * false when it is not multipart/form-data or the boundary is not 1..70
 * characters. */
bool herd_multipart_boundary(const char *content_type, const char **boundary, size_t *len);

/* Splits body into at most max_parts parts (*n of them). False, with a
 * one-line reason in err, on a malformed body: no opening delimiter, a
 * part whose headers do not end with a blank line or exceed 8 KiB, a part
 * without `Content-Disposition: form-data; name=`, no closing delimiter,
 * or more than max_parts parts. A preamble and an epilogue are ignored;
 * lines may end in CRLF or LF. Quoted parameter values keep their
 * backslash escapes as sent. */
bool herd_multipart_parse(const char *body, size_t len, const char *boundary, size_t boundary_len,
                          struct herd_multipart_part *parts, size_t max_parts, size_t *n, char *err, size_t err_size);

/* The first part named name, or NULL. */
const struct herd_multipart_part *herd_multipart_find(const struct herd_multipart_part *parts, size_t n,
                                                      const char *name);

#endif
