/* GBNF grammars, their matcher and the vocabulary mask (grammar.h).
 *
 * A compiled grammar is one array of elements; rule r's alternatives start
 * at rule_start[r], each a sequence of elements ended by ALT (another
 * alternative follows) or END (the rule's last). A character set is one
 * CHAR / CHAR_NOT / CHAR_ANY element followed by CHAR_RNG_UPPER (the
 * previous value is a range's lower end) and CHAR_ALT (another member)
 * elements. A parse stack is the element positions still to match, the
 * innermost last; its top is always a character set, or it is empty (the
 * root is complete). */
#include "sampling/grammar.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ------------------------------------------------------------ the grammar */

enum elem_type {
    E_END = 0,  /* end of a rule */
    E_ALT,      /* end of an alternative, another follows */
    E_RULE_REF, /* value: rule id */
    E_CHAR,     /* value: a code point (starts a set) */
    E_CHAR_NOT, /* value: a code point (starts a negated set) */
    E_CHAR_RNG_UPPER,
    E_CHAR_ALT,
    E_CHAR_ANY, /* any code point */
};

struct elem {
    uint32_t type, value;
};

struct herd_grammar {
    atomic_uint refs;
    uint64_t fingerprint; /* of the source text */
    struct elem *elems;
    uint32_t n_elems;
    uint32_t *rule_start; /* [n_rules] */
    uint32_t n_rules;
    uint32_t root;
};

static bool end_of_seq(const struct herd_grammar *g, uint32_t pos) {
    return g->elems[pos].type == E_END || g->elems[pos].type == E_ALT;
}

const char herd_grammar_json_object[] =
    "root   ::= object\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "object ::= \"{\" ws ( string \":\" ws value (\",\" ws string \":\" ws value)* )? \"}\" ws\n"
    "array  ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n"
    "string ::= \"\\\"\" ( [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4}) )* "
    "\"\\\"\" ws\n"
    "number ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15}) (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})? ws\n"
    "# at most one newline and 20 blanks between tokens\n"
    "ws     ::= ([ \\t] | \"\\n\" [ \\t]{0,20})?\n";

/* ----------------------------------------------------------------- parsing */

/* A rule being built: its elements, in a growable array. */
struct rule_buf {
    struct elem *e;
    uint32_t n, cap;
    bool defined;
    char *name;
};

struct parser {
    const char *src, *p, *end;
    struct rule_buf *rules;
    uint32_t n_rules, cap_rules;
    uint64_t n_elems; /* over all rules, against the limit */
    struct herd_error *err;
    enum herd_status rc;
};

/* Records the first error with the line and column of at. */
static void fail_at(struct parser *ps, const char *at, enum herd_status rc, const char *what) {
    if (ps->rc != HERD_OK) return;
    uint32_t line = 1, col = 1;
    for (const char *q = ps->src; q < at && q < ps->end; q++) {
        if (*q == '\n')
            line++, col = 1;
        else
            col++;
    }
    ps->rc = herd_error_set(ps->err, rc, "grammar line %u column %u: %s", line, col, what);
}

static bool push(struct parser *ps, struct rule_buf *r, uint32_t type, uint32_t value) {
    if (ps->rc != HERD_OK) return false;
    if (++ps->n_elems > HERD_GRAMMAR_MAX_ELEMENTS) {
        fail_at(ps, ps->p, HERD_E_NOMEM, "the grammar expands to too many elements (a large {m,n} repetition?)");
        return false;
    }
    if (r->n == r->cap) {
        uint32_t cap = r->cap ? 2 * r->cap : 16;
        struct elem *e = realloc(r->e, cap * sizeof *e);
        if (!e) {
            fail_at(ps, ps->p, HERD_E_NOMEM, "out of memory");
            return false;
        }
        r->e = e, r->cap = cap;
    }
    r->e[r->n++] = (struct elem){type, value};
    return true;
}

/* The id of the rule named name[0..n) (created, undefined, when new). */
static uint32_t rule_id(struct parser *ps, const char *name, size_t n) {
    for (uint32_t i = 0; i < ps->n_rules; i++)
        if (strlen(ps->rules[i].name) == n && memcmp(ps->rules[i].name, name, n) == 0) return i;
    if (ps->n_rules == ps->cap_rules) {
        uint32_t cap = ps->cap_rules ? 2 * ps->cap_rules : 16;
        struct rule_buf *r = realloc(ps->rules, cap * sizeof *r);
        if (!r) {
            fail_at(ps, ps->p, HERD_E_NOMEM, "out of memory");
            return 0;
        }
        ps->rules = r, ps->cap_rules = cap;
    }
    struct rule_buf *r = &ps->rules[ps->n_rules];
    memset(r, 0, sizeof *r);
    if (!(r->name = malloc(n + 1))) {
        fail_at(ps, ps->p, HERD_E_NOMEM, "out of memory");
        return 0;
    }
    memcpy(r->name, name, n);
    r->name[n] = 0;
    return ps->n_rules++;
}

/* A new rule for a group or a repetition, named after its parent. */
static uint32_t synthetic_rule(struct parser *ps, uint32_t parent) {
    char name[128];
    /* a '.' no rule name can hold: a grammar's own "root_5" is another rule
     * (found by fuzz_grammar: the two were merged, and one's elements lost) */
    snprintf(name, sizeof name, "%.80s.%u", ps->rules[parent].name, ps->n_rules);
    uint32_t id = rule_id(ps, name, strlen(name));
    if (ps->rc == HERD_OK) ps->rules[id].defined = true;
    return id;
}

static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Skips blanks and comments, and newlines too when newline_ok. */
static void skip_space(struct parser *ps, bool newline_ok) {
    while (ps->p < ps->end) {
        char c = *ps->p;
        if (c == ' ' || c == '\t' || c == '\r' || (newline_ok && c == '\n')) {
            ps->p++;
        } else if (c == '#') {
            while (ps->p < ps->end && *ps->p != '\n') ps->p++;
        } else {
            break;
        }
    }
}

