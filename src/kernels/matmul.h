/* Matrix multiplication of a weight matrix (any computed type, used in place
 * from the mapped file) with a batch of activation rows: the one kernel that
 * does nearly all of a forward pass's work.
 *
 *   y[t][r] = sum_c W[r][c] * x[t][c]     W: rows x cols (GGUF ne = [cols, rows])
 *
 * Rows are split across the pool's threads; each thread walks its rows and,
 * for each weight row it loads, computes the dot product with every token of
 * the batch, so a weight row read from memory once serves the whole batch.
 * Each output element is one dot product in a fixed order, whatever the
 * batch size or thread count: results do not depend on what else is in the
 * batch. */
#ifndef HERD_KERNELS_MATMUL_H
#define HERD_KERNELS_MATMUL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/pool.h"
#include "herd/gguf.h"
#include "kernels/kernels.h"

struct herd_matrix {
    enum herd_ggml_type type; /* F32, F16, BF16, or a quantized type herd computes */
    const void *data;         /* as in the file */
    uint64_t rows, cols;
    size_t row_bytes;
    const uint8_t *packed; /* the same weights repacked for the tiled kernels, or NULL */
};

/* Rows [first, first + n) of m as a matrix of their own (the same bytes;
 * no packed copy): one part of a fused weight such as phi3's attn_qkv. */
struct herd_matrix herd_matrix_rows(const struct herd_matrix *m, uint64_t first, uint64_t n);

/* Bytes of the packed copy of m, 0 when m cannot be packed (not a type
 * with a packed layout: Q8_0 / Q4_0 (kernels.h) or kpack.h's; rows not a
 * multiple of HERD_PACK_ROWS, or columns not of the type's block). */
size_t herd_matrix_packed_bytes(const struct herd_matrix *m);

/* Whether family k has a tiled kernel for matrices of type and wants them
 * packed (the loader packs only those: a packed matrix goes through the
 * packed path for every token count). */
bool herd_kernels_packs(const struct herd_kernels *k, enum herd_ggml_type type);

/* Writes the packed copy of m to dst (herd_matrix_packed_bytes(m) bytes,
 * 64-byte aligned) and points m->packed at it. */
void herd_matrix_pack(struct herd_matrix *m, uint8_t *dst);

/* Fills m from a GGUF tensor of 1 or 2 dimensions. */
void herd_matrix_from_tensor(struct herd_matrix *m, const struct herd_gguf_tensor *t);

/* Scratch bytes herd_matmul needs for n_tokens rows of activations with this
 * matrix on n_threads threads (quantized activations, or in precise mode one
 * dequantized weight row per thread). */
size_t herd_matmul_scratch_bytes(const struct herd_matrix *w, size_t n_tokens, int n_threads, bool precise);

/* y (n_tokens x w->rows, row stride y_stride floats) = x (n_tokens x w->cols,
 * row stride x_stride) times W^T. precise: dequantize quantized weights to
 * f32 and keep f32 activations (slow, for checking against the reference);
 * otherwise activations are quantized to 8 bits for quantized weights (Q8A
 * or Q8_K blocks, as herd_act_type_of says). */
void herd_matmul(struct herd_pool *pool, const struct herd_kernels *k, const struct herd_matrix *w, const float *x,
                 size_t x_stride, size_t n_tokens, float *y, size_t y_stride, void *scratch, bool precise);

/* Several matrices with the same column count times the same activations
 * (Q, K and V; gate and up): the activations are quantized once and all
 * the matrices' rows are split over the threads in one pool call, so one
 * barrier serves them all. */
struct herd_matmul_out {
    const struct herd_matrix *w;
    float *y;
    size_t y_stride;
};

void herd_matmul_multi(struct herd_pool *pool, const struct herd_kernels *k, const struct herd_matmul_out *outs,
                       size_t n_outs, const float *x, size_t x_stride, size_t n_tokens, void *scratch, bool precise);

/* Whether herd_matmul quantizes its activations for w (a quantized type,
 * not precise): into Q8A blocks for the 32-value types, Q8_K blocks for the
 * K types (herd_act_type_of). Then the step that produces them may quantize
 * each row itself while it is in cache and call
 * herd_matmul_multi_quantized: one pool call and one pass over the
 * activations fewer. Row t goes to herd_matmul_q8a_rows(scratch) + t x
 * cols / 32 (k->quantize_row_q8a) or herd_matmul_q8k_rows(scratch, cols,
 * n_tokens) + t x cols / 256 (k->quantize_row_q8k); both blocks are
 * independent of each other, so a producer may quantize any run of whole
 * blocks at a time. */
bool herd_matmul_quantizes(const struct herd_matrix *w, bool precise);
struct herd_block_q8a *herd_matmul_q8a_rows(void *scratch);
struct herd_block_q8_k *herd_matmul_q8k_rows(void *scratch, size_t cols, size_t n_tokens);

/* herd_matmul_multi on activations already quantized in scratch (every
 * out's herd_matmul_quantizes true, each family its outs take written for
 * n_tokens rows). */
void herd_matmul_multi_quantized(struct herd_pool *pool, const struct herd_kernels *k,
                                 const struct herd_matmul_out *outs, size_t n_outs, size_t n_tokens, void *scratch);

/* Called by the thread that computed rows [r0, r1) of every output, right
 * after it did (see herd_matmul_multi_rows_quantized). */
typedef void (*herd_matmul_rows_fn)(void *ctx, size_t r0, size_t r1);

/* herd_matmul_multi_quantized for outputs of equal row counts (a gate and
 * its up projection), split into items of rows_per_item rows of every
 * output at once (a multiple of 16), with done called after each: the
 * thread that computed a range of both can combine them while they are in
 * its cache, and no step of its own is needed afterwards. n_tokens at most
 * 64. */
void herd_matmul_multi_rows_quantized(struct herd_pool *pool, const struct herd_kernels *k,
                                      const struct herd_matmul_out *outs, size_t n_outs, size_t n_tokens, void *scratch,
                                      size_t rows_per_item, herd_matmul_rows_fn done, void *done_ctx);

/* Where thread ith of pool starts its own share of
 * herd_matmul_multi_quantized(pool, k, outs, n_outs, n_tokens, ...) in
 * memory: *start, and the bytes of that share in the same output from
 * there (what the thread reads first, in order). 0 and NULL where that
 * output is not packed or the share is empty. The rows form does the same
 * for herd_matmul_multi_rows_quantized's first output. For
 * herd_pool_prefetch_while_waiting. */
size_t herd_matmul_share_start(const struct herd_pool *pool, const struct herd_matmul_out *outs, size_t n_outs,
                               size_t n_tokens, int ith, const void **start);
size_t herd_matmul_rows_share_start(const struct herd_pool *pool, const struct herd_matmul_out *outs, size_t n_tokens,
                                    size_t rows_per_item, int ith, const void **start);

#endif
