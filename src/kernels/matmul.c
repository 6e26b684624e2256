/* Weight-stationary matmul over a thread pool. */
#include "kernels/matmul.h"

#include <string.h>

#include "base/assert.h"
#include "kernels/kpack.h"
#include "kernels/kquants_simd.h"
#include "kernels/quant.h"

void herd_matrix_from_tensor(struct herd_matrix *m, const struct herd_gguf_tensor *t) {
    m->type = t->type;
    m->data = t->data;
    m->cols = t->ne[0];
    m->rows = t->n_elems / t->ne[0];
    m->row_bytes = (size_t)(t->n_bytes / m->rows);
    m->packed = NULL;
}

struct herd_matrix herd_matrix_rows(const struct herd_matrix *m, uint64_t first, uint64_t n) {
    struct herd_matrix r = *m;
    r.data = (const char *)m->data + first * m->row_bytes;
    r.rows = n;
    r.packed = NULL;
    return r;
}

/* The layouts of Q8_0 and Q4_0 are kernels.h's (gemm_packed); the other
 * quantized types' are kpack.h's (gemm_kpack). */
static bool kpacked(enum herd_ggml_type t) { return herd_kpack_chunk_bytes(t) > 0; }

bool herd_kernels_packs(const struct herd_kernels *k, enum herd_ggml_type type) {
    if (!k->prefers_packed) return false;
    if (type == HERD_GGML_TYPE_Q8_0 || type == HERD_GGML_TYPE_Q4_0) return k->gemm_packed != NULL;
    return kpacked(type) && k->gemm_kpack != NULL;
}

size_t herd_matrix_packed_bytes(const struct herd_matrix *m) {
    if (kpacked(m->type)) return herd_kpack_bytes(m->type, m->rows, m->cols);
    if (m->rows % HERD_PACK_ROWS != 0) return 0;
    const size_t chunk = m->type == HERD_GGML_TYPE_Q4_0   ? HERD_PACK_Q4_0_CHUNK
                         : m->type == HERD_GGML_TYPE_Q8_0 ? HERD_PACK_Q8_0_CHUNK
                                                          : 0;
    return (size_t)(m->rows / HERD_PACK_ROWS) * (size_t)(m->cols / 32) * chunk;
}

void herd_matrix_pack(struct herd_matrix *m, uint8_t *dst) {
    if (kpacked(m->type)) {
        herd_kpack_pack(m->type, m->data, m->row_bytes, m->rows, m->cols, dst);
        m->packed = dst;
        return;
    }
    const bool q4 = m->type == HERD_GGML_TYPE_Q4_0;
    const size_t chunk = q4 ? HERD_PACK_Q4_0_CHUNK : HERD_PACK_Q8_0_CHUNK;
    const size_t nb = (size_t)m->cols / 32, groups = (size_t)m->rows / HERD_PACK_ROWS;
    for (size_t g = 0; g < groups; g++)
        for (size_t b = 0; b < nb; b++) {
            uint8_t *c = dst + (g * nb + b) * chunk;
            for (int r = 0; r < HERD_PACK_ROWS; r++) {
                const uint8_t *row = (const uint8_t *)m->data + (g * HERD_PACK_ROWS + (size_t)r) * m->row_bytes;
                if (q4) {
                    const struct herd_block_q4_0 *blk = (const struct herd_block_q4_0 *)row + b;
                    memcpy(c + 2 * r, &blk->d, 2);
                    for (int j = 0; j < 4; j++) memcpy(c + 2 * HERD_PACK_ROWS + 64 * j + 4 * r, blk->qs + 4 * j, 4);
                } else {
                    const struct herd_block_q8_0 *blk = (const struct herd_block_q8_0 *)row + b;
                    memcpy(c + 2 * r, &blk->d, 2);
                    for (int k = 0; k < 8; k++)
                        for (int i = 0; i < 4; i++)
                            c[2 * HERD_PACK_ROWS + 64 * k + 4 * r + i] = (uint8_t)(blk->qs[4 * k + i] ^ (int8_t)0x80);
                }
            }
        }
    m->packed = dst;
}

