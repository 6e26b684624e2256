/* Reads a model's description out of GGUF metadata and checks that it is a
 * model the engine can run. Everything here is semantic validation on top of
 * the structural checks of the GGUF reader: a file can be a perfectly formed
 * GGUF and still claim 2^40 layers or a BOS id past the vocabulary. */
#include "model/model_desc.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------ reading */

static void copy_str(char *dst, size_t dst_bytes, struct herd_gguf_str s) {
    size_t n = s.len < dst_bytes - 1 ? (size_t)s.len : dst_bytes - 1;
    memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

/* Optional unsigned key: absent keeps *out; present must be an integer <= max. */
static enum herd_status opt_uint(const struct herd_gguf *g, const char *key, uint64_t max, uint64_t *out,
                                 struct herd_error *err) {
    enum herd_status rc = herd_gguf_get_uint(g, key, max, out, err);
    if (rc == HERD_E_NOT_FOUND) return HERD_OK;
    return rc;
}

static enum herd_status opt_arch_uint(const struct herd_gguf *g, const char *arch, const char *suffix, uint64_t max,
                                      uint64_t *out, struct herd_error *err) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return opt_uint(g, key, max, out, err);
}

static enum herd_status opt_arch_float(const struct herd_gguf *g, const char *arch, const char *suffix, double *out,
                                       struct herd_error *err) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    enum herd_status rc = herd_gguf_get_float(g, key, out, err);
    return rc == HERD_E_NOT_FOUND ? HERD_OK : rc;
}

static enum herd_status opt_string(const struct herd_gguf *g, const char *key, char *dst, size_t dst_bytes,
                                   struct herd_error *err) {
    struct herd_gguf_str s;
    enum herd_status rc = herd_gguf_get_string(g, key, &s, err);
    if (rc == HERD_E_NOT_FOUND) return HERD_OK;
    if (rc == HERD_OK) copy_str(dst, dst_bytes, s);
    return rc;
}

static enum herd_status opt_id(const struct herd_gguf *g, const char *key, int64_t *out, struct herd_error *err) {
    uint64_t v;
    enum herd_status rc = herd_gguf_get_uint(g, key, UINT32_MAX, &v, err);
    if (rc == HERD_E_NOT_FOUND) return HERD_OK;
    if (rc == HERD_OK) *out = (int64_t)v;
    return rc;
}

static enum herd_status opt_bool(const struct herd_gguf *g, const char *key, bool *out, bool *present,
                                 struct herd_error *err) {
    enum herd_status rc = herd_gguf_get_bool(g, key, out, err);
    if (rc == HERD_E_NOT_FOUND) return HERD_OK;
    if (rc == HERD_OK) *present = true;
    return rc;
}

/* Count of an array key of any element type; absent keeps 0. */
static enum herd_status opt_array_count(const struct herd_gguf *g, const char *key, uint64_t *out,
                                        struct herd_error *err) {
    const struct herd_gguf_kv *kv = herd_gguf_find_kv(g, key);
    if (!kv) return HERD_OK;
    if (kv->type != HERD_GGUF_VTYPE_ARRAY)
        return herd_error_set(err, HERD_E_FORMAT, "metadata key '%s' is %s; expected an array", key,
                              herd_gguf_vtype_name(kv->type));
    *out = kv->v.arr.count;
    return HERD_OK;
}

/* A count llama.cpp reads with get_key_or_arr (feed_forward_length,
 * attention.head_count, attention.head_count_kv): one number for every
 * layer, or an array of one integer per layer. per[l] gets each layer's;
 * *widest the largest (which sizes the forward pass's buffers). An absent
 * key leaves *widest as it is and gives every layer that value. */
