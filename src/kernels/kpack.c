/* Packing of Q2_K..Q6_K, Q4_1, Q5_0, Q5_1 and IQ4_NL matrices into the
 * tiled layouts of kpack.h, and the scalar reference of the tiled kernel,
 * which reads the packed bytes the way the SIMD twins do. Built with
 * -ffp-contract=off: the reference's float steps are the twins' (explicit
 * fmaf where they fuse). */
#include "kernels/kpack.h"

#include <math.h>
#include <string.h>

#include "base/assert.h"
#include "kernels/kquants.h"
#include "kernels/quant.h"

enum { ROWS = HERD_PACK_ROWS };

/* ------------------------------------------------------------ layout */

/* Where the parts of a chunk start (bytes from the chunk; -1: absent).
 * The weights come in steps of 32 columns (one sub-block of Q4_K / Q5_K,
 * two of the 16-column types, the whole Q8A block), each step's bit plane
 * right after its weights, so that a tile reads its chunk front to back. */
struct layout {
    size_t chunk;
    int block_cols; /* 256 or 32 */
    int sub;        /* columns per sub-block: 32 or 16 */
    int d, dmin, m, sc, mn;
    int q;        /* the first step */
    int step;     /* bytes per step of 32 columns */
    int hb;       /* the bit plane in a step (8 masks), or -1 */
    int hc;       /* Q6_K's high crumbs in a step (2 vectors: bits 4-5 of u), or -1 */
    int enc;      /* ENC_* */
    int hb_value; /* what a set plane bit adds to u: 16 or 4 */
    int offset;   /* u - value */
};

enum { ENC_NIBBLES, ENC_CRUMBS };

static bool layout_of(enum herd_ggml_type type, struct layout *l) {
    const struct layout k = {.block_cols = 256, .d = 0, .dmin = -1, .m = -1, .sc = -1, .mn = -1, .hb = -1, .hc = -1};
    const struct layout a = {.block_cols = 32,
                             .sub = 32,
                             .d = 0,
                             .dmin = -1,
                             .m = -1,
                             .sc = -1,
                             .mn = -1,
                             .step = 256,
                             .hb = -1,
                             .hc = -1,
                             .enc = ENC_NIBBLES};
    switch (type) {
    case HERD_GGML_TYPE_Q4_K:
    case HERD_GGML_TYPE_Q5_K:
        *l = k;
        l->chunk = HERD_KPACK_Q4_K_CHUNK, l->sub = 32, l->dmin = 32, l->sc = 64, l->mn = 192;
        l->q = 320, l->step = 256, l->enc = ENC_NIBBLES;
        if (type == HERD_GGML_TYPE_Q5_K) l->chunk = HERD_KPACK_Q5_K_CHUNK, l->step = 320, l->hb = 256, l->hb_value = 16;
        return true;
    case HERD_GGML_TYPE_Q6_K:
        *l = k;
        l->chunk = HERD_KPACK_Q6_K_CHUNK, l->sub = 16, l->sc = 32, l->q = 320, l->step = 384, l->enc = ENC_NIBBLES;
        l->hc = 256;
        l->offset = 32;
        return true;
    case HERD_GGML_TYPE_Q3_K:
        *l = k;
        l->chunk = HERD_KPACK_Q3_K_CHUNK, l->sub = 16, l->sc = 32, l->q = 320, l->step = 192, l->enc = ENC_CRUMBS;
        l->hb = 128, l->hb_value = 4, l->offset = 4;
        return true;
    case HERD_GGML_TYPE_Q2_K:
        *l = k;
        l->chunk = HERD_KPACK_Q2_K_CHUNK, l->sub = 16, l->dmin = 32, l->sc = 64, l->mn = 320, l->q = 576;
        l->step = 128, l->enc = ENC_CRUMBS;
        return true;
    case HERD_GGML_TYPE_Q5_0:
        *l = a;
        l->chunk = HERD_KPACK_Q5_0_CHUNK, l->q = 32, l->step = 320, l->hb = 256, l->hb_value = 16, l->offset = 16;
        return true;
    case HERD_GGML_TYPE_Q5_1:
        *l = a;
        l->chunk = HERD_KPACK_Q5_1_CHUNK, l->m = 32, l->q = 64, l->step = 320, l->hb = 256, l->hb_value = 16;
        return true;
    case HERD_GGML_TYPE_Q4_1:
        *l = a;
        l->chunk = HERD_KPACK_Q4_1_CHUNK, l->m = 32, l->q = 64;
        return true;
    case HERD_GGML_TYPE_IQ4_NL:
        *l = a;
        l->chunk = HERD_KPACK_IQ4_NL_CHUNK, l->q = 32, l->offset = 128;
        return true;
    default: return false;
    }
}

