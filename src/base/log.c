/* Text and JSON log lines (log.h). A line is built in a local buffer and
 * written with one write(2), so concurrent lines stay whole. */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum herd_log_format g_format = HERD_LOG_TEXT;
static enum herd_log_level g_min = HERD_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const level_upper[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void herd_log_configure(enum herd_log_format f, enum herd_log_level min) {
    g_format = f;
    g_min = min;
}

bool herd_log_parse_level(const char *s, enum herd_log_level *out) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum herd_log_level)i;
            return true;
        }
    if (strcmp(s, "warning") == 0) {
        *out = HERD_LOG_WARN;
        return true;
    }
    return false;
}

bool herd_log_parse_format(const char *s, enum herd_log_format *out) {
    if (strcmp(s, "text") == 0)
        *out = HERD_LOG_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = HERD_LOG_JSON;
    else
        return false;
    return true;
}

bool herd_log_enabled(enum herd_log_level l) { return l >= g_min; }

/* A line is at most this long; longer messages are cut (marked with ...). */
#define LINE_MAX_BYTES 8192

struct line {
    char buf[LINE_MAX_BYTES];
    size_t len;
    bool cut;
};

static void add(struct line *ln, const char *s, size_t n) {
    if (ln->len + n > sizeof ln->buf - 8) {
        n = sizeof ln->buf - 8 > ln->len ? sizeof ln->buf - 8 - ln->len : 0;
        ln->cut = true;
    }
    memcpy(ln->buf + ln->len, s, n);
    ln->len += n;
}

static void adds(struct line *ln, const char *s) { add(ln, s, strlen(s)); }

static void addf(struct line *ln, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void addf(struct line *ln, const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) add(ln, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string (quotes included): " \ and control bytes escaped; other
 * bytes as they are (the server only logs valid UTF-8 or ASCII). */
static void add_json_string(struct line *ln, const char *s) {
    adds(ln, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            add(ln, e, 2);
        } else if (c == '\n') {
            adds(ln, "\\n");
        } else if (c < 0x20 || c == 0x7f) {
            addf(ln, "\\u%04x", c);
        } else {
            add(ln, s, 1);
        }
    }
    adds(ln, "\"");
}

/* Text values: as they are, or quoted (JSON-style) when they hold a space,
 * a quote, = or a control byte, so a line splits unambiguously. */
static void add_text_value(struct line *ln, const char *s) {
    bool plain = *s != 0;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '"' || *p == '=' || *p == 0x7f) plain = false;
    if (plain)
        adds(ln, s);
    else
        add_json_string(ln, s);
}

static void add_number(struct line *ln, const struct herd_log_field *f) {
    if (f->type == HERD_LOG_INT)
        addf(ln, "%lld", f->i);
    else
        addf(ln, "%.3f", f->d);
}

/* {"ts":"...","level":"..." : what every JSON line starts with */
static void add_json_head(struct line *ln, const char *ts, enum herd_log_level l) {
    adds(ln, "{\"ts\":\"");
    adds(ln, ts);
    adds(ln, "\",\"level\":\"");
    adds(ln, level_names[l]);
    adds(ln, "\"");
}

void herd_log(enum herd_log_level l, const char *component, const char *request_id, const struct herd_log_field *fields,
              size_t n, const char *fmt, ...) {
    if (!herd_log_enabled(l)) return;
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[48];
    size_t tl = strftime(ts, sizeof ts - 8, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof ts - tl, ".%03uZ", (unsigned)(tv.tv_usec / 1000) % 1000u);
    static __thread struct line ln; /* 8 KiB: off the stack of small threads */
    ln.len = 0;
    ln.cut = false;
    if (g_format == HERD_LOG_JSON) {
        add_json_head(&ln, ts, l);
        adds(&ln, ",\"component\":");
        add_json_string(&ln, component);
        if (request_id) {
            adds(&ln, ",\"request_id\":");
            add_json_string(&ln, request_id);
        }
        adds(&ln, ",\"msg\":");
        add_json_string(&ln, msg);
        for (size_t i = 0; i < n; i++) {
            adds(&ln, ",");
            add_json_string(&ln, fields[i].key);
            adds(&ln, ":");
            if (fields[i].type == HERD_LOG_STR)
                add_json_string(&ln, fields[i].s ? fields[i].s : "");
            else
                add_number(&ln, &fields[i]);
        }
        /* a cut line must still be one JSON object: drop it to a stub */
        if (ln.cut) {
            ln.len = 0;
            ln.cut = false;
            add_json_head(&ln, ts, l);
            adds(&ln, ",\"msg\":\"(log line too long)\"");
        }
        adds(&ln, "}\n");
    } else {
        adds(&ln, ts);
        adds(&ln, " ");
        adds(&ln, level_upper[l]);
        adds(&ln, " ");
        adds(&ln, component);
        if (request_id) {
            adds(&ln, " [");
            adds(&ln, request_id);
            adds(&ln, "]");
        }
        adds(&ln, " ");
        adds(&ln, msg);
        for (size_t i = 0; i < n; i++) {
            adds(&ln, " ");
            adds(&ln, fields[i].key);
            adds(&ln, "=");
            if (fields[i].type == HERD_LOG_STR)
                add_text_value(&ln, fields[i].s ? fields[i].s : "");
            else
                add_number(&ln, &fields[i]);
        }
        if (ln.cut) memcpy(ln.buf + ln.len, "...", 3), ln.len += 3;
        adds(&ln, "\n");
    }
    /* stderr unbuffered: one write, retried if interrupted or partial */
    for (size_t off = 0; off < ln.len;) {
        ssize_t w = write(STDERR_FILENO, ln.buf + off, ln.len - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
}
