/* Converts a llama2.c checkpoint and its tokenizer.bin into a GGUF that herd
 * and llama.cpp both run.
 *
 * Checkpoint formats (all little endian):
 *   legacy (version 0): 7 x i32 header (dim, hidden_dim, n_layers, n_heads,
 *     n_kv_heads, vocab_size, seq_len; a negative vocab_size means the output
 *     classifier is stored separately), then f32 weights: token embedding
 *     (vocab, dim); per-layer groups rms_att (dim), wq (dim, dim),
 *     wk (kv_dim, dim), wv (kv_dim, dim), wo (dim, dim), rms_ffn (dim),
 *     w1 (hidden, dim), w2 (dim, hidden), w3 (hidden, dim), each group for all
 *     layers in turn; rms_final (dim); two unused RoPE tables of
 *     seq_len * head_size / 2 floats; the classifier (vocab, dim) if unshared.
 *   version 1: u32 magic "ak42" (0x616b3432), i32 version 1, the same 7 x i32,
 *     u8 shared_classifier, zero padding to 256 bytes; then f32: all rms_att,
 *     all rms_ffn, rms_final, token embedding, all wq, wk, wv, wo, w1, w2, w3,
 *     and the classifier if unshared.
 *   version 2: as version 1 with an i32 group_size after the flag; the norms
 *     in f32 in the same order, then every matrix of the version-1 order as
 *     int8 values, then every matrix's f32 scales (one per group_size values).
 * Matrices are (rows = outputs, cols = inputs), row-major: exactly GGUF's
 * ne = [cols, rows]. RoPE in llama2.c rotates adjacent pairs like llama.cpp's
 * "llama" architecture, so no permutation is needed.
 *
 * tokenizer.bin: i32 max_token_length, then per token f32 score, i32 length,
 * bytes. llama2.c stores SentencePiece's "▁" as a space and BOS/EOS as
 * "\n<s>\n" / "\n</s>\n"; the converter restores the SentencePiece forms. */
#ifndef HERD_CONVERT_CONVERT_LLAMA2C_H
#define HERD_CONVERT_CONVERT_LLAMA2C_H

#include "herd/gguf.h"
#include "herd/status.h"

struct herd_llama2c_params {
    const char *checkpoint_path;
    const char *tokenizer_path;
    const char *out_path;
    const char *name;         /* general.name; NULL: the checkpoint's file name without extension */
    enum herd_ggml_type type; /* matrices; F32 default. Rows not a multiple of the block stay F32. */
};

void herd_llama2c_default_params(struct herd_llama2c_params *p);

/* Converts; writes out_path atomically. Every header field and every size is
 * checked against the file before use. */
enum herd_status herd_llama2c_convert(const struct herd_llama2c_params *p, struct herd_error *err);

#endif