size_t herd_kpack_chunk_bytes(enum herd_ggml_type type) {
    struct layout l;
    return layout_of(type, &l) ? l.chunk : 0;
}

size_t herd_kpack_block_cols(enum herd_ggml_type type) {
    struct layout l;
    return layout_of(type, &l) ? (size_t)l.block_cols : 0;
}

size_t herd_kpack_bytes(enum herd_ggml_type type, uint64_t rows, uint64_t cols) {
    struct layout l;
    if (!layout_of(type, &l) || rows % ROWS != 0 || cols % (uint64_t)l.block_cols != 0) return 0;
    return (size_t)(rows / ROWS) * (size_t)(cols / (uint64_t)l.block_cols) * l.chunk;
}

/* Byte offset of the W_k vector (or raw vector) holding column col of a
 * block, and the shift that brings its value to bit 0. */
static size_t weight_pos(const struct layout *l, int col, int r, int *shift) {
    const int base = l->q + l->step * (col / 32), cc = col % 32, k = cc / 4, i = cc % 4;
    switch (l->enc) {
    case ENC_NIBBLES: *shift = 4 * (k / 4); return (size_t)(base + 64 * (k % 4) + 4 * r + i);
    default: *shift = 2 * (k % 4); return (size_t)(base + 64 * (k / 4) + 4 * r + i);
    }
}

/* The plane bit of column col, row r: byte, and bit number in it (mask k
 * of a step is W_k's, bit 4r+i of its 8 little-endian bytes). */
static size_t plane_pos(const struct layout *l, int col, int r, int *bit) {
    const int cc = col % 32, k = cc / 4, i = cc % 4;
    *bit = (4 * r + i) % 8;
    return (size_t)(l->q + l->step * (col / 32) + l->hb + 8 * k + (4 * r + i) / 8);
}

/* The byte holding Q6_K's bits 4-5 of column col, row r (at bits
 * 2(k % 4), k = col % 32 / 4). */
static size_t crumb_pos(const struct layout *l, int col, int r) {
    const int k = col % 32 / 4, i = col % 4;
    return (size_t)(l->q + l->step * (col / 32) + l->hc + 64 * (k / 4) + 4 * r + i);
}

/* The unsigned weight u of row r, column col of a chunk. */
static int weight_at(const struct layout *l, const uint8_t *c, int col, int r) {
    int shift;
    const uint8_t byte = c[weight_pos(l, col, r, &shift)];
    const int mask = l->enc == ENC_NIBBLES ? 0x0f : 0x03;
    int u = (byte >> shift) & mask;
    if (l->hc >= 0) u |= ((c[crumb_pos(l, col, r)] >> (2 * (col % 32 / 4 % 4))) & 3) << 4;
    if (l->hb >= 0) {
        int bit;
        const size_t at = plane_pos(l, col, r, &bit);
        if ((c[at] >> bit) & 1) u += l->hb_value;
    }
    return u;
}

/* ------------------------------------------------------------ packing */

/* One block of one row in plain integers: u[col] (unsigned, value = u -
 * offset, or the grid index for IQ4_NL), per sub-block scale and min, and
 * the fp16 d, dmin / m bits. */
struct row_block {
    uint8_t u[HERD_QK_K];
    int16_t sc[16], mn[16];
    uint16_t d, dmin; /* dmin: Q4_1 / Q5_1's m */
};

static void unpack_q5_bits(const uint8_t qh[4], const uint8_t qs[16], uint8_t *u) {
    const uint32_t h = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
    for (int j = 0; j < 16; j++) {
        u[j] = (uint8_t)((qs[j] & 0x0f) | ((h >> j) & 1u) << 4);
        u[j + 16] = (uint8_t)((qs[j] >> 4) | ((h >> (j + 16)) & 1u) << 4);
    }
}

