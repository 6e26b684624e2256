/* The batched forward pass: one entry point evaluates a batch of tokens from
 * one or more sequences, each token with its sequence and position, against
 * the paged KV cache, and returns logits for the tokens that ask for them.
 * A single-user run is a batch of one sequence; continuous batching in the
 * server builds its batches for this same call. There is no second path. */
#ifndef HERD_MODEL_FORWARD_H
#define HERD_MODEL_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/pool.h"
#include "herd/status.h"
#include "kernels/kernels.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "model/profile.h"

struct herd_context_params {
    int n_threads;                      /* 0: herd_cpu_count() */
    uint32_t max_batch_tokens;          /* tokens per herd_decode call (512) */
    uint32_t max_outputs;               /* logit rows per call (64) */
    uint32_t kv_tokens;                 /* KV capacity in tokens over all sequences (4096) */
    uint32_t n_ctx;                     /* positions per sequence (0: kv_tokens) */
    uint32_t kv_block_tokens;           /* positions per KV block (16) */
    uint32_t max_seqs;                  /* sequence slots (64) */
    enum herd_kv_type kv_type;          /* F16 default; F32 for exact comparisons; Q8 to halve memory */
    bool precise;                       /* f32 activations into every matmul (no 8-bit activation quantization) */
    const struct herd_kernels *kernels; /* NULL: the best for this CPU */
    /* Called before each matmul with its float input rows (row t at x + t *
     * x_stride, n_tokens rows; the output matrix sees only the rows that
     * want logits), once per matrix (Q, K and V each see the same rows), on
     * the thread that calls herd_decode: herd imatrix's collector. NULL: none. */
    void (*observe_matmul)(void *ctx, uint32_t layer, enum herd_matrix_role role, const float *x, size_t x_stride,
                           size_t n_tokens);
    /* Called with the residual stream of every token of the batch (row t
     * at x + t * x_stride, n_tokens rows of n_embd floats): entering each
     * layer (layer = 0 .. n_layer - 1; layer 0 sees the scaled embeddings)
     * and leaving the last one (layer = n_layer, before the output norm),
     * in layer order, on the thread that calls herd_decode. The rows are
     * the engine's own: read them during the call, keep no pointer. herd
     * prune's Block Influence collector. NULL: none, at no cost (the last
     * layer's residual add is then done only for the rows that want logits). */
    void (*observe_residual)(void *ctx, uint32_t layer, const float *x, size_t x_stride, size_t n_tokens);
    void *observe_ctx; /* given to both observers */
};

void herd_context_default_params(struct herd_context_params *p);

struct seq_span;

struct herd_context {
    const struct herd_model *model;
    struct herd_context_params params;
    struct herd_kv *kv;
    struct herd_pool *pool;
    const struct herd_kernels *k;
    /* activations, [max_batch_tokens][dim] each */
    float *x, *xn, *q, *kx, *vx, *att, *gate, *up;
    float *out_rows;             /* [max_outputs][n_embd], normed final rows of the tokens that want logits */
    float *logits;               /* [max_outputs][n_vocab] */
    float *att_scratch;          /* per thread: a tile's scaled queries, running outputs and softmax state */
    uint32_t *att_tiles;         /* [max_batch_tokens]: the first token of each attention tile of a batch */
    double *rope_inv_freq;       /* [n_rot / 2]: base^(-2i / n_rot) x the linear scaling factor */
    const float *rope_div;       /* [n_rot / 2] divisors of the angles (Llama 3.1's, or Phi-3's long or short ones for
                            * this context's length), or NULL */
    float rope_mscale;           /* cos and sin times this (rope.scaling.attn_factor) */
    float *rope_cs;              /* [max_batch_tokens][n_rot / 2][2]: cos, sin of each batch token's angles */
    double *rope_inv_freq_local; /* gemma3's sliding layers (base 10000, no scaling); NULL otherwise */
    float *rope_cs_local;        /* their cos, sin; NULL otherwise */
    /* mixture of experts (NULL for a dense model) */
    float *moe_probs;     /* [max_batch_tokens][n_expert]: router logits, then probabilities */
    int32_t *moe_choice;  /* [max_batch_tokens][n_expert_used]: each token's experts */
    float *moe_weight;    /* [max_batch_tokens][n_expert_used]: and their weights */
    uint32_t *moe_rows;   /* [max_batch_tokens]: the tokens one expert runs */
    float *moe_wrow;      /* [max_batch_tokens]: their weights for it */
    float *moe_x, *moe_y; /* [max_batch_tokens][n_embd]: an expert's gathered inputs and its outputs */
    float *moe_acc;       /* [max_batch_tokens][n_embd]: the layer's FFN output being summed */
    void *mm_scratch;
    size_t mm_scratch_bytes;
    /* a team pass's lanes (forward.c's team_pass), one per thread; NULL on
     * one thread: the residual stream and its normed rows ([n_threads]
     * [4 tokens][n_embd] each), the quantized activations of the Q/K/V and
     * gate/up matmuls (team_scratch_bytes each, 64-byte aligned) */
    float *team_x, *team_xn;
    void *team_scratch;
    size_t team_scratch_bytes;
    uint32_t n_outputs;           /* rows of logits filled by the last herd_decode */
    struct seq_span *spans;       /* per sequence slot, reused by every herd_decode */
    struct herd_profile *profile; /* NULL; when set, herd_decode records time per operation into it */
};

/* Creates a context: the KV cache, the thread pool and every buffer are
 * allocated here, once. HERD_E_NOMEM names the size that failed. */
enum herd_status herd_context_create(const struct herd_model *m, const struct herd_context_params *p,
                                     struct herd_context **out, struct herd_error *err);
void herd_context_destroy(struct herd_context *c);

struct herd_batch {
    uint32_t n_tokens;
    const int32_t *tokens;   /* token ids */
    const uint32_t *pos;     /* position of each token in its sequence */
    const int32_t *seq;      /* KV cache sequence of each token */
    const bool *want_logits; /* NULL: only the last token of the batch */
};

/* Evaluates the batch. Per sequence, its tokens must have consecutive
 * positions in batch order starting at or below the sequence's current
 * length (a position below it overwrites from there). Token ids must be in
 * the vocabulary. On HERD_E_AGAIN (KV cache full) nothing was computed and
 * the cache is as before; other errors (bad ids, positions, too many tokens)
 * are HERD_E_INVALID. On success logits for the k-th token that wanted them
 * are at herd_context_logits(c, k). The hot function of the engine. */
enum herd_status herd_decode(struct herd_context *c, const struct herd_batch *b, struct herd_error *err);

/* Logits row i (< c->n_outputs) of the last herd_decode, n_vocab floats. */
const float *herd_context_logits(const struct herd_context *c, uint32_t i);

#endif
