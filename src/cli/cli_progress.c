/* The progress line (cli_progress.h). */
#include "cli/cli_progress.h"

#include <stdio.h>
#include <unistd.h>

#include "base/timing.h"

void cli_progress_start(struct cli_progress *p, const char *what, uint64_t n) {
    p->what = what;
    p->n = n;
    p->t0_s = herd_time_now_s();
    p->tty = isatty(fileno(stderr)) != 0;
    p->last_decile = -1;
}

void cli_progress_update(struct cli_progress *p, uint64_t i, uint64_t bytes) {
    const double el = herd_time_now_s() - p->t0_s;
    const double frac = p->n ? (double)i / (double)p->n : 1.0;
    const double eta = frac > 0 ? el / frac - el : 0;
    char b[32] = "";
    if (bytes) snprintf(b, sizeof b, ", %.1f MiB", (double)bytes / (1024.0 * 1024.0));
    if (p->tty) {
        char bar[21];
        const int full = (int)(frac * 20);
        for (int k = 0; k < 20; k++) bar[k] = k < full ? '#' : '.';
        bar[20] = '\0';
        fprintf(stderr, "\r[%s] %llu/%llu %ss%s, %.0f s, ETA %.0f s   ", bar, (unsigned long long)i,
                (unsigned long long)p->n, p->what, b, el, eta);
        fflush(stderr);
        return;
    }
    const int decile = (int)(frac * 10);
    if (decile == p->last_decile && i != p->n) return;
    p->last_decile = decile;
    fprintf(stderr, "%s %llu/%llu%s, %.0f s, ETA %.0f s\n", p->what, (unsigned long long)i, (unsigned long long)p->n, b,
            el, eta);
}

void cli_progress_finish(struct cli_progress *p) {
    if (p->tty) fputc('\n', stderr);
}