static void unpack_row_block(enum herd_ggml_type type, const uint8_t *row, size_t b, struct row_block *o) {
    memset(o, 0, sizeof *o);
    switch (type) {
    case HERD_GGML_TYPE_Q4_K:
    case HERD_GGML_TYPE_Q5_K: {
        const uint8_t *scales, *qs, *qh = NULL;
        if (type == HERD_GGML_TYPE_Q4_K) {
            const struct herd_block_q4_k *k = (const struct herd_block_q4_k *)row + b;
            o->d = k->d, o->dmin = k->dmin, scales = k->scales, qs = k->qs;
        } else {
            const struct herd_block_q5_k *k = (const struct herd_block_q5_k *)row + b;
            o->d = k->d, o->dmin = k->dmin, scales = k->scales, qs = k->qs, qh = k->qh;
        }
        /* element 64p + 32k + l: nibble k of qs[32p + l], fifth bit 2p + k of qh[l] */
        for (int p = 0; p < 4; p++)
            for (int l = 0; l < 32; l++) {
                o->u[64 * p + l] = qs[32 * p + l] & 0xf;
                o->u[64 * p + 32 + l] = qs[32 * p + l] >> 4;
            }
        if (qh)
            for (int p = 0; p < 4; p++)
                for (int l = 0; l < 32; l++) {
                    o->u[64 * p + l] |= (uint8_t)(((qh[l] >> (2 * p)) & 1) << 4);
                    o->u[64 * p + 32 + l] |= (uint8_t)(((qh[l] >> (2 * p + 1)) & 1) << 4);
                }
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            herd_kquant_scale_min(j, scales, &sc, &m);
            o->sc[j] = sc, o->mn[j] = m;
        }
        break;
    }
    case HERD_GGML_TYPE_Q6_K: {
        const struct herd_block_q6_k *k = (const struct herd_block_q6_k *)row + b;
        o->d = k->d;
        /* element 128h + 32s + l: nibble s / 2 of ql[64h + 32(s % 2) + l],
         * bits 2s.. of qh[32h + l] */
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++)
                for (int l = 0; l < 32; l++) {
                    const int lo = (k->ql[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 0xf;
                    o->u[128 * h + 32 * s + l] = (uint8_t)(lo | ((k->qh[32 * h + l] >> (2 * s)) & 3) << 4);
                }
        for (int j = 0; j < 16; j++) o->sc[j] = k->scales[j];
        break;
    }
    case HERD_GGML_TYPE_Q3_K: {
        const struct herd_block_q3_k *k = (const struct herd_block_q3_k *)row + b;
        o->d = k->d;
        for (int e = 0; e < HERD_QK_K; e++) {
            const int h = e / 128, s = e % 128 / 32, kl = e % 32;
            o->u[e] = (uint8_t)(((k->qs[32 * h + kl] >> (2 * s)) & 3) + 4 * ((k->hmask[kl] >> (4 * h + s)) & 1));
        }
        uint8_t sc[16];
        herd_q3_k_scales(k->scales, sc);
        for (int j = 0; j < 16; j++) o->sc[j] = (int16_t)(sc[j] - 32);
        break;
    }
    case HERD_GGML_TYPE_Q2_K: {
        const struct herd_block_q2_k *k = (const struct herd_block_q2_k *)row + b;
        o->d = k->d, o->dmin = k->dmin;
        for (int e = 0; e < HERD_QK_K; e++) {
            const int h = e / 128, s = e % 128 / 32, kl = e % 32;
            o->u[e] = (uint8_t)((k->qs[32 * h + kl] >> (2 * s)) & 3);
        }
        for (int j = 0; j < 16; j++) o->sc[j] = k->scales[j] & 0xf, o->mn[j] = (int16_t)(k->scales[j] >> 4);
        break;
    }
    case HERD_GGML_TYPE_Q5_0: {
        const struct herd_block_q5_0 *k = (const struct herd_block_q5_0 *)row + b;
        o->d = k->d;
        unpack_q5_bits(k->qh, k->qs, o->u);
        break;
    }
    case HERD_GGML_TYPE_Q5_1: {
        const struct herd_block_q5_1 *k = (const struct herd_block_q5_1 *)row + b;
        o->d = k->d, o->dmin = k->m;
        unpack_q5_bits(k->qh, k->qs, o->u);
        break;
    }
    case HERD_GGML_TYPE_Q4_1: {
        const struct herd_block_q4_1 *k = (const struct herd_block_q4_1 *)row + b;
        o->d = k->d, o->dmin = k->m;
        for (int j = 0; j < 16; j++) o->u[j] = k->qs[j] & 0x0f, o->u[j + 16] = (uint8_t)(k->qs[j] >> 4);
        break;
    }
    case HERD_GGML_TYPE_IQ4_NL: {
        const struct herd_block_iq4_nl *k = (const struct herd_block_iq4_nl *)row + b;
        o->d = k->d;
        for (int j = 0; j < 16; j++) o->u[j] = k->qs[j] & 0x0f, o->u[j + 16] = (uint8_t)(k->qs[j] >> 4);
        break;
    }
    default: HERD_ASSERT(!"kpack: type not packed");
    }
}

