/* Filters, tests, methods of strings / dicts / lists, and global
 * functions of the Jinja engine, each behaving as in Jinja2 3.1 and
 * Python 3 (Hugging Face's tojson: non-ASCII kept, keys unsorted). */
#include <ctype.h>
#include <locale.h>
#include <pcre2.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wctype.h>

#include "base/utf8.h"
#include "jinja/jinja_internal.h"

/* Every builtin has the jj_builtin_fn signature; many use only some of
 * its parameters. */
#define UNUSED __attribute__((unused))
#define BUILTIN(fname)                                                                                                 \
    static struct jj_value fname(struct jj_render *r UNUSED, const struct jj_node *at UNUSED,                          \
                                 const struct jj_value *self UNUSED, const struct jj_args *args UNUSED)

/* ----------------------------------------------------------- arguments */

static const char *want_str(struct jj_render *r, const struct jj_node *at, const struct jj_value *v, size_t *n,
                            const char *what) {
    if (!v || v->kind != JJ_STR) jj_error(r, at, "%s must be a string, not %s", what, v ? jj_type_name(v) : "nothing");
    *n = v->u.s.n;
    return v->u.s.p;
}

static int64_t want_int(struct jj_render *r, const struct jj_node *at, const struct jj_value *v, const char *what) {
    if (!v || (v->kind != JJ_INT && v->kind != JJ_BOOL))
        jj_error(r, at, "%s must be an integer, not %s", what, v ? jj_type_name(v) : "nothing");
    return v->kind == JJ_INT ? v->u.i : v->u.b;
}

static bool opt_bool(const struct jj_args *args, size_t i, const char *name, bool def) {
    const struct jj_value *v = jj_arg(args, i, name);
    return v ? jj_truthy(v) : def;
}

/* ------------------------------------------------------ text helpers */

/* Byte length of the Python whitespace character at p[i], or 0. */
static size_t space_at(const char *p, size_t n, size_t i) {
    unsigned char c = (unsigned char)p[i];
    if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) return 1;
    if (c < 0x80) return 0;
    if (c != 0xc2 && c != 0xe1 && c != 0xe2 && c != 0xe3) return 0; /* the lead bytes of the ones below */
    static const char *const wide[] = {"\xc2\x85",     "\xc2\xa0",     "\xe1\x9a\x80", "\xe2\x80\xa8",
                                       "\xe2\x80\xa9", "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80"};
    for (size_t k = 0; k < sizeof wide / sizeof *wide; k++) {
        size_t len = strlen(wide[k]);
        if (n - i >= len && memcmp(p + i, wide[k], len) == 0) return len;
    }
    /* U+2000..U+200A */
    if (n - i >= 3 && c == 0xe2 && (unsigned char)p[i + 1] == 0x80 && (unsigned char)p[i + 2] >= 0x80 &&
        (unsigned char)p[i + 2] <= 0x8a)
        return 3;
    return 0;
}

static size_t char_start(const char *p, size_t i) {
    while (i > 0 && ((unsigned char)p[i] & 0xC0) == 0x80) i--;
    return i;
}

static bool in_chars(const char *set, size_t set_n, const char *c, size_t c_n) {
    for (size_t i = 0; i < set_n;) {
        size_t next = jj_utf8_next(set, set_n, i);
        if (next - i == c_n && memcmp(set + i, c, c_n) == 0) return true;
        i = next;
    }
    return false;
}

/* str.strip / lstrip / rstrip with chars (NULL: whitespace). With chars,
 * each test scans chars, so one call can be O(len(s) * len(chars)): each
 * test is charged before it runs. Whitespace is charged once, after. */
static struct jj_value strip(struct jj_render *r, const struct jj_node *at, const struct jj_value *s,
                             const struct jj_value *chars, bool left, bool right) {
    const char *p = s->u.s.p;
    size_t a = 0, b = s->u.s.n;
    bool ws = !chars || chars->kind == JJ_NONE;
    while (left && a < b) {
        size_t next = jj_utf8_next(p, b, a);
        if (!ws) jj_charge(r, at, chars->u.s.n + 1);
        bool hit = ws ? space_at(p, b, a) > 0 : in_chars(chars->u.s.p, chars->u.s.n, p + a, next - a);
        if (!hit) break;
        a = next;
    }
    while (right && b > a) {
        size_t start = char_start(p, b - 1);
        if (!ws) jj_charge(r, at, chars->u.s.n + 1);
        bool hit = ws ? space_at(p, b, start) > 0 : in_chars(chars->u.s.p, chars->u.s.n, p + start, b - start);
        if (!hit) break;
        b = start;
    }
    if (ws) jj_charge(r, at, s->u.s.n - (b - a));
    return jj_str(p + a, b - a);
}

static locale_t c_utf8;
static pthread_once_t c_utf8_once = PTHREAD_ONCE_INIT;
static void c_utf8_init(void) { c_utf8 = newlocale(LC_ALL_MASK, "C.UTF-8", (locale_t)0); }

enum case_mode { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_CAPITALIZE, CASE_JINJA_TITLE };

/* Upper/lower/title case per code point (C.UTF-8's tables; Python's
 * one-to-many mappings such as "ß" -> "SS" are not applied). */
static struct jj_value change_case(struct jj_render *r, const struct jj_value *s, enum case_mode mode) {
    pthread_once(&c_utf8_once, c_utf8_init);
    struct jj_buf b = {0};
    bool prev_cased = false, word_start = true, first = true;
    const char *p = s->u.s.p;
    size_t n = s->u.s.n;
    for (size_t i = 0; i < n;) {
        size_t next = jj_utf8_next(p, n, i);
        uint32_t cp = herd_utf8_decode(p + i, next - i);
        wint_t up, low;
        bool alpha;
        if (cp < 0x80 || !c_utf8) {
            up = cp < 0x80 ? (wint_t)toupper((int)cp) : cp;
            low = cp < 0x80 ? (wint_t)tolower((int)cp) : cp;
            alpha = cp < 0x80 && isalpha((int)cp);
        } else {
            up = towupper_l(cp, c_utf8);
            low = towlower_l(cp, c_utf8);
            alpha = iswalpha_l(cp, c_utf8);
        }
        uint32_t outc = cp;
        switch (mode) {
        case CASE_UPPER: outc = up; break;
        case CASE_LOWER: outc = low; break;
        case CASE_CAPITALIZE: outc = first ? up : low; break;
        case CASE_TITLE: /* Python str.title: a cased letter after an uncased one starts a word */
            outc = alpha ? (prev_cased ? low : up) : cp;
            prev_cased = alpha;
            break;
        case CASE_JINJA_TITLE: { /* Jinja's title filter: words start after - space ( { [ < */
            bool sep = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || space_at(p, n, i);
            outc = sep ? cp : word_start ? up : low;
            word_start = sep;
            break;
        }
        }
        first = false;
        char enc[4];
        jj_buf_put(r, &b, enc, herd_utf8_encode(outc, enc));
        i = next;
    }
    return jj_str_buf(&b);
}

static struct jj_value replace_str(struct jj_render *r, const struct jj_value *s, const struct jj_value *old,
                                   const struct jj_value *new, int64_t count) {
    struct jj_buf b = {0};
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, on = old->u.s.n;
    if (on == 0) { /* Python inserts new before every character and at the end */
        for (size_t i = 0; i < n;) {
            if (count != 0) {
                jj_buf_put(r, &b, new->u.s.p, new->u.s.n);
                if (count > 0) count--;
            }
            size_t next = jj_utf8_next(p, n, i);
            jj_buf_put(r, &b, p + i, next - i);
            i = next;
        }
        if (count != 0) jj_buf_put(r, &b, new->u.s.p, new->u.s.n);
        return jj_str_buf(&b);
    }
    size_t i = 0;
    while (i < n) {
        const char *hit = count != 0 ? memmem(p + i, n - i, old->u.s.p, on) : NULL;
        if (!hit) break;
        jj_buf_put(r, &b, p + i, (size_t)(hit - (p + i)));
        jj_buf_put(r, &b, new->u.s.p, new->u.s.n);
        i = (size_t)(hit - p) + on;
        if (count > 0) count--;
    }
    jj_buf_put(r, &b, p + i, n - i);
    return jj_str_buf(&b);
}

