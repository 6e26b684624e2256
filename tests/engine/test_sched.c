/* The scheduler on the default model (stories260K): every request's output
 * is what it would be alone, however requests are batched, chunked,
 * forked, preempted or prioritised; stop strings, lengths, cancellation,
 * the queue bound and the context check. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <unistd.h>

#include "base/timing.h"
#include "engine/block_feed.h"
#include "engine/sched.h"
#include "engine/stop_match.h"
#include "model/forward.h"
#include "model/model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

struct env {
    struct herd_model *m;
    struct herd_context *ctx;
    struct herd_vocab *v;
    struct herd_tokenizer *tk;
    struct herd_sched *s;
};

/* Scheduler aging and background step size for the next env_open
 * (test_aging lowers the one, test_background_alone the other). */
static double g_aging_s = 10.0;
static uint32_t g_background_tokens = 64;

static void env_open(struct env *e, uint32_t kv_tokens, uint32_t max_seqs, uint32_t batch_tokens, uint32_t max_queue) {
    struct herd_error err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", HERD_SOURCE_DIR);
    if (herd_model_load(path, &e->m, &err) != HERD_OK) fail_msg("%s", err.msg);
    struct herd_context_params p;
    herd_context_default_params(&p);
    p.n_threads = 2;
    p.kv_tokens = kv_tokens;
    p.n_ctx = 256;
    p.max_seqs = max_seqs;
    if (herd_context_create(e->m, &p, &e->ctx, &err) != HERD_OK) fail_msg("%s", err.msg);
    if (herd_vocab_load(e->m->gguf, &e->v, &err) != HERD_OK) fail_msg("%s", err.msg);
    if (herd_tokenizer_create(e->v, &e->tk, &err) != HERD_OK) fail_msg("%s", err.msg);
    struct herd_sched_params sp;
    herd_sched_default_params(&sp);
    sp.batch_tokens = batch_tokens;
    sp.max_queue = max_queue;
    sp.aging_s = g_aging_s;
    sp.background_tokens = g_background_tokens;
    if (herd_sched_create(e->ctx, e->v, &sp, &e->s, &err) != HERD_OK) fail_msg("%s", err.msg);
}

static void env_close(struct env *e) {
    herd_sched_destroy(e->s);
    herd_tokenizer_destroy(e->tk);
    herd_vocab_destroy(e->v);
    herd_context_destroy(e->ctx);
    herd_model_destroy(e->m);
}

/* What one request produced: per choice, its text and finish reason. */
struct result {
    char text[HERD_MAX_CHOICES][4096];
    size_t len[HERD_MAX_CHOICES];
    int32_t tokens[HERD_MAX_CHOICES][256];
    uint32_t n_tokens[HERD_MAX_CHOICES];
    enum herd_finish finish[HERD_MAX_CHOICES];
    uint32_t n_events;
};

static struct herd_request *make(struct env *e, const char *prompt, const struct herd_gen_params *gp) {
    int32_t ids[512];
    uint32_t n = 0;
    struct herd_error err = {0};
    if (herd_tokenize(e->tk, prompt, strlen(prompt), HERD_TOK_ADD_SPECIAL, ids, 512, &n, &err) != HERD_OK)
        fail_msg("%s", err.msg);
    struct herd_request *r = herd_request_create(ids, n, gp, NULL, NULL, &err);
    if (!r) fail_msg("%s", err.msg);
    return r;
}

/* Polls r until done (bounded: 60 s). */
static void collect(struct herd_request *r, struct result *out) {
    memset(out, 0, sizeof *out);
    struct herd_event ev[64];
    double t0 = herd_time_now_s();
    while (!herd_request_done(r)) {
        size_t n = herd_request_poll(r, ev, 64);
        for (size_t i = 0; i < n; i++) {
            uint32_t c = ev[i].choice;
            assert_true(out->len[c] + ev[i].text_len < sizeof out->text[c]);
            memcpy(out->text[c] + out->len[c], ev[i].text, ev[i].text_len);
            out->len[c] += ev[i].text_len;
            if (ev[i].token >= 0 && out->n_tokens[c] < 256) out->tokens[c][out->n_tokens[c]++] = ev[i].token;
            if (ev[i].finish) out->finish[c] = ev[i].finish;
            out->n_events++;
        }
        if (!n) usleep(200);
        if (herd_time_now_s() - t0 > 60) fail_msg("request did not finish in 60 s");
    }
}

static void run_one(struct env *e, const char *prompt, const struct herd_gen_params *gp, struct result *out) {
    struct herd_request *r = make(e, prompt, gp);
    struct herd_error err = {0};
    if (herd_sched_submit(e->s, r, &err) != HERD_OK) fail_msg("%s", err.msg);
    collect(r, out);
    herd_request_release(r);
}

static void wait_idle(struct env *e) {
    struct herd_sched_status st;
    for (int i = 0; i < 2000; i++) {
        herd_sched_status(e->s, &st);
        /* idle: every block is free or only held by the prefix cache */
        if (st.running == 0 && st.waiting == 0 && st.kv_blocks_free + st.prefix_cached_blocks == st.kv_blocks_total)
            return;
        usleep(1000);
    }
    fail_msg("scheduler not idle: %u running, %u waiting, %u/%u blocks free", st.running, st.waiting, st.kv_blocks_free,
             st.kv_blocks_total);
}

