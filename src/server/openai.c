/* The OpenAI-compatible API: /v1/chat/completions, /v1/completions,
 * /v1/models, and /tokenize, /detokenize.
 *
 * A handler validates the JSON body field by field (a wrong type or range
 * is a 400 naming the field in `param`; unknown fields too, as OpenAI
 * does), turns the prompt into token ids (chat: the model's chat template,
 * then the tokenizer with control tokens parsed; completions: the text as
 * plain text with BOS, or token ids), checks it fits the context, and
 * submits a request to the scheduler. Answers are assembled from the
 * scheduler's events: all at once, or as server-sent events with
 * `data: {...}` chunks and a final `data: [DONE]`. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/buf.h"
#include "base/timing.h"
#include "base/utf8.h"
#include "server/server_internal.h"

struct choice_out {
    struct herd_buf text;
    json_t *logprobs; /* chat: content array; completions: the legacy object's arrays */
    const char *finish;
    bool role_sent;
    uint32_t n_tokens;
};

/* Prompts in one /v1/completions request, and choices over all of them. */
#define MAX_PROMPTS       64
#define MAX_TOTAL_CHOICES 64

struct api_call {
    struct herd_request *req[MAX_PROMPTS]; /* one per prompt; choice i of prompt k is choice k * per_prompt + i */
    uint32_t n_req;
    uint32_t per_prompt; /* n */
    bool chat, stream, include_usage;
    bool want_logprobs;
    uint32_t top_logprobs;
    uint32_t n; /* choices over all prompts */
    uint32_t n_finished;
    bool engine_failed; /* a choice ended with HERD_FINISH_ERROR */
    uint32_t prompt_tokens;
    char id[64];
    time_t created;
    struct choice_out *ch; /* [n] */
};

/* ------------------------------------------------------------ validation */

/* Each check answers 400 naming the field and returns false; the caller
 * returns at once (the connection may be gone after a response). */
static bool bad(struct herd_http_request *c, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool bad(struct herd_http_request *c, const char *param, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    server_count_rejection(srv(c), SERVER_REJECT_BAD_REQUEST);
    herd_http_respond_error(c, 400, "invalid_request_error", param, NULL, "%s", msg);
    return false;
}

static bool opt_number(struct herd_http_request *c, json_t *body, const char *name, double lo, double hi, double *out) {
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v)) return true;
    if (!json_is_number(v)) return bad(c, name, "'%s' must be a number", name);
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi)
        return bad(c, name, "'%s' must be between %g and %g, got %g", name, lo, hi, x);
    *out = x;
    return true;
}

static bool opt_int(struct herd_http_request *c, json_t *body, const char *name, long long lo, long long hi,
                    long long *out) {
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v)) return true;
    if (!json_is_integer(v)) return bad(c, name, "'%s' must be an integer", name);
    long long x = json_integer_value(v);
    if (x < lo || x > hi) return bad(c, name, "'%s' must be between %lld and %lld, got %lld", name, lo, hi, x);
    *out = x;
    return true;
}

static bool opt_bool(struct herd_http_request *c, json_t *body, const char *name, bool *out) {
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v)) return true;
    if (!json_is_boolean(v)) return bad(c, name, "'%s' must be true or false", name);
    *out = json_is_true(v);
    return true;
}

static bool listed(const char *k, const char *const *names) {
    for (size_t i = 0; names && names[i]; i++)
        if (strcmp(k, names[i]) == 0) return true;
    return false;
}

/* Every field of body is in one of the two lists (the second may be NULL). */
static bool known_fields(struct herd_http_request *c, json_t *body, const char *const *known, const char *const *more) {
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        if (!listed(k, known) && !listed(k, more)) return bad(c, k, "unrecognized request argument supplied: %s", k);
    }
    return true;
}

/* The fields both completion endpoints take (gen_params, max_tokens,
 * logprobs, model). */
static const char *const generation_fields[] = {"model",
                                                "max_tokens",
                                                "n",
                                                "temperature",
                                                "top_p",
                                                "top_k",
                                                "min_p",
                                                "seed",
                                                "presence_penalty",
                                                "frequency_penalty",
                                                "repetition_penalty",
                                                "logit_bias",
                                                "stop",
                                                "stream",
                                                "stream_options",
                                                "logprobs",
                                                "best_of",
                                                "user",
                                                "priority",
                                                "ignore_eos",
                                                NULL};

static bool check_model(struct herd_http_request *c, json_t *body) {
    json_t *m = json_object_get(body, "model");
    if (!m) return bad(c, "model", "'model' is required");
    if (!json_is_string(m)) return bad(c, "model", "'model' must be a string");
    if (strcmp(json_string_value(m), srv(c)->p.model_name) != 0) {
        herd_http_respond_error(c, 404, "invalid_request_error", "model", "model_not_found",
                                "the model '%s' does not exist; this server serves '%s'", json_string_value(m),
                                srv(c)->p.model_name);
        return false;
    }
    return true;
}

