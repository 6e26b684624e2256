/* A Prometheus metrics registry: counters, gauges and histograms with fixed
 * label values, updated lock-free from any thread (each value is one atomic;
 * a histogram is one atomic per bucket plus its sum), and rendered in the
 * Prometheus text format 0.0.4 or OpenMetrics 1.0.0 at scrape time.
 *
 * Families and their series are registered once, before the hot path runs;
 * label values come from configuration (the model's name, a priority class,
 * a reason), never from a request, so the number of series is bounded.
 * A family can also be exported under alias names (vLLM's, for dashboards
 * and autoscalers written for vLLM), each with extra constant labels;
 * herd_metrics_render leaves the aliases out when asked. */
#ifndef HERD_METRICS_METRICS_H
#define HERD_METRICS_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

enum herd_metric_type { HERD_METRIC_COUNTER, HERD_METRIC_GAUGE, HERD_METRIC_HISTOGRAM };

struct herd_metrics;
struct herd_metric_family;
struct herd_metric; /* one series: a family with one set of label values */

struct herd_metrics *herd_metrics_create(void);
void herd_metrics_destroy(struct herd_metrics *m);

/* A family. name is the full sample name (counters end in _total, as the
 * text format writes them); bounds are a histogram's upper bucket bounds in
 * increasing order (+Inf is added). Registration aborts on a name that is
 * not a valid metric name or is registered twice: those are bugs, not input. */
struct herd_metric_family *herd_metrics_family(struct herd_metrics *m, const char *name, const char *help,
                                               enum herd_metric_type type, const double *bounds, size_t n_bounds);
/* Exports fam a second time as alias_name, every series with the extra
 * label (const_label="const_value" first; const_label NULL for none). */
void herd_metric_family_alias(struct herd_metric_family *fam, const char *alias_name, const char *const_label,
                              const char *const_value);
/* A series of fam with n labels (names and values copied; values are
 * escaped when rendered). The same names and values twice give the same
 * series. */
struct herd_metric *herd_metric_series(struct herd_metric_family *fam, size_t n, const char *const *names,
                                       const char *const *values);
/* Removes a series (a router's replica gone for good: series named after
 * addresses that come and go must not pile up). Not thread-safe against a
 * render or an update of x: the owner's thread only, as in herd route,
 * whose loop also renders. */
void herd_metric_series_remove(struct herd_metric *x);
/* A family with one unlabelled series, in one call. */
struct herd_metric *herd_metrics_counter(struct herd_metrics *m, const char *name, const char *help);
struct herd_metric *herd_metrics_gauge(struct herd_metrics *m, const char *name, const char *help);
struct herd_metric *herd_metrics_histogram(struct herd_metrics *m, const char *name, const char *help,
                                           const double *bounds, size_t n_bounds);

/* Updates: lock-free, any thread; NULL metric is a no-op, so code can
 * observe without knowing whether metrics are on. */
void herd_metric_add(struct herd_metric *x, double v);     /* counter or gauge; counters take v >= 0 */
void herd_metric_set(struct herd_metric *x, double v);     /* gauge (or a counter mirrored from elsewhere) */
void herd_metric_observe(struct herd_metric *x, double v); /* histogram */
double herd_metric_value(const struct herd_metric *x);     /* counter/gauge; a histogram's sum */
uint64_t herd_metric_count(const struct herd_metric *x);   /* a histogram's observations */

/* Called at the start of every render, on the rendering thread, to set the
 * gauges that are sampled rather than updated (queue lengths, memory).
 * With owned, the registry frees arg when it is destroyed. */
void herd_metrics_on_collect(struct herd_metrics *m, void (*fn)(void *arg), void *arg, bool owned);

enum herd_metrics_format { HERD_METRICS_PROMETHEUS, HERD_METRICS_OPENMETRICS };
/* The format a scraper asks for with its Accept header (NULL: Prometheus). */
enum herd_metrics_format herd_metrics_negotiate(const char *accept);
const char *herd_metrics_content_type(enum herd_metrics_format f);
/* Appends the exposition to out. False when out's ceiling was reached. */
bool herd_metrics_render(struct herd_metrics *m, enum herd_metrics_format f, bool with_aliases, struct herd_buf *out);

/* Bucket bounds: n values from start, each factor times the last. */
void herd_metrics_exponential_bounds(double *out, size_t n, double start, double factor);

/* Registers the process_* metrics the Prometheus client libraries export
 * (CPU seconds, resident and virtual memory, open and max fds, start
 * time), read from the kernel at each render. */
void herd_metrics_register_process(struct herd_metrics *m);

#endif
