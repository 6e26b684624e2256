/* HERD_ASSERT: for broken invariants (bugs) only, never for bad input.
 * It stays on in release builds: a wrong answer served quietly is worse than
 * a crash a supervisor restarts. */
#ifndef HERD_BASE_ASSERT_H
#define HERD_BASE_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define HERD_ASSERT(cond)                                                                                              \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "herd: %s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond);                         \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

#endif
