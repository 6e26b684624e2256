/* libFuzzer target for the OpenAI request parsers (src/api): any bytes as
 * a request body are parsed as a chat request, a completions request, a
 * /tokenize and a /detokenize body; each gives a checked request or an
 * error, never a crash, a leak or an unbounded allocation. A request that
 * parses is answered from synthetic events, streamed and whole, so the
 * response builders see every field the parser lets through. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "api/api.h"
#include "herd/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The default model's vocabulary, tokenizer and chat template (ChatML,
 * since stories260K has none), loaded once. */
static struct herd_gguf *g;
static struct herd_vocab *vocab;
static struct herd_tokenizer *tk;
static struct herd_chat_template *tmpl;

static void load_once(void) {
    if (g) return;
    char path[1024];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", HERD_SOURCE_DIR);
    struct herd_error err = {0};
    if (herd_gguf_open_file(path, &g, &err) != HERD_OK || herd_vocab_load(g, &vocab, &err) != HERD_OK ||
        herd_tokenizer_create(vocab, &tk, &err) != HERD_OK ||
        herd_chat_template_load(g, vocab, NULL, &tmpl, &err) != HERD_OK) {
        fprintf(stderr, "fuzz_api: %s\n", err.msg);
        abort();
    }
}

/* Feeds every choice two tokens and a finish, as the scheduler would. */
static void answer(const struct herd_api_request *r) {
    struct herd_api_answer a;
    if (!herd_api_answer_init(&a, r, r->n_ids[0], "req-1", "default", vocab, 0)) return;
    for (uint32_t i = 0; i < a.n; i++)
        for (int k = 0; k < 3; k++) {
            struct herd_event e = {.choice = i,
                                   .token = k < 2 ? 300 + k : -1,
                                   .text = "ab\xff",
                                   .text_len = 3,
                                   .finish = k == 2 ? HERD_FINISH_STOP : HERD_FINISH_NONE,
                                   .logprob = -0.5f,
                                   .n_top = r->gp.top_logprobs};
            for (uint32_t t = 0; t < e.n_top; t++) e.top_token[t] = (int32_t)(t * 7), e.top_logprob[t] = -1.0f;
            json_decref(herd_api_answer_event(&a, &e));
        }
    json_decref(a.stream ? herd_api_answer_usage_chunk(&a, 1) : herd_api_answer_body(&a, 1));
    herd_api_answer_cleanup(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load_once();
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!body) return 0;
    if (!json_is_object(body)) {
        json_decref(body);
        return 0;
    }
    const struct herd_api_limits lim = {.model_name = "default",
                                        .max_n = 4,
                                        .max_tokens_limit = 256,
                                        .max_stops = 4,
                                        .max_stop_bytes = 64,
                                        .max_logit_bias = 16,
                                        .max_messages = 64};
    const struct herd_api_model m = {.tokenizer = tk, .chat_template = tmpl, .n_vocab = vocab->n_tokens, .n_ctx = 256};
    struct herd_api_request r;
    struct herd_api_error err;
    if (herd_api_parse_chat(body, &lim, &m, &r, &err)) {
        answer(&r);
        herd_api_request_cleanup(&r);
    }
    if (herd_api_parse_completion(body, &lim, &m, &r, &err)) {
        answer(&r);
        herd_api_request_cleanup(&r);
    }
    json_decref(herd_api_tokenize(body, &m, &err));
    json_decref(herd_api_detokenize(body, vocab, &err));
    json_decref(body);
    return 0;
}
