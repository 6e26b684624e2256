/* herd convert hf on small Hugging Face folders written here: Llama and
 * Qwen2, F32/F16/BF16 weights, one file or two shards with an index, tied
 * and untied (and tied through safetensors metadata) embeddings, Llama 3 RoPE
 * scaling, SentencePiece-style and byte-level tokenizers. Every tensor lands
 * under its GGUF name with the right values (Q/K rows permuted for llama
 * only), the model loads, the vocabulary tokenizes as Hugging Face's BPE
 * would; broken folders give errors that name the problem and leave no file.
 * The trained-model check (greedy ids against a float64 reference) is
 * test_convert_hf.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <math.h>

#include "convert/convert_hf.h"
#include "convert/safetensors.h"
#include "herd/gguf.h"
#include "kernels/quant.h"
#include "model/model.h"
#include "model/model_desc.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

/* dim 64, 2 layers, 4 heads of 16, 2 KV heads; FFN 80 (not a multiple of
 * 32: ffn_down's rows stay F32 under Q8_0). */
enum { E = 64, L = 2, H = 4, KV = 2, HD = E / H, FF = 80, V_SPM = 20, V_BPE = 16 };

/* ------------------------------------------------------------ writing a folder */

struct spec {
    const char *hf_arch;
    bool qwen2;
    bool tied;        /* config tie_word_embeddings */
    bool lm_head;     /* lm_head.weight stored */
    bool embed_alias; /* embed_tokens left out, __metadata__ points it at lm_head */
    enum herd_safetensors_dtype dtype;
    int shards;
    bool bpe;
    const char *rope_scaling; /* JSON, or NULL */
    const char *drop;         /* a tensor to leave out */
    const char *extra;        /* a stray 1-D tensor to add */
    int config_ff;            /* intermediate_size in config.json (0: FF) */
};

static uint32_t name_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* Element i of tensor name: multiples of 1/16 up to 3, exact in F16 and BF16,
 * distinct per tensor so a tensor read from the wrong place is caught. */
static float value(const char *name, uint64_t i) {
    return (float)((int)(((name_hash(name) % 89) * 31 + i) % 97) - 48) / 16.0f;
}

struct tensor_def {
    char name[128];
    uint64_t rows, cols; /* rows 0: 1-D of cols */
};

static size_t list_tensors(const struct spec *s, struct tensor_def *t) {
    size_t n = 0;
    const uint64_t V = s->bpe ? V_BPE : V_SPM;
#define ADD(nm, r, c) (snprintf(t[n].name, sizeof t[n].name, "%s", nm), t[n].rows = (r), t[n].cols = (c), n++)
    if (!s->embed_alias) ADD("model.embed_tokens.weight", V, E);
    if (s->lm_head) ADD("lm_head.weight", V, E);
    ADD("model.norm.weight", 0, E);
    for (int l = 0; l < L; l++) {
        const struct {
            const char *name;
            uint64_t rows, cols;
        } per[] = {
            {"input_layernorm.weight", 0, E},        {"self_attn.q_proj.weight", H * HD, E},
            {"self_attn.k_proj.weight", KV * HD, E}, {"self_attn.v_proj.weight", KV * HD, E},
            {"self_attn.o_proj.weight", E, H * HD},  {"post_attention_layernorm.weight", 0, E},
            {"mlp.gate_proj.weight", FF, E},         {"mlp.up_proj.weight", FF, E},
            {"mlp.down_proj.weight", E, FF},         {"self_attn.q_proj.bias", 0, H * HD},
            {"self_attn.k_proj.bias", 0, KV * HD},   {"self_attn.v_proj.bias", 0, KV * HD},
        };
        for (size_t i = 0; i < sizeof per / sizeof per[0]; i++) {
            if (i >= 9 && !s->qwen2) continue;
            char nm[128];
            snprintf(nm, sizeof nm, "model.layers.%d.%s", l, per[i].name);
            ADD(nm, per[i].rows, per[i].cols);
        }
    }
    if (s->extra) ADD(s->extra, 0, E);
#undef ADD
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!s->drop || strcmp(t[i].name, s->drop) != 0) t[k++] = t[i];
    return k;
}

static void write_text(const char *dir, const char *file, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static void write_json(const char *dir, const char *file, json_t *j) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    assert_int_equal(json_dump_file(j, path, JSON_INDENT(1)), 0);
    json_decref(j);
}

