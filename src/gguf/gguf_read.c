/* GGUF reader: parses a mapped file into metadata entries and tensor infos
 * that point into the mapping. The format is described in include/herd/gguf.h.
 *
 * Every file is hostile input. The parser reads through one bounds-checked
 * cursor, checks every count against the bytes that remain before acting on
 * it, grows its arrays only as entries are actually parsed (so memory follows
 * the file's real size, never a declared count), and names the field and the
 * byte offset in every error. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "base/checked.h"
#include "base/mapped_file.h"
#include "herd/gguf.h"

struct name_slot;

struct herd_gguf {
    struct herd_mapped_file map; /* data NULL when parsed from caller memory */
    const uint8_t *bytes;
    uint64_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    struct herd_gguf_kv *kvs;
    size_t n_kv;
    struct herd_gguf_tensor *tensors;
    size_t n_tensors;
    /* Indices sorted by name, for duplicate detection and binary search. */
    struct name_slot *kv_by_key;
    struct name_slot *tensor_by_name;
};

/* ------------------------------------------------------------ cursor */

struct cursor {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
};

static uint64_t remaining(const struct cursor *c) { return c->size - c->pos; }

static enum herd_status need(const struct cursor *c, uint64_t n, const char *field, struct herd_error *err) {
    if (n > remaining(c))
        return herd_error_set(err, HERD_E_TRUNCATED, "truncated at offset %llu reading %s: need %llu bytes, %llu left",
                              (unsigned long long)c->pos, field, (unsigned long long)n,
                              (unsigned long long)remaining(c));
    return HERD_OK;
}

/* Little-endian loads through memcpy: the mapping gives no alignment. */
static uint64_t load_le(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static enum herd_status read_uint(struct cursor *c, size_t n, const char *field, uint64_t *out,
                                  struct herd_error *err) {
    enum herd_status rc = need(c, n, field, err);
    if (rc != HERD_OK) return rc;
    *out = load_le(c->base + c->pos, n);
    c->pos += n;
    return HERD_OK;
}

static enum herd_status read_u32(struct cursor *c, const char *field, uint32_t *out, struct herd_error *err) {
    uint64_t v;
    enum herd_status rc = read_uint(c, 4, field, &v, err);
    if (rc == HERD_OK) *out = (uint32_t)v;
    return rc;
}

static enum herd_status read_u64(struct cursor *c, const char *field, uint64_t *out, struct herd_error *err) {
    return read_uint(c, 8, field, out, err);
}

/* A string: u64 length, then bytes. max_len bounds it beyond the file size. */
static enum herd_status read_str(struct cursor *c, const char *field, uint64_t max_len, struct herd_gguf_str *out,
                                 struct herd_error *err) {
    uint64_t at = c->pos;
    uint64_t len;
    enum herd_status rc = read_u64(c, field, &len, err);
    if (rc != HERD_OK) return rc;
    if (len > max_len)
        return herd_error_set(err, HERD_E_FORMAT, "%s at offset %llu: length %llu exceeds the limit of %llu", field,
                              (unsigned long long)at, (unsigned long long)len, (unsigned long long)max_len);
    rc = need(c, len, field, err);
    if (rc != HERD_OK) return rc;
    out->ptr = (const char *)(c->base + c->pos);
    out->len = len;
    c->pos += len;
    return HERD_OK;
}

/* ------------------------------------------------------------ strings */

bool herd_gguf_str_eq(struct herd_gguf_str s, const char *text) {
    size_t n = strlen(text);
    return s.len == n && memcmp(s.ptr, text, n) == 0;
}

const char *herd_gguf_str_printable(struct herd_gguf_str s, char *buf, size_t buf_bytes) {
    static const char hex[] = "0123456789abcdef";
    HERD_ASSERT(buf_bytes >= 8);
    size_t o = 0;
    for (uint64_t i = 0; i < s.len; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        size_t w = (ch >= 0x20 && ch < 0x7f && ch != '\\') ? 1 : 4;
        if (o + w + 4 > buf_bytes) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (w == 1) {
            buf[o++] = (char)ch;
        } else {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[ch >> 4];
            buf[o++] = hex[ch & 15];
        }
    }
    buf[o] = '\0';
    return buf;
}

static int str_cmp(struct herd_gguf_str a, struct herd_gguf_str b) {
    uint64_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c != 0) return c;
    return (a.len > b.len) - (a.len < b.len);
}

/* ------------------------------------------------------------ metadata values */

