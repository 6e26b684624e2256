/* herd prune's pieces without a model run: Block Influence from known
 * residual rows, the ranking's ties, the kept counts' rounding, and the
 * layer rewrite on hand-built GGUF files whose per-layer metadata are
 * arrays (what `herd synth` never writes): kept entries in their element
 * type, renumbered tensors, refusals that leave no file. The end-to-end
 * checks are tests/convert/test_prune.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "convert/prune.h"
#include "test_util.h"

/* ------------------------------------------------------------ Block Influence */

static void test_block_influence(void **state) {
    (void)state;
    /* 2 layers, 2 tokens of 2 values: layer 0 turns token 0 by 90 degrees
     * and leaves token 1; layer 1 scales both (cos 1); stride 3 */
    struct herd_prune_bi *bi = herd_prune_bi_create(2, 2, 4);
    assert_non_null(bi);
    const float h0[6] = {1, 0, 99, 3, 4, 99}, h1[6] = {0, 2, 99, 3, 4, 99}, h2[6] = {0, 5, 99, 6, 8, 99};
    herd_prune_bi_observe(bi, 0, h0, 3, 2);
    herd_prune_bi_observe(bi, 1, h1, 3, 2);
    herd_prune_bi_observe(bi, 2, h2, 3, 2);
    double s[2];
    assert_int_equal(herd_prune_bi_scores(bi, s), 2);
    assert_true(fabs(s[0] - 0.5) < 1e-12); /* (1 + 0) / 2 */
    assert_true(fabs(s[1]) < 1e-12);
    /* a second batch of one token, opposite directions in layer 1: BI 2 */
    const float g0[2] = {1, 1}, g1[2] = {1, 1}, g2[2] = {-1, -1};
    herd_prune_bi_observe(bi, 0, g0, 2, 1);
    herd_prune_bi_observe(bi, 1, g1, 2, 1);
    herd_prune_bi_observe(bi, 2, g2, 2, 1);
    assert_int_equal(herd_prune_bi_scores(bi, s), 3);
    assert_true(fabs(s[0] - 1.0 / 3) < 1e-12);
    assert_true(fabs(s[1] - 2.0 / 3) < 1e-12);
    /* zero rows: both zero is unturned, one zero is orthogonal */
    struct herd_prune_bi *z = herd_prune_bi_create(1, 2, 2);
    const float z0[4] = {0, 0, 1, 0}, z1[4] = {0, 0, 0, 0};
    herd_prune_bi_observe(z, 0, z0, 2, 2);
    herd_prune_bi_observe(z, 1, z1, 2, 2);
    assert_int_equal(herd_prune_bi_scores(z, s), 2);
    assert_true(fabs(s[0] - 0.5) < 1e-12);
    herd_prune_bi_destroy(z);
    herd_prune_bi_destroy(bi);
    herd_prune_bi_destroy(NULL);
}

static void test_rank(void **state) {
    (void)state;
    const double s[5] = {0.3, 0.1, 0.3, 0.05, 0.1};
    uint32_t order[5];
    herd_prune_rank(s, 5, order);
    const uint32_t want[5] = {3, 1, 4, 0, 2}; /* ties: the lower index first */
    assert_memory_equal(order, want, sizeof want);
}

static void test_kept_counts(void **state) {
    (void)state;
    assert_int_equal(herd_prune_ffn_kept(768, 0.5), 512); /* 1.5 blocks rounds up */
    assert_int_equal(herd_prune_ffn_kept(768, 0.34), 256);
    assert_int_equal(herd_prune_ffn_kept(768, 0.01), 256); /* at least one block */
    assert_int_equal(herd_prune_ffn_kept(768, 1), 768);
    assert_int_equal(herd_prune_ffn_kept(1000, 0.99), 1000); /* 1024 > n_ff: all */
    assert_int_equal(herd_prune_ffn_kept(192, 0.5), 192);    /* one block or less: whole */
    assert_int_equal(herd_prune_ffn_kept(14336, 0.75), 10752);
    struct herd_prune_heads_shape hs = {.n_head = 32, .n_head_kv = 8, .head_dim = 128, .group_step = 1};
    assert_int_equal(herd_prune_heads_kept(&hs, 0.5), 4);
    assert_int_equal(herd_prune_heads_kept(&hs, 0.01), 1);
    assert_int_equal(herd_prune_heads_kept(&hs, 1), 8);
    hs.group_step = 4;
    assert_int_equal(herd_prune_heads_kept(&hs, 0.6), 4);
    hs.group_step = 8;
    assert_int_equal(herd_prune_heads_kept(&hs, 0.5), 8);
}

