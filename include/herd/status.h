/* Status codes and error reports shared by every herd module.
 *
 * A function that can fail because of its input (a file, a request, a flag)
 * returns an enum herd_status and, when given a struct herd_error, fills it
 * with a message the user can act on: which file, which offset, which field,
 * what was expected. Bugs are not reported this way: they abort through
 * HERD_ASSERT (src/base/assert.h). */
#ifndef HERD_STATUS_H
#define HERD_STATUS_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

enum herd_status {
    HERD_OK = 0,
    HERD_E_INVALID,     /* an argument or a value is out of its allowed range */
    HERD_E_IO,          /* open, read, write, mmap, rename, fsync failed */
    HERD_E_NOMEM,       /* an allocation failed, or would exceed its ceiling */
    HERD_E_FORMAT,      /* the bytes do not follow the format (bad magic, bad type, ...) */
    HERD_E_TRUNCATED,   /* the data ends before the format says it should */
    HERD_E_OVERFLOW,    /* a size computed from the input does not fit its integer type */
    HERD_E_DUPLICATE,   /* a key or a name occurs twice where it must be unique */
    HERD_E_UNSUPPORTED, /* well-formed, but a feature herd does not implement */
    HERD_E_NOT_FOUND,   /* a required key, tensor or file is missing */
    HERD_E_AGAIN,       /* a bounded resource (KV blocks, a queue) is full now; retry later */
    /* The service cannot take work at all: it is draining or stopped, or its
     * engine failed (another replica should get the request; HTTP 503). */
    HERD_E_UNAVAILABLE,
    HERD_E__COUNT
};

/* Room for one message; longer messages are cut, never overflowed. */
#define HERD_ERROR_MSG_BYTES 512

struct herd_error {
    enum herd_status code;
    char msg[HERD_ERROR_MSG_BYTES];
};

/* Short stable name of a status ("truncated", "format", ...), for logs and
 * tests. Never NULL, also for values outside the enum. */
const char *herd_status_name(enum herd_status code);

/* Records code and a printf-style message in err (which may be NULL) and
 * returns code, so callers can write `return herd_error_set(err, ...)`. */
enum herd_status herd_error_set(struct herd_error *err, enum herd_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Puts "prefix: " in front of the message already in err (for adding the
 * file name or the caller's context). Keeps the code. Returns err->code. */
enum herd_status herd_error_prefix(struct herd_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clears err to HERD_OK with an empty message. err may be NULL. */
void herd_error_clear(struct herd_error *err);

#ifdef __cplusplus
}
#endif

#endif
