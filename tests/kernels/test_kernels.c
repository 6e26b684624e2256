/* Every SIMD kernel family against its _ref twin at odd sizes, outputs
 * poisoned with NaN first: quantization must be byte-identical, dot products
 * and axpy equal within a float-rounding tolerance (the SIMD versions sum in
 * a different order and use FMA). Also matmul end to end on every weight
 * type, and the thread pool. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "base/pool.h"
#include "base/rng.h"
#include "kernels/kernels.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "test_util.h"

/* Relative tolerance for sums of up to ~4k products in float. */
#define DOT_RTOL 2e-5f

static void fill(struct herd_rng *r, float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = (float)herd_rng_normal(r) * scale;
}

static void close_enough(float got, float want, float magnitude, const char *what, size_t n) {
    if (!(fabsf(got - want) <= DOT_RTOL * (magnitude + 1.0f)))
        fail_msg("%s n=%zu: %.9g vs ref %.9g", what, n, got, want);
}

static void compare_family(const struct herd_kernels *k) {
    const struct herd_kernels *ref = herd_kernels_ref();
    struct herd_rng r;
    herd_rng_init(&r, 11);
    const size_t blocks[] = {1, 3, 31, 33, 129};
    for (size_t bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++) {
        const size_t n = blocks[bi] * 32;
        float *x = malloc(n * sizeof *x), *w = malloc(n * sizeof *w);
        fill(&r, x, n, 3.0f);
        fill(&r, w, n, 0.1f);
        x[5] = 0.0f; /* exact zeros and a block of zeros */
        if (n >= 64) memset(x + 32, 0, 32 * sizeof *x);
        struct herd_block_q8a *qa = malloc(blocks[bi] * sizeof *qa), *qb = malloc(blocks[bi] * sizeof *qb);
        memset(qa, 0xff, blocks[bi] * sizeof *qa);
        memset(qb, 0xff, blocks[bi] * sizeof *qb);
        ref->quantize_row_q8a(x, qa, n);
        k->quantize_row_q8a(x, qb, n);
        if (memcmp(qa, qb, blocks[bi] * sizeof *qa) != 0) fail_msg("%s quantize_row_q8a differs at n=%zu", k->name, n);

        struct herd_block_q8_0 *w8 = malloc(blocks[bi] * sizeof *w8);
        struct herd_block_q4_0 *w4 = malloc(blocks[bi] * sizeof *w4);
        herd_quantize_row_ref(HERD_GGML_TYPE_Q8_0, w, w8, n);
        herd_quantize_row_ref(HERD_GGML_TYPE_Q4_0, w, w4, n);
        float mag = 0;
        for (size_t i = 0; i < n; i++) mag += fabsf(w[i] * x[i]);
        close_enough(k->dot_q8a[HERD_GGML_TYPE_Q8_0](w8, qa, n), ref->dot_q8a[HERD_GGML_TYPE_Q8_0](w8, qa, n), mag,
                     "dot_q8_0_q8a", n);
        close_enough(k->dot_q8a[HERD_GGML_TYPE_Q4_0](w4, qa, n), ref->dot_q8a[HERD_GGML_TYPE_Q4_0](w4, qa, n), mag,
                     "dot_q4_0_q8a", n);
        free(x), free(w), free(qa), free(qb), free(w8), free(w4);
    }
    const size_t sizes[] = {1, 7, 31, 33, 4097};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const size_t n = sizes[si];
        float *x = malloc(n * sizeof *x), *w = malloc(n * sizeof *w), *ya = malloc(n * sizeof *ya),
              *yb = malloc(n * sizeof *yb);
        uint16_t *h = malloc(n * sizeof *h), *bf = malloc(n * sizeof *bf);
        fill(&r, x, n, 1.0f);
        fill(&r, w, n, 1.0f);
        for (size_t i = 0; i < n; i++) h[i] = herd_fp32_to_fp16(w[i]), bf[i] = herd_fp32_to_bf16(w[i]);
        float mag = 0;
        for (size_t i = 0; i < n; i++) mag += fabsf(w[i] * x[i]);
        close_enough(k->dot_f32(w, x, n), ref->dot_f32(w, x, n), mag, "dot_f32", n);
        close_enough(k->dot_f16_f32(h, x, n), ref->dot_f16_f32(h, x, n), mag, "dot_f16_f32", n);
        close_enough(k->dot_bf16_f32(bf, x, n), ref->dot_bf16_f32(bf, x, n), mag, "dot_bf16_f32", n);
        for (size_t i = 0; i < n; i++) ya[i] = yb[i] = x[i];
        ref->axpy_f32(0.7f, w, ya, n);
        k->axpy_f32(0.7f, w, yb, n);
        for (size_t i = 0; i < n; i++) close_enough(yb[i], ya[i], fabsf(ya[i]), "axpy_f32", n);
        for (size_t i = 0; i < n; i++) ya[i] = yb[i] = x[i];
        ref->axpy_f16(-1.3f, h, ya, n);
        k->axpy_f16(-1.3f, h, yb, n);
        for (size_t i = 0; i < n; i++) close_enough(yb[i], ya[i], fabsf(ya[i]), "axpy_f16", n);
        free(x), free(w), free(ya), free(yb), free(h), free(bf);
    }
}

