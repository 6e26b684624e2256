/* The metrics registry and its two text expositions (metrics.h).
 *
 * A value is a double kept as its bit pattern in an atomic 64-bit word:
 * set is a store, add a compare-and-swap loop (uncontended in practice: one
 * scheduler thread and one event-loop thread write). A histogram keeps one
 * atomic count per bucket (not cumulative: each observation touches one
 * word) and its sum; the render accumulates the buckets and derives _count
 * from them, so _count always equals the +Inf bucket even while observers
 * run. Registration happens before the threads that update start, so the
 * lists themselves need no lock. */
#include "metrics/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"

#define MAX_LABELS   4
#define MAX_ALIASES  2
#define MAX_COLLECTS 4

struct herd_metric {
    struct herd_metric_family *fam;
    size_t n_labels;
    char *names[MAX_LABELS], *values[MAX_LABELS];
    _Atomic uint64_t bits;     /* the value, or a histogram's sum, as a double */
    _Atomic uint64_t *buckets; /* histogram: n_bounds + 1 counts */
    struct herd_metric *next;
};

struct alias {
    char *name, *label, *value;
};

struct herd_metric_family {
    char *name, *help;
    enum herd_metric_type type;
    double *bounds;
    size_t n_bounds;
    struct alias aliases[MAX_ALIASES];
    size_t n_aliases;
    struct herd_metric *series, *series_tail;
    struct herd_metric_family *next;
};

struct collect {
    void (*fn)(void *arg);
    void *arg;
    bool owned;
};

struct herd_metrics {
    struct herd_metric_family *families, *tail;
    struct collect collects[MAX_COLLECTS];
    size_t n_collects;
};

static char *dup_or_die(const char *s) {
    char *d = strdup(s);
    HERD_ASSERT(d);
    return d;
}

static void *calloc_or_die(size_t n, size_t size) {
    void *p = calloc(n, size);
    HERD_ASSERT(p);
    return p;
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* (labels: no colon) */
static bool valid_name(const char *s, bool colon) {
    if (!*s || (*s >= '0' && *s <= '9')) return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              (colon && c == ':')))
            return false;
    }
    return true;
}

struct herd_metrics *herd_metrics_create(void) {
    return calloc(1, sizeof(struct herd_metrics));
}

static void free_series(struct herd_metric *x) {
    for (size_t i = 0; i < x->n_labels; i++) free(x->names[i]), free(x->values[i]);
    free(x->buckets);
    free(x);
}

void herd_metrics_destroy(struct herd_metrics *m) {
    if (!m) return;
    for (struct herd_metric_family *f = m->families, *nf; f; f = nf) {
        nf = f->next;
        for (struct herd_metric *x = f->series, *nx; x; x = nx) {
            nx = x->next;
            free_series(x);
        }
        for (size_t i = 0; i < f->n_aliases; i++)
            free(f->aliases[i].name), free(f->aliases[i].label), free(f->aliases[i].value);
        free(f->name);
        free(f->help);
        free(f->bounds);
        free(f);
    }
    for (size_t i = 0; i < m->n_collects; i++)
        if (m->collects[i].owned) free(m->collects[i].arg);
    free(m);
}

static bool name_taken(const struct herd_metrics *m, const char *name) {
    for (const struct herd_metric_family *f = m->families; f; f = f->next) {
        if (strcmp(f->name, name) == 0) return true;
        for (size_t i = 0; i < f->n_aliases; i++)
            if (strcmp(f->aliases[i].name, name) == 0) return true;
    }
    return false;
}

static bool counter_name_ok(enum herd_metric_type type, const char *name) {
    size_t n = strlen(name);
    return type != HERD_METRIC_COUNTER || (n > 6 && strcmp(name + n - 6, "_total") == 0);
}

