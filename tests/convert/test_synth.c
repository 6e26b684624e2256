/* herd synth: deterministic for a seed, valid for the engine's checks, and
 * weights drawn at the recipe's scales. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "herd/gguf.h"
#include "kernels/quant.h"
#include "model/model_desc.h"
#include "convert/synth.h"
#include "test_util.h"

static void synth(const char *name, enum herd_ftype type, uint64_t seed, int tied, char *path, size_t n) {
    char vocab[512];
    struct herd_synth_params p;
    herd_synth_default_params(&p);
    p.shape = "tiny";
    p.ftype = type;
    p.seed = seed;
    p.tied = tied;
    p.vocab_path = test_data_path("ggml-vocab-llama-spm.gguf", vocab, sizeof vocab);
    p.out_path = test_tmp_path(name, path, n);
    struct herd_error err = {0};
    if (herd_synth_write(&p, &err) != HERD_OK) fail_msg("%s", err.msg);
}

static void stats(const struct herd_gguf_tensor *t, double *mean, double *std) {
    float *v = malloc(t->n_elems * sizeof *v);
    herd_dequantize_row_ref(t->type, t->data, v, (size_t)t->n_elems);
    double s = 0, sq = 0;
    for (uint64_t i = 0; i < t->n_elems; i++) {
        s += v[i];
        sq += (double)v[i] * v[i];
    }
    *mean = s / (double)t->n_elems;
    *std = sqrt(sq / (double)t->n_elems - *mean * *mean);
    free(v);
}

static void test_deterministic(void **state) {
    (void)state;
    char a[512], b[512], c[512];
    synth("a.gguf", HERD_FTYPE_ALL_F32, 7, -1, a, sizeof a);
    synth("b.gguf", HERD_FTYPE_ALL_F32, 7, -1, b, sizeof b);
    synth("c.gguf", HERD_FTYPE_ALL_F32, 8, -1, c, sizeof c);
    size_t na, nb, nc;
    unsigned char *da = test_read_file(a, &na), *db = test_read_file(b, &nb), *dc = test_read_file(c, &nc);
    assert_int_equal(na, nb);
    assert_memory_equal(da, db, na);
    assert_int_equal(na, nc);
    assert_true(memcmp(da, dc, na) != 0);
    free(da), free(db), free(dc);
    unlink(a), unlink(b), unlink(c);
}

static void test_valid_and_recipe_scales(void **state) {
    (void)state;
    char path[512];
    synth("f32.gguf", HERD_FTYPE_ALL_F32, 3, -1, path, sizeof path);
    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    assert_int_equal(herd_gguf_open_file(path, &g, &err), HERD_OK);
    struct herd_model_desc d;
    assert_int_equal(herd_model_desc_read(g, &d, &err), HERD_OK);
    if (herd_model_desc_validate(g, &d, &err) != HERD_OK) fail_msg("%s", err.msg);
    assert_int_equal(d.n_embd, 64);
    assert_int_equal(d.n_layer, 2);
    assert_int_equal(d.n_vocab, 32000);
    assert_false(d.tied_embeddings);
    double mean, std;
    stats(herd_gguf_find_tensor(g, "blk.0.attn_q.weight"), &mean, &std);
    assert_true(fabs(std - 1.6 / 8) < 0.01 && fabs(mean) < 0.01);
    stats(herd_gguf_find_tensor(g, "blk.1.ffn_down.weight"), &mean, &std);
    assert_true(fabs(std - 1.2 / sqrt(192)) < 0.005);
    stats(herd_gguf_find_tensor(g, "blk.0.attn_norm.weight"), &mean, &std);
    assert_true(fabs(mean - 1.0) < 0.05 && fabs(std - 0.1) < 0.04);
    stats(herd_gguf_find_tensor(g, "output.weight"), &mean, &std);
    assert_true(fabs(std - 6.0 / 8) < 0.01);
    assert_non_null(herd_gguf_find_kv(g, "tokenizer.ggml.tokens"));
    herd_gguf_destroy(g);
    unlink(path);
}

/* The same seed draws the same values for every type, so the quantized model
 * is the f32 model quantized. */
static void test_quantized_matches_f32(void **state) {
    (void)state;
    char pf[512], pq[512];
    synth("base.gguf", HERD_FTYPE_ALL_F32, 5, -1, pf, sizeof pf);
    synth("q4.gguf", HERD_FTYPE_Q4_0, 5, -1, pq, sizeof pq);
    struct herd_error err = {0};
    struct herd_gguf *gf = NULL, *gq = NULL;
    assert_int_equal(herd_gguf_open_file(pf, &gf, &err), HERD_OK);
    assert_int_equal(herd_gguf_open_file(pq, &gq, &err), HERD_OK);
    const struct herd_gguf_tensor *tf = herd_gguf_find_tensor(gf, "blk.1.attn_v.weight");
    const struct herd_gguf_tensor *tq = herd_gguf_find_tensor(gq, "blk.1.attn_v.weight");
    assert_int_equal(tq->type, HERD_GGML_TYPE_Q4_0);
    uint8_t *mine = malloc(tq->n_bytes);
    herd_quantize_row_ref(HERD_GGML_TYPE_Q4_0, tf->data, mine, (size_t)tf->n_elems);
    assert_memory_equal(mine, tq->data, tq->n_bytes);
    assert_int_equal(herd_gguf_find_tensor(gq, "blk.0.ffn_norm.weight")->type, HERD_GGML_TYPE_F32);
    struct herd_model_desc d;
    assert_int_equal(herd_model_desc_read(gq, &d, &err), HERD_OK);
    assert_int_equal(herd_model_desc_validate(gq, &d, &err), HERD_OK);
    free(mine);
    herd_gguf_destroy(gf);
    herd_gguf_destroy(gq);
    unlink(pf), unlink(pq);
}

