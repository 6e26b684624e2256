/* `herd prune IN OUT (--drop-layers N | --layers I,J,...) [--calib TEXT]`:
 * a smaller model without some of its layers (convert/prune.h). This file
 * parses and checks the flags, runs the calibration text through the model
 * with the Block Influence collector, picks the layers, and writes the
 * report; the rewrite is herd_prune_layers. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli_args.h"
#include "cli/cli_calib.h"
#include "cli/commands.h"
#include "convert/prune.h"
#include "herd/gguf.h"
#include "model/forward.h"

static const struct cli_command cmd = {
    .name = "prune",
    .args = "IN.gguf OUT.gguf",
    .summary = "Write IN without some of its layers (the N whose Block Influence over a calibration text is\n"
               "lowest: --drop-layers N --calib TEXT, ShortGPT's rule; or the ones named: --layers I,J,...),\n"
               "or with each layer's FFN cut to its most active channels (--ffn-keep F --calib TEXT).",
    .details = "Block Influence of layer i: the mean over the text's tokens of 1 - cos(residual entering i,\n"
               "residual leaving i). The text is cut into chunks of --ctx tokens, each run from BOS.\n"
               "Layers: OUT keeps the other layers renumbered, block_count and per-layer metadata arrays cut\n"
               "to them, every other key and tensor byte for byte (nothing is requantized). gemma2 and gemma3\n"
               "are refused (their local / global attention follows the layer index).\n"
               "--ffn-keep F (or F0,F1,... per layer): each layer keeps round(F x n_ff / 256) x 256 channels\n"
               "(at least 256), those with the highest mean |activation into ffn_down| x (|gate row| +\n"
               "|up row| + |down column|); ffn_down is re-encoded in its type. Dense FFNs only.\n"
               "--heads-keep F (or F0,F1,...): each layer keeps that fraction of its KV heads (each with its\n"
               "query heads), those writing most into the residual stream; attn_output is re-encoded.\n"
               "OUT appears only when complete. --report writes the scores and what was removed as JSON.",
    .min_pos = 2,
    .max_pos = 2,
};

/* ------------------------------------------------------------ flags */

/* "N": a layer count in [1, n_layer). */
static int parse_drop_count(const char *text, uint32_t n_layer, uint32_t *out) {
    char *end;
    errno = 0;
    const long long v = strtoll(text, &end, 10);
    if (end == text || *end || errno || v < 0) {
        fprintf(stderr, "herd prune: --drop-layers '%s' is not a layer count\n", text);
        return 2;
    }
    if (v == 0 || v >= (long long)n_layer) {
        fprintf(stderr, "herd prune: --drop-layers %lld: the model has %u layers; drop 1 to %u of them\n", v, n_layer,
                n_layer - 1);
        return 2;
    }
    *out = (uint32_t)v;
    return 0;
}

/* "F": a fraction in (0, 1]. */
static int parse_fraction(const char *flag, const char *text, double *out) {
    char *end;
    errno = 0;
    const double v = strtod(text, &end);
    if (end == text || *end || errno || !(v > 0 && v <= 1)) {
        fprintf(stderr, "herd prune: %s '%s': expected a fraction in (0, 1]\n", flag, text);
        return 2;
    }
    *out = v;
    return 0;
}

/* "I,J,...": distinct layer indices below n_layer, not all of them. */
static int parse_layer_list(const char *text, uint32_t n_layer, bool *drop) {
    const char *p = text;
    uint32_t n = 0;
    while (true) {
        char *end;
        errno = 0;
        const long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 0 || (*end && *end != ',') || (*p < '0' || *p > '9')) {
            fprintf(stderr, "herd prune: --layers '%s' is not a list of layer indices (expected 3,7,12)\n", text);
            return 2;
        }
        if (v >= (long long)n_layer) {
            fprintf(stderr, "herd prune: --layers: layer %lld is out of range; the model has layers 0 to %u\n", v,
                    n_layer - 1);
            return 2;
        }
        if (drop[v]) {
            fprintf(stderr, "herd prune: --layers: layer %lld is given twice\n", v);
            return 2;
        }
        drop[v] = true;
        n++;
        if (!*end) break;
        p = end + 1;
    }
    if (n == n_layer) {
        fprintf(stderr, "herd prune: --layers names all %u layers; at least one must stay\n", n_layer);
        return 2;
    }
    return 0;
}

