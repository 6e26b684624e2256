/* Batch invariance: a sequence's logits are bit-identical whether it runs
 * alone or in a batch with other sequences at other positions, with any
 * split of its prompt into chunks; and the KV cache's sharing (fork) gives
 * the same results as recomputation. Uses the shipped Q4_0 fixture and the
 * default model, with the best kernels and with the reference kernels; and
 * every other weight type herd computes, in the mixes herd quantize (and
 * llama-quantize) writes, on a synthesized tiny-256 model; and a tiny model
 * of each other family (qwen3, gemma2/3, phi3, Mistral's window, MoE). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "base/rng.h"
#include "convert/quantize.h"
#include "model/forward.h"
#include "convert/synth.h"
#include "test_util.h"

static struct herd_model *load(const char *path) {
    struct herd_error err = {0};
    struct herd_model *m = NULL;
    if (herd_model_load(path, &m, &err) != HERD_OK) fail_msg("%s", err.msg);
    return m;
}

static struct herd_context *context(const struct herd_model *m, int threads, const struct herd_kernels *k) {
    struct herd_context_params p;
    herd_context_default_params(&p);
    p.n_threads = threads;
    p.kv_tokens = 2048;
    p.kernels = k;
    struct herd_error err = {0};
    struct herd_context *c = NULL;
    if (herd_context_create(m, &p, &c, &err) != HERD_OK) fail_msg("%s", err.msg);
    return c;
}

/* Runs ids[0..n) on a fresh sequence in chunks of `chunk`; copies the last logits. */
static void run_alone(struct herd_context *c, const int32_t *ids, uint32_t n, uint32_t chunk, float *logits) {
    struct herd_error err = {0};
    int32_t s;
    assert_int_equal(herd_kv_seq_new(c->kv, &s, &err), HERD_OK);
    uint32_t pos[512];
    int32_t seq[512];
    for (uint32_t i0 = 0; i0 < n; i0 += chunk) {
        uint32_t m = n - i0 < chunk ? n - i0 : chunk;
        for (uint32_t i = 0; i < m; i++) pos[i] = i0 + i, seq[i] = s;
        struct herd_batch b = {m, ids + i0, pos, seq, NULL};
        if (herd_decode(c, &b, &err) != HERD_OK) fail_msg("%s", err.msg);
    }
    memcpy(logits, herd_context_logits(c, 0), c->model->desc.n_vocab * sizeof *logits);
    herd_kv_seq_free(c->kv, s);
}

