/* The local pool (pool.h) wired to the replica set: each child the pool
 * starts becomes a replica (FROM_POOL, health-checked like any other), a
 * replica's readiness goes back to the pool, a scale-down drains the
 * replica in the router before the pool stops it, and the autoscaler's
 * metric is the waiting requests the replicas report plus those the router
 * holds for want of a ready replica. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "router/pool.h"
#include "router/router_internal.h"

static struct replica *by_pool_id(struct herd_router *rt, uint32_t id) {
    for (uint32_t i = 0; i < rt->n_rep; i++)
        if (rt->rep[i]->source == FROM_POOL && rt->rep[i]->pool_id == id) return rt->rep[i];
    return NULL;
}

static void on_up(void *arg, uint32_t id, const char *host, uint16_t port) {
    struct herd_router *rt = arg;
    struct replica *x = replica_add(rt, host, port, FROM_POOL);
    if (x) x->pool_id = id;
}

static void on_drain(void *arg, uint32_t id) {
    struct replica *x = by_pool_id(arg, id);
    if (x) replica_drain(x);
}

static uint32_t on_in_flight(void *arg, uint32_t id) {
    const struct replica *x = by_pool_id(arg, id);
    return x ? x->in_flight : 0;
}

static void on_gone(void *arg, uint32_t id) {
    struct replica *x = by_pool_id(arg, id);
    if (!x) return;
    /* the process is gone: no new requests; requests on it fail over as
     * their connections break, and the replica is removed once idle */
    x->pool_id = UINT32_MAX;
    replica_drain(x);
    replica_report(x, REPLICA_CONNECT);
}

static double on_observed(void *arg) {
    const struct herd_router *rt = arg;
    double waiting = rt->n_waiting;
    for (uint32_t i = 0; i < rt->n_rep; i++)
        if (replica_eligible(rt->rep[i])) waiting += rt->rep[i]->waiting;
    return waiting;
}

static const struct herd_replica_pool_ops pool_ops = {on_up, on_drain, on_in_flight, on_gone, on_observed};

enum herd_status router_pool_start(struct herd_router *rt, struct herd_error *err) {
    const struct herd_router_params *p = &rt->p;
    struct herd_replica_pool_params pp;
    herd_replica_pool_default_params(&pp);
    pp.herd_path = p->pool_herd;
    pp.model_path = p->pool_model;
    pp.serve_args = p->pool_serve_args;
    pp.initial_replicas = p->pool_n;
    pp.threads_per_replica = p->pool_threads;
    pp.as.min_replicas = p->pool_min;
    pp.as.max_replicas = p->pool_max;
    pp.as.target = p->pool_target_waiting;
    pp.as.scale_down_window_s = p->pool_scale_down_window_s;
    pp.ops = &pool_ops;
    pp.ops_arg = rt;
    return herd_replica_pool_create(herd_http_server_base(rt->http), &pp, &rt->pool, err);
}

void router_pool_stop(struct herd_router *rt) {
    herd_replica_pool_destroy(rt->pool);
    rt->pool = NULL;
}

void router_pool_demand(struct herd_router *rt) { herd_replica_pool_demand(rt->pool); }

void router_pool_ready(struct herd_router *rt, const struct replica *x, bool ready) {
    if (rt->pool && x->source == FROM_POOL && x->pool_id != UINT32_MAX)
        herd_replica_pool_replica_ready(rt->pool, x->pool_id, ready);
}

void router_pool_metrics(struct herd_router *rt) {
    struct herd_replica_pool_status st;
    herd_replica_pool_status(rt->pool, &st);
    herd_metric_set(rt->metrics.pool_desired, st.desired);
    herd_metric_set(rt->metrics.pool_running, st.running);
    herd_metric_set(rt->metrics.pool_restarts, (double)st.restarts);
}

json_t *router_pool_json(const struct herd_router *rt) {
    struct herd_replica_pool_status st;
    herd_replica_pool_status(rt->pool, &st);
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "running", (json_int_t)st.running, "ready",
                     (json_int_t)st.ready, "starting", (json_int_t)st.starting, "draining", (json_int_t)st.draining,
                     "backoff", (json_int_t)st.backoff, "desired", (json_int_t)st.desired, "starts",
                     (json_int_t)st.starts, "restarts", (json_int_t)st.restarts, "scale_ups", (json_int_t)st.scale_ups,
                     "scale_downs", (json_int_t)st.scale_downs);
}
