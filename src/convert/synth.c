/* Synthetic Llama models: shapes of real models, random weights with the
 * fixture recipe, the tokenizer copied from a vocabulary GGUF. Each tensor
 * draws from its own generator seeded by (seed, tensor name), so the file is
 * written in GGUF order while every tensor stays independent of the others. */
#include "convert/synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/checked.h"
#include "base/rng.h"
#include "kernels/quant.h"
#include "convert/llama_meta.h"
#include "model/model_desc.h"

static const struct herd_synth_shape shapes[] = {
    /* the fixtures' tiny-spm shape */
    {"tiny", 64, 2, 4, 2, 192, 2048, 10000.0f, false, .arch = NULL},
    /* the smallest shape whose every matrix row is a multiple of 256, so
     * K-quant types apply to all of them (tests of the K types) */
    {"tiny-256", 256, 2, 4, 2, 768, 2048, 10000.0f, false, .arch = NULL},
    {"smollm-135m", 576, 30, 9, 3, 1536, 2048, 10000.0f, true, .arch = NULL},
    {"tinyllama-1.1b", 2048, 22, 32, 4, 5632, 2048, 10000.0f, false, .arch = NULL},
    {"llama-3.2-1b", 2048, 16, 32, 8, 8192, 8192, 500000.0f, true, .arch = NULL},
    /* the families beyond Llama, at their published sizes */
    {"qwen3-0.6b", 1024, 28, 16, 8, 3072, 40960, 1000000.0f, true, "qwen3", 128, .rms_eps = 1e-6f},
    {"gemma2-2b", 2304, 26, 8, 4, 9216, 8192, 10000.0f, true, "gemma2", 256, 4096, 50.0f, 30.0f, .rms_eps = 1e-6f},
    {"gemma3-1b", 1152, 26, 4, 1, 6912, 32768, 1000000.0f, true, "gemma3", 256, 512, .rms_eps = 1e-6f},
    {"phi3-mini", 3072, 32, 32, 32, 8192, 4096, 10000.0f, false, "phi3", 0, 2047, .rms_eps = 1e-5f},
    /* small shapes of each family, for tests */
    {"qwen3-tiny", 64, 2, 4, 2, 192, 2048, 1000000.0f, true, "qwen3", 32, .rms_eps = 1e-6f},
    {"gemma2-tiny", 64, 26, 4, 2, 192, 2048, 10000.0f, true, "gemma2", 16, 8, 50.0f, 30.0f, .rms_eps = 1e-6f},
    {"gemma3-tiny", 64, 6, 4, 1, 192, 2048, 1000000.0f, true, "gemma3", 32, 8, 0, 0, 8.0f, .rms_eps = 1e-6f},
    {"phi3-tiny", 64, 2, 4, 4, 192, 2048, 10000.0f, false, "phi3", 0, 8, .rms_eps = 1e-5f},
    {"mistral-tiny", 64, 2, 4, 2, 192, 2048, 10000.0f, false, "llama", 0, 8, .rms_eps = 1e-5f},
    /* mixtures of experts: tiny ones for tests; Qwen3-30B-A3B's layout (128 experts, 8 used) scaled to
     * 1024 wide, 8 layers, 64 experts of 384, and the dense model with its active parameters */
    {"mixtral-tiny", 64, 2, 4, 2, 192, 2048, 1000000.0f, false, "llama", .n_expert = 8, .n_expert_used = 2,
     .n_ff_exp = 192},
    {"qwen2moe-tiny", 64, 2, 4, 2, 192, 2048, 1000000.0f, false, "qwen2moe", .n_expert = 8, .n_expert_used = 2,
     .n_ff_exp = 96, .rms_eps = 1e-6f},
    {"qwen3moe-tiny", 64, 2, 4, 2, 192, 2048, 1000000.0f, false, "qwen3moe", 32, .n_expert = 16, .n_expert_used = 4,
     .n_ff_exp = 64, .rms_eps = 1e-6f},
    {"qwen3moe-scaled", 1024, 8, 16, 4, 3072, 4096, 1000000.0f, false, "qwen3moe", 64, .n_expert = 64,
     .n_expert_used = 8, .n_ff_exp = 384, .rms_eps = 1e-6f},
    {"qwen3-scaled-dense", 1024, 8, 16, 4, 3072, 4096, 1000000.0f, false, "qwen3", 64, .rms_eps = 1e-6f},
    /* the MoE layouts llama.cpp's snapshot runs, at the same scale: Mixtral's (8 experts, 2 used; its
     * feed_forward_length is the expert's width, which llama.cpp reads for llama's experts) and
     * Qwen1.5-MoE's (60 experts, 4 used, a shared expert 4x as wide) */
    {"phi3-scaled", 1024, 8, 16, 16, 2816, 4096, 10000.0f, false, "phi3", 0, 2047, .rms_eps = 1e-5f},
    {"mixtral-scaled", 1024, 8, 16, 4, 1536, 4096, 1000000.0f, false, "llama", .n_expert = 8, .n_expert_used = 2,
     .n_ff_exp = 1536},
    {"qwen2moe-scaled", 1024, 8, 16, 16, 1536, 4096, 1000000.0f, false, "qwen2moe", .n_expert = 60, .n_expert_used = 4,
     .n_ff_exp = 384, .rms_eps = 1e-6f},
};

