/* Perplexity and KL divergence with llama-perplexity's arithmetic, so that
 * `herd perplexity` and llama-perplexity print the same numbers for the same
 * logits: one row of logits at a time is scored against the token that
 * followed, and running sums give the estimate and its uncertainty.
 *
 * Three scorings, as llama.cpp has three log-softmaxes (their float /
 * double mix is copied on purpose; this file is built without contraction):
 *   herd_ppl_row_nll      plain perplexity
 *   herd_ppl_row_pack     perplexity while saving the row, packed as the
 *                         logits file stores it (quality/logits_file.h)
 *   herd_kld_row          against a packed row of a base model: KL
 *                         divergence, top-1 agreement, probability deltas
 * Pure functions of their inputs; any thread. */
#ifndef HERD_QUALITY_PERPLEXITY_H
#define HERD_QUALITY_PERPLEXITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ perplexity */

/* Sums of the negative log-likelihoods scored so far. */
struct herd_ppl_stats {
    double nll, nll2; /* sum of -log p(token), and of its square */
    uint64_t count;   /* tokens scored */
};

/* -log softmax(logits)[tok] over n_vocab logits (max in float, the sum of
 * expf in double, as llama.cpp's plain log_softmax). */
double herd_ppl_row_nll(const float *logits, uint32_t n_vocab, int32_t tok);

/* Adds one token's nll. */
void herd_ppl_add(struct herd_ppl_stats *s, double nll);

/* exp(mean nll): the running value llama-perplexity prints as [i]. */
double herd_ppl_value(const struct herd_ppl_stats *s);

/* The final estimate and its uncertainty (the standard error of the mean
 * nll, times the PPL). False when it cannot be given (fewer than two tokens
 * or a variance that rounds to zero or below): llama.cpp then prints an
 * error instead of the line. */
bool herd_ppl_final(const struct herd_ppl_stats *s, double *ppl, double *ppl_err);

/* ------------------------------------------------------- packed log-probs */

/* uint16 values per stored row: the vocabulary rounded up to even, plus 4
 * for the two float header values (scale, min log-prob). */
static inline size_t herd_ppl_packed_row_len(uint32_t n_vocab) { return 2 * (((size_t)n_vocab + 1) / 2) + 4; }

/* Scores tok like herd_ppl_row_nll (with llama.cpp's saving variant, which
 * rounds log-sum-exp to float) and packs the row's log-probabilities into
 * out[herd_ppl_packed_row_len(n_vocab)]: header floats scale and min_lp,
 * then per token round((logit - min_logit) / scale) in 0..65535, where
 * min_logit is the row's minimum but at most 16 below its maximum (lower
 * logits store 0). So log p(i) = scale * out[i] + min_lp, within scale / 2.
 * Returns the nll. */
double herd_ppl_row_pack(const float *logits, uint32_t n_vocab, int32_t tok, uint16_t *out);

/* ---------------------------------------------------------- KL divergence */

/* Running sums over tokens scored against a base model's packed rows. */
struct herd_kld_stats {
    double sum_nll, sum_nll2;                    /* this model's -log p(token) */
    double sum_nll_base, sum_nll_base2;          /* the base model's */
    double sum_nll_nll_base;                     /* their product, for the covariance */
    double sum_kld, sum_kld2;                    /* KL(base || this) per token */
    double sum_p_diff, sum_p_diff2, sum_p_diff4; /* p(token) - p_base(token) */
    float max_p_diff;                            /* largest |p_diff| */
    uint64_t n_same_top;                         /* tokens whose argmax agrees */
    uint64_t count;
};

/* Scores one row of this model's logits against the base's packed row
 * (herd_ppl_row_pack's layout) for target tok; adds to s and returns the
 * token's KL divergence in *kld and its probability difference in *p_diff.
 * Base log-probs at or below -16 are left out of the sum, as llama.cpp. */
void herd_kld_row(const float *logits, uint32_t n_vocab, const uint16_t *base, int32_t tok, struct herd_kld_stats *s,
                  float *kld, float *p_diff);

/* A mean and its standard error from a sum, a sum of squares and a count
 * (llama.cpp's mean_and_uncertainty: the error is 0 up to 10 values). */
struct herd_mean_err {
    double mean, err;
};
struct herd_mean_err herd_mean_err(double sum, double sum2, uint64_t count);

/* The covariance of the two means (llama.cpp's: 0 below 10 values). */
double herd_mean_cov(double sum_a, double sum_b, double sum_ab, uint64_t count);

/* The summary figures llama-perplexity prints, from the sums. */
struct herd_kld_summary {
    struct herd_mean_err ppl, ppl_base; /* exp of the mean nll, error scaled by it */
    struct herd_mean_err log_ppl_ratio; /* mean ln(PPL / PPL_base) */
    struct herd_mean_err ppl_ratio;     /* PPL / PPL_base */
    struct herd_mean_err ppl_diff;      /* PPL - PPL_base */
    double log_ppl_cor;                 /* correlation of the two ln PPL */
    struct herd_mean_err kld;           /* mean KL divergence */
    struct herd_mean_err p_diff;        /* mean p - p_base */
    struct herd_mean_err p_diff_rms;    /* RMS of p - p_base */
    struct herd_mean_err same_top;      /* fraction with the same argmax */
};
void herd_kld_summarize(const struct herd_kld_stats *s, struct herd_kld_summary *out);

/* The fraction-th percentile of n sorted values, interpolated as llama.cpp
 * does (0 and 1 give the ends). n > 0. */
float herd_percentile_sorted(const float *v, size_t n, float fraction);

#endif
