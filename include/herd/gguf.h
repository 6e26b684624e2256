/* GGUF: the model file format of the llama.cpp / ggml ecosystem.
 *
 * Layout (all integers little endian; herd reads versions 2 and 3, which
 * share it; version 1 had 32-bit counts and is refused):
 *
 *   offset  size  field
 *   0       4     magic "GGUF"
 *   4       4     u32 version
 *   8       8     u64 n_tensors
 *   16      8     u64 n_kv
 *   24      ...   n_kv metadata entries:
 *                   string key, u32 value type, value
 *                 where a string is u64 length + that many bytes (no NUL),
 *                 and a value is a scalar of its type, a string, or an
 *                 array: u32 element type, u64 count, count elements
 *                 (arrays of arrays do not occur in real files and are refused)
 *   ...     ...   n_tensors tensor infos:
 *                   string name, u32 n_dims (1..4), n_dims x u64 ne
 *                   (ne[0] is the fastest-varying dimension), u32 ggml type,
 *                   u64 offset of the data relative to the data section
 *   ...     pad   zero bytes up to a multiple of general.alignment (u32, default 32)
 *   ...     ...   data section: each tensor's bytes at its offset, each offset
 *                 a multiple of the alignment
 *
 * Every file is treated as hostile: every count, length, dimension, offset
 * and product of them is checked before use, allocations grow only with
 * bytes actually present in the file, and every error names the field and
 * its byte offset. See docs/modules/gguf.md. */
#ifndef HERD_GGUF_H
#define HERD_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ limits */

/* Caps on what a file may declare. Real models have ~50 keys and at most a
 * few tens of thousands of tensors (per-expert MoE layouts); these caps are far
 * above that and far below what would let a header claim unbounded memory. */
#define HERD_GGUF_MAX_KV                (1u << 16)
#define HERD_GGUF_MAX_TENSORS           (1u << 20)
/* The GGUF spec bounds keys at 65535 bytes; ggml's GGML_MAX_NAME is 64
 * including the NUL, so tensor names longer than 63 bytes would not load in
 * llama.cpp either. */
#define HERD_GGUF_MAX_KEY_BYTES         65535u
#define HERD_GGUF_MAX_TENSOR_NAME_BYTES 63u
#define HERD_GGUF_MAX_DIMS              4u
/* general.alignment: a power of two; above 1 MiB no writer uses it and the
 * padding alone could push the data section far past a small file. */
#define HERD_GGUF_MAX_ALIGNMENT         (1u << 20)
#define HERD_GGUF_DEFAULT_ALIGNMENT     32u

/* ------------------------------------------------------------ value and tensor types */

enum herd_gguf_vtype {
    HERD_GGUF_VTYPE_U8 = 0,
    HERD_GGUF_VTYPE_I8 = 1,
    HERD_GGUF_VTYPE_U16 = 2,
    HERD_GGUF_VTYPE_I16 = 3,
    HERD_GGUF_VTYPE_U32 = 4,
    HERD_GGUF_VTYPE_I32 = 5,
    HERD_GGUF_VTYPE_F32 = 6,
    HERD_GGUF_VTYPE_BOOL = 7,
    HERD_GGUF_VTYPE_STRING = 8,
    HERD_GGUF_VTYPE_ARRAY = 9,
    HERD_GGUF_VTYPE_U64 = 10,
    HERD_GGUF_VTYPE_I64 = 11,
    HERD_GGUF_VTYPE_F64 = 12,
    HERD_GGUF_VTYPE__COUNT = 13
};

/* ggml tensor type ids as stored in GGUF files. The ids are append-only with
 * gaps where types were removed (4, 5, 31-33, 36-38). */
