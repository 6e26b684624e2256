/* libFuzzer target for the HTTP/1.1 parser (RELIABILITY.md B7): any bytes,
 * fed in two pieces split where the first byte says, then as many
 * pipelined requests as they hold, end in requests or errors: never a
 * crash, an over-read, a leak or a buffer past its limit. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "http/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t cut = data[0];
    data++;
    size--;
    if (cut > size) cut = size;
    struct herd_http_limits lim;
    herd_http_default_limits(&lim);
    lim.max_request_line = 256; /* small limits, so the fuzzer reaches them */
    lim.max_header_bytes = 1024;
    lim.max_headers = 8;
    lim.max_body_bytes = 4096;
    struct herd_http_parser p;
    herd_http_parser_init(&p, &lim);
    const char *s = (const char *)data;
    size_t at = 0;
    for (int requests = 0; requests < 64 && at < size; requests++) {
        size_t end = cut > at ? cut : size;
        size_t used = herd_http_parse(&p, s + at, end - at);
        at += used;
        if (p.phase == HERD_HTTP_ERROR) break;
        if (p.phase == HERD_HTTP_DONE) {
            /* touch what a handler reads */
            for (size_t i = 0; i < p.n_headers; i++)
                if (p.headers[i].name[p.headers[i].name_len] != 0 || p.headers[i].value[p.headers[i].value_len] != 0)
                    abort();
            if (p.body.len > lim.max_body_bytes || p.head.len > lim.max_header_bytes) abort();
            herd_http_parser_reset(&p);
        } else if (!used && end == size) {
            break;
        }
    }
    herd_http_parser_cleanup(&p);
    return 0;
}
