/* llama-perplexity's scoring of logits rows (perplexity.h). The order of
 * operations and the float / double of each intermediate follow llama.cpp's
 * examples/perplexity so that both tools print the same digits; CMake builds
 * this file with -ffp-contract=off, since llama.cpp's build does not fuse
 * these multiply-adds either. */
#include "quality/perplexity.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------ perplexity */

double herd_ppl_row_nll(const float *logits, uint32_t n_vocab, int32_t tok) {
    float max_logit = logits[0];
    for (uint32_t i = 1; i < n_vocab; i++) max_logit = logits[i] > max_logit ? logits[i] : max_logit;
    double sum_exp = 0.0;
    for (uint32_t i = 0; i < n_vocab; i++) sum_exp += expf(logits[i] - max_logit);
    const double log_softmax = (double)(logits[tok] - max_logit) - log(sum_exp);
    return -log_softmax;
}

void herd_ppl_add(struct herd_ppl_stats *s, double nll) {
    s->nll += nll;
    s->nll2 += nll * nll;
    s->count++;
}

double herd_ppl_value(const struct herd_ppl_stats *s) { return s->count ? exp(s->nll / (double)s->count) : 0.0; }

bool herd_ppl_final(const struct herd_ppl_stats *s, double *ppl, double *ppl_err) {
    if (s->count < 2) return false;
    const double nll = s->nll / (double)s->count;
    double nll2 = s->nll2 / (double)s->count - nll * nll;
    *ppl = exp(nll);
    if (!(nll2 > 0)) return false;
    nll2 = sqrt(nll2 / (double)(s->count - 1));
    *ppl_err = nll2 * *ppl;
    return true;
}

/* ------------------------------------------------------- packed log-probs */

/* Round to nearest (ties to even) for |x| < 2^22 by the float-add trick
 * llama.cpp uses: adding 1.5 x 2^23 leaves the integer in the low mantissa
 * bits. Written the same way so ties round the same way. */