static enum herd_status parse_scalar(struct cursor *c, enum herd_gguf_vtype t, struct herd_gguf_kv *kv,
                                     const char *field, struct herd_error *err) {
    size_t n = herd_gguf_vtype_size(t);
    uint64_t raw;
    enum herd_status rc = read_uint(c, n, field, &raw, err);
    if (rc != HERD_OK) return rc;
    switch (t) {
    case HERD_GGUF_VTYPE_U8:
    case HERD_GGUF_VTYPE_U16:
    case HERD_GGUF_VTYPE_U32:
    case HERD_GGUF_VTYPE_U64: kv->v.u = raw; break;
    case HERD_GGUF_VTYPE_I8: kv->v.i = (int8_t)raw; break;
    case HERD_GGUF_VTYPE_I16: kv->v.i = (int16_t)raw; break;
    case HERD_GGUF_VTYPE_I32: kv->v.i = (int32_t)raw; break;
    case HERD_GGUF_VTYPE_I64: kv->v.i = (int64_t)raw; break;
    case HERD_GGUF_VTYPE_BOOL: kv->v.b = raw != 0; break;
    case HERD_GGUF_VTYPE_F32: {
        uint32_t bits = (uint32_t)raw;
        float f;
        memcpy(&f, &bits, sizeof f);
        kv->v.f = f;
        break;
    }
    case HERD_GGUF_VTYPE_F64: memcpy(&kv->v.f, &raw, sizeof kv->v.f); break;
    default: HERD_ASSERT(!"not a scalar type");
    }
    return HERD_OK;
}

static enum herd_status parse_array(struct cursor *c, struct herd_gguf_kv *kv, const char *field,
                                    struct herd_error *err) {
    uint64_t at = c->pos;
    uint32_t et;
    uint64_t count;
    enum herd_status rc = read_u32(c, "array element type", &et, err);
    if (rc != HERD_OK) return rc;
    if (et == HERD_GGUF_VTYPE_ARRAY)
        return herd_error_set(err, HERD_E_UNSUPPORTED, "%s at offset %llu: arrays of arrays are not supported", field,
                              (unsigned long long)at);
    if (et >= HERD_GGUF_VTYPE__COUNT)
        return herd_error_set(err, HERD_E_FORMAT, "%s at offset %llu: unknown array element type %u", field,
                              (unsigned long long)at, et);
    rc = read_u64(c, "array count", &count, err);
    if (rc != HERD_OK) return rc;
    uint64_t start = c->pos;
    if (et == HERD_GGUF_VTYPE_STRING) {
        /* Each string needs at least its 8-byte length: reject impossible counts
         * before walking, so a huge count costs nothing. */
        uint64_t min_bytes;
        if (!herd_mul_u64(count, 8, &min_bytes) || min_bytes > remaining(c))
            return herd_error_set(err, HERD_E_TRUNCATED,
                                  "%s at offset %llu: %llu strings cannot fit in the %llu bytes left", field,
                                  (unsigned long long)at, (unsigned long long)count, (unsigned long long)remaining(c));
        for (uint64_t i = 0; i < count; i++) {
            struct herd_gguf_str s;
            rc = read_str(c, "array string", UINT64_MAX, &s, err);
            if (rc != HERD_OK) return herd_error_prefix(err, "%s element %llu", field, (unsigned long long)i);
        }
    } else {
        uint64_t bytes;
        if (!herd_mul_u64(count, herd_gguf_vtype_size(et), &bytes))
            return herd_error_set(err, HERD_E_OVERFLOW, "%s at offset %llu: %llu x %zu-byte elements overflows", field,
                                  (unsigned long long)at, (unsigned long long)count, herd_gguf_vtype_size(et));
        rc = need(c, bytes, field, err);
        if (rc != HERD_OK) return rc;
        c->pos += bytes;
    }
    kv->v.arr.type = (enum herd_gguf_vtype)et;
    kv->v.arr.count = count;
    kv->v.arr.data = c->base + start;
    kv->v.arr.n_bytes = c->pos - start;
    return HERD_OK;
}

static enum herd_status parse_kv(struct cursor *c, struct herd_gguf_kv *kv, struct herd_error *err) {
    char name[96];
    kv->file_offset = c->pos;
    enum herd_status rc = read_str(c, "metadata key", HERD_GGUF_MAX_KEY_BYTES, &kv->key, err);
    if (rc != HERD_OK) return rc;
    if (kv->key.len == 0)
        return herd_error_set(err, HERD_E_FORMAT, "metadata key at offset %llu is empty",
                              (unsigned long long)kv->file_offset);
    herd_gguf_str_printable(kv->key, name, sizeof name);
    uint64_t type_at = c->pos;
    uint32_t t;
    rc = read_u32(c, "metadata value type", &t, err);
    if (rc != HERD_OK) return herd_error_prefix(err, "key '%s'", name);
    if (t >= HERD_GGUF_VTYPE__COUNT)
        return herd_error_set(err, HERD_E_FORMAT, "key '%s': unknown value type %u at offset %llu", name, t,
                              (unsigned long long)type_at);
    kv->type = (enum herd_gguf_vtype)t;
    kv->raw = c->base + c->pos;
    uint64_t value_at = c->pos;
    if (t == HERD_GGUF_VTYPE_STRING)
        rc = read_str(c, "string value", UINT64_MAX, &kv->v.s, err);
    else if (t == HERD_GGUF_VTYPE_ARRAY)
        rc = parse_array(c, kv, "array value", err);
    else
        rc = parse_scalar(c, kv->type, kv, "scalar value", err);
    if (rc != HERD_OK) return herd_error_prefix(err, "key '%s'", name);
    kv->raw_bytes = c->pos - value_at;
    return HERD_OK;
}

