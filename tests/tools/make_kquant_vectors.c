/* Writes the binary test vectors in tests/data/kquant/: ggml's own
 * dequantization, dot products, quantization (with and without importance
 * weights) and Q8_K activation quantization, for herd's block weight types.
 * It is our code calling ggml's public C API; it is not part of the herd
 * build and never builds llama.cpp. tests/data/kquant/README.md describes
 * every file byte by byte.
 *
 * Build (against a llama.cpp build at /work/llama.cpp, commit c392e50, made
 * with -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF
 * -DBUILD_SHARED_LIBS=OFF), then run:
 *
 *   cc -O2 -std=c11 -Wall -Wextra -I/work/llama.cpp/ggml/include \
 *      tests/tools/make_kquant_vectors.c \
 *      /work/llama.cpp/build/ggml/src/libggml-cpu.a \
 *      /work/llama.cpp/build/ggml/src/libggml-base.a \
 *      -lstdc++ -fopenmp -lm -lpthread -o /tmp/make_kquant_vectors
 *   /tmp/make_kquant_vectors tests/data/kquant
 *
 * The output is deterministic: every input comes from one fixed-seed
 * splitmix64 stream and from integer arithmetic (no libm in the inputs), so a
 * rerun against the same ggml build gives the same bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"
#include "ggml-cpu.h"

#define VECTORS_VERSION 1u

/* ---------------------------------------------------------------- PRNG -- */

static uint64_t rng_state = 0x6865726421u; /* "herd!": any fixed seed */

