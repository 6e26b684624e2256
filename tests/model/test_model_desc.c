/* Model description and validation: RELIABILITY.md A7 (semantic metadata a
 * well-formed GGUF can still get wrong) must give a load error naming the
 * key or tensor, never an assert. Each case writes a small model through the
 * GGUF writer with one thing broken. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "herd/gguf.h"
#include "model/model_desc.h"
#include "test_util.h"

enum { EMBD = 32, FF = 64, VOCAB = 8 };

struct spec {
    const char *arch;
    uint64_t block_count; /* written as u64 */
    bool scores_as_u8;
    bool long_token;
    const char *byte_token; /* text of the BYTE-typed token 3 */
    uint32_t bos;
    uint64_t embd_rows; /* token_embd ne[1] */
    const char *drop_tensor;
    enum herd_ggml_type matrix_type;
    bool head_count_kv_3;
    /* one more ARCH.* key of each kind, when named */
    const char *u32_key;
    uint32_t u32_val;
    const char *f32_key;
    float f32_val;
    const char *str_key, *str_val;
    /* experts (0: a dense FFN) and the expert count the up tensor claims (0: experts) */
    uint32_t experts, used, up_exps_count;
};

static struct spec good(void) {
    return (struct spec){"llama",        1, false, false, "<0x41>", 1, VOCAB, NULL, HERD_GGML_TYPE_F32, false,
                         .u32_key = NULL};
}