/* Whether a and b name the same existing file. */
static bool same_file(const char *a, const char *b) {
    if (strcmp(a, b) == 0) return true;
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* ------------------------------------------------------------ calibration */

/* Runs text_path through in_path with the given observers (one may be
 * NULL) on collector; 0 or 1 (printed). */
static int calibrate(const char *in_path, const char *text_path, uint32_t n_ctx, uint64_t chunks, uint64_t threads,
                     void (*on_residual)(void *, uint32_t, const float *, size_t, size_t),
                     void (*on_matmul)(void *, uint32_t, enum herd_matrix_role, const float *, size_t, size_t),
                     void *collector, struct cli_calib_result *cr) {
    struct herd_engine_options eo;
    herd_engine_default_options(&eo);
    eo.model_path = in_path;
    eo.parts = HERD_ENGINE_TEXT;
    eo.threads = (uint32_t)threads;
    eo.n_ctx = n_ctx;
    eo.batch_tokens = cli_calib_batch(n_ctx);
    eo.max_outputs = 1;
    struct herd_engine *e = NULL;
    struct herd_error err = {0};
    if (herd_engine_open(&eo, &e, &err) != HERD_OK) {
        fprintf(stderr, "herd prune: %s\n", err.msg);
        return 1;
    }
    struct herd_context *ctx = herd_engine_context(e);
    ctx->params.observe_residual = on_residual;
    ctx->params.observe_matmul = on_matmul;
    ctx->params.observe_ctx = collector;
    const int rc = cli_calib_run("prune", e, text_path, n_ctx, chunks, cr);
    herd_engine_close(e);
    return rc;
}

/* The batch size the engine of calibrate() runs, for collectors sized by it. */
static uint32_t calib_batch(uint64_t n_ctx) { return cli_calib_batch((uint32_t)n_ctx); }

/* ------------------------------------------------------------ report */

/* The flags, checked. */
struct prune_opts {
    const char *in_path, *out_path, *text_path, *report;
    const char *drop_text, *layers_text, *ffn_text;
    uint64_t n_ctx, chunks, threads;
};

static void print_table(const struct herd_prune_model_info *info, const double *scores, const uint32_t *rank,
                        const bool *drop) {
    fprintf(stderr, "  layer  block influence  rank\n");
    for (uint32_t l = 0; l < info->n_layer; l++) {
        if (scores)
            fprintf(stderr, "  %5u  %15.6f  %4u%s\n", l, scores[l], rank[l], drop[l] ? "  removed" : "");
        else
            fprintf(stderr, "  %5u  %15s  %4s%s\n", l, "-", "-", drop[l] ? "  removed" : "");
    }
}

struct report_in {
    const struct herd_prune_model_info *info;
    const double *scores; /* NULL without calibration */
    const uint32_t *order, *rank;
    const bool *drop;
    const struct cli_calib_result *cr;
    const struct herd_prune_stats *st;
};

/* Writes root to path whole (beside it, then renamed, as the model is) and
 * frees it; 0 or 1 (printed). */
static int dump_report(const char *path, json_t *root) {
    char tmp[4096];
    int rc = 1;
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) >= sizeof tmp) {
        fprintf(stderr, "herd prune: --report path is too long\n");
    } else if (json_dump_file(root, tmp, JSON_INDENT(2)) != 0) {
        fprintf(stderr, "herd prune: cannot write the report %s\n", tmp);
        unlink(tmp);
    } else if (rename(tmp, path) != 0) {
        fprintf(stderr, "herd prune: cannot rename the report into place at %s: %s\n", path, strerror(errno));
        unlink(tmp);
    } else {
        rc = 0;
    }
    json_decref(root);
    return rc;
}

/* A report's first fields: the files, the architecture, the method. */
static json_t *report_begin(const struct prune_opts *o, const char *arch, const char *method) {
    json_t *root = json_object();
    json_object_set_new(root, "input", json_string(o->in_path));
    json_object_set_new(root, "output", json_string(o->out_path));
    json_object_set_new(root, "architecture", json_string(arch));
    json_object_set_new(root, "method", json_string(method));
    return root;
}

