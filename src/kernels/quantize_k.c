/* Row quantizers that write what ggml_quantize_chunk writes, byte for byte
 * (see quantize_k.h). Each search below is ggml's: the same candidate
 * scales in the same order, the same error measures, the same tie rules,
 * and every float expression evaluated in ggml's order with each step
 * rounded to f32. Built with -ffp-contract=off: a fused multiply-add
 * rounds once where ggml rounds twice, and moves values that sit on a
 * rounding boundary into the neighbouring quant. Small integers (scales,
 * quants) are stored through the same narrowing casts ggml's C uses, so a
 * value out of range wraps the way it wraps there. */
#include "kernels/quantize_k.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "base/assert.h"

/* Below this largest magnitude a group counts as all zero (ggml's GROUP_MAX_EPS). */
#define GROUP_MAX_EPS 1e-15f

static inline int min_i(int a, int b) { return a < b ? a : b; }
static inline int max_i(int a, int b) { return a > b ? a : b; }

/* round(v) with ties to even, for |v| < 2^22: adding 1.5 x 2^23 pushes the
 * fraction out of the mantissa (the FPU rounds to even there), leaving
 * round(v) + 2^22 in the low 23 bits. ggml's nearest_int; larger |v| gives
 * the same wrong answer ggml gives. */
static inline int nearest_int(float v) {
    const float biased = v + 12582912.0f;
    int32_t bits;
    memcpy(&bits, &biased, sizeof bits);
    return (bits & 0x007fffff) - 0x00400000;
}

static inline float fp16_round(uint16_t h) { return herd_fp16_to_fp32(h); }

/* ------------------------------------------------------------ scale searches */

/* Symmetric quants L[i] in [0, 2 nmax) for x[i] ~ scale * (L[i] - nmax):
 * start from the scale that maps the largest magnitude to -nmax, then try
 * 18 nearby scales, keeping the one with the least weighted squared error
 * (weights qw, or x^2 for rmse_type 1). Returns the scale (ggml's
 * make_qx_quants; herd uses rmse_type 1 only, as every caller in ggml's
 * K-quant and legacy quantizers does). */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L, const float *qw) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = max_i(-nmax, min_i(nmax - 1, nearest_int(iscale * x[i])));
        L[i] = (int8_t)(l + nmax);
        const float w = qw ? qw[i] : x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            const int l = max_i(-nmax, min_i(nmax - 1, nearest_int(iscale * x[i])));
            const float w = qw ? qw[i] : x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + max_i(-nmax, min_i(nmax - 1, nearest_int(iscale * x[i]))));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q3_K's plain search (ggml's make_q3_quants with do_rmse): quants from the
 * largest magnitude, then up to 5 passes that move single quants to their
 * least-squares value while that lowers the x^2-weighted error. L[i] ends
 * in [0, 2 nmax). */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    const float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = max_i(-nmax, min_i(nmax - 1, nearest_int(iscale * x[i])));
        L[i] = (int8_t)l;
        const float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * (float)L[i] * (float)L[i];
                const int new_l = max_i(-nmax, min_i(nmax - 1, nearest_int(x[i] * sl2 / slx)));
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return sumlx / suml2;
}

/* Asymmetric quants L[i] in [0, nmax] for x[i] ~ scale * L[i] - the_min
 * (the_min >= 0): start from the full range [min(x, 0), max(x)], then try
 * nstep + 1 scales (nmax + rmin + rdelta * is) / range, each refined by a
 * weighted least-squares fit of scale and min, keeping the least weighted
 * error (absolute with use_mad, squared otherwise). ggml has two copies,
 * make_qkx2_quants and make_qkx3_quants; with weights given (every caller
 * gives them) they differ only in the all-equal test (max == min against
 * max <= min), which after min is clamped to <= 0 are the same test. */
