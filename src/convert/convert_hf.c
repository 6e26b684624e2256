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

enum moe_layout {
    MOE_NONE,
    MOE_MIXTRAL, /* block_sparse_moe.gate, block_sparse_moe.experts.N.w1 / w3 / w2 */
    MOE_QWEN,    /* mlp.gate, mlp.experts.N.gate_proj / up_proj / down_proj */
};

/* What sets each Hugging Face layout apart; every other step is Llama's. */
struct hf_arch {
    const char *hf;         /* architectures[0] */
    const char *model_type; /* for a config.json without architectures */
    const char *arch;       /* GGUF architecture */
    bool permute_qk;        /* rotate_half rows -> adjacent pairs (GGUF llama) */
    bool qkv_bias;          /* q_proj / k_proj / v_proj biases (qwen2) */
    bool qk_norm;           /* self_attn.q_norm / k_norm over each head (qwen3, gemma3) */
    bool gemma;             /* norms stored as w for (1 + w), four norms a layer, GELU-tanh, tied */
    bool fused;             /* phi3: qkv_proj and gate_up_proj */
    bool head_dim_free;     /* the modeling code takes head_dim from the config, whatever the width */
    enum moe_layout moe;
    bool shared_expert; /* qwen2moe: mlp.shared_expert.* behind mlp.shared_expert_gate */
    bool multimodal;    /* the text model of an image-text one: config.json's text_config, tensors under
                           language_model.model. (or model.language_model.), the vision tower's left out */
};

static const struct hf_arch archs[] = {
    {"LlamaForCausalLM", "llama", "llama", .permute_qk = true},
    {"MistralForCausalLM", "mistral", "llama", .permute_qk = true},
    {"MixtralForCausalLM", "mixtral", "llama", .permute_qk = true, .moe = MOE_MIXTRAL},
    {"Qwen2ForCausalLM", "qwen2", "qwen2", .qkv_bias = true},
    {"Qwen3ForCausalLM", "qwen3", "qwen3", .qk_norm = true, .head_dim_free = true},
    {"Gemma2ForCausalLM", "gemma2", "gemma2", .gemma = true, .head_dim_free = true},
    {"Gemma3ForCausalLM", "gemma3_text", "gemma3", .qk_norm = true, .gemma = true, .head_dim_free = true},
    {"Gemma3ForConditionalGeneration", "gemma3", "gemma3", .qk_norm = true, .gemma = true, .head_dim_free = true,
     .multimodal = true},
    {"Phi3ForCausalLM", "phi3", "phi3", .fused = true},
    {"Qwen2MoeForCausalLM", "qwen2_moe", "qwen2moe", .qkv_bias = true, .moe = MOE_QWEN, .shared_expert = true},
    {"Qwen3MoeForCausalLM", "qwen3_moe", "qwen3moe", .qk_norm = true, .head_dim_free = true, .moe = MOE_QWEN},
};

struct hf_config {
    char hf_arch[64];
    const struct hf_arch *a;
    const char *arch;                                                  /* GGUF architecture */
    uint32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx, n_vocab; /* n_vocab 0: not given */
    uint32_t head_dim;
    bool write_head_dim; /* attention.key_length / value_length: config.json names head_dim (llama.cpp's rule) */
    float rope_base, rms_eps;
    bool tied;
    /* Llama 3 RoPE scaling ("rope_type": "llama3") */
    bool llama3_rope;
    float rope_factor, low_freq_factor, high_freq_factor;
    float orig_ctx;
    float rope_linear; /* "linear" RoPE scaling factor; 0: none */
    /* phi3: original_max_position_embeddings, and LongRoPE's per-frequency
     * divisors ([head_dim / 2] each) with the cos / sin factor */
    uint32_t n_ctx_orig;
    float *long_factors, *short_factors;
    float rope_attn_factor;
    /* sliding windows and gemma */
    bool write_swa; /* attention.sliding_window is written (n_swa may be 0: phi3's "none") */
    uint32_t n_swa;
    float attn_softcap, final_softcap; /* gemma2; 0: none */
    float attn_scale;                  /* 0: the architecture's rule gives query_pre_attn_scalar */
    /* mixture of experts */
    uint32_t n_expert, n_expert_used, n_ff_exp, n_ff_shexp;
    int norm_topk; /* expert_weights_norm; -1: not written */
};

static void config_cleanup(struct hf_config *c) {
    free(c->long_factors);
    free(c->short_factors);
}

static bool has(const json_t *cfg, const char *key) {
    const json_t *v = json_object_get(cfg, key);
    return v && !json_is_null(v);
}

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

/* LongRoPE's list of head_dim / 2 positive divisors. */
static enum herd_status cfg_factors(const json_t *rs, const char *path, const char *key, uint32_t n, float **out,
                                    struct herd_error *err) {
    const json_t *a = json_object_get(rs, key);
    if (!json_is_array(a) || json_array_size(a) != n)
        return herd_error_set(err, HERD_E_INVALID, "%s: rope_scaling.%s is not a list of %u numbers (head_dim / 2)",
                              path, key, n);
    if (!(*out = malloc(n * sizeof **out))) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(a, i);
        const double d = json_number_value(v);
        if (!json_is_number(v) || !(d > 0) || !isfinite((float)d))
            return herd_error_set(err, HERD_E_INVALID, "%s: rope_scaling.%s[%u] is not a positive number", path, key,
                                  i);
        (*out)[i] = (float)d;
    }
    return HERD_OK;
}

/* rope_scaling: none or "default"; Llama 3's "llama3" (llama only); "linear"
 * (any: llama.cpp's loader reads rope.scaling.type for every architecture);
 * phi3's LongRoPE ("longrope", formerly "su"). Anything else (yarn, dynamic
 * NTK) herd does not run: refused by name. */
