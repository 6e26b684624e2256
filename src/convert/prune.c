/* `herd prune`: Block Influence collection and the GGUF rewrite that
 * removes layers; the activation collector, channel / head-group scoring
 * and the row / column rewrite of --ffn-keep and --heads-keep (the
 * methods and the file rules are in prune.h). */
#include "convert/prune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/assert.h"
#include "base/checked.h"
#include "base/cpu.h"
#include "base/pool.h"
#include "kernels/quant.h"
#include "kernels/quantize_k.h"
#include "model/model_desc.h"

/* ------------------------------------------------------------ Block Influence */

struct herd_prune_bi {
    uint32_t n_layer, n_embd, max_tokens;
    double *sum;     /* [n_layer]: sum over tokens of 1 - cos(h_l, h_{l+1}) */
    uint64_t *count; /* [n_layer]: tokens summed */
    float *prev;     /* [max_tokens][n_embd]: the residual entering the layer observed last */
    uint32_t next;   /* the layer the next call should be, after layer 0 */
    size_t n_prev;   /* rows in prev */
};

struct herd_prune_bi *herd_prune_bi_create(uint32_t n_layer, uint32_t n_embd, uint32_t max_tokens) {
    struct herd_prune_bi *bi = calloc(1, sizeof *bi);
    size_t n;
    if (!bi || !herd_mul_size(max_tokens ? max_tokens : 1, n_embd ? n_embd : 1, &n)) {
        free(bi);
        return NULL;
    }
    bi->n_layer = n_layer;
    bi->n_embd = n_embd;
    bi->max_tokens = max_tokens;
    bi->sum = calloc(n_layer ? n_layer : 1, sizeof *bi->sum);
    bi->count = calloc(n_layer ? n_layer : 1, sizeof *bi->count);
    bi->prev = malloc(n * sizeof *bi->prev);
    bi->next = 0;
    if (!bi->sum || !bi->count || !bi->prev) {
        herd_prune_bi_destroy(bi);
        return NULL;
    }
    return bi;
}

void herd_prune_bi_destroy(struct herd_prune_bi *bi) {
    if (!bi) return;
    free(bi->sum);
    free(bi->count);
    free(bi->prev);
    free(bi);
}

/* 1 - cos(a, b) in double. */
static double one_minus_cos(const float *a, const float *b, size_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    if (aa == 0 && bb == 0) return 0;
    if (aa == 0 || bb == 0) return 1;
    const double r = 1.0 - ab / (sqrt(aa) * sqrt(bb));
    return r > 0 ? r : 0; /* rounding can put cos a hair above 1 */
}

void herd_prune_bi_observe(void *ctx, uint32_t layer, const float *x, size_t x_stride, size_t n_tokens) {
    struct herd_prune_bi *bi = ctx;
    const size_t E = bi->n_embd;
    /* herd_decode calls layers 0 .. n_layer in order, with the same rows;
     * a batch larger than the collector was made for is a caller bug */
    HERD_ASSERT(n_tokens <= bi->max_tokens && layer <= bi->n_layer && (layer == 0 || layer == bi->next));
    HERD_ASSERT(layer == 0 || n_tokens == bi->n_prev);
    if (layer > 0) {
        double s = 0;
        for (size_t t = 0; t < n_tokens; t++) s += one_minus_cos(bi->prev + t * E, x + t * x_stride, E);
        bi->sum[layer - 1] += s;
        bi->count[layer - 1] += n_tokens;
    }
    for (size_t t = 0; t < n_tokens; t++) memcpy(bi->prev + t * E, x + t * x_stride, E * sizeof *x);
    bi->n_prev = n_tokens;
    bi->next = layer + 1;
}

uint64_t herd_prune_bi_scores(const struct herd_prune_bi *bi, double *scores) {
    uint64_t n = 0;
    for (uint32_t l = 0; l < bi->n_layer; l++) {
        scores[l] = bi->count[l] ? bi->sum[l] / (double)bi->count[l] : 0;
        if (l == 0 || bi->count[l] < n) n = bi->count[l];
    }
    return n;
}

void herd_prune_rank(const double *scores, uint32_t n_layer, uint32_t *order) {
    /* insertion sort: stable (ties keep the lower index first), no
     * allocation, and n_layer <= HERD_MAX_LAYERS keeps n^2 small */
    for (uint32_t l = 0; l < n_layer; l++) {
        uint32_t k = l;
        for (; k > 0 && scores[order[k - 1]] > scores[l]; k--) order[k] = order[k - 1];
        order[k] = l;
    }
}

/* ------------------------------------------------------------ the model */

/* Keys under "<arch>." that llama.cpp reads as a scalar or an array of one
 * entry per layer (llama_model_loader::get_key_or_arr, and the sliding
 * pattern of later releases). */
static const char *const kPerLayerKeys[] = {
    "attention.head_count",
    "attention.head_count_kv",
    "feed_forward_length",
    "attention.sliding_window_pattern",
};
#define N_PER_LAYER_KEYS (sizeof kPerLayerKeys / sizeof kPerLayerKeys[0])

enum herd_status herd_prune_model_info_read(const struct herd_gguf *g, struct herd_prune_model_info *info,
                                            struct herd_error *err) {
    memset(info, 0, sizeof *info);
    struct herd_gguf_str arch;
    enum herd_status rc = herd_gguf_get_string(g, "general.architecture", &arch, err);
    if (rc != HERD_OK) return rc;
    if (arch.len == 0 || arch.len >= sizeof info->arch || memchr(arch.ptr, '\0', arch.len))
        return herd_error_set(err, HERD_E_FORMAT, "general.architecture is not a plain name");
    memcpy(info->arch, arch.ptr, arch.len);
    if (!herd_model_arch_info(info->arch))
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "architecture '%s' is not one herd runs, so herd cannot tell which of its tensors and "
                              "keys belong to a layer; it prunes llama, qwen2, qwen3, phi3, qwen2moe and qwen3moe "
                              "(and the FFNs of gemma2 and gemma3)",
                              info->arch);
    uint64_t v;
    /* a shard holds some of the tensors: renumbering it alone would break the set */
    if (herd_gguf_find_kv(g, "split.count") && herd_gguf_get_uint(g, "split.count", UINT32_MAX, &v, NULL) == HERD_OK &&
        v > 1)
        return herd_error_set(err, HERD_E_UNSUPPORTED, "the file is one of %llu split files; merge them first",
                              (unsigned long long)v);
    char key[96];
    snprintf(key, sizeof key, "%s.block_count", info->arch);
    if ((rc = herd_gguf_get_uint(g, key, HERD_MAX_LAYERS, &v, err)) != HERD_OK) return rc;
    if (v == 0) return herd_error_set(err, HERD_E_INVALID, "%s is 0", key);
    info->n_layer = (uint32_t)v;
    snprintf(key, sizeof key, "%s.embedding_length", info->arch);
    if ((rc = herd_gguf_get_uint(g, key, HERD_MAX_EMBD, &v, err)) != HERD_OK) return rc;
    info->n_embd = (uint32_t)v;
    return HERD_OK;
}