static float make_qkx_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                             uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_mad = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)max_i(0, min_i(nmax, nearest_int(iscale * (x[i] - min))));
        float diff = scale * (float)L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_mad += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            const int l = max_i(0, min_i(nmax, nearest_int(iscale * (x[i] - min))));
            Laux[i] = (uint8_t)l;
            const float w = weights[i];
            sum_l += w * (float)l;
            sum_l2 += w * (float)l * (float)l;
            sum_xl += w * (float)l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float mad = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                mad += weights[i] * diff;
            }
            if (mad < best_mad) {
                memcpy(L, Laux, (size_t)n);
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Quantizes non-negative values (sub-block scales or mins) to L[i] in
 * [0, nmax] with one scale, minimising the qw-weighted squared error: 9
 * candidate scales, then up to 5 passes of single-quant moves (ggml's
 * make_qp_quants). The first guess is stored unclamped through uint8_t, as
 * ggml does; the later passes clamp. */
static float make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *qw) {
    float max = 0;
    for (int i = 0; i < n; i++) max = max > x[i] ? max : x[i];
    if (max == 0.0f) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = (float)nmax / max;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)nearest_int(iscale * x[i]);
    const float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; i++) {
        const float diff = x[i] - scale * (float)L[i];
        best_mse += qw[i] * diff * diff;
    }
    for (int is = -4; is <= 4; is++) {
        if (is == 0) continue;
        const float iscale_is = (0.1f * (float)is + (float)nmax) / max;
        const float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; i++) {
            const int l = min_i(nmax, nearest_int(iscale_is * x[i]));
            const float diff = x[i] - scale_is * (float)l;
            mse += qw[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = min_i(nmax, nearest_int(iscale * x[i]));
        L[i] = (uint8_t)l;
        const float w = qw[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = qw[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            float sl2 = suml2 - w * (float)L[i] * (float)L[i];
            if (slx > 0 && sl2 > 0) {
                const int new_l = min_i(nmax, nearest_int(x[i] * sl2 / slx));
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    return sumlx / suml2;
}

/* ------------------------------------------------------------ legacy 32-value blocks */

/* Packs 32 quants into 16 bytes (element j low nibble, j + 16 high nibble)
 * and, for 5-bit types, their fifth bits into qh. */
static void pack_nibbles(const uint8_t *L, uint8_t *qs, uint8_t *qh) {
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((L[j] & 0x0f) | ((L[j + 16] & 0x0f) << 4));
        h |= (uint32_t)((L[j] & 0x10u) >> 4) << j;
        h |= (uint32_t)((L[j + 16] & 0x10u) >> 4) << (j + 16);
    }
    if (qh) {
        qh[0] = (uint8_t)h;
        qh[1] = (uint8_t)(h >> 8);
        qh[2] = (uint8_t)(h >> 16);
        qh[3] = (uint8_t)(h >> 24);
    }
}

/* sigma2 of the legacy importance-weighted quantizers: the mean square of
 * the whole row, summed in order. */
static float row_sigma2(const float *x, size_t n) {
    float sum_x2 = 0;
    for (size_t j = 0; j < n; j++) sum_x2 += x[j] * x[j];
    return sum_x2 / (float)n;
}

/* weight[j] = qw[j] * sqrt(sigma2 + x[j]^2): the importance of a column
 * times the magnitude scale of the value (ggml's weighting in every _impl). */
static void importance(const float *x, const float *qw, float sigma2, float *weight, int n) {
    for (int j = 0; j < n; j++) weight[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
}

void herd_quantize_row_q4_0(const float *x, void *vy, size_t n, const float *qw) {
    HERD_ASSERT(n % 32 == 0);
    struct herd_block_q4_0 *y = vy;
    if (!qw) {
        for (size_t b = 0; b < n / 32; b++) {
            const float *xb = x + 32 * b;
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++) {
                if (amax < fabsf(xb[j])) { /* strict: the first of equal magnitudes wins */
                    amax = fabsf(xb[j]);
                    max = xb[j];
                }
            }
            const float d = max / -8;
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            y[b].d = herd_fp32_to_fp16(d);
            uint8_t L[32];
            for (int j = 0; j < 32; j++) L[j] = (uint8_t)min_i(15, (int8_t)(xb[j] * id + 8.5f));
            pack_nibbles(L, y[b].qs, NULL);
        }
        return;
    }
    const float sigma2 = row_sigma2(x, n);
    float weight[32];
    int8_t L[32];
    for (size_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        importance(xb, qw + 32 * b, sigma2, weight, 32);
        const float d = make_qx_quants(32, 8, xb, L, weight);
        y[b].d = herd_fp32_to_fp16(d);
        pack_nibbles((const uint8_t *)L, y[b].qs, NULL);
    }
}

void herd_quantize_row_q4_1(const float *x, void *vy, size_t n, const float *qw) {
    HERD_ASSERT(n % 32 == 0);
    struct herd_block_q4_1 *y = vy;
    if (!qw) {
        for (size_t b = 0; b < n / 32; b++) {
            const float *xb = x + 32 * b;
            float min = FLT_MAX, max = -FLT_MAX;
            for (int j = 0; j < 32; j++) {
                if (xb[j] < min) min = xb[j];
                if (xb[j] > max) max = xb[j];
            }
            const float d = (max - min) / 15;
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            y[b].d = herd_fp32_to_fp16(d);
            y[b].m = herd_fp32_to_fp16(min);
            uint8_t L[32];
            for (int j = 0; j < 32; j++) L[j] = (uint8_t)min_i(15, (int8_t)((xb[j] - min) * id + 0.5f));
            pack_nibbles(L, y[b].qs, NULL);
        }
        return;
    }
    const float sigma2 = row_sigma2(x, n);
    float weight[32];
    uint8_t L[32], Laux[32];
    for (size_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        importance(xb, qw + 32 * b, sigma2, weight, 32);
        float min;
        const float d = make_qkx_quants(32, 15, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
        y[b].d = herd_fp32_to_fp16(d);
        y[b].m = herd_fp32_to_fp16(-min);
        pack_nibbles(L, y[b].qs, NULL);
    }
}

void herd_quantize_row_q5_0(const float *x, void *vy, size_t n, const float *qw) {
    HERD_ASSERT(n % 32 == 0);
    struct herd_block_q5_0 *y = vy;
    if (!qw) {
        for (size_t b = 0; b < n / 32; b++) {
            const float *xb = x + 32 * b;
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++) {
                if (amax < fabsf(xb[j])) {
                    amax = fabsf(xb[j]);
                    max = xb[j];
                }
            }
            const float d = max / -16;
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            y[b].d = herd_fp32_to_fp16(d);
            uint8_t L[32];
            for (int j = 0; j < 32; j++) L[j] = (uint8_t)min_i(31, (int8_t)(xb[j] * id + 16.5f));
            pack_nibbles(L, y[b].qs, y[b].qh);
        }
        return;
    }
    const float sigma2 = row_sigma2(x, n);
    float weight[32];
    int8_t L[32];
    for (size_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        importance(xb, qw + 32 * b, sigma2, weight, 32);
        const float d = make_qx_quants(32, 16, xb, L, weight);
        y[b].d = herd_fp32_to_fp16(d);
        pack_nibbles((const uint8_t *)L, y[b].qs, y[b].qh);
    }
}

void herd_quantize_row_q5_1(const float *x, void *vy, size_t n, const float *qw) {
    HERD_ASSERT(n % 32 == 0);
    struct herd_block_q5_1 *y = vy;
    if (!qw) {
        for (size_t b = 0; b < n / 32; b++) {
            const float *xb = x + 32 * b;
            float min = FLT_MAX, max = -FLT_MAX;
            for (int j = 0; j < 32; j++) {
                if (xb[j] < min) min = xb[j];
                if (xb[j] > max) max = xb[j];
            }
            const float d = (max - min) / 31;
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            y[b].d = herd_fp32_to_fp16(d);
            y[b].m = herd_fp32_to_fp16(min);
            uint8_t L[32];
            for (int j = 0; j < 32; j++) L[j] = (uint8_t)((xb[j] - min) * id + 0.5f); /* ggml does not clamp here */
            pack_nibbles(L, y[b].qs, y[b].qh);
        }
        return;
    }
    const float sigma2 = row_sigma2(x, n);
    float weight[32];
    uint8_t L[32], Laux[32];
    for (size_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        importance(xb, qw + 32 * b, sigma2, weight, 32);
        float min;
        const float d = make_qkx_quants(32, 31, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
        y[b].d = herd_fp32_to_fp16(d);
        y[b].m = herd_fp32_to_fp16(-min);
        pack_nibbles(L, y[b].qs, y[b].qh);
    }
}

void herd_quantize_row_q8_0(const float *x, void *vy, size_t n, const float *qw) {
    (void)qw; /* ggml's quantize_q8_0 ignores the importance matrix */
    HERD_ASSERT(n % 32 == 0);
    struct herd_block_q8_0 *y = vy;
    for (size_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = amax > fabsf(xb[j]) ? amax : fabsf(xb[j]); /* ggml's MAX */
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = herd_fp32_to_fp16(d);
        for (int j = 0; j < 32; j++) y[b].qs[j] = (int8_t)roundf(xb[j] * id);
    }
}

/* The grid value nearest to v, ties to the upper one (ggml's best_index_int8
 * over the 16 ascending IQ4_NL values). */
static int iq4nl_index(float v) {
    const int8_t *val = herd_iq4nl_values;
    if (v <= val[0]) return 0;
    if (v >= val[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (v < val[mid])
            hi = mid;
        else
            lo = mid;
    }
    return v - val[hi - 1] < val[hi] - v ? hi - 1 : hi;
}

/* One IQ4_NL block (ggml's quantize_row_iq4_nl_impl with a super-block of
 * one 32-value block and 7 tries, as quantize_iq4_nl calls it with and
 * without an importance matrix): the best scale of 16 candidates around
 * max / -127, least squares weighted by x^2 or the importance. L is the
 * caller's and keeps its contents across blocks, as ggml's does. */
static void iq4_nl_block(const float *x, struct herd_block_iq4_nl *y, const float *qw, uint8_t *L) {
    const int ntry = 7;
    float sigma2 = 0;
    for (int j = 0; j < 32; j++) sigma2 += x[j] * x[j];
    sigma2 *= 2.f / 32;
    float weight[32];
    if (qw)
        importance(x, qw, sigma2, weight, 32);
    else
        for (int j = 0; j < 32; j++) weight[j] = x[j] * x[j];
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++) {
        const float ax = fabsf(x[j]);
        if (ax > amax) {
            amax = ax;
            max = x[j];
        }
    }
    float scale = 0;
    if (amax >= GROUP_MAX_EPS) {
        float d = -max / (float)herd_iq4nl_values[0];
        float id = 1 / d;
        float sumqx = 0, sumq2 = 0;
        for (int j = 0; j < 32; j++) {
            const int l = iq4nl_index(id * x[j]);
            L[j] = (uint8_t)l;
            const float q = herd_iq4nl_values[l];
            sumqx += weight[j] * q * x[j];
            sumq2 += weight[j] * q * q;
        }
        d = sumqx / sumq2;
        float best = d * sumqx;
        for (int itry = -ntry; itry <= ntry; itry++) {
            id = (float)(itry + herd_iq4nl_values[0]) / max;
            sumqx = sumq2 = 0;
            for (int j = 0; j < 32; j++) {
                const float q = herd_iq4nl_values[iq4nl_index(id * x[j])];
                sumqx += weight[j] * q * x[j];
                sumq2 += weight[j] * q * q;
            }
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scale = d;
    }
    y->d = herd_fp32_to_fp16(scale);
    const float id = scale != 0.0f ? 1 / scale : 0;
    for (int j = 0; j < 32; j++) L[j] = (uint8_t)iq4nl_index(id * x[j]);
    for (int j = 0; j < 16; j++) y->qs[j] = (uint8_t)(L[j] | (L[16 + j] << 4));
}

void herd_quantize_row_iq4_nl(const float *x, void *vy, size_t n, const float *qw) {
    HERD_ASSERT(n % 32 == 0);
    struct herd_block_iq4_nl *y = vy;
    uint8_t L[32] = {0};
    for (size_t b = 0; b < n / 32; b++) iq4_nl_block(x + 32 * b, &y[b], qw ? qw + 32 * b : NULL, L);
}

/* ------------------------------------------------------------ K-quants */

/* 256 2-bit quants into qs[64] (Q2_K and Q3_K's low bits): element
 * 128h + 32s + l goes to bits 2s of qs[32h + l]. */
static void pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < HERD_QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/* Requantizes each 16-value sub-block of a Q2_K super-block with its
 * stored (fp16-rounded) scale and min. Sub-blocks with scale 0 keep the
 * quants of the search. */
static void q2_k_requantize(const float *x, const struct herd_block_q2_k *y, uint8_t *L) {
    const float dall = fp16_round(y->d), mall = fp16_round(y->dmin);
    for (int j = 0; j < 16; j++) {
        const float d = dall * (float)(y->scales[j] & 0xF);
        if (d == 0.0f) continue;
        const float m = mall * (float)(y->scales[j] >> 4);
        for (int ii = 0; ii < 16; ii++)
            L[16 * j + ii] = (uint8_t)max_i(0, min_i(3, nearest_int((x[16 * j + ii] + m) / d)));
    }
}

static void q2_k_block_plain(const float *x, struct herd_block_q2_k *y) {
    uint8_t L[HERD_QK_K], Laux[16];
    float weights[16], mins[16], scales[16];
    const float q4scale = 15.f;
    float max_scale = 0, max_min = 0; /* the min is subtracted: scales are never negative */
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++) weights[l] = fabsf(x[16 * j + l]);
        scales[j] = make_qkx_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
        const float iscale = q4scale / max_scale;
        for (int j = 0; j < 16; j++) y->scales[j] = (uint8_t)nearest_int(iscale * scales[j]);
        y->d = herd_fp32_to_fp16(max_scale / q4scale);
    } else {
        memset(y->scales, 0, sizeof y->scales);
        y->d = herd_fp32_to_fp16(0.f);
    }
    if (max_min > 0) {
        const float iscale = q4scale / max_min;
        for (int j = 0; j < 16; j++)
            y->scales[j] = (uint8_t)(y->scales[j] | ((unsigned)nearest_int(iscale * mins[j]) << 4));
        y->dmin = herd_fp32_to_fp16(max_min / q4scale);
    } else {
        y->dmin = herd_fp32_to_fp16(0.f);
    }
    q2_k_requantize(x, y, L);
    pack_2bit(L, y->qs);
}

static void q2_k_block_imatrix(const float *x, struct herd_block_q2_k *y, const float *qw) {
    uint8_t L[HERD_QK_K], Laux[16], Ls[16], Lm[16];
    float mins[16], scales[16], sw[16], weight[16];
    float sumx2 = 0;
    for (int j = 0; j < HERD_QK_K; j++) sumx2 += x[j] * x[j];
    const float sigma2 = sumx2 / HERD_QK_K;
    for (int j = 0; j < 16; j++) {
        importance(x + 16 * j, qw + 16 * j, sigma2, weight, 16);
        sw[j] = 0;
        for (int l = 0; l < 16; l++) sw[j] += weight[l];
        scales[j] = make_qkx_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
    }
    const float dm = make_qp_quants(16, 15, scales, Ls, sw);
    const float mm = make_qp_quants(16, 15, mins, Lm, sw);
    y->d = herd_fp32_to_fp16(dm);
    y->dmin = herd_fp32_to_fp16(mm);
    for (int j = 0; j < 16; j++) y->scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
    q2_k_requantize(x, y, L);
    pack_2bit(L, y->qs);
}

void herd_quantize_row_q2_k(const float *x, void *vy, size_t n, const float *qw) {
    HERD_ASSERT(n % HERD_QK_K == 0);
    struct herd_block_q2_k *y = vy;
    for (size_t b = 0; b < n / HERD_QK_K; b++) {
        if (qw)
            q2_k_block_imatrix(x + HERD_QK_K * b, &y[b], qw + HERD_QK_K * b);
        else
            q2_k_block_plain(x + HERD_QK_K * b, &y[b]);
    }
}

/* Stores Q3_K's 16 biased 6-bit scales l[j] in scales[12] (quant.h). */
static void q3_k_pack_scales(const int *l, uint8_t *scales) {
    memset(scales, 0, 12);
    for (int j = 0; j < 16; j++) {
        const int v = l[j];
        if (j < 8)
            scales[j] = (uint8_t)(v & 0xF);
        else
            scales[j - 8] = (uint8_t)(scales[j - 8] | ((v & 0xF) << 4));
        scales[j % 4 + 8] = (uint8_t)(scales[j % 4 + 8] | ((v >> 4) << (2 * (j / 4))));
    }
}

/* Requantizes with the stored scales, then splits each quant into its low
 * two bits (qs) and the inverted third bit (hmask). */
static void q3_k_finish(const float *x, struct herd_block_q3_k *y, int8_t *L) {
    uint8_t sc[16];
    herd_q3_k_scales(y->scales, sc);
    const float dall = fp16_round(y->d);
    for (int j = 0; j < 16; j++) {
        const float d = dall * (float)(int8_t)(sc[j] - 32);
        if (d == 0.0f) continue;
        for (int ii = 0; ii < 16; ii++)
            L[16 * j + ii] = (int8_t)(max_i(-4, min_i(3, nearest_int(x[16 * j + ii] / d))) + 4);
    }
    memset(y->hmask, 0, sizeof y->hmask);
    /* the high bit of elements 0..31 goes to bit 0 of hmask[0..31], 32..63 to bit 1, ... */
    int m = 0;
    uint8_t hm = 1;
    for (int j = 0; j < HERD_QK_K; j++) {
        if (L[j] > 3) {
            y->hmask[m] |= hm;
            L[j] = (int8_t)(L[j] - 4);
        }
        if (++m == HERD_QK_K / 8) {
            m = 0;
            hm = (uint8_t)(hm << 1);
        }
    }
    pack_2bit((const uint8_t *)L, y->qs);
}

static void q3_k_block_plain(const float *x, struct herd_block_q3_k *y) {
    int8_t L[HERD_QK_K];
    float scales[16];
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; j++) {
        scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
        const float scale = fabsf(scales[j]);
        if (scale > amax) {
            amax = scale;
            max_scale = scales[j];
        }
    }
    if (max_scale != 0.0f) {
        const float iscale = -32.f / max_scale;
        int l[16];
        for (int j = 0; j < 16; j++) {
            const int8_t q = (int8_t)nearest_int(iscale * scales[j]); /* ggml narrows before clamping */
            l[j] = max_i(-32, min_i(31, q)) + 32;
        }
        q3_k_pack_scales(l, y->scales);
        y->d = herd_fp32_to_fp16(1 / iscale);
    } else {
        memset(y->scales, 0, sizeof y->scales);
        y->d = herd_fp32_to_fp16(0.f);
    }
    q3_k_finish(x, y, L);
}

static void q3_k_block_imatrix(const float *x, struct herd_block_q3_k *y, const float *qw) {
    int8_t L[HERD_QK_K], Ls[16];
    float scales[16], weight[16], sw[16];
    float sumx2 = 0;
    for (int j = 0; j < HERD_QK_K; j++) sumx2 += x[j] * x[j];
    const float sigma2 = 2 * sumx2 / HERD_QK_K;
    for (int j = 0; j < 16; j++) {
        importance(x + 16 * j, qw + 16 * j, sigma2, weight, 16);
        float sumw = 0;
        for (int l = 0; l < 16; l++) sumw += weight[l];
        sw[j] = sumw;
        scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
    }
    const float d_block = make_qx_quants(16, 32, scales, Ls, sw);
    int l[16];
    for (int j = 0; j < 16; j++) l[j] = Ls[j];
    q3_k_pack_scales(l, y->scales);
    y->d = herd_fp32_to_fp16(d_block);
    q3_k_finish(x, y, L);
}

void herd_quantize_row_q3_k(const float *x, void *vy, size_t n, const float *qw) {
    HERD_ASSERT(n % HERD_QK_K == 0);
    struct herd_block_q3_k *y = vy;
    for (size_t b = 0; b < n / HERD_QK_K; b++) {
        if (qw)
            q3_k_block_imatrix(x + HERD_QK_K * b, &y[b], qw + HERD_QK_K * b);
        else
            q3_k_block_plain(x + HERD_QK_K * b, &y[b]);
    }
}

/* Q4_K and Q5_K's 8 6-bit scales and mins into scales[12] (quant.h's
 * herd_kquant_scale_min is the inverse). */
static void k4_pack_scales(const uint8_t *ls, const uint8_t *lm, uint8_t *scales) {
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            scales[j] = ls[j];
            scales[j + 4] = lm[j];
        } else {
            scales[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            scales[j - 4] = (uint8_t)(scales[j - 4] | ((ls[j] >> 4) << 6));
            scales[j] = (uint8_t)(scales[j] | ((lm[j] >> 4) << 6));
        }
    }
}

/* Requantizes 8 sub-blocks of 32 to [0, nmax] with the stored scales. */
static void k4_requantize(const float *x, uint16_t d16, uint16_t dmin16, const uint8_t *scales, int nmax, uint8_t *L) {
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        herd_kquant_scale_min(j, scales, &sc, &m);
        const float d = fp16_round(d16) * (float)sc;
        if (d == 0.0f) continue;
        const float dm = fp16_round(dmin16) * (float)m;
        for (int ii = 0; ii < 32; ii++)
            L[32 * j + ii] = (uint8_t)max_i(0, min_i(nmax, nearest_int((x[32 * j + ii] + dm) / d)));
    }
}

