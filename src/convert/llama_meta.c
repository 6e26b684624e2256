/* Shared Llama metadata writer for the model-creating tools. */
#include "convert/llama_meta.h"

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
    const struct {
        const char *key;
        uint32_t v;
    } u32s[] = {
        {"general.file_type", herd_llama_file_type(m->type)},
        {"llama.vocab_size", m->n_vocab},
        {"llama.context_length", m->n_ctx},
        {"llama.embedding_length", m->n_embd},
        {"llama.block_count", m->n_layer},
        {"llama.feed_forward_length", m->n_ff},
        {"llama.attention.head_count", m->n_head},
        {"llama.attention.head_count_kv", m->n_head_kv},
    };
    if ((rc = herd_gguf_writer_add_string(w, "general.architecture", "llama", err)) != HERD_OK) return rc;
    if ((rc = herd_gguf_writer_add_string(w, "general.name", m->name, err)) != HERD_OK) return rc;
    for (size_t i = 0; i < sizeof u32s / sizeof u32s[0]; i++)
        if ((rc = herd_gguf_writer_add_u32(w, u32s[i].key, u32s[i].v, err)) != HERD_OK) return rc;
    if ((rc = herd_gguf_writer_add_f32(w, "llama.rope.freq_base", m->rope_freq_base, err)) != HERD_OK) return rc;
    if ((rc = herd_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", m->rms_eps, err)) != HERD_OK)
        return rc;
    return herd_gguf_writer_add_u32(w, "llama.rope.dimension_count", m->n_embd / m->n_head, err);
}

enum herd_status herd_llama_meta_write_quant_version(struct herd_gguf_writer *w, enum herd_ggml_type t,
                                                     struct herd_error *err) {
    if (t != HERD_GGML_TYPE_Q8_0 && t != HERD_GGML_TYPE_Q4_0) return HERD_OK;
    return herd_gguf_writer_add_u32(w, "general.quantization_version", 2, err);
}
