/* The scheduler: one thread that owns the model context and its KV cache
 * and runs requests from any number of client threads with continuous
 * batching.
 *
 * Each step builds one batch under a token budget: first one token for
 * every sequence that is generating (so streams keep flowing), then chunks
 * of prompts with what is left, so a long prompt is spread over steps
 * instead of freezing everyone. A request is admitted from the waiting
 * queue (lowest priority value first, then arrival; waiting time raises
 * the effective priority so nothing starves) when a sequence slot is free
 * and its prompt's KV blocks can be reserved. When a generating sequence
 * needs a block and none is free, the lowest-priority running request is
 * preempted: its blocks are freed and it goes back to the queue, to be
 * recomputed from its prompt and the tokens it already produced, so
 * nothing is lost or repeated. The n choices of a request share the
 * prompt's KV blocks (fork), each sampling on its own seed.
 *
 * Background work (priority >= HERD_PRIORITY_BACKGROUND: the server's
 * batch jobs) fills the capacity interactive requests leave. It never ages
 * into the foreground's range; while any foreground request has prompt
 * tokens to compute, background requests sit out the steps (keeping their
 * KV, unless those prompt tokens need its blocks: then one is preempted),
 * so an interactive prompt is computed as on an idle server
 * (herd_sched_status counts these steps); and a step with only background
 * work holds at most background_tokens tokens, so a foreground request
 * that arrives meanwhile waits for a short step. Otherwise background
 * decodes join the steps like any others.
 *
 * Client threads create a request, submit it, and read its events (text
 * deltas per choice, then a finish per choice) with herd_request_poll when
 * the notify callback fires; herd_request_cancel stops it within a step. */
#ifndef HERD_ENGINE_SCHED_H
#define HERD_ENGINE_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/status.h"
#include "metrics/metrics.h"
#include "model/forward.h"
#include "sampling/grammar.h"
#include "sampling/sampler.h"
#include "tokenizer/vocab.h"

#define HERD_MAX_CHOICES      16
#define HERD_MAX_STOPS        4
#define HERD_MAX_TOP_LOGPROBS 20

enum herd_finish {
    HERD_FINISH_NONE = 0,
    HERD_FINISH_STOP,      /* an end-of-generation token or a stop string */
    HERD_FINISH_LENGTH,    /* max_tokens, or the context is full */
    HERD_FINISH_CANCELLED, /* herd_request_cancel, or the scheduler stopped */
    HERD_FINISH_ERROR,     /* the engine failed (herd_sched_failed says why) */
};

struct herd_gen_params {
    uint32_t max_tokens;                 /* tokens to generate per choice at most (>= 1) */
    uint32_t n;                          /* choices, 1..HERD_MAX_CHOICES */
    int32_t priority;                    /* lower runs first (vLLM's convention) */
    struct herd_sampler_params sampling; /* choice i draws with seed + i */
    const char *stop[HERD_MAX_STOPS];    /* copied at create */
    uint32_t n_stop;
    bool ignore_eos;
    bool logprobs;
    uint32_t top_logprobs; /* 0..HERD_MAX_TOP_LOGPROBS */
    /* The output is a text of its own, not the prompt's continuation: a
     * SentencePiece space prefix on its first token is dropped, as
     * llama2.c prints a story from BOS (herd run). Default false: the
     * space is real, as vLLM's incremental detokenizer keeps it. */
    bool text_from_start;
    /* Resuming a generation another server began (herd_resume): the last
     * resume_tokens tokens of the prompt are output already generated.
     * Their text starts the output, through the same detokenizer and stop
     * strings, so that a character split across the break and a stop
     * string spanning it come out as if nothing broke; the first
     * resume_skip_bytes bytes of the output (what the client already has)
     * are not emitted again. max_tokens counts the new tokens only and may
     * be 0: the choice then ends at once with HERD_FINISH_LENGTH (so does
     * a stop string inside the resumed text, with HERD_FINISH_STOP). Only
     * with n == 1, and resume_tokens < the prompt's length. */
    uint32_t resume_tokens;
    uint64_t resume_skip_bytes;
    /* The grammar every choice's text must follow (response_format,
     * "grammar"); NULL: none. Each step samples only among the tokens it
     * allows next; a choice whose text completes the grammar and allows
     * nothing more ends with HERD_FINISH_STOP. herd_request_create takes a
     * reference (herd_grammar_retain), so the caller may drop its own. */
    struct herd_grammar *grammar;
};