static enum herd_status read_layer_counts(const struct herd_gguf *g, const char *arch, const char *suffix, uint64_t max,
                                          struct herd_model_desc *d, uint64_t *widest, uint32_t *per,
                                          struct herd_error *err) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    const struct herd_gguf_kv *kv = herd_gguf_find_kv(g, key);
    if (!kv || kv->type != HERD_GGUF_VTYPE_ARRAY) {
        enum herd_status rc = opt_uint(g, key, max, widest, err);
        for (uint64_t l = 0; rc == HERD_OK && l < d->n_layer; l++) per[l] = (uint32_t)*widest;
        return rc;
    }
    const struct herd_gguf_array *a = &kv->v.arr;
    if (a->type == HERD_GGUF_VTYPE_STRING || a->type == HERD_GGUF_VTYPE_F32 || a->type == HERD_GGUF_VTYPE_F64 ||
        a->type == HERD_GGUF_VTYPE_BOOL || a->count != d->n_layer)
        return herd_error_set(err, HERD_E_FORMAT,
                              "metadata key '%s' holds %llu %s values; expected %llu integers, one "
                              "per layer (block_count)",
                              key, (unsigned long long)a->count, herd_gguf_vtype_name(a->type),
                              (unsigned long long)d->n_layer);
    *widest = 0;
    for (uint64_t l = 0; l < a->count; l++) {
        const int64_t v = herd_gguf_array_i64(a, l);
        if (v < 0 || (uint64_t)v > max)
            return herd_error_set(err, HERD_E_INVALID, "metadata key '%s'[%llu] = %lld is out of range (0..%llu)", key,
                                  (unsigned long long)l, (long long)v, (unsigned long long)max);
        per[l] = (uint32_t)v;
        if ((uint64_t)v > *widest) *widest = (uint64_t)v;
    }
    return HERD_OK;
}

/* The sliding window llama.cpp gives phi3 files written before the
 * converter stored it: Phi-3 mini / medium 4k 2047, mini 128k 262144, medium
 * 128k 131072 (all wider than their contexts but the first); 0 otherwise. */
static uint64_t phi3_default_window(const struct herd_model_desc *d) {
    if ((d->n_layer == 32 || d->n_layer == 40) && d->n_ctx_train == 4096) return 2047;
    if (d->n_layer == 32 && d->n_head_kv == 32 && d->n_ctx_train == 131072) return 262144;
    if (d->n_layer == 40 && d->n_ctx_train == 131072) return 131072;
    return 0;
}

enum herd_status herd_model_desc_read(const struct herd_gguf *g, struct herd_model_desc *d, struct herd_error *err) {
    memset(d, 0, sizeof *d);
    d->file_type = -1;
    d->bos_id = d->eos_id = d->unk_id = d->pad_id = -1;
    d->rope_freq_base = 10000.0;
    d->rope_freq_scale = 1.0;
    d->rms_eps = 1e-5;
    enum herd_status rc;
#define TRY(expr)                                                                                                      \
    do {                                                                                                               \
        if ((rc = (expr)) != HERD_OK) return rc;                                                                       \
    } while (0)
    TRY(opt_string(g, "general.architecture", d->arch, sizeof d->arch, err));
    TRY(opt_string(g, "general.name", d->name, sizeof d->name, err));
    uint64_t ft = UINT64_MAX;
    TRY(opt_uint(g, "general.file_type", 1u << 16, &ft, err));
    if (ft != UINT64_MAX) d->file_type = (int64_t)ft;

