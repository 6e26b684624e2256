/* Packed-tile microbenchmark for kpack.h's types (and Q4_0 / Q8_0 through
 * gemm_packed, for comparison): the best family's tiles on one thread,
 * weights and activations in cache (64 rows x COLS columns), for several
 * token counts. Prints GMAC/s and the share of the measured single-thread
 * int8 peak.
 *   build/bin/herd_bench_kpack [type ...]   (default: all) */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/pool.h"
#include "base/timing.h"
#include "kernels/kpack.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "kernels/roofline.h"

#define COLS 2048
#define ROWS 64

/* Random blocks with finite fp16 scales (every other bit pattern is a
 * valid block): d, dmin / m set to 2^-11 wherever a block keeps them. */
static uint8_t *random_matrix(enum herd_ggml_type t, size_t *row_bytes) {
    const struct herd_ggml_type_info *ti = herd_ggml_type_info(t);
    const size_t nb = COLS / ti->block_elems, bb = ti->block_bytes;
    uint8_t *w = malloc(ROWS * nb * bb);
    for (size_t i = 0; i < ROWS * nb * bb; i++) w[i] = (uint8_t)rand();
    int d = 0, d2 = -1;
    switch (t) {
    case HERD_GGML_TYPE_Q4_K:
    case HERD_GGML_TYPE_Q5_K:
    case HERD_GGML_TYPE_Q5_1:
    case HERD_GGML_TYPE_Q4_1: d2 = 2; break;
    case HERD_GGML_TYPE_Q6_K: d = 208; break;
    case HERD_GGML_TYPE_Q3_K: d = 108; break;
    case HERD_GGML_TYPE_Q2_K: d = 80, d2 = 82; break;
    default: break;
    }
    for (size_t b = 0; b < ROWS * nb; b++) {
        w[b * bb + d] = 0, w[b * bb + d + 1] = 0x10;
        if (d2 >= 0) w[b * bb + d2] = 0, w[b * bb + d2 + 1] = 0x10;
    }
    *row_bytes = nb * bb;
    return w;
}

/* Best of 7 rounds, seconds for one pass over every group. */
static double time_tiles(const struct herd_kernels *k, enum herd_ggml_type t, size_t n_tok) {
    size_t row_bytes;
    uint8_t *data = random_matrix(t, &row_bytes);
    struct herd_matrix m = {t, data, ROWS, COLS, row_bytes, NULL};
    uint8_t *packed = aligned_alloc(64, (herd_matrix_packed_bytes(&m) + 63) / 64 * 64);
    herd_matrix_pack(&m, packed);
    float *x = malloc(n_tok * COLS * sizeof *x);
    for (size_t i = 0; i < n_tok * COLS; i++) x[i] = (float)(rand() % 1000) / 500.0f - 1.0f;
    const bool k_act = herd_act_type_of(t) == HERD_ACT_Q8K;
    const size_t bc = k_act ? HERD_QK_K : HERD_QK8A, nb = COLS / bc;
    const size_t xb = k_act ? sizeof(struct herd_block_q8_k) : sizeof(struct herd_block_q8a);
    uint8_t *q = aligned_alloc(64, (n_tok * nb * xb + 63) / 64 * 64);
    for (size_t i = 0; i < n_tok; i++) {
        if (k_act)
            k->quantize_row_q8k(x + i * COLS, (struct herd_block_q8_k *)q + i * nb, COLS);
        else
            k->quantize_row_q8a(x + i * COLS, (struct herd_block_q8a *)q + i * nb, COLS);
    }
    float *y = aligned_alloc(64, (n_tok * ROWS * sizeof *y + 63) / 64 * 64);
    const bool legacy = t == HERD_GGML_TYPE_Q4_0 || t == HERD_GGML_TYPE_Q8_0;
    const size_t chunk =
        legacy ? (t == HERD_GGML_TYPE_Q8_0 ? HERD_PACK_Q8_0_CHUNK : HERD_PACK_Q4_0_CHUNK) : herd_kpack_chunk_bytes(t);
    const int reps = (int)(20000000 / (ROWS * COLS / 64 * n_tok)) + 1;
    double best = 1e9;
    for (int round = 0; round < 7; round++) {
        const double t0 = herd_time_now_s();
        for (int i = 0; i < reps; i++)
            for (size_t g = 0; g < ROWS / HERD_PACK_ROWS; g++) {
                if (legacy)
                    k->gemm_packed(t, packed + g * nb * chunk, nb, (const struct herd_block_q8a *)q, nb, n_tok,
                                   y + g * HERD_PACK_ROWS, ROWS);
                else
                    k->gemm_kpack(t, packed + g * nb * chunk, nb, q, nb, n_tok, y + g * HERD_PACK_ROWS, ROWS);
            }
        const double dt = (herd_time_now_s() - t0) / reps;
        if (dt < best) best = dt;
    }
    free(data), free(packed), free(x), free(q), free(y);
    return best;
}

