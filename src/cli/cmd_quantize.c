/* `herd quantize IN OUT TYPE`: a GGUF model rewritten with smaller weight
 * types, llama-quantize's file byte for byte (convert/quantize.h). This file
 * parses flags and reports progress; the work is in herd_quantize_model. */
#include <stdio.h>
#include <string.h>

#include "cli/cli_args.h"
#include "cli/cli_progress.h"
#include "cli/commands.h"
#include "convert/quantize.h"
#include "herd/gguf.h"

static const struct cli_command cmd = {
    .name = "quantize",
    .args = "IN.gguf OUT.gguf TYPE",
    .summary = "Write IN's weights in a smaller type (Q8_0, Q4_K_M, ...), choosing each tensor's type as\n"
               "llama-quantize does, so OUT is byte for byte the file llama-quantize writes.",
    .details = "TYPE: Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q2_K_S, Q3_K_S, Q3_K_M (Q3_K), Q3_K_L, IQ4_NL, Q4_K_S,\n"
               "Q4_K_M (Q4_K), Q5_K_S, Q5_K_M (Q5_K), Q6_K, Q8_0, F16, BF16, F32 (or llama.cpp's number for it).\n"
               "The K mixes give some tensors more bits (output.weight Q6_K; some attn_v and ffn_down layers);\n"
               "--pure turns that off. Rows not a multiple of 256 fall back (Q2_K/Q3_K -> IQ4_NL,\n"
               "Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0). Norms and other vectors stay as they are.\n"
               "--imatrix takes llama-imatrix's or `herd imatrix`'s file. OUT appears only when complete.",
    .min_pos = 3,
    .max_pos = 3,
};

struct progress_ctx {
    struct cli_progress bar;
};

static void on_tensor(void *ctx, const struct herd_quantize_event *ev) {
    struct progress_ctx *pc = ctx;
    if (ev->fallback && !pc->bar.tty) /* on a terminal the summary counts them instead of breaking the bar */
        fprintf(stderr, "herd quantize: %s: rows of this tensor do not fit the mix's blocks; wrote %s\n", ev->name,
                herd_ggml_type_info(ev->type_out)->name);
    pc->bar.n = ev->n_tensors; /* known once the plan is made, before the first tensor */
    cli_progress_update(&pc->bar, ev->index, ev->bytes_out_total);
}

/* A ggml type name for --output-type / --token-embedding-type. */
static int parse_type(const char *flag, const char *text, int *out) {
    enum herd_ggml_type t;
    if (!herd_ggml_type_from_name(text, &t)) {
        fprintf(stderr, "herd quantize: %s: unknown type '%s' (a ggml type name: q8_0, q6_K, f16, ...)\n", flag, text);
        return 2;
    }
    *out = (int)t;
    return 0;
}

static double mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }

int herd_cmd_quantize(int argc, char **argv) {
    struct herd_quantize_params p;
    herd_quantize_default_params(&p);
    const char *imatrix = NULL, *out_type = NULL, *embd_type = NULL;
    uint64_t threads = 0;
    bool allow_requantize = false, pure = false;
    const struct cli_opt opts[] = {
        {"imatrix", 0, CLI_STRING, &imatrix, "FILE", "importance matrix (llama-imatrix's format)"},
        {"threads", 't', CLI_U64, &threads, "N", "threads (default: one per CPU)"},
        {"allow-requantize", 0, CLI_FLAG, &allow_requantize, NULL, "accept already quantized tensors (loses quality)"},
        {"pure", 0, CLI_FLAG, &pure, NULL, "every matrix in TYPE's own type, no K mix"},
        {"output-type", 0, CLI_STRING, &out_type, "T", "type of output.weight (a ggml type: q8_0, f16, ...)"},
        {"token-embedding-type", 0, CLI_STRING, &embd_type, "T", "type of token_embd.weight"},
        {0},
    };
    const char *pos[3];
    int n_pos;
    int prc = cli_parse(&cmd, opts, argc, argv, pos, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    struct herd_error err = {0};
    enum herd_status rc = herd_quantize_ftype_parse(pos[2], &p.ftype, &err);
    if (rc != HERD_OK) {
        fprintf(stderr, "herd quantize: %s\n", err.msg);
        return 2;
    }
    if (threads > 1024) {
        fprintf(stderr, "herd quantize: --threads %llu is more than 1024\n", (unsigned long long)threads);
        return 2;
    }
    if (out_type && parse_type("--output-type", out_type, &p.output_type)) return 2;
    if (embd_type && parse_type("--token-embedding-type", embd_type, &p.token_embedding_type)) return 2;
    if (strcmp(pos[0], pos[1]) == 0) {
        fprintf(stderr, "herd quantize: IN and OUT are the same file\n");
        return 2;
    }
    p.in_path = pos[0];
    p.out_path = pos[1];
    p.imatrix_path = imatrix;
    p.n_threads = (int)threads;
    p.allow_requantize = allow_requantize;
    p.pure = pure;

    struct progress_ctx pc = {0};
    cli_progress_start(&pc.bar, "tensor", 0);
    p.progress = on_tensor;
    p.progress_ctx = &pc;
    struct herd_quantize_stats st;
    rc = herd_quantize_model(&p, &st, &err);
    if (pc.bar.tty && pc.bar.n) cli_progress_finish(&pc.bar);
    if (rc != HERD_OK) {
        fprintf(stderr, "herd quantize: %s\n", err.msg);
        return 1;
    }
    const double bpw_in = st.n_elems ? 8.0 * (double)st.bytes_in / (double)st.n_elems : 0;
    const double bpw_out = st.n_elems ? 8.0 * (double)st.bytes_out / (double)st.n_elems : 0;
    fprintf(stderr,
            "herd quantize: wrote %s as %s: %zu tensors (%zu converted, %zu with an importance matrix, %zu fell "
            "back)\n  weights %.2f MiB -> %.2f MiB (%.2f -> %.2f bits per weight), file %.2f MiB, %.1f s\n",
            p.out_path, herd_quantize_ftype_name(p.ftype), st.n_tensors, st.n_quantized, st.n_imatrix, st.n_fallback,
            mib(st.bytes_in), mib(st.bytes_out), bpw_in, bpw_out, mib(st.file_bytes_out), st.seconds);
    return 0;
}
