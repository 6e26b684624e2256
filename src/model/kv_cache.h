/* Paged KV cache: one pool of fixed-size blocks allocated at start, a block
 * table per sequence, blocks reference-counted so that sequences share a
 * prompt prefix (fork) and are copied only when one of them writes into a
 * shared block. Running out of blocks is HERD_E_AGAIN, which the scheduler
 * acts on (wait, preempt); it never crashes.
 *
 * A block holds block_tokens positions of every layer and KV head; for each
 * (layer, head) the block has one region: K [head_dim][block_tokens]
 * (transposed, so the attention kernel computes the scores of all the
 * block's keys at once with one vector per head dimension), then V
 * [block_tokens][head_dim], in f16 (default), f32 (for exact comparison with
 * the reference) or 8 bits (HERD_KV_Q8: int8 values with one float scale per
 * key for K and per row for V, stored after the K values and after the V
 * rows; about 0.53x the f16 size at head size 64). The pool is laid out
 * [layer][head][block]: one attention task reads one region per block (4 KiB
 * at head size 64 in f16), and a sequence's blocks with neighbouring ids are
 * neighbours in memory, which the hardware prefetcher follows (measured:
 * 16-sequence decode attention 1.4x faster than with a block's layers
 * together). */
#ifndef HERD_MODEL_KV_CACHE_H
#define HERD_MODEL_KV_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/status.h"
#include "kernels/kernels.h"

enum herd_kv_type { HERD_KV_F16 = 0, HERD_KV_F32 = 1, HERD_KV_Q8 = 2 };

struct herd_kv_params {
    uint32_t n_layer;
    uint32_t kv_dim; /* KV heads x head size (the widest layer's when layer_heads is set) */
    /* [n_layer]: each layer's KV heads (herd prune --heads-keep files may
     * differ by layer), or NULL: kv_dim / head_dim in every layer. Read by
     * herd_kv_block_bytes and copied by herd_kv_create. */
    const uint32_t *layer_heads;
    uint32_t head_dim;
    uint32_t block_tokens; /* positions per block; 16 by default */
    uint32_t n_blocks;     /* the pool */
    uint32_t max_seqs;     /* sequence slots */
    enum herd_kv_type type;
    const struct herd_kernels *kernels; /* the f16 conversion of stores (NULL: the scalar one) */
};

struct herd_kv;

/* Bytes of one block for these parameters. */
size_t herd_kv_block_bytes(const struct herd_kv_params *p);

/* Allocates the whole pool now (HERD_E_NOMEM on failure, with the size). */
enum herd_status herd_kv_create(const struct herd_kv_params *p, struct herd_kv **out, struct herd_error *err);
void herd_kv_destroy(struct herd_kv *kv);
const struct herd_kv_params *herd_kv_params(const struct herd_kv *kv);

uint32_t herd_kv_free_blocks(const struct herd_kv *kv);

/* A new empty sequence; HERD_E_AGAIN when all max_seqs slots are taken. */
enum herd_status herd_kv_seq_new(struct herd_kv *kv, int32_t *seq, struct herd_error *err);
/* A new sequence sharing src's first n_tokens positions (n_tokens <= src's length). */
enum herd_status herd_kv_seq_fork(struct herd_kv *kv, int32_t src, uint32_t n_tokens, int32_t *seq,
                                  struct herd_error *err);
/* An empty sequence (fresh from herd_kv_seq_new) takes these n blocks as
 * its first n x block_tokens positions, adding a reference to each: how a
 * request starts from prefix-cached blocks. */
enum herd_status herd_kv_seq_adopt(struct herd_kv *kv, int32_t seq, const int32_t *blocks, uint32_t n,
                                   struct herd_error *err);
/* References held outside sequences (the prefix cache): a referenced
 * block stays allocated; unref returns it to the pool when it was the
 * last holder. refs tells how many hold it. */
void herd_kv_block_ref(struct herd_kv *kv, int32_t block);
void herd_kv_block_unref(struct herd_kv *kv, int32_t block);
uint32_t herd_kv_block_refs(const struct herd_kv *kv, int32_t block);
/* Releases the sequence and its references to blocks. */
void herd_kv_seq_free(struct herd_kv *kv, int32_t seq);
/* Forgets positions from n_tokens on (blocks past it are released). */
void herd_kv_seq_truncate(struct herd_kv *kv, int32_t seq, uint32_t n_tokens);
uint32_t herd_kv_seq_len(const struct herd_kv *kv, int32_t seq);
/* Releases the sequence's blocks whose every position is below pos (for a
 * model whose every layer attends within a sliding window: no layer sees
 * them again). They become holes (-1) in the block table; the length stays,
 * and a later write or fork must not reach back into them (prepare
 * refuses a write there). */
void herd_kv_seq_release_before(struct herd_kv *kv, int32_t seq, uint32_t pos);
/* The first position whose block is still held (0 unless released). */
uint32_t herd_kv_seq_first_kept(const struct herd_kv *kv, int32_t seq);
bool herd_kv_seq_valid(const struct herd_kv *kv, int32_t seq);

/* Makes positions [pos, pos + n) writable: appends blocks as needed and
 * copies shared blocks in that range. All or nothing: HERD_E_AGAIN (state
 * unchanged) when the pool cannot supply the blocks. pos must be <= the
 * sequence length. Afterwards the sequence length is max(len, pos + n). */
enum herd_status herd_kv_seq_prepare(struct herd_kv *kv, int32_t seq, uint32_t pos, uint32_t n, struct herd_error *err);

/* Writes the K and V vectors (kv_dim floats each) of (seq, layer, pos),
 * converted to the cache type; pos < the sequence length. */
void herd_kv_store(struct herd_kv *kv, int32_t seq, uint32_t layer, uint32_t pos, const float *k, const float *v);
/* The same for KV head h of the layer only (head_dim floats each): the
 * attention task of that head stores its own token's K and V. */
void herd_kv_store_head(struct herd_kv *kv, int32_t seq, uint32_t layer, uint32_t pos, uint32_t h, const float *k,
                        const float *v);

/* The sequence's block table (n = number of blocks in use), for attention
 * to walk block by block; -1 for a block released behind a sliding window. */
const int32_t *herd_kv_seq_blocks(const struct herd_kv *kv, int32_t seq, uint32_t *n);
/* Asks for one KV head's region of a block's layer (its K and V) to be
 * brought into L2 (locality 1: into L1 a whole block ahead evicts what the
 * attention kernel is using), all at once: for the first blocks of a walk.
 * A sequence's blocks lie far apart, so the hardware prefetcher starts cold
 * on each of them. */
void herd_kv_prefetch_head(const struct herd_kv *kv, int32_t block, uint32_t layer, uint32_t head);
/* Names that region as view's next, for the attention kernel to prefetch
 * while it computes the view's block, spread through its loop. */
void herd_kv_view_next(const struct herd_kv *kv, int32_t block, uint32_t layer, uint32_t head,
                       struct herd_attn_kv *view);
/* Where one KV head of a block's layer lies, for the attention kernel (no
 * next block). */
void herd_kv_head_view(const struct herd_kv *kv, int32_t block, uint32_t layer, uint32_t head,
                       struct herd_attn_kv *view);

#endif
