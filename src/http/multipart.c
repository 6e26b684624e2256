/* multipart/form-data (multipart.h).
 *
 * One pass over the body: the opening delimiter, then for each part its
 * header lines (a memchr each, bounded by the 8 KiB cap) and one memmem for
 * the next delimiter, starting where the headers ended. memmem is linear in
 * glibc and musl (two-way), so any body costs O(len), whatever its bytes: a
 * 200 MB upload parses in 8-40 ms, the slow end being data made of near
 * misses of the delimiter. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http/multipart.h"

/* RFC 2046: a boundary has 1..70 characters. */
#define MAX_BOUNDARY     70
/* An SDK's part headers are about 150 bytes; 8 KiB (a common per-line
 * limit of HTTP servers) leaves room and bounds the scan for the blank
 * line when there is none. */
#define MAX_PART_HEADERS ((size_t)8 << 10)

static bool is_space(char c) { return c == ' ' || c == '\t'; }

static bool name_is(const char *name, size_t len, const char *want) {
    return len == strlen(want) && strncasecmp(name, want, len) == 0;
}

static bool fail(char *err, size_t err_size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t err_size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return false;
}

/* ------------------------------------------------- header parameters */

/* One `name[=value]` parameter of a header value (RFC 2045's `; name=value`
 * list, as Content-Type and Content-Disposition use it). */
struct param {
    const char *name;
    size_t name_len;
    const char *value; /* quotes removed, backslash escapes kept; NULL without '=' */
    size_t value_len;
};

enum param_rc { PARAM_END, PARAM_OK, PARAM_UNTERMINATED };

/* The parameter at *p (at a ';' or after one) in [*p, end); *p moves to the
 * ';' after it. PARAM_UNTERMINATED for a quoted value without its closing
 * quote: nothing after it can be told apart from the value. */
static enum param_rc next_param(const char **p, const char *end, struct param *out) {
    const char *s = *p;
    while (s < end && (is_space(*s) || *s == ';')) s++;
    if (s == end) return PARAM_END;
    out->name = s;
    while (s < end && *s != '=' && *s != ';' && !is_space(*s)) s++;
    out->name_len = (size_t)(s - out->name);
    out->value = NULL;
    out->value_len = 0;
    while (s < end && is_space(*s)) s++;
    if (s < end && *s == '=') {
        s++;
        while (s < end && is_space(*s)) s++;
        const char *v = s;
        if (s < end && *s == '"') {
            v = ++s;
            while (s < end && *s != '"') s += (*s == '\\' && end - s > 1) ? 2 : 1;
            if (s >= end) return PARAM_UNTERMINATED;
            out->value_len = (size_t)(s - v);
            s++; /* the closing quote */
        } else {
            while (s < end && *s != ';' && !is_space(*s)) s++;
            out->value_len = (size_t)(s - v);
        }
        out->value = v;
    }
    while (s < end && *s != ';') s++; /* anything after the value */
    *p = s;
    return PARAM_OK;
}

/* RFC 2046's bchars are a subset of printable ASCII; any printable byte
 * but the two that quoting gives a meaning to is taken, as other servers
 * do, so that an odd client is not refused for a '%' or a '!'. */
static bool boundary_ok(const char *b, size_t len) {
    if (len < 1 || len > MAX_BOUNDARY || b[len - 1] == ' ') return false;
    for (size_t i = 0; i < len; i++)
        if (b[i] < 0x20 || b[i] > 0x7e || b[i] == '"' || b[i] == '\\') return false;
    return true;
}

bool herd_multipart_boundary(const char *ct, const char **boundary, size_t *len) {
    const char *end = ct + strlen(ct);
    while (ct < end && is_space(*ct)) ct++;
    static const char media[] = "multipart/form-data";
    const size_t media_len = sizeof media - 1;
    if ((size_t)(end - ct) < media_len || strncasecmp(ct, media, media_len) != 0) return false;
    const char *p = ct + media_len;
    while (p < end && is_space(*p)) p++;
    if (p < end && *p != ';') return false; /* multipart/form-dataX */
    struct param pa;
    while (next_param(&p, end, &pa) == PARAM_OK) {
        if (!name_is(pa.name, pa.name_len, "boundary")) continue;
        if (!pa.value || !boundary_ok(pa.value, pa.value_len)) return false;
        *boundary = pa.value;
        *len = pa.value_len;
        return true;
    }
    return false;
}

/* ------------------------------------------------------------- parts */

/* The headers of part number part_no, [p, end) without the blank line:
 * Content-Disposition (required: form-data with a name) and Content-Type. */
