/* herd_engine (include/herd/herd.h) on the default model (stories260K):
 * each part opens when asked and only then, a scheduler takes the context,
 * a failing step returns its message and leaks nothing (ASan), and a
 * greedy request through the engine's scheduler gives the tokens of a
 * forward pass driven by hand on an engine without one. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine/sched.h"
#include "herd/herd.h"
#include "model/forward.h"
#include "model/model.h"
#include "sampling/sampler.h"

static void model_path(char *path, size_t n) { snprintf(path, n, "%s/models/stories260K.gguf", HERD_SOURCE_DIR); }

static struct herd_engine *open_ok(struct herd_engine_options *o) {
    struct herd_engine *e = NULL;
    struct herd_error err = {0};
    if (herd_engine_open(o, &e, &err) != HERD_OK) fail_msg("%s", err.msg);
    return e;
}

static void test_parts(void **state) {
    (void)state;
    char path[512];
    model_path(path, sizeof path);
    struct herd_engine_options o;
    herd_engine_default_options(&o);
    o.model_path = path;
    o.n_ctx = 64;
    struct herd_engine *e = open_ok(&o);
    assert_non_null(herd_engine_model(e));
    assert_non_null(herd_engine_context(e));
    assert_null(herd_engine_vocab(e));
    assert_null(herd_engine_tokenizer(e));
    assert_null(herd_engine_chat_template(e));
    assert_null(herd_engine_sched(e));
    assert_int_equal(herd_engine_n_ctx(e), 64);
    assert_int_equal(herd_engine_kv_tokens(e), 64);
    assert_true(herd_engine_kv_bytes(e) > 0);
    assert_string_equal(herd_engine_model_path(e), path);
    herd_engine_close(e);

    o.parts = HERD_ENGINE_CHAT;
    e = open_ok(&o);
    assert_non_null(herd_engine_vocab(e)); /* CHAT implies TEXT */
    assert_non_null(herd_engine_tokenizer(e));
    assert_non_null(herd_engine_chat_template(e));
    assert_null(herd_engine_sched(e));
    herd_engine_close(e);

    o.parts = HERD_ENGINE_SCHEDULER;
    o.max_seqs = 4;
    e = open_ok(&o);
    assert_non_null(herd_engine_sched(e));
    assert_non_null(herd_engine_tokenizer(e));
    assert_null(herd_engine_context(e)); /* the scheduler's thread owns it */
    assert_int_equal(herd_engine_kv_tokens(e), 4 * 64);
    herd_engine_close(e);
    herd_engine_close(NULL);
}

static void test_errors(void **state) {
    (void)state;
    char path[512];
    model_path(path, sizeof path);
    struct herd_engine_options o;
    herd_engine_default_options(&o);
    struct herd_engine *e = (struct herd_engine *)&o; /* must become NULL */
    struct herd_error err = {0};

    o.model_path = "/nonexistent/model.gguf";
    assert_int_equal(herd_engine_open(&o, &e, &err), HERD_E_IO);
    assert_null(e);
    assert_non_null(strstr(err.msg, "/nonexistent/model.gguf"));

    o.model_path = path;
    o.kv_type = "q4";
    assert_int_equal(herd_engine_open(&o, &e, &err), HERD_E_INVALID);
    assert_non_null(strstr(err.msg, "--kv-type"));

    o.kv_type = NULL;
    o.n_ctx = 256;
    o.kv_mem = 1000; /* less than one block */
    assert_int_equal(herd_engine_open(&o, &e, &err), HERD_E_INVALID);
    assert_non_null(strstr(err.msg, "less than one context"));

    o.kv_mem = 0;
    o.parts = HERD_ENGINE_CHAT;
    o.chat_template = "/nonexistent/template.jinja";
    assert_int_not_equal(herd_engine_open(&o, &e, &err), HERD_OK);
    assert_null(e);
}

struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool ready;
};

static void wake(void *arg) {
    struct waiter *w = arg;
    pthread_mutex_lock(&w->lock);
    w->ready = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

/* Greedy tokens of prompt through the engine's scheduler. */
static uint32_t generate_scheduled(const int32_t *prompt, uint32_t n_prompt, uint32_t n, int32_t *out) {
    char path[512];
    model_path(path, sizeof path);
    struct herd_engine_options o;
    herd_engine_default_options(&o);
    o.model_path = path;
    o.n_ctx = 128;
    o.parts = HERD_ENGINE_SCHEDULER;
    struct herd_engine *e = open_ok(&o);
    struct herd_gen_params gp;
    herd_gen_default_params(&gp);
    gp.max_tokens = n;
    gp.ignore_eos = true;
    gp.sampling.temperature = 0;
    struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
    struct herd_error err = {0};
    struct herd_request *r = herd_request_create(prompt, n_prompt, &gp, wake, &w, &err);
    assert_non_null(r);
    assert_int_equal(herd_sched_submit(herd_engine_sched(e), r, &err), HERD_OK);
    uint32_t got = 0;
    struct herd_event ev[8];
    while (!herd_request_done(r)) {
        size_t k = herd_request_poll(r, ev, 8);
        for (size_t i = 0; i < k; i++)
            if (ev[i].token >= 0 && got < n) out[got++] = ev[i].token;
        if (k == 0) {
            pthread_mutex_lock(&w.lock);
            while (!w.ready) pthread_cond_wait(&w.cond, &w.lock);
            w.ready = false;
            pthread_mutex_unlock(&w.lock);
        }
    }
    herd_request_set_notify(r, NULL, NULL);
    herd_request_release(r);
    herd_engine_close(e);
    return got;
}

/* The same by hand: one sequence on the engine's context, argmax. */
static void generate_by_hand(const int32_t *prompt, uint32_t n_prompt, uint32_t n, int32_t *out) {
    char path[512];
    model_path(path, sizeof path);
    struct herd_engine_options o;
    herd_engine_default_options(&o);
    o.model_path = path;
    o.n_ctx = 128;
    o.max_outputs = 1;
    struct herd_engine *e = open_ok(&o);
    struct herd_context *ctx = herd_engine_context(e);
    const uint32_t V = (uint32_t)herd_engine_model(e)->desc.n_vocab;
    struct herd_error err = {0};
    int32_t s;
    assert_int_equal(herd_kv_seq_new(ctx->kv, &s, &err), HERD_OK);
    uint32_t pos[64];
    int32_t seq[64];
    for (uint32_t i = 0; i < n_prompt; i++) pos[i] = i, seq[i] = s;
    struct herd_batch b = {n_prompt, prompt, pos, seq, NULL};
    assert_int_equal(herd_decode(ctx, &b, &err), HERD_OK);
    for (uint32_t t = 0; t < n; t++) {
        const float *row = herd_context_logits(ctx, 0);
        int32_t best = 0;
        for (uint32_t v = 1; v < V; v++)
            if (row[v] > row[best]) best = (int32_t)v;
        out[t] = best;
        uint32_t p = n_prompt + t;
        struct herd_batch one = {1, &out[t], &p, &s, NULL};
        assert_int_equal(herd_decode(ctx, &one, &err), HERD_OK);
    }
    herd_engine_close(e);
}

static void test_scheduled_equals_by_hand(void **state) {
    (void)state;
    const int32_t prompt[] = {1, 403, 407, 261};
    int32_t a[24], b[24];
    assert_int_equal(generate_scheduled(prompt, 4, 24, a), 24);
    generate_by_hand(prompt, 4, 24, b);
    assert_memory_equal(a, b, sizeof a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parts),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_scheduled_equals_by_hand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
