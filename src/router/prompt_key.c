/* A request's prompt as the replica's prefix cache will see it: the chat
 * template rendered and the text tokenized with the model's own vocabulary
 * (loaded from its GGUF file: the vocabulary and template only, the
 * weights' pages are never read), cut into blocks of the replicas'
 * block size and hashed with the same chained hash (base/block_hash.h), so
 * that a replica's reported blocks and the request's match exactly.
 *
 * Without a model (-m not given), or for a body that does not parse, the
 * prompt's text is hashed in blocks of bytes instead: those hashes only
 * ever match the router's own guesses (prefix_index.h), which still gives
 * affinity, though not the replicas' word for it. */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "api/api.h"
#include "base/block_hash.h"
#include "herd/gguf.h"
#include "router/router_internal.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

#define BYTE_BLOCK 64 /* bytes per block when hashing text */

enum herd_status prompt_key_load_model(struct herd_router *rt, struct herd_error *err) {
    enum herd_status rc;
    if ((rc = herd_gguf_open_file(rt->p.model_path, &rt->gguf, err)) != HERD_OK ||
        (rc = herd_vocab_load(rt->gguf, &rt->vocab, err)) != HERD_OK ||
        (rc = herd_tokenizer_create(rt->vocab, &rt->tok, err)) != HERD_OK ||
        (rc = herd_chat_template_load(rt->gguf, rt->vocab, rt->p.chat_template, &rt->tmpl, err)) != HERD_OK) {
        prompt_key_unload(rt);
        return rc;
    }
    return HERD_OK;
}

void prompt_key_unload(struct herd_router *rt) {
    herd_chat_template_destroy(rt->tmpl);
    herd_tokenizer_destroy(rt->tok);
    herd_vocab_destroy(rt->vocab);
    herd_gguf_destroy(rt->gguf);
    rt->tmpl = NULL, rt->tok = NULL, rt->vocab = NULL, rt->gguf = NULL;
}

/* The token ids of the request's (first) prompt, through the same parser
 * herd serve uses. False when the body does not parse: the replica will
 * say why. */
static bool tokenize(struct herd_router *rt, bool chat, json_t *body, struct prompt_key *out) {
    const char *model = json_string_value(json_object_get(body, "model"));
    const struct herd_api_limits lim = {.model_name = model ? model : "",
                                        .max_n = HERD_MAX_CHOICES,
                                        .max_tokens_limit = UINT32_MAX,
                                        .max_stops = HERD_MAX_STOPS,
                                        .max_stop_bytes = 1u << 16,
                                        .max_logit_bias = 1u << 20,
                                        .max_messages = 1u << 20};
    const uint32_t n_ctx = rt->n_ctx > 4096 ? rt->n_ctx : 4096;
    const struct herd_api_model m = {
        .tokenizer = rt->tok, .chat_template = rt->tmpl, .n_vocab = rt->vocab->n_tokens, .n_ctx = n_ctx};
    struct herd_api_request q;
    struct herd_api_error err;
    if (!(chat ? herd_api_parse_chat(body, &lim, &m, &q, &err) : herd_api_parse_completion(body, &lim, &m, &q, &err)))
        return false;
    const uint32_t bt = rt->block_tokens;
    const uint32_t n = q.n_ids[0];
    uint64_t h = 0;
    out->n_hashes = 0;
    for (uint32_t b = 0; (b + 1) * bt <= n && out->n_hashes < ROUTER_MAX_HASHED_BLOCKS; b++) {
        h = herd_block_hash(h, q.ids[0] + (size_t)b * bt, bt);
        out->hashes[out->n_hashes++] = h;
    }
    out->key = out->n_hashes ? out->hashes[0] : XXH3_64bits(q.ids[0], (size_t)n * sizeof *q.ids[0]);
    herd_api_request_cleanup(&q);
    return true;
}

/* The text of the prompt: the messages' roles and contents, or the
 * completion's prompt, as one string hashed in blocks of bytes. */
static void hash_text(json_t *body, const char *raw, size_t raw_len, struct prompt_key *out) {
    struct herd_buf text;
    herd_buf_init(&text, 16u << 20);
    json_t *msgs = json_object_get(body, "messages");
    json_t *prompt = json_object_get(body, "prompt");
    if (json_is_array(msgs)) {
        size_t i;
        json_t *m;
        json_array_foreach(msgs, i, m) {
            const char *role = json_string_value(json_object_get(m, "role"));
            json_t *content = json_object_get(m, "content");
            char *c = json_is_string(content) ? NULL : json_dumps(content, JSON_COMPACT);
            const char *cs = c ? c : json_string_value(content);
            if (role) herd_buf_append(&text, role, strlen(role) + 1);
            if (cs) herd_buf_append(&text, cs, strlen(cs) + 1);
            free(c);
        }
    } else if (json_is_string(prompt)) {
        herd_buf_append(&text, json_string_value(prompt), json_string_length(prompt));
    } else if (raw) {
        herd_buf_append(&text, raw, raw_len);
    }
    uint64_t h = 0;
    out->n_hashes = 0;
    for (size_t off = 0; off + BYTE_BLOCK <= text.len && out->n_hashes < ROUTER_MAX_HASHED_BLOCKS; off += BYTE_BLOCK) {
        h = XXH3_64bits_withSeed(text.data + off, BYTE_BLOCK, h ^ 0x6a09e667f3bcc909ull);
        out->hashes[out->n_hashes++] = h;
    }
    out->key = out->n_hashes ? out->hashes[0] : XXH3_64bits(text.data ? (const void *)text.data : "", text.len);
    herd_buf_cleanup(&text);
}

void prompt_key_of(struct herd_router *rt, const char *path, json_t *body, const char *raw, size_t raw_len,
                   struct prompt_key *out) {
    const bool chat = strcmp(path, "/v1/chat/completions") == 0;
    const bool completion = strcmp(path, "/v1/completions") == 0;
    out->n_hashes = 0;
    if (body && (chat || completion) && rt->tok && rt->block_tokens && tokenize(rt, chat, body, out)) return;
    hash_text(body, raw, raw_len, out);
}