enum herd_status herd_prune_model_check(const struct herd_gguf *g, struct herd_prune_model_info *info,
                                        struct herd_error *err) {
    enum herd_status rc = herd_prune_model_info_read(g, info, err);
    if (rc != HERD_OK) return rc;
    const struct herd_arch_info *a = herd_model_arch_info(info->arch);
    if (a->gemma)
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "architecture '%s' cannot be pruned by layers: its sliding-window and global attention "
                              "layers follow the layer index (global when (i + 1) %% %u == 0), which neither herd nor "
                              "llama.cpp reads from the file, so removing a layer would change the kind of every "
                              "later one; llama.cpp also derives Gemma's query scale and model type from the layer "
                              "count",
                              info->arch, a->swa_period ? a->swa_period : 1);
    return HERD_OK;
}

/* What happens to one metadata entry. */
enum kv_action { KV_COPY, KV_BLOCK_COUNT, KV_PER_LAYER };

/* The key's part after "<arch>.", or NULL when it is not under arch. */
static const char *arch_suffix(struct herd_gguf_str key, const char *arch, char *buf, size_t cap) {
    const size_t n = strlen(arch);
    if (key.len <= n + 1 || key.len - n - 1 >= cap || memcmp(key.ptr, arch, n) != 0 || key.ptr[n] != '.' ||
        memchr(key.ptr, '\0', key.len)) /* a key with a NUL is copied, and the writer refuses it */
        return NULL;
    memcpy(buf, key.ptr + n + 1, key.len - n - 1);
    buf[key.len - n - 1] = '\0';
    return buf;
}

static enum herd_status classify_kv(const struct herd_gguf_kv *kv, const struct herd_prune_model_info *info,
                                    enum kv_action *out, struct herd_error *err) {
    char buf[HERD_GGUF_MAX_KEY_BYTES + 1];
    const char *sfx = arch_suffix(kv->key, info->arch, buf, sizeof buf);
    *out = KV_COPY;
    if (!sfx) return HERD_OK;
    if (strcmp(sfx, "block_count") == 0) {
        *out = KV_BLOCK_COUNT;
        return HERD_OK;
    }
    if (kv->type != HERD_GGUF_VTYPE_ARRAY) return HERD_OK;
    bool per_layer = false;
    for (size_t i = 0; i < N_PER_LAYER_KEYS; i++) per_layer |= strcmp(sfx, kPerLayerKeys[i]) == 0;
    if (per_layer) {
        if (kv->v.arr.count != info->n_layer || herd_gguf_vtype_size(kv->v.arr.type) == 0)
            return herd_error_set(err, HERD_E_FORMAT, "%s.%s holds %llu %s values; expected one number per layer (%u)",
                                  info->arch, sfx, (unsigned long long)kv->v.arr.count,
                                  herd_gguf_vtype_name(kv->v.arr.type), info->n_layer);
        *out = KV_PER_LAYER;
        return HERD_OK;
    }
    if (kv->v.arr.count == info->n_layer)
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "%s.%s is an array of %u entries, as many as layers; herd does not know whether it is "
                              "per layer, so it cannot prune this file",
                              info->arch, sfx, info->n_layer);
    return HERD_OK;
}

/* "blk.N.rest": N into *layer and the offset of "rest"; false for other names. */
static bool layer_of(struct herd_gguf_str name, uint32_t *layer, size_t *rest) {
    if (name.len < 6 || memcmp(name.ptr, "blk.", 4) != 0) return false;
    uint64_t n = 0;
    size_t i = 4;
    for (; i < name.len && name.ptr[i] >= '0' && name.ptr[i] <= '9' && i < 14; i++)
        n = n * 10 + (uint64_t)(name.ptr[i] - '0');
    if (i == 4 || i >= name.len || name.ptr[i] != '.' || n > UINT32_MAX) return false;
    *layer = (uint32_t)n;
    *rest = i + 1;
    return true;
}

/* ------------------------------------------------------------ the rewrite */

static enum herd_status write_kv(struct herd_gguf_writer *w, const struct herd_gguf_kv *kv, enum kv_action action,
                                 const struct herd_prune_params *p, uint32_t n_keep, struct herd_error *err) {
    char key[HERD_GGUF_MAX_KEY_BYTES + 1];
    if (action == KV_COPY) return herd_gguf_writer_add_kv_copy(w, kv, err);
    HERD_ASSERT(kv->key.len <= HERD_GGUF_MAX_KEY_BYTES); /* the reader's bound; NULs: classify_kv's arch_suffix */
    memcpy(key, kv->key.ptr, kv->key.len);
    key[kv->key.len] = '\0';
    if (action == KV_BLOCK_COUNT) {
        switch (kv->type) {
        case HERD_GGUF_VTYPE_U64: return herd_gguf_writer_add_u64(w, key, n_keep, err);
        case HERD_GGUF_VTYPE_I32: return herd_gguf_writer_add_i32(w, key, (int32_t)n_keep, err);
        default: return herd_gguf_writer_add_u32(w, key, n_keep, err);
        }
    }
    /* KV_PER_LAYER: the kept layers' entries, in the same element type */
    const size_t es = herd_gguf_vtype_size(kv->v.arr.type);
    uint8_t *vals = malloc((size_t)n_keep * es);
    if (!vals) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    size_t k = 0;
    for (uint32_t l = 0; l < p->n_layer; l++)
        if (!p->drop[l]) memcpy(vals + es * k++, kv->v.arr.data + es * l, es);
    enum herd_status rc = herd_gguf_writer_add_array(w, key, kv->v.arr.type, n_keep, vals, err);
    free(vals);
    return rc;
}