    if (d->arch[0]) {
        const char *a = d->arch;
        TRY(opt_arch_uint(g, a, "context_length", UINT32_MAX, &d->n_ctx_train, err));
        TRY(opt_arch_uint(g, a, "embedding_length", HERD_MAX_EMBD, &d->n_embd, err));
        TRY(opt_arch_uint(g, a, "block_count", HERD_MAX_LAYERS, &d->n_layer, err));
        TRY(read_layer_counts(g, a, "feed_forward_length", HERD_MAX_FF, d, &d->n_ff, d->n_ff_layer, err));
        TRY(read_layer_counts(g, a, "attention.head_count", HERD_MAX_HEADS, d, &d->n_head, d->n_head_layer, err));
        d->n_head_kv = d->n_head; /* absent: as many as the query heads, layer by layer */
        memcpy(d->n_head_kv_layer, d->n_head_layer, sizeof d->n_head_kv_layer);
        TRY(read_layer_counts(g, a, "attention.head_count_kv", HERD_MAX_HEADS, d, &d->n_head_kv, d->n_head_kv_layer,
                              err));
        /* llama.cpp's default head size: n_embd / layer 0's head count */
        const uint64_t h0 = d->n_layer ? d->n_head_layer[0] : d->n_head;
        if (h0 && d->n_embd % h0 == 0) d->head_dim = d->n_embd / h0;
        TRY(opt_arch_uint(g, a, "attention.key_length", HERD_MAX_EMBD, &d->head_dim, err));
        d->head_dim_v = d->head_dim;
        TRY(opt_arch_uint(g, a, "attention.value_length", HERD_MAX_EMBD, &d->head_dim_v, err));
        d->n_rot = d->head_dim;
        TRY(opt_arch_uint(g, a, "rope.dimension_count", HERD_MAX_EMBD, &d->n_rot, err));
        TRY(opt_arch_float(g, a, "rope.freq_base", &d->rope_freq_base, err));
        char key[160];
        snprintf(key, sizeof key, "%s.rope.scaling.type", a);
        TRY(opt_string(g, key, d->rope_scaling, sizeof d->rope_scaling, err));
        double factor = 0.0;
        TRY(opt_arch_float(g, a, "rope.scaling.factor", &factor, err));
        if (strcmp(d->rope_scaling, "linear") == 0 && factor > 0) d->rope_freq_scale = 1.0 / factor;
        d->rope_attn_factor = 1.0;
        TRY(opt_arch_float(g, a, "rope.scaling.attn_factor", &d->rope_attn_factor, err));
        d->n_ctx_orig = d->n_ctx_train;
        TRY(opt_arch_uint(g, a, "rope.scaling.original_context_length", UINT32_MAX, &d->n_ctx_orig, err));
        TRY(opt_arch_float(g, a, "attention.layer_norm_rms_epsilon", &d->rms_eps, err));
        if (strcmp(a, "gemma2") == 0) { /* llama.cpp's values for gemma2 files without the keys */
            d->n_swa = 4096;
            d->attn_softcap = 50.0;
            d->final_softcap = 30.0;
        }
        if (strcmp(a, "phi3") == 0) d->n_swa = phi3_default_window(d);
        TRY(opt_arch_uint(g, a, "attention.sliding_window", UINT32_MAX, &d->n_swa, err));
        TRY(opt_arch_float(g, a, "attn_logit_softcapping", &d->attn_softcap, err));
        TRY(opt_arch_float(g, a, "final_logit_softcapping", &d->final_softcap, err));
        TRY(opt_arch_float(g, a, "attention.scale", &d->attn_scale, err));
        TRY(opt_arch_uint(g, a, "expert_count", HERD_MAX_EXPERTS, &d->n_expert, err));
        TRY(opt_arch_uint(g, a, "expert_used_count", HERD_MAX_EXPERTS, &d->n_expert_used, err));
        d->n_ff_exp = d->n_ff;
        TRY(opt_arch_uint(g, a, "expert_feed_forward_length", HERD_MAX_FF, &d->n_ff_exp, err));
        d->n_ff_shexp = d->n_ff_exp;
        TRY(opt_arch_uint(g, a, "expert_shared_feed_forward_length", HERD_MAX_FF, &d->n_ff_shexp, err));
        const struct herd_arch_info *ai = herd_model_arch_info(a);
        d->expert_weights_norm = ai && ai->moe_norm;
        snprintf(key, sizeof key, "%s.expert_weights_norm", a);
        bool present = false;
        TRY(opt_bool(g, key, &d->expert_weights_norm, &present, err));
    }

    TRY(opt_string(g, "tokenizer.ggml.model", d->tok_model, sizeof d->tok_model, err));
    TRY(opt_string(g, "tokenizer.ggml.pre", d->tok_pre, sizeof d->tok_pre, err));
    TRY(opt_array_count(g, "tokenizer.ggml.tokens", &d->n_vocab, err));
    TRY(opt_array_count(g, "tokenizer.ggml.merges", &d->n_merges, err));
    TRY(opt_id(g, "tokenizer.ggml.bos_token_id", &d->bos_id, err));
    TRY(opt_id(g, "tokenizer.ggml.eos_token_id", &d->eos_id, err));
    TRY(opt_id(g, "tokenizer.ggml.unknown_token_id", &d->unk_id, err));
    TRY(opt_id(g, "tokenizer.ggml.padding_token_id", &d->pad_id, err));
    TRY(opt_bool(g, "tokenizer.ggml.add_bos_token", &d->add_bos, &d->has_add_bos, err));
    TRY(opt_bool(g, "tokenizer.ggml.add_eos_token", &d->add_eos, &d->has_add_eos, err));
    struct herd_gguf_str tmpl;
    rc = herd_gguf_get_string(g, "tokenizer.chat_template", &tmpl, err);
    if (rc == HERD_OK)
        d->chat_template_bytes = tmpl.len;
    else if (rc != HERD_E_NOT_FOUND)
        return rc;
#undef TRY

