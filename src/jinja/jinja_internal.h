/* Shared insides of the Jinja engine (jinja_*.c): the arena every template
 * and every render allocates from, values, the syntax tree, and the error
 * exit.
 *
 * Errors leave through longjmp to the one setjmp in herd_jinja_parse or
 * herd_jinja_render. That is safe because everything between the two is
 * allocated from one arena that the entry point frees, and it keeps the
 * hundred places an expression can fail readable (a tree-walking
 * interpreter threading a status through every operator would be twice the
 * code and easier to get wrong). */
#ifndef HERD_JINJA_JINJA_INTERNAL_H
#define HERD_JINJA_JINJA_INTERNAL_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/status.h"
#include "jinja/jinja.h"

/* ---------------------------------------------------------------- arena */

struct jj_chunk;

/* Bump allocator with a ceiling; failure (the ceiling or malloc) jumps to
 * the owner's error exit. */
struct jj_arena {
    struct jj_chunk *chunks;
    size_t used_bytes, max_bytes;
    struct jj_fail *fail;
};

/* Where errors go: a message with the line and column, then longjmp. */
struct jj_fail {
    jmp_buf jump;
    enum herd_status code;
    struct herd_error *err;
};

void *jj_alloc(struct jj_arena *a, size_t n);
char *jj_strdup(struct jj_arena *a, const char *s, size_t n);
void jj_arena_free(struct jj_arena *a);

_Noreturn void jj_fail_at(struct jj_fail *f, enum herd_status code, uint32_t line, uint32_t col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* --------------------------------------------------------------- values */

enum jj_kind {
    JJ_UNDEF,
    JJ_NONE,
    JJ_BOOL,
    JJ_INT,
    JJ_FLOAT,
    JJ_STR,
    JJ_LIST,
    JJ_TUPLE,
    JJ_DICT,
    JJ_NAMESPACE, /* a dict whose attributes `set ns.x = ...` may change */
    JJ_MACRO,
    JJ_BUILTIN, /* a global function, or a method bound to self */
};

struct jj_list {
    size_t n;
    struct jj_value *items;
};

struct jj_dict {
    size_t n, cap;
    struct jj_value *keys, *vals;
    bool in_repr; /* being written by repr(): a namespace holding itself prints {...}, as Python does */
};

struct jj_value;
struct jj_render;
struct jj_node;
struct jj_args;
typedef struct jj_value (*jj_builtin_fn)(struct jj_render *r, const struct jj_node *at, const struct jj_value *self,
                                         const struct jj_args *args);

struct jj_builtin {
    const char *name;
    jj_builtin_fn fn;
};

struct jj_macro;

struct jj_value {
    enum jj_kind kind;
    /* JJ_STR: a Markup string (from |safe, |escape): joining it with a
     * plain string HTML-escapes the plain one, as markupsafe does even
     * with autoescape off; a few real templates depend on that */
    bool safe;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
        struct jj_list *list;
        struct jj_dict *dict;
        struct jj_macro *macro;
        struct {
            const struct jj_builtin *def;
            const struct jj_value *self; /* NULL for globals */
        } fn;
        const char *undef_msg; /* what using it reports: "'x' is undefined" */
    } u;
};

/* Positional and keyword arguments of a call. */
struct jj_args {
    size_t n_pos, n_kw;
    struct jj_value *pos;
    const char **kw_names;
    struct jj_value *kw;
};

/* ---------------------------------------------------------- syntax tree */

enum jj_node_kind {
    /* expressions */
    JN_LIT,
    JN_NAME,
    JN_LIST,
    JN_TUPLE,
    JN_DICT,  /* kids: key, value, key, value, ... */
    JN_ATTR,  /* a.name */
    JN_ITEM,  /* a[b] */
    JN_SLICE, /* a[b:c:d], missing parts NULL */
    JN_CALL,  /* a(kids), keyword arguments as JN_KWARG kids */
    JN_KWARG,
    JN_FILTER, /* a | name(kids); a NULL in a filter block */
    JN_TEST,   /* a is [not] name(kids) */
    JN_NEG,
    JN_POS,
    JN_NOT,
    JN_AND,
    JN_OR,
    JN_BINOP,   /* a op b with op one of + - * / // % ** */
    JN_CONCAT,  /* kids joined with ~ */
    JN_COMPARE, /* a op0 kids[0] op1 kids[1] ... */
    JN_COND,    /* a if b else c */
    /* statements */
    JN_TEXT,
    JN_OUTPUT,
    JN_IF,          /* if a: body else: orelse (elif nests) */
    JN_FOR,         /* for target in a [if b]: body else: orelse */
    JN_SET,         /* target = a */
    JN_SETBLOCK,    /* target = rendered body, through filter b */
    JN_MACRO,       /* name(params=kids as JN_NAME or JN_KWARG with default): body */
    JN_CALLBLOCK,   /* call(params) a: body */
    JN_FILTERBLOCK, /* body through filter chain a */
    JN_BREAK,
    JN_CONTINUE,
};