/* Its last: the calibration (cr NULL: none ran), tensors and sizes. */
static void report_end(json_t *root, const struct prune_opts *o, const struct cli_calib_result *cr,
                       const struct herd_prune_stats *st) {
    json_object_set_new(root, "calibration",
                        cr ? json_pack("{s:s,s:I,s:I,s:i,s:I}", "file", o->text_path, "text_tokens",
                                       (json_int_t)cr->n_text_tokens, "chunks", (json_int_t)cr->n_chunks, "ctx",
                                       (int)o->n_ctx, "tokens", (json_int_t)(cr->n_chunks * o->n_ctx))
                           : json_null());
    json_object_set_new(root, "tensors_in", json_integer((json_int_t)st->n_tensors_in));
    json_object_set_new(root, "tensors_out", json_integer((json_int_t)st->n_tensors_out));
    json_object_set_new(root, "weight_bytes_in", json_integer((json_int_t)st->bytes_in));
    json_object_set_new(root, "weight_bytes_out", json_integer((json_int_t)st->bytes_out));
    json_object_set_new(root, "file_bytes_in", json_integer((json_int_t)st->file_bytes_in));
    json_object_set_new(root, "file_bytes_out", json_integer((json_int_t)st->file_bytes_out));
}

static int write_report(const struct prune_opts *o, const struct report_in *r) {
    json_t *root = report_begin(o, r->info->arch, o->drop_text ? "block_influence" : "layers");
    json_t *layers = json_array(), *ranking = json_array(), *removed = json_array(), *kept = json_array();
    json_object_set_new(root, "n_layer_in", json_integer(r->st->n_layer_in));
    json_object_set_new(root, "n_layer_out", json_integer(r->st->n_layer_out));
    for (uint32_t l = 0; l < r->info->n_layer; l++) {
        json_t *e = json_pack("{s:i,s:b}", "layer", (int)l, "removed", r->drop[l]);
        json_object_set_new(e, "block_influence", r->scores ? json_real(r->scores[l]) : json_null());
        json_object_set_new(e, "rank", r->scores ? json_integer(r->rank[l]) : json_null());
        json_array_append_new(layers, e);
        if (r->scores) json_array_append_new(ranking, json_integer(r->order[l]));
        json_array_append_new(r->drop[l] ? removed : kept, json_integer(l));
    }
    json_object_set_new(root, "layers", layers);
    json_object_set_new(root, "ranking", r->scores ? ranking : json_null());
    if (!r->scores) json_decref(ranking);
    json_object_set_new(root, "removed", removed);
    json_object_set_new(root, "kept", kept);
    report_end(root, o, r->scores ? r->cr : NULL, r->st);
    return dump_report(o->report, root);
}

/* ------------------------------------------------------------ layers */

