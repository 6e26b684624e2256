/* Decode streaming benchmark: where single-sequence decode of a small model
 * loses to the read bandwidth. One token's matmuls of a smollm-135m-shaped
 * model (30 layers of Q/K/V 960 x 576, output 576 x 576, gate/up 3072 x 576
 * and down 576 x 1536 in one weight type, and a 49152 x 576 Q8_0 head), out
 * of cache, on two threads, four ways:
 *   pool    one pool call per matmul, as a plain forward pass makes them
 *   team    the same calls inside one team run (herd_pool_run_team), each a
 *           collective split ending at a barrier, as a team pass makes them
 *   nosync  each thread streams its static half of every matrix through the
 *           same tiles, with no synchronisation until the token's end
 *   read    each thread reads its half of every matrix and computes nothing
 * Each is given as a share of the read probe (herd bench's floor) measured
 * just before and after it; rounds take the four in turn, so the swings of
 * a shared machine fall on all of them. Prints a table of medians and writes
 * the same as JSON to the path given (if any).
 *   build/bin/herd_bench_stream [q5_0|q4_0|q8_0] [out.json] */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/cpu.h"
#include "base/pool.h"
#include "base/timing.h"
#include "kernels/kpack.h"
#include "kernels/matmul.h"
#include "kernels/roofline.h"

#define N_LAYERS   30
#define N_MATRICES (4 * N_LAYERS + 1)
#define ROUNDS     12
/* Tokens per measurement: ~35 ms, long against the probe's noise, short
 * against the machine's swings (seconds). */
#define TOKENS     20

struct matrix {
    struct herd_matrix m;
    float *y;
    void *scratch; /* the token's quantized activations, made once */
};

struct bench {
    const struct herd_kernels *k;
    struct herd_pool *pool;
    struct matrix mats[N_MATRICES];
    size_t bytes; /* packed, one token */
    long sink;
};

/* Random blocks of 32 values with a finite fp16 scale (2^-11) in each
 * block's first two bytes: the layout of Q8_0, Q4_0 and Q5_0 alike. */
static void make_matrix(struct bench *b, struct matrix *out, enum herd_ggml_type type, size_t rows, size_t cols,
                        uint8_t **arena) {
    const size_t nb = cols / 32,
                 block = type == HERD_GGML_TYPE_Q8_0   ? 34
                         : type == HERD_GGML_TYPE_Q4_0 ? 18
                                                       : 22,
                 row_bytes = nb * block;
    uint8_t *data = malloc(rows * row_bytes);
    float *x = malloc(cols * sizeof *x);
    if (!data || !x) abort();
    for (size_t i = 0; i < rows * row_bytes; i++) data[i] = (uint8_t)rand();
    for (size_t i = 0; i < rows * nb; i++) data[i * block] = 0, data[i * block + 1] = 0x10;
    out->m = (struct herd_matrix){type, data, rows, cols, row_bytes, NULL};
    herd_matrix_pack(&out->m, *arena);
    *arena += (herd_matrix_packed_bytes(&out->m) + 4095) & ~(size_t)4095;
    b->bytes += herd_matrix_packed_bytes(&out->m);
    out->y = aligned_alloc(64, (rows * sizeof(float) + 63) & ~(size_t)63);
    out->scratch = aligned_alloc(64, (herd_matmul_scratch_bytes(&out->m, 1, 2, false) + 63) & ~(size_t)63);
    if (!out->y || !out->scratch) abort();
    for (size_t i = 0; i < cols; i++) x[i] = (float)(rand() % 1000) / 500.0f - 1.0f;
    b->k->quantize_row_q8a(x, herd_matmul_q8a_rows(out->scratch), cols);
    free(x);
}

static void token_pool(struct bench *b) {
    for (int i = 0; i < N_MATRICES; i++) {
        const struct herd_matmul_out o = {&b->mats[i].m, b->mats[i].y, b->mats[i].m.rows};
        herd_matmul_multi_quantized(b->pool, b->k, &o, 1, 1, b->mats[i].scratch);
    }
}

