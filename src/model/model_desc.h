/* What a GGUF file says about its model: architecture, hyperparameters,
 * tokenizer summary, tensor totals; and the checks that decide whether the
 * engine can run it. Read by `herd inspect` and, later, by the model loader,
 * so both agree on what a file means. */
#ifndef HERD_MODEL_MODEL_DESC_H
#define HERD_MODEL_MODEL_DESC_H

#include <stdbool.h>
#include <stdint.h>

#include "base/vocab_limits.h"
#include "herd/gguf.h"
#include "herd/status.h"

/* Experts per layer: DeepSeek V3 and Qwen3's MoE have 256 and 128. */
#define HERD_MAX_EXPERTS 512u
/* More layers than any released dense model has (405B: 126); bounds the
 * per-layer arrays the engine allocates from block_count. */
#define HERD_MAX_LAYERS  512u
/* Bounds on dimensions: well above today's largest models. The vocabulary's
 * caps (HERD_MAX_VOCAB, HERD_MAX_TOKEN_BYTES) are in base/vocab_limits.h. */
#define HERD_MAX_EMBD    65536u
#define HERD_MAX_FF      (1u << 20)
#define HERD_MAX_HEADS   1024u

struct herd_model_desc {
    char arch[32];     /* general.architecture, "" if absent */
    char name[128];    /* general.name, "" if absent */
    int64_t file_type; /* general.file_type, -1 if absent */
    /* hyperparameters (0 where the file does not say) */
    uint64_t n_ctx_train;
    uint64_t n_embd;
    uint64_t n_layer;
    uint64_t n_ff;                             /* the widest layer's FFN (feed_forward_length) */
    uint32_t n_ff_layer[HERD_MAX_LAYERS];      /* each layer's: feed_forward_length as an array of block_count
                                           * entries (herd prune --ffn-keep writes one), else n_ff for all */
    uint64_t n_head;                           /* the most any layer has (attention.head_count) */
    uint64_t n_head_kv;                        /* defaults to n_head; the most any layer has */
    uint32_t n_head_layer[HERD_MAX_LAYERS];    /* each layer's: head_count / head_count_kv as arrays of */
    uint32_t n_head_kv_layer[HERD_MAX_LAYERS]; /* block_count entries (herd prune --heads-keep), else all alike */
    uint64_t head_dim;                         /* attention.key_length, else n_embd / n_head */
    uint64_t head_dim_v;                       /* attention.value_length, else head_dim (the engine needs them equal) */
    uint64_t n_rot;                            /* rope.dimension_count, defaults to head_dim */
    double rope_freq_base;                     /* defaults to 10000 */
    double rope_freq_scale;  /* 1 / rope.scaling.factor with rope.scaling.type "linear"; 1 otherwise */
    char rope_scaling[16];   /* rope.scaling.type, "" if absent */
    double rope_attn_factor; /* rope.scaling.attn_factor: cos and sin scaled by it (Phi-3 LongRoPE), 1 if absent */
    uint64_t n_ctx_orig;     /* rope.scaling.original_context_length, else n_ctx_train */
    double rms_eps;          /* defaults to 1e-5 */
    uint64_t n_swa;          /* attention.sliding_window: keys a sliding layer sees, 0 when none */
    double attn_softcap;     /* attn_logit_softcapping (gemma2), 0 when none */
    double final_softcap;    /* final_logit_softcapping (gemma2), 0 when none */
    double attn_scale;       /* attention.scale, else the architecture's default (see herd_model_attn_scale) */
    /* mixture of experts (0 experts: a dense FFN) */
    uint64_t n_expert, n_expert_used; /* expert_count, expert_used_count */
    uint64_t n_ff_exp;                /* expert_feed_forward_length, else n_ff */
    uint64_t n_ff_shexp;              /* expert_shared_feed_forward_length, else n_ff_exp (qwen2moe) */
    bool expert_weights_norm;         /* top-k weights renormalised to sum 1: expert_weights_norm, else
                                       * the architecture's (mixtral, qwen3moe yes; qwen2moe no) */
    bool tied_embeddings;             /* tensors present and no output.weight */
    /* tokenizer */
    char tok_model[32]; /* tokenizer.ggml.model */
    char tok_pre[64];   /* tokenizer.ggml.pre */
    uint64_t n_vocab;   /* number of tokenizer.ggml.tokens */
    uint64_t n_merges;
    int64_t bos_id, eos_id, unk_id, pad_id; /* -1 when absent */
    bool add_bos, add_eos;
    bool has_add_bos, has_add_eos;
    uint64_t chat_template_bytes; /* 0 when there is none */
    /* tensors */
    uint64_t n_tensors;
    uint64_t weight_bytes; /* sum of all tensor data */
    uint64_t n_params;     /* sum of all tensor elements */
};

