/* A Jinja2-compatible template engine for chat templates: the subset real
 * Hugging Face chat templates use (for/if/set/macro/call/filter blocks,
 * namespaces, loop controls, the usual filters, tests and string methods),
 * with the environment Hugging Face sets up: trim_blocks and lstrip_blocks
 * on, no autoescape, a tojson that keeps non-ASCII text and key order,
 * raise_exception() and strftime_now().
 *
 * Templates come from files users download, so rendering has no file or
 * network access and is bounded: output bytes, memory, steps (loop
 * iterations, macro calls, and work on strings and lists), and nesting
 * depth. Every parse or render error names the template line and column. */
#ifndef HERD_JINJA_JINJA_H
#define HERD_JINJA_JINJA_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "herd/status.h"

struct herd_jinja_template;

struct herd_jinja_limits {
    size_t max_output_bytes; /* the rendered text, and every captured block */
    size_t max_memory_bytes; /* all values made while rendering */
    uint64_t max_steps;      /* loop iterations plus macro calls, plus one per 256 bytes of string
                              * scanned or written, or per 16 expressions, list or dict items */
    uint32_t max_depth;      /* nested macro calls */
};

/* 4 MiB of output (a 128k-token prompt is ~0.5 MiB), 64 MiB of values,
 * a million steps (each at most a few microseconds), 64 nested calls. */
void herd_jinja_default_limits(struct herd_jinja_limits *lim);

/* Parses len bytes of template source. The template is independent of src
 * afterwards; free it with herd_jinja_destroy. On error err says
 * "line L, column C: ...". */
enum herd_status herd_jinja_parse(const char *src, size_t len, struct herd_jinja_template **out,
                                  struct herd_error *err);
void herd_jinja_destroy(struct herd_jinja_template *t);

/* Renders t with the members of the JSON object vars as its variables
 * (JSON null becomes None, objects keep their key order). now is the time
 * strftime_now() formats (UTC). lim NULL means the defaults. On success
 * *out is a NUL-terminated malloc'd string of *out_len bytes the caller
 * frees. On error (HERD_E_INVALID for what the template raised or did
 * wrong, HERD_E_NOMEM for a limit) err holds "line L, column C: message"
 * with raise_exception's text or Jinja2's message. A template is read-only
 * here: several threads may render one template at once. */
enum herd_status herd_jinja_render(const struct herd_jinja_template *t, const json_t *vars, time_t now,
                                   const struct herd_jinja_limits *lim, char **out, size_t *out_len,
                                   struct herd_error *err);

#endif