enum herd_status herd_prune_layers(const struct herd_prune_params *p, struct herd_prune_stats *stats,
                                   struct herd_error *err) {
    struct herd_gguf *g = NULL;
    struct herd_gguf_writer *w = NULL;
    enum kv_action *actions = NULL;
    uint32_t *new_index = NULL;
    struct herd_prune_stats st = {0};
    struct herd_prune_model_info info;
    enum herd_status rc = herd_gguf_open_file(p->in_path, &g, err);
    if (rc != HERD_OK) goto out;
    if ((rc = herd_prune_model_check(g, &info, err)) != HERD_OK) {
        herd_error_prefix(err, "%s", p->in_path);
        goto out;
    }
    if (info.n_layer != p->n_layer) {
        rc = herd_error_set(err, HERD_E_INVALID, "%s has %u layers; the removal list is for %u", p->in_path,
                            info.n_layer, p->n_layer);
        goto out;
    }
    new_index = malloc(info.n_layer * sizeof *new_index);
    if (!new_index) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    uint32_t n_keep = 0;
    for (uint32_t l = 0; l < info.n_layer; l++) new_index[l] = p->drop[l] ? UINT32_MAX : n_keep++;
    if (n_keep == 0 || n_keep == info.n_layer) {
        rc = herd_error_set(err, HERD_E_INVALID, "%s: removing %u of its %u layers; at least one must go and one stay",
                            p->in_path, info.n_layer - n_keep, info.n_layer);
        goto out;
    }

    /* the plan: every key's and tensor's fate, checked before the output exists */
    const size_t n_kv = herd_gguf_n_kv(g), n_t = herd_gguf_n_tensors(g);
    actions = malloc((n_kv ? n_kv : 1) * sizeof *actions);
    if (!actions) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_kv; i++)
        if ((rc = classify_kv(herd_gguf_kv_at(g, i), &info, &actions[i], err)) != HERD_OK) {
            herd_error_prefix(err, "%s", p->in_path);
            goto out;
        }
    w = herd_gguf_writer_create();
    if (!w) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_kv; i++)
        if ((rc = write_kv(w, herd_gguf_kv_at(g, i), actions[i], p, n_keep, err)) != HERD_OK) goto out;
    st.n_layer_in = info.n_layer;
    st.n_layer_out = n_keep;
    st.n_tensors_in = n_t;
    for (size_t i = 0; i < n_t; i++) {
        const struct herd_gguf_tensor *t = herd_gguf_tensor_at(g, i);
        char name[HERD_GGUF_MAX_TENSOR_NAME_BYTES + 16];
        uint32_t layer;
        size_t rest;
        st.bytes_in += t->n_bytes;
        if (t->name.len > HERD_GGUF_MAX_TENSOR_NAME_BYTES || memchr(t->name.ptr, '\0', t->name.len)) {
            rc = herd_error_set(err, HERD_E_FORMAT, "%s: tensor %zu has a name herd cannot copy", p->in_path, i);
            goto out;
        }
        if (layer_of(t->name, &layer, &rest)) {
            if (layer >= info.n_layer) {
                rc = herd_error_set(err, HERD_E_FORMAT, "%s: tensor %.*s is of layer %u; the file has %u layers",
                                    p->in_path, (int)t->name.len, t->name.ptr, layer, info.n_layer);
                goto out;
            }
            if (p->drop[layer]) continue;
            snprintf(name, sizeof name, "blk.%u.%.*s", new_index[layer], (int)(t->name.len - rest), t->name.ptr + rest);
        } else {
            snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        }
        if ((rc = herd_gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, err)) != HERD_OK) goto out;
        st.n_tensors_out++;
        st.bytes_out += t->n_bytes;
    }
    if ((rc = herd_gguf_writer_begin(w, p->out_path, err)) != HERD_OK) goto out;
    for (size_t i = 0; i < n_t; i++) {
        const struct herd_gguf_tensor *t = herd_gguf_tensor_at(g, i);
        uint32_t layer;
        size_t rest;
        if (layer_of(t->name, &layer, &rest) && p->drop[layer]) continue;
        if ((rc = herd_gguf_writer_put_tensor_data(w, t->data, t->n_bytes, err)) != HERD_OK) goto out;
    }
    if ((rc = herd_gguf_writer_finish(w, err)) != HERD_OK) goto out;
    st.file_bytes_in = herd_gguf_file_size(g);
    struct stat sb;
    if (stat(p->out_path, &sb) == 0) st.file_bytes_out = (uint64_t)sb.st_size;
    if (stats) *stats = st;
out:
    herd_gguf_writer_destroy(w);
    herd_gguf_destroy(g);
    free(actions);
    free(new_index);
    return rc;
}

/* ------------------------------------------------------------ FFN channels */

struct herd_prune_acts {
    enum herd_matrix_role role;
    uint32_t n_layer;
    uint32_t *n_ff;     /* [n_layer] */
    double **abs_sum;   /* [n_layer][n_ff[l]]: sum of |a_j| */
    double **sq_sum;    /* [n_layer][n_ff[l]]: sum of a_j^2 */
    uint64_t *n_tokens; /* [n_layer] */
};

struct herd_prune_acts *herd_prune_acts_create(enum herd_matrix_role role, const uint32_t *n_ff, uint32_t n_layer) {
    struct herd_prune_acts *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->role = role;
    f->n_layer = n_layer;
    f->n_ff = calloc(n_layer, sizeof *f->n_ff);
    f->abs_sum = calloc(n_layer, sizeof *f->abs_sum);
    f->sq_sum = calloc(n_layer, sizeof *f->sq_sum);
    f->n_tokens = calloc(n_layer, sizeof *f->n_tokens);
    if (!f->n_ff || !f->abs_sum || !f->sq_sum || !f->n_tokens) goto fail;
    for (uint32_t l = 0; l < n_layer; l++) {
        f->n_ff[l] = n_ff[l];
        f->abs_sum[l] = calloc(n_ff[l] ? n_ff[l] : 1, sizeof **f->abs_sum);
        f->sq_sum[l] = calloc(n_ff[l] ? n_ff[l] : 1, sizeof **f->sq_sum);
        if (!f->abs_sum[l] || !f->sq_sum[l]) goto fail;
    }
    return f;
fail:
    herd_prune_acts_destroy(f);
    return NULL;
}

void herd_prune_acts_destroy(struct herd_prune_acts *f) {
    if (!f) return;
    for (uint32_t l = 0; f->abs_sum && l < f->n_layer; l++) free(f->abs_sum[l]);
    for (uint32_t l = 0; f->sq_sum && l < f->n_layer; l++) free(f->sq_sum[l]);
    free(f->abs_sum);
    free(f->sq_sum);
    free(f->n_ff);
    free(f->n_tokens);
    free(f);
}

void herd_prune_acts_observe(void *ctx, uint32_t layer, enum herd_matrix_role role, const float *x, size_t x_stride,
                             size_t n_tokens) {
    struct herd_prune_acts *f = ctx;
    if (role != f->role || layer >= f->n_layer) return;
    const uint32_t F = f->n_ff[layer];
    double *as = f->abs_sum[layer], *sq = f->sq_sum[layer];
    for (size_t t = 0; t < n_tokens; t++) {
        const float *row = x + t * x_stride;
        for (uint32_t j = 0; j < F; j++) as[j] += fabs((double)row[j]), sq[j] += (double)row[j] * row[j];
    }
    f->n_tokens[layer] += n_tokens;
}

/* Channels are kept in multiples of this: the K-quants' block (QK_K), so
 * ffn_down's shortened rows still split into any type's blocks. */
#define FFN_KEEP_MULTIPLE 256u

uint32_t herd_prune_ffn_kept(uint32_t n_ff, double keep) {
    if (n_ff <= FFN_KEEP_MULTIPLE) return n_ff;
    double k = floor(keep * n_ff / FFN_KEEP_MULTIPLE + 0.5) * FFN_KEEP_MULTIPLE;
    if (k < FFN_KEEP_MULTIPLE) k = FFN_KEEP_MULTIPLE;
    return k >= n_ff ? n_ff : (uint32_t)k;
}

/* blk.<l>.<suffix>, or NULL. */
static const struct herd_gguf_tensor *layer_tensor(const struct herd_gguf *g, uint32_t l, const char *suffix) {
    char name[96];
    snprintf(name, sizeof name, "blk.%u.%s", l, suffix);
    return herd_gguf_find_tensor(g, name);
}

