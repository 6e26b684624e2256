/* Scalar reference kernels for Q4_1, Q5_0, Q5_1 and the K-quants: the
 * definition their SIMD twins are tested against. Each weight block is
 * first unpacked to plain integers (quants, sub-block scales and mins) in
 * element order, then multiplied exactly in integers; one float rounding
 * per block. Built with -ffp-contract=off like the other _ref kernels. */
#include "kernels/kquants.h"

#include <math.h>
#include <string.h>

#include "base/assert.h"

/* ------------------------------------------------------------ Q8_K activations */

void herd_quantize_row_q8k_ref(const float *x, struct herd_block_q8_k *y, size_t n) {
    HERD_ASSERT(n % HERD_QK_K == 0);
    for (size_t b = 0; b < n / HERD_QK_K; b++, x += HERD_QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < HERD_QK_K; j++) {
            if (fabsf(x[j]) > amax) { /* strict: the first of equal magnitudes wins */
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        memset(&y[b], 0, sizeof y[b]);
        if (amax == 0.0f) continue;
        /* the scale maps the extreme value to -127 exactly, so a positive
         * maximum gives +127 and a negative one -127 (ggml's choice) */
        const float iscale = -127.0f / max;
        for (int j = 0; j < HERD_QK_K; j++) {
            const long v = lrintf(iscale * x[j]);
            y[b].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < HERD_QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += y[b].qs[16 * g + j];
            y[b].bsums[g] = (int16_t)sum;
        }
        y[b].d = 1.0f / iscale;
    }
}

/* ------------------------------------------------------------ legacy 32-value types with Q8A */

/* Unpacks a Q5 block's 32 quants (0..31) in element order. */
static void unpack_q5(const uint8_t qh[4], const uint8_t qs[16], int q[32]) {
    const uint32_t h = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 0x0f) | (int)((h >> j) & 1u) << 4;
        q[j + 16] = (qs[j] >> 4) | (int)((h >> (j + 16)) & 1u) << 4;
    }
}

static int32_t idot32(const int q[32], const int8_t *x) {
    int32_t s = 0;
    for (int j = 0; j < 32; j++) s += q[j] * x[j];
    return s;
}

float herd_dot_q4_1_q8a_ref(const void *w, const struct herd_block_q8a *x, size_t n) {
    const struct herd_block_q4_1 *b = w;
    float sum = 0.0f;
    for (size_t i = 0; i < n / 32; i++) {
        int q[32];
        for (int j = 0; j < 16; j++) q[j] = b[i].qs[j] & 0x0f, q[j + 16] = b[i].qs[j] >> 4;
        const float dx = x[i].d;
        sum += herd_fp16_to_fp32(b[i].d) * dx * (float)idot32(q, x[i].qs) +
               herd_fp16_to_fp32(b[i].m) * dx * (float)herd_q8a_sum(&x[i]);
    }
    return sum;
}

float herd_dot_q5_0_q8a_ref(const void *w, const struct herd_block_q8a *x, size_t n) {
    const struct herd_block_q5_0 *b = w;
    float sum = 0.0f;
    for (size_t i = 0; i < n / 32; i++) {
        int q[32];
        unpack_q5(b[i].qh, b[i].qs, q);
        for (int j = 0; j < 32; j++) q[j] -= 16;
        sum += herd_fp16_to_fp32(b[i].d) * x[i].d * (float)idot32(q, x[i].qs);
    }
    return sum;
}

float herd_dot_q5_1_q8a_ref(const void *w, const struct herd_block_q8a *x, size_t n) {
    const struct herd_block_q5_1 *b = w;
    float sum = 0.0f;
    for (size_t i = 0; i < n / 32; i++) {
        int q[32];
        unpack_q5(b[i].qh, b[i].qs, q);
        const float dx = x[i].d;
        sum += herd_fp16_to_fp32(b[i].d) * dx * (float)idot32(q, x[i].qs) +
               herd_fp16_to_fp32(b[i].m) * dx * (float)herd_q8a_sum(&x[i]);
    }
    return sum;
}

float herd_dot_iq4_nl_q8a_ref(const void *w, const struct herd_block_q8a *x, size_t n) {
    const struct herd_block_iq4_nl *b = w;
    float sum = 0.0f;
    for (size_t i = 0; i < n / 32; i++) {
        int q[32];
        for (int j = 0; j < 16; j++)
            q[j] = herd_iq4nl_values[b[i].qs[j] & 0x0f], q[j + 16] = herd_iq4nl_values[b[i].qs[j] >> 4];
        sum += herd_fp16_to_fp32(b[i].d) * x[i].d * (float)idot32(q, x[i].qs);
    }
    return sum;
}

/* ------------------------------------------------------------ K-quants with Q8_K */

/* A super-block unpacked: q[256] in element order and, per sub-block of
 * `sub` values, an integer scale and min (value = d * scale * q - dmin *
 * min, or d * scale * q for the types without mins, whose q is signed). */
struct unpacked {
    int q[HERD_QK_K];
    int scale[16], min[16];
    int sub; /* values per sub-block: 16 or 32 */
    float d, dmin;
};

static void unpack_q2_k(const struct herd_block_q2_k *b, struct unpacked *u) {
    u->sub = 16;
    u->d = herd_fp16_to_fp32(b->d);
    u->dmin = herd_fp16_to_fp32(b->dmin);
    for (int e = 0; e < HERD_QK_K; e++) {
        const int h = e / 128, s = e % 128 / 32, kl = e % 32; /* kl = 16k + l */
        u->q[e] = (b->qs[32 * h + kl] >> (2 * s)) & 3;
    }
    for (int j = 0; j < 16; j++) u->scale[j] = b->scales[j] & 0xf, u->min[j] = b->scales[j] >> 4;
}