static const char *const prompts[] = {
    "Once upon a time",
    "The little dog",
    "Lily wanted to play with her friend Tom in the park, but it",
    "One day",
    "The sun was shining and the birds were singing. A girl named",
    "Tim had a red ball",
    "There was a big tree",
    "Mom said",
};
#define N_PROMPTS (sizeof prompts / sizeof prompts[0])

static void greedy(struct herd_gen_params *gp, uint32_t max_tokens) {
    herd_gen_default_params(gp);
    gp->max_tokens = max_tokens;
    gp->sampling.temperature = 0;
}

/* Alone, then all at once: identical text and tokens. */
static void test_concurrent_equals_alone(void **state) {
    (void)state;
    struct env e;
    env_open(&e, 4096, 16, 64, 64);
    struct herd_gen_params gp;
    greedy(&gp, 48);
    static struct result alone[N_PROMPTS], together[N_PROMPTS];
    for (size_t i = 0; i < N_PROMPTS; i++) run_one(&e, prompts[i], &gp, &alone[i]);
    struct herd_request *r[N_PROMPTS];
    struct herd_error err = {0};
    for (size_t i = 0; i < N_PROMPTS; i++) {
        r[i] = make(&e, prompts[i], &gp);
        assert_int_equal(herd_sched_submit(e.s, r[i], &err), HERD_OK);
    }
    for (size_t i = 0; i < N_PROMPTS; i++) {
        collect(r[i], &together[i]);
        herd_request_release(r[i]);
        assert_int_equal(together[i].n_tokens[0], alone[i].n_tokens[0]);
        assert_memory_equal(together[i].tokens[0], alone[i].tokens[0], alone[i].n_tokens[0] * sizeof(int32_t));
        assert_int_equal(together[i].len[0], alone[i].len[0]);
        assert_memory_equal(together[i].text[0], alone[i].text[0], alone[i].len[0]);
        assert_int_equal(together[i].finish[0], alone[i].finish[0]);
    }
    assert_true(alone[0].len[0] > 20);
    wait_idle(&e);
    env_close(&e);
}

/* n choices share the prompt: greedy choices are all the single answer;
 * sampled choice i is the single answer with seed + i. */
static void test_choices(void **state) {
    (void)state;
    struct env e;
    env_open(&e, 4096, 16, 64, 64);
    struct herd_gen_params gp;
    greedy(&gp, 32);
    struct result one, many;
    run_one(&e, prompts[2], &gp, &one);
    gp.n = 4;
    run_one(&e, prompts[2], &gp, &many);
    for (int c = 0; c < 4; c++) {
        assert_int_equal(many.len[c], one.len[0]);
        assert_memory_equal(many.text[c], one.text[0], one.len[0]);
    }
    herd_gen_default_params(&gp);
    gp.max_tokens = 32;
    gp.sampling.temperature = 1.0f;
    gp.sampling.seed = 42;
    gp.n = 3;
    run_one(&e, prompts[0], &gp, &many);
    bool differ = false;
    for (uint32_t c = 0; c < 3; c++) {
        struct herd_gen_params g1 = gp;
        g1.n = 1;
        g1.sampling.seed = 42 + c;
        run_one(&e, prompts[0], &g1, &one);
        assert_int_equal(many.len[c], one.len[0]);
        assert_memory_equal(many.text[c], one.text[0], one.len[0]);
        if (c && (many.len[c] != many.len[0] || memcmp(many.text[c], many.text[0], many.len[0]))) differ = true;
    }
    assert_true(differ); /* different seeds, different stories */
    wait_idle(&e);
    env_close(&e);
}

/* A stop string found in the greedy text ends the output right before it
 * (matched across tokens, never emitted). */
static void test_stop_strings(void **state) {
    (void)state;
    struct env e;
    env_open(&e, 4096, 16, 64, 64);
    struct herd_gen_params gp;
    greedy(&gp, 64);
    struct result full, cut;
    run_one(&e, prompts[0], &gp, &full);
    assert_int_equal(full.finish[0], HERD_FINISH_LENGTH);
    /* a stop made of the end of one word and the start of the next */
    size_t at = full.len[0] / 2;
    while (at < full.len[0] && full.text[0][at] != ' ') at++;
    assert_true(at + 3 < full.len[0]);
    char stop[8] = {full.text[0][at - 2], full.text[0][at - 1], ' ', full.text[0][at + 1], 0};
    const char *first = memmem(full.text[0], full.len[0], stop, strlen(stop));
    gp.stop[0] = "a string that never appears";
    gp.stop[1] = stop;
    gp.n_stop = 2;
    run_one(&e, prompts[0], &gp, &cut);
    assert_int_equal(cut.finish[0], HERD_FINISH_STOP);
    assert_int_equal(cut.len[0], (size_t)(first - full.text[0]));
    assert_memory_equal(cut.text[0], full.text[0], cut.len[0]);
    wait_idle(&e);
    env_close(&e);
}

/* A resumed request (gen params resume_tokens / resume_skip_bytes): the
 * prompt's last k tokens are output already, so their text starts the
 * output; skipped bytes are not emitted; no new tokens allowed, or a stop
 * string inside them, ends it at once; the feed of the prefix cache's
 * changes meanwhile stays off. */