void herd_gen_default_params(struct herd_gen_params *p);

/* One generated token of one choice. text is what became emittable with it
 * (complete UTF-8; empty while a multi-byte character or a possible stop
 * string is held back). The last event of a choice has finish set (and no
 * token when finish comes from a stop string, EOS or cancellation). */
struct herd_event {
    uint32_t choice;
    int32_t token; /* -1: no token (the finish event of a stop or a cancel) */
    const char *text;
    size_t text_len;
    enum herd_finish finish;
    float logprob; /* log-probability of token under the model (when logprobs) */
    uint32_t n_top;
    int32_t top_token[HERD_MAX_TOP_LOGPROBS];
    float top_logprob[HERD_MAX_TOP_LOGPROBS];
};

/* Timing and counts of a request, for logs and metrics (seconds on
 * herd_time_now_s's clock; 0 when it has not happened). */
struct herd_request_stats {
    double submitted_s, admitted_s, first_token_s, finished_s;
    uint32_t prompt_tokens;
    uint32_t cached_tokens;     /* prompt tokens found in the prefix cache */
    uint32_t completion_tokens; /* over all choices */
    uint32_t preemptions;
};

struct herd_request;

/* A request for prompt (n_prompt >= 1 token ids, copied). notify (may be
 * NULL) is called from the scheduler thread, with the request's lock held,
 * whenever new events are ready; it must only wake the client up (and not
 * call back into the request). The creator holds
 * one reference. NULL on out of memory or bad parameters (err says which). */
struct herd_request *herd_request_create(const int32_t *prompt, uint32_t n_prompt, const struct herd_gen_params *gp,
                                         void (*notify)(void *arg), void *arg, struct herd_error *err);
/* Replaces the notify callback; after it returns the old one is never
 * called again (clients clear it before freeing what arg points to). */
void herd_request_set_notify(struct herd_request *r, void (*notify)(void *arg), void *arg);
/* Drops the caller's reference; the request is freed once the scheduler is
 * done with it too. Call herd_request_cancel first to stop it. */
void herd_request_release(struct herd_request *r);
/* Asks the scheduler to stop the request and free its blocks (next step). */
void herd_request_cancel(struct herd_request *r);
/* Moves up to max ready events into out; their text stays valid until the
 * next poll or release. Returns how many. Thread-safe. */
size_t herd_request_poll(struct herd_request *r, struct herd_event *out, size_t max);
/* True once every choice has finished and all events were polled. */
bool herd_request_done(struct herd_request *r);
void herd_request_stats(struct herd_request *r, struct herd_request_stats *out);

/* Histograms the scheduler observes as things happen (seconds unless
 * named otherwise; any may be NULL). Counters and gauges are read from
 * herd_sched_status instead. */
struct herd_sched_metrics {
    struct herd_metric *ttft;         /* submit -> first token, per request */
    struct herd_metric *itl;          /* between two tokens of a choice */
    struct herd_metric *tpot;         /* (last token - first token) / (tokens - 1), per choice with >= 2 */
    struct herd_metric *e2e;          /* submit -> finished, per request */
    struct herd_metric *queue_time;   /* submit -> first admitted */
    struct herd_metric *prefill_time; /* first admitted -> first token */
    struct herd_metric *step_tokens;  /* tokens per step's batch */
    struct herd_metric *step_seconds; /* a step, batch building to events out */
};

/* Priority classes for per-class counts: below 0, 0, above 0. */
enum herd_priority_class { HERD_PRIO_HIGH, HERD_PRIO_NORMAL, HERD_PRIO_LOW, HERD_PRIO_CLASSES };
/* The lowest priorities: background work (batch jobs), counted as LOW. The
 * API takes priorities within +-1,000,000, so only herd's own batch runner
 * reaches this range. */
#define HERD_PRIORITY_BACKGROUND 2000000
enum herd_priority_class herd_priority_class(int32_t priority);
const char *herd_priority_class_name(enum herd_priority_class c);