static bool is_quantized(enum herd_ggml_type t) { return herd_act_type_of(t) != HERD_ACT_F32; }

bool herd_matmul_quantizes(const struct herd_matrix *w, bool precise) { return is_quantized(w->type) && !precise; }

/* The scratch of quantized activations: n_tokens rows of Q8A blocks first
 * (the layout producers write, see herd_matmul_quantizes), then, 64-byte
 * aligned, the same rows as Q8_K blocks where the column count allows
 * them: one call may mix weight types of both families (a Q5_0 fallback
 * beside Q4_K matrices), and each family's activations are quantized once. */
static size_t q8a_bytes(size_t cols, size_t n_tokens) {
    return (n_tokens * (cols / HERD_QK8A) * sizeof(struct herd_block_q8a) + 63) & ~(size_t)63;
}

static size_t q8k_bytes(size_t cols, size_t n_tokens) {
    return cols % HERD_QK_K == 0 ? n_tokens * (cols / HERD_QK_K) * sizeof(struct herd_block_q8_k) : 0;
}

size_t herd_matmul_scratch_bytes(const struct herd_matrix *w, size_t n_tokens, int n_threads, bool precise) {
    if (!is_quantized(w->type)) return 0;
    if (precise) return (size_t)n_threads * w->cols * sizeof(float) + 64 * (size_t)n_threads;
    return q8a_bytes(w->cols, n_tokens) + q8k_bytes(w->cols, n_tokens);
}

struct job {
    const struct herd_kernels *k;
    const struct herd_matmul_out *outs;
    size_t n_outs;
    size_t cols;
    const float *x;
    size_t x_stride, n_tokens;
    void *scratch;
    bool precise;
    /* which activation formats the outputs take (quantize_part fills them) */
    bool need_q8a, need_q8k;
    /* herd_matmul_multi_rows_quantized: rows per item of every output, and
     * the call after each */
    size_t rows_per_item;
    herd_matmul_rows_fn done;
    void *done_ctx;
};

struct herd_block_q8a *herd_matmul_q8a_rows(void *scratch) {
    return scratch;
}

struct herd_block_q8_k *herd_matmul_q8k_rows(void *scratch, size_t cols, size_t n_tokens) {
    return (struct herd_block_q8_k *)((char *)scratch + q8a_bytes(cols, n_tokens));
}

static struct herd_block_q8_k *q8k_rows(const struct job *j) {
    return herd_matmul_q8k_rows(j->scratch, j->cols, j->n_tokens);
}

static void quantize_part(void *ctx, int ith, int nth) {
    const struct job *j = ctx;
    struct herd_block_q8a *q = j->scratch;
    const size_t nb = j->cols / HERD_QK8A, nbk = j->cols / HERD_QK_K;
    struct herd_block_q8_k *qk = q8k_rows(j);
    for (size_t t = (size_t)ith; t < j->n_tokens; t += (size_t)nth) {
        if (j->need_q8a) j->k->quantize_row_q8a(j->x + t * j->x_stride, q + t * nb, j->cols);
        if (j->need_q8k) j->k->quantize_row_q8k(j->x + t * j->x_stride, qk + t * nbk, j->cols);
    }
}

/* Tokens per pass over the weight groups: 64 tokens of quantized activations
 * (64 x 64 blocks x 40 bytes = 164 KB at 2048 columns) stay in L2 while the
 * groups stream past them; a larger batch is split into such passes rather
 * than re-reading all activations from L3 for every group. */
#define PACKED_TOKEN_CHUNK 64

/* Rows per item on the row-by-row path: 16 floats of output, one cache
 * line, so two threads never write the same line. */
#define DOT_ROWS 16

