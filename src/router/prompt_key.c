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
 * affinity, though not the replicas' word for it.
 *
 * Not every shared block says where a prompt belongs. Every chat prompt
 * starts with the template's header (a role marker, for Llama 3 a default
 * system prompt of dates), and traffic often shares more (one system
 * prompt for a whole service): a replica holding those blocks is no better
 * a home than any other, and counting them as affinity sends everything
 * to the first replica that saw a chat. So the router tracks, per kind of
 * prompt, the depth every prompt so far shares (at least the template's
 * header, found by rendering conversations that differ in everything),
 * and
 *   - a prefix match counts only beyond that depth (prompt_key.common);
 *   - the consistent-hashing key is the first block past it, the first
 *     that tells prompts apart (or the whole prompt when it is shorter),
 *     so prompts sharing a system prompt share a replica before any
 *     replica has reported a block, in every router alike. */
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

static bool parse(struct herd_router *rt, bool chat, json_t *body, struct herd_api_request *q);

/* The tokens every chat prompt starts with: the longest common prefix of
 * conversations that share nothing but the template. */
static uint32_t chat_header_tokens(struct herd_router *rt) {
    static const char *const probes[] = {
        "{\"model\":\"p\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}",
        "{\"model\":\"p\",\"messages\":[{\"role\":\"user\",\"content\":\"Z 9\"}]}",
        ("{\"model\":\"p\",\"messages\":[{\"role\":\"system\",\"content\":\"b\"},"
         "{\"role\":\"user\",\"content\":\"c\"}]}"),
    };
    int32_t *first = NULL;
    uint32_t common = 0;
    for (size_t i = 0; i < sizeof probes / sizeof *probes; i++) {
        json_t *body = json_loads(probes[i], 0, NULL);
        struct herd_api_request q;
        const bool ok = body && parse(rt, true, body, &q);
        json_decref(body);
        if (!ok) {
            common = 0; /* a template that refuses one of them: no header assumed */
            break;
        }
        if (!first) {
            first = malloc((size_t)q.n_ids[0] * sizeof *first);
            if (first) memcpy(first, q.ids[0], (size_t)q.n_ids[0] * sizeof *first);
            common = first ? q.n_ids[0] : 0;
        } else {
            uint32_t k = 0;
            while (k < common && k < q.n_ids[0] && q.ids[0][k] == first[k]) k++;
            common = k;
        }
        herd_api_request_cleanup(&q);
    }
    free(first);
    return common;
}

enum herd_status prompt_key_load_model(struct herd_router *rt, struct herd_error *err) {
    enum herd_status rc;
    if ((rc = herd_gguf_open_file(rt->p.model_path, &rt->gguf, err)) != HERD_OK ||
        (rc = herd_vocab_load(rt->gguf, &rt->vocab, err)) != HERD_OK ||
        (rc = herd_tokenizer_create(rt->vocab, &rt->tok, err)) != HERD_OK ||
        (rc = herd_chat_template_load(rt->gguf, rt->vocab, rt->p.chat_template, &rt->tmpl, err)) != HERD_OK) {
        prompt_key_unload(rt);
        return rc;
    }
    rt->chat_header_tokens = chat_header_tokens(rt);
    return HERD_OK;
}

void prompt_key_unload(struct herd_router *rt) {
    herd_chat_template_destroy(rt->tmpl);
    herd_tokenizer_destroy(rt->tok);
    herd_vocab_destroy(rt->vocab);
    herd_gguf_destroy(rt->gguf);
    rt->tmpl = NULL, rt->tok = NULL, rt->vocab = NULL, rt->gguf = NULL;
    for (int i = 0; i < PROMPT_KINDS; i++) {
        free(rt->commons[i].ref);
        rt->commons[i].ref = NULL;
    }
}

/* The request parsed by the same parser herd serve uses: its (first)
 * prompt's token ids are q->ids[0]; the caller cleans q up. False when
 * the body does not parse: the replica will say why. */
static bool parse(struct herd_router *rt, bool chat, json_t *body, struct herd_api_request *q) {
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
    struct herd_api_error err;
    return chat ? herd_api_parse_chat(body, &lim, &m, q, &err) : herd_api_parse_completion(body, &lim, &m, q, &err);
}

static bool tokenize(struct herd_router *rt, bool chat, json_t *body, struct prompt_key *out) {
    struct herd_api_request q;
    if (!parse(rt, chat, body, &q)) return false;
    const int32_t *ids = q.ids[0];
    const uint32_t n = q.n_ids[0];
    const uint32_t bt = rt->block_tokens;
    uint64_t h = 0;
    out->n_hashes = 0;
    for (uint32_t b = 0; (b + 1) * bt <= n && out->n_hashes < ROUTER_MAX_HASHED_BLOCKS; b++) {
        h = herd_block_hash(h, ids + (size_t)b * bt, bt);
        out->hashes[out->n_hashes++] = h;
    }
    out->whole = XXH3_64bits(ids, (size_t)n * sizeof *ids);
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
    out->whole = XXH3_64bits(text.data ? (const void *)text.data : "", text.len);
    herd_buf_cleanup(&text);
}

/* The depth (in blocks) every prompt of this kind seen so far shares,
 * at least floor; k updates it. The first prompt is the reference; the
 * depth is where any later one first differs from it (a prompt that is
 * only shorter or longer says nothing). */
static uint32_t shared_depth(struct prompt_commons *c, uint32_t block_tokens, const struct prompt_key *k,
                             uint32_t floor) {
    if (c->block_tokens != block_tokens) c->seen = c->diverged = false, c->block_tokens = block_tokens;
    if (!c->ref && !(c->ref = malloc(ROUTER_MAX_HASHED_BLOCKS * sizeof *c->ref))) return floor;
    if (!c->seen) {
        memcpy(c->ref, k->hashes, (size_t)k->n_hashes * sizeof *k->hashes);
        c->n_ref = k->n_hashes;
        c->seen = true;
    } else {
        const uint32_t m = k->n_hashes < c->n_ref ? k->n_hashes : c->n_ref;
        uint32_t i = 0;
        while (i < m && k->hashes[i] == c->ref[i]) i++;
        if (i < m) {
            c->n_ref = i;
            c->diverged = true;
        } else if (!c->diverged && k->n_hashes > c->n_ref) {
            /* the reference grows while nothing has differed */
            memcpy(c->ref + c->n_ref, k->hashes + c->n_ref, (size_t)(k->n_hashes - c->n_ref) * sizeof *k->hashes);
            c->n_ref = k->n_hashes;
        }
    }
    const uint32_t d = c->diverged ? c->n_ref : 0;
    return d > floor ? d : floor;
}

void prompt_key_of(struct herd_router *rt, const char *path, json_t *body, const char *raw, size_t raw_len,
                   struct prompt_key *out) {
    const bool chat = strcmp(path, "/v1/chat/completions") == 0;
    const bool completion = strcmp(path, "/v1/completions") == 0;
    out->n_hashes = 0;
    const bool tokens = body && (chat || completion) && rt->tok && rt->block_tokens && tokenize(rt, chat, body, out);
    if (!tokens) hash_text(body, raw, raw_len, out);
    const uint32_t bt = tokens ? rt->block_tokens : BYTE_BLOCK;
    const uint32_t floor = tokens && chat ? rt->chat_header_tokens / bt : 0;
    out->common = shared_depth(&rt->commons[(tokens ? 0 : 2) + (chat ? 0 : 1)], bt, out, floor);
    out->key = out->n_hashes > out->common ? out->hashes[out->common] : out->whole;
}
