/* `herd quantize`: llama-quantize's type rules, metadata and layout over
 * herd's GGUF reader and writer and the row quantizers of
 * kernels/quantize_k.h (see quantize.h for what is reproduced).
 *
 * The work is in two passes. The plan walks the tensors in output order
 * and fixes each one's type exactly as llama_tensor_get_type does (its
 * counters of attn_v / ffn_down layers advance in that order), and checks
 * everything that could fail on the input: requantization, types herd
 * cannot read or write, importance-matrix sizes. Only then is the file
 * written, tensor by tensor, each quantized row by row on a thread pool
 * (rows are independent in every ggml quantizer, so the split does not
 * change a byte). */
#include "convert/quantize.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "base/assert.h"
#include "base/checked.h"
#include "base/cpu.h"
#include "base/pool.h"
#include "base/timing.h"
#include "convert/imatrix.h"
#include "kernels/quant.h"
#include "kernels/quantize_k.h"

/* ggml's GGML_QNT_VERSION: the block layouts herd writes are version 2. */
#define QUANTIZATION_VERSION 2u

/* llama-quantize keeps at most this many bytes of the imatrix file name
 * and dataset in its metadata (a 128-byte override buffer with its NUL). */
#define IMATRIX_KV_MAX_BYTES 127

/* ------------------------------------------------------------ file types */

struct ftype_entry {
    const char *name;
    enum herd_ftype ftype;
    enum herd_ggml_type default_type;
    bool alias; /* another name of an ftype listed under its own name too */
};

/* In llama-quantize's order; the aliases Q3_K, Q4_K and Q5_K are the M mixes. */
static const struct ftype_entry kFtypes[] = {
    {"Q4_0", HERD_FTYPE_Q4_0, HERD_GGML_TYPE_Q4_0, false},
    {"Q4_1", HERD_FTYPE_Q4_1, HERD_GGML_TYPE_Q4_1, false},
    {"Q5_0", HERD_FTYPE_Q5_0, HERD_GGML_TYPE_Q5_0, false},
    {"Q5_1", HERD_FTYPE_Q5_1, HERD_GGML_TYPE_Q5_1, false},
    {"Q2_K", HERD_FTYPE_Q2_K, HERD_GGML_TYPE_Q2_K, false},
    {"Q2_K_S", HERD_FTYPE_Q2_K_S, HERD_GGML_TYPE_Q2_K, false},
    {"Q3_K", HERD_FTYPE_Q3_K_M, HERD_GGML_TYPE_Q3_K, true},
    {"Q3_K_S", HERD_FTYPE_Q3_K_S, HERD_GGML_TYPE_Q3_K, false},
    {"Q3_K_M", HERD_FTYPE_Q3_K_M, HERD_GGML_TYPE_Q3_K, false},
    {"Q3_K_L", HERD_FTYPE_Q3_K_L, HERD_GGML_TYPE_Q3_K, false},
    {"IQ4_NL", HERD_FTYPE_IQ4_NL, HERD_GGML_TYPE_IQ4_NL, false},
    {"Q4_K", HERD_FTYPE_Q4_K_M, HERD_GGML_TYPE_Q4_K, true},
    {"Q4_K_S", HERD_FTYPE_Q4_K_S, HERD_GGML_TYPE_Q4_K, false},
    {"Q4_K_M", HERD_FTYPE_Q4_K_M, HERD_GGML_TYPE_Q4_K, false},
    {"Q5_K", HERD_FTYPE_Q5_K_M, HERD_GGML_TYPE_Q5_K, true},
    {"Q5_K_S", HERD_FTYPE_Q5_K_S, HERD_GGML_TYPE_Q5_K, false},
    {"Q5_K_M", HERD_FTYPE_Q5_K_M, HERD_GGML_TYPE_Q5_K, false},
    {"Q6_K", HERD_FTYPE_Q6_K, HERD_GGML_TYPE_Q6_K, false},
    {"Q8_0", HERD_FTYPE_Q8_0, HERD_GGML_TYPE_Q8_0, false},
    {"F16", HERD_FTYPE_F16, HERD_GGML_TYPE_F16, false},
    {"BF16", HERD_FTYPE_BF16, HERD_GGML_TYPE_BF16, false},
    {"F32", HERD_FTYPE_ALL_F32, HERD_GGML_TYPE_F32, false},
};
#define N_FTYPES (sizeof kFtypes / sizeof kFtypes[0])

/* llama-quantize's other types (number, name): recognised so the error
 * says "not supported" rather than "unknown". */
static const struct {
    int ftype;
    const char *name;
} kUnsupported[] = {
    {19, "IQ2_XXS"}, {20, "IQ2_XS"},  {28, "IQ2_S"}, {29, "IQ2_M"}, {24, "IQ1_S"},  {31, "IQ1_M"},  {36, "TQ1_0"},
    {37, "TQ2_0"},   {23, "IQ3_XXS"}, {26, "IQ3_S"}, {27, "IQ3_M"}, {22, "IQ3_XS"}, {30, "IQ4_XS"}, {-1, "COPY"},
};

const char *herd_quantize_ftype_names(void) {
    return "Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q2_K_S, Q3_K (= Q3_K_M), Q3_K_S, Q3_K_M, Q3_K_L, IQ4_NL, Q4_K (= Q4_K_M), "
           "Q4_K_S, Q4_K_M, Q5_K (= Q5_K_M), Q5_K_S, Q5_K_M, Q6_K, Q8_0, F16, BF16, F32";
}

