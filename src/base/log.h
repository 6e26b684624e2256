/* Log lines of the long-running commands (herd serve): a level, the
 * component, the request id when the line is about a request, a message and
 * key=value fields; as text for people or as one JSON object per line for
 * log pipelines (--log-format json). Lines go to stderr whole (one write
 * each), so lines from threads never interleave. */
#ifndef HERD_BASE_LOG_H
#define HERD_BASE_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum herd_log_level { HERD_LOG_DEBUG, HERD_LOG_INFO, HERD_LOG_WARN, HERD_LOG_ERROR };
enum herd_log_format { HERD_LOG_TEXT, HERD_LOG_JSON };

/* Process-wide; call before the threads that log start. Default: text, info. */
void herd_log_configure(enum herd_log_format f, enum herd_log_level min);
bool herd_log_parse_level(const char *s, enum herd_log_level *out);   /* debug|info|warn|error */
bool herd_log_parse_format(const char *s, enum herd_log_format *out); /* text|json */
bool herd_log_enabled(enum herd_log_level l);

enum herd_log_field_type { HERD_LOG_STR, HERD_LOG_INT, HERD_LOG_NUM };
struct herd_log_field {
    const char *key;
    enum herd_log_field_type type;
    const char *s;
    long long i;
    double d;
};
#define HERD_LOG_S(k, v) ((struct herd_log_field){.key = (k), .type = HERD_LOG_STR, .s = (v)})
#define HERD_LOG_I(k, v) ((struct herd_log_field){.key = (k), .type = HERD_LOG_INT, .i = (long long)(v)})
#define HERD_LOG_N(k, v) ((struct herd_log_field){.key = (k), .type = HERD_LOG_NUM, .d = (double)(v)})

/* One line. request_id may be NULL; fields may be NULL when n is 0.
 * Text: "2026-11-24T05:00:00.123Z INFO serve [req-1] message key=value ..."
 * JSON: {"ts":..., "level":"info", "component":"serve", "request_id":...,
 *        "msg":..., key: value, ...} */
void herd_log(enum herd_log_level l, const char *component, const char *request_id, const struct herd_log_field *fields,
              size_t n, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

#endif