static void check_model(const char *path, const struct herd_kernels *k) {
    struct herd_model *m = load(path);
    const uint32_t V = (uint32_t)m->desc.n_vocab;
    struct herd_rng rng;
    herd_rng_init(&rng, 7);
    enum { N = 40 };
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = (int32_t)(herd_rng_u64(&rng) % V);
    float *alone = malloc(V * sizeof *alone), *other = malloc(V * sizeof *other);

    struct herd_context *c = context(m, 2, k);
    run_alone(c, ids, N, 512, alone);
    /* same prompt in chunks of 1, 3, 7 and 16 tokens (1 and 3: team passes) */
    const uint32_t chunks[] = {1, 3, 7, 16};
    for (size_t i = 0; i < sizeof chunks / sizeof *chunks; i++) {
        run_alone(c, ids, N, chunks[i], other);
        if (memcmp(alone, other, V * sizeof *alone) != 0) fail_msg("%s: chunk %u changes the logits", path, chunks[i]);
    }
    herd_context_destroy(c);
    /* where the FFN splits into one 256-row item per thread of 3 (tiny-256:
     * 768 rows), team passes of 3 threads fuse the gate into gate/up that
     * way (forward.c's gate_item_rows); 2 threads do not, nor the other
     * shapes' widths */
    if (m->desc.n_ff_layer[0] % (3 * HERD_QK_K) == 0) {
        c = context(m, 3, k);
        run_alone(c, ids, N, 1, other);
        if (memcmp(alone, other, V * sizeof *alone) != 0) fail_msg("%s: 3 threads change the logits", path);
        herd_context_destroy(c);
    }
    /* a different thread count */
    c = context(m, 1, k);
    run_alone(c, ids, N, 512, other);
    if (memcmp(alone, other, V * sizeof *alone) != 0) fail_msg("%s: 1 thread changes the logits", path);

    /* inside a batch: two other sequences, one already 23 tokens in, one new */
    struct herd_error err = {0};
    int32_t s_other, s_me, s_new;
    assert_int_equal(herd_kv_seq_new(c->kv, &s_other, &err), HERD_OK);
    int32_t pre[23];
    uint32_t ppos[23];
    int32_t pseq[23];
    for (int i = 0; i < 23; i++) pre[i] = (int32_t)((i * 31 + 5) % V), ppos[i] = (uint32_t)i, pseq[i] = s_other;
    struct herd_batch pb = {23, pre, ppos, pseq, NULL};
    assert_int_equal(herd_decode(c, &pb, &err), HERD_OK);
    assert_int_equal(herd_kv_seq_new(c->kv, &s_me, &err), HERD_OK);
    assert_int_equal(herd_kv_seq_new(c->kv, &s_new, &err), HERD_OK);
    int32_t bt[N + 6];
    uint32_t bp[N + 6];
    int32_t bs[N + 6];
    bool want[N + 6];
    uint32_t n = 0;
    for (int i = 0; i < 3; i++) bt[n] = (int32_t)(i + 3), bp[n] = 23 + (uint32_t)i, bs[n] = s_other, want[n++] = true;
    for (int i = 0; i < N; i++) bt[n] = ids[i], bp[n] = (uint32_t)i, bs[n] = s_me, want[n++] = i == N - 1;
    for (int i = 0; i < 3; i++) bt[n] = (int32_t)(i + 9), bp[n] = (uint32_t)i, bs[n] = s_new, want[n++] = i == 2;
    struct herd_batch mixed = {n, bt, bp, bs, want};
    assert_int_equal(herd_decode(c, &mixed, &err), HERD_OK);
    assert_int_equal(c->n_outputs, 5);
    if (memcmp(alone, herd_context_logits(c, 3), V * sizeof *alone) != 0)
        fail_msg("%s: batching with other sequences changes the logits", path);

    /* fork: a copy of the first 20 tokens continued with the rest equals the
     * original (where every layer slides, the blocks behind the window are
     * gone: a fork at the last position, the scheduler's n > 1 case) */
    int32_t s_fork;
    const int at = m->window_all ? N - 1 : 20;
    if (m->window_all) { /* and reaching back behind the window is refused, not a crash */
        int32_t s_bad;
        assert_int_equal(herd_kv_seq_fork(c->kv, s_me, 20, &s_bad, &err), HERD_OK);
        uint32_t bp20 = 20;
        struct herd_batch bad = {1, ids + 20, &bp20, &s_bad, NULL};
        assert_int_equal(herd_decode(c, &bad, &err), HERD_E_INVALID);
        herd_kv_seq_free(c->kv, s_bad);
    }
    assert_int_equal(herd_kv_seq_fork(c->kv, s_me, (uint32_t)at, &s_fork, &err), HERD_OK);
    uint32_t fp[N];
    int32_t fs[N];
    for (int i = at; i < N; i++) fp[i - at] = (uint32_t)i, fs[i - at] = s_fork;
    struct herd_batch fb = {(uint32_t)(N - at), ids + at, fp, fs, NULL};
    assert_int_equal(herd_decode(c, &fb, &err), HERD_OK);
    if (memcmp(alone, herd_context_logits(c, 0), V * sizeof *alone) != 0)
        fail_msg("%s: a forked prefix changes the logits", path);
    herd_context_destroy(c);
    herd_model_destroy(m);
    free(alone);
    free(other);
}