/* Work per claim of the split run, in multiply-adds: ~2-4 us, so a claim's
 * atomic costs little against the work, yet a thread left alone can take
 * most of the share of one the OS has preempted. */
#define MACS_PER_CLAIM    (512u * 1024u)
/* Fewest claims per thread in a small job, so its items spread over the
 * threads and a preempted one's share can still be taken. Two, not more:
 * each claim beyond the first lets the threads interleave at the end of a
 * share, and a one-token pass of smollm-135m Q4_K_M (its 576-row matrices
 * claimed 5-9 groups at a time) took 0.990 of the time with 2 against 4,
 * 1.019, 1.030 and 1.057 with 3, 8 and 16 (alternating in one process). */
#define CLAIMS_PER_THREAD 2u

static bool packed_path(const struct job *j, const struct herd_matmul_out *o) { return o->w->packed && !j->precise; }

static size_t token_chunks(const struct job *j) { return (j->n_tokens + PACKED_TOKEN_CHUNK - 1) / PACKED_TOKEN_CHUNK; }

/* One output's items: on the packed path a group of 16 rows for one chunk of
 * tokens (chunk-major, so a chunk's activations stay in cache while the
 * groups pass), on the row-by-row path DOT_ROWS rows for all tokens. */
static size_t out_items(const struct job *j, const struct herd_matmul_out *o) {
    if (packed_path(j, o)) return token_chunks(j) * (o->w->rows / HERD_PACK_ROWS);
    return (o->w->rows + DOT_ROWS - 1) / DOT_ROWS;
}

static size_t item_macs(const struct job *j, const struct herd_matmul_out *o) {
    if (packed_path(j, o))
        return HERD_PACK_ROWS * j->cols * (j->n_tokens < PACKED_TOKEN_CHUNK ? j->n_tokens : PACKED_TOKEN_CHUNK);
    return DOT_ROWS * j->cols * j->n_tokens;
}

/* Items [i0, i1) of one output on the packed path: each a group of 16 rows
 * for one chunk of tokens, through gemm_kpack (or its scalar twin in a
 * family without one) for kpack.h's types, gemm_packed for Q8_0 / Q4_0.
 * The layout is looked up once per range, not once per item (a token of a
 * small model is ~10,000 items). */
static void packed_items(const struct job *j, const struct herd_matmul_out *o, size_t i0, size_t i1) {
    const struct herd_matrix *w = o->w;
    const bool kp = kpacked(w->type);
    const size_t groups = (size_t)w->rows / HERD_PACK_ROWS;
    const size_t chunk = kp                               ? herd_kpack_chunk_bytes(w->type)
                         : w->type == HERD_GGML_TYPE_Q4_0 ? HERD_PACK_Q4_0_CHUNK
                                                          : HERD_PACK_Q8_0_CHUNK;
    const size_t nb = (size_t)w->cols / (kp ? herd_kpack_block_cols(w->type) : HERD_QK8A);
    const bool k_act = herd_act_type_of(w->type) == HERD_ACT_Q8K;
    for (size_t item = i0; item < i1; item++) {
        const size_t t0 = item / groups * PACKED_TOKEN_CHUNK, g = item % groups;
        const size_t nt = j->n_tokens - t0 < PACKED_TOKEN_CHUNK ? j->n_tokens - t0 : PACKED_TOKEN_CHUNK;
        const uint8_t *wg = w->packed + g * nb * chunk;
        float *y = o->y + t0 * o->y_stride + g * HERD_PACK_ROWS;
        const struct herd_block_q8a *xa = (const struct herd_block_q8a *)j->scratch + t0 * nb;
        if (!kp)
            j->k->gemm_packed(w->type, wg, nb, xa, nb, nt, y, o->y_stride);
        else
            (j->k->gemm_kpack ? j->k->gemm_kpack : herd_kpack_gemm_ref)(
                w->type, wg, nb, k_act ? (const void *)(q8k_rows(j) + t0 * nb) : (const void *)xa, nb, nt, y,
                o->y_stride);
    }
}

