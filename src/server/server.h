/* `herd serve`'s HTTP server: the HTTP layer (http/http_server.h: an
 * event loop on the calling thread, connections, limits and deadlines, API
 * keys, the drain) with herd serve's route table on it: probes, /metrics,
 * and the OpenAI handlers (openai.c), which hand work to the scheduler
 * thread and stream its events back. SIGTERM/SIGINT drain: /readyz turns
 * 503, new requests get 503, running ones finish within the drain timeout,
 * then the loop ends; a second signal ends it at once. */
#ifndef HERD_SERVER_SERVER_H
#define HERD_SERVER_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/sched.h"
#include "herd/status.h"
#include "model/model.h"
#include "http/http1.h"
#include "http/http_server.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

struct herd_server_params {
    const char *host; /* "127.0.0.1" */
    uint16_t port;    /* 8080; 0 picks a free port (tests) */
    struct herd_http_limits http;
    uint32_t max_connections;    /* open connections (1024) */
    double header_timeout_s;     /* from the first byte to the end of the headers (10) */
    double body_timeout_s;       /* to receive the body (30) */
    double idle_timeout_s;       /* keep-alive wait for the next request (60) */
    double write_timeout_s;      /* a client that reads nothing for this long is dropped (30) */
    double drain_timeout_s;      /* SIGTERM: how long running requests may finish (30) */
    const char *const *api_keys; /* NULL-terminated; NULL or empty: no auth */
    bool auth_all;               /* also protect /health, /livez, /readyz, /metrics */
    const char *model_name;      /* the id /v1/models lists and requests must name */
    uint32_t max_n;              /* largest n (16) */
    uint32_t max_tokens_limit;   /* largest max_tokens (the context) */
    uint32_t max_stops;          /* stop strings per request (4) */
    uint32_t max_stop_bytes;     /* bytes per stop string (256) */
    uint32_t max_logit_bias;     /* logit_bias entries (300) */
    uint32_t max_messages;       /* messages per chat request (4096) */
    bool quiet;                  /* no access log */
    bool vllm_metrics;           /* /metrics also under vLLM's names (true) */
    bool web;                    /* the chat page at / and the status page at /status (true) */
    /* Routes another module serves on this server (the batch API), after
     * the server's own; each handler gets its route's arg. */
    const struct herd_http_route *extra_routes;
    size_t n_extra_routes;
    size_t max_upload_bytes; /* body limit of UPLOAD routes (0: http.max_body_bytes) */
};

void herd_server_default_params(struct herd_server_params *p);

/* What the handlers serve. All must outlive the server. */
struct herd_server_model {
    const struct herd_model *model;
    const struct herd_vocab *vocab;
    const struct herd_tokenizer *tokenizer;
    const struct herd_chat_template *chat_template;
    struct herd_sched *sched;
};

struct herd_server;

/* Binds the listening socket (the port is known after this: see
 * herd_server_port). m may be NULL: the server then answers 503 "loading"
 * (and /livez 200) until herd_server_set_model. */
enum herd_status herd_server_create(const struct herd_server_params *p, const struct herd_server_model *m,
                                    struct herd_server **out, struct herd_error *err);
/* From any thread: the model is ready (m is copied), or loading failed
 * (msg says why; herd_server_run then returns HERD_E_IO with it). */
void herd_server_set_model(struct herd_server *s, const struct herd_server_model *m);
void herd_server_load_failed(struct herd_server *s, const char *msg);
uint16_t herd_server_port(const struct herd_server *s);
/* The histograms the scheduler should observe (herd_sched_params.metrics):
 * create the server first, then the scheduler with these. */
const struct herd_sched_metrics *herd_server_sched_metrics(const struct herd_server *s);
/* Runs the event loop until drained after a signal (or herd_server_stop).
 * Installs SIGTERM/SIGINT handlers for the loop's duration. */
enum herd_status herd_server_run(struct herd_server *s, struct herd_error *err);
void herd_server_destroy(struct herd_server *s);

#endif