struct herd_metric_family *herd_metrics_family(struct herd_metrics *m, const char *name, const char *help,
                                               enum herd_metric_type type, const double *bounds, size_t n_bounds) {
    HERD_ASSERT(valid_name(name, true) && !name_taken(m, name) && counter_name_ok(type, name));
    HERD_ASSERT(type != HERD_METRIC_HISTOGRAM || n_bounds > 0);
    struct herd_metric_family *f = calloc_or_die(1, sizeof *f);
    f->name = dup_or_die(name);
    f->help = dup_or_die(help);
    f->type = type;
    if (type == HERD_METRIC_HISTOGRAM) {
        f->bounds = calloc_or_die(n_bounds, sizeof *f->bounds);
        for (size_t i = 0; i < n_bounds; i++) {
            HERD_ASSERT(i == 0 || bounds[i] > bounds[i - 1]);
            f->bounds[i] = bounds[i];
        }
        f->n_bounds = n_bounds;
    }
    if (m->tail)
        m->tail->next = f;
    else
        m->families = f;
    m->tail = f;
    return f;
}

void herd_metric_family_alias(struct herd_metric_family *fam, const char *alias_name, const char *const_label,
                              const char *const_value) {
    HERD_ASSERT(fam->n_aliases < MAX_ALIASES && valid_name(alias_name, true) && counter_name_ok(fam->type, alias_name));
    HERD_ASSERT(!const_label || valid_name(const_label, false));
    struct alias *a = &fam->aliases[fam->n_aliases++];
    a->name = dup_or_die(alias_name);
    a->label = const_label ? dup_or_die(const_label) : NULL;
    a->value = const_label ? dup_or_die(const_value) : NULL;
}

static bool same_labels(const struct herd_metric *x, size_t n, const char *const *names, const char *const *values) {
    if (x->n_labels != n) return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(x->names[i], names[i]) != 0 || strcmp(x->values[i], values[i]) != 0) return false;
    return true;
}

struct herd_metric *herd_metric_series(struct herd_metric_family *fam, size_t n, const char *const *names,
                                       const char *const *values) {
    HERD_ASSERT(n <= MAX_LABELS);
    for (struct herd_metric *x = fam->series; x; x = x->next)
        if (same_labels(x, n, names, values)) return x;
    struct herd_metric *x = calloc_or_die(1, sizeof *x);
    x->fam = fam;
    x->n_labels = n;
    for (size_t i = 0; i < n; i++) {
        /* "le" is the histogram's own label */
        HERD_ASSERT(valid_name(names[i], false) && strcmp(names[i], "le") != 0);
        x->names[i] = dup_or_die(names[i]);
        x->values[i] = dup_or_die(values[i]);
    }
    if (fam->type == HERD_METRIC_HISTOGRAM) x->buckets = calloc_or_die(fam->n_bounds + 1, sizeof *x->buckets);
    if (fam->series_tail)
        fam->series_tail->next = x;
    else
        fam->series = x;
    fam->series_tail = x;
    return x;
}

void herd_metric_series_remove(struct herd_metric *x) {
    if (!x) return;
    struct herd_metric_family *fam = x->fam;
    struct herd_metric *prev = NULL;
    for (struct herd_metric *y = fam->series; y && y != x; y = y->next) prev = y;
    if (prev)
        prev->next = x->next;
    else if (fam->series == x)
        fam->series = x->next;
    else
        return; /* not in its family: removed before */
    if (fam->series_tail == x) fam->series_tail = prev;
    free_series(x);
}

static struct herd_metric *single(struct herd_metrics *m, const char *name, const char *help,
                                  enum herd_metric_type type, const double *bounds, size_t n_bounds) {
    return herd_metric_series(herd_metrics_family(m, name, help, type, bounds, n_bounds), 0, NULL, NULL);
}

struct herd_metric *herd_metrics_counter(struct herd_metrics *m, const char *name, const char *help) {
    return single(m, name, help, HERD_METRIC_COUNTER, NULL, 0);
}

struct herd_metric *herd_metrics_gauge(struct herd_metrics *m, const char *name, const char *help) {
    return single(m, name, help, HERD_METRIC_GAUGE, NULL, 0);
}

struct herd_metric *herd_metrics_histogram(struct herd_metrics *m, const char *name, const char *help,
                                           const double *bounds, size_t n_bounds) {
    return single(m, name, help, HERD_METRIC_HISTOGRAM, bounds, n_bounds);
}

