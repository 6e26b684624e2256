/* `herd prune`: a smaller model made by removing whole transformer blocks
 * (layers) from a GGUF file, chosen by their Block Influence over a
 * calibration text (ShortGPT, Men et al. 2024) or named by the user.
 *
 * Block Influence of layer i: BI_i = mean over tokens t of
 * 1 - cos(h_i(t), h_{i+1}(t)), where h_i is the residual stream entering
 * layer i and h_{n_layer} the one leaving the last layer. A block that
 * barely turns the residual stream is the one whose removal changes the
 * next block's input least, so the lowest scores go first. The collector is
 * the forward pass's observe_residual hook (model/forward.h).
 *
 * The rewrite keeps everything of the input but the removed layers:
 *   - tensors "blk.N.*" of removed layers are left out, the others renamed
 *     "blk.K.*" with K the layer's rank among the kept ones; every other
 *     tensor (embedding, output, rope factors) as it is; order, types,
 *     shapes and data bytes unchanged (copied, never requantized);
 *   - "<arch>.block_count" is the kept count (same value type);
 *   - the per-layer metadata llama.cpp may store as arrays of block_count
 *     entries (attention.head_count, attention.head_count_kv,
 *     feed_forward_length, attention.sliding_window_pattern) keep the
 *     kept layers' entries; any other "<arch>." array of block_count
 *     entries is refused, as it cannot be told per-layer or not;
 *   - every other key in order, byte for byte, general.alignment included.
 * The file is written through herd_gguf_writer (a temp file fsynced and
 * renamed into place), so a failure leaves nothing at the output path.
 *
 * Architectures: llama (and Mixtral), qwen2, qwen3, phi3, qwen2moe,
 * qwen3moe. gemma2 and gemma3 are refused: their sliding / global layers
 * follow the layer index ((i + 1) % 2 or % 6), which neither herd nor
 * llama.cpp reads from the file, so removing a layer would change the kind
 * of every later layer; and llama.cpp derives Gemma's query scale (and
 * refuses Gemma 2 files) from the layer count. See docs/modules/prune.md. */
#ifndef HERD_CONVERT_PRUNE_H
#define HERD_CONVERT_PRUNE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/gguf.h"
#include "herd/status.h"
#include "model/model.h"

/* ------------------------------------------------------------ Block Influence */

/* Collects BI over forward passes; fed by herd_prune_bi_observe. */
struct herd_prune_bi;

/* A collector for a model of n_layer layers of n_embd, fed batches of at
 * most max_tokens tokens. NULL on out of memory. The caller frees it with
 * herd_prune_bi_destroy. */
struct herd_prune_bi *herd_prune_bi_create(uint32_t n_layer, uint32_t n_embd, uint32_t max_tokens);
void herd_prune_bi_destroy(struct herd_prune_bi *bi);

/* The herd_context_params.observe_residual callback (ctx: the collector).
 * Expects layers 0 .. n_layer of one batch of at most max_tokens rows in
 * order, as herd_decode calls it (HERD_ASSERT: anything else is a bug). A token whose two rows are both zero counts as unturned (BI 0), one
 * with a single zero row as orthogonal (BI 1). */
void herd_prune_bi_observe(void *ctx, uint32_t layer, const float *x, size_t x_stride, size_t n_tokens);

/* Each layer's mean BI so far into scores[n_layer]; returns the tokens
 * counted per layer (0: nothing was collected, scores are 0). */
uint64_t herd_prune_bi_scores(const struct herd_prune_bi *bi, double *scores);

/* Layers by ascending score into order[n_layer] (ties: the lower index
 * first), so order[0 .. n - 1] are the n layers to drop. */
void herd_prune_rank(const double *scores, uint32_t n_layer, uint32_t *order);

/* ------------------------------------------------------------ the rewrite */

struct herd_prune_model_info {
    char arch[32];
    uint32_t n_layer;
    uint32_t n_embd;
};

/* Reads what pruning needs from an open GGUF: an architecture herd runs
 * (HERD_E_UNSUPPORTED otherwise), block_count, embedding_length. */
