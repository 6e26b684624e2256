/* Hugging Face folder -> GGUF: read config.json, open the safetensors files,
 * plan every output tensor (name, source, shape, type, row order) and check
 * the plan against config.json and the folder's tensors before a byte is
 * written; then write metadata, the vocabulary and each tensor row by row.
 * Input and output are described in convert_hf.h. */
#include "convert/convert_hf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/checked.h"
#include "base/timing.h"
#include "convert/hf_vocab.h"
#include "convert/safetensors.h"
#include "kernels/quant.h"
#include "convert/llama_meta.h"
#include "model/model_desc.h"

void herd_hf_convert_default_params(struct herd_hf_convert_params *p) {
    memset(p, 0, sizeof *p);
    p->type_auto = true;
    p->type = HERD_GGML_TYPE_F32;
}

/* ------------------------------------------------------------ config.json */

struct hf_config {
    char hf_arch[64];
    const char *arch;                                                  /* GGUF architecture */
    bool permute_qk;                                                   /* rotate_half rows -> adjacent pairs (llama) */
    bool qkv_bias;                                                     /* qwen2 */
    uint32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx, n_vocab; /* n_vocab 0: not given */
    float rope_base, rms_eps;
    bool tied;
    /* Llama 3 RoPE scaling ("rope_type": "llama3") */
    bool llama3_rope;
    float rope_factor, low_freq_factor, high_freq_factor;
    float orig_ctx;
};

static const struct {
    const char *hf;
    const char *model_type;
    const char *arch;
    bool permute_qk, qkv_bias;
} archs[] = {
    {"LlamaForCausalLM", "llama", "llama", true, false},
    {"MistralForCausalLM", "mistral", "llama", true, false},
    {"Qwen2ForCausalLM", "qwen2", "qwen2", false, true},
};

/* An integer field in 1..max; absent fields take def (0: required). */
static enum herd_status cfg_uint(const json_t *cfg, const char *path, const char *key, uint64_t def, uint64_t max,
                                 uint32_t *out, struct herd_error *err) {
    const json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        if (!def) return herd_error_set(err, HERD_E_NOT_FOUND, "%s: field '%s' is missing", path, key);
        *out = (uint32_t)def;
        return HERD_OK;
    }
    uint64_t u;
    if (!herd_hf_json_uint(v, max, &u) || u < 1)
        return herd_error_set(err, HERD_E_INVALID, "%s: field '%s' is not an integer in 1..%llu", path, key,
                              (unsigned long long)max);
    *out = (uint32_t)u;
    return HERD_OK;
}

/* A positive finite number; absent takes def. */
static enum herd_status cfg_float(const json_t *cfg, const char *path, const char *key, double def, float *out,
                                  struct herd_error *err) {
    const json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        *out = (float)def;
        return HERD_OK;
    }
    double d = json_number_value(v);
    if (!json_is_number(v) || !(d > 0) || !isfinite((float)d))
        return herd_error_set(err, HERD_E_INVALID, "%s: field '%s' is not a positive number", path, key);
    *out = (float)d;
    return HERD_OK;
}

static enum herd_status read_rope_scaling(struct hf_config *c, const json_t *cfg, const char *path,
                                          struct herd_error *err) {
    const json_t *rs = json_object_get(cfg, "rope_scaling");
    if (!rs || json_is_null(rs)) return HERD_OK;
    if (!json_is_object(rs)) return herd_error_set(err, HERD_E_FORMAT, "%s: rope_scaling is not an object", path);
    const json_t *t = json_object_get(rs, "rope_type");
    if (!json_is_string(t)) t = json_object_get(rs, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : "default";
    if (strcmp(type, "default") == 0) return HERD_OK;
    if (strcmp(type, "llama3") != 0 || strcmp(c->arch, "llama") != 0)
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "%s: rope_scaling type '%s' is not supported for %s (herd runs Llama 3's 'llama3')", path,
                              type, c->hf_arch);
    enum herd_status rc;
    if ((rc = cfg_float(rs, path, "factor", 8.0, &c->rope_factor, err)) != HERD_OK ||
        (rc = cfg_float(rs, path, "low_freq_factor", 1.0, &c->low_freq_factor, err)) != HERD_OK ||
        (rc = cfg_float(rs, path, "high_freq_factor", 4.0, &c->high_freq_factor, err)) != HERD_OK ||
        (rc = cfg_float(rs, path, "original_max_position_embeddings", 8192.0, &c->orig_ctx, err)) != HERD_OK)
        return herd_error_prefix(err, "rope_scaling");
    if (c->low_freq_factor == c->high_freq_factor)
        return herd_error_set(err, HERD_E_INVALID, "%s: rope_scaling low_freq_factor equals high_freq_factor", path);
    c->llama3_rope = true;
    return HERD_OK;
}