/* ------------------------------------------------------------ updates */

static double from_bits(uint64_t b) {
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static uint64_t to_bits(double d) {
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

static void atomic_add_double(_Atomic uint64_t *a, double v) {
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, to_bits(from_bits(old) + v), memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
}

void herd_metric_add(struct herd_metric *x, double v) {
    if (!x) return;
    HERD_ASSERT(x->fam->type != HERD_METRIC_HISTOGRAM);
    atomic_add_double(&x->bits, v);
}

void herd_metric_set(struct herd_metric *x, double v) {
    if (!x) return;
    HERD_ASSERT(x->fam->type != HERD_METRIC_HISTOGRAM);
    atomic_store_explicit(&x->bits, to_bits(v), memory_order_relaxed);
}

void herd_metric_observe(struct herd_metric *x, double v) {
    if (!x) return;
    HERD_ASSERT(x->fam->type == HERD_METRIC_HISTOGRAM);
    if (isnan(v)) return;
    const struct herd_metric_family *f = x->fam;
    /* first bucket whose bound is >= v (le is inclusive) */
    size_t lo = 0, hi = f->n_bounds;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v <= f->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&x->buckets[lo], 1, memory_order_relaxed);
    atomic_add_double(&x->bits, v);
}

double herd_metric_value(const struct herd_metric *x) {
    return x ? from_bits(atomic_load_explicit(&x->bits, memory_order_relaxed)) : 0.0;
}

uint64_t herd_metric_count(const struct herd_metric *x) {
    if (!x || !x->buckets) return 0;
    uint64_t n = 0;
    for (size_t i = 0; i <= x->fam->n_bounds; i++) n += atomic_load_explicit(&x->buckets[i], memory_order_relaxed);
    return n;
}

void herd_metrics_on_collect(struct herd_metrics *m, void (*fn)(void *arg), void *arg, bool owned) {
    HERD_ASSERT(m->n_collects < MAX_COLLECTS);
    m->collects[m->n_collects++] = (struct collect){fn, arg, owned};
}

void herd_metrics_exponential_bounds(double *out, size_t n, double start, double factor) {
    for (size_t i = 0; i < n; i++) out[i] = i ? out[i - 1] * factor : start;
}

/* ------------------------------------------------------------ exposition */

enum herd_metrics_format herd_metrics_negotiate(const char *accept) {
    return accept && strstr(accept, "application/openmetrics-text") ? HERD_METRICS_OPENMETRICS
                                                                    : HERD_METRICS_PROMETHEUS;
}

const char *herd_metrics_content_type(enum herd_metrics_format f) {
    return f == HERD_METRICS_OPENMETRICS ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                                         : "text/plain; version=0.0.4; charset=utf-8";
}

struct out {
    struct herd_buf *b;
    bool ok;
};

static void put(struct out *o, const char *s, size_t n) { o->ok = o->ok && herd_buf_append(o->b, s, n); }
static void puts_(struct out *o, const char *s) { put(o, s, strlen(s)); }

/* Escapes \ and newline, and " too in label values and OpenMetrics help. */
static void put_escaped(struct out *o, const char *s, bool quote) {
    for (; *s; s++) {
        if (*s == '\\')
            puts_(o, "\\\\");
        else if (*s == '\n')
            puts_(o, "\\n");
        else if (*s == '"' && quote)
            puts_(o, "\\\"");
        else
            put(o, s, 1);
    }
}

/* The shortest decimal that reads back as v; +Inf, -Inf, NaN as Prometheus
 * spells them. */
static void format_number(char *s, size_t n, double v) {
    if (isnan(v))
        snprintf(s, n, "NaN");
    else if (isinf(v))
        snprintf(s, n, v > 0 ? "+Inf" : "-Inf");
    else
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(s, n, "%.*g", prec, v);
            if (strtod(s, NULL) == v) break;
        }
}

static void put_number(struct out *o, double v) {
    char s[40];
    format_number(s, sizeof s, v);
    puts_(o, s);
}