/* Fills d from g, leniently: missing keys keep their defaults, so this works
 * on vocabulary-only files and on architectures the engine does not run.
 * Returns an error only for values of the wrong type or out of range (a
 * string array where a count is expected, an id that does not fit). */
enum herd_status herd_model_desc_read(const struct herd_gguf *g, struct herd_model_desc *d, struct herd_error *err);

/* Strict checks that the engine can run the model described by g and d:
 * a supported architecture, all hyperparameters present and consistent,
 * every required tensor present with the expected shape and a type the
 * engine computes, a tokenizer whose arrays agree with each other and with
 * token_embd, special ids inside the vocabulary, byte tokens well formed.
 * Returns the first problem found, naming the key or tensor. */
enum herd_status herd_model_desc_validate(const struct herd_gguf *g, const struct herd_model_desc *d,
                                          struct herd_error *err);

/* Memory a run with a context of n_ctx tokens needs, in bytes. */
struct herd_ram_estimate {
    uint64_t weights;  /* mapped from the file (page cache, shared between processes) */
    uint64_t kv_cache; /* f16 K and V for n_ctx tokens */
    uint64_t compute;  /* activations and logits for a 512-token batch */
    uint64_t total;
};

void herd_model_desc_ram_estimate(const struct herd_model_desc *d, uint64_t n_ctx, struct herd_ram_estimate *out);

/* What sets apart the architectures the engine runs; every other step is
 * the Llama one (RMSNorm, RoPE, grouped-query attention, gated FFN). */
struct herd_arch_info {
    const char *name;
    bool rope_neox;      /* RoPE rotates pairs (i, i + n_rot/2); llama rotates adjacent pairs */
    bool qkv_bias;       /* attn_{q,k,v}.bias required (qwen2) */
    bool qk_norm;        /* attn_{q,k}_norm: RMSNorm of each Q and K head before RoPE (qwen3, gemma3) */
    bool gemma;          /* embeddings x sqrt(n_embd), GELU-tanh gate, norms after attention and FFN too */
    bool fused_qkv;      /* attn_qkv (Q, K, V rows stacked) where attn_q is absent (phi3) */
    bool fused_gate_up;  /* ffn_up holds gate then up rows where ffn_gate is absent (phi3) */
    uint32_t swa_period; /* with a sliding window, layer l is global when (l + 1) % swa_period == 0
                          * (gemma2 2, gemma3 6); 0: every layer slides */
    bool swa_local_rope; /* sliding layers rotate with base 10000 and no scaling (gemma3) */
    bool moe_norm;       /* experts' top-k weights renormalised unless expert_weights_norm says */
    bool shared_expert;  /* MoE layers also run ffn_*_shexp, gated by sigmoid(x . ffn_gate_inp_shexp) (qwen2moe) */
};

/* The architecture's description, NULL for one the engine does not run
 * (supported: llama (and mixtral), qwen2, qwen3, gemma2, gemma3, phi3,
 * qwen2moe, qwen3moe). */
const struct herd_arch_info *herd_model_arch_info(const char *arch);

/* True for the architectures the engine implements. */
bool herd_model_arch_supported(const char *arch);

/* Whether layer l attends only within the sliding window. */
bool herd_model_layer_slides(const struct herd_model_desc *d, uint64_t l);

/* The factor on q.k: attention.scale when the file gives it; gemma2/3's
 * 27B (as llama.cpp tells it: 46 / 62 layers) 1/sqrt(n_embd / n_head);
 * else 1/sqrt(head_dim). */
double herd_model_attn_scale(const struct herd_model_desc *d);

#endif