/* Decodes one UTF-8 code point at *pp (advanced); -1 when invalid. */
static int32_t decode_utf8(const char **pp, const char *end) {
    const uint8_t *p = (const uint8_t *)*pp;
    const uint8_t c = *p;
    uint32_t n, cp;
    if (c < 0x80)
        n = 1, cp = c;
    else if (c >= 0xC2 && c <= 0xDF)
        n = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4, cp = c & 0x07;
    else
        return -1;
    if ((const char *)p + n > end) return -1;
    for (uint32_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return -1;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
    *pp += n;
    return (int32_t)cp;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One character of a literal or class, escapes decoded; -1 on error. */
static int32_t parse_char(struct parser *ps) {
    if (ps->p >= ps->end) {
        fail_at(ps, ps->p, HERD_E_INVALID, "unexpected end of the grammar");
        return -1;
    }
    if (*ps->p != '\\') {
        const char *at = ps->p;
        int32_t cp = decode_utf8(&ps->p, ps->end);
        if (cp < 0) fail_at(ps, at, HERD_E_INVALID, "the grammar is not UTF-8 here");
        return cp;
    }
    const char *at = ps->p++;
    if (ps->p >= ps->end) {
        fail_at(ps, at, HERD_E_INVALID, "an escape at the end of the grammar");
        return -1;
    }
    char c = *ps->p++;
    int digits = 0;
    switch (c) {
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    case '\\':
    case '"':
    case '[':
    case ']':
    case '-':
    case '^': return (unsigned char)c;
    case 'x': digits = 2; break;
    case 'u': digits = 4; break;
    case 'U': digits = 8; break;
    default:
        fail_at(ps, at, HERD_E_INVALID, "unknown escape (\\n \\r \\t \\\\ \\\" \\[ \\] \\xHH \\uHHHH \\UHHHHHHHH)");
        return -1;
    }
    uint32_t v = 0;
    for (int i = 0; i < digits; i++) {
        int h = ps->p < ps->end ? hex_value(*ps->p) : -1;
        if (h < 0) {
            fail_at(ps, at, HERD_E_INVALID, "a \\x, \\u or \\U escape needs its hex digits");
            return -1;
        }
        v = v << 4 | (uint32_t)h;
        ps->p++;
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        fail_at(ps, at, HERD_E_INVALID, "the escape is not a Unicode scalar value");
        return -1;
    }
    return (int32_t)v;
}

static bool parse_alternates(struct parser *ps, uint32_t rule, struct rule_buf *out, bool nested, int depth);

/* Replaces the last symbol (elements [start, out->n)) by min..max copies
 * of it; max UINT32_MAX: unbounded. Optional copies become rules:
 * unbounded  R ::= x R |          bounded  R_k ::= x R_{k+1} | ,  R_last ::= x | */
static bool apply_repeat(struct parser *ps, uint32_t rule, struct rule_buf *out, uint32_t start, uint32_t min,
                         uint32_t max) {
    const uint32_t len = out->n - start;
    struct elem *sym = malloc((len ? len : 1) * sizeof *sym);
    if (!sym) {
        fail_at(ps, ps->p, HERD_E_NOMEM, "out of memory");
        return false;
    }
    memcpy(sym, out->e + start, len * sizeof *sym);
    out->n = start;
    ps->n_elems -= len;
    bool ok = true;
    for (uint32_t k = 0; ok && k < min; k++)
        for (uint32_t i = 0; ok && i < len; i++) ok = push(ps, out, sym[i].type, sym[i].value);
    if (ok && max == UINT32_MAX) {
        const uint32_t r = synthetic_rule(ps, rule);
        struct rule_buf *rb = ps->rc == HERD_OK ? &ps->rules[r] : NULL;
        for (uint32_t i = 0; ok && rb && i < len; i++) ok = push(ps, rb, sym[i].type, sym[i].value);
        ok = ok && rb && push(ps, rb, E_RULE_REF, r) && push(ps, rb, E_ALT, 0) && push(ps, rb, E_END, 0);
        ok = ok && push(ps, out, E_RULE_REF, r);
    } else if (ok && max > min) {
        /* the optional tail, innermost rule first */
        uint32_t next = UINT32_MAX;
        for (uint32_t k = max - min; ok && k > 0; k--) {
            const uint32_t r = synthetic_rule(ps, rule);
            struct rule_buf *rb = ps->rc == HERD_OK ? &ps->rules[r] : NULL;
            for (uint32_t i = 0; ok && rb && i < len; i++) ok = push(ps, rb, sym[i].type, sym[i].value);
            if (ok && rb && next != UINT32_MAX) ok = push(ps, rb, E_RULE_REF, next);
            ok = ok && rb && push(ps, rb, E_ALT, 0) && push(ps, rb, E_END, 0);
            next = r;
        }
        ok = ok && push(ps, out, E_RULE_REF, next);
    }
    free(sym);
    return ok && ps->rc == HERD_OK;
}

/* An unsigned decimal for {m,n}. */
static bool parse_count(struct parser *ps, uint32_t *v) {
    const char *at = ps->p;
    uint64_t x = 0;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        x = x * 10 + (uint64_t)(*ps->p++ - '0');
        if (x > HERD_GRAMMAR_MAX_REPEAT) {
            fail_at(ps, at, HERD_E_NOMEM, "a repetition count above 1000");
            return false;
        }
    }
    if (ps->p == at) {
        fail_at(ps, at, HERD_E_INVALID, "expected a number in {m,n}");
        return false;
    }
    *v = (uint32_t)x;
    return true;
}

/* One alternative: a sequence of symbols, each possibly repeated. */
static bool parse_sequence(struct parser *ps, uint32_t rule, struct rule_buf *out, bool nested, int depth) {
    uint32_t last_start = UINT32_MAX; /* where the last symbol's elements start */
    while (ps->p < ps->end && ps->rc == HERD_OK) {
        const char c = *ps->p;
        const char *at = ps->p;
        if (c == '"') {
            ps->p++;
            last_start = out->n;
            while (ps->p < ps->end && *ps->p != '"') {
                int32_t cp = parse_char(ps);
                if (cp < 0 || !push(ps, out, E_CHAR, (uint32_t)cp)) return false;
            }
            if (ps->p >= ps->end) {
                fail_at(ps, at, HERD_E_INVALID, "a string literal is not closed");
                return false;
            }
            ps->p++;
            if (out->n == last_start) last_start = UINT32_MAX; /* "" matches nothing: no symbol */
        } else if (c == '[') {
            ps->p++;
            last_start = out->n;
            uint32_t type = E_CHAR;
            if (ps->p < ps->end && *ps->p == '^') ps->p++, type = E_CHAR_NOT;
            while (ps->p < ps->end && *ps->p != ']') {
                int32_t lo = parse_char(ps);
                if (lo < 0 || !push(ps, out, type, (uint32_t)lo)) return false;
                type = E_CHAR_ALT;
                if (ps->p + 1 < ps->end && *ps->p == '-' && ps->p[1] != ']') {
                    ps->p++;
                    const char *hat = ps->p;
                    int32_t hi = parse_char(ps);
                    if (hi < 0) return false;
                    if (hi < lo) {
                        fail_at(ps, hat, HERD_E_INVALID, "a character range whose end is below its start");
                        return false;
                    }
                    if (!push(ps, out, E_CHAR_RNG_UPPER, (uint32_t)hi)) return false;
                }
            }
            if (ps->p >= ps->end) {
                fail_at(ps, at, HERD_E_INVALID, "a character class is not closed");
                return false;
            }
            if (out->n == last_start) {
                fail_at(ps, at, HERD_E_INVALID, "an empty character class");
                return false;
            }
            ps->p++;
        } else if (is_name_char(c)) {
            const char *name = ps->p;
            while (ps->p < ps->end && is_name_char(*ps->p)) ps->p++;
            last_start = out->n;
            uint32_t id = rule_id(ps, name, (size_t)(ps->p - name));
            if (!push(ps, out, E_RULE_REF, id)) return false;
        } else if (c == '(') {
            ps->p++;
            if (depth > 64) {
                fail_at(ps, at, HERD_E_NOMEM, "groups nested deeper than 64");
                return false;
            }
            const uint32_t sub = synthetic_rule(ps, rule);
            if (ps->rc != HERD_OK) return false;
            struct rule_buf tmp = {0};
            skip_space(ps, true);
            bool ok = parse_alternates(ps, rule, &tmp, true, depth + 1);
            /* the rules array may have moved while the group was parsed */
            ps->rules[sub].e = tmp.e, ps->rules[sub].n = tmp.n, ps->rules[sub].cap = tmp.cap;
            if (!ok) return false;
            if (ps->p >= ps->end || *ps->p != ')') {
                fail_at(ps, at, HERD_E_INVALID, "a group is not closed with ')'");
                return false;
            }
            ps->p++;
            last_start = out->n;
            if (!push(ps, out, E_RULE_REF, sub)) return false;
        } else if (c == '.') {
            ps->p++;
            last_start = out->n;
            if (!push(ps, out, E_CHAR_ANY, 0)) return false;
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (last_start == UINT32_MAX) {
                fail_at(ps, at, HERD_E_INVALID, "a repetition with nothing before it to repeat");
                return false;
            }
            ps->p++;
            uint32_t min = 0, max = UINT32_MAX;
            if (c == '+') min = 1;
            if (c == '?') max = 1;
            if (c == '{') {
                skip_space(ps, nested);
                if (!parse_count(ps, &min)) return false;
                skip_space(ps, nested);
                max = min;
                if (ps->p < ps->end && *ps->p == ',') {
                    ps->p++;
                    skip_space(ps, nested);
                    max = UINT32_MAX;
                    if (ps->p < ps->end && *ps->p != '}' && !parse_count(ps, &max)) return false;
                    skip_space(ps, nested);
                }
                if (ps->p >= ps->end || *ps->p != '}') {
                    fail_at(ps, at, HERD_E_INVALID, "a {m,n} repetition is not closed with '}'");
                    return false;
                }
                ps->p++;
                if (max < min) {
                    fail_at(ps, at, HERD_E_INVALID, "a {m,n} repetition with n below m");
                    return false;
                }
            }
            if (!apply_repeat(ps, rule, out, last_start, min, max)) return false;
            last_start = UINT32_MAX;
        } else {
            break;
        }
        skip_space(ps, nested);
    }
    return ps->rc == HERD_OK;
}

static bool parse_alternates(struct parser *ps, uint32_t rule, struct rule_buf *out, bool nested, int depth) {
    if (!parse_sequence(ps, rule, out, nested, depth)) return false;
    while (ps->p < ps->end && *ps->p == '|') {
        if (!push(ps, out, E_ALT, 0)) return false;
        ps->p++;
        skip_space(ps, true);
        if (!parse_sequence(ps, rule, out, nested, depth)) return false;
    }
    return push(ps, out, E_END, 0);
}

/* name ::= alternates, then the end of the line. */
static bool parse_rule(struct parser *ps) {
    const char *name = ps->p;
    while (ps->p < ps->end && is_name_char(*ps->p)) ps->p++;
    if (ps->p == name) {
        fail_at(ps, name, HERD_E_INVALID, "expected a rule name");
        return false;
    }
    const uint32_t id = rule_id(ps, name, (size_t)(ps->p - name));
    if (ps->rc != HERD_OK) return false;
    if (ps->rules[id].defined) {
        char msg[160];
        snprintf(msg, sizeof msg, "rule '%.100s' is defined twice", ps->rules[id].name);
        fail_at(ps, name, HERD_E_INVALID, msg);
        return false;
    }
    ps->rules[id].defined = true;
    skip_space(ps, false);
    if (ps->end - ps->p < 3 || memcmp(ps->p, "::=", 3) != 0) {
        fail_at(ps, ps->p, HERD_E_INVALID, "expected '::=' after the rule name");
        return false;
    }
    ps->p += 3;
    skip_space(ps, true);
    struct rule_buf tmp = {0};
    bool ok = parse_alternates(ps, id, &tmp, false, 0);
    ps->rules[id].e = tmp.e, ps->rules[id].n = tmp.n, ps->rules[id].cap = tmp.cap;
    if (!ok) return false;
    if (ps->p < ps->end && *ps->p != '\n') {
        fail_at(ps, ps->p, HERD_E_INVALID, "unexpected character (a rule ends at the end of its line)");
        return false;
    }
    skip_space(ps, true);
    return true;
}

/* ------------------------------------------------------------- checking */

/* Marks nullable rules (those that can match the empty text), to a fixed
 * point. */
static void find_nullable(const struct herd_grammar *g, bool *nullable) {
    bool changed = true;
    while (changed) {
        changed = false;
        for (uint32_t r = 0; r < g->n_rules; r++) {
            if (nullable[r]) continue;
            uint32_t pos = g->rule_start[r];
            for (;;) {
                bool all = true;
                for (; !end_of_seq(g, pos); pos++) {
                    const struct elem *e = &g->elems[pos];
                    if (e->type == E_RULE_REF ? !nullable[e->value] : e->type <= E_CHAR_ANY) all = false;
                }
                if (all) {
                    nullable[r] = changed = true;
                    break;
                }
                if (g->elems[pos].type == E_END) break;
                pos++;
            }
        }
    }
}

/* Depth-first search over "rule a may start with rule b": a cycle is left
 * recursion. state: 0 unseen, 1 on the path, 2 done. Returns the rule on a
 * cycle, or UINT32_MAX. */
static uint32_t left_cycle(const struct herd_grammar *g, const bool *nullable, uint8_t *state, uint32_t r) {
    state[r] = 1;
    uint32_t pos = g->rule_start[r];
    for (;;) {
        for (; !end_of_seq(g, pos); pos++) {
            const struct elem *e = &g->elems[pos];
            if (e->type != E_RULE_REF) break;
            if (state[e->value] == 1) return e->value;
            if (state[e->value] == 0) {
                uint32_t c = left_cycle(g, nullable, state, e->value);
                if (c != UINT32_MAX) return c;
            }
            if (!nullable[e->value]) break;
        }
        while (!end_of_seq(g, pos)) pos++;
        if (g->elems[pos].type == E_END) break;
        pos++;
    }
    state[r] = 2;
    return UINT32_MAX;
}

static void free_parser(struct parser *ps) {
    for (uint32_t i = 0; i < ps->n_rules; i++) {
        free(ps->rules[i].e);
        free(ps->rules[i].name);
    }
    free(ps->rules);
}

struct herd_grammar *herd_grammar_retain(struct herd_grammar *g) {
    if (g) atomic_fetch_add(&g->refs, 1);
    return g;
}

void herd_grammar_destroy(struct herd_grammar *g) {
    if (!g || atomic_fetch_sub(&g->refs, 1) > 1) return;
    free(g->elems);
    free(g->rule_start);
    free(g);
}

uint64_t herd_grammar_fingerprint(const struct herd_grammar *g) { return g->fingerprint; }

uint32_t herd_grammar_n_rules(const struct herd_grammar *g) { return g->n_rules; }

enum herd_status herd_grammar_parse(const char *text, size_t n, struct herd_grammar **out, struct herd_error *err) {
    *out = NULL;
    if (n > HERD_GRAMMAR_MAX_SOURCE)
        return herd_error_set(err, HERD_E_NOMEM, "the grammar is %zu bytes; at most %u are accepted", n,
                              HERD_GRAMMAR_MAX_SOURCE);
    struct parser ps = {.src = text, .p = text, .end = text + n, .err = err, .rc = HERD_OK};
    struct herd_grammar *g = NULL;
    bool *nullable = NULL;
    uint8_t *seen = NULL;
    skip_space(&ps, true);
    while (ps.p < ps.end && ps.rc == HERD_OK)
        if (!parse_rule(&ps)) break;
    if (ps.rc != HERD_OK) goto out;
    uint32_t root = UINT32_MAX;
    for (uint32_t i = 0; i < ps.n_rules; i++) {
        if (!ps.rules[i].defined) {
            ps.rc =
                herd_error_set(err, HERD_E_INVALID, "grammar: rule '%.100s' is used but not defined", ps.rules[i].name);
            goto out;
        }
        if (strcmp(ps.rules[i].name, "root") == 0) root = i;
    }
    if (root == UINT32_MAX) {
        ps.rc = herd_error_set(err, HERD_E_INVALID, "grammar: no 'root' rule (the rule the text must match)");
        goto out;
    }
    /* flatten */
    g = calloc(1, sizeof *g);
    uint64_t total = 0;
    for (uint32_t i = 0; i < ps.n_rules; i++) total += ps.rules[i].n;
    if (!g || !(g->elems = malloc((total ? total : 1) * sizeof *g->elems)) ||
        !(g->rule_start = malloc(ps.n_rules * sizeof *g->rule_start))) {
        ps.rc = herd_error_set(err, HERD_E_NOMEM, "out of memory compiling the grammar");
        goto out;
    }
    for (uint32_t i = 0; i < ps.n_rules; i++) {
        g->rule_start[i] = g->n_elems;
        memcpy(g->elems + g->n_elems, ps.rules[i].e, ps.rules[i].n * sizeof *g->elems);
        g->n_elems += ps.rules[i].n;
    }
    g->n_rules = ps.n_rules;
    g->root = root;
    atomic_init(&g->refs, 1);
    g->fingerprint = XXH3_64bits(text, n);
    nullable = calloc(g->n_rules, sizeof *nullable);
    seen = calloc(g->n_rules, 1);
    if (!nullable || !seen) {
        ps.rc = herd_error_set(err, HERD_E_NOMEM, "out of memory compiling the grammar");
        goto out;
    }
    find_nullable(g, nullable);
    for (uint32_t r = 0; r < g->n_rules; r++) {
        if (seen[r]) continue;
        uint32_t c = left_cycle(g, nullable, seen, r);
        if (c != UINT32_MAX) {
            ps.rc = herd_error_set(err, HERD_E_INVALID,
                                   "grammar: rule '%.100s' is left-recursive (it can reach itself before reading a "
                                   "character); rewrite it with repetition, e.g. x ::= y (\",\" y)*",
                                   ps.rules[c].name);
            goto out;
        }
    }
    *out = g;
    g = NULL;
out:
    free(nullable);
    free(seen);
    herd_grammar_destroy(g);
    free_parser(&ps);
    return ps.rc;
}

/* ------------------------------------------------------------- the matcher */

/* A set of stacks: each stack's positions in one pool, bottom first. */
struct stack_set {
    uint32_t *pool;
    uint32_t pool_n, pool_cap;
    uint32_t *off, *len;
    uint32_t n, cap;
    /* past SET_LINEAR stacks, an open-addressing index of them (stack i
     * stored as i + 1; 0: empty), so that an ambiguous grammar's thousands
     * of stacks cost a hash each, not a scan each */
    uint32_t *slot;
    uint32_t n_slots; /* a power of two, at least twice n */
};

#define SET_LINEAR 16

struct herd_grammar_state {
    const struct herd_grammar *g;
    struct stack_set set;
    uint8_t partial[4]; /* bytes of an incomplete UTF-8 character */
    uint8_t n_partial, need;
};

static void set_clear(struct stack_set *s) {
    s->pool_n = s->n = 0;
    if (s->slot) memset(s->slot, 0, s->n_slots * sizeof *s->slot);
}

static void set_free(struct stack_set *s) {
    free(s->slot);
    free(s->pool);
    free(s->off);
    free(s->len);
    memset(s, 0, sizeof *s);
}

/* Adds a stack unless the set holds it already. HERD_E_NOMEM past the
 * stack limit, HERD_E_NOMEM. */
/* Stack i of s; NULL for an empty stack (the pool may be NULL then). */
static const uint32_t *stack_at(const struct stack_set *s, uint32_t i) {
    return s->len[i] ? s->pool + s->off[i] : NULL;
}

static uint64_t stack_hash(const uint32_t *stk, uint32_t len) {
    return XXH3_64bits_withSeed(stk, len * sizeof *stk, len);
}

static bool same_stack(const struct stack_set *s, uint32_t i, const uint32_t *stk, uint32_t len) {
    return s->len[i] == len && (len == 0 || memcmp(s->pool + s->off[i], stk, len * sizeof *stk) == 0);
}

/* (Re)builds the index for n_slots slots. */
static enum herd_status set_reindex(struct stack_set *s, uint32_t n_slots) {
    uint32_t *slot = calloc(n_slots, sizeof *slot);
    if (!slot) return HERD_E_NOMEM;
    free(s->slot);
    s->slot = slot;
    s->n_slots = n_slots;
    for (uint32_t i = 0; i < s->n; i++) {
        uint32_t h = (uint32_t)stack_hash(stack_at(s, i), s->len[i]) & (n_slots - 1);
        while (slot[h]) h = (h + 1) & (n_slots - 1);
        slot[h] = i + 1;
    }
    return HERD_OK;
}

static enum herd_status set_add(struct stack_set *s, const uint32_t *stk, uint32_t len) {
    uint32_t h = 0;
    if (s->n < SET_LINEAR) {
        for (uint32_t i = 0; i < s->n; i++)
            if (same_stack(s, i, stk, len)) return HERD_OK;
    } else {
        /* at the switch from scanning (the index may be stale from before
         * a clear) or when the index fills */
        if (s->n == SET_LINEAR || 2 * (s->n + 1) > s->n_slots) {
            uint32_t n_slots = s->n_slots ? s->n_slots : 4 * SET_LINEAR;
            while (2 * (s->n + 1) > n_slots) n_slots *= 2;
            enum herd_status rc = set_reindex(s, n_slots);
            if (rc != HERD_OK) return rc;
        }
        for (h = (uint32_t)stack_hash(stk, len) & (s->n_slots - 1); s->slot[h]; h = (h + 1) & (s->n_slots - 1))
            if (same_stack(s, s->slot[h] - 1, stk, len)) return HERD_OK;
    }
    if (s->n >= HERD_GRAMMAR_MAX_STACKS) return HERD_E_NOMEM;
    if (s->n == s->cap) {
        uint32_t cap = s->cap ? 2 * s->cap : 8;
        uint32_t *o = realloc(s->off, cap * sizeof *o);
        if (!o) return HERD_E_NOMEM;
        s->off = o;
        uint32_t *l = realloc(s->len, cap * sizeof *l);
        if (!l) return HERD_E_NOMEM;
        s->len = l, s->cap = cap;
    }
    if (s->pool_n + len > s->pool_cap) {
        uint32_t cap = s->pool_cap ? s->pool_cap : 64;
        while (cap < s->pool_n + len) cap *= 2;
        uint32_t *p = realloc(s->pool, cap * sizeof *p);
        if (!p) return HERD_E_NOMEM;
        s->pool = p, s->pool_cap = cap;
    }
    if (len) memcpy(s->pool + s->pool_n, stk, len * sizeof *stk);
    s->off[s->n] = s->pool_n;
    s->len[s->n++] = len;
    s->pool_n += len;
    if (s->slot && s->n > SET_LINEAR) s->slot[h] = s->n; /* h: the free slot the probe ended on */
    return HERD_OK;
}

/* Expands stk[0..len) (scratch of HERD_GRAMMAR_MAX_DEPTH + 1 entries, its
 * tail used as work space) until its top is a character set, adding every
 * result to out: a rule reference at the top is replaced by its
 * continuation and each alternative's first element. */
static enum herd_status expand(const struct herd_grammar *g, uint32_t *stk, uint32_t len, struct stack_set *out) {
    if (len == 0) return set_add(out, stk, 0);
    const uint32_t pos = stk[len - 1];
    const struct elem *e = &g->elems[pos];
    if (e->type != E_RULE_REF) return set_add(out, stk, len);
    uint32_t base = len - 1;
    if (!end_of_seq(g, pos + 1)) stk[base++] = pos + 1;
    uint32_t alt = g->rule_start[e->value];
    enum herd_status rc = HERD_OK;
    for (;;) {
        if (base + 1 > HERD_GRAMMAR_MAX_DEPTH) return HERD_E_NOMEM;
        uint32_t n = base;
        if (!end_of_seq(g, alt)) stk[n++] = alt;
        /* the recursion writes stk[n - 1..] only, and puts stk[n - 1] back */
        if ((rc = expand(g, stk, n, out)) != HERD_OK) return rc;
        while (!end_of_seq(g, alt)) alt++;
        if (g->elems[alt].type == E_END) break;
        alt++;
    }
    /* leave the caller's stack as it was */
    stk[len - 1] = pos;
    return HERD_OK;
}

/* Does the set starting at pos contain cp? */
static bool match_char(const struct herd_grammar *g, uint32_t pos, uint32_t cp) {
    const struct elem *e = &g->elems[pos];
    if (e->type == E_CHAR_ANY) return true;
    const bool negate = e->type == E_CHAR_NOT;
    bool found = false;
    for (;;) {
        if (g->elems[pos + 1].type == E_CHAR_RNG_UPPER) {
            if (g->elems[pos].value <= cp && cp <= g->elems[pos + 1].value) found = true;
            pos += 2;
        } else {
            if (g->elems[pos].value == cp) found = true;
            pos += 1;
        }
        if (g->elems[pos].type != E_CHAR_ALT) break;
    }
    return found != negate;
}

/* Does the set starting at pos contain some code point in [lo, hi]? */
static bool match_range(const struct herd_grammar *g, uint32_t pos, uint32_t lo, uint32_t hi) {
    const struct elem *e = &g->elems[pos];
    if (e->type == E_CHAR_ANY) return true;
    const bool negate = e->type == E_CHAR_NOT;
    if (!negate) {
        for (uint32_t p = pos;;) {
            const uint32_t a = g->elems[p].value;
            const uint32_t b = g->elems[p + 1].type == E_CHAR_RNG_UPPER ? g->elems[p + 1].value : a;
            if (a <= hi && b >= lo) return true;
            p += g->elems[p + 1].type == E_CHAR_RNG_UPPER ? 2 : 1;
            if (g->elems[p].type != E_CHAR_ALT) return false;
        }
    }
    /* negated: some code point of [lo, hi] is in none of the ranges */
    uint32_t cur = lo;
    for (bool moved = true; moved && cur <= hi;) {
        moved = false;
        for (uint32_t p = pos;;) {
            const uint32_t a = g->elems[p].value;
            const uint32_t b = g->elems[p + 1].type == E_CHAR_RNG_UPPER ? g->elems[p + 1].value : a;
            if (a <= cur && cur <= b) {
                if (b >= hi) return false;
                cur = b + 1, moved = true;
            }
            p += g->elems[p + 1].type == E_CHAR_RNG_UPPER ? 2 : 1;
            if (g->elems[p].type != E_CHAR_ALT) break;
        }
    }
    return cur <= hi;
}

/* The position after the character set at pos. */
static uint32_t after_set(const struct herd_grammar *g, uint32_t pos) {
    pos++;
    while (g->elems[pos].type == E_CHAR_ALT || g->elems[pos].type == E_CHAR_RNG_UPPER) pos++;
    return pos;
}

/* out = the stacks of in that accept cp, moved past it and expanded. */
static enum herd_status advance(const struct herd_grammar *g, const struct stack_set *in, uint32_t cp,
                                struct stack_set *out, uint32_t *scratch) {
    set_clear(out);
    for (uint32_t i = 0; i < in->n; i++) {
        const uint32_t len = in->len[i];
        if (len == 0) continue;
        const uint32_t *stk = in->pool + in->off[i];
        const uint32_t top = stk[len - 1];
        if (!match_char(g, top, cp)) continue;
        memcpy(scratch, stk, (len - 1) * sizeof *stk);
        uint32_t n = len - 1;
        const uint32_t next = after_set(g, top);
        if (!end_of_seq(g, next)) scratch[n++] = next;
        enum herd_status rc = expand(g, scratch, n, out);
        if (rc != HERD_OK) return rc;
    }
    return HERD_OK;
}

/* The code points whose UTF-8 form starts with the n_partial bytes of a
 * character of need bytes in all. */
static void partial_range(const uint8_t *b, uint32_t n, uint32_t need, uint32_t *lo, uint32_t *hi) {
    static const uint8_t lead_mask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    uint32_t v = b[0] & lead_mask[need];
    for (uint32_t i = 1; i < n; i++) v = v << 6 | (b[i] & 0x3F);
    const uint32_t rest = 6 * (need - n);
    *lo = v << rest;
    *hi = (v << rest) | ((1u << rest) - 1);
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (*lo < min_cp[need]) *lo = min_cp[need];
    if (*hi > 0x10FFFF) *hi = 0x10FFFF;
}

/* Can some stack of s continue with a character starting with s's partial
 * bytes? */
static bool partial_feasible(const struct herd_grammar_state *s) {
    uint32_t lo, hi;
    partial_range(s->partial, s->n_partial, s->need, &lo, &hi);
    if (lo > hi) return false;
    for (uint32_t i = 0; i < s->set.n; i++)
        if (s->set.len[i] && match_range(s->g, s->set.pool[s->set.off[i] + s->set.len[i] - 1], lo, hi)) return true;
    return false;
}

static enum herd_status state_copy(struct herd_grammar_state *dst, const struct herd_grammar_state *src) {
    set_clear(&dst->set);
    for (uint32_t i = 0; i < src->set.n; i++) {
        enum herd_status rc = set_add(&dst->set, stack_at(&src->set, i), src->set.len[i]);
        if (rc != HERD_OK) return rc;
    }
    dst->g = src->g;
    memcpy(dst->partial, src->partial, sizeof dst->partial);
    dst->n_partial = src->n_partial;
    dst->need = src->need;
    return HERD_OK;
}

struct herd_grammar_state *herd_grammar_state_create(const struct herd_grammar *g, struct herd_error *err) {
    struct herd_grammar_state *s = calloc(1, sizeof *s);
    uint32_t *scratch = malloc((HERD_GRAMMAR_MAX_DEPTH + 1) * sizeof *scratch);
    enum herd_status rc = HERD_E_NOMEM;
    if (s && scratch) {
        s->g = g;
        /* each of the root's alternatives, expanded */
        uint32_t alt = g->rule_start[g->root];
        rc = HERD_OK;
        for (;;) {
            uint32_t n = 0;
            if (!end_of_seq(g, alt)) scratch[n++] = alt;
            if ((rc = expand(g, scratch, n, &s->set)) != HERD_OK) break;
            while (!end_of_seq(g, alt)) alt++;
            if (g->elems[alt].type == E_END) break;
            alt++;
        }
    }
    free(scratch);
    if (rc != HERD_OK) {
        herd_error_set(err, rc,
                       "the grammar is too ambiguous or deep at its start (over %u parse stacks or %u levels), or out "
                       "of memory",
                       HERD_GRAMMAR_MAX_STACKS, HERD_GRAMMAR_MAX_DEPTH);
        herd_grammar_state_destroy(s);
        return NULL;
    }
    return s;
}

struct herd_grammar_state *herd_grammar_state_clone(const struct herd_grammar_state *src) {
    struct herd_grammar_state *s = calloc(1, sizeof *s);
    if (s && state_copy(s, src) != HERD_OK) {
        herd_grammar_state_destroy(s);
        return NULL;
    }
    return s;
}

void herd_grammar_state_destroy(struct herd_grammar_state *s) {
    if (!s) return;
    set_free(&s->set);
    free(s);
}

/* Moves s on by one byte into tmp-owned storage; false when the byte is
 * not allowed (s unchanged then is the caller's business: it works on a
 * copy). */
static enum herd_status step_byte(struct herd_grammar_state *s, uint8_t byte, struct stack_set *tmp,
                                  uint32_t *scratch) {
    if (s->n_partial == 0) {
        uint32_t need;
        if (byte < 0x80)
            need = 1;
        else if (byte >= 0xC2 && byte <= 0xDF)
            need = 2;
        else if (byte >= 0xE0 && byte <= 0xEF)
            need = 3;
        else if (byte >= 0xF0 && byte <= 0xF4)
            need = 4;
        else
            return HERD_E_INVALID;
        s->need = (uint8_t)need;
    } else if ((byte & 0xC0) != 0x80) {
        return HERD_E_INVALID;
    }
    s->partial[s->n_partial++] = byte;
    if (s->n_partial < s->need) return partial_feasible(s) ? HERD_OK : HERD_E_INVALID;
    const char *p = (const char *)s->partial;
    int32_t cp = decode_utf8(&p, p + s->n_partial);
    s->n_partial = 0;
    if (cp < 0) return HERD_E_INVALID;
    enum herd_status rc = advance(s->g, &s->set, (uint32_t)cp, tmp, scratch);
    if (rc != HERD_OK) return rc;
    if (tmp->n == 0) return HERD_E_INVALID;
    /* swap the sets */
    struct stack_set t = s->set;
    s->set = *tmp;
    *tmp = t;
    return HERD_OK;
}

enum herd_status herd_grammar_accept(struct herd_grammar_state *s, const char *bytes, size_t n,
                                     struct herd_error *err) {
    struct herd_grammar_state *w = herd_grammar_state_clone(s);
    uint32_t *scratch = malloc((HERD_GRAMMAR_MAX_DEPTH + 1) * sizeof *scratch);
    struct stack_set tmp = {0};
    enum herd_status rc = w && scratch ? HERD_OK : HERD_E_NOMEM;
    size_t i = 0;
    for (; rc == HERD_OK && i < n; i++) rc = step_byte(w, (uint8_t)bytes[i], &tmp, scratch);
    if (rc == HERD_OK) {
        struct herd_grammar_state t = *s;
        *s = *w;
        *w = t;
    } else if (rc == HERD_E_INVALID) {
        herd_error_set(err, rc, "the grammar does not allow byte %zu of the text", i - 1);
    } else {
        herd_error_set(err, rc,
                       "the grammar is too ambiguous or deep here (over %u parse stacks or %u levels), or out of "
                       "memory",
                       HERD_GRAMMAR_MAX_STACKS, HERD_GRAMMAR_MAX_DEPTH);
    }
    set_free(&tmp);
    free(scratch);
    herd_grammar_state_destroy(w);
    return rc;
}

bool herd_grammar_can_end(const struct herd_grammar_state *s) {
    if (s->n_partial) return false;
    for (uint32_t i = 0; i < s->set.n; i++)
        if (s->set.len[i] == 0) return true;
    return false;
}

bool herd_grammar_must_end(const struct herd_grammar_state *s) {
    if (s->n_partial) return false;
    for (uint32_t i = 0; i < s->set.n; i++)
        if (s->set.len[i] != 0) return false;
    return s->set.n > 0;
}

/* --------------------------------------------------------------- the mask */

/* The vocabulary's trie: node 0 is the root. Built with children in
 * sibling lists (next_sibling), then laid out breadth first so that a
 * node's children are the n_children nodes from first_child on: the walk
 * reads them in a row. The tokens whose bytes end at a node are a list
 * through next_token. */
struct trie_node {
    uint32_t first_child;  /* 0: none (the root is never a child) */
    uint32_t next_sibling; /* while building; n_children after */
    int32_t first_token;   /* -1: none */
    uint8_t byte;
};

struct herd_grammar_vocab {
    struct trie_node *nodes;
    uint32_t n_nodes;
    int32_t *next_token; /* [n_tokens] */
    uint8_t *eog;        /* [n_tokens] */
    uint32_t n_tokens;
    uint32_t max_depth; /* the longest piece */
};

void herd_grammar_vocab_destroy(struct herd_grammar_vocab *v) {
    if (!v) return;
    free(v->nodes);
    free(v->next_token);
    free(v->eog);
    free(v);
}

enum herd_status herd_grammar_vocab_create(const char *const *pieces, const uint32_t *lens, const bool *eog,
                                           uint32_t n_tokens, struct herd_grammar_vocab **out, struct herd_error *err) {
    *out = NULL;
    struct herd_grammar_vocab *v = calloc(1, sizeof *v);
    uint64_t total = 1;
    for (uint32_t t = 0; t < n_tokens; t++) total += lens[t];
    if (total > UINT32_MAX / 2) {
        herd_grammar_vocab_destroy(v);
        return herd_error_set(err, HERD_E_NOMEM, "the vocabulary's pieces are too long for the grammar trie");
    }
    if (!v || !(v->nodes = malloc(total * sizeof *v->nodes)) ||
        !(v->next_token = malloc((n_tokens ? n_tokens : 1) * sizeof *v->next_token)) ||
        !(v->eog = malloc(n_tokens ? n_tokens : 1))) {
        herd_grammar_vocab_destroy(v);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory building the grammar's vocabulary trie");
    }
    v->n_tokens = n_tokens;
    v->nodes[0] = (struct trie_node){0, 0, -1, 0};
    v->n_nodes = 1;
    for (uint32_t t = 0; t < n_tokens; t++) {
        v->eog[t] = eog && eog[t];
        v->next_token[t] = -1;
        if (lens[t] == 0) continue;
        if (lens[t] > v->max_depth) v->max_depth = lens[t];
        uint32_t node = 0;
        for (uint32_t i = 0; i < lens[t]; i++) {
            const uint8_t b = (uint8_t)pieces[t][i];
            uint32_t c = v->nodes[node].first_child;
            while (c && v->nodes[c].byte != b) c = v->nodes[c].next_sibling;
            if (!c) {
                c = v->n_nodes++;
                v->nodes[c] = (struct trie_node){0, v->nodes[node].first_child, -1, b};
                v->nodes[node].first_child = c;
            }
            node = c;
        }
        v->next_token[t] = v->nodes[node].first_token;
        v->nodes[node].first_token = (int32_t)t;
    }
    /* breadth first: node order[i] of the built trie becomes node i */
    uint32_t *order = malloc(v->n_nodes * sizeof *order);
    struct trie_node *laid = malloc(v->n_nodes * sizeof *laid);
    if (!order || !laid) {
        free(order);
        free(laid);
        herd_grammar_vocab_destroy(v);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory building the grammar's vocabulary trie");
    }
    uint32_t n = 1;
    order[0] = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct trie_node *old = &v->nodes[order[i]];
        laid[i] = (struct trie_node){n, 0, old->first_token, old->byte};
        for (uint32_t c = old->first_child; c; c = v->nodes[c].next_sibling) order[n++] = c, laid[i].next_sibling++;
        if (!laid[i].next_sibling) laid[i].first_child = 0;
    }
    free(order);
    free(v->nodes);
    v->nodes = laid;
    *out = v;
    return HERD_OK;
}

