/* safetensors reader: the format and the checks are described in
 * safetensors.h. The header JSON is parsed with jansson, every record is
 * checked and copied out, and the JSON is freed before returning; tensor data
 * stays in the read-only mapping. */
#include "convert/safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/checked.h"

struct meta_entry {
    char *key, *value;
};

struct herd_safetensors {
    char *path;
    struct herd_mapped_file map;
    uint64_t data_start;                     /* 8 + N */
    struct herd_safetensors_tensor *tensors; /* sorted by name */
    size_t n_tensors;
    struct meta_entry *meta;
    size_t n_meta;
};

static const struct {
    const char *name;
    size_t size;
} dtypes[HERD_SAFETENSORS_DTYPE__COUNT] = {
    [HERD_SAFETENSORS_BOOL] = {"BOOL", 1},       [HERD_SAFETENSORS_U8] = {"U8", 1},
    [HERD_SAFETENSORS_I8] = {"I8", 1},           [HERD_SAFETENSORS_F8_E5M2] = {"F8_E5M2", 1},
    [HERD_SAFETENSORS_F8_E4M3] = {"F8_E4M3", 1}, [HERD_SAFETENSORS_I16] = {"I16", 2},
    [HERD_SAFETENSORS_U16] = {"U16", 2},         [HERD_SAFETENSORS_F16] = {"F16", 2},
    [HERD_SAFETENSORS_BF16] = {"BF16", 2},       [HERD_SAFETENSORS_I32] = {"I32", 4},
    [HERD_SAFETENSORS_U32] = {"U32", 4},         [HERD_SAFETENSORS_F32] = {"F32", 4},
    [HERD_SAFETENSORS_F64] = {"F64", 8},         [HERD_SAFETENSORS_I64] = {"I64", 8},
    [HERD_SAFETENSORS_U64] = {"U64", 8},
};

const char *herd_safetensors_dtype_name(enum herd_safetensors_dtype d) {
    return (unsigned)d < HERD_SAFETENSORS_DTYPE__COUNT ? dtypes[d].name : "?";
}

size_t herd_safetensors_dtype_size(enum herd_safetensors_dtype d) {
    return (unsigned)d < HERD_SAFETENSORS_DTYPE__COUNT ? dtypes[d].size : 0;
}

void herd_safetensors_destroy(struct herd_safetensors *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n_tensors; i++) free((char *)st->tensors[i].name);
    free(st->tensors);
    for (size_t i = 0; i < st->n_meta; i++) {
        free(st->meta[i].key);
        free(st->meta[i].value);
    }
    free(st->meta);
    herd_mapped_file_cleanup(&st->map);
    free(st->path);
    free(st);
}

/* ------------------------------------------------------------ header records */

