/* llama2.c checkpoint + tokenizer.bin -> GGUF. Formats are described in
 * convert_llama2c.h. The checkpoint is mapped, its layout computed from the
 * header with checked arithmetic and compared with the file size before any
 * weight is read; the output is written through the GGUF writer (atomic). */
#include "convert/convert_llama2c.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/mapped_file.h"
#include "kernels/quant.h"
#include "convert/llama_meta.h"
#include "model/model_desc.h"

#define LLAMA2C_MAGIC        0x616b3432u /* "ak42" */
#define LLAMA2C_HEADER_BYTES 256u        /* versions 1 and 2 */

/* SentencePiece token types as GGUF stores them (llama_token_type). */
enum { TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3, TOKEN_BYTE = 6 };

enum kind { K_EMB, K_RMS_ATT, K_WQ, K_WK, K_WV, K_WO, K_RMS_FFN, K_W1, K_W2, K_W3, K_RMS_FINAL, K_CLS, K__COUNT };

struct ckpt {
    int version;
    int32_t dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len;
    bool shared;
    int32_t group;
    struct herd_mapped_file map;
    /* byte offsets of each (kind, layer) in the file; for version 2 the int8
     * values, with the scales in scale_off */
    uint64_t *off;
    uint64_t *scale_off;
};

static uint64_t *at(uint64_t *table, enum kind k, int32_t layer, int32_t n_layers) {
    return &table[(size_t)k * (size_t)n_layers + (size_t)layer];
}

void herd_llama2c_default_params(struct herd_llama2c_params *p) {
    memset(p, 0, sizeof *p);
    p->type = HERD_GGML_TYPE_F32;
}

static int32_t load_i32(const uint8_t *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    return (int32_t)v;
}

static float load_f32(const uint8_t *p) {
    uint32_t v = (uint32_t)load_i32(p);
    float f;
    memcpy(&f, &v, sizeof f);
    return f;
}

/* ------------------------------------------------------------ checkpoint layout */

static uint64_t kind_rows(const struct ckpt *c, enum kind k) {
    const uint64_t kv_dim = (uint64_t)c->dim / (uint64_t)c->n_heads * (uint64_t)c->n_kv_heads;
    switch (k) {
    case K_EMB:
    case K_CLS: return (uint64_t)c->vocab;
    case K_WK:
    case K_WV: return kv_dim;
    case K_W1:
    case K_W3: return (uint64_t)c->hidden;
    case K_RMS_ATT:
    case K_RMS_FFN:
    case K_RMS_FINAL: return 1;
    default: return (uint64_t)c->dim;
    }
}

static uint64_t kind_cols(const struct ckpt *c, enum kind k) {
    return k == K_W2 ? (uint64_t)c->hidden : (uint64_t)c->dim;
}

static bool per_layer(enum kind k) { return k != K_EMB && k != K_CLS && k != K_RMS_FINAL; }

/* Assigns consecutive offsets to the kinds in order (each per layer where it
 * applies), elem_bytes per value, starting at *pos. False on overflow. */
static bool lay_out(const struct ckpt *c, const enum kind *order, size_t n, uint64_t elem_bytes, uint64_t *table,
                    uint64_t *pos) {
    for (size_t i = 0; i < n; i++) {
        enum kind k = order[i];
        if (k == K_CLS && c->shared) continue;
        int32_t layers = per_layer(k) ? c->n_layers : 1;
        for (int32_t l = 0; l < layers; l++) {
            uint64_t bytes;
            if (!herd_mul_u64(kind_rows(c, k), kind_cols(c, k), &bytes) || !herd_mul_u64(bytes, elem_bytes, &bytes))
                return false;
            *at(table, k, l, c->n_layers) = *pos;
            if (!herd_add_u64(*pos, bytes, pos)) return false;
        }
    }
    return true;
}

