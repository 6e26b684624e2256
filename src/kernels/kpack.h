/* Repacked layouts and tiled matmul for the quantized weight types beyond
 * Q8_0 and Q4_0 (kernels.h has those two): the K-quants Q2_K..Q6_K with
 * Q8_K activations, and Q4_1, Q5_0, Q5_1, IQ4_NL with Q8A activations.
 * A packed matrix is multiplied by gemm_kpack for every token count, so a
 * token's result is the same whatever the batch, tile, chunk or thread
 * count (the accumulation order of an output is fixed: rows' floats in
 * block order).
 *
 * Layout. Rows in groups of HERD_PACK_ROWS (16); per group one chunk per
 * block of columns (256 for the K types, 32 for the others), chunks of a
 * group consecutive. Weights are unsigned integers u stored as 64-byte
 * "lane vectors" V: byte 4r+i of V is row r, column c0+i, the operand
 * layout of vpdpbusd (16 lanes, each the sum of 4 byte products of one
 * row). The vector W_k covers columns 4k..4k+3 of its sub-block (32 or 16
 * columns). Two encodings of W:
 *   nibbles 32 columns in 4 raw vectors R_j (j < 4): W_j = R_j & 15,
 *           W_{j+4} = R_j >> 4 (Q4_0's arrangement)
 *   crumbs  16 columns in 1 raw vector R: W_k = (R >> 2k) & 3
 * and a bit plane adds 16 (or 4) where mask bit 4r+i is set, one 8-byte
 * mask per W_k (the k-mask of vpaddb). Weights come in steps of 32 columns
 * (a sub-block of Q4_K / Q5_K, two of the others), each step's plane right
 * after its weights: a tile reads its chunk front to back (with the planes
 * at the chunk's end, Q5_K decode ran at 41 instead of 64 tokens/s).
 *
 * K chunks (per group and 256 columns; fp16 d and dmin per row; per
 * sub-block s its integer scale sc and min mn, one byte per row):
 *   Q4_K 2368 B: d[16] dmin[16] sc[8][16] mn[8][16] | 8 steps of nibbles
 *        (256 B each)
 *   Q5_K 2880 B: as Q4_K, each step 256 B of nibbles + the fifth bit's
 *        plane (64 B)
 *   Q6_K 3392 B: d[16] sc[8][16][2] pad[32] | 8 steps of 256 B of
 *        nibbles (bits 0-3; W_0..3 one sub-block, W_4..7 the next) and
 *        2 x 64 B of crumbs (bits 4-5, crumb m of vector h for W_{4h+m}):
 *        u = q + 32 (0..63). As bytes (4416 B) it was no faster: pp512
 *        and tg the same within noise, 30 % more memory
 *   Q3_K 1856 B: d[16] sc[8][16][2] pad[32] | 8 steps of 2 x 64 B of
 *        crumbs + the third bit's plane (+4: u = q + 4, 0..7; 64 B)
 *   Q2_K 1600 B: d[16] dmin[16] sc[8][16][2] mn[8][16][2] | 8 steps of
 *        2 x 64 B of crumbs
 * Types with 16-column sub-blocks keep their scales (and mins) in pairs,
 * byte 32k + 2r + e = sub-block 2k + e of row r: one sign/zero extension to
 * 16 bits gives, in lane r, the two scales that vpdpwssd multiplies with a
 * broadcast pair of Q8_K bsums; Q6_K's and Q3_K's signed scales are stored
 * signed (Q3_K's less its bias of 32). Each super-block's integer sum per
 * row, exact as in kquants_ref.c:
 *   isum = sum_s sc_s x sum(u x) - off x sum_s sc_s x bsum_s   (off 32, 4, 0)
 *   msum = sum_s mn_s x bsum_s
 *   acc += (d x dx) x (float)isum - (dmin x dx) x (float)msum
 * which is herd_dot_*_q8k_ref's arithmetic in its order, so a packed K
 * matrix gives the row-by-row reference's floats exactly.
 *
 * Q8A chunks (per group and 32 columns; fp16 d, and m for the types with
 * an offset):
 *   Q5_0   352 B: d[16] | nibbles | fifth-bit plane; value = u - 16
 *   Q5_1   384 B: d[16] m[16] | nibbles | fifth-bit plane
 *   Q4_1   320 B: d[16] m[16] | nibbles
 *   IQ4_NL 288 B: d[16] | nibbles, the grid index (a 16-byte table lookup
 *          gives the value + 128)
 * The same size as the blocks they come from, so decode reads no more.
 * Per block and token, s = sum(u x) - off x sum(x) (the chain starts at
 * the offset term: 16, 0, 0, 128) and
 *   acc = fma((float)s, d x dx, acc); then for Q4_1 / Q5_1
 *   acc = fma(m, dx x (float)sum(x), acc). */
#ifndef HERD_KERNELS_KPACK_H
#define HERD_KERNELS_KPACK_H

#include <stddef.h>
#include <stdint.h>

#include "herd/gguf.h"
#include "kernels/kernels.h"

#define HERD_KPACK_Q4_K_CHUNK   2368
#define HERD_KPACK_Q5_K_CHUNK   2880
#define HERD_KPACK_Q6_K_CHUNK   3392
#define HERD_KPACK_Q3_K_CHUNK   1856
#define HERD_KPACK_Q2_K_CHUNK   1600
#define HERD_KPACK_Q5_0_CHUNK   352
#define HERD_KPACK_Q5_1_CHUNK   384
#define HERD_KPACK_Q4_1_CHUNK   320
#define HERD_KPACK_IQ4_NL_CHUNK 288

/* Bytes of one chunk of type's packed layout; 0 when this module does not
 * pack type. */
size_t herd_kpack_chunk_bytes(enum herd_ggml_type type);

/* Columns per chunk: 256 for the K types, 32 for the others (0 when not
 * packed here). */
size_t herd_kpack_block_cols(enum herd_ggml_type type);

/* Bytes of the packed copy of a rows x cols matrix of type; 0 when it
 * cannot be packed (type not packed here, rows not a multiple of
 * HERD_PACK_ROWS, or cols not a multiple of the block). */
size_t herd_kpack_bytes(enum herd_ggml_type type, uint64_t rows, uint64_t cols);

/* Writes the packed copy (herd_kpack_bytes(...) bytes) of the matrix at
 * data (rows of row_bytes bytes, as in the file) to dst. The caller owns
 * both; dst is written only. */
void herd_kpack_pack(enum herd_ggml_type type, const void *data, size_t row_bytes, uint64_t rows, uint64_t cols,
                     uint8_t *dst);

/* The scalar twin of gemm_kpack (kernels.h): one group of 16 rows, n_blocks
 * chunks at w, times n_tok activation rows starting at x (struct
 * herd_block_q8_k for the K types, struct herd_block_q8a for the others, as
 * herd_act_type_of says), x_stride blocks apart; writes y[t * y_stride + r]
 * for t < n_tok, r < 16. Any thread. */
void herd_kpack_gemm_ref(enum herd_ggml_type type, const uint8_t *w, size_t n_blocks, const void *x, size_t x_stride,
                         size_t n_tok, float *y, size_t y_stride);

/* The AVX-512 VNNI twin (kpack_avx512.c); call only where the processor
 * has AVX-512 F/BW/VL/DQ and VNNI. Same contract and same floats as
 * herd_kpack_gemm_ref. */
void herd_kpack_gemm_vnni(enum herd_ggml_type type, const uint8_t *w, size_t n_blocks, const void *x, size_t x_stride,
                          size_t n_tok, float *y, size_t y_stride);

#endif
