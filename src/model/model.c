/* Model loading: validate, then bind every tensor by name. */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/cpu.h"
#include "base/pool.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"

/* Copies a vector tensor (any computed type) into dst as f32. */
static void to_f32(const struct herd_gguf_tensor *t, float *dst) {
    herd_dequantize_row_ref(t->type, t->data, dst, (size_t)t->n_elems);
}

/* Bytes of m's packed copy where family k has a tiled kernel for its type
 * (Q8_0 / Q4_0, and kpack.h's types where the family has gemm_kpack), else
 * 0: the matrix stays row by row. */
static size_t packed_bytes(const struct herd_kernels *k, const struct herd_matrix *m) {
    return herd_kernels_packs(k, m->type) ? herd_matrix_packed_bytes(m) : 0;
}

/* The matrices of one model that get packed, each with its place in
 * packed_store. */
struct pack_job {
    const struct herd_model *model;
    struct herd_matrix **mats;
    uint8_t **dst;
    size_t n;
};

/* Matrices a layer can multiply: its seven, the router and 3 per expert. */
static size_t layer_matrix_slots(const struct herd_model *m) { return 8 + 3 * (size_t)m->desc.n_expert; }

/* The i-th of the matrices the forward pass multiplies: the output, then
 * each layer's (layer_matrix_slots each); NULL for an empty slot (no
 * shared expert, a dense layer's experts). */
static struct herd_matrix *multiplied_matrix(struct herd_model *m, size_t i) {
    if (i == 0) return &m->output;
    const size_t per = layer_matrix_slots(m), j = (i - 1) % per;
    struct herd_layer *L = &m->layers[(i - 1) / per];
    struct herd_matrix *lm[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down, &L->router};
    struct herd_matrix *w = NULL;
    if (j < 8)
        w = lm[j];
    else if (L->exp_gate) {
        const size_t e = (j - 8) / 3;
        w = (j - 8) % 3 == 0 ? &L->exp_gate[e] : (j - 8) % 3 == 1 ? &L->exp_up[e] : &L->exp_down[e];
    }
    return w && w->data ? w : NULL;
}

static void pack_range(void *ctx, int ith, size_t begin, size_t end) {
    (void)ith;
    struct pack_job *j = ctx;
    for (size_t i = begin; i < end; i++) {
        struct herd_matrix *w = j->mats[i];
        herd_matrix_pack(w, j->dst[i]);
        /* at once, so that the peak is not both copies either */
        if (w->data != j->model->tok_embd.data)
            herd_gguf_drop_pages(j->model->gguf, w->data, (size_t)w->rows * w->row_bytes);
    }
}

/* Repacks every matrix the forward pass multiplies (the output, maybe
 * token_embd, once) that the best family tiles into one allocation, on
 * every core (a 1B model's K-quant packing takes seconds on one), then gives
 * the original pages of each packed matrix back to the kernel: they are
 * file-backed and unmodified, so the process holds the packed copy alone,
 * not both (a page read again later comes back from the file). token_embd's
 * rows stay: the embedding lookup reads them. */