enum herd_status herd_prune_model_info_read(const struct herd_gguf *g, struct herd_prune_model_info *info,
                                            struct herd_error *err);

/* herd_prune_model_info_read, and checks that the architecture's layers can
 * be removed (HERD_E_UNSUPPORTED naming it and why: gemma2, gemma3). */
enum herd_status herd_prune_model_check(const struct herd_gguf *g, struct herd_prune_model_info *info,
                                        struct herd_error *err);

struct herd_prune_params {
    const char *in_path;
    const char *out_path;
    const bool *drop; /* [n_layer]: true for the layers to remove */
    uint32_t n_layer; /* must be the file's block_count */
};

struct herd_prune_stats {
    uint32_t n_layer_in, n_layer_out;
    size_t n_tensors_in, n_tensors_out;
    uint64_t bytes_in, bytes_out;           /* tensor data */
    uint64_t file_bytes_in, file_bytes_out; /* whole files */
};

/* Writes p->in_path without the layers p->drop marks to p->out_path (see
 * the top of this file). Everything that could fail on the input (the
 * architecture, the layer count, at least one layer kept and one removed,
 * tensor names, per-layer arrays) is checked before the output is created;
 * a failure leaves no file at p->out_path. err names the file and the
 * tensor or key. stats may be NULL. */
enum herd_status herd_prune_layers(const struct herd_prune_params *p, struct herd_prune_stats *stats,
                                   struct herd_error *err);

/* ------------------------------------------------------------ FFN channels */

/* --ffn-keep: each layer keeps the fraction F_l of its FFN channels (rows
 * of ffn_gate and ffn_up, columns of ffn_down) that score highest:
 *   score_j = mean |a_j| x (||gate_j|| + ||up_j|| + ||down_:,j||)
 * with a_j the activation entering ffn_down's column j (silu(gate) x up,
 * over the calibration text) and the norms those of the channel's weights
 * (as stored, dequantized): a channel matters by what flows through it and
 * how strongly its weights read and write the residual stream (Wanda's
 * |W| x ||X|| on the three matrices of a channel). The kept count is
 * round(F_l x n_ff / 256) x 256, at least 256 and at most n_ff (a layer of
 * 256 channels or fewer is left whole), so K-quant rows still fit; the kept
 * channels stay in their order.
 *
 * The file: ffn_gate's and ffn_up's kept rows are whole rows, copied byte
 * for byte in any type (phi3's fused ffn_up keeps row j of both halves).
 * ffn_down's kept columns are scattered through each row's blocks, so its
 * rows are decoded, gathered and encoded again in their type: exact for
 * F32 / F16 / BF16, one more rounding for block types (quantized with the
 * kept columns' mean squared activation as importance, as an imatrix
 * would). feed_forward_length becomes the kept count (one number when all
 * layers agree, which llama.cpp reads for every architecture), or an array
 * of one per layer (herd reads it; llama.cpp's Feb 2025 loader builds
 * llama / qwen / gemma tensors from layer 0's width, so such a file does
 * not load there). Mixture-of-experts models are refused. */

/* Collects mean |a_j| and mean a_j^2 of the activations entering one
 * matrix of every layer (observe_matmul): role HERD_ROLE_FFN_DOWN for
 * --ffn-keep, HERD_ROLE_ATTN_OUTPUT for --heads-keep. */
struct herd_prune_acts;

/* n_ff[l]: the matrix's input width in layer l. NULL on out of memory. */
struct herd_prune_acts *herd_prune_acts_create(enum herd_matrix_role role, const uint32_t *n_ff, uint32_t n_layer);
void herd_prune_acts_destroy(struct herd_prune_acts *f);

/* The herd_context_params.observe_matmul callback (ctx: the collector);
 * other roles are ignored. */
void herd_prune_acts_observe(void *ctx, uint32_t layer, enum herd_matrix_role role, const float *x, size_t x_stride,
                             size_t n_tokens);

/* Checks that g's FFNs can be pruned (dense, gate/up/down present):
 * HERD_E_UNSUPPORTED naming the reason. Fills n_ff[info->n_layer]. */
enum herd_status herd_prune_ffn_check(const struct herd_gguf *g, const struct herd_prune_model_info *info,
                                      uint32_t *n_ff, struct herd_error *err);