static enum herd_status read_header(struct ckpt *c, const char *path, struct herd_error *err) {
    const uint8_t *b = c->map.data;
    const size_t size = c->map.size;
    size_t params_at;
    if (size >= 8 && (uint32_t)load_i32(b) == LLAMA2C_MAGIC) {
        c->version = load_i32(b + 4);
        if (c->version != 1 && c->version != 2)
            return herd_error_set(err, HERD_E_UNSUPPORTED,
                                  "%s: llama2.c checkpoint version %d is not supported (0, 1, 2 are)", path,
                                  c->version);
        if (size < LLAMA2C_HEADER_BYTES)
            return herd_error_set(err, HERD_E_TRUNCATED, "%s: truncated: %zu bytes, the version %d header is 256", path,
                                  size, c->version);
        params_at = 8;
    } else {
        if (size < 28)
            return herd_error_set(err, HERD_E_TRUNCATED, "%s: truncated: %zu bytes, the legacy header is 28", path,
                                  size);
        c->version = 0;
        params_at = 0;
    }
    int32_t *fields[7] = {&c->dim, &c->hidden, &c->n_layers, &c->n_heads, &c->n_kv_heads, &c->vocab, &c->seq_len};
    for (int i = 0; i < 7; i++) *fields[i] = load_i32(b + params_at + 4 * i);
    if (c->version == 0) {
        if (c->vocab == INT32_MIN)
            return herd_error_set(err, HERD_E_FORMAT, "%s: vocab_size %d is out of range", path, c->vocab);
        c->shared = c->vocab > 0;
        c->vocab = c->vocab < 0 ? -c->vocab : c->vocab;
    } else {
        c->shared = b[36] != 0;
        if (c->version == 2) c->group = load_i32(b + 37);
    }
    const struct {
        const char *name;
        int32_t v;
        int64_t max;
    } checks[] = {
        {"dim", c->dim, HERD_MAX_EMBD},
        {"hidden_dim", c->hidden, HERD_MAX_FF},
        {"n_layers", c->n_layers, HERD_MAX_LAYERS},
        {"n_heads", c->n_heads, HERD_MAX_HEADS},
        {"n_kv_heads", c->n_kv_heads, HERD_MAX_HEADS},
        {"vocab_size", c->vocab, HERD_MAX_VOCAB},
        {"seq_len", c->seq_len, INT32_MAX},
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++)
        if (checks[i].v < 1 || checks[i].v > checks[i].max)
            return herd_error_set(err, HERD_E_FORMAT, "%s: header field %s = %d is not in 1..%lld", path,
                                  checks[i].name, checks[i].v, (long long)checks[i].max);
    if (c->dim % c->n_heads != 0 || (c->dim / c->n_heads) % 2 != 0)
        return herd_error_set(err, HERD_E_FORMAT, "%s: dim %d / n_heads %d is not an even head size", path, c->dim,
                              c->n_heads);
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0)
        return herd_error_set(err, HERD_E_FORMAT, "%s: n_kv_heads %d does not divide n_heads %d", path, c->n_kv_heads,
                              c->n_heads);
    if (c->version == 2 && (c->group < 1 || c->group > (1 << 20)))
        return herd_error_set(err, HERD_E_FORMAT, "%s: group_size %d is out of range", path, c->group);
    return HERD_OK;
}

