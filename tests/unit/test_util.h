/* test_util.h — small helpers shared by the unit tests: a seeded generator for fresh random
 * inputs and error norms. Header-only (static inline) so each test file stays standalone. */
#ifndef FG_TEST_UTIL_H
#define FG_TEST_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* xorshift64*; seeded per test from the clock so inputs are fresh each run (the seed is printed
 * by tests that fail, via cr_assert messages). */
static inline uint64_t tu_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

static inline float tu_uniform(uint64_t *s, float lo, float hi) {
    return lo + (hi - lo) * (float)((tu_next(s) >> 40) * (1.0 / 16777216.0));
}

static inline void tu_fill(uint64_t *s, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++)
        x[i] = tu_uniform(s, lo, hi);
}

static inline uint64_t tu_seed(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ 0x9E3779B97F4A7C15ull;
    return s ? s : 1;
}

/* ‖a − b‖ / ‖b‖ */
static inline double tu_rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num) / (sqrt(den) + 1e-30);
}

/* Whole file, NUL-terminated (n, if not NULL, gets the length), or NULL. */
static inline char *tu_slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[len] = 0;
    if (buf && n) *n = (size_t)len;
    fclose(f);
    return buf;
}

/* Generate the tiny random models (tools/make_tiny_models.py) into tests/tmp/tiny unless they are
 * newer than the script; safe across the parallel test processes Criterion runs (flock). Returns
 * 0, or -1 with a message in ERR (run from the repo root; needs numpy, gguf, safetensors). */
static inline int tu_tiny_models(char *err, size_t errlen) {
    mkdir("tests/tmp", 0755);
    int fd = open("tests/tmp/tiny.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open tests/tmp/tiny.lock (run from the repo root)");
        return -1;
    }
    flock(fd, LOCK_EX);
    struct stat s_script, s_out;
    int rc = 0;
    if (stat("tools/make_tiny_models.py", &s_script)) {
        snprintf(err, errlen,
                 "tools/make_tiny_models.py not found: run the tests from the repo root");
        rc = -1;
    } else if (stat("tests/tmp/tiny/manifest.json", &s_out) || s_out.st_mtime < s_script.st_mtime) {
        const char *py = getenv("PYTHON") ? getenv("PYTHON") : "python3";
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "%s tools/make_tiny_models.py --out tests/tmp/tiny", py);
        if (system(cmd) != 0) {
            snprintf(err, errlen, "%.200s failed (needs: pip install numpy gguf safetensors)", cmd);
            rc = -1;
        }
    }
    flock(fd, LOCK_UN);
    close(fd);
    return rc;
}

#endif
