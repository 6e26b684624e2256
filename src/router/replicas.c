/* The replica set: adding and removing replicas, active health checks
 * (/readyz), passive ejection (connect errors at once; timeouts, broken
 * answers and 5xx after three in a row), readmission with a slow start,
 * and the per-replica metric series. Everything on the loop's thread. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "base/log.h"
#include "base/timing.h"
#include "router/router_internal.h"

#define PREFIX_INDEX_MAX (1u << 20) /* hashes per replica: a 16M-token cache at 16 per block */
#define EJECT_MAX_S      30.0
#define ERRORS_TO_EJECT  3
#define PROBES_TO_EJECT  2

static struct herd_metric *series(struct herd_metric_family *f, const char *name) {
    const char *names[1] = {"replica"}, *values[1] = {name};
    return herd_metric_series(f, 1, names, values);
}

struct replica *replica_find(struct herd_router *rt, const char *host, uint16_t port) {
    for (uint32_t i = 0; i < rt->n_rep; i++)
        if (rt->rep[i]->port == port && strcmp(rt->rep[i]->host, host) == 0) return rt->rep[i];
    return NULL;
}

struct replica *replica_add(struct herd_router *rt, const char *host, uint16_t port, enum replica_source src) {
    struct replica *x = replica_find(rt, host, port);
    if (x) {
        x->draining = false; /* back in DNS before it was removed */
        return x;
    }
    if (rt->n_rep == rt->cap_rep) {
        const uint32_t cap = rt->cap_rep ? rt->cap_rep * 2 : 8;
        struct replica **r = realloc(rt->rep, cap * sizeof *r);
        if (!r) return NULL;
        rt->rep = r, rt->cap_rep = cap;
    }
    x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->rt = rt;
    x->id = rt->next_id++;
    snprintf(x->host, sizeof x->host, "%s", host);
    x->port = port;
    snprintf(x->name, sizeof x->name, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
    x->key = XXH3_64bits(x->name, strlen(x->name));
    x->source = src;
    x->pool_id = UINT32_MAX;
    x->health = HEALTH_UNKNOWN;
    x->block_tokens = 0;
    prefix_index_init(&x->index, PREFIX_INDEX_MAX);
    herd_buf_init(&x->feed_buf, 1u << 20);
    struct router_metrics *m = &rt->metrics;
    x->m_requests = series(m->requests, x->name);
    x->m_errors = series(m->errors, x->name);
    x->m_latency = series(m->latency, x->name);
    x->m_in_flight = series(m->in_flight, x->name);
    x->m_up = series(m->up, x->name);
    x->m_ejections = series(m->ejections, x->name);
    herd_metric_set(x->m_up, 0);
    rt->rep[rt->n_rep++] = x;
    herd_log(HERD_LOG_INFO, "route", NULL, NULL, 0, "replica %s added", x->name);
    return x;
}

void replica_drain(struct replica *x) {
    if (x->draining) return;
    x->draining = true;
    herd_log(HERD_LOG_INFO, "route", NULL, NULL, 0, "replica %s draining (%u in flight)", x->name, x->in_flight);
}

bool replica_eligible(const struct replica *x) { return x->health == HEALTH_UP && !x->draining; }

double replica_weight(const struct replica *x, double now) {
    const double s = x->rt->p.slow_start_s;
    if (s <= 0 || !x->last_ejected) return 1; /* slow start is for returning replicas */
    const double w = 0.1 + 0.9 * (now - x->up_since) / s;
    return w < 1 ? w : 1;
}

double replica_load(const struct replica *x) {
    const double reported = (double)x->running + (double)x->waiting;
    /* the stream is fresh within tens of ms, but this router's own requests
     * are known at once */
    return reported > x->in_flight ? reported : (double)x->in_flight;
}

static void set_up(struct replica *x, bool up) {
    herd_metric_set(x->m_up, up ? 1 : 0);
    router_pool_ready(x->rt, x, up);
}

static void eject(struct replica *x, const char *why) {
    const double now = herd_time_now_s();
    if (x->health == HEALTH_EJECTED) return;
    const double t = fmin(x->rt->p.eject_base_s * pow(2, x->ejections_in_row), EJECT_MAX_S);
    x->ejections_in_row++;
    x->health = HEALTH_EJECTED;
    x->ejected_until = now + t;
    x->last_ejected = now;
    x->next_probe_s = x->ejected_until;
    x->running = x->waiting = 0;
    set_up(x, false);
    herd_metric_add(x->m_ejections, 1);
    herd_log(HERD_LOG_WARN, "route", NULL, NULL, 0, "replica %s ejected for %.1f s: %s", x->name, t, why);
    feed_stop(x);
}

static void admit(struct replica *x, double now) {
    if (x->health == HEALTH_UP) return;
    const bool returning = x->health == HEALTH_EJECTED;
    x->health = HEALTH_UP;
    x->up_since = now;
    x->consecutive_errors = x->probe_failures = 0;
    set_up(x, true);
    herd_log(HERD_LOG_INFO, "route", NULL, NULL, 0, "replica %s up%s", x->name,
             returning && x->rt->p.slow_start_s > 0 ? " (slow start)" : "");
    feed_start(x);
    proxy_dispatch_waiting(x->rt, now);
}

void replica_report(struct replica *x, enum replica_failure f) {
    if (f == REPLICA_OK) {
        x->consecutive_errors = 0;
        if (x->health == HEALTH_UP && herd_time_now_s() - x->up_since > 60) x->ejections_in_row = 0;
        return;
    }
    static const char *const kinds[] = {"ok", "connect", "timeout", "broken", "5xx"};
    herd_metric_add(x->m_errors, 1);
    if (f == REPLICA_CONNECT) {
        eject(x, "connection refused or unreachable");
        return;
    }
    if (++x->consecutive_errors >= ERRORS_TO_EJECT) {
        char why[64];
        snprintf(why, sizeof why, "%u failed requests in a row (last: %s)", x->consecutive_errors, kinds[f]);
        eject(x, why);
    }
}

/* ------------------------------------------------------------- probes */

static void probe_head(struct herd_http_call *call, const struct herd_http_resp_parser *resp, void *arg) {
    struct replica *x = arg;
    const bool ok = resp->status == 200;
    herd_http_call_cancel(call); /* the body says nothing more */
    x->probe = NULL;
    const double now = herd_time_now_s();
    if (ok) {
        x->probe_failures = 0;
        if (x->health != HEALTH_EJECTED || now >= x->ejected_until) admit(x, now);
    } else if (++x->probe_failures >= PROBES_TO_EJECT && x->health == HEALTH_UP) {
        char why[48];
        snprintf(why, sizeof why, "/readyz answered %d", resp->status);
        eject(x, why);
    }
}

static void probe_done(struct herd_http_call *call, enum herd_http_call_error e, const char *msg, void *arg) {
    (void)call;
    struct replica *x = arg;
    x->probe = NULL;
    if (e == HERD_HTTP_CALL_OK) return;
    if (x->health == HEALTH_UP && (e == HERD_HTTP_CALL_CONNECT || ++x->probe_failures >= PROBES_TO_EJECT)) {
        eject(x, msg);
        /* hung, not dead (the kernel still accepts for it): what it was
         * answering will not come; a dead one's connections break alone */
        if (e == HERD_HTTP_CALL_TIMEOUT) proxy_abandon_replica(x, "the replica stopped answering");
    }
}

static const struct herd_http_call_ops probe_ops = {probe_head, NULL, probe_done};

static void probe(struct replica *x, double now) {
    x->next_probe_s = now + x->rt->p.health_interval_s;
    struct herd_http_client_request q = {.method = "GET", .host = x->host, .port = x->port, .target = "/readyz"};
    q.headers = x->rt->backend_auth;
    struct herd_error err = {0};
    x->probe = herd_http_client_send(x->rt->control, &q, &probe_ops, x, &err);
    if (!x->probe) herd_log(HERD_LOG_ERROR, "route", NULL, NULL, 0, "probe %s: %s", x->name, err.msg);
}

/* ------------------------------------------------------------- the set */

static void replica_free(struct replica *x) {
    if (x->probe) herd_http_call_cancel(x->probe);
    feed_stop(x);
    prefix_index_cleanup(&x->index);
    herd_buf_cleanup(&x->feed_buf);
    set_up(x, false);
    /* its series go with it: addresses come and go (pods, pool ports) */
    struct herd_metric *series[] = {x->m_requests, x->m_errors, x->m_latency, x->m_in_flight, x->m_up, x->m_ejections};
    for (size_t i = 0; i < sizeof series / sizeof *series; i++) herd_metric_series_remove(series[i]);
    free(x);
}

void replicas_tick(struct herd_router *rt, double now) {
    for (uint32_t i = 0; i < rt->n_rep;) {
        struct replica *x = rt->rep[i];
        if (x->draining && x->in_flight == 0) {
            herd_log(HERD_LOG_INFO, "route", NULL, NULL, 0, "replica %s removed", x->name);
            replica_free(x);
            rt->rep[i] = rt->rep[--rt->n_rep];
            continue;
        }
        /* with a live state stream the replica proves itself alive; probe
         * anyway at the interval: a wedged server may still stream */
        if (!x->probe && now >= x->next_probe_s) probe(x, now);
        if (x->health == HEALTH_UP) feed_tick(x, now);
        i++;
    }
}

uint32_t replicas_up(const struct herd_router *rt) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < rt->n_rep; i++) n += replica_eligible(rt->rep[i]);
    return n;
}

void replicas_destroy(struct herd_router *rt) {
    for (uint32_t i = 0; i < rt->n_rep; i++) replica_free(rt->rep[i]);
    free(rt->rep);
    rt->rep = NULL;
    rt->n_rep = rt->cap_rep = 0;
}

json_t *replicas_json(const struct herd_router *rt) {
    static const char *const health[] = {"unknown", "up", "ejected"};
    json_t *arr = json_array();
    const double now = herd_time_now_s();
    for (uint32_t i = 0; arr && i < rt->n_rep; i++) {
        const struct replica *x = rt->rep[i];
        json_array_append_new(arr, json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:f, s:b, s:I}", "replica",
                                             x->name, "health", health[x->health], "draining", x->draining, "in_flight",
                                             (json_int_t)x->in_flight, "running", (json_int_t)x->running, "waiting",
                                             (json_int_t)x->waiting, "kv_used", (json_int_t)x->kv_used, "kv_total",
                                             (json_int_t)x->kv_total, "weight", replica_weight(x, now), "state_stream",
                                             x->feed != NULL && x->herd, "cached_blocks", (json_int_t)x->index.n));
    }
    return arr;
}
