/* GGUF v3 writer. Metadata is serialized into a buffer as entries are added;
 * tensor infos are collected, their offsets assigned in order with each
 * tensor padded to the alignment (as ggml lays files out, so llama.cpp reads
 * what herd writes); data is streamed to a temp file that is renamed over the
 * target only when complete. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/assert.h"
#include "base/buf.h"
#include "base/checked.h"
#include "herd/gguf.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF writer copies numeric arrays as they are in memory: little-endian hosts only"
#endif

/* Metadata beyond 1 GiB is no model's: the largest vocabularies take ~10 MB. */
#define METADATA_MAX_BYTES ((size_t)1 << 30)

struct wtensor {
    char name[HERD_GGUF_MAX_TENSOR_NAME_BYTES + 1];
    enum herd_ggml_type type;
    uint32_t n_dims;
    uint64_t ne[HERD_GGUF_MAX_DIMS];
    uint64_t offset;
    uint64_t n_bytes;
};

struct herd_gguf_writer {
    struct herd_buf kv; /* serialized metadata entries */
    uint64_t n_kv;
    char **keys; /* for duplicate detection */
    size_t keys_cap;
    struct wtensor *tensors;
    size_t n_tensors, tensors_cap;
    uint64_t data_bytes; /* padded size of the data section so far */
    uint32_t alignment;
    /* streaming state */
    FILE *f;
    char *path, *tmp_path;
    size_t next_tensor;
};

struct herd_gguf_writer *herd_gguf_writer_create(void) {
    struct herd_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    herd_buf_init(&w->kv, METADATA_MAX_BYTES);
    w->alignment = HERD_GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void herd_gguf_writer_destroy(struct herd_gguf_writer *w) {
    if (!w) return;
    if (w->f) {
        fclose(w->f);
        unlink(w->tmp_path);
    }
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    free(w->tensors);
    free(w->path);
    free(w->tmp_path);
    herd_buf_cleanup(&w->kv);
    free(w);
}

/* ------------------------------------------------------------ metadata */

static enum herd_status not_after_begin(const struct herd_gguf_writer *w, struct herd_error *err) {
    if (w->path) return herd_error_set(err, HERD_E_INVALID, "the GGUF header was already written");
    return HERD_OK;
}

/* Registers key and writes its key string and value type. */
static enum herd_status begin_kv(struct herd_gguf_writer *w, const char *key, enum herd_gguf_vtype t,
                                 struct herd_error *err) {
    enum herd_status rc = not_after_begin(w, err);
    if (rc != HERD_OK) return rc;
    size_t len = strlen(key);
    if (len == 0 || len > HERD_GGUF_MAX_KEY_BYTES)
        return herd_error_set(err, HERD_E_INVALID, "metadata key length %zu is not in 1..%u", len,
                              HERD_GGUF_MAX_KEY_BYTES);
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0)
            return herd_error_set(err, HERD_E_DUPLICATE, "metadata key '%s' added twice", key);
    if (w->n_kv >= HERD_GGUF_MAX_KV)
        return herd_error_set(err, HERD_E_INVALID, "more than %u metadata entries", HERD_GGUF_MAX_KV);
    if (w->n_kv == w->keys_cap) {
        size_t cap = w->keys_cap ? w->keys_cap * 2 : 64;
        char **k = realloc(w->keys, cap * sizeof *k);
        if (!k) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
        w->keys = k;
        w->keys_cap = cap;
    }
    char *copy = strdup(key);
    if (!copy) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    if (!herd_buf_append_le(&w->kv, len, 8) || !herd_buf_append(&w->kv, key, len) ||
        !herd_buf_append_le(&w->kv, (uint64_t)t, 4)) {
        free(copy);
        return herd_error_set(err, HERD_E_NOMEM, "metadata exceeds %zu bytes", METADATA_MAX_BYTES);
    }
    w->keys[w->n_kv++] = copy;
    return HERD_OK;
}

static enum herd_status put(struct herd_gguf_writer *w, const void *p, size_t n, struct herd_error *err) {
    if (!herd_buf_append(&w->kv, p, n))
        return herd_error_set(err, HERD_E_NOMEM, "metadata exceeds %zu bytes", METADATA_MAX_BYTES);
    return HERD_OK;
}

static enum herd_status put_le(struct herd_gguf_writer *w, uint64_t v, size_t n, struct herd_error *err) {
    if (!herd_buf_append_le(&w->kv, v, n))
        return herd_error_set(err, HERD_E_NOMEM, "metadata exceeds %zu bytes", METADATA_MAX_BYTES);
    return HERD_OK;
}

