/* The OpenAI API layer (src/api) without a socket: requests parse into
 * token ids and generation parameters or into errors naming the field, the
 * client-sized arrays are bounded and owned per request, and answers are
 * assembled from events into OpenAI's chunk and body shapes. Uses the
 * default model's vocabulary (stories260K, ChatML fallback template). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "herd/gguf.h"

static struct herd_gguf *g;
static struct herd_vocab *vocab;
static struct herd_tokenizer *tk;
static struct herd_chat_template *tmpl;
static struct herd_api_model model;
static const struct herd_api_limits lim = {.model_name = "tiny",
                                           .max_n = 4,
                                           .max_tokens_limit = 100,
                                           .max_stops = 2,
                                           .max_stop_bytes = 8,
                                           .max_logit_bias = 3,
                                           .max_messages = 3};

static int setup(void **state) {
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", HERD_SOURCE_DIR);
    struct herd_error err = {0};
    if (herd_gguf_open_file(path, &g, &err) != HERD_OK || herd_vocab_load(g, &vocab, &err) != HERD_OK ||
        herd_tokenizer_create(vocab, &tk, &err) != HERD_OK ||
        herd_chat_template_load(g, vocab, NULL, &tmpl, &err) != HERD_OK)
        return -1;
    model = (struct herd_api_model){.tokenizer = tk, .chat_template = tmpl, .n_vocab = vocab->n_tokens, .n_ctx = 128};
    return 0;
}

static int teardown(void **state) {
    (void)state;
    herd_chat_template_destroy(tmpl);
    herd_tokenizer_destroy(tk);
    herd_vocab_destroy(vocab);
    herd_gguf_destroy(g);
    return 0;
}

/* Parses text as a chat (or completions) body; returns whether it passed. */
static bool parse(const char *text, bool chat, struct herd_api_request *r, struct herd_api_error *err) {
    json_t *body = json_loads(text, 0, NULL);
    assert_non_null(body);
    bool ok =
        chat ? herd_api_parse_chat(body, &lim, &model, r, err) : herd_api_parse_completion(body, &lim, &model, r, err);
    json_decref(body);
    return ok;
}

static void expect_error(const char *text, bool chat, enum herd_api_error_kind kind, const char *param,
                         const char *in_message) {
    struct herd_api_request r;
    struct herd_api_error err;
    if (parse(text, chat, &r, &err)) fail_msg("parsed: %s", text);
    assert_int_equal(err.kind, kind);
    assert_string_equal(err.param, param);
    if (!strstr(err.message, in_message)) fail_msg("'%s' not in '%s'", in_message, err.message);
}

static void test_chat(void **state) {
    (void)state;
    struct herd_api_request r;
    struct herd_api_error err;
    assert_true(parse("{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"max_tokens\":5,"
                      "\"temperature\":0.5,\"stop\":[\"x\"],\"stream\":true,\"logprobs\":true,\"top_logprobs\":2}",
                      true, &r, &err));
    assert_true(r.chat && r.stream);
    assert_int_equal(r.n_prompts, 1);
    assert_true(r.n_ids[0] > 3); /* the ChatML turn markers and the text */
    assert_int_equal(r.gp.max_tokens, 5);
    assert_true(fabsf(r.gp.sampling.temperature - 0.5f) < 1e-6f);
    assert_int_equal(r.gp.n_stop, 1);
    assert_true(r.gp.logprobs);
    assert_int_equal(r.gp.top_logprobs, 2);
    herd_api_request_cleanup(&r);
    /* no max_tokens: what the context leaves */
    assert_true(parse("{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}", true, &r, &err));
    assert_int_equal(r.gp.max_tokens, 128 - r.n_ids[0]);
    herd_api_request_cleanup(&r);
}