static enum herd_status compute_layout(struct ckpt *c, const char *path, struct herd_error *err) {
    static const enum kind legacy[] = {K_EMB,     K_RMS_ATT, K_WQ, K_WK, K_WV,       K_WO,
                                       K_RMS_FFN, K_W1,      K_W2, K_W3, K_RMS_FINAL};
    static const enum kind v1_norms[] = {K_RMS_ATT, K_RMS_FFN, K_RMS_FINAL};
    static const enum kind v1_mats[] = {K_EMB, K_WQ, K_WK, K_WV, K_WO, K_W1, K_W2, K_W3, K_CLS};
    static const enum kind cls[] = {K_CLS};
    const size_t table_len = (size_t)K__COUNT * (size_t)c->n_layers;
    c->off = calloc(table_len, sizeof *c->off);
    c->scale_off = calloc(table_len, sizeof *c->scale_off);
    if (!c->off || !c->scale_off) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    uint64_t pos = c->version == 0 ? 28 : LLAMA2C_HEADER_BYTES;
    bool ok;
    if (c->version == 0) {
        ok = lay_out(c, legacy, sizeof legacy / sizeof legacy[0], 4, c->off, &pos);
        /* two RoPE tables that llama2.c no longer reads: seq_len * head_size / 2 floats each */
        uint64_t rope;
        ok = ok && herd_mul_u64((uint64_t)c->seq_len, (uint64_t)(c->dim / c->n_heads) * 4, &rope) &&
             herd_add_u64(pos, rope, &pos);
        ok = ok && lay_out(c, cls, 1, 4, c->off, &pos);
    } else if (c->version == 1) {
        ok = lay_out(c, v1_norms, 3, 4, c->off, &pos) && lay_out(c, v1_mats, 9, 4, c->off, &pos);
    } else {
        for (size_t i = 0; i < 9; i++) {
            enum kind k = v1_mats[i];
            if (k == K_CLS && c->shared) continue;
            if ((kind_rows(c, k) * kind_cols(c, k)) % (uint64_t)c->group != 0)
                return herd_error_set(err, HERD_E_FORMAT,
                                      "%s: a matrix of %llu values is not a multiple of group_size %d", path,
                                      (unsigned long long)(kind_rows(c, k) * kind_cols(c, k)), c->group);
        }
        ok = lay_out(c, v1_norms, 3, 4, c->off, &pos) && lay_out(c, v1_mats, 9, 1, c->off, &pos);
        /* scales: 4 bytes per group, i.e. 4 / group bytes per value; lay out
         * in values per group by treating each group as one element */
        for (size_t i = 0; ok && i < 9; i++) {
            enum kind k = v1_mats[i];
            if (k == K_CLS && c->shared) continue;
            int32_t layers = per_layer(k) ? c->n_layers : 1;
            for (int32_t l = 0; ok && l < layers; l++) {
                *at(c->scale_off, k, l, c->n_layers) = pos;
                ok = herd_add_u64(pos, kind_rows(c, k) * kind_cols(c, k) / (uint64_t)c->group * 4, &pos);
            }
        }
    }
    if (!ok) return herd_error_set(err, HERD_E_OVERFLOW, "%s: the weights' total size overflows", path);
    if (pos > c->map.size)
        return herd_error_set(err, HERD_E_TRUNCATED,
                              "%s: truncated: the header (version %d, dim %d, %d layers, vocab %d) needs %llu bytes, "
                              "the file has %zu",
                              path, c->version, c->dim, c->n_layers, c->vocab, (unsigned long long)pos, c->map.size);
    return HERD_OK;
}

/* Fills out with the f32 values of (k, layer): rows x cols. */
static void load_values(const struct ckpt *c, enum kind k, int32_t layer, float *out) {
    if (k == K_CLS && c->shared) k = K_EMB;
    const uint64_t n = kind_rows(c, k) * kind_cols(c, k);
    const uint8_t *p = c->map.data + *at(c->off, k, layer, c->n_layers);
    bool quantized = c->version == 2 && k != K_RMS_ATT && k != K_RMS_FFN && k != K_RMS_FINAL;
    if (!quantized) {
        for (uint64_t i = 0; i < n; i++) out[i] = load_f32(p + 4 * i);
        return;
    }
    const uint8_t *s = c->map.data + *at(c->scale_off, k, layer, c->n_layers);
    for (uint64_t i = 0; i < n; i++) out[i] = (float)(int8_t)p[i] * load_f32(s + 4 * (i / (uint64_t)c->group));
}

/* ------------------------------------------------------------ tokenizer */