    d->n_tensors = herd_gguf_n_tensors(g);
    for (size_t i = 0; i < d->n_tensors; i++) {
        const struct herd_gguf_tensor *t = herd_gguf_tensor_at(g, i);
        d->weight_bytes += t->n_bytes; /* each fits in the file, so the sum does too */
        d->n_params += t->n_elems;
    }
    d->tied_embeddings = d->n_tensors > 0 && !herd_gguf_find_tensor(g, "output.weight");
    herd_error_clear(err);
    return HERD_OK;
}

/* ------------------------------------------------------------ validation */

static const struct herd_arch_info archs[] = {
    {.name = "llama", .moe_norm = true}, /* mixtral's experts */
    {.name = "qwen2", .rope_neox = true, .qkv_bias = true},
    {.name = "qwen3", .rope_neox = true, .qk_norm = true},
    {.name = "gemma2", .rope_neox = true, .gemma = true, .swa_period = 2},
    {.name = "gemma3", .rope_neox = true, .qk_norm = true, .gemma = true, .swa_period = 6, .swa_local_rope = true},
    {.name = "phi3", .rope_neox = true, .fused_qkv = true, .fused_gate_up = true},
    {.name = "qwen2moe", .rope_neox = true, .qkv_bias = true, .shared_expert = true},
    {.name = "qwen3moe", .rope_neox = true, .qk_norm = true, .moe_norm = true},
};

const struct herd_arch_info *herd_model_arch_info(const char *arch) {
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (strcmp(arch, archs[i].name) == 0) return &archs[i];
    return NULL;
}

bool herd_model_arch_supported(const char *arch) { return herd_model_arch_info(arch) != NULL; }

bool herd_model_layer_slides(const struct herd_model_desc *d, uint64_t l) {
    const struct herd_arch_info *a = herd_model_arch_info(d->arch);
    if (!d->n_swa || !a) return false;
    return a->swa_period == 0 || (l + 1) % a->swa_period != 0;
}

double herd_model_attn_scale(const struct herd_model_desc *d) {
    if (d->attn_scale > 0) return d->attn_scale;
    /* llama.cpp's rule for Gemma's 27B, whose query_pre_attn_scalar is
     * n_embd / n_head rather than head_dim; GGUF files do not carry it */
    if ((strcmp(d->arch, "gemma2") == 0 && d->n_layer == 46) || (strcmp(d->arch, "gemma3") == 0 && d->n_layer == 62))
        return 1.0 / sqrt((double)(d->n_embd / d->n_head));
    return 1.0 / sqrt((double)d->head_dim);
}

static enum herd_status require_hparam(const struct herd_model_desc *d, uint64_t v, const char *suffix,
                                       struct herd_error *err) {
    if (v == 0) return herd_error_set(err, HERD_E_NOT_FOUND, "metadata key '%s.%s' is missing or 0", d->arch, suffix);
    return HERD_OK;
}