static enum herd_status read_rope_scaling(struct hf_config *c, const json_t *cfg, const char *path,
                                          struct herd_error *err) {
    const json_t *rs = json_object_get(cfg, "rope_scaling");
    if (!rs || json_is_null(rs)) return HERD_OK;
    if (!json_is_object(rs)) return herd_error_set(err, HERD_E_FORMAT, "%s: rope_scaling is not an object", path);
    const json_t *t = json_object_get(rs, "rope_type");
    if (!json_is_string(t)) t = json_object_get(rs, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : "default";
    enum herd_status rc;
    if (strcmp(type, "default") == 0) return HERD_OK;
    if (strcmp(type, "linear") == 0) {
        if ((rc = cfg_float(rs, path, "factor", 1.0, &c->rope_linear, err)) != HERD_OK)
            return herd_error_prefix(err, "rope_scaling");
        /* herd's RoPE takes 1 / factor as a scale in (0, 1] */
        if (c->rope_linear < 1.0f)
            return herd_error_set(err, HERD_E_UNSUPPORTED,
                                  "%s: rope_scaling 'linear' with factor %g below 1 is not supported", path,
                                  c->rope_linear);
        if (c->rope_linear == 1.0f) c->rope_linear = 0;
        return HERD_OK;
    }
    if ((strcmp(type, "longrope") == 0 || strcmp(type, "su") == 0) && strcmp(c->arch, "phi3") == 0) {
        if ((rc = cfg_factors(rs, path, "long_factor", c->head_dim / 2, &c->long_factors, err)) != HERD_OK ||
            (rc = cfg_factors(rs, path, "short_factor", c->head_dim / 2, &c->short_factors, err)) != HERD_OK)
            return rc;
        /* Hugging Face's (and llama.cpp's) cos / sin factor, unless the
         * config gives its own */
        const double scale = (double)c->n_ctx / c->n_ctx_orig;
        c->rope_attn_factor = scale > 1.0 ? (float)sqrt(1 + log(scale) / log((double)c->n_ctx_orig)) : 1.0f;
        return cfg_float(rs, path, "attention_factor", c->rope_attn_factor, &c->rope_attn_factor, err);
    }
    if (strcmp(type, "llama3") != 0 || strcmp(c->arch, "llama") != 0)
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "%s: rope_scaling type '%s' is not supported for %s (herd runs 'linear', Llama 3's "
                              "'llama3' and Phi-3's 'longrope')",
                              path, type, c->hf_arch);
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

/* Which layers slide, as the config says it: Gemma 2 alternates (even layers
 * slide), Gemma 3 has one global layer in sliding_window_pattern (6); newer
 * configs list "layer_types" instead. herd's architectures fix the period, so
 * any other pattern is refused. */
static enum herd_status check_layer_pattern(const struct hf_config *c, const json_t *cfg, const char *path,
                                            uint32_t period, struct herd_error *err) {
    uint32_t pattern = period;
    enum herd_status rc;
    if (has(cfg, "sliding_window_pattern") &&
        (rc = cfg_uint(cfg, path, "sliding_window_pattern", period, HERD_MAX_LAYERS, &pattern, err)) != HERD_OK)
        return rc;
    if (pattern != period)
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "%s: sliding_window_pattern %u is not supported (%s runs one global layer in %u)", path,
                              pattern, c->hf_arch, period);
    const json_t *types = json_object_get(cfg, "layer_types");
    if (!types || json_is_null(types)) return HERD_OK;
    if (!json_is_array(types) || json_array_size(types) != c->n_layer)
        return herd_error_set(err, HERD_E_FORMAT, "%s: layer_types is not a list of %u layer types", path, c->n_layer);
    for (uint32_t l = 0; l < c->n_layer; l++) {
        const char *want = (l + 1) % period ? "sliding_attention" : "full_attention";
        const json_t *v = json_array_get(types, l);
        if (!json_is_string(v) || strcmp(json_string_value(v), want) != 0)
            return herd_error_set(err, HERD_E_UNSUPPORTED,
                                  "%s: layer_types[%u] is not '%s' (%s runs one global layer in %u, the last of each "
                                  "%u)",
                                  path, l, want, c->hf_arch, period, period);
    }
    return HERD_OK;
}

/* A softcapping field: absent takes def, null is none (0). */
static enum herd_status cfg_softcap(const json_t *cfg, const char *path, const char *key, double def, float *out,
                                    struct herd_error *err) {
    const json_t *v = json_object_get(cfg, key);
    if (v && json_is_null(v)) {
        *out = 0;
        return HERD_OK;
    }
    return cfg_float(cfg, path, key, def, out, err);
}

/* Gemma 2 and 3: windows, soft-capping, the query scale. Defaults are
 * transformers' Gemma2Config / Gemma3TextConfig ones. */
static enum herd_status read_gemma(struct hf_config *c, const json_t *cfg, const char *path, struct herd_error *err) {
    const bool g3 = strcmp(c->arch, "gemma3") == 0;
    enum herd_status rc;
    float local_base = 0, qpas = 0; /* set by the reads below; -O3 cannot tell */
    c->write_swa = true;
    if ((rc = cfg_uint(cfg, path, "sliding_window", 4096, INT32_MAX, &c->n_swa, err)) != HERD_OK ||
        (rc = check_layer_pattern(c, cfg, path, g3 ? 6 : 2, err)) != HERD_OK ||
        (rc = cfg_float(cfg, path, "query_pre_attn_scalar", 256.0, &qpas, err)) != HERD_OK)
        return rc;
    if (g3) {
        if ((rc = cfg_float(cfg, path, "rope_local_base_freq", 10000.0, &local_base, err)) != HERD_OK) return rc;
        /* herd's gemma3 runs its sliding layers at llama.cpp's fixed base */
        if (local_base != 10000.0f)
            return herd_error_set(err, HERD_E_UNSUPPORTED,
                                  "%s: rope_local_base_freq %g is not supported (gemma3's sliding layers run at 10000)",
                                  path, local_base);
        if (has(cfg, "attn_logit_softcapping") || has(cfg, "final_logit_softcapping"))
            return herd_error_set(err, HERD_E_UNSUPPORTED,
                                  "%s: logit soft-capping on Gemma 3 is not supported (its configs set both to null)",
                                  path);
    } else if ((rc = cfg_softcap(cfg, path, "attn_logit_softcapping", 50.0, &c->attn_softcap, err)) != HERD_OK ||
               (rc = cfg_softcap(cfg, path, "final_logit_softcapping", 30.0, &c->final_softcap, err)) != HERD_OK) {
        return rc;
    }
    /* Scores are scaled by query_pre_attn_scalar^-1/2. GGUF files do not
     * carry it: llama.cpp (and herd) take head_dim, or n_embd / n_head for
     * the 27B models (46 layers of Gemma 2, 62 of Gemma 3). Where the config
     * says otherwise, attention.scale carries it (herd reads it; llama.cpp's
     * Gemma loaders do not). */
    const bool big = c->n_layer == (g3 ? 62u : 46u);
    const uint32_t rule = big ? c->n_embd / c->n_head : c->head_dim;
    if (qpas != (float)rule) c->attn_scale = 1.0f / sqrtf(qpas);
    return HERD_OK;
}