/* One safetensors file holding tensors [from, to) of t. */
static void write_safetensors(const char *path, const struct spec *s, const struct tensor_def *t, size_t from,
                              size_t to) {
    json_t *hdr = json_object();
    if (s->embed_alias)
        json_object_set_new(hdr, "__metadata__",
                            json_pack("{s:s,s:s}", "format", "pt", "model.embed_tokens.weight", "lm_head.weight"));
    const size_t es = herd_safetensors_dtype_size(s->dtype);
    uint64_t off = 0;
    for (size_t i = from; i < to; i++) {
        const uint64_t n = (t[i].rows ? t[i].rows : 1) * t[i].cols;
        json_t *shape = t[i].rows ? json_pack("[I,I]", (json_int_t)t[i].rows, (json_int_t)t[i].cols)
                                  : json_pack("[I]", (json_int_t)t[i].cols);
        json_object_set_new(hdr, t[i].name,
                            json_pack("{s:s,s:o,s:[I,I]}", "dtype", herd_safetensors_dtype_name(s->dtype), "shape",
                                      shape, "data_offsets", (json_int_t)off, (json_int_t)(off + n * es)));
        off += n * es;
    }
    char *text = json_dumps(hdr, JSON_COMPACT);
    json_decref(hdr);
    struct herd_buf b;
    herd_buf_init(&b, SIZE_MAX);
    size_t hl = strlen(text);
    put_u64(&b, (hl + 7) / 8 * 8);
    herd_buf_append(&b, text, hl);
    while (b.len % 8) put_u8(&b, ' '); /* the header is padded with spaces, as the Python writer does */
    free(text);
    for (size_t i = from; i < to; i++) {
        const uint64_t n = (t[i].rows ? t[i].rows : 1) * t[i].cols;
        for (uint64_t k = 0; k < n; k++) {
            const float x = value(t[i].name, k);
            if (s->dtype == HERD_SAFETENSORS_F32)
                put_f32(&b, x);
            else if (s->dtype == HERD_SAFETENSORS_F16)
                herd_buf_append_le(&b, herd_fp32_to_fp16(x), 2);
            else if (s->dtype == HERD_SAFETENSORS_BF16)
                herd_buf_append_le(&b, herd_fp32_to_bf16(x), 2);
            else
                herd_buf_append_le(&b, (uint32_t)(int32_t)(x * 16), 4); /* I32 */
        }
    }
    FILE *f = fopen(path, "wb");
    fwrite(b.data, 1, b.len, f);
    fclose(f);
    herd_buf_cleanup(&b);
}

static const char SPM_TOKENIZER[] =
    "{\"version\":\"1.0\",\"added_tokens\":["
    "{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\",\"special\":true},"
    "{\"id\":2,\"content\":\"</s>\",\"special\":true},{\"id\":15,\"content\":\"<extra>\",\"special\":false}],"
    "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]},"
    "\"pre_tokenizer\":null,"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
    "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}]},"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"}]},"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"byte_fallback\":true,\"vocab\":{"
    "\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"<0x0A>\":3,\"<0x21>\":4,\"\\u2581\":5,\"a\":6,\"b\":7,\"c\":8,\"ab\":9,"
    "\"\\u2581a\":10,\"\\u2581ab\":11,\"abc\":12,\"ca\":13,\"bc\":14},"
    "\"merges\":[\"\\u2581 a\",\"a b\",\"\\u2581a b\",\"b c\",\"c a\"]}}";

static const char SPM_CONFIG[] =
    "{\"add_bos_token\":true,\"add_eos_token\":false,\"bos_token\":\"<s>\","
    "\"eos_token\":{\"content\":\"</s>\"},\"unk_token\":\"<unk>\",\"pad_token\":null,"
    "\"model_max_length\":1000000000000000019884624838656,"
    "\"chat_template\":\"{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}\"}";

/* Qwen2's pre-tokenizer; merges in both of transformers' forms. */
static const char BPE_TOKENIZER[] =
    "{\"version\":\"1.0\",\"added_tokens\":["
    "{\"id\":8,\"content\":\"<|endoftext|>\",\"special\":true},{\"id\":9,\"content\":\"<|im_start|>\",\"special\":true}"
    ","
    "{\"id\":10,\"content\":\"<|im_end|>\",\"special\":true},{\"id\":11,\"content\":\"<tool>\",\"special\":false},"
    "{\"id\":12,\"content\":\"<|user|>\",\"special\":false}],"
    "\"normalizer\":{\"type\":\"NFC\"},"
    "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
    "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| "
    "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|"
    "\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},"
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,\"use_regex\":false}]},"
    "\"post_processor\":{\"type\":\"ByteLevel\"},\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"byte_fallback\":false,\"vocab\":{"
    "\"a\":0,\"b\":1,\"c\":2,\"\\u0120\":3,\"ab\":4,\"\\u0120a\":5,\"\\u0120ab\":6,\"abc\":7},"
    "\"merges\":[[\"a\",\"b\"],\"\\u0120 a\",[\"\\u0120a\",\"b\"],[\"a b\",\"c\"]]}}";

