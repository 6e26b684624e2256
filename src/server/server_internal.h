/* Shared insides of server.c (the route table, the model's state, the
 * drain hooks), server_metrics.c and openai.c (the API handlers). The
 * HTTP side (connections, limits, answers, the drain) is http/http_server.h.
 * Everything here runs on the event-loop thread, except the scheduler's
 * wake-up (herd_http_request_wake) and herd_server_set_model /
 * herd_server_load_failed. */
#ifndef HERD_SERVER_SERVER_INTERNAL_H
#define HERD_SERVER_SERVER_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "base/buf.h"
#include "http/http_server.h"
#include "metrics/metrics.h"
#include "server/server.h"

struct event;

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
    struct herd_http_metrics http;   /* the HTTP server counts these */
    struct herd_metric *running, *waiting, *running_by[HERD_PRIO_CLASSES], *waiting_by[HERD_PRIO_CLASSES];
    struct herd_metric *kv_total, *kv_used, *kv_usage;
    struct herd_metric *prefix_queries, *prefix_hits, *prefix_blocks;
    struct herd_metric *preemptions, *steps, *background_paused_steps, *prompt_tokens, *computed_prompt_tokens,
        *generation_tokens;
    struct herd_metric *finished[3];
    struct herd_metric *rejections[SERVER_REJECT_N], *open_connections;
    struct herd_metric_family *model_info;
};

/* The state stream's hub (state_stream.c): its subscribers, and the set of
 * hashes the prefix cache holds as the scheduler's feed told it. */
struct state_set {
    uint64_t *keys; /* [cap] */
    uint8_t *used;  /* [cap] */
    uint32_t cap, n, max;
};

struct state_sub;

/* The load event's numbers (requests, KV blocks). */
struct state_load {
    uint32_t running, waiting, kv_used, kv_total;
};

struct state_hub {
    struct state_sub *subs;
    struct event *tick; /* every 10 ms while anyone subscribes */
    struct state_set set;
    bool have_set;               /* the set is the cache's (a snapshot came since the feed started) */
    struct state_load last_load; /* as last sent to everyone */
    double last_load_s;
    char instance[17];  /* hello's: random, new each process */
    struct herd_buf ev; /* scratch: one event's text */
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
    struct herd_http_server *http;
    struct herd_http_route *routes; /* the server's own and the extra ones */
    bool engine_failed;             /* the scheduler reported a failure: not ready, exit 1 */
    struct event *watch;            /* checks the engine every 100 ms once loaded */
    double idle_since_s;            /* when the last connection closed; 0 while any is open */
    bool trimmed;                   /* the allocator has given back free memory since then */
    time_t started_wall;
    struct server_metrics metrics;
    struct state_hub state;
};

/* The server a request came to (the route table's app). */
static inline struct herd_server *srv(const struct herd_http_request *r) { return herd_http_request_app(r); }

bool server_metrics_init(struct herd_server *s);
void server_metrics_model_loaded(struct herd_server *s);
void server_metrics_destroy(struct herd_server *s);
void server_metrics_respond(struct herd_http_request *r, json_t *body, void *app); /* GET /metrics */
void server_count_rejection(struct herd_server *s, enum server_reject why);

/* 429 with a Retry-After estimated from the queue. */
void server_respond_queue_full(struct herd_http_request *r, const char *msg);

/* Handlers (openai.c), for the route table. Each ends the request with one
 * herd_http_respond* or a stream, possibly later (the call is the
 * request's work, woken by the scheduler). */
void api_chat_completions(struct herd_http_request *r, json_t *body, void *app);
void api_completions(struct herd_http_request *r, json_t *body, void *app);
void api_tokenize(struct herd_http_request *r, json_t *body, void *app);
void api_detokenize(struct herd_http_request *r, json_t *body, void *app);
/* GET /v1/herd/state (state_stream.c): a subscriber's stream. */
void api_herd_state(struct herd_http_request *r, json_t *body, void *app);
/* The hub's timer and instance id (after the HTTP server is created);
 * false on out of memory. */
bool state_hub_init(struct herd_server *s);
/* Ends every subscriber's stream (the drain, and before herd_server_run
 * returns: the scheduler the hub feeds from is closed before the server
 * is destroyed). */
void state_hub_end_all(struct herd_server *s);
void state_hub_cleanup(struct herd_server *s);

/* /v1/models (id NULL) or /v1/models/ID. */
void api_models(struct herd_http_request *r, const char *id);

#endif