/* Mixture-of-experts hyperparameters: Mixtral's names or Qwen's. */
static enum herd_status read_moe(struct hf_config *c, const json_t *cfg, const char *path, struct herd_error *err) {
    enum herd_status rc;
    const bool qwen = c->a->moe == MOE_QWEN;
    if ((rc = cfg_uint(cfg, path, qwen ? "num_experts" : "num_local_experts", 0, HERD_MAX_EXPERTS, &c->n_expert,
                       err)) != HERD_OK ||
        (rc = cfg_uint(cfg, path, "num_experts_per_tok", 0, HERD_MAX_EXPERTS, &c->n_expert_used, err)) != HERD_OK)
        return rc;
    if (c->n_expert < 2 || c->n_expert_used > c->n_expert)
        return herd_error_set(err, HERD_E_INVALID,
                              "%s: num_experts_per_tok %u with %u experts (want 1..experts, and "
                              "at least 2 experts)",
                              path, c->n_expert_used, c->n_expert);
    c->n_ff_exp = c->n_ff; /* Mixtral's experts are intermediate_size wide */
    if (!qwen) return HERD_OK;
    if ((rc = cfg_uint(cfg, path, "moe_intermediate_size", 0, HERD_MAX_FF, &c->n_ff_exp, err)) != HERD_OK) return rc;
    if (c->a->shared_expert &&
        (rc = cfg_uint(cfg, path, "shared_expert_intermediate_size", 0, HERD_MAX_FF, &c->n_ff_shexp, err)) != HERD_OK)
        return rc;
    /* Every layer an MoE layer: herd runs no mix of dense and sparse ones. */
    uint32_t step = 1;
    if ((rc = cfg_uint(cfg, path, "decoder_sparse_step", 1, HERD_MAX_LAYERS, &step, err)) != HERD_OK) return rc;
    const json_t *dense = json_object_get(cfg, "mlp_only_layers");
    if (step != 1 || (json_is_array(dense) && json_array_size(dense) > 0))
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "%s: dense layers among the expert ones (decoder_sparse_step %u, mlp_only_layers) are "
                              "not supported",
                              path, step);
    /* Renormalised top-k weights or not: transformers' default is false for
     * both Qwen MoE configs; written always, since herd's default for
     * qwen3moe (llama.cpp's) is true. */
    const json_t *norm = json_object_get(cfg, "norm_topk_prob");
    if (norm && !json_is_null(norm) && !json_is_boolean(norm))
        return herd_error_set(err, HERD_E_INVALID, "%s: norm_topk_prob is not true or false", path);
    c->norm_topk = json_is_true(norm);
    return HERD_OK;
}

/* The activation: SiLU, or GELU's tanh form for Gemma. */
static enum herd_status check_activation(const struct hf_config *c, const json_t *cfg, const char *path,
                                         struct herd_error *err) {
    /* Gemma's MLP reads hidden_activation (hidden_act is legacy there) */
    const json_t *act = c->a->gemma && has(cfg, "hidden_activation") ? json_object_get(cfg, "hidden_activation")
                                                                     : json_object_get(cfg, "hidden_act");
    const char *want = c->a->gemma ? "gelu_pytorch_tanh" : "silu";
    if (json_is_string(act) && strcmp(json_string_value(act), want) != 0)
        return herd_error_set(err, HERD_E_UNSUPPORTED, "%s: activation '%s' is not supported for %s (%s is)", path,
                              json_string_value(act), c->hf_arch, want);
    return HERD_OK;
}