static struct herd_request *make_resumed(struct env *e, const struct result *full, uint32_t k, uint64_t skip,
                                         struct herd_gen_params gp) {
    int32_t ids[512];
    uint32_t n = 0;
    struct herd_error err = {0};
    if (herd_tokenize(e->tk, prompts[0], strlen(prompts[0]), HERD_TOK_ADD_SPECIAL, ids, 512, &n, &err) != HERD_OK)
        fail_msg("%s", err.msg);
    memcpy(ids + n, full->tokens[0], k * sizeof *ids);
    gp.resume_tokens = k;
    gp.resume_skip_bytes = skip;
    gp.max_tokens -= k;
    struct herd_request *r = herd_request_create(ids, n + k, &gp, NULL, NULL, &err);
    if (!r) fail_msg("%s", err.msg);
    return r;
}

static void run_resumed(struct env *e, const struct result *full, uint32_t k, uint64_t skip,
                        const struct herd_gen_params *gp, struct result *out) {
    struct herd_request *r = make_resumed(e, full, k, skip, *gp);
    struct herd_error err = {0};
    if (herd_sched_submit(e->s, r, &err) != HERD_OK) fail_msg("%s", err.msg);
    collect(r, out);
    struct herd_request_stats st;
    herd_request_stats(r, &st);
    assert_int_equal(st.completion_tokens, k + out->n_tokens[0]); /* the resumed ones count as output */
    herd_request_release(r);
}

static void test_resume(void **state) {
    (void)state;
    struct env e;
    env_open(&e, 4096, 16, 64, 64);
    struct herd_gen_params gp;
    greedy(&gp, 24);
    struct result full, res;
    run_one(&e, prompts[0], &gp, &full);
    assert_int_equal(full.n_tokens[0], 24);
    for (uint32_t k = 1; k <= 24; k += 5) {
        run_resumed(&e, &full, k, 0, &gp, &res); /* nothing skipped: the whole text */
        assert_int_equal(res.len[0], full.len[0]);
        assert_memory_equal(res.text[0], full.text[0], full.len[0]);
        assert_int_equal(res.n_tokens[0], 24 - k);
        assert_memory_equal(res.tokens[0], full.tokens[0] + k, (24 - k) * sizeof(int32_t));
        assert_int_equal(res.finish[0], HERD_FINISH_LENGTH);
        run_resumed(&e, &full, k, 5, &gp, &res); /* the first 5 bytes skipped */
        assert_int_equal(res.len[0], full.len[0] - 5);
        assert_memory_equal(res.text[0], full.text[0] + 5, full.len[0] - 5);
    }
    /* every token resumed: the text, "length", no step */
    run_resumed(&e, &full, 24, 0, &gp, &res);
    assert_int_equal(res.n_tokens[0], 0);
    assert_int_equal(res.len[0], full.len[0]);
    assert_int_equal(res.finish[0], HERD_FINISH_LENGTH);
    /* a stop string inside the resumed text: "stop" at once, the text before it */
    char stop[4] = {full.text[0][6], full.text[0][7], full.text[0][8], 0};
    const char *at = memmem(full.text[0], full.len[0], stop, 3);
    gp.stop[0] = stop;
    gp.n_stop = 1;
    run_resumed(&e, &full, 12, 0, &gp, &res);
    assert_int_equal(res.finish[0], HERD_FINISH_STOP);
    assert_int_equal(res.n_tokens[0], 0);
    assert_int_equal(res.len[0], (size_t)(at - full.text[0]));
    /* refused: several choices, or no prompt before the resumed tokens */
    struct herd_error err = {0};
    gp.n_stop = 0;
    gp.n = 2;
    int32_t ids[2] = {1, 2};
    gp.resume_tokens = 1;
    assert_null(herd_request_create(ids, 2, &gp, NULL, NULL, &err));
    gp.n = 1;
    gp.resume_tokens = 2;
    assert_null(herd_request_create(ids, 2, &gp, NULL, NULL, &err));
    assert_false(herd_block_feed_on(herd_sched_block_feed(e.s)));
    wait_idle(&e);
    env_close(&e);
}

static void test_stop_match_unit(void **state) {
    (void)state;
    const char *stops[] = {"END", "\n\n"};
    struct herd_stop_match m;
    herd_stop_match_init(&m, stops, 2);
    struct herd_buf out;
    herd_buf_init(&out, 1 << 20);
    assert_int_equal(herd_stop_match_push(&m, "abc E", 5, &out), HERD_STOP_MORE);
    assert_int_equal(out.len, 4); /* "E" held back */
    assert_int_equal(herd_stop_match_push(&m, "N", 1, &out), HERD_STOP_MORE);
    assert_int_equal(out.len, 4);
    assert_int_equal(herd_stop_match_push(&m, "x\n", 2, &out), HERD_STOP_MORE); /* "EN" was not a stop */
    assert_int_equal(out.len, 7);
    assert_memory_equal(out.data, "abc ENx", 7);
    assert_int_equal(herd_stop_match_push(&m, "\ntail", 5, &out), HERD_STOP_MATCHED);
    assert_int_equal(out.len, 7);
    herd_stop_match_cleanup(&m);
    herd_stop_match_init(&m, stops, 2);
    out.len = 0;
    assert_int_equal(herd_stop_match_push(&m, "the EN", 6, &out), HERD_STOP_MORE);
    assert_true(herd_stop_match_flush(&m, &out));
    assert_int_equal(out.len, 6);
    herd_stop_match_cleanup(&m);
    herd_buf_cleanup(&out);
}