/* ------------------------------------------------------------ tensor infos */

static enum herd_status parse_tensor_info(struct cursor *c, struct herd_gguf_tensor *t, struct herd_error *err) {
    char name[96];
    t->file_offset = c->pos;
    enum herd_status rc = read_str(c, "tensor name", HERD_GGUF_MAX_TENSOR_NAME_BYTES, &t->name, err);
    if (rc != HERD_OK) return rc;
    if (t->name.len == 0)
        return herd_error_set(err, HERD_E_FORMAT, "tensor name at offset %llu is empty",
                              (unsigned long long)t->file_offset);
    herd_gguf_str_printable(t->name, name, sizeof name);
    uint64_t at = c->pos;
    rc = read_u32(c, "tensor n_dims", &t->n_dims, err);
    if (rc != HERD_OK) return herd_error_prefix(err, "tensor '%s'", name);
    if (t->n_dims == 0 || t->n_dims > HERD_GGUF_MAX_DIMS)
        return herd_error_set(err, HERD_E_FORMAT, "tensor '%s': n_dims %u at offset %llu is not in 1..%u", name,
                              t->n_dims, (unsigned long long)at, HERD_GGUF_MAX_DIMS);
    for (uint32_t d = 0; d < HERD_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        rc = read_u64(c, "tensor dimension", &t->ne[d], err);
        if (rc != HERD_OK) return herd_error_prefix(err, "tensor '%s'", name);
    }
    at = c->pos;
    uint32_t type;
    rc = read_u32(c, "tensor type", &type, err);
    if (rc != HERD_OK) return herd_error_prefix(err, "tensor '%s'", name);
    if (!herd_ggml_type_info(type))
        return herd_error_set(err, HERD_E_FORMAT, "tensor '%s': unknown ggml type id %u at offset %llu", name, type,
                              (unsigned long long)at);
    t->type = (enum herd_ggml_type)type;
    rc = read_u64(c, "tensor data offset", &t->offset, err);
    if (rc != HERD_OK) return herd_error_prefix(err, "tensor '%s'", name);
    rc = herd_ggml_tensor_nbytes(t->type, t->n_dims, t->ne, &t->n_elems, &t->n_bytes, err);
    if (rc != HERD_OK)
        return herd_error_prefix(err, "tensor '%s' (info at offset %llu)", name, (unsigned long long)t->file_offset);
    return HERD_OK;
}

/* ------------------------------------------------------------ whole-file checks */

/* Sort entries carry their key, so qsort needs no context. */
struct name_slot {
    struct herd_gguf_str name;
    uint32_t idx;
};

struct offset_slot {
    uint64_t offset;
    uint32_t idx;
};

static int cmp_name_slot(const void *a, const void *b) {
    return str_cmp(((const struct name_slot *)a)->name, ((const struct name_slot *)b)->name);
}

static int cmp_offset_slot(const void *a, const void *b) {
    uint64_t x = ((const struct offset_slot *)a)->offset, y = ((const struct offset_slot *)b)->offset;
    return (x > y) - (x < y);
}

/* Name index over n entries (the name at name_offset in each), sorted. NULL on out of memory. */
static struct name_slot *name_index(const void *entries, size_t n, size_t stride, size_t name_offset) {
    struct name_slot *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!idx) return NULL;
    for (size_t i = 0; i < n; i++) {
        memcpy(&idx[i].name, (const uint8_t *)entries + i * stride + name_offset, sizeof idx[i].name);
        idx[i].idx = (uint32_t)i;
    }
    qsort(idx, n, sizeof *idx, cmp_name_slot);
    return idx;
}

