/* Rendering: walks the syntax tree with Jinja2's scoping (a for loop's
 * body gets a fresh scope per iteration, a macro call a scope whose parent
 * is the scope the macro was defined in, if blocks none), Python's
 * operators, and the limits of herd_jinja_limits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "jinja/jinja_internal.h"

struct jj_frame {
    struct jj_frame *parent;
    bool captured;       /* a macro's closure: must outlive the iteration */
    struct jj_dict vars; /* name (string) -> value */
};

struct jj_macro {
    const struct jj_node *def; /* JN_MACRO, or JN_CALLBLOCK for `caller` */
    struct jj_frame *closure;
};

enum flow { FLOW_NORMAL, FLOW_BREAK, FLOW_CONTINUE };

static struct jj_value eval(struct jj_render *r, struct jj_frame *f, const struct jj_node *n);
static enum flow exec_body(struct jj_render *r, struct jj_frame *f, struct jj_buf *out, const struct jj_nodes *body);

/* --------------------------------------------------------------- scopes */

static struct jj_frame *frame_new(struct jj_render *r, struct jj_frame *parent) {
    struct jj_frame *f = jj_alloc(&r->arena, sizeof *f);
    memset(f, 0, sizeof *f);
    f->parent = parent;
    return f;
}

static void frame_set(struct jj_render *r, struct jj_frame *f, const char *name, struct jj_value v) {
    jj_dict_set(r, NULL, &f->vars, jj_str(name, strlen(name)), v);
}

static const struct jj_value *frame_lookup(struct jj_render *r, const struct jj_node *at, const struct jj_frame *f,
                                           const char *name) {
    const struct jj_value key = jj_str(name, strlen(name));
    for (; f; f = f->parent) {
        const struct jj_value *v = jj_dict_get(r, at, &f->vars, key);
        if (v) return v;
    }
    return NULL;
}

static _Noreturn void out_of_steps(struct jj_render *r, const struct jj_node *at) {
    if (!at) at = r->stmt;
    jj_fail_at(&r->fail, HERD_E_NOMEM, at ? at->line : 0, at ? at->col : 0,
               "template exceeds %llu steps (loop iterations, macro calls, and work on long strings and lists)",
               (unsigned long long)r->lim.max_steps);
}

static void step(struct jj_render *r, const struct jj_node *at) {
    if (++r->steps > r->lim.max_steps) out_of_steps(r, at);
}

void jj_charge(struct jj_render *r, const struct jj_node *at, size_t bytes) {
    r->work_bytes += bytes % JJ_STEP_BYTES;
    uint64_t whole = bytes / JJ_STEP_BYTES + r->work_bytes / JJ_STEP_BYTES;
    r->work_bytes %= JJ_STEP_BYTES;
    if (!whole) return;
    /* compared so, the sum cannot wrap whatever a caller passes */
    if (r->steps >= r->lim.max_steps || whole > r->lim.max_steps - r->steps) out_of_steps(r, at);
    r->steps += whole;
}

void jj_charge_items(struct jj_render *r, const struct jj_node *at, size_t n_items) {
    jj_charge(r, at, n_items > SIZE_MAX / JJ_ITEM_BYTES ? SIZE_MAX : n_items * JJ_ITEM_BYTES);
}

/* ------------------------------------------------------------ arguments */

const struct jj_value *jj_arg(const struct jj_args *args, size_t i, const char *name) {
    if (name)
        for (size_t k = 0; k < args->n_kw; k++)
            if (strcmp(args->kw_names[k], name) == 0) return &args->kw[k];
    return i < args->n_pos ? &args->pos[i] : NULL;
}

static void eval_args(struct jj_render *r, struct jj_frame *f, const struct jj_nodes *kids, struct jj_args *args,
                      size_t extra_kw) {
    size_t n_kw = extra_kw;
    for (size_t i = 0; i < kids->n; i++) n_kw += kids->v[i]->kind == JN_KWARG;
    args->pos = jj_alloc(&r->arena, (kids->n + 1) * sizeof *args->pos);
    args->kw = jj_alloc(&r->arena, (n_kw + 1) * sizeof *args->kw);
    args->kw_names = jj_alloc(&r->arena, (n_kw + 1) * sizeof *args->kw_names);
    args->n_pos = args->n_kw = 0;
    for (size_t i = 0; i < kids->n; i++) {
        const struct jj_node *k = kids->v[i];
        if (k->kind == JN_KWARG) {
            args->kw_names[args->n_kw] = k->name;
            args->kw[args->n_kw++] = eval(r, f, k->a);
        } else {
            args->pos[args->n_pos++] = eval(r, f, k);
        }
    }
}

/* --------------------------------------------------------------- macros */