static void test_errors(void **state) {
    (void)state;
    expect_error("{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"colour\":1}", true,
                 HERD_API_BAD_REQUEST, "colour", "unrecognized request argument supplied: colour");
    expect_error("{\"messages\":[]}", true, HERD_API_BAD_REQUEST, "model", "'model' is required");
    expect_error("{\"model\":\"big\",\"messages\":[]}", true, HERD_API_MODEL_NOT_FOUND, "model",
                 "the model 'big' does not exist; this server serves 'tiny'");
    expect_error("{\"model\":\"tiny\",\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", true,
                 HERD_API_BAD_REQUEST, "messages[0]", "role must be");
    expect_error(
        "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":"
        "\"b\"},{\"role\":\"user\",\"content\":\"c\"},{\"role\":\"user\",\"content\":\"d\"}]}",
        true, HERD_API_BAD_REQUEST, "messages", "at most 3");
    expect_error("{\"model\":\"tiny\",\"prompt\":\"x\",\"temperature\":3}", false, HERD_API_BAD_REQUEST, "temperature",
                 "between 0 and 2");
    expect_error("{\"model\":\"tiny\",\"prompt\":\"x\",\"n\":5}", false, HERD_API_BAD_REQUEST, "n", "between 1 and 4");
    expect_error("{\"model\":\"tiny\",\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\"]}", false, HERD_API_BAD_REQUEST,
                 "stop", "at most 2");
    expect_error("{\"model\":\"tiny\",\"prompt\":\"x\",\"stop\":\"longer than eight\"}", false, HERD_API_BAD_REQUEST,
                 "stop", "at most 8 bytes");
    expect_error("{\"model\":\"tiny\",\"prompt\":\"x\",\"logit_bias\":{\"1\":1,\"2\":1,\"3\":1,\"4\":1}}", false,
                 HERD_API_BAD_REQUEST, "logit_bias", "at most 3");
    expect_error("{\"model\":\"tiny\",\"prompt\":\"x\",\"logit_bias\":{\"99999\":1}}", false, HERD_API_BAD_REQUEST,
                 "logit_bias", "is not a token id");
    expect_error("{\"model\":\"tiny\",\"prompt\":\"x\",\"max_tokens\":200}", false, HERD_API_TOO_LONG, "max_tokens",
                 "maximum context length is 128 tokens");
    expect_error("{\"model\":\"tiny\",\"prompt\":[1,2,99999]}", false, HERD_API_BAD_REQUEST, "prompt",
                 "invalid token id at prompt[2]");
    /* 17 prompts x n 4 > 64 choices */
    expect_error(
        "{\"model\":\"tiny\",\"n\":4,\"prompt\":[[1],[1],[1],[1],[1],[1],[1],[1],[1],[1],[1],[1],[1],[1],[1],[1],[1]]}",
        false, HERD_API_BAD_REQUEST, "n", "17 prompts x n = 68 choices; at most 64");
    expect_error("{\"model\":\"tiny\",\"prompt\":\"x\",\"echo\":true}", false, HERD_API_BAD_REQUEST, "echo",
                 "not supported");
    struct herd_api_error err;
    json_t *body = json_loads("{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                              "\"logprobs\":false,\"top_logprobs\":2}",
                              0, NULL);
    struct herd_api_request r;
    assert_false(herd_api_parse_chat(body, &lim, &model, &r, &err));
    assert_string_equal(err.param, "top_logprobs");
    json_decref(body);
}

/* Each request owns its logit_bias (no function-static array shared by
 * every request in flight). */
