/* The built-in profiler behind `herd run --profile` and `herd bench
 * --profile`: wall time per operation kind of the forward pass (matmuls by
 * weight type and role, attention, norms, RoPE, KV stores, activation,
 * residual adds, embedding lookup) plus sampling, as shares of the whole.
 * The forward pass records into it when a context has one attached
 * (herd_context.profile); each record is two clock reads on the calling
 * thread, so a multi-threaded operation counts its whole span, waits for
 * the slowest thread included. Off (NULL), it costs one branch per op. */
#ifndef HERD_MODEL_PROFILE_H
#define HERD_MODEL_PROFILE_H

#include <stdint.h>
#include <stdio.h>

#include "herd/gguf.h"

enum herd_prof_op {
    HERD_PROF_EMBED,
    HERD_PROF_ROPE,       /* the batch's rotation angles */
    HERD_PROF_NORM,       /* the first layer's rmsnorm */
    HERD_PROF_ROPE_STORE, /* (qwen2 biases,) RoPE on q and k, k and v into the KV cache */
    HERD_PROF_ATTENTION,
    HERD_PROF_ROPE_STORE_ATTENTION, /* decode (one token per sequence): both in one step, per KV head */
    HERD_PROF_ADD_NORM,             /* residual add and the next rmsnorm, fused */
    HERD_PROF_ACTIVATION,           /* silu(gate) * up */
    HERD_PROF_SAMPLING,
    HERD_PROF_OPS
};

enum herd_prof_matmul { /* which weights a matmul multiplies */
                        HERD_PROF_MM_QKV,
                        HERD_PROF_MM_ATTN_OUT,
                        HERD_PROF_MM_GATE_UP,
                        HERD_PROF_MM_DOWN,
                        HERD_PROF_MM_OUTPUT,
                        HERD_PROF_MM_ROLES
};

struct herd_profile {
    uint64_t op_ns[HERD_PROF_OPS], op_calls[HERD_PROF_OPS];
    uint64_t mm_ns[HERD_PROF_MM_ROLES][HERD_GGML_TYPE__COUNT], mm_calls[HERD_PROF_MM_ROLES][HERD_GGML_TYPE__COUNT];
    uint64_t decodes, tokens; /* herd_decode calls and the tokens they computed */
};

uint64_t herd_prof_now_ns(void);
/* Adds the time since t0 (from herd_prof_now_ns) to op; p may be NULL. */
void herd_prof_op(struct herd_profile *p, enum herd_prof_op op, uint64_t t0);
void herd_prof_matmul(struct herd_profile *p, enum herd_prof_matmul role, enum herd_ggml_type type, uint64_t t0);

/* A table, largest share first: operation, calls, total ms, ms per
 * herd_decode call, share of the recorded time. title heads it. */
void herd_profile_print(const struct herd_profile *p, const char *title, FILE *out);

#endif