static enum herd_status check_unique_keys(struct herd_gguf *g, struct herd_error *err) {
    char name[96];
    g->kv_by_key = name_index(g->kvs, g->n_kv, sizeof *g->kvs, offsetof(struct herd_gguf_kv, key));
    if (!g->kv_by_key) return herd_error_set(err, HERD_E_NOMEM, "out of memory indexing %zu keys", g->n_kv);
    for (size_t i = 1; i < g->n_kv; i++) {
        if (str_cmp(g->kv_by_key[i - 1].name, g->kv_by_key[i].name) != 0) continue;
        /* qsort is not stable: order the two offsets for the message. */
        uint64_t x = g->kvs[g->kv_by_key[i - 1].idx].file_offset, y = g->kvs[g->kv_by_key[i].idx].file_offset;
        return herd_error_set(err, HERD_E_DUPLICATE, "duplicate metadata key '%s' at offsets %llu and %llu",
                              herd_gguf_str_printable(g->kv_by_key[i].name, name, sizeof name),
                              (unsigned long long)(x < y ? x : y), (unsigned long long)(x < y ? y : x));
    }
    return HERD_OK;
}

static enum herd_status check_unique_tensors(struct herd_gguf *g, struct herd_error *err) {
    char name[96];
    g->tensor_by_name =
        name_index(g->tensors, g->n_tensors, sizeof *g->tensors, offsetof(struct herd_gguf_tensor, name));
    if (!g->tensor_by_name)
        return herd_error_set(err, HERD_E_NOMEM, "out of memory indexing %zu tensors", g->n_tensors);
    for (size_t i = 1; i < g->n_tensors; i++) {
        if (str_cmp(g->tensor_by_name[i - 1].name, g->tensor_by_name[i].name) != 0) continue;
        uint64_t x = g->tensors[g->tensor_by_name[i - 1].idx].file_offset;
        uint64_t y = g->tensors[g->tensor_by_name[i].idx].file_offset;
        return herd_error_set(err, HERD_E_DUPLICATE, "duplicate tensor name '%s' (infos at offsets %llu and %llu)",
                              herd_gguf_str_printable(g->tensor_by_name[i].name, name, sizeof name),
                              (unsigned long long)(x < y ? x : y), (unsigned long long)(x < y ? y : x));
    }
    return HERD_OK;
}

static enum herd_status read_alignment(struct herd_gguf *g, struct herd_error *err) {
    g->alignment = HERD_GGUF_DEFAULT_ALIGNMENT;
    const struct herd_gguf_kv *kv = herd_gguf_find_kv(g, "general.alignment");
    if (!kv) return HERD_OK;
    if (kv->type != HERD_GGUF_VTYPE_U32)
        return herd_error_set(err, HERD_E_FORMAT, "general.alignment at offset %llu is %s; it must be u32",
                              (unsigned long long)kv->file_offset, herd_gguf_vtype_name(kv->type));
    uint64_t a = kv->v.u;
    if (a == 0 || (a & (a - 1)) != 0 || a > HERD_GGUF_MAX_ALIGNMENT)
        return herd_error_set(err, HERD_E_FORMAT,
                              "general.alignment = %llu at offset %llu: must be a power of two no larger than %u",
                              (unsigned long long)a, (unsigned long long)kv->file_offset, HERD_GGUF_MAX_ALIGNMENT);
    g->alignment = (uint32_t)a;
    return HERD_OK;
}

/* Places every tensor inside the data section: aligned, inside the file,
 * and not overlapping its neighbour. */
