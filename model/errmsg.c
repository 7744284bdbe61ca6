/* errmsg.c — the error-message helper (errmsg.h): one vsnprintf for every caller. */
#include "errmsg.h"

#include <stdarg.h>
#include <stdio.h>

static void errmsg_vat(char *err, size_t errlen, const char *path, const char *fmt, va_list ap) {
    if (!err || errlen == 0) return;
    int n = path ? snprintf(err, errlen, "%s: ", path) : 0;
    if (n < 0 || (size_t)n >= errlen) return;
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
}

void errmsg_set(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    errmsg_vat(err, errlen, NULL, fmt, ap);
    va_end(ap);
}

void errmsg_at(char *err, size_t errlen, const char *path, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    errmsg_vat(err, errlen, path, fmt, ap);
    va_end(ap);
}