enum herd_ggml_type {
    HERD_GGML_TYPE_F32 = 0,
    HERD_GGML_TYPE_F16 = 1,
    HERD_GGML_TYPE_Q4_0 = 2,
    HERD_GGML_TYPE_Q4_1 = 3,
    HERD_GGML_TYPE_Q5_0 = 6,
    HERD_GGML_TYPE_Q5_1 = 7,
    HERD_GGML_TYPE_Q8_0 = 8,
    HERD_GGML_TYPE_Q8_1 = 9,
    HERD_GGML_TYPE_Q2_K = 10,
    HERD_GGML_TYPE_Q3_K = 11,
    HERD_GGML_TYPE_Q4_K = 12,
    HERD_GGML_TYPE_Q5_K = 13,
    HERD_GGML_TYPE_Q6_K = 14,
    HERD_GGML_TYPE_Q8_K = 15,
    HERD_GGML_TYPE_IQ2_XXS = 16,
    HERD_GGML_TYPE_IQ2_XS = 17,
    HERD_GGML_TYPE_IQ3_XXS = 18,
    HERD_GGML_TYPE_IQ1_S = 19,
    HERD_GGML_TYPE_IQ4_NL = 20,
    HERD_GGML_TYPE_IQ3_S = 21,
    HERD_GGML_TYPE_IQ2_S = 22,
    HERD_GGML_TYPE_IQ4_XS = 23,
    HERD_GGML_TYPE_I8 = 24,
    HERD_GGML_TYPE_I16 = 25,
    HERD_GGML_TYPE_I32 = 26,
    HERD_GGML_TYPE_I64 = 27,
    HERD_GGML_TYPE_F64 = 28,
    HERD_GGML_TYPE_IQ1_M = 29,
    HERD_GGML_TYPE_BF16 = 30,
    HERD_GGML_TYPE_TQ1_0 = 34,
    HERD_GGML_TYPE_TQ2_0 = 35,
    HERD_GGML_TYPE_MXFP4 = 39,
    HERD_GGML_TYPE_NVFP4 = 40,
    HERD_GGML_TYPE_Q1_0 = 41,
    HERD_GGML_TYPE_Q2_0 = 42,
    HERD_GGML_TYPE__COUNT = 43
};

struct herd_ggml_type_info {
    const char *name;     /* lower case, as ggml_type_name() prints it: "q4_0" */
    uint32_t block_elems; /* elements per block (1 for plain types) */
    uint32_t block_bytes; /* bytes per block */
    bool computed;        /* the herd engine has kernels for it */
};

/* Traits of a ggml type id, or NULL for an id that no ggml release defines
 * (including the removed ones). */
const struct herd_ggml_type_info *herd_ggml_type_info(uint32_t type);

/* Looks a type up by name, case-insensitively ("Q8_0", "f16"). */
bool herd_ggml_type_from_name(const char *name, enum herd_ggml_type *out);

/* Name of a metadata value type ("u32", "string", ...), "?" when unknown. */
const char *herd_gguf_vtype_name(uint32_t vtype);

/* Bytes of one scalar of vtype; 0 for STRING, ARRAY and unknown types. */
size_t herd_gguf_vtype_size(uint32_t vtype);

/* ------------------------------------------------------------ parsed file */

/* A string inside the file: not NUL-terminated, valid while the file is open. */
struct herd_gguf_str {
    const char *ptr;
    uint64_t len;
};

struct herd_gguf_array {
    enum herd_gguf_vtype type; /* element type, never ARRAY */
    uint64_t count;
    const uint8_t *data; /* first element as stored */
    uint64_t n_bytes;    /* bytes from data to the end of the last element */
};

struct herd_gguf_kv {
    struct herd_gguf_str key;
    enum herd_gguf_vtype type;
    uint64_t file_offset; /* where the entry starts (its key length), for messages */
    const uint8_t *raw;   /* the value as stored, right after the type field */
    uint64_t raw_bytes;
    union {
        uint64_t u; /* U8, U16, U32, U64 */
        int64_t i;  /* I8, I16, I32, I64 */
        double f;   /* F32, F64 */
        bool b;     /* BOOL (any non-zero byte is true) */
        struct herd_gguf_str s;
        struct herd_gguf_array arr;
    } v;
};

struct herd_gguf_tensor {
    struct herd_gguf_str name;
    uint32_t n_dims;
    uint64_t ne[HERD_GGUF_MAX_DIMS]; /* dims past n_dims are 1 */
    enum herd_ggml_type type;
    uint64_t offset; /* relative to the data section */
    uint64_t n_elems;
    uint64_t n_bytes;
    uint64_t file_offset; /* where its info record starts, for messages */
    const void *data;     /* into the mapping */
};

struct herd_gguf;

/* Maps path read-only and parses it. On success *out owns the mapping; free
 * it with herd_gguf_destroy. On failure returns the status, fills err with a
 * message naming the file, the field and its offset, and leaves *out NULL. */