/* A non-negative JSON integer. */
static bool get_u64(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static enum herd_status parse_metadata(struct herd_safetensors *st, json_t *obj, struct herd_error *err) {
    if (json_is_null(obj)) return HERD_OK;
    if (!json_is_object(obj))
        return herd_error_set(err, HERD_E_FORMAT, "%s: header field __metadata__ is not an object", st->path);
    st->meta = calloc(json_object_size(obj) + 1, sizeof *st->meta);
    if (!st->meta) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        if (!json_is_string(value))
            return herd_error_set(err, HERD_E_FORMAT, "%s: __metadata__ entry '%s' is not a string", st->path, key);
        struct meta_entry *m = &st->meta[st->n_meta];
        m->key = strdup(key);
        m->value = strdup(json_string_value(value));
        st->n_meta++; /* before the check: destroy frees what was copied */
        if (!m->key || !m->value) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    return HERD_OK;
}

/* Fills t from the record {"dtype", "shape", "data_offsets"} of name. */
static enum herd_status parse_tensor(const struct herd_safetensors *st, const char *name, json_t *rec,
                                     struct herd_safetensors_tensor *t, struct herd_error *err) {
    const uint64_t data_bytes = st->map.size - st->data_start;
    if (!json_is_object(rec))
        return herd_error_set(err, HERD_E_FORMAT, "%s: tensor '%s': the header entry is not an object", st->path, name);
    const json_t *dt = json_object_get(rec, "dtype"), *shape = json_object_get(rec, "shape"),
                 *offs = json_object_get(rec, "data_offsets");
    if (!json_is_string(dt))
        return herd_error_set(err, HERD_E_FORMAT, "%s: tensor '%s': field dtype is missing or not a string", st->path,
                              name);
    int found = -1;
    for (int i = 0; i < HERD_SAFETENSORS_DTYPE__COUNT; i++)
        if (strcmp(dtypes[i].name, json_string_value(dt)) == 0) found = i;
    if (found < 0)
        return herd_error_set(err, HERD_E_FORMAT, "%s: tensor '%s': unknown dtype '%s'", st->path, name,
                              json_string_value(dt));
    t->dtype = (enum herd_safetensors_dtype)found;
    if (!json_is_array(shape))
        return herd_error_set(err, HERD_E_FORMAT, "%s: tensor '%s': field shape is missing or not an array", st->path,
                              name);
    if (json_array_size(shape) > HERD_SAFETENSORS_MAX_DIMS)
        return herd_error_set(err, HERD_E_FORMAT, "%s: tensor '%s': shape has %zu dimensions; at most %u are read",
                              st->path, name, json_array_size(shape), HERD_SAFETENSORS_MAX_DIMS);
    t->n_dims = (uint32_t)json_array_size(shape);
    t->n_elems = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (!get_u64(json_array_get(shape, d), &t->shape[d]))
            return herd_error_set(err, HERD_E_FORMAT, "%s: tensor '%s': shape[%u] is not a non-negative integer",
                                  st->path, name, d);
        if (!herd_mul_u64(t->n_elems, t->shape[d], &t->n_elems))
            return herd_error_set(err, HERD_E_OVERFLOW, "%s: tensor '%s': the element count overflows", st->path, name);
    }
    if (!herd_mul_u64(t->n_elems, dtypes[t->dtype].size, &t->n_bytes))
        return herd_error_set(err, HERD_E_OVERFLOW, "%s: tensor '%s': the byte count overflows", st->path, name);
    uint64_t begin, end;
    if (!json_is_array(offs) || json_array_size(offs) != 2 || !get_u64(json_array_get(offs, 0), &begin) ||
        !get_u64(json_array_get(offs, 1), &end))
        return herd_error_set(err, HERD_E_FORMAT,
                              "%s: tensor '%s': field data_offsets is not two non-negative integers", st->path, name);
    if (begin > end)
        return herd_error_set(err, HERD_E_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin",
                              st->path, name, (unsigned long long)begin, (unsigned long long)end);
    if (end > data_bytes)
        return herd_error_set(err, HERD_E_TRUNCATED,
                              "%s: tensor '%s': data_offsets [%llu, %llu] reach past the %llu bytes of data "
                              "(file offset %llu)",
                              st->path, name, (unsigned long long)begin, (unsigned long long)end,
                              (unsigned long long)data_bytes, (unsigned long long)(st->data_start + end));
    if (end - begin != t->n_bytes)
        return herd_error_set(err, HERD_E_FORMAT,
                              "%s: tensor '%s': %s shape of %llu elements needs %llu bytes, data_offsets [%llu, %llu] "
                              "hold %llu",
                              st->path, name, dtypes[t->dtype].name, (unsigned long long)t->n_elems,
                              (unsigned long long)t->n_bytes, (unsigned long long)begin, (unsigned long long)end,
                              (unsigned long long)(end - begin));
    t->file_offset = st->data_start + begin;
    t->data = st->map.data + t->file_offset;
    return HERD_OK;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const struct herd_safetensors_tensor *)a)->name, ((const struct herd_safetensors_tensor *)b)->name);
}

static int by_offset(const void *a, const void *b) {
    const struct herd_safetensors_tensor *x = *(const struct herd_safetensors_tensor *const *)a,
                                         *y = *(const struct herd_safetensors_tensor *const *)b;
    if (x->file_offset != y->file_offset) return x->file_offset < y->file_offset ? -1 : 1;
    return x->n_bytes < y->n_bytes ? -1 : x->n_bytes > y->n_bytes;
}

/* No two non-empty ranges share a byte. */
static enum herd_status check_overlaps(const struct herd_safetensors *st, struct herd_error *err) {
    if (st->n_tensors < 2) return HERD_OK;
    const struct herd_safetensors_tensor **order = malloc(st->n_tensors * sizeof *order);
    if (!order) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    for (size_t i = 0; i < st->n_tensors; i++) order[i] = &st->tensors[i];
    qsort(order, st->n_tensors, sizeof *order, by_offset);
    enum herd_status rc = HERD_OK;
    const struct herd_safetensors_tensor *prev = NULL;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const struct herd_safetensors_tensor *t = order[i];
        if (t->n_bytes == 0) continue;
        if (prev && t->file_offset < prev->file_offset + prev->n_bytes) {
            rc = herd_error_set(err, HERD_E_FORMAT,
                                "%s: tensors '%s' (bytes %llu..%llu) and '%s' (bytes %llu..%llu) overlap", st->path,
                                prev->name, (unsigned long long)(prev->file_offset - st->data_start),
                                (unsigned long long)(prev->file_offset - st->data_start + prev->n_bytes), t->name,
                                (unsigned long long)(t->file_offset - st->data_start),
                                (unsigned long long)(t->file_offset - st->data_start + t->n_bytes));
            break;
        }
        prev = t;
    }
    free(order);
    return rc;
}