static void test_avx2_matches_ref(void **state) {
    (void)state;
    const struct herd_kernels *k = herd_kernels_avx2();
    if (!k) skip();
    compare_family(k);
}

static void test_avx512_matches_ref(void **state) {
    (void)state;
    const struct herd_kernels *k = herd_kernels_avx512();
    if (!k) skip();
    compare_family(k);
}

/* matmul with the best kernels vs the ref kernels, every weight type, odd
 * row counts, a padded output stride whose gaps must stay NaN. */
static void test_matmul_all_types(void **state) {
    (void)state;
    struct herd_pool *pool = herd_pool_create(2);
    struct herd_rng r;
    herd_rng_init(&r, 5);
    const enum herd_ggml_type types[] = {HERD_GGML_TYPE_F32, HERD_GGML_TYPE_F16, HERD_GGML_TYPE_BF16,
                                         HERD_GGML_TYPE_Q8_0, HERD_GGML_TYPE_Q4_0};
    const size_t rows = 37, cols = 96, T = 5, ys = rows + 3;
    float *wf = malloc(rows * cols * sizeof *wf), *x = malloc(T * cols * sizeof *x);
    fill(&r, wf, rows * cols, 0.2f);
    fill(&r, x, T * cols, 1.0f);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint64_t ne[2] = {cols, rows}, bytes;
        struct herd_error err;
        assert_int_equal(herd_ggml_tensor_nbytes(types[ti], 2, ne, NULL, &bytes, &err), HERD_OK);
        uint8_t *wq = malloc(bytes);
        for (size_t rr = 0; rr < rows; rr++)
            herd_quantize_row_ref(types[ti], wf + rr * cols, wq + rr * (bytes / rows), cols);
        struct herd_matrix m = {types[ti], wq, rows, cols, bytes / rows, NULL};
        float *ya = malloc(T * ys * sizeof *ya), *yb = malloc(T * ys * sizeof *yb);
        for (size_t i = 0; i < T * ys; i++) ya[i] = yb[i] = NAN;
        void *scratch =
            malloc(herd_matmul_scratch_bytes(&m, T, 2, true) + herd_matmul_scratch_bytes(&m, T, 2, false) + 64);
        herd_matmul(pool, herd_kernels_ref(), &m, x, cols, T, ya, ys, scratch, false);
        herd_matmul(pool, herd_kernels_best(), &m, x, cols, T, yb, ys, scratch, false);
        for (size_t t = 0; t < T; t++)
            for (size_t i = 0; i < ys; i++) {
                float a = ya[t * ys + i], b = yb[t * ys + i];
                if (i >= rows) {
                    assert_true(isnan(a) && isnan(b));
                    continue;
                }
                assert_false(isnan(a));
                close_enough(b, a, 20.0f, herd_ggml_type_info(types[ti])->name, cols);
            }
        /* precise mode: dequantized weights, f32 activations: the f32 result */
        herd_matmul(pool, herd_kernels_best(), &m, x, cols, T, yb, ys, scratch, true);
        for (size_t t = 0; t < T; t++)
            for (size_t i = 0; i < rows; i++) {
                float deq[96];
                herd_dequantize_row_ref(types[ti], wq + i * (bytes / rows), deq, cols);
                double want = 0;
                for (size_t c = 0; c < cols; c++) want += (double)deq[c] * x[t * cols + c];
                assert_true(fabs(yb[t * ys + i] - want) < 1e-4);
            }
        free(wq), free(ya), free(yb), free(scratch);
    }
    free(wf), free(x);
    herd_pool_destroy(pool);
}

