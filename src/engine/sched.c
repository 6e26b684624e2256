/* The scheduler thread and the request objects clients share with it
 * (sched.h).
 *
 * A choice is one sequence of the KV cache. Its known tokens are the
 * prompt followed by what it generated; n_computed of them are in the KV
 * cache. Each step feeds every choice the tokens from n_computed on: the
 * last known token with logits (decode: a new token is sampled), the ones
 * before it without (prefill, in budget-sized chunks). Before the n choices
 * of a request fork, only choice 0 runs, up to the prompt's last token;
 * then the others fork from it sharing those blocks, and each feeds the
 * last prompt token itself. Preemption only forgets n_computed (and the
 * blocks): recomputation replays the same known tokens, so no token is
 * lost or repeated, and the sampler and detokenizer state carry on. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "base/assert.h"
#include "base/buf.h"
#include "base/pool.h"
#include "base/timing.h"
#include "engine/block_feed.h"
#include "engine/prefix_cache.h"
#include "engine/sched.h"
#include "engine/stop_match.h"
#include "model/kv_cache.h"

/* Bytes one detokenizer push can produce: a held-back partial character
 * plus the longest token piece (herd_detok_push's contract). */
#define DETOK_BYTES          1024
/* Grammar texts whose masks the scheduler keeps at once (shared_masks). */
#define GRAMMAR_SHARED       16
/* Event text per request is bounded like the output it carries. */
#define EVENT_TEXT_MAX_BYTES ((size_t)64 << 20)
/* Context positions that cost about as much attention as one token's
 * matmuls (herd bench --profile on smollm-135m, 16 sequences near position
 * 190: ~0.9 ms of matmul per token, ~2.3 us of attention per position). */
#define PREFILL_POS_SCALE    400.0
#define STEP_WINDOW          256

/* Masks shared by every request whose grammar has the same text (the
 * same schema sent again and again, the usual case): a state one request
 * met costs the next ones a lookup. Reference-counted: the scheduler's
 * table holds one, each choice using it one. */
struct shared_masks {
    atomic_uint refs;
    uint64_t fingerprint;
    uint64_t last_used;   /* the scheduler's clock, for replacing the least recent (under gvocab_lock) */
    pthread_mutex_t lock; /* the cache is not thread-safe; the pool samples rows in parallel */
    struct herd_grammar_mask_cache *cache;
};