/* Sampling and stopping fields shared by both endpoints. */
static bool gen_params(struct herd_http_request *c, json_t *body, struct herd_gen_params *gp,
                       struct herd_logit_bias *bias, bool *stream, bool *include_usage) {
    const struct herd_server_params *p = &srv(c)->p;
    double t = 1.0, top_p = 1.0, min_p = 0, pres = 0, freq = 0, rep = 1.0;
    long long n = 1, top_k = 0, seed = -1, priority = 0;
    if (!opt_number(c, body, "temperature", 0, 2, &t) || !opt_number(c, body, "top_p", 1e-9, 1, &top_p) ||
        !opt_number(c, body, "min_p", 0, 1, &min_p) || !opt_number(c, body, "presence_penalty", -2, 2, &pres) ||
        !opt_number(c, body, "frequency_penalty", -2, 2, &freq) ||
        !opt_number(c, body, "repetition_penalty", 1e-3, 100, &rep) || !opt_int(c, body, "n", 1, p->max_n, &n) ||
        !opt_int(c, body, "top_k", 0, 1 << 20, &top_k) || !opt_int(c, body, "seed", 0, INT64_MAX, &seed) ||
        !opt_int(c, body, "priority", -1000000, 1000000, &priority) || !opt_bool(c, body, "stream", stream) ||
        !opt_bool(c, body, "ignore_eos", &gp->ignore_eos))
        return false;
    json_t *best_of = json_object_get(body, "best_of");
    if (best_of && !json_is_null(best_of) && (!json_is_integer(best_of) || json_integer_value(best_of) != n))
        return bad(c, "best_of", "'best_of' is not supported (it may only equal n)");
    gp->n = (uint32_t)n;
    gp->priority = (int32_t)priority;
    gp->sampling.temperature = (float)t;
    gp->sampling.top_p = (float)top_p;
    gp->sampling.min_p = (float)min_p;
    gp->sampling.top_k = (uint32_t)top_k;
    gp->sampling.presence_penalty = (float)pres;
    gp->sampling.frequency_penalty = (float)freq;
    gp->sampling.repeat_penalty = (float)rep;
    /* no seed: a fresh one per request, so repeated requests differ */
    gp->sampling.seed = seed >= 0 ? (uint64_t)seed : ((uint64_t)time(NULL) << 20) ^ (uint64_t)(herd_time_now_s() * 1e9);
    json_t *so = json_object_get(body, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return bad(c, "stream_options", "'stream_options' must be an object");
        json_t *iu = json_object_get(so, "include_usage");
        if (iu && !json_is_boolean(iu))
            return bad(c, "stream_options.include_usage", "'include_usage' must be true or false");
        *include_usage = json_is_true(iu);
    }
    json_t *lb = json_object_get(body, "logit_bias");
    if (lb && !json_is_null(lb)) {
        if (!json_is_object(lb)) return bad(c, "logit_bias", "'logit_bias' must be an object of token id: bias");
        if (json_object_size(lb) > p->max_logit_bias)
            return bad(c, "logit_bias", "'logit_bias' has %zu entries; at most %u", json_object_size(lb),
                       p->max_logit_bias);
        const char *k;
        json_t *v;
        uint32_t i = 0;
        uint64_t n_vocab = srv(c)->m.model->desc.n_vocab;
        json_object_foreach(lb, k, v) {
            char *end;
            long long id = strtoll(k, &end, 10);
            if (!*k || *end || id < 0 || (uint64_t)id >= n_vocab)
                return bad(c, "logit_bias", "'logit_bias' key '%s' is not a token id (0..%llu)", k,
                           (unsigned long long)n_vocab - 1);
            if (!json_is_number(v) || !isfinite(json_number_value(v)) || fabs(json_number_value(v)) > 100)
                return bad(c, "logit_bias", "'logit_bias' values must be numbers in [-100, 100]");
            double b = json_number_value(v);
            bias[i++] = (struct herd_logit_bias){(int32_t)id, b <= -100 ? -INFINITY : (float)b};
        }
        gp->sampling.bias = bias;
        gp->sampling.n_bias = i;
    }
    json_t *stop = json_object_get(body, "stop");
    if (stop && !json_is_null(stop)) {
        json_t *one = json_is_string(stop) ? stop : NULL;
        size_t count = one ? 1 : json_is_array(stop) ? json_array_size(stop) : 0;
        if (!one && !json_is_array(stop)) return bad(c, "stop", "'stop' must be a string or an array of strings");
        if (count > p->max_stops || count > HERD_MAX_STOPS)
            return bad(c, "stop", "'stop' has %zu strings; at most %u", count, p->max_stops);
        for (size_t i = 0; i < count; i++) {
            json_t *s = one ? one : json_array_get(stop, i);
            if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) > p->max_stop_bytes)
                return bad(c, "stop", "stop strings must be non-empty strings of at most %u bytes", p->max_stop_bytes);
            gp->stop[gp->n_stop++] = json_string_value(s);
        }
    }
    return true;
}

/* max_tokens (or max_completion_tokens): at most what the context leaves;
 * absent, all of it. */
