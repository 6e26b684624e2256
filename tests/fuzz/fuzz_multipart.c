/* libFuzzer target for the multipart/form-data parser (the /v1/files
 * upload): the first byte gives the boundary's length, the bytes after it
 * the boundary and then the body. Any input ends in parts or a refusal:
 * never a crash or a read outside the body, and every part lies inside it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/multipart.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t blen = 1 + data[0] % 70;
    if (blen > size - 1) blen = size - 1;
    const char *boundary = (const char *)data + 1;
    const size_t len = size - 1 - blen;
    /* a copy of its own size, so that an over-read is caught */
    char *body = malloc(len ? len : 1);
    if (!body) return 0;
    memcpy(body, data + 1 + blen, len);
    struct herd_multipart_part parts[8];
    size_t n = 0;
    char err[160];
    if (herd_multipart_parse(body, len, boundary, blen, parts, 8, &n, err, sizeof err)) {
        for (size_t i = 0; i < n; i++) {
            const struct herd_multipart_part *p = &parts[i];
            if (p->data < body || p->data + p->len > body + len || !p->name || p->name < body ||
                p->name + p->name_len > body + len)
                abort();
        }
        (void)herd_multipart_find(parts, n, "file");
    }
    free(body);
    /* and the Content-Type parser on the same bytes */
    char *ct = malloc(size);
    if (!ct) return 0;
    memcpy(ct, data + 1, size - 1);
    ct[size - 1] = 0;
    const char *b;
    size_t bl;
    if (herd_multipart_boundary(ct, &b, &bl) && (bl < 1 || bl > 70 || b < ct || b + bl > ct + size - 1)) abort();
    free(ct);
    return 0;
}
