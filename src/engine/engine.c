/* herd_engine (include/herd/herd.h): the model, its context, vocabulary,
 * tokenizer, chat template and scheduler, opened in that order from one
 * options struct and closed in the reverse one. */
#include "herd/herd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/paths.h"
#include "base/pool.h"
#include "kernels/kernels.h"
#include "engine/sched.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

/* Contexts longer than this are refused (the KV cache's position type and
 * the scheduler's per-sequence arrays are sized from it). */
#define ENGINE_MAX_CTX (1u << 24)

struct herd_engine {
    char path[4096];
    struct herd_model *model;
    struct herd_context *ctx;
    struct herd_vocab *vocab;
    struct herd_tokenizer *tokenizer;
    struct herd_chat_template *tmpl;
    struct herd_sched *sched;
    uint32_t n_ctx;
};

void herd_engine_default_options(struct herd_engine_options *o) {
    memset(o, 0, sizeof *o);
    o->max_seqs = 1;
    o->batch_tokens = 512;
    o->max_queue = 256;
    o->prefill_per_decode = -1;
}

static enum herd_status kv_type_of(const struct herd_engine_options *o, enum herd_kv_type *out,
                                   struct herd_error *err) {
    if (o->precise || (o->kv_type && strcmp(o->kv_type, "f32") == 0))
        *out = HERD_KV_F32;
    else if (o->kv_type && strcmp(o->kv_type, "q8") == 0)
        *out = HERD_KV_Q8;
    else if (!o->kv_type || strcmp(o->kv_type, "f16") == 0)
        *out = HERD_KV_F16;
    else
        return herd_error_set(err, HERD_E_INVALID, "--kv-type must be f16, f32 or q8");
    return HERD_OK;
}

/* The context's parameters from the options and the model's shape: n_ctx
 * positions per sequence, the KV cache for max_seqs of them or kv_mem
 * bytes. */
static enum herd_status context_params(const struct herd_engine_options *o, const struct herd_model *m,
                                       struct herd_context_params *p, struct herd_error *err) {
    herd_context_default_params(p);
    const uint32_t max_seqs = o->max_seqs ? o->max_seqs : 1;
    p->n_threads = (int)(o->threads > 1024 ? 1024 : o->threads);
    uint64_t n_ctx = o->n_ctx;
    if (n_ctx == 0) n_ctx = m->desc.n_ctx_train && m->desc.n_ctx_train < 4096 ? m->desc.n_ctx_train : 4096;
    if (n_ctx > ENGINE_MAX_CTX) n_ctx = ENGINE_MAX_CTX;
    p->kv_tokens = (uint32_t)n_ctx * max_seqs;
    p->n_ctx = (uint32_t)n_ctx;
    p->max_batch_tokens = o->batch_tokens ? o->batch_tokens : 512;
    p->max_outputs = o->max_outputs ? o->max_outputs : max_seqs + 16;
    p->max_seqs = max_seqs;
    p->precise = o->precise;
    enum herd_status rc = kv_type_of(o, &p->kv_type, err);
    if (rc != HERD_OK || !o->kv_mem) return rc;
    const struct herd_model_desc *d = &m->desc;
    struct herd_kv_params kp = {.n_layer = (uint32_t)d->n_layer,
                                .kv_dim = (uint32_t)(d->n_head_kv * d->head_dim),
                                .head_dim = (uint32_t)d->head_dim,
                                .block_tokens = p->kv_block_tokens,
                                .n_blocks = 1,
                                .max_seqs = 1,
                                .type = p->kv_type};
    const size_t per_block = herd_kv_block_bytes(&kp);
    const uint64_t blocks = per_block ? o->kv_mem / per_block : 0;
    if (blocks * p->kv_block_tokens < n_ctx)
        return herd_error_set(err, HERD_E_INVALID,
                              "--kv-mem %llu bytes holds %llu tokens, less than one context of %llu",
                              (unsigned long long)o->kv_mem, (unsigned long long)(blocks * p->kv_block_tokens),
                              (unsigned long long)n_ctx);
    p->kv_tokens = (uint32_t)(blocks * p->kv_block_tokens > (1u << 30) ? (1u << 30) : blocks * p->kv_block_tokens);
    return HERD_OK;
}

