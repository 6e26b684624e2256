/* `herd convert FORMAT ...`: models from other formats into GGUF. */
#include <stdio.h>
#include <string.h>

#include "cli/cli_args.h"
#include "cli/cli_progress.h"
#include "cli/commands.h"
#include "convert/convert_hf.h"
#include "kernels/quant.h"
#include "convert/convert_llama2c.h"

static const struct cli_command cmd = {
    .name = "convert",
    .args = "llama2c CHECKPOINT TOKENIZER | hf MODEL_DIR",
    .summary = "Convert a llama2.c checkpoint and its tokenizer.bin, or a Hugging Face model folder, into a\n"
               "GGUF that herd and llama.cpp both run.",
    .details = "llama2c: CHECKPOINT is a .bin (legacy float32, or version 1/2 headers); the output carries the\n"
               "SentencePiece vocabulary with scores and token types, BOS 1, EOS 2.\n"
               "hf: MODEL_DIR holds config.json (LlamaForCausalLM, MistralForCausalLM, MixtralForCausalLM,\n"
               "Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, Gemma2ForCausalLM,\n"
               "Gemma3ForCausalLM, Gemma3ForConditionalGeneration's text model or Phi3ForCausalLM),\n"
               "model.safetensors or its shards with\n"
               "model.safetensors.index.json (F32, F16, BF16), and\n"
               "tokenizer.json (SentencePiece-style or byte-level BPE) with tokenizer_config.json; the output\n"
               "carries the vocabulary, special tokens and chat template. --type defaults to the weights' own type.\n"
               "Matrices whose rows are not a multiple of the type's block size stay F32; norms, biases and\n"
               "MoE routers F32.",
    .min_pos = 2,
    .max_pos = 3,
};

static void show_progress(void *ctx, const struct herd_hf_convert_progress *p) {
    struct cli_progress *bar = ctx;
    bar->n = p->n_tensors; /* known once the folder is read */
    cli_progress_update(bar, p->n_done, p->bytes_done);
}

static double in_gb(uint64_t bytes) { return (double)bytes / 1e9; }

/* `herd convert hf MODEL_DIR`: the progress line, then one summary line. */
static int convert_hf(const char *dir, const char *out, const char *type, const char *name) {
    struct herd_hf_convert_params p;
    herd_hf_convert_default_params(&p);
    if (type && strcmp(type, "auto") != 0) {
        p.type_auto = false;
        if (!herd_ggml_type_from_name(type, &p.type) || !herd_quantize_row_supported(p.type)) {
            fprintf(stderr,
                    "herd convert: unknown or unsupported type '%s' (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, "
                    "IQ4_NL, Q2_K..Q6_K;\n"
                    "for llama.cpp's K mixes such as Q4_K_M, convert to F16 and run herd quantize)\n",
                    type);
            return 2;
        }
    }
    struct cli_progress bar;
    p.model_dir = dir;
    p.out_path = out;
    p.name = name;
    p.progress = show_progress;
    p.progress_ctx = &bar;
    cli_progress_start(&bar, "tensor", 0);
    struct herd_hf_convert_summary s;
    struct herd_error err = {0};
    enum herd_status rc = herd_hf_convert(&p, &s, &err);
    if (bar.n) cli_progress_finish(&bar);
    if (rc != HERD_OK) {
        fprintf(stderr, "herd convert: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr,
            "herd convert: wrote %s: %s, %zu tensors, %.3g M parameters, %s, %.3f GB of weights, vocabulary %u (%s, "
            "pre %s)%s, %.1f s\n",
            out, s.arch, s.n_tensors, (double)s.n_params / 1e6, herd_ggml_type_info(s.type)->name, in_gb(s.data_bytes),
            s.n_vocab, s.tokenizer, s.pre, s.tied ? ", tied embeddings" : "", s.seconds);
    return 0;
}

int herd_cmd_convert(int argc, char **argv) {
    const char *out = NULL, *type = NULL, *name = NULL;
    const struct cli_opt opts[] = {
        {"output", 'o', CLI_STRING, &out, "FILE", "output GGUF file (required)"},
        {"type", 0, CLI_STRING, &type, "T",
         "matrix type: F32, F16, BF16, Q8_0, Q4_0, ... one for all (default: F32 for llama2c, the weights' own for "
         "hf)"},
        {"name", 0, CLI_STRING, &name, "NAME", "general.name (default: the checkpoint's file or folder name)"},
        {0},
    };
    const char *pos[3];
    int n_pos;
    int prc = cli_parse(&cmd, opts, argc, argv, pos, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    const bool hf = strcmp(pos[0], "hf") == 0;
    if (!hf && strcmp(pos[0], "llama2c") != 0) {
        fprintf(stderr, "herd convert: unknown source format '%s' (supported: llama2c, hf)\n", pos[0]);
        cli_print_help(&cmd, opts, stderr);
        return 2;
    }
    if (n_pos != (hf ? 2 : 3)) {
        fprintf(stderr, "herd convert: %s takes %s\n", pos[0], hf ? "one folder" : "CHECKPOINT and TOKENIZER");
        cli_print_help(&cmd, opts, stderr);
        return 2;
    }
    if (!out) {
        fprintf(stderr, "herd convert: -o FILE is required\n");
        cli_print_help(&cmd, opts, stderr);
        return 2;
    }
    if (hf) return convert_hf(pos[1], out, type, name);
    if (!type) type = "F32";
    struct herd_llama2c_params p;
    herd_llama2c_default_params(&p);
    if (!herd_ggml_type_from_name(type, &p.type) || !herd_quantize_row_supported(p.type)) {
        fprintf(stderr,
                "herd convert: unknown or unsupported type '%s' (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, "
                "Q2_K..Q6_K;\n"
                "for llama.cpp's K mixes such as Q4_K_M, convert to F16 and run herd quantize)\n",
                type);
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