static void test_logit_bias_owned(void **state) {
    (void)state;
    struct herd_api_request a, b;
    struct herd_api_error err;
    assert_true(parse("{\"model\":\"tiny\",\"prompt\":\"x\",\"logit_bias\":{\"5\":-100,\"7\":2}}", false, &a, &err));
    assert_true(parse("{\"model\":\"tiny\",\"prompt\":\"x\",\"logit_bias\":{\"9\":1}}", false, &b, &err));
    assert_ptr_not_equal(a.gp.sampling.bias, b.gp.sampling.bias);
    assert_int_equal(a.gp.sampling.n_bias, 2);
    assert_int_equal(a.gp.sampling.bias[0].token, 5);
    assert_true(isinf(a.gp.sampling.bias[0].bias) && a.gp.sampling.bias[0].bias < 0);
    assert_int_equal(a.gp.sampling.bias[1].token, 7);
    assert_int_equal(b.gp.sampling.n_bias, 1);
    assert_int_equal(b.gp.sampling.bias[0].token, 9);
    herd_api_request_cleanup(&a);
    herd_api_request_cleanup(&b);
}

static void test_completions_prompts(void **state) {
    (void)state;
    struct herd_api_request r;
    struct herd_api_error err;
    assert_true(
        parse("{\"model\":\"tiny\",\"prompt\":[[1,2,3],\"Once\",[7]],\"n\":2,\"max_tokens\":4}", false, &r, &err));
    assert_int_equal(r.n_prompts, 3);
    assert_int_equal(r.n_ids[0], 3);
    assert_int_equal(r.ids[0][2], 3);
    assert_int_equal(r.ids[1][0], 1); /* a text prompt gets BOS */
    assert_int_equal(r.n_ids[2], 1);
    assert_int_equal(r.gp.n, 2);
    herd_api_request_cleanup(&r);
}

static void test_tokenize_detokenize(void **state) {
    (void)state;
    struct herd_api_error err;
    json_t *body = json_loads("{\"prompt\":\"Once upon\"}", 0, NULL);
    json_t *res = herd_api_tokenize(body, &model, &err);
    assert_non_null(res);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(res, "tokens"), 0)), 1);
    assert_int_equal(json_integer_value(json_object_get(res, "max_model_len")), 128);
    json_t *back = json_pack("{s:O}", "tokens", json_object_get(res, "tokens"));
    json_t *text = herd_api_detokenize(back, vocab, &err);
    assert_non_null(text);
    assert_string_equal(json_string_value(json_object_get(text, "prompt")), "Once upon");
    json_decref(text);
    json_decref(back);
    json_decref(res);
    json_decref(body);
    body = json_loads("{\"tokens\":[1,-4]}", 0, NULL);
    assert_null(herd_api_detokenize(body, vocab, &err));
    assert_string_equal(err.param, "tokens");
    json_decref(body);
    assert_null(herd_api_models("other", "tiny", 0, 128, &err));
    assert_int_equal(err.kind, HERD_API_MODEL_NOT_FOUND);
    res = herd_api_models(NULL, "tiny", 5, 128, &err);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(res, "data"), 0), "id")),
                        "tiny");
    json_decref(res);
}