enum herd_status herd_prune_ffn_check(const struct herd_gguf *g, const struct herd_prune_model_info *info,
                                      uint32_t *n_ff, struct herd_error *err) {
    char key[96];
    snprintf(key, sizeof key, "%s.expert_count", info->arch);
    uint64_t n_expert = 0;
    if (herd_gguf_find_kv(g, key) && herd_gguf_get_uint(g, key, UINT32_MAX, &n_expert, NULL) == HERD_OK && n_expert > 0)
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "%s has mixture-of-experts FFNs (%s = %llu); --ffn-keep prunes dense FFNs only",
                              info->arch, key, (unsigned long long)n_expert);
    const struct herd_arch_info *a = herd_model_arch_info(info->arch);
    for (uint32_t l = 0; l < info->n_layer; l++) {
        const struct herd_gguf_tensor *gate = layer_tensor(g, l, "ffn_gate.weight");
        const struct herd_gguf_tensor *up = layer_tensor(g, l, "ffn_up.weight");
        const struct herd_gguf_tensor *down = layer_tensor(g, l, "ffn_down.weight");
        const bool fused = !gate && a && a->fused_gate_up;
        if (!up || !down || (!gate && !fused) || down->n_dims != 2 || up->n_dims != 2)
            return herd_error_set(err, HERD_E_FORMAT, "layer %u: ffn_gate, ffn_up and ffn_down (2-D) are expected", l);
        const uint64_t F = down->ne[0], E = down->ne[1];
        if (F == 0 || F > HERD_MAX_FF || up->ne[0] != E || up->ne[1] != (fused ? 2 * F : F) ||
            (gate && (gate->n_dims != 2 || gate->ne[0] != E || gate->ne[1] != F)))
            return herd_error_set(err, HERD_E_FORMAT,
                                  "layer %u: the FFN's shapes do not agree with ffn_down's [%llu, %llu]", l,
                                  (unsigned long long)F, (unsigned long long)E);
        const struct herd_gguf_tensor *ts[3] = {gate, up, down};
        for (int i = 0; i < 3; i++)
            if (ts[i] && (!herd_ggml_type_info(ts[i]->type) || !herd_ggml_type_info(ts[i]->type)->computed ||
                          !herd_quantize_rows_supported(ts[i]->type)))
                return herd_error_set(err, HERD_E_UNSUPPORTED, "tensor %.*s has type %s, which herd cannot rewrite",
                                      (int)ts[i]->name.len, ts[i]->name.ptr,
                                      herd_ggml_type_info(ts[i]->type) ? herd_ggml_type_info(ts[i]->type)->name : "?");
        n_ff[l] = (uint32_t)F;
    }
    return HERD_OK;
}

/* One layer's plan. */
struct ffn_layer {
    uint32_t n_ff, n_keep;
    uint32_t *keep;    /* [n_keep] ascending channel indices */
    float *importance; /* [n_keep]: mean a^2 of the kept channels, for requantizing ffn_down */
};

/* A channel (or head group) and its score, sorted best first (ties: the
 * lower index), then the kept ones back into index order. */
struct scored {
    double score;
    uint32_t index;
};

static int by_score_desc(const void *a, const void *b) {
    const struct scored *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int by_index(const void *a, const void *b) {
    const uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    return i < j ? -1 : i > j;
}

/* The n_keep best of sc[n] (reordered) into keep[n_keep], ascending. */
static void keep_best(struct scored *sc, uint32_t n, uint32_t n_keep, uint32_t *keep) {
    qsort(sc, n, sizeof *sc, by_score_desc);
    for (uint32_t k = 0; k < n_keep; k++) keep[k] = sc[k].index;
    qsort(keep, n_keep, sizeof *keep, by_index);
}

/* Euclidean norm of each of t's rows [row0, row0 + n) into out (added). */
static void row_norms(const struct herd_gguf_tensor *t, uint64_t row0, uint64_t n, float *scratch, double *out) {
    const size_t cols = (size_t)t->ne[0], row_bytes = (size_t)(t->n_bytes / t->ne[1]);
    for (uint64_t r = 0; r < n; r++) {
        herd_dequantize_row_ref(t->type, (const uint8_t *)t->data + (row0 + r) * row_bytes, scratch, cols);
        double s = 0;
        for (size_t i = 0; i < cols; i++) s += (double)scratch[i] * scratch[i];
        out[r] += sqrt(s);
    }
}

/* Picks layer l's channels by score (see prune.h). */
static enum herd_status plan_layer(const struct herd_gguf *g, uint32_t l, const struct herd_prune_acts *acts,
                                   double keep, struct ffn_layer *fl, struct herd_error *err) {
    const struct herd_gguf_tensor *gate = layer_tensor(g, l, "ffn_gate.weight");
    const struct herd_gguf_tensor *up = layer_tensor(g, l, "ffn_up.weight");
    const struct herd_gguf_tensor *down = layer_tensor(g, l, "ffn_down.weight");
    const uint32_t F = (uint32_t)down->ne[0];
    const size_t E = (size_t)down->ne[1];
    fl->n_ff = F;
    fl->n_keep = herd_prune_ffn_kept(F, keep);
    fl->keep = malloc(F * sizeof *fl->keep);
    fl->importance = malloc(F * sizeof *fl->importance);
    double *wnorm = calloc(F, sizeof *wnorm), *col = calloc(F, sizeof *col);
    struct scored *score = malloc(F * sizeof *score);
    const size_t scratch_n = (size_t)F > E ? (size_t)F : E;
    float *scratch = malloc(scratch_n * sizeof *scratch);
    enum herd_status rc = HERD_OK;
    if (!fl->keep || !fl->importance || !wnorm || !score || !col || !scratch) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory for layer %u's FFN (%u channels)", l, F);
        goto out;
    }
    if (acts->n_ff[l] != F || acts->n_tokens[l] == 0) {
        rc =
            herd_error_set(err, HERD_E_INVALID, "layer %u: no activations of its %u FFN channels were collected", l, F);
        goto out;
    }
    if (gate) {
        row_norms(gate, 0, F, scratch, wnorm);
        row_norms(up, 0, F, scratch, wnorm);
    } else { /* phi3: gate rows, then up rows, in ffn_up */
        row_norms(up, 0, F, scratch, wnorm);
        row_norms(up, F, F, scratch, wnorm);
    }
    const size_t down_row_bytes = (size_t)(down->n_bytes / E);
    for (size_t r = 0; r < E; r++) { /* ffn_down's columns: squares summed down its rows */
        herd_dequantize_row_ref(down->type, (const uint8_t *)down->data + r * down_row_bytes, scratch, F);
        for (uint32_t j = 0; j < F; j++) col[j] += (double)scratch[j] * scratch[j];
    }
    const double n = (double)acts->n_tokens[l];
    for (uint32_t j = 0; j < F; j++) score[j] = (struct scored){acts->abs_sum[l][j] / n * (wnorm[j] + sqrt(col[j])), j};
    keep_best(score, F, fl->n_keep, fl->keep);
    for (uint32_t k = 0; k < fl->n_keep; k++) fl->importance[k] = (float)(acts->sq_sum[l][fl->keep[k]] / n);
out:
    free(wnorm);
    free(score);
    free(col);
    free(scratch);
    return rc;
}

/* ------------------------------------------------------------ tensor edits */

/* What one output tensor is: the input's, or some of its rows (whole rows,
 * byte for byte; elements of a 1-D float tensor), or some of its columns
 * (every row decoded, gathered, encoded again in its type). */