static int prune_layers(const struct prune_opts *o) {
    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    struct herd_prune_model_info info;
    if (herd_gguf_open_file(o->in_path, &g, &err) != HERD_OK || herd_prune_model_check(g, &info, &err) != HERD_OK) {
        fprintf(stderr, "herd prune: %s%s%s\n", g ? o->in_path : "", g ? ": " : "", err.msg);
        herd_gguf_destroy(g);
        return 1;
    }
    herd_gguf_destroy(g);

    int rc = 2;
    struct herd_prune_bi *bi = NULL;
    bool *drop = calloc(info.n_layer, sizeof *drop);
    double *scores = calloc(info.n_layer, sizeof *scores);
    uint32_t *order = calloc(info.n_layer, sizeof *order), *rank = calloc(info.n_layer, sizeof *rank);
    if (!drop || !scores || !order || !rank) {
        fprintf(stderr, "herd prune: out of memory\n");
        rc = 1;
        goto out;
    }
    uint32_t n_drop = 0;
    if (o->layers_text && parse_layer_list(o->layers_text, info.n_layer, drop) != 0) goto out;
    if (o->drop_text && parse_drop_count(o->drop_text, info.n_layer, &n_drop) != 0) goto out;

    rc = 1;
    struct cli_calib_result cr = {0};
    const bool calibrated = o->text_path != NULL;
    if (calibrated) {
        bi = herd_prune_bi_create(info.n_layer, info.n_embd, calib_batch(o->n_ctx));
        if (!bi) {
            fprintf(stderr, "herd prune: out of memory\n");
            goto out;
        }
        if (calibrate(o->in_path, o->text_path, (uint32_t)o->n_ctx, o->chunks, o->threads, herd_prune_bi_observe, NULL,
                      bi, &cr) != 0)
            goto out;
        if (herd_prune_bi_scores(bi, scores) == 0) {
            fprintf(stderr, "herd prune: no token was collected\n");
            goto out;
        }
        herd_prune_rank(scores, info.n_layer, order);
        for (uint32_t r = 0; r < info.n_layer; r++) rank[order[r]] = r;
        for (uint32_t r = 0; r < n_drop; r++) drop[order[r]] = true;
        fprintf(stderr, "herd prune: Block Influence over %llu tokens (%llu chunks of %u), rank 0 lowest\n",
                (unsigned long long)(cr.n_chunks * o->n_ctx), (unsigned long long)cr.n_chunks, (unsigned)o->n_ctx);
    }
    print_table(&info, calibrated ? scores : NULL, rank, drop);

    struct herd_prune_params pp = {o->in_path, o->out_path, drop, info.n_layer};
    struct herd_prune_stats st;
    if (herd_prune_layers(&pp, &st, &err) != HERD_OK) {
        fprintf(stderr, "herd prune: %s\n", err.msg);
        goto out;
    }
    if (o->report) {
        const struct report_in r = {&info, calibrated ? scores : NULL, order, rank, drop, &cr, &st};
        if (write_report(o, &r) != 0) goto out;
    }
    fprintf(stderr,
            "herd prune: wrote %s: %u of %u layers, %zu of %zu tensors, weights %.2f -> %.2f MiB, file %.2f MiB\n",
            o->out_path, st.n_layer_out, st.n_layer_in, st.n_tensors_out, st.n_tensors_in,
            (double)st.bytes_in / (1024.0 * 1024.0), (double)st.bytes_out / (1024.0 * 1024.0),
            (double)st.file_bytes_out / (1024.0 * 1024.0));
    rc = 0;
out:
    herd_prune_bi_destroy(bi);
    free(drop);
    free(scores);
    free(order);
    free(rank);
    return rc;
}

/* ------------------------------------------------------------ FFN channels */

/* "F" for every layer, or "F0,F1,..." one per layer; each in (0, 1]. */
static int parse_fractions(const char *flag, const char *text, uint32_t n_layer, double *keep) {
    if (!strchr(text, ',')) {
        double v;
        if (parse_fraction(flag, text, &v) != 0) return 2;
        for (uint32_t l = 0; l < n_layer; l++) keep[l] = v;
        return 0;
    }
    char buf[32];
    const char *p = text;
    uint32_t n = 0;
    while (true) {
        const char *end = strchr(p, ',');
        const size_t len = end ? (size_t)(end - p) : strlen(p);
        if (n >= n_layer) {
            fprintf(stderr, "herd prune: %s gives more than one fraction per layer (%u layers)\n", flag, n_layer);
            return 2;
        }
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), p);
        if (len >= sizeof buf || parse_fraction(flag, buf, &keep[n]) != 0) {
            if (len >= sizeof buf) fprintf(stderr, "herd prune: %s: '%.*s' is not a fraction\n", flag, (int)len, p);
            return 2;
        }
        n++;
        if (!end) break;
        p = end + 1;
    }
    if (n != n_layer) {
        fprintf(stderr, "herd prune: %s gives %u fractions; the model has %u layers (or give one for all)\n", flag, n,
                n_layer);
        return 2;
    }
    return 0;
}

static int write_ffn_report(const struct prune_opts *o, const struct herd_prune_model_info *info, const double *keep,
                            const uint32_t *n_ff_in, const uint32_t *n_ff_out, const struct cli_calib_result *cr,
                            const struct herd_prune_stats *st) {
    json_t *root = report_begin(o, info->arch, "ffn_channels"), *layers = json_array();
    json_object_set_new(root, "n_layer_in", json_integer(st->n_layer_in));
    json_object_set_new(root, "n_layer_out", json_integer(st->n_layer_out));
    for (uint32_t l = 0; l < info->n_layer; l++)
        json_array_append_new(layers, json_pack("{s:i,s:f,s:i,s:i}", "layer", (int)l, "keep_fraction", keep[l],
                                                "n_ff_in", (int)n_ff_in[l], "n_ff_out", (int)n_ff_out[l]));
    json_object_set_new(root, "layers", layers);
    report_end(root, o, cr, st);
    return dump_report(o->report, root);
}