/* Any other type is the F32 model through herd quantize: the same tensors,
 * types and bytes (only general.name says the final type). */
static void test_quantized_is_quantize_of_f32(void **state) {
    (void)state;
    char pf[512], pk[512], pq[512];
    synth("kf32.gguf", HERD_FTYPE_ALL_F32, 6, -1, pf, sizeof pf);
    synth("kq.gguf", HERD_FTYPE_Q4_K_M, 6, -1, pk, sizeof pk);
    struct herd_quantize_params q;
    herd_quantize_default_params(&q);
    q.in_path = pf;
    q.out_path = test_tmp_path("kq-ref.gguf", pq, sizeof pq);
    q.ftype = HERD_FTYPE_Q4_K_M;
    struct herd_error err = {0};
    assert_int_equal(herd_quantize_model(&q, NULL, &err), HERD_OK);
    struct herd_gguf *gk = NULL, *gq = NULL;
    assert_int_equal(herd_gguf_open_file(pk, &gk, &err), HERD_OK);
    assert_int_equal(herd_gguf_open_file(pq, &gq, &err), HERD_OK);
    assert_int_equal(herd_gguf_n_tensors(gk), herd_gguf_n_tensors(gq));
    for (size_t i = 0; i < herd_gguf_n_tensors(gk); i++) {
        const struct herd_gguf_tensor *a = herd_gguf_tensor_at(gk, i), *b = herd_gguf_tensor_at(gq, i);
        assert_int_equal(a->name.len, b->name.len);
        assert_memory_equal(a->name.ptr, b->name.ptr, a->name.len);
        assert_int_equal(a->type, b->type);
        assert_int_equal(a->n_bytes, b->n_bytes);
        assert_memory_equal(a->data, b->data, a->n_bytes);
    }
    /* the mix: rows of 64 do not split into K blocks, so tiny's matrices fall back */
    assert_int_equal(herd_gguf_find_tensor(gk, "blk.0.attn_q.weight")->type, HERD_GGML_TYPE_Q5_0);
    assert_int_equal(herd_gguf_find_tensor(gk, "output.weight")->type, HERD_GGML_TYPE_Q8_0);
    struct herd_gguf_str name;
    assert_int_equal(herd_gguf_get_string(gk, "general.name", &name, &err), HERD_OK);
    assert_true(herd_gguf_str_eq(name, "synth-tiny-q4_k_m"));
    herd_gguf_destroy(gk);
    herd_gguf_destroy(gq);
    unlink(pf), unlink(pk), unlink(pq);
}

static void test_tied(void **state) {
    (void)state;
    char path[512];
    synth("tied.gguf", HERD_FTYPE_F16, 2, 1, path, sizeof path);
    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    assert_int_equal(herd_gguf_open_file(path, &g, &err), HERD_OK);
    assert_null(herd_gguf_find_tensor(g, "output.weight"));
    double mean, std;
    stats(herd_gguf_find_tensor(g, "token_embd.weight"), &mean, &std);
    assert_true(fabs(std - 0.15) < 0.005);
    stats(herd_gguf_find_tensor(g, "output_norm.weight"), &mean, &std);
    assert_true(fabs(mean - 6.0 / (0.15 * 8)) < 0.3);
    herd_gguf_destroy(g);
    unlink(path);
}

static void test_errors(void **state) {
    (void)state;
    struct herd_synth_params p;
    herd_synth_default_params(&p);
    struct herd_error err = {0};
    char out[512];
    p.out_path = test_tmp_path("never.gguf", out, sizeof out);
    p.vocab_path = "/nonexistent/vocab.gguf";
    assert_int_equal(herd_synth_write(&p, &err), HERD_E_IO);
    p.shape = "gpt-5";
    assert_int_equal(herd_synth_write(&p, &err), HERD_E_INVALID);
    assert_non_null(strstr(err.msg, "gpt-5"));
    p.shape = "tiny";
    p.ftype = (enum herd_ftype)4; /* a removed llama ftype */
    assert_int_equal(herd_synth_write(&p, &err), HERD_E_INVALID);
    assert_false(test_path_exists(out));
    assert_non_null(herd_synth_shape_find("llama-3.2-1b"));
    assert_int_equal(herd_synth_shape_find("llama-3.2-1b")->n_ff, 8192);
    assert_int_equal(herd_synth_shape_find("smollm-135m")->n_head_kv, 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_valid_and_recipe_scales),
        cmocka_unit_test(test_quantized_matches_f32),
        cmocka_unit_test(test_quantized_is_quantize_of_f32),
        cmocka_unit_test(test_tied),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