/* Decode out of cache: one token times a BIG_ROWS x COLS matrix (well past
 * the L3), packed tiles against the row-by-row dot products, one thread;
 * GB/s of the file's weight bytes (best of 5). */
#define BIG_ROWS 16384

static void decode_row(const struct herd_kernels *k, enum herd_ggml_type t) {
    const struct herd_ggml_type_info *ti = herd_ggml_type_info(t);
    const size_t nb = COLS / ti->block_elems, row_bytes = nb * ti->block_bytes;
    uint8_t *data = malloc(BIG_ROWS * row_bytes);
    for (size_t i = 0; i < BIG_ROWS * row_bytes; i++) data[i] = (uint8_t)rand();
    /* small finite scales: patch every block's fp16 fields as random_matrix does */
    size_t rb;
    uint8_t *one = random_matrix(t, &rb);
    for (size_t r = 0; r < BIG_ROWS; r++) memcpy(data + r * row_bytes, one + (r % ROWS) * rb, rb);
    free(one);
    struct herd_matrix m = {t, data, BIG_ROWS, COLS, row_bytes, NULL};
    const size_t pbytes = herd_matrix_packed_bytes(&m);
    uint8_t *packed = aligned_alloc(64, (pbytes + 63) / 64 * 64);
    herd_matrix_pack(&m, packed);
    float *x = malloc(COLS * sizeof *x), *y = malloc(BIG_ROWS * sizeof *y);
    for (size_t i = 0; i < COLS; i++) x[i] = (float)(rand() % 1000) / 500.0f - 1.0f;
    const bool k_act = herd_act_type_of(t) == HERD_ACT_Q8K;
    uint8_t q[COLS / 32 * sizeof(struct herd_block_q8a) + COLS / 256 * sizeof(struct herd_block_q8_k)];
    if (k_act)
        k->quantize_row_q8k(x, (struct herd_block_q8_k *)q, COLS);
    else
        k->quantize_row_q8a(x, (struct herd_block_q8a *)q, COLS);
    const bool legacy = t == HERD_GGML_TYPE_Q4_0 || t == HERD_GGML_TYPE_Q8_0;
    const size_t chunk =
        legacy ? (t == HERD_GGML_TYPE_Q8_0 ? HERD_PACK_Q8_0_CHUNK : HERD_PACK_Q4_0_CHUNK) : herd_kpack_chunk_bytes(t);
    const size_t nbp = COLS / (k_act ? HERD_QK_K : HERD_QK8A);
    double best_p = 1e9, best_r = 1e9;
    for (int round = 0; round < 5; round++) {
        double t0 = herd_time_now_s();
        for (size_t g = 0; g < BIG_ROWS / HERD_PACK_ROWS; g++) {
            if (legacy)
                k->gemm_packed(t, packed + g * nbp * chunk, nbp, (const struct herd_block_q8a *)q, nbp, 1,
                               y + g * HERD_PACK_ROWS, BIG_ROWS);
            else
                k->gemm_kpack(t, packed + g * nbp * chunk, nbp, q, nbp, 1, y + g * HERD_PACK_ROWS, BIG_ROWS);
        }
        double dt = herd_time_now_s() - t0;
        if (dt < best_p) best_p = dt;
        t0 = herd_time_now_s();
        for (size_t r = 0; r < BIG_ROWS; r++)
            y[r] = k_act ? k->dot_q8k[t](data + r * row_bytes, (const struct herd_block_q8_k *)q, COLS)
                         : k->dot_q8a[t](data + r * row_bytes, (const struct herd_block_q8a *)q, COLS);
        dt = herd_time_now_s() - t0;
        if (dt < best_r) best_r = dt;
    }
    printf("%-8s packed %5.1f GB/s (%4.0f MB)   row by row %5.1f GB/s (%4.0f MB)\n", ti->name,
           (double)BIG_ROWS * row_bytes / best_p * 1e-9, (double)pbytes * 1e-6,
           (double)BIG_ROWS * row_bytes / best_r * 1e-9, (double)BIG_ROWS * row_bytes * 1e-6);
    free(data), free(packed), free(x), free(y);
}

