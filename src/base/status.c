/* Status names and the bounded, never-overflowing error message buffer. */
#include "herd/status.h"

#include <stdio.h>
#include <string.h>

const char *herd_status_name(enum herd_status code) {
    static const char *const names[HERD_E__COUNT] = {
        [HERD_OK] = "ok",
        [HERD_E_INVALID] = "invalid",
        [HERD_E_IO] = "io",
        [HERD_E_NOMEM] = "nomem",
        [HERD_E_FORMAT] = "format",
        [HERD_E_TRUNCATED] = "truncated",
        [HERD_E_OVERFLOW] = "overflow",
        [HERD_E_DUPLICATE] = "duplicate",
        [HERD_E_UNSUPPORTED] = "unsupported",
        [HERD_E_NOT_FOUND] = "not_found",
        [HERD_E_AGAIN] = "again",
        [HERD_E_UNAVAILABLE] = "unavailable",
    };
    if ((unsigned)code >= HERD_E__COUNT) return "unknown";
    return names[code];
}

enum herd_status herd_error_set(struct herd_error *err, enum herd_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

enum herd_status herd_error_prefix(struct herd_error *err, const char *fmt, ...) {
    if (!err) return HERD_E_INVALID;
    char prefix[HERD_ERROR_MSG_BYTES];
    char old[HERD_ERROR_MSG_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* Cutting a long message is intended: messages are bounded by design. */
    size_t n = strnlen(prefix, sizeof prefix - 1);
    memcpy(err->msg, prefix, n);
    size_t room = sizeof err->msg - n;
    if (room > 2) {
        memcpy(err->msg + n, ": ", 2);
        n += 2;
        size_t k = strnlen(old, sizeof err->msg - n - 1);
        memcpy(err->msg + n, old, k);
        n += k;
    }
    err->msg[n < sizeof err->msg ? n : sizeof err->msg - 1] = '\0';
    return err->code;
}

void herd_error_clear(struct herd_error *err) {
    if (!err) return;
    err->code = HERD_OK;
    err->msg[0] = '\0';
}