static enum herd_status read_config(struct hf_config *c, const char *dir, struct herd_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *root = NULL;
    enum herd_status rc = herd_hf_json_load(path, HERD_HF_CONFIG_JSON_MAX_BYTES, &root, err);
    if (rc != HERD_OK) return rc;
    const json_t *cfg = root; /* the hyperparameters: root, or its text_config */
    const json_t *a = json_array_get(json_object_get(cfg, "architectures"), 0);
    const json_t *mt = json_object_get(cfg, "model_type");
    int which = -1;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if ((json_is_string(a) && strcmp(json_string_value(a), archs[i].hf) == 0) ||
            (!a && json_is_string(mt) && strcmp(json_string_value(mt), archs[i].model_type) == 0))
            which = (int)i;
    if (which < 0) {
        rc =
            herd_error_set(err, HERD_E_UNSUPPORTED,
                           "%s: architecture '%s' is not supported (LlamaForCausalLM, MistralForCausalLM, "
                           "MixtralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen2MoeForCausalLM, "
                           "Qwen3MoeForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, "
                           "Phi3ForCausalLM are)",
                           path,
                           json_is_string(a)    ? json_string_value(a)
                           : json_is_string(mt) ? json_string_value(mt)
                                                : "(none)");
        goto out;
    }
    c->a = &archs[which];
    snprintf(c->hf_arch, sizeof c->hf_arch, "%s", c->a->hf);
    c->arch = c->a->arch;
    c->norm_topk = -1;
    /* tie_word_embeddings is the outer config's (transformers ties the text
     * model's head through it); the rest is the text model's */
    const json_t *tie = json_object_get(cfg, "tie_word_embeddings");
    if (c->a->multimodal) {
        const json_t *text = json_object_get(cfg, "text_config");
        if (!json_is_object(text)) {
            rc = herd_error_set(err, HERD_E_FORMAT, "%s: text_config is missing or not an object", path);
            goto out;
        }
        if (!tie) tie = json_object_get(text, "tie_word_embeddings");
        cfg = text;
        snprintf(path + strlen(path), sizeof path - strlen(path), " text_config");
    }
    /* Gemma 3's text config leaves these to Gemma3TextConfig's defaults
     * (the multimodal checkpoints omit them); elsewhere they are required. */
    const bool g3 = strcmp(c->arch, "gemma3") == 0;
    if ((rc = cfg_uint(cfg, path, "hidden_size", 0, HERD_MAX_EMBD, &c->n_embd, err)) != HERD_OK ||
        (rc = cfg_uint(cfg, path, "num_hidden_layers", 0, HERD_MAX_LAYERS, &c->n_layer, err)) != HERD_OK ||
        (rc = cfg_uint(cfg, path, "num_attention_heads", g3 ? 8 : 0, HERD_MAX_HEADS, &c->n_head, err)) != HERD_OK ||
        (rc = cfg_uint(cfg, path, "intermediate_size", 0, HERD_MAX_FF, &c->n_ff, err)) != HERD_OK ||
        (rc = cfg_uint(cfg, path, "num_key_value_heads", g3 ? 4 : c->n_head, HERD_MAX_HEADS, &c->n_head_kv, err)) !=
            HERD_OK ||
        /* 2048: transformers' default for Llama; 131072 Gemma 3's */
        (rc = cfg_uint(cfg, path, "max_position_embeddings", g3 ? 131072 : 2048, INT32_MAX, &c->n_ctx, err)) !=
            HERD_OK ||
        (rc = cfg_float(cfg, path, "rope_theta", g3 ? 1000000.0 : 10000.0, &c->rope_base, err)) != HERD_OK ||
        (rc = cfg_float(cfg, path, "rms_norm_eps", 1e-6, &c->rms_eps, err)) != HERD_OK)
        goto out;
    const json_t *vs = json_object_get(cfg, "vocab_size");
    if (vs && !json_is_null(vs) &&
        (rc = cfg_uint(cfg, path, "vocab_size", 0, HERD_MAX_VOCAB, &c->n_vocab, err)) != HERD_OK)
        goto out;
    if (c->n_head % c->n_head_kv != 0) {
        rc = herd_error_set(err, HERD_E_INVALID, "%s: num_key_value_heads %u does not divide num_attention_heads %u",
                            path, c->n_head_kv, c->n_head);
        goto out;
    }
    /* head size: config.json's head_dim where the modeling code reads it
     * (qwen3, gemma: 256 by default), else hidden_size / heads */
    const bool even_split = c->n_embd % c->n_head == 0;
    if (c->a->head_dim_free) {
        const uint64_t def = c->a->gemma ? 256 : even_split ? c->n_embd / c->n_head : 0;
        if ((rc = cfg_uint(cfg, path, "head_dim", def, HERD_MAX_EMBD, &c->head_dim, err)) != HERD_OK) goto out;
    } else if (!even_split) {
        rc = herd_error_set(err, HERD_E_INVALID, "%s: hidden_size %u / num_attention_heads %u is not a head size", path,
                            c->n_embd, c->n_head);
        goto out;
    } else {
        c->head_dim = c->n_embd / c->n_head;
        const json_t *hd = json_object_get(cfg, "head_dim");
        if (hd && !json_is_null(hd) && json_number_value(hd) != (double)c->head_dim) {
            rc = herd_error_set(err, HERD_E_UNSUPPORTED,
                                "%s: head_dim %g differs from hidden_size / num_attention_heads = %u, which herd "
                                "does not support for %s",
                                path, json_number_value(hd), c->head_dim, c->hf_arch);
            goto out;
        }
    }
    if (c->head_dim % 2 != 0) {
        rc = herd_error_set(err, HERD_E_INVALID, "%s: head size %u is not even", path, c->head_dim);
        goto out;
    }
    /* llama.cpp writes key_length / value_length whenever config.json names
     * head_dim (Gemma's converters always); herd needs them where the head
     * size is not n_embd / n_head */
    c->write_head_dim = has(cfg, "head_dim") || c->a->gemma || (uint64_t)c->head_dim * c->n_head != c->n_embd;
    const json_t *prf = json_object_get(cfg, "partial_rotary_factor");
    if (prf && !json_is_null(prf) && json_number_value(prf) != 1.0) {
        rc = herd_error_set(err, HERD_E_UNSUPPORTED,
                            "%s: partial_rotary_factor %g (RoPE on part of each head) is not supported", path,
                            json_number_value(prf));
        goto out;
    }
    if ((rc = check_activation(c, cfg, path, err)) != HERD_OK) goto out;
    /* transformers' configs tie by default only for Gemma */
    c->tied = json_is_boolean(tie) ? json_is_true(tie) : c->a->gemma;

    if (strcmp(c->arch, "phi3") == 0) {
        /* the context LongRoPE's short factors were trained for; llama.cpp
         * writes it for every Phi-3 */
        if ((rc = cfg_uint(cfg, path, "original_max_position_embeddings", c->n_ctx, INT32_MAX, &c->n_ctx_orig, err)) !=
            HERD_OK)
            goto out;
        /* written even when null (0): llama.cpp's mark of a model without
         * a window (Phi-4) */
        c->write_swa = true;
        if (has(cfg, "sliding_window") &&
            (rc = cfg_uint(cfg, path, "sliding_window", 0, INT32_MAX, &c->n_swa, err)) != HERD_OK)
            goto out;
    } else if (c->a->gemma) {
        if ((rc = read_gemma(c, cfg, path, err)) != HERD_OK) goto out;
    } else if (strcmp(c->arch, "llama") == 0) {
        /* Mistral 7B v0.1's window on every layer. llama.cpp's converter
         * drops it (its llama graph has no window); herd runs it. */
        if (has(cfg, "sliding_window")) {
            c->write_swa = true;
            if ((rc = cfg_uint(cfg, path, "sliding_window", 0, INT32_MAX, &c->n_swa, err)) != HERD_OK) goto out;
        }
    } else if (json_is_true(json_object_get(cfg, "use_sliding_window"))) {
        /* Qwen's window applies from max_window_layers on; herd runs none */
        rc = herd_error_set(err, HERD_E_UNSUPPORTED,
                            "%s: use_sliding_window (Qwen's per-layer window) is not supported", path);
        goto out;
    }
    if (c->a->moe != MOE_NONE && (rc = read_moe(c, cfg, path, err)) != HERD_OK) goto out;
    rc = read_rope_scaling(c, cfg, path, err);
out:
    json_decref(root);
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

/* One source tensor of an output tensor: the only one, or one expert of a
 * stacked 3-D tensor. */
struct part {
    const struct herd_safetensors_tensor *src;
    size_t file;
    enum herd_ggml_type type; /* F32, F16 or BF16 */
};

struct out_tensor {
    char name[HERD_GGUF_MAX_TENSOR_NAME_BYTES + 1];
    size_t part0, n_parts; /* plan.parts[part0 ..]: 0 parts for generated tensors, n_expert for stacked ones */
    uint32_t n_dims;
    uint64_t ne[3]; /* GGUF order: ne[0] = columns, ne[1] = rows (of one part), ne[2] = parts */
    enum herd_ggml_type type;
    bool keep_f32;          /* the router: llama.cpp's converter keeps ffn_gate_inp in F32 */
    uint32_t permute_heads; /* 0, or the heads whose rows go rotate_half -> adjacent pairs */
    bool plus_one;          /* Gemma's norms: w is stored, 1 + w applied */
    uint64_t n_bytes;
    const float *values; /* generated data (rope_freqs, rope_factors_*) */
};

struct plan {
    struct out_tensor *t;
    size_t n, cap;
    struct part *parts;
    size_t n_parts, cap_parts;
    float *rope_freqs;
};

static void plan_cleanup(struct plan *pl) {
    free(pl->t);
    free(pl->parts);
    free(pl->rope_freqs);
}

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
    o->part0 = pl->n_parts;
    return o;
}