/* A small KV pool forces preemption; every output is still exactly what
 * it is alone. */
static void test_preemption_keeps_outputs(void **state) {
    (void)state;
    struct env big, small;
    env_open(&big, 4096, 16, 64, 64);
    struct herd_gen_params gp;
    greedy(&gp, 100);
    static struct result alone[N_PROMPTS], squeezed[N_PROMPTS];
    for (size_t i = 0; i < N_PROMPTS; i++) run_one(&big, prompts[i], &gp, &alone[i]);
    env_close(&big);
    /* 8 requests of ~110 positions in a pool of 320: at most ~2-3 fit */
    env_open(&small, 320, 16, 64, 64);
    struct herd_request *r[N_PROMPTS];
    struct herd_error err = {0};
    for (size_t i = 0; i < N_PROMPTS; i++) {
        gp.priority = (int32_t)(i % 3);
        r[i] = make(&small, prompts[i], &gp);
        assert_int_equal(herd_sched_submit(small.s, r[i], &err), HERD_OK);
    }
    for (size_t i = 0; i < N_PROMPTS; i++) {
        collect(r[i], &squeezed[i]);
        herd_request_release(r[i]);
        assert_int_equal(squeezed[i].len[0], alone[i].len[0]);
        assert_memory_equal(squeezed[i].text[0], alone[i].text[0], alone[i].len[0]);
    }
    struct herd_sched_status st;
    herd_sched_status(small.s, &st);
    fprintf(stderr, "preemptions: %llu in %llu steps\n", (unsigned long long)st.preemptions,
            (unsigned long long)st.steps);
    assert_true(st.preemptions > 0);
    wait_idle(&small);
    env_close(&small);
}

/* One sequence slot: a high-priority request arriving while a low one runs
 * takes the slot (the low one is preempted) and finishes first; the low
 * one's output is unchanged. */
static void test_priority(void **state) {
    (void)state;
    struct env e;
    env_open(&e, 4096, 1, 64, 64);
    struct herd_gen_params gp;
    greedy(&gp, 120);
    struct result low_alone, low, high;
    run_one(&e, prompts[0], &gp, &low_alone);
    gp.priority = 10;
    struct herd_request *rl = make(&e, prompts[0], &gp);
    struct herd_error err = {0};
    assert_int_equal(herd_sched_submit(e.s, rl, &err), HERD_OK);
    struct herd_event ev[8];
    while (herd_request_poll(rl, ev, 8) == 0) usleep(100); /* it is running */
    gp.priority = -5;
    gp.max_tokens = 20;
    struct herd_request *rh = make(&e, prompts[1], &gp);
    assert_int_equal(herd_sched_submit(e.s, rh, &err), HERD_OK);
    collect(rh, &high);
    struct herd_request_stats sh, sl;
    herd_request_stats(rh, &sh);
    collect(rl, &low);
    herd_request_stats(rl, &sl);
    assert_true(sh.finished_s < sl.finished_s);
    assert_true(sl.preemptions >= 1);
    /* the first events were polled away above: compare the tail */
    assert_true(low.len[0] <= low_alone.len[0]);
    assert_memory_equal(low.text[0], low_alone.text[0] + (low_alone.len[0] - low.len[0]), low.len[0]);
    herd_request_release(rh);
    herd_request_release(rl);
    wait_idle(&e);
    env_close(&e);
}

static void test_cancel_queue_and_limits(void **state) {
    (void)state;
    struct env e;
    env_open(&e, 4096, 2, 64, 3);
    struct herd_gen_params gp;
    greedy(&gp, 200);
    gp.ignore_eos = true;
    struct herd_error err = {0};
    /* too long for the context (256) */
    gp.max_tokens = 250;
    struct herd_request *big = make(&e, prompts[2], &gp);
    assert_int_equal(herd_sched_submit(e.s, big, &err), HERD_E_INVALID);
    assert_non_null(strstr(err.msg, "context"));
    herd_request_release(big);
    gp.max_tokens = 200;
    /* the queue holds 3: with slow steps some submits are refused */
    struct herd_request *r[12];
    int accepted = 0, refused = 0;
    for (int i = 0; i < 12; i++) {
        r[i] = make(&e, prompts[i % N_PROMPTS], &gp);
        enum herd_status rc = herd_sched_submit(e.s, r[i], &err);
        if (rc == HERD_OK)
            accepted++;
        else if (rc == HERD_E_AGAIN)
            refused++;
        else
            fail_msg("%s", err.msg);
        if (rc != HERD_OK) {
            herd_request_release(r[i]);
            r[i] = NULL;
        }
    }
    assert_true(refused > 0);
    assert_true(accepted >= 3);
    /* cancel them all: everything is freed within a few steps */
    for (int i = 0; i < 12; i++)
        if (r[i]) herd_request_cancel(r[i]);
    for (int i = 0; i < 12; i++) {
        if (!r[i]) continue;
        struct result res;
        collect(r[i], &res);
        assert_int_equal(res.finish[0], HERD_FINISH_CANCELLED);
        herd_request_release(r[i]);
    }
    wait_idle(&e);
    /* draining refuses new work */
    herd_sched_drain(e.s);
    struct herd_request *late = make(&e, prompts[0], &gp);
    assert_int_equal(herd_sched_submit(e.s, late, &err), HERD_E_UNAVAILABLE);
    herd_request_release(late);
    env_close(&e);
}

