/* A progress line for long commands (quantize, convert, imatrix): on a
 * terminal one line redrawn in place, "[####....] i/n what, bytes, ETA";
 * elsewhere (a log, CI) a plain line at every 10 % so the output stays
 * short. Writes to stderr; single-threaded. */
#ifndef HERD_CLI_CLI_PROGRESS_H
#define HERD_CLI_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct cli_progress {
    const char *what; /* "tensor", "chunk" */
    uint64_t n;       /* items in all */
    double t0_s;      /* start time */
    bool tty;
    int last_decile; /* for the plain form */
};

void cli_progress_start(struct cli_progress *p, const char *what, uint64_t n);

/* Item i (1-based) of n is done; bytes: bytes written so far (0: none shown). */
void cli_progress_update(struct cli_progress *p, uint64_t i, uint64_t bytes);

/* Ends the line on a terminal. */
void cli_progress_finish(struct cli_progress *p);

#endif
