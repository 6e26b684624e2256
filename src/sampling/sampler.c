/* Samplers. Working set per call: a copy of the logits, turned in place
 * into softmax weights by the kernels' vector exp; candidates ordered by
 * weight only when top-k or top-p needs it, and then only as far as they
 * need (partial selection for top-k, quickselect by mass for top-p). A full sort of a 49,152-token vocabulary
 * per token cost ~6-12 ms: 16 streams at temperature 1 spent 100-200 ms of
 * every step sampling. */
#include "sampling/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

struct cand {
    int32_t id;
    float score; /* the token's weight, sorted descending */
};

struct herd_sampler {
    struct herd_sampler_params p;
    struct herd_logit_bias *bias;
    uint32_t n_vocab;
    struct herd_rng rng;
    const struct herd_kernels *k;
    float *work;       /* [n_vocab] */
    struct cand *cand; /* [n_vocab] */
    int32_t *recent;   /* ring of the last penalty_last_n tokens */
    uint32_t n_recent, recent_head;
    uint16_t *counts; /* [n_vocab] occurrences inside the ring */
    float last_prob;
};

void herd_sampler_default_params(struct herd_sampler_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 0.0f;
    p->top_p = 1.0f;
    p->repeat_penalty = 1.0f;
    p->penalty_last_n = 64;
}

enum herd_status herd_sampler_create(const struct herd_sampler_params *p, uint32_t n_vocab, struct herd_sampler **out,
                                     struct herd_error *err) {
    *out = NULL;
    if (!isfinite(p->temperature) || p->temperature < 0 || p->temperature > 100)
        return herd_error_set(err, HERD_E_INVALID, "temperature must be in [0, 100]");
    if (!isfinite(p->top_p) || p->top_p <= 0 || p->top_p > 1)
        return herd_error_set(err, HERD_E_INVALID, "top_p must be in (0, 1]");
    if (!isfinite(p->min_p) || p->min_p < 0 || p->min_p > 1)
        return herd_error_set(err, HERD_E_INVALID, "min_p must be in [0, 1]");
    if (!isfinite(p->repeat_penalty) || p->repeat_penalty <= 0 || p->repeat_penalty > 100)
        return herd_error_set(err, HERD_E_INVALID, "repetition penalty must be in (0, 100]");
    if (!isfinite(p->presence_penalty) || fabsf(p->presence_penalty) > 2)
        return herd_error_set(err, HERD_E_INVALID, "presence penalty must be in [-2, 2]");
    if (!isfinite(p->frequency_penalty) || fabsf(p->frequency_penalty) > 2)
        return herd_error_set(err, HERD_E_INVALID, "frequency penalty must be in [-2, 2]");
    if (p->penalty_last_n > 65536) return herd_error_set(err, HERD_E_INVALID, "penalty window must be <= 65536");
    for (uint32_t i = 0; i < p->n_bias; i++) {
        if (p->bias[i].token < 0 || (uint32_t)p->bias[i].token >= n_vocab)
            return herd_error_set(err, HERD_E_INVALID, "logit bias token %d is outside the vocabulary of %u",
                                  p->bias[i].token, n_vocab);
        if (isnan(p->bias[i].bias) || p->bias[i].bias > 100)
            return herd_error_set(err, HERD_E_INVALID, "logit bias for token %d must be <= 100 or -inf",
                                  p->bias[i].token);
    }
    struct herd_sampler *s = calloc(1, sizeof *s);
    if (!s) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->work = malloc(n_vocab * sizeof *s->work);
    s->cand = malloc(n_vocab * sizeof *s->cand);
    s->counts = calloc(n_vocab, sizeof *s->counts);
    s->recent = malloc((p->penalty_last_n ? p->penalty_last_n : 1) * sizeof *s->recent);
    s->bias = malloc((p->n_bias ? p->n_bias : 1) * sizeof *s->bias);
    if (!s->work || !s->cand || !s->counts || !s->recent || !s->bias) {
        herd_sampler_destroy(s);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory for a sampler over %u tokens", n_vocab);
    }
    if (p->n_bias) memcpy(s->bias, p->bias, p->n_bias * sizeof *s->bias);
    s->p.bias = s->bias;
    herd_rng_init(&s->rng, p->seed);
    s->k = herd_kernels_best();
    *out = s;
    return HERD_OK;
}