static struct jj_value call_macro(struct jj_render *r, const struct jj_node *at, struct jj_macro *m,
                                  const struct jj_args *args) {
    step(r, at);
    if (r->depth >= r->lim.max_depth)
        jj_fail_at(&r->fail, HERD_E_NOMEM, at->line, at->col, "macro calls nest deeper than %u", r->lim.max_depth);
    r->depth++;
    const struct jj_node *def = m->def;
    struct jj_frame *f = frame_new(r, m->closure);
    size_t n_params = def->kids.n;
    bool *bound = jj_alloc(&r->arena, (n_params + 1) * sizeof *bound);
    memset(bound, 0, (n_params + 1) * sizeof *bound);
    size_t extra = args->n_pos > n_params ? args->n_pos - n_params : 0;
    const char *mname = def->kind == JN_MACRO ? def->name : "caller";
    if (extra && def->kind == JN_MACRO && !def->uses_varargs)
        jj_error(r, at, "macro '%s' takes not more than %zu argument(s)", mname, n_params);
    struct jj_value varargs = jj_list_new(r, JJ_TUPLE, extra);
    for (size_t i = 0; i < args->n_pos; i++) {
        if (i < n_params) {
            frame_set(r, f, def->kids.v[i]->name, args->pos[i]);
            bound[i] = true;
        } else {
            varargs.u.list->items[i - n_params] = args->pos[i];
        }
    }
    struct jj_value kwargs = jj_dict_new(r, JJ_DICT);
    struct jj_value caller = {.kind = JJ_UNDEF, .u.undef_msg = "'caller' is undefined"};
    for (size_t k = 0; k < args->n_kw; k++) {
        size_t i = 0;
        while (i < n_params && strcmp(def->kids.v[i]->name, args->kw_names[k]) != 0) i++;
        jj_charge_items(r, at, i); /* 900 parameters by name are 810,000 comparisons a call */
        if (i < n_params && !bound[i]) {
            frame_set(r, f, def->kids.v[i]->name, args->kw[k]);
            bound[i] = true;
        } else if (strcmp(args->kw_names[k], "caller") == 0) {
            caller = args->kw[k];
        } else if (def->kind == JN_MACRO && !def->uses_kwargs) {
            /* a parameter already given by position lands here too, as in
             * Jinja2's Macro.__call__ */
            jj_error(r, at, "macro '%s' takes no keyword argument '%s'", mname, args->kw_names[k]);
        } else {
            jj_dict_set(r, at, kwargs.u.dict, jj_str(args->kw_names[k], strlen(args->kw_names[k])), args->kw[k]);
        }
    }
    for (size_t i = 0; i < n_params; i++) {
        if (bound[i]) continue;
        const struct jj_node *p = def->kids.v[i];
        frame_set(r, f, p->name,
                  p->kind == JN_KWARG ? eval(r, f, p->a) : jj_undef(r, "parameter '%s' was not provided", p->name));
    }
    frame_set(r, f, "varargs", varargs);
    frame_set(r, f, "kwargs", kwargs);
    if (caller.kind != JJ_UNDEF) frame_set(r, f, "caller", caller);
    struct jj_buf out = {0};
    exec_body(r, f, &out, &def->body);
    r->depth--;
    return jj_str_buf(&out);
}

struct jj_value jj_call_value(struct jj_render *r, const struct jj_node *at, const struct jj_value *fn,
                              const struct jj_args *args) {
    switch (fn->kind) {
    case JJ_MACRO: return call_macro(r, at, fn->u.macro, args);
    case JJ_BUILTIN: {
        struct jj_value v = fn->u.fn.def->fn(r, at, fn->u.fn.self, args);
        /* methods of a Markup string return Markup */
        if (fn->u.fn.self && fn->u.fn.self->kind == JJ_STR && fn->u.fn.self->safe) {
            if (v.kind == JJ_STR) v.safe = true;
            if (v.kind == JJ_LIST)
                for (size_t i = 0; i < v.u.list->n; i++)
                    if (v.u.list->items[i].kind == JJ_STR) v.u.list->items[i].safe = true;
        }
        return v;
    }
    case JJ_UNDEF: jj_error(r, at, "%s", fn->u.undef_msg);
    default: jj_error(r, at, "'%s' object is not callable", jj_type_name(fn));
    }
}

/* ------------------------------------------------------------ operators */

static int64_t as_int(const struct jj_value *v) { return v->kind == JJ_INT ? v->u.i : v->u.b; }

static _Noreturn void bad_operands(struct jj_render *r, const struct jj_node *at, const char *op,
                                   const struct jj_value *a, const struct jj_value *b) {
    jj_error(r, at, "unsupported operand type(s) for %s: '%s' and '%s'", op, jj_type_name(a), jj_type_name(b));
}