static void write_model(const struct spec *s, const char *path) {
    struct herd_error err = {0};
    struct herd_gguf_writer *w = herd_gguf_writer_create();
    char key[128];
#define OK(expr) assert_int_equal((expr), HERD_OK)
    OK(herd_gguf_writer_add_string(w, "general.architecture", s->arch, &err));
#define ARCH_U32(suffix, v)                                                                                            \
    do {                                                                                                               \
        snprintf(key, sizeof key, "%s.%s", s->arch, suffix);                                                           \
        OK(herd_gguf_writer_add_u32(w, key, v, &err));                                                                 \
    } while (0)
    ARCH_U32("embedding_length", EMBD);
    snprintf(key, sizeof key, "%s.block_count", s->arch);
    OK(herd_gguf_writer_add_u64(w, key, s->block_count, &err));
    ARCH_U32("feed_forward_length", FF);
    ARCH_U32("attention.head_count", 2);
    ARCH_U32("attention.head_count_kv", s->head_count_kv_3 ? 3 : 1);
    if (s->u32_key) ARCH_U32(s->u32_key, s->u32_val);
    if (s->f32_key) {
        snprintf(key, sizeof key, "%s.%s", s->arch, s->f32_key);
        OK(herd_gguf_writer_add_f32(w, key, s->f32_val, &err));
    }
    if (s->str_key) {
        snprintf(key, sizeof key, "%s.%s", s->arch, s->str_key);
        OK(herd_gguf_writer_add_string(w, key, s->str_val, &err));
    }
    if (s->experts) {
        ARCH_U32("expert_count", s->experts);
        ARCH_U32("expert_used_count", s->used);
    }
    OK(herd_gguf_writer_add_string(w, "tokenizer.ggml.model", "llama", &err));
    char long_tok[5000];
    memset(long_tok, 'x', sizeof long_tok - 1);
    long_tok[sizeof long_tok - 1] = '\0';
    const char *toks[VOCAB] = {"<unk>", "<s>", "</s>", s->byte_token, "a", s->long_token ? long_tok : "b", "c", "d"};
    uint64_t lens[VOCAB];
    for (int i = 0; i < VOCAB; i++) lens[i] = strlen(toks[i]);
    OK(herd_gguf_writer_add_string_array(w, "tokenizer.ggml.tokens", VOCAB, toks, lens, &err));
    float scores[VOCAB] = {0};
    uint8_t scores_u8[VOCAB] = {0};
    if (s->scores_as_u8)
        OK(herd_gguf_writer_add_array(w, "tokenizer.ggml.scores", HERD_GGUF_VTYPE_U8, VOCAB, scores_u8, &err));
    else
        OK(herd_gguf_writer_add_array(w, "tokenizer.ggml.scores", HERD_GGUF_VTYPE_F32, VOCAB, scores, &err));
    int32_t types[VOCAB] = {2, 3, 3, 6, 1, 1, 1, 1};
    OK(herd_gguf_writer_add_array(w, "tokenizer.ggml.token_type", HERD_GGUF_VTYPE_I32, VOCAB, types, &err));
    OK(herd_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", s->bos, &err));

    const uint64_t X = s->experts, XU = s->up_exps_count ? s->up_exps_count : X;
    struct {
        const char *name;
        uint64_t ne0, ne1, ne2;
    } tensors[] = {
        {"token_embd.weight", EMBD, s->embd_rows, 1},
        {"output_norm.weight", EMBD, 1, 1},
        {"blk.0.attn_norm.weight", EMBD, 1, 1},
        {"blk.0.attn_q.weight", EMBD, EMBD, 1},
        {"blk.0.attn_k.weight", EMBD, EMBD / 2, 1},
        {"blk.0.attn_v.weight", EMBD, EMBD / 2, 1},
        {"blk.0.attn_output.weight", EMBD, EMBD, 1},
        {"blk.0.ffn_norm.weight", EMBD, 1, 1},
        {X ? "blk.0.ffn_gate_inp.weight" : "blk.0.ffn_gate.weight", EMBD, X ? X : FF, 1},
        {X ? "blk.0.ffn_gate_exps.weight" : "blk.0.ffn_up.weight", EMBD, FF, X ? X : 1},
        {X ? "blk.0.ffn_up_exps.weight" : "blk.0.ffn_down.weight", X ? EMBD : FF, X ? FF : EMBD, X ? XU : 1},
        {X ? "blk.0.ffn_down_exps.weight" : NULL, FF, EMBD, X ? X : 1},
    };
    size_t n = sizeof tensors / sizeof tensors[0] - (X ? 0 : 1);
    enum herd_ggml_type ttype[16];
    for (size_t i = 0; i < n; i++) {
        if (s->drop_tensor && strcmp(s->drop_tensor, tensors[i].name) == 0) continue;
        uint64_t ne[3] = {tensors[i].ne0, tensors[i].ne1, tensors[i].ne2};
        const uint32_t dims = tensors[i].ne2 > 1 ? 3 : tensors[i].ne1 > 1 ? 2 : 1;
        ttype[i] = dims > 1 ? s->matrix_type : HERD_GGML_TYPE_F32;
        OK(herd_gguf_writer_add_tensor(w, tensors[i].name, ttype[i], dims, ne, &err));
    }
    OK(herd_gguf_writer_begin(w, path, &err));
    static uint8_t zeros[1 << 16];
    for (size_t i = 0; i < n; i++) {
        if (s->drop_tensor && strcmp(s->drop_tensor, tensors[i].name) == 0) continue;
        uint64_t ne[3] = {tensors[i].ne0, tensors[i].ne1, tensors[i].ne2}, bytes;
        OK(herd_ggml_tensor_nbytes(ttype[i], 3, ne, NULL, &bytes, &err));
        uint8_t *data = bytes > sizeof zeros ? calloc(1, bytes) : zeros; /* 1000 experts: 8 MB */
        assert_non_null(data);
        OK(herd_gguf_writer_put_tensor_data(w, data, bytes, &err));
        if (data != zeros) free(data);
    }
    OK(herd_gguf_writer_finish(w, &err));
    herd_gguf_writer_destroy(w);
#undef ARCH_U32
#undef OK
}

/* Writes the model, reads and validates it; returns the first failure. */
static enum herd_status load(const struct spec *s, struct herd_error *err) {
    char path[512];
    test_tmp_path("desc.gguf", path, sizeof path);
    write_model(s, path);
    struct herd_gguf *g = NULL;
    enum herd_status rc = herd_gguf_open_file(path, &g, err);
    struct herd_model_desc d;
    if (rc == HERD_OK) rc = herd_model_desc_read(g, &d, err);
    if (rc == HERD_OK) rc = herd_model_desc_validate(g, &d, err);
    herd_gguf_destroy(g);
    unlink(path);
    return rc;
}

static void expect(const struct spec *s, enum herd_status want, const char *fragment) {
    struct herd_error err = {0};
    enum herd_status rc = load(s, &err);
    if (rc != want || (fragment && !strstr(err.msg, fragment)))
        fail_msg("got %s '%s', want %s with '%s'", herd_status_name(rc), err.msg, herd_status_name(want),
                 fragment ? fragment : "");
}

static void test_good_model_validates(void **state) {
    (void)state;
    struct spec s = good();
    expect(&s, HERD_OK, NULL);
}

static void test_a7_block_count(void **state) {
    (void)state;
    struct spec s = good();
    s.block_count = 1ull << 40;
    expect(&s, HERD_E_INVALID, "llama.block_count");
    s.block_count = HERD_MAX_LAYERS + 1;
    expect(&s, HERD_E_INVALID, "exceeds the limit of 512");
    s.block_count = 2; /* claims a layer whose tensors are absent */
    expect(&s, HERD_E_NOT_FOUND, "blk.1.attn_norm.weight");
}

static void test_a7_tokenizer_arrays(void **state) {
    (void)state;
    struct spec s = good();
    s.scores_as_u8 = true;
    expect(&s, HERD_E_FORMAT, "tokenizer.ggml.scores");
    s = good();
    s.long_token = true;
    expect(&s, HERD_E_FORMAT, "token 5 is 4999 bytes long");
    s = good();
    s.byte_token = "<0x-1>";
    expect(&s, HERD_E_FORMAT, "byte token 3 is '<0x-1>'");
    s = good();
    s.bos = VOCAB;
    expect(&s, HERD_E_INVALID, "tokenizer.ggml.bos_token_id = 8 is outside the vocabulary");
}

static void test_a7_tensors(void **state) {
    (void)state;
    struct spec s = good();
    s.embd_rows = VOCAB + 1;
    expect(&s, HERD_E_FORMAT, "token_embd.weight");
    s = good();
    s.drop_tensor = "blk.0.ffn_down.weight";
    expect(&s, HERD_E_NOT_FOUND, "required tensor 'blk.0.ffn_down.weight' is missing");
    s = good();
    s.matrix_type = HERD_GGML_TYPE_Q8_1;
    expect(&s, HERD_E_UNSUPPORTED, "has type q8_1, which herd does not compute");
}

static void test_unsupported_arch_and_heads(void **state) {
    (void)state;
    struct spec s = good();
    s.arch = "mamba";
    expect(&s, HERD_E_UNSUPPORTED, "architecture 'mamba' is not supported");
    s = good();
    s.head_count_kv_3 = true;
    expect(&s, HERD_E_INVALID, "head_count_kv = 3");
}

/* The other families' keys and tensors: each wrong value is an error naming it. */
static void test_families(void **state) {
    (void)state;
    struct spec s = good();
    s.arch = "qwen3"; /* no Q/K norms */
    expect(&s, HERD_E_NOT_FOUND, "required tensor 'blk.0.attn_q_norm.weight' is missing");
    s.arch = "gemma2";
    expect(&s, HERD_E_NOT_FOUND, "required tensor 'blk.0.post_attention_norm.weight' is missing");
    s = good();
    s.u32_key = "attention.value_length", s.u32_val = 8;
    expect(&s, HERD_E_UNSUPPORTED, "value_length = 8 differs from key_length 16");
    s = good();
    s.u32_key = "attention.key_length", s.u32_val = 0;
    expect(&s, HERD_E_INVALID, "head size 0");
    s = good();
    s.str_key = "rope.scaling.type", s.str_val = "yarn";
    expect(&s, HERD_E_UNSUPPORTED, "rope.scaling.type 'yarn' is not supported");
    s = good();
    s.f32_key = "attn_logit_softcapping", s.f32_val = NAN;
    expect(&s, HERD_E_INVALID, "llama.attn_logit_softcapping' is not a finite number");
    s.f32_val = -1.0f;
    expect(&s, HERD_E_INVALID, "logit softcapping (-1, 0)");
    s = good();
    s.experts = 4, s.used = 2;
    expect(&s, HERD_OK, NULL);
    s.used = 5;
    expect(&s, HERD_E_INVALID, "expert_used_count = 5 with expert_count 4");
    s.used = 2, s.up_exps_count = 3;
    expect(&s, HERD_E_FORMAT, "tensor 'blk.0.ffn_up_exps.weight' has shape [32, 64, 3, 1]; expected [32, 64, 4]");
    s = good();
    s.experts = 1000, s.used = 2;
    expect(&s, HERD_E_INVALID, "llama.expert_count");
}

static void test_fixtures_and_estimate(void **state) {
    (void)state;
    char p[512];
    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    assert_int_equal(herd_gguf_open_file(test_data_path("tiny-spm-q4_0.gguf", p, sizeof p), &g, &err), HERD_OK);
    struct herd_model_desc d;
    assert_int_equal(herd_model_desc_read(g, &d, &err), HERD_OK);
    assert_int_equal(herd_model_desc_validate(g, &d, &err), HERD_OK);
    assert_string_equal(d.arch, "llama");
    assert_int_equal(d.n_embd, 64);
    assert_int_equal(d.n_layer, 2);
    assert_int_equal(d.n_head_kv, 2);
    assert_int_equal(d.head_dim, 16);
    assert_int_equal(d.n_vocab, 32000);
    assert_int_equal(d.bos_id, 1);
    assert_false(d.tied_embeddings);
    struct herd_ram_estimate r;
    herd_model_desc_ram_estimate(&d, 1000, &r);
    assert_int_equal(r.kv_cache, 2ull * 2 * 2 * 1000 * 32); /* K+V, f16, 2 layers, 1000 tokens, 2 kv heads x 16 */
    assert_int_equal(r.weights, d.weight_bytes);
    assert_int_equal(r.total, r.weights + r.kv_cache + r.compute);
    herd_gguf_destroy(g);

    /* vocabulary-only: reads, but does not validate as a runnable model */
    assert_int_equal(herd_gguf_open_file(test_data_path("ggml-vocab-llama-spm.gguf", p, sizeof p), &g, &err), HERD_OK);
    assert_int_equal(herd_model_desc_read(g, &d, &err), HERD_OK);
    assert_int_equal(d.n_tensors, 0);
    assert_int_equal(d.n_vocab, 32000);
    assert_int_not_equal(herd_model_desc_validate(g, &d, &err), HERD_OK);
    herd_gguf_destroy(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_model_validates),
        cmocka_unit_test(test_a7_block_count),
        cmocka_unit_test(test_a7_tokenizer_arrays),
        cmocka_unit_test(test_a7_tensors),
        cmocka_unit_test(test_unsupported_arch_and_heads),
        cmocka_unit_test(test_fixtures_and_estimate),
        cmocka_unit_test(test_families),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
