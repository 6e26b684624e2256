/* `herd perplexity -m MODEL -f TEXT [--ctx N] [--chunks N] [--batch N]
 * [--kl-divergence-base FILE [--kl-divergence]] [--json]`: how well a model
 * predicts a text, by llama-perplexity's method, so the two tools print the
 * same figure for the same file and text:
 *   - the text is tokenized whole (BOS first when the vocabulary adds one)
 *     and cut into non-overlapping chunks of --ctx tokens (a text shorter
 *     than two chunks is refused, as llama.cpp does);
 *   - each chunk runs as a fresh sequence with its first token replaced by
 *     BOS, and only its second half is scored: the logits at positions
 *     ctx/2 .. ctx-2 against the tokens that follow them;
 *   - "[i]PPL" is printed after each chunk, then the final estimate and the
 *     standard error of its log.
 * With --kl-divergence-base FILE the scored rows are also saved, packed, in
 * llama-perplexity's file; with --kl-divergence too, the text and chunks
 * come from that file and this model is compared with the one that wrote
 * it (KL divergence, top-1 agreement, PPL ratio, probability deltas).
 *
 * Several chunks share a forward pass when --batch holds them (--batch /
 * --ctx sequences at once, as llama-perplexity's n_seq); the engine's
 * results do not depend on what else is in a batch, so neither do these. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/mapped_file.h"
#include "base/timing.h"
#include "cli/cli_model.h"
#include "cli/cli_progress.h"
#include "cli/commands.h"
#include "model/forward.h"
#include "quality/logits_file.h"
#include "quality/perplexity.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

static const struct cli_command cmd = {
    .name = "perplexity",
    .args = "",
    .summary = "Measure a model's perplexity on a text, by llama-perplexity's method (same chunks, same scoring,\n"
               "same output), or its KL divergence from a base model's saved log-probabilities.",
    .details = "Perplexity: herd perplexity -m MODEL -f TEXT [--ctx 512] [--chunks N]\n"
               "Save a base model's log-probabilities (llama-perplexity's file; either tool reads it):\n"
               "  herd perplexity -m BASE.gguf -f TEXT --kl-divergence-base base.kld\n"
               "Compare another model with it (the text and chunks come from the file; -f is not needed):\n"
               "  herd perplexity -m Q4_K_M.gguf --kl-divergence-base base.kld --kl-divergence\n"
               "The text needs at least 2 x --ctx tokens. --json prints one JSON object instead of the text report.",
    .min_pos = 0,
    .max_pos = 0,
};

/* Text files above this are refused: the tokenizer keeps up to one id per
 * byte (4 bytes each), and a perplexity run reads far less (wikitext-2's
 * test set is 1.3 MB). */
#define PPL_MAX_TEXT_BYTES (256u << 20)

/* What one run measures, in whichever mode. */
struct ppl_run {
    const struct herd_vocab *vocab;
    struct herd_context *ctx;
    uint32_t n_vocab, n_ctx, first, n_seq, batch;
    uint32_t n_chunk;
    int32_t *tokens;                     /* [n_chunk * n_ctx], the text's; not owned */
    bool print_text;                     /* the text report (not --json) */
    struct herd_ppl_stats ppl;           /* plain and saving modes */
    struct herd_logits_writer *save;     /* saving mode */
    uint16_t *packed;                    /* [rows per chunk * row length] for saving */
    const struct herd_logits_file *base; /* KL mode */
    struct herd_kld_stats kld;
    float *kld_values, *p_diff_values; /* [n_chunk * rows per chunk], KL mode */
    double seconds;                    /* forward passes and scoring */
};

/* Scores logits row r of the last pass, which is chunk c's position k. */
static enum herd_status score_row(struct ppl_run *run, uint32_t r, uint32_t c, uint32_t k, struct herd_error *err) {
    const float *row = herd_context_logits(run->ctx, r);
    const int32_t next = run->tokens[(size_t)c * run->n_ctx + k + 1];
    const uint32_t i = k - run->first, per = herd_logits_file_rows(run->n_ctx);
    if (run->base) {
        const size_t at = (size_t)c * per + i;
        herd_kld_row(row, run->n_vocab, herd_logits_file_row(run->base, c, i), next, &run->kld, &run->kld_values[at],
                     &run->p_diff_values[at]);
    } else if (run->save) {
        herd_ppl_add(&run->ppl, herd_ppl_row_pack(row, run->n_vocab, next,
                                                  run->packed + (size_t)i * herd_ppl_packed_row_len(run->n_vocab)));
        if (k == run->n_ctx - 2)
            return herd_logits_writer_append(run->save, run->packed,
                                             (size_t)per * herd_ppl_packed_row_len(run->n_vocab), err);
    } else {
        herd_ppl_add(&run->ppl, herd_ppl_row_nll(row, run->n_vocab, next));
    }
    return HERD_OK;
}