/* A request released by its client before it ends is cancelled and freed
 * by the scheduler (no leak under ASan), and destroying the scheduler with
 * work in flight ends that work. */
static void test_release_and_shutdown(void **state) {
    (void)state;
    struct env e;
    env_open(&e, 4096, 4, 64, 16);
    struct herd_gen_params gp;
    greedy(&gp, 200);
    gp.ignore_eos = true;
    struct herd_error err = {0};
    for (int i = 0; i < 4; i++) {
        struct herd_request *r = make(&e, prompts[i], &gp);
        assert_int_equal(herd_sched_submit(e.s, r, &err), HERD_OK);
        if (i % 2) herd_request_cancel(r);
        herd_request_release(r);
    }
    usleep(20000);
    env_close(&e);
}

/* The second request with the same long prompt starts from the cached
 * blocks and answers identically; a different continuation of a shared
 * prefix reuses the shared part only. */
static void test_prefix_cache(void **state) {
    (void)state;
    struct env e;
    env_open(&e, 4096, 16, 64, 64);
    struct herd_gen_params gp;
    greedy(&gp, 24);
    const char *p =
        "Lily and Tom went to the park to play with the ball. They ran and jumped and laughed. Then the sun "
        "went down and it was time to go home. Mom made soup for dinner and";
    struct result a, b;
    struct herd_request *r = make(&e, p, &gp);
    struct herd_error err = {0};
    assert_int_equal(herd_sched_submit(e.s, r, &err), HERD_OK);
    collect(r, &a);
    struct herd_request_stats sa;
    herd_request_stats(r, &sa);
    herd_request_release(r);
    r = make(&e, p, &gp);
    assert_int_equal(herd_sched_submit(e.s, r, &err), HERD_OK);
    collect(r, &b);
    struct herd_request_stats sb;
    herd_request_stats(r, &sb);
    herd_request_release(r);
    assert_int_equal(sa.cached_tokens, 0);
    assert_true(sb.cached_tokens >= 16 * ((sb.prompt_tokens - 1) / 16) && sb.cached_tokens > 0);
    assert_int_equal(a.len[0], b.len[0]);
    assert_memory_equal(a.text[0], b.text[0], a.len[0]);
    struct herd_sched_status st;
    herd_sched_status(e.s, &st);
    /* every full block of both prompts is one query, also the first
     * prompt's that all missed: hits over queries is one half, not the
     * second prompt's hits over the first's one failed lookup plus them */
    const uint64_t nb = (sb.prompt_tokens - 1) / 16;
    assert_true(nb > 0);
    assert_int_equal(st.prefix_queries, 2 * nb);
    assert_int_equal(st.prefix_hits, nb);
    /* cached blocks give way when the pool is needed: a small pool still
     * runs everything (covered by test_preemption_keeps_outputs too) */
    wait_idle(&e);
    env_close(&e);
}

/* Background work (batch jobs) fills every slot; a foreground request
 * still gets in (a background one gives way) and answers as it would
 * alone, and the background ones all finish with their own answers. */
static void test_background(void **state) {
    (void)state;
    struct env e;
    env_open(&e, 4096, 4, 64, 64);
    struct herd_gen_params gp;
    greedy(&gp, 60);
    struct result fg_alone, fg, bg_alone[4], bg[4];
    run_one(&e, prompts[2], &gp, &fg_alone);
    gp.max_tokens = 150;
    gp.ignore_eos = true;
    gp.priority = HERD_PRIORITY_BACKGROUND;
    for (int i = 0; i < 4; i++) run_one(&e, prompts[4 + i], &gp, &bg_alone[i]);
    struct herd_request *rb[4];
    struct herd_error err = {0};
    for (int i = 0; i < 4; i++) {
        rb[i] = make(&e, prompts[4 + i], &gp);
        assert_int_equal(herd_sched_submit(e.s, rb[i], &err), HERD_OK);
    }
    struct herd_sched_status st;
    for (int i = 0; i < 5000; i++) { /* all four generating */
        herd_sched_status(e.s, &st);
        if (st.running == 4 && st.waiting == 0) break;
        usleep(1000);
    }
    assert_int_equal(st.running, 4);
    greedy(&gp, 60);
    struct herd_request *rf = make(&e, prompts[2], &gp);
    assert_int_equal(herd_sched_submit(e.s, rf, &err), HERD_OK);
    collect(rf, &fg);
    assert_int_equal(fg.len[0], fg_alone.len[0]);
    assert_memory_equal(fg.text[0], fg_alone.text[0], fg.len[0]);
    struct herd_request_stats sf;
    herd_request_stats(rf, &sf);
    uint32_t preempted = 0;
    for (int i = 0; i < 4; i++) {
        collect(rb[i], &bg[i]);
        assert_int_equal(bg[i].len[0], bg_alone[i].len[0]);
        assert_memory_equal(bg[i].text[0], bg_alone[i].text[0], bg[i].len[0]);
        struct herd_request_stats sb;
        herd_request_stats(rb[i], &sb);
        preempted += sb.preemptions;
        assert_true(sf.finished_s < sb.finished_s); /* 60 tokens against 150: the foreground is not held back */
        herd_request_release(rb[i]);
    }
    assert_true(preempted >= 1); /* the slots were full: one gave way */
    herd_request_release(rf);
    wait_idle(&e);
    env_close(&e);
}