static const char BPE_CONFIG[] = "{\"bos_token\":null,\"eos_token\":\"<|endoftext|>\",\"chat_template\":\"{{ x }}\"}";

static void write_folder(const char *dir, const struct spec *s) {
    struct tensor_def t[64];
    const size_t n = list_tensors(s, t);
    char path[1024];
    if (s->shards == 2) {
        static const char *const files[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
        json_t *map = json_object();
        for (size_t i = 0; i < n; i++) json_object_set_new(map, t[i].name, json_string(files[i >= n / 2]));
        write_json(dir, "model.safetensors.index.json",
                   json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)0, "weight_map", map));
        for (int k = 0; k < 2; k++) {
            snprintf(path, sizeof path, "%s/%s", dir, files[k]);
            write_safetensors(path, s, t, k ? n / 2 : 0, k ? n : n / 2);
        }
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        write_safetensors(path, s, t, 0, n);
    }
    json_t *cfg =
        json_pack("{s:[s],s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:b,s:s,s:i}", "architectures", s->hf_arch, "hidden_size", E,
                  "num_hidden_layers", L, "num_attention_heads", H, "num_key_value_heads", KV, "intermediate_size",
                  s->config_ff ? s->config_ff : FF, "max_position_embeddings", 256, "rms_norm_eps", 1e-5, "rope_theta",
                  500000.0, "tie_word_embeddings", s->tied, "hidden_act", "silu", "vocab_size", s->bpe ? V_BPE : V_SPM);
    if (s->rope_scaling) json_object_set_new(cfg, "rope_scaling", json_loads(s->rope_scaling, 0, NULL));
    write_json(dir, "config.json", cfg);
    write_text(dir, "tokenizer.json", s->bpe ? BPE_TOKENIZER : SPM_TOKENIZER);
    write_text(dir, "tokenizer_config.json", s->bpe ? BPE_CONFIG : SPM_CONFIG);
    if (s->bpe) write_text(dir, "generation_config.json", "{\"bos_token_id\":8,\"eos_token_id\":[10,8]}");
}

static void make_dir(char *dir, size_t n) {
    test_tmp_path("hfXXXXXX", dir, n);
    assert_non_null(mkdtemp(dir));
}

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[1024];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}

static enum herd_status convert(const char *dir, const char *out, bool type_auto, enum herd_ggml_type type,
                                struct herd_hf_convert_summary *sum, struct herd_error *err) {
    struct herd_hf_convert_params p;
    herd_hf_convert_default_params(&p);
    p.model_dir = dir;
    p.out_path = out;
    p.type_auto = type_auto;
    p.type = type;
    return herd_hf_convert(&p, sum, err);
}

/* ------------------------------------------------------------ checking the output */

/* GGUF tensor gname against HF tensor hname; permute: heads whose rows go
 * from rotate_half to adjacent pairs. */
static void check_values(const struct herd_gguf *g, const char *gname, const char *hname, uint32_t permute, float tol) {
    const struct herd_gguf_tensor *t = herd_gguf_find_tensor(g, gname);
    if (!t) fail_msg("tensor %s missing", gname);
    const uint64_t cols = t->ne[0], rows = t->ne[1];
    float *v = malloc(t->n_elems * sizeof *v);
    herd_dequantize_row_ref(t->type, t->data, v, (size_t)t->n_elems);
    for (uint64_t r = 0; r < rows; r++) {
        uint64_t src = r;
        if (permute) {
            /* numpy: w.reshape(heads, 2, hd/2, cols).swapaxes(1, 2): new[h][i][j] = old[h][j][i] */
            const uint64_t hd = rows / permute, h = r / hd, i = (r % hd) / 2, j = r % 2;
            src = h * hd + j * (hd / 2) + i;
        }
        for (uint64_t c = 0; c < cols; c++) {
            const float want = value(hname, src * cols + c);
            if (fabsf(v[r * cols + c] - want) > tol)
                fail_msg("%s[%llu][%llu] = %g, want %g (%s row %llu)", gname, (unsigned long long)r,
                         (unsigned long long)c, v[r * cols + c], want, hname, (unsigned long long)src);
        }
    }
    free(v);
}