static enum herd_status check_tensor_data(struct herd_gguf *g, struct herd_error *err) {
    char name[96], other[96];
    if (g->n_tensors == 0) return HERD_OK;
    if (g->data_offset > g->size)
        return herd_error_set(err, HERD_E_TRUNCATED,
                              "truncated: data section starts at offset %llu, file is %llu bytes",
                              (unsigned long long)g->data_offset, (unsigned long long)g->size);
    uint64_t data_bytes = g->size - g->data_offset;
    for (size_t i = 0; i < g->n_tensors; i++) {
        struct herd_gguf_tensor *t = &g->tensors[i];
        herd_gguf_str_printable(t->name, name, sizeof name);
        if (t->offset % g->alignment != 0)
            return herd_error_set(err, HERD_E_FORMAT,
                                  "tensor '%s' (info at offset %llu): data offset %llu is not a multiple of the "
                                  "alignment %u",
                                  name, (unsigned long long)t->file_offset, (unsigned long long)t->offset,
                                  g->alignment);
        uint64_t end;
        if (!herd_add_u64(t->offset, t->n_bytes, &end))
            return herd_error_set(err, HERD_E_OVERFLOW, "tensor '%s': data offset %llu + %llu bytes overflows", name,
                                  (unsigned long long)t->offset, (unsigned long long)t->n_bytes);
        if (end > data_bytes)
            return herd_error_set(err, HERD_E_TRUNCATED,
                                  "truncated: tensor '%s' data [%llu, %llu) ends past the end of the file (data "
                                  "section starts at %llu, file is %llu bytes)",
                                  name, (unsigned long long)t->offset, (unsigned long long)end,
                                  (unsigned long long)g->data_offset, (unsigned long long)g->size);
        t->data = g->bytes + g->data_offset + t->offset;
    }
    struct offset_slot *by_offset = malloc(g->n_tensors * sizeof *by_offset);
    if (!by_offset) return herd_error_set(err, HERD_E_NOMEM, "out of memory sorting %zu tensors", g->n_tensors);
    for (size_t i = 0; i < g->n_tensors; i++) by_offset[i] = (struct offset_slot){g->tensors[i].offset, (uint32_t)i};
    qsort(by_offset, g->n_tensors, sizeof *by_offset, cmp_offset_slot);
    enum herd_status rc = HERD_OK;
    for (size_t i = 1; i < g->n_tensors; i++) {
        const struct herd_gguf_tensor *a = &g->tensors[by_offset[i - 1].idx], *b = &g->tensors[by_offset[i].idx];
        if (a->offset + a->n_bytes > b->offset) {
            rc = herd_error_set(err, HERD_E_FORMAT, "tensor '%s' data [%llu, %llu) overlaps tensor '%s' at %llu",
                                herd_gguf_str_printable(a->name, name, sizeof name), (unsigned long long)a->offset,
                                (unsigned long long)(a->offset + a->n_bytes),
                                herd_gguf_str_printable(b->name, other, sizeof other), (unsigned long long)b->offset);
            break;
        }
    }
    free(by_offset);
    return rc;
}

/* ------------------------------------------------------------ parse */

/* Grows an array to hold one more element, doubling up to cap. Memory grows
 * only as entries are parsed, each of which consumed real bytes of the file. */
static enum herd_status grow(void **arr, size_t *cap, size_t n, size_t elem, size_t max, struct herd_error *err) {
    if (n < *cap) return HERD_OK;
    size_t want = *cap ? *cap * 2 : 16;
    if (want > max) want = max;
    HERD_ASSERT(want > n);
    void *p = realloc(*arr, want * elem);
    if (!p) return herd_error_set(err, HERD_E_NOMEM, "out of memory growing to %zu entries", want);
    *arr = p;
    *cap = want;
    return HERD_OK;
}

static enum herd_status parse(struct herd_gguf *g, struct herd_error *err) {
    struct cursor c = {g->bytes, g->size, 0};
    enum herd_status rc;
    if (g->size < 4)
        return herd_error_set(err, HERD_E_TRUNCATED, "truncated: file is %llu bytes, shorter than the 4-byte magic",
                              (unsigned long long)g->size);
    if (memcmp(g->bytes, "GGUF", 4) != 0) {
        if (memcmp(g->bytes, "lmgg", 4) == 0 || memcmp(g->bytes, "tjgg", 4) == 0 || memcmp(g->bytes, "fmgg", 4) == 0)
            return herd_error_set(err, HERD_E_UNSUPPORTED,
                                  "offset 0: this is a pre-GGUF ggml/ggjt file; convert it to GGUF first");
        return herd_error_set(err, HERD_E_FORMAT, "offset 0: bad magic %02x %02x %02x %02x, expected \"GGUF\"",
                              g->bytes[0], g->bytes[1], g->bytes[2], g->bytes[3]);
    }
    c.pos = 4;
    if ((rc = read_u32(&c, "version", &g->version, err)) != HERD_OK) return rc;
    if (g->version == 1)
        return herd_error_set(err, HERD_E_UNSUPPORTED, "offset 4: GGUF version 1 (32-bit counts) is not supported");
    if (g->version == 0x02000000u || g->version == 0x03000000u)
        return herd_error_set(err, HERD_E_UNSUPPORTED, "offset 4: big-endian GGUF files are not supported");
    if (g->version != 2 && g->version != 3)
        return herd_error_set(err, HERD_E_UNSUPPORTED, "offset 4: GGUF version %u is not supported (2 and 3 are)",
                              g->version);
    uint64_t n_tensors, n_kv;
    if ((rc = read_u64(&c, "n_tensors", &n_tensors, err)) != HERD_OK) return rc;
    if ((rc = read_u64(&c, "n_kv", &n_kv, err)) != HERD_OK) return rc;
    if (n_tensors > HERD_GGUF_MAX_TENSORS)
        return herd_error_set(err, HERD_E_FORMAT, "offset 8: n_tensors = %llu exceeds the limit of %u",
                              (unsigned long long)n_tensors, HERD_GGUF_MAX_TENSORS);
    if (n_kv > HERD_GGUF_MAX_KV)
        return herd_error_set(err, HERD_E_FORMAT, "offset 16: n_kv = %llu exceeds the limit of %u",
                              (unsigned long long)n_kv, HERD_GGUF_MAX_KV);
    /* Smallest entries: a 1-byte key, its type and a 1-byte value (13 bytes);
     * a 1-byte name, n_dims, one dimension, type and offset (33 bytes). */
    if (n_kv * 13 + n_tensors * 33 > remaining(&c))
        return herd_error_set(err, HERD_E_TRUNCATED,
                              "truncated: %llu metadata entries and %llu tensor infos cannot fit in the %llu bytes "
                              "after the header",
                              (unsigned long long)n_kv, (unsigned long long)n_tensors,
                              (unsigned long long)remaining(&c));

