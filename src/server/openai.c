/* The OpenAI-compatible API over HTTP: /v1/chat/completions,
 * /v1/completions, /v1/models, and /tokenize, /detokenize.
 *
 * src/api checks a body and turns it into token ids and generation
 * parameters, or into an error this file maps to an HTTP status (and a
 * rejection reason for the metrics); the requests go to the scheduler, and
 * src/api assembles the answer from the scheduler's events: all at once,
 * or as server-sent events with `data: {...}` chunks and a final
 * `data: [DONE]`. With the request header X-Herd-Stream-Tokens: 1 each
 * event also carries a `: herd {...}` comment line with its token ids and
 * the text bytes sent so far, for herd route to resume a broken stream
 * elsewhere (docs/modules/router-protocol.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "base/log.h"
#include "server/server_internal.h"

/* What a handler keeps while its requests run. */
struct api_call {
    struct herd_request *req[HERD_API_MAX_PROMPTS]; /* one per prompt; choice i of prompt k is k * per_prompt + i */
    uint32_t n_req;
    uint32_t per_prompt; /* n */
    bool engine_failed;  /* a choice ended with HERD_FINISH_ERROR */
    bool stream_tokens;  /* X-Herd-Stream-Tokens: 1 on a streamed request */
    struct herd_api_answer ans;
};

/* ------------------------------------------------------------ errors */

/* An API error as HTTP: the status its kind means, and the rejection it
 * counts. */
static void respond_api_error(struct herd_http_request *c, const struct herd_api_error *e) {
    int status = 400;
    switch (e->kind) {
    case HERD_API_BAD_REQUEST: server_count_rejection(srv(c), SERVER_REJECT_BAD_REQUEST); break;
    case HERD_API_TOO_LONG: server_count_rejection(srv(c), SERVER_REJECT_TOO_LONG); break;
    case HERD_API_MODEL_NOT_FOUND: status = 404; break;
    case HERD_API_NO_MEMORY: status = 500; break;
    }
    herd_http_respond_error(c, status, e->type, e->param[0] ? e->param : NULL, e->code, "%s", e->message);
}

/* A 400 naming no field (the scheduler refused a request). */
static void bad(struct herd_http_request *c, const char *msg) {
    server_count_rejection(srv(c), SERVER_REJECT_BAD_REQUEST);
    herd_http_respond_error(c, 400, "invalid_request_error", NULL, NULL, "%s", msg);
}

static struct herd_api_limits limits_of(const struct herd_server *s) {
    return (struct herd_api_limits){.model_name = s->p.model_name,
                                    .max_n = s->p.max_n,
                                    .max_tokens_limit = s->p.max_tokens_limit,
                                    .max_stops = s->p.max_stops,
                                    .max_stop_bytes = s->p.max_stop_bytes,
                                    .max_logit_bias = s->p.max_logit_bias,
                                    .max_messages = s->p.max_messages};
}

static struct herd_api_model model_of(const struct herd_server *s) {
    return (struct herd_api_model){.tokenizer = s->m.tokenizer,
                                   .chat_template = s->m.chat_template,
                                   .n_vocab = s->m.model->desc.n_vocab,
                                   .n_ctx = herd_sched_n_ctx(s->m.sched)};
}

/* ------------------------------------------------------------- calls */