void herd_sampler_destroy(struct herd_sampler *s) {
    if (!s) return;
    free(s->work);
    free(s->cand);
    free(s->counts);
    free(s->recent);
    free(s->bias);
    free(s);
}

void herd_sampler_accept(struct herd_sampler *s, int32_t token) {
    const uint32_t n = s->p.penalty_last_n;
    if (n == 0 || token < 0 || (uint32_t)token >= s->n_vocab) return;
    if (s->n_recent == n) {
        int32_t old = s->recent[s->recent_head];
        s->counts[old]--;
    } else {
        s->n_recent++;
    }
    s->recent[s->recent_head] = token;
    s->recent_head = (s->recent_head + 1) % n;
    if (s->counts[token] < UINT16_MAX) s->counts[token]++;
}

float herd_sampler_last_prob(const struct herd_sampler *s) { return s->last_prob; }

static int cand_cmp(const void *a, const void *b) {
    const struct cand *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

static void swap_cand(struct cand *a, struct cand *b) {
    const struct cand t = *a;
    *a = *b;
    *b = t;
}

/* Partitions c[lo..hi) (hi - lo >= 3) around a median-of-three pivot: the
 * candidates before it in c[lo..p), the pivot at p, the rest after. Returns
 * p; *before gets the weight of c[lo..p). */
static uint32_t partition(struct cand *c, uint32_t lo, uint32_t hi, double *before) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (cand_cmp(&c[mid], &c[lo]) < 0) swap_cand(&c[mid], &c[lo]);
    if (cand_cmp(&c[hi - 1], &c[lo]) < 0) swap_cand(&c[hi - 1], &c[lo]);
    if (cand_cmp(&c[mid], &c[hi - 1]) < 0) swap_cand(&c[mid], &c[hi - 1]);
    const struct cand pivot = c[hi - 1];
    uint32_t store = lo;
    double w = 0;
    for (uint32_t i = lo; i + 1 < hi; i++)
        if (cand_cmp(&c[i], &pivot) < 0) {
            w += c[i].score;
            swap_cand(&c[i], &c[store++]);
        }
    swap_cand(&c[store], &c[hi - 1]);
    *before = w;
    return store;
}

/* Puts the k best candidates first, sorted (k == n: sort everything). The
 * order is total (ties by id), so the result is the full sort's first k. */
static void select_top(struct cand *c, uint32_t n, uint32_t k) {
    if (k < n && k <= 256) {
        /* insertion into a sorted prefix: O(n k), fast for small k; the
         * one pushed out of the prefix takes the newcomer's place, so the
         * array stays a permutation of the candidates */
        for (uint32_t i = 0; i < n; i++) {
            if (i >= k && cand_cmp(&c[i], &c[k - 1]) >= 0) continue;
            struct cand v = c[i];
            uint32_t j = i;
            if (i >= k) c[i] = c[k - 1], j = k - 1;
            while (j > 0 && cand_cmp(&v, &c[j - 1]) < 0) {
                c[j] = c[j - 1];
                j--;
            }
            c[j] = v;
        }
        return;
    }
    if (k < n) {
        /* quickselect the k best to the front, then sort only them: a sort
         * of all 49,152 candidates for a top-k of 1,000 cost ~5 ms a draw */
        uint32_t lo = 0, hi = n;
        double unused;
        while (hi - lo > 32) {
            const uint32_t p = partition(c, lo, hi, &unused);
            if (p == k || p + 1 == k) break;
            if (p > k)
                hi = p;
            else
                lo = p + 1;
        }
        if (hi - lo <= 32) qsort(c + lo, hi - lo, sizeof *c, cand_cmp);
        n = k;
    }
    qsort(c, n, sizeof *c, cand_cmp);
}

