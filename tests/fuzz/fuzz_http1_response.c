/* libFuzzer target for the HTTP/1.1 response parser (http1_response.h):
 * any bytes, fed in pieces of a size the first byte says, for a HEAD or
 * another request as the second byte says, then as many pipelined
 * responses as they hold, then the close: every body span lies inside the
 * bytes given, the body never passes its limit, headers are
 * NUL-terminated, and it ends in responses or errors: never a crash, an
 * over-read, a leak or a buffer past its limit. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "http/http1_response.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    const size_t piece = data[0] ? data[0] : 1;
    const bool head_request = data[1] & 1;
    data += 2;
    size -= 2;
    struct herd_http_resp_limits lim;
    herd_http_resp_default_limits(&lim);
    lim.max_header_bytes = 1024; /* small limits, so the fuzzer reaches them */
    lim.max_headers = 8;
    lim.max_body_bytes = 4096;
    struct herd_http_resp_parser p;
    herd_http_resp_parser_init(&p, &lim);
    herd_http_resp_parser_reset(&p, head_request);
    const char *s = (const char *)data;
    size_t at = 0;
    for (int responses = 0; responses < 64 && at < size;) {
        size_t end = size - at > piece ? at + piece : size;
        struct herd_http_span body;
        size_t used = herd_http_resp_parse(&p, s + at, end - at, &body);
        if (used > end - at) abort();
        if (body.len && (body.data < s + at || body.data + body.len > s + at + used)) abort();
        if (p.body_bytes > lim.max_body_bytes || p.head.len > lim.max_header_bytes) abort();
        at += used;
        if (p.phase == HERD_HTTP_RESP_ERROR) break;
        if (p.phase == HERD_HTTP_RESP_DONE) {
            /* touch what a caller reads */
            for (size_t i = 0; i < p.n_headers; i++)
                if (p.headers[i].name[p.headers[i].name_len] != 0 || p.headers[i].value[p.headers[i].value_len] != 0)
                    abort();
            if (p.status < 200 || p.status > 599) abort();
            herd_http_resp_parser_reset(&p, head_request);
            responses++;
        } else if (!used && end == size) {
            break;
        }
    }
    herd_http_resp_eof(&p);
    if (p.phase != HERD_HTTP_RESP_DONE && p.phase != HERD_HTTP_RESP_ERROR) abort();
    herd_http_resp_parser_cleanup(&p);
    return 0;
}
