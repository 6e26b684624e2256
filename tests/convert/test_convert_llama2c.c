/* herd convert llama2c: the real stories260K converts to the committed
 * default model byte for byte; synthetic checkpoints in every format (legacy
 * shared/unshared, version 1, version 2 int8) land in the right GGUF tensors
 * with the right values; corrupt inputs give errors and write nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "herd/gguf.h"
#include "kernels/quant.h"
#include "convert/convert_llama2c.h"
#include "model/model_desc.h"
#include "test_util.h"

/* Small model: dim 32, hidden 64, 2 layers, 4 heads, 2 kv heads, vocab 8. */
enum { DIM = 32, HID = 64, LAYERS = 2, HEADS = 4, KV = 2, VOCAB = 8, SEQ = 16, KVD = DIM / HEADS * KV };

enum kind { EMB, RMS_ATT, WQ, WK, WV, WO, RMS_FFN, W1, W2, W3, RMS_FINAL, CLS };

static uint64_t numel(enum kind k) {
    switch (k) {
    case EMB:
    case CLS: return (uint64_t)VOCAB * DIM;
    case WK:
    case WV: return (uint64_t)KVD * DIM;
    case W1:
    case W2:
    case W3: return (uint64_t)HID * DIM;
    case WQ:
    case WO: return (uint64_t)DIM * DIM;
    default: return DIM;
    }
}

/* The value a checkpoint stores at element i of (kind, layer); for version 2
 * the int8 code, with every scale 0.5. Distinct per tensor so a tensor read
 * from the wrong place is caught. */
static int8_t code(enum kind k, int layer, uint64_t i) { return (int8_t)((int)((k * 31 + layer * 7 + i) % 255) - 127); }
static float value(enum kind k, int layer, uint64_t i) { return (float)code(k, layer, i) * 0.5f; }

static void put_tensor(struct herd_buf *b, enum kind k, int layer, bool int8) {
    for (uint64_t i = 0; i < numel(k); i++) {
        if (int8)
            put_u8(b, (uint8_t)code(k, layer, i));
        else
            put_f32(b, value(k, layer, i));
    }
}

static void put_per_layer(struct herd_buf *b, enum kind k, bool int8) {
    for (int l = 0; l < LAYERS; l++) put_tensor(b, k, l, int8);
}

static void write_buf(const char *path, const struct herd_buf *b) {
    FILE *f = fopen(path, "wb");
    fwrite(b->data, 1, b->len, f);
    fclose(f);
}

static void params(struct herd_buf *b, int32_t vocab) {
    const int32_t p[7] = {DIM, HID, LAYERS, HEADS, KV, vocab, SEQ};
    for (int i = 0; i < 7; i++) put_u32(b, (uint32_t)p[i]);
}

static void make_checkpoint(struct herd_buf *b, int version, bool shared) {
    herd_buf_init(b, SIZE_MAX);
    static const enum kind mats[] = {EMB, WQ, WK, WV, WO, W1, W2, W3};
    if (version == 0) {
        params(b, shared ? VOCAB : -VOCAB);
        put_tensor(b, EMB, 0, false);
        put_per_layer(b, RMS_ATT, false);
        put_per_layer(b, WQ, false), put_per_layer(b, WK, false), put_per_layer(b, WV, false);
        put_per_layer(b, WO, false), put_per_layer(b, RMS_FFN, false);
        put_per_layer(b, W1, false), put_per_layer(b, W2, false), put_per_layer(b, W3, false);
        put_tensor(b, RMS_FINAL, 0, false);
        for (int i = 0; i < 2 * SEQ * (DIM / HEADS) / 2; i++) put_f32(b, 99.0f); /* unused RoPE tables */
        if (!shared) put_tensor(b, CLS, 0, false);
        return;
    }
    put_u32(b, 0x616b3432u);
    put_u32(b, (uint32_t)version);
    params(b, VOCAB);
    put_u8(b, shared);
    if (version == 2) put_u32(b, 32);
    put_pad(b, 256);
    put_per_layer(b, RMS_ATT, false), put_per_layer(b, RMS_FFN, false), put_tensor(b, RMS_FINAL, 0, false);
    bool int8 = version == 2;
    for (size_t m = 0; m < sizeof mats / sizeof mats[0]; m++) {
        if (mats[m] == EMB)
            put_tensor(b, EMB, 0, int8);
        else
            put_per_layer(b, mats[m], int8);
    }
    if (!shared) put_tensor(b, CLS, 0, int8);
    if (int8) {
        size_t n_scales = 0;
        for (size_t m = 0; m < sizeof mats / sizeof mats[0]; m++)
            n_scales += (mats[m] == EMB ? 1 : LAYERS) * numel(mats[m]) / 32;
        if (!shared) n_scales += numel(CLS) / 32;
        for (size_t i = 0; i < n_scales; i++) put_f32(b, 0.5f);
    }
}

