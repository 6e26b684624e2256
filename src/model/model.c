/* Model loading: validate, then bind every tensor by name. */
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"

/* Copies a vector tensor (any computed type) into dst as f32. */
static void to_f32(const struct herd_gguf_tensor *t, float *dst) {
    herd_dequantize_row_ref(t->type, t->data, dst, (size_t)t->n_elems);
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
    m->rope_neox = strcmp(d->arch, "qwen2") == 0;
    const size_t q_dim = d->n_head * d->head_dim, kv_dim = d->n_head_kv * d->head_dim;
    const bool bias = m->rope_neox;
    const struct herd_gguf_tensor *rf = herd_gguf_find_tensor(g, "rope_freqs.weight");
    if (rf && (rf->n_elems != d->n_rot / 2 || !herd_ggml_type_info(rf->type)->computed)) {
        rc = herd_error_set(err, HERD_E_FORMAT, "%s: rope_freqs.weight has %llu values; expected %llu", path,
                            (unsigned long long)rf->n_elems, (unsigned long long)(d->n_rot / 2));
        goto fail;
    }
    size_t n_f32 = d->n_embd + d->n_layer * (2 * d->n_embd + (bias ? q_dim + 2 * kv_dim : 0)) + (rf ? d->n_rot / 2 : 0);
    m->owned_f32 = malloc(n_f32 * sizeof(float));
    m->layers = calloc(d->n_layer, sizeof *m->layers);
    if (!m->owned_f32 || !m->layers) {
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
    if (rf) {
        to_f32(rf, f);
        m->rope_freqs = f;
        f += d->n_rot / 2;
    }
    for (uint64_t l = 0; l < d->n_layer; l++) {
        struct herd_layer *L = &m->layers[l];
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
        herd_matrix_from_tensor(&L->wq, T("attn_q.weight"));
        herd_matrix_from_tensor(&L->wk, T("attn_k.weight"));
        herd_matrix_from_tensor(&L->wv, T("attn_v.weight"));
        herd_matrix_from_tensor(&L->wo, T("attn_output.weight"));
        herd_matrix_from_tensor(&L->w_gate, T("ffn_gate.weight"));
        herd_matrix_from_tensor(&L->w_up, T("ffn_up.weight"));
        herd_matrix_from_tensor(&L->w_down, T("ffn_down.weight"));
#undef T
    }
    const char *no_pack = getenv("HERD_NO_PACK");
    if (herd_kernels_best()->prefers_packed && !(no_pack && *no_pack && strcmp(no_pack, "0") != 0)) {
        /* every matrix the forward pass multiplies, the output (maybe token_embd) once */
        size_t total = herd_matrix_packed_bytes(&m->output);
        for (uint64_t l = 0; l < d->n_layer; l++) {
            struct herd_layer *L = &m->layers[l];
            struct herd_matrix *lm[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
            for (size_t i = 0; i < 7; i++) total += herd_matrix_packed_bytes(lm[i]);
        }
        if (total) {
            m->packed_store = herd_alloc_large(total);
            if (!m->packed_store) {
                rc = herd_error_set(err, HERD_E_NOMEM, "%s: cannot allocate %zu bytes for repacked weights", path,
                                    total);
                goto fail;
            }
            m->packed_bytes = total;
            uint8_t *dst = m->packed_store;
            size_t n = herd_matrix_packed_bytes(&m->output);
            if (n) herd_matrix_pack(&m->output, dst), dst += n;
            for (uint64_t l = 0; l < d->n_layer; l++) {
                struct herd_layer *L = &m->layers[l];
                struct herd_matrix *lm[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
                for (size_t i = 0; i < 7; i++) {
                    n = herd_matrix_packed_bytes(lm[i]);
                    if (n) herd_matrix_pack(lm[i], dst), dst += n;
                }
            }
        }
    }
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
    free(m->packed_store);
    free(m->layers);
    free(m);
}

const char *herd_matrix_role_name(enum herd_matrix_role role) {
    static const char *const names[HERD_ROLE__COUNT] = {"attn_q",   "attn_k", "attn_v",   "attn_output",
                                                        "ffn_gate", "ffn_up", "ffn_down", "output"};
    return role < HERD_ROLE__COUNT ? names[role] : "?";
}
