/* Requests of the OpenAI API (api.h): /v1/chat/completions and
 * /v1/completions into token ids and generation parameters, /tokenize,
 * /detokenize and /v1/models, each check an error naming its field. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/timing.h"
#include "sampling/json_schema.h"

/* ------------------------------------------------------------ errors */

static bool set_error(struct herd_api_error *err, enum herd_api_error_kind kind, const char *type, const char *param,
                      const char *code, const char *fmt, va_list ap) {
    err->kind = kind;
    err->type = type;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    err->code = code;
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    return false;
}

/* A 400 naming param; messages are cut at 511 bytes. Returns false, so a
 * check can `return bad(...)`. */
static bool bad(struct herd_api_error *err, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool bad(struct herd_api_error *err, const char *param, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err->kind = HERD_API_BAD_REQUEST;
    err->type = "invalid_request_error";
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    err->code = NULL;
    snprintf(err->message, sizeof err->message, "%s", msg);
    return false;
}

static bool fail(struct herd_api_error *err, enum herd_api_error_kind kind, const char *type, const char *param,
                 const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static bool fail(struct herd_api_error *err, enum herd_api_error_kind kind, const char *type, const char *param,
                 const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_error(err, kind, type, param, code, fmt, ap);
    va_end(ap);
    return false;
}

/* ------------------------------------------------------------ fields */

static bool opt_number(struct herd_api_error *err, json_t *body, const char *name, double lo, double hi, double *out) {
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v)) return true;
    if (!json_is_number(v)) return bad(err, name, "'%s' must be a number", name);
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi)
        return bad(err, name, "'%s' must be between %g and %g, got %g", name, lo, hi, x);
    *out = x;
    return true;
}

static bool opt_int(struct herd_api_error *err, json_t *body, const char *name, long long lo, long long hi,
                    long long *out) {
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v)) return true;
    if (!json_is_integer(v)) return bad(err, name, "'%s' must be an integer", name);
    long long x = json_integer_value(v);
    if (x < lo || x > hi) return bad(err, name, "'%s' must be between %lld and %lld, got %lld", name, lo, hi, x);
    *out = x;
    return true;
}

static bool opt_bool(struct herd_api_error *err, json_t *body, const char *name, bool *out) {
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v)) return true;
    if (!json_is_boolean(v)) return bad(err, name, "'%s' must be true or false", name);
    *out = json_is_true(v);
    return true;
}

static bool listed(const char *k, const char *const *names) {
    for (size_t i = 0; names && names[i]; i++)
        if (strcmp(k, names[i]) == 0) return true;
    return false;
}

/* Every field of body is in one of the two lists (the second may be NULL). */
static bool known_fields(struct herd_api_error *err, json_t *body, const char *const *known, const char *const *more) {
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        if (!listed(k, known) && !listed(k, more)) return bad(err, k, "unrecognized request argument supplied: %s", k);
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
                                                "herd_resume",
                                                "response_format",
                                                "grammar",
                                                NULL};

static bool check_model(struct herd_api_error *err, json_t *body, const char *model_name) {
    json_t *m = json_object_get(body, "model");
    if (!m) return bad(err, "model", "'model' is required");
    if (!json_is_string(m)) return bad(err, "model", "'model' must be a string");
    if (strcmp(json_string_value(m), model_name) != 0)
        return fail(err, HERD_API_MODEL_NOT_FOUND, "invalid_request_error", "model", "model_not_found",
                    "the model '%s' does not exist; this server serves '%s'", json_string_value(m), model_name);
    return true;
}

/* logit_bias: an object of token id: bias in [-100, 100] (-100 bans the
 * token), at most lim->max_logit_bias entries, into r->bias. */
