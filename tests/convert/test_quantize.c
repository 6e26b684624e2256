/* The quantize driver: TYPE parsing, llama-quantize's tensor order and mix
 * rules on hand-built models, thread-count independence, and every input
 * fault (truncated tensor, NaN weights, requantization, a bad importance
 * matrix, a full disk) an error that leaves no output file. Byte identity
 * with llama-quantize itself is tests/cli/test_quantize.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <sys/resource.h>

#include "base/rng.h"
#include "convert/quantize.c" /* the statics: tensor_order, use_more_bits */
#include "herd/gguf.h"
#include "test_util.h"

/* ------------------------------------------------------------ a hand-built model */

/* Only the row length of each matrix matters to quantize, so the block
 * matrices have `rows` rows each, whatever the heads (a small file). */
struct model_spec {
    uint32_t n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab, rows;
    enum herd_ggml_type type; /* of the matrices */
    bool tied;
    bool nan_in_ffn_up; /* a NaN weight in blk.0.ffn_up */
};

static void add_matrix(struct herd_gguf_writer *w, const char *name, uint64_t ne0, uint64_t ne1,
                       enum herd_ggml_type t) {
    struct herd_error err = {0};
    const uint64_t ne[2] = {ne0, ne1};
    assert_int_equal(herd_gguf_writer_add_tensor(w, name, t, ne1 > 1 ? 2 : 1, ne, &err), HERD_OK);
}

/* Names and shapes in GGUF converter order. */
static size_t model_tensors(const struct model_spec *s, char names[][64], uint64_t (*ne)[2]) {
    size_t n = 0;
#define T(fmt, layer, a, b)                                                                                            \
    do {                                                                                                               \
        snprintf(names[n], 64, fmt, layer);                                                                            \
        ne[n][0] = a, ne[n][1] = b, n++;                                                                               \
    } while (0)
    T("token_embd.weight%.0d", 0, s->n_embd, s->n_vocab);
    T("output_norm.weight%.0d", 0, s->n_embd, 1);
    if (!s->tied) T("output.weight%.0d", 0, s->n_embd, s->n_vocab);
    for (uint32_t l = 0; l < s->n_layer; l++) {
        T("blk.%u.attn_norm.weight", l, s->n_embd, 1);
        T("blk.%u.attn_q.weight", l, s->n_embd, s->rows);
        T("blk.%u.attn_k.weight", l, s->n_embd, s->rows);
        T("blk.%u.attn_v.weight", l, s->n_embd, s->rows);
        T("blk.%u.attn_output.weight", l, s->n_embd, s->rows);
        T("blk.%u.ffn_norm.weight", l, s->n_embd, 1);
        T("blk.%u.ffn_gate.weight", l, s->n_embd, s->rows);
        T("blk.%u.ffn_up.weight", l, s->n_embd, s->rows);
        T("blk.%u.ffn_down.weight", l, s->n_ff, s->rows);
    }
#undef T
    return n;
}

