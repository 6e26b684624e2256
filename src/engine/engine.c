/* herd_engine (include/herd/herd.h): the model, its context, vocabulary,
 * tokenizer, chat template and scheduler, opened in that order from one
 * options struct and closed in the reverse one. */
#include "herd/herd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/cgroup.h"
#include "base/cpu.h"
#include "base/log.h"
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
    o->background_tokens = -1;
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

/* Memory a process needs besides the weights, the KV cache and the batch's
 * activations: the binary and its libraries, thread stacks, HTTP and
 * tokenizer buffers, allocator slack. 64 MiB: herd serve on stories260K
 * is ~5 MiB resident besides its KV cache (measured: 25 MiB with a 20 MiB
 * cache); the rest is room for connections and their buffers. */
#define ENGINE_RUNTIME_BYTES ((uint64_t)64 << 20)
#define MIB(b)               ((double)(b) / 1048576.0)

/* Fails when the cgroup memory limit cannot hold the model file (whose
 * pages are charged to the cgroup as they are read) and the runtime:
 * checked before loading, since a repack at load could draw the OOM killer
 * first. */
static enum herd_status check_model_fits(const char *path, uint64_t *model_bytes, struct herd_error *err) {
    struct stat st;
    *model_bytes = stat(path, &st) == 0 && st.st_size > 0 ? (uint64_t)st.st_size : 0;
    const struct herd_cgroup_limits *cg = herd_cgroup_limits();
    if (!cg->memory_max_bytes || *model_bytes + ENGINE_RUNTIME_BYTES <= cg->memory_max_bytes) return HERD_OK;
    return herd_error_set(err, HERD_E_NOMEM,
                          "the cgroup memory limit of %.1f MiB (%s) is too small for the model %s: %.1f MiB of "
                          "weights + %.1f MiB for the runtime; raise the limit or use a smaller (quantized) model",
                          MIB(cg->memory_max_bytes), cg->memory_file, path, MIB(*model_bytes),
                          MIB(ENGINE_RUNTIME_BYTES));
}

/* The thread count: --threads when given, else the CPUs this process may
 * use; a cgroup quota or CPU set that bounds them is logged. */
static int threads_of(const struct herd_engine_options *o) {
    if (o->threads) return (int)(o->threads > 1024 ? 1024 : o->threads);
    struct herd_cpu_allowance a;
    herd_cpu_allowance(&a);
    if (a.by_quota) {
        struct herd_log_field f[] = {HERD_LOG_I("threads", a.n), HERD_LOG_N("cpu_quota", a.quota),
                                     HERD_LOG_S("file", a.quota_file), HERD_LOG_I("affinity_cpus", a.affinity)};
        herd_log(HERD_LOG_INFO, "engine", NULL, f, 4,
                 "%d threads from the cgroup CPU quota of %.2f CPUs (%s) rather than the %d CPUs of the affinity "
                 "mask; --threads overrides",
                 a.n, a.quota, a.quota_file, a.affinity);
    } else if (a.cpuset > 0 && a.cpuset == a.n) {
        struct herd_log_field f[] = {HERD_LOG_I("threads", a.n), HERD_LOG_S("file", a.cpuset_file)};
        herd_log(HERD_LOG_DEBUG, "engine", NULL, f, 2, "%d threads: the cgroup's CPU set (%s)", a.n, a.cpuset_file);
    }
    return a.n;
}

/* The KV cache's size under a cgroup memory limit: what the limit leaves
 * after the model file, the batch's activations and the runtime. The
 * default cache (n_ctx x max_seqs positions) shrinks to that budget, and
 * never grows to fill it (another process in the same cgroup, such as herd
 * route's pool children, may need the rest); an explicit --kv-mem wins
 * (a warning when it is over the budget). Fails, naming the limit, when
 * not even one context fits. */
