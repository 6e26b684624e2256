/* The KV cache's layout with a different number of KV heads per layer
 * (head-pruned files): each (layer, head) has its own region, a store of
 * one layer reaches exactly its heads, the block's bytes count every
 * layer's own heads, and a layer wider than kv_dim or without heads is
 * refused. (The uniform cache is exercised by every forward-pass test.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "model/kv_cache.h"
#include "test_util.h"

enum { HD = 4, BT = 4 };

static void test_layer_heads(void **state) {
    (void)state;
    const uint32_t heads[3] = {2, 1, 3};
    struct herd_kv_params p = {.n_layer = 3,
                               .kv_dim = 3 * HD,
                               .layer_heads = heads,
                               .head_dim = HD,
                               .block_tokens = BT,
                               .n_blocks = 4,
                               .max_seqs = 2,
                               .type = HERD_KV_F32};
    struct herd_kv_params uniform = p;
    uniform.layer_heads = NULL;
    assert_int_equal(herd_kv_block_bytes(&p) * 9, herd_kv_block_bytes(&uniform) * 6); /* 6 heads against 9 */
    struct herd_kv *kv = NULL;
    struct herd_error err = {0};
    assert_int_equal(herd_kv_create(&p, &kv, &err), HERD_OK);
    assert_ptr_not_equal(herd_kv_params(kv)->layer_heads, heads); /* a copy */
    int32_t s;
    assert_int_equal(herd_kv_seq_new(kv, &s, &err), HERD_OK);
    assert_int_equal(herd_kv_seq_prepare(kv, s, 0, 2, &err), HERD_OK);
    for (uint32_t l = 0; l < 3; l++)
        for (uint32_t pos = 0; pos < 2; pos++) {
            float k[3 * HD], v[3 * HD];
            for (uint32_t i = 0; i < 3 * HD; i++) k[i] = (float)(1000 * l + 100 * pos + i), v[i] = -k[i];
            herd_kv_store(kv, s, l, pos, k, v);
        }
    uint32_t n_blocks;
    const int32_t *blocks = herd_kv_seq_blocks(kv, s, &n_blocks);
    for (uint32_t l = 0; l < 3; l++)
        for (uint32_t h = 0; h < heads[l]; h++) {
            struct herd_attn_kv view;
            herd_kv_head_view(kv, blocks[0], l, h, &view);
            const float *K = view.k, *V = view.v;
            for (uint32_t pos = 0; pos < 2; pos++)
                for (uint32_t d = 0; d < HD; d++) {
                    const float want = (float)(1000 * l + 100 * pos + h * HD + d);
                    assert_true(K[d * BT + pos] == want); /* K transposed: [head_dim][block_tokens] */
                    assert_true(V[pos * view.v_stride + d] == -want);
                }
        }
    herd_kv_destroy(kv);

    const uint32_t too_wide[3] = {2, 4, 1}, empty[3] = {2, 0, 1};
    p.layer_heads = too_wide;
    assert_int_equal(herd_kv_create(&p, &kv, &err), HERD_E_INVALID);
    p.layer_heads = empty;
    assert_int_equal(herd_kv_create(&p, &kv, &err), HERD_E_INVALID);
    assert_null(kv);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_layer_heads)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