/* However long background work waits, it never ages past foreground
 * work (which ages past other foreground work as test_aging shows). */
static void test_background_never_ages_into_foreground(void **state) {
    (void)state;
    g_aging_s = 1e-9; /* a millisecond of waiting: a million levels */
    struct env e;
    env_open(&e, 4096, 1, 64, 64);
    g_aging_s = 10.0;
    struct herd_gen_params gp;
    greedy(&gp, 200);
    gp.ignore_eos = true;
    struct herd_error err = {0};
    struct herd_request *first = make(&e, prompts[0], &gp); /* holds the one slot */
    assert_int_equal(herd_sched_submit(e.s, first, &err), HERD_OK);
    gp.priority = HERD_PRIORITY_BACKGROUND;
    struct herd_request *bg = make(&e, prompts[1], &gp);
    assert_int_equal(herd_sched_submit(e.s, bg, &err), HERD_OK);
    usleep(3000); /* 3 ms: without the floor it would now rank above priority 1,000,000 */
    gp.priority = 1000000;
    struct herd_request *fg = make(&e, prompts[3], &gp);
    assert_int_equal(herd_sched_submit(e.s, fg, &err), HERD_OK);
    struct result res;
    collect(bg, &res);
    struct herd_request_stats sb, sf;
    herd_request_stats(bg, &sb);
    herd_request_stats(fg, &sf);
    assert_true(sf.admitted_s > 0 && sf.admitted_s <= sb.admitted_s);
    herd_request_release(first);
    herd_request_release(bg);
    collect(fg, &res);
    herd_request_release(fg);
    wait_idle(&e);
    env_close(&e);
}

/* Aging: a low-priority request that has waited long enough goes before
 * high-priority requests that arrived after it (nothing starves). One
 * slot, aging of 10 ms per level: after 0.2 s of waiting, priority 20 is
 * worth 0. Priority-0 requests keep arriving whenever fewer than three
 * wait, so the queue never empties whatever the build's speed: without
 * aging the low one would wait for every one of them. */
static void test_aging(void **state) {
    (void)state;
    g_aging_s = 0.01;
    struct env e;
    env_open(&e, 4096, 1, 64, 256);
    g_aging_s = 10.0;
    struct herd_gen_params gp;
    greedy(&gp, 200);
    gp.ignore_eos = true;
    struct herd_error err = {0};
    gp.priority = 20;
    struct herd_request *low = make(&e, prompts[1], &gp);
    gp.priority = 0;
    enum { ARRIVALS = 60 };
    struct herd_request *hi[ARRIVALS];
    uint32_t n_hi = 0;
    struct herd_request_stats sl = {0}, sh;
    /* bounded: 60 arrivals and 300 s */
    double t0 = herd_time_now_s();
    while (herd_time_now_s() - t0 < 300) {
        herd_request_stats(low, &sl);
        if (sl.admitted_s > 0) break;
        struct herd_sched_status st;
        herd_sched_status(e.s, &st);
        if (st.waiting < 3 && n_hi < ARRIVALS) {
            hi[n_hi] = make(&e, prompts[n_hi % N_PROMPTS], &gp);
            assert_int_equal(herd_sched_submit(e.s, hi[n_hi], &err), HERD_OK);
            if (++n_hi == 2) assert_int_equal(herd_sched_submit(e.s, low, &err), HERD_OK);
        }
        usleep(1000);
    }
    assert_true(sl.admitted_s > 0);
    /* the newest arrival, queued before the low one was admitted, still waits */
    herd_request_stats(hi[n_hi - 1], &sh);
    printf("aging: the low request was admitted with %u priority-0 arrivals submitted\n", n_hi);
    assert_true(n_hi < ARRIVALS);
    assert_true(sh.admitted_s == 0 || sl.admitted_s < sh.admitted_s);
    for (uint32_t i = 0; i < n_hi; i++) {
        herd_request_cancel(hi[i]);
        herd_request_release(hi[i]);
    }
    herd_request_cancel(low);
    herd_request_release(low);
    wait_idle(&e);
    env_close(&e);
}

/* Status counters once the scheduler is idle (its last step counted). */
static void idle_status(struct env *e, struct herd_sched_status *st) {
    wait_idle(e);
    herd_sched_status(e->s, st);
}

static uint32_t div_up(uint32_t a, uint32_t b) { return (a + b - 1) / b; }

/* A prompt of well over 64 tokens (two steps of batch_tokens 64 or more). */
static const char long_prompt[] =
    "Lily and Tom went to the park to play with the ball. They ran and jumped and laughed. Then the sun went down "
    "and it was time to go home. Mom made soup for dinner and they ate it all. After dinner Tom read a book about "
    "a big red truck and Lily drew a picture of a cat. Then they went to bed and";

/* Background work alone (a batch on an idle server) runs to the end, in
 * steps of at most background_tokens: its prompt takes one step per 8
 * tokens, then one per token; its answer is the foreground one's. */
