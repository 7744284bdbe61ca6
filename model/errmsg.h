/* errmsg.h — the one way flashgen code reports an error below the HTTP layer: a formatted
 * message into the caller's (err, errlen) buffer, then the caller returns -1.
 *
 * A leaf: it includes nothing of flashgen, so config/ and every model/ file share it instead of
 * each keeping its own vsnprintf helper. Thread-neutral.
 */
#ifndef FG_ERRMSG_H
#define FG_ERRMSG_H

#include <stddef.h>

/* Format into err (may be NULL or errlen 0: then nothing is written). */
void errmsg_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The same, prefixed with "PATH: " when path is not NULL (the file the error is about). */
void errmsg_at(char *err, size_t errlen, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
