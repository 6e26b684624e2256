/* `herd prune`: Block Influence collection and the GGUF rewrite that
 * removes layers (the method and the file rules are in prune.h). */
#include "convert/prune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/checked.h"
#include "model/model_desc.h"

/* ------------------------------------------------------------ Block Influence */

struct herd_prune_bi {
    uint32_t n_layer, n_embd, max_tokens;
    double *sum;     /* [n_layer]: sum over tokens of 1 - cos(h_l, h_{l+1}) */
    uint64_t *count; /* [n_layer]: tokens summed */
    float *prev;     /* [max_tokens][n_embd]: the residual entering the layer observed last */
    uint32_t next;   /* the layer the next call should be (n_layer + 1: none yet) */
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
    /* herd_decode calls layers 0 .. n_layer in order; a batch larger than
     * the collector was made for, or a call out of order, is a caller bug */
    if (n_tokens > bi->max_tokens || layer > bi->n_layer || (layer != 0 && layer != bi->next)) {
        fprintf(stderr, "herd_prune_bi_observe: layer %u of %u, %zu tokens (at most %u): not collected\n", layer,
                bi->n_layer, n_tokens, bi->max_tokens);
        bi->next = bi->n_layer + 1;
        return;
    }
    if (layer > 0 && n_tokens == bi->n_prev) {
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

static const double *g_rank_scores; /* qsort has no context argument; herd_prune_rank is not reentrant */

static int by_score(const void *a, const void *b) {
    const uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    const double x = g_rank_scores[i], y = g_rank_scores[j];
    if (x != y) return x < y ? -1 : 1;
    return i < j ? -1 : i > j;
}

void herd_prune_rank(const double *scores, uint32_t n_layer, uint32_t *order) {
    for (uint32_t l = 0; l < n_layer; l++) order[l] = l;
    g_rank_scores = scores;
    qsort(order, n_layer, sizeof *order, by_score);
    g_rank_scores = NULL;
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

enum herd_status herd_prune_model_check(const struct herd_gguf *g, struct herd_prune_model_info *info,
                                        struct herd_error *err) {
    memset(info, 0, sizeof *info);
    struct herd_gguf_str arch;
    enum herd_status rc = herd_gguf_get_string(g, "general.architecture", &arch, err);
    if (rc != HERD_OK) return rc;
    if (arch.len == 0 || arch.len >= sizeof info->arch || memchr(arch.ptr, '\0', arch.len))
        return herd_error_set(err, HERD_E_FORMAT, "general.architecture is not a plain name");
    memcpy(info->arch, arch.ptr, arch.len);
    const struct herd_arch_info *a = herd_model_arch_info(info->arch);
    if (!a)
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "architecture '%s' is not one herd runs, so herd cannot tell which of its tensors and "
                              "keys belong to a layer; it prunes llama, qwen2, qwen3, phi3, qwen2moe and qwen3moe",
                              info->arch);
    if (a->gemma)
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "architecture '%s' cannot be pruned by layers: its sliding-window and global attention "
                              "layers follow the layer index (global when (i + 1) %% %u == 0), which neither herd nor "
                              "llama.cpp reads from the file, so removing a layer would change the kind of every "
                              "later one; llama.cpp also derives Gemma's query scale and model type from the layer "
                              "count",
                              info->arch, a->swa_period ? a->swa_period : 1);
    char key[96];
    snprintf(key, sizeof key, "%s.block_count", info->arch);
    uint64_t v;
    if ((rc = herd_gguf_get_uint(g, key, HERD_MAX_LAYERS, &v, err)) != HERD_OK) return rc;
    if (v == 0) return herd_error_set(err, HERD_E_INVALID, "%s is 0", key);
    info->n_layer = (uint32_t)v;
    snprintf(key, sizeof key, "%s.embedding_length", info->arch);
    if ((rc = herd_gguf_get_uint(g, key, HERD_MAX_EMBD, &v, err)) != HERD_OK) return rc;
    info->n_embd = (uint32_t)v;
    return HERD_OK;
}

/* What happens to one metadata entry. */
enum kv_action { KV_COPY, KV_BLOCK_COUNT, KV_PER_LAYER };

/* The key's part after "<arch>.", or NULL when it is not under arch. */
static const char *arch_suffix(struct herd_gguf_str key, const char *arch, char *buf, size_t cap) {
    const size_t n = strlen(arch);
    if (key.len <= n + 1 || key.len - n - 1 >= cap || memcmp(key.ptr, arch, n) != 0 || key.ptr[n] != '.') return NULL;
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
    memcpy(key, kv->key.ptr, kv->key.len); /* length and NULs checked by classify_kv's arch_suffix */
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