static bool part_headers(const char *p, const char *end, const char *body, size_t part_no,
                         struct herd_multipart_part *part, char *err, size_t err_size) {
    bool disposition = false;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *e = le > p && le[-1] == '\r' ? le - 1 : le;
        const char *colon = memchr(p, ':', (size_t)(e - p));
        if (!colon)
            return fail(err, err_size, "part %zu (byte %zu): a header line without a colon", part_no,
                        (size_t)(p - body));
        const char *v = colon + 1;
        while (v < e && is_space(*v)) v++;
        const char *ve = e;
        while (ve > v && is_space(ve[-1])) ve--;
        if (name_is(p, (size_t)(colon - p), "Content-Disposition")) {
            const char *q = v;
            while (q < ve && *q != ';' && !is_space(*q)) q++;
            if (!name_is(v, (size_t)(q - v), "form-data"))
                return fail(err, err_size, "part %zu: its Content-Disposition is not form-data", part_no);
            struct param pa;
            enum param_rc rc;
            while ((rc = next_param(&q, ve, &pa)) == PARAM_OK) {
                if (!pa.value) continue;
                if (name_is(pa.name, pa.name_len, "name")) {
                    part->name = pa.value;
                    part->name_len = pa.value_len;
                } else if (name_is(pa.name, pa.name_len, "filename")) {
                    part->filename = pa.value;
                    part->filename_len = pa.value_len;
                }
            }
            if (rc == PARAM_UNTERMINATED)
                return fail(err, err_size, "part %zu: an unterminated quoted string in Content-Disposition", part_no);
            disposition = true;
        } else if (name_is(p, (size_t)(colon - p), "Content-Type")) {
            part->content_type = v;
            part->content_type_len = (size_t)(ve - v);
        }
        p = le + 1;
    }
    if (!disposition || !part->name)
        return fail(err, err_size, "part %zu: no Content-Disposition: form-data; name=", part_no);
    return true;
}

bool herd_multipart_parse(const char *body, size_t len, const char *boundary, size_t boundary_len,
                          struct herd_multipart_part *parts, size_t max_parts, size_t *n, char *err, size_t err_size) {
    *n = 0;
    if (boundary_len < 1 || boundary_len > MAX_BOUNDARY)
        return fail(err, err_size, "the boundary has %zu characters, not 1..70", boundary_len);
    /* "\r\n--B": the delimiter with the line end that belongs to it */
    char delim[4 + MAX_BOUNDARY];
    memcpy(delim, "\r\n--", 4);
    memcpy(delim + 4, boundary, boundary_len);
    const char *dash = delim + 2; /* "--B" */
    const size_t dash_len = boundary_len + 2;
    const char *end = body + len;

    /* the opening delimiter: at the start, or at the start of a later line */
    const char *p;
    if (len >= dash_len && memcmp(body, dash, dash_len) == 0) {
        p = body + dash_len;
    } else {
        const char *d = memmem(body, len, delim + 1, dash_len + 1);
        if (!d) return fail(err, err_size, "no opening boundary \"--%.*s\"", (int)boundary_len, boundary);
        p = d + 1 + dash_len;
    }

    const char *eol = NULL; /* the body's line end, "\r\n" or "\n": set by the opening line */
    size_t eol_len = 0, count = 0;
    for (;;) {
        /* after a delimiter: "--" closes; else spaces (RFC 2046's transport
         * padding) and the line end */
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') {
            if (!count) return fail(err, err_size, "no parts before the closing boundary");
            *n = count;
            return true;
        }
        const char *q = p;
        while (q < end && is_space(*q)) q++;
        const bool cr = q < end && *q == '\r';
        if (cr) q++;
        if (q == end) return fail(err, err_size, "no closing boundary \"--%.*s--\"", (int)boundary_len, boundary);
        if (*q != '\n') return fail(err, err_size, "junk after a boundary (byte %zu)", (size_t)(q - body));
        if (!eol) {
            eol = cr ? "\r\n" : "\n";
            eol_len = cr ? 2 : 1;
        }
        p = q + 1;
        if (p == end) /* a body cut after a delimiter line */
            return fail(err, err_size, "no closing boundary \"--%.*s--\"", (int)boundary_len, boundary);

        /* the headers end at the first empty line, within the cap */
        const char *h = p, *blank = NULL;
        const char *limit = (size_t)(end - h) > MAX_PART_HEADERS + 2 ? h + MAX_PART_HEADERS + 2 : end;
        while (p < limit) {
            const char *le = memchr(p, '\n', (size_t)(limit - p));
            if (!le) break;
            if (le == p || (le == p + 1 && *p == '\r')) {
                blank = p;
                p = le + 1;
                break;
            }
            p = le + 1;
            if ((size_t)(p - h) > MAX_PART_HEADERS) break;
        }
        if (!blank) {
            if (limit < end || (size_t)(p - h) > MAX_PART_HEADERS)
                return fail(err, err_size, "part %zu (byte %zu): headers over 8 KiB", count + 1, (size_t)(h - body));
            return fail(err, err_size, "part %zu (byte %zu): headers not ended by a blank line", count + 1,
                        (size_t)(h - body));
        }
        if (count == max_parts) return fail(err, err_size, "too many parts (at most %zu)", max_parts);
        struct herd_multipart_part *part = &parts[count];
        memset(part, 0, sizeof *part);
        if (!part_headers(h, blank, body, count + 1, part, err, err_size)) return false;

        /* the data runs to the next delimiter; for an empty part the blank
         * line's own line end may double as the delimiter's */
        const char *d_eol = eol[0] == '\r' ? delim : delim + 1;
        const size_t d_len = eol_len + dash_len;
        const char *from = (size_t)(p - blank) >= eol_len && memcmp(p - eol_len, eol, eol_len) == 0 ? p - eol_len : p;
        const char *d = memmem(from, (size_t)(end - from), d_eol, d_len);
        if (!d) return fail(err, err_size, "no closing boundary \"--%.*s--\"", (int)boundary_len, boundary);
        part->data = p;
        part->len = d > p ? (size_t)(d - p) : 0;
        count++;
        p = d + d_len;
    }
}

const struct herd_multipart_part *herd_multipart_find(const struct herd_multipart_part *parts, size_t n,
                                                      const char *name) {
    const size_t len = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (parts[i].name_len == len && memcmp(parts[i].name, name, len) == 0) return &parts[i];
    return NULL;
}