/* Scale or min j of row r: one byte per row per sub-block, in pairs for
 * 16-column sub-blocks (see kpack.h). */
static size_t scale_pos(const struct layout *l, int base, int j, int r) {
    if (l->sub == 16) return (size_t)(base + 32 * (j / 2) + 2 * r + j % 2);
    return (size_t)(base + 16 * j + r);
}

/* Row r's 32 weights u[0..32) of one step into the step at v (zeroed
 * before): byte by byte, the layout weight_pos, plane_pos and crumb_pos
 * read (per element, those made loading tinyllama-1.1b take 6 s). */
static void pack_step(const struct layout *l, const uint8_t *u, int r, uint8_t *v) {
    for (int i = 0; i < 4; i++) {
        const int lane = 4 * r + i;
        if (l->enc == ENC_NIBBLES) {
            for (int j = 0; j < 4; j++)
                v[64 * j + lane] = (uint8_t)((u[4 * j + i] & 15) | (u[16 + 4 * j + i] & 15) << 4);
        } else {
            for (int h = 0; h < 2; h++) {
                const uint8_t *uh = u + 16 * h + i;
                v[64 * h + lane] = (uint8_t)((uh[0] & 3) | (uh[4] & 3) << 2 | (uh[8] & 3) << 4 | (uh[12] & 3) << 6);
            }
        }
        if (l->hc >= 0)
            for (int h = 0; h < 2; h++) {
                const uint8_t *uh = u + 16 * h + i;
                v[l->hc + 64 * h + lane] =
                    (uint8_t)(uh[0] >> 4 | (uh[4] >> 4) << 2 | (uh[8] >> 4) << 4 | (uh[12] >> 4) << 6);
            }
        if (l->hb >= 0)
            for (int k = 0; k < 8; k++)
                if (u[4 * k + i] >= l->hb_value) v[l->hb + 8 * k + lane / 8] |= (uint8_t)(1u << (lane % 8));
    }
}

static void pack_chunk(const struct layout *l, const struct row_block rb[ROWS], uint8_t *c) {
    memset(c, 0, l->chunk);
    const int n_sub = l->block_cols / l->sub;
    for (int r = 0; r < ROWS; r++) {
        memcpy(c + l->d + 2 * r, &rb[r].d, 2);
        if (l->dmin >= 0) memcpy(c + l->dmin + 2 * r, &rb[r].dmin, 2);
        if (l->m >= 0) memcpy(c + l->m + 2 * r, &rb[r].dmin, 2);
        for (int j = 0; j < (l->sc >= 0 ? n_sub : 0); j++) c[scale_pos(l, l->sc, j, r)] = (uint8_t)rb[r].sc[j];
        for (int j = 0; j < (l->mn >= 0 ? n_sub : 0); j++) c[scale_pos(l, l->mn, j, r)] = (uint8_t)rb[r].mn[j];
        for (int st = 0; st < l->block_cols / 32; st++) pack_step(l, rb[r].u + 32 * st, r, c + l->q + l->step * st);
    }
}

void herd_kpack_pack(enum herd_ggml_type type, const void *data, size_t row_bytes, uint64_t rows, uint64_t cols,
                     uint8_t *dst) {
    struct layout l;
    HERD_ASSERT(layout_of(type, &l) && herd_kpack_bytes(type, rows, cols) > 0);
    const size_t nb = (size_t)cols / (size_t)l.block_cols, groups = (size_t)rows / ROWS;
    struct row_block rb[ROWS]; /* 5 KB */
    for (size_t g = 0; g < groups; g++)
        for (size_t b = 0; b < nb; b++) {
            for (int r = 0; r < ROWS; r++)
                unpack_row_block(type, (const uint8_t *)data + (g * ROWS + (size_t)r) * row_bytes, b, &rb[r]);
            pack_chunk(&l, rb, dst + (g * nb + b) * l.chunk);
        }
}