static enum herd_status add_scalar(struct herd_gguf_writer *w, const char *key, enum herd_gguf_vtype t, uint64_t bits,
                                   struct herd_error *err) {
    enum herd_status rc = begin_kv(w, key, t, err);
    if (rc != HERD_OK) return rc;
    return put_le(w, bits, herd_gguf_vtype_size(t), err);
}

enum herd_status herd_gguf_writer_add_u32(struct herd_gguf_writer *w, const char *key, uint32_t v,
                                          struct herd_error *err) {
    if (strcmp(key, "general.alignment") == 0) {
        if (v == 0 || (v & (v - 1)) != 0 || v > HERD_GGUF_MAX_ALIGNMENT)
            return herd_error_set(err, HERD_E_INVALID, "general.alignment %u: not a power of two up to %u", v,
                                  HERD_GGUF_MAX_ALIGNMENT);
        if (w->n_tensors)
            return herd_error_set(err, HERD_E_INVALID, "general.alignment must be set before the first tensor");
    }
    enum herd_status rc = add_scalar(w, key, HERD_GGUF_VTYPE_U32, v, err);
    if (rc == HERD_OK && strcmp(key, "general.alignment") == 0) w->alignment = v;
    return rc;
}

enum herd_status herd_gguf_writer_add_i32(struct herd_gguf_writer *w, const char *key, int32_t v,
                                          struct herd_error *err) {
    return add_scalar(w, key, HERD_GGUF_VTYPE_I32, (uint32_t)v, err);
}

enum herd_status herd_gguf_writer_add_u64(struct herd_gguf_writer *w, const char *key, uint64_t v,
                                          struct herd_error *err) {
    return add_scalar(w, key, HERD_GGUF_VTYPE_U64, v, err);
}

enum herd_status herd_gguf_writer_add_f32(struct herd_gguf_writer *w, const char *key, float v,
                                          struct herd_error *err) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return add_scalar(w, key, HERD_GGUF_VTYPE_F32, bits, err);
}

enum herd_status herd_gguf_writer_add_bool(struct herd_gguf_writer *w, const char *key, bool v,
                                           struct herd_error *err) {
    return add_scalar(w, key, HERD_GGUF_VTYPE_BOOL, v ? 1 : 0, err);
}

enum herd_status herd_gguf_writer_add_string(struct herd_gguf_writer *w, const char *key, const char *v,
                                             struct herd_error *err) {
    enum herd_status rc = begin_kv(w, key, HERD_GGUF_VTYPE_STRING, err);
    if (rc != HERD_OK) return rc;
    size_t n = strlen(v);
    if ((rc = put_le(w, n, 8, err)) != HERD_OK) return rc;
    return put(w, v, n, err);
}

enum herd_status herd_gguf_writer_add_array(struct herd_gguf_writer *w, const char *key, enum herd_gguf_vtype elem_type,
                                            uint64_t count, const void *data, struct herd_error *err) {
    size_t es = herd_gguf_vtype_size(elem_type);
    if (es == 0) return herd_error_set(err, HERD_E_INVALID, "array '%s': element type must be fixed-size", key);
    size_t bytes;
    if (count > SIZE_MAX || !herd_mul_size((size_t)count, es, &bytes))
        return herd_error_set(err, HERD_E_OVERFLOW, "array '%s': %llu elements overflow", key,
                              (unsigned long long)count);
    enum herd_status rc = begin_kv(w, key, HERD_GGUF_VTYPE_ARRAY, err);
    if (rc != HERD_OK) return rc;
    if ((rc = put_le(w, (uint64_t)elem_type, 4, err)) != HERD_OK) return rc;
    if ((rc = put_le(w, count, 8, err)) != HERD_OK) return rc;
    return put(w, data, bytes, err);
}

enum herd_status herd_gguf_writer_add_string_array(struct herd_gguf_writer *w, const char *key, uint64_t count,
                                                   const char *const *strs, const uint64_t *lens,
                                                   struct herd_error *err) {
    enum herd_status rc = begin_kv(w, key, HERD_GGUF_VTYPE_ARRAY, err);
    if (rc != HERD_OK) return rc;
    if ((rc = put_le(w, HERD_GGUF_VTYPE_STRING, 4, err)) != HERD_OK) return rc;
    if ((rc = put_le(w, count, 8, err)) != HERD_OK) return rc;
    for (uint64_t i = 0; i < count; i++) {
        if (lens[i] > SIZE_MAX) return herd_error_set(err, HERD_E_OVERFLOW, "array '%s': string too long", key);
        if ((rc = put_le(w, lens[i], 8, err)) != HERD_OK) return rc;
        if ((rc = put(w, strs[i], (size_t)lens[i], err)) != HERD_OK) return rc;
    }
    return HERD_OK;
}