static void test_invariance_best_kernels(void **state) {
    (void)state;
    char p[512];
    check_model(test_data_path("tiny-spm-q4_0.gguf", p, sizeof p), NULL);
    snprintf(p, sizeof p, "%s/models/stories260K.gguf", HERD_SOURCE_DIR);
    check_model(p, NULL);
}

static void test_invariance_ref_kernels(void **state) {
    (void)state;
    char p[512];
    check_model(test_data_path("tiny-spm-q4_0.gguf", p, sizeof p), herd_kernels_ref());
}

/* Randomised: 20 rounds of 1-6 sequences with random prompt lengths fed in
 * random interleavings and chunk sizes; each sequence's last logits must be
 * bit-identical to its run alone. */
static void test_randomised_interleavings(void **state) {
    (void)state;
    char p[512];
    struct herd_model *m = load(test_data_path("tiny-spm-q4_0.gguf", p, sizeof p));
    const uint32_t V = (uint32_t)m->desc.n_vocab;
    struct herd_context *alone_ctx = context(m, 2, NULL), *c = context(m, 2, NULL);
    struct herd_rng rng;
    herd_rng_init(&rng, 99);
    float *want = malloc(6 * (size_t)V * sizeof *want);
    for (int round = 0; round < 20; round++) {
        const uint32_t n_seq = 1 + (uint32_t)(herd_rng_u64(&rng) % 6);
        int32_t ids[6][48], seq[6];
        uint32_t len[6], done[6] = {0};
        struct herd_error err = {0};
        for (uint32_t s = 0; s < n_seq; s++) {
            len[s] = 1 + (uint32_t)(herd_rng_u64(&rng) % 48);
            for (uint32_t i = 0; i < len[s]; i++) ids[s][i] = (int32_t)(herd_rng_u64(&rng) % V);
            run_alone(alone_ctx, ids[s], len[s], 512, want + s * V);
            assert_int_equal(herd_kv_seq_new(c->kv, &seq[s], &err), HERD_OK);
        }
        for (;;) {
            int32_t bt[64], bs[64];
            uint32_t bp[64], n = 0, finishing[6], n_fin = 0;
            bool wl[64];
            for (uint32_t s = 0; s < n_seq; s++) {
                if (done[s] == len[s] || herd_rng_u64(&rng) % 3 == 0) continue;
                uint32_t k = 1 + (uint32_t)(herd_rng_u64(&rng) % 9);
                if (k > len[s] - done[s]) k = len[s] - done[s];
                for (uint32_t i = 0; i < k; i++) {
                    bt[n] = ids[s][done[s] + i], bp[n] = done[s] + i, bs[n] = seq[s];
                    wl[n] = done[s] + i == len[s] - 1;
                    if (wl[n]) finishing[n_fin++] = s;
                    n++;
                }
                done[s] += k;
            }
            if (n == 0) {
                bool all = true;
                for (uint32_t s = 0; s < n_seq; s++) all = all && done[s] == len[s];
                if (all) break;
                continue;
            }
            struct herd_batch b = {n, bt, bp, bs, wl};
            assert_int_equal(herd_decode(c, &b, &err), HERD_OK);
            for (uint32_t f = 0; f < n_fin; f++)
                if (memcmp(herd_context_logits(c, f), want + finishing[f] * V, V * sizeof(float)) != 0)
                    fail_msg("round %d: sequence %u differs from its run alone", round, finishing[f]);
        }
        for (uint32_t s = 0; s < n_seq; s++) herd_kv_seq_free(c->kv, seq[s]);
    }
    free(want);
    herd_context_destroy(alone_ctx);
    herd_context_destroy(c);
    herd_model_destroy(m);
}

