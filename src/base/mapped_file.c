/* mmap wrapper: one place that turns open/fstat/mmap failures into messages. */
#include "base/mapped_file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum herd_status herd_mapped_file_init(struct herd_mapped_file *f, const char *path, struct herd_error *err) {
    enum herd_status rc = HERD_OK;
    f->data = NULL;
    f->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return herd_error_set(err, HERD_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = herd_error_set(err, HERD_E_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = herd_error_set(err, HERD_E_IO, "%s: not a regular file", path);
        goto out;
    }
    if (st.st_size == 0) goto out;
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        rc = herd_error_set(err, HERD_E_IO, "%s: file too large to map", path);
        goto out;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        rc = herd_error_set(err, HERD_E_IO, "%s: cannot mmap %lld bytes: %s", path, (long long)st.st_size,
                            strerror(errno));
        goto out;
    }
    f->data = p;
    f->size = (size_t)st.st_size;
out:
    close(fd);
    return rc;
}

void herd_mapped_file_drop(const void *p, size_t n) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t begin = ((uintptr_t)p + page - 1) / page * page, end = ((uintptr_t)p + n) / page * page;
    /* advice only: on failure the pages simply stay */
    if (end > begin) (void)madvise((void *)begin, end - begin, MADV_DONTNEED);
}

void herd_mapped_file_cleanup(struct herd_mapped_file *f) {
    if (f->data) munmap((void *)f->data, f->size);
    f->data = NULL;
    f->size = 0;
}
