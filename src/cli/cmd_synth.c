/* `herd synth`: random-weight models of real shapes for tests and benchmarks. */
#include <stdio.h>
#include <string.h>

#include "base/paths.h"
#include "cli/cli_args.h"
#include "cli/commands.h"
#include "convert/synth.h"

static const struct cli_command cmd = {
    .name = "synth",
    .args = "",
    .summary = "Write a random-weight model of a named real shape (llama, qwen3, gemma2/3, phi3).",
    .details = "Shapes (--list-shapes prints them): tiny, tiny-256, smollm-135m, tinyllama-1.1b, llama-3.2-1b,\n"
               "qwen3-0.6b, gemma2-2b, gemma3-1b, phi3-mini, and small ones of each family for tests:\n"
               "qwen3-tiny, gemma2-tiny (26 layers: llama.cpp runs gemma2 only at its real depths),\n"
               "gemma3-tiny, phi3-tiny, mistral-tiny (llama with an 8-token sliding window).\n"
               "Types: F32, or any TYPE of `herd quantize` (Q8_0, Q4_K_M, F16, ...): the F32 model quantized\n"
               "as `herd quantize` does it (llama-quantize's mix; norms stay F32), through a temporary\n"
               "F32 file beside the output.\n"
               "The tokenizer is copied from --vocab (default: the llama-spm vocabulary in the herd data\n"
               "directory, " HERD_PATH_DEFAULT_VOCAB "). Weights follow the test fixtures' recipe\n"
               "so that greedy decoding is stable. The same seed writes the same bytes.",
    .min_pos = 0,
    .max_pos = 0,
};

int herd_cmd_synth(int argc, char **argv) {
    struct herd_synth_params p;
    herd_synth_default_params(&p);
    const char *shape = NULL, *type = "F32", *out = NULL, *vocab = NULL;
    uint64_t seed = 1, layers = 0, ff = 0;
    bool tied = false, untied = false, list = false;
    const struct cli_opt opts[] = {
        {"shape", 0, CLI_STRING, &shape, "NAME", "model shape (required)"},
        {"type", 0, CLI_STRING, &type, "T", "F32 (default) or a quantize TYPE: Q8_0, Q4_K_M, F16, ..."},
        {"output", 'o', CLI_STRING, &out, "FILE", "output GGUF file (required)"},
        {"seed", 0, CLI_U64, &seed, "S", "random seed (default 1)"},
        {"layers", 0, CLI_U64, &layers, "N", "this many layers instead of the shape's (tests of herd prune)"},
        {"ff", 0, CLI_U64, &ff, "N", "this FFN width instead of the shape's (dense shapes; tests of herd prune)"},
        {"vocab", 0, CLI_STRING, &vocab, "FILE", "GGUF to copy the tokenizer from"},
        {"tied", 0, CLI_FLAG, &tied, NULL, "share token_embd as the output matrix"},
        {"untied", 0, CLI_FLAG, &untied, NULL, "write a separate output.weight"},
        {"list-shapes", 0, CLI_FLAG, &list, NULL, "print the shapes and exit"},
        {0},
    };
    int n_pos;
    int prc = cli_parse(&cmd, opts, argc, argv, NULL, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    if (list) {
        printf("%-18s %-8s %6s %6s %6s %8s %8s %6s %8s %10s %6s %-4s %s\n", "shape", "arch", "n_embd", "layers",
               "heads", "kv_heads", "head_dim", "n_ff", "n_ctx", "rope_base", "window", "tied", "experts");
        for (size_t i = 0; herd_synth_shape_at(i); i++) {
            const struct herd_synth_shape *s = herd_synth_shape_at(i);
            char experts[48] = "-";
            if (s->n_expert)
                snprintf(experts, sizeof experts, "%u of %u used, %u wide", s->n_expert_used, s->n_expert, s->n_ff_exp);
            printf("%-18s %-8s %6u %6u %6u %8u %8u %6u %8u %10g %6u %-4s %s\n", s->name, s->arch ? s->arch : "llama",
                   s->n_embd, s->n_layer, s->n_head, s->n_head_kv, s->head_dim ? s->head_dim : s->n_embd / s->n_head,
                   s->n_ff, s->n_ctx, s->rope_freq_base, s->n_swa, s->tied ? "yes" : "no", experts);
        }
        return 0;
    }
    if (!shape || !out) {
        fprintf(stderr, "herd synth: --shape and -o are required\n");
        cli_print_help(&cmd, opts, stderr);
        return 2;
    }
    if (!herd_synth_shape_find(shape)) {
        fprintf(stderr, "herd synth: unknown shape '%s' (see --list-shapes)\n", shape);
        return 2;
    }
    struct herd_error err = {0};
    if (herd_quantize_ftype_parse(type, &p.ftype, &err) != HERD_OK) {
        fprintf(stderr, "herd synth: %s\n", err.msg);
        return 2;
    }
    if (tied && untied) {
        fprintf(stderr, "herd synth: --tied and --untied exclude each other\n");
        return 2;
    }
    if (layers > 512) { /* HERD_MAX_LAYERS */
        fprintf(stderr, "herd synth: --layers %llu: at most 512\n", (unsigned long long)layers);
        return 2;
    }
    char vocab_buf[4096];
    p.shape = shape;
    p.seed = seed;
    p.n_layer = (uint32_t)layers;
    p.n_ff = ff > UINT32_MAX ? UINT32_MAX : (uint32_t)ff;
    p.out_path = out;
    p.vocab_path = vocab ? vocab : herd_paths_data(HERD_PATH_DEFAULT_VOCAB, vocab_buf, sizeof vocab_buf);
    p.tied = tied ? 1 : untied ? 0 : -1;
    if (herd_synth_write(&p, &err) != HERD_OK) {
        fprintf(stderr, "herd synth: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "herd synth: wrote %s\n", out);
    return 0;
}