/* The plain search of Q4_K and Q5_K: each sub-block's scale and min with
 * weights av_x + |x|, then both quantized to 6 bits against their maxima. */
static void k4_scales_plain(const float *x, int nmax, float rmin, float rdelta, int nstep, uint8_t *L,
                            uint8_t *scales_out, uint16_t *d, uint16_t *dmin) {
    uint8_t Laux[32], ls[8], lm[8];
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] =
            make_qkx_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, rdelta, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; j++) {
        ls[j] = (uint8_t)min_i(63, (uint8_t)nearest_int(inv_scale * scales[j]));
        lm[j] = (uint8_t)min_i(63, (uint8_t)nearest_int(inv_min * mins[j]));
    }
    k4_pack_scales(ls, lm, scales_out);
    *d = herd_fp32_to_fp16(max_scale / 63.f);
    *dmin = herd_fp32_to_fp16(max_min / 63.f);
}

/* The importance-weighted search of Q4_K and Q5_K: sub-block scales and
 * mins from the weighted fit, then both quantized by make_qp_quants
 * weighted by each sub-block's total weight. clamp: Q5_K caps the 6-bit
 * values at 63 where Q4_K stores them as they come. */
static void k4_scales_imatrix(const float *x, const float *qw, int nmax, bool clamp, uint8_t *L, uint8_t *scales_out,
                              uint16_t *d, uint16_t *dmin) {
    uint8_t Laux[32], Ls[8], Lm[8];
    float weights[32], sw[8], mins[8], scales[8];
    float sum_x2 = 0;
    for (int l = 0; l < HERD_QK_K; l++) sum_x2 += x[l] * x[l];
    const float sigma2 = 2 * sum_x2 / HERD_QK_K;
    for (int j = 0; j < 8; j++) {
        importance(x + 32 * j, qw + 32 * j, sigma2, weights, 32);
        float sumw = 0;
        for (int l = 0; l < 32; l++) sumw += weights[l];
        sw[j] = sumw;
        scales[j] = make_qkx_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
    }
    const float d_block = make_qp_quants(8, 63, scales, Ls, sw);
    const float m_block = make_qp_quants(8, 63, mins, Lm, sw);
    if (clamp)
        for (int j = 0; j < 8; j++) {
            Ls[j] = (uint8_t)min_i(63, Ls[j]);
            Lm[j] = (uint8_t)min_i(63, Lm[j]);
        }
    k4_pack_scales(Ls, Lm, scales_out);
    *d = herd_fp32_to_fp16(d_block);
    *dmin = herd_fp32_to_fp16(m_block);
}