static bool max_tokens(struct herd_http_request *c, json_t *body, uint32_t n_prompt, struct herd_gen_params *gp) {
    uint32_t n_ctx = herd_sched_n_ctx(srv(c)->m.sched);
    long long mt = -1, mct = -1;
    if (!opt_int(c, body, "max_tokens", 1, INT32_MAX, &mt) ||
        !opt_int(c, body, "max_completion_tokens", 1, INT32_MAX, &mct))
        return false;
    long long want = mct > 0 ? mct : mt;
    if (n_prompt >= n_ctx || (want > 0 && (uint64_t)n_prompt + (uint64_t)want > n_ctx)) {
        server_count_rejection(srv(c), SERVER_REJECT_TOO_LONG);
        herd_http_respond_error(
            c, 400, "invalid_request_error", want > 0 ? (mct > 0 ? "max_completion_tokens" : "max_tokens") : "messages",
            "context_length_exceeded",
            "this model's maximum context length is %u tokens; the prompt has %u tokens and %lld more "
            "were requested (%llu > %u)",
            n_ctx, n_prompt, want > 0 ? want : 1,
            (unsigned long long)n_prompt + (want > 0 ? (unsigned long long)want : 1), n_ctx);
        return false;
    }
    if (want > srv(c)->p.max_tokens_limit)
        return bad(c, mct > 0 ? "max_completion_tokens" : "max_tokens", "at most %u tokens may be requested",
                   srv(c)->p.max_tokens_limit);
    gp->max_tokens = want > 0 ? (uint32_t)want : n_ctx - n_prompt;
    if (gp->max_tokens > srv(c)->p.max_tokens_limit) gp->max_tokens = srv(c)->p.max_tokens_limit;
    return true;
}

/* ------------------------------------------------------------ UTF-8 text */

/* s with every byte sequence that is not valid UTF-8 as U+FFFD (token
 * pieces in logprobs can be parts of a character). */
