/* Shared Llama metadata writer for the model-creating tools. */
#include "convert/llama_meta.h"

#include <stdbool.h>
#include <stdio.h>

uint32_t herd_llama_file_type(enum herd_ggml_type t) {
    switch (t) {
    case HERD_GGML_TYPE_F16: return 1;
    case HERD_GGML_TYPE_Q4_0: return 2;
    case HERD_GGML_TYPE_Q8_0: return 7;
    case HERD_GGML_TYPE_BF16: return 32;
    default: return 0;
    }
}

enum herd_status herd_llama_meta_write(struct herd_gguf_writer *w, const struct herd_llama_meta *m,
                                       struct herd_error *err) {
    enum herd_status rc;
    const char *a = m->arch ? m->arch : "llama";
    const uint32_t hd = m->head_dim ? m->head_dim : m->n_embd / m->n_head;
    const struct {
        const char *key;
        uint32_t v;
        bool write;
    } u32s[] = {
        {"vocab_size", m->n_vocab, true},
        {"context_length", m->n_ctx, true},
        {"embedding_length", m->n_embd, true},
        {"block_count", m->n_layer, true},
        {"feed_forward_length", m->n_ff, true},
        {"attention.head_count", m->n_head, true},
        {"attention.head_count_kv", m->n_head_kv, true},
        {"attention.key_length", hd, m->head_dim != 0},
        {"attention.value_length", hd, m->head_dim != 0},
        {"attention.sliding_window", m->n_swa, m->n_swa != 0},
        {"expert_count", m->n_expert, m->n_expert != 0},
        {"expert_used_count", m->n_expert_used, m->n_expert != 0},
        {"expert_feed_forward_length", m->n_ff_exp, m->n_ff_exp != 0},
        {"expert_shared_feed_forward_length", m->n_ff_shexp, m->n_ff_shexp != 0},
    };
    const struct {
        const char *key;
        float v;
        bool write;
    } f32s[] = {
        {"rope.freq_base", m->rope_freq_base, true},
        {"attention.layer_norm_rms_epsilon", m->rms_eps, true},
        {"attn_logit_softcapping", m->attn_softcap, m->attn_softcap != 0},
        {"final_logit_softcapping", m->final_softcap, m->final_softcap != 0},
        {"rope.scaling.factor", m->rope_linear, m->rope_linear != 0},
    };
    char key[128];
    if ((rc = herd_gguf_writer_add_string(w, "general.architecture", a, err)) != HERD_OK) return rc;
    if ((rc = herd_gguf_writer_add_string(w, "general.name", m->name, err)) != HERD_OK) return rc;
    if ((rc = herd_gguf_writer_add_u32(w, "general.file_type", herd_llama_file_type(m->type), err)) != HERD_OK)
        return rc;
    for (size_t i = 0; i < sizeof u32s / sizeof u32s[0]; i++) {
        if (!u32s[i].write) continue;
        snprintf(key, sizeof key, "%s.%s", a, u32s[i].key);
        if ((rc = herd_gguf_writer_add_u32(w, key, u32s[i].v, err)) != HERD_OK) return rc;
    }
    for (size_t i = 0; i < sizeof f32s / sizeof f32s[0]; i++) {
        if (!f32s[i].write) continue;
        snprintf(key, sizeof key, "%s.%s", a, f32s[i].key);
        if ((rc = herd_gguf_writer_add_f32(w, key, f32s[i].v, err)) != HERD_OK) return rc;
    }
    if (m->rope_linear != 0) {
        snprintf(key, sizeof key, "%s.rope.scaling.type", a);
        if ((rc = herd_gguf_writer_add_string(w, key, "linear", err)) != HERD_OK) return rc;
    }
    snprintf(key, sizeof key, "%s.rope.dimension_count", a);
    return herd_gguf_writer_add_u32(w, key, hd, err);
}

enum herd_status herd_llama_meta_write_quant_version(struct herd_gguf_writer *w, enum herd_ggml_type t,
                                                     struct herd_error *err) {
    if (t != HERD_GGML_TYPE_Q8_0 && t != HERD_GGML_TYPE_Q4_0) return HERD_OK;
    return herd_gguf_writer_add_u32(w, "general.quantization_version", 2, err);
}