static bool logit_bias(struct herd_api_error *err, json_t *body, const struct herd_api_limits *lim,
                       const struct herd_api_model *m, struct herd_api_request *r) {
    json_t *lb = json_object_get(body, "logit_bias");
    if (!lb || json_is_null(lb)) return true;
    if (!json_is_object(lb)) return bad(err, "logit_bias", "'logit_bias' must be an object of token id: bias");
    if (json_object_size(lb) > lim->max_logit_bias)
        return bad(err, "logit_bias", "'logit_bias' has %zu entries; at most %u", json_object_size(lb),
                   lim->max_logit_bias);
    if (json_object_size(lb) == 0) return true;
    r->bias = malloc(json_object_size(lb) * sizeof *r->bias);
    if (!r->bias) return fail(err, HERD_API_NO_MEMORY, "server_error", NULL, NULL, "out of memory");
    const char *k;
    json_t *v;
    uint32_t i = 0;
    json_object_foreach(lb, k, v) {
        char *end;
        long long id = strtoll(k, &end, 10);
        if (!*k || *end || id < 0 || (uint64_t)id >= m->n_vocab)
            return bad(err, "logit_bias", "'logit_bias' key '%s' is not a token id (0..%llu)", k,
                       (unsigned long long)m->n_vocab - 1);
        if (!json_is_number(v) || !isfinite(json_number_value(v)) || fabs(json_number_value(v)) > 100)
            return bad(err, "logit_bias", "'logit_bias' values must be numbers in [-100, 100]");
        double b = json_number_value(v);
        r->bias[i++] = (struct herd_logit_bias){(int32_t)id, b <= -100 ? -INFINITY : (float)b};
    }
    r->gp.sampling.bias = r->bias;
    r->gp.sampling.n_bias = i;
    return true;
}

/* response_format and herd's "grammar" (both endpoints): the grammar the
 * output must follow, parsed into r->grammar (owned) and r->gp.grammar. */
static bool output_grammar(struct herd_api_error *err, json_t *body, struct herd_api_request *r) {
    json_t *rf = json_object_get(body, "response_format"), *gr = json_object_get(body, "grammar");
    const char *text = NULL, *param = NULL;
    char *schema_gbnf = NULL; /* json_schema's grammar, freed here */
    size_t len = 0;
    if (rf && !json_is_null(rf)) {
        json_t *type = json_is_object(rf) ? json_object_get(rf, "type") : NULL;
        if (!json_is_string(type))
            return bad(err, "response_format", "'response_format' must be an object with a string 'type'");
        const char *t = json_string_value(type);
        if (strcmp(t, "json_object") == 0) {
            text = herd_grammar_json_object, len = strlen(herd_grammar_json_object), param = "response_format";
        } else if (strcmp(t, "json_schema") == 0) {
            json_t *js = json_object_get(rf, "json_schema");
            if (!json_is_object(js))
                return bad(err, "response_format.json_schema", "'response_format.json_schema' must be an object");
            if (!json_is_string(json_object_get(js, "name")))
                return bad(err, "response_format.json_schema.name",
                           "missing required parameter: 'response_format.json_schema.name'");
            json_t *schema = json_object_get(js, "schema");
            if (!schema) return bad(err, "response_format.json_schema.schema", "'json_schema.schema' is required");
            struct herd_error e = {0};
            if (herd_json_schema_to_gbnf(schema, &schema_gbnf, &e) != HERD_OK)
                return bad(err, "response_format.json_schema.schema", "%s", e.msg);
            text = schema_gbnf, len = strlen(schema_gbnf), param = "response_format.json_schema.schema";
        } else if (strcmp(t, "text") != 0) {
            return bad(err, "response_format",
                       "unknown response_format type '%.64s' (text, json_object or json_schema)", t);
        }
    }
    if (gr && !json_is_null(gr)) {
        if (text) {
            free(schema_gbnf);
            return bad(err, "grammar", "'grammar' and a JSON response_format cannot be combined");
        }
        if (!json_is_string(gr)) return bad(err, "grammar", "'grammar' must be a string in GBNF (llama.cpp's syntax)");
        text = json_string_value(gr), len = json_string_length(gr), param = "grammar";
    }
    if (!text) return true;
    struct herd_error e = {0};
    const bool ok = herd_grammar_parse(text, len, &r->grammar, &e) == HERD_OK;
    free(schema_gbnf);
    if (!ok) return bad(err, param, "%s", e.msg);
    r->gp.grammar = r->grammar;
    return true;
}

