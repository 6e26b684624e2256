/* The Llama-family forward pass over a ragged batch of tokens from many
 * sequences (see forward.h). Per layer:
 *   xn = rmsnorm(x) * attn_norm
 *   q, k, v = xn Wq^T, xn Wk^T, xn Wv^T (+ biases for qwen2; then each head
 *   of q and k RMS-normed for qwen3 / gemma3); RoPE on q and k
 *   k, v -> the KV cache at (seq, pos); attention of each token over its own
 *   sequence's positions 0..pos (causal; the last n_swa of them on a
 *   sliding layer), online softmax block by block
 *   x += att Wo^T                      (gemma: x += rmsnorm(att Wo^T) * post_attn)
 *   xn = rmsnorm(x) * ffn_norm;  x += (silu(xn Wgate^T) * xn Wup^T) Wdown^T
 *                                      (gemma: GELU-tanh, and the sum normed by post_ffn)
 * then logits = (rmsnorm(x) * output_norm) Wout^T for the tokens that ask
 * (gemma2: soft-capped). Gemma scales the embeddings by sqrt(n_embd).
 * Every per-token computation is independent of the rest of the batch, so a
 * sequence's results are the same alone or batched. */
#include "model/forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "base/cpu.h"
#include "kernels/quant.h"

void herd_context_default_params(struct herd_context_params *p) {
    memset(p, 0, sizeof *p);
    p->max_batch_tokens = 512;
    p->max_outputs = 64;
    p->kv_tokens = 4096;
    p->kv_block_tokens = 16;
    p->max_seqs = 64;
    p->kv_type = HERD_KV_F16;
}

/* Per-batch bookkeeping, one entry per sequence slot. */
struct seq_span {
    uint32_t first_pos, count, old_len;
    bool present;
};

/* Prompt tokens per attention task: consecutive tokens of one sequence walk
 * its blocks together, so each K and V row is loaded and converted once for
 * all their query heads (decode tokens are tiles of one). */
#define ATT_TILE_TOKENS 4

/* Batches of at most this many tokens run as a team pass (team_pass): the
 * norms between the matmuls then cost each thread what they cost one, which
 * for a few tokens is less than the waiting they save. */
#define TEAM_MAX_TOKENS 4

/* Floats of per-thread attention scratch: scaled q, acc ([rows][head_dim]
 * each), m and l ([rows] each) for a tile's rows (tokens x G query heads),
 * padded to a cache line. */
static size_t att_scratch_floats(const struct herd_model_desc *d) {
    size_t G = 1; /* the largest query group of any layer */
    for (uint64_t l = 0; l < d->n_layer; l++)
        if (d->n_head_layer[l] / d->n_head_kv_layer[l] > G) G = d->n_head_layer[l] / d->n_head_kv_layer[l];
    const size_t rows = ATT_TILE_TOKENS * G;
    return (2 * rows * d->head_dim + 2 * rows + 15) & ~(size_t)15;
}

static void *alloc_floats(size_t n, bool *ok) {
    void *p = aligned_alloc(64, ((n ? n : 1) * sizeof(float) + 63) & ~(size_t)63);
    if (!p) *ok = false;
    return p;
}

enum herd_status herd_context_create(const struct herd_model *m, const struct herd_context_params *pp,
                                     struct herd_context **out, struct herd_error *err) {
    *out = NULL;
    struct herd_context_params p = *pp;
    if (p.n_threads <= 0) p.n_threads = herd_cpu_count();
    if (p.max_batch_tokens == 0 || p.max_outputs == 0 || p.kv_tokens == 0 || p.max_seqs == 0 || p.kv_block_tokens == 0)
        return herd_error_set(err, HERD_E_INVALID, "context sizes must be positive");
    if (p.max_outputs > p.max_batch_tokens) p.max_outputs = p.max_batch_tokens;
    if (p.n_ctx == 0) p.n_ctx = p.kv_tokens;
    struct herd_context *c = calloc(1, sizeof *c);
    if (!c) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    c->model = m;
    c->params = p;
    c->k = p.kernels ? p.kernels : herd_kernels_best();
    const struct herd_model_desc *d = &m->desc;
    const size_t B = p.max_batch_tokens, E = d->n_embd, qd = d->n_head * d->head_dim;
    const size_t kvd = d->n_head_kv * d->head_dim, V = d->n_vocab;
    size_t F = d->n_ff; /* the widest FFN: dense, an expert's or the shared expert's */
    if (d->n_expert && d->n_ff_exp > F) F = d->n_ff_exp;
    if (d->n_expert && d->n_ff_shexp > F) F = d->n_ff_shexp;
    struct herd_kv_params kp = {
        .n_layer = (uint32_t)d->n_layer,
        .kv_dim = (uint32_t)kvd,
        .layer_heads = d->n_head_kv_layer,
        .head_dim = (uint32_t)d->head_dim,
        .block_tokens = p.kv_block_tokens,
        .n_blocks = (p.kv_tokens + p.kv_block_tokens - 1) / p.kv_block_tokens,
        .max_seqs = p.max_seqs,
        .type = p.kv_type,
        .kernels = c->k,
    };
    enum herd_status rc = herd_kv_create(&kp, &c->kv, err);
    if (rc != HERD_OK) goto fail;
    c->pool = herd_pool_create(p.n_threads);
    if (!c->pool) {
        rc = herd_error_set(err, HERD_E_NOMEM, "cannot start %d threads", p.n_threads);
        goto fail;
    }
    bool ok = true;
    c->x = alloc_floats(B * E, &ok);
    c->xn = alloc_floats(B * E, &ok);
    c->q = alloc_floats(B * qd, &ok);
    c->kx = alloc_floats(B * kvd, &ok);
    c->vx = alloc_floats(B * kvd, &ok);
    c->att = alloc_floats(B * qd, &ok);
    c->gate = alloc_floats(B * F, &ok);
    c->up = alloc_floats(B * F, &ok);
    c->out_rows = alloc_floats(p.max_outputs * E, &ok);
    if (d->n_expert) {
        const size_t X = d->n_expert, K = d->n_expert_used;
        c->moe_probs = alloc_floats(B * X, &ok);
        c->moe_choice = calloc(B * K, sizeof *c->moe_choice);
        c->moe_weight = alloc_floats(B * K, &ok);
        c->moe_rows = calloc(B, sizeof *c->moe_rows);
        c->moe_wrow = alloc_floats(B, &ok);
        c->moe_x = alloc_floats(B * E, &ok);
        c->moe_y = alloc_floats(B * E, &ok);
        c->moe_acc = alloc_floats(B * E, &ok);
        if (!c->moe_choice || !c->moe_rows) ok = false;
    }
    c->logits = alloc_floats(p.max_outputs * V, &ok);
    /* per thread: one attention tile's queries, outputs and softmax state, cache-line separated */
    c->att_scratch = alloc_floats((size_t)p.n_threads * att_scratch_floats(d), &ok);
    c->att_tiles = calloc(B, sizeof *c->att_tiles);
    if (!c->att_tiles) ok = false;
    c->rope_cs = alloc_floats(B * (d->n_rot / 2) * 2, &ok);
    c->rope_inv_freq = calloc(d->n_rot / 2 + 1, sizeof *c->rope_inv_freq);
    if (!c->rope_inv_freq) ok = false;
    for (uint64_t i = 0; ok && i < d->n_rot / 2; i++) {
        /* the same double arithmetic the angle always had: theta = pos * this */
        c->rope_inv_freq[i] = pow(d->rope_freq_base, -2.0 * (double)i / (double)d->n_rot) * d->rope_freq_scale;
    }
    /* LongRoPE's factors by the context's length, as llama.cpp chooses them
     * (Hugging Face chooses by each sequence's current length) */
    c->rope_div = m->rope_freqs ? m->rope_freqs : p.n_ctx > d->n_ctx_orig ? m->rope_long : m->rope_short;
    c->rope_mscale = (float)d->rope_attn_factor;
    if (m->arch->swa_local_rope && d->n_swa) { /* gemma3's sliding layers: base 10000, no scaling */
        c->rope_cs_local = alloc_floats(B * (d->n_rot / 2) * 2, &ok);
        c->rope_inv_freq_local = calloc(d->n_rot / 2 + 1, sizeof *c->rope_inv_freq_local);
        if (!c->rope_inv_freq_local) ok = false;
        for (uint64_t i = 0; ok && i < d->n_rot / 2; i++)
            c->rope_inv_freq_local[i] = pow(10000.0, -2.0 * (double)i / (double)d->n_rot);
    }
    size_t mm = herd_matmul_scratch_bytes(&m->output, p.max_outputs, p.n_threads, p.precise);
    for (uint64_t l = 0; l < d->n_layer; l++) {
        const struct herd_layer *L = &m->layers[l];
        const struct herd_matrix *ws[] = {
            &L->wq,     &L->wk,     &L->wv,      &L->wo,    &L->w_gate, &L->w_up,
            &L->w_down, &L->router, L->exp_gate, L->exp_up, L->exp_down}; /* experts: one of each shape */
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            if (!ws[i] || !ws[i]->data) continue;
            size_t b = herd_matmul_scratch_bytes(ws[i], B, p.n_threads, p.precise);
            if (b > mm) mm = b;
        }
    }
    c->mm_scratch_bytes = mm;
    if (p.n_threads > 1) { /* a team pass's lanes: Q/K/V and gate/up activations of up to TEAM_MAX_TOKENS rows */
        size_t lane = 0;
        for (uint64_t l = 0; l < d->n_layer; l++) {
            const struct herd_layer *L = &m->layers[l];
            const struct herd_matrix *ws[] = {&L->wq, &L->wk, &L->wv, &L->w_gate, &L->w_up};
            for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
                if (!ws[i]->data) continue;
                size_t b = herd_matmul_scratch_bytes(ws[i], TEAM_MAX_TOKENS, 1, false);
                if (b > lane) lane = b;
            }
        }
        c->team_scratch_bytes = (lane + 63) & ~(size_t)63;
        c->team_x = alloc_floats((size_t)p.n_threads * TEAM_MAX_TOKENS * E, &ok);
        c->team_xn = alloc_floats((size_t)p.n_threads * TEAM_MAX_TOKENS * E, &ok);
        c->team_scratch = aligned_alloc(64, (size_t)p.n_threads * c->team_scratch_bytes + 64);
        if (!c->team_scratch) ok = false;
    }
    c->spans = calloc(p.max_seqs, sizeof *c->spans);
    if (!c->spans) ok = false;
    c->mm_scratch = aligned_alloc(64, (mm + 64) & ~(size_t)63);
    if (!ok || !c->mm_scratch) {
        rc = herd_error_set(err, HERD_E_NOMEM, "cannot allocate activation buffers for %zu tokens", B);
        goto fail;
    }
    *out = c;
    return HERD_OK;
