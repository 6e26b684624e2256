/* A growable byte buffer with a ceiling: every buffer that grows from input
 * is created with a limit, and appending past it fails instead of growing. */
#ifndef HERD_BASE_BUF_H
#define HERD_BASE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct herd_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max_len; /* appends that would pass this fail */
};

/* Starts empty; no allocation until the first append. The caller frees with
 * herd_buf_cleanup. */
void herd_buf_init(struct herd_buf *b, size_t max_len);
void herd_buf_cleanup(struct herd_buf *b);

/* Appends n bytes. False (buffer unchanged) on out of memory or past max_len. */
bool herd_buf_append(struct herd_buf *b, const void *p, size_t n);
/* Appends v as n little-endian bytes (n <= 8). */
bool herd_buf_append_le(struct herd_buf *b, uint64_t v, size_t n);

#endif