struct vocab {
    struct herd_mapped_file map;
    char **texts;
    uint64_t *lens;
    float *scores;
    int32_t *types;
    int32_t n;
};

static bool is_byte_token(const char *s, uint64_t len) {
    return len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' && strchr("0123456789ABCDEF", s[3]) && s[3] &&
           strchr("0123456789ABCDEF", s[4]) && s[4];
}

static enum herd_status read_vocab(struct vocab *v, const char *path, int32_t n, struct herd_error *err) {
    enum herd_status rc = herd_mapped_file_init(&v->map, path, err);
    if (rc != HERD_OK) return rc;
    v->texts = calloc((size_t)n, sizeof *v->texts);
    v->lens = calloc((size_t)n, sizeof *v->lens);
    v->scores = calloc((size_t)n, sizeof *v->scores);
    v->types = calloc((size_t)n, sizeof *v->types);
    if (!v->texts || !v->lens || !v->scores || !v->types) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    const uint8_t *b = v->map.data;
    const uint64_t size = v->map.size;
    if (size < 4) return herd_error_set(err, HERD_E_TRUNCATED, "%s: truncated at offset 0 (max_token_length)", path);
    uint64_t pos = 4;
    for (int32_t i = 0; i < n; i++) {
        if (size - pos < 8)
            return herd_error_set(err, HERD_E_TRUNCATED, "%s: truncated at offset %llu: token %d of %d", path,
                                  (unsigned long long)pos, i, n);
        float score = load_f32(b + pos);
        int32_t len = load_i32(b + pos + 4);
        if (!isfinite(score))
            return herd_error_set(err, HERD_E_FORMAT, "%s: token %d at offset %llu: score is not finite", path, i,
                                  (unsigned long long)pos);
        if (len < 0 || (uint32_t)len > HERD_MAX_TOKEN_BYTES)
            return herd_error_set(err, HERD_E_FORMAT, "%s: token %d at offset %llu: length %d is not in 0..%u", path, i,
                                  (unsigned long long)pos, len, HERD_MAX_TOKEN_BYTES);
        pos += 8;
        if (size - pos < (uint64_t)len)
            return herd_error_set(err, HERD_E_TRUNCATED, "%s: truncated at offset %llu: token %d needs %d bytes", path,
                                  (unsigned long long)pos, i, len);
        const char *text = (const char *)b + pos;
        pos += (uint64_t)len;
        /* Restore SentencePiece's forms: "\n<s>\n" -> "<s>", ' ' -> U+2581. */
        char *out = malloc((size_t)len * 3 + 1);
        if (!out) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
        uint64_t o = 0;
        int32_t type = TOKEN_NORMAL;
        if ((len == 5 && memcmp(text, "\n<s>\n", 5) == 0) || (len == 6 && memcmp(text, "\n</s>\n", 6) == 0)) {
            memcpy(out, text + 1, (size_t)len - 2);
            o = (uint64_t)len - 2;
            type = TOKEN_CONTROL;
        } else {
            for (int32_t j = 0; j < len; j++) {
                if (text[j] == ' ') {
                    memcpy(out + o, "\xe2\x96\x81", 3);
                    o += 3;
                } else {
                    out[o++] = text[j];
                }
            }
            if (i == 0 && o == 5 && memcmp(out, "<unk>", 5) == 0)
                type = TOKEN_UNKNOWN;
            else if (is_byte_token(out, o))
                type = TOKEN_BYTE;
            else if ((o == 3 && memcmp(out, "<s>", 3) == 0) || (o == 4 && memcmp(out, "</s>", 4) == 0))
                type = TOKEN_CONTROL;
        }
        out[o] = '\0';
        v->texts[i] = out;
        v->lens[i] = o;
        v->scores[i] = score;
        v->types[i] = type;
    }
    v->n = n;
    if (pos != size)
        return herd_error_set(err, HERD_E_FORMAT,
                              "%s: %llu bytes after the last of %d tokens: wrong tokenizer for this "
                              "checkpoint?",
                              path, (unsigned long long)(size - pos), n);
    return HERD_OK;
}

