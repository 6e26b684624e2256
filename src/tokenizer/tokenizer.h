/* Text -> token ids for a model's vocabulary: SentencePiece ("llama",
 * tokenizer_spm.c) and byte-level BPE ("gpt2", tokenizer_bpe.c, for the
 * pre-tokenizers listed there; others are refused by name).
 *
 * Added tokens come first, as in llama.cpp (llama_vocab::tokenizer_st_partition):
 * the text is cut at the text of every USER_DEFINED token, and with
 * HERD_TOK_PARSE_SPECIAL also of every CONTROL and UNKNOWN token; only the
 * pieces between them go through SentencePiece or BPE. The tokens are taken
 * longest text first (equal lengths: lower id first), each one at all its
 * places, left to right, in the pieces the longer ones left; a token that
 * strips (see struct herd_added) removes the ASCII whitespace next to it. */
#ifndef HERD_TOKENIZER_TOKENIZER_H
#define HERD_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/status.h"
#include "tokenizer/vocab.h"

struct herd_bpe;

/* One added token (CONTROL, USER_DEFINED or UNKNOWN with text), in the order
 * they are matched. GGUF files carry no lstrip/rstrip/normalized attributes:
 * the strips are llama.cpp's per-model rules (Phi-3's added tokens strip
 * the whitespace after them, except <unk>, <s> and <|endoftext|>), and the
 * converter already wrote non-normalized tokens in their normalized form. */
struct herd_added {
    int32_t id;
    uint32_t len;  /* bytes of its text */
    uint8_t flags; /* HERD_ADDED_* */
};

enum {
    HERD_ADDED_PARSE_ONLY = 1u, /* CONTROL or UNKNOWN: matched only with HERD_TOK_PARSE_SPECIAL */
    HERD_ADDED_LSTRIP = 2u,     /* drops ASCII whitespace before it */
    HERD_ADDED_RSTRIP = 4u,     /* drops ASCII whitespace after it */
};

/* Buckets of the added-token index: one per first two bytes, then one per
 * first byte for one-byte tokens. */
#define HERD_ADDED_BUCKETS (65536u + 256u)

struct herd_tokenizer {
    const struct herd_vocab *vocab;
    struct herd_bpe *bpe; /* merges and pre-tokenizer, BPE vocabularies only */
    /* SentencePiece: boundaries no vocabulary token spans, so tokenization
     * can run segment by segment: before a "▁" that follows another
     * character (no token holds "x▁"), and around "\n" (no multi-byte token
     * holds a newline). Computed from the vocabulary at create. */
    bool spm_cut_before_space, spm_cut_at_newline;
    /* added tokens in matching order (longest text first) and an index of
     * them by their first bytes, so one pass over the text finds which ones
     * occur: bucket b holds added[bucket_items[bucket_start[b] ..
     * bucket_start[b + 1])], in matching order */
    struct herd_added *added;
    uint32_t n_added;
    uint32_t n_user;         /* of them USER_DEFINED (matched without PARSE_SPECIAL) */
    uint32_t *bucket_start;  /* [HERD_ADDED_BUCKETS + 1] */
    uint32_t *bucket_items;  /* [n_added] */
    uint8_t first_byte[256]; /* bit 1: a USER_DEFINED token starts with the byte, bit 2: a PARSE_ONLY one */
    int32_t *slots;          /* open-addressing table of token ids by text, -1 empty */
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
    HERD_TOK_PARSE_SPECIAL = 2u, /* text of CONTROL and UNKNOWN tokens ("<s>", "<|im_start|>") becomes those
                                    tokens; without it, such text is tokenized as plain text (USER_DEFINED
                                    tokens are matched either way, as in llama.cpp and Hugging Face) */
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
