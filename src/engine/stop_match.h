/* Stop strings over streamed text: text goes out as soon as it cannot be
 * the start of a stop string; a stop string matched across token
 * boundaries ends the output just before it and is never emitted. */
#ifndef HERD_ENGINE_STOP_MATCH_H
#define HERD_ENGINE_STOP_MATCH_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"

struct herd_stop_match {
    const char *const *stops; /* borrowed, NUL-terminated, non-empty */
    size_t n_stops;
    struct herd_buf held; /* text that may be the start of a stop string */
};

enum herd_stop_result { HERD_STOP_MORE, HERD_STOP_MATCHED, HERD_STOP_NOMEM };

/* stops must outlive m; longest stop string at most max_stop_bytes. */
void herd_stop_match_init(struct herd_stop_match *m, const char *const *stops, size_t n_stops);
void herd_stop_match_cleanup(struct herd_stop_match *m);

/* Adds len bytes of text (complete UTF-8) and appends to out what can be
 * emitted now. HERD_STOP_MATCHED: out ends just before the stop string and
 * the stream is over. */
enum herd_stop_result herd_stop_match_push(struct herd_stop_match *m, const char *text, size_t len,
                                           struct herd_buf *out);

/* The stream ended without a stop: appends what was held back. */
bool herd_stop_match_flush(struct herd_stop_match *m, struct herd_buf *out);

#endif