struct tensor_edit {
    const struct herd_gguf_tensor *t;
    uint64_t ne[HERD_GGUF_MAX_DIMS];
    uint64_t n_bytes;
    const uint32_t *rows; /* [n_rows] ascending, or NULL: all */
    uint32_t n_rows;
    const struct ffn_layer *cols; /* columns cols->keep (of cols->n_ff), or NULL: all */
};

/* Sets e's shape and size for its rows / cols. */
static enum herd_status edit_plan(struct tensor_edit *e, struct herd_error *err) {
    memcpy(e->ne, e->t->ne, sizeof e->ne);
    if (e->rows) e->ne[e->t->n_dims == 1 ? 0 : 1] = e->n_rows;
    if (e->cols) e->ne[0] = e->cols->n_keep;
    const struct herd_ggml_type_info *ti = herd_ggml_type_info(e->t->type);
    if (e->rows && e->t->n_dims == 1 && ti->block_elems != 1)
        return herd_error_set(err, HERD_E_UNSUPPORTED, "tensor %.*s: a 1-D %s tensor cannot be cut",
                              (int)e->t->name.len, e->t->name.ptr, ti->name);
    enum herd_status rc = herd_ggml_tensor_nbytes(e->t->type, e->t->n_dims, e->ne, NULL, &e->n_bytes, err);
    if (rc != HERD_OK) herd_error_prefix(err, "tensor %.*s", (int)e->t->name.len, e->t->name.ptr);
    return rc;
}

/* A matrix's rows with the kept columns only, re-encoded in its type. */
struct cols_job {
    const struct herd_gguf_tensor *t;
    const struct ffn_layer *fl;
    size_t row_bytes_in, row_bytes_out;
    uint8_t *out;
    float *scratch; /* per thread: n_ff + n_keep floats */
};

static void cols_rows(void *ctx, int ith, size_t begin, size_t end) {
    const struct cols_job *j = ctx;
    const uint32_t F = j->fl->n_ff, K = j->fl->n_keep;
    float *row = j->scratch + (size_t)ith * (F + K), *kept = row + F;
    /* F32 / F16 / BF16 come back exactly; block types take the kept
     * columns' activation energy as importance, as an imatrix would give */
    const bool blocks = herd_ggml_type_info(j->t->type)->block_elems > 1;
    for (size_t r = begin; r < end; r++) {
        herd_dequantize_row_ref(j->t->type, (const uint8_t *)j->t->data + r * j->row_bytes_in, row, F);
        for (uint32_t k = 0; k < K; k++) kept[k] = row[j->fl->keep[k]];
        herd_quantize_rows(j->t->type, kept, j->out + r * j->row_bytes_out, 1, K, blocks ? j->fl->importance : NULL);
    }
}

/* Declares every edited tensor on w (its metadata already added), then
 * writes the file: p's output path, temp + rename. */
static enum herd_status write_edits(struct herd_gguf_writer *w, const struct tensor_edit *es, size_t n,
                                    const char *out_path, int n_threads, struct herd_prune_stats *st,
                                    struct herd_error *err) {
    struct herd_pool *pool = NULL;
    uint8_t *buf = NULL;
    float *scratch = NULL;
    size_t max_bytes = 0, max_row = 0;
    enum herd_status rc = HERD_OK;
    for (size_t i = 0; i < n; i++) {
        char name[HERD_GGUF_MAX_TENSOR_NAME_BYTES + 1];
        const struct herd_gguf_tensor *t = es[i].t;
        if (t->name.len >= sizeof name || memchr(t->name.ptr, '\0', t->name.len))
            return herd_error_set(err, HERD_E_FORMAT, "tensor %zu has a name herd cannot copy", i);
        memcpy(name, t->name.ptr, t->name.len);
        name[t->name.len] = '\0';
        if ((rc = herd_gguf_writer_add_tensor(w, name, t->type, t->n_dims, es[i].ne, err)) != HERD_OK) return rc;
        if ((es[i].rows || es[i].cols) && es[i].n_bytes > max_bytes) max_bytes = (size_t)es[i].n_bytes;
        if (es[i].cols && es[i].cols->n_ff + es[i].cols->n_keep > max_row)
            max_row = es[i].cols->n_ff + es[i].cols->n_keep;
    }
    if (n_threads <= 0) n_threads = herd_cpu_count();
    pool = herd_pool_create(n_threads);
    buf = malloc(max_bytes ? max_bytes : 1);
    scratch = malloc((max_row ? max_row : 1) * (size_t)n_threads * sizeof *scratch);
    if (!pool || !buf || !scratch) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory for a tensor of %zu bytes", max_bytes);
        goto out;
    }
    if ((rc = herd_gguf_writer_begin(w, out_path, err)) != HERD_OK) goto out;
    for (size_t i = 0; i < n; i++) {
        const struct tensor_edit *e = &es[i];
        const struct herd_gguf_tensor *t = e->t;
        const void *data = t->data;
        if (e->rows) { /* whole rows (or elements), byte for byte */
            const uint64_t n_in = t->n_dims == 1 ? t->ne[0] : t->ne[1];
            const size_t rb = (size_t)(t->n_bytes / n_in);
            for (uint32_t k = 0; k < e->n_rows; k++)
                memcpy(buf + (size_t)k * rb, (const uint8_t *)t->data + (size_t)e->rows[k] * rb, rb);
            data = buf;
        } else if (e->cols) {
            struct cols_job job = {t,   e->cols, (size_t)(t->n_bytes / t->ne[1]), (size_t)(e->n_bytes / t->ne[1]),
                                   buf, scratch};
            herd_pool_run_split(pool, (size_t)t->ne[1], 16, cols_rows, &job);
            if (!herd_quantize_rows_valid(t->type, buf, (size_t)e->n_bytes)) {
                rc = herd_error_set(err, HERD_E_INVALID, "tensor %.*s: re-encoded it holds NaN or infinite values",
                                    (int)t->name.len, t->name.ptr);
                goto out;
            }
            data = buf;
        }
        if ((rc = herd_gguf_writer_put_tensor_data(w, data, e->n_bytes, err)) != HERD_OK) goto out;
        st->bytes_in += t->n_bytes;
        st->bytes_out += e->n_bytes;
    }
    rc = herd_gguf_writer_finish(w, err);
out:
    herd_pool_destroy(pool);
    free(buf);
    free(scratch);
    return rc;
}

/* A count as a metadata entry: one number when all n agree, else an i32
 * array (the element type llama.cpp's get_key_or_arr accepts for counts). */
static enum herd_status add_counts(struct herd_gguf_writer *w, const char *key, const uint32_t *v, uint32_t n,
                                   struct herd_error *err) {
    bool uniform = true;
    for (uint32_t l = 1; l < n; l++) uniform &= v[l] == v[0];
    if (uniform) return herd_gguf_writer_add_u32(w, key, v[0], err);
    int32_t *a = malloc(n * sizeof *a);
    if (!a) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    for (uint32_t l = 0; l < n; l++) a[l] = (int32_t)v[l];
    enum herd_status rc = herd_gguf_writer_add_array(w, key, HERD_GGUF_VTYPE_I32, n, a, err);
    free(a);
    return rc;
}