static void shared_masks_release(struct shared_masks *m) {
    if (!m || atomic_fetch_sub(&m->refs, 1) > 1) return;
    herd_grammar_mask_cache_destroy(m->cache);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

struct choice {
    int32_t seq; /* KV sequence, -1 while not running */
    uint32_t n_computed;
    int32_t *gen; /* [max_tokens] generated tokens */
    uint32_t n_gen;
    struct herd_sampler *sampler;
    struct herd_detok detok;
    struct herd_stop_match stop;
    bool finished;
    double first_token_s, last_token_s; /* for inter-token latency and time per output token */
    uint32_t n_cached_blocks;           /* full blocks of this choice offered to the prefix cache */
    uint64_t chain_hash;                /* the hash of the last of them */
    uint64_t skip_bytes;                /* output bytes still not to emit (a resume's, see herd_gen_params) */
    struct herd_grammar_state *gstate;  /* where the text is in gp.grammar; NULL without one */
    struct shared_masks *gmasks;        /* the masks of every request with this grammar */
    uint64_t *gmask;                    /* this step's mask, copied out of gmasks */
};

enum req_state { REQ_NEW, REQ_WAITING, REQ_RUNNING, REQ_DONE };

struct herd_request {
    atomic_int refs;
    atomic_bool cancel;
    void (*notify)(void *arg);
    void *notify_arg;

    pthread_mutex_t lock; /* guards the event queue, stats and done */
    struct herd_event *ev;
    size_t *ev_text_off; /* event i's text starts here in ev_text */
    size_t n_ev, cap_ev;
    struct herd_buf ev_text;
    struct herd_buf polled_text; /* text of the events handed out by the last poll */
    struct herd_request_stats stats;
    bool all_finished;

    /* immutable after create */
    int32_t *prompt;
    uint32_t n_prompt;
    struct herd_gen_params gp;
    char *stops[HERD_MAX_STOPS];

    /* scheduler thread only */
    enum req_state state;
    bool forked;
    uint64_t arrival;
    uint32_t n_active;
    uint32_t finish_reason;         /* over its choices: 0 stop, 1 length, 2 cancelled (the worst wins) */
    enum herd_finish resume_finish; /* a resume that ends at admission (stop string inside, no tokens left) */
    bool accounted;                 /* its request-level metrics are recorded */
    struct choice ch[HERD_MAX_CHOICES];
    struct herd_request *next_in; /* inbox list */
};

struct out_row {
    struct herd_request *r;
    uint32_t choice;
    int32_t token; /* sampled */
};

struct herd_sched {
    struct herd_context *ctx;
    const struct herd_vocab *vocab;
    /* the vocabulary's trie for grammars, made by the first request with
     * one (on its submitting thread, hence the lock) */
    pthread_mutex_t gvocab_lock;
    struct herd_grammar_vocab *gvocab;
    struct shared_masks *gshared[GRAMMAR_SHARED]; /* by grammar text, under gvocab_lock */
    uint64_t gshared_clock;
    struct herd_sched_params p;
    uint32_t n_ctx, n_vocab;

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock; /* guards the inbox, the flags and the status */
    pthread_cond_t wake;
    struct herd_request *inbox_head, *inbox_tail;
    uint32_t n_queued; /* inbox + waiting */
    bool stop, draining;
    atomic_bool failed;              /* the engine failed: see herd_sched_failed */
    char fail_msg[256];              /* written before failed is set */
    uint64_t fail_after;             /* test hook: fail after this many steps (0: never) */
    uint32_t step_delay_us;          /* test hook: each step takes this much longer (streams that last) */
    struct herd_sched_status status; /* gauges, published under lock at the top of each loop */
    /* counters: written by the scheduler thread, read by herd_sched_status,
     * lock-free (a step never waits for a scrape) */
    struct {
        _Atomic uint64_t steps, preemptions, prompt_tokens, computed_prompt_tokens, generated_tokens, finished[3],
            prefix_queries, prefix_hits, background_paused_steps;
        _Atomic uint32_t prefix_cached_blocks;
    } cnt;

    /* scheduler thread only */
    struct herd_request **waiting, **running, **order;
    uint32_t n_waiting, n_running, cap_reqs;
    uint32_t seqs_in_use;
    uint64_t arrivals;
    int32_t *b_tok, *b_seq;
    uint32_t *b_pos;
    bool *b_want;
    struct out_row *rows;
    float *lp_work;             /* [n_vocab]: softmax weights for logprobs */
    double step_s[STEP_WINDOW]; /* under lock */
    uint64_t n_steps;           /* under lock */
    double last_step_s;         /* the last step's duration, -1 once in the window */
    struct herd_prefix_cache *pc;
    double t_emit;                /* when this step's tokens came out of the model */
    uint32_t step_prompt_tokens;  /* prompt tokens in this step\'s batch */
    bool step_paused_background;  /* running background requests sit out this step */
    int32_t *match_blocks;        /* scratch for a prefix match, [n_ctx / block_tokens] */
    struct herd_block_feed *feed; /* the prefix cache's changes, for the state stream */
    uint64_t *snap_hashes;        /* scratch for a feed snapshot, [n_blocks] */
};

/* ------------------------------------------------------------ parameters */

void herd_gen_default_params(struct herd_gen_params *p) {
    memset(p, 0, sizeof *p);
    p->max_tokens = 16;
    p->n = 1;
    herd_sampler_default_params(&p->sampling);
}

void herd_sched_default_params(struct herd_sched_params *p) {
    memset(p, 0, sizeof *p);
    p->batch_tokens = 512;
    p->max_queue = 256;
    p->aging_s = 10.0;
    p->prefill_per_decode = 1.0;
    p->background_tokens = 64;
}

enum herd_priority_class herd_priority_class(int32_t priority) {
    return priority < 0 ? HERD_PRIO_HIGH : priority == 0 ? HERD_PRIO_NORMAL : HERD_PRIO_LOW;
}

const char *herd_priority_class_name(enum herd_priority_class c) {
    static const char *const names[HERD_PRIO_CLASSES] = {"high", "normal", "low"};
    return names[c];
}

/* The scheduler's histograms, or NULL pointers when there are none. */
static struct herd_metric *metric(const struct herd_sched *s, size_t offset) {
    return s->p.metrics ? *(struct herd_metric *const *)((const char *)s->p.metrics + offset) : NULL;
}
#define COUNT(s, field, v)   atomic_fetch_add_explicit(&(s)->cnt.field, (v), memory_order_relaxed)
#define OBSERVE(s, field, v) herd_metric_observe(metric((s), offsetof(struct herd_sched_metrics, field)), (v))

/* -------------------------------------------------------------- requests */

struct herd_request *herd_request_create(const int32_t *prompt, uint32_t n_prompt, const struct herd_gen_params *gp,
                                         void (*notify)(void *arg), void *arg, struct herd_error *err) {
    if (n_prompt == 0 || !prompt) {
        herd_error_set(err, HERD_E_INVALID, "the prompt is empty");
        return NULL;
    }
    if (gp->n < 1 || gp->n > HERD_MAX_CHOICES || (gp->max_tokens < 1 && !gp->resume_tokens) ||
        gp->n_stop > HERD_MAX_STOPS || gp->top_logprobs > HERD_MAX_TOP_LOGPROBS) {
        herd_error_set(err, HERD_E_INVALID,
                       "n must be 1..%d, max_tokens >= 1, at most %d stop strings, top_logprobs <= %d",
                       HERD_MAX_CHOICES, HERD_MAX_STOPS, HERD_MAX_TOP_LOGPROBS);
        return NULL;
    }
    if (gp->resume_tokens && (gp->n != 1 || gp->resume_tokens >= n_prompt)) {
        herd_error_set(err, HERD_E_INVALID, "a resumed generation has one choice and a prompt before its tokens");
        return NULL;
    }
    struct herd_request *r = calloc(1, sizeof *r);
    if (!r) goto nomem;
    atomic_init(&r->refs, 1);
    atomic_init(&r->cancel, false);
    pthread_mutex_init(&r->lock, NULL);
    r->notify = notify;
    r->notify_arg = arg;
    r->gp = *gp;
    r->gp.sampling.bias = NULL;
    herd_grammar_retain(r->gp.grammar);
    r->n_prompt = n_prompt;
    herd_buf_init(&r->ev_text, EVENT_TEXT_MAX_BYTES);
    herd_buf_init(&r->polled_text, EVENT_TEXT_MAX_BYTES);
    for (uint32_t i = 0; i < gp->n; i++) r->ch[i].seq = -1;
    if (!(r->prompt = malloc(n_prompt * sizeof *r->prompt))) goto nomem;
    memcpy(r->prompt, prompt, n_prompt * sizeof *prompt);
    for (uint32_t i = 0; i < gp->n_stop; i++) {
        if (!gp->stop[i] || !gp->stop[i][0]) {
            herd_error_set(err, HERD_E_INVALID, "stop strings must not be empty");
            goto fail;
        }
        if (!(r->stops[i] = strdup(gp->stop[i]))) goto nomem;
        r->gp.stop[i] = r->stops[i];
    }
    for (uint32_t i = 0; i < gp->n; i++) {
        struct choice *c = &r->ch[i];
        if (!(c->gen = malloc((gp->max_tokens ? gp->max_tokens : 1) * sizeof *c->gen))) goto nomem;
        herd_stop_match_init(&c->stop, (const char *const *)r->stops, gp->n_stop);
    }
    /* as usage counts them: a resume's tokens are output, not prompt */
    r->stats.prompt_tokens = n_prompt - gp->resume_tokens;
    r->stats.completion_tokens = gp->resume_tokens;
    /* the samplers are made at submit (n_vocab is known there): keep a
     * copy of the bias list until then */
    if (gp->sampling.n_bias) {
        struct herd_logit_bias *b = malloc(gp->sampling.n_bias * sizeof *b);
        if (!b) goto nomem;
        memcpy(b, gp->sampling.bias, gp->sampling.n_bias * sizeof *b);
        r->gp.sampling.bias = b;
    }
    return r;
nomem:
    herd_error_set(err, HERD_E_NOMEM, "out of memory creating a request");
fail:
    if (r) {
        atomic_store(&r->refs, 1);
        herd_request_release(r);
    }
    return NULL;
}

static void request_free(struct herd_request *r) {
    for (uint32_t i = 0; i < r->gp.n; i++) {
        herd_sampler_destroy(r->ch[i].sampler);
        herd_grammar_state_destroy(r->ch[i].gstate);
        shared_masks_release(r->ch[i].gmasks);
        free(r->ch[i].gmask);
        herd_stop_match_cleanup(&r->ch[i].stop);
        free(r->ch[i].gen);
    }
    for (uint32_t i = 0; i < HERD_MAX_STOPS; i++) free(r->stops[i]);
    herd_grammar_destroy(r->gp.grammar);
    free((void *)r->gp.sampling.bias);
    free(r->prompt);
    free(r->ev);
    free(r->ev_text_off);
    herd_buf_cleanup(&r->ev_text);
    herd_buf_cleanup(&r->polled_text);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

void herd_request_release(struct herd_request *r) {
    if (r && atomic_fetch_sub(&r->refs, 1) == 1) request_free(r);
}

void herd_request_cancel(struct herd_request *r) { atomic_store(&r->cancel, true); }

size_t herd_request_poll(struct herd_request *r, struct herd_event *out, size_t max) {
    pthread_mutex_lock(&r->lock);
    if (r->n_ev == 0 || max == 0) {
        pthread_mutex_unlock(&r->lock);
        return 0;
    }
    size_t k = r->n_ev < max ? r->n_ev : max;
    size_t text_end = k < r->n_ev ? r->ev_text_off[k] : r->ev_text.len;
    r->polled_text.len = 0;
    if (text_end && !herd_buf_append(&r->polled_text, r->ev_text.data, text_end)) {
        pthread_mutex_unlock(&r->lock); /* out of memory: try again on the next poll */
        return 0;
    }
    for (size_t i = 0; i < k; i++) {
        out[i] = r->ev[i];
        size_t end = i + 1 < r->n_ev ? r->ev_text_off[i + 1] : r->ev_text.len;
        out[i].text_len = end - r->ev_text_off[i];
        out[i].text = out[i].text_len ? (const char *)r->polled_text.data + r->ev_text_off[i] : "";
    }
    /* drop what was handed out */
    memmove(r->ev, r->ev + k, (r->n_ev - k) * sizeof *r->ev);
    memmove(r->ev_text_off, r->ev_text_off + k, (r->n_ev - k) * sizeof *r->ev_text_off);
    r->n_ev -= k;
    for (size_t i = 0; i < r->n_ev; i++) r->ev_text_off[i] -= text_end;
    if (r->ev_text.len > text_end) memmove(r->ev_text.data, r->ev_text.data + text_end, r->ev_text.len - text_end);
    r->ev_text.len -= text_end;
    pthread_mutex_unlock(&r->lock);
    return k;
}

bool herd_request_done(struct herd_request *r) {
    pthread_mutex_lock(&r->lock);
    bool done = r->all_finished && r->n_ev == 0;
    pthread_mutex_unlock(&r->lock);
    return done;
}

void herd_request_stats(struct herd_request *r, struct herd_request_stats *out) {
    pthread_mutex_lock(&r->lock);
    *out = r->stats;
    pthread_mutex_unlock(&r->lock);
}

/* Queues an event (scheduler thread); the caller notifies afterwards. An
 * event that cannot be stored (out of memory, or 64 MiB of unread text)
 * cancels the request rather than dropping text silently. */
static void push_event(struct herd_request *r, const struct herd_event *e, const char *text, size_t len) {
    pthread_mutex_lock(&r->lock);
    bool ok = true;
    if (r->n_ev == r->cap_ev) {
        size_t cap = r->cap_ev ? r->cap_ev * 2 : 16;
        struct herd_event *ev = realloc(r->ev, cap * sizeof *ev);
        if (ev) r->ev = ev;
        size_t *off = ev ? realloc(r->ev_text_off, cap * sizeof *off) : NULL;
        if (off) r->ev_text_off = off;
        if (ev && off)
            r->cap_ev = cap;
        else
            ok = false;
    }
    size_t at = r->ev_text.len;
    if (ok && !herd_buf_append(&r->ev_text, text, len)) ok = false;
    if (ok) {
        r->ev[r->n_ev] = *e;
        r->ev_text_off[r->n_ev++] = at;
    } else {
        atomic_store(&r->cancel, true);
    }
    pthread_mutex_unlock(&r->lock);
}

/* Under the request's lock, so that herd_request_set_notify can promise
 * the old callback is done with. */
static void notify(struct herd_request *r) {
    pthread_mutex_lock(&r->lock);
    if (r->notify) r->notify(r->notify_arg);
    pthread_mutex_unlock(&r->lock);
}

void herd_request_set_notify(struct herd_request *r, void (*fn)(void *arg), void *arg) {
    pthread_mutex_lock(&r->lock);
    r->notify = fn;
    r->notify_arg = arg;
    pthread_mutex_unlock(&r->lock);
}

/* ------------------------------------------------------------- scheduler */

static bool background(const struct herd_request *r) { return r->gp.priority >= HERD_PRIORITY_BACKGROUND; }

static double effective_priority(const struct herd_sched *s, const struct herd_request *r, double now) {
    double waited = r->stats.submitted_s > 0 ? now - r->stats.submitted_s : 0;
    double p = (double)r->gp.priority - (s->p.aging_s > 0 ? floor(waited / s->p.aging_s) : 0);
    /* background work ages among itself, never into the foreground */
    return background(r) && p < HERD_PRIORITY_BACKGROUND ? HERD_PRIORITY_BACKGROUND : p;
}

/* Order of service: effective priority, then arrival. */
static bool before(const struct herd_sched *s, const struct herd_request *a, const struct herd_request *b, double now) {
    double pa = effective_priority(s, a, now), pb = effective_priority(s, b, now);
    if (pa != pb) return pa < pb;
    return a->arrival < b->arrival;
}

typedef bool (*request_order)(const struct herd_sched *s, const struct herd_request *a, const struct herd_request *b,
                              double now);

/* Insertion sort by less: lists are short and nearly sorted. */
static void sort_requests_by(const struct herd_sched *s, struct herd_request **v, uint32_t n, double now,
                             request_order less) {
    for (uint32_t i = 1; i < n; i++) {
        struct herd_request *x = v[i];
        uint32_t j = i;
        while (j > 0 && less(s, x, v[j - 1], now)) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
}

static void sort_requests(const struct herd_sched *s, struct herd_request **v, uint32_t n, double now) {
    sort_requests_by(s, v, n, now, before);
}

static uint32_t known_tokens(const struct herd_request *r, const struct choice *c);

/* Prompt tokens choice 0 still has to compute before it can sample (the
 * shared prompt's, before the fork). */
static uint32_t prompt_left(const struct herd_request *r) {
    const struct choice *c = &r->ch[0];
    const uint32_t target = r->gp.n > 1 && !r->forked ? r->n_prompt - 1 : known_tokens(r, c);
    return c->n_computed < target ? target - c->n_computed : 0;
}

/* Order of prompt chunks within a step: effective priority, then the
 * fewest prompt tokens left, then arrival. While streams generate, a step
 * computes only a few prompt tokens (prefill_per_decode: 4 at position
 * 1,000 with 16 slots), and in arrival order one uncached 1,000-token
 * prompt took them all for about 140 steps: a request that found 992 of
 * its 1,032 tokens in the prefix cache waited those seconds for its 40
 * (bench/route.sh, TTFT median 3.7 s at 48 % hits). Fewest left first
 * is shortest-remaining-time order, which minimises the mean wait;
 * SGLang's longest-prefix-match queue order is its cousin. A long prompt
 * is not starved for ever: aging (aging_s) moves it up a priority level. */
static bool prefill_before(const struct herd_sched *s, const struct herd_request *a, const struct herd_request *b,
                           double now) {
    double pa = effective_priority(s, a, now), pb = effective_priority(s, b, now);
    if (pa != pb) return pa < pb;
    const uint32_t la = prompt_left(a), lb = prompt_left(b);
    if (la != lb) return la < lb;
    return a->arrival < b->arrival;
}

static uint32_t known_tokens(const struct herd_request *r, const struct choice *c) { return r->n_prompt + c->n_gen; }

static int32_t token_at(const struct herd_request *r, const struct choice *c, uint32_t pos) {
    return pos < r->n_prompt ? r->prompt[pos] : c->gen[pos - r->n_prompt];
}

/* seqs_in_use counts the sequence slots reserved by running requests:
 * one per unfinished choice, from admission on, so that the forks of a
 * request's choices always find a slot. */
static void free_choice_seq(struct herd_sched *s, struct choice *c) {
    if (c->seq >= 0) {
        herd_kv_seq_free(s->ctx->kv, c->seq);
        c->seq = -1;
    }
}

static void remove_at(struct herd_request **v, uint32_t *n, uint32_t i) {
    memmove(v + i, v + i + 1, (*n - i - 1) * sizeof *v);
    (*n)--;
}

/* Frees a running request's blocks and puts it back in the waiting list. */
static void preempt(struct herd_sched *s, struct herd_request *r) {
    for (uint32_t i = 0; i < r->gp.n; i++) {
        free_choice_seq(s, &r->ch[i]);
        r->ch[i].n_computed = 0;
        r->ch[i].n_cached_blocks = 0;
        r->ch[i].chain_hash = 0;
    }
    s->seqs_in_use -= r->n_active;
    r->forked = false;
    r->state = REQ_WAITING;
    for (uint32_t i = 0; i < s->n_running; i++)
        if (s->running[i] == r) {
            remove_at(s->running, &s->n_running, i);
            break;
        }
    s->waiting[s->n_waiting++] = r;
    pthread_mutex_lock(&s->lock);
    s->n_queued++;
    pthread_mutex_unlock(&s->lock);
    COUNT(s, preemptions, 1);
    pthread_mutex_lock(&r->lock);
    r->stats.preemptions++;
    pthread_mutex_unlock(&r->lock);
}

/* The running request served last (lowest priority, newest), other than
 * keep; NULL if there is none or it is not below limit_prio's request. */
static struct herd_request *preemption_victim(struct herd_sched *s, const struct herd_request *keep,
                                              const struct herd_request *must_outrank, double now) {
    struct herd_request *v = NULL;
    for (uint32_t i = 0; i < s->n_running; i++) {
        struct herd_request *r = s->running[i];
        if (r == keep) continue;
        if (!v || before(s, v, r, now)) v = r;
    }
    if (v && must_outrank && !before(s, must_outrank, v, now)) return NULL;
    return v;
}

/* The request's metrics, once: when its last choice finishes, before the
 * event that lets its client see the end (so a scrape after the answer
 * counts it), or when it retires without that. */
static void account_finished(struct herd_sched *s, struct herd_request *r) {
    if (r->accounted) return;
    r->accounted = true;
    pthread_mutex_lock(&r->lock);
    r->stats.finished_s = herd_time_now_s();
    const struct herd_request_stats st = r->stats;
    pthread_mutex_unlock(&r->lock);
    if (st.submitted_s > 0) OBSERVE(s, e2e, st.finished_s - st.submitted_s);
    if (st.admitted_s > 0) OBSERVE(s, queue_time, st.admitted_s - st.submitted_s);
    if (st.admitted_s > 0 && st.first_token_s > 0) OBSERVE(s, prefill_time, st.first_token_s - st.admitted_s);
    COUNT(s, finished[r->finish_reason], 1);
}

/* Finishes a choice: emits its last event, frees its sequence. */
static void finish_choice(struct herd_sched *s, struct herd_request *r, uint32_t i, enum herd_finish why,
                          struct herd_event *e, const char *text, size_t len) {
    struct choice *c = &r->ch[i];
    if (c->finished) return;
    c->finished = true;
    if (c->n_gen >= 2) OBSERVE(s, tpot, (c->last_token_s - c->first_token_s) / (c->n_gen - 1));
    const uint32_t reason = why >= HERD_FINISH_CANCELLED ? 2 : (uint32_t)why - 1; /* an error counts as abort */
    if (reason > r->finish_reason) r->finish_reason = reason;
    bool last = true;
    for (uint32_t k = 0; k < r->gp.n; k++) last = last && r->ch[k].finished;
    if (last) account_finished(s, r);
    e->finish = why;
    push_event(r, e, text, len);
    free_choice_seq(s, c);
    r->n_active--;
    if (r->state == REQ_RUNNING) s->seqs_in_use--;
}

/* The request is over (all choices finished): it leaves the scheduler. */
static void retire(struct herd_sched *s, struct herd_request *r) {
    for (uint32_t i = 0; i < r->gp.n; i++) free_choice_seq(s, &r->ch[i]);
    account_finished(s, r);
    pthread_mutex_lock(&r->lock);
    r->all_finished = true;
    pthread_mutex_unlock(&r->lock);
    r->state = REQ_DONE;
    notify(r);
    herd_request_release(r);
}

static void end_request(struct herd_sched *s, struct herd_request *r, enum herd_finish why) {
    for (uint32_t i = 0; i < r->gp.n; i++) {
        struct herd_event e = {.choice = i, .token = -1};
        finish_choice(s, r, i, why, &e, "", 0);
    }
}

static void cancel_request(struct herd_sched *s, struct herd_request *r) { end_request(s, r, HERD_FINISH_CANCELLED); }

/* Drops from out the output bytes the client already has (a resume's
 * first resume_skip_bytes). */
static void skip_sent(struct choice *c, struct herd_buf *out) {
    if (!c->skip_bytes || !out->len) return;
    const size_t k = out->len < c->skip_bytes ? out->len : (size_t)c->skip_bytes;
    memmove(out->data, out->data + k, out->len - k);
    out->len -= k;
    c->skip_bytes -= k;
}

/* A resumed request (herd_gen_params.resume_tokens): the text of the
 * tokens already generated goes through the detokenizer and the stop
 * strings as it did where it was generated, leaving both holding back what
 * they held at the break; what of it the client lacks is the first event.
 * A stop string inside it, or no new tokens allowed, ends the choice at
 * admission (resume_finish). Before submit: nobody polls r yet. */
static enum herd_status replay_resumed(struct herd_request *r, struct herd_error *err) {
    struct choice *c = &r->ch[0];
    struct herd_buf out;
    herd_buf_init(&out, EVENT_TEXT_MAX_BYTES);
    char piece[DETOK_BYTES];
    enum herd_stop_result sr = HERD_STOP_MORE;
    for (uint32_t k = r->n_prompt - r->gp.resume_tokens; k < r->n_prompt && sr == HERD_STOP_MORE; k++) {
        const size_t m = herd_detok_push(&c->detok, r->prompt[k], piece, sizeof piece);
        sr = herd_stop_match_push(&c->stop, piece, m, &out);
    }
    if (sr == HERD_STOP_MATCHED) {
        r->resume_finish = HERD_FINISH_STOP;
    } else if (sr == HERD_STOP_MORE && r->gp.max_tokens == 0) {
        /* as the run that never broke ended at its last token */
        const size_t m = herd_detok_flush(&c->detok, piece, sizeof piece);
        sr = herd_stop_match_push(&c->stop, piece, m, &out);
        if (sr == HERD_STOP_MORE && !herd_stop_match_flush(&c->stop, &out)) sr = HERD_STOP_NOMEM;
        r->resume_finish = sr == HERD_STOP_MATCHED ? HERD_FINISH_STOP : HERD_FINISH_LENGTH;
    }
    c->skip_bytes = r->gp.resume_skip_bytes;
    skip_sent(c, &out);
    if (sr != HERD_STOP_NOMEM && out.len) {
        struct herd_event e = {.choice = 0, .token = -1};
        push_event(r, &e, (const char *)out.data, out.len);
    }
    herd_buf_cleanup(&out);
    if (sr == HERD_STOP_NOMEM || atomic_load(&r->cancel))
        return herd_error_set(err, HERD_E_NOMEM, "out of memory replaying a resumed generation");
    return HERD_OK;
}

/* The longest token piece a grammar sees; longer tokens are never allowed
 * under one (no vocabulary has them: the longest are ~100 bytes). */
#define GRAMMAR_PIECE_MAX 1024

/* Masks of this many recent states per grammar text: a JSON answer
 * visits a few dozen (strings, numbers, separators at each depth), a
 * schema's requests mostly the same ones. */
#define GRAMMAR_CACHE_STATES 256

/* The vocabulary's trie for grammars, made once. */
static enum herd_status grammar_vocab(struct herd_sched *s, struct herd_error *err) {
    pthread_mutex_lock(&s->gvocab_lock);
    enum herd_status rc = HERD_OK;
    if (!s->gvocab) {
        char *store = malloc((size_t)s->n_vocab * 64 + GRAMMAR_PIECE_MAX);
        char **pieces = malloc(s->n_vocab * sizeof *pieces);
        uint32_t *lens = malloc(s->n_vocab * sizeof *lens);
        bool *eog = malloc(s->n_vocab * sizeof *eog);
        size_t used = 0, cap = (size_t)s->n_vocab * 64 + GRAMMAR_PIECE_MAX;
        rc = store && pieces && lens && eog ? HERD_OK : HERD_E_NOMEM;
        for (uint32_t t = 0; rc == HERD_OK && t < s->n_vocab; t++) {
            if (cap - used < GRAMMAR_PIECE_MAX) {
                /* pieces point into store: keep offsets until it stops moving */
                rc = HERD_E_NOMEM;
                break;
            }
            size_t n = herd_vocab_piece(s->vocab, (int32_t)t, store + used, GRAMMAR_PIECE_MAX);
            if (n > GRAMMAR_PIECE_MAX) n = 0;
            pieces[t] = (char *)(uintptr_t)used;
            lens[t] = (uint32_t)n;
            eog[t] = herd_vocab_is_eog(s->vocab, (int32_t)t);
            used += n;
        }
        for (uint32_t t = 0; rc == HERD_OK && t < s->n_vocab; t++) pieces[t] = store + (uintptr_t)pieces[t];
        if (rc == HERD_OK)
            rc = herd_grammar_vocab_create((const char *const *)pieces, lens, eog, s->n_vocab, &s->gvocab, err);
        else
            herd_error_set(err, rc, "out of memory building the vocabulary's grammar trie");
        free(store);
        free(pieces);
        free(lens);
        free(eog);
    }
    pthread_mutex_unlock(&s->gvocab_lock);
    return rc;
}

/* The shared masks for grammar g (a new entry for a new text, replacing
 * the least recently used one no request holds; a private one when all
 * are held). With a reference for the caller; NULL on out of memory. */
static struct shared_masks *shared_masks_for(struct herd_sched *s, const struct herd_grammar *g) {
    const uint64_t fp = herd_grammar_fingerprint(g);
    pthread_mutex_lock(&s->gvocab_lock);
    struct shared_masks *m = NULL;
    int free_slot = -1;
    for (int i = 0; i < GRAMMAR_SHARED && !m; i++) {
        struct shared_masks *e = s->gshared[i];
        if (e && e->fingerprint == fp) m = e;
        if (!e || atomic_load(&e->refs) == 1) /* empty, or held by the table alone */
            if (free_slot < 0 || (s->gshared[free_slot] && (!e || e->last_used < s->gshared[free_slot]->last_used)))
                free_slot = i;
    }
    if (!m && (m = calloc(1, sizeof *m))) {
        m->fingerprint = fp;
        atomic_init(&m->refs, 1);
        pthread_mutex_init(&m->lock, NULL);
        if (!(m->cache = herd_grammar_mask_cache_create(s->gvocab, GRAMMAR_CACHE_STATES))) {
            pthread_mutex_destroy(&m->lock);
            free(m);
            m = NULL;
        } else if (free_slot >= 0) {
            shared_masks_release(s->gshared[free_slot]);
            s->gshared[free_slot] = m;
            atomic_fetch_add(&m->refs, 1); /* the table's */
        }
        if (m) atomic_fetch_sub(&m->refs, 1); /* the caller's is added below */
    }
    if (m) {
        atomic_fetch_add(&m->refs, 1);
        m->last_used = ++s->gshared_clock;
    }
    pthread_mutex_unlock(&s->gvocab_lock);
    return m;
}

/* Moves choice c's grammar state over token tok's text; false when the
 * grammar refuses it. */
static bool grammar_feed(const struct herd_sched *s, struct choice *c, int32_t tok) {
    char piece[GRAMMAR_PIECE_MAX];
    size_t n = herd_vocab_piece(s->vocab, tok, piece, sizeof piece);
    struct herd_error e = {0};
    return n <= sizeof piece && herd_grammar_accept(c->gstate, piece, n, &e) == HERD_OK;
}

/* Makes the samplers (n_vocab is known here) and checks the prompt. */
static enum herd_status prepare_request(struct herd_sched *s, struct herd_request *r, struct herd_error *err) {
    for (uint32_t i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || (uint32_t)r->prompt[i] >= s->n_vocab)
            return herd_error_set(err, HERD_E_INVALID, "prompt token %d at position %u is outside the vocabulary",
                                  r->prompt[i], i);
    for (uint32_t i = 0; i < r->gp.n; i++) {
        struct choice *c = &r->ch[i];
        struct herd_sampler_params sp = r->gp.sampling;
        sp.seed = r->gp.sampling.seed + i;
        enum herd_status rc = herd_sampler_create(&sp, s->n_vocab, &c->sampler, err);
        if (rc != HERD_OK) return rc;
        for (uint32_t k = 0; k < r->n_prompt; k++) herd_sampler_accept(c->sampler, r->prompt[k]);
        herd_detok_init(&c->detok, s->vocab);
        /* the output continues the prompt's text: a SentencePiece space
         * prefix on its first token is a real space (as vLLM's incremental
         * detokenization, which sees the prompt, keeps it) */
        c->detok.started = !r->gp.text_from_start;
        if (r->gp.grammar) {
            if ((rc = grammar_vocab(s, err)) != HERD_OK) return rc;
            c->gstate = herd_grammar_state_create(r->gp.grammar, err);
            c->gmasks = shared_masks_for(s, r->gp.grammar);
            c->gmask = malloc(((s->n_vocab + 63) / 64) * sizeof *c->gmask);
            if (!c->gstate || !c->gmasks || !c->gmask)
                return herd_error_set(err, HERD_E_NOMEM, "out of memory for a grammar");
            /* a resumed generation's tokens are text the grammar has seen */
            for (uint32_t k = r->n_prompt - r->gp.resume_tokens; k < r->n_prompt; k++)
                if (!grammar_feed(s, c, r->prompt[k]))
                    return herd_error_set(err, HERD_E_INVALID,
                                          "the resumed text does not follow the request's grammar");
        }
    }
    r->n_active = r->gp.n;
    return r->gp.resume_tokens ? replay_resumed(r, err) : HERD_OK;
}

/* Starts r: choice 0's sequence with the blocks for the whole prompt (or
 * for everything it knows, when resuming with one choice). */
/* Evicts cached blocks no sequence uses until n are free (or none is
 * left to evict). */
static void free_blocks_for(struct herd_sched *s, uint32_t n) {
    uint32_t have = herd_kv_free_blocks(s->ctx->kv);
    if (s->pc && have < n) herd_prefix_cache_evict(s->pc, n - have);
}

/* Starts r: choice 0's sequence begins with the prompt's blocks found in
 * the prefix cache, and blocks for the rest of the prompt (or of
 * everything it knows, when resuming with one choice) are reserved. */
static enum herd_status admit(struct herd_sched *s, struct herd_request *r, struct herd_error *err) {
    struct choice *c0 = &r->ch[0];
    const uint32_t bt = herd_kv_params(s->ctx->kv)->block_tokens;
    int32_t seq;
    enum herd_status rc = herd_kv_seq_new(s->ctx->kv, &seq, err);
    if (rc != HERD_OK) return rc;
    /* the last prompt token is always computed (its logits are needed) */
    uint32_t matched = 0, looked_up = 0;
    uint64_t last_hash = 0;
    if (s->pc && r->n_prompt > 1) {
        looked_up = (r->n_prompt - 1) / bt;
        matched = herd_prefix_cache_match(s->pc, r->prompt, looked_up, s->match_blocks, &last_hash);
    }
    if (matched && (rc = herd_kv_seq_adopt(s->ctx->kv, seq, s->match_blocks, matched, err)) != HERD_OK) {
        herd_kv_seq_free(s->ctx->kv, seq);
        return rc;
    }
    uint32_t start = matched * bt;
    uint32_t reserve = r->gp.n == 1 ? known_tokens(r, c0) : r->n_prompt;
    uint32_t need = (reserve + bt - 1) / bt - matched;
    free_blocks_for(s, need);
    rc = herd_kv_seq_prepare(s->ctx->kv, seq, start, reserve - start, err);
    if (rc != HERD_OK) {
        herd_kv_seq_free(s->ctx->kv, seq);
        return rc;
    }
    /* prepare set the length to `reserve`; positions are written as the
     * steps feed them */
    if (s->pc) herd_prefix_cache_count(s->pc, looked_up, matched);
    c0->seq = seq;
    c0->n_computed = start;
    c0->n_cached_blocks = matched;
    c0->chain_hash = last_hash;
    s->seqs_in_use += r->n_active;
    r->state = REQ_RUNNING;
    pthread_mutex_lock(&r->lock);
    if (r->stats.admitted_s == 0) r->stats.cached_tokens = start; /* the first admission's, not a resume's */
    pthread_mutex_unlock(&r->lock);
    return HERD_OK;
}

/* Offers the full blocks each running choice has computed since the last
 * step to the prefix cache. */
static void cache_new_blocks(struct herd_sched *s) {
    if (!s->pc) return;
    const uint32_t bt = herd_kv_params(s->ctx->kv)->block_tokens;
    int32_t tok[256];
    if (bt > 256) return;
    for (uint32_t k = 0; k < s->n_running; k++) {
        struct herd_request *r = s->running[k];
        for (uint32_t i = 0; i < r->gp.n; i++) {
            struct choice *c = &r->ch[i];
            if (c->seq < 0) continue;
            uint32_t n_blocks;
            const int32_t *blocks = herd_kv_seq_blocks(s->ctx->kv, c->seq, &n_blocks);
            while ((c->n_cached_blocks + 1) * bt <= c->n_computed && c->n_cached_blocks < n_blocks) {
                uint32_t b = c->n_cached_blocks;
                if (blocks[b] < 0) break; /* released behind a sliding window before it was offered */
                for (uint32_t t = 0; t < bt; t++) tok[t] = token_at(r, c, b * bt + t);
                c->chain_hash = herd_block_hash(c->chain_hash, tok, bt);
                herd_prefix_cache_insert(s->pc, c->chain_hash, tok, blocks[b]);
                c->n_cached_blocks++;
            }
        }
    }
}

/* A resume with nothing left to generate (herd_gen_params.resume_tokens)
 * ends without running: its text went out at submit. The first waiting
 * request. */
static void finish_resumed(struct herd_sched *s, struct herd_request *r, uint32_t at) {
    struct herd_event e = {.choice = 0, .token = -1};
    finish_choice(s, r, 0, r->resume_finish, &e, "", 0);
    remove_at(s->waiting, &s->n_waiting, at);
    pthread_mutex_lock(&s->lock);
    s->n_queued--;
    pthread_mutex_unlock(&s->lock);
    retire(s, r);
}

/* Whether a running request is still to offer the prefix cache blocks
 * that r's prompt starts with (it is computing them): r then waits for
 * them, a few steps, instead of computing the same blocks beside it. Two
 * users of one uncached 1,000-token system prompt arriving together were
 * two full prefills: admission looks the cache up once, and the second
 * found only what the first had computed by then. Only a request that is
 * not paused for r's sake counts (background work sits out while a
 * foreground prompt is computed). */
static bool prefix_in_progress(const struct herd_sched *s, const struct herd_request *r) {
    if (!s->pc || r->n_prompt < 2) return false;
    const uint32_t bt = herd_kv_params(s->ctx->kv)->block_tokens;
    const uint32_t lookup = (r->n_prompt - 1) / bt * bt; /* the tokens admit looks up */
    for (uint32_t k = 0; k < s->n_running; k++) {
        const struct herd_request *q = s->running[k];
        const struct choice *c = &q->ch[0];
        if (c->seq < 0 || (background(q) && !background(r))) continue;
        const uint32_t n = q->n_prompt < lookup ? q->n_prompt : lookup;
        if (n < bt || (c->n_cached_blocks + 1) * bt > n) continue; /* nothing r could use is still to come */
        /* computed past a block it never offered (released behind a
         * sliding window): the rest will not come either */
        if (c->n_computed >= (c->n_cached_blocks + 1) * bt) continue;
        uint32_t same = 0;
        while (same < n && q->prompt[same] == r->prompt[same]) same++;
        if (same / bt > c->n_cached_blocks) return true;
    }
    return false;
}

static void admit_waiting(struct herd_sched *s, double now) {
    sort_requests(s, s->waiting, s->n_waiting, now);
    uint32_t at = 0; /* waiting[0, at) wait for a prefix a running request computes */
    while (at < s->n_waiting) {
        struct herd_request *r = s->waiting[at];
        if (r->resume_finish) {
            finish_resumed(s, r, at);
            continue;
        }
        if (prefix_in_progress(s, r)) {
            at++;
            continue;
        }
        uint32_t slots = r->n_active + (r->ch[0].finished ? 1 : 0); /* + the prompt carrier, see fork_choices */
        if (s->seqs_in_use + slots > s->ctx->params.max_seqs) {
            struct herd_request *v = preemption_victim(s, NULL, r, now);
            if (!v) return;
            preempt(s, v);
            sort_requests(s, s->waiting, s->n_waiting, now);
            continue;
        }
        struct herd_error err = {0};
        enum herd_status rc = admit(s, r, &err);
        if (rc == HERD_E_AGAIN) {
            /* no blocks: a lower-priority running request makes room */
            struct herd_request *v = preemption_victim(s, NULL, r, now);
            if (!v) return;
            preempt(s, v);
            sort_requests(s, s->waiting, s->n_waiting, now);
            continue;
        }
        remove_at(s->waiting, &s->n_waiting, at);
        pthread_mutex_lock(&s->lock);
        s->n_queued--;
        pthread_mutex_unlock(&s->lock);
        if (rc == HERD_OK && r->stats.admitted_s == 0) COUNT(s, prompt_tokens, r->n_prompt - r->gp.resume_tokens);
        if (rc != HERD_OK) { /* cannot happen for validated requests; end it rather than loop */
            cancel_request(s, r);
            retire(s, r);
            continue;
        }
        pthread_mutex_lock(&r->lock);
        if (r->stats.admitted_s == 0) r->stats.admitted_s = now;
        pthread_mutex_unlock(&r->lock);
        s->running[s->n_running++] = r;
    }
}

/* Choices 1..n-1 start as copies of choice 0's prompt prefix. */
static bool fork_choices(struct herd_sched *s, struct herd_request *r) {
    for (uint32_t i = 1; i < r->gp.n; i++) {
        struct choice *c = &r->ch[i];
        if (c->finished || c->seq >= 0) continue;
        struct herd_error err = {0};
        if (herd_kv_seq_fork(s->ctx->kv, r->ch[0].seq, r->n_prompt - 1, &c->seq, &err) != HERD_OK) return false;
        c->n_computed = r->n_prompt - 1;
    }
    r->forked = true;
    /* a resumed request whose choice 0 had finished only needed its
     * sequence to carry the shared prompt */
    if (r->ch[0].finished) free_choice_seq(s, &r->ch[0]);
    return true;
}

/* Adds tokens [c->n_computed, end) of a choice to the batch, logits on
 * the last if want_last. */
static void add_tokens(struct herd_sched *s, uint32_t *n, uint32_t *n_rows, struct herd_request *r, uint32_t ci,
                       uint32_t end, bool want_last) {
    struct choice *c = &r->ch[ci];
    for (uint32_t pos = c->n_computed; pos < end; pos++) {
        s->b_tok[*n] = token_at(r, c, pos);
        s->b_pos[*n] = pos;
        s->b_seq[*n] = c->seq;
        s->b_want[*n] = want_last && pos + 1 == end;
        if (s->b_want[*n]) s->rows[(*n_rows)++] = (struct out_row){r, ci, -1};
        if (pos < r->n_prompt) s->step_prompt_tokens++;
        (*n)++;
    }
    c->n_computed = end;
}

/* Which requests make_room may preempt for room: none, background ones
 * only, or any of lower priority. */
enum room_preempt { ROOM_PREEMPT_NONE, ROOM_PREEMPT_BACKGROUND, ROOM_PREEMPT_LOWER };

/* Makes KV room for [pos, pos + len) of a choice, preempting a
 * lower-priority request (as `who` allows) if the pool is empty. The
 * victim is the lowest in service order, below r: build_batch has not put
 * it in the batch yet. False: no room now. */
static bool make_room(struct herd_sched *s, struct herd_request *r, struct choice *c, uint32_t pos, uint32_t len,
                      enum room_preempt who, double now) {
    for (;;) {
        struct herd_error err = {0};
        if (herd_kv_seq_prepare(s->ctx->kv, c->seq, pos, len, &err) == HERD_OK) return true;
        /* cached blocks nobody uses go first */
        uint32_t before_evict = herd_kv_free_blocks(s->ctx->kv);
        free_blocks_for(s, before_evict + len / herd_kv_params(s->ctx->kv)->block_tokens + 2);
        if (herd_kv_free_blocks(s->ctx->kv) > before_evict) continue;
        if (who == ROOM_PREEMPT_NONE) return false;
        struct herd_request *v = preemption_victim(s, r, NULL, now);
        if (!v || before(s, v, r, now)) return false;
        if (who == ROOM_PREEMPT_BACKGROUND && !background(v)) return false;
        preempt(s, v);
    }
}

/* Whether r has more than decode tokens to compute: prompt chunks or a
 * recomputation after a preemption (phase 2 of build_batch). */
static bool prefilling(const struct herd_request *r) {
    if (r->gp.n > 1 && !r->forked) {
        /* choice 0 carries the shared prompt (finished or not), then the
         * forks recompute what they had generated before a preemption */
        if (r->ch[0].n_computed + 1 < r->n_prompt) return true;
        for (uint32_t i = 0; i < r->gp.n; i++)
            if (!r->ch[i].finished && r->ch[i].n_gen) return true;
        return false;
    }
    for (uint32_t i = 0; i < r->gp.n; i++) {
        const struct choice *c = &r->ch[i];
        if (c->seq >= 0 && !c->finished && c->n_computed + 1 < known_tokens(r, c)) return true;
    }
    return false;
}

/* Whether any running foreground request is prefilling, whether any
 * foreground request runs at all, and whether any background one does. */
static void foreground_work(const struct herd_sched *s, bool *fg_prefilling, bool *fg_running, bool *bg_running) {
    *fg_prefilling = *fg_running = *bg_running = false;
    for (uint32_t k = 0; k < s->n_running; k++) {
        const struct herd_request *r = s->running[k];
        if (background(r)) {
            *bg_running = true;
            continue;
        }
        *fg_running = true;
        if (prefilling(r)) *fg_prefilling = true;
    }
}

/* Fills the batch. Returns the number of tokens. */
static uint32_t build_batch(struct herd_sched *s, uint32_t *n_rows, double now) {
    uint32_t n = 0, budget = s->p.batch_tokens, max_rows = s->ctx->params.max_outputs;
    *n_rows = 0;
    s->step_prompt_tokens = 0;
    sort_requests(s, s->running, s->n_running, now);
    /* background requests sit out while a foreground prompt is computed,
     * and keep steps of their own short (see sched.h) */
    bool fg_prefilling, fg_running, bg_running;
    foreground_work(s, &fg_prefilling, &fg_running, &bg_running);
    s->step_paused_background = fg_prefilling && bg_running;
    if (!fg_running && s->p.background_tokens && s->p.background_tokens < budget) budget = s->p.background_tokens;
    /* 1: one decode token per generating choice. Room for all of a
     * request's choices is made before any is added, so that if the
     * request itself has to give way nothing of it is in the batch. */
    struct herd_request **order = s->order;
    uint32_t n_order = s->n_running;
    memcpy(order, s->running, n_order * sizeof *order);
    for (uint32_t k = 0; k < n_order && n < budget; k++) {
        struct herd_request *r = order[k];
        if (r->state != REQ_RUNNING) continue; /* preempted by a request before it */
        if (fg_prefilling && background(r)) continue;
        if (r->gp.n > 1 && !r->forked) {
            if (r->ch[0].n_computed < r->n_prompt - 1) continue;
            if (!fork_choices(s, r)) continue;
        }
        bool room = true;
        for (uint32_t i = 0; i < r->gp.n && room; i++) {
            struct choice *c = &r->ch[i];
            if (c->finished || c->seq < 0 || c->n_computed + 1 != known_tokens(r, c)) continue;
            if (make_room(s, r, c, c->n_computed, 1, ROOM_PREEMPT_LOWER, now)) continue;
            room = false;
            if (s->n_running > 1) {
                preempt(s, r); /* the lowest-priority request gives way itself */
            } else {
                /* alone and still no block: the pool cannot hold this
                 * choice any longer (n choices of a long context) */
                struct herd_event e = {.choice = i, .token = -1};
                finish_choice(s, r, i, HERD_FINISH_LENGTH, &e, "", 0);
                room = true;
            }
        }
        if (!room) continue;
        for (uint32_t i = 0; i < r->gp.n && n < budget && *n_rows < max_rows; i++) {
            struct choice *c = &r->ch[i];
            if (c->finished || c->seq < 0 || c->n_computed + 1 != known_tokens(r, c)) continue;
            add_tokens(s, &n, n_rows, r, i, c->n_computed + 1, true);
        }
    }
    /* 2: prompt (and recomputation) chunks with what is left, capped
     * while streams are generating (see prefill_per_decode) */
    bool capped = n > 0 && s->p.prefill_per_decode > 0;
    const uint32_t n_decode = n;
    /* the cap counts every sequence slot as a stream, not only those
     * generating now: counting only those starves the slots that are still
     * in their prompts (fewer streams, smaller cap, longer prompts: with 16
     * clients half the slots sat in prefill at one token per step) */
    const uint32_t streams = n_decode > s->ctx->params.max_seqs ? n_decode : s->ctx->params.max_seqs;
    n_order = s->n_running;
    memcpy(order, s->running, n_order * sizeof *order);
    sort_requests_by(s, order, n_order, now, prefill_before);
    for (uint32_t k = 0; k < n_order && n < budget; k++) {
        struct herd_request *r = order[k];
        if (r->state != REQ_RUNNING) continue; /* preempted to make room for a chunk before it */
        if (fg_prefilling && background(r)) continue;
        bool shared_phase = r->gp.n > 1 && !r->forked;
        for (uint32_t i = 0; i < r->gp.n && n < budget; i++) {
            struct choice *c = &r->ch[i];
            /* before the fork only choice 0 runs (finished or not: it
             * carries the shared prompt), up to the prompt's last token */
            if (shared_phase && i > 0) break;
            if ((c->finished && !shared_phase) || c->seq < 0) continue;
            uint32_t target = shared_phase ? r->n_prompt - 1 : known_tokens(r, c);
            bool logits = !shared_phase;
            /* nothing to feed, or only the decode token of step 1 */
            if (c->n_computed >= target || (logits && c->n_computed + 1 == target)) continue;
            uint32_t end = target;
            uint32_t room = budget - n;
            if (capped) {
                /* a prompt token late in a long prompt attends to all before
                 * it: weight it by its position (PREFILL_POS_SCALE tokens of
                 * context cost about one token of matmul) */
                double cap = (double)streams * s->p.prefill_per_decode * PREFILL_POS_SCALE /
                             (PREFILL_POS_SCALE + (double)c->n_computed);
                uint32_t allowed = cap < 1 ? 1 : (uint32_t)cap;
                uint32_t used = n - n_decode;
                room = allowed > used ? allowed - used : 0;
                if (room > budget - n) room = budget - n;
                if (!room) break;
            }
            if (end - c->n_computed > room) {
                end = c->n_computed + room;
                logits = false;
            }
            if (logits && *n_rows >= max_rows) { /* no logits row left: stop one short */
                end--;
                logits = false;
            }
            if (end <= c->n_computed) continue;
            /* prompt chunks preempt nobody, except that a foreground
             * request's may preempt background work: it sits out while
             * they run (so none of it is in this batch), and would
             * otherwise hold the blocks they need for ever (a livelock:
             * test_background_squeeze in tests/engine/test_sched.c) */
            const enum room_preempt who = fg_prefilling && !background(r) ? ROOM_PREEMPT_BACKGROUND : ROOM_PREEMPT_NONE;
            if (!make_room(s, r, c, c->n_computed, end - c->n_computed, who, now)) continue;
            add_tokens(s, &n, n_rows, r, i, end, logits);
        }
    }
    return n;
}

/* log-softmax of the chosen token and the top-k tokens, from raw logits.
 * The normaliser's exps through the kernels' vector exp (a double exp per
 * vocabulary entry was ~290 us a token at 49,152 entries, ~90 now). */
static void logprobs(struct herd_sched *s, const float *logits, struct herd_event *e, uint32_t top_k) {
    const uint32_t n_vocab = s->n_vocab;
    float mx = -INFINITY;
    for (uint32_t i = 0; i < n_vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
    s->ctx->k->softmax_weights(logits, mx, 1.0f, s->lp_work, n_vocab);
    double sum = 0;
    for (uint32_t i = 0; i < n_vocab; i++) sum += s->lp_work[i];
    const float lse = mx + (float)log(sum);
    e->logprob = e->token >= 0 ? logits[e->token] - lse : 0;
    e->n_top = 0;
    for (uint32_t i = 0; i < n_vocab && top_k; i++) {
        float l = logits[i];
        if (e->n_top == top_k && l <= e->top_logprob[top_k - 1] + lse) continue;
        uint32_t j = e->n_top < top_k ? e->n_top++ : top_k - 1;
        while (j > 0 && e->top_logprob[j - 1] < l - lse) {
            e->top_logprob[j] = e->top_logprob[j - 1];
            e->top_token[j] = e->top_token[j - 1];
            j--;
        }
        e->top_logprob[j] = l - lse;
        e->top_token[j] = (int32_t)i;
    }
}

/* A new token of choice ci: stop conditions, text, the event. */
static void emit_token(struct herd_sched *s, struct herd_request *r, uint32_t ci, int32_t tok, const float *logits) {
    struct choice *c = &r->ch[ci];
    struct herd_event e = {.choice = ci, .token = tok};
    if (tok >= 0 && (r->gp.logprobs || r->gp.top_logprobs)) logprobs(s, logits, &e, r->gp.top_logprobs);
    struct herd_buf out;
    herd_buf_init(&out, EVENT_TEXT_MAX_BYTES);
    char piece[DETOK_BYTES];
    /* tok -1: the grammar allows no token at all (nothing the vocabulary
     * can write continues it): the choice ends as at an end token */
    if (tok < 0 || (herd_vocab_is_eog(s->vocab, tok) && !r->gp.ignore_eos)) {
        /* the end-of-generation token is not output; what was held back is */
        size_t m = herd_detok_flush(&c->detok, piece, sizeof piece);
        bool ok =
            herd_stop_match_push(&c->stop, piece, m, &out) != HERD_STOP_NOMEM && herd_stop_match_flush(&c->stop, &out);
        e.token = -1;
        if (!ok) out.len = 0;
        skip_sent(c, &out);
        finish_choice(s, r, ci, ok ? HERD_FINISH_STOP : HERD_FINISH_CANCELLED, &e, (const char *)out.data, out.len);
        herd_buf_cleanup(&out);
        return;
    }
    c->gen[c->n_gen++] = tok;
    herd_sampler_accept(c->sampler, tok);
    /* the mask let only tokens the grammar takes through: a refusal here is
     * a bug, and ends the choice rather than emitting more */
    const bool grammar_done = c->gstate && (!grammar_feed(s, c, tok) || herd_grammar_must_end(c->gstate));
    const double now = s->t_emit;
    if (c->n_gen == 1)
        c->first_token_s = now;
    else
        OBSERVE(s, itl, now - c->last_token_s);
    c->last_token_s = now;
    COUNT(s, generated_tokens, 1); /* before the event: a scrape after the answer counts it */
    pthread_mutex_lock(&r->lock);
    r->stats.completion_tokens++;
    const bool first = r->stats.first_token_s == 0;
    if (first) r->stats.first_token_s = now;
    const double submitted = r->stats.submitted_s;
    pthread_mutex_unlock(&r->lock);
    if (first) OBSERVE(s, ttft, now - submitted);
    size_t m = herd_detok_push(&c->detok, tok, piece, sizeof piece);
    enum herd_stop_result sr = herd_stop_match_push(&c->stop, piece, m, &out);
    enum herd_finish why = HERD_FINISH_NONE;
    if (sr == HERD_STOP_MATCHED) {
        why = HERD_FINISH_STOP;
    } else if (sr == HERD_STOP_NOMEM) {
        why = HERD_FINISH_CANCELLED;
        out.len = 0;
    } else if (c->n_gen == r->gp.max_tokens || grammar_done) {
        m = herd_detok_flush(&c->detok, piece, sizeof piece);
        bool ok =
            herd_stop_match_push(&c->stop, piece, m, &out) == HERD_STOP_MORE && herd_stop_match_flush(&c->stop, &out);
        why = ok && !grammar_done ? HERD_FINISH_LENGTH : HERD_FINISH_STOP;
    }
    skip_sent(c, &out);
    if (why)
        finish_choice(s, r, ci, why, &e, (const char *)out.data, out.len);
    else
        push_event(r, &e, (const char *)out.data, out.len);
    herd_buf_cleanup(&out);
}

static void drop_cancelled(struct herd_sched *s) {
    for (uint32_t i = 0; i < s->n_running;) {
        struct herd_request *r = s->running[i];
        if (atomic_load(&r->cancel) || r->n_active == 0) {
            if (r->n_active) cancel_request(s, r);
            remove_at(s->running, &s->n_running, i);
            retire(s, r);
        } else {
            i++;
        }
    }
    for (uint32_t i = 0; i < s->n_waiting;) {
        struct herd_request *r = s->waiting[i];
        if (atomic_load(&r->cancel)) {
            cancel_request(s, r);
            remove_at(s->waiting, &s->n_waiting, i);
            pthread_mutex_lock(&s->lock);
            s->n_queued--;
            pthread_mutex_unlock(&s->lock);
            retire(s, r);
        } else {
            i++;
        }
    }
}

/* The engine is broken: refuse new requests and stop; the loop ends every
 * request with an error. */
static void fail(struct herd_sched *s, const char *msg) {
    pthread_mutex_lock(&s->lock);
    snprintf(s->fail_msg, sizeof s->fail_msg, "the engine failed: %.200s", msg);
    atomic_store(&s->failed, true);
    s->stop = true;
    pthread_mutex_unlock(&s->lock);
}

/* Sampling of a step's rows on the engine's thread pool: each row has its
 * own sampler (its own generator: draws do not depend on the thread), and a
 * draw over a large vocabulary costs 30-110 us, so 16 of them are worth
 * splitting while the pool would otherwise wait. */
struct sample_job {
    struct herd_sched *s;
    uint32_t n_rows;
};

static void sample_part(void *ctx, int ith, int nth) {
    const struct sample_job *j = ctx;
    for (uint32_t k = (uint32_t)ith; k < j->n_rows; k += (uint32_t)nth) {
        struct out_row *row = &j->s->rows[k];
        struct choice *c = &row->r->ch[row->choice];
        if (c->finished) continue;
        const float *logits = herd_context_logits(j->s->ctx, k);
        if (c->gstate) {
            /* only what the grammar allows next; -1 when it allows nothing */
            uint32_t n_ok = 0;
            pthread_mutex_lock(&c->gmasks->lock);
            const uint64_t *mask = herd_grammar_mask_cached(c->gmasks->cache, c->gstate, &n_ok);
            if (mask) memcpy(c->gmask, mask, ((j->s->n_vocab + 63) / 64) * sizeof *mask);
            pthread_mutex_unlock(&c->gmasks->lock);
            row->token = mask && n_ok ? herd_sampler_sample_masked(c->sampler, logits, c->gmask) : -1;
        } else {
            row->token = herd_sampler_sample(c->sampler, logits);
        }
    }
}

/* One step; false when there was nothing to run. */
static bool step(struct herd_sched *s) {
    double now = herd_time_now_s();
    drop_cancelled(s);
    admit_waiting(s, now);
    uint32_t n_rows = 0;
    uint32_t n = build_batch(s, &n_rows, now);
    if (n == 0) return false;
    struct herd_batch b = {
        .n_tokens = n, .tokens = s->b_tok, .pos = s->b_pos, .seq = s->b_seq, .want_logits = s->b_want};
    struct herd_error err = {0};
    if (s->p.profile_prompt || s->p.profile_generation)
        s->ctx->profile = s->step_prompt_tokens ? s->p.profile_prompt : s->p.profile_generation;
    enum herd_status rc = herd_decode(s->ctx, &b, &err);
    if (s->step_delay_us) usleep(s->step_delay_us);
    if (s->fail_after && atomic_load_explicit(&s->cnt.steps, memory_order_relaxed) + 1 >= s->fail_after)
        rc = herd_error_set(&err, HERD_E_INVALID, "engine failure injected by HERD_TEST_ENGINE_FAIL_AFTER_STEPS");
    if (rc != HERD_OK) {
        /* a bug or a broken model: nothing computed from here on can be
         * trusted, so the engine stops and the server exits for its
         * supervisor, rather than retry the same batch forever */
        fail(s, err.msg);
        return true;
    }
    s->t_emit = herd_time_now_s();
    struct sample_job sj = {s, n_rows};
    const uint64_t t_sample = s->ctx->profile ? herd_prof_now_ns() : 0;
    if (n_rows > 1)
        herd_pool_run(s->ctx->pool, sample_part, &sj);
    else
        sample_part(&sj, 0, 1);
    herd_prof_op(s->ctx->profile, HERD_PROF_SAMPLING, t_sample);
    for (uint32_t k = 0; k < n_rows; k++) {
        struct herd_request *r = s->rows[k].r;
        uint32_t ci = s->rows[k].choice;
        if (r->ch[ci].finished) continue;
        emit_token(s, r, ci, s->rows[k].token, herd_context_logits(s->ctx, k));
    }
    for (uint32_t k = 0; k < n_rows; k++) notify(s->rows[k].r);
    cache_new_blocks(s);
    drop_cancelled(s); /* retires what finished in this step */
    double dt = herd_time_now_s() - now;
    OBSERVE(s, step_seconds, dt);
    OBSERVE(s, step_tokens, n);
    s->last_step_s = dt; /* into the window at the top of the loop, under the lock taken there anyway */
    COUNT(s, steps, 1);
    COUNT(s, computed_prompt_tokens, s->step_prompt_tokens);
    if (s->step_paused_background) COUNT(s, background_paused_steps, 1);
    if (s->pc) {
        struct herd_prefix_cache_stats ps;
        herd_prefix_cache_stats(s->pc, &ps);
        atomic_store_explicit(&s->cnt.prefix_queries, ps.queries, memory_order_relaxed);
        atomic_store_explicit(&s->cnt.prefix_hits, ps.hits, memory_order_relaxed);
        atomic_store_explicit(&s->cnt.prefix_cached_blocks, ps.entries, memory_order_relaxed);
    }
    return true;
}

bool herd_sched_failed(struct herd_sched *s, char *msg, size_t msg_size) {
    if (!atomic_load(&s->failed)) return false;
    if (msg) {
        pthread_mutex_lock(&s->lock);
        snprintf(msg, msg_size, "%s", s->fail_msg);
        pthread_mutex_unlock(&s->lock);
    }
    return true;
}

/* The state stream's snapshot: between two steps, so that it and the
 * changes the next steps push are consistent. */
static void feed_snapshot(struct herd_sched *s) {
    const uint32_t n_blocks = herd_kv_params(s->ctx->kv)->n_blocks;
    const uint32_t n = s->pc ? herd_prefix_cache_hashes(s->pc, s->snap_hashes, n_blocks) : 0;
    herd_block_feed_put_snapshot(s->feed, s->snap_hashes, n);
}

static void count_by_class(struct herd_request *const *v, uint32_t n, uint32_t *by_class) {
    memset(by_class, 0, HERD_PRIO_CLASSES * sizeof *by_class);
    for (uint32_t i = 0; i < n; i++) by_class[herd_priority_class(v[i]->gp.priority)]++;
}

static void *sched_main(void *arg) {
    struct herd_sched *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        for (struct herd_request *r = s->inbox_head; r; r = r->next_in) {
            r->arrival = s->arrivals++;
            r->state = REQ_WAITING;
            s->waiting[s->n_waiting++] = r;
        }
        s->inbox_head = s->inbox_tail = NULL;
        bool stop = s->stop;
        s->status.waiting = s->n_waiting;
        s->status.running = s->n_running;
        count_by_class(s->waiting, s->n_waiting, s->status.waiting_by_class);
        count_by_class(s->running, s->n_running, s->status.running_by_class);
        s->status.kv_blocks_free = herd_kv_free_blocks(s->ctx->kv);
        if (s->last_step_s >= 0) {
            s->step_s[s->n_steps % STEP_WINDOW] = s->last_step_s;
            s->n_steps++;
            s->last_step_s = -1;
        }
        pthread_mutex_unlock(&s->lock);
        if (stop) break;
        if (herd_block_feed_snapshot_wanted(s->feed)) feed_snapshot(s);
        bool worked = step(s);
        if (atomic_load(&s->failed)) continue; /* to the top: takes the inbox, then stops */
        if (!worked) {
            pthread_mutex_lock(&s->lock);
            if (!s->inbox_head && !s->stop && !herd_block_feed_snapshot_wanted(s->feed)) {
                /* idle, or waiting for room: sleep until a submit, with a
                 * short timeout so cancellations and aging are seen */
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                long ns = ts.tv_nsec + (s->n_waiting || s->n_running ? 5 : 200) * 1000000L;
                ts.tv_sec += ns / 1000000000L;
                ts.tv_nsec = ns % 1000000000L;
                pthread_cond_timedwait(&s->wake, &s->lock, &ts);
            }
            pthread_mutex_unlock(&s->lock);
        }
    }
    /* shut down: everything still here is cancelled (or fails with the engine) */
    const enum herd_finish why = atomic_load(&s->failed) ? HERD_FINISH_ERROR : HERD_FINISH_CANCELLED;
    for (uint32_t i = 0; i < s->n_running; i++) {
        end_request(s, s->running[i], why);
        retire(s, s->running[i]);
    }
    for (uint32_t i = 0; i < s->n_waiting; i++) {
        if (s->waiting[i]->n_active) end_request(s, s->waiting[i], why);
        retire(s, s->waiting[i]);
    }
    s->n_running = s->n_waiting = 0;
    return NULL;
}

enum herd_status herd_sched_create(struct herd_context *ctx, const struct herd_vocab *vocab,
                                   const struct herd_sched_params *p, struct herd_sched **out, struct herd_error *err) {
    *out = NULL;
    if (p->batch_tokens < 1 || p->batch_tokens > ctx->params.max_batch_tokens || p->max_queue < 1)
        return herd_error_set(err, HERD_E_INVALID, "batch tokens must be 1..%u and the queue at least 1",
                              ctx->params.max_batch_tokens);
    struct herd_sched *s = calloc(1, sizeof *s);
    if (!s) return herd_error_set(err, HERD_E_NOMEM, "out of memory creating the scheduler");
    s->ctx = ctx;
    s->vocab = vocab;
    s->p = *p;
    s->n_ctx = ctx->params.n_ctx;
    s->n_vocab = ctx->model->desc.n_vocab;
    /* a request is in one list at a time; each list holds at most every
     * queued plus every running request */
    s->cap_reqs = p->max_queue + ctx->params.max_seqs + 1;
    s->waiting = calloc(s->cap_reqs, sizeof *s->waiting);
    s->running = calloc(s->cap_reqs, sizeof *s->running);
    s->order = calloc(s->cap_reqs, sizeof *s->order);
    uint32_t bt = p->batch_tokens;
    s->b_tok = calloc(bt, sizeof *s->b_tok);
    s->b_seq = calloc(bt, sizeof *s->b_seq);
    s->b_pos = calloc(bt, sizeof *s->b_pos);
    s->b_want = calloc(bt, sizeof *s->b_want);
    s->rows = calloc(ctx->params.max_outputs, sizeof *s->rows);
    s->lp_work = malloc((size_t)ctx->model->desc.n_vocab * sizeof *s->lp_work);
    s->match_blocks = calloc(ctx->params.n_ctx / herd_kv_params(ctx->kv)->block_tokens + 1, sizeof *s->match_blocks);
    s->pc = herd_prefix_cache_create(ctx->kv);
    const uint32_t n_blocks = herd_kv_params(ctx->kv)->n_blocks;
    /* two blocks' worth of changes per block: a reader taking them every
     * 10 ms overflows only if the whole cache turns over twice in that time */
    s->feed = herd_block_feed_create(2 * n_blocks + 1024, n_blocks);
    s->snap_hashes = malloc(((size_t)n_blocks + 1) * sizeof *s->snap_hashes);
    if (s->pc && s->feed) herd_prefix_cache_set_feed(s->pc, s->feed);
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->gvocab_lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    s->last_step_s = -1;
    const char *hook = getenv("HERD_TEST_ENGINE_FAIL_AFTER_STEPS");
    s->fail_after = hook ? strtoull(hook, NULL, 10) : 0;
    /* the tiny test models finish a stream in milliseconds: cancellation
     * and failover tests need one still running when they act */
    const char *delay = getenv("HERD_TEST_STEP_DELAY_MS");
    s->step_delay_us = delay ? (uint32_t)(strtoul(delay, NULL, 10) % 10000) * 1000 : 0;
    s->status.kv_blocks_total = herd_kv_params(ctx->kv)->n_blocks;
    s->status.kv_block_tokens = herd_kv_params(ctx->kv)->block_tokens;
    if (!s->waiting || !s->running || !s->order || !s->match_blocks || !s->pc || !s->b_tok || !s->b_seq || !s->b_pos ||
        !s->b_want || !s->rows || !s->lp_work || !s->feed || !s->snap_hashes) {
        herd_sched_destroy(s);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory creating the scheduler");
    }
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        herd_sched_destroy(s);
        return herd_error_set(err, HERD_E_NOMEM, "cannot start the scheduler thread");
    }
    s->thread_started = true;
    *out = s;
    return HERD_OK;
}

void herd_sched_destroy(struct herd_sched *s) {
    if (!s) return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->lock);
        s->stop = true;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
    }
    /* requests submitted after the thread stopped */
    for (struct herd_request *r = s->inbox_head, *next; r; r = next) {
        next = r->next_in;
        herd_request_release(r);
    }
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->gvocab_lock);
    for (int i = 0; i < GRAMMAR_SHARED; i++) shared_masks_release(s->gshared[i]);
    herd_grammar_vocab_destroy(s->gvocab);
    pthread_cond_destroy(&s->wake);
    free(s->waiting);
    free(s->running);
    free(s->order);
    free(s->b_tok);
    free(s->b_seq);
    free(s->b_pos);
    free(s->b_want);
    free(s->rows);
    free(s->lp_work);
    free(s->match_blocks);
    herd_prefix_cache_destroy(s->pc);
    herd_block_feed_destroy(s->feed);
    free(s->snap_hashes);
    free(s);
}