void herd_quantize_row_q4_k(const float *x, void *vy, size_t n, const float *qw) {
    HERD_ASSERT(n % HERD_QK_K == 0);
    struct herd_block_q4_k *y = vy;
    for (size_t b = 0; b < n / HERD_QK_K; b++, x += HERD_QK_K) {
        uint8_t L[HERD_QK_K];
        if (qw)
            k4_scales_imatrix(x, qw + HERD_QK_K * b, 15, false, L, y[b].scales, &y[b].d, &y[b].dmin);
        else
            k4_scales_plain(x, 15, -1.f, 0.1f, 20, L, y[b].scales, &y[b].d, &y[b].dmin);
        k4_requantize(x, y[b].d, y[b].dmin, y[b].scales, 15, L);
        /* element 64p + 32k + l: nibble k of qs[32p + l] */
        for (int p = 0; p < 4; p++)
            for (int l = 0; l < 32; l++) y[b].qs[32 * p + l] = (uint8_t)(L[64 * p + l] | (L[64 * p + l + 32] << 4));
    }
}

void herd_quantize_row_q5_k(const float *x, void *vy, size_t n, const float *qw) {
    HERD_ASSERT(n % HERD_QK_K == 0);
    struct herd_block_q5_k *y = vy;
    for (size_t b = 0; b < n / HERD_QK_K; b++, x += HERD_QK_K) {
        uint8_t L[HERD_QK_K];
        if (qw)
            k4_scales_imatrix(x, qw + HERD_QK_K * b, 31, true, L, y[b].scales, &y[b].d, &y[b].dmin);
        else
            k4_scales_plain(x, 31, -0.5f, 0.1f, 15, L, y[b].scales, &y[b].d, &y[b].dmin);
        k4_requantize(x, y[b].d, y[b].dmin, y[b].scales, 31, L);
        /* as Q4_K, with the fifth bit of element 64p + 32k + l in bit 2p + k of qh[l] */
        memset(y[b].qh, 0, sizeof y[b].qh);
        for (int p = 0; p < 4; p++)
            for (int l = 0; l < 32; l++) {
                int l1 = L[64 * p + l], l2 = L[64 * p + l + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    y[b].qh[l] = (uint8_t)(y[b].qh[l] | (1u << (2 * p)));
                }
                if (l2 > 15) {
                    l2 -= 16;
                    y[b].qh[l] = (uint8_t)(y[b].qh[l] | (2u << (2 * p)));
                }
                y[b].qs[32 * p + l] = (uint8_t)(l1 | (l2 << 4));
            }
    }
}