static enum herd_status fit_kv_to_limit(const struct herd_engine_options *o, const struct herd_model *m,
                                        uint64_t model_bytes, uint64_t per_block, struct herd_context_params *p,
                                        struct herd_error *err) {
    const struct herd_cgroup_limits *cg = herd_cgroup_limits();
    if (!cg->memory_max_bytes || !per_block) return HERD_OK;
    struct herd_ram_estimate ram;
    herd_model_desc_ram_estimate(&m->desc, p->n_ctx, &ram);
    const uint64_t need = model_bytes + ram.compute + ENGINE_RUNTIME_BYTES;
    const uint64_t budget = cg->memory_max_bytes > need ? cg->memory_max_bytes - need : 0;
    const uint64_t blocks_ctx = (p->n_ctx + p->kv_block_tokens - 1) / p->kv_block_tokens;
    const uint64_t blocks = (uint64_t)(p->kv_tokens + p->kv_block_tokens - 1) / p->kv_block_tokens;
    const uint64_t bytes = blocks * per_block;
    struct herd_log_field f[] = {HERD_LOG_I("memory_limit", cg->memory_max_bytes),
                                 HERD_LOG_S("file", cg->memory_file),
                                 HERD_LOG_I("model_bytes", model_bytes),
                                 HERD_LOG_I("activation_bytes", ram.compute),
                                 HERD_LOG_I("kv_budget", budget),
                                 HERD_LOG_I("kv_bytes", bytes)};
    if (o->kv_mem) {
        if (bytes > budget)
            herd_log(HERD_LOG_WARN, "engine", NULL, f, 6,
                     "--kv-mem %.1f MiB is more than the %.1f MiB the cgroup memory limit of %.1f MiB (%s) leaves "
                     "after the model (%.1f MiB) and activations (%.1f MiB): the process may be OOM-killed",
                     MIB(bytes), MIB(budget), MIB(cg->memory_max_bytes), cg->memory_file, MIB(model_bytes),
                     MIB(ram.compute));
        return HERD_OK;
    }
    if (budget / per_block < blocks_ctx)
        return herd_error_set(err, HERD_E_NOMEM,
                              "the cgroup memory limit of %.1f MiB (%s) is too small for the model: %.1f MiB of "
                              "weights + %.1f MiB of activations + %.1f MiB for the runtime leave %.1f MiB, less "
                              "than the %.1f MiB of KV cache one context of %u tokens needs; raise the limit, or "
                              "lower --ctx or --batch-tokens",
                              MIB(cg->memory_max_bytes), cg->memory_file, MIB(model_bytes), MIB(ram.compute),
                              MIB(ENGINE_RUNTIME_BYTES), MIB(budget), MIB(blocks_ctx * per_block), p->n_ctx);
    if (bytes <= budget) {
        herd_log(HERD_LOG_INFO, "engine", NULL, f, 6,
                 "KV cache %.1f MiB (%u tokens) fits the cgroup memory limit of %.1f MiB (%s): budget %.1f MiB "
                 "after the model (%.1f MiB), activations (%.1f MiB) and the runtime (%.1f MiB)",
                 MIB(bytes), p->kv_tokens, MIB(cg->memory_max_bytes), cg->memory_file, MIB(budget), MIB(model_bytes),
                 MIB(ram.compute), MIB(ENGINE_RUNTIME_BYTES));
        return HERD_OK;
    }
    const uint64_t fit = budget / per_block * p->kv_block_tokens;
    p->kv_tokens = (uint32_t)(fit > (1u << 30) ? (1u << 30) : fit);
    f[5] = HERD_LOG_I("kv_bytes", budget / per_block * per_block);
    herd_log(HERD_LOG_INFO, "engine", NULL, f, 6,
             "KV cache %.1f MiB (%u tokens, not the %.1f MiB of %u contexts x %u) from the cgroup memory limit of "
             "%.1f MiB (%s) minus the model (%.1f MiB), activations (%.1f MiB) and the runtime (%.1f MiB); "
             "--kv-mem overrides",
             MIB(budget / per_block * per_block), p->kv_tokens, MIB(bytes), p->max_seqs, p->n_ctx,
             MIB(cg->memory_max_bytes), cg->memory_file, MIB(model_bytes), MIB(ram.compute), MIB(ENGINE_RUNTIME_BYTES));
    return HERD_OK;
}

/* The context's parameters from the options and the model's shape: n_ctx
 * positions per sequence, the KV cache for max_seqs of them or kv_mem
 * bytes, both bounded by a cgroup memory limit (fit_kv_to_limit); threads
 * from threads_of. */
static enum herd_status context_params(const struct herd_engine_options *o, const struct herd_model *m,
                                       uint64_t model_bytes, struct herd_context_params *p, struct herd_error *err) {
    herd_context_default_params(p);
    const uint32_t max_seqs = o->max_seqs ? o->max_seqs : 1;
    p->n_threads = threads_of(o);
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
    if (rc != HERD_OK) return rc;
    const struct herd_model_desc *d = &m->desc;
    struct herd_kv_params kp = {.n_layer = (uint32_t)d->n_layer,
                                .kv_dim = (uint32_t)(d->n_head_kv * d->head_dim),
                                .layer_heads = d->n_head_kv_layer,
                                .head_dim = (uint32_t)d->head_dim,
                                .block_tokens = p->kv_block_tokens,
                                .n_blocks = 1,
                                .max_seqs = 1,
                                .type = p->kv_type};
    const size_t per_block = herd_kv_block_bytes(&kp);
    if (o->kv_mem) {
        const uint64_t blocks = per_block ? o->kv_mem / per_block : 0;
        if (blocks * p->kv_block_tokens < n_ctx)
            return herd_error_set(err, HERD_E_INVALID,
                                  "--kv-mem %llu bytes holds %llu tokens, less than one context of %llu",
                                  (unsigned long long)o->kv_mem, (unsigned long long)(blocks * p->kv_block_tokens),
                                  (unsigned long long)n_ctx);
        p->kv_tokens = (uint32_t)(blocks * p->kv_block_tokens > (1u << 30) ? (1u << 30) : blocks * p->kv_block_tokens);
    }
    return fit_kv_to_limit(o, m, model_bytes, per_block, p, err);
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
    uint64_t model_bytes = 0;
    enum herd_status rc = check_model_fits(e->path, &model_bytes, err);
    if (rc == HERD_OK) rc = herd_model_load(e->path, &e->model, err);
    if (rc == HERD_OK) rc = context_params(o, e->model, model_bytes, &cp, err);
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
        if (o->background_tokens >= 0) sp.background_tokens = (uint32_t)o->background_tokens;
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
