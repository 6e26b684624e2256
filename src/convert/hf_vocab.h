/* A Hugging Face tokenizer (tokenizer.json, tokenizer_config.json, and the
 * special ids of config.json / generation_config.json) turned into GGUF
 * tokenizer.* metadata, the way llama.cpp's convert_hf_to_gguf.py does it, so
 * that herd and llama.cpp tokenize the converted model alike.
 *
 * Two kinds of tokenizer.json are read (model.type "BPE"):
 *   - SentencePiece-style BPE (byte_fallback true, "▁" for spaces): GGUF
 *     tokenizer.ggml.model "llama", pre "default", tokens with scores and
 *     token types. The scores encode the merge order (see hf_vocab.c), which
 *     SentencePiece-style tokenizers apply by score;
 *   - byte-level BPE (a ByteLevel pre-tokenizer or decoder): "gpt2", tokens,
 *     token types and tokenizer.ggml.merges; tokenizer.ggml.pre names the
 *     pre-tokenizer's regular expressions as llama.cpp's converter does
 *     ("llama-bpe", "qwen2", "smollm", "gpt-2"); pre-tokenizers herd and
 *     llama.cpp do not know are refused, as the converter refuses them.
 * Token types: normal 1, unknown 2, control 3 (added special tokens, and
 * added ones that look special like "<|...|>"), user-defined 4 (other added
 * tokens), unused 5 (ids no token has, "[PADn]"), byte 6 ("<0xNN>").
 * Other tokenizer models (Unigram, WordPiece) and a folder with only
 * tokenizer.model are refused with a message that says so. */
#ifndef HERD_CONVERT_HF_VOCAB_H
#define HERD_CONVERT_HF_VOCAB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "herd/gguf.h"
#include "herd/status.h"

/* tokenizer.json files of large vocabularies are ~10 MB (Llama 3: 9 MB,
 * Qwen2: 7 MB); 256 MB bounds what a corrupt or hostile file can make
 * jansson allocate. config.json and friends are a few KB. */
#define HERD_HF_TOKENIZER_JSON_MAX_BYTES ((size_t)256 << 20)
#define HERD_HF_CONFIG_JSON_MAX_BYTES    ((size_t)16 << 20)

/* Reads and parses the JSON file at path (at most max_bytes; duplicate keys
 * are an error). HERD_E_NOT_FOUND when the file does not exist, so callers
 * can treat optional files as absent; other failures name the file, line and
 * column. On success the caller owns *out (json_decref). */
enum herd_status herd_hf_json_load(const char *path, size_t max_bytes, json_t **out, struct herd_error *err);

/* Numbers of such files are parsed as doubles (transformers writes
 * integers too large for jansson's); this reads one as an integer in
 * 0..max: an integral value up to 2^53. False for anything else. */
bool herd_hf_json_uint(const json_t *v, uint64_t max, uint64_t *out);

enum herd_hf_vocab_kind { HERD_HF_VOCAB_SPM, HERD_HF_VOCAB_BPE };

struct herd_hf_vocab {
    enum herd_hf_vocab_kind kind;
    char pre[32]; /* tokenizer.ggml.pre */
    uint32_t n_tokens;
    char **text;   /* [n_tokens] NUL-terminated (token texts hold no NUL) */
    uint64_t *len; /* [n_tokens] */
    float *score;  /* [n_tokens]; SPM only */
    int32_t *type; /* [n_tokens] GGUF token types */
    char **merges; /* [n_merges] "left right"; BPE only */
    uint64_t *merge_len;
    uint32_t n_merges;
    int32_t bos, eos, unk, pad, eot; /* -1 when unknown */
    int add_bos, add_eos;            /* -1 when the folder does not say */
    int add_space_prefix;            /* SPM; -1 when the folder does not say */
    char *chat_template;             /* NULL when there is none */
    char **template_names;           /* named templates (tokenizer.chat_template.NAME) */
    char **templates;
    uint32_t n_templates;
};

/* Reads the tokenizer of the model folder dir. n_vocab is the number of rows
 * of the model's token embedding: the vocabulary is padded to it with unused
 * "[PADn]" tokens, and a tokenizer with more tokens than that is an error.
 * On success the caller owns *out (herd_hf_vocab_destroy). Errors name the
 * file and the field. */
enum herd_status herd_hf_vocab_load(const char *dir, uint32_t n_vocab, struct herd_hf_vocab **out,
                                    struct herd_error *err);

void herd_hf_vocab_destroy(struct herd_hf_vocab *v); /* NULL is a no-op */

/* Adds the tokenizer.* keys to w, in the order llama.cpp's converter writes
 * them. */
enum herd_status herd_hf_vocab_write(const struct herd_hf_vocab *v, struct herd_gguf_writer *w, struct herd_error *err);

#endif