static json_t *json_text(const char *s, size_t n) {
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

static json_t *token_json(const struct herd_vocab *v, int32_t id, float lp, bool with_top, const struct herd_event *e,
                          bool chat) {
    char piece[512];
    size_t n = herd_vocab_piece(v, id, piece, sizeof piece);
    if (n > sizeof piece) n = sizeof piece;
    json_t *bytes = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(bytes, json_integer((unsigned char)piece[i]));
    json_t *o = json_pack("{s:o,s:f,s:o}", "token", json_text(piece, n), "logprob", (double)lp, "bytes", bytes);
    if (with_top && chat) {
        json_t *top = json_array();
        for (uint32_t k = 0; k < e->n_top; k++)
            json_array_append_new(top, token_json(v, e->top_token[k], e->top_logprob[k], false, e, chat));
        json_object_set_new(o, "top_logprobs", top);
    }
    return o;
}

/* ------------------------------------------------------------- responses */

static const char *finish_name(enum herd_finish f) {
    switch (f) {
    case HERD_FINISH_STOP: return "stop";
    case HERD_FINISH_LENGTH: return "length";
    default: return "abort";
    }
}

static void call_free(struct api_call *a) {
    if (!a) return;
    for (uint32_t k = 0; k < a->n_req; k++) {
        herd_request_set_notify(a->req[k], NULL, NULL);
        herd_request_cancel(a->req[k]);
        herd_request_release(a->req[k]);
    }
    for (uint32_t i = 0; a->ch && i < a->n; i++) {
        herd_buf_cleanup(&a->ch[i].text);
        json_decref(a->ch[i].logprobs);
    }
    free(a->ch);
    free(a);
}

/* The drain ran out of time: the requests stop, the answer ends normally
 * with finish_reason "abort". */
static void call_cancel(struct herd_http_request *c, void *work) {
    (void)c;
    struct api_call *a = work;
    for (uint32_t k = 0; k < a->n_req; k++) herd_request_cancel(a->req[k]);
}

/* The numbers of all the call's requests: tokens summed, the slowest
 * request's queue time and time to first token. */
struct call_totals {
    uint32_t prompt_tokens, cached_tokens, completion_tokens;
    double queue_s, ttft_s;
};

static struct call_totals call_totals(const struct api_call *a) {
    struct call_totals sum = {0};
    for (uint32_t k = 0; k < a->n_req; k++) {
        struct herd_request_stats st;
        herd_request_stats(a->req[k], &st);
        sum.prompt_tokens += st.prompt_tokens;
        sum.cached_tokens += st.cached_tokens;
        sum.completion_tokens += st.completion_tokens;
        if (st.admitted_s > 0 && st.admitted_s - st.submitted_s > sum.queue_s)
            sum.queue_s = st.admitted_s - st.submitted_s;
        if (st.first_token_s > 0 && st.first_token_s - st.submitted_s > sum.ttft_s)
            sum.ttft_s = st.first_token_s - st.submitted_s;
    }
    return sum;
}

/* Copies the call's numbers for the access log before it goes. */
static void log_usage(struct herd_http_request *c, const struct api_call *a) {
    const struct call_totals t = call_totals(a);
    const struct herd_log_field f[5] = {HERD_LOG_I("prompt_tokens", t.prompt_tokens),
                                        HERD_LOG_I("cached_tokens", t.cached_tokens),
                                        HERD_LOG_I("completion_tokens", t.completion_tokens),
                                        HERD_LOG_N("queue_ms", t.queue_s * 1e3), HERD_LOG_N("ttft_ms", t.ttft_s * 1e3)};
    herd_http_request_log(c, f, 5);
}

/* The client is gone (or the call is over): the access log gets the
 * call's numbers, the requests are cancelled and freed. */
static void call_abort(struct herd_http_request *c, void *work) {
    struct api_call *a = work;
    if (a->n_req) log_usage(c, a);
    call_free(a);
}

/* The call is over: detached from the request before its answer ends. */
static void call_end(struct herd_http_request *c, struct api_call *a) {
    herd_http_request_set_work(c, NULL, NULL);
    call_abort(c, a);
}

static json_t *usage_json(const struct api_call *a) {
    uint32_t comp = 0;
    for (uint32_t i = 0; i < a->n; i++) comp += a->ch[i].n_tokens;
    return json_pack("{s:i,s:i,s:i,s:{s:i}}", "prompt_tokens", (int)a->prompt_tokens, "completion_tokens", (int)comp,
                     "total_tokens", (int)(a->prompt_tokens + comp), "prompt_tokens_details", "cached_tokens",
                     (int)call_totals(a).cached_tokens);
}

static void send_sse(struct herd_http_request *c, json_t *chunk) {
    char *s = json_dumps(chunk, JSON_COMPACT);
    json_decref(chunk);
    if (!s) return;
    herd_http_sse_send(c, s, strlen(s));
    free(s);
}

static json_t *chunk_base(struct herd_http_request *c, const struct api_call *a) {
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:[]}", "id", a->id, "object",
                          a->chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)a->created,
                          "model", srv(c)->p.model_name, "choices");
    if (a->include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

/* One streamed chunk for an event. */
static void stream_event(struct herd_http_request *c, struct api_call *a, const struct herd_event *e) {
    const struct herd_vocab *v = srv(c)->m.vocab;
    json_t *chunk = chunk_base(c, a);
    json_t *choice = json_pack("{s:i}", "index", (int)e->choice);
    json_t *lp = json_null();
    if (a->want_logprobs && e->token >= 0) {
        if (a->chat) {
            lp = json_pack("{s:[o]}", "content", token_json(v, e->token, e->logprob, a->top_logprobs > 0, e, true));
        } else {
            char piece[512];
            size_t n = herd_vocab_piece(v, e->token, piece, sizeof piece);
            json_t *top = json_object();
            for (uint32_t k = 0; k < e->n_top; k++) {
                char tp[512];
                size_t tn = herd_vocab_piece(v, e->top_token[k], tp, sizeof tp);
                json_t *key = json_text(tp, tn < sizeof tp ? tn : sizeof tp);
                json_object_set_new(top, json_string_value(key), json_real(e->top_logprob[k]));
                json_decref(key);
            }
            lp = json_pack("{s:[o],s:[f],s:[o],s:[i]}", "tokens", json_text(piece, n < sizeof piece ? n : sizeof piece),
                           "token_logprobs", (double)e->logprob, "top_logprobs", top, "text_offset", 0);
        }
    }
    if (a->chat) {
        json_t *delta = json_object();
        if (!a->ch[e->choice].role_sent) {
            json_object_set_new(delta, "role", json_string("assistant"));
            a->ch[e->choice].role_sent = true;
        }
        if (e->text_len || !e->finish) json_object_set_new(delta, "content", json_text(e->text, e->text_len));
        json_object_set_new(choice, "delta", delta);
    } else {
        json_object_set_new(choice, "text", json_text(e->text, e->text_len));
    }
    json_object_set_new(choice, "logprobs", lp);
    json_object_set_new(choice, "finish_reason", e->finish ? json_string(finish_name(e->finish)) : json_null());
    json_array_append_new(json_object_get(chunk, "choices"), choice);
    send_sse(c, chunk);
}

static void collect_event(struct herd_http_request *c, struct api_call *a, const struct herd_event *e) {
    struct choice_out *o = &a->ch[e->choice];
    herd_buf_append(&o->text, e->text, e->text_len);
    if (a->want_logprobs && e->token >= 0) {
        const struct herd_vocab *v = srv(c)->m.vocab;
        if (a->chat) {
            if (!o->logprobs) o->logprobs = json_array();
            json_array_append_new(o->logprobs, token_json(v, e->token, e->logprob, a->top_logprobs > 0, e, true));
        } else {
            if (!o->logprobs)
                o->logprobs =
                    json_pack("{s:[],s:[],s:[],s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
            char piece[512];
            size_t n = herd_vocab_piece(v, e->token, piece, sizeof piece);
            json_array_append_new(json_object_get(o->logprobs, "tokens"),
                                  json_text(piece, n < sizeof piece ? n : sizeof piece));
            json_array_append_new(json_object_get(o->logprobs, "token_logprobs"), json_real(e->logprob));
            json_t *top = json_object();
            for (uint32_t k = 0; k < e->n_top; k++) {
                char tp[512];
                size_t tn = herd_vocab_piece(v, e->top_token[k], tp, sizeof tp);
                json_t *key = json_text(tp, tn < sizeof tp ? tn : sizeof tp);
                json_object_set_new(top, json_string_value(key), json_real(e->top_logprob[k]));
                json_decref(key);
            }
            json_array_append_new(json_object_get(o->logprobs, "top_logprobs"), top);
            json_array_append_new(json_object_get(o->logprobs, "text_offset"),
                                  json_integer((json_int_t)(o->text.len - e->text_len)));
        }
    }
}

static void respond_whole(struct herd_http_request *c, struct api_call *a) {
    json_t *choices = json_array();
    for (uint32_t i = 0; i < a->n; i++) {
        struct choice_out *o = &a->ch[i];
        json_t *lp = o->logprobs ? (a->chat ? json_pack("{s:O}", "content", o->logprobs) : json_incref(o->logprobs))
                                 : json_null();
        json_t *ch;
        if (a->chat)
            ch = json_pack("{s:i,s:{s:s,s:o},s:o,s:s}", "index", (int)i, "message", "role", "assistant", "content",
                           json_text((const char *)o->text.data, o->text.len), "logprobs", lp, "finish_reason",
                           o->finish ? o->finish : "abort");
        else
            ch = json_pack("{s:i,s:o,s:o,s:s}", "index", (int)i, "text",
                           json_text((const char *)o->text.data, o->text.len), "logprobs", lp, "finish_reason",
                           o->finish ? o->finish : "abort");
        json_array_append_new(choices, ch);
    }
    json_t *body = json_pack("{s:s,s:s,s:I,s:s,s:o,s:o}", "id", a->id, "object",
                             a->chat ? "chat.completion" : "text_completion", "created", (json_int_t)a->created,
                             "model", srv(c)->p.model_name, "choices", choices, "usage", usage_json(a));
    call_end(c, a);
    herd_http_respond_json(c, 200, body);
}

/* The scheduler has events for the call (or a slow reader caught up). */
static void call_wake(struct herd_http_request *c, void *work) {
    struct api_call *a = work;
    struct herd_event ev[64];
    size_t n;
    for (uint32_t k = 0; k < a->n_req; k++)
        while ((n = herd_request_poll(a->req[k], ev, 64)) > 0) {
            for (size_t i = 0; i < n; i++) {
                ev[i].choice += k * a->per_prompt;       /* the index over all prompts */
                if (ev[i].finish == HERD_FINISH_ERROR) { /* no chunk: the answer ends with the error below */
                    a->engine_failed = true;
                    a->n_finished++;
                    continue;
                }
                if (ev[i].token >= 0) a->ch[ev[i].choice].n_tokens++;
                if (a->stream)
                    stream_event(c, a, &ev[i]);
                else
                    collect_event(c, a, &ev[i]);
                if (ev[i].finish) {
                    a->ch[ev[i].choice].finish = finish_name(ev[i].finish);
                    a->n_finished++;
                }
            }
            /* a slow reader: the server wakes the call again as it drains */
            if (a->stream && herd_http_request_pending_output(c) > HERD_HTTP_STREAM_HIGH_WATER) return;
        }
    if (a->n_finished < a->n) return;
    if (a->engine_failed) {
        char msg[300] = "the engine failed";
        herd_sched_failed(srv(c)->m.sched, msg, sizeof msg);
        herd_log(HERD_LOG_ERROR, "serve", herd_http_request_id(c), NULL, 0, "request ended: %s", msg);
        if (!a->stream) {
            call_end(c, a);
            herd_http_respond_error(c, 500, "server_error", NULL, "engine_failed", "%s", msg);
            return;
        }
        /* streaming began: an error event, then [DONE] */
        json_t *e = json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", msg, "type", "server_error", "param", "code",
                              "engine_failed");
        send_sse(c, e);
        herd_http_stream_send(c, "data: [DONE]\n\n", 14);
        call_end(c, a);
        herd_http_stream_end(c);
        return;
    }
    if (!a->stream) {
        respond_whole(c, a);
        return;
    }
    if (a->include_usage) {
        json_t *last = chunk_base(c, a);
        json_object_set_new(last, "usage", usage_json(a));
        send_sse(c, last);
    }
    herd_http_stream_send(c, "data: [DONE]\n\n", 14);
    call_end(c, a);
    herd_http_stream_end(c);
}

static const struct herd_http_work_ops call_ops = {call_wake, call_cancel, call_abort};

/* The scheduler's notify, on its thread. */
static void wake(void *arg) { herd_http_request_wake(arg); }

/* Submits the prompts (all or none) and starts the answer. */
static void start(struct herd_http_request *c, bool chat, int32_t *const *ids, const uint32_t *n_ids,
                  uint32_t n_prompts, struct herd_gen_params *gp, bool stream, bool include_usage) {
    struct herd_error err = {0};
    struct api_call *a = calloc(1, sizeof *a);
    if (a) a->ch = calloc((size_t)n_prompts * gp->n, sizeof *a->ch);
    if (!a || !a->ch) {
        free(a);
        herd_http_respond_error(c, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    a->chat = chat;
    a->stream = stream;
    a->include_usage = include_usage;
    a->per_prompt = gp->n;
    a->n = n_prompts * gp->n;
    a->want_logprobs = gp->logprobs || gp->top_logprobs;
    a->top_logprobs = gp->top_logprobs;
    a->created = time(NULL);
    snprintf(a->id, sizeof a->id, "%s-%s", chat ? "chatcmpl" : "cmpl", herd_http_request_id(c));
    for (uint32_t i = 0; i < a->n; i++) herd_buf_init(&a->ch[i].text, (size_t)64 << 20);
    enum herd_status rc = HERD_OK;
    for (uint32_t k = 0; k < n_prompts && rc == HERD_OK; k++) {
        a->prompt_tokens += n_ids[k];
        struct herd_request *r = herd_request_create(ids[k], n_ids[k], gp, wake, c, &err);
        if (!r) {
            call_free(a);
            bad(c, NULL, "%s", err.msg);
            return;
        }
        a->req[a->n_req++] = r;
        rc = herd_sched_submit(srv(c)->m.sched, r, &err);
    }
    if (rc != HERD_OK) {
        call_free(a); /* cancels the prompts already queued */
        if (rc == HERD_E_AGAIN)
            server_respond_queue_full(c, err.msg);
        else if (strstr(err.msg, "shutting down"))
            herd_http_respond_error(c, 503, "server_error", NULL, "draining", "%s", err.msg);
        else if (rc == HERD_E_IO) /* the engine failed */
            herd_http_respond_error(c, 503, "server_error", NULL, "engine_failed", "%s", err.msg);
        else
            bad(c, NULL, "%s", err.msg);
        return;
    }
    herd_http_request_set_work(c, &call_ops, a);
    if (stream) herd_http_sse_begin(c);
}

/* ------------------------------------------------------------- chat */

static bool check_messages(struct herd_http_request *c, json_t *msgs) {
    if (!msgs) return bad(c, "messages", "'messages' is required");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return bad(c, "messages", "'messages' must be a non-empty array");
    if (json_array_size(msgs) > srv(c)->p.max_messages)
        return bad(c, "messages", "'messages' has %zu entries; at most %u", json_array_size(msgs),
                   srv(c)->p.max_messages);
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        char param[48];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!json_is_object(m)) return bad(c, param, "%s must be an object", param);
        json_t *role = json_object_get(m, "role");
        if (!json_is_string(role)) return bad(c, param, "%s.role must be a string", param);
        const char *r = json_string_value(role);
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "tool") &&
            strcmp(r, "developer"))
            return bad(c, param, "%s.role must be system, developer, user, assistant or tool, not '%s'", param, r);
        json_t *content = json_object_get(m, "content");
        bool may_be_null = strcmp(r, "assistant") == 0;
        if (json_is_string(content)) continue;
        if ((!content || json_is_null(content)) && may_be_null) continue;
        if (!json_is_array(content)) return bad(c, param, "%s.content must be a string or an array of parts", param);
        size_t k;
        json_t *part;
        json_array_foreach(content, k, part) {
            json_t *type = json_object_get(part, "type");
            if (!json_is_object(part) || !json_is_string(type))
                return bad(c, param, "%s.content[%zu] must be an object with a type", param, k);
            if (strcmp(json_string_value(type), "text") != 0)
                return bad(c, param, "%s.content[%zu]: only text parts are supported, not '%s'", param, k,
                           json_string_value(type));
            if (!json_is_string(json_object_get(part, "text")))
                return bad(c, param, "%s.content[%zu].text must be a string", param, k);
        }
    }
    return true;
}