/* Packed tiles (ref, AVX2 and AVX-512 where present) against the unpacked
 * reference dot products, for every token count 1..27 (all tile shapes and
 * their mixes: 16 + 8 + 2 + 1). */
static void test_packed_matches_unpacked(void **state) {
    (void)state;
    struct herd_pool *pool = herd_pool_create(2);
    struct herd_rng r;
    herd_rng_init(&r, 9);
    const size_t rows = 48, cols = 160, T = 27;
    float *wf = malloc(rows * cols * sizeof *wf), *x = malloc(T * cols * sizeof *x);
    fill(&r, wf, rows * cols, 0.3f);
    fill(&r, x, T * cols, 1.0f);
    const enum herd_ggml_type types[] = {HERD_GGML_TYPE_Q8_0, HERD_GGML_TYPE_Q4_0};
    for (size_t ti = 0; ti < 2; ti++) {
        uint64_t ne[2] = {cols, rows}, bytes;
        struct herd_error err;
        assert_int_equal(herd_ggml_tensor_nbytes(types[ti], 2, ne, NULL, &bytes, &err), HERD_OK);
        uint8_t *wq = malloc(bytes);
        for (size_t rr = 0; rr < rows; rr++)
            herd_quantize_row_ref(types[ti], wf + rr * cols, wq + rr * (bytes / rows), cols);
        struct herd_matrix plain = {types[ti], wq, rows, cols, bytes / rows, NULL}, packed = plain;
        uint8_t *store = aligned_alloc(64, (herd_matrix_packed_bytes(&packed) + 63) & ~(size_t)63);
        herd_matrix_pack(&packed, store);
        void *scratch = malloc(herd_matmul_scratch_bytes(&plain, T, 2, false) + 64);
        const struct herd_kernels *fams[3] = {herd_kernels_ref(), herd_kernels_avx2(), herd_kernels_avx512()};
        for (size_t n = 1; n <= T; n++) {
            float *want = malloc(n * rows * sizeof *want), *got = malloc(n * rows * sizeof *got);
            herd_matmul(pool, herd_kernels_ref(), &plain, x, cols, n, want, rows, scratch, false);
            for (int f = 0; f < 3; f++) {
                if (!fams[f]) continue;
                for (size_t i = 0; i < n * rows; i++) got[i] = NAN;
                herd_matmul(pool, fams[f], &packed, x, cols, n, got, rows, scratch, false);
                for (size_t i = 0; i < n * rows; i++) close_enough(got[i], want[i], 20.0f, fams[f]->name, n);
                /* activations quantized by the caller: the very same result */
                assert_true(herd_matmul_quantizes(&packed, false) && !herd_matmul_quantizes(&packed, true));
                float *pre = malloc(n * rows * sizeof *pre);
                memset(scratch, 0xff, herd_matmul_scratch_bytes(&plain, T, 2, false));
                for (size_t t = 0; t < n; t++)
                    fams[f]->quantize_row_q8a(x + t * cols, (struct herd_block_q8a *)scratch + t * (cols / 32), cols);
                const struct herd_matmul_out o[2] = {{&packed, pre, rows}, {&plain, got, rows}};
                herd_matmul_multi_quantized(pool, fams[f], o, 2, n, scratch);
                herd_matmul(pool, fams[f], &packed, x, cols, n, want, rows, scratch, false);
                assert_memory_equal(pre, want, n * rows * sizeof *pre);
                herd_matmul(pool, fams[f], &plain, x, cols, n, pre, rows, scratch, false);
                assert_memory_equal(got, pre, n * rows * sizeof *pre);
                herd_matmul(pool, herd_kernels_ref(), &plain, x, cols, n, want, rows, scratch, false);
                free(pre);
            }
            free(want), free(got);
        }
        free(wq), free(store), free(scratch);
    }
    free(wf), free(x);
    herd_pool_destroy(pool);
}