/* Sampling and stopping fields shared by both endpoints. */
static bool gen_params(struct herd_api_error *err, json_t *body, const struct herd_api_limits *lim,
                       const struct herd_api_model *m, struct herd_api_request *r) {
    struct herd_gen_params *gp = &r->gp;
    double t = 1.0, top_p = 1.0, min_p = 0, pres = 0, freq = 0, rep = 1.0;
    long long n = 1, top_k = 0, seed = -1, priority = 0;
    if (!opt_number(err, body, "temperature", 0, 2, &t) || !opt_number(err, body, "top_p", 1e-9, 1, &top_p) ||
        !opt_number(err, body, "min_p", 0, 1, &min_p) || !opt_number(err, body, "presence_penalty", -2, 2, &pres) ||
        !opt_number(err, body, "frequency_penalty", -2, 2, &freq) ||
        !opt_number(err, body, "repetition_penalty", 1e-3, 100, &rep) || !opt_int(err, body, "n", 1, lim->max_n, &n) ||
        !opt_int(err, body, "top_k", 0, 1 << 20, &top_k) || !opt_int(err, body, "seed", 0, INT64_MAX, &seed) ||
        !opt_int(err, body, "priority", -1000000, 1000000, &priority) || !opt_bool(err, body, "stream", &r->stream) ||
        !opt_bool(err, body, "ignore_eos", &gp->ignore_eos))
        return false;
    json_t *best_of = json_object_get(body, "best_of");
    if (best_of && !json_is_null(best_of) && (!json_is_integer(best_of) || json_integer_value(best_of) != n))
        return bad(err, "best_of", "'best_of' is not supported (it may only equal n)");
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
        if (!json_is_object(so)) return bad(err, "stream_options", "'stream_options' must be an object");
        json_t *iu = json_object_get(so, "include_usage");
        if (iu && !json_is_boolean(iu))
            return bad(err, "stream_options.include_usage", "'include_usage' must be true or false");
        r->include_usage = json_is_true(iu);
    }
    if (!logit_bias(err, body, lim, m, r) || !output_grammar(err, body, r)) return false;
    json_t *stop = json_object_get(body, "stop");
    if (stop && !json_is_null(stop)) {
        json_t *one = json_is_string(stop) ? stop : NULL;
        size_t count = one ? 1 : json_is_array(stop) ? json_array_size(stop) : 0;
        if (!one && !json_is_array(stop)) return bad(err, "stop", "'stop' must be a string or an array of strings");
        if (count > lim->max_stops || count > HERD_MAX_STOPS)
            return bad(err, "stop", "'stop' has %zu strings; at most %u", count, lim->max_stops);
        for (size_t i = 0; i < count; i++) {
            json_t *s = one ? one : json_array_get(stop, i);
            if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) > lim->max_stop_bytes)
                return bad(err, "stop", "stop strings must be non-empty strings of at most %u bytes",
                           lim->max_stop_bytes);
            gp->stop[gp->n_stop++] = json_string_value(s);
        }
    }
    return true;
}

/* max_tokens (or max_completion_tokens): at most what the context leaves;
 * absent, all of it. */