static struct jj_value split_str(struct jj_render *r, const struct jj_node *at, const struct jj_value *s,
                                 const struct jj_value *sep, int64_t maxsplit) {
    size_t cap = 8, n = 0;
    struct jj_value *items = jj_alloc(&r->arena, cap * sizeof *items);
    const char *p = s->u.s.p;
    size_t len = s->u.s.n;
    jj_charge(r, at, len);
#define PUSH(ptr, l)                                                                                                   \
    do {                                                                                                               \
        if (n == cap) {                                                                                                \
            struct jj_value *g = jj_alloc(&r->arena, cap * 2 * sizeof *g);                                             \
            memcpy(g, items, n * sizeof *g);                                                                           \
            items = g;                                                                                                 \
            cap *= 2;                                                                                                  \
        }                                                                                                              \
        items[n++] = jj_str(ptr, l);                                                                                   \
    } while (0)
    if (!sep || sep->kind == JJ_NONE) {
        size_t i = 0;
        for (;;) {
            size_t w;
            while (i < len && (w = space_at(p, len, i)) > 0) i += w;
            if (i >= len) break;
            if (maxsplit >= 0 && (int64_t)n >= maxsplit) {
                size_t end = len;
                while (end > i && space_at(p, len, char_start(p, end - 1))) end = char_start(p, end - 1);
                PUSH(p + i, end - i);
                break;
            }
            size_t start = i;
            while (i < len && space_at(p, len, i) == 0) i = jj_utf8_next(p, len, i);
            PUSH(p + start, i - start);
        }
    } else {
        if (sep->kind != JJ_STR) jj_error(r, at, "must be str or None, not %s", jj_type_name(sep));
        if (!sep->u.s.n) jj_error(r, at, "empty separator");
        size_t i = 0;
        for (;;) {
            const char *hit =
                (maxsplit < 0 || (int64_t)n < maxsplit) ? memmem(p + i, len - i, sep->u.s.p, sep->u.s.n) : NULL;
            if (!hit) {
                PUSH(p + i, len - i);
                break;
            }
            PUSH(p + i, (size_t)(hit - (p + i)));
            i = (size_t)(hit - p) + sep->u.s.n;
        }
    }
#undef PUSH
    struct jj_value l = jj_list_new(r, JJ_LIST, 0);
    l.u.list->items = items;
    l.u.list->n = n;
    return l;
}

/* Python's str.splitlines() boundaries. */
static size_t line_break_at(const char *p, size_t n, size_t i) {
    unsigned char c = (unsigned char)p[i];
    if (c == '\r') return i + 1 < n && p[i + 1] == '\n' ? 2 : 1;
    if (c == '\n' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1e)) return 1;
    if (n - i >= 2 && memcmp(p + i, "\xc2\x85", 2) == 0) return 2;
    if (n - i >= 3 && (memcmp(p + i, "\xe2\x80\xa8", 3) == 0 || memcmp(p + i, "\xe2\x80\xa9", 3) == 0)) return 3;
    return 0;
}

static struct jj_value splitlines(struct jj_render *r, const struct jj_node *at, const struct jj_value *s) {
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, count = 0;
    jj_charge(r, at, 2 * n); /* two passes */
    for (size_t i = 0, start = 0; i <= n;) {
        size_t br = i < n ? line_break_at(p, n, i) : 0;
        if (i == n) {
            if (i > start) count++;
            break;
        }
        if (br) {
            count++;
            i += br;
            start = i;
        } else {
            i = jj_utf8_next(p, n, i);
        }
    }
    struct jj_value l = jj_list_new(r, JJ_LIST, count);
    size_t k = 0;
    for (size_t i = 0, start = 0; i <= n;) {
        size_t br = i < n ? line_break_at(p, n, i) : 0;
        if (i == n) {
            if (i > start) l.u.list->items[k++] = jj_str(p + start, i - start);
            break;
        }
        if (br) {
            l.u.list->items[k++] = jj_str(p + start, i - start);
            i += br;
            start = i;
        } else {
            i = jj_utf8_next(p, n, i);
        }
    }
    return l;
}

static bool affix(struct jj_render *r, const struct jj_node *at, const struct jj_value *s, const struct jj_value *x,
                  bool suffix) {
    jj_charge_items(r, at, 1);
    if (x->kind == JJ_TUPLE || x->kind == JJ_LIST) {
        bool hit = false;
        jj_nest_enter(r, at);
        for (size_t i = 0; i < x->u.list->n && !hit; i++) hit = affix(r, at, s, &x->u.list->items[i], suffix);
        jj_nest_leave(r);
        return hit;
    }
    if (x->kind != JJ_STR || x->u.s.n > s->u.s.n) return false;
    jj_charge(r, at, x->u.s.n);
    return memcmp(s->u.s.p + (suffix ? s->u.s.n - x->u.s.n : 0), x->u.s.p, x->u.s.n) == 0;
}

/* ------------------------------------------------------ string methods */

static const struct jj_value *strip_chars(struct jj_render *r, const struct jj_node *at, const struct jj_args *args) {
    const struct jj_value *c = jj_arg(args, 0, "chars");
    if (c && c->kind != JJ_STR && c->kind != JJ_NONE) jj_error(r, at, "strip arg must be None or str");
    return c;
}

BUILTIN(m_strip) { return strip(r, at, self, strip_chars(r, at, args), true, true); }
BUILTIN(m_lstrip) { return strip(r, at, self, strip_chars(r, at, args), true, false); }
BUILTIN(m_rstrip) { return strip(r, at, self, strip_chars(r, at, args), false, true); }
BUILTIN(m_upper) { return change_case(r, self, CASE_UPPER); }
BUILTIN(m_lower) { return change_case(r, self, CASE_LOWER); }
BUILTIN(m_title) { return change_case(r, self, CASE_TITLE); }
BUILTIN(m_capitalize) { return change_case(r, self, CASE_CAPITALIZE); }

BUILTIN(m_startswith) {
    const struct jj_value *x = jj_arg(args, 0, NULL);
    if (!x) jj_error(r, at, "startswith() takes at least 1 argument");
    return jj_bool(affix(r, at, self, x, false));
}

BUILTIN(m_endswith) {
    const struct jj_value *x = jj_arg(args, 0, NULL);
    if (!x) jj_error(r, at, "endswith() takes at least 1 argument");
    return jj_bool(affix(r, at, self, x, true));
}

BUILTIN(m_split) {
    const struct jj_value *ms = jj_arg(args, 1, "maxsplit");
    return split_str(r, at, self, jj_arg(args, 0, "sep"), ms ? want_int(r, at, ms, "maxsplit") : -1);
}

BUILTIN(m_splitlines) { return splitlines(r, at, self); }

BUILTIN(m_replace) {
    size_t n;
    want_str(r, at, jj_arg(args, 0, NULL), &n, "replace() argument 1");
    want_str(r, at, jj_arg(args, 1, NULL), &n, "replace() argument 2");
    const struct jj_value *c = jj_arg(args, 2, "count");
    struct jj_value old = *jj_arg(args, 0, NULL), new = *jj_arg(args, 1, NULL);
    if (self->safe) { /* Markup.replace escapes its arguments */
        old = jj_escape(r, &old);
        new = jj_escape(r, &new);
    }
    return replace_str(r, self, &old, &new, c ? want_int(r, at, c, "count") : -1);
}

