/* Token sampling for one sequence: logit bias, repetition / presence /
 * frequency penalties over the recent tokens, then greedy (temperature 0) or
 * temperature -> top-k -> top-p -> min-p on the scaled distribution (the
 * order OpenAI and vLLM document) and a draw from the sequence's own seeded
 * generator. A sequence's draws depend only on its seed and its own logits,
 * so the same seed gives the same output whatever else is in the batch. */
#ifndef HERD_SAMPLING_SAMPLER_H
#define HERD_SAMPLING_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "base/rng.h"
#include "herd/status.h"

struct herd_logit_bias {
    int32_t token;
    float bias; /* added to the logit; -inf bans the token */
};

struct herd_sampler_params {
    float temperature;       /* <= 0: greedy (argmax, ties to the lowest id) */
    uint32_t top_k;          /* 0: off */
    float top_p;             /* 1: off */
    float min_p;             /* 0: off */
    float repeat_penalty;    /* 1: off; > 1 discourages recent tokens (divides positive logits) */
    float presence_penalty;  /* 0: off; subtracted once from every recent token */
    float frequency_penalty; /* 0: off; subtracted per occurrence */
    uint32_t penalty_last_n; /* how many recent tokens the penalties see (64) */
    uint64_t seed;
    const struct herd_logit_bias *bias; /* copied at create */
    uint32_t n_bias;
};

void herd_sampler_default_params(struct herd_sampler_params *p);

struct herd_sampler;

/* Checks the parameters (finite, in range, bias ids in the vocabulary) and
 * allocates the candidate buffers for n_vocab. */
enum herd_status herd_sampler_create(const struct herd_sampler_params *p, uint32_t n_vocab, struct herd_sampler **out,
                                     struct herd_error *err);
void herd_sampler_destroy(struct herd_sampler *s);

/* Records a token of the sequence (prompt or generated) for the penalties. */
void herd_sampler_accept(struct herd_sampler *s, int32_t token);

/* Picks the next token from n_vocab logits (not modified). */
int32_t herd_sampler_sample(struct herd_sampler *s, const float *logits);

/* herd_sampler_sample with only the tokens whose bit is set in allowed
 * (bit i of word i / 64: a grammar's mask) able to win; the bias and the
 * penalties apply as before, to those. -1 when allowed has no bit set. */
int32_t herd_sampler_sample_masked(struct herd_sampler *s, const float *logits, const uint64_t *allowed);

/* The probability the last herd_sampler_sample gave its token after every
 * filter (1 for greedy), for logprobs. */
float herd_sampler_last_prob(const struct herd_sampler *s);

#endif
