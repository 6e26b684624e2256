/* Paged KV cache: block pool, free list, reference counts, per-sequence
 * block tables, copy-on-write. Not thread-safe: one thread (the scheduler,
 * or a single-user run) owns it; the forward pass's threads only read and
 * write rows of blocks prepared beforehand. */
#include "model/kv_cache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/assert.h"
#include "base/checked.h"
#include "kernels/quant.h"

struct seq {
    bool used;
    uint32_t len;
    uint32_t n_blocks, cap;
    uint32_t n_released; /* blocks [0, n_released) are holes (-1): released behind a sliding window */
    int32_t *blocks;
};

struct herd_kv {
    struct herd_kv_params p;
    size_t elem_bytes;   /* of one value: 4, 2 or 1 */
    size_t k_head_bytes; /* one head's K in a block: values, then (Q8) its per-key scales */
    size_t head_bytes;   /* one head's region in a block and layer */
    size_t n_regions;    /* KV heads over all layers */
    size_t *region0;     /* [n_layer]: the region of each layer's head 0 */
    uint32_t *heads;     /* [n_layer]: a copy of the caller's layer_heads (p.layer_heads points here), or NULL */
    uint8_t *pool;
    int32_t *refs;
    int32_t *free_list;
    uint32_t n_free;
    struct seq *seqs;
    void (*to_f16)(const float *x, uint16_t *y, size_t n);
};

/* Byte sizes of one value, and of one KV head's K and V regions in a block's
 * layer (see kv_cache.h for the layout). */
static void layout(const struct herd_kv_params *p, size_t *elem, size_t *k_head, size_t *v_head) {
    const size_t e = p->type == HERD_KV_F32 ? 4 : p->type == HERD_KV_Q8 ? 1 : 2;
    const size_t scales = p->type == HERD_KV_Q8 ? sizeof(float) * p->block_tokens : 0;
    *elem = e;
    *k_head = (size_t)p->head_dim * p->block_tokens * e + scales;
    *v_head = (size_t)p->block_tokens * p->head_dim * e + scales;
}

/* One KV head's K and V in one block and layer, 64-byte aligned. */
static size_t head_bytes(const struct herd_kv_params *p) {
    size_t e, kh, vh;
    layout(p, &e, &kh, &vh);
    return (kh + vh + 63) & ~(size_t)63;
}

/* KV heads of layer l. */
static size_t layer_heads(const struct herd_kv_params *p, uint32_t l) {
    return p->layer_heads ? p->layer_heads[l] : p->kv_dim / p->head_dim;
}

/* KV heads over all layers: the regions of a block. */
static size_t all_heads(const struct herd_kv_params *p) {
    size_t n = 0;
    for (uint32_t l = 0; l < p->n_layer; l++) n += layer_heads(p, l);
    return n;
}

size_t herd_kv_block_bytes(const struct herd_kv_params *p) { return all_heads(p) * head_bytes(p); }