static uint64_t state_hash(const struct herd_grammar_state *s);
static bool state_equal(const struct herd_grammar_state *a, const struct herd_grammar_state *b);

/* The walk over the trie is a walk over grammar states, and within one
 * mask the states reached are few: inside a string every ordinary
 * character leads back to the same one. So each distinct state is interned
 * once, and its move on a byte is computed once and looked up after: the
 * trie's nodes then cost a table lookup each, not a copy and a step.
 * Past WALK_MAX_STATES distinct states (a grammar that counts, deeply) the
 * walk starts over without the table. */
#define WALK_DEAD       UINT32_MAX
#define WALK_MAX_STATES 8192

struct mask_walk {
    const struct herd_grammar_vocab *v;
    struct herd_grammar_state *states; /* interned, [n_states] */
    uint64_t *hashes;
    uint32_t n_states, cap_states;
    uint32_t *trans;                        /* [cap_states][256]: 0 unknown, WALK_DEAD refused, else id + 1 */
    uint32_t *index;                        /* open addressing of ids + 1 by hash */
    uint32_t n_index;                       /* a power of two, at least twice cap_states */
    struct herd_grammar_state work, *level; /* the scratch state; per depth states for the plain walk */
    struct stack_set tmp;
    uint32_t *scratch;
    uint64_t *allowed;
    uint32_t n_allowed;
    bool overflow; /* too many states for the table */
};