/* "<layer rows>": [n_keep] rows of every k of keep, each expanded to the
 * run [k * run, (k + 1) * run), plus offset. */
static void expand_rows(const uint32_t *keep, uint32_t n_keep, uint32_t run, uint32_t offset, uint32_t *out) {
    for (uint32_t k = 0; k < n_keep; k++)
        for (uint32_t i = 0; i < run; i++) out[k * run + i] = offset + keep[k] * run + i;
}

/* ------------------------------------------------------------ --ffn-keep's file */

enum herd_status herd_prune_ffn_write(const struct herd_prune_ffn_params *p, uint32_t *n_ff_out,
                                      struct herd_prune_stats *stats, struct herd_error *err) {
    struct herd_gguf *g = NULL;
    struct herd_gguf_writer *w = NULL;
    struct ffn_layer *fls = NULL;
    struct tensor_edit *es = NULL;
    uint32_t *n_ff = NULL, **fused = NULL;
    struct herd_prune_stats st = {0};
    struct herd_prune_model_info info = {0};
    enum herd_status rc = herd_gguf_open_file(p->in_path, &g, err);
    if (rc != HERD_OK) goto out;
    if ((rc = herd_prune_model_info_read(g, &info, err)) != HERD_OK) {
        herd_error_prefix(err, "%s", p->in_path);
        goto out;
    }
    n_ff = calloc(info.n_layer, sizeof *n_ff);
    fls = calloc(info.n_layer, sizeof *fls);
    fused = calloc(info.n_layer, sizeof *fused);
    if (!n_ff || !fls || !fused) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = herd_prune_ffn_check(g, &info, n_ff, err)) != HERD_OK) {
        herd_error_prefix(err, "%s", p->in_path);
        goto out;
    }
    if (info.n_layer != p->n_layer) {
        rc = herd_error_set(err, HERD_E_INVALID, "%s has %u layers; the fractions are for %u", p->in_path, info.n_layer,
                            p->n_layer);
        goto out;
    }
    /* the plan: every layer's channels, every tensor's shape */
    for (uint32_t l = 0; l < info.n_layer; l++) {
        if ((rc = plan_layer(g, l, p->acts, p->keep[l], &fls[l], err)) != HERD_OK) {
            herd_error_prefix(err, "%s", p->in_path);
            goto out;
        }
        n_ff[l] = fls[l].n_keep;
        if (n_ff_out) n_ff_out[l] = fls[l].n_keep;
    }
    const size_t n_t = herd_gguf_n_tensors(g);
    es = calloc(n_t ? n_t : 1, sizeof *es);
    if (!es) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_t; i++) {
        struct tensor_edit *e = &es[i];
        e->t = herd_gguf_tensor_at(g, i);
        uint32_t l;
        size_t rest;
        if (layer_of(e->t->name, &l, &rest) && l < info.n_layer && fls[l].n_keep < fls[l].n_ff) {
            const struct ffn_layer *fl = &fls[l];
            const struct herd_gguf_str sfx = {e->t->name.ptr + rest, e->t->name.len - rest};
            if (herd_gguf_str_eq(sfx, "ffn_gate.weight")) {
                e->rows = fl->keep, e->n_rows = fl->n_keep;
            } else if (herd_gguf_str_eq(sfx, "ffn_up.weight") && e->t->ne[1] == 2 * (uint64_t)fl->n_ff) {
                /* phi3: gate rows then up rows; row j of both halves */
                if (!(fused[l] = malloc(2 * (size_t)fl->n_keep * sizeof **fused))) {
                    rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
                    goto out;
                }
                expand_rows(fl->keep, fl->n_keep, 1, 0, fused[l]);
                expand_rows(fl->keep, fl->n_keep, 1, fl->n_ff, fused[l] + fl->n_keep);
                e->rows = fused[l], e->n_rows = 2 * fl->n_keep;
            } else if (herd_gguf_str_eq(sfx, "ffn_up.weight")) {
                e->rows = fl->keep, e->n_rows = fl->n_keep;
            } else if (herd_gguf_str_eq(sfx, "ffn_down.weight")) {
                e->cols = fl;
            }
        }
        if ((rc = edit_plan(e, err)) != HERD_OK) {
            herd_error_prefix(err, "%s", p->in_path);
            goto out;
        }
    }
    if (!(w = herd_gguf_writer_create())) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    char ffn_key[96];
    snprintf(ffn_key, sizeof ffn_key, "%s.feed_forward_length", info.arch);
    for (size_t i = 0; i < herd_gguf_n_kv(g); i++) {
        const struct herd_gguf_kv *kv = herd_gguf_kv_at(g, i);
        rc = herd_gguf_str_eq(kv->key, ffn_key) ? add_counts(w, ffn_key, n_ff, info.n_layer, err)
                                                : herd_gguf_writer_add_kv_copy(w, kv, err);
        if (rc != HERD_OK) goto out;
    }
    if ((rc = write_edits(w, es, n_t, p->out_path, p->n_threads, &st, err)) != HERD_OK) goto out;
    st.n_layer_in = st.n_layer_out = info.n_layer;
    st.n_tensors_in = st.n_tensors_out = n_t;
    st.file_bytes_in = herd_gguf_file_size(g);
    struct stat sb;
    if (stat(p->out_path, &sb) == 0) st.file_bytes_out = (uint64_t)sb.st_size;
    if (stats) *stats = st;
out:
    herd_gguf_writer_destroy(w);
    for (uint32_t l = 0; fls && l < info.n_layer; l++) free(fls[l].keep), free(fls[l].importance);
    for (uint32_t l = 0; fused && l < info.n_layer; l++) free(fused[l]);
    free(fls);
    free(fused);
    free(es);
    free(n_ff);
    herd_gguf_destroy(g);
    return rc;
}

/* ------------------------------------------------------------ attention heads */