static int prune_ffn(const struct prune_opts *o) {
    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    struct herd_prune_model_info info;
    struct herd_prune_acts *acts = NULL;
    uint32_t *n_ff = NULL, *n_ff_out = NULL;
    double *keep = NULL;
    int rc = 1;
    if (herd_gguf_open_file(o->in_path, &g, &err) != HERD_OK || herd_prune_model_info_read(g, &info, &err) != HERD_OK) {
        fprintf(stderr, "herd prune: %s%s%s\n", g ? o->in_path : "", g ? ": " : "", err.msg);
        goto out;
    }
    n_ff = calloc(info.n_layer, sizeof *n_ff);
    n_ff_out = calloc(info.n_layer, sizeof *n_ff_out);
    keep = calloc(info.n_layer, sizeof *keep);
    if (!n_ff || !n_ff_out || !keep) {
        fprintf(stderr, "herd prune: out of memory\n");
        goto out;
    }
    if (herd_prune_ffn_check(g, &info, n_ff, &err) != HERD_OK) {
        fprintf(stderr, "herd prune: %s: %s\n", o->in_path, err.msg);
        goto out;
    }
    if (parse_fractions("--ffn-keep", o->ffn_text, info.n_layer, keep) != 0) {
        rc = 2;
        goto out;
    }
    bool any = false;
    for (uint32_t l = 0; l < info.n_layer; l++) any |= herd_prune_ffn_kept(n_ff[l], keep[l]) < n_ff[l];
    if (!any) {
        fprintf(stderr,
                "herd prune: --ffn-keep %s keeps every channel (layers keep multiples of 256 channels, at least 256; "
                "this model's FFNs are %u wide); give a smaller fraction\n",
                o->ffn_text, n_ff[0]);
        rc = 2;
        goto out;
    }
    if (!(acts = herd_prune_acts_create(HERD_ROLE_FFN_DOWN, n_ff, info.n_layer))) {
        fprintf(stderr, "herd prune: out of memory\n");
        goto out;
    }
    struct cli_calib_result cr = {0};
    if (calibrate(o->in_path, o->text_path, (uint32_t)o->n_ctx, o->chunks, o->threads, NULL, herd_prune_acts_observe,
                  acts, &cr) != 0)
        goto out;
    const struct herd_prune_ffn_params pp = {o->in_path, o->out_path, keep, info.n_layer, acts, (int)o->threads};
    struct herd_prune_stats st;
    if (herd_prune_ffn_write(&pp, n_ff_out, &st, &err) != HERD_OK) {
        fprintf(stderr, "herd prune: %s\n", err.msg);
        goto out;
    }
    bool uniform = true;
    for (uint32_t l = 0; l < info.n_layer; l++) uniform &= n_ff_out[l] == n_ff_out[0];
    if (!uniform)
        fprintf(stderr,
                "herd prune: note: the layers' FFN widths now differ (feed_forward_length is an array): herd "
                "runs %s; llama.cpp (Feb 2025) builds these architectures' FFNs from layer 0's width and "
                "refuses it\n",
                o->out_path);
    fprintf(stderr, "  layer   keep    n_ff\n");
    for (uint32_t l = 0; l < info.n_layer; l++)
        fprintf(stderr, "  %5u  %5.3f  %6u -> %u\n", l, keep[l], n_ff[l], n_ff_out[l]);
    if (o->report && write_ffn_report(o, &info, keep, n_ff, n_ff_out, &cr, &st) != 0) goto out;
    fprintf(stderr, "herd prune: wrote %s: FFN channels cut, weights %.2f -> %.2f MiB, file %.2f MiB\n", o->out_path,
            (double)st.bytes_in / (1024.0 * 1024.0), (double)st.bytes_out / (1024.0 * 1024.0),
            (double)st.file_bytes_out / (1024.0 * 1024.0));
    rc = 0;
out:
    herd_prune_acts_destroy(acts);
    herd_gguf_destroy(g);
    free(n_ff);
    free(n_ff_out);
    free(keep);
    return rc;
}

/* ------------------------------------------------------------ attention heads */

