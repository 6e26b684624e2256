/* Importance matrices: for every block matmul of a model, the mean of the
 * squared activations entering each input column over a body of text. The
 * K-quant quantizers weigh each column's rounding error by it (herd
 * quantize --imatrix), so columns that carry large activations are kept
 * more exactly.
 *
 * The file is llama.cpp's (llama-imatrix writes it, llama-quantize reads
 * it), all little-endian:
 *   i32 n_entries
 *   n_entries x { i32 name_len; name bytes (no NUL); i32 ncall; i32 nval; f32 values[nval] }
 *   i32 chunks; i32 dataset_len; dataset bytes          (optional trailer)
 * where name is the tensor's ("blk.3.attn_q.weight"), ncall the number of
 * matmul calls it saw and values[j] = (sum of x_j^2 / rows seen) x ncall,
 * so that a reader divides by ncall to get the mean. */
#ifndef HERD_CONVERT_IMATRIX_H
#define HERD_CONVERT_IMATRIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/status.h"
#include "model/model.h"

/* Bounds of what a file may claim, so a corrupt count cannot make the
 * reader allocate without limit: names are GGUF tensor names (<= 64 bytes
 * in ggml; 4096 is generous), columns per matrix far above any model's
 * (the largest published n_ff is under 64k; 1 << 24 leaves room for merged
 * experts), entries above any model's matrix count. */
#define HERD_IMATRIX_MAX_NAME    4096
#define HERD_IMATRIX_MAX_VALUES  (1 << 24)
#define HERD_IMATRIX_MAX_ENTRIES (1 << 20)

struct herd_imatrix_entry {
    char *name;    /* owned */
    int32_t ncall; /* matmul calls collected */
    uint32_t nval; /* input columns */
    double *sum;   /* [nval] while collecting: sum of x^2 over rows */
    uint64_t rows; /* rows summed while collecting */
    float *values; /* [nval] as loaded: the mean of x^2 (the file's values / ncall) */
};

struct herd_imatrix {
    struct herd_imatrix_entry *entries;
    size_t n_entries;
    int32_t chunks;   /* chunks of text behind it (the trailer; 0 if absent) */
    char *dataset;    /* the text file's name (the trailer), or NULL */
    bool with_output; /* collecting: include output.weight (llama-imatrix --process-output) */
};

/* A collector for m's block matrices (and output.weight when with_output):
 * one entry per matrix, all zero. Free with herd_imatrix_destroy. NULL on
 * out of memory. */
struct herd_imatrix *herd_imatrix_create_for(const struct herd_model *m, bool with_output);

/* The herd_context_params.observe_matmul callback (ctx: the collector):
 * adds each row's squares to the matrix's entry. Like llama-imatrix, a call
 * with fewer than 16 rows is not counted (single-token decodes would
 * otherwise dominate the count of calls). Single-threaded. */
void herd_imatrix_observe(void *ctx, uint32_t layer, enum herd_matrix_role role, const float *x, size_t x_stride,
                          size_t n_tokens);

/* Writes the collected matrix to path in llama.cpp's format, through a
 * temporary file renamed at the end (a failure leaves no partial file).
 * Entries that saw no call are skipped, as llama-imatrix does. chunks and
 * dataset go into the trailer. */
enum herd_status herd_imatrix_save(const struct herd_imatrix *im, const char *path, int32_t chunks, const char *dataset,
                                   struct herd_error *err);

/* Reads a file written by llama-imatrix or herd imatrix; each entry's
 * values are the means (the file's values / ncall). Every count is checked
 * against the file's size and the bounds above: a truncated or corrupt file
 * is an error naming the entry and offset. */
enum herd_status herd_imatrix_load(const char *path, struct herd_imatrix **out, struct herd_error *err);

/* The loaded entry for a tensor name, or NULL. */
const struct herd_imatrix_entry *herd_imatrix_find(const struct herd_imatrix *im, const char *name);

void herd_imatrix_destroy(struct herd_imatrix *im);

#endif
