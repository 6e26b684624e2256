/* Machine ceilings measured in the same run as a benchmark, so results can
 * be given as a fraction of what this machine does at this moment (a noisy
 * neighbour lowers both). */
#include "base/timing.h"
#include "kernels/roofline.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/cpu.h"

struct read_job {
    const float *buf;
    size_t n;
    const struct herd_kernels *k;
    float sink[64];
};

/* Streams n floats as 4 concurrent sequential streams (one per quarter;
 * AMD and Intel prefetchers both track several streams per core), summing
 * with independent integer adds so the loop is bound by memory, not by an
 * add or FMA latency chain. */
__attribute__((target("avx2"))) static float read_avx2(const float *p, size_t n) {
    const size_t q = n / 4 / 64 * 64; /* floats per stream, whole 256-byte steps */
    const __m256i *s0 = (const __m256i *)p, *s1 = (const __m256i *)(p + q), *s2 = (const __m256i *)(p + 2 * q),
                  *s3 = (const __m256i *)(p + 3 * q);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (size_t i = 0; i < q / 8; i += 8) {
#define STREAM(S, A, B)                                                                                                \
    A = _mm256_add_epi32(A, _mm256_add_epi32(_mm256_load_si256(S + i), _mm256_load_si256(S + i + 1)));                 \
    B = _mm256_add_epi32(B, _mm256_add_epi32(_mm256_load_si256(S + i + 2), _mm256_load_si256(S + i + 3)));             \
    A = _mm256_add_epi32(A, _mm256_add_epi32(_mm256_load_si256(S + i + 4), _mm256_load_si256(S + i + 5)));             \
    B = _mm256_add_epi32(B, _mm256_add_epi32(_mm256_load_si256(S + i + 6), _mm256_load_si256(S + i + 7)));
        STREAM(s0, a0, a1)
        STREAM(s1, a2, a3)
        STREAM(s2, a4, a5)
        STREAM(s3, a6, a7)
#undef STREAM
    }
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)),
                                 _mm256_add_epi32(_mm256_add_epi32(a4, a5), _mm256_add_epi32(a6, a7)));
    int32_t out[8];
    _mm256_storeu_si256((__m256i *)out, s);
    return (float)(out[0] + out[7]);
}

/* The same with 512-bit loads, as the AVX-512 kernels read weights. */
__attribute__((target("avx512f"))) static float read_avx512(const float *p, size_t n) {
    const size_t q = n / 4 / 64 * 64;
    const __m512i *s0 = (const __m512i *)p, *s1 = (const __m512i *)(p + q), *s2 = (const __m512i *)(p + 2 * q),
                  *s3 = (const __m512i *)(p + 3 * q);
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < q / 16; i += 4) {
        a0 = _mm512_add_epi32(a0, _mm512_add_epi32(_mm512_load_si512(s0 + i), _mm512_load_si512(s0 + i + 1)));
        a0 = _mm512_add_epi32(a0, _mm512_add_epi32(_mm512_load_si512(s0 + i + 2), _mm512_load_si512(s0 + i + 3)));
        a1 = _mm512_add_epi32(a1, _mm512_add_epi32(_mm512_load_si512(s1 + i), _mm512_load_si512(s1 + i + 1)));
        a1 = _mm512_add_epi32(a1, _mm512_add_epi32(_mm512_load_si512(s1 + i + 2), _mm512_load_si512(s1 + i + 3)));
        a2 = _mm512_add_epi32(a2, _mm512_add_epi32(_mm512_load_si512(s2 + i), _mm512_load_si512(s2 + i + 1)));
        a2 = _mm512_add_epi32(a2, _mm512_add_epi32(_mm512_load_si512(s2 + i + 2), _mm512_load_si512(s2 + i + 3)));
        a3 = _mm512_add_epi32(a3, _mm512_add_epi32(_mm512_load_si512(s3 + i), _mm512_load_si512(s3 + i + 1)));
        a3 = _mm512_add_epi32(a3, _mm512_add_epi32(_mm512_load_si512(s3 + i + 2), _mm512_load_si512(s3 + i + 3)));
    }
    return (float)_mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)));
}