enum herd_status herd_gguf_open_file(const char *path, struct herd_gguf **out, struct herd_error *err);

/* Parses size bytes at data without copying them: the caller keeps data
 * alive and unchanged until herd_gguf_destroy. Same contract otherwise. */
enum herd_status herd_gguf_open_memory(const void *data, size_t size, struct herd_gguf **out, struct herd_error *err);

/* Gives the pages wholly inside [p, p + n) of g's mapped file back to the
 * kernel (herd_mapped_file_drop): for tensors copied elsewhere. A no-op for
 * a g parsed from caller memory, whose bytes are the caller's, or a range
 * outside the file. */
void herd_gguf_drop_pages(const struct herd_gguf *g, const void *p, size_t n);

/* Frees g and unmaps its file. NULL is a no-op. */
void herd_gguf_destroy(struct herd_gguf *g);

uint32_t herd_gguf_version(const struct herd_gguf *g);
uint32_t herd_gguf_alignment(const struct herd_gguf *g);
uint64_t herd_gguf_file_size(const struct herd_gguf *g);
const uint8_t *herd_gguf_file_bytes(const struct herd_gguf *g);
/* Start of the data section. For a file without tensors, the end of the metadata. */
uint64_t herd_gguf_data_offset(const struct herd_gguf *g);

size_t herd_gguf_n_kv(const struct herd_gguf *g);
const struct herd_gguf_kv *herd_gguf_kv_at(const struct herd_gguf *g, size_t i); /* file order */
const struct herd_gguf_kv *herd_gguf_find_kv(const struct herd_gguf *g, const char *key);

size_t herd_gguf_n_tensors(const struct herd_gguf *g);
const struct herd_gguf_tensor *herd_gguf_tensor_at(const struct herd_gguf *g, size_t i); /* file order */
const struct herd_gguf_tensor *herd_gguf_find_tensor(const struct herd_gguf *g, const char *name);

/* Typed getters. Each returns HERD_E_NOT_FOUND when the key is absent (err
 * filled, so callers with a default just ignore it), HERD_E_FORMAT when the
 * stored type does not fit, HERD_E_INVALID when the value is out of range. */

/* Any integer type whose value is in [0, max]. */
enum herd_status herd_gguf_get_uint(const struct herd_gguf *g, const char *key, uint64_t max, uint64_t *out,
                                    struct herd_error *err);
/* F32 or F64. NaN and infinities are refused. */
enum herd_status herd_gguf_get_float(const struct herd_gguf *g, const char *key, double *out, struct herd_error *err);
enum herd_status herd_gguf_get_bool(const struct herd_gguf *g, const char *key, bool *out, struct herd_error *err);
enum herd_status herd_gguf_get_string(const struct herd_gguf *g, const char *key, struct herd_gguf_str *out,
                                      struct herd_error *err);
/* An ARRAY whose element type is elem_type. */
enum herd_status herd_gguf_get_array(const struct herd_gguf *g, const char *key, enum herd_gguf_vtype elem_type,
                                     struct herd_gguf_array *out, struct herd_error *err);

/* Element i of a numeric array, converted. i must be < count (checked by
 * HERD_ASSERT: a caller bug, not a file problem). */
uint64_t herd_gguf_array_u64(const struct herd_gguf_array *a, uint64_t i);
int64_t herd_gguf_array_i64(const struct herd_gguf_array *a, uint64_t i);
double herd_gguf_array_f64(const struct herd_gguf_array *a, uint64_t i);

/* Walks a STRING array in order. The parser has already checked every length,
 * so iteration never leaves the array. */
struct herd_gguf_str_iter {
    const uint8_t *pos;
    const uint8_t *end;
    uint64_t left;
};
void herd_gguf_str_iter_init(struct herd_gguf_str_iter *it, const struct herd_gguf_array *a);
bool herd_gguf_str_iter_next(struct herd_gguf_str_iter *it, struct herd_gguf_str *out);

/* True when s equals the NUL-terminated text. */
bool herd_gguf_str_eq(struct herd_gguf_str s, const char *text);

/* Copies s into buf as printable text for messages and tables: control and
 * non-ASCII bytes become \xNN, and long strings are cut with "...". Returns buf. */
const char *herd_gguf_str_printable(struct herd_gguf_str s, char *buf, size_t buf_bytes);