static enum herd_ggml_type tensor_type(const struct herd_gguf *g, const char *name) {
    const struct herd_gguf_tensor *t = herd_gguf_find_tensor(g, name);
    if (!t) fail_msg("tensor %s missing", name);
    return t->type;
}

static void check_tokenize(const char *path, const char *text, unsigned flags, const int32_t *want, uint32_t n_want) {
    struct herd_gguf *g = NULL;
    struct herd_vocab *v = NULL;
    struct herd_tokenizer *tk = NULL;
    struct herd_error err = {0};
    assert_int_equal(herd_gguf_open_file(path, &g, &err), HERD_OK);
    if (herd_vocab_load(g, &v, &err) != HERD_OK || herd_tokenizer_create(v, &tk, &err) != HERD_OK)
        fail_msg("%s", err.msg);
    int32_t ids[64];
    uint32_t n = 0;
    if (herd_tokenize(tk, text, strlen(text), flags, ids, 64, &n, &err) != HERD_OK) fail_msg("%s", err.msg);
    if (n != n_want || memcmp(ids, want, n * sizeof *ids) != 0) {
        char got[256] = "";
        for (uint32_t i = 0; i < n; i++) snprintf(got + strlen(got), sizeof got - strlen(got), "%d ", ids[i]);
        fail_msg("'%s' tokenizes to %s", text, got);
    }
    herd_tokenizer_destroy(tk);
    herd_vocab_destroy(v);
    herd_gguf_destroy(g);
}