static bool max_tokens(struct herd_api_error *err, json_t *body, const struct herd_api_limits *lim, uint32_t n_ctx,
                       uint32_t n_prompt, struct herd_gen_params *gp) {
    long long mt = -1, mct = -1;
    if (!opt_int(err, body, "max_tokens", 1, INT32_MAX, &mt) ||
        !opt_int(err, body, "max_completion_tokens", 1, INT32_MAX, &mct))
        return false;
    long long want = mct > 0 ? mct : mt;
    if (n_prompt >= n_ctx || (want > 0 && (uint64_t)n_prompt + (uint64_t)want > n_ctx))
        return fail(err, HERD_API_TOO_LONG, "invalid_request_error",
                    want > 0 ? (mct > 0 ? "max_completion_tokens" : "max_tokens") : "messages",
                    "context_length_exceeded",
                    "this model's maximum context length is %u tokens; the prompt has %u tokens and %lld more "
                    "were requested (%llu > %u)",
                    n_ctx, n_prompt, want > 0 ? want : 1,
                    (unsigned long long)n_prompt + (want > 0 ? (unsigned long long)want : 1), n_ctx);
    if (want > lim->max_tokens_limit)
        return bad(err, mct > 0 ? "max_completion_tokens" : "max_tokens", "at most %u tokens may be requested",
                   lim->max_tokens_limit);
    gp->max_tokens = want > 0 ? (uint32_t)want : n_ctx - n_prompt;
    if (gp->max_tokens > lim->max_tokens_limit) gp->max_tokens = lim->max_tokens_limit;
    return true;
}

/* The bytes of text tokens[n] decode to, as the scheduler decodes an
 * output (a leading SentencePiece space kept). Checks the ids. */
static bool resumed_text_bytes(struct herd_api_error *err, const struct herd_api_model *m, json_t *tokens, int32_t *ids,
                               uint64_t *bytes) {
    struct herd_detok d;
    herd_detok_init(&d, m->tokenizer->vocab);
    d.started = true;
    char piece[1024];
    *bytes = 0;
    size_t i;
    json_t *t;
    json_array_foreach(tokens, i, t) {
        if (!json_is_integer(t) || json_integer_value(t) < 0 || (uint64_t)json_integer_value(t) >= m->n_vocab)
            return bad(err, "herd_resume", "herd_resume.tokens[%zu] is not a token id (0..%llu)", i,
                       (unsigned long long)m->n_vocab - 1);
        ids[i] = (int32_t)json_integer_value(t);
        *bytes += herd_detok_push(&d, ids[i], piece, sizeof piece);
    }
    *bytes += herd_detok_flush(&d, piece, sizeof piece);
    return true;
}

/* herd_resume (api.h; docs/modules/router-protocol.md, section 3): the
 * generated tokens go after the one prompt, max_tokens shrinks by their
 * number. After max_tokens(), which checked the prompt and max_tokens
 * against the context: prompt + tokens <= prompt + max_tokens fits. */
static bool resume(struct herd_api_error *err, json_t *body, const struct herd_api_model *m,
                   struct herd_api_request *r) {
    static const char *const fields[] = {"tokens", "text_bytes", "id", "created", NULL};
    json_t *res = json_object_get(body, "herd_resume");
    if (!res || json_is_null(res)) return true;
    if (!json_is_object(res))
        return bad(err, "herd_resume", "'herd_resume' must be an object {tokens, text_bytes, id, created}");
    if (!r->stream || r->gp.n != 1 || r->n_prompts != 1)
        return bad(err, "herd_resume", "'herd_resume' needs \"stream\": true, n 1 and one prompt");
    const char *k;
    json_t *v;
    json_object_foreach(res, k, v) {
        if (!listed(k, fields)) return bad(err, "herd_resume", "unknown field herd_resume.%s", k);
    }
    json_t *tokens = json_object_get(res, "tokens"), *tb = json_object_get(res, "text_bytes");
    json_t *id = json_object_get(res, "id"), *created = json_object_get(res, "created");
    if (!json_is_array(tokens)) return bad(err, "herd_resume", "herd_resume.tokens must be an array of token ids");
    if (json_array_size(tokens) > r->gp.max_tokens)
        return bad(err, "herd_resume", "herd_resume has %zu tokens; max_tokens allows %u", json_array_size(tokens),
                   r->gp.max_tokens);
    if (!json_is_integer(tb) || json_integer_value(tb) < 0)
        return bad(err, "herd_resume", "herd_resume.text_bytes must be an integer >= 0");
    if (!json_is_string(id) || json_string_length(id) == 0 || json_string_length(id) >= sizeof r->resume.id)
        return bad(err, "herd_resume", "herd_resume.id must be a string of 1 to %zu bytes", sizeof r->resume.id - 1);
    if (!json_is_integer(created) || json_integer_value(created) < 0)
        return bad(err, "herd_resume", "herd_resume.created must be an integer >= 0");
    uint64_t text = 0;
    if (!resumed_text_bytes(err, m, tokens, r->ids[0] + r->n_ids[0], &text)) return false;
    if ((uint64_t)json_integer_value(tb) > text)
        return bad(err, "herd_resume", "herd_resume.text_bytes is %lld, past the tokens' text (%llu bytes)",
                   (long long)json_integer_value(tb), (unsigned long long)text);
    const uint32_t n = (uint32_t)json_array_size(tokens);
    r->n_ids[0] += n;
    r->gp.resume_tokens = n;
    r->gp.resume_skip_bytes = (uint64_t)json_integer_value(tb);
    r->gp.max_tokens -= n;
    r->resume.on = true;
    snprintf(r->resume.id, sizeof r->resume.id, "%s", json_string_value(id));
    r->resume.created = (time_t)json_integer_value(created);
    return true;
}