static void test_background_alone(void **state) {
    (void)state;
    g_background_tokens = 8;
    struct env e;
    env_open(&e, 4096, 4, 64, 64);
    g_background_tokens = 64;
    struct herd_gen_params gp;
    greedy(&gp, 40);
    gp.ignore_eos = true;
    gp.priority = HERD_PRIORITY_BACKGROUND;
    struct herd_sched_status st0, st1;
    idle_status(&e, &st0);
    struct herd_request *r = make(&e, long_prompt, &gp);
    struct herd_error err = {0};
    assert_int_equal(herd_sched_submit(e.s, r, &err), HERD_OK);
    struct result bg, fg;
    collect(r, &bg);
    struct herd_request_stats sr;
    herd_request_stats(r, &sr);
    herd_request_release(r);
    idle_status(&e, &st1);
    assert_int_equal(bg.finish[0], HERD_FINISH_LENGTH);
    assert_int_equal(bg.n_tokens[0], 40);
    assert_true(sr.prompt_tokens > 64);
    assert_int_equal(st1.steps - st0.steps, div_up(sr.prompt_tokens - sr.cached_tokens, 8) + 39);
    assert_int_equal(st1.background_paused_steps, 0); /* nothing to pause for */
    gp.priority = 0;
    run_one(&e, long_prompt, &gp, &fg);
    assert_int_equal(fg.n_tokens[0], 40);
    assert_memory_equal(bg.tokens[0], fg.tokens[0], 40 * sizeof(int32_t));
    assert_int_equal(bg.len[0], fg.len[0]);
    assert_memory_equal(bg.text[0], fg.text[0], fg.len[0]);
    wait_idle(&e);
    env_close(&e);
}

/* While background requests generate, a foreground prompt is computed in
 * steps of its own: full batch_tokens chunks (as on an idle server; with
 * three streams decoding, prefill_per_decode would allow ~4 tokens a
 * step), each a step the background work sat out. Its answer is its
 * answer alone; the background ones carry on to theirs. */
static void test_background_pauses_for_foreground_prompt(void **state) {
    (void)state;
    struct env e;
    /* steps of 1 ms or more: the background requests' 150 steps outlast
     * the foreground one's ~25 even if this thread is descheduled a while */
    setenv("HERD_TEST_STEP_DELAY_MS", "1", 1);
    env_open(&e, 4096, 4, 64, 64);
    unsetenv("HERD_TEST_STEP_DELAY_MS");
    struct herd_gen_params gp;
    greedy(&gp, 150);
    gp.ignore_eos = true;
    gp.priority = HERD_PRIORITY_BACKGROUND;
    struct herd_request *rb[3];
    struct herd_error err = {0};
    for (int i = 0; i < 3; i++) {
        rb[i] = make(&e, prompts[4 + i], &gp);
        assert_int_equal(herd_sched_submit(e.s, rb[i], &err), HERD_OK);
    }
    struct herd_event ev[8];
    for (int i = 0; i < 3; i++) /* all three generating (the events stay queued: only r's are polled) */
        while (!herd_request_poll(rb[i], ev, 1)) usleep(100);
    struct herd_sched_status st0, st1;
    herd_sched_status(e.s, &st0);
    greedy(&gp, 20);
    struct herd_request *rf = make(&e, long_prompt, &gp);
    assert_int_equal(herd_sched_submit(e.s, rf, &err), HERD_OK);
    struct result fg, fg_alone;
    collect(rf, &fg);
    struct herd_request_stats sf;
    herd_request_stats(rf, &sf);
    herd_request_release(rf);
    herd_sched_status(e.s, &st1);
    assert_int_equal(sf.preemptions, 0);
    assert_true(sf.prompt_tokens - sf.cached_tokens > 64);
    /* 150 tokens each: the background requests are still running (the
     * foreground request asked for 20) */
    assert_true(st1.running >= 3);
    assert_int_equal(st1.background_paused_steps - st0.background_paused_steps,
                     div_up(sf.prompt_tokens - sf.cached_tokens, 64));
    struct result bg[3], bg_alone;
    for (int i = 0; i < 3; i++) {
        collect(rb[i], &bg[i]);
        herd_request_release(rb[i]);
    }
    /* the same requests alone (the prefix cache changes nothing) */
    run_one(&e, long_prompt, &gp, &fg_alone);
    assert_int_equal(fg.n_tokens[0], fg_alone.n_tokens[0]);
    assert_memory_equal(fg.tokens[0], fg_alone.tokens[0], fg.n_tokens[0] * sizeof(int32_t));
    assert_memory_equal(fg.text[0], fg_alone.text[0], fg_alone.len[0]);
    greedy(&gp, 150);
    gp.ignore_eos = true;
    for (int i = 0; i < 3; i++) {
        run_one(&e, prompts[4 + i], &gp, &bg_alone);
        /* the first event was polled away above: compare the tails */
        assert_int_equal(bg[i].n_tokens[0] + 1, bg_alone.n_tokens[0]);
        assert_memory_equal(bg[i].tokens[0], bg_alone.tokens[0] + 1, bg[i].n_tokens[0] * sizeof(int32_t));
    }
    wait_idle(&e);
    env_close(&e);
}

