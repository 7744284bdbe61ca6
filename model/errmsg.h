/* errmsg.h — the one way model/ code reports an error: a formatted message into the caller's
 * (err, errlen) buffer, then return -1. Thread-neutral. */
#ifndef FG_ERRMSG_H
#define FG_ERRMSG_H

#include <stddef.h>

/* Format into err (may be NULL or errlen 0: then nothing is written). */
void errmsg_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