static int prune_heads(const struct prune_opts *o, const char *heads_text) {
    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    struct herd_prune_model_info info;
    struct herd_prune_heads_shape hs;
    struct herd_prune_acts *acts = NULL;
    uint32_t *widths = NULL, *kv_out = NULL;
    double *keep = NULL;
    int rc = 1;
    if (herd_gguf_open_file(o->in_path, &g, &err) != HERD_OK || herd_prune_model_info_read(g, &info, &err) != HERD_OK ||
        herd_prune_heads_check(g, &info, &hs, &err) != HERD_OK) {
        fprintf(stderr, "herd prune: %s%s%s\n", g ? o->in_path : "", g ? ": " : "", err.msg);
        goto out;
    }
    const uint32_t G = hs.n_head / hs.n_head_kv;
    widths = calloc(info.n_layer, sizeof *widths);
    kv_out = calloc(info.n_layer, sizeof *kv_out);
    keep = calloc(info.n_layer, sizeof *keep);
    if (!widths || !kv_out || !keep) {
        fprintf(stderr, "herd prune: out of memory\n");
        goto out;
    }
    if (parse_fractions("--heads-keep", heads_text, info.n_layer, keep) != 0) {
        rc = 2;
        goto out;
    }
    bool any = false, uniform = true;
    for (uint32_t l = 0; l < info.n_layer; l++) {
        widths[l] = hs.n_head * hs.head_dim;
        any |= herd_prune_heads_kept(&hs, keep[l]) < hs.n_head_kv;
        uniform &= herd_prune_heads_kept(&hs, keep[l]) == herd_prune_heads_kept(&hs, keep[0]);
    }
    if (!any) {
        fprintf(stderr,
                "herd prune: --heads-keep %s keeps all %u KV heads (KV heads go %u at a time, so that attn_output's "
                "rows keep whole blocks); give a smaller fraction\n",
                heads_text, hs.n_head_kv, hs.group_step);
        rc = 2;
        goto out;
    }
    if (!(acts = herd_prune_acts_create(HERD_ROLE_ATTN_OUTPUT, widths, info.n_layer))) {
        fprintf(stderr, "herd prune: out of memory\n");
        goto out;
    }
    struct cli_calib_result cr = {0};
    if (calibrate(o->in_path, o->text_path, (uint32_t)o->n_ctx, o->chunks, o->threads, NULL, herd_prune_acts_observe,
                  acts, &cr) != 0)
        goto out;
    const struct herd_prune_heads_params pp = {o->in_path, o->out_path, keep, info.n_layer, acts, (int)o->threads};
    struct herd_prune_stats st;
    if (herd_prune_heads_write(&pp, kv_out, &st, &err) != HERD_OK) {
        fprintf(stderr, "herd prune: %s\n", err.msg);
        goto out;
    }
    /* llama.cpp (Feb 2025 and since) makes these architectures' Q and output
     * projections n_embd wide, whatever the head count says; and builds every
     * layer's attention from layer 0's head counts */
    if (strcmp(info.arch, "qwen2") == 0 || strcmp(info.arch, "qwen2moe") == 0 || strcmp(info.arch, "phi3") == 0)
        fprintf(stderr,
                "herd prune: note: herd runs %s, but llama.cpp sizes %s's attention by n_embd rather than the head "
                "count and refuses it\n",
                o->out_path, info.arch);
    else if (!uniform)
        fprintf(stderr,
                "herd prune: note: the layers' head counts now differ (head_count and head_count_kv are arrays): "
                "herd runs %s; llama.cpp (Feb 2025) builds these architectures' attention from layer 0's counts and "
                "refuses it\n",
                o->out_path);
    fprintf(stderr, "  layer   keep  KV heads  query heads\n");
    for (uint32_t l = 0; l < info.n_layer; l++)
        fprintf(stderr, "  %5u  %5.3f  %3u -> %-3u  %3u -> %u\n", l, keep[l], hs.n_head_kv, kv_out[l], hs.n_head,
                kv_out[l] * G);
    if (o->report) {
        json_t *root = report_begin(o, info.arch, "attention_heads"), *layers = json_array();
        json_object_set_new(root, "head_dim", json_integer(hs.head_dim));
        for (uint32_t l = 0; l < info.n_layer; l++)
            json_array_append_new(layers,
                                  json_pack("{s:i,s:f,s:i,s:i,s:i,s:i}", "layer", (int)l, "keep_fraction", keep[l],
                                            "n_head_in", (int)hs.n_head, "n_head_kv_in", (int)hs.n_head_kv,
                                            "n_head_out", (int)(kv_out[l] * G), "n_head_kv_out", (int)kv_out[l]));
        json_object_set_new(root, "layers", layers);
        report_end(root, o, &cr, &st);
        if (dump_report(o->report, root) != 0) goto out;
    }
    fprintf(stderr, "herd prune: wrote %s: KV head groups cut, weights %.2f -> %.2f MiB, file %.2f MiB\n", o->out_path,
            (double)st.bytes_in / (1024.0 * 1024.0), (double)st.bytes_out / (1024.0 * 1024.0),
            (double)st.file_bytes_out / (1024.0 * 1024.0));
    rc = 0;
out:
    herd_prune_acts_destroy(acts);
    herd_gguf_destroy(g);
    free(widths);
    free(kv_out);
    free(keep);
    return rc;
}

