/* Shared insides of herd route (router.h): the replica set (replicas.c),
 * the state streams (state_feed.c), the forwarding (proxy.c), prompt
 * hashing (prompt_key.c), name resolution (dns.c) and the server, metrics
 * and the pool glue (router.c). Everything runs on the event loop's thread
 * except the resolver thread of dns.c, which hands its answers over under
 * a lock. */
#ifndef HERD_ROUTER_ROUTER_INTERNAL_H
#define HERD_ROUTER_ROUTER_INTERNAL_H

#include <jansson.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "http/http_client.h"
#include "http/http_server.h"
#include "metrics/metrics.h"
#include "router/policy.h"
#include "router/prefix_index.h"
#include "router/router.h"

struct event;
struct herd_vocab;
struct herd_tokenizer;
struct herd_chat_template;
struct herd_gguf;
struct router_dns;
struct herd_replica_pool;

/* ----------------------------------------------------------- replicas */

enum replica_source { FROM_FLAG, FROM_DNS, FROM_POOL };

enum replica_health {
    HEALTH_UNKNOWN, /* not yet answered a probe */
    HEALTH_UP,
    HEALTH_EJECTED, /* until ejected_until, then until a probe passes */
};

struct replica {
    struct herd_router *rt;
    uint32_t id; /* for logs and the pool */
    char host[INET6_ADDRSTRLEN];
    uint16_t port;
    char name[INET6_ADDRSTRLEN + 8]; /* host:port, the metrics' label */
    uint64_t key;                    /* hash of name: the same in every router */
    enum replica_source source;
    uint32_t pool_id;

    enum replica_health health;
    bool draining; /* no new requests (gone from DNS, or scaled down); removed once idle */
    double up_since, ejected_until, last_ejected;
    uint32_t ejections_in_row, consecutive_errors, probe_failures;
    uint32_t in_flight;

    /* what it reports (state stream, or /metrics for other servers) */
    bool herd;      /* it speaks the state stream */
    bool no_stream; /* /v1/herd/state is 404: scrape /metrics instead */
    double heard_s; /* the last event or scrape */
    uint32_t running, waiting, kv_used, kv_total, block_tokens, n_ctx;
    char instance[40];
    struct prefix_index index;

    struct herd_http_call *probe, *feed;
    double next_probe_s, next_feed_s;
    struct herd_buf feed_buf; /* an SSE event not yet complete */

    struct herd_metric *m_requests, *m_errors, *m_latency, *m_in_flight, *m_up, *m_ejections;
};

/* ------------------------------------------------------------ router */

/* Kinds of prompt (system prompts, say) the router remembers, with where
 * each last went, to spread new ones. */
#define ROUTER_KINDS 32

struct router_metrics {
    struct herd_metrics *reg;
    struct herd_http_metrics http;
    struct herd_metric_family *requests, *errors, *latency, *in_flight, *up, *ejections;
    struct herd_metric *decisions[ROUTE_REASON_N];
    struct herd_metric *affinity_hits, *retries, *resumes_ok, *resumes_failed, *waiting, *no_replica;
    struct herd_metric *replicas_up, *replicas_total, *budget_exhausted;
    struct herd_metric *pool_desired, *pool_running, *pool_restarts;
};

struct proxy;

/* The depth every prompt of one kind shares (prompt_key.c): kinds are chat
 * and completion, tokenized or hashed as text. */
#define PROMPT_KINDS 4
struct prompt_commons {
    uint64_t *ref;  /* [ROUTER_MAX_HASHED_BLOCKS]: the first prompt's hashes */
    uint32_t n_ref; /* how many of them every prompt shares, once one differed */
    uint32_t block_tokens;
    bool seen, diverged;
};

struct herd_router {
    struct herd_http_route *routes; /* the table's own routes, then the pages' (unless --no-web) */
    struct herd_router_params p;
    char *backend_auth; /* "Authorization: Bearer <--backend-api-key>\r\n", or NULL */
    struct herd_http_server *http;
    struct herd_http_client *client;  /* requests: long deadlines */
    struct herd_http_client *control; /* probes and state streams: short ones */
    struct event *tick;               /* every 50 ms: probes, streams, ejections, waiting requests */
    double last_expire_s;             /* the guesses' last expiry sweep */
    struct replica **rep;
    uint32_t n_rep, cap_rep, next_id;
    struct route_policy_state ps;
    /* the kinds of prompt (prompt_key.key) seen lately, a ring: cache-aware
     * counts those sent to each replica to place a new kind (policy.h) */
    struct {
        uint64_t key;     /* prompt_key.key */
        uint64_t replica; /* the replica (its key) it last went to */
    } kinds[ROUTER_KINDS];
    uint32_t n_kinds, next_kind;
    double retry_budget;
    /* requests waiting for a replica, oldest first */
    struct proxy *wait_head, *wait_tail;
    struct proxy *live; /* every request being forwarded */
    uint32_t n_waiting;
    /* prompt hashing (cache-aware) */
    struct herd_gguf *gguf;
    struct herd_vocab *vocab;
    struct herd_tokenizer *tok;
    struct herd_chat_template *tmpl;
    uint32_t block_tokens;       /* from the replicas' hello (0 until one says: prompts are hashed as text) */
    uint32_t chat_header_tokens; /* every chat prompt starts with these (prompt_key.c) */
    struct prompt_commons commons[PROMPT_KINDS];
    uint32_t n_ctx; /* from the hello: the longest prompt worth tokenizing */
    struct router_dns *dns;
    struct herd_replica_pool *pool;
    struct router_metrics metrics;
};