/* A copy of p[0..n) backwards, in the arena. */
static char *reversed(struct jj_render *r, const char *p, size_t n) {
    char *q = jj_alloc(&r->arena, n + 1);
    for (size_t i = 0; i < n; i++) q[i] = p[n - 1 - i];
    return q;
}

/* str.find / rfind: the code-point index of the first (last) sub, or -1.
 * rfind searches the reversed strings with memmem, which is linear; a
 * memcmp at each position from the end was O(len(s) * len(sub)). */
static int64_t find_str(struct jj_render *r, const struct jj_node *at, const struct jj_value *s,
                        const struct jj_value *sub, bool last) {
    size_t n = s->u.s.n, m = sub->u.s.n;
    const char *hit = NULL;
    jj_charge(r, at, n + m);
    if (m > n) return -1;
    if (!m) {
        hit = last ? s->u.s.p + n : s->u.s.p;
    } else if (!last) {
        hit = memmem(s->u.s.p, n, sub->u.s.p, m);
    } else {
        const char *rs = reversed(r, s->u.s.p, n), *rsub = reversed(r, sub->u.s.p, m);
        const char *rhit = memmem(rs, n, rsub, m);
        if (rhit) hit = s->u.s.p + (n - (size_t)(rhit - rs) - m);
    }
    return hit ? (int64_t)jj_utf8_len(s->u.s.p, (size_t)(hit - s->u.s.p)) : -1;
}

BUILTIN(m_find) {
    size_t n;
    want_str(r, at, jj_arg(args, 0, NULL), &n, "find() argument");
    return jj_int(find_str(r, at, self, jj_arg(args, 0, NULL), false));
}

BUILTIN(m_rfind) {
    size_t n;
    want_str(r, at, jj_arg(args, 0, NULL), &n, "rfind() argument");
    return jj_int(find_str(r, at, self, jj_arg(args, 0, NULL), true));
}

BUILTIN(m_count) {
    size_t n;
    const char *sub = want_str(r, at, jj_arg(args, 0, NULL), &n, "count() argument");
    jj_charge(r, at, self->u.s.n + n);
    if (!n) return jj_int((int64_t)jj_utf8_len(self->u.s.p, self->u.s.n) + 1);
    int64_t c = 0;
    for (const char *p = self->u.s.p, *end = p + self->u.s.n; (p = memmem(p, (size_t)(end - p), sub, n)); p += n) c++;
    return jj_int(c);
}

BUILTIN(m_join) {
    const struct jj_value *seq = jj_arg(args, 0, NULL);
    if (!seq) jj_error(r, at, "join() takes exactly one argument");
    struct jj_list *items = jj_iterate(r, at, seq);
    jj_charge_items(r, at, items->n); /* the items may all be empty */
    struct jj_buf b = {0};
    for (size_t i = 0; i < items->n; i++) {
        struct jj_value item = items->items[i];
        if (self->safe) item = jj_escape(r, &item); /* Markup.join */
        if (item.kind != JJ_STR)
            jj_error(r, at, "sequence item %zu: expected str instance, %s found", i, jj_type_name(&item));
        if (i) jj_buf_put(r, &b, self->u.s.p, self->u.s.n);
        jj_buf_put(r, &b, item.u.s.p, item.u.s.n);
    }
    return jj_str_buf(&b);
}

static struct jj_value char_class(struct jj_render *r, const struct jj_node *at, const struct jj_value *s,
                                  int (*pred)(int)) {
    if (!s->u.s.n) return jj_bool(false);
    jj_charge(r, at, s->u.s.n);
    for (size_t i = 0; i < s->u.s.n; i++)
        if ((unsigned char)s->u.s.p[i] >= 0x80 || !pred((unsigned char)s->u.s.p[i])) return jj_bool(false);
    return jj_bool(true);
}

BUILTIN(m_isdigit) { return char_class(r, at, self, isdigit); }
BUILTIN(m_isalpha) { return char_class(r, at, self, isalpha); }
BUILTIN(m_isalnum) { return char_class(r, at, self, isalnum); }
BUILTIN(m_isspace) { return char_class(r, at, self, isspace); }
BUILTIN(m_islower) {
    struct jj_value low = change_case(r, self, CASE_LOWER), up = change_case(r, self, CASE_UPPER);
    return jj_bool(jj_equal(r, at, &low, self) && !jj_equal(r, at, &up, self));
}
BUILTIN(m_isupper) {
    struct jj_value low = change_case(r, self, CASE_LOWER), up = change_case(r, self, CASE_UPPER);
    return jj_bool(jj_equal(r, at, &up, self) && !jj_equal(r, at, &low, self));
}

/* str.format with {} / {0} / {name} fields (no format specs). */
BUILTIN(m_format) {
    struct jj_buf b = {0};
    const char *p = self->u.s.p;
    size_t n = self->u.s.n, auto_idx = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '{' && i + 1 < n && p[i + 1] == '{') {
            jj_buf_putc(r, &b, '{');
            i++;
        } else if (p[i] == '}' && i + 1 < n && p[i + 1] == '}') {
            jj_buf_putc(r, &b, '}');
            i++;
        } else if (p[i] == '{') {
            const char *end = memchr(p + i, '}', n - i);
            if (!end) jj_error(r, at, "Single '{' encountered in format string");
            size_t flen = (size_t)(end - (p + i + 1));
            const char *field = p + i + 1;
            if (memchr(field, ':', flen) || memchr(field, '!', flen))
                jj_error(r, at, "format specs in str.format are not supported");
            const struct jj_value *v = NULL;
            if (flen == 0) {
                v = jj_arg(args, auto_idx++, NULL);
            } else if (isdigit((unsigned char)field[0])) {
                v = jj_arg(args, (size_t)atoi(field), NULL);
            } else {
                char name[64];
                snprintf(name, sizeof name, "%.*s", (int)(flen < 63 ? flen : 63), field);
                v = jj_arg(args, SIZE_MAX, name);
            }
            if (!v) jj_error(r, at, "str.format: no argument for field '%.*s'", (int)(flen < 60 ? flen : 60), field);
            jj_write_str(r, &b, v);
            i = (size_t)(end - p);
        } else {
            jj_buf_putc(r, &b, p[i]);
        }
    }
    return jj_str_buf(&b);
}

/* -------------------------------------------------------- dict methods */

BUILTIN(m_get) {
    const struct jj_value *k = jj_arg(args, 0, NULL);
    if (!k) jj_error(r, at, "get expected at least 1 argument, got 0");
    const struct jj_value *v = jj_dict_get(r, at, self->u.dict, *k);
    if (v) return *v;
    const struct jj_value *d = jj_arg(args, 1, "default");
    return d ? *d : jj_none();
}

static struct jj_value dict_items(struct jj_render *r, const struct jj_dict *d) {
    struct jj_value l = jj_list_new(r, JJ_LIST, d->n);
    for (size_t i = 0; i < d->n; i++) {
        struct jj_value t = jj_list_new(r, JJ_TUPLE, 2);
        t.u.list->items[0] = d->keys[i];
        t.u.list->items[1] = d->vals[i];
        l.u.list->items[i] = t;
    }
    return l;
}

BUILTIN(m_items) { return dict_items(r, self->u.dict); }

BUILTIN(m_keys) { return (struct jj_value){.kind = JJ_LIST, .u.list = jj_iterate(r, at, self)}; }

BUILTIN(m_values) {
    struct jj_value l = jj_list_new(r, JJ_LIST, self->u.dict->n);
    if (self->u.dict->n) memcpy(l.u.list->items, self->u.dict->vals, self->u.dict->n * sizeof *l.u.list->items);
    return l;
}

/* --------------------------------------------------------- method table */

