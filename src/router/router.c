/* herd route (router.h): the HTTP server and its route table, the
 * router's metrics, the tick that drives health checks, state streams,
 * DNS answers and waiting requests, replica choice by policy, and the
 * glue to the local pool. */
#include <arpa/inet.h>
#include <event2/event.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/timing.h"
#include "router/router_internal.h"
#include "web/web.h"

#define TICK_S 0.05

void herd_router_default_params(struct herd_router_params *p) {
    memset(p, 0, sizeof *p);
    struct herd_http_server_params hp;
    herd_http_server_default_params(&hp);
    p->host = hp.host;
    p->port = 8080;
    p->http = hp.limits;
    p->max_connections = hp.max_connections;
    p->drain_timeout_s = hp.drain_timeout_s;
    p->resolve_every_s = 5;
    p->policy = ROUTE_CACHE_AWARE;
    route_policy_default_params(&p->policy_params);
    p->health_interval_s = 1;
    p->slow_start_s = 10;
    p->eject_base_s = 1;
    p->max_attempts = 2;
    p->retry_ratio = 0.2;
    p->wait_timeout_s = 0;
    p->upstream_head_timeout_s = 300;
    p->upstream_idle_timeout_s = 300;
    p->pool_threads = 1;
    p->pool_target_waiting = 2;
    p->pool_scale_down_window_s = 300;
    p->web = true;
}

uint16_t herd_router_port(const struct herd_router *rt) { return herd_http_server_port(rt->http); }

/* ----------------------------------------------------------- choice */

/* Notes that k's kind of prompt just went to replica x, in the ring of
 * kinds seen lately (a new kind takes the oldest slot). A kind is the
 * prompt's first block past what all prompts share, so a prompt shorter
 * than that has none. */
static void note_kind(struct herd_router *rt, const struct prompt_key *k, const struct replica *x) {
    if (k->n_hashes <= k->common) return;
    for (uint32_t i = 0; i < rt->n_kinds; i++)
        if (rt->kinds[i].key == k->key) {
            rt->kinds[i].replica = x->key;
            return;
        }
    rt->kinds[rt->next_kind].key = k->key;
    rt->kinds[rt->next_kind].replica = x->key;
    rt->next_kind = (rt->next_kind + 1) % ROUTER_KINDS;
    if (rt->n_kinds < ROUTER_KINDS) rt->n_kinds++;
}

/* How many kinds seen lately, other than k's own, last went to x. Where
 * they went, not what x's cache still holds: with traffic that never
 * repeats a prompt, the replicas given the most evict the most, and
 * counting what they hold sent them still more (requests per replica
 * 12 / 11 / 11 / 7 in bench/route.sh's no-shared-prefix runs). */
static uint32_t kinds_sent(const struct herd_router *rt, const struct replica *x, const struct prompt_key *k) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < rt->n_kinds; i++) n += rt->kinds[i].key != k->key && rt->kinds[i].replica == x->key;
    return n;
}

struct replica *router_choose(struct herd_router *rt, const struct prompt_key *k, const struct replica *exclude,
                              bool herd_only) {
    struct route_candidate c[256];
    struct replica *who[256];
    size_t n = 0;
    const double now = herd_time_now_s();
    const bool cache = rt->p.policy == ROUTE_CACHE_AWARE && k;
    bool held = false; /* some replica holds part of the prompt past what all share */
    for (uint32_t i = 0; i < rt->n_rep && n < 256; i++) {
        struct replica *x = rt->rep[i];
        if (!replica_eligible(x) || x == exclude || (herd_only && !x->herd)) continue;
        who[n] = x;
        /* blocks every prompt shares are no reason to prefer a replica */
        const uint32_t match = cache ? prefix_index_match(&x->index, k->hashes, k->n_hashes, now) : 0;
        c[n] =
            (struct route_candidate){.key = x->key,
                                     .load = replica_load(x),
                                     .weight = replica_weight(x, now),
                                     .prefix_blocks = cache && match > k->common ? match - k->common : 0,
                                     .prompt_blocks = cache && k->n_hashes > k->common ? k->n_hashes - k->common : 0};
        held |= c[n].prefix_blocks > 0;
        n++;
    }
    if (!n) return NULL;
    /* a new kind of prompt: spread the kinds */
    if (cache && !held)
        for (size_t i = 0; i < n; i++) c[i].kinds = kinds_sent(rt, who[i], k);
    enum route_reason why;
    const size_t i = route_pick(rt->p.policy, &rt->p.policy_params, &rt->ps, c, n, k ? k->key : 0, &why);
    if (cache) note_kind(rt, k, who[i]);
    herd_metric_add(rt->metrics.decisions[why], 1);
    if (why == ROUTE_BY_PREFIX) herd_metric_add(rt->metrics.affinity_hits, 1);
    return who[i];
}