static const char *const chat_fields[] = {"messages",
                                          "max_completion_tokens",
                                          "top_logprobs",
                                          "tools",
                                          "tool_choice",
                                          "parallel_tool_calls",
                                          "response_format",
                                          "metadata",
                                          "store",
                                          "service_tier",
                                          NULL};

void api_chat_completions(struct herd_http_request *c, json_t *body, void *app) {
    (void)app;
    const struct herd_server_model *m = &srv(c)->m;
    if (!known_fields(c, body, generation_fields, chat_fields) || !check_model(c, body)) return;
    json_t *msgs = json_object_get(body, "messages");
    if (!check_messages(c, msgs)) return;
    json_t *tools = json_object_get(body, "tools");
    if (tools && !json_is_null(tools) && !json_is_array(tools)) {
        bad(c, "tools", "'tools' must be an array");
        return;
    }
    json_t *rf = json_object_get(body, "response_format");
    if (rf && !json_is_null(rf) &&
        (!json_is_object(rf) || !json_is_string(json_object_get(rf, "type")) ||
         strcmp(json_string_value(json_object_get(rf, "type")), "text") != 0)) {
        bad(c, "response_format", "only response_format {\"type\": \"text\"} is supported");
        return;
    }
    struct herd_gen_params gp;
    herd_gen_default_params(&gp);
    static struct herd_logit_bias bias[1024];
    bool stream = false, include_usage = false, logprobs = false;
    long long top = 0;
    if (!gen_params(c, body, &gp, bias, &stream, &include_usage) || !opt_bool(c, body, "logprobs", &logprobs) ||
        !opt_int(c, body, "top_logprobs", 0, HERD_MAX_TOP_LOGPROBS, &top))
        return;
    if (top && !logprobs) {
        bad(c, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
        return;
    }
    gp.logprobs = logprobs;
    gp.top_logprobs = (uint32_t)top;
    struct herd_chat_render_params rp = {
        .messages = msgs,
        .tools = tools && json_is_array(tools) && json_array_size(tools) ? tools : NULL,
        .add_generation_prompt = true,
        .now = time(NULL),
    };
    char *prompt = NULL;
    size_t len = 0;
    struct herd_error err = {0};
    if (herd_chat_template_render(m->chat_template, &rp, &prompt, &len, &err) != HERD_OK) {
        bad(c, "messages", "%s", err.msg);
        return;
    }
    uint32_t cap = herd_sched_n_ctx(m->sched);
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    uint32_t n_ids = 0;
    enum herd_status rc =
        ids ? herd_tokenize(m->tokenizer, prompt, len, HERD_TOK_PARSE_SPECIAL, ids, cap, &n_ids, &err) : HERD_E_NOMEM;
    free(prompt);
    if (rc == HERD_E_OVERFLOW) {
        free(ids);
        server_count_rejection(srv(c), SERVER_REJECT_TOO_LONG);
        herd_http_respond_error(c, 400, "invalid_request_error", "messages", "context_length_exceeded",
                                "this model's maximum context length is %u tokens; the messages need more", cap);
        return;
    }
    if (rc != HERD_OK) {
        free(ids);
        bad(c, "messages", "%s", rc == HERD_E_NOMEM ? "out of memory" : err.msg);
        return;
    }
    if (!max_tokens(c, body, n_ids, &gp)) {
        free(ids);
        return;
    }
    start(c, true, &ids, &n_ids, 1, &gp, stream, include_usage);
    free(ids);
}

/* -------------------------------------------------------- completions */

static const char *const completion_fields[] = {"prompt", "echo", "suffix", NULL};

/* One prompt of /v1/completions into ids: a string (tokenized, BOS added;
 * control-token text is plain text) or an array of token ids. False after
 * answering the error, which names param. */
static bool completion_prompt(struct herd_http_request *c, json_t *prompt, const char *param, int32_t *ids,
                              uint32_t cap, uint32_t *n_ids) {
    const struct herd_server_model *m = &srv(c)->m;
    *n_ids = 0;
    if (json_is_string(prompt)) {
        struct herd_error err = {0};
        enum herd_status rc = herd_tokenize(m->tokenizer, json_string_value(prompt), json_string_length(prompt),
                                            HERD_TOK_ADD_SPECIAL, ids, cap, n_ids, &err);
        if (rc == HERD_E_OVERFLOW) {
            server_count_rejection(srv(c), SERVER_REJECT_TOO_LONG);
            herd_http_respond_error(c, 400, "invalid_request_error", param, "context_length_exceeded",
                                    "this model's maximum context length is %u tokens; the prompt has more", cap);
            return false;
        }
        if (rc != HERD_OK) return bad(c, param, "%s", err.msg);
    } else if (json_is_array(prompt) && json_array_size(prompt) > 0) {
        if (json_array_size(prompt) >= cap) {
            server_count_rejection(srv(c), SERVER_REJECT_TOO_LONG);
            herd_http_respond_error(c, 400, "invalid_request_error", param, "context_length_exceeded",
                                    "this model's maximum context length is %u tokens; the prompt has %zu", cap,
                                    json_array_size(prompt));
            return false;
        }
        size_t i;
        json_t *t;
        json_array_foreach(prompt, i, t) {
            if (!json_is_integer(t) || json_integer_value(t) < 0 ||
                (uint64_t)json_integer_value(t) >= m->model->desc.n_vocab)
                return bad(c, param, "invalid token id at %s[%zu] (the vocabulary has %llu tokens)", param, i,
                           (unsigned long long)m->model->desc.n_vocab);
            ids[(*n_ids)++] = (int32_t)json_integer_value(t);
        }
    } else {
        return bad(c, param, "%s must be a string or a non-empty array of token ids", param);
    }
    if (*n_ids == 0) return bad(c, param, "the prompt is empty");
    return true;
}

void api_completions(struct herd_http_request *c, json_t *body, void *app) {
    (void)app;
    const struct herd_server_model *m = &srv(c)->m;
    if (!known_fields(c, body, generation_fields, completion_fields) || !check_model(c, body)) return;
    struct herd_gen_params gp;
    herd_gen_default_params(&gp);
    static struct herd_logit_bias bias[1024];
    bool stream = false, include_usage = false, echo = false;
    long long lp = -1;
    if (!gen_params(c, body, &gp, bias, &stream, &include_usage) || !opt_int(c, body, "logprobs", 0, 5, &lp) ||
        !opt_bool(c, body, "echo", &echo))
        return;
    if (echo) {
        bad(c, "echo", "'echo' is not supported");
        return;
    }
    json_t *suffix = json_object_get(body, "suffix");
    if (suffix && !json_is_null(suffix)) {
        bad(c, "suffix", "'suffix' is not supported");
        return;
    }
    gp.logprobs = lp >= 0;
    gp.top_logprobs = lp > 0 ? (uint32_t)lp : 0;
    /* prompt: a string, an array of token ids, or an array of several
     * prompts (strings or arrays of token ids) */
    json_t *prompt = json_object_get(body, "prompt");
    json_t *list[MAX_PROMPTS];
    uint32_t n_prompts = 0;
    if (json_is_string(prompt) ||
        (json_is_array(prompt) && json_array_size(prompt) > 0 && json_is_integer(json_array_get(prompt, 0)))) {
        list[n_prompts++] = prompt;
    } else if (json_is_array(prompt) && json_array_size(prompt) > 0) {
        if (json_array_size(prompt) > MAX_PROMPTS) {
            bad(c, "prompt", "at most %d prompts per request", MAX_PROMPTS);
            return;
        }
        size_t i;
        json_t *p;
        json_array_foreach(prompt, i, p) list[n_prompts++] = p;
    } else {
        bad(c, "prompt", "'prompt' must be a string, an array of token ids, or an array of such prompts");
        return;
    }
    if (n_prompts * gp.n > MAX_TOTAL_CHOICES) {
        bad(c, "n", "%u prompts x n = %u choices; at most %d per request", n_prompts, n_prompts * gp.n,
            MAX_TOTAL_CHOICES);
        return;
    }
    const uint32_t cap = herd_sched_n_ctx(m->sched);
    int32_t *store = malloc((size_t)n_prompts * cap * sizeof *store);
    if (!store) {
        herd_http_respond_error(c, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    int32_t *ids[MAX_PROMPTS];
    uint32_t n_ids[MAX_PROMPTS], longest = 0;
    for (uint32_t k = 0; k < n_prompts; k++) {
        ids[k] = store + (size_t)k * cap;
        char param[32];
        snprintf(param, sizeof param, n_prompts > 1 ? "prompt[%u]" : "prompt", k);
        if (!completion_prompt(c, list[k], param, ids[k], cap, &n_ids[k])) {
            free(store);
            return;
        }
        if (n_ids[k] > longest) longest = n_ids[k];
    }
    if (max_tokens(c, body, longest, &gp)) start(c, false, ids, n_ids, n_prompts, &gp, stream, include_usage);
    free(store);
}

/* ------------------------------------------------------------- the rest */

void api_models(struct herd_http_request *c, const char *id) {
    json_t *model = json_pack("{s:s,s:s,s:I,s:s,s:i}", "id", srv(c)->p.model_name, "object", "model", "created",
                              (json_int_t)srv(c)->started_wall, "owned_by", "herd", "max_model_len",
                              (int)herd_sched_n_ctx(srv(c)->m.sched));
    if (id) {
        if (strcmp(id, srv(c)->p.model_name) != 0) {
            json_decref(model);
            herd_http_respond_error(c, 404, "invalid_request_error", "model", "model_not_found",
                                    "the model '%s' does not exist", id);
            return;
        }
        herd_http_respond_json(c, 200, model);
        return;
    }
    herd_http_respond_json(c, 200, json_pack("{s:s,s:[o]}", "object", "list", "data", model));
}

void api_tokenize(struct herd_http_request *c, json_t *body, void *app) {
    (void)app;
    static const char *const fields[] = {"model",       "prompt",        "content", "add_special_tokens",
                                         "add_special", "parse_special", NULL};
    if (!known_fields(c, body, fields, NULL)) return;
    json_t *text = json_object_get(body, "prompt");
    if (!text) text = json_object_get(body, "content");
    if (!json_is_string(text)) {
        bad(c, "prompt", "'prompt' must be a string");
        return;
    }
    bool add = true, parse = false;
    if (!opt_bool(c, body, "add_special_tokens", &add) || !opt_bool(c, body, "add_special", &add) ||
        !opt_bool(c, body, "parse_special", &parse))
        return;
    size_t len = json_string_length(text);
    uint32_t cap = (uint32_t)(len + 16 < (1u << 24) ? len + 16 : (1u << 24));
    int32_t *ids = malloc(cap * sizeof *ids);
    uint32_t n = 0;
    struct herd_error err = {0};
    if (!ids || herd_tokenize(srv(c)->m.tokenizer, json_string_value(text), len,
                              (add ? HERD_TOK_ADD_SPECIAL : 0u) | (parse ? HERD_TOK_PARSE_SPECIAL : 0u), ids, cap, &n,
                              &err) != HERD_OK) {
        free(ids);
        bad(c, "prompt", "%s", ids ? err.msg : "out of memory");
        return;
    }
    json_t *arr = json_array();
    for (uint32_t i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
    free(ids);
    herd_http_respond_json(c, 200,
                           json_pack("{s:o,s:i,s:i}", "tokens", arr, "count", (int)n, "max_model_len",
                                     (int)herd_sched_n_ctx(srv(c)->m.sched)));
}

void api_detokenize(struct herd_http_request *c, json_t *body, void *app) {
    (void)app;
    static const char *const fields[] = {"model", "tokens", NULL};
    if (!known_fields(c, body, fields, NULL)) return;
    json_t *toks = json_object_get(body, "tokens");
    if (!json_is_array(toks)) {
        bad(c, "tokens", "'tokens' must be an array of token ids");
        return;
    }
    const struct herd_vocab *v = srv(c)->m.vocab;
    struct herd_buf out;
    herd_buf_init(&out, (size_t)64 << 20);
    struct herd_detok d;
    herd_detok_init(&d, v);
    char piece[1024];
    size_t i;
    json_t *t;
    json_array_foreach(toks, i, t) {
        if (!json_is_integer(t) || json_integer_value(t) < 0 || (uint64_t)json_integer_value(t) >= v->n_tokens) {
            herd_buf_cleanup(&out);
            bad(c, "tokens", "invalid token id at tokens[%zu]", i);
            return;
        }
        size_t n = herd_detok_push(&d, (int32_t)json_integer_value(t), piece, sizeof piece);
        herd_buf_append(&out, piece, n);
    }
    size_t n = herd_detok_flush(&d, piece, sizeof piece);
    herd_buf_append(&out, piece, n);
    json_t *res = json_pack("{s:o}", "prompt", json_text((const char *)out.data, out.len));
    herd_buf_cleanup(&out);
    herd_http_respond_json(c, 200, res);
}
