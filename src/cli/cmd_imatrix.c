/* `herd imatrix -m MODEL -f TEXT -o FILE [--chunks N] [--ctx N]`: the
 * importance matrix of a model over a text, in llama.cpp's format
 * (convert/imatrix.h), for `herd quantize --imatrix` or llama-quantize.
 *
 * As llama-imatrix does (cli_calib.h): the whole text is tokenized, cut into
 * chunks of --ctx tokens, each run as a fresh sequence from BOS; every block
 * matmul's input rows are collected. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_calib.h"
#include "cli/cli_model.h"
#include "cli/commands.h"
#include "convert/imatrix.h"
#include "model/forward.h"

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
    const uint32_t n_ctx = (uint32_t)mo.ctx;

    struct herd_engine *e = NULL;
    struct herd_imatrix *im = NULL;
    struct herd_error err = {0};
    int rc = 1;
    if (cli_calib_readable("imatrix", text_path) != 0) return 1;
    struct herd_engine_options eo;
    cli_engine_options(&mo, &eo);
    eo.parts = HERD_ENGINE_TEXT;
    eo.batch_tokens = cli_calib_batch(n_ctx);
    eo.max_outputs = 1;
    if (!(e = cli_engine_open("imatrix", &eo))) goto out;
    im = herd_imatrix_create_for(herd_engine_model(e), false);
    if (!im) {
        fprintf(stderr, "herd imatrix: out of memory\n");
        goto out;
    }
    /* the collector sees each matmul's float inputs */
    struct herd_context *ctx = herd_engine_context(e);
    ctx->params.observe_matmul = herd_imatrix_observe;
    ctx->params.observe_ctx = im;
    struct cli_calib_result cr;
    if (cli_calib_run("imatrix", e, text_path, n_ctx, chunks, &cr) != 0) goto out;
    if (herd_imatrix_save(im, out, (int32_t)cr.n_chunks, text_path, &err) != HERD_OK) {
        fprintf(stderr, "herd imatrix: %s\n", err.msg);
        goto out;
    }
    fprintf(stderr, "herd imatrix: wrote %s (%zu matrices, %llu chunks)\n", out, im->n_entries,
            (unsigned long long)cr.n_chunks);
    rc = 0;
out:
    herd_imatrix_destroy(im);
    herd_engine_close(e);
    return rc;
}