void router_wants_replica(struct herd_router *rt) {
    if (rt->pool) router_pool_demand(rt);
}

/* ----------------------------------------------------------- metrics */

static const double latency_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2.5,    5,     10,   20,    40,   80,  160,  320};
#define N_LATENCY (sizeof latency_bounds / sizeof *latency_bounds)

static void metrics_collect(void *arg) {
    struct herd_router *rt = arg;
    herd_metric_set(rt->metrics.replicas_up, replicas_up(rt));
    herd_metric_set(rt->metrics.replicas_total, rt->n_rep);
    if (rt->pool) router_pool_metrics(rt);
}

static bool metrics_init(struct herd_router *rt) {
    struct router_metrics *m = &rt->metrics;
    struct herd_metrics *reg = m->reg = herd_metrics_create();
    if (!reg) return false;
    const enum herd_metric_type C = HERD_METRIC_COUNTER, G = HERD_METRIC_GAUGE;
    m->requests =
        herd_metrics_family(reg, "herd_router_requests_total", "Requests sent to a replica (attempts).", C, NULL, 0);
    m->errors = herd_metrics_family(reg, "herd_router_errors_total",
                                    "Attempts that failed: connect errors, timeouts, broken answers, 5xx.", C, NULL, 0);
    m->latency = herd_metrics_family(reg, "herd_router_request_duration_seconds",
                                     "Time from sending a request to a replica to the end of its answer.",
                                     HERD_METRIC_HISTOGRAM, latency_bounds, N_LATENCY);
    m->in_flight = herd_metrics_family(reg, "herd_router_in_flight", "Requests in flight per replica.", G, NULL, 0);
    m->up = herd_metrics_family(reg, "herd_router_replica_up", "1 while a replica takes requests.", G, NULL, 0);
    m->ejections =
        herd_metrics_family(reg, "herd_router_ejections_total",
                            "Times a replica was ejected (connect error, failures, failed probes).", C, NULL, 0);
    struct herd_metric_family *dec =
        herd_metrics_family(reg, "herd_router_decisions_total",
                            "Replica choices by policy and reason (turn, load, prefix, hash).", C, NULL, 0);
    for (int r = 0; r < ROUTE_REASON_N; r++) {
        const char *names[2] = {"policy", "reason"};
        const char *values[2] = {route_policy_name(rt->p.policy), route_reason_name((enum route_reason)r)};
        m->decisions[r] = herd_metric_series(dec, 2, names, values);
    }
    m->affinity_hits = herd_metrics_counter(reg, "herd_router_cache_affinity_hits_total",
                                            "Requests sent to the replica holding their longest cached prefix.");
    m->retries = herd_metrics_counter(reg, "herd_router_retries_total",
                                      "Requests sent again to another replica after a failure before any byte "
                                      "reached the client.");
    m->budget_exhausted = herd_metrics_counter(reg, "herd_router_retry_budget_exhausted_total",
                                               "Failures not retried because the retry budget was spent.");
    struct herd_metric_family *res = herd_metrics_family(
        reg, "herd_router_resumes_total",
        "Streams whose replica died: resumed on another replica to their end, or ended with an error event.", C, NULL,
        0);
    const char *rn[1] = {"outcome"}, *ok[1] = {"resumed"}, *bad[1] = {"failed"};
    m->resumes_ok = herd_metric_series(res, 1, rn, ok);
    m->resumes_failed = herd_metric_series(res, 1, rn, bad);
    m->waiting = herd_metrics_gauge(reg, "herd_router_waiting", "Requests waiting for a replica to become ready.");
    m->no_replica = herd_metrics_counter(reg, "herd_router_no_replica_total",
                                         "Requests answered 503 because no replica became ready in time.");
    m->replicas_up = herd_metrics_gauge(reg, "herd_router_replicas_up", "Replicas taking requests.");
    m->replicas_total = herd_metrics_gauge(reg, "herd_router_replicas", "Replicas known (up, ejected, draining).");
    if (rt->p.pool_model) {
        m->pool_desired = herd_metrics_gauge(reg, "herd_router_pool_desired_replicas",
                                             "Replicas the autoscaler wants (the HPA rule on waiting requests).");
        m->pool_running = herd_metrics_gauge(reg, "herd_router_pool_replicas", "Local replica processes alive.");
        m->pool_restarts =
            herd_metrics_counter(reg, "herd_router_pool_restarts_total", "Local replicas restarted after a crash.");
    }
    struct herd_metric_family *resp =
        herd_metrics_family(reg, "herd_router_http_responses_total", "Answers to clients by status class.", C, NULL, 0);
    static const char *const classes[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int i = 0; i < 5; i++) {
        const char *n[1] = {"code"}, *v[1] = {classes[i]};
        m->http.responses[i] = herd_metric_series(resp, 1, n, v);
    }
    m->http.cancellations =
        herd_metrics_counter(reg, "herd_router_cancellations_total", "Clients that went away while their request ran.");
    herd_metrics_register_process(reg);
    herd_metrics_on_collect(reg, metrics_collect, rt, false);
    return true;
}

