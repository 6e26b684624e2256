/* The calibration run of imatrix and prune (cli_calib.h). */
#include "cli/cli_calib.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/mapped_file.h"
#include "cli/cli_progress.h"
#include "model/forward.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

uint32_t cli_calib_batch(uint32_t n_ctx) { return n_ctx < CLI_CALIB_BATCH ? n_ctx : CLI_CALIB_BATCH; }

int cli_calib_readable(const char *cmd, const char *text_path) {
    struct herd_mapped_file f = {0};
    struct herd_error err = {0};
    if (herd_mapped_file_init(&f, text_path, &err) != HERD_OK) {
        fprintf(stderr, "herd %s: %s\n", cmd, err.msg);
        return 1;
    }
    herd_mapped_file_cleanup(&f);
    return 0;
}

int cli_calib_run(const char *cmd, struct herd_engine *e, const char *text_path, uint32_t n_ctx, uint64_t max_chunks,
                  struct cli_calib_result *out) {
    struct herd_mapped_file text = {0};
    int32_t *ids = NULL;
    uint32_t *pos = NULL;
    int32_t *seq = NULL;
    struct herd_error err = {0};
    const uint32_t batch = cli_calib_batch(n_ctx);
    int rc = 1;
    if (herd_mapped_file_init(&text, text_path, &err) != HERD_OK) goto fail;
    if (text.size > CLI_CALIB_MAX_TEXT_BYTES) {
        fprintf(stderr, "herd %s: %s is %zu bytes; at most %u are read (cut it)\n", cmd, text_path, text.size,
                CLI_CALIB_MAX_TEXT_BYTES);
        goto out;
    }
    struct herd_context *ctx = herd_engine_context(e);
    const struct herd_vocab *vocab = herd_engine_vocab(e);
    const struct herd_tokenizer *tk = herd_engine_tokenizer(e);
    const uint32_t max_ids = (uint32_t)text.size + 2;
    uint32_t n_ids = 0;
    ids = malloc((size_t)max_ids * sizeof *ids);
    pos = malloc(batch * sizeof *pos);
    seq = calloc(batch, sizeof *seq);
    if (!ids || !pos || !seq) {
        fprintf(stderr, "herd %s: out of memory\n", cmd);
        goto out;
    }
    if (herd_tokenize(tk, (const char *)text.data, text.size, HERD_TOK_ADD_SPECIAL, ids, max_ids, &n_ids, &err) !=
        HERD_OK)
        goto fail;
    uint64_t n_chunks = n_ids / n_ctx;
    if (max_chunks && max_chunks < n_chunks) n_chunks = max_chunks;
    if (n_chunks == 0) {
        fprintf(stderr, "herd %s: %s has %u tokens, fewer than one chunk of %u (lower --ctx or add text)\n", cmd,
                text_path, n_ids, n_ctx);
        goto out;
    }
    fprintf(stderr, "herd %s: %u tokens, %llu chunks of %u\n", cmd, n_ids, (unsigned long long)n_chunks, n_ctx);
    struct cli_progress prog;
    cli_progress_start(&prog, "chunk", n_chunks);
    for (uint64_t c = 0; c < n_chunks; c++) {
        int32_t *chunk = ids + c * n_ctx;
        if (vocab->add_bos && vocab->bos >= 0) chunk[0] = vocab->bos;
        int32_t s;
        if (herd_kv_seq_new(ctx->kv, &s, &err) != HERD_OK) goto fail;
        for (uint32_t i0 = 0; i0 < n_ctx; i0 += batch) {
            const uint32_t m = n_ctx - i0 < batch ? n_ctx - i0 : batch;
            for (uint32_t i = 0; i < m; i++) pos[i] = i0 + i, seq[i] = s;
            struct herd_batch b = {m, chunk + i0, pos, seq, NULL};
            if (herd_decode(ctx, &b, &err) != HERD_OK) {
                herd_kv_seq_free(ctx->kv, s);
                goto fail;
            }
        }
        herd_kv_seq_free(ctx->kv, s);
        cli_progress_update(&prog, c + 1, 0);
    }
    cli_progress_finish(&prog);
    out->n_text_tokens = n_ids;
    out->n_chunks = n_chunks;
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "herd %s: %s\n", cmd, err.msg);
out:
    free(ids);
    free(pos);
    free(seq);
    herd_mapped_file_cleanup(&text);
    return rc;
}