/* The id of a state equal to st (added as a copy when new); WALK_DEAD on
 * out of memory or past the limit (w->overflow set). */
static uint32_t intern(struct mask_walk *w, const struct herd_grammar_state *st) {
    const uint64_t h = state_hash(st);
    if (w->n_index) {
        for (uint32_t k = (uint32_t)h & (w->n_index - 1); w->index[k]; k = (k + 1) & (w->n_index - 1)) {
            const uint32_t id = w->index[k] - 1;
            if (w->hashes[id] == h && state_equal(&w->states[id], st)) return id;
        }
    }
    if (w->n_states == WALK_MAX_STATES) {
        w->overflow = true;
        return WALK_DEAD;
    }
    if (w->n_states == w->cap_states) {
        const uint32_t cap = w->cap_states ? 2 * w->cap_states : 16;
        struct herd_grammar_state *states = realloc(w->states, cap * sizeof *states);
        if (states) w->states = states;
        uint64_t *hashes = states ? realloc(w->hashes, cap * sizeof *hashes) : NULL;
        if (hashes) w->hashes = hashes;
        uint32_t *trans = hashes ? realloc(w->trans, (size_t)cap * 256 * sizeof *trans) : NULL;
        if (trans) w->trans = trans;
        uint32_t *index = trans ? calloc(2 * (size_t)cap, sizeof *index) : NULL;
        if (!index) {
            w->overflow = true;
            return WALK_DEAD;
        }
        memset(w->trans + (size_t)w->cap_states * 256, 0, (size_t)(cap - w->cap_states) * 256 * sizeof *trans);
        free(w->index);
        w->index = index;
        w->n_index = 2 * cap;
        w->cap_states = cap;
        for (uint32_t id = 0; id < w->n_states; id++) {
            uint32_t k = (uint32_t)w->hashes[id] & (w->n_index - 1);
            while (w->index[k]) k = (k + 1) & (w->n_index - 1);
            w->index[k] = id + 1;
        }
    }
    const uint32_t id = w->n_states;
    memset(&w->states[id], 0, sizeof w->states[id]);
    if (state_copy(&w->states[id], st) != HERD_OK) {
        set_free(&w->states[id].set);
        w->overflow = true;
        return WALK_DEAD;
    }
    w->hashes[id] = h;
    w->n_states++;
    uint32_t k = (uint32_t)h & (w->n_index - 1);
    while (w->index[k]) k = (k + 1) & (w->n_index - 1);
    w->index[k] = id + 1;
    return id;
}