/* The first index of the largest value; NaN never wins (all NaN: 0). The
 * maximum in 16 independent lanes first, which the compiler vectorizes. */
static uint32_t argmax(const float *w, uint32_t n) {
    float lane[16];
    for (int k = 0; k < 16; k++) lane[k] = -INFINITY;
    uint32_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) lane[k] = w[i + k] > lane[k] ? w[i + k] : lane[k];
    float mx = -INFINITY;
    for (int k = 0; k < 16; k++) mx = lane[k] > mx ? lane[k] : mx;
    for (; i < n; i++) mx = w[i] > mx ? w[i] : mx;
    for (i = 0; i < n; i++)
        if (w[i] == mx) return i;
    return 0;
}

/* Sorted candidates: how many of them the top-p cut keeps (the first whose
 * cumulative weight reaches top_p of total, and all before it). */
static uint32_t top_p_sorted(const struct cand *c, uint32_t n, double total, float top_p) {
    double cum = 0;
    for (uint32_t i = 0; i < n; i++) {
        cum += c[i].score / total;
        if (cum >= top_p) return i + 1;
    }
    return n;
}

/* Unsorted candidates: moves the ones the top-p cut keeps to the front, in
 * no particular order, and returns how many (the same set as sorting and
 * cutting, in expected linear time). Quickselect by mass: partition around
 * a pivot; if the mass before it already reaches the target, the cut lies
 * among those, else they are all kept and the search goes on after it. A
 * full sort here cost ~5.6 ms a draw for a flat 49,152-token distribution. */
static uint32_t top_p_select(struct cand *c, uint32_t n, double total, float top_p) {
    const double target = (double)top_p * total;
    uint32_t lo = 0, hi = n;
    double kept = 0; /* weight of c[0..lo), all kept */
    while (hi - lo > 32) {
        double before;
        const uint32_t store = partition(c, lo, hi, &before);
        const struct cand pivot = c[store];
        if (kept + before >= target) {
            hi = store;
        } else if (kept + before + pivot.score >= target) {
            return store + 1;
        } else {
            kept += before + pivot.score;
            lo = store + 1;
        }
    }
    select_top(c + lo, hi - lo, hi - lo);
    for (uint32_t i = lo; i < hi; i++) {
        kept += c[i].score;
        if (kept >= target) return i + 1;
    }
    return hi;
}

/* The first allowed index with the largest raw logit; -1 when none is
 * allowed. */
static int32_t masked_argmax(const float *logits, const uint64_t *allowed, uint32_t n) {
    int32_t best = -1;
    for (uint32_t i = 0; i < n; i++)
        if ((allowed[i / 64] >> (i % 64) & 1) && (best < 0 || logits[i] > logits[best])) best = (int32_t)i;
    return best;
}

/* The draw, with the tokens outside allowed (NULL: none) banned after the
 * bias and the penalties, so that they change only the allowed ones. */