static enum herd_status read_config(struct hf_config *c, const char *dir, struct herd_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *cfg = NULL;
    enum herd_status rc = herd_hf_json_load(path, HERD_HF_CONFIG_JSON_MAX_BYTES, &cfg, err);
    if (rc != HERD_OK) return rc;
    const json_t *a = json_array_get(json_object_get(cfg, "architectures"), 0);
    const json_t *mt = json_object_get(cfg, "model_type");
    int which = -1;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if ((json_is_string(a) && strcmp(json_string_value(a), archs[i].hf) == 0) ||
            (!a && json_is_string(mt) && strcmp(json_string_value(mt), archs[i].model_type) == 0))
            which = (int)i;
    if (which < 0) {
        rc = herd_error_set(err, HERD_E_UNSUPPORTED,
                            "%s: architecture '%s' is not supported (LlamaForCausalLM, MistralForCausalLM, "
                            "Qwen2ForCausalLM are)",
                            path,
                            json_is_string(a)    ? json_string_value(a)
                            : json_is_string(mt) ? json_string_value(mt)
                                                 : "(none)");
        goto out;
    }
    snprintf(c->hf_arch, sizeof c->hf_arch, "%s", archs[which].hf);
    c->arch = archs[which].arch;
    c->permute_qk = archs[which].permute_qk;
    c->qkv_bias = archs[which].qkv_bias;
    if ((rc = cfg_uint(cfg, path, "hidden_size", 0, HERD_MAX_EMBD, &c->n_embd, err)) != HERD_OK ||
        (rc = cfg_uint(cfg, path, "num_hidden_layers", 0, HERD_MAX_LAYERS, &c->n_layer, err)) != HERD_OK ||
        (rc = cfg_uint(cfg, path, "num_attention_heads", 0, HERD_MAX_HEADS, &c->n_head, err)) != HERD_OK ||
        (rc = cfg_uint(cfg, path, "intermediate_size", 0, HERD_MAX_FF, &c->n_ff, err)) != HERD_OK ||
        (rc = cfg_uint(cfg, path, "num_key_value_heads", c->n_head, HERD_MAX_HEADS, &c->n_head_kv, err)) != HERD_OK ||
        /* 2048: transformers' default for Llama */
        (rc = cfg_uint(cfg, path, "max_position_embeddings", 2048, INT32_MAX, &c->n_ctx, err)) != HERD_OK ||
        (rc = cfg_float(cfg, path, "rope_theta", 10000.0, &c->rope_base, err)) != HERD_OK ||
        (rc = cfg_float(cfg, path, "rms_norm_eps", 1e-6, &c->rms_eps, err)) != HERD_OK)
        goto out;
    const json_t *vs = json_object_get(cfg, "vocab_size");
    if (vs && !json_is_null(vs) &&
        (rc = cfg_uint(cfg, path, "vocab_size", 0, HERD_MAX_VOCAB, &c->n_vocab, err)) != HERD_OK)
        goto out;
    if (c->n_embd % c->n_head != 0 || (c->n_embd / c->n_head) % 2 != 0) {
        rc = herd_error_set(err, HERD_E_INVALID, "%s: hidden_size %u / num_attention_heads %u is not an even head size",
                            path, c->n_embd, c->n_head);
        goto out;
    }
    if (c->n_head % c->n_head_kv != 0) {
        rc = herd_error_set(err, HERD_E_INVALID, "%s: num_key_value_heads %u does not divide num_attention_heads %u",
                            path, c->n_head_kv, c->n_head);
        goto out;
    }
    const json_t *hd = json_object_get(cfg, "head_dim");
    if (hd && !json_is_null(hd) && json_number_value(hd) != (double)(c->n_embd / c->n_head)) {
        rc = herd_error_set(err, HERD_E_UNSUPPORTED,
                            "%s: head_dim %g differs from hidden_size / num_attention_heads = %u, which herd "
                            "does not support",
                            path, json_number_value(hd), c->n_embd / c->n_head);
        goto out;
    }
    const json_t *act = json_object_get(cfg, "hidden_act");
    if (json_is_string(act) && strcmp(json_string_value(act), "silu") != 0) {
        rc = herd_error_set(err, HERD_E_UNSUPPORTED, "%s: hidden_act '%s' is not supported (silu is)", path,
                            json_string_value(act));
        goto out;
    }
    c->tied = json_is_true(json_object_get(cfg, "tie_word_embeddings"));
    rc = read_rope_scaling(c, cfg, path, err);
out:
    json_decref(cfg);
    return rc;
}