static const struct jj_builtin str_methods[] = {
    {"strip", m_strip},       {"lstrip", m_lstrip},   {"rstrip", m_rstrip},         {"upper", m_upper},
    {"lower", m_lower},       {"title", m_title},     {"capitalize", m_capitalize}, {"startswith", m_startswith},
    {"endswith", m_endswith}, {"split", m_split},     {"splitlines", m_splitlines}, {"replace", m_replace},
    {"find", m_find},         {"rfind", m_rfind},     {"count", m_count},           {"join", m_join},
    {"isdigit", m_isdigit},   {"isalpha", m_isalpha}, {"isalnum", m_isalnum},       {"isspace", m_isspace},
    {"islower", m_islower},   {"isupper", m_isupper}, {"format", m_format},         {NULL, NULL},
};

static const struct jj_builtin dict_methods[] = {
    {"get", m_get}, {"items", m_items}, {"keys", m_keys}, {"values", m_values}, {NULL, NULL},
};

/* Methods that modify their object: Jinja's immutable sandbox (which
 * Hugging Face renders with) turns them into an undefined value that
 * fails when called. */
static const char *const unsafe_methods[] = {"append", "extend",  "insert", "pop",        "remove",  "clear",
                                             "sort",   "reverse", "update", "setdefault", "popitem", NULL};

bool jj_method(struct jj_render *r, const struct jj_value *v, const char *name, size_t n, struct jj_value *out) {
    const struct jj_builtin *table = v->kind == JJ_STR ? str_methods : v->kind == JJ_DICT ? dict_methods : NULL;
    if (v->kind == JJ_LIST || v->kind == JJ_DICT)
        for (size_t i = 0; unsafe_methods[i]; i++)
            if (strlen(unsafe_methods[i]) == n && memcmp(unsafe_methods[i], name, n) == 0) {
                *out = jj_undef(r, "access to attribute '%s' of '%s' object is unsafe.", unsafe_methods[i],
                                jj_type_name(v));
                return true;
            }
    if (!table) return false;
    for (; table->name; table++) {
        if (strlen(table->name) != n || memcmp(table->name, name, n) != 0) continue;
        struct jj_value *self = jj_alloc(&r->arena, sizeof *self);
        *self = *v;
        *out = (struct jj_value){.kind = JJ_BUILTIN, .u.fn = {table, self}};
        return true;
    }
    return false;
}

/* -------------------------------------------------------------- sorting */

struct sort_ctx {
    struct jj_render *r;
    const struct jj_node *at;
    bool case_sensitive, reverse;
};

/* Strings compare case-insensitively unless case_sensitive (Jinja's
 * ignore_case). */
static struct jj_value sort_key(struct sort_ctx *c, const struct jj_value *v) {
    if (!c->case_sensitive && v->kind == JJ_STR) return change_case(c->r, v, CASE_LOWER);
    return *v;
}

/* Stable merge sort of keys/vals by key (Python's sorted is stable). */
static void merge_sort(struct sort_ctx *c, struct jj_value *keys, struct jj_value *vals, size_t n, struct jj_value *tk,
                       struct jj_value *tv) {
    if (n < 2) return;
    size_t h = n / 2;
    merge_sort(c, keys, vals, h, tk, tv);
    merge_sort(c, keys + h, vals + h, n - h, tk, tv);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int cmp = jj_compare(c->r, c->at, &keys[j], &keys[i]);
        bool take_right = c->reverse ? cmp > 0 : cmp < 0;
        if (take_right) {
            tk[k] = keys[j];
            tv[k++] = vals[j++];
        } else {
            tk[k] = keys[i];
            tv[k++] = vals[i++];
        }
    }
    while (i < h) {
        tk[k] = keys[i];
        tv[k++] = vals[i++];
    }
    while (j < n) {
        tk[k] = keys[j];
        tv[k++] = vals[j++];
    }
    memcpy(keys, tk, n * sizeof *keys);
    memcpy(vals, tv, n * sizeof *vals);
}

static struct jj_value attr_path(struct jj_render *r, const struct jj_node *at, const struct jj_value *obj,
                                 const struct jj_value *path);

static struct jj_value sorted(struct jj_render *r, const struct jj_node *at, const struct jj_list *items, bool reverse,
                              bool case_sensitive, const struct jj_value *attribute) {
    size_t n = items->n;
    struct jj_value *keys = jj_alloc(&r->arena, (n + 1) * sizeof *keys),
                    *tk = jj_alloc(&r->arena, (n + 1) * sizeof *tk), *tv = jj_alloc(&r->arena, (n + 1) * sizeof *tv);
    struct jj_value out = jj_list_new(r, JJ_LIST, n);
    struct sort_ctx c = {r, at, case_sensitive, reverse};
    for (size_t i = 0; i < n; i++) {
        struct jj_value k = attribute ? attr_path(r, at, &items->items[i], attribute) : items->items[i];
        keys[i] = sort_key(&c, &k);
        out.u.list->items[i] = items->items[i];
    }
    merge_sort(&c, keys, out.u.list->items, n, tk, tv);
    return out;
}

/* ------------------------------------------------------------- filters */

/* Jinja's make_attrgetter: "a.b.0" walks items, numeric parts as ints. */
static struct jj_value attr_path(struct jj_render *r, const struct jj_node *at, const struct jj_value *obj,
                                 const struct jj_value *path) {
    if (path->kind == JJ_INT) return jj_getitem(r, at, obj, path);
    size_t n;
    const char *p = want_str(r, at, path, &n, "attribute");
    struct jj_value v = *obj;
    for (size_t i = 0; i <= n;) {
        const char *dot = memchr(p + i, '.', n - i);
        size_t end = dot ? (size_t)(dot - p) : n;
        struct jj_value key = jj_str(p + i, end - i);
        bool digits = end > i;
        for (size_t k = i; k < end; k++) digits = digits && isdigit((unsigned char)p[k]);
        if (digits) key = jj_int(strtoll(p + i, NULL, 10));
        if (v.kind == JJ_UNDEF) return v;
        jj_charge_items(r, at, 1);
        v = jj_getitem(r, at, &v, &key);
        i = end + 1;
        if (!dot) break;
    }
    return v;
}

static const char *filter_name_arg(struct jj_render *r, const struct jj_node *at, const struct jj_value *v) {
    size_t n;
    const char *s = want_str(r, at, v, &n, "filter or test name");
    return jj_strdup(&r->arena, s, n);
}

/* args without the first `skip` positionals */
static struct jj_args shift_args(const struct jj_args *args, size_t skip) {
    struct jj_args a = *args;
    skip = skip < a.n_pos ? skip : a.n_pos;
    a.pos += skip;
    a.n_pos -= skip;
    return a;
}

static struct jj_args only_pos(const struct jj_args *args, size_t skip) {
    struct jj_args a = shift_args(args, skip);
    a.n_kw = 0;
    return a;
}

/* map, select and friends yield nothing for a false value (None too),
 * as Jinja's `if value:` guard does. */
static struct jj_list *items_if_true(struct jj_render *r, const struct jj_node *at, const struct jj_value *v) {
    return jj_truthy(v) ? jj_iterate(r, at, v) : jj_list_new(r, JJ_LIST, 0).u.list;
}

BUILTIN(f_map) {
    struct jj_list *items = items_if_true(r, at, self);
    struct jj_value out = jj_list_new(r, JJ_LIST, items->n);
    const struct jj_value *attribute = args->n_pos ? NULL : jj_arg(args, SIZE_MAX, "attribute");
    const struct jj_value *def = jj_arg(args, SIZE_MAX, "default");
    for (size_t i = 0; i < items->n; i++) {
        if (attribute) {
            struct jj_value v = attr_path(r, at, &items->items[i], attribute);
            out.u.list->items[i] = v.kind == JJ_UNDEF && def ? *def : v;
        } else {
            if (!args->n_pos) jj_error(r, at, "map requires a filter name or attribute=");
            struct jj_args rest = shift_args(args, 1);
            out.u.list->items[i] = jj_call_filter(r, at, filter_name_arg(r, at, &args->pos[0]), items->items[i], &rest);
        }
    }
    return out;
}