static void check_model(const char *path, const struct spec *s, enum herd_ggml_type mat_type, float tol) {
    struct herd_error err = {0};
    struct herd_model *m = NULL;
    if (herd_model_load(path, &m, &err) != HERD_OK) fail_msg("%s", err.msg); /* validates, binds every tensor */
    herd_model_destroy(m);
    struct herd_gguf *g = NULL;
    assert_int_equal(herd_gguf_open_file(path, &g, &err), HERD_OK);
    struct herd_model_desc d;
    assert_int_equal(herd_model_desc_read(g, &d, &err), HERD_OK);
    assert_string_equal(d.arch, s->qwen2 ? "qwen2" : "llama");
    assert_int_equal(d.n_embd, E);
    assert_int_equal(d.n_head_kv, KV);
    assert_int_equal(d.n_ff, FF);
    assert_int_equal(d.n_ctx_train, 256);
    assert_true(fabs(d.rope_freq_base - 500000.0) < 1e-3);
    assert_true(fabs(d.rms_eps - 1e-5) < 1e-10);
    assert_int_equal(d.n_vocab, s->bpe ? V_BPE : V_SPM);
    const bool tied = s->tied || !s->lm_head || s->embed_alias;
    assert_int_equal(d.tied_embeddings, tied);
    const char *emb = s->embed_alias ? "lm_head.weight" : "model.embed_tokens.weight";
    check_values(g, "token_embd.weight", emb, 0, tol);
    assert_int_equal(tensor_type(g, "token_embd.weight"), mat_type);
    if (!tied) check_values(g, "output.weight", "lm_head.weight", 0, tol);
    check_values(g, "output_norm.weight", "model.norm.weight", 0, 0);
    assert_int_equal(tensor_type(g, "output_norm.weight"), HERD_GGML_TYPE_F32);
    for (int l = 0; l < L; l++) {
        char gn[96], hn[96];
#define CHECK(gs, hs, perm, t)                                                                                         \
    do {                                                                                                               \
        snprintf(gn, sizeof gn, "blk.%d.%s", l, gs);                                                                   \
        snprintf(hn, sizeof hn, "model.layers.%d.%s", l, hs);                                                          \
        check_values(g, gn, hn, perm, t);                                                                              \
    } while (0)
        CHECK("attn_norm.weight", "input_layernorm.weight", 0, 0);
        CHECK("attn_q.weight", "self_attn.q_proj.weight", s->qwen2 ? 0 : H, tol);
        CHECK("attn_k.weight", "self_attn.k_proj.weight", s->qwen2 ? 0 : KV, tol);
        CHECK("attn_v.weight", "self_attn.v_proj.weight", 0, tol);
        CHECK("attn_output.weight", "self_attn.o_proj.weight", 0, tol);
        CHECK("ffn_norm.weight", "post_attention_layernorm.weight", 0, 0);
        CHECK("ffn_gate.weight", "mlp.gate_proj.weight", 0, tol);
        CHECK("ffn_up.weight", "mlp.up_proj.weight", 0, tol);
        CHECK("ffn_down.weight", "mlp.down_proj.weight", 0, mat_type == HERD_GGML_TYPE_Q8_0 ? 0 : tol);
        if (s->qwen2) {
            CHECK("attn_q.bias", "self_attn.q_proj.bias", 0, 0);
            CHECK("attn_k.bias", "self_attn.k_proj.bias", 0, 0);
            CHECK("attn_v.bias", "self_attn.v_proj.bias", 0, 0);
            assert_int_equal(tensor_type(g, gn), HERD_GGML_TYPE_F32);
        }
#undef CHECK
        snprintf(gn, sizeof gn, "blk.%d.attn_q.weight", l);
        assert_int_equal(tensor_type(g, gn), mat_type);
        /* FFN 80 is not a multiple of Q8_0's 32: those rows stay F32 */
        snprintf(gn, sizeof gn, "blk.%d.ffn_down.weight", l);
        assert_int_equal(tensor_type(g, gn), mat_type == HERD_GGML_TYPE_Q8_0 ? HERD_GGML_TYPE_F32 : mat_type);
    }
    assert_int_equal(herd_gguf_n_tensors(g), 2 + !tied + (size_t)L * (9 + (s->qwen2 ? 3 : 0)));

    /* vocabulary */
    struct herd_gguf_array types, scores;
    struct herd_gguf_str str;
    assert_int_equal(herd_gguf_get_array(g, "tokenizer.ggml.token_type", HERD_GGUF_VTYPE_I32, &types, &err), HERD_OK);
    assert_int_equal(herd_gguf_get_string(g, "tokenizer.chat_template", &str, &err), HERD_OK);
    if (!s->bpe) {
        assert_string_equal(d.tok_model, "llama");
        assert_string_equal(d.tok_pre, "default");
        static const int want_types[V_SPM] = {2, 3, 3, 6, 6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 5, 5, 5, 5};
        for (int i = 0; i < V_SPM; i++) assert_int_equal(herd_gguf_array_i64(&types, i), want_types[i]);
        /* scores: -rank of the merge that makes the token; characters 0; a
         * token no merge makes below every merge */
        assert_int_equal(herd_gguf_get_array(g, "tokenizer.ggml.scores", HERD_GGUF_VTYPE_F32, &scores, &err), HERD_OK);
        const struct {
            int id;
            double score;
        } sc[] = {{6, 0}, {10, 0}, {9, -1}, {11, -2}, {14, -3}, {13, -4}, {12, -6}, {3, 0}};
        for (size_t i = 0; i < sizeof sc / sizeof sc[0]; i++)
            assert_true(herd_gguf_array_f64(&scores, (uint64_t)sc[i].id) == sc[i].score);
        assert_int_equal(d.bos_id, 1);
        assert_int_equal(d.eos_id, 2);
        assert_int_equal(d.unk_id, 0);
        assert_int_equal(d.pad_id, -1);
        assert_true(d.has_add_bos && d.add_bos && d.has_add_eos && !d.add_eos);
        bool b;
        assert_int_equal(herd_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &b, &err), HERD_OK);
        assert_true(b);
        assert_true(herd_gguf_str_eq(str, "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"));
    } else {
        assert_string_equal(d.tok_model, "gpt2");
        assert_string_equal(d.tok_pre, "qwen2");
        assert_int_equal(d.n_merges, 4);
        struct herd_gguf_array merges;
        assert_int_equal(herd_gguf_get_array(g, "tokenizer.ggml.merges", HERD_GGUF_VTYPE_STRING, &merges, &err),
                         HERD_OK);
        struct herd_gguf_str_iter it;
        herd_gguf_str_iter_init(&it, &merges);
        const char *want_merges[4] = {"a b", "\xc4\xa0 a",
                                      "\xc4\xa0"
                                      "a b",
                                      "a\xc4\xa0"
                                      "b c"};
        for (int i = 0; herd_gguf_str_iter_next(&it, &str); i++) assert_true(herd_gguf_str_eq(str, want_merges[i]));
        static const int want_types[V_BPE] = {1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 4, 3, 5, 5, 5};
        for (int i = 0; i < V_BPE; i++) assert_int_equal(herd_gguf_array_i64(&types, i), want_types[i]);
        assert_int_equal(d.bos_id, 8); /* generation_config.json */
        assert_int_equal(d.eos_id, 8); /* tokenizer_config.json's text wins over the ids */
        uint64_t eot;
        assert_int_equal(herd_gguf_get_uint(g, "tokenizer.ggml.eot_token_id", UINT32_MAX, &eot, &err), HERD_OK);
        assert_int_equal(eot, 10);
        assert_false(d.has_add_bos);
        assert_null(herd_gguf_find_kv(g, "tokenizer.ggml.scores"));
    }
    herd_gguf_destroy(g);
    /* The tokenizers apply the merges as Hugging Face's BPE does. */
    if (!s->bpe) {
        const int32_t a[] = {1, 11, 8, 11}; /* "▁abc▁ab": ▁a, ▁ab first; then nothing joins ▁ab and c */
        check_tokenize(path, "abc ab", HERD_TOK_ADD_SPECIAL, a, 4);
        const int32_t b[] = {1, 5, 8, 9}; /* "▁cab": ab before ca */
        check_tokenize(path, "cab", HERD_TOK_ADD_SPECIAL, b, 4);
        const int32_t c[] = {1, 10, 4, 3}; /* byte fallback for ! and \n */
        check_tokenize(path, "a!\n", HERD_TOK_ADD_SPECIAL, c, 4);
    } else {
        const int32_t a[] = {4, 3, 4, 10}; /* "ab", " ab" -> Ġ ab (no Ġab: its merge is Ġa + b) */
        check_tokenize(path, "ab ab<|im_end|>", HERD_TOK_ADD_SPECIAL | HERD_TOK_PARSE_SPECIAL, a, 4);
    }
}