static uint64_t rng_next(void) {
    /* splitmix64 (Steele, Lea, Flood 2014) */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 24 random bits, exact in float. */
static float rng_uniform(void) { return (float)(rng_next() >> 40) * (1.0f / 16777216.0f); }

static uint32_t rng_below(uint32_t n) { return (uint32_t)(rng_next() % n); }

/* Approximately standard normal: Irwin-Hall sum of 12 uniforms minus 6.
 * Avoids libm so the inputs do not depend on the C library. */
static float rng_normal(void) {
    float s = 0.0f;
    for (int i = 0; i < 12; i++) s += rng_uniform();
    return s - 6.0f;
}

/* A random finite fp16 bit pattern of magnitude in [2^-13, 1), about
 * [1.2e-4, 1): exponent field 2..14, random mantissa. */
static uint16_t rng_fp16_scale(int negative) {
    uint16_t exp = (uint16_t)(2 + rng_below(13));
    uint16_t mant = (uint16_t)rng_below(1024);
    return (uint16_t)((negative ? 0x8000u : 0u) | (exp << 10) | mant);
}

/* ------------------------------------------------------------ types ----- */

/* Byte offsets of the fp16 scale fields inside one block, from the block
 * structs in ggml-common.h; -1 where the type has no such field. */
struct vec_type {
    const char *name;
    enum ggml_type type;
    size_t block_bytes;
    int off_d; /* d: the scale (K types: super-block scale of the scales) */
    int off_m; /* m or dmin: the min (super-block scale of the mins) */
};

static const struct vec_type vec_types[] = {
    {"q4_0", GGML_TYPE_Q4_0, 18, 0, -1},     {"q4_1", GGML_TYPE_Q4_1, 20, 0, 2},
    {"q5_0", GGML_TYPE_Q5_0, 22, 0, -1},     {"q5_1", GGML_TYPE_Q5_1, 24, 0, 2},
    {"q8_0", GGML_TYPE_Q8_0, 34, 0, -1},     {"q2_K", GGML_TYPE_Q2_K, 84, 80, 82}, /* scales[16] qs[64] d dmin */
    {"q3_K", GGML_TYPE_Q3_K, 110, 108, -1},                                        /* hmask[32] qs[64] scales[12] d */
    {"q4_K", GGML_TYPE_Q4_K, 144, 0, 2},                                           /* d dmin scales[12] qs[128] */
    {"q5_K", GGML_TYPE_Q5_K, 176, 0, 2},    /* d dmin scales[12] qh[32] qs[128] */
    {"q6_K", GGML_TYPE_Q6_K, 210, 208, -1}, /* ql[128] qh[64] scales[16] d */
    {"iq4_nl", GGML_TYPE_IQ4_NL, 18, 0, -1},
};

#define N_VEC_TYPES (sizeof(vec_types) / sizeof(vec_types[0]))

static int is_k_type(enum ggml_type t) { return ggml_blck_size(t) == 256; }

/* ---------------------------------------------------------- output ------ */

struct out {
    FILE *f;
    const char *path;
    int failed;
};

static int out_open(struct out *o, const char *dir, const char *prefix, const char *name) {
    static char path[4096];
    snprintf(path, sizeof(path), "%s/%s%s.bin", dir, prefix, name);
    o->path = path;
    o->failed = 0;
    o->f = fopen(path, "wb");
    if (!o->f) {
        perror(path);
        return -1;
    }
    return 0;
}

static void out_bytes(struct out *o, const void *p, size_t n) {
    if (!o->failed && fwrite(p, 1, n, o->f) != n) o->failed = 1;
}

/* Little-endian on every machine herd targets; the header is written as
 * host u32 and the README states the files are little-endian. */
static void out_u32(struct out *o, uint32_t v) { out_bytes(o, &v, sizeof(v)); }

static void out_header(struct out *o, const char magic[4], uint32_t type) {
    out_bytes(o, magic, 4);
    out_u32(o, VECTORS_VERSION);
    out_u32(o, type);
}

static int out_close(struct out *o) {
    int rc = o->failed ? -1 : 0;
    if (fclose(o->f) != 0) rc = -1;
    if (rc != 0)
        fprintf(stderr, "%s: write failed\n", o->path);
    else
        printf("wrote %s\n", o->path);
    return rc;
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    return p;
}

static void fill_nan(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = __builtin_nanf("");
}

/* ------------------------------------------------------- dequant-T ----- */

/* Random blocks with random fp16 scales, and ggml's to_float of them.
 * Block 1 has d = 0 (m random, so the min term alone is exercised), block 2
 * negative d and m, block 3 d = m = 0, block 4 negative m; from block 5 on
 * each field is negative with probability 1/4. */
static int write_dequant(const char *dir, const struct vec_type *vt) {
    const int64_t qk = ggml_blck_size(vt->type);
    const size_t bsize = ggml_type_size(vt->type);
    const uint32_t n_blocks = is_k_type(vt->type) ? 8 : 16;
    uint8_t *blocks = xcalloc(n_blocks, bsize);
    float *y = xcalloc((size_t)n_blocks * qk, sizeof(float));
    struct out o;

    for (uint32_t b = 0; b < n_blocks; b++) {
        uint8_t *blk = blocks + b * bsize;
        for (size_t i = 0; i < bsize; i++) blk[i] = (uint8_t)rng_next();
        /* one block in four has a random sign on each field */
        int neg_d = b == 2 || (b >= 5 && rng_below(4) == 0);
        int neg_m = b == 2 || b == 4 || (b >= 5 && rng_below(4) == 0);
        uint16_t d = rng_fp16_scale(neg_d);
        uint16_t m = rng_fp16_scale(neg_m);
        if (b == 1 || b == 3) d = 0;
        if (b == 3) m = 0;
        memcpy(blk + vt->off_d, &d, 2);
        if (vt->off_m >= 0) memcpy(blk + vt->off_m, &m, 2);
    }

    fill_nan(y, (size_t)n_blocks * qk);
    ggml_get_type_traits(vt->type)->to_float(blocks, y, (int64_t)n_blocks * qk);

    int rc = out_open(&o, dir, "dequant-", vt->name);
    if (rc == 0) {
        out_header(&o, "HKQD", (uint32_t)vt->type);
        out_u32(&o, n_blocks);
        out_bytes(&o, blocks, n_blocks * bsize);
        out_bytes(&o, y, (size_t)n_blocks * qk * sizeof(float));
        rc = out_close(&o);
    }
    free(blocks);
    free(y);
    return rc;
}

/* ----------------------------------------------------------- dot-T ----- */

#define DOT_CASES 8

/* Case c of the activations x (n) and the weight row w (n). */
static void dot_case_inputs(int c, float *x, float *w, int n) {
    for (int i = 0; i < n; i++) {
        x[i] = rng_normal();
        w[i] = rng_normal() * 0.05f;
    }
    switch (c) {
    case 0: /* ordinary */ break;
    case 1: /* activation outliers, as in real hidden states */
        for (int k = 0; k < 6; k++)
            x[rng_below((uint32_t)n)] = (k & 1 ? -1.0f : 1.0f) * (40.0f + 20.0f * rng_uniform());
        break;
    case 2: /* half the activations zero */
        for (int i = 0; i < n; i++)
            if (rng_below(2)) x[i] = 0.0f;
        break;
    case 3: /* all-zero activations */ memset(x, 0, (size_t)n * sizeof(float)); break;
    case 4: /* weight outliers */
        for (int k = 0; k < 4; k++) w[rng_below((uint32_t)n)] = (k & 1 ? -1.0f : 1.0f) * 2.0f;
        break;
    case 5: /* tiny activations, large weights */
        for (int i = 0; i < n; i++) {
            x[i] *= 1e-3f;
            w[i] *= 40.0f;
        }
        break;
    case 6: /* large activations */
        for (int i = 0; i < n; i++) x[i] *= 100.0f;
        break;
    default: /* first 256 activations zero, largest magnitude negative */
        for (int i = 0; i < 256 && i < n; i++) x[i] = 0.0f;
        x[n - 3] = -25.0f;
        break;
    }
}

/* Self-check of one recorded case: ggml's vec_dot against the float dot
 * product of x with the dequantized weights. They differ by the activation
 * rounding, at most half a step (the block's largest |x| / 127) per value,
 * plus the fp16 rounding of the activation scale and sum (another ~127 *
 * 2^-11 of a step): 0.6 steps per value, and 0.1% of sum |x w| for float
 * summation order. A mismatched layout misses this by far. */
static int dot_plausible(enum ggml_type type, enum ggml_type vdt, const void *wq, const float *x, uint32_t n, float s) {
    const uint32_t qk = (uint32_t)ggml_blck_size(vdt);
    float *w = xcalloc(n, sizeof(float));
    double ref = 0.0, mag = 0.0, bound = 0.0;
    ggml_get_type_traits(type)->to_float(wq, w, n);
    for (uint32_t b = 0; b < n; b += qk) {
        double amax = 0.0;
        for (uint32_t i = b; i < b + qk; i++)
            if (__builtin_fabs((double)x[i]) > amax) amax = __builtin_fabs((double)x[i]);
        for (uint32_t i = b; i < b + qk; i++) {
            ref += (double)x[i] * w[i];
            mag += __builtin_fabs((double)x[i] * w[i]);
            bound += 0.6 * amax / 127.0 * __builtin_fabs((double)w[i]);
        }
    }
    free(w);
    double err = __builtin_fabs((double)s - ref);
    return s == s && err <= bound + 1e-3 * mag + 1e-6;
}

static int write_dot(const char *dir, const struct vec_type *vt) {
    const uint32_t n = is_k_type(vt->type) ? 1024 : 256;
    const struct ggml_type_traits_cpu *tc = ggml_get_type_traits_cpu(vt->type);
    const enum ggml_type vdt = tc->vec_dot_type;
    const struct ggml_type_traits_cpu *tq = ggml_get_type_traits_cpu(vdt);
    const size_t wsize = ggml_row_size(vt->type, n);
    const size_t qsize = ggml_row_size(vdt, n);
    float *x = xcalloc(n, sizeof(float));
    float *w = xcalloc(n, sizeof(float));
    uint8_t *wq = xcalloc(wsize, 1);
    uint8_t *xq = xcalloc(qsize, 1);
    struct out o;

    int rc = out_open(&o, dir, "dot-", vt->name);
    if (rc == 0) {
        out_header(&o, "HKDT", (uint32_t)vt->type);
        out_u32(&o, n);
        out_u32(&o, DOT_CASES);
        for (int c = 0; c < DOT_CASES; c++) {
            dot_case_inputs(c, x, w, (int)n);
            /* zeroed first: Q8_K leaves bsums unwritten for an all-zero
             * block, and the file must not carry stale bytes */
            memset(wq, 0, wsize);
            memset(xq, 0, qsize);
            ggml_quantize_chunk(vt->type, w, wq, 0, 1, n, NULL);
            tq->from_float(x, xq, n);
            float s = __builtin_nanf("");
            tc->vec_dot((int)n, &s, 0, wq, 0, xq, 0, 1);
            if (!dot_plausible(vt->type, vdt, wq, x, n, s)) {
                fprintf(stderr,
                        "%s case %d: vec_dot %g is far from the "
                        "float dot product\n",
                        vt->name, c, (double)s);
                rc = -1;
            }
            out_bytes(&o, x, n * sizeof(float));
            out_bytes(&o, wq, wsize);
            out_bytes(&o, xq, qsize);
            out_bytes(&o, &s, sizeof(s));
        }
        if (out_close(&o) != 0) rc = -1;
    }
    free(x);
    free(w);
    free(wq);
    free(xq);
    return rc;
}

/* --------------------------------------------------------- quant-T ----- */

#define QUANT_ROWS 12

/* Row r of the quantization inputs (n values). */
static void quant_row_inputs(int r, float *x, int n) {
    switch (r) {
    case 0: /* all zeros */
        for (int i = 0; i < n; i++) x[i] = 0.0f;
        break;
    case 1: /* all equal */
        for (int i = 0; i < n; i++) x[i] = 0.375f;
        break;
    case 2: /* one large outlier among tiny values */
        for (int i = 0; i < n; i++) x[i] = rng_normal() * 1e-3f;
        x[n / 3] = 50.0f;
        break;
    case 3:
        /* Halves in [-8, 7.5] with -8 in every 32-block: Q4_0 gets d = 1
         * exactly, so x/d + 8.5 lands on the floor() boundaries, and the
         * K types' nearest_int() meets exact .5 ties. */
        for (int i = 0; i < n; i++) x[i] = (float)((int)rng_below(32) - 16) * 0.5f;
        for (int i = 0; i < n; i += 32) x[i] = -8.0f;
        break;
    case 4:
        /* Halves in [-127, 127] with 127 in every 32-block: Q8_0 gets
         * d = 1, so x*id meets roundf()'s .5 ties away from zero. */
        for (int i = 0; i < n; i++) x[i] = (float)((int)rng_below(509) - 254) * 0.5f;
        for (int i = 0; i < n; i += 32) x[i] = 127.0f;
        break;
    case 5: /* very small magnitudes */
        for (int i = 0; i < n; i++) x[i] = rng_normal() * 1e-8f;
        break;
    case 6: /* alternating sign, magnitudes 1..2 */
        for (int i = 0; i < n; i++) x[i] = (i & 1 ? -1.0f : 1.0f) * (1.0f + rng_uniform());
        break;
    case 7: /* all positive, offset: the mins of q4_1/q5_1/K types matter */
        for (int i = 0; i < n; i++) x[i] = 3.0f + rng_uniform();
        break;
    case 8: /* all negative */
        for (int i = 0; i < n; i++) x[i] = -0.5f - rng_uniform() * 0.25f;
        break;
    case 9: /* normal, with one 32-block zero and one 16-run constant */
        for (int i = 0; i < n; i++) x[i] = rng_normal();
        for (int i = 32; i < 64 && i < n; i++) x[i] = 0.0f;
        for (int i = 0; i < 16; i++) x[i] = -0.75f;
        break;
    default: /* ordinary weights */
        for (int i = 0; i < n; i++) x[i] = rng_normal() * 0.02f;
        break;
    }
}

static int write_quant(const char *dir, const struct vec_type *vt) {
    const uint32_t n_per_row = is_k_type(vt->type) ? 512 : 64;
    const uint32_t n_rows = QUANT_ROWS;
    const size_t n = (size_t)n_per_row * n_rows;
    const size_t qsize = ggml_row_size(vt->type, n_per_row) * n_rows;
    float *x = xcalloc(n, sizeof(float));
    float *imat = xcalloc(n_per_row, sizeof(float));
    uint8_t *q_plain = xcalloc(qsize, 1);
    uint8_t *q_imat = xcalloc(qsize, 1);
    struct out o;

    for (uint32_t r = 0; r < n_rows; r++) quant_row_inputs((int)r, x + (size_t)r * n_per_row, (int)n_per_row);
    /* importance: sums of squared activations in an imatrix, so positive
     * and spread over orders of magnitude; a few near zero */
    for (uint32_t i = 0; i < n_per_row; i++) {
        float g = rng_normal();
        imat[i] = g * g + 1e-3f;
    }
    imat[5] = 1e-6f;
    imat[n_per_row - 7] = 50.0f;

    ggml_quantize_init(vt->type);
    ggml_quantize_chunk(vt->type, x, q_plain, 0, n_rows, n_per_row, NULL);
    ggml_quantize_chunk(vt->type, x, q_imat, 0, n_rows, n_per_row, imat);

    int rc = out_open(&o, dir, "quant-", vt->name);
    if (rc == 0) {
        out_header(&o, "HKQQ", (uint32_t)vt->type);
        out_u32(&o, n_per_row);
        out_u32(&o, n_rows);
        out_bytes(&o, x, n * sizeof(float));
        out_bytes(&o, imat, n_per_row * sizeof(float));
        out_bytes(&o, q_plain, qsize);
        out_bytes(&o, q_imat, qsize);
        rc = out_close(&o);
    }
    free(x);
    free(imat);
    free(q_plain);
    free(q_imat);
    return rc;
}

/* ------------------------------------------------------------ q8k ------ */

/* Super-block b of the Q8_K inputs (256 values). */
static void q8k_block_inputs(int b, float *x) {
    for (int i = 0; i < 256; i++) x[i] = rng_normal();
    switch (b) {
    case 1: /* all zero: d = 0, qs = 0, bsums left unwritten by ggml */ memset(x, 0, 256 * sizeof(float)); break;
    case 2: /* largest magnitude negative */ x[77] = -9.0f; break;
    case 3: /* largest magnitude positive outlier */ x[200] = 60.0f; break;
    case 4: /* tiny */
        for (int i = 0; i < 256; i++) x[i] *= 1e-8f;
        break;
    case 5: /* halves with max 127: iscale = -1, exact .5 ties */
        for (int i = 0; i < 256; i++) x[i] = (float)((int)rng_below(509) - 254) * 0.5f;
        x[0] = 127.0f;
        break;
    case 6: /* all equal, negative */
        for (int i = 0; i < 256; i++) x[i] = -0.25f;
        break;
    default: break;
    }
}

static int write_q8k(const char *dir) {
    const uint32_t n = 2048;
    const size_t qsize = ggml_row_size(GGML_TYPE_Q8_K, n);
    float *x = xcalloc(n, sizeof(float));
    uint8_t *q = xcalloc(qsize, 1);
    struct out o;

    for (uint32_t b = 0; b < n / 256; b++) q8k_block_inputs((int)b, x + b * 256);
    ggml_get_type_traits_cpu(GGML_TYPE_Q8_K)->from_float(x, q, n);

    int rc = out_open(&o, dir, "", "q8k");
    if (rc == 0) {
        out_bytes(&o, "HKQ8", 4);
        out_u32(&o, VECTORS_VERSION);
        out_u32(&o, n);
        out_bytes(&o, x, n * sizeof(float));
        out_bytes(&o, q, qsize);
        rc = out_close(&o);
    }
    free(x);
    free(q);
    return rc;
}

/* ------------------------------------------------------------ main ----- */

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    int rc = 0;

    ggml_cpu_init();

    /* Every file draws from the one stream in this fixed order, so adding a
     * type at the end of vec_types leaves the earlier types' files as they
     * were (q8k.bin, written last, changes). */
    for (size_t t = 0; t < N_VEC_TYPES && rc == 0; t++) {
        const struct vec_type *vt = &vec_types[t];
        if (ggml_type_size(vt->type) != vt->block_bytes) {
            fprintf(stderr, "%s: block layout does not match\n", vt->name);
            return 1;
        }
        rc = write_dequant(dir, vt);
        if (rc == 0) rc = write_dot(dir, vt);
        if (rc == 0) rc = write_quant(dir, vt);
    }
    if (rc == 0) rc = write_q8k(dir);
    return rc == 0 ? 0 : 1;
}