enum herd_status herd_kv_create(const struct herd_kv_params *p, struct herd_kv **out, struct herd_error *err) {
    *out = NULL;
    if (p->n_layer == 0 || p->kv_dim == 0 || p->head_dim == 0 || p->kv_dim % p->head_dim || p->block_tokens == 0 ||
        p->block_tokens > 16 || p->n_blocks == 0 || p->max_seqs == 0)
        return herd_error_set(err, HERD_E_INVALID, "KV cache parameters must be positive, block_tokens at most 16");
    struct herd_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    kv->p = *p;
    kv->to_f16 = (p->kernels ? p->kernels : herd_kernels_ref())->f32_to_f16;
    size_t v_head_bytes;
    layout(p, &kv->elem_bytes, &kv->k_head_bytes, &v_head_bytes);
    kv->head_bytes = head_bytes(p);
    kv->n_regions = all_heads(p);
    kv->region0 = malloc(p->n_layer * sizeof *kv->region0);
    if (!kv->region0) {
        herd_kv_destroy(kv);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    for (uint32_t l = 0, r = 0; l < p->n_layer; r += (uint32_t)layer_heads(p, l), l++) {
        kv->region0[l] = r;
        if (layer_heads(p, l) == 0 || layer_heads(p, l) * p->head_dim > p->kv_dim) {
            herd_kv_destroy(kv);
            return herd_error_set(err, HERD_E_INVALID, "layer %u: %zu KV heads of %u values exceed kv_dim %u", l,
                                  layer_heads(p, l), p->head_dim, p->kv_dim);
        }
    }
    if (p->layer_heads) { /* kept as a copy: the caller's array need not outlive the cache */
        kv->heads = malloc(p->n_layer * sizeof *kv->heads);
        if (!kv->heads) {
            herd_kv_destroy(kv);
            return herd_error_set(err, HERD_E_NOMEM, "out of memory");
        }
        memcpy(kv->heads, p->layer_heads, p->n_layer * sizeof *kv->heads);
        kv->p.layer_heads = kv->heads;
    }
    size_t total;
    if (!herd_mul_size(herd_kv_block_bytes(p), p->n_blocks, &total)) {
        herd_kv_destroy(kv);
        return herd_error_set(err, HERD_E_NOMEM, "KV cache of %u blocks overflows", p->n_blocks);
    }
    /* The pool is touched (zeroed) here, at start, so that it is really
     * there: pages faulted in later stall the step that first reaches them
     * (with the [layer][head][block] layout, the first block in a huge page's
     * worth of ids touches one page per region: measured 130 ms steps while a
     * long prompt took fresh blocks), and a pool larger than the machine's
     * memory fails now with a clear message instead of the OOM killer
     * striking mid-service. */
    const size_t avail = herd_mem_available();
    if (avail && total > avail) {
        herd_kv_destroy(kv);
        return herd_error_set(err, HERD_E_NOMEM,
                              "a KV cache of %zu bytes (%u blocks) is more than the %zu bytes of memory available; "
                              "lower --kv-mem, --ctx or --max-seqs",
                              total, p->n_blocks, avail);
    }
    kv->pool = herd_alloc_large(total);
    if (kv->pool) memset(kv->pool, 0, total);
    kv->refs = calloc(p->n_blocks, sizeof *kv->refs);
    kv->free_list = malloc(p->n_blocks * sizeof *kv->free_list);
    kv->seqs = calloc(p->max_seqs, sizeof *kv->seqs);
    if (!kv->pool || !kv->refs || !kv->free_list || !kv->seqs) {
        herd_kv_destroy(kv);
        return herd_error_set(err, HERD_E_NOMEM, "cannot allocate a KV cache of %zu bytes (%u blocks)", total,
                              p->n_blocks);
    }
    for (uint32_t i = 0; i < p->n_blocks; i++) kv->free_list[i] = (int32_t)(p->n_blocks - 1 - i);
    kv->n_free = p->n_blocks;
    *out = kv;
    return HERD_OK;
}

void herd_kv_destroy(struct herd_kv *kv) {
    if (!kv) return;
    if (kv->seqs)
        for (uint32_t i = 0; i < kv->p.max_seqs; i++) free(kv->seqs[i].blocks);
    free(kv->seqs);
    free(kv->pool);
    free(kv->refs);
    free(kv->free_list);
    free(kv->region0);
    free(kv->heads);
    free(kv);
}

const struct herd_kv_params *herd_kv_params(const struct herd_kv *kv) { return &kv->p; }
uint32_t herd_kv_free_blocks(const struct herd_kv *kv) { return kv->n_free; }

static struct seq *get(const struct herd_kv *kv, int32_t id) {
    HERD_ASSERT(id >= 0 && (uint32_t)id < kv->p.max_seqs && kv->seqs[id].used);
    return &kv->seqs[id];
}

bool herd_kv_seq_valid(const struct herd_kv *kv, int32_t id) {
    return id >= 0 && (uint32_t)id < kv->p.max_seqs && kv->seqs[id].used;
}

uint32_t herd_kv_seq_len(const struct herd_kv *kv, int32_t id) { return get(kv, id)->len; }

static enum herd_status new_slot(struct herd_kv *kv, int32_t *id, struct herd_error *err) {
    for (uint32_t i = 0; i < kv->p.max_seqs; i++) {
        if (!kv->seqs[i].used) {
            struct seq *s = &kv->seqs[i];
            s->used = true;
            s->len = 0;
            s->n_blocks = 0;
            s->n_released = 0;
            *id = (int32_t)i;
            return HERD_OK;
        }
    }
    return herd_error_set(err, HERD_E_AGAIN, "all %u sequence slots are in use", kv->p.max_seqs);
}

/* Grows s's block table to hold n blocks. */
static enum herd_status table_room(struct seq *s, uint32_t n, struct herd_error *err) {
    if (n <= s->cap) return HERD_OK;
    uint32_t cap = s->cap ? s->cap : 8;
    while (cap < n) cap *= 2;
    int32_t *b = realloc(s->blocks, cap * sizeof *b);
    if (!b) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    s->blocks = b;
    s->cap = cap;
    return HERD_OK;
}

enum herd_status herd_kv_seq_new(struct herd_kv *kv, int32_t *id, struct herd_error *err) {
    return new_slot(kv, id, err);
}

static void release(struct herd_kv *kv, int32_t block) {
    if (block < 0) return; /* a hole behind a sliding window */
    HERD_ASSERT(kv->refs[block] > 0);
    if (--kv->refs[block] == 0) kv->free_list[kv->n_free++] = block;
}

/* The most recently freed block, now used once. */
static int32_t take_block(struct herd_kv *kv) {
    HERD_ASSERT(kv->n_free > 0);
    const int32_t b = kv->free_list[--kv->n_free];
    kv->refs[b] = 1;
    return b;
}

enum herd_status herd_kv_seq_fork(struct herd_kv *kv, int32_t src, uint32_t n_tokens, int32_t *id,
                                  struct herd_error *err) {
    struct seq *s = get(kv, src);
    HERD_ASSERT(n_tokens <= s->len);
    uint32_t nb = (n_tokens + kv->p.block_tokens - 1) / kv->p.block_tokens;
    enum herd_status rc = new_slot(kv, id, err);
    if (rc != HERD_OK) return rc;
    struct seq *d = &kv->seqs[*id];
    s = get(kv, src); /* same array, no reallocation, but keep it obvious */
    if ((rc = table_room(d, nb, err)) != HERD_OK) {
        d->used = false;
        return rc;
    }
    for (uint32_t i = 0; i < nb; i++) {
        d->blocks[i] = s->blocks[i];
        if (s->blocks[i] >= 0) kv->refs[s->blocks[i]]++;
    }
    d->n_blocks = nb;
    d->n_released = s->n_released < nb ? s->n_released : nb;
    d->len = n_tokens;
    return HERD_OK;
}

enum herd_status herd_kv_seq_adopt(struct herd_kv *kv, int32_t id, const int32_t *blocks, uint32_t n,
                                   struct herd_error *err) {
    struct seq *s = get(kv, id);
    HERD_ASSERT(s->len == 0 && s->n_blocks == 0);
    enum herd_status rc = table_room(s, n, err);
    if (rc != HERD_OK) return rc;
    for (uint32_t i = 0; i < n; i++) {
        HERD_ASSERT(blocks[i] >= 0 && (uint32_t)blocks[i] < kv->p.n_blocks && kv->refs[blocks[i]] > 0);
        s->blocks[i] = blocks[i];
        kv->refs[blocks[i]]++;
    }
    s->n_blocks = n;
    s->len = n * kv->p.block_tokens;
    return HERD_OK;
}

void herd_kv_block_ref(struct herd_kv *kv, int32_t block) {
    HERD_ASSERT(block >= 0 && (uint32_t)block < kv->p.n_blocks && kv->refs[block] > 0);
    kv->refs[block]++;
}

void herd_kv_block_unref(struct herd_kv *kv, int32_t block) {
    HERD_ASSERT(block >= 0 && (uint32_t)block < kv->p.n_blocks);
    release(kv, block);
}

uint32_t herd_kv_block_refs(const struct herd_kv *kv, int32_t block) {
    HERD_ASSERT(block >= 0 && (uint32_t)block < kv->p.n_blocks);
    return (uint32_t)kv->refs[block];
}

void herd_kv_seq_free(struct herd_kv *kv, int32_t id) {
    struct seq *s = get(kv, id);
    for (uint32_t i = 0; i < s->n_blocks; i++) release(kv, s->blocks[i]);
    s->n_blocks = 0;
    s->n_released = 0;
    s->len = 0;
    s->used = false;
}

void herd_kv_seq_truncate(struct herd_kv *kv, int32_t id, uint32_t n_tokens) {
    struct seq *s = get(kv, id);
    if (n_tokens >= s->len) return;
    uint32_t nb = (n_tokens + kv->p.block_tokens - 1) / kv->p.block_tokens;
    for (uint32_t i = nb; i < s->n_blocks; i++) release(kv, s->blocks[i]);
    s->n_blocks = nb;
    if (s->n_released > nb) s->n_released = nb;
    s->len = n_tokens;
}

void herd_kv_seq_release_before(struct herd_kv *kv, int32_t id, uint32_t pos) {
    struct seq *s = get(kv, id);
    uint32_t nb = pos / kv->p.block_tokens; /* blocks whose every position is below pos */
    if (nb > s->n_blocks) nb = s->n_blocks;
    for (; s->n_released < nb; s->n_released++) {
        release(kv, s->blocks[s->n_released]);
        s->blocks[s->n_released] = -1;
    }
}

uint32_t herd_kv_seq_first_kept(const struct herd_kv *kv, int32_t id) {
    return get(kv, id)->n_released * kv->p.block_tokens;
}

/* Where region r (layer * kv_heads + head) of a block lies: the pool is
 * [layer][head][block], so a sequence's consecutive blocks of one region are
 * neighbours in memory. */
static uint8_t *head_region(const struct herd_kv *kv, int32_t block, size_t r) {
    return kv->pool + (r * kv->p.n_blocks + (size_t)block) * kv->head_bytes;
}

static void copy_block(struct herd_kv *kv, int32_t dst, int32_t src) {
    for (size_t r = 0; r < kv->n_regions; r++) memcpy(head_region(kv, dst, r), head_region(kv, src, r), kv->head_bytes);
}

enum herd_status herd_kv_seq_prepare(struct herd_kv *kv, int32_t id, uint32_t pos, uint32_t n, struct herd_error *err) {
    struct seq *s = get(kv, id);
    HERD_ASSERT(pos <= s->len);
    if (n == 0) return HERD_OK;
    const uint32_t bt = kv->p.block_tokens;
    const uint32_t end = pos + n;
    const uint32_t need_blocks = (end + bt - 1) / bt;
    if (pos / bt < s->n_released)
        return herd_error_set(err, HERD_E_INVALID,
                              "sequence %d: positions from %u were released behind the sliding window (kept from %u)",
                              id, pos, s->n_released * bt);
    /* count what is needed before changing anything */
    uint32_t fresh = need_blocks > s->n_blocks ? need_blocks - s->n_blocks : 0;
    uint32_t copies = 0;
    for (uint32_t b = pos / bt; b < s->n_blocks && b < need_blocks; b++)
        if (kv->refs[s->blocks[b]] > 1) copies++;
    if (fresh + copies > kv->n_free)
        return herd_error_set(err, HERD_E_AGAIN, "KV cache full: %u blocks needed, %u free of %u", fresh + copies,
                              kv->n_free, kv->p.n_blocks);
    enum herd_status rc = table_room(s, need_blocks, err);
    if (rc != HERD_OK) return rc;
    for (uint32_t b = pos / bt; b < s->n_blocks && b < need_blocks; b++) {
        int32_t old = s->blocks[b];
        if (kv->refs[old] <= 1) continue;
        int32_t nw = take_block(kv);
        copy_block(kv, nw, old);
        release(kv, old);
        s->blocks[b] = nw;
    }
    while (s->n_blocks < need_blocks) {
        int32_t nw = take_block(kv);
        s->blocks[s->n_blocks++] = nw;
    }
    if (end > s->len) s->len = end;
    return HERD_OK;
}

void herd_kv_prefetch_head(const struct herd_kv *kv, int32_t block, uint32_t layer, uint32_t head) {
    const uint8_t *r = head_region(kv, block, kv->region0[layer] + head);
    for (size_t o = 0; o < kv->head_bytes; o += 64) __builtin_prefetch(r + o, 0, 1);
}

void herd_kv_view_next(const struct herd_kv *kv, int32_t block, uint32_t layer, uint32_t head,
                       struct herd_attn_kv *view) {
    view->next = head_region(kv, block, kv->region0[layer] + head);
    view->next_bytes = kv->head_bytes;
}

void herd_kv_head_view(const struct herd_kv *kv, int32_t block, uint32_t layer, uint32_t head,
                       struct herd_attn_kv *view) {
    const uint32_t bt = kv->p.block_tokens, hd = kv->p.head_dim;
    uint8_t *k = head_region(kv, block, kv->region0[layer] + head);
    uint8_t *v = k + kv->k_head_bytes;
    view->type = kv->p.type == HERD_KV_F32  ? HERD_ATTN_KV_F32
                 : kv->p.type == HERD_KV_Q8 ? HERD_ATTN_KV_Q8
                                            : HERD_ATTN_KV_F16;
    view->k = k;
    view->v = v;
    view->v_stride = hd;
    view->k_scale = NULL;
    view->v_scale = NULL;
    view->v_scale_stride = 1;
    view->next = NULL;
    view->next_bytes = 0;
    view->first = 0;
    view->softcap = 0.0f;
    if (kv->p.type == HERD_KV_Q8) {
        view->k_scale = (const float *)(const void *)(k + (size_t)hd * bt);
        view->v_scale = (const float *)(const void *)(v + (size_t)hd * bt);
    }
}

/* int8 quantization of n values with one scale: amax / 127, round half to even. */
static float quantize_i8(const float *x, size_t n, size_t stride, int8_t *out, size_t out_stride) {
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i * stride]));
    const float scale = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (size_t i = 0; i < n; i++) out[i * out_stride] = (int8_t)lrintf(x[i * stride] * inv);
    return scale;
}

