/* Reader of safetensors files, the weight format of Hugging Face models.
 *
 * Layout (integers little endian):
 *
 *   offset  size  field
 *   0       8     u64 N: bytes of the JSON header
 *   8       N     UTF-8 JSON object, padded with spaces: for each tensor
 *                   "NAME": {"dtype": "F32", "shape": [rows, cols],
 *                            "data_offsets": [begin, end]}
 *                 and optionally "__metadata__": {"key": "value", ...}
 *                 (string values only; PyTorch writers record tied weights
 *                 there, e.g. "model.embed_tokens.weight": "lm_head.weight")
 *   8 + N   ...   data: each tensor's bytes, row-major, outermost dimension
 *                 first, at [begin, end) relative to the start of the data
 *
 * Every file is treated as hostile: the header size is capped and checked
 * against the file, the JSON is parsed with duplicate keys refused, and each
 * tensor's dtype is known, its element and byte counts are computed with
 * checked arithmetic and must equal end - begin, its range lies inside the
 * data, and no two ranges overlap. Gaps between tensors are allowed (they hold
 * no tensor, and the reference implementation's writers never leave any).
 * Errors name the file, the tensor and the field. */
#ifndef HERD_CONVERT_SAFETENSORS_H
#define HERD_CONVERT_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/mapped_file.h"
#include "herd/status.h"

/* The safetensors library refuses headers over 100 MB (MAX_HEADER_SIZE); the
 * largest real ones (thousands of tensors) are a few hundred KB. */
#define HERD_SAFETENSORS_MAX_HEADER_BYTES 100000000u
/* More dimensions than any weight has; bounds the shape array. */
#define HERD_SAFETENSORS_MAX_DIMS         8u

/* The dtypes the format defines (safetensors' Dtype, byte-sized and wider). */
enum herd_safetensors_dtype {
    HERD_SAFETENSORS_BOOL,
    HERD_SAFETENSORS_U8,
    HERD_SAFETENSORS_I8,
    HERD_SAFETENSORS_F8_E5M2,
    HERD_SAFETENSORS_F8_E4M3,
    HERD_SAFETENSORS_I16,
    HERD_SAFETENSORS_U16,
    HERD_SAFETENSORS_F16,
    HERD_SAFETENSORS_BF16,
    HERD_SAFETENSORS_I32,
    HERD_SAFETENSORS_U32,
    HERD_SAFETENSORS_F32,
    HERD_SAFETENSORS_F64,
    HERD_SAFETENSORS_I64,
    HERD_SAFETENSORS_U64,
    HERD_SAFETENSORS_DTYPE__COUNT
};

struct herd_safetensors_tensor {
    const char *name; /* NUL-terminated, owned by the file object */
    enum herd_safetensors_dtype dtype;
    uint32_t n_dims;                           /* 0 for a scalar */
    uint64_t shape[HERD_SAFETENSORS_MAX_DIMS]; /* outermost first: a matrix is [rows, cols] */
    uint64_t n_elems;                          /* product of shape (1 for a scalar) */
    uint64_t n_bytes;                          /* n_elems * dtype size = end - begin */
    uint64_t file_offset;                      /* absolute offset of the first byte, for messages */
    const uint8_t *data;                       /* into the mapping; not aligned in general */
};

struct herd_safetensors;

/* Maps path read-only and parses and checks its header. On success *out owns
 * the mapping and every tensor record; free it with herd_safetensors_destroy.
 * On failure returns the status (IO, TRUNCATED, FORMAT, OVERFLOW, DUPLICATE,
 * NOMEM), fills err naming the file, the tensor and the field, and leaves
 * *out NULL. Any thread; the result is read-only and may be shared. */
enum herd_status herd_safetensors_open(const char *path, struct herd_safetensors **out, struct herd_error *err);

/* Unmaps and frees. NULL is a no-op. */
void herd_safetensors_destroy(struct herd_safetensors *st);

const char *herd_safetensors_path(const struct herd_safetensors *st);
size_t herd_safetensors_n_tensors(const struct herd_safetensors *st);
/* Tensor i in name order (bytewise), i < herd_safetensors_n_tensors. */
const struct herd_safetensors_tensor *herd_safetensors_tensor_at(const struct herd_safetensors *st, size_t i);
/* The tensor called name, or NULL. */
const struct herd_safetensors_tensor *herd_safetensors_find(const struct herd_safetensors *st, const char *name);
/* The value of "__metadata__"[key], or NULL when the file has none. */
const char *herd_safetensors_metadata(const struct herd_safetensors *st, const char *key);

/* Drops the pages of t from this process's view of the mapping: after a
 * converter has read a tensor once, so that memory stays near one tensor
 * rather than growing to the whole file. The data stays readable (the pages
 * come back from the file if touched again). */
void herd_safetensors_release(const struct herd_safetensors *st, const struct herd_safetensors_tensor *t);

/* "F32", "BF16", ...; "?" for a value outside the enum. */
const char *herd_safetensors_dtype_name(enum herd_safetensors_dtype d);
/* Bytes per element; 0 for a value outside the enum. */
size_t herd_safetensors_dtype_size(enum herd_safetensors_dtype d);

#endif