static const struct ftype_entry *ftype_entry(enum herd_ftype f) {
    for (size_t i = 0; i < N_FTYPES; i++)
        if (kFtypes[i].ftype == f && !kFtypes[i].alias) return &kFtypes[i];
    return NULL;
}

const char *herd_quantize_ftype_name(enum herd_ftype ftype) {
    const struct ftype_entry *e = ftype_entry(ftype);
    return e ? e->name : "?";
}

enum herd_status herd_quantize_ftype_parse(const char *text, enum herd_ftype *out, struct herd_error *err) {
    for (size_t i = 0; i < N_FTYPES; i++)
        if (strcasecmp(text, kFtypes[i].name) == 0) {
            *out = kFtypes[i].ftype;
            return HERD_OK;
        }
    char *end;
    const long v = strtol(text, &end, 10);
    const bool numeric = *text && *end == '\0';
    if (numeric)
        for (size_t i = 0; i < N_FTYPES; i++)
            if ((long)kFtypes[i].ftype == v) {
                *out = kFtypes[i].ftype;
                return HERD_OK;
            }
    for (size_t i = 0; i < sizeof kUnsupported / sizeof kUnsupported[0]; i++)
        if (strcasecmp(text, kUnsupported[i].name) == 0 || (numeric && v == kUnsupported[i].ftype))
            return herd_error_set(err, HERD_E_UNSUPPORTED,
                                  "type %s is a llama-quantize type herd has no quantizer for; herd writes %s",
                                  kUnsupported[i].name, herd_quantize_ftype_names());
    return herd_error_set(err, HERD_E_INVALID, "unknown type '%s'; herd writes %s", text, herd_quantize_ftype_names());
}

void herd_quantize_default_params(struct herd_quantize_params *p) {
    memset(p, 0, sizeof *p);
    p->ftype = HERD_FTYPE_Q8_0;
    p->output_type = -1;
    p->token_embedding_type = -1;
}

/* ------------------------------------------------------------ the model as llama-quantize sees it */

struct in_tensor {
    const struct herd_gguf_tensor *t;
    char name[HERD_GGUF_MAX_TENSOR_NAME_BYTES + 1];
    int layer; /* N of "blk.N.", -1 otherwise: the sort key */
    /* the plan */
    bool convert;
    bool fallback;
    enum herd_ggml_type type_out;
    uint32_t n_dims_out;  /* ggml_n_dims: trailing dimensions of 1 dropped */
    const float *imatrix; /* ne[0] x ne[2] weights, or NULL */
    uint64_t bytes_out;
};

/* The hyperparameters llama_tensor_get_type reads. */
struct hparams {
    char arch[64];
    int n_layer;
    int n_head, n_head_kv; /* of layer 0 */
    int n_kv_zero_layers;  /* layers with no KV heads (no attention) */
    int n_expert;
    bool falcon;
    bool is_70b; /* llama.cpp's LLM_TYPE_70B: 8 query heads share each attn_v */
};

/* A per-layer count that may be a scalar or an array (llama.cpp accepts
 * both); element il, or def when the key is absent. */
static enum herd_status layer_count(const struct herd_gguf *g, const char *key, int il, int def, int *out,
                                    struct herd_error *err) {
    const struct herd_gguf_kv *kv = herd_gguf_find_kv(g, key);
    if (!kv) {
        *out = def;
        return HERD_OK;
    }
    if (kv->type == HERD_GGUF_VTYPE_ARRAY) {
        struct herd_gguf_array a;
        enum herd_status rc = herd_gguf_get_array(g, key, kv->v.arr.type, &a, err);
        if (rc != HERD_OK) return rc;
        if ((uint64_t)il >= a.count || a.type == HERD_GGUF_VTYPE_STRING || a.type == HERD_GGUF_VTYPE_F32 ||
            a.type == HERD_GGUF_VTYPE_F64 || a.type == HERD_GGUF_VTYPE_BOOL)
            return herd_error_set(err, HERD_E_FORMAT, "%s: expected integers, one per layer", key);
        const int64_t v = herd_gguf_array_i64(&a, (uint64_t)il);
        if (v < 0 || v > (1 << 20)) return herd_error_set(err, HERD_E_INVALID, "%s[%d] = %lld", key, il, (long long)v);
        *out = (int)v;
        return HERD_OK;
    }
    uint64_t v;
    enum herd_status rc = herd_gguf_get_uint(g, key, 1u << 20, &v, err);
    if (rc != HERD_OK) return rc;
    *out = (int)v;
    return HERD_OK;
}