enum jj_op {
    JO_ADD,
    JO_SUB,
    JO_MUL,
    JO_DIV,
    JO_FLOORDIV,
    JO_MOD,
    JO_POW,
    JO_EQ,
    JO_NE,
    JO_LT,
    JO_LE,
    JO_GT,
    JO_GE,
    JO_IN,
    JO_NOTIN,
};

struct jj_nodes {
    size_t n;
    struct jj_node **v;
};

struct jj_node {
    enum jj_node_kind kind;
    uint32_t line, col;
    const char *name; /* names, attributes, filters, tests, macros */
    struct jj_value lit;
    struct jj_node *a, *b, *c, *d, *target;
    struct jj_nodes kids;
    enum jj_op *ops; /* JN_COMPARE, one per kid; JN_BINOP uses op */
    enum jj_op op;
    bool negated;                   /* JN_TEST: is not */
    bool uses_varargs, uses_kwargs; /* JN_MACRO: its body reads them, so extra arguments are allowed */
    struct jj_nodes body, orelse;
};

struct herd_jinja_template {
    struct jj_arena arena;
    struct jj_nodes body;
};

/* Parses src into t (jinja_parse.c); errors jump to f. */
void jj_parse(struct herd_jinja_template *t, const char *src, size_t len, struct jj_fail *f);

/* ------------------------------------------------------------ rendering */

/* A growable byte string in the render arena, with the output ceiling. */
struct jj_buf {
    char *p;
    size_t n, cap;
};

struct jj_frame;

struct jj_render {
    struct jj_arena arena;
    struct jj_fail fail;
    struct herd_jinja_limits lim;
    time_t now;
    uint64_t steps;
    uint64_t work_bytes; /* charged work not yet a whole step (jj_charge) */
    uint32_t depth;
    uint32_t nesting;           /* containers being walked now by ==, <, repr() (jj_nest_enter) */
    const struct jj_node *stmt; /* the statement running: where an error without a node points */
    struct jj_frame *root;
    const struct jj_value *filter_input; /* the captured body, in a filter block's chain */
};

