/* Data-file lookup: $HERD_HOME, else the source tree baked in at build time. */
#include "base/paths.h"

#include <stdio.h>
#include <stdlib.h>

const char *herd_paths_home(void) {
    const char *home = getenv("HERD_HOME");
    return home && *home ? home : HERD_SOURCE_DIR;
}

const char *herd_paths_data(const char *rel, char *buf, size_t buf_bytes) {
    snprintf(buf, buf_bytes, "%s/%s", herd_paths_home(), rel);
    return buf;
}
