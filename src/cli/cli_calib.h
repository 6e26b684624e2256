/* A calibration run over a text file, shared by the commands that observe
 * a model on text (imatrix, prune), as llama-imatrix runs one: the whole
 * text is tokenized (BOS first when the vocabulary adds one), cut into
 * chunks of n_ctx tokens, and each chunk runs as a fresh sequence with its
 * first token set to BOS. The caller sets the context's observers
 * (observe_matmul, observe_residual) first; this only feeds the text. */
#ifndef HERD_CLI_CLI_CALIB_H
#define HERD_CLI_CLI_CALIB_H

#include <stdint.h>

#include "herd/herd.h"

/* Text files above this are refused: tokenizing keeps one id per byte in
 * the worst case (4 bytes each), and calibration needs far less. */
#define CLI_CALIB_MAX_TEXT_BYTES (256u << 20)

/* Tokens per herd_decode call: llama-imatrix's default micro-batch, so
 * each matmul call (ncall in an importance matrix) covers the same rows. */
#define CLI_CALIB_BATCH 512

struct cli_calib_result {
    uint32_t n_text_tokens; /* tokens of the whole text */
    uint64_t n_chunks;      /* chunks run */
};

/* Tokens per forward pass for chunks of n_ctx: min(n_ctx, CLI_CALIB_BATCH).
 * Open the engine with this batch_tokens. */
uint32_t cli_calib_batch(uint32_t n_ctx);

/* Whether text_path can be read, to check before loading a model (which
 * may take long): 0, or 1 after printing "herd CMD: ..." naming it. */
int cli_calib_readable(const char *cmd, const char *text_path);

/* Runs at most max_chunks (0: all) chunks of n_ctx tokens of text_path
 * through e's context. Prints "herd CMD: N tokens, C chunks of n_ctx" and
 * a progress line to stderr. Returns 0, or 1 after printing the error
 * ("herd CMD: ..."): an unreadable or oversized file, a text shorter than
 * one chunk, a failed forward pass. */
int cli_calib_run(const char *cmd, struct herd_engine *e, const char *text_path, uint32_t n_ctx, uint64_t max_chunks,
                  struct cli_calib_result *out);

#endif