/* The per-chunk line of the KL report, as llama-perplexity prints it. */
static void print_kld_chunk(const struct ppl_run *run, uint32_t c) {
    struct herd_kld_summary s;
    herd_kld_summarize(&run->kld, &s);
    printf("%4u    %9.4f ± %9.4f    %10.5f ± %10.5f    %10.5f ± %10.5f    %6.3f ± %6.3f %%    %6.3f ± %6.3f %%\n",
           c + 1, s.ppl.mean, s.ppl.err, s.log_ppl_ratio.mean, s.log_ppl_ratio.err, s.kld.mean, s.kld.err,
           100.0 * s.p_diff_rms.mean, 100.0 * s.p_diff_rms.err, 100.0 * s.same_top.mean, 100.0 * s.same_top.err);
}

/* Runs every chunk: n_seq chunks per group, each group's tokens cut into
 * forward passes of at most run->batch tokens; each pass asks for logits at
 * the scored positions only. */
static enum herd_status run_chunks(struct ppl_run *run, struct herd_error *err) {
    const uint32_t n_ctx = run->n_ctx;
    int32_t *ids = malloc(run->batch * sizeof *ids), *seq = malloc(run->batch * sizeof *seq);
    uint32_t *pos = malloc(run->batch * sizeof *pos), *row_chunk = malloc(run->batch * sizeof *row_chunk);
    uint32_t *row_pos = malloc(run->batch * sizeof *row_pos);
    bool *want = malloc(run->batch * sizeof *want);
    int32_t seqs[64];
    uint32_t n_live = 0;
    enum herd_status rc = HERD_OK;
    if (!ids || !seq || !pos || !row_chunk || !row_pos || !want) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    const bool tty_report = run->print_text && isatty(fileno(stdout));
    struct cli_progress prog;
    if (!tty_report) cli_progress_start(&prog, "chunk", run->n_chunk);
    const double t0 = herd_time_now_s();
    for (uint32_t g = 0; g < run->n_chunk; g += run->n_seq) {
        const uint32_t n_group = run->n_chunk - g < run->n_seq ? run->n_chunk - g : run->n_seq;
        const double tg = herd_time_now_s();
        for (n_live = 0; n_live < n_group; n_live++)
            if ((rc = herd_kv_seq_new(run->ctx->kv, &seqs[n_live], err)) != HERD_OK) goto out;
        /* the group's tokens, chunk-major, in passes of at most batch */
        const uint64_t total = (uint64_t)n_group * n_ctx;
        for (uint64_t t0p = 0; t0p < total; t0p += run->batch) {
            const uint32_t m = total - t0p < run->batch ? (uint32_t)(total - t0p) : run->batch;
            uint32_t n_rows = 0;
            for (uint32_t i = 0; i < m; i++) {
                const uint32_t c = (uint32_t)((t0p + i) / n_ctx), k = (uint32_t)((t0p + i) % n_ctx);
                ids[i] = run->tokens[(size_t)(g + c) * n_ctx + k];
                if (k == 0 && run->vocab->add_bos && run->vocab->bos >= 0) ids[i] = run->vocab->bos;
                pos[i] = k;
                seq[i] = seqs[c];
                want[i] = k >= run->first && k + 1 < n_ctx;
                if (want[i]) row_chunk[n_rows] = g + c, row_pos[n_rows] = k, n_rows++;
            }
            struct herd_batch b = {m, ids, pos, seq, want};
            if ((rc = herd_decode(run->ctx, &b, err)) != HERD_OK) goto out;
            for (uint32_t r = 0; r < n_rows; r++) {
                if ((rc = score_row(run, r, row_chunk[r], row_pos[r], err)) != HERD_OK) goto out;
                if (row_pos[r] != n_ctx - 2 || !run->print_text) continue;
                /* chunk row_chunk[r] is complete */
                if (run->base) {
                    print_kld_chunk(run, row_chunk[r]);
                } else {
                    printf("[%u]%.4f,", row_chunk[r] + 1, herd_ppl_value(&run->ppl));
                    fflush(stdout);
                }
            }
        }
        while (n_live) herd_kv_seq_free(run->ctx->kv, seqs[--n_live]);
        if (g == 0) {
            const double per = herd_time_now_s() - tg;
            const uint32_t groups = (run->n_chunk + run->n_seq - 1) / run->n_seq;
            fprintf(stderr, "herd perplexity: %.2f seconds per pass of %u chunk%s - ETA %.2f minutes\n", per, n_group,
                    n_group == 1 ? "" : "s", per * groups / 60.0);
        }
        if (!tty_report) cli_progress_update(&prog, g + n_group, 0);
    }
    run->seconds = herd_time_now_s() - t0;
    if (!tty_report) cli_progress_finish(&prog);
    if (run->print_text && !run->base) printf("\n");
out:
    while (n_live) herd_kv_seq_free(run->ctx->kv, seqs[--n_live]);
    free(ids);
    free(seq);
    free(pos);
    free(row_chunk);
    free(row_pos);
    free(want);
    return rc;
}

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The median of n sorted values, as llama.cpp takes it. */
static float median_sorted(const float *v, size_t n) {
    return n % 2 == 0 ? 0.5f * (v[n / 2] + v[n / 2 - 1]) : v[n / 2];
}