static void write_model(const struct model_spec *s, const char *path) {
    struct herd_error err = {0};
    struct herd_gguf_writer *w = herd_gguf_writer_create();
    assert_non_null(w);
    assert_int_equal(herd_gguf_writer_add_string(w, "general.architecture", "llama", &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_u32(w, "general.file_type", 0, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_u32(w, "llama.block_count", s->n_layer, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_u32(w, "llama.embedding_length", s->n_embd, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_u32(w, "llama.attention.head_count", s->n_head, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_u32(w, "llama.attention.head_count_kv", s->n_head_kv, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_string(w, "zzz.after", "kept in place", &err), HERD_OK);
    static char names[4096][64];
    static uint64_t ne[4096][2];
    const size_t n = model_tensors(s, names, ne);
    for (size_t i = 0; i < n; i++)
        add_matrix(w, names[i], ne[i][0], ne[i][1], ne[i][1] > 1 ? s->type : HERD_GGML_TYPE_F32);
    assert_int_equal(herd_gguf_writer_begin(w, path, &err), HERD_OK);
    struct herd_rng rng;
    herd_rng_init(&rng, 5);
    for (size_t i = 0; i < n; i++) {
        const size_t count = (size_t)(ne[i][0] * ne[i][1]);
        const enum herd_ggml_type t = ne[i][1] > 1 ? s->type : HERD_GGML_TYPE_F32;
        float *x = malloc(count * sizeof *x);
        for (size_t j = 0; j < count; j++) x[j] = (float)(0.05 * herd_rng_normal(&rng));
        if (s->nan_in_ffn_up && strcmp(names[i], "blk.0.ffn_up.weight") == 0) x[3] = NAN;
        uint64_t bytes;
        const uint64_t dims[2] = {ne[i][0], ne[i][1]};
        assert_int_equal(herd_ggml_tensor_nbytes(t, 2, dims, NULL, &bytes, &err), HERD_OK);
        uint8_t *q = malloc((size_t)bytes);
        herd_quantize_rows(t, x, q, (size_t)ne[i][1], (size_t)ne[i][0], NULL);
        assert_int_equal(herd_gguf_writer_put_tensor_data(w, q, bytes, &err), HERD_OK);
        free(x);
        free(q);
    }
    assert_int_equal(herd_gguf_writer_finish(w, &err), HERD_OK);
    herd_gguf_writer_destroy(w);
}

static enum herd_status quantize(const char *in, const char *out, enum herd_ftype ft, int threads,
                                 struct herd_error *err) {
    struct herd_quantize_params p;
    herd_quantize_default_params(&p);
    p.in_path = in;
    p.out_path = out;
    p.ftype = ft;
    p.n_threads = threads;
    return herd_quantize_model(&p, NULL, err);
}

static enum herd_ggml_type type_of(const struct herd_gguf *g, const char *name) {
    const struct herd_gguf_tensor *t = herd_gguf_find_tensor(g, name);
    assert_non_null(t);
    return t->type;
}

/* ------------------------------------------------------------ tests */

static void test_ftype_parse(void **state) {
    (void)state;
    enum herd_ftype f;
    struct herd_error err = {0};
    assert_int_equal(herd_quantize_ftype_parse("q4_k_m", &f, &err), HERD_OK);
    assert_int_equal(f, HERD_FTYPE_Q4_K_M);
    assert_int_equal(herd_quantize_ftype_parse("Q4_K", &f, &err), HERD_OK);
    assert_int_equal(f, HERD_FTYPE_Q4_K_M);
    assert_int_equal(herd_quantize_ftype_parse("Q3_K", &f, &err), HERD_OK);
    assert_int_equal(f, HERD_FTYPE_Q3_K_M);
    assert_int_equal(herd_quantize_ftype_parse("17", &f, &err), HERD_OK);
    assert_int_equal(f, HERD_FTYPE_Q5_K_M);
    assert_int_equal(herd_quantize_ftype_parse("0", &f, &err), HERD_OK);
    assert_int_equal(f, HERD_FTYPE_ALL_F32);
    assert_string_equal(herd_quantize_ftype_name(HERD_FTYPE_Q4_K_M), "Q4_K_M");
    assert_string_equal(herd_quantize_ftype_name(HERD_FTYPE_Q8_0), "Q8_0");
    assert_int_equal(herd_quantize_ftype_parse("iq2_xxs", &f, &err), HERD_E_UNSUPPORTED);
    assert_int_equal(herd_quantize_ftype_parse("19", &f, &err), HERD_E_UNSUPPORTED);
    assert_int_equal(herd_quantize_ftype_parse("Q7_K", &f, &err), HERD_E_INVALID);
    assert_non_null(strstr(err.msg, "Q4_K_M"));
    assert_int_equal(herd_quantize_ftype_parse("", &f, &err), HERD_E_INVALID);
    assert_int_equal(herd_quantize_ftype_parse("4", &f, &err), HERD_E_INVALID); /* a removed ftype */
}

/* llama_model_loader's std::map order: non-layer names first, then by layer number. */
static void test_tensor_order(void **state) {
    (void)state;
    const char *in[] = {"blk.10.attn_q.weight", "token_embd.weight",  "blk.2.ffn_up.weight",  "output.weight",
                        "blk.2.attn_k.weight",  "output_norm.weight", "blk.9.ffn_down.weight"};
    const char *want[] = {"output.weight",       "output_norm.weight",    "token_embd.weight",   "blk.2.attn_k.weight",
                          "blk.2.ffn_up.weight", "blk.9.ffn_down.weight", "blk.10.attn_q.weight"};
    struct in_tensor t[7];
    memset(t, 0, sizeof t);
    for (int i = 0; i < 7; i++) {
        snprintf(t[i].name, sizeof t[i].name, "%s", in[i]);
        t[i].layer = -1;
        sscanf(t[i].name, "blk.%d.", &t[i].layer);
    }
    qsort(t, 7, sizeof t[0], tensor_order);
    for (int i = 0; i < 7; i++) assert_string_equal(t[i].name, want[i]);
}

static void test_use_more_bits(void **state) {
    (void)state;
    /* 32 layers: the first 4, the last 4, and every third from layer 6 */
    const char *want = "11110010010010010010010010011111";
    for (int i = 0; i < 32; i++) assert_int_equal(use_more_bits(i, 32), want[i] == '1');
}

/* A 32-layer model: the mixes' per-layer choices and the output rules. */
static void test_mix_types(void **state) {
    (void)state;
    char in[256], out[256];
    test_tmp_path("mix-in.gguf", in, sizeof in);
    test_tmp_path("mix-out.gguf", out, sizeof out);
    const struct model_spec s = {32, 256, 512, 8, 2, 16, 2, HERD_GGML_TYPE_F16, false, false};
    write_model(&s, in);
    struct herd_error err = {0};
    assert_int_equal(quantize(in, out, HERD_FTYPE_Q4_K_M, 2, &err), HERD_OK);
    struct herd_gguf *g = NULL;
    assert_int_equal(herd_gguf_open_file(out, &g, &err), HERD_OK);
    assert_int_equal(type_of(g, "output.weight"), HERD_GGML_TYPE_Q6_K);
    assert_int_equal(type_of(g, "token_embd.weight"), HERD_GGML_TYPE_Q4_K);
    assert_int_equal(type_of(g, "output_norm.weight"), HERD_GGML_TYPE_F32);
    char name[64];
    for (int l = 0; l < 32; l++) {
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", l);
        assert_int_equal(type_of(g, name), use_more_bits(l, 32) ? HERD_GGML_TYPE_Q6_K : HERD_GGML_TYPE_Q4_K);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
        assert_int_equal(type_of(g, name), use_more_bits(l, 32) ? HERD_GGML_TYPE_Q6_K : HERD_GGML_TYPE_Q4_K);
        snprintf(name, sizeof name, "blk.%d.attn_q.weight", l);
        assert_int_equal(type_of(g, name), HERD_GGML_TYPE_Q4_K);
    }
    /* output order: non-layer tensors first, by name */
    assert_true(herd_gguf_str_eq(herd_gguf_tensor_at(g, 0)->name, "output.weight"));
    uint64_t ft;
    assert_int_equal(herd_gguf_get_uint(g, "general.file_type", 100, &ft, &err), HERD_OK);
    assert_int_equal(ft, HERD_FTYPE_Q4_K_M);
    /* metadata: input keys in order, then the two set ones */
    const size_t n_kv = herd_gguf_n_kv(g);
    assert_true(herd_gguf_str_eq(herd_gguf_kv_at(g, n_kv - 3)->key, "zzz.after"));
    assert_true(herd_gguf_str_eq(herd_gguf_kv_at(g, n_kv - 2)->key, "general.quantization_version"));
    assert_true(herd_gguf_str_eq(herd_gguf_kv_at(g, n_kv - 1)->key, "general.file_type"));
    herd_gguf_destroy(g);

    /* Q3_K_M: attn_v Q5_K for the first two, ffn_down Q5_K below n/16 */
    assert_int_equal(quantize(in, out, HERD_FTYPE_Q3_K_M, 1, &err), HERD_OK);
    assert_int_equal(herd_gguf_open_file(out, &g, &err), HERD_OK);
    assert_int_equal(type_of(g, "blk.1.attn_v.weight"), HERD_GGML_TYPE_Q5_K);
    assert_int_equal(type_of(g, "blk.2.attn_v.weight"), HERD_GGML_TYPE_Q4_K);
    assert_int_equal(type_of(g, "blk.1.ffn_down.weight"), HERD_GGML_TYPE_Q5_K);
    assert_int_equal(type_of(g, "blk.2.ffn_down.weight"), HERD_GGML_TYPE_Q4_K);
    assert_int_equal(type_of(g, "blk.2.attn_output.weight"), HERD_GGML_TYPE_Q4_K);
    assert_int_equal(type_of(g, "blk.2.ffn_up.weight"), HERD_GGML_TYPE_Q3_K);
    herd_gguf_destroy(g);
    unlink(in);
    unlink(out);
}

/* Rows are independent: any thread count writes the same bytes. */
static void test_threads_do_not_change_bytes(void **state) {
    (void)state;
    char in[256], a[256], b[256];
    test_tmp_path("thr-in.gguf", in, sizeof in);
    test_tmp_path("thr-a.gguf", a, sizeof a);
    test_tmp_path("thr-b.gguf", b, sizeof b);
    const struct model_spec s = {2, 256, 256, 4, 4, 96, 40, HERD_GGML_TYPE_F32, true, false};
    write_model(&s, in);
    struct herd_error err = {0};
    assert_int_equal(quantize(in, a, HERD_FTYPE_Q5_K_S, 1, &err), HERD_OK);
    assert_int_equal(quantize(in, b, HERD_FTYPE_Q5_K_S, 3, &err), HERD_OK);
    size_t na, nb;
    unsigned char *da = test_read_file(a, &na), *db = test_read_file(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(da, db, na);
    free(da);
    free(db);
    /* tied: token_embd is the output matrix and gets its rule (Q6_K) */
    struct herd_gguf *g = NULL;
    assert_int_equal(herd_gguf_open_file(a, &g, &err), HERD_OK);
    assert_int_equal(type_of(g, "token_embd.weight"), HERD_GGML_TYPE_Q6_K);
    herd_gguf_destroy(g);
    unlink(in);
    unlink(a);
    unlink(b);
}

static void test_input_faults_leave_no_file(void **state) {
    (void)state;
    char in[256], out[256], cut[256];
    test_tmp_path("fault-in.gguf", in, sizeof in);
    test_tmp_path("fault-out.gguf", out, sizeof out);
    test_tmp_path("fault-cut.gguf", cut, sizeof cut);
    struct herd_error err = {0};

    /* NaN in a weight: llama.cpp's loader refuses the tensor */
    struct model_spec s = {2, 256, 256, 4, 2, 32, 4, HERD_GGML_TYPE_F32, false, true};
    write_model(&s, in);
    assert_int_equal(quantize(in, out, HERD_FTYPE_Q4_K_M, 2, &err), HERD_E_FORMAT);
    assert_non_null(strstr(err.msg, "blk.0.ffn_up.weight"));
    assert_false(test_path_exists(out));

    /* truncated tensor data */
    s.nan_in_ffn_up = false;
    write_model(&s, in);
    size_t n;
    unsigned char *bytes = test_read_file(in, &n);
    FILE *f = fopen(cut, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, n - 1000, f), n - 1000);
    fclose(f);
    free(bytes);
    assert_int_not_equal(quantize(cut, out, HERD_FTYPE_Q8_0, 2, &err), HERD_OK);
    assert_non_null(strstr(err.msg, cut));
    assert_false(test_path_exists(out));

    /* quantized input without allow_requantize; with it, fine */
    char q8[256];
    test_tmp_path("fault-q8.gguf", q8, sizeof q8);
    assert_int_equal(quantize(in, q8, HERD_FTYPE_Q8_0, 2, &err), HERD_OK);
    assert_int_equal(quantize(q8, out, HERD_FTYPE_Q4_K_M, 2, &err), HERD_E_INVALID);
    assert_non_null(strstr(err.msg, "allow-requantize"));
    assert_false(test_path_exists(out));
    struct herd_quantize_params p;
    herd_quantize_default_params(&p);
    p.in_path = q8, p.out_path = out, p.ftype = HERD_FTYPE_Q4_K_M, p.allow_requantize = true;
    assert_int_equal(herd_quantize_model(&p, NULL, &err), HERD_OK);
    unlink(out);
    unlink(q8);

    /* an output type herd does not write; an ftype outside the table */
    herd_quantize_default_params(&p);
    p.in_path = in, p.out_path = out, p.ftype = HERD_FTYPE_Q4_K_M, p.output_type = HERD_GGML_TYPE_IQ2_XXS;
    assert_int_equal(herd_quantize_model(&p, NULL, &err), HERD_E_UNSUPPORTED);
    p.output_type = -1;
    p.ftype = (enum herd_ftype)4;
    assert_int_equal(herd_quantize_model(&p, NULL, &err), HERD_E_INVALID);
    assert_false(test_path_exists(out));
    unlink(in);
    unlink(cut);
}

/* Writes a one-entry-per-matrix imatrix for the 2-layer spec, with value v
 * everywhere and entry `short_name` one column short. */
static void write_imatrix(const char *path, const struct model_spec *s, float v, const char *short_name) {
    static char names[64][64];
    static uint64_t ne[64][2];
    const size_t n = model_tensors(s, names, ne);
    struct herd_buf b;
    herd_buf_init(&b, SIZE_MAX);
    int32_t count = 0;
    for (size_t i = 0; i < n; i++) count += strncmp(names[i], "blk.", 4) == 0 && ne[i][1] > 1;
    put_u32(&b, (uint32_t)count);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(names[i], "blk.", 4) != 0 || ne[i][1] == 1) continue;
        const uint32_t cols = (uint32_t)ne[i][0] - (short_name && strcmp(names[i], short_name) == 0);
        put_u32(&b, (uint32_t)strlen(names[i]));
        herd_buf_append(&b, names[i], strlen(names[i]));
        put_u32(&b, 1);
        put_u32(&b, cols);
        for (uint32_t j = 0; j < cols; j++) put_f32(&b, v);
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b.data, 1, b.len, f), b.len);
    fclose(f);
    herd_buf_cleanup(&b);
}

static void test_imatrix_faults(void **state) {
    (void)state;
    char in[256], out[256], im[256];
    test_tmp_path("im-in.gguf", in, sizeof in);
    test_tmp_path("im-out.gguf", out, sizeof out);
    test_tmp_path("im.dat", im, sizeof im);
    const struct model_spec s = {2, 256, 256, 4, 2, 32, 4, HERD_GGML_TYPE_F32, false, false};
    write_model(&s, in);
    struct herd_quantize_params p;
    herd_quantize_default_params(&p);
    p.in_path = in, p.out_path = out, p.ftype = HERD_FTYPE_Q4_K_M, p.imatrix_path = im;
    struct herd_error err = {0};
    struct herd_quantize_stats st;

    write_imatrix(im, &s, 1.0f, NULL);
    assert_int_equal(herd_quantize_model(&p, &st, &err), HERD_OK);
    assert_int_equal(st.n_imatrix, 14);
    struct herd_gguf *g = NULL;
    assert_int_equal(herd_gguf_open_file(out, &g, &err), HERD_OK);
    int64_t entries = 0;
    const struct herd_gguf_kv *kv = herd_gguf_find_kv(g, "quantize.imatrix.entries_count");
    assert_non_null(kv);
    entries = kv->v.i;
    assert_int_equal(entries, 14);
    assert_null(herd_gguf_find_kv(g, "quantize.imatrix.chunks_count")); /* no trailer */
    herd_gguf_destroy(g);
    unlink(out);

    /* an entry of the wrong size */
    write_imatrix(im, &s, 1.0f, "blk.1.attn_k.weight");
    assert_int_equal(herd_quantize_model(&p, NULL, &err), HERD_E_INVALID);
    assert_non_null(strstr(err.msg, "blk.1.attn_k.weight"));
    /* a non-finite value */
    write_imatrix(im, &s, INFINITY, NULL);
    assert_int_equal(herd_quantize_model(&p, NULL, &err), HERD_E_FORMAT);
    /* all zero: ggml's weighted fit divides 0 by 0; llama-quantize refuses the result */
    write_imatrix(im, &s, 0.0f, NULL);
    assert_int_equal(herd_quantize_model(&p, NULL, &err), HERD_E_INVALID);
    assert_non_null(strstr(err.msg, "NaN"));
    assert_false(test_path_exists(out));
    unlink(in);
    unlink(im);
}

/* A full disk (the file size limit): the write error is reported and the
 * temporary file removed. */
static void test_full_disk(void **state) {
    (void)state;
    char in[256], out[256];
    test_tmp_path("disk-in.gguf", in, sizeof in);
    test_tmp_path("disk-out.gguf", out, sizeof out);
    const struct model_spec s = {2, 256, 256, 4, 2, 32, 4, HERD_GGML_TYPE_F32, false, false};
    write_model(&s, in);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 8 * 1024; /* the output is about 20 KB */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    struct herd_error err = {0};
    const enum herd_status rc = quantize(in, out, HERD_FTYPE_Q8_0, 2, &err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    assert_int_equal(rc, HERD_E_IO);
    assert_non_null(strstr(err.msg, "write failed"));
    assert_false(test_path_exists(out));
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", out, (long)getpid());
    assert_false(test_path_exists(tmp));
    unlink(in);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ftype_parse),
        cmocka_unit_test(test_tensor_order),
        cmocka_unit_test(test_use_more_bits),
        cmocka_unit_test(test_mix_types),
        cmocka_unit_test(test_threads_do_not_change_bytes),
        cmocka_unit_test(test_input_faults_leave_no_file),
        cmocka_unit_test(test_imatrix_faults),
        cmocka_unit_test(test_full_disk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