static struct jj_value select_common(struct jj_render *r, const struct jj_node *at, const struct jj_value *self,
                                     const struct jj_args *args, bool by_attr, bool keep) {
    struct jj_list *items = items_if_true(r, at, self);
    struct jj_value out = jj_list_new(r, JJ_LIST, items->n);
    size_t k = 0, skip = by_attr ? 1 : 0;
    if (by_attr && !args->n_pos) jj_error(r, at, "selectattr / rejectattr need an attribute name");
    const char *test = args->n_pos > skip ? filter_name_arg(r, at, &args->pos[skip]) : NULL;
    struct jj_args rest = only_pos(args, skip + 1);
    for (size_t i = 0; i < items->n; i++) {
        struct jj_value v = by_attr ? attr_path(r, at, &items->items[i], &args->pos[0]) : items->items[i];
        bool hit = test ? jj_call_test(r, at, test, &v, &rest) : jj_truthy(&v);
        if (hit == keep) out.u.list->items[k++] = items->items[i];
    }
    out.u.list->n = k;
    return out;
}

BUILTIN(f_select) { return select_common(r, at, self, args, false, true); }
BUILTIN(f_reject) { return select_common(r, at, self, args, false, false); }
BUILTIN(f_selectattr) { return select_common(r, at, self, args, true, true); }
BUILTIN(f_rejectattr) { return select_common(r, at, self, args, true, false); }

BUILTIN(f_length) { return jj_int(jj_length(r, at, self)); }

BUILTIN(f_default) {
    const struct jj_value *d = jj_arg(args, 0, "default_value");
    bool boolean = opt_bool(args, 1, "boolean", false);
    if (self->kind == JJ_UNDEF || (boolean && !jj_truthy(self))) return d ? *d : jj_str("", 0);
    return *self;
}

BUILTIN(f_string) { return jj_to_str(r, self); }

BUILTIN(f_trim) {
    struct jj_value s = jj_to_str(r, self);
    const struct jj_value *chars = jj_arg(args, 0, "chars");
    struct jj_value out = strip(r, at, &s, chars && chars->kind == JJ_STR ? chars : NULL, true, true);
    out.safe = s.safe;
    return out;
}

/* str(value) in another case; a Markup string stays Markup. */
static struct jj_value case_filter(struct jj_render *r, const struct jj_value *self, enum case_mode mode) {
    struct jj_value s = jj_to_str(r, self), out = change_case(r, &s, mode);
    out.safe = s.safe;
    return out;
}

BUILTIN(f_upper) { return case_filter(r, self, CASE_UPPER); }
BUILTIN(f_lower) { return case_filter(r, self, CASE_LOWER); }
BUILTIN(f_title) { return case_filter(r, self, CASE_JINJA_TITLE); }
BUILTIN(f_capitalize) { return case_filter(r, self, CASE_CAPITALIZE); }

BUILTIN(f_replace) {
    struct jj_value s = jj_to_str(r, self);
    const struct jj_value *old = jj_arg(args, 0, "old"), *new = jj_arg(args, 1, "new"), *c = jj_arg(args, 2, "count");
    if (!old || !new) jj_error(r, at, "replace needs old and new");
    struct jj_value o = jj_to_str(r, old), nw = jj_to_str(r, new);
    return replace_str(r, &s, &o, &nw, c && c->kind != JJ_NONE ? want_int(r, at, c, "count") : -1);
}

BUILTIN(f_safe) {
    struct jj_value v = jj_to_str(r, self);
    v.safe = true;
    return v;
}

BUILTIN(f_escape) { return jj_escape(r, self); }

BUILTIN(f_forceescape) {
    struct jj_value plain = jj_to_str(r, self);
    plain.safe = false;
    return jj_escape(r, &plain);
}

BUILTIN(f_tojson) {
    struct jj_json_opts o = {.ensure_ascii = opt_bool(args, 0, "ensure_ascii", false),
                             .indent = -1,
                             .sort_keys = opt_bool(args, 3, "sort_keys", false)};
    const struct jj_value *indent = jj_arg(args, 1, "indent");
    if (indent && indent->kind != JJ_NONE) {
        int64_t k = want_int(r, at, indent, "tojson indent");
        o.indent = k < 0 ? 0 : k > 64 ? 64 : (int)k;
    }
    const struct jj_value *seps = jj_arg(args, 2, "separators");
    if (seps && seps->kind != JJ_NONE) {
        if ((seps->kind != JJ_TUPLE && seps->kind != JJ_LIST) || seps->u.list->n != 2 ||
            seps->u.list->items[0].kind != JJ_STR || seps->u.list->items[1].kind != JJ_STR)
            jj_error(r, at, "tojson separators must be two strings");
        o.item_sep = jj_strdup(&r->arena, seps->u.list->items[0].u.s.p, seps->u.list->items[0].u.s.n);
        o.key_sep = jj_strdup(&r->arena, seps->u.list->items[1].u.s.p, seps->u.list->items[1].u.s.n);
    }
    struct jj_buf b = {0};
    jj_write_json(r, at, &b, self, &o, 0);
    return jj_str_buf(&b);
}

BUILTIN(f_join) {
    const struct jj_value *sep = jj_arg(args, 0, "d"), *attribute = jj_arg(args, 1, "attribute");
    struct jj_value sv = sep ? jj_to_str(r, sep) : jj_str("", 0);
    struct jj_list *items = jj_iterate(r, at, self);
    jj_charge_items(r, at, items->n); /* the items may all be empty */
    struct jj_buf b = {0};
    for (size_t i = 0; i < items->n; i++) {
        if (i) jj_buf_put(r, &b, sv.u.s.p, sv.u.s.n);
        struct jj_value v = attribute ? attr_path(r, at, &items->items[i], attribute) : items->items[i];
        jj_write_str(r, &b, &v);
    }
    return jj_str_buf(&b);
}

BUILTIN(f_items) {
    if (self->kind == JJ_UNDEF) return jj_list_new(r, JJ_LIST, 0);
    if (self->kind != JJ_DICT && self->kind != JJ_NAMESPACE) jj_error(r, at, "Can only get item pairs from a mapping.");
    return dict_items(r, self->u.dict);
}

BUILTIN(f_list) { return (struct jj_value){.kind = JJ_LIST, .u.list = jj_iterate(r, at, self)}; }

BUILTIN(f_first) {
    struct jj_list *items = jj_iterate(r, at, self);
    return items->n ? items->items[0] : jj_undef(r, "No first item, sequence was empty.");
}

BUILTIN(f_last) {
    struct jj_list *items = jj_iterate(r, at, self);
    return items->n ? items->items[items->n - 1] : jj_undef(r, "No last item, sequence was empty.");
}

BUILTIN(f_reverse) {
    if (self->kind == JJ_STR) {
        struct jj_list *chars = jj_iterate(r, at, self);
        struct jj_buf b = {0};
        for (size_t i = chars->n; i > 0; i--) jj_buf_put(r, &b, chars->items[i - 1].u.s.p, chars->items[i - 1].u.s.n);
        return jj_str_buf(&b);
    }
    struct jj_list *items = jj_iterate(r, at, self);
    struct jj_value out = jj_list_new(r, JJ_LIST, items->n);
    for (size_t i = 0; i < items->n; i++) out.u.list->items[i] = items->items[items->n - 1 - i];
    return out;
}

