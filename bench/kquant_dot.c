/* Dot-product microbenchmark for every quantized weight type: each family's
 * single-token kernel (the table's dot_q8a / dot_q8k) over a 4096-column
 * weight matrix with one activation row, in cache (32 rows, in L2: what
 * prefill's row-by-row path sees) and out of cache (256 MB of weights, read
 * once per pass: decode) on one thread and on all; and the K types'
 * multi-token kernels (4 tokens per unpacked super-block) in cache, and each
 * table's Q8_K quantization of one row. Prints
 * GMAC/s (and GB/s of weights out of cache) beside the measured read
 * bandwidth, and writes the same as JSON to the path given (- for none);
 * further arguments keep only the types named.
 *   build/bin/herd_bench_kquant [out.json|-] [q4_K ...] */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/cpu.h"
#include "base/pool.h"
#include "base/timing.h"
#include "herd/gguf.h"
#include "kernels/kernels.h"
#include "kernels/kquants.h"
#include "kernels/kquants_simd.h"
#include "kernels/roofline.h"

#define COLS          4096
#define CACHED_ROWS   32
#define UNCACHED_SIZE ((size_t)256 << 20)

typedef float (*dot_q8a_fn)(const void *, const struct herd_block_q8a *, size_t);
typedef float (*dot_q8k_fn)(const void *, const struct herd_block_q8_k *, size_t);

/* A family to measure: a table, or (for the plain AVX-512 kernels, which a
 * processor with VNNI never gets from its table) the functions by name. */
struct family {
    const char *name;
    dot_q8a_fn q8a[HERD_GGML_TYPE__COUNT];
    dot_q8k_fn q8k[HERD_GGML_TYPE__COUNT];
};

static void family_from_table(struct family *f, const struct herd_kernels *k) {
    f->name = k->name;
    memcpy(f->q8a, k->dot_q8a, sizeof f->q8a);
    memcpy(f->q8k, k->dot_q8k, sizeof f->q8k);
}

/* Where a type's fp16 scales live in its block: d, and m / dmin (or -1). */
struct scale_fields {
    enum herd_ggml_type type;
    int d, m;
};

static const struct scale_fields kTypes[] = {
    {HERD_GGML_TYPE_Q8_0, 0, -1},  {HERD_GGML_TYPE_Q4_0, 0, -1},   {HERD_GGML_TYPE_Q4_1, 0, 2},
    {HERD_GGML_TYPE_Q5_0, 0, -1},  {HERD_GGML_TYPE_Q5_1, 0, 2},    {HERD_GGML_TYPE_IQ4_NL, 0, -1},
    {HERD_GGML_TYPE_Q2_K, 80, 82}, {HERD_GGML_TYPE_Q3_K, 108, -1}, {HERD_GGML_TYPE_Q4_K, 0, 2},
    {HERD_GGML_TYPE_Q5_K, 0, 2},   {HERD_GGML_TYPE_Q6_K, 208, -1},
};

/* The benchmark's matrix: random bytes, every scale field a small finite fp16. */
static void set_scales(uint8_t *w, size_t bytes, const struct scale_fields *s) {
    const size_t bb = herd_ggml_type_info(s->type)->block_bytes;
    for (size_t o = 0; o + bb <= bytes; o += bb) {
        w[o + (size_t)s->d] = 0x00, w[o + (size_t)s->d + 1] = 0x20;
        if (s->m >= 0) w[o + (size_t)s->m] = 0x00, w[o + (size_t)s->m + 1] = 0x1c;
    }
}

struct job {
    const struct family *f;
    enum herd_ggml_type type;
    const uint8_t *w;
    size_t rows, row_bytes;
    const struct herd_block_q8a *xa;
    const struct herd_block_q8_k *xk;
    float *y;
};

static void dot_rows(const struct job *j, size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) {
        const uint8_t *row = j->w + r * j->row_bytes;
        j->y[r] = j->xk ? j->f->q8k[j->type](row, j->xk, COLS) : j->f->q8a[j->type](row, j->xa, COLS);
    }
}

static void dot_part(void *ctx, int ith, int nth) {
    const struct job *j = ctx;
    dot_rows(j, j->rows * (size_t)ith / (size_t)nth, j->rows * (size_t)(ith + 1) / (size_t)nth);
}