/* State sid moved by byte b: an id, or WALK_DEAD when the grammar refuses
 * b there. */
static uint32_t move(struct mask_walk *w, uint32_t sid, uint8_t b) {
    const uint32_t known = w->trans[(size_t)sid * 256 + b];
    if (known) return known == WALK_DEAD ? WALK_DEAD : known - 1;
    uint32_t next = WALK_DEAD;
    if (state_copy(&w->work, &w->states[sid]) == HERD_OK && step_byte(&w->work, b, &w->tmp, w->scratch) == HERD_OK)
        next = intern(w, &w->work);
    if (w->overflow) return WALK_DEAD;
    w->trans[(size_t)sid * 256 + b] = next == WALK_DEAD ? WALK_DEAD : next + 1;
    return next;
}

static void allow_tokens(struct mask_walk *w, uint32_t node) {
    for (int32_t t = w->v->nodes[node].first_token; t >= 0; t = w->v->next_token[t])
        if (!w->v->eog[t]) w->allowed[t / 64] |= 1ull << (t % 64), w->n_allowed++;
}

static void walk_states(struct mask_walk *w, uint32_t node, uint32_t sid) {
    const uint32_t first = w->v->nodes[node].first_child, end = first + w->v->nodes[node].next_sibling;
    for (uint32_t c = first; c < end && !w->overflow; c++) {
        const uint32_t next = move(w, sid, w->v->nodes[c].byte);
        if (next == WALK_DEAD) continue;
        allow_tokens(w, c);
        walk_states(w, c, next);
    }
}