enum herd_status herd_prune_heads_check(const struct herd_gguf *g, const struct herd_prune_model_info *info,
                                        struct herd_prune_heads_shape *hs, struct herd_error *err) {
    memset(hs, 0, sizeof *hs);
    char key[96];
    const char *keys[2] = {"attention.head_count", "attention.head_count_kv"};
    uint64_t v[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        snprintf(key, sizeof key, "%s.%s", info->arch, keys[i]);
        const struct herd_gguf_kv *kv = herd_gguf_find_kv(g, key);
        if (kv && kv->type == HERD_GGUF_VTYPE_ARRAY)
            return herd_error_set(err, HERD_E_UNSUPPORTED,
                                  "%s is an array (per-layer head counts): --heads-keep needs one count for all layers",
                                  key);
        if (!kv && i == 1) {
            v[1] = v[0];
            break;
        }
        enum herd_status rc = herd_gguf_get_uint(g, key, HERD_MAX_HEADS, &v[i], err);
        if (rc != HERD_OK) return rc;
    }
    if (v[0] == 0 || v[1] == 0 || v[0] % v[1] != 0)
        return herd_error_set(err, HERD_E_INVALID, "head_count %llu and head_count_kv %llu: expected a multiple",
                              (unsigned long long)v[0], (unsigned long long)v[1]);
    hs->n_head = (uint32_t)v[0];
    hs->n_head_kv = (uint32_t)v[1];
    hs->head_dim = info->n_embd / hs->n_head;
    snprintf(key, sizeof key, "%s.attention.key_length", info->arch);
    uint64_t hd;
    if (herd_gguf_find_kv(g, key)) {
        enum herd_status rc = herd_gguf_get_uint(g, key, HERD_MAX_EMBD, &hd, err);
        if (rc != HERD_OK) return rc;
        hs->head_dim = (uint32_t)hd;
        hs->has_key_length = true;
    }
    snprintf(key, sizeof key, "%s.attention.value_length", info->arch);
    if (herd_gguf_find_kv(g, key) &&
        (herd_gguf_get_uint(g, key, HERD_MAX_EMBD, &hd, NULL) != HERD_OK || hd != hs->head_dim))
        return herd_error_set(err, HERD_E_UNSUPPORTED, "%s differs from the key length %u", key, hs->head_dim);
    snprintf(key, sizeof key, "%s.rope.dimension_count", info->arch);
    hs->has_rope_dims = herd_gguf_find_kv(g, key) != NULL;
    /* llama.cpp's Gemma 27B query scale is 1 / sqrt(n_embd / n_head): it
     * would change with the head count (herd_model_attn_scale) */
    if ((strcmp(info->arch, "gemma2") == 0 && info->n_layer == 46) ||
        (strcmp(info->arch, "gemma3") == 0 && info->n_layer == 62))
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "%s with %u layers scales queries by n_embd / head_count, which pruning heads would "
                              "change",
                              info->arch, info->n_layer);
    const uint32_t G = hs->n_head / hs->n_head_kv, qd = hs->n_head * hs->head_dim;
    uint32_t block = 1;
    for (uint32_t l = 0; l < info->n_layer; l++) {
        const struct herd_gguf_tensor *wo = layer_tensor(g, l, "attn_output.weight");
        const struct herd_gguf_tensor *wq = layer_tensor(g, l, "attn_q.weight");
        const struct herd_gguf_tensor *qkv = layer_tensor(g, l, "attn_qkv.weight");
        if (!wo || wo->n_dims != 2 || wo->ne[0] != qd || (!wq && !qkv))
            return herd_error_set(err, HERD_E_FORMAT,
                                  "layer %u: attn_output [%u, n_embd] and attn_q or attn_qkv expected", l, qd);
        const struct herd_ggml_type_info *ti = herd_ggml_type_info(wo->type);
        if (!ti || !ti->computed || !herd_quantize_rows_supported(wo->type))
            return herd_error_set(err, HERD_E_UNSUPPORTED,
                                  "tensor blk.%u.attn_output.weight has type %s, which herd "
                                  "cannot rewrite",
                                  l, ti ? ti->name : "?");
        if (ti->block_elems > block) block = ti->block_elems;
    }
    /* the fewest KV groups whose query columns fill whole blocks of attn_output's rows */
    hs->group_step = 1;
    while ((hs->group_step * G * hs->head_dim) % block != 0) hs->group_step++;
    return HERD_OK;
}

uint32_t herd_prune_heads_kept(const struct herd_prune_heads_shape *hs, double keep) {
    const uint32_t m = hs->group_step;
    if (m >= hs->n_head_kv) return hs->n_head_kv;
    double k = floor(keep * hs->n_head_kv / m + 0.5) * m;
    if (k < m) k = m;
    return k >= hs->n_head_kv ? hs->n_head_kv : (uint32_t)k;
}

/* Squared norms of t's columns (ne[0] of them), summed down its rows, into col. */
static void col_sq_norms(const struct herd_gguf_tensor *t, float *scratch, double *col) {
    const size_t n = (size_t)t->ne[0], rows = (size_t)t->ne[1], rb = (size_t)(t->n_bytes / t->ne[1]);
    for (size_t r = 0; r < rows; r++) {
        herd_dequantize_row_ref(t->type, (const uint8_t *)t->data + r * rb, scratch, n);
        for (size_t j = 0; j < n; j++) col[j] += (double)scratch[j] * scratch[j];
    }
}

/* Layer l's KV groups by score: the columns of attn_output that stay (in
 * fl, as --ffn-keep's plan) and the kept groups (groups[n_keep_kv]). */
static enum herd_status plan_heads(const struct herd_gguf *g, uint32_t l, const struct herd_prune_acts *acts,
                                   const struct herd_prune_heads_shape *hs, uint32_t n_keep_kv, uint32_t *groups,
                                   struct ffn_layer *fl, struct herd_error *err) {
    const struct herd_gguf_tensor *wo = layer_tensor(g, l, "attn_output.weight");
    const uint32_t G = hs->n_head / hs->n_head_kv, hd = hs->head_dim, qd = hs->n_head * hd, run = G * hd;
    fl->n_ff = qd;
    fl->n_keep = n_keep_kv * run;
    fl->keep = malloc(qd * sizeof *fl->keep);
    fl->importance = malloc(qd * sizeof *fl->importance);
    double *col = calloc(qd, sizeof *col);
    struct scored *score = calloc(hs->n_head_kv, sizeof *score);
    float *scratch = malloc(qd * sizeof *scratch);
    enum herd_status rc = HERD_OK;
    if (!fl->keep || !fl->importance || !col || !score || !scratch) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory for layer %u's heads", l);
        goto out;
    }
    if (acts->n_ff[l] != qd || acts->n_tokens[l] == 0) {
        rc = herd_error_set(err, HERD_E_INVALID, "layer %u: no attention outputs were collected", l);
        goto out;
    }
    col_sq_norms(wo, scratch, col);
    const double n = (double)acts->n_tokens[l];
    for (uint32_t k = 0; k < hs->n_head_kv; k++) score[k].index = k;
    for (uint32_t j = 0; j < qd; j++) score[j / run].score += acts->abs_sum[l][j] / n * sqrt(col[j]);
    keep_best(score, hs->n_head_kv, n_keep_kv, groups);
    expand_rows(groups, n_keep_kv, run, 0, fl->keep);
    for (uint32_t k = 0; k < fl->n_keep; k++) fl->importance[k] = (float)(acts->sq_sum[l][fl->keep[k]] / n);
out:
    free(col);
    free(score);
    free(scratch);
    return rc;
}

/* Per-layer row lists of --heads-keep. */
struct heads_layer {
    uint32_t n_keep_kv;
    uint32_t *groups;   /* [n_keep_kv] kept KV heads */
    uint32_t *q_rows;   /* [n_keep_kv * G * hd] */
    uint32_t *kv_rows;  /* [n_keep_kv * hd] */
    uint32_t *qkv_rows; /* phi3's attn_qkv: q_rows, then K's, then V's */
    struct ffn_layer cols;
};

