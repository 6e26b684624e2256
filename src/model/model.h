/* A loaded model: the validated description of a GGUF file and its weights
 * bound in place (pointers into the read-only mapping). Vectors (norm
 * weights, biases) are converted to f32 once at load; matrices stay in their
 * file type and are used by the kernels directly. */
#ifndef HERD_MODEL_MODEL_H
#define HERD_MODEL_MODEL_H

#include <stdbool.h>

#include "herd/gguf.h"
#include "herd/status.h"
#include "kernels/matmul.h"
#include "model/model_desc.h"

struct herd_layer {
    const float *attn_norm;            /* [n_embd] */
    const float *ffn_norm;             /* [n_embd] */
    const float *bq, *bk, *bv;         /* qwen2 biases [q_dim], [kv_dim], [kv_dim]; NULL otherwise */
    const float *q_norm, *k_norm;      /* qwen3 / gemma3 per-head norms [head_dim]; NULL otherwise */
    const float *post_attn, *post_ffn; /* gemma's norms of the attention and FFN outputs [n_embd]; NULL otherwise */
    bool slides;                       /* attends to the last n_swa positions only */
    struct herd_matrix wq;             /* (n_head * head_dim, n_embd) */
    struct herd_matrix wk, wv;         /* (n_head_kv * head_dim, n_embd) */
    struct herd_matrix wo;             /* (n_embd, n_head * head_dim) */
    struct herd_matrix w_gate, w_up;   /* (n_ff, n_embd); phi3's are the two halves of its ffn_up */
    struct herd_matrix w_down;         /* (n_embd, n_ff) */
    /* Mixture of experts (router.data NULL: a dense FFN). w_gate, w_up and
     * w_down are then the shared expert where there is one (qwen2moe), else
     * empty. */
    struct herd_matrix router;                        /* (n_expert, n_embd): ffn_gate_inp */
    struct herd_matrix *exp_gate, *exp_up, *exp_down; /* [n_expert], row views of ffn_{gate,up,down}_exps */
    const float *shexp_gate;                          /* [n_embd]: the shared expert's gate, or NULL */
};

/* A layer matrix's role, in the order the forward pass multiplies them
 * (Q, K, V share their input rows, as do gate and up); the GGUF tensor name
 * is "blk.N." + herd_matrix_role_name(role) + ".weight", "output.weight"
 * for the output matrix. */
enum herd_matrix_role {
    HERD_ROLE_ATTN_Q = 0,
    HERD_ROLE_ATTN_K,
    HERD_ROLE_ATTN_V,
    HERD_ROLE_ATTN_OUTPUT,
    HERD_ROLE_FFN_GATE,
    HERD_ROLE_FFN_UP,
    HERD_ROLE_FFN_DOWN,
    HERD_ROLE_OUTPUT,
    HERD_ROLE__COUNT
};

/* "attn_q", ..., "ffn_down", "output". */
const char *herd_matrix_role_name(enum herd_matrix_role role);

struct herd_model {
    struct herd_gguf *gguf; /* owns the mapping */
    struct herd_model_desc desc;
    const struct herd_arch_info *arch;
    bool rope_neox;          /* rotate pairs (i, i + n_rot/2) (qwen, gemma, phi3); llama adjacent pairs */
    float embd_scale;        /* gemma: embeddings times sqrt(n_embd); 1 otherwise */
    float attn_scale;        /* the factor on q.k (herd_model_attn_scale) */
    uint32_t window_all;     /* n_swa when every layer slides (Mistral, phi3), else 0: older KV blocks are freed */
    const float *rope_freqs; /* Llama 3.1 frequency divisors [n_rot/2], or NULL */
    const float *rope_long, *rope_short; /* Phi-3 LongRoPE divisors [n_rot/2] for contexts above and within
                                          * rope.scaling.original_context_length, or NULL */
    struct herd_matrix tok_embd;         /* (n_vocab, n_embd) */
    struct herd_matrix output;           /* (n_vocab, n_embd); tok_embd when tied */
    const float *output_norm;            /* [n_embd] */
    struct herd_layer *layers;           /* [n_layer] */
    float *owned_f32;                    /* backing store of the converted vectors */
    struct herd_matrix *experts;         /* backing store of the layers' expert views */
    uint8_t *packed_store;               /* repacked quantized matrices (see herd_matrix_pack), or NULL */
    size_t packed_bytes;
};

/* Opens, validates (herd_model_desc_validate) and binds path. When the
 * best kernels for this CPU prefer it (and HERD_NO_PACK is not set),
 * quantized matrices are also repacked once into the tiled kernels' layout
 * (a copy in memory; the file's bytes stay in use for precise mode). The
 * error names the file and the problem; *out is NULL on failure. */
enum herd_status herd_model_load(const char *path, struct herd_model **out, struct herd_error *err);
void herd_model_destroy(struct herd_model *m);

#endif
