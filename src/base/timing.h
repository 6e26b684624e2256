/* Wall-clock timing and the median, shared by the commands that measure
 * (run, bench, tokenize) and the roofline probes. */
#ifndef HERD_BASE_TIMING_H
#define HERD_BASE_TIMING_H

#include <stddef.h>

/* Seconds on the monotonic clock (an arbitrary origin: use differences). */
double herd_time_now_s(void);

/* Median of n values (n >= 1); sorts v in place. */
double herd_median(double *v, size_t n);

#endif