/* ------------------------------------------------------------ the scalar tiles */

static float fp16_at(const uint8_t *p) { return herd_fp16_to_fp32((uint16_t)(p[0] | p[1] << 8)); }

static void gemm_k_ref(const struct layout *l, const uint8_t *w, size_t n_blocks, const struct herd_block_q8_k *x,
                       size_t x_stride, size_t n_tok, float *y, size_t y_stride) {
    const int n_sub = HERD_QK_K / l->sub;
    for (size_t t = 0; t < n_tok; t++) {
        float acc[ROWS] = {0};
        for (size_t b = 0; b < n_blocks; b++) {
            const uint8_t *c = w + b * l->chunk;
            const struct herd_block_q8_k *xb = x + t * x_stride + b;
            for (int r = 0; r < ROWS; r++) {
                int32_t isum = 0, msum = 0;
                for (int j = 0; j < n_sub; j++) {
                    const int sc = l->offset ? (int8_t)c[scale_pos(l, l->sc, j, r)] : c[scale_pos(l, l->sc, j, r)];
                    int32_t s = 0, bs = 0;
                    for (int col = j * l->sub; col < (j + 1) * l->sub; col++)
                        s += weight_at(l, c, col, r) * xb->qs[col];
                    for (int g = j * l->sub / 16; g < (j + 1) * l->sub / 16; g++) bs += xb->bsums[g];
                    isum += sc * s - l->offset * sc * bs;
                    if (l->mn >= 0) msum += c[scale_pos(l, l->mn, j, r)] * bs;
                }
                const float dd = fp16_at(c + l->d + 2 * r) * xb->d;
                if (l->dmin >= 0)
                    acc[r] += dd * (float)isum - fp16_at(c + l->dmin + 2 * r) * xb->d * (float)msum;
                else
                    acc[r] += dd * (float)isum;
            }
        }
        for (int r = 0; r < ROWS; r++) y[t * y_stride + (size_t)r] = acc[r];
    }
}

static void gemm_q8a_ref(enum herd_ggml_type type, const struct layout *l, const uint8_t *w, size_t n_blocks,
                         const struct herd_block_q8a *x, size_t x_stride, size_t n_tok, float *y, size_t y_stride) {
    for (size_t t = 0; t < n_tok; t++) {
        float acc[ROWS] = {0};
        for (size_t b = 0; b < n_blocks; b++) {
            const uint8_t *c = w + b * l->chunk;
            const struct herd_block_q8a *xb = x + t * x_stride + b;
            for (int r = 0; r < ROWS; r++) {
                int32_t s = -l->offset * herd_q8a_sum(xb);
                for (int col = 0; col < HERD_QK8A; col++) {
                    int u = weight_at(l, c, col, r);
                    if (type == HERD_GGML_TYPE_IQ4_NL) u = herd_iq4nl_values[u] + 128;
                    s += u * xb->qs[col];
                }
                acc[r] = fmaf((float)s, fp16_at(c + l->d + 2 * r) * xb->d, acc[r]);
                if (l->m >= 0) acc[r] = fmaf(fp16_at(c + l->m + 2 * r), xb->d * (float)herd_q8a_sum(xb), acc[r]);
            }
        }
        for (int r = 0; r < ROWS; r++) y[t * y_stride + (size_t)r] = acc[r];
    }
}

void herd_kpack_gemm_ref(enum herd_ggml_type type, const uint8_t *w, size_t n_blocks, const void *x, size_t x_stride,
                         size_t n_tok, float *y, size_t y_stride) {
    struct layout l;
    HERD_ASSERT(layout_of(type, &l));
    if (l.block_cols == HERD_QK_K)
        gemm_k_ref(&l, w, n_blocks, x, x_stride, n_tok, y, y_stride);
    else
        gemm_q8a_ref(type, &l, w, n_blocks, x, x_stride, n_tok, y, y_stride);
}