static struct jj_value concat_seq(struct jj_render *r, const struct jj_value *a, const struct jj_value *b) {
    struct jj_value l = jj_list_new(r, a->kind, a->u.list->n + b->u.list->n);
    memcpy(l.u.list->items, a->u.list->items, a->u.list->n * sizeof *l.u.list->items);
    memcpy(l.u.list->items + a->u.list->n, b->u.list->items, b->u.list->n * sizeof *l.u.list->items);
    return l;
}

static struct jj_value repeat(struct jj_render *r, const struct jj_node *at, const struct jj_value *seq,
                              int64_t times) {
    size_t unit = seq->kind == JJ_STR ? seq->u.s.n : seq->u.list->n;
    /* an empty sequence times a billion is empty at once, not after a
     * billion empty copies */
    if (times <= 0 || unit == 0) times = 0;
    if (unit && (uint64_t)times > r->lim.max_output_bytes / unit)
        jj_fail_at(&r->fail, HERD_E_NOMEM, at->line, at->col, "repetition result exceeds %zu items",
                   r->lim.max_output_bytes);
    size_t total = unit * (size_t)times, item_bytes = seq->kind == JJ_STR ? 1 : sizeof(struct jj_value);
    struct jj_value res = seq->kind == JJ_STR ? jj_str("", 0) : jj_list_new(r, seq->kind, 0);
    res.safe = seq->safe;
    if (!total) return res;
    jj_charge(r, at, total * item_bytes);
    /* the first copy, then the filled part copied onto the rest: log2(times)
     * memcpy calls, not times */
    char *p = jj_alloc(&r->arena, total * item_bytes + 1);
    const void *src = seq->kind == JJ_STR ? (const void *)seq->u.s.p : (const void *)seq->u.list->items;
    memcpy(p, src, unit * item_bytes);
    for (size_t filled = unit * item_bytes, all = total * item_bytes; filled < all;) {
        size_t k = filled < all - filled ? filled : all - filled;
        memcpy(p + filled, p, k);
        filled += k;
    }
    if (seq->kind == JJ_STR) {
        p[total] = 0;
        res.u.s.p = p;
        res.u.s.n = total;
    } else {
        res.u.list->items = (struct jj_value *)p;
        res.u.list->n = total;
    }
    return res;
}

/* CPython's float floor division (float_divmod): inf // 2 is nan, and the
 * result is exact where floor(a / b) would round. */
static double py_floordiv(double a, double b) {
    double mod = fmod(a, b), div = (a - mod) / b;
    if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1.0;
    if (div == 0) return copysign(0.0, a / b);
    double fl = floor(div);
    return div - fl > 0.5 ? fl + 1.0 : fl;
}

static double py_fmod(double a, double b) {
    double m = fmod(a, b);
    if (m != 0 && ((m < 0) != (b < 0))) m += b;
    return m;
}