static int32_t sample(struct herd_sampler *s, const float *logits, const uint64_t *allowed) {
    const uint32_t V = s->n_vocab;
    float *w = s->work;
    memcpy(w, logits, V * sizeof *w);
    for (uint32_t i = 0; i < s->p.n_bias; i++) w[s->bias[i].token] += s->bias[i].bias;
    if (s->n_recent) {
        const uint32_t n = s->n_recent, cap = s->p.penalty_last_n;
        for (uint32_t i = 0; i < n; i++) {
            /* each distinct token once: only at its most recent ring slot */
            int32_t t = s->recent[(s->recent_head + cap - 1 - i) % cap];
            uint32_t first = 1;
            for (uint32_t j = 0; j < i; j++)
                if (s->recent[(s->recent_head + cap - 1 - j) % cap] == t) first = 0;
            if (!first) continue;
            if (s->p.repeat_penalty != 1.0f) w[t] = w[t] > 0 ? w[t] / s->p.repeat_penalty : w[t] * s->p.repeat_penalty;
            w[t] -= s->p.presence_penalty + s->p.frequency_penalty * (float)s->counts[t];
        }
    }
    if (allowed)
        for (uint32_t wi = 0; wi < (V + 63) / 64; wi++) {
            if (allowed[wi] == ~0ull) continue;
            for (uint32_t i = wi * 64; i < V && i < wi * 64 + 64; i++)
                if (!(allowed[wi] >> (i % 64) & 1)) w[i] = -INFINITY;
        }
    const uint32_t best = argmax(w, V);
    if (!(w[best] > -INFINITY)) {
        /* everything banned: fall back to the unbiased argmax (of the
         * allowed tokens; -1 when the mask allows none) */
        s->last_prob = 0.0f;
        return allowed ? masked_argmax(logits, allowed, V) : (int32_t)argmax(logits, V);
    }
    if (s->p.temperature <= 0.0f) {
        s->last_prob = 1.0f;
        return (int32_t)best;
    }
    /* weights e^((logit - max) / T) in place: the best is 1, banned ones 0 */
    s->k->softmax_weights(w, w[best], 1.0f / s->p.temperature, w, V);
    const float floor_w = s->p.min_p; /* min-p keeps weights >= min_p x the best */
    double total = 0;
    uint32_t pick = best;
    if (s->p.top_k || s->p.top_p < 1.0f) {
        /* the order matters: candidates by weight, top-k, then top-p (of the
         * top-k's mass, or of the whole), then min-p. Without top-k, min-p
         * filters before the sort: the same set, fewer to sort. */
        const bool min_first = s->p.top_k == 0;
        uint32_t n = 0;
        double total_all = 0;
        for (uint32_t i = 0; i < V; i++) {
            total_all += w[i];
            if (w[i] > 0 && (!min_first || w[i] >= floor_w)) s->cand[n++] = (struct cand){(int32_t)i, w[i]};
        }
        if (s->p.top_k) {
            const uint32_t keep = s->p.top_k < n ? s->p.top_k : n;
            select_top(s->cand, n, keep);
            n = keep;
            total_all = 0;
            for (uint32_t i = 0; i < n; i++) total_all += s->cand[i].score;
        }
        if (s->p.top_p < 1.0f)
            n = s->p.top_k ? top_p_sorted(s->cand, n, total_all, s->p.top_p) /* sorted by top-k */
                           : top_p_select(s->cand, n, total_all, s->p.top_p);
        if (!min_first) {
            uint32_t i = 1;
            while (i < n && s->cand[i].score >= floor_w) i++;
            n = i;
        }
        for (uint32_t i = 0; i < n; i++) total += s->cand[i].score;
        double u = herd_rng_uniform(&s->rng) * total, cum = 0;
        uint32_t at = n - 1;
        for (uint32_t i = 0; i < n; i++) {
            cum += s->cand[i].score;
            if (u < cum) {
                at = i;
                break;
            }
        }
        s->last_prob = (float)(s->cand[at].score / total);
        return s->cand[at].id;
    }
    /* no order needed: the whole distribution (min-p as a floor), drawn in
     * vocabulary order */
    for (uint32_t i = 0; i < V; i++)
        if (w[i] >= floor_w) total += w[i];
    double u = herd_rng_uniform(&s->rng) * total, cum = 0;
    for (uint32_t i = 0; i < V; i++) {
        if (w[i] < floor_w || w[i] == 0) continue;
        cum += w[i];
        if (u < cum) {
            pick = i;
            break;
        }
    }
    s->last_prob = (float)(w[pick] / total);
    return (int32_t)pick;
}

int32_t herd_sampler_sample(struct herd_sampler *s, const float *logits) { return sample(s, logits, NULL); }

int32_t herd_sampler_sample_masked(struct herd_sampler *s, const float *logits, const uint64_t *allowed) {
    return sample(s, logits, allowed);
}