/* The forward pass's team way (forward.c's team passes): both threads in
 * one team run for the token, each matmul a collective split that ends at
 * a barrier. */
static void team_part(void *ctx, int ith, int nth) {
    (void)ith, (void)nth;
    token_pool(ctx);
}

/* Packed bytes per 16-row group (matmul.h's layouts: groups consecutive). */
static size_t group_bytes(const struct herd_matrix *w) { return herd_matrix_packed_bytes(w) / (w->rows / 16); }

static void nosync_part(void *ctx, int ith, int nth) {
    struct bench *b = ctx;
    for (int i = 0; i < N_MATRICES; i++) {
        const struct herd_matrix *w = &b->mats[i].m;
        const size_t groups = w->rows / 16, nb = w->cols / 32, gb = group_bytes(w);
        const struct herd_block_q8a *x = herd_matmul_q8a_rows(b->mats[i].scratch);
        for (size_t g = groups * (size_t)ith / (size_t)nth; g < groups * (size_t)(ith + 1) / (size_t)nth; g++) {
            float *y = b->mats[i].y + g * 16;
            if (w->type == HERD_GGML_TYPE_Q8_0 || w->type == HERD_GGML_TYPE_Q4_0)
                b->k->gemm_packed(w->type, w->packed + g * gb, nb, x, nb, 1, y, w->rows);
            else
                b->k->gemm_kpack(w->type, w->packed + g * gb, nb, x, nb, 1, y, w->rows);
        }
    }
}

/* Two independent sums of 64-byte loads: bound by memory, not by an add. */
__attribute__((target("avx512f"))) static long read_sum(const uint8_t *p, size_t n) {
    __m512i a = _mm512_setzero_si512(), c = a;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        a = _mm512_add_epi32(a, _mm512_load_si512((const void *)(p + i)));
        c = _mm512_add_epi32(c, _mm512_load_si512((const void *)(p + i + 64)));
    }
    return _mm512_reduce_add_epi32(_mm512_add_epi32(a, c));
}

static void read_part(void *ctx, int ith, int nth) {
    struct bench *b = ctx;
    long s = 0;
    for (int i = 0; i < N_MATRICES; i++) {
        const struct herd_matrix *w = &b->mats[i].m;
        const size_t groups = w->rows / 16, gb = group_bytes(w);
        const size_t g0 = groups * (size_t)ith / (size_t)nth, g1 = groups * (size_t)(ith + 1) / (size_t)nth;
        s += read_sum(w->packed + g0 * gb, (g1 - g0) * gb);
    }
    if (ith == 0) b->sink += s; /* keeps the loads */
}

enum { MODE_POOL, MODE_TEAM, MODE_NOSYNC, MODE_READ, N_MODES };
static const char *const mode_names[N_MODES] = {"pool", "team", "nosync", "read"};

/* GB/s of one measurement of TOKENS tokens. */
static double measure(struct bench *b, int mode) {
    const double t0 = herd_time_now_s();
    for (int t = 0; t < TOKENS; t++) {
        if (mode == MODE_POOL) token_pool(b);
        if (mode == MODE_TEAM) herd_pool_run_team(b->pool, team_part, b);
        if (mode == MODE_NOSYNC) herd_pool_run(b->pool, nosync_part, b);
        if (mode == MODE_READ) herd_pool_run(b->pool, read_part, b);
    }
    return (double)b->bytes * TOKENS / (herd_time_now_s() - t0) * 1e-9;
}