static struct jj_value arith(struct jj_render *r, const struct jj_node *at, enum jj_op op, const struct jj_value *a,
                             const struct jj_value *b) {
    jj_require_defined(r, at, a);
    jj_require_defined(r, at, b);
    static const char *const sym[] = {"+", "-", "*", "/", "//", "%", "**"};
    bool nums = jj_is_number(a) && jj_is_number(b);
    bool ints = nums && a->kind != JJ_FLOAT && b->kind != JJ_FLOAT;
    int64_t x = ints ? as_int(a) : 0, y = ints ? as_int(b) : 0, z;
    double fx = nums ? jj_as_double(a) : 0, fy = nums ? jj_as_double(b) : 0;
    switch (op) {
    case JO_ADD:
        if (ints) {
            if (__builtin_add_overflow(x, y, &z)) jj_error(r, at, "integer overflow");
            return jj_int(z);
        }
        if (nums) return jj_float(fx + fy);
        if (a->kind == JJ_STR && b->kind == JJ_STR) {
            bool safe = a->safe || b->safe;
            struct jj_value sa = safe ? jj_escape(r, a) : *a, sb = safe ? jj_escape(r, b) : *b;
            struct jj_buf s = {0};
            jj_buf_put(r, &s, sa.u.s.p, sa.u.s.n);
            jj_buf_put(r, &s, sb.u.s.p, sb.u.s.n);
            struct jj_value res = jj_str_buf(&s);
            res.safe = safe;
            return res;
        }
        if ((a->kind == JJ_LIST || a->kind == JJ_TUPLE) && a->kind == b->kind) return concat_seq(r, a, b);
        if (a->kind == JJ_STR || a->kind == JJ_LIST || a->kind == JJ_TUPLE)
            jj_error(r, at, "can only concatenate %s (not \"%s\") to %s", jj_type_name(a), jj_type_name(b),
                     jj_type_name(a));
        bad_operands(r, at, "+", a, b);
    default: break;
    }
    if (op == JO_MUL && !nums) {
        if ((a->kind == JJ_STR || a->kind == JJ_LIST || a->kind == JJ_TUPLE) &&
            (b->kind == JJ_INT || b->kind == JJ_BOOL))
            return repeat(r, at, a, as_int(b));
        if ((b->kind == JJ_STR || b->kind == JJ_LIST || b->kind == JJ_TUPLE) &&
            (a->kind == JJ_INT || a->kind == JJ_BOOL))
            return repeat(r, at, b, as_int(a));
    }
    if (!nums) bad_operands(r, at, sym[op], a, b);
    switch (op) {
    case JO_SUB:
        if (ints) {
            if (__builtin_sub_overflow(x, y, &z)) jj_error(r, at, "integer overflow");
            return jj_int(z);
        }
        return jj_float(fx - fy);
    case JO_MUL:
        if (ints) {
            if (__builtin_mul_overflow(x, y, &z)) jj_error(r, at, "integer overflow");
            return jj_int(z);
        }
        return jj_float(fx * fy);
    case JO_DIV:
        if (fy == 0) jj_error(r, at, "division by zero");
        return jj_float(fx / fy);
    case JO_FLOORDIV:
        if (ints) {
            if (y == 0) jj_error(r, at, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) jj_error(r, at, "integer overflow");
            int64_t q = x / y;
            if ((x % y != 0) && ((x < 0) != (y < 0))) q--;
            return jj_int(q);
        }
        if (fy == 0) jj_error(r, at, "float floor division by zero");
        return jj_float(py_floordiv(fx, fy));
    case JO_MOD:
        if (ints) {
            if (y == 0) jj_error(r, at, "integer division or modulo by zero");
            if (y == -1) return jj_int(0);
            int64_t m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) m += y;
            return jj_int(m);
        }
        if (fy == 0) jj_error(r, at, "float modulo");
        return jj_float(py_fmod(fx, fy));
    case JO_POW:
        if (ints && y >= 0) {
            /* 0, 1 and -1 would loop y times; any other base overflows
             * within 63 multiplications */
            if (x == 0 || x == 1) return jj_int(y == 0 ? 1 : x);
            if (x == -1) return jj_int(y % 2 ? -1 : 1);
            int64_t acc = 1;
            for (int64_t k = 0; k < y; k++)
                if (__builtin_mul_overflow(acc, x, &acc)) jj_error(r, at, "integer overflow");
            return jj_int(acc);
        }
        return jj_float(pow(fx, fy));
    default: break;
    }
    HERD_ASSERT(!"unknown arithmetic operator");
    return jj_none();
}

static bool contains(struct jj_render *r, const struct jj_node *at, const struct jj_value *item,
                     const struct jj_value *in) {
    switch (in->kind) {
    case JJ_STR:
        if (item->kind != JJ_STR)
            jj_error(r, at, "'in <string>' requires string as left operand, not %s", jj_type_name(item));
        if (!item->u.s.n) return true;
        jj_charge(r, at, in->u.s.n + item->u.s.n);
        return memmem(in->u.s.p, in->u.s.n, item->u.s.p, item->u.s.n) != NULL;
    case JJ_LIST:
    case JJ_TUPLE:
        for (size_t i = 0; i < in->u.list->n; i++)
            if (jj_equal(r, at, item, &in->u.list->items[i])) return true;
        return false;
    case JJ_DICT:
    case JJ_NAMESPACE: return jj_dict_get(r, at, in->u.dict, *item) != NULL;
    case JJ_UNDEF: return false;
    default: jj_error(r, at, "argument of type '%s' is not iterable", jj_type_name(in));
    }
}

static bool compare_op(struct jj_render *r, const struct jj_node *at, enum jj_op op, const struct jj_value *a,
                       const struct jj_value *b) {
    switch (op) {
    case JO_EQ: return jj_equal(r, at, a, b);
    case JO_NE: return !jj_equal(r, at, a, b);
    case JO_LT: return jj_compare(r, at, a, b) < 0;
    case JO_LE: return jj_compare(r, at, a, b) <= 0;
    case JO_GT: return jj_compare(r, at, a, b) > 0;
    case JO_GE: return jj_compare(r, at, a, b) >= 0;
    case JO_IN: return contains(r, at, a, b);
    case JO_NOTIN: return !contains(r, at, a, b);
    default: HERD_ASSERT(!"not a comparison"); return false;
    }
}

/* Python slice bounds for a sequence of n items: the first index, the
 * step and the number of items. The count is computed, not walked to,
 * so that a step near INT64_MAX cannot overflow an index. */
