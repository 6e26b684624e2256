/* Where herd finds its own data files (the default model, the default
 * vocabulary for `herd synth`): $HERD_HOME when set, else the source tree the
 * binary was built from. */
#ifndef HERD_BASE_PATHS_H
#define HERD_BASE_PATHS_H

#include <stddef.h>

/* The data root: getenv("HERD_HOME") or the build's source directory. */
const char *herd_paths_home(void);

/* Writes HOME/rel into buf (cut to buf_bytes). Returns buf. */
const char *herd_paths_data(const char *rel, char *buf, size_t buf_bytes);

/* Relative paths of the data files, under the data root. */
#define HERD_PATH_DEFAULT_MODEL "models/stories260K.gguf"
#define HERD_PATH_DEFAULT_VOCAB "tests/data/ggml-vocab-llama-spm.gguf"

#endif