/* Where each thread's share of a one-token matmul starts
 * (herd_matmul_share_start, for prefetching): over the threads of a pool
 * the shares of a packed matrix cover its packed bytes in order, once; a
 * share in an unpacked output has none. The rows form likewise over its
 * first output. */
static void test_matmul_share_start(void **state) {
    (void)state;
    struct herd_rng r;
    herd_rng_init(&r, 13);
    const size_t rows = 160, cols = 160;
    float *wf = malloc(rows * cols * sizeof *wf);
    fill(&r, wf, rows * cols, 0.3f);
    uint64_t ne[2] = {cols, rows}, bytes;
    struct herd_error err;
    assert_int_equal(herd_ggml_tensor_nbytes(HERD_GGML_TYPE_Q8_0, 2, ne, NULL, &bytes, &err), HERD_OK);
    uint8_t *wq = malloc(bytes);
    for (size_t rr = 0; rr < rows; rr++)
        herd_quantize_row_ref(HERD_GGML_TYPE_Q8_0, wf + rr * cols, wq + rr * (bytes / rows), cols);
    struct herd_matrix plain = {HERD_GGML_TYPE_Q8_0, wq, rows, cols, bytes / rows, NULL}, packed = plain;
    const size_t packed_bytes = herd_matrix_packed_bytes(&packed);
    uint8_t *store = aligned_alloc(64, (packed_bytes + 63) & ~(size_t)63);
    herd_matrix_pack(&packed, store);
    float y[160];
    for (int nth = 1; nth <= 3; nth++) {
        struct herd_pool *pool = herd_pool_create(nth);
        assert_non_null(pool);
        const struct herd_matmul_out one[1] = {{&packed, y, rows}};
        const struct herd_matmul_out two[2] = {{&packed, y, rows}, {&packed, y, rows}};
        const struct herd_matmul_out mixed[2] = {{&plain, y, rows}, {&packed, y, rows}};
        const uint8_t *next = store;
        for (int ith = 0; ith < nth; ith++) { /* one output: the shares cover it in order */
            const void *start;
            const size_t n = herd_matmul_share_start(pool, one, 1, 1, ith, &start);
            assert_true(n > 0 && start == next);
            next += n;
        }
        assert_ptr_equal(next, store + packed_bytes);
        next = store;
        for (int ith = 0; ith < nth; ith++) { /* the rows form, 32 rows an item */
            const void *start;
            const size_t n = herd_matmul_rows_share_start(pool, two, 1, 32, ith, &start);
            assert_true(n > 0 && start == next);
            next += n;
        }
        assert_ptr_equal(next, store + packed_bytes);
        for (int ith = 0; ith < nth; ith++) { /* a share starts in one output and ends there */
            const void *start;
            const size_t n = herd_matmul_share_start(pool, two, 2, 1, ith, &start);
            assert_true(n > 0 && (const uint8_t *)start >= store && (const uint8_t *)start + n <= store + packed_bytes);
            const size_t m = herd_matmul_share_start(pool, mixed, 2, 1, ith, &start);
            assert_true(ith == 0 ? m == 0 && start == NULL : m == 0 || (const uint8_t *)start >= store);
        }
        herd_pool_destroy(pool);
    }
    free(wf), free(wq), free(store);
}

