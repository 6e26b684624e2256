/* Traits of every ggml tensor type id and GGUF metadata value type, and the
 * single checked computation of a tensor's byte size. Knowing the block
 * geometry of every type that exists lets herd parse (and inspect) any real
 * file, including ones whose types the engine cannot run. */
#include <stdio.h>
#include <strings.h>

#include "base/checked.h"
#include "herd/gguf.h"

/* Block geometry as ggml defines it (ggml-common.h). "computed" marks the
 * types the herd engine has kernels for; loading a model with any other type
 * is refused by the model loader with the type's name. */
static const struct herd_ggml_type_info type_table[HERD_GGML_TYPE__COUNT] = {
    [HERD_GGML_TYPE_F32] = {"f32", 1, 4, true},
    [HERD_GGML_TYPE_F16] = {"f16", 1, 2, true},
    [HERD_GGML_TYPE_Q4_0] = {"q4_0", 32, 18, true},
    [HERD_GGML_TYPE_Q4_1] = {"q4_1", 32, 20, true},
    [HERD_GGML_TYPE_Q5_0] = {"q5_0", 32, 22, true},
    [HERD_GGML_TYPE_Q5_1] = {"q5_1", 32, 24, true},
    [HERD_GGML_TYPE_Q8_0] = {"q8_0", 32, 34, true},
    [HERD_GGML_TYPE_Q8_1] = {"q8_1", 32, 36, false},
    [HERD_GGML_TYPE_Q2_K] = {"q2_K", 256, 84, true},
    [HERD_GGML_TYPE_Q3_K] = {"q3_K", 256, 110, true},
    [HERD_GGML_TYPE_Q4_K] = {"q4_K", 256, 144, true},
    [HERD_GGML_TYPE_Q5_K] = {"q5_K", 256, 176, true},
    [HERD_GGML_TYPE_Q6_K] = {"q6_K", 256, 210, true},
    [HERD_GGML_TYPE_Q8_K] = {"q8_K", 256, 292, false},
    [HERD_GGML_TYPE_IQ2_XXS] = {"iq2_xxs", 256, 66, false},
    [HERD_GGML_TYPE_IQ2_XS] = {"iq2_xs", 256, 74, false},
    [HERD_GGML_TYPE_IQ3_XXS] = {"iq3_xxs", 256, 98, false},
    [HERD_GGML_TYPE_IQ1_S] = {"iq1_s", 256, 50, false},
    [HERD_GGML_TYPE_IQ4_NL] = {"iq4_nl", 32, 18, true},
    [HERD_GGML_TYPE_IQ3_S] = {"iq3_s", 256, 110, false},
    [HERD_GGML_TYPE_IQ2_S] = {"iq2_s", 256, 82, false},
    [HERD_GGML_TYPE_IQ4_XS] = {"iq4_xs", 256, 136, false},
    [HERD_GGML_TYPE_I8] = {"i8", 1, 1, false},
    [HERD_GGML_TYPE_I16] = {"i16", 1, 2, false},
    [HERD_GGML_TYPE_I32] = {"i32", 1, 4, false},
    [HERD_GGML_TYPE_I64] = {"i64", 1, 8, false},
    [HERD_GGML_TYPE_F64] = {"f64", 1, 8, false},
    [HERD_GGML_TYPE_IQ1_M] = {"iq1_m", 256, 56, false},
    [HERD_GGML_TYPE_BF16] = {"bf16", 1, 2, true},
    [HERD_GGML_TYPE_TQ1_0] = {"tq1_0", 256, 54, false},
    [HERD_GGML_TYPE_TQ2_0] = {"tq2_0", 256, 66, false},
    [HERD_GGML_TYPE_MXFP4] = {"mxfp4", 32, 17, false},
    [HERD_GGML_TYPE_NVFP4] = {"nvfp4", 64, 36, false},
    [HERD_GGML_TYPE_Q1_0] = {"q1_0", 128, 18, false},
    [HERD_GGML_TYPE_Q2_0] = {"q2_0", 64, 18, false},
};

const struct herd_ggml_type_info *herd_ggml_type_info(uint32_t type) {
    if (type >= HERD_GGML_TYPE__COUNT || type_table[type].name == NULL) return NULL;
    return &type_table[type];
}

bool herd_ggml_type_from_name(const char *name, enum herd_ggml_type *out) {
    for (uint32_t t = 0; t < HERD_GGML_TYPE__COUNT; t++) {
        if (type_table[t].name && strcasecmp(type_table[t].name, name) == 0) {
            *out = (enum herd_ggml_type)t;
            return true;
        }
    }
    return false;
}

const char *herd_gguf_vtype_name(uint32_t vtype) {
    static const char *const names[HERD_GGUF_VTYPE__COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
    };
    return vtype < HERD_GGUF_VTYPE__COUNT ? names[vtype] : "?";
}

size_t herd_gguf_vtype_size(uint32_t vtype) {
    static const size_t sizes[HERD_GGUF_VTYPE__COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return vtype < HERD_GGUF_VTYPE__COUNT ? sizes[vtype] : 0;
}

enum herd_status herd_ggml_tensor_nbytes(enum herd_ggml_type type, uint32_t n_dims, const uint64_t *ne,
                                         uint64_t *n_elems, uint64_t *n_bytes, struct herd_error *err) {
    const struct herd_ggml_type_info *ti = herd_ggml_type_info(type);
    if (!ti) return herd_error_set(err, HERD_E_FORMAT, "unknown ggml type id %u", (unsigned)type);
    if (n_dims == 0 || n_dims > HERD_GGUF_MAX_DIMS)
        return herd_error_set(err, HERD_E_FORMAT, "n_dims %u is not in 1..%u", n_dims, HERD_GGUF_MAX_DIMS);
    uint64_t elems = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] == 0) return herd_error_set(err, HERD_E_FORMAT, "dimension ne[%u] is 0", d);
        if (ne[d] > (uint64_t)INT64_MAX || !herd_mul_u64(elems, ne[d], &elems) || elems > (uint64_t)INT64_MAX)
            return herd_error_set(err, HERD_E_OVERFLOW, "element count overflows int64 at ne[%u] = %llu", d,
                                  (unsigned long long)ne[d]);
    }
    if (ne[0] % ti->block_elems != 0)
        return herd_error_set(err, HERD_E_FORMAT, "ne[0] = %llu is not a multiple of the %s block size %u",
                              (unsigned long long)ne[0], ti->name, ti->block_elems);
    uint64_t bytes;
    if (!herd_mul_u64(elems / ti->block_elems, ti->block_bytes, &bytes) || bytes > (uint64_t)INT64_MAX)
        return herd_error_set(err, HERD_E_OVERFLOW, "byte size of %llu %s elements overflows int64",
                              (unsigned long long)elems, ti->name);
    if (n_elems) *n_elems = elems;
    if (n_bytes) *n_bytes = bytes;
    return HERD_OK;
}