static void request_init(struct herd_api_request *r, bool chat) {
    memset(r, 0, sizeof *r);
    r->chat = chat;
    herd_gen_default_params(&r->gp);
}

void herd_api_request_cleanup(struct herd_api_request *r) {
    herd_grammar_destroy(r->grammar);
    r->grammar = NULL;
    r->gp.grammar = NULL;
    free(r->bias);
    free(r->id_store);
    r->bias = NULL;
    r->id_store = NULL;
}

/* ------------------------------------------------------------- chat */

static bool check_messages(struct herd_api_error *err, json_t *msgs, uint32_t max_messages) {
    if (!msgs) return bad(err, "messages", "'messages' is required");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return bad(err, "messages", "'messages' must be a non-empty array");
    if (json_array_size(msgs) > max_messages)
        return bad(err, "messages", "'messages' has %zu entries; at most %u", json_array_size(msgs), max_messages);
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        char param[48];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!json_is_object(m)) return bad(err, param, "%s must be an object", param);
        json_t *role = json_object_get(m, "role");
        if (!json_is_string(role)) return bad(err, param, "%s.role must be a string", param);
        const char *r = json_string_value(role);
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "tool") &&
            strcmp(r, "developer"))
            return bad(err, param, "%s.role must be system, developer, user, assistant or tool, not '%s'", param, r);
        json_t *content = json_object_get(m, "content");
        bool may_be_null = strcmp(r, "assistant") == 0;
        if (json_is_string(content)) continue;
        if ((!content || json_is_null(content)) && may_be_null) continue;
        if (!json_is_array(content)) return bad(err, param, "%s.content must be a string or an array of parts", param);
        size_t k;
        json_t *part;
        json_array_foreach(content, k, part) {
            json_t *type = json_object_get(part, "type");
            if (!json_is_object(part) || !json_is_string(type))
                return bad(err, param, "%s.content[%zu] must be an object with a type", param, k);
            if (strcmp(json_string_value(type), "text") != 0)
                return bad(err, param, "%s.content[%zu]: only text parts are supported, not '%s'", param, k,
                           json_string_value(type));
            if (!json_is_string(json_object_get(part, "text")))
                return bad(err, param, "%s.content[%zu].text must be a string", param, k);
        }
    }
    return true;
}

static const char *const chat_fields[] = {"messages",     "max_completion_tokens",
                                          "top_logprobs", "tools",
                                          "tool_choice",  "parallel_tool_calls",
                                          "metadata",     "store",
                                          "service_tier", NULL};