/* The kept count for a layer of n_ff channels and fraction keep (see above). */
uint32_t herd_prune_ffn_kept(uint32_t n_ff, double keep);

struct herd_prune_ffn_params {
    const char *in_path;
    const char *out_path;
    const double *keep;                 /* [n_layer]: the fraction each layer keeps, in (0, 1] */
    uint32_t n_layer;                   /* must be the file's block_count */
    const struct herd_prune_acts *acts; /* the calibration's activations */
    int n_threads;                      /* <= 0: one per CPU */
};

/* Writes p->in_path with each layer's FFN cut to its kept channels. n_ff_out
 * (may be NULL) receives each layer's kept count. Checked before the output
 * is created; nothing is left at p->out_path on failure. */
enum herd_status herd_prune_ffn_write(const struct herd_prune_ffn_params *p, uint32_t *n_ff_out,
                                      struct herd_prune_stats *stats, struct herd_error *err);

/* ------------------------------------------------------------ attention heads */

/* --heads-keep: each layer keeps K_l of its n_head_kv KV heads (the same
 * fraction for all, or one per layer),
 * each with its G = n_head / n_head_kv query heads (a whole grouped-query
 * group, so the layer stays a valid GQA layer), those scoring highest on
 *   score_g = sum over the group's attn_output input columns j of
 *             mean |a_j| x ||attn_output_:,j||
 * with a_j the attention output entering attn_output over the calibration
 * text: what the group writes into the residual stream. K_l is
 * round(F_l x n_head_kv / m) x m, at least m, with m the fewest groups whose
 * query columns fill whole blocks of attn_output's type (a K-quant's 256
 * values at head size 64 and one query head per group: 4).
 *
 * The file: attn_q / attn_k / attn_v (and phi3's attn_qkv, qwen2's biases)
 * keep the kept heads' rows, byte for byte; attn_output's kept columns are
 * re-encoded in its type, as ffn_down's are for --ffn-keep. head_count and
 * head_count_kv become K x G and K: one number each when every layer kept
 * the same K (llama.cpp reads the file), else i32 arrays of one per layer
 * (herd reads them: model_desc's n_head_layer / n_head_kv_layer; llama.cpp
 * (Feb 2025) builds llama / qwen / gemma / phi3 attention from layer 0's
 * counts and refuses such a file); key_length, value_length and
 * rope.dimension_count are written where the file left them implied by
 * n_embd / head_count. Inputs with per-layer head counts are refused, as are
 * Gemma's 27B depths (46 / 62 layers: llama.cpp scales their queries by
 * n_embd / head_count). */
struct herd_prune_heads_shape {
    uint32_t n_head, n_head_kv, head_dim;
    uint32_t group_step; /* m above */
    bool has_key_length, has_rope_dims;
};

/* Reads and checks g's attention for --heads-keep (HERD_E_UNSUPPORTED with
 * the reason). */
enum herd_status herd_prune_heads_check(const struct herd_gguf *g, const struct herd_prune_model_info *info,
                                        struct herd_prune_heads_shape *hs, struct herd_error *err);

/* The KV heads each layer keeps for fraction keep (see above). */
uint32_t herd_prune_heads_kept(const struct herd_prune_heads_shape *hs, double keep);

struct herd_prune_heads_params {
    const char *in_path;
    const char *out_path;
    const double *keep;                 /* [n_layer]: each layer's fraction, in (0, 1] */
    uint32_t n_layer;                   /* must be the file's block_count */
    const struct herd_prune_acts *acts; /* HERD_ROLE_ATTN_OUTPUT activations */
    int n_threads;                      /* <= 0: one per CPU */
};

/* Writes p->in_path with every layer's attention cut to its kept KV groups;
 * n_head_kv_out[n_layer] (may be NULL) receives each layer's K. Checked before the output is
 * created; nothing is left at p->out_path on failure. */
enum herd_status herd_prune_heads_write(const struct herd_prune_heads_params *p, uint32_t *n_head_kv_out,
                                        struct herd_prune_stats *stats, struct herd_error *err);

#endif
