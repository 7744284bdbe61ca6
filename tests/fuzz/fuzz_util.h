/* fuzz_util.h — helpers shared by the libFuzzer targets in tests/fuzz/ (header-only, static).
 *
 * The parsers under test open files by path, so an input is written to a memfd and handed over
 * as /proc/self/fd/N (no disk traffic, nothing left behind), or into a per-process scratch
 * directory when the parser looks for sibling files (tokenizer.json + tokenizer_config.json).
 * A fuzz target must never exit() on a rejected input: rejection is the normal, expected path.
 */
#ifndef FG_FUZZ_UTIL_H
#define FG_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <unistd.h>

/* Write DATA to a fresh memfd; fills PATH ("/proc/self/fd/N") and returns the fd (close it when
 * done). A failure here is the machine's, not the input's: it aborts rather than let the target
 * run on while testing nothing. */
static inline int fuzz_memfd(const uint8_t *data, size_t size, char *path, size_t cap) {
    int fd = memfd_create("fuzz", MFD_CLOEXEC);
    if (fd < 0) {
        perror("fuzz_memfd: memfd_create");
        abort();
    }
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) {
            perror("fuzz_memfd: write");
            abort();
        }
        off += (size_t)w;
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

/* Write DATA to DIR/NAME (truncating); aborts on failure (as fuzz_memfd). */
static inline int fuzz_write_file(const char *dir, const char *name, const uint8_t *data,
                                  size_t size) {
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(data, 1, size, f) == size;
    if (!f || fclose(f) != 0 || !ok) {
        perror(path);
        abort();
    }
    return 0;
}

static char fuzz_dir[4096];

static inline void fuzz_scratch_cleanup(void) {
    DIR *d = opendir(fuzz_dir);
    if (d) {
        struct dirent *e;
        char path[8400];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(path, sizeof(path), "%s/%s", fuzz_dir, e->d_name);
                unlink(path);
            }
        closedir(d);
    }
    rmdir(fuzz_dir);
}

/* A per-process scratch directory under $TMPDIR (or /tmp), created once and removed (with its
 * plain files) at exit; aborts when it cannot be made. */
static inline const char *fuzz_scratch_dir(void) {
    char *dir = fuzz_dir;
    if (!dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof(fuzz_dir), "%s/flashgen-fuzz-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(dir)) {
            perror(dir);
            abort();
        }
        atexit(fuzz_scratch_cleanup);
    }
    return dir;
}

#endif