static void put_uint(struct out *o, uint64_t v) {
    char s[24];
    int n = snprintf(s, sizeof s, "%llu", (unsigned long long)v);
    put(o, s, (size_t)n);
}

/* {const="v",a="b",...,le="x"}; nothing when there are no labels */
static void put_labels(struct out *o, const struct alias *a, const struct herd_metric *x, const char *le) {
    bool any = (a && a->label) || x->n_labels || le;
    if (!any) return;
    puts_(o, "{");
    const char *sep = "";
    if (a && a->label) {
        puts_(o, a->label);
        puts_(o, "=\"");
        put_escaped(o, a->value, true);
        puts_(o, "\"");
        sep = ",";
    }
    for (size_t i = 0; i < x->n_labels; i++) {
        puts_(o, sep);
        puts_(o, x->names[i]);
        puts_(o, "=\"");
        put_escaped(o, x->values[i], true);
        puts_(o, "\"");
        sep = ",";
    }
    if (le) {
        puts_(o, sep);
        puts_(o, "le=\"");
        puts_(o, le);
        puts_(o, "\"");
    }
    puts_(o, "}");
}

static void put_sample(struct out *o, const char *name, const char *suffix, const struct alias *a,
                       const struct herd_metric *x, const char *le) {
    puts_(o, name);
    puts_(o, suffix);
    put_labels(o, a, x, le);
    puts_(o, " ");
}

static const char *type_name(enum herd_metric_type t) {
    return t == HERD_METRIC_COUNTER ? "counter" : t == HERD_METRIC_GAUGE ? "gauge" : "histogram";
}

static void render_family(struct out *o, const struct herd_metric_family *f, const char *name, const struct alias *a,
                          bool om) {
    /* OpenMetrics names a counter family without its _total */
    size_t family_len = strlen(name);
    if (om && f->type == HERD_METRIC_COUNTER) family_len -= 6;
    puts_(o, "# HELP ");
    put(o, name, family_len);
    puts_(o, " ");
    put_escaped(o, f->help, om);
    puts_(o, "\n# TYPE ");
    put(o, name, family_len);
    puts_(o, " ");
    puts_(o, type_name(f->type));
    puts_(o, "\n");
    for (const struct herd_metric *x = f->series; x; x = x->next) {
        if (f->type != HERD_METRIC_HISTOGRAM) {
            put_sample(o, name, "", a, x, NULL);
            put_number(o, herd_metric_value(x));
            puts_(o, "\n");
            continue;
        }
        /* read the counts once, so the buckets, +Inf and _count agree */
        uint64_t cum = 0;
        for (size_t i = 0; i <= f->n_bounds; i++) {
            cum += atomic_load_explicit(&x->buckets[i], memory_order_relaxed);
            char le[40];
            if (i < f->n_bounds)
                format_number(le, sizeof le, f->bounds[i]);
            else
                snprintf(le, sizeof le, "+Inf");
            put_sample(o, name, "_bucket", a, x, le);
            put_uint(o, cum);
            puts_(o, "\n");
        }
        put_sample(o, name, "_sum", a, x, NULL);
        put_number(o, herd_metric_value(x));
        puts_(o, "\n");
        put_sample(o, name, "_count", a, x, NULL);
        put_uint(o, cum);
        puts_(o, "\n");
    }
}

bool herd_metrics_render(struct herd_metrics *m, enum herd_metrics_format f, bool with_aliases, struct herd_buf *out) {
    for (size_t i = 0; i < m->n_collects; i++) m->collects[i].fn(m->collects[i].arg);
    struct out o = {out, true};
    const bool om = f == HERD_METRICS_OPENMETRICS;
    for (const struct herd_metric_family *fam = m->families; fam; fam = fam->next) {
        if (!fam->series) continue;
        render_family(&o, fam, fam->name, NULL, om);
        if (with_aliases)
            for (size_t i = 0; i < fam->n_aliases; i++)
                render_family(&o, fam, fam->aliases[i].name, &fam->aliases[i], om);
    }
    if (om) puts_(&o, "# EOF\n");
    return o.ok;
}