static void test_bad_batches(void **state) {
    (void)state;
    char p[512];
    struct herd_model *m = load(test_data_path("tiny-spm-q4_0.gguf", p, sizeof p));
    struct herd_context *c = context(m, 1, NULL);
    struct herd_error err = {0};
    int32_t s;
    assert_int_equal(herd_kv_seq_new(c->kv, &s, &err), HERD_OK);
    int32_t tok[2] = {1, 32000};
    uint32_t pos[2] = {0, 1};
    int32_t seq[2] = {s, s};
    struct herd_batch b = {2, tok, pos, seq, NULL};
    assert_int_equal(herd_decode(c, &b, &err), HERD_E_INVALID); /* id == n_vocab */
    assert_non_null(strstr(err.msg, "invalid token id 32000"));
    tok[1] = -1;
    assert_int_equal(herd_decode(c, &b, &err), HERD_E_INVALID);
    tok[1] = 5;
    pos[1] = 3;
    assert_int_equal(herd_decode(c, &b, &err), HERD_E_INVALID); /* gap */
    pos[0] = 1, pos[1] = 2;
    assert_int_equal(herd_decode(c, &b, &err), HERD_E_INVALID); /* starts past the end */
    seq[0] = 63;
    pos[0] = 0, pos[1] = 1;
    assert_int_equal(herd_decode(c, &b, &err), HERD_E_INVALID); /* unknown sequence */
    assert_int_equal(herd_kv_seq_len(c->kv, s), 0);
    herd_context_destroy(c);
    herd_model_destroy(m);
}

/* Filling the KV cache is HERD_E_AGAIN and leaves every sequence as it was. */
static void test_kv_exhaustion(void **state) {
    (void)state;
    char p[512];
    struct herd_model *m = load(test_data_path("tiny-spm-q4_0.gguf", p, sizeof p));
    struct herd_context_params cp;
    herd_context_default_params(&cp);
    cp.n_threads = 1;
    cp.kv_tokens = 64; /* 4 blocks of 16 */
    struct herd_error err = {0};
    struct herd_context *c = NULL;
    assert_int_equal(herd_context_create(m, &cp, &c, &err), HERD_OK);
    int32_t a, b2;
    assert_int_equal(herd_kv_seq_new(c->kv, &a, &err), HERD_OK);
    assert_int_equal(herd_kv_seq_new(c->kv, &b2, &err), HERD_OK);
    int32_t tok[64];
    uint32_t pos[64];
    int32_t seq[64];
    for (int i = 0; i < 64; i++) tok[i] = 100 + i, pos[i] = (uint32_t)(i % 40), seq[i] = i < 40 ? a : b2;
    struct herd_batch first = {40, tok, pos, seq, NULL};
    assert_int_equal(herd_kv_free_blocks(c->kv), 4);
    assert_int_equal(herd_decode(c, &first, &err), HERD_OK); /* 3 blocks */
    assert_int_equal(herd_kv_free_blocks(c->kv), 1);
    struct herd_batch second = {24, tok + 40, pos + 40, seq + 40, NULL};
    assert_int_equal(herd_decode(c, &second, &err), HERD_E_AGAIN); /* needs 2, 1 free */
    assert_non_null(strstr(err.msg, "KV cache full"));
    assert_int_equal(herd_kv_seq_len(c->kv, a), 40);
    assert_int_equal(herd_kv_seq_len(c->kv, b2), 0);
    assert_int_equal(herd_kv_free_blocks(c->kv), 1); /* the refused batch took nothing */
    herd_kv_seq_free(c->kv, a);
    assert_int_equal(herd_kv_free_blocks(c->kv), 4);
    assert_int_equal(herd_decode(c, &second, &err), HERD_OK);
    herd_context_destroy(c);
    herd_model_destroy(m);
}