/* ------------------------------------------------------------ weights */

struct weights {
    const char *dir;
    struct herd_safetensors **files;
    bool **used; /* [file][tensor index in name order] */
    size_t n_files;
};

static void weights_cleanup(struct weights *w) {
    for (size_t i = 0; i < w->n_files; i++) {
        herd_safetensors_destroy(w->files[i]);
        free(w->used[i]);
    }
    free(w->files);
    free(w->used);
}

static enum herd_status weights_add(struct weights *w, const char *dir, const char *file, struct herd_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    for (size_t i = 0; i < w->n_files; i++)
        if (strcmp(herd_safetensors_path(w->files[i]), path) == 0) return HERD_OK; /* already open */
    struct herd_safetensors *st;
    enum herd_status rc = herd_safetensors_open(path, &st, err);
    if (rc != HERD_OK) return rc;
    bool *used = calloc(herd_safetensors_n_tensors(st) + 1, sizeof *used);
    struct herd_safetensors **files = realloc(w->files, (w->n_files + 1) * sizeof *files);
    if (files) w->files = files;
    bool **u = files ? realloc(w->used, (w->n_files + 1) * sizeof *u) : NULL;
    if (u) w->used = u;
    if (!used || !files || !u) {
        free(used);
        herd_safetensors_destroy(st);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    w->files[w->n_files] = st;
    w->used[w->n_files++] = used;
    return HERD_OK;
}

/* The tensor called name in any file, or NULL; *file_index set when found. */
static const struct herd_safetensors_tensor *weights_find(const struct weights *w, const char *name,
                                                          size_t *file_index) {
    for (size_t i = 0; i < w->n_files; i++) {
        const struct herd_safetensors_tensor *t = herd_safetensors_find(w->files[i], name);
        if (t) {
            *file_index = i;
            return t;
        }
    }
    return NULL;
}

/* A shard's file name from the index: a plain name inside the folder. */
static bool plain_file_name(const char *s) { return s[0] && s[0] != '.' && !strchr(s, '/'); }

static enum herd_status weights_open(struct weights *w, const char *dir, struct herd_error *err) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    json_t *index = NULL;
    enum herd_status rc = herd_hf_json_load(path, HERD_HF_TOKENIZER_JSON_MAX_BYTES, &index, err);
    if (rc == HERD_E_NOT_FOUND) {
        herd_error_clear(err);
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (stat(path, &st) == 0) return weights_add(w, dir, "model.safetensors", err);
        snprintf(path, sizeof path, "%s/pytorch_model.bin", dir);
        if (stat(path, &st) == 0)
            return herd_error_set(err, HERD_E_UNSUPPORTED,
                                  "%s: only PyTorch .bin weights are here; herd convert hf reads safetensors", dir);
        return herd_error_set(err, HERD_E_NOT_FOUND,
                              "%s: no model.safetensors and no model.safetensors.index.json (is this a Hugging Face "
                              "model folder?)",
                              dir);
    }
    if (rc != HERD_OK) return rc;
    const json_t *map = json_object_get(index, "weight_map");
    if (!json_is_object(map) || json_object_size(map) == 0) {
        rc = herd_error_set(err, HERD_E_FORMAT, "%s: weight_map is missing, empty or not an object", path);
        goto out;
    }
    const char *name;
    json_t *file;
    json_object_foreach((json_t *)map, name, file) {
        if (!json_is_string(file) || !plain_file_name(json_string_value(file))) {
            rc =
                herd_error_set(err, HERD_E_FORMAT, "%s: weight_map['%s'] is not a file name in the folder", path, name);
            goto out;
        }
        if ((rc = weights_add(w, dir, json_string_value(file), err)) != HERD_OK) goto out;
    }
    json_object_foreach((json_t *)map, name, file) {
        size_t fi;
        const char *f = json_string_value(file);
        const struct herd_safetensors_tensor *t = weights_find(w, name, &fi);
        char want[4096];
        snprintf(want, sizeof want, "%s/%s", dir, f);
        if (!t || strcmp(herd_safetensors_path(w->files[fi]), want) != 0) {
            rc = herd_error_set(err, HERD_E_FORMAT, "%s: weight_map puts '%s' in %s, which has no such tensor", path,
                                name, f);
            goto out;
        }
    }
out:
    json_decref(index);
    return rc;
}

