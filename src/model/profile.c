/* Recording and printing of the per-operation profile (profile.h). */
#include "model/profile.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t herd_prof_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void herd_prof_op(struct herd_profile *p, enum herd_prof_op op, uint64_t t0) {
    if (!p) return;
    p->op_ns[op] += herd_prof_now_ns() - t0;
    p->op_calls[op]++;
}

void herd_prof_matmul(struct herd_profile *p, enum herd_prof_matmul role, enum herd_ggml_type type, uint64_t t0) {
    if (!p) return;
    p->mm_ns[role][type] += herd_prof_now_ns() - t0;
    p->mm_calls[role][type]++;
}

static const char *const op_names[HERD_PROF_OPS] = {
    "embedding lookup",       "rope angles", "rmsnorm",
    "rope + kv cache store",  "attention",   "rope + kv store + attention",
    "residual add + rmsnorm", "silu * up",   "sampling"};
static const char *const role_names[HERD_PROF_MM_ROLES] = {"attn q/k/v", "attn output", "ffn gate/up", "ffn down",
                                                           "lm head"};

struct row {
    char name[64];
    uint64_t ns, calls;
};

static int by_time(const void *a, const void *b) {
    const struct row *x = a, *y = b;
    return (x->ns < y->ns) - (x->ns > y->ns);
}

void herd_profile_print(const struct herd_profile *p, const char *title, FILE *out) {
    struct row rows[HERD_PROF_OPS + HERD_PROF_MM_ROLES * HERD_GGML_TYPE__COUNT];
    size_t n = 0;
    uint64_t total = 0;
    for (int op = 0; op < HERD_PROF_OPS; op++) {
        if (!p->op_calls[op]) continue;
        snprintf(rows[n].name, sizeof rows[n].name, "%s", op_names[op]);
        rows[n].ns = p->op_ns[op];
        rows[n++].calls = p->op_calls[op];
        total += p->op_ns[op];
    }
    for (int r = 0; r < HERD_PROF_MM_ROLES; r++)
        for (int t = 0; t < HERD_GGML_TYPE__COUNT; t++) {
            if (!p->mm_calls[r][t]) continue;
            const struct herd_ggml_type_info *ti = herd_ggml_type_info((uint32_t)t);
            snprintf(rows[n].name, sizeof rows[n].name, "matmul %s %s", ti ? ti->name : "?", role_names[r]);
            rows[n].ns = p->mm_ns[r][t];
            rows[n++].calls = p->mm_calls[r][t];
            total += p->mm_ns[r][t];
        }
    qsort(rows, n, sizeof *rows, by_time);
    const double per = p->decodes ? (double)p->decodes : 1;
    fprintf(out, "\nprofile: %s: %llu forward passes, %llu tokens, %.1f ms recorded\n", title,
            (unsigned long long)p->decodes, (unsigned long long)p->tokens, (double)total / 1e6);
    fprintf(out, "| %-30s | %9s | %11s | %12s | %6s |\n", "operation", "calls", "total ms", "ms per pass", "share");
    fprintf(out, "|--------------------------------|-----------|-------------|--------------|--------|\n");
    for (size_t i = 0; i < n; i++)
        fprintf(out, "| %-30s | %9llu | %11.2f | %12.4f | %5.1f%% |\n", rows[i].name, (unsigned long long)rows[i].calls,
                (double)rows[i].ns / 1e6, (double)rows[i].ns / 1e6 / per,
                total ? 100.0 * (double)rows[i].ns / (double)total : 0.0);
}