/* ------------------------------------------------------------ the K-quant and legacy types
 *
 * tiny-256 (every matrix row a multiple of 256, so the K types apply to all
 * matrices) synthesized in F32 and quantized by herd's quantizer into each
 * mix. For each: the invariance checks above; nearly the same last logits
 * from the reference, AVX2 and best kernels (their dot products differ only
 * in the order of per-block float sums, but such a difference can move an
 * activation across an 8-bit rounding boundary, a step that then grows
 * through the layers: ~1 % of the largest logit here, so the families are
 * compared by correlation, >= 0.999); and logits correlated with the F32 model's at
 * least as the type's precision allows (measured with seed 1: Q8_0 0.9997,
 * Q6_K 0.998, Q5_K_M 0.995, Q4_K_M 0.965, Q3_K_M 0.955, Q2_K 0.58, Q4_1
 * 0.956, Q5_1 0.992, Q5_0 0.992, IQ4_NL 0.969; random weights lose much at
 * 2 bits; a wrong scale or bit plane gives ~0). */
static const struct {
    enum herd_ftype ft;
    double min_corr;
} kMixes[] = {
    {HERD_FTYPE_Q8_0, 0.99},  {HERD_FTYPE_Q6_K, 0.99},   {HERD_FTYPE_Q5_K_M, 0.98}, {HERD_FTYPE_Q4_K_M, 0.93},
    {HERD_FTYPE_Q3_K_M, 0.9}, {HERD_FTYPE_Q2_K, 0.45},   {HERD_FTYPE_Q4_1, 0.92},   {HERD_FTYPE_Q5_1, 0.97},
    {HERD_FTYPE_Q5_0, 0.97},  {HERD_FTYPE_IQ4_NL, 0.93},
};

static void synth_shape(const char *dir, const char *shape, enum herd_ftype ft, char *path, size_t n) {
    snprintf(path, n, "%s/%s-%s.gguf", dir, shape, herd_quantize_ftype_name(ft));
    struct herd_synth_params p;
    herd_synth_default_params(&p);
    p.shape = shape;
    p.ftype = ft;
    p.out_path = path;
    char vocab[512];
    p.vocab_path = test_data_path("ggml-vocab-llama-spm.gguf", vocab, sizeof vocab);
    struct herd_error err = {0};
    if (herd_synth_write(&p, &err) != HERD_OK) fail_msg("synth %s: %s", herd_quantize_ftype_name(ft), err.msg);
}

/* The last logits of the fixed 40-token prompt. */
static void last_logits(const char *path, const struct herd_kernels *k, float *out) {
    struct herd_model *m = load(path);
    struct herd_rng rng;
    herd_rng_init(&rng, 7);
    int32_t ids[40];
    for (int i = 0; i < 40; i++) ids[i] = (int32_t)(herd_rng_u64(&rng) % m->desc.n_vocab);
    struct herd_context *c = context(m, 2, k);
    run_alone(c, ids, 40, 512, out);
    herd_context_destroy(c);
    herd_model_destroy(m);
}

static double correlation(const float *a, const float *b, size_t n) {
    double ma = 0, mb = 0;
    for (size_t i = 0; i < n; i++) ma += a[i], mb += b[i];
    ma /= (double)n, mb /= (double)n;
    double sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; i < n; i++) {
        const double x = a[i] - ma, y = b[i] - mb;
        sab += x * y, saa += x * x, sbb += y * y;
    }
    return sab / sqrt(saa * sbb);
}

static void test_k_types(void **state) {
    (void)state;
    char dir[] = "/tmp/herd-test-ktypes-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[600];
    synth_shape(dir, "tiny-256", HERD_FTYPE_ALL_F32, path, sizeof path);
    const size_t V = 32000;
    float *f32 = malloc(V * sizeof *f32), *best = malloc(V * sizeof *best), *other = malloc(V * sizeof *other);
    last_logits(path, NULL, f32);
    unlink(path);
    for (size_t i = 0; i < sizeof kMixes / sizeof kMixes[0]; i++) {
        const char *name = herd_quantize_ftype_name(kMixes[i].ft);
        synth_shape(dir, "tiny-256", kMixes[i].ft, path, sizeof path);
        check_model(path, NULL);
        last_logits(path, NULL, best);
        const struct herd_kernels *fams[] = {herd_kernels_ref(), herd_kernels_avx2()};
        for (size_t f = 0; f < 2; f++) {
            if (!fams[f]) continue;
            last_logits(path, fams[f], other);
            const double fr = correlation(other, best, V);
            if (!(fr >= 0.999))
                fail_msg("%s: %s kernels' logits correlate %.5f with the best's", name, fams[f]->name, fr);
        }
        const double r = correlation(best, f32, V);
        fprintf(stderr, "%s: correlation with F32 %.5f\n", name, r);
        if (!(r >= kMixes[i].min_corr))
            fail_msg("%s: logits correlate %.4f with F32's (want >= %.2f)", name, r, kMixes[i].min_corr);
        unlink(path);
    }
    rmdir(dir);
    free(f32), free(best), free(other);
}