static void test_answers(void **state) {
    (void)state;
    struct herd_api_request r;
    struct herd_api_error err;
    assert_true(parse("{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"stream\":true,"
                      "\"stream_options\":{\"include_usage\":true}}",
                      true, &r, &err));
    struct herd_api_answer a;
    assert_true(herd_api_answer_init(&a, &r, r.n_ids[0], "req-7", "tiny", vocab, 42));
    assert_string_equal(a.id, "chatcmpl-req-7");
    struct herd_event e1 = {.choice = 0, .token = 300, .text = "Hi", .text_len = 2};
    json_t *c1 = herd_api_answer_event(&a, &e1);
    assert_string_equal(json_string_value(json_object_get(c1, "object")), "chat.completion.chunk");
    json_t *d1 = json_object_get(json_array_get(json_object_get(c1, "choices"), 0), "delta");
    assert_string_equal(json_string_value(json_object_get(d1, "role")), "assistant");
    assert_string_equal(json_string_value(json_object_get(d1, "content")), "Hi");
    assert_true(json_is_null(json_object_get(c1, "usage")));
    struct herd_event e2 = {.choice = 0, .token = -1, .text = "\xff", .text_len = 1, .finish = HERD_FINISH_STOP};
    json_t *c2 = herd_api_answer_event(&a, &e2);
    json_t *ch2 = json_array_get(json_object_get(c2, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(ch2, "finish_reason")), "stop");
    assert_null(json_object_get(json_object_get(ch2, "delta"), "role")); /* once per choice */
    assert_string_equal(json_string_value(json_object_get(json_object_get(ch2, "delta"), "content")), "\xEF\xBF\xBD");
    assert_int_equal(a.n_finished, 1);
    json_t *u = herd_api_answer_usage_chunk(&a, 2);
    json_t *usage = json_object_get(u, "usage");
    assert_int_equal(json_integer_value(json_object_get(usage, "completion_tokens")), 1);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(usage, "prompt_tokens_details"), "cached_tokens")), 2);
    json_decref(c1);
    json_decref(c2);
    json_decref(u);
    herd_api_answer_cleanup(&a);
    herd_api_request_cleanup(&r);

    /* a whole completions body with legacy logprobs */
    assert_true(parse("{\"model\":\"tiny\",\"prompt\":\"x\",\"logprobs\":1,\"max_tokens\":2}", false, &r, &err));
    assert_true(herd_api_answer_init(&a, &r, 2, "req-8", "tiny", vocab, 42));
    struct herd_event t1 = {.choice = 0, .token = 300, .text = "ab", .text_len = 2, .logprob = -0.25f, .n_top = 1};
    t1.top_token[0] = 300, t1.top_logprob[0] = -0.25f;
    struct herd_event t2 = t1;
    t2.finish = HERD_FINISH_LENGTH;
    assert_null(herd_api_answer_event(&a, &t1));
    assert_null(herd_api_answer_event(&a, &t2));
    json_t *body = herd_api_answer_body(&a, 0);
    json_t *c = json_array_get(json_object_get(body, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c, "text")), "abab");
    assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "length");
    json_t *off = json_object_get(json_object_get(c, "logprobs"), "text_offset");
    assert_int_equal(json_integer_value(json_array_get(off, 1)), 2);
    json_decref(body);
    herd_api_answer_cleanup(&a);
    herd_api_request_cleanup(&r);

    json_t *ej = herd_api_error_json("invalid_request_error", "x", NULL, "bad \xff byte");
    assert_string_equal(json_string_value(json_object_get(json_object_get(ej, "error"), "message")),
                        "invalid request (the message is not UTF-8)");
    json_decref(ej);
}

/* herd_resume: the tokens follow the prompt, max_tokens shrinks by them,
 * and every malformed form is a 400 naming herd_resume. */