/* ------------------------------------------------------------ main */

int herd_cmd_prune(int argc, char **argv) {
    struct prune_opts o = {.n_ctx = 512};
    const char *heads_text = NULL;
    const struct cli_opt opts[] = {
        {"calib", 0, CLI_STRING, &o.text_path, "TEXT", "calibration text file (needed by --drop-layers, --ffn-keep)"},
        {"drop-layers", 0, CLI_STRING, &o.drop_text, "N", "remove the N layers of lowest Block Influence"},
        {"layers", 0, CLI_STRING, &o.layers_text, "I,J,...", "remove these layers (0-based)"},
        {"ffn-keep", 0, CLI_STRING, &o.ffn_text, "F", "keep fraction F of each layer's FFN channels (or F0,F1,...)"},
        {"heads-keep", 0, CLI_STRING, &heads_text, "F",
         "keep fraction F of the KV heads, with their query heads (or F0,F1,...)"},
        {"report", 0, CLI_STRING, &o.report, "FILE", "write scores, ranking and what was removed as JSON"},
        {"ctx", 'c', CLI_U64, &o.n_ctx, "N", "tokens per calibration chunk (default 512)"},
        {"chunks", 0, CLI_U64, &o.chunks, "N", "calibration chunks to run (default: all the text holds)"},
        {"threads", 't', CLI_U64, &o.threads, "N", "threads (default: the CPUs this process may use)"},
        {0},
    };
    const char *pos[2];
    int n_pos;
    int prc = cli_parse(&cmd, opts, argc, argv, pos, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    o.in_path = pos[0];
    o.out_path = pos[1];
    const int n_modes = (o.drop_text != NULL) + (o.layers_text != NULL) + (o.ffn_text != NULL) + (heads_text != NULL);
    if (n_modes != 1) {
        fprintf(stderr, "herd prune: give exactly one of --drop-layers, --layers, --ffn-keep, --heads-keep\n");
        return 2;
    }
    double keep;
    if (o.ffn_text && !strchr(o.ffn_text, ',') && parse_fraction("--ffn-keep", o.ffn_text, &keep) != 0) return 2;
    if (heads_text && !strchr(heads_text, ',') && parse_fraction("--heads-keep", heads_text, &keep) != 0) return 2;
    if ((o.drop_text || o.ffn_text || heads_text) && !o.text_path) {
        fprintf(stderr, "herd prune: %s scores over a text: give --calib TEXT\n",
                o.drop_text  ? "--drop-layers"
                : o.ffn_text ? "--ffn-keep"
                             : "--heads-keep");
        return 2;
    }
    if (o.n_ctx < 16 || o.n_ctx > 65536) {
        fprintf(stderr, "herd prune: --ctx must be in 16..65536\n");
        return 2;
    }
    if (o.threads > 1024) {
        fprintf(stderr, "herd prune: --threads %llu is more than 1024\n", (unsigned long long)o.threads);
        return 2;
    }
    if (same_file(o.in_path, o.out_path) ||
        (o.report && (same_file(o.report, o.in_path) || same_file(o.report, o.out_path)))) {
        fprintf(stderr, "herd prune: IN, OUT and --report must be different files\n");
        return 2;
    }
    if (o.text_path && cli_calib_readable("prune", o.text_path) != 0) return 1;
    return o.ffn_text ? prune_ffn(&o) : heads_text ? prune_heads(&o, heads_text) : prune_layers(&o);
}