/* The walk without the table: one state per depth, copied and stepped at
 * every node. */
static void walk_plain(struct mask_walk *w, uint32_t node, uint32_t depth) {
    const uint32_t first = w->v->nodes[node].first_child, end = first + w->v->nodes[node].next_sibling;
    for (uint32_t c = first; c < end; c++) {
        struct herd_grammar_state *next = &w->level[depth + 1];
        if (state_copy(next, &w->level[depth]) != HERD_OK) continue;
        if (step_byte(next, w->v->nodes[c].byte, &w->tmp, w->scratch) != HERD_OK) continue;
        allow_tokens(w, c);
        walk_plain(w, c, depth + 1);
    }
}

size_t herd_grammar_mask_words(const struct herd_grammar_vocab *v) { return ((size_t)v->n_tokens + 63) / 64; }

uint32_t herd_grammar_mask(const struct herd_grammar_state *s, const struct herd_grammar_vocab *v, uint64_t *allowed) {
    const size_t words = herd_grammar_mask_words(v);
    memset(allowed, 0, words * sizeof *allowed);
    struct mask_walk w = {.v = v, .allowed = allowed};
    w.scratch = malloc((HERD_GRAMMAR_MAX_DEPTH + 1) * sizeof *w.scratch);
    const uint32_t root = w.scratch ? intern(&w, s) : WALK_DEAD;
    if (root != WALK_DEAD) walk_states(&w, 0, root);
    if (w.overflow && w.scratch) {
        /* start over the plain way */
        memset(allowed, 0, words * sizeof *allowed);
        w.n_allowed = 0;
        w.level = calloc((size_t)v->max_depth + 2, sizeof *w.level);
        if (w.level && state_copy(&w.level[0], s) == HERD_OK) walk_plain(&w, 0, 0);
    }
    if (herd_grammar_can_end(s))
        for (uint32_t t = 0; t < v->n_tokens; t++)
            if (v->eog[t]) allowed[t / 64] |= 1ull << (t % 64), w.n_allowed++;
    if (w.level)
        for (uint32_t i = 0; i < v->max_depth + 2; i++) set_free(&w.level[i].set);
    for (uint32_t i = 0; i < w.n_states; i++) set_free(&w.states[i].set);
    set_free(&w.work.set);
    free(w.level);
    free(w.states);
    free(w.hashes);
    free(w.trans);
    free(w.index);
    free(w.scratch);
    set_free(&w.tmp);
    return w.n_allowed;
}

