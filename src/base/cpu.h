/* What the processor and the process's CPU allowance are: instruction set
 * features (read once, at run time, so one binary runs on any x86-64) and
 * the number of CPUs this process may use (affinity mask and cgroup quota). */
#ifndef HERD_BASE_CPU_H
#define HERD_BASE_CPU_H

#include <stdbool.h>

struct herd_cpu_features {
    bool avx2;   /* with FMA and F16C, as every AVX2 processor has them */
    bool avx512; /* F, BW, VL, DQ */
    bool avx512_vnni;
};

/* Detected once; HERD_CPU=ref|avx2|avx512 caps what is used (for tests and
 * for comparing kernels). Thread-safe after the first call returns. */
const struct herd_cpu_features *herd_cpu_features(void);

/* CPUs this process may run on: the affinity mask, further limited by a
 * cgroup v2 cpu.max quota (rounded up). At least 1. */
int herd_cpu_count(void);

#endif
