/* Stop-string matching with hold-back (stop_match.h). The held text is
 * always shorter than the longest stop string, so each push scans at most
 * (held + new text) x stops bytes: nothing grows with the output length. */
#include <string.h>

#include "engine/stop_match.h"

/* Ceiling of the held text: stop strings are limited far below this by
 * the server (OpenAI allows 4 of them). */
#define HELD_MAX_BYTES ((size_t)1 << 16)

void herd_stop_match_init(struct herd_stop_match *m, const char *const *stops, size_t n_stops) {
    m->stops = stops;
    m->n_stops = n_stops;
    herd_buf_init(&m->held, HELD_MAX_BYTES);
}

void herd_stop_match_cleanup(struct herd_stop_match *m) { herd_buf_cleanup(&m->held); }

/* Length of the longest suffix of s that is a proper prefix of a stop. */
static size_t held_suffix(const struct herd_stop_match *m, const char *s, size_t n) {
    size_t best = 0;
    for (size_t k = 0; k < m->n_stops; k++) {
        size_t sl = strlen(m->stops[k]);
        size_t max = sl - 1 < n ? sl - 1 : n;
        for (size_t len = max; len > best; len--)
            if (memcmp(s + n - len, m->stops[k], len) == 0) {
                best = len;
                break;
            }
    }
    return best;
}

enum herd_stop_result herd_stop_match_push(struct herd_stop_match *m, const char *text, size_t len,
                                           struct herd_buf *out) {
    if (!herd_buf_append(&m->held, text, len)) return HERD_STOP_NOMEM;
    const char *s = (const char *)m->held.data;
    size_t n = m->held.len;
    /* the earliest stop occurrence wins */
    size_t at = n;
    for (size_t k = 0; k < m->n_stops; k++) {
        const char *hit = memmem(s, n, m->stops[k], strlen(m->stops[k]));
        if (hit && (size_t)(hit - s) < at) at = (size_t)(hit - s);
    }
    if (at < n) {
        bool ok = herd_buf_append(out, s, at);
        m->held.len = 0;
        return ok ? HERD_STOP_MATCHED : HERD_STOP_NOMEM;
    }
    size_t keep = held_suffix(m, s, n);
    if (!herd_buf_append(out, s, n - keep)) return HERD_STOP_NOMEM;
    if (keep) memmove(m->held.data, s + n - keep, keep); /* held.data is NULL before any text */
    m->held.len = keep;
    return HERD_STOP_MORE;
}

bool herd_stop_match_flush(struct herd_stop_match *m, struct herd_buf *out) {
    bool ok = herd_buf_append(out, m->held.data, m->held.len);
    m->held.len = 0;
    return ok;
}