/* ------------------------------------------------------------ mask cache */

struct cache_entry {
    uint64_t hash, last_used;
    struct herd_grammar_state *key; /* NULL: empty slot */
    uint64_t *bits;
    uint32_t n_allowed;
};

struct herd_grammar_mask_cache {
    const struct herd_grammar_vocab *v;
    struct cache_entry *entries;
    uint32_t capacity;
    uint64_t clock, hits, misses;
};

/* A hash of the state that does not depend on the order of its stacks
 * (the same set may be reached in another order): the exclusive or of the
 * stacks' own hashes (a set holds each stack once, so none cancels), then
 * the partial character. */
static uint64_t state_hash(const struct herd_grammar_state *s) {
    uint64_t h = 0;
    for (uint32_t i = 0; i < s->set.n; i++) h ^= stack_hash(stack_at(&s->set, i), s->set.len[i]);
    /* only the partial bytes in use: the array keeps stale ones after them */
    uint8_t tail[6] = {0, 0, 0, 0, s->n_partial, s->need};
    memcpy(tail, s->partial, s->n_partial);
    return XXH3_64bits_withSeed(tail, sizeof tail, h ^ s->set.n);
}

static bool set_contains(const struct stack_set *s, const uint32_t *stk, uint32_t len) {
    for (uint32_t i = 0; i < s->n; i++)
        if (s->len[i] == len && (len == 0 || memcmp(s->pool + s->off[i], stk, len * sizeof *stk) == 0)) return true;
    return false;
}