enum herd_status herd_engine_open(const struct herd_engine_options *o, struct herd_engine **out,
                                  struct herd_error *err) {
    *out = NULL;
    struct herd_engine *e = calloc(1, sizeof *e);
    if (!e) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    char data[sizeof e->path];
    snprintf(e->path, sizeof e->path, "%s",
             o->model_path ? o->model_path : herd_paths_data(HERD_PATH_DEFAULT_MODEL, data, sizeof data));
    const bool sched = o->parts & HERD_ENGINE_SCHEDULER, chat = o->parts & HERD_ENGINE_CHAT;
    const bool text = sched || chat || (o->parts & HERD_ENGINE_TEXT);
    struct herd_context_params cp;
    enum herd_status rc = herd_model_load(e->path, &e->model, err);
    if (rc == HERD_OK) rc = context_params(o, e->model, &cp, err);
    if (rc == HERD_OK) rc = herd_context_create(e->model, &cp, &e->ctx, err);
    if (rc != HERD_OK) goto fail;
    e->n_ctx = e->ctx->params.n_ctx;
    if (text && ((rc = herd_vocab_load(e->model->gguf, &e->vocab, err)) != HERD_OK ||
                 (rc = herd_tokenizer_create(e->vocab, &e->tokenizer, err)) != HERD_OK))
        goto fail;
    if (chat && (rc = herd_chat_template_load(e->model->gguf, e->vocab, o->chat_template, &e->tmpl, err)) != HERD_OK)
        goto fail;
    if (sched) {
        struct herd_sched_params sp;
        herd_sched_default_params(&sp);
        sp.batch_tokens = cp.max_batch_tokens;
        if (o->max_queue) sp.max_queue = o->max_queue;
        if (o->prefill_per_decode >= 0) sp.prefill_per_decode = o->prefill_per_decode;
        sp.metrics = o->metrics;
        sp.profile_prompt = o->profile_prompt;
        sp.profile_generation = o->profile_generation;
        if ((rc = herd_sched_create(e->ctx, e->vocab, &sp, &e->sched, err)) != HERD_OK) goto fail;
    }
    *out = e;
    return HERD_OK;
fail:
    herd_engine_close(e);
    return rc;
}

void herd_engine_close(struct herd_engine *e) {
    if (!e) return;
    herd_sched_destroy(e->sched); /* first: its thread uses everything below */
    herd_chat_template_destroy(e->tmpl);
    herd_tokenizer_destroy(e->tokenizer);
    herd_vocab_destroy(e->vocab);
    herd_context_destroy(e->ctx);
    herd_model_destroy(e->model);
    free(e);
}

const struct herd_model *herd_engine_model(const struct herd_engine *e) { return e->model; }
struct herd_context *herd_engine_context(struct herd_engine *e) {
    return e->sched ? NULL : e->ctx;
}
const struct herd_vocab *herd_engine_vocab(const struct herd_engine *e) { return e->vocab; }
const struct herd_tokenizer *herd_engine_tokenizer(const struct herd_engine *e) { return e->tokenizer; }
const struct herd_chat_template *herd_engine_chat_template(const struct herd_engine *e) { return e->tmpl; }
struct herd_sched *herd_engine_sched(struct herd_engine *e) {
    return e->sched;
}
uint32_t herd_engine_n_ctx(const struct herd_engine *e) { return e->n_ctx; }
const char *herd_engine_model_path(const struct herd_engine *e) { return e->path; }
int herd_engine_threads(const struct herd_engine *e) { return herd_pool_size(e->ctx->pool); }
const char *herd_engine_kernels(const struct herd_engine *e) { return e->ctx->k->name; }

uint32_t herd_engine_kv_tokens(const struct herd_engine *e) {
    const struct herd_kv_params *p = herd_kv_params(e->ctx->kv);
    return p->n_blocks * p->block_tokens;
}

uint64_t herd_engine_kv_bytes(const struct herd_engine *e) {
    const struct herd_kv_params *p = herd_kv_params(e->ctx->kv);
    return (uint64_t)herd_kv_block_bytes(p) * p->n_blocks;
}