/* ------------------------------------------------------------ the layer rewrite */

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "/tmp/herd-test-prune-%ld-%s", (long)getpid(), name);
}

/* A 3-layer "llama" file with per-layer arrays (head_count u32, head_count_kv
 * i32, sliding_window_pattern bool, feed_forward_length u16) and one extra
 * key; a 1-D tensor per layer holding the layer's index, plus a global one.
 * extra_array: a "<arch>." array of 3 entries herd does not know; split:
 * split.count 2 (one shard of a split model). */
static void write_model(const char *path, bool extra_array, uint64_t ff_count, bool split) {
    struct herd_error err = {0};
    struct herd_gguf_writer *w = herd_gguf_writer_create();
    assert_non_null(w);
    const uint32_t heads[3] = {8, 4, 2};
    const int32_t kv[3] = {2, 1, 1};
    const uint8_t swa[3] = {1, 0, 1};
    const uint16_t ff[3] = {64, 96, 128};
    assert_int_equal(herd_gguf_writer_add_string(w, "general.architecture", "llama", &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_u32(w, "general.alignment", 64, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_u32(w, "llama.block_count", 3, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_u32(w, "llama.embedding_length", 8, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_array(w, "llama.attention.head_count", HERD_GGUF_VTYPE_U32, 3, heads, &err),
                     HERD_OK);
    assert_int_equal(herd_gguf_writer_add_array(w, "llama.attention.head_count_kv", HERD_GGUF_VTYPE_I32, 3, kv, &err),
                     HERD_OK);
    assert_int_equal(
        herd_gguf_writer_add_array(w, "llama.attention.sliding_window_pattern", HERD_GGUF_VTYPE_BOOL, 3, swa, &err),
        HERD_OK);
    assert_int_equal(
        herd_gguf_writer_add_array(w, "llama.feed_forward_length", HERD_GGUF_VTYPE_U16, ff_count, ff, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_array(w, "llama.rope.dimension_sections", HERD_GGUF_VTYPE_U32,
                                                extra_array ? 3 : 2, heads, &err),
                     HERD_OK);
    assert_int_equal(herd_gguf_writer_add_string(w, "tokenizer.ggml.model", "llama", &err), HERD_OK);
    if (split) assert_int_equal(herd_gguf_writer_add_u32(w, "split.count", 2, &err), HERD_OK);
    const uint64_t ne[1] = {4};
    assert_int_equal(herd_gguf_writer_add_tensor(w, "token_embd.weight", HERD_GGML_TYPE_F32, 1, ne, &err), HERD_OK);
    char name[32];
    for (int l = 0; l < 3; l++) {
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        assert_int_equal(herd_gguf_writer_add_tensor(w, name, HERD_GGML_TYPE_F32, 1, ne, &err), HERD_OK);
    }
    assert_int_equal(herd_gguf_writer_begin(w, path, &err), HERD_OK);
    for (int i = -1; i < 3; i++) {
        const float v[4] = {(float)i, (float)i, (float)i, (float)i};
        assert_int_equal(herd_gguf_writer_put_tensor_data(w, v, sizeof v, &err), HERD_OK);
    }
    assert_int_equal(herd_gguf_writer_finish(w, &err), HERD_OK);
    herd_gguf_writer_destroy(w);
}

static void test_layers_rewrite(void **state) {
    (void)state;
    char in[256], out[256];
    tmp_path(in, sizeof in, "in.gguf");
    tmp_path(out, sizeof out, "out.gguf");
    write_model(in, false, 3, false);
    const bool drop[3] = {false, true, false};
    struct herd_prune_params p = {in, out, drop, 3};
    struct herd_prune_stats st;
    struct herd_error err = {0};
    assert_int_equal(herd_prune_layers(&p, &st, &err), HERD_OK);
    assert_int_equal(st.n_layer_out, 2);
    assert_int_equal(st.n_tensors_out, 3);
    struct herd_gguf *g = NULL;
    assert_int_equal(herd_gguf_open_file(out, &g, &err), HERD_OK);
    uint64_t v;
    assert_int_equal(herd_gguf_get_uint(g, "llama.block_count", 100, &v, &err), HERD_OK);
    assert_int_equal(v, 2);
    assert_int_equal(herd_gguf_alignment(g), 64);
    struct herd_gguf_array a;
    assert_int_equal(herd_gguf_get_array(g, "llama.attention.head_count", HERD_GGUF_VTYPE_U32, &a, &err), HERD_OK);
    assert_int_equal(a.count, 2);
    assert_int_equal(herd_gguf_array_u64(&a, 0), 8);
    assert_int_equal(herd_gguf_array_u64(&a, 1), 2);
    assert_int_equal(herd_gguf_get_array(g, "llama.attention.head_count_kv", HERD_GGUF_VTYPE_I32, &a, &err), HERD_OK);
    assert_int_equal(a.count, 2);
    assert_int_equal(herd_gguf_array_i64(&a, 1), 1);
    assert_int_equal(herd_gguf_get_array(g, "llama.attention.sliding_window_pattern", HERD_GGUF_VTYPE_BOOL, &a, &err),
                     HERD_OK);
    assert_int_equal(a.count, 2);
    assert_int_equal(a.data[0], 1);
    assert_int_equal(a.data[1], 1);
    assert_int_equal(herd_gguf_get_array(g, "llama.feed_forward_length", HERD_GGUF_VTYPE_U16, &a, &err), HERD_OK);
    assert_int_equal(herd_gguf_array_u64(&a, 0), 64);
    assert_int_equal(herd_gguf_array_u64(&a, 1), 128);
    /* an array of another length is not per layer: copied */
    assert_int_equal(herd_gguf_get_array(g, "llama.rope.dimension_sections", HERD_GGUF_VTYPE_U32, &a, &err), HERD_OK);
    assert_int_equal(a.count, 2);
    /* tensors renumbered, data of the kept layers */
    assert_null(herd_gguf_find_tensor(g, "blk.2.attn_norm.weight"));
    const struct herd_gguf_tensor *t = herd_gguf_find_tensor(g, "blk.1.attn_norm.weight");
    assert_non_null(t);
    assert_true(((const float *)t->data)[0] == 2.0f);
    t = herd_gguf_find_tensor(g, "blk.0.attn_norm.weight");
    assert_true(((const float *)t->data)[3] == 0.0f);
    assert_non_null(herd_gguf_find_tensor(g, "token_embd.weight"));
    herd_gguf_destroy(g);
    unlink(out);

    /* refusals, with no output left */
    const bool none[3] = {false, false, false}, all[3] = {true, true, true};
    p.drop = none;
    assert_int_equal(herd_prune_layers(&p, NULL, &err), HERD_E_INVALID);
    p.drop = all;
    assert_int_equal(herd_prune_layers(&p, NULL, &err), HERD_E_INVALID);
    assert_non_null(strstr(err.msg, "at least one must go and one stay"));
    p.drop = drop;
    p.n_layer = 4;
    assert_int_equal(herd_prune_layers(&p, NULL, &err), HERD_E_INVALID);
    p.n_layer = 3;
    write_model(in, true, 3, false);
    assert_int_equal(herd_prune_layers(&p, NULL, &err), HERD_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "rope.dimension_sections"));
    write_model(in, false, 2, false);
    assert_int_equal(herd_prune_layers(&p, NULL, &err), HERD_E_FORMAT);
    assert_non_null(strstr(err.msg, "feed_forward_length"));
    write_model(in, false, 3, true);
    assert_int_equal(herd_prune_layers(&p, NULL, &err), HERD_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "split files"));
    assert_int_equal(access(out, F_OK), -1);
    unlink(in);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_influence),
        cmocka_unit_test(test_rank),
        cmocka_unit_test(test_kept_counts),
        cmocka_unit_test(test_layers_rewrite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