static void call_free(struct api_call *a) {
    if (!a) return;
    for (uint32_t k = 0; k < a->n_req; k++) {
        herd_request_set_notify(a->req[k], NULL, NULL);
        herd_request_cancel(a->req[k]);
        herd_request_release(a->req[k]);
    }
    herd_api_answer_cleanup(&a->ans);
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

static void send_sse(struct herd_http_request *c, json_t *chunk) {
    char *s = chunk ? json_dumps(chunk, JSON_COMPACT) : NULL;
    json_decref(chunk);
    if (!s) return;
    herd_http_sse_send(c, s, strlen(s));
    free(s);
}

/* One event of a stream that carries token ids: the `: herd` comment line
 * and the data line in one chunk, so that no reader sees one without the
 * other (herd route relays whole events). */
static void send_sse_tokens(struct herd_http_request *c, const struct api_call *a, const struct herd_event *e,
                            json_t *chunk) {
    char *s = chunk ? json_dumps(chunk, JSON_COMPACT) : NULL;
    json_decref(chunk);
    if (!s) return;
    char line[128];
    const size_t n_line = herd_api_tokens_line(&a->ans, e, line, sizeof line);
    const size_t n = strlen(s);
    struct herd_buf ev;
    herd_buf_init(&ev, n_line + n + 8); /* exactly the event: line, "data: ", chunk, blank line */
    if (herd_buf_append(&ev, line, n_line) && herd_buf_append(&ev, "data: ", 6) && herd_buf_append(&ev, s, n) &&
        herd_buf_append(&ev, "\n\n", 2))
        herd_http_stream_send(c, (const char *)ev.data, ev.len);
    herd_buf_cleanup(&ev);
    free(s);
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
                    a->ans.n_finished++;
                    continue;
                }
                json_t *chunk = herd_api_answer_event(&a->ans, &ev[i]);
                if (json_is_array(chunk)) {
                    /* a held-back answer's tool calls: several chunks; the
                     * token line goes with the last */
                    const size_t n_chunks = json_array_size(chunk);
                    for (size_t ci = 0; ci < n_chunks; ci++) {
                        json_t *one = json_incref(json_array_get(chunk, ci));
                        if (ci + 1 == n_chunks && a->stream_tokens)
                            send_sse_tokens(c, a, &ev[i], one);
                        else
                            send_sse(c, one);
                    }
                    json_decref(chunk);
                } else if (chunk && a->stream_tokens) {
                    send_sse_tokens(c, a, &ev[i], chunk);
                } else if (chunk) {
                    send_sse(c, chunk);
                }
            }
            /* a slow reader: the server wakes the call again as it drains */
            if (a->ans.stream && herd_http_request_pending_output(c) > HERD_HTTP_STREAM_HIGH_WATER) return;
        }
    if (a->ans.n_finished < a->ans.n) return;
    if (a->engine_failed) {
        char msg[300] = "the engine failed";
        herd_sched_failed(srv(c)->m.sched, msg, sizeof msg);
        herd_log(HERD_LOG_ERROR, "serve", herd_http_request_id(c), NULL, 0, "request ended: %s", msg);
        if (!a->ans.stream) {
            call_end(c, a);
            herd_http_respond_error(c, 500, "server_error", NULL, "engine_failed", "%s", msg);
            return;
        }
        /* streaming began: an error event, then [DONE] */
        send_sse(c, herd_api_error_json("server_error", NULL, "engine_failed", msg));
        herd_http_stream_send(c, "data: [DONE]\n\n", 14);
        call_end(c, a);
        herd_http_stream_end(c);
        return;
    }
    if (!a->ans.stream) {
        json_t *body = herd_api_answer_body(&a->ans, call_totals(a).cached_tokens);
        call_end(c, a);
        herd_http_respond_json(c, 200, body);
        return;
    }
    if (a->ans.include_usage) send_sse(c, herd_api_answer_usage_chunk(&a->ans, call_totals(a).cached_tokens));
    herd_http_stream_send(c, "data: [DONE]\n\n", 14);
    call_end(c, a);
    herd_http_stream_end(c);
}

static const struct herd_http_work_ops call_ops = {call_wake, call_cancel, call_abort};

/* The scheduler's notify, on its thread. */
static void wake(void *arg) { herd_http_request_wake(arg); }