static void dot_item(const struct job *j, const struct herd_matmul_out *o, size_t item, int ith) {
    const struct herd_matrix *w = o->w;
    const struct herd_kernels *k = j->k;
    const size_t r0 = item * DOT_ROWS;
    const size_t r1 = r0 + DOT_ROWS < w->rows ? r0 + DOT_ROWS : w->rows;
    const size_t nb = w->cols / HERD_QK8A, nbk = w->cols / HERD_QK_K;
    const struct herd_block_q8a *q = j->scratch;
    const struct herd_block_q8_k *qk = q8k_rows(j);
    const enum herd_act_type act = herd_act_type_of(w->type);
    float *deq = NULL;
    if (j->precise && is_quantized(w->type)) {
        /* one row per thread, 64-byte separated to avoid false sharing */
        deq = (float *)((char *)j->scratch + (size_t)ith * (w->cols * sizeof(float) + 64));
    }
    /* K types in a batch: each super-block of the row unpacked once for up
     * to four tokens (Q4_K prefill ~1.5x), the same bits per token as the
     * single-token kernel (kquants_simd.h) */
    const herd_dot_q8k_rows_fn rows_fn =
        !deq && act == HERD_ACT_Q8K && j->n_tokens > 1 ? herd_dot_q8k_rows_of(k->dot_q8k[w->type]) : NULL;
    for (size_t r = r0; r < r1; r++) {
        const void *row = (const char *)w->data + r * w->row_bytes;
        if (rows_fn) {
            rows_fn(row, qk, nbk, j->n_tokens, w->cols, o->y + r, o->y_stride);
            continue;
        }
        if (deq) herd_dequantize_row_ref(w->type, row, deq, w->cols);
        for (size_t t = 0; t < j->n_tokens; t++) {
            const float *xt = j->x + t * j->x_stride;
            float v;
            if (deq) {
                v = k->dot_f32(deq, xt, w->cols);
            } else if (act == HERD_ACT_Q8A) {
                v = k->dot_q8a[w->type](row, q + t * nb, w->cols);
            } else if (act == HERD_ACT_Q8K) {
                v = k->dot_q8k[w->type](row, qk + t * nbk, w->cols);
            } else {
                switch (w->type) {
                case HERD_GGML_TYPE_F32: v = k->dot_f32(row, xt, w->cols); break;
                case HERD_GGML_TYPE_F16: v = k->dot_f16_f32(row, xt, w->cols); break;
                case HERD_GGML_TYPE_BF16: v = k->dot_bf16_f32(row, xt, w->cols); break;
                default: HERD_ASSERT(!"matmul: type not computed"); v = 0;
                }
            }
            o->y[t * o->y_stride + r] = v;
        }
    }
}

/* Items [begin, end) of the job: the outputs' items one after another. */
static void work_range(void *ctx, int ith, size_t begin, size_t end) {
    const struct job *j = ctx;
    size_t base = 0;
    for (size_t o = 0; o < j->n_outs && begin < end; o++) {
        const struct herd_matmul_out *out = &j->outs[o];
        const size_t n = out_items(j, out);
        if (begin < base + n) {
            const size_t i1 = end < base + n ? end : base + n;
            if (packed_path(j, out))
                packed_items(j, out, begin - base, i1 - base);
            else
                for (size_t item = begin; item < i1; item++) dot_item(j, out, item - base, ith);
            begin = i1;
        }
        base += n;
    }
}

