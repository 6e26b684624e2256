/* `herd route`: an OpenAI-compatible load balancer over `herd serve`
 * replicas (or any OpenAI-compatible server), on one event loop.
 *
 * Replicas come from --backend URLs, from the A/AAAA records of a name
 * re-resolved periodically (a Kubernetes headless Service), or from a
 * local pool of `herd serve` children the router starts, supervises and
 * autoscales (pool.h). Each is health-checked (/readyz), ejected on
 * connect errors, timeouts and 5xx, and readmitted with a slow start. A
 * herd replica streams its load and its prefix-cache blocks to the router
 * (docs/modules/router-protocol.md), which keeps an index of them; the
 * cache-aware policy sends a prompt where its longest prefix is cached.
 * A request that failed before any byte reached the client is retried on
 * another replica; a stream whose replica dies is resumed on another one
 * from the tokens already sent. */
#ifndef HERD_ROUTER_ROUTER_H
#define HERD_ROUTER_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "herd/status.h"
#include "http/http1.h"
#include "router/policy.h"

#define ROUTER_MAX_BACKENDS 64

struct herd_router_params {
    const char *host; /* to bind ("127.0.0.1") */
    uint16_t port;    /* 0 picks a free one */
    struct herd_http_limits http;
    uint32_t max_connections;
    double drain_timeout_s;
    const char *const *api_keys; /* NULL-terminated; NULL: no auth */
    bool auth_all;
    bool forward_api_key;        /* pass the client's Authorization on */
    const char *backend_api_key; /* or send this one (NULL: none) */
    bool quiet;
    bool web; /* the chat page at / and the status page at /status (true) */

    /* replicas: backends, or dns_name, or a pool */
    const char *backends[ROUTER_MAX_BACKENDS]; /* "http://10.0.0.7:8080" */
    uint32_t n_backends;
    const char *dns_name; /* NAME:PORT */
    double resolve_every_s;

    enum route_policy policy;
    struct route_policy_params policy_params;
    const char *model_path; /* GGUF whose vocabulary and template hash prompts (cache-aware); NULL: by bytes */
    const char *chat_template;

    double health_interval_s;       /* /readyz every so often (1) */
    double slow_start_s;            /* a readmitted replica's weight ramps up over this (10) */
    double eject_base_s;            /* first ejection; doubles while it repeats, up to 30 s (1) */
    uint32_t max_attempts;          /* tries of a request, first included (3) */
    double retry_ratio;             /* retries earned per request (0.2): the budget */
    double wait_timeout_s;          /* a request waits this long for a replica before 503 (0; 60 with a pool) */
    double upstream_head_timeout_s; /* to an answer's head (300: an unstreamed answer comes after its generation) */
    double upstream_idle_timeout_s; /* silence inside an answer (300: a long prompt's prefill) */

    /* the local pool: pool_n > 0 or pool_max > 0 */
    const char *pool_model;
    const char *pool_herd;              /* the herd binary (NULL: /proc/self/exe) */
    const char *const *pool_serve_args; /* more `herd serve` flags, NULL-terminated */
    uint32_t pool_n, pool_min, pool_max, pool_threads;
    double pool_target_waiting; /* the HPA target: waiting requests per replica (2) */
    double pool_scale_down_window_s;
};

void herd_router_default_params(struct herd_router_params *p);

struct herd_router;

/* Binds the port and sets up the replicas (a bad --backend or model is an
 * error here, not later). */
enum herd_status herd_router_create(const struct herd_router_params *p, struct herd_router **out,
                                    struct herd_error *err);
uint16_t herd_router_port(const struct herd_router *rt);
/* Runs until SIGTERM / SIGINT drained it. */
enum herd_status herd_router_run(struct herd_router *rt, struct herd_error *err);
void herd_router_destroy(struct herd_router *rt);

#endif