static size_t slice_bounds(struct jj_render *r, const struct jj_node *at, const struct jj_value *lo,
                           const struct jj_value *hi, const struct jj_value *st, int64_t n, int64_t *start,
                           int64_t *stepv) {
    int64_t s = 1;
    if (st && st->kind != JJ_NONE) {
        if (st->kind != JJ_INT) jj_error(r, at, "slice indices must be integers or None");
        s = st->u.i;
        if (s == 0) jj_error(r, at, "slice step cannot be zero");
    }
    int64_t def_lo = s > 0 ? 0 : n - 1, def_hi = s > 0 ? n : -1;
    int64_t b[2];
    const struct jj_value *v[2] = {lo, hi};
    for (int k = 0; k < 2; k++) {
        if (!v[k] || v[k]->kind == JJ_NONE) {
            b[k] = k == 0 ? def_lo : def_hi;
            continue;
        }
        if (v[k]->kind != JJ_INT && v[k]->kind != JJ_BOOL) jj_error(r, at, "slice indices must be integers or None");
        int64_t i = as_int(v[k]);
        if (i < 0) {
            i += n;
            if (i < 0) i = s > 0 ? 0 : -1;
        } else if (i >= n) {
            i = s > 0 ? n : n - 1;
        }
        b[k] = i;
    }
    *start = b[0];
    *stepv = s;
    if (s > 0) return b[1] > b[0] ? (size_t)((uint64_t)(b[1] - b[0] - 1) / (uint64_t)s + 1) : 0;
    return b[0] > b[1] ? (size_t)((uint64_t)(b[0] - b[1] - 1) / ((uint64_t)(-(s + 1)) + 1) + 1) : 0;
}

static struct jj_value eval_slice(struct jj_render *r, struct jj_frame *f, const struct jj_node *n) {
    struct jj_value obj = eval(r, f, n->a);
    jj_require_defined(r, n, &obj);
    struct jj_value lo = n->b ? eval(r, f, n->b) : jj_none(), hi = n->c ? eval(r, f, n->c) : jj_none(),
                    st = n->d ? eval(r, f, n->d) : jj_none();
    int64_t start, s;
    if (obj.kind == JJ_LIST || obj.kind == JJ_TUPLE) {
        size_t cnt = slice_bounds(r, n, &lo, &hi, &st, (int64_t)obj.u.list->n, &start, &s);
        struct jj_value l = jj_list_new(r, obj.kind, cnt);
        for (size_t k = 0; k < cnt; k++) l.u.list->items[k] = obj.u.list->items[start + (int64_t)k * s];
        return l;
    }
    if (obj.kind == JJ_STR) {
        struct jj_list *chars = jj_iterate(r, n, &obj);
        size_t cnt = slice_bounds(r, n, &lo, &hi, &st, (int64_t)chars->n, &start, &s);
        struct jj_buf b = {0};
        for (size_t k = 0; k < cnt; k++) {
            const struct jj_value *c = &chars->items[start + (int64_t)k * s];
            jj_buf_put(r, &b, c->u.s.p, c->u.s.n);
        }
        struct jj_value res = jj_str_buf(&b);
        res.safe = obj.safe;
        return res;
    }
    /* as Jinja2: None[...] is undefined, a dict cannot be sliced */
    if (obj.kind == JJ_NONE) return jj_undef(r, "'NoneType' object is not subscriptable");
    if (obj.kind == JJ_DICT || obj.kind == JJ_NAMESPACE) jj_error(r, n, "unhashable type: 'slice'");
    jj_error(r, n, "'%s' object is not subscriptable", jj_type_name(&obj));
}

/* ----------------------------------------------------------- expressions */

static struct jj_value lookup_name(struct jj_render *r, struct jj_frame *f, const struct jj_node *n) {
    const struct jj_value *v = frame_lookup(r, n, f, n->name);
    if (v) return *v;
    const struct jj_builtin *g = jj_global(n->name);
    if (g) return (struct jj_value){.kind = JJ_BUILTIN, .u.fn = {g, NULL}};
    return jj_undef(r, "'%s' is undefined", n->name);
}