/* Attention block kernel of the best family against the ref twin: head
 * sizes 8, 24 and 64, 1..12 heads per KV head, 1..16 valid keys, f16, f32 and
 * 8-bit caches, over three consecutive blocks (so the running max moves);
 * plain, with the first keys masked (a sliding window's start) and with
 * soft-capped scores. */
static void attn_family_matches_ref(const struct herd_kernels *k) {
    struct herd_rng r;
    herd_rng_init(&r, 21);
    const int hds[] = {8, 24, 64}, Gs[] = {1, 3, 8, 12};
    for (int hi = 0; hi < 3; hi++)
        for (int gi = 0; gi < 4; gi++)
            for (int type = 0; type < 3; type++)
                for (int n = 1; n <= 16; n += 5)
                    for (int opt = 0; opt < 3; opt++) {
                        const int hd = hds[hi], G = Gs[gi], bt = 16;
                        const size_t vs = (size_t)hd * 2; /* V rows of two KV heads */
                        float q[12 * 64], K[64 * 16], V[16 * 128], ks[16], vsc[32];
                        uint16_t Kh[64 * 16], Vh[16 * 128];
                        int8_t K8[64 * 16], V8[16 * 128];
                        float acc_a[12 * 64] = {0}, acc_b[12 * 64] = {0}, ma[12], mb[12], la[12] = {0}, lb[12] = {0};
                        fill(&r, q, (size_t)G * hd, 0.5f);
                        for (int g = 0; g < G; g++) ma[g] = mb[g] = -INFINITY;
                        for (int blk = 0; blk < 3; blk++) {
                            fill(&r, K, (size_t)hd * bt, 1.0f + (float)blk);
                            fill(&r, V, (size_t)bt * vs, 1.0f);
                            for (size_t i = 0; i < (size_t)hd * bt; i++) Kh[i] = herd_fp32_to_fp16(K[i]);
                            for (size_t i = 0; i < (size_t)bt * vs; i++) Vh[i] = herd_fp32_to_fp16(V[i]);
                            for (int j = 0; j < bt; j++) ks[j] = 0.01f * (float)(j + 1);
                            for (int j = 0; j < 2 * bt; j++) vsc[j] = 0.02f * (float)(j + 1);
                            for (size_t i = 0; i < (size_t)hd * bt; i++) K8[i] = (int8_t)((int)(K[i] * 40) % 127);
                            for (size_t i = 0; i < (size_t)bt * vs; i++) V8[i] = (int8_t)((int)(V[i] * 40) % 127);
                            /* next: a block to prefetch (any readable bytes; no effect on results) */
                            struct herd_attn_kv kv = {
                                (enum herd_attn_kv_type)type,    NULL, ks,  NULL, vs, vsc, 2, (const uint8_t *)V,
                                (size_t)bt * vs * sizeof(float), 0,    0.0f};
                            kv.k = type == HERD_ATTN_KV_F32  ? (const void *)K
                                   : type == HERD_ATTN_KV_Q8 ? (const void *)K8
                                                             : (const void *)Kh;
                            kv.v = type == HERD_ATTN_KV_F32  ? (const void *)V
                                   : type == HERD_ATTN_KV_Q8 ? (const void *)V8
                                                             : (const void *)Vh;
                            kv.first = opt == 1 ? n / 2 : 0;
                            kv.softcap = opt == 2 ? 3.0f : 0.0f;
                            herd_attn_block_ref(q, G, hd, &kv, bt, n, ma, la, acc_a);
                            k->attn_block(q, G, hd, &kv, bt, n, mb, lb, acc_b);
                        }
                        for (int g = 0; g < G; g++) {
                            close_enough(mb[g], ma[g], 50.0f, "attn max", (size_t)n);
                            close_enough(lb[g], la[g], la[g] * 50, "attn l", (size_t)n);
                            for (int d = 0; d < hd; d++)
                                close_enough(acc_b[g * hd + d] / lb[g], acc_a[g * hd + d] / la[g], 50.0f, "attn out",
                                             (size_t)n);
                        }
                    }
}