BUILTIN(f_sort) {
    return sorted(r, at, jj_iterate(r, at, self), opt_bool(args, 0, "reverse", false),
                  opt_bool(args, 1, "case_sensitive", false), jj_arg(args, 2, "attribute"));
}

BUILTIN(f_dictsort) {
    if (self->kind != JJ_DICT) jj_error(r, at, "You can only sort by either \"key\" or \"value\" of a dict");
    bool cs = opt_bool(args, 0, "case_sensitive", false), rev = opt_bool(args, 2, "reverse", false);
    const struct jj_value *by = jj_arg(args, 1, "by");
    struct jj_value pos = jj_int(by && by->kind == JJ_STR && by->u.s.n == 5 && memcmp(by->u.s.p, "value", 5) == 0);
    struct jj_value items = dict_items(r, self->u.dict);
    return sorted(r, at, items.u.list, rev, cs, &pos);
}

BUILTIN(f_unique) {
    bool cs = opt_bool(args, 0, "case_sensitive", false);
    const struct jj_value *attribute = jj_arg(args, 1, "attribute");
    struct jj_list *items = jj_iterate(r, at, self);
    struct jj_value out = jj_list_new(r, JJ_LIST, items->n);
    struct jj_value *seen = jj_alloc(&r->arena, (items->n + 1) * sizeof *seen);
    size_t k = 0;
    struct sort_ctx c = {r, at, cs, false};
    for (size_t i = 0; i < items->n; i++) {
        struct jj_value key = attribute ? attr_path(r, at, &items->items[i], attribute) : items->items[i];
        key = sort_key(&c, &key);
        bool dup = false;
        for (size_t j = 0; j < k && !dup; j++) dup = jj_equal(r, at, &seen[j], &key);
        if (dup) continue;
        seen[k] = key;
        out.u.list->items[k++] = items->items[i];
    }
    out.u.list->n = k;
    return out;
}

static struct jj_value min_max(struct jj_render *r, const struct jj_node *at, const struct jj_value *self,
                               const struct jj_args *args, bool want_max) {
    struct jj_list *items = jj_iterate(r, at, self);
    if (!items->n) return jj_undef(r, "No aggregated item, sequence was empty.");
    struct sort_ctx c = {r, at, opt_bool(args, 0, "case_sensitive", false), false};
    const struct jj_value *attribute = jj_arg(args, 1, "attribute");
    size_t best = 0;
    struct jj_value best_key = {0};
    for (size_t i = 0; i < items->n; i++) {
        struct jj_value k = attribute ? attr_path(r, at, &items->items[i], attribute) : items->items[i];
        k = sort_key(&c, &k);
        if (i == 0 || (jj_compare(r, at, &k, &best_key) > 0) == want_max) {
            if (i == 0 || !jj_equal(r, at, &k, &best_key)) {
                best = i;
                best_key = k;
            }
        }
    }
    return items->items[best];
}

BUILTIN(f_min) { return min_max(r, at, self, args, false); }
BUILTIN(f_max) { return min_max(r, at, self, args, true); }

BUILTIN(f_sum) {
    const struct jj_value *attribute = jj_arg(args, 0, "attribute"), *start = jj_arg(args, 1, "start");
    struct jj_value acc = start ? *start : jj_int(0);
    struct jj_list *items = jj_iterate(r, at, self);
    jj_charge_items(r, at, items->n);
    for (size_t i = 0; i < items->n; i++) {
        struct jj_value v = attribute ? attr_path(r, at, &items->items[i], attribute) : items->items[i];
        if (!jj_is_number(&acc) || !jj_is_number(&v)) jj_error(r, at, "sum of non-numbers");
        if (acc.kind == JJ_FLOAT || v.kind == JJ_FLOAT)
            acc = jj_float(jj_as_double(&acc) + jj_as_double(&v));
        else if (__builtin_add_overflow(acc.kind == JJ_INT ? acc.u.i : acc.u.b, v.kind == JJ_INT ? v.u.i : v.u.b,
                                        &acc.u.i))
            jj_error(r, at, "integer overflow");
        else
            acc.kind = JJ_INT;
    }
    return acc;
}

BUILTIN(f_abs) {
    if (self->kind == JJ_FLOAT) return jj_float(fabs(self->u.f));
    if (self->kind == JJ_INT && self->u.i != INT64_MIN) return jj_int(self->u.i < 0 ? -self->u.i : self->u.i);
    if (self->kind == JJ_BOOL) return jj_int(self->u.b);
    jj_error(r, at, "bad operand type for abs(): '%s'", jj_type_name(self));
}

BUILTIN(f_round) {
    const struct jj_value *pv = jj_arg(args, 0, "precision"), *mv = jj_arg(args, 1, "method");
    int64_t prec = pv ? want_int(r, at, pv, "precision") : 0;
    if (!jj_is_number(self)) jj_error(r, at, "round of a %s", jj_type_name(self));
    double x = jj_as_double(self), scale = pow(10.0, (double)prec);
    size_t mn = 6;
    const char *method = mv ? want_str(r, at, mv, &mn, "method") : "common";
    if (mn == 4 && memcmp(method, "ceil", 4) == 0) return jj_float(ceil(x * scale) / scale);
    if (mn == 5 && memcmp(method, "floor", 5) == 0) return jj_float(floor(x * scale) / scale);
    if (self->kind != JJ_FLOAT && prec >= 0)
        return jj_int(self->kind == JJ_INT ? self->u.i : self->u.b); /* round(int) is an int */
    if (prec >= 0 && isfinite(x)) {
        /* Python rounds the exact binary value, ties to even: what
         * printf's exact decimal conversion does (round(2.675, 2) is 2.67) */
        char buf[720]; /* 309 integer digits of DBL_MAX, the point, 340 decimals */
        snprintf(buf, sizeof buf, "%.*f", (int)(prec > 340 ? 340 : prec), x);
        return jj_float(strtod(buf, NULL));
    }
    return jj_float(nearbyint(x * scale) / scale);
}

BUILTIN(f_int) {
    const struct jj_value *dv = jj_arg(args, 0, "default");
    struct jj_value def = dv ? *dv : jj_int(0);
    switch (self->kind) {
    case JJ_INT: return *self;
    case JJ_BOOL: return jj_int(self->u.b);
    case JJ_FLOAT: return isfinite(self->u.f) && fabs(self->u.f) < 9.2e18 ? jj_int((int64_t)self->u.f) : def;
    case JJ_STR: {
        char tmp[64];
        struct jj_value s = strip(r, at, self, NULL, true, true);
        if (s.u.s.n == 0 || s.u.s.n >= sizeof tmp) return def;
        memcpy(tmp, s.u.s.p, s.u.s.n);
        tmp[s.u.s.n] = 0;
        char *end;
        long long v = strtoll(tmp, &end, 10);
        if (*end == 0) return jj_int(v);
        double d = strtod(tmp, &end);
        if (*end == 0 && isfinite(d) && fabs(d) < 9.2e18) return jj_int((int64_t)d);
        return def;
    }
    default: (void)r, (void)at; return def;
    }
}

BUILTIN(f_float) {
    const struct jj_value *dv = jj_arg(args, 0, "default");
    struct jj_value def = dv ? *dv : jj_float(0);
    if (jj_is_number(self)) return jj_float(jj_as_double(self));
    if (self->kind == JJ_STR) {
        char tmp[64];
        struct jj_value s = strip(r, at, self, NULL, true, true);
        if (s.u.s.n == 0 || s.u.s.n >= sizeof tmp) return def;
        memcpy(tmp, s.u.s.p, s.u.s.n);
        tmp[s.u.s.n] = 0;
        char *end;
        double d = strtod(tmp, &end);
        return *end == 0 ? jj_float(d) : def;
    }
    return def;
}