static struct jj_value eval(struct jj_render *r, struct jj_frame *f, const struct jj_node *n) {
    jj_charge_items(r, n, 1);
    switch (n->kind) {
    case JN_LIT: return n->lit;
    case JN_NAME: return lookup_name(r, f, n);
    case JN_LIST:
    case JN_TUPLE: {
        struct jj_value l = jj_list_new(r, n->kind == JN_LIST ? JJ_LIST : JJ_TUPLE, n->kids.n);
        for (size_t i = 0; i < n->kids.n; i++) l.u.list->items[i] = eval(r, f, n->kids.v[i]);
        return l;
    }
    case JN_DICT: {
        struct jj_value d = jj_dict_new(r, JJ_DICT);
        for (size_t i = 0; i + 1 < n->kids.n; i += 2)
            jj_dict_set(r, n, d.u.dict, eval(r, f, n->kids.v[i]), eval(r, f, n->kids.v[i + 1]));
        return d;
    }
    case JN_ATTR: {
        struct jj_value obj = eval(r, f, n->a);
        return jj_getattr(r, n, &obj, n->name);
    }
    case JN_ITEM: {
        struct jj_value obj = eval(r, f, n->a), key = eval(r, f, n->b);
        return jj_getitem(r, n, &obj, &key);
    }
    case JN_SLICE: return eval_slice(r, f, n);
    case JN_CALL: {
        struct jj_value fn = eval(r, f, n->a);
        struct jj_args args;
        eval_args(r, f, &n->kids, &args, 0);
        return jj_call_value(r, n, &fn, &args);
    }
    case JN_FILTER: {
        struct jj_value v = n->a ? eval(r, f, n->a) : *r->filter_input;
        struct jj_args args;
        eval_args(r, f, &n->kids, &args, 0);
        return jj_call_filter(r, n, n->name, v, &args);
    }
    case JN_TEST: {
        struct jj_value v = eval(r, f, n->a);
        struct jj_args args;
        eval_args(r, f, &n->kids, &args, 0);
        return jj_bool(jj_call_test(r, n, n->name, &v, &args) != n->negated);
    }
    case JN_NEG:
    case JN_POS: {
        struct jj_value v = eval(r, f, n->a);
        jj_require_defined(r, n, &v);
        if (!jj_is_number(&v))
            jj_error(r, n, "bad operand type for unary %c: '%s'", n->kind == JN_NEG ? '-' : '+', jj_type_name(&v));
        if (n->kind == JN_POS) return v.kind == JJ_BOOL ? jj_int(v.u.b) : v;
        if (v.kind == JJ_FLOAT) return jj_float(-v.u.f);
        if (as_int(&v) == INT64_MIN) jj_error(r, n, "integer overflow");
        return jj_int(-as_int(&v));
    }
    case JN_NOT: {
        struct jj_value v = eval(r, f, n->a);
        return jj_bool(!jj_truthy(&v));
    }
    case JN_AND: {
        struct jj_value a = eval(r, f, n->a);
        return jj_truthy(&a) ? eval(r, f, n->b) : a;
    }
    case JN_OR: {
        struct jj_value a = eval(r, f, n->a);
        return jj_truthy(&a) ? a : eval(r, f, n->b);
    }
    case JN_BINOP: {
        struct jj_value a = eval(r, f, n->a), b = eval(r, f, n->b);
        return arith(r, n, n->op, &a, &b);
    }
    case JN_CONCAT: {
        struct jj_buf b = {0};
        for (size_t i = 0; i < n->kids.n; i++) {
            struct jj_value v = eval(r, f, n->kids.v[i]);
            jj_write_str(r, &b, &v);
        }
        return jj_str_buf(&b);
    }
    case JN_COMPARE: {
        struct jj_value left = eval(r, f, n->a);
        for (size_t i = 0; i < n->kids.n; i++) {
            struct jj_value right = eval(r, f, n->kids.v[i]);
            if (!compare_op(r, n, n->ops[i], &left, &right)) return jj_bool(false);
            left = right;
        }
        return jj_bool(true);
    }
    case JN_COND: {
        struct jj_value c = eval(r, f, n->b);
        if (jj_truthy(&c)) return eval(r, f, n->a);
        return n->c
                   ? eval(r, f, n->c)
                   : jj_undef(r,
                              "the inline if-expression on line %u evaluated to false and no else section was defined.",
                              n->line);
    }
    default: break;
    }
    HERD_ASSERT(!"statement node in an expression");
    return jj_none();
}

/* ------------------------------------------------------------ statements */

static void assign(struct jj_render *r, struct jj_frame *f, const struct jj_node *target, struct jj_value v) {
    if (target->kind == JN_NAME) {
        frame_set(r, f, target->name, v);
        return;
    }
    if (target->kind == JN_ATTR) {
        struct jj_value ns = eval(r, f, target->a);
        if (ns.kind != JJ_NAMESPACE) jj_error(r, target, "cannot assign attribute on non-namespace object");
        jj_dict_set(r, target, ns.u.dict, jj_str(target->name, strlen(target->name)), v);
        return;
    }
    /* tuple unpacking */
    struct jj_list *items = jj_iterate(r, target, &v);
    if (items->n != target->kids.n)
        jj_error(r, target,
                 items->n < target->kids.n ? "not enough values to unpack (expected %zu, got %zu)"
                                           : "too many values to unpack (expected %zu, got %zu)",
                 target->kids.n, items->n);
    for (size_t i = 0; i < items->n; i++) frame_set(r, f, target->kids.v[i]->name, items->items[i]);
}