static void vocab_cleanup(struct vocab *v, int32_t n) {
    if (v->texts)
        for (int32_t i = 0; i < n; i++) free(v->texts[i]);
    free(v->texts);
    free(v->lens);
    free(v->scores);
    free(v->types);
    herd_mapped_file_cleanup(&v->map);
}

/* ------------------------------------------------------------ conversion */

struct out_tensor {
    char name[64];
    enum kind kind;
    int32_t layer;
    enum herd_ggml_type type;
};

enum herd_status herd_llama2c_convert(const struct herd_llama2c_params *p, struct herd_error *err) {
    enum herd_status rc;
    struct ckpt c = {0};
    struct vocab v = {0};
    struct herd_gguf_writer *w = NULL;
    struct out_tensor *outs = NULL;
    float *values = NULL;
    uint8_t *packed = NULL;
    const struct herd_ggml_type_info *ti = herd_ggml_type_info(p->type);
    if (!ti || !herd_quantize_row_supported(p->type))
        return herd_error_set(err, HERD_E_INVALID, "output type must be f32, f16, bf16, q8_0 or q4_0");

    if ((rc = herd_mapped_file_init(&c.map, p->checkpoint_path, err)) != HERD_OK) goto out;
    if ((rc = read_header(&c, p->checkpoint_path, err)) != HERD_OK) goto out;
    if ((rc = compute_layout(&c, p->checkpoint_path, err)) != HERD_OK) goto out;
    if ((rc = read_vocab(&v, p->tokenizer_path, c.vocab, err)) != HERD_OK) goto out;