static void route_metrics(struct herd_http_request *r, json_t *body, void *app) {
    (void)body;
    struct herd_router *rt = app;
    const enum herd_metrics_format f = herd_metrics_negotiate(herd_http_request_header(r, "accept"));
    struct herd_buf out;
    herd_buf_init(&out, 64u << 20);
    if (!herd_metrics_render(rt->metrics.reg, f, false, &out)) {
        herd_buf_cleanup(&out);
        herd_http_respond_error(r, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    herd_http_respond(r, 200, herd_metrics_content_type(f), (const char *)out.data, out.len, NULL);
    herd_buf_cleanup(&out);
}

static void route_replicas(struct herd_http_request *r, json_t *body, void *app) {
    (void)body;
    struct herd_router *rt = app;
    json_t *o = json_pack("{s:s, s:o, s:I}", "policy", route_policy_name(rt->p.policy), "replicas", replicas_json(rt),
                          "waiting", (json_int_t)rt->n_waiting);
    if (o && rt->pool) json_object_set_new(o, "pool", router_pool_json(rt));
    herd_http_respond_json(r, 200, o);
}

/* ----------------------------------------------------------- routes */

enum {
    PROBE = HERD_HTTP_ROUTE_OPEN | HERD_HTTP_ROUTE_PROBE,
    /* no JSON_BODY: the proxy parses a body only when it needs to read it
     * (a prompt's blocks for cache-aware, a stream's resume); a body that
     * is not JSON is the replica's to refuse, with the same 400 */
    GEN = HERD_HTTP_ROUTE_ONLY_METHOD,
};

/* The probes and metrics are the router's own; everything else goes to a
 * replica. Forwarded routes are not NEEDS_READY: a request that arrives
 * while no replica is up waits for one (scale from zero, a restart). */
static const struct herd_http_route routes[] = {
    {"GET", "/livez", HERD_HTTP_ROUTE_OPEN, herd_http_livez, NULL},
    {"GET", "/health", PROBE, herd_http_health, NULL},
    {"GET", "/readyz", PROBE, herd_http_readyz, NULL},
    {"GET", "/metrics", HERD_HTTP_ROUTE_OPEN, route_metrics, NULL},
    {"GET", "/router/replicas", 0, route_replicas, NULL},
    {"POST", "/v1/chat/completions", GEN, proxy_handler, NULL},
    {"POST", "/v1/completions", GEN, proxy_handler, NULL},
    {"POST", "/tokenize", HERD_HTTP_ROUTE_ONLY_METHOD, proxy_handler, NULL},
    {"POST", "/detokenize", HERD_HTTP_ROUTE_ONLY_METHOD, proxy_handler, NULL},
    {"GET", "/v1/", HERD_HTTP_ROUTE_PREFIX, proxy_handler, NULL},
    {"POST", "/v1/", HERD_HTTP_ROUTE_PREFIX, proxy_handler, NULL},
    {"DELETE", "/v1/", HERD_HTTP_ROUTE_PREFIX, proxy_handler, NULL},
};

/* Ready while some replica takes requests, or a pool can start one. */
static enum herd_http_app_state app_state(void *app) {
    struct herd_router *rt = app;
    return replicas_up(rt) || rt->pool ? HERD_HTTP_APP_READY : HERD_HTTP_APP_LOADING;
}

static void on_drain(void *app) {
    struct herd_router *rt = app;
    proxy_fail_waiting(rt);
}

/* ----------------------------------------------------------- the tick */

static void tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct herd_router *rt = arg;
    const double now = herd_time_now_s();
    router_dns_apply(rt);
    replicas_tick(rt, now);
    proxy_dispatch_waiting(rt, now);
    if (now - rt->last_expire_s > 1) {
        rt->last_expire_s = now;
        for (uint32_t i = 0; i < rt->n_rep; i++) prefix_index_expire(&rt->rep[i]->index, now);
    }
}

/* ----------------------------------------------------------- lifetime */

static enum herd_status parse_backend(const char *url, char *host, size_t host_len, uint16_t *port,
                                      struct herd_error *err) {
    const char *s = url;
    if (strncmp(s, "http://", 7) == 0)
        s += 7;
    else if (strstr(s, "://"))
        return herd_error_set(err, HERD_E_INVALID, "--backend %s: only http:// backends are supported", url);
    const char *hs = s, *he;
    if (*s == '[') {
        hs = s + 1;
        he = strchr(hs, ']');
        if (!he) return herd_error_set(err, HERD_E_INVALID, "--backend %s: unclosed [", url);
        s = he + 1;
    } else {
        he = strchr(s, ':');
        if (!he) he = s + strcspn(s, "/");
        s = he;
    }
    if ((size_t)(he - hs) >= host_len || he == hs)
        return herd_error_set(err, HERD_E_INVALID, "--backend %s: no host", url);
    memcpy(host, hs, (size_t)(he - hs));
    host[he - hs] = 0;
    unsigned long p = 80;
    if (*s == ':') {
        char *end;
        p = strtoul(s + 1, &end, 10);
        if (end == s + 1 || (*end && *end != '/') || p == 0 || p > 65535)
            return herd_error_set(err, HERD_E_INVALID, "--backend %s: the port is not 1..65535", url);
    }
    unsigned char buf[16];
    if (inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1)
        return herd_error_set(err, HERD_E_INVALID,
                              "--backend %s: the host must be an IP address (use --backends-dns for names)", url);
    *port = (uint16_t)p;
    return HERD_OK;
}

enum herd_status herd_router_create(const struct herd_router_params *p, struct herd_router **out,
                                    struct herd_error *err) {
    *out = NULL;
    const int sources = (p->n_backends > 0) + (p->dns_name != NULL) + (p->pool_model != NULL);
    if (sources != 1)
        return herd_error_set(err, HERD_E_INVALID, "give replicas one way: --backend, --backends-dns or --spawn");
    struct herd_router *rt = calloc(1, sizeof *rt);
    if (!rt) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    rt->p = *p;
    rt->retry_budget = 10;
    rt->block_tokens = 0;
    route_policy_state_init(&rt->ps, (uint64_t)(herd_time_now_s() * 1e6));
    enum herd_status rc = HERD_E_NOMEM;
    if (!metrics_init(rt)) {
        herd_error_set(err, rc, "out of memory");
        goto fail;
    }
    if (p->backend_api_key) {
        /* the header every call to a replica carries, whatever the key's length */
        const size_t n = strlen(p->backend_api_key) + 32;
        if (!(rt->backend_auth = malloc(n))) {
            herd_error_set(err, rc, "out of memory");
            goto fail;
        }
        snprintf(rt->backend_auth, n, "Authorization: Bearer %s\r\n", p->backend_api_key);
    }
    if (p->model_path && (rc = prompt_key_load_model(rt, err)) != HERD_OK) goto fail;
    struct herd_http_server_params hp;
    herd_http_server_default_params(&hp);
    hp.host = p->host;
    hp.port = p->port;
    hp.limits = p->http;
    hp.max_connections = p->max_connections;
    hp.drain_timeout_s = p->drain_timeout_s;
    hp.api_keys = p->api_keys;
    hp.auth_all = p->auth_all;
    hp.quiet = p->quiet;
    hp.batched_io = true; /* a proxy turn: many small reads and writes */
    hp.log_component = "route";
    /* the pages go in front of the replicas like the probes: the router's own */
    size_t n_routes = sizeof routes / sizeof *routes;
    if (!(rt->routes = calloc(n_routes + HERD_WEB_ROUTES, sizeof *rt->routes))) {
        herd_error_set(err, rc, "out of memory");
        goto fail;
    }
    memcpy(rt->routes, routes, sizeof routes);
    if (p->web) {
        herd_web_routes(rt->routes + n_routes);
        n_routes += HERD_WEB_ROUTES;
    }
    hp.routes = rt->routes;
    hp.n_routes = n_routes;
    hp.hooks = (struct herd_http_hooks){
        .app = rt,
        .state = app_state,
        .loading = {"no_replicas", "no_replicas", "no replica is ready"},
        .failed = {"failed", "failed", "the router failed"},
        .on_drain = on_drain,
    };
    hp.metrics = &rt->metrics.http;
    if ((rc = herd_http_server_create(&hp, &rt->http, err)) != HERD_OK) goto fail;
    struct event_base *base = herd_http_server_base(rt->http);
    struct herd_http_client_params cp;
    herd_http_client_default_params(&cp);
    cp.head_timeout_s = p->upstream_head_timeout_s;
    cp.idle_timeout_s = p->upstream_idle_timeout_s;
    if ((rc = herd_http_client_create(base, &cp, &rt->client, err)) != HERD_OK) goto fail;
    herd_http_client_default_params(&cp);
    /* a hung replica (SIGSTOP, a wedged loop) fails its probes within
     * about two intervals */
    cp.connect_timeout_s = fmax(0.2, fmin(1, p->health_interval_s));
    cp.head_timeout_s = fmax(0.5, fmin(2, 2 * p->health_interval_s));
    cp.idle_timeout_s = 3; /* the state stream's heartbeat is 1 s */
    cp.max_idle_per_upstream = 2;
    if ((rc = herd_http_client_create(base, &cp, &rt->control, err)) != HERD_OK) goto fail;
    for (uint32_t i = 0; i < p->n_backends; i++) {
        char host[INET6_ADDRSTRLEN];
        uint16_t port = 0;
        if ((rc = parse_backend(p->backends[i], host, sizeof host, &port, err)) != HERD_OK) goto fail;
        if (!replica_add(rt, host, port, FROM_FLAG)) {
            rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
            goto fail;
        }
    }
    if (p->dns_name && (rc = router_dns_start(rt, err)) != HERD_OK) goto fail;
    if (p->pool_model && (rc = router_pool_start(rt, err)) != HERD_OK) goto fail;
    rt->tick = event_new(base, -1, EV_PERSIST, tick, rt);
    struct timeval tv = {0, (suseconds_t)(TICK_S * 1e6)};
    if (!rt->tick || event_add(rt->tick, &tv) != 0) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto fail;
    }
    *out = rt;
    return HERD_OK;
fail:
    herd_router_destroy(rt);
    return rc;
}

enum herd_status herd_router_run(struct herd_router *rt, struct herd_error *err) {
    /* the first health checks at once, not a tick later */
    tick(-1, 0, rt);
    return herd_http_server_run(rt->http, err);
}

void herd_router_destroy(struct herd_router *rt) {
    if (!rt) return;
    if (rt->tick) event_free(rt->tick);
    router_dns_stop(rt);
    router_pool_stop(rt);
    /* the calls go before the clients, the clients before the loop (which
     * the server frees, aborting the proxies' work, calls already gone) */
    proxy_cancel_calls(rt);
    replicas_destroy(rt);
    herd_http_client_destroy(rt->control);
    herd_http_client_destroy(rt->client);
    herd_http_server_destroy(rt->http);
    prompt_key_unload(rt);
    herd_metrics_destroy(rt->metrics.reg);
    free(rt->backend_auth);
    free(rt->routes);
    free(rt);
}