fail:
    herd_context_destroy(c);
    return rc;
}

void herd_context_destroy(struct herd_context *c) {
    if (!c) return;
    herd_pool_destroy(c->pool);
    herd_kv_destroy(c->kv);
    free(c->x);
    free(c->xn);
    free(c->q);
    free(c->kx);
    free(c->vx);
    free(c->att);
    free(c->gate);
    free(c->up);
    free(c->out_rows);
    free(c->moe_probs);
    free(c->moe_choice);
    free(c->moe_weight);
    free(c->moe_rows);
    free(c->moe_wrow);
    free(c->moe_x);
    free(c->moe_y);
    free(c->moe_acc);
    free(c->logits);
    free(c->att_scratch);
    free(c->att_tiles);
    free(c->rope_cs);
    free(c->rope_inv_freq);
    free(c->rope_cs_local);
    free(c->rope_inv_freq_local);
    free(c->mm_scratch);
    free(c->team_x);
    free(c->team_xn);
    free(c->team_scratch);
    free(c->spans);
    free(c);
}

const float *herd_context_logits(const struct herd_context *c, uint32_t i) {
    HERD_ASSERT(i < c->n_outputs);
    return c->logits + (size_t)i * c->model->desc.n_vocab;
}

/* ------------------------------------------------------------ element-wise pieces */

/* Lanes of the sum of squares: independent chains, so the adds overlap (one
 * chain of n double adds was latency bound: ~2,300 cycles a token at n = 576)
 * and the compiler can keep them in vector registers. */
#define NORM_LANES 8

