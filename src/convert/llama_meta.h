/* The metadata block of a Llama-architecture GGUF, written the same way by
 * every herd tool that creates models (synth, convert), in the key order
 * llama.cpp's converters use. */
#ifndef HERD_CONVERT_LLAMA_META_H
#define HERD_CONVERT_LLAMA_META_H

#include <stdint.h>

#include "herd/gguf.h"
#include "herd/status.h"

struct herd_llama_meta {
    const char *arch;         /* general.architecture and the keys' prefix; NULL: "llama" */
    const char *name;         /* general.name */
    enum herd_ggml_type type; /* dominant weight type, for general.file_type */
    uint32_t n_vocab, n_ctx, n_embd, n_layer, n_ff, n_head, n_head_kv;
    uint32_t head_dim; /* 0: n_embd / n_head; otherwise written as attention.key_length / value_length */
    float rope_freq_base;
    float rms_eps;
    /* written only where set (non-zero): */
    uint32_t n_swa;                    /* attention.sliding_window */
    float attn_softcap, final_softcap; /* attn_logit_softcapping, final_logit_softcapping */
    float rope_linear;                 /* rope.scaling.type "linear" with this rope.scaling.factor */
    uint32_t n_expert, n_expert_used;  /* expert_count, expert_used_count */
    uint32_t n_ff_exp, n_ff_shexp;     /* expert_feed_forward_length, expert_shared_feed_forward_length */
};

/* general.file_type (llama_ftype) for a model whose matrices are all of type t. */
uint32_t herd_llama_file_type(enum herd_ggml_type t);

/* Adds general.architecture (m->arch, "llama" by default), general.name,
 * general.file_type and the ARCH.* hyperparameters (RoPE dimension = head
 * size). */
enum herd_status herd_llama_meta_write(struct herd_gguf_writer *w, const struct herd_llama_meta *m,
                                       struct herd_error *err);

/* Adds general.quantization_version = 2 when t is a quantized type (ggml's
 * current block formats); nothing otherwise. Goes after the tokenizer keys. */
enum herd_status herd_llama_meta_write_quant_version(struct herd_gguf_writer *w, enum herd_ggml_type t,
                                                     struct herd_error *err);

#endif