    size_t cap = 0;
    for (uint64_t i = 0; i < n_kv; i++) {
        if ((rc = grow((void **)&g->kvs, &cap, g->n_kv, sizeof *g->kvs, (size_t)n_kv, err)) != HERD_OK) return rc;
        memset(&g->kvs[g->n_kv], 0, sizeof *g->kvs);
        if ((rc = parse_kv(&c, &g->kvs[g->n_kv], err)) != HERD_OK)
            return herd_error_prefix(err, "metadata entry %llu", (unsigned long long)i);
        g->n_kv++;
    }
    if ((rc = check_unique_keys(g, err)) != HERD_OK) return rc;
    if ((rc = read_alignment(g, err)) != HERD_OK) return rc;

    cap = 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        if ((rc = grow((void **)&g->tensors, &cap, g->n_tensors, sizeof *g->tensors, (size_t)n_tensors, err)) !=
            HERD_OK)
            return rc;
        memset(&g->tensors[g->n_tensors], 0, sizeof *g->tensors);
        if ((rc = parse_tensor_info(&c, &g->tensors[g->n_tensors], err)) != HERD_OK)
            return herd_error_prefix(err, "tensor info %llu", (unsigned long long)i);
        g->n_tensors++;
    }
    if ((rc = check_unique_tensors(g, err)) != HERD_OK) return rc;

    if (n_tensors == 0) {
        g->data_offset = c.pos; /* vocabulary-only files may end right here */
    } else if (!herd_align_up_u64(c.pos, g->alignment, &g->data_offset)) {
        return herd_error_set(err, HERD_E_OVERFLOW, "data section offset overflows");
    }
    return check_tensor_data(g, err);
}

static enum herd_status open_common(struct herd_gguf *g, struct herd_gguf **out, struct herd_error *err) {
    enum herd_status rc = parse(g, err);
    if (rc != HERD_OK) {
        herd_gguf_destroy(g);
        return rc;
    }
    *out = g;
    return HERD_OK;
}

enum herd_status herd_gguf_open_memory(const void *data, size_t size, struct herd_gguf **out, struct herd_error *err) {
    *out = NULL;
    struct herd_gguf *g = calloc(1, sizeof *g);
    if (!g) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    g->bytes = data;
    g->size = size;
    return open_common(g, out, err);
}

enum herd_status herd_gguf_open_file(const char *path, struct herd_gguf **out, struct herd_error *err) {
    *out = NULL;
    struct herd_gguf *g = calloc(1, sizeof *g);
    if (!g) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    enum herd_status rc = herd_mapped_file_init(&g->map, path, err);
    if (rc != HERD_OK) {
        free(g);
        return rc;
    }
    g->bytes = g->map.data;
    g->size = g->map.size;
    rc = open_common(g, out, err);
    if (rc != HERD_OK) herd_error_prefix(err, "%s", path);
    return rc;
}

void herd_gguf_drop_pages(const struct herd_gguf *g, const void *p, size_t n) {
    const uint8_t *b = p;
    if (!g->map.data || b < g->map.data || n > g->map.size || (size_t)(b - g->map.data) > g->map.size - n) return;
    herd_mapped_file_drop(p, n);
}

void herd_gguf_destroy(struct herd_gguf *g) {
    if (!g) return;
    herd_mapped_file_cleanup(&g->map);
    free(g->kvs);
    free(g->tensors);
    free(g->kv_by_key);
    free(g->tensor_by_name);
    free(g);
}

/* ------------------------------------------------------------ accessors */

uint32_t herd_gguf_version(const struct herd_gguf *g) { return g->version; }
uint32_t herd_gguf_alignment(const struct herd_gguf *g) { return g->alignment; }
uint64_t herd_gguf_file_size(const struct herd_gguf *g) { return g->size; }
const uint8_t *herd_gguf_file_bytes(const struct herd_gguf *g) { return g->bytes; }
uint64_t herd_gguf_data_offset(const struct herd_gguf *g) { return g->data_offset; }
size_t herd_gguf_n_kv(const struct herd_gguf *g) { return g->n_kv; }
size_t herd_gguf_n_tensors(const struct herd_gguf *g) { return g->n_tensors; }