static inline int nearest_int(float x) {
    const float v = x + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

double herd_ppl_row_pack(const float *logits, uint32_t n_vocab, int32_t tok, uint16_t *out) {
    float max_logit = logits[0], min_logit = logits[0];
    for (uint32_t i = 1; i < n_vocab; i++) {
        max_logit = logits[i] > max_logit ? logits[i] : max_logit;
        min_logit = logits[i] < min_logit ? logits[i] : min_logit;
    }
    /* a log-prob 16 below the top is e^-16 of it: stored as 0 */
    min_logit = min_logit > max_logit - 16 ? min_logit : max_logit - 16;
    double sum_exp = 0.0;
    for (uint32_t i = 0; i < n_vocab; i++) sum_exp += expf(logits[i] - max_logit);
    const float log_sum_exp = (float)log(sum_exp);
    const float min_log_prob = min_logit - max_logit - log_sum_exp;
    const float scale = (max_logit - min_logit) / 65535.f;
    memcpy(out, &scale, sizeof scale);
    memcpy(out + 2, &min_log_prob, sizeof min_log_prob);
    uint16_t *q = out + 4;
    if (scale != 0.f) {
        const float inv_scale = 1 / scale;
        for (uint32_t i = 0; i < n_vocab; i++)
            q[i] = logits[i] > min_logit ? (uint16_t)nearest_int(inv_scale * (logits[i] - min_logit)) : 0;
    } else {
        memset(q, 0, (size_t)n_vocab * sizeof *q);
    }
    /* the odd vocabulary's pad value: zero, so files are reproducible */
    for (size_t i = n_vocab; i < herd_ppl_packed_row_len(n_vocab) - 4; i++) q[i] = 0;
    return (double)(max_logit + log_sum_exp - logits[tok]);
}

/* ---------------------------------------------------------- KL divergence */

void herd_kld_row(const float *logits, uint32_t n_vocab, const uint16_t *base, int32_t tok, struct herd_kld_stats *s,
                  float *kld, float *p_diff_out) {
    float max_logit = logits[0];
    uint32_t imax = 0;
    for (uint32_t i = 1; i < n_vocab; i++)
        if (logits[i] > max_logit) max_logit = logits[i], imax = i;
    double sum_exp = 0.0;
    for (uint32_t i = 0; i < n_vocab; i++) sum_exp += expf(logits[i] - max_logit);
    const float log_sum_exp = (float)log(sum_exp);
    float scale, min_log_prob;
    memcpy(&scale, base, sizeof scale);
    memcpy(&min_log_prob, base + 2, sizeof min_log_prob);
    const uint16_t *q = base + 4;

    const float nll = max_logit + log_sum_exp - logits[tok];
    s->sum_nll += nll;
    s->sum_nll2 += nll * nll;
    const float nll_base = -(scale * q[tok] + min_log_prob);
    s->sum_nll_base += nll_base;
    s->sum_nll_base2 += nll_base * nll_base;
    s->sum_nll_nll_base += nll * nll_base;

    max_logit += log_sum_exp; /* now log p(i) = logits[i] - max_logit */
    double sum = 0;
    uint32_t imax_base = 0;
    float p_log_base_max = 0;
    for (uint32_t i = 0; i < n_vocab; i++) {
        const float p_log_base = scale * q[i] + min_log_prob;
        if (i == 0 || p_log_base > p_log_base_max) p_log_base_max = p_log_base, imax_base = i;
        if (p_log_base > -16.f) {
            const float p_base = expf(p_log_base);
            sum += p_base * (p_log_base - logits[i] + max_logit);
        }
    }
    s->sum_kld += sum;
    s->sum_kld2 += sum * sum;
    s->count++;
    if (imax == imax_base) s->n_same_top++;

    const float p_base = expf(-nll_base), p = expf(-nll);
    const float p_diff = p - p_base;
    s->sum_p_diff += p_diff;
    const double p_diff2 = p_diff * p_diff;
    s->sum_p_diff2 += p_diff2;
    s->sum_p_diff4 += p_diff2 * p_diff2;
    if (fabsf(p_diff) > s->max_p_diff) s->max_p_diff = fabsf(p_diff);
    *kld = (float)sum;
    *p_diff_out = p_diff;
}

struct herd_mean_err herd_mean_err(double sum, double sum2, uint64_t count) {
    struct herd_mean_err r = {0, 0};
    if (count < 1) return r;
    r.mean = sum / (double)count;
    const double var = sum2 / (double)count - r.mean * r.mean;
    r.err = var > 0 && count > 10 ? sqrt(var / (double)(count - 1)) : 0.;
    return r;
}

double herd_mean_cov(double sum_a, double sum_b, double sum_ab, uint64_t count) {
    if (count < 10) return 0.0;
    const double n = (double)count;
    return (sum_ab / n - (sum_a / n) * (sum_b / n)) / (n - 1);
}

void herd_kld_summarize(const struct herd_kld_stats *s, struct herd_kld_summary *out) {
    memset(out, 0, sizeof *out);
    const struct herd_mean_err lp = herd_mean_err(s->sum_nll, s->sum_nll2, s->count);
    const struct herd_mean_err lpb = herd_mean_err(s->sum_nll_base, s->sum_nll_base2, s->count);
    out->ppl.mean = exp(lp.mean);
    out->ppl.err = out->ppl.mean * lp.err;
    out->ppl_base.mean = exp(lpb.mean);
    out->ppl_base.err = out->ppl_base.mean * lpb.err;
    const double cov = herd_mean_cov(s->sum_nll, s->sum_nll_base, s->sum_nll_nll_base, s->count);
    out->log_ppl_cor = lp.err > 0 && lpb.err > 0 ? cov / (lp.err * lpb.err) : 0;
    out->log_ppl_ratio.mean = lp.mean - lpb.mean;
    const double ratio_var = lp.err * lp.err + lpb.err * lpb.err - 2.0 * cov;
    out->log_ppl_ratio.err = ratio_var > 0 ? sqrt(ratio_var) : 0;
    out->ppl_ratio.mean = exp(out->log_ppl_ratio.mean);
    out->ppl_ratio.err = out->ppl_ratio.mean * out->log_ppl_ratio.err;
    const double ppl_cov = out->ppl.mean * out->ppl_base.mean * cov;
    out->ppl_diff.mean = out->ppl.mean - out->ppl_base.mean;
    const double diff_var = out->ppl.err * out->ppl.err + out->ppl_base.err * out->ppl_base.err - 2.0 * ppl_cov;
    out->ppl_diff.err = diff_var > 0 ? sqrt(diff_var) : 0;
    out->kld = herd_mean_err(s->sum_kld, s->sum_kld2, s->count);
    out->p_diff = herd_mean_err(s->sum_p_diff, s->sum_p_diff2, s->count);
    const struct herd_mean_err mse = herd_mean_err(s->sum_p_diff2, s->sum_p_diff4, s->count);
    out->p_diff_rms.mean = sqrt(mse.mean);
    out->p_diff_rms.err = out->p_diff_rms.mean > 0 ? 0.5 / out->p_diff_rms.mean * mse.err : 0;
    if (s->count) {
        const double top = (double)s->n_same_top / (double)s->count;
        out->same_top.mean = top;
        out->same_top.err = s->count > 1 ? sqrt(top * (1 - top) / (double)(s->count - 1)) : 0;
    }
}

float herd_percentile_sorted(const float *v, size_t n, float fraction) {
    if (fraction <= 0) return v[0];
    if (fraction >= 1) return v[n - 1];
    float p = fraction * (float)(n - 1);
    const size_t ip = (size_t)p;
    p -= (float)ip;
    return (1 - p) * v[ip] + p * v[ip + 1 < n ? ip + 1 : n - 1];
}
