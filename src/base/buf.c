/* Growable byte buffer with a ceiling. */
#include "base/buf.h"

#include <stdlib.h>
#include <string.h>

#include "base/checked.h"

void herd_buf_init(struct herd_buf *b, size_t max_len) {
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max_len = max_len;
}

void herd_buf_cleanup(struct herd_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

bool herd_buf_append(struct herd_buf *b, const void *p, size_t n) {
    size_t need;
    if (!herd_add_size(b->len, n, &need) || need > b->max_len) return false;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        if (cap > b->max_len) cap = b->max_len;
        uint8_t *d = realloc(b->data, cap);
        if (!d) return false;
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len = need;
    return true;
}

bool herd_buf_append_le(struct herd_buf *b, uint64_t v, size_t n) {
    uint8_t tmp[8];
    for (size_t i = 0; i < n; i++) tmp[i] = (uint8_t)(v >> (8 * i));
    return herd_buf_append(b, tmp, n);
}