static void make_tokenizer(struct herd_buf *b, int n, int32_t bad_len) {
    static const char *const toks[VOCAB] = {"<unk>", "\n<s>\n", "\n</s>\n", "<0x0A>", " the", "a b", "c", "d"};
    herd_buf_init(b, SIZE_MAX);
    put_u32(b, 6);
    for (int i = 0; i < n; i++) {
        put_f32(b, (float)-i);
        put_u32(b, (uint32_t)(i == 5 && bad_len ? bad_len : (int32_t)strlen(toks[i])));
        herd_buf_append(b, toks[i], strlen(toks[i]));
    }
}

static enum herd_status convert(const char *ckpt, const char *tok, const char *out, enum herd_ggml_type type,
                                struct herd_error *err) {
    struct herd_llama2c_params p;
    herd_llama2c_default_params(&p);
    p.checkpoint_path = ckpt;
    p.tokenizer_path = tok;
    p.out_path = out;
    p.type = type;
    return herd_llama2c_convert(&p, err);
}

static void check_tensor(const struct herd_gguf *g, const char *name, enum kind k, int layer, float tol) {
    const struct herd_gguf_tensor *t = herd_gguf_find_tensor(g, name);
    if (!t) fail_msg("tensor %s missing", name);
    assert_int_equal(t->n_elems, numel(k));
    float *v = malloc(t->n_elems * sizeof *v);
    herd_dequantize_row_ref(t->type, t->data, v, (size_t)t->n_elems);
    for (uint64_t i = 0; i < t->n_elems; i++)
        if (fabsf(v[i] - value(k, layer, i)) > tol)
            fail_msg("%s[%llu] = %g, want %g", name, (unsigned long long)i, v[i], value(k, layer, i));
    free(v);
}

/* tol: 0 for an F32 conversion (exact), a Q8_0 step for Q8_0. */
static void check_converted(const char *path, bool shared, float tol) {
    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    assert_int_equal(herd_gguf_open_file(path, &g, &err), HERD_OK);
    struct herd_model_desc d;
    assert_int_equal(herd_model_desc_read(g, &d, &err), HERD_OK);
    if (herd_model_desc_validate(g, &d, &err) != HERD_OK) fail_msg("%s", err.msg);
    assert_int_equal(d.n_head_kv, KV);
    assert_int_equal(d.n_ctx_train, SEQ);
    assert_int_equal(d.tied_embeddings, shared);
    check_tensor(g, "token_embd.weight", EMB, 0, tol);
    check_tensor(g, "output_norm.weight", RMS_FINAL, 0, tol);
    if (!shared) check_tensor(g, "output.weight", CLS, 0, tol);
    static const struct {
        const char *suffix;
        enum kind k;
    } per[] = {{"attn_norm", RMS_ATT}, {"attn_q", WQ},   {"attn_k", WK},   {"attn_v", WV}, {"attn_output", WO},
               {"ffn_norm", RMS_FFN},  {"ffn_gate", W1}, {"ffn_down", W2}, {"ffn_up", W3}};
    for (int l = 0; l < LAYERS; l++)
        for (size_t i = 0; i < sizeof per / sizeof per[0]; i++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, per[i].suffix);
            check_tensor(g, name, per[i].k, l, tol);
        }
    /* llama2.c's " " and "\n<s>\n" are restored to SentencePiece's forms */
    struct herd_gguf_array toks;
    assert_int_equal(herd_gguf_get_array(g, "tokenizer.ggml.tokens", HERD_GGUF_VTYPE_STRING, &toks, &err), HERD_OK);
    struct herd_gguf_str_iter it;
    struct herd_gguf_str s;
    herd_gguf_str_iter_init(&it, &toks);
    const char *want[VOCAB] = {"<unk>",
                               "<s>",
                               "</s>",
                               "<0x0A>",
                               "\xe2\x96\x81the",
                               ("a\xe2\x96\x81"
                                "b"), /* split: the escape ends before b */
                               "c",
                               "d"};
    for (int i = 0; herd_gguf_str_iter_next(&it, &s); i++) assert_true(herd_gguf_str_eq(s, want[i]));
    struct herd_gguf_array types;
    assert_int_equal(herd_gguf_get_array(g, "tokenizer.ggml.token_type", HERD_GGUF_VTYPE_I32, &types, &err), HERD_OK);
    assert_int_equal(herd_gguf_array_i64(&types, 0), 2);
    assert_int_equal(herd_gguf_array_i64(&types, 1), 3);
    assert_int_equal(herd_gguf_array_i64(&types, 3), 6);
    assert_int_equal(herd_gguf_array_i64(&types, 4), 1);
    herd_gguf_destroy(g);
}

