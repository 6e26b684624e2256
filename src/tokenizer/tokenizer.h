/* Text -> token ids for a model's vocabulary. SentencePiece vocabularies
 * ("llama") are tokenized here; byte-level BPE ("gpt2") with its
 * pre-tokenizers is the tokenizer issue's (it is refused with a clear error
 * until then). Special-token text in the input is treated as plain text. */
#ifndef HERD_TOKENIZER_TOKENIZER_H
#define HERD_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/status.h"
#include "tokenizer/vocab.h"

struct herd_tokenizer {
    const struct herd_vocab *vocab;
    int32_t *slots; /* open-addressing table of token ids by text, -1 empty */
    uint32_t mask;
};

/* Builds the lookup table; vocab must outlive the tokenizer. */
enum herd_status herd_tokenizer_create(const struct herd_vocab *vocab, struct herd_tokenizer **out,
                                       struct herd_error *err);
void herd_tokenizer_destroy(struct herd_tokenizer *tk);

/* Id of the token whose text is exactly these bytes, or -1. */
int32_t herd_tokenizer_find(const struct herd_tokenizer *tk, const char *text, size_t len);

/* Tokenizes len bytes of text into out (at most max ids); add_special adds
 * BOS (and EOS) as the vocabulary asks. HERD_E_INVALID when more than max
 * ids would be needed; HERD_E_UNSUPPORTED for vocabularies not handled yet. */
enum herd_status herd_tokenize(const struct herd_tokenizer *tk, const char *text, size_t len, bool add_special,
                               int32_t *out, uint32_t max, uint32_t *n_out, struct herd_error *err);

/* The SentencePiece algorithm alone (no special tokens). */
enum herd_status herd_tokenize_spm(const struct herd_tokenizer *tk, const char *text, size_t len, int32_t *out,
                                   uint32_t max, uint32_t *n_out, struct herd_error *err);

#endif
