/* Converts a Hugging Face model folder (config.json, safetensors weights,
 * tokenizer.json) into a GGUF that herd and llama.cpp both run.
 *
 * Input, as users download it:
 *   config.json                      architectures[0] (GGUF architecture):
 *                                    LlamaForCausalLM, MistralForCausalLM,
 *                                    MixtralForCausalLM (llama), Qwen2ForCausalLM
 *                                    (qwen2), Qwen3ForCausalLM (qwen3),
 *                                    Qwen2MoeForCausalLM (qwen2moe),
 *                                    Qwen3MoeForCausalLM (qwen3moe),
 *                                    Gemma2ForCausalLM (gemma2),
 *                                    Gemma3ForCausalLM and the text model of
 *                                    Gemma3ForConditionalGeneration (gemma3),
 *                                    Phi3ForCausalLM (phi3); the
 *                                    hyperparameters;
 *                                    tie_word_embeddings; rope_scaling (none,
 *                                    "linear", Llama 3's "llama3", Phi-3's
 *                                    "longrope")
 *   model.safetensors, or model-0000X-of-0000N.safetensors with
 *   model.safetensors.index.json     weights in F32, F16 or BF16
 *   tokenizer.json, tokenizer_config.json, generation_config.json
 *                                    the vocabulary (see hf_vocab.h)
 *
 * Output, as llama.cpp's convert_hf_to_gguf.py names it: token_embd,
 * output_norm, output (absent when the embeddings are tied), and per layer
 * blk.N.attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate,
 * ffn_up, ffn_down, and as the family has them: attn_q/k/v.bias (qwen2,
 * qwen2moe), attn_q_norm / attn_k_norm (qwen3, qwen3moe, gemma3),
 * post_attention_norm / post_ffw_norm (gemma), attn_qkv and a gate-then-up
 * ffn_up (phi3's fused qkv_proj and gate_up_proj, kept as they are),
 * ffn_gate_inp and the experts stacked into ffn_gate_exps / ffn_up_exps /
 * ffn_down_exps (Hugging Face's [rows, cols] per expert -> GGUF ne [cols,
 * rows, n_expert]; Mixtral's w1 / w3 / w2 are gate / up / down),
 * ffn_*_shexp and ffn_gate_inp_shexp (qwen2moe's shared expert and its
 * gate); rope_freqs for Llama 3 RoPE scaling, rope_factors_long / _short for
 * LongRoPE. Transforms: Hugging Face's Llama code rotates the pairs (i, i +
 * d/2) of each head (rotate_half); GGUF's llama architecture rotates
 * adjacent pairs, so the rows of attn_q and attn_k are permuted within each
 * head for llama (Mistral, Mixtral) only, as llama.cpp's converter does; the
 * other architectures use the NEOX pairing, which is rotate_half. Gemma's
 * RMSNorm weights are stored as w and applied as 1 + w: every Gemma norm
 * (Q/K norms included) is written as w + 1, computed in float32 as
 * Hugging Face's Gemma RMSNorm does.
 *
 * Config features herd does not run (other RoPE scalings, partial rotary,
 * Qwen's per-layer window, other Gemma layer patterns or local RoPE bases,
 * dense layers among MoE ones) are refused by name. Every tensor the folder
 * holds must be used (a stray one means a feature herd would silently drop,
 * such as Llama attention biases), shapes must match config.json, and the
 * output is written to a temp file renamed into place only when complete.
 * Memory stays near the largest output tensor (for MoE, one projection of
 * every expert of a layer): the weights are mapped, converted row by row,
 * and their pages dropped once written. */
#ifndef HERD_CONVERT_CONVERT_HF_H
#define HERD_CONVERT_CONVERT_HF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/gguf.h"
#include "herd/status.h"

/* Reported after each tensor is written. */
struct herd_hf_convert_progress {
    size_t n_done, n_tensors;
    const char *tensor_name;          /* the tensor just written */
    uint64_t bytes_done, bytes_total; /* tensor data written / to write */
    double elapsed_s;
};

typedef void (*herd_hf_convert_progress_fn)(void *ctx, const struct herd_hf_convert_progress *p);

struct herd_hf_convert_params {
    const char *model_dir;
    const char *out_path;
    const char *name;                     /* general.name; NULL: the folder's name */
    bool type_auto;                       /* true (default): matrices keep the weights' own float type */
    enum herd_ggml_type type;             /* matrices when !type_auto; rows not a multiple of its block stay F32 */
    herd_hf_convert_progress_fn progress; /* NULL for none; called on the converting thread */
    void *progress_ctx;
};

/* What was written, for the caller's summary line. */
struct herd_hf_convert_summary {
    char arch[16];            /* "llama", "qwen2", "gemma3", "qwen3moe", ... */
    enum herd_ggml_type type; /* of the matrices */
    size_t n_tensors;
    uint64_t n_params;
    uint64_t data_bytes; /* tensor data in the output */
    uint32_t n_vocab;
    char tokenizer[16]; /* tokenizer.ggml.model */
    char pre[32];       /* tokenizer.ggml.pre */
    bool tied;          /* no output.weight */
    double seconds;
};

void herd_hf_convert_default_params(struct herd_hf_convert_params *p);

/* Converts p->model_dir into p->out_path. On success fills *summary (which
 * may be NULL). On failure returns the status with err naming the file and
 * the field or tensor, and leaves no file at out_path (an existing one is
 * untouched). */
enum herd_status herd_hf_convert(const struct herd_hf_convert_params *p, struct herd_hf_convert_summary *summary,
                                 struct herd_error *err);

#endif