void herd_quantize_row_q6_k(const float *x, void *vy, size_t n, const float *qw) {
    HERD_ASSERT(n % HERD_QK_K == 0);
    struct herd_block_q6_k *y = vy;
    for (size_t b = 0; b < n / HERD_QK_K; b++, x += HERD_QK_K) {
        int8_t L[HERD_QK_K];
        float scales[16];
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < 16; ib++) {
            /* ggml weighs by the importance alone here (its sigma2 form is commented out) */
            scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw ? qw + HERD_QK_K * b + 16 * ib : NULL);
            if (fabsf(scales[ib]) > max_abs_scale) {
                max_abs_scale = fabsf(scales[ib]);
                max_scale = scales[ib];
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        const float iscale = -128.f / max_scale;
        y[b].d = herd_fp32_to_fp16(1 / iscale);
        for (int ib = 0; ib < 16; ib++) y[b].scales[ib] = (int8_t)min_i(127, nearest_int(iscale * scales[ib]));
        for (int j = 0; j < 16; j++) {
            const float d = fp16_round(y[b].d) * (float)y[b].scales[j];
            if (d == 0.0f) continue;
            for (int ii = 0; ii < 16; ii++)
                L[16 * j + ii] = (int8_t)(max_i(-32, min_i(31, nearest_int(x[16 * j + ii] / d))) + 32);
        }
        /* element 128h + 32s + l: low nibble in ql[64h + 32(s % 2) + l] (nibble s / 2),
         * high two bits in bits 2s of qh[32h + l] */
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const int8_t *q = L + 128 * h + l;
                y[b].ql[64 * h + l] = (uint8_t)((q[0] & 0xF) | ((q[64] & 0xF) << 4));
                y[b].ql[64 * h + l + 32] = (uint8_t)((q[32] & 0xF) | ((q[96] & 0xF) << 4));
                y[b].qh[32 * h + l] =
                    (uint8_t)((q[0] >> 4) | ((q[32] >> 4) << 2) | ((q[64] >> 4) << 4) | ((q[96] >> 4) << 6));
            }
    }
}

