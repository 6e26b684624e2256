/* `herd eval`: one forward pass over a list of token ids as one sequence,
 * printing the top logits at every position and the whole last row; the
 * form the correctness tests compare with the reference. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli_model.h"
#include "cli/commands.h"
#include "model/forward.h"
#include "model/model.h"

static const struct cli_command cmd = {
    .name = "eval",
    .args = "",
    .summary = "Evaluate token ids as one sequence and print logits as JSON:\n"
               "{\"n_vocab\":V,\"positions\":[{\"pos\":0,\"top\":[[id,logit],...]},...],\"last_logits\":[V floats]}",
    .min_pos = 0,
    .max_pos = 0,
};

#define EVAL_MAX_IDS 65536

/* Indices of the k largest values of row (ties to the lower id), into top. */
static void top_k(const float *row, uint32_t n, uint32_t k, uint32_t *top) {
    for (uint32_t i = 0; i < k; i++) top[i] = UINT32_MAX;
    for (uint32_t id = 0; id < n; id++) {
        uint32_t j = k;
        while (j > 0 && (top[j - 1] == UINT32_MAX || row[id] > row[top[j - 1]])) j--;
        if (j >= k) continue;
        for (uint32_t s = k - 1; s > j; s--) top[s] = top[s - 1];
        top[j] = id;
    }
}

int herd_cmd_eval(int argc, char **argv) {
    struct cli_model_opts mo = {0};
    const char *ids_text = NULL;
    uint64_t top = 5, batch = 64;
    const struct cli_opt opts[] = {
        CLI_MODEL_OPTIONS(mo),
        {"ids", 0, CLI_STRING, &ids_text, "1,2,3", "token ids (required; include BOS yourself)"},
        {"top", 0, CLI_U64, &top, "K", "top logits per position (default 5)"},
        {"batch", 0, CLI_U64, &batch, "N", "tokens per forward pass, 1..64 (default 64; 1 checks the decode path)"},
        {0},
    };
    int n_pos;
    int prc = cli_parse(&cmd, opts, argc, argv, NULL, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    if (!ids_text) {
        fprintf(stderr, "herd eval: --ids is required\n");
        cli_print_help(&cmd, opts, stderr);
        return 2;
    }
    if (top == 0 || top > 1000) {
        fprintf(stderr, "herd eval: --top must be in 1..1000\n");
        return 2;
    }
    if (batch == 0 || batch > 64) {
        fprintf(stderr, "herd eval: --batch must be in 1..64\n");
        return 2;
    }
    int32_t *ids = malloc(EVAL_MAX_IDS * sizeof *ids);
    uint32_t n = 0;
    if (!ids || !cli_parse_ids("eval", ids_text, ids, EVAL_MAX_IDS, &n)) {
        free(ids);
        return 2;
    }
    if (mo.ctx == 0) mo.ctx = n;
    struct herd_engine_options eo;
    cli_engine_options(&mo, &eo);
    eo.batch_tokens = 64;
    eo.max_outputs = 64;
    struct herd_engine *e = cli_engine_open("eval", &eo);
    if (!e) {
        free(ids);
        return 1;
    }
    struct herd_context *ctx = herd_engine_context(e);
    const uint32_t V = (uint32_t)herd_engine_model(e)->desc.n_vocab;
    if (top > V) top = V;
    json_t *root = json_object(), *positions = json_array(), *last = json_array();
    uint32_t *best = malloc(top * sizeof *best);
    uint32_t *pos = malloc(64 * sizeof *pos);
    int32_t *seq = calloc(64, sizeof *seq);
    bool *want = malloc(64 * sizeof *want);
    int32_t s;
    struct herd_error err = {0};
    int rc = 0;
    if (herd_kv_seq_new(ctx->kv, &s, &err) != HERD_OK) goto fail;
    for (uint32_t i0 = 0; i0 < n; i0 += (uint32_t)batch) {
        uint32_t m = n - i0 < batch ? n - i0 : (uint32_t)batch;
        for (uint32_t i = 0; i < m; i++) pos[i] = i0 + i, seq[i] = s, want[i] = true;
        struct herd_batch b = {m, ids + i0, pos, seq, want};
        if (herd_decode(ctx, &b, &err) != HERD_OK) goto fail;
        for (uint32_t i = 0; i < m; i++) {
            const float *row = herd_context_logits(ctx, i);
            top_k(row, V, (uint32_t)top, best);
            json_t *t = json_array();
            for (uint32_t j = 0; j < top; j++)
                json_array_append_new(t, json_pack("[i,f]", (int)best[j], (double)row[best[j]]));
            json_array_append_new(positions, json_pack("{s:i,s:o}", "pos", (int)(i0 + i), "top", t));
            if (i0 + i == n - 1)
                for (uint32_t v = 0; v < V; v++) json_array_append_new(last, json_real(row[v]));
        }
    }
    json_object_set_new(root, "n_vocab", json_integer(V));
    json_object_set_new(root, "positions", positions);
    json_object_set_new(root, "last_logits", last);
    positions = last = NULL;
    json_dumpf(root, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    goto out;
fail:
    fprintf(stderr, "herd eval: %s\n", err.msg);
    rc = 1;
out:
    json_decref(positions);
    json_decref(last);
    json_decref(root);
    free(best);
    free(pos);
    free(seq);
    free(want);
    free(ids);
    herd_engine_close(e);
    return rc;
}