static void read_part(void *ctx, int ith, int nth) {
    struct read_job *j = ctx;
    size_t per = j->n / (size_t)nth / 256 * 256; /* whole 1 KiB steps, 64-byte aligned */
    const float *p = j->buf + per * (size_t)ith;
    const struct herd_cpu_features *f = herd_cpu_features();
    j->sink[ith % 64] += f->avx512 ? read_avx512(p, per) : f->avx2 ? read_avx2(p, per) : j->k->dot_f32(p, p, per);
}

struct herd_roofline_read {
    float *buf;
    size_t n;
};

struct herd_roofline_read *herd_roofline_read_create(size_t bytes) {
    struct herd_roofline_read *r = malloc(sizeof *r);
    if (!r) return NULL;
    r->n = bytes / sizeof(float);
    r->buf = aligned_alloc(64, (r->n * sizeof(float) + 63) & ~(size_t)63);
    if (!r->buf) {
        free(r);
        return NULL;
    }
    memset(r->buf, 0, r->n * sizeof(float)); /* touch every page before timing */
    return r;
}

double herd_roofline_read_measure(struct herd_roofline_read *r, struct herd_pool *pool, const struct herd_kernels *k,
                                  int reps) {
    struct read_job j = {r->buf, r->n, k, {0}};
    double best = 0;
    for (int i = 0; i < reps; i++) {
        double t0 = herd_time_now_s();
        herd_pool_run(pool, read_part, &j);
        double t = herd_time_now_s() - t0;
        double gbps = (double)(r->n * sizeof(float)) / t / 1e9;
        if (gbps > best) best = gbps;
    }
    return best;
}

void herd_roofline_read_destroy(struct herd_roofline_read *r) {
    if (!r) return;
    free(r->buf);
    free(r);
}

double herd_roofline_read_gbps(struct herd_pool *pool, const struct herd_kernels *k, size_t bytes, int reps) {
    struct herd_roofline_read *r = herd_roofline_read_create(bytes);
    if (!r) return 0;
    const double best = herd_roofline_read_measure(r, pool, k, reps);
    herd_roofline_read_destroy(r);
    return best;
}

/* Compute probes: 12 independent accumulator chains held in named
 * registers (an array would be kept in memory), so the loop is bound by the
 * execution units, not by latency. Each is compiled for the ISA it uses.
 * The chains start from different values: identical chains were merged by
 * the compiler into one, latency-bound, counted twelve times (the int8 and
 * f32 peaks read ~3x too high). */
#define CHAINS     12
#define UNROLL(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7) OP(8) OP(9) OP(10) OP(11)

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static double int8_vnni_loop(size_t iters) {
    const __m512i u = _mm512_set1_epi8(3), s = _mm512_set1_epi8(-2);
#define DECL(i) __m512i a##i = _mm512_set1_epi32(i);
#define STEP(i) a##i = _mm512_dpbusd_epi32(a##i, u, s);
/* unsigned: the chains wrap after enough iterations, and their sum is only a sink */
#define SUM(i)  sum += (uint32_t)_mm512_reduce_add_epi32(a##i);
    UNROLL(DECL)
    for (size_t it = 0; it < iters; it++) {
        UNROLL(STEP)
    }
    uint32_t sum = 0;
    UNROLL(SUM)
#undef DECL
#undef STEP
#undef SUM
    return (double)sum; /* keeps the loop alive */
}

__attribute__((target("avx2,fma"))) static double int8_avx2_loop(size_t iters) {
    const __m256i u = _mm256_set1_epi8(3), s = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);
#define DECL(i) __m256i a##i = _mm256_set1_epi32(i);
/* the empty volatile asm hides that u is the same every time: without it the
 * multiplies are loop-invariant and only the adds would be measured */
#define STEP(i)                                                                                                        \
    {                                                                                                                  \
        __m256i ui = u;                                                                                                \
        __asm__ volatile("" : "+x"(ui));                                                                               \
        a##i = _mm256_add_epi32(a##i, _mm256_madd_epi16(_mm256_maddubs_epi16(ui, s), ones));                           \
    }
