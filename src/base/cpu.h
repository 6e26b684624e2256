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

/* CPUs this process may run on: the affinity mask, further limited by the
 * cgroup's CPU set and CPU quota (v2 cpu.max or v1 cpu.cfs_quota_us /
 * cpu.cfs_period_us, the smallest up the hierarchy; rounded up). At least 1.
 * See base/cgroup.h. */
int herd_cpu_count(void);

/* How herd_cpu_count came to its number (for the line a command logs). */
struct herd_cpu_allowance {
    int n;                   /* herd_cpu_count() */
    int affinity;            /* CPUs in the affinity mask; 0: unknown */
    int cpuset;              /* CPUs in the cgroup's CPU set; 0: unknown */
    const char *cpuset_file; /* where cpuset came from ("" when unknown) */
    double quota;            /* the cgroup's CPU quota in CPUs; 0: none */
    const char *quota_file;  /* where quota came from ("" when none) */
    bool by_quota;           /* the quota is what bounds n */
};
void herd_cpu_allowance(struct herd_cpu_allowance *out);

#endif
