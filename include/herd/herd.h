/* herd's engine: one object that opens a served model from one options
 * struct, so that every program that runs a model (herd serve, run, eval,
 * bench, imatrix, and the batch and perplexity commands to come) assembles
 * it the same way.
 *
 * An engine holds, in the order it opens them:
 *   1. the model (a GGUF file, mapped and checked; the quantized matrices
 *      repacked for this CPU's kernels);
 *   2. a context: the KV cache for max_seqs sequences of n_ctx positions
 *      (or kv_mem bytes), the activations for batch_tokens tokens per
 *      forward pass, and the thread pool;
 *   3. with HERD_ENGINE_TEXT: the vocabulary and the tokenizer;
 *   4. with HERD_ENGINE_CHAT: the chat template (the model's, or the one
 *      chat_template names);
 *   5. with HERD_ENGINE_SCHEDULER: the scheduler thread, which owns the
 *      context from then on and runs requests with continuous batching
 *      (herd_engine_context is then NULL: one owner for the KV cache).
 * Any step that fails closes what was opened and returns its status with a
 * message naming the file and the problem.
 *
 * The request API (create, submit, poll events, cancel) is the scheduler's,
 * in src/engine/sched.h; herd run, herd serve and batch jobs all generate
 * through it, so stop strings, logprobs and priorities behave the same
 * everywhere. */
#ifndef HERD_HERD_H
#define HERD_HERD_H

#include <stdbool.h>
#include <stdint.h>

#include "herd/status.h"

#ifdef __cplusplus
extern "C" {
#endif

struct herd_engine;
struct herd_model;
struct herd_context;
struct herd_vocab;
struct herd_tokenizer;
struct herd_chat_template;
struct herd_sched;
struct herd_sched_metrics;
struct herd_profile;

/* What to open beyond the model and its context. */
enum herd_engine_parts {
    HERD_ENGINE_TEXT = 1u << 0,      /* vocabulary and tokenizer */
    HERD_ENGINE_CHAT = 1u << 1,      /* the chat template (implies TEXT) */
    HERD_ENGINE_SCHEDULER = 1u << 2, /* the scheduler thread (implies TEXT) */
};

struct herd_engine_options {
    const char *model_path; /* GGUF file; NULL: the built-in default model */
    unsigned parts;         /* enum herd_engine_parts, or'ed */
    uint32_t threads;       /* compute threads; 0: the CPUs this process may use */
    uint32_t n_ctx;         /* positions per sequence; 0: the model's, at most 4096 */
    uint32_t max_seqs;      /* sequences at once (1) */
    uint32_t batch_tokens;  /* tokens per forward pass (512) */
    uint32_t max_outputs;   /* logit rows per forward pass; 0: max_seqs + 16 */
    const char *kv_type;    /* "f16" (default, NULL), "f32" or "q8" */
    uint64_t kv_mem;        /* KV cache bytes over all sequences; 0: n_ctx x max_seqs positions */
    bool precise;           /* f32 activations and an f32 KV cache (for checking; slower) */
    const char
        *chat_template; /* HERD_ENGINE_CHAT: a template name in the model, a built-in, or a file; NULL: the model's */
    /* HERD_ENGINE_SCHEDULER */
    uint32_t max_queue;                       /* waiting requests before submit says HERD_E_AGAIN (256) */
    double prefill_per_decode;                /* see herd_sched_params; < 0: the default (1) */
    int64_t background_tokens;                /* see herd_sched_params; < 0: the default (64) */
    const struct herd_sched_metrics *metrics; /* histograms the scheduler observes; NULL: none */
    /* With a scheduler, where herd_decode's time per operation goes: steps
     * that compute prompt tokens into profile_prompt, the others into
     * profile_generation (either may be NULL: not recorded). Without one,
     * set herd_engine_context(e)->profile yourself. */
    struct herd_profile *profile_prompt, *profile_generation;
};

/* Zeroes o and sets the defaults above. */
void herd_engine_default_options(struct herd_engine_options *o);

/* Opens everything o asks for. On failure *out is NULL, err says why
 * (prefixed with the model's path where the file is at fault). */
enum herd_status herd_engine_open(const struct herd_engine_options *o, struct herd_engine **out,
                                  struct herd_error *err);

/* Stops the scheduler (cancelling what still runs), then frees everything.
 * NULL is a no-op. */
void herd_engine_close(struct herd_engine *e);

/* The parts; NULL where not opened. The engine owns them. */
const struct herd_model *herd_engine_model(const struct herd_engine *e);
struct herd_context *herd_engine_context(struct herd_engine *e); /* NULL with a scheduler */
const struct herd_vocab *herd_engine_vocab(const struct herd_engine *e);
const struct herd_tokenizer *herd_engine_tokenizer(const struct herd_engine *e);
const struct herd_chat_template *herd_engine_chat_template(const struct herd_engine *e);
struct herd_sched *herd_engine_sched(struct herd_engine *e);

/* Positions per sequence (a prompt and its output must fit). */
uint32_t herd_engine_n_ctx(const struct herd_engine *e);
/* The KV cache's capacity in positions over all sequences, and its bytes. */
uint32_t herd_engine_kv_tokens(const struct herd_engine *e);
uint64_t herd_engine_kv_bytes(const struct herd_engine *e);
/* Compute threads, and the name of the kernel family this CPU runs. */
int herd_engine_threads(const struct herd_engine *e);
const char *herd_engine_kernels(const struct herd_engine *e);
/* The path of the model file (the default model's when none was given). */
const char *herd_engine_model_path(const struct herd_engine *e);

#ifdef __cplusplus
}
#endif

#endif