static enum herd_status read_hparams(const struct herd_gguf *g, struct hparams *hp, struct herd_error *err) {
    memset(hp, 0, sizeof *hp);
    struct herd_gguf_str arch;
    enum herd_status rc = herd_gguf_get_string(g, "general.architecture", &arch, err);
    if (rc != HERD_OK) return rc;
    if (arch.len == 0 || arch.len >= sizeof hp->arch || memchr(arch.ptr, '\0', arch.len))
        return herd_error_set(err, HERD_E_FORMAT, "general.architecture is not a plain name");
    memcpy(hp->arch, arch.ptr, arch.len);
    char key[128];
    uint64_t v;
    snprintf(key, sizeof key, "%s.block_count", hp->arch);
    if ((rc = herd_gguf_get_uint(g, key, 1u << 16, &v, err)) != HERD_OK) return rc;
    hp->n_layer = (int)v;
    snprintf(key, sizeof key, "%s.attention.head_count", hp->arch);
    if ((rc = layer_count(g, key, 0, 0, &hp->n_head, err)) != HERD_OK) return rc;
    snprintf(key, sizeof key, "%s.attention.head_count_kv", hp->arch);
    for (int il = 0; il < hp->n_layer; il++) {
        int n_head_il, kv;
        if ((rc = layer_count(g, key, il, -1, &kv, err)) != HERD_OK) return rc;
        if (kv < 0) { /* absent: as many as the query heads (llama.cpp's default) */
            char hk[128];
            snprintf(hk, sizeof hk, "%s.attention.head_count", hp->arch);
            if ((rc = layer_count(g, hk, il, 0, &n_head_il, err)) != HERD_OK) return rc;
            kv = n_head_il;
        }
        if (il == 0) hp->n_head_kv = kv;
        hp->n_kv_zero_layers += kv == 0;
    }
    snprintf(key, sizeof key, "%s.expert_count", hp->arch);
    if (herd_gguf_find_kv(g, key)) {
        if ((rc = herd_gguf_get_uint(g, key, 1u << 16, &v, err)) != HERD_OK) return rc;
        hp->n_expert = (int)v;
    }
    hp->falcon = strcmp(hp->arch, "falcon") == 0;
    /* llama.cpp's model types of 80 layers that it calls 70B (llama-model.cpp) */
    hp->is_70b =
        hp->n_layer == 80 && ((strcmp(hp->arch, "llama") == 0 && hp->n_expert != 8 && hp->n_head != hp->n_head_kv) ||
                              strcmp(hp->arch, "qwen2") == 0 || strcmp(hp->arch, "deci") == 0);
    return HERD_OK;
}

/* std::map order of llama_model_loader::weights_map: by the N of "blk.N."
 * (-1 for other names), then bytewise by name. */
static int tensor_order(const void *a, const void *b) {
    const struct in_tensor *x = a, *y = b;
    if (x->layer != y->layer) return x->layer < y->layer ? -1 : 1;
    return strcmp(x->name, y->name);
}

static uint32_t ggml_n_dims(const uint64_t ne[HERD_GGUF_MAX_DIMS]) {
    for (uint32_t i = HERD_GGUF_MAX_DIMS - 1; i >= 1; i--)
        if (ne[i] > 1) return i + 1;
    return 1;
}

