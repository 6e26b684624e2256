/* Options every command that runs a model shares (-m, --threads, --ctx,
 * --precise, --kv-type) and how they become a herd_engine, so each command
 * states them once. */
#ifndef HERD_CLI_CLI_MODEL_H
#define HERD_CLI_CLI_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli/cli_args.h"
#include "herd/herd.h"

struct cli_model_opts {
    const char *model;   /* -m; NULL: the default model */
    uint64_t threads;    /* 0: all CPUs this process may use */
    uint64_t ctx;        /* context (KV capacity) in tokens; 0: the model's, at most 4096 */
    bool precise;        /* f32 activations and f32 KV cache */
    const char *kv_type; /* "f16" (default), "f32" or "q8" */
    uint64_t kv_mem;     /* KV cache bytes over all sequences; 0: ctx x max_seqs tokens */
};

/* Option table entries for these fields; append {0} after your own. */
#define CLI_MODEL_OPTIONS(o)                                                                                           \
    {"model", 'm', CLI_STRING, &(o).model, "FILE", "GGUF model (default: the built-in stories260K)"},                  \
        {"threads", 't', CLI_U64, &(o).threads, "N", "threads (default: the CPUs this process may use)"},              \
        {"ctx", 'c', CLI_U64, &(o).ctx, "N", "context length in tokens (default: the model's, at most 4096)"},         \
        {"precise", 0, CLI_FLAG, &(o).precise, NULL, "f32 activations and an f32 KV cache (slower; for checking)"}, {  \
        "kv-type", 0, CLI_STRING, &(o).kv_type, "T", "KV cache type: f16 (default), f32 or q8"                         \
    }

/* Engine options from the shared flags (the rest at their defaults). */
void cli_engine_options(const struct cli_model_opts *mo, struct herd_engine_options *eo);

/* herd_engine_open; prints the error (prefixed with "herd CMD: ") and
 * returns NULL on failure. */
struct herd_engine *cli_engine_open(const char *cmd, const struct herd_engine_options *eo);

/* The model id requests name by default: the model file's name without
 * .gguf. Written to out (cap bytes), which is returned. */
const char *cli_model_name(const struct cli_model_opts *mo, char *out, size_t cap);
/* Parses "1,2,3" into ids (at most max); false with a message on bad input. */
bool cli_parse_ids(const char *cmd, const char *text, int32_t *ids, uint32_t max, uint32_t *n);

#endif
