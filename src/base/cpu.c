/* CPU feature detection and the process's CPU allowance. */
#include "base/cpu.h"

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

/* cgroup v2: "max 100000" or "QUOTA PERIOD" in /sys/fs/cgroup/cpu.max. */
static int cgroup_cpus(void) {
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (!f) return 0;
    char quota[32] = {0};
    long period = 0;
    int n = fscanf(f, "%31s %ld", quota, &period);
    fclose(f);
    if (n != 2 || strcmp(quota, "max") == 0 || period <= 0) return 0;
    long q = strtol(quota, NULL, 10);
    if (q <= 0) return 0;
    return (int)((q + period - 1) / period);
}

int herd_cpu_count(void) {
    cpu_set_t set;
    int n = 1;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    int quota = cgroup_cpus();
    if (quota > 0 && quota < n) n = quota;
    return n > 0 ? n : 1;
}