void herd_kv_store_head(struct herd_kv *kv, int32_t id, uint32_t layer, uint32_t pos, uint32_t h, const float *kh,
                        const float *vh) {
    struct seq *s = get(kv, id);
    HERD_ASSERT(pos < s->len && layer < kv->p.n_layer);
    HERD_ASSERT(h <
                (uint32_t)((layer + 1 < kv->p.n_layer ? kv->region0[layer + 1] : kv->n_regions) - kv->region0[layer]));
    const uint32_t bt = kv->p.block_tokens, slot = pos % bt, hd = kv->p.head_dim;
    struct herd_attn_kv view;
    herd_kv_head_view(kv, s->blocks[pos / bt], layer, h, &view);
    uint8_t *K = (uint8_t *)view.k, *V = (uint8_t *)view.v + (size_t)slot * view.v_stride * kv->elem_bytes;
    switch (kv->p.type) {
    case HERD_KV_F32:
        for (uint32_t d = 0; d < hd; d++) ((float *)(void *)K)[(size_t)d * bt + slot] = kh[d];
        memcpy(V, vh, hd * sizeof(float));
        break;
    case HERD_KV_Q8:
        ((float *)view.k_scale)[slot] = quantize_i8(kh, hd, 1, (int8_t *)K + slot, bt);
        ((float *)view.v_scale)[(size_t)slot * view.v_scale_stride] = quantize_i8(vh, hd, 1, (int8_t *)V, 1);
        break;
    default: {
        /* K is stored transposed (one row per dimension): convert, then scatter */
        uint16_t kc[512];
        HERD_ASSERT(hd <= 512);
        kv->to_f16(kh, kc, hd);
        for (uint32_t d = 0; d < hd; d++) ((uint16_t *)(void *)K)[(size_t)d * bt + slot] = kc[d];
        kv->to_f16(vh, (uint16_t *)(void *)V, hd);
    }
    }
}

void herd_kv_store(struct herd_kv *kv, int32_t id, uint32_t layer, uint32_t pos, const float *k, const float *v) {
    HERD_ASSERT(layer < kv->p.n_layer);
    const uint32_t hd = kv->p.head_dim;
    const uint32_t n_heads =
        (uint32_t)((layer + 1 < kv->p.n_layer ? kv->region0[layer + 1] : kv->n_regions) - kv->region0[layer]);
    for (uint32_t h = 0; h < n_heads; h++)
        herd_kv_store_head(kv, id, layer, pos, h, k + (size_t)h * hd, v + (size_t)h * hd);
}

const int32_t *herd_kv_seq_blocks(const struct herd_kv *kv, int32_t id, uint32_t *n) {
    const struct seq *s = get(kv, id);
    *n = s->n_blocks;
    return s->blocks;
}