/* Best of `rounds`, seconds per pass over the job's rows (pool NULL: this thread). */
static double time_pass(struct job *j, struct herd_pool *pool, int reps, int rounds) {
    double best = 1e9;
    for (int round = 0; round < rounds; round++) {
        const double t0 = herd_time_now_s();
        for (int i = 0; i < reps; i++) {
            if (pool)
                herd_pool_run(pool, dot_part, j);
            else
                dot_rows(j, 0, j->rows);
        }
        const double dt = (herd_time_now_s() - t0) / reps;
        if (dt < best) best = dt;
    }
    return best;
}

/* 4 tokens per call of the multi-token kernel, seconds per pass (4 x rows dots). */
static double time_multi(herd_dot_q8k_rows_fn rows_fn, const struct job *j, const struct herd_block_q8_k *x4,
                         float *y4) {
    const int reps = 200;
    double best = 1e9;
    for (int round = 0; round < 5; round++) {
        const double t0 = herd_time_now_s();
        for (int i = 0; i < reps; i++)
            for (size_t r = 0; r < j->rows; r++)
                rows_fn(j->w + r * j->row_bytes, x4, COLS / HERD_QK_K, 4, COLS, y4 + r, j->rows);
        const double dt = (herd_time_now_s() - t0) / reps;
        if (dt < best) best = dt;
    }
    return best;
}

