/* Responses of the OpenAI API (api.h) from scheduler events: streamed
 * chunks (chat.completion.chunk / text_completion), or one body collected
 * from all of a request's events, with usage and logprobs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "api/api.h"
#include "base/utf8.h"

json_t *herd_api_text(const char *s, size_t n) {
    json_t *j = json_stringn(s, n);
    if (j) return j;
    struct herd_buf b;
    herd_buf_init(&b, n * 3 + 16);
    for (size_t i = 0; i < n;) {
        int len = herd_utf8_seq((const uint8_t *)s + i, n - i);
        if (len > 0) {
            herd_buf_append(&b, s + i, (size_t)len);
            i += (size_t)len;
        } else {
            herd_buf_append(&b, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
    j = json_stringn((const char *)b.data, b.len);
    herd_buf_cleanup(&b);
    return j ? j : json_string("");
}

json_t *herd_api_error_json(const char *type, const char *param, const char *code, const char *message) {
    json_t *err = json_pack("{s:s,s:s,s:s?,s:s?}", "message", message, "type", type, "param", param, "code", code);
    if (!err) /* a message that is not UTF-8 (from the input): say so instead */
        err = json_pack("{s:s,s:s,s:s?,s:s?}", "message", "invalid request (the message is not UTF-8)", "type", type,
                        "param", param, "code", code);
    return err ? json_pack("{s:o}", "error", err) : NULL;
}

static const char *finish_name(enum herd_finish f) {
    switch (f) {
    case HERD_FINISH_STOP: return "stop";
    case HERD_FINISH_LENGTH: return "length";
    default: return "abort";
    }
}

bool herd_api_answer_init(struct herd_api_answer *a, const struct herd_api_request *r, uint32_t prompt_tokens,
                          const char *request_id, const char *model_name, const struct herd_vocab *v, time_t created) {
    memset(a, 0, sizeof *a);
    a->n = r->n_prompts * r->gp.n;
    a->ch = calloc(a->n, sizeof *a->ch);
    if (!a->ch) return false;
    a->chat = r->chat;
    a->stream = r->stream;
    a->include_usage = r->include_usage;
    a->want_logprobs = r->gp.logprobs || r->gp.top_logprobs;
    a->top_logprobs = r->gp.top_logprobs;
    a->prompt_tokens = prompt_tokens;
    a->created = created;
    a->model_name = model_name;
    a->vocab = v;
    snprintf(a->id, sizeof a->id, "%s-%s", r->chat ? "chatcmpl" : "cmpl", request_id);
    a->tools_on = r->chat && r->tools.on;
    a->tool_format = r->tools.format;
    for (uint32_t i = 0; i < a->n; i++) {
        herd_buf_init(&a->ch[i].text, (size_t)64 << 20);
        herd_buf_init(&a->ch[i].held, (size_t)64 << 20);
        a->ch[i].holding = a->tools_on && a->stream && !r->resume.on;
    }
    if (r->resume.on) { /* one choice: the parser allows no other */
        snprintf(a->id, sizeof a->id, "%s", r->resume.id);
        a->created = r->resume.created;
        a->ch[0].role_sent = true;
        a->ch[0].n_tokens = r->gp.resume_tokens;
        a->ch[0].text_bytes = r->gp.resume_skip_bytes;
    }
    return true;
}

void herd_api_answer_cleanup(struct herd_api_answer *a) {
    for (uint32_t i = 0; a->ch && i < a->n; i++) {
        herd_buf_cleanup(&a->ch[i].text);
        herd_buf_cleanup(&a->ch[i].held);
        json_decref(a->ch[i].logprobs);
    }
    free(a->ch);
    a->ch = NULL;
}

/* A token of a chat logprobs array: token, logprob, bytes, and its
 * alternatives when asked. */
static json_t *token_json(const struct herd_vocab *v, int32_t id, float lp, bool with_top, const struct herd_event *e) {
    char piece[512];
    size_t n = herd_vocab_piece(v, id, piece, sizeof piece);
    if (n > sizeof piece) n = sizeof piece;
    json_t *bytes = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(bytes, json_integer((unsigned char)piece[i]));
    json_t *o = json_pack("{s:o,s:f,s:o}", "token", herd_api_text(piece, n), "logprob", (double)lp, "bytes", bytes);
    if (with_top) {
        json_t *top = json_array();
        for (uint32_t k = 0; k < e->n_top; k++)
            json_array_append_new(top, token_json(v, e->top_token[k], e->top_logprob[k], false, e));
        json_object_set_new(o, "top_logprobs", top);
    }
    return o;
}

static json_t *piece_json(const struct herd_vocab *v, int32_t id) {
    char piece[512];
    size_t n = herd_vocab_piece(v, id, piece, sizeof piece);
    return herd_api_text(piece, n < sizeof piece ? n : sizeof piece);
}

