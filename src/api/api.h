/* The OpenAI-compatible API as pure functions, with no socket in sight:
 * a request's JSON body in, a checked request (token ids, generation
 * parameters) or an error (type, param, code, message) out; scheduler
 * events in, response JSON out. `herd serve` maps the errors to HTTP
 * statuses and writes the JSON; batch jobs call the same functions on
 * JSONL lines.
 *
 * Validation follows OpenAI's: a wrong type or range is an error naming
 * the field in `param`, unknown fields too. Every array a client sizes
 * (messages, prompts, stop strings, logit_bias) is bounded by a limit
 * checked before anything is allocated for it. */
#ifndef HERD_API_API_H
#define HERD_API_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "base/buf.h"
#include "engine/sched.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

/* Prompts in one /v1/completions request, and choices over all of them. */
#define HERD_API_MAX_PROMPTS       64
#define HERD_API_MAX_TOTAL_CHOICES 64

/* What kind of failure an error is; the server maps it to an HTTP status
 * and a rejection reason for its metrics. */
enum herd_api_error_kind {
    HERD_API_BAD_REQUEST,     /* 400: a field is wrong */
    HERD_API_TOO_LONG,        /* 400 context_length_exceeded: the prompt and output do not fit */
    HERD_API_MODEL_NOT_FOUND, /* 404: another model was named */
    HERD_API_NO_MEMORY,       /* 500: the server could not allocate */
};

struct herd_api_error {
    enum herd_api_error_kind kind;
    const char *type; /* "invalid_request_error", "server_error" */
    char param[64];   /* the field at fault, "" for none */
    const char *code; /* "context_length_exceeded", "model_not_found", or NULL */
    char message[1024];
};

/* The limits a server sets on requests. */
struct herd_api_limits {
    const char *model_name;    /* the id requests must name */
    uint32_t max_n;            /* largest n */
    uint32_t max_tokens_limit; /* largest max_tokens */
    uint32_t max_stops;        /* stop strings per request */
    uint32_t max_stop_bytes;   /* bytes per stop string */
    uint32_t max_logit_bias;   /* logit_bias entries */
    uint32_t max_messages;     /* messages per chat request */
};

/* What the requests are checked and tokenized against. */
struct herd_api_model {
    const struct herd_tokenizer *tokenizer;
    const struct herd_chat_template *chat_template;
    uint64_t n_vocab;
    uint32_t n_ctx; /* positions per sequence */
};

/* "herd_resume" (docs/modules/router-protocol.md, section 3): the
 * generation another server began goes on here. Its tokens end ids[0]
 * (gp.resume_tokens of them, gp.resume_skip_bytes their text's bytes the
 * client has; gp.max_tokens is already reduced by them). */
struct herd_api_resume {
    bool on;
    char id[64];    /* the chunks' id, as the first server sent it */
    time_t created; /* and their created */
};

/* The request's tools (chat): on when it has some and tool_choice is not
 * "none" (the answer is then parsed for calls); constrained when
 * tool_choice is "required" or a named function (the grammar makes the
 * model write one call). */
struct herd_api_tools {
    bool on, parallel, constrained;
    enum herd_tool_format format;
};

/* A checked /v1/chat/completions or /v1/completions request. Its stop
 * strings point into the JSON body, which must outlive it until the
 * scheduler's requests are created (they copy them). */
struct herd_api_request {
    bool chat, stream, include_usage;
    struct herd_api_resume resume;
    struct herd_gen_params gp;
    struct herd_logit_bias *bias; /* [gp.sampling.n_bias], owned */
    struct herd_grammar *grammar; /* response_format / "grammar", owned (gp.grammar points at it); NULL: none */
    struct herd_api_tools tools;
    uint32_t n_prompts; /* 1 for chat */
    int32_t *ids[HERD_API_MAX_PROMPTS];
    uint32_t n_ids[HERD_API_MAX_PROMPTS];
    int32_t *id_store; /* owned: n_prompts x n_ctx */
};

/* Parse and check body; on success fill *out (free with
 * herd_api_request_cleanup), else fill *err. Both return false on error. */
bool herd_api_parse_chat(json_t *body, const struct herd_api_limits *lim, const struct herd_api_model *m,
                         struct herd_api_request *out, struct herd_api_error *err);
bool herd_api_parse_completion(json_t *body, const struct herd_api_limits *lim, const struct herd_api_model *m,
                               struct herd_api_request *out, struct herd_api_error *err);
void herd_api_request_cleanup(struct herd_api_request *r);