/* Jinja 3.1's indent: lines after the first (and the first with first=)
 * get the indent; blank lines only with blank=. */
BUILTIN(f_indent) {
    const struct jj_value *wv = jj_arg(args, 0, "width");
    bool first = opt_bool(args, 1, "first", false), blank = opt_bool(args, 2, "blank", false);
    struct jj_value ind;
    if (wv && wv->kind == JJ_STR) {
        ind = *wv;
    } else {
        int64_t w = wv ? want_int(r, at, wv, "indent width") : 4;
        if (w < 0) w = 0;
        if (w > 256) w = 256;
        char *sp = jj_alloc(&r->arena, (size_t)w + 1);
        memset(sp, ' ', (size_t)w);
        ind = jj_str(sp, (size_t)w);
    }
    struct jj_value s = jj_to_str(r, self);
    struct jj_buf withnl = {0};
    jj_buf_put(r, &withnl, s.u.s.p, s.u.s.n);
    jj_buf_putc(r, &withnl, '\n');
    struct jj_value sn = jj_str_buf(&withnl);
    struct jj_list *lines = splitlines(r, at, &sn).u.list;
    struct jj_buf b = {0};
    if (first) jj_buf_put(r, &b, ind.u.s.p, ind.u.s.n);
    for (size_t i = 0; i < lines->n; i++) {
        const struct jj_value *l = &lines->items[i];
        if (i) {
            jj_buf_putc(r, &b, '\n');
            if (blank || l->u.s.n) jj_buf_put(r, &b, ind.u.s.p, ind.u.s.n);
        }
        jj_buf_put(r, &b, l->u.s.p, l->u.s.n);
    }
    struct jj_value res = jj_str_buf(&b);
    res.safe = s.safe;
    return res;
}

BUILTIN(f_attr) {
    const struct jj_value *name = jj_arg(args, 0, NULL);
    size_t n;
    const char *s = want_str(r, at, name, &n, "attr name");
    /* Python getattr only: a dict's keys are not its attributes */
    struct jj_value m;
    jj_require_defined(r, at, self);
    if (jj_method(r, self, s, n, &m)) return m;
    return jj_undef(r, "'%s' has no attribute '%.*s'", jj_object_repr(self), (int)(n > 100 ? 100 : n), s);
}

/* len(re.findall(r"\w+", s)) with Unicode word characters (PCRE2). */
static pcre2_code *word_re;
static pthread_once_t word_once = PTHREAD_ONCE_INIT;

static void word_init(void) {
    int e;
    PCRE2_SIZE off;
    word_re = pcre2_compile((PCRE2_SPTR) "\\w+", PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &e, &off, NULL);
}

BUILTIN(f_wordcount) {
    struct jj_value s = jj_to_str(r, self);
    jj_charge(r, at, s.u.s.n);
    /* PCRE2 checks the UTF-8 of the subject from the start offset to its
     * end on every call: once per word made this O(len(s) * words). The
     * string is checked once here instead; an invalid one has no words,
     * as PCRE2's refusal of it always gave. */
    if (herd_utf8_valid_prefix(s.u.s.p, s.u.s.n) != s.u.s.n) return jj_int(0);
    pthread_once(&word_once, word_init);
    pcre2_match_data *md = word_re ? pcre2_match_data_create(1, NULL) : NULL;
    if (!md) jj_error(r, at, "wordcount: out of memory");
    int64_t words = 0;
    for (PCRE2_SIZE at_byte = 0; at_byte <= s.u.s.n;) {
        if (pcre2_match(word_re, (PCRE2_SPTR)s.u.s.p, s.u.s.n, at_byte, PCRE2_NO_UTF_CHECK, md, NULL) < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        words++;
        at_byte = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
    }
    pcre2_match_data_free(md);
    jj_charge_items(r, at, (size_t)words); /* a match each; charged once md is freed, as charging may not return */
    return jj_int(words);
}

static const struct jj_builtin filters[] = {
    {"abs", f_abs},
    {"attr", f_attr},
    {"capitalize", f_capitalize},
    {"count", f_length},
    {"d", f_default},
    {"default", f_default},
    {"dictsort", f_dictsort},
    {"e", f_escape},
    {"escape", f_escape},
    {"first", f_first},
    {"float", f_float},
    {"forceescape", f_forceescape},
    {"indent", f_indent},
    {"int", f_int},
    {"items", f_items},
    {"join", f_join},
    {"last", f_last},
    {"length", f_length},
    {"list", f_list},
    {"lower", f_lower},
    {"map", f_map},
    {"max", f_max},
    {"min", f_min},
    {"reject", f_reject},
    {"rejectattr", f_rejectattr},
    {"replace", f_replace},
    {"reverse", f_reverse},
    {"round", f_round},
    {"safe", f_safe},
    {"select", f_select},
    {"selectattr", f_selectattr},
    {"sort", f_sort},
    {"string", f_string},
    {"sum", f_sum},
    {"title", f_title},
    {"tojson", f_tojson},
    {"trim", f_trim},
    {"unique", f_unique},
    {"upper", f_upper},
    {"wordcount", f_wordcount},
    {NULL, NULL},
};

struct jj_value jj_call_filter(struct jj_render *r, const struct jj_node *at, const char *name, struct jj_value v,
                               const struct jj_args *args) {
    for (const struct jj_builtin *f = filters; f->name; f++)
        if (strcmp(f->name, name) == 0) {
            /* filters other than default see an undefined value as Jinja's
             * Undefined does: most treat it as empty, arithmetic fails */
            return f->fn(r, at, &v, args);
        }
    jj_error(r, at, "No filter named '%s'.", name);
}

/* --------------------------------------------------------------- tests */

static bool test_arg_cmp(struct jj_render *r, const struct jj_node *at, const struct jj_value *v,
                         const struct jj_args *args, int want) {
    const struct jj_value *o = jj_arg(args, 0, NULL);
    if (!o) jj_error(r, at, "the comparison test needs an argument");
    int c = jj_compare(r, at, v, o);
    switch (want) {
    case 0: return c < 0;
    case 1: return c <= 0;
    case 2: return c > 0;
    default: return c >= 0;
    }
}

bool jj_call_test(struct jj_render *r, const struct jj_node *at, const char *name, const struct jj_value *v,
                  const struct jj_args *args) {
#define IS(s) (strcmp(name, s) == 0)
    enum jj_kind k = v->kind;
    if (IS("defined")) return k != JJ_UNDEF;
    if (IS("undefined")) return k == JJ_UNDEF;
    if (IS("none")) return k == JJ_NONE;
    if (IS("boolean")) return k == JJ_BOOL;
    if (IS("true")) return k == JJ_BOOL && v->u.b;
    if (IS("false")) return k == JJ_BOOL && !v->u.b;
    if (IS("integer")) return k == JJ_INT;
    if (IS("float")) return k == JJ_FLOAT;
    if (IS("number")) return jj_is_number(v);
    if (IS("string")) return k == JJ_STR;
    if (IS("mapping")) return k == JJ_DICT;
    if (IS("iterable")) return k == JJ_STR || k == JJ_LIST || k == JJ_TUPLE || k == JJ_DICT || k == JJ_UNDEF;
    if (IS("sequence")) return k == JJ_STR || k == JJ_LIST || k == JJ_TUPLE || k == JJ_DICT || k == JJ_UNDEF;
    if (IS("callable")) return k == JJ_MACRO || k == JJ_BUILTIN;
    if (IS("escaped")) return false;
    if (IS("eq") || IS("equalto") || IS("==") || IS("sameas")) {
        const struct jj_value *o = jj_arg(args, 0, NULL);
        if (!o) jj_error(r, at, "test '%s' needs an argument", name);
        if (IS("sameas") && (k == JJ_LIST || k == JJ_DICT || k == JJ_TUPLE))
            return k == o->kind && v->u.list == o->u.list;
        return IS("sameas") && (k == JJ_BOOL || k == JJ_NONE) ? k == o->kind && jj_equal(r, at, v, o)
                                                              : jj_equal(r, at, v, o);
    }
    if (IS("ne") || IS("!=")) {
        const struct jj_value *o = jj_arg(args, 0, NULL);
        if (!o) jj_error(r, at, "test '%s' needs an argument", name);
        return !jj_equal(r, at, v, o);
    }
    if (IS("lt") || IS("lessthan") || IS("<")) return test_arg_cmp(r, at, v, args, 0);
    if (IS("le") || IS("<=")) return test_arg_cmp(r, at, v, args, 1);
    if (IS("gt") || IS("greaterthan") || IS(">")) return test_arg_cmp(r, at, v, args, 2);
    if (IS("ge") || IS(">=")) return test_arg_cmp(r, at, v, args, 3);
    if (IS("in")) {
        const struct jj_value *o = jj_arg(args, 0, NULL);
        if (!o) jj_error(r, at, "test 'in' needs an argument");
        if (o->kind == JJ_STR) {
            if (v->kind != JJ_STR) return false;
            jj_charge(r, at, o->u.s.n + v->u.s.n);
            return v->u.s.n == 0 || memmem(o->u.s.p, o->u.s.n, v->u.s.p, v->u.s.n);
        }
        if (o->kind == JJ_DICT) return jj_dict_get(r, at, o->u.dict, *v) != NULL;
        struct jj_list *items = jj_iterate(r, at, o);
        for (size_t i = 0; i < items->n; i++)
            if (jj_equal(r, at, v, &items->items[i])) return true;
        return false;
    }
    if (IS("odd") || IS("even") || IS("divisibleby")) {
        jj_require_defined(r, at, v);
        if (k != JJ_INT && k != JJ_BOOL) jj_error(r, at, "test '%s' needs an integer", name);
        int64_t x = k == JJ_INT ? v->u.i : v->u.b;
        if (IS("odd")) return x % 2 != 0;
        if (IS("even")) return x % 2 == 0;
        int64_t d = want_int(r, at, jj_arg(args, 0, "num"), "divisibleby argument");
        if (d == 0) jj_error(r, at, "integer division or modulo by zero");
        return d == -1 || x % d == 0;
    }
    if (IS("lower") || IS("upper")) {
        if (k != JJ_STR) return false;
        struct jj_value c = change_case(r, v, IS("lower") ? CASE_LOWER : CASE_UPPER);
        return jj_equal(r, at, &c, v);
    }
    if (IS("filter") || IS("test")) {
        if (k != JJ_STR) return false;
        char tmp[32];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(v->u.s.n < 31 ? v->u.s.n : 31), v->u.s.p);
        if (IS("filter")) {
            for (const struct jj_builtin *f = filters; f->name; f++)
                if (strcmp(f->name, tmp) == 0) return true;
            return false;
        }
        static const char *const tests[] = {"defined",     "undefined", "none",    "boolean", "true",    "false",
                                            "integer",     "float",     "number",  "string",  "mapping", "iterable",
                                            "sequence",    "callable",  "escaped", "eq",      "ne",      "lt",
                                            "le",          "gt",        "ge",      "in",      "odd",     "even",
                                            "divisibleby", "lower",     "upper",   "sameas",  NULL};
        for (size_t i = 0; tests[i]; i++)
            if (strcmp(tests[i], tmp) == 0) return true;
        return false;
    }
#undef IS
    jj_error(r, at, "No test named '%s'.", name);
}