enum herd_status herd_sched_submit(struct herd_sched *s, struct herd_request *r, struct herd_error *err) {
    if ((uint64_t)r->n_prompt + r->gp.max_tokens > s->n_ctx)
        return herd_error_set(err, HERD_E_INVALID,
                              "this model's context holds %u tokens; the prompt has %u and max_tokens asks for %u more",
                              s->n_ctx, r->n_prompt, r->gp.max_tokens);
    if (r->state != REQ_NEW) return herd_error_set(err, HERD_E_INVALID, "a request is submitted once");
    if (!r->ch[0].sampler) { /* not yet (a submit refused for a full queue may be retried) */
        enum herd_status rc = prepare_request(s, r, err);
        if (rc != HERD_OK) return rc;
    }
    pthread_mutex_lock(&s->lock);
    if (atomic_load(&s->failed)) {
        pthread_mutex_unlock(&s->lock);
        return herd_error_set(err, HERD_E_UNAVAILABLE, "%s", s->fail_msg);
    }
    if (s->draining || s->stop) {
        pthread_mutex_unlock(&s->lock);
        return herd_error_set(err, HERD_E_UNAVAILABLE, "the server is shutting down");
    }
    if (s->n_queued >= s->p.max_queue) {
        pthread_mutex_unlock(&s->lock);
        return herd_error_set(err, HERD_E_AGAIN, "the queue is full (%u requests waiting)", s->p.max_queue);
    }
    atomic_fetch_add(&r->refs, 1);
    r->state = REQ_WAITING;
    r->stats.submitted_s = herd_time_now_s();
    r->next_in = NULL;
    if (s->inbox_tail)
        s->inbox_tail->next_in = r;
    else
        s->inbox_head = r;
    s->inbox_tail = r;
    s->n_queued++;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    return HERD_OK;
}

