/* The engine against the float64 reference (../shared/fixtures/reference),
 * by the rules of the fixtures README ("How to compare an engine"):
 * - logits at every prompt position (the reference's top 5 ids) and the whole
 *   last-position vector within the tolerance of the arithmetic used;
 * - greedy continuation: identical in precise mode (f32 activations, f32 KV
 *   cache), otherwise equal until the first step whose top-1 margin is below
 *   twice the tolerance.
 * Without ../shared, the one fixture shipped in tests/data is checked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>

#include "herd/gguf.h"
#include "model/forward.h"
#include "test_util.h"

struct mode {
    const char *name;
    bool precise;
    enum herd_kv_type kv;
};

static const struct mode modes[] = {
    {"precise", true, HERD_KV_F32},
    {"default", false, HERD_KV_F16},
    {"f32-kv", false, HERD_KV_F32},
    {"q8-kv", false, HERD_KV_Q8},
};

/* Tolerance from the fixtures README for the arithmetic herd uses in a mode. */
static double tolerance(const struct herd_model *m, const struct mode *md) {
    if (md->precise) return 1e-3;
    const struct herd_gguf_tensor *t = herd_gguf_find_tensor(m->gguf, "blk.0.attn_q.weight");
    bool q8_acts = t->type == HERD_GGML_TYPE_Q8_0 || t->type == HERD_GGML_TYPE_Q4_0;
    /* F16/BF16/F32 weights meet f32 activations here: only float32 rounding */
    double tol = q8_acts ? 2.0 : 1e-3;
    if (md->kv == HERD_KV_F16) tol += 0.15;
    /* The fixtures README gives no tolerance for an 8-bit KV cache; measured
     * here: it adds at most 0.15 on these models (0.5 leaves room). */
    if (md->kv == HERD_KV_Q8) tol += 0.5;
    return tol;
}

static int argmax(const float *row, uint32_t n) {
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (row[i] > row[best]) best = i;
    return (int)best;
}

static struct herd_context *make_context(const struct herd_model *m, const struct mode *md) {
    struct herd_context_params p;
    herd_context_default_params(&p);
    p.precise = md->precise;
    p.kv_type = md->kv;
    p.kv_tokens = 256;
    p.n_threads = 2;
    struct herd_error err = {0};
    struct herd_context *c = NULL;
    if (herd_context_create(m, &p, &c, &err) != HERD_OK) fail_msg("%s", err.msg);
    return c;
}