const struct herd_synth_shape *herd_synth_shape_at(size_t i) {
    return i < sizeof shapes / sizeof shapes[0] ? &shapes[i] : NULL;
}

const struct herd_synth_shape *herd_synth_shape_find(const char *name) {
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (strcmp(shapes[i].name, name) == 0) return &shapes[i];
    return NULL;
}

void herd_synth_default_params(struct herd_synth_params *p) {
    memset(p, 0, sizeof *p);
    p->shape = "tiny";
    p->ftype = HERD_FTYPE_ALL_F32;
    p->seed = 1;
    p->tied = -1;
}

/* One tensor of the model: name, shape, how its values are drawn. */
struct synth_tensor {
    char name[64];
    uint64_t ne0, ne1, ne2; /* ne1 == 1 for vectors; ne2 > 1: one matrix per expert */
    double std;             /* N(0, std), plus `offset` */
    double offset;
    bool is_norm; /* a norm vector (quantize keeps these F32) */
};

HERD_WRAPS_ON_PURPOSE static uint64_t name_hash(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

static uint32_t tensor_dims(const struct synth_tensor *t) { return t->ne2 > 1 ? 3 : t->ne1 > 1 ? 2 : 1; }

static enum herd_status write_tensor_data(struct herd_gguf_writer *w, const struct synth_tensor *t,
                                          enum herd_ggml_type type, uint64_t seed, struct herd_error *err) {
    struct herd_rng rng;
    herd_rng_init(&rng, herd_rng_mix(seed) ^ name_hash(t->name));
    uint64_t ne[3] = {t->ne0, t->ne1, t->ne2}, n_bytes;
    enum herd_status rc = herd_ggml_tensor_nbytes(type, tensor_dims(t), ne, NULL, &n_bytes, err);
    if (rc != HERD_OK) return rc;
    float *row = malloc(t->ne0 * sizeof *row);
    uint8_t *out = malloc(n_bytes);
    if (!row || !out) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory for tensor %s (%llu bytes)", t->name,
                            (unsigned long long)n_bytes);
        goto out;
    }
    const uint64_t rows = t->ne1 * t->ne2, row_bytes = n_bytes / rows;
    for (uint64_t r = 0; r < rows; r++) {
        for (uint64_t i = 0; i < t->ne0; i++) row[i] = (float)(t->offset + t->std * herd_rng_normal(&rng));
        herd_quantize_row_ref(type, row, out + r * row_bytes, t->ne0);
    }
    rc = herd_gguf_writer_put_tensor_data(w, out, n_bytes, err);
out:
    free(row);
    free(out);
    return rc;
}

