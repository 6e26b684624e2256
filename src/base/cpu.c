/* CPU feature detection and the process's CPU allowance. */
#include "base/cpu.h"

#include "base/cgroup.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct herd_cpu_features features;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void detect(void) {
    __builtin_cpu_init();
    features.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    features.avx512 = features.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    features.avx512_vnni = features.avx512 && __builtin_cpu_supports("avx512vnni");
    const char *cap = getenv("HERD_CPU");
    if (cap && strcmp(cap, "ref") == 0) memset(&features, 0, sizeof features);
    if (cap && strcmp(cap, "avx2") == 0) features.avx512 = features.avx512_vnni = false;
    if (cap && strcmp(cap, "avx512") == 0) features.avx512_vnni = false;
}

const struct herd_cpu_features *herd_cpu_features(void) {
    pthread_once(&once, detect);
    return &features;
}

void herd_cpu_allowance(struct herd_cpu_allowance *out) {
    memset(out, 0, sizeof *out);
    cpu_set_t set;
    out->affinity = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    const struct herd_cgroup_limits *cg = herd_cgroup_limits();
    out->cpuset = cg->cpuset_cpus;
    out->cpuset_file = cg->cpuset_file;
    out->quota = cg->cpu_quota;
    out->quota_file = cg->cpu_file;
    int n = out->affinity > 0 ? out->affinity : 1;
    /* The CPU set bounds the affinity mask already (the kernel intersects
     * them); it is read too for a mask set wider before a move. */
    if (out->cpuset > 0 && out->cpuset < n) n = out->cpuset;
    /* Rounded up, as Go's and the JVM's runtimes do: a 1.5-CPU quota runs 2
     * threads that are throttled for part of each period, which still
     * computes more than 1 thread that never is. */
    const int quota = (int)ceil(out->quota - 1e-9);
    if (out->quota > 0 && quota < n) {
        n = quota > 0 ? quota : 1;
        out->by_quota = true;
    }
    out->n = n;
}

int herd_cpu_count(void) {
    struct herd_cpu_allowance a;
    herd_cpu_allowance(&a);
    return a.n;
}