/* The job's items and the grain its split run claims them in. */
static size_t job_items(const struct herd_pool *pool, const struct job *j, size_t *grain) {
    size_t items = 0, macs = 1;
    for (size_t i = 0; i < j->n_outs; i++) {
        items += out_items(j, &j->outs[i]);
        const size_t m = item_macs(j, &j->outs[i]);
        if (m > macs) macs = m;
    }
    /* At least CLAIMS_PER_THREAD grains per thread: the pool's shares start
     * on whole grains, so a job of fewer than two grains (one token through
     * a 576-wide matrix is 36 items against a grain of 56) would be claimed
     * whole by one thread while the other waits. */
    const size_t per_share = CLAIMS_PER_THREAD * (size_t)herd_pool_size(pool);
    *grain = MACS_PER_CLAIM / macs;
    if (*grain > (items + per_share - 1) / per_share) *grain = (items + per_share - 1) / per_share;
    return items;
}

static void run_job(struct herd_pool *pool, struct job *j, bool quantize) {
    if (quantize) herd_pool_run(pool, quantize_part, j);
    size_t grain;
    const size_t items = job_items(pool, j, &grain);
    herd_pool_run_split(pool, items, grain, work_range, j);
}

/* The job of outs on x, with the activation families they take. */
static struct job make_job(const struct herd_kernels *k, const struct herd_matmul_out *outs, size_t n_outs,
                           const float *x, size_t x_stride, size_t n_tokens, void *scratch, bool precise) {
    struct job j = {k, outs, n_outs, (size_t)outs[0].w->cols, x, x_stride, n_tokens, scratch, precise, false, false,
                    0, NULL, NULL};
    for (size_t i = 0; i < n_outs; i++) {
        HERD_ASSERT(outs[i].w->cols == outs[0].w->cols);
        const enum herd_act_type act = precise ? HERD_ACT_F32 : herd_act_type_of(outs[i].w->type);
        j.need_q8a = j.need_q8a || act == HERD_ACT_Q8A;
        j.need_q8k = j.need_q8k || act == HERD_ACT_Q8K;
    }
    return j;
}

void herd_matmul_multi(struct herd_pool *pool, const struct herd_kernels *k, const struct herd_matmul_out *outs,
                       size_t n_outs, const float *x, size_t x_stride, size_t n_tokens, void *scratch, bool precise) {
    struct job j = make_job(k, outs, n_outs, x, x_stride, n_tokens, scratch, precise);
    run_job(pool, &j, j.need_q8a || j.need_q8k);
}

void herd_matmul_multi_quantized(struct herd_pool *pool, const struct herd_kernels *k,
                                 const struct herd_matmul_out *outs, size_t n_outs, size_t n_tokens, void *scratch) {
    for (size_t i = 0; i < n_outs; i++) HERD_ASSERT(herd_matmul_quantizes(outs[i].w, false));
    struct job j = make_job(k, outs, n_outs, NULL, 0, n_tokens, scratch, false);
    run_job(pool, &j, false);
}

void herd_matmul(struct herd_pool *pool, const struct herd_kernels *k, const struct herd_matrix *w, const float *x,
                 size_t x_stride, size_t n_tokens, float *y, size_t y_stride, void *scratch, bool precise) {
    const struct herd_matmul_out o = {w, y, y_stride};
    herd_matmul_multi(pool, k, &o, 1, x, x_stride, n_tokens, scratch, precise);
}

/* Item i of a rows job: rows [i x rows_per_item, ...) of every output, then
 * done on them. */
static void rows_range(void *ctx, int ith, size_t begin, size_t end) {
    const struct job *j = ctx;
    for (size_t i = begin; i < end; i++) {
        const size_t r0 = i * j->rows_per_item;
        for (size_t o = 0; o < j->n_outs; o++) {
            const struct herd_matmul_out *out = &j->outs[o];
            const size_t r1 = r0 + j->rows_per_item < out->w->rows ? r0 + j->rows_per_item : out->w->rows;
            if (packed_path(j, out)) /* one chunk of tokens: its items are the groups */
                packed_items(j, out, r0 / HERD_PACK_ROWS, r1 / HERD_PACK_ROWS);
            else
                for (size_t item = r0 / DOT_ROWS; item < (r1 + DOT_ROWS - 1) / DOT_ROWS; item++)
                    dot_item(j, out, item, ith);
        }
        const size_t rows = j->outs[0].w->rows;
        j->done(j->done_ctx, r0, r0 + j->rows_per_item < rows ? r0 + j->rows_per_item : rows);
    }
}

