/* Text -> token ids for a model's vocabulary: SentencePiece ("llama",
 * tokenizer_spm.c) and byte-level BPE ("gpt2", tokenizer_bpe.c, for the
 * pre-tokenizers listed there; others are refused by name). Special-token
 * text in the input is treated as plain text. */
#ifndef HERD_TOKENIZER_TOKENIZER_H
#define HERD_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/status.h"
#include "tokenizer/vocab.h"

struct herd_bpe;

struct herd_tokenizer {
    const struct herd_vocab *vocab;
    struct herd_bpe *bpe; /* merges and pre-tokenizer, BPE vocabularies only */
    /* SentencePiece: boundaries no vocabulary token spans, so tokenization
     * can run segment by segment: before a "▁" that follows another
     * character (no token holds "x▁"), and around "\n" (no multi-byte token
     * holds a newline). Computed from the vocabulary at create. */
    bool spm_cut_before_space, spm_cut_at_newline;
    /* control and user-defined tokens, longest text first, for PARSE_SPECIAL */
    int32_t *specials;
    uint32_t n_specials;
    int32_t *slots; /* open-addressing table of token ids by text, -1 empty */
    uint32_t mask;
};

/* Builds the lookup table; vocab must outlive the tokenizer. */
enum herd_status herd_tokenizer_create(const struct herd_vocab *vocab, struct herd_tokenizer **out,
                                       struct herd_error *err);
void herd_tokenizer_destroy(struct herd_tokenizer *tk);

/* Id of the token whose text is exactly these bytes, or -1. */
int32_t herd_tokenizer_find(const struct herd_tokenizer *tk, const char *text, size_t len);

/* Flags of herd_tokenize. */
enum {
    HERD_TOK_ADD_SPECIAL = 1u,   /* BOS (and EOS) as the vocabulary asks */
    HERD_TOK_PARSE_SPECIAL = 2u, /* text of control and user-defined tokens ("<s>", "<|im_start|>") becomes
                                    those tokens; without it, such text is tokenized as plain text */
};

/* Tokenizes len bytes of text into out (at most max ids) with flags.
 * HERD_E_OVERFLOW when more than max ids would be needed, HERD_E_INVALID when the text is not
 * UTF-8 (BPE). */
enum herd_status herd_tokenize(const struct herd_tokenizer *tk, const char *text, size_t len, unsigned flags,
                               int32_t *out, uint32_t max, uint32_t *n_out, struct herd_error *err);

/* BPE state from tk's vocabulary file: merge ranks by token-id pair and the
 * named pre-tokenizer's compiled patterns (tk's token table must be built).
 * HERD_E_UNSUPPORTED names an unknown pre-tokenizer. */
enum herd_status herd_bpe_create(const struct herd_tokenizer *tk, const char *pre, struct herd_bpe **out,
                                 struct herd_error *err);
void herd_bpe_destroy(struct herd_bpe *b);
/* The BPE algorithm alone (no special tokens). */
enum herd_status herd_tokenize_bpe(const struct herd_tokenizer *tk, const char *text, size_t len, int32_t *out,
                                   uint32_t max, uint32_t *n_out, struct herd_error *err);

/* The SentencePiece algorithm alone (no special tokens); add_prefix puts
 * the vocabulary's "▁" prefix in front (when it has add_space_prefix). */
enum herd_status herd_tokenize_spm(const struct herd_tokenizer *tk, const char *text, size_t len, bool add_prefix,
                                   int32_t *out, uint32_t max, uint32_t *n_out, struct herd_error *err);

#endif
