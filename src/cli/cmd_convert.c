/* `herd convert FORMAT ...`: models from other formats into GGUF. */
#include <stdio.h>
#include <string.h>

#include "cli/cli_args.h"
#include "cli/commands.h"
#include "kernels/quant.h"
#include "model/convert_llama2c.h"

static const struct cli_command cmd = {
    .name = "convert",
    .args = "llama2c CHECKPOINT TOKENIZER",
    .summary = "Convert a llama2.c checkpoint (.bin: legacy float32, or version 1/2 headers) and its\n"
               "tokenizer.bin into a GGUF that herd and llama.cpp both run.",
    .details = "The output carries the SentencePiece vocabulary with scores and token types, BOS 1, EOS 2.\n"
               "Matrices whose rows are not a multiple of the type's block size stay F32.",
    .min_pos = 3,
    .max_pos = 3,
};

int herd_cmd_convert(int argc, char **argv) {
    const char *out = NULL, *type = "F32", *name = NULL;
    const struct cli_opt opts[] = {
        {"output", 'o', CLI_STRING, &out, "FILE", "output GGUF file (required)"},
        {"type", 0, CLI_STRING, &type, "T", "matrix type: F32 (default), F16, BF16, Q8_0, Q4_0"},
        {"name", 0, CLI_STRING, &name, "NAME", "general.name (default: the checkpoint's file name)"},
        {0},
    };
    const char *pos[3];
    int n_pos;
    int prc = cli_parse(&cmd, opts, argc, argv, pos, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    if (strcmp(pos[0], "llama2c") != 0) {
        fprintf(stderr, "herd convert: unknown source format '%s' (supported: llama2c)\n", pos[0]);
        cli_print_help(&cmd, opts, stderr);
        return 2;
    }
    if (!out) {
        fprintf(stderr, "herd convert: -o FILE is required\n");
        cli_print_help(&cmd, opts, stderr);
        return 2;
    }
    struct herd_llama2c_params p;
    herd_llama2c_default_params(&p);
    if (!herd_ggml_type_from_name(type, &p.type) || !herd_quantize_row_supported(p.type)) {
        fprintf(stderr, "herd convert: unknown or unsupported type '%s' (F32, F16, BF16, Q8_0, Q4_0)\n", type);
        return 2;
    }
    p.checkpoint_path = pos[1];
    p.tokenizer_path = pos[2];
    p.out_path = out;
    p.name = name;
    struct herd_error err = {0};
    if (herd_llama2c_convert(&p, &err) != HERD_OK) {
        fprintf(stderr, "herd convert: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "herd convert: wrote %s\n", out);
    return 0;
}
