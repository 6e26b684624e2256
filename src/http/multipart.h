/* multipart/form-data bodies (RFC 7578 over RFC 2046's multipart): the
 * OpenAI file upload (`purpose` as a text field, `file` as a file part),
 * which every OpenAI SDK sends this way. Zero-copy: parts point into the
 * body. One linear pass, so a 200 MB upload costs one scan.
 *
 * The framing, for boundary B:
 *
 *   [preamble CRLF] --B [spaces] CRLF
 *   headers CRLF CRLF data CRLF --B [spaces] CRLF
 *   headers CRLF CRLF data CRLF --B-- [epilogue]
 *
 * The CRLF before each `--B` belongs to the delimiter, not to the data.
 * The line end of the opening delimiter line sets the body's framing: CRLF
 * (every SDK, browser and curl) or a bare LF (a body written by hand on
 * Unix). Later delimiters must use the same one, so "\n--B" inside a CRLF
 * body is data; header lines may end in either. */
#ifndef HERD_HTTP_MULTIPART_H
#define HERD_HTTP_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

/* Every pointer is into the body given to herd_multipart_parse (not
 * NUL-terminated) and lives as long as that body. */
struct herd_multipart_part {
    const char *name; /* Content-Disposition: form-data; name=... (quotes removed) */
    size_t name_len;
    const char *filename; /* filename=...; NULL when absent (filename*= is ignored) */
    size_t filename_len;
    const char *content_type; /* the Content-Type value, trimmed; NULL when absent */
    size_t content_type_len;
    const char *data; /* the part's body, without the line end before the next delimiter */
    size_t len;
};

/* The boundary of a Content-Type header value ("multipart/form-data;
 * boundary=...", the media type and parameter names case-insensitive, the
 * boundary a token or a quoted string). True with *boundary pointing into
 * content_type (a NUL-terminated string) and *len its length. False when
 * the media type is not multipart/form-data, there is no boundary, or the
 * boundary is not 1..70 printable ASCII characters (RFC 2046) without a
 * '"' or '\\' and a trailing space, or its quote is not closed. */
bool herd_multipart_boundary(const char *content_type, const char **boundary, size_t *len);

/* Splits body (len bytes, binary-safe) into at most max_parts parts, in
 * order. True with *n parts. False with *n = 0 and a one-line reason in err
 * (err_size bytes; it names the part, counted from 1, and the byte offset
 * where it helps) on a malformed body: no opening delimiter, a part whose
 * headers do not end with a blank line or exceed 8 KiB, a part without
 * `Content-Disposition: form-data; name=`, an unterminated quoted
 * parameter, junk after a delimiter, no closing delimiter `--B--`, no parts,
 * or more than max_parts parts. A preamble and an epilogue are ignored.
 * Header names are case-insensitive; quoted parameter values lose their
 * quotes but keep backslash escapes as sent (name="a\"b" gives a\"b),
 * which no SDK sends for the names herd looks up. Reads only body, and
 * boundary (1..70 bytes); any thread. */
bool herd_multipart_parse(const char *body, size_t len, const char *boundary, size_t boundary_len,
                          struct herd_multipart_part *parts, size_t max_parts, size_t *n, char *err, size_t err_size);

/* The first part whose name is exactly name (case-sensitive), or NULL. */
const struct herd_multipart_part *herd_multipart_find(const struct herd_multipart_part *parts, size_t n,
                                                      const char *name);

#endif