/* The items of the rows form's split run (the last may be short): the
 * share start must count them as the run does. */
static size_t rows_items(const struct herd_matmul_out *outs, size_t rows_per_item) {
    return (outs[0].w->rows + rows_per_item - 1) / rows_per_item;
}

void herd_matmul_multi_rows_quantized(struct herd_pool *pool, const struct herd_kernels *k,
                                      const struct herd_matmul_out *outs, size_t n_outs, size_t n_tokens, void *scratch,
                                      size_t rows_per_item, herd_matmul_rows_fn done, void *done_ctx) {
    HERD_ASSERT(n_tokens <= PACKED_TOKEN_CHUNK && rows_per_item % HERD_PACK_ROWS == 0 && rows_per_item % DOT_ROWS == 0);
    for (size_t i = 0; i < n_outs; i++)
        HERD_ASSERT(herd_matmul_quantizes(outs[i].w, false) && outs[i].w->rows == outs[0].w->rows);
    struct job j = make_job(k, outs, n_outs, NULL, 0, n_tokens, scratch, false);
    j.rows_per_item = rows_per_item;
    j.done = done;
    j.done_ctx = done_ctx;
    herd_pool_run_split(pool, rows_items(outs, rows_per_item), 1, rows_range, &j);
}

/* The packed bytes of items [i0, i1) of out on the packed path for one
 * chunk of tokens (an item a group of 16 rows), from the first: *start and
 * the count; 0 off the packed path. */
static size_t packed_run(const struct job *j, const struct herd_matmul_out *out, size_t i0, size_t i1,
                         const void **start) {
    *start = NULL;
    if (!packed_path(j, out) || j->n_tokens > PACKED_TOKEN_CHUNK || i1 <= i0) return 0;
    const size_t group_bytes = herd_matrix_packed_bytes(out->w) / ((size_t)out->w->rows / HERD_PACK_ROWS);
    *start = out->w->packed + i0 * group_bytes;
    return (i1 - i0) * group_bytes;
}

size_t herd_matmul_share_start(const struct herd_pool *pool, const struct herd_matmul_out *outs, size_t n_outs,
                               size_t n_tokens, int ith, const void **start) {
    const struct job j = make_job(NULL, outs, n_outs, NULL, 0, n_tokens, NULL, false);
    size_t grain, b, e, base = 0;
    const size_t items = job_items(pool, &j, &grain);
    herd_pool_share_bounds(pool, items, grain, ith, &b, &e);
    *start = NULL;
    for (size_t o = 0; o < n_outs && b < e; o++) {
        const size_t n = out_items(&j, &outs[o]);
        if (b < base + n) return packed_run(&j, &outs[o], b - base, (e < base + n ? e : base + n) - base, start);
        base += n;
    }
    return 0;
}

size_t herd_matmul_rows_share_start(const struct herd_pool *pool, const struct herd_matmul_out *outs, size_t n_tokens,
                                    size_t rows_per_item, int ith, const void **start) {
    const struct job j = make_job(NULL, outs, 1, NULL, 0, n_tokens, NULL, false);
    const size_t rows = outs[0].w->rows;
    size_t b, e;
    herd_pool_share_bounds(pool, rows_items(outs, rows_per_item), 1, ith, &b, &e);
    const size_t r1 = e * rows_per_item < rows ? e * rows_per_item : rows; /* an empty share: below b's rows */
    return packed_run(&j, &outs[0], b * rows_per_item / HERD_PACK_ROWS, r1 / HERD_PACK_ROWS, start);
}
