/* The file llama-perplexity writes with --kl-divergence-base and reads with
 * --kl-divergence: a base model's log-probabilities over a text, so that
 * another model (a quantization, a pruned copy) can be compared with it
 * token by token. herd writes and reads the same bytes.
 *
 * Layout, all little-endian, no padding:
 *   char   magic[8] = "_logits_"
 *   u32    n_ctx                          tokens per chunk
 *   i32    n_vocab
 *   i32    n_chunk
 *   i32    tokens[n_chunk * n_ctx]        the text's tokens, the chunks in order
 *                                         (first tokens as in the text, not BOS)
 *   n_chunk x (n_ctx - 1 - n_ctx / 2) rows of herd_ppl_packed_row_len(n_vocab)
 *          u16 each (quality/perplexity.h): the scored second half of each chunk,
 *          the row at chunk position j predicting token j + 1. */
#ifndef HERD_QUALITY_LOGITS_FILE_H
#define HERD_QUALITY_LOGITS_FILE_H

#include <stdint.h>
#include <stdio.h>

#include "base/mapped_file.h"
#include "herd/status.h"

/* Rows stored per chunk: positions n_ctx/2 .. n_ctx-2. */
static inline uint32_t herd_logits_file_rows(uint32_t n_ctx) { return n_ctx - 1 - n_ctx / 2; }

/* ---------------------------------------------------------------- writing */

/* A file being written: to "PATH.tmp-PID", renamed to PATH by finish. */
struct herd_logits_writer {
    FILE *f;
    char *path, *tmp_path; /* owned */
};

/* Creates the temporary file and writes the header and tokens
 * [n_chunk * n_ctx]. On failure nothing is left on disk. The caller frees
 * the writer with herd_logits_writer_finish or _abort. */
enum herd_status herd_logits_writer_create(struct herd_logits_writer *w, const char *path, uint32_t n_ctx,
                                           int32_t n_vocab, int32_t n_chunk, const int32_t *tokens,
                                           struct herd_error *err);

/* Appends n u16 values (whole packed rows). */
enum herd_status herd_logits_writer_append(struct herd_logits_writer *w, const uint16_t *rows, size_t n,
                                           struct herd_error *err);

/* Syncs, closes and renames into place; on failure removes the temporary
 * file. Frees the writer's memory either way. */
enum herd_status herd_logits_writer_finish(struct herd_logits_writer *w, struct herd_error *err);

/* Closes and removes the temporary file (an interrupted or failed run). */
void herd_logits_writer_abort(struct herd_logits_writer *w);

/* ---------------------------------------------------------------- reading */

struct herd_logits_file {
    struct herd_mapped_file map;
    uint32_t n_ctx;
    int32_t n_vocab, n_chunk;
    const int32_t *tokens; /* [n_chunk * n_ctx], into the mapping */
    const uint16_t *rows;  /* [n_chunk * rows per chunk * row length], into the mapping */
};

/* Maps and checks a file: the magic, counts within bounds, and a size that
 * is exactly what the header says (a truncated or padded file is an error
 * naming what was expected). Release with herd_logits_file_cleanup. */
enum herd_status herd_logits_file_open(struct herd_logits_file *lf, const char *path, struct herd_error *err);

/* The packed row of chunk c, position first + i (i < rows per chunk). */
const uint16_t *herd_logits_file_row(const struct herd_logits_file *lf, uint32_t c, uint32_t i);

void herd_logits_file_cleanup(struct herd_logits_file *lf);

#endif