static struct part *plan_next_part(struct plan *pl, struct herd_error *err) {
    if (pl->n_parts == pl->cap_parts) {
        size_t cap = pl->cap_parts ? 2 * pl->cap_parts : 256;
        struct part *p = realloc(pl->parts, cap * sizeof *p);
        if (!p) {
            herd_error_set(err, HERD_E_NOMEM, "out of memory");
            return NULL;
        }
        pl->parts = p;
        pl->cap_parts = cap;
    }
    return &pl->parts[pl->n_parts++];
}

static enum herd_status src_type(const struct weights *w, const struct part *p, enum herd_ggml_type *out,
                                 struct herd_error *err) {
    switch (p->src->dtype) {
    case HERD_SAFETENSORS_F32: *out = HERD_GGML_TYPE_F32; return HERD_OK;
    case HERD_SAFETENSORS_F16: *out = HERD_GGML_TYPE_F16; return HERD_OK;
    case HERD_SAFETENSORS_BF16: *out = HERD_GGML_TYPE_BF16; return HERD_OK;
    default:
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "%s: tensor '%s' has dtype %s; herd convert hf reads F32, F16 "
                              "and BF16 weights",
                              herd_safetensors_path(w->files[p->file]), p->src->name,
                              herd_safetensors_dtype_name(p->src->dtype));
    }
}

/* Adds source tensor src (already found, in file fi) as the next part of o;
 * it must have Hugging Face shape [rows, cols] (or [cols] when rows is 0). */
static enum herd_status plan_part(struct plan *pl, struct weights *w, struct out_tensor *o,
                                  const struct herd_safetensors_tensor *src, size_t fi, uint64_t rows, uint64_t cols,
                                  struct herd_error *err) {
    const uint32_t n_dims = rows ? 2 : 1;
    const bool ok =
        src->n_dims == n_dims && (rows ? src->shape[0] == rows && src->shape[1] == cols : src->shape[0] == cols);
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
    struct part *p = plan_next_part(pl, err);
    if (!p) return HERD_E_NOMEM;
    p->src = src;
    p->file = fi;
    o->n_parts++;
    w->used[fi][src - herd_safetensors_tensor_at(w->files[fi], 0)] = true;
    return src_type(w, p, &p->type, err);
}

/* An output tensor of one part or n_stack stacked ones ([n_stack, rows, cols]
 * in Hugging Face's order, GGUF ne [cols, rows, n_stack]); rows 0 for a
 * vector. */
static struct out_tensor *plan_out(struct plan *pl, const char *gguf_name, uint64_t rows, uint64_t cols,
                                   uint32_t n_stack, struct herd_error *err) {
    struct out_tensor *o = plan_next(pl, err);
    if (!o) return NULL;
    snprintf(o->name, sizeof o->name, "%s", gguf_name);
    o->n_dims = n_stack ? 3 : rows ? 2 : 1;
    o->ne[0] = cols;
    o->ne[1] = rows ? rows : 1;
    o->ne[2] = n_stack ? n_stack : 1;
    return o;
}

/* Adds GGUF tensor gguf_name from source tensor src (already found, in
 * file fi) of Hugging Face shape [rows, cols] ([cols] when rows is 0). */
static enum herd_status plan_add(struct plan *pl, struct weights *w, const char *gguf_name,
                                 const struct herd_safetensors_tensor *src, size_t fi, uint64_t rows, uint64_t cols,
                                 uint32_t permute_heads, struct herd_error *err) {
    struct out_tensor *o = plan_out(pl, gguf_name, rows, cols, 0, err);
    if (!o) return HERD_E_NOMEM;
    o->permute_heads = permute_heads;
    return plan_part(pl, w, o, src, fi, rows, cols, err);
}

static enum herd_status missing(const struct weights *w, const char *hf_name, struct herd_error *err) {
    return herd_error_set(err, HERD_E_NOT_FOUND, "%s: the weights have no tensor '%s'", w->dir, hf_name);
}

/* plan_add for the source tensor called hf_name, which must exist. */
static enum herd_status plan_need(struct plan *pl, struct weights *w, const char *gguf_name, const char *hf_name,
                                  uint64_t rows, uint64_t cols, uint32_t permute_heads, struct herd_error *err) {
    size_t fi;
    const struct herd_safetensors_tensor *t = weights_find(w, hf_name, &fi);
    if (!t) return missing(w, hf_name, err);
    return plan_add(pl, w, gguf_name, t, fi, rows, cols, permute_heads, err);
}

/* The experts' [rows, cols] matrices, called prefix + N + suffix for N in
 * 0..n_expert-1, stacked into one 3-D tensor (llama.cpp's layout since
 * mid-2024: ne [cols, rows, n_expert]). */
static enum herd_status plan_stack(struct plan *pl, struct weights *w, const char *gguf_name, const char *prefix,
                                   const char *suffix, uint32_t n_expert, uint64_t rows, uint64_t cols,
                                   struct herd_error *err) {
    struct out_tensor *o = plan_out(pl, gguf_name, rows, cols, n_expert, err);
    if (!o) return HERD_E_NOMEM;
    for (uint32_t e = 0; e < n_expert; e++) {
        char h[256];
        size_t fi;
        snprintf(h, sizeof h, "%s%u%s", prefix, e, suffix);
        const struct herd_safetensors_tensor *t = weights_find(w, h, &fi);
        if (!t) return missing(w, h, err);
        enum herd_status rc = plan_part(pl, w, o, t, fi, rows, cols, err);
        if (rc != HERD_OK) return rc;
    }
    return HERD_OK;
}

