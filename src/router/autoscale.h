/* The replica count of herd route's local pool, by the rule of Kubernetes'
 * HorizontalPodAutoscaler (autoscaling/v2), as pure functions: the caller
 * reads the clock and the metric and passes them in.
 *
 * Each sync period the pool observes `total`, the requests waiting over all
 * its replicas (queued in them, and held by the router for want of one), and
 * the HPA's rule for an external metric with an AverageValue target gives
 *
 *     ratio   = total / (current * target)
 *     desired = current                   when |ratio - 1| <= tolerance
 *               ceil(total / target)      otherwise
 *
 * which is ceil(current * observed / target) with observed the waiting
 * requests per replica. Then the stabilisation windows
 * (pkg/controller/podautoscaler, stabilizeRecommendationWithBehaviors): the
 * raw desired counts of the last scale_up_window_s bound a scale-up from
 * below (the count rises only to the least of them: a rise must persist for
 * the whole window) and those of the last scale_down_window_s bound a
 * scale-down from above (it falls only to the greatest of them: a dip must
 * persist for the whole window). Last, the count is clamped to [min, max].
 * Kubernetes' rate policies (at most N pods or P % per period) are not
 * modelled: the windows alone smooth the count.
 *
 * Scale from zero (which the HPA itself cannot do; KEDA's activation does):
 * with no replica and any demand the answer is 1, at once, whatever the
 * scale-up window; the next periods grow it by the rule above. */
#ifndef HERD_ROUTER_AUTOSCALE_H
#define HERD_ROUTER_AUTOSCALE_H

#include <stdint.h>

struct herd_autoscale_params {
    uint32_t min_replicas; /* 0 allows scale to zero */
    uint32_t max_replicas; /* >= max(min_replicas, 1) */
    double target;         /* waiting requests per replica (2): more than this and a replica is added */
    /* No change while |ratio - 1| <= tolerance (0.1, Kubernetes' default):
     * a metric that hovers about its target does not flap the count. */
    double tolerance;
    double scale_up_window_s;   /* 0: scale up at once (Kubernetes' default) */
    double scale_down_window_s; /* 300 (Kubernetes' default): a replica outlives a five-minute lull */
};

/* The defaults above with min 1, max 1. */
void herd_autoscale_default_params(struct herd_autoscale_params *p);

/* One raw recommendation of the last windows: the desired count computed at
 * time t_s (seconds on the caller's clock). */
struct herd_autoscale_sample {
    double t_s;
    uint32_t desired;
};

/* The recommendations within the longer window, in storage the caller
 * owns (herd_autoscale_history_init). Kubernetes keeps the same list: a
 * new sample takes the place of one older than both windows, else it is
 * appended. */
struct herd_autoscale_history {
    struct herd_autoscale_sample *samples;
    uint32_t n, cap;
};

/* Samples needed for syncs every period_s (> 0) under p's windows, with
 * room for syncs that come early or in between (twice the windows' worth,
 * plus a few). */
uint32_t herd_autoscale_history_cap(const struct herd_autoscale_params *p, double period_s);

/* An empty history over storage[cap] (cap >= 1), which must outlive it. */
void herd_autoscale_history_init(struct herd_autoscale_history *h, struct herd_autoscale_sample *storage, uint32_t cap);

/* The HPA's raw recommendation (before windows and bounds): current
 * replicas, total waiting requests over them (>= 0), the per-replica target
 * (> 0) and the tolerance. current 0: 1 when total > 0, else 0. */
uint32_t herd_autoscale_desired(uint32_t current, double total, double target, double tolerance);

/* The stabilisation step alone: records desired at now_s in h and returns
 * the count within the windows' bounds: max(current, least desired of the
 * scale-up window) but at most the greatest desired of the scale-down
 * window, the new sample counted in both. A sample counts in a window of
 * w seconds when its time is after now_s - w (so a window of 0 holds only
 * the new one). When h is full and no sample is older than both windows,
 * the oldest is replaced (the history is sized so this does not happen:
 * herd_autoscale_history_cap). */
uint32_t herd_autoscale_stabilize(const struct herd_autoscale_params *p, struct herd_autoscale_history *h, double now_s,
                                  uint32_t current, uint32_t desired);

/* One sync period: the replica count to run now, given the count running
 * (current; starting ones included) and the total waiting requests. In
 * Kubernetes' order: a count outside [min, max] goes to the bound (nothing
 * recorded); scale from zero goes to 1 (recorded, windows skipped);
 * otherwise herd_autoscale_desired, herd_autoscale_stabilize, and the
 * bounds. */
uint32_t herd_autoscale_step(const struct herd_autoscale_params *p, struct herd_autoscale_history *h, double now_s,
                             uint32_t current, double total);

#endif