static void unpack_q3_k(const struct herd_block_q3_k *b, struct unpacked *u) {
    u->sub = 16;
    u->d = herd_fp16_to_fp32(b->d);
    u->dmin = 0.0f;
    for (int e = 0; e < HERD_QK_K; e++) {
        const int h = e / 128, s = e % 128 / 32, kl = e % 32;
        const int lo = (b->qs[32 * h + kl] >> (2 * s)) & 3;
        u->q[e] = lo - ((b->hmask[kl] >> (4 * h + s)) & 1 ? 0 : 4);
    }
    uint8_t sc[16];
    herd_q3_k_scales(b->scales, sc);
    for (int j = 0; j < 16; j++) u->scale[j] = sc[j] - 32, u->min[j] = 0;
}

static void unpack_q45_k(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, struct unpacked *u) {
    u->sub = 32;
    for (int e = 0; e < HERD_QK_K; e++) {
        const int p = e / 64, k = e % 64 / 32, l = e % 32;
        u->q[e] = (qs[32 * p + l] >> (4 * k)) & 0xf;
        if (qh) u->q[e] |= ((qh[l] >> (2 * p + k)) & 1) << 4;
    }
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        herd_kquant_scale_min(j, scales, &sc, &m);
        u->scale[j] = sc, u->min[j] = m;
    }
}

static void unpack_q6_k(const struct herd_block_q6_k *b, struct unpacked *u) {
    u->sub = 16;
    u->d = herd_fp16_to_fp32(b->d);
    u->dmin = 0.0f;
    for (int e = 0; e < HERD_QK_K; e++) {
        const int h = e / 128, s = e % 128 / 32, l = e % 32;
        const int lo = (b->ql[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 0xf;
        const int hi = (b->qh[32 * h + l] >> (2 * s)) & 3;
        u->q[e] = (lo | hi << 4) - 32;
    }
    for (int j = 0; j < 16; j++) u->scale[j] = b->scales[j], u->min[j] = 0;
}

/* One super-block's contribution: d_x x (d x sum_j scale_j x <q, x>_j -
 * dmin x sum_j min_j x (sum of x over sub-block j)), the sub-block sums of x
 * taken from bsums as the SIMD kernels do. */
static float superblock_dot(const struct unpacked *u, const struct herd_block_q8_k *x) {
    int32_t isum = 0, msum = 0;
    for (int j = 0; j < HERD_QK_K / u->sub; j++) {
        int32_t s = 0;
        for (int l = 0; l < u->sub; l++) s += u->q[j * u->sub + l] * x->qs[j * u->sub + l];
        isum += u->scale[j] * s;
        int32_t xs = 0;
        for (int g = j * u->sub / 16; g < (j + 1) * u->sub / 16; g++) xs += x->bsums[g];
        msum += u->min[j] * xs;
    }
    return u->d * x->d * (float)isum - u->dmin * x->d * (float)msum;
}

float herd_dot_q2_k_q8k_ref(const void *w, const struct herd_block_q8_k *x, size_t n) {
    const struct herd_block_q2_k *b = w;
    float sum = 0.0f;
    struct unpacked u;
    for (size_t i = 0; i < n / HERD_QK_K; i++) {
        unpack_q2_k(&b[i], &u);
        sum += superblock_dot(&u, &x[i]);
    }
    return sum;
}

float herd_dot_q3_k_q8k_ref(const void *w, const struct herd_block_q8_k *x, size_t n) {
    const struct herd_block_q3_k *b = w;
    float sum = 0.0f;
    struct unpacked u;
    for (size_t i = 0; i < n / HERD_QK_K; i++) {
        unpack_q3_k(&b[i], &u);
        sum += superblock_dot(&u, &x[i]);
    }
    return sum;
}

float herd_dot_q4_k_q8k_ref(const void *w, const struct herd_block_q8_k *x, size_t n) {
    const struct herd_block_q4_k *b = w;
    float sum = 0.0f;
    struct unpacked u;
    for (size_t i = 0; i < n / HERD_QK_K; i++) {
        unpack_q45_k(b[i].scales, b[i].qs, NULL, &u);
        u.d = herd_fp16_to_fp32(b[i].d);
        u.dmin = herd_fp16_to_fp32(b[i].dmin);
        sum += superblock_dot(&u, &x[i]);
    }
    return sum;
}

float herd_dot_q5_k_q8k_ref(const void *w, const struct herd_block_q8_k *x, size_t n) {
    const struct herd_block_q5_k *b = w;
    float sum = 0.0f;
    struct unpacked u;
    for (size_t i = 0; i < n / HERD_QK_K; i++) {
        unpack_q45_k(b[i].scales, b[i].qs, b[i].qh, &u);
        u.d = herd_fp16_to_fp32(b[i].d);
        u.dmin = herd_fp16_to_fp32(b[i].dmin);
        sum += superblock_dot(&u, &x[i]);
    }
    return sum;
}

float herd_dot_q6_k_q8k_ref(const void *w, const struct herd_block_q8_k *x, size_t n) {
    const struct herd_block_q6_k *b = w;
    float sum = 0.0f;
    struct unpacked u;
    for (size_t i = 0; i < n / HERD_QK_K; i++) {
        unpack_q6_k(&b[i], &u);
        sum += superblock_dot(&u, &x[i]);
    }
    return sum;
}
