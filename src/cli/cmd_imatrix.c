/* `herd imatrix -m MODEL -f TEXT -o FILE [--chunks N] [--ctx N]`: the
 * importance matrix of a model over a text, in llama.cpp's format
 * (convert/imatrix.h), for `herd quantize --imatrix` or llama-quantize.
 *
 * As llama-imatrix does: the whole text is tokenized (BOS first when the
 * vocabulary adds one), cut into chunks of --ctx tokens, and each chunk runs
 * as a fresh sequence with its first token set to BOS; every block matmul's
 * input rows are collected. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mapped_file.h"
#include "cli/cli_model.h"
#include "cli/cli_progress.h"
#include "cli/commands.h"
#include "convert/imatrix.h"
#include "model/forward.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

static const struct cli_command cmd = {
    .name = "imatrix",
    .args = "",
    .summary = "Compute an importance matrix (mean squared activation per input column of every block matmul)\n"
               "over a text file, in the format llama-quantize and `herd quantize --imatrix` read.",
    .details = "The text is cut into chunks of --ctx tokens (default 512), each run as its own sequence from BOS.\n"
               "Use text like the model's real inputs; a few hundred chunks is typical.",
    .min_pos = 0,
    .max_pos = 0,
};

/* Text files above this are refused: tokenizing keeps one id per byte in
 * the worst case (4 bytes each), and an importance matrix needs far less. */
#define IMATRIX_MAX_TEXT_BYTES (256u << 20)

/* Tokens per herd_decode call: llama-imatrix's default micro-batch, so
 * each matmul call (ncall in the file) covers the same rows as its. */
#define IMATRIX_BATCH 512

int herd_cmd_imatrix(int argc, char **argv) {
    struct cli_model_opts mo = {0};
    const char *text_path = NULL, *out = NULL;
    uint64_t chunks = 0;
    const struct cli_opt opts[] = {
        CLI_MODEL_OPTIONS(mo),
        {"file", 'f', CLI_STRING, &text_path, "TEXT", "text file to run (required)"},
        {"output", 'o', CLI_STRING, &out, "FILE", "importance matrix to write (required)"},
        {"chunks", 0, CLI_U64, &chunks, "N", "chunks to run (default: all the text holds)"},
        {0},
    };
    int n_pos;
    int prc = cli_parse(&cmd, opts, argc, argv, NULL, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    if (!text_path || !out) {
        fprintf(stderr, "herd imatrix: -f TEXT and -o FILE are required\n");
        cli_print_help(&cmd, opts, stderr);
        return 2;
    }
    if (mo.ctx == 0) mo.ctx = 512;
    if (mo.ctx < 16 || mo.ctx > 65536) {
        fprintf(stderr, "herd imatrix: --ctx must be in 16..65536 (fewer than 16 rows are not collected)\n");
        return 2;
    }
    const uint32_t n_ctx = (uint32_t)mo.ctx, batch = n_ctx < IMATRIX_BATCH ? n_ctx : IMATRIX_BATCH;

    struct herd_mapped_file text = {0};
    struct herd_engine *e = NULL;
    struct herd_imatrix *im = NULL;
    int32_t *ids = NULL;
    uint32_t *pos = NULL;
    int32_t *seq = NULL;
    struct herd_error err = {0};
    int rc = 1;
    if (herd_mapped_file_init(&text, text_path, &err) != HERD_OK) goto fail;
    if (text.size > IMATRIX_MAX_TEXT_BYTES) {
        fprintf(stderr, "herd imatrix: %s is %zu bytes; at most %u are read (cut it)\n", text_path, text.size,
                IMATRIX_MAX_TEXT_BYTES);
        goto out;
    }
    struct herd_engine_options eo;
    cli_engine_options(&mo, &eo);
    eo.parts = HERD_ENGINE_TEXT;
    eo.batch_tokens = batch;
    eo.max_outputs = 1;
    if (!(e = cli_engine_open("imatrix", &eo))) goto out;
    const struct herd_model *model = herd_engine_model(e);
    struct herd_context *ctx = herd_engine_context(e);
    const struct herd_vocab *vocab = herd_engine_vocab(e);
    const struct herd_tokenizer *tk = herd_engine_tokenizer(e);
    const uint32_t max_ids = (uint32_t)text.size + 2;
    uint32_t n_ids = 0;
    ids = malloc((size_t)max_ids * sizeof *ids);
    pos = malloc(batch * sizeof *pos);
    seq = calloc(batch, sizeof *seq);
    im = herd_imatrix_create_for(model, false);
    if (!ids || !pos || !seq || !im) {
        fprintf(stderr, "herd imatrix: out of memory\n");
        goto out;
    }
    if (herd_tokenize(tk, (const char *)text.data, text.size, HERD_TOK_ADD_SPECIAL, ids, max_ids, &n_ids, &err) !=
        HERD_OK)
        goto fail;
    uint64_t n_chunks = n_ids / n_ctx;
    if (chunks && chunks < n_chunks) n_chunks = chunks;
    if (n_chunks == 0) {
        fprintf(stderr, "herd imatrix: %s has %u tokens, fewer than one chunk of %u (lower --ctx or add text)\n",
                text_path, n_ids, n_ctx);
        goto out;
    }
    fprintf(stderr, "herd imatrix: %u tokens, %llu chunks of %u\n", n_ids, (unsigned long long)n_chunks, n_ctx);
    /* the collector sees each matmul's float inputs */
    ctx->params.observe_matmul = herd_imatrix_observe;
    ctx->params.observe_ctx = im;
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
    if (herd_imatrix_save(im, out, (int32_t)n_chunks, text_path, &err) != HERD_OK) goto fail;
    fprintf(stderr, "herd imatrix: wrote %s (%zu matrices, %llu chunks)\n", out, im->n_entries,
            (unsigned long long)n_chunks);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "herd imatrix: %s\n", err.msg);
out:
    free(ids);
    free(pos);
    free(seq);
    herd_imatrix_destroy(im);
    herd_engine_close(e);
    herd_mapped_file_cleanup(&text);
    return rc;
}