_Noreturn void jj_error(struct jj_render *r, const struct jj_node *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The step budget (jinja_eval.c). A loop iteration or a macro call is one
 * step. Other work is charged too, or a template could spend minutes
 * inside its budget (a 16 KiB template looping 20,000 times over a
 * megabyte string, or over a chain of 2,000 `and`s): every byte written
 * to a string and every byte a builtin or operator scans, and
 * JJ_ITEM_BYTES for each expression evaluated and each list or dict item
 * compared or visited; JJ_STEP_BYTES make a step. A step is a few
 * microseconds (herd_jinja_default_limits); so is a character-by-character
 * pass over 256 bytes, or 16 expressions. Past the budget, fails with
 * HERD_E_NOMEM at `at` (NULL: the statement running). */
#define JJ_STEP_BYTES 256
#define JJ_ITEM_BYTES 16
void jj_charge(struct jj_render *r, const struct jj_node *at, size_t bytes);
void jj_charge_items(struct jj_render *r, const struct jj_node *at, size_t n_items);

/* Equality, ordering, repr() and affix tests recurse into nested lists
 * and dicts; a value nested deeper than this (built one level per loop
 * iteration) fails instead of overflowing the C stack. JSON has the same
 * bound. Python's own recursion limit is 1000 frames. */
#define JJ_MAX_NESTING 256
void jj_nest_enter(struct jj_render *r, const struct jj_node *at);
void jj_nest_leave(struct jj_render *r);

void jj_buf_put(struct jj_render *r, struct jj_buf *b, const char *s, size_t n);
void jj_buf_putc(struct jj_render *r, struct jj_buf *b, char c);
void jj_buf_printf(struct jj_render *r, struct jj_buf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Values (jinja_value.c). */
struct jj_value jj_undef(struct jj_render *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
struct jj_value jj_none(void);
struct jj_value jj_bool(bool b);
struct jj_value jj_int(int64_t i);
struct jj_value jj_float(double f);
struct jj_value jj_str(const char *p, size_t n); /* p must outlive the render */
struct jj_value jj_str_copy(struct jj_render *r, const char *p, size_t n);
struct jj_value jj_str_buf(const struct jj_buf *b);
struct jj_value jj_list_new(struct jj_render *r, enum jj_kind kind, size_t n); /* n items, JJ_NONE */
struct jj_value jj_dict_new(struct jj_render *r, enum jj_kind kind);
/* Dicts are small arrays searched in order (the order Python keeps);
 * a lookup charges the keys it compares. */
void jj_dict_set(struct jj_render *r, const struct jj_node *at, struct jj_dict *d, struct jj_value key,
                 struct jj_value val);
const struct jj_value *jj_dict_get(struct jj_render *r, const struct jj_node *at, const struct jj_dict *d,
                                   struct jj_value key);
struct jj_value jj_from_json(struct jj_render *r, const json_t *j);

/* Python's type name ("str", "NoneType") and Jinja's object_type_repr
 * ("dict object"). */
const char *jj_type_name(const struct jj_value *v);
const char *jj_object_repr(const struct jj_value *v);

bool jj_truthy(const struct jj_value *v);
/* Python's ==; namespaces compare by identity (Jinja's Namespace has no
 * __eq__). Charges what it compares. */
bool jj_equal(struct jj_render *r, const struct jj_node *at, const struct jj_value *a, const struct jj_value *b);
/* -1, 0, 1 as Python's <, or an error naming both types. */
int jj_compare(struct jj_render *r, const struct jj_node *at, const struct jj_value *a, const struct jj_value *b);
/* Fails with the undefined value's message if v is undefined. */
void jj_require_defined(struct jj_render *r, const struct jj_node *at, const struct jj_value *v);
bool jj_is_number(const struct jj_value *v); /* bool, int or float */
double jj_as_double(const struct jj_value *v);

/* str(v) and repr(v) as Python prints them. */
void jj_write_str(struct jj_render *r, struct jj_buf *b, const struct jj_value *v);
void jj_write_repr(struct jj_render *r, struct jj_buf *b, const struct jj_value *v);
struct jj_value jj_to_str(struct jj_render *r, const struct jj_value *v);
/* markupsafe.escape: v itself if already safe, else str(v) with & < > " '
 * escaped, marked safe. */
struct jj_value jj_escape(struct jj_render *r, const struct jj_value *v);
void jj_write_float(struct jj_render *r, struct jj_buf *b, double f);

/* json.dumps(v, ensure_ascii, indent (< 0: none), separators, sort_keys). */
struct jj_json_opts {
    bool ensure_ascii, sort_keys;
    int indent;
    const char *item_sep, *key_sep;
};
void jj_write_json(struct jj_render *r, const struct jj_node *at, struct jj_buf *b, const struct jj_value *v,
                   const struct jj_json_opts *o, int level);

/* Items of an iterable (list, tuple, dict keys, string characters,
 * undefined: none), as a list value; an error for anything else. */
struct jj_list *jj_iterate(struct jj_render *r, const struct jj_node *at, const struct jj_value *v);
int64_t jj_length(struct jj_render *r, const struct jj_node *at, const struct jj_value *v);

/* Attribute and item access as Jinja's environment does them. */
struct jj_value jj_getattr(struct jj_render *r, const struct jj_node *at, const struct jj_value *obj, const char *name);
struct jj_value jj_getitem(struct jj_render *r, const struct jj_node *at, const struct jj_value *obj,
                           const struct jj_value *key);

/* UTF-8 helpers. */
size_t jj_utf8_len(const char *p, size_t n);            /* code points */
size_t jj_utf8_next(const char *p, size_t n, size_t i); /* index after the code point at i */

/* Builtins (jinja_builtins.c). */
struct jj_value jj_call_filter(struct jj_render *r, const struct jj_node *at, const char *name, struct jj_value v,
                               const struct jj_args *args);
bool jj_call_test(struct jj_render *r, const struct jj_node *at, const char *name, const struct jj_value *v,
                  const struct jj_args *args);
/* The method `name` (n bytes) of v bound to it, or false. */
bool jj_method(struct jj_render *r, const struct jj_value *v, const char *name, size_t n, struct jj_value *out);
const struct jj_builtin *jj_global(const char *name);

/* Calling a value (jinja_eval.c): macros and builtins. */
struct jj_value jj_call_value(struct jj_render *r, const struct jj_node *at, const struct jj_value *fn,
                              const struct jj_args *args);

/* Argument helpers for builtins: the i-th positional or the keyword name,
 * or NULL. */
const struct jj_value *jj_arg(const struct jj_args *args, size_t i, const char *name);

#endif