/* A tensor that must exist with exactly this shape (n_dims dims of ne). */
static enum herd_status check_tensor(const struct herd_gguf *g, const char *name, bool required, uint32_t n_dims,
                                     uint64_t ne0, uint64_t ne1, uint64_t ne2, struct herd_error *err) {
    const struct herd_gguf_tensor *t = herd_gguf_find_tensor(g, name);
    if (!t) {
        if (!required) return HERD_OK;
        return herd_error_set(err, HERD_E_NOT_FOUND, "required tensor '%s' is missing", name);
    }
    const uint64_t want[3] = {ne0, ne1, ne2};
    bool ok = true; /* trailing dimensions of 1 are the same shape */
    for (uint32_t i = 0; ok && i < HERD_GGUF_MAX_DIMS; i++) ok = t->ne[i] == (i < n_dims ? want[i] : 1);
    if (!ok) {
        char expect[80];
        int at = snprintf(expect, sizeof expect, "[%llu", (unsigned long long)ne0);
        for (uint32_t i = 1; i < n_dims && at > 0 && (size_t)at < sizeof expect; i++)
            at += snprintf(expect + at, sizeof expect - (size_t)at, ", %llu", (unsigned long long)want[i]);
        return herd_error_set(err, HERD_E_FORMAT, "tensor '%s' has shape [%llu, %llu, %llu, %llu]; expected %s]", name,
                              (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], (unsigned long long)t->ne[2],
                              (unsigned long long)t->ne[3], expect);
    }
    const struct herd_ggml_type_info *ti = herd_ggml_type_info(t->type);
    if (!ti->computed)
        return herd_error_set(
            err, HERD_E_UNSUPPORTED,
            "tensor '%s' has type %s, which herd does not compute (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, "
            "q5_1, iq4_nl, q2_K, q3_K, q4_K, q5_K, q6_K)",
            name, ti->name);
    return HERD_OK;
}

static enum herd_status validate_tokenizer(const struct herd_gguf *g, const struct herd_model_desc *d,
                                           struct herd_error *err) {
    struct herd_gguf_array tokens, scores, types;
    enum herd_status rc = herd_gguf_get_array(g, "tokenizer.ggml.tokens", HERD_GGUF_VTYPE_STRING, &tokens, err);
    if (rc != HERD_OK) return rc;
    if (tokens.count == 0 || tokens.count > HERD_MAX_VOCAB)
        return herd_error_set(err, HERD_E_INVALID, "tokenizer.ggml.tokens has %llu entries; expected 1..%u",
                              (unsigned long long)tokens.count, HERD_MAX_VOCAB);
    if (!d->tok_model[0])
        return herd_error_set(err, HERD_E_NOT_FOUND, "metadata key 'tokenizer.ggml.model' is missing");
    bool have_scores = false, have_types = false;
    rc = herd_gguf_get_array(g, "tokenizer.ggml.scores", HERD_GGUF_VTYPE_F32, &scores, err);
    if (rc == HERD_OK)
        have_scores = true;
    else if (rc != HERD_E_NOT_FOUND)
        return rc;
    if (have_scores && scores.count != tokens.count)
        return herd_error_set(err, HERD_E_FORMAT, "tokenizer.ggml.scores has %llu entries, tokens has %llu",
                              (unsigned long long)scores.count, (unsigned long long)tokens.count);
    rc = herd_gguf_get_array(g, "tokenizer.ggml.token_type", HERD_GGUF_VTYPE_I32, &types, err);
    if (rc == HERD_OK)
        have_types = true;
    else if (rc != HERD_E_NOT_FOUND)
        return rc;
    if (have_types && types.count != tokens.count)
        return herd_error_set(err, HERD_E_FORMAT, "tokenizer.ggml.token_type has %llu entries, tokens has %llu",
                              (unsigned long long)types.count, (unsigned long long)tokens.count);

    struct herd_gguf_str_iter it;
    struct herd_gguf_str tok;
    herd_gguf_str_iter_init(&it, &tokens);
    for (uint64_t i = 0; herd_gguf_str_iter_next(&it, &tok); i++) {
        if (tok.len > HERD_MAX_TOKEN_BYTES)
            return herd_error_set(err, HERD_E_FORMAT, "token %llu is %llu bytes long; the limit is %u",
                                  (unsigned long long)i, (unsigned long long)tok.len, HERD_MAX_TOKEN_BYTES);
        if (have_types) {
            int64_t ty = herd_gguf_array_i64(&types, i);
            if (ty < 0 || ty > 6)
                return herd_error_set(err, HERD_E_FORMAT, "token %llu has token_type %lld; expected 0..6",
                                      (unsigned long long)i, (long long)ty);
            /* SentencePiece byte tokens are exactly "<0xNN>" with two hex digits. */
            if (ty == 6) {
                static const char hex[] = "0123456789ABCDEFabcdef";
                bool ok = tok.len == 6 && memcmp(tok.ptr, "<0x", 3) == 0 && tok.ptr[5] == '>' &&
                          memchr(hex, tok.ptr[3], sizeof hex - 1) && memchr(hex, tok.ptr[4], sizeof hex - 1);
                if (!ok) {
                    char buf[64];
                    return herd_error_set(err, HERD_E_FORMAT, "byte token %llu is '%s'; expected <0xNN>",
                                          (unsigned long long)i, herd_gguf_str_printable(tok, buf, sizeof buf));
                }
            }
        }
    }
    const struct {
        const char *key;
        int64_t id;
    } ids[] = {{"tokenizer.ggml.bos_token_id", d->bos_id},
               {"tokenizer.ggml.eos_token_id", d->eos_id},
               {"tokenizer.ggml.unknown_token_id", d->unk_id},
               {"tokenizer.ggml.padding_token_id", d->pad_id}};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (ids[i].id >= (int64_t)tokens.count)
            return herd_error_set(err, HERD_E_INVALID, "%s = %lld is outside the vocabulary of %llu tokens", ids[i].key,
                                  (long long)ids[i].id, (unsigned long long)tokens.count);
    return HERD_OK;
}