/* The legacy completions top_logprobs entry: {piece: logprob, ...}. */
static json_t *legacy_top(const struct herd_vocab *v, const struct herd_event *e) {
    json_t *top = json_object();
    for (uint32_t k = 0; k < e->n_top; k++) {
        json_t *key = piece_json(v, e->top_token[k]);
        json_object_set_new(top, json_string_value(key), json_real(e->top_logprob[k]));
        json_decref(key);
    }
    return top;
}

static json_t *chunk_base(const struct herd_api_answer *a) {
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:[]}", "id", a->id, "object",
                          a->chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)a->created,
                          "model", a->model_name, "choices");
    if (a->include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

/* The seed of a choice's tool-call ids: the answer's id and the choice. */
static uint64_t tool_seed(const struct herd_api_answer *a, uint32_t choice) {
    return XXH3_64bits_withSeed(a->id, strlen(a->id), choice);
}

/* A chunk of choice i with delta d and finish (NULL: none). */
static json_t *delta_chunk(const struct herd_api_answer *a, uint32_t i, json_t *d, const char *finish) {
    json_t *chunk = chunk_base(a);
    json_t *choice = json_pack("{s:i,s:o,s:o,s:o}", "index", (int)i, "delta", d, "logprobs", json_null(),
                               "finish_reason", finish ? json_string(finish) : json_null());
    json_array_append_new(json_object_get(chunk, "choices"), choice);
    return chunk;
}

/* A streamed choice holding its text back (it may be a tool call): NULL
 * while it still may; else what lets it go: the held text as content, or,
 * when it finished as calls, OpenAI's sequence as an array of chunks: per
 * call one delta with its index, id, type, name and empty arguments, one
 * with the arguments, then an empty delta with finish_reason tool_calls. */
static json_t *stream_held(struct herd_api_answer *a, const struct herd_event *e) {
    struct herd_api_choice *o = &a->ch[e->choice];
    herd_buf_append(&o->held, e->text, e->text_len);
    const char *t = o->held.data ? (const char *)o->held.data : "";
    if (!e->finish && herd_api_tool_call_possible(a->tool_format, t, o->held.len)) return NULL;
    o->holding = false;
    size_t content = o->held.len;
    json_t *calls = e->finish == HERD_FINISH_STOP
                        ? herd_api_tool_calls(a->tool_format, t, o->held.len, tool_seed(a, e->choice), &content)
                        : NULL;
    json_t *first = json_object();
    if (!o->role_sent) json_object_set_new(first, "role", json_string("assistant"));
    o->role_sent = true;
    if (content || !calls) json_object_set_new(first, "content", herd_api_text(t, content));
    o->held.len = 0;
    if (!calls) return delta_chunk(a, e->choice, first, e->finish ? finish_name(e->finish) : NULL);
    json_t *out = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        json_t *fn = json_object_get(c, "function");
        json_t *head = i == 0 ? first : json_object();
        json_object_set_new(head, "tool_calls",
                            json_pack("[{s:I,s:O,s:s,s:{s:O,s:s}}]", "index", (json_int_t)i, "id",
                                      json_object_get(c, "id"), "type", "function", "function", "name",
                                      json_object_get(fn, "name"), "arguments", ""));
        json_array_append_new(out, delta_chunk(a, e->choice, head, NULL));
        json_t *args = json_pack("{s:[{s:I,s:{s:O}}]}", "tool_calls", "index", (json_int_t)i, "function", "arguments",
                                 json_object_get(fn, "arguments"));
        json_array_append_new(out, delta_chunk(a, e->choice, args, NULL));
    }
    json_array_append_new(out, delta_chunk(a, e->choice, json_object(), "tool_calls"));
    a->ch[e->choice].finish = "tool_calls";
    json_decref(calls);
    return out;
}

/* One streamed chunk for an event. */
static json_t *stream_event(struct herd_api_answer *a, const struct herd_event *e) {
    if (a->ch[e->choice].holding) return stream_held(a, e);
    const struct herd_vocab *v = a->vocab;
    json_t *chunk = chunk_base(a);
    json_t *choice = json_pack("{s:i}", "index", (int)e->choice);
    json_t *lp = json_null();
    if (a->want_logprobs && e->token >= 0) {
        if (a->chat)
            lp = json_pack("{s:[o]}", "content", token_json(v, e->token, e->logprob, a->top_logprobs > 0, e));
        else
            lp = json_pack("{s:[o],s:[f],s:[o],s:[i]}", "tokens", piece_json(v, e->token), "token_logprobs",
                           (double)e->logprob, "top_logprobs", legacy_top(v, e), "text_offset", 0);
    }
    if (a->chat) {
        json_t *delta = json_object();
        if (!a->ch[e->choice].role_sent) {
            json_object_set_new(delta, "role", json_string("assistant"));
            a->ch[e->choice].role_sent = true;
        }
        if (e->text_len || !e->finish) json_object_set_new(delta, "content", herd_api_text(e->text, e->text_len));
        json_object_set_new(choice, "delta", delta);
    } else {
        json_object_set_new(choice, "text", herd_api_text(e->text, e->text_len));
    }
    json_object_set_new(choice, "logprobs", lp);
    json_object_set_new(choice, "finish_reason", e->finish ? json_string(finish_name(e->finish)) : json_null());
    json_array_append_new(json_object_get(chunk, "choices"), choice);
    return chunk;
}

