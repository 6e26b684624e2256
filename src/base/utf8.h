/* UTF-8 in one place: checking a sequence (strict: no overlong forms,
 * surrogates or code points past U+10FFFF), encoding and decoding one
 * code point, and the valid prefix of a string. Used by the
 * detokenizer, the tokenizers, the template engine and the server. */
#ifndef HERD_BASE_UTF8_H
#define HERD_BASE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length of the valid UTF-8 sequence at p (n >= 1 bytes available):
 * > 0 valid, 0 incomplete but possibly valid, -1 invalid. */
int herd_utf8_seq(const uint8_t *p, size_t n);

/* Writes cp (<= U+10FFFF) to out (room for 4 bytes); returns the length. */
size_t herd_utf8_encode(uint32_t cp, char *out);

/* The code point at p (n bytes available) of a valid sequence. */
uint32_t herd_utf8_decode(const char *p, size_t n);

/* Length of the longest valid UTF-8 prefix of s. */
size_t herd_utf8_valid_prefix(const char *s, size_t n);

#endif