/* ------------------------------------------------------------ rows of any type */

bool herd_quantize_rows_supported(enum herd_ggml_type type) {
    switch (type) {
    case HERD_GGML_TYPE_F32:
    case HERD_GGML_TYPE_F16:
    case HERD_GGML_TYPE_BF16:
    case HERD_GGML_TYPE_Q4_0:
    case HERD_GGML_TYPE_Q4_1:
    case HERD_GGML_TYPE_Q5_0:
    case HERD_GGML_TYPE_Q5_1:
    case HERD_GGML_TYPE_Q8_0:
    case HERD_GGML_TYPE_IQ4_NL:
    case HERD_GGML_TYPE_Q2_K:
    case HERD_GGML_TYPE_Q3_K:
    case HERD_GGML_TYPE_Q4_K:
    case HERD_GGML_TYPE_Q5_K:
    case HERD_GGML_TYPE_Q6_K: return true;
    default: return false;
    }
}

typedef void (*row_quantizer_fn)(const float *x, void *y, size_t n, const float *qw);

static row_quantizer_fn row_quantizer(enum herd_ggml_type type) {
    switch (type) {
    case HERD_GGML_TYPE_Q4_0: return herd_quantize_row_q4_0;
    case HERD_GGML_TYPE_Q4_1: return herd_quantize_row_q4_1;
    case HERD_GGML_TYPE_Q5_0: return herd_quantize_row_q5_0;
    case HERD_GGML_TYPE_Q5_1: return herd_quantize_row_q5_1;
    case HERD_GGML_TYPE_Q8_0: return herd_quantize_row_q8_0;
    case HERD_GGML_TYPE_IQ4_NL: return herd_quantize_row_iq4_nl;
    case HERD_GGML_TYPE_Q2_K: return herd_quantize_row_q2_k;
    case HERD_GGML_TYPE_Q3_K: return herd_quantize_row_q3_k;
    case HERD_GGML_TYPE_Q4_K: return herd_quantize_row_q4_k;
    case HERD_GGML_TYPE_Q5_K: return herd_quantize_row_q5_k;
    case HERD_GGML_TYPE_Q6_K: return herd_quantize_row_q6_k;
    default: return NULL;
    }
}