    char name[128];
    if (p->name) {
        snprintf(name, sizeof name, "%s", p->name);
    } else {
        const char *base = strrchr(p->checkpoint_path, '/');
        snprintf(name, sizeof name, "%s", base ? base + 1 : p->checkpoint_path);
        char *dot = strrchr(name, '.');
        if (dot && dot != name) *dot = '\0';
    }
    w = herd_gguf_writer_create();
    if (!w) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    const int32_t bos = 1, eos = 2, unk = 0;
#define TRY(expr)                                                                                                      \
    do {                                                                                                               \
        if ((rc = (expr)) != HERD_OK) goto out;                                                                        \
    } while (0)
    const struct herd_llama_meta meta = {
        .name = name,
        .type = p->type,
        .n_vocab = (uint32_t)c.vocab,
        .n_ctx = (uint32_t)c.seq_len,
        .n_embd = (uint32_t)c.dim,
        .n_layer = (uint32_t)c.n_layers,
        .n_ff = (uint32_t)c.hidden,
        .n_head = (uint32_t)c.n_heads,
        .n_head_kv = (uint32_t)c.n_kv_heads,
        .rope_freq_base = 10000.0f,
        .rms_eps = 1e-5f, /* llama2.c's constants */
    };
    TRY(herd_llama_meta_write(w, &meta, err));
    TRY(herd_gguf_writer_add_string(w, "tokenizer.ggml.model", "llama", err));
    TRY(herd_gguf_writer_add_string(w, "tokenizer.ggml.pre", "default", err));
    TRY(herd_gguf_writer_add_string_array(w, "tokenizer.ggml.tokens", (uint64_t)v.n, (const char *const *)v.texts,
                                          v.lens, err));
    TRY(herd_gguf_writer_add_array(w, "tokenizer.ggml.scores", HERD_GGUF_VTYPE_F32, (uint64_t)v.n, v.scores, err));
    TRY(herd_gguf_writer_add_array(w, "tokenizer.ggml.token_type", HERD_GGUF_VTYPE_I32, (uint64_t)v.n, v.types, err));
    if (c.vocab > eos) {
        TRY(herd_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", bos, err));
        TRY(herd_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", eos, err));
    }
    TRY(herd_gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", unk, err));
    TRY(herd_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", true, err));
    TRY(herd_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", false, err));
    TRY(herd_llama_meta_write_quant_version(w, p->type, err));

    /* GGUF order: token_embd, output_norm, output, then each layer. */
    const size_t max_outs = 3 + 9 * (size_t)c.n_layers;
    size_t n_outs = 0;
    outs = calloc(max_outs, sizeof *outs);
    if (!outs) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
#define OUT(nm, k, l)                                                                                                  \
    do {                                                                                                               \
        snprintf(outs[n_outs].name, sizeof outs[n_outs].name, "%s", nm);                                               \
        outs[n_outs].kind = k;                                                                                         \
        outs[n_outs++].layer = l;                                                                                      \
    } while (0)
    OUT("token_embd.weight", K_EMB, 0);
    OUT("output_norm.weight", K_RMS_FINAL, 0);
    if (!c.shared) OUT("output.weight", K_CLS, 0);
    static const struct {
        const char *suffix;
        enum kind kind;
    } per[] = {{"attn_norm.weight", K_RMS_ATT}, {"attn_q.weight", K_WQ},      {"attn_k.weight", K_WK},
               {"attn_v.weight", K_WV},         {"attn_output.weight", K_WO}, {"ffn_norm.weight", K_RMS_FFN},
               {"ffn_gate.weight", K_W1},       {"ffn_up.weight", K_W3},      {"ffn_down.weight", K_W2}};
    for (int32_t l = 0; l < c.n_layers; l++)
        for (size_t i = 0; i < sizeof per / sizeof per[0]; i++) {
            char nm[64];
            snprintf(nm, sizeof nm, "blk.%d.%s", l, per[i].suffix);
            OUT(nm, per[i].kind, l);
        }
#undef OUT
    uint64_t max_values = 0;
    for (size_t i = 0; i < n_outs; i++) {
        struct out_tensor *o = &outs[i];
        uint64_t rows = kind_rows(&c, o->kind), cols = kind_cols(&c, o->kind);
        bool is_norm = rows == 1;
        o->type = is_norm || cols % ti->block_elems != 0 ? HERD_GGML_TYPE_F32 : p->type;
        uint64_t ne[2] = {cols, rows};
        TRY(herd_gguf_writer_add_tensor(w, o->name, o->type, is_norm ? 1 : 2, ne, err));
        if (rows * cols > max_values) max_values = rows * cols;
    }
    values = malloc(max_values * sizeof *values);
    packed = malloc(max_values * sizeof *values); /* no output type is larger than f32 */
    if (!values || !packed) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory (%llu values)", (unsigned long long)max_values);
        goto out;
    }
    TRY(herd_gguf_writer_begin(w, p->out_path, err));
    for (size_t i = 0; i < n_outs; i++) {
        const struct out_tensor *o = &outs[i];
        uint64_t rows = kind_rows(&c, o->kind), cols = kind_cols(&c, o->kind), ne[2] = {cols, rows}, n_bytes;
        load_values(&c, o->kind, o->layer, values);
        TRY(herd_ggml_tensor_nbytes(o->type, 2, ne, NULL, &n_bytes, err));
        for (uint64_t r = 0; r < rows; r++)
            herd_quantize_row_ref(o->type, values + r * cols, packed + r * (n_bytes / rows), (size_t)cols);
        TRY(herd_gguf_writer_put_tensor_data(w, packed, n_bytes, err));
    }
    TRY(herd_gguf_writer_finish(w, err));
#undef TRY
out:
    free(values);
    free(packed);
    free(outs);
    herd_gguf_writer_destroy(w);
    vocab_cleanup(&v, c.vocab > 0 && v.texts ? c.vocab : 0);
    free(c.off);
    free(c.scale_off);
    herd_mapped_file_cleanup(&c.map);
    return rc;
}
