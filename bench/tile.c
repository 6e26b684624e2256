/* Packed-tile microbenchmark: the chosen kernels' gemm_packed on one thread,
 * weights and activations in cache (rows x 576 columns, 16-row groups, the
 * activations quantized once), for Q8_0 and Q4_0 and several token counts.
 * Prints a table of GMAC/s and its share of the measured single-thread int8
 * peak, and writes the same as JSON to the path given (if any).
 *   build/bin/herd_bench_tile [out.json] */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/pool.h"
#include "base/timing.h"
#include "kernels/matmul.h"
#include "kernels/roofline.h"

#define COLS 576

/* Best of 7 rounds, seconds for one pass over every group. */
static double time_tile(const struct herd_kernels *k, enum herd_ggml_type type, size_t rows, size_t n_tok) {
    const size_t nb = COLS / 32;
    const size_t row_bytes = type == HERD_GGML_TYPE_Q8_0 ? nb * 34 : nb * 18;
    uint8_t *data = malloc(rows * row_bytes);
    for (size_t i = 0; i < rows * row_bytes; i++) data[i] = (uint8_t)rand();
    for (size_t r = 0; r < rows; r++) /* finite scales: fp16 0x2000 */
        for (size_t b = 0; b < nb; b++)
            data[r * row_bytes + b * (row_bytes / nb)] = 0, data[r * row_bytes + b * (row_bytes / nb) + 1] = 0x20;
    struct herd_matrix m = {type, data, rows, COLS, row_bytes, NULL};
    uint8_t *packed = aligned_alloc(64, (herd_matrix_packed_bytes(&m) + 63) / 64 * 64);
    herd_matrix_pack(&m, packed);
    float *x = malloc(n_tok * COLS * sizeof *x);
    for (size_t i = 0; i < n_tok * COLS; i++) x[i] = (float)(rand() % 1000) / 500.0f - 1.0f;
    struct herd_block_q8a *q = aligned_alloc(64, (n_tok * nb * sizeof *q + 63) / 64 * 64);
    for (size_t t = 0; t < n_tok; t++) k->quantize_row_q8a(x + t * COLS, q + t * nb, COLS);
    float *y = aligned_alloc(64, (n_tok * rows * sizeof *y + 63) / 64 * 64);
    const size_t chunk = type == HERD_GGML_TYPE_Q8_0 ? HERD_PACK_Q8_0_CHUNK : HERD_PACK_Q4_0_CHUNK;
    const int reps = (int)(4000000 / (rows * n_tok)) + 1;
    double best = 1e9;
    for (int round = 0; round < 7; round++) {
        const double t0 = herd_time_now_s();
        for (int i = 0; i < reps; i++)
            for (size_t g = 0; g < rows / HERD_PACK_ROWS; g++)
                k->gemm_packed(type, packed + g * nb * chunk, nb, q, nb, n_tok, y + g * HERD_PACK_ROWS, rows);
        const double dt = (herd_time_now_s() - t0) / reps;
        if (dt < best) best = dt;
    }
    free(data), free(packed), free(x), free(q), free(y);
    return best;
}

int main(int argc, char **argv) {
    const struct herd_kernels *k = herd_kernels_best();
    if (!k->gemm_packed || !k->prefers_packed) {
        printf("kernels %s: no packed tiles on this CPU\n", k->name);
        return 0;
    }
    struct herd_pool *pool = herd_pool_create(1);
    const double peak = herd_roofline_int8_ops(pool, 5) / 2 * 1e-9; /* GMAC/s, one thread */
    herd_pool_destroy(pool);
    FILE *json = argc > 1 ? fopen(argv[1], "w") : NULL;
    if (argc > 1 && !json) {
        perror(argv[1]);
        return 1;
    }
    printf("kernels %s, one thread, int8 peak %.1f GMAC/s\n\n", k->name, peak);
    printf("| type | rows | tokens | GMAC/s | of peak |\n|------|------|--------|--------|---------|\n");
    if (json) fprintf(json, "{\"kernels\":\"%s\",\"peak_gmacs\":%.2f,\"results\":[", k->name, peak);
    const enum herd_ggml_type types[] = {HERD_GGML_TYPE_Q8_0, HERD_GGML_TYPE_Q4_0};
    const size_t rows[] = {128, 1024}, toks[] = {1, 4, 8, 16, 64};
    bool first = true;
    for (size_t ti = 0; ti < 2; ti++)
        for (size_t ri = 0; ri < 2; ri++)
            for (size_t ki = 0; ki < sizeof toks / sizeof toks[0]; ki++) {
                const double s = time_tile(k, types[ti], rows[ri], toks[ki]);
                const double gmacs = (double)rows[ri] * COLS * (double)toks[ki] / s * 1e-9;
                const char *name = types[ti] == HERD_GGML_TYPE_Q8_0 ? "Q8_0" : "Q4_0";
                printf("| %s | %zu | %zu | %.1f | %.1f %% |\n", name, rows[ri], toks[ki], gmacs, 100 * gmacs / peak);
                if (json)
                    fprintf(json, "%s{\"type\":\"%s\",\"rows\":%zu,\"tokens\":%zu,\"gmacs\":%.2f}", first ? "" : ",",
                            name, rows[ri], toks[ki], gmacs);
                first = false;
            }
    if (json) fprintf(json, "]}\n"), fclose(json);
    return 0;
}