/* ------------------------------------------------------------ writer */

/* Builds a GGUF v3 file: metadata entries and tensor infos are collected in
 * memory, then written with each tensor's data streamed in order. The output
 * goes to "PATH.tmp-PID" and is renamed over PATH only after everything was
 * written and fsynced, so a failure (a full disk, a bad tensor) never leaves a
 * partial file under PATH. Files without tensors end right after the
 * metadata, as ggml writes vocabulary-only files; otherwise the data section
 * and each tensor are padded to the alignment with zeros. */
struct herd_gguf_writer;

struct herd_gguf_writer *herd_gguf_writer_create(void);    /* NULL on out of memory */
void herd_gguf_writer_destroy(struct herd_gguf_writer *w); /* removes an unfinished temp file */

/* Metadata. Keys must be unique (HERD_E_DUPLICATE) and non-empty; setting
 * "general.alignment" (U32, a power of two <= HERD_GGUF_MAX_ALIGNMENT) also
 * sets the alignment used for the data. */
enum herd_status herd_gguf_writer_add_u32(struct herd_gguf_writer *w, const char *key, uint32_t v,
                                          struct herd_error *err);
enum herd_status herd_gguf_writer_add_i32(struct herd_gguf_writer *w, const char *key, int32_t v,
                                          struct herd_error *err);
enum herd_status herd_gguf_writer_add_u64(struct herd_gguf_writer *w, const char *key, uint64_t v,
                                          struct herd_error *err);
enum herd_status herd_gguf_writer_add_f32(struct herd_gguf_writer *w, const char *key, float v, struct herd_error *err);
enum herd_status herd_gguf_writer_add_bool(struct herd_gguf_writer *w, const char *key, bool v, struct herd_error *err);
enum herd_status herd_gguf_writer_add_string(struct herd_gguf_writer *w, const char *key, const char *v,
                                             struct herd_error *err);
/* An array of count fixed-size elements packed little endian at data. */
enum herd_status herd_gguf_writer_add_array(struct herd_gguf_writer *w, const char *key, enum herd_gguf_vtype elem_type,
                                            uint64_t count, const void *data, struct herd_error *err);
/* An array of count strings; lens[i] bytes at strs[i] (NUL bytes allowed). */
enum herd_status herd_gguf_writer_add_string_array(struct herd_gguf_writer *w, const char *key, uint64_t count,
                                                   const char *const *strs, const uint64_t *lens,
                                                   struct herd_error *err);
/* Copies an entry of a parsed file exactly as it was stored. */
enum herd_status herd_gguf_writer_add_kv_copy(struct herd_gguf_writer *w, const struct herd_gguf_kv *kv,
                                              struct herd_error *err);

/* Declares the next tensor. ne has n_dims (1..4) dimensions, ne[0] a multiple
 * of the type's block size. Data is given later, in the same order. */
enum herd_status herd_gguf_writer_add_tensor(struct herd_gguf_writer *w, const char *name, enum herd_ggml_type type,
                                             uint32_t n_dims, const uint64_t *ne, struct herd_error *err);

/* Writes the header and all tensor infos to PATH's temp file. No metadata or
 * tensor may be added afterwards. */
enum herd_status herd_gguf_writer_begin(struct herd_gguf_writer *w, const char *path, struct herd_error *err);
/* Writes the next tensor's data; n_bytes must equal its size. */
enum herd_status herd_gguf_writer_put_tensor_data(struct herd_gguf_writer *w, const void *data, uint64_t n_bytes,
                                                  struct herd_error *err);
/* Checks every tensor got its data, flushes, fsyncs and renames the temp
 * file to PATH. */
enum herd_status herd_gguf_writer_finish(struct herd_gguf_writer *w, struct herd_error *err);

/* Tensor bytes for type and ne, checked: HERD_E_OVERFLOW if the element count
 * or the byte count does not fit in int64, HERD_E_FORMAT if ne[0] is not a
 * multiple of the block size or a dimension is 0. The one place that computes
 * a tensor's size, shared by the reader, the writer and the model loader. */
enum herd_status herd_ggml_tensor_nbytes(enum herd_ggml_type type, uint32_t n_dims, const uint64_t *ne,
                                         uint64_t *n_elems, uint64_t *n_bytes, struct herd_error *err);

#ifdef __cplusplus
}
#endif

#endif
