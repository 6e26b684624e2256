/* Replays the fuzz corpus (seeds and any committed crashers) through the
 * fuzz target's code path on every build, with or without libFuzzer, so a
 * fixed crash stays fixed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>

#include "test_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* the target under test: fuzz/fuzz_gguf.c or fuzz/fuzz_jinja.c (CMake) */
#include HERD_FUZZ_TARGET

static void test_replay_corpus(void **state) {
    (void)state;
    DIR *d = opendir(HERD_FUZZ_CORPUS);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", HERD_FUZZ_CORPUS, e->d_name);
        size_t size;
        unsigned char *bytes = test_read_file(path, &size);
        LLVMFuzzerTestOneInput(bytes, size);
        free(bytes);
        n++;
    }
    closedir(d);
    assert_true(n >= 10);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_replay_corpus)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
