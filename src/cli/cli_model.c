/* The shared model flags as engine options, and token id lists. */
#include "cli/cli_model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/paths.h"

void cli_engine_options(const struct cli_model_opts *mo, struct herd_engine_options *eo) {
    herd_engine_default_options(eo);
    eo->model_path = mo->model;
    eo->threads = (uint32_t)(mo->threads > 1024 ? 1024 : mo->threads);
    eo->n_ctx = (uint32_t)(mo->ctx > (1u << 24) ? (1u << 24) : mo->ctx);
    eo->precise = mo->precise;
    eo->kv_type = mo->kv_type;
    eo->kv_mem = mo->kv_mem;
}

struct herd_engine *cli_engine_open(const char *cmd, const struct herd_engine_options *eo) {
    struct herd_engine *e = NULL;
    struct herd_error err = {0};
    if (herd_engine_open(eo, &e, &err) != HERD_OK) fprintf(stderr, "herd %s: %s\n", cmd, err.msg);
    return e;
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

const char *cli_model_name(const struct cli_model_opts *mo, char *out, size_t cap) {
    char path[4096];
    const char *file = mo->model ? mo->model : herd_paths_data(HERD_PATH_DEFAULT_MODEL, path, sizeof path);
    const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
    snprintf(out, cap, "%s", base);
    char *dot = strrchr(out, '.');
    if (dot && strcmp(dot, ".gguf") == 0) *dot = 0;
    return out;
}