/* A foreground request with several choices, preempted by a higher one
 * after it had generated, comes back behind it with background requests
 * admitted right after it, whose reserved blocks fill the small pool. Its
 * choices' recomputation (prompt-like chunks) then has to preempt
 * background work: that sits out while it runs, so it would otherwise
 * never free a block, and both waited for ever. The interleaving depends
 * on timing, so 16 rounds with shifted arrivals; before the fix most
 * runs hung in one of them. Every answer is still its answer alone. */
static void test_background_squeeze(void **state) {
    (void)state;
    struct env big, e;
    env_open(&big, 4096, 16, 64, 64);
    struct herd_gen_params gp;
    greedy(&gp, 80);
    gp.ignore_eos = true;
    static struct result a_alone, b_alone, bg_alone[4], res;
    run_one(&big, prompts[0], &gp, &a_alone);
    run_one(&big, prompts[1], &gp, &b_alone);
    for (int i = 0; i < 4; i++) run_one(&big, prompts[4 + i], &gp, &bg_alone[i]);
    env_close(&big);
    for (int round = 0; round < 16; round++) {
        /* 20 blocks of 16: one request of 3 choices needs 16 of them */
        env_open(&e, 320, 8, 64, 64);
        struct herd_error err = {0};
        struct herd_request *rb[4], *ra, *rh;
        gp.priority = HERD_PRIORITY_BACKGROUND;
        gp.n = 1;
        for (int i = 0; i < 4; i++) {
            rb[i] = make(&e, prompts[4 + i], &gp);
            assert_int_equal(herd_sched_submit(e.s, rb[i], &err), HERD_OK);
        }
        usleep(1000 * (uint32_t)(round % 4));
        gp.priority = 0;
        gp.n = 3;
        ra = make(&e, prompts[0], &gp);
        assert_int_equal(herd_sched_submit(e.s, ra, &err), HERD_OK);
        usleep(1000 * (uint32_t)(round / 4));
        gp.priority = -5;
        gp.n = 1;
        rh = make(&e, prompts[1], &gp);
        assert_int_equal(herd_sched_submit(e.s, rh, &err), HERD_OK);
        collect(rh, &res);
        assert_memory_equal(res.text[0], b_alone.text[0], b_alone.len[0]);
        collect(ra, &res);
        for (int c = 0; c < 3; c++) assert_memory_equal(res.text[c], a_alone.text[0], a_alone.len[0]);
        for (int i = 0; i < 4; i++) {
            collect(rb[i], &res);
            assert_int_equal(res.len[0], bg_alone[i].len[0]);
            assert_memory_equal(res.text[0], bg_alone[i].text[0], bg_alone[i].len[0]);
            herd_request_release(rb[i]);
        }
        herd_request_release(ra);
        herd_request_release(rh);
        struct herd_sched_status st;
        idle_status(&e, &st);
        assert_true(st.preemptions > 0);
        env_close(&e);
    }
}

/* Two requests with one uncached prompt, submitted together: the second
 * waits for the blocks the first computes instead of computing them beside
 * it, so it finds every full block of the prompt in the cache. Prefill at 8
 * tokens a step keeps the first in its prompt for ~20 steps, well past the
 * second's submission: without the wait it found none or a few blocks. */
static void test_same_prefix_waits_for_the_first(void **state) {
    (void)state;
    struct env e;
    env_open(&e, 4096, 16, 8, 64);
    struct herd_gen_params gp;
    greedy(&gp, 8);
    gp.ignore_eos = true;
    const char *p =
        "Lily and Tom went to the park to play with the ball. They ran and jumped and laughed. Then the sun "
        "went down and it was time to go home. Mom made soup for dinner and they ate it all. After dinner "
        "Lily read a book about a big red dog and Tom played with his toy car on the floor until bed.";
    struct herd_request *a = make(&e, p, &gp), *b = make(&e, p, &gp);
    struct herd_error err = {0};
    assert_int_equal(herd_sched_submit(e.s, a, &err), HERD_OK);
    assert_int_equal(herd_sched_submit(e.s, b, &err), HERD_OK);
    struct result ra, rb;
    collect(a, &ra);
    collect(b, &rb);
    struct herd_request_stats sa, sb;
    herd_request_stats(a, &sa);
    herd_request_stats(b, &sb);
    herd_request_release(a);
    herd_request_release(b);
    assert_true(sb.prompt_tokens > 8 * 16);
    assert_int_equal(sa.cached_tokens, 0);
    assert_int_equal(sb.cached_tokens, 16 * ((sb.prompt_tokens - 1) / 16));
    assert_int_equal(ra.len[0], rb.len[0]);
    assert_memory_equal(ra.text[0], rb.text[0], ra.len[0]);
    wait_idle(&e);
    env_close(&e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stop_match_unit),
        cmocka_unit_test(test_concurrent_equals_alone),
        cmocka_unit_test(test_choices),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_preemption_keeps_outputs),
        cmocka_unit_test(test_priority),
        cmocka_unit_test(test_cancel_queue_and_limits),
        cmocka_unit_test(test_release_and_shutdown),
        cmocka_unit_test(test_prefix_cache),
        cmocka_unit_test(test_same_prefix_waits_for_the_first),
        cmocka_unit_test(test_aging),
        cmocka_unit_test(test_background),
        cmocka_unit_test(test_background_never_ages_into_foreground),
        cmocka_unit_test(test_background_alone),
        cmocka_unit_test(test_background_pauses_for_foreground_prompt),
        cmocka_unit_test(test_background_squeeze),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