/* ------------------------------------------------------------ tests */

static void test_variants(void **state) {
    (void)state;
    const struct {
        struct spec s;
        bool type_auto;
        enum herd_ggml_type type;
        enum herd_ggml_type mat_type; /* expected */
        float tol;
    } cases[] = {
        {{"LlamaForCausalLM", false, false, true, false, HERD_SAFETENSORS_F32, 1, false, NULL, NULL, NULL, 0},
         true,
         HERD_GGML_TYPE_F32,
         HERD_GGML_TYPE_F32,
         0},
        {{"MistralForCausalLM", false, true, false, false, HERD_SAFETENSORS_BF16, 1, false, NULL, NULL, NULL, 0},
         true,
         HERD_GGML_TYPE_F32,
         HERD_GGML_TYPE_BF16,
         0},
        {{"LlamaForCausalLM", false, false, true, false, HERD_SAFETENSORS_F16, 2, false, NULL, NULL, NULL, 0},
         false,
         HERD_GGML_TYPE_Q8_0,
         HERD_GGML_TYPE_Q8_0,
         0.02f},
        {{"LlamaForCausalLM", false, false, true, false, HERD_SAFETENSORS_BF16, 2, false, NULL, NULL, NULL, 0},
         false,
         HERD_GGML_TYPE_F16,
         HERD_GGML_TYPE_F16,
         0},
        {{"Qwen2ForCausalLM", true, true, true, true, HERD_SAFETENSORS_F32, 1, true, NULL, NULL, NULL, 0},
         true,
         HERD_GGML_TYPE_F32,
         HERD_GGML_TYPE_F32,
         0},
        {{"Qwen2ForCausalLM", true, false, true, false, HERD_SAFETENSORS_F16, 2, true, NULL, NULL, NULL, 0},
         true,
         HERD_GGML_TYPE_F32,
         HERD_GGML_TYPE_F16,
         0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[512], out[1024];
        make_dir(dir, sizeof dir);
        write_folder(dir, &cases[i].s);
        snprintf(out, sizeof out, "%s/out.gguf", dir);
        struct herd_error err = {0};
        struct herd_hf_convert_summary sum;
        if (convert(dir, out, cases[i].type_auto, cases[i].type, &sum, &err) != HERD_OK)
            fail_msg("case %zu: %s", i, err.msg);
        assert_int_equal(sum.type, cases[i].mat_type);
        assert_int_equal(sum.n_vocab, cases[i].s.bpe ? V_BPE : V_SPM);
        check_model(out, &cases[i].s, cases[i].mat_type, cases[i].tol);
        remove_dir(dir);
    }
}

static void test_llama3_rope_scaling(void **state) {
    (void)state;
    char dir[512], out[1024];
    make_dir(dir, sizeof dir);
    struct spec s = {"LlamaForCausalLM",
                     false,
                     true,
                     false,
                     false,
                     HERD_SAFETENSORS_F32,
                     1,
                     false,
                     "{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                     "\"original_max_position_embeddings\":64}",
                     NULL,
                     NULL,
                     0};
    write_folder(dir, &s);
    snprintf(out, sizeof out, "%s/out.gguf", dir);
    struct herd_error err = {0};
    if (convert(dir, out, true, HERD_GGML_TYPE_F32, NULL, &err) != HERD_OK) fail_msg("%s", err.msg);
    struct herd_gguf *g = NULL;
    assert_int_equal(herd_gguf_open_file(out, &g, &err), HERD_OK);
    const struct herd_gguf_tensor *t = herd_gguf_find_tensor(g, "rope_freqs.weight");
    assert_non_null(t);
    assert_int_equal(t->n_elems, HD / 2);
    assert_int_equal(t->type, HERD_GGML_TYPE_F32);
    /* Meta's formula (transformers' _compute_llama3_parameters), in double */
    bool saw_low = false, saw_high = false, saw_mid = false;
    for (int i = 0; i < HD / 2; i++) {
        const double freq = pow(500000.0, -2.0 * i / HD), wavelen = 2 * M_PI / freq;
        const double low_wl = 64 / 1.0, high_wl = 64 / 4.0;
        double want;
        if (wavelen < high_wl) {
            want = 1, saw_high = true;
        } else if (wavelen > low_wl) {
            want = 8, saw_low = true;
        } else {
            const double smooth = (64 / wavelen - 1) / (4 - 1);
            want = 1 / ((1 - smooth) / 8 + smooth), saw_mid = true;
        }
        float got;
        memcpy(&got, (const uint8_t *)t->data + 4 * i, 4);
        if (fabs(got - want) > 1e-4 * want) fail_msg("rope_freqs[%d] = %g, want %g", i, got, want);
    }
    assert_true(saw_low && saw_high && saw_mid); /* the test covers all three bands */
    herd_gguf_destroy(g);
    struct herd_model *m = NULL;
    if (herd_model_load(out, &m, &err) != HERD_OK) fail_msg("%s", err.msg);
    assert_non_null(m->rope_freqs);
    herd_model_destroy(m);
    remove_dir(dir);
}

/* No file named out, and nothing but the inputs in the folder. */
static void assert_no_output(const char *dir, const char *out) {
    assert_false(test_path_exists(out));
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, "gguf")) fail_msg("left behind: %s", e->d_name);
    closedir(d);
}

