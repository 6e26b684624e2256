/* `herd`: one binary, many subcommands. This file only dispatches. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"serve", herd_cmd_serve, "serve the model over an OpenAI-compatible HTTP API"},
    {"route", herd_cmd_route, "balance requests over many herd serve replicas"},
    {"loadtest", herd_cmd_loadtest, "load a server with streaming requests; latency and throughput"},
    {"run", herd_cmd_run, "generate text from a prompt"},
    {"bench", herd_cmd_bench, "measure prompt, generation and batched generation speed"},
    {"eval", herd_cmd_eval, "one forward pass over token ids; logits as JSON (for correctness checks)"},
    {"tokenize", herd_cmd_tokenize, "print the token ids of a text (JSON array)"},
    {"detokenize", herd_cmd_detokenize, "print the text of token ids"},
    {"chat-template", herd_cmd_chat_template, "render a conversation through a chat template (debugging)"},
    {"inspect", herd_cmd_inspect, "show a GGUF file's architecture, tokenizer, tensors and memory needs"},
    {"synth", herd_cmd_synth, "write a random-weight Llama model of a real shape (for tests and benchmarks)"},
    {"perplexity", herd_cmd_perplexity, "measure perplexity or KL divergence on a text, as llama-perplexity"},
    {"imatrix", herd_cmd_imatrix, "compute an importance matrix over a text (for quantize --imatrix)"},
    {"batch", herd_cmd_batch, "run OpenAI Batch JSONL files: resumable, shardable (run, merge)"},
    {"quantize", herd_cmd_quantize, "rewrite a model in a smaller weight type (Q8_0, Q4_K_M, ...), as llama-quantize"},
    {"prune", herd_cmd_prune, "remove a model's least influential layers (Block Influence over a text)"},
    {"convert", herd_cmd_convert, "convert a model from another format to GGUF (llama2c, hf)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: herd COMMAND [options]\n\nherd serves chat models from GGUF files.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-10s %s\n", "help", "print this list, or `herd help COMMAND` for a command's options");
    fprintf(f, "  %-10s %s\n", "version", "print the version");
    fprintf(f, "\nRun `herd COMMAND --help` for the options of a command.\n");
}

static const struct command *find(const char *name) {
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        if (argc >= 3) {
            const struct command *c = find(argv[2]);
            if (!c) {
                fprintf(stderr, "herd: unknown command '%s'\n", argv[2]);
                usage(stderr);
                return 2;
            }
            char *help_argv[] = {(char *)c->name, "--help", NULL};
            return c->run(2, help_argv);
        }
        usage(stdout);
        return 0;
    }
    if (strcmp(name, "version") == 0 || strcmp(name, "--version") == 0) {
        printf("herd %s\n", HERD_VERSION);
        return 0;
    }
    const struct command *c = find(name);
    if (!c) {
        fprintf(stderr, "herd: unknown command '%s'\n", name);
        usage(stderr);
        return 2;
    }
    return c->run(argc - 1, argv + 1);
}
