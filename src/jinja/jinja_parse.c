/* Jinja template source -> syntax tree.
 *
 * The lexer follows Jinja2's with the options Hugging Face renders chat
 * templates with. Source newlines are normalised to "\n" and one trailing
 * newline is dropped (keep_trailing_newline off). Text is cut at "{{",
 * "{%" and "{#". A "-" after the opening delimiter strips all whitespace
 * before the tag, a "-" before the closing one all whitespace after it.
 * trim_blocks: the first newline after a block or comment tag goes.
 * lstrip_blocks: spaces and tabs from the start of a line up to a block or
 * comment tag go (not before "{{", and not after "{%+").
 *
 * The parser is recursive descent over the whole token array with Jinja2's
 * precedence: conditional < or < and < not < comparisons < + - < ~ <
 * * / // % < ** < unary -/+ < postfix (. [] ()) and filters / tests. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "jinja/jinja_internal.h"

/* Deeper nesting than this in one template is refused: real templates
 * nest a handful of levels, and the parser recurses once per level. */
#define JJ_MAX_PARSE_DEPTH 200

enum tok_type {
    T_TEXT,
    T_VAR_BEGIN,
    T_VAR_END,
    T_BLOCK_BEGIN,
    T_BLOCK_END,
    T_NAME,
    T_STRING,
    T_INT,
    T_FLOAT,
    T_OP,
    T_EOF
};

struct tok {
    enum tok_type type;
    uint32_t line, col;
    const char *p; /* text, name, operator or decoded string */
    size_t n;
    int64_t i;
    double f;
};

struct lexer {
    struct jj_arena *arena;
    struct jj_fail *fail;
    const char *s;
    size_t n, pos;
    uint32_t line, col;
    struct tok *toks;
    size_t n_toks, cap_toks;
};

struct parser {
    struct jj_arena *arena;
    struct jj_fail *fail;
    struct tok *toks;
    size_t i;
    unsigned depth;
};

/* -------------------------------------------------------------- lexing */

static void advance_to(struct lexer *lx, size_t to) {
    for (; lx->pos < to; lx->pos++) {
        unsigned char c = (unsigned char)lx->s[lx->pos];
        if (c == '\n') {
            lx->line++;
            lx->col = 1;
        } else if ((c & 0xC0) != 0x80) {
            lx->col++;
        }
    }
}