/* No tensor name occurs in two shards. */
static enum herd_status weights_check_unique(const struct weights *w, struct herd_error *err) {
    for (size_t i = 0; i < w->n_files; i++)
        for (size_t k = 0; k < herd_safetensors_n_tensors(w->files[i]); k++) {
            const char *name = herd_safetensors_tensor_at(w->files[i], k)->name;
            for (size_t j = i + 1; j < w->n_files; j++)
                if (herd_safetensors_find(w->files[j], name))
                    return herd_error_set(err, HERD_E_DUPLICATE, "tensor '%s' is in both %s and %s", name,
                                          herd_safetensors_path(w->files[i]), herd_safetensors_path(w->files[j]));
        }
    return HERD_OK;
}

/* ------------------------------------------------------------ plan */

struct out_tensor {
    char name[HERD_GGUF_MAX_TENSOR_NAME_BYTES + 1];
    const struct herd_safetensors_tensor *src; /* NULL for generated ones */
    size_t file;
    enum herd_ggml_type src_type; /* F32, F16 or BF16 */
    uint32_t n_dims;
    uint64_t ne[2]; /* GGUF order: ne[0] = columns */
    enum herd_ggml_type type;
    uint32_t permute_heads; /* 0, or the heads whose rows go rotate_half -> adjacent pairs */
    uint64_t n_bytes;
    const float *values; /* generated data (rope_freqs) */
};

struct plan {
    struct out_tensor *t;
    size_t n, cap;
    float *rope_freqs;
};

static struct out_tensor *plan_next(struct plan *pl, struct herd_error *err) {
    if (pl->n == pl->cap) {
        size_t cap = pl->cap ? 2 * pl->cap : 64;
        struct out_tensor *t = realloc(pl->t, cap * sizeof *t);
        if (!t) {
            herd_error_set(err, HERD_E_NOMEM, "out of memory");
            return NULL;
        }
        pl->t = t;
        pl->cap = cap;
    }
    struct out_tensor *o = &pl->t[pl->n++];
    memset(o, 0, sizeof *o);
    return o;
}

static enum herd_status src_type(const struct weights *w, const struct out_tensor *o, enum herd_ggml_type *out,
                                 struct herd_error *err) {
    switch (o->src->dtype) {
    case HERD_SAFETENSORS_F32: *out = HERD_GGML_TYPE_F32; return HERD_OK;
    case HERD_SAFETENSORS_F16: *out = HERD_GGML_TYPE_F16; return HERD_OK;
    case HERD_SAFETENSORS_BF16: *out = HERD_GGML_TYPE_BF16; return HERD_OK;
    default:
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "%s: tensor '%s' has dtype %s; herd convert hf reads F32, F16 "
                              "and BF16 weights",
                              herd_safetensors_path(w->files[o->file]), o->src->name,
                              herd_safetensors_dtype_name(o->src->dtype));
    }
}

/* Adds GGUF tensor gguf_name from source tensor src (already found, in file
 * fi), which must have Hugging Face shape [rows, cols] (or [cols] when
 * rows is 0). */
