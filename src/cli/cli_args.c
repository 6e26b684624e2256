/* Flag parsing for `herd` subcommands: --long VALUE, --long=VALUE, -s VALUE,
 * "--" ends options. Numbers are parsed strictly (no trailing junk, no
 * overflow). */
#include "cli/cli_args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_print_help(const struct cli_command *cmd, const struct cli_opt *opts, void *file) {
    FILE *f = file;
    fprintf(f, "usage: herd %s [options]%s%s\n\n%s\n", cmd->name, cmd->args && *cmd->args ? " " : "",
            cmd->args ? cmd->args : "", cmd->summary);
    fprintf(f, "\noptions:\n");
    for (const struct cli_opt *o = opts; o->long_name; o++) {
        char left[64];
        if (o->short_name)
            snprintf(left, sizeof left, "-%c, --%s%s%s", o->short_name, o->long_name, o->metavar ? " " : "",
                     o->metavar ? o->metavar : "");
        else
            snprintf(left, sizeof left, "    --%s%s%s", o->long_name, o->metavar ? " " : "",
                     o->metavar ? o->metavar : "");
        fprintf(f, "  %-28s %s\n", left, o->help);
    }
    fprintf(f, "  %-28s %s\n", "-h, --help", "print this help and exit");
    if (cmd->details) fprintf(f, "\n%s\n", cmd->details);
}

static int usage_error(const struct cli_command *cmd, const struct cli_opt *opts, const char *fmt, const char *arg) {
    fprintf(stderr, "herd %s: ", cmd->name);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    cli_print_help(cmd, opts, stderr);
    return CLI_EXIT_USAGE;
}

static bool parse_u64(const char *s, uint64_t *out) {
    if (!*s || *s == '-' || *s == '+') return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end) return false;
    *out = v;
    return true;
}

static bool parse_f64(const char *s, double *out) {
    if (!*s) return false;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

static int store(const struct cli_command *cmd, const struct cli_opt *opts, const struct cli_opt *o,
                 const char *value) {
    switch (o->kind) {
    case CLI_STRING: *(const char **)o->target = value; return CLI_OK;
    case CLI_U64:
        if (!parse_u64(value, o->target))
            return usage_error(cmd, opts, "option --%s needs a non-negative integer", o->long_name);
        return CLI_OK;
    case CLI_F64:
        if (!parse_f64(value, o->target)) return usage_error(cmd, opts, "option --%s needs a number", o->long_name);
        return CLI_OK;
    case CLI_FLAG: *(bool *)o->target = true; return CLI_OK;
    case CLI_STRING_LIST: {
        struct cli_strings *l = o->target;
        if (l->n == CLI_LIST_MAX) return usage_error(cmd, opts, "option --%s given more than 16 times", o->long_name);
        l->v[l->n++] = value;
        l->v[l->n] = NULL;
        return CLI_OK;
    }
    }
    return CLI_OK;
}

int cli_parse(const struct cli_command *cmd, const struct cli_opt *opts, int argc, char **argv, const char **pos,
              int *n_pos) {
    *n_pos = 0;
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (options_done || a[0] != '-' || a[1] == '\0') {
            if (*n_pos >= cmd->max_pos) return usage_error(cmd, opts, "unexpected argument '%s'", a);
            pos[(*n_pos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_done = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            cli_print_help(cmd, opts, stdout);
            return CLI_EXIT_OK;
        }
        const struct cli_opt *found = NULL;
        const char *inline_value = NULL;
        if (a[1] == '-') {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            for (const struct cli_opt *o = opts; o->long_name; o++)
                if (strlen(o->long_name) == len && strncmp(o->long_name, name, len) == 0) found = o;
            if (eq) inline_value = eq + 1;
        } else if (a[2] == '\0') {
            for (const struct cli_opt *o = opts; o->long_name; o++)
                if (o->short_name == a[1]) found = o;
        }
        if (!found) return usage_error(cmd, opts, "unknown option '%s'", a);
        if (found->kind == CLI_FLAG) {
            if (inline_value) return usage_error(cmd, opts, "option --%s takes no value", found->long_name);
            *(bool *)found->target = true;
            continue;
        }
        const char *value = inline_value;
        if (!value) {
            if (i + 1 >= argc) return usage_error(cmd, opts, "option --%s needs a value", found->long_name);
            value = argv[++i];
        }
        int rc = store(cmd, opts, found, value);
        if (rc != CLI_OK) return rc;
    }
    if (*n_pos < cmd->min_pos) return usage_error(cmd, opts, "missing argument: %s", cmd->args ? cmd->args : "");
    return CLI_OK;
}