enum herd_status herd_model_desc_validate(const struct herd_gguf *g, const struct herd_model_desc *d,
                                          struct herd_error *err) {
    enum herd_status rc;
    if (!d->arch[0]) return herd_error_set(err, HERD_E_NOT_FOUND, "metadata key 'general.architecture' is missing");
    const struct herd_arch_info *arch = herd_model_arch_info(d->arch);
    if (!arch)
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "architecture '%s' is not supported (llama, qwen2, qwen3, gemma2, gemma3 and phi3 are)",
                              d->arch);
    if ((rc = require_hparam(d, d->n_embd, "embedding_length", err)) != HERD_OK) return rc;
    if ((rc = require_hparam(d, d->n_layer, "block_count", err)) != HERD_OK) return rc;
    if (d->n_expert) {
        if ((rc = require_hparam(d, d->n_ff_exp, "expert_feed_forward_length", err)) != HERD_OK) return rc;
        if (d->n_expert < 2 || d->n_expert_used == 0 || d->n_expert_used > d->n_expert)
            return herd_error_set(err, HERD_E_INVALID,
                                  "%s.expert_used_count = %llu with expert_count %llu; expected 1..expert_count "
                                  "and at least 2 experts",
                                  d->arch, (unsigned long long)d->n_expert_used, (unsigned long long)d->n_expert);
    } else if ((rc = require_hparam(d, d->n_ff, "feed_forward_length", err)) != HERD_OK) {
        return rc;
    }
    if (!d->n_expert && (strcmp(d->arch, "qwen2moe") == 0 || strcmp(d->arch, "qwen3moe") == 0))
        return herd_error_set(err, HERD_E_NOT_FOUND, "metadata key '%s.expert_count' is missing or 0", d->arch);
    if ((rc = require_hparam(d, d->n_head, "attention.head_count", err)) != HERD_OK) return rc;
    bool uniform_heads = true;
    for (uint64_t l = 0; l < d->n_layer; l++)
        uniform_heads &= d->n_head_layer[l] == d->n_head && d->n_head_kv_layer[l] == d->n_head_kv;
    if (uniform_heads && (d->n_head_kv == 0 || d->n_head % d->n_head_kv != 0))
        return herd_error_set(err, HERD_E_INVALID, "%s.attention.head_count_kv = %llu does not divide head_count %llu",
                              d->arch, (unsigned long long)d->n_head_kv, (unsigned long long)d->n_head);
    for (uint64_t l = 0; l < d->n_layer; l++)
        if (d->n_head_layer[l] == 0 || d->n_head_kv_layer[l] == 0 || d->n_head_layer[l] % d->n_head_kv_layer[l] != 0)
            return herd_error_set(err, HERD_E_INVALID,
                                  "%s: layer %llu has %u heads and %u KV heads; expected KV heads dividing the heads "
                                  "(layers without attention are not supported)",
                                  d->arch, (unsigned long long)l, d->n_head_layer[l], d->n_head_kv_layer[l]);
    if (d->head_dim == 0 || d->head_dim % 2 != 0 || d->head_dim * d->n_head > HERD_MAX_EMBD * 4)
        return herd_error_set(err, HERD_E_INVALID,
                              "head size %llu (%s.attention.key_length, else embedding_length %llu / head_count %llu) "
                              "is not a positive even number of at most %u per head count",
                              (unsigned long long)d->head_dim, d->arch, (unsigned long long)d->n_embd,
                              (unsigned long long)d->n_head, HERD_MAX_EMBD * 4);
    if (d->head_dim_v != d->head_dim)
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "%s.attention.value_length = %llu differs from key_length %llu, which herd does not run",
                              d->arch, (unsigned long long)d->head_dim_v, (unsigned long long)d->head_dim);
    if (d->rope_scaling[0] && strcmp(d->rope_scaling, "none") != 0 && strcmp(d->rope_scaling, "linear") != 0 &&
        strcmp(d->rope_scaling, "longrope") != 0 && strcmp(d->rope_scaling, "su") != 0)
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "%s.rope.scaling.type '%s' is not supported (none, linear and Phi-3's longrope are)",
                              d->arch, d->rope_scaling);
    if (!(d->rope_attn_factor > 0 && d->rope_attn_factor < 100))
        return herd_error_set(err, HERD_E_INVALID, "%s.rope.scaling.attn_factor %g out of range", d->arch,
                              d->rope_attn_factor);
    if (!(d->rope_freq_scale > 0 && d->rope_freq_scale <= 1) || !(d->attn_softcap >= 0 && d->attn_softcap < 1e6) ||
        !(d->final_softcap >= 0 && d->final_softcap < 1e6) || !(d->attn_scale >= 0 && d->attn_scale < 1e6))
        return herd_error_set(err, HERD_E_INVALID,
                              "rope scaling factor, logit softcapping (%g, %g) or attention scale %g out of range",
                              d->attn_softcap, d->final_softcap, d->attn_scale);
    if (d->n_rot != d->head_dim)
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "%s.rope.dimension_count = %llu: partial RoPE (head size %llu) "
                              "is not supported",
                              d->arch, (unsigned long long)d->n_rot, (unsigned long long)d->head_dim);
    if (!(d->rms_eps > 0 && d->rms_eps < 1) || !(d->rope_freq_base > 0))
        return herd_error_set(err, HERD_E_INVALID, "rms epsilon %g or rope base %g out of range", d->rms_eps,
                              d->rope_freq_base);
    if ((rc = validate_tokenizer(g, d, err)) != HERD_OK) return rc;

    const uint64_t E = d->n_embd, V = d->n_vocab, hd = d->head_dim;
    if ((rc = check_tensor(g, "token_embd.weight", true, 2, E, V, 1, err)) != HERD_OK) return rc;
    if ((rc = check_tensor(g, "output_norm.weight", true, 1, E, 1, 1, err)) != HERD_OK) return rc;
    if ((rc = check_tensor(g, "output.weight", false, 2, E, V, 1, err)) != HERD_OK) return rc;
    if (herd_gguf_find_tensor(g, "output.bias"))
        return herd_error_set(err, HERD_E_UNSUPPORTED, "tensor 'output.bias' (an output bias) is not supported");
    const bool bias = arch->qkv_bias, qkn = arch->qk_norm, post = arch->gemma, moe = d->n_expert > 0;
    if (moe && herd_gguf_find_tensor(g, "blk.0.ffn_gate.0.weight"))
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "tensor 'blk.0.ffn_gate.0.weight': experts stored one tensor each (GGUF files made "
                              "before mid-2024) are not supported; convert the model again");
    for (uint64_t l = 0; l < d->n_layer; l++) {
        char name[96];
#define LAYER_TENSOR(suffix) (snprintf(name, sizeof name, "blk.%llu.%s", (unsigned long long)l, suffix), name)
        /* phi3 files stack Q, K, V in attn_qkv and gate, up in ffn_up */
        const bool qkv = arch->fused_qkv && !herd_gguf_find_tensor(g, LAYER_TENSOR("attn_q.weight"));
        const bool gate_up = arch->fused_gate_up && !herd_gguf_find_tensor(g, LAYER_TENSOR("ffn_gate.weight"));
#undef LAYER_TENSOR
        const bool dense = !moe, shexp = moe && arch->shared_expert;
        const uint64_t X = d->n_expert, FE = d->n_ff_exp, FS = d->n_ff_shexp, F = d->n_ff_layer[l];
        const uint64_t q_dim = d->n_head_layer[l] * hd, kv_dim = d->n_head_kv_layer[l] * hd;
        if (dense && F == 0)
            return herd_error_set(err, HERD_E_UNSUPPORTED,
                                  "%s.feed_forward_length is 0 for layer %llu: layers without an FFN are not supported",
                                  d->arch, (unsigned long long)l);
        const struct {
            const char *name;
            uint32_t n_dims;
            uint64_t ne0, ne1, ne2;
            bool required;
        } need[] = {
            {"attn_norm.weight", 1, E, 1, 1, true},
            {"attn_q.weight", 2, E, q_dim, 1, !qkv},
            {"attn_k.weight", 2, E, kv_dim, 1, !qkv},
            {"attn_v.weight", 2, E, kv_dim, 1, !qkv},
            {"attn_qkv.weight", 2, E, q_dim + 2 * kv_dim, 1, qkv},
            {"attn_output.weight", 2, q_dim, E, 1, true},
            {"ffn_norm.weight", 1, E, 1, 1, true},
            {"ffn_gate.weight", 2, E, F, 1, dense && !gate_up},
            {"ffn_up.weight", 2, E, gate_up ? 2 * F : F, 1, dense},
            {"ffn_down.weight", 2, F, E, 1, dense},
            {"ffn_gate_inp.weight", 2, E, X, 1, moe},
            {"ffn_gate_exps.weight", 3, E, FE, X, moe},
            {"ffn_up_exps.weight", 3, E, FE, X, moe},
            {"ffn_down_exps.weight", 3, FE, E, X, moe},
            {"ffn_gate_inp_shexp.weight", 1, E, 1, 1, shexp},
            {"ffn_gate_shexp.weight", 2, E, FS, 1, shexp},
            {"ffn_up_shexp.weight", 2, E, FS, 1, shexp},
            {"ffn_down_shexp.weight", 2, FS, E, 1, shexp},
            {"attn_q.bias", 1, q_dim, 1, 1, bias},
            {"attn_k.bias", 1, kv_dim, 1, 1, bias},
            {"attn_v.bias", 1, kv_dim, 1, 1, bias},
            {"attn_q_norm.weight", 1, hd, 1, 1, qkn},
            {"attn_k_norm.weight", 1, hd, 1, 1, qkn},
            {"post_attention_norm.weight", 1, E, 1, 1, post},
            {"post_ffw_norm.weight", 1, E, 1, 1, post},
        };
        for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
            if (!need[i].required) continue; /* an unused tensor of the other layout is not checked */
            snprintf(name, sizeof name, "blk.%llu.%s", (unsigned long long)l, need[i].name);
            rc = check_tensor(g, name, need[i].required, need[i].n_dims, need[i].ne0, need[i].ne1, need[i].ne2, err);
            if (rc != HERD_OK) return rc;
        }
    }
    herd_error_clear(err); /* optional keys that were absent left a message behind */
    return HERD_OK;
}

/* ------------------------------------------------------------ memory estimate */

void herd_model_desc_ram_estimate(const struct herd_model_desc *d, uint64_t n_ctx, struct herd_ram_estimate *out) {
    /* Batch of 512 tokens: the residual stream and its normed copy, q/k/v and
     * attention output, gate/up/activation for the FFN, all in f32; plus one
     * row of logits per sequence in the batch (assume 512 for prefill). */
    const uint64_t batch = 512;
    const uint64_t kv_dim = d->n_head_kv * d->head_dim;
    const uint64_t q_dim = d->n_head * d->head_dim;
    const uint64_t per_token = 4 * (2 * d->n_embd + 2 * q_dim + 2 * kv_dim + 3 * d->n_ff);
    out->weights = d->weight_bytes;
    uint64_t kv_heads = 0; /* over all layers, which may differ */
    for (uint64_t l = 0; l < d->n_layer && l < HERD_MAX_LAYERS; l++) kv_heads += d->n_head_kv_layer[l];
    out->kv_cache = 2 /* K and V */ * 2 /* f16 */ * n_ctx * kv_heads * d->head_dim;
    out->compute = batch * per_token + batch * 4 * d->n_vocab;
    out->total = out->weights + out->kv_cache + out->compute;
}