static bool parse_chat(json_t *body, const struct herd_api_limits *lim, const struct herd_api_model *m,
                       struct herd_api_request *r, struct herd_api_error *err) {
    if (!known_fields(err, body, generation_fields, chat_fields) || !check_model(err, body, lim->model_name))
        return false;
    json_t *msgs = json_object_get(body, "messages");
    if (!check_messages(err, msgs, lim->max_messages)) return false;
    json_t *tools = json_object_get(body, "tools");
    bool logprobs = false;
    long long top = 0;
    if (!gen_params(err, body, lim, m, r) || !opt_bool(err, body, "logprobs", &logprobs) ||
        !opt_int(err, body, "top_logprobs", 0, HERD_MAX_TOP_LOGPROBS, &top))
        return false;
    if (top && !logprobs) return bad(err, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
    if (!herd_api_parse_tools(body, m, r, err)) return false;
    r->gp.logprobs = logprobs;
    r->gp.top_logprobs = (uint32_t)top;
    struct herd_chat_render_params rp = {
        .messages = msgs,
        .tools = tools && json_is_array(tools) && json_array_size(tools) ? tools : NULL,
        .add_generation_prompt = true,
        .now = time(NULL),
    };
    char *prompt = NULL;
    size_t len = 0;
    struct herd_error e = {0};
    if (herd_chat_template_render(m->chat_template, &rp, &prompt, &len, &e) != HERD_OK)
        return bad(err, "messages", "%s", e.msg);
    const uint32_t cap = m->n_ctx;
    r->id_store = malloc((size_t)cap * sizeof *r->id_store);
    uint32_t n_ids = 0;
    enum herd_status rc =
        r->id_store ? herd_tokenize(m->tokenizer, prompt, len, HERD_TOK_PARSE_SPECIAL, r->id_store, cap, &n_ids, &e)
                    : HERD_E_NOMEM;
    free(prompt);
    if (rc == HERD_E_OVERFLOW)
        return fail(err, HERD_API_TOO_LONG, "invalid_request_error", "messages", "context_length_exceeded",
                    "this model's maximum context length is %u tokens; the messages need more", cap);
    if (rc != HERD_OK) return bad(err, "messages", "%s", rc == HERD_E_NOMEM ? "out of memory" : e.msg);
    if (!max_tokens(err, body, lim, m->n_ctx, n_ids, &r->gp)) return false;
    r->n_prompts = 1;
    r->ids[0] = r->id_store;
    r->n_ids[0] = n_ids;
    return resume(err, body, m, r);
}

bool herd_api_parse_chat(json_t *body, const struct herd_api_limits *lim, const struct herd_api_model *m,
                         struct herd_api_request *out, struct herd_api_error *err) {
    request_init(out, true);
    if (parse_chat(body, lim, m, out, err)) return true;
    herd_api_request_cleanup(out);
    return false;
}

/* -------------------------------------------------------- completions */

static const char *const completion_fields[] = {"prompt", "echo", "suffix", NULL};

/* One prompt of /v1/completions into ids: a string (tokenized, BOS added;
 * control-token text is plain text) or an array of token ids. */
static bool completion_prompt(struct herd_api_error *err, const struct herd_api_model *m, json_t *prompt,
                              const char *param, int32_t *ids, uint32_t cap, uint32_t *n_ids) {
    *n_ids = 0;
    if (json_is_string(prompt)) {
        struct herd_error e = {0};
        enum herd_status rc = herd_tokenize(m->tokenizer, json_string_value(prompt), json_string_length(prompt),
                                            HERD_TOK_ADD_SPECIAL, ids, cap, n_ids, &e);
        if (rc == HERD_E_OVERFLOW)
            return fail(err, HERD_API_TOO_LONG, "invalid_request_error", param, "context_length_exceeded",
                        "this model's maximum context length is %u tokens; the prompt has more", cap);
        if (rc != HERD_OK) return bad(err, param, "%s", e.msg);
    } else if (json_is_array(prompt) && json_array_size(prompt) > 0) {
        if (json_array_size(prompt) >= cap)
            return fail(err, HERD_API_TOO_LONG, "invalid_request_error", param, "context_length_exceeded",
                        "this model's maximum context length is %u tokens; the prompt has %zu", cap,
                        json_array_size(prompt));
        size_t i;
        json_t *t;
        json_array_foreach(prompt, i, t) {
            if (!json_is_integer(t) || json_integer_value(t) < 0 || (uint64_t)json_integer_value(t) >= m->n_vocab)
                return bad(err, param, "invalid token id at %s[%zu] (the vocabulary has %llu tokens)", param, i,
                           (unsigned long long)m->n_vocab);
            ids[(*n_ids)++] = (int32_t)json_integer_value(t);
        }
    } else {
        return bad(err, param, "%s must be a string or a non-empty array of token ids", param);
    }
    if (*n_ids == 0) return bad(err, param, "the prompt is empty");
    return true;
}

static bool parse_completion(json_t *body, const struct herd_api_limits *lim, const struct herd_api_model *m,
                             struct herd_api_request *r, struct herd_api_error *err) {
    if (!known_fields(err, body, generation_fields, completion_fields) || !check_model(err, body, lim->model_name))
        return false;
    bool echo = false;
    long long lp = -1;
    if (!gen_params(err, body, lim, m, r) || !opt_int(err, body, "logprobs", 0, 5, &lp) ||
        !opt_bool(err, body, "echo", &echo))
        return false;
    if (echo) return bad(err, "echo", "'echo' is not supported");
    json_t *suffix = json_object_get(body, "suffix");
    if (suffix && !json_is_null(suffix)) return bad(err, "suffix", "'suffix' is not supported");
    r->gp.logprobs = lp >= 0;
    r->gp.top_logprobs = lp > 0 ? (uint32_t)lp : 0;
    /* prompt: a string, an array of token ids, or an array of several
     * prompts (strings or arrays of token ids) */
    json_t *prompt = json_object_get(body, "prompt");
    json_t *list[HERD_API_MAX_PROMPTS];
    uint32_t n_prompts = 0;
    if (json_is_string(prompt) ||
        (json_is_array(prompt) && json_array_size(prompt) > 0 && json_is_integer(json_array_get(prompt, 0)))) {
        list[n_prompts++] = prompt;
    } else if (json_is_array(prompt) && json_array_size(prompt) > 0) {
        if (json_array_size(prompt) > HERD_API_MAX_PROMPTS)
            return bad(err, "prompt", "at most %d prompts per request", HERD_API_MAX_PROMPTS);
        size_t i;
        json_t *p;
        json_array_foreach(prompt, i, p) list[n_prompts++] = p;
    } else {
        return bad(err, "prompt", "'prompt' must be a string, an array of token ids, or an array of such prompts");
    }
    if (n_prompts * r->gp.n > HERD_API_MAX_TOTAL_CHOICES)
        return bad(err, "n", "%u prompts x n = %u choices; at most %d per request", n_prompts, n_prompts * r->gp.n,
                   HERD_API_MAX_TOTAL_CHOICES);
    const uint32_t cap = m->n_ctx;
    r->id_store = malloc((size_t)n_prompts * cap * sizeof *r->id_store);
    if (!r->id_store) return fail(err, HERD_API_NO_MEMORY, "server_error", NULL, NULL, "out of memory");
    uint32_t longest = 0;
    for (uint32_t k = 0; k < n_prompts; k++) {
        r->ids[k] = r->id_store + (size_t)k * cap;
        char param[32];
        snprintf(param, sizeof param, n_prompts > 1 ? "prompt[%u]" : "prompt", k);
        if (!completion_prompt(err, m, list[k], param, r->ids[k], cap, &r->n_ids[k])) return false;
        if (r->n_ids[k] > longest) longest = r->n_ids[k];
    }
    r->n_prompts = n_prompts;
    return max_tokens(err, body, lim, m->n_ctx, longest, &r->gp) && resume(err, body, m, r);
}

bool herd_api_parse_completion(json_t *body, const struct herd_api_limits *lim, const struct herd_api_model *m,
                               struct herd_api_request *out, struct herd_api_error *err) {
    request_init(out, false);
    if (parse_completion(body, lim, m, out, err)) return true;
    herd_api_request_cleanup(out);
    return false;
}

/* ------------------------------------------------------------- the rest */

json_t *herd_api_models(const char *id, const char *model_name, time_t created, uint32_t n_ctx,
                        struct herd_api_error *err) {
    if (id && strcmp(id, model_name) != 0) {
        fail(err, HERD_API_MODEL_NOT_FOUND, "invalid_request_error", "model", "model_not_found",
             "the model '%s' does not exist", id);
        return NULL;
    }
    json_t *model = json_pack("{s:s,s:s,s:I,s:s,s:i}", "id", model_name, "object", "model", "created",
                              (json_int_t)created, "owned_by", "herd", "max_model_len", (int)n_ctx);
    if (id) return model;
    return json_pack("{s:s,s:[o]}", "object", "list", "data", model);
}

json_t *herd_api_tokenize(json_t *body, const struct herd_api_model *m, struct herd_api_error *err) {
    static const char *const fields[] = {"model",       "prompt",        "content", "add_special_tokens",
                                         "add_special", "parse_special", NULL};
    if (!known_fields(err, body, fields, NULL)) return NULL;
    json_t *text = json_object_get(body, "prompt");
    if (!text) text = json_object_get(body, "content");
    if (!json_is_string(text)) {
        bad(err, "prompt", "'prompt' must be a string");
        return NULL;
    }
    bool add = true, parse = false;
    if (!opt_bool(err, body, "add_special_tokens", &add) || !opt_bool(err, body, "add_special", &add) ||
        !opt_bool(err, body, "parse_special", &parse))
        return NULL;
    size_t len = json_string_length(text);
    uint32_t cap = (uint32_t)(len + 16 < (1u << 24) ? len + 16 : (1u << 24));
    int32_t *ids = malloc(cap * sizeof *ids);
    uint32_t n = 0;
    struct herd_error e = {0};
    if (!ids || herd_tokenize(m->tokenizer, json_string_value(text), len,
                              (add ? HERD_TOK_ADD_SPECIAL : 0u) | (parse ? HERD_TOK_PARSE_SPECIAL : 0u), ids, cap, &n,
                              &e) != HERD_OK) {
        bad(err, "prompt", "%s", ids ? e.msg : "out of memory");
        free(ids);
        return NULL;
    }
    json_t *arr = json_array();
    for (uint32_t i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
    free(ids);
    return json_pack("{s:o,s:i,s:i}", "tokens", arr, "count", (int)n, "max_model_len", (int)m->n_ctx);
}

json_t *herd_api_detokenize(json_t *body, const struct herd_vocab *v, struct herd_api_error *err) {
    static const char *const fields[] = {"model", "tokens", NULL};
    if (!known_fields(err, body, fields, NULL)) return NULL;
    json_t *toks = json_object_get(body, "tokens");
    if (!json_is_array(toks)) {
        bad(err, "tokens", "'tokens' must be an array of token ids");
        return NULL;
    }
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
            bad(err, "tokens", "invalid token id at tokens[%zu]", i);
            return NULL;
        }
        size_t n = herd_detok_push(&d, (int32_t)json_integer_value(t), piece, sizeof piece);
        herd_buf_append(&out, piece, n);
    }
    size_t n = herd_detok_flush(&d, piece, sizeof piece);
    herd_buf_append(&out, piece, n);
    json_t *res = json_pack("{s:o}", "prompt", herd_api_text((const char *)out.data, out.len));
    herd_buf_cleanup(&out);
    return res;
}
