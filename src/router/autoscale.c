/* The HPA rule of autoscale.h: pure arithmetic on the caller's numbers and
 * the caller's history; no clock, no I/O, no allocation. */
#include "router/autoscale.h"

#include <math.h>

#include "base/assert.h"

void herd_autoscale_default_params(struct herd_autoscale_params *p) {
    *p = (struct herd_autoscale_params){
        .min_replicas = 1,
        .max_replicas = 1,
        .target = 2,
        .tolerance = 0.1,
        .scale_up_window_s = 0,
        .scale_down_window_s = 300,
    };
}

uint32_t herd_autoscale_history_cap(const struct herd_autoscale_params *p, double period_s) {
    HERD_ASSERT(period_s > 0);
    double w = p->scale_up_window_s > p->scale_down_window_s ? p->scale_up_window_s : p->scale_down_window_s;
    /* twice the syncs a window spans: a timer may fire early, and the pool
     * may record a sample between two syncs (scale from zero); + 4 for the
     * rounding at both ends and the new sample */
    double n = 2 * ceil(w / period_s) + 4;
    /* an hour's window at 1 ms syncs: a bound on the storage, not a limit
     * anyone meets (Kubernetes caps windows at an hour) */
    if (n > 1e7) n = 1e7;
    return (uint32_t)n;
}

void herd_autoscale_history_init(struct herd_autoscale_history *h, struct herd_autoscale_sample *storage,
                                 uint32_t cap) {
    HERD_ASSERT(storage && cap >= 1);
    *h = (struct herd_autoscale_history){.samples = storage, .n = 0, .cap = cap};
}

uint32_t herd_autoscale_desired(uint32_t current, double total, double target, double tolerance) {
    HERD_ASSERT(target > 0);
    if (!(total > 0)) total = 0; /* NaN or negative from a confused caller: no demand */
    if (current == 0) return total > 0 ? 1 : 0;
    double ratio = total / ((double)current * target);
    if (fabs(ratio - 1) <= tolerance) return current;
    double d = ceil(total / target);
    /* a count past any pool; the bounds clamp it later */
    return d >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

uint32_t herd_autoscale_stabilize(const struct herd_autoscale_params *p, struct herd_autoscale_history *h, double now_s,
                                  uint32_t current, uint32_t desired) {
    double up_cutoff = now_s - p->scale_up_window_s;
    double down_cutoff = now_s - p->scale_down_window_s;
    uint32_t up = desired, down = desired;
    uint32_t old = UINT32_MAX, oldest = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct herd_autoscale_sample *s = &h->samples[i];
        if (s->t_s > up_cutoff && s->desired < up) up = s->desired;
        if (s->t_s > down_cutoff && s->desired > down) down = s->desired;
        if (s->t_s < up_cutoff && s->t_s < down_cutoff) old = i;
        if (s->t_s < h->samples[oldest].t_s) oldest = i;
    }
    uint32_t rec = current;
    if (rec < up) rec = up;
    if (rec > down) rec = down;

    struct herd_autoscale_sample s = {.t_s = now_s, .desired = desired};
    if (old != UINT32_MAX)
        h->samples[old] = s;
    else if (h->n < h->cap)
        h->samples[h->n++] = s;
    else
        h->samples[oldest] = s; /* defensive: herd_autoscale_history_cap sizes h so this is not reached */
    return rec;
}

uint32_t herd_autoscale_step(const struct herd_autoscale_params *p, struct herd_autoscale_history *h, double now_s,
                             uint32_t current, double total) {
    HERD_ASSERT(p->max_replicas >= 1 && p->min_replicas <= p->max_replicas);
    if (current > p->max_replicas) return p->max_replicas;
    if (current < p->min_replicas) return p->min_replicas;
    uint32_t desired = herd_autoscale_desired(current, total, p->target, p->tolerance);
    uint32_t rec;
    if (current == 0 && desired > 0) {
        /* scale from zero: a request waits for this replica, so no window
         * delays it; the sample keeps it through the scale-down window */
        (void)herd_autoscale_stabilize(p, h, now_s, current, desired);
        rec = desired;
    } else {
        rec = herd_autoscale_stabilize(p, h, now_s, current, desired);
    }
    if (rec < p->min_replicas) rec = p->min_replicas;
    if (rec > p->max_replicas) rec = p->max_replicas;
    return rec;
}