/* Element-wise loops compiled for AVX-512 and AVX2 too, picked at load by
 * the CPU (the same arithmetic in every clone: lanes as written, no
 * contraction). -O2's "very cheap" vectorizer left them scalar (a loop of
 * unknown length whose pointers may overlap), so they ask for the dynamic
 * cost model: the residual add and rmsnorm of smollm-135m's decode went
 * from 0.12 to 0.044 ms a token. The vectorizer may still fuse a pattern
 * it recognises (rope_adjacent's complex multiply): check a new user's
 * clones for vfmadd with objdump. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) &&               \
    !defined(__SANITIZE_THREAD__)
#define ELEMENTWISE                                                                                                    \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"),                                       \
                   optimize("tree-loop-vectorize", "vect-cost-model=dynamic")))
#else
#define ELEMENTWISE
#endif

/* x += y */
ELEMENTWISE static void add_into(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

/* dst = src * s */
ELEMENTWISE static void scale_into(float *dst, const float *src, float s, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = src[i] * s;
}

ELEMENTWISE static void rmsnorm(float *out, const float *x, const float *w, size_t n, double eps) {
    double lane[NORM_LANES] = {0}; /* double: the sum of n squares loses nothing worth keeping */
    size_t i = 0;
    for (; i + NORM_LANES <= n; i += NORM_LANES)
        for (size_t k = 0; k < NORM_LANES; k++) lane[k] += (double)x[i + k] * x[i + k];
    for (; i < n; i++) lane[0] += (double)x[i] * x[i];
    double ss = 0.0;
    for (size_t k = 0; k < NORM_LANES; k++) ss += lane[k];
    const float scale = (float)(1.0 / sqrt(ss / (double)n + eps));
    for (i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* cos and sin of token t's rotation angles, from its position and the
 * table's inverse frequencies: computed once per batch instead of once per
 * layer (the angles do not depend on it). */
static void rope_angles(const struct herd_context *c, const double *inv_freq, uint32_t pos, float *cs) {
    const uint64_t half = c->model->desc.n_rot / 2;
    for (uint64_t i = 0; i < half; i++) {
        double theta = (double)pos * inv_freq[i];
        if (c->rope_div) theta /= c->rope_div[i];
        cs[2 * i] = (float)cos(theta);
        cs[2 * i + 1] = (float)sin(theta);
        if (c->rope_mscale != 1.0f) cs[2 * i] *= c->rope_mscale, cs[2 * i + 1] *= c->rope_mscale;
    }
}

/* One head's rotation by the angles cs, its pairs adjacent (2i, 2i + 1) or
 * half a rotation apart (i, i + half: NeoX); the arithmetic per element is
 * the same as one loop with the choice inside. Adjacent pairs stay plain C:
 * GCC 12's vectorizer reads them as complex multiplications and emits
 * vfmaddsub (one rounding where the C has two) even with fp-contract off. */
static void rope_adjacent(float *p, const float *cs, size_t half) {
    for (size_t i = 0; i < half; i++) {
        const float c = cs[2 * i], sn = cs[2 * i + 1], x0 = p[2 * i], x1 = p[2 * i + 1];
        p[2 * i] = x0 * c - x1 * sn;
        p[2 * i + 1] = x0 * sn + x1 * c;
    }
}

ELEMENTWISE static void rope_neox(float *p, const float *cs, size_t half) {
    float *a = p, *b = p + half;
    for (size_t i = 0; i < half; i++) {
        const float c = cs[2 * i], sn = cs[2 * i + 1], x0 = a[i], x1 = b[i];
        a[i] = x0 * c - x1 * sn;
        b[i] = x0 * sn + x1 * c;
    }
}

/* Rotates n_heads heads of v (head_dim apart) by the angles cs. */
static void rope(const struct herd_model *m, float *v, uint64_t n_heads, const float *cs) {
    const struct herd_model_desc *d = &m->desc;
    for (uint64_t h = 0; h < n_heads; h++)
        (m->rope_neox ? rope_neox : rope_adjacent)(v + h * d->head_dim, cs, d->n_rot / 2);
}

/* ------------------------------------------------------------ per-token work on the pool
 *
 * The element-wise steps between the matmuls, split over the pool's
 * threads by token (or by element for the gate): each token's arithmetic is
 * the same as on one thread, so results do not depend on the split. Small
 * batches (single-stream decode) run on the calling thread, where a pool
 * call would cost more than it saves. */

/* Below this many floats of work a step runs on the calling thread. */
#define PARALLEL_MIN_FLOATS 8192

enum rows_kind {
    ROWS_ROPE_ANGLES, /* rope_cs for every token */
    ROWS_NORM,        /* xn = rmsnorm(x) * w */
    ROWS_ADD_NORM,    /* (xn = rmsnorm(xn) * pre;) x += xn; xn = rmsnorm(x) * w (w NULL: only the add) */
    ROWS_ROPE_STORE,  /* q, k += biases; head norms; RoPE on q and k; k, v into the KV cache */
    ROWS_SILU_GATE,   /* gate = silu(gate) * up (gemma: gelu), by element */
};

/* Where the step before a matmul writes its quantized activations (see
 * herd_matmul_quantizes): the Q8A rows, the Q8_K rows, or both, as the
 * matmul's matrices take them; both NULL when the matmul quantizes them
 * itself (precise mode, a float matrix, a MoE layer's gathered rows). */
struct fused_acts {
    struct herd_block_q8a *q8a;
    struct herd_block_q8_k *q8k;
};

struct rows_job {
    struct herd_context *c;
    const struct herd_batch *b;
    enum rows_kind kind;
    uint32_t layer;
    float *x, *xn;    /* ROWS_NORM, ROWS_ADD_NORM: the residual and the normed rows (the lane's) */
    const float *w;   /* the norm's weights */
    const float *pre; /* ROWS_ADD_NORM: the norm of xn before the add (gemma's post norms), or NULL */
    /* the next matmul's quantized activations, written here row by row */
    struct fused_acts acts;
    size_t item_floats; /* ROWS_SILU_GATE: floats of the gate per item */
};

/* Where one thread of a forward pass keeps what it does not share with the
 * others. A plain pass has one lane, the context's own buffers: the
 * steps between matmuls run on the pool or on the calling thread. In a
 * team pass (team_pass) every thread has a lane of its own and does
 * those steps itself on its copies: the residual add and the norms cost
 * each thread what they cost the caller alone, and no thread waits for
 * another between the matmuls. */
struct lane {
    float *x, *xn;                /* [tokens][n_embd]: the residual stream and its normed rows */
    void *scratch;                /* the quantized activations of the Q/K/V and gate/up matmuls (fused_acts) */
    bool team;                    /* one thread's lane in a team pass */
    struct herd_profile *profile; /* NULL, or where this lane's steps are timed */
    int ith;                      /* the thread's index in a team pass */
};

/* Floats of the gate per item of ROWS_SILU_GATE. */
#define SILU_ITEM_FLOATS 1024

/* Token t's query heads of KV heads [h0, h1) and those K and V heads of the
 * layer: biases, head norms, RoPE; K and V into the KV cache. Each head's
 * arithmetic is its own, so any split of the heads gives the same values. */
static void rope_store(struct herd_context *c, const struct herd_batch *b, uint32_t layer, size_t t, size_t h0,
                       size_t h1) {
    const struct herd_model *m = c->model;
    const struct herd_model_desc *d = &m->desc;
    const struct herd_layer *L = &m->layers[layer];
    const size_t hd = d->head_dim, qd = d->n_head * hd, kvd = d->n_head_kv * hd, half = d->n_rot / 2;
    /* rows are qd / kvd apart (the widest layer's); this layer fills nh / nkv heads of them */
    const size_t G = d->n_head_layer[layer] / d->n_head_kv_layer[layer], nq = (h1 - h0) * G, nk = h1 - h0;
    float *q = c->q + t * qd + h0 * G * hd, *k = c->kx + t * kvd + h0 * hd, *v = c->vx + t * kvd + h0 * hd;
    if (L->bq) {
        for (size_t i = 0; i < nq * hd; i++) q[i] += L->bq[h0 * G * hd + i];
        for (size_t i = 0; i < nk * hd; i++) k[i] += L->bk[h0 * hd + i], v[i] += L->bv[h0 * hd + i];
    }
    if (L->q_norm) {
        for (size_t h = 0; h < nq; h++) rmsnorm(q + h * hd, q + h * hd, L->q_norm, hd, d->rms_eps);
        for (size_t h = 0; h < nk; h++) rmsnorm(k + h * hd, k + h * hd, L->k_norm, hd, d->rms_eps);
    }
    const float *cs = (L->slides && c->rope_cs_local ? c->rope_cs_local : c->rope_cs) + t * half * 2;
    rope(m, q, nq, cs);
    rope(m, k, nk, cs);
    for (size_t h = 0; h < nk; h++)
        herd_kv_store_head(c->kv, b->seq[t], layer, b->pos[t], (uint32_t)(h0 + h), k + h * hd, v + h * hd);
}

/* Floats [f0, f0 + n) of the flat [tokens][n_ff] gate: gate = silu(gate) *
 * up (gemma: gelu), then quantized for the down projection where acts says.
 * f0 and n are whole blocks of either kind: the layer's width is a multiple
 * of the matrix's block. */
static void gate_range(const struct herd_context *c, struct fused_acts acts, size_t f0, size_t n) {
    if (c->model->arch->gemma)
        c->k->gelu_mul(c->gate + f0, c->up + f0, n);
    else
        c->k->silu_mul(c->gate + f0, c->up + f0, n);
    if (acts.q8a) c->k->quantize_row_q8a(c->gate + f0, acts.q8a + f0 / HERD_QK8A, n);
    if (acts.q8k) c->k->quantize_row_q8k(c->gate + f0, acts.q8k + f0 / HERD_QK_K, n);
}

/* Items [begin, end): tokens, or SILU_ITEM_FLOATS-float pieces of the gate. */
static void rows_part(void *ctx, int ith, size_t lo, size_t hi) {
    (void)ith;
    const struct rows_job *j = ctx;
    struct herd_context *c = j->c;
    const struct herd_model *m = c->model;
    const struct herd_model_desc *d = &m->desc;
    const size_t E = d->n_embd;
    if (j->kind == ROWS_SILU_GATE) {
        const size_t n = j->b->n_tokens * d->n_ff_layer[j->layer], f0 = lo * j->item_floats;
        gate_range(c, j->acts, f0, (hi * j->item_floats < n ? hi * j->item_floats : n) - f0);
        return;
    }
    const size_t half = d->n_rot / 2;
    for (size_t t = lo; t < hi; t++) {
        float *x = j->x + t * E, *xn = j->xn + t * E;
        const float *y = c->xn + t * E; /* the last matmul's output, shared by every lane */
        switch (j->kind) {
        case ROWS_ROPE_ANGLES:
            rope_angles(c, c->rope_inv_freq, j->b->pos[t], c->rope_cs + t * half * 2);
            if (c->rope_cs_local) rope_angles(c, c->rope_inv_freq_local, j->b->pos[t], c->rope_cs_local + t * half * 2);
            break;
        case ROWS_NORM:
        case ROWS_ADD_NORM:
            if (j->pre) {
                rmsnorm(xn, y, j->pre, E, d->rms_eps);
                y = xn;
            }
            if (j->kind == ROWS_ADD_NORM) add_into(x, y, E);
            if (j->w) rmsnorm(xn, x, j->w, E, d->rms_eps);
            if (j->w && j->acts.q8a) c->k->quantize_row_q8a(xn, j->acts.q8a + t * (E / HERD_QK8A), E);
            if (j->w && j->acts.q8k) c->k->quantize_row_q8k(xn, j->acts.q8k + t * (E / HERD_QK_K), E);
            break;
        case ROWS_ROPE_STORE: rope_store(c, j->b, j->layer, t, 0, d->n_head_kv_layer[j->layer]); break;
        case ROWS_SILU_GATE: break;
        }
    }
}

/* The fused activations of a matmul of the n matrices ws on n_tokens rows,
 * in scratch (the context's, or a lane's): when every matrix's activations
 * are quantized (herd_matmul_quantizes), the rows of each family they take;
 * else none. */
static struct fused_acts fused_acts(const struct herd_context *c, void *scratch, const struct herd_matrix *const *ws,
                                    size_t n, size_t n_tokens) {
    struct fused_acts f = {NULL, NULL};
    for (size_t i = 0; i < n; i++)
        if (!herd_matmul_quantizes(ws[i], c->params.precise)) return f;
    for (size_t i = 0; i < n; i++) {
        if (herd_act_type_of(ws[i]->type) == HERD_ACT_Q8A)
            f.q8a = herd_matmul_q8a_rows(scratch);
        else
            f.q8k = herd_matmul_q8k_rows(scratch, ws[0]->cols, n_tokens);
    }
    return f;
}

static bool fused(struct fused_acts f) { return f.q8a || f.q8k; }

static struct fused_acts qkv_acts(const struct herd_context *c, const struct lane *ln, const struct herd_layer *L,
                                  size_t n_tokens) {
    const struct herd_matrix *ws[3] = {&L->wq, &L->wk, &L->wv};
    return fused_acts(c, ln->scratch, ws, 3, n_tokens);
}

static struct fused_acts gate_up_acts(const struct herd_context *c, const struct lane *ln, const struct herd_layer *L,
                                      size_t n_tokens) {
    const struct herd_matrix *ws[2] = {&L->w_gate, &L->w_up};
    if (L->router.data) return (struct fused_acts){NULL, NULL}; /* a MoE layer gathers each expert's rows first */
    return fused_acts(c, ln->scratch, ws, 2, n_tokens);
}

/* A layer's matmul: on the activations its producer quantized into scratch
 * (acts, one of the above), else from the floats x. outs[i] has role
 * first_role + i (for the observer). */
static void layer_matmul(struct herd_context *c, uint32_t layer, enum herd_matrix_role first_role,
                         const struct herd_matmul_out *outs, size_t n_outs, struct fused_acts acts, void *scratch,
                         const float *x, size_t x_stride, size_t n_tokens) {
    if (c->params.observe_matmul)
        for (size_t i = 0; i < n_outs; i++)
            c->params.observe_matmul(c->params.observe_ctx, layer, (enum herd_matrix_role)(first_role + (int)i), x,
                                     x_stride, n_tokens);
    if (fused(acts))
        herd_matmul_multi_quantized(c->pool, c->k, outs, n_outs, n_tokens, scratch);
    else
        herd_matmul_multi(c->pool, c->k, outs, n_outs, x, x_stride, n_tokens, c->mm_scratch, c->params.precise);
}

/* Gate floats per item of ROWS_SILU_GATE in a team pass: one Q8_K block, so
 * that a one-token gate of a small model (1536 floats) still spreads over
 * the threads. */
#define TEAM_SILU_ITEM_FLOATS HERD_QK_K

/* Runs one per-token step. The norms of a team pass run on each thread, on
 * its lane; every other step, and a plain pass's when there is enough work,
 * on every thread (a split run, tokens taken a few at a time); else on the
 * calling thread. */
static void run_rows(struct herd_context *c, const struct herd_batch *b, const struct lane *ln, enum rows_kind kind,
                     uint32_t layer, const float *pre, const float *w, struct fused_acts acts, size_t floats) {
    const bool norm = kind == ROWS_NORM || kind == ROWS_ADD_NORM;
    const size_t item_floats = ln->team ? TEAM_SILU_ITEM_FLOATS : SILU_ITEM_FLOATS;
    struct rows_job j = {c, b, kind, layer, ln->x, ln->xn, w, pre, acts, item_floats};
    const size_t items = kind == ROWS_SILU_GATE
                             ? (b->n_tokens * c->model->desc.n_ff_layer[layer] + item_floats - 1) / item_floats
                             : b->n_tokens;
    if (ln->team && norm)
        rows_part(&j, 0, 0, items);
    else if (ln->team || (floats >= PARALLEL_MIN_FLOATS && herd_pool_size(c->pool) > 1))
        herd_pool_run_split(c->pool, items, ln->team ? 1 : kind == ROWS_SILU_GATE ? 4 : 2, rows_part, &j);
    else
        rows_part(&j, 0, 0, items);
}

/* ------------------------------------------------------------ attention */

struct att_job {
    struct herd_context *c;
    const struct herd_batch *b;
    uint32_t layer;
    struct fused_acts acts; /* as in rows_job */
    uint32_t n_tiles;       /* in c->att_tiles */
    /* every sequence has one token in the batch (decode): each task first
     * does its own token's rope_store for its KV head, which no other task
     * reads, instead of a step of its own before attention */
    bool rope_store;
};

/* One tile (tokens t0 .. t0 + R - 1 of one sequence at consecutive
 * positions) and one KV head: the R x G query rows walk the sequence's
 * blocks together. A block every token of the tile sees whole is one kernel
 * call over all the rows; the last block or two (where the causal mask
 * differs per token) one call per token. The kernel computes each row
 * alone, in block order, so a token's result is the same in any tile. */
static void attend(struct herd_context *c, const struct herd_batch *b, uint32_t layer, uint32_t t0, uint32_t R,
                   uint32_t kvh, float *scratch, struct fused_acts acts) {
    const struct herd_model_desc *d = &c->model->desc;
    const uint32_t hd = (uint32_t)d->head_dim, bt = c->params.kv_block_tokens;
    const uint32_t G = d->n_head_layer[layer] / d->n_head_kv_layer[layer], rows = R * G;
    const size_t qd = d->n_head * hd, head0 = (size_t)kvh * G * hd; /* rows qd apart: the widest layer's */
    float *q = scratch, *acc = q + (size_t)rows * hd, *m = acc + (size_t)rows * hd, *l = m + rows;
    const float scale = c->model->attn_scale;
    const struct herd_layer *L = &c->model->layers[layer];
    const uint32_t win = L->slides ? (uint32_t)d->n_swa : 0;
    for (uint32_t r = 0; r < R; r++)
        scale_into(q + (size_t)r * G * hd, c->q + (size_t)(t0 + r) * qd + head0, scale, G * hd);
    memset(acc, 0, (size_t)rows * hd * sizeof *acc);
    for (uint32_t i = 0; i < rows; i++) m[i] = -INFINITY, l[i] = 0.0f;
    const uint32_t first_pos = b->pos[t0], n_pos = b->pos[t0 + R - 1] + 1;
    /* token r sees keys [lo(r), first_pos + r] */
#define WINDOW_LO(r) (win && first_pos + (r) + 1 > win ? first_pos + (r) + 1 - win : 0)
    const uint32_t lo_first = WINDOW_LO(0), lo_last = WINDOW_LO(R - 1), b0 = lo_first / bt;
    uint32_t n_blocks;
    const int32_t *blocks = herd_kv_seq_blocks(c->kv, b->seq[t0], &n_blocks);
    for (uint32_t bi = b0; bi * bt < n_pos; bi++) {
        HERD_ASSERT(bi < n_blocks);
        struct herd_attn_kv view;
        herd_kv_head_view(c->kv, blocks[bi], layer, kvh, &view);
        view.softcap = (float)d->attn_softcap;
        /* blocks two ahead, prefetched by the kernel while it computes this
         * one (one ahead: 3.9 ms a pass against 3.65 on 16-sequence decode);
         * the second block at once before the first */
        if (bi == b0 && (bi + 1) * bt < n_pos) herd_kv_prefetch_head(c->kv, blocks[bi + 1], layer, kvh);
        if ((bi + 2) * bt < n_pos) herd_kv_view_next(c->kv, blocks[bi + 2], layer, kvh, &view);
        if ((bi + 1) * bt <= first_pos + 1 && bi * bt >= lo_last) {
            c->k->attn_block(q, (int)rows, (int)hd, &view, (int)bt, (int)bt, m, l, acc);
            continue;
        }
        for (uint32_t r = 0; r < R; r++) {
            const uint32_t seen = first_pos + r + 1, lo = WINDOW_LO(r); /* keys token r attends to */
            if (seen <= bi * bt || lo >= (bi + 1) * bt) continue;
            const uint32_t n = seen - bi * bt < bt ? seen - bi * bt : bt;
            view.first = lo > bi * bt ? (int)(lo - bi * bt) : 0; /* < n: lo <= seen - 1 */
            const size_t o = (size_t)r * G;
            c->k->attn_block(q + o * hd, (int)G, (int)hd, &view, (int)bt, (int)n, m + o, l + o, acc + o * hd);
            view.next = NULL; /* prefetched once */
        }
    }
#undef WINDOW_LO
    for (uint32_t r = 0; r < R; r++) {
        const size_t at = (size_t)(t0 + r) * qd + head0;
        float *out = c->att + at;
        for (uint32_t g = 0; g < G; g++) {
            const size_t i = (size_t)r * G + g;
            scale_into(out + (size_t)g * hd, acc + i * hd, 1.0f / l[i], hd);
        }
        /* whole blocks (G x head_dim a multiple of the block, checked by the caller) */
        if (acts.q8a) c->k->quantize_row_q8a(out, acts.q8a + at / HERD_QK8A, (size_t)G * hd);
        if (acts.q8k) c->k->quantize_row_q8k(out, acts.q8k + at / HERD_QK_K, (size_t)G * hd);
    }
}

/* Splits the batch into attention tiles: runs of up to ATT_TILE_TOKENS
 * tokens of one sequence at consecutive positions (a prompt chunk's), each
 * other token alone. c->att_tiles[i] is tile i's first token. */
static uint32_t attention_tiles(struct herd_context *c, const struct herd_batch *b) {
    uint32_t n = 0;
    for (uint32_t t = 0; t < b->n_tokens;) {
        uint32_t len = 1;
        while (len < ATT_TILE_TOKENS && t + len < b->n_tokens && b->seq[t + len] == b->seq[t] &&
               b->pos[t + len] == b->pos[t] + len)
            len++;
        c->att_tiles[n++] = t;
        t += len;
    }
    return n;
}

/* Tasks [begin, end): task i is tile i / n_kv, KV head i % n_kv. Their cost
 * follows each tile's context, so the split run evens them out. */
static void attention_part(void *ctx, int ith, size_t begin, size_t end) {
    struct att_job *j = ctx;
    struct herd_context *c = j->c;
    const struct herd_model_desc *d = &c->model->desc;
    float *scratch = c->att_scratch + (size_t)ith * att_scratch_floats(d);
    const size_t n_kv = d->n_head_kv_layer[j->layer];
    for (size_t i = begin; i < end; i++) {
        const size_t tile = i / n_kv;
        const uint32_t t0 = c->att_tiles[tile];
        const uint32_t t1 = tile + 1 < j->n_tiles ? c->att_tiles[tile + 1] : j->b->n_tokens;
        if (j->rope_store) {
            HERD_ASSERT(t1 == t0 + 1);
            rope_store(c, j->b, j->layer, t0, i % n_kv, i % n_kv + 1);
        }
        attend(c, j->b, j->layer, t0, t1 - t0, (uint32_t)(i % n_kv), scratch, j->acts);
    }
}

/* ------------------------------------------------------------ mixture of experts */

/* Each token's experts: the router's softmax over all experts, the
 * n_expert_used most probable (ties to the lower index), their
 * probabilities as weights, renormalised to sum 1 where the model says
 * (llama.cpp's llm_build_moe_ffn with softmax gating). */
static void route_tokens(struct herd_context *c, size_t T) {
    const struct herd_model_desc *d = &c->model->desc;
    const size_t X = d->n_expert, K = d->n_expert_used;
    for (size_t t = 0; t < T; t++) {
        float *p = c->moe_probs + t * X;
        float mx = p[0], sum = 0.0f;
        for (size_t e = 1; e < X; e++) mx = p[e] > mx ? p[e] : mx;
        for (size_t e = 0; e < X; e++) sum += p[e] = expf(p[e] - mx);
        for (size_t e = 0; e < X; e++) p[e] /= sum;
        int32_t *choice = c->moe_choice + t * K;
        float *w = c->moe_weight + t * K, wsum = 0.0f;
        for (size_t k = 0; k < K; k++) { /* K is small (2..8): selection by repeated scans */
            int32_t best = -1;
            for (size_t e = 0; e < X; e++) {
                bool taken = false;
                for (size_t j = 0; j < k; j++) taken |= choice[j] == (int32_t)e;
                if (!taken && (best < 0 || p[e] > p[best])) best = (int32_t)e;
            }
            choice[k] = best;
            wsum += w[k] = p[best];
        }
        if (d->expert_weights_norm)
            for (size_t k = 0; k < K; k++) w[k] /= wsum;
    }
}

/* The MoE FFN of layer L on the normed rows c->xn, its output into c->xn.
 * Experts run one after another, each on the rows of the tokens routed to
 * it gathered together, so a batch streams each used expert's weights once;
 * every token's sum runs over its experts in index order, whatever else is
 * in the batch (results independent of batching). */
static void moe_ffn(struct herd_context *c, const struct herd_layer *L, size_t T) {
    const struct herd_model_desc *d = &c->model->desc;
    const size_t E = d->n_embd, X = d->n_expert, K = d->n_expert_used, FE = d->n_ff_exp;
    struct herd_pool *pool = c->pool;
    const bool precise = c->params.precise;
    herd_matmul(pool, c->k, &L->router, c->xn, E, T, c->moe_probs, X, c->mm_scratch, precise);
    route_tokens(c, T);
    memset(c->moe_acc, 0, T * E * sizeof *c->moe_acc);
    for (size_t e = 0; e < X; e++) {
        size_t n = 0;
        for (size_t t = 0; t < T; t++)
            for (size_t k = 0; k < K; k++)
                if (c->moe_choice[t * K + k] == (int32_t)e) {
                    c->moe_rows[n] = (uint32_t)t;
                    c->moe_wrow[n++] = c->moe_weight[t * K + k];
                }
        if (!n) continue;
        for (size_t i = 0; i < n; i++) memcpy(c->moe_x + i * E, c->xn + c->moe_rows[i] * E, E * sizeof(float));
        const struct herd_matmul_out gate_up[2] = {{&L->exp_gate[e], c->gate, FE}, {&L->exp_up[e], c->up, FE}};
        herd_matmul_multi(pool, c->k, gate_up, 2, c->moe_x, E, n, c->mm_scratch, precise);
        c->k->silu_mul(c->gate, c->up, n * FE);
        herd_matmul(pool, c->k, &L->exp_down[e], c->gate, FE, n, c->moe_y, E, c->mm_scratch, precise);
        for (size_t i = 0; i < n; i++) {
            float *acc = c->moe_acc + c->moe_rows[i] * E;
            const float *y = c->moe_y + i * E, w = c->moe_wrow[i];
            for (size_t j = 0; j < E; j++) acc[j] += w * y[j];
        }
    }
    if (L->shexp_gate) { /* qwen2moe: a dense expert every token runs, scaled by its own sigmoid gate */
        const size_t FS = d->n_ff_shexp;
        const struct herd_matmul_out gate_up[2] = {{&L->w_gate, c->gate, FS}, {&L->w_up, c->up, FS}};
        herd_matmul_multi(pool, c->k, gate_up, 2, c->xn, E, T, c->mm_scratch, precise);
        c->k->silu_mul(c->gate, c->up, T * FS);
        herd_matmul(pool, c->k, &L->w_down, c->gate, FS, T, c->moe_y, E, c->mm_scratch, precise);
        for (size_t t = 0; t < T; t++) {
            double dot = 0.0;
            for (size_t j = 0; j < E; j++) dot += (double)c->xn[t * E + j] * L->shexp_gate[j];
            const float s = (float)(1.0 / (1.0 + exp(-dot)));
            float *acc = c->moe_acc + t * E;
            const float *y = c->moe_y + t * E;
            for (size_t j = 0; j < E; j++) acc[j] += s * y[j];
        }
    }
    memcpy(c->xn, c->moe_acc, T * E * sizeof *c->xn);
}

/* ------------------------------------------------------------ decode */

#define PROF_T() (P ? herd_prof_now_ns() : 0)

static enum herd_status check_batch(struct herd_context *c, const struct herd_batch *b, struct seq_span *spans,
                                    uint32_t *n_out, struct herd_error *err) {
    const struct herd_model_desc *d = &c->model->desc;
    if (b->n_tokens == 0 || b->n_tokens > c->params.max_batch_tokens)
        return herd_error_set(err, HERD_E_INVALID, "batch of %u tokens; 1..%u allowed", b->n_tokens,
                              c->params.max_batch_tokens);
    *n_out = 0;
    for (uint32_t i = 0; i < b->n_tokens; i++) {
        if (b->tokens[i] < 0 || (uint64_t)b->tokens[i] >= d->n_vocab)
            return herd_error_set(err, HERD_E_INVALID, "invalid token id %d (vocabulary of %llu)", b->tokens[i],
                                  (unsigned long long)d->n_vocab);
        if (b->pos[i] >= c->params.n_ctx)
            return herd_error_set(err, HERD_E_INVALID, "position %u exceeds the context of %u tokens", b->pos[i],
                                  c->params.n_ctx);
        const int32_t s = b->seq[i];
        if (!herd_kv_seq_valid(c->kv, s)) return herd_error_set(err, HERD_E_INVALID, "invalid sequence %d", s);
        struct seq_span *sp = &spans[s];
        if (!sp->present) {
            sp->present = true;
            sp->first_pos = b->pos[i];
            sp->count = 0;
            sp->old_len = herd_kv_seq_len(c->kv, s);
            if (b->pos[i] > sp->old_len)
                return herd_error_set(err, HERD_E_INVALID, "sequence %d: position %u leaves a gap after %u", s,
                                      b->pos[i], sp->old_len);
        } else if (b->pos[i] != sp->first_pos + sp->count) {
            return herd_error_set(err, HERD_E_INVALID, "sequence %d: position %u where %u was expected", s, b->pos[i],
                                  sp->first_pos + sp->count);
        }
        sp->count++;
        if (b->want_logits ? b->want_logits[i] : i == b->n_tokens - 1) (*n_out)++;
    }
    /* every window a sliding model's tokens reach must still be held */
    for (uint32_t s = 0; c->model->window_all && s < c->params.max_seqs; s++) {
        const uint32_t w = c->model->window_all, p0 = spans[s].first_pos;
        if (spans[s].present && p0 + 1 > w && herd_kv_seq_first_kept(c->kv, (int32_t)s) > p0 + 1 - w)
            return herd_error_set(err, HERD_E_INVALID,
                                  "sequence %u: position %u attends to positions released behind the sliding window", s,
                                  p0);
    }
    if (*n_out > c->params.max_outputs)
        return herd_error_set(err, HERD_E_INVALID, "%u logit rows requested; at most %u per batch", *n_out,
                              c->params.max_outputs);
    return HERD_OK;
}

/* Rows of the gate and up projections per item when a team pass fuses the
 * gate into their matmul (gate_rows_done): whole Q8_K blocks, so that each
 * item's gate is whole blocks of the down projection's activations of
 * either kind. One item per thread where the width splits so: each
 * thread's gate and up rows are then one run of each matrix (smollm-135m
 * Q4_K_M tg128, each token against the same pass with 256-row items,
 * alternating in one process: 0.988 and 0.994 of the time; with
 * CLAIMS_PER_THREAD 2 in matmul.c as well, 0.951-0.977). Else items of one
 * Q8_K block; not smaller: on smollm-135m (items of 6 us) 128 and 64 rows
 * evened the threads out but broke each thread's stream of the two
 * matrices into 50 and 25 KiB pieces, and tg128 fell from 69 % of the read
 * bandwidth to 66.5 and 66. A thread the OS preempts still has its item
 * taken by the other once that is done with its own. 0 when the gate
 * cannot be fused so: a width not of whole blocks, or fewer than two
 * blocks per thread. */
#define GATE_ITEM_ROWS HERD_QK_K

static size_t gate_item_rows(const struct herd_context *c, size_t F) {
    const size_t nth = (size_t)herd_pool_size(c->pool);
    if (F % (nth * GATE_ITEM_ROWS) == 0) return F / nth;
    return F % GATE_ITEM_ROWS == 0 && F / GATE_ITEM_ROWS >= 2 * nth ? GATE_ITEM_ROWS : 0;
}

/* Rows [r0, r1) of a team pass's gate and up are done on this thread: the
 * gate of each token there, and its quantized blocks for the down
 * projection. */
static void gate_rows_done(void *ctx, size_t r0, size_t r1) {
    const struct rows_job *j = ctx;
    struct herd_context *c = j->c;
    const size_t F = c->model->desc.n_ff_layer[j->layer];
    for (size_t t = 0; t < j->b->n_tokens; t++) gate_range(c, j->acts, t * F + r0, r1 - r0);
}

/* Bytes of its share of the next matmul that a thread of a team pass asks
 * for while it waits at the barriers before it (the early thread at the end
 * of a matmul, the one with fewer heads after attention): the memory is
 * idle there. smollm-135m Q4_K_M tg128, each token against the same pass
 * without, alternating in one process: 0.980-0.996 of the time over five
 * runs at 64 KiB (Q5_K_M 0.983-0.995, Q6_K 0.975-0.988, tinyllama-1.1b
 * 0.988-0.999); 16 to 256 KiB alike. */
#define TEAM_PREFETCH_BYTES ((size_t)64 << 10)

static void prefetch_share(const struct herd_context *c, const void *start, size_t bytes) {
    herd_pool_prefetch_while_waiting(c->pool, start, bytes < TEAM_PREFETCH_BYTES ? bytes : TEAM_PREFETCH_BYTES);
}

/* In a team pass: the thread's share of the matmul of outs comes next. */
static void prefetch_next(const struct herd_context *c, const struct lane *ln, const struct herd_matmul_out *outs,
                          size_t n_outs, size_t n_tokens) {
    if (!ln->team) return;
    const void *start;
    const size_t bytes = herd_matmul_share_start(c->pool, outs, n_outs, n_tokens, ln->ith, &start);
    prefetch_share(c, start, bytes);
}

/* In a team pass: the layer's gate/up comes next (gate_rows per item where
 * the gate is fused into it, see gate_item_rows; 0 where not). A team pass
 * has no MoE layer (team_pass), so gate_up holds the layer's own matrices. */
static void prefetch_gate_up(const struct herd_context *c, const struct lane *ln,
                             const struct herd_matmul_out gate_up[2], size_t gate_rows, size_t n_tokens) {
    if (!ln->team) return;
    if (!gate_rows) {
        prefetch_next(c, ln, gate_up, 2, n_tokens);
        return;
    }
    const void *start;
    const size_t bytes = herd_matmul_rows_share_start(c->pool, gate_up, n_tokens, gate_rows, ln->ith, &start);
    prefetch_share(c, start, bytes);
}

/* The batch's tokens through every layer. */
struct layers_job {
    struct herd_context *c;
    const struct herd_batch *b;
    uint32_t n_tiles; /* attention tiles (attention_tiles) */
    /* one token per sequence: each attention task ropes and stores its own head */
    bool store_in_attention;
};

/* Every layer on lane ln: the embeddings into ln->x, then from each layer's
 * xn = rmsnorm(x) * attn_norm (made by the step before) on; the last layer's
 * FFN output is left in c->xn, not yet added to x. */
static void run_layers(const struct layers_job *lj, const struct lane *ln) {
    struct herd_context *c = lj->c;
    const struct herd_batch *b = lj->b;
    const struct herd_model *m = c->model;
    const struct herd_model_desc *d = &m->desc;
    const size_t T = b->n_tokens, E = d->n_embd, hd = d->head_dim;
    const size_t qd = d->n_head * hd, kvd = d->n_head_kv * hd;
    struct herd_profile *P = ln->profile;
    uint64_t t0 = PROF_T();
    for (size_t t = 0; t < T; t++)
        herd_dequantize_row_ref(m->tok_embd.type,
                                (const char *)m->tok_embd.data + (size_t)b->tokens[t] * m->tok_embd.row_bytes,
                                ln->x + t * E, E);
    if (m->embd_scale != 1.0f)
        for (size_t i = 0; i < T * E; i++) ln->x[i] *= m->embd_scale;
    herd_prof_op(P, HERD_PROF_EMBED, t0);
    t0 = PROF_T();
    run_rows(c, b, ln, ROWS_NORM, 0, NULL, m->layers[0].attn_norm, qkv_acts(c, ln, &m->layers[0], T), T * E);
    herd_prof_op(P, HERD_PROF_NORM, t0);

    for (uint32_t l = 0; l < d->n_layer; l++) {
        const struct herd_layer *L = &m->layers[l];
        if (c->params.observe_residual) c->params.observe_residual(c->params.observe_ctx, l, ln->x, E, T);
        t0 = PROF_T();
        const struct herd_matmul_out qkv[3] = {{&L->wq, c->q, qd}, {&L->wk, c->kx, kvd}, {&L->wv, c->vx, kvd}};
        const struct herd_matmul_out wo = {&L->wo, c->xn, E};
        prefetch_next(c, ln, &wo, 1, T); /* attention reads no weights */
        layer_matmul(c, l, HERD_ROLE_ATTN_Q, qkv, 3, qkv_acts(c, ln, L, T), ln->scratch, ln->xn, E, T);
        herd_prof_matmul(P, HERD_PROF_MM_QKV, L->wq.type, t0);
        if (!lj->store_in_attention) {
            t0 = PROF_T();
            run_rows(c, b, ln, ROWS_ROPE_STORE, l, NULL, NULL, (struct fused_acts){NULL, NULL}, T * (qd + 2 * kvd) * 2);
            herd_prof_op(P, HERD_PROF_ROPE_STORE, t0);
        }
        t0 = PROF_T();
        /* attention writes the output projection's 8-bit rows qd apart: only
         * where this layer's rows are that wide (a head-pruned file's may not
         * be), each task a KV head's G x head_dim outputs as whole blocks */
        const struct herd_matrix *wo_ws[1] = {&L->wo};
        const size_t g_hd = d->n_head_layer[l] / d->n_head_kv_layer[l] * hd;
        struct fused_acts att_acts =
            L->wo.cols == qd ? fused_acts(c, c->mm_scratch, wo_ws, 1, T) : (struct fused_acts){NULL, NULL};
        if ((att_acts.q8a && g_hd % HERD_QK8A != 0) || (att_acts.q8k && g_hd % HERD_QK_K != 0))
            att_acts = (struct fused_acts){NULL, NULL};
        struct att_job aj = {c, b, l, att_acts, lj->n_tiles, lj->store_in_attention};
        herd_pool_run_split(c->pool, (size_t)lj->n_tiles * d->n_head_kv_layer[l], 1, attention_part, &aj);
        herd_prof_op(P, lj->store_in_attention ? HERD_PROF_ROPE_STORE_ATTENTION : HERD_PROF_ATTENTION, t0);
        t0 = PROF_T();
        const size_t F = d->n_ff_layer[l]; /* gate, up and down rows of F floats, packed */
        const struct herd_matmul_out gate_up[2] = {{&L->w_gate, c->gate, F}, {&L->w_up, c->up, F}};
        const size_t gate_rows = ln->team ? gate_item_rows(c, F) : 0;
        prefetch_gate_up(c, ln, gate_up, gate_rows, T);
        layer_matmul(c, l, HERD_ROLE_ATTN_OUTPUT, &wo, 1, att_acts, c->mm_scratch, c->att, qd, T);
        herd_prof_matmul(P, HERD_PROF_MM_ATTN_OUT, L->wo.type, t0);
        t0 = PROF_T();
        run_rows(c, b, ln, ROWS_ADD_NORM, l, L->post_attn, L->ffn_norm, gate_up_acts(c, ln, L, T), T * E * 2);
        herd_prof_op(P, HERD_PROF_ADD_NORM, t0);

        if (L->router.data) {
            t0 = PROF_T();
            moe_ffn(c, L, T);
            herd_prof_matmul(P, HERD_PROF_MM_GATE_UP, L->exp_gate[0].type, t0);
        } else {
            t0 = PROF_T();
            const struct herd_matrix *down_ws[1] = {&L->w_down};
            const struct fused_acts down_acts = fused_acts(c, c->mm_scratch, down_ws, 1, T);
            const struct herd_matmul_out down = {&L->w_down, c->xn, E};
            prefetch_next(c, ln, &down, 1, T);
            if (gate_rows) {
                struct rows_job gj = {c, b, ROWS_SILU_GATE, l, NULL, NULL, NULL, NULL, down_acts, 0};
                herd_matmul_multi_rows_quantized(c->pool, c->k, gate_up, 2, T, ln->scratch, gate_rows, gate_rows_done,
                                                 &gj);
                herd_prof_matmul(P, HERD_PROF_MM_GATE_UP, L->w_gate.type, t0);
            } else {
                layer_matmul(c, l, HERD_ROLE_FFN_GATE, gate_up, 2, gate_up_acts(c, ln, L, T), ln->scratch, ln->xn, E,
                             T);
                herd_prof_matmul(P, HERD_PROF_MM_GATE_UP, L->w_gate.type, t0);
                t0 = PROF_T();
                run_rows(c, b, ln, ROWS_SILU_GATE, l, NULL, NULL, down_acts, T * F * 4);
                herd_prof_op(P, HERD_PROF_ACTIVATION, t0);
            }
            t0 = PROF_T();
            if (l + 1 < d->n_layer) {
                const struct herd_layer *N = &m->layers[l + 1];
                const struct herd_matmul_out next_qkv[3] = {
                    {&N->wq, c->q, qd}, {&N->wk, c->kx, kvd}, {&N->wv, c->vx, kvd}};
                prefetch_next(c, ln, next_qkv, 3, T);
            }
            layer_matmul(c, l, HERD_ROLE_FFN_DOWN, &down, 1, down_acts, c->mm_scratch, c->gate, F, T);
            herd_prof_matmul(P, HERD_PROF_MM_DOWN, L->w_down.type, t0);
        }
        if (l + 1 < d->n_layer) {
            t0 = PROF_T();
            run_rows(c, b, ln, ROWS_ADD_NORM, l, L->post_ffn, m->layers[l + 1].attn_norm,
                     qkv_acts(c, ln, &m->layers[l + 1], T), T * E * 2);
            herd_prof_op(P, HERD_PROF_ADD_NORM, t0);
        }
    }
}

/* Whether herd_decode runs a batch of n_tokens as a team pass
 * (herd_pool_run_team): more than one thread, and every layer's Q/K/V and
 * gate/up take activations its lane quantizes (not precise, no MoE, no
 * float matrices); no observer, which would see each lane's copy. */
static bool team_pass(const struct herd_context *c, size_t n_tokens) {
    if (!c->team_x || n_tokens > TEAM_MAX_TOKENS || c->params.observe_residual || c->params.observe_matmul)
        return false;
    const struct lane probe = {NULL, NULL, c->team_scratch, true, NULL, 0};
    for (uint64_t l = 0; l < c->model->desc.n_layer; l++) {
        const struct herd_layer *L = &c->model->layers[l];
        if (!fused(qkv_acts(c, &probe, L, n_tokens)) || !fused(gate_up_acts(c, &probe, L, n_tokens))) return false;
    }
    return true;
}

/* Thread ith's part of a team pass, on its own lane; thread 0's residual
 * stream is the one herd_decode goes on with. */
static void team_layers(void *ctx, int ith, int nth) {
    (void)nth;
    const struct layers_job *lj = ctx;
    struct herd_context *c = lj->c;
    const size_t E = c->model->desc.n_embd, T = lj->b->n_tokens;
    const struct lane ln = {
        c->team_x + (size_t)ith * TEAM_MAX_TOKENS * E,
        c->team_xn + (size_t)ith * TEAM_MAX_TOKENS * E,
        (char *)c->team_scratch + (size_t)ith * c->team_scratch_bytes,
        true,
        ith == 0 ? c->profile : NULL,
        ith,
    };
    run_layers(lj, &ln);
    if (ith == 0) memcpy(c->x, ln.x, T * E * sizeof *c->x);
}

enum herd_status herd_decode(struct herd_context *c, const struct herd_batch *b, struct herd_error *err) {
    const struct herd_model *m = c->model;
    const struct herd_model_desc *d = &m->desc;
    const size_t T = b->n_tokens, E = d->n_embd;
    struct herd_pool *pool = c->pool;
    const struct herd_kernels *k = c->k;
    const bool precise = c->params.precise;
    struct herd_profile *P = c->profile;
    uint64_t t0;
    c->n_outputs = 0;
    const struct lane plain = {c->x, c->xn, c->mm_scratch, false, P, 0};

    struct seq_span *spans = c->spans;
    memset(spans, 0, c->params.max_seqs * sizeof *spans);
    uint32_t n_out = 0;
    enum herd_status rc = check_batch(c, b, spans, &n_out, err);
    if (rc != HERD_OK) goto out;
    /* Reserve KV rows for every sequence, all or nothing. */
    uint32_t n_seqs = 0;
    for (uint32_t s = 0; s < c->params.max_seqs; s++) {
        if (!spans[s].present) continue;
        n_seqs++;
        rc = herd_kv_seq_prepare(c->kv, (int32_t)s, spans[s].first_pos, spans[s].count, err);
        if (rc != HERD_OK) {
            for (uint32_t r = 0; r < s; r++)
                if (spans[r].present) herd_kv_seq_truncate(c->kv, (int32_t)r, spans[r].old_len);
            goto out;
        }
    }

    t0 = PROF_T();
    run_rows(c, b, &plain, ROWS_ROPE_ANGLES, 0, NULL, NULL, (struct fused_acts){NULL, NULL}, T * d->n_rot * 8);
    herd_prof_op(P, HERD_PROF_ROPE, t0);
    const struct layers_job lj = {c, b, attention_tiles(c, b), n_seqs == T};
    if (team_pass(c, T))
        herd_pool_run_team(pool, team_layers, (void *)&lj);
    else
        run_layers(&lj, &plain);

    /* the last residual and the output norm, only for the rows that want
     * logits (every row's residual when an observer wants it) */
    t0 = PROF_T();
    uint32_t o = 0;
    const bool all_rows = c->params.observe_residual != NULL;
    for (size_t t = 0; t < T; t++) {
        const bool want = b->want_logits ? b->want_logits[t] : t == T - 1;
        if (!want && !all_rows) continue;
        float *x = c->x + t * E, *xn = c->xn + t * E;
        const float *post = m->layers[d->n_layer - 1].post_ffn;
        if (post) rmsnorm(xn, xn, post, E, d->rms_eps);
        add_into(x, xn, E);
        if (want) rmsnorm(c->out_rows + (size_t)o++ * E, x, m->output_norm, E, d->rms_eps);
    }
    if (all_rows) c->params.observe_residual(c->params.observe_ctx, d->n_layer, c->x, E, T);
    herd_prof_op(P, HERD_PROF_ADD_NORM, t0);
    /* Every layer slides: blocks wholly before the next token's window are
     * seen by no layer again, so they go back to the pool (a margin of one
     * position keeps what a fork at the last position needs). */
    for (uint32_t s = 0; m->window_all && s < c->params.max_seqs; s++) {
        const uint32_t len = spans[s].first_pos + spans[s].count;
        if (spans[s].present && len > m->window_all) herd_kv_seq_release_before(c->kv, (int32_t)s, len - m->window_all);
    }
    t0 = PROF_T();
    if (n_out && c->params.observe_matmul)
        c->params.observe_matmul(c->params.observe_ctx, d->n_layer, HERD_ROLE_OUTPUT, c->out_rows, E, n_out);
    if (n_out) herd_matmul(pool, k, &m->output, c->out_rows, E, n_out, c->logits, d->n_vocab, c->mm_scratch, precise);
    if (n_out && d->final_softcap > 0) { /* gemma2 */
        const float cap = (float)d->final_softcap;
        for (size_t i = 0; i < (size_t)n_out * d->n_vocab; i++) c->logits[i] = cap * tanhf(c->logits[i] / cap);
    }
    if (n_out) herd_prof_matmul(P, HERD_PROF_MM_OUTPUT, m->output.type, t0);
    c->n_outputs = n_out;
    if (P) P->decodes++, P->tokens += T;
out:
    return rc;
}