/* The other families (sliding windows cutting through KV blocks, gemma's
 * soft-capping and local RoPE, fused phi3 matrices, experts run on the
 * rows routed to them), in F32 and Q8_0 (the packed kernels): the same
 * invariance. */
static void test_invariance_families(void **state) {
    (void)state;
    static const char *const shapes[] = {"mistral-tiny", "gemma2-tiny",  "gemma3-tiny",   "phi3-tiny",
                                         "qwen3-tiny",   "mixtral-tiny", "qwen2moe-tiny", "qwen3moe-tiny"};
    char dir[] = "/tmp/herd-test-families-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[600];
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const enum herd_ftype types[] = {HERD_FTYPE_ALL_F32, HERD_FTYPE_Q8_0};
        for (size_t t = 0; t < 2; t++) {
            synth_shape(dir, shapes[i], types[t], path, sizeof path);
            check_model(path, NULL);
            unlink(path);
        }
    }
    rmdir(dir);
}

/* A model whose every layer slides (mistral-tiny: an 8-token window) holds
 * only the blocks its window reaches while a sequence grows: 300 tokens
 * one by one keep at most 2 blocks of 16, where the same shape without a
 * window (tiny) holds all 19. */
static void test_window_frees_blocks(void **state) {
    (void)state;
    char dir[] = "/tmp/herd-test-window-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *shapes[] = {"mistral-tiny", "tiny"};
    const uint32_t most_held[] = {2, 19};
    for (size_t i = 0; i < 2; i++) {
        char path[600];
        synth_shape(dir, shapes[i], HERD_FTYPE_ALL_F32, path, sizeof path);
        struct herd_model *m = load(path);
        struct herd_context *c = context(m, 2, NULL);
        const uint32_t total = herd_kv_free_blocks(c->kv);
        struct herd_error err = {0};
        int32_t s;
        assert_int_equal(herd_kv_seq_new(c->kv, &s, &err), HERD_OK);
        uint32_t held = 0;
        for (uint32_t pos = 0; pos < 300; pos++) {
            const int32_t tok = (int32_t)(pos * 37 % 1000 + 3);
            struct herd_batch b = {1, &tok, &pos, &s, NULL};
            if (herd_decode(c, &b, &err) != HERD_OK) fail_msg("%s: %s", shapes[i], err.msg);
            const uint32_t now = total - herd_kv_free_blocks(c->kv);
            held = now > held ? now : held;
        }
        if (held > most_held[i]) fail_msg("%s holds %u blocks (at most %u expected)", shapes[i], held, most_held[i]);
        if (i == 1 && held != most_held[i]) fail_msg("tiny holds %u blocks, not all 19", held);
        herd_kv_seq_free(c->kv, s);
        assert_int_equal(herd_kv_free_blocks(c->kv), total);
        herd_context_destroy(c);
        herd_model_destroy(m);
        unlink(path);
    }
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invariance_best_kernels),
        cmocka_unit_test(test_invariance_ref_kernels),
        cmocka_unit_test(test_invariance_families),
        cmocka_unit_test(test_window_frees_blocks),
        cmocka_unit_test(test_randomised_interleavings),
        cmocka_unit_test(test_bad_batches),
        cmocka_unit_test(test_kv_exhaustion),
        cmocka_unit_test(test_k_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
