/* Helpers shared by the unit tests: data paths, whole-file reads, skipping
 * when ../shared is absent, and a byte builder for hand-made (often broken)
 * binary files. Include after cmocka.h. */
#ifndef HERD_TESTS_TEST_UTIL_H
#define HERD_TESTS_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"

/* Exit code CTest reads as "skipped" (SKIP_RETURN_CODE). */
#define TEST_SKIP_EXIT 77

static inline int test_path_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Path of a file in ../shared, or NULL after printing why when it is absent. */
static inline const char *test_shared_path(const char *rel, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", HERD_SHARED_DIR, rel);
    if (!test_path_exists(buf)) {
        fprintf(stderr, "note: %s is absent (no ../shared next to the checkout)\n", buf);
        return NULL;
    }
    return buf;
}

static inline const char *test_data_path(const char *rel, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", HERD_TEST_DATA, rel);
    return buf;
}

/* Reads a whole file; aborts the test program if it cannot (a setup bug). */
static inline unsigned char *test_read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        abort();
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(n > 0 ? (size_t)n : 1);
    if (!p || fread(p, 1, (size_t)n, f) != (size_t)n) abort();
    fclose(f);
    *size = (size_t)n;
    return p;
}

/* A temp file path unique to this process; the caller unlinks it. */
static inline const char *test_tmp_path(const char *name, char *buf, size_t n) {
    const char *dir = getenv("TMPDIR");
    snprintf(buf, n, "%s/herd-test-%ld-%s", dir && *dir ? dir : "/tmp", (long)getpid(), name);
    return buf;
}

/* Byte builder: little-endian integers and GGUF strings into a herd_buf. */
static inline void put_u8(struct herd_buf *b, uint8_t v) { herd_buf_append_le(b, v, 1); }
static inline void put_u32(struct herd_buf *b, uint32_t v) { herd_buf_append_le(b, v, 4); }
static inline void put_u64(struct herd_buf *b, uint64_t v) { herd_buf_append_le(b, v, 8); }
static inline void put_str(struct herd_buf *b, const char *s) {
    put_u64(b, strlen(s));
    herd_buf_append(b, s, strlen(s));
}
static inline void put_f32(struct herd_buf *b, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32(b, v);
}
static inline void put_zeros(struct herd_buf *b, size_t n) {
    for (size_t i = 0; i < n; i++) put_u8(b, 0);
}
/* Pads with zeros to a multiple of align. */
static inline void put_pad(struct herd_buf *b, size_t align) {
    while (b->len % align) put_u8(b, 0);
}

#endif
