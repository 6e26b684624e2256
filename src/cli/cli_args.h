/* Table-driven command-line parsing shared by every `herd` subcommand, so
 * each documents its flags once (the table is also the --help text) and all
 * answer an unknown flag the same way: one line, the usage, exit code 2. */
#ifndef HERD_CLI_ARGS_H
#define HERD_CLI_ARGS_H

#include <stdbool.h>
#include <stdint.h>

enum cli_opt_kind { CLI_FLAG, CLI_STRING, CLI_U64, CLI_F64, CLI_STRING_LIST };

/* Target of a CLI_STRING_LIST option, which may be given several times. */
#define CLI_LIST_MAX 16
struct cli_strings {
    const char *v[CLI_LIST_MAX + 1]; /* NULL-terminated */
    int n;
};

struct cli_opt {
    const char *long_name; /* without the dashes: "json" */
    char short_name;       /* 0 for none */
    enum cli_opt_kind kind;
    void *target;        /* bool *, const char **, uint64_t *, double *, struct cli_strings * */
    const char *metavar; /* "N", "FILE"; NULL for flags */
    const char *help;
};

struct cli_command {
    const char *name;     /* "inspect" */
    const char *args;     /* positional synopsis: "FILE" */
    const char *summary;  /* one line */
    const char *details;  /* paragraphs after the options, may be NULL */
    int min_pos, max_pos; /* positional argument counts */
};

/* Results of cli_parse. */
enum { CLI_OK = 0, CLI_EXIT_OK = -1 /* --help printed */, CLI_EXIT_USAGE = 2 };

/* Parses argv[1..argc) (argv[0] is the command name) against opts (ended by
 * an entry with long_name NULL). Positionals are stored in pos (up to
 * cmd->max_pos). On an unknown option, a missing or malformed value, or a
 * wrong positional count, prints one line and the usage to stderr and
 * returns CLI_EXIT_USAGE; on --help prints the help to stdout and returns
 * CLI_EXIT_OK. */
int cli_parse(const struct cli_command *cmd, const struct cli_opt *opts, int argc, char **argv, const char **pos,
              int *n_pos);

/* Prints "usage: herd NAME ARGS" and the option table to f. */
void cli_print_help(const struct cli_command *cmd, const struct cli_opt *opts, void *file);

#endif
