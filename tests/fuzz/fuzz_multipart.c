/* libFuzzer target for the multipart/form-data parser (multipart.h, the
 * /v1/files upload): the first byte gives the boundary's length (1 + byte %
 * 70), the bytes after it the boundary and then the body. Any input ends in
 * parts or a refusal: never a crash or a read outside the body; every
 * span of a part lies inside the body, the parts come in order without
 * overlapping, and a refusal hands out no parts and says why. The same
 * bytes, as a string, also go through the Content-Type parser. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/multipart.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_PARTS 8

/* [p, p + len) inside [lo, hi); a NULL p (an absent field) passes. */
static bool inside(const char *p, size_t len, const char *lo, const char *hi) {
    return !p || (p >= lo && len <= (size_t)(hi - p));
}

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
    const char *end = body + len;
    struct herd_multipart_part parts[MAX_PARTS];
    size_t n = 99;
    char err[160] = "";
    if (herd_multipart_parse(body, len, boundary, blen, parts, MAX_PARTS, &n, err, sizeof err)) {
        if (n < 1 || n > MAX_PARTS) abort();
        const char *prev_end = body;
        for (size_t i = 0; i < n; i++) {
            const struct herd_multipart_part *p = &parts[i];
            if (!p->name || !p->data) abort();
            if (!inside(p->name, p->name_len, body, end) || !inside(p->filename, p->filename_len, body, end) ||
                !inside(p->content_type, p->content_type_len, body, end) || !inside(p->data, p->len, body, end))
                abort();
            /* the headers (name, type) come after the last part's data, the data after them */
            if (p->name < prev_end || p->data < p->name + p->name_len) abort();
            prev_end = p->data + p->len;
        }
        (void)herd_multipart_find(parts, n, "file");
    } else if (n != 0 || !err[0] || !memchr(err, 0, sizeof err)) {
        abort();
    }
    free(body);

    /* the Content-Type parser on the same bytes, as a string */
    char *ct = malloc(size);
    if (!ct) return 0;
    memcpy(ct, data + 1, size - 1);
    ct[size - 1] = 0;
    const char *b;
    size_t bl;
    if (herd_multipart_boundary(ct, &b, &bl) && (bl < 1 || bl > 70 || b < ct || b + bl > ct + strlen(ct))) abort();
    free(ct);
    return 0;
}