static inline struct herd_router *router_of(const struct herd_http_request *r) { return herd_http_request_app(r); }

/* replicas.c */
struct replica *replica_add(struct herd_router *rt, const char *host, uint16_t port, enum replica_source src);
struct replica *replica_find(struct herd_router *rt, const char *host, uint16_t port);
void replica_drain(struct replica *x); /* no new requests; removed when idle */
bool replica_eligible(const struct replica *x);
double replica_weight(const struct replica *x, double now);
double replica_load(const struct replica *x);
/* A request to x ended: ok, or failed in a way that counts against it. */
enum replica_failure { REPLICA_OK, REPLICA_CONNECT, REPLICA_TIMEOUT, REPLICA_BROKEN, REPLICA_5XX };
void replica_report(struct replica *x, enum replica_failure f);
void replicas_tick(struct herd_router *rt, double now); /* probes, streams, ejections, removals */
void replicas_destroy(struct herd_router *rt);
uint32_t replicas_up(const struct herd_router *rt);
json_t *replicas_json(const struct herd_router *rt);

/* state_feed.c: the replica's state stream, or its /metrics */
void feed_start(struct replica *x);
void feed_stop(struct replica *x);
void feed_tick(struct replica *x, double now); /* reconnects a dead or silent stream, scrapes on time */

/* prompt_key.c: a request's block hashes (exactly as the replicas' prefix
 * caches hash them when the router has the model's vocabulary) and its key */
#define ROUTER_MAX_HASHED_BLOCKS 4096
struct prompt_key {
    uint64_t hashes[ROUTER_MAX_HASHED_BLOCKS];
    uint32_t n_hashes;
    uint32_t common; /* leading blocks every prompt of its kind shares: a match counts beyond them */
    uint64_t whole;  /* a hash of the whole prompt */
    uint64_t key;    /* consistent hashing's: the first block past common, or whole */
};
void prompt_key_of(struct herd_router *rt, const char *path, json_t *body, const char *raw, size_t raw_len,
                   struct prompt_key *out);
enum herd_status prompt_key_load_model(struct herd_router *rt, struct herd_error *err);
void prompt_key_unload(struct herd_router *rt);

/* proxy.c */
void proxy_handler(struct herd_http_request *r, json_t *body, void *app);
void proxy_dispatch_waiting(struct herd_router *rt, double now); /* replicas came up, or deadlines passed */
void proxy_fail_waiting(struct herd_router *rt);                 /* the drain: answer them 503 */
/* x stopped answering (its probes time out): its requests go elsewhere,
 * not after the upstream timeout. */
void proxy_abandon_replica(struct replica *x, const char *why);
/* Teardown: every upstream call cancelled, before the clients go. */
void proxy_cancel_calls(struct herd_router *rt);

/* router_pool.c: the local pool (pool.h) wired to the replica set */
enum herd_status router_pool_start(struct herd_router *rt, struct herd_error *err);
void router_pool_stop(struct herd_router *rt);
void router_pool_demand(struct herd_router *rt);
void router_pool_ready(struct herd_router *rt, const struct replica *x, bool ready); /* health seen */
void router_pool_metrics(struct herd_router *rt);                                    /* before a scrape renders */
json_t *router_pool_json(const struct herd_router *rt);

/* dns.c */
enum herd_status router_dns_start(struct herd_router *rt, struct herd_error *err);
void router_dns_apply(struct herd_router *rt); /* on the loop: add and drain replicas */
void router_dns_stop(struct herd_router *rt);

/* router.c */
/* A request waits for a replica: a pool with none ready starts one. */
void router_wants_replica(struct herd_router *rt);
/* The replica for a request (k: its prompt's blocks, NULL unless
 * cache-aware), other than exclude; herd_only: replicas that speak herd's
 * protocol (a resume). NULL when none is eligible. */
struct replica *router_choose(struct herd_router *rt, const struct prompt_key *k, const struct replica *exclude,
                              bool herd_only);

#endif