static void test_attn_block_matches_ref(void **state) {
    (void)state;
    const struct herd_kernels *fams[2] = {herd_kernels_avx2(), herd_kernels_avx512()};
    for (int i = 0; i < 2; i++)
        if (fams[i]) attn_family_matches_ref(fams[i]);
}

/* The SwiGLU gate of every family against the scalar one: ordinary values,
 * large ones of both signs (where e^-g under- or overflows), and every
 * tail length. */
static void test_silu_mul_matches_ref(void **state) {
    (void)state;
    const struct herd_kernels *fams[3] = {herd_kernels_ref(), herd_kernels_avx2(), herd_kernels_avx512()};
    struct herd_rng r;
    herd_rng_init(&r, 5);
    float g[67], u[67], want[67], got[67];
    for (int n = 1; n <= 67; n += 11) {
        fill(&r, g, (size_t)n, 6.0f);
        fill(&r, u, (size_t)n, 1.0f);
        g[0] = 100.0f, g[n / 2] = -100.0f, g[n - 1] = 0.0f;
        for (int i = 0; i < n; i++) want[i] = (float)((double)g[i] / (1.0 + exp(-(double)g[i])) * u[i]);
        for (int f = 0; f < 3; f++) {
            if (!fams[f]) continue;
            memcpy(got, g, sizeof g);
            fams[f]->silu_mul(got, u, (size_t)n);
            for (int i = 0; i < n; i++) assert_true(fabsf(got[i] - want[i]) <= 1e-6f * fabsf(want[i]) + 1e-30f);
        }
    }
}

/* GELU (tanh form) gate of every family against double precision, the
 * same values and tails as silu's. */
static void test_gelu_mul_matches_ref(void **state) {
    (void)state;
    const struct herd_kernels *fams[3] = {herd_kernels_ref(), herd_kernels_avx2(), herd_kernels_avx512()};
    struct herd_rng r;
    herd_rng_init(&r, 6);
    float g[67], u[67], want[67], got[67];
    for (int n = 1; n <= 67; n += 11) {
        fill(&r, g, (size_t)n, 6.0f);
        fill(&r, u, (size_t)n, 1.0f);
        g[0] = 100.0f, g[n / 2] = -100.0f, g[n - 1] = 0.0f;
        for (int i = 0; i < n; i++) {
            const double x = g[i];
            /* 0.5 x (1 + tanh z) as x / (1 + e^-2z): the same value without
             * 1 + tanh's cancellation for large negative x */
            want[i] = (float)(x / (1.0 + exp(-2.0 * sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))) * u[i]);
        }
        for (int f = 0; f < 3; f++) {
            if (!fams[f]) continue;
            memcpy(got, g, sizeof g);
            fams[f]->gelu_mul(got, u, (size_t)n);
            for (int i = 0; i < n; i++) /* 2z rounded to float moves e^-2z by |2z| ulps: 1e-5 at |x| ~ 6 */
                if (!(fabsf(got[i] - want[i]) <= 1e-5f * fabsf(want[i]) + 1e-30f))
                    fail_msg("%s gelu(%g) * %g = %.9g, want %.9g", fams[f]->name, g[i], u[i], got[i], want[i]);
        }
    }
}

/* Sampler weights of every family against double precision: ordinary
 * values, the maximum itself (weight 1), values far below it (underflow to
 * ~0), banned (-inf) and NaN logits (exactly 0), every tail length. */