void herd_quantize_rows(enum herd_ggml_type type, const float *src, void *dst, size_t n_rows, size_t n_per_row,
                        const float *imatrix) {
    const struct herd_ggml_type_info *ti = herd_ggml_type_info(type);
    HERD_ASSERT(ti && herd_quantize_rows_supported(type) && n_per_row % ti->block_elems == 0);
    const size_t row_bytes = n_per_row / ti->block_elems * ti->block_bytes;
    uint8_t *out = dst;
    const row_quantizer_fn fn = row_quantizer(type);
    for (size_t r = 0; r < n_rows; r++, src += n_per_row, out += row_bytes) {
        if (fn) {
            fn(src, out, n_per_row, imatrix);
        } else if (type == HERD_GGML_TYPE_F32) {
            memcpy(out, src, n_per_row * sizeof *src);
        } else { /* F16, BF16: element by element, round to nearest even, as ggml converts them */
            for (size_t i = 0; i < n_per_row; i++) {
                const uint16_t h = type == HERD_GGML_TYPE_F16 ? herd_fp32_to_fp16(src[i]) : herd_fp32_to_bf16(src[i]);
                out[2 * i] = (uint8_t)h;
                out[2 * i + 1] = (uint8_t)(h >> 8);
            }
        }
    }
}