static bool ends_with(const char *s, const char *suffix) {
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

static bool contains(const char *s, const char *part) { return strstr(s, part) != NULL; }

static bool is_quantized(enum herd_ggml_type t) {
    return t != HERD_GGML_TYPE_F32 && t != HERD_GGML_TYPE_F16 && t != HERD_GGML_TYPE_BF16 && t != HERD_GGML_TYPE_F64 &&
           t != HERD_GGML_TYPE_I8 && t != HERD_GGML_TYPE_I16 && t != HERD_GGML_TYPE_I32 && t != HERD_GGML_TYPE_I64;
}

/* Whether ggml's quantizer for t reads an importance matrix (reports only:
 * llama-quantize checks the entry's size for every type). */
static bool takes_imatrix(enum herd_ggml_type t) {
    return t != HERD_GGML_TYPE_F32 && t != HERD_GGML_TYPE_F16 && t != HERD_GGML_TYPE_BF16 && t != HERD_GGML_TYPE_Q8_0;
}

static uint32_t block_elems(enum herd_ggml_type t) {
    const struct herd_ggml_type_info *ti = herd_ggml_type_info(t);
    return ti ? ti->block_elems : 1;
}

/* ------------------------------------------------------------ llama_tensor_get_type */

/* The mix's counters, advanced as llama.cpp advances them. */
struct mix_state {
    int n_attention_wv, i_attention_wv;
    int n_ffn_down, i_ffn_down, n_ffn_gate, i_ffn_gate, n_ffn_up, i_ffn_up;
    bool has_output, has_imatrix;
};

/* llama.cpp's layers that get more bits in the M mixes: the first and last
 * eighth and every third layer between. */
static bool use_more_bits(int i_layer, int n_layers) {
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

/* The layer of an ffn tensor: the running counter, or for mixture-of-experts
 * models (whose expert tensors are not in layer order) the name's N. */
static enum herd_status layer_info(const struct hparams *hp, int counter, const char *name, int *i_layer,
                                   struct herd_error *err) {
    *i_layer = counter;
    if (hp->n_expert > 1) {
        if (sscanf(name, "blk.%d.", i_layer) != 1)
            return herd_error_set(err, HERD_E_FORMAT, "cannot tell the layer of tensor %s", name);
        if (*i_layer < 0 || *i_layer >= hp->n_layer)
            return herd_error_set(err, HERD_E_FORMAT, "tensor %s: layer %d is not in [0, %d)", name, *i_layer,
                                  hp->n_layer);
    }
    return HERD_OK;
}

/* The type of one matrix in the mix of ftype, starting from the ftype's
 * default t (llama_tensor_get_type, for the ftypes herd writes). */
static enum herd_status mix_type(struct mix_state *qs, const struct hparams *hp, const struct herd_quantize_params *p,
                                 struct in_tensor *it, enum herd_ggml_type *type, struct herd_error *err) {
    const enum herd_ftype ft = p->ftype;
    const char *name = it->name;
    const uint64_t nx = it->t->ne[0];
    enum herd_ggml_type t = *type;
    const int n_gqa = hp->n_head_kv > 0 ? hp->n_head / hp->n_head_kv : 0;
    enum herd_status rc;
    int i_layer;
    if (strcmp(name, "output.weight") == 0 || (!qs->has_output && strcmp(name, "token_embd.weight") == 0)) {
        /* an output matrix (or the embedding that serves as one) keeps more bits */
        if (p->output_type >= 0)
            t = (enum herd_ggml_type)p->output_type;
        else if (hp->falcon || nx % block_elems(t) != 0)
            t = HERD_GGML_TYPE_Q8_0;
        else if (t != HERD_GGML_TYPE_Q8_0)
            t = HERD_GGML_TYPE_Q6_K;
    } else if (strcmp(name, "token_embd.weight") == 0) {
        if (p->token_embedding_type >= 0) t = (enum herd_ggml_type)p->token_embedding_type;
    } else if (contains(name, "attn_v.weight")) {
        if (ft == HERD_FTYPE_Q2_K)
            t = n_gqa >= 4 ? HERD_GGML_TYPE_Q4_K : HERD_GGML_TYPE_Q3_K;
        else if (ft == HERD_FTYPE_Q2_K_S && n_gqa >= 4)
            t = HERD_GGML_TYPE_Q4_K;
        else if (ft == HERD_FTYPE_Q3_K_M)
            t = qs->i_attention_wv < 2 ? HERD_GGML_TYPE_Q5_K : HERD_GGML_TYPE_Q4_K;
        else if (ft == HERD_FTYPE_Q3_K_L)
            t = HERD_GGML_TYPE_Q5_K;
        else if (ft == HERD_FTYPE_IQ4_NL && n_gqa >= 4)
            t = HERD_GGML_TYPE_Q5_K;
        else if ((ft == HERD_FTYPE_Q4_K_M || ft == HERD_FTYPE_Q5_K_M) &&
                 use_more_bits(qs->i_attention_wv, qs->n_attention_wv))
            t = HERD_GGML_TYPE_Q6_K;
        else if (ft == HERD_FTYPE_Q4_K_S && qs->i_attention_wv < 4)
            t = HERD_GGML_TYPE_Q5_K;
        /* 70B models share each attn_v among 8 heads: it is 8x smaller than attn_q, bits are cheap there */
        if (hp->is_70b && (t == HERD_GGML_TYPE_Q3_K || t == HERD_GGML_TYPE_Q4_K)) t = HERD_GGML_TYPE_Q5_K;
        if (hp->n_expert == 8) t = HERD_GGML_TYPE_Q8_0;
        qs->i_attention_wv++;
    } else if (contains(name, "attn_k.weight")) {
        if (hp->n_expert == 8) t = HERD_GGML_TYPE_Q8_0;
    } else if (contains(name, "attn_q.weight")) {
        /* only the IQ3 mixes change attn_q */
    } else if (contains(name, "ffn_down")) {
        if ((rc = layer_info(hp, qs->i_ffn_down, name, &i_layer, err)) != HERD_OK) return rc;
        const int n_layer = qs->n_ffn_down;
        if (ft == HERD_FTYPE_Q2_K)
            t = HERD_GGML_TYPE_Q3_K;
        else if (ft == HERD_FTYPE_Q2_K_S) {
            if (i_layer < n_layer / 8) t = HERD_GGML_TYPE_Q4_K;
        } else if (ft == HERD_FTYPE_Q3_K_M)
            t = i_layer < n_layer / 16                           ? HERD_GGML_TYPE_Q5_K
                : !hp->falcon || use_more_bits(i_layer, n_layer) ? HERD_GGML_TYPE_Q4_K
                                                                 : HERD_GGML_TYPE_Q3_K;
        else if (ft == HERD_FTYPE_Q3_K_L)
            t = hp->falcon ? HERD_GGML_TYPE_Q4_K : HERD_GGML_TYPE_Q5_K;
        else if (ft == HERD_FTYPE_Q4_K_M) {
            if (hp->falcon)
                t = i_layer < n_layer / 16            ? HERD_GGML_TYPE_Q6_K
                    : use_more_bits(i_layer, n_layer) ? HERD_GGML_TYPE_Q5_K
                                                      : HERD_GGML_TYPE_Q4_K;
            else if (use_more_bits(i_layer, n_layer))
                t = HERD_GGML_TYPE_Q6_K;
        } else if (i_layer < n_layer / 8 && ft == HERD_FTYPE_IQ4_NL && !qs->has_imatrix)
            t = HERD_GGML_TYPE_Q5_K;
        else if (ft == HERD_FTYPE_Q5_K_M && use_more_bits(i_layer, n_layer))
            t = HERD_GGML_TYPE_Q6_K;
        else if (ft == HERD_FTYPE_Q4_K_S && !hp->falcon && i_layer < n_layer / 8)
            t = HERD_GGML_TYPE_Q5_K;
        else if ((ft == HERD_FTYPE_Q4_0 || ft == HERD_FTYPE_Q5_0) && qs->has_imatrix && i_layer < n_layer / 8)
            /* llama.cpp guards the first ffn_down layers of Q4_0 / Q5_0 when an imatrix is given */
            t = ft == HERD_FTYPE_Q4_0 ? HERD_GGML_TYPE_Q4_1 : HERD_GGML_TYPE_Q5_1;
        qs->i_ffn_down++;
    } else if (contains(name, "attn_output.weight")) {
        if (!hp->falcon) {
            if (hp->n_expert == 8) {
                if (ft == HERD_FTYPE_Q2_K || ft == HERD_FTYPE_Q3_K_S || ft == HERD_FTYPE_Q3_K_M ||
                    ft == HERD_FTYPE_IQ4_NL || ft == HERD_FTYPE_Q4_K_S || ft == HERD_FTYPE_Q4_K_M)
                    t = HERD_GGML_TYPE_Q5_K;
            } else {
                if (ft == HERD_FTYPE_Q2_K)
                    t = HERD_GGML_TYPE_Q3_K;
                else if (ft == HERD_FTYPE_Q3_K_M)
                    t = HERD_GGML_TYPE_Q4_K;
                else if (ft == HERD_FTYPE_Q3_K_L)
                    t = HERD_GGML_TYPE_Q5_K;
            }
        } else if (ft == HERD_FTYPE_Q3_K_L) {
            t = HERD_GGML_TYPE_Q4_K;
        }
    } else if (contains(name, "attn_qkv.weight")) {
        if (ft == HERD_FTYPE_Q3_K_M || ft == HERD_FTYPE_Q3_K_L)
            t = HERD_GGML_TYPE_Q4_K;
        else if (ft == HERD_FTYPE_Q4_K_M)
            t = HERD_GGML_TYPE_Q5_K;
        else if (ft == HERD_FTYPE_Q5_K_M)
            t = HERD_GGML_TYPE_Q6_K;
    } else if (contains(name, "ffn_gate")) {
        if ((rc = layer_info(hp, qs->i_ffn_gate, name, &i_layer, err)) != HERD_OK) return rc;
        qs->i_ffn_gate++;
    } else if (contains(name, "ffn_up")) {
        if ((rc = layer_info(hp, qs->i_ffn_up, name, &i_layer, err)) != HERD_OK) return rc;
        qs->i_ffn_up++;
    }

    /* Rows that do not split into the chosen type's blocks fall back. */
    if (nx % block_elems(t) != 0) {
        switch (t) {
        case HERD_GGML_TYPE_Q2_K:
        case HERD_GGML_TYPE_Q3_K: t = HERD_GGML_TYPE_IQ4_NL; break;
        case HERD_GGML_TYPE_Q4_K: t = HERD_GGML_TYPE_Q5_0; break;
        case HERD_GGML_TYPE_Q5_K: t = HERD_GGML_TYPE_Q5_1; break;
        case HERD_GGML_TYPE_Q6_K: t = HERD_GGML_TYPE_Q8_0; break;
        default:
            return herd_error_set(err, HERD_E_UNSUPPORTED,
                                  "tensor %s: rows of %llu values do not split into %s blocks, and %s has no fallback",
                                  name, (unsigned long long)nx, herd_ggml_type_info(t)->name,
                                  herd_ggml_type_info(t)->name);
        }
        if (nx % block_elems(t) != 0) t = HERD_GGML_TYPE_F16;
        it->fallback = true;
    }
    *type = t;
    return HERD_OK;
}

/* ------------------------------------------------------------ the plan */

struct plan {
    struct herd_gguf *in;
    struct herd_imatrix *im;
    struct in_tensor *tensors; /* output order */
    size_t n;
    struct hparams hp;
    size_t max_row; /* largest ne[0] converted */
    uint64_t max_bytes_out;
};

/* Which tensors llama-quantize converts at all (llama_model_quantize_impl). */
static bool wants_quantize(const struct in_tensor *it) {
    const char *name = it->name;
    if (!ends_with(name, "weight")) return false;
    if (it->n_dims_out < 2) return false; /* vectors: norms, biases */
    if (contains(name, "_norm.weight")) return false;
    if (contains(name, "ffn_gate_inp.weight")) return false; /* expert routers */
    if (strcmp(name, "position_embd.weight") == 0 || strcmp(name, "token_types.weight") == 0) return false;
    if (contains(name, "ssm_conv1d.weight")) return false;
    static const char *const rwkv[] = {
        "time_mix_first.weight",    "time_mix_w1.weight",         "time_mix_w2.weight", "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight"};
    for (size_t i = 0; i < sizeof rwkv / sizeof rwkv[0]; i++)
        if (contains(name, rwkv[i])) return false;
    return true;
}

static enum herd_status check_imatrix_values(const struct herd_imatrix *im, const char *path, struct herd_error *err) {
    for (size_t i = 0; i < im->n_entries; i++)
        for (uint32_t j = 0; j < im->entries[i].nval; j++)
            if (!isfinite(im->entries[i].values[j]))
                return herd_error_set(err, HERD_E_FORMAT, "%s: entry '%s' holds a non-finite value at column %u", path,
                                      im->entries[i].name, j);
    return HERD_OK;
}

static enum herd_status make_plan(const struct herd_quantize_params *p, struct plan *pl, struct herd_error *err) {
    enum herd_status rc;
    const struct ftype_entry *fe = ftype_entry(p->ftype);
    if (!fe) return herd_error_set(err, HERD_E_INVALID, "file type %d is not one herd writes", (int)p->ftype);
    if (p->ftype == HERD_FTYPE_Q2_K_S && !p->imatrix_path)
        return herd_error_set(err, HERD_E_INVALID,
                              "Q2_K_S needs an importance matrix (--imatrix), as llama-quantize "
                              "insists: without one the result is garbage");
    for (int k = 0; k < 2; k++) {
        const int t = k ? p->token_embedding_type : p->output_type;
        if (t >= 0 && !herd_quantize_rows_supported((enum herd_ggml_type)t)) {
            const struct herd_ggml_type_info *ti = herd_ggml_type_info((uint32_t)t);
            return herd_error_set(err, HERD_E_UNSUPPORTED, "%s type %s: herd cannot write it",
                                  k ? "token embedding" : "output", ti ? ti->name : "?");
        }
    }
    if (p->imatrix_path) {
        if ((rc = herd_imatrix_load(p->imatrix_path, &pl->im, err)) != HERD_OK) return rc;
        if ((rc = check_imatrix_values(pl->im, p->imatrix_path, err)) != HERD_OK) return rc;
    }
    if ((rc = herd_gguf_open_file(p->in_path, &pl->in, err)) != HERD_OK) return rc;
    uint64_t n_split = 0;
    if (herd_gguf_find_kv(pl->in, "split.count") &&
        herd_gguf_get_uint(pl->in, "split.count", UINT32_MAX, &n_split, NULL) == HERD_OK && n_split > 1)
        return herd_error_set(err, HERD_E_UNSUPPORTED, "%s is one of %llu split files; merge them first", p->in_path,
                              (unsigned long long)n_split);
    if ((rc = read_hparams(pl->in, &pl->hp, err)) != HERD_OK) return herd_error_prefix(err, "%s", p->in_path);

    pl->n = herd_gguf_n_tensors(pl->in);
    pl->tensors = calloc(pl->n ? pl->n : 1, sizeof *pl->tensors);
    if (!pl->tensors) return herd_error_set(err, HERD_E_NOMEM, "out of memory for %zu tensors", pl->n);
    struct mix_state qs = {0};
    for (size_t i = 0; i < pl->n; i++) {
        struct in_tensor *it = &pl->tensors[i];
        it->t = herd_gguf_tensor_at(pl->in, i);
        if (it->t->name.len >= sizeof it->name || memchr(it->t->name.ptr, '\0', it->t->name.len))
            return herd_error_set(err, HERD_E_FORMAT, "%s: tensor %zu has a name herd cannot copy", p->in_path, i);
        memcpy(it->name, it->t->name.ptr, it->t->name.len);
        it->layer = -1;
        sscanf(it->name, "blk.%d.", &it->layer);
        it->n_dims_out = ggml_n_dims(it->t->ne);
        it->type_out = it->t->type;
        if (contains(it->name, "attn_v.weight") || contains(it->name, "attn_qkv.weight") ||
            contains(it->name, "attn_kv_b.weight"))
            qs.n_attention_wv++;
        else if (strcmp(it->name, "output.weight") == 0)
            qs.has_output = true;
    }
    qsort(pl->tensors, pl->n, sizeof *pl->tensors, tensor_order);
    qs.n_ffn_down = qs.n_ffn_gate = qs.n_ffn_up = pl->hp.n_layer;
    qs.has_imatrix = pl->im != NULL;
    const int n_attn_layer = pl->hp.n_layer - pl->hp.n_kv_zero_layers;
    if (qs.n_attention_wv != 0 && qs.n_attention_wv != n_attn_layer)
        return herd_error_set(err, HERD_E_FORMAT, "%s: %d attention value matrices for %d attention layers", p->in_path,
                              qs.n_attention_wv, n_attn_layer);

    const enum herd_ggml_type def = fe->default_type;
    for (size_t i = 0; i < pl->n; i++) {
        struct in_tensor *it = &pl->tensors[i];
        const struct herd_gguf_tensor *t = it->t;
        enum herd_ggml_type nt = t->type;
        bool q = wants_quantize(it);
        if (q) {
            nt = def;
            if (!p->pure && is_quantized(def) && (rc = mix_type(&qs, &pl->hp, p, it, &nt, err)) != HERD_OK)
                return herd_error_prefix(err, "%s", p->in_path);
            if (p->token_embedding_type >= 0 && strcmp(it->name, "token_embd.weight") == 0)
                nt = (enum herd_ggml_type)p->token_embedding_type;
            if (p->output_type >= 0 && strcmp(it->name, "output.weight") == 0) nt = (enum herd_ggml_type)p->output_type;
            q = nt != t->type;
        }
        it->convert = q;
        it->type_out = q ? nt : t->type;
        if (!q) {
            it->fallback = false;
            it->bytes_out = t->n_bytes;
            continue;
        }
        /* everything that could stop the conversion, before a byte is written */
        const char *tname = herd_ggml_type_info(t->type) ? herd_ggml_type_info(t->type)->name : "?";
        if (is_quantized(t->type) && !p->allow_requantize)
            return herd_error_set(err, HERD_E_INVALID,
                                  "%s: tensor %s is already quantized (%s); requantizing loses quality, "
                                  "--allow-requantize permits it",
                                  p->in_path, it->name, tname);
        if (!herd_quantize_rows_supported(t->type)) /* the types herd_dequantize_row_ref reads */
            return herd_error_set(err, HERD_E_UNSUPPORTED, "%s: tensor %s has type %s, which herd cannot convert",
                                  p->in_path, it->name, tname);
        if (!herd_quantize_rows_supported(nt))
            return herd_error_set(err, HERD_E_UNSUPPORTED, "tensor %s: herd cannot write type %s", it->name,
                                  herd_ggml_type_info(nt)->name);
        if (t->ne[0] % block_elems(nt) != 0)
            return herd_error_set(err, HERD_E_INVALID,
                                  "tensor %s: rows of %llu values do not split into %s blocks of %u", it->name,
                                  (unsigned long long)t->ne[0], herd_ggml_type_info(nt)->name, block_elems(nt));
        if (t->ne[3] > 1)
            return herd_error_set(err, HERD_E_UNSUPPORTED, "tensor %s: 4-D tensors are not quantized", it->name);
        if (pl->im) {
            const struct herd_imatrix_entry *e = herd_imatrix_find(pl->im, it->name);
            if (e) {
                if ((uint64_t)e->nval == t->ne[0] * t->ne[2])
                    it->imatrix = e->values;
                else if (strcmp(it->name, "token_embd.weight") != 0) /* llama.cpp ignores a misfit for token_embd */
                    return herd_error_set(
                        err, HERD_E_INVALID, "%s: the entry for %s has %u values; the tensor has %llu columns",
                        p->imatrix_path, it->name, e->nval, (unsigned long long)(t->ne[0] * t->ne[2]));
            }
        }
        if (nt == HERD_GGML_TYPE_Q2_K && p->ftype == HERD_FTYPE_Q2_K_S && !it->imatrix &&
            strcmp(it->name, "token_embd.weight") != 0)
            return herd_error_set(err, HERD_E_INVALID, "tensor %s: no importance-matrix entry, which Q2_K_S needs (%s)",
                                  it->name, p->imatrix_path);
        const uint64_t *ne = t->ne;
        if ((rc = herd_ggml_tensor_nbytes(nt, it->n_dims_out, ne, NULL, &it->bytes_out, err)) != HERD_OK)
            return herd_error_prefix(err, "tensor %s", it->name);
        if (ne[0] > pl->max_row) pl->max_row = (size_t)ne[0];
        if (it->bytes_out > pl->max_bytes_out) pl->max_bytes_out = it->bytes_out;
    }
    return HERD_OK;
}

/* ------------------------------------------------------------ conversion */

struct convert_job {
    const struct in_tensor *it;
    size_t n_per_row, row_bytes_in, row_bytes_out;
    size_t rows_per_matrix; /* ne[1]: each matrix (ne[2] index) has its own imatrix slice */
    const uint8_t *in;
    uint8_t *out;
    float *scratch; /* n_per_row floats per thread */
};

static void convert_rows(void *ctx, int ith, size_t begin, size_t end) {
    const struct convert_job *j = ctx;
    float *row = j->scratch + (size_t)ith * j->n_per_row;
    const enum herd_ggml_type tin = j->it->t->type;
    for (size_t r = begin; r < end; r++) {
        const uint8_t *src = j->in + r * j->row_bytes_in;
        const float *x = row;
        if (tin == HERD_GGML_TYPE_F32 && (uintptr_t)src % sizeof(float) == 0)
            x = (const float *)(const void *)src;
        else
            herd_dequantize_row_ref(tin, src, row, j->n_per_row);
        const float *qw = j->it->imatrix ? j->it->imatrix + (r / j->rows_per_matrix) * j->n_per_row : NULL;
        herd_quantize_rows(j->it->type_out, x, j->out + r * j->row_bytes_out, 1, j->n_per_row, qw);
    }
}

/* Rows per grain: ggml hands out chunks of at least 32 x 512 values, enough
 * work per hand-off that the pool's bookkeeping does not show. */
#define MIN_CHUNK_VALUES (32 * 512)

static enum herd_status write_kvs(const struct herd_quantize_params *p, const struct plan *pl,
                                  struct herd_gguf_writer *w, struct herd_error *err) {
    enum herd_status rc;
    const bool with_im = pl->im != NULL;
    const bool with_dataset = with_im && pl->im->dataset && pl->im->dataset[0];
    const bool with_chunks = with_im && pl->im->chunks > 0;
    for (size_t i = 0; i < herd_gguf_n_kv(pl->in); i++) {
        const struct herd_gguf_kv *kv = herd_gguf_kv_at(pl->in, i);
        /* keys llama-quantize sets (removed here, appended below) or drops */
        if (herd_gguf_str_eq(kv->key, "general.quantization_version") ||
            herd_gguf_str_eq(kv->key, "general.file_type") || herd_gguf_str_eq(kv->key, "split.no") ||
            herd_gguf_str_eq(kv->key, "split.count") || herd_gguf_str_eq(kv->key, "split.tensors.count") ||
            (with_im && herd_gguf_str_eq(kv->key, "quantize.imatrix.file")) ||
            (with_dataset && herd_gguf_str_eq(kv->key, "quantize.imatrix.dataset")) ||
            (with_im && herd_gguf_str_eq(kv->key, "quantize.imatrix.entries_count")) ||
            (with_chunks && herd_gguf_str_eq(kv->key, "quantize.imatrix.chunks_count")))
            continue;
        if ((rc = herd_gguf_writer_add_kv_copy(w, kv, err)) != HERD_OK) return rc;
    }
    if ((rc = herd_gguf_writer_add_u32(w, "general.quantization_version", QUANTIZATION_VERSION, err)) != HERD_OK)
        return rc;
    if ((rc = herd_gguf_writer_add_u32(w, "general.file_type", (uint32_t)p->ftype, err)) != HERD_OK) return rc;
    if (!with_im) return HERD_OK;
    char buf[IMATRIX_KV_MAX_BYTES + 1];
    snprintf(buf, sizeof buf, "%s", p->imatrix_path);
    if ((rc = herd_gguf_writer_add_string(w, "quantize.imatrix.file", buf, err)) != HERD_OK) return rc;
    if (with_dataset) {
        snprintf(buf, sizeof buf, "%s", pl->im->dataset);
        if ((rc = herd_gguf_writer_add_string(w, "quantize.imatrix.dataset", buf, err)) != HERD_OK) return rc;
    }
    if ((rc = herd_gguf_writer_add_i32(w, "quantize.imatrix.entries_count", (int32_t)pl->im->n_entries, err)) !=
        HERD_OK)
        return rc;
    if (with_chunks &&
        (rc = herd_gguf_writer_add_i32(w, "quantize.imatrix.chunks_count", pl->im->chunks, err)) != HERD_OK)
        return rc;
    return HERD_OK;
}

enum herd_status herd_quantize_model(const struct herd_quantize_params *p, struct herd_quantize_stats *stats,
                                     struct herd_error *err) {
    struct plan pl = {0};
    struct herd_gguf_writer *w = NULL;
    struct herd_pool *pool = NULL;
    uint8_t *out = NULL;
    float *scratch = NULL;
    struct herd_quantize_stats st = {0};
    const double t0 = herd_time_now_s();
    enum herd_status rc = make_plan(p, &pl, err);
    if (rc != HERD_OK) goto out;

    const int n_threads = p->n_threads > 0 ? p->n_threads : herd_cpu_count();
    pool = herd_pool_create(n_threads);
    if (!pool) {
        rc = herd_error_set(err, HERD_E_NOMEM, "cannot start %d threads", n_threads);
        goto out;
    }
    if (pl.max_bytes_out > SIZE_MAX) {
        rc = herd_error_set(err, HERD_E_OVERFLOW, "a tensor of %llu bytes does not fit in memory",
                            (unsigned long long)pl.max_bytes_out);
        goto out;
    }
    size_t scratch_n;
    if (!herd_mul_size(pl.max_row ? pl.max_row : 1, (size_t)n_threads, &scratch_n)) {
        rc = herd_error_set(err, HERD_E_OVERFLOW, "row scratch overflows");
        goto out;
    }
    out = malloc(pl.max_bytes_out ? (size_t)pl.max_bytes_out : 1);
    scratch = malloc(scratch_n * sizeof *scratch);
    if (!out || !scratch) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory for a tensor of %llu bytes",
                            (unsigned long long)pl.max_bytes_out);
        goto out;
    }

    w = herd_gguf_writer_create();
    if (!w) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = write_kvs(p, &pl, w, err)) != HERD_OK) goto out;
    for (size_t i = 0; i < pl.n; i++) {
        const struct in_tensor *it = &pl.tensors[i];
        if ((rc = herd_gguf_writer_add_tensor(w, it->name, it->type_out, it->n_dims_out, it->t->ne, err)) != HERD_OK)
            goto out;
    }
    if ((rc = herd_gguf_writer_begin(w, p->out_path, err)) != HERD_OK) goto out;

    for (size_t i = 0; i < pl.n; i++) {
        const struct in_tensor *it = &pl.tensors[i];
        const struct herd_gguf_tensor *t = it->t;
        /* llama.cpp checks every tensor it loads (check_tensors): no NaN or infinity */
        if (herd_quantize_rows_supported(t->type) && !herd_quantize_rows_valid(t->type, t->data, (size_t)t->n_bytes)) {
            rc = herd_error_set(err, HERD_E_FORMAT, "%s: tensor %s holds NaN or infinite values", p->in_path, it->name);
            goto out;
        }
        const void *data = t->data;
        if (it->convert) {
            const size_t n_per_row = (size_t)t->ne[0], n_rows = (size_t)(t->n_elems / t->ne[0]);
            struct convert_job job = {
                .it = it,
                .n_per_row = n_per_row,
                .row_bytes_in = (size_t)(t->n_bytes / n_rows),
                .row_bytes_out = (size_t)(it->bytes_out / n_rows),
                .rows_per_matrix = (size_t)t->ne[1],
                .in = t->data,
                .out = out,
                .scratch = scratch,
            };
            const size_t grain = n_per_row >= MIN_CHUNK_VALUES ? 1 : (MIN_CHUNK_VALUES + n_per_row - 1) / n_per_row;
            herd_pool_run_split(pool, n_rows, grain, convert_rows, &job);
            if (!herd_quantize_rows_valid(it->type_out, out, (size_t)it->bytes_out)) {
                rc = herd_error_set(err, HERD_E_INVALID,
                                    "tensor %s: quantized to %s it holds NaN or infinite scales (as llama-quantize, "
                                    "herd refuses to write them; an importance matrix of zeros does this)",
                                    it->name, herd_ggml_type_info(it->type_out)->name);
                goto out;
            }
            data = out;
            st.n_quantized++;
            st.n_fallback += it->fallback;
            st.n_imatrix += it->imatrix && takes_imatrix(it->type_out);
        }
        if ((rc = herd_gguf_writer_put_tensor_data(w, data, it->bytes_out, err)) != HERD_OK) goto out;
        st.n_tensors++;
        st.n_elems += t->n_elems;
        st.bytes_in += t->n_bytes;
        st.bytes_out += it->bytes_out;
        if (p->progress) {
            const struct herd_quantize_event ev = {
                .index = i + 1,
                .n_tensors = pl.n,
                .name = it->name,
                .type_in = t->type,
                .type_out = it->type_out,
                .fallback = it->convert && it->fallback,
                .imatrix_used = it->convert && it->imatrix && takes_imatrix(it->type_out),
                .bytes_in = t->n_bytes,
                .bytes_out = it->bytes_out,
                .bytes_out_total = st.bytes_out,
            };
            p->progress(p->progress_ctx, &ev);
        }
    }
    if ((rc = herd_gguf_writer_finish(w, err)) != HERD_OK) goto out;
    st.file_bytes_in = herd_gguf_file_size(pl.in);
    struct stat sb;
    if (stat(p->out_path, &sb) == 0) st.file_bytes_out = (uint64_t)sb.st_size;
    st.seconds = herd_time_now_s() - t0;
    if (stats) *stats = st;
out:
    herd_gguf_writer_destroy(w);
    herd_pool_destroy(pool);
    free(out);
    free(scratch);
    free(pl.tensors);
    herd_gguf_destroy(pl.in);
    herd_imatrix_destroy(pl.im);
    return rc;
}