enum herd_status herd_prune_heads_write(const struct herd_prune_heads_params *p, uint32_t *n_head_kv_out,
                                        struct herd_prune_stats *stats, struct herd_error *err) {
    struct herd_gguf *g = NULL;
    struct herd_gguf_writer *w = NULL;
    struct heads_layer *hl = NULL;
    struct tensor_edit *es = NULL;
    uint32_t *kv_out = NULL, *q_out = NULL;
    struct herd_prune_stats st = {0};
    struct herd_prune_model_info info = {0};
    struct herd_prune_heads_shape hs;
    enum herd_status rc = herd_gguf_open_file(p->in_path, &g, err);
    if (rc != HERD_OK) goto out;
    if ((rc = herd_prune_model_info_read(g, &info, err)) != HERD_OK ||
        (rc = herd_prune_heads_check(g, &info, &hs, err)) != HERD_OK) {
        herd_error_prefix(err, "%s", p->in_path);
        goto out;
    }
    const uint32_t G = hs.n_head / hs.n_head_kv, hd = hs.head_dim;
    if (info.n_layer != p->n_layer) {
        rc = herd_error_set(err, HERD_E_INVALID, "%s has %u layers; the fractions are for %u", p->in_path, info.n_layer,
                            p->n_layer);
        goto out;
    }
    hl = calloc(info.n_layer, sizeof *hl);
    kv_out = calloc(info.n_layer, sizeof *kv_out);
    q_out = calloc(info.n_layer, sizeof *q_out);
    if (!hl || !kv_out || !q_out) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    for (uint32_t l = 0; l < info.n_layer; l++) {
        struct heads_layer *h = &hl[l];
        const uint32_t K = hl[l].n_keep_kv = kv_out[l] = herd_prune_heads_kept(&hs, p->keep[l]);
        q_out[l] = K * G;
        if (n_head_kv_out) n_head_kv_out[l] = K;
        h->groups = malloc(hs.n_head_kv * sizeof *h->groups);
        h->kv_rows = malloc((size_t)K * hd * sizeof *h->kv_rows);
        h->qkv_rows = malloc((size_t)K * (G + 2) * hd * sizeof *h->qkv_rows);
        if (!h->groups || !h->kv_rows || !h->qkv_rows) {
            rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
            goto out;
        }
        if ((rc = plan_heads(g, l, p->acts, &hs, K, h->groups, &h->cols, err)) != HERD_OK) {
            herd_error_prefix(err, "%s", p->in_path);
            goto out;
        }
        h->q_rows = h->cols.keep; /* Q's rows are attn_output's columns */
        expand_rows(h->groups, K, hd, 0, h->kv_rows);
        const uint32_t nq = K * G * hd, nkv = K * hd;
        memcpy(h->qkv_rows, h->q_rows, nq * sizeof *h->qkv_rows);
        expand_rows(h->groups, K, hd, hs.n_head * hd, h->qkv_rows + nq);
        expand_rows(h->groups, K, hd, (hs.n_head + hs.n_head_kv) * hd, h->qkv_rows + nq + nkv);
    }
    const size_t n_t = herd_gguf_n_tensors(g);
    es = calloc(n_t ? n_t : 1, sizeof *es);
    if (!es) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_t; i++) {
        struct tensor_edit *e = &es[i];
        e->t = herd_gguf_tensor_at(g, i);
        uint32_t l;
        size_t rest;
        if (layer_of(e->t->name, &l, &rest) && l < info.n_layer && hl[l].n_keep_kv < hs.n_head_kv) {
            const struct heads_layer *h = &hl[l];
            const struct herd_gguf_str sfx = {e->t->name.ptr + rest, e->t->name.len - rest};
            const uint32_t nq = h->n_keep_kv * G * hd, nkv = h->n_keep_kv * hd;
            if (herd_gguf_str_eq(sfx, "attn_q.weight") || herd_gguf_str_eq(sfx, "attn_q.bias"))
                e->rows = h->q_rows, e->n_rows = nq;
            else if (herd_gguf_str_eq(sfx, "attn_k.weight") || herd_gguf_str_eq(sfx, "attn_v.weight") ||
                     herd_gguf_str_eq(sfx, "attn_k.bias") || herd_gguf_str_eq(sfx, "attn_v.bias"))
                e->rows = h->kv_rows, e->n_rows = nkv;
            else if (herd_gguf_str_eq(sfx, "attn_qkv.weight") || herd_gguf_str_eq(sfx, "attn_qkv.bias"))
                e->rows = h->qkv_rows, e->n_rows = nq + 2 * nkv;
            else if (herd_gguf_str_eq(sfx, "attn_output.weight"))
                e->cols = &h->cols;
        }
        if ((rc = edit_plan(e, err)) != HERD_OK) {
            herd_error_prefix(err, "%s", p->in_path);
            goto out;
        }
    }
    if (!(w = herd_gguf_writer_create())) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    char k_head[96], k_kv[96], k_len[96];
    snprintf(k_head, sizeof k_head, "%s.attention.head_count", info.arch);
    snprintf(k_kv, sizeof k_kv, "%s.attention.head_count_kv", info.arch);
    bool kv_written = false;
    for (size_t i = 0; i < herd_gguf_n_kv(g); i++) {
        const struct herd_gguf_kv *kv = herd_gguf_kv_at(g, i);
        if (herd_gguf_str_eq(kv->key, k_head))
            rc = add_counts(w, k_head, q_out, info.n_layer, err);
        else if (herd_gguf_str_eq(kv->key, k_kv))
            rc = add_counts(w, k_kv, kv_out, info.n_layer, err), kv_written = true;
        else
            rc = herd_gguf_writer_add_kv_copy(w, kv, err);
        if (rc != HERD_OK) goto out;
    }
    /* the head size was n_embd / head_count where the file did not say: say it now */
    if (!kv_written && (rc = add_counts(w, k_kv, kv_out, info.n_layer, err)) != HERD_OK) goto out;
    const char *implied[3] = {hs.has_key_length ? NULL : "attention.key_length",
                              hs.has_key_length ? NULL : "attention.value_length",
                              hs.has_rope_dims ? NULL : "rope.dimension_count"};
    for (int i = 0; i < 3; i++) {
        if (!implied[i]) continue;
        snprintf(k_len, sizeof k_len, "%s.%s", info.arch, implied[i]);
        if (herd_gguf_find_kv(g, k_len)) continue;
        if ((rc = herd_gguf_writer_add_u32(w, k_len, hd, err)) != HERD_OK) goto out;
    }
    if ((rc = write_edits(w, es, n_t, p->out_path, p->n_threads, &st, err)) != HERD_OK) goto out;
    st.n_layer_in = st.n_layer_out = info.n_layer;
    st.n_tensors_in = st.n_tensors_out = n_t;
    st.file_bytes_in = herd_gguf_file_size(g);
    struct stat sb;
    if (stat(p->out_path, &sb) == 0) st.file_bytes_out = (uint64_t)sb.st_size;
    if (stats) *stats = st;
out:
    herd_gguf_writer_destroy(w);
    for (uint32_t l = 0; hl && l < info.n_layer; l++) {
        free(hl[l].groups), free(hl[l].kv_rows), free(hl[l].qkv_rows);
        free(hl[l].cols.keep), free(hl[l].cols.importance);
    }
    free(hl);
    free(es);
    free(kv_out);
    free(q_out);
    herd_gguf_destroy(g);
    return rc;
}