enum herd_status herd_gguf_writer_add_kv_copy(struct herd_gguf_writer *w, const struct herd_gguf_kv *kv,
                                              struct herd_error *err) {
    char key[HERD_GGUF_MAX_KEY_BYTES + 1];
    if (kv->key.len > HERD_GGUF_MAX_KEY_BYTES || memchr(kv->key.ptr, '\0', kv->key.len))
        return herd_error_set(err, HERD_E_INVALID, "metadata key cannot be copied (too long or holds a NUL byte)");
    memcpy(key, kv->key.ptr, kv->key.len);
    key[kv->key.len] = '\0';
    if (kv->type == HERD_GGUF_VTYPE_U32) return herd_gguf_writer_add_u32(w, key, (uint32_t)kv->v.u, err);
    if (strcmp(key, "general.alignment") == 0)
        return herd_error_set(err, HERD_E_INVALID, "general.alignment must be u32, is %s",
                              herd_gguf_vtype_name(kv->type));
    enum herd_status rc = begin_kv(w, key, kv->type, err);
    if (rc != HERD_OK) return rc;
    if (kv->raw_bytes > SIZE_MAX) return herd_error_set(err, HERD_E_OVERFLOW, "value of '%s' too large", key);
    return put(w, kv->raw, (size_t)kv->raw_bytes, err);
}

/* ------------------------------------------------------------ tensors */

enum herd_status herd_gguf_writer_add_tensor(struct herd_gguf_writer *w, const char *name, enum herd_ggml_type type,
                                             uint32_t n_dims, const uint64_t *ne, struct herd_error *err) {
    enum herd_status rc = not_after_begin(w, err);
    if (rc != HERD_OK) return rc;
    size_t len = strlen(name);
    if (len == 0 || len > HERD_GGUF_MAX_TENSOR_NAME_BYTES)
        return herd_error_set(err, HERD_E_INVALID, "tensor name '%s': length %zu is not in 1..%u", name, len,
                              HERD_GGUF_MAX_TENSOR_NAME_BYTES);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return herd_error_set(err, HERD_E_DUPLICATE, "tensor '%s' added twice", name);
    if (w->n_tensors >= HERD_GGUF_MAX_TENSORS)
        return herd_error_set(err, HERD_E_INVALID, "more than %u tensors", HERD_GGUF_MAX_TENSORS);
    struct wtensor t = {.type = type, .n_dims = n_dims};
    memcpy(t.name, name, len + 1);
    for (uint32_t d = 0; d < HERD_GGUF_MAX_DIMS; d++) t.ne[d] = d < n_dims ? ne[d] : 1;
    rc = herd_ggml_tensor_nbytes(type, n_dims, t.ne, NULL, &t.n_bytes, err);
    if (rc != HERD_OK) return herd_error_prefix(err, "tensor '%s'", name);
    uint64_t padded, end;
    if (!herd_align_up_u64(t.n_bytes, w->alignment, &padded) || !herd_add_u64(w->data_bytes, padded, &end))
        return herd_error_set(err, HERD_E_OVERFLOW, "tensor '%s': data section size overflows", name);
    t.offset = w->data_bytes;
    if (w->n_tensors == w->tensors_cap) {
        size_t cap = w->tensors_cap ? w->tensors_cap * 2 : 64;
        struct wtensor *p = realloc(w->tensors, cap * sizeof *p);
        if (!p) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
        w->tensors = p;
        w->tensors_cap = cap;
    }
    w->tensors[w->n_tensors++] = t;
    w->data_bytes = end;
    return HERD_OK;
}

/* ------------------------------------------------------------ streaming output */

static enum herd_status write_bytes(struct herd_gguf_writer *w, const void *p, size_t n, struct herd_error *err) {
    if (n && fwrite(p, 1, n, w->f) != n)
        return herd_error_set(err, HERD_E_IO, "%s: write failed: %s", w->path, strerror(errno));
    return HERD_OK;
}

static enum herd_status write_zeros(struct herd_gguf_writer *w, uint64_t n, struct herd_error *err) {
    static const uint8_t zeros[256];
    HERD_ASSERT(n <= HERD_GGUF_MAX_ALIGNMENT);
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        enum herd_status rc = write_bytes(w, zeros, k, err);
        if (rc != HERD_OK) return rc;
        n -= k;
    }
    return HERD_OK;
}

static uint64_t pad_to(uint64_t n, uint32_t align) { return (align - n % align) % align; }

