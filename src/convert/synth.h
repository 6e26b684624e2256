/* Random-weight models of real shapes (llama, qwen3, gemma2/3, phi3), for tests and benchmarks that
 * cannot download weights. The weight scales follow the recipe of the test
 * fixtures (../shared/fixtures/README.md, "Weight recipe"), which keeps
 * logits spread and greedy decoding stable, so a synthetic model exercises
 * the engine like a trained one of the same shape. */
#ifndef HERD_CONVERT_SYNTH_H
#define HERD_CONVERT_SYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "convert/quantize.h"
#include "herd/gguf.h"
#include "herd/status.h"

struct herd_synth_shape {
    const char *name;
    uint32_t n_embd, n_layer, n_head, n_head_kv, n_ff;
    uint32_t n_ctx;
    float rope_freq_base;
    bool tied;                                      /* output shares token_embd, as in the real model */
    const char *arch;                               /* NULL: llama */
    uint32_t head_dim;                              /* 0: n_embd / n_head */
    uint32_t n_swa;                                 /* sliding window, 0: none */
    float attn_softcap, final_softcap, rope_linear; /* 0: none */
    float rms_eps;                                  /* 0: 1e-5 */
    uint32_t n_expert, n_expert_used, n_ff_exp;     /* mixture of experts; 0: dense (qwen2moe: n_ff is the
                                                     * shared expert's) */
};

/* The named shapes, in a fixed order; NULL past the end. */
const struct herd_synth_shape *herd_synth_shape_at(size_t i);
const struct herd_synth_shape *herd_synth_shape_find(const char *name);

struct herd_synth_params {
    const char *shape; /* a name from herd_synth_shape_at */
    /* Any TYPE herd quantize writes (Q4_K_M, Q8_0, F16, ...). ALL_F32 is
     * written directly; any other is the F32 model quantized by
     * herd_quantize_model, so it is the file `herd quantize` (and
     * llama-quantize) makes of the F32 one: its mix, its tensor order. */
    enum herd_ftype ftype;
    uint64_t seed;
    const char *vocab_path; /* GGUF whose tokenizer.* entries are copied */
    int tied;               /* -1: as the shape says; 0 or 1 to override */
    uint32_t n_layer;       /* 0: the shape's; else this many layers (1..HERD_MAX_LAYERS) */
    uint32_t n_ff;          /* 0: the shape's; else this FFN width (dense shapes, 1..HERD_MAX_FF) */
    const char *out_path;
};

void herd_synth_default_params(struct herd_synth_params *p);

/* Writes the model to p->out_path (atomically: nothing appears there on
 * failure). Same parameters, same bytes. A quantized model goes through an
 * F32 temporary file beside p->out_path ("OUT.f32.tmp-PID", as large as
 * the F32 model, removed whatever happens), which herd_quantize_model reads
 * with the kernel's page cache; the weights are never all in memory. */
enum herd_status herd_synth_write(const struct herd_synth_params *p, struct herd_error *err);

#endif