static enum herd_status pack_weights(struct herd_model *m, const char *path, struct herd_error *err) {
    const struct herd_kernels *kb = herd_kernels_best();
    if (!kb->prefers_packed) return HERD_OK;
    const size_t n_max = 1 + layer_matrix_slots(m) * (size_t)m->desc.n_layer;
    struct pack_job j = {.model = m, .mats = calloc(n_max, sizeof *j.mats), .dst = calloc(n_max, sizeof *j.dst)};
    enum herd_status rc = HERD_OK;
    if (!j.mats || !j.dst) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    size_t total = 0;
    for (size_t i = 0; i < n_max; i++) {
        struct herd_matrix *w = multiplied_matrix(m, i);
        if (!w) continue;
        const size_t bytes = packed_bytes(kb, w);
        if (!bytes) continue;
        j.mats[j.n] = w;
        j.dst[j.n++] = (uint8_t *)(uintptr_t)total; /* an offset until the store exists */
        total += (bytes + 63) / 64 * 64;            /* herd_matrix_pack wants 64-byte alignment */
    }
    if (!total) goto out;
    m->packed_store = herd_alloc_large(total);
    if (!m->packed_store) {
        rc = herd_error_set(err, HERD_E_NOMEM, "%s: cannot allocate %zu bytes for repacked weights", path, total);
        goto out;
    }
    m->packed_bytes = total;
    for (size_t i = 0; i < j.n; i++) j.dst[i] = m->packed_store + (uintptr_t)j.dst[i];
    struct herd_pool *pool = herd_pool_create(herd_cpu_count());
    if (pool) {
        herd_pool_run_split(pool, j.n, 1, pack_range, &j);
        herd_pool_destroy(pool);
    } else {
        pack_range(&j, 0, 0, j.n);
    }
out:
    free(j.mats);
    free(j.dst);
    return rc;
}

/* A MoE layer's router and its experts: each expert's gate, up and down
 * matrices are row views of the 3-D ffn_*_exps tensors (expert e: rows
 * [e * rows, (e + 1) * rows)), loaded once with the file. */
static void bind_experts(struct herd_model *m, struct herd_layer *L, uint64_t l) {
    const struct herd_model_desc *d = &m->desc;
    const struct herd_gguf *g = m->gguf;
    char name[96];
#define T(suffix)                                                                                                      \
    (snprintf(name, sizeof name, "blk.%llu.%s", (unsigned long long)l, suffix), herd_gguf_find_tensor(g, name))
    herd_matrix_from_tensor(&L->router, T("ffn_gate_inp.weight"));
    struct herd_matrix gate, up, down;
    herd_matrix_from_tensor(&gate, T("ffn_gate_exps.weight"));
    herd_matrix_from_tensor(&up, T("ffn_up_exps.weight"));
    herd_matrix_from_tensor(&down, T("ffn_down_exps.weight"));
#undef T
    const uint64_t X = d->n_expert;
    L->exp_gate = m->experts + l * 3 * X;
    L->exp_up = L->exp_gate + X;
    L->exp_down = L->exp_up + X;
    for (uint64_t e = 0; e < X; e++) {
        L->exp_gate[e] = herd_matrix_rows(&gate, e * d->n_ff_exp, d->n_ff_exp);
        L->exp_up[e] = herd_matrix_rows(&up, e * d->n_ff_exp, d->n_ff_exp);
        L->exp_down[e] = herd_matrix_rows(&down, e * d->n_embd, d->n_embd);
    }
}

