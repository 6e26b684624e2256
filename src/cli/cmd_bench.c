/* `herd bench`: llama-bench style throughput of the engine: prompt
 * processing (pp), single-sequence generation (tg) and batched generation
 * (tg with B sequences), medians of repetitions, with the machine's ceilings
 * measured in the same run and each result given as a fraction of its
 * ceiling (decode: weight bytes read per second / read bandwidth; prefill and
 * batched decode: 2 x parameters x tokens per second / compute peak; for a
 * mixture of experts, the bytes and parameters of the experts a token uses).
 *
 * The read bandwidth of a shared machine moves with its neighbours' memory
 * traffic (46-86 GB/s between runs minutes apart on a 2-core VM), so tg's
 * floor is measured beside each repetition: best of 3 passes over 512 MiB
 * before each and after the last, a repetition's floor the higher of the
 * two around it (never the lower: the yardstick stays the best the machine
 * showed at that moment), and tg's fraction the median of the
 * repetitions' fractions. The one-off ceilings after all tests remain for
 * the compute-bound rows. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/timing.h"
#include "cli/cli_model.h"
#include "cli/commands.h"
#include "kernels/roofline.h"
#include "model/forward.h"
#include "model/model.h"

static const struct cli_command cmd = {
    .name = "bench",
    .args = "",
    .summary = "Measure prompt processing (pp), generation (tg) and batched generation (tg-bB) speed, in tokens/s,\n"
               "medians of -r repetitions, with the machine's read bandwidth and compute peaks measured in the same\n"
               "run.",
    .details = "Prompts are random token ids. tg starts from an empty context, like llama-bench; tg-bB first fills\n"
               "each of B sequences with --batch-prompt tokens (untimed), then times -n steps that decode one token\n"
               "of every sequence in one batch, and reports all B sequences' tokens per second.\n"
               "--json prints {\"model\":...,\"threads\":N,\"results\":[{\"test\":\"pp512\",\"tokens_per_s\":X},...],\n"
               "\"ceilings\":{...}}.",
    .min_pos = 0,
    .max_pos = 0,
};

struct bench {
    struct herd_context *ctx;
    uint32_t n_vocab;
    uint64_t rng;
    struct herd_error err;
};

static int32_t random_token(struct bench *b) {
    b->rng = b->rng * 6364136223846793005ull + 1442695040888963407ull;
    return (int32_t)((b->rng >> 33) % b->n_vocab);
}

/* Decodes n tokens of each of the n_seq sequences seqs[] starting at pos0,
 * `chunk` tokens per sequence per batch; returns false on error. */
static bool feed(struct bench *b, const int32_t *seqs, uint32_t n_seq, uint32_t pos0, uint32_t n, uint32_t chunk) {
    const uint32_t max = b->ctx->params.max_batch_tokens;
    int32_t *tok = malloc(max * sizeof *tok), *seq = malloc(max * sizeof *seq);
    uint32_t *pos = malloc(max * sizeof *pos);
    bool *want = malloc(max * sizeof *want);
    bool ok = tok && seq && pos && want;
    for (uint32_t i0 = 0; ok && i0 < n; i0 += chunk) {
        uint32_t m = n - i0 < chunk ? n - i0 : chunk, k = 0;
        for (uint32_t s = 0; s < n_seq; s++)
            for (uint32_t i = 0; i < m; i++) {
                tok[k] = random_token(b);
                seq[k] = seqs[s];
                pos[k] = pos0 + i0 + i;
                want[k++] = i == m - 1; /* the last token of each sequence: as a sampler would need */
            }
        struct herd_batch batch = {k, tok, pos, seq, want};
        ok = herd_decode(b->ctx, &batch, &b->err) == HERD_OK;
    }
    free(tok), free(seq), free(pos), free(want);
    return ok;
}

static bool new_seqs(struct bench *b, int32_t *seqs, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (herd_kv_seq_new(b->ctx->kv, &seqs[i], &b->err) != HERD_OK) return false;
    return true;
}

static void free_seqs(struct bench *b, const int32_t *seqs, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) herd_kv_seq_free(b->ctx->kv, seqs[i]);
}