static bool state_equal(const struct herd_grammar_state *a, const struct herd_grammar_state *b) {
    if (a->set.n != b->set.n || a->n_partial != b->n_partial || a->need != b->need ||
        memcmp(a->partial, b->partial, a->n_partial) != 0)
        return false;
    /* a set holds each stack once, so equal counts and inclusion is equality */
    for (uint32_t i = 0; i < a->set.n; i++)
        if (!set_contains(&b->set, stack_at(&a->set, i), a->set.len[i])) return false;
    return true;
}

struct herd_grammar_mask_cache *herd_grammar_mask_cache_create(const struct herd_grammar_vocab *v, uint32_t capacity) {
    struct herd_grammar_mask_cache *c = calloc(1, sizeof *c);
    if (!c || !(c->entries = calloc(capacity ? capacity : 1, sizeof *c->entries))) {
        free(c);
        return NULL;
    }
    c->v = v;
    c->capacity = capacity ? capacity : 1;
    return c;
}

void herd_grammar_mask_cache_destroy(struct herd_grammar_mask_cache *c) {
    if (!c) return;
    for (uint32_t i = 0; i < c->capacity; i++) {
        herd_grammar_state_destroy(c->entries[i].key);
        free(c->entries[i].bits);
    }
    free(c->entries);
    free(c);
}

const uint64_t *herd_grammar_mask_cached(struct herd_grammar_mask_cache *c, const struct herd_grammar_state *s,
                                         uint32_t *n_allowed) {
    const uint64_t h = state_hash(s);
    struct cache_entry *victim = &c->entries[0];
    for (uint32_t i = 0; i < c->capacity; i++) {
        struct cache_entry *e = &c->entries[i];
        if (e->key && e->hash == h && state_equal(e->key, s)) {
            e->last_used = ++c->clock;
            c->hits++;
            *n_allowed = e->n_allowed;
            return e->bits;
        }
        if (!e->key || (victim->key && e->last_used < victim->last_used)) victim = e;
    }
    c->misses++;
    if (!victim->bits && !(victim->bits = malloc(herd_grammar_mask_words(c->v) * sizeof *victim->bits))) return NULL;
    struct herd_grammar_state *key = herd_grammar_state_clone(s);
    if (!key) return NULL;
    herd_grammar_state_destroy(victim->key);
    victim->key = key;
    victim->hash = h;
    victim->last_used = ++c->clock;
    victim->n_allowed = herd_grammar_mask(s, c->v, victim->bits);
    *n_allowed = victim->n_allowed;
    return victim->bits;
}

void herd_grammar_mask_cache_stats(const struct herd_grammar_mask_cache *c, uint64_t *hits, uint64_t *misses) {
    *hits = c->hits;
    *misses = c->misses;
}
