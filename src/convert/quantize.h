/* `herd quantize`: rewrites a GGUF model with its matrices in a smaller
 * weight type, choosing each tensor's type by llama-quantize's rules, so
 * that `herd quantize IN OUT TYPE` writes the file `llama-quantize IN OUT
 * TYPE` writes, byte for byte (llama.cpp c392e50; with and without
 * --imatrix).
 *
 * What llama-quantize does, and so what this module does:
 *   - TYPE is a llama "file type" (ftype): a default weight type plus a mix
 *     (Q4_K_M gives some attn_v / ffn_down layers Q6_K, output.weight Q6_K,
 *     ...). --pure turns the mix off.
 *   - Tensors that stay as they are: 1-D tensors, names not ending in
 *     "weight", *_norm.weight, and a few architecture-specific ones.
 *   - A tensor whose rows (ne[0]) are not a multiple of its type's block
 *     falls back: Q2_K / Q3_K -> IQ4_NL, Q4_K -> Q5_0, Q5_K -> Q5_1,
 *     Q6_K -> Q8_0, and to F16 when that block does not fit either.
 *   - The output lists tensors sorted by layer number, then by name
 *     ("output.weight" < "token_embd.weight" < "blk.0.attn_k.weight" < ...),
 *     with 32-byte alignment.
 *   - Metadata: every key of the input, in order, except
 *     general.quantization_version and general.file_type, which are set
 *     (= 2 and the ftype) and moved to the end, and split.* keys, which are
 *     dropped; with an importance matrix, then quantize.imatrix.file (the
 *     path as given, cut at 127 bytes), .dataset, .entries_count and
 *     .chunks_count.
 * See docs/modules/quantize.md. */
#ifndef HERD_CONVERT_QUANTIZE_H
#define HERD_CONVERT_QUANTIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/gguf.h"
#include "herd/status.h"

/* llama_ftype values herd writes (llama.h). general.file_type holds them. */
enum herd_ftype {
    HERD_FTYPE_ALL_F32 = 0,
    HERD_FTYPE_F16 = 1,
    HERD_FTYPE_Q4_0 = 2,
    HERD_FTYPE_Q4_1 = 3,
    HERD_FTYPE_Q8_0 = 7,
    HERD_FTYPE_Q5_0 = 8,
    HERD_FTYPE_Q5_1 = 9,
    HERD_FTYPE_Q2_K = 10,
    HERD_FTYPE_Q3_K_S = 11,
    HERD_FTYPE_Q3_K_M = 12,
    HERD_FTYPE_Q3_K_L = 13,
    HERD_FTYPE_Q4_K_S = 14,
    HERD_FTYPE_Q4_K_M = 15,
    HERD_FTYPE_Q5_K_S = 16,
    HERD_FTYPE_Q5_K_M = 17,
    HERD_FTYPE_Q6_K = 18,
    HERD_FTYPE_Q2_K_S = 21,
    HERD_FTYPE_IQ4_NL = 25,
    HERD_FTYPE_BF16 = 32,
};

/* Parses TYPE as llama-quantize does: a name, case-insensitive ("q4_k_m",
 * "Q4_K" = Q4_K_M, "Q3_K" = Q3_K_M, "Q5_K" = Q5_K_M), or its number.
 * HERD_E_UNSUPPORTED for llama.cpp types herd has no quantizer for (the
 * IQ1..IQ3 / IQ4_XS / TQ families, COPY), HERD_E_INVALID for anything else;
 * err lists the accepted names. */
enum herd_status herd_quantize_ftype_parse(const char *text, enum herd_ftype *out, struct herd_error *err);

/* "Q4_K_M" for HERD_FTYPE_Q4_K_M; "?" for a value not in the enum. */
const char *herd_quantize_ftype_name(enum herd_ftype ftype);

/* The accepted TYPE names, comma separated (for help texts). */
const char *herd_quantize_ftype_names(void);

/* One finished tensor, for progress reports. */
struct herd_quantize_event {
    size_t index, n_tensors; /* index counts from 1 */
    const char *name;
    enum herd_ggml_type type_in, type_out;
    bool fallback;     /* the mix's type did not fit ne[0]; type_out is the fallback */
    bool imatrix_used; /* quantized with an importance-matrix entry */
    uint64_t bytes_in, bytes_out;
    uint64_t bytes_out_total; /* tensor bytes written so far */
};

/* Called on the calling thread after each tensor is written. */
typedef void (*herd_quantize_progress_fn)(void *ctx, const struct herd_quantize_event *ev);

struct herd_quantize_params {
    const char *in_path;
    const char *out_path;
    enum herd_ftype ftype;
    const char *imatrix_path;           /* llama.cpp's imatrix file, or NULL */
    int n_threads;                      /* <= 0: one per CPU (herd_cpu_count) */
    bool allow_requantize;              /* accept quantized input tensors (dequantized first) */
    bool pure;                          /* every matrix in the ftype's default type: no mix */
    int output_type;                    /* enum herd_ggml_type for output.weight, or -1: the rules */
    int token_embedding_type;           /* enum herd_ggml_type for token_embd.weight, or -1 */
    herd_quantize_progress_fn progress; /* may be NULL */
    void *progress_ctx;
};

void herd_quantize_default_params(struct herd_quantize_params *p);

struct herd_quantize_stats {
    size_t n_tensors;
    size_t n_quantized; /* tensors converted to another type */
    size_t n_fallback;  /* of those, tensors that needed the fallback type */
    size_t n_imatrix;   /* of those, tensors quantized with an importance matrix */
    uint64_t n_elems;   /* elements of all tensors */
    uint64_t bytes_in;  /* tensor bytes of the input */
    uint64_t bytes_out; /* tensor bytes of the output */
    uint64_t file_bytes_in, file_bytes_out;
    double seconds;
};

/* Quantizes p->in_path into p->out_path. The whole plan (every tensor's
 * type, the importance matrix's fit, requantization) is checked before any
 * data is written; the output goes to a temporary file renamed over
 * p->out_path only when complete (herd_gguf_writer), so a failure (a full
 * disk, a bad tensor) leaves no file there. Input tensors may be F32, F16,
 * BF16, or quantized with p->allow_requantize. On failure err names the
 * file and tensor. stats may be NULL. Uses p->n_threads threads for rows;
 * call from one thread at a time. */
enum herd_status herd_quantize_model(const struct herd_quantize_params *p, struct herd_quantize_stats *stats,
                                     struct herd_error *err);

#endif