/* Submits the request's prompts (all or none) and starts the answer. */
static void start(struct herd_http_request *c, const struct herd_api_request *q) {
    struct herd_server *s = srv(c);
    struct herd_error err = {0};
    uint32_t prompt_tokens = 0;
    for (uint32_t k = 0; k < q->n_prompts; k++) prompt_tokens += q->n_ids[k];
    prompt_tokens -= q->gp.resume_tokens; /* output, as usage counts them */
    struct api_call *a = calloc(1, sizeof *a);
    if (!a || !herd_api_answer_init(&a->ans, q, prompt_tokens, herd_http_request_id(c), s->p.model_name, s->m.vocab,
                                    time(NULL))) {
        free(a);
        herd_http_respond_error(c, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    a->per_prompt = q->gp.n;
    const char *want_tokens = herd_http_request_header(c, "X-Herd-Stream-Tokens");
    a->stream_tokens = q->stream && want_tokens && strcmp(want_tokens, "1") == 0;
    enum herd_status rc = HERD_OK;
    for (uint32_t k = 0; k < q->n_prompts && rc == HERD_OK; k++) {
        struct herd_request *r = herd_request_create(q->ids[k], q->n_ids[k], &q->gp, wake, c, &err);
        if (!r) {
            call_free(a);
            bad(c, err.msg);
            return;
        }
        a->req[a->n_req++] = r;
        rc = herd_sched_submit(s->m.sched, r, &err);
    }
    if (rc != HERD_OK) {
        call_free(a); /* cancels the prompts already queued */
        if (rc == HERD_E_AGAIN)
            server_respond_queue_full(c, err.msg);
        else if (rc == HERD_E_UNAVAILABLE)
            herd_http_respond_error(c, 503, "server_error", NULL,
                                    herd_sched_failed(s->m.sched, NULL, 0) ? "engine_failed" : "draining", "%s",
                                    err.msg);
        else
            bad(c, err.msg);
        return;
    }
    herd_http_request_set_work(c, &call_ops, a);
    if (a->ans.stream) herd_http_sse_begin(c);
}

/* ------------------------------------------------------------- handlers */

void api_chat_completions(struct herd_http_request *c, json_t *body, void *app) {
    (void)app;
    const struct herd_api_limits lim = limits_of(srv(c));
    const struct herd_api_model m = model_of(srv(c));
    struct herd_api_request q;
    struct herd_api_error err;
    if (!herd_api_parse_chat(body, &lim, &m, &q, &err)) {
        respond_api_error(c, &err);
        return;
    }
    start(c, &q);
    herd_api_request_cleanup(&q);
}

void api_completions(struct herd_http_request *c, json_t *body, void *app) {
    (void)app;
    const struct herd_api_limits lim = limits_of(srv(c));
    const struct herd_api_model m = model_of(srv(c));
    struct herd_api_request q;
    struct herd_api_error err;
    if (!herd_api_parse_completion(body, &lim, &m, &q, &err)) {
        respond_api_error(c, &err);
        return;
    }
    start(c, &q);
    herd_api_request_cleanup(&q);
}

void api_models(struct herd_http_request *c, const char *id) {
    const struct herd_server *s = srv(c);
    struct herd_api_error err;
    json_t *res = herd_api_models(id, s->p.model_name, s->started_wall, herd_sched_n_ctx(s->m.sched), &err);
    if (!res) {
        respond_api_error(c, &err);
        return;
    }
    herd_http_respond_json(c, 200, res);
}

void api_tokenize(struct herd_http_request *c, json_t *body, void *app) {
    (void)app;
    const struct herd_api_model m = model_of(srv(c));
    struct herd_api_error err;
    json_t *res = herd_api_tokenize(body, &m, &err);
    if (!res) {
        respond_api_error(c, &err);
        return;
    }
    herd_http_respond_json(c, 200, res);
}

void api_detokenize(struct herd_http_request *c, json_t *body, void *app) {
    (void)app;
    struct herd_api_error err;
    json_t *res = herd_api_detokenize(body, srv(c)->m.vocab, &err);
    if (!res) {
        respond_api_error(c, &err);
        return;
    }
    herd_http_respond_json(c, 200, res);
}
