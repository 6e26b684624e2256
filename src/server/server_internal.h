/* Shared insides of server.c (connections, HTTP, routing) and openai.c
 * (the API handlers). Everything here runs on the event-loop thread,
 * except the wake-up the scheduler triggers with event_active. */
#ifndef HERD_SERVER_SERVER_INTERNAL_H
#define HERD_SERVER_SERVER_INTERNAL_H

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "metrics/metrics.h"
#include "server/server.h"

/* Why a request was refused, for herd_rejections_total{reason}. */
enum server_reject {
    SERVER_REJECT_QUEUE_FULL,
    SERVER_REJECT_TOO_LONG,
    SERVER_REJECT_AUTH,
    SERVER_REJECT_BAD_REQUEST,
    SERVER_REJECT_DRAINING,
    SERVER_REJECT_N
};

/* The registry and the series the server updates (server_metrics.c). */
struct server_metrics {
    struct herd_metrics *reg;
    char model_name[128];
    struct herd_sched_metrics sched; /* the scheduler observes these */
    struct herd_metric *running, *waiting, *running_by[HERD_PRIO_CLASSES], *waiting_by[HERD_PRIO_CLASSES];
    struct herd_metric *kv_total, *kv_used, *kv_usage;
    struct herd_metric *prefix_queries, *prefix_hits, *prefix_blocks;
    struct herd_metric *preemptions, *steps, *prompt_tokens, *computed_prompt_tokens, *generation_tokens;
    struct herd_metric *finished[3];
    struct herd_metric *rejections[SERVER_REJECT_N], *cancellations, *responses[5], *open_connections;
    struct herd_metric_family *model_info;
};

struct herd_server {
    struct herd_server_params p;
    struct herd_server_model m; /* m.sched NULL while loading */
    /* handed over by the loading thread (under load_lock), applied on the loop */
    pthread_mutex_t load_lock;
    struct herd_server_model loaded;
    bool loaded_ready, load_failed;
    char load_error[256];
    struct event *load_event;
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *sigterm, *sigint, *drain_timer;
    uint16_t port;
    uint32_t n_conns;
    struct conn *conns; /* all open connections */
    bool draining, drain_expired;
    bool engine_failed;  /* the scheduler reported a failure: not ready, exit 1 */
    struct event *watch; /* checks the engine every 100 ms once loaded */
    double idle_since_s; /* when the last connection closed; 0 while any is open */
    bool trimmed;        /* the allocator has given back free memory since then */
    uint64_t next_request_id;
    double drain_started_s;
    time_t started_wall;
    struct server_metrics metrics;
};

enum conn_state {
    CONN_READING,   /* parsing a request */
    CONN_WORKING,   /* a handler waits for the scheduler */
    CONN_STREAMING, /* a handler sends server-sent events */
    CONN_CLOSING,   /* flushing the last response, then close */
};

/* What an OpenAI handler keeps while its request runs. */
struct api_call;

struct conn {
    struct herd_server *srv;
    struct bufferevent *bev;
    struct herd_http_parser parser;
    struct event *deadline;
    struct event *wake; /* activated by the scheduler's notify */
    enum conn_state state;
    bool keep_alive;
    bool head_started; /* bytes of the current request arrived */
    char request_id[48];
    char method[16];
    char path[128];
    double t_start;
    int status;
    /* for the access log, filled by the handler when it has them */
    bool have_usage;
    uint32_t log_prompt_tokens, log_completion_tokens, log_cached_tokens;
    double log_queue_ms, log_ttft_ms;
    struct api_call *call;
    struct conn *prev, *next;
};

bool server_metrics_init(struct herd_server *s);
void server_metrics_model_loaded(struct herd_server *s);
void server_metrics_destroy(struct herd_server *s);
void server_metrics_respond(struct conn *c); /* GET /metrics */
void server_count_rejection(struct herd_server *s, enum server_reject why);
void server_count_response(struct herd_server *s, int status);
void server_count_cancellation(struct herd_server *s);

/* Responses. Headers end with Content-Length (or chunked for streams);
 * X-Request-Id is always set. */
void conn_respond(struct conn *c, int status, const char *content_type, const char *body, size_t len,
                  const char *extra_headers);
void conn_respond_json(struct conn *c, int status, json_t *body); /* steals body */
/* OpenAI's error shape {"error": {"message", "type", "param", "code"}}. */
void conn_respond_error(struct conn *c, int status, const char *type, const char *param, const char *code,
                        const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void conn_stream_begin(struct conn *c);                              /* 200, text/event-stream, chunked */
void conn_stream_send(struct conn *c, const char *data, size_t len); /* one chunk */
void conn_stream_end(struct conn *c);                                /* the last chunk; the request is over */
/* Bytes waiting to be written to the client. */
size_t conn_pending_output(const struct conn *c);

/* 429 with a Retry-After estimated from the queue. */
void server_respond_queue_full(struct conn *c, const char *msg);

/* Handlers (openai.c). Each ends the request with one conn_respond* or a
 * stream, possibly later (from api_on_wake). */
void api_chat_completions(struct conn *c, json_t *body);
void api_completions(struct conn *c, json_t *body);
void api_tokenize(struct conn *c, json_t *body);
void api_detokenize(struct conn *c, json_t *body);
void api_models(struct conn *c, const char *id);
/* The scheduler has events for c's call. */
void api_on_wake(struct conn *c);
/* The client is gone: cancel and free the call. */
void api_abort(struct conn *c);
/* The drain ran out of time: the request stops, the answer ends normally
 * with finish_reason "abort". */
void api_cancel(struct conn *c);

#endif