static enum herd_status plan_add(struct plan *pl, struct weights *w, const char *gguf_name,
                                 const struct herd_safetensors_tensor *src, size_t fi, uint64_t rows, uint64_t cols,
                                 uint32_t permute_heads, struct herd_error *err) {
    struct out_tensor *o = plan_next(pl, err);
    if (!o) return HERD_E_NOMEM;
    snprintf(o->name, sizeof o->name, "%s", gguf_name);
    o->src = src;
    o->file = fi;
    o->n_dims = rows ? 2 : 1;
    o->ne[0] = cols;
    o->ne[1] = rows ? rows : 1;
    o->permute_heads = permute_heads;
    const bool ok =
        src->n_dims == o->n_dims && (rows ? src->shape[0] == rows && src->shape[1] == cols : src->shape[0] == cols);
    if (!ok) {
        char got[128] = "", want[64];
        size_t n = 0;
        for (uint32_t d = 0; d < src->n_dims && n < sizeof got - 24; d++)
            n += (size_t)snprintf(got + n, sizeof got - n, "%s%llu", d ? ", " : "", (unsigned long long)src->shape[d]);
        if (rows)
            snprintf(want, sizeof want, "%llu, %llu", (unsigned long long)rows, (unsigned long long)cols);
        else
            snprintf(want, sizeof want, "%llu", (unsigned long long)cols);
        return herd_error_set(err, HERD_E_FORMAT, "%s: tensor '%s' has shape [%s]; config.json implies [%s]",
                              herd_safetensors_path(w->files[fi]), src->name, got, want);
    }
    w->used[fi][src - herd_safetensors_tensor_at(w->files[fi], 0)] = true;
    return src_type(w, o, &o->src_type, err);
}

/* plan_add for the source tensor called hf_name, which must exist. */
static enum herd_status plan_need(struct plan *pl, struct weights *w, const char *gguf_name, const char *hf_name,
                                  uint64_t rows, uint64_t cols, uint32_t permute_heads, struct herd_error *err) {
    size_t fi;
    const struct herd_safetensors_tensor *t = weights_find(w, hf_name, &fi);
    if (!t) return herd_error_set(err, HERD_E_NOT_FOUND, "%s: the weights have no tensor '%s'", w->dir, hf_name);
    return plan_add(pl, w, gguf_name, t, fi, rows, cols, permute_heads, err);
}

/* Llama 3's RoPE frequency divisors, as llama.cpp's converter computes them
 * (float32, like its torch code). */