/* ------------------------------------------------------------ validation */

static bool fp16_finite(const uint8_t *p) { return ((p[0] | p[1] << 8) & 0x7c00) != 0x7c00; }

bool herd_quantize_rows_valid(enum herd_ggml_type type, const void *data, size_t n_bytes) {
    const uint8_t *p = data;
    const struct herd_ggml_type_info *ti = herd_ggml_type_info(type);
    HERD_ASSERT(ti && n_bytes % ti->block_bytes == 0);
    const size_t nb = n_bytes / ti->block_bytes, bs = ti->block_bytes;
    /* byte offsets of the fp16 fields ggml checks in each block (quant.h) */
    int off0 = -1, off1 = -1;
    switch (type) {
    case HERD_GGML_TYPE_F32:
        for (size_t i = 0; i < nb; i++) {
            uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
                         (uint32_t)p[4 * i + 3] << 24;
            if ((u & 0x7f800000u) == 0x7f800000u) return false;
        }
        return true;
    case HERD_GGML_TYPE_BF16:
        for (size_t i = 0; i < nb; i++)
            if (((p[2 * i] | p[2 * i + 1] << 8) & 0x7f80) == 0x7f80) return false;
        return true;
    case HERD_GGML_TYPE_F16: off0 = 0; break;
    case HERD_GGML_TYPE_Q4_0:
    case HERD_GGML_TYPE_Q5_0:
    case HERD_GGML_TYPE_Q8_0:
    case HERD_GGML_TYPE_IQ4_NL: off0 = 0; break;
    case HERD_GGML_TYPE_Q4_1:
    case HERD_GGML_TYPE_Q5_1:
    case HERD_GGML_TYPE_Q4_K:
    case HERD_GGML_TYPE_Q5_K:
        off0 = 0;
        off1 = 2;
        break;
    case HERD_GGML_TYPE_Q2_K:
        off0 = (int)offsetof(struct herd_block_q2_k, d);
        off1 = (int)offsetof(struct herd_block_q2_k, dmin);
        break;
    case HERD_GGML_TYPE_Q3_K: off0 = (int)offsetof(struct herd_block_q3_k, d); break;
    case HERD_GGML_TYPE_Q6_K: off0 = (int)offsetof(struct herd_block_q6_k, d); break;
    default: HERD_ASSERT(!"validate: type not written by herd");
    }
    for (size_t i = 0; i < nb; i++) {
        if (!fp16_finite(p + i * bs + off0)) return false;
        if (off1 >= 0 && !fp16_finite(p + i * bs + off1)) return false;
    }
    return true;
}