static int cmp_double(const void *x, const void *y) {
    const double a = *(const double *)x, c = *(const double *)y;
    return a < c ? -1 : a > c;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
    if (!herd_cpu_features()->avx512) {
        printf("this benchmark reads with AVX-512, which this CPU lacks\n");
        return 0;
    }
    enum herd_ggml_type type = HERD_GGML_TYPE_Q5_0;
    const char *type_name = argc > 1 ? argv[1] : "q5_0";
    if (strcmp(type_name, "q4_0") == 0)
        type = HERD_GGML_TYPE_Q4_0;
    else if (strcmp(type_name, "q8_0") == 0)
        type = HERD_GGML_TYPE_Q8_0;
    else if (strcmp(type_name, "q5_0") != 0) {
        fprintf(stderr, "usage: herd_bench_stream [q5_0|q4_0|q8_0] [out.json]\n");
        return 2;
    }
    FILE *json = argc > 2 ? fopen(argv[2], "w") : NULL;
    if (argc > 2 && !json) {
        perror(argv[2]);
        return 1;
    }
    struct bench b = {.k = herd_kernels_best(), .pool = herd_pool_create(2)};
    uint8_t *arena = herd_alloc_large((size_t)160 << 20), *at = arena;
    struct herd_roofline_read *probe = herd_roofline_read_create((size_t)1 << 29);
    if (!b.pool || !arena || !probe || !b.k->gemm_kpack) abort();
    for (int l = 0; l < N_LAYERS; l++) {
        make_matrix(&b, &b.mats[4 * l + 0], type, 960, 576, &at);
        make_matrix(&b, &b.mats[4 * l + 1], type, 576, 576, &at);
        make_matrix(&b, &b.mats[4 * l + 2], type, 3072, 576, &at);
        make_matrix(&b, &b.mats[4 * l + 3], type, 576, 1536, &at);
    }
    make_matrix(&b, &b.mats[N_MATRICES - 1], HERD_GGML_TYPE_Q8_0, 49152, 576, &at);
    double gbps[N_MODES][ROUNDS], share[N_MODES][ROUNDS], floor_gbps[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        double before = herd_roofline_read_measure(probe, b.pool, b.k, 3), best = before;
        for (int m = 0; m < N_MODES; m++) {
            gbps[m][r] = measure(&b, m);
            const double after = herd_roofline_read_measure(probe, b.pool, b.k, 3);
            share[m][r] = gbps[m][r] / (before > after ? before : after);
            best = after > best ? after : best;
            before = after;
        }
        floor_gbps[r] = best;
    }
    printf("kernels %s, %s layers and a Q8_0 head, %.1f MB a token, 2 threads, medians of %d rounds of %d tokens\n\n",
           b.k->name, type_name, (double)b.bytes * 1e-6, ROUNDS, TOKENS);
    printf("| way | GB/s | of the read probe |\n|-----|------|-------------------|\n");
    const double probe_gbps = median(floor_gbps, ROUNDS);
    if (json)
        fprintf(json,
                "{\"kernels\":\"%s\",\"type\":\"%s\",\"bytes_per_token\":%zu,\"rounds\":%d,\"tokens\":%d,"
                "\"probe_gbps\":%.2f,\"ways\":[",
                b.k->name, type_name, b.bytes, ROUNDS, TOKENS, probe_gbps);
    for (int m = 0; m < N_MODES; m++) {
        const double g = median(gbps[m], ROUNDS), s = median(share[m], ROUNDS);
        printf("| %s | %.1f | %.0f %% |\n", mode_names[m], g, 100 * s);
        if (json)
            fprintf(json, "%s{\"way\":\"%s\",\"gbps\":%.2f,\"of_probe\":%.4f}", m ? "," : "", mode_names[m], g, s);
    }
    printf("\nread probe (best of each round; each way is against the higher of the two around it): %.1f GB/s\n",
           probe_gbps);
    if (json) fprintf(json, "]}\n"), fclose(json);
    herd_roofline_read_destroy(probe);
    herd_pool_destroy(b.pool);
    for (int i = 0; i < N_MATRICES; i++) free((void *)b.mats[i].m.data), free(b.mats[i].y), free(b.mats[i].scratch);
    free(arena);
    return 0;
}