/* ------------------------------------------------------------ open */

enum herd_status herd_safetensors_open(const char *path, struct herd_safetensors **out, struct herd_error *err) {
    *out = NULL;
    json_t *root = NULL;
    enum herd_status rc = HERD_OK;
    struct herd_safetensors *st = calloc(1, sizeof *st);
    if (!st) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    st->path = strdup(path);
    if (!st->path) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = herd_mapped_file_init(&st->map, path, err)) != HERD_OK) goto out;
    if (st->map.size < 8) {
        rc = herd_error_set(err, HERD_E_TRUNCATED, "%s: truncated: %zu bytes, the header size field needs 8", path,
                            st->map.size);
        goto out;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | st->map.data[i];
    if (n > HERD_SAFETENSORS_MAX_HEADER_BYTES) {
        rc = herd_error_set(err, HERD_E_FORMAT, "%s: header size %llu at offset 0 exceeds the %u-byte limit", path,
                            (unsigned long long)n, HERD_SAFETENSORS_MAX_HEADER_BYTES);
        goto out;
    }
    if (n > st->map.size - 8) {
        rc = herd_error_set(err, HERD_E_TRUNCATED,
                            "%s: truncated: the header needs %llu bytes after offset 8, the file "
                            "has %zu",
                            path, (unsigned long long)n, st->map.size - 8);
        goto out;
    }
    st->data_start = 8 + n;
    json_error_t je;
    root = json_loadb((const char *)st->map.data + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        rc = herd_error_set(err, HERD_E_FORMAT, "%s: header JSON at offset %llu (line %d, column %d): %s", path,
                            (unsigned long long)(8 + (uint64_t)(je.position > 0 ? je.position : 0)), je.line, je.column,
                            je.text);
        goto out;
    }
    if (!json_is_object(root)) {
        rc = herd_error_set(err, HERD_E_FORMAT, "%s: the header at offset 8 is not a JSON object", path);
        goto out;
    }
    st->tensors = calloc(json_object_size(root) + 1, sizeof *st->tensors);
    if (!st->tensors) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((rc = parse_metadata(st, value, err)) != HERD_OK) goto out;
            continue;
        }
        struct herd_safetensors_tensor *t = &st->tensors[st->n_tensors];
        if ((rc = parse_tensor(st, key, value, t, err)) != HERD_OK) goto out;
        if (!(t->name = strdup(key))) {
            rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
            goto out;
        }
        st->n_tensors++;
    }
    if ((rc = check_overlaps(st, err)) != HERD_OK) goto out;
    qsort(st->tensors, st->n_tensors, sizeof *st->tensors, by_name);
    *out = st;
    st = NULL;
out:
    json_decref(root);
    herd_safetensors_destroy(st);
    return rc;
}

/* ------------------------------------------------------------ lookups */

const char *herd_safetensors_path(const struct herd_safetensors *st) { return st->path; }

size_t herd_safetensors_n_tensors(const struct herd_safetensors *st) { return st->n_tensors; }

const struct herd_safetensors_tensor *herd_safetensors_tensor_at(const struct herd_safetensors *st, size_t i) {
    return i < st->n_tensors ? &st->tensors[i] : NULL;
}

const struct herd_safetensors_tensor *herd_safetensors_find(const struct herd_safetensors *st, const char *name) {
    const struct herd_safetensors_tensor key = {.name = name};
    return st->n_tensors ? bsearch(&key, st->tensors, st->n_tensors, sizeof key, by_name) : NULL;
}

const char *herd_safetensors_metadata(const struct herd_safetensors *st, const char *key) {
    for (size_t i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[i].key, key) == 0) return st->meta[i].value;
    return NULL;
}

void herd_safetensors_release(const struct herd_safetensors *st, const struct herd_safetensors_tensor *t) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    if (!t->n_bytes || !st->map.data) return;
    /* Round outwards: the pages a neighbour shares are dropped too, which is
     * harmless in an unmodified private mapping (they are read again). */
    uintptr_t lo = (uintptr_t)t->data & ~(page - 1);
    uintptr_t hi = ((uintptr_t)t->data + (uintptr_t)t->n_bytes + page - 1) & ~(page - 1);
    const uintptr_t map_end = ((uintptr_t)st->map.data + st->map.size + page - 1) & ~(page - 1);
    if (hi > map_end) hi = map_end;
    madvise((void *)lo, hi - lo, MADV_DONTNEED); /* advice: a failure only costs memory */
}