static void expect_fail(const struct spec *s, void (*tweak)(const char *dir), enum herd_status want,
                        const char *fragment) {
    char dir[512], out[1024];
    make_dir(dir, sizeof dir);
    write_folder(dir, s);
    if (tweak) tweak(dir);
    snprintf(out, sizeof out, "%s/out.gguf", dir);
    struct herd_error err = {0};
    enum herd_status rc = convert(dir, out, true, HERD_GGML_TYPE_F32, NULL, &err);
    if (rc != want || !strstr(err.msg, fragment))
        fail_msg("got %s '%s', want %s with '%s'", herd_status_name(rc), err.msg, herd_status_name(want), fragment);
    assert_no_output(dir, out);
    remove_dir(dir);
}

static void rm_file(const char *dir, const char *f) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, f);
    unlink(p);
}
static void no_config(const char *dir) { rm_file(dir, "config.json"); }
static void bad_config(const char *dir) {
    write_text(dir, "config.json", "{\"architectures\": [\"LlamaForCausalLM\",}");
}
static void no_weights(const char *dir) { rm_file(dir, "model.safetensors"); }
static void only_spm_model(const char *dir) {
    rm_file(dir, "tokenizer.json");
    write_text(dir, "tokenizer.model", "\x0a\x05");
}
static void unigram(const char *dir) {
    write_text(dir, "tokenizer.json", "{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}");
}
static void odd_pre(const char *dir) {
    write_text(dir, "tokenizer.json",
               "{\"pre_tokenizer\":{\"type\":\"Whitespace\"},\"decoder\":{\"type\":\"ByteLevel\"},"
               "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a a\"]}}");
}
static void escaping_index(const char *dir) {
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"model.norm.weight\":\"../x.safetensors\"}}");
}
static void truncated_weights(const char *dir) {
    char p[1024];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    struct stat st;
    stat(p, &st);
    assert_int_equal(truncate(p, st.st_size - 3), 0);
}
static void yarn(const char *dir) {
    char p[1024];
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_t *c = json_load_file(p, 0, NULL);
    json_object_set_new(c, "rope_scaling", json_pack("{s:s,s:f}", "type", "yarn", "factor", 4.0));
    write_json(dir, "config.json", c);
}
static void gpt2_arch(const char *dir) {
    write_text(dir, "config.json", "{\"architectures\":[\"GPT2LMHeadModel\"],\"n_embd\":64}");
}
static void head_dim(const char *dir) {
    char p[1024];
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_t *c = json_load_file(p, 0, NULL);
    json_object_set_new(c, "head_dim", json_integer(32));
    write_json(dir, "config.json", c);
}
static void lying_index(const char *dir) {
    char p[1024];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    json_t *c = json_load_file(p, 0, NULL);
    json_object_set_new(json_object_get(c, "weight_map"), "model.norm.weight",
                        json_string("model-00002-of-00002.safetensors"));
    write_json(dir, "model.safetensors.index.json", c);
}
static void big_vocab_id(const char *dir) {
    write_text(dir, "tokenizer.json",
               "{\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{\"a\":0,\"b\":25},\"merges\":[]}}");
}

