/* multipart/form-data (multipart.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http/multipart.h"

#define MAX_PART_HEADERS ((size_t)8 << 10)

static bool is_space(char c) { return c == ' ' || c == '\t'; }

/* One `name=value` parameter of a header value, from *p (after a ';'):
 * the name and the value (quotes removed, escapes kept). false at the end. */
static bool next_param(const char **p, const char *end, const char **name, size_t *name_len, const char **value,
                       size_t *value_len) {
    const char *s = *p;
    while (s < end && (is_space(*s) || *s == ';')) s++;
    if (s >= end) return false;
    const char *n = s;
    while (s < end && *s != '=' && *s != ';' && !is_space(*s)) s++;
    *name = n;
    *name_len = (size_t)(s - n);
    while (s < end && is_space(*s)) s++;
    *value = s;
    *value_len = 0;
    if (s < end && *s == '=') {
        s++;
        while (s < end && is_space(*s)) s++;
        if (s < end && *s == '"') {
            const char *v = ++s;
            while (s < end && *s != '"') s += (*s == '\\' && s + 1 < end) ? 2 : 1;
            *value = v;
            *value_len = (size_t)((s < end ? s : end) - v);
            if (s < end) s++; /* the closing quote */
        } else {
            const char *v = s;
            while (s < end && *s != ';' && !is_space(*s)) s++;
            *value = v;
            *value_len = (size_t)(s - v);
        }
    }
    while (s < end && *s != ';') s++; /* anything after the value */
    *p = s;
    return true;
}

static bool name_is(const char *name, size_t len, const char *want) {
    return len == strlen(want) && strncasecmp(name, want, len) == 0;
}

bool herd_multipart_boundary(const char *ct, const char **boundary, size_t *len) {
    const char *end = ct + strlen(ct);
    while (ct < end && is_space(*ct)) ct++;
    static const char media[] = "multipart/form-data";
    if ((size_t)(end - ct) < sizeof media - 1 || strncasecmp(ct, media, sizeof media - 1) != 0) return false;
    const char *p = ct + sizeof media - 1;
    if (p < end && *p != ';' && !is_space(*p)) return false; /* multipart/form-dataX */
    const char *name, *value;
    size_t nlen, vlen;
    while (next_param(&p, end, &name, &nlen, &value, &vlen))
        if (name_is(name, nlen, "boundary")) {
            if (vlen < 1 || vlen > 70 || memchr(value, '\\', vlen)) return false;
            *boundary = value;
            *len = vlen;
            return true;
        }
    return false;
}

static bool fail(char *err, size_t err_size, const char *why) {
    snprintf(err, err_size, "%s", why);
    return false;
}

/* The end of the line starting at p (at its '\n'), or NULL. */
static const char *line_end(const char *p, const char *end) { return memchr(p, '\n', (size_t)(end - p)); }

/* A part's headers, [p, end) without the blank line. */
static bool part_headers(const char *p, const char *end, struct herd_multipart_part *part, char *err, size_t err_size) {
    bool disposition = false;
    while (p < end) {
        const char *nl = line_end(p, end);
        const char *le = nl ? nl : end;
        const char *e = le > p && le[-1] == '\r' ? le - 1 : le;
        const char *colon = memchr(p, ':', (size_t)(e - p));
        if (!colon) return fail(err, err_size, "a part header without a colon");
        const char *v = colon + 1;
        while (v < e && is_space(*v)) v++;
        const char *ve = e;
        while (ve > v && is_space(ve[-1])) ve--;
        if (name_is(p, (size_t)(colon - p), "Content-Disposition")) {
            const char *q = v;
            while (q < ve && *q != ';' && !is_space(*q)) q++;
            if (!name_is(v, (size_t)(q - v), "form-data"))
                return fail(err, err_size, "a part's Content-Disposition is not form-data");
            const char *name, *value;
            size_t nlen, vlen;
            while (next_param(&q, ve, &name, &nlen, &value, &vlen)) {
                if (name_is(name, nlen, "name")) {
                    part->name = value;
                    part->name_len = vlen;
                } else if (name_is(name, nlen, "filename")) {
                    part->filename = value;
                    part->filename_len = vlen;
                }
            }
            disposition = true;
        } else if (name_is(p, (size_t)(colon - p), "Content-Type")) {
            part->content_type = v;
            part->content_type_len = (size_t)(ve - v);
        }
        p = le + 1;
    }
    if (!disposition || !part->name) return fail(err, err_size, "a part without Content-Disposition: form-data; name=");
    return true;
}

bool herd_multipart_parse(const char *body, size_t len, const char *boundary, size_t boundary_len,
                          struct herd_multipart_part *parts, size_t max_parts, size_t *n, char *err, size_t err_size) {
    *n = 0;
    /* "\n--BOUNDARY": a delimiter is always at a line start */
    char delim[80];
    if (boundary_len < 1 || boundary_len > 70) return fail(err, err_size, "the boundary is not 1..70 characters");
    delim[0] = '\n';
    delim[1] = delim[2] = '-';
    memcpy(delim + 3, boundary, boundary_len);
    const size_t dlen = boundary_len + 3;
    const char *end = body + len;
    const char *p;
    if (len >= dlen - 1 && memcmp(body, delim + 1, dlen - 1) == 0) {
        p = body + dlen - 1;
    } else {
        const char *d = memmem(body, len, delim, dlen);
        if (!d) return fail(err, err_size, "no opening boundary");
        p = d + dlen;
    }
    for (;;) {
        /* after a delimiter: "--" closes, else the rest of its line */
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') return *n ? true : fail(err, err_size, "no parts");
        const char *nl = line_end(p, end);
        if (!nl) return fail(err, err_size, "the body ends after a boundary");
        for (const char *q = p; q < nl; q++)
            if (!is_space(*q) && !(*q == '\r' && q + 1 == nl)) return fail(err, err_size, "junk after a boundary");
        p = nl + 1;
        /* the headers end at the first empty line */
        const char *h = p, *hend = NULL;
        while (p < end) {
            const char *le = line_end(p, end);
            if (!le) break;
            if (le == p || (le == p + 1 && *p == '\r')) {
                hend = p;
                p = le + 1;
                break;
            }
            p = le + 1;
            if ((size_t)(p - h) > MAX_PART_HEADERS) return fail(err, err_size, "a part's headers exceed 8 KiB");
        }
        if (!hend) return fail(err, err_size, "a part's headers do not end with a blank line");
        if (*n == max_parts) return fail(err, err_size, "too many parts");
        struct herd_multipart_part *part = &parts[*n];
        memset(part, 0, sizeof *part);
        if (!part_headers(h, hend, part, err, err_size)) return false;
        /* the data runs to the next delimiter; the line end before it is framing */
        const char *d = memmem(p - 1, (size_t)(end - (p - 1)), delim, dlen);
        if (!d) return fail(err, err_size, "no closing boundary");
        const char *data_end = d >= p ? d : p; /* an empty part: its delimiter follows the blank line */
        if (data_end > p && data_end[-1] == '\r') data_end--;
        part->data = p;
        part->len = (size_t)(data_end - p);
        (*n)++;
        p = d + dlen;
    }
}

const struct herd_multipart_part *herd_multipart_find(const struct herd_multipart_part *parts, size_t n,
                                                      const char *name) {
    const size_t len = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (parts[i].name_len == len && memcmp(parts[i].name, name, len) == 0) return &parts[i];
    return NULL;
}