/* llama-perplexity's closing statistics of a KL run (only from 100 tokens:
 * fewer say nothing). */
static void print_kld_report(struct ppl_run *run) {
    const size_t n = (size_t)run->kld.count;
    printf("\n");
    if (n < 100) {
        printf("(%zu tokens scored: too few for the statistics; use more text or a larger --ctx)\n", n);
        return;
    }
    struct herd_kld_summary s;
    herd_kld_summarize(&run->kld, &s);
    float *kv = run->kld_values, *pv = run->p_diff_values;
    qsort(kv, n, sizeof *kv, cmp_float);
    qsort(pv, n, sizeof *pv, cmp_float);
    printf("====== Perplexity statistics ======\n");
    printf("Mean PPL(Q)                   : %10.6f ± %10.6f\n", s.ppl.mean, s.ppl.err);
    printf("Mean PPL(base)                : %10.6f ± %10.6f\n", s.ppl_base.mean, s.ppl_base.err);
    printf("Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", 100.0 * s.log_ppl_cor);
    printf("Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n", s.log_ppl_ratio.mean, s.log_ppl_ratio.err);
    printf("Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n", s.ppl_ratio.mean, s.ppl_ratio.err);
    printf("Mean PPL(Q)-PPL(base)         : %10.6f ± %10.6f\n", s.ppl_diff.mean, s.ppl_diff.err);
    printf("\n====== KL divergence statistics ======\n");
    printf("Mean    KLD: %10.6f ± %10.6f\n", s.kld.mean, s.kld.err);
    printf("Maximum KLD: %10.6f\n", (double)kv[n - 1]);
    printf("99.9%%   KLD: %10.6f\n", (double)herd_percentile_sorted(kv, n, 0.999f));
    printf("99.0%%   KLD: %10.6f\n", (double)herd_percentile_sorted(kv, n, 0.990f));
    printf("Median  KLD: %10.6f\n", (double)median_sorted(kv, n));
    printf("10.0%%   KLD: %10.6f\n", (double)herd_percentile_sorted(kv, n, 0.100f));
    printf(" 5.0%%   KLD: %10.6f\n", (double)herd_percentile_sorted(kv, n, 0.050f));
    printf(" 1.0%%   KLD: %10.6f\n", (double)herd_percentile_sorted(kv, n, 0.010f));
    printf("Minimum KLD: %10.6f\n", (double)kv[0]);
    printf("\n====== Token probability statistics ======\n");
    printf("Mean    Δp: %6.3f ± %5.3f %%\n", 100.0 * s.p_diff.mean, 100.0 * s.p_diff.err);
    printf("Maximum Δp: %6.3f%%\n", 100.0 * pv[n - 1]);
    static const float fr[] = {0.999f, 0.990f, 0.950f, 0.900f, 0.750f};
    static const char *const fr_name[] = {"99.9", "99.0", "95.0", "90.0", "75.0"};
    for (size_t i = 0; i < 5; i++)
        printf("%s%%   Δp: %6.3f%%\n", fr_name[i], 100.0 * herd_percentile_sorted(pv, n, fr[i]));
    printf("Median  Δp: %6.3f%%\n", 100.0 * median_sorted(pv, n));
    static const float lo[] = {0.250f, 0.100f, 0.050f, 0.010f, 0.001f};
    static const char *const lo_name[] = {"25.0", "10.0", " 5.0", " 1.0", " 0.1"};
    for (size_t i = 0; i < 5; i++)
        printf("%s%%   Δp: %6.3f%%\n", lo_name[i], 100.0 * herd_percentile_sorted(pv, n, lo[i]));
    printf("Minimum Δp: %6.3f%%\n", 100.0 * pv[0]);
    printf("RMS Δp    : %6.3f ± %5.3f %%\n", 100.0 * s.p_diff_rms.mean, 100.0 * s.p_diff_rms.err);
    printf("Same top p: %6.3f ± %5.3f %%\n", 100.0 * s.same_top.mean, 100.0 * s.same_top.err);
}