static void test_resume_parse(void **state) {
    (void)state;
    struct herd_api_request r;
    struct herd_api_error err;
    /* "Once upon" is 3 ids with BOS; 432 383 decode to ", there" (7 bytes) */
    assert_true(parse("{\"model\":\"tiny\",\"prompt\":\"Once upon\",\"max_tokens\":10,\"stream\":true,"
                      "\"herd_resume\":{\"tokens\":[432,383],\"text_bytes\":7,\"id\":\"cmpl-a\",\"created\":9}}",
                      false, &r, &err));
    assert_true(r.resume.on);
    assert_string_equal(r.resume.id, "cmpl-a");
    assert_int_equal(r.resume.created, 9);
    assert_int_equal(r.gp.resume_tokens, 2);
    assert_int_equal(r.gp.resume_skip_bytes, 7);
    assert_int_equal(r.gp.max_tokens, 8);
    assert_int_equal(r.ids[0][r.n_ids[0] - 2], 432);
    assert_int_equal(r.ids[0][r.n_ids[0] - 1], 383);
    /* the answer: the given id and created, no role again, the tokens as output */
    struct herd_api_answer a;
    assert_true(herd_api_answer_init(&a, &r, r.n_ids[0] - r.gp.resume_tokens, "req-9", "tiny", vocab, 1));
    assert_string_equal(a.id, "cmpl-a");
    assert_int_equal(a.created, 9);
    struct herd_event e = {.choice = 0, .token = 286, .text = " was", .text_len = 4};
    json_decref(herd_api_answer_event(&a, &e));
    char line[128];
    herd_api_tokens_line(&a, &e, line, sizeof line);
    assert_string_equal(line, ": herd {\"c\":0,\"t\":[286],\"b\":11}\n");
    json_t *u = herd_api_answer_usage_chunk(&a, 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(u, "usage"), "completion_tokens")), 3);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(u, "usage"), "prompt_tokens")), 3);
    json_decref(u);
    herd_api_answer_cleanup(&a);
    herd_api_request_cleanup(&r);
    /* chat: no role chunk once resumed */
    assert_true(parse("{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"stream\":true,"
                      "\"max_tokens\":5,\"herd_resume\":{\"tokens\":[],\"text_bytes\":0,\"id\":\"c\",\"created\":0}}",
                      true, &r, &err));
    assert_true(herd_api_answer_init(&a, &r, r.n_ids[0], "req-10", "tiny", vocab, 1));
    struct herd_event e2 = {.choice = 0, .token = 300, .text = "x", .text_len = 1};
    json_t *c = herd_api_answer_event(&a, &e2);
    assert_null(json_object_get(json_object_get(json_array_get(json_object_get(c, "choices"), 0), "delta"), "role"));
    json_decref(c);
    herd_api_answer_cleanup(&a);
    herd_api_request_cleanup(&r);

#define RESUME(x) "{\"model\":\"tiny\",\"prompt\":\"Once upon\",\"max_tokens\":4,\"stream\":true,\"herd_resume\":" x "}"
    expect_error(RESUME("[1]"), false, HERD_API_BAD_REQUEST, "herd_resume", "must be an object");
    expect_error(RESUME("{\"tokens\":[432,99999],\"text_bytes\":0,\"id\":\"a\",\"created\":1}"), false,
                 HERD_API_BAD_REQUEST, "herd_resume", "tokens[1] is not a token id");
    expect_error(RESUME("{\"tokens\":[432,383],\"text_bytes\":8,\"id\":\"a\",\"created\":1}"), false,
                 HERD_API_BAD_REQUEST, "herd_resume", "past the tokens' text (7 bytes)");
    expect_error(RESUME("{\"tokens\":[1,1,1,1,1],\"text_bytes\":0,\"id\":\"a\",\"created\":1}"), false,
                 HERD_API_BAD_REQUEST, "herd_resume", "max_tokens allows 4");
    expect_error(RESUME("{\"tokens\":[],\"text_bytes\":0,\"created\":1}"), false, HERD_API_BAD_REQUEST, "herd_resume",
                 "id must be");
    expect_error(RESUME("{\"tokens\":[],\"text_bytes\":0,\"id\":\"a\",\"created\":1,\"x\":1}"), false,
                 HERD_API_BAD_REQUEST, "herd_resume", "unknown field herd_resume.x");
    expect_error("{\"model\":\"tiny\",\"prompt\":\"x\",\"herd_resume\":{\"tokens\":[],\"text_bytes\":0,\"id\":\"a\","
                 "\"created\":1}}",
                 false, HERD_API_BAD_REQUEST, "herd_resume", "needs \"stream\": true");
    expect_error("{\"model\":\"tiny\",\"prompt\":\"x\",\"n\":2,\"stream\":true,\"herd_resume\":{\"tokens\":[],"
                 "\"text_bytes\":0,\"id\":\"a\",\"created\":1}}",
                 false, HERD_API_BAD_REQUEST, "herd_resume", "n 1");
#undef RESUME
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_parse),
        cmocka_unit_test(test_chat),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_logit_bias_owned),
        cmocka_unit_test(test_completions_prompts),
        cmocka_unit_test(test_tokenize_detokenize),
        cmocka_unit_test(test_answers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