static void llama3_rope_freqs(const struct hf_config *c, float *out) {
    const uint32_t dim = c->n_embd / c->n_head;
    const float low_wavelen = c->orig_ctx / c->low_freq_factor, high_wavelen = c->orig_ctx / c->high_freq_factor;
    for (uint32_t i = 0; i < dim / 2; i++) {
        const float freq = 1.0f / powf(c->rope_base, (float)(2 * i) / (float)dim);
        const float wavelen = (float)(2 * M_PI) / freq;
        if (wavelen < high_wavelen) {
            out[i] = 1.0f;
        } else if (wavelen > low_wavelen) {
            out[i] = c->rope_factor;
        } else {
            const float smooth =
                (c->orig_ctx / wavelen - c->low_freq_factor) / (c->high_freq_factor - c->low_freq_factor);
            out[i] = 1.0f / ((1 - smooth) / c->rope_factor + smooth);
        }
    }
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static enum herd_status make_plan(struct plan *pl, struct weights *w, const struct hf_config *c, bool *tied,
                                  uint32_t *n_vocab, struct herd_error *err) {
    enum herd_status rc;
    const uint64_t E = c->n_embd, hd = c->n_embd / c->n_head, q_dim = c->n_head * hd, kv_dim = c->n_head_kv * hd;
    /* The token embedding: its own tensor, or the one the file's metadata
     * says it was tied to when saved (PyTorch stores a tied pair once), or
     * lm_head for a tied model that kept only that. */
    size_t fi = 0;
    const struct herd_safetensors_tensor *emb = weights_find(w, "model.embed_tokens.weight", &fi);
    for (size_t i = 0; !emb && i < w->n_files; i++) {
        const char *alias = herd_safetensors_metadata(w->files[i], "model.embed_tokens.weight");
        if (alias) emb = weights_find(w, alias, &fi);
    }
    size_t head_fi = 0;
    const struct herd_safetensors_tensor *head = weights_find(w, "lm_head.weight", &head_fi);
    if (!emb && c->tied && head) emb = head, fi = head_fi;
    if (!emb)
        return herd_error_set(err, HERD_E_NOT_FOUND, "%s: the weights have no tensor 'model.embed_tokens.weight'",
                              w->dir);
    if (emb->n_dims != 2 || emb->shape[0] == 0 || emb->shape[0] > HERD_MAX_VOCAB)
        return herd_error_set(err, HERD_E_FORMAT, "%s: the token embedding '%s' is not a matrix of 1..%u rows",
                              herd_safetensors_path(w->files[fi]), emb->name, HERD_MAX_VOCAB);
    *n_vocab = (uint32_t)emb->shape[0];
    if (c->n_vocab && c->n_vocab != *n_vocab)
        return herd_error_set(err, HERD_E_FORMAT, "%s/config.json: vocab_size %u, but '%s' has %u rows", w->dir,
                              c->n_vocab, emb->name, *n_vocab);
    *tied = c->tied || !head || head == emb;

    if (c->llama3_rope) {
        struct out_tensor *o = plan_next(pl, err);
        if (!o) return HERD_E_NOMEM;
        pl->rope_freqs = malloc(hd / 2 * sizeof *pl->rope_freqs);
        if (!pl->rope_freqs) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
        llama3_rope_freqs(c, pl->rope_freqs);
        snprintf(o->name, sizeof o->name, "rope_freqs.weight");
        o->n_dims = 1;
        o->ne[0] = hd / 2;
        o->ne[1] = 1;
        o->values = pl->rope_freqs;
    }
    if ((rc = plan_add(pl, w, "token_embd.weight", emb, fi, *n_vocab, E, 0, err)) != HERD_OK) return rc;
    if ((rc = plan_need(pl, w, "output_norm.weight", "model.norm.weight", 0, E, 0, err)) != HERD_OK) return rc;
    if (!*tied && (rc = plan_add(pl, w, "output.weight", head, head_fi, *n_vocab, E, 0, err)) != HERD_OK) return rc;
    if (*tied && head) w->used[head_fi][head - herd_safetensors_tensor_at(w->files[head_fi], 0)] = true;

    for (uint32_t l = 0; l < c->n_layer; l++) {
        const struct {
            const char *gguf, *hf;
            uint64_t rows, cols;
            uint32_t permute;
            bool want;
        } per[] = {
            {"attn_norm.weight", "input_layernorm.weight", 0, E, 0, true},
            {"attn_q.weight", "self_attn.q_proj.weight", q_dim, E, c->permute_qk ? c->n_head : 0, true},
            {"attn_q.bias", "self_attn.q_proj.bias", 0, q_dim, 0, c->qkv_bias},
            {"attn_k.weight", "self_attn.k_proj.weight", kv_dim, E, c->permute_qk ? c->n_head_kv : 0, true},
            {"attn_k.bias", "self_attn.k_proj.bias", 0, kv_dim, 0, c->qkv_bias},
            {"attn_v.weight", "self_attn.v_proj.weight", kv_dim, E, 0, true},
            {"attn_v.bias", "self_attn.v_proj.bias", 0, kv_dim, 0, c->qkv_bias},
            {"attn_output.weight", "self_attn.o_proj.weight", E, q_dim, 0, true},
            {"ffn_norm.weight", "post_attention_layernorm.weight", 0, E, 0, true},
            {"ffn_gate.weight", "mlp.gate_proj.weight", c->n_ff, E, 0, true},
            {"ffn_up.weight", "mlp.up_proj.weight", c->n_ff, E, 0, true},
            {"ffn_down.weight", "mlp.down_proj.weight", E, c->n_ff, 0, true},
        };
        for (size_t i = 0; i < sizeof per / sizeof per[0]; i++) {
            if (!per[i].want) continue;
            char g[64], h[128];
            snprintf(g, sizeof g, "blk.%u.%s", l, per[i].gguf);
            snprintf(h, sizeof h, "model.layers.%u.%s", l, per[i].hf);
            if ((rc = plan_need(pl, w, g, h, per[i].rows, per[i].cols, per[i].permute, err)) != HERD_OK) return rc;
        }
    }
    /* Every tensor is used, or known to be redundant: a tensor left over is
     * a feature the GGUF would silently lose. */
    for (size_t i = 0; i < w->n_files; i++)
        for (size_t k = 0; k < herd_safetensors_n_tensors(w->files[i]); k++) {
            const char *name = herd_safetensors_tensor_at(w->files[i], k)->name;
            if (w->used[i][k] || ends_with(name, ".rotary_emb.inv_freq")) continue;
            return herd_error_set(err, HERD_E_UNSUPPORTED,
                                  "%s: tensor '%s' has no place in a %s GGUF (%s with layers beyond config.json's %u, "
                                  "or biases, or another variant herd does not run)",
                                  herd_safetensors_path(w->files[i]), name, c->arch, c->hf_arch, c->n_layer);
        }
    return HERD_OK;
}

/* ------------------------------------------------------------ writing */

/* general.* and <arch>.* keys in the order of herd_llama_meta_write (which
 * writes "llama" only). */
static enum herd_status write_meta(struct herd_gguf_writer *w, const struct hf_config *c, const char *name,
                                   enum herd_ggml_type type, uint32_t n_vocab, struct herd_error *err) {
    enum herd_status rc;
    char key[96];
    const struct {
        const char *suffix;
        uint32_t v;
    } u32s[] = {
        {"vocab_size", n_vocab},
        {"context_length", c->n_ctx},
        {"embedding_length", c->n_embd},
        {"block_count", c->n_layer},
        {"feed_forward_length", c->n_ff},
        {"attention.head_count", c->n_head},
        {"attention.head_count_kv", c->n_head_kv},
    };
    if ((rc = herd_gguf_writer_add_string(w, "general.architecture", c->arch, err)) != HERD_OK) return rc;
    if ((rc = herd_gguf_writer_add_string(w, "general.name", name, err)) != HERD_OK) return rc;
    if ((rc = herd_gguf_writer_add_u32(w, "general.file_type", herd_llama_file_type(type), err)) != HERD_OK) return rc;
    for (size_t i = 0; i < sizeof u32s / sizeof u32s[0]; i++) {
        snprintf(key, sizeof key, "%s.%s", c->arch, u32s[i].suffix);
        if ((rc = herd_gguf_writer_add_u32(w, key, u32s[i].v, err)) != HERD_OK) return rc;
    }
    snprintf(key, sizeof key, "%s.rope.freq_base", c->arch);
    if ((rc = herd_gguf_writer_add_f32(w, key, c->rope_base, err)) != HERD_OK) return rc;
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", c->arch);
    if ((rc = herd_gguf_writer_add_f32(w, key, c->rms_eps, err)) != HERD_OK) return rc;
    snprintf(key, sizeof key, "%s.rope.dimension_count", c->arch);
    return herd_gguf_writer_add_u32(w, key, c->n_embd / c->n_head, err);
}

/* Hugging Face row of output row r when the rows of a head go from
 * rotate_half order (first halves, then second halves) to adjacent pairs:
 * output row h*hd + 2i + j comes from h*hd + j*hd/2 + i (llama.cpp's
 * permute: reshape(heads, 2, hd/2, cols).swapaxes(1, 2)). */
static uint64_t source_row(uint64_t r, uint64_t rows, uint32_t heads) {
    if (!heads) return r;
    const uint64_t hd = rows / heads, h = r / hd, p = r % hd;
    return h * hd + (p % 2) * (hd / 2) + p / 2;
}

static void fill_tensor(const struct out_tensor *o, float *row, uint8_t *out) {
    const uint64_t rows = o->ne[1], cols = o->ne[0], row_bytes = o->n_bytes / rows;
    if (o->values) {
        herd_quantize_row_ref(o->type, o->values, out, (size_t)cols);
        return;
    }
    const size_t esize = herd_safetensors_dtype_size(o->src->dtype);
    for (uint64_t r = 0; r < rows; r++) {
        const uint8_t *src = o->src->data + source_row(r, rows, o->permute_heads) * cols * esize;
        herd_dequantize_row_ref(o->src_type, src, row, (size_t)cols);
        herd_quantize_row_ref(o->type, row, out + r * row_bytes, (size_t)cols);
    }
}

static void default_name(const char *dir, char *out, size_t cap) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t start = n;
    while (start > 0 && dir[start - 1] != '/') start--;
    snprintf(out, cap, "%.*s", (int)(n - start), dir + start);
    if (!out[0] || strcmp(out, ".") == 0) snprintf(out, cap, "model");
}