static void test_broken_folders(void **state) {
    (void)state;
    const struct spec llama = {
        "LlamaForCausalLM", false, false, true, false, HERD_SAFETENSORS_F32, 1, false, NULL, NULL, NULL, 0};
    struct spec s = llama;
    expect_fail(&s, no_config, HERD_E_NOT_FOUND, "config.json: no such file");
    expect_fail(&s, bad_config, HERD_E_FORMAT, "config.json: malformed JSON at line 1");
    expect_fail(&s, gpt2_arch, HERD_E_UNSUPPORTED, "architecture 'GPT2LMHeadModel' is not supported");
    expect_fail(&s, head_dim, HERD_E_UNSUPPORTED, "head_dim 32");
    expect_fail(&s, yarn, HERD_E_UNSUPPORTED, "rope_scaling type 'yarn'");
    expect_fail(&s, no_weights, HERD_E_NOT_FOUND, "no model.safetensors");
    expect_fail(&s, truncated_weights, HERD_E_TRUNCATED, "model.safetensors");
    expect_fail(&s, escaping_index, HERD_E_FORMAT, "is not a file name in the folder");
    expect_fail(&s, only_spm_model, HERD_E_UNSUPPORTED, "only tokenizer.model");
    expect_fail(&s, unigram, HERD_E_UNSUPPORTED, "type 'Unigram'");
    expect_fail(&s, odd_pre, HERD_E_UNSUPPORTED, "pre-tokenizer herd does not recognise");
    expect_fail(&s, big_vocab_id, HERD_E_INVALID, "token id 25 is outside the model's 20 embedding rows");
    s.drop = "model.layers.1.mlp.up_proj.weight";
    expect_fail(&s, NULL, HERD_E_NOT_FOUND, "no tensor 'model.layers.1.mlp.up_proj.weight'");
    s = llama;
    s.extra = "model.layers.0.self_attn.q_proj.bias";
    expect_fail(&s, NULL, HERD_E_UNSUPPORTED, "tensor 'model.layers.0.self_attn.q_proj.bias' has no place");
    s = llama;
    s.config_ff = 96;
    expect_fail(&s, NULL, HERD_E_FORMAT, "config.json implies [96, 64]");
    s = llama;
    s.dtype = HERD_SAFETENSORS_I32;
    expect_fail(&s, NULL, HERD_E_UNSUPPORTED, "dtype I32");
    s = llama;
    s.shards = 2;
    expect_fail(&s, lying_index, HERD_E_FORMAT, "weight_map puts 'model.norm.weight' in model-00002-of-00002");

    /* An existing output survives a failed conversion; an unwritable one is an I/O error. */
    char dir[512], out[1024];
    make_dir(dir, sizeof dir);
    s = llama;
    write_folder(dir, &s);
    no_config(dir);
    snprintf(out, sizeof out, "%s/old.gguf", dir);
    write_text(dir, "old.gguf", "keep me");
    struct herd_error err = {0};
    assert_int_equal(convert(dir, out, true, HERD_GGML_TYPE_F32, NULL, &err), HERD_E_NOT_FOUND);
    size_t n;
    unsigned char *kept = test_read_file(out, &n);
    assert_int_equal(n, 7);
    assert_memory_equal(kept, "keep me", 7);
    free(kept);
    rm_file(dir, "old.gguf");
    write_folder(dir, &s);
    snprintf(out, sizeof out, "%s/no/such/dir/x.gguf", dir);
    assert_int_equal(convert(dir, out, true, HERD_GGML_TYPE_F32, NULL, &err), HERD_E_IO);
    assert_non_null(strstr(err.msg, "cannot create"));
    assert_no_output(dir, out);
    assert_int_equal(convert(dir, out, false, HERD_GGML_TYPE_I32, NULL, &err), HERD_E_INVALID);
    remove_dir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_variants),
        cmocka_unit_test(test_llama3_rope_scaling),
        cmocka_unit_test(test_broken_folders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