const struct herd_gguf_kv *herd_gguf_kv_at(const struct herd_gguf *g, size_t i) {
    HERD_ASSERT(i < g->n_kv);
    return &g->kvs[i];
}

const struct herd_gguf_tensor *herd_gguf_tensor_at(const struct herd_gguf *g, size_t i) {
    HERD_ASSERT(i < g->n_tensors);
    return &g->tensors[i];
}

/* Binary search over the name-sorted indexes built while parsing. */
const struct herd_gguf_kv *herd_gguf_find_kv(const struct herd_gguf *g, const char *key) {
    struct herd_gguf_str want = {key, strlen(key)};
    size_t lo = 0, hi = g->kv_by_key ? g->n_kv : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = str_cmp(g->kv_by_key[mid].name, want);
        if (c == 0) return &g->kvs[g->kv_by_key[mid].idx];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const struct herd_gguf_tensor *herd_gguf_find_tensor(const struct herd_gguf *g, const char *name) {
    struct herd_gguf_str want = {name, strlen(name)};
    size_t lo = 0, hi = g->tensor_by_name ? g->n_tensors : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = str_cmp(g->tensor_by_name[mid].name, want);
        if (c == 0) return &g->tensors[g->tensor_by_name[mid].idx];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ------------------------------------------------------------ typed getters */

static enum herd_status find(const struct herd_gguf *g, const char *key, const struct herd_gguf_kv **out,
                             struct herd_error *err) {
    *out = herd_gguf_find_kv(g, key);
    if (!*out) return herd_error_set(err, HERD_E_NOT_FOUND, "metadata key '%s' is missing", key);
    return HERD_OK;
}

static enum herd_status wrong_type(const struct herd_gguf_kv *kv, const char *key, const char *want,
                                   struct herd_error *err) {
    return herd_error_set(err, HERD_E_FORMAT, "metadata key '%s' at offset %llu is %s; expected %s", key,
                          (unsigned long long)kv->file_offset, herd_gguf_vtype_name(kv->type), want);
}

enum herd_status herd_gguf_get_uint(const struct herd_gguf *g, const char *key, uint64_t max, uint64_t *out,
                                    struct herd_error *err) {
    const struct herd_gguf_kv *kv;
    enum herd_status rc = find(g, key, &kv, err);
    if (rc != HERD_OK) return rc;
    uint64_t v;
    switch (kv->type) {
    case HERD_GGUF_VTYPE_U8:
    case HERD_GGUF_VTYPE_U16:
    case HERD_GGUF_VTYPE_U32:
    case HERD_GGUF_VTYPE_U64: v = kv->v.u; break;
    case HERD_GGUF_VTYPE_I8:
    case HERD_GGUF_VTYPE_I16:
    case HERD_GGUF_VTYPE_I32:
    case HERD_GGUF_VTYPE_I64:
        if (kv->v.i < 0)
            return herd_error_set(err, HERD_E_INVALID, "metadata key '%s' = %lld is negative", key, (long long)kv->v.i);
        v = (uint64_t)kv->v.i;
        break;
    default: return wrong_type(kv, key, "an integer", err);
    }
    if (v > max)
        return herd_error_set(err, HERD_E_INVALID, "metadata key '%s' = %llu exceeds the limit of %llu", key,
                              (unsigned long long)v, (unsigned long long)max);
    *out = v;
    return HERD_OK;
}

enum herd_status herd_gguf_get_float(const struct herd_gguf *g, const char *key, double *out, struct herd_error *err) {
    const struct herd_gguf_kv *kv;
    enum herd_status rc = find(g, key, &kv, err);
    if (rc != HERD_OK) return rc;
    if (kv->type != HERD_GGUF_VTYPE_F32 && kv->type != HERD_GGUF_VTYPE_F64)
        return wrong_type(kv, key, "f32 or f64", err);
    double v = kv->v.f;
    if (!isfinite(v)) return herd_error_set(err, HERD_E_INVALID, "metadata key '%s' is not a finite number", key);
    *out = v;
    return HERD_OK;
}

enum herd_status herd_gguf_get_bool(const struct herd_gguf *g, const char *key, bool *out, struct herd_error *err) {
    const struct herd_gguf_kv *kv;
    enum herd_status rc = find(g, key, &kv, err);
    if (rc != HERD_OK) return rc;
    if (kv->type != HERD_GGUF_VTYPE_BOOL) return wrong_type(kv, key, "bool", err);
    *out = kv->v.b;
    return HERD_OK;
}

enum herd_status herd_gguf_get_string(const struct herd_gguf *g, const char *key, struct herd_gguf_str *out,
                                      struct herd_error *err) {
    const struct herd_gguf_kv *kv;
    enum herd_status rc = find(g, key, &kv, err);
    if (rc != HERD_OK) return rc;
    if (kv->type != HERD_GGUF_VTYPE_STRING) return wrong_type(kv, key, "string", err);
    *out = kv->v.s;
    return HERD_OK;
}

enum herd_status herd_gguf_get_array(const struct herd_gguf *g, const char *key, enum herd_gguf_vtype elem_type,
                                     struct herd_gguf_array *out, struct herd_error *err) {
    const struct herd_gguf_kv *kv;
    enum herd_status rc = find(g, key, &kv, err);
    if (rc != HERD_OK) return rc;
    if (kv->type != HERD_GGUF_VTYPE_ARRAY || kv->v.arr.type != elem_type) {
        char want[48];
        snprintf(want, sizeof want, "an array of %s", herd_gguf_vtype_name(elem_type));
        if (kv->type == HERD_GGUF_VTYPE_ARRAY)
            return herd_error_set(err, HERD_E_FORMAT, "metadata key '%s' at offset %llu is an array of %s; expected %s",
                                  key, (unsigned long long)kv->file_offset, herd_gguf_vtype_name(kv->v.arr.type), want);
        return wrong_type(kv, key, want, err);
    }
    *out = kv->v.arr;
    return HERD_OK;
}

/* ------------------------------------------------------------ array elements */

static uint64_t array_raw(const struct herd_gguf_array *a, uint64_t i) {
    size_t n = herd_gguf_vtype_size(a->type);
    HERD_ASSERT(n > 0 && i < a->count);
    return load_le(a->data + i * n, n);
}

uint64_t herd_gguf_array_u64(const struct herd_gguf_array *a, uint64_t i) {
    switch (a->type) {
    case HERD_GGUF_VTYPE_I8:
    case HERD_GGUF_VTYPE_I16:
    case HERD_GGUF_VTYPE_I32:
    case HERD_GGUF_VTYPE_I64: {
        int64_t v = herd_gguf_array_i64(a, i);
        return v < 0 ? 0 : (uint64_t)v;
    }
    case HERD_GGUF_VTYPE_F32:
    case HERD_GGUF_VTYPE_F64: {
        double v = herd_gguf_array_f64(a, i);
        return v > 0 && v < 1.8e19 ? (uint64_t)v : 0;
    }
    default: return array_raw(a, i);
    }
}

int64_t herd_gguf_array_i64(const struct herd_gguf_array *a, uint64_t i) {
    uint64_t raw = array_raw(a, i);
    switch (a->type) {
    case HERD_GGUF_VTYPE_I8: return (int8_t)raw;
    case HERD_GGUF_VTYPE_I16: return (int16_t)raw;
    case HERD_GGUF_VTYPE_I32: return (int32_t)raw;
    case HERD_GGUF_VTYPE_F32:
    case HERD_GGUF_VTYPE_F64: {
        double v = herd_gguf_array_f64(a, i);
        return v > -9.2e18 && v < 9.2e18 ? (int64_t)v : 0;
    }
    default: return (int64_t)raw;
    }
}

double herd_gguf_array_f64(const struct herd_gguf_array *a, uint64_t i) {
    uint64_t raw = array_raw(a, i);
    switch (a->type) {
    case HERD_GGUF_VTYPE_F32: {
        uint32_t bits = (uint32_t)raw;
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
    }
    case HERD_GGUF_VTYPE_F64: {
        double d;
        memcpy(&d, &raw, sizeof d);
        return d;
    }
    case HERD_GGUF_VTYPE_I8:
    case HERD_GGUF_VTYPE_I16:
    case HERD_GGUF_VTYPE_I32:
    case HERD_GGUF_VTYPE_I64: return (double)herd_gguf_array_i64(a, i);
    default: return (double)raw;
    }
}

void herd_gguf_str_iter_init(struct herd_gguf_str_iter *it, const struct herd_gguf_array *a) {
    HERD_ASSERT(a->type == HERD_GGUF_VTYPE_STRING);
    it->pos = a->data;
    it->end = a->data + a->n_bytes;
    it->left = a->count;
}

bool herd_gguf_str_iter_next(struct herd_gguf_str_iter *it, struct herd_gguf_str *out) {
    if (it->left == 0) return false;
    HERD_ASSERT(it->end - it->pos >= 8);
    uint64_t len = load_le(it->pos, 8);
    HERD_ASSERT(len <= (uint64_t)(it->end - it->pos - 8));
    out->ptr = (const char *)it->pos + 8;
    out->len = len;
    it->pos += 8 + len;
    it->left--;
    return true;
}