/* Llama 3's RoPE frequency divisors, as llama.cpp's converter computes them
 * (float32, like its torch code). */
static void llama3_rope_freqs(const struct hf_config *c, float *out) {
    const uint32_t dim = c->head_dim;
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

/* A generated F32 vector (RoPE factors). */
static enum herd_status plan_values(struct plan *pl, const char *name, const float *values, uint64_t n,
                                    struct herd_error *err) {
    struct out_tensor *o = plan_out(pl, name, 0, n, 0, err);
    if (!o) return HERD_E_NOMEM;
    o->values = values;
    return HERD_OK;
}

/* One layer's tensors, as llama.cpp's tensor map names them. */
static enum herd_status plan_layer(struct plan *pl, struct weights *w, const struct hf_config *c, const char *body,
                                   uint32_t l, struct herd_error *err) {
    enum herd_status rc;
    const struct hf_arch *a = c->a;
    const uint64_t E = c->n_embd, hd = c->head_dim, q_dim = c->n_head * hd, kv_dim = c->n_head_kv * hd;
    const uint64_t FF = c->n_ff, FE = c->n_ff_exp, FS = c->n_ff_shexp, X = c->n_expert;
    const bool dense = a->moe == MOE_NONE;
    const struct {
        const char *gguf, *hf;
        uint64_t rows, cols;
        uint32_t permute;
        bool want;
    } per[] = {
        {"attn_norm.weight", "input_layernorm.weight", 0, E, 0, true},
        {"attn_qkv.weight", "self_attn.qkv_proj.weight", q_dim + 2 * kv_dim, E, 0, a->fused},
        {"attn_q.weight", "self_attn.q_proj.weight", q_dim, E, a->permute_qk ? c->n_head : 0, !a->fused},
        {"attn_q.bias", "self_attn.q_proj.bias", 0, q_dim, 0, a->qkv_bias},
        {"attn_k.weight", "self_attn.k_proj.weight", kv_dim, E, a->permute_qk ? c->n_head_kv : 0, !a->fused},
        {"attn_k.bias", "self_attn.k_proj.bias", 0, kv_dim, 0, a->qkv_bias},
        {"attn_v.weight", "self_attn.v_proj.weight", kv_dim, E, 0, !a->fused},
        {"attn_v.bias", "self_attn.v_proj.bias", 0, kv_dim, 0, a->qkv_bias},
        {"attn_q_norm.weight", "self_attn.q_norm.weight", 0, hd, 0, a->qk_norm},
        {"attn_k_norm.weight", "self_attn.k_norm.weight", 0, hd, 0, a->qk_norm},
        {"attn_output.weight", "self_attn.o_proj.weight", E, q_dim, 0, true},
        /* Gemma: a norm after attention and after the FFN, the FFN's input
         * norm is pre_feedforward_layernorm */
        {"post_attention_norm.weight", "post_attention_layernorm.weight", 0, E, 0, a->gemma},
        {"ffn_norm.weight", "pre_feedforward_layernorm.weight", 0, E, 0, a->gemma},
        {"post_ffw_norm.weight", "post_feedforward_layernorm.weight", 0, E, 0, a->gemma},
        {"ffn_norm.weight", "post_attention_layernorm.weight", 0, E, 0, !a->gemma},
        /* phi3 keeps gate and up in one matrix, gate rows first */
        {"ffn_up.weight", "mlp.gate_up_proj.weight", 2 * FF, E, 0, dense && a->fused},
        {"ffn_gate.weight", "mlp.gate_proj.weight", FF, E, 0, dense && !a->fused},
        {"ffn_up.weight", "mlp.up_proj.weight", FF, E, 0, dense && !a->fused},
        {"ffn_down.weight", "mlp.down_proj.weight", E, FF, 0, dense},
        {"ffn_gate_inp.weight", "block_sparse_moe.gate.weight", X, E, 0, a->moe == MOE_MIXTRAL},
        {"ffn_gate_inp.weight", "mlp.gate.weight", X, E, 0, a->moe == MOE_QWEN},
        /* qwen2moe's shared expert and its gate, a [1, n_embd] matrix */
        {"ffn_gate_inp_shexp.weight", "mlp.shared_expert_gate.weight", 1, E, 0, a->shared_expert},
        {"ffn_gate_shexp.weight", "mlp.shared_expert.gate_proj.weight", FS, E, 0, a->shared_expert},
        {"ffn_up_shexp.weight", "mlp.shared_expert.up_proj.weight", FS, E, 0, a->shared_expert},
        {"ffn_down_shexp.weight", "mlp.shared_expert.down_proj.weight", E, FS, 0, a->shared_expert},
    };
    char g[64], h[128];
    for (size_t i = 0; i < sizeof per / sizeof per[0]; i++) {
        if (!per[i].want) continue;
        snprintf(g, sizeof g, "blk.%u.%s", l, per[i].gguf);
        snprintf(h, sizeof h, "%slayers.%u.%s", body, l, per[i].hf);
        if ((rc = plan_need(pl, w, g, h, per[i].rows, per[i].cols, per[i].permute, err)) != HERD_OK) return rc;
        struct out_tensor *o = &pl->t[pl->n - 1];
        o->plus_one = a->gemma && ends_with(per[i].hf, "norm.weight");
        o->keep_f32 = strcmp(per[i].gguf, "ffn_gate_inp.weight") == 0;
    }
    if (dense) return HERD_OK;
    const struct {
        const char *gguf, *mixtral, *qwen;
        uint64_t rows, cols;
    } exps[] = {
        {"ffn_gate_exps.weight", "w1", "gate_proj", FE, E},
        {"ffn_up_exps.weight", "w3", "up_proj", FE, E},
        {"ffn_down_exps.weight", "w2", "down_proj", E, FE},
    };
    for (size_t i = 0; i < sizeof exps / sizeof exps[0]; i++) {
        char suffix[32];
        const bool mixtral = a->moe == MOE_MIXTRAL;
        snprintf(g, sizeof g, "blk.%u.%s", l, exps[i].gguf);
        snprintf(h, sizeof h, "%slayers.%u.%s.experts.", body, l, mixtral ? "block_sparse_moe" : "mlp");
        snprintf(suffix, sizeof suffix, ".%s.weight", mixtral ? exps[i].mixtral : exps[i].qwen);
        if ((rc = plan_stack(pl, w, g, h, suffix, c->n_expert, exps[i].rows, exps[i].cols, err)) != HERD_OK) return rc;
    }
    return HERD_OK;
}

static enum herd_status make_plan(struct plan *pl, struct weights *w, const struct hf_config *c, bool *tied,
                                  uint32_t *n_vocab, struct herd_error *err) {
    enum herd_status rc;
    const uint64_t E = c->n_embd, hd = c->head_dim;
    /* The token embedding: its own tensor, or the one the file's metadata
     * says it was tied to when saved (PyTorch stores a tied pair once), or
     * lm_head for a tied model that kept only that. */
    /* The decoder's tensors are under "model."; a multimodal checkpoint's
     * under "language_model.model." (as published) or, saved by
     * transformers 4.52 or later, "model.language_model.". */
    const char *body = "model.", *head_name = "lm_head.weight";
    size_t fi = 0;
    if (c->a->multimodal) {
        const bool old = weights_find(w, "language_model.model.embed_tokens.weight", &fi) != NULL;
        body = old ? "language_model.model." : "model.language_model.";
        head_name = old ? "language_model.lm_head.weight" : "lm_head.weight";
    }
    char emb_name[64], norm_name[64];
    snprintf(emb_name, sizeof emb_name, "%sembed_tokens.weight", body);
    snprintf(norm_name, sizeof norm_name, "%snorm.weight", body);
    const struct herd_safetensors_tensor *emb = weights_find(w, emb_name, &fi);
    for (size_t i = 0; !emb && i < w->n_files; i++) {
        const char *alias = herd_safetensors_metadata(w->files[i], emb_name);
        if (alias) emb = weights_find(w, alias, &fi);
    }
    size_t head_fi = 0;
    const struct herd_safetensors_tensor *head = weights_find(w, head_name, &head_fi);
    if (!emb && c->tied && head) emb = head, fi = head_fi;
    if (!emb) return herd_error_set(err, HERD_E_NOT_FOUND, "%s: the weights have no tensor '%s'", w->dir, emb_name);
    if (emb->n_dims != 2 || emb->shape[0] == 0 || emb->shape[0] > HERD_MAX_VOCAB)
        return herd_error_set(err, HERD_E_FORMAT, "%s: the token embedding '%s' is not a matrix of 1..%u rows",
                              herd_safetensors_path(w->files[fi]), emb->name, HERD_MAX_VOCAB);
    *n_vocab = (uint32_t)emb->shape[0];
    if (c->n_vocab && c->n_vocab != *n_vocab)
        return herd_error_set(err, HERD_E_FORMAT, "%s/config.json: vocab_size %u, but '%s' has %u rows", w->dir,
                              c->n_vocab, emb->name, *n_vocab);
    *tied = c->tied || !head || head == emb;

    /* generated tensors first, as llama.cpp's converter writes them */
    if (c->llama3_rope) {
        if (!(pl->rope_freqs = malloc(hd / 2 * sizeof *pl->rope_freqs)))
            return herd_error_set(err, HERD_E_NOMEM, "out of memory");
        llama3_rope_freqs(c, pl->rope_freqs);
        if ((rc = plan_values(pl, "rope_freqs.weight", pl->rope_freqs, hd / 2, err)) != HERD_OK) return rc;
    }
    if (c->long_factors &&
        ((rc = plan_values(pl, "rope_factors_long.weight", c->long_factors, hd / 2, err)) != HERD_OK ||
         (rc = plan_values(pl, "rope_factors_short.weight", c->short_factors, hd / 2, err)) != HERD_OK))
        return rc;
    if ((rc = plan_add(pl, w, "token_embd.weight", emb, fi, *n_vocab, E, 0, err)) != HERD_OK) return rc;
    if ((rc = plan_need(pl, w, "output_norm.weight", norm_name, 0, E, 0, err)) != HERD_OK) return rc;
    pl->t[pl->n - 1].plus_one = c->a->gemma;
    if (!*tied && (rc = plan_add(pl, w, "output.weight", head, head_fi, *n_vocab, E, 0, err)) != HERD_OK) return rc;
    if (*tied && head) w->used[head_fi][head - herd_safetensors_tensor_at(w->files[head_fi], 0)] = true;

    for (uint32_t l = 0; l < c->n_layer; l++)
        if ((rc = plan_layer(pl, w, c, body, l, err)) != HERD_OK) return rc;
    /* Every tensor is used, or known to be redundant: a tensor left over is
     * a feature the GGUF would silently lose. */
    for (size_t i = 0; i < w->n_files; i++)
        for (size_t k = 0; k < herd_safetensors_n_tensors(w->files[i]); k++) {
            const char *name = herd_safetensors_tensor_at(w->files[i], k)->name;
            if (w->used[i][k] || ends_with(name, ".rotary_emb.inv_freq")) continue;
            /* the image encoder of a multimodal checkpoint: not a GGUF
             * model's part (llama.cpp's converter writes it to a separate
             * projector file) */
            const char *part = strncmp(name, "model.", 6) == 0 ? name + 6 : name;
            if (c->a->multimodal &&
                (strncmp(part, "vision_tower.", 13) == 0 || strncmp(part, "multi_modal_projector.", 22) == 0))
                continue;
            return herd_error_set(err, HERD_E_UNSUPPORTED,
                                  "%s: tensor '%s' has no place in a %s GGUF (%s with layers or experts beyond "
                                  "config.json's %u / %u, or biases, or another variant herd does not run)",
                                  herd_safetensors_path(w->files[i]), name, c->arch, c->hf_arch, c->n_layer,
                                  c->n_expert);
        }
    return HERD_OK;
}

/* ------------------------------------------------------------ writing */

/* general.* and <arch>.* keys, in the order of herd_llama_meta_write, then
 * what only some architectures have. */
static enum herd_status write_meta(struct herd_gguf_writer *w, const struct hf_config *c, const char *name,
                                   enum herd_ggml_type type, uint32_t n_vocab, struct herd_error *err) {
    enum herd_status rc;
    char key[96];
    const bool moe = c->n_expert != 0, qwen_moe = c->a->moe == MOE_QWEN;
    const struct {
        const char *suffix;
        uint32_t v;
        bool write;
    } u32s[] = {
        {"vocab_size", n_vocab, true},
        {"context_length", c->n_ctx, true},
        {"embedding_length", c->n_embd, true},
        {"block_count", c->n_layer, true},
        {"feed_forward_length", c->n_ff, true},
        {"attention.head_count", c->n_head, true},
        {"attention.head_count_kv", c->n_head_kv, true},
        {"attention.key_length", c->head_dim, c->write_head_dim},
        {"attention.value_length", c->head_dim, c->write_head_dim},
        {"attention.sliding_window", c->n_swa, c->write_swa},
        {"expert_count", c->n_expert, moe},
        {"expert_used_count", c->n_expert_used, moe},
        {"expert_feed_forward_length", c->n_ff_exp, qwen_moe},
        {"expert_shared_feed_forward_length", c->n_ff_shexp, c->a->shared_expert},
        {"rope.scaling.original_context_length", c->n_ctx_orig, c->n_ctx_orig != 0},
    };
    const struct {
        const char *suffix;
        float v;
        bool write;
    } f32s[] = {
        {"rope.freq_base", c->rope_base, true},
        {"attention.layer_norm_rms_epsilon", c->rms_eps, true},
        {"attn_logit_softcapping", c->attn_softcap, strcmp(c->arch, "gemma2") == 0},
        {"final_logit_softcapping", c->final_softcap, strcmp(c->arch, "gemma2") == 0},
        {"attention.scale", c->attn_scale, c->attn_scale != 0},
        {"rope.scaling.factor", c->rope_linear, c->rope_linear != 0},
        {"rope.scaling.attn_factor", c->rope_attn_factor, c->long_factors != NULL},
    };
    if ((rc = herd_gguf_writer_add_string(w, "general.architecture", c->arch, err)) != HERD_OK) return rc;
    if ((rc = herd_gguf_writer_add_string(w, "general.name", name, err)) != HERD_OK) return rc;
    if ((rc = herd_gguf_writer_add_u32(w, "general.file_type", herd_llama_file_type(type), err)) != HERD_OK) return rc;
    for (size_t i = 0; i < sizeof u32s / sizeof u32s[0]; i++) {
        if (!u32s[i].write) continue;
        snprintf(key, sizeof key, "%s.%s", c->arch, u32s[i].suffix);
        if ((rc = herd_gguf_writer_add_u32(w, key, u32s[i].v, err)) != HERD_OK) return rc;
    }
    for (size_t i = 0; i < sizeof f32s / sizeof f32s[0]; i++) {
        if (!f32s[i].write) continue;
        snprintf(key, sizeof key, "%s.%s", c->arch, f32s[i].suffix);
        if ((rc = herd_gguf_writer_add_f32(w, key, f32s[i].v, err)) != HERD_OK) return rc;
    }
    if (c->rope_linear != 0) {
        snprintf(key, sizeof key, "%s.rope.scaling.type", c->arch);
        if ((rc = herd_gguf_writer_add_string(w, key, "linear", err)) != HERD_OK) return rc;
    }
    if (c->norm_topk >= 0) {
        snprintf(key, sizeof key, "%s.expert_weights_norm", c->arch);
        if ((rc = herd_gguf_writer_add_bool(w, key, c->norm_topk == 1, err)) != HERD_OK) return rc;
    }
    snprintf(key, sizeof key, "%s.rope.dimension_count", c->arch);
    return herd_gguf_writer_add_u32(w, key, c->head_dim, err);
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

/* Converts o into out (o->n_bytes): each part's rows in turn, each row
 * decoded to float, transformed, encoded in o->type. */
static void fill_tensor(const struct plan *pl, const struct out_tensor *o, float *row, uint8_t *out) {
    const uint64_t rows = o->ne[1], cols = o->ne[0], row_bytes = o->n_bytes / (rows * o->ne[2]);
    if (o->values) {
        herd_quantize_row_ref(o->type, o->values, out, (size_t)cols);
        return;
    }
    for (size_t k = 0; k < o->n_parts; k++) {
        const struct part *p = &pl->parts[o->part0 + k];
        const size_t esize = herd_safetensors_dtype_size(p->src->dtype);
        for (uint64_t r = 0; r < rows; r++) {
            const uint8_t *src = p->src->data + source_row(r, rows, o->permute_heads) * cols * esize;
            herd_dequantize_row_ref(p->type, src, row, (size_t)cols);
            /* in float32, as Hugging Face's Gemma RMSNorm computes 1 + w */
            for (uint64_t i = 0; o->plus_one && i < cols; i++) row[i] += 1.0f;
            herd_quantize_row_ref(o->type, row, out + (k * rows + r) * row_bytes, (size_t)cols);
        }
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
        if (strcmp(pl.t[i].name, "token_embd.weight") == 0) type = pl.parts[pl.t[i].part0].type;
    const struct herd_ggml_type_info *ti = herd_ggml_type_info(type);
    uint64_t max_bytes = 0, max_cols = 0, total = 0, n_params = 0;
    for (size_t i = 0; i < pl.n; i++) {
        struct out_tensor *o = &pl.t[i];
        o->type = o->n_dims >= 2 && !o->keep_f32 && o->ne[0] % ti->block_elems == 0 ? type : HERD_GGML_TYPE_F32;
        TRY(herd_ggml_tensor_nbytes(o->type, o->n_dims, o->ne, NULL, &o->n_bytes, err));
        if (o->n_bytes > max_bytes) max_bytes = o->n_bytes;
        if (o->ne[0] > max_cols) max_cols = o->ne[0];
        total += o->n_bytes; /* each fits in int64 and there are at most ~6k */
        n_params += o->ne[0] * o->ne[1] * o->ne[2];
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
        fill_tensor(&pl, o, row, packed);
        for (size_t k = 0; k < o->n_parts; k++)
            herd_safetensors_release(w.files[pl.parts[o->part0 + k].file], pl.parts[o->part0 + k].src);
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
    plan_cleanup(&pl);
    config_cleanup(&c);
    weights_cleanup(&w);
    return rc;
}