void herd_sched_drain(struct herd_sched *s) {
    pthread_mutex_lock(&s->lock);
    s->draining = true;
    pthread_mutex_unlock(&s->lock);
}

void herd_sched_status(struct herd_sched *s, struct herd_sched_status *out) {
    pthread_mutex_lock(&s->lock);
    *out = s->status;
    uint64_t n = s->n_steps < STEP_WINDOW ? s->n_steps : STEP_WINDOW;
    double tmp[STEP_WINDOW];
    memcpy(tmp, s->step_s, n * sizeof *tmp);
    pthread_mutex_unlock(&s->lock);
    out->median_step_s = n ? herd_median(tmp, (size_t)n) : 0;
#define READ(field) atomic_load_explicit(&s->cnt.field, memory_order_relaxed)
    out->steps = READ(steps);
    out->preemptions = READ(preemptions);
    out->prompt_tokens = READ(prompt_tokens);
    out->computed_prompt_tokens = READ(computed_prompt_tokens);
    out->generated_tokens = READ(generated_tokens);
    for (int i = 0; i < 3; i++) out->finished[i] = READ(finished[i]);
    out->prefix_queries = READ(prefix_queries);
    out->prefix_hits = READ(prefix_hits);
    out->prefix_cached_blocks = READ(prefix_cached_blocks);
    out->background_paused_steps = READ(background_paused_steps);
#undef READ
}

uint32_t herd_sched_n_ctx(const struct herd_sched *s) { return s->n_ctx; }

struct herd_block_feed *herd_sched_block_feed(struct herd_sched *s) {
    return s->feed;
}

void herd_sched_feed_start(struct herd_sched *s) {
    herd_block_feed_start(s->feed);
    /* the snapshot is taken between steps: an idle scheduler wakes for it */
    pthread_mutex_lock(&s->lock);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

void herd_sched_feed_stop(struct herd_sched *s) { herd_block_feed_stop(s->feed); }
