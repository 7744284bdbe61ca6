/* strbuf.h — a growable, always NUL-terminated string built by appending (chat fallback
 * renderers, the Hermes tool rewrite, the /metrics page). Out of memory is sticky: appends after a
 * failed realloc are dropped and strbuf_take reports it, so callers check once at the end. Any
 * thread may use a strbuf it owns.
 */
#ifndef FG_STRBUF_H
#define FG_STRBUF_H

#include <stddef.h>

struct strbuf {
    char *p;       /* NULL until the first append, then NUL-terminated */
    size_t n, cap; /* bytes held (without the NUL), bytes allocated */
    int oom;       /* an append failed; the contents are incomplete */
};

/* Append N bytes of S (embedded NULs kept). */
void strbuf_add(struct strbuf *b, const char *s, size_t n);
/* Append the NUL-terminated string S. */
void strbuf_str(struct strbuf *b, const char *s);
/* Append printf(FMT, ...). */
void strbuf_printf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The string B holds (malloc'd, the caller frees it; "" when nothing was appended), or NULL when
 * an append ran out of memory (B's memory is then freed). B is left empty either way. */
char *strbuf_take(struct strbuf *b);
/* Release B's memory (NULL and an empty B are fine). */
void strbuf_free(struct strbuf *b);

#endif