enum herd_status herd_hf_convert(const struct herd_hf_convert_params *p, struct herd_hf_convert_summary *summary,
                                 struct herd_error *err) {
    const double t0 = herd_time_now_s();
    enum herd_status rc;
    struct hf_config c = {0};
    struct weights w = {0};
    struct plan pl = {0};
    struct herd_hf_vocab *v = NULL;
    struct herd_gguf_writer *gw = NULL;
    float *row = NULL;
    uint8_t *packed = NULL;
    bool tied = false;
    uint32_t n_vocab = 0;
    if (!p->type_auto && !herd_quantize_row_supported(p->type))
        return herd_error_set(err, HERD_E_INVALID,
                              "output type must be F32, F16, BF16 or a block type herd quantize writes");
#define TRY(expr)                                                                                                      \
    do {                                                                                                               \
        if ((rc = (expr)) != HERD_OK) goto out;                                                                        \
    } while (0)
    w.dir = p->model_dir;
    TRY(read_config(&c, p->model_dir, err));
    TRY(weights_open(&w, p->model_dir, err));
    TRY(weights_check_unique(&w, err));
    TRY(make_plan(&pl, &w, &c, &tied, &n_vocab, err));
    TRY(herd_hf_vocab_load(p->model_dir, n_vocab, &v, err));

    /* "auto": the token embedding's own type, so nothing is lost or padded */
    enum herd_ggml_type type = p->type;
    for (size_t i = 0; p->type_auto && i < pl.n; i++)
        if (strcmp(pl.t[i].name, "token_embd.weight") == 0) type = pl.t[i].src_type;
    const struct herd_ggml_type_info *ti = herd_ggml_type_info(type);
    uint64_t max_bytes = 0, max_cols = 0, total = 0, n_params = 0;
    for (size_t i = 0; i < pl.n; i++) {
        struct out_tensor *o = &pl.t[i];
        o->type = o->n_dims == 2 && o->ne[0] % ti->block_elems == 0 ? type : HERD_GGML_TYPE_F32;
        TRY(herd_ggml_tensor_nbytes(o->type, o->n_dims, o->ne, NULL, &o->n_bytes, err));
        if (o->n_bytes > max_bytes) max_bytes = o->n_bytes;
        if (o->ne[0] > max_cols) max_cols = o->ne[0];
        total += o->n_bytes; /* each fits in int64 and there are at most ~6k */
        n_params += o->ne[0] * o->ne[1];
    }
    row = malloc(max_cols * sizeof *row);
    packed = max_bytes <= SIZE_MAX ? malloc((size_t)max_bytes) : NULL;
    if (!row || !packed) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory for a tensor of %llu bytes",
                            (unsigned long long)max_bytes);
        goto out;
    }

    char name[128];
    if (p->name)
        snprintf(name, sizeof name, "%s", p->name);
    else
        default_name(p->model_dir, name, sizeof name);
    if (!(gw = herd_gguf_writer_create())) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    TRY(write_meta(gw, &c, name, type, n_vocab, err));
    TRY(herd_hf_vocab_write(v, gw, err));
    TRY(herd_llama_meta_write_quant_version(gw, type, err));
    for (size_t i = 0; i < pl.n; i++)
        TRY(herd_gguf_writer_add_tensor(gw, pl.t[i].name, pl.t[i].type, pl.t[i].n_dims, pl.t[i].ne, err));
    TRY(herd_gguf_writer_begin(gw, p->out_path, err));
    uint64_t done = 0;
    for (size_t i = 0; i < pl.n; i++) {
        const struct out_tensor *o = &pl.t[i];
        fill_tensor(o, row, packed);
        if (o->src) herd_safetensors_release(w.files[o->file], o->src);
        TRY(herd_gguf_writer_put_tensor_data(gw, packed, o->n_bytes, err));
        done += o->n_bytes;
        if (p->progress) {
            const struct herd_hf_convert_progress pr = {i + 1, pl.n, o->name, done, total, herd_time_now_s() - t0};
            p->progress(p->progress_ctx, &pr);
        }
    }
    TRY(herd_gguf_writer_finish(gw, err));
#undef TRY
    if (summary) {
        memset(summary, 0, sizeof *summary);
        snprintf(summary->arch, sizeof summary->arch, "%s", c.arch);
        summary->type = type;
        summary->n_tensors = pl.n;
        summary->n_params = n_params;
        summary->data_bytes = total;
        summary->n_vocab = n_vocab;
        snprintf(summary->tokenizer, sizeof summary->tokenizer, "%s", v->kind == HERD_HF_VOCAB_SPM ? "llama" : "gpt2");
        snprintf(summary->pre, sizeof summary->pre, "%s", v->pre);
        summary->tied = tied;
        summary->seconds = herd_time_now_s() - t0;
    }
out:
    herd_gguf_writer_destroy(gw);
    free(row);
    free(packed);
    herd_hf_vocab_destroy(v);
    free(pl.t);
    free(pl.rope_freqs);
    weights_cleanup(&w);
    return rc;
}
