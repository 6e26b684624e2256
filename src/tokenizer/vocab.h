/* A model's vocabulary, read from its GGUF tokenizer.ggml.* metadata: token
 * texts (pointing into the mapping), types, scores, special ids; and the
 * streaming detokenizer, which turns generated ids into text without ever
 * emitting a broken UTF-8 character: bytes of a character split across
 * tokens are held back until it is complete, and bytes that can never form
 * valid UTF-8 become U+FFFD. */
#ifndef HERD_TOKENIZER_VOCAB_H
#define HERD_TOKENIZER_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/gguf.h"
#include "herd/status.h"

enum herd_vocab_kind { HERD_VOCAB_SPM, HERD_VOCAB_BPE };

/* GGUF token types (llama.cpp's llama_token_type). */
enum herd_token_type {
    HERD_TOKEN_UNDEFINED = 0,
    HERD_TOKEN_NORMAL = 1,
    HERD_TOKEN_UNKNOWN = 2,
    HERD_TOKEN_CONTROL = 3,
    HERD_TOKEN_USER_DEFINED = 4,
    HERD_TOKEN_UNUSED = 5,
    HERD_TOKEN_BYTE = 6,
};

struct herd_vocab {
    enum herd_vocab_kind kind;
    const struct herd_gguf *gguf; /* the file it was read from (merges live there) */
    char pre[64];                 /* tokenizer.ggml.pre, "default" when absent */
    uint32_t n_tokens;
    struct herd_gguf_str *text; /* [n_tokens], into the GGUF mapping */
    uint8_t *type;              /* [n_tokens] enum herd_token_type */
    float *score;               /* [n_tokens]; 0 when the file has none */
    int32_t bos, eos, eot, unk; /* -1 when absent */
    bool add_bos, add_eos;
    bool add_space_prefix;   /* SPM: "▁" before the text (default true) */
    int32_t byte_token[256]; /* SPM: id of <0xNN>, -1 if absent */
};

/* Reads the vocabulary of g (which must outlive it). Unknown
 * tokenizer.ggml.model values are an error naming them. */
enum herd_status herd_vocab_load(const struct herd_gguf *g, struct herd_vocab **out, struct herd_error *err);
void herd_vocab_destroy(struct herd_vocab *v);

/* True for ids that end generation (EOS, EOT). */
bool herd_vocab_is_eog(const struct herd_vocab *v, int32_t id);

/* Raw bytes a token stands for: "▁" -> " " and <0xNN> -> the byte for SPM,
 * the byte-level alphabet mapped back to bytes for BPE; control tokens are
 * empty. Writes at most cap bytes to out and returns the full length. */
size_t herd_vocab_piece(const struct herd_vocab *v, int32_t id, char *out, size_t cap);

/* Streaming detokenizer for one sequence. */
struct herd_detok {
    const struct herd_vocab *v;
    uint8_t pending[8];
    size_t n_pending;
    bool started; /* SPM drops the space prefix of the first text */
};

void herd_detok_init(struct herd_detok *d, const struct herd_vocab *v);
/* Appends the text of id; writes the complete UTF-8 it can emit to out
 * (cap >= 64 + the longest token) and returns its length. */
size_t herd_detok_push(struct herd_detok *d, int32_t id, char *out, size_t cap);
/* Emits what is still held back (as U+FFFD where incomplete). */
size_t herd_detok_flush(struct herd_detok *d, char *out, size_t cap);

#endif