int main(int argc, char **argv) {
    FILE *json = argc > 1 && strcmp(argv[1], "-") != 0 ? fopen(argv[1], "w") : NULL;
    if (argc > 1 && strcmp(argv[1], "-") != 0 && !json) {
        perror(argv[1]);
        return 1;
    }
    struct family fams[4];
    size_t n_fams = 0;
    family_from_table(&fams[n_fams++], herd_kernels_ref());
    if (herd_kernels_avx2()) family_from_table(&fams[n_fams++], herd_kernels_avx2());
    if (herd_kernels_avx512()) {
        if (herd_cpu_features()->avx512_vnni) { /* the plain AVX-512 kernels too, by name */
            struct family *f = &fams[n_fams++];
            memset(f, 0, sizeof *f);
            f->name = "avx512 (no vnni)";
            f->q8a[HERD_GGML_TYPE_Q4_1] = herd_dot_q4_1_q8a_avx512;
            f->q8a[HERD_GGML_TYPE_Q5_0] = herd_dot_q5_0_q8a_avx512;
            f->q8a[HERD_GGML_TYPE_Q5_1] = herd_dot_q5_1_q8a_avx512;
            f->q8a[HERD_GGML_TYPE_IQ4_NL] = herd_dot_iq4_nl_q8a_avx512;
            f->q8k[HERD_GGML_TYPE_Q2_K] = herd_dot_q2_k_q8k_avx512;
            f->q8k[HERD_GGML_TYPE_Q3_K] = herd_dot_q3_k_q8k_avx512;
            f->q8k[HERD_GGML_TYPE_Q4_K] = herd_dot_q4_k_q8k_avx512;
            f->q8k[HERD_GGML_TYPE_Q5_K] = herd_dot_q5_k_q8k_avx512;
            f->q8k[HERD_GGML_TYPE_Q6_K] = herd_dot_q6_k_q8k_avx512;
        }
        family_from_table(&fams[n_fams++], herd_kernels_avx512());
    }
    const int n_threads = herd_cpu_count();
    struct herd_pool *pool = herd_pool_create(n_threads), *one = herd_pool_create(1);
    const double bw1 = herd_roofline_read_gbps(one, herd_kernels_best(), UNCACHED_SIZE, 3);
    const double bwn = herd_roofline_read_gbps(pool, herd_kernels_best(), UNCACHED_SIZE, 3);
    herd_pool_destroy(one);
    printf("read bandwidth: %.1f GB/s on 1 thread, %.1f GB/s on %d\n\n", bw1, bwn, n_threads);
    printf("GMAC/s, %d columns; out of cache also GB/s of weights\n", COLS);
    printf("| type | family | in cache | 4 tokens | out, 1 thread | out, %d threads |\n", n_threads);
    printf("|------|--------|----------|----------|---------------|-----------------|\n");
    if (json)
        fprintf(json, "{\"read_gbps_1\":%.2f,\"read_gbps_all\":%.2f,\"threads\":%d,\"results\":[", bw1, bwn, n_threads);

    uint8_t *big = aligned_alloc(64, UNCACHED_SIZE);
    uint64_t s = 88172645463325252ULL;
    for (size_t i = 0; i < UNCACHED_SIZE / 8; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        memcpy(big + 8 * i, &s, 8);
    }
    float xf[4 * COLS];
    for (size_t i = 0; i < 4 * COLS; i++) xf[i] = (float)((int)(i * 7919 % 2001) - 1000) / 500.0f;
    struct herd_block_q8a xa[COLS / HERD_QK8A];
    struct herd_block_q8_k xk[4 * COLS / HERD_QK_K];
    herd_kernels_ref()->quantize_row_q8a(xf, xa, COLS);
    herd_kernels_ref()->quantize_row_q8k(xf, xk, 4 * COLS);
    float *y = malloc(UNCACHED_SIZE / 32 * sizeof *y), *y4 = malloc(4 * CACHED_ROWS * sizeof *y4);
    bool first = true;
    for (size_t ti = 0; ti < sizeof kTypes / sizeof kTypes[0]; ti++) {
        const enum herd_ggml_type t = kTypes[ti].type;
        const struct herd_ggml_type_info *info = herd_ggml_type_info(t);
        bool wanted = argc <= 2;
        for (int a = 2; a < argc; a++) wanted = wanted || strcasecmp(argv[a], info->name) == 0;
        if (!wanted) continue;
        const size_t row_bytes = COLS / info->block_elems * info->block_bytes;
        set_scales(big, UNCACHED_SIZE, &kTypes[ti]);
        const bool k_type = herd_act_type_of(t) == HERD_ACT_Q8K;
        for (size_t fi = 0; fi < n_fams; fi++) {
            const struct family *f = &fams[fi];
            if (k_type ? !f->q8k[t] : !f->q8a[t]) continue;
            struct job j = {f, t, big, CACHED_ROWS, row_bytes, xa, k_type ? xk : NULL, y};
            const double macs = (double)CACHED_ROWS * COLS;
            const double in = macs / time_pass(&j, NULL, 200, 5) * 1e-9;
            const herd_dot_q8k_rows_fn rows_fn = k_type ? herd_dot_q8k_rows_of(f->q8k[t]) : NULL;
            const double in4 = rows_fn ? 4 * macs / time_multi(rows_fn, &j, xk, y4) * 1e-9 : 0;
            /* a fresh part of the buffer for each pass would be fairer to the
             * slowest kernels, but 256 MB is far past any cache already */
            j.rows = UNCACHED_SIZE / row_bytes;
            const double umacs = (double)j.rows * COLS, ubytes = (double)(j.rows * row_bytes);
            const double t1 = time_pass(&j, NULL, 1, 4), tn = time_pass(&j, pool, 1, 4);
            char in4s[32] = "-";
            if (rows_fn) snprintf(in4s, sizeof in4s, "%.1f", in4);
            printf("| %s | %s | %.1f | %s | %.1f (%.1f GB/s) | %.1f (%.1f GB/s) |\n", info->name, f->name, in, in4s,
                   umacs / t1 * 1e-9, ubytes / t1 * 1e-9, umacs / tn * 1e-9, ubytes / tn * 1e-9);
            fflush(stdout);
            if (json)
                fprintf(json,
                        "%s{\"type\":\"%s\",\"family\":\"%s\",\"in_cache_gmacs\":%.2f,\"tokens4_gmacs\":%.2f,"
                        "\"out_gmacs_1\":%.2f,\"out_gbps_1\":%.2f,\"out_gmacs_all\":%.2f,\"out_gbps_all\":%.2f}",
                        first ? "" : ",", info->name, f->name, in, in4, umacs / t1 * 1e-9, ubytes / t1 * 1e-9,
                        umacs / tn * 1e-9, ubytes / tn * 1e-9);
            first = false;
        }
    }
    /* the activations' side: Q8_K quantization of one row, per table */
    printf("\nquantize_row_q8k, %d values in cache: ", COLS);
    const struct herd_kernels *tables[] = {herd_kernels_ref(), herd_kernels_avx2(), herd_kernels_avx512()};
    for (size_t f = 0; f < 3; f++) {
        if (!tables[f]) continue;
        double best = 1e9;
        for (int round = 0; round < 5; round++) {
            const double t0 = herd_time_now_s();
            for (int i = 0; i < 200; i++) tables[f]->quantize_row_q8k(xf, xk, COLS);
            const double dt = (herd_time_now_s() - t0) / 200;
            if (dt < best) best = dt;
        }
        printf("%s %.2f Gvalues/s%s", tables[f]->name, COLS / best * 1e-9, f < 2 ? ", " : "\n");
    }
    if (json) fprintf(json, "]}\n"), fclose(json);
    free(big), free(y), free(y4);
    herd_pool_destroy(pool);
    return 0;
}
