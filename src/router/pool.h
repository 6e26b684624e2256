/* herd route's local pool: `herd serve` children of this process, each
 * pinned to its own CPUs, supervised (a crash is restarted with backoff)
 * and autoscaled between min and max by the HPA rule (autoscale.h) on the
 * waiting requests the router observes.
 *
 * A replica is one child process. Its id is new for every process, never
 * reused: a crashed replica is gone (replica_gone) and its restart is a
 * new replica (replica_up with a new id and port) on the same CPUs, so the
 * router never confuses the answers of two processes. The router learns
 * of each through the ops table below, health-checks /readyz itself and
 * says what it saw (herd_replica_pool_replica_ready).
 *
 * Life of a replica:
 *   starting --ready--> ready --(scale down)--> draining --> stopping --> gone
 *   starting/ready --(exit)--> gone, and its CPU slot waits in backoff
 *                              (1 s doubling to 30 s; reset after 60 s up)
 *                              before the next replica starts on it
 * draining: the router was told (replica_drain) and sends it nothing new;
 * once replica_in_flight says 0, or after drain_timeout_s, SIGTERM (herd
 * serve finishes what it runs and exits 0), and SIGKILL after
 * stop_timeout_s.
 *
 * Children: `HERD serve -m MODEL --host 127.0.0.1 --port P --threads T
 * [serve_args]`, with P a port free a moment before (bind to port 0, read
 * it, close); a child that exits before it was ever ready while another
 * socket listens on its port lost that race and is started again on a new
 * port at once, not counted as a crash. In the child, before exec: its own
 * process group (a terminal's Ctrl-C reaches the router, which stops the
 * children in order), SIGTERM when the thread that forked it dies
 * (PR_SET_PDEATHSIG: no orphans when the router is killed), the CPU set,
 * stdout onto stderr (the router's stdout stays its own), every other
 * descriptor closed (the router's listening socket must not outlive it).
 *
 * Threads: everything on the thread that runs the event_base given to
 * herd_replica_pool_create, which must also be the thread that lives as long as
 * the children (PR_SET_PDEATHSIG follows the forking thread). The ops are
 * called on it, never from inside a herd_replica_pool_* call except where said. */
#ifndef HERD_ROUTER_POOL_H
#define HERD_ROUTER_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "herd/status.h"
#include "router/autoscale.h"

struct event_base;
struct herd_replica_pool;

/* What the pool asks of the router; arg is herd_replica_pool_params.ops_arg. */
struct herd_replica_pool_ops {
    /* A child started: send it health checks, and requests once ready.
     * host is "127.0.0.1" (valid during the call). */
    void (*replica_up)(void *arg, uint32_t id, const char *host, uint16_t port);
    /* Send id no new request: it is about to be stopped. */
    void (*replica_drain)(void *arg, uint32_t id);
    /* Requests of id the router has not finished (drain waits for 0). */
    uint32_t (*replica_in_flight)(void *arg, uint32_t id);
    /* id's process has exited (crashed, or stopped after its drain):
     * forget it; a request on it has failed. */
    void (*replica_gone)(void *arg, uint32_t id);
    /* The autoscaler's metric, each sync period: requests waiting in the
     * ready replicas' queues plus those the router holds for want of a
     * replica. */
    double (*observed_waiting)(void *arg);
};

struct herd_replica_pool_params {
    const char *herd_path;           /* the herd binary (NULL: /proc/self/exe) */
    const char *model_path;          /* -m, required */
    const char *const *serve_args;   /* more `herd serve` flags, NULL-terminated; NULL: none */
    uint32_t initial_replicas;       /* started at once, clamped to [min, max] (1) */
    uint32_t threads_per_replica;    /* --threads and CPUs each (0: the CPUs this process may use / max, at least 1) */
    struct herd_autoscale_params as; /* min, max, target, tolerance, windows (autoscale.h; min 1, max 1) */
    double sync_period_s;            /* the autoscaler's period (1; Kubernetes' is 15 s, too slow for a queue) */
    double drain_timeout_s;          /* the longest wait for in-flight requests before SIGTERM (60) */
    double stop_timeout_s;           /* from SIGTERM to SIGKILL (35: herd serve's 30 s drain, and 5 to exit) */
    double backoff_initial_s;        /* first restart delay after a crash (1) */
    double backoff_max_s;            /* the delay doubles up to this (30) */
    double backoff_reset_s;          /* a replica up this long resets its slot's delay (60) */
    const struct herd_replica_pool_ops *ops; /* required, every member set; must outlive the pool */
    void *ops_arg;
};

void herd_replica_pool_default_params(struct herd_replica_pool_params *p);

/* Checks p, reads this process's CPU set, and starts initial_replicas
 * children (replica_up is called for each before this returns). That
 * count is recorded as the first recommendation, so an idle start keeps
 * it for the scale-down window before scaling down. The
 * caller frees with herd_replica_pool_destroy; base must outlive the pool.
 * HERD_E_INVALID: a bad parameter (the message names it); HERD_E_IO: the
 * binary is not executable, or fork failed. */
enum herd_status herd_replica_pool_create(struct event_base *base, const struct herd_replica_pool_params *p,
                                          struct herd_replica_pool **out, struct herd_error *err);

/* Stops every child: SIGTERM, up to stop_timeout_s for all of them to exit
 * (the loop does not run meanwhile: this blocks), then SIGKILL, and reaps
 * them all. Calls no op. NULL is a no-op. */
void herd_replica_pool_destroy(struct herd_replica_pool *pool);

/* The router's health check of id: ready (its /readyz answered 200) or
 * not. Unknown or stale ids are ignored. */
void herd_replica_pool_replica_ready(struct herd_replica_pool *pool, uint32_t id, bool ready);

/* A request arrived and no replica is ready: when no replica is starting
 * or running either (scale from zero, or all of them crashed and none is
 * waiting to restart), one starts now, without waiting for the next sync
 * (replica_up is called from inside this call). Otherwise nothing: the
 * sync period sees the waiting request in observed_waiting. */
void herd_replica_pool_demand(struct herd_replica_pool *pool);

/* For /metrics and tests. */
struct herd_replica_pool_status {
    uint32_t running;  /* child processes alive (starting, ready, draining, stopping) */
    uint32_t ready;    /* of them, reported ready and not draining */
    uint32_t starting; /* of them, not yet ready */
    uint32_t draining; /* of them, draining or stopping */
    uint32_t backoff;  /* CPU slots whose crashed replica waits to restart */
    uint32_t desired;  /* the count the autoscaler wants now (running + backoff - draining heads to it) */
    uint64_t starts;   /* children started, restarts included */
    uint64_t restarts; /* starts after a crash (port races not counted) */
    uint64_t crashes;  /* unexpected exits */
    uint64_t port_races;
    uint64_t scale_ups;   /* syncs (or demands) that raised the count */
    uint64_t scale_downs; /* syncs that lowered it */
};
void herd_replica_pool_status(const struct herd_replica_pool *pool, struct herd_replica_pool_status *out);

/* The port of replica id, 0 when unknown (tests). */
uint16_t herd_replica_pool_replica_port(const struct herd_replica_pool *pool, uint32_t id);
/* The pid of replica id, 0 when unknown (tests: kill -9 one). */
int herd_replica_pool_replica_pid(const struct herd_replica_pool *pool, uint32_t id);

#endif