/* tools, tool_choice and parallel_tool_calls of a chat body into r->tools
 * (and, for a required or named tool_choice, r->grammar). After the
 * sampling fields: a grammar from response_format conflicts with a forced
 * call. False with err filled on a bad request. */
bool herd_api_parse_tools(json_t *body, const struct herd_api_model *m, struct herd_api_request *r,
                          struct herd_api_error *err);

/* The tool calls in a model's answer written in format f, as OpenAI's
 * tool_calls array (ids "call_..." derived from seed), or NULL when the
 * answer holds none. *content_len: how many leading bytes of text are
 * the answer's content beside the calls (0 when the answer is a call). */
json_t *herd_api_tool_calls(enum herd_tool_format f, const char *text, size_t n, uint64_t seed, size_t *content_len);

/* May text (the start of an answer) still become a tool call in format f?
 * A streamed answer holds its text back while it may. */
bool herd_api_tool_call_possible(enum herd_tool_format f, const char *text, size_t n);

/* /tokenize: body in, {"tokens", "count", "max_model_len"} out. */
json_t *herd_api_tokenize(json_t *body, const struct herd_api_model *m, struct herd_api_error *err);
/* /detokenize: body in, {"prompt"} out. */
json_t *herd_api_detokenize(json_t *body, const struct herd_vocab *v, struct herd_api_error *err);
/* /v1/models (id NULL) or /v1/models/ID. */
json_t *herd_api_models(const char *id, const char *model_name, time_t created, uint32_t n_ctx,
                        struct herd_api_error *err);

/* ------------------------------------------------------------ answers */

struct herd_api_choice {
    struct herd_buf text;
    struct herd_buf held; /* streamed text held back while it may be a tool call */
    bool holding;
    json_t *logprobs; /* chat: the content array; completions: the legacy object's arrays */
    const char *finish;
    bool role_sent;
    uint32_t n_tokens;
    uint64_t text_bytes; /* of generated text in the events so far (a resume's skipped bytes included) */
};

/* A response being assembled from scheduler events: streamed chunk by
 * chunk, or collected into one body. */
struct herd_api_answer {
    bool chat, stream, include_usage, want_logprobs;
    bool tools_on; /* parse the output for tool calls (herd_api_tools.on) */
    enum herd_tool_format tool_format;
    uint32_t top_logprobs;
    uint32_t n; /* choices over all prompts */
    uint32_t n_finished;
    uint32_t prompt_tokens;
    char id[64];
    time_t created;
    const char *model_name;
    const struct herd_vocab *vocab;
    struct herd_api_choice *ch; /* [n] */
};

/* For request r (prompt_tokens over its prompts, a resume's tokens not
 * counted), answer id prefix from request_id (a resume carries its own id
 * and created, its tokens count as output, and no role is sent again).
 * False on out of memory. */
bool herd_api_answer_init(struct herd_api_answer *a, const struct herd_api_request *r, uint32_t prompt_tokens,
                          const char *request_id, const char *model_name, const struct herd_vocab *v, time_t created);
void herd_api_answer_cleanup(struct herd_api_answer *a);

/* An event (its choice already the index over all prompts; not a
 * HERD_FINISH_ERROR one): counts it, and returns its stream chunk (stream)
 * or collects it (NULL). A streamed answer held back while it may be a
 * tool call returns NULL for its held events, and at the end either one
 * chunk or a JSON array of chunks to send in order (the tool calls'). */
json_t *herd_api_answer_event(struct herd_api_answer *a, const struct herd_event *e);
/* The comment line `: herd {"c":..,"t":[..],"b":..}\n` that goes before
 * an event's data line when the client asked for token ids
 * (X-Herd-Stream-Tokens: 1; router-protocol.md section 2): after
 * herd_api_answer_event counted e, so that b includes its text. Writes
 * at most cap bytes (including the NUL) to out; returns the length. */
size_t herd_api_tokens_line(const struct herd_api_answer *a, const struct herd_event *e, char *out, size_t cap);
/* The whole non-streamed body, with usage (cached_tokens from the
 * requests' stats). */
json_t *herd_api_answer_body(const struct herd_api_answer *a, uint32_t cached_tokens);
/* The last streamed chunk with usage (stream_options.include_usage). */
json_t *herd_api_answer_usage_chunk(const struct herd_api_answer *a, uint32_t cached_tokens);

/* OpenAI's error object {"error": {"message", "type", "param", "code"}};
 * a message that is not UTF-8 (from the input) is replaced by one saying so. */
json_t *herd_api_error_json(const char *type, const char *param, const char *code, const char *message);

/* s as a JSON string, every byte sequence that is not UTF-8 as U+FFFD. */
json_t *herd_api_text(const char *s, size_t n);

#endif