static void check_prompt(const struct herd_model *m, const struct mode *md, json_t *prompt, const char *model_name) {
    const double tol = tolerance(m, md);
    struct herd_context *c = make_context(m, md);
    struct herd_error err = {0};
    json_t *ids_j = json_object_get(prompt, "prompt_ids");
    const uint32_t n = (uint32_t)json_array_size(ids_j);
    int32_t ids[64], seqs[64];
    uint32_t pos[64];
    bool want[64];
    int32_t s;
    assert_int_equal(herd_kv_seq_new(c->kv, &s, &err), HERD_OK);
    for (uint32_t i = 0; i < n; i++) {
        ids[i] = (int32_t)json_integer_value(json_array_get(ids_j, i));
        pos[i] = i;
        seqs[i] = s;
        want[i] = true;
    }
    struct herd_batch b = {n, ids, pos, seqs, want};
    if (herd_decode(c, &b, &err) != HERD_OK) fail_msg("%s", err.msg);
    const uint32_t V = (uint32_t)m->desc.n_vocab;
    double worst = 0;
    json_t *ptop = json_object_get(prompt, "prompt_top5");
    for (uint32_t p = 0; p < n; p++) {
        const float *row = herd_context_logits(c, p);
        json_t *pair;
        size_t k;
        json_array_foreach(json_array_get(ptop, p), k, pair) {
            int id = (int)json_integer_value(json_array_get(pair, 0));
            double want_logit = json_number_value(json_array_get(pair, 1));
            double diff = fabs(row[id] - want_logit);
            if (diff > worst) worst = diff;
            if (diff > tol)
                fail_msg("%s %s '%s': position %u id %d logit %.6f, reference %.6f (tolerance %g)", model_name,
                         md->name, json_string_value(json_object_get(prompt, "prompt")), p, id, row[id], want_logit,
                         tol);
        }
    }
    const float *last = herd_context_logits(c, n - 1);
    json_t *ll = json_object_get(prompt, "last_logits");
    assert_int_equal(json_array_size(ll), V);
    for (uint32_t v = 0; v < V; v++) {
        double diff = fabs(last[v] - json_number_value(json_array_get(ll, v)));
        if (diff > tol + 5e-5) /* the reference rounded these to 4 decimals */
            fail_msg("%s %s: last position, id %u differs by %g (tolerance %g)", model_name, md->name, v, diff, tol);
    }

    /* greedy continuation, one token per step on the same sequence */
    json_t *greedy = json_object_get(prompt, "greedy_ids"), *margins = json_object_get(prompt, "greedy_top1_margin");
    int next = argmax(last, V);
    uint32_t agreed = 0;
    for (uint32_t step = 0; step < json_array_size(greedy); step++) {
        int want_id = (int)json_integer_value(json_array_get(greedy, step));
        if (next != want_id) {
            double margin = json_number_value(json_array_get(margins, step));
            if (md->precise || margin >= 2 * tol)
                fail_msg("%s %s '%s': greedy step %u gave %d, reference %d (margin %g, tolerance %g)", model_name,
                         md->name, json_string_value(json_object_get(prompt, "prompt")), step, next, want_id, margin,
                         tol);
            break; /* acceptable divergence: the sequences differ from here on */
        }
        agreed++;
        int32_t tok = next;
        uint32_t p = n + step;
        bool w = true;
        struct herd_batch sb = {1, &tok, &p, &s, &w};
        if (herd_decode(c, &sb, &err) != HERD_OK) fail_msg("%s", err.msg);
        next = argmax(herd_context_logits(c, 0), V);
    }
    print_message("  %-22s %-8s max |dlogit| %.2e (tol %g), greedy %u/%zu\n", model_name, md->name, worst, tol, agreed,
                  json_array_size(greedy));
    herd_context_destroy(c);
}

static void check_model(const char *gguf_path, const char *ref_path, const char *name) {
    struct herd_error err = {0};
    struct herd_model *m = NULL;
    if (herd_model_load(gguf_path, &m, &err) != HERD_OK) fail_msg("%s", err.msg);
    json_error_t jerr;
    json_t *ref = json_load_file(ref_path, 0, &jerr);
    if (!ref) fail_msg("%s: %s", ref_path, jerr.text);
    json_t *prompt;
    size_t i;
    for (size_t md = 0; md < sizeof modes / sizeof modes[0]; md++)
        json_array_foreach(json_object_get(ref, "prompts"), i, prompt) check_prompt(m, &modes[md], prompt, name);
    json_decref(ref);
    herd_model_destroy(m);
}

static void test_shipped_fixture(void **state) {
    (void)state;
    char g[512], r[512];
    check_model(test_data_path("tiny-spm-q4_0.gguf", g, sizeof g),
                test_data_path("reference/tiny-spm-q4_0.json", r, sizeof r), "tiny-spm-q4_0");
}

static void test_all_shared_fixtures(void **state) {
    (void)state;
    static const char *const names[] = {"tiny-spm-f32",  "tiny-spm-f16",      "tiny-spm-q8_0",
                                        "tiny-spm-q4_0", "tiny-spm-tied-f32", "tiny-bpe-q4_0"};
    char g[512], r[512], rel[256];
    if (!test_shared_path("fixtures/reference", r, sizeof r)) skip();
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(rel, sizeof rel, "fixtures/models/%s.gguf", names[i]);
        if (!test_shared_path(rel, g, sizeof g)) fail_msg("%s missing", rel);
        snprintf(rel, sizeof rel, "fixtures/reference/%s.json", names[i]);
        if (!test_shared_path(rel, r, sizeof r)) fail_msg("%s missing", rel);
        check_model(g, r, names[i]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_fixture),
        cmocka_unit_test(test_all_shared_fixtures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
