/* Overflow-checked size arithmetic. Every size computed from untrusted input
 * (a file header, a request) goes through these: each returns false instead of
 * wrapping, and leaves *out untouched on failure. */
#ifndef HERD_BASE_CHECKED_H
#define HERD_BASE_CHECKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline bool herd_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}

static inline bool herd_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}

static inline bool herd_mul_size(size_t a, size_t b, size_t *out) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}

static inline bool herd_add_size(size_t a, size_t b, size_t *out) {
    size_t r;
    if (__builtin_add_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}

/* Marks a function whose unsigned arithmetic wraps on purpose (hashes,
 * random number generators), for the fuzz build's
 * -fsanitize=unsigned-integer-overflow, which flags every other wrap. */
#if defined(__clang__)
#define HERD_WRAPS_ON_PURPOSE __attribute__((no_sanitize("unsigned-integer-overflow")))
#else
#define HERD_WRAPS_ON_PURPOSE
#endif

/* Rounds n up to a multiple of align (a power of two). False on overflow:
 * this is the checked form of GGML_PAD, which wraps for n near UINT64_MAX. */
static inline bool herd_align_up_u64(uint64_t n, uint64_t align, uint64_t *out) {
    uint64_t r;
    if (__builtin_add_overflow(n, align - 1, &r)) return false;
    *out = r & ~(align - 1);
    return true;
}

#endif
