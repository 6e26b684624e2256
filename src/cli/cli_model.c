/* Shared model/context setup for run, eval and bench. */
#include "cli/cli_model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/paths.h"

bool cli_model_open(const char *cmd, const struct cli_model_opts *o, uint32_t max_batch, uint32_t max_outputs,
                    uint32_t max_seqs, struct herd_model **model, struct herd_context **ctx) {
    char path[4096];
    const char *file = o->model ? o->model : herd_paths_data(HERD_PATH_DEFAULT_MODEL, path, sizeof path);
    struct herd_error err = {0};
    *model = NULL;
    *ctx = NULL;
    if (herd_model_load(file, model, &err) != HERD_OK) {
        fprintf(stderr, "herd %s: %s\n", cmd, err.msg);
        return false;
    }
    struct herd_context_params p;
    herd_context_default_params(&p);
    p.n_threads = (int)(o->threads > 1024 ? 1024 : o->threads);
    uint64_t n_ctx = o->ctx;
    if (n_ctx == 0)
        n_ctx = (*model)->desc.n_ctx_train && (*model)->desc.n_ctx_train < 4096 ? (*model)->desc.n_ctx_train : 4096;
    if (n_ctx > (1u << 24)) n_ctx = 1u << 24;
    p.kv_tokens = (uint32_t)n_ctx * (max_seqs > 1 ? max_seqs : 1);
    p.n_ctx = (uint32_t)n_ctx;
    p.max_batch_tokens = max_batch;
    p.max_outputs = max_outputs;
    p.max_seqs = max_seqs;
    p.precise = o->precise;
    if (o->precise || (o->kv_type && strcmp(o->kv_type, "f32") == 0))
        p.kv_type = HERD_KV_F32;
    else if (o->kv_type && strcmp(o->kv_type, "q8") == 0)
        p.kv_type = HERD_KV_Q8;
    else if (o->kv_type && strcmp(o->kv_type, "f16") != 0) {
        fprintf(stderr, "herd %s: --kv-type must be f16, f32 or q8\n", cmd);
        herd_model_destroy(*model);
        *model = NULL;
        return false;
    }
    if (o->kv_mem) {
        const struct herd_model_desc *d = &(*model)->desc;
        struct herd_kv_params kp = {.n_layer = (uint32_t)d->n_layer,
                                    .kv_dim = (uint32_t)(d->n_head_kv * d->head_dim),
                                    .head_dim = (uint32_t)d->head_dim,
                                    .block_tokens = p.kv_block_tokens,
                                    .n_blocks = 1,
                                    .max_seqs = 1,
                                    .type = p.kv_type};
        size_t per_block = herd_kv_block_bytes(&kp);
        uint64_t blocks = per_block ? o->kv_mem / per_block : 0;
        if (blocks * p.kv_block_tokens < n_ctx) {
            fprintf(stderr, "herd %s: --kv-mem %llu bytes holds %llu tokens, less than one context of %llu\n", cmd,
                    (unsigned long long)o->kv_mem, (unsigned long long)(blocks * p.kv_block_tokens),
                    (unsigned long long)n_ctx);
            herd_model_destroy(*model);
            *model = NULL;
            return false;
        }
        p.kv_tokens = (uint32_t)(blocks * p.kv_block_tokens > (1u << 30) ? (1u << 30) : blocks * p.kv_block_tokens);
    }
    if (herd_context_create(*model, &p, ctx, &err) != HERD_OK) {
        fprintf(stderr, "herd %s: %s\n", cmd, err.msg);
        herd_model_destroy(*model);
        *model = NULL;
        return false;
    }
    return true;
}

bool cli_parse_ids(const char *cmd, const char *text, int32_t *ids, uint32_t max, uint32_t *n) {
    *n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            fprintf(stderr, "herd %s: bad token id list '%s' (expected 1,2,3)\n", cmd, text);
            return false;
        }
        if (*n >= max) {
            fprintf(stderr, "herd %s: more than %u token ids\n", cmd, max);
            return false;
        }
        ids[(*n)++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (*n == 0) {
        fprintf(stderr, "herd %s: empty token id list\n", cmd);
        return false;
    }
    return true;
}
