/* The `herd` subcommands. Each takes argc/argv starting at its own name and
 * returns the process exit code: 0 success, 1 failure (message on stderr),
 * 2 usage error. */
#ifndef HERD_CLI_COMMANDS_H
#define HERD_CLI_COMMANDS_H

int herd_cmd_inspect(int argc, char **argv);
int herd_cmd_synth(int argc, char **argv);
int herd_cmd_convert(int argc, char **argv);
int herd_cmd_eval(int argc, char **argv);
int herd_cmd_run(int argc, char **argv);
int herd_cmd_bench(int argc, char **argv);
int herd_cmd_tokenize(int argc, char **argv);
int herd_cmd_detokenize(int argc, char **argv);
int herd_cmd_chat_template(int argc, char **argv);
int herd_cmd_serve(int argc, char **argv);
int herd_cmd_route(int argc, char **argv);
int herd_cmd_loadtest(int argc, char **argv);
int herd_cmd_imatrix(int argc, char **argv);
int herd_cmd_perplexity(int argc, char **argv);
int herd_cmd_quantize(int argc, char **argv);
int herd_cmd_prune(int argc, char **argv);
int herd_cmd_batch(int argc, char **argv);

#endif