int main(int argc, char **argv) {
    const struct herd_kernels *k = herd_kernels_best();
    if (!k->gemm_kpack || !k->prefers_packed) {
        printf("kernels %s: no packed tiles for these types on this CPU\n", k->name);
        return 0;
    }
    static const enum herd_ggml_type all[] = {
        HERD_GGML_TYPE_Q4_0, HERD_GGML_TYPE_Q8_0, HERD_GGML_TYPE_Q4_K,   HERD_GGML_TYPE_Q5_K,
        HERD_GGML_TYPE_Q6_K, HERD_GGML_TYPE_Q3_K, HERD_GGML_TYPE_Q2_K,   HERD_GGML_TYPE_Q5_0,
        HERD_GGML_TYPE_Q5_1, HERD_GGML_TYPE_Q4_1, HERD_GGML_TYPE_IQ4_NL,
    };
    enum herd_ggml_type types[16];
    size_t n_types = 0;
    for (int i = 1; i < argc && n_types < 16; i++) {
        if (!herd_ggml_type_from_name(argv[i], &types[n_types])) {
            fprintf(stderr, "unknown type %s\n", argv[i]);
            return 2;
        }
        n_types++;
    }
    if (!n_types) memcpy(types, all, sizeof all), n_types = sizeof all / sizeof all[0];
    struct herd_pool *pool = herd_pool_create(1);
    const double peak = herd_roofline_int8_ops(pool, 5) / 2 * 1e-9; /* GMAC/s, one thread */
    herd_pool_destroy(pool);
    static const size_t toks[] = {1, 4, 8, 16, 64};
    printf("kernels %s, %d x %d in cache, one thread; int8 peak %.0f GMAC/s\n", k->name, ROWS, COLS, peak);
    printf("%-8s", "type");
    for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++) printf(" %9zu tok", toks[i]);
    printf("   (GMAC/s, %% of peak)\n");
    for (size_t ti = 0; ti < n_types; ti++) {
        printf("%-8s", herd_ggml_type_info(types[ti])->name);
        for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++) {
            const double g = (double)ROWS * COLS * (double)toks[i] / time_tiles(k, types[ti], toks[i]) * 1e-9;
            printf(" %6.0f %3.0f%%", g, 100.0 * g / peak);
        }
        printf("\n");
    }
    printf("decode, one token, %d x %d (out of cache), one thread; GB/s of the file's bytes:\n", BIG_ROWS, COLS);
    for (size_t ti = 0; ti < n_types; ti++) decode_row(k, types[ti]);
    return 0;
}