enum herd_status herd_model_load(const char *path, struct herd_model **out, struct herd_error *err) {
    *out = NULL;
    struct herd_model *m = calloc(1, sizeof *m);
    if (!m) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    enum herd_status rc = herd_gguf_open_file(path, &m->gguf, err);
    if (rc != HERD_OK) goto fail;
    if ((rc = herd_model_desc_read(m->gguf, &m->desc, err)) != HERD_OK ||
        (rc = herd_model_desc_validate(m->gguf, &m->desc, err)) != HERD_OK) {
        herd_error_prefix(err, "%s", path);
        goto fail;
    }
    const struct herd_model_desc *d = &m->desc;
    const struct herd_gguf *g = m->gguf;
    m->arch = herd_model_arch_info(d->arch);
    m->rope_neox = m->arch->rope_neox;
    m->embd_scale = m->arch->gemma ? sqrtf((float)d->n_embd) : 1.0f;
    m->attn_scale = (float)herd_model_attn_scale(d);
    bool all_slide = d->n_swa > 0;
    for (uint64_t l = 0; l < d->n_layer; l++) all_slide &= herd_model_layer_slides(d, l);
    /* a window as wide as the context frees nothing (Phi-3 128k's 262144) */
    m->window_all = all_slide && d->n_swa < UINT32_MAX ? (uint32_t)d->n_swa : 0;
    const size_t q_dim_max = d->n_head * d->head_dim, kv_dim_max = d->n_head_kv * d->head_dim;
    const bool bias = m->arch->qkv_bias, qkn = m->arch->qk_norm, post = m->arch->gemma;
    /* per-frequency RoPE divisors: Llama 3.1's, and Phi-3's LongRoPE pair */
    const char *const factor_names[3] = {"rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"};
    const struct herd_gguf_tensor *factors[3];
    size_t n_factors = 0;
    for (int i = 0; i < 3; i++) {
        const struct herd_gguf_tensor *t = factors[i] = herd_gguf_find_tensor(g, factor_names[i]);
        if (t && (t->n_elems != d->n_rot / 2 || !herd_ggml_type_info(t->type)->computed)) {
            rc = herd_error_set(err, HERD_E_FORMAT, "%s: %s has %llu values; expected %llu", path, factor_names[i],
                                (unsigned long long)t->n_elems, (unsigned long long)(d->n_rot / 2));
            goto fail;
        }
        if (t) n_factors++;
    }
    if (!factors[1] != !factors[2]) {
        rc = herd_error_set(err, HERD_E_FORMAT, "%s: %s without %s", path, factor_names[factors[1] ? 1 : 2],
                            factor_names[factors[1] ? 2 : 1]);
        goto fail;
    }
    const bool shexp = d->n_expert && m->arch->shared_expert;
    const size_t per_layer = 2 * d->n_embd + (bias ? q_dim_max + 2 * kv_dim_max : 0) + (qkn ? 2 * d->head_dim : 0) +
                             (post ? 2 * d->n_embd : 0) + (shexp ? d->n_embd : 0);
    size_t n_f32 = d->n_embd + d->n_layer * per_layer + n_factors * (d->n_rot / 2);
    m->owned_f32 = malloc(n_f32 * sizeof(float));
    m->layers = calloc(d->n_layer, sizeof *m->layers);
    if (d->n_expert) m->experts = calloc(d->n_layer * 3 * d->n_expert, sizeof *m->experts);
    if (!m->owned_f32 || !m->layers || (d->n_expert && !m->experts)) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto fail;
    }
    float *f = m->owned_f32;
    herd_matrix_from_tensor(&m->tok_embd, herd_gguf_find_tensor(g, "token_embd.weight"));
    const struct herd_gguf_tensor *out_t = herd_gguf_find_tensor(g, "output.weight");
    if (out_t)
        herd_matrix_from_tensor(&m->output, out_t);
    else
        m->output = m->tok_embd;
    to_f32(herd_gguf_find_tensor(g, "output_norm.weight"), f);
    m->output_norm = f;
    f += d->n_embd;
    const float **factor_dst[3] = {&m->rope_freqs, &m->rope_long, &m->rope_short};
    for (int i = 0; i < 3; i++) {
        if (!factors[i]) continue;
        to_f32(factors[i], f);
        *factor_dst[i] = f;
        f += d->n_rot / 2;
    }
    for (uint64_t l = 0; l < d->n_layer; l++) {
        struct herd_layer *L = &m->layers[l];
        /* this layer's widths (a pruned file's may be below the model's q_dim / kv_dim) */
        const size_t q_dim = d->n_head_layer[l] * d->head_dim, kv_dim = d->n_head_kv_layer[l] * d->head_dim;
        char name[96];
#define T(suffix)                                                                                                      \
    (snprintf(name, sizeof name, "blk.%llu.%s", (unsigned long long)l, suffix), herd_gguf_find_tensor(g, name))
        to_f32(T("attn_norm.weight"), f);
        L->attn_norm = f;
        f += d->n_embd;
        to_f32(T("ffn_norm.weight"), f);
        L->ffn_norm = f;
        f += d->n_embd;
        if (bias) {
            to_f32(T("attn_q.bias"), f);
            L->bq = f;
            f += q_dim;
            to_f32(T("attn_k.bias"), f);
            L->bk = f;
            f += kv_dim;
            to_f32(T("attn_v.bias"), f);
            L->bv = f;
            f += kv_dim;
        }
        if (qkn) {
            to_f32(T("attn_q_norm.weight"), f);
            L->q_norm = f;
            f += d->head_dim;
            to_f32(T("attn_k_norm.weight"), f);
            L->k_norm = f;
            f += d->head_dim;
        }
        if (post) {
            to_f32(T("post_attention_norm.weight"), f);
            L->post_attn = f;
            f += d->n_embd;
            to_f32(T("post_ffw_norm.weight"), f);
            L->post_ffn = f;
            f += d->n_embd;
        }
        L->slides = herd_model_layer_slides(d, l);
        const struct herd_gguf_tensor *wq = T("attn_q.weight");
        if (wq) {
            herd_matrix_from_tensor(&L->wq, wq);
            herd_matrix_from_tensor(&L->wk, T("attn_k.weight"));
            herd_matrix_from_tensor(&L->wv, T("attn_v.weight"));
        } else { /* phi3: rows [0, q_dim) are Q, then K, then V (validated) */
            herd_matrix_from_tensor(&L->wq, T("attn_qkv.weight"));
            L->wk = herd_matrix_rows(&L->wq, q_dim, kv_dim);
            L->wv = herd_matrix_rows(&L->wq, q_dim + kv_dim, kv_dim);
            L->wq = herd_matrix_rows(&L->wq, 0, q_dim);
        }
        herd_matrix_from_tensor(&L->wo, T("attn_output.weight"));
        if (d->n_expert) {
            bind_experts(m, L, l);
            if (shexp) {
                to_f32(T("ffn_gate_inp_shexp.weight"), f);
                L->shexp_gate = f;
                f += d->n_embd;
                herd_matrix_from_tensor(&L->w_gate, T("ffn_gate_shexp.weight"));
                herd_matrix_from_tensor(&L->w_up, T("ffn_up_shexp.weight"));
                herd_matrix_from_tensor(&L->w_down, T("ffn_down_shexp.weight"));
            }
        } else {
            herd_matrix_from_tensor(&L->w_up, T("ffn_up.weight"));
            const struct herd_gguf_tensor *wg = T("ffn_gate.weight");
            if (wg) {
                herd_matrix_from_tensor(&L->w_gate, wg);
            } else { /* phi3: ffn_up's first n_ff rows are the gate, the rest the up projection */
                L->w_gate = herd_matrix_rows(&L->w_up, 0, d->n_ff_layer[l]);
                L->w_up = herd_matrix_rows(&L->w_up, d->n_ff_layer[l], d->n_ff_layer[l]);
            }
            herd_matrix_from_tensor(&L->w_down, T("ffn_down.weight"));
        }
#undef T
    }
    const char *no_pack = getenv("HERD_NO_PACK");
    if (!(no_pack && *no_pack && strcmp(no_pack, "0") != 0) && (rc = pack_weights(m, path, err)) != HERD_OK) goto fail;
    *out = m;
    return HERD_OK;
fail:
    herd_model_destroy(m);
    return rc;
}

void herd_model_destroy(struct herd_model *m) {
    if (!m) return;
    herd_gguf_destroy(m->gguf);
    free(m->owned_f32);
    free(m->experts);
    free(m->packed_store);
    free(m->layers);
    free(m);
}

const char *herd_matrix_role_name(enum herd_matrix_role role) {
    static const char *const names[HERD_ROLE__COUNT] = {"attn_q",   "attn_k", "attn_v",   "attn_output",
                                                        "ffn_gate", "ffn_up", "ffn_down", "output"};
    return role < HERD_ROLE__COUNT ? names[role] : "?";
}