static void test_synthetic_formats(void **state) {
    (void)state;
    char ck[512], tk[512], out[512];
    test_tmp_path("ckpt.bin", ck, sizeof ck);
    test_tmp_path("tok.bin", tk, sizeof tk);
    test_tmp_path("conv.gguf", out, sizeof out);
    struct herd_buf b;
    make_tokenizer(&b, VOCAB, 0);
    write_buf(tk, &b);
    herd_buf_cleanup(&b);
    const struct {
        int version;
        bool shared;
    } cases[] = {{0, true}, {0, false}, {1, true}, {1, false}, {2, true}, {2, false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        make_checkpoint(&b, cases[i].version, cases[i].shared);
        write_buf(ck, &b);
        herd_buf_cleanup(&b);
        struct herd_error err = {0};
        if (convert(ck, tk, out, HERD_GGML_TYPE_F32, &err) != HERD_OK)
            fail_msg("version %d: %s", cases[i].version, err.msg);
        check_converted(out, cases[i].shared, 0.0f);
        /* Q8_0: values within half a step (|x| <= 63.5, step <= 0.5) plus fp16 rounding of the scale */
        assert_int_equal(convert(ck, tk, out, HERD_GGML_TYPE_Q8_0, &err), HERD_OK);
        check_converted(out, cases[i].shared, 0.3f);
    }
    unlink(ck), unlink(tk), unlink(out);
}

static void expect_failure(const char *ck, const char *tk, enum herd_status want, const char *fragment) {
    char out[512];
    test_tmp_path("never.gguf", out, sizeof out);
    struct herd_error err = {0};
    enum herd_status rc = convert(ck, tk, out, HERD_GGML_TYPE_F32, &err);
    if (rc != want || !strstr(err.msg, fragment))
        fail_msg("got %s '%s', want %s with '%s'", herd_status_name(rc), err.msg, herd_status_name(want), fragment);
    assert_false(test_path_exists(out));
}

static void test_corrupt_inputs(void **state) {
    (void)state;
    char ck[512], tk[512];
    test_tmp_path("bad.bin", ck, sizeof ck);
    test_tmp_path("badtok.bin", tk, sizeof tk);
    struct herd_buf b, t;
    make_tokenizer(&t, VOCAB, 0);
    write_buf(tk, &t);
    herd_buf_cleanup(&t);

    make_checkpoint(&b, 1, true);
    size_t full = b.len;
    b.len = full - 1;
    write_buf(ck, &b);
    expect_failure(ck, tk, HERD_E_TRUNCATED, "truncated");
    b.len = 100;
    write_buf(ck, &b);
    expect_failure(ck, tk, HERD_E_TRUNCATED, "256");
    b.len = full;
    memset(b.data + 8, 0, 4); /* dim = 0 */
    write_buf(ck, &b);
    expect_failure(ck, tk, HERD_E_FORMAT, "dim = 0");
    herd_buf_cleanup(&b);

    make_checkpoint(&b, 0, true);
    b.data[16] = 3; /* n_kv_heads 3 does not divide 4 */
    write_buf(ck, &b);
    expect_failure(ck, tk, HERD_E_FORMAT, "n_kv_heads 3");
    b.data[16] = KV;
    memcpy(b.data + 20, "\x00\x00\x00\x80", 4); /* vocab INT32_MIN */
    write_buf(ck, &b);
    expect_failure(ck, tk, HERD_E_FORMAT, "vocab_size");
    memcpy(b.data + 20, "\xff\xff\xff\x7f", 4); /* vocab INT32_MAX: sizes past the file */
    write_buf(ck, &b);
    expect_failure(ck, tk, HERD_E_FORMAT, "vocab_size");
    herd_buf_cleanup(&b);

    make_checkpoint(&b, 1, true);
    memcpy(b.data + 4, "\x03\x00\x00\x00", 4);
    write_buf(ck, &b);
    expect_failure(ck, tk, HERD_E_UNSUPPORTED, "version 3");
    memcpy(b.data + 4, "\x01\x00\x00\x00", 4);
    write_buf(ck, &b);
    herd_buf_cleanup(&b);

    make_tokenizer(&t, VOCAB, -5);
    write_buf(tk, &t);
    expect_failure(ck, tk, HERD_E_FORMAT, "length -5");
    herd_buf_cleanup(&t);
    make_tokenizer(&t, VOCAB - 1, 0);
    write_buf(tk, &t);
    expect_failure(ck, tk, HERD_E_TRUNCATED, "token 7 of 8");
    herd_buf_cleanup(&t);
    expect_failure("/nonexistent/x.bin", tk, HERD_E_IO, "/nonexistent/x.bin");
    unlink(ck), unlink(tk);
}

static void test_stories260k_is_the_committed_model(void **state) {
    (void)state;
    char ck[512], tk[512], out[512], committed[512];
    test_data_path("stories260K/stories260K.bin", ck, sizeof ck);
    test_data_path("stories260K/tok512.bin", tk, sizeof tk);
    test_tmp_path("stories260K.gguf", out, sizeof out);
    snprintf(committed, sizeof committed, "%s/models/stories260K.gguf", HERD_SOURCE_DIR);
    struct herd_error err = {0};
    if (convert(ck, tk, out, HERD_GGML_TYPE_F32, &err) != HERD_OK) fail_msg("%s", err.msg);
    size_t n1, n2;
    unsigned char *a = test_read_file(out, &n1), *b = test_read_file(committed, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, n1);
    free(a), free(b);
    unlink(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synthetic_formats),
        cmocka_unit_test(test_corrupt_inputs),
        cmocka_unit_test(test_stories260k_is_the_committed_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