/* -------------------------------------------------------------- globals */

BUILTIN(g_range) {
    int64_t a = 0, b, s = 1;
    if (args->n_pos == 1) {
        b = want_int(r, at, &args->pos[0], "range() argument");
    } else if (args->n_pos == 2 || args->n_pos == 3) {
        a = want_int(r, at, &args->pos[0], "range() argument");
        b = want_int(r, at, &args->pos[1], "range() argument");
        if (args->n_pos == 3) s = want_int(r, at, &args->pos[2], "range() argument");
    } else {
        jj_error(r, at, "range expected 1 to 3 arguments, got %zu", args->n_pos);
    }
    if (s == 0) jj_error(r, at, "range() arg 3 must not be zero");
    /* the distance and the step's size in unsigned arithmetic: b - a and
     * -s do not fit in int64_t for range(-2**63 + 1, 2**63 - 1) or a step
     * of -2**63 */
    uint64_t span = 0, step = s > 0 ? (uint64_t)s : (uint64_t)(-(s + 1)) + 1;
    if (s > 0 ? b > a : a > b) __builtin_sub_overflow(s > 0 ? b : a, s > 0 ? a : b, &span);
    uint64_t n = span ? (span - 1) / step + 1 : 0;
    /* the bound Jinja's sandbox puts on range() */
    if (n > 100000) jj_error(r, at, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    struct jj_value l = jj_list_new(r, JJ_LIST, (size_t)n);
    int64_t v = a;
    for (uint64_t i = 0; i < n; i++) {
        l.u.list->items[i] = jj_int(v);
        if (i + 1 < n) v += s; /* stays between a and b; one step more might not */
    }
    return l;
}

static struct jj_value make_mapping(struct jj_render *r, const struct jj_node *at, const struct jj_args *args,
                                    enum jj_kind kind) {
    struct jj_value d = jj_dict_new(r, kind);
    for (size_t i = 0; i < args->n_pos; i++) {
        const struct jj_value *m = &args->pos[i];
        if (m->kind != JJ_DICT && m->kind != JJ_NAMESPACE)
            jj_error(r, at, "expected a mapping, got %s", jj_type_name(m));
        for (size_t k = 0; k < m->u.dict->n; k++) jj_dict_set(r, at, d.u.dict, m->u.dict->keys[k], m->u.dict->vals[k]);
    }
    for (size_t k = 0; k < args->n_kw; k++)
        jj_dict_set(r, at, d.u.dict, jj_str(args->kw_names[k], strlen(args->kw_names[k])), args->kw[k]);
    return d;
}

BUILTIN(g_namespace) { return make_mapping(r, at, args, JJ_NAMESPACE); }

BUILTIN(g_dict) { return make_mapping(r, at, args, JJ_DICT); }

BUILTIN(g_raise_exception) {
    const struct jj_value *m = jj_arg(args, 0, "message");
    struct jj_value s = m ? jj_to_str(r, m) : jj_str("", 0);
    jj_error(r, at, "%.*s", (int)(s.u.s.n > 400 ? 400 : s.u.s.n), s.u.s.p);
}

BUILTIN(g_strftime_now) {
    size_t n;
    const char *fmt = want_str(r, at, jj_arg(args, 0, "format"), &n, "strftime_now format");
    if (n > 200) jj_error(r, at, "strftime_now format longer than 200 bytes");
    char f[256], out[1024];
    memcpy(f, fmt, n);
    f[n] = 0;
    struct tm tm;
    gmtime_r(&r->now, &tm);
    pthread_once(&c_utf8_once, c_utf8_init); /* month and day names in C's spelling whatever the locale */
    size_t len = c_utf8 ? strftime_l(out, sizeof out, f, &tm, c_utf8) : strftime(out, sizeof out, f, &tm);
    return jj_str_copy(r, out, len);
}

static const struct jj_builtin globals[] = {
    {"range", g_range},
    {"namespace", g_namespace},
    {"dict", g_dict},
    {"raise_exception", g_raise_exception},
    {"strftime_now", g_strftime_now},
    {NULL, NULL},
};

const struct jj_builtin *jj_global(const char *name) {
    for (const struct jj_builtin *g = globals; g->name; g++)
        if (strcmp(g->name, name) == 0) return g;
    return NULL;
}