#define SUM(i) acc = _mm256_add_epi32(acc, a##i);
    UNROLL(DECL)
    for (size_t it = 0; it < iters; it++) {
        UNROLL(STEP)
    }
    __m256i acc = _mm256_setzero_si256();
    UNROLL(SUM)
#undef DECL
#undef STEP
#undef SUM
    int32_t out[8];
    uint32_t sum = 0; /* a sink: unsigned, as the wrapped chains may not fit a signed sum */
    _mm256_storeu_si256((__m256i *)out, acc);
    for (int j = 0; j < 8; j++) sum += (uint32_t)out[j];
    return (double)sum;
}

__attribute__((target("avx512f"))) static double f32_avx512_loop(size_t iters) {
    const __m512 x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(0.9999999f);
#define DECL(i) __m512 a##i = _mm512_set1_ps((float)i);
#define STEP(i) a##i = _mm512_fmadd_ps(x, y, a##i);
#define SUM(i)  acc = _mm512_add_ps(acc, a##i);
    UNROLL(DECL)
    for (size_t it = 0; it < iters; it++) {
        UNROLL(STEP)
    }
    __m512 acc = _mm512_setzero_ps();
    UNROLL(SUM)
#undef DECL
#undef STEP
#undef SUM
    return _mm512_reduce_add_ps(acc);
}

__attribute__((target("avx2,fma"))) static double f32_avx2_loop(size_t iters) {
    const __m256 x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(0.9999999f);
#define DECL(i) __m256 a##i = _mm256_set1_ps((float)i);
#define STEP(i) a##i = _mm256_fmadd_ps(x, y, a##i);
#define SUM(i)  acc = _mm256_add_ps(acc, a##i);
    UNROLL(DECL)
    for (size_t it = 0; it < iters; it++) {
        UNROLL(STEP)
    }
    __m256 acc = _mm256_setzero_ps();
    UNROLL(SUM)
#undef DECL
#undef STEP
#undef SUM
    float out[8], sum = 0;
    _mm256_storeu_ps(out, acc);
    for (int j = 0; j < 8; j++) sum += out[j];
    return sum;
}

struct compute_job {
    bool int8;
    size_t iters;
    double sink[64];
};

static void compute_part(void *ctx, int ith, int nth) {
    (void)nth;
    struct compute_job *j = ctx;
    const struct herd_cpu_features *f = herd_cpu_features();
    double r;
    if (j->int8)
        r = f->avx512_vnni ? int8_vnni_loop(j->iters) : f->avx2 ? int8_avx2_loop(j->iters) : 0;
    else
        r = f->avx512 ? f32_avx512_loop(j->iters) : f->avx2 ? f32_avx2_loop(j->iters) : 0;
    j->sink[ith % 64] += r;
}

/* Operations per probe iteration: CHAINS instructions x lanes x 2 (multiply and add). */
static double ops_per_iter(bool int8) {
    const struct herd_cpu_features *f = herd_cpu_features();
    if (int8) return f->avx512_vnni ? CHAINS * 64.0 * 2 : f->avx2 ? CHAINS * 32.0 * 2 : 0;
    return f->avx512 ? CHAINS * 16.0 * 2 : f->avx2 ? CHAINS * 8.0 * 2 : 0;
}

static double compute_ops(struct herd_pool *pool, bool int8, int reps) {
    struct compute_job j = {int8, 2000000, {0}};
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = herd_time_now_s();
        herd_pool_run(pool, compute_part, &j);
        double t = herd_time_now_s() - t0;
        double ops = ops_per_iter(int8) * (double)j.iters * herd_pool_size(pool) / t;
        if (ops > best) best = ops;
    }
    return best;
}

double herd_roofline_int8_ops(struct herd_pool *pool, int reps) { return compute_ops(pool, true, reps); }
double herd_roofline_f32_flops(struct herd_pool *pool, int reps) { return compute_ops(pool, false, reps); }