/* The `loop` variable: one dict per loop, updated in place each
 * iteration (Jinja's LoopContext also advances in place), so a long loop
 * does not allocate per iteration. */
static void loop_update(struct jj_render *r, struct jj_value *loop, const struct jj_list *items, size_t i) {
    size_t n = items->n;
    struct jj_value vals[] = {
        jj_int((int64_t)i + 1),
        jj_int((int64_t)i),
        jj_int((int64_t)(n - i)),
        jj_int((int64_t)(n - i - 1)),
        jj_bool(i == 0),
        jj_bool(i + 1 == n),
        jj_int((int64_t)n),
        jj_int(1),
        jj_int(0),
        i ? items->items[i - 1] : (struct jj_value){.kind = JJ_UNDEF, .u.undef_msg = "there is no previous item"},
        i + 1 < n ? items->items[i + 1] : (struct jj_value){.kind = JJ_UNDEF, .u.undef_msg = "there is no next item"},
    };
    static const char *const keys[] = {"index",  "index0", "revindex", "revindex0", "first",   "last",
                                       "length", "depth",  "depth0",   "previtem",  "nextitem"};
    if (loop->kind != JJ_DICT) {
        *loop = jj_dict_new(r, JJ_DICT);
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
            jj_dict_set(r, NULL, loop->u.dict, jj_str(keys[k], strlen(keys[k])), vals[k]);
        return;
    }
    memcpy(loop->u.dict->vals, vals, sizeof vals);
}

static enum flow exec_for(struct jj_render *r, struct jj_frame *f, struct jj_buf *out, const struct jj_node *n) {
    struct jj_value seq = eval(r, f, n->a);
    struct jj_list *items = jj_iterate(r, n->a, &seq);
    if (n->b) { /* for x in xs if cond: filter first, so loop.length counts what runs */
        struct jj_value kept = jj_list_new(r, JJ_LIST, items->n);
        size_t k = 0;
        for (size_t i = 0; i < items->n; i++) {
            step(r, n);
            struct jj_frame *tf = frame_new(r, f);
            assign(r, tf, n->target, items->items[i]);
            struct jj_value c = eval(r, tf, n->b);
            if (jj_truthy(&c)) kept.u.list->items[k++] = items->items[i];
        }
        kept.u.list->n = k;
        items = kept.u.list;
    }
    struct jj_value loop = {.kind = JJ_NONE};
    struct jj_frame *it = NULL;
    for (size_t i = 0; i < items->n; i++) {
        step(r, n);
        /* a fresh scope per iteration (what the body sets does not carry
         * over), reused unless a macro defined in it holds on to it */
        if (!it || it->captured)
            it = frame_new(r, f);
        else
            it->vars.n = 0;
        assign(r, it, n->target, items->items[i]);
        loop_update(r, &loop, items, i);
        frame_set(r, it, "loop", loop);
        if (exec_body(r, it, out, &n->body) == FLOW_BREAK) break;
    }
    if (!items->n) return exec_body(r, f, out, &n->orelse);
    return FLOW_NORMAL;
}

static struct jj_value capture(struct jj_render *r, struct jj_frame *f, const struct jj_nodes *body) {
    struct jj_buf b = {0};
    exec_body(r, f, &b, body);
    return jj_str_buf(&b);
}

static struct jj_value apply_block_filter(struct jj_render *r, struct jj_frame *f, const struct jj_node *chain,
                                          struct jj_value input) {
    const struct jj_value *saved = r->filter_input;
    r->filter_input = &input;
    struct jj_value v = eval(r, f, chain);
    r->filter_input = saved;
    return v;
}