static void test_softmax_weights_matches_ref(void **state) {
    (void)state;
    const struct herd_kernels *fams[3] = {herd_kernels_ref(), herd_kernels_avx2(), herd_kernels_avx512()};
    struct herd_rng r;
    herd_rng_init(&r, 13);
    float x[41], got[41];
    for (int n = 1; n <= 41; n += 4) {
        fill(&r, x, (size_t)n, 8.0f);
        x[0] = 8.0f;
        if (n > 2) x[1] = -INFINITY, x[n - 1] = NAN;
        if (n > 5) x[4] = -300.0f;
        for (int f = 0; f < 3; f++) {
            if (!fams[f]) continue;
            const float scale = f == 0 ? 1.0f : 1.0f / 0.7f;
            fams[f]->softmax_weights(x, 8.0f, scale, got, (size_t)n);
            for (int i = 0; i < n; i++) {
                if (!(x[i] > -INFINITY)) { /* banned or NaN: exactly nothing */
                    assert_true(got[i] == 0.0f);
                    continue;
                }
                const double arg = ((double)x[i] - 8.0) * scale, want = exp(arg);
                /* the float argument's rounding grows with its size */
                if (!(fabs(got[i] - want) <= 2e-7 * (2.0 + fabs(arg)) * want + 1e-30))
                    fail_msg("%s: x %g: %g, want %g", fams[f]->name, (double)x[i], (double)got[i], want);
            }
        }
    }
}

/* The f16 store of every family is bit-identical to the scalar conversion:
 * ordinary values, ties, subnormals, overflow, every tail length. */
static void test_f32_to_f16_matches_ref(void **state) {
    (void)state;
    const struct herd_kernels *fams[2] = {herd_kernels_avx2(), herd_kernels_avx512()};
    struct herd_rng r;
    herd_rng_init(&r, 9);
    float x[70];
    uint16_t want[70], got[70];
    for (int n = 1; n <= 70; n += 3) {
        fill(&r, x, (size_t)n, 3.0f);
        x[0] = 1.0f + 1.0f / 2048.0f;         /* a tie: rounds to even */
        x[n / 2] = 3e-6f;                     /* an f16 subnormal */
        x[n - 1] = n % 2 ? 70000.0f : -1e-9f; /* overflow to inf; underflow to -0 */
        for (int i = 0; i < n; i++) want[i] = herd_fp32_to_fp16(x[i]);
        for (int f = 0; f < 2; f++) {
            if (!fams[f]) continue;
            fams[f]->f32_to_f16(x, got, (size_t)n);
            assert_memory_equal(got, want, (size_t)n * sizeof *got);
        }
    }
}

struct count_ctx {
    int hits[8];
};

static void count_fn(void *ctx, int ith, int nth) {
    struct count_ctx *c = ctx;
    assert_true(nth == 4 && ith >= 0 && ith < 4);
    c->hits[ith]++;
}

static void test_pool_runs_every_thread(void **state) {
    (void)state;
    struct herd_pool *p = herd_pool_create(4);
    struct count_ctx c = {{0}};
    for (int i = 0; i < 1000; i++) herd_pool_run(p, count_fn, &c);
    for (int i = 0; i < 4; i++) assert_int_equal(c.hits[i], 1000);
    herd_pool_destroy(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_avx2_matches_ref),       cmocka_unit_test(test_avx512_matches_ref),
        cmocka_unit_test(test_matmul_all_types),       cmocka_unit_test(test_packed_matches_unpacked),
        cmocka_unit_test(test_matmul_share_start),     cmocka_unit_test(test_pool_runs_every_thread),
        cmocka_unit_test(test_attn_block_matches_ref), cmocka_unit_test(test_silu_mul_matches_ref),
        cmocka_unit_test(test_gelu_mul_matches_ref),   cmocka_unit_test(test_softmax_weights_matches_ref),
        cmocka_unit_test(test_f32_to_f16_matches_ref),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
