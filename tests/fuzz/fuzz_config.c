/* fuzz_config.c — libFuzzer target: arbitrary text as the server's JSON config file.
 *
 * config_defaults, then config_load_file on the input (a memfd, named /proc/self/fd/N), then
 * the reports built from a config (config_to_json). Whatever the file holds, a config that
 * loads must keep every numeric option inside its schema bounds and every enum inside its
 * choices, and config_free must release it all (LeakSanitizer checks).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "tests/fuzz/fuzz_util.h"

static void check_bounds(const struct config *c) {
    size_t n;
    const struct config_option *o = config_schema(&n);
    for (size_t i = 0; i < n; i++) {
        const char *p = (const char *)c + o[i].offset;
        if (o[i].type == CONFIG_T_INT && o[i].max > o[i].min) {
            int v;
            memcpy(&v, p, sizeof(v));
            if (v < o[i].min || v > o[i].max) abort();
        } else if (o[i].type == CONFIG_T_DOUBLE && o[i].max > o[i].min) {
            double v;
            memcpy(&v, p, sizeof(v));
            if (!(v >= o[i].min && v <= o[i].max)) abort();
        } else if (o[i].type == CONFIG_T_ENUM) {
            int v, k = 0;
            memcpy(&v, p, sizeof(v));
            while (o[i].choices[k])
                k++;
            if (v < 0 || v >= k) abort();
        } else if (o[i].type == CONFIG_T_STRING &&
                   o[i].offset != offsetof(struct config, config_file)) {
            char *s;
            memcpy(&s, p, sizeof(s));
            if (!s) abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64], err[512];
    int fd = fuzz_memfd(data, size, path, sizeof(path));
    if (fd < 0) return 0;
    struct config c;
    if (config_defaults(&c, err, sizeof(err))) abort(); /* the built-in defaults always parse */
    if (config_load_file(&c, path, err, sizeof(err)) == 0) {
        check_bounds(&c);
        free(config_to_json(&c));
    }
    config_free(&c);
    close(fd);
    return 0;
}