static json_t *mean_err_json(struct herd_mean_err m) { return json_pack("{s:f,s:f}", "value", m.mean, "error", m.err); }

/* The --json object: the run's shape, speed and figures. */
static void print_json(const struct ppl_run *run, const char *model_path) {
    const double tokens = (double)run->n_chunk * run->n_ctx;
    json_t *o = json_pack("{s:s,s:i,s:i,s:i,s:f,s:f}", "model", model_path, "ctx", (int)run->n_ctx, "chunks",
                          (int)run->n_chunk, "tokens_scored", (json_int_t)(run->base ? run->kld.count : run->ppl.count),
                          "seconds", run->seconds, "tokens_per_second", run->seconds > 0 ? tokens / run->seconds : 0.0);
    if (run->base) {
        struct herd_kld_summary s;
        herd_kld_summarize(&run->kld, &s);
        json_object_set_new(o, "ppl", mean_err_json(s.ppl));
        json_object_set_new(o, "ppl_base", mean_err_json(s.ppl_base));
        json_object_set_new(o, "ppl_ratio", mean_err_json(s.ppl_ratio));
        json_object_set_new(o, "kl_divergence", mean_err_json(s.kld));
        json_object_set_new(o, "same_top", mean_err_json(s.same_top));
        json_object_set_new(o, "p_diff_rms", mean_err_json(s.p_diff_rms));
    } else {
        double ppl = herd_ppl_value(&run->ppl), e = 0;
        if (!herd_ppl_final(&run->ppl, &ppl, &e)) e = 0;
        json_object_set_new(o, "ppl", json_pack("{s:f,s:f}", "value", ppl, "error", e));
    }
    json_dumpf(o, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(o);
}

int herd_cmd_perplexity(int argc, char **argv) {
    struct cli_model_opts mo = {0};
    const char *text_path = NULL, *base_path = NULL;
    uint64_t chunks = 0, batch = 512;
    bool kl = false, json = false;
    const struct cli_opt opts[] = {
        CLI_MODEL_OPTIONS(mo),
        {"file", 'f', CLI_STRING, &text_path, "TEXT", "text file to score (required unless --kl-divergence)"},
        {"chunks", 0, CLI_U64, &chunks, "N", "chunks to score (default: all the text holds)"},
        {"batch", 'b', CLI_U64, &batch, "N",
         "tokens per forward pass (default 512); N >= 2 x --ctx runs N / ctx chunks at once"},
        {"kl-divergence-base", 0, CLI_STRING, &base_path, "FILE",
         "save the scored log-probabilities here (or, with --kl-divergence, read them)"},
        {"kl-divergence", 0, CLI_FLAG, &kl, NULL, "compare with the base model's FILE instead of scoring a text"},
        {"json", 0, CLI_FLAG, &json, NULL, "print one JSON object (figures, tokens/s) instead of the report"},
        {0},
    };
    int n_pos;
    int prc = cli_parse(&cmd, opts, argc, argv, NULL, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    if (kl && !base_path) {
        fprintf(stderr, "herd perplexity: --kl-divergence needs --kl-divergence-base FILE (the base model's file)\n");
        return 2;
    }
    if (!kl && !text_path) {
        fprintf(stderr, "herd perplexity: -f TEXT is required\n");
        cli_print_help(&cmd, opts, stderr);
        return 2;
    }
    if (batch < 1 || batch > 65536) {
        fprintf(stderr, "herd perplexity: --batch must be in 1..65536\n");
        return 2;
    }

    struct herd_mapped_file text = {0};
    struct herd_logits_file base = {0};
    struct herd_logits_writer save = {0};
    struct herd_engine *e = NULL;
    struct ppl_run run = {0};
    int32_t *ids = NULL;
    struct herd_error err = {0};
    int rc = 1;
    uint32_t n_ctx;
    if (kl) {
        if (herd_logits_file_open(&base, base_path, &err) != HERD_OK) goto fail;
        if (mo.ctx && mo.ctx != base.n_ctx) {
            fprintf(stderr, "herd perplexity: %s was computed with --ctx %u, not %llu (leave --ctx out)\n", base_path,
                    base.n_ctx, (unsigned long long)mo.ctx);
            goto out;
        }
        n_ctx = base.n_ctx;
        if (text_path)
            fprintf(stderr, "herd perplexity: the text comes from %s; -f %s is not read\n", base_path, text_path);
    } else {
        n_ctx = mo.ctx ? (uint32_t)(mo.ctx > (1u << 24) ? 1u << 24 : mo.ctx) : 512;
    }
    if (n_ctx < 16 || n_ctx > 65536) {
        fprintf(stderr, "herd perplexity: --ctx must be in 16..65536\n");
        goto out;
    }
    /* several chunks per pass when the batch holds them (llama-perplexity's n_seq) */
    uint32_t n_seq = batch >= 2ull * n_ctx ? (uint32_t)(batch / n_ctx) : 1;
    if (n_seq > 64) n_seq = 64;
    const uint32_t per_pass = (uint32_t)(batch < (uint64_t)n_seq * n_ctx ? batch : (uint64_t)n_seq * n_ctx);
    const uint32_t rows_per_chunk = herd_logits_file_rows(n_ctx);
    const uint32_t max_rows = per_pass < n_seq * rows_per_chunk ? per_pass : n_seq * rows_per_chunk;

    mo.ctx = n_ctx;
    struct herd_engine_options eo;
    cli_engine_options(&mo, &eo);
    eo.parts = HERD_ENGINE_TEXT;
    eo.max_seqs = n_seq;
    eo.batch_tokens = per_pass;
    eo.max_outputs = max_rows;
    if (!(e = cli_engine_open("perplexity", &eo))) goto out;
    run.vocab = herd_engine_vocab(e);
    run.ctx = herd_engine_context(e);
    run.n_vocab = (uint32_t)herd_engine_model(e)->desc.n_vocab;
    run.n_ctx = n_ctx;
    run.first = n_ctx / 2;
    run.n_seq = n_seq;
    run.batch = per_pass;
    run.print_text = !json;

    uint32_t n_ids = 0;
    if (kl) {
        if ((uint32_t)base.n_vocab != run.n_vocab) {
            fprintf(stderr,
                    "herd perplexity: %s holds log-probabilities over %d tokens, but this model's vocabulary has %u "
                    "(compare models that share a vocabulary)\n",
                    base_path, base.n_vocab, run.n_vocab);
            goto out;
        }
        n_ids = (uint32_t)base.n_chunk * n_ctx;
        for (uint32_t i = 0; i < n_ids; i++)
            if (base.tokens[i] < 0 || (uint32_t)base.tokens[i] >= run.n_vocab) {
                fprintf(stderr, "herd perplexity: %s: token %u is %d, outside the vocabulary (0..%u)\n", base_path, i,
                        base.tokens[i], run.n_vocab - 1);
                goto out;
            }
        ids = malloc((size_t)n_ids * sizeof *ids);
        if (!ids) {
            fprintf(stderr, "herd perplexity: out of memory\n");
            goto out;
        }
        memcpy(ids, base.tokens, (size_t)n_ids * sizeof *ids);
        run.n_chunk = (uint32_t)base.n_chunk;
        if (chunks && chunks < run.n_chunk) run.n_chunk = (uint32_t)chunks;
        const size_t n_rows = (size_t)run.n_chunk * rows_per_chunk;
        run.kld_values = malloc(n_rows * sizeof *run.kld_values);
        run.p_diff_values = malloc(n_rows * sizeof *run.p_diff_values);
        if (!run.kld_values || !run.p_diff_values) {
            fprintf(stderr, "herd perplexity: out of memory\n");
            goto out;
        }
        run.base = &base;
    } else {
        if (herd_mapped_file_init(&text, text_path, &err) != HERD_OK) goto fail;
        if (text.size > PPL_MAX_TEXT_BYTES) {
            fprintf(stderr, "herd perplexity: %s is %zu bytes; at most %u are read (cut it)\n", text_path, text.size,
                    PPL_MAX_TEXT_BYTES);
            goto out;
        }
        const uint32_t max_ids = (uint32_t)text.size + 2;
        if (!(ids = malloc((size_t)max_ids * sizeof *ids))) {
            fprintf(stderr, "herd perplexity: out of memory\n");
            goto out;
        }
        if (herd_tokenize(herd_engine_tokenizer(e), (const char *)text.data, text.size, HERD_TOK_ADD_SPECIAL, ids,
                          max_ids, &n_ids, &err) != HERD_OK)
            goto fail;
        /* a vocabulary that appends EOS would score it as text; llama.cpp
         * refuses such models, herd leaves the EOS out */
        if (run.vocab->add_eos && n_ids && ids[n_ids - 1] == run.vocab->eos) n_ids--;
        if (n_ids < 2 * n_ctx) {
            fprintf(stderr,
                    "herd perplexity: %s tokenizes to %u tokens; a context of %u needs at least %u (add text or lower "
                    "--ctx)\n",
                    text_path, n_ids, n_ctx, 2 * n_ctx);
            goto out;
        }
        run.n_chunk = n_ids / n_ctx;
        if (chunks && chunks < run.n_chunk) run.n_chunk = (uint32_t)chunks;
        if (base_path) {
            const size_t row_len = herd_ppl_packed_row_len(run.n_vocab);
            if (!(run.packed = calloc((size_t)rows_per_chunk * row_len, sizeof *run.packed))) {
                fprintf(stderr, "herd perplexity: out of memory (%zu MiB for a chunk's rows)\n",
                        ((size_t)rows_per_chunk * row_len * 2) >> 20);
                goto out;
            }
            if (herd_logits_writer_create(&save, base_path, n_ctx, (int32_t)run.n_vocab, (int32_t)run.n_chunk, ids,
                                          &err) != HERD_OK)
                goto fail;
            run.save = &save;
        }
    }
    run.tokens = ids;
    fprintf(stderr, "herd perplexity: %u tokens, %u chunks of %u, %u scored each, %u at once\n", n_ids, run.n_chunk,
            n_ctx, rows_per_chunk, n_seq);
    if (run.base && !json)
        printf("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS   "
               "         Same top p\n");
    if (run_chunks(&run, &err) != HERD_OK) goto fail;
    if (run.save && herd_logits_writer_finish(&save, &err) != HERD_OK) {
        run.save = NULL;
        goto fail;
    }
    const double tokens_per_s = run.seconds > 0 ? (double)run.n_chunk * n_ctx / run.seconds : 0;
    if (json) {
        print_json(&run, herd_engine_model_path(e));
    } else if (run.base) {
        print_kld_report(&run);
    } else {
        double ppl, ppl_err;
        if (herd_ppl_final(&run.ppl, &ppl, &ppl_err))
            printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, ppl_err);
        else
            fprintf(stderr, "herd perplexity: the log-probabilities have no spread; no error estimate\n");
    }
    fprintf(stderr, "herd perplexity: %u chunks in %.2f s, %.1f tokens/s%s%s\n", run.n_chunk, run.seconds, tokens_per_s,
            run.save ? "; wrote " : "", run.save ? base_path : "");
    run.save = NULL;
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "herd perplexity: %s\n", err.msg);
out:
    if (run.save) herd_logits_writer_abort(run.save);
    free(run.packed);
    free(run.kld_values);
    free(run.p_diff_values);
    free(ids);
    herd_engine_close(e);
    herd_logits_file_cleanup(&base);
    herd_mapped_file_cleanup(&text);
    return rc;
}