int herd_cmd_bench(int argc, char **argv) {
    struct cli_model_opts mo = {0};
    uint64_t n_prompt = 512, n_gen = 128, reps = 3, batch = 16, batch_prompt = 128;
    bool as_json = false, no_ceilings = false, profile = false;
    const struct cli_opt opts[] = {
        CLI_MODEL_OPTIONS(mo),
        {"n-prompt", 'p', CLI_U64, &n_prompt, "N", "prompt tokens for the pp test (default 512; 0 skips it)"},
        {"n-gen", 'n', CLI_U64, &n_gen, "N", "generated tokens for the tg tests (default 128; 0 skips them)"},
        {"reps", 'r', CLI_U64, &reps, "R", "repetitions; the median is reported (default 3)"},
        {"batch", 'b', CLI_U64, &batch, "B", "sequences in the batched tg test (default 16; 0 or 1 skips it)"},
        {"batch-prompt", 0, CLI_U64, &batch_prompt, "N", "tokens in each sequence before batched tg (default 128)"},
        {"no-ceilings", 0, CLI_FLAG, &no_ceilings, NULL, "skip measuring bandwidth and compute peaks"},
        {"json", 0, CLI_FLAG, &as_json, NULL, "print one JSON object"},
        {"profile", 0, CLI_FLAG, &profile, NULL,
         "after the table, time per operation of each test (matmuls by weight type, attention, norms, ...);\n"
         "to stderr with --json"},
        {0},
    };
    int n_pos;
    int prc = cli_parse(&cmd, opts, argc, argv, NULL, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    if (reps == 0 || reps > 100 || n_prompt > 65536 || n_gen > 65536 || batch > 256 || batch_prompt > 65536) {
        fprintf(stderr, "herd bench: -r must be 1..100, -p and -n at most 65536, --batch at most 256\n");
        return 2;
    }
    if (batch < 2) batch = 0;
    uint32_t max_batch = 512;
    if (batch > max_batch) max_batch = (uint32_t)batch;
    uint64_t ctx_needed = n_prompt > batch_prompt + n_gen ? n_prompt : batch_prompt + n_gen;
    if (n_gen > ctx_needed) ctx_needed = n_gen;
    if (mo.ctx == 0) mo.ctx = ctx_needed;
    const uint32_t seqs_needed = batch ? (uint32_t)batch : 1;
    struct herd_engine_options eo;
    cli_engine_options(&mo, &eo);
    eo.batch_tokens = max_batch;
    eo.max_outputs = seqs_needed > 64 ? seqs_needed : 64;
    eo.max_seqs = seqs_needed;
    struct herd_engine *e = cli_engine_open("bench", &eo);
    if (!e) return 1;
    const struct herd_model *model = herd_engine_model(e);
    struct herd_context *ctx = herd_engine_context(e);
    struct bench b = {ctx, (uint32_t)model->desc.n_vocab, 12345, {0}};
    const int R = (int)reps;
    double *samples = malloc((size_t)R * sizeof *samples);
    json_t *results = json_array();
    int rc = 0;
    int32_t seqs[256];

    /* warm-up: page in the weights, spin up the threads */
    if (!new_seqs(&b, seqs, 1) || !feed(&b, seqs, 1, 0, 16, 16)) goto fail;
    free_seqs(&b, seqs, 1);

    struct {
        char name[32];
        double tps;
        double frac_bw, floor_gbps; /* tg: measured beside each repetition (0: not measured) */
    } rows[3];
    memset(rows, 0, sizeof rows);
    const double bytes = (double)model->desc.weight_bytes, params = (double)model->desc.n_params;
    /* a mixture of experts reads and multiplies only the experts a token uses: the ceilings count those */
    double act_bytes = bytes, act_params = params;
    for (uint64_t l = 0; model->desc.n_expert && l < model->desc.n_layer; l++)
        for (int i = 0; i < 3; i++) {
            static const char *const parts[3] = {"gate", "up", "down"};
            char tname[96];
            snprintf(tname, sizeof tname, "blk.%llu.ffn_%s_exps.weight", (unsigned long long)l, parts[i]);
            const struct herd_gguf_tensor *t = herd_gguf_find_tensor(model->gguf, tname);
            const double unused = 1.0 - (double)model->desc.n_expert_used / (double)model->desc.n_expert;
            if (t) act_bytes -= unused * (double)t->n_bytes, act_params -= unused * (double)t->n_elems;
        }
    /* each test's forward passes, all repetitions (the untimed fills of tg-bB too) */
    struct herd_profile prof[3] = {0};
    int n_rows = 0;
    if (n_prompt) {
        if (profile) ctx->profile = &prof[n_rows];
        for (int r = 0; r < R; r++) {
            if (!new_seqs(&b, seqs, 1)) goto fail;
            double t0 = herd_time_now_s();
            if (!feed(&b, seqs, 1, 0, (uint32_t)n_prompt, max_batch)) goto fail;
            samples[r] = (double)n_prompt / (herd_time_now_s() - t0);
            free_seqs(&b, seqs, 1);
        }
        snprintf(rows[n_rows].name, sizeof rows[n_rows].name, "pp%llu", (unsigned long long)n_prompt);
        rows[n_rows++].tps = herd_median(samples, (size_t)R);
    }
    if (n_gen) {
        if (profile) ctx->profile = &prof[n_rows];
        /* floor[r]: the read bandwidth just before repetition r (floor[R]: after the last) */
        struct herd_roofline_read *probe = no_ceilings ? NULL : herd_roofline_read_create((size_t)1 << 29);
        double *floor = calloc((size_t)R + 1, sizeof *floor), *fracs = calloc((size_t)R, sizeof *fracs);
        bool ok = floor && fracs;
        if (!ok) snprintf(b.err.msg, sizeof b.err.msg, "out of memory");
        if (ok && probe) floor[0] = herd_roofline_read_measure(probe, ctx->pool, ctx->k, 3);
        for (int r = 0; ok && r < R; r++) {
            ok = new_seqs(&b, seqs, 1);
            double t0 = herd_time_now_s();
            ok = ok && feed(&b, seqs, 1, 0, (uint32_t)n_gen, 1);
            samples[r] = (double)n_gen / (herd_time_now_s() - t0);
            if (ok) free_seqs(&b, seqs, 1);
            if (ok && probe) {
                floor[r + 1] = herd_roofline_read_measure(probe, ctx->pool, ctx->k, 3);
                const double f = floor[r] > floor[r + 1] ? floor[r] : floor[r + 1];
                fracs[r] = f > 0 ? act_bytes * samples[r] / (f * 1e9) : 0;
            }
        }
        herd_roofline_read_destroy(probe);
        if (ok) {
            snprintf(rows[n_rows].name, sizeof rows[n_rows].name, "tg%llu", (unsigned long long)n_gen);
            if (probe) {
                rows[n_rows].frac_bw = herd_median(fracs, (size_t)R);
                rows[n_rows].floor_gbps = herd_median(floor, (size_t)R + 1);
            }
            rows[n_rows++].tps = herd_median(samples, (size_t)R);
        }
        free(floor), free(fracs);
        if (!ok) goto fail;
    }
    if (n_gen && batch) {
        const uint32_t B = (uint32_t)batch;
        for (int r = 0; r < R; r++) {
            if (!new_seqs(&b, seqs, B)) goto fail;
            ctx->profile = NULL; /* the fill is not the test */
            if (batch_prompt && !feed(&b, seqs, B, 0, (uint32_t)batch_prompt, max_batch / B)) goto fail;
            if (profile) ctx->profile = &prof[n_rows];
            double t0 = herd_time_now_s();
            if (!feed(&b, seqs, B, (uint32_t)batch_prompt, (uint32_t)n_gen, 1)) goto fail;
            samples[r] = (double)B * (double)n_gen / (herd_time_now_s() - t0);
            free_seqs(&b, seqs, B);
        }
        snprintf(rows[n_rows].name, sizeof rows[n_rows].name, "tg%llu-b%u", (unsigned long long)n_gen, B);
        rows[n_rows++].tps = herd_median(samples, (size_t)R);
    }

    ctx->profile = NULL;
    double bw = 0, int8 = 0, f32 = 0;
    if (!no_ceilings) {
        bw = herd_roofline_read_gbps(ctx->pool, ctx->k, (size_t)1 << 29, 5);
        int8 = herd_roofline_int8_ops(ctx->pool, 3);
        f32 = herd_roofline_f32_flops(ctx->pool, 3);
    }
    /* quantized weights multiply 8-bit activations (integer peak); float weights, floats (the bound Q
     * matrix: phi3 files have no attn_q tensor, their Q is a part of attn_qkv) */
    const bool int8_weights = herd_act_type_of(model->layers[0].wq.type) != HERD_ACT_F32;
    const double peak = int8_weights ? int8 : f32;
    const char *name = model->desc.name[0] ? model->desc.name : "model";
    if (!as_json) {
        printf("| %-28s | %10s | %8s | %7s | %-12s | %12s | %-24s |\n", "model", "size", "params", "threads", "test",
               "t/s", "of ceiling");
        printf("|%s|%s|%s|%s|%s|%s|%s|\n", "------------------------------", "------------", "----------", "---------",
               "--------------", "--------------", "--------------------------");
    }
    for (int i = 0; i < n_rows; i++) {
        /* generation of one sequence reads every weight per token: bandwidth-bound;
         * prompts and batches reuse each weight across tokens: compute-bound */
        const bool bw_bound = strncmp(rows[i].name, "tg", 2) == 0 && !strchr(rows[i].name, 'b');
        double frac = bw_bound ? (rows[i].floor_gbps > 0 ? rows[i].frac_bw
                                  : bw > 0               ? act_bytes * rows[i].tps / (bw * 1e9)
                                                         : 0)
                               : (peak > 0 ? 2 * act_params * rows[i].tps / peak : 0);
        if (!as_json) {
            char size[32], of[64];
            snprintf(size, sizeof size, "%.2f MiB", bytes / (1 << 20));
            if (no_ceilings)
                snprintf(of, sizeof of, "-");
            else
                snprintf(of, sizeof of, "%.1f %% of %s", 100 * frac,
                         bw_bound       ? "read bw"
                         : int8_weights ? "int8 peak"
                                        : "f32 peak");
            printf("| %-28.28s | %10s | %7.1fM | %7d | %-12s | %12.2f | %-24s |\n", name, size, params / 1e6,
                   herd_pool_size(ctx->pool), rows[i].name, rows[i].tps, of);
        }
        json_t *row = json_pack("{s:s,s:f,s:s,s:f}", "test", rows[i].name, "tokens_per_s", rows[i].tps, "bound",
                                bw_bound ? "read_bandwidth" : "compute", "fraction_of_ceiling", frac);
        /* the median of the bandwidths measured beside the repetitions */
        if (rows[i].floor_gbps > 0) json_object_set_new(row, "read_gbps_beside", json_real(rows[i].floor_gbps));
        json_array_append_new(results, row);
    }
    if (!as_json && !no_ceilings)
        printf("\nceilings, measured now: read %.1f GB/s, int8 %.2f TOPS, f32 %.2f TFLOPS; %s kernels\n", bw,
               int8 / 1e12, f32 / 1e12, ctx->k->name);
    for (int i = 0; !as_json && i < n_rows; i++)
        if (rows[i].floor_gbps > 0)
            printf("%s: read bandwidth beside its repetitions %.1f GB/s (median; each repetition against the higher "
                   "of the two around it)\n",
                   rows[i].name, rows[i].floor_gbps);
    for (int i = 0; profile && i < n_rows; i++) herd_profile_print(&prof[i], rows[i].name, as_json ? stderr : stdout);
    if (as_json) {
        json_t *root = json_pack("{s:s,s:I,s:I,s:i,s:s,s:i,s:o,s:{s:f,s:f,s:f}}", "model", name, "model_bytes",
                                 (json_int_t)model->desc.weight_bytes, "n_params", (json_int_t)model->desc.n_params,
                                 "threads", herd_pool_size(ctx->pool), "kernels", ctx->k->name, "reps", R, "results",
                                 results, "ceilings", "read_gbps", bw, "int8_ops_per_s", int8, "f32_flops_per_s", f32);
        results = NULL;
        json_dumpf(root, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        json_decref(root);
    }
    goto out;
fail:
    fprintf(stderr, "herd bench: %s\n", b.err.msg);
    rc = 1;
out:
    json_decref(results);
    free(samples);
    herd_engine_close(e);
    return rc;
}