static void collect_event(struct herd_api_answer *a, const struct herd_event *e) {
    struct herd_api_choice *o = &a->ch[e->choice];
    herd_buf_append(&o->text, e->text, e->text_len);
    if (!a->want_logprobs || e->token < 0) return;
    const struct herd_vocab *v = a->vocab;
    if (a->chat) {
        if (!o->logprobs) o->logprobs = json_array();
        json_array_append_new(o->logprobs, token_json(v, e->token, e->logprob, a->top_logprobs > 0, e));
        return;
    }
    if (!o->logprobs)
        o->logprobs = json_pack("{s:[],s:[],s:[],s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
    json_array_append_new(json_object_get(o->logprobs, "tokens"), piece_json(v, e->token));
    json_array_append_new(json_object_get(o->logprobs, "token_logprobs"), json_real(e->logprob));
    json_array_append_new(json_object_get(o->logprobs, "top_logprobs"), legacy_top(v, e));
    json_array_append_new(json_object_get(o->logprobs, "text_offset"),
                          json_integer((json_int_t)(o->text.len - e->text_len)));
}

json_t *herd_api_answer_event(struct herd_api_answer *a, const struct herd_event *e) {
    if (e->token >= 0) a->ch[e->choice].n_tokens++;
    a->ch[e->choice].text_bytes += e->text_len;
    json_t *chunk = NULL;
    if (e->finish) a->ch[e->choice].finish = finish_name(e->finish);
    if (a->stream)
        chunk = stream_event(a, e); /* may say tool_calls instead */
    else
        collect_event(a, e);
    if (e->finish) a->n_finished++;
    return chunk;
}

size_t herd_api_tokens_line(const struct herd_api_answer *a, const struct herd_event *e, char *out, size_t cap) {
    /* one token per scheduler event; a finish without a token has none */
    int n = e->token >= 0 ? snprintf(out, cap, ": herd {\"c\":%u,\"t\":[%d],\"b\":%llu}\n", e->choice, (int)e->token,
                                     (unsigned long long)a->ch[e->choice].text_bytes)
                          : snprintf(out, cap, ": herd {\"c\":%u,\"t\":[],\"b\":%llu}\n", e->choice,
                                     (unsigned long long)a->ch[e->choice].text_bytes);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

static json_t *usage_json(const struct herd_api_answer *a, uint32_t cached_tokens) {
    uint32_t comp = 0;
    for (uint32_t i = 0; i < a->n; i++) comp += a->ch[i].n_tokens;
    return json_pack("{s:i,s:i,s:i,s:{s:i}}", "prompt_tokens", (int)a->prompt_tokens, "completion_tokens", (int)comp,
                     "total_tokens", (int)(a->prompt_tokens + comp), "prompt_tokens_details", "cached_tokens",
                     (int)cached_tokens);
}

json_t *herd_api_answer_body(const struct herd_api_answer *a, uint32_t cached_tokens) {
    json_t *choices = json_array();
    for (uint32_t i = 0; i < a->n; i++) {
        const struct herd_api_choice *o = &a->ch[i];
        json_t *lp = o->logprobs ? (a->chat ? json_pack("{s:O}", "content", o->logprobs) : json_incref(o->logprobs))
                                 : json_null();
        const char *finish = o->finish ? o->finish : "abort";
        size_t content = o->text.len;
        const char *t = o->text.data ? (const char *)o->text.data : "";
        json_t *calls = a->tools_on && strcmp(finish, "stop") == 0
                            ? herd_api_tool_calls(a->tool_format, t, o->text.len, tool_seed(a, i), &content)
                            : NULL;
        json_t *text = calls && content == 0 ? json_null() : herd_api_text(t, content);
        if (calls) finish = "tool_calls";
        json_t *ch = a->chat ? json_pack("{s:i,s:{s:s,s:o},s:o,s:s}", "index", (int)i, "message", "role", "assistant",
                                         "content", text, "logprobs", lp, "finish_reason", finish)
                             : json_pack("{s:i,s:o,s:o,s:s}", "index", (int)i, "text", text, "logprobs", lp,
                                         "finish_reason", finish);
        if (calls) json_object_set_new(json_object_get(ch, "message"), "tool_calls", calls);
        json_array_append_new(choices, ch);
    }
    return json_pack("{s:s,s:s,s:I,s:s,s:o,s:o}", "id", a->id, "object",
                     a->chat ? "chat.completion" : "text_completion", "created", (json_int_t)a->created, "model",
                     a->model_name, "choices", choices, "usage", usage_json(a, cached_tokens));
}

json_t *herd_api_answer_usage_chunk(const struct herd_api_answer *a, uint32_t cached_tokens) {
    json_t *last = chunk_base(a);
    json_object_set_new(last, "usage", usage_json(a, cached_tokens));
    return last;
}