static struct tok *push(struct lexer *lx, enum tok_type type, const char *p, size_t n) {
    if (lx->n_toks == lx->cap_toks) {
        size_t cap = lx->cap_toks ? lx->cap_toks * 2 : 256;
        struct tok *t = jj_alloc(lx->arena, cap * sizeof *t);
        if (lx->n_toks) memcpy(t, lx->toks, lx->n_toks * sizeof *t);
        lx->toks = t;
        lx->cap_toks = cap;
    }
    struct tok *t = &lx->toks[lx->n_toks++];
    *t = (struct tok){.type = type, .line = lx->line, .col = lx->col, .p = p, .n = n};
    return t;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static _Noreturn void lex_fail(struct lexer *lx, const char *msg) {
    jj_fail_at(lx->fail, HERD_E_FORMAT, lx->line, lx->col, "%s", msg);
}

static int hex_val(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A quoted string with Python's escapes (Jinja2 decodes literals with
 * "unicode-escape"); unknown escapes keep their backslash. */
static void lex_string(struct lexer *lx) {
    char q = lx->s[lx->pos];
    size_t start = lx->pos + 1, end = start;
    while (end < lx->n && lx->s[end] != q) end += lx->s[end] == '\\' ? 2 : 1;
    if (end >= lx->n) lex_fail(lx, "unterminated string literal");
    char *out = jj_alloc(lx->arena, end - start + 1);
    size_t n = 0;
    for (size_t i = start; i < end; i++) {
        char c = lx->s[i];
        if (c != '\\') {
            out[n++] = c;
            continue;
        }
        char e = lx->s[++i];
        int digits = 0;
        switch (e) {
        case 'n': out[n++] = '\n'; break;
        case 't': out[n++] = '\t'; break;
        case 'r': out[n++] = '\r'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'v': out[n++] = '\v'; break;
        case 'a': out[n++] = '\a'; break;
        case '\\': out[n++] = '\\'; break;
        case '\'': out[n++] = '\''; break;
        case '"': out[n++] = '"'; break;
        case '\n': break; /* line continuation */
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        default:
            if (e >= '0' && e <= '7') {
                uint32_t cp = 0;
                int k = 0;
                for (; k < 3 && i < end && lx->s[i] >= '0' && lx->s[i] <= '7'; k++, i++)
                    cp = cp * 8 + (uint32_t)(lx->s[i] - '0');
                i--;
                n += herd_utf8_encode(cp, out + n);
            } else {
                out[n++] = '\\';
                out[n++] = e;
            }
        }
        if (digits) {
            uint32_t cp = 0;
            for (int k = 0; k < digits; k++) {
                int h = i + 1 < end ? hex_val(lx->s[i + 1]) : -1;
                if (h < 0) lex_fail(lx, "truncated \\x, \\u or \\U escape in a string literal");
                cp = cp * 16 + (uint32_t)h;
                i++;
            }
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                lex_fail(lx, "escape outside Unicode in a string literal");
            n += herd_utf8_encode(cp, out + n);
        }
    }
    out[n] = 0;
    push(lx, T_STRING, out, n);
    advance_to(lx, end + 1);
}

static void lex_number(struct lexer *lx) {
    size_t i = lx->pos;
    bool is_float = false;
    while (i < lx->n && (is_digit(lx->s[i]) || lx->s[i] == '_')) i++;
    if (i + 1 < lx->n && lx->s[i] == '.' && is_digit(lx->s[i + 1])) {
        is_float = true;
        for (i++; i < lx->n && (is_digit(lx->s[i]) || lx->s[i] == '_');) i++;
    }
    if (i < lx->n && (lx->s[i] == 'e' || lx->s[i] == 'E')) {
        size_t j = i + 1;
        if (j < lx->n && (lx->s[j] == '+' || lx->s[j] == '-')) j++;
        if (j < lx->n && is_digit(lx->s[j])) {
            is_float = true;
            for (i = j; i < lx->n && is_digit(lx->s[i]);) i++;
        }
    }
    char digits[64];
    size_t k = 0;
    for (size_t j = lx->pos; j < i; j++)
        if (lx->s[j] != '_') {
            if (k + 1 >= sizeof digits) lex_fail(lx, "number literal too long");
            digits[k++] = lx->s[j];
        }
    digits[k] = 0;
    struct tok *t = push(lx, is_float ? T_FLOAT : T_INT, lx->s + lx->pos, i - lx->pos);
    errno = 0;
    if (is_float) {
        t->f = strtod(digits, NULL);
    } else {
        t->i = strtoll(digits, NULL, 10);
        if (errno == ERANGE) lex_fail(lx, "integer literal out of range");
    }
    advance_to(lx, i);
}

/* Python's str.rstrip() on the text before a "{%-" tag. */
static size_t rstrip_len(const char *s, size_t n) {
    while (n && is_space(s[n - 1])) n--;
    return n;
}

static void emit_text(struct lexer *lx, size_t from, size_t to) {
    if (to > from) push(lx, T_TEXT, lx->s + from, to - from);
}

/* Lexes the inside of a {{ }} or {% %} tag from lx->pos up to and
 * including its end; returns true if the end consumed a newline. */
static bool lex_tag(struct lexer *lx, bool block) {
    int depth = 0;
    for (;;) {
        while (lx->pos < lx->n && is_space(lx->s[lx->pos])) advance_to(lx, lx->pos + 1);
        if (lx->pos >= lx->n)
            lex_fail(lx,
                     block ? "unexpected end of template: missing '%}'" : "unexpected end of template: missing '}}'");
        const char *c = lx->s + lx->pos;
        size_t left = lx->n - lx->pos;
        if (depth == 0) {
            const char *end = block ? "%}" : "}}";
            size_t skip = 0;
            bool strip_after = false;
            if (left >= 3 && c[0] == '-' && memcmp(c + 1, end, 2) == 0) {
                skip = 3;
                strip_after = true;
            } else if (block && left >= 3 && c[0] == '+' && memcmp(c + 1, end, 2) == 0) {
                skip = 3;
            } else if (left >= 2 && memcmp(c, end, 2) == 0) {
                skip = 2;
            }
            if (skip) {
                push(lx, block ? T_BLOCK_END : T_VAR_END, c, skip);
                size_t to = lx->pos + skip;
                if (strip_after) {
                    while (to < lx->n && is_space(lx->s[to])) to++;
                } else if (block && skip == 2 && to < lx->n && lx->s[to] == '\n') {
                    to++; /* trim_blocks */
                }
                advance_to(lx, to);
                return to > 0 && lx->s[to - 1] == '\n';
            }
        }
        if (is_name_start(*c)) {
            size_t i = lx->pos;
            while (i < lx->n && (is_name_start(lx->s[i]) || is_digit(lx->s[i]))) i++;
            push(lx, T_NAME, c, i - lx->pos);
            advance_to(lx, i);
        } else if (is_digit(*c)) {
            lex_number(lx);
        } else if (*c == '\'' || *c == '"') {
            lex_string(lx);
        } else {
            static const char *const ops2[] = {"**", "//", "==", "!=", "<=", ">="};
            size_t len = 0;
            for (size_t k = 0; k < sizeof ops2 / sizeof *ops2; k++)
                if (left >= 2 && memcmp(c, ops2[k], 2) == 0) len = 2;
            if (!len && strchr("+-*/%~()[]{},.:|=<>", *c)) len = 1;
            if (!len) {
                char msg[64];
                snprintf(msg, sizeof msg, "unexpected character '%c' in a tag", *c);
                lex_fail(lx, msg);
            }
            if (len == 1 && strchr("([{", *c)) depth++;
            if (len == 1 && strchr(")]}", *c)) {
                if (depth == 0) lex_fail(lx, "unbalanced closing bracket");
                depth--;
            }
            push(lx, T_OP, c, len);
            advance_to(lx, lx->pos + len);
        }
    }
}

/* {% raw %}...{% endraw %}: finds the end tag, emits the body as text. */
static bool try_raw(struct lexer *lx, size_t tag) {
    size_t i = tag + 2;
    if (i < lx->n && (lx->s[i] == '-' || lx->s[i] == '+')) i++;
    while (i < lx->n && is_space(lx->s[i])) i++;
    if (lx->n - i < 3 || memcmp(lx->s + i, "raw", 3) != 0) return false;
    i += 3;
    while (i < lx->n && is_space(lx->s[i])) i++;
    bool strip_after = i < lx->n && lx->s[i] == '-';
    if (strip_after || (i < lx->n && lx->s[i] == '+')) i++;
    if (lx->n - i < 2 || memcmp(lx->s + i, "%}", 2) != 0) return false;
    size_t body = i + 2;
    if (strip_after)
        while (body < lx->n && is_space(lx->s[body])) body++;
    else if (body < lx->n && lx->s[body] == '\n')
        body++;
    for (size_t j = body; j + 1 < lx->n; j++) {
        if (lx->s[j] != '{' || lx->s[j + 1] != '%') continue;
        size_t k = j + 2;
        bool strip_before = k < lx->n && lx->s[k] == '-';
        if (k < lx->n && (lx->s[k] == '-' || lx->s[k] == '+')) k++;
        while (k < lx->n && is_space(lx->s[k])) k++;
        if (lx->n - k < 6 || memcmp(lx->s + k, "endraw", 6) != 0) continue;
        k += 6;
        while (k < lx->n && is_space(lx->s[k])) k++;
        bool strip_end = k < lx->n && lx->s[k] == '-';
        if (strip_end || (k < lx->n && lx->s[k] == '+')) k++;
        if (lx->n - k < 2 || memcmp(lx->s + k, "%}", 2) != 0) continue;
        size_t text_end = strip_before ? rstrip_len(lx->s, j) : j;
        if (text_end < body) text_end = body;
        advance_to(lx, body);
        emit_text(lx, body, text_end);
        k += 2;
        if (strip_end)
            while (k < lx->n && is_space(lx->s[k])) k++;
        else if (k < lx->n && lx->s[k] == '\n')
            k++;
        advance_to(lx, k);
        return true;
    }
    advance_to(lx, tag);
    lex_fail(lx, "missing {% endraw %}");
}

static void lex(struct lexer *lx) {
    bool line_starting = true;
    while (lx->pos < lx->n) {
        const char *s = lx->s;
        size_t tag = lx->pos;
        while (tag + 1 < lx->n && !(s[tag] == '{' && (s[tag + 1] == '{' || s[tag + 1] == '%' || s[tag + 1] == '#')))
            tag++;
        if (tag + 1 >= lx->n) {
            emit_text(lx, lx->pos, lx->n);
            advance_to(lx, lx->n);
            break;
        }
        char kind = s[tag + 1];
        char sign = tag + 2 < lx->n ? s[tag + 2] : 0;
        size_t text_end = tag;
        if (sign == '-') {
            text_end = lx->pos + rstrip_len(s + lx->pos, tag - lx->pos);
        } else if (sign != '+' && kind != '{') {
            size_t l_pos = tag;
            while (l_pos > lx->pos && s[l_pos - 1] != '\n') l_pos--;
            /* Jinja2: a newline in the text, or the text starts a line */
            if ((l_pos > lx->pos || line_starting) && tag > l_pos) {
                bool blank = true;
                for (size_t k = l_pos; k < tag; k++) blank = blank && is_space(s[k]);
                if (blank) text_end = l_pos;
            }
        }
        emit_text(lx, lx->pos, text_end);
        if (kind == '%' && try_raw(lx, tag)) {
            line_starting = lx->pos > 0 && s[lx->pos - 1] == '\n';
            continue;
        }
        advance_to(lx, tag);
        size_t open = 2 + (sign == '-' || sign == '+');
        if (kind == '#') {
            size_t e = tag + open;
            while (e + 1 < lx->n && !(s[e] == '#' && s[e + 1] == '}')) e++;
            if (e + 1 >= lx->n) lex_fail(lx, "missing end of comment tag '#}'");
            size_t to = e + 2;
            if (e > tag + open - 1 && s[e - 1] == '-' && e - 1 >= tag + open) {
                while (to < lx->n && is_space(s[to])) to++;
            } else if (to < lx->n && s[to] == '\n') {
                to++;
            }
            advance_to(lx, to);
            line_starting = s[to - 1] == '\n';
            continue;
        }
        push(lx, kind == '%' ? T_BLOCK_BEGIN : T_VAR_BEGIN, s + tag, open);
        advance_to(lx, tag + open);
        line_starting = lex_tag(lx, kind == '%');
    }
    push(lx, T_EOF, "", 0);
}

/* ------------------------------------------------------------- parsing */

static const struct tok *cur(const struct parser *ps) { return &ps->toks[ps->i]; }

static _Noreturn void parse_fail(struct parser *ps, const char *fmt, const char *arg) {
    const struct tok *t = cur(ps);
    jj_fail_at(ps->fail, HERD_E_FORMAT, t->line, t->col, fmt, arg);
}

static const char *tok_desc(struct parser *ps, const struct tok *t) {
    static const char *const names[] = {"text",   "'{{'",    "'}}'",  "'{%'",     "'%}'",           "name",
                                        "string", "integer", "float", "operator", "end of template"};
    if (t->type == T_NAME || t->type == T_OP) {
        char *s = jj_alloc(ps->arena, t->n + 3);
        s[0] = '\'';
        memcpy(s + 1, t->p, t->n);
        s[t->n + 1] = '\'';
        s[t->n + 2] = 0;
        return s;
    }
    return names[t->type];
}

static bool is_op(const struct parser *ps, const char *op) {
    const struct tok *t = cur(ps);
    return t->type == T_OP && t->n == strlen(op) && memcmp(t->p, op, t->n) == 0;
}

static bool is_name(const struct parser *ps, const char *name) {
    const struct tok *t = cur(ps);
    return t->type == T_NAME && t->n == strlen(name) && memcmp(t->p, name, t->n) == 0;
}

static bool accept_op(struct parser *ps, const char *op) {
    if (!is_op(ps, op)) return false;
    ps->i++;
    return true;
}

static void expect_op(struct parser *ps, const char *op) {
    if (accept_op(ps, op)) return;
    const struct tok *t = cur(ps);
    jj_fail_at(ps->fail, HERD_E_FORMAT, t->line, t->col, "expected '%s', found %s", op, tok_desc(ps, t));
}

static void expect_type(struct parser *ps, enum tok_type type, const char *what) {
    const struct tok *t = cur(ps);
    if (t->type != type)
        jj_fail_at(ps->fail, HERD_E_FORMAT, t->line, t->col, "expected %s, found %s", what, tok_desc(ps, t));
    ps->i++;
}

static const char *take_name(struct parser *ps) {
    const struct tok *t = cur(ps);
    if (t->type != T_NAME)
        jj_fail_at(ps->fail, HERD_E_FORMAT, t->line, t->col, "expected a name, found %s", tok_desc(ps, t));
    ps->i++;
    return jj_strdup(ps->arena, t->p, t->n);
}

static struct jj_node *node(struct parser *ps, enum jj_node_kind kind, const struct tok *at) {
    struct jj_node *n = jj_alloc(ps->arena, sizeof *n);
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->line = at->line;
    n->col = at->col;
    return n;
}

static void nodes_push(struct parser *ps, struct jj_nodes *l, struct jj_node *n) {
    /* grows by doubling; the arena keeps the old arrays, which is fine for
     * template-sized lists */
    if (l->n == 0 || (l->n & (l->n - 1)) == 0) { /* at 0 and at each power of two */
        size_t cap = l->n ? l->n * 2 : 1;
        struct jj_node **v = jj_alloc(ps->arena, cap * sizeof *v);
        if (l->n) memcpy(v, l->v, l->n * sizeof *v);
        l->v = v;
    }
    l->v[l->n++] = n;
}

static void enter(struct parser *ps) {
    if (++ps->depth > JJ_MAX_PARSE_DEPTH) parse_fail(ps, "%s", "template nests deeper than 200 levels");
}

static struct jj_node *parse_expr(struct parser *ps);
static struct jj_node *parse_or(struct parser *ps);
static struct jj_node *parse_unary(struct parser *ps, bool with_filter);

/* Call arguments after "(": positional, then name=value. */
static void parse_call_args(struct parser *ps, struct jj_nodes *kids) {
    while (!accept_op(ps, ")")) {
        if (kids->n) {
            expect_op(ps, ",");
            if (accept_op(ps, ")")) break;
        }
        const struct tok *t = cur(ps);
        if (t->type == T_NAME && ps->toks[ps->i + 1].type == T_OP && ps->toks[ps->i + 1].n == 1 &&
            ps->toks[ps->i + 1].p[0] == '=') {
            struct jj_node *kw = node(ps, JN_KWARG, t);
            kw->name = take_name(ps);
            ps->i++;
            kw->a = parse_expr(ps);
            nodes_push(ps, kids, kw);
        } else {
            nodes_push(ps, kids, parse_expr(ps));
        }
    }
}

static struct jj_node *parse_filter(struct parser *ps, struct jj_node *operand) {
    const struct tok *at = cur(ps);
    struct jj_node *f = node(ps, JN_FILTER, at);
    f->a = operand;
    f->name = take_name(ps);
    while (accept_op(ps, ".")) { /* dotted filter names: keep the last part */
        f->name = take_name(ps);
    }
    if (accept_op(ps, "(")) parse_call_args(ps, &f->kids);
    return f;
}

static struct jj_node *parse_primary(struct parser *ps);

static struct jj_node *parse_test(struct parser *ps, struct jj_node *operand) {
    const struct tok *at = cur(ps);
    struct jj_node *t = node(ps, JN_TEST, at);
    t->a = operand;
    if (is_name(ps, "not")) {
        ps->i++;
        t->negated = true;
    }
    t->name = take_name(ps);
    while (accept_op(ps, ".")) t->name = take_name(ps);
    if (accept_op(ps, "(")) {
        parse_call_args(ps, &t->kids);
    } else {
        const struct tok *n = cur(ps);
        bool arg = n->type == T_STRING || n->type == T_INT || n->type == T_FLOAT ||
                   (n->type == T_NAME && !is_name(ps, "else") && !is_name(ps, "or") && !is_name(ps, "and") &&
                    !is_name(ps, "if") && !is_name(ps, "in") && !is_name(ps, "is") && !is_name(ps, "not")) ||
                   is_op(ps, "[") || is_op(ps, "{");
        if (arg) nodes_push(ps, &t->kids, parse_primary(ps));
    }
    return t;
}

static struct jj_node *parse_postfix(struct parser *ps, struct jj_node *n) {
    for (;;) {
        const struct tok *at = cur(ps);
        if (accept_op(ps, ".")) {
            struct jj_node *a = node(ps, JN_ATTR, at);
            a->a = n;
            const struct tok *t = cur(ps);
            if (t->type == T_INT) { /* x.0 is x[0] */
                a->kind = JN_ITEM;
                a->b = node(ps, JN_LIT, t);
                a->b->lit = jj_int(t->i);
                ps->i++;
            } else {
                a->name = take_name(ps);
            }
            n = a;
        } else if (accept_op(ps, "[")) {
            struct jj_node *parts[3] = {NULL, NULL, NULL};
            int k = 0;
            bool slice = false;
            for (;;) {
                if (is_op(ps, ":")) {
                    if (++k > 2) parse_fail(ps, "%s", "a slice has at most three parts");
                    slice = true;
                    ps->i++;
                    continue;
                }
                if (is_op(ps, "]")) break;
                if (parts[k]) expect_op(ps, "]");
                parts[k] = parse_expr(ps);
            }
            expect_op(ps, "]");
            struct jj_node *s = node(ps, slice ? JN_SLICE : JN_ITEM, at);
            s->a = n;
            if (slice) {
                s->b = parts[0];
                s->c = parts[1];
                s->d = parts[2];
            } else {
                if (!parts[0]) parse_fail(ps, "%s", "expected an index inside []");
                s->b = parts[0];
            }
            n = s;
        } else if (accept_op(ps, "(")) {
            struct jj_node *c = node(ps, JN_CALL, at);
            c->a = n;
            c->line = n->line; /* errors in a call point at what is called */
            c->col = n->col;
            parse_call_args(ps, &c->kids);
            n = c;
        } else {
            return n;
        }
    }
}

static struct jj_node *parse_filters_and_tests(struct parser *ps, struct jj_node *n) {
    for (;;) {
        if (accept_op(ps, "|")) {
            n = parse_filter(ps, n);
        } else if (is_name(ps, "is")) {
            ps->i++;
            n = parse_test(ps, n);
        } else if (is_op(ps, "(")) {
            const struct tok *at = cur(ps);
            ps->i++;
            struct jj_node *c = node(ps, JN_CALL, at);
            c->a = n;
            parse_call_args(ps, &c->kids);
            n = c;
        } else {
            return n;
        }
    }
}

/* Literal strings next to each other join ("a" "b" is "ab"). */
static struct jj_node *parse_primary(struct parser *ps) {
    enter(ps);
    const struct tok *t = cur(ps);
    struct jj_node *n;
    if (t->type == T_NAME) {
        ps->i++;
        n = node(ps, JN_LIT, t);
#define NAME_IS(s) (t->n == sizeof(s) - 1 && memcmp(t->p, s, t->n) == 0)
        if (NAME_IS("true") || NAME_IS("True")) {
            n->lit = jj_bool(true);
        } else if (NAME_IS("false") || NAME_IS("False")) {
            n->lit = jj_bool(false);
        } else if (NAME_IS("none") || NAME_IS("None")) {
            n->lit = jj_none();
        } else {
            n->kind = JN_NAME;
            n->name = jj_strdup(ps->arena, t->p, t->n);
        }
#undef NAME_IS
    } else if (t->type == T_STRING) {
        n = node(ps, JN_LIT, t);
        size_t total = 0;
        size_t j = ps->i;
        for (; ps->toks[j].type == T_STRING; j++) total += ps->toks[j].n;
        char *s = jj_alloc(ps->arena, total + 1);
        total = 0;
        for (; ps->i < j; ps->i++) {
            memcpy(s + total, ps->toks[ps->i].p, ps->toks[ps->i].n);
            total += ps->toks[ps->i].n;
        }
        s[total] = 0;
        n->lit = jj_str(s, total);
    } else if (t->type == T_INT || t->type == T_FLOAT) {
        ps->i++;
        n = node(ps, JN_LIT, t);
        n->lit = t->type == T_INT ? jj_int(t->i) : jj_float(t->f);
    } else if (accept_op(ps, "(")) {
        if (accept_op(ps, ")")) {
            n = node(ps, JN_TUPLE, t);
        } else {
            struct jj_node *first = parse_expr(ps);
            if (is_op(ps, ",")) {
                n = node(ps, JN_TUPLE, t);
                nodes_push(ps, &n->kids, first);
                while (accept_op(ps, ",")) {
                    if (is_op(ps, ")")) break;
                    nodes_push(ps, &n->kids, parse_expr(ps));
                }
            } else {
                n = first;
            }
            expect_op(ps, ")");
        }
    } else if (accept_op(ps, "[")) {
        n = node(ps, JN_LIST, t);
        while (!accept_op(ps, "]")) {
            if (n->kids.n) {
                expect_op(ps, ",");
                if (accept_op(ps, "]")) break;
            }
            nodes_push(ps, &n->kids, parse_expr(ps));
        }
    } else if (accept_op(ps, "{")) {
        n = node(ps, JN_DICT, t);
        while (!accept_op(ps, "}")) {
            if (n->kids.n) {
                expect_op(ps, ",");
                if (accept_op(ps, "}")) break;
            }
            nodes_push(ps, &n->kids, parse_expr(ps));
            expect_op(ps, ":");
            nodes_push(ps, &n->kids, parse_expr(ps));
        }
    } else {
        jj_fail_at(ps->fail, HERD_E_FORMAT, t->line, t->col, "unexpected %s in an expression", tok_desc(ps, t));
    }
    n = parse_postfix(ps, n);
    ps->depth--;
    return n;
}

static struct jj_node *parse_unary(struct parser *ps, bool with_filter) {
    enter(ps);
    const struct tok *at = cur(ps);
    struct jj_node *n;
    if (accept_op(ps, "-")) {
        n = node(ps, JN_NEG, at);
        n->a = parse_unary(ps, false);
    } else if (accept_op(ps, "+")) {
        n = node(ps, JN_POS, at);
        n->a = parse_unary(ps, false);
    } else {
        n = parse_primary(ps);
    }
    if (with_filter) n = parse_filters_and_tests(ps, n);
    ps->depth--;
    return n;
}

static struct jj_node *binop(struct parser *ps, const struct tok *at, enum jj_op op, struct jj_node *a,
                             struct jj_node *b) {
    struct jj_node *n = node(ps, JN_BINOP, at);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static struct jj_node *parse_pow(struct parser *ps) {
    struct jj_node *n = parse_unary(ps, true);
    for (const struct tok *at = cur(ps); accept_op(ps, "**"); at = cur(ps))
        n = binop(ps, at, JO_POW, n, parse_unary(ps, true));
    return n;
}

static struct jj_node *parse_math2(struct parser *ps) {
    struct jj_node *n = parse_pow(ps);
    for (;;) {
        const struct tok *at = cur(ps);
        enum jj_op op;
        if (accept_op(ps, "*"))
            op = JO_MUL;
        else if (accept_op(ps, "/"))
            op = JO_DIV;
        else if (accept_op(ps, "//"))
            op = JO_FLOORDIV;
        else if (accept_op(ps, "%"))
            op = JO_MOD;
        else
            return n;
        n = binop(ps, at, op, n, parse_pow(ps));
    }
}

static struct jj_node *parse_concat(struct parser *ps) {
    const struct tok *at = cur(ps);
    struct jj_node *first = parse_math2(ps);
    if (!is_op(ps, "~")) return first;
    struct jj_node *n = node(ps, JN_CONCAT, at);
    nodes_push(ps, &n->kids, first);
    while (accept_op(ps, "~")) nodes_push(ps, &n->kids, parse_math2(ps));
    return n;
}

static struct jj_node *parse_math1(struct parser *ps) {
    struct jj_node *n = parse_concat(ps);
    for (;;) {
        const struct tok *at = cur(ps);
        if (accept_op(ps, "+"))
            n = binop(ps, at, JO_ADD, n, parse_concat(ps));
        else if (accept_op(ps, "-"))
            n = binop(ps, at, JO_SUB, n, parse_concat(ps));
        else
            return n;
    }
}

static struct jj_node *parse_compare(struct parser *ps) {
    const struct tok *at = cur(ps);
    struct jj_node *first = parse_math1(ps);
    struct jj_node *n = NULL;
    enum jj_op ops[64];
    for (;;) {
        enum jj_op op;
        if (accept_op(ps, "=="))
            op = JO_EQ;
        else if (accept_op(ps, "!="))
            op = JO_NE;
        else if (accept_op(ps, "<"))
            op = JO_LT;
        else if (accept_op(ps, "<="))
            op = JO_LE;
        else if (accept_op(ps, ">"))
            op = JO_GT;
        else if (accept_op(ps, ">="))
            op = JO_GE;
        else if (is_name(ps, "in")) {
            ps->i++;
            op = JO_IN;
        } else if (is_name(ps, "not") && ps->toks[ps->i + 1].type == T_NAME && ps->toks[ps->i + 1].n == 2 &&
                   memcmp(ps->toks[ps->i + 1].p, "in", 2) == 0) {
            ps->i += 2;
            op = JO_NOTIN;
        } else {
            break;
        }
        if (!n) {
            n = node(ps, JN_COMPARE, at);
            n->a = first;
        }
        if (n->kids.n == sizeof ops / sizeof *ops) parse_fail(ps, "%s", "too many chained comparisons");
        ops[n->kids.n] = op;
        nodes_push(ps, &n->kids, parse_math1(ps));
    }
    if (!n) return first;
    n->ops = jj_alloc(ps->arena, n->kids.n * sizeof *n->ops);
    memcpy(n->ops, ops, n->kids.n * sizeof *n->ops);
    return n;
}

static struct jj_node *parse_not(struct parser *ps) {
    const struct tok *at = cur(ps);
    if (is_name(ps, "not")) {
        ps->i++;
        enter(ps);
        struct jj_node *n = node(ps, JN_NOT, at);
        n->a = parse_not(ps);
        ps->depth--;
        return n;
    }
    return parse_compare(ps);
}

static struct jj_node *parse_and(struct parser *ps) {
    struct jj_node *n = parse_not(ps);
    for (const struct tok *at = cur(ps); is_name(ps, "and"); at = cur(ps)) {
        ps->i++;
        struct jj_node *a = node(ps, JN_AND, at);
        a->a = n;
        a->b = parse_not(ps);
        n = a;
    }
    return n;
}

static struct jj_node *parse_or(struct parser *ps) {
    struct jj_node *n = parse_and(ps);
    for (const struct tok *at = cur(ps); is_name(ps, "or"); at = cur(ps)) {
        ps->i++;
        struct jj_node *o = node(ps, JN_OR, at);
        o->a = n;
        o->b = parse_and(ps);
        n = o;
    }
    return n;
}

/* expr [if cond [else expr]] */
static struct jj_node *parse_expr(struct parser *ps) {
    enter(ps);
    struct jj_node *n = parse_or(ps);
    while (is_name(ps, "if")) {
        const struct tok *at = cur(ps);
        ps->i++;
        struct jj_node *c = node(ps, JN_COND, at);
        c->a = n;
        c->b = parse_or(ps);
        if (is_name(ps, "else")) {
            ps->i++;
            c->c = parse_expr(ps);
        }
        n = c;
    }
    ps->depth--;
    return n;
}

/* An expression, or several separated by commas as a tuple (for
 * `set a = 1, 2` and `for x in a, b`); with_cond false stops before `if`. */
static struct jj_node *parse_tuple(struct parser *ps, bool with_cond) {
    const struct tok *at = cur(ps);
    struct jj_node *first = with_cond ? parse_expr(ps) : parse_or(ps);
    if (!is_op(ps, ",")) return first;
    struct jj_node *t = node(ps, JN_TUPLE, at);
    nodes_push(ps, &t->kids, first);
    while (accept_op(ps, ",")) {
        if (cur(ps)->type == T_BLOCK_END || cur(ps)->type == T_VAR_END || is_name(ps, "if")) break;
        nodes_push(ps, &t->kids, with_cond ? parse_expr(ps) : parse_or(ps));
    }
    return t;
}

/* A name, ns.attr (set only), or names separated by commas. */
static struct jj_node *parse_target(struct parser *ps, bool allow_attr) {
    const struct tok *at = cur(ps);
    bool paren = accept_op(ps, "(");
    struct jj_node *first = node(ps, JN_NAME, cur(ps));
    first->name = take_name(ps);
    if (allow_attr && is_op(ps, ".")) {
        ps->i++;
        struct jj_node *a = node(ps, JN_ATTR, cur(ps));
        a->a = first;
        a->name = take_name(ps);
        return a;
    }
    if (!is_op(ps, ",")) {
        if (paren) expect_op(ps, ")");
        return first;
    }
    struct jj_node *t = node(ps, JN_TUPLE, at);
    nodes_push(ps, &t->kids, first);
    while (accept_op(ps, ",")) {
        if (cur(ps)->type != T_NAME || is_name(ps, "in")) break;
        struct jj_node *n = node(ps, JN_NAME, cur(ps));
        n->name = take_name(ps);
        nodes_push(ps, &t->kids, n);
    }
    if (paren) expect_op(ps, ")");
    return t;
}

static void parse_body(struct parser *ps, struct jj_nodes *out, const char *const *ends);

static void end_tag(struct parser *ps) { expect_type(ps, T_BLOCK_END, "'%}'"); }

/* After `{% name`: which of ends follows, consumed. */
static const char *take_end_name(struct parser *ps, const char *const *ends) {
    for (size_t k = 0; ends[k]; k++)
        if (is_name(ps, ends[k])) {
            ps->i++;
            return ends[k];
        }
    parse_fail(ps, "%s", "unexpected tag");
}

static struct jj_node *parse_if(struct parser *ps, const struct tok *at) {
    struct jj_node *n = node(ps, JN_IF, at);
    n->a = parse_expr(ps);
    end_tag(ps);
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    parse_body(ps, &n->body, ends);
    const struct tok *tag = cur(ps);
    const char *which = take_end_name(ps, ends);
    if (strcmp(which, "elif") == 0) {
        nodes_push(ps, &n->orelse, parse_if(ps, tag));
        return n;
    }
    if (strcmp(which, "else") == 0) {
        end_tag(ps);
        static const char *const endif[] = {"endif", NULL};
        parse_body(ps, &n->orelse, endif);
        take_end_name(ps, endif);
    }
    end_tag(ps);
    return n;
}

static struct jj_node *parse_for(struct parser *ps, const struct tok *at) {
    struct jj_node *n = node(ps, JN_FOR, at);
    n->target = parse_target(ps, false);
    if (!is_name(ps, "in")) parse_fail(ps, "%s", "expected 'in' in a for tag");
    ps->i++;
    n->a = parse_tuple(ps, false);
    if (is_name(ps, "if")) {
        ps->i++;
        n->b = parse_expr(ps);
    }
    if (is_name(ps, "recursive")) parse_fail(ps, "%s", "recursive for loops are not supported");
    end_tag(ps);
    static const char *const ends[] = {"else", "endfor", NULL};
    parse_body(ps, &n->body, ends);
    if (strcmp(take_end_name(ps, ends), "else") == 0) {
        end_tag(ps);
        static const char *const endfor[] = {"endfor", NULL};
        parse_body(ps, &n->orelse, endfor);
        take_end_name(ps, endfor);
    }
    end_tag(ps);
    return n;
}

/* A chain of filters `name(args) | name2` with no operand (filter blocks,
 * set blocks). */
static struct jj_node *parse_filter_chain(struct parser *ps) {
    struct jj_node *n = parse_filter(ps, NULL);
    while (accept_op(ps, "|")) n = parse_filter(ps, n);
    return n;
}

static struct jj_node *parse_set(struct parser *ps, const struct tok *at) {
    struct jj_node *n = node(ps, JN_SET, at);
    n->target = parse_target(ps, true);
    if (accept_op(ps, "=")) {
        n->a = parse_tuple(ps, true);
        end_tag(ps);
        return n;
    }
    if (n->target->kind != JN_NAME) parse_fail(ps, "%s", "a set block assigns one name");
    n->kind = JN_SETBLOCK;
    if (accept_op(ps, "|")) n->b = parse_filter_chain(ps);
    end_tag(ps);
    static const char *const ends[] = {"endset", NULL};
    parse_body(ps, &n->body, ends);
    take_end_name(ps, ends);
    end_tag(ps);
    return n;
}

/* (a, b=default, ...) of a macro or a call block. */
static void parse_params(struct parser *ps, struct jj_nodes *params) {
    expect_op(ps, "(");
    while (!accept_op(ps, ")")) {
        if (params->n) expect_op(ps, ",");
        const struct tok *t = cur(ps);
        struct jj_node *p = node(ps, JN_NAME, t);
        p->name = take_name(ps);
        if (accept_op(ps, "=")) {
            p->kind = JN_KWARG;
            p->a = parse_expr(ps);
        }
        nodes_push(ps, params, p);
    }
}

static struct jj_node *parse_macro(struct parser *ps, const struct tok *at) {
    struct jj_node *n = node(ps, JN_MACRO, at);
    n->name = take_name(ps);
    parse_params(ps, &n->kids);
    end_tag(ps);
    static const char *const ends[] = {"endmacro", NULL};
    size_t body_start = ps->i;
    parse_body(ps, &n->body, ends);
    /* Jinja2 lets a macro take extra arguments only if its body reads
     * varargs / kwargs */
    for (size_t k = body_start; k < ps->i; k++) {
        const struct tok *t = &ps->toks[k];
        if (t->type != T_NAME) continue;
        if (t->n == 7 && memcmp(t->p, "varargs", 7) == 0) n->uses_varargs = true;
        if (t->n == 6 && memcmp(t->p, "kwargs", 6) == 0) n->uses_kwargs = true;
    }
    take_end_name(ps, ends);
    end_tag(ps);
    return n;
}

static struct jj_node *parse_call_block(struct parser *ps, const struct tok *at) {
    struct jj_node *n = node(ps, JN_CALLBLOCK, at);
    if (is_op(ps, "(")) parse_params(ps, &n->kids);
    n->a = parse_expr(ps);
    if (n->a->kind != JN_CALL) parse_fail(ps, "%s", "a call block needs a macro call");
    end_tag(ps);
    static const char *const ends[] = {"endcall", NULL};
    parse_body(ps, &n->body, ends);
    take_end_name(ps, ends);
    end_tag(ps);
    return n;
}

static struct jj_node *parse_statement(struct parser *ps) {
    const struct tok *at = cur(ps);
    expect_type(ps, T_BLOCK_BEGIN, "'{%'");
    const struct tok *kw = cur(ps);
    if (kw->type != T_NAME) parse_fail(ps, "%s", "expected a tag name after '{%'");
    struct jj_node *n;
    enter(ps);
#define KW(s) (kw->n == sizeof(s) - 1 && memcmp(kw->p, s, kw->n) == 0)
    ps->i++;
    if (KW("if")) {
        n = parse_if(ps, at);
    } else if (KW("for")) {
        n = parse_for(ps, at);
    } else if (KW("set")) {
        n = parse_set(ps, at);
    } else if (KW("macro")) {
        n = parse_macro(ps, at);
    } else if (KW("call")) {
        n = parse_call_block(ps, at);
    } else if (KW("filter")) {
        n = node(ps, JN_FILTERBLOCK, at);
        n->a = parse_filter_chain(ps);
        end_tag(ps);
        static const char *const ends[] = {"endfilter", NULL};
        parse_body(ps, &n->body, ends);
        take_end_name(ps, ends);
        end_tag(ps);
    } else if (KW("break") || KW("continue")) {
        n = node(ps, KW("break") ? JN_BREAK : JN_CONTINUE, at);
        end_tag(ps);
    } else {
        ps->i--;
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(kw->n < 60 ? kw->n : 60), kw->p);
        if (KW("include") || KW("import") || KW("from") || KW("extends") || KW("block"))
            parse_fail(ps, "tag '%s' is not supported: chat templates get no file access", name);
        parse_fail(ps, "unknown or unexpected tag '%s'", name);
    }
#undef KW
    ps->depth--;
    return n;
}

static bool at_end_tag(const struct parser *ps, const char *const *ends) {
    if (cur(ps)->type != T_BLOCK_BEGIN || !ends) return false;
    const struct tok *kw = &ps->toks[ps->i + 1];
    for (size_t k = 0; ends[k]; k++)
        if (kw->type == T_NAME && kw->n == strlen(ends[k]) && memcmp(kw->p, ends[k], kw->n) == 0) return true;
    return false;
}

/* Statements up to one of ends (NULL: the end of the template); leaves
 * the parser on the end tag's name. */
static void parse_body(struct parser *ps, struct jj_nodes *out, const char *const *ends) {
    for (;;) {
        const struct tok *t = cur(ps);
        if (t->type == T_EOF) {
            if (!ends) return;
            char msg[96];
            snprintf(msg, sizeof msg, "unexpected end of template: missing {%% %s %%}",
                     ends[0][0] == 'e' ? ends[0] : ends[1]);
            for (size_t k = 0; ends[k]; k++)
                if (strncmp(ends[k], "end", 3) == 0)
                    snprintf(msg, sizeof msg, "unexpected end of template: missing {%% %s %%}", ends[k]);
            parse_fail(ps, "%s", msg);
        }
        if (t->type == T_TEXT) {
            struct jj_node *n = node(ps, JN_TEXT, t);
            n->lit = jj_str(t->p, t->n);
            nodes_push(ps, out, n);
            ps->i++;
        } else if (t->type == T_VAR_BEGIN) {
            ps->i++;
            struct jj_node *n = node(ps, JN_OUTPUT, t);
            n->a = parse_tuple(ps, true);
            expect_type(ps, T_VAR_END, "'}}'");
            nodes_push(ps, out, n);
        } else if (at_end_tag(ps, ends)) {
            ps->i++; /* onto the name */
            return;
        } else {
            nodes_push(ps, out, parse_statement(ps));
        }
    }
}

void jj_parse(struct herd_jinja_template *t, const char *src, size_t len, struct jj_fail *f) {
    /* every string the engine makes is UTF-8 because the template and the
     * JSON variables are; check the template once here */
    size_t valid = herd_utf8_valid_prefix(src, len);
    if (valid < len) {
        uint32_t line = 1, col = 1;
        for (size_t i = 0; i < valid; i++) {
            if (src[i] == '\n') {
                line++;
                col = 1;
            } else if (((unsigned char)src[i] & 0xC0) != 0x80) {
                col++;
            }
        }
        jj_fail_at(f, HERD_E_FORMAT, line, col, "the template is not valid UTF-8 (byte %zu)", valid);
    }
    /* newlines normalised to \n, one trailing newline dropped */
    char *s = jj_alloc(&t->arena, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n && s[n - 1] == '\n') n--;
    s[n] = 0;
    struct lexer lx = {.arena = &t->arena, .fail = f, .s = s, .n = n, .line = 1, .col = 1};
    lex(&lx);
    struct parser ps = {.arena = &t->arena, .fail = f, .toks = lx.toks};
    parse_body(&ps, &t->body, NULL);
}