struct herd_sched_params {
    uint32_t batch_tokens; /* tokens per step (decode + prompt chunks); <= the context's max_batch_tokens */
    uint32_t max_queue;    /* waiting requests; beyond it submit says HERD_E_AGAIN */
    double aging_s;        /* each aging_s of waiting counts as one priority level */
    /* While sequences are generating, a step computes at most this many
     * prompt tokens per sequence slot (every slot, generating or not, so
     * slots still in their prompts are not starved), fewer for tokens late
     * in a long prompt (weighted by position: they attend to everything
     * before them), at least 1. Keeps a step (the gap between two tokens of
     * every stream) within about 2-3x a decode-only step while a long
     * prompt is admitted; higher values trade that for prompt throughput.
     * 0: no cap beyond batch_tokens. */
    double prefill_per_decode;
    /* Tokens in a step that has only background work (0: batch_tokens):
     * bounds how long a foreground request that arrives mid-step waits. */
    uint32_t background_tokens;
    const struct herd_sched_metrics *metrics; /* NULL: none observed */
    /* Time per operation of each step (herd_decode's and the sampling):
     * steps that compute prompt tokens into profile_prompt, the others
     * into profile_generation. NULL: not recorded. */
    struct herd_profile *profile_prompt, *profile_generation;
};

void herd_sched_default_params(struct herd_sched_params *p);

struct herd_sched;

/* Starts the scheduler thread on ctx (which it owns from now until
 * destroy; the model and vocab must outlive it). */
enum herd_status herd_sched_create(struct herd_context *ctx, const struct herd_vocab *vocab,
                                   const struct herd_sched_params *p, struct herd_sched **out, struct herd_error *err);
/* Cancels everything still running, stops the thread, frees. */
void herd_sched_destroy(struct herd_sched *s);

/* Queues r (the scheduler takes its own reference). HERD_E_AGAIN when the
 * waiting queue is full, HERD_E_INVALID when the prompt plus max_tokens
 * does not fit the context, HERD_E_UNAVAILABLE when the scheduler is
 * draining or stopped or the engine failed (herd_sched_failed tells which).
 * Thread-safe. */
enum herd_status herd_sched_submit(struct herd_sched *s, struct herd_request *r, struct herd_error *err);

/* Refuses new requests from now on; running and waiting ones continue. */
void herd_sched_drain(struct herd_sched *s);

/* True once the engine has failed (a forward pass returned an error: a bug
 * or a corrupt model; or the test hook HERD_TEST_ENGINE_FAIL_AFTER_STEPS=N
 * fired): every request then ended with HERD_FINISH_ERROR, new ones are
 * refused, and the scheduler thread has stopped. msg (may be NULL) gets why.
 * The server stops being ready and exits, for its supervisor to restart it. */
bool herd_sched_failed(struct herd_sched *s, char *msg, size_t msg_size);

struct herd_sched_status {
    uint32_t waiting, running; /* requests */
    uint32_t waiting_by_class[HERD_PRIO_CLASSES], running_by_class[HERD_PRIO_CLASSES];
    uint32_t kv_blocks_total, kv_blocks_free, kv_block_tokens;
    uint64_t steps, preemptions;
    uint64_t prompt_tokens;          /* of requests admitted (once each, as usage counts them) */
    uint64_t computed_prompt_tokens; /* prompt tokens run through the model (no cache hits; recomputations) */
    uint64_t generated_tokens;
    uint64_t finished[3];                 /* requests finished by reason: stop, length, abort (cancelled) */
    uint64_t prefix_queries, prefix_hits; /* KV blocks looked up in the prefix cache, and found */
    uint32_t prefix_cached_blocks;        /* blocks the prefix cache holds (in use or not) */
    /* steps in which running background requests sat out while a
     * foreground prompt (or recomputation) was computed: how much an
     * interactive load holds a batch back */
    uint64_t background_paused_steps;
    double median_step_s; /* over the last 256 steps */
};
void herd_sched_status(struct herd_sched *s, struct herd_sched_status *out);

/* Positions per sequence (prompt + output must fit). */
uint32_t herd_sched_n_ctx(const struct herd_sched *s);

/* The prefix cache's changes as they happen, for the state stream
 * (block_feed.h; its reader's side). Off until started, so that a server
 * nobody subscribes to pays one relaxed load per cached or evicted block.
 * Start asks the scheduler thread for a snapshot and wakes it (an overflow
 * asks again by itself); stop turns the feed off. One reader thread. */
struct herd_block_feed *herd_sched_block_feed(struct herd_sched *s);
void herd_sched_feed_start(struct herd_sched *s);
void herd_sched_feed_stop(struct herd_sched *s);

#endif
