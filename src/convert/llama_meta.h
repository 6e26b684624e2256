/* The metadata block of a Llama-architecture GGUF, written the same way by
 * every herd tool that creates models (synth, convert), in the key order
 * llama.cpp's converters use. */
#ifndef HERD_CONVERT_LLAMA_META_H
#define HERD_CONVERT_LLAMA_META_H

#include <stdint.h>

#include "herd/gguf.h"
#include "herd/status.h"

struct herd_llama_meta {
    const char *name;         /* general.name */
    enum herd_ggml_type type; /* dominant weight type, for general.file_type */
    uint32_t n_vocab, n_ctx, n_embd, n_layer, n_ff, n_head, n_head_kv;
    float rope_freq_base;
    float rms_eps;
};

/* general.file_type (llama_ftype) for a model whose matrices are all of type t. */
uint32_t herd_llama_file_type(enum herd_ggml_type t);

/* Adds general.architecture = "llama", general.name, general.file_type and
 * the llama.* hyperparameters (RoPE dimension = head size). */
enum herd_status herd_llama_meta_write(struct herd_gguf_writer *w, const struct herd_llama_meta *m,
                                       struct herd_error *err);

/* Adds general.quantization_version = 2 when t is a quantized type (ggml's
 * current block formats); nothing otherwise. Goes after the tokenizer keys. */
enum herd_status herd_llama_meta_write_quant_version(struct herd_gguf_writer *w, enum herd_ggml_type t,
                                                     struct herd_error *err);

#endif
