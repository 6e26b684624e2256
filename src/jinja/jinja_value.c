/* Values of the Jinja engine and what Python does with them: str() and
 * repr(), json.dumps, truth, equality and ordering, iteration, attribute
 * and item access (Jinja's environment.getattr / getitem rules), and the
 * arena and error exit everything uses. */
#include <math.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "base/utf8.h"
#include "jinja/jinja_internal.h"

/* --------------------------------------------------------------- arena */

struct jj_chunk {
    struct jj_chunk *next;
    size_t size, used;
    max_align_t data[];
};

/* 64 KiB chunks: a chat template render makes a few hundred small values,
 * so one or two chunks usually do. */
#define JJ_CHUNK_BYTES ((size_t)64 << 10)

void *jj_alloc(struct jj_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    struct jj_chunk *c = a->chunks;
    if (!c || c->size - c->used < n) {
        size_t size = n > JJ_CHUNK_BYTES ? n : JJ_CHUNK_BYTES;
        if (a->used_bytes + size > a->max_bytes) {
            a->fail->code = HERD_E_NOMEM;
            herd_error_set(a->fail->err, HERD_E_NOMEM, "template rendering needs more than %zu MiB of memory",
                           a->max_bytes >> 20);
            longjmp(a->fail->jump, 1);
        }
        c = malloc(sizeof *c + size);
        if (!c) {
            a->fail->code = HERD_E_NOMEM;
            herd_error_set(a->fail->err, HERD_E_NOMEM, "out of memory rendering a template");
            longjmp(a->fail->jump, 1);
        }
        c->next = a->chunks;
        c->size = size;
        c->used = 0;
        a->chunks = c;
        a->used_bytes += size;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

char *jj_strdup(struct jj_arena *a, const char *s, size_t n) {
    char *p = jj_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void jj_arena_free(struct jj_arena *a) {
    for (struct jj_chunk *c = a->chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->chunks = NULL;
    a->used_bytes = 0;
}

_Noreturn void jj_fail_at(struct jj_fail *f, enum herd_status code, uint32_t line, uint32_t col, const char *fmt, ...) {
    char msg[HERD_ERROR_MSG_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    f->code = code;
    if (line)
        herd_error_set(f->err, code, "line %u, column %u: %s", line, col, msg);
    else
        herd_error_set(f->err, code, "%s", msg);
    longjmp(f->jump, 1);
}

_Noreturn void jj_error(struct jj_render *r, const struct jj_node *at, const char *fmt, ...) {
    char msg[HERD_ERROR_MSG_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!at) at = r->stmt;
    jj_fail_at(&r->fail, HERD_E_INVALID, at ? at->line : 0, at ? at->col : 0, "%s", msg);
}

/* ---------------------------------------------------------------- bufs */

static void buf_reserve(struct jj_render *r, struct jj_buf *b, size_t more) {
    if (b->cap - b->n >= more) return;
    if (b->n + more > r->lim.max_output_bytes) {
        r->fail.code = HERD_E_NOMEM;
        herd_error_set(r->fail.err, HERD_E_NOMEM, "template output exceeds %zu bytes", r->lim.max_output_bytes);
        longjmp(r->fail.jump, 1);
    }
    size_t cap = b->cap ? b->cap * 2 : 256;
    while (cap - b->n < more) cap *= 2;
    char *p = jj_alloc(&r->arena, cap);
    if (b->n) memcpy(p, b->p, b->n);
    b->p = p;
    b->cap = cap;
}

void jj_buf_put(struct jj_render *r, struct jj_buf *b, const char *s, size_t n) {
    if (!n) return;
    jj_charge(r, NULL, n); /* what writes a byte at a time (case, escapes, repr) costs per byte */
    buf_reserve(r, b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

void jj_buf_putc(struct jj_render *r, struct jj_buf *b, char c) { jj_buf_put(r, b, &c, 1); }

void jj_buf_printf(struct jj_render *r, struct jj_buf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    HERD_ASSERT(n >= 0 && (size_t)n < sizeof tmp);
    jj_buf_put(r, b, tmp, (size_t)n);
}

/* -------------------------------------------------------- constructors */

struct jj_value jj_undef(struct jj_render *r, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n >= sizeof msg ? sizeof msg - 1 : (size_t)n;
    return (struct jj_value){.kind = JJ_UNDEF, .u.undef_msg = jj_strdup(&r->arena, msg, len)};
}

struct jj_value jj_none(void) {
    return (struct jj_value){.kind = JJ_NONE};
}
struct jj_value jj_bool(bool b) {
    return (struct jj_value){.kind = JJ_BOOL, .u.b = b};
}
struct jj_value jj_int(int64_t i) {
    return (struct jj_value){.kind = JJ_INT, .u.i = i};
}
struct jj_value jj_float(double f) {
    return (struct jj_value){.kind = JJ_FLOAT, .u.f = f};
}
struct jj_value jj_str(const char *p, size_t n) {
    return (struct jj_value){.kind = JJ_STR, .u.s = {p, n}};
}

struct jj_value jj_str_copy(struct jj_render *r, const char *p, size_t n) {
    return jj_str(jj_strdup(&r->arena, p, n), n);
}

struct jj_value jj_str_buf(const struct jj_buf *b) {
    return jj_str(b->n ? b->p : "", b->n);
}

struct jj_value jj_list_new(struct jj_render *r, enum jj_kind kind, size_t n) {
    struct jj_list *l = jj_alloc(&r->arena, sizeof *l);
    l->n = n;
    l->items = jj_alloc(&r->arena, (n ? n : 1) * sizeof *l->items);
    for (size_t i = 0; i < n; i++) l->items[i] = jj_none();
    return (struct jj_value){.kind = kind, .u.list = l};
}

struct jj_value jj_dict_new(struct jj_render *r, enum jj_kind kind) {
    struct jj_dict *d = jj_alloc(&r->arena, sizeof *d);
    memset(d, 0, sizeof *d);
    (void)r;
    return (struct jj_value){.kind = kind, .u.dict = d};
}

const struct jj_value *jj_dict_get(struct jj_render *r, const struct jj_node *at, const struct jj_dict *d,
                                   struct jj_value key) {
    size_t i = 0, compared_bytes = 0;
    const struct jj_value *hit = NULL;
    for (; i < d->n && !hit; i++) {
        const struct jj_value *k = &d->keys[i];
        if (key.kind != JJ_STR) {
            if (jj_equal(r, at, k, &key)) hit = &d->vals[i];
        } else if (k->kind == JJ_STR && k->u.s.n == key.u.s.n) {
            compared_bytes += key.u.s.n;
            if (memcmp(k->u.s.p, key.u.s.p, key.u.s.n) == 0) hit = &d->vals[i];
        }
    }
    jj_charge_items(r, at, i);
    jj_charge(r, at, compared_bytes);
    return hit;
}

void jj_dict_set(struct jj_render *r, const struct jj_node *at, struct jj_dict *d, struct jj_value key,
                 struct jj_value val) {
    struct jj_value *have = (struct jj_value *)jj_dict_get(r, at, d, key);
    if (have) {
        *have = val;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        struct jj_value *k = jj_alloc(&r->arena, cap * sizeof *k), *v = jj_alloc(&r->arena, cap * sizeof *v);
        if (d->n) {
            memcpy(k, d->keys, d->n * sizeof *k);
            memcpy(v, d->vals, d->n * sizeof *v);
        }
        d->keys = k;
        d->vals = v;
        d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n++] = val;
}

struct jj_value jj_from_json(struct jj_render *r, const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_NULL: return jj_none();
    case JSON_TRUE: return jj_bool(true);
    case JSON_FALSE: return jj_bool(false);
    case JSON_INTEGER: return jj_int((int64_t)json_integer_value(j));
    case JSON_REAL: return jj_float(json_real_value(j));
    case JSON_STRING: return jj_str(json_string_value(j), json_string_length(j));
    case JSON_ARRAY: {
        struct jj_value l = jj_list_new(r, JJ_LIST, json_array_size(j));
        for (size_t i = 0; i < l.u.list->n; i++) l.u.list->items[i] = jj_from_json(r, json_array_get(j, i));
        return l;
    }
    case JSON_OBJECT: {
        struct jj_value d = jj_dict_new(r, JJ_DICT);
        const char *k;
        json_t *v;
        /* jansson iterates objects in insertion order, which is the
         * order Python's json keeps */
        json_object_foreach((json_t *)j, k, v) jj_dict_set(r, NULL, d.u.dict, jj_str(k, strlen(k)), jj_from_json(r, v));
        return d;
    }
    }
    return jj_none();
}

/* ------------------------------------------------------------ type names */

const char *jj_type_name(const struct jj_value *v) {
    switch (v->kind) {
    case JJ_UNDEF: return "Undefined";
    case JJ_NONE: return "NoneType";
    case JJ_BOOL: return "bool";
    case JJ_INT: return "int";
    case JJ_FLOAT: return "float";
    case JJ_STR: return "str";
    case JJ_LIST: return "list";
    case JJ_TUPLE: return "tuple";
    case JJ_DICT: return "dict";
    case JJ_NAMESPACE: return "Namespace";
    case JJ_MACRO: return "Macro";
    case JJ_BUILTIN: return "builtin_function_or_method";
    }
    return "object";
}

const char *jj_object_repr(const struct jj_value *v) {
    switch (v->kind) {
    case JJ_NONE: return "None";
    case JJ_BOOL: return "bool object";
    case JJ_INT: return "int object";
    case JJ_FLOAT: return "float object";
    case JJ_STR: return "str object";
    case JJ_LIST: return "list object";
    case JJ_TUPLE: return "tuple object";
    case JJ_DICT: return "dict object";
    case JJ_NAMESPACE: return "jinja2.utils.Namespace object";
    default: return "object";
    }
}

/* ----------------------------------------------------- truth, compare */

bool jj_is_number(const struct jj_value *v) { return v->kind == JJ_BOOL || v->kind == JJ_INT || v->kind == JJ_FLOAT; }

double jj_as_double(const struct jj_value *v) {
    return v->kind == JJ_FLOAT ? v->u.f : v->kind == JJ_INT ? (double)v->u.i : v->kind == JJ_BOOL ? (double)v->u.b : 0;
}

bool jj_truthy(const struct jj_value *v) {
    switch (v->kind) {
    case JJ_UNDEF:
    case JJ_NONE: return false;
    case JJ_BOOL: return v->u.b;
    case JJ_INT: return v->u.i != 0;
    case JJ_FLOAT: return v->u.f != 0;
    case JJ_STR: return v->u.s.n != 0;
    case JJ_LIST:
    case JJ_TUPLE: return v->u.list->n != 0;
    case JJ_DICT: return v->u.dict->n != 0;
    default: return true;
    }
}

void jj_nest_enter(struct jj_render *r, const struct jj_node *at) {
    if (++r->nesting > JJ_MAX_NESTING) jj_error(r, at, "value nested deeper than %d levels", JJ_MAX_NESTING);
}

void jj_nest_leave(struct jj_render *r) { r->nesting--; }

bool jj_equal(struct jj_render *r, const struct jj_node *at, const struct jj_value *a, const struct jj_value *b) {
    jj_charge_items(r, at, 1);
    if (jj_is_number(a) && jj_is_number(b)) {
        if (a->kind != JJ_FLOAT && b->kind != JJ_FLOAT) {
            int64_t x = a->kind == JJ_INT ? a->u.i : a->u.b, y = b->kind == JJ_INT ? b->u.i : b->u.b;
            return x == y;
        }
        return jj_as_double(a) == jj_as_double(b);
    }
    if (a->kind != b->kind) return false;
    switch (a->kind) {
    case JJ_UNDEF:
    case JJ_NONE: return true;
    case JJ_STR:
        if (a->u.s.n != b->u.s.n) return false;
        jj_charge(r, at, a->u.s.n);
        return memcmp(a->u.s.p, b->u.s.p, a->u.s.n) == 0;
    case JJ_LIST:
    case JJ_TUPLE: {
        if (a->u.list == b->u.list) return true; /* Python's identity shortcut; only a namespace can hold itself */
        if (a->u.list->n != b->u.list->n) return false;
        bool eq = true;
        jj_nest_enter(r, at);
        for (size_t i = 0; i < a->u.list->n && eq; i++)
            eq = jj_equal(r, at, &a->u.list->items[i], &b->u.list->items[i]);
        jj_nest_leave(r);
        return eq;
    }
    case JJ_DICT: {
        const struct jj_dict *x = a->u.dict, *y = b->u.dict;
        if (x == y) return true;
        if (x->n != y->n) return false;
        bool eq = true;
        jj_nest_enter(r, at);
        for (size_t i = 0; i < x->n && eq; i++) {
            /* dicts built alike keep their keys in the same order: try the
             * same place before searching */
            const struct jj_value *o =
                jj_equal(r, at, &x->keys[i], &y->keys[i]) ? &y->vals[i] : jj_dict_get(r, at, y, x->keys[i]);
            eq = o && jj_equal(r, at, &x->vals[i], o);
        }
        jj_nest_leave(r);
        return eq;
    }
    case JJ_NAMESPACE: return a->u.dict == b->u.dict;
    case JJ_MACRO: return a->u.macro == b->u.macro;
    case JJ_BUILTIN: return a->u.fn.def == b->u.fn.def && a->u.fn.self == b->u.fn.self;
    default: return false;
    }
}

void jj_require_defined(struct jj_render *r, const struct jj_node *at, const struct jj_value *v) {
    if (v->kind == JJ_UNDEF) jj_error(r, at, "%s", v->u.undef_msg);
}

int jj_compare(struct jj_render *r, const struct jj_node *at, const struct jj_value *a, const struct jj_value *b) {
    jj_charge_items(r, at, 1);
    jj_require_defined(r, at, a);
    jj_require_defined(r, at, b);
    if (jj_is_number(a) && jj_is_number(b)) {
        if (a->kind != JJ_FLOAT && b->kind != JJ_FLOAT) {
            int64_t x = a->kind == JJ_INT ? a->u.i : a->u.b, y = b->kind == JJ_INT ? b->u.i : b->u.b;
            return x < y ? -1 : x > y;
        }
        double x = jj_as_double(a), y = jj_as_double(b);
        return x < y ? -1 : x > y;
    }
    if (a->kind == JJ_STR && b->kind == JJ_STR) {
        size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
        jj_charge(r, at, n);
        int c = memcmp(a->u.s.p, b->u.s.p, n);
        if (c) return c < 0 ? -1 : 1;
        return a->u.s.n < b->u.s.n ? -1 : a->u.s.n > b->u.s.n;
    }
    if ((a->kind == JJ_LIST || a->kind == JJ_TUPLE) && a->kind == b->kind) {
        int c = 0;
        jj_nest_enter(r, at);
        for (size_t i = 0; i < a->u.list->n && i < b->u.list->n && !c; i++) {
            if (jj_equal(r, at, &a->u.list->items[i], &b->u.list->items[i])) continue;
            c = jj_compare(r, at, &a->u.list->items[i], &b->u.list->items[i]);
        }
        jj_nest_leave(r);
        if (c) return c;
        return a->u.list->n < b->u.list->n ? -1 : a->u.list->n > b->u.list->n;
    }
    jj_error(r, at, "'<' not supported between instances of '%s' and '%s'", jj_type_name(a), jj_type_name(b));
}

/* ---------------------------------------------------------------- UTF-8 */

size_t jj_utf8_next(const char *p, size_t n, size_t i) {
    for (i++; i < n && ((unsigned char)p[i] & 0xC0) == 0x80;) i++;
    return i;
}

size_t jj_utf8_len(const char *p, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)p[i] & 0xC0) != 0x80;
    return k;
}

/* Python's str.isprintable for one character: not in the Unicode "Other"
 * or "Separator" categories, except the ASCII space. The categories come
 * from PCRE2's Unicode tables, read once into a bit per code point of
 * planes 0 and 1 (where nearly all text lives; 16 KiB, 131072 matches at
 * the first repr() of a non-ASCII string): a PCRE2 match per character
 * made repr() of a megabyte of "é" take seconds. Past plane 1, each
 * character is matched and charged. */
#define PRINTABLE_TABLE_CPS 0x20000
static pcre2_code *nonprintable_re;
static uint8_t printable_bits[PRINTABLE_TABLE_CPS / 8];
static bool printable_table_ok;
static pthread_once_t nonprintable_once = PTHREAD_ONCE_INIT;

static bool pcre_printable(const char *p, size_t n, pcre2_match_data *md) {
    return pcre2_match(nonprintable_re, (PCRE2_SPTR)p, n, 0, 0, md, NULL) < 0;
}

static void nonprintable_init(void) {
    int e;
    PCRE2_SIZE off;
    nonprintable_re =
        pcre2_compile((PCRE2_SPTR) "^[\\p{C}\\p{Z}]", PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &e, &off, NULL);
    pcre2_match_data *md = nonprintable_re ? pcre2_match_data_create(1, NULL) : NULL;
    if (!md) return;
    for (uint32_t cp = 0; cp < PRINTABLE_TABLE_CPS; cp++) {
        char enc[4];
        if (cp >= 0xD800 && cp <= 0xDFFF) continue; /* surrogates (Cs): not printable, and not UTF-8 */
        if (pcre_printable(enc, herd_utf8_encode(cp, enc), md)) printable_bits[cp >> 3] |= (uint8_t)(1u << (cp & 7));
    }
    pcre2_match_data_free(md);
    printable_table_ok = true;
}

static bool is_printable(struct jj_render *r, const char *p, size_t n) {
    if (n == 1) return p[0] >= 0x20 && p[0] < 0x7f;
    pthread_once(&nonprintable_once, nonprintable_init);
    if (!nonprintable_re) return true;
    /* an invalid sequence is copied as it is, as PCRE2's refusal of it
     * always made it */
    if (herd_utf8_seq((const uint8_t *)p, n) != (int)n) return true;
    uint32_t cp = herd_utf8_decode(p, n);
    if (printable_table_ok && cp < PRINTABLE_TABLE_CPS) return printable_bits[cp >> 3] >> (cp & 7) & 1;
    jj_charge(r, NULL, JJ_STEP_BYTES); /* a match and two mallocs: about a step */
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) return true;
    bool printable = pcre_printable(p, n, md);
    pcre2_match_data_free(md);
    return printable;
}

/* --------------------------------------------------------- str and repr */

void jj_write_float(struct jj_render *r, struct jj_buf *b, double f) {
    if (isnan(f)) return jj_buf_put(r, b, "nan", 3);
    if (isinf(f)) return f < 0 ? jj_buf_put(r, b, "-inf", 4) : jj_buf_put(r, b, "inf", 3);
    /* Python's repr: the shortest digits that read back as f, fixed
     * notation for decimal exponents -4..15, else d.ddde+XX */
    char e_form[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(e_form, sizeof e_form, "%.*e", prec - 1, f);
        if (strtod(e_form, NULL) == f) break;
    }
    char digits[24];
    size_t nd = 0;
    const char *s = e_form;
    bool neg = *s == '-';
    if (neg) s++;
    for (; *s && *s != 'e'; s++)
        if (*s != '.') digits[nd++] = *s;
    int exp = atoi(s + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    if (neg) jj_buf_putc(r, b, '-');
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            jj_buf_put(r, b, "0.", 2);
            for (int k = 0; k < -exp - 1; k++) jj_buf_putc(r, b, '0');
            jj_buf_put(r, b, digits, nd);
        } else {
            for (int k = 0; k <= exp; k++) jj_buf_putc(r, b, (size_t)k < nd ? digits[k] : '0');
            jj_buf_putc(r, b, '.');
            if ((size_t)exp + 1 < nd)
                jj_buf_put(r, b, digits + exp + 1, nd - (size_t)exp - 1);
            else
                jj_buf_putc(r, b, '0');
        }
    } else {
        jj_buf_putc(r, b, digits[0]);
        if (nd > 1) {
            jj_buf_putc(r, b, '.');
            jj_buf_put(r, b, digits + 1, nd - 1);
        }
        jj_buf_printf(r, b, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
}

static void write_str_repr(struct jj_render *r, struct jj_buf *b, const char *p, size_t n) {
    bool has_sq = memchr(p, '\'', n) != NULL, has_dq = memchr(p, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jj_buf_putc(r, b, q);
    for (size_t i = 0; i < n;) {
        size_t next = jj_utf8_next(p, n, i);
        unsigned char c = (unsigned char)p[i];
        if (c == (unsigned char)q || c == '\\') {
            jj_buf_putc(r, b, '\\');
            jj_buf_putc(r, b, (char)c);
        } else if (c == '\n') {
            jj_buf_put(r, b, "\\n", 2);
        } else if (c == '\r') {
            jj_buf_put(r, b, "\\r", 2);
        } else if (c == '\t') {
            jj_buf_put(r, b, "\\t", 2);
        } else if (!is_printable(r, p + i, next - i)) {
            uint32_t cp = herd_utf8_decode(p + i, n - i);
            if (cp < 0x100)
                jj_buf_printf(r, b, "\\x%02x", cp);
            else if (cp < 0x10000)
                jj_buf_printf(r, b, "\\u%04x", cp);
            else
                jj_buf_printf(r, b, "\\U%08x", cp);
        } else {
            jj_buf_put(r, b, p + i, next - i);
        }
        i = next;
    }
    jj_buf_putc(r, b, q);
}

static void write_items(struct jj_render *r, struct jj_buf *b, const struct jj_value *v) {
    if (v->kind == JJ_DICT || v->kind == JJ_NAMESPACE) {
        struct jj_dict *d = v->u.dict;
        if (d->in_repr) return jj_buf_put(r, b, "{...}", 5);
        d->in_repr = true;
        jj_nest_enter(r, NULL);
        jj_buf_putc(r, b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i) jj_buf_put(r, b, ", ", 2);
            jj_write_repr(r, b, &d->keys[i]);
            jj_buf_put(r, b, ": ", 2);
            jj_write_repr(r, b, &d->vals[i]);
        }
        jj_buf_putc(r, b, '}');
        jj_nest_leave(r);
        d->in_repr = false;
        return;
    }
    jj_nest_enter(r, NULL);
    bool tuple = v->kind == JJ_TUPLE;
    jj_buf_putc(r, b, tuple ? '(' : '[');
    for (size_t i = 0; i < v->u.list->n; i++) {
        if (i) jj_buf_put(r, b, ", ", 2);
        jj_write_repr(r, b, &v->u.list->items[i]);
    }
    if (tuple && v->u.list->n == 1) jj_buf_putc(r, b, ',');
    jj_buf_putc(r, b, tuple ? ')' : ']');
    jj_nest_leave(r);
}

static void write_common(struct jj_render *r, struct jj_buf *b, const struct jj_value *v) {
    switch (v->kind) {
    case JJ_NONE: jj_buf_put(r, b, "None", 4); break;
    case JJ_BOOL: v->u.b ? jj_buf_put(r, b, "True", 4) : jj_buf_put(r, b, "False", 5); break;
    case JJ_INT: jj_buf_printf(r, b, "%lld", (long long)v->u.i); break;
    case JJ_FLOAT: jj_write_float(r, b, v->u.f); break;
    case JJ_LIST:
    case JJ_TUPLE:
    case JJ_DICT: write_items(r, b, v); break;
    case JJ_NAMESPACE:
        jj_buf_put(r, b, "<Namespace ", 11);
        write_items(r, b, v);
        jj_buf_putc(r, b, '>');
        break;
    case JJ_MACRO: jj_buf_put(r, b, "<Macro>", 7); break;
    case JJ_BUILTIN: jj_buf_printf(r, b, "<built-in function %s>", v->u.fn.def->name); break;
    default: break;
    }
}

void jj_write_str(struct jj_render *r, struct jj_buf *b, const struct jj_value *v) {
    if (v->kind == JJ_STR)
        jj_buf_put(r, b, v->u.s.p, v->u.s.n);
    else if (v->kind != JJ_UNDEF)
        write_common(r, b, v);
}

void jj_write_repr(struct jj_render *r, struct jj_buf *b, const struct jj_value *v) {
    if (v->kind == JJ_STR)
        write_str_repr(r, b, v->u.s.p, v->u.s.n);
    else if (v->kind == JJ_UNDEF)
        jj_buf_put(r, b, "Undefined", 9);
    else
        write_common(r, b, v);
}

struct jj_value jj_to_str(struct jj_render *r, const struct jj_value *v) {
    if (v->kind == JJ_STR) return *v;
    struct jj_buf b = {0};
    jj_write_str(r, &b, v);
    return jj_str_buf(&b);
}

struct jj_value jj_escape(struct jj_render *r, const struct jj_value *v) {
    if (v->kind == JJ_STR && v->safe) return *v;
    struct jj_value s = jj_to_str(r, v);
    struct jj_buf b = {0};
    for (size_t i = 0; i < s.u.s.n; i++) {
        switch (s.u.s.p[i]) {
        case '&': jj_buf_put(r, &b, "&amp;", 5); break;
        case '<': jj_buf_put(r, &b, "&lt;", 4); break;
        case '>': jj_buf_put(r, &b, "&gt;", 4); break;
        case '"': jj_buf_put(r, &b, "&#34;", 5); break;
        case '\'': jj_buf_put(r, &b, "&#39;", 5); break;
        default: jj_buf_putc(r, &b, s.u.s.p[i]);
        }
    }
    struct jj_value out = jj_str_buf(&b);
    out.safe = true;
    return out;
}

/* ----------------------------------------------------------------- JSON */

static void write_json_string(struct jj_render *r, struct jj_buf *b, const char *p, size_t n, bool ascii) {
    jj_buf_putc(r, b, '"');
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)p[i];
        size_t next = jj_utf8_next(p, n, i);
        switch (c) {
        case '"': jj_buf_put(r, b, "\\\"", 2); break;
        case '\\': jj_buf_put(r, b, "\\\\", 2); break;
        case '\n': jj_buf_put(r, b, "\\n", 2); break;
        case '\r': jj_buf_put(r, b, "\\r", 2); break;
        case '\t': jj_buf_put(r, b, "\\t", 2); break;
        case '\b': jj_buf_put(r, b, "\\b", 2); break;
        case '\f': jj_buf_put(r, b, "\\f", 2); break;
        default:
            if (c < 0x20) {
                jj_buf_printf(r, b, "\\u%04x", c);
            } else if (c >= 0x80 && ascii) {
                uint32_t cp = herd_utf8_decode(p + i, n - i);
                if (cp >= 0x10000) {
                    cp -= 0x10000;
                    jj_buf_printf(r, b, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
                } else {
                    jj_buf_printf(r, b, "\\u%04x", cp);
                }
            } else {
                jj_buf_put(r, b, p + i, next - i);
            }
        }
        i = next;
    }
    jj_buf_putc(r, b, '"');
}

static void json_newline(struct jj_render *r, struct jj_buf *b, const struct jj_json_opts *o, int level) {
    if (o->indent < 0) return;
    jj_buf_putc(r, b, '\n');
    for (int k = 0; k < o->indent * level; k++) jj_buf_putc(r, b, ' ');
}

static void write_json_float(struct jj_render *r, struct jj_buf *b, double f) {
    if (isnan(f)) return jj_buf_put(r, b, "NaN", 3);
    if (isinf(f)) return f < 0 ? jj_buf_put(r, b, "-Infinity", 9) : jj_buf_put(r, b, "Infinity", 8);
    jj_write_float(r, b, f);
}

/* A dict key as json.dumps writes it: strings as they are, numbers, bools
 * and None spelled as JSON. */
static struct jj_value json_key(struct jj_render *r, const struct jj_node *at, const struct jj_value *k) {
    struct jj_buf kb = {0};
    switch (k->kind) {
    case JJ_STR: return *k;
    case JJ_NONE: return jj_str("null", 4);
    case JJ_BOOL: return k->u.b ? jj_str("true", 4) : jj_str("false", 5);
    case JJ_INT: jj_buf_printf(r, &kb, "%lld", (long long)k->u.i); return jj_str_buf(&kb);
    case JJ_FLOAT: write_json_float(r, &kb, k->u.f); return jj_str_buf(&kb);
    default: jj_error(r, at, "keys must be str, int, float, bool or None, not %s", jj_type_name(k));
    }
}

static int cmp_key_index(const void *a, const void *b, void *ctx) {
    const struct jj_value *keys = ctx;
    const struct jj_value *x = &keys[*(const size_t *)a], *y = &keys[*(const size_t *)b];
    size_t n = x->u.s.n < y->u.s.n ? x->u.s.n : y->u.s.n;
    int c = memcmp(x->u.s.p, y->u.s.p, n);
    return c ? c : (x->u.s.n > y->u.s.n) - (x->u.s.n < y->u.s.n);
}

void jj_write_json(struct jj_render *r, const struct jj_node *at, struct jj_buf *b, const struct jj_value *v,
                   const struct jj_json_opts *o, int level) {
    /* Python's json module recurses; so does this, bounded like a
     * macro call so that a deep structure cannot overflow the stack */
    if (level > JJ_MAX_NESTING) jj_error(r, at, "JSON nesting deeper than %d levels", JJ_MAX_NESTING);
    const char *item_sep = o->item_sep ? o->item_sep : o->indent >= 0 ? "," : ", ";
    const char *key_sep = o->key_sep ? o->key_sep : ": ";
    switch (v->kind) {
    case JJ_NONE: jj_buf_put(r, b, "null", 4); return;
    case JJ_BOOL: v->u.b ? jj_buf_put(r, b, "true", 4) : jj_buf_put(r, b, "false", 5); return;
    case JJ_INT: jj_buf_printf(r, b, "%lld", (long long)v->u.i); return;
    case JJ_FLOAT: write_json_float(r, b, v->u.f); return;
    case JJ_STR: write_json_string(r, b, v->u.s.p, v->u.s.n, o->ensure_ascii); return;
    case JJ_LIST:
    case JJ_TUPLE:
        if (!v->u.list->n) return jj_buf_put(r, b, "[]", 2);
        jj_buf_putc(r, b, '[');
        for (size_t i = 0; i < v->u.list->n; i++) {
            if (i) jj_buf_put(r, b, item_sep, strlen(item_sep));
            json_newline(r, b, o, level + 1);
            jj_write_json(r, at, b, &v->u.list->items[i], o, level + 1);
        }
        json_newline(r, b, o, level);
        jj_buf_putc(r, b, ']');
        return;
    case JJ_DICT: {
        const struct jj_dict *d = v->u.dict;
        if (!d->n) return jj_buf_put(r, b, "{}", 2);
        struct jj_value *keys = jj_alloc(&r->arena, d->n * sizeof *keys);
        size_t *order = jj_alloc(&r->arena, d->n * sizeof *order);
        for (size_t i = 0; i < d->n; i++) {
            keys[i] = json_key(r, at, &d->keys[i]);
            order[i] = i;
        }
        if (o->sort_keys) qsort_r(order, d->n, sizeof *order, cmp_key_index, keys);
        jj_buf_putc(r, b, '{');
        for (size_t k = 0; k < d->n; k++) {
            size_t i = order[k];
            if (k) jj_buf_put(r, b, item_sep, strlen(item_sep));
            json_newline(r, b, o, level + 1);
            write_json_string(r, b, keys[i].u.s.p, keys[i].u.s.n, o->ensure_ascii);
            jj_buf_put(r, b, key_sep, strlen(key_sep));
            jj_write_json(r, at, b, &d->vals[i], o, level + 1);
        }
        json_newline(r, b, o, level);
        jj_buf_putc(r, b, '}');
        return;
    }
    default: jj_error(r, at, "Object of type %s is not JSON serializable", jj_type_name(v));
    }
}

/* ------------------------------------------------- iteration and access */

struct jj_list *jj_iterate(struct jj_render *r, const struct jj_node *at, const struct jj_value *v) {
    switch (v->kind) {
    case JJ_LIST:
    case JJ_TUPLE: return v->u.list;
    case JJ_UNDEF: return jj_list_new(r, JJ_LIST, 0).u.list;
    case JJ_DICT:
    case JJ_NAMESPACE: {
        struct jj_value l = jj_list_new(r, JJ_LIST, v->u.dict->n);
        if (v->u.dict->n) memcpy(l.u.list->items, v->u.dict->keys, v->u.dict->n * sizeof *l.u.list->items);
        return l.u.list;
    }
    case JJ_STR: {
        struct jj_value l = jj_list_new(r, JJ_LIST, jj_utf8_len(v->u.s.p, v->u.s.n));
        size_t k = 0;
        for (size_t i = 0; i < v->u.s.n; k++) {
            size_t next = jj_utf8_next(v->u.s.p, v->u.s.n, i);
            l.u.list->items[k] = jj_str(v->u.s.p + i, next - i);
            i = next;
        }
        return l.u.list;
    }
    default: jj_error(r, at, "'%s' object is not iterable", jj_type_name(v));
    }
}

int64_t jj_length(struct jj_render *r, const struct jj_node *at, const struct jj_value *v) {
    switch (v->kind) {
    case JJ_UNDEF: return 0;
    case JJ_STR: jj_charge(r, at, v->u.s.n); return (int64_t)jj_utf8_len(v->u.s.p, v->u.s.n);
    case JJ_LIST:
    case JJ_TUPLE: return (int64_t)v->u.list->n;
    case JJ_DICT:
    case JJ_NAMESPACE: return (int64_t)v->u.dict->n;
    default: jj_error(r, at, "object of type '%s' has no len()", jj_type_name(v));
    }
}

static struct jj_value no_attribute(struct jj_render *r, const struct jj_value *obj, const struct jj_value *name) {
    struct jj_buf b = {0};
    jj_write_repr(r, &b, name);
    return jj_undef(r, "'%s' has no attribute %.*s", jj_object_repr(obj), (int)(b.n > 200 ? 200 : b.n), b.p);
}

struct jj_value jj_getattr(struct jj_render *r, const struct jj_node *at, const struct jj_value *obj,
                           const char *name) {
    jj_require_defined(r, at, obj);
    struct jj_value m;
    if (jj_method(r, obj, name, strlen(name), &m)) return m;
    struct jj_value key = jj_str(name, strlen(name));
    if (obj->kind == JJ_DICT || obj->kind == JJ_NAMESPACE) {
        const struct jj_value *v = jj_dict_get(r, at, obj->u.dict, key);
        if (v) return *v;
    }
    return no_attribute(r, obj, &key);
}

/* Python's index rule: negative counts from the end. */
static bool index_of(const struct jj_value *key, size_t n, size_t *out) {
    if (key->kind != JJ_INT && key->kind != JJ_BOOL) return false;
    int64_t i = key->kind == JJ_INT ? key->u.i : key->u.b;
    if (i < 0) i += (int64_t)n;
    if (i < 0 || (uint64_t)i >= n) return false;
    *out = (size_t)i;
    return true;
}

struct jj_value jj_getitem(struct jj_render *r, const struct jj_node *at, const struct jj_value *obj,
                           const struct jj_value *key) {
    jj_require_defined(r, at, obj);
    jj_require_defined(r, at, key);
    size_t i;
    switch (obj->kind) {
    case JJ_LIST:
    case JJ_TUPLE:
        if (index_of(key, obj->u.list->n, &i)) return obj->u.list->items[i];
        break;
    case JJ_STR:
        jj_charge(r, at, 2 * obj->u.s.n); /* counting, then walking, code points */
        if (index_of(key, jj_utf8_len(obj->u.s.p, obj->u.s.n), &i)) {
            size_t at_byte = 0;
            for (size_t k = 0; k < i; k++) at_byte = jj_utf8_next(obj->u.s.p, obj->u.s.n, at_byte);
            struct jj_value c = jj_str(obj->u.s.p + at_byte, jj_utf8_next(obj->u.s.p, obj->u.s.n, at_byte) - at_byte);
            c.safe = obj->safe;
            return c;
        }
        break;
    case JJ_DICT:
    case JJ_NAMESPACE: {
        const struct jj_value *v = jj_dict_get(r, at, obj->u.dict, *key);
        if (v) return *v;
        break;
    }
    default: break;
    }
    struct jj_value m;
    if (key->kind == JJ_STR && jj_method(r, obj, key->u.s.p, key->u.s.n, &m)) return m;
    return no_attribute(r, obj, key);
}