static enum flow exec_node(struct jj_render *r, struct jj_frame *f, struct jj_buf *out, const struct jj_node *n) {
    r->stmt = n;
    switch (n->kind) {
    case JN_TEXT: jj_buf_put(r, out, n->lit.u.s.p, n->lit.u.s.n); return FLOW_NORMAL;
    case JN_OUTPUT: {
        struct jj_value v = eval(r, f, n->a);
        jj_write_str(r, out, &v);
        return FLOW_NORMAL;
    }
    case JN_IF: {
        struct jj_value c = eval(r, f, n->a);
        return exec_body(r, f, out, jj_truthy(&c) ? &n->body : &n->orelse);
    }
    case JN_FOR: return exec_for(r, f, out, n);
    case JN_SET: assign(r, f, n->target, eval(r, f, n->a)); return FLOW_NORMAL;
    case JN_SETBLOCK: {
        struct jj_value v = capture(r, f, &n->body);
        if (n->b) v = apply_block_filter(r, f, n->b, v);
        assign(r, f, n->target, v);
        return FLOW_NORMAL;
    }
    case JN_MACRO: {
        struct jj_macro *m = jj_alloc(&r->arena, sizeof *m);
        m->def = n;
        m->closure = f;
        for (struct jj_frame *c = f; c; c = c->parent) c->captured = true;
        frame_set(r, f, n->name, (struct jj_value){.kind = JJ_MACRO, .u.macro = m});
        return FLOW_NORMAL;
    }
    case JN_CALLBLOCK: {
        struct jj_macro *m = jj_alloc(&r->arena, sizeof *m);
        m->def = n;
        m->closure = f;
        for (struct jj_frame *c = f; c; c = c->parent) c->captured = true;
        struct jj_value fn = eval(r, f, n->a->a);
        struct jj_args args;
        eval_args(r, f, &n->a->kids, &args, 1);
        args.kw_names[args.n_kw] = "caller";
        args.kw[args.n_kw++] = (struct jj_value){.kind = JJ_MACRO, .u.macro = m};
        struct jj_value v = jj_call_value(r, n, &fn, &args);
        jj_write_str(r, out, &v);
        return FLOW_NORMAL;
    }
    case JN_FILTERBLOCK: {
        struct jj_value v = apply_block_filter(r, f, n->a, capture(r, f, &n->body));
        jj_write_str(r, out, &v);
        return FLOW_NORMAL;
    }
    case JN_BREAK: return FLOW_BREAK;
    case JN_CONTINUE: return FLOW_CONTINUE;
    default: break;
    }
    HERD_ASSERT(!"expression node as a statement");
    return FLOW_NORMAL;
}

static enum flow exec_body(struct jj_render *r, struct jj_frame *f, struct jj_buf *out, const struct jj_nodes *body) {
    for (size_t i = 0; i < body->n; i++) {
        enum flow fl = exec_node(r, f, out, body->v[i]);
        if (fl != FLOW_NORMAL) return fl;
    }
    return FLOW_NORMAL;
}

/* -------------------------------------------------------------- entries */

void herd_jinja_default_limits(struct herd_jinja_limits *lim) {
    lim->max_output_bytes = (size_t)4 << 20;
    lim->max_memory_bytes = (size_t)64 << 20;
    lim->max_steps = 1000000;
    lim->max_depth = 64;
}

enum herd_status herd_jinja_parse(const char *src, size_t len, struct herd_jinja_template **out,
                                  struct herd_error *err) {
    *out = NULL;
    struct herd_jinja_template *t = calloc(1, sizeof *t);
    if (!t) return herd_error_set(err, HERD_E_NOMEM, "out of memory parsing a template");
    struct jj_fail fail = {.err = err};
    t->arena.fail = &fail;
    /* the tree of a template is a few times its source size */
    t->arena.max_bytes = (len < ((size_t)16 << 20) ? len : ((size_t)16 << 20)) * 64 + ((size_t)1 << 20);
    if (setjmp(fail.jump)) {
        jj_arena_free(&t->arena);
        free(t);
        return fail.code;
    }
    jj_parse(t, src, len, &fail);
    t->arena.fail = NULL;
    *out = t;
    return HERD_OK;
}

void herd_jinja_destroy(struct herd_jinja_template *t) {
    if (!t) return;
    jj_arena_free(&t->arena);
    free(t);
}

enum herd_status herd_jinja_render(const struct herd_jinja_template *t, const json_t *vars, time_t now,
                                   const struct herd_jinja_limits *lim, char **out, size_t *out_len,
                                   struct herd_error *err) {
    *out = NULL;
    *out_len = 0;
    struct jj_render *r = calloc(1, sizeof *r);
    if (!r) return herd_error_set(err, HERD_E_NOMEM, "out of memory rendering a template");
    if (lim)
        r->lim = *lim;
    else
        herd_jinja_default_limits(&r->lim);
    r->now = now;
    r->fail.err = err;
    r->arena.fail = &r->fail;
    r->arena.max_bytes = r->lim.max_memory_bytes;
    enum herd_status rc = HERD_OK;
    if (setjmp(r->fail.jump)) {
        rc = r->fail.code;
        goto out;
    }
    r->root = frame_new(r, NULL);
    if (vars && json_is_object(vars)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)vars, k, v) frame_set(r, r->root, k, jj_from_json(r, v));
    }
    struct jj_buf b = {0};
    exec_body(r, r->root, &b, &t->body);
    char *s = malloc(b.n + 1);
    if (!s) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory rendering a template");
        goto out;
    }
    if (b.n) memcpy(s, b.p, b.n);
    s[b.n] = 0;
    *out = s;
    *out_len = b.n;
out:
    jj_arena_free(&r->arena);
    free(r);
    return rc;
}