enum herd_status herd_gguf_writer_begin(struct herd_gguf_writer *w, const char *path, struct herd_error *err) {
    enum herd_status rc = not_after_begin(w, err);
    if (rc != HERD_OK) return rc;
    size_t n = strlen(path) + 32;
    w->path = strdup(path);
    w->tmp_path = malloc(n);
    if (!w->path || !w->tmp_path) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    snprintf(w->tmp_path, n, "%s.tmp-%ld", path, (long)getpid());
    w->f = fopen(w->tmp_path, "wb");
    if (!w->f) return herd_error_set(err, HERD_E_IO, "%s: cannot create: %s", w->tmp_path, strerror(errno));

    struct herd_buf h;
    herd_buf_init(&h, SIZE_MAX);
    bool ok = herd_buf_append(&h, "GGUF", 4) && herd_buf_append_le(&h, 3, 4) &&
              herd_buf_append_le(&h, w->n_tensors, 8) && herd_buf_append_le(&h, w->n_kv, 8);
    for (size_t i = 0; ok && i < w->n_tensors; i++) {
        const struct wtensor *t = &w->tensors[i];
        size_t len = strlen(t->name);
        ok =
            herd_buf_append_le(&h, len, 8) && herd_buf_append(&h, t->name, len) && herd_buf_append_le(&h, t->n_dims, 4);
        for (uint32_t d = 0; ok && d < t->n_dims; d++) ok = herd_buf_append_le(&h, t->ne[d], 8);
        ok = ok && herd_buf_append_le(&h, (uint64_t)t->type, 4) && herd_buf_append_le(&h, t->offset, 8);
    }
    if (!ok) {
        herd_buf_cleanup(&h);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory building the GGUF header");
    }
    /* Header, then the metadata entries, then the tensor infos. */
    rc = write_bytes(w, h.data, 24, err);
    if (rc == HERD_OK) rc = write_bytes(w, w->kv.data, w->kv.len, err);
    if (rc == HERD_OK) rc = write_bytes(w, h.data + 24, h.len - 24, err);
    uint64_t header_bytes = h.len + w->kv.len;
    herd_buf_cleanup(&h);
    /* Files without tensors end right after the metadata, like ggml's
     * vocabulary-only files; otherwise the data section starts aligned. */
    if (rc == HERD_OK && w->n_tensors) rc = write_zeros(w, pad_to(header_bytes, w->alignment), err);
    return rc;
}

enum herd_status herd_gguf_writer_put_tensor_data(struct herd_gguf_writer *w, const void *data, uint64_t n_bytes,
                                                  struct herd_error *err) {
    if (!w->f) return herd_error_set(err, HERD_E_INVALID, "herd_gguf_writer_begin was not called");
    if (w->next_tensor >= w->n_tensors) return herd_error_set(err, HERD_E_INVALID, "more tensor data than tensors");
    const struct wtensor *t = &w->tensors[w->next_tensor];
    if (n_bytes != t->n_bytes)
        return herd_error_set(err, HERD_E_INVALID, "tensor '%s': got %llu bytes of data, expected %llu", t->name,
                              (unsigned long long)n_bytes, (unsigned long long)t->n_bytes);
    enum herd_status rc = write_bytes(w, data, (size_t)n_bytes, err);
    if (rc == HERD_OK) rc = write_zeros(w, pad_to(n_bytes, w->alignment), err);
    if (rc == HERD_OK) w->next_tensor++;
    return rc;
}

enum herd_status herd_gguf_writer_finish(struct herd_gguf_writer *w, struct herd_error *err) {
    if (!w->f) return herd_error_set(err, HERD_E_INVALID, "herd_gguf_writer_begin was not called");
    if (w->next_tensor != w->n_tensors)
        return herd_error_set(err, HERD_E_INVALID, "%zu of %zu tensors have no data", w->n_tensors - w->next_tensor,
                              w->n_tensors);
    FILE *f = w->f;
    w->f = NULL;
    int failed = fflush(f) != 0 || fsync(fileno(f)) != 0;
    int saved = errno;
    if (fclose(f) != 0 && !failed) {
        failed = 1;
        saved = errno;
    }
    if (failed) {
        unlink(w->tmp_path);
        return herd_error_set(err, HERD_E_IO, "%s: write failed: %s", w->path, strerror(saved));
    }
    if (rename(w->tmp_path, w->path) != 0) {
        saved = errno;
        unlink(w->tmp_path);
        return herd_error_set(err, HERD_E_IO, "%s: cannot rename the finished file into place: %s", w->path,
                              strerror(saved));
    }
    return HERD_OK;
}