static void add_tensor_spec(struct synth_tensor *list, size_t *n, const char *name, uint64_t ne0, uint64_t ne1,
                            uint64_t ne2, double std, double offset, bool is_norm) {
    struct synth_tensor *t = &list[(*n)++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ne0 = ne0;
    t->ne1 = ne1;
    t->ne2 = ne2;
    t->std = std;
    t->offset = offset;
    t->is_norm = is_norm;
}

/* The F32 model, named for its final type, to path. */
static enum herd_status write_f32(const struct herd_synth_params *p, const char *path, struct herd_error *err) {
    enum herd_status rc = HERD_OK;
    struct herd_gguf *vocab = NULL;
    struct herd_gguf_writer *w = NULL;
    struct synth_tensor *specs = NULL;
    const struct herd_synth_shape *found = herd_synth_shape_find(p->shape);
    if (!found) return herd_error_set(err, HERD_E_INVALID, "unknown shape '%s'", p->shape);
    struct herd_synth_shape shape = *found;
    if (p->n_layer) shape.n_layer = p->n_layer;
    if (p->n_ff) shape.n_ff = p->n_ff;
    const struct herd_synth_shape *s = &shape;
    const enum herd_ggml_type type = HERD_GGML_TYPE_F32;
    const bool tied = p->tied < 0 ? s->tied : p->tied != 0;

    if ((rc = herd_gguf_open_file(p->vocab_path, &vocab, err)) != HERD_OK) goto out;
    struct herd_gguf_array tokens;
    rc = herd_gguf_get_array(vocab, "tokenizer.ggml.tokens", HERD_GGUF_VTYPE_STRING, &tokens, err);
    if (rc != HERD_OK) {
        herd_error_prefix(err, "%s: not a vocabulary", p->vocab_path);
        goto out;
    }
    const uint64_t n_vocab = tokens.count;

    w = herd_gguf_writer_create();
    if (!w) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    char name[160], tname[32];
    snprintf(tname, sizeof tname, "%s", herd_quantize_ftype_name(p->ftype));
    for (char *c = tname; *c; c++) *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
    snprintf(name, sizeof name, "synth-%s-%s%s", s->name, tname, tied ? "-tied" : "");
    const uint32_t hd = s->head_dim ? s->head_dim : s->n_embd / s->n_head;
    const char *arch = s->arch ? s->arch : "llama";
    const bool gemma = strncmp(arch, "gemma", 5) == 0, fused = strcmp(arch, "phi3") == 0;
    const bool qk_norm = strcmp(arch, "qwen3") == 0 || strcmp(arch, "gemma3") == 0 || strcmp(arch, "qwen3moe") == 0;
    const bool shexp = strcmp(arch, "qwen2moe") == 0, qkv_bias = strcmp(arch, "qwen2") == 0 || shexp;
#define TRY(expr)                                                                                                      \
    do {                                                                                                               \
        if ((rc = (expr)) != HERD_OK) goto out;                                                                        \
    } while (0)
    const struct herd_llama_meta meta = {
        .arch = arch,
        .name = name,
        .type = type,
        .n_vocab = (uint32_t)n_vocab,
        .n_ctx = s->n_ctx,
        .n_embd = s->n_embd,
        .n_layer = s->n_layer,
        .n_ff = s->n_ff,
        .n_head = s->n_head,
        .n_head_kv = s->n_head_kv,
        .head_dim = s->head_dim,
        .rope_freq_base = s->rope_freq_base,
        .rms_eps = s->rms_eps ? s->rms_eps : 1e-5f,
        .n_swa = s->n_swa,
        .attn_softcap = s->attn_softcap,
        .final_softcap = s->final_softcap,
        .rope_linear = s->rope_linear,
        .n_expert = s->n_expert,
        .n_expert_used = s->n_expert_used,
        .n_ff_exp = s->n_ff_exp,
        .n_ff_shexp = shexp ? s->n_ff : 0,
    };
    TRY(herd_llama_meta_write(w, &meta, err));
    TRY(herd_gguf_writer_add_u64(w, "general.seed", p->seed, err));
    for (size_t i = 0; i < herd_gguf_n_kv(vocab); i++) {
        const struct herd_gguf_kv *kv = herd_gguf_kv_at(vocab, i);
        if (kv->key.len > 10 && memcmp(kv->key.ptr, "tokenizer.", 10) == 0)
            TRY(herd_gguf_writer_add_kv_copy(w, kv, err));
    }
    TRY(herd_llama_meta_write_quant_version(w, type, err));

    /* Tensors in GGUF order, with the fixture recipe's scales. */
    const double E = s->n_embd, F = s->n_ff, QD = (double)s->n_head * hd;
    size_t n_specs = 0, max_specs = 3 + 20 * (size_t)s->n_layer;
    specs = calloc(max_specs, sizeof *specs);
    if (!specs) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    /* gemma multiplies the embeddings by sqrt(n_embd): the same rows after it */
    const double embd_std = (tied ? 0.15 : 0.6) / (gemma ? sqrt(E) : 1.0);
    add_tensor_spec(specs, &n_specs, "token_embd.weight", s->n_embd, n_vocab, 1, embd_std, 0, false);
    add_tensor_spec(specs, &n_specs, "output_norm.weight", s->n_embd, 1, 1, tied ? 0.1 * 6 / (0.15 * sqrt(E)) : 0.1,
                    tied ? 6 / (0.15 * sqrt(E)) : 1.0, true);
    if (!tied) add_tensor_spec(specs, &n_specs, "output.weight", s->n_embd, n_vocab, 1, 6 / sqrt(E), 0, false);
    for (uint32_t l = 0; l < s->n_layer; l++) {
        char b[64];
#define LAYER3(suffix, ne0, ne1, ne2, std, offset, norm)                                                               \
    do {                                                                                                               \
        snprintf(b, sizeof b, "blk.%u.%s", l, suffix);                                                                 \
        add_tensor_spec(specs, &n_specs, b, ne0, ne1, ne2, std, offset, norm);                                         \
    } while (0)
#define LAYER(suffix, ne0, ne1, std, offset, norm) LAYER3(suffix, ne0, ne1, 1, std, offset, norm)
        const uint64_t qd = (uint64_t)s->n_head * hd, kvd = (uint64_t)s->n_head_kv * hd;
        LAYER("attn_norm.weight", s->n_embd, 1, 0.1, 1.0, true);
        if (fused) { /* phi3: Q, K and V rows in one matrix (one scale: K's and Q's are the same) */
            LAYER("attn_qkv.weight", s->n_embd, qd + 2 * kvd, 1.4 / sqrt(E), 0, false);
        } else {
            LAYER("attn_q.weight", s->n_embd, qd, 1.6 / sqrt(E), 0, false);
            LAYER("attn_k.weight", s->n_embd, kvd, 1.6 / sqrt(E), 0, false);
            LAYER("attn_v.weight", s->n_embd, kvd, 1.2 / sqrt(E), 0, false);
        }
        if (qkv_bias) {
            LAYER("attn_q.bias", qd, 1, 0.5, 0, false);
            LAYER("attn_k.bias", kvd, 1, 0.5, 0, false);
            LAYER("attn_v.bias", kvd, 1, 0.5, 0, false);
        }
        if (qk_norm) {
            LAYER("attn_q_norm.weight", hd, 1, 0.1, 1.0, true);
            LAYER("attn_k_norm.weight", hd, 1, 0.1, 1.0, true);
        }
        LAYER("attn_output.weight", qd, s->n_embd, 0.8 / sqrt(QD), 0, false);
        if (gemma) LAYER("post_attention_norm.weight", s->n_embd, 1, 0.1, 1.0, true);
        LAYER("ffn_norm.weight", s->n_embd, 1, 0.1, 1.0, true);
        if (s->n_expert) { /* router, then every expert's matrices stacked in one tensor each */
            const double FE = s->n_ff_exp;
            LAYER("ffn_gate_inp.weight", s->n_embd, s->n_expert, 2.0 / sqrt(E), 0, false);
            LAYER3("ffn_gate_exps.weight", s->n_embd, s->n_ff_exp, s->n_expert, 0.8 / sqrt(E), 0, false);
            LAYER3("ffn_up_exps.weight", s->n_embd, s->n_ff_exp, s->n_expert, 0.8 / sqrt(E), 0, false);
            LAYER3("ffn_down_exps.weight", s->n_ff_exp, s->n_embd, s->n_expert, 1.2 / sqrt(FE), 0, false);
            if (shexp) {
                LAYER("ffn_gate_inp_shexp.weight", s->n_embd, 1, 1.0 / sqrt(E), 0, false);
                LAYER("ffn_gate_shexp.weight", s->n_embd, s->n_ff, 0.8 / sqrt(E), 0, false);
                LAYER("ffn_up_shexp.weight", s->n_embd, s->n_ff, 0.8 / sqrt(E), 0, false);
                LAYER("ffn_down_shexp.weight", s->n_ff, s->n_embd, 1.2 / sqrt(F), 0, false);
            }
        } else if (fused) {
            LAYER("ffn_up.weight", s->n_embd, 2 * (uint64_t)s->n_ff, 0.8 / sqrt(E), 0, false);
        } else {
            LAYER("ffn_gate.weight", s->n_embd, s->n_ff, 0.8 / sqrt(E), 0, false);
            LAYER("ffn_up.weight", s->n_embd, s->n_ff, 0.8 / sqrt(E), 0, false);
        }
        if (!s->n_expert) LAYER("ffn_down.weight", s->n_ff, s->n_embd, 1.2 / sqrt(F), 0, false);
        if (gemma) LAYER("post_ffw_norm.weight", s->n_embd, 1, 0.1, 1.0, true);
#undef LAYER
#undef LAYER3
    }
    for (size_t i = 0; i < n_specs; i++) {
        const struct synth_tensor *t = &specs[i];
        uint64_t ne[3] = {t->ne0, t->ne1, t->ne2};
        TRY(herd_gguf_writer_add_tensor(w, t->name, type, tensor_dims(t), ne, err));
    }
    TRY(herd_gguf_writer_begin(w, path, err));
    for (size_t i = 0; i < n_specs; i++) TRY(write_tensor_data(w, &specs[i], type, p->seed, err));
    TRY(herd_gguf_writer_finish(w, err));
#undef TRY
out:
    free(specs);
    herd_gguf_writer_destroy(w);
    herd_gguf_destroy(vocab);
    return rc;
}

enum herd_status herd_synth_write(const struct herd_synth_params *p, struct herd_error *err) {
    if (!herd_synth_shape_find(p->shape)) return herd_error_set(err, HERD_E_INVALID, "unknown shape '%s'", p->shape);
    if (p->n_layer > HERD_MAX_LAYERS)
        return herd_error_set(err, HERD_E_INVALID, "%u layers: at most %u", p->n_layer, HERD_MAX_LAYERS);
    if (p->n_ff > HERD_MAX_FF || (p->n_ff && herd_synth_shape_find(p->shape)->n_expert))
        return herd_error_set(err, HERD_E_INVALID, "an FFN width of %u: at most %u, and only for dense shapes", p->n_ff,
                              HERD_MAX_FF);
    if (strcmp(herd_quantize_ftype_name(p->ftype), "?") == 0)
        return herd_error_set(err, HERD_E_INVALID, "type %d cannot be synthesized; types: %s", (int)p->ftype,
                              herd_quantize_ftype_names());
    if (p->ftype == HERD_FTYPE_ALL_F32) return write_f32(p, p->out_path, err);
    char *tmp = NULL;
    const size_t n = strlen(p->out_path) + 32;
    if (!(tmp = malloc(n))) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    snprintf(tmp, n, "%s.f32.tmp-%ld", p->out_path, (long)getpid());
    enum herd_status rc = write_f32(p, tmp, err);
    if (rc == HERD_OK) {
        struct herd_quantize_params q;
        herd_quantize_default_params(&q);
        q.in_path = tmp;
        q.out_path = p->out_path;
        q.ftype = p->ftype;
        rc = herd_quantize_model(&q, NULL, err);
    }
    unlink(tmp);
    free(tmp);
    return rc;
}
